//! A site as configured: plain data that the binary's config builds and
//! validates, and that a reload replaces whole.

use std::sync::LazyLock;

/// Who may read a site's ordinary channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Anyone may read public channels; a token is needed only for the
    /// channels of one user and for granted ones.
    Public,
    /// Every connection needs a token.
    Private,
}

/// The limits of one site. Zero means "no limit" for the counts and rates.
#[derive(Clone, Debug, PartialEq)]
pub struct SiteLimits {
    /// Open connections of the site.
    pub connections: u32,
    /// Open connections of the site from one client IP.
    pub connections_per_ip: u32,
    /// New connections per second from one client IP.
    pub connection_rate_per_ip: u32,
    /// New connections one client IP may open at once before the rate applies.
    pub connection_burst_per_ip: u32,
    /// Messages per second the site may publish (a token bucket).
    pub publish_rate: u32,
    /// Messages the site may publish at once before the rate applies.
    pub publish_burst: u32,
    /// Frames per second one WebSocket client may send (subscribe,
    /// unsubscribe, ping, refresh, anything): a token bucket per connection.
    pub command_rate: u32,
    /// Frames a client may send at once before the rate applies.
    pub command_burst: u32,
    /// Channels per second the site's clients may open on this node that
    /// nobody here was subscribed to (a token bucket per site): each one
    /// costs the engine state (a log, an upstream subscription).
    pub new_channel_rate: u32,
    /// New channels the site's clients may open at once before the rate applies.
    pub new_channel_burst: u32,
    /// Channels per WebSocket connection, and per SSE stream.
    pub max_subscriptions: usize,
    /// Largest frame a client may send.
    pub max_frame_bytes: usize,
    /// Largest `data` of one published message.
    pub max_message_bytes: usize,
}

impl Default for SiteLimits {
    fn default() -> Self {
        Self {
            connections: 0,
            connections_per_ip: 0,
            connection_rate_per_ip: 0,
            connection_burst_per_ip: 20,
            publish_rate: 0,
            publish_burst: 100,
            // A timeline client sends a handful of subscribes when a page
            // opens and a few a minute after that; the burst lets one
            // resubscribe to every channel it may hold (128) at once.
            command_rate: 50,
            command_burst: 200,
            // Restarts bring every client back within seconds, but most of
            // them open channels others already opened (`public`, a tag,
            // their own timeline, which opens only its shard's channel).
            new_channel_rate: 1000,
            new_channel_burst: 10_000,
            max_subscriptions: 128,
            max_frame_bytes: 4096,
            max_message_bytes: 64 * 1024,
        }
    }
}

/// One site's configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct SiteSettings {
    /// Unique; scopes the site's channels and labels its metrics (see
    /// [`fanout::is_site_id`]).
    pub id: String,
    /// Unique and public: clients and signed requests name the site with it.
    pub key: String,
    /// One or two active secrets; none for the dev site. They authenticate
    /// publishers, and sign client tokens unless `token_keys` is set.
    pub secrets: Vec<String>,
    /// One or two keys that sign client tokens in place of `secrets`, so
    /// that the web servers minting tokens need not hold the publish
    /// secret. Empty: tokens are signed with `secrets`.
    pub token_keys: Vec<String>,
    /// One or two keys that verify the site's Mercure JWTs (a Mercure
    /// hub's `MERCURE_JWT_SECRET`). Empty: the keys of its client tokens.
    pub mercure_keys: Vec<String>,
    pub mode: Mode,
    /// Origins a browser may connect from; empty allows any.
    pub allowed_origins: Vec<String>,
    /// Whether clients may send events to the other subscribers of a
    /// private channel they are subscribed to (Pusher's `client-` events).
    pub client_events: bool,
    /// Where the site's channel events are POSTed as Pusher webhooks
    /// (`http://host:port/path`); none when unset.
    pub webhook_url: Option<String>,
    pub limits: SiteLimits,
}

impl SiteSettings {
    /// The zero-config dev site: no secret, so no tokens and no channel rules.
    pub fn dev(limits: SiteLimits) -> Self {
        Self {
            id: "default".into(),
            key: "default".into(),
            secrets: Vec::new(),
            token_keys: Vec::new(),
            mercure_keys: Vec::new(),
            mode: Mode::Public,
            allowed_origins: Vec::new(),
            client_events: false,
            webhook_url: None,
            limits,
        }
    }

    /// The keys a client token of this site may be signed with: its token
    /// keys when it has any (its secrets then sign none), else its secrets.
    pub fn token_secrets(&self) -> &[String] {
        if self.token_keys.is_empty() {
            &self.secrets
        } else {
            &self.token_keys
        }
    }

    /// The keys that verify the site's Mercure JWTs: its `mercure_keys`,
    /// else its client tokens' keys; the dev site, which has neither, takes
    /// Mercure's development key ([`crate::mercure::DEV_KEY`]), as a Mercure
    /// hub set up for development does.
    pub fn mercure_keys(&self) -> &[String] {
        static DEV_KEYS: LazyLock<[String; 1]> =
            LazyLock::new(|| [crate::mercure::DEV_KEY.to_string()]);
        if !self.mercure_keys.is_empty() {
            &self.mercure_keys
        } else if self.is_dev() {
            &*DEV_KEYS
        } else {
            self.token_secrets()
        }
    }

    /// Whether this is a site without secrets, which nobody can mint tokens for.
    pub fn is_dev(&self) -> bool {
        self.secrets.is_empty()
    }

    /// Whether a browser page from `origin` may connect.
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.allowed_origins.is_empty()
            || self
                .allowed_origins
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(origin.trim_end_matches('/')))
    }
}
