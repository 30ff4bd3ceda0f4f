//! The Redis engine behind a Sentinel (`redis-sentinel://…?sentinelServiceName=…`): nodes find the
//! master through the Sentinel, and the fan-out and resume scenarios of `redis` hold unchanged.

use herald_tests::RedisSentinel;

use super::redis::{scenario_fan_out, scenario_resume_on_another_node};

#[tokio::test]
async fn fan_out_through_a_sentinel_reaches_every_node_once_in_order() {
    let sentinel = RedisSentinel::start();
    scenario_fan_out(&sentinel.url(), &["tag:rust"]).await;
    // The traffic went to the master the Sentinel named.
    let keys = sentinel
        .master()
        .cli(&["KEYS", "herald:*:s:default/tag:rust"]);
    assert!(keys.contains("tag:rust"), "stream on the master: {keys}");
}

#[tokio::test]
async fn resume_through_a_sentinel_recovers_exactly_the_missed() {
    let sentinel = RedisSentinel::start();
    scenario_resume_on_another_node(&sentinel.url()).await;
}
