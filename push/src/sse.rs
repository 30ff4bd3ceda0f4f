//! Server-Sent Events streams, served off hyper's HTTP/1 connection.
//!
//! hyper keeps about 18 KiB of buffers and a 2.4 KB future for as long as a
//! response body streams, which for an idle SSE stream is ten times what the
//! stream needs. So the listener in `api` peeks at each new connection, and
//! when the request is `GET /sse` it hands the socket here: the head is
//! parsed with httparse, answered, and the socket is owned by a small
//! [`SseSession`] for the rest of its life.

mod cursor;
mod request;
mod session;

use std::{net::SocketAddr, sync::Arc};

use tokio::{io::AsyncWriteExt, net::TcpStream};

pub use session::SseSession;

use crate::{
    Context, ErrorCode,
    outbox::Outbox,
    subscriptions::{self, Subscriptions},
    wire,
};

/// Whether a request line (as peeked from the socket) is for the SSE route.
pub fn is_sse_request(head: &[u8]) -> bool {
    request::is_sse_route(head)
}

/// Reads and answers an SSE request on a fresh connection. Returns the
/// session to spawn, or `None` when the request was refused (the error
/// answer has then been written and the socket closed).
pub async fn accept(
    context: Context,
    mut stream: TcpStream,
    peer: SocketAddr,
) -> Option<SseSession> {
    let request = match request::read(&mut stream, &context).await {
        Ok(request) => request,
        Err(refusal) => {
            refuse(&context, stream, refusal.code, &refusal.message).await;
            return None;
        }
    };
    let outbox = Arc::new(Outbox::new(context.config().outbox_max_bytes));
    let mut opened = Vec::with_capacity(request.channels.len());
    for (slot, channel) in request.channels.iter().enumerate() {
        let since = request.cursor.as_ref().map(|c| c[slot]);
        let open = subscriptions::open(&context, &outbox, slot as u32, channel.clone(), since);
        match open.await {
            Ok(subscription) => opened.push(subscription),
            Err(error) => {
                tracing::warn!(client.addr = %peer, %error, "SSE subscribe failed");
                refuse(&context, stream, ErrorCode::Unavailable, &error.to_string()).await;
                return None;
            }
        }
    }

    // The head, the retry hint, one `subscribed` event per channel, then the
    // replay of each channel; the cursor in each `id` moves along with it.
    // (bytes, whether they end an event): see `session::Chunk`.
    let mut prelude = Vec::with_capacity(2 + 2 * opened.len());
    prelude.push((bytes::Bytes::from_static(RESPONSE_HEAD), true));
    prelude.push((bytes::Bytes::from_static(b"retry: 2000\n\n"), true));
    let mut positions: Vec<_> = opened.iter().map(|o| o.announced()).collect();
    for subscription in &opened {
        let announced = subscription.announced();
        let data = wire::json::subscribed(
            subscription.guard.channel(),
            announced,
            subscription.history.recovered,
            false,
        );
        let id = cursor::format(positions.iter().copied());
        prelude.push((wire::sse_event(Some(&id), Some("subscribed"), &data), true));
    }
    let mut replayed = 0;
    for (slot, subscription) in opened.iter().enumerate() {
        for message in subscription.replay() {
            positions[slot] = message.position;
            let id = cursor::format(positions.iter().copied());
            prelude.push((cursor::id_line(&id), false));
            prelude.push((wire::sse_message(message), true));
            replayed += 1;
        }
    }
    let mut subscriptions = Subscriptions::default();
    for subscription in opened {
        subscriptions.put(subscription);
    }
    Some(SseSession::new(
        context,
        stream,
        outbox,
        subscriptions,
        prelude,
        replayed,
        peer,
    ))
}

const RESPONSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\n\
Content-Type: text/event-stream\r\n\
Cache-Control: no-cache\r\n\
X-Accel-Buffering: no\r\n\
Access-Control-Allow-Origin: *\r\n\
Connection: close\r\n\
\r\n";

/// Answers an HTTP error with the JSON body of `docs/protocol.md` and closes.
async fn refuse(context: &Context, mut stream: TcpStream, code: ErrorCode, message: &str) {
    context.metrics().client_error(code);
    let body =
        serde_json::json!({"error": {"code": code.as_str(), "message": message}}).to_string();
    let status = code.http_status();
    let reason = match status {
        405 => "Method Not Allowed",
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
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await
    };
    // A client that does not take its error answer within the time limit loses it.
    let limit = context.config().close_timeout;
    let _ = tokio::time::timeout(limit, answer).await;
}
