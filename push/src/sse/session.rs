//! One SSE stream after its head was answered: a small hand-written future
//! that owns the socket.
//!
//! Invariants:
//! - Each message event is an `id:` line built for this stream followed by
//!   the shared, once-encoded `data:` part; both go out in one vectored write.
//! - Events are never cut: a half-written event is finished before the
//!   closing event goes out.
//! - The socket is read only to notice the client hanging up; whatever a
//!   client sends is discarded through a small stack buffer.

use std::{
    collections::VecDeque,
    future::Future,
    io::{self, IoSlice},
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context as TaskContext, Poll, ready},
};

use bytes::{Buf, Bytes};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    time::Sleep,
};

use super::cursor;
use crate::{
    CloseReason, Context, metrics::Transport, outbox::Outbox, subscriptions::Subscriptions,
    tracker::Tracked, wire,
};

const MAX_IOVECS: usize = 64;
const POLL_BUDGET: usize = 32;
/// The smallest `retry:` sent on shutdown, in milliseconds.
const MIN_RETRY_MS: u128 = 1000;

/// A piece of the stream. An event may be several chunks (its `id:` line and
/// its shared body); the last one says so, so that closing never cuts an
/// event in two. A cut event would hand EventSource an id whose data it
/// never got, and resuming from that id would skip the message.
struct Chunk {
    bytes: Bytes,
    ends_event: bool,
}

impl Chunk {
    fn whole(bytes: Bytes) -> Self {
        Self {
            bytes,
            ends_event: true,
        }
    }
}

/// An open SSE stream; spawn it and it runs until the stream ends.
pub struct SseSession {
    stream: TcpStream,
    context: Context,
    /// Where the hub leaves messages for this stream.
    outbox: Arc<Outbox>,
    /// Keeps this stream visible to the ticker and to shutdown.
    _tracked: Tracked,
    subscriptions: Subscriptions,
    /// Bytes ready for the socket, oldest first; the front may be partly written.
    writing: VecDeque<Chunk>,
    /// Whether part of an event is on the wire and the rest still queued.
    mid_event: bool,
    /// Set once the stream is closing, with the time it may take to flush.
    closing: Option<(CloseReason, Pin<Box<Sleep>>)>,
    /// For logs.
    id: u64,
}

impl SseSession {
    pub(crate) fn new(
        context: Context,
        stream: TcpStream,
        outbox: Arc<Outbox>,
        subscriptions: Subscriptions,
        prelude: Vec<(Bytes, bool)>,
        replayed: u64,
        peer: SocketAddr,
    ) -> Self {
        let tracked = context.tracker().register(outbox.clone());
        let id = rand::random::<u64>() >> 11;
        let metrics = context.metrics().transport(Transport::Sse);
        metrics.connections.inc();
        metrics.delivered.inc_by(replayed);
        tracing::debug!(conn.id = id, client.addr = %peer, transport = "sse", "stream opened");
        let _ = stream.set_nodelay(true);
        Self {
            stream,
            context,
            outbox,
            _tracked: tracked,
            subscriptions,
            writing: prelude
                .into_iter()
                .map(|(bytes, ends_event)| Chunk { bytes, ends_event })
                .collect(),
            mid_event: false,
            closing: None,
            id,
        }
    }

    fn begin_close(&mut self, reason: CloseReason, last: Bytes) {
        // Keep the rest of an event already on its way, drop every other.
        let keep = if self.mid_event {
            self.writing
                .iter()
                .position(|c| c.ends_event)
                .map_or(0, |end| end + 1)
        } else {
            0
        };
        self.writing.truncate(keep);
        self.writing.push_back(Chunk::whole(last));
        // Counted when decided, not when the socket finally goes.
        let metrics = self.context.metrics().transport(Transport::Sse);
        metrics.disconnected(reason);
        let timeout = self.context.config().close_timeout;
        self.closing = Some((reason, Box::pin(tokio::time::sleep(timeout))));
    }

    fn poll_outbox(&mut self, cx: &mut TaskContext<'_>) -> bool {
        let take = self.writing.is_empty();
        let drained = self.outbox.drain(take, cx.waker());
        if let Some(delay) = drained.shutdown {
            let delay = delay.as_millis();
            let data = wire::json::reconnect(delay, false);
            // EventSource keeps using `retry` for every attempt while the
            // server is down, with no back-off of its own: never hand it a
            // tiny one, even when the jitter drew one.
            let retry = delay.max(MIN_RETRY_MS);
            let mut event = format!("retry: {retry}\n").into_bytes();
            event.extend_from_slice(&wire::sse_event(None, Some("reconnect"), &data));
            self.begin_close(CloseReason::Shutdown, Bytes::from(event));
            return true;
        }
        if drained.overflowed {
            let data = r#"{"code":"slow_consumer","message":"the stream fell too far behind; reconnect to resume"}"#;
            self.begin_close(
                CloseReason::SlowConsumer,
                wire::sse_event(None, Some("error"), data),
            );
            return true;
        }
        let mut progressed = false;
        if drained.tick {
            self.writing
                .push_back(Chunk::whole(Bytes::from_static(b": ping\n\n")));
            progressed = true;
        }
        if !drained.items.is_empty() {
            let mut sent = 0;
            for (slot, message) in drained.items {
                if self.subscriptions.accept(slot, &message) {
                    let id = cursor::format(self.subscriptions.positions());
                    self.writing.push_back(Chunk {
                        bytes: cursor::id_line(&id),
                        ends_event: false,
                    });
                    self.writing
                        .push_back(Chunk::whole(wire::sse_message(&message)));
                    sent += 1;
                }
            }
            self.context
                .metrics()
                .transport(Transport::Sse)
                .delivered
                .inc_by(sent);
            progressed = true;
        }
        progressed
    }

    fn poll_write(&mut self, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        while !self.writing.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let count = self.writing.len().min(MAX_IOVECS);
            for (slice, chunk) in slices.iter_mut().zip(self.writing.iter()) {
                *slice = IoSlice::new(&chunk.bytes);
            }
            let written =
                ready!(Pin::new(&mut self.stream).poll_write_vectored(cx, &slices[..count]))?;
            self.context
                .metrics()
                .transport(Transport::Sse)
                .writes
                .inc();
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.advance(written);
        }
        if self.writing.capacity() > 8 {
            self.writing = VecDeque::new();
        }
        Poll::Ready(Ok(()))
    }

    fn advance(&mut self, mut written: usize) {
        while written > 0 {
            let Some(front) = self.writing.front_mut() else {
                break;
            };
            if written >= front.bytes.len() {
                written -= front.bytes.len();
                self.mid_event = !front.ends_event;
                self.writing.pop_front();
            } else {
                front.bytes.advance(written);
                self.mid_event = true;
                written = 0;
            }
        }
    }

    /// Ready when the client hung up (or the socket failed).
    fn poll_hangup(&mut self, cx: &mut TaskContext<'_>) -> Poll<CloseReason> {
        let mut scratch = [0u8; 64];
        loop {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.stream).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                    return Poll::Ready(CloseReason::ClientClosed);
                }
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(_)) => return Poll::Ready(CloseReason::IoError),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn finish(&mut self, reason: CloseReason) {
        self.outbox.detach();
        self.context
            .metrics()
            .transport(Transport::Sse)
            .disconnected(reason);
        tracing::debug!(conn.id = self.id, reason = reason.as_str(), "stream closed");
    }
}

impl Future for SseSession {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        let this = &mut *self;
        for _ in 0..POLL_BUDGET {
            if let Some((reason, deadline)) = &mut this.closing {
                let reason = *reason;
                if deadline.as_mut().poll(cx).is_ready() {
                    this.finish(reason);
                    return Poll::Ready(());
                }
                this.outbox.drain(false, cx.waker());
                return match this.poll_write(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(result) => {
                        if result.is_ok() {
                            // Best effort: tell the client the stream is complete.
                            let _ = Pin::new(&mut this.stream).poll_shutdown(cx);
                        }
                        this.finish(reason);
                        Poll::Ready(())
                    }
                };
            }
            let mut progressed = this.poll_outbox(cx);
            if this.closing.is_some() {
                continue;
            }
            let had_writing = !this.writing.is_empty();
            match this.poll_write(cx) {
                Poll::Ready(Err(error)) => {
                    tracing::debug!(conn.id = this.id, %error, "write failed");
                    this.finish(CloseReason::IoError);
                    return Poll::Ready(());
                }
                // Messages left in the outbox while we were writing are only
                // picked up by another round; their wake-up was this poll.
                Poll::Ready(Ok(())) => progressed |= had_writing,
                Poll::Pending => {}
            }
            if let Poll::Ready(reason) = this.poll_hangup(cx) {
                this.finish(reason);
                return Poll::Ready(());
            }
            if !progressed {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Drop for SseSession {
    fn drop(&mut self) {
        self.context
            .metrics()
            .transport(Transport::Sse)
            .connections
            .dec();
    }
}
