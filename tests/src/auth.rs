//! What a site's web application does with its secret, done by hand as an independent app would:
//! client tokens (JWT HS256), signed publish requests, private-channel signatures, and the
//! `[[sites]]` configuration Herald reads (docs/security.md).
//!
//! Nothing here uses a JWT library: the tokens are built from base64url, JSON and HMAC-SHA256, so
//! that a test fails when Herald and the documented format disagree, not when two copies of the
//! same library agree with each other.

use std::fmt::Display;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Map, Value, json};
use sha2::Sha256;

use crate::http::Request;

/// The current time in Unix seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

/// The current time in Unix seconds, with the fraction (to compare with an `exp`).
pub fn unix_now_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs_f64()
}

/// HMAC-SHA256 of `message` under `secret`.
pub fn hmac_sha256(secret: &[u8], message: &[u8]) -> Vec<u8> {
    // HMAC takes a key of any length, so `new_from_slice` cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// Lowercase hex of HMAC-SHA256, the form of every Herald signature.
pub fn hmac_hex(secret: &str, message: &str) -> String {
    hex::encode(hmac_sha256(secret.as_bytes(), message.as_bytes()))
}

/// Base64url without padding (RFC 7515), as JWTs use.
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The signature of a request: `hex(HMAC-SHA256(secret, METHOD "\n" PATH_AND_QUERY "\n"
/// TIMESTAMP "\n" IDEMPOTENCY_KEY "\n" BODY))`, the key empty when the request has none.
pub fn request_signature(
    secret: &str,
    method: &str,
    path_and_query: &str,
    timestamp: &str,
    idempotency_key: &str,
    body: &str,
) -> String {
    hmac_hex(
        secret,
        &format!("{method}\n{path_and_query}\n{timestamp}\n{idempotency_key}\n{body}"),
    )
}

/// The signature that admits one connection to a `private-` channel:
/// `hex(HMAC-SHA256(secret, connection_id ":" channel))`.
pub fn channel_signature(secret: &str, connection_id: &str, channel: &str) -> String {
    hmac_hex(secret, &format!("{connection_id}:{channel}"))
}

/// A request signed for the site named by `key`, with `timestamp` as `X-Herald-Timestamp`
/// (normally [`unix_now`]); a non-empty `body` is sent as JSON.
pub fn signed_request(
    addr: SocketAddr,
    method: &str,
    path_and_query: &str,
    body: &str,
    key: &str,
    secret: &str,
    timestamp: &str,
) -> Request {
    let request = Request::new(method, addr, path_and_query);
    let request = if body.is_empty() {
        request
    } else {
        request.json_body(body)
    };
    request.signed(key, secret, timestamp)
}

// === impl Request: signing ===

impl Request {
    /// Signs the request as it stands (method, path, its `Idempotency-Key` header if it has one,
    /// body) for the site named by `key`, with `timestamp` as `X-Herald-Timestamp`. Headers
    /// added afterwards are not signed: that is how a test alters a request after signing.
    pub fn signed(self, key: &str, secret: &str, timestamp: &str) -> Request {
        let signature = request_signature(
            secret,
            self.method(),
            self.path(),
            timestamp,
            self.header_value("Idempotency-Key").unwrap_or(""),
            &String::from_utf8_lossy(self.body()),
        );
        self.header("X-Herald-Key", key)
            .header("X-Herald-Timestamp", timestamp)
            .header("X-Herald-Signature", &signature)
    }
}

/// The body of a publish of `data` (JSON text, sent byte for byte) to one channel.
pub fn publish_body(channel: &str, data: &str) -> String {
    format!(r#"{{"channel":{},"data":{data}}}"#, Value::from(channel))
}

/// A client token under construction: a JOSE header and claims, signed HS256 on [`Token::sign`].
#[derive(Debug, Clone)]
pub struct Token {
    /// The JOSE header; `{"alg":"HS256","typ":"JWT"}` unless a test changes it.
    header: Map<String, Value>,
    /// The claims; `sub` and `exp` unless a test changes them.
    claims: Map<String, Value>,
}

impl Token {
    /// A token for user `sub` that expires at `exp` (Unix seconds).
    pub fn new(sub: &str, exp: u64) -> Token {
        let header = json!({"alg": "HS256", "typ": "JWT"});
        let claims = json!({"sub": sub, "exp": exp});
        Token {
            header: header.as_object().expect("an object").clone(),
            claims: claims.as_object().expect("an object").clone(),
        }
    }

    /// A token for user `sub` valid for `ttl_secs` from now.
    pub fn for_user(sub: &str, ttl_secs: u64) -> Token {
        Token::new(sub, unix_now() + ttl_secs)
    }

    /// Names the site in the header (`kid`), so that the token alone selects it.
    pub fn kid(self, key: &str) -> Token {
        self.header("kid", key)
    }

    /// Sets a header field (`alg` to something else than HS256, say).
    pub fn header(mut self, name: &str, value: impl Into<Value>) -> Token {
        self.header.insert(name.to_owned(), value.into());
        self
    }

    /// Sets a claim (`nbf`, a numeric `sub`, ...).
    pub fn claim(mut self, name: &str, value: impl Into<Value>) -> Token {
        self.claims.insert(name.to_owned(), value.into());
        self
    }

    /// Removes a claim (a token without `sub`, say).
    pub fn without(mut self, name: &str) -> Token {
        self.claims.remove(name);
        self
    }

    /// Grants channels: exact names, or prefixes ending in `*`.
    pub fn channels(self, channels: &[&str]) -> Token {
        self.claim("channels", json!(channels))
    }

    /// The `exp` claim.
    pub fn exp(&self) -> u64 {
        self.claims["exp"].as_u64().expect("exp is a number")
    }

    /// The compact JWS: `b64url(header) "." b64url(claims) "." b64url(HMAC-SHA256(secret, the
    /// first two parts))`.
    pub fn sign(&self, secret: &str) -> String {
        let signing = format!(
            "{}.{}",
            b64url(Value::Object(self.header.clone()).to_string().as_bytes()),
            b64url(Value::Object(self.claims.clone()).to_string().as_bytes())
        );
        let signature = hmac_sha256(secret.as_bytes(), signing.as_bytes());
        format!("{signing}.{}", b64url(&signature))
    }
}

/// `token` with its claims replaced by `claims` and its signature kept: what someone who edits a
/// token they were given (to read another user's channel) would send.
pub fn forge_claims(token: &str, claims: &Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a compact JWS has three parts: {token}");
    format!(
        "{}.{}.{}",
        parts[0],
        b64url(claims.to_string().as_bytes()),
        parts[2]
    )
}

/// One `[[sites]]` entry of Herald's configuration, with what its web application knows.
#[derive(Debug, Clone)]
pub struct Site {
    /// The site id (metrics label `site`).
    pub id: String,
    /// The public key clients and signed requests name the site with.
    pub key: String,
    /// One or two secrets, the first being the one the app signs with.
    pub secrets: Vec<String>,
    /// `Some("private")` or `Some("public")`; `None` leaves the key out (public by default).
    pub mode: Option<String>,
    /// `allowed_origins`; `None` leaves the key out.
    pub allowed_origins: Option<Vec<String>>,
    /// `[sites.limits]` entries, values written as TOML.
    pub limits: Vec<(String, String)>,
}

impl Site {
    /// A public site `id` with the key `<id>-key` and one secret of its own.
    pub fn new(id: &str) -> Site {
        Site {
            id: id.to_owned(),
            key: format!("{id}-key"),
            secrets: vec![Site::make_secret(id, "one")],
            mode: None,
            allowed_origins: None,
            limits: Vec::new(),
        }
    }

    /// A secret of at least 16 bytes, different for each `(id, label)`.
    pub fn make_secret(id: &str, label: &str) -> String {
        format!("secret-{id}-{label}-0123456789abcdef")
    }

    /// The secret the app signs with (the first one).
    pub fn secret(&self) -> &str {
        &self.secrets[0]
    }

    /// Replaces the secrets.
    pub fn with_secrets(mut self, secrets: &[&str]) -> Site {
        self.secrets = secrets.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// Makes it a private site.
    pub fn private(mut self) -> Site {
        self.mode = Some("private".to_owned());
        self
    }

    /// Sets `allowed_origins`.
    pub fn allowed_origins(mut self, origins: &[&str]) -> Site {
        self.allowed_origins = Some(origins.iter().map(|s| (*s).to_owned()).collect());
        self
    }

    /// Adds a `[sites.limits]` entry; `value` is written as is (a TOML integer, normally).
    pub fn limit(mut self, name: &str, value: impl Display) -> Site {
        self.limits.push((name.to_owned(), value.to_string()));
        self
    }

    /// A token for user `sub` of this site (`kid` set), valid for `ttl_secs`, signed with the
    /// first secret.
    pub fn token(&self, sub: &str, ttl_secs: u64) -> String {
        Token::for_user(sub, ttl_secs)
            .kid(&self.key)
            .sign(self.secret())
    }

    /// A channel signature for this site's first secret.
    pub fn channel_signature(&self, connection_id: &str, channel: &str) -> String {
        channel_signature(self.secret(), connection_id, channel)
    }

    /// `POST /api/publish` of `data` to `channel` with the first secret as bearer.
    pub fn publish_request(&self, addr: SocketAddr, channel: &str, data: &str) -> Request {
        Request::post(addr, "/api/publish")
            .bearer(self.secret())
            .json_body(&publish_body(channel, data))
    }

    /// `POST /api/publish` of `body` signed with `secret` (one of this site's, or not) at `timestamp`.
    pub fn signed_publish(
        &self,
        addr: SocketAddr,
        secret: &str,
        timestamp: &str,
        body: &str,
    ) -> Request {
        signed_request(
            addr,
            "POST",
            "/api/publish",
            body,
            &self.key,
            secret,
            timestamp,
        )
    }

    /// The entry as TOML: `[[sites]]` and, if there are limits, `[sites.limits]`.
    pub fn toml(&self) -> String {
        let quote = |s: &str| Value::from(s).to_string();
        let list = |items: &[String]| {
            let quoted: Vec<String> = items.iter().map(|s| quote(s)).collect();
            format!("[{}]", quoted.join(", "))
        };
        let mut toml = format!(
            "[[sites]]\nid = {}\nkey = {}\nsecrets = {}\n",
            quote(&self.id),
            quote(&self.key),
            list(&self.secrets)
        );
        if let Some(mode) = &self.mode {
            toml.push_str(&format!("mode = {}\n", quote(mode)));
        }
        if let Some(origins) = &self.allowed_origins {
            toml.push_str(&format!("allowed_origins = {}\n", list(origins)));
        }
        if !self.limits.is_empty() {
            toml.push_str("\n[sites.limits]\n");
            for (name, value) in &self.limits {
                toml.push_str(&format!("{name} = {value}\n"));
            }
        }
        toml
    }
}

/// A whole configuration file: `top` (top-level keys and sections such as `[connection]` or
/// `[limits]`, written before any site) followed by every site.
pub fn sites_toml(top: &str, sites: &[&Site]) -> String {
    let mut toml = top.to_owned();
    if !toml.is_empty() && !toml.ends_with('\n') {
        toml.push('\n');
    }
    for site in sites {
        toml.push('\n');
        toml.push_str(&site.toml());
    }
    toml
}

/// A configuration file a test owns and can rewrite before a `SIGHUP` (Herald re-reads the same
/// path); removed on drop. Pass it with `.arg("--config").arg(file.path_str())`.
#[derive(Debug)]
pub struct ConfigFile {
    /// Where the file is.
    path: PathBuf,
}

impl ConfigFile {
    /// Writes `toml` to a new temporary file.
    pub fn new(toml: &str) -> ConfigFile {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("herald-sites-{}-{n}.toml", std::process::id()));
        let file = ConfigFile { path };
        file.write(toml);
        file
    }

    /// Replaces the content (written to a temporary file and renamed, so that Herald never reads
    /// half a file).
    pub fn write(&self, toml: &str) {
        let tmp = self.path.with_extension("toml.new");
        std::fs::write(&tmp, toml).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
        std::fs::rename(&tmp, &self.path)
            .unwrap_or_else(|e| panic!("rename to {}: {e}", self.path.display()));
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path as text, for `--config`.
    pub fn path_str(&self) -> String {
        self.path.display().to_string()
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        assert_eq!(
            hmac_hex("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn token_matches_the_jwt_io_example() {
        // The well-known HS256 example token (secret "your-256-bit-secret"), rebuilt from its
        // parts: the header and claims serialize in the same key order.
        let signing = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ";
        let signature = b64url(&hmac_sha256(b"your-256-bit-secret", signing.as_bytes()));
        assert_eq!(signature, "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c");
    }

    #[test]
    fn forged_claims_keep_the_signature() {
        let token = Token::new("1", 2_000_000_000).sign("secret-0123456789abcdef");
        let forged = forge_claims(&token, &json!({"sub": "2", "exp": 2_000_000_000u64}));
        assert_eq!(token.split('.').next(), forged.split('.').next());
        assert_eq!(token.rsplit('.').next(), forged.rsplit('.').next());
        assert_ne!(token, forged);
    }

    #[test]
    fn site_toml_lists_everything() {
        let site = Site::new("a")
            .private()
            .allowed_origins(&["https://a.example"])
            .limit("connections", 2);
        let toml = site.toml();
        assert!(toml.contains("id = \"a\"\nkey = \"a-key\"\n"), "{toml}");
        assert!(toml.contains("mode = \"private\""), "{toml}");
        assert!(
            toml.contains("allowed_origins = [\"https://a.example\"]"),
            "{toml}"
        );
        assert!(toml.contains("[sites.limits]\nconnections = 2\n"), "{toml}");
        assert!(site.secret().len() >= 16);
    }
}
