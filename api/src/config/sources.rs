//! Merging the configuration sources and checking the result.

use std::{net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

use fanout::HistoryConfig;
use ipnet::IpNet;
use push::{
    SessionConfig,
    statusnet::{StatusNetNames, UserTimelines, parse_nicks},
};
use toml::{Table, Value};

use super::{
    AccountingConfig, CompatPortConfig, Config, ConfigError, DeliveryConfig, EngineKind,
    ListenerConfig, LogConfig, MetricsConfig, PollConfig, PublishConfig, RedisSettings,
    ShutdownConfig, TimelineConfig, TlsConfig,
    raw::{
        KEYS, Kind, RawCompat, RawCompatPort, RawConfig, RawConnection, RawListener, RawLog,
        RawShutdown, env_name,
    },
    sites::sites,
};

/// What the command line says; each field wins over every other source.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    pub listen: Option<String>,
    pub engine: Option<String>,
    pub redis_url: Option<String>,
    pub metrics_listen: Option<String>,
    pub meteor_listen: Option<String>,
    pub stomp_listen: Option<String>,
    /// `--allow-dev-site-on-network`.
    pub allow_dev_site_on_network: bool,
    /// `--reuseport`.
    pub reuseport: bool,
}

/// Builds the configuration from the file, the `HERALD_*` variables in `env`
/// and the command line, and validates all of it.
pub fn load(
    overrides: &Overrides,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let env: Vec<(String, String)> = env
        .into_iter()
        .filter(|(name, _)| name.starts_with("HERALD_"))
        .collect();
    let file = overrides.config_file.clone().or_else(|| {
        env.iter()
            .find(|(name, _)| name == "HERALD_CONFIG")
            .map(|(_, value)| PathBuf::from(value))
    });
    let mut table = match &file {
        Some(path) => read_file(path)?,
        None => Table::new(),
    };
    for (name, value) in &env {
        if name == "HERALD_CONFIG" {
            continue;
        }
        let Some((key, kind)) = KEYS.iter().find(|(key, _)| env_name(key) == *name) else {
            return Err(ConfigError::new(
                name,
                "unknown environment variable; see docs/configuration.md for the HERALD_* names",
            ));
        };
        let value = env_value(value, *kind)
            .ok_or_else(|| ConfigError::new(name, format!("expected {}", kind_text(*kind))))?;
        set(&mut table, key, value);
    }
    let flags = [
        ("listen", &overrides.listen),
        ("engine", &overrides.engine),
        ("redis_url", &overrides.redis_url),
        ("metrics.listen", &overrides.metrics_listen),
        ("meteor.listen", &overrides.meteor_listen),
        ("stomp.listen", &overrides.stomp_listen),
    ];
    for (key, value) in flags {
        if let Some(value) = value {
            set(&mut table, key, Value::String(value.clone()));
        }
    }
    if overrides.allow_dev_site_on_network {
        set(
            &mut table,
            "publish.allow_dev_site_on_network",
            Value::Boolean(true),
        );
    }
    if overrides.reuseport {
        set(&mut table, "listener.reuseport", Value::Boolean(true));
    }
    build(table)
}

/// The configuration from the text of a configuration file alone (no
/// environment, no flags), checked as [`load`] checks it: for the fuzz
/// target in `fuzz/`, which feeds it arbitrary text.
pub(crate) fn from_toml(text: &str) -> Result<Config, ConfigError> {
    let table = text
        .parse::<Table>()
        .map_err(|e| ConfigError::new("config", e.to_string().trim_end().to_string()))?;
    build(table)
}

/// Reads the merged table into the typed configuration and validates it.
fn build(table: Table) -> Result<Config, ConfigError> {
    let raw: RawConfig = serde_path_to_error::deserialize(Value::Table(table)).map_err(|e| {
        let path = e.path().to_string();
        ConfigError::new(
            if path == "." { "config".into() } else { path },
            e.into_inner().to_string(),
        )
    })?;
    validate(raw)
}

fn read_file(path: &PathBuf) -> Result<Table, ConfigError> {
    let key = format!("--config {}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::new(&key, e.to_string()))?;
    text.parse::<Table>()
        .map_err(|e| ConfigError::new(&key, e.to_string().trim_end().to_string()))
}

fn env_value(value: &str, kind: Kind) -> Option<Value> {
    match kind {
        Kind::Str => Some(Value::String(value.to_string())),
        Kind::Int => value.trim().parse::<i64>().ok().map(Value::Integer),
        Kind::Float => value.trim().parse::<f64>().ok().map(Value::Float),
        Kind::Bool => match value.trim() {
            "true" | "1" => Some(Value::Boolean(true)),
            "false" | "0" => Some(Value::Boolean(false)),
            _ => None,
        },
        Kind::List => Some(Value::Array(
            value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
                .collect(),
        )),
    }
}

fn kind_text(kind: Kind) -> &'static str {
    match kind {
        Kind::Str => "a string",
        Kind::Int => "an integer",
        Kind::Float => "a number",
        Kind::Bool => "true or false",
        Kind::List => "a comma-separated list",
    }
}

/// Sets `a.b` in `table`, creating the section when needed.
fn set(table: &mut Table, key: &str, value: Value) {
    match key.split_once('.') {
        None => {
            table.insert(key.to_string(), value);
        }
        Some((section, rest)) => {
            let entry = table
                .entry(section.to_string())
                .or_insert_with(|| Value::Table(Table::new()));
            if !entry.is_table() {
                *entry = Value::Table(Table::new());
            }
            if let Value::Table(inner) = entry {
                set(inner, rest, value);
            }
        }
    }
}

/// Checks each section in turn. The first fault wins, so the order here
/// decides which key a configuration with several faults is reported under.
fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
    let listen = listen("listen", &raw.listen)?;
    let engine = engine(&raw)?;
    let log = log(&raw.log)?;
    let publish = publish(&raw)?;
    let history = history(&raw)?;
    let connection = connection(&raw.connection)?;
    let sites = sites(&raw, &connection)?;
    let timeline = timeline(&raw)?;
    let shutdown = shutdown(&raw.shutdown);
    let listener = listener(&raw.listener, &engine)?;
    let delivery = DeliveryConfig {
        max_lag: Duration::from_millis(raw.delivery.max_lag_ms),
        max_publish_wait: Duration::from_millis(raw.delivery.max_publish_wait_ms),
    };
    let poll = PollConfig {
        timeout: Duration::from_secs(
            at_least("poll.timeout_secs", raw.poll.timeout_secs, 1)? as u64
        ),
    };
    let metrics = MetricsConfig {
        listen: match &raw.metrics.listen {
            Some(text) => Some(self::listen("metrics.listen", text)?),
            None => None,
        },
    };
    let users = user_timelines(&raw.compat)?;
    let meteor = compat_port("meteor", "Meteor", &raw.meteor, &sites, &users)?;
    let stomp = compat_port("stomp", "STOMP", &raw.stomp, &sites, &users)?;
    dev_site_stays_local(&raw, listen, &sites)?;
    let ws_echo = ws_echo(&raw, listen)?;
    let accounting = accounting(&raw)?;
    let admin_secret = (!raw.admin.secret.is_empty()).then(|| raw.admin.secret.clone());
    let tls = tls(&raw)?;
    Ok(Config {
        listen,
        engine,
        log,
        publish,
        history,
        connection,
        shutdown,
        timeline,
        listener,
        delivery,
        poll,
        metrics,
        meteor,
        stomp,
        user_timelines: users,
        sites,
        ws_echo,
        admin_secret,
        accounting,
        tls,
    })
}

/// `[tls]`: both files or neither; read and checked now, so that a bad
/// certificate is a configuration error (exit 64, `--check-config`, a
/// refused reload) and never a failure at the first handshake.
fn tls(raw: &RawConfig) -> Result<Option<TlsConfig>, ConfigError> {
    let (cert, key) = (&raw.tls.cert, &raw.tls.key);
    match (cert.is_empty(), key.is_empty()) {
        (true, true) => return Ok(None),
        (false, true) => return Err(ConfigError::new("tls.key", "set it with tls.cert")),
        (true, false) => return Err(ConfigError::new("tls.cert", "set it with tls.key")),
        (false, false) => {}
    }
    let (cert, key) = (PathBuf::from(cert), PathBuf::from(key));
    let certified = wire::load_certified_key(&cert, &key).map_err(|error| {
        let field = match error {
            wire::CertificateError::Certificate { .. } => "tls.cert",
            _ => "tls.key",
        };
        ConfigError::new(field, error.to_string())
    })?;
    Ok(Some(TlsConfig {
        cert,
        key,
        certified,
    }))
}

fn accounting(raw: &RawConfig) -> Result<AccountingConfig, ConfigError> {
    let raw = &raw.accounting;
    // A sketch's slots are scanned when a new user takes one; past this,
    // that scan would cost more than the publish it counts.
    if !(1..=100_000).contains(&raw.top_users) {
        return Err(ConfigError::new(
            "accounting.top_users",
            "must be between 1 and 100000",
        ));
    }
    if !(raw.split_share > 0.0 && raw.split_share <= 1.0) {
        return Err(ConfigError::new(
            "accounting.split_share",
            "must be a share above 0 and at most 1",
        ));
    }
    Ok(AccountingConfig {
        enabled: raw.enabled,
        top_users: raw.top_users as usize,
        split_share: raw.split_share,
    })
}

/// A compatibility publish port (`[meteor]` or `[stomp]`), when its
/// `listen` is set: on loopback unless the operator allows the network in so
/// many words (Meteor's port has no authentication, and a STOMP passcode
/// travels in clear), for the one site named, or the only one.
fn compat_port(
    section: &str,
    protocol: &str,
    raw: &RawCompatPort,
    sites: &[::sites::SiteSettings],
    users: &UserTimelines,
) -> Result<Option<CompatPortConfig>, ConfigError> {
    let key = |name: &str| format!("{section}.{name}");
    let udp_listen = match &raw.udp_listen {
        Some(_) if section != "meteor" => {
            return Err(ConfigError::new(
                key("udp_listen"),
                "only the Meteor port has a UDP listener",
            ));
        }
        Some(_) if raw.listen.is_none() => {
            return Err(ConfigError::new(
                key("udp_listen"),
                "set meteor.listen too: the UDP listener publishes for the Meteor port's site",
            ));
        }
        Some(text) => Some(listen(&key("udp_listen"), text)?),
        None => None,
    };
    let Some(text) = &raw.listen else {
        return Ok(None);
    };
    let listen = listen(&key("listen"), text)?;
    for (name, addr) in [("listen", Some(listen)), ("udp_listen", udp_listen)] {
        if let Some(addr) = addr
            && !addr.ip().is_loopback()
            && !raw.allow_network
        {
            return Err(ConfigError::new(
                key(name),
                format!(
                    "the {protocol} port listens on loopback unless {section}.allow_network = \
                     true (see docs/compat.md); firewall {addr} before allowing it"
                ),
            ));
        }
    }
    let site = match (&raw.site, sites) {
        (Some(id), _) if sites.iter().any(|site| site.id == *id) => id.clone(),
        (Some(id), _) => {
            return Err(ConfigError::new(
                key("site"),
                format!("no site {id:?} is configured"),
            ));
        }
        (None, [only]) => only.id.clone(),
        (None, _) => {
            return Err(ConfigError::new(
                key("site"),
                format!(
                    "several sites are configured: name the one the {protocol} port publishes for"
                ),
            ));
        }
    };
    if raw
        .channelbase
        .contains(|c: char| c.is_whitespace() || c == '/')
    {
        return Err(ConfigError::new(
            key("channelbase"),
            "a channel base cannot contain whitespace or '/'",
        ));
    }
    Ok(Some(CompatPortConfig {
        listen,
        udp_listen,
        site,
        names: StatusNetNames {
            channelbase: raw.channelbase.clone(),
            users: users.clone(),
        },
    }))
}

/// How StatusNet's `all-<nick>` and `replies-<nick>` map to Herald's
/// timelines (`compat.user_timelines`, `compat.nicks_file`): the table is
/// read once, at start.
fn user_timelines(raw: &RawCompat) -> Result<UserTimelines, ConfigError> {
    if let Some(path) = &raw.nicks_file {
        let key = "compat.nicks_file";
        let text = std::fs::read_to_string(path)
            .map_err(|error| ConfigError::new(key, format!("cannot read {path}: {error}")))?;
        let table = parse_nicks(&text)
            .map_err(|error| ConfigError::new(key, format!("{path}: {error}")))?;
        return Ok(UserTimelines::Table(std::sync::Arc::new(table)));
    }
    match raw.user_timelines.as_str() {
        "plain" => Ok(UserTimelines::Plain),
        "nick" => Ok(UserTimelines::NickIsId),
        other => Err(ConfigError::new(
            "compat.user_timelines",
            format!("{other:?} is not \"plain\" or \"nick\" (or set compat.nicks_file)"),
        )),
    }
}

/// The echo route answers anyone who connects, with no site's limits on
/// what it echoes but the frame size: it exists for a conformance test
/// suite on the same machine, never on an address others can reach.
fn ws_echo(raw: &RawConfig, listen: SocketAddr) -> Result<bool, ConfigError> {
    if raw.testing.ws_echo && !listen.ip().is_loopback() {
        return Err(ConfigError::new(
            "testing.ws_echo",
            format!("the echo route is for conformance tests on loopback only, not on {listen}"),
        ));
    }
    Ok(raw.testing.ws_echo)
}

fn listen(key: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    SocketAddr::from_str(text)
        .map_err(|_| ConfigError::new(key, format!("{text:?} is not an IP:PORT address")))
}

/// The dev site lets anyone read every channel (and its trusted networks
/// publish without a secret), so it listens on loopback only, unless the
/// operator says in so many words that it may be reached from the network.
fn dev_site_stays_local(
    raw: &RawConfig,
    listen: SocketAddr,
    sites: &[::sites::SiteSettings],
) -> Result<(), ConfigError> {
    let dev_site = matches!(sites, [site] if site.is_dev());
    if dev_site && !listen.ip().is_loopback() && !raw.publish.allow_dev_site_on_network {
        return Err(ConfigError::new(
            "listen",
            format!(
                "{listen} is not a loopback address, and this is the dev site (no \
                 publish.secret and no [[sites]]): anyone who can reach it could read every \
                 channel. Set publish.secret (HERALD_PUBLISH_SECRET), or listen on 127.0.0.1; \
                 publish.allow_dev_site_on_network = true (--allow-dev-site-on-network) \
                 allows it anyway"
            ),
        ));
    }
    Ok(())
}

fn listener(raw: &RawListener, engine: &EngineKind) -> Result<ListenerConfig, ConfigError> {
    // Processes sharing a port on the memory engine would each have channels
    // of their own: the kernel would spread a channel's subscribers over
    // them, and a publish, landing on one, would reach only that one's
    // share, with nothing to say so. Refused rather than warned about,
    // because nothing in such a set-up works as the operator means it to.
    if raw.reuseport && *engine == EngineKind::Memory {
        return Err(ConfigError::new(
            "listener.reuseport",
            "processes sharing a port need a shared engine: on engine = \"memory\" each would \
             have channels of its own, and a message published to one would not reach the \
             subscribers the kernel gave to the others. Use engine = \"redis\" \
             (--engine redis --redis-url URL) on every process",
        ));
    }
    Ok(ListenerConfig {
        reuseport: raw.reuseport,
        max_pending: at_least("listener.max_pending", raw.max_pending, 1)?,
        header_timeout: Duration::from_secs(at_least(
            "listener.header_timeout_secs",
            raw.header_timeout_secs,
            1,
        )? as u64),
    })
}

fn engine(raw: &RawConfig) -> Result<EngineKind, ConfigError> {
    match raw.engine.as_str() {
        "memory" => {
            if raw.redis_url.is_some() {
                return Err(ConfigError::new(
                    "redis_url",
                    "only used with engine = \"redis\"",
                ));
            }
            Ok(EngineKind::Memory)
        }
        "redis" => Ok(EngineKind::Redis(redis_settings(raw)?)),
        other => Err(ConfigError::new(
            "engine",
            format!("{other:?} is not an engine; use \"memory\" or \"redis\""),
        )),
    }
}

fn log(raw: &RawLog) -> Result<LogConfig, ConfigError> {
    let json = match raw.format.as_str() {
        "plain" => false,
        "json" => true,
        other => {
            return Err(ConfigError::new(
                "log.format",
                format!("{other:?} is not a log format; use \"plain\" or \"json\""),
            ));
        }
    };
    // Parsed here only to be checked, so that a bad filter is refused before
    // anything starts; `logging::init` builds its own from the same text.
    tracing_subscriber::EnvFilter::try_new(&raw.level)
        .map_err(|e| ConfigError::new("log.level", e.to_string()))?;
    Ok(LogConfig {
        json,
        level: raw.level.clone(),
    })
}

/// Publishing, and the limits every publish and delivery body shares,
/// which must leave room for the largest body of either.
fn publish(config: &RawConfig) -> Result<PublishConfig, ConfigError> {
    let raw = &config.publish;
    let max_body_bytes = at_least("publish.max_body_bytes", raw.max_body_bytes, 64)?;
    let largest_body = max_body_bytes.max(config.deliver.max_body_bytes as usize);
    let max_body_bytes_in_flight = at_least(
        "publish.max_body_bytes_in_flight",
        raw.max_body_bytes_in_flight,
        1,
    )?;
    if max_body_bytes_in_flight < largest_body {
        return Err(ConfigError::new(
            "publish.max_body_bytes_in_flight",
            format!(
                "must be at least the largest body allowed \
                 (publish.max_body_bytes, deliver.max_body_bytes): {largest_body}"
            ),
        ));
    }
    Ok(PublishConfig {
        trusted_networks: trusted_networks(&raw.trusted_networks)?,
        max_body_bytes,
        max_channels: at_least("publish.max_channels", raw.max_channels, 1)?,
        signature_window: Duration::from_secs(at_least(
            "publish.signature_window_secs",
            raw.signature_window_secs,
            1,
        )? as u64),
        body_timeout: Duration::from_secs(at_least(
            "publish.body_timeout_secs",
            raw.body_timeout_secs,
            1,
        )? as u64),
        max_body_bytes_in_flight,
    })
}

/// Networks such as `127.0.0.0/8`; a bare address is a network of one.
fn trusted_networks(texts: &[String]) -> Result<Vec<IpNet>, ConfigError> {
    texts
        .iter()
        .map(|text| {
            text.parse::<IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    ConfigError::new(
                        "publish.trusted_networks",
                        format!("{text:?} is not a network such as 127.0.0.0/8"),
                    )
                })
        })
        .collect()
}

/// History, and how long delivery idempotency keys are remembered, which
/// lives in `[deliver]` but is kept by the history store.
fn history(raw: &RawConfig) -> Result<HistoryConfig, ConfigError> {
    Ok(HistoryConfig {
        dedupe_ttl: Duration::from_secs(at_least(
            "deliver.idempotency_ttl_secs",
            raw.deliver.idempotency_ttl_secs,
            1,
        )? as u64),
        size: at_least("history.size", raw.history.size, 0)?,
        min_age: Duration::from_secs(raw.history.min_age_secs),
        max_size: at_least("history.max_size", raw.history.max_size, 0)?,
        ttl: Duration::from_secs(at_least("history.ttl_secs", raw.history.ttl_secs, 1)? as u64),
    })
}

fn connection(c: &RawConnection) -> Result<SessionConfig, ConfigError> {
    let ping = at_least("connection.ping_interval_secs", c.ping_interval_secs, 1)?;
    let idle = at_least("connection.idle_timeout_secs", c.idle_timeout_secs, 1)?;
    if idle < ping {
        return Err(ConfigError::new(
            "connection.idle_timeout_secs",
            "must be at least connection.ping_interval_secs, or every connection would time out",
        ));
    }
    Ok(SessionConfig {
        max_subscriptions: at_least("connection.max_subscriptions", c.max_subscriptions, 1)?,
        outbox_max_bytes: at_least("connection.outbox_max_bytes", c.outbox_max_bytes, 1024)?,
        max_frame_bytes: at_least("connection.max_frame_bytes", c.max_frame_bytes, 128)?,
        read_buffer_bytes: at_least("connection.read_buffer_bytes", c.read_buffer_bytes, 64)?,
        ping_interval: Duration::from_secs(ping as u64),
        idle_timeout: Duration::from_secs(idle as u64),
        close_timeout: Duration::from_secs(at_least(
            "connection.close_timeout_secs",
            c.close_timeout_secs,
            1,
        )? as u64),
    })
}

/// Timelines, whose largest deliver body lives in `[deliver]`.
fn timeline(raw: &RawConfig) -> Result<TimelineConfig, ConfigError> {
    Ok(TimelineConfig {
        shards: count("timeline.shards", raw.timeline.shards, 1)?,
        max_body_bytes: at_least("deliver.max_body_bytes", raw.deliver.max_body_bytes, 64)?,
        expander_queue_per_site: at_least(
            "timeline.expander_queue_per_site",
            raw.timeline.expander_queue_per_site,
            1,
        )?,
    })
}

fn shutdown(raw: &RawShutdown) -> ShutdownConfig {
    ShutdownConfig {
        grace: Duration::from_secs(raw.grace_secs),
        reconnect_jitter: Duration::from_millis(raw.reconnect_jitter_ms),
        readiness_delay: Duration::from_millis(raw.readiness_delay_ms),
    }
}

/// A count or rate that fits in 32 bits.
pub(super) fn count(key: &str, value: u64, min: u64) -> Result<u32, ConfigError> {
    if value < min {
        return Err(ConfigError::new(key, format!("must be at least {min}")));
    }
    u32::try_from(value).map_err(|_| ConfigError::new(key, "too large"))
}

fn redis_settings(raw: &RawConfig) -> Result<RedisSettings, ConfigError> {
    let Some(url) = raw.redis_url.clone() else {
        return Err(ConfigError::new(
            "redis_url",
            "engine = \"redis\" needs a URL such as redis://127.0.0.1:6379",
        ));
    };
    let schemes = [
        "redis://",
        "rediss://",
        "redis-sentinel://",
        "rediss-sentinel://",
        "redis-cluster://",
        "rediss-cluster://",
        "redis+unix://",
        "valkey://",
        "valkey-cluster://",
        "valkey-sentinel://",
    ];
    if !schemes.iter().any(|s| url.starts_with(s)) {
        return Err(ConfigError::new(
            "redis_url",
            format!("{url:?} is not a redis://, redis-sentinel:// or redis-cluster:// URL"),
        ));
    }
    if raw.redis.prefix.is_empty() || raw.redis.prefix.contains(['{', '}', ' ']) {
        return Err(ConfigError::new(
            "redis.prefix",
            "must be non-empty, without braces or spaces",
        ));
    }
    let partitions = at_least("redis.partitions", raw.redis.partitions, 1)?;
    let partitions = u16::try_from(partitions)
        .map_err(|_| ConfigError::new("redis.partitions", "at most 65535"))?;
    Ok(RedisSettings {
        url,
        prefix: raw.redis.prefix.clone(),
        partitions,
        linger: Duration::from_millis(raw.redis.linger_ms),
        command_timeout: Duration::from_millis(at_least(
            "redis.command_timeout_ms",
            raw.redis.command_timeout_ms,
            10,
        )? as u64),
        presence_timeout: Duration::from_millis(at_least(
            "redis.presence_timeout_ms",
            raw.redis.presence_timeout_ms,
            300,
        )? as u64),
    })
}

/// A size or duration, at least `min`.
pub(super) fn at_least(key: &str, value: u64, min: u64) -> Result<usize, ConfigError> {
    if value < min {
        return Err(ConfigError::new(key, format!("must be at least {min}")));
    }
    usize::try_from(value).map_err(|_| ConfigError::new(key, "too large"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_env as env;

    #[test]
    fn defaults_are_the_dev_site() {
        let config = load(&Overrides::default(), env(&[])).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.engine, EngineKind::Memory);
        assert!(config.is_dev_site());
        assert_eq!(config.history.size, 100);
        assert_eq!(config.connection, SessionConfig::default());
    }

    #[test]
    fn history_keeps_by_age_up_to_a_cap() {
        let config = load(&Overrides::default(), env(&[])).unwrap();
        assert_eq!(config.history, HistoryConfig::default());
        assert_eq!(config.history.min_age, Duration::from_secs(60));
        assert_eq!(config.history.cap(), 10_000);
        let config = load(
            &Overrides::default(),
            env(&[
                ("HERALD_HISTORY_MIN_AGE_SECS", "0"),
                ("HERALD_HISTORY_MAX_SIZE", "50"),
            ]),
        )
        .unwrap();
        assert_eq!(config.history.min_age, Duration::ZERO);
        assert_eq!(config.history.max_size, 50);
        assert_eq!(config.history.cap(), 100, "by count only: `size`");
        let error = load(
            &Overrides::default(),
            env(&[("HERALD_HISTORY_MIN_AGE_SECS", "soon")]),
        )
        .unwrap_err();
        assert_eq!(error.key, "HERALD_HISTORY_MIN_AGE_SECS");
    }

    #[test]
    fn env_and_flags_override() {
        let overrides = Overrides {
            listen: Some("127.0.0.1:0".into()),
            ..Overrides::default()
        };
        let config = load(
            &overrides,
            env(&[
                ("HERALD_LISTEN", "127.0.0.1:9"),
                ("HERALD_HISTORY_SIZE", "5"),
                ("HERALD_PUBLISH_TRUSTED_NETWORKS", "127.0.0.1/32, ::1"),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(config.listen.port(), 0);
        assert_eq!(config.history.size, 5);
        assert_eq!(config.publish.trusted_networks.len(), 2);
    }

    #[test]
    fn errors_name_the_key() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("HERALD_LISTEN", "nowhere")], "listen"),
            (&[("HERALD_HISTORY_SIZE", "many")], "HERALD_HISTORY_SIZE"),
            (&[("HERALD_HISTRY_SIZE", "5")], "HERALD_HISTRY_SIZE"),
            (&[("HERALD_ENGINE", "postgres")], "engine"),
            (&[("HERALD_ENGINE", "redis")], "redis_url"),
            (
                &[("HERALD_ENGINE", "redis"), ("HERALD_REDIS_URL", "http://x")],
                "redis_url",
            ),
            (&[("HERALD_REDIS_URL", "redis://x:1")], "redis_url"),
            (
                &[
                    ("HERALD_ENGINE", "redis"),
                    ("HERALD_REDIS_URL", "redis://x:1"),
                    ("HERALD_REDIS_PARTITIONS", "0"),
                ],
                "redis.partitions",
            ),
            (&[("HERALD_LOG_FORMAT", "xml")], "log.format"),
            (
                &[("HERALD_PUBLISH_TRUSTED_NETWORKS", "lan")],
                "publish.trusted_networks",
            ),
            (
                &[("HERALD_CONNECTION_OUTBOX_MAX_BYTES", "10")],
                "connection.outbox_max_bytes",
            ),
            (
                &[
                    ("HERALD_CONNECTION_IDLE_TIMEOUT_SECS", "1"),
                    ("HERALD_CONNECTION_PING_INTERVAL_SECS", "5"),
                ],
                "connection.idle_timeout_secs",
            ),
            (
                &[("HERALD_PUBLISH_BODY_TIMEOUT_SECS", "0")],
                "publish.body_timeout_secs",
            ),
            (
                // Smaller than deliver.max_body_bytes (16 MiB by default).
                &[("HERALD_PUBLISH_MAX_BODY_BYTES_IN_FLIGHT", "1048576")],
                "publish.max_body_bytes_in_flight",
            ),
            (&[("HERALD_PUBLISH_SECRET", "x")], "publish.secret"),
            (
                &[("HERALD_PUBLISH_SECRET", "fifteen-bytes-x")],
                "publish.secret",
            ),
            (
                &[("HERALD_PUBLISH_TOKEN_KEY", "token-key-0123456789")],
                "publish.token_key",
            ),
            (
                &[
                    ("HERALD_PUBLISH_SECRET", "publish-secret-0123"),
                    ("HERALD_PUBLISH_TOKEN_KEY", "short"),
                ],
                "publish.token_key",
            ),
            (
                &[
                    ("HERALD_PUBLISH_SECRET", "publish-secret-0123"),
                    ("HERALD_PUBLISH_TOKEN_KEY", "publish-secret-0123"),
                ],
                "publish.token_key",
            ),
            (&[("HERALD_LISTEN", "0.0.0.0:8080")], "listen"),
            (&[("HERALD_LISTEN", "[::]:8080")], "listen"),
            (
                &[("HERALD_PUBLISH_ALLOW_DEV_SITE_ON_NETWORK", "maybe")],
                "HERALD_PUBLISH_ALLOW_DEV_SITE_ON_NETWORK",
            ),
            (&[("HERALD_METRICS_LISTEN", "metrics")], "metrics.listen"),
            (&[("HERALD_METEOR_LISTEN", "4671")], "meteor.listen"),
            (&[("HERALD_METEOR_LISTEN", "0.0.0.0:4671")], "meteor.listen"),
            (
                &[
                    ("HERALD_METEOR_LISTEN", "127.0.0.1:4671"),
                    ("HERALD_METEOR_SITE", "elsewhere"),
                ],
                "meteor.site",
            ),
            (
                &[
                    ("HERALD_METEOR_LISTEN", "127.0.0.1:4671"),
                    ("HERALD_METEOR_CHANNELBASE", "my site"),
                ],
                "meteor.channelbase",
            ),
            (
                &[("HERALD_METEOR_UDP_LISTEN", "127.0.0.1:4671")],
                "meteor.udp_listen",
            ),
            (
                &[
                    ("HERALD_METEOR_LISTEN", "127.0.0.1:4671"),
                    ("HERALD_METEOR_UDP_LISTEN", "0.0.0.0:4671"),
                ],
                "meteor.udp_listen",
            ),
            (
                &[
                    ("HERALD_STOMP_LISTEN", "127.0.0.1:61613"),
                    ("HERALD_STOMP_UDP_LISTEN", "127.0.0.1:61613"),
                ],
                "stomp.udp_listen",
            ),
            (
                &[("HERALD_COMPAT_USER_TIMELINES", "by-id")],
                "compat.user_timelines",
            ),
            (
                &[("HERALD_COMPAT_NICKS_FILE", "/nonexistent/herald-nicks")],
                "compat.nicks_file",
            ),
            (
                &[("HERALD_LISTENER_MAX_PENDING", "0")],
                "listener.max_pending",
            ),
            (
                &[("HERALD_LISTENER_HEADER_TIMEOUT_SECS", "0")],
                "listener.header_timeout_secs",
            ),
            (
                &[("HERALD_TIMELINE_EXPANDER_QUEUE_PER_SITE", "0")],
                "timeline.expander_queue_per_site",
            ),
            (
                &[("HERALD_LISTENER_REUSEPORT", "true")],
                "listener.reuseport",
            ),
            (
                &[("HERALD_LISTENER_REUSEPORT", "yes")],
                "HERALD_LISTENER_REUSEPORT",
            ),
        ];
        for (vars, key) in cases {
            let error = load(&Overrides::default(), env(vars)).unwrap_err();
            assert_eq!(error.key, *key, "{vars:?}: {error}");
        }
    }

    #[test]
    fn the_meteor_port_is_off_unless_configured_and_serves_the_only_site() {
        let config = load(&Overrides::default(), env(&[])).unwrap();
        assert!(config.meteor.is_none());
        let vars = [
            ("HERALD_METEOR_LISTEN", "127.0.0.1:4671"),
            ("HERALD_METEOR_CHANNELBASE", "mysite"),
        ];
        let meteor = load(&Overrides::default(), env(&vars))
            .unwrap()
            .meteor
            .unwrap();
        assert_eq!(meteor.listen.to_string(), "127.0.0.1:4671");
        assert_eq!(meteor.site, "default");
        assert_eq!(meteor.names.channelbase, "mysite");
        let vars = [
            ("HERALD_METEOR_LISTEN", "0.0.0.0:4671"),
            ("HERALD_METEOR_ALLOW_NETWORK", "true"),
        ];
        assert!(load(&Overrides::default(), env(&vars)).is_ok());
        let vars = [
            ("HERALD_METEOR_LISTEN", "127.0.0.1:4671"),
            ("HERALD_COMPAT_USER_TIMELINES", "nick"),
        ];
        let meteor = load(&Overrides::default(), env(&vars))
            .unwrap()
            .meteor
            .unwrap();
        assert_eq!(
            meteor.names.meteor("all-evan").unwrap().as_str(),
            "user:evan"
        );
    }

    #[test]
    fn a_nick_table_is_read_at_start_and_its_bad_lines_named() {
        let path = std::env::temp_dir().join(format!("herald-nicks-unit-{}", std::process::id()));
        let file = path.to_string_lossy().into_owned();
        std::fs::write(&path, "evan 7\nzach\n").unwrap();
        let error = load(
            &Overrides::default(),
            env(&[("HERALD_COMPAT_NICKS_FILE", &file)]),
        )
        .unwrap_err();
        assert_eq!(error.key, "compat.nicks_file");
        assert!(error.to_string().contains("line 2"), "{error}");
        std::fs::write(&path, "evan 7\n").unwrap();
        let vars = [
            ("HERALD_STOMP_LISTEN", "127.0.0.1:61613"),
            ("HERALD_COMPAT_NICKS_FILE", file.as_str()),
        ];
        let stomp = load(&Overrides::default(), env(&vars))
            .unwrap()
            .stomp
            .unwrap();
        assert_eq!(stomp.names.stomp("/all/evan").unwrap().as_str(), "user:7");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn the_dev_site_listens_on_the_network_only_when_allowed() {
        let allowed = load(
            &Overrides::default(),
            env(&[
                ("HERALD_LISTEN", "0.0.0.0:8080"),
                ("HERALD_PUBLISH_ALLOW_DEV_SITE_ON_NETWORK", "true"),
            ]),
        )
        .unwrap();
        assert!(allowed.is_dev_site());
        let flag = Overrides {
            listen: Some("0.0.0.0:8080".into()),
            allow_dev_site_on_network: true,
            ..Overrides::default()
        };
        assert!(load(&flag, env(&[])).is_ok());
        let with_secret = load(
            &Overrides::default(),
            env(&[
                ("HERALD_LISTEN", "0.0.0.0:8080"),
                ("HERALD_PUBLISH_SECRET", "publish-secret-0123"),
            ]),
        )
        .unwrap();
        assert!(!with_secret.is_dev_site());
        for loopback in ["127.0.0.2:8080", "[::1]:8080"] {
            assert!(load(&Overrides::default(), env(&[("HERALD_LISTEN", loopback)])).is_ok());
        }
    }

    #[test]
    fn reuseport_needs_a_shared_engine() {
        let off = load(&Overrides::default(), env(&[])).unwrap();
        assert!(!off.listener.reuseport, "off by default");
        let flag = Overrides {
            reuseport: true,
            ..Overrides::default()
        };
        let error = load(&flag, env(&[])).unwrap_err();
        assert_eq!(error.key, "listener.reuseport", "{error}");
        assert!(error.message.contains("engine = \"redis\""), "{error}");
        let redis = [
            ("HERALD_ENGINE", "redis"),
            ("HERALD_REDIS_URL", "redis://127.0.0.1:6379"),
        ];
        assert!(load(&flag, env(&redis)).unwrap().listener.reuseport);
        let by_env = [redis[0], redis[1], ("HERALD_LISTENER_REUSEPORT", "1")];
        assert!(
            load(&Overrides::default(), env(&by_env))
                .unwrap()
                .listener
                .reuseport
        );
    }

    #[test]
    fn accounting_and_the_admin_secret_are_read_and_checked() {
        let defaults = load(&Overrides::default(), env(&[])).unwrap();
        assert!(defaults.admin_secret.is_none(), "no admin route by default");
        assert!(defaults.accounting.enabled);
        assert_eq!(defaults.accounting.top_users, 1000);
        let config = load(
            &Overrides::default(),
            env(&[
                ("HERALD_ADMIN_SECRET", "operator"),
                ("HERALD_ACCOUNTING_TOP_USERS", "50"),
                ("HERALD_ACCOUNTING_SPLIT_SHARE", "0.25"),
                ("HERALD_ACCOUNTING_ENABLED", "false"),
            ]),
        )
        .unwrap();
        assert_eq!(config.admin_secret.as_deref(), Some("operator"));
        assert_eq!(config.accounting.top_users, 50);
        assert_eq!(config.accounting.split_share, 0.25);
        assert!(!config.accounting.enabled);
        for (name, value, key) in [
            ("HERALD_ACCOUNTING_TOP_USERS", "0", "accounting.top_users"),
            (
                "HERALD_ACCOUNTING_TOP_USERS",
                "100001",
                "accounting.top_users",
            ),
            (
                "HERALD_ACCOUNTING_SPLIT_SHARE",
                "0",
                "accounting.split_share",
            ),
            (
                "HERALD_ACCOUNTING_SPLIT_SHARE",
                "1.5",
                "accounting.split_share",
            ),
            (
                "HERALD_ACCOUNTING_SPLIT_SHARE",
                "half",
                "HERALD_ACCOUNTING_SPLIT_SHARE",
            ),
        ] {
            let error = load(&Overrides::default(), env(&[(name, value)])).unwrap_err();
            assert!(error.key.contains(key), "{name}={value}: {error}");
        }
    }

    #[test]
    fn a_token_key_replaces_the_secret_for_tokens() {
        let config = load(
            &Overrides::default(),
            env(&[
                ("HERALD_PUBLISH_SECRET", "publish-secret-0123"),
                ("HERALD_PUBLISH_TOKEN_KEY", "token-key-0123456789"),
            ]),
        )
        .unwrap();
        let site = &config.sites[0];
        assert_eq!(site.secrets, ["publish-secret-0123"]);
        assert_eq!(site.token_secrets(), ["token-key-0123456789"]);
    }

    #[test]
    fn file_keys_are_checked() {
        let dir = std::env::temp_dir().join(format!("herald-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.toml");
        std::fs::write(&path, "[history]\nsize = \"big\"\n").unwrap();
        let overrides = Overrides {
            config_file: Some(path.clone()),
            ..Overrides::default()
        };
        assert_eq!(load(&overrides, env(&[])).unwrap_err().key, "history.size");
        std::fs::write(&path, "[history]\nsise = 3\n").unwrap();
        let error = load(&overrides, env(&[])).unwrap_err();
        assert!(error.to_string().contains("sise"), "{error}");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:7\"\n[publish]\nsecret = \"s-0123456789abcdef\"\n",
        )
        .unwrap();
        let config = load(&overrides, env(&[])).unwrap();
        assert_eq!(config.listen.port(), 7);
        assert_eq!(config.sites[0].secrets, ["s-0123456789abcdef"]);
        assert!(!config.is_dev_site());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
