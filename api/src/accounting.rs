//! Per-site and per-user traffic accounting (docs/operations.md,
//! "Accounting"): what each site's publishers produce, in plain per-site
//! counters, and who produces most of it, in a heavy-hitter sketch of a
//! fixed size per site and measure. Nothing here grows with the number of
//! users; the number of sites is the configuration's.
//!
//! A user is the id of a `user:<id>` timeline: a publish to it is that
//! user's, and so is each delivery `POST /api/deliver` makes to it. Only
//! publishes and deliveries are counted, once per request, never per
//! subscriber: the delivery path to connections pays nothing.

pub(crate) mod sketch;

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use parking_lot::{Mutex, RwLock};
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use serde_json::{Value, json};

use self::sketch::SpaceSaving;

/// How accounting is configured (`[accounting]`).
#[derive(Debug, Clone)]
pub struct AccountingConfig {
    /// Whether anything is counted; off, the admin endpoint answers empty totals.
    pub enabled: bool,
    /// Slots of each site's sketch, per measure: the users it can rank.
    pub top_users: usize,
    /// A site whose share of all messages or bytes produced is above this
    /// is flagged `split_out` in the endpoint's answer.
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
    /// One entry per site that produced anything since the start.
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
    /// The users who produced most, by messages and by bytes; one lock for
    /// both, taken once per request.
    users: Mutex<UserSketches>,
}

struct UserSketches {
    messages: SpaceSaving,
    bytes: SpaceSaving,
}

/// Per-site totals for `/metrics`; never a user label.
#[derive(Clone)]
struct AccountingMetrics {
    messages: IntCounterVec,
    bytes: IntCounterVec,
    sketch_bytes: IntGaugeVec,
}

impl Accounting {
    pub(crate) fn new(config: AccountingConfig, registry: &Registry) -> prometheus::Result<Self> {
        let messages = IntCounterVec::new(
            Opts::new(
                "herald_site_messages_produced_total",
                "Messages published to a site's channels, and deliveries to its users' timelines, by site.",
            ),
            &["site"],
        )?;
        registry.register(Box::new(messages.clone()))?;
        let bytes = IntCounterVec::new(
            Opts::new(
                "herald_site_bytes_produced_total",
                "Payload bytes of the messages in herald_site_messages_produced_total, by site.",
            ),
            &["site"],
        )?;
        registry.register(Box::new(bytes.clone()))?;
        let sketch_bytes = IntGaugeVec::new(
            Opts::new(
                "herald_accounting_sketch_bytes",
                "Bytes held by a site's top-users sketches (both measures), by site.",
            ),
            &["site"],
        )?;
        registry.register(Box::new(sketch_bytes.clone()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                sites: RwLock::new(HashMap::new()),
                metrics: AccountingMetrics {
                    messages,
                    bytes,
                    sketch_bytes,
                },
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
        self.add_totals(site, &traffic, count, count * bytes, memory);
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
        self.add_totals(site, &traffic, recipients, recipients * bytes, memory);
    }

    fn add_totals(
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
        if let Some(memory) = memory {
            metrics
                .sketch_bytes
                .with_label_values(&[site])
                .set(memory as i64);
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
                    users: Mutex::new(UserSketches {
                        messages: SpaceSaving::new(slots),
                        bytes: SpaceSaving::new(slots),
                    }),
                })
            })
            .clone()
    }

    /// The admin endpoint's answer: per site its totals, its share of the
    /// node's, its top `limit` users by each measure with the sketch's
    /// error bound, and whether it should be split out.
    pub(crate) fn report(&self, limit: usize) -> Value {
        let config = &self.inner.config;
        let sites: Vec<(Box<str>, Arc<SiteTraffic>)> = self
            .inner
            .sites
            .read()
            .iter()
            .map(|(site, traffic)| (site.clone(), traffic.clone()))
            .collect();
        let all_messages: u64 = sites
            .iter()
            .map(|(_, t)| t.messages.load(Ordering::Relaxed))
            .sum();
        let all_bytes: u64 = sites
            .iter()
            .map(|(_, t)| t.bytes.load(Ordering::Relaxed))
            .sum();
        let share = |part: u64, all: u64| {
            if all == 0 {
                0.0
            } else {
                part as f64 / all as f64
            }
        };
        let mut report = serde_json::Map::new();
        for (site, traffic) in sites {
            let messages = traffic.messages.load(Ordering::Relaxed);
            let bytes = traffic.bytes.load(Ordering::Relaxed);
            let message_share = share(messages, all_messages);
            let byte_share = share(bytes, all_bytes);
            let users = traffic.users.lock();
            let ranked = |sketch: &SpaceSaving| {
                json!({
                    "counted": sketch.total(),
                    "error_bound": sketch.error_bound(),
                    "slots": sketch.len(),
                    "top": sketch.top(limit).into_iter().map(|counted| json!({
                        "user": &*counted.key,
                        "count": counted.count,
                        "error": counted.error,
                    })).collect::<Vec<_>>(),
                })
            };
            let entry = json!({
                "messages_produced": messages,
                "bytes_produced": bytes,
                "share": { "messages": message_share, "bytes": byte_share },
                "split_out": message_share > config.split_share || byte_share > config.split_share,
                "sketch": {
                    "capacity": config.top_users,
                    "memory_bytes": users.memory_bytes(),
                },
                "top_users": {
                    "messages": ranked(&users.messages),
                    "bytes": ranked(&users.bytes),
                },
            });
            report.insert(site.into(), entry);
        }
        json!({
            "enabled": config.enabled,
            "split_share": config.split_share,
            "sites": report,
        })
    }
}

impl UserSketches {
    fn memory_bytes(&self) -> usize {
        self.messages.memory_bytes() + self.bytes.memory_bytes()
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
    fn users_are_timeline_ids() {
        assert_eq!(user_of("user:evan"), Some("evan"));
        assert_eq!(user_of("user:"), None);
        assert_eq!(user_of("replies:evan"), None);
        assert_eq!(user_of("public"), None);
    }
}
