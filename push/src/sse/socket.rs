//! The SSE transport's link: a socket that carries one response body.
//!
//! The socket is read only to notice the client hanging up; whatever a
//! client sends after its request is discarded through a small stack buffer.

use std::{
    pin::Pin,
    task::{Context as TaskContext, Poll},
};

use tokio::io::ReadBuf;
use wire::Socket;

use crate::session::{Frames, Inbound, Link};

pub struct SseSocket<S> {
    socket: S,
}

impl<S: Socket> SseSocket<S> {
    /// `socket` should have `TCP_NODELAY` (Herald's listener sets it once,
    /// on the listening socket, and every accepted socket inherits it).
    pub(crate) fn new(socket: S) -> Self {
        Self { socket }
    }
}

impl<S: Socket> Link for SseSocket<S> {
    type Socket = S;

    fn socket(&mut self) -> &mut S {
        &mut self.socket
    }

    fn poll_read(&mut self, cx: &mut TaskContext<'_>, _frames: &mut dyn Frames) -> Poll<Inbound> {
        let mut scratch = [0u8; 64];
        loop {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.socket).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                    return Poll::Ready(Inbound::Closed { answered: false });
                }
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(_)) => return Poll::Ready(Inbound::Failed),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// The body ends with the connection: tell the client the stream is
    /// complete, as far as the socket still lets us.
    fn poll_close(&mut self, cx: &mut TaskContext<'_>, _code: u16, _reason: &str) -> Poll<()> {
        match Pin::new(&mut self.socket).poll_shutdown(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => Poll::Ready(()),
        }
    }
}
