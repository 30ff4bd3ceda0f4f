//! What every session shares: the fan-out, the limits, the metrics and the tracker.

use std::{any::TypeId, sync::Arc, time::Duration};

use fanout::Fanout;
use parking_lot::Mutex;
use sites::Sites;

use crate::{
    Metrics, Protocol, SessionConfig, Tracker, disconnects::Disconnects, outbox::HubWriter,
    traffic::TrafficSink,
};

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
    /// Where connections report what they received; none without accounting.
    traffic: Option<Arc<dyn TrafficSink>>,
    /// One [`HubWriter`] per protocol whose frames the hub may write.
    hub_writers: Mutex<Vec<(TypeId, Arc<HubWriter>)>>,
    disconnects: Disconnects,
}

impl Context {
    pub fn new(
        fanout: Fanout,
        config: SessionConfig,
        metrics: Metrics,
        tracker: Tracker,
        sites: Sites,
        traffic: Option<Arc<dyn TrafficSink>>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                fanout,
                config,
                metrics,
                tracker,
                sites,
                traffic,
                hub_writers: Mutex::new(Vec::new()),
                disconnects: Disconnects::default(),
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

    pub(crate) fn traffic(&self) -> Option<&dyn TrafficSink> {
        self.inner.traffic.as_deref()
    }

    /// Disconnects every connection of `user` on `site` on this node: they
    /// close with `disconnected` (4011) shortly after (`disconnects.rs`).
    pub fn disconnect_user(&self, site: &str, user: &str) {
        self.inner.disconnects.add(site, user);
        self.inner.tracker.check_disconnects();
    }

    pub(crate) fn disconnects(&self) -> &Disconnects {
        &self.inner.disconnects
    }

    /// How the hub writes `P`'s frames, when it may: made once per protocol.
    pub(crate) fn hub_writer<P: Protocol + 'static>(&self) -> Option<Arc<HubWriter>> {
        let frame = P::SHARED_FRAME?;
        let mut writers = self.inner.hub_writers.lock();
        let id = TypeId::of::<P>();
        if let Some((_, writer)) = writers.iter().find(|(of, _)| *of == id) {
            return Some(writer.clone());
        }
        let writer = Arc::new(HubWriter {
            frame,
            counters: self.inner.metrics.transport(P::TRANSPORT).clone(),
        });
        writers.push((id, writer.clone()));
        Some(writer)
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
