//! WebSocket sessions speaking the native protocol.
//!
//! The HTTP upgrade itself is answered by `api` (hyper); it then hands the
//! raw `TcpStream` and any bytes hyper had read ahead to [`start`], and drops
//! every handshake buffer, so nothing from the handshake stays alive.

mod session;
mod socket;

use std::{net::SocketAddr, sync::Arc};

use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub use session::WsSession;

use crate::{Context, outbox::Outbox};

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
) -> WsSession {
    let config = &context.config();
    let ws_config = WebSocketConfig::default()
        // tungstenite allocates and zero-fills the whole read buffer up front;
        // 128 KiB by default, while clients of a push server send tiny frames.
        .read_buffer_size(config.read_buffer_bytes)
        .max_message_size(Some(config.max_frame_bytes))
        .max_frame_size(Some(config.max_frame_bytes))
        // Frames from Herald are written by the session itself (shared,
        // pre-encoded bytes); tungstenite only writes control frames.
        .write_buffer_size(0);
    let _ = stream.set_nodelay(true);
    let ws = socket::WsSocket::new(stream, read_ahead, ws_config);
    let outbox = Arc::new(Outbox::new(config.outbox_max_bytes));
    WsSession::new(context, ws, outbox, peer)
}
