//! A Mercure update as Herald stores it in a site's Mercure channel: what
//! subscribers are picked by (its topics, whether it is private) in front,
//! then its whole SSE event, encoded once when it was published.
//!
//! ```text
//! M1\n                      private (M0: public)
//! https://example.com/a\n   each topic on its own line, the canonical one first
//! \n
//! id: urn:uuid:…\n          the event every Mercure subscriber is sent, as is
//! event: …\n
//! retry: …\n
//! data: …\n
//! \n
//! ```
//!
//! The stored bytes are the encoding: a subscriber's frame is a slice of
//! them (`Bytes::slice`, no copy), so Mercure needs no slot of
//! `Message::encoded`. Topics, ids and types never hold a line break
//! ([`check_line`]), which keeps the layout unambiguous and the event
//! unforgeable. The first byte is never NUL, so engines do not take the
//! bytes for a tagged message (`fanout::message`).

use bytes::{BufMut, Bytes, BytesMut};

use crate::sse::event::data_lines;

/// An update to store, as a publisher sent it (checked by the publish route).
#[derive(Debug, Clone, Copy)]
pub struct Update<'a> {
    /// The canonical topic first, then its alternates.
    pub topics: &'a [String],
    pub private: bool,
    pub id: &'a str,
    /// The SSE `event:` type.
    pub kind: Option<&'a str>,
    /// The SSE `retry:` delay, in milliseconds.
    pub retry: Option<u64>,
    pub data: &'a str,
}

/// Whether `text` may be a topic, an id or a type: one line, not empty.
pub fn check_line(text: &str) -> bool {
    !text.is_empty() && !text.contains(['\n', '\r', '\0'])
}

impl Update<'_> {
    /// The bytes to publish. Every field passed [`check_line`].
    pub fn store(&self) -> Bytes {
        let topics: usize = self.topics.iter().map(|t| t.len() + 1).sum();
        let mut out = BytesMut::with_capacity(topics + self.data.len() + self.id.len() + 64);
        out.put_slice(if self.private { b"M1\n" } else { b"M0\n" });
        for topic in self.topics {
            out.put_slice(topic.as_bytes());
            out.put_u8(b'\n');
        }
        out.put_u8(b'\n');
        out.put_slice(b"id: ");
        out.put_slice(self.id.as_bytes());
        out.put_u8(b'\n');
        if let Some(kind) = self.kind {
            out.put_slice(b"event: ");
            out.put_slice(kind.as_bytes());
            out.put_u8(b'\n');
        }
        if let Some(retry) = self.retry {
            out.put_slice(format!("retry: {retry}\n").as_bytes());
        }
        data_lines(self.data.as_bytes(), &mut out);
        out.put_u8(b'\n');
        out.freeze()
    }
}

/// A stored update, read in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored<'a> {
    pub private: bool,
    /// The topics, one per line.
    topics: &'a str,
    /// The update's id.
    pub id: &'a str,
    /// Where its SSE event starts in the stored bytes.
    pub frame_start: usize,
}

impl<'a> Stored<'a> {
    /// Reads stored bytes; `None` for bytes that are not an update (nothing
    /// but Herald's Mercure route publishes to the channel, so only a
    /// future format would be).
    pub fn read(stored: &'a [u8]) -> Option<Self> {
        let private = match stored.get(..3)? {
            b"M1\n" => true,
            b"M0\n" => false,
            _ => return None,
        };
        let rest = &stored[3..];
        let end = rest.windows(2).position(|pair| pair == b"\n\n")?;
        let topics = std::str::from_utf8(&rest[..end]).ok()?;
        let frame_start = 3 + end + 2;
        let frame = stored[frame_start..].strip_prefix(b"id: ")?;
        let id_end = frame.iter().position(|&b| b == b'\n')?;
        let id = std::str::from_utf8(&frame[..id_end]).ok()?;
        Some(Self {
            private,
            topics,
            id,
            frame_start,
        })
    }

    pub fn topics(&self) -> impl Iterator<Item = &'a str> + Clone {
        self.topics.split('\n')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_updates_read_back() {
        let topics = vec!["https://example.com/a".to_string(), "b".into()];
        let update = Update {
            topics: &topics,
            private: true,
            id: "urn:uuid:1",
            kind: Some("note"),
            retry: Some(500),
            data: "line 1\nline 2",
        };
        let stored = update.store();
        let read = Stored::read(&stored).unwrap();
        assert!(read.private);
        assert_eq!(read.id, "urn:uuid:1");
        assert_eq!(
            read.topics().collect::<Vec<_>>(),
            ["https://example.com/a", "b"]
        );
        assert_eq!(
            &stored[read.frame_start..],
            b"id: urn:uuid:1\nevent: note\nretry: 500\ndata: line 1\ndata: line 2\n\n"
        );
        let public = Update {
            private: false,
            kind: None,
            retry: None,
            data: "",
            ..update
        };
        let stored = public.store();
        let read = Stored::read(&stored).unwrap();
        assert!(!read.private);
        assert_eq!(&stored[read.frame_start..], b"id: urn:uuid:1\ndata: \n\n");
    }

    #[test]
    fn other_bytes_are_no_update() {
        for bytes in [
            &b""[..],
            b"{}",
            b"M1\n",
            b"M2\na\n\nid: x\n",
            b"M0\na\n\ndata: x\n\n",
        ] {
            assert_eq!(Stored::read(bytes), None, "{bytes:?}");
        }
        assert!(check_line("https://example.com/a"));
        assert!(!check_line(""));
        assert!(!check_line("a\nid: forged"));
        assert!(!check_line("a\r"));
    }
}
