//! `Idempotency-Key` on `POST /api/publish` and `POST /api/deliver`: a retry (also racing, also
//! on another node) is answered with what the first call did and delivers nothing twice; a key
//! is forgotten after `deliver.idempotency_ttl_secs`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use herald_tests::{
    DEFAULT_SHARDS, DEFAULT_SITE, Delivery, DeliveryAnswer, Herald, Position, Redis, Request,
    Response, publish_results, shards_touched,
};
use serde_json::json;

use super::support::{POLL, Subscriber, connect_all, expect_all, notice, sentinel, spread};
use crate::redis::node;

/// How long the TTL test waits for a key to be forgotten (its TTL is 1 s).
const FORGET_TIMEOUT: Duration = Duration::from_secs(10);

/// `POST /api/publish` of `data` to `channels` with `Idempotency-Key: key`.
async fn publish_with_key(addr: SocketAddr, channels: &[&str], data: &str, key: &str) -> Response {
    let body = json!({"channels": channels}).to_string();
    // `data` goes in byte for byte: the object is closed by hand.
    let body = format!("{},\"data\":{data}}}", body.trim_end_matches('}'));
    Request::post(addr, "/api/publish")
        .header("Idempotency-Key", key)
        .json_body(&body)
        .send()
        .await
}

#[tokio::test]
async fn a_publish_retried_with_its_key_is_stored_and_delivered_once() {
    let herald = Herald::start();
    let url = herald.ws_url("/ws");
    let mut news = Subscriber::connect(&url, "news", "").await;
    let mut sport = Subscriber::connect(&url, "sport", "").await;
    let mut weather = Subscriber::connect(&url, "weather", "").await;
    let mut timeline = Subscriber::connect(&url, "user:5", "5").await;

    let data = notice(1);
    let first = publish_results(
        &publish_with_key(herald.addr, &["news"], &data, "p-1").await,
        &["news"],
    );
    let again = publish_results(
        &publish_with_key(herald.addr, &["news"], &data, "p-1").await,
        &["news"],
    );
    assert_eq!(
        again, first,
        "the retry is answered with the first publish's position"
    );
    let got = news.expect(&data, "the publish").await;
    assert_eq!(got.position, first[0]);
    // The retry took no offset: the next publish follows the first one at once.
    let next = herald.publish("news", &sentinel("news")).await;
    assert_eq!(next.offset, first[0].offset + 1, "the retry stored nothing");
    news.expect(&sentinel("news"), "no second copy").await;

    // On a timeline channel too.
    let first = publish_results(
        &publish_with_key(herald.addr, &["user:5"], &data, "p-2").await,
        &["user:5"],
    );
    let again = publish_results(
        &publish_with_key(herald.addr, &["user:5"], &data, "p-2").await,
        &["user:5"],
    );
    assert_eq!(again, first);
    assert_eq!(
        timeline
            .expect(&data, "a keyed publish to user:5")
            .await
            .position,
        first[0]
    );

    // Per channel: a batch retried with one more channel publishes only the new one.
    let batch = publish_results(
        &publish_with_key(herald.addr, &["news", "sport"], &data, "p-3").await,
        &["news", "sport"],
    );
    let wider = publish_results(
        &publish_with_key(herald.addr, &["sport", "weather"], &data, "p-3").await,
        &["sport", "weather"],
    );
    assert_eq!(
        wider[0], batch[1],
        "sport was published under this key already"
    );
    news.expect(&data, "the batch").await;
    sport.expect(&data, "the batch").await;
    weather.expect(&data, "the channel new to the key").await;

    // Another key is another publish.
    let other = publish_results(
        &publish_with_key(herald.addr, &["news"], &data, "p-4").await,
        &["news"],
    );
    assert_ne!(other[0], batch[0]);
    news.expect(&data, "another key").await;

    // A bad key is refused, as on deliveries.
    let response = publish_with_key(herald.addr, &["news"], &data, &"k".repeat(129)).await;
    response.assert_error(400, "bad_request");

    let end = sentinel("end");
    herald
        .publish_batch(&["news", "sport", "weather", "user:5"], &end)
        .await;
    for subscriber in [&mut news, &mut sport, &mut weather, &mut timeline] {
        subscriber.expect(&end, "nothing twice").await;
    }
}

#[tokio::test]
async fn racing_deliveries_with_one_key_publish_each_shard_once() {
    let herald = Herald::start();
    let ids: Vec<u64> = (1..=500).collect();
    let shards = shards_touched(DEFAULT_SITE, ids.iter().map(u64::to_string), DEFAULT_SHARDS);
    let watched_ids: Vec<u64> = (1..=50).map(|k| k * 10).collect();
    let mut watched = connect_all(spread(&[&herald], &watched_ids)).await;
    let data = notice(2);
    let delivery = Delivery::user(ids.iter().copied(), &data).key("race-1");
    let answers: Vec<DeliveryAnswer> = join_all((0..8).map(|_| herald.deliver(&delivery))).await;
    for answer in &answers {
        assert_eq!(
            (answer.recipients, answer.shards),
            (500, shards),
            "{answer:?}"
        );
        assert_eq!(answer.messages + answer.duplicates, shards, "{answer:?}");
    }
    let published: u64 = answers.iter().map(|a| a.messages).sum();
    assert_eq!(
        published, shards,
        "each shard message published once among 8 racing calls: {answers:?}"
    );
    expect_all(&mut watched, &data, "the delivery").await;
    let end = sentinel("race");
    herald
        .deliver(&Delivery::user(watched_ids.iter().copied(), &end))
        .await;
    expect_all(&mut watched, &end, "nothing twice").await;
}

#[tokio::test]
async fn a_key_is_forgotten_after_its_ttl() {
    let herald = Herald::builder()
        .config_toml("[deliver]\nidempotency_ttl_secs = 1\n")
        .start();
    let mut watched = connect_all(spread(&[&herald], &[1])).await;
    let data = notice(3);
    let delivery = Delivery::user([1], &data).key("ttl-1");
    assert_eq!(herald.deliver(&delivery).await.messages, 1);
    expect_all(&mut watched, &data, "the first delivery").await;
    let retry = herald.deliver(&delivery).await;
    assert_eq!((retry.messages, retry.duplicates), (0, 1), "within the TTL");
    let deadline = Instant::now() + FORGET_TIMEOUT;
    loop {
        let answer = herald.deliver(&delivery).await;
        if answer.messages == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the key is still remembered {FORGET_TIMEOUT:?} after a TTL of 1 s"
        );
        tokio::time::sleep(POLL * 10).await;
    }
    expect_all(
        &mut watched,
        &data,
        "published again once the key was forgotten",
    )
    .await;
    let end = sentinel("ttl");
    herald.deliver(&Delivery::user([1], &end)).await;
    expect_all(&mut watched, &end, "only once more").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_on_other_nodes_publish_nothing_twice() {
    let redis = Redis::start();
    let nodes = [
        node(&redis.url()).start(),
        node(&redis.url()).start(),
        node(&redis.url()).start(),
    ];
    let mut news = Subscriber::connect(&nodes[2].ws_url("/ws"), "news", "").await;
    let watched_ids: Vec<u64> = (1..=30).map(|k| k * 7).collect();
    let mut watched = connect_all(spread(&nodes.each_ref(), &watched_ids)).await;

    // One publish, retried at once on all three nodes.
    let data = notice(4);
    let answers = join_all(
        nodes
            .iter()
            .map(|n| publish_with_key(n.addr, &["news"], &data, "r-1")),
    )
    .await;
    let positions: Vec<Position> = answers
        .iter()
        .map(|response| publish_results(response, &["news"]).remove(0))
        .collect();
    assert!(
        positions.iter().all(|p| *p == positions[0]),
        "every node answers the one position: {positions:?}"
    );
    news.expect(&data, "the publish").await;

    // One delivery, retried at once on all three nodes.
    let ids: Vec<u64> = (1..=3000).collect();
    let shards = shards_touched(DEFAULT_SITE, ids.iter().map(u64::to_string), DEFAULT_SHARDS);
    let delivery = Delivery::user(ids.iter().copied(), &data).key("r-2");
    let answers: Vec<DeliveryAnswer> = join_all(nodes.iter().map(|n| n.deliver(&delivery))).await;
    let published: u64 = answers.iter().map(|a| a.messages).sum();
    assert_eq!(
        published, shards,
        "each shard message once over three nodes: {answers:?}"
    );
    for answer in &answers {
        assert_eq!(answer.messages + answer.duplicates, shards, "{answer:?}");
    }
    expect_all(&mut watched, &data, "the delivery").await;

    // And later, after a lost answer.
    let late = nodes[1].deliver(&delivery).await;
    assert_eq!((late.messages, late.duplicates), (0, shards));
    let response = publish_with_key(nodes[0].addr, &["news"], &data, "r-1").await;
    assert_eq!(publish_results(&response, &["news"])[0], positions[0]);

    let end = sentinel("nodes");
    nodes[0].publish("news", &end).await;
    news.expect(&end, "nothing twice").await;
    nodes[1]
        .deliver(&Delivery::user(watched_ids.iter().copied(), &end))
        .await;
    expect_all(&mut watched, &end, "nothing twice").await;
}

/// Channel `a` with key `b:c` and channel `a:b` with key `c` are two publishes, not one and its
/// retry: on both engines (on Redis with one partition, so that both records share a hash tag).
#[tokio::test]
async fn a_key_belongs_to_its_channel_whatever_the_colons() {
    let redis = Redis::start();
    let engines = [
        ("memory", Herald::start()),
        (
            "redis",
            node(&redis.url())
                .env("HERALD_REDIS_PARTITIONS", "1")
                .start(),
        ),
    ];
    for (engine, herald) in &engines {
        for (channel, key) in [("a", "b:c"), ("a:b", "c")] {
            let data = format!(r#"{{"channel":"{channel}","key":"{key}"}}"#);
            let first = publish_results(
                &publish_with_key(herald.addr, &[channel], &data, key).await,
                &[channel],
            );
            assert_eq!(
                first[0].offset, 1,
                "{engine}: {channel} with key {key} is the channel's first publish, not a \
                 duplicate of another channel's"
            );
            let history = herald
                .get(&format!("/api/history?channel={channel}"))
                .await
                .json();
            assert_eq!(
                history["messages"][0]["data"].to_string(),
                data,
                "{engine}: {channel} holds its own message: {history}"
            );
        }
    }
}
