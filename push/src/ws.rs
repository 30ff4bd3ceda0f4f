//! The WebSocket transport.
//!
//! The HTTP upgrade itself is answered by `api` (hyper); it then hands the
//! raw `TcpStream` and any bytes hyper had read ahead to [`start`] (or to
//! [`refuse`] when admission turned the client down), and drops every
//! handshake buffer, so nothing from the handshake stays alive.

pub(crate) mod frame;
pub(crate) mod reader;
mod socket;

use std::{net::SocketAddr, sync::Arc};

use bytes::Bytes;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

pub use socket::WsSocket;

use crate::{
    Client, CloseReason, Context, Event, Protocol, Refusal,
    connection::{Connection, Outgoing},
    outbox::Outbox,
    session::Session,
    subscriptions::Subscriptions,
};

/// A WebSocket connection speaking protocol `P`.
pub type WsSession<P> = Session<WsSocket, P>;

/// Wraps an upgraded socket into a session, ready to be spawned. The
/// socket should have `TCP_NODELAY` (Herald's listener sets it once, on the
/// listening socket, and every accepted socket inherits it).
///
/// `read_ahead` holds bytes the HTTP server read past the handshake (a
/// client may send its first frame right behind the request); they are
/// replayed before anything is read from the socket. `answer` is the
/// handshake's answer when the caller has not written it itself: it goes
/// out in the same write as the protocol's opening words.
pub fn start<P: Protocol>(
    context: Context,
    stream: TcpStream,
    read_ahead: Vec<u8>,
    peer: SocketAddr,
    client: Client,
    protocol: P,
    answer: Option<Bytes>,
) -> WsSession<P> {
    let config = context.config();
    let socket = WsSocket::new(stream, read_ahead);
    let outbox = Arc::new(Outbox::new(config.outbox_max_bytes));
    let mut connection = Connection::new(context, outbox, client, protocol, peer);
    if let Some(answer) = answer {
        connection.out().push_front(answer);
    }
    Session::new(socket, connection)
}

/// Refuses an upgraded connection that admission turned down: the
/// protocol's last words for the refusal, then a close frame with its code
/// (browsers show scripts the close code, never the HTTP status of a failed
/// upgrade), then waits for the client's close, within
/// `connection.close_timeout_secs`.
pub async fn refuse<P: Protocol>(
    context: Context,
    mut stream: TcpStream,
    refusal: Refusal,
    mut protocol: P,
) {
    let reason = CloseReason::Code(refusal.code);
    context.metrics().client_error(refusal.code);
    let mut out = Outgoing::default();
    let last_words = Event::Closing {
        reason,
        message: &refusal.message,
        reconnect_after: None,
    };
    protocol.encode(last_words, &Subscriptions::default(), &mut out);
    out.push(frame::close(protocol.close_code(reason), reason.as_str()));
    let mut bytes = Vec::with_capacity(256);
    while let Some(chunk) = out.pop() {
        bytes.extend_from_slice(&chunk);
    }
    let answer = async {
        stream.write_all(&bytes).await?;
        // The client answers with its close frame (read and dropped); the
        // server then ends the TCP connection, as RFC 6455 has it.
        let mut scratch = [0u8; 256];
        let _client_close = stream.read(&mut scratch).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(context.config().close_timeout, answer).await;
}
