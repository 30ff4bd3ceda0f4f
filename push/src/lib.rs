//! Herald's client connections: the connection core, the wire protocols it
//! speaks and the transports that carry them (`ARCHITECTURE.md` has the
//! map, `docs/protocol.md` the native protocol).
//!
//! - [`Connection`] (`connection.rs`) decides everything about one
//!   connection, once for every transport and protocol.
//! - A [`Protocol`] (`protocol.rs`, `protocol/*.rs`) turns client frames
//!   into [`Intent`]s and encodes [`Event`]s and messages.
//! - A transport (`ws.rs`, `sse.rs`) is a [`Link`] that moves bytes, driven
//!   by one generic [`Session`] loop (`session.rs`).
//!
//! Per-connection cost is the product, so each connection is one small
//! task holding its link and its [`Connection`], plus one outbox shared
//! with the hub. Nothing else per connection is allocated while it is idle:
//! no timer, no channel, no read buffer (a WebSocket reads into its worker
//! thread's buffer, and keeps bytes only while a frame is partly read).

mod admission;
mod client;
mod command_rate;
pub mod config;
mod connection;
mod context;
mod disconnects;
/// The client-input parsers, for the fuzz targets in `fuzz/` only.
/// Not an API: nothing else may depend on it.
#[doc(hidden)]
pub mod fuzz;
pub mod mercure;
pub mod meteor;
mod metrics;
mod opening;
mod outbox;
pub mod poll;
pub mod protocol;
mod refusal;
mod session;
pub mod sse;
pub mod statusnet;
pub mod stomp;
mod subscriptions;
mod tracker;
mod traffic;
mod transport;
pub mod ws;

pub use admission::{ConnectRequest, PROXY_HEADERS, admit, bearer, is_proxied, proxied_dev_site};
pub use client::Client;
pub use config::SessionConfig;
pub use connection::{Chunks, Connection, Outgoing};
pub use context::Context;
pub use metrics::Metrics;
pub use opening::{MAX_URL_CHANNELS, Opening};
pub use protocol::{
    ClientFrame, Event, Intent, MercureSse, MeteorStream, NativePoll, NativeSse, NativeWs,
    Protocol, PusherWs, StompWs,
};
pub use refusal::{CloseReason, CodeInfo, ErrorCode, Refusal};
pub use session::{Frames, Inbound, Link, Session};
pub use subscriptions::{Backlog, Subscriptions};
pub use tracker::Tracker;
pub use traffic::{Received, TrafficSink};
pub use transport::Transport;

/// The wire encoders, for `herald-bench`'s criterion micro-benchmarks only.
/// Not an API: nothing outside the benches may depend on it.
#[doc(hidden)]
pub mod bench {
    use bytes::Bytes;
    use fanout::Message;

    /// The native WebSocket `message` frame of `message` (cached in the message once built).
    pub fn ws_message(message: &Message) -> Bytes {
        crate::protocol::native::ws_message(message)
    }

    /// The shared part of the native SSE event of `message` (cached likewise).
    pub fn sse_message(message: &Message) -> Bytes {
        crate::protocol::native::sse_message(message)
    }
}
