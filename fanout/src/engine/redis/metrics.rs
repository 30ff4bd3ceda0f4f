//! Prometheus metrics of the Redis engine.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry};

/// The Redis engine's metrics; cloning shares them.
#[derive(Clone)]
pub struct RedisMetrics {
    /// Round-trip time of the publish and read functions.
    pub roundtrip: Histogram,
    /// Reconnections of the pub/sub connection.
    pub reconnects: IntCounter,
    /// Times every local channel was subscribed again after the pub/sub
    /// connection was lost, counted once Redis confirmed the last of them.
    pub resubscribes: IntCounter,
    /// Subscribe commands Redis refused or did not confirm (each is retried).
    pub subscribe_failures: IntCounter,
    /// Gaps in a channel's offsets seen on the live path.
    pub gaps_detected: IntCounter,
    /// Messages read back from history to fill gaps (after a gap, a lag or a reconnect).
    pub gap_messages_filled: IntCounter,
    /// Times the pub/sub receiver fell behind and dropped messages (then refilled from history).
    pub lagged: IntCounter,
    /// Messages received from Redis pub/sub.
    pub received: IntCounter,
    /// Publishes Redis refused or could not take (answered 503).
    pub publish_failures: IntCounter,
    /// Channels started on a new epoch because Redis may have lost some of
    /// their messages, by `reason`: `restart` (another Redis process wrote
    /// the channel: a restart or a failover) or `behind` (Redis was behind
    /// what this node had delivered).
    pub epoch_resets: IntCounterVec,
}

impl RedisMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let metrics = Self::default();
        registry.register(Box::new(metrics.roundtrip.clone()))?;
        registry.register(Box::new(metrics.reconnects.clone()))?;
        registry.register(Box::new(metrics.resubscribes.clone()))?;
        registry.register(Box::new(metrics.subscribe_failures.clone()))?;
        registry.register(Box::new(metrics.gaps_detected.clone()))?;
        registry.register(Box::new(metrics.gap_messages_filled.clone()))?;
        registry.register(Box::new(metrics.lagged.clone()))?;
        registry.register(Box::new(metrics.received.clone()))?;
        registry.register(Box::new(metrics.publish_failures.clone()))?;
        registry.register(Box::new(metrics.epoch_resets.clone()))?;
        Ok(metrics)
    }
}

impl Default for RedisMetrics {
    fn default() -> Self {
        let counter = |name: &str, help: &str| IntCounter::new(name, help).unwrap();
        // Unwraps: constant names and help texts that prometheus accepts.
        Self {
            roundtrip: Histogram::with_opts(
                HistogramOpts::new(
                    "herald_redis_roundtrip_seconds",
                    "Round-trip time of Herald's Redis functions (publish, read).",
                )
                .buckets(vec![
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    1.0,
                ]),
            )
            .unwrap(),
            reconnects: counter(
                "herald_redis_reconnects_total",
                "Reconnections of the Redis pub/sub connection.",
            ),
            resubscribes: counter(
                "herald_redis_resubscribes_total",
                "Times all local channels were subscribed again (and Redis confirmed it) after the pub/sub connection was lost.",
            ),
            subscribe_failures: counter(
                "herald_redis_subscribe_failures_total",
                "Subscribe commands Redis refused or did not confirm; each is retried, and /readyz answers 503 while one lasts.",
            ),
            gaps_detected: counter(
                "herald_redis_gaps_detected_total",
                "Gaps in channel offsets seen on the live path.",
            ),
            gap_messages_filled: counter(
                "herald_redis_gap_messages_filled_total",
                "Messages read back from history to fill gaps.",
            ),
            lagged: counter(
                "herald_redis_lagged_total",
                "Times the pub/sub receiver fell behind and refilled from history.",
            ),
            received: counter(
                "herald_redis_messages_received_total",
                "Messages received from Redis pub/sub.",
            ),
            publish_failures: counter(
                "herald_redis_publish_failures_total",
                "Publishes Redis refused or could not take (answered 503).",
            ),
            epoch_resets: IntCounterVec::new(
                Opts::new(
                    "herald_redis_epoch_resets_total",
                    "Channels started on a new epoch because Redis may have lost messages (reason: restart, behind).",
                ),
                &["reason"],
            )
            .unwrap(),
        }
    }
}
