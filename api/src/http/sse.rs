//! `GET /sse` when it reaches hyper: on a keep-alive connection that served
//! other requests first. New connections asking for `/sse` never get here;
//! the listener hands them to `push::sse` with their socket. Both ways
//! answer through `push::sse::answer`; only the writing differs.

use std::{
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame};
use hyper::{Request, Response, body::Incoming, header, header::HeaderValue};
use push::{
    Chunks, ErrorCode, NativeSse,
    sse::{Answer, SseHeaders},
};

use super::{Body, reply};
use crate::App;

/// An SSE stream as a hyper response body, whatever protocol it speaks.
/// Boxed: this path is the rare one (see `push::sse`), and one body type
/// serves every stream route.
pub(crate) struct SseBody(pub(crate) Box<dyn Chunks>);

impl HttpBody for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_chunk(cx)
            .map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}

pub(crate) async fn handle(
    app: &App,
    peer: SocketAddr,
    request: &Request<Incoming>,
) -> Response<Body> {
    let target = request
        .uri()
        .path_and_query()
        .map_or("/sse", |p| p.as_str());
    let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
    let headers = SseHeaders {
        last_event_id: header("last-event-id"),
        authorization: header("authorization"),
        origin: header("origin"),
        proxied: push::is_proxied(|name| request.headers().contains_key(name)),
    };
    let max = push::sse::MAX_REQUEST_CHANNELS;
    let checked = push::sse::check(request.method().as_str(), target, headers, max);
    match push::sse::answer(app.sessions(), checked, peer, NativeSse).await {
        Answer::Stream(connection) => {
            stream_response(http_body_util::Either::Right(SseBody(Box::new(connection))))
        }
        Answer::RetryLater(body) => stream_response(super::full(body)),
        Answer::Refused(refusal) => {
            // Refusals carry the same CORS header as streams (RESPONSE_HEADERS).
            let mut response = reply::refusal(&refusal);
            let headers = response.headers_mut();
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
            if refusal.code == ErrorCode::MethodNotAllowed {
                headers.insert(header::ALLOW, HeaderValue::from_static("GET"));
            }
            response
        }
    }
}

/// `200` with the headers of every SSE stream.
fn stream_response(body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    for (name, value) in push::sse::RESPONSE_HEADERS {
        response
            .headers_mut()
            .insert(*name, HeaderValue::from_static(value));
    }
    response
}
