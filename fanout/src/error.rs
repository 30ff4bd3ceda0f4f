//! The one error type of the fan-out core. `push` turns it into the
//! refusal codes clients see (`push::Refusal`).

/// What can go wrong in the hub or an engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A channel name broke the naming rules; the text says which rule.
    #[error("invalid channel name: {0}")]
    InvalidChannel(String),
    /// The engine cannot take or serve messages right now (for example its
    /// Redis is down). Nothing was stored; the caller may retry.
    #[error("engine unavailable: {0}")]
    Unavailable(String),
}
