//! Failures under a running publisher: Redis SIGKILLed and restarted on its port (503 while it is
//! down; the restarted Redis starts the channel on a new epoch, and nothing acknowledged is lost
//! without a `recovered: false`), and a Herald node SIGKILLed (its clients resume on another).

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use herald_tests::{Delivered, Redis, SSE_TIMEOUT, SseClient, SseNext, WsClient, metric_value};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;

use super::node;
use super::support::{
    Attempt, CATCH_UP_TIMEOUT, CHANGE_TIMEOUT, END, Outcome, Publisher, Stop, acked,
    assert_every_acknowledged_or_reset, assert_holds_every_acknowledged, is_end, read_sse,
    read_sse_across_resets, read_ws, read_ws_across_resets, wait_readyz,
};

/// The pause between two publishes of the paced publisher.
const PUBLISH_PACE: Duration = Duration::from_millis(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sigkill_and_restart_loses_nothing_silently() {
    let mut redis = Redis::start();
    let url = redis.url();
    let nodes = [(); 2].map(|_| node(&url).env("HERALD_HISTORY_SIZE", "10000").start());
    let channel = "outage";

    let mut ws = WsClient::connect(&nodes[0].ws_url("/ws")).await;
    ws.subscribe(channel).await;
    let mut sse = SseClient::connect(nodes[1].addr, &format!("/sse?channel={channel}"), None).await;
    sse.assert_stream();
    sse.expect_subscribed(channel).await;
    // The subscribers read all along, on the same connections, until the END message.
    let ws_reader =
        tokio::spawn(
            async move { read_ws_across_resets(&mut ws, CATCH_UP_TIMEOUT * 2, is_end).await },
        );
    let sse_reader = tokio::spawn(async move {
        read_sse_across_resets(&mut sse, CATCH_UP_TIMEOUT * 2, is_end).await
    });

    let mut publisher = Publisher::start(
        nodes.iter().map(|n| n.addr).collect(),
        channel,
        PUBLISH_PACE,
    );
    publisher
        .wait_for("30 acknowledged publishes", |a| acked(a, None) >= 30)
        .await;

    tokio::task::block_in_place(|| redis.kill());
    let killed = Instant::now();
    for node in &nodes {
        wait_readyz(node, 503).await;
    }
    // New subscriptions are refused in the documented way, on both transports.
    let (mut refused_ws, ()) = tokio::join!(
        async {
            let mut ws = WsClient::connect(&nodes[0].ws_url("/ws")).await;
            ws.send_json(&json!({"type": "subscribe", "channel": "outage:new"}))
                .await;
            ws.expect_error("unavailable").await;
            ws
        },
        async {
            let mut sse = SseClient::connect(nodes[1].addr, "/sse?channel=outage:new", None).await;
            sse.assert_stream();
            let event = sse.next_event(SSE_TIMEOUT).await;
            assert_eq!(event.event, "error", "{event:?}");
            assert_eq!(event.json()["code"], "unavailable", "{event:?}");
            assert!(sse.retry_ms.is_some(), "EventSource is told when to retry");
            assert_eq!(sse.try_next_event(SSE_TIMEOUT).await, SseNext::Ended);
        }
    );
    publisher
        .wait_for("20 refused publishes after the kill", |a| {
            a.iter()
                .filter(|x| x.started >= killed && x.outcome == Outcome::Unavailable)
                .count()
                >= 20
        })
        .await;

    let restarting = Instant::now();
    tokio::task::block_in_place(|| redis.restart());
    for node in &nodes {
        wait_readyz(node, 200).await;
    }
    let subscribed = refused_ws.subscribe("outage:new").await;
    assert_eq!(
        subscribed["recovered"], false,
        "subscribing again works: {subscribed}"
    );
    publisher
        .wait_for("30 acknowledged publishes after the restart", |a| {
            acked(a, Some(restarting)) >= 30
        })
        .await;
    let attempts = publisher.stop().await;
    let end = nodes[0].publish(channel, END).await;

    // Publishes made entirely while Redis was down were refused with the documented code.
    let during: Vec<&Attempt> = attempts
        .iter()
        .filter(|x| x.started >= killed && x.ended <= restarting)
        .collect();
    assert!(!during.is_empty(), "no publish ran during the outage");
    let wrong: Vec<&&Attempt> = during
        .iter()
        .filter(|x| x.outcome != Outcome::Unavailable)
        .collect();
    assert!(
        wrong.is_empty(),
        "publishes made while Redis was down must get 503 unavailable; these did not: {wrong:#?}"
    );
    let other: Vec<&Attempt> = attempts
        .iter()
        .filter(|x| matches!(x.outcome, Outcome::Other(..)))
        .collect();
    assert!(other.is_empty(), "only 200 or 503 unavailable: {other:#?}");

    // A restarted Redis may have lost acknowledged writes (it cannot tell): the channel starts
    // a new epoch, and each subscriber is told so once.
    let ws_got = ws_reader.await.expect("WebSocket reader");
    let sse_got = sse_reader.await.expect("SSE reader");
    for (name, reading) in [("WebSocket on A", ws_got), ("SSE on B", sse_got)] {
        assert_every_acknowledged_or_reset(name, &reading, &attempts, &end);
    }
    let mut resets = 0.0;

    for (i, node) in nodes.iter().enumerate() {
        let metrics = node.metrics().await;
        let refused = attempts
            .iter()
            .filter(|x| x.node == i && x.outcome == Outcome::Unavailable)
            .count() as f64;
        assert!(
            metric_value(&metrics, "herald_redis_reconnects_total", &[]) >= 1.0,
            "node {i} counts its reconnect"
        );
        resets += metric_value(
            &metrics,
            "herald_redis_epoch_resets_total",
            &[("reason", "restart")],
        );
        assert_eq!(
            metric_value(&metrics, "herald_redis_publish_failures_total", &[]),
            refused,
            "node {i} counts every refused publish"
        );
    }
    assert_eq!(
        resets, 1.0,
        "the one node that touched the channel first after the restart counts its new epoch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_node_clients_resume_on_another_node_without_loss() {
    let redis = Redis::start();
    let url = redis.url();
    let mut doomed = node(&url).env("HERALD_HISTORY_SIZE", "10000").start();
    let survivor = node(&url).env("HERALD_HISTORY_SIZE", "10000").start();
    let channel = "failover";
    let path = format!("/sse?channel={channel}");

    let mut ws = WsClient::connect(&doomed.ws_url("/ws")).await;
    ws.subscribe(channel).await;
    let mut sse = SseClient::connect(doomed.addr, &path, None).await;
    sse.assert_stream();
    sse.expect_subscribed(channel).await;
    let mut publisher = Publisher::start(vec![survivor.addr], channel, PUBLISH_PACE);

    let past_20 = |m: &Delivered| m.position.offset >= 20;
    let (mut ws_got, stop) = read_ws(&mut ws, CATCH_UP_TIMEOUT, past_20).await;
    assert_eq!(stop, Stop::Matched, "WebSocket on the doomed node");
    let (mut sse_got, stop) = read_sse(&mut sse, CATCH_UP_TIMEOUT, past_20).await;
    assert_eq!(stop, Stop::Matched, "SSE on the doomed node");

    let pid = Pid::from_raw(i32::try_from(doomed.pid()).expect("pid fits in i32"));
    kill(pid, Signal::SIGKILL).expect("SIGKILL the doomed node");
    let status = doomed
        .wait_exit(CHANGE_TIMEOUT)
        .expect("the node exits on SIGKILL");
    assert_eq!(status.signal(), Some(Signal::SIGKILL as i32));
    // Clients handle what reached them before the connection broke, then resume from there.
    let never = |_: &Delivered| false;
    let (rest, stop) = read_ws(&mut ws, CATCH_UP_TIMEOUT, never).await;
    assert!(matches!(stop, Stop::Ended(_)), "WebSocket: {stop:?}");
    ws_got.extend(rest);
    let (rest, stop) = read_sse(&mut sse, CATCH_UP_TIMEOUT, never).await;
    assert!(matches!(stop, Stop::Ended(_)), "SSE: {stop:?}");
    sse_got.extend(rest);

    let last = ws_got.last().expect("read").position.clone();
    let mut ws = WsClient::connect(&survivor.ws_url("/ws")).await;
    let subscribed = ws.subscribe_since(channel, &last.epoch, last.offset).await;
    assert_eq!(subscribed["recovered"], true, "{subscribed}");
    let cursor = sse.last_event_id().to_owned();
    assert_eq!(cursor, sse_got.last().expect("read").position.cursor());
    let mut sse = SseClient::connect(survivor.addr, &path, Some(&cursor)).await;
    sse.assert_stream();
    let (_, subscribed) = sse.expect_subscribed(channel).await;
    assert_eq!(subscribed["recovered"], true, "{subscribed}");

    let resumed_at = publisher.current();
    publisher
        .wait_for("30 more acknowledged publishes", |a| {
            acked(a, None) >= resumed_at + 30
        })
        .await;
    let attempts = publisher.stop().await;
    let end = survivor.publish(channel, END).await;
    let (rest, stop) = read_ws(&mut ws, CATCH_UP_TIMEOUT, is_end).await;
    assert_eq!(stop, Stop::Matched, "WebSocket on the survivor");
    ws_got.extend(rest);
    let (rest, stop) = read_sse(&mut sse, CATCH_UP_TIMEOUT, is_end).await;
    assert_eq!(stop, Stop::Matched, "SSE on the survivor");
    sse_got.extend(rest);

    let refused: Vec<&Attempt> = attempts
        .iter()
        .filter(|x| !matches!(x.outcome, Outcome::Acked(_)))
        .collect();
    assert!(
        refused.is_empty(),
        "the survivor takes every publish: {refused:#?}"
    );
    assert_holds_every_acknowledged("WebSocket", &ws_got, &attempts, &end, false);
    assert_holds_every_acknowledged("SSE", &sse_got, &attempts, &end, false);
}
