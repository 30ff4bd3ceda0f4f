//! The state every request handler shares.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use fanout::Fanout;
use prometheus::Registry;

use crate::{
    accounting::Accounting,
    config::{Config, ConfigError},
    http::BodyBudget,
    metrics::Metrics,
};

/// A cheap, cloneable handle on the server's shared state.
#[derive(Clone)]
pub struct App {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    fanout: Fanout,
    /// What WebSocket and SSE sessions share.
    sessions: push::Context,
    /// The explicit registry that `/metrics` renders.
    registry: Registry,
    metrics: Metrics,
    /// What each site and its heaviest users produce.
    accounting: Accounting,
    /// The bytes publish and deliver bodies may hold together.
    body_budget: Arc<BodyBudget>,
    /// Set when shutdown begins; `/readyz` then answers 503.
    shutting_down: AtomicBool,
    /// The live demo's users and notices (served on the dev site only).
    demo: crate::demo::Demo,
    /// When the server started, for the console's uptime.
    started: std::time::Instant,
    /// `admin.secret`, or on the zero-config dev site without one, a
    /// secret made up at start (docs/console.md).
    admin_secret: Option<String>,
    /// The main listener's certificate, when it speaks TLS.
    tls: Option<wire::Certificates>,
}

impl App {
    pub(crate) fn new(
        config: Config,
        fanout: Fanout,
        sessions: push::Context,
        registry: Registry,
        metrics: Metrics,
        accounting: Accounting,
        admin_secret: Option<String>,
    ) -> Result<Self, wire::CertificateError> {
        // Built once: a reload swaps its certificate, never the rest.
        let tls = match &config.tls {
            Some(tls) => Some(wire::Certificates::new(tls.certified.clone())?),
            None => None,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                accounting,
                body_budget: BodyBudget::new(config.publish.max_body_bytes_in_flight),
                config,
                fanout,
                sessions,
                registry,
                metrics,
                shutting_down: AtomicBool::new(false),
                demo: crate::demo::Demo::default(),
                started: std::time::Instant::now(),
                admin_secret,
                tls,
            }),
        })
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub fn fanout(&self) -> &Fanout {
        &self.inner.fanout
    }

    pub fn sessions(&self) -> &push::Context {
        &self.inner.sessions
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub(crate) fn demo(&self) -> &crate::demo::Demo {
        &self.inner.demo
    }

    pub(crate) fn body_budget(&self) -> &Arc<BodyBudget> {
        &self.inner.body_budget
    }

    /// The operator's credential for `/api/admin/*` and `/console`.
    pub(crate) fn admin_secret(&self) -> Option<&str> {
        self.inner.admin_secret.as_deref()
    }

    /// The main listener's TLS configuration, when it speaks TLS.
    pub(crate) fn tls(&self) -> Option<&wire::Certificates> {
        self.inner.tls.as_ref()
    }

    pub(crate) fn started(&self) -> std::time::Instant {
        self.inner.started
    }

    pub(crate) fn accounting(&self) -> &Accounting {
        &self.inner.accounting
    }

    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::Relaxed)
    }

    pub(crate) fn begin_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::Relaxed);
    }

    /// Applies a reloaded configuration: its sites (with their limits) take
    /// effect now; any other changed key needs a restart and is only logged.
    /// Connections of removed sites are told to check, and close.
    pub fn reload(&self, new: Result<Config, ConfigError>) {
        let new = match new {
            Ok(new) => new,
            Err(error) => {
                self.metrics().reloads.with_label_values(&["error"]).inc();
                tracing::error!(%error, "reload refused; the running configuration stays");
                return;
            }
        };
        let old = self.config();
        // Debug text compares the settings without every type deriving
        // PartialEq; a difference only decides what gets logged.
        let restart_needed: Vec<&str> = [
            (
                "listen",
                format!("{:?}", old.listen) != format!("{:?}", new.listen),
            ),
            (
                "engine",
                format!("{:?}", old.engine) != format!("{:?}", new.engine),
            ),
            ("log", format!("{:?}", old.log) != format!("{:?}", new.log)),
            (
                "publish",
                format!("{:?}", old.publish) != format!("{:?}", new.publish),
            ),
            (
                "history",
                format!("{:?}", old.history) != format!("{:?}", new.history),
            ),
            ("connection", old.connection != new.connection),
            (
                "listener",
                format!("{:?}", old.listener) != format!("{:?}", new.listener),
            ),
            (
                "metrics",
                format!("{:?}", old.metrics) != format!("{:?}", new.metrics),
            ),
            (
                "meteor",
                format!("{:?}", old.meteor) != format!("{:?}", new.meteor),
            ),
            (
                "stomp",
                format!("{:?}", old.stomp) != format!("{:?}", new.stomp),
            ),
            (
                "timeline",
                format!("{:?}", old.timeline) != format!("{:?}", new.timeline),
            ),
            (
                "accounting",
                format!("{:?}", old.accounting) != format!("{:?}", new.accounting),
            ),
            ("admin", old.admin_secret != new.admin_secret),
            ("tls", old.tls.is_some() != new.tls.is_some()),
            (
                "shutdown",
                format!("{:?}", old.shutdown) != format!("{:?}", new.shutdown),
            ),
        ]
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect();
        if !restart_needed.is_empty() {
            tracing::warn!(
                keys = restart_needed.join(","),
                "changed settings that take effect only after a restart; ignored"
            );
        }
        // The files are read again on every reload (a renewed certificate
        // keeps its path): new handshakes present what they hold now, and
        // open connections keep the keys they negotiated.
        if let (Some(certificates), Some(tls)) = (self.tls(), &new.tls) {
            certificates.swap(tls.certified.clone());
            tracing::info!(cert = %tls.cert.display(), "TLS certificate reloaded");
        }
        let reloaded = self.sessions().sites().apply(new.sites);
        self.sessions().tracker().recheck_all();
        self.metrics().reloads.with_label_values(&["ok"]).inc();
        tracing::info!(
            added = reloaded.added.join(","),
            changed = reloaded.changed.join(","),
            removed = reloaded.removed.join(","),
            "configuration reloaded"
        );
    }
}
