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
    writing: VecDeque<Bytes>,
    /// Whether the front of `writing` is partly written.
    partial: bool,
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
        prelude: Vec<Bytes>,
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
            writing: prelude.into(),
            partial: false,
            closing: None,
            id,
        }
    }

    fn begin_close(&mut self, reason: CloseReason, last: Bytes) {
        self.writing.truncate(usize::from(self.partial));
        self.writing.push_back(last);
        let timeout = self.context.config().close_timeout;
        self.closing = Some((reason, Box::pin(tokio::time::sleep(timeout))));
    }

    fn poll_outbox(&mut self, cx: &mut TaskContext<'_>) -> bool {
        let take = self.writing.is_empty();
        let drained = self.outbox.drain(take, cx.waker());
        if let Some(delay) = drained.shutdown {
            let delay = delay.as_millis();
            let mut event = wire::sse_event(
                None,
                Some("reconnect"),
                &wire::json::reconnect(delay).replacen(r#""type":"reconnect","#, "", 1),
            )
            .to_vec();
            // `retry` makes EventSource wait the jittered delay before reconnecting.
            event.splice(0..0, format!("retry: {delay}\n").into_bytes());
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
            self.writing.push_back(Bytes::from_static(b": ping\n\n"));
            progressed = true;
        }
        if !drained.items.is_empty() {
            let mut sent = 0;
            for (slot, message) in drained.items {
                if self.subscriptions.accept(slot, &message) {
                    let id = cursor::format(self.subscriptions.positions());
                    self.writing.push_back(cursor::id_line(&id));
                    self.writing.push_back(wire::sse_message(&message));
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
                *slice = IoSlice::new(chunk);
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
        self.partial = false;
        while written > 0 {
            let Some(front) = self.writing.front_mut() else {
                break;
            };
            if written >= front.len() {
                written -= front.len();
                self.writing.pop_front();
            } else {
                front.advance(written);
                self.partial = true;
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
            let progressed = this.poll_outbox(cx);
            if this.closing.is_some() {
                continue;
            }
            if let Poll::Ready(Err(error)) = this.poll_write(cx) {
                tracing::debug!(conn.id = this.id, %error, "write failed");
                this.finish(CloseReason::IoError);
                return Poll::Ready(());
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
