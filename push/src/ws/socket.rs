//! A WebSocket on a `TcpStream`, driven straight from the session's poll.
//!
//! tungstenite's `WebSocketContext` does the protocol (reading frames,
//! answering Pings, the close handshake) over any `Read + Write`. Here that
//! is the session's own socket seen through [`Io`], which turns "would
//! block" into `WouldBlock` after registering the session task's waker.
//! Compared with tokio-tungstenite's `WebSocketStream`, this keeps no waker
//! proxies: one task polls everything with one waker, so none is needed, and
//! each connection is about 120 bytes smaller.
//!
//! As the WebSocket transport's [`Link`], it hands text and binary frames to
//! the connection core and reports the rest (Pings, Pongs, the client's
//! close, broken framing); it writes Herald's frames as they come.

use std::{
    io::{self, Read, Write},
    pin::Pin,
    task::{Context as TaskContext, Poll, ready},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_tungstenite::tungstenite::{
    Error as WsError, Message,
    error::CapacityError,
    protocol::{CloseFrame, Role, WebSocketConfig, WebSocketContext, frame::coding::CloseCode},
};

use crate::{
    ClientFrame, ErrorCode,
    session::{Inbound, Link},
};

/// The WebSocket transport's link: the socket and tungstenite's state.
pub struct WsSocket {
    stream: TcpStream,
    ws: WebSocketContext,
    /// Set once tungstenite reported the connection closed or broken.
    ended: bool,
    /// Whether a close frame of ours is queued: our own, or tungstenite's
    /// answer to the client's.
    close_sent: bool,
}

impl WsSocket {
    pub fn new(stream: TcpStream, read_ahead: Vec<u8>, config: WebSocketConfig) -> Self {
        Self {
            stream,
            ws: WebSocketContext::from_partially_read(read_ahead, Role::Server, Some(config)),
            ended: false,
            close_sent: false,
        }
    }

    /// The next frame from the client; `None` once the connection is closed.
    fn poll_next(&mut self, cx: &mut TaskContext<'_>) -> Poll<Option<Result<Message, WsError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let mut io = Io {
            stream: &mut self.stream,
            cx,
        };
        match self.ws.read(&mut io) {
            Ok(message) => Poll::Ready(Some(Ok(message))),
            Err(WsError::Io(error)) if error.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
            Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => {
                self.ended = true;
                Poll::Ready(None)
            }
            Err(error) => {
                self.ended = true;
                Poll::Ready(Some(Err(error)))
            }
        }
    }

    /// Writes out what tungstenite has queued (Pongs, close frames).
    fn poll_flush_ws(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), WsError>> {
        let mut io = Io {
            stream: &mut self.stream,
            cx,
        };
        match self.ws.flush(&mut io) {
            Ok(()) | Err(WsError::ConnectionClosed) => Poll::Ready(Ok(())),
            Err(WsError::Io(error)) if error.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
            Err(error) => Poll::Ready(Err(error)),
        }
    }

    /// Queues our close frame; [`WsSocket::poll_flush_ws`] sends it.
    fn start_close(&mut self, cx: &mut TaskContext<'_>, frame: CloseFrame) -> Result<(), WsError> {
        let mut io = Io {
            stream: &mut self.stream,
            cx,
        };
        match self.ws.close(&mut io, Some(frame)) {
            Ok(()) => Ok(()),
            Err(WsError::Io(error)) if error.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(error) => Err(error),
        }
    }
}

impl Link for WsSocket {
    /// Herald writes its own, already framed bytes straight to the socket.
    type Io = TcpStream;

    fn io(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    fn poll_flush(&mut self, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        self.poll_flush_ws(cx).map_err(io::Error::other)
    }

    fn poll_read(
        &mut self,
        cx: &mut TaskContext<'_>,
        frames: &mut dyn FnMut(ClientFrame<'_>),
    ) -> Poll<Inbound> {
        let inbound = match ready!(self.poll_next(cx)) {
            Some(Ok(Message::Text(text))) => {
                frames(ClientFrame::Text(&text));
                Inbound::Heard
            }
            Some(Ok(Message::Binary(data))) => {
                frames(ClientFrame::Binary(&data));
                Inbound::Heard
            }
            Some(Ok(Message::Close(_))) => {
                // tungstenite has queued its answer.
                self.close_sent = true;
                Inbound::Closed { answered: true }
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => Inbound::Heard,
            Some(Err(error)) => broken(error),
            None => Inbound::Closed { answered: false },
        };
        Poll::Ready(inbound)
    }

    /// Our close frame (unless we are answering the client's), then the
    /// client's answer: tungstenite ends the stream when it arrives.
    fn poll_close(&mut self, cx: &mut TaskContext<'_>, code: u16, reason: &str) -> Poll<()> {
        if !self.close_sent {
            let frame = CloseFrame {
                code: CloseCode::from(code),
                reason: reason.to_string().into(),
            };
            if self.start_close(cx, frame).is_err() {
                return Poll::Ready(());
            }
            self.close_sent = true;
        }
        if let Poll::Ready(Err(_)) = self.poll_flush_ws(cx) {
            return Poll::Ready(());
        }
        loop {
            match ready!(self.poll_next(cx)) {
                None | Some(Err(_)) => return Poll::Ready(()),
                Some(Ok(_)) => continue,
            }
        }
    }
}

/// What a tungstenite error means for the connection.
fn broken(error: WsError) -> Inbound {
    match error {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => {
            Inbound::Broken(ErrorCode::MessageTooBig)
        }
        WsError::Capacity(_) | WsError::Protocol(_) | WsError::AttackAttempt => {
            Inbound::Broken(ErrorCode::ProtocolError)
        }
        WsError::Utf8(_) => Inbound::Broken(ErrorCode::InvalidPayload),
        _ => Inbound::Failed,
    }
}

/// The socket as blocking-style I/O for tungstenite: "not ready" becomes
/// `WouldBlock`, with the task's waker registered for when it is.
struct Io<'a, 'b> {
    stream: &'a mut TcpStream,
    cx: &'a mut TaskContext<'b>,
}

impl Read for Io<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut buf = ReadBuf::new(buf);
        match Pin::new(&mut *self.stream).poll_read(self.cx, &mut buf) {
            Poll::Ready(Ok(())) => Ok(buf.filled().len()),
            Poll::Ready(Err(error)) => Err(error),
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for Io<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match Pin::new(&mut *self.stream).poll_write(self.cx, buf) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match Pin::new(&mut *self.stream).poll_flush(self.cx) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}
