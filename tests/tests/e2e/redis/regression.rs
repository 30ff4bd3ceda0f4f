//! Redis coming back behind where it was, and the Redis engine's other ways to lose or reuse a
//! position: a restart that loaded older data, a crash under `appendfsync everysec`, a channel
//! edited back in place, an append that failed half-way, a quiet channel whose position expired;
//! and what a fresh subscribe and an absurd `since` cost Redis.
//!
//! The rule: a position is never reused for another message. When Redis may have lost
//! acknowledged messages, the channel starts a new epoch, connected subscribers get `subscribed`
//! with `recovered: false` before its first message, and resuming clients get `recovered: false`.

use std::time::{Duration, Instant};

use herald_tests::{
    Delivered, Herald, Position, Redis, Request, SseClient, WS_TIMEOUT, WsClient, WsEvent,
    metric_value,
};
use serde_json::{Value, json};

use super::node;
use super::support::{CHANGE_TIMEOUT, POLL, wait_readyz};

/// The channel of the issue's reproduction.
const CHANNEL: &str = "rb";

/// `{"n":i}`.
fn n(i: u64) -> String {
    format!(r#"{{"n":{i}}}"#)
}

/// The only Redis key matching `pattern` (`KEYS`, on a test's own server).
fn key(redis: &Redis, pattern: &str) -> String {
    let keys = redis.cli(&["KEYS", pattern]);
    let keys: Vec<&str> = keys.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(keys.len(), 1, "one key for {pattern}: {keys:?}");
    keys[0].trim().to_owned()
}

/// The meta hash of `channel` on the default site.
fn meta_key(redis: &Redis, channel: &str) -> String {
    key(redis, &format!("herald:*:m:default/{channel}"))
}

/// The history stream of `channel` on the default site.
fn stream_key(redis: &Redis, channel: &str) -> String {
    key(redis, &format!("herald:*:s:default/{channel}"))
}

/// Publishes, trying again while the node answers 503 (Redis just came back); returns the position.
async fn publish_when_back(node: &Herald, channel: &str, data: &str) -> Position {
    let deadline = Instant::now() + CHANGE_TIMEOUT;
    let body = json!({"channel": channel, "data": serde_json::from_str::<Value>(data).unwrap()});
    loop {
        let response = Request::post(node.addr, "/api/publish")
            .json_body(&body.to_string())
            .send()
            .await;
        if response.status == 200 {
            return Position::from_json(&response.json()["results"][0]);
        }
        assert_eq!(
            (response.status, response.error_code().as_str()),
            (503, "unavailable"),
            "{}",
            response.text()
        );
        assert!(
            Instant::now() < deadline,
            "publishes still fail: {}",
            response.text()
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Subscribes on `node` to `channel` and reads `count` messages.
async fn subscriber_with(node: &Herald, count: u64) -> (WsClient, Vec<Delivered>) {
    let mut ws = WsClient::connect(&node.ws_url("/ws")).await;
    ws.subscribe(CHANNEL).await;
    for i in 1..=count {
        node.publish(CHANNEL, &n(i)).await;
    }
    let mut got = Vec::new();
    for _ in 1..=count {
        got.push(ws.next_message(WS_TIMEOUT).await);
    }
    (ws, got)
}

/// After Redis lost messages of `old`'s epoch: three publishes on `node` land in one new epoch;
/// the connected `ws` gets `subscribed` with `recovered: false`, then each of them; clients
/// resuming from `old` (WebSocket and SSE) get `recovered: false` and the new position.
async fn assert_new_epoch_announced(node: &Herald, ws: &mut WsClient, old: &Position) {
    let mut published = Vec::new();
    for i in 6..=8 {
        published.push(publish_when_back(node, CHANNEL, &n(i)).await);
    }
    let new = published[0].clone();
    assert_ne!(new.epoch, old.epoch, "Redis lost messages: a new epoch");
    for position in &published {
        assert_eq!(position.epoch, new.epoch, "{published:?}");
    }

    let reset = ws.next_json(WS_TIMEOUT).await;
    assert_eq!(
        reset["type"], "subscribed",
        "told before anything else: {reset}"
    );
    assert_eq!(reset["recovered"], false, "{reset}");
    assert_eq!(reset["epoch"], new.epoch.as_str(), "{reset}");
    let from = reset["offset"].as_u64().expect("offset");
    let mut next = from;
    let last = published.last().expect("published").clone();
    while next < last.offset {
        let message = ws.next_message(WS_TIMEOUT).await;
        assert_eq!(message.position.epoch, new.epoch, "{message:?}");
        assert_eq!(
            message.position.offset,
            next + 1,
            "no gap after the reset: {message:?}"
        );
        next = message.position.offset;
    }
    assert!(
        from < published[0].offset,
        "every message published after the loss reaches the connected subscriber (reset at {from})"
    );

    let mut resumed = WsClient::connect(&node.ws_url("/ws")).await;
    let subscribed = resumed
        .subscribe_since(CHANNEL, &old.epoch, old.offset)
        .await;
    assert_eq!(subscribed["recovered"], false, "{subscribed}");
    assert_eq!(Position::from_json(&subscribed), last, "{subscribed}");
    let mut sse = SseClient::connect(
        node.addr,
        &format!("/sse?channel={CHANNEL}"),
        Some(&old.cursor()),
    )
    .await;
    sse.assert_stream();
    let (_, subscribed) = sse.expect_subscribed(CHANNEL).await;
    assert_eq!(subscribed["recovered"], false, "{subscribed}");
    assert_eq!(Position::from_json(&subscribed), last, "{subscribed}");
}

/// The issue's reproduction: Redis comes back with the data it had after offset 2 (an older
/// append-only file, as after a crash that lost its last writes), so its meta says `o = 2` and
/// its stream ends at 2-0. Three more publishes must not become 3, 4 and 5 of the same epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_back_with_older_data_starts_a_new_epoch() {
    let mut redis = Redis::start();
    let a = node(&redis.url()).start();
    let mut ws = WsClient::connect(&a.ws_url("/ws")).await;
    ws.subscribe(CHANNEL).await;
    for i in 1..=2 {
        a.publish(CHANNEL, &n(i)).await;
    }
    let snapshot = redis.snapshot();
    for i in 3..=5 {
        a.publish(CHANNEL, &n(i)).await;
    }
    let mut old = None;
    for i in 1..=5 {
        let message = ws.next_message(WS_TIMEOUT).await;
        assert_eq!(message.position.offset, i);
        old = Some(message.position);
    }
    let old = old.expect("read");

    tokio::task::block_in_place(|| {
        redis.kill();
        redis.restore(&snapshot);
        redis.restart();
    });
    // Redis now holds offsets 1 and 2 of the channel's epoch (the node may already have read it
    // and started the new epoch).
    wait_readyz(&a, 200).await;

    assert_new_epoch_announced(&a, &mut ws, &old).await;
    let metrics = a.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            "herald_redis_epoch_resets_total",
            &[("reason", "restart")]
        ),
        1.0,
        "counted once"
    );
}

/// A Redis with `appendfsync everysec` may lose its last second of acknowledged writes when it
/// is killed: whatever it kept, the channel starts a new epoch after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_appendfsync_everysec_starts_a_new_epoch() {
    let mut redis = Redis::start_with(&["--appendfsync", "everysec"]);
    let a = node(&redis.url()).start();
    let (mut ws, got) = subscriber_with(&a, 5).await;
    let old = got.last().expect("read").position.clone();

    tokio::task::block_in_place(|| {
        redis.kill();
        redis.restart();
    });
    wait_readyz(&a, 200).await;

    assert_new_epoch_announced(&a, &mut ws, &old).await;
}

/// Redis shows a channel behind what the node already delivered in the same epoch (its meta
/// edited back to `o = 2` and entries 3–5 deleted, in place): the node's next publish starts a
/// new epoch instead of reusing offsets 3–5.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_behind_what_the_node_delivered_starts_a_new_epoch() {
    let redis = Redis::start();
    let a = node(&redis.url()).start();
    let (mut ws, got) = subscriber_with(&a, 5).await;
    let old = got.last().expect("read").position.clone();

    let meta = meta_key(&redis, CHANNEL);
    let stream = stream_key(&redis, CHANNEL);
    assert_eq!(redis.cli(&["HSET", &meta, "o", "2"]), "0");
    assert_eq!(redis.cli(&["XDEL", &stream, "3-0", "4-0", "5-0"]), "3");

    assert_new_epoch_announced(&a, &mut ws, &old).await;
    let metrics = a.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            "herald_redis_epoch_resets_total",
            &[("reason", "behind")]
        ),
        1.0
    );
}

/// A publish whose append fails (the stream key holds a string) is answered 503 and takes no
/// offset: the next publish gets the next one.
#[tokio::test]
async fn a_failed_append_burns_no_offset() {
    let redis = Redis::start();
    let a = node(&redis.url()).start();
    let channel = "burn";
    let first = a.publish(channel, "1").await;
    assert_eq!(first.offset, 1);
    let stream = stream_key(&redis, channel);
    assert_eq!(redis.cli(&["DEL", &stream]), "1");
    assert_eq!(redis.cli(&["SET", &stream, "not a stream"]), "OK");

    let refused = a.publish_raw(r#"{"channel":"burn","data":2}"#).await;
    refused.assert_error(503, "unavailable");
    let meta = meta_key(&redis, channel);
    assert_eq!(
        redis.cli(&["HGET", &meta, "o"]),
        "1",
        "the offset is not taken"
    );

    assert_eq!(redis.cli(&["DEL", &stream]), "1");
    let next = a.publish(channel, "3").await;
    assert_eq!(
        next,
        Position {
            epoch: first.epoch,
            offset: 2
        }
    );
}

/// A subscribe without `since` needs the channel's position, not its history: with 100 messages
/// of 10 KB in history, Redis sends far less than the history's megabyte.
#[tokio::test]
async fn a_fresh_subscribe_does_not_read_the_history() {
    let redis = Redis::start();
    let a = node(&redis.url()).start();
    let channel = "big";
    let text = "x".repeat(10 * 1024);
    let data = json!(text).to_string();
    let mut last = None;
    for _ in 0..100 {
        last = Some(a.publish(channel, &data).await);
    }
    let last = last.expect("published");
    let history = a.get(&format!("/api/history?channel={channel}")).await;
    assert_eq!(
        history.json()["messages"].as_array().map(Vec::len),
        Some(100),
        "all 100 are in history"
    );

    let sent = || -> u64 {
        let info = redis.cli(&["INFO", "stats"]);
        info.lines()
            .find_map(|l| l.trim().strip_prefix("total_net_output_bytes:"))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no total_net_output_bytes in {info}"))
    };
    let before = sent();
    let mut ws = WsClient::connect(&a.ws_url("/ws")).await;
    let subscribed = ws.subscribe(channel).await;
    assert_eq!(Position::from_json(&subscribed), last, "{subscribed}");
    assert_eq!(subscribed["recovered"], false, "{subscribed}");
    let cost = sent() - before;
    assert!(
        cost < 100_000,
        "a fresh subscribe made Redis send {cost} bytes (the history is about 1 MB)"
    );
    // The subscriber is live all the same.
    let next = a.publish(channel, "1").await;
    assert_eq!(ws.next_message(WS_TIMEOUT).await.position, next);
}

/// A channel that subscribers watch keeps its epoch on Redis while nobody publishes, past the
/// history's TTL (the memory engine does the same): its history ages out, its position does not.
#[tokio::test]
async fn a_quiet_watched_channel_keeps_its_epoch() {
    let redis = Redis::start();
    let a = node(&redis.url())
        .env("HERALD_HISTORY_TTL_SECS", "2")
        .start();
    let channel = "quiet";
    let mut ws = WsClient::connect(&a.ws_url("/ws")).await;
    ws.subscribe(channel).await;
    let first = a.publish(channel, "1").await;
    assert_eq!(ws.next_message(WS_TIMEOUT).await.position, first);
    let stream = stream_key(&redis, channel);
    let meta = meta_key(&redis, channel);

    // The stream and the meta got the same TTL from the publish: once the stream has expired,
    // a meta nobody renewed has too.
    let deadline = Instant::now() + CHANGE_TIMEOUT;
    while redis.cli(&["EXISTS", &stream]) != "0" {
        assert!(Instant::now() < deadline, "the stream never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        redis.cli(&["EXISTS", &meta]),
        "1",
        "the watched channel's position is kept"
    );

    let second = a.publish(channel, "2").await;
    assert_eq!(
        second,
        Position {
            epoch: first.epoch,
            offset: 2
        },
        "the same epoch"
    );
    let frame = ws.next_json(WS_TIMEOUT).await;
    assert_eq!(frame["type"], "message", "no reset: {frame}");
    assert_eq!(Position::from_json(&frame), second);
}

/// `since.offset = 2^64-1` (ahead of any channel) answers `recovered: false` at the channel's
/// position, every time, and logs no warning.
#[tokio::test]
async fn a_since_past_any_offset_answers_not_recovered() {
    let redis = Redis::start();
    let a = node(&redis.url()).start();
    let channel = "far";
    let position = a.publish(channel, "1").await;
    let mut ws = WsClient::connect(&a.ws_url("/ws")).await;
    for _ in 0..3 {
        let subscribed = ws.subscribe_since(channel, &position.epoch, u64::MAX).await;
        assert_eq!(subscribed["recovered"], false, "{subscribed}");
        assert_eq!(Position::from_json(&subscribed), position, "{subscribed}");
        ws.send_json(&json!({"type": "unsubscribe", "channel": channel}))
            .await;
        let answer = ws.next_json(WS_TIMEOUT).await;
        assert_eq!(answer["type"], "unsubscribed", "{answer}");
    }
    let mut sse = SseClient::connect(
        a.addr,
        &format!("/sse?channel={channel}"),
        Some(&format!("{}:{}", position.epoch, u64::MAX)),
    )
    .await;
    sse.assert_stream();
    let (_, subscribed) = sse.expect_subscribed(channel).await;
    assert_eq!(subscribed["recovered"], false, "{subscribed}");
    assert!(
        matches!(
            ws.next_event(Duration::from_millis(200)).await,
            WsEvent::Timeout
        ),
        "nothing else comes"
    );
    let log = a.log();
    assert!(
        !log.lines()
            .any(|l| l.contains("WARN") && !l.contains("DEV SITE")),
        "no warning: {log}"
    );
}
