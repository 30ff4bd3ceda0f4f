//! Per-site limits: connections per site, per IP and per second per IP (4102/4103/4104, SSE
//! `200` + `event: error` + `retry:`), subscriptions, frame size, message size and publish rate.
//! Each applies to its own site only, and the clients already connected serve on.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use herald_tests::{
    Request, Site, WS_TIMEOUT, WsClient, metric_value, publish_body, publish_results, unix_now,
};
use serde_json::json;

use super::support::{
    Bystanders, Connect, RawWs, assert_rejections, connect, expect_sse_error, expect_sse_limit,
    expect_stream, expect_ws_refused, publish, start, ws_url,
};

/// Another loopback address: a second client IP.
const OTHER_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

#[tokio::test]
async fn the_sites_connection_limit_refuses_with_4102() {
    let a = Site::new("a").limit("connections", 2);
    let b = Site::new("b");
    let herald = start("", &[&a, &b]);
    // The bystander of a is a's first connection.
    let mut bystanders = Bystanders::connect(&herald, &[&a, &b]).await;
    let second = connect(&herald, &a).await;
    bystanders.publish(&herald, "before").await;

    let url = ws_url(&herald, &a, "");
    expect_ws_refused(&url, "site_connection_limit", 4102).await;
    expect_sse_limit(
        herald.addr,
        "/sse?key=a-key&channel=public",
        "site_connection_limit",
    )
    .await;
    bystanders.publish(&herald, "during").await;

    // Site b's connections are counted apart.
    let mut b_clients = Vec::new();
    for _ in 0..3 {
        b_clients.push(connect(&herald, &b).await);
    }
    bystanders.publish(&herald, "after").await;
    bystanders.assert_received().await;
    assert_rejections(&herald, "a", "site_connection_limit", 2).await;

    // A connection that leaves frees its slot.
    second.close().await;
    let mut again = RawWs::connect_once_admitted(&url).await;
    again.subscribe("public").await;
    let position = publish(&herald, &a, "public", r#""freed""#).await;
    assert_eq!(again.next_message().await.position, position);
}

#[tokio::test]
async fn the_per_ip_connection_limit_refuses_with_4103() {
    // The default from [limits] applies to a; b overrides it with "no limit".
    let a = Site::new("a");
    let b = Site::new("b").limit("connections_per_ip", 0);
    let herald = start("[limits]\nconnections_per_ip = 2\n", &[&a, &b]);
    let mut bystanders = Bystanders::connect(&herald, &[&a, &b]).await;
    let _second = connect(&herald, &a).await;
    bystanders.publish(&herald, "before").await;

    expect_ws_refused(&ws_url(&herald, &a, ""), "ip_connection_limit", 4103).await;
    expect_sse_limit(
        herald.addr,
        "/sse?key=a-key&channel=public",
        "ip_connection_limit",
    )
    .await;
    bystanders.publish(&herald, "during").await;

    // Another IP may still connect to a, and 127.0.0.1 to b as often as it likes.
    let mut elsewhere = RawWs::connect(
        &ws_url(&herald, &a, ""),
        &Connect {
            headers: Vec::new(),
            source: Some(OTHER_IP),
        },
    )
    .await;
    elsewhere.subscribe("public").await;
    let mut b_clients = Vec::new();
    for _ in 0..3 {
        b_clients.push(connect(&herald, &b).await);
    }
    bystanders.publish(&herald, "after").await;
    bystanders.assert_received().await;
    let last = elsewhere.next_message().await;
    assert_eq!(
        last.data,
        json!({"bystander": "after", "site": "a", "n": 3}).to_string()
    );
    assert_rejections(&herald, "a", "ip_connection_limit", 2).await;
}

#[tokio::test]
async fn the_per_ip_connection_rate_refuses_with_4104() {
    // One new connection a second after a burst of two; the bystander is the first.
    let a = Site::new("a")
        .limit("connection_rate_per_ip", 1)
        .limit("connection_burst_per_ip", 2);
    let b = Site::new("b");
    let herald = start("", &[&a, &b]);
    let mut bystanders = Bystanders::connect(&herald, &[&a, &b]).await;
    let url = ws_url(&herald, &a, "");
    let _second = WsClient::connect(&url).await;

    expect_ws_refused(&url, "connection_rate_limit", 4104).await;
    expect_sse_limit(
        herald.addr,
        "/sse?key=a-key&channel=public",
        "connection_rate_limit",
    )
    .await;
    bystanders.publish(&herald, "during").await;

    // Another IP has a bucket of its own; site b has no rate limit.
    let mut elsewhere = RawWs::connect(
        &url,
        &Connect {
            headers: Vec::new(),
            source: Some(OTHER_IP),
        },
    )
    .await;
    elsewhere.subscribe("public").await;
    let mut b_clients = Vec::new();
    for _ in 0..5 {
        b_clients.push(connect(&herald, &b).await);
    }
    bystanders.publish(&herald, "after").await;
    bystanders.assert_received().await;
    assert_rejections(&herald, "a", "connection_rate_limit", 2).await;

    // After a back-off the bucket has refilled.
    let mut later = RawWs::connect_once_admitted(&url).await;
    later.subscribe("public").await;
    let position = publish(&herald, &a, "public", r#""later""#).await;
    assert_eq!(later.next_message().await.position, position);
}

#[tokio::test]
async fn the_sites_subscription_limit_refuses_the_one_too_many() {
    let a = Site::new("a").limit("max_subscriptions", 2);
    let b = Site::new("b");
    let herald = start("", &[&a, &b]);
    let mut bystanders = Bystanders::connect(&herald, &[&a, &b]).await;
    bystanders.publish(&herald, "before").await;

    let mut ws = connect(&herald, &a).await;
    ws.subscribe("c1").await;
    ws.subscribe("c2").await;
    ws.send_json(&json!({"type": "subscribe", "channel": "c3"}))
        .await;
    ws.expect_error("too_many_subscriptions").await;
    expect_sse_error(
        herald.addr,
        "/sse?key=a-key&channel=c1&channel=c2&channel=c3",
        &[],
        400,
        "too_many_channels",
    )
    .await;
    bystanders.publish(&herald, "during").await;

    // The connection keeps its two channels; two channels on SSE are fine; b is not limited.
    let mut sse =
        herald_tests::SseClient::connect(herald.addr, "/sse?key=a-key&channel=c1&channel=c2", None)
            .await;
    expect_stream(&mut sse, &["c1", "c2"]).await;
    let mut b_ws = connect(&herald, &b).await;
    for channel in ["c1", "c2", "c3"] {
        b_ws.subscribe(channel).await;
    }
    let c1 = publish(&herald, &a, "c1", r#""c1""#).await;
    assert_eq!(ws.next_message(WS_TIMEOUT).await.position, c1);
    assert_eq!(
        sse.next_message(herald_tests::SSE_TIMEOUT).await.position,
        c1
    );
    let c3 = publish(&herald, &b, "c3", r#""b c3""#).await;
    assert_eq!(b_ws.next_message(WS_TIMEOUT).await.position, c3);

    bystanders.publish(&herald, "after").await;
    bystanders.assert_received().await;
    assert_rejections(&herald, "a", "too_many_subscriptions", 1).await;
    assert_rejections(&herald, "a", "too_many_channels", 1).await;
}

#[tokio::test]
async fn the_sites_frame_limit_closes_1009() {
    let a = Site::new("a").limit("max_frame_bytes", 256);
    let b = Site::new("b");
    let herald = start("", &[&a, &b]);
    let mut bystanders = Bystanders::connect(&herald, &[&a, &b]).await;
    bystanders.publish(&herald, "before").await;

    let frame = |len: usize| {
        let prefix = r#"{"type":"subscribe","channel":"padded","pad":""#;
        let frame = format!("{prefix}{}\"}}", "x".repeat(len - prefix.len() - 2));
        assert_eq!(frame.len(), len);
        frame
    };
    let mut big = connect(&herald, &a).await;
    big.send_text(&frame(300)).await;
    let (_, code, _) = big.read_until_close(WS_TIMEOUT).await;
    assert_eq!(code, 1009, "a frame over site a's max_frame_bytes");
    bystanders.publish(&herald, "during").await;

    let mut at_limit = connect(&herald, &a).await;
    at_limit.send_text(&frame(256)).await;
    assert_eq!(at_limit.next_json(WS_TIMEOUT).await["type"], "subscribed");
    let mut on_b = connect(&herald, &b).await;
    on_b.send_text(&frame(300)).await;
    assert_eq!(
        on_b.next_json(WS_TIMEOUT).await["type"],
        "subscribed",
        "site b keeps the default of 4096 bytes"
    );

    bystanders.publish(&herald, "after").await;
    bystanders.assert_received().await;
    // docs/security.md names no code for 1009; whatever its reason label, one refusal of a.
    let text = herald.metrics().await;
    assert_eq!(
        metric_value(&text, "herald_rejections_total", &[("site", "a")]),
        1.0,
        "{text}"
    );
}

#[tokio::test]
async fn the_sites_message_limit_answers_413() {
    let a = Site::new("a").limit("max_message_bytes", 100);
    let b = Site::new("b");
    let herald = start("", &[&a, &b]);
    let mut bystanders = Bystanders::connect(&herald, &[&a, &b]).await;
    bystanders.publish(&herald, "before").await;

    let big = format!(r#""{}""#, "x".repeat(150));
    let fits = format!(r#""{}""#, "y".repeat(90));
    a.publish_request(herald.addr, "public", &big)
        .send()
        .await
        .assert_error(413, "payload_too_large");
    bystanders.publish(&herald, "during").await;
    publish(&herald, &a, "public", &fits).await;
    bystanders.published(0, &fits);
    publish(&herald, &b, "public", &big).await;
    bystanders.published(1, &big);

    bystanders.publish(&herald, "after").await;
    bystanders.assert_received().await;
    assert_rejections(&herald, "a", "payload_too_large", 1).await;
}

#[tokio::test]
async fn the_sites_publish_rate_answers_429_with_retry_after() {
    let a = Site::new("a")
        .limit("publish_rate", 1)
        .limit("publish_burst", 3);
    let b = Site::new("b");
    let herald = start("", &[&a, &b]);
    let mut bystanders = Bystanders::connect(&herald, &[&a, &b]).await;
    let mut other = connect(&herald, &a).await;
    other.subscribe("other").await;

    let send = |data: &str| a.publish_request(herald.addr, "public", data).send();
    let retry_after = |response: &herald_tests::Response| -> u64 {
        response.assert_error(429, "rate_limited");
        let value = response
            .header("retry-after")
            .unwrap_or_else(|| panic!("429 without Retry-After: {:?}", response.headers));
        let secs: u64 = value
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("Retry-After {value:?} is not seconds: {e}"));
        assert!(
            (1..=5).contains(&secs),
            "Retry-After {secs} s with one message a second"
        );
        secs
    };

    publish_results(&send(r#""r1""#).await, &["public"]);
    bystanders.published(0, r#""r1""#);
    // Two tokens left: a batch to three channels is refused whole ...
    let batch = |channels: &str| {
        Request::post(herald.addr, "/api/publish")
            .bearer(a.secret())
            .json_body(&format!(r#"{{"channels":{channels},"data":"batch"}}"#))
            .send()
    };
    retry_after(&batch(r#"["public","other","third"]"#).await);
    bystanders.publish_on(&herald, 1, "b during").await;
    // ... a batch to two takes both ...
    let two = batch(r#"["public","other"]"#).await;
    publish_results(&two, &["public", "other"]);
    bystanders.published(0, r#""batch""#);
    // ... and leaves none for the next message.
    let wait = retry_after(&send(r#""r2""#).await);
    bystanders.publish_on(&herald, 1, "b still").await;

    // Retry-After is honest: by then the bucket has a token again. The
    // retry is a signed request, refused once for the rate and sent again
    // unchanged: a refused request was not accepted, so it is no replay.
    let signed = a.signed_publish(
        herald.addr,
        a.secret(),
        &unix_now().to_string(),
        &publish_body("other", r#""r3""#),
    );
    retry_after(&signed.clone().send().await);
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let response = signed.send().await;
    let r3 = publish_results(&response, &["other"]).remove(0);
    let mut got = Vec::new();
    for _ in 0..2 {
        let message = other.next_message(WS_TIMEOUT).await;
        got.push((message.position.offset, message.data));
    }
    assert_eq!(
        got,
        [(1, r#""batch""#.to_owned()), (2, r#""r3""#.to_owned())],
        "channel other got the accepted batch and r3, nothing of the refused batch"
    );
    assert_eq!(r3.offset, 2);

    bystanders.assert_received().await;
    assert_rejections(&herald, "a", "rate_limited", 3).await;
}

#[tokio::test]
async fn a_body_over_max_body_bytes_answers_413_and_is_counted() {
    let a = Site::new("a");
    let b = Site::new("b");
    let herald = start("[publish]\nmax_body_bytes = 1000\n", &[&a, &b]);
    let mut bystanders = Bystanders::connect(&herald, &[&a, &b]).await;
    bystanders.publish(&herald, "before").await;

    let body = format!(r#""{}""#, "x".repeat(2000));
    a.publish_request(herald.addr, "public", &body)
        .send()
        .await
        .assert_error(413, "payload_too_large");
    bystanders.publish(&herald, "after").await;
    bystanders.assert_received().await;
    // "Every refusal on every route is counted" (docs/security.md); whether under site "a" or
    // "-" (the body is refused before it is read) the spec leaves open, so count both.
    let text = herald.metrics().await;
    assert_eq!(
        metric_value(
            &text,
            "herald_rejections_total",
            &[("reason", "payload_too_large")]
        ),
        1.0,
        "{}",
        text.lines()
            .filter(|l| l.starts_with("herald_rejections_total"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
