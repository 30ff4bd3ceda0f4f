//! Server-Sent Events streams, served off hyper's HTTP/1 connection.
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
//! That request is checked with [`check`] and [`open`]ed the same way, and
//! hyper pulls the stream's chunks as its response body: correct, only
//! dearer while it lasts.

mod cursor;
mod request;
mod session;
mod stream;

use std::{net::SocketAddr, sync::Arc};

use bytes::Bytes;
use tokio::{io::AsyncWriteExt, net::TcpStream};

pub use request::{MAX_REQUEST_CHANNELS, Refusal, SseHeaders, SseRequest, check};
pub use session::SseSession;
pub use stream::SseStream;

use crate::{
    Client, ConnectRequest, Context, ErrorCode, admit,
    outbox::Outbox,
    subscriptions::{self, Subscriptions},
    wire,
};
use stream::Chunk;

/// The response headers of every SSE stream, besides the status line.
pub const RESPONSE_HEADERS: &[(&str, &str)] = &[
    ("Content-Type", "text/event-stream"),
    ("Cache-Control", "no-cache"),
    // nginx would otherwise buffer the stream.
    ("X-Accel-Buffering", "no"),
    ("Access-Control-Allow-Origin", "*"),
];

/// Whether a request line (as peeked from the socket) is for the SSE route.
pub fn is_sse_request(head: &[u8]) -> bool {
    request::is_sse_route(head)
}

/// Reads and answers an SSE request on a fresh connection. Returns the
/// session to spawn, or `None` when the request was refused (the error
/// answer has then been written and the socket closed).
pub async fn accept(
    context: Context,
    mut socket: TcpStream,
    peer: SocketAddr,
) -> Option<SseSession> {
    let request = match request::read(&mut socket).await {
        Ok(request) => request,
        Err(refusal) => {
            refuse(&context, socket, &refusal).await;
            return None;
        }
    };
    let mut head = String::from("HTTP/1.1 200 OK\r\n");
    for (name, value) in RESPONSE_HEADERS {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    // No length and no chunking: the body ends when the connection does.
    head.push_str("Connection: close\r\n\r\n");
    let opened = match admit_stream(&context, &request, peer) {
        Ok(client) => {
            open(
                &context,
                request,
                client,
                Some(Bytes::from(head.clone())),
                peer,
            )
            .await
        }
        Err(refusal) => Err(refusal),
    };
    match opened {
        Ok(stream) => Some(SseSession::new(socket, stream)),
        Err(refusal) if refusal.code.is_temporary() => {
            // A 503 or 429 would make EventSource give up for good; a
            // stream that says "retry" and ends makes it come back by itself.
            count_refusal(&context, &refusal);
            let answer = async {
                socket.write_all(head.as_bytes()).await?;
                socket.write_all(&retry_later(&refusal)).await?;
                socket.shutdown().await
            };
            let _ = tokio::time::timeout(context.config().close_timeout, answer).await;
            None
        }
        Err(refusal) => {
            refuse(&context, socket, &refusal).await;
            None
        }
    }
}

/// Admits a stream's client, and checks that it may read every channel it
/// asks for and no more of them than its site allows.
pub fn admit_stream(
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
        },
    )?;
    let site = client.site().clone();
    let refuse = |refusal: Refusal| {
        context.metrics().reject(site.id(), refusal.code.as_str());
        refusal
    };
    let max = site.settings().limits.max_subscriptions;
    if request.channels.len() > max {
        return Err(refuse(Refusal::new(
            ErrorCode::TooManyChannels,
            format!("a stream may have at most {max} channels"),
        )));
    }
    for channel in &request.channels {
        client.may_read(channel, None).map_err(|mut refusal| {
            refusal.message = format!("{channel}: {}", refusal.message);
            refuse(refusal)
        })?;
    }
    Ok(client)
}

/// The whole body of a stream that cannot start now: a `retry` hint and an
/// `error` event with the refusal's code. EventSource reconnects after it.
pub fn retry_later(refusal: &Refusal) -> Bytes {
    let data = serde_json::json!({"code": refusal.code.as_str(), "message": refusal.message});
    // The engine comes back soon; a limit takes longer to leave room.
    let retry: &[u8] = if refusal.code == ErrorCode::Unavailable {
        b"retry: 2000\n\n"
    } else {
        b"retry: 5000\n\n"
    };
    let mut body = retry.to_vec();
    body.extend_from_slice(&wire::sse_event(None, Some("error"), &data.to_string()));
    Bytes::from(body)
}

/// Subscribes a checked request to its channels and queues what the stream
/// starts with: `head` if given, the retry hint, one `subscribed` event per
/// channel, then the replay of each channel, with the cursor in each `id`
/// moving along.
pub async fn open(
    context: &Context,
    request: SseRequest,
    client: Client,
    head: Option<Bytes>,
    peer: SocketAddr,
) -> Result<SseStream, Refusal> {
    let outbox = Arc::new(Outbox::new(context.config().outbox_max_bytes));
    let mut opened = Vec::with_capacity(request.channels.len());
    for (slot, channel) in request.channels.into_iter().enumerate() {
        let since = request.cursor.as_ref().map(|c| c[slot]);
        let channel = client.scope(&channel);
        let open = subscriptions::open(context, &outbox, slot as u32, channel, since);
        match open.await {
            Ok(subscription) => opened.push(subscription),
            Err(error) => {
                tracing::warn!(client.addr = %peer, %error, "SSE subscribe failed");
                return Err(Refusal::new(ErrorCode::Unavailable, error.to_string()));
            }
        }
    }

    let mut prelude = Vec::with_capacity(2 + 2 * opened.len());
    prelude.extend(head.map(Chunk::whole));
    prelude.push(Chunk::whole(Bytes::from_static(b"retry: 2000\n\n")));
    let mut positions: Vec<_> = opened.iter().map(|o| o.announced()).collect();
    for subscription in &opened {
        let data = wire::json::subscribed(
            subscription.guard.channel(),
            subscription.announced(),
            subscription.history.recovered,
            false,
        );
        let id = cursor::format(positions.iter().copied());
        prelude.push(Chunk::whole(wire::sse_event(
            Some(&id),
            Some("subscribed"),
            &data,
        )));
    }
    let mut replayed = 0;
    for (slot, subscription) in opened.iter().enumerate() {
        for message in subscription.replay() {
            positions[slot] = message.position;
            prelude.push(Chunk {
                bytes: cursor::id_line(positions.iter().copied()),
                ends_event: false,
            });
            prelude.push(Chunk::whole(wire::sse_message(message)));
            replayed += 1;
        }
    }
    let mut subscriptions = Subscriptions::default();
    for subscription in opened {
        subscriptions.put(subscription);
    }
    Ok(SseStream::new(
        context.clone(),
        outbox,
        subscriptions,
        prelude,
        replayed,
        peer,
        client,
    ))
}

/// Counts a refusal, for either way of serving SSE.
pub fn count_refusal(context: &Context, refusal: &Refusal) {
    context.metrics().client_error(refusal.code);
}

/// Answers an HTTP error with the JSON body of `docs/protocol.md` and closes.
async fn refuse(context: &Context, mut socket: TcpStream, refusal: &Refusal) {
    count_refusal(context, refusal);
    let code = refusal.code;
    let body = serde_json::json!({"error": {"code": code.as_str(), "message": refusal.message}})
        .to_string();
    let status = code.http_status();
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
    let allow = if status == 405 { "Allow: GET\r\n" } else { "" };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Access-Control-Allow-Origin: *\r\n{allow}Connection: close\r\n\r\n",
        body.len()
    );
    let answer = async {
        socket.write_all(head.as_bytes()).await?;
        socket.write_all(body.as_bytes()).await?;
        socket.shutdown().await
    };
    // A client that does not take its error answer within the time limit loses it.
    let limit = context.config().close_timeout;
    let _ = tokio::time::timeout(limit, answer).await;
}
