//! Connections accepted whose request head is not complete yet: what they
//! may cost before anything is known about them.
//!
//! Invariants:
//! - A pending connection costs no CPU while it sends nothing: its task
//!   waits for the socket to become readable (epoll), never on a timer.
//! - A peer that hung up (FIN or RST) before its request line was complete
//!   ends the connection at once.
//! - At most `listener.max_pending` connections are pending across the
//!   process; past it a new connection is closed at once, before anything
//!   is read from it.
//! - A pending connection ends when `listener.header_timeout_secs` passes
//!   without a complete request line; the rest of the head is held to the
//!   same limit by hyper (`header_read_timeout`) or by the SSE route.

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicUsize, Ordering},
};

use prometheus::{IntCounterVec, IntGauge};
use wire::Wire;

/// The process-wide count of pending connections and its limit.
pub(crate) struct PendingGate {
    count: AtomicUsize,
    max: usize,
    /// `herald_connections_pending`.
    gauge: IntGauge,
    /// `herald_pending_connections_closed_total{reason}`.
    closed: IntCounterVec,
}

/// Why a pending connection was closed before its request was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dropped {
    /// `listener.max_pending` connections were already pending.
    Limit,
    /// No complete request line within `listener.header_timeout_secs`.
    HeaderTimeout,
    /// The peer hung up, or the socket failed, first.
    HungUp,
    /// No TLS handshake (`server/tls.rs` counts why).
    Handshake,
}

impl Dropped {
    fn label(self) -> &'static str {
        match self {
            Dropped::Limit => "limit",
            Dropped::HeaderTimeout => "header_timeout",
            Dropped::HungUp => "hung_up",
            Dropped::Handshake => "tls_handshake",
        }
    }
}

/// One connection's place among the pending ones, given back when it is
/// admitted ([`Pending::admitted`]) or dropped, whichever comes first.
pub(crate) struct Pending {
    gate: Arc<PendingGate>,
    /// Set once the place was given back; `admitted` may be called from
    /// every request of a keep-alive connection.
    released: AtomicBool,
}

impl PendingGate {
    pub fn new(max: usize, gauge: IntGauge, closed: IntCounterVec) -> Arc<Self> {
        Arc::new(Self {
            count: AtomicUsize::new(0),
            max,
            gauge,
            closed,
        })
    }

    /// Takes a place for a new connection, or `None` when every place is taken.
    pub fn enter(self: &Arc<Self>) -> Option<Pending> {
        let taken = self
            .count
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.max).then_some(n + 1)
            });
        if taken.is_err() {
            self.count_dropped(Dropped::Limit);
            return None;
        }
        self.gauge.inc();
        Some(Pending {
            gate: self.clone(),
            released: AtomicBool::new(false),
        })
    }

    pub fn count_dropped(&self, why: Dropped) {
        self.closed.with_label_values(&[why.label()]).inc();
    }
}

impl Pending {
    /// The connection's request head is complete: it no longer counts as pending.
    pub fn admitted(&self) {
        if !self.released.swap(true, Ordering::Relaxed) {
            self.gate.count.fetch_sub(1, Ordering::Relaxed);
            self.gate.gauge.dec();
        }
    }

    pub fn dropped(&self, why: Dropped) {
        if !self.released.load(Ordering::Relaxed) {
            self.gate.count_dropped(why);
        }
        self.admitted();
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.admitted();
    }
}

/// The route a request line asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// `/sse` on a fresh connection: served off hyper.
    Sse,
    /// `GET /.well-known/mercure` on a fresh connection: the Mercure hub's
    /// streams, served off hyper too (`push::mercure::accept`).
    Mercure,
    /// `GET /ws` on a fresh connection: served off hyper (`server/ws.rs`).
    Ws,
    /// Anything else: hyper.
    Http,
}

/// Waits, without polling, until the socket holds a request line (or as
/// much of it as decides the route), and peeks at it: the bytes stay for
/// whoever reads the request (`wire::Wire::peek`: in the socket, or, on
/// TLS, opened in the record layer). `Err` when the peer hung up or the
/// socket failed first.
pub(crate) async fn request_line(wire: &mut Wire) -> Result<Route, Dropped> {
    let decided = wire
        .peek(|head| {
            let line = &head[..head.len().min(wire::PEEK_BYTES)];
            (line.len() == wire::PEEK_BYTES || line.contains(&b'\n')).then(|| {
                if push::sse::is_sse_request(line) {
                    Route::Sse
                } else if push::mercure::is_mercure_request(line) {
                    Route::Mercure
                } else if super::ws::is_ws_request(line) {
                    Route::Ws
                } else {
                    Route::Http
                }
            })
        })
        .await;
    match decided {
        Ok(Some(route)) => Ok(route),
        Ok(None) | Err(_) => Err(Dropped::HungUp),
    }
}
