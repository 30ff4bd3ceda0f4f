//! Prometheus metrics of the HTTP front.

use prometheus::{Counter, Gauge, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// HTTP front metrics; cloning shares the counters.
#[derive(Clone)]
pub(crate) struct Metrics {
    /// Requests served by hyper, by route and status.
    pub requests: IntCounterVec,
    /// Tokio tasks alive, read at each scrape: an idle site or an idle
    /// connection must not add any beyond its own one.
    pub alive_tasks: IntGauge,
    /// Bytes held by publish and delivery bodies, read at each scrape,
    /// against `publish.max_body_bytes_in_flight`.
    pub body_bytes_in_flight: IntGauge,
    /// SIGHUP reloads, by result.
    pub reloads: IntCounterVec,
    /// TLS handshakes on the main listener, by result.
    pub tls_handshakes: IntCounterVec,
    /// Connections accepted whose request head is not complete yet.
    pub connections_pending: IntGauge,
    /// Connections closed before their request head was complete, by
    /// reason: `limit`, `header_timeout`, `hung_up`.
    pub pending_closed: IntCounterVec,
    /// This node's delivery lag (`fanout::lag`), read at each scrape.
    pub delivery_lag_seconds: Gauge,
    /// Publishes and deliveries that waited for the lag to come down, then went ahead.
    pub pushback_waits: IntCounter,
    /// Publishes and deliveries answered 503 `delivery_lagging` after waiting.
    pub pushback_refusals: IntCounter,
    /// Seconds publishes and deliveries spent waiting for the lag, in all.
    pub pushback_wait_seconds: Counter,
    /// Publishes through the compatibility ports, by port and result.
    pub compat_publishes: IntCounterVec,
    /// File descriptors this process holds, read at each scrape: every connection is one, and
    /// the alert on running out of them (deploy/prometheus/alerts.yml) compares this with
    /// `max_fds`. Named as the Prometheus process collector names it, so that existing
    /// dashboards and rules read it.
    pub open_fds: IntGauge,
    /// The soft open-files limit, read at each scrape (Herald raises it to the hard limit at
    /// start).
    pub max_fds: IntGauge,
    /// 1 when `/readyz` would answer 200, 0 when it would answer 503 (shutting down, or the
    /// engine cannot do its job), read at each scrape, so that an alert sees a node that is up
    /// but out of the load balancer.
    pub ready: IntGauge,
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
        let alive_tasks = IntGauge::new(
            "herald_runtime_alive_tasks",
            "Tokio tasks alive in the process (one per connection, plus a fixed few).",
        )?;
        registry.register(Box::new(alive_tasks.clone()))?;
        let body_bytes_in_flight = IntGauge::new(
            "herald_request_body_bytes_in_flight",
            "Bytes held by publish and delivery request bodies being read or handled.",
        )?;
        registry.register(Box::new(body_bytes_in_flight.clone()))?;
        let reloads = IntCounterVec::new(
            Opts::new(
                "herald_config_reloads_total",
                "Configuration reloads (SIGHUP), by result: ok, or error when the new file was refused.",
            ),
            &["result"],
        )?;
        registry.register(Box::new(reloads.clone()))?;
        let tls_handshakes = IntCounterVec::new(
            Opts::new(
                "herald_tls_handshakes_total",
                "TLS handshakes on the main listener (tls.cert), by result: ok; not_tls (plain HTTP to the TLS port, answered 400); failed (no common version, suite or protocol, a bad message); hung_up; timeout (listener.header_timeout_secs).",
            ),
            &["result"],
        )?;
        registry.register(Box::new(tls_handshakes.clone()))?;
        let connections_pending = IntGauge::new(
            "herald_connections_pending",
            "Connections accepted whose request head is not complete yet (at most listener.max_pending).",
        )?;
        registry.register(Box::new(connections_pending.clone()))?;
        let pending_closed = IntCounterVec::new(
            Opts::new(
                "herald_pending_connections_closed_total",
                "Connections closed before their request head was complete, by reason: limit \
                 (listener.max_pending reached), header_timeout, hung_up, tls_handshake (on a TLS \
                 listener, no handshake: herald_tls_handshakes_total says why).",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(pending_closed.clone()))?;
        // Every reason is in the scrape from the start, at 0.
        for reason in ["limit", "header_timeout", "hung_up"] {
            pending_closed.with_label_values(&[reason]);
        }
        let delivery_lag_seconds = Gauge::new(
            "herald_delivery_lag_seconds",
            "How far this node's delivery runs behind: the age of the oldest message still waiting \
             for a delivery worker or a woken connection, or the largest wait connections \
             reported over the last 128-256 ms, whichever is larger.",
        )?;
        registry.register(Box::new(delivery_lag_seconds.clone()))?;
        let pushback_waits = IntCounter::new(
            "herald_publish_pushback_waits_total",
            "Publishes and deliveries that waited for delivery to come within half of \
             delivery.max_lag_ms, then went ahead.",
        )?;
        registry.register(Box::new(pushback_waits.clone()))?;
        let pushback_refusals = IntCounter::new(
            "herald_publish_pushback_refusals_total",
            "Publishes and deliveries answered 503 delivery_lagging: delivery stayed past half of \
             delivery.max_lag_ms for delivery.max_publish_wait_ms.",
        )?;
        registry.register(Box::new(pushback_refusals.clone()))?;
        let pushback_wait_seconds = Counter::new(
            "herald_publish_pushback_wait_seconds_total",
            "Seconds publishes and deliveries spent waiting for delivery to catch up, in all.",
        )?;
        registry.register(Box::new(pushback_wait_seconds.clone()))?;
        let compat_publishes = IntCounterVec::new(
            Opts::new(
                "herald_compat_publishes_total",
                "Publishes through the compatibility ports (Meteor ADDMESSAGE, STOMP SEND, the \
                 Pusher REST API, the Mercure hub), by port (meteor, stomp, pusher, mercure) and \
                 result (published, refused).",
            ),
            &["port", "result"],
        )?;
        registry.register(Box::new(compat_publishes.clone()))?;
        let open_fds = IntGauge::new(
            "process_open_fds",
            "File descriptors the process holds (one per connection, plus a fixed few).",
        )?;
        registry.register(Box::new(open_fds.clone()))?;
        let max_fds = IntGauge::new(
            "process_max_fds",
            "The process's soft limit on open file descriptors.",
        )?;
        registry.register(Box::new(max_fds.clone()))?;
        let ready = IntGauge::new(
            "herald_ready",
            "1 when /readyz answers 200, 0 when it answers 503 (shutting down, or the engine \
             cannot do its job: Redis unreachable, a subscription missing).",
        )?;
        registry.register(Box::new(ready.clone()))?;
        Ok(Self {
            ready,
            open_fds,
            max_fds,
            compat_publishes,
            delivery_lag_seconds,
            pushback_waits,
            pushback_refusals,
            pushback_wait_seconds,
            requests,
            alive_tasks,
            body_bytes_in_flight,
            reloads,
            tls_handshakes,
            connections_pending,
            pending_closed,
        })
    }

    /// Sets `process_open_fds` and `process_max_fds`. The count reads `/proc/self/fd`, as the
    /// Prometheus process collector does: one directory entry per descriptor, so a scrape of a
    /// node holding 100,000 connections lists 100,000 entries (a few milliseconds, once per
    /// scrape interval). Where there is no `/proc` (not Linux) the gauge stays at 0.
    pub fn read_fds(&self) {
        if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
            // The directory's own descriptor, open while it is listed, is one of the entries.
            let open = entries.count().saturating_sub(1);
            self.open_fds.set(i64::try_from(open).unwrap_or(i64::MAX));
        }
        if let Ok((soft, _hard)) = rlimit::getrlimit(rlimit::Resource::NOFILE) {
            self.max_fds.set(i64::try_from(soft).unwrap_or(i64::MAX));
        }
    }
}
