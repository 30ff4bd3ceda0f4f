//! Herald's configuration: defaults, then a TOML file, then `HERALD_*`
//! environment variables, then command-line flags; parsed raw, then
//! validated into typed form before anything binds. `docs/configuration.md`
//! documents every key.

mod raw;
mod sites;
mod sources;

use std::{net::SocketAddr, time::Duration};

use ::sites::SiteSettings;
use fanout::HistoryConfig;
use ipnet::IpNet;
use push::SessionConfig;

pub use crate::accounting::AccountingConfig;

pub(crate) use sources::from_toml;
pub use sources::{Overrides, load};

/// A configuration error, naming the key at fault.
#[derive(Debug, thiserror::Error)]
#[error("`{key}`: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub engine: EngineKind,
    pub log: LogConfig,
    pub publish: PublishConfig,
    pub history: HistoryConfig,
    pub connection: SessionConfig,
    pub shutdown: ShutdownConfig,
    pub timeline: TimelineConfig,
    pub listener: ListenerConfig,
    pub delivery: DeliveryConfig,
    /// HTTP long-poll (`/poll`).
    pub poll: PollConfig,
    pub metrics: MetricsConfig,
    /// The Meteor controller port (`[meteor]`), off unless `meteor.listen` is set.
    pub meteor: Option<CompatPortConfig>,
    /// The STOMP publish port for Orbited sites (`[stomp]`), off unless
    /// `stomp.listen` is set.
    pub stomp: Option<CompatPortConfig>,
    /// How StatusNet's per-user timeline names map to Herald's
    /// (`compat.user_timelines`, `compat.nicks_file`): the ports' `names`
    /// carry it, and `/stomp` uses it when no STOMP port is configured.
    pub user_timelines: push::statusnet::UserTimelines,
    /// Every site served; without `[[sites]]`, the one implicit site
    /// (`default`), which is the dev site when it has no secret. The
    /// server moves them into its site table at start (`push::sites`), so
    /// this is empty in a running server's configuration.
    pub sites: Vec<SiteSettings>,
    /// Whether `GET /ws/echo` is served (`testing.ws_echo`): an echo over
    /// the `/ws` codec for the Autobahn conformance suite, loopback only.
    pub ws_echo: bool,
    /// The operator's bearer credential for `/api/admin/*` (`admin.secret`);
    /// without one those routes answer 404.
    pub admin_secret: Option<String>,
    /// Per-site and per-user traffic accounting (`[accounting]`).
    pub accounting: AccountingConfig,
    /// Native TLS on the main listener (`[tls]`), off unless configured.
    pub tls: Option<TlsConfig>,
}

/// The main listener's certificate and key, read and checked when the
/// configuration is (so a reload re-reads the files).
#[derive(Clone)]
pub struct TlsConfig {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    pub certified: std::sync::Arc<rustls::sign::CertifiedKey>,
}

impl std::fmt::Debug for TlsConfig {
    // The paths only: a reload compares configurations by their Debug
    // text, and the key is nobody's business.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Whether this is the zero-config dev site: one site without a secret.
    pub fn is_dev_site(&self) -> bool {
        matches!(&self.sites[..], [site] if site.is_dev())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineKind {
    Memory,
    /// Redis, standalone, behind Sentinel or a Cluster (by the URL's scheme).
    Redis(RedisSettings),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    pub url: String,
    pub prefix: String,
    pub partitions: u16,
    pub linger: Duration,
    pub command_timeout: Duration,
    /// How long a node may miss heartbeats before its presence members leave.
    pub presence_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub json: bool,
    /// A tracing filter directive, already checked.
    pub level: String,
}

#[derive(Debug, Clone)]
pub struct PublishConfig {
    /// Who may publish without a secret on the dev site.
    pub trusted_networks: Vec<IpNet>,
    pub max_body_bytes: usize,
    pub max_channels: usize,
    /// How far a signed request's timestamp may be from now, either way;
    /// also how long its signature is remembered against replays.
    pub signature_window: Duration,
    /// How long a publish or delivery body may take to arrive, whole.
    pub body_timeout: Duration,
    /// The bytes every publish and delivery body being read or handled may
    /// hold together; at least the larger of the two body limits.
    pub max_body_bytes_in_flight: usize,
}

#[derive(Debug, Clone)]
pub struct TimelineConfig {
    /// Timeline shards (`S`); the same on every node.
    pub shards: u32,
    /// Largest `POST /api/deliver` body.
    pub max_body_bytes: usize,
    /// Shard messages of one site that may wait for this node's expander.
    pub expander_queue_per_site: usize,
}

/// What a connection may cost before its request head is complete.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// Connections accepted whose request head is not complete yet, across
    /// the process; past it, new connections are closed at once.
    pub max_pending: usize,
    /// How long a new connection may take to send its request head.
    pub header_timeout: Duration,
    /// Whether the main listener sets `SO_REUSEPORT`, so that several
    /// Herald processes on one machine share its port and the kernel
    /// spreads new connections over them: one process holds fewer sockets
    /// than its open-files limit allows, a machine holds more. Only with a
    /// shared engine (Redis), which validation checks.
    pub reuseport: bool,
}

/// The bound on delivery lag ([`fanout::lag`]) and how publishers feel it.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// While this node's delivery runs further behind than this, a publish
    /// waits; zero turns pushback off.
    pub max_lag: Duration,
    /// How long a publish waits for the lag to come down before it is
    /// answered 503 with `Retry-After`; zero refuses at once.
    pub max_publish_wait: Duration,
}

/// HTTP long-poll (`[poll]`).
#[derive(Debug, Clone)]
pub struct PollConfig {
    /// How long a poll with nothing to answer is held: the default of its
    /// `timeout` parameter, and the most it may ask for. Below the idle
    /// timeouts of proxies (often 30 or 60 s), so that a held poll ends
    /// with an answer, not with the proxy's error.
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// A listener of its own serving `/metrics` (and `/healthz`); the main
    /// listener then does not serve `/metrics`.
    pub listen: Option<SocketAddr>,
}

/// A publish port of a server Herald replaces (docs/compat.md): Meteor's
/// controller port (`[meteor]`) or Orbited's STOMP broker (`[stomp]`).
#[derive(Debug, Clone)]
pub struct CompatPortConfig {
    pub listen: SocketAddr,
    /// Meteor's UDP `ADDMESSAGE` listener (`meteor.udp_listen`), off unless set.
    pub udp_listen: Option<SocketAddr>,
    /// The site whose channels the port publishes to.
    pub site: String,
    /// How the site plugin's names become the site's channels: its
    /// `channelbase` (a name that starts with it and a `-` for Meteor, a `/`
    /// for STOMP, is that site's channel with the prefix taken off), and
    /// `compat.user_timelines` (`push::statusnet`).
    pub names: push::statusnet::StatusNetNames,
}

#[derive(Debug, Clone)]
pub struct ShutdownConfig {
    pub grace: Duration,
    pub reconnect_jitter: Duration,
    /// How long `/readyz` answers 503 while connections are still accepted
    /// and served, before the listener closes: time for a load balancer to
    /// stop sending new clients here.
    pub readiness_delay: Duration,
}

/// Environment variables for a test, as `load` takes them.
#[cfg(test)]
pub(crate) fn test_env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
