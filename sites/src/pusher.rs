//! Pusher's signed REST requests (`POST /apps/<id>/events`, …;
//! `../shared/reference/protocols.md` §1.7), checked as the Pusher server
//! libraries sign them, so that they publish to Herald unchanged.
//!
//! The query carries `auth_key` (the site's key), `auth_timestamp` (Unix
//! seconds), `auth_version` (`1.0`), `body_md5` (the hex MD5 of a body, on
//! requests that have one) and `auth_signature`: the hex HMAC-SHA256, under
//! the site's secret, of `METHOD\nPATH\nquery`, where `query` is every other
//! parameter with its key lower-cased, sorted by key, joined `k=v` with `&`.

use md5::{Digest, Md5};

use crate::signature;

/// How far `auth_timestamp` may be from the server's clock, in seconds.
pub const MAX_SKEW_SECS: u64 = 600;

/// Why a request's signature was not taken; its `Display` is the answer's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsigned {
    /// A parameter is missing or malformed (its name).
    Missing(&'static str),
    /// `auth_timestamp` is more than [`MAX_SKEW_SECS`] from now.
    Stale,
    /// `body_md5` is not the body's.
    BodyDigest,
    /// `auth_signature` is not the HMAC under the site's secret.
    Signature,
}

impl std::fmt::Display for Unsigned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unsigned::Missing(name) => write!(f, "missing or malformed {name}"),
            Unsigned::Stale => write!(
                f,
                "auth_timestamp is more than {MAX_SKEW_SECS} s from the server's clock"
            ),
            Unsigned::BodyDigest => f.write_str("body_md5 is not the MD5 of the body"),
            Unsigned::Signature => f.write_str("auth_signature is not the site's signature"),
        }
    }
}

/// The `auth_key` of a request's query: the site it names.
pub fn auth_key(query: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "auth_key")
        .map(|(_, value)| value.into_owned())
}

/// Checks a request signed the Pusher way under one of `secrets`, at `now`
/// (Unix seconds). `body` is `None` for a request without one (a GET).
pub fn verify(
    secrets: &[String],
    method: &str,
    path: &str,
    query: &str,
    body: Option<&[u8]>,
    now: u64,
) -> Result<(), Unsigned> {
    let mut params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .map(|(name, value)| (name.to_lowercase(), value.into_owned()))
        .collect();
    let find = |name: &str| {
        params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    let given = find("auth_signature").ok_or(Unsigned::Missing("auth_signature"))?;
    let given = signature::parse(&given).ok_or(Unsigned::Missing("auth_signature"))?;
    find("auth_key").ok_or(Unsigned::Missing("auth_key"))?;
    let timestamp: u64 = find("auth_timestamp")
        .and_then(|t| t.parse().ok())
        .ok_or(Unsigned::Missing("auth_timestamp"))?;
    if timestamp.abs_diff(now) > MAX_SKEW_SECS {
        return Err(Unsigned::Stale);
    }
    if let Some(body) = body.filter(|body| !body.is_empty()) {
        let digest = find("body_md5").ok_or(Unsigned::Missing("body_md5"))?;
        if !digest.eq_ignore_ascii_case(&hex::encode(Md5::digest(body))) {
            return Err(Unsigned::BodyDigest);
        }
    }
    params.retain(|(key, _)| key != "auth_signature");
    params.sort();
    let query: Vec<String> = params
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    let signed = format!("{method}\n{path}\n{}", query.join("&"));
    if signature::verify(secrets, &[signed.as_bytes()], &given) {
        Ok(())
    } else {
        Err(Unsigned::Signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = r#"{"name":"new-notice","data":"{\"id\":2,\"text\":\"from server lib\"}","channels":["timeline-public"]}"#;

    fn secrets() -> Vec<String> {
        vec!["app-secret".to_string()]
    }

    /// The worked example of protocols.md §1.7, captured from npm `pusher` 5.3.4.
    #[test]
    fn the_pusher_librarys_request_verifies() {
        let query = "auth_key=app-key&auth_timestamp=1795869828&auth_version=1.0&body_md5=e533b2589998a0d2834888c5e5871850&auth_signature=4efa44921e0fa66d9ee11a2f8dc01a0e8ef90acbdaeafa7e4e36f6e3da17679b";
        let path = "/apps/app-id/events";
        let verify = |query: &str, body: &str, now| {
            verify(&secrets(), "POST", path, query, Some(body.as_bytes()), now)
        };
        assert_eq!(verify(query, BODY, 1_795_869_828), Ok(()));
        assert_eq!(auth_key(query).as_deref(), Some("app-key"));
        assert_eq!(
            verify(query, BODY, 1_795_869_828 + 601),
            Err(Unsigned::Stale)
        );
        assert_eq!(
            verify(query, &BODY.replace('2', "3"), 1_795_869_828),
            Err(Unsigned::BodyDigest)
        );
        assert_eq!(
            super::verify(
                &secrets(),
                "POST",
                "/apps/12345/events",
                query,
                Some(BODY.as_bytes()),
                1_795_869_828
            ),
            Err(Unsigned::Signature)
        );
        assert_eq!(
            verify("auth_key=app-key", BODY, 1_795_869_828),
            Err(Unsigned::Missing("auth_signature"))
        );
    }

    /// The channel query of §1.7: a GET, no body, extra parameters signed.
    #[test]
    fn a_signed_get_verifies_without_a_body() {
        let query = "auth_key=app-key&auth_timestamp=1795870560&auth_version=1.0&filter_by_prefix=presence-&info=user_count&auth_signature=b49ee8fb9c66b454718e11ccd3f8d535640ddfb616b7e939481a296979f21ecf";
        assert_eq!(
            verify(
                &secrets(),
                "GET",
                "/apps/app-id/channels",
                query,
                None,
                1_795_870_560
            ),
            Ok(())
        );
    }
}
