//! The facade that `push` and `api` use: the local hub, the engine behind
//! it, and the timeline fan-out on top (`timeline.rs`).

use std::sync::Arc;

use bytes::Bytes;

use crate::{
    ChannelKey, Error, Hub, Metrics, Position, Subscriber, Subscription, TimelineKind,
    engine::{Engine, History, PublishRequest, Published},
    occupancy::{self, Occupancy},
    presence::{Joined, Member},
    subscription::Owner,
    timeline::{DeliveryReport, Recipients, TimelineSettings, Timelines},
};

/// A cheap, cloneable handle on the hub and the engine behind it.
#[derive(Clone)]
pub struct Fanout {
    hub: Hub,
    engine: Arc<dyn Engine>,
    timelines: Arc<Timelines>,
    /// What every subscription to an ordinary channel leaves the hub through.
    channels: Arc<Owner>,
    metrics: Metrics,
}

impl Fanout {
    /// Builds the facade and starts the timeline expander on the current
    /// runtime, as `timelines` says.
    pub fn start(
        hub: Hub,
        engine: Arc<dyn Engine>,
        timelines: TimelineSettings,
        metrics: Metrics,
    ) -> Self {
        let timelines = Timelines::start(hub.clone(), timelines, &metrics);
        Self {
            channels: Owner::channels(hub.clone(), engine.clone()),
            hub,
            engine,
            timelines: Arc::new(timelines),
            metrics,
        }
    }

    /// Starts delivering `channel` to `subscriber`, tagged with `slot`.
    ///
    /// To resume from a position, subscribe first and read [`Fanout::history`]
    /// second, then drop live messages at or below the last replayed offset:
    /// that order leaves no gap, and the offsets remove the overlap.
    pub fn subscribe(
        &self,
        channel: ChannelKey,
        subscriber: Arc<dyn Subscriber>,
        slot: u32,
    ) -> Subscription {
        // A timeline's shard is listened to before the timeline itself, and
        // the engine hears about the shard's channel, not the timeline's.
        let owner = self
            .timelines
            .interest(&channel)
            .unwrap_or_else(|| self.channels.clone());
        let (channel, key) = owner
            .hub()
            .register(channel, subscriber, slot, owner.watch());
        Subscription::new(channel, key, owner)
    }

    /// Whether subscribing to `channel` now would open it on this node: no
    /// local subscriber has it yet, so the engine may have to create state
    /// for it (a log, an upstream subscription). A timeline never opens a
    /// channel of its own: it shares its shard's, and shards are bounded.
    pub fn opens_channel(&self, channel: &ChannelKey) -> bool {
        channel.timeline().is_none() && !self.hub.has_subscribers(channel.as_str())
    }

    /// How many of this node's connections listen to `channel` (an ordinary
    /// channel: a timeline's listeners are its shard's).
    pub fn local_subscribers(&self, channel: &ChannelKey) -> usize {
        self.hub.subscriber_count(channel.as_str())
    }

    /// The ordinary channels of `site` that connections on this node listen
    /// to. It visits every channel of the node: for rare, operator-driven
    /// listings, never on a publish or delivery path.
    pub fn local_channels(&self, site: &str) -> Vec<ChannelKey> {
        self.hub.channels_where(|channel| {
            channel.site() == site
                && channel.timeline().is_none()
                && !channel.name().starts_with(crate::channel::INTERNAL)
        })
    }

    /// The `n` ordinary channels of any site with the most subscribers on
    /// this node, most first, with their counts: for the operator console.
    pub fn busiest_channels(&self, n: usize) -> Vec<(ChannelKey, usize)> {
        self.hub.busiest_where(n, |channel| {
            channel.timeline().is_none() && !channel.name().starts_with(crate::channel::INTERNAL)
        })
    }

    /// Publishes each message; a message to a timeline channel goes to its
    /// user through the user's shard.
    pub async fn publish(&self, batch: Vec<PublishRequest>) -> Result<Vec<Published>, Error> {
        let batch = batch
            .into_iter()
            .map(|request| self.timelines.to_shard(request))
            .collect();
        self.engine.publish(batch).await
    }

    pub async fn history(
        &self,
        channel: &ChannelKey,
        since: Option<Position>,
    ) -> Result<History, Error> {
        self.timelines.history(&*self.engine, channel, since).await
    }

    /// The channel's current position (a timeline's is its shard's), for a
    /// subscriber with no position to resume from: no history is read.
    pub async fn position(&self, channel: &ChannelKey) -> Result<Position, Error> {
        self.engine
            .position(&self.timelines.source_of(channel))
            .await
    }

    /// Joins `connection` to presence channel `channel` as `member`
    /// ([`Engine::presence_join`]); its subscription's drop ends it.
    pub async fn presence_join(
        &self,
        channel: &ChannelKey,
        connection: u64,
        member: Member,
    ) -> Result<Joined, Error> {
        self.engine.presence_join(channel, connection, member).await
    }

    /// The subscribers of `site`'s ordinary channels whose name starts
    /// with `prefix`, on every node (`occupancy.rs`).
    pub async fn occupancy(&self, site: &str, prefix: &str) -> Result<Occupancy, Error> {
        match self.engine.occupancy(site, prefix) {
            Some(everywhere) => everywhere.await,
            None => Ok(occupancy::local(&self.hub, site, prefix)),
        }
    }

    /// The node is going away ([`Engine::stop`]).
    pub async fn stop(&self) {
        self.engine.stop().await;
    }

    /// The members of presence channel `channel`, on every node.
    pub async fn presence_members(&self, channel: &ChannelKey) -> Result<Vec<Member>, Error> {
        self.engine.presence_members(channel).await
    }

    /// Delivers `data` to the `kind` timelines of `recipients` on `site`:
    /// one engine message per shard touched.
    pub async fn deliver(
        &self,
        site: &str,
        kind: TimelineKind,
        recipients: Recipients,
        data: Bytes,
        dedupe: Option<Arc<str>>,
    ) -> Result<DeliveryReport, Error> {
        let groups = recipients.into_groups();
        let report = self
            .timelines
            .deliver(&*self.engine, site, kind, groups, data, dedupe)
            .await?;
        self.metrics.deliveries.inc();
        self.metrics
            .delivery_recipients
            .inc_by(report.recipients as u64);
        let shard_messages = &self.metrics.shard_messages;
        shard_messages
            .with_label_values(&["published"])
            .inc_by(report.messages as u64);
        shard_messages
            .with_label_values(&["duplicate"])
            .inc_by(report.duplicates as u64);
        Ok(report)
    }

    /// The recipients of a delivery on `site`, to be filled one id at a time.
    pub fn recipients(&self, site: &str) -> Recipients {
        Recipients::new(site, self.timelines.shards())
    }

    /// Records a signed request's signature as used on every node; `None`
    /// when the engine keeps no such record beyond this process
    /// ([`Engine::claim_signature`]).
    pub async fn claim_signature(
        &self,
        site: &str,
        signature: &[u8; 32],
        ttl: std::time::Duration,
    ) -> Option<Result<bool, Error>> {
        Some(self.engine.claim_signature(site, signature, ttl)?.await)
    }

    pub fn is_ready(&self) -> bool {
        self.engine.is_ready()
    }

    /// Resolves once every publish acknowledged before the call has reached
    /// this node's subscribers, as far as the engine can tell
    /// ([`Engine::flushed`]).
    pub async fn flushed(&self) {
        self.engine.flushed().await;
    }
}
