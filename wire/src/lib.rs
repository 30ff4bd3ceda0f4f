//! A client's socket as Herald's transports use it: plain TCP, or TLS
//! (native `wss://` and `https://`, docs/deploy.md) on the same code.
//!
//! A new connection is a [`Wire`]: plain, or a [`TlsStream`] (the socket
//! and one pointer to its record layer, `tls.rs`, which holds no buffer
//! while the connection is idle: an idle `wss://` connection costs its keys
//! and little else, docs/benchmarks.md, "Native TLS"). A session is built
//! on one or the other ([`Socket`]). The handshake is rustls'
//! (`handshake.rs`), with certificates that a reload swaps for new
//! handshakes without touching connections already open
//! (`certificates.rs`).
//!
//! What differs between the two, and only here:
//! - plain writes are vectored `sendmsg(2)` calls (`send.rs`); TLS writes
//!   seal a record first;
//! - a plain socket's request line is peeked, left in the socket; a TLS
//!   one's is opened and kept to be read again ([`Wire::peek`]);
//! - only a plain socket may be written to by the hub directly (its file
//!   descriptor, [`Socket::plain_fd`]): a TLS record must be sealed for each
//!   connection, under that connection's sequence number.

mod certificates;
mod handshake;
mod records;
mod send;
mod tls;

use std::{
    fmt, io,
    io::IoSlice,
    os::fd::{AsRawFd, RawFd},
    pin::Pin,
    task::{Context, Poll, ready},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, Interest, ReadBuf},
    net::TcpStream,
};

pub use certificates::{CertificateError, Certificates, load_certified_key};
pub use handshake::{HandshakeError, accept};
pub use records::RecordError;

use tls::Tls;

/// What a transport's link writes to and reads from: a plain socket or a
/// TLS one. A session is built for one or the other, so that a plain
/// connection carries nothing for TLS (not even a null pointer: an idle
/// session is held to its allocation class, `push/src/session.rs`).
pub trait Socket: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Writes `slices` as one vectored write (plain), or seals up to one
    /// record of them (TLS); returns how much of them is written.
    fn poll_write_slices(
        &mut self,
        cx: &mut Context<'_>,
        slices: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>>;

    /// The descriptor when bytes may be written to the socket as they are
    /// (plain), for the hub's writes to parked connections; `None` for TLS.
    fn plain_fd(&self) -> Option<RawFd>;
}

impl Socket for TcpStream {
    fn poll_write_slices(
        &mut self,
        cx: &mut Context<'_>,
        slices: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        send::poll_send_vectored(self, cx, slices)
    }

    fn plain_fd(&self) -> Option<RawFd> {
        Some(self.as_raw_fd())
    }
}

/// A TLS connection after its handshake: the socket and one pointer to
/// its record layer.
pub struct TlsStream {
    tcp: TcpStream,
    tls: Box<Tls>,
}

impl fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsStream")
            .field("tcp", &self.tcp)
            .finish_non_exhaustive()
    }
}

impl TlsStream {
    fn new(tcp: TcpStream, tls: Tls) -> Self {
        Self {
            tcp,
            tls: Box::new(tls),
        }
    }

    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }
}

impl Socket for TlsStream {
    fn poll_write_slices(
        &mut self,
        cx: &mut Context<'_>,
        slices: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.tls.poll_write_vectored(&self.tcp, cx, slices)
    }

    fn plain_fd(&self) -> Option<RawFd> {
        None
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.tls.poll_read(&this.tcp, cx, buf)
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_slices(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_slices(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.tls.poll_flush(&this.tcp, cx)
    }

    /// Our `close_notify` first, so that a client reading a body to its end
    /// (an SSE stream) sees a complete one, not a truncation.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.tls.poll_close_notify(&this.tcp, cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

/// A new connection's socket, before a session owns it: its handshake,
/// request head and answer are read and written through this.
#[derive(Debug)]
pub enum Wire {
    Plain(TcpStream),
    Tls(TlsStream),
}

impl From<TcpStream> for Wire {
    fn from(tcp: TcpStream) -> Self {
        Wire::Plain(tcp)
    }
}

impl Wire {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Wire::Plain(tcp) => tcp,
            Wire::Tls(tls) => &tls.tcp,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Wire::Tls(_))
    }

    /// Waits until the first bytes of the client's request are there, and
    /// lets `decide` look at them without taking them; `decide` answers
    /// `None` while it needs more, and must decide on [`PEEK_BYTES`]. A
    /// plain socket is peeked (the bytes stay in the socket), a TLS one
    /// opened (the plaintext stays in the record layer), so whoever reads
    /// the request next reads it whole. `Ok(None)`: the client hung up (or
    /// ended its stream) before `decide` could.
    pub async fn peek<T>(
        &mut self,
        mut decide: impl FnMut(&[u8]) -> Option<T>,
    ) -> io::Result<Option<T>> {
        match self {
            Wire::Tls(TlsStream { tcp, tls }) => loop {
                if let Some(decided) = decide(tls.unread()) {
                    return Ok(Some(decided));
                }
                let ended = std::future::poll_fn(|cx| tls.poll_fill_unread(tcp, cx)).await?;
                if ended {
                    return Ok(None);
                }
            },
            Wire::Plain(tcp) => peek_plain(tcp, decide).await,
        }
    }
}

/// The most [`Wire::peek`] shows of a plain socket.
pub const PEEK_BYTES: usize = 32;

/// The plain side of [`Wire::peek`]: `MSG_PEEK`, waiting for readiness
/// between tries, never on a timer.
async fn peek_plain<T>(
    tcp: &TcpStream,
    mut decide: impl FnMut(&[u8]) -> Option<T>,
) -> io::Result<Option<T>> {
    use nix::sys::socket::{MsgFlags, recv};
    let mut head = [0u8; PEEK_BYTES];
    loop {
        let ready = tcp.ready(Interest::READABLE).await?;
        let peeked = tcp.try_io(Interest::READABLE, || {
            let seen = recv(
                tcp.as_raw_fd(),
                &mut head,
                MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
            )
            .map_err(io::Error::from)?;
            if seen == 0 {
                return Ok(None);
            }
            if let Some(decided) = decide(&head[..seen]) {
                return Ok(Some(decided));
            }
            // Part of a head from a peer that has closed its side: the rest
            // will never come. (The closed state is final, so the next wait
            // returns at once and lands here again; it is checked after the
            // bytes so that a whole request sent with a FIN is still served.)
            if ready.is_read_closed() || seen == head.len() {
                return Ok(None);
            }
            // Only bytes seen before: "would block" clears the socket's
            // readiness, so the next wait sleeps until more bytes (or the
            // end) arrive instead of spinning on what is already here.
            Err(io::ErrorKind::WouldBlock.into())
        });
        match peeked {
            Ok(decided) => return Ok(decided),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
            Err(error) => return Err(error),
        }
    }
}

impl AsyncRead for Wire {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Wire::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Wire::Tls(tls) => Pin::new(tls).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Wire {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Wire::Plain(tcp) => tcp.poll_write_slices(cx, bufs),
            Wire::Tls(tls) => tls.poll_write_slices(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Wire::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Wire::Tls(tls) => Pin::new(tls).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Wire::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Wire::Tls(tls) => Pin::new(tls).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests;
