//! Prometheus metrics of the HTTP front.

use prometheus::{IntCounterVec, Opts, Registry};

/// HTTP front metrics; cloning shares the counters.
#[derive(Clone)]
pub(crate) struct Metrics {
    /// Requests served by hyper, by route and status.
    pub requests: IntCounterVec,
}

impl Metrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(
                "herald_http_requests_total",
                "HTTP requests answered, by route and status.",
            ),
            &["route", "status"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        Ok(Self { requests })
    }
}
