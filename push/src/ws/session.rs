//! One WebSocket connection: a small hand-written future.
//!
//! Invariants:
//! - Herald writes its own frames (pre-encoded, shared `Bytes`) straight to
//!   the socket with vectored writes; tungstenite reads, answers Pings and
//!   runs the close handshake. The two never interleave inside a frame:
//!   tungstenite is only polled when no frame of ours is half written, and
//!   our frames are only written once tungstenite has flushed its own.
//! - Client frames are handled one at a time, in order; while a subscribe
//!   reads history, nothing else is read and no live message is written, so
//!   the replay always comes first.
//! - Nothing is allocated while idle except tungstenite's read buffer: the
//!   write queue gives its memory back once drained.

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
use fanout::Error;
use tokio::time::Sleep;
use tokio_tungstenite::tungstenite::{
    self, Message as WsMessage,
    error::CapacityError,
    protocol::{CloseFrame, frame::coding::CloseCode},
};

use super::socket::WsSocket;

use crate::{
    CloseReason, Context, ErrorCode,
    client::{ChannelProof, Client, unix_now},
    metrics::Transport,
    outbox::Outbox,
    subscriptions::{self, Accept, Opened, Subscriptions},
    tracker::Tracked,
    wire::{self, ClientFrame, FrameError},
};

/// How many frames one vectored write gathers at most.
const MAX_IOVECS: usize = 64;
/// Rounds of work one poll may do before yielding to other tasks.
const POLL_BUDGET: usize = 32;
/// Client frames are not read while this many frames wait for the socket.
const MAX_UNWRITTEN_FRAMES: usize = 256;

type PendingOpen = Pin<Box<dyn Future<Output = Result<Opened, Error>> + Send>>;

/// A WebSocket connection; spawn it and it runs until the connection ends.
pub struct WsSession {
    /// The socket, with tungstenite's protocol state: reading, Pongs, the close handshake.
    ws: WsSocket,
    context: Context,
    /// Where the hub leaves messages for this connection.
    outbox: Arc<Outbox>,
    /// Keeps this connection visible to the ticker and to shutdown.
    _tracked: Tracked,
    subscriptions: Subscriptions,
    /// Frames ready for the socket, oldest first. The front one may be partly written.
    writing: VecDeque<Bytes>,
    /// Whether the front of `writing` is partly written.
    partial: bool,
    /// A subscribe waiting for its history read.
    pending: Option<PendingOpen>,
    /// The tick at which the client was last heard from.
    heard_at: u64,
    /// Set once the connection is closing.
    closing: Option<Closing>,
    /// For logs; also the `connection_id` the client sees.
    id: u64,
    /// The site, token and address this connection was admitted with.
    client: Client,
}

struct Closing {
    reason: CloseReason,
    /// Whether tungstenite has queued our close frame.
    close_sent: bool,
    /// The close handshake is abandoned when this fires: a client that
    /// stopped reading never takes the close frame.
    deadline: Pin<Box<Sleep>>,
}

impl WsSession {
    pub(crate) fn new(
        context: Context,
        ws: WsSocket,
        outbox: Arc<Outbox>,
        peer: SocketAddr,
        client: Client,
    ) -> Self {
        let tracked = context.tracker().register(outbox.clone());
        let id = rand::random::<u64>() >> 11;
        context.metrics().transport(Transport::Ws).connections.inc();
        tracing::debug!(
            conn.id = id,
            client.addr = %peer,
            site = client.site().id(),
            user = client.user(),
            transport = "ws",
            "connection opened"
        );
        let welcome = wire::json::welcome(
            &format!("{id:x}"),
            context.config().ping_interval.as_millis(),
            client.expires_at(),
        );
        let heard_at = context.tracker().now();
        let mut writing = VecDeque::new();
        writing.push_back(wire::ws_text(welcome.as_bytes()));
        Self {
            ws,
            context,
            outbox,
            _tracked: tracked,
            subscriptions: Subscriptions::default(),
            writing,
            partial: false,
            pending: None,
            heard_at,
            closing: None,
            id,
            client,
        }
    }

    /// Counts a refusal of this site's rules or limits.
    fn count_rejection(&self, code: ErrorCode) {
        let site = self.client.site().id();
        self.context.metrics().reject(site, code.as_str());
    }

    fn queue_json(&mut self, json: String) {
        self.writing.push_back(wire::ws_text(json.as_bytes()));
    }

    fn queue_error(&mut self, error: FrameError) {
        self.context.metrics().client_error(error.code);
        tracing::debug!(
            conn.id = self.id,
            code = error.code.as_str(),
            "client frame refused"
        );
        self.queue_json(wire::json::error(&error));
    }

    /// Starts closing: drops queued frames (all but a half-written one) and
    /// arms the deadline. `last` frames go out before the close frame.
    fn begin_close(&mut self, reason: CloseReason, last: Option<Bytes>) {
        if self.closing.is_some() {
            return;
        }
        self.writing.truncate(usize::from(self.partial));
        self.writing.extend(last);
        self.pending = None;
        // Counted when decided: a client that stopped reading may never see
        // the close frame, and the operator should not have to wait for it.
        let metrics = self.context.metrics().transport(Transport::Ws);
        metrics.disconnected(reason);
        let timeout = self.context.config().close_timeout;
        self.closing = Some(Closing {
            reason,
            close_sent: false,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        });
    }

    fn on_frame(&mut self, frame: WsMessage) {
        self.heard_at = self.context.tracker().now();
        match frame {
            WsMessage::Text(text) => match wire::parse_client_frame(&text) {
                Ok(frame) => self.on_client_frame(frame),
                Err(error) => self.queue_error(error),
            },
            WsMessage::Binary(_) => self.queue_error(FrameError {
                code: ErrorCode::BadFrame,
                message: "binary frames are not part of the protocol; send JSON text".into(),
                channel: None,
            }),
            WsMessage::Close(_) => {
                // tungstenite answers the close itself; nothing of ours goes out after it.
                self.begin_close(CloseReason::ClientClosed, None);
                if let Some(closing) = &mut self.closing {
                    closing.close_sent = true;
                }
            }
            WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_) => {}
        }
    }

    fn on_client_frame(&mut self, frame: ClientFrame) {
        match frame {
            ClientFrame::Subscribe {
                channel,
                since,
                signature,
            } => {
                let refuse = |code, message: &str| FrameError {
                    code,
                    message: message.into(),
                    channel: Some(channel.to_string()),
                };
                let scoped = self.client.scope(&channel);
                if self.subscriptions.find(&scoped).is_some() {
                    let error = refuse(ErrorCode::AlreadySubscribed, "already subscribed");
                    return self.queue_error(error);
                }
                let max = self.client.site().settings().limits.max_subscriptions;
                if self.subscriptions.len() >= max {
                    let error = refuse(
                        ErrorCode::TooManySubscriptions,
                        "this connection has as many channels as it may",
                    );
                    self.count_rejection(error.code);
                    return self.queue_error(error);
                }
                let connection_id = format!("{:x}", self.id);
                let proof = ChannelProof {
                    connection_id: &connection_id,
                    signature: signature.as_deref(),
                };
                if let Err(refused) = self.client.may_read(&channel, Some(proof)) {
                    self.count_rejection(refused.code);
                    return self.queue_error(refuse(refused.code, &refused.message));
                }
                let slot = self.subscriptions.free_slot();
                let open = subscriptions::open(&self.context, &self.outbox, slot, scoped, since);
                self.pending = Some(Box::pin(open));
            }
            ClientFrame::Unsubscribe { channel } => {
                if self.subscriptions.remove(&self.client.scope(&channel)) {
                    self.queue_json(wire::json::unsubscribed(&channel));
                } else {
                    self.queue_error(FrameError {
                        code: ErrorCode::NotSubscribed,
                        message: "not subscribed".into(),
                        channel: Some(channel.to_string()),
                    });
                }
            }
            ClientFrame::Ping => self.queue_json(wire::json::pong()),
            ClientFrame::Refresh { token } => match self.client.refresh(&token) {
                Ok(expires_at) => self.queue_json(wire::json::refreshed(expires_at)),
                Err(refused) => {
                    self.count_rejection(refused.code);
                    self.queue_error(FrameError {
                        code: refused.code,
                        message: refused.message,
                        channel: None,
                    });
                }
            },
        }
    }

    fn on_opened(&mut self, opened: Result<Opened, Error>) {
        match opened {
            Ok(opened) => {
                let channel = opened.guard.channel().clone();
                self.queue_json(wire::json::subscribed(
                    &channel,
                    opened.announced(),
                    opened.history.recovered,
                    true,
                ));
                let replay = opened.replay();
                self.writing
                    .extend(replay.iter().map(|m| wire::ws_message(m)));
                let metrics = self.context.metrics().transport(Transport::Ws);
                metrics.delivered.inc_by(replay.len() as u64);
                self.subscriptions.put(opened);
            }
            Err(error) => {
                tracing::event!(tracing::Level::WARN, conn.id = self.id, %error, "subscribe failed");
                self.queue_error(FrameError {
                    code: ErrorCode::Unavailable,
                    message: error.to_string(),
                    channel: None,
                });
            }
        }
    }

    fn on_error(&mut self, error: tungstenite::Error) -> Option<CloseReason> {
        use tungstenite::Error as E;
        let reason = match error {
            E::Capacity(CapacityError::MessageTooLong { .. }) => {
                let site = self.client.site().id();
                self.context.metrics().reject(site, "message_too_big");
                CloseReason::MessageTooBig
            }
            E::Capacity(_) | E::Protocol(_) | E::AttackAttempt => CloseReason::ProtocolError,
            E::Utf8(_) => CloseReason::InvalidPayload,
            _ => return Some(CloseReason::IoError),
        };
        tracing::debug!(
            conn.id = self.id,
            reason = reason.as_str(),
            "closing on a bad frame"
        );
        self.begin_close(reason, None);
        None
    }

    /// Picks up what the hub and the ticker left in the outbox.
    fn poll_outbox(&mut self, cx: &mut TaskContext<'_>) -> bool {
        let take = self.writing.is_empty() && self.pending.is_none() && self.closing.is_none();
        let drained = self.outbox.drain(take, cx.waker());
        let mut progressed = false;
        if self.closing.is_none() {
            if let Some(delay) = drained.shutdown {
                let advice = wire::json::reconnect(delay.as_millis(), true);
                self.begin_close(
                    CloseReason::Shutdown,
                    Some(wire::ws_text(advice.as_bytes())),
                );
                return true;
            }
            if drained.overflowed {
                self.begin_close(CloseReason::SlowConsumer, None);
                return true;
            }
            if (drained.tick || drained.recheck)
                && let Some(code) = self.client.check(unix_now())
            {
                // The site was removed, or the token expired unrefreshed.
                self.count_rejection(code);
                let message = match code {
                    ErrorCode::SiteRemoved => "this site is no longer served here",
                    _ => "the token expired; reconnect with a fresh one",
                };
                let error = FrameError {
                    code,
                    message: message.into(),
                    channel: None,
                };
                self.context.metrics().client_error(code);
                let last = wire::ws_text(wire::json::error(&error).as_bytes());
                self.begin_close(CloseReason::Refused(code), Some(last));
                return true;
            }
            if drained.tick {
                let silent = self.context.tracker().now().saturating_sub(self.heard_at);
                if silent >= self.context.config().idle_ticks() {
                    self.begin_close(CloseReason::IdleTimeout, None);
                } else {
                    self.writing.push_back(wire::ws_ping());
                }
                progressed = true;
            }
        }
        if !drained.items.is_empty() {
            let before = self.writing.len();
            let mut resets = 0;
            for (slot, message) in drained.items {
                match self.subscriptions.accept(slot, &message) {
                    Accept::Skip => continue,
                    Accept::Deliver => {}
                    Accept::AfterReset(position) => {
                        let reset = wire::json::subscribed(&message.channel, position, false, true);
                        self.writing.push_back(wire::ws_text(reset.as_bytes()));
                        resets += 1;
                    }
                }
                self.writing.push_back(wire::ws_message(&message));
            }
            let sent = (self.writing.len() - before - resets) as u64;
            self.context
                .metrics()
                .transport(Transport::Ws)
                .delivered
                .inc_by(sent);
            progressed = true;
        }
        progressed
    }

    /// Writes queued frames. Ready(Ok) once everything is written.
    fn poll_write(&mut self, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        if !self.partial {
            // tungstenite's own frames (Pongs, close replies) go first.
            ready!(self.ws.poll_flush(cx)).map_err(io::Error::other)?;
        }
        while !self.writing.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let count = self.writing.len().min(MAX_IOVECS);
            for (slice, frame) in slices.iter_mut().zip(self.writing.iter()) {
                *slice = IoSlice::new(frame);
            }
            let written = ready!(self.ws.poll_write_vectored(cx, &slices[..count]))?;
            self.context.metrics().transport(Transport::Ws).writes.inc();
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.advance(written);
        }
        if self.writing.capacity() > 8 {
            // Give a burst's memory back once it is written.
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

    /// Drives the close: our last frames, then the close frame, then waiting
    /// for the client's answer or the deadline. Ready when the connection is done.
    fn poll_closing(&mut self, cx: &mut TaskContext<'_>) -> Poll<CloseReason> {
        let Some(closing) = &mut self.closing else {
            return Poll::Pending;
        };
        let reason = closing.reason;
        if closing.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(reason);
        }
        if !closing.close_sent {
            match self.poll_write(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => return Poll::Ready(reason),
                Poll::Pending => return Poll::Pending,
            }
            let frame = CloseFrame {
                code: CloseCode::from(reason.ws_code()),
                reason: reason.as_str().into(),
            };
            if self.ws.start_close(cx, frame).is_err() {
                return Poll::Ready(reason);
            }
            if let Some(closing) = &mut self.closing {
                closing.close_sent = true;
            }
        }
        if let Poll::Ready(Err(_)) = self.ws.poll_flush(cx) {
            return Poll::Ready(reason);
        }
        // Read until the client's close arrives (tungstenite then ends the stream).
        loop {
            match self.ws.poll_next(cx) {
                Poll::Ready(None) | Poll::Ready(Some(Err(_))) => return Poll::Ready(reason),
                Poll::Ready(Some(Ok(_))) => continue,
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn finish(&mut self, reason: CloseReason) {
        self.outbox.detach();
        if self.closing.is_none() {
            let metrics = self.context.metrics().transport(Transport::Ws);
            metrics.disconnected(reason);
        }
        tracing::debug!(
            conn.id = self.id,
            reason = reason.as_str(),
            "connection closed"
        );
    }
}

impl Future for WsSession {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        let this = &mut *self;
        for _ in 0..POLL_BUDGET {
            if this.closing.is_some() {
                // Signals still need draining so the waker stays registered.
                this.outbox.drain(false, cx.waker());
                return match this.poll_closing(cx) {
                    Poll::Ready(reason) => {
                        this.finish(reason);
                        Poll::Ready(())
                    }
                    Poll::Pending => Poll::Pending,
                };
            }
            let mut progressed = false;
            if let Some(pending) = &mut this.pending
                && let Poll::Ready(opened) = pending.as_mut().poll(cx)
            {
                this.pending = None;
                this.on_opened(opened);
                progressed = true;
            }
            progressed |= this.poll_outbox(cx);
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
            // Backpressure: a client that sends but does not read stops
            // being read once its answers pile up, instead of growing them.
            let readable = !this.partial
                && this.pending.is_none()
                && this.writing.len() < MAX_UNWRITTEN_FRAMES;
            if readable {
                match this.ws.poll_next(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        this.on_frame(frame);
                        progressed = true;
                    }
                    Poll::Ready(Some(Err(error))) => {
                        if let Some(reason) = this.on_error(error) {
                            this.finish(reason);
                            return Poll::Ready(());
                        }
                        progressed = true;
                    }
                    Poll::Ready(None) => {
                        this.finish(CloseReason::ClientClosed);
                        return Poll::Ready(());
                    }
                    Poll::Pending => {}
                }
            }
            if !progressed {
                return Poll::Pending;
            }
        }
        // Plenty of work left: let other connections run, then carry on.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Drop for WsSession {
    fn drop(&mut self) {
        self.context
            .metrics()
            .transport(Transport::Ws)
            .connections
            .dec();
    }
}
