//! Subscribers joining and leaving a channel on a node while messages stream in: nobody else
//! on the node misses anything, and each newcomer gets the channel without a gap.

use std::time::Duration;

use herald_tests::{Position, Redis, WS_TIMEOUT, WsClient};
use serde_json::json;

use super::node;
use super::support::{
    Attempt, CATCH_UP_TIMEOUT, END, Outcome, Publisher, Stop, assert_contiguous,
    assert_holds_every_acknowledged, is_end, read_ws,
};

/// The pause between two publishes while subscribers join and leave a busy channel: short, so
/// that messages are always on their way from Redis to the node when a subscriber arrives.
const BUSY_PACE: Duration = Duration::from_millis(1);

/// How many subscribers join (and leave) the busy channel, one after the other.
const JOINS: usize = 60;

/// How many times B's only subscriber of a channel hands over to the next one.
const HAND_OVERS: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_joining_a_busy_channel_disturb_no_one() {
    let redis = Redis::start();
    let [a, b] = [(); 2].map(|_| {
        node(&redis.url())
            .env("HERALD_HISTORY_SIZE", "10000")
            .start()
    });
    let channel = "busy";
    let mut steady = WsClient::connect(&b.ws_url("/ws")).await;
    steady.subscribe(channel).await;
    let steady_reader =
        tokio::spawn(async move { read_ws(&mut steady, CATCH_UP_TIMEOUT * 2, is_end).await });
    let publisher = Publisher::start(vec![a.addr], channel, BUSY_PACE);

    // Subscribers join B one after the other while messages stream in, every other one resuming
    // from where the one before left; each must see the channel without a gap from its position.
    let mut last: Option<Position> = None;
    for i in 0..JOINS {
        let mut joiner = WsClient::connect(&b.ws_url("/ws")).await;
        let subscribed = match &last {
            Some(since) if i % 2 == 1 => {
                let subscribed = joiner
                    .subscribe_since(channel, &since.epoch, since.offset)
                    .await;
                assert_eq!(subscribed["recovered"], true, "joiner {i}: {subscribed}");
                subscribed
            }
            _ => joiner.subscribe(channel).await,
        };
        let from = Position::from_json(&subscribed).offset;
        let (got, stop) = read_ws(&mut joiner, CATCH_UP_TIMEOUT, |m| {
            m.position.offset >= from + 3
        })
        .await;
        assert_eq!(stop, Stop::Matched, "joiner {i} from {from}");
        assert_contiguous(&format!("joiner {i}"), from, &got);
        last = got.last().map(|m| m.position.clone());
    }

    let attempts = publisher.stop().await;
    let end = a.publish(channel, END).await;
    let (messages, stop) = steady_reader.await.expect("reader");
    assert_eq!(stop, Stop::Matched, "the steady subscriber got END");
    assert_holds_every_acknowledged("steady subscriber", &messages, &attempts, &end, false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubscribing_while_the_node_lets_go_upstream_loses_nothing() {
    let redis = Redis::start();
    let a = node(&redis.url()).start();
    // No linger: B lets go upstream the moment its last subscriber leaves, so the next
    // subscriber arrives while the unsubscribe is on its way.
    let b = node(&redis.url())
        .env("HERALD_REDIS_LINGER_MS", "0")
        .start();
    let channel = "churn";
    let publisher = Publisher::start(vec![a.addr], channel, BUSY_PACE);
    let mut current = WsClient::connect(&b.ws_url("/ws")).await;
    current.subscribe(channel).await;
    for i in 0..HAND_OVERS {
        let mut next = WsClient::connect(&b.ws_url("/ws")).await;
        // Hand over: B's only subscriber leaves and the next one arrives at once, or as soon as
        // the leaving one is told it left, which is about when B's unsubscribe is on its way.
        current
            .send_json(&json!({"type": "unsubscribe", "channel": channel}))
            .await;
        if i % 2 == 1 {
            // Messages still on their way come first; a thousand is far more than 1 ms apiece
            // can queue before the answer.
            let unsubscribed = async {
                for _ in 0..1000 {
                    let frame = current.next_json(WS_TIMEOUT).await;
                    if frame["type"] == "unsubscribed" {
                        return true;
                    }
                    assert_eq!(frame["type"], "message", "subscriber {i}: {frame}");
                }
                false
            };
            assert!(unsubscribed.await, "subscriber {i}: no unsubscribed answer");
        }
        next.send_json(&json!({"type": "subscribe", "channel": channel}))
            .await;
        drop(current);
        let subscribed = next.next_json(WS_TIMEOUT).await;
        assert_eq!(
            subscribed["type"], "subscribed",
            "subscriber {i}: {subscribed}"
        );
        let from = Position::from_json(&subscribed).offset;
        let (got, stop) = read_ws(&mut next, CATCH_UP_TIMEOUT, |m| {
            m.position.offset >= from + 3
        })
        .await;
        assert_eq!(stop, Stop::Matched, "subscriber {i} from {from}");
        assert_contiguous(&format!("subscriber {i}"), from, &got);
        current = next;
    }
    let attempts = publisher.stop().await;
    let refused: Vec<&Attempt> = attempts
        .iter()
        .filter(|x| !matches!(x.outcome, Outcome::Acked(_)))
        .collect();
    assert!(refused.is_empty(), "{refused:#?}");
}
