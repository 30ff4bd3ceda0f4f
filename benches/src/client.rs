//! Benchmark clients: WebSocket and SSE subscribers from chosen loopback
//! source addresses (one source address gives only about 28k ports), for any
//! target described by [`Templates`], and the parsing of what they receive.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};
use tokio_tungstenite::{
    WebSocketStream, client_async_with_config,
    tungstenite::{Message, protocol::WebSocketConfig},
};

use crate::{
    http::Url,
    target::{Protocol, Templates, fill},
};

/// The transport a scenario's clients use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Ws,
    Sse,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::Sse => "sse",
        }
    }
}

/// Where a resumed subscription continues from.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Resume {
    /// Live messages only.
    #[default]
    Live,
    /// Herald WebSocket: `since` with the last message's epoch and offset.
    Since { epoch: String, offset: u64 },
    /// SSE: the last event id, sent as `Last-Event-ID`.
    LastEventId(String),
}

/// One open subscriber connection.
pub enum Conn {
    Ws(Box<WebSocketStream<TcpStream>>, Protocol),
    Sse(Box<SseConn>),
}

pub struct SseConn {
    stream: TcpStream,
    /// Bytes received but not yet parsed into events.
    buffer: Vec<u8>,
    /// The id of the last event with one (Herald's `subscribed` has one too).
    last_id: Option<String>,
}

/// A message as a subscriber received it.
#[derive(Debug, Default, PartialEq)]
pub struct Delivery {
    /// The publisher's timestamp (µs since the Unix epoch) from the payload.
    pub sent_us: Option<u64>,
    /// The publisher's sequence number from the payload.
    pub seq: Option<u64>,
    /// Where to resume after this message, when asked to track it.
    pub resume: Option<Resume>,
}

/// The loopback source address number `index` of `count` starting at `first`.
pub fn source_for(index: usize, first: u8, count: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, first + (index % count.max(1) as usize) as u8)
}

async fn connect_tcp(authority: &str, source: Ipv4Addr) -> anyhow::Result<TcpStream> {
    let server: SocketAddr = tokio::net::lookup_host(authority)
        .await?
        .find(SocketAddr::is_ipv4)
        .with_context(|| format!("no IPv4 address for {authority}"))?;
    if !server.ip().is_loopback() {
        bail!("{server} is not on loopback: benchmarks send traffic to 127.0.0.0/8 only");
    }
    let socket = TcpSocket::new_v4()?;
    // Without this, bind() picks the port itself, scanning every port in use
    // on the address: connecting grows quadratic past about 10k sockets.
    // With it, connect() picks the port from the full 4-tuple, cheaply.
    nix::sys::socket::setsockopt(
        &socket,
        nix::sys::socket::sockopt::IpBindAddressNoPort,
        &true,
    )?;
    socket.bind(SocketAddr::V4(SocketAddrV4::new(source, 0)))?;
    let stream = socket.connect(server).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Opens a subscriber on `channel` and returns once its subscription is live.
pub async fn open(
    templates: &Templates,
    transport: Transport,
    addr: &str,
    channel: &str,
    source: Ipv4Addr,
    resume: &Resume,
) -> anyhow::Result<Conn> {
    match transport {
        Transport::Ws => websocket(templates, addr, channel, source, resume).await,
        Transport::Sse => sse(templates, addr, channel, source, resume).await,
    }
}

async fn websocket(
    templates: &Templates,
    addr: &str,
    channel: &str,
    source: Ipv4Addr,
    resume: &Resume,
) -> anyhow::Result<Conn> {
    let url = fill(&templates.ws_url, addr, channel);
    let authority = Url::parse(&url)?.authority;
    let stream = connect_tcp(&authority, source).await?;
    // The client's own buffers matter too when one process holds 18k of them.
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let (mut ws, _) = client_async_with_config(url, stream, Some(config)).await?;
    if templates.protocol == Protocol::Herald {
        expect_type(&mut ws, "welcome").await?;
    }
    if let Some(frame) = &templates.ws_subscribe {
        let mut frame = fill(frame, addr, channel);
        if let Resume::Since { epoch, offset } = resume {
            // Insert `since` into the subscribe object.
            if frame.ends_with('}') {
                frame.pop();
                frame.push_str(&format!(
                    r#","since":{{"epoch":"{epoch}","offset":{offset}}}}}"#
                ));
            }
        }
        ws.send(Message::text(frame)).await?;
        if templates.protocol == Protocol::Herald {
            expect_type(&mut ws, "subscribed").await?;
        }
    } else if let Resume::Since { .. } = resume {
        bail!("this target cannot resume a WebSocket subscription");
    }
    Ok(Conn::Ws(Box::new(ws), templates.protocol))
}

async fn expect_type(ws: &mut WebSocketStream<TcpStream>, kind: &str) -> anyhow::Result<()> {
    loop {
        match ws.next().await.context("connection closed")?? {
            Message::Text(text) => {
                if text.contains(&format!(r#""type":"{kind}""#)) {
                    return Ok(());
                }
                if text.contains(r#""type":"error""#) {
                    bail!("expected {kind}, got {text}");
                }
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            other => bail!("expected {kind}, got {other:?}"),
        }
    }
}

async fn sse(
    templates: &Templates,
    addr: &str,
    channel: &str,
    source: Ipv4Addr,
    resume: &Resume,
) -> anyhow::Result<Conn> {
    let url = Url::parse(&fill(&templates.sse_url, addr, channel))?;
    let mut stream = connect_tcp(&url.authority, source).await?;
    let last_event_id = match resume {
        Resume::LastEventId(id) => format!("Last-Event-ID: {id}\r\n"),
        _ => String::new(),
    };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n{last_event_id}\r\n",
        url.path, url.authority
    );
    stream.write_all(request.as_bytes()).await?;
    let mut conn = SseConn {
        stream,
        buffer: Vec::with_capacity(512),
        last_id: None,
    };
    let head_end = loop {
        if let Some(at) = find(&conn.buffer, b"\r\n\r\n") {
            break at + 4;
        }
        if conn.buffer.len() > 16 << 10 || !conn.read_more().await? {
            bail!(
                "stream closed before its head: {}",
                String::from_utf8_lossy(&conn.buffer)
            );
        }
    };
    if !conn.buffer.starts_with(b"HTTP/1.1 200") {
        bail!(
            "unexpected answer: {}",
            String::from_utf8_lossy(&conn.buffer[..head_end])
        );
    }
    conn.buffer.drain(..head_end);
    if templates.protocol == Protocol::Herald {
        // Live once the `subscribed` event has arrived.
        loop {
            match conn.next_event().await? {
                Some(event) if event.kind.as_deref() == Some("subscribed") => break,
                Some(_) => continue,
                None => bail!("stream closed before subscribed"),
            }
        }
    }
    Ok(Conn::Sse(Box::new(conn)))
}

/// One parsed SSE event.
#[derive(Debug, Default, PartialEq)]
struct Event {
    kind: Option<String>,
    data: Vec<u8>,
}

impl SseConn {
    async fn read_more(&mut self) -> anyhow::Result<bool> {
        let mut chunk = [0u8; 4096];
        let read = self.stream.read(&mut chunk).await?;
        self.buffer.extend_from_slice(&chunk[..read]);
        Ok(read > 0)
    }

    /// The next event with data (comments and `retry:` alone are skipped);
    /// `None` once the stream has ended.
    async fn next_event(&mut self) -> anyhow::Result<Option<Event>> {
        loop {
            while let Some(end) = find(&self.buffer, b"\n\n") {
                let raw: Vec<u8> = self.buffer.drain(..end + 2).collect();
                if let Some(event) = parse_event(&raw, &mut self.last_id) {
                    return Ok(Some(event));
                }
            }
            if !self.read_more().await? {
                return Ok(None);
            }
        }
    }
}

/// Parses one SSE event (without its closing blank line), updating the last id.
fn parse_event(raw: &[u8], last_id: &mut Option<String>) -> Option<Event> {
    let mut event = Event::default();
    let mut has_data = false;
    for line in raw.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(0) | None => continue,
            Some(at) => {
                let value = &line[at + 1..];
                (&line[..at], value.strip_prefix(b" ").unwrap_or(value))
            }
        };
        match field {
            b"id" => *last_id = Some(String::from_utf8_lossy(value).into_owned()),
            b"event" => event.kind = Some(String::from_utf8_lossy(value).into_owned()),
            b"data" => {
                if has_data {
                    event.data.push(b'\n');
                }
                event.data.extend_from_slice(value);
                has_data = true;
            }
            _ => {}
        }
    }
    has_data.then_some(event)
}

impl Conn {
    /// The next message; `None` once the server closed the stream (or told
    /// the client to go away).
    pub async fn next(&mut self, track: bool) -> anyhow::Result<Option<Delivery>> {
        match self {
            Conn::Ws(ws, protocol) => loop {
                let text = match ws.next().await {
                    None => return Ok(None),
                    Some(Err(e)) => return Err(e.into()),
                    Some(Ok(Message::Text(text))) => text.as_bytes().to_vec(),
                    Some(Ok(Message::Binary(data))) => data.to_vec(),
                    Some(Ok(Message::Close(_))) => return Ok(None),
                    Some(Ok(_)) => continue,
                };
                if *protocol == Protocol::Herald && !text.starts_with(br#"{"type":"message""#) {
                    if text.starts_with(br#"{"type":"reconnect""#) {
                        return Ok(None);
                    }
                    continue;
                }
                let resume = (track && *protocol == Protocol::Herald)
                    .then(|| {
                        Some(Resume::Since {
                            epoch: string_field(&text, b"\"epoch\":\"")?,
                            offset: number_field(&text, b"\"offset\":")?,
                        })
                    })
                    .flatten();
                return Ok(Some(delivery(&text, resume)));
            },
            Conn::Sse(sse) => loop {
                let Some(event) = sse.next_event().await? else {
                    return Ok(None);
                };
                match event.kind.as_deref() {
                    None | Some("message") => {}
                    Some("reconnect" | "error") => return Ok(None),
                    Some(_) => continue,
                }
                let resume = track
                    .then(|| sse.last_id.clone().map(Resume::LastEventId))
                    .flatten();
                return Ok(Some(delivery(&event.data, resume)));
            },
        }
    }

    /// The position a fresh SSE stream starts at (Herald's `subscribed` id).
    pub fn initial_resume(&self) -> Resume {
        match self {
            Conn::Sse(sse) => sse
                .last_id
                .clone()
                .map_or(Resume::Live, Resume::LastEventId),
            Conn::Ws(..) => Resume::Live,
        }
    }
}

fn delivery(data: &[u8], resume: Option<Resume>) -> Delivery {
    Delivery {
        sent_us: number_field(data, b"\"t\":"),
        seq: number_field(data, b"\"seq\":"),
        resume,
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The unsigned integer right after the first `key` (`"t":`) in `data`.
fn number_field(data: &[u8], key: &[u8]) -> Option<u64> {
    let start = find(data, key)? + key.len();
    let digits: &[u8] = &data[start..];
    let digits = &digits[..digits
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len())];
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The string right after the first `key` (`"epoch":"`), up to the next quote.
fn string_field(data: &[u8], key: &[u8]) -> Option<String> {
    let start = find(data, key)? + key.len();
    let len = data[start..].iter().position(|&b| b == b'"')?;
    Some(String::from_utf8_lossy(&data[start..start + len]).into_owned())
}

/// The payload a publisher sends: a timestamp, a sequence number and padding
/// up to `size` bytes (100 by default, as in `reference/peers.md`).
pub fn payload(sent_us: u64, seq: u64, size: usize) -> String {
    let head = format!(r#"{{"t":{sent_us},"seq":{seq},"pad":""#);
    let pad = size.saturating_sub(head.len() + 2);
    format!("{head}{}\"}}", "x".repeat(pad))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_have_the_asked_size_and_parse_back() {
        let p = payload(1_700_000_000_000_000, 42, 100);
        assert_eq!(p.len(), 100);
        let d = delivery(p.as_bytes(), None);
        assert_eq!(d.sent_us, Some(1_700_000_000_000_000));
        assert_eq!(d.seq, Some(42));
        assert!(serde_json::from_str::<serde_json::Value>(&p).is_ok());
    }

    #[test]
    fn reads_fields_from_a_herald_frame() {
        let frame = br#"{"type":"message","channel":"bench","epoch":"1f","offset":9,"data":{"t":5,"seq":2,"pad":"x"}}"#;
        assert_eq!(number_field(frame, b"\"t\":"), Some(5));
        assert_eq!(number_field(frame, b"\"offset\":"), Some(9));
        assert_eq!(string_field(frame, b"\"epoch\":\""), Some("1f".into()));
        assert_eq!(number_field(frame, b"\"nope\":"), None);
    }

    #[test]
    fn parses_sse_events() {
        // (raw event, expected (event type, data), expected last id)
        type Case<'a> = (
            &'a [u8],
            Option<(Option<&'a str>, &'a [u8])>,
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
                Some((Some("subscribed"), b"{}")),
                Some("a:1"),
            ),
            (b"data: a\r\ndata: b\n", Some((None, b"a\nb")), None),
        ];
        for (raw, expect, id) in cases {
            let mut last_id = None;
            let got = parse_event(raw, &mut last_id);
            let want = expect.map(|(kind, data)| Event {
                kind: kind.map(str::to_string),
                data: data.to_vec(),
            });
            assert_eq!(got, want, "{}", String::from_utf8_lossy(raw));
            assert_eq!(last_id.as_deref(), *id);
        }
    }

    #[test]
    fn source_addresses_cycle() {
        assert_eq!(source_for(0, 10, 4), Ipv4Addr::new(127, 0, 0, 10));
        assert_eq!(source_for(5, 10, 4), Ipv4Addr::new(127, 0, 0, 11));
    }
}
