//! The listener before a request is known: partial request lines cost no CPU and end with their
//! peers, the cap on pending connections, the header deadline, TCP keepalive on SSE streams, the
//! `metrics.listen` listener, and `GET /ws` on a fresh connection, answered off hyper.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use herald_tests::{Herald, Request, SSE_TIMEOUT, SseClient, free_port, metric_value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Generous bound for a condition to come true on a loaded machine.
const WAIT: Duration = Duration::from_secs(20);

/// CPU seconds (user + system) the process has used so far, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/pid/stat");
    // The command name, in parentheses, may hold spaces: count fields after it.
    let after_name = &stat[stat.rfind(')').expect("stat has a name") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of the whole line (utime, stime) are 12 and 13 after the name.
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / clock_ticks_per_second()
}

fn clock_ticks_per_second() -> f64 {
    let out = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("getconf");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(100.0)
}

/// CPU seconds the process spends over `window`.
async fn cpu_over(pid: u32, window: Duration) -> f64 {
    let before = cpu_seconds(pid);
    tokio::time::sleep(window).await;
    cpu_seconds(pid) - before
}

async fn metric(herald: &Herald, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric_value(&herald.metrics().await, name, labels)
}

/// Waits until `name{labels}` equals `want`.
async fn wait_for_metric(herald: &Herald, name: &str, labels: &[(&str, &str)], want: f64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let value = metric(herald, name, labels).await;
        if value == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name}{labels:?} is {value}, not {want}, after {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Opens `count` connections that each send the first byte of a request line and no more.
async fn partial_lines(addr: SocketAddr, count: usize) -> Vec<TcpStream> {
    let mut sockets = Vec::with_capacity(count);
    for _ in 0..count {
        let mut socket = TcpStream::connect(addr).await.expect("connect");
        socket.write_all(b"G").await.expect("send G");
        sockets.push(socket);
    }
    sockets
}

/// Whether the server closed `socket` (end of stream, after any answer, or reset) within `within`.
async fn closed_by_server(socket: &mut TcpStream, within: Duration) -> bool {
    let mut answer = Vec::new();
    tokio::time::timeout(within, socket.read_to_end(&mut answer))
        .await
        .is_ok()
}

#[tokio::test]
async fn partial_request_lines_cost_no_cpu_and_end_with_their_peers() {
    const SOCKETS: usize = 500;
    let herald = Herald::start();
    let sockets = partial_lines(herald.addr, SOCKETS).await;
    // Polling each socket every 5 ms costs whole seconds of CPU here; waiting for readability
    // costs nothing. The bound is far above what an idle process uses (accepting the sockets
    // included), even a debug build on a loaded machine: it counts CPU, not wall-clock time.
    let open = cpu_over(herald.pid(), Duration::from_secs(3)).await;
    assert!(
        open < 0.3,
        "{SOCKETS} silent half-sent requests cost {open:.2} CPU-s over 3 s"
    );
    wait_for_metric(&herald, "herald_connections_pending", &[], SOCKETS as f64).await;

    drop(sockets);
    wait_for_metric(&herald, "herald_connections_pending", &[], 0.0).await;
    assert_eq!(
        metric(
            &herald,
            "herald_pending_connections_closed_total",
            &[("reason", "hung_up")]
        )
        .await,
        SOCKETS as f64
    );
    let closed = cpu_over(herald.pid(), Duration::from_secs(2)).await;
    assert!(
        closed < 0.1,
        "after their peers hung up, the server still spent {closed:.2} CPU-s over 2 s"
    );
    // A request sent whole, FIN included (`nc`, scripts), is still answered: the FIN ends a
    // pending connection only when its request line is incomplete.
    let mut whole = TcpStream::connect(herald.addr).await.unwrap();
    whole
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    whole.shutdown().await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(WAIT, whole.read_to_string(&mut answer))
        .await
        .expect("an answer")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn a_silent_connection_is_closed_at_the_header_deadline() {
    let herald = Herald::builder()
        .env("HERALD_LISTENER_HEADER_TIMEOUT_SECS", "1")
        .start();
    let mut silent = TcpStream::connect(herald.addr).await.unwrap();
    let mut partial = partial_lines(herald.addr, 1).await.remove(0);
    let mut sse = TcpStream::connect(herald.addr).await.unwrap();
    sse.write_all(b"GET /sse?channel=public HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut http = TcpStream::connect(herald.addr).await.unwrap();
    http.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    for (name, socket) in [
        ("silent", &mut silent),
        ("partial line", &mut partial),
        ("partial SSE head", &mut sse),
        ("partial HTTP head", &mut http),
    ] {
        assert!(
            closed_by_server(socket, WAIT).await,
            "{name}: still open {WAIT:?} after a 1 s header deadline"
        );
    }
    wait_for_metric(&herald, "herald_connections_pending", &[], 0.0).await;
    assert_eq!(
        metric(
            &herald,
            "herald_pending_connections_closed_total",
            &[("reason", "header_timeout")]
        )
        .await,
        2.0,
        "the two whose request line never came"
    );
}

#[tokio::test]
async fn past_max_pending_new_connections_are_closed_at_once() {
    const CAP: usize = 20;
    let herald = Herald::builder()
        .env("HERALD_LISTENER_MAX_PENDING", CAP.to_string())
        .start();
    let held = partial_lines(herald.addr, CAP).await;
    // Scraping /metrics takes a place too while its request is read, so wait on the count
    // through the log-free way: one more connection is refused once all are taken.
    let deadline = Instant::now() + WAIT;
    loop {
        let mut extra = TcpStream::connect(herald.addr).await.unwrap();
        extra.write_all(b"G").await.unwrap();
        if closed_by_server(&mut extra, Duration::from_millis(500)).await {
            break;
        }
        drop(extra);
        assert!(
            Instant::now() < deadline,
            "a connection past {CAP} pending ones was not closed"
        );
    }
    drop(held);
    // Places come back once the peers are gone: the server answers again.
    let deadline = Instant::now() + WAIT;
    loop {
        let mut probe = TcpStream::connect(herald.addr).await.unwrap();
        let _ = probe
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await;
        let mut answer = String::new();
        let _ = tokio::time::timeout(WAIT, probe.read_to_string(&mut answer)).await;
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no answer after the pending ones left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        metric(
            &herald,
            "herald_pending_connections_closed_total",
            &[("reason", "limit")]
        )
        .await
            >= 1.0
    );
}

#[tokio::test]
async fn sse_streams_have_tcp_keepalive() {
    let herald = Herald::start();
    let mut sse = SseClient::connect(herald.addr, "/sse?channel=public", None).await;
    sse.assert_stream();
    sse.expect_subscribed("public").await;
    // The server's side of the stream: its source port is the listener's.
    let port = herald.addr.port();
    let filter = format!("( sport = :{port} )");
    let deadline = Instant::now() + WAIT;
    loop {
        let out = Command::new("ss")
            .args(["-tnoH", "state", "established", &filter])
            .output()
            .expect("ss");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if text.contains("timer:(keepalive") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no keepalive timer on the server side of the SSE stream:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The stream is still a stream.
    let position = herald.publish("public", "1").await;
    assert_eq!(sse.next_message(SSE_TIMEOUT).await.position, position);
}

#[tokio::test]
async fn metrics_listen_serves_metrics_and_the_main_listener_does_not() {
    let metrics_port = free_port();
    let herald = Herald::builder()
        .arg("--metrics-listen")
        .arg(format!("127.0.0.1:{metrics_port}"))
        .start();
    let metrics_addr: SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    let scraped = herald_tests::Request::get(metrics_addr, "/metrics")
        .send()
        .await;
    assert_eq!(scraped.status, 200, "{}", scraped.text());
    assert!(scraped.text().contains("herald_connections_pending"));
    for path in ["/healthz", "/readyz"] {
        let answer = herald_tests::Request::get(metrics_addr, path).send().await;
        assert_eq!(answer.status, 200, "{path} on the metrics listener");
        assert_eq!(herald.get(path).await.status, 200, "{path} on the main one");
    }
    herald.get("/metrics").await.assert_error(404, "not_found");
    herald_tests::Request::get(metrics_addr, "/ws")
        .send()
        .await
        .assert_error(404, "not_found");
}

/// The head of a WebSocket upgrade for `target`, with `extra` header lines.
fn upgrade_head(target: &str, version: &str, extra: &str) -> String {
    format!(
        "GET {target} HTTP/1.1\r\nHost: herald\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: {version}\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    )
}

/// A masked text frame from a client (the mask is zero, so the payload stays readable).
fn client_text_frame(text: &str) -> Vec<u8> {
    assert!(text.len() < 126);
    let mut frame = vec![0x81, 0x80 | text.len() as u8, 0, 0, 0, 0];
    frame.extend_from_slice(text.as_bytes());
    frame
}

/// `GET /ws` on a fresh connection is read and answered by the listener itself, not hyper: its
/// refusals are hyper's (status, error code, the header that says what to send instead), and a
/// first frame sent right behind the head is served.
#[tokio::test]
async fn ws_upgrades_on_fresh_connections_are_checked_and_served() {
    let herald = Herald::start();
    let wrong_version = Request::get(herald.addr, "/ws")
        .header("Connection", "keep-alive, Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "8")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await;
    wrong_version.assert_error(426, "upgrade_required");
    assert_eq!(wrong_version.header("sec-websocket-version"), Some("13"));

    let no_key = Request::get(herald.addr, "/ws")
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .send()
        .await;
    no_key.assert_error(400, "bad_request");

    let mut many = Request::get(herald.addr, "/ws");
    for i in 0..110 {
        many = many.header(&format!("X-Filler-{i}"), "x");
    }
    many.send().await.assert_error(431, "headers_too_large");

    // The head and the first frame in one write: the frame reaches the session.
    let mut socket = TcpStream::connect(herald.addr).await.expect("connect");
    let mut request = upgrade_head("/ws", "13", "").into_bytes();
    request.extend(client_text_frame(
        r#"{"type":"subscribe","channel":"public"}"#,
    ));
    socket.write_all(&request).await.expect("send");
    let mut seen = Vec::new();
    let deadline = Instant::now() + WAIT;
    while !String::from_utf8_lossy(&seen).contains(r#""type":"subscribed""#) {
        let mut chunk = [0u8; 1024];
        let read = tokio::time::timeout_at(deadline.into(), socket.read(&mut chunk))
            .await
            .expect("subscribed within the time limit")
            .expect("read");
        assert!(read > 0, "closed; got {:?}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&chunk[..read]);
    }
    let seen = String::from_utf8_lossy(&seen);
    assert!(
        seen.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{seen}"
    );
    assert!(
        seen.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
        "{seen}"
    );
    let welcome = seen.find(r#""type":"welcome""#).expect("welcome");
    assert!(welcome < seen.find(r#""type":"subscribed""#).unwrap());
    assert_eq!(
        metric(
            &herald,
            "herald_http_requests_total",
            &[("route", "ws"), ("status", "101")]
        )
        .await,
        1.0
    );
}
