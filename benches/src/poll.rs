//! A long-poll subscriber: one keep-alive HTTP connection that carries one
//! poll after another. Each answer is read whole, checked, and the next poll
//! is sent at once from the position the answer gave, as a browser client
//! does. Two dialects:
//! - Herald's `/poll` (docs/protocol.md): a JSON body
//!   `{"events":[…],"cursor":"…"}`; the next poll sends `cursor`. The first
//!   poll (no cursor) is answered at once with `subscribed` and the cursor,
//!   so the subscription is live once [`PollConn::open`] returns.
//! - Nchan's long-poll subscriber: one message per answer, the body as
//!   published, its position in `Last-Modified` and `Etag`, sent back as
//!   `If-Modified-Since` and `If-None-Match`. A poll that times out is
//!   answered `304` or `408` and asked again from the same position.
//!
//! Invariants:
//! - At most one poll is outstanding; the next is queued only once the
//!   answer to the last is whole.
//! - Every answer is checked: a status other than those above, a body that
//!   is not the documented JSON, a message without its position, or a
//!   Herald cursor it could not resume from (`subscribed` after the first
//!   answer) is an error, and the connection ends: `--check` fails on it.
//! - Cancel-safe: an answer is either parsed (its messages in the batch, the
//!   next poll queued) or still in the inbox; queued bytes are written from
//!   where the last write stopped.

use std::net::Ipv4Addr;

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::{io::AsyncWriteExt, net::TcpStream};

use crate::{
    client::{Batch, Resume, connect_tcp, delivery},
    http::Url,
    inbox::{Inbox, READ_SIZE},
};

/// Largest answer (head and body) the client accepts.
const MAX_ANSWER: usize = 16 << 20;

/// How a server speaks long-poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// Herald's `/poll`: JSON events and a cursor.
    Herald,
    /// Nchan's long-poll subscriber: `Last-Modified` and `Etag`.
    Nchan,
}

/// A long-poll subscriber's connection.
pub struct PollConn {
    stream: TcpStream,
    inbox: Inbox,
    dialect: Dialect,
    /// The server's `host:port` (also sent as `Host`) and the loopback
    /// source address the client binds: kept to open the connection again
    /// when the server closes it between polls.
    authority: String,
    source: Ipv4Addr,
    /// The poll's path and query, without the position.
    path: String,
    /// Where the next poll continues from.
    position: Position,
    /// The next poll's request; `written` of its bytes are on their way.
    out: Vec<u8>,
    written: usize,
    /// The server said `Connection: close` with its last answer: the next
    /// poll goes on a new connection.
    reopen: bool,
}

/// Where a poll continues from.
#[derive(Clone, Debug, Default, PartialEq)]
enum Position {
    /// Nothing yet: Herald answers at once with the cursor of now, Nchan
    /// waits for the next message.
    #[default]
    Start,
    /// Herald's cursor, as the last answer gave it.
    Cursor(String),
    /// Nchan's message id, as the last message's headers gave it.
    Tag { last_modified: String, etag: String },
}

/// One answer, parsed from the inbox.
#[derive(Debug, PartialEq)]
struct Answer {
    status: u16,
    /// Where the head ends and how long the body is.
    head_len: usize,
    body_len: usize,
    last_modified: Option<String>,
    etag: Option<String>,
    close: bool,
}

/// Herald's answer body.
#[derive(Deserialize)]
struct Body<'a> {
    #[serde(borrow)]
    events: Vec<HeraldEvent<'a>>,
    cursor: String,
}

/// One event of Herald's answer: the fields the client looks at.
#[derive(Deserialize)]
struct HeraldEvent<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    offset: Option<u64>,
    #[serde(default)]
    recovered: Option<bool>,
}

impl PollConn {
    /// Connects from `source` and starts polling `url` at `resume`. For
    /// Herald from no cursor, the first poll's answer (`subscribed`) is
    /// awaited, so that the subscription is live when this returns.
    pub async fn open(
        url: &Url,
        dialect: Dialect,
        source: Ipv4Addr,
        resume: &Resume,
    ) -> anyhow::Result<PollConn> {
        let position = match (dialect, resume) {
            (_, Resume::Live) => Position::Start,
            (Dialect::Herald, Resume::LastEventId(cursor)) => Position::Cursor(cursor.clone()),
            _ => bail!("this long-poll target cannot resume from {resume:?}"),
        };
        let stream = connect_tcp(&url.authority, source).await?;
        let mut conn = PollConn {
            stream,
            inbox: Inbox::with_capacity(READ_SIZE),
            dialect,
            authority: url.authority.clone(),
            source,
            path: url.path.clone(),
            position,
            out: Vec::new(),
            written: 0,
            reopen: false,
        };
        conn.queue_poll();
        if dialect == Dialect::Herald && conn.position == Position::Start {
            let mut first = Batch::default();
            conn.next_answer(&mut first, true).await?;
            if first.ended {
                bail!("the first poll ended the subscription");
            }
            if !first.deliveries.is_empty() {
                bail!("the first poll (no cursor) answered messages");
            }
        }
        conn.flush().await?;
        Ok(conn)
    }

    /// Herald's cursor after the last answer, to resume from.
    pub fn resume(&self) -> Resume {
        match &self.position {
            Position::Cursor(cursor) => Resume::LastEventId(cursor.clone()),
            _ => Resume::Live,
        }
    }

    /// Waits for the next answer with messages (polls answered empty, on a
    /// timeout, are asked again) and hands them to `batch` (emptied first);
    /// `batch.ended` once the server closed the connection or told the
    /// client to go away. With `track`, `batch.resume` follows the cursor.
    pub async fn recv(&mut self, track: bool, batch: &mut Batch) -> anyhow::Result<()> {
        batch.deliveries.clear();
        batch.ended = false;
        loop {
            self.next_answer(batch, false).await?;
            if track && let Position::Cursor(cursor) = &self.position {
                match &mut batch.resume {
                    Resume::LastEventId(last) => {
                        last.clear();
                        last.push_str(cursor);
                    }
                    resume => *resume = Resume::LastEventId(cursor.clone()),
                }
            }
            if batch.ended || !batch.deliveries.is_empty() {
                return Ok(());
            }
        }
    }

    /// Writes the queued poll, reads its answer whole, takes it into `batch`
    /// and queues the next poll (written at once if the socket takes it).
    /// `first`: the answer to a first Herald poll, which must subscribe.
    async fn next_answer(&mut self, batch: &mut Batch, first: bool) -> anyhow::Result<()> {
        let answer = loop {
            self.flush().await?;
            let head = parse_head(self.inbox.unparsed())?;
            let need = head.as_ref().map_or(0, |a| a.head_len + a.body_len);
            if let Some(answer) = head
                && self.inbox.unparsed().len() >= need
            {
                break answer;
            }
            if need > MAX_ANSWER || self.inbox.unparsed().len() > MAX_ANSWER {
                bail!("an answer over {MAX_ANSWER} bytes");
            }
            if !self.inbox.read_more(&mut self.stream, need).await? {
                batch.ended = true;
                return Ok(());
            }
        };
        let start = self.inbox.position() + answer.head_len;
        self.inbox.consume(answer.head_len + answer.body_len);
        let body = self.inbox.at(start..start + answer.body_len);
        let position = match self.dialect {
            Dialect::Herald => herald_answer(&answer, body, batch, first)?,
            Dialect::Nchan => nchan_answer(&answer, body, batch)?,
        };
        if let Some(position) = position {
            self.position = position;
        }
        if batch.ended {
            return Ok(());
        }
        self.reopen = answer.close;
        self.queue_poll();
        if !self.reopen {
            self.try_flush()?;
        }
        Ok(())
    }

    /// Queues the next poll from the current position.
    fn queue_poll(&mut self) {
        self.out.clear();
        self.written = 0;
        write_poll(&mut self.out, &self.authority, &self.path, &self.position);
    }

    /// Writes what is left of the queued poll, on a new connection first if
    /// the server closed the last one. Cancel-safe.
    async fn flush(&mut self) -> anyhow::Result<()> {
        if self.written == self.out.len() {
            return Ok(());
        }
        if self.reopen {
            self.stream = connect_tcp(&self.authority, self.source).await?;
            self.inbox = Inbox::with_capacity(READ_SIZE);
            self.reopen = false;
        }
        while self.written < self.out.len() {
            let wrote = self.stream.write(&self.out[self.written..]).await?;
            if wrote == 0 {
                bail!("the connection closed while a poll was written");
            }
            self.written += wrote;
        }
        Ok(())
    }

    /// Writes what the socket takes of the queued poll now, without waiting.
    fn try_flush(&mut self) -> anyhow::Result<()> {
        while self.written < self.out.len() {
            match self.stream.try_write(&self.out[self.written..]) {
                Ok(0) => bail!("the connection closed while a poll was written"),
                Ok(wrote) => self.written += wrote,
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(error) => return Err(error.into()),
            }
        }
        Ok(())
    }
}

/// Writes the request of a poll of `path` from `position` into `out`.
fn write_poll(out: &mut Vec<u8>, authority: &str, path: &str, position: &Position) {
    out.extend_from_slice(b"GET ");
    out.extend_from_slice(path.as_bytes());
    if let Position::Cursor(cursor) = position {
        out.push(if path.contains('?') { b'&' } else { b'?' });
        out.extend_from_slice(b"cursor=");
        out.extend_from_slice(cursor.as_bytes());
    }
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(authority.as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Position::Tag {
        last_modified,
        etag,
    } = position
    {
        out.extend_from_slice(b"If-Modified-Since: ");
        out.extend_from_slice(last_modified.as_bytes());
        out.extend_from_slice(b"\r\nIf-None-Match: ");
        out.extend_from_slice(etag.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The head of the answer at the start of `bytes`, once it is whole.
fn parse_head(bytes: &[u8]) -> anyhow::Result<Option<Answer>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(bytes).context("a malformed answer head")? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => return Ok(None),
    };
    let status = response.code.unwrap_or(0);
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
    };
    if header("transfer-encoding").is_some() {
        bail!("a chunked answer: polls are answered with a Content-Length");
    }
    let body_len = match header("content-length") {
        Some(len) => len
            .parse()
            .with_context(|| format!("a bad Content-Length: {len}"))?,
        // A 304 has no body; any other answer must say how long it is.
        None if status == 304 || status == 204 => 0,
        None => bail!("an answer {status} without a Content-Length"),
    };
    Ok(Some(Answer {
        status,
        head_len,
        body_len,
        last_modified: header("last-modified"),
        etag: header("etag"),
        close: header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")),
    }))
}

/// Takes Herald's answer into `batch`; its cursor.
fn herald_answer(
    answer: &Answer,
    body: &[u8],
    batch: &mut Batch,
    first: bool,
) -> anyhow::Result<Option<Position>> {
    if answer.status != 200 {
        bail!(
            "a poll answered {}: {}",
            answer.status,
            String::from_utf8_lossy(&body[..body.len().min(300)])
        );
    }
    let parsed: Body = serde_json::from_slice(body).with_context(|| {
        format!(
            "a poll answer that is not {{\"events\":[…],\"cursor\":\"…\"}}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        )
    })?;
    if parsed.cursor.is_empty() {
        bail!("a poll answered an empty cursor");
    }
    let mut subscribed = false;
    for event in &parsed.events {
        match event.kind {
            "message" => {
                let (Some(data), Some(_)) = (event.data, event.offset) else {
                    bail!("a message event without its data or offset");
                };
                batch.deliveries.push(delivery(data.get().as_bytes()));
            }
            "subscribed" if first => subscribed = true,
            // A later answer subscribes again only when the cursor could
            // not be resumed: messages were lost.
            "subscribed" => bail!(
                "the server could not resume the cursor (subscribed, recovered: {:?})",
                event.recovered
            ),
            "reconnect" | "error" => batch.ended = true,
            other => bail!("an unknown event type {other:?}"),
        }
    }
    if first && !subscribed {
        bail!("the first poll was answered without subscribed");
    }
    Ok(Some(Position::Cursor(parsed.cursor)))
}

/// Takes Nchan's answer into `batch`; the message's id.
fn nchan_answer(
    answer: &Answer,
    body: &[u8],
    batch: &mut Batch,
) -> anyhow::Result<Option<Position>> {
    match answer.status {
        200 => {
            let (Some(last_modified), Some(etag)) = (&answer.last_modified, &answer.etag) else {
                bail!("a long-poll message without Last-Modified and Etag");
            };
            batch.deliveries.push(delivery(body));
            Ok(Some(Position::Tag {
                last_modified: last_modified.clone(),
                etag: etag.clone(),
            }))
        }
        // Timed out with nothing new: ask again from the same message.
        304 | 408 => Ok(None),
        status => bail!(
            "a long-poll answered {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::payload;

    fn answer(raw: &[u8]) -> Answer {
        parse_head(raw).unwrap().unwrap()
    }

    #[test]
    fn parses_answer_heads() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nLast-Modified: Sun, 06 Dec 2026 00:00:01 GMT\r\nEtag: 3\r\n\r\nhello";
        let a = answer(raw);
        assert_eq!((a.status, a.body_len, a.close), (200, 5, false));
        assert_eq!(a.head_len, raw.len() - 5);
        assert_eq!(
            a.last_modified.as_deref(),
            Some("Sun, 06 Dec 2026 00:00:01 GMT")
        );
        assert_eq!(a.etag.as_deref(), Some("3"));
        let closed = answer(
            b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(
            (closed.status, closed.body_len, closed.close),
            (408, 0, true)
        );
        assert_eq!(answer(b"HTTP/1.1 304 Not Modified\r\n\r\n").body_len, 0);
        assert!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Le")
                .unwrap()
                .is_none()
        );
        for bad in [
            &b"HTTP/1.1 200 OK\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"NOT HTTP\r\n\r\n",
        ] {
            assert!(parse_head(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    /// Herald's answers: what is delivered, the cursor, and what is refused.
    #[test]
    fn takes_herald_answers() {
        let status = |status: u16| Answer {
            status,
            head_len: 0,
            body_len: 0,
            last_modified: None,
            etag: None,
            close: false,
        };
        let ok = status(200);
        let message = |offset: u64, seq: u64| {
            format!(
                r#"{{"type":"message","channel":"bench","epoch":"e1","offset":{offset},"data":{}}}"#,
                payload(1_000 + seq, seq, 80)
            )
        };
        let body = format!(
            r#"{{"events":[{},{}],"cursor":"e1:8"}}"#,
            message(7, 3),
            message(8, 4)
        );
        let mut batch = Batch::default();
        let position = herald_answer(&ok, body.as_bytes(), &mut batch, false).unwrap();
        assert_eq!(position, Some(Position::Cursor("e1:8".into())));
        let seqs: Vec<_> = batch.deliveries.iter().map(|d| d.seq).collect();
        assert_eq!(seqs, [Some(3), Some(4)]);
        assert!(!batch.ended);

        let first = br#"{"events":[{"type":"subscribed","channel":"bench","epoch":"e1","offset":6,"recovered":false}],"cursor":"e1:6"}"#;
        let mut batch = Batch::default();
        assert_eq!(
            herald_answer(&ok, first, &mut batch, true).unwrap(),
            Some(Position::Cursor("e1:6".into()))
        );
        assert!(batch.deliveries.is_empty());

        let empty = br#"{"events":[],"cursor":"e1:6"}"#;
        let mut batch = Batch::default();
        assert!(herald_answer(&ok, empty, &mut batch, false).is_ok());
        assert!(batch.deliveries.is_empty() && !batch.ended);
        let shutdown =
            br#"{"events":[{"type":"reconnect","delay_ms":100,"reason":"shutdown"}],"cursor":"e1:6"}"#;
        herald_answer(&ok, shutdown, &mut batch, false).unwrap();
        assert!(batch.ended);

        let refused = status(429);
        for (answer, body, says) in [
            (&refused, &br#"{"error":{"code":"x"}}"#[..], "answered 429"),
            (&ok, b"{\"events\":[]}", "not {\"events\""),
            (&ok, b"[]", "not {\"events\""),
            (&ok, br#"{"events":[],"cursor":""}"#, "empty cursor"),
            (&ok, first, "could not resume"),
            (
                &ok,
                br#"{"events":[{"type":"message","channel":"bench"}],"cursor":"e1:1"}"#,
                "without its data",
            ),
            (
                &ok,
                br#"{"events":[{"type":"surprise"}],"cursor":"e1:1"}"#,
                "unknown event",
            ),
        ] {
            let error = herald_answer(answer, body, &mut Batch::default(), false).unwrap_err();
            assert!(format!("{error:#}").contains(says), "{error:#}");
        }
        let error = herald_answer(&ok, empty, &mut Batch::default(), true).unwrap_err();
        assert!(format!("{error:#}").contains("without subscribed"));
    }

    #[test]
    fn takes_nchan_answers() {
        let data = payload(5, 9, 100);
        let raw = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nLast-Modified: Sun, 06 Dec 2026 00:00:01 GMT\r\nEtag: 2\r\n\r\n{data}",
            data.len()
        );
        let head = answer(raw.as_bytes());
        let mut batch = Batch::default();
        let position = nchan_answer(&head, data.as_bytes(), &mut batch).unwrap();
        assert_eq!(
            position,
            Some(Position::Tag {
                last_modified: "Sun, 06 Dec 2026 00:00:01 GMT".into(),
                etag: "2".into()
            })
        );
        assert_eq!(batch.deliveries[0].seq, Some(9));
        for status in [304, 408] {
            let timeout = Answer {
                status,
                ..answer(b"HTTP/1.1 304 Not Modified\r\n\r\n")
            };
            assert_eq!(timeout.body_len, 0);
            assert_eq!(nchan_answer(&timeout, b"", &mut batch).unwrap(), None);
        }
        let untagged = answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n");
        assert!(nchan_answer(&untagged, b"{}", &mut batch).is_err());
        let refused = answer(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n");
        assert!(nchan_answer(&refused, b"", &mut batch).is_err());
    }

    #[test]
    fn polls_carry_their_position() {
        let request = |path: &str, position: Position| {
            let mut out = Vec::new();
            write_poll(&mut out, "127.0.0.1:1", path, &position);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            request("/poll?channel=bench", Position::Start),
            "GET /poll?channel=bench HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n"
        );
        assert_eq!(
            request("/poll?channel=bench", Position::Cursor("e1:8".into())),
            "GET /poll?channel=bench&cursor=e1:8 HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n"
        );
        assert_eq!(
            request(
                "/poll/bench",
                Position::Tag {
                    last_modified: "Sun, 06 Dec 2026 00:00:01 GMT".into(),
                    etag: "2".into()
                }
            ),
            "GET /poll/bench HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\
             If-Modified-Since: Sun, 06 Dec 2026 00:00:01 GMT\r\nIf-None-Match: 2\r\n\r\n"
        );
    }
}
