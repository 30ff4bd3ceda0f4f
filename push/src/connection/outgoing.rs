//! A connection's queue of encoded bytes on their way to the socket.
//!
//! Invariants:
//! - Chunks say where frames end: a frame may be several chunks (an SSE
//!   stream's own `id:` line, then the event every subscriber shares), and
//!   a close never cuts a frame that has started to go out. A cut event
//!   would hand EventSource an id whose data it never got; a cut WebSocket
//!   frame would break the framing under the close frame.
//! - Nothing is allocated while idle: the queue is a `VecDeque` that owns no
//!   memory until something is queued, and all of it is given back once it
//!   is written, however little it was.

use std::{
    collections::VecDeque,
    io::{self, IoSlice},
    task::{Context as TaskContext, Poll, ready},
};

use bytes::{Buf, Bytes};
use prometheus::IntCounter;

/// How many chunks one vectored write gathers at most.
const MAX_IOVECS: usize = 64;

/// Encoded bytes waiting for the socket, oldest first.
#[derive(Default)]
pub struct Outgoing {
    chunks: VecDeque<Chunk>,
}

struct Chunk {
    bytes: Bytes,
    /// Whether this chunk is the last of its frame.
    ends_frame: bool,
    /// Whether part of this chunk's frame has gone out already (this chunk
    /// partly, or an earlier chunk of the frame whole). Kept in the chunk,
    /// not beside the queue, so that the queue stays four words.
    started: bool,
}

impl Outgoing {
    /// Queues a whole frame, or the last chunk of one.
    pub fn push(&mut self, bytes: Bytes) {
        self.chunks.push_back(Chunk {
            bytes,
            ends_frame: true,
            started: false,
        });
    }

    /// Queues a chunk that the next one continues.
    pub fn push_part(&mut self, bytes: Bytes) {
        self.chunks.push_back(Chunk {
            bytes,
            ends_frame: false,
            started: false,
        });
    }

    /// Queues the rest of a frame that another writer began (the hub, on a
    /// parked connection): it has started, so nothing may cut it.
    pub(crate) fn push_rest(&mut self, bytes: Bytes) {
        self.chunks.push_back(Chunk {
            bytes,
            ends_frame: true,
            started: true,
        });
    }

    /// Queues `bytes` ahead of everything else (an HTTP response head).
    pub(crate) fn push_front(&mut self, bytes: Bytes) {
        self.chunks.push_front(Chunk {
            bytes,
            ends_frame: true,
            started: false,
        });
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    /// Whether a frame has started to go out and not finished: nothing else
    /// may be written to the socket in between.
    pub fn mid_frame(&self) -> bool {
        self.chunks.front().is_some_and(|chunk| chunk.started)
    }

    /// Drops everything queued except the rest of a frame already on its way.
    pub(crate) fn keep_started_frame(&mut self) {
        let keep = if self.mid_frame() {
            self.chunks
                .iter()
                .position(|chunk| chunk.ends_frame)
                .map_or(0, |end| end + 1)
        } else {
            0
        };
        self.chunks.truncate(keep);
    }

    /// Writes queued chunks with `write` (vectored, up to [`MAX_IOVECS`] at
    /// a time), counting each call in `writes`. Ready(Ok) once all is written.
    pub(crate) fn poll_write(
        &mut self,
        cx: &mut TaskContext<'_>,
        writes: &IntCounter,
        mut write: impl FnMut(&mut TaskContext<'_>, &[IoSlice<'_>]) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<()>> {
        while !self.chunks.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let count = self.chunks.len().min(MAX_IOVECS);
            for (slice, chunk) in slices.iter_mut().zip(self.chunks.iter()) {
                *slice = IoSlice::new(&chunk.bytes);
            }
            let written = ready!(write(cx, &slices[..count]))?;
            writes.inc();
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.advance(written);
        }
        // Give the queue's memory back once it is written, however little:
        // an idle connection would otherwise keep the four chunks (160 B)
        // its opening words grew the queue to for as long as it lives.
        self.chunks = VecDeque::new();
        Poll::Ready(Ok(()))
    }

    /// The next whole chunk, for a writer that takes chunks one by one (an
    /// HTTP response body).
    pub(crate) fn pop(&mut self) -> Option<Bytes> {
        let chunk = self.chunks.pop_front()?;
        self.mark_continued(&chunk);
        Some(chunk.bytes)
    }

    fn advance(&mut self, mut written: usize) {
        while written > 0 {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            if written >= front.bytes.len() {
                written -= front.bytes.len();
                if let Some(chunk) = self.chunks.pop_front() {
                    self.mark_continued(&chunk);
                }
            } else {
                front.bytes.advance(written);
                front.started = true;
                written = 0;
            }
        }
    }

    /// After `sent` went out whole: the chunk that continues its frame has started.
    fn mark_continued(&mut self, sent: &Chunk) {
        if !sent.ends_frame
            && let Some(next) = self.chunks.front_mut()
        {
            next.started = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(parts: &[(&'static str, bool)]) -> Outgoing {
        let mut out = Outgoing::default();
        for &(text, ends) in parts {
            if ends {
                out.push(Bytes::from_static(text.as_bytes()));
            } else {
                out.push_part(Bytes::from_static(text.as_bytes()));
            }
        }
        out
    }

    fn texts(out: &Outgoing) -> Vec<&[u8]> {
        out.chunks.iter().map(|c| &c.bytes[..]).collect()
    }

    #[test]
    fn a_close_keeps_only_the_rest_of_a_started_frame() {
        // Nothing started: everything goes.
        let mut out = queue(&[("id:1\n", false), ("data\n\n", true), ("x", true)]);
        out.keep_started_frame();
        assert!(out.is_empty());

        // The id line went out: its event's data stays, the next event goes.
        let mut out = queue(&[("id:1\n", false), ("data\n\n", true), ("x", true)]);
        out.advance(5);
        assert!(out.mid_frame());
        out.keep_started_frame();
        assert_eq!(texts(&out), [&b"data\n\n"[..]]);

        // Half a frame went out: the rest of it stays.
        let mut out = queue(&[("frame", true), ("next", true)]);
        out.advance(2);
        out.keep_started_frame();
        assert_eq!(texts(&out), [&b"ame"[..]]);

        // Whole frames went out: nothing is started.
        let mut out = queue(&[("frame", true), ("next", true)]);
        out.advance(5);
        assert!(!out.mid_frame());
    }

    #[test]
    fn popping_chunks_tracks_frames_too() {
        let mut out = queue(&[("id:1\n", false), ("data\n\n", true)]);
        assert_eq!(out.pop().as_deref(), Some(&b"id:1\n"[..]));
        assert!(out.mid_frame());
        assert_eq!(out.pop().as_deref(), Some(&b"data\n\n"[..]));
        assert!(!out.mid_frame());
    }
}
