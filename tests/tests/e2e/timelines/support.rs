//! What the timeline tests share: many timeline subscribers connected at once, the checks of
//! what each of them reads next, Redis' publish counters and pub/sub channels, and metrics waits.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream;
use herald_tests::{
    Delivered, Herald, Position, Redis, RedisCluster, SSE_TIMEOUT, SseClient, WS_TIMEOUT, WsClient,
    WsEvent, metric_value,
};

/// How many WebSocket clients connect at once: enough to open thousands in a few seconds, few
/// enough not to overflow a listen backlog or the kernel's SYN queue on loopback.
const CONNECT_AT_ONCE: usize = 200;

/// The longest wait for something that should take well under a second (a counter updated).
pub(crate) const CHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the polling waits look again.
pub(crate) const POLL: Duration = Duration::from_millis(20);

/// One WebSocket client subscribed to one timeline channel, with the position it last saw.
pub(crate) struct Subscriber {
    /// The user id (`42` of `user:42`).
    pub(crate) user: String,
    /// The channel it is subscribed to (`user:42`, `replies:42`).
    pub(crate) channel: String,
    /// The connection.
    pub(crate) ws: WsClient,
    /// The position of the last `message` read, or of `subscribed` before any: what the client
    /// would send as `since`.
    pub(crate) seen: Position,
}

impl Subscriber {
    /// Connects to `url` and subscribes to `channel` of `user`.
    pub(crate) async fn connect(url: &str, channel: &str, user: &str) -> Subscriber {
        let mut ws = WsClient::connect(url).await;
        let subscribed = ws.subscribe(channel).await;
        assert_eq!(subscribed["recovered"], false, "{channel}: {subscribed}");
        Subscriber {
            user: user.to_owned(),
            channel: channel.to_owned(),
            ws,
            seen: Position::from_json(&subscribed),
        }
    }

    /// Reads the next frame and checks it is a `message` on this client's channel with `data`
    /// byte for byte, in the same epoch and after everything seen so far.
    pub(crate) async fn expect(&mut self, data: &str, what: &str) -> Delivered {
        let text = match self.ws.next_event(WS_TIMEOUT).await {
            WsEvent::Text(text) => text,
            other => panic!("{what}: {} expected a message, got {other:?}", self.channel),
        };
        let message = Delivered::parse(&text);
        assert_eq!(
            (message.channel.as_str(), message.data.as_str()),
            (self.channel.as_str(), data),
            "{what}: the next thing {} receives; frame {text}",
            self.channel
        );
        assert_after(&self.seen, &message.position, &self.channel, what);
        self.seen = message.position.clone();
        message
    }
}

/// Checks that `next` comes after `seen` on one channel: the same epoch and a greater offset
/// (timeline offsets may skip: the other users of the shard take the numbers between).
pub(crate) fn assert_after(seen: &Position, next: &Position, channel: &str, what: &str) {
    assert_eq!(
        next.epoch, seen.epoch,
        "{what}: {channel} keeps its epoch (no `subscribed` announced a new one)"
    );
    assert!(
        next.offset > seen.offset,
        "{what}: {channel}: offset {} after {}: offsets increase",
        next.offset,
        seen.offset
    );
}

/// Connects one subscriber per `(url, channel, user)`, [`CONNECT_AT_ONCE`] at a time, and
/// returns them in the same order.
pub(crate) async fn connect_all(targets: Vec<(String, String, String)>) -> Vec<Subscriber> {
    stream::iter(targets)
        .map(|(url, channel, user)| async move { Subscriber::connect(&url, &channel, &user).await })
        .buffered(CONNECT_AT_ONCE)
        .collect()
        .await
}

/// `(url, channel, user)` of the `user:` timeline of each id, on `nodes` in turn.
pub(crate) fn spread(nodes: &[&Herald], ids: &[u64]) -> Vec<(String, String, String)> {
    ids.iter()
        .enumerate()
        .map(|(i, id)| {
            (
                nodes[i % nodes.len()].ws_url("/ws"),
                format!("user:{id}"),
                id.to_string(),
            )
        })
        .collect()
}

/// Checks that the next thing each of `subscribers` reads is `data` on its channel.
pub(crate) async fn expect_all(subscribers: &mut [Subscriber], data: &str, what: &str) {
    for subscriber in subscribers {
        subscriber.expect(data, what).await;
    }
}

/// Reads the next SSE event and checks it is a message on `channel` with `data`, after `seen`.
pub(crate) async fn expect_sse(
    sse: &mut SseClient,
    channel: &str,
    seen: &Position,
    data: &str,
    what: &str,
) -> Delivered {
    let message = sse.next_message(SSE_TIMEOUT).await;
    assert_eq!(
        (message.channel.as_str(), message.data.as_str()),
        (channel, data),
        "{what}: the next event of the SSE stream on {channel}"
    );
    assert_after(seen, &message.position, channel, what);
    message
}

/// `data` JSON text for a numbered notice, written with spacing, escapes and number forms that a
/// re-encoding would change, so that "byte for byte" is checked for real.
pub(crate) fn notice(n: u64) -> String {
    format!(r#"{{ "id" : {n},"text":"caf\u00e9 \"hi\" ☃","score":1.50,"big":1e3 ,"tags":[ ]}}"#)
}

/// `data` of a sentinel: delivered after something, it must be the next thing every recipient
/// reads, which proves that nothing else (no copy, no stray notice) came before it.
pub(crate) fn sentinel(label: &str) -> String {
    format!(r#"{{"sentinel":"{label}"}}"#)
}

// === Redis ===

/// How many `PUBLISH` and `SPUBLISH` commands Redis has run so far (script calls included).
pub(crate) fn publish_calls(redis: &Redis) -> u64 {
    publishes_in(&redis.cli(&["INFO", "commandstats"]))
}

/// The same, summed over the masters of a cluster.
pub(crate) fn cluster_publish_calls(cluster: &RedisCluster) -> u64 {
    cluster
        .cli_each(&["INFO", "commandstats"])
        .iter()
        .map(|stats| publishes_in(stats))
        .sum()
}

/// The `calls` of `cmdstat_publish` and `cmdstat_spublish` in `INFO commandstats` output.
fn publishes_in(stats: &str) -> u64 {
    stats
        .lines()
        .filter_map(|line| {
            let (name, fields) = line.trim().split_once(':')?;
            if name != "cmdstat_publish" && name != "cmdstat_spublish" {
                return None;
            }
            let calls = fields.split(',').find_map(|f| f.strip_prefix("calls="))?;
            Some(
                calls
                    .parse::<u64>()
                    .unwrap_or_else(|e| panic!("{line}: {e}")),
            )
        })
        .sum()
}

/// How many pub/sub channels (plain and sharded) carrying channels have subscribers in Redis
/// now: the nodes' question channels (`herald:ctl…`, one per node and one shared) aside.
pub(crate) fn pubsub_channels(redis: &Redis) -> usize {
    ["CHANNELS", "SHARDCHANNELS"]
        .iter()
        .map(|kind| {
            redis
                .cli(&["PUBSUB", kind])
                .lines()
                .filter(|l| !l.trim().is_empty() && !l.contains(":ctl"))
                .count()
        })
        .sum()
}

// === metrics ===

/// The sum of a metric over `nodes`.
pub(crate) async fn metric_sum(nodes: &[&Herald], name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut sum = 0.0;
    for node in nodes {
        sum += metric_value(&node.metrics().await, name, labels);
    }
    sum
}

/// Waits until the metric summed over `nodes` is `expected` (a counter may move a moment after
/// the client saw what it counts); panics if it passes it or does not get there in time.
pub(crate) async fn wait_metric(
    nodes: &[&Herald],
    name: &str,
    labels: &[(&str, &str)],
    expected: f64,
) {
    let deadline = Instant::now() + CHANGE_TIMEOUT;
    loop {
        let value = metric_sum(nodes, name, labels).await;
        if value == expected {
            return;
        }
        assert!(
            value < expected && Instant::now() < deadline,
            "{name}{labels:?} is {value}, expected {expected}"
        );
        tokio::time::sleep(POLL).await;
    }
}

// === bystanders ===

/// A WebSocket client on the ordinary channel `public`, connected before a test provokes
/// refusals, that must keep receiving everything published there, in order, through them.
pub(crate) struct Bystander {
    /// Subscribed to `public`.
    ws: WsClient,
    /// The position of the last message read: each next one follows it by exactly one.
    seen: Position,
    /// Published since the last check, in order.
    pending: Vec<String>,
}

impl Bystander {
    /// Connects to `herald` (the dev site) and subscribes to `public`.
    pub(crate) async fn connect(herald: &Herald) -> Bystander {
        let mut ws = WsClient::connect(&herald.ws_url("/ws")).await;
        let subscribed = ws.subscribe("public").await;
        Bystander {
            ws,
            seen: Position::from_json(&subscribed),
            pending: Vec::new(),
        }
    }

    /// Publishes one message to `public`.
    pub(crate) async fn publish(&mut self, herald: &Herald, label: &str) {
        let data = format!(r#"{{"bystander":"{label}","n":{}}}"#, self.pending.len());
        herald.publish("public", &data).await;
        self.pending.push(data);
    }

    /// Checks that everything published since the last check arrived, in order, once.
    pub(crate) async fn assert_received(&mut self) {
        for data in std::mem::take(&mut self.pending) {
            let message = self.ws.next_message(WS_TIMEOUT).await;
            assert_eq!(
                (message.channel.as_str(), message.data.as_str()),
                ("public", data.as_str()),
                "the bystander on public"
            );
            assert_eq!(
                message.position,
                Position {
                    epoch: self.seen.epoch.clone(),
                    offset: self.seen.offset + 1
                },
                "the bystander's offsets follow each other"
            );
            self.seen = message.position;
        }
    }
}
