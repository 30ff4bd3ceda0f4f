//! The one error type of the fan-out core.

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

impl Error {
    /// A stable reason string for API error bodies, close reasons and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::InvalidChannel(_) => "invalid_channel",
            Error::Unavailable(_) => "unavailable",
        }
    }

    /// How loudly to log this error: client mistakes are `debug`, engine trouble is `warn`.
    pub fn level(&self) -> tracing::Level {
        match self {
            Error::InvalidChannel(_) => tracing::Level::DEBUG,
            Error::Unavailable(_) => tracing::Level::WARN,
        }
    }
}
