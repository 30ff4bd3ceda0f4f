//! Benchmark clients: WebSocket, SSE and long-poll subscribers from chosen loopback
//! source addresses (one source address gives only about 28k ports), for any
//! target described by [`Templates`], and the parsing of what they receive.

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    sync::LazyLock,
};

use anyhow::{Context, bail};
use memchr::memmem::Finder;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpSocket, TcpStream};

use crate::{
    frame::Flow,
    http::Url,
    poll::{Dialect, PollConn},
    sse::{Event, SseConn},
    stream::Stream,
    target::{Protocol, Templates, fill},
    tls,
    websocket::WsConn,
};

/// The transport a scenario's clients use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Ws,
    Sse,
    /// HTTP long-poll: one request held at a time, asked again after each answer.
    Poll,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::Sse => "sse",
            Transport::Poll => "poll",
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
    /// SSE: the last event id, sent as `Last-Event-ID`; Herald's long-poll:
    /// the cursor (the same positions), sent as `cursor`.
    LastEventId(String),
}

/// One open subscriber connection.
pub enum Conn {
    Ws(Box<WsConn>, Protocol),
    Sse(Box<SseConn>),
    Poll(Box<PollConn>),
}

/// A message as a subscriber received it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Delivery {
    /// The publisher's timestamp (µs since the Unix epoch) from the payload.
    pub sent_us: Option<u64>,
    /// The publisher's sequence number from the payload.
    pub seq: Option<u64>,
}

/// What one [`Conn::recv`] brought: every message of a read, so that the
/// caller pays for its shared counters once per read, not per message.
#[derive(Debug, Default)]
pub struct Batch {
    /// The messages, in order; kept from call to call for its capacity.
    pub deliveries: Vec<Delivery>,
    /// The server closed the stream, or told the client to go away, after
    /// these messages.
    pub ended: bool,
    /// Where to resume after the last message with a position; updated
    /// only when tracking, in place (no allocation while the epoch stays).
    pub resume: Resume,
}

/// The loopback source address number `index` of `count` starting at `first`.
pub fn source_for(index: usize, first: u8, count: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, first + (index % count.max(1) as usize) as u8)
}

pub async fn connect_tcp(authority: &str, source: Ipv4Addr) -> anyhow::Result<TcpStream> {
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

/// Connects to `url`'s server from `source`, then, for `wss://` and
/// `https://`, does the TLS handshake, trusting the templates' CA.
async fn connect(templates: &Templates, url: &Url, source: Ipv4Addr) -> anyhow::Result<Stream> {
    let tcp = connect_tcp(&url.authority, source).await?;
    if !url.tls {
        return Ok(Stream::Plain(tcp));
    }
    let ca = templates.ca.as_deref().context(
        "a TLS target needs a CA to trust (--tls-ca, or --tls on a server the bench starts)",
    )?;
    tls::handshake(tcp, &url.authority, ca).await
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
        Transport::Poll => poll(templates, addr, channel, source, resume).await,
    }
}

async fn websocket(
    templates: &Templates,
    addr: &str,
    channel: &str,
    source: Ipv4Addr,
    resume: &Resume,
) -> anyhow::Result<Conn> {
    let url = Url::parse(&ws_url(templates, addr, channel, resume))?;
    let stream = connect(templates, &url, source).await?;
    let mut ws = WsConn::handshake(stream, &url).await?;
    match templates.protocol {
        Protocol::Herald => ws.expect_type("welcome").await?,
        Protocol::Pusher => ws.expect_event("pusher:connection_established").await?,
        Protocol::Plain => {}
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
        ws.send_text(&frame).await?;
        match templates.protocol {
            Protocol::Herald => ws.expect_type("subscribed").await?,
            Protocol::Pusher => {
                ws.expect_event("pusher_internal:subscription_succeeded")
                    .await?;
            }
            Protocol::Plain => {}
        }
    } else if templates.protocol == Protocol::Herald {
        // Subscribed in the URL: `subscribed` follows `welcome` unasked.
        if !channel.is_empty() {
            ws.expect_type("subscribed").await?;
        }
    } else if let Resume::Since { .. } = resume {
        bail!("this target cannot resume a WebSocket subscription");
    }
    Ok(Conn::Ws(Box::new(ws), templates.protocol))
}

/// The WebSocket URL to open on `channel`. Herald, when it subscribes in
/// the URL (no subscribe frame), resumes there too, with
/// `since=EPOCH:OFFSET`; and a connection on no channel (an empty one)
/// leaves the `channel` parameter out, since Herald refuses an empty name.
fn ws_url(templates: &Templates, addr: &str, channel: &str, resume: &Resume) -> String {
    let url = fill(&templates.ws_url, addr, channel);
    if templates.protocol != Protocol::Herald || templates.ws_subscribe.is_some() {
        return url;
    }
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let mut params: Vec<String> = query
        .split('&')
        .filter(|param| !param.is_empty() && *param != "channel=")
        .map(str::to_owned)
        .collect();
    if let Resume::Since { epoch, offset } = resume {
        params.push(format!("since={epoch}:{offset}"));
    }
    if params.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", params.join("&"))
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
    let stream = connect(templates, &url, source).await?;
    let last_event_id = match resume {
        Resume::LastEventId(id) => Some(id.as_str()),
        _ => None,
    };
    let mut conn = SseConn::open(stream, &url, last_event_id).await?;
    // Herald's subscription is live once the `subscribed` event has arrived.
    if templates.protocol == Protocol::Herald && !conn.wait_for("subscribed").await? {
        bail!("stream closed before subscribed");
    }
    Ok(Conn::Sse(Box::new(conn)))
}

async fn poll(
    templates: &Templates,
    addr: &str,
    channel: &str,
    source: Ipv4Addr,
    resume: &Resume,
) -> anyhow::Result<Conn> {
    let dialect = match templates.protocol {
        Protocol::Herald => Dialect::Herald,
        Protocol::Plain => Dialect::Nchan,
        Protocol::Pusher => bail!("the Pusher protocol has no long-poll transport"),
    };
    let url = Url::parse(&fill(&templates.poll_url, addr, channel))?;
    if url.tls {
        bail!("the long-poll client speaks plain HTTP only (--tls: WebSocket and SSE)");
    }
    let conn = PollConn::open(&url, dialect, source, resume).await?;
    Ok(Conn::Poll(Box::new(conn)))
}

impl Conn {
    /// Waits for messages, then hands every message of the read to `batch`
    /// (emptied first); `batch.ended` once the server closed the stream or
    /// told the client to go away. With `track`, `batch.resume` follows the
    /// last message's position. Cancel-safe: a message is either in `batch`
    /// or still in the connection's buffer.
    pub async fn recv(&mut self, track: bool, batch: &mut Batch) -> anyhow::Result<()> {
        batch.deliveries.clear();
        batch.ended = false;
        loop {
            let more = match self {
                Conn::Ws(ws, protocol) => {
                    let protocol = *protocol;
                    let flow = ws.parse(|text| batch.ws_message(protocol, text, track))?;
                    batch.ended |= flow == Flow::Closed;
                    if batch.ended || !batch.deliveries.is_empty() {
                        return Ok(());
                    }
                    ws.read_more().await?
                }
                Conn::Poll(poll) => return poll.recv(track, batch).await,
                Conn::Sse(sse) => {
                    sse.parse(|event, last_id| batch.sse_event(event, last_id, track));
                    if batch.ended || !batch.deliveries.is_empty() {
                        return Ok(());
                    }
                    sse.read_more().await?
                }
            };
            if !more {
                batch.ended = true;
                return Ok(());
            }
        }
    }

    /// The position a fresh SSE stream starts at (Herald's `subscribed` id).
    pub fn initial_resume(&self) -> Resume {
        match self {
            Conn::Sse(sse) => sse
                .last_id()
                .map_or(Resume::Live, |id| Resume::LastEventId(id.to_string())),
            Conn::Poll(poll) => poll.resume(),
            Conn::Ws(..) => Resume::Live,
        }
    }
}

/// The keys a received message is scanned for, each searched for once.
struct Keys {
    /// The opening of a payload as [`payload`] writes it: `{` is rare in a
    /// message, so this is found much faster than `"t":` alone.
    payload: Finder<'static>,
    /// The same inside a JSON string (a Pusher frame's `data`).
    escaped_payload: Finder<'static>,
    sent: Finder<'static>,
    seq: Finder<'static>,
    epoch: Finder<'static>,
    offset: Finder<'static>,
}

static KEYS: LazyLock<Keys> = LazyLock::new(|| Keys {
    payload: Finder::new(br#"{"t":"#),
    escaped_payload: Finder::new(br#"{\"t\":"#),
    sent: Finder::new(br#""t":"#),
    seq: Finder::new(br#""seq":"#),
    epoch: Finder::new(br#""epoch":""#),
    offset: Finder::new(br#""offset":"#),
});

impl Batch {
    /// Takes one WebSocket message; `false` (stop) once the server told the
    /// client to go away.
    fn ws_message(&mut self, protocol: Protocol, text: &[u8], track: bool) -> bool {
        if protocol == Protocol::Herald {
            if !text.starts_with(br#"{"type":"message""#) {
                self.ended = text.starts_with(br#"{"type":"reconnect""#);
                return !self.ended;
            }
            if track
                && let (Some(epoch), Some(offset)) = (
                    string_field(text, &KEYS.epoch),
                    number_field(text, &KEYS.offset),
                )
            {
                match &mut self.resume {
                    Resume::Since {
                        epoch: e,
                        offset: o,
                    } if e.as_bytes() == epoch => *o = offset,
                    resume => {
                        *resume = Resume::Since {
                            epoch: String::from_utf8_lossy(epoch).into_owned(),
                            offset,
                        }
                    }
                }
            }
        }
        if protocol == Protocol::Pusher {
            // Keys in any order; inside `data` every quote is escaped.
            if memchr::memmem::find(text, br#""event":"message""#).is_none() {
                return true;
            }
            self.deliveries.push(escaped_delivery(text));
            return true;
        }
        self.deliveries.push(delivery(text));
        true
    }

    /// Takes one SSE event; `false` (stop) once the server told the client
    /// to go away.
    fn sse_event(&mut self, event: &Event, last_id: Option<&str>, track: bool) -> bool {
        match event.kind {
            None | Some(b"message") => {}
            Some(b"reconnect" | b"error") => {
                self.ended = true;
                return false;
            }
            Some(_) => return true,
        }
        if track && let Some(id) = last_id {
            match &mut self.resume {
                Resume::LastEventId(last) => {
                    last.clear();
                    last.push_str(id);
                }
                resume => *resume = Resume::LastEventId(id.to_string()),
            }
        }
        self.deliveries.push(delivery(event.data));
        true
    }
}

pub fn delivery(data: &[u8]) -> Delivery {
    // The payload as `payload` writes it: `{"t":…,"seq":…`, one search.
    if let Some(at) = KEYS.payload.find(data) {
        let start = at + KEYS.payload.needle().len();
        if let Some((sent_us, len)) = digits(&data[start..])
            && let Some(seq) = data[start + len..].strip_prefix(br#","seq":"#)
        {
            return Delivery {
                sent_us: Some(sent_us),
                seq: digits(seq).map(|(seq, _)| seq),
            };
        }
    }
    // Anything else with the fields somewhere (a target that rewrites it).
    Delivery {
        sent_us: number_field(data, &KEYS.sent),
        seq: number_field(data, &KEYS.seq),
    }
}

/// A Pusher frame's payload: `{\"t\":…,\"seq\":…` inside its `data` string.
fn escaped_delivery(frame: &[u8]) -> Delivery {
    let Some(at) = KEYS.escaped_payload.find(frame) else {
        return Delivery {
            sent_us: None,
            seq: None,
        };
    };
    let start = at + KEYS.escaped_payload.needle().len();
    let Some((sent_us, len)) = digits(&frame[start..]) else {
        return Delivery {
            sent_us: None,
            seq: None,
        };
    };
    let seq = frame[start + len..]
        .strip_prefix(br#",\"seq\":"#)
        .and_then(digits)
        .map(|(seq, _)| seq);
    Delivery {
        sent_us: Some(sent_us),
        seq,
    }
}

/// The unsigned integer right after the first `key` (`"t":`) in `data`.
fn number_field(data: &[u8], key: &Finder) -> Option<u64> {
    let start = key.find(data)? + key.needle().len();
    digits(&data[start..]).map(|(n, _)| n)
}

/// The unsigned integer `bytes` start with, and its length.
fn digits(bytes: &[u8]) -> Option<(u64, usize)> {
    let len = bytes
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(bytes.len());
    if len == 0 {
        return None;
    }
    let n = bytes[..len].iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })?;
    Some((n, len))
}

/// The string right after the first `key` (`"epoch":"`), up to the next quote.
fn string_field<'a>(data: &'a [u8], key: &Finder) -> Option<&'a [u8]> {
    let start = key.find(data)? + key.needle().len();
    let len = memchr::memchr(b'"', &data[start..])?;
    Some(&data[start..start + len])
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
        let d = delivery(p.as_bytes());
        assert_eq!(d.sent_us, Some(1_700_000_000_000_000));
        assert_eq!(d.seq, Some(42));
        assert!(serde_json::from_str::<serde_json::Value>(&p).is_ok());
        // Written otherwise, the fields are still found.
        for (data, sent, seq) in [
            (&br#"{"seq":2,"t":5}"#[..], Some(5), Some(2)),
            (br#"{"t": 5, "seq": 2}"#, None, None),
            (br#"{"t":5,"pad":"","seq":2}"#, Some(5), Some(2)),
            (br#"{"t":5,"seq":x}"#, Some(5), None),
            (br#"{"t":5}"#, Some(5), None),
            (b"hello", None, None),
        ] {
            let want = Delivery { sent_us: sent, seq };
            assert_eq!(delivery(data), want, "{}", String::from_utf8_lossy(data));
        }
    }

    #[test]
    fn reads_fields_from_a_herald_frame() {
        let frame = br#"{"type":"message","channel":"bench","epoch":"1f","offset":9,"data":{"t":5,"seq":2,"pad":"x"}}"#;
        assert_eq!(number_field(frame, &KEYS.sent), Some(5));
        assert_eq!(number_field(frame, &KEYS.offset), Some(9));
        assert_eq!(string_field(frame, &KEYS.epoch), Some(&b"1f"[..]));
        assert_eq!(number_field(frame, &Finder::new("\"nope\":")), None);
        for (bad, want) in [
            (&br#"{"t":}"#[..], None),
            (br#"{"t":-1}"#, None),
            (br#"{"t":99999999999999999999}"#, None),
            (br#"{"t":18446744073709551615}"#, Some(u64::MAX)),
            (br#"{"t":7"#, Some(7)),
        ] {
            assert_eq!(
                number_field(bad, &KEYS.sent),
                want,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(string_field(br#"{"epoch":"open"#, &KEYS.epoch), None);
    }

    /// Herald's WebSocket messages: what is delivered, when the stream ends,
    /// and where to resume.
    #[test]
    fn takes_herald_websocket_messages() {
        let message = |epoch: &str, offset: u64, seq: u64| {
            format!(
                r#"{{"type":"message","channel":"bench","epoch":"{epoch}","offset":{offset},"data":{}}}"#,
                payload(1_000 + seq, seq, 60)
            )
        };
        let mut batch = Batch::default();
        assert!(batch.ws_message(Protocol::Herald, message("e1", 4, 1).as_bytes(), true));
        assert!(batch.ws_message(Protocol::Herald, br#"{"type":"pong"}"#, true));
        assert!(batch.ws_message(Protocol::Herald, message("e1", 5, 2).as_bytes(), true));
        assert_eq!(
            batch.resume,
            Resume::Since {
                epoch: "e1".into(),
                offset: 5
            }
        );
        assert!(batch.ws_message(Protocol::Herald, message("e2", 1, 3).as_bytes(), true));
        assert_eq!(
            batch.resume,
            Resume::Since {
                epoch: "e2".into(),
                offset: 1
            }
        );
        // Without tracking, the position stays where it was.
        assert!(batch.ws_message(Protocol::Herald, message("e2", 9, 4).as_bytes(), false));
        assert!(!batch.ws_message(
            Protocol::Herald,
            br#"{"type":"reconnect","after_ms":5}"#,
            true
        ));
        assert!(batch.ended);
        let seqs: Vec<_> = batch
            .deliveries
            .iter()
            .map(|d| (d.seq, d.sent_us))
            .collect();
        assert_eq!(
            seqs,
            [1, 2, 3, 4].map(|s| (Some(s), Some(1_000 + s))).to_vec()
        );
        assert_eq!(
            batch.resume,
            Resume::Since {
                epoch: "e2".into(),
                offset: 1
            }
        );

        // A plain target's frames are the payload itself; nothing is skipped.
        let mut plain = Batch::default();
        assert!(plain.ws_message(Protocol::Plain, payload(7, 3, 100).as_bytes(), true));
        assert!(plain.ws_message(Protocol::Plain, b"not json", true));
        assert_eq!(
            plain.deliveries,
            [
                Delivery {
                    sent_us: Some(7),
                    seq: Some(3)
                },
                Delivery::default()
            ]
        );
        assert_eq!(plain.resume, Resume::Live);
    }

    #[test]
    fn takes_sse_events() {
        let data = payload(5, 6, 100);
        let event = |kind: Option<&'static [u8]>| Event {
            kind,
            data: data.as_bytes(),
        };
        let mut batch = Batch::default();
        assert!(batch.sse_event(&event(None), Some("e:1"), true));
        assert!(batch.sse_event(&event(Some(b"message")), Some("e:2"), true));
        assert!(batch.sse_event(&event(Some(b"subscribed")), Some("e:3"), true));
        assert_eq!(batch.resume, Resume::LastEventId("e:2".into()));
        assert_eq!(batch.deliveries.len(), 2);
        assert!(!batch.sse_event(&event(Some(b"reconnect")), None, true));
        assert!(batch.ended);
    }

    #[test]
    fn takes_pusher_frames_and_skips_the_rest() {
        let data = payload(1_700_000_000_000_000, 7, 0);
        let frame = serde_json::json!({"event":"message","channel":"bench","data":data});
        let mut batch = Batch::default();
        assert!(batch.ws_message(Protocol::Pusher, frame.to_string().as_bytes(), true));
        assert!(batch.ws_message(
            Protocol::Pusher,
            br#"{"event":"pusher:pong","data":"{}"}"#,
            true
        ));
        assert_eq!(batch.deliveries.len(), 1);
        assert_eq!(batch.deliveries[0].sent_us, Some(1_700_000_000_000_000));
        assert_eq!(batch.deliveries[0].seq, Some(7));
    }

    #[test]
    fn source_addresses_cycle() {
        assert_eq!(source_for(0, 10, 4), Ipv4Addr::new(127, 0, 0, 10));
        assert_eq!(source_for(5, 10, 4), Ipv4Addr::new(127, 0, 0, 11));
    }

    #[test]
    fn herald_subscribes_and_resumes_in_the_websocket_url() {
        let herald = Templates::preset(crate::target::Preset::Herald);
        let since = Resume::Since {
            epoch: "1f".into(),
            offset: 3,
        };
        let cases = [
            ("bench", Resume::Live, "ws://h:1/ws?channel=bench"),
            (
                "bench",
                since.clone(),
                "ws://h:1/ws?channel=bench&since=1f:3",
            ),
            ("", Resume::Live, "ws://h:1/ws"),
        ];
        for (channel, resume, url) in cases {
            assert_eq!(ws_url(&herald, "h:1", channel, &resume), url);
        }
        let nchan = Templates::preset(crate::target::Preset::Nchan);
        assert_eq!(ws_url(&nchan, "h:1", "c", &since), "ws://h:1/sub/c");
    }
}
