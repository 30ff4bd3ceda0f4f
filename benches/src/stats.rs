//! The harness' own statistics: latency histograms that travel between
//! processes, percentiles, merging the reports of worker processes, and the
//! deltas of `/proc` samples (RSS per connection, CPU per delivery).
//!
//! Everything here is plain arithmetic with unit tests, so that a figure in
//! `docs/benchmarks.md` can be traced to code that was checked.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Largest latency a histogram holds, in microseconds (60 s); larger values
/// are recorded as 60 s, which no healthy run comes near.
const MAX_MICROS: u64 = 60_000_000;

/// A latency distribution in microseconds, with three significant digits.
///
/// It crosses process boundaries as its recorded buckets (value, count), so
/// merging the histograms of several workers is exact.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(into = "Buckets", from = "Buckets")]
pub struct Latency {
    histogram: Histogram<u64>,
}

/// The wire form of a [`Latency`]: `(value_us, count)` for every non-empty bucket.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Buckets(Vec<(u64, u64)>);

/// The usual percentiles of a distribution, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    pub fn new() -> Self {
        // Unwrap: the bounds are constants that hdrhistogram accepts
        // (low >= 1, high >= 2 * low, sigfig <= 5).
        let histogram = Histogram::new_with_bounds(1, MAX_MICROS, 3).unwrap();
        Self { histogram }
    }

    /// Records one latency; zero and negative clock skew count as 1 µs.
    pub fn record(&mut self, micros: u64) {
        self.histogram
            .saturating_record(micros.clamp(1, MAX_MICROS));
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Latency) {
        // Both histograms have the same bounds, so `add` cannot fail; if it
        // ever did, falling back to bucket-by-bucket recording is exact too.
        if self.histogram.add(&other.histogram).is_err() {
            for (value, count) in other.buckets().0 {
                let _ = self.histogram.record_n(value, count);
            }
        }
    }

    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// The value at quantile `q` (0..=1), in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.count() == 0 {
            return 0.0;
        }
        self.histogram.value_at_quantile(q) as f64 / 1000.0
    }

    pub fn percentiles(&self) -> Percentiles {
        Percentiles {
            count: self.count(),
            p50: self.quantile_ms(0.5),
            p90: self.quantile_ms(0.9),
            p99: self.quantile_ms(0.99),
            p999: self.quantile_ms(0.999),
            max: if self.count() == 0 {
                0.0
            } else {
                self.histogram.max() as f64 / 1000.0
            },
        }
    }

    /// Points `(percentile 0..100, milliseconds)` for a latency plot, denser
    /// towards the tail.
    pub fn curve(&self) -> Vec<(f64, f64)> {
        if self.count() == 0 {
            return Vec::new();
        }
        let mut points: Vec<(f64, f64)> = self
            .histogram
            .iter_quantiles(4)
            .map(|v| {
                (
                    v.quantile_iterated_to() * 100.0,
                    v.value_iterated_to() as f64 / 1000.0,
                )
            })
            .collect();
        points.dedup_by(|a, b| a.0 == b.0);
        points
    }

    fn buckets(&self) -> Buckets {
        Buckets(
            self.histogram
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
        )
    }
}

impl From<Latency> for Buckets {
    fn from(latency: Latency) -> Self {
        latency.buckets()
    }
}

impl From<Buckets> for Latency {
    fn from(buckets: Buckets) -> Self {
        let mut latency = Latency::new();
        for (value, count) in buckets.0 {
            let _ = latency
                .histogram
                .record_n(value.clamp(1, MAX_MICROS), count);
        }
        latency
    }
}

/// What one worker process measured; the coordinator merges them.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WorkerReport {
    /// Connections that completed their handshake (and subscription).
    pub connected: u64,
    /// Connections that could not be opened.
    pub failed: u64,
    /// Connections the server closed, or that broke, while the run went on.
    pub closed: u64,
    /// Messages received since the last reset.
    pub received: u64,
    /// Publish-to-receive latency of those messages.
    pub latency: Latency,
    /// Open connections that have received nothing since they opened.
    pub unreached: u64,
    /// Open connections that have received more than one message since they
    /// opened (the fanout scenario's notice must arrive exactly once).
    pub repeated: u64,
    /// Reconnect scenario: messages a client never got (gaps in its sequence).
    pub lost: u64,
    /// Reconnect scenario: messages a client got twice.
    pub duplicates: u64,
    /// Reconnect scenario: clients that reconnected after the drop.
    pub reconnected: u64,
    /// Reconnect scenario: clients whose stream resumed with no gap.
    pub recovered: u64,
    /// Reconnect scenario: time from the drop to each reconnect.
    pub reconnect_time: Latency,
    /// Reconnect scenario: time from the drop until each client had what it missed.
    pub recover_time: Latency,
    /// Unix time (µs) of the first and last completed reconnect.
    pub first_reconnect_us: Option<u64>,
    pub last_reconnect_us: Option<u64>,
    /// When the last reconnected connection had caught up (µs since the epoch).
    #[serde(default)]
    pub last_recovered_us: Option<u64>,
    /// The first few error messages, for the report.
    pub errors: Vec<String>,
}

/// How many error messages a merged report keeps.
const MAX_ERRORS: usize = 8;

impl WorkerReport {
    /// Sums counters, merges histograms and keeps the widest time span.
    pub fn merge(reports: impl IntoIterator<Item = WorkerReport>) -> WorkerReport {
        let mut total = WorkerReport::default();
        for report in reports {
            total.connected += report.connected;
            total.failed += report.failed;
            total.closed += report.closed;
            total.received += report.received;
            total.unreached += report.unreached;
            total.repeated += report.repeated;
            total.lost += report.lost;
            total.duplicates += report.duplicates;
            total.reconnected += report.reconnected;
            total.recovered += report.recovered;
            total.latency.merge(&report.latency);
            total.reconnect_time.merge(&report.reconnect_time);
            total.recover_time.merge(&report.recover_time);
            total.first_reconnect_us =
                min_some(total.first_reconnect_us, report.first_reconnect_us);
            total.last_reconnect_us = total.last_reconnect_us.max(report.last_reconnect_us);
            total.last_recovered_us = total.last_recovered_us.max(report.last_recovered_us);
            for error in report.errors {
                if total.errors.len() < MAX_ERRORS {
                    total.errors.push(error);
                }
            }
        }
        total
    }
}

fn min_some(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Server RSS growth per connection: `(after - before) / connections`, in
/// bytes. Shrinking RSS counts as zero growth; no connections gives `None`.
pub fn bytes_per_connection(before: u64, after: u64, connections: u64) -> Option<f64> {
    (connections > 0).then(|| after.saturating_sub(before) as f64 / connections as f64)
}

/// Server CPU-seconds per million deliveries.
pub fn cpu_per_million(cpu_seconds: f64, deliveries: u64) -> Option<f64> {
    (deliveries > 0).then(|| cpu_seconds * 1e6 / deliveries as f64)
}

/// `a / b`, or `None` when `b` is zero or either is missing.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => Some(a / b),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latency(values: impl IntoIterator<Item = u64>) -> Latency {
        let mut latency = Latency::new();
        for v in values {
            latency.record(v);
        }
        latency
    }

    #[test]
    fn percentiles_of_a_uniform_distribution() {
        // 1..=10_000 µs: p50 is 5 ms, p99 9.9 ms, within 0.1 % (3 digits).
        let p = latency(1..=10_000).percentiles();
        assert_eq!(p.count, 10_000);
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.001 + 0.001;
        assert!(close(p.p50, 5.0), "p50 {}", p.p50);
        assert!(close(p.p90, 9.0), "p90 {}", p.p90);
        assert!(close(p.p99, 9.9), "p99 {}", p.p99);
        assert!(close(p.p999, 9.99), "p999 {}", p.p999);
        assert!(close(p.max, 10.0), "max {}", p.max);
    }

    #[test]
    fn empty_and_out_of_range() {
        assert_eq!(Latency::new().percentiles(), Percentiles::default());
        assert!(Latency::new().curve().is_empty());
        let p = latency([0, u64::MAX]).percentiles();
        assert_eq!(p.count, 2);
        assert!(p.max >= 59_000.0, "clamped to 60 s: {}", p.max);
    }

    #[test]
    fn buckets_round_trip_through_json() {
        let original = latency([5, 5, 70, 1_000, 123_456]);
        let json = serde_json::to_string(&original).unwrap();
        let back: Latency = serde_json::from_str(&json).unwrap();
        assert_eq!(back.count(), 5);
        assert_eq!(back.percentiles(), original.percentiles());
    }

    #[test]
    fn merging_workers_equals_one_histogram() {
        let a = WorkerReport {
            connected: 3,
            failed: 1,
            received: 2,
            unreached: 1,
            latency: latency([100, 200]),
            first_reconnect_us: Some(50),
            last_reconnect_us: Some(60),
            last_recovered_us: Some(90),
            errors: vec!["a".into()],
            ..Default::default()
        };
        let b = WorkerReport {
            connected: 4,
            closed: 2,
            received: 3,
            repeated: 2,
            lost: 1,
            latency: latency([300, 400, 500]),
            first_reconnect_us: Some(40),
            last_reconnect_us: None,
            last_recovered_us: Some(70),
            errors: (0..20).map(|i| i.to_string()).collect(),
            ..Default::default()
        };
        let merged = WorkerReport::merge([a, b]);
        assert_eq!((merged.connected, merged.failed, merged.closed), (7, 1, 2));
        assert_eq!((merged.received, merged.lost), (5, 1));
        assert_eq!((merged.unreached, merged.repeated), (1, 2));
        assert_eq!(
            merged.latency.percentiles(),
            latency([100, 200, 300, 400, 500]).percentiles()
        );
        assert_eq!(merged.first_reconnect_us, Some(40));
        assert_eq!(merged.last_reconnect_us, Some(60));
        assert_eq!(merged.last_recovered_us, Some(90));
        assert_eq!(merged.errors.len(), MAX_ERRORS);
        assert_eq!(merged.errors[0], "a");
    }

    #[test]
    fn rss_deltas() {
        assert_eq!(bytes_per_connection(1_000, 21_000, 10), Some(2_000.0));
        assert_eq!(bytes_per_connection(5_000, 4_000, 10), Some(0.0));
        assert_eq!(bytes_per_connection(1, 2, 0), None);
    }

    #[test]
    fn cpu_and_ratios() {
        assert_eq!(cpu_per_million(2.0, 500_000), Some(4.0));
        assert_eq!(cpu_per_million(2.0, 0), None);
        assert_eq!(ratio(Some(1.0), Some(4.0)), Some(0.25));
        assert_eq!(ratio(Some(1.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(1.0)), None);
    }
}
