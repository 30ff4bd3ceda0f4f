//! Timelines on Herald nodes sharing one Redis: a delivery to 30,000 users reaches the 3,000
//! connected ones once each and nobody else, with one Redis publish per shard touched; a retry
//! with the same `Idempotency-Key` publishes nothing; users offline during a delivery recover it
//! on another node (WebSocket `since`, SSE `Last-Event-ID`); a delivery cut by a Redis restart
//! completes on retry, at most once for each connected user, who is told of the restart's new
//! epoch; a node whose pub/sub connection Redis drops catches every
//! shard up; upstream subscriptions follow shards, not users; the same delivery on a Cluster.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use herald_tests::{
    DEFAULT_SHARDS, DEFAULT_SITE, Delivery, DeliveryAnswer, Herald, Position, Redis, RedisCluster,
    SseClient, WsClient, shards_touched,
};
use serde_json::Value;

use super::support::{
    CHANGE_TIMEOUT, POLL, Subscriber, cluster_publish_calls, connect_all, expect_all, expect_sse,
    metric_sum, notice, publish_calls, pubsub_channels, sentinel, spread, wait_metric,
};
use crate::redis::node;

/// Recipients of the big delivery: users `1..=RECIPIENTS`.
const RECIPIENTS: u64 = 30_000;

/// Every `CONNECTED_EVERY`-th recipient is connected: 3,000 users spread over the list.
const CONNECTED_EVERY: u64 = 10;

/// Connected users who are not recipients: `OUTSIDER_BASE + 1 ..= OUTSIDER_BASE + OUTSIDERS`.
const OUTSIDERS: u64 = 300;

/// Outsiders' ids start above every recipient's.
const OUTSIDER_BASE: u64 = 100_000;

/// Three nodes on the Redis at `url`, with the default `timeline.shards`.
fn three_nodes(url: &str) -> [Herald; 3] {
    [node(url).start(), node(url).start(), node(url).start()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_to_30000_reaches_the_3000_connected_across_three_nodes_once() {
    let redis = Redis::start();
    let nodes = three_nodes(&redis.url());
    let [a, b, c] = &nodes;

    // 1,000 recipients and 100 outsiders on each node, their ids spread over the whole list.
    let connected_ids: Vec<u64> = (1..=RECIPIENTS / CONNECTED_EVERY)
        .map(|k| k * CONNECTED_EVERY)
        .collect();
    let outsider_ids: Vec<u64> = (OUTSIDER_BASE + 1..=OUTSIDER_BASE + OUTSIDERS).collect();
    let mut recipients = connect_all(spread(&nodes.each_ref(), &connected_ids)).await;
    let mut outsiders = connect_all(spread(&nodes.each_ref(), &outsider_ids)).await;
    assert_eq!(recipients.len(), 3000);
    for node in &nodes {
        wait_metric(&[node], "herald_connections", &[], 1100.0).await;
    }

    // Redis carries one pub/sub channel per shard with local users, not one per user.
    let user_ids = connected_ids
        .iter()
        .chain(&outsider_ids)
        .map(u64::to_string);
    let connected_shards = shards_touched(DEFAULT_SITE, user_ids, DEFAULT_SHARDS);
    let upstream = pubsub_channels(&redis);
    assert!(
        upstream as u64 <= connected_shards,
        "{upstream} pub/sub channels in Redis for 3,300 users in {connected_shards} shards: \
         one upstream subscription per shard, not per user"
    );

    // The delivery.
    let all_ids = (1..=RECIPIENTS).map(|id| id.to_string());
    let shards = shards_touched(DEFAULT_SITE, all_ids, DEFAULT_SHARDS);
    let notice = notice(1);
    let delivery = Delivery::user(1..=RECIPIENTS, &notice).key("notice-1");
    let publishes_before = publish_calls(&redis);
    let answer = a.deliver(&delivery).await;
    assert_eq!(
        answer,
        DeliveryAnswer {
            recipients: RECIPIENTS,
            shards,
            messages: shards,
            duplicates: 0,
        },
        "one engine message per shard touched"
    );
    expect_all(&mut recipients, &notice, "the notice").await;
    let publishes = publish_calls(&redis) - publishes_before;
    assert!(
        publishes > 0 && publishes <= answer.shards,
        "{publishes} Redis PUBLISH/SPUBLISH commands for a delivery touching {} shards",
        answer.shards
    );
    wait_metric(
        &[a, b, c],
        "herald_timeline_expanded_total",
        &[],
        recipients.len() as f64,
    )
    .await;

    // A retry on another node, as after a lost answer: nothing is published again.
    let retry = b.deliver(&delivery).await;
    assert_eq!(
        retry,
        DeliveryAnswer {
            recipients: RECIPIENTS,
            shards,
            messages: 0,
            duplicates: shards,
        },
        "a retry with the same Idempotency-Key"
    );
    assert_eq!(
        publish_calls(&redis) - publishes_before,
        publishes,
        "the retry made no Redis publish"
    );
    for (result, expected) in [("published", shards), ("duplicate", shards)] {
        let counted = metric_sum(
            &[a, b, c],
            "herald_timeline_shard_messages_total",
            &[("result", result)],
        )
        .await;
        assert_eq!(
            counted, expected as f64,
            "herald_timeline_shard_messages_total{{result={result:?}}} over the nodes"
        );
    }

    // The sentinel: the first thing outsiders get, and the next thing recipients get, so nobody
    // got a stray notice or a second copy.
    let sentinel = sentinel("after the retry");
    let everyone = connected_ids.iter().chain(&outsider_ids).copied();
    let answer = c
        .deliver(&Delivery::user(everyone, &sentinel).key("sentinel-1"))
        .await;
    assert_eq!(answer.recipients, 3300);
    expect_all(&mut outsiders, &sentinel, "outsiders: the sentinel first").await;
    expect_all(&mut recipients, &sentinel, "recipients: the sentinel next").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_offline_during_a_delivery_recover_it_on_another_node() {
    let redis = Redis::start();
    let nodes = three_nodes(&redis.url());
    let recipients: u64 = 5000;
    let ws_users: Vec<u64> = (1..=20).map(|k| k * 241).collect();
    let sse_users: Vec<u64> = (1..=5).map(|k| k * 997).collect();
    // Offline too, but not a recipient: recovers nothing.
    let outsider = recipients + 1;

    // Each subscribes on node k % 3, remembers its position, and drops off without a goodbye.
    let mut offline: Vec<(u64, usize, Position)> = Vec::new();
    for (k, &id) in ws_users.iter().chain([&outsider]).enumerate() {
        let subscriber =
            Subscriber::connect(&nodes[k % 3].ws_url("/ws"), &format!("user:{id}"), "").await;
        offline.push((id, k % 3, subscriber.seen.clone()));
    }
    let mut sse_cursors: Vec<(u64, usize, String, Position)> = Vec::new();
    for (k, &id) in sse_users.iter().enumerate() {
        let channel = format!("user:{id}");
        let mut sse =
            SseClient::connect(nodes[k % 3].addr, &format!("/sse?channel={channel}"), None).await;
        sse.assert_stream();
        let (event, subscribed) = sse.expect_subscribed(&channel).await;
        assert_eq!(event.id, sse.last_event_id());
        sse_cursors.push((
            id,
            k % 3,
            sse.last_event_id().to_owned(),
            Position::from_json(&subscribed),
        ));
    }

    let notice = notice(2);
    let answer = nodes[0]
        .deliver(&Delivery::user(1..=recipients, &notice).key("offline-1"))
        .await;
    assert_eq!(answer.recipients, recipients);

    // Back, each on the next node, from where it was.
    let mut back = Vec::new();
    for (id, node, seen) in &offline {
        let channel = format!("user:{id}");
        let mut ws = WsClient::connect(&nodes[(node + 1) % 3].ws_url("/ws")).await;
        let subscribed = ws.subscribe_since(&channel, &seen.epoch, seen.offset).await;
        assert_eq!(subscribed["recovered"], true, "{channel}: {subscribed}");
        assert_eq!(&Position::from_json(&subscribed), seen, "{subscribed}");
        let mut subscriber = Subscriber {
            user: id.to_string(),
            channel,
            ws,
            seen: seen.clone(),
        };
        if *id != outsider {
            subscriber
                .expect(&notice, "the missed notice, replayed")
                .await;
        }
        back.push(subscriber);
    }
    let mut sse_back = Vec::new();
    for (id, node, cursor, seen) in &sse_cursors {
        let channel = format!("user:{id}");
        let path = format!("/sse?channel={channel}");
        let mut sse = SseClient::connect(nodes[(node + 1) % 3].addr, &path, Some(cursor)).await;
        sse.assert_stream();
        let (event, subscribed) = sse.expect_subscribed(&channel).await;
        assert_eq!(subscribed["recovered"], true, "{channel}: {subscribed}");
        assert_eq!(
            event.id, *cursor,
            "the subscribed event carries the resumed cursor"
        );
        let message = expect_sse(&mut sse, &channel, seen, &notice, "SSE: the missed notice").await;
        assert_eq!(sse.last_event_id(), message.position.cursor());
        sse_back.push((channel, sse, message.position));
    }

    // Exactly once: the next thing each gets is the sentinel.
    let sentinel = sentinel("after recovery");
    let ids: BTreeSet<u64> = ws_users
        .iter()
        .chain(&sse_users)
        .chain([&outsider])
        .copied()
        .collect();
    nodes[2]
        .deliver(&Delivery::user(ids, &sentinel).key("sentinel-2"))
        .await;
    expect_all(&mut back, &sentinel, "after recovery").await;
    for (channel, sse, seen) in &mut sse_back {
        expect_sse(sse, channel, seen, &sentinel, "SSE after recovery").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_cut_by_a_redis_restart_completes_on_retry_at_most_once() {
    let mut redis = Redis::start();
    let url = redis.url();
    let nodes = [node(&url).start(), node(&url).start()];
    let connected: Vec<u64> = (1..=300).map(|k| k * 100).collect();
    let mut recipients = connect_all(spread(&nodes.each_ref(), &connected)).await;

    // Redis is SIGKILLed as soon as the first shard messages are published, or after the answer
    // if the delivery was faster than that: either way some or all shards may be in.
    let notice = notice(8);
    let delivery = Delivery::user(1..=RECIPIENTS, &notice).key("cut-1");
    let before = publish_calls(&redis);
    let sending = tokio::spawn(delivery.request(nodes[0].addr).send());
    let deadline = Instant::now() + CHANGE_TIMEOUT;
    while publish_calls(&redis) == before && !sending.is_finished() {
        assert!(Instant::now() < deadline, "the delivery published nothing");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tokio::task::block_in_place(|| redis.kill());
    let first = sending.await.expect("delivery task");
    match first.status {
        200 => {}
        503 => assert_eq!(first.error_code(), "unavailable", "{}", first.text()),
        status => panic!(
            "a delivery cut by Redis going away: {status} {}",
            first.text()
        ),
    }

    tokio::task::block_in_place(|| redis.restart());
    let shards = shards_touched(
        DEFAULT_SITE,
        (1..=RECIPIENTS).map(|id| id.to_string()),
        DEFAULT_SHARDS,
    );
    let back_by = Instant::now() + CHANGE_TIMEOUT;
    let retry = loop {
        let response = delivery.send(nodes[1].addr).await;
        if response.status == 200 {
            break DeliveryAnswer::from_response(&response);
        }
        assert_eq!(
            (response.status, response.error_code().as_str()),
            (503, "unavailable"),
            "a retry while Redis comes back: {}",
            response.text()
        );
        assert!(
            Instant::now() < back_by,
            "Redis is back, yet retries still fail"
        );
        tokio::time::sleep(POLL).await;
    };
    assert_eq!(
        (retry.shards, retry.messages + retry.duplicates),
        (shards, shards),
        "the retry publishes what did not make it and skips the rest: {retry:?} (first answer {} {})",
        first.status,
        first.text()
    );
    if first.status == 200 {
        assert_eq!(retry.messages, 0, "everything was in already: {retry:?}");
    }

    // The restarted Redis may have lost acknowledged writes (it cannot tell), so every shard
    // starts a new epoch: each connected recipient gets the notice at most once, whichever call
    // published its shard, and is told of the new epoch (`recovered: false`) before the first
    // message in it; a notice lost with the old epoch is covered by that.
    let sentinel = sentinel("after the outage");
    nodes[0]
        .deliver(&Delivery::user(connected.iter().copied(), &sentinel).key("cut-2"))
        .await;
    for recipient in &mut recipients {
        read_across_a_reset(recipient, &notice, &sentinel).await;
    }
}

/// Reads what `recipient` gets up to `last`: `notice` at most once, and one `subscribed` with
/// `recovered: false` (a new epoch), after which positions are the new epoch's.
async fn read_across_a_reset(recipient: &mut Subscriber, notice: &str, last: &str) {
    let (mut notices, mut resets) = (0, 0);
    loop {
        let frame: Value = recipient.ws.next_json(herald_tests::WS_TIMEOUT).await;
        let channel = &recipient.channel;
        assert_eq!(frame["channel"], channel.as_str(), "{frame}");
        let position = Position::from_json(&frame);
        if frame["type"] == "subscribed" {
            assert_eq!(frame["recovered"], false, "{channel}: {frame}");
            assert_ne!(position.epoch, recipient.seen.epoch, "{channel}: {frame}");
            resets += 1;
            recipient.seen = position;
            continue;
        }
        assert_eq!(frame["type"], "message", "{channel}: {frame}");
        assert_eq!(position.epoch, recipient.seen.epoch, "{channel}: {frame}");
        assert!(
            position.offset > recipient.seen.offset,
            "{channel}: {frame}"
        );
        recipient.seen = position;
        let data = frame["data"].to_string();
        let expected = |text: &str| serde_json::from_str::<Value>(text).expect("JSON");
        if frame["data"] == expected(notice) {
            notices += 1;
        } else {
            assert_eq!(frame["data"], expected(last), "{channel}: {data}");
            break;
        }
    }
    assert!(
        notices <= 1,
        "{}: the notice {notices} times",
        recipient.channel
    );
    assert_eq!(
        resets, 1,
        "{}: told of the new epoch once",
        recipient.channel
    );
}

#[tokio::test]
async fn upstream_subscriptions_follow_the_shards_of_connected_users() {
    let redis = Redis::start();
    let herald = node(&redis.url())
        .env("HERALD_REDIS_LINGER_MS", "200")
        .start();
    let url = herald.ws_url("/ws");
    let shard = |id: u64| herald_tests::shard_of(DEFAULT_SITE, &id.to_string(), DEFAULT_SHARDS);
    // Two users of one shard, and a third of another.
    let first = 1u64;
    let same = (2..).find(|&id| shard(id) == shard(first)).expect("an id");
    let other = (2..).find(|&id| shard(id) != shard(first)).expect("an id");
    assert_eq!(pubsub_channels(&redis), 0, "nothing subscribed yet");

    let mut a = Subscriber::connect(&url, &format!("user:{first}"), "").await;
    assert_eq!(pubsub_channels(&redis), 1, "the first user's shard");
    let mut b = WsClient::connect(&url).await;
    b.subscribe(&format!("user:{same}")).await;
    b.subscribe(&format!("replies:{same}")).await;
    let a_replies = Subscriber::connect(&url, &format!("replies:{first}"), "").await;
    assert_eq!(
        pubsub_channels(&redis),
        1,
        "both timelines of two users of one shard: one upstream subscription"
    );
    let c = Subscriber::connect(&url, &format!("user:{other}"), "").await;
    assert_eq!(pubsub_channels(&redis), 2, "another shard");

    // The last local user of a shard leaving lets it go (after the linger); a shard that still
    // has a user stays subscribed and delivers.
    b.close().await;
    c.ws.close().await;
    wait_channels(&redis, 1).await;
    let data = notice(9);
    herald
        .deliver(&Delivery::user([first, same, other], &data))
        .await;
    a.expect(&data, "user 1's shard is still subscribed").await;
    drop(a);
    drop(a_replies);
    wait_channels(&redis, 0).await;
}

/// Waits until Redis has `count` pub/sub channels with subscribers.
async fn wait_channels(redis: &Redis, count: usize) {
    let deadline = Instant::now() + CHANGE_TIMEOUT;
    loop {
        let now = pubsub_channels(redis);
        if now == count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{now} pub/sub channels in Redis after {CHANGE_TIMEOUT:?}, expected {count}"
        );
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_on_a_redis_cluster_reaches_each_connected_recipient_once() {
    let cluster = RedisCluster::start();
    let url = cluster.url();
    let nodes = [node(&url).start(), node(&url).start(), node(&url).start()];
    let recipients: u64 = 3000;
    let connected: Vec<u64> = (1..=300).map(|k| k * 10).collect();
    let mut subscribers = connect_all(spread(&nodes.each_ref(), &connected)).await;
    let shards = shards_touched(
        DEFAULT_SITE,
        (1..=recipients).map(|id| id.to_string()),
        DEFAULT_SHARDS,
    );
    let publishes = || cluster_publish_calls(&cluster);

    let notice = notice(10);
    let delivery = Delivery::user(1..=recipients, &notice).key("cluster-1");
    let before = publishes();
    let answer = nodes[0].deliver(&delivery).await;
    assert_eq!(
        answer,
        DeliveryAnswer {
            recipients,
            shards,
            messages: shards,
            duplicates: 0,
        }
    );
    expect_all(&mut subscribers, &notice, "the notice on a cluster").await;
    let published = publishes() - before;
    assert!(
        published > 0 && published <= shards,
        "{published} (S)PUBLISH commands over the masters for {shards} shards"
    );
    let retry = nodes[1].deliver(&delivery).await;
    assert_eq!((retry.messages, retry.duplicates), (0, shards), "{retry:?}");
    assert_eq!(
        publishes() - before,
        published,
        "the retry published nothing"
    );

    let sentinel = sentinel("cluster");
    nodes[2]
        .deliver(&Delivery::user(connected.iter().copied(), &sentinel))
        .await;
    expect_all(&mut subscribers, &sentinel, "nothing twice").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_lost_its_redis_subscriptions_catches_up_every_shard() {
    let redis = Redis::start();
    let url = redis.url();
    let [a, b] = [node(&url).start(), node(&url).start()];
    // Users of shards that have never had a message (a fresh deployment), all on node A.
    let connected: Vec<u64> = (1..=300).map(|k| k * 100).collect();
    let mut recipients = connect_all(spread(&[&a], &connected)).await;

    // While the delivery is published, Redis drops A's pub/sub connection again and again (as it
    // does to a subscriber over its output buffer limit; or a network blip): A reconnects and
    // resubscribes each time, and whatever was published meanwhile must come from the shards'
    // history.
    let notice = notice(12);
    let delivery = Delivery::user(1..=RECIPIENTS, &notice).key("blip-1");
    let sending = tokio::spawn(delivery.request(b.addr).send());
    let mut drops = 0;
    while !sending.is_finished() {
        let killed =
            tokio::task::block_in_place(|| redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]));
        drops += killed.parse::<u32>().unwrap_or(0);
    }
    let answer = DeliveryAnswer::from_response(&sending.await.expect("delivery task"));
    assert_eq!(answer.messages, answer.shards);
    assert!(
        drops > 0,
        "A's pub/sub connection was dropped during the delivery"
    );

    // Once A is subscribed again it has caught every shard up from Redis: nothing is lost.
    expect_all(
        &mut recipients,
        &notice,
        "the delivery made while A was unsubscribed",
    )
    .await;
    let sentinel = sentinel("after the blip");
    b.deliver(&Delivery::user(connected.iter().copied(), &sentinel))
        .await;
    expect_all(&mut recipients, &sentinel, "nothing twice").await;
}
