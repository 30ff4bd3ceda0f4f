//! `GET`/`POST /poll`: HTTP long-poll (docs/protocol.md), checked and
//! answered by `push::poll`; `OPTIONS /poll` is its CORS preflight.
//!
//! Polls go through hyper: each is one request with one whole answer, so a
//! client's keep-alive connection carries poll after poll, and hyper's
//! buffers are what any held request costs (docs/scaling.md).

use std::net::SocketAddr;

use hyper::{Method, Request, Response, body::Incoming, header, header::HeaderValue};
use push::{
    ErrorCode, Refusal,
    poll::{PollAnswer, PollHeaders},
};

use super::{
    Body,
    body::{self, BodyLimits},
    full, reply,
};
use crate::App;

const ALLOW: &str = "GET, POST, OPTIONS";

pub(crate) async fn handle(
    app: &App,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<Body> {
    let response = match *request.method() {
        Method::OPTIONS => preflight(),
        _ => poll(app, peer, request).await,
    };
    with_cors(response)
}

async fn poll(app: &App, peer: SocketAddr, request: Request<Incoming>) -> Response<Body> {
    let (parts, incoming) = request.into_parts();
    let header = |name: header::HeaderName| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let headers = PollHeaders {
        authorization: header(header::AUTHORIZATION),
        origin: header(header::ORIGIN),
        proxied: push::is_proxied(|name| parts.headers.contains_key(name)),
    };
    let target = parts.uri.path_and_query().map_or("/poll", |p| p.as_str());
    let body = match parts.method {
        Method::POST => match form(app, &parts.headers, incoming).await {
            Ok(body) => Some(body),
            Err(refusal) => {
                app.sessions().metrics().client_error(refusal.code);
                return refused(&refusal);
            }
        },
        _ => None,
    };
    let checked = push::poll::check(parts.method.as_str(), target, body.as_deref(), headers);
    let timeout = app.config().poll.timeout;
    match push::poll::answer(app.sessions(), checked, peer, timeout).await {
        PollAnswer::Answered(json) => {
            let mut response = Response::new(full(json));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        PollAnswer::Refused(refusal) => refused(&refusal),
    }
}

/// A `POST`'s form body, within its size and the publish bodies' deadline
/// and budget.
async fn form(
    app: &App,
    headers: &hyper::HeaderMap,
    incoming: Incoming,
) -> Result<bytes::Bytes, Refusal> {
    let form_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim())
        .is_some_and(|v| v.eq_ignore_ascii_case("application/x-www-form-urlencoded"));
    if !form_type {
        return Err(Refusal::new(
            ErrorCode::UnsupportedMediaType,
            "send the parameters as Content-Type: application/x-www-form-urlencoded",
        ));
    }
    let limits = BodyLimits {
        max_bytes: push::poll::MAX_BODY_BYTES,
        deadline: app.config().publish.body_timeout,
    };
    let declared = body::declared_length(headers);
    // The bytes are copied into the poll's request at once: the budget's
    // share is given back before the poll is held.
    let read = body::read(incoming, declared, limits, app.body_budget()).await?;
    Ok(read.bytes)
}

/// A refusal's status and JSON body; temporary ones say when to poll again.
fn refused(refusal: &Refusal) -> Response<Body> {
    let mut response = reply::refusal(refusal);
    let headers = response.headers_mut();
    if refusal.code == ErrorCode::MethodNotAllowed {
        headers.insert(header::ALLOW, HeaderValue::from_static(ALLOW));
    }
    if refusal.code.is_temporary() {
        // As SSE's `retry`: the engine comes back soon; a limit takes longer.
        let after = if refusal.code == ErrorCode::Unavailable {
            "2"
        } else {
            "5"
        };
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static(after));
    }
    response
}

/// The answer to a CORS preflight: a page may poll with `POST` and an
/// `Authorization` header.
fn preflight() -> Response<Body> {
    reply::preflight(ALLOW, "Authorization, Content-Type")
}

/// Every answer may be read by any page, as `/sse`'s: nothing in it rides
/// on cookies, and a browser's `Origin` is checked against the site's
/// `allowed_origins` at admission (403 `origin_not_allowed`).
fn with_cors(mut response: Response<Body>) -> Response<Body> {
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}
