//! The state every request handler shares.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use fanout::Fanout;
use prometheus::Registry;

use crate::{config::Config, metrics::Metrics};

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
    /// Set when shutdown begins; `/readyz` then answers 503.
    shutting_down: AtomicBool,
}

impl App {
    pub(crate) fn new(
        config: Config,
        fanout: Fanout,
        sessions: push::Context,
        registry: Registry,
        metrics: Metrics,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                fanout,
                sessions,
                registry,
                metrics,
                shutting_down: AtomicBool::new(false),
            }),
        }
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

    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::Relaxed)
    }

    pub(crate) fn begin_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::Relaxed);
    }
}
