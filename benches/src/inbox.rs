//! A subscriber connection's receive buffer: bytes read from the socket and
//! parsed in place, several messages per read.
//!
//! Invariants:
//! - `bytes[start..]` is what has not been parsed yet; parsing only moves
//!   `start`, so a slice of a message stays valid until the next read.
//! - Bytes move only before a read, and then only the unparsed tail (at most
//!   one incomplete frame or event), to the front.
//! - A read fills the buffer up to [`READ_SIZE`] bytes, or up to the size of
//!   a larger frame whose header has arrived; the buffer shrinks back once
//!   such a frame is parsed.

use std::ops::Range;

use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes asked of the socket per read, at least. A saturated connection
/// brings some twenty 100-byte messages with their framing in one read.
pub const READ_SIZE: usize = 4096;

/// Above this, an emptied buffer is given back to the allocator.
const SHRINK_ABOVE: usize = 4 * READ_SIZE;

#[derive(Default)]
pub struct Inbox {
    bytes: Vec<u8>,
    /// Where the unparsed bytes start.
    start: usize,
}

impl Inbox {
    pub fn with_capacity(capacity: usize) -> Self {
        Inbox {
            bytes: Vec::with_capacity(capacity),
            start: 0,
        }
    }

    /// The bytes not parsed yet.
    pub fn unparsed(&self) -> &[u8] {
        &self.bytes[self.start..]
    }

    /// Bytes already parsed, by their place in the buffer (from
    /// [`Inbox::position`]): valid until the next read.
    pub fn at(&self, range: Range<usize>) -> &[u8] {
        &self.bytes[range]
    }

    /// Where [`Inbox::unparsed`] starts in the buffer.
    pub fn position(&self) -> usize {
        self.start
    }

    /// Marks `len` more bytes as parsed.
    pub fn consume(&mut self, len: usize) {
        self.start = (self.start + len).min(self.bytes.len());
    }

    /// Reads once from `stream`, with room for at least `need` unparsed bytes
    /// in all (the whole of a frame whose header has arrived); `false` at the
    /// end of the stream. Cancel-safe: nothing is lost if the read is dropped.
    pub async fn read_more(
        &mut self,
        stream: &mut (impl AsyncRead + Unpin),
        need: usize,
    ) -> std::io::Result<bool> {
        self.compact();
        if self.bytes.capacity() > SHRINK_ABOVE && need <= READ_SIZE {
            self.bytes.shrink_to(READ_SIZE.max(self.bytes.len()));
        }
        // Room for the frame in progress, or a read of READ_SIZE in all.
        let want = need.max(READ_SIZE).max(self.bytes.len() + 1);
        self.bytes.reserve(want - self.bytes.len());
        Ok(stream.read_buf(&mut self.bytes).await? > 0)
    }

    /// Moves the unparsed bytes to the front.
    pub fn compact(&mut self) {
        if self.start > 0 {
            self.bytes.drain(..self.start);
            self.start = 0;
        }
    }

    /// Appends bytes as a read would (for tests of the parsers).
    #[cfg(test)]
    pub fn push(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
    }
}
