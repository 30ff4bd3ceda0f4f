//! What every session shares: the fan-out, the limits, the metrics and the tracker.

use std::{sync::Arc, time::Duration};

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

    /// Shutdown's advice to every client: first waits until what publishers
    /// were told was accepted has reached the outboxes (each connection
    /// then sends all of it ahead of its advice), then tells every
    /// connection to reconnect, as [`Tracker::shut_down_all`] does.
    pub async fn shut_down_all(&self, jitter: Duration, batch: usize, pause: Duration) {
        self.inner.fanout.flushed().await;
        self.inner.tracker.shut_down_all(jitter, batch, pause).await;
    }
}
