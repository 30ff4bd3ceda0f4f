//! What the sites tests share: bystanders that must keep receiving through every refusal, the
//! refusal checks for WebSocket and SSE, a WebSocket client that can set headers and a source
//! address, reloads by `SIGHUP`, and the rejection counters.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use herald_tests::{
    ConfigFile, Delivered, Herald, Position, Request, SSE_TIMEOUT, Site, SseClient, SseNext,
    WS_TIMEOUT, WsClient, WsOptions, metric_value, publish_results,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// The longest wait for something that should take well under a second (a reload applied, a
/// counter updated, a slot freed): generous, for a busy machine.
pub(crate) const CHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the polling waits look again.
pub(crate) const POLL: Duration = Duration::from_millis(20);

/// The `retry:` an SSE limit refusal carries (docs/security.md: 5 s).
pub(crate) const LIMIT_RETRY_MS: u64 = 5000;

/// A Herald with `sites` configured and `top` as the top of the file.
pub(crate) fn start(top: &str, sites: &[&Site]) -> Herald {
    Herald::builder()
        .config_toml(herald_tests::sites_toml(top, sites))
        .start()
}

/// A Herald reading `file` (which a test rewrites before a `SIGHUP`).
pub(crate) fn start_with_file(file: &ConfigFile) -> Herald {
    Herald::builder()
        .arg("--config")
        .arg(file.path_str())
        .start()
}

/// `/ws?key=<site key>` plus `extra` query parameters (`&token=...`).
pub(crate) fn ws_url(herald: &Herald, site: &Site, extra: &str) -> String {
    herald.ws_url(&format!("/ws?key={}{extra}", site.key))
}

/// Connects an anonymous WebSocket client to `site`.
pub(crate) async fn connect(herald: &Herald, site: &Site) -> WsClient {
    WsClient::connect(&ws_url(herald, site, "")).await
}

/// Connects a WebSocket client of `site` with `token` in the query string.
pub(crate) async fn connect_with_token(herald: &Herald, site: &Site, token: &str) -> WsClient {
    WsClient::connect(&ws_url(herald, site, &format!("&token={token}"))).await
}

/// Publishes `data` on `site` with its first secret as bearer; asserts a 200.
pub(crate) async fn publish(herald: &Herald, site: &Site, channel: &str, data: &str) -> Position {
    let response = site
        .publish_request(herald.addr, channel, data)
        .send()
        .await;
    publish_results(&response, &[channel])
        .pop()
        .expect("one result")
}

/// The connection id of a client's `welcome` frame.
pub(crate) fn connection_id(client: &WsClient) -> String {
    client.welcome["connection_id"]
        .as_str()
        .unwrap_or_else(|| panic!("welcome has a string connection_id: {}", client.welcome))
        .to_owned()
}

/// Sends `subscribe` with extra fields (a `signature`) and returns the next frame.
pub(crate) async fn subscribe_with(client: &mut WsClient, channel: &str, extra: Value) -> Value {
    let mut frame = json!({"type": "subscribe", "channel": channel});
    if let (Some(frame), Some(extra)) = (frame.as_object_mut(), extra.as_object()) {
        frame.extend(extra.clone());
    }
    client.send_json(&frame).await;
    client.next_json(WS_TIMEOUT).await
}

/// Subscribes to `channel` and expects an `error` frame `code` naming the channel.
pub(crate) async fn expect_subscribe_refused(client: &mut WsClient, channel: &str, code: &str) {
    client
        .send_json(&json!({"type": "subscribe", "channel": channel}))
        .await;
    let error = client.expect_error(code).await;
    assert_eq!(
        error["channel"], channel,
        "the error names the channel: {error}"
    );
}

/// Asserts `herald_rejections_total{site, reason}` is `expected`, waiting a little for it: a
/// WebSocket close may reach the client a moment before the counter moves.
pub(crate) async fn assert_rejections(herald: &Herald, site: &str, reason: &str, expected: u32) {
    let deadline = Instant::now() + CHANGE_TIMEOUT;
    loop {
        let text = herald.metrics().await;
        let value = metric_value(
            &text,
            "herald_rejections_total",
            &[("site", site), ("reason", reason)],
        );
        if value == f64::from(expected) {
            return;
        }
        assert!(
            value < f64::from(expected) && Instant::now() < deadline,
            "herald_rejections_total{{site={site:?},reason={reason:?}}} is {value}, expected {expected}; \
             the counters:\n{}",
            text.lines()
                .filter(|l| l.starts_with("herald_rejections_total"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(POLL).await;
    }
}

// === refusals ===

/// Opens a WebSocket to `url` and expects the documented refusal after the upgrade: an `error`
/// frame `code` with a message, then close `close_code` whose reason is the code.
pub(crate) async fn expect_ws_refused(url: &str, code: &str, close_code: u16) {
    let stream = WsClient::handshake(url, WsOptions::default()).await;
    expect_refusal_frames(stream, url, code, close_code).await;
}

/// Reads the `error` frame and the close of a refused connection.
pub(crate) async fn expect_refusal_frames(
    mut stream: WebSocketStream<TcpStream>,
    what: &str,
    code: &str,
    close_code: u16,
) {
    let mut frames = Vec::new();
    let close = loop {
        match tokio::time::timeout(WS_TIMEOUT, stream.next()).await {
            Err(_) => panic!("{what}: no close within {WS_TIMEOUT:?}; frames so far {frames:?}"),
            Ok(None) => panic!("{what}: the connection ended without a close; frames {frames:?}"),
            Ok(Some(Err(e))) => panic!("{what}: {e}; frames {frames:?}"),
            Ok(Some(Ok(Message::Text(text)))) => frames.push(text.to_string()),
            Ok(Some(Ok(Message::Close(frame)))) => break frame,
            Ok(Some(Ok(_))) => {}
        }
    };
    let _ = stream.flush().await;
    assert_eq!(
        frames.len(),
        1,
        "{what}: one error frame before the close: {frames:?}"
    );
    let error: Value = serde_json::from_str(&frames[0])
        .unwrap_or_else(|e| panic!("{what}: the frame is not JSON ({e}): {}", frames[0]));
    assert_eq!(error["type"], "error", "{what}: {error}");
    assert_eq!(error["code"], code, "{what}: {error}");
    assert!(error["message"].is_string(), "{what}: {error}");
    let close = close.unwrap_or_else(|| panic!("{what}: the close frame has no code"));
    assert_eq!(
        (u16::from(close.code), close.reason.as_str()),
        (close_code, code),
        "{what}: close code and reason"
    );
}

/// Sends `GET path` as an SSE request with `headers` and expects an error answer `status` with
/// the JSON error body `code`.
pub(crate) async fn expect_sse_error(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    status: u16,
    code: &str,
) {
    let mut sse = sse_with_headers(addr, path, headers).await;
    assert_eq!(
        sse.status, status,
        "{path}: status; headers {:?}",
        sse.headers
    );
    let content_type = sse.header("content-type").unwrap_or_default().to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{path}: Content-Type {content_type}"
    );
    assert_eq!(sse.error_code().await, code, "{path}");
}

/// Expects the SSE form of a limit refusal: a `200` stream with one `event: error` carrying
/// `code`, a `retry:` of 5 s, and the end of the stream.
pub(crate) async fn expect_sse_limit(addr: SocketAddr, path: &str, code: &str) {
    let mut sse = SseClient::connect(addr, path, None).await;
    assert_eq!(
        sse.status, 200,
        "{path}: EventSource gives up on any other status; headers {:?}",
        sse.headers
    );
    let event = sse.next_event(SSE_TIMEOUT).await;
    assert_eq!(event.event, "error", "{path}: {event:?}");
    assert_eq!(event.json()["code"], code, "{path}: {event:?}");
    assert_eq!(sse.retry_ms, Some(LIMIT_RETRY_MS), "{path}: retry");
    assert_eq!(
        sse.try_next_event(SSE_TIMEOUT).await,
        SseNext::Ended,
        "{path}: the stream ends after the error"
    );
}

/// An SSE request with extra headers (`Origin`, `Authorization`).
pub(crate) async fn sse_with_headers(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> SseClient {
    let mut head = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n"
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    SseClient::connect_raw(addr, head.as_bytes()).await
}

/// Reads an SSE stream's `subscribed` events for `channels`, after asserting it is a stream.
pub(crate) async fn expect_stream(sse: &mut SseClient, channels: &[&str]) {
    sse.assert_stream();
    for channel in channels {
        sse.expect_subscribed(channel).await;
    }
}

// === a WebSocket client with headers ===

/// How a [`RawWs`] connects: extra request headers and a local address.
#[derive(Debug, Default, Clone)]
pub(crate) struct Connect {
    /// Request headers added to the upgrade (`Origin`, `Authorization`).
    pub headers: Vec<(&'static str, String)>,
    /// The local address to connect from (another loopback address for per-IP limits).
    pub source: Option<IpAddr>,
}

/// Opens a WebSocket with [`Connect`] options; `Err` carries the status of a refused upgrade.
pub(crate) async fn ws_handshake(
    url: &str,
    options: &Connect,
) -> Result<WebSocketStream<TcpStream>, u16> {
    let mut request = url
        .into_client_request()
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    for (name, value) in &options.headers {
        request.headers_mut().insert(
            *name,
            HeaderValue::from_str(value).unwrap_or_else(|e| panic!("header {name}: {e}")),
        );
    }
    let authority = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("not a ws:// URL: {url}"));
    let addr: SocketAddr = authority.parse().unwrap_or_else(|e| panic!("{url}: {e}"));
    let socket = TcpSocket::new_v4().expect("socket");
    if let Some(ip) = options.source {
        socket
            .bind(SocketAddr::new(ip, 0))
            .unwrap_or_else(|e| panic!("bind {ip}: {e}"));
    }
    let tcp = tokio::time::timeout(WS_TIMEOUT, socket.connect(addr))
        .await
        .unwrap_or_else(|_| panic!("connect to {addr} timed out"))
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    let handshake = tokio_tungstenite::client_async_with_config(request, tcp, None);
    match tokio::time::timeout(WS_TIMEOUT, handshake)
        .await
        .unwrap_or_else(|_| panic!("WebSocket handshake with {url} timed out"))
    {
        Ok((stream, response)) => {
            assert_eq!(response.status(), 101, "{url}: {response:?}");
            Ok(stream)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("WebSocket handshake with {url}: {e}"),
    }
}

/// A WebSocket client opened with headers or from another address; just enough protocol for
/// the tests that need those.
pub(crate) struct RawWs {
    /// The socket.
    stream: WebSocketStream<TcpStream>,
    /// The `welcome` frame.
    pub welcome: Value,
}

impl RawWs {
    /// Connects and reads the `welcome` frame; panics if the upgrade is refused.
    pub(crate) async fn connect(url: &str, options: &Connect) -> RawWs {
        let stream = ws_handshake(url, options)
            .await
            .unwrap_or_else(|status| panic!("{url}: upgrade refused with {status}"));
        let mut client = RawWs {
            stream,
            welcome: Value::Null,
        };
        let welcome = client.next_json().await;
        assert_eq!(welcome["type"], "welcome", "{url}: {welcome}");
        client.welcome = welcome;
        client
    }

    /// Connects to `url` again and again until Herald admits the connection (a slot was freed
    /// or a rate bucket refilled), for at most [`CHANGE_TIMEOUT`].
    pub(crate) async fn connect_once_admitted(url: &str) -> RawWs {
        let deadline = Instant::now() + CHANGE_TIMEOUT;
        loop {
            let stream = ws_handshake(url, &Connect::default())
                .await
                .unwrap_or_else(|status| panic!("{url}: upgrade refused with {status}"));
            let mut client = RawWs {
                stream,
                welcome: Value::Null,
            };
            let first = client.next_json().await;
            if first["type"] == "welcome" {
                client.welcome = first;
                return client;
            }
            let _ = client.stream.close(None).await;
            assert!(
                Instant::now() < deadline,
                "{url}: still refused after {CHANGE_TIMEOUT:?}: {first}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// The next text frame as JSON, skipping control frames.
    pub(crate) async fn next_json(&mut self) -> Value {
        loop {
            let frame = tokio::time::timeout(WS_TIMEOUT, self.stream.next())
                .await
                .unwrap_or_else(|_| panic!("no frame within {WS_TIMEOUT:?}"));
            match frame {
                Some(Ok(Message::Text(text))) => {
                    return serde_json::from_str(&text)
                        .unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Subscribes to `channel` and expects `subscribed`.
    pub(crate) async fn subscribe(&mut self, channel: &str) {
        let frame = json!({"type": "subscribe", "channel": channel}).to_string();
        self.stream
            .send(Message::text(frame))
            .await
            .expect("send subscribe");
        let answer = self.next_json().await;
        assert_eq!(answer["type"], "subscribed", "{channel}: {answer}");
        assert_eq!(answer["channel"], channel, "{answer}");
    }

    /// The next frame as a `message`.
    pub(crate) async fn next_message(&mut self) -> Delivered {
        let frame = self.next_json().await;
        Delivered::parse(&frame.to_string())
    }
}

// === bystanders ===

/// Clients of several sites, connected before a test provokes a refusal, that must keep
/// receiving everything published on their site's `public` channel, in order, through it.
pub(crate) struct Bystanders {
    /// One per site.
    watchers: Vec<Watcher>,
}

/// One bystander: its site, its WebSocket subscribed to `public`, and what it must get next.
struct Watcher {
    /// The site it belongs to (with the secret to publish with).
    site: Site,
    /// Subscribed to `public` of its site.
    ws: WsClient,
    /// The data published on `public` since the last check, in publish order.
    pending: Vec<String>,
    /// The offset of the last message read (or of `subscribed`): every message must follow it
    /// by exactly one, so that a refused publish that slipped through shows as a gap.
    last: Position,
    /// How many rounds were published, to make each payload unique.
    rounds: u32,
}

impl Bystanders {
    /// Connects one WebSocket per site (with a token on a private site) and subscribes it to
    /// `public`.
    pub(crate) async fn connect(herald: &Herald, sites: &[&Site]) -> Bystanders {
        let mut watchers = Vec::new();
        for site in sites {
            let mut ws = if site.mode.as_deref() == Some("private") {
                connect_with_token(herald, site, &site.token("bystander", 3600)).await
            } else {
                connect(herald, site).await
            };
            let subscribed = ws.subscribe("public").await;
            watchers.push(Watcher {
                site: (*site).clone(),
                ws,
                pending: Vec::new(),
                last: Position::from_json(&subscribed),
                rounds: 0,
            });
        }
        Bystanders { watchers }
    }

    /// Publishes one message to `public` on every bystander's site (with the site's secret).
    pub(crate) async fn publish(&mut self, herald: &Herald, label: &str) {
        for i in 0..self.watchers.len() {
            self.publish_on(herald, i, label).await;
        }
    }

    /// Publishes one message to `public` on the site of bystander `index` only.
    pub(crate) async fn publish_on(&mut self, herald: &Herald, index: usize, label: &str) {
        let watcher = &mut self.watchers[index];
        watcher.rounds += 1;
        let data =
            json!({"bystander": label, "site": watcher.site.id, "n": watcher.rounds}).to_string();
        publish(herald, &watcher.site, "public", &data).await;
        watcher.pending.push(data);
    }

    /// Records that the test itself published `data` to `public` on the site of bystander
    /// `index`, so that the bystander must get it too, in that place.
    pub(crate) fn published(&mut self, index: usize, data: &str) {
        self.watchers[index].pending.push(data.to_owned());
    }

    /// Asserts that every bystander got exactly what was published on its site since the last
    /// check, in order, with consecutive offsets.
    pub(crate) async fn assert_received(&mut self) {
        for watcher in &mut self.watchers {
            let site = watcher.site.id.clone();
            for (i, data) in std::mem::take(&mut watcher.pending).iter().enumerate() {
                let message = watcher.ws.next_message(WS_TIMEOUT).await;
                assert_eq!(
                    (message.channel.as_str(), message.data.as_str()),
                    ("public", data.as_str()),
                    "bystander of site {site}: message {i} since the last check"
                );
                assert_eq!(
                    message.position,
                    Position {
                        epoch: watcher.last.epoch.clone(),
                        offset: watcher.last.offset + 1
                    },
                    "bystander of site {site}: offsets follow each other (nothing else was published)"
                );
                watcher.last = message.position;
            }
        }
    }
}

// === reloads ===

/// Sends `SIGHUP` to Herald (reload its configuration).
pub(crate) fn sighup(herald: &Herald) {
    let pid = Pid::from_raw(i32::try_from(herald.pid()).expect("pid fits in i32"));
    kill(pid, Signal::SIGHUP).unwrap_or_else(|e| panic!("kill -HUP {pid}: {e}"));
}

/// `herald_config_reloads_total{result}` now.
pub(crate) async fn reloads(herald: &Herald, result: &str) -> f64 {
    metric_value(
        &herald.metrics().await,
        "herald_config_reloads_total",
        &[("result", result)],
    )
}

/// Sends `SIGHUP` and waits until `herald_config_reloads_total{result}` reaches `expected` (the
/// reload has then been applied or refused).
pub(crate) async fn reload_and_wait(herald: &Herald, result: &str, expected: u32) {
    sighup(herald);
    let deadline = Instant::now() + CHANGE_TIMEOUT;
    loop {
        let value = reloads(herald, result).await;
        if value >= f64::from(expected) {
            assert_eq!(
                value,
                f64::from(expected),
                "herald_config_reloads_total{{result={result:?}}}"
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "herald_config_reloads_total{{result={result:?}}} still {value} after {CHANGE_TIMEOUT:?}, expected {expected}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// `GET /api/history?channel=...` with the site's bearer secret.
pub(crate) async fn history(herald: &Herald, site: &Site, channel: &str) -> Value {
    let response = Request::get(herald.addr, &format!("/api/history?channel={channel}"))
        .bearer(site.secret())
        .send()
        .await;
    assert_eq!(response.status, 200, "history: {}", response.text());
    response.json()
}
