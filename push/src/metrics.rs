//! Prometheus metrics of client connections.
//!
//! Label values are resolved once, here, so that the delivery path only
//! bumps plain atomic counters.

use std::sync::Arc;

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use crate::{CloseReason, ErrorCode, Transport};

/// Connection metrics; cloning shares the counters.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    /// Shared with the outboxes that write to their sockets themselves.
    ws: Arc<PerTransport>,
    sse: Arc<PerTransport>,
    poll: Arc<PerTransport>,
    client_errors: IntCounterVec,
    rejections: IntCounterVec,
    families: Families,
}

/// The metric families, kept for registration.
struct Families {
    connections: IntGaugeVec,
    delivered: IntCounterVec,
    writes: IntCounterVec,
    disconnects: IntCounterVec,
}

/// Counters of one transport with their labels already applied.
pub(crate) struct PerTransport {
    /// Open connections.
    pub connections: IntGauge,
    /// Messages handed to the socket (one per subscriber per message).
    pub delivered: IntCounter,
    /// Write system calls; deliveries per write shows how well writes coalesce.
    pub writes: IntCounter,
    /// Ended connections, one series per [`CloseReason::all`].
    disconnects: Vec<(CloseReason, IntCounter)>,
    /// The family, for a reason outside that list, and this transport's label.
    disconnects_family: IntCounterVec,
    label: &'static str,
}

impl PerTransport {
    pub fn disconnected(&self, reason: CloseReason) {
        // Every reason a connection ends with is in the list; a code added
        // later without a close code still gets its own series, resolved here.
        match self.disconnects.iter().find(|(r, _)| *r == reason) {
            Some((_, counter)) => counter.inc(),
            None => self
                .disconnects_family
                .with_label_values(&[self.label, reason.as_str()])
                .inc(),
        }
    }
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let metrics = Self::new();
        let f = &metrics.inner.families;
        registry.register(Box::new(f.connections.clone()))?;
        registry.register(Box::new(f.delivered.clone()))?;
        registry.register(Box::new(f.writes.clone()))?;
        registry.register(Box::new(f.disconnects.clone()))?;
        registry.register(Box::new(metrics.inner.client_errors.clone()))?;
        registry.register(Box::new(metrics.inner.rejections.clone()))?;
        Ok(metrics)
    }

    pub(crate) fn transport(&self, transport: Transport) -> &Arc<PerTransport> {
        match transport {
            Transport::Ws => &self.inner.ws,
            Transport::Sse => &self.inner.sse,
            Transport::Poll => &self.inner.poll,
        }
    }

    /// Counts a refused request or frame by its code.
    pub fn client_error(&self, code: ErrorCode) {
        self.inner
            .client_errors
            .with_label_values(&[code.as_str()])
            .inc();
    }

    /// Counts a refusal of site `site` ("-" when no site was found) with
    /// its stable code: credentials, channel rules and limits, on every
    /// route. Series exist only for sites that were refused something, so
    /// idle sites add none.
    pub fn reject(&self, site: &str, code: ErrorCode) {
        self.inner
            .rejections
            .with_label_values(&[site, code.as_str()])
            .inc();
    }

    /// The metrics, not yet in any registry: [`Metrics::register`] adds them
    /// to one; benchmarks and unit tests use them unregistered.
    pub(crate) fn new() -> Self {
        // Unwraps: constant names, help texts and label sets that prometheus accepts.
        let families = Families {
            connections: IntGaugeVec::new(
                Opts::new("herald_connections", "Open client connections."),
                &["transport"],
            )
            .unwrap(),
            delivered: IntCounterVec::new(
                Opts::new(
                    "herald_messages_delivered_total",
                    "Messages handed to client sockets, one per subscriber.",
                ),
                &["transport"],
            )
            .unwrap(),
            writes: IntCounterVec::new(
                Opts::new(
                    "herald_socket_writes_total",
                    "Write system calls on client sockets.",
                ),
                &["transport"],
            )
            .unwrap(),
            disconnects: IntCounterVec::new(
                Opts::new(
                    "herald_disconnects_total",
                    "Ended client connections by reason.",
                ),
                &["transport", "reason"],
            )
            .unwrap(),
        };
        let client_errors = IntCounterVec::new(
            Opts::new(
                "herald_client_errors_total",
                "Requests and frames refused, by error code.",
            ),
            &["code"],
        )
        .unwrap();
        let rejections = IntCounterVec::new(
            Opts::new(
                "herald_rejections_total",
                "Connections, subscriptions and publishes refused by site rules and limits, by site and reason.",
            ),
            &["site", "reason"],
        )
        .unwrap();
        let per = |t: Transport| PerTransport {
            connections: families.connections.with_label_values(&[t.as_str()]),
            delivered: families.delivered.with_label_values(&[t.as_str()]),
            writes: families.writes.with_label_values(&[t.as_str()]),
            disconnects: CloseReason::all()
                .map(|r| {
                    let counter = families
                        .disconnects
                        .with_label_values(&[t.as_str(), r.as_str()]);
                    (r, counter)
                })
                .collect(),
            disconnects_family: families.disconnects.clone(),
            label: t.as_str(),
        };
        Self {
            inner: Arc::new(Inner {
                ws: Arc::new(per(Transport::Ws)),
                sse: Arc::new(per(Transport::Sse)),
                poll: Arc::new(per(Transport::Poll)),
                client_errors,
                rejections,
                families,
            }),
        }
    }
}
