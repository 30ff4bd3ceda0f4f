//! The failure matrix: under a steady publish load, a WebSocket and an SSE subscriber on each of
//! two or three nodes go through one failure each, and reconnect and resume as a well-written
//! client does. The rule, for every failure: every acknowledged message reached every subscriber,
//! or that subscriber was told `recovered: false` past it. Silent losses must be 0.
//!
//! Each test prints its row of the table in docs/reliability.md (`--nocapture` shows it).

mod subscriber;
mod tally;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_tests::{Herald, Redis, RedisCluster, RedisSentinel, redis_cli};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::node;
use super::support::{CHANGE_TIMEOUT, END, POLL, Publisher, acked, wait_readyz};
use subscriber::{LiveNodes, Seen, Transport};
use tally::Tally;

/// The channel every run publishes to.
const CHANNEL: &str = "matrix";

/// The pause between two publishes: a steady load that leaves the two cores to the failure.
const PUBLISH_PACE: Duration = Duration::from_millis(10);

/// Acknowledged publishes before the failure, and again after the recovery.
const PUBLISHES_AROUND: u64 = 30;

/// How long a subscriber may run, through the failure, until it has read END.
const SUBSCRIBER_LIMIT: Duration = Duration::from_secs(120);

/// How long SUBSCRIBE stays refused in the pub/sub row.
const SUBSCRIBE_REFUSED_FOR: Duration = Duration::from_secs(10);

/// A node on `url` that keeps enough history for any catch-up of these runs.
fn matrix_node(url: &str) -> Herald {
    node(url).env("HERALD_HISTORY_SIZE", "10000").start()
}

/// Subscribers on every node and the paced publisher, past the first acknowledged publishes.
struct Run {
    live: LiveNodes,
    subscribers: Vec<JoinHandle<Seen>>,
    publisher: Publisher,
}

impl Run {
    /// A WebSocket and an SSE subscriber first on each node, all subscribed before the
    /// publisher starts on `publish_to`.
    async fn start(nodes: &[&Herald], publish_to: &[&Herald]) -> Run {
        let live: LiveNodes = Arc::new(Mutex::new(nodes.iter().map(|n| n.addr).collect()));
        let (ready, mut subscribed) = mpsc::channel(2 * nodes.len());
        let mut subscribers = Vec::new();
        for first in 0..nodes.len() {
            for transport in [Transport::WebSocket, Transport::Sse] {
                subscribers.push(subscriber::spawn(
                    transport,
                    Arc::clone(&live),
                    first,
                    CHANNEL,
                    SUBSCRIBER_LIMIT,
                    ready.clone(),
                ));
            }
        }
        for _ in 0..subscribers.len() {
            tokio::time::timeout(CHANGE_TIMEOUT, subscribed.recv())
                .await
                .expect("every subscriber subscribes")
                .expect("subscribers report");
        }
        let addrs: Vec<SocketAddr> = publish_to.iter().map(|n| n.addr).collect();
        let mut publisher = Publisher::start(addrs, CHANNEL, PUBLISH_PACE);
        publisher
            .wait_for("the first acknowledged publishes", |a| {
                acked(a, None) >= PUBLISHES_AROUND
            })
            .await;
        Run {
            live,
            subscribers,
            publisher,
        }
    }

    /// Takes a node out of the ones subscribers reconnect to, before the test kills it.
    fn forget(&self, node: &Herald) {
        self.live.lock().retain(|addr| *addr != node.addr);
    }

    /// After the failure: every node left is ready again and acknowledges more publishes; then
    /// END, and the tally once every subscriber has read it (or run out of time).
    async fn finish(mut self, failure: &str, nodes: &[&Herald]) -> Tally {
        for node in nodes {
            wait_readyz(node, 200).await;
        }
        let recovered = Instant::now();
        self.publisher
            .wait_for("acknowledged publishes after the recovery", |a| {
                acked(a, Some(recovered)) >= PUBLISHES_AROUND
            })
            .await;
        let attempts = self.publisher.stop().await;
        nodes[0].publish(CHANNEL, END).await;
        let mut seen = Vec::new();
        for subscriber in self.subscribers {
            seen.push(subscriber.await.expect("subscriber task"));
        }
        let tally = Tally::count(&attempts, &seen);
        println!("| {failure} {tally}");
        let unfinished: Vec<&str> = seen
            .iter()
            .filter(|s| !s.finished)
            .map(|s| s.name.as_str())
            .collect();
        assert!(
            tally.silent.is_empty(),
            "{failure}: {} acknowledged messages lost without `recovered: false`: {:#?}",
            tally.silent.len(),
            &tally.silent[..tally.silent.len().min(20)]
        );
        assert!(
            unfinished.is_empty(),
            "{failure}: never got END: {unfinished:?}"
        );
        tally
    }
}

/// Kills Redis, waits until every node says it is not ready, and starts it again.
async fn kill_and_restart(redis: &mut Redis, nodes: &[&Herald]) {
    tokio::task::block_in_place(|| redis.kill());
    for node in nodes {
        wait_readyz(node, 503).await;
    }
    tokio::task::block_in_place(|| redis.restart());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_redis_killed_without_persistence() {
    let mut redis = Redis::start_with(&["--appendonly", "no"]);
    let nodes = [matrix_node(&redis.url()), matrix_node(&redis.url())];
    let nodes: Vec<&Herald> = nodes.iter().collect();
    let run = Run::start(&nodes, &nodes).await;
    kill_and_restart(&mut redis, &nodes).await;
    let tally = run.finish("Redis killed, no persistence", &nodes).await;
    assert!(
        tally.resets > 0,
        "the history is gone: clients must be told"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_redis_killed_with_aof_every_second() {
    let mut redis = Redis::start_with(&["--appendfsync", "everysec"]);
    let nodes = [matrix_node(&redis.url()), matrix_node(&redis.url())];
    let nodes: Vec<&Herald> = nodes.iter().collect();
    let run = Run::start(&nodes, &nodes).await;
    kill_and_restart(&mut redis, &nodes).await;
    run.finish("Redis killed with AOF every second", &nodes)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_sentinel_fails_over_to_a_lagging_replica() {
    let mut sentinel = tokio::task::block_in_place(RedisSentinel::start_replicated);
    let nodes = [matrix_node(&sentinel.url()), matrix_node(&sentinel.url())];
    let nodes: Vec<&Herald> = nodes.iter().collect();
    let mut run = Run::start(&nodes, &nodes).await;
    // Replication held back: the master refuses the replica's resync after its link is cut, so
    // what is acknowledged now never reaches the replica.
    let master = sentinel.master();
    assert_eq!(
        master.cli(&["ACL", "SETUSER", "default", "-psync", "-sync"]),
        "OK"
    );
    master.cli(&["CLIENT", "KILL", "TYPE", "replica"]);
    let held = Instant::now();
    run.publisher
        .wait_for("acknowledged publishes the replica does not have", |a| {
            acked(a, Some(held)) >= PUBLISHES_AROUND
        })
        .await;
    tokio::task::block_in_place(|| sentinel.master_mut().kill());
    let promoted = sentinel.replica().port();
    let deadline = Instant::now() + CHANGE_TIMEOUT * 2;
    while tokio::task::block_in_place(|| sentinel.master_port_now()) != Some(promoted) {
        assert!(
            Instant::now() < deadline,
            "the Sentinel did not promote the replica"
        );
        tokio::time::sleep(POLL).await;
    }
    let tally = run
        .finish("Sentinel failover to a replica that lags", &nodes)
        .await;
    assert!(
        tally.resets > 0,
        "the promoted replica lacks acknowledged messages: clients must be told"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_cluster_primary_fails_over() {
    let mut cluster = tokio::task::block_in_place(RedisCluster::start_with_replicas);
    let nodes = [matrix_node(&cluster.url()), matrix_node(&cluster.url())];
    let nodes: Vec<&Herald> = nodes.iter().collect();
    let run = Run::start(&nodes, &nodes).await;
    // The primary that holds the channel dies under the load, without waiting for its replica.
    let pattern = format!("herald:*:m:default/{CHANNEL}");
    let home = cluster
        .masters()
        .into_iter()
        .find(|&port| !redis_cli(port, &["KEYS", &pattern]).trim().is_empty())
        .expect("a primary holds the channel");
    let replica = tokio::task::block_in_place(|| cluster.kill_master(home));
    tokio::task::block_in_place(|| cluster.wait_promoted(replica, CHANGE_TIMEOUT * 2));
    run.finish("Redis Cluster primary failover", &nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_node_killed() {
    let redis = Redis::start();
    let nodes = [
        matrix_node(&redis.url()),
        matrix_node(&redis.url()),
        matrix_node(&redis.url()),
    ];
    let [doomed, rest @ ..] = &nodes;
    let all: Vec<&Herald> = nodes.iter().collect();
    let survivors: Vec<&Herald> = rest.iter().collect();
    let run = Run::start(&all, &survivors).await;
    run.forget(doomed);
    // A subscriber may have picked the node just before it was forgotten.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let pid = Pid::from_raw(i32::try_from(doomed.pid()).expect("pid fits in i32"));
    kill(pid, Signal::SIGKILL).expect("SIGKILL the doomed node");
    let tally = run.finish("Node killed", &survivors).await;
    assert_eq!(tally.excused, 0, "Redis kept everything: nothing to excuse");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_pubsub_lost_while_subscribe_is_refused() {
    let redis = Redis::start();
    let nodes = [matrix_node(&redis.url()), matrix_node(&redis.url())];
    let nodes: Vec<&Herald> = nodes.iter().collect();
    let run = Run::start(&nodes, &nodes).await;
    let refuse = redis.cli(&[
        "ACL",
        "SETUSER",
        "default",
        "-subscribe",
        "-ssubscribe",
        "-psubscribe",
    ]);
    assert_eq!(refuse, "OK");
    let killed = redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert_eq!(
        killed,
        (2 * nodes.len()).to_string(),
        "two pub/sub connections per node: its channels', and the nodes' questions (control.rs)"
    );
    tokio::time::sleep(SUBSCRIBE_REFUSED_FOR).await;
    let allow = redis.cli(&[
        "ACL",
        "SETUSER",
        "default",
        "+subscribe",
        "+ssubscribe",
        "+psubscribe",
    ]);
    assert_eq!(allow, "OK");
    run.finish(
        "Pub/sub connection lost while SUBSCRIBE is refused for 10 s",
        &nodes,
    )
    .await;
}
