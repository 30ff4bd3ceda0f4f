//! Channel names: validated once at the edge, then shared as a cheap `Arc<str>`.

use std::{borrow::Borrow, fmt, sync::Arc};

use crate::Error;

/// The longest channel name accepted, in bytes.
pub const MAX_CHANNEL_LEN: usize = 128;

/// A validated channel name such as `public`, `tag:rust` or `user:42`.
///
/// Names are 1 to [`MAX_CHANNEL_LEN`] bytes of ASCII letters, digits and
/// `_ - : . @ =`. The small alphabet means a name never needs escaping in
/// JSON, in an SSE cursor or in a URL path, so encoders can copy it verbatim.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelName(Arc<str>);

impl ChannelName {
    /// Checks `name` and returns it as a channel name, or
    /// [`Error::InvalidChannel`] saying what is wrong with it.
    pub fn new(name: &str) -> Result<Self, Error> {
        if name.is_empty() {
            return Err(Error::InvalidChannel("channel name is empty".into()));
        }
        if name.len() > MAX_CHANNEL_LEN {
            return Err(Error::InvalidChannel(format!(
                "channel name is longer than {MAX_CHANNEL_LEN} bytes"
            )));
        }
        if let Some(bad) = name.chars().find(|&c| !is_channel_char(c)) {
            return Err(Error::InvalidChannel(format!(
                "channel name contains {bad:?}; allowed are ASCII letters, digits and _-:.@="
            )));
        }
        Ok(Self(Arc::from(name)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_channel_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':' | '.' | '@' | '=')
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Borrow<str> for ChannelName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_rejects() {
        let cases: &[(&str, bool)] = &[
            ("public", true),
            ("tag:rust", true),
            ("user:42", true),
            ("group:devs", true),
            ("a.b-c_d@e=f", true),
            ("", false),
            ("has space", false),
            ("quote\"", false),
            ("slash/", false),
            ("comma,", false),
            ("ünïcode", false),
            ("newline\n", false),
        ];
        for &(name, ok) in cases {
            assert_eq!(ChannelName::new(name).is_ok(), ok, "{name:?}");
        }
        assert!(ChannelName::new(&"x".repeat(MAX_CHANNEL_LEN)).is_ok());
        assert!(ChannelName::new(&"x".repeat(MAX_CHANNEL_LEN + 1)).is_err());
    }
}
