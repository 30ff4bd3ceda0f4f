//! What every session shares: the fan-out, the limits, the metrics and the tracker.

use std::sync::Arc;

use fanout::Fanout;
use sites::Sites;

use crate::{Metrics, SessionConfig, Tracker};

/// A cheap, cloneable handle that each connection keeps (one pointer).
#[derive(Clone)]
pub struct Context {
    inner: Arc<Inner>,
}

struct Inner {
    fanout: Fanout,
    config: SessionConfig,
    metrics: Metrics,
    tracker: Tracker,
    sites: Sites,
}

impl Context {
    pub fn new(
        fanout: Fanout,
        config: SessionConfig,
        metrics: Metrics,
        tracker: Tracker,
        sites: Sites,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                fanout,
                config,
                metrics,
                tracker,
                sites,
            }),
        }
    }

    pub fn fanout(&self) -> &Fanout {
        &self.inner.fanout
    }

    pub fn config(&self) -> &SessionConfig {
        &self.inner.config
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn tracker(&self) -> &Tracker {
        &self.inner.tracker
    }

    pub fn sites(&self) -> &Sites {
        &self.inner.sites
    }
}
