//! Herald's client sessions: WebSocket and SSE connections speaking the
//! native protocol (`docs/protocol.md`), their outboxes, heartbeats and
//! shutdown.
//!
//! Per-connection cost is the product, so each connection is one small
//! hand-written future ([`ws::WsSession`], [`sse::SseSession`]) plus one
//! [`outbox::Outbox`] shared with the hub. Nothing else per connection is
//! allocated while it is idle: no timer, no channel, no buffer beyond
//! tungstenite's 512-byte read buffer.

mod admission;
mod client;
pub mod config;
mod context;
mod error;
mod metrics;
mod outbox;
pub mod sse;
mod subscriptions;
mod tracker;
mod wire;
pub mod ws;

pub use admission::{ConnectRequest, admit};
pub use client::{Client, Refused};
pub use config::SessionConfig;
pub use context::Context;
pub use error::{CloseReason, ErrorCode};
pub use metrics::Metrics;
pub use tracker::Tracker;

/// The wire encoders, for `herald-bench`'s criterion micro-benchmarks only.
/// Not an API: nothing outside the benches may depend on it.
#[doc(hidden)]
pub mod bench {
    use bytes::Bytes;
    use fanout::Message;

    /// The WebSocket `message` frame of `message` (cached in the message once built).
    pub fn ws_message(message: &Message) -> Bytes {
        crate::wire::ws_message(message)
    }

    /// The shared part of the SSE event of `message` (cached likewise).
    pub fn sse_message(message: &Message) -> Bytes {
        crate::wire::sse_message(message)
    }
}
