//! A subscriber's byte stream: plain TCP, or TLS over it (`--tls`).
//!
//! One enum rather than connections generic over their stream, so that
//! [`crate::client::Conn`] keeps one variant per transport and the code
//! that parses frames and events stays as it was. The plain arm is the
//! `TcpStream` itself, one `match` away; the TLS arm is boxed, since a
//! rustls connection is some kilobytes and most runs never make one.
//!
//! Invariant: [`Stream::try_write`] never waits, as `TcpStream::try_write`
//! does not, so that answering a Ping keeps reading cancel-safe.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll, Waker},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::client::TlsStream;

pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// Writes what the stream takes of `bytes` now, without waiting:
    /// `WouldBlock` if it takes nothing.
    ///
    /// TLS: rustls takes the plaintext into its own buffer and writes the
    /// records it makes as far as the socket takes them; what the socket
    /// did not take stays in rustls until the next [`Stream::try_flush`].
    pub fn try_write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.try_write(bytes),
            Stream::Tls(tls) => {
                // A waker that does nothing: nobody waits on this write, and
                // the connection's next read tries again anyway.
                let mut cx = Context::from_waker(Waker::noop());
                match Pin::new(&mut **tls).poll_write(&mut cx, bytes) {
                    Poll::Ready(written) => written,
                    Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
                }
            }
        }
    }

    /// Writes the TLS records rustls still holds, as far as the socket
    /// takes them, without waiting. Nothing to do on plain TCP.
    pub fn try_flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(_) => Ok(()),
            Stream::Tls(tls) => {
                let mut cx = Context::from_waker(Waker::noop());
                match Pin::new(&mut **tls).poll_flush(&mut cx) {
                    Poll::Ready(result) => result,
                    Poll::Pending => Ok(()),
                }
            }
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Stream::Tls(tls) => Pin::new(&mut **tls).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_write(cx, bytes),
            Stream::Tls(tls) => Pin::new(&mut **tls).poll_write(cx, bytes),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Stream::Tls(tls) => Pin::new(&mut **tls).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Stream::Tls(tls) => Pin::new(&mut **tls).poll_shutdown(cx),
        }
    }
}
