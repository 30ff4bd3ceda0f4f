//! Prometheus metrics of the fan-out core.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// The fan-out core's metrics. Cloning shares the same counters.
#[derive(Clone)]
pub struct Metrics {
    /// Messages accepted by the engine (one per channel per publish).
    pub published: IntCounter,
    /// Local subscriptions, over all channels.
    pub subscriptions: IntGauge,
    /// Channels with at least one local subscriber.
    pub active_channels: IntGauge,
    /// Channels whose history the memory engine holds.
    pub history_channels: IntGauge,
    /// Messages held in the memory engine's history, over all channels.
    pub history_messages: IntGauge,
    /// Timeline deliveries accepted (`POST /api/deliver`).
    pub deliveries: IntCounter,
    /// Distinct recipients of those deliveries.
    pub delivery_recipients: IntCounter,
    /// Timeline shard messages, by result: published, or duplicate.
    pub shard_messages: IntCounterVec,
    /// Timeline messages the expander handed to local subscribers.
    pub timeline_expanded: IntCounter,
    /// Shard messages the expander dropped because their site's queue was full.
    pub timeline_dropped: IntCounter,
    /// Local timelines told `recovered: false` because the expander
    /// dropped shard messages of their shard.
    pub timeline_gaps: IntCounter,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let metrics = Self::default();
        registry.register(Box::new(metrics.published.clone()))?;
        registry.register(Box::new(metrics.subscriptions.clone()))?;
        registry.register(Box::new(metrics.active_channels.clone()))?;
        registry.register(Box::new(metrics.history_channels.clone()))?;
        registry.register(Box::new(metrics.history_messages.clone()))?;
        registry.register(Box::new(metrics.deliveries.clone()))?;
        registry.register(Box::new(metrics.delivery_recipients.clone()))?;
        registry.register(Box::new(metrics.shard_messages.clone()))?;
        registry.register(Box::new(metrics.timeline_expanded.clone()))?;
        registry.register(Box::new(metrics.timeline_dropped.clone()))?;
        registry.register(Box::new(metrics.timeline_gaps.clone()))?;
        Ok(metrics)
    }
}

/// The metrics, not yet in any registry: [`Metrics::register`] builds them
/// this way and adds them to one; unit tests and benchmarks use them
/// unregistered.
impl Default for Metrics {
    fn default() -> Self {
        // Unwraps: the names and help texts are constants that prometheus accepts.
        Self {
            published: IntCounter::new(
                "herald_messages_published_total",
                "Messages accepted by the engine, one per channel per publish.",
            )
            .unwrap(),
            subscriptions: IntGauge::new(
                "herald_subscriptions",
                "Local channel subscriptions over all connections.",
            )
            .unwrap(),
            active_channels: IntGauge::new(
                "herald_active_channels",
                "Channels with at least one local subscriber.",
            )
            .unwrap(),
            history_channels: IntGauge::new(
                "herald_history_channels",
                "Channels whose history the memory engine holds.",
            )
            .unwrap(),
            history_messages: IntGauge::new(
                "herald_history_messages",
                "Messages held in the memory engine's history.",
            )
            .unwrap(),
            deliveries: IntCounter::new(
                "herald_deliveries_total",
                "Timeline deliveries accepted (POST /api/deliver).",
            )
            .unwrap(),
            delivery_recipients: IntCounter::new(
                "herald_delivery_recipients_total",
                "Distinct recipients of timeline deliveries.",
            )
            .unwrap(),
            shard_messages: IntCounterVec::new(
                Opts::new(
                    "herald_timeline_shard_messages_total",
                    "Timeline shard messages: published, or duplicate (skipped by an idempotency key).",
                ),
                &["result"],
            )
            .unwrap(),
            timeline_expanded: IntCounter::new(
                "herald_timeline_expanded_total",
                "Timeline messages the expander handed to local subscribers.",
            )
            .unwrap(),
            timeline_dropped: IntCounter::new(
                "herald_timeline_expander_dropped_total",
                "Timeline shard messages dropped because their site's expander queue on this node was full.",
            )
            .unwrap(),
            timeline_gaps: IntCounter::new(
                "herald_timeline_expander_gaps_total",
                "Local timelines told recovered: false because shard messages of their shard were dropped.",
            )
            .unwrap(),
        }
    }
}
