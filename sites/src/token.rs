//! Client tokens: JWTs signed HS256 with one of the site's secrets, minted
//! by the site's web application (`docs/security.md`).

use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::Deserialize;
use serde_json::Value;

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The user id.
    pub sub: Box<str>,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Channel grants: exact names, or prefixes ending in `*`.
    pub grants: Box<[Box<str>]>,
}

impl Claims {
    /// Whether the token grants `channel` (a local name) explicitly.
    pub fn grants(&self, channel: &str) -> bool {
        self.grants
            .iter()
            .any(|grant| match grant.strip_suffix('*') {
                Some(prefix) => channel.starts_with(prefix),
                None => **grant == *channel,
            })
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum TokenError {
    /// Not a token of this site, or not well formed.
    Invalid(String),
    /// Past `exp`, or before `nbf`.
    Expired,
}

#[derive(Deserialize)]
struct RawClaims {
    #[serde(default)]
    sub: Value,
    exp: u64,
    #[serde(default)]
    channels: Vec<String>,
}

/// The site key a token names in its `kid` header, read without verifying
/// anything: it only picks which site's secrets to verify the token with.
///
/// Read from the header's JSON by hand, not with the JWT library, which
/// refuses a header whose `alg` it does not know: such a token names its
/// site like any other and is then refused by that site as `token_invalid`.
pub fn key_id(token: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct KeyId {
        kid: Option<String>,
    }
    use base64::Engine as _;
    let header = token.split('.').next()?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice::<KeyId>(&json).ok()?.kid
}

/// Verifies `token` against each of `secrets` and reads its claims.
pub fn verify(secrets: &[String], token: &str) -> Result<Claims, TokenError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 0;
    validation.validate_nbf = true;
    validation.validate_aud = false;
    // `sub` is checked here, not by the library, which takes only strings.
    validation.set_required_spec_claims(&["exp"]);
    let mut last = TokenError::Invalid("the site has no secret to verify tokens with".into());
    for secret in secrets {
        let Ok(key) = DecodingKey::from_secret(secret.as_bytes()) else {
            continue;
        };
        match jsonwebtoken::decode::<RawClaims>(token, &key, &validation) {
            // The library accepts `exp == now`; a token expires at `exp`.
            Ok(data) if data.claims.exp <= jsonwebtoken::get_current_timestamp() => {
                return Err(TokenError::Expired);
            }
            Ok(data) => return claims(data.claims),
            Err(error) => match error.kind() {
                // The signature was good; only the time is wrong.
                ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => {
                    return Err(TokenError::Expired);
                }
                ErrorKind::InvalidSignature => {
                    last = TokenError::Invalid("bad signature (not signed by this site)".into());
                }
                ErrorKind::InvalidAlgorithm => {
                    return Err(TokenError::Invalid("only HS256 tokens are accepted".into()));
                }
                _ => return Err(TokenError::Invalid(format!("malformed token: {error}"))),
            },
        }
    }
    Err(last)
}

fn claims(raw: RawClaims) -> Result<Claims, TokenError> {
    let sub = match raw.sub {
        Value::String(sub) if !sub.is_empty() => sub,
        Value::Number(number) if number.is_u64() || number.is_i64() => number.to_string(),
        _ => {
            return Err(TokenError::Invalid(
                "\"sub\" must be a non-empty string or an integer".into(),
            ));
        }
    };
    Ok(Claims {
        sub: sub.into_boxed_str(),
        exp: raw.exp,
        grants: raw
            .channels
            .into_iter()
            .map(String::into_boxed_str)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};

    fn mint(secret: &str, claims: Value, alg: Algorithm, kid: Option<&str>) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_string);
        let key = EncodingKey::from_secret(secret.as_bytes()).unwrap();
        encode(&header, &claims, &key).unwrap()
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    #[test]
    fn verifies_claims_and_refuses_the_rest() {
        let secrets = vec!["first-secret-0123".to_string(), "second-secret-012".into()];
        let good = mint(
            "second-secret-012",
            serde_json::json!({"sub": 42, "exp": now() + 60, "channels": ["group:*"]}),
            Algorithm::HS256,
            Some("site-key"),
        );
        let claims = verify(&secrets, &good).unwrap();
        assert_eq!(&*claims.sub, "42");
        assert!(claims.grants("group:devs") && !claims.grants("grou"));
        assert_eq!(key_id(&good).as_deref(), Some("site-key"));

        let expired = mint(
            "first-secret-0123",
            serde_json::json!({"sub": "1", "exp": now() - 1}),
            Algorithm::HS256,
            None,
        );
        assert_eq!(verify(&secrets, &expired), Err(TokenError::Expired));
        let early = mint(
            "first-secret-0123",
            serde_json::json!({"sub": "1", "exp": now() + 60, "nbf": now() + 30}),
            Algorithm::HS256,
            None,
        );
        assert_eq!(verify(&secrets, &early), Err(TokenError::Expired));
        let foreign = mint(
            "another-site-secret",
            serde_json::json!({"sub": "1", "exp": now() + 60}),
            Algorithm::HS256,
            None,
        );
        assert!(matches!(
            verify(&secrets, &foreign),
            Err(TokenError::Invalid(_))
        ));
        let hs512 = mint(
            "first-secret-0123",
            serde_json::json!({"sub": "1", "exp": now() + 60}),
            Algorithm::HS512,
            None,
        );
        assert!(matches!(
            verify(&secrets, &hs512),
            Err(TokenError::Invalid(_))
        ));
        // An `alg` the library does not know still names its site.
        let unknown_alg = format!(
            "{}.{}.c2ln",
            "eyJhbGciOiJub25lIiwia2lkIjoic2l0ZS1rZXkifQ", // {"alg":"none","kid":"site-key"}
            good.split('.').nth(1).unwrap()
        );
        assert_eq!(key_id(&unknown_alg).as_deref(), Some("site-key"));
        assert!(matches!(
            verify(&secrets, &unknown_alg),
            Err(TokenError::Invalid(_))
        ));
        let no_sub = mint(
            "first-secret-0123",
            serde_json::json!({"exp": now() + 60}),
            Algorithm::HS256,
            None,
        );
        assert!(matches!(
            verify(&secrets, &no_sub),
            Err(TokenError::Invalid(_))
        ));
        let no_exp = mint(
            "first-secret-0123",
            serde_json::json!({"sub": "1"}),
            Algorithm::HS256,
            None,
        );
        assert!(matches!(
            verify(&secrets, &no_exp),
            Err(TokenError::Invalid(_))
        ));
        assert!(matches!(
            verify(&secrets, "garbage"),
            Err(TokenError::Invalid(_))
        ));
        // A forged sub: the payload swapped, the signature kept.
        let forged_payload = mint(
            "x",
            serde_json::json!({"sub": "2", "exp": now() + 60}),
            Algorithm::HS256,
            Some("site-key"),
        );
        let mut parts: Vec<&str> = good.split('.').collect();
        parts[1] = forged_payload.split('.').nth(1).unwrap();
        assert!(matches!(
            verify(&secrets, &parts.join(".")),
            Err(TokenError::Invalid(_))
        ));
    }
}
