//! A subscriber's Server-Sent Events stream: the request, and the receive
//! path, which parses every event of a read in place.
//!
//! Invariants:
//! - An event's fields are slices of the [`Inbox`]; only an event with
//!   several `data:` lines is joined, in a buffer the stream keeps.
//! - The last event id is kept in one `String`, overwritten in place.
//! - Events end at a blank line (`\n\n`), as Herald and Nchan write them.

use std::{ops::Range, sync::LazyLock};

use anyhow::bail;
use memchr::memmem::Finder;
use tokio::io::AsyncWriteExt;

use crate::{
    http::Url,
    inbox::{Inbox, READ_SIZE},
    stream::Stream,
};

/// Largest event (or response head) the client accepts.
const MAX_EVENT: usize = 16 << 20;

static BLANK_LINE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\n\n"));

pub struct SseConn {
    stream: Stream,
    events: Events,
}

/// Events out of the bytes received.
#[derive(Default)]
struct Events {
    inbox: Inbox,
    /// The data of an event with several `data:` lines, joined by `\n`.
    joined: Vec<u8>,
    /// The id of the last event with one (Herald's `subscribed` has one too).
    last_id: Option<String>,
}

/// One event, borrowed from the stream's buffers.
#[derive(Debug, PartialEq)]
pub struct Event<'a> {
    pub kind: Option<&'a [u8]>,
    pub data: &'a [u8],
}

impl SseConn {
    /// Sends the request for `url` (with `Last-Event-ID` if given) and
    /// reads the response head, which must be `200`.
    pub async fn open(
        mut stream: Stream,
        url: &Url,
        last_event_id: Option<&str>,
    ) -> anyhow::Result<SseConn> {
        let last_event_id =
            last_event_id.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n{last_event_id}\r\n",
            url.path, url.authority
        );
        stream.write_all(request.as_bytes()).await?;
        let mut conn = SseConn {
            stream,
            events: Events {
                inbox: Inbox::with_capacity(READ_SIZE),
                ..Events::default()
            },
        };
        let head_len = loop {
            if let Some(at) = memchr::memmem::find(conn.events.inbox.unparsed(), b"\r\n\r\n") {
                break at + 4;
            }
            if conn.events.inbox.unparsed().len() > 16 << 10 || !conn.read_more().await? {
                bail!(
                    "stream closed before its head: {}",
                    String::from_utf8_lossy(conn.events.inbox.unparsed())
                );
            }
        };
        let head = &conn.events.inbox.unparsed()[..head_len];
        if !head.starts_with(b"HTTP/1.1 200") {
            bail!("unexpected answer: {}", String::from_utf8_lossy(head));
        }
        conn.events.inbox.consume(head_len);
        Ok(conn)
    }

    /// Waits for an event of type `kind`, skipping others; `false` if the
    /// stream ended first.
    pub async fn wait_for(&mut self, kind: &str) -> anyhow::Result<bool> {
        loop {
            let mut found = false;
            self.parse(|event, _| {
                found = event.kind == Some(kind.as_bytes());
                !found
            });
            if found {
                return Ok(true);
            }
            if !self.read_more().await? {
                return Ok(false);
            }
        }
    }

    /// The id of the last event with one.
    pub fn last_id(&self) -> Option<&str> {
        self.events.last_id.as_deref()
    }

    /// Hands every complete event with data (comments and `retry:` alone are
    /// skipped) to `on_event`, with the last event id then, until it returns
    /// `false`; the events after stay in the buffer.
    pub fn parse(&mut self, on_event: impl FnMut(&Event, Option<&str>) -> bool) {
        self.events.parse(on_event);
    }

    /// Reads once more; `false` once the stream ended. Cancel-safe.
    pub async fn read_more(&mut self) -> anyhow::Result<bool> {
        let inbox = &mut self.events.inbox;
        if inbox.unparsed().len() > MAX_EVENT {
            bail!("an SSE event over {MAX_EVENT} bytes");
        }
        Ok(inbox.read_more(&mut self.stream, 0).await?)
    }
}

impl Events {
    /// [`SseConn::parse`].
    fn parse(&mut self, mut on_event: impl FnMut(&Event, Option<&str>) -> bool) {
        while let Some(len) = BLANK_LINE.find(self.inbox.unparsed()) {
            let start = self.inbox.position();
            let raw: Range<usize> = start..start + len;
            self.inbox.consume(len + 2);
            let event = parse_event(self.inbox.at(raw), &mut self.last_id, &mut self.joined);
            if let Some(event) = event
                && !on_event(&event, self.last_id.as_deref())
            {
                return;
            }
        }
    }
}

/// Parses one SSE event (without its closing blank line), updating the last
/// id in place; `None` for an event without data.
fn parse_event<'a>(
    raw: &'a [u8],
    last_id: &mut Option<String>,
    joined: &'a mut Vec<u8>,
) -> Option<Event<'a>> {
    let mut kind = None;
    let mut data: Option<&'a [u8]> = None;
    let mut several = false;
    for line in raw.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let (field, value) = match memchr::memchr(b':', line) {
            Some(0) | None => continue,
            Some(at) => {
                let value = &line[at + 1..];
                (&line[..at], value.strip_prefix(b" ").unwrap_or(value))
            }
        };
        match field {
            b"id" => {
                let id = last_id.get_or_insert_with(String::new);
                id.clear();
                id.push_str(&String::from_utf8_lossy(value));
            }
            b"event" => kind = Some(value),
            b"data" => match data {
                None => data = Some(value),
                Some(first) => {
                    if !several {
                        joined.clear();
                        joined.extend_from_slice(first);
                        several = true;
                    }
                    joined.push(b'\n');
                    joined.extend_from_slice(value);
                }
            },
            _ => {}
        }
    }
    let data = if several { &joined[..] } else { data? };
    Some(Event { kind, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events() {
        // (raw event, expected (event type, data), expected last id)
        type Case<'a> = (
            &'a [u8],
            Option<(Option<&'a [u8]>, &'a [u8])>,
            Option<&'a str>,
        );
        let cases: &[Case] = &[
            (b"retry: 2000\n", None, None),
            (b": hi\n", None, None),
            (
                b"id: 1f:3\ndata: {\"t\":1}\n",
                Some((None, b"{\"t\":1}")),
                Some("1f:3"),
            ),
            (
                b"id: a:1\nevent: subscribed\ndata: {}\n",
                Some((Some(b"subscribed"), b"{}")),
                Some("a:1"),
            ),
            (b"data: a\r\ndata: b\n", Some((None, b"a\nb")), None),
            (b"data: a\ndata:\ndata: c", Some((None, b"a\n\nc")), None),
        ];
        for (raw, expect, id) in cases {
            let mut last_id = Some("before".to_string());
            let mut joined = b"stale".to_vec();
            let got = parse_event(raw, &mut last_id, &mut joined);
            let want = expect.map(|(kind, data)| Event { kind, data });
            assert_eq!(got, want, "{}", String::from_utf8_lossy(raw));
            assert_eq!(last_id.as_deref(), Some(id.unwrap_or("before")));
        }
    }

    /// A stream read in pieces of every size gives the same events.
    #[test]
    fn parses_events_split_across_reads() {
        let stream: &[u8] = b": ping\n\nretry: 2000\n\nid: e:1\nevent: subscribed\ndata: {}\n\n\
            id: e:2\ndata: {\"t\":1}\n\nid: e:3\ndata: a\ndata: b\n\n: ping\n\n\
            event: reconnect\ndata: {}\n\ndata: partial";
        /// (event type, data, last id)
        type Seen = (Option<Vec<u8>>, Vec<u8>, Option<String>);
        let want: Vec<Seen> = vec![
            (
                Some(b"subscribed".to_vec()),
                b"{}".to_vec(),
                Some("e:1".into()),
            ),
            (None, br#"{"t":1}"#.to_vec(), Some("e:2".into())),
            (None, b"a\nb".to_vec(), Some("e:3".into())),
            (
                Some(b"reconnect".to_vec()),
                b"{}".to_vec(),
                Some("e:3".into()),
            ),
        ];
        for split in 1..=stream.len() {
            let mut events = Events::default();
            let mut got = Vec::new();
            for read in stream.chunks(split) {
                events.inbox.push(read);
                events.parse(|event, id| {
                    got.push((
                        event.kind.map(<[u8]>::to_vec),
                        event.data.to_vec(),
                        id.map(str::to_string),
                    ));
                    true
                });
                events.inbox.compact();
            }
            assert_eq!(got, want, "reads of {split}");
            assert_eq!(events.inbox.unparsed(), b"data: partial");
        }
    }
}
