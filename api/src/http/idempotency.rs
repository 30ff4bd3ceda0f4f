//! The `Idempotency-Key` header of publishes and deliveries: with it, a
//! retried request never publishes the same message twice
//! (`docs/timelines.md`, "Idempotency").

use std::sync::Arc;

use hyper::HeaderMap;

use push::{ErrorCode, Refusal};

/// The longest key accepted, in bytes.
const MAX_KEY_LEN: usize = 128;

/// The request's idempotency key, if it has one: 1 to 128 visible ASCII
/// characters (they go into engine keys as they are).
pub(crate) fn key(headers: &HeaderMap) -> Result<Option<Arc<str>>, Refusal> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_KEY_LEN || !bytes.iter().all(u8::is_ascii_graphic) {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            "Idempotency-Key must be 1 to 128 visible ASCII characters",
        ));
    }
    // Checked: visible ASCII is UTF-8.
    Ok(std::str::from_utf8(bytes).ok().map(Arc::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_the_key() {
        let with = |value: &[u8]| {
            let mut headers = HeaderMap::new();
            headers.insert(
                "idempotency-key",
                hyper::header::HeaderValue::from_bytes(value).unwrap(),
            );
            key(&headers).map(|k| k.map(|k| k.to_string()))
        };
        assert_eq!(key(&HeaderMap::new()).unwrap(), None);
        assert_eq!(with(b"notice-1/2").unwrap().as_deref(), Some("notice-1/2"));
        assert!(with(b"").is_err());
        assert!(with(b"has space").is_err());
        assert!(with(&[b'k'; 129]).is_err());
        assert!(with(&[0xc3, 0xa9]).is_err());
    }
}
