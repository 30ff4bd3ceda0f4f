//! Token checking as the fuzz target in `fuzz/` calls it, and the replay of
//! its committed corpus as a unit test (so stable CI runs every input the
//! fuzzer kept, without nightly). Not an API: nothing outside the fuzz
//! target may depend on it.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::value::RawValue;

use crate::token;

/// The secret the fuzz target's well-signed tokens are signed with.
const SECRET: &str = "fuzz-secret-0123456789abcdef";

/// Reads `data` two ways: as a token as a client sends it (its `kid`, then
/// verification, which a random token fails at the signature), and, when
/// it is JSON, as the claims of a token correctly signed with the site's
/// secret, so that the claims checks behind the signature are reached too.
pub fn token(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let secrets = [SECRET.to_string()];
    let _ = token::key_id(text);
    let _ = token::verify(&secrets, text);
    if let Ok(claims) = serde_json::from_str::<&RawValue>(text)
        && let Ok(key) = EncodingKey::from_secret(SECRET.as_bytes())
        && let Ok(signed) = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key)
        && let Ok(claims) = token::verify(&secrets, &signed)
    {
        let _ = claims.grants("user:1");
    }
}

/// A Pusher-signed REST request: the first line is the query, the rest the
/// body. Checked as the REST API checks it; a request that verifies must
/// carry a well-formed signature, key and timestamp.
pub fn pusher_request(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (query, body) = text.split_once('\n').unwrap_or((text, ""));
    let secrets = [SECRET.to_string()];
    let _ = crate::pusher::auth_key(query);
    let verified = crate::pusher::verify(
        &secrets,
        "POST",
        "/apps/fuzz/events",
        query,
        Some(body.as_bytes()),
        1_795_869_828,
    );
    if verified.is_ok() {
        assert!(query.contains("auth_signature="), "{query}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replays every file of `fuzz/corpus/pusher_request`.
    #[test]
    fn replays_the_pusher_request_corpus() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/pusher_request");
        let mut replayed = 0;
        for entry in std::fs::read_dir(&dir).expect("the corpus") {
            pusher_request(&std::fs::read(entry.expect("an entry").path()).expect("a file"));
            replayed += 1;
        }
        assert!(replayed > 0);
    }

    /// Replays every file of `fuzz/corpus/token`.
    #[test]
    fn replays_the_token_corpus() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/token");
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let mut replayed = 0;
        for entry in entries {
            token(&std::fs::read(entry.unwrap().path()).unwrap());
            replayed += 1;
        }
        assert!(replayed > 0, "{} holds no input", dir.display());
    }
}
