//! The WebSocket transport.
//!
//! The HTTP upgrade itself is answered by `api` (by hyper, or by the
//! listener's own path for a fresh `GET /ws`); it then hands the raw
//! socket (a [`Wire`]: plain or TLS) and any bytes read ahead to [`start`], with the admitted
//! client and the channels its URL named, and drops every handshake buffer,
//! so nothing from the handshake stays alive.

pub(crate) mod frame;
pub(crate) mod reader;
mod socket;

use std::net::SocketAddr;

use bytes::Bytes;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use wire::{Socket, Wire};

pub use socket::WsSocket;

use crate::{
    Client, CloseReason, Context, Event, Opening, Protocol, Refusal,
    connection::Outgoing,
    outbox::Direct,
    session::{Session, spawn},
    subscriptions::Subscriptions,
};

/// A WebSocket connection speaking protocol `P` on socket `S`.
pub type WsSession<P, S = TcpStream> = Session<WsSocket<S>, P>;

/// An upgraded socket, as the HTTP side hands it over.
pub struct Upgraded {
    /// The socket. It should have `TCP_NODELAY` (Herald's listener sets it
    /// once, on the listening socket, and every accepted socket inherits it).
    pub stream: Wire,
    /// Bytes the HTTP server read past the handshake (a client may send its
    /// first frame right behind the request); they are replayed before
    /// anything is read from the socket.
    pub read_ahead: Vec<u8>,
    /// The client's address, for the connection's logs.
    pub peer: SocketAddr,
    /// The handshake's answer when the caller has not written it itself: it
    /// goes out in the same write as the protocol's first words (or its
    /// last, for a refusal).
    pub answer: Option<Bytes>,
}

/// Starts an upgraded connection: subscribes its client to the channels
/// its URL named, as SSE does (`opening.rs`), and spawns its session,
/// whose first write holds the opening words, every `subscribed` and what
/// each channel missed. A refusal, of the client or of one of its
/// channels, is answered after the upgrade (`refuse`).
pub async fn start<P: Protocol>(
    context: Context,
    upgraded: Upgraded,
    admitted: Result<Client, Refusal>,
    opening: Result<Opening, Refusal>,
    protocol: P,
) {
    let Upgraded {
        stream,
        read_ahead,
        peer,
        answer,
    } = upgraded;
    let admitted = admitted.and_then(|client| {
        let opening = opening?;
        opening.admit(&context, &client)?;
        Ok((client, opening))
    });
    // The hub may write this protocol's frames to a plain socket itself;
    // a TLS connection seals its own records.
    let plain_fd = match &stream {
        Wire::Plain(tcp) => tcp.plain_fd(),
        Wire::Tls(tls) => tls.plain_fd(),
    };
    let direct = plain_fd.and_then(|fd| {
        Some(Direct {
            fd,
            writer: context.hub_writer::<P>()?,
        })
    });
    let subscribed = match admitted {
        Ok((client, opening)) => opening
            .subscribe(&context, &client, peer, direct)
            .await
            .map(|subscribed| (client, subscribed)),
        Err(refusal) => Err(refusal),
    };
    match subscribed {
        Ok((client, subscribed)) => {
            let mut connection = subscribed.start(context, client, protocol, peer);
            if let Some(answer) = answer {
                connection.out().push_front(answer);
            }
            match stream {
                Wire::Plain(tcp) => spawn(WsSocket::new(tcp, read_ahead), connection),
                Wire::Tls(tls) => spawn(WsSocket::new(tls, read_ahead), connection),
            }
        }
        Err(refusal) => refuse(context, stream, answer, refusal, protocol).await,
    }
}

/// Refuses an upgraded connection that admission turned down: the
/// handshake's `answer` when it is still to be written, the protocol's last
/// words for the refusal, then a close frame with its code
/// (browsers show scripts the close code, never the HTTP status of a failed
/// upgrade), then waits for the client's close, within
/// `connection.close_timeout_secs`.
async fn refuse<P: Protocol>(
    context: Context,
    mut stream: Wire,
    answer: Option<Bytes>,
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
    let mut bytes = answer.map_or_else(|| Vec::with_capacity(256), Vec::from);
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
