//! Rejections: every refused frame or request gets its documented error, and the connection and the server keep serving.

use std::net::{IpAddr, Ipv4Addr};

use herald_tests::{Herald, Request, SSE_TIMEOUT, SseClient, WS_TIMEOUT, WsClient};
use serde_json::json;

/// An address on the loopback interface that is not 127.0.0.1.
const OTHER_LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// Checks that `ws` (which just had a frame refused) and `other` both still get a fresh message
/// on `channel`, to which both are subscribed.
async fn both_still_receive(
    herald: &Herald,
    ws: &mut WsClient,
    other: &mut WsClient,
    channel: &str,
) {
    let position = herald.publish(channel, r#"{"still":"here"}"#).await;
    assert_eq!(
        ws.next_message(WS_TIMEOUT).await.position,
        position,
        "the refused client still receives"
    );
    assert_eq!(
        other.next_message(WS_TIMEOUT).await.position,
        position,
        "another client still receives"
    );
}

#[tokio::test]
async fn ws_refused_frames_get_error_frames_and_the_connection_keeps_working() {
    let herald = Herald::start();
    let mut ws = WsClient::connect(&herald.ws_url("/ws")).await;
    let mut other = WsClient::connect(&herald.ws_url("/ws")).await;
    ws.subscribe("public").await;
    other.subscribe("public").await;

    let cases: &[(&str, &str)] = &[
        (r#"{"type":"subscribe","#, "bad_json"),
        ("not json at all", "bad_json"),
        ("[1,2,3]", "bad_json"),
        (r#""subscribe""#, "bad_json"),
        (r#"{"type":"dance"}"#, "unknown_type"),
        (r#"{"channel":"public"}"#, "unknown_type"),
        (r#"{"type":"subscribe"}"#, "bad_frame"),
        (r#"{"type":"subscribe","channel":7}"#, "bad_frame"),
        (
            r#"{"type":"subscribe","channel":"x","since":"yesterday"}"#,
            "bad_frame",
        ),
        (
            r#"{"type":"subscribe","channel":"bad channel!"}"#,
            "invalid_channel",
        ),
        (r#"{"type":"subscribe","channel":""}"#, "invalid_channel"),
        (
            r#"{"type":"subscribe","channel":"tag:caf\u00e9"}"#,
            "invalid_channel",
        ),
        (
            r#"{"type":"subscribe","channel":"public"}"#,
            "already_subscribed",
        ),
        (
            r#"{"type":"unsubscribe","channel":"nope"}"#,
            "not_subscribed",
        ),
    ];
    for (frame, code) in cases {
        ws.send_text(frame).await;
        let error = ws.next_json(WS_TIMEOUT).await;
        assert_eq!(error["type"], "error", "answer to {frame}: {error}");
        assert_eq!(error["code"], *code, "answer to {frame}: {error}");
        assert!(error["message"].is_string(), "{error}");
        both_still_receive(&herald, &mut ws, &mut other, "public").await;
    }

    let long = "a".repeat(129);
    ws.send_json(&json!({"type": "subscribe", "channel": long}))
        .await;
    let error = ws.expect_error("invalid_channel").await;
    assert_eq!(
        error["channel"], long,
        "the error names the channel: {error}"
    );

    ws.send_binary(b"\x01\x02").await;
    ws.expect_error("bad_frame").await;

    // After all that, the same connection can still subscribe, unsubscribe and ping.
    let subscribed = ws.subscribe(&"b".repeat(128)).await;
    assert_eq!(subscribed["recovered"], false);
    ws.send_json(&json!({"type": "unsubscribe", "channel": "b".repeat(128)}))
        .await;
    let unsubscribed = ws.next_json(WS_TIMEOUT).await;
    assert_eq!(unsubscribed["type"], "unsubscribed", "{unsubscribed}");
    ws.send_json(&json!({"type": "ping"})).await;
    assert_eq!(ws.next_json(WS_TIMEOUT).await["type"], "pong");
    both_still_receive(&herald, &mut ws, &mut other, "public").await;
}

#[tokio::test]
async fn ws_too_many_subscriptions_is_refused_and_others_still_work() {
    let herald = Herald::builder()
        .env("HERALD_CONNECTION_MAX_SUBSCRIPTIONS", "3")
        .start();
    let mut ws = WsClient::connect(&herald.ws_url("/ws")).await;
    let mut other = WsClient::connect(&herald.ws_url("/ws")).await;
    other.subscribe("c0").await;
    for i in 0..3 {
        ws.subscribe(&format!("c{i}")).await;
    }
    ws.send_json(&json!({"type": "subscribe", "channel": "c3"}))
        .await;
    ws.expect_error("too_many_subscriptions").await;
    both_still_receive(&herald, &mut ws, &mut other, "c0").await;

    ws.send_json(&json!({"type": "unsubscribe", "channel": "c2"}))
        .await;
    assert_eq!(ws.next_json(WS_TIMEOUT).await["type"], "unsubscribed");
    ws.subscribe("c3").await;
}

#[tokio::test]
async fn ws_oversize_frame_closes_1009_and_others_keep_receiving() {
    let herald = Herald::start();
    let mut big = WsClient::connect(&herald.ws_url("/ws")).await;
    let mut other = WsClient::connect(&herald.ws_url("/ws")).await;
    other.subscribe("public").await;

    // Just over the default connection.max_frame_bytes (4096).
    let frame = format!(
        r#"{{"type":"subscribe","channel":"public","pad":"{}"}}"#,
        "x".repeat(4100)
    );
    big.send_text(&frame).await;
    let (code, _) = big.expect_close(WS_TIMEOUT).await;
    assert_eq!(code, 1009, "message too big");

    let position = herald.publish("public", "1").await;
    assert_eq!(other.next_message(WS_TIMEOUT).await.position, position);
}

#[tokio::test]
async fn ws_frame_at_the_limit_is_accepted() {
    let herald = Herald::builder()
        .env("HERALD_CONNECTION_MAX_FRAME_BYTES", "200")
        .start();
    let mut ws = WsClient::connect(&herald.ws_url("/ws")).await;
    let prefix = r#"{"type":"subscribe","channel":"public","pad":""#;
    let pad = "x".repeat(200 - prefix.len() - 2);
    let frame = format!("{prefix}{pad}\"}}");
    assert_eq!(frame.len(), 200);
    ws.send_text(&frame).await;
    let subscribed = ws.next_json(WS_TIMEOUT).await;
    assert_eq!(
        subscribed["type"], "subscribed",
        "a frame of exactly max_frame_bytes is fine: {subscribed}"
    );
    ws.send_text(&format!("{prefix}{pad}x\"}}")).await;
    assert_eq!(ws.expect_close(WS_TIMEOUT).await.0, 1009);
}

#[tokio::test]
async fn plain_get_on_ws_answers_426() {
    let herald = Herald::start();
    herald
        .get("/ws")
        .await
        .assert_error(426, "upgrade_required");
}

#[tokio::test]
async fn sse_bad_requests_get_400_and_the_server_keeps_streaming() {
    let herald = Herald::start();
    let mut good = SseClient::connect(herald.addr, "/sse?channel=public", None).await;
    good.assert_stream();
    good.expect_subscribed("public").await;

    let many: Vec<String> = (0..129).map(|i| format!("channel=c{i}")).collect();
    let many = format!("/sse?{}", many.join("&"));
    let cases: Vec<(String, Option<&str>, u16, &str)> = vec![
        ("/sse".into(), None, 400, "missing_channel"),
        (
            "/sse?channel=bad%20channel".into(),
            None,
            400,
            "invalid_channel",
        ),
        (
            "/sse?channel=public&channel=a%2Fb".into(),
            None,
            400,
            "invalid_channel",
        ),
        ("/sse?channel=".into(), None, 400, "invalid_channel"),
        (
            "/sse?channel=public&channel=public".into(),
            None,
            400,
            "duplicate_channel",
        ),
        (many, None, 400, "too_many_channels"),
        (
            "/sse?channel=public".into(),
            Some("garbage"),
            400,
            "bad_last_event_id",
        ),
        (
            "/sse?channel=public".into(),
            Some("abc:notanumber"),
            400,
            "bad_last_event_id",
        ),
        (
            "/sse?channel=public&channel=other".into(),
            Some("abc:1"),
            400,
            "bad_last_event_id",
        ),
        (
            "/sse?channel=public".into(),
            Some("abc:1,abc:2"),
            400,
            "bad_last_event_id",
        ),
        (
            "/sse?channel=public&last_event_id=nope".into(),
            None,
            400,
            "bad_last_event_id",
        ),
    ];
    for (path, last_event_id, status, code) in cases {
        let mut sse = SseClient::connect(herald.addr, &path, last_event_id).await;
        assert_eq!(
            sse.status, status,
            "{path} (Last-Event-ID {last_event_id:?})"
        );
        let content_type = sse.header("content-type").unwrap_or_default().to_owned();
        assert!(
            content_type.starts_with("application/json"),
            "{path}: Content-Type {content_type}"
        );
        assert_eq!(
            sse.error_code().await,
            code,
            "{path} (Last-Event-ID {last_event_id:?})"
        );
    }

    let request = format!(
        "POST /sse?channel=public HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\n\r\n",
        herald.addr
    );
    let mut post = SseClient::connect_raw(herald.addr, request.as_bytes()).await;
    assert_eq!(post.status, 405);
    assert_eq!(post.error_code().await, "method_not_allowed");

    let position = herald.publish("public", r#"{"after":"errors"}"#).await;
    assert_eq!(
        good.next_message(SSE_TIMEOUT).await.position,
        position,
        "the good stream still receives"
    );
}

#[tokio::test]
async fn publish_bad_requests_are_refused_and_publish_nothing() {
    let herald = Herald::start();
    let mut ws = WsClient::connect(&herald.ws_url("/ws")).await;
    ws.subscribe("public").await;

    let cases: &[(&str, u16, &str)] = &[
        (
            r#"{"channel":"bad channel","data":1}"#,
            400,
            "invalid_channel",
        ),
        (
            r#"{"channels":["public","bad channel"],"data":1}"#,
            400,
            "invalid_channel",
        ),
        (r#"{"channel":"public","data":"#, 400, "bad_json"),
        ("", 400, "bad_json"),
        (r#"{"channel":"public"}"#, 400, "bad_request"),
        (r#"{"data":1}"#, 400, "bad_request"),
        (
            r#"{"channel":"public","channels":["public"],"data":1}"#,
            400,
            "bad_request",
        ),
        (r#"{"channels":[],"data":1}"#, 400, "bad_request"),
        (
            r#"{"channels":["public","public"],"data":1}"#,
            400,
            "bad_request",
        ),
    ];
    for (body, status, code) in cases {
        herald.publish_raw(body).await.assert_error(*status, code);
    }
    let too_big = format!(r#"{{"channel":"public","data":"{}"}}"#, "x".repeat(70_000));
    herald
        .publish_raw(&too_big)
        .await
        .assert_error(413, "payload_too_large");
    Request::get(herald.addr, "/api/publish")
        .send()
        .await
        .assert_error(405, "method_not_allowed");

    // Nothing of the above was published: the next message is the channel's first.
    let position = herald.publish("public", r#"{"ok":true}"#).await;
    assert_eq!(
        position.offset, 1,
        "refused publishes left no message behind"
    );
    let message = ws.next_message(WS_TIMEOUT).await;
    assert_eq!(message.position, position);
    assert_eq!(message.data, r#"{"ok":true}"#);
}

#[tokio::test]
async fn publish_from_an_untrusted_address_without_secret_is_forbidden() {
    let herald = Herald::builder()
        .config_toml("[publish]\ntrusted_networks = [\"127.0.0.1/32\"]\n")
        .start();
    let mut ws = WsClient::connect(&herald.ws_url("/ws")).await;
    ws.subscribe("public").await;

    let body = r#"{"channel":"public","data":{"from":"outside"}}"#;
    let response = Request::post(herald.addr, "/api/publish")
        .json_body(body)
        .source(OTHER_LOOPBACK)
        .send()
        .await;
    response.assert_error(403, "forbidden");

    let position = herald.publish("public", r#"{"from":"inside"}"#).await;
    assert_eq!(
        position.offset, 1,
        "the forbidden publish left nothing behind"
    );
    assert_eq!(
        ws.next_message(WS_TIMEOUT).await.data,
        r#"{"from":"inside"}"#
    );
}

#[tokio::test]
async fn default_trusted_networks_cover_all_of_loopback() {
    let herald = Herald::start();
    let response = Request::post(herald.addr, "/api/publish")
        .json_body(r#"{"channel":"public","data":1}"#)
        .source(OTHER_LOOPBACK)
        .send()
        .await;
    assert_eq!(
        response.status,
        200,
        "127.0.0.0/8 is trusted by default: {}",
        response.text()
    );
}

#[tokio::test]
async fn publish_with_a_secret_needs_the_bearer() {
    let herald = Herald::builder()
        .env("HERALD_PUBLISH_SECRET", "s3cret-0123456789")
        .start();
    let mut ws = WsClient::connect(&herald.ws_url("/ws")).await;
    ws.subscribe("public").await;
    let body = r#"{"channel":"public","data":{"n":1}}"#;

    let post = || Request::post(herald.addr, "/api/publish").json_body(body);
    post().send().await.assert_error(401, "unauthorized");
    post()
        .bearer("wrong")
        .send()
        .await
        .assert_error(401, "unauthorized");
    post()
        .header("Authorization", "s3cret-0123456789")
        .send()
        .await
        .assert_error(401, "unauthorized");
    let response = post()
        .bearer("s3cret-0123456789")
        .source(OTHER_LOOPBACK)
        .send()
        .await;
    assert_eq!(
        response.status,
        200,
        "the right secret publishes from any address: {}",
        response.text()
    );

    let response = post().bearer("s3cret-0123456789").send().await;
    assert_eq!(response.status, 200, "{}", response.text());
    let offsets = [
        ws.next_message(WS_TIMEOUT).await.position.offset,
        ws.next_message(WS_TIMEOUT).await.position.offset,
    ];
    assert_eq!(
        offsets,
        [1, 2],
        "only the two authorized publishes were delivered"
    );
}

#[tokio::test]
async fn unknown_paths_answer_404() {
    let herald = Herald::start();
    herald
        .get("/no/such/thing")
        .await
        .assert_error(404, "not_found");
    herald
        .get("/api/history")
        .await
        .assert_error(400, "missing_channel");
    herald
        .get("/api/history?channel=bad%20channel")
        .await
        .assert_error(400, "invalid_channel");
    herald
        .get("/api/history?channel=public&since=nope")
        .await
        .assert_error(400, "bad_request");
}

#[tokio::test]
async fn publish_limits_answer_413_and_400() {
    let herald = Herald::builder()
        .env("HERALD_PUBLISH_MAX_BODY_BYTES", "200")
        .env("HERALD_PUBLISH_MAX_MESSAGE_BYTES", "50")
        .env("HERALD_PUBLISH_MAX_CHANNELS", "3")
        .start();
    let body = format!(r#"{{"channel":"public","data":"{}"}}"#, "x".repeat(300));
    herald
        .publish_raw(&body)
        .await
        .assert_error(413, "payload_too_large");
    let data = format!(r#"{{"channel":"public","data":"{}"}}"#, "x".repeat(60));
    herald
        .publish_raw(&data)
        .await
        .assert_error(413, "payload_too_large");
    let four = r#"{"channels":["a","b","c","d"],"data":1}"#;
    herald
        .publish_raw(four)
        .await
        .assert_error(400, "bad_request");
    let three = herald.publish_batch(&["a", "b", "c"], "1").await;
    assert!(
        three.iter().all(|p| p.offset == 1),
        "nothing refused was published: {three:?}"
    );
}
