//! Channel names: validated once at the edge, then shared as a cheap `Arc<str>`.
//!
//! Two types, so that a forgotten site prefix does not compile:
//! - [`ChannelName`] is a name as clients and publishers write it (`public`,
//!   `user:42`): what a site's web app and its browsers see.
//! - [`ChannelKey`] is a channel as Herald keys it everywhere inside, in the
//!   hub, in history and in the engine's keys: the site and the name,
//!   `site/name`, so that the same name on two sites is two channels.

use std::{borrow::Borrow, fmt, sync::Arc};

use crate::Error;

/// The longest channel name accepted, in bytes.
pub const MAX_CHANNEL_LEN: usize = 128;

/// The longest site id, in bytes.
pub const MAX_SITE_LEN: usize = 32;

/// A validated channel name such as `public`, `tag:rust` or `user:42`.
///
/// 1 to [`MAX_CHANNEL_LEN`] bytes of ASCII letters, digits and
/// `_ - : . @ =`. The small alphabet means a name never needs escaping in
/// JSON, in an SSE cursor or in a URL path, so encoders can copy it verbatim.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelName(Arc<str>);

/// A channel inside Herald: its site's id and its name, written `site/name`.
/// Built only from a site id and a [`ChannelName`] (or, for Herald's own
/// channels, from parts Herald made), so every key has its site.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelKey(Arc<str>);

/// Which of a user's timelines a channel is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimelineKind {
    /// The home timeline, channel `user:<id>`.
    User,
    /// Replies and mentions, channel `replies:<id>`.
    Replies,
}

impl ChannelName {
    /// Checks `name` and returns it as a channel name, or
    /// [`Error::InvalidChannel`] saying what is wrong with it.
    pub fn new(name: &str) -> Result<Self, Error> {
        check_name(name)?;
        Ok(Self(Arc::from(name)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// For a timeline channel (`user:<id>` or `replies:<id>`), its kind and
    /// user id. Such channels belong to their user and are fed by the
    /// user's timeline shard.
    pub fn timeline(&self) -> Option<(TimelineKind, &str)> {
        timeline_of(&self.0)
    }
}

impl ChannelKey {
    /// The channel `name` of site `site`. Site ids are checked by whoever
    /// defines the site (see [`is_site_id`]).
    pub fn new(site: &str, name: &ChannelName) -> Self {
        debug_assert!(is_site_id(site), "{site:?}");
        let mut key = String::with_capacity(site.len() + 1 + name.0.len());
        key.push_str(site);
        key.push('/');
        key.push_str(&name.0);
        Self(Arc::from(key))
    }

    /// A channel of Herald's own inside `site`: its name starts with `~`,
    /// which no client or publisher can write, so it is unreachable from
    /// outside (timeline shards are such channels).
    pub(crate) fn internal(site: &str, name: &str) -> Self {
        debug_assert!(is_site_id(site) && name.starts_with(INTERNAL));
        Self(Arc::from(format!("{site}/{name}")))
    }

    /// A channel of Herald's own named `~<name>` inside `site`, for a
    /// protocol that keeps its traffic in a channel nobody else can name
    /// (Mercure's updates: `push::mercure`).
    pub fn own(site: &str, name: &ChannelName) -> Self {
        Self::internal(site, &format!("{INTERNAL}{}", name.as_str()))
    }

    /// A key built from parts already checked (a site's timeline of a user
    /// whose id passed the channel-name rules as part of a name).
    pub(crate) fn trusted(key: String) -> Self {
        Self(Arc::from(key))
    }

    /// Checks a key as it comes back from an engine: `site/name`, where the
    /// name is a channel name or one of Herald's own.
    pub fn parse(key: &str) -> Result<Self, Error> {
        match key.split_once('/') {
            Some((site, name)) if is_site_id(site) => {
                check_name(name.strip_prefix(INTERNAL).unwrap_or(name))?;
                Ok(Self(Arc::from(key)))
            }
            _ => Err(Error::InvalidChannel(format!("{key:?} is not site/name"))),
        }
    }

    /// The whole key, `site/name`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The channel's name in its site: what clients see and encoders copy.
    pub fn name(&self) -> &str {
        self.split().1
    }

    /// The site's id.
    pub fn site(&self) -> &str {
        self.split().0
    }

    /// See [`ChannelName::timeline`].
    pub fn timeline(&self) -> Option<(TimelineKind, &str)> {
        timeline_of(self.name())
    }

    fn split(&self) -> (&str, &str) {
        // Unwrap-free: every constructor puts a '/' after the site id.
        self.0.split_once('/').unwrap_or(("", &self.0))
    }
}

/// The start of an internal channel's name.
pub(crate) const INTERNAL: &str = "~";

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

/// The one place that says which names are timelines.
fn timeline_of(name: &str) -> Option<(TimelineKind, &str)> {
    if let Some(user) = name.strip_prefix("user:") {
        Some((TimelineKind::User, user))
    } else {
        name.strip_prefix("replies:")
            .map(|user| (TimelineKind::Replies, user))
    }
}

fn check_name(name: &str) -> Result<(), Error> {
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
    Ok(())
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

/// Prints the whole key, `site/name`: for logs. What clients see is [`ChannelKey::name`].
impl fmt::Display for ChannelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ChannelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Borrow<str> for ChannelKey {
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
            ("~t:1", false),
        ];
        for &(name, ok) in cases {
            assert_eq!(ChannelName::new(name).is_ok(), ok, "{name:?}");
        }
        assert!(ChannelName::new(&"x".repeat(MAX_CHANNEL_LEN)).is_ok());
        assert!(ChannelName::new(&"x".repeat(MAX_CHANNEL_LEN + 1)).is_err());
    }

    #[test]
    fn keys_keep_sites_apart() {
        let public = ChannelName::new("public").unwrap();
        let a = ChannelKey::new("site-a", &public);
        let b = ChannelKey::new("site-b", &public);
        assert_ne!(a, b);
        assert_eq!(a.as_str(), "site-a/public");
        assert_eq!((a.site(), a.name()), ("site-a", "public"));
        assert_eq!(ChannelKey::parse("site-a/public").unwrap(), a);
        assert_eq!(ChannelKey::parse("s/~t:7").unwrap().name(), "~t:7");
        for bad in [
            "public",
            "Site/public",
            "a/b/c",
            "/public",
            "a/",
            "a/bad name",
        ] {
            assert!(ChannelKey::parse(bad).is_err(), "{bad}");
        }
        assert!(is_site_id("a_b-9") && !is_site_id("") && !is_site_id(&"a".repeat(33)));
    }

    #[test]
    fn timelines_are_user_and_replies_channels() {
        let cases = [
            ("user:42", Some((TimelineKind::User, "42"))),
            ("replies:7", Some((TimelineKind::Replies, "7"))),
            ("public", None),
            ("users:1", None),
        ];
        for (name, expect) in cases {
            let name = ChannelName::new(name).unwrap();
            assert_eq!(name.timeline(), expect, "{name}");
            assert_eq!(ChannelKey::new("s", &name).timeline(), expect, "{name}");
        }
    }
}
