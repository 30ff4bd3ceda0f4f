//! History kept by time as well as by count (`history.min_age_secs`, `history.max_size`): a
//! client that comes back after more than `history.size` messages, but while they are younger
//! than `min_age`, recovers every one of them; one that missed more than the cap, or messages
//! that have since outlived `min_age`, is told `recovered: false`. The same on the memory engine
//! and on Redis (published on one node, resumed on another).

use std::time::{Duration, Instant};

use herald_tests::{
    Herald, HeraldBuilder, Position, Redis, SSE_TIMEOUT, SseClient, WS_TIMEOUT, WsClient,
};

use crate::redis::node;

/// `history.size`: what is kept by count.
const SIZE: u64 = 5;
/// `history.max_size`: the cap, whatever the age.
const CAP: u64 = 40;
/// The longest wait for messages to outlive a `min_age` of 1 s: generous, because these tests
/// must pass on a busy two-core machine.
const AGE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the age waits look again.
const POLL: Duration = Duration::from_millis(200);

fn n(i: u64) -> String {
    format!(r#"{{"n":{i}}}"#)
}

/// History settings: `SIZE` by count, the cap `CAP`, and `min_age_secs`.
fn history(builder: HeraldBuilder, min_age_secs: u64) -> HeraldBuilder {
    builder
        .env("HERALD_HISTORY_SIZE", SIZE.to_string())
        .env("HERALD_HISTORY_MAX_SIZE", CAP.to_string())
        .env("HERALD_HISTORY_MIN_AGE_SECS", min_age_secs.to_string())
}

#[tokio::test]
async fn young_messages_outlast_the_count_in_memory() {
    let herald = history(Herald::builder(), 600).start();
    scenario_young_messages_outlast_the_count(&herald, &herald, "storm").await;
}

#[tokio::test]
async fn young_messages_outlast_the_count_on_redis() {
    let redis = Redis::start();
    let [a, b] = [(); 2].map(|_| history(node(&redis.url()), 600).start());
    scenario_young_messages_outlast_the_count(&a, &b, "storm").await;
}

#[tokio::test]
async fn old_messages_fall_back_to_the_count_in_memory() {
    let herald = history(Herald::builder(), 1).start();
    scenario_old_messages_fall_back_to_the_count(&herald, &herald, "aging").await;
}

#[tokio::test]
async fn old_messages_fall_back_to_the_count_on_redis() {
    let redis = Redis::start();
    let [a, b] = [(); 2].map(|_| history(node(&redis.url()), 1).start());
    let channel = "aging";
    scenario_old_messages_fall_back_to_the_count(&a, &b, channel).await;

    // And the stream gives them back: a publish trims what outlived `min_age` (once the oldest
    // is a second past due), long before `MAXLEN ~ CAP` would trim a whole stream node.
    let stream = stream_key(&redis, channel);
    let deadline = Instant::now() + AGE_TIMEOUT;
    let mut i = 100;
    loop {
        a.publish(channel, &n(i)).await;
        i += 1;
        let len: u64 = redis.cli(&["XLEN", &stream]).trim().parse().expect("XLEN");
        if len <= SIZE + 5 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stream still holds {len} entries"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// A client that missed six times `SIZE` messages recovers all of them on WebSocket and SSE;
/// missing exactly `CAP` still recovers, missing one more does not.
async fn scenario_young_messages_outlast_the_count(
    publisher: &Herald,
    resumer: &Herald,
    channel: &str,
) {
    let mut ws = WsClient::connect(&resumer.ws_url("/ws")).await;
    ws.subscribe(channel).await;
    let first = publisher.publish(channel, &n(1)).await;
    assert_eq!(ws.next_message(WS_TIMEOUT).await.position, first);
    drop(ws);

    let missed = 6 * SIZE;
    for i in 2..=1 + missed {
        publisher.publish(channel, &n(i)).await;
    }

    let mut ws = WsClient::connect(&resumer.ws_url("/ws")).await;
    let subscribed = ws
        .subscribe_since(channel, &first.epoch, first.offset)
        .await;
    assert_eq!(subscribed["recovered"], true, "{subscribed}");
    let mut sse = SseClient::connect(
        resumer.addr,
        &format!("/sse?channel={channel}"),
        Some(&first.cursor()),
    )
    .await;
    sse.assert_stream();
    let (_, subscribed) = sse.expect_subscribed(channel).await;
    assert_eq!(subscribed["recovered"], true, "{subscribed}");
    for i in 2..=1 + missed {
        let message = ws.next_message(WS_TIMEOUT).await;
        assert_eq!(
            (message.position.offset, &message.data),
            (i, &n(i)),
            "WebSocket: every missed message, in order"
        );
        assert_eq!(
            sse.next_message(SSE_TIMEOUT).await,
            message,
            "SSE: every missed message, in order"
        );
    }

    // Up to offset CAP + 2: the cap keeps 3..=CAP+2, so a client at 2 missed exactly what is
    // kept, and one at 1 missed one message more.
    let mut last = None;
    for i in 2 + missed..=CAP + 2 {
        last = Some(publisher.publish(channel, &n(i)).await);
    }
    let last = last.expect("published");
    let at = |offset| Position {
        epoch: first.epoch.clone(),
        offset,
    };

    let mut ws = WsClient::connect(&resumer.ws_url("/ws")).await;
    let subscribed = ws.subscribe_since(channel, &first.epoch, 2).await;
    assert_eq!(subscribed["recovered"], true, "{subscribed}");
    for i in 3..=CAP + 2 {
        assert_eq!(ws.next_message(WS_TIMEOUT).await.position, at(i));
    }

    let mut ws = WsClient::connect(&resumer.ws_url("/ws")).await;
    let subscribed = ws.subscribe_since(channel, &first.epoch, 1).await;
    assert_eq!(subscribed["recovered"], false, "past the cap: {subscribed}");
    assert_eq!(Position::from_json(&subscribed), last);
    let mut sse = SseClient::connect(
        resumer.addr,
        &format!("/sse?channel={channel}"),
        Some(&first.cursor()),
    )
    .await;
    sse.assert_stream();
    let (_, subscribed) = sse.expect_subscribed(channel).await;
    assert_eq!(subscribed["recovered"], false, "past the cap: {subscribed}");
}

/// With `min_age` 1 s: once the messages outlived it, only the newest `SIZE` are kept.
async fn scenario_old_messages_fall_back_to_the_count(
    publisher: &Herald,
    resumer: &Herald,
    channel: &str,
) {
    let mut first = None;
    let mut last = None;
    for i in 1..=4 * SIZE {
        let position = publisher.publish(channel, &n(i)).await;
        first.get_or_insert(position.clone());
        last = Some(position);
    }
    let (first, last) = (first.expect("published"), last.expect("published"));

    // Wait for the age, not for a time: until history no longer reaches back to the start.
    let deadline = Instant::now() + AGE_TIMEOUT;
    loop {
        let path = format!("/api/history?channel={channel}&since={}", first.cursor());
        let history = resumer.get(&path).await;
        assert_eq!(history.status, 200, "{}", history.text());
        if history.json()["recovered"] == false {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "messages still kept by age: {}",
            history.text()
        );
        tokio::time::sleep(POLL).await;
    }

    // The newest `SIZE` are kept whatever their age; one more is not.
    let mut ws = WsClient::connect(&resumer.ws_url("/ws")).await;
    let subscribed = ws
        .subscribe_since(channel, &first.epoch, last.offset - SIZE)
        .await;
    assert_eq!(subscribed["recovered"], true, "{subscribed}");
    for i in last.offset - SIZE + 1..=last.offset {
        let message = ws.next_message(WS_TIMEOUT).await;
        assert_eq!((message.position.offset, &message.data), (i, &n(i)));
    }
    let mut ws = WsClient::connect(&resumer.ws_url("/ws")).await;
    let subscribed = ws
        .subscribe_since(channel, &first.epoch, last.offset - SIZE - 1)
        .await;
    assert_eq!(subscribed["recovered"], false, "{subscribed}");
    assert_eq!(Position::from_json(&subscribed), last);
}

/// The history stream of `channel` on the default site (`KEYS`, on a test's own server).
fn stream_key(redis: &Redis, channel: &str) -> String {
    let keys = redis.cli(&["KEYS", &format!("herald:*:s:default/{channel}")]);
    let keys: Vec<&str> = keys.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(keys.len(), 1, "one stream for {channel}: {keys:?}");
    keys[0].trim().to_owned()
}
