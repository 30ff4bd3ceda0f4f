//! Mercure's JWTs (docs/compat.md, "Mercure"): HS256 tokens whose
//! `mercure` claim lists the topic selectors their holder may publish to
//! and receive private updates of, `{"mercure":{"publish":[…],"subscribe":[…]}}`,
//! as Symfony's Mercure bundle and API Platform mint them.
//!
//! Which keys verify them is the site's choice ([`crate::SiteSettings::mercure_keys`]):
//! its `mercure_keys`, else the keys of its client tokens; the dev site
//! takes Mercure's own development key ([`DEV_KEY`]), so that a Symfony
//! application's default `.env` works against a zero-config Herald.

pub mod selector;

use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::Deserialize;

pub use selector::matches;

use crate::token::TokenError;

/// The key the Mercure hub's development setup and Symfony's default
/// `.env` sign with (`MERCURE_JWT_SECRET`): what the dev site accepts.
pub const DEV_KEY: &str = "!ChangeThisMercureHubJWTSecretKey!";

/// The most selectors a token's claim may list (each one is tried against
/// every topic of every update its holder publishes or may receive).
pub const MAX_SELECTORS: usize = 256;

/// What a verified Mercure JWT allows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MercureClaims {
    /// Selectors of the topics its holder may publish to; none: no publishing.
    pub publish: Box<[Box<str>]>,
    /// Selectors of the topics whose private updates its holder receives.
    pub subscribe: Box<[Box<str>]>,
}

impl MercureClaims {
    /// Whether every one of `topics` is selected by a `publish` selector.
    pub fn may_publish<'a>(&self, mut topics: impl Iterator<Item = &'a str>) -> bool {
        topics.all(|topic| self.publish.iter().any(|s| matches(s, topic)))
    }
}

#[derive(Deserialize)]
struct RawClaims {
    #[serde(default)]
    mercure: RawMercure,
}

#[derive(Deserialize, Default)]
struct RawMercure {
    #[serde(default)]
    publish: Vec<String>,
    #[serde(default)]
    subscribe: Vec<String>,
}

/// Verifies `token` against each of `keys` and reads its `mercure` claim.
/// `exp` and `nbf` are checked when present (Mercure does not require them).
pub fn verify(keys: &[String], token: &str) -> Result<MercureClaims, TokenError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 0;
    validation.validate_nbf = true;
    validation.validate_aud = false;
    validation.set_required_spec_claims::<&str>(&[]);
    let mut last = TokenError::Invalid("the site has no key to verify Mercure JWTs with".into());
    for key in keys {
        let Ok(key) = DecodingKey::from_secret(key.as_bytes()) else {
            continue;
        };
        match jsonwebtoken::decode::<RawClaims>(token, &key, &validation) {
            Ok(data) => return claims(data.claims.mercure),
            Err(error) => match error.kind() {
                ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => {
                    return Err(TokenError::Expired);
                }
                ErrorKind::InvalidSignature => {
                    last = TokenError::Invalid(
                        "bad signature (not signed with the site's key)".into(),
                    );
                }
                ErrorKind::InvalidAlgorithm => {
                    return Err(TokenError::Invalid("only HS256 JWTs are accepted".into()));
                }
                _ => return Err(TokenError::Invalid(format!("malformed JWT: {error}"))),
            },
        }
    }
    Err(last)
}

fn claims(raw: RawMercure) -> Result<MercureClaims, TokenError> {
    if raw.publish.len() > MAX_SELECTORS || raw.subscribe.len() > MAX_SELECTORS {
        return Err(TokenError::Invalid(format!(
            "a claim may list at most {MAX_SELECTORS} selectors"
        )));
    }
    let boxed = |list: Vec<String>| list.into_iter().map(String::into_boxed_str).collect();
    Ok(MercureClaims {
        publish: boxed(raw.publish),
        subscribe: boxed(raw.subscribe),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::{Value, json};

    fn mint(key: &str, claims: Value) -> String {
        let key = EncodingKey::from_secret(key.as_bytes()).unwrap();
        encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
    }

    #[test]
    fn the_conformance_token_verifies_with_the_dev_key() {
        // The Mercure conformance suite's publisher token (docs/compat.md).
        let token = "eyJhbGciOiJIUzI1NiJ9.eyJtZXJjdXJlIjp7InB1Ymxpc2giOlsiKiJdLCJzdWJzY3JpYmUiOlsiKiJdfX0.bVXdlWXwfw9ySx7-iV5OpUSHo34RkjUdVzDLBcc6l_g";
        let claims = verify(&[DEV_KEY.to_string()], token).unwrap();
        assert_eq!(&*claims.publish, &["*".into()]);
        assert!(claims.may_publish(["https://example.com/a", "b"].into_iter()));
    }

    #[test]
    fn claims_and_refusals() {
        let keys = vec![
            "old-key-0123456789".to_string(),
            "new-key-0123456789".into(),
        ];
        let now = jsonwebtoken::get_current_timestamp();
        let token = mint(
            "new-key-0123456789",
            json!({"mercure": {"publish": ["https://example.com/books/{id}"]}}),
        );
        let claims = verify(&keys, &token).unwrap();
        assert!(claims.may_publish(["https://example.com/books/1"].into_iter()));
        assert!(
            !claims.may_publish(
                [
                    "https://example.com/books/1",
                    "https://example.com/authors/1"
                ]
                .into_iter()
            )
        );
        assert!(claims.subscribe.is_empty());

        let no_claim = verify(&keys, &mint("old-key-0123456789", json!({"sub": "x"}))).unwrap();
        assert_eq!(no_claim, MercureClaims::default());
        assert!(!no_claim.may_publish(["a"].into_iter()));

        let other = mint("another-key-012345", json!({"mercure": {}}));
        assert!(matches!(verify(&keys, &other), Err(TokenError::Invalid(_))));
        let expired = mint("new-key-0123456789", json!({"mercure": {}, "exp": now - 1}));
        assert_eq!(verify(&keys, &expired), Err(TokenError::Expired));
        let future = mint(
            "new-key-0123456789",
            json!({"mercure": {}, "exp": now + 60}),
        );
        assert!(verify(&keys, &future).is_ok());
        assert!(matches!(
            verify(&keys, "not.a.jwt"),
            Err(TokenError::Invalid(_))
        ));
        assert!(matches!(verify(&[], &future), Err(TokenError::Invalid(_))));
    }
}
