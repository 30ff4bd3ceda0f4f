//! `listener.reuseport` (`--reuseport`): three Herald processes on one port and one Redis, the
//! kernel spreading clients over them; a message published once through that port reaches every
//! subscriber on every process. On the memory engine the setting is refused (exit 64), and without
//! it a second process cannot bind the port at all.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use herald_tests::{
    Herald, HeraldBuilder, Redis, Request, WS_TIMEOUT, WsClient, free_port, metric_value,
};

use crate::redis::node;

/// Clients opened on the shared port. With three processes, the chance that the kernel's hash puts
/// them all on one is 3 × 3^-24, about 10^-11.
const CLIENTS: usize = 24;

/// How long the per-process connection gauges may take to add up to what the clients opened.
const GAUGE_TIMEOUT: Duration = Duration::from_secs(15);

/// A Redis-engine node with `--reuseport` on `listen` and a metrics listener of its own, which is
/// how each process is told apart behind the shared port.
fn sharing_node(url: &str, listen: &str) -> (HeraldBuilder, SocketAddr) {
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port())
        .parse()
        .expect("an address");
    let builder = node(url)
        .listen(listen)
        .arg("--reuseport")
        .arg("--metrics-listen")
        .arg(metrics.to_string());
    (builder, metrics)
}

/// Open WebSocket connections on the process whose metrics listener is `metrics`.
async fn connections(metrics: SocketAddr) -> f64 {
    let answer = Request::get(metrics, "/metrics").send().await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    metric_value(&answer.text(), "herald_connections", &[("transport", "ws")])
}

#[tokio::test]
async fn processes_share_a_port_and_every_subscriber_gets_each_message_once() {
    let redis = Redis::start();
    let url = redis.url();
    // The first process picks the port; the others bind the same one.
    let (first, first_metrics) = sharing_node(&url, "127.0.0.1:0");
    let first = first.start();
    let shared = first.addr;
    let mut nodes: Vec<(Herald, SocketAddr)> = vec![(first, first_metrics)];
    for _ in 0..2 {
        let (builder, metrics) = sharing_node(&url, &shared.to_string());
        let herald = builder.start();
        assert_eq!(herald.addr, shared, "every process listens on the one port");
        nodes.push((herald, metrics));
    }

    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let mut ws = WsClient::connect(&format!("ws://{shared}/ws")).await;
        let subscribed = ws.subscribe("public").await;
        assert_eq!(subscribed["channel"], "public", "{subscribed}");
        clients.push(ws);
    }

    // The gauges count admitted connections, which every client is by its welcome; wait for
    // them all the same rather than rely on when each process updates its gauge.
    let deadline = Instant::now() + GAUGE_TIMEOUT;
    let per_node = loop {
        let mut per_node = Vec::new();
        for (_, metrics) in &nodes {
            per_node.push(connections(*metrics).await);
        }
        if per_node.iter().sum::<f64>() == CLIENTS as f64 {
            break per_node;
        }
        assert!(
            Instant::now() < deadline,
            "the processes count {per_node:?} connections, not {CLIENTS} in all"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let serving = per_node.iter().filter(|&&n| n > 0.0).count();
    assert!(
        serving >= 2,
        "the kernel put all {CLIENTS} clients on one process: {per_node:?}"
    );

    // One publish through the shared port, landing on whichever process the kernel picks.
    let position = nodes[0]
        .0
        .publish("public", r#"{"text":"to everyone"}"#)
        .await;
    for (i, ws) in clients.iter_mut().enumerate() {
        let got = ws.next_message(WS_TIMEOUT).await;
        assert_eq!(got.position, position, "client {i}");
        assert_eq!(got.data, r#"{"text":"to everyone"}"#, "client {i}");
    }
    // Exactly once: the next thing each client reads is the marker published after it.
    let end = nodes[0].0.publish("public", r#""end""#).await;
    for (i, ws) in clients.iter_mut().enumerate() {
        let got = ws.next_message(WS_TIMEOUT).await;
        assert_eq!(
            got.position, end,
            "client {i}: nothing twice, nothing between"
        );
    }

    // Without the setting, the port is not shared.
    let alone = node(&url)
        .listen(shared.to_string())
        .run_to_exit(WS_TIMEOUT);
    assert!(!alone.status.success(), "{}", alone.stderr);
    assert!(
        alone.stderr.contains(&format!("cannot listen on {shared}")),
        "{}",
        alone.stderr
    );
}

#[tokio::test]
async fn reuseport_on_the_memory_engine_is_refused() {
    for refused in [
        Herald::builder().arg("--reuseport"),
        Herald::builder().env("HERALD_LISTENER_REUSEPORT", "true"),
        Herald::builder().config_toml("[listener]\nreuseport = true\n"),
    ] {
        let finished = refused.run_to_exit(WS_TIMEOUT);
        assert_eq!(finished.status.code(), Some(64), "{}", finished.stderr);
        assert!(
            finished.stderr.contains("`listener.reuseport`")
                && finished.stderr.contains("engine = \"redis\""),
            "names the key and the way out: {}",
            finished.stderr
        );
    }
}
