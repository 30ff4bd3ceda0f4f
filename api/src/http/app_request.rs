//! What `POST /api/publish` and `POST /api/deliver` share: a request from a
//! site's web application, checked in the order that costs an attacker the
//! most and Herald the least: its credential and its headers first, then
//! its body (read within a size limit, a deadline and the process-wide
//! budget of body bytes), then a signature over the body; and the 429 a
//! site's publish rate answers.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use hyper::{HeaderMap, Request, Response, body::Incoming, header};
use push::{ErrorCode, Refusal};
use sites::Site;

use super::{
    Body,
    body::{self, BodyLimits, Reservation},
    credentials::{self, Authenticated, Signed},
    idempotency, reply,
};
use crate::App;

/// A checked request from a site's web application.
pub(crate) struct AppRequest {
    pub body: Bytes,
    /// The body's share of the budget of body bytes in flight, held until
    /// the request is answered.
    _reservation: Reservation,
    /// The site, and a signature to remember once the request is accepted.
    pub authenticated: Authenticated,
    /// The `Idempotency-Key`, if any.
    pub dedupe: Option<Arc<str>>,
}

impl AppRequest {
    pub fn site(&self) -> &Arc<Site> {
        &self.authenticated.site
    }
}

/// Checks the credential and the headers, then reads the body (at most
/// `max_body` bytes) and checks a signature over it. `Err` is the answer.
/// A request refused before its body was read is answered at once, with
/// `Connection: close`: the rest of its body is never read.
pub(crate) async fn read(
    app: &App,
    peer: SocketAddr,
    request: Request<Incoming>,
    max_body: usize,
) -> Result<AppRequest, Response<Body>> {
    let path_and_query = request.uri().path_and_query().map_or_else(
        || request.uri().path().to_string(),
        |p| p.as_str().to_string(),
    );
    let (parts, body) = request.into_parts();
    let credential =
        credentials::identify(app, peer, &parts.headers).map_err(|refusal| unread(&refusal))?;
    let site = credential.site().clone();
    let refuse = |refusal: Refusal| {
        app.sessions().metrics().reject(site.id(), refusal.code);
        refusal
    };
    require_json(&parts.headers).map_err(|refusal| unread(&refuse(refusal)))?;
    let dedupe = idempotency::key(&parts.headers).map_err(|refusal| unread(&refusal))?;
    let declared = body::declared_length(&parts.headers);
    let limits = BodyLimits {
        max_bytes: max_body,
        deadline: app.config().publish.body_timeout,
    };
    let read = body::read(body, declared, limits, app.body_budget())
        .await
        .map_err(|refusal| {
            let refusal = refuse(refusal);
            let mut answer = unread(&refusal);
            if refusal.code == ErrorCode::Overloaded {
                answer
                    .headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from(1));
            }
            answer
        })?;
    let signed = Signed {
        method: parts.method.as_str(),
        path_and_query: &path_and_query,
        idempotency_key: dedupe.as_deref().unwrap_or(""),
        body: &read.bytes,
    };
    let authenticated = credential
        .verify(app, signed)
        .map_err(|refusal| reply::refusal(&refusal))?;
    Ok(AppRequest {
        body: read.bytes,
        _reservation: read.reservation,
        authenticated,
        dedupe,
    })
}

/// The answer to a request whose body was not (wholly) read: the
/// connection closes after it, since what is left of the body would
/// otherwise have to be read to find the next request.
fn unread(refusal: &Refusal) -> Response<Body> {
    let mut answer = reply::refusal(refusal);
    answer.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    answer
}

/// Publish and deliver bodies are JSON, and must say so: a browser page on
/// any origin may POST `text/plain` (or a form) to a Herald on the
/// reader's own machine without asking first, but not `application/json`.
fn require_json(headers: &HeaderMap) -> Result<(), Refusal> {
    let media_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim());
    match media_type {
        Some(media_type) if media_type.eq_ignore_ascii_case("application/json") => Ok(()),
        _ => Err(Refusal::new(
            ErrorCode::UnsupportedMediaType,
            "send the body as Content-Type: application/json",
        )),
    }
}

/// 429 `rate_limited` with `Retry-After`, for `site` whose publish bucket
/// has its tokens back in `wait`; counted as a rejection.
pub(crate) fn rate_limited(app: &App, site: &Site, wait: Duration, what: &str) -> Response<Body> {
    app.sessions()
        .metrics()
        .reject(site.id(), ErrorCode::RateLimited);
    let retry_after = wait.as_secs_f64().ceil().max(1.0) as u64;
    let mut response = reply::refuse(
        ErrorCode::RateLimited,
        &format!("{what} is over the site's publish_rate; retry in {retry_after} s"),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from(retry_after));
    response
}
