//! Messages out of the server's frames: a connection's [`Inbox`] parsed in
//! place, fragments reassembled, Pings answered.
//!
//! Invariants:
//! - A message in one frame is handed on as a slice of the inbox (no copy,
//!   no allocation); only a fragmented message is assembled, in a buffer
//!   the reader keeps for the next one.
//! - Control frames may come between the fragments of a message (RFC 6455
//!   section 5.4); a data frame that starts a message inside another, or a
//!   continuation with nothing to continue, is an error.
//! - Every Ping gets a Pong with its payload, queued in `unsent` for the
//!   connection to write.

use std::ops::Range;

use anyhow::bail;

use super::{MAX_PAYLOAD, header, opcode, write_masked};
use crate::inbox::Inbox;

/// Most queued Pong bytes before the connection counts as stuck.
const MAX_UNSENT: usize = 64 << 10;

pub struct Reader {
    pub inbox: Inbox,
    /// The message being assembled, while `fragmented`.
    fragments: Vec<u8>,
    fragmented: bool,
    /// Pongs for the connection to write.
    pub unsent: Vec<u8>,
}

/// Why [`Reader::parse`] stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Every complete frame was parsed; the rest needs another read.
    More,
    /// The callback asked to stop; the frames after it stay in the inbox.
    Stopped,
    /// The server sent Close.
    Closed,
}

/// Where a complete message is.
enum Message {
    Inbox(Range<usize>),
    Fragments,
}

impl Reader {
    pub fn new(inbox: Inbox) -> Self {
        Reader {
            inbox,
            fragments: Vec::new(),
            fragmented: false,
            unsent: Vec::new(),
        }
    }

    /// Hands every complete message in the inbox to `on_message`, in order,
    /// until it returns `false`.
    pub fn parse(&mut self, mut on_message: impl FnMut(&[u8]) -> bool) -> anyhow::Result<Flow> {
        loop {
            let message = match self.next_message()? {
                Next::More => return Ok(Flow::More),
                Next::Closed => return Ok(Flow::Closed),
                Next::Message(message) => message,
            };
            let text = match message {
                Message::Inbox(range) => self.inbox.at(range),
                Message::Fragments => &self.fragments,
            };
            if !on_message(text) {
                return Ok(Flow::Stopped);
            }
        }
    }

    /// The bytes the unparsed frame needs in all (0 without a header yet), so
    /// that the next read has room for the whole of it.
    pub fn need(&self) -> anyhow::Result<usize> {
        Ok(header(self.inbox.unparsed())?.map_or(0, |h| h.frame_len()))
    }

    fn next_message(&mut self) -> anyhow::Result<Next> {
        loop {
            let bytes = self.inbox.unparsed();
            let Some(header) = header(bytes)? else {
                return Ok(Next::More);
            };
            if bytes.len() < header.frame_len() {
                return Ok(Next::More);
            }
            let start = self.inbox.position() + header.header_len;
            let payload = start..start + header.payload_len;
            self.inbox.consume(header.frame_len());
            match header.opcode {
                opcode::TEXT | opcode::BINARY => {
                    if self.fragmented {
                        bail!("a new WebSocket message began inside a fragmented one");
                    }
                    if header.fin {
                        return Ok(Next::Message(Message::Inbox(payload)));
                    }
                    self.fragments.clear();
                    self.fragments.extend_from_slice(self.inbox.at(payload));
                    self.fragmented = true;
                }
                opcode::CONTINUATION => {
                    if !self.fragmented {
                        bail!("a WebSocket continuation frame with no message to continue");
                    }
                    if self.fragments.len() + header.payload_len > MAX_PAYLOAD {
                        bail!("a fragmented WebSocket message over {MAX_PAYLOAD} bytes");
                    }
                    self.fragments.extend_from_slice(self.inbox.at(payload));
                    if header.fin {
                        self.fragmented = false;
                        return Ok(Next::Message(Message::Fragments));
                    }
                }
                opcode::CLOSE => return Ok(Next::Closed),
                opcode::PING => {
                    if self.unsent.len() > MAX_UNSENT {
                        bail!("the server's Pings go unanswered: the socket takes no Pongs");
                    }
                    write_masked(&mut self.unsent, opcode::PONG, self.inbox.at(payload));
                }
                // Pongs answer nothing the bench sent; `header` refused the
                // reserved opcodes.
                _ => {}
            }
        }
    }
}

enum Next {
    Message(Message),
    Closed,
    More,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::tests::unmask;

    /// An unmasked server frame.
    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![first];
        match payload.len() {
            len @ 0..=125 => out.push(len as u8),
            len @ 126..=0xFFFF => {
                out.push(126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                out.push(127);
                out.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(payload);
        out
    }

    const TEXT: u8 = 0x80 | opcode::TEXT;
    const BINARY: u8 = 0x80 | opcode::BINARY;
    const PING: u8 = 0x80 | opcode::PING;
    const PONG: u8 = 0x80 | opcode::PONG;
    const CLOSE: u8 = 0x80 | opcode::CLOSE;

    /// What a reader made of some bytes.
    #[derive(Debug, Default, PartialEq)]
    struct Seen {
        messages: Vec<Vec<u8>>,
        /// The payloads of the Pongs queued, unmasked.
        pongs: Vec<Vec<u8>>,
        closed: bool,
        /// The error's text, if any.
        error: Option<String>,
    }

    /// Feeds `stream` to a reader in reads of `split` bytes (0: all at
    /// once), parsing after each read as the connection does.
    fn feed(stream: &[u8], split: usize) -> Seen {
        let mut reader = Reader::new(Inbox::default());
        let mut seen = Seen::default();
        let split = if split == 0 {
            stream.len().max(1)
        } else {
            split
        };
        for read in stream.chunks(split) {
            reader.inbox.push(read);
            match reader.parse(|m| {
                seen.messages.push(m.to_vec());
                true
            }) {
                Ok(Flow::More) => {}
                Ok(Flow::Closed) => {
                    seen.closed = true;
                    break;
                }
                Ok(Flow::Stopped) => unreachable!("the callback never stops"),
                Err(error) => {
                    seen.error = Some(error.to_string());
                    break;
                }
            }
            reader.inbox.compact();
        }
        let mut unsent = &reader.unsent[..];
        while !unsent.is_empty() {
            let len = 6 + (unsent[1] & 0x7F) as usize;
            let (first, payload) = unmask(&unsent[..len]);
            assert_eq!(first, PONG);
            seen.pongs.push(payload);
            unsent = &unsent[len..];
        }
        seen
    }

    #[test]
    fn reads_messages_from_frames() {
        let big16 = vec![b'a'; 300];
        let big64 = vec![b'b'; 70_000];
        let cat = |frames: &[Vec<u8>]| frames.concat();
        let msgs = |m: &[&[u8]]| m.iter().map(|m| m.to_vec()).collect::<Vec<_>>();
        // (name, bytes, messages, pongs, closed, piece of the error)
        type Case = (
            &'static str,
            Vec<u8>,
            Vec<Vec<u8>>,
            Vec<Vec<u8>>,
            bool,
            Option<&'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                "one text",
                frame(TEXT, b"hi"),
                msgs(&[b"hi"]),
                vec![],
                false,
                None,
            ),
            (
                "several per read",
                cat(&[frame(TEXT, b"a"), frame(BINARY, b"bc"), frame(TEXT, b"")]),
                msgs(&[b"a", b"bc", b""]),
                vec![],
                false,
                None,
            ),
            (
                "16-bit length",
                frame(TEXT, &big16),
                vec![big16.clone()],
                vec![],
                false,
                None,
            ),
            (
                "64-bit length",
                frame(BINARY, &big64),
                vec![big64.clone()],
                vec![],
                false,
                None,
            ),
            (
                "ping between messages",
                cat(&[frame(TEXT, b"1"), frame(PING, b"p!"), frame(TEXT, b"2")]),
                msgs(&[b"1", b"2"]),
                msgs(&[b"p!"]),
                false,
                None,
            ),
            (
                "pong ignored",
                frame(PONG, b"x"),
                vec![],
                vec![],
                false,
                None,
            ),
            (
                "close ends, what follows is not read",
                cat(&[
                    frame(TEXT, b"last"),
                    frame(CLOSE, b"\x03\xe8"),
                    frame(TEXT, b"after"),
                ]),
                msgs(&[b"last"]),
                vec![],
                true,
                None,
            ),
            (
                "fragments with a ping inside",
                cat(&[
                    frame(opcode::TEXT, b"he"),
                    frame(PING, b""),
                    frame(opcode::CONTINUATION, b"ll"),
                    frame(0x80, b"o"),
                    frame(TEXT, b"next"),
                ]),
                msgs(&[b"hello", b"next"]),
                msgs(&[b""]),
                false,
                None,
            ),
            (
                "continuation with nothing to continue",
                frame(0x80, b"x"),
                vec![],
                vec![],
                false,
                Some("no message to continue"),
            ),
            (
                "message inside a fragmented one",
                cat(&[frame(opcode::TEXT, b"a"), frame(TEXT, b"b")]),
                vec![],
                vec![],
                false,
                Some("inside a fragmented one"),
            ),
            (
                "masked frame",
                b"\x81\x81abcdx".to_vec(),
                vec![],
                vec![],
                false,
                Some("masked"),
            ),
        ];
        for (name, bytes, messages, pongs, closed, error) in cases {
            // Every split: all at once, byte by byte, and reads that cut
            // headers and payloads at every place in between.
            for split in [0, 1, 2, 3, 5, 7, 11, 64, 4096] {
                let seen = feed(&bytes, split);
                let want = Seen {
                    messages: messages.clone(),
                    pongs: pongs.clone(),
                    closed,
                    error: None,
                };
                match error {
                    None => assert_eq!(seen, want, "{name}, reads of {split}"),
                    Some(piece) => {
                        let got = seen.error.clone().unwrap_or_default();
                        assert!(got.contains(piece), "{name}, reads of {split}: {seen:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn stops_where_asked_and_keeps_the_rest() {
        let mut reader = Reader::new(Inbox::default());
        reader.inbox.push(
            &[
                frame(TEXT, b"welcome"),
                frame(TEXT, b"m1"),
                frame(TEXT, b"m2"),
            ]
            .concat(),
        );
        let mut first = Vec::new();
        let flow = reader
            .parse(|m| {
                first.push(m.to_vec());
                false
            })
            .unwrap();
        assert_eq!((flow, first), (Flow::Stopped, vec![b"welcome".to_vec()]));
        let mut rest = Vec::new();
        let flow = reader
            .parse(|m| {
                rest.push(m.to_vec());
                true
            })
            .unwrap();
        assert_eq!(
            (flow, rest),
            (Flow::More, vec![b"m1".to_vec(), b"m2".to_vec()])
        );
    }

    #[test]
    fn says_how_much_room_the_next_frame_needs() {
        let mut reader = Reader::new(Inbox::default());
        assert_eq!(reader.need().unwrap(), 0);
        let big = frame(BINARY, &vec![0; 70_000]);
        reader.inbox.push(&big[..12]);
        assert_eq!(reader.need().unwrap(), 70_010);
    }
}
