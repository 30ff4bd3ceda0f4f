//! Native TLS (`tls.cert`, `tls.key`): `wss://`, `https://` and SSE over
//! TLS on one port, with rustls' client, tungstenite's WebSocket client and
//! Chromium; messages larger than one TLS record; plain HTTP on the TLS port
//! told what to use; a SIGHUP that presents a renewed certificate to new
//! clients while open connections carry on, and a broken one refused; bad
//! TLS settings exit 64; a `wss://` client that stops reading cut off as a
//! slow consumer, and one that sends bytes no key opens, while a neighbour
//! on the same channel loses nothing.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use herald_tests::{
    Herald, metric_value,
    tls::{ServerFiles, TLS_TIMEOUT, TestCa, https, tls_connect, tls_over, wss, wss_over},
};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::{WebSocketStream, tungstenite::Message};

use crate::node_script::{Node, browser_dir, check_dependencies};

fn start(files: &ServerFiles) -> Herald {
    Herald::builder()
        .env("HERALD_TLS_CERT", files.cert_str())
        .env("HERALD_TLS_KEY", files.key_str())
        .start()
}

/// The next JSON text frame, skipping pings.
async fn next_json<S>(socket: &mut WebSocketStream<S>) -> Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let frame = tokio::time::timeout(TLS_TIMEOUT, socket.next())
            .await
            .expect("a frame in time")
            .expect("the connection open")
            .expect("a frame");
        if let Message::Text(text) = frame {
            return serde_json::from_str(&text).expect("JSON");
        }
    }
}

/// A WebSocket opened on a URL channel: `welcome`, then its `subscribed`.
async fn expect_opening<S>(socket: &mut WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    assert_eq!(next_json(socket).await["type"], "welcome");
    assert_eq!(next_json(socket).await["type"], "subscribed");
}

/// The next message's `data` on a WebSocket, past `welcome` and `subscribed`.
async fn next_data<S>(socket: &mut WebSocketStream<S>) -> Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let frame = next_json(socket).await;
        if frame["type"] == "message" {
            return frame["data"].clone();
        }
    }
}

async fn publish(herald: &Herald, connector: &TlsConnector, channel: &str, data: &Value) {
    let body = json!({ "channel": channel, "data": data }).to_string();
    let (status, answer) = https(herald.addr, connector, "POST", "/api/publish", &body).await;
    assert_eq!(status, 200, "publish over https: {answer}");
}

async fn metrics(herald: &Herald, connector: &TlsConnector) -> String {
    let (status, text) = https(herald.addr, connector, "GET", "/metrics", "").await;
    assert_eq!(status, 200);
    text
}

/// A request over TLS written by hand, its answer read as text (an SSE
/// stream, or a keep-alive connection).
struct TlsSse {
    stream: tokio_rustls::client::TlsStream<TcpStream>,
    seen: String,
}

impl TlsSse {
    async fn open(herald: &Herald, connector: &TlsConnector, path: &str) -> TlsSse {
        let mut stream = tls_connect(herald.addr, connector).await.expect("TLS");
        let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        TlsSse {
            stream,
            seen: String::new(),
        }
    }

    /// Reads until `wanted` has been seen (from the start of the stream).
    async fn until(&mut self, wanted: &str) {
        let deadline = Instant::now() + TLS_TIMEOUT;
        let mut buffer = vec![0u8; 64 * 1024];
        while !self.seen.contains(wanted) {
            let left = deadline.saturating_duration_since(Instant::now());
            let read = tokio::time::timeout(left, self.stream.read(&mut buffer))
                .await
                .unwrap_or_else(|_| panic!("{wanted:?} not seen; the stream so far: {}", self.seen))
                .expect("read");
            assert!(read > 0, "stream ended before {wanted:?}: {}", self.seen);
            self.seen
                .push_str(&String::from_utf8_lossy(&buffer[..read]));
        }
    }
}

#[tokio::test]
async fn wss_https_and_sse_share_the_tls_port_and_carry_large_messages() {
    let ca = TestCa::new("one-port");
    let files = ca.issue();
    let herald = start(&files);
    let connector = ca.connector();

    let (status, body) = https(herald.addr, &connector, "GET", "/healthz", "").await;
    assert_eq!((status, body.trim()), (200, "ok"));

    let mut socket = wss(herald.addr, &connector, "/ws?channel=news").await;
    expect_opening(&mut socket).await;
    let mut sse = TlsSse::open(&herald, &connector, "/sse?channel=news").await;
    sse.until("event: subscribed").await;

    // Three records' worth, then small ones: each arrives whole and in order.
    let large = "x".repeat(40_000);
    publish(&herald, &connector, "news", &json!(large)).await;
    for n in 0..5 {
        publish(&herald, &connector, "news", &json!({ "n": n })).await;
    }
    assert_eq!(next_data(&mut socket).await, json!(large));
    for n in 0..5 {
        assert_eq!(next_data(&mut socket).await, json!({ "n": n }));
    }
    sse.until(&large).await;
    sse.until(r#"{"n":4}"#).await;
    let first = sse.seen.find(&large).expect("the large message");
    assert!(sse.seen[first..].find(r#"{"n":0}"#) < sse.seen[first..].find(r#"{"n":4}"#));

    // A client frame: a subscribe over wss is answered.
    socket
        .send(Message::text(r#"{"type":"subscribe","channel":"more"}"#))
        .await
        .expect("send");
    let subscribed = next_json(&mut socket).await;
    assert_eq!(
        (subscribed["type"].as_str(), subscribed["channel"].as_str()),
        (Some("subscribed"), Some("more"))
    );

    // `/ws` on a keep-alive connection after another request is hyper's
    // upgrade: its socket, a TLS one, is handed to the session as well.
    let mut reused = TlsSse::open(&herald, &connector, "/healthz").await;
    reused.until("ok").await;
    reused
        .stream
        .write_all(
            b"GET /ws?channel=news HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
              Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
              Sec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .expect("write");
    reused.until("101 Switching Protocols").await;
    reused.until(r#""type":"welcome""#).await;

    let text = metrics(&herald, &connector).await;
    assert_eq!(
        metric_value(&text, "herald_connections", &[("transport", "ws")]),
        2.0
    );
    assert!(metric_value(&text, "herald_tls_handshakes_total", &[("result", "ok")]) >= 5.0);
}

#[tokio::test]
async fn plain_http_on_the_tls_port_is_told_to_use_https_and_untrusted_clients_fail() {
    let ca = TestCa::new("plain");
    let files = ca.issue();
    let herald = start(&files);
    let connector = ca.connector();

    let mut plain = TcpStream::connect(herald.addr).await.expect("connect");
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    let mut answer = String::new();
    tokio::time::timeout(TLS_TIMEOUT, plain.read_to_string(&mut answer))
        .await
        .expect("an answer in time")
        .expect("read");
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(answer.contains("use https:// or wss://"), "{answer}");

    // A client that trusts another authority refuses the certificate; the
    // server carries on.
    let stranger = TestCa::new("stranger").connector();
    assert!(tls_connect(herald.addr, &stranger).await.is_err());

    let deadline = Instant::now() + TLS_TIMEOUT;
    loop {
        let text = metrics(&herald, &connector).await;
        let not_tls = metric_value(
            &text,
            "herald_tls_handshakes_total",
            &[("result", "not_tls")],
        );
        let failed = metric_value(
            &text,
            "herald_tls_handshakes_total",
            &[("result", "failed")],
        ) + metric_value(
            &text,
            "herald_tls_handshakes_total",
            &[("result", "hung_up")],
        );
        if not_tls == 1.0 && failed >= 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "handshake counts: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sighup(herald: &Herald) {
    let pid = Pid::from_raw(i32::try_from(herald.pid()).expect("pid fits in i32"));
    kill(pid, Signal::SIGHUP).expect("kill -HUP");
}

/// Waits until `herald_config_reloads_total{result}` is `expected`, asking
/// with `connector`.
async fn reloads_reach(herald: &Herald, connector: &TlsConnector, result: &str, expected: f64) {
    let deadline = Instant::now() + TLS_TIMEOUT;
    loop {
        let text = metrics(herald, connector).await;
        let value = metric_value(&text, "herald_config_reloads_total", &[("result", result)]);
        if value == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "reloads {{result={result}}}: {value}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sighup_presents_a_renewed_certificate_and_open_connections_carry_on() {
    let old_ca = TestCa::new("old");
    let new_ca = TestCa::new("new");
    let files = old_ca.issue();
    let herald = start(&files);
    let (old, new) = (old_ca.connector(), new_ca.connector());

    let mut socket = wss(herald.addr, &old, "/ws?channel=feed").await;
    expect_opening(&mut socket).await;
    let mut sse = TlsSse::open(&herald, &old, "/sse?channel=feed").await;
    sse.until("event: subscribed").await;
    assert!(
        tls_connect(herald.addr, &new).await.is_err(),
        "not renewed yet"
    );

    // The renewal: new files at the same paths, then SIGHUP.
    new_ca.write(&files.cert, &files.key);
    sighup(&herald);
    let deadline = Instant::now() + TLS_TIMEOUT;
    while tls_connect(herald.addr, &new).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the renewed certificate never presented"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    reloads_reach(&herald, &new, "ok", 1.0).await;
    // A client with no session to resume (a resumed one is shown no
    // certificate) no longer gets the old one.
    assert!(
        tls_connect(herald.addr, &old_ca.connector()).await.is_err(),
        "the old certificate is no longer presented"
    );

    // Connections from before the reload still get what is published.
    publish(&herald, &new, "feed", &json!("after the renewal")).await;
    assert_eq!(next_data(&mut socket).await, json!("after the renewal"));
    sse.until("after the renewal").await;

    // A broken certificate is refused: the reload changes nothing.
    std::fs::write(&files.cert, "-----BEGIN CERTIFICATE-----\nnot base64\n").expect("write");
    sighup(&herald);
    reloads_reach(&herald, &new, "error", 1.0).await;
    publish(&herald, &new, "feed", &json!("still served")).await;
    assert_eq!(next_data(&mut socket).await, json!("still served"));
    assert!(herald.log().contains("tls.cert"), "{}", herald.log());
}

#[test]
fn tls_settings_that_cannot_work_exit_64_naming_the_key() {
    let ca = TestCa::new("bad");
    let files = ca.issue();
    let other = ca.issue();
    let cases = [
        (vec![("HERALD_TLS_CERT", files.cert_str())], "tls.key"),
        (vec![("HERALD_TLS_KEY", files.key_str())], "tls.cert"),
        (
            vec![
                ("HERALD_TLS_CERT", "/nonexistent/cert.pem".to_string()),
                ("HERALD_TLS_KEY", files.key_str()),
            ],
            "tls.cert",
        ),
        (
            vec![
                ("HERALD_TLS_CERT", files.cert_str()),
                ("HERALD_TLS_KEY", other.key_str()),
            ],
            "does not belong",
        ),
    ];
    for (env, wanted) in cases {
        let mut builder = Herald::builder();
        for (key, value) in &env {
            builder = builder.env(*key, value.clone());
        }
        let finished = builder.run_to_exit(Duration::from_secs(10));
        assert_eq!(
            finished.status.code(),
            Some(64),
            "{env:?}: {}",
            finished.stderr
        );
        assert!(
            finished.stderr.contains(wanted),
            "{env:?}: expected {wanted:?} in {}",
            finished.stderr
        );
    }
}

/// The demo page in Chromium over `https://`: herald.js connects with
/// `wss://` (the page's own scheme, no fallback), both panels go live, and
/// a notice posted with the page's form shows in both.
#[test]
fn the_demo_page_works_over_https_and_wss_in_chromium() {
    let browser_dir = browser_dir();
    check_dependencies(&browser_dir);
    let ca = TestCa::new("browser");
    let files = ca.issue();
    let herald = start(&files);
    let base_url = format!("https://localhost:{}", herald.addr.port());
    let mut node = Node::spawn(&browser_dir, "demo.mjs", &[&base_url]);
    node.expect("READY", Duration::from_secs(45));
    node.send("POST 1 a notice over TLS");
    node.expect("SEEN 1", Duration::from_secs(25));
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let text = runtime.block_on(metrics(&herald, &ca.connector()));
    // The page's one Herald client carries both panels.
    assert_eq!(
        metric_value(&text, "herald_connections", &[("transport", "ws")]),
        1.0,
        "the page on wss://: {text}"
    );
    node.send("DONE");
    node.expect("BYE", Duration::from_secs(20));
}

/// `herald_disconnects_total{reason, transport="ws"}` now.
async fn ws_disconnects(herald: &Herald, connector: &TlsConnector, reason: &str) -> f64 {
    let text = metrics(herald, connector).await;
    metric_value(
        &text,
        "herald_disconnects_total",
        &[("reason", reason), ("transport", "ws")],
    )
}

#[tokio::test]
async fn a_wss_client_that_stops_reading_is_cut_off_and_its_neighbour_loses_nothing() {
    const OUTBOX_MAX_BYTES: usize = 65_536;
    let ca = TestCa::new("slow");
    let files = ca.issue();
    let herald = Herald::builder()
        .env("HERALD_TLS_CERT", files.cert_str())
        .env("HERALD_TLS_KEY", files.key_str())
        .env(
            "HERALD_CONNECTION_OUTBOX_MAX_BYTES",
            OUTBOX_MAX_BYTES.to_string(),
        )
        .start();
    let connector = ca.connector();

    // The stalled client: a small receive buffer, and it never reads again.
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let tcp = socket.connect(herald.addr).await.expect("connect");
    let stream = tls_over(tcp, &connector).await.expect("TLS");
    let mut stalled = wss_over(stream, "/ws?channel=firehose").await;
    expect_opening(&mut stalled).await;
    let mut neighbour = wss(herald.addr, &connector, "/ws?channel=firehose").await;
    expect_opening(&mut neighbour).await;

    // Published one at a time, each once the neighbour has it: the
    // neighbour keeps up, the stalled client's socket and outbox fill.
    let pad = "x".repeat(16 * 1024);
    let mut published = 0;
    while ws_disconnects(&herald, &connector, "slow_consumer").await < 1.0 {
        assert!(
            published < 2_000,
            "no slow-consumer close after {published} messages"
        );
        publish(
            &herald,
            &connector,
            "firehose",
            &json!({ "n": published, "pad": pad }),
        )
        .await;
        let data = next_data(&mut neighbour).await;
        assert_eq!(
            data["n"], published,
            "the neighbour gets every message in order"
        );
        published += 1;
    }
    publish(&herald, &connector, "firehose", &json!({ "n": published })).await;
    assert_eq!(next_data(&mut neighbour).await["n"], published);
}

#[tokio::test]
async fn bytes_no_key_opens_end_that_connection_only() {
    let ca = TestCa::new("garbage");
    let files = ca.issue();
    let herald = start(&files);
    let connector = ca.connector();
    let mut neighbour = wss(herald.addr, &connector, "/ws?channel=news").await;
    expect_opening(&mut neighbour).await;

    // After a good handshake and upgrade, a record that does not decrypt.
    let stream = tls_connect(herald.addr, &connector).await.expect("TLS");
    let mut socket = wss_over(stream, "/ws?channel=news").await;
    assert_eq!(next_json(&mut socket).await["type"], "welcome");
    let mut tls = socket.into_inner();
    let forged = [0x17, 3, 3, 0, 40]
        .iter()
        .copied()
        .chain([0xab; 40])
        .collect::<Vec<u8>>();
    tls.get_mut().0.write_all(&forged).await.expect("write");
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(TLS_TIMEOUT, tls.get_mut().0.read_to_end(&mut rest)).await;
    assert!(
        ended.is_ok(),
        "the server closes a connection whose records do not open"
    );

    publish(&herald, &connector, "news", &json!("still here")).await;
    assert_eq!(next_data(&mut neighbour).await, json!("still here"));
}
