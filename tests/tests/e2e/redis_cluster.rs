//! The Redis engine on a three-master Redis Cluster (sharded pub/sub): the fan-out, resume and
//! interest scenarios of `redis`, unchanged, with channels spread over more than one master.

use std::collections::BTreeSet;

use herald_tests::RedisCluster;

use super::redis::{
    Upstream, numsub, scenario_fan_out, scenario_resume_on_another_node,
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
