//! Per-site and per-user traffic accounting (docs/operations.md,
//! "Accounting"): what each site's publishers produce and what reaches its
//! connections, in plain per-site counters, and who produces and receives
//! most of it, in heavy-hitter sketches of a fixed size per site and
//! measure. Nothing here grows with the number of users; the number of
//! sites is the configuration's.
//!
//! - **Produced.** A user is the id of a `user:<id>` timeline: a publish to
//!   it is that user's, and so is each delivery `POST /api/deliver` makes
//!   to it. Counted once per request, never per subscriber.
//! - **Received.** What the hub hands to a connection, counted in its outbox
//!   and reported by the connection once per tick and when it ends
//!   (`push::TrafficSink`); a connection's user is its token's subject or
//!   the user it signed in as. The delivery path pays two additions under
//!   a lock it already holds.
//! - **Connection time.** Per site, the open connections summed once a
//!   second; per user, the time each of the user's connections was open,
//!   reported with what it received.

pub(crate) mod sketch;

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use parking_lot::{Mutex, RwLock};
use prometheus::{CounterVec, IntCounterVec, IntGaugeVec, Opts, Registry};
use push::{Received, TrafficSink};
use serde_json::{Value, json};
use sites::Sites;

use self::sketch::SpaceSaving;

/// How often open connections are summed into each site's connection time.
const CONNECTION_SAMPLE: Duration = Duration::from_secs(1);

/// How accounting is configured (`[accounting]`).
#[derive(Debug, Clone)]
pub struct AccountingConfig {
    /// Whether anything is counted; off, the admin endpoint answers empty totals.
    pub enabled: bool,
    /// Slots of each site's sketch, per measure: the users it can rank.
    pub top_users: usize,
    /// A site whose share of all messages or bytes produced, or of all
    /// deliveries or bytes received, is above this is flagged `split_out`
    /// in the endpoint's answer.
    pub split_share: f64,
}

impl Default for AccountingConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            top_users: 1000,
            split_share: 0.5,
        }
    }
}

/// The node's accounting; cloning shares it.
#[derive(Clone)]
pub(crate) struct Accounting {
    inner: Arc<Inner>,
}

struct Inner {
    config: AccountingConfig,
    /// One entry per site that produced or received anything since the start.
    sites: RwLock<HashMap<Box<str>, Arc<SiteTraffic>>>,
    metrics: AccountingMetrics,
}

/// One site's counters and sketches.
struct SiteTraffic {
    /// Messages published to any of the site's channels, and each delivery
    /// `POST /api/deliver` made to a user's timeline.
    messages: AtomicU64,
    /// Their payload bytes.
    bytes: AtomicU64,
    /// Messages handed to the site's connections, and their payload bytes.
    deliveries_received: AtomicU64,
    bytes_received: AtomicU64,
    /// Milliseconds connections of the site were open, all together.
    connected_ms: AtomicU64,
    /// The users who produced and received most, by each measure; one lock
    /// for all, taken once per request or report.
    users: Mutex<UserSketches>,
}

/// A site, its counters, and the totals part of its report entry.
type SiteTotals = (Box<str>, Arc<SiteTraffic>, serde_json::Map<String, Value>);

/// The heaviest users of one site, by each measure.
struct UserSketches {
    messages: SpaceSaving,
    bytes: SpaceSaving,
    deliveries_received: SpaceSaving,
    bytes_received: SpaceSaving,
    /// In milliseconds.
    connected_ms: SpaceSaving,
}

/// Per-site totals for `/metrics`; never a user label.
#[derive(Clone)]
struct AccountingMetrics {
    messages: IntCounterVec,
    bytes: IntCounterVec,
    deliveries_received: IntCounterVec,
    bytes_received: IntCounterVec,
    connection_seconds: CounterVec,
    sketch_bytes: IntGaugeVec,
}

impl AccountingMetrics {
    fn register(registry: &Registry) -> prometheus::Result<Self> {
        fn counter(
            registry: &Registry,
            name: &str,
            help: &str,
        ) -> prometheus::Result<IntCounterVec> {
            let counter = IntCounterVec::new(Opts::new(name, help), &["site"])?;
            registry.register(Box::new(counter.clone()))?;
            Ok(counter)
        }
        let connection_seconds = CounterVec::new(
            Opts::new(
                "herald_site_connection_seconds_total",
                "Seconds the site's connections were open, all together (sampled each second), by site.",
            ),
            &["site"],
        )?;
        registry.register(Box::new(connection_seconds.clone()))?;
        let sketch_bytes = IntGaugeVec::new(
            Opts::new(
                "herald_accounting_sketch_bytes",
                "Bytes held by a site's top-users sketches (all measures), by site.",
            ),
            &["site"],
        )?;
        registry.register(Box::new(sketch_bytes.clone()))?;
        Ok(Self {
            messages: counter(
                registry,
                "herald_site_messages_produced_total",
                "Messages published to a site's channels, and deliveries to its users' timelines, by site.",
            )?,
            bytes: counter(
                registry,
                "herald_site_bytes_produced_total",
                "Payload bytes of the messages in herald_site_messages_produced_total, by site.",
            )?,
            deliveries_received: counter(
                registry,
                "herald_site_deliveries_received_total",
                "Messages handed to a site's connections, replays included, by site.",
            )?,
            bytes_received: counter(
                registry,
                "herald_site_bytes_received_total",
                "Payload bytes of the messages in herald_site_deliveries_received_total, by site.",
            )?,
            connection_seconds,
            sketch_bytes,
        })
    }
}

impl Accounting {
    pub(crate) fn new(config: AccountingConfig, registry: &Registry) -> prometheus::Result<Self> {
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                sites: RwLock::new(HashMap::new()),
                metrics: AccountingMetrics::register(registry)?,
            }),
        })
    }

    /// Counts a publish of `bytes` to each of `channels` of `site`.
    pub(crate) fn published<'a>(
        &self,
        site: &str,
        channels: impl IntoIterator<Item = &'a str>,
        bytes: usize,
    ) {
        if !self.inner.config.enabled {
            return;
        }
        let traffic = self.site(site);
        let bytes = bytes as u64;
        let mut count = 0u64;
        let mut users = None;
        for channel in channels {
            count += 1;
            if let Some(user) = user_of(channel) {
                let users = users.get_or_insert_with(|| traffic.users.lock());
                users.messages.add(user, 1);
                users.bytes.add(user, bytes);
            }
        }
        let memory = users.map(|users| users.memory_bytes());
        self.add_produced(site, &traffic, count, count * bytes, memory);
    }

    /// Counts a delivery of `bytes` to `recipients` users' timelines of
    /// `site`; `users` are those recipients when they are few enough to
    /// rank (the caller decides), else none are ranked.
    pub(crate) fn delivered<'a>(
        &self,
        site: &str,
        recipients: u64,
        users: impl IntoIterator<Item = &'a str>,
        bytes: usize,
    ) {
        if !self.inner.config.enabled {
            return;
        }
        let traffic = self.site(site);
        let bytes = bytes as u64;
        let mut sketches = None;
        for user in users {
            let sketches = sketches.get_or_insert_with(|| traffic.users.lock());
            sketches.messages.add(user, 1);
            sketches.bytes.add(user, bytes);
        }
        let memory = sketches.map(|sketches| sketches.memory_bytes());
        self.add_produced(site, &traffic, recipients, recipients * bytes, memory);
    }

    fn add_produced(
        &self,
        site: &str,
        traffic: &SiteTraffic,
        messages: u64,
        bytes: u64,
        memory: Option<usize>,
    ) {
        traffic.messages.fetch_add(messages, Ordering::Relaxed);
        traffic.bytes.fetch_add(bytes, Ordering::Relaxed);
        let metrics = &self.inner.metrics;
        metrics.messages.with_label_values(&[site]).inc_by(messages);
        metrics.bytes.with_label_values(&[site]).inc_by(bytes);
        self.set_sketch_bytes(site, memory);
    }

    fn set_sketch_bytes(&self, site: &str, memory: Option<usize>) {
        if let Some(memory) = memory {
            self.inner
                .metrics
                .sketch_bytes
                .with_label_values(&[site])
                .set(memory as i64);
        }
    }

    /// Adds each site's open connections, once a second, to its connection
    /// time; runs until the process ends.
    pub(crate) async fn sample_connections(self, sites: Sites) {
        let mut ticks = tokio::time::interval(CONNECTION_SAMPLE);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = tokio::time::Instant::now();
        loop {
            ticks.tick().await;
            let now = tokio::time::Instant::now();
            let elapsed_ms = now.duration_since(last).as_millis() as u64;
            last = now;
            for site in sites.all() {
                let open = u64::from(site.connections());
                if open == 0 {
                    continue;
                }
                let ms = open * elapsed_ms;
                self.site(site.id())
                    .connected_ms
                    .fetch_add(ms, Ordering::Relaxed);
                self.inner
                    .metrics
                    .connection_seconds
                    .with_label_values(&[site.id()])
                    .inc_by(ms as f64 / 1000.0);
            }
        }
    }

    fn site(&self, site: &str) -> Arc<SiteTraffic> {
        if let Some(traffic) = self.inner.sites.read().get(site) {
            return traffic.clone();
        }
        let slots = self.inner.config.top_users;
        self.inner
            .sites
            .write()
            .entry(site.into())
            .or_insert_with(|| {
                Arc::new(SiteTraffic {
                    messages: AtomicU64::new(0),
                    bytes: AtomicU64::new(0),
                    deliveries_received: AtomicU64::new(0),
                    bytes_received: AtomicU64::new(0),
                    connected_ms: AtomicU64::new(0),
                    users: Mutex::new(UserSketches::new(slots)),
                })
            })
            .clone()
    }

    /// The admin endpoint's answer: per site its totals, its shares of the
    /// node's, its top `limit` users by each measure with the sketch's
    /// error bound, and whether it should be split out.
    pub(crate) fn report(&self, limit: usize) -> Value {
        let config = &self.inner.config;
        let mut report = serde_json::Map::new();
        for (site, traffic, mut entry) in self.site_totals() {
            let users = traffic.users.lock();
            // Counts, or milliseconds shown as seconds.
            let ranked = |sketch: &SpaceSaving, in_ms: bool| {
                let value = |n: u64| {
                    if in_ms {
                        json!(n as f64 / 1000.0)
                    } else {
                        json!(n)
                    }
                };
                json!({
                    "counted": value(sketch.total()),
                    "error_bound": value(sketch.error_bound()),
                    "slots": sketch.len(),
                    "top": sketch.top(limit).into_iter().map(|counted| json!({
                        "user": &*counted.key,
                        "count": value(counted.count),
                        "error": value(counted.error),
                    })).collect::<Vec<_>>(),
                })
            };
            entry.insert(
                "sketch".into(),
                json!({
                    "capacity": config.top_users,
                    "memory_bytes": users.memory_bytes(),
                }),
            );
            entry.insert(
                "top_users".into(),
                json!({
                    "messages": ranked(&users.messages, false),
                    "bytes": ranked(&users.bytes, false),
                    "deliveries_received": ranked(&users.deliveries_received, false),
                    "bytes_received": ranked(&users.bytes_received, false),
                    "connection_seconds": ranked(&users.connected_ms, true),
                }),
            );
            report.insert(site.into(), Value::Object(entry));
        }
        json!({
            "enabled": config.enabled,
            "split_share": config.split_share,
            "sites": report,
        })
    }

    /// Per site, the report's totals, shares and `split_out` alone: what
    /// the console asks for every second, without taking a sketch's lock
    /// or ranking its users.
    pub(crate) fn totals(&self) -> serde_json::Map<String, Value> {
        self.site_totals()
            .into_iter()
            .map(|(site, _, entry)| (site.into(), Value::Object(entry)))
            .collect()
    }

    /// Each site with its counters and the totals part of its entry.
    fn site_totals(&self) -> Vec<SiteTotals> {
        let config = &self.inner.config;
        let sites: Vec<(Box<str>, Arc<SiteTraffic>)> = self
            .inner
            .sites
            .read()
            .iter()
            .map(|(site, traffic)| (site.clone(), traffic.clone()))
            .collect();
        let all = |measure: fn(&SiteTraffic) -> &AtomicU64| -> u64 {
            sites
                .iter()
                .map(|(_, traffic)| measure(traffic).load(Ordering::Relaxed))
                .sum()
        };
        let all_messages = all(|t| &t.messages);
        let all_bytes = all(|t| &t.bytes);
        let all_deliveries = all(|t| &t.deliveries_received);
        let all_bytes_received = all(|t| &t.bytes_received);
        let share = |part: u64, all: u64| {
            if all == 0 {
                0.0
            } else {
                part as f64 / all as f64
            }
        };
        // A node with one site has nothing to split that site out from.
        let several = sites.len() > 1;
        sites
            .into_iter()
            .map(|(site, traffic)| {
                let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
                let messages = load(&traffic.messages);
                let bytes = load(&traffic.bytes);
                let deliveries = load(&traffic.deliveries_received);
                let bytes_received = load(&traffic.bytes_received);
                let shares = [
                    share(messages, all_messages),
                    share(bytes, all_bytes),
                    share(deliveries, all_deliveries),
                    share(bytes_received, all_bytes_received),
                ];
                let entry = json!({
                    "messages_produced": messages,
                    "bytes_produced": bytes,
                    "deliveries_received": deliveries,
                    "bytes_received": bytes_received,
                    "connection_seconds": load(&traffic.connected_ms) as f64 / 1000.0,
                    "share": {
                        "messages": shares[0],
                        "bytes": shares[1],
                        "deliveries": shares[2],
                        "bytes_received": shares[3],
                    },
                    "split_out": several && shares.iter().any(|share| *share > config.split_share),
                });
                let Value::Object(entry) = entry else {
                    unreachable!("json! of an object is an object")
                };
                (site, traffic, entry)
            })
            .collect()
    }
}

impl TrafficSink for Accounting {
    fn received(&self, site: &str, user: Option<&str>, received: Received) {
        if !self.inner.config.enabled {
            return;
        }
        let traffic = self.site(site);
        traffic
            .deliveries_received
            .fetch_add(received.deliveries, Ordering::Relaxed);
        traffic
            .bytes_received
            .fetch_add(received.bytes, Ordering::Relaxed);
        let metrics = &self.inner.metrics;
        if received.deliveries > 0 {
            metrics
                .deliveries_received
                .with_label_values(&[site])
                .inc_by(received.deliveries);
            metrics
                .bytes_received
                .with_label_values(&[site])
                .inc_by(received.bytes);
        }
        let Some(user) = user else {
            return;
        };
        let memory = {
            let mut users = traffic.users.lock();
            if received.deliveries > 0 {
                users.deliveries_received.add(user, received.deliveries);
                users.bytes_received.add(user, received.bytes);
            }
            if received.connected_ms > 0 {
                users.connected_ms.add(user, received.connected_ms);
            }
            users.memory_bytes()
        };
        self.set_sketch_bytes(site, Some(memory));
    }
}

impl UserSketches {
    fn new(slots: usize) -> Self {
        Self {
            messages: SpaceSaving::new(slots),
            bytes: SpaceSaving::new(slots),
            deliveries_received: SpaceSaving::new(slots),
            bytes_received: SpaceSaving::new(slots),
            connected_ms: SpaceSaving::new(slots),
        }
    }

    fn memory_bytes(&self) -> usize {
        [
            &self.messages,
            &self.bytes,
            &self.deliveries_received,
            &self.bytes_received,
            &self.connected_ms,
        ]
        .iter()
        .map(|sketch| sketch.memory_bytes())
        .sum()
    }
}

/// The user whose timeline `channel` is: `user:<id>`.
pub(crate) fn user_of(channel: &str) -> Option<&str> {
    channel
        .strip_prefix("user:")
        .filter(|user| !user.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accounting(top_users: usize) -> Accounting {
        let config = AccountingConfig {
            top_users,
            ..AccountingConfig::default()
        };
        Accounting::new(config, &Registry::new()).unwrap()
    }

    #[test]
    fn ranks_and_totals_by_site() {
        let accounting = accounting(4);
        for i in 0..20 {
            accounting.published("a", [&*format!("user:light{i}")], 10);
        }
        for _ in 0..10 {
            accounting.published("a", ["user:heavy", "public"], 100);
        }
        accounting.delivered("b", 3, ["x", "y", "z"], 5);
        let report = accounting.report(2);
        let a = &report["sites"]["a"];
        assert_eq!(a["messages_produced"], 40);
        assert_eq!(a["bytes_produced"], 20 * 10 + 20 * 100);
        assert_eq!(a["top_users"]["messages"]["top"][0]["user"], "heavy");
        assert_eq!(a["top_users"]["bytes"]["top"][0]["user"], "heavy");
        assert_eq!(a["top_users"]["messages"]["slots"], 4);
        assert_eq!(a["split_out"], true);
        let b = &report["sites"]["b"];
        assert_eq!(b["messages_produced"], 3);
        assert_eq!(b["split_out"], false);
    }

    #[test]
    fn a_site_alone_is_not_flagged_to_split_out() {
        let accounting = accounting(4);
        accounting.published("a", ["public"], 10);
        let report = accounting.report(2);
        assert_eq!(report["sites"]["a"]["share"]["messages"], 1.0);
        assert_eq!(report["sites"]["a"]["split_out"], false);
    }

    #[test]
    fn received_traffic_ranks_users_and_adds_to_the_site() {
        let accounting = accounting(4);
        let received = |deliveries, connected_ms| Received {
            deliveries,
            bytes: deliveries * 10,
            connected_ms,
        };
        accounting.received("a", Some("reader"), received(30, 2_000));
        accounting.received("a", Some("lurker"), received(1, 500));
        accounting.received("a", None, received(30, 0));
        let report = accounting.report(2);
        let a = &report["sites"]["a"];
        assert_eq!(a["deliveries_received"], 61);
        assert_eq!(a["bytes_received"], 610);
        let top = &a["top_users"]["deliveries_received"]["top"];
        assert_eq!(top[0]["user"], "reader");
        assert_eq!(top[0]["count"], 30);
        assert_eq!(top[1]["user"], "lurker");
        let seconds = &a["top_users"]["connection_seconds"]["top"];
        assert_eq!(seconds[0]["count"], 2.0);
    }

    #[test]
    fn users_are_timeline_ids() {
        assert_eq!(user_of("user:evan"), Some("evan"));
        assert_eq!(user_of("user:"), None);
        assert_eq!(user_of("replies:evan"), None);
        assert_eq!(user_of("public"), None);
    }
}
