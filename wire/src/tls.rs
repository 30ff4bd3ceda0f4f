//! A TLS connection after its handshake: the record layer and the few
//! bytes that must outlive one read or write, none of them while idle.
//!
//! Invariants:
//! - Records are read into [`READ_RECORDS`] and sealed into
//!   [`WRITE_RECORDS`], one of each per worker thread; a connection keeps
//!   bytes only when they cannot be finished within the call: the start of
//!   a record not all read yet (`partial`), plaintext its reader had no room
//!   for (`unread`), and a sealed record the socket did not take (`unsent`).
//!   Each is freed as soon as it is empty, so an idle connection holds the
//!   keys alone (`records.rs`).
//! - A write seals at most one record and reports its plaintext as written
//!   once sealed: what the socket did not take waits in `unsent` and goes
//!   out before anything else, so that a record is never sealed twice.
//! - A borrow of either thread buffer lasts one call and awaits nothing.

use std::{
    cell::RefCell,
    io::{self, IoSlice},
    task::{Context, Poll, ready},
};

use thin_vec::ThinVec;
use tokio::{io::ReadBuf, net::TcpStream};

use crate::records::{MAX_OVERHEAD, MAX_PLAINTEXT, MAX_RECORD, Opened, RecordError, Records};

/// Ciphertext one read takes: at least the largest record.
const READ_BYTES: usize = 2 * MAX_RECORD;

thread_local! {
    /// Every TLS read on this thread lands here, and its records are opened
    /// in place.
    static READ_RECORDS: RefCell<Box<[u8]>> =
        RefCell::new(vec![0; READ_BYTES].into_boxed_slice());
    /// Every record sealed on this thread is built here.
    static WRITE_RECORDS: RefCell<Vec<u8>> =
        RefCell::new(Vec::with_capacity(MAX_PLAINTEXT + MAX_OVERHEAD));
}

pub(crate) struct Tls {
    records: Records,
    /// The start of a record whose end has not arrived.
    partial: ThinVec<u8>,
    /// Plaintext opened and not taken yet.
    unread: ThinVec<u8>,
    /// A sealed record, from `unsent_at` on, that the socket has not taken.
    unsent: ThinVec<u8>,
    unsent_at: u32,
    /// The peer's `close_notify` was read: the end of its stream.
    read_closed: bool,
    /// Ours is sealed.
    close_sealed: bool,
}

fn io_error(error: RecordError) -> io::Error {
    let kind = match error {
        RecordError::KeyExhausted | RecordError::Unsupported => io::ErrorKind::Other,
        _ => io::ErrorKind::InvalidData,
    };
    io::Error::new(kind, error)
}

impl Tls {
    /// The record layer, with ciphertext the handshake read past its end
    /// and plaintext it already opened.
    pub fn new(records: Records, leftover: &[u8], plaintext: Vec<u8>) -> io::Result<Self> {
        let mut tls = Self {
            records,
            partial: ThinVec::new(),
            unread: ThinVec::from(plaintext.as_slice()),
            unsent: ThinVec::new(),
            unsent_at: 0,
            read_closed: false,
            close_sealed: false,
        };
        if !leftover.is_empty() {
            let mut leftover = leftover.to_vec();
            let used = leftover.len();
            tls.open_all(&mut leftover, used, None)?;
        }
        Ok(tls)
    }

    /// Plaintext opened and not read yet.
    pub fn unread(&self) -> &[u8] {
        &self.unread
    }

    /// Reads plaintext into `buf`: what is unread first, else records from
    /// the socket. An empty read is the end of the stream.
    pub fn poll_read(
        &mut self,
        tcp: &TcpStream,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.unread.is_empty() {
                let take = self.unread.len().min(buf.remaining());
                buf.put_slice(&self.unread[..take]);
                if take == self.unread.len() {
                    self.unread = ThinVec::new();
                } else {
                    self.unread.drain(..take);
                }
                return Poll::Ready(Ok(()));
            }
            if self.read_closed {
                return Poll::Ready(Ok(()));
            }
            let before = buf.filled().len();
            let ended = ready!(self.poll_fill(tcp, cx, Some(buf)))?;
            if ended || buf.filled().len() > before || !self.unread.is_empty() {
                return Poll::Ready(Ok(()));
            }
        }
    }

    /// Reads records from the socket into `unread` until it holds
    /// something, or the stream ended (`true`).
    pub fn poll_fill_unread(
        &mut self,
        tcp: &TcpStream,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<bool>> {
        loop {
            if self.read_closed {
                return Poll::Ready(Ok(true));
            }
            let before = self.unread.len();
            if ready!(self.poll_fill(tcp, cx, None))? {
                return Poll::Ready(Ok(true));
            }
            if self.unread.len() > before {
                return Poll::Ready(Ok(false));
            }
        }
    }

    /// One read from the socket: its whole records opened, their plaintext
    /// into `buf` while it has room, the rest into `unread`. `true` when
    /// the socket reached its end.
    fn poll_fill(
        &mut self,
        tcp: &TcpStream,
        cx: &mut Context<'_>,
        buf: Option<&mut ReadBuf<'_>>,
    ) -> Poll<io::Result<bool>> {
        READ_RECORDS.with_borrow_mut(|input| {
            let kept = self.partial.len();
            input[..kept].copy_from_slice(&self.partial);
            let read = loop {
                ready!(tcp.poll_read_ready(cx))?;
                match tcp.try_read(&mut input[kept..]) {
                    Ok(read) => break read,
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(error) => return Poll::Ready(Err(error)),
                }
            };
            if read == 0 {
                // The end without a close_notify: a truncation to a strict
                // client, the usual end to a push server.
                self.partial = ThinVec::new();
                return Poll::Ready(Ok(true));
            }
            self.partial = ThinVec::new();
            self.open_all(input, kept + read, buf)?;
            Poll::Ready(Ok(false))
        })
    }

    /// Opens every whole record in `input[..used]`; keeps the start of an
    /// unfinished one in `partial`.
    fn open_all(
        &mut self,
        input: &mut [u8],
        used: usize,
        mut buf: Option<&mut ReadBuf<'_>>,
    ) -> io::Result<()> {
        let mut at = 0;
        while at < used && !self.read_closed {
            let rest = &mut input[at..used];
            let Some(len) = Records::record_len(rest).map_err(io_error)? else {
                break;
            };
            if rest.len() < len {
                break;
            }
            match self.records.open(&mut rest[..len]).map_err(io_error)? {
                Opened::Data(range) => {
                    let plain = &rest[range];
                    let room = match (&buf, self.unread.is_empty()) {
                        (Some(buf), true) => buf.remaining().min(plain.len()),
                        _ => 0,
                    };
                    if let Some(buf) = buf.as_deref_mut() {
                        buf.put_slice(&plain[..room]);
                    }
                    self.unread.extend_from_slice(&plain[room..]);
                }
                Opened::CloseNotify => self.read_closed = true,
            }
            at += len;
        }
        if at < used && !self.read_closed {
            self.partial = ThinVec::from(&input[at..used]);
        }
        Ok(())
    }

    /// Writes out the sealed bytes the socket has not taken yet.
    pub fn poll_flush(&mut self, tcp: &TcpStream, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while (self.unsent_at as usize) < self.unsent.len() {
            ready!(tcp.poll_write_ready(cx))?;
            match tcp.try_write(&self.unsent[self.unsent_at as usize..]) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(sent) => self.unsent_at += sent as u32,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
        if !self.unsent.is_empty() {
            self.unsent = ThinVec::new();
            self.unsent_at = 0;
        }
        Poll::Ready(Ok(()))
    }

    /// Seals up to one record of `slices` and sends it; what the socket
    /// does not take is kept and counts as written.
    pub fn poll_write_vectored(
        &mut self,
        tcp: &TcpStream,
        cx: &mut Context<'_>,
        slices: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_flush(tcp, cx))?;
        if slices.iter().all(|slice| slice.is_empty()) {
            return Poll::Ready(Ok(0));
        }
        if self.close_sealed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        // Nothing is sealed for a socket that would not take it.
        ready!(tcp.poll_write_ready(cx))?;
        WRITE_RECORDS.with_borrow_mut(|out| {
            out.clear();
            let taken = self.records.seal_data(slices, out).map_err(io_error)?;
            self.send_or_keep(tcp, out)?;
            Poll::Ready(Ok(taken))
        })
    }

    /// Seals our `close_notify` (once) and writes out what is unsent.
    pub fn poll_close_notify(
        &mut self,
        tcp: &TcpStream,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.close_sealed {
            ready!(self.poll_flush(tcp, cx))?;
            self.close_sealed = true;
            WRITE_RECORDS.with_borrow_mut(|out| {
                out.clear();
                self.records.seal_close_notify(out).map_err(io_error)?;
                self.send_or_keep(tcp, out)
            })?;
        }
        self.poll_flush(tcp, cx)
    }

    /// Sends `sealed`; keeps what the socket did not take.
    fn send_or_keep(&mut self, tcp: &TcpStream, sealed: &[u8]) -> io::Result<()> {
        let sent = match tcp.try_write(sealed) {
            Ok(sent) => sent,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => 0,
            Err(error) => return Err(error),
        };
        if sent < sealed.len() {
            self.unsent = ThinVec::from(&sealed[sent..]);
            self.unsent_at = 0;
        }
        Ok(())
    }
}
