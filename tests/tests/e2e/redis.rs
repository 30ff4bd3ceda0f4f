//! The Redis engine across Herald nodes, each test with its own `redis-server`: fan-out exactly
//! once, resume on another node, upstream subscriptions that follow local interest, history
//! overflow and lost history; Redis and node failures in `failure`; subscribers joining and
//! leaving busy channels in `churn`; Redis coming back behind where it was, and the other ways a
//! position could be lost or reused, in `regression`; readiness that follows the upstream
//! subscriptions, and fills that delay no other channel, in `readiness`.
//!
//! The fan-out, resume and interest scenarios take a Redis URL so that `redis_cluster` runs them
//! unchanged on a three-master cluster.

mod churn;
mod failure;
mod matrix;
mod readiness;
mod regression;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use herald_tests::{
    Delivered, Herald, HeraldBuilder, Position, Redis, SSE_TIMEOUT, SseClient, WS_TIMEOUT,
    WsClient, metric_value,
};
use serde_json::json;

use support::{CHANGE_TIMEOUT, END, POLL};

/// Messages per channel in the fan-out scenario.
const FAN_OUT_MESSAGES: u64 = 50;

/// The linger the interest scenario runs with.
const LINGER: Duration = Duration::from_millis(200);

/// Starts configuring a Herald node on the Redis (or Redis Cluster) at `url`.
pub(crate) fn node(url: &str) -> HeraldBuilder {
    Herald::builder()
        .arg("--engine")
        .arg("redis")
        .arg("--redis-url")
        .arg(url)
}

/// Three nodes on the same Redis.
fn three_nodes(url: &str) -> [Herald; 3] {
    [node(url).start(), node(url).start(), node(url).start()]
}

// === scenarios shared with redis_cluster ===

/// A message published on node A reaches WebSocket subscribers on A and B and an SSE subscriber
/// on C exactly once, in order, byte for byte, on every channel.
pub(crate) async fn scenario_fan_out(url: &str, channels: &[&str]) {
    let [a, b, c] = three_nodes(url);
    let mut ws_a = WsClient::connect(&a.ws_url("/ws")).await;
    let mut ws_b = WsClient::connect(&b.ws_url("/ws")).await;
    for channel in channels {
        for ws in [&mut ws_a, &mut ws_b] {
            let subscribed = ws.subscribe(channel).await;
            assert_eq!(subscribed["recovered"], false, "{subscribed}");
            assert_eq!(subscribed["offset"], 0, "a new channel: {subscribed}");
        }
    }
    let query: Vec<String> = channels.iter().map(|c| format!("channel={c}")).collect();
    let mut sse_c = SseClient::connect(c.addr, &format!("/sse?{}", query.join("&")), None).await;
    sse_c.assert_stream();
    for channel in channels {
        sse_c.expect_subscribed(channel).await;
    }

    let mut published: Vec<Delivered> = Vec::new();
    for i in 1..=FAN_OUT_MESSAGES + 1 {
        for (k, channel) in channels.iter().enumerate() {
            // The last round is a sentinel: a duplicate of anything before it would be read
            // instead of it and break the comparison below.
            let data = if i > FAN_OUT_MESSAGES {
                END.to_owned()
            } else {
                odd_payload(k, i)
            };
            let position = a.publish(channel, &data).await;
            assert_eq!(position.offset, i, "{channel}: offsets count up from 1");
            published.push(Delivered {
                channel: (*channel).to_owned(),
                position,
                data,
            });
        }
    }
    let expected = by_channel(&published);
    for (channel, messages) in &expected {
        let epochs: BTreeSet<&str> = messages.iter().map(|m| m.position.epoch.as_str()).collect();
        assert_eq!(epochs.len(), 1, "{channel}: one epoch on every node");
    }

    let mut got_a = Vec::new();
    let mut got_b = Vec::new();
    let mut got_c = Vec::new();
    for _ in 0..published.len() {
        got_a.push(ws_a.next_message(WS_TIMEOUT).await);
        got_b.push(ws_b.next_message(WS_TIMEOUT).await);
        got_c.push(sse_c.next_message(SSE_TIMEOUT).await);
    }
    for (name, got) in [
        ("WebSocket on A", got_a),
        ("WebSocket on B", got_b),
        ("SSE on C", got_c),
    ] {
        let got = by_channel(&got);
        for (channel, messages) in &expected {
            assert_eq!(
                got.get(channel),
                Some(messages),
                "{name}, {channel}: every message once, in order, byte for byte"
            );
        }
    }
    let cursor: Vec<String> = channels
        .iter()
        .map(|c| expected[*c].last().expect("published").position.cursor())
        .collect();
    assert_eq!(
        sse_c.last_event_id(),
        cursor.join(","),
        "the SSE cursor names the last message of every channel"
    );
}

/// A WebSocket client and an SSE client leave node A and come back on node B with their last
/// position: they get exactly what they missed, then live messages.
pub(crate) async fn scenario_resume_on_another_node(url: &str) {
    let [a, b, c] = three_nodes(url);
    let channel = "room:resume";
    let path = format!("/sse?channel={channel}");
    let n = |i: u64| format!(r#"{{"n":{i}}}"#);

    let mut ws = WsClient::connect(&a.ws_url("/ws")).await;
    ws.subscribe(channel).await;
    let mut sse = SseClient::connect(a.addr, &path, None).await;
    sse.assert_stream();
    sse.expect_subscribed(channel).await;
    for i in 1..=5 {
        c.publish(channel, &n(i)).await;
    }
    let mut ws_last = None;
    for i in 1..=5 {
        let message = ws.next_message(WS_TIMEOUT).await;
        assert_eq!((message.position.offset, &message.data), (i, &n(i)));
        assert_eq!(sse.next_message(SSE_TIMEOUT).await, message);
        ws_last = Some(message.position);
    }
    let ws_last = ws_last.expect("read");
    let cursor = sse.last_event_id().to_owned();
    assert_eq!(cursor, ws_last.cursor());
    // Hang up without a goodbye, as a dropped network would.
    drop(ws);
    drop(sse);

    for i in 6..=15 {
        c.publish(channel, &n(i)).await;
    }
    let mut ws = WsClient::connect(&b.ws_url("/ws")).await;
    let subscribed = ws
        .subscribe_since(channel, &ws_last.epoch, ws_last.offset)
        .await;
    assert_eq!(subscribed["recovered"], true, "{subscribed}");
    assert_eq!(Position::from_json(&subscribed), ws_last, "{subscribed}");
    let mut sse = SseClient::connect(b.addr, &path, Some(&cursor)).await;
    sse.assert_stream();
    let (event, subscribed) = sse.expect_subscribed(channel).await;
    assert_eq!(subscribed["recovered"], true, "{subscribed}");
    assert_eq!(
        event.id, cursor,
        "the subscribed event carries the resumed cursor"
    );
    c.publish(channel, &n(16)).await;
    for i in 6..=16 {
        let message = ws.next_message(WS_TIMEOUT).await;
        assert_eq!(
            (message.position.offset, &message.data),
            (i, &n(i)),
            "WebSocket on B: the missed messages, then live ones"
        );
        assert_eq!(message.position.epoch, ws_last.epoch);
        assert_eq!(
            sse.next_message(SSE_TIMEOUT).await,
            message,
            "SSE on B: the missed messages, then live ones"
        );
    }

    // A client with no position starts at the channel's current position on any node.
    let mut fresh = WsClient::connect(&a.ws_url("/ws")).await;
    let subscribed = fresh.subscribe(channel).await;
    assert_eq!(subscribed["recovered"], false, "{subscribed}");
    assert_eq!(
        Position::from_json(&subscribed),
        Position {
            epoch: ws_last.epoch.clone(),
            offset: 16
        }
    );
}

/// What the interest scenario needs to see of Redis' pub/sub: plain `PUBSUB` on a standalone
/// server, sharded pub/sub summed over the masters on a cluster.
pub(crate) trait Upstream {
    /// The names of the Redis pub/sub channels matching `pattern` that have subscribers.
    fn channels(&self, pattern: &str) -> Vec<String>;
    /// How many connections subscribe to the Redis pub/sub channel `name`.
    fn subscribers(&self, name: &str) -> u64;
}

impl Upstream for Redis {
    fn channels(&self, pattern: &str) -> Vec<String> {
        lines(&self.cli(&["PUBSUB", "CHANNELS", pattern]))
    }

    fn subscribers(&self, name: &str) -> u64 {
        numsub(&self.cli(&["PUBSUB", "NUMSUB", name]))
    }
}

/// A node subscribes upstream to a channel only while it has local subscribers, once however many
/// it has, and lets go after the linger; a node without subscribers never hears the channel.
pub(crate) async fn scenario_upstream_follows_interest(url: &str, upstream: &dyn Upstream) {
    let linger_ms = LINGER.as_millis().to_string();
    let [a, b, c] = [(); 3].map(|_| {
        node(url)
            .env("HERALD_REDIS_LINGER_MS", linger_ms.as_str())
            .start()
    });
    let channel = "room:interest";
    let n = |i: u64| format!(r#"{{"n":{i}}}"#);

    let mut ws_a = WsClient::connect(&a.ws_url("/ws")).await;
    ws_a.subscribe(channel).await;
    let mut sse_a = SseClient::connect(a.addr, &format!("/sse?channel={channel}"), None).await;
    sse_a.assert_stream();
    sse_a.expect_subscribed(channel).await;
    let mut ws_b = WsClient::connect(&b.ws_url("/ws")).await;
    ws_b.subscribe(channel).await;

    let names = upstream.channels(&format!("herald:*:c:default/{channel}"));
    assert_eq!(names.len(), 1, "one Redis channel for {channel}: {names:?}");
    let name = &names[0];
    assert!(
        name.starts_with("herald:{") && name.ends_with(&format!("}}:c:default/{channel}")),
        "herald:{{P}}:c:<site>/<channel>: {name}"
    );
    // `subscribed` comes only once the node hears the channel, so this holds at once.
    assert_eq!(
        upstream.subscribers(name),
        2,
        "one upstream subscription each for A (two local subscribers) and B, none for C"
    );

    for i in 1..=10 {
        c.publish(channel, &n(i)).await;
    }
    for i in 1..=10 {
        assert_eq!(ws_a.next_message(WS_TIMEOUT).await.position.offset, i);
        assert_eq!(sse_a.next_message(SSE_TIMEOUT).await.position.offset, i);
        assert_eq!(ws_b.next_message(WS_TIMEOUT).await.position.offset, i);
    }
    let received = |text: &str| metric_value(text, "herald_redis_messages_received_total", &[]);
    assert_eq!(
        received(&a.metrics().await),
        10.0,
        "A hears each message once"
    );
    assert_eq!(
        received(&b.metrics().await),
        10.0,
        "B hears each message once"
    );
    assert_eq!(
        received(&c.metrics().await),
        0.0,
        "C publishes to the channel but has no subscriber: it never hears it"
    );

    // A loses one of its two subscribers and B its only one.
    drop(sse_a);
    let left = Instant::now();
    ws_b.send_json(&json!({"type": "unsubscribe", "channel": channel}))
        .await;
    let answer = ws_b.next_json(WS_TIMEOUT).await;
    assert_eq!(answer["type"], "unsubscribed", "{answer}");
    let after = wait_subscribers(upstream, name, 1).await;
    let after = after.duration_since(left);
    assert!(
        after >= LINGER,
        "B let go {after:?} after its last subscriber left, before the {LINGER:?} linger"
    );
    // The upstream subscription left is A's: its remaining subscriber still gets live messages,
    // and B hears nothing more.
    c.publish(channel, &n(11)).await;
    assert_eq!(ws_a.next_message(WS_TIMEOUT).await.position.offset, 11);
    assert_eq!(received(&a.metrics().await), 11.0);
    assert_eq!(
        received(&b.metrics().await),
        10.0,
        "B no longer hears the channel"
    );

    ws_a.close().await;
    wait_subscribers(upstream, name, 0).await;
}

// === tests on one standalone Redis ===

#[tokio::test]
async fn fan_out_reaches_every_node_once_in_order() {
    let redis = Redis::start();
    scenario_fan_out(&redis.url(), &["tag:rust", "user:42"]).await;
}

#[tokio::test]
async fn resume_on_another_node_recovers_exactly_the_missed() {
    let redis = Redis::start();
    scenario_resume_on_another_node(&redis.url()).await;
}

#[tokio::test]
async fn upstream_subscriptions_follow_local_interest() {
    let redis = Redis::start();
    scenario_upstream_follows_interest(&redis.url(), &redis).await;
}

#[tokio::test]
async fn history_overflow_answers_not_recovered() {
    let redis = Redis::start();
    // By count only: messages kept by age would cover the gap (tests/e2e/history.rs).
    let [a, b] = [(); 2].map(|_| {
        node(&redis.url())
            .env("HERALD_HISTORY_SIZE", "5")
            .env("HERALD_HISTORY_MIN_AGE_SECS", "0")
            .start()
    });
    let channel = "overflow";
    let mut ws = WsClient::connect(&a.ws_url("/ws")).await;
    ws.subscribe(channel).await;
    let first = b.publish(channel, "1").await;
    assert_eq!(ws.next_message(WS_TIMEOUT).await.position, first);
    drop(ws);

    // `XADD MAXLEN ~ 5` trims whole stream nodes (100 entries each) and may keep up to about a
    // hundred more than five: missing 400 is far past anything it keeps.
    let mut last = first.clone();
    for i in 2..=401 {
        last = b.publish(channel, &i.to_string()).await;
    }
    assert_eq!(last.epoch, first.epoch);

    let mut ws = WsClient::connect(&b.ws_url("/ws")).await;
    let subscribed = ws
        .subscribe_since(channel, &first.epoch, first.offset)
        .await;
    assert_eq!(subscribed["recovered"], false, "{subscribed}");
    assert_eq!(
        Position::from_json(&subscribed),
        last,
        "the current position"
    );
    let live = a.publish(channel, "402").await;
    let message = ws.next_message(WS_TIMEOUT).await;
    assert_eq!(
        message.position, live,
        "only live messages follow recovered: false"
    );

    let mut sse = SseClient::connect(
        a.addr,
        &format!("/sse?channel={channel}"),
        Some(&first.cursor()),
    )
    .await;
    sse.assert_stream();
    let (event, subscribed) = sse.expect_subscribed(channel).await;
    assert_eq!(subscribed["recovered"], false, "{subscribed}");
    assert_eq!(Position::from_json(&subscribed), live);
    assert_eq!(event.id, live.cursor());

    let history = a
        .get(&format!(
            "/api/history?channel={channel}&since={}",
            first.cursor()
        ))
        .await;
    assert_eq!(history.status, 200, "{}", history.text());
    assert_eq!(history.json()["recovered"], false, "{}", history.text());

    // What history still holds is recovered.
    let mut ws = WsClient::connect(&a.ws_url("/ws")).await;
    let subscribed = ws
        .subscribe_since(channel, &live.epoch, live.offset - 5)
        .await;
    assert_eq!(subscribed["recovered"], true, "{subscribed}");
    for offset in live.offset - 4..=live.offset {
        let message = ws.next_message(WS_TIMEOUT).await;
        assert_eq!(message.position.offset, offset);
        assert_eq!(message.data, offset.to_string());
    }
}

#[tokio::test]
async fn lost_history_starts_a_new_epoch_and_answers_not_recovered() {
    let redis = Redis::start();
    let [a, b] = [(); 2].map(|_| node(&redis.url()).start());
    let channel = "lost";
    let path = format!("/sse?channel={channel}");
    let mut ws = WsClient::connect(&a.ws_url("/ws")).await;
    ws.subscribe(channel).await;
    let mut sse = SseClient::connect(a.addr, &path, None).await;
    sse.assert_stream();
    sse.expect_subscribed(channel).await;
    let mut old = None;
    for i in 1..=3 {
        old = Some(b.publish(channel, &i.to_string()).await);
    }
    let old = old.expect("published");
    for i in 1..=3 {
        assert_eq!(ws.next_message(WS_TIMEOUT).await.position.offset, i);
        assert_eq!(sse.next_message(SSE_TIMEOUT).await.position.offset, i);
    }

    // Redis loses everything, as one restarted without persistence would.
    assert_eq!(redis.cli(&["FLUSHALL"]), "OK");
    let new = b.publish(channel, "4").await;
    assert_ne!(new.epoch, old.epoch, "history was lost: a new epoch");
    assert_eq!(new.offset, 1);

    // Connected clients are told, right before the first message of the new epoch.
    let again = ws.next_json(WS_TIMEOUT).await;
    assert_eq!(again["type"], "subscribed", "{again}");
    assert_eq!(again["recovered"], false, "{again}");
    assert_eq!(again["epoch"], new.epoch.as_str(), "{again}");
    let message = ws.next_message(WS_TIMEOUT).await;
    assert_eq!(message.position, new);
    assert_eq!(
        Some(message.position.offset),
        again["offset"].as_u64().map(|o| o + 1),
        "the message follows its subscribed frame without a gap"
    );
    let (_, again) = sse.expect_subscribed(channel).await;
    assert_eq!(again["recovered"], false, "{again}");
    assert_eq!(again["epoch"], new.epoch.as_str(), "{again}");
    assert_eq!(sse.next_message(SSE_TIMEOUT).await.position, new);

    // Clients coming back with a position of the lost epoch are told it is gone.
    let mut ws = WsClient::connect(&b.ws_url("/ws")).await;
    let subscribed = ws.subscribe_since(channel, &old.epoch, old.offset).await;
    assert_eq!(subscribed["recovered"], false, "{subscribed}");
    assert_eq!(Position::from_json(&subscribed), new);
    let mut sse = SseClient::connect(b.addr, &path, Some(&old.cursor())).await;
    sse.assert_stream();
    let (_, subscribed) = sse.expect_subscribed(channel).await;
    assert_eq!(subscribed["recovered"], false, "{subscribed}");
    assert_eq!(Position::from_json(&subscribed), new);
}

// === helpers ===

/// Payloads with odd spacing, tabs, line breaks, escapes and non-ASCII text, which Herald must
/// hand on exactly as published (no carriage returns: SSE would turn them into line feeds).
fn odd_payload(channel: usize, i: u64) -> String {
    match i % 3 {
        0 => format!(r#"{{"n" : {i}, "c":{channel}, "text":"caf\u00e9 é \"q\""}}"#),
        1 => format!("{{\"n\":{i},\t\"c\" : {channel},\n \"list\" : [ 1 , 2 ]}}"),
        _ => format!("[ {i} , {channel} , null,true , 1.50e3 ]"),
    }
}

/// Messages grouped by channel, each group in the order given.
fn by_channel(messages: &[Delivered]) -> BTreeMap<String, Vec<Delivered>> {
    let mut groups: BTreeMap<String, Vec<Delivered>> = BTreeMap::new();
    for message in messages {
        groups
            .entry(message.channel.clone())
            .or_default()
            .push(message.clone());
    }
    groups
}

/// Non-empty lines of `redis-cli` output.
fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The count in a `PUBSUB NUMSUB name` / `PUBSUB SHARDNUMSUB name` answer (`name` then the count).
pub(crate) fn numsub(text: &str) -> u64 {
    lines(text)
        .last()
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("not a NUMSUB answer: {text:?}"))
}

/// Polls until `name` has `count` subscribers upstream; returns when that was seen.
async fn wait_subscribers(upstream: &dyn Upstream, name: &str, count: u64) -> Instant {
    let deadline = Instant::now() + CHANGE_TIMEOUT;
    loop {
        let now = upstream.subscribers(name);
        let seen = Instant::now();
        if now == count {
            return seen;
        }
        assert!(
            seen < deadline,
            "{name} still has {now} upstream subscribers, not {count}, after {CHANGE_TIMEOUT:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}
