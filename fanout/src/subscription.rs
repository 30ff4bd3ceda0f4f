//! A subscriber's interest in one channel, as the fan-out facade hands it
//! out: its place in the hub, and for a timeline channel the interest in
//! the timeline's shard that feeds it. Dropping it unsubscribes from both,
//! the hub first.

use std::sync::Arc;

use crate::{ChannelKey, registry::Registration, timeline::ShardInterest};

pub struct Subscription {
    /// Declared first: fields drop in order, so the timeline leaves the hub
    /// before its shard interest may go.
    registration: Registration,
    /// While a timeline is subscribed, the node listens to its shard.
    _shard: Option<Arc<ShardInterest>>,
}

impl Subscription {
    pub(crate) fn new(registration: Registration, shard: Option<Arc<ShardInterest>>) -> Self {
        Self {
            registration,
            _shard: shard,
        }
    }

    pub fn channel(&self) -> &ChannelKey {
        self.registration.channel()
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("channel", self.channel())
            .finish_non_exhaustive()
    }
}
