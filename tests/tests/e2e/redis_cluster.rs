//! The Redis engine on a three-master Redis Cluster (sharded pub/sub): the fan-out, resume and
//! interest scenarios of `redis`, unchanged, with channels spread over more than one master; and
//! a master failed over under load, after which every node delivers again on every shard.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use herald_tests::{Delivered, Herald, RedisCluster, WS_TIMEOUT, WsClient, WsEvent, redis_cli};
use parking_lot::Mutex;
use tokio::sync::RwLock;

use super::redis::{
    Upstream, node, numsub, scenario_fan_out, scenario_resume_on_another_node,
    scenario_upstream_follows_interest,
};

/// Channels whose hash-tag partitions fall on different masters of a fresh cluster (slots split
/// in thirds by `redis-cli --cluster create`); the fan-out test checks that they do.
const CHANNELS: [&str; 3] = ["tag:rust", "group:devs", "public"];

/// On a cluster a channel lives on one master: sharded pub/sub is counted on each master and summed.
impl Upstream for RedisCluster {
    fn channels(&self, pattern: &str) -> Vec<String> {
        let names: BTreeSet<String> = self
            .cli_each(&["PUBSUB", "SHARDCHANNELS", pattern])
            .iter()
            .flat_map(|text| text.lines().map(str::trim).map(str::to_owned))
            .filter(|line| !line.is_empty())
            .collect();
        names.into_iter().collect()
    }

    fn subscribers(&self, name: &str) -> u64 {
        self.cli_each(&["PUBSUB", "SHARDNUMSUB", name])
            .iter()
            .map(|text| numsub(text))
            .sum()
    }
}

#[tokio::test]
async fn fan_out_reaches_every_node_once_in_order() {
    let cluster = RedisCluster::start();
    scenario_fan_out(&cluster.url(), &CHANNELS).await;
    let masters: BTreeSet<u16> = CHANNELS
        .iter()
        .map(|channel| {
            let pattern = format!("herald:*:m:default/{channel}");
            let holders: Vec<u16> = cluster
                .ports()
                .into_iter()
                .zip(cluster.cli_each(&["KEYS", &pattern]))
                .filter(|(_, keys)| !keys.trim().is_empty())
                .map(|(port, _)| port)
                .collect();
            assert_eq!(
                holders.len(),
                1,
                "{channel} lives on one master: {holders:?}"
            );
            holders[0]
        })
        .collect();
    assert!(
        masters.len() >= 2,
        "the channels should span masters so that the test crosses shards: {masters:?}"
    );
}

#[tokio::test]
async fn resume_on_another_node_recovers_exactly_the_missed() {
    let cluster = RedisCluster::start();
    scenario_resume_on_another_node(&cluster.url()).await;
}

#[tokio::test]
async fn upstream_subscriptions_follow_local_interest() {
    let cluster = RedisCluster::start();
    scenario_upstream_follows_interest(&cluster.url(), &cluster).await;
}

#[tokio::test]
async fn lost_pubsub_connections_resubscribe_every_shard() {
    let cluster = RedisCluster::start();
    let herald = node(&cluster.url()).start();
    let mut ws = WsClient::connect(&herald.ws_url("/ws")).await;
    for channel in CHANNELS {
        ws.subscribe(channel).await;
    }
    for channel in CHANNELS {
        herald.publish(channel, r#""before""#).await;
        ws.next_message(WS_TIMEOUT).await;
    }
    // Every master drops the node's pub/sub connections, a few times over; each time the node
    // must subscribe again on every shard by itself and catch up what was published meanwhile.
    for round in 1..=LOST_CONNECTION_ROUNDS {
        for (port, killed) in cluster
            .ports()
            .into_iter()
            .zip(cluster.cli_each(&["CLIENT", "KILL", "TYPE", "pubsub"]))
        {
            assert!(
                killed.parse::<u64>().is_ok(),
                "CLIENT KILL on {port}: {killed}"
            );
        }
        let data = format!(r#"{{"round":{round}}}"#);
        let mut expected = BTreeMap::new();
        for channel in CHANNELS {
            let position = herald.publish(channel, &data).await;
            expected.insert(channel.to_owned(), position);
        }
        let mut got = BTreeMap::new();
        while got.len() < expected.len() {
            let message = ws.next_message(CATCH_UP).await;
            assert_eq!(message.data, data, "{message:?}");
            got.insert(message.channel.clone(), message.position);
        }
        assert_eq!(
            got, expected,
            "round {round}: every shard delivers again, once"
        );
    }
    let log = herald.log();
    assert!(
        !log.contains("wrong number of arguments"),
        "the node sent an empty (S)SUBSCRIBE:\n{log}"
    );
}

/// Times the pub/sub connections are cut in `lost_pubsub_connections_resubscribe_every_shard`.
const LOST_CONNECTION_ROUNDS: u32 = 3;

/// How long a node may take to deliver again after losing its pub/sub connections: generous,
/// for a loaded machine.
const CATCH_UP: Duration = Duration::from_secs(15);

/// Channels of the failover test: enough that every master holds some (the test checks it).
const FAILOVER_CHANNELS: usize = 9;

/// The pause between two publishes on one channel in the failover test.
const FAILOVER_PACE: Duration = Duration::from_millis(20);

/// How long the cluster may take to promote the killed master's replica.
const PROMOTION_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest any node may take after the promotion to deliver again on a shard: generous for
/// a loaded machine (the figure measured on an idle one is in docs/scaling.md).
const RESUME_BOUND: Duration = Duration::from_secs(10);

/// The longest wait for the publishers and readers of the failover test.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(60);

/// What one publisher was told: the message's data, where it went, and when the answer came.
type Acked = (String, herald_tests::Position, Instant);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_failover_resumes_delivery_on_every_shard_and_node() {
    let mut cluster = tokio::task::block_in_place(RedisCluster::start_with_replicas);
    let url = cluster.url();
    let nodes = Arc::new([node(&url).start(), node(&url).start()]);
    let channels: Vec<String> = (0..FAILOVER_CHANNELS)
        .map(|i| format!("shard:{i}"))
        .collect();
    let mut subscribers = Vec::new();
    for herald in nodes.iter() {
        let mut ws = WsClient::connect(&herald.ws_url("/ws")).await;
        for channel in &channels {
            ws.subscribe(channel).await;
        }
        subscribers.push(ws);
    }
    // One message on each channel, which also shows where each channel lives.
    for channel in &channels {
        nodes[0].publish(channel, r#""first""#).await;
    }
    for ws in &mut subscribers {
        for _ in &channels {
            ws.next_message(WS_TIMEOUT).await;
        }
    }
    let masters = cluster.masters();
    assert_eq!(masters.len(), 3, "three masters: {masters:?}");
    let home: BTreeMap<String, u16> = channels
        .iter()
        .map(|channel| {
            let pattern = format!("herald:*:m:default/{channel}");
            let holder = masters
                .iter()
                .copied()
                .find(|&port| !redis_cli(port, &["KEYS", &pattern]).trim().is_empty())
                .unwrap_or_else(|| panic!("{channel} lives on no master"));
            (channel.clone(), holder)
        })
        .collect();
    let used: BTreeSet<u16> = home.values().copied().collect();
    assert_eq!(used.len(), 3, "the channels span every master: {home:?}");

    // Readers collect every message with the time it arrived; publishers publish on every
    // channel through both nodes and record what was acknowledged.
    let readers: Vec<_> = subscribers
        .into_iter()
        .map(|ws| tokio::spawn(read_until_end(ws, channels.len())))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let gate = Arc::new(RwLock::new(()));
    let acked: Arc<Mutex<BTreeMap<String, Vec<Acked>>>> = Arc::default();
    let publishers: Vec<_> = channels
        .iter()
        .map(|channel| {
            tokio::spawn(publish_paced(
                nodes.clone(),
                channel.clone(),
                stop.clone(),
                gate.clone(),
                acked.clone(),
            ))
        })
        .collect();
    let acked_after = |since: Instant, count: usize| {
        let acked = acked.clone();
        let channels = channels.clone();
        async move {
            let deadline = Instant::now() + FAILOVER_TIMEOUT;
            loop {
                let done = channels.iter().all(|channel| {
                    acked.lock().get(channel).is_some_and(|a| {
                        a.iter().filter(|(_, _, at)| *at >= since).count() >= count
                    })
                });
                if done {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "publishing stalled: {:?}",
                    acked.lock()
                );
                tokio::time::sleep(FAILOVER_PACE).await;
            }
        }
    };
    acked_after(Instant::now(), 5).await;

    // The victim's writes are all on its replica before it dies, so the failover loses nothing
    // acknowledged; publishing holds still for that moment.
    let victim = home[&channels[0]];
    let (killed, replica) = {
        let _hold = gate.write().await;
        let replicated = redis_cli(victim, &["WAIT", "1", "5000"]);
        assert_eq!(replicated, "1", "the replica has the victim's writes");
        let replica = tokio::task::block_in_place(|| cluster.kill_master(victim));
        (Instant::now(), replica)
    };
    tokio::task::block_in_place(|| cluster.wait_promoted(replica, PROMOTION_TIMEOUT));
    let promoted = Instant::now();
    acked_after(promoted, 20).await;
    stop.store(true, Ordering::Relaxed);
    for publisher in publishers {
        publisher.await.expect("publisher");
    }
    for channel in &channels {
        publish_until_acked(&nodes[0], channel, END_DATA).await;
    }

    let acked = acked.lock().clone();
    for (channel, sent) in &acked {
        let during = sent
            .iter()
            .filter(|(_, _, at)| *at > killed && *at < promoted)
            .count();
        eprintln!(
            "failover: {channel} on {}: {during} publishes acknowledged between the kill and the \
             promotion ({} ms)",
            home[channel],
            promoted.duration_since(killed).as_millis()
        );
    }
    for (i, reader) in readers.into_iter().enumerate() {
        let got = reader.await.expect("reader");
        for channel in &channels {
            let messages = &got[channel];
            let delivered: Vec<(&str, &herald_tests::Position)> = messages
                .iter()
                .map(|(m, _)| (m.data.as_str(), &m.position))
                .filter(|(data, _)| *data != END_DATA)
                .collect();
            // In order and once within each epoch, and an epoch never comes back.
            let positions: Vec<(&str, u64)> = delivered
                .iter()
                .map(|(_, p)| (p.epoch.as_str(), p.offset))
                .collect();
            let mut epochs_seen: Vec<&str> = Vec::new();
            for (epoch, _) in &positions {
                if epochs_seen.last() != Some(epoch) {
                    assert!(
                        !epochs_seen.contains(epoch),
                        "node {i}, {channel}: epoch {epoch} came back: {positions:?}"
                    );
                    epochs_seen.push(epoch);
                }
            }
            assert!(
                positions
                    .windows(2)
                    .all(|w| w[0].0 != w[1].0 || w[0].1 < w[1].1),
                "node {i}, {channel}: in order, once: {positions:?}"
            );
            let sent = &acked[channel];
            for (data, position, _) in sent {
                assert!(
                    delivered.contains(&(data.as_str(), position)),
                    "node {i}, {channel}: acknowledged {data} at {position:?} never arrived"
                );
            }
            // The first message acknowledged after the promotion, and when it arrived here.
            let (data, position, _) = sent
                .iter()
                .find(|(_, _, at)| *at >= promoted)
                .expect("acknowledged after the promotion");
            let arrived = messages
                .iter()
                .find(|(m, _)| m.data == *data && m.position == *position)
                .map(|(_, at)| *at)
                .expect("checked above");
            let resumed = arrived.saturating_duration_since(promoted);
            let longest_pause = messages
                .windows(2)
                .map(|w| w[1].1.saturating_duration_since(w[0].1))
                .max()
                .unwrap_or_default();
            eprintln!(
                "failover: node {i}, {channel} on {}{}: delivering {} ms after the promotion \
                 ({} ms after the kill); longest pause {} ms",
                home[channel],
                if home[channel] == victim {
                    " (failed over)"
                } else {
                    ""
                },
                resumed.as_millis(),
                arrived.saturating_duration_since(killed).as_millis(),
                longest_pause.as_millis()
            );
            assert!(
                resumed <= RESUME_BOUND,
                "node {i}, {channel}: delivery resumed only {resumed:?} after the promotion"
            );
        }
    }
    for (i, herald) in nodes.iter().enumerate() {
        let log = herald.log();
        assert!(
            !log.contains("wrong number of arguments"),
            "node {i} sent an empty (S)SUBSCRIBE:\n{log}"
        );
    }
}

/// The data of the last message on each channel of the failover test.
const END_DATA: &str = r#""end""#;

/// Publishes on `channel` every [`FAILOVER_PACE`], through each node in turn, until `stop`;
/// records what was acknowledged. Refusals (503 while the channel's master is down) are expected.
async fn publish_paced(
    nodes: Arc<[Herald; 2]>,
    channel: String,
    stop: Arc<AtomicBool>,
    gate: Arc<RwLock<()>>,
    acked: Arc<Mutex<BTreeMap<String, Vec<Acked>>>>,
) {
    let started = Instant::now();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) && started.elapsed() < FAILOVER_TIMEOUT {
        n += 1;
        let data = format!(r#"{{"n":{n}}}"#);
        let herald = &nodes[(n % 2) as usize];
        let response = {
            let _open = gate.read().await;
            herald
                .publish_raw(&format!(r#"{{"channel":"{channel}","data":{data}}}"#))
                .await
        };

        if response.status == 200 {
            let position = herald_tests::publish_results(&response, &[&channel])
                .pop()
                .expect("one result");
            acked
                .lock()
                .entry(channel.clone())
                .or_default()
                .push((data, position, Instant::now()));
        }
        tokio::time::sleep(FAILOVER_PACE).await;
    }
}

async fn publish_until_acked(herald: &Herald, channel: &str, data: &str) {
    let deadline = Instant::now() + FAILOVER_TIMEOUT;
    loop {
        let response = herald
            .publish_raw(&format!(r#"{{"channel":"{channel}","data":{data}}}"#))
            .await;
        if response.status == 200 {
            return;
        }
        assert!(Instant::now() < deadline, "{channel}: {}", response.text());
        tokio::time::sleep(FAILOVER_PACE).await;
    }
}

/// Reads messages, each with the moment it arrived, until `channels` channels have had their
/// END message.
async fn read_until_end(
    mut ws: WsClient,
    channels: usize,
) -> BTreeMap<String, Vec<(Delivered, Instant)>> {
    let deadline = Instant::now() + FAILOVER_TIMEOUT * 2;
    let mut got: BTreeMap<String, Vec<(Delivered, Instant)>> = BTreeMap::new();
    let mut ended = 0;
    while ended < channels {
        let left = deadline.saturating_duration_since(Instant::now());
        let text = match ws.next_event(left).await {
            WsEvent::Text(text) => text,
            other => panic!("reading until END: {other:?}; got so far {got:?}"),
        };
        // A primary that failed over starts its channels on a new epoch (its replica may lack
        // acknowledged writes): the client is told so, then the new epoch's messages follow.
        if text.contains(r#""type":"subscribed""#) {
            continue;
        }
        let message = Delivered::parse(&text);
        if message.data == END_DATA {
            ended += 1;
        }
        got.entry(message.channel.clone())
            .or_default()
            .push((message, Instant::now()));
    }
    got
}
