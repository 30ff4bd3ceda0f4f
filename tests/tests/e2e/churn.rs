//! Anonymous channel churn: a client looping subscribe/unsubscribe over random names is slowed
//! (`command_rate_limited`) and then closed (4105); a site's clients open channels new to the node
//! at most at its `new_channel_rate` (`new_channel_rate_limited`); and a channel that only ever
//! had readers is freed as soon as its last subscriber leaves, so churn leaves nothing behind.

use std::time::{Duration, Instant};

use herald_tests::{
    Herald, SSE_TIMEOUT, SseClient, SseNext, WS_TIMEOUT, WsClient, WsEvent, metric_value,
};
use serde_json::{Value, json};

/// Subscribe/unsubscribe pairs sent before the answers to them are read.
const BATCH: usize = 50;

/// What one churning connection was answered.
#[derive(Default)]
struct Answers {
    pairs_sent: usize,
    subscribed: usize,
    unsubscribed: usize,
    /// `error` frames by code, in the order they came.
    errors: Vec<String>,
    /// The close: code, reason, and the frame right before it.
    close: Option<(u16, String, Value)>,
}

impl Answers {
    fn count(&self, code: &str) -> usize {
        self.errors.iter().filter(|c| *c == code).count()
    }
}

impl std::fmt::Debug for Answers {
    /// A summary: the errors by code, not one by one.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut codes: Vec<&String> = self.errors.iter().collect();
        codes.sort();
        codes.dedup();
        let errors: Vec<String> = codes
            .into_iter()
            .map(|code| format!("{code}: {}", self.count(code)))
            .collect();
        f.debug_struct("Answers")
            .field("pairs_sent", &self.pairs_sent)
            .field("subscribed", &self.subscribed)
            .field("unsubscribed", &self.unsubscribed)
            .field("errors", &errors)
            .field("close", &self.close)
            .finish()
    }
}

/// Sends up to `pairs` subscribe/unsubscribe pairs on distinct names (`prefix0`, `prefix1`, …),
/// `BATCH` at a time, reading the answers to each batch; stops early at a close.
async fn churn(ws: &mut WsClient, prefix: &str, pairs: usize) -> Answers {
    let mut answers = Answers::default();
    let mut last = Value::Null;
    while answers.pairs_sent < pairs {
        let batch = BATCH.min(pairs - answers.pairs_sent);
        for i in answers.pairs_sent..answers.pairs_sent + batch {
            let channel = format!("{prefix}{i}");
            ws.send_json(&json!({"type": "subscribe", "channel": channel}))
                .await;
            ws.send_json(&json!({"type": "unsubscribe", "channel": channel}))
                .await;
        }
        answers.pairs_sent += batch;
        for _ in 0..2 * batch {
            match ws.next_event(Duration::from_secs(30)).await {
                WsEvent::Text(text) => {
                    let frame: Value = serde_json::from_str(&text).expect("JSON");
                    match frame["type"].as_str() {
                        Some("subscribed") => answers.subscribed += 1,
                        Some("unsubscribed") => answers.unsubscribed += 1,
                        Some("error") => {
                            answers.errors.push(frame["code"].as_str().unwrap().into())
                        }
                        _ => panic!("unexpected frame {frame}"),
                    }
                    last = frame;
                }
                WsEvent::Close(code, reason) => {
                    answers.close = Some((code, reason, last));
                    return answers;
                }
                other => panic!("churning client: {other:?} after {answers:?}"),
            }
        }
    }
    answers
}

async fn history_channels(herald: &Herald) -> f64 {
    metric_value(&herald.metrics().await, "herald_history_channels", &[])
}

/// Waits until `herald_history_channels` is at most `bound`.
async fn wait_for_history_channels(herald: &Herald, bound: f64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let held = history_channels(herald).await;
        if held <= bound {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{held} channel logs still held (at most {bound} expected)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_client_looping_subscribe_unsubscribe_is_slowed_then_closed_4105() {
    // The defaults: 50 frames a second, 200 at once.
    let herald = Herald::start();
    let mut ws = WsClient::connect(&herald.ws_url("/ws")).await;
    let answers = churn(&mut ws, "random", 20_000).await;

    assert!(
        answers.count("command_rate_limited") > 0,
        "frames past the rate are refused: {answers:?}"
    );
    let (code, reason, before) = answers
        .close
        .as_ref()
        .unwrap_or_else(|| panic!("a client that keeps on is closed: {answers:?}"));
    assert_eq!((*code, reason.as_str()), (4105, "command_rate_limited"));
    assert_eq!(
        (before["type"].as_str(), before["code"].as_str()),
        (Some("error"), Some("command_rate_limited")),
        "the close comes behind its error frame: {before}"
    );
    assert!(
        answers.pairs_sent < 20_000,
        "closed long before the end: {answers:?}"
    );
    // The channels it opened were all left: nothing is held for them.
    wait_for_history_channels(&herald, 0.0).await;
    let rejections = metric_value(
        &herald.metrics().await,
        "herald_rejections_total",
        &[("site", "default"), ("reason", "command_rate_limited")],
    );
    assert!(rejections > 0.0, "refusals are counted");

    // Others are served as before.
    let mut other = WsClient::connect(&herald.ws_url("/ws")).await;
    other.subscribe("public").await;
    let position = herald.publish("public", "1").await;
    assert_eq!(other.next_message(WS_TIMEOUT).await.position, position);
}

#[tokio::test]
async fn a_site_opens_channels_new_to_the_node_at_its_new_channel_rate() {
    let herald = Herald::builder()
        .env("HERALD_LIMITS_COMMAND_RATE", "0")
        .env("HERALD_LIMITS_NEW_CHANNEL_RATE", "2")
        .env("HERALD_LIMITS_NEW_CHANNEL_BURST", "40")
        .start();
    // A channel someone already holds is free to join, whatever the bucket says.
    let mut holder = WsClient::connect(&herald.ws_url("/ws")).await;
    holder.subscribe("public").await;

    let mut ws = WsClient::connect(&herald.ws_url("/ws")).await;
    let answers = churn(&mut ws, "fresh", 200).await;
    assert!(answers.close.is_none(), "the connection stays: {answers:?}");
    // The holder opened `public`, the first of the 40 in the burst.
    assert!(
        answers.subscribed >= 39 && answers.subscribed < 200,
        "the burst and what the rate refilled meanwhile: {answers:?}"
    );
    assert_eq!(
        answers.count("new_channel_rate_limited"),
        200 - answers.subscribed,
        "every other subscribe is refused with the code: {answers:?}"
    );

    ws.send_json(&json!({"type": "subscribe", "channel": "another-new-one"}))
        .await;
    let error = ws.expect_error("new_channel_rate_limited").await;
    assert_eq!(error["channel"], "another-new-one", "{error}");
    ws.subscribe("public").await;

    // SSE streams on new channels are told to come back later, as EventSource understands.
    let mut sse = SseClient::connect(herald.addr, "/sse?channel=yet-another", None).await;
    assert_eq!(sse.status, 200);
    match sse.try_next_event(SSE_TIMEOUT).await {
        SseNext::Event(event) => {
            assert_eq!(event.event, "error", "{event:?}");
            assert_eq!(
                event.json()["code"],
                "new_channel_rate_limited",
                "{event:?}"
            );
        }
        other => panic!("expected an error event, got {other:?}"),
    }
    let rejections = metric_value(
        &herald.metrics().await,
        "herald_rejections_total",
        &[("site", "default"), ("reason", "new_channel_rate_limited")],
    );
    assert!(rejections > 0.0, "refusals are counted");
}

#[tokio::test]
async fn channels_that_only_had_readers_are_freed_as_their_last_subscriber_leaves() {
    // No rate limits: what is left behind after the churn is what the engine keeps.
    let herald = Herald::builder()
        .env("HERALD_LIMITS_COMMAND_RATE", "0")
        .env("HERALD_LIMITS_NEW_CHANNEL_RATE", "0")
        .start();
    let mut holder = WsClient::connect(&herald.ws_url("/ws")).await;
    let held = holder.subscribe("held").await;

    let mut ws = WsClient::connect(&herald.ws_url("/ws")).await;
    let answers = churn(&mut ws, "gone", 5_000).await;
    assert_eq!(
        (answers.subscribed, answers.unsubscribed),
        (5_000, 5_000),
        "{:?}",
        answers.errors.first()
    );
    // The one channel still subscribed keeps its log and its epoch: a resume stays exact.
    wait_for_history_channels(&herald, 1.0).await;
    let position = herald.publish("held", "1").await;
    assert_eq!(position.epoch, held["epoch"].as_str().unwrap());
    assert_eq!(holder.next_message(WS_TIMEOUT).await.position, position);
}

/// The figure for the report: 100,000 pairs from one anonymous connection with every rate limit
/// off, and the server's RSS before and after. Run by hand:
/// `cargo test -p herald-tests --test e2e -- --ignored churn::figure --nocapture`.
#[tokio::test]
#[ignore = "a measurement, not a check"]
async fn figure_rss_after_100k_pairs() {
    let herald = Herald::builder()
        .env("HERALD_LIMITS_COMMAND_RATE", "0")
        .env("HERALD_LIMITS_NEW_CHANNEL_RATE", "0")
        .start();
    let mut ws = WsClient::connect(&herald.ws_url("/ws")).await;
    let rss = || {
        std::fs::read_to_string(format!("/proc/{}/status", herald.pid()))
            .unwrap()
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .unwrap()
            .to_owned()
    };
    churn(&mut ws, "warm", 1_000).await;
    let before = rss();
    let started = Instant::now();
    let answers = churn(&mut ws, "random", 100_000).await;
    eprintln!(
        "100k pairs: {:?}, {} subscribed; RSS before {before}, after {}; herald_history_channels {}",
        started.elapsed(),
        answers.subscribed,
        rss(),
        history_channels(&herald).await
    );
}
