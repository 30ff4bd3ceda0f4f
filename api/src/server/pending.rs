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

use std::{
    io,
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

use nix::sys::socket::{MsgFlags, recv};
use prometheus::{IntCounterVec, IntGauge};
use tokio::{io::Interest, net::TcpStream};

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
}

impl Dropped {
    fn label(self) -> &'static str {
        match self {
            Dropped::Limit => "limit",
            Dropped::HeaderTimeout => "header_timeout",
            Dropped::HungUp => "hung_up",
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
/// much of it as decides the route), and peeks at it: the bytes stay in
/// the socket for whoever reads the request. `Err` when the peer hung up
/// or the socket failed first.
pub(crate) async fn request_line(stream: &TcpStream) -> Result<Route, Dropped> {
    // "GET /.well-known/mercure?" is the longest prefix that decides the route.
    let mut head = [0u8; 32];
    loop {
        let ready = stream
            .ready(Interest::READABLE)
            .await
            .map_err(|_| Dropped::HungUp)?;
        let peeked = stream.try_io(Interest::READABLE, || {
            let seen = recv(
                stream.as_raw_fd(),
                &mut head,
                MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
            )
            .map_err(io::Error::from)?;
            if seen == 0 {
                return Ok(Err(Dropped::HungUp));
            }
            if seen == head.len() || head[..seen].contains(&b'\n') {
                let line = &head[..seen];
                return Ok(Ok(if push::sse::is_sse_request(line) {
                    Route::Sse
                } else if push::mercure::is_mercure_request(line) {
                    Route::Mercure
                } else if super::ws::is_ws_request(line) {
                    Route::Ws
                } else {
                    Route::Http
                }));
            }
            // Part of a line from a peer that has closed its side: the rest
            // will never come. (The closed state is final, so the next wait
            // returns at once and lands here again; it is checked after the
            // bytes so that a whole request sent with a FIN is still served.)
            if ready.is_read_closed() {
                return Ok(Err(Dropped::HungUp));
            }
            // Only bytes seen before: "would block" clears the socket's
            // readiness, so the next wait sleeps until more bytes (or the
            // end) arrive instead of spinning on what is already here.
            Err(io::ErrorKind::WouldBlock.into())
        });
        match peeked {
            Ok(route) => return route,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
            Err(_) => return Err(Dropped::HungUp),
        }
    }
}
