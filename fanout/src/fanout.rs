//! The facade that `push` and `api` use: the local hub plus the engine.

use std::sync::Arc;

use crate::{
    ChannelName, Error, Hub, Position, Subscriber, Subscription,
    engine::{Engine, History, PublishRequest},
};

/// A cheap, cloneable handle on the hub and the engine behind it.
#[derive(Clone)]
pub struct Fanout {
    hub: Hub,
    engine: Arc<dyn Engine>,
}

impl Fanout {
    pub fn new(hub: Hub, engine: Arc<dyn Engine>) -> Self {
        Self { hub, engine }
    }

    /// Starts delivering `channel` to `subscriber`, tagged with `slot`.
    ///
    /// To resume from a position, subscribe first and read [`Fanout::history`]
    /// second, then drop live messages at or below the last replayed offset:
    /// that order leaves no gap, and the offsets remove the overlap.
    pub fn subscribe(
        &self,
        channel: ChannelName,
        subscriber: Arc<dyn Subscriber>,
        slot: u32,
    ) -> Subscription {
        self.hub.subscribe(channel, subscriber, slot)
    }

    pub async fn publish(&self, batch: Vec<PublishRequest>) -> Result<Vec<Position>, Error> {
        self.engine.publish(batch).await
    }

    pub async fn history(
        &self,
        channel: &ChannelName,
        since: Option<Position>,
    ) -> Result<History, Error> {
        self.engine.history(channel, since).await
    }

    pub fn is_ready(&self) -> bool {
        self.engine.is_ready()
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }
}
