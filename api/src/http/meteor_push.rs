//! `GET /push/<hostid>/<mode>/<channel>…`: Meteor's subscriber side, for
//! the site Meteor's port publishes for (`[meteor]`), checked by
//! `push::meteor` and answered by `push::sse::answer` in Meteor's protocol.
//!
//! These streams go through hyper, never the listener's own path: Meteor
//! pages are the old way in, few and short-lived (a long-poll asks again
//! after each answer), and hyper's buffers (about 18 KiB while a response
//! streams) cost them nothing worth a second raw path. docs/compat.md says so.

use std::net::SocketAddr;

use hyper::{Request, Response, body::Incoming, header, header::HeaderValue};
use push::{
    ErrorCode, MeteorStream, Refusal,
    meteor::{Mode, PushHeaders},
    sse::Answer,
};

use super::{Body, reply, sse::SseBody};
use crate::App;

/// How long a client waits before it asks again after a temporary refusal.
const RETRY_AFTER_SECS: &str = "2";

pub(crate) async fn handle(
    app: &App,
    peer: SocketAddr,
    request: &Request<Incoming>,
) -> Response<Body> {
    let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
    let checked = served_site(app).and_then(|(key, names)| {
        let headers = PushHeaders {
            origin: header("origin"),
            proxied: push::is_proxied(|name| request.headers().contains_key(name)),
        };
        push::meteor::check(request.method().as_str(), target, &key, &names, headers)
    });
    let (stream, protocol, mode) = match checked {
        Ok(request) => (Ok(request.stream), request.protocol, request.mode),
        Err(refusal) => (Err(refusal), MeteorStream::default(), Mode::Stream),
    };
    let response = match push::sse::answer(app.sessions(), stream, peer, protocol).await {
        Answer::Stream(connection) => {
            let body = http_body_util::Either::Right(SseBody(Box::new(connection)));
            let mut response = Response::new(body);
            let headers = response.headers_mut();
            // Meteor served every mode as HTML: its lines are scripts.
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            if mode == Mode::Stream {
                headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
            }
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            response
        }
        Answer::RetryLater(_) => {
            let mut response = reply::refuse(
                ErrorCode::Unavailable,
                "this node cannot take the stream now; retry shortly",
            );
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
            response
        }
        Answer::Refused(refusal) => {
            let mut response = reply::refusal(&refusal);
            if refusal.code == ErrorCode::MethodNotAllowed {
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET"));
            }
            response
        }
    };
    with_cors(response)
}

/// The key and channel names of the site Meteor's port serves.
fn served_site(app: &App) -> Result<(String, push::statusnet::StatusNetNames), Refusal> {
    let Some(meteor) = &app.config().meteor else {
        return Err(Refusal::new(
            ErrorCode::NotFound,
            "Meteor's subscriber side is served with Meteor's port: set meteor.listen",
        ));
    };
    let site = app.sessions().sites().by_id(&meteor.site).ok_or_else(|| {
        Refusal::new(
            ErrorCode::NotFound,
            format!("site {} is not configured", meteor.site),
        )
    })?;
    let key = site.settings().key.clone();
    Ok((key, meteor.names.clone()))
}

/// Pages load from the site's own host and read the stream from Herald's.
fn with_cors(mut response: Response<Body>) -> Response<Body> {
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}
