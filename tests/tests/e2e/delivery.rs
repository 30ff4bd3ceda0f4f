//! Delivery: what is published reaches every WebSocket and SSE subscriber, in order, exactly once, byte for byte.

use std::collections::BTreeMap;

use herald_tests::{
    Delivered, Herald, Position, SSE_TIMEOUT, SseClient, WS_TIMEOUT, WsClient, WsOptions,
    metric_value,
};

/// Payloads with odd spacing, tabs, line breaks, escapes and non-ASCII text: Herald must hand them
/// on exactly as the publisher wrote them.
fn odd_payload(i: u64) -> String {
    match i % 4 {
        0 => format!(r#"{{"a" : [1, 2], "n" : {i}}}"#),
        1 => format!("{{ \"n\":{i},\t\"text\" : \"caf\u{e9} \\u00e9 \\\"q\\\"\" }}"),
        2 => format!("{{\"n\" :\n  {i},\n  \"lines\" : [\n    \"a\"\n  ]\n}}"),
        _ => format!("[ {i} , null,true , 1.50e3 ]"),
    }
}

#[tokio::test]
async fn published_messages_reach_ws_and_sse_in_order_exactly_once() {
    let herald = Herald::start();
    let channel = "tag:rust";

    let mut ws = WsClient::connect(&herald.ws_url("/ws")).await;
    assert!(
        ws.welcome["connection_id"].is_string(),
        "welcome: {}",
        ws.welcome
    );
    assert!(
        ws.welcome["ping_interval_ms"].is_u64(),
        "welcome: {}",
        ws.welcome
    );
    let subscribed = ws.subscribe(channel).await;
    assert_eq!(subscribed["recovered"], false, "{subscribed}");
    assert_eq!(
        Position::from_json(&subscribed).offset,
        0,
        "a new channel is at offset 0"
    );

    let mut sse = SseClient::connect(herald.addr, "/sse?channel=tag:rust", None).await;
    sse.assert_stream();
    let (_, subscribed) = sse.expect_subscribed(channel).await;
    assert_eq!(subscribed["recovered"], false);
    assert_eq!(
        sse.retry_ms,
        Some(2000),
        "the stream starts with retry: 2000"
    );

    let payloads: Vec<String> = (1..=50).map(odd_payload).collect();
    let mut epoch = None;
    for (i, payload) in payloads.iter().enumerate() {
        let position = herald.publish(channel, payload).await;
        assert_eq!(position.offset, i as u64 + 1, "offsets count up from 1");
        let epoch = epoch.get_or_insert_with(|| position.epoch.clone());
        assert_eq!(&position.epoch, epoch, "one epoch while the server runs");
    }
    let epoch = epoch.expect("published");

    for (i, payload) in payloads.iter().enumerate() {
        let expected = Delivered {
            channel: channel.to_owned(),
            position: Position {
                epoch: epoch.clone(),
                offset: i as u64 + 1,
            },
            data: payload.clone(),
        };
        assert_eq!(
            ws.next_message(WS_TIMEOUT).await,
            expected,
            "WebSocket message {}",
            i + 1
        );
        let event = sse.next_event(SSE_TIMEOUT).await;
        assert_eq!(event.event, "message");
        assert_eq!(
            event.id,
            format!("{epoch}:{}", i + 1),
            "the SSE id is the stream's cursor"
        );
        assert_eq!(
            Delivered::parse(&event.data),
            expected,
            "SSE message {}",
            i + 1
        );
    }

    // Exactly once: the next thing either client sees is the next message, not a repeat.
    herald.publish(channel, r#""end""#).await;
    assert_eq!(ws.next_message(WS_TIMEOUT).await.position.offset, 51);
    assert_eq!(sse.next_message(SSE_TIMEOUT).await.position.offset, 51);
}

#[tokio::test]
async fn a_payload_with_carriage_returns_stays_intact() {
    // JSON allows CR as whitespace, but SSE treats CR, LF and CRLF alike as line ends, so no SSE
    // server can hand a CR through: the best it can do is split the data there and let the client
    // join the lines with LF. WebSocket keeps the bytes; SSE keeps the JSON value, and the event
    // must not be torn apart (a bare CR passed through would end the `data:` line early).
    let herald = Herald::start();
    let mut sse = SseClient::connect(herald.addr, "/sse?channel=public", None).await;
    sse.assert_stream();
    sse.expect_subscribed("public").await;
    let mut ws = WsClient::connect(&herald.ws_url("/ws")).await;
    ws.subscribe("public").await;

    let payload = "{\"a\" :\r\n [1,\r 2],\n\"b\":\r\r3}";
    herald.publish("public", payload).await;
    herald.publish("public", r#""next""#).await;
    assert_eq!(
        ws.next_message(WS_TIMEOUT).await.data,
        payload,
        "WebSocket keeps every byte"
    );
    let over_sse = sse.next_message(SSE_TIMEOUT).await.data;
    assert_eq!(
        over_sse,
        payload.replace("\r\n", "\n").replace('\r', "\n"),
        "SSE turns line breaks into LF"
    );
    let value: serde_json::Value = serde_json::from_str(&over_sse).expect("still JSON");
    assert_eq!(value, serde_json::json!({"a": [1, 2], "b": 3}));
    assert_eq!(
        sse.next_message(SSE_TIMEOUT).await.data,
        r#""next""#,
        "the stream is intact afterwards"
    );
}

#[tokio::test]
async fn batch_publish_reaches_100_channels() {
    let herald = Herald::start();
    let channels: Vec<String> = (0..100).map(|i| format!("room:{i}")).collect();
    let names: Vec<&str> = channels.iter().map(String::as_str).collect();

    // One connection subscribed to all 100 channels ...
    let mut many = WsClient::connect(&herald.ws_url("/ws")).await;
    for channel in &names {
        many.subscribe(channel).await;
    }
    // ... one connection per channel ...
    let mut single = Vec::new();
    for channel in &names {
        let mut ws = WsClient::connect(&herald.ws_url("/ws")).await;
        ws.subscribe(channel).await;
        single.push(ws);
    }
    // ... and a few SSE streams, one of them carrying three channels.
    let mut sse_streams = Vec::new();
    for group in [
        &["room:0", "room:1", "room:2"][..],
        &["room:50"],
        &["room:99", "room:98"],
    ] {
        let query: Vec<String> = group.iter().map(|c| format!("channel={c}")).collect();
        let mut sse =
            SseClient::connect(herald.addr, &format!("/sse?{}", query.join("&")), None).await;
        sse.assert_stream();
        for channel in group {
            sse.expect_subscribed(channel).await;
        }
        sse_streams.push((group, sse));
    }

    let payload = r#"{"notice" : 7, "text" : "to everyone"}"#;
    let positions = herald.publish_batch(&names, payload).await;
    assert!(
        positions.iter().all(|p| p.offset == 1),
        "first message of each channel: {positions:?}"
    );
    let position_of: BTreeMap<&str, &Position> = names.iter().copied().zip(&positions).collect();

    let mut seen = BTreeMap::new();
    for _ in 0..100 {
        let message = many.next_message(WS_TIMEOUT).await;
        assert_eq!(message.data, payload);
        assert_eq!(&&message.position, &position_of[message.channel.as_str()]);
        *seen.entry(message.channel).or_insert(0) += 1;
    }
    assert_eq!(
        seen.len(),
        100,
        "every channel reached the 100-channel connection"
    );
    assert!(seen.values().all(|&n| n == 1), "once per channel: {seen:?}");

    for (ws, channel) in single.iter_mut().zip(&names) {
        let message = ws.next_message(WS_TIMEOUT).await;
        assert_eq!(message.channel, *channel);
        assert_eq!(message.data, payload);
    }

    for (group, sse) in &mut sse_streams {
        let mut got: Vec<String> = Vec::new();
        for _ in 0..group.len() {
            let message = sse.next_message(SSE_TIMEOUT).await;
            assert_eq!(message.data, payload);
            assert_eq!(&&message.position, &position_of[message.channel.as_str()]);
            got.push(message.channel);
        }
        got.sort();
        let mut want: Vec<String> = group.iter().map(|c| c.to_string()).collect();
        want.sort();
        assert_eq!(got, want, "each channel of the stream once");
        let cursor: Vec<String> = group.iter().map(|c| position_of[c].cursor()).collect();
        assert_eq!(
            sse.last_event_id(),
            cursor.join(","),
            "the cursor covers every channel in URL order"
        );
    }

    // Nothing was delivered twice: the next message on room:0 is offset 2 everywhere.
    herald.publish("room:0", "2").await;
    assert_eq!(many.next_message(WS_TIMEOUT).await.position.offset, 2);
    assert_eq!(single[0].next_message(WS_TIMEOUT).await.position.offset, 2);
    assert_eq!(
        sse_streams[0]
            .1
            .next_message(SSE_TIMEOUT)
            .await
            .position
            .offset,
        2
    );
}

#[tokio::test]
async fn history_returns_retained_messages_byte_for_byte() {
    let herald = Herald::start();
    let payloads: Vec<String> = (1..=5).map(odd_payload).collect();
    let mut last = None;
    for payload in &payloads {
        last = Some(herald.publish("notice:1234", payload).await);
    }
    let last = last.expect("published");

    let response = herald.get("/api/history?channel=notice:1234").await;
    assert_eq!(response.status, 200, "{}", response.text());
    let json = response.json();
    assert_eq!(json["channel"], "notice:1234");
    assert_eq!(Position::from_json(&json), last);
    assert_eq!(json["recovered"], false, "no since: recovered is false");
    let offsets: Vec<u64> = json["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["offset"].as_u64().expect("offset"))
        .collect();
    assert_eq!(offsets, [1, 2, 3, 4, 5]);
    let text = response.text();
    for payload in &payloads {
        assert!(
            text.contains(payload.as_str()),
            "history keeps {payload:?} byte for byte: {text}"
        );
    }

    let since = herald
        .get(&format!(
            "/api/history?channel=notice:1234&since={}:3",
            last.epoch
        ))
        .await;
    assert_eq!(since.status, 200, "{}", since.text());
    let json = since.json();
    assert_eq!(json["recovered"], true, "{json}");
    let offsets: Vec<u64> = json["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["offset"].as_u64().expect("offset"))
        .collect();
    assert_eq!(offsets, [4, 5]);
}

#[tokio::test]
async fn unsubscribe_stops_delivery_of_that_channel_only() {
    let herald = Herald::start();
    let mut ws = WsClient::connect(&herald.ws_url("/ws")).await;
    ws.subscribe("group:devs").await;
    ws.subscribe("group:ops").await;
    ws.send_json(&serde_json::json!({"type": "unsubscribe", "channel": "group:devs"}))
        .await;
    let unsubscribed = ws.next_json(WS_TIMEOUT).await;
    assert_eq!(unsubscribed["type"], "unsubscribed", "{unsubscribed}");
    assert_eq!(unsubscribed["channel"], "group:devs", "{unsubscribed}");

    herald.publish("group:devs", r#""not for you""#).await;
    herald.publish("group:ops", r#""for you""#).await;
    let message = ws.next_message(WS_TIMEOUT).await;
    assert_eq!(
        (message.channel.as_str(), message.data.as_str()),
        ("group:ops", r#""for you""#)
    );

    // Subscribing again starts from the channel's current position.
    let subscribed = ws.subscribe("group:devs").await;
    assert_eq!(subscribed["offset"], 1, "{subscribed}");
}

/// Browsers and proxies reuse keep-alive connections, so `/sse` can arrive as the second request
/// on a connection hyper is serving. curl asked for two URLs reuses its connection just so.
#[tokio::test]
async fn sse_on_a_reused_keep_alive_connection_resumes_and_streams() {
    use std::process::Stdio;
    use tokio::io::{AsyncBufReadExt, BufReader};

    let herald = Herald::start();
    let first = herald.publish("public", r#"{"n":1}"#).await;
    herald.publish("public", r#"{"n":2}"#).await;

    let mut curl = tokio::process::Command::new("curl")
        .args(["-sN", "--max-time", "20", "-H"])
        .arg(format!("Last-Event-ID: {}", first.cursor()))
        .arg(herald.url("/healthz"))
        .arg(herald.url("/sse?channel=public"))
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("curl is installed by scripts/install-test-deps.sh");
    let mut lines = BufReader::new(curl.stdout.take().expect("stdout")).lines();
    let mut data = Vec::new();
    let mut published_live = false;
    while data.len() < 2 {
        let line = tokio::time::timeout(SSE_TIMEOUT, lines.next_line())
            .await
            .expect("an SSE line in time")
            .expect("read")
            .expect("curl ended early");
        if line.starts_with("event: subscribed") && !published_live {
            herald.publish("public", r#"{"n":3}"#).await;
            published_live = true;
        }
        // Message events carry the payload under "data"; subscribed events do not.
        if line.starts_with("data: ") && line.contains(r#","data":"#) {
            data.push(line);
        }
    }
    assert!(
        data[0].contains(r#""offset":2,"data":{"n":2}"#),
        "replayed: {data:?}"
    );
    assert!(
        data[1].contains(r#""offset":3,"data":{"n":3}"#),
        "live: {data:?}"
    );
    let metrics = herald.metrics().await;
    let via_hyper = herald_tests::metric_value(
        &metrics,
        "herald_http_requests_total",
        &[("route", "sse"), ("status", "200")],
    );
    assert_eq!(
        via_hyper, 1.0,
        "the stream was served on the reused connection"
    );
}

/// A WebSocket with one channel and nothing else to do gets its messages written by the hub
/// itself (`push/src/outbox.rs`, "parked"). One that reads slowly makes those writes stop part
/// way through a frame and hand the rest to its connection: every message must still arrive
/// whole, in order and once, and each be counted once as delivered.
#[tokio::test]
async fn a_slow_reader_on_one_channel_gets_large_messages_whole_in_order_and_counted_once() {
    const BURST: u64 = 200;
    const AFTER: u64 = 5;
    let herald = Herald::builder()
        .env("HERALD_CONNECTION_OUTBOX_MAX_BYTES", (16 << 20).to_string())
        .start();
    let options = WsOptions {
        recv_buffer_bytes: Some(4096),
    };
    let mut ws = WsClient::connect_with(&herald.ws_url("/ws?channel=big"), options).await;
    let subscribed = ws.next_json(WS_TIMEOUT).await;
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");

    let payload = |n: u64| format!(r#"{{"n":{n},"pad":"{}"}}"#, "x".repeat(30_000 + n as usize));
    let mut published = Vec::new();
    for n in 1..=BURST {
        published.push(herald.publish("big", &payload(n)).await);
    }
    // Nothing was read meanwhile: 6 MB, past what a socket's send buffer grows to by default
    // (`tcp_wmem`, 4 MB), so the hub's writes stopped part way through a frame.
    for (n, position) in (1..=BURST).zip(&published) {
        let message = ws.next_message(WS_TIMEOUT).await;
        assert_eq!(&message.position, position);
        assert_eq!(message.data, payload(n), "message {n} arrives whole");
    }
    // Caught up, the connection is left to the hub again.
    for n in BURST + 1..=BURST + AFTER {
        let position = herald.publish("big", &payload(n)).await;
        let message = ws.next_message(WS_TIMEOUT).await;
        assert_eq!((message.position, message.data), (position, payload(n)));
    }
    // Counted once each write has returned on the server, which may be a moment after the
    // client has read it: wait for the count to reach the deliveries, then hold it to them.
    let labels = [("transport", "ws")];
    let deadline = std::time::Instant::now() + WS_TIMEOUT;
    let delivered = loop {
        let metrics = herald.metrics().await;
        let delivered = metric_value(&metrics, "herald_messages_delivered_total", &labels);
        if delivered >= (BURST + AFTER) as f64 || std::time::Instant::now() >= deadline {
            break delivered;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(
        delivered,
        (BURST + AFTER) as f64,
        "each delivery counted once"
    );
}
