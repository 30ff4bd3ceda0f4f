//! Publishers pushed back while delivery lags (`delivery.max_lag_ms`): a publish that finds the
//! node behind waits, and past `delivery.max_publish_wait_ms` is answered 503 `delivery_lagging`
//! with `Retry-After`, publishing nothing; every publish that was accepted still reaches every
//! subscriber. The lag bound here is 1 ms, which hundreds of subscribers on one channel always
//! pass, so the tests need no timing of their own: they publish until the node pushes back.

use std::{collections::BTreeSet, time::Duration};

use herald_tests::{Herald, Request, WS_TIMEOUT, WsClient, WsEvent, metric_value};
use tokio::{sync::mpsc, task::JoinSet};

/// Subscribers on the one channel: enough that fanning a message out to them always takes
/// longer than the 1 ms lag bound.
const SUBSCRIBERS: usize = 400;

/// Publishes in flight at once.
const IN_FLIGHT: usize = 16;

/// The most publishes a test sends before it gives up waiting for pushback.
const MAX_PUBLISHES: usize = 4000;

fn herald(max_publish_wait_ms: u64) -> Herald {
    Herald::builder()
        .env("HERALD_DELIVERY_MAX_LAG_MS", "1")
        .env(
            "HERALD_DELIVERY_MAX_PUBLISH_WAIT_MS",
            max_publish_wait_ms.to_string(),
        )
        .env("HERALD_HISTORY_SIZE", "100000")
        .start()
}

/// Connects the subscribers; each reports every offset it receives.
async fn subscribe_all(herald: &Herald) -> mpsc::UnboundedReceiver<(usize, u64)> {
    let (tx, rx) = mpsc::unbounded_channel();
    for index in 0..SUBSCRIBERS {
        let mut client = WsClient::connect(&herald.ws_url("/ws")).await;
        client.subscribe("public").await;
        let tx = tx.clone();
        tokio::spawn(async move {
            while let WsEvent::Text(text) = client.next_event(Duration::from_secs(120)).await {
                let offset = herald_tests::Delivered::parse(&text).position.offset;
                if tx.send((index, offset)).is_err() {
                    break;
                }
            }
        });
    }
    rx
}

/// What a round of publishing saw.
#[derive(Default)]
struct Outcome {
    /// Offsets of the accepted publishes.
    accepted: BTreeSet<u64>,
    /// Answers other than 200: status, `Retry-After`, body.
    refused: Vec<(u16, Option<String>, String)>,
}

/// Publishes `IN_FLIGHT` at a time until `stop` says so or `MAX_PUBLISHES` went out.
async fn publish_until(herald: &Herald, stop: impl Fn(&Outcome) -> bool) -> Outcome {
    let mut outcome = Outcome::default();
    let mut sent = 0;
    while sent < MAX_PUBLISHES && !stop(&outcome) {
        let mut calls = JoinSet::new();
        for _ in 0..IN_FLIGHT {
            sent += 1;
            let request = Request::post(herald.addr, "/api/publish")
                .json_body(&format!(r#"{{"channel":"public","data":{{"n":{sent}}}}}"#));
            calls.spawn(async move { request.send().await });
        }
        while let Some(answer) = calls.join_next().await {
            let answer = answer.expect("publish task");
            if answer.status == 200 {
                let offset = answer.json()["results"][0]["offset"]
                    .as_u64()
                    .expect("offset");
                outcome.accepted.insert(offset);
            } else {
                let retry_after = answer.header("retry-after").map(str::to_owned);
                outcome
                    .refused
                    .push((answer.status, retry_after, answer.text()));
            }
        }
    }
    outcome
}

/// Waits until every subscriber holds exactly `accepted`.
async fn every_subscriber_gets(
    received: &mut mpsc::UnboundedReceiver<(usize, u64)>,
    accepted: &BTreeSet<u64>,
) {
    let mut got = vec![BTreeSet::new(); SUBSCRIBERS];
    let mut complete = 0;
    while complete < SUBSCRIBERS {
        let (index, offset) = tokio::time::timeout(4 * WS_TIMEOUT, received.recv())
            .await
            .unwrap_or_else(|_| {
                let short = got.iter().filter(|g| g.len() < accepted.len()).count();
                panic!("{short} subscribers still miss messages")
            })
            .expect("readers alive");
        assert!(
            accepted.contains(&offset),
            "offset {offset} was delivered but its publish was refused"
        );
        assert!(got[index].insert(offset), "offset {offset} delivered twice");
        if got[index].len() == accepted.len() {
            complete += 1;
        }
    }
}

#[tokio::test]
async fn past_the_wait_a_publish_is_refused_503_delivery_lagging_and_nothing_accepted_is_lost() {
    let herald = herald(0);
    let mut received = subscribe_all(&herald).await;
    let outcome = publish_until(&herald, |o| !o.refused.is_empty() && o.accepted.len() >= 2).await;
    assert!(
        !outcome.refused.is_empty(),
        "{MAX_PUBLISHES} publishes to {SUBSCRIBERS} subscribers never found delivery 1 ms behind"
    );
    for (status, retry_after, body) in &outcome.refused {
        assert_eq!(*status, 503, "{body}");
        assert!(body.contains(r#""code":"delivery_lagging""#), "{body}");
        assert_eq!(retry_after.as_deref(), Some("1"), "{body}");
    }
    every_subscriber_gets(&mut received, &outcome.accepted).await;
    let metrics = herald.metrics().await;
    assert_eq!(
        metric_value(&metrics, "herald_publish_pushback_refusals_total", &[]),
        outcome.refused.len() as f64
    );
    lag_comes_back_to_zero(&herald).await;
    let rejected = [("reason", "delivery_lagging"), ("site", "default")];
    assert_eq!(
        metric_value(&metrics, "herald_rejections_total", &rejected),
        outcome.refused.len() as f64
    );
}

async fn waits(herald: &Herald) -> f64 {
    let metrics = herald.metrics().await;
    metric_value(&metrics, "herald_publish_pushback_waits_total", &[])
}

#[tokio::test]
async fn within_the_wait_a_pushed_back_publish_goes_ahead_once_delivery_catches_up() {
    let herald = herald(60_000);
    let mut received = subscribe_all(&herald).await;
    let mut outcome = Outcome::default();
    let mut rounds = 0;
    while waits(&herald).await == 0.0 {
        rounds += 1;
        assert!(
            rounds <= 20,
            "publishes to {SUBSCRIBERS} subscribers never waited for delivery 1 ms behind"
        );
        let round = publish_until(&herald, |o| o.accepted.len() + o.refused.len() >= 200).await;
        outcome.accepted.extend(round.accepted);
        outcome.refused.extend(round.refused);
    }
    assert!(
        outcome.refused.is_empty(),
        "within the wait nothing is refused: {:?}",
        outcome.refused
    );
    every_subscriber_gets(&mut received, &outcome.accepted).await;
    let metrics = herald.metrics().await;
    assert_eq!(
        metric_value(&metrics, "herald_publish_pushback_refusals_total", &[]),
        0.0
    );
    assert!(metric_value(&metrics, "herald_publish_pushback_wait_seconds_total", &[]) > 0.0);
    lag_comes_back_to_zero(&herald).await;
}

/// Once everything is delivered, nothing is pending: the lag gauge reads 0 again (a connection
/// counted as pending and never settled would hold it up for good).
async fn lag_comes_back_to_zero(herald: &Herald) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = herald.metrics().await;
        let lag = metric_value(&metrics, "herald_delivery_lag_seconds", &[]);
        if lag == 0.0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "delivery lag still {lag} s with nothing left to deliver"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
