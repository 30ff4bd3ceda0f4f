//! A subscriber's interest in one channel, as the fan-out facade hands it
//! out: its place in the hub, and for a timeline channel the interest in
//! the timeline's shard that feeds it. Dropping it unsubscribes from both,
//! the hub first.
//!
//! Invariant: a subscription is four words, because every connection holds
//! one per channel, next to its position, in a slot jemalloc rounds up to
//! its class (48 bytes; one word more is the 64-byte class). So it does not
//! hold a hub handle and a shard interest of its own: it holds one shared
//! [`Owner`], which is the hub's for an ordinary channel (one per
//! [`Fanout`](crate::Fanout)) and the shard's for a timeline.

use std::sync::Arc;

use crate::{
    ChannelKey, Engine, Hub, presence,
    registry::{Registration, Watch},
};

pub struct Subscription {
    /// The channel, sharing the hub's key.
    channel: ChannelKey,
    /// The subscriber's key in the channel's slab (slab keys stay far below 2^32).
    key: u32,
    /// What the subscription leaves through, shared with others.
    owner: Arc<Owner>,
}

/// What subscriptions leave the hub through: the hub, and for timelines the
/// interest in their shard, which lasts while any of them does.
pub(crate) struct Owner {
    hub: Hub,
    /// While a timeline is subscribed, the node listens to its shard:
    /// the expander's registration on the shard's channel.
    shard: Option<Registration>,
    /// The engine that keeps presence channels' members: a subscription
    /// to one ends its connection's membership when it is dropped. None
    /// for timelines, which are never presence channels.
    presence: Option<Arc<dyn Engine>>,
}

impl Owner {
    /// The owner of every ordinary channel's subscriptions.
    pub(crate) fn channels(hub: Hub, engine: Arc<dyn Engine>) -> Arc<Self> {
        Arc::new(Self {
            hub,
            shard: None,
            presence: Some(engine),
        })
    }

    /// The owner of the subscriptions to timelines that `shard` feeds.
    pub(crate) fn shard(hub: Hub, shard: Registration) -> Arc<Self> {
        Arc::new(Self {
            hub,
            shard: Some(shard),
            presence: None,
        })
    }

    /// Whether the engine hears about these subscriptions' channels: not
    /// about timelines, which it feeds through their shard.
    pub(crate) fn watch(&self) -> Watch {
        match self.shard {
            Some(_) => Watch::No,
            None => Watch::Yes,
        }
    }

    pub(crate) fn hub(&self) -> &Hub {
        &self.hub
    }
}

impl Subscription {
    pub(crate) fn new(channel: ChannelKey, key: u32, owner: Arc<Owner>) -> Self {
        Self {
            channel,
            key,
            owner,
        }
    }

    pub fn channel(&self) -> &ChannelKey {
        &self.channel
    }
}

impl Drop for Subscription {
    /// Leaves the hub first, then a presence channel's members; the owner
    /// (and with the last timeline of a shard, the shard's interest) goes
    /// after, with the fields.
    fn drop(&mut self) {
        let owner = &self.owner;
        let connection = owner
            .hub
            .unregister(&self.channel, self.key as usize, owner.watch());
        if let (Some(engine), Some(connection)) = (&owner.presence, connection)
            && presence::is_presence(self.channel.name())
        {
            engine.presence_leave(&self.channel, connection);
        }
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("channel", self.channel())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    /// See the invariant at the top of this file.
    #[test]
    fn a_subscription_is_four_words() {
        let size = std::mem::size_of::<super::Subscription>();
        assert!(size <= 32, "a subscription is {size} bytes");
    }
}
