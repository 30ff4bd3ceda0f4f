//! Checking the sites: `[limits]` as every site's default, each `[[sites]]`
//! entry on its own, and that no two sites share an id, a key or a secret.

use std::collections::{HashMap, HashSet};

use push::SessionConfig;
use sites::{Mode, SiteLimits, SiteSettings};

use super::{
    ConfigError,
    raw::{RawConfig, RawSite, RawSiteLimits},
    sources::{at_least, count},
};

/// The sites: `[[sites]]`, or the one implicit site.
pub(super) fn sites(
    raw: &RawConfig,
    connection: &SessionConfig,
) -> Result<Vec<SiteSettings>, ConfigError> {
    let defaults = default_limits(raw, connection)?;
    if raw.sites.is_empty() {
        return implicit_site(&raw.publish, defaults).map(|site| vec![site]);
    }
    for (key, value) in [
        ("publish.secret", &raw.publish.secret),
        ("publish.token_key", &raw.publish.token_key),
    ] {
        if !value.is_empty() {
            return Err(ConfigError::new(
                key,
                format!(
                    "with [[sites]], each site has its own secrets and token keys; remove {key}"
                ),
            ));
        }
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
        let keyed = site.secrets.iter().map(|s| ("secrets", s));
        for (field, secret) in keyed.chain(site.token_keys.iter().map(|k| ("token_keys", k))) {
            if let Some(other) = secrets.insert(secret.as_str(), site.id.as_str())
                && other != site.id
            {
                return Err(ConfigError::new(
                    key(field),
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

/// The one site of a configuration without `[[sites]]`: the dev site, or
/// with `publish.secret` a site like any other.
fn implicit_site(
    publish: &super::raw::RawPublish,
    defaults: SiteLimits,
) -> Result<SiteSettings, ConfigError> {
    let mut site = SiteSettings::dev(defaults);
    if publish.secret.is_empty() {
        if !publish.token_key.is_empty() {
            return Err(ConfigError::new(
                "publish.token_key",
                "the dev site (no publish.secret) has no tokens; set publish.secret too",
            ));
        }
        return Ok(site);
    }
    // The secret is also the key of the site's tokens unless a token key is
    // set: a short one can be found by brute force from any token.
    if publish.secret.len() < MIN_SECRET_BYTES {
        return Err(ConfigError::new(
            "publish.secret",
            format!("needs at least {MIN_SECRET_BYTES} bytes"),
        ));
    }
    site.secrets.push(publish.secret.clone());
    if !publish.token_key.is_empty() {
        site.token_keys = token_keys(
            "publish.token_key",
            &site.secrets,
            std::slice::from_ref(&publish.token_key),
        )?;
    }
    Ok(site)
}

/// Fewest bytes in a secret or token key.
const MIN_SECRET_BYTES: usize = 16;

/// Token keys: one, or two while rotating, each long enough and none of
/// them one of the site's publish secrets (which would defeat keeping them apart).
fn token_keys(key: &str, secrets: &[String], keys: &[String]) -> Result<Vec<String>, ConfigError> {
    if keys.len() > 2 {
        return Err(ConfigError::new(
            key,
            "give one token key, or two while rotating",
        ));
    }
    if keys.iter().any(|k| k.len() < MIN_SECRET_BYTES) {
        return Err(ConfigError::new(
            key,
            format!("each token key needs at least {MIN_SECRET_BYTES} bytes"),
        ));
    }
    if keys.iter().any(|k| secrets.contains(k)) {
        return Err(ConfigError::new(
            key,
            "a token key must differ from the publish secrets",
        ));
    }
    Ok(keys.to_vec())
}

/// `[limits]`, with the per-connection limits that `[connection]` already
/// set; a site's own `[sites.limits]` overrides any of them.
fn default_limits(raw: &RawConfig, connection: &SessionConfig) -> Result<SiteLimits, ConfigError> {
    let l = &raw.limits;
    Ok(SiteLimits {
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
        command_rate: count("limits.command_rate", l.command_rate, 0)?,
        command_burst: count("limits.command_burst", l.command_burst, 1)?,
        new_channel_rate: count("limits.new_channel_rate", l.new_channel_rate, 0)?,
        new_channel_burst: count("limits.new_channel_burst", l.new_channel_burst, 1)?,
        max_subscriptions: connection.max_subscriptions,
        max_frame_bytes: connection.max_frame_bytes,
        max_message_bytes: at_least(
            "publish.max_message_bytes",
            raw.publish.max_message_bytes,
            1,
        )?,
    })
}

/// One `[[sites]]` entry, checked on its own.
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
    if raw.secrets.iter().any(|s| s.len() < MIN_SECRET_BYTES) {
        return Err(ConfigError::new(
            key("secrets"),
            format!("each secret needs at least {MIN_SECRET_BYTES} bytes"),
        ));
    }
    let token_keys = token_keys(&key("token_keys"), &raw.secrets, &raw.token_keys)?;
    let mercure_keys = mercure_keys(&key("mercure_keys"), &raw.mercure_keys)?;
    let mode = mode(index, &raw.mode)?;
    let allowed_origins = allowed_origins(index, &raw.allowed_origins)?;
    let limits = site_limits(index, &raw.limits, defaults)?;
    let webhook_url = match &raw.webhook_url {
        Some(url) => Some(webhook_url(&key("webhook_url"), url)?),
        None => None,
    };
    Ok(SiteSettings {
        id: raw.id.clone(),
        key: raw.key.clone(),
        secrets: raw.secrets.clone(),
        token_keys,
        mercure_keys,
        mode,
        allowed_origins,
        client_events: raw.client_events,
        webhook_url,
        limits,
    })
}

/// A webhook URL Herald can POST to: `http://host[:port]/path`. TLS is
/// not spoken by Herald's client: an `https://` receiver sits behind a
/// local proxy.
fn webhook_url(key: &str, url: &str) -> Result<String, ConfigError> {
    let refuse = |why: &str| ConfigError::new(key, format!("{url:?}: {why}"));
    let uri: hyper::Uri = url.parse().map_err(|_| refuse("not a URL"))?;
    if uri.scheme_str() != Some("http") {
        return Err(refuse(
            "only http:// is served (Herald's webhook client speaks no TLS: put a local proxy in front of an https receiver)",
        ));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(refuse("no host"));
    }
    Ok(url.to_string())
}

/// Mercure JWT keys: one, or two while rotating, each long enough. They
/// may equal a secret: a Mercure hub's publishers already hold its key.
fn mercure_keys(key: &str, keys: &[String]) -> Result<Vec<String>, ConfigError> {
    if keys.len() > 2 {
        return Err(ConfigError::new(
            key,
            "give one Mercure key, or two while rotating",
        ));
    }
    if keys.iter().any(|k| k.len() < MIN_SECRET_BYTES) {
        return Err(ConfigError::new(
            key,
            format!("each Mercure key needs at least {MIN_SECRET_BYTES} bytes"),
        ));
    }
    Ok(keys.to_vec())
}

fn mode(index: usize, text: &str) -> Result<Mode, ConfigError> {
    match text {
        "public" => Ok(Mode::Public),
        "private" => Ok(Mode::Private),
        other => Err(ConfigError::new(
            format!("sites[{index}].mode"),
            format!("{other:?} is not a mode; use \"public\" or \"private\""),
        )),
    }
}

/// Origins such as `https://social.example`: a scheme and a host, as a
/// browser sends them in an `Origin` header.
fn allowed_origins(index: usize, origins: &[String]) -> Result<Vec<String>, ConfigError> {
    for origin in origins {
        let rest = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        if !rest.is_some_and(|host| !host.is_empty() && !host.contains('/')) {
            return Err(ConfigError::new(
                format!("sites[{index}].allowed_origins"),
                format!("{origin:?} is not an origin such as https://social.example"),
            ));
        }
    }
    Ok(origins
        .iter()
        .map(|o| o.trim_end_matches('/').to_string())
        .collect())
}

/// A site's `[sites.limits]`; each limit it leaves out is the default.
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
        command_rate: count_or("command_rate", raw.command_rate, defaults.command_rate, 0)?,
        command_burst: count_or(
            "command_burst",
            raw.command_burst,
            defaults.command_burst,
            1,
        )?,
        new_channel_rate: count_or(
            "new_channel_rate",
            raw.new_channel_rate,
            defaults.new_channel_rate,
            0,
        )?,
        new_channel_burst: count_or(
            "new_channel_burst",
            raw.new_channel_burst,
            defaults.new_channel_burst,
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

#[cfg(test)]
mod tests {
    use crate::config::{Overrides, load, test_env as env};

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
            (
                "[publish]\ntoken_key = \"token-key-0123456789\"\n".to_string()
                    + &site("a", "ka", "secret-a-0123456"),
                "publish.token_key",
            ),
            (
                site("a", "ka", "secret-a-0123456") + "token_keys = [\"short\"]\n",
                "sites[0].token_keys",
            ),
            (
                site("a", "ka", "secret-a-0123456") + "token_keys = [\"secret-a-0123456\"]\n",
                "sites[0].token_keys",
            ),
            (
                site("a", "ka", "secret-a-0123456") + "mercure_keys = [\"short\"]\n",
                "sites[0].mercure_keys",
            ),
            (
                site("a", "ka", "secret-a-0123456")
                    + "mercure_keys = [\"mercure-key-0123456\", \"b-0123456789abcdef\", \"c-0123456789abcdef\"]\n",
                "sites[0].mercure_keys",
            ),
            (
                site("a", "ka", "secret-a-0123456")
                    + &site("b", "kb", "secret-b-0123456")
                    + "token_keys = [\"secret-a-0123456\"]\n",
                "sites[1].token_keys",
            ),
        ];
        for (text, key) in cases {
            std::fs::write(&path, &text).unwrap();
            let error = load(&overrides, env(&[])).unwrap_err();
            assert_eq!(error.key, key, "{text}: {error}");
        }
        let two = site("a", "ka", "secret-a-0123456")
            + "token_keys = [\"token-key-a-0123456\"]\n"
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
        assert_eq!(config.sites[0].token_secrets(), ["token-key-a-0123456"]);
        assert_eq!(config.sites[1].token_secrets(), ["secret-b-0123456"]);
        assert!(!config.is_dev_site());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
