//! `GET /ws?channel=…&since=…`: a WebSocket subscribed in its URL, with no `subscribe` frame.
//! The opening frames (`welcome`, one `subscribed` per channel in URL order, what each missed),
//! the refusals of URL channels (an `error` frame and a close code, after the upgrade, as every
//! admission refusal on `/ws`), a frame subscribe on top, and the same on hyper's path (`/ws` as
//! the second request of a keep-alive connection).

use futures_util::{SinkExt, StreamExt};
use herald_tests::{Delivered, Herald, Position, Site, WS_TIMEOUT, WsClient, WsOptions};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_tungstenite::{WebSocketStream, tungstenite::Message};

/// Reads the next text frame of a raw stream as JSON, skipping pings.
async fn next_json(stream: &mut WebSocketStream<TcpStream>) -> Value {
    loop {
        match tokio::time::timeout(WS_TIMEOUT, stream.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                return serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
            }
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Checks that `frame` is `subscribed` to `channel`, and returns its position.
fn subscribed(frame: &Value, channel: &str) -> Position {
    assert_eq!(frame["type"], "subscribed", "{frame}");
    assert_eq!(frame["channel"], channel, "{frame}");
    Position::from_json(frame)
}

/// Upgrades `path` and reads what the server says up to its close: one `error` frame with
/// `code`, then the close with `close_code`, and nothing else (not even `welcome`).
async fn expect_refused(herald: &Herald, path: &str, code: &str, close_code: u16) {
    let mut stream = WsClient::handshake(&herald.ws_url(path), WsOptions::default()).await;
    let mut frames = Vec::new();
    let close = loop {
        match tokio::time::timeout(WS_TIMEOUT, stream.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => frames.push(text.to_string()),
            Ok(Some(Ok(Message::Close(frame)))) => break frame,
            Ok(Some(Ok(_))) => {}
            other => panic!("{path}: expected frames then a close, got {other:?}; {frames:?}"),
        }
    };
    let _ = stream.flush().await;
    assert_eq!(frames.len(), 1, "{path}: one error frame: {frames:?}");
    let error: Value = serde_json::from_str(&frames[0]).expect("JSON");
    assert_eq!(error["type"], "error", "{path}: {error}");
    assert_eq!(error["code"], code, "{path}: {error}");
    let close = close.unwrap_or_else(|| panic!("{path}: a close frame with a code"));
    assert_eq!(u16::from(close.code), close_code, "{path}: {close:?}");
}

#[tokio::test]
async fn channels_in_the_url_are_subscribed_without_a_frame() {
    let herald = Herald::start();
    let mut ws = WsClient::connect(&herald.ws_url("/ws?channel=a&channel=b")).await;
    subscribed(&ws.next_json(WS_TIMEOUT).await, "a");
    subscribed(&ws.next_json(WS_TIMEOUT).await, "b");

    let to_a = herald.publish("a", r#"{"n":1}"#).await;
    let to_b = herald.publish("b", r#"{"n":2}"#).await;
    let [a, b] = next_two_by_channel(&mut ws).await;
    assert_eq!((a.channel.as_str(), &a.position), ("a", &to_a));
    assert_eq!(a.data, r#"{"n":1}"#);
    assert_eq!((b.channel.as_str(), &b.position), ("b", &to_b));
    assert_eq!(b.data, r#"{"n":2}"#);
}

#[tokio::test]
async fn since_in_the_url_replays_exactly_what_was_missed() {
    let herald = Herald::start();
    let first = herald.publish("r", r#"{"n":1}"#).await;
    herald.publish("r", r#"{"n":2}"#).await;
    herald.publish("r", r#"{"n":3}"#).await;
    let other = herald.publish("s", r#"{"m":1}"#).await;

    let path = format!("/ws?channel=r&since={}", first.cursor());
    let mut ws = WsClient::connect(&herald.ws_url(&path)).await;
    let frame = ws.next_json(WS_TIMEOUT).await;
    assert_eq!(subscribed(&frame, "r"), first, "subscribed echoes since");
    assert_eq!(frame["recovered"], true, "{frame}");
    for n in 2..=3 {
        let message = ws.next_message(WS_TIMEOUT).await;
        assert_eq!(message.position.offset, first.offset + n - 1);
        assert_eq!(message.data, format!(r#"{{"n":{n}}}"#));
    }
    let live = herald.publish("r", r#"{"n":4}"#).await;
    assert_eq!(
        ws.next_message(WS_TIMEOUT).await.position,
        live,
        "live next"
    );

    // Two channels, one position each in URL order: every `subscribed` first, then each
    // channel's gap.
    let path = format!(
        "/ws?channel=s&channel=r&since={},{}",
        other.cursor(),
        live.cursor()
    );
    let mut ws = WsClient::connect(&herald.ws_url(&path)).await;
    assert_eq!(subscribed(&ws.next_json(WS_TIMEOUT).await, "s"), other);
    assert_eq!(subscribed(&ws.next_json(WS_TIMEOUT).await, "r"), live);
    let late = herald.publish("s", r#"{"m":2}"#).await;
    assert_eq!(ws.next_message(WS_TIMEOUT).await.position, late);
}

#[tokio::test]
async fn url_channels_are_refused_after_the_upgrade() {
    let herald = Herald::builder()
        .env("HERALD_LIMITS_COMMAND_RATE", "0")
        .env("HERALD_LIMITS_NEW_CHANNEL_RATE", "1")
        .env("HERALD_LIMITS_NEW_CHANNEL_BURST", "2")
        .start();
    // Takes the first token of the new-channel bucket.
    let mut bystander = WsClient::connect(&herald.ws_url("/ws?channel=public")).await;
    subscribed(&bystander.next_json(WS_TIMEOUT).await, "public");

    let many: Vec<String> = (0..129).map(|i| format!("channel=c{i}")).collect();
    let cases = [
        ("/ws?channel=bad%20name".to_owned(), "invalid_channel"),
        ("/ws?channel=".to_owned(), "invalid_channel"),
        (
            "/ws?channel=public&channel=public".to_owned(),
            "duplicate_channel",
        ),
        (format!("/ws?{}", many.join("&")), "too_many_channels"),
        (
            "/ws?channel=public&since=nope".to_owned(),
            "bad_last_event_id",
        ),
        (
            "/ws?channel=public&since=1f:x".to_owned(),
            "bad_last_event_id",
        ),
        (
            "/ws?channel=public&channel=x&since=1f:3".to_owned(),
            "bad_last_event_id",
        ),
        (
            "/ws?channel=public&since=1f:3,1f:4".to_owned(),
            "bad_last_event_id",
        ),
        ("/ws?since=1f:3".to_owned(), "bad_last_event_id"),
        // The second new channel finds the bucket empty (the first took its last token).
        (
            "/ws?channel=n1&channel=n2".to_owned(),
            "new_channel_rate_limited",
        ),
    ];
    for (path, code) in &cases {
        // None of these codes has a close code of its own: 1008, policy violation.
        expect_refused(&herald, path, code, 1008).await;
    }
    let position = herald.publish("public", r#"{"after":true}"#).await;
    assert_eq!(
        bystander.next_message(WS_TIMEOUT).await.position,
        position,
        "the server kept serving the others"
    );
}

#[tokio::test]
async fn url_channels_follow_the_sites_channel_rules() {
    let site = Site::new("a").limit("max_subscriptions", 2);
    let herald = Herald::builder()
        .config_toml(herald_tests::sites_toml("", &[&site]))
        .start();
    let key = &site.key;
    expect_refused(
        &herald,
        &format!("/ws?key={key}&channel=user:1"),
        "forbidden",
        1008,
    )
    .await;
    expect_refused(
        &herald,
        &format!("/ws?key={key}&channel=public&channel=private-x"),
        "signature_required",
        1008,
    )
    .await;
    expect_refused(
        &herald,
        &format!("/ws?key={key}&channel=a&channel=b&channel=c"),
        "too_many_channels",
        1008,
    )
    .await;
    // Admission comes first: a refused client is told so, whatever its channels.
    expect_refused(
        &herald,
        "/ws?key=nope&channel=bad%20name",
        "site_unknown",
        4004,
    )
    .await;

    let token = site.token("1", 600);
    let path = format!("/ws?key={key}&token={token}&channel=user:1&channel=public");
    let mut ws = WsClient::connect(&herald.ws_url(&path)).await;
    subscribed(&ws.next_json(WS_TIMEOUT).await, "user:1");
    subscribed(&ws.next_json(WS_TIMEOUT).await, "public");
}

#[tokio::test]
async fn a_frame_subscribe_to_a_url_channel_is_already_subscribed() {
    let herald = Herald::start();
    let mut ws = WsClient::connect(&herald.ws_url("/ws?channel=a")).await;
    subscribed(&ws.next_json(WS_TIMEOUT).await, "a");
    ws.send_json(&json!({"type": "subscribe", "channel": "a"}))
        .await;
    let error = ws.expect_error("already_subscribed").await;
    assert_eq!(error["channel"], "a", "{error}");
    // Frames still work beside the URL's channels.
    ws.subscribe("b").await;
    let to_b = herald.publish("b", "1").await;
    let to_a = herald.publish("a", "2").await;
    let [a, b] = next_two_by_channel(&mut ws).await;
    assert_eq!((a.channel.as_str(), a.position), ("a", to_a));
    assert_eq!((b.channel.as_str(), b.position), ("b", to_b));
}

/// The next two messages, in channel-name order: each channel keeps its own order, but two
/// channels may arrive either way round (each has its own delivery worker).
async fn next_two_by_channel(ws: &mut WsClient) -> [Delivered; 2] {
    let mut got = [
        ws.next_message(WS_TIMEOUT).await,
        ws.next_message(WS_TIMEOUT).await,
    ];
    got.sort_by(|x, y| x.channel.cmp(&y.channel));
    got
}

/// `/ws?channel=…` as the second request of a keep-alive connection: hyper answers it, not the
/// listener, with the same opening and the same refusals.
#[tokio::test]
async fn hypers_path_takes_channels_in_the_url() {
    let herald = Herald::start();
    let first = herald.publish("k", r#"{"n":1}"#).await;
    herald.publish("k", r#"{"n":2}"#).await;

    let path = format!("/ws?channel=k&channel=j&since={},{}", first.cursor(), "1:0");
    let mut stream = after_another_request(&herald, &path).await;
    let welcome = next_json(&mut stream).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let frame = next_json(&mut stream).await;
    assert_eq!(subscribed(&frame, "k"), first);
    assert_eq!(frame["recovered"], true, "{frame}");
    // `j` never had a message in epoch 1: it cannot be recovered, and says where it is.
    let frame = next_json(&mut stream).await;
    subscribed(&frame, "j");
    assert_eq!(frame["recovered"], false, "{frame}");
    let replayed = next_json(&mut stream).await;
    assert_eq!(replayed["type"], "message", "{replayed}");
    assert_eq!(replayed["offset"], first.offset + 1, "{replayed}");
    let live = herald.publish("j", "3").await;
    let message = next_json(&mut stream).await;
    assert_eq!(Position::from_json(&message), live, "{message}");

    let mut refused = after_another_request(&herald, "/ws?channel=a&channel=a").await;
    let error = next_json(&mut refused).await;
    assert_eq!(error["code"], "duplicate_channel", "{error}");
    match tokio::time::timeout(WS_TIMEOUT, refused.next()).await {
        Ok(Some(Ok(Message::Close(Some(close))))) => assert_eq!(u16::from(close.code), 1008),
        other => panic!("expected a close 1008, got {other:?}"),
    }
}

/// A connection that was first asked for `/healthz`, then upgraded on `path`.
async fn after_another_request(herald: &Herald, path: &str) -> WebSocketStream<TcpStream> {
    let mut tcp = TcpStream::connect(herald.addr).await.expect("connect");
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", herald.addr);
    tcp.write_all(request.as_bytes()).await.expect("write");
    // The answer's head, byte by byte so as not to read past it, then its body.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = tokio::time::timeout(WS_TIMEOUT, tcp.read_u8())
            .await
            .expect("an answer in time")
            .expect("read");
        head.push(byte);
    }
    let head = String::from_utf8(head).expect("ASCII head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("a Content-Length: {head}"));
    let mut body = vec![0; length];
    tcp.read_exact(&mut body).await.expect("body");
    let (stream, response) = tokio::time::timeout(
        WS_TIMEOUT,
        tokio_tungstenite::client_async(herald.ws_url(path), tcp),
    )
    .await
    .expect("handshake in time")
    .expect("handshake");
    assert_eq!(response.status(), 101);
    stream
}
