//! Per-connection limits and timings, handed over by the binary's config.

use std::time::Duration;

/// Settings shared by every client connection. See `docs/configuration.md`
/// (`connection.*`) for what each one means to an operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// Channels per WebSocket connection, and per SSE stream; the default
    /// of each site's `max_subscriptions`.
    pub max_subscriptions: usize,
    /// Bytes queued for one connection before it is closed as a slow consumer.
    pub outbox_max_bytes: usize,
    /// Largest frame or message a client may send; the default of each
    /// site's `max_frame_bytes`.
    pub max_frame_bytes: usize,
    /// Deprecated and ignored: a WebSocket holds no read buffer of its own
    /// any more (`ws/socket.rs` reads into one buffer per worker thread).
    /// The key is still accepted so that existing configuration files load.
    pub read_buffer_bytes: usize,
    /// How often the shared ticker pings every connection.
    pub ping_interval: Duration,
    /// A WebSocket from which nothing was heard for this long is closed.
    pub idle_timeout: Duration,
    /// How long a closing connection may take to flush its last frames.
    pub close_timeout: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            max_subscriptions: 128,
            outbox_max_bytes: 256 * 1024,
            max_frame_bytes: 4096,
            read_buffer_bytes: 512,
            ping_interval: Duration::from_secs(25),
            idle_timeout: Duration::from_secs(60),
            close_timeout: Duration::from_secs(5),
        }
    }
}

impl SessionConfig {
    /// The number of whole ticks of silence after which a connection is idle.
    pub(crate) fn idle_ticks(&self) -> u64 {
        let ping = self.ping_interval.as_millis().max(1);
        self.idle_timeout.as_millis().div_ceil(ping).max(1) as u64
    }
}
