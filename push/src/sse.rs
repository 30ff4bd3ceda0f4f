//! The Server-Sent Events transport, with the native protocol's stream
//! requests (`GET /sse?channel=…`).
//!
//! hyper keeps about 18 KiB of buffers and a 2.4 KB future for as long as a
//! response body streams, which for an idle SSE stream is ten times what the
//! stream needs. So the listener in `api` peeks at each new connection, and
//! when the request is for `/sse` it hands the socket to [`accept`]: the head
//! is parsed with httparse, answered, and the socket is owned by a small
//! [`SseSession`] for the rest of its life.
//!
//! An SSE request can still reach hyper, on a keep-alive connection that
//! served other requests first (browsers and proxies reuse connections).
//! That request is [`check`]ed and [`answer`]ed the same way, and hyper
//! pulls the connection's chunks as its response body
//! ([`Connection::poll_chunk`]): correct, only dearer while it lasts.

pub(crate) mod cursor;
pub(crate) mod event;
pub(crate) mod request;
mod socket;

use std::{net::SocketAddr, sync::LazyLock};

use bytes::Bytes;
use tokio::{io::AsyncWriteExt, net::TcpStream};
use wire::Wire;

pub use request::{MAX_REQUEST_CHANNELS, SseHeaders, SseRequest, check};
pub use socket::SseSocket;

use crate::{
    Client, ConnectRequest, Context, ErrorCode, NativeSse, Protocol, Refusal, admit,
    connection::Connection,
    session::{self, Session},
};

/// An SSE stream speaking protocol `P` on a socket of its own.
pub type SseSession<P, S = TcpStream> = Session<SseSocket<S>, P>;

/// The response headers of every SSE stream, besides the status line.
pub const RESPONSE_HEADERS: &[(&str, &str)] = &[
    ("Content-Type", "text/event-stream"),
    ("Cache-Control", "no-cache"),
    // nginx would otherwise buffer the stream.
    ("X-Accel-Buffering", "no"),
    ("Access-Control-Allow-Origin", "*"),
];

/// The whole response head of a stream served off hyper: the status line,
/// [`RESPONSE_HEADERS`], and no length and no chunking (the body ends when
/// the connection does). Built once: every new stream starts with it, and a
/// reconnect storm is made of new streams.
static STREAM_HEAD: LazyLock<String> = LazyLock::new(|| {
    let mut head = String::from("HTTP/1.1 200 OK\r\n");
    for (name, value) in RESPONSE_HEADERS {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str("Connection: close\r\n\r\n");
    head
});

/// How a stream request is answered, whichever way the request came.
pub enum Answer<P: Protocol> {
    /// `200` and the stream.
    Stream(Connection<P>),
    /// `200` with this whole body: a `retry` hint and an `error` event. A
    /// 503 or 429 would make EventSource give up for good; a stream that
    /// says "retry" and ends makes it come back by itself.
    RetryLater(Bytes),
    /// An HTTP error: the code's status and the JSON error body
    /// (EventSource does not retry these).
    Refused(Refusal),
}

/// Whether a request line (as peeked from the socket) is for the SSE route.
pub fn is_sse_request(head: &[u8]) -> bool {
    request::is_sse_route(head)
}

/// Spawns a stream's session on its socket, plain or TLS.
pub(crate) fn spawn_stream<P: Protocol>(socket: Wire, connection: Connection<P>) {
    match socket {
        Wire::Plain(tcp) => session::spawn(SseSocket::new(tcp), connection),
        Wire::Tls(tls) => session::spawn(SseSocket::new(tls), connection),
    }
}

/// Reads and answers an SSE request on a fresh connection, and spawns its
/// session; or, when the request was refused, writes the answer and closes
/// the socket.
/// The head must be complete by `head_deadline` (`listener.header_timeout_secs`
/// after the connection was accepted).
pub async fn accept(
    context: Context,
    mut socket: Wire,
    peer: SocketAddr,
    head_deadline: tokio::time::Instant,
) {
    let request = request::read(&mut socket, head_deadline).await;
    let head: &'static str = &STREAM_HEAD;
    let body = match answer(&context, request, peer, NativeSse).await {
        Answer::Stream(mut connection) => {
            connection
                .out()
                .push_front(Bytes::from_static(head.as_bytes()));
            return spawn_stream(socket, connection);
        }
        Answer::RetryLater(body) => [head.as_bytes(), &body].concat(),
        Answer::Refused(refusal) => http_error(&refusal, "").into_bytes(),
    };
    let answer = async {
        socket.write_all(&body).await?;
        socket.shutdown().await
    };
    // A client that does not take its answer within the time limit loses it.
    let _ = tokio::time::timeout(context.config().close_timeout, answer).await;
}

/// Answers a checked (or refused) stream request: admits its client,
/// subscribes it to its channels and queues what the stream starts with,
/// in `protocol`. Every refusal is counted.
pub async fn answer<P: Protocol>(
    context: &Context,
    request: Result<SseRequest, Refusal>,
    peer: SocketAddr,
    protocol: P,
) -> Answer<P> {
    match open_stream(context, request, peer, protocol).await {
        Ok(connection) => Answer::Stream(connection),
        Err(refusal) if refusal.code.is_temporary() => Answer::RetryLater(retry_later(&refusal)),
        Err(refusal) => Answer::Refused(refusal),
    }
}

/// Admits a checked (or refused) stream request and opens its connection
/// in `protocol`, or says why not; every refusal is counted. [`answer`]
/// words the refusal for EventSource, a long-poll (`crate::poll`) as HTTP.
pub(crate) async fn open_stream<P: Protocol>(
    context: &Context,
    request: Result<SseRequest, Refusal>,
    peer: SocketAddr,
    protocol: P,
) -> Result<Connection<P>, Refusal> {
    let opened = match request {
        Ok(request) => match admit_stream(context, &request, peer) {
            Ok(client) => open(context, request, client, peer, protocol).await,
            Err(refusal) => Err(refusal),
        },
        Err(refusal) => Err(refusal),
    };
    if let Err(refusal) = &opened {
        context.metrics().client_error(refusal.code);
    }
    opened
}

/// Admits a stream's client, and checks its channels by the rules every
/// URL's channels follow ([`crate::Opening::admit`]).
fn admit_stream(
    context: &Context,
    request: &SseRequest,
    peer: SocketAddr,
) -> Result<Client, Refusal> {
    let client = admit(
        context,
        &ConnectRequest {
            key: request.key.as_deref(),
            token: request.token.as_deref(),
            origin: request.origin.as_deref(),
            ip: Some(peer.ip().to_canonical()),
            proxied: request.proxied,
            vouched: request.vouched,
        },
    )?;
    request.opening.admit(context, &client)?;
    Ok(client)
}

/// Subscribes an admitted request to its channels, each from its cursor
/// position, and starts the stream.
async fn open<P: Protocol>(
    context: &Context,
    request: SseRequest,
    client: Client,
    peer: SocketAddr,
    protocol: P,
) -> Result<Connection<P>, Refusal> {
    let subscribed = request
        .opening
        .subscribe(context, &client, peer, None)
        .await?;
    Ok(subscribed.start(context.clone(), client, protocol, peer))
}

/// The whole body of a stream that cannot start now: a `retry` hint and an
/// `error` event with the refusal's code. EventSource reconnects after it.
fn retry_later(refusal: &Refusal) -> Bytes {
    let data = serde_json::json!({"code": refusal.code.as_str(), "message": refusal.message});
    // The engine comes back soon; a limit takes longer to leave room.
    let retry: &[u8] = if refusal.code == ErrorCode::Unavailable {
        b"retry: 2000\n\n"
    } else {
        b"retry: 5000\n\n"
    };
    let mut body = retry.to_vec();
    body.extend_from_slice(&event::event(None, Some("error"), &data.to_string()));
    Bytes::from(body)
}

/// An HTTP error answer with the JSON body of `docs/protocol.md`, written
/// by hand on the listener's path; `extra` is more header lines, each
/// ending in CRLF.
pub(crate) fn http_error(refusal: &Refusal, extra: &str) -> String {
    let body = refusal.http_body();
    let status = refusal.code.http_status();
    let reason = match status {
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        410 => "Gone",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Bad Request",
    };
    let allow = if status == 405 && !extra.starts_with("Allow:") {
        "Allow: GET\r\n"
    } else {
        ""
    };
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Access-Control-Allow-Origin: *\r\n{allow}{extra}Connection: close\r\n\r\n{body}",
        body.len()
    )
}
