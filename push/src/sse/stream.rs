//! The transport-neutral part of an SSE stream: its subscriptions, its
//! outbox, and the queue of chunks ready to go out. [`super::SseSession`]
//! writes the chunks to a socket it owns; the HTTP server can also pull them
//! one by one as a response body ([`SseStream::poll_chunk`]).
//!
//! Invariants:
//! - Each message event is an `id:` line built for this stream followed by
//!   the shared, once-encoded `data:` part.
//! - Events are never cut by a close: chunks say where events end, and a
//!   close keeps the rest of an event already on its way. A cut event would
//!   hand EventSource an id whose data it never got.

use std::{
    collections::VecDeque,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context as TaskContext, Poll},
};

use bytes::{Buf, Bytes};
use tokio::time::Sleep;

use super::cursor;
use crate::{
    Client, CloseReason, Context, ErrorCode,
    client::unix_now,
    metrics::Transport,
    outbox::Outbox,
    subscriptions::{Accept, Subscriptions},
    tracker::Tracked,
    wire,
};

/// The smallest `retry:` sent on shutdown, in milliseconds.
const MIN_RETRY_MS: u128 = 1000;

/// A piece of the stream; the last piece of each event says so.
pub(crate) struct Chunk {
    pub bytes: Bytes,
    pub ends_event: bool,
}

impl Chunk {
    pub fn whole(bytes: Bytes) -> Self {
        Self {
            bytes,
            ends_event: true,
        }
    }
}

/// An open SSE stream, whichever way its bytes travel.
pub struct SseStream {
    context: Context,
    /// Where the hub leaves messages for this stream.
    outbox: Arc<Outbox>,
    /// Keeps this stream visible to the ticker and to shutdown.
    _tracked: Tracked,
    subscriptions: Subscriptions,
    /// Chunks ready to go out, oldest first; the front may be partly written.
    writing: VecDeque<Chunk>,
    /// Whether part of an event is out and the rest still queued.
    mid_event: bool,
    /// Set once the stream is closing: why. Kept apart from the deadline,
    /// so that it fits in padding and every idle stream's future is a word
    /// smaller (see `id`).
    closing: Option<CloseReason>,
    /// The time a closing stream may take to flush.
    deadline: Option<Pin<Box<Sleep>>>,
    /// Whether the end was counted and logged.
    finished: bool,
    /// For logs. Random bits would cost a word in every stream's future,
    /// and a stream's future a word bigger lands in a bigger allocation
    /// class (128 B more per idle stream, measured); the outbox's address
    /// is unique for as long as the stream lives, which is all logs need.
    /// (`id()` derives it.)
    /// The site, token and address this stream was admitted with.
    client: Client,
}

impl SseStream {
    pub(crate) fn new(
        context: Context,
        outbox: Arc<Outbox>,
        subscriptions: Subscriptions,
        prelude: Vec<Chunk>,
        replayed: u64,
        peer: SocketAddr,
        client: Client,
    ) -> Self {
        let tracked = context.tracker().register(outbox.clone());
        let id = outbox_id(&outbox);
        let metrics = context.metrics().transport(Transport::Sse);
        metrics.connections.inc();
        metrics.delivered.inc_by(replayed);
        tracing::debug!(
            conn.id = id,
            client.addr = %peer,
            site = client.site().id(),
            user = client.user(),
            transport = "sse",
            "stream opened"
        );
        Self {
            context,
            outbox,
            _tracked: tracked,
            subscriptions,
            writing: prelude.into(),
            mid_event: false,
            closing: None,
            deadline: None,
            finished: false,
            client,
        }
    }

    pub(crate) fn id(&self) -> u64 {
        outbox_id(&self.outbox)
    }

    pub(crate) fn context(&self) -> &Context {
        &self.context
    }

    pub(crate) fn writing(&self) -> &VecDeque<Chunk> {
        &self.writing
    }

    pub(crate) fn closing(&self) -> Option<CloseReason> {
        self.closing
    }

    /// Whether the close deadline has passed.
    pub(crate) fn poll_deadline(&mut self, cx: &mut TaskContext<'_>) -> bool {
        match &mut self.deadline {
            Some(deadline) => deadline.as_mut().poll(cx).is_ready(),
            None => false,
        }
    }

    /// Marks `written` bytes from the front as sent.
    pub(crate) fn advance(&mut self, mut written: usize) {
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
        if self.writing.is_empty() && self.writing.capacity() > 8 {
            // Give a burst's memory back once it is written.
            self.writing = VecDeque::new();
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
        self.context
            .metrics()
            .transport(Transport::Sse)
            .disconnected(reason);
        let timeout = self.context.config().close_timeout;
        self.closing = Some(reason);
        self.deadline = Some(Box::pin(tokio::time::sleep(timeout)));
    }

    /// Picks up what the hub and the ticker left in the outbox. True when
    /// something was queued or the stream started closing.
    pub(crate) fn poll_outbox(&mut self, cx: &mut TaskContext<'_>) -> bool {
        if self.closing.is_some() {
            // Keep the waker registered; nothing new goes out any more.
            self.outbox.drain(false, cx.waker());
            return false;
        }
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
            let event = wire::sse_event(None, Some("error"), data);
            self.begin_close(CloseReason::SlowConsumer, event);
            return true;
        }
        if (drained.tick || drained.recheck)
            && let Some(code) = self.client.check(unix_now())
        {
            // The site was removed, or the token expired: EventSource will
            // reconnect, and the same request is then refused for good.
            let site = self.client.site().id();
            self.context.metrics().reject(site, code.as_str());
            let message = match code {
                ErrorCode::SiteRemoved => "this site is no longer served here",
                _ => "the token expired; reconnect with a fresh one and last_event_id",
            };
            let data = serde_json::json!({"code": code.as_str(), "message": message});
            let event = wire::sse_event(None, Some("error"), &data.to_string());
            self.begin_close(CloseReason::Refused(code), event);
            return true;
        }
        let mut progressed = false;
        if drained.tick {
            let ping = Bytes::from_static(b": ping\n\n");
            self.writing.push_back(Chunk::whole(ping));
            progressed = true;
        }
        if !drained.items.is_empty() {
            let mut sent = 0;
            for (slot, message) in drained.items {
                let accept = self.subscriptions.accept(slot, &message);
                if accept == Accept::Skip {
                    continue;
                }
                if let Accept::AfterReset(position) = accept {
                    let data = wire::json::subscribed(&message.channel, position, false, false);
                    let id = cursor::format(self.subscriptions.positions_before(slot, position));
                    let event = wire::sse_event(Some(&id), Some("subscribed"), &data);
                    self.writing.push_back(Chunk::whole(event));
                }
                self.writing.push_back(Chunk {
                    bytes: cursor::id_line(self.subscriptions.positions()),
                    ends_event: false,
                });
                self.writing
                    .push_back(Chunk::whole(wire::sse_message(&message)));
                sent += 1;
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

    /// The next chunk to send, for a driver that hands whole chunks to a
    /// writer of its own (an HTTP response body). `None` once the stream has
    /// closed and everything was handed out.
    pub fn poll_chunk(&mut self, cx: &mut TaskContext<'_>) -> Poll<Option<Bytes>> {
        loop {
            if let Some(chunk) = self.writing.pop_front() {
                self.mid_event = !chunk.ends_event;
                return Poll::Ready(Some(chunk.bytes));
            }
            if let Some(reason) = self.closing() {
                self.finish(reason);
                return Poll::Ready(None);
            }
            if !self.poll_outbox(cx) {
                return Poll::Pending;
            }
        }
    }

    /// Counts and logs the end of the stream (once).
    pub(crate) fn finish(&mut self, reason: CloseReason) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.outbox.detach();
        if self.closing.is_none() {
            self.context
                .metrics()
                .transport(Transport::Sse)
                .disconnected(reason);
        }
        tracing::debug!(
            conn.id = self.id(),
            reason = reason.as_str(),
            "stream closed"
        );
    }
}

impl Drop for SseStream {
    fn drop(&mut self) {
        // A body dropped by the HTTP server (the client went away) ends here.
        self.finish(CloseReason::ClientClosed);
        self.context
            .metrics()
            .transport(Transport::Sse)
            .connections
            .dec();
    }
}

/// A stream's id for logs: its outbox's address, unique while it lives.
fn outbox_id(outbox: &Arc<Outbox>) -> u64 {
    Arc::as_ptr(outbox) as usize as u64
}
