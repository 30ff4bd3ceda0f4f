//! Channel names: validated once at the edge, then shared as a cheap `Arc<str>`.

use std::{borrow::Borrow, fmt, sync::Arc};

use crate::Error;

/// The longest channel name accepted, in bytes.
pub const MAX_CHANNEL_LEN: usize = 128;

/// The longest site id, in bytes.
pub const MAX_SITE_LEN: usize = 32;

/// A validated channel name such as `public`, `tag:rust` or `user:42`,
/// usually scoped to a site: `social/public`.
///
/// The name a client sees (the *local* name, what `Display` prints) is 1 to
/// [`MAX_CHANNEL_LEN`] bytes of ASCII letters, digits and `_ - : . @ =`. The
/// small alphabet means a name never needs escaping in JSON, in an SSE
/// cursor or in a URL path, so encoders can copy it verbatim.
///
/// Inside Herald a channel carries its site as a prefix, `site/local`, so
/// that the same name on two sites is two channels everywhere: in the hub,
/// in history and in the engine's keys. `as_str` is that full key.
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

    /// `local` inside `site`. Site ids are checked by whoever defines the
    /// site (see [`is_site_id`]).
    pub fn scoped(site: &str, local: &ChannelName) -> Self {
        debug_assert!(is_site_id(site), "{site:?}");
        let local = local.local();
        let mut full = String::with_capacity(site.len() + 1 + local.len());
        full.push_str(site);
        full.push('/');
        full.push_str(local);
        Self(Arc::from(full))
    }

    /// A channel of Herald's own inside `site`: its local name starts with
    /// `~`, which no client or publisher can write, so it is unreachable
    /// from outside (timeline shards are such channels).
    pub(crate) fn internal(site: &str, name: &str) -> Self {
        debug_assert!(is_site_id(site) && name.starts_with(INTERNAL));
        Self(Arc::from(format!("{site}/{name}")))
    }

    /// A channel built from parts already checked (a site's timeline of a
    /// user whose id passed [`ChannelName::new`] as part of a name).
    pub(crate) fn trusted(full: String) -> Self {
        Self(Arc::from(full))
    }

    /// Checks a full key, `site/local` or a bare local name, as it comes
    /// back from an engine.
    pub fn from_key(key: &str) -> Result<Self, Error> {
        match key.split_once('/') {
            Some((site, local)) if is_site_id(site) => {
                Self::new(local.strip_prefix(INTERNAL).unwrap_or(local))?;
                Ok(Self(Arc::from(key)))
            }
            Some(_) => Err(Error::InvalidChannel(format!("{key:?} has a bad site id"))),
            None => Self::new(key),
        }
    }

    /// The full key: `site/local`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name clients use, without the site.
    pub fn local(&self) -> &str {
        self.0.split_once('/').map_or(&self.0, |(_, local)| local)
    }

    /// The site's id; empty for a channel outside any site.
    pub fn site(&self) -> &str {
        self.0.split_once('/').map_or("", |(site, _)| site)
    }

    /// For a timeline channel (`user:<id>` or `replies:<id>`), its kind and
    /// user id. Such channels are fed by their user's timeline shard.
    pub fn timeline(&self) -> Option<(TimelineKind, &str)> {
        let local = self.local();
        if let Some(user) = local.strip_prefix("user:") {
            Some((TimelineKind::User, user))
        } else {
            local
                .strip_prefix("replies:")
                .map(|user| (TimelineKind::Replies, user))
        }
    }
}

/// The start of an internal channel's local name.
const INTERNAL: &str = "~";

/// Which of a user's timelines a delivery goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimelineKind {
    /// The home timeline, channel `user:<id>`.
    User,
    /// Replies and mentions, channel `replies:<id>`.
    Replies,
}

impl TimelineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TimelineKind::User => "user",
            TimelineKind::Replies => "replies",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "user" => Some(TimelineKind::User),
            "replies" => Some(TimelineKind::Replies),
            _ => None,
        }
    }
}

/// Whether `id` is a valid site id: 1 to [`MAX_SITE_LEN`] bytes of `a-z 0-9 _ -`.
pub fn is_site_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_SITE_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

pub(crate) fn is_channel_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':' | '.' | '@' | '=')
}

/// Prints the local name: what clients see, and what wire encoders copy.
impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.local())
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

    #[test]
    fn scoped_names_keep_sites_apart() {
        let public = ChannelName::new("public").unwrap();
        let a = ChannelName::scoped("site-a", &public);
        let b = ChannelName::scoped("site-b", &public);
        assert_ne!(a, b);
        assert_eq!(a.as_str(), "site-a/public");
        assert_eq!((a.site(), a.local()), ("site-a", "public"));
        assert_eq!(a.to_string(), "public");
        assert_eq!(
            ChannelName::scoped("site-b", &a),
            b,
            "rescoping keeps the local name"
        );
        assert_eq!(ChannelName::from_key("site-a/public").unwrap(), a);
        assert_eq!(ChannelName::from_key("public").unwrap(), public);
        for bad in ["Site/public", "a/b/c", "/public", "a/", "a/bad name"] {
            assert!(ChannelName::from_key(bad).is_err(), "{bad}");
        }
        assert!(is_site_id("a_b-9") && !is_site_id("") && !is_site_id(&"a".repeat(33)));
    }
}
