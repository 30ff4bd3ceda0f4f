//! Timeline fan-out, sharded by user (`docs/timelines.md`).
//!
//! A delivery to many users is grouped by shard, `crc32(site ":" user) mod
//! S`, and published as one engine message per shard touched, on the
//! shard's internal channel `<site>/~t:<n>`. A node listens to the shards of
//! the users connected to it (the first local subscriber of a user's
//! timeline in a shard subscribes the expander to that shard; the last one
//! leaving unsubscribes it) and the expander turns shard messages into
//! messages on the users' `user:`/`replies:` channels.
//!
//! Invariants:
//! - Every `user:<id>` and `replies:<id>` channel is a timeline: publishing
//!   to one is a delivery to one recipient, through its shard, so a
//!   timeline's positions are always its shard's.
//! - A timeline channel's interest in its shard is taken before the
//!   timeline subscribes in the hub and reads history, so no shard message
//!   can fall between the history read and live delivery.
//! - Timeline history is the shard's history, filtered: Redis memory grows
//!   with shards, not users.

mod expander;
mod grouper;
mod payload;

use std::{
    collections::HashMap,
    fmt::Write as _,
    sync::{Arc, Weak},
};

use bytes::Bytes;
use parking_lot::Mutex;

pub use expander::DEFAULT_QUEUE_PER_SITE as DEFAULT_EXPANDER_QUEUE_PER_SITE;
pub use grouper::{Recipients, ShardGroup};

use crate::{
    ChannelKey, Error, Hub, Message, TimelineKind,
    engine::{Engine, History, PublishRequest, Published},
    registry::Watch,
    subscription::Owner,
};
use expander::Expander;
use payload::ShardPayload;

/// The shard of `user` on `site`, out of `shards`. Apps and load balancers
/// compute the same (`crc32("<site>:<user>") % shards`); `key` is scratch.
pub fn shard_of(site: &str, user: &str, shards: u32, key: &mut String) -> u32 {
    key.clear();
    let _ = write!(key, "{site}:{user}");
    crc32fast::hash(key.as_bytes()) % shards.max(1)
}

/// The longest user id a timeline accepts, in bytes.
pub const MAX_USER_ID_LEN: usize = 100;

/// Whether `id` can be a user id: 1 to [`MAX_USER_ID_LEN`] channel-name
/// characters, so that `user:<id>` is a valid channel.
pub fn is_user_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_USER_ID_LEN && id.chars().all(crate::channel::is_channel_char)
}

/// The internal channel of shard `shard` of `site`.
pub(crate) fn shard_channel(site: &str, shard: u32) -> ChannelKey {
    ChannelKey::internal(site, &format!("~t:{shard}"))
}

/// What a delivery did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryReport {
    /// Distinct recipients.
    pub recipients: usize,
    /// Shards touched.
    pub shards: usize,
    /// Shard messages published now.
    pub messages: usize,
    /// Shard messages skipped: their idempotency key had delivered them.
    pub duplicates: usize,
}

/// How a node's timelines are set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimelineSettings {
    /// Timeline shards (`S`); the same on every node.
    pub shards: u32,
    /// Shard messages of one site that may wait for this node's expander.
    pub expander_queue_per_site: usize,
}

impl Default for TimelineSettings {
    fn default() -> Self {
        Self {
            shards: 1024,
            expander_queue_per_site: DEFAULT_EXPANDER_QUEUE_PER_SITE,
        }
    }
}

/// Shard messages published per engine call: each call's await lets other
/// requests run between chunks of a big delivery.
const PUBLISH_CHUNK: usize = 64;

/// The timeline side of a node: its shard count, the expander, and which
/// shards local subscribers need.
pub(crate) struct Timelines {
    shards: u32,
    hub: Hub,
    expander: Arc<Expander>,
    /// Which shards local timelines need.
    interests: Mutex<Interests>,
}

/// Shard channel → the interest local timelines share in it.
#[derive(Default)]
struct Interests {
    by_shard: HashMap<ChannelKey, Weak<Owner>>,
    /// Sweep dead entries when the map reaches this size.
    sweep_at: usize,
}

impl Timelines {
    /// Starts the expander on the current runtime.
    pub fn start(hub: Hub, settings: TimelineSettings, metrics: &crate::Metrics) -> Self {
        let shards = settings.shards.max(1);
        let expander = Arc::new(Expander::new(
            settings.expander_queue_per_site,
            shards,
            metrics.timeline_dropped.clone(),
            metrics.timeline_gaps.clone(),
        ));
        tokio::spawn(
            expander
                .clone()
                .run(hub.clone(), metrics.timeline_expanded.clone()),
        );
        Self {
            shards,
            hub,
            expander,
            interests: Mutex::new(Interests::default()),
        }
    }

    pub fn shards(&self) -> u32 {
        self.shards
    }

    fn shard_channel_of(&self, channel: &ChannelKey) -> Option<ChannelKey> {
        let (_, user) = channel.timeline()?;
        let shard = shard_of(channel.site(), user, self.shards, &mut String::new());
        Some(shard_channel(channel.site(), shard))
    }

    /// The interest of timeline `channel` in its shard; `None` for other channels.
    /// Local interest in `channel`'s shard, if `channel` is a timeline:
    /// while it lives, the expander is subscribed to the shard's channel
    /// (and, on Redis, the node to it upstream).
    pub fn interest(&self, channel: &ChannelKey) -> Option<Arc<Owner>> {
        let shard = self.shard_channel_of(channel)?;
        let mut interests = self.interests.lock();
        if let Some(interest) = interests.by_shard.get(&shard).and_then(Weak::upgrade) {
            return Some(interest);
        }
        let slot = shard_slot(&shard);
        // The engine hears about the shard's channel: one upstream
        // subscription per shard per node, however many timelines need it.
        let registration =
            self.hub
                .subscribe(shard.clone(), self.expander.clone(), slot, Watch::Yes);
        let interest = Owner::shard(self.hub.clone(), registration);
        interests.by_shard.insert(shard, Arc::downgrade(&interest));
        // Entries of shards nobody needs any more go now and then.
        // Entries whose interest is gone are swept once the map has doubled
        // since the last sweep: amortised, however many shards of however
        // many sites are live.
        if interests.by_shard.len() >= interests.sweep_at.max(2 * self.shards as usize) {
            interests.by_shard.retain(|_, weak| weak.strong_count() > 0);
            interests.sweep_at = 2 * interests.by_shard.len();
        }
        Some(interest)
    }

    /// A publish to a timeline channel, as a delivery to its one user.
    pub fn to_shard(&self, request: PublishRequest) -> PublishRequest {
        let Some((kind, user)) = request.channel.timeline() else {
            return request;
        };
        let Some(shard) = self.shard_channel_of(&request.channel) else {
            return request;
        };
        PublishRequest {
            data: payload::encode(kind, user.as_bytes(), &request.data),
            channel: shard,
            dedupe: request.dedupe,
        }
    }

    /// The channel whose positions `channel` has: a timeline's shard, any
    /// other channel itself.
    pub fn source_of(&self, channel: &ChannelKey) -> ChannelKey {
        self.shard_channel_of(channel)
            .unwrap_or_else(|| channel.clone())
    }

    /// The history of timeline `channel`: its shard's, with only the
    /// messages for its user, as messages of the timeline.
    pub async fn history(
        &self,
        engine: &dyn Engine,
        channel: &ChannelKey,
        since: Option<crate::Position>,
    ) -> Result<History, Error> {
        let Some(shard) = self.shard_channel_of(channel) else {
            return engine.history(channel, since).await;
        };
        let Some((kind, user)) = channel.timeline() else {
            return engine.history(channel, since).await;
        };
        let mut history = engine.history(&shard, since).await?;
        history.messages = history
            .messages
            .iter()
            .filter_map(|message| {
                let payload = ShardPayload::decode(&message.data)?;
                (payload.kind == kind && payload.includes(user)).then(|| {
                    let data = payload.data(&message.data);
                    Arc::new(Message::new(channel.clone(), message.position, data))
                })
            })
            .collect();
        Ok(history)
    }

    /// Publishes one shard message per group, in chunks.
    pub async fn deliver(
        &self,
        engine: &dyn Engine,
        site: &str,
        kind: TimelineKind,
        groups: Vec<ShardGroup>,
        data: Bytes,
        dedupe: Option<Arc<str>>,
    ) -> Result<DeliveryReport, Error> {
        let mut report = DeliveryReport {
            recipients: groups.iter().map(|g| g.count).sum(),
            shards: groups.len(),
            ..DeliveryReport::default()
        };
        let mut groups = groups.into_iter().peekable();
        while groups.peek().is_some() {
            let chunk: Vec<PublishRequest> = groups
                .by_ref()
                .take(PUBLISH_CHUNK)
                .map(|group| PublishRequest {
                    channel: shard_channel(site, group.shard),
                    data: payload::encode(kind, &group.ids, &data),
                    dedupe: dedupe.clone(),
                })
                .collect();
            let published: Vec<Published> = engine.publish(chunk).await?;
            for p in published {
                if p.duplicate {
                    report.duplicates += 1;
                } else {
                    report.messages += 1;
                }
            }
            // The memory engine's publish is often ready at once: give the
            // runtime back between chunks, or a big delivery holds a worker
            // thread from its first shard to its last.
            tokio::task::yield_now().await;
        }
        Ok(report)
    }
}

/// The expander's slot for a shard channel: its shard number, for logs.
fn shard_slot(shard: &ChannelKey) -> u32 {
    shard
        .name()
        .rsplit(':')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_stable_and_match_the_documented_function() {
        // crc32("social:42"), as PHP's crc32() and zlib compute it.
        let mut key = String::new();
        assert_eq!(shard_of("social", "42", u32::MAX, &mut key), 0x3cea_8534);
        assert_eq!(shard_of("social", "42", 1024, &mut key), 0x3cea_8534 % 1024);
        let spread: std::collections::HashSet<u32> = (0..10_000)
            .map(|u| shard_of("s", &u.to_string(), 1024, &mut key))
            .collect();
        assert!(spread.len() > 1000, "{}", spread.len());
    }
}
