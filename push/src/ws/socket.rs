//! A WebSocket on a [`Wire`] (plain or TLS), driven straight from the session's poll,
//! with no per-connection read buffer while the client is quiet.
//!
//! As the WebSocket transport's [`Link`], it hands text and binary messages
//! to the connection core and reports the rest (Pings, Pongs, the client's
//! close, broken framing); it writes Herald's frames as they come, and the
//! only frames it writes of its own are Pongs and the close handshake.
//!
//! Invariants:
//! - An idle connection holds the socket and one null pointer: reads go
//!   into `READ_BUFFER`, one per worker thread, and only bytes that do not
//!   make a whole frame yet are kept, boxed with our unwritten replies and
//!   the close handshake's state, and freed once none of these is left.
//!   `session.rs` holds the session's size with a test.
//! - One client message is handed over per [`Link::poll_read`], so that the
//!   core can stop reading between two (while a subscribe reads history).
//! - Our Pongs and close frames go out only through [`Link::poll_flush`],
//!   which the session calls between whole frames of its own.
//! - Nothing is answered after a close frame of ours: a Ping read while
//!   closing gets no Pong.

use std::{
    cell::RefCell,
    io,
    pin::Pin,
    task::{Context as TaskContext, Poll, ready},
};

use tokio::io::ReadBuf;
use wire::Socket;

use super::{
    frame,
    reader::{Extra, Frame, Reader},
};
use crate::{
    ClientFrame, ErrorCode,
    session::{Frames, Inbound, Link},
};

/// Bytes one read takes off the socket. Client frames to a push server are
/// small; a larger frame is read over several.
const READ_BUFFER_BYTES: usize = 16 * 1024;

/// Reads one poll may do without finishing a frame before it yields, so
/// that a client streaming one large frame does not hold its worker thread.
const READS_PER_POLL: usize = 8;

/// Our replies waiting for the socket stay under this: past it (a client
/// that sends Pings and does not read), Pings go unanswered.
const MAX_REPLY_BYTES: usize = 1024;

thread_local! {
    /// Every WebSocket read on this thread lands here first, so that no
    /// connection owns a read buffer. A borrow lasts one read and the
    /// handling of one frame, which reads no socket, so it never nests.
    static READ_BUFFER: RefCell<Box<[u8]>> =
        RefCell::new(vec![0; READ_BUFFER_BYTES].into_boxed_slice());
}

/// The WebSocket transport's link: the socket, and one pointer that is
/// null while the client is quiet.
pub struct WsSocket<S> {
    stream: S,
    /// A frame or message partly read, our replies not yet written, and
    /// the close handshake's state, boxed together, only while any exists.
    reader: Reader<Control>,
}

/// What the link keeps beside the reader's bytes while it needs to.
#[derive(Default)]
struct Control {
    /// Pongs and the close frame of ours not written yet, and how much of
    /// them the socket took.
    reply: Vec<u8>,
    written: usize,
    /// Whether our close frame is queued (our own close, or the answer to
    /// the client's).
    close_sent: bool,
    /// Whether the client's close frame was read.
    close_received: bool,
    /// Set once nothing more is read: end of stream, a read error, or
    /// framing we refused.
    ended: bool,
}

impl Extra for Control {
    fn is_idle(&self) -> bool {
        self.reply.is_empty() && !self.close_sent && !self.close_received && !self.ended
    }
}

/// While closing, the client's frames are read only to find its close
/// frame; one larger than this ends the wait.
const CLOSING_MAX_FRAME_BYTES: usize = READ_BUFFER_BYTES;

/// The frames sink while closing: everything but the close is dropped.
struct Discard;

impl Frames for Discard {
    fn frame(&mut self, _frame: ClientFrame<'_>) {}

    fn max_frame_bytes(&self) -> usize {
        CLOSING_MAX_FRAME_BYTES
    }
}

impl<S: Socket> WsSocket<S> {
    /// A link on `stream`, reading `read_ahead` (bytes the HTTP server read
    /// past the handshake) first.
    pub fn new(stream: S, read_ahead: Vec<u8>) -> Self {
        Self {
            stream,
            reader: Reader::new(read_ahead),
        }
    }

    fn control(&self) -> Option<&Control> {
        self.reader.extra()
    }

    /// Reads the next frame: from bytes already read, else from the socket.
    fn poll_frame(&mut self, cx: &mut TaskContext<'_>, frames: &mut dyn Frames) -> Poll<Inbound> {
        if let Some(control) = self.control()
            && control.ended
        {
            return Poll::Ready(Inbound::Closed {
                answered: control.close_received,
            });
        }
        if self.reader.has_unread() {
            let max = frames.max_frame_bytes();
            let read = self.reader.read(&mut [], max, |frame, control| {
                on_frame(frame, control, frames)
            });
            if let Some(inbound) = self.settle(read) {
                return Poll::Ready(inbound);
            }
        }
        for _ in 0..READS_PER_POLL {
            let inbound = READ_BUFFER.with_borrow_mut(|buffer| {
                let mut read_buf = ReadBuf::new(buffer);
                match Pin::new(&mut self.stream).poll_read(cx, &mut read_buf) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(error)) => {
                        tracing::debug!(%error, "websocket read failed");
                        self.reader.extra_mut().ended = true;
                        return Poll::Ready(Some(Inbound::Failed));
                    }
                    Poll::Ready(Ok(())) => {}
                }
                let input = read_buf.filled_mut();
                if input.is_empty() {
                    // The client hung up without a close frame.
                    self.reader.extra_mut().ended = true;
                    return Poll::Ready(Some(Inbound::Closed { answered: false }));
                }
                let max = frames.max_frame_bytes();
                let read = self.reader.read(input, max, |frame, control| {
                    on_frame(frame, control, frames)
                });
                Poll::Ready(self.settle(read))
            });
            match inbound {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(inbound)) => return Poll::Ready(inbound),
                // Part of a frame: read on.
                Poll::Ready(None) => {}
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// What a read came to: `None` when more bytes are needed.
    fn settle(&mut self, read: Result<Option<Inbound>, ErrorCode>) -> Option<Inbound> {
        match read {
            Ok(inbound) => inbound,
            Err(code) => {
                self.reader.extra_mut().ended = true;
                Some(Inbound::Broken(code))
            }
        }
    }
}

/// What a frame means for the connection; hands messages to `frames`.
fn on_frame(frame: Frame<'_>, control: &mut Control, frames: &mut dyn Frames) -> Inbound {
    match frame {
        Frame::Text(text) => frames.frame(ClientFrame::Text(text)),
        Frame::Binary(data) => frames.frame(ClientFrame::Binary(data)),
        Frame::Fragment | Frame::Pong => {}
        Frame::Ping(payload) => {
            if !control.close_sent && control.reply.len() < MAX_REPLY_BYTES {
                control.reply.extend_from_slice(&frame::pong(payload));
            }
        }
        Frame::Close(status) => {
            control.close_received = true;
            control.ended = true;
            if !control.close_sent {
                // The client's code comes back, as RFC 6455 §5.5.1 has it.
                control.close_sent = true;
                let answer = match status {
                    Some((code, _)) => frame::close(code, ""),
                    None => frame::close_empty(),
                };
                control.reply.extend_from_slice(&answer);
            }
            return Inbound::Closed { answered: true };
        }
    }
    Inbound::Heard
}

impl<S: Socket> Link for WsSocket<S> {
    type Socket = S;

    fn socket(&mut self) -> &mut S {
        &mut self.stream
    }

    /// No Pong or close frame of ours waits.
    fn idle(&self) -> bool {
        self.reader
            .extra()
            .is_none_or(|control| control.reply.is_empty())
    }

    /// Writes out what the socket holds back, then our Pongs and close
    /// frame.
    fn poll_flush(&mut self, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        let Self { stream, reader } = self;
        ready!(Pin::new(&mut *stream).poll_flush(cx))?;
        let Some(control) = reader.extra() else {
            return Poll::Ready(Ok(()));
        };
        if control.reply.is_empty() {
            return Poll::Ready(Ok(()));
        }
        let control = reader.extra_mut();
        while control.written < control.reply.len() {
            let rest = &control.reply[control.written..];
            let written = ready!(Pin::new(&mut *stream).poll_write(cx, rest))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            control.written += written;
        }
        control.reply = Vec::new();
        control.written = 0;
        reader.tidy();
        Poll::Ready(Ok(()))
    }

    fn poll_read(&mut self, cx: &mut TaskContext<'_>, frames: &mut dyn Frames) -> Poll<Inbound> {
        self.poll_frame(cx, frames)
    }

    /// Our close frame (unless we are answering the client's), then the
    /// client's answer; anything else the client sends meanwhile is dropped.
    fn poll_close(&mut self, cx: &mut TaskContext<'_>, code: u16, reason: &str) -> Poll<()> {
        let control = self.reader.extra_mut();
        if !control.close_sent {
            control.close_sent = true;
            control.reply.extend_from_slice(&frame::close(code, reason));
        }
        if ready!(self.poll_flush(cx)).is_err() {
            return Poll::Ready(());
        }
        loop {
            match ready!(self.poll_frame(cx, &mut Discard)) {
                Inbound::Heard => continue,
                Inbound::Closed { .. } | Inbound::Broken(_) | Inbound::Failed => {
                    return Poll::Ready(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::{TcpListener, TcpStream},
    };

    use super::*;

    /// Collects what the link hands over, under a 100-byte frame limit.
    #[derive(Default)]
    struct Collect(Vec<String>);

    impl Frames for Collect {
        fn frame(&mut self, frame: ClientFrame<'_>) {
            self.0.push(match frame {
                ClientFrame::Text(text) => format!("text {text}"),
                ClientFrame::Binary(data) => format!("binary {data:?}"),
            });
        }

        fn max_frame_bytes(&self) -> usize {
            100
        }
    }

    /// A masked client frame.
    fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let mut frame = vec![first, 0x80 | payload.len() as u8];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
        frame
    }

    /// A link and the client's end of its socket.
    async fn pair(read_ahead: Vec<u8>) -> (WsSocket<TcpStream>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (WsSocket::new(server, read_ahead), client)
    }

    async fn read(link: &mut WsSocket<TcpStream>, frames: &mut Collect) -> Inbound {
        poll_fn(|cx| link.poll_read(cx, frames)).await
    }

    async fn flush(link: &mut WsSocket<TcpStream>) {
        poll_fn(|cx| link.poll_flush(cx)).await.unwrap();
    }

    #[tokio::test]
    async fn messages_split_across_reads_arrive_whole_and_leave_nothing_kept() {
        let (mut link, mut client) = pair(masked(0x81, b"early")).await;
        let mut frames = Collect::default();
        assert_eq!(read(&mut link, &mut frames).await, Inbound::Heard);
        assert!(
            link.reader.extra().is_none(),
            "read-ahead bytes are freed once read"
        );

        let frame = masked(0x82, &[7; 50]);
        client.write_all(&frame[..3]).await.unwrap();
        client.flush().await.unwrap();
        let reading = tokio::spawn(async move {
            let inbound = read(&mut link, &mut frames).await;
            (link, frames, inbound)
        });
        client.write_all(&frame[3..]).await.unwrap();
        let (link, frames, inbound) = reading.await.unwrap();
        assert_eq!(inbound, Inbound::Heard);
        assert_eq!(
            frames.0,
            ["text early".to_string(), format!("binary {:?}", [7; 50])]
        );
        assert!(
            link.reader.extra().is_none(),
            "nothing is kept between frames"
        );
    }

    #[tokio::test]
    async fn pings_are_answered_and_a_close_is_echoed_with_its_code() {
        let (mut link, mut client) = pair(Vec::new()).await;
        let mut frames = Collect::default();
        client.write_all(&masked(0x89, b"hi")).await.unwrap();
        assert_eq!(read(&mut link, &mut frames).await, Inbound::Heard);
        flush(&mut link).await;
        let mut pong = [0; 4];
        client.read_exact(&mut pong).await.unwrap();
        assert_eq!(pong, [0x8a, 2, b'h', b'i']);
        assert!(
            link.reader.extra().is_none(),
            "the reply is freed once written"
        );

        client
            .write_all(&masked(0x88, &[0x0f, 0xa0, b'x']))
            .await
            .unwrap();
        let inbound = read(&mut link, &mut frames).await;
        assert_eq!(inbound, Inbound::Closed { answered: true });
        poll_fn(|cx| link.poll_close(cx, 1000, "")).await;
        let mut close = [0; 4];
        client.read_exact(&mut close).await.unwrap();
        assert_eq!(close, [0x88, 2, 0x0f, 0xa0], "4000 comes back");
        assert!(frames.0.is_empty());
    }

    #[tokio::test]
    async fn our_close_waits_for_the_clients_and_bad_frames_end_reading() {
        let (mut link, mut client) = pair(Vec::new()).await;
        let closing = tokio::spawn(async move {
            poll_fn(|cx| link.poll_close(cx, 4100, "slow_consumer")).await;
        });
        let mut close = [0; 17];
        client.read_exact(&mut close).await.unwrap();
        assert_eq!(&close[..4], &[0x88, 15, 0x10, 0x04]);
        // A message and a Ping while closing are dropped and get no answer.
        client.write_all(&masked(0x81, b"late")).await.unwrap();
        client.write_all(&masked(0x89, b"")).await.unwrap();
        client
            .write_all(&masked(0x88, &[0x03, 0xe8]))
            .await
            .unwrap();
        closing.await.unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "nothing after our close: {rest:?}");

        let (mut link, mut client) = pair(Vec::new()).await;
        let mut frames = Collect::default();
        client.write_all(&[0x81, 0x01, b'a']).await.unwrap();
        let inbound = read(&mut link, &mut frames).await;
        assert_eq!(
            inbound,
            Inbound::Broken(ErrorCode::ProtocolError),
            "unmasked"
        );
        poll_fn(|cx| link.poll_close(cx, 1002, "protocol_error")).await;
        let mut close = [0; 4];
        client.read_exact(&mut close).await.unwrap();
        assert_eq!(close, [0x88, 16, 0x03, 0xea]);
    }

    #[tokio::test]
    async fn a_client_gone_without_a_close_ends_the_link() {
        let (mut link, client) = pair(Vec::new()).await;
        drop(client);
        let mut frames = Collect::default();
        let inbound = read(&mut link, &mut frames).await;
        assert_eq!(inbound, Inbound::Closed { answered: false });
    }
}
