//! Readiness and delivery follow the node's upstream subscriptions: Redis refusing SUBSCRIBE
//! after the pub/sub connection was lost turns `/readyz` 503 with a WARN, and when Redis allows it
//! again the node subscribes by itself, catches its subscribers up from history and turns ready.
//! A channel whose history cannot be read delays no other channel's live delivery.

use herald_tests::{Delivered, Redis, WS_TIMEOUT, WsClient, WsEvent, metric_value};
use serde_json::Value;

use super::support::{
    CATCH_UP_TIMEOUT, CHANGE_TIMEOUT, POLL, Stop, assert_contiguous, read_ws, wait_readyz,
};
use super::{Upstream, node};

/// Messages published while the node cannot subscribe, and again after.
const MISSED: u64 = 5;

/// Messages published on the healthy channel while the broken one is being filled.
const HEALTHY: u64 = 10;

/// Polls `/metrics` until the node counted a refused subscribe.
async fn wait_subscribe_refused(herald: &herald_tests::Herald) {
    let deadline = std::time::Instant::now() + CHANGE_TIMEOUT;
    loop {
        let metrics = herald.metrics().await;
        if metric_value(&metrics, "herald_redis_subscribe_failures_total", &[]) >= 1.0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no refused subscribe counted after {CHANGE_TIMEOUT:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_resubscribe_is_not_ready_then_recovers_and_catches_up() {
    let redis = Redis::start();
    let herald = node(&redis.url()).start();
    let channel = "acl";
    let mut ws = WsClient::connect(&herald.ws_url("/ws")).await;
    ws.subscribe(channel).await;
    let first = herald.publish(channel, "1").await;
    assert_eq!(ws.next_message(WS_TIMEOUT).await.position, first);
    wait_readyz(&herald, 200).await;
    let upstream = redis.channels(&format!("*:c:default/{channel}"));
    assert_eq!(upstream.len(), 1, "subscribed upstream: {upstream:?}");

    // Redis refuses SUBSCRIBE from now on (PUBLISH stays allowed), and the node's pub/sub
    // connection is cut.
    assert_eq!(
        redis.cli(&["ACL", "SETUSER", "default", "-subscribe"]),
        "OK"
    );
    let killed = redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert_ne!(killed, "0", "the node's pub/sub connection was killed");
    // The lost connection alone makes the node unready for a moment; what must last is the
    // refused resubscribe, which counts as unready once the channel has stayed unsubscribed
    // for the upstream grace. So: the refusal first, then the 503.
    wait_subscribe_refused(&herald).await;
    wait_readyz(&herald, 503).await;
    assert_eq!(
        redis.subscribers(&upstream[0]),
        0,
        "Redis lost the node's subscription"
    );
    // Acknowledged, but this node cannot hear them.
    for i in 2..=1 + MISSED {
        herald.publish(channel, &i.to_string()).await;
    }
    let metrics = herald.metrics().await;
    assert_eq!(
        metric_value(&metrics, "herald_ready", &[]),
        0.0,
        "herald_ready follows /readyz"
    );
    assert!(
        metric_value(&metrics, "herald_redis_subscribe_failures_total", &[]) >= 1.0,
        "the refused subscribes are counted"
    );
    assert_eq!(
        metric_value(&metrics, "herald_redis_resubscribes_total", &[]),
        0.0,
        "a refused resubscribe is not counted as one"
    );
    let log = herald.log();
    assert!(
        log.lines()
            .any(|line| line.contains("WARN") && line.contains("Redis subscribe failed")),
        "the reason is logged at WARN:\n{log}"
    );
    assert_eq!(herald.get("/readyz").await.status, 503, "still not ready");

    // Redis allows SUBSCRIBE again: the node subscribes by itself and turns ready, and its
    // subscriber gets what it missed, in order, then the live messages.
    assert_eq!(
        redis.cli(&["ACL", "SETUSER", "default", "+subscribe"]),
        "OK"
    );
    wait_readyz(&herald, 200).await;
    assert_eq!(redis.subscribers(&upstream[0]), 1, "subscribed again");
    let last = 1 + 2 * MISSED;
    for i in 2 + MISSED..=last {
        herald.publish(channel, &i.to_string()).await;
    }
    let (messages, stop) = read_ws(&mut ws, CATCH_UP_TIMEOUT, |m| m.position.offset >= last).await;
    assert_eq!(stop, Stop::Matched, "got {messages:?}");
    assert_contiguous("the WebSocket subscriber", 1, &messages);
    for message in &messages {
        assert_eq!(message.data, message.position.offset.to_string());
        assert_eq!(
            message.position.epoch, first.epoch,
            "history kept the channel"
        );
    }
    let metrics = herald.metrics().await;
    assert!(metric_value(&metrics, "herald_redis_resubscribes_total", &[]) >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_whose_history_fails_delays_no_other_channel() {
    let redis = Redis::start();
    let herald = node(&redis.url()).start();
    let mut ws = WsClient::connect(&herald.ws_url("/ws")).await;
    ws.subscribe("broken").await;
    ws.subscribe("healthy").await;
    let first = herald.publish("broken", "1").await;
    assert_eq!(ws.next_message(WS_TIMEOUT).await.position, first);

    // Every history read of `broken` now fails (its stream is a string: WRONGTYPE), and a live
    // message past a hole makes the node fill the hole from that history, retrying for a while.
    let stream = redis.cli(&["KEYS", "*:s:default/broken"]);
    assert!(stream.contains(":s:default/broken"), "{stream}");
    redis.cli(&["DEL", &stream]);
    assert_eq!(redis.cli(&["SET", &stream, "not a stream"]), "OK");
    // As if another node had published up to the gapped message: the channel's position is
    // past what this node delivered, so filling the hole needs the (broken) stream.
    let meta = stream.replace(":s:default/", ":m:default/");
    let gapped_offset = (first.offset + 4).to_string();
    assert_eq!(redis.cli(&["HSET", &meta, "o", &gapped_offset]), "0");
    let pubsub = stream.replace(":s:default/", ":c:default/");
    let gapped = format!("{} {} \"gap\"", first.epoch, first.offset + 4);
    assert_eq!(redis.cli(&["PUBLISH", &pubsub, &gapped]), "1");

    // Meanwhile `healthy` is delivered live: all of it before `broken` moves on.
    let healthy: Vec<_> = {
        let mut positions = Vec::new();
        for i in 1..=HEALTHY {
            positions.push(herald.publish("healthy", &i.to_string()).await);
        }
        positions
    };
    let mut got: Vec<Delivered> = Vec::new();
    while got.len() < healthy.len() {
        let frame = match ws.next_event(CATCH_UP_TIMEOUT).await {
            WsEvent::Text(text) => text,
            other => panic!("expected messages, got {other:?} after {got:?}"),
        };
        let json: Value = serde_json::from_str(&frame).expect("JSON frame");
        assert_eq!(json["type"], "message", "{frame}");
        let message = Delivered::parse(&frame);
        assert_eq!(
            message.channel,
            "healthy",
            "`healthy` waited for `broken`'s history: {message:?} came before {} of {HEALTHY} healthy messages",
            got.len()
        );
        got.push(message);
    }
    let positions: Vec<_> = got.into_iter().map(|m| m.position).collect();
    assert_eq!(positions, healthy, "in order, once");

    // `broken` is given up on in the end (its history cannot be read) and goes on from the
    // message that showed the hole, while `healthy` keeps flowing.
    let (messages, stop) = read_ws(&mut ws, CATCH_UP_TIMEOUT, |m| m.channel == "broken").await;
    assert_eq!(stop, Stop::Matched, "{messages:?}");
    assert_eq!(messages.last().map(|m| m.data.as_str()), Some("\"gap\""));
    let next = herald.publish("healthy", "\"after\"").await;
    assert_eq!(ws.next_message(WS_TIMEOUT).await.position, next);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_makes_the_node_unready_until_it_answers_again() {
    let redis = Redis::start();
    let herald = node(&redis.url()).start();
    let mut ws = WsClient::connect(&herald.ws_url("/ws")).await;
    ws.subscribe("hung").await;
    let first = herald.publish("hung", "1").await;
    assert_eq!(ws.next_message(WS_TIMEOUT).await.position, first);

    // Redis stops answering but keeps its connections open: only unanswered PINGs can tell.
    redis.pause();
    wait_readyz(&herald, 503).await;
    let refused = herald.publish_raw(r#"{"channel":"hung","data":2}"#).await;
    refused.assert_error(503, "unavailable");

    redis.resume();
    wait_readyz(&herald, 200).await;
    let next = herald.publish("hung", "3").await;
    assert_eq!(ws.next_message(WS_TIMEOUT).await.position, next);
}
