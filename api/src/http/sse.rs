//! `GET /sse` when it reaches hyper: on a keep-alive connection that served
//! other requests first. New connections asking for `/sse` never get here;
//! the listener hands them to `push::sse` with their socket.

use std::{
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame};
use hyper::{Request, Response, StatusCode, body::Incoming, header, header::HeaderValue};
use push::sse::{SseHeaders, SseStream};

use super::{Body, reply};
use crate::App;

/// An SSE stream as a hyper response body.
pub(crate) struct SseBody(SseStream);

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
    let sessions = app.sessions();
    let target = request
        .uri()
        .path_and_query()
        .map_or("/sse", |p| p.as_str());
    let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
    let headers = SseHeaders {
        last_event_id: header("last-event-id"),
        authorization: header("authorization"),
        origin: header("origin"),
    };
    let max = push::sse::MAX_REQUEST_CHANNELS;
    let opened = match push::sse::check(request.method().as_str(), target, headers, max) {
        Ok(checked) => match push::sse::admit_stream(sessions, &checked, peer) {
            Ok(client) => push::sse::open(sessions, checked, client, None, peer).await,
            Err(refusal) => Err(refusal),
        },
        Err(refusal) => Err(refusal),
    };
    match opened {
        Ok(stream) => {
            let mut response = Response::new(http_body_util::Either::Right(SseBody(stream)));
            for (name, value) in push::sse::RESPONSE_HEADERS {
                response
                    .headers_mut()
                    .insert(*name, HeaderValue::from_static(value));
            }
            response
        }
        Err(refusal) if refusal.code.is_temporary() => {
            // As on the listener's path: "retry" instead of a 503 or 429
            // that EventSource would give up on.
            push::sse::count_refusal(sessions, &refusal);
            let mut response = Response::new(super::full(push::sse::retry_later(&refusal)));
            for (name, value) in push::sse::RESPONSE_HEADERS {
                response
                    .headers_mut()
                    .insert(*name, HeaderValue::from_static(value));
            }
            response
        }
        Err(refusal) => {
            push::sse::count_refusal(sessions, &refusal);
            let status =
                StatusCode::from_u16(refusal.code.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
            let mut response = reply::error(status, refusal.code.as_str(), &refusal.message);
            if status == StatusCode::METHOD_NOT_ALLOWED {
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET"));
            }
            response.headers_mut().insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
            response
        }
    }
}
