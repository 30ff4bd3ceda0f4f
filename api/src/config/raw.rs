//! The configuration as written: every key with its default, before checks.

use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub listen: String,
    pub engine: String,
    pub redis_url: Option<String>,
    pub redis: RawRedis,
    pub log: RawLog,
    pub publish: RawPublish,
    pub history: RawHistory,
    pub connection: RawConnection,
    pub shutdown: RawShutdown,
    pub listener: RawListener,
    pub metrics: RawMetrics,
    pub meteor: RawCompatPort,
    pub stomp: RawCompatPort,
    pub compat: RawCompat,
    pub limits: RawLimits,
    pub timeline: RawTimeline,
    pub deliver: RawDeliver,
    pub delivery: RawDelivery,
    pub poll: RawPoll,
    pub testing: RawTesting,
    pub admin: RawAdmin,
    pub tls: RawTls,
    pub accounting: RawAccounting,
    /// `[[sites]]`; file only (no environment variables).
    pub sites: Vec<RawSite>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawTimeline {
    pub shards: u64,
    pub expander_queue_per_site: u64,
}

/// Connections accepted whose request head is not complete yet.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawListener {
    pub max_pending: u64,
    pub header_timeout_secs: u64,
    /// Several processes listen on one port (`SO_REUSEPORT`).
    pub reuseport: bool,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawMetrics {
    /// A listener of its own for `/metrics`; none by default.
    pub listen: Option<String>,
}

/// A compatibility publish port (`[meteor]`, `[stomp]`); off without `listen`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawCompatPort {
    pub listen: Option<String>,
    /// Meteor's UDP `ADDMESSAGE` listener (`meteor.udp_listen`); the STOMP
    /// port has none.
    pub udp_listen: Option<String>,
    pub site: Option<String>,
    pub channelbase: String,
    /// Whether `listen` may be an address other than loopback: Meteor's
    /// port has no authentication, and STOMP's sends its passcode in clear.
    pub allow_network: bool,
}

/// What every compatibility way in shares (`[compat]`): how StatusNet's
/// per-user timeline names map to Herald's timelines.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawCompat {
    /// `plain` or `nick`; `nicks_file` implies the table.
    pub user_timelines: String,
    pub nicks_file: Option<String>,
}

impl Default for RawCompat {
    fn default() -> Self {
        Self {
            user_timelines: "plain".into(),
            nicks_file: None,
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawDeliver {
    pub max_body_bytes: u64,
    pub idempotency_ttl_secs: u64,
}

/// How far behind delivery may run before publishers are pushed back.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawDelivery {
    pub max_lag_ms: u64,
    pub max_publish_wait_ms: u64,
}

/// HTTP long-poll.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawPoll {
    pub timeout_secs: u64,
}

impl Default for RawPoll {
    fn default() -> Self {
        Self { timeout_secs: 25 }
    }
}

impl Default for RawDelivery {
    fn default() -> Self {
        Self {
            max_lag_ms: 250,
            max_publish_wait_ms: 1000,
        }
    }
}

impl Default for RawTimeline {
    fn default() -> Self {
        Self {
            shards: 1024,
            expander_queue_per_site: fanout::DEFAULT_EXPANDER_QUEUE_PER_SITE as u64,
        }
    }
}

impl Default for RawListener {
    fn default() -> Self {
        Self {
            max_pending: 4096,
            header_timeout_secs: 10,
            reuseport: false,
        }
    }
}

impl Default for RawDeliver {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 * 1024 * 1024,
            idempotency_ttl_secs: fanout::HistoryConfig::default().dedupe_ttl.as_secs(),
        }
    }
}

/// The operator's credential for `/api/admin/*`; none by default, and
/// then those routes answer 404.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawAdmin {
    pub secret: String,
}

/// Native TLS on the main listener: PEM files; off unless both are set.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawTls {
    pub cert: String,
    pub key: String,
}

/// Per-site and per-user traffic accounting (docs/operations.md).
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawAccounting {
    pub enabled: bool,
    pub top_users: u64,
    pub split_share: f64,
}

impl Default for RawAccounting {
    fn default() -> Self {
        let config = crate::accounting::AccountingConfig::default();
        Self {
            enabled: config.enabled,
            top_users: config.top_users as u64,
            split_share: config.split_share,
        }
    }
}

/// Routes for conformance testing, all off by default.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawTesting {
    pub ws_echo: bool,
}

/// Defaults for every site's limits.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawLimits {
    pub connections: u64,
    pub connections_per_ip: u64,
    pub connection_rate_per_ip: u64,
    pub connection_burst_per_ip: u64,
    pub publish_rate: u64,
    pub publish_burst: u64,
    pub command_rate: u64,
    pub command_burst: u64,
    pub new_channel_rate: u64,
    pub new_channel_burst: u64,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSite {
    pub id: String,
    pub key: String,
    pub secrets: Vec<String>,
    /// Keys that sign the site's client tokens instead of its secrets.
    #[serde(default)]
    pub token_keys: Vec<String>,
    /// Keys that verify the site's Mercure JWTs instead of its token keys.
    #[serde(default)]
    pub mercure_keys: Vec<String>,
    #[serde(default = "public_mode")]
    pub mode: String,
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Pusher `client-` events on private channels.
    #[serde(default)]
    pub client_events: bool,
    /// Where Pusher webhooks go (`http://…`).
    #[serde(default)]
    pub webhook_url: Option<String>,
    #[serde(default)]
    pub limits: RawSiteLimits,
}

fn public_mode() -> String {
    "public".into()
}

/// One site's own limits; what it leaves out comes from `[limits]`,
/// `connection.*` and `publish.*`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawSiteLimits {
    pub connections: Option<u64>,
    pub connections_per_ip: Option<u64>,
    pub connection_rate_per_ip: Option<u64>,
    pub connection_burst_per_ip: Option<u64>,
    pub publish_rate: Option<u64>,
    pub publish_burst: Option<u64>,
    pub command_rate: Option<u64>,
    pub command_burst: Option<u64>,
    pub new_channel_rate: Option<u64>,
    pub new_channel_burst: Option<u64>,
    pub max_subscriptions: Option<u64>,
    pub max_frame_bytes: Option<u64>,
    pub max_message_bytes: Option<u64>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawRedis {
    pub prefix: String,
    pub partitions: u64,
    pub linger_ms: u64,
    pub command_timeout_ms: u64,
    pub presence_timeout_ms: u64,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawLog {
    pub format: String,
    pub level: String,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawPublish {
    pub secret: String,
    /// The key that signs the implicit site's client tokens; empty: its secret.
    pub token_key: String,
    /// Lets the dev site listen on an address other than loopback.
    pub allow_dev_site_on_network: bool,
    pub trusted_networks: Vec<String>,
    pub max_body_bytes: u64,
    pub max_message_bytes: u64,
    pub max_channels: u64,
    pub signature_window_secs: u64,
    pub body_timeout_secs: u64,
    pub max_body_bytes_in_flight: u64,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawHistory {
    pub size: u64,
    pub min_age_secs: u64,
    pub max_size: u64,
    pub ttl_secs: u64,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawConnection {
    pub max_subscriptions: u64,
    pub outbox_max_bytes: u64,
    pub max_frame_bytes: u64,
    pub read_buffer_bytes: u64,
    pub ping_interval_secs: u64,
    pub idle_timeout_secs: u64,
    pub close_timeout_secs: u64,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawShutdown {
    pub grace_secs: u64,
    pub reconnect_jitter_ms: u64,
    pub readiness_delay_ms: u64,
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            engine: "memory".into(),
            redis_url: None,
            redis: RawRedis::default(),
            log: RawLog::default(),
            publish: RawPublish::default(),
            history: RawHistory::default(),
            connection: RawConnection::default(),
            shutdown: RawShutdown::default(),
            listener: RawListener::default(),
            metrics: RawMetrics::default(),
            meteor: RawCompatPort::default(),
            stomp: RawCompatPort::default(),
            compat: RawCompat::default(),
            limits: RawLimits::default(),
            timeline: RawTimeline::default(),
            deliver: RawDeliver::default(),
            delivery: RawDelivery::default(),
            poll: RawPoll::default(),
            testing: RawTesting::default(),
            admin: RawAdmin::default(),
            tls: RawTls::default(),
            accounting: RawAccounting::default(),
            sites: Vec::new(),
        }
    }
}

impl Default for RawRedis {
    fn default() -> Self {
        Self {
            prefix: "herald".into(),
            partitions: 16,
            linger_ms: 2000,
            command_timeout_ms: 2000,
            presence_timeout_ms: 15_000,
        }
    }
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            format: "plain".into(),
            level: "info".into(),
        }
    }
}

impl Default for RawPublish {
    fn default() -> Self {
        Self {
            secret: String::new(),
            token_key: String::new(),
            allow_dev_site_on_network: false,
            trusted_networks: vec!["127.0.0.0/8".into(), "::1/128".into()],
            max_body_bytes: 1024 * 1024,
            max_message_bytes: 64 * 1024,
            max_channels: 1000,
            signature_window_secs: 300,
            body_timeout_secs: 30,
            // Four of the largest deliveries (`deliver.max_body_bytes`) at once.
            max_body_bytes_in_flight: 64 * 1024 * 1024,
        }
    }
}

// The library crates own their defaults; the raw config only restates them
// in the file's units, so there is one place to change a default.
impl Default for RawHistory {
    fn default() -> Self {
        let history = fanout::HistoryConfig::default();
        Self {
            size: history.size as u64,
            min_age_secs: history.min_age.as_secs(),
            max_size: history.max_size as u64,
            ttl_secs: history.ttl.as_secs(),
        }
    }
}

impl Default for RawConnection {
    fn default() -> Self {
        let c = push::SessionConfig::default();
        Self {
            max_subscriptions: c.max_subscriptions as u64,
            outbox_max_bytes: c.outbox_max_bytes as u64,
            max_frame_bytes: c.max_frame_bytes as u64,
            read_buffer_bytes: c.read_buffer_bytes as u64,
            ping_interval_secs: c.ping_interval.as_secs(),
            idle_timeout_secs: c.idle_timeout.as_secs(),
            close_timeout_secs: c.close_timeout.as_secs(),
        }
    }
}

impl Default for RawLimits {
    fn default() -> Self {
        let limits = sites::SiteLimits::default();
        Self {
            connections: limits.connections.into(),
            connections_per_ip: limits.connections_per_ip.into(),
            connection_rate_per_ip: limits.connection_rate_per_ip.into(),
            connection_burst_per_ip: limits.connection_burst_per_ip.into(),
            publish_rate: limits.publish_rate.into(),
            publish_burst: limits.publish_burst.into(),
            command_rate: limits.command_rate.into(),
            command_burst: limits.command_burst.into(),
            new_channel_rate: limits.new_channel_rate.into(),
            new_channel_burst: limits.new_channel_burst.into(),
        }
    }
}

impl Default for RawShutdown {
    fn default() -> Self {
        Self {
            grace_secs: 10,
            reconnect_jitter_ms: 5000,
            readiness_delay_ms: 2000,
        }
    }
}

/// Every key, with the kind of value its environment variable carries.
/// `HERALD_` + the key in capitals with `.` as `_` names the variable.
pub(crate) const KEYS: &[(&str, Kind)] = &[
    ("listen", Kind::Str),
    ("engine", Kind::Str),
    ("redis_url", Kind::Str),
    ("redis.prefix", Kind::Str),
    ("redis.partitions", Kind::Int),
    ("redis.linger_ms", Kind::Int),
    ("redis.command_timeout_ms", Kind::Int),
    ("redis.presence_timeout_ms", Kind::Int),
    ("log.format", Kind::Str),
    ("log.level", Kind::Str),
    ("publish.secret", Kind::Str),
    ("publish.token_key", Kind::Str),
    ("publish.allow_dev_site_on_network", Kind::Bool),
    ("publish.trusted_networks", Kind::List),
    ("publish.max_body_bytes", Kind::Int),
    ("publish.max_message_bytes", Kind::Int),
    ("publish.max_channels", Kind::Int),
    ("publish.signature_window_secs", Kind::Int),
    ("publish.body_timeout_secs", Kind::Int),
    ("publish.max_body_bytes_in_flight", Kind::Int),
    ("history.size", Kind::Int),
    ("history.min_age_secs", Kind::Int),
    ("history.max_size", Kind::Int),
    ("history.ttl_secs", Kind::Int),
    ("connection.max_subscriptions", Kind::Int),
    ("connection.outbox_max_bytes", Kind::Int),
    ("connection.max_frame_bytes", Kind::Int),
    ("connection.read_buffer_bytes", Kind::Int),
    ("connection.ping_interval_secs", Kind::Int),
    ("connection.idle_timeout_secs", Kind::Int),
    ("connection.close_timeout_secs", Kind::Int),
    ("shutdown.grace_secs", Kind::Int),
    ("shutdown.reconnect_jitter_ms", Kind::Int),
    ("shutdown.readiness_delay_ms", Kind::Int),
    ("listener.max_pending", Kind::Int),
    ("listener.header_timeout_secs", Kind::Int),
    ("listener.reuseport", Kind::Bool),
    ("metrics.listen", Kind::Str),
    ("meteor.listen", Kind::Str),
    ("meteor.udp_listen", Kind::Str),
    ("meteor.site", Kind::Str),
    ("meteor.channelbase", Kind::Str),
    ("meteor.allow_network", Kind::Bool),
    ("stomp.listen", Kind::Str),
    ("stomp.udp_listen", Kind::Str),
    ("stomp.site", Kind::Str),
    ("stomp.channelbase", Kind::Str),
    ("stomp.allow_network", Kind::Bool),
    ("compat.user_timelines", Kind::Str),
    ("compat.nicks_file", Kind::Str),
    ("timeline.shards", Kind::Int),
    ("timeline.expander_queue_per_site", Kind::Int),
    ("deliver.max_body_bytes", Kind::Int),
    ("deliver.idempotency_ttl_secs", Kind::Int),
    ("delivery.max_lag_ms", Kind::Int),
    ("delivery.max_publish_wait_ms", Kind::Int),
    ("poll.timeout_secs", Kind::Int),
    ("limits.connections", Kind::Int),
    ("limits.connections_per_ip", Kind::Int),
    ("limits.connection_rate_per_ip", Kind::Int),
    ("limits.connection_burst_per_ip", Kind::Int),
    ("limits.publish_rate", Kind::Int),
    ("limits.publish_burst", Kind::Int),
    ("limits.command_rate", Kind::Int),
    ("limits.command_burst", Kind::Int),
    ("limits.new_channel_rate", Kind::Int),
    ("limits.new_channel_burst", Kind::Int),
    ("testing.ws_echo", Kind::Bool),
    ("admin.secret", Kind::Str),
    ("tls.cert", Kind::Str),
    ("tls.key", Kind::Str),
    ("accounting.enabled", Kind::Bool),
    ("accounting.top_users", Kind::Int),
    ("accounting.split_share", Kind::Float),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Str,
    Int,
    Bool,
    List,
    Float,
}

pub(crate) fn env_name(key: &str) -> String {
    format!("HERALD_{}", key.replace('.', "_").to_ascii_uppercase())
}
