//! The HMAC-SHA256 signatures a site's web application makes with its
//! secret: signed publish requests and `private-` channel signatures.
//! `docs/security.md` gives the exact strings signed.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// A signature as sent: 32 bytes, written as 64 hex digits.
pub type Signature = [u8; 32];

/// The signature in `hex_text`, if it is one (checked before anything is
/// computed, so that a malformed header costs nothing).
pub fn parse(hex_text: &str) -> Option<Signature> {
    let mut signature = [0u8; 32];
    hex::decode_to_slice(hex_text.trim(), &mut signature).ok()?;
    Some(signature)
}

/// Whether `signature` is the HMAC of `parts` (concatenated) under one of
/// `secrets`: one site's, so one secret, or two while rotating. The
/// comparison takes the same time however much matches.
pub fn verify(secrets: &[String], parts: &[&[u8]], signature: &Signature) -> bool {
    secrets.iter().any(|secret| {
        let mut mac = mac(secret);
        for part in parts {
            mac.update(part);
        }
        mac.verify_slice(signature).is_ok()
    })
}

/// The hex HMAC of `parts` under `secret` (what apps compute; used by tests).
pub fn sign(secret: &str, parts: &[&[u8]]) -> String {
    let mut mac = mac(secret);
    for part in parts {
        mac.update(part);
    }
    hex::encode(mac.finalize().into_bytes())
}

/// The string a publish request's signature covers, in parts:
/// `METHOD \n PATH_AND_QUERY \n TIMESTAMP \n IDEMPOTENCY_KEY \n BODY`, the
/// key empty when the request has none. The key is signed so that nobody
/// who recorded a request can send it again under another key; none of the
/// fields before the body can hold a line feed, so no two requests sign the
/// same string.
pub fn request_parts<'a>(
    method: &'a str,
    path_and_query: &'a str,
    timestamp: &'a str,
    idempotency_key: &'a str,
    body: &'a [u8],
) -> [&'a [u8]; 9] {
    [
        method.as_bytes(),
        b"\n",
        path_and_query.as_bytes(),
        b"\n",
        timestamp.as_bytes(),
        b"\n",
        idempotency_key.as_bytes(),
        b"\n",
        body,
    ]
}

/// The string a channel signature covers, in parts.
pub fn channel_parts<'a>(connection_id: &'a str, channel: &'a str) -> [&'a [u8]; 3] {
    [connection_id.as_bytes(), b":", channel.as_bytes()]
}

/// A digest of a secret, to find the site a bearer secret belongs to
/// without comparing the secret itself byte by byte against each site.
pub(crate) fn secret_digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

fn mac(secret: &str) -> HmacSha256 {
    // HMAC takes keys of any length.
    HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key length")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies_with_either_secret() {
        let secrets = vec![
            "new-secret-0123456".to_string(),
            "old-secret-0123456".into(),
        ];
        let parts = request_parts("POST", "/api/publish", "1796000000", "k1", b"{}");
        let by_old = parse(&sign("old-secret-0123456", &parts)).unwrap();
        assert!(verify(&secrets, &parts, &by_old));
        assert!(!verify(&secrets[..1], &parts, &by_old));
        let other = request_parts("POST", "/api/publish", "1796000001", "k1", b"{}");
        assert!(!verify(&secrets, &other, &by_old));
        let rekeyed = request_parts("POST", "/api/publish", "1796000000", "k2", b"{}");
        assert!(!verify(&secrets, &rekeyed, &by_old));
        assert!(parse("not hex").is_none());
        assert!(parse("abcd").is_none());
        // RFC 4231 test case 2.
        assert_eq!(
            sign("Jefe", &[b"what do ya want ", b"for nothing?"]),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
