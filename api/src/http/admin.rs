//! The operator's routes (docs/console.md): the console page at
//! `/console` and its JSON under `/api/admin/`: the node's figures
//! (`stats`), the traffic accounting's report (`traffic`), and the
//! operator's actions (`publish`, `channel`, `disconnect`).
//!
//! Who may ask (docs/security.md): a request with `Authorization: Bearer
//! <admin.secret>`. Without an `admin.secret` configured none of these
//! routes exist (404): no credential, not even the dev site's loopback
//! trust, opens them. On the zero-config dev site they also answer
//! loopback peers only (403 otherwise), as the dev site trusts nobody else
//! with anything. The page itself holds no data, so it needs no Bearer,
//! only the same 404 and 403; it asks the operator for the secret.

mod actions;
mod stats;
mod traffic;

use std::net::SocketAddr;

use hyper::{Method, Request, Response, StatusCode, body::Incoming, header};
use push::{ErrorCode, Refusal};

use super::{Body, reply};
use crate::App;

/// `/api/admin/…`: checks the credential, then answers the route.
pub(crate) async fn handle(
    app: &App,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> (&'static str, Response<Body>) {
    if let Err(refusal) = reachable(app, peer).and_then(|()| authorize(app, &request)) {
        return ("admin", reply::refusal(&refusal));
    }
    let method = request.method().clone();
    match request.uri().path() {
        "/api/admin/traffic" => (
            "admin_traffic",
            get_only(&method, || traffic::report(app, &request)),
        ),
        "/api/admin/stats" => ("admin_stats", get_only(&method, || stats::snapshot(app))),
        "/api/admin/channel" => (
            "admin_channel",
            match method {
                Method::GET => actions::channel(app, &request).await,
                _ => reply::method_not_allowed("GET"),
            },
        ),
        "/api/admin/publish" => (
            "admin_publish",
            match method {
                Method::POST => actions::publish(app, request).await,
                _ => reply::method_not_allowed("POST"),
            },
        ),
        "/api/admin/disconnect" => (
            "admin_disconnect",
            match method {
                Method::POST => actions::disconnect(app, request).await,
                _ => reply::method_not_allowed("POST"),
            },
        ),
        _ => (
            "admin",
            reply::refuse(ErrorCode::NotFound, "no such admin route"),
        ),
    }
}

/// `GET /console`: the page, for whoever may reach the admin routes at all.
pub(crate) fn console(app: &App, peer: SocketAddr, request: &Request<Incoming>) -> Response<Body> {
    if let Err(refusal) = reachable(app, peer) {
        return reply::refusal(&refusal);
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return reply::method_not_allowed("GET");
    }
    let mut response = Response::new(super::full(bytes::Bytes::from_static(web::CONSOLE_HTML)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    // The page is the operator's: no other site may frame it.
    headers.insert(
        header::X_FRAME_OPTIONS,
        header::HeaderValue::from_static("DENY"),
    );
    response
}

fn get_only(method: &Method, answer: impl FnOnce() -> Response<Body>) -> Response<Body> {
    match *method {
        Method::GET => answer(),
        _ => reply::method_not_allowed("GET"),
    }
}

/// Whether the admin routes exist for this peer at all.
fn reachable(app: &App, peer: SocketAddr) -> Result<(), Refusal> {
    if app.admin_secret().is_none() {
        return Err(Refusal::new(
            ErrorCode::NotFound,
            "no such route (no admin.secret is configured)",
        ));
    }
    if app.config().is_dev_site() && !peer.ip().to_canonical().is_loopback() {
        return Err(Refusal::new(
            ErrorCode::Forbidden,
            "the dev site's admin routes answer loopback only",
        ));
    }
    Ok(())
}

/// Checks the admin credential.
fn authorize(app: &App, request: &Request<Incoming>) -> Result<(), Refusal> {
    let Some(secret) = app.admin_secret() else {
        return Err(Refusal::new(ErrorCode::NotFound, "no such route"));
    };
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

/// A JSON answer with status 200.
fn ok(value: serde_json::Value) -> Response<Body> {
    reply::json(StatusCode::OK, value.to_string())
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
}
