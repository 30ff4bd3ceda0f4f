//! A Server-Sent Events client over a raw TCP socket that parses the stream as a browser's EventSource does (WHATWG rules).

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::message::Delivered;

/// How long the helpers wait for an event unless told otherwise.
pub const SSE_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest response head the client accepts.
const MAX_HEAD: usize = 64 * 1024;

/// One SSE response: the status and headers, then (for a 200) the event stream.
pub struct SseClient {
    /// The HTTP status of the answer.
    pub status: u16,
    /// The response headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The last `retry:` value seen, in milliseconds.
    pub retry_ms: Option<u64>,
    /// How many comment lines (`: ping`) have been read so far.
    pub comments: u64,
    /// The socket; read only inside the calls below.
    stream: TcpStream,
    /// How the body is framed.
    framing: Framing,
    /// Bytes read from the socket but not yet de-chunked.
    raw: Vec<u8>,
    /// Body bytes not yet parsed into lines.
    body: Vec<u8>,
    /// Whether the body has ended (EOF, last chunk, or `Content-Length` reached).
    ended: bool,
    /// Whether the first body bytes were checked for a byte-order mark.
    bom_checked: bool,
    /// The WHATWG "data buffer".
    data: String,
    /// The WHATWG "event type buffer".
    event_type: String,
    /// The WHATWG "last event ID buffer", set by `id:` lines and kept across events.
    id_buffer: String,
    /// The WHATWG "last event ID string": the buffer as of the last dispatch (a blank line), even
    /// one that carried no data. This is what a browser sends as `Last-Event-ID` when it reconnects.
    last_event_id: String,
}

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The last event ID at dispatch (the `id` of this event, or of an earlier one if it had none).
    pub id: String,
    /// The event type; `message` when the event had no `event:` field.
    pub event: String,
    /// The data lines joined by `\n`.
    pub data: String,
}

/// What [`SseClient::try_next_event`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseNext {
    /// An event.
    Event(SseEvent),
    /// The stream ended (the server closed it).
    Ended,
    /// Nothing arrived in time.
    Timeout,
}

#[derive(Debug, Clone, Copy)]
enum Framing {
    /// Body bytes until EOF.
    Close,
    /// `Content-Length` bytes left.
    Length(usize),
    /// `Transfer-Encoding: chunked`; the number of bytes left in the current chunk, if inside one.
    Chunked(Option<usize>),
}

impl SseEvent {
    /// The data parsed as JSON; panics if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {:?}", self.data))
    }
}

impl SseClient {
    /// Sends `GET path` (for example `/sse?channel=public`) with an optional `Last-Event-ID`
    /// header and reads the response head.
    pub async fn connect(addr: SocketAddr, path: &str, last_event_id: Option<&str>) -> SseClient {
        SseClient::connect_with(addr, path, last_event_id, None).await
    }

    /// Like [`SseClient::connect`], with `SO_RCVBUF` set before connecting (for a client that
    /// stops reading and must fill its kernel buffer quickly).
    pub async fn connect_with(
        addr: SocketAddr,
        path: &str,
        last_event_id: Option<&str>,
        recv_buffer_bytes: Option<u32>,
    ) -> SseClient {
        let mut head = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n"
        );
        if let Some(id) = last_event_id {
            head.push_str(&format!("Last-Event-ID: {id}\r\n"));
        }
        head.push_str("\r\n");
        SseClient::send_request(addr, head.as_bytes(), recv_buffer_bytes).await
    }

    /// Sends `request` as is (for malformed requests) and reads the response head.
    pub async fn connect_raw(addr: SocketAddr, request: &[u8]) -> SseClient {
        SseClient::send_request(addr, request, None).await
    }

    async fn send_request(
        addr: SocketAddr,
        request: &[u8],
        recv_buffer_bytes: Option<u32>,
    ) -> SseClient {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .expect("socket");
        if let Some(bytes) = recv_buffer_bytes {
            socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
        }
        let mut stream = tokio::time::timeout(SSE_TIMEOUT, socket.connect(addr))
            .await
            .unwrap_or_else(|_| panic!("connect to {addr} timed out"))
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream.write_all(request).await.expect("send SSE request");
        let mut raw = Vec::new();
        let head_len = loop {
            if let Some(end) = find(&raw, b"\r\n\r\n") {
                break end + 4;
            }
            assert!(raw.len() < MAX_HEAD, "response head over {MAX_HEAD} bytes");
            let mut buf = [0u8; 4096];
            let n = tokio::time::timeout(SSE_TIMEOUT, stream.read(&mut buf))
                .await
                .expect("timed out reading the SSE response head")
                .expect("read SSE response head");
            assert!(
                n > 0,
                "connection closed before a response head: {:?}",
                String::from_utf8_lossy(&raw)
            );
            raw.extend_from_slice(&buf[..n]);
        };
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        response
            .parse(&raw[..head_len])
            .expect("parse SSE response head");
        let status = response.code.expect("status code");
        let headers = crate::http::header_list(response.headers);
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        let framing =
            if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
                Framing::Chunked(None)
            } else if let Some(len) = header("content-length") {
                Framing::Length(len.trim().parse().expect("Content-Length is a number"))
            } else {
                Framing::Close
            };
        let raw = raw.split_off(head_len);
        let mut client = SseClient {
            status,
            headers,
            retry_ms: None,
            comments: 0,
            stream,
            framing,
            raw,
            body: Vec::new(),
            ended: false,
            bom_checked: false,
            data: String::new(),
            event_type: String::new(),
            id_buffer: String::new(),
            last_event_id: String::new(),
        };
        client.decode();
        client
    }

    /// A response header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Asserts the answer is a 200 event stream with the documented headers.
    pub fn assert_stream(&self) {
        assert_eq!(self.status, 200, "SSE status; headers {:?}", self.headers);
        let content_type = self.header("content-type").unwrap_or_default();
        assert!(
            content_type.starts_with("text/event-stream"),
            "Content-Type: {content_type}"
        );
        assert_eq!(self.header("cache-control"), Some("no-cache"));
        assert_eq!(self.header("x-accel-buffering"), Some("no"));
        assert_eq!(self.header("access-control-allow-origin"), Some("*"));
    }

    /// Reads the whole body (for an error answer) as text.
    pub async fn body(&mut self) -> String {
        while !self.ended {
            self.fill(SSE_TIMEOUT)
                .await
                .expect("timed out reading the response body");
        }
        String::from_utf8_lossy(&std::mem::take(&mut self.body)).into_owned()
    }

    /// Reads an error answer and returns `error.code` from its JSON body.
    pub async fn error_code(&mut self) -> String {
        let body = self.body().await;
        let json: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {body:?}"));
        assert!(
            json["error"]["message"].is_string(),
            "error body has a message: {body}"
        );
        json["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("error body has no error.code: {body}"))
            .to_owned()
    }

    /// The WHATWG last event ID: what a browser would send as `Last-Event-ID` on reconnect.
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// Reads the next event; panics if the stream ends or nothing comes in time.
    pub async fn next_event(&mut self, timeout: Duration) -> SseEvent {
        match self.try_next_event(timeout).await {
            SseNext::Event(event) => event,
            other => panic!("expected an SSE event, got {other:?}"),
        }
    }

    /// Reads the next event and parses it as a message (default event type); panics on anything else.
    pub async fn next_message(&mut self, timeout: Duration) -> Delivered {
        let event = self.next_event(timeout).await;
        assert_eq!(
            event.event, "message",
            "expected a message event: {event:?}"
        );
        Delivered::parse(&event.data)
    }

    /// Reads the next event and checks that it is a `subscribed` event for `channel`.
    pub async fn expect_subscribed(&mut self, channel: &str) -> (SseEvent, Value) {
        let event = self.next_event(SSE_TIMEOUT).await;
        assert_eq!(
            event.event, "subscribed",
            "expected subscribed {channel}: {event:?}"
        );
        let json = event.json();
        assert_eq!(json["channel"], channel, "subscribed event: {event:?}");
        (event, json)
    }

    /// Reads the next event, or learns that the stream ended or nothing came in time.
    pub async fn try_next_event(&mut self, timeout: Duration) -> SseNext {
        assert_eq!(self.status, 200, "not an event stream");
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            while let Some(line) = self.next_line() {
                if let Some(event) = self.process_line(&line) {
                    return SseNext::Event(event);
                }
            }
            if self.ended {
                return SseNext::Ended;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if self.fill(left).await.is_none() {
                return SseNext::Timeout;
            }
        }
    }

    /// Reads until one more comment line (such as `: ping`) has arrived; panics if an event is
    /// dispatched first, the stream ends, or nothing comes in time.
    pub async fn next_comment(&mut self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        let before = self.comments;
        loop {
            while let Some(line) = self.next_line() {
                if let Some(event) = self.process_line(&line) {
                    panic!("expected a comment, got an event {event:?}");
                }
                if self.comments > before {
                    return;
                }
            }
            assert!(!self.ended, "the stream ended while waiting for a comment");
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            assert!(
                self.fill(left).await.is_some(),
                "no comment within {timeout:?}"
            );
        }
    }

    /// Reads more bytes from the socket; `None` on timeout.
    async fn fill(&mut self, timeout: Duration) -> Option<()> {
        let mut buf = [0u8; 16 * 1024];
        let n = match tokio::time::timeout(timeout, self.stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(n)) => n,
            // A reset ends the stream as far as a client can tell.
            Ok(Err(_)) => 0,
        };
        if n == 0 {
            self.ended = true;
        } else {
            self.raw.extend_from_slice(&buf[..n]);
            self.decode();
        }
        Some(())
    }

    /// Moves de-framed bytes from `raw` to `body`.
    fn decode(&mut self) {
        loop {
            match self.framing {
                Framing::Close => {
                    self.body.append(&mut self.raw);
                    return;
                }
                Framing::Length(left) => {
                    let take = left.min(self.raw.len());
                    self.body.extend(self.raw.drain(..take));
                    self.framing = Framing::Length(left - take);
                    if left - take == 0 {
                        self.ended = true;
                    }
                    return;
                }
                Framing::Chunked(None) => {
                    let Some(end) = find(&self.raw, b"\r\n") else {
                        return;
                    };
                    let size_line = String::from_utf8_lossy(&self.raw[..end]).into_owned();
                    let size_hex = size_line.split(';').next().unwrap_or("").trim();
                    let size = usize::from_str_radix(size_hex, 16)
                        .unwrap_or_else(|e| panic!("bad chunk size {size_line:?}: {e}"));
                    self.raw.drain(..end + 2);
                    if size == 0 {
                        self.ended = true;
                        return;
                    }
                    self.framing = Framing::Chunked(Some(size));
                }
                Framing::Chunked(Some(left)) => {
                    if left == 0 {
                        if self.raw.len() < 2 {
                            return;
                        }
                        assert_eq!(&self.raw[..2], b"\r\n", "chunk not followed by CRLF");
                        self.raw.drain(..2);
                        self.framing = Framing::Chunked(None);
                        continue;
                    }
                    if self.raw.is_empty() {
                        return;
                    }
                    let take = left.min(self.raw.len());
                    self.body.extend(self.raw.drain(..take));
                    self.framing = Framing::Chunked(Some(left - take));
                }
            }
        }
    }

    /// Takes one line (CRLF, LF or CR terminated) off the body, if a whole one is there.
    fn next_line(&mut self) -> Option<String> {
        if !self.bom_checked {
            if self.body.len() < 3 && !self.ended && b"\xEF\xBB\xBF".starts_with(&self.body) {
                return None;
            }
            if self.body.starts_with(b"\xEF\xBB\xBF") {
                self.body.drain(..3);
            }
            self.bom_checked = true;
        }
        let pos = self.body.iter().position(|&b| b == b'\n' || b == b'\r')?;
        let terminator = if self.body[pos] == b'\r' {
            match self.body.get(pos + 1) {
                Some(b'\n') => 2,
                Some(_) => 1,
                // A CR at the end of what we have may be the first half of a CRLF.
                None if self.ended => 1,
                None => return None,
            }
        } else {
            1
        };
        let line = String::from_utf8_lossy(&self.body[..pos]).into_owned();
        self.body.drain(..pos + terminator);
        Some(line)
    }

    /// Interprets one line per the WHATWG event-stream rules; returns an event when one is dispatched.
    fn process_line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            return self.dispatch();
        }
        if line.starts_with(':') {
            self.comments += 1;
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => self.event_type = value.to_owned(),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "id" if !value.contains('\0') => self.id_buffer = value.to_owned(),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry_ms = value.parse().ok();
            }
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        self.last_event_id.clone_from(&self.id_buffer);
        let event_type = std::mem::take(&mut self.event_type);
        if self.data.is_empty() {
            return None;
        }
        let mut data = std::mem::take(&mut self.data);
        data.pop();
        Some(SseEvent {
            id: self.id_buffer.clone(),
            event: if event_type.is_empty() {
                "message".to_owned()
            } else {
                event_type
            },
            data,
        })
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
