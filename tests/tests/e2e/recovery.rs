//! Recovery: a client that comes back with its last position (`since`, `Last-Event-ID`) gets exactly what it missed, or is told it cannot.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use herald_tests::{Herald, Position, SSE_TIMEOUT, SseClient, WS_TIMEOUT, WsClient};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A task that publishes `{"n":i}` to one channel as fast as it can until stopped, reporting the
/// last offset it got back.
struct Publisher {
    stop: Arc<AtomicBool>,
    published: watch::Receiver<u64>,
    task: JoinHandle<u64>,
}

impl Publisher {
    fn start(herald: &Herald, channel: &str) -> Publisher {
        let addr = herald.addr;
        let channel = channel.to_owned();
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, published) = watch::channel(0);
        let task = tokio::spawn({
            let stop = Arc::clone(&stop);
            async move {
                let mut last = 0;
                while !stop.load(Ordering::Relaxed) {
                    let body = format!(r#"{{"channel":"{channel}","data":{{"n":{}}}}}"#, last + 1);
                    let response = herald_tests::Request::post(addr, "/api/publish")
                        .json_body(&body)
                        .send()
                        .await;
                    let position = herald_tests::publish_results(&response, &[&channel]).remove(0);
                    assert_eq!(position.offset, last + 1, "offsets increase by one");
                    last = position.offset;
                    tx.send_replace(last);
                }
                last
            }
        });
        Publisher {
            stop,
            published,
            task,
        }
    }

    /// Waits until at least `offset` has been published.
    async fn reached(&mut self, offset: u64) {
        tokio::time::timeout(WS_TIMEOUT, self.published.wait_for(|&o| o >= offset))
            .await
            .unwrap_or_else(|_| panic!("publisher did not reach offset {offset}"))
            .expect("publisher task alive");
    }

    fn current(&self) -> u64 {
        *self.published.borrow()
    }

    /// Stops publishing and returns the last offset published.
    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("publisher task")
    }
}

/// How many times the continuous-publish tests hang up and resume.
const RECONNECTS: usize = 5;

/// Checks that the offsets received over all connections, in order, are exactly 1..=last.
fn assert_exactly_once(segments: &[Vec<u64>], last: u64) {
    let all: Vec<u64> = segments.concat();
    let unique: BTreeSet<u64> = all.iter().copied().collect();
    assert_eq!(
        unique.len(),
        all.len(),
        "no duplicate; per connection: {segments:?}"
    );
    let expected: Vec<u64> = (1..=last).collect();
    assert_eq!(
        all, expected,
        "no gap, in order; per connection: {segments:?}"
    );
}

#[tokio::test]
async fn ws_since_replays_exactly_the_missed_messages() {
    let herald = Herald::start();
    let mut ws = WsClient::connect(&herald.ws_url("/ws")).await;
    ws.subscribe("public").await;
    for i in 1..=5 {
        herald.publish("public", &format!(r#"{{"n":{i}}}"#)).await;
    }
    let mut last = None;
    for i in 1..=5 {
        let message = ws.next_message(WS_TIMEOUT).await;
        assert_eq!(message.position.offset, i);
        last = Some(message.position);
    }
    let last = last.expect("read");
    ws.close().await;

    for i in 6..=10 {
        herald.publish("public", &format!(r#"{{"n":{i}}}"#)).await;
    }
    let mut ws = WsClient::connect(&herald.ws_url("/ws")).await;
    let subscribed = ws.subscribe_since("public", &last.epoch, last.offset).await;
    assert_eq!(subscribed["recovered"], true, "{subscribed}");
    assert_eq!(
        Position::from_json(&subscribed),
        last,
        "subscribed echoes since: {subscribed}"
    );
    for i in 6..=10 {
        let message = ws.next_message(WS_TIMEOUT).await;
        assert_eq!(message.position.offset, i);
        assert_eq!(message.data, format!(r#"{{"n":{i}}}"#));
    }
    herald.publish("public", r#"{"n":11}"#).await;
    assert_eq!(
        ws.next_message(WS_TIMEOUT).await.position.offset,
        11,
        "live after the replay"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_resume_while_publishing_has_no_gap_and_no_duplicate() {
    let herald = Herald::builder()
        .env("HERALD_HISTORY_SIZE", "100000")
        .start();
    let mut ws = WsClient::connect(&herald.ws_url("/ws")).await;
    ws.subscribe("public").await;
    let mut publisher = Publisher::start(&herald, "public");

    let mut segments: Vec<Vec<u64>> = Vec::new();
    let mut last: Option<Position> = None;
    for _ in 0..RECONNECTS {
        // Read a while, live, then hang up without a goodbye, as a dropped network would: what
        // was in flight is lost and must come back from history.
        let live_from = publisher.current() + 10;
        let mut segment = Vec::new();
        loop {
            let message = ws.next_message(WS_TIMEOUT).await;
            segment.push(message.position.offset);
            let offset = message.position.offset;
            last = Some(message.position);
            if offset >= live_from {
                break;
            }
        }
        segments.push(segment);
        drop(ws);
        let seen = last.clone().expect("read");
        publisher.reached(seen.offset + 10).await;

        ws = WsClient::connect(&herald.ws_url("/ws")).await;
        let subscribed = ws.subscribe_since("public", &seen.epoch, seen.offset).await;
        assert_eq!(subscribed["recovered"], true, "{subscribed}");
        assert_eq!(
            Position::from_json(&subscribed),
            seen,
            "subscribed echoes since"
        );
    }
    let final_offset = publisher.stop().await;
    let mut segment = Vec::new();
    while segment.last().copied().or(last.as_ref().map(|p| p.offset)) < Some(final_offset) {
        segment.push(ws.next_message(WS_TIMEOUT).await.position.offset);
    }
    segments.push(segment);
    assert_exactly_once(&segments, final_offset);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_last_event_id_resume_while_publishing_has_no_gap_and_no_duplicate() {
    let herald = Herald::builder()
        .env("HERALD_HISTORY_SIZE", "100000")
        .start();
    let mut sse = SseClient::connect(herald.addr, "/sse?channel=public", None).await;
    sse.assert_stream();
    sse.expect_subscribed("public").await;
    let mut publisher = Publisher::start(&herald, "public");

    let mut segments: Vec<Vec<u64>> = Vec::new();
    let mut last: Option<Position> = None;
    for _ in 0..RECONNECTS {
        let live_from = publisher.current() + 10;
        let mut segment = Vec::new();
        loop {
            let message = sse.next_message(SSE_TIMEOUT).await;
            segment.push(message.position.offset);
            let offset = message.position.offset;
            last = Some(message.position);
            if offset >= live_from {
                break;
            }
        }
        segments.push(segment);
        let seen = last.clone().expect("read");
        let last_event_id = sse.last_event_id().to_owned();
        assert_eq!(
            last_event_id,
            seen.cursor(),
            "the id names the last message received"
        );
        drop(sse);
        publisher.reached(seen.offset + 10).await;

        sse = SseClient::connect(herald.addr, "/sse?channel=public", Some(&last_event_id)).await;
        sse.assert_stream();
        let (event, subscribed) = sse.expect_subscribed("public").await;
        assert_eq!(subscribed["recovered"], true, "{subscribed}");
        assert_eq!(Position::from_json(&subscribed), seen);
        assert_eq!(
            event.id, last_event_id,
            "the subscribed event carries the resumed cursor"
        );
    }
    let final_offset = publisher.stop().await;
    let mut segment = Vec::new();
    while segment.last().copied().or(last.as_ref().map(|p| p.offset)) < Some(final_offset) {
        segment.push(sse.next_message(SSE_TIMEOUT).await.position.offset);
    }
    segments.push(segment);
    assert_exactly_once(&segments, final_offset);
}

#[tokio::test]
async fn sse_last_event_id_query_parameter_resumes_a_first_connect() {
    let herald = Herald::start();
    let mut epoch = String::new();
    for i in 1..=5 {
        epoch = herald.publish("tag:rust", &format!("{i}")).await.epoch;
    }
    let path = format!("/sse?channel=tag:rust&last_event_id={epoch}:2");
    let mut sse = SseClient::connect(herald.addr, &path, None).await;
    sse.assert_stream();
    let (event, subscribed) = sse.expect_subscribed("tag:rust").await;
    assert_eq!(subscribed["recovered"], true, "{subscribed}");
    assert_eq!(subscribed["offset"], 2);
    assert_eq!(event.id, format!("{epoch}:2"));
    for i in 3..=5 {
        let message = sse.next_message(SSE_TIMEOUT).await;
        assert_eq!(message.position.offset, i);
        assert_eq!(message.data, i.to_string());
    }

    // The header wins over the query parameter.
    let path = format!("/sse?channel=tag:rust&last_event_id={epoch}:1");
    let mut sse = SseClient::connect(herald.addr, &path, Some(&format!("{epoch}:4"))).await;
    sse.assert_stream();
    let (_, subscribed) = sse.expect_subscribed("tag:rust").await;
    assert_eq!(
        subscribed["offset"], 4,
        "Last-Event-ID header wins: {subscribed}"
    );
    assert_eq!(sse.next_message(SSE_TIMEOUT).await.position.offset, 5);
}

#[tokio::test]
async fn sse_stream_with_two_channels_resumes_both() {
    let herald = Herald::start();
    let path = "/sse?channel=user:42&channel=replies:42";
    let mut sse = SseClient::connect(herald.addr, path, None).await;
    sse.assert_stream();
    sse.expect_subscribed("user:42").await;
    sse.expect_subscribed("replies:42").await;

    // Both timelines of user 42 live in the user's timeline shard, so their
    // offsets are the shard's: one sequence over both channels, in order.
    herald.publish("user:42", r#""u1""#).await;
    herald.publish("replies:42", r#""r1""#).await;
    herald.publish("user:42", r#""u2""#).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        let message = sse.next_message(SSE_TIMEOUT).await;
        got.push((message.position.offset, message.data));
    }
    assert_eq!(
        got,
        [
            (1, r#""u1""#.to_owned()),
            (2, r#""r1""#.to_owned()),
            (3, r#""u2""#.to_owned())
        ]
    );
    let cursor = sse.last_event_id().to_owned();
    let positions: Vec<&str> = cursor.split(',').collect();
    assert_eq!(positions.len(), 2, "one position per channel in {cursor}");
    assert!(
        positions[0].ends_with(":3") && positions[1].ends_with(":2"),
        "{cursor}"
    );
    drop(sse);

    herald.publish("replies:42", r#""r2""#).await;
    herald.publish("user:42", r#""u3""#).await;
    herald.publish("replies:42", r#""r3""#).await;

    let mut sse = SseClient::connect(herald.addr, path, Some(&cursor)).await;
    sse.assert_stream();
    let (_, user) = sse.expect_subscribed("user:42").await;
    let (_, replies) = sse.expect_subscribed("replies:42").await;
    assert_eq!(
        (&user["recovered"], &user["offset"]),
        (&true.into(), &3.into()),
        "{user}"
    );
    assert_eq!(
        (&replies["recovered"], &replies["offset"]),
        (&true.into(), &2.into()),
        "{replies}"
    );
    let mut missed = Vec::new();
    for _ in 0..3 {
        let message = sse.next_message(SSE_TIMEOUT).await;
        missed.push((message.channel, message.position.offset, message.data));
    }
    missed.sort();
    assert_eq!(
        missed,
        [
            ("replies:42".to_owned(), 4, r#""r2""#.to_owned()),
            ("replies:42".to_owned(), 6, r#""r3""#.to_owned()),
            ("user:42".to_owned(), 5, r#""u3""#.to_owned()),
        ]
    );
    let positions: Vec<String> = sse.last_event_id().split(',').map(str::to_owned).collect();
    assert!(
        positions[0].ends_with(":5") && positions[1].ends_with(":6"),
        "{positions:?}"
    );
}

#[tokio::test]
async fn history_overflow_answers_not_recovered() {
    // By count only: messages kept by age would cover the gap.
    let herald = Herald::builder()
        .env("HERALD_HISTORY_SIZE", "5")
        .env("HERALD_HISTORY_MIN_AGE_SECS", "0")
        .start();
    let mut ws = WsClient::connect(&herald.ws_url("/ws")).await;
    ws.subscribe("public").await;
    let first = herald.publish("public", "1").await;
    assert_eq!(ws.next_message(WS_TIMEOUT).await.position, first);
    ws.close().await;

    let mut last = first.clone();
    for i in 2..=11 {
        last = herald.publish("public", &i.to_string()).await;
    }

    // Missed 2..=11 but history keeps only 7..=11.
    let mut ws = WsClient::connect(&herald.ws_url("/ws")).await;
    let subscribed = ws
        .subscribe_since("public", &first.epoch, first.offset)
        .await;
    assert_eq!(subscribed["recovered"], false, "{subscribed}");
    assert_eq!(
        Position::from_json(&subscribed),
        last,
        "the channel's current position: {subscribed}"
    );
    herald.publish("public", "12").await;
    let message = ws.next_message(WS_TIMEOUT).await;
    assert_eq!(message.position.offset, 12, "only live messages follow");

    let mut sse =
        SseClient::connect(herald.addr, "/sse?channel=public", Some(&first.cursor())).await;
    sse.assert_stream();
    let (event, subscribed) = sse.expect_subscribed("public").await;
    assert_eq!(subscribed["recovered"], false, "{subscribed}");
    assert_eq!(subscribed["offset"], 12);
    assert_eq!(event.id, format!("{}:12", first.epoch));

    let history = herald
        .get(&format!(
            "/api/history?channel=public&since={}",
            first.cursor()
        ))
        .await;
    assert_eq!(history.status, 200, "{}", history.text());
    assert_eq!(history.json()["recovered"], false, "{}", history.text());
}

#[tokio::test]
async fn history_covering_exactly_the_gap_still_recovers() {
    // By count only: messages kept by age would cover the gap.
    let herald = Herald::builder()
        .env("HERALD_HISTORY_SIZE", "5")
        .env("HERALD_HISTORY_MIN_AGE_SECS", "0")
        .start();
    let mut epoch = String::new();
    for i in 1..=11 {
        epoch = herald.publish("public", &i.to_string()).await.epoch;
    }
    // History keeps 7..=11: since 6 misses exactly what is kept, since 5 misses 6 as well.
    let mut ws = WsClient::connect(&herald.ws_url("/ws")).await;
    let subscribed = ws.subscribe_since("public", &epoch, 6).await;
    assert_eq!(subscribed["recovered"], true, "{subscribed}");
    for i in 7..=11 {
        assert_eq!(ws.next_message(WS_TIMEOUT).await.position.offset, i);
    }

    let mut ws = WsClient::connect(&herald.ws_url("/ws")).await;
    let subscribed = ws.subscribe_since("public", &epoch, 5).await;
    assert_eq!(subscribed["recovered"], false, "{subscribed}");
    assert_eq!(subscribed["offset"], 11);
}

#[tokio::test]
async fn a_changed_epoch_or_a_position_ahead_answers_not_recovered() {
    let herald = Herald::start();
    let position = herald.publish("public", "1").await;
    let other_epoch = if position.epoch == "1" { "2" } else { "1" };

    let mut ws = WsClient::connect(&herald.ws_url("/ws")).await;
    let subscribed = ws.subscribe_since("public", other_epoch, 1).await;
    assert_eq!(subscribed["recovered"], false, "{subscribed}");
    assert_eq!(Position::from_json(&subscribed), position);

    let mut ws = WsClient::connect(&herald.ws_url("/ws")).await;
    let subscribed = ws.subscribe_since("public", &position.epoch, 99).await;
    assert_eq!(
        subscribed["recovered"], false,
        "since ahead of the channel: {subscribed}"
    );
    assert_eq!(Position::from_json(&subscribed), position);
    herald.publish("public", "2").await;
    assert_eq!(ws.next_message(WS_TIMEOUT).await.position.offset, 2);
}
