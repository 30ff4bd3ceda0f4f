//! `GET /api/admin/traffic`: the traffic accounting's report
//! (docs/operations.md, "Accounting"), for the operator only.
//!
//! Who may ask (docs/security.md): a request with `Authorization: Bearer
//! <admin.secret>`. Without an `admin.secret` configured the route does not
//! exist (404): no credential, not even the dev site's loopback trust,
//! opens it. On the zero-config dev site it also answers loopback peers
//! only (403 otherwise), as the dev site trusts nobody else with anything.

use std::net::SocketAddr;

use hyper::{Method, Request, Response, StatusCode, body::Incoming, header};
use push::{ErrorCode, Refusal};

use super::{Body, reply};
use crate::App;

/// Users listed per measure when the query does not say (`?top=N`).
const DEFAULT_TOP: usize = 20;

pub(crate) fn traffic(app: &App, peer: SocketAddr, request: &Request<Incoming>) -> Response<Body> {
    if let Err(refusal) = authorize(app, peer, request) {
        return reply::refusal(&refusal);
    }
    if request.method() != Method::GET {
        return reply::method_not_allowed("GET");
    }
    let top = match top(request.uri().query()) {
        Ok(top) => top.min(app.config().accounting.top_users),
        Err(refusal) => return reply::refusal(&refusal),
    };
    reply::json(StatusCode::OK, app.accounting().report(top).to_string())
}

/// Checks the admin credential; the refusal to answer otherwise.
fn authorize(app: &App, peer: SocketAddr, request: &Request<Incoming>) -> Result<(), Refusal> {
    let Some(secret) = &app.config().admin_secret else {
        return Err(Refusal::new(
            ErrorCode::NotFound,
            "no such route (no admin.secret is configured)",
        ));
    };
    if app.config().is_dev_site() && !peer.ip().to_canonical().is_loopback() {
        return Err(Refusal::new(
            ErrorCode::Forbidden,
            "the dev site's admin routes answer loopback only",
        ));
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match given {
        Some(given) if same(given.as_bytes(), secret.as_bytes()) => Ok(()),
        Some(_) => Err(Refusal::new(
            ErrorCode::Unauthorized,
            "the bearer credential is not admin.secret",
        )),
        None => Err(Refusal::new(
            ErrorCode::Unauthorized,
            "send Authorization: Bearer <admin.secret>",
        )),
    }
}

/// Compares in time that depends on the lengths only, so that the secret
/// cannot be guessed a byte at a time from answer times.
fn same(given: &[u8], secret: &[u8]) -> bool {
    given.len() == secret.len()
        && given
            .iter()
            .zip(secret)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// `?top=N`: how many users to list per measure.
fn top(query: Option<&str>) -> Result<usize, Refusal> {
    let Some(query) = query else {
        return Ok(DEFAULT_TOP);
    };
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("top", value)) => {
                return value.parse().map_err(|_| {
                    Refusal::new(ErrorCode::BadRequest, "top must be a whole number")
                });
            }
            _ => continue,
        }
    }
    Ok(DEFAULT_TOP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_secrets_whole() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abd", b"abc"));
        assert!(!same(b"ab", b"abc"));
        assert!(!same(b"", b"abc"));
    }

    #[test]
    fn reads_top_from_the_query() {
        assert_eq!(top(None).ok(), Some(DEFAULT_TOP));
        assert_eq!(top(Some("top=5")).ok(), Some(5));
        assert_eq!(top(Some("x=1&top=3")).ok(), Some(3));
        assert!(top(Some("top=many")).is_err());
    }
}
