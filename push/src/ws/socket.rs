//! A WebSocket on a `TcpStream`, driven straight from the session's poll.
//!
//! tungstenite's `WebSocketContext` does the protocol (reading frames,
//! answering Pings, the close handshake) over any `Read + Write`. Here that
//! is the session's own socket seen through [`Io`], which turns "would
//! block" into `WouldBlock` after registering the session task's waker.
//! Compared with tokio-tungstenite's `WebSocketStream`, this keeps no waker
//! proxies: one task polls everything with one waker, so none is needed, and
//! each connection is about 120 bytes smaller.

use std::{
    io::{self, IoSlice, Read, Write},
    pin::Pin,
    task::{Context as TaskContext, Poll},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_tungstenite::tungstenite::{
    Error as WsError, Message,
    protocol::{CloseFrame, Role, WebSocketConfig, WebSocketContext},
};

pub(crate) struct WsSocket {
    stream: TcpStream,
    ws: WebSocketContext,
    /// Set once tungstenite reported the connection closed or broken.
    ended: bool,
}

impl WsSocket {
    pub fn new(stream: TcpStream, read_ahead: Vec<u8>, config: WebSocketConfig) -> Self {
        Self {
            stream,
            ws: WebSocketContext::from_partially_read(read_ahead, Role::Server, Some(config)),
            ended: false,
        }
    }

    /// The next frame from the client; `None` once the connection is closed.
    pub fn poll_next(
        &mut self,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Message, WsError>>> {
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
    pub fn poll_flush(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), WsError>> {
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

    /// Queues our close frame; [`WsSocket::poll_flush`] sends it.
    pub fn start_close(
        &mut self,
        cx: &mut TaskContext<'_>,
        frame: CloseFrame,
    ) -> Result<(), WsError> {
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

    /// Writes Herald's own, already framed bytes.
    pub fn poll_write_vectored(
        &mut self,
        cx: &mut TaskContext<'_>,
        slices: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, slices)
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
