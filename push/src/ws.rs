//! WebSocket sessions speaking the native protocol.
//!
//! The HTTP upgrade itself is answered by `api` (hyper); it then hands the
//! raw `TcpStream` and any bytes hyper had read ahead to [`start`], and drops
//! every handshake buffer, so nothing from the handshake stays alive.

mod session;
mod socket;

use std::{net::SocketAddr, sync::Arc};

use bytes::{BufMut, BytesMut};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub use session::WsSession;

use crate::{
    Client, CloseReason, Context, Refused,
    outbox::Outbox,
    wire::{self, FrameError},
};

/// Wraps an upgraded socket into a session, ready to be spawned.
///
/// `read_ahead` holds bytes the HTTP server read past the handshake (a
/// client may send its first frame right behind the request); they are
/// replayed before anything is read from the socket.
pub fn start(
    context: Context,
    stream: TcpStream,
    read_ahead: Vec<u8>,
    peer: SocketAddr,
    client: Client,
) -> WsSession {
    let config = &context.config();
    let max_frame_bytes = client.site().settings().limits.max_frame_bytes;
    let ws_config = WebSocketConfig::default()
        // tungstenite allocates and zero-fills the whole read buffer up front;
        // 128 KiB by default, while clients of a push server send tiny frames.
        .read_buffer_size(config.read_buffer_bytes)
        .max_message_size(Some(max_frame_bytes))
        .max_frame_size(Some(max_frame_bytes))
        // Frames from Herald are written by the session itself (shared,
        // pre-encoded bytes); tungstenite only writes control frames.
        .write_buffer_size(0);
    let _ = stream.set_nodelay(true);
    let ws = socket::WsSocket::new(stream, read_ahead, ws_config);
    let outbox = Arc::new(Outbox::new(config.outbox_max_bytes));
    WsSession::new(context, ws, outbox, peer, client)
}

/// Refuses an upgraded connection that admission turned down: an `error`
/// frame, then a close frame with the refusal's code (browsers show scripts
/// the close code, never the HTTP status of a failed upgrade), then waits
/// for the client's close, within `connection.close_timeout_secs`.
pub async fn refuse(context: Context, mut stream: TcpStream, refused: Refused) {
    let reason = CloseReason::Refused(refused.code);
    context.metrics().client_error(refused.code);
    let error = wire::json::error(&FrameError {
        code: refused.code,
        message: refused.message,
        channel: None,
    });
    let mut out = BytesMut::from(&wire::ws_text(error.as_bytes())[..]);
    let reason_text = reason.as_str().as_bytes();
    out.put_u8(0x88);
    out.put_u8((2 + reason_text.len()) as u8);
    out.put_u16(reason.ws_code());
    out.put_slice(reason_text);
    let answer = async {
        stream.write_all(&out).await?;
        // The client answers with its close frame (read and dropped); the
        // server then ends the TCP connection, as RFC 6455 has it.
        let mut scratch = [0u8; 256];
        let _client_close = stream.read(&mut scratch).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(context.config().close_timeout, answer).await;
}
