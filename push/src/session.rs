//! One connection's task: the connection core driving a transport's link.
//! This loop is the same for every transport and every protocol; a
//! transport is only its [`Link`], which moves bytes and frames.
//!
//! Invariants:
//! - One task and one waker poll everything: the outbox, a subscribe in
//!   flight, the socket in both directions, and the close.
//! - The link's own writes (a WebSocket's Pongs and close replies) go out
//!   only between whole frames of ours, and ours only once the link has
//!   flushed its own, so the two never interleave inside a frame.
//! - A poll does at most [`POLL_BUDGET`] rounds of work, then yields, so a
//!   busy connection never starves the others on its worker thread.

use std::{
    future::Future,
    io::{self, IoSlice},
    pin::Pin,
    task::{Context as TaskContext, Poll, ready},
};

use tokio::io::AsyncWrite;
use wire::Socket;

use crate::{ClientFrame, CloseReason, ErrorCode, Protocol, connection::Connection};

/// Rounds of work one poll may do before yielding to other tasks.
const POLL_BUDGET: usize = 32;

/// What a transport does with its socket. It frames and moves bytes; it
/// decides nothing.
pub trait Link: Send + Unpin + 'static {
    /// The socket: plain or TLS, a type each, so that a plain session
    /// carries nothing for TLS.
    type Socket: Socket;

    /// The socket Herald's frames are written to.
    fn socket(&mut self) -> &mut Self::Socket;

    /// Writes frames the core encoded.
    fn poll_write_vectored(
        &mut self,
        cx: &mut TaskContext<'_>,
        slices: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.socket().poll_write_slices(cx, slices)
    }

    /// Whether the link has nothing of its own waiting to be written: the
    /// connection may then park, and the hub write to the socket.
    fn idle(&self) -> bool {
        true
    }

    /// Writes out what the link queued of its own (a WebSocket's Pongs),
    /// and what its socket holds back (the rest of a TLS record). Called
    /// only between whole frames of ours.
    fn poll_flush(&mut self, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.socket()).poll_flush(cx)
    }

    /// Reads from the client, handing each frame to `frames`. Ready when it
    /// read something or the client is gone.
    fn poll_read(&mut self, cx: &mut TaskContext<'_>, frames: &mut dyn Frames) -> Poll<Inbound>;

    /// Ends the transport once the last words are out (a WebSocket close
    /// frame with `code` and `reason`, then the client's answer; a TCP
    /// shutdown). Ready when done, whether it went well or not.
    fn poll_close(&mut self, cx: &mut TaskContext<'_>, code: u16, reason: &str) -> Poll<()>;
}

/// Where a link hands the client's frames.
pub trait Frames {
    /// A whole message from the client.
    fn frame(&mut self, frame: ClientFrame<'_>);

    /// The largest frame or message the client may send (its site's
    /// `max_frame_bytes`); asked only when bytes arrived.
    fn max_frame_bytes(&self) -> usize;
}

impl<P: Protocol> Frames for Connection<P> {
    fn frame(&mut self, frame: ClientFrame<'_>) {
        self.on_frame(frame);
    }

    fn max_frame_bytes(&self) -> usize {
        Connection::max_frame_bytes(self)
    }
}

/// What a link read, besides frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound {
    /// Frames went to the core, or the client showed it is there (a Pong).
    Heard,
    /// The client closed. `answered`: the link answers the close itself and
    /// waits for the end in [`Link::poll_close`].
    Closed { answered: bool },
    /// The client broke the transport's framing.
    Broken(ErrorCode),
    /// The socket failed.
    Failed,
}

/// Runs a connection on its link in a task of its own, until it ends; the
/// caller's task (its handshake's state) is freed meanwhile.
pub(crate) fn spawn<L: Link, P: Protocol>(link: L, connection: Connection<P>) {
    tokio::spawn(Session::new(link, connection));
}

/// A connection on its transport; spawn it and it runs until the
/// connection ends.
pub struct Session<L: Link, P: Protocol> {
    /// Dropped before the link: the connection's drop unparks its outbox,
    /// so that the hub never writes to a socket the link has closed.
    connection: Connection<P>,
    link: L,
}

impl<L: Link, P: Protocol> Session<L, P> {
    pub(crate) fn new(link: L, connection: Connection<P>) -> Self {
        Self { connection, link }
    }

    /// Writes what the core queued, after the link's own bytes.
    fn poll_write(&mut self, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        let Self { link, connection } = self;
        if !connection.out().mid_frame() {
            ready!(link.poll_flush(cx))?;
        }
        connection.poll_write(cx, |cx, slices| link.poll_write_vectored(cx, slices))
    }

    /// The close: the last words, then the link's end, within the deadline.
    fn poll_closing(&mut self, cx: &mut TaskContext<'_>, reason: CloseReason) -> Poll<()> {
        if self.connection.poll_deadline(cx) {
            return Poll::Ready(());
        }
        // Keeps the outbox's waker registered; nothing new is taken.
        self.connection.poll_work(cx);
        if ready!(self.poll_write(cx)).is_err() {
            return Poll::Ready(());
        }
        let code = self.connection.protocol().close_code(reason);
        self.link.poll_close(cx, code, reason.as_str())
    }

    /// One round of an open connection. `Ready` with a reason when it ended
    /// at once; otherwise whether anything happened.
    fn poll_round(&mut self, cx: &mut TaskContext<'_>) -> Result<bool, CloseReason> {
        let mut progressed = self.connection.poll_work(cx);
        if self.connection.closing().is_some() {
            return Ok(true);
        }
        let had_writing = !self.connection.out().is_empty();
        match self.poll_write(cx) {
            Poll::Ready(Err(error)) => {
                tracing::debug!(conn.id = self.connection.id(), %error, "write failed");
                return Err(CloseReason::IoError);
            }
            // Messages left in the outbox while we were writing are only
            // picked up by another round; their wake-up was this poll.
            Poll::Ready(Ok(())) => progressed |= had_writing,
            Poll::Pending => {}
        }
        if self.connection.reads_client() {
            let Self { link, connection } = self;
            if let Poll::Ready(inbound) = link.poll_read(cx, connection) {
                if let Some(reason) = connection.on_inbound(inbound) {
                    return Err(reason);
                }
                progressed = true;
            }
        }
        Ok(progressed)
    }
}

impl<L: Link, P: Protocol> Future for Session<L, P> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        let this = &mut *self;
        for _ in 0..POLL_BUDGET {
            if let Some(reason) = this.connection.closing() {
                ready!(this.poll_closing(cx, reason));
                this.connection.finish(reason);
                return Poll::Ready(());
            }
            match this.poll_round(cx) {
                Err(reason) => {
                    this.connection.finish(reason);
                    return Poll::Ready(());
                }
                Ok(false) => {
                    this.connection.park(this.link.idle());
                    return Poll::Pending;
                }
                Ok(true) => {}
            }
        }
        // Plenty of work left: let other connections run, then carry on.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::mem::size_of;

    use crate::{MercureSse, NativeSse, NativeWs, PusherWs, sse::SseSession, ws::WsSession};
    use wire::TlsStream;

    /// Every idle connection is one tokio task, and tokio rounds a task's
    /// cell up: futures up to 160 bytes get a 256-byte cell, up to 288 a
    /// 384-byte one, up to 416 a 512-byte one. A session one word past its
    /// class costs 128 bytes more per idle connection (measured on SSE:
    /// 1000 B → 1146 B per connection at 10k). Grow them only knowingly,
    /// and measure.
    #[test]
    fn idle_sessions_stay_in_their_allocation_class() {
        let sse = size_of::<SseSession<NativeSse>>();
        assert!(sse <= 160, "an SSE session is {sse} bytes");
        // The socket and one pointer (`ws/socket.rs`) beside the core.
        let ws = size_of::<WsSession<NativeWs>>();
        assert!(ws <= 160, "a WebSocket session is {ws} bytes");
        // Pusher clients cost what native ones do (docs/benchmarks.md).
        let pusher = size_of::<WsSession<PusherWs>>();
        assert!(pusher <= 160, "a Pusher session is {pusher} bytes");
        // A Mercure subscriber's selectors are one pointer beside the core.
        let mercure = size_of::<SseSession<MercureSse>>();
        assert!(mercure <= 160, "a Mercure session is {mercure} bytes");
        // A TLS socket is one pointer more (its record layer, `wire`): a
        // class up, 128 bytes beside the record layer's own.
        let tls = size_of::<WsSession<NativeWs, TlsStream>>();
        assert!(tls <= 288, "a TLS WebSocket session is {tls} bytes");
        let tls = size_of::<SseSession<MercureSse, TlsStream>>();
        assert!(tls <= 288, "a TLS Mercure session is {tls} bytes");
    }
}
