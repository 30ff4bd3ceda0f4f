//! Merging the configuration sources and checking the result.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    path::PathBuf,
    str::FromStr,
    time::Duration,
};

use fanout::HistoryConfig;
use ipnet::IpNet;
use push::SessionConfig;
use sites::{Mode, SiteLimits, SiteSettings};
use toml::{Table, Value};

use super::{
    Config, ConfigError, EngineKind, LogConfig, PublishConfig, RedisSettings, ShutdownConfig,
    TimelineConfig,
    raw::{KEYS, Kind, RawConfig, RawSite, RawSiteLimits, env_name},
};

/// What the command line says; each field wins over every other source.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    pub listen: Option<String>,
    pub engine: Option<String>,
    pub redis_url: Option<String>,
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
    ];
    for (key, value) in flags {
        if let Some(value) = value {
            set(&mut table, key, Value::String(value.clone()));
        }
    }
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

fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
    let listen = SocketAddr::from_str(&raw.listen).map_err(|_| {
        ConfigError::new(
            "listen",
            format!("{:?} is not an IP:PORT address", raw.listen),
        )
    })?;
    let engine = match raw.engine.as_str() {
        "memory" => {
            if raw.redis_url.is_some() {
                return Err(ConfigError::new(
                    "redis_url",
                    "only used with engine = \"redis\"",
                ));
            }
            EngineKind::Memory
        }
        "redis" => EngineKind::Redis(redis_settings(&raw)?),
        other => {
            return Err(ConfigError::new(
                "engine",
                format!("{other:?} is not an engine; use \"memory\" or \"redis\""),
            ));
        }
    };
    let json = match raw.log.format.as_str() {
        "plain" => false,
        "json" => true,
        other => {
            return Err(ConfigError::new(
                "log.format",
                format!("{other:?} is not a log format; use \"plain\" or \"json\""),
            ));
        }
    };
    tracing_subscriber::EnvFilter::try_new(&raw.log.level)
        .map_err(|e| ConfigError::new("log.level", e.to_string()))?;

    let trusted_networks = raw
        .publish
        .trusted_networks
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
        .collect::<Result<Vec<_>, _>>()?;
    let publish = PublishConfig {
        trusted_networks,
        max_body_bytes: at_least("publish.max_body_bytes", raw.publish.max_body_bytes, 64)?,
        max_channels: at_least("publish.max_channels", raw.publish.max_channels, 1)?,
        signature_window: Duration::from_secs(at_least(
            "publish.signature_window_secs",
            raw.publish.signature_window_secs,
            1,
        )? as u64),
    };
    let history = HistoryConfig {
        dedupe_ttl: Duration::from_secs(at_least(
            "deliver.idempotency_ttl_secs",
            raw.deliver.idempotency_ttl_secs,
            1,
        )? as u64),
        size: raw.history.size as usize,
        ttl: Duration::from_secs(at_least("history.ttl_secs", raw.history.ttl_secs, 1)? as u64),
    };
    let c = &raw.connection;
    let ping = at_least("connection.ping_interval_secs", c.ping_interval_secs, 1)?;
    let idle = at_least("connection.idle_timeout_secs", c.idle_timeout_secs, 1)?;
    if idle < ping {
        return Err(ConfigError::new(
            "connection.idle_timeout_secs",
            "must be at least connection.ping_interval_secs, or every connection would time out",
        ));
    }
    let connection = SessionConfig {
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
    };
    let sites = sites(&raw, &connection)?;
    let timeline = TimelineConfig {
        shards: count("timeline.shards", raw.timeline.shards, 1)?,
        max_body_bytes: at_least("deliver.max_body_bytes", raw.deliver.max_body_bytes, 64)?,
    };
    let shutdown = ShutdownConfig {
        grace: Duration::from_secs(raw.shutdown.grace_secs),
        reconnect_jitter: Duration::from_millis(raw.shutdown.reconnect_jitter_ms),
    };
    Ok(Config {
        listen,
        engine,
        log: LogConfig {
            json,
            level: raw.log.level,
        },
        publish,
        history,
        connection,
        shutdown,
        timeline,
        sites,
    })
}

/// The sites: `[[sites]]`, or the one implicit site.
fn sites(raw: &RawConfig, connection: &SessionConfig) -> Result<Vec<SiteSettings>, ConfigError> {
    let l = &raw.limits;
    let defaults = SiteLimits {
        connections: count("limits.connections", l.connections, 0)?,
        connections_per_ip: count("limits.connections_per_ip", l.connections_per_ip, 0)?,
        connection_rate_per_ip: count(
            "limits.connection_rate_per_ip",
            l.connection_rate_per_ip,
            0,
        )?,
        connection_burst_per_ip: count(
            "limits.connection_burst_per_ip",
            l.connection_burst_per_ip,
            1,
        )?,
        publish_rate: count("limits.publish_rate", l.publish_rate, 0)?,
        publish_burst: count("limits.publish_burst", l.publish_burst, 1)?,
        max_subscriptions: connection.max_subscriptions,
        max_frame_bytes: connection.max_frame_bytes,
        max_message_bytes: at_least(
            "publish.max_message_bytes",
            raw.publish.max_message_bytes,
            1,
        )?,
    };
    let secret = &raw.publish.secret;
    if raw.sites.is_empty() {
        let mut site = SiteSettings::dev(defaults);
        if !secret.is_empty() {
            site.secrets.push(secret.clone());
        }
        return Ok(vec![site]);
    }
    if !secret.is_empty() {
        return Err(ConfigError::new(
            "publish.secret",
            "with [[sites]], each site has its own secrets; remove publish.secret",
        ));
    }
    // Sets, not pairwise comparisons: ten thousand sites must load in
    // milliseconds, not in quadratic time.
    let mut ids = HashSet::with_capacity(raw.sites.len());
    let mut keys = HashSet::with_capacity(raw.sites.len());
    let mut secrets = HashMap::with_capacity(raw.sites.len());
    let mut checked: Vec<SiteSettings> = Vec::with_capacity(raw.sites.len());
    for (index, site) in raw.sites.iter().enumerate() {
        let settings = site_settings(index, site, &defaults)?;
        let key = |field: &str| format!("sites[{index}].{field}");
        if !ids.insert(site.id.as_str()) {
            return Err(ConfigError::new(
                key("id"),
                format!("{:?} is used twice", site.id),
            ));
        }
        if !keys.insert(site.key.as_str()) {
            return Err(ConfigError::new(
                key("key"),
                format!("{:?} is used twice", site.key),
            ));
        }
        for secret in &site.secrets {
            if let Some(other) = secrets.insert(secret.as_str(), site.id.as_str())
                && other != site.id
            {
                return Err(ConfigError::new(
                    key("secrets"),
                    format!(
                        "a secret of site {:?} is also one of site {other:?}'s",
                        site.id
                    ),
                ));
            }
        }
        checked.push(settings);
    }
    Ok(checked)
}

fn site_settings(
    index: usize,
    raw: &RawSite,
    defaults: &SiteLimits,
) -> Result<SiteSettings, ConfigError> {
    let key = |field: &str| format!("sites[{index}].{field}");
    if !fanout::is_site_id(&raw.id) {
        return Err(ConfigError::new(
            key("id"),
            format!("{:?} is not 1-32 of a-z 0-9 _ -", raw.id),
        ));
    }
    let key_ok = !raw.key.is_empty()
        && raw.key.len() <= 64
        && raw
            .key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !key_ok {
        return Err(ConfigError::new(
            key("key"),
            format!("{:?} is not 1-64 of A-Z a-z 0-9 _ - .", raw.key),
        ));
    }
    if raw.secrets.is_empty() || raw.secrets.len() > 2 {
        return Err(ConfigError::new(
            key("secrets"),
            "give one secret, or two while rotating",
        ));
    }
    if raw.secrets.iter().any(|s| s.len() < 16) {
        return Err(ConfigError::new(
            key("secrets"),
            "each secret needs at least 16 bytes",
        ));
    }
    let mode = match raw.mode.as_str() {
        "public" => Mode::Public,
        "private" => Mode::Private,
        other => {
            return Err(ConfigError::new(
                key("mode"),
                format!("{other:?} is not a mode; use \"public\" or \"private\""),
            ));
        }
    };
    for origin in &raw.allowed_origins {
        let rest = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        if !rest.is_some_and(|host| !host.is_empty() && !host.contains('/')) {
            return Err(ConfigError::new(
                key("allowed_origins"),
                format!("{origin:?} is not an origin such as https://social.example"),
            ));
        }
    }
    let limits = site_limits(index, &raw.limits, defaults)?;
    Ok(SiteSettings {
        id: raw.id.clone(),
        key: raw.key.clone(),
        secrets: raw.secrets.clone(),
        mode,
        allowed_origins: raw
            .allowed_origins
            .iter()
            .map(|o| o.trim_end_matches('/').to_string())
            .collect(),
        limits,
    })
}

fn site_limits(
    index: usize,
    raw: &RawSiteLimits,
    defaults: &SiteLimits,
) -> Result<SiteLimits, ConfigError> {
    let key = |field: &str| format!("sites[{index}].limits.{field}");
    let count_or = |field: &str, value: Option<u64>, default: u32, min: u64| match value {
        Some(value) => count(&key(field), value, min),
        None => Ok(default),
    };
    let size_or = |field: &str, value: Option<u64>, default: usize, min: u64| match value {
        Some(value) => at_least(&key(field), value, min),
        None => Ok(default),
    };
    Ok(SiteLimits {
        connections: count_or("connections", raw.connections, defaults.connections, 0)?,
        connections_per_ip: count_or(
            "connections_per_ip",
            raw.connections_per_ip,
            defaults.connections_per_ip,
            0,
        )?,
        connection_rate_per_ip: count_or(
            "connection_rate_per_ip",
            raw.connection_rate_per_ip,
            defaults.connection_rate_per_ip,
            0,
        )?,
        connection_burst_per_ip: count_or(
            "connection_burst_per_ip",
            raw.connection_burst_per_ip,
            defaults.connection_burst_per_ip,
            1,
        )?,
        publish_rate: count_or("publish_rate", raw.publish_rate, defaults.publish_rate, 0)?,
        publish_burst: count_or(
            "publish_burst",
            raw.publish_burst,
            defaults.publish_burst,
            1,
        )?,
        max_subscriptions: size_or(
            "max_subscriptions",
            raw.max_subscriptions,
            defaults.max_subscriptions,
            1,
        )?,
        max_frame_bytes: size_or(
            "max_frame_bytes",
            raw.max_frame_bytes,
            defaults.max_frame_bytes,
            128,
        )?,
        max_message_bytes: size_or(
            "max_message_bytes",
            raw.max_message_bytes,
            defaults.max_message_bytes,
            1,
        )?,
    })
}

/// A count or rate that fits in 32 bits.
fn count(key: &str, value: u64, min: u64) -> Result<u32, ConfigError> {
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
    })
}

fn at_least(key: &str, value: u64, min: u64) -> Result<usize, ConfigError> {
    if value < min {
        return Err(ConfigError::new(key, format!("must be at least {min}")));
    }
    usize::try_from(value).map_err(|_| ConfigError::new(key, "too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

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
        ];
        for (vars, key) in cases {
            let error = load(&Overrides::default(), env(vars)).unwrap_err();
            assert_eq!(error.key, *key, "{vars:?}: {error}");
        }
    }

    #[test]
    fn sites_are_checked() {
        let dir = std::env::temp_dir().join(format!("herald-sites-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sites.toml");
        let overrides = Overrides {
            config_file: Some(path.clone()),
            ..Overrides::default()
        };
        let site = |id: &str, key: &str, secret: &str| {
            format!("[[sites]]\nid = \"{id}\"\nkey = \"{key}\"\nsecrets = [\"{secret}\"]\n")
        };
        let cases = [
            (
                site("a", "ka", "secret-a-0123456") + &site("a", "kb", "secret-b-0123456"),
                "sites[1].id",
            ),
            (
                site("a", "ka", "secret-a-0123456") + &site("b", "ka", "secret-b-0123456"),
                "sites[1].key",
            ),
            (
                site("a", "ka", "secret-a-0123456") + &site("b", "kb", "secret-a-0123456"),
                "sites[1].secrets",
            ),
            (site("A", "ka", "secret-a-0123456"), "sites[0].id"),
            (site("a", "k a", "secret-a-0123456"), "sites[0].key"),
            (site("a", "ka", "short"), "sites[0].secrets"),
            (
                site("a", "ka", "secret-a-0123456") + "mode = \"secret\"\n",
                "sites[0].mode",
            ),
            (
                site("a", "ka", "secret-a-0123456") + "allowed_origins = [\"x.org\"]\n",
                "sites[0].allowed_origins",
            ),
            (
                site("a", "ka", "secret-a-0123456") + "[sites.limits]\nmax_frame_bytes = 1\n",
                "sites[0].limits.max_frame_bytes",
            ),
            (
                "[publish]\nsecret = \"x\"\n".to_string() + &site("a", "ka", "secret-a-0123456"),
                "publish.secret",
            ),
        ];
        for (text, key) in cases {
            std::fs::write(&path, &text).unwrap();
            let error = load(&overrides, env(&[])).unwrap_err();
            assert_eq!(error.key, key, "{text}: {error}");
        }
        let two = site("a", "ka", "secret-a-0123456")
            + "[sites.limits]\nconnections = 7\n"
            + &site("b", "kb", "secret-b-0123456");
        std::fs::write(&path, two + "[limits]\nconnections = 3\n").unwrap();
        let config = load(&overrides, env(&[("HERALD_LIMITS_PUBLISH_RATE", "9")])).unwrap();
        assert_eq!(config.sites.len(), 2);
        assert_eq!(
            config.sites[0].limits.connections, 7,
            "the site's own limit"
        );
        assert_eq!(
            config.sites[1].limits.connections, 3,
            "[limits] as the default"
        );
        assert_eq!(
            config.sites[1].limits.publish_rate, 9,
            "HERALD_LIMITS_* too"
        );
        assert!(!config.is_dev_site());
        std::fs::remove_dir_all(&dir).unwrap();
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
            "listen = \"127.0.0.1:7\"\n[publish]\nsecret = \"s\"\n",
        )
        .unwrap();
        let config = load(&overrides, env(&[])).unwrap();
        assert_eq!(config.listen.port(), 7);
        assert_eq!(config.sites[0].secrets, ["s"]);
        assert!(!config.is_dev_site());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
