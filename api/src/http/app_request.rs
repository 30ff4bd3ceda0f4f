//! What `POST /api/publish` and `POST /api/deliver` share: a request from a
//! site's web application, its body read within a limit, its credential
//! checked and its idempotency key read; and the 429 a site's publish rate
//! answers.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::{Request, Response, body::Incoming, header};
use push::ErrorCode;
use sites::Site;

use super::{
    Body,
    credentials::{self, Authenticated, Signed},
    idempotency, reply,
};
use crate::App;

/// A checked request from a site's web application.
pub(crate) struct AppRequest {
    pub body: Bytes,
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

/// Reads the body (at most `max_body` bytes, or 413 counted under site
/// "-": nobody knows the site before the body is read), then checks the
/// credential over it and reads the idempotency key. `Err` is the answer.
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
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max_body as u64) {
        return Err(too_large(app, max_body));
    }
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, max_body).collect().await {
        Ok(body) => body.to_bytes(),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            return Err(too_large(app, max_body));
        }
        Err(error) => {
            return Err(reply::refuse(ErrorCode::BadRequest, &error.to_string()));
        }
    };
    let signed = Signed {
        method: parts.method.as_str(),
        path_and_query: &path_and_query,
        body: &body,
    };
    let authenticated = credentials::authenticate(app, peer, &parts.headers, signed)
        .map_err(|refusal| reply::refusal(&refusal))?;
    let dedupe = idempotency::key(&parts.headers).map_err(|refusal| reply::refusal(&refusal))?;
    Ok(AppRequest {
        body,
        authenticated,
        dedupe,
    })
}

fn too_large(app: &App, limit: usize) -> Response<Body> {
    app.sessions()
        .metrics()
        .reject("-", ErrorCode::PayloadTooLarge);
    reply::refuse(
        ErrorCode::PayloadTooLarge,
        &format!("the request body may be at most {limit} bytes"),
    )
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
