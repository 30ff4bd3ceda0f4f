//! The subscription manager: one task per node that keeps the node's
//! upstream subscriptions equal to the channels it has local subscribers
//! for, batching the commands, and letting go of a channel only after it
//! stayed unwanted for the linger time.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use fred::interfaces::PubsubInterface;

use super::RedisEngine;
use crate::ChannelKey;

/// Channels per SUBSCRIBE / UNSUBSCRIBE command.
const BATCH: usize = 500;
/// Pause before trying again after Redis refused a (un)subscribe.
const RETRY: Duration = Duration::from_millis(200);

pub(super) async fn run(engine: Arc<RedisEngine>) {
    loop {
        let changed = engine.channels.changed.notified();
        let plan = engine.channels.plan(engine.config.linger);
        let mut failed = false;
        for batch in engine.batches(plan.subscribe) {
            // Subscribed first, position read second: whatever is published
            // after the position arrives live.
            let subscribed = match engine.upstream(&batch, true).await {
                Ok(()) => engine.positions(&batch).await,
                Err(error) => Err(crate::Error::Unavailable(error.to_string())),
            };
            match subscribed {
                Ok(positions) => {
                    let batch: Vec<_> = batch.into_iter().zip(positions).collect();
                    engine.channels.mark_active(&batch);
                }
                Err(error) => {
                    tracing::warn!(%error, channels = batch.len(), "Redis subscribe failed; retrying");
                    failed = true;
                }
            }
        }
        for batch in engine.batches(plan.unsubscribe) {
            match engine.upstream(&batch, false).await {
                Ok(()) => engine.channels.mark_inactive(&batch),
                Err(error) => {
                    tracing::warn!(%error, channels = batch.len(), "Redis unsubscribe failed; retrying");
                    engine.channels.restore_active(&batch);
                    failed = true;
                }
            }
        }
        let wait = if failed {
            Some(RETRY)
        } else {
            plan.next_deadline
                .map(|due| due.saturating_duration_since(std::time::Instant::now()))
        };
        match wait {
            Some(wait) => {
                let _ = tokio::time::timeout(wait, changed).await;
            }
            None => changed.await,
        }
    }
}

impl RedisEngine {
    /// Groups channels into commands: by partition on a cluster (one
    /// `SSUBSCRIBE` may only name channels of one slot), in batches of
    /// [`BATCH`] everywhere.
    fn batches(&self, channels: Vec<ChannelKey>) -> Vec<Vec<ChannelKey>> {
        let mut groups: BTreeMap<u16, Vec<ChannelKey>> = BTreeMap::new();
        for channel in channels {
            let key = if self.sharded {
                self.keyspace.partition(channel.as_str())
            } else {
                0
            };
            groups.entry(key).or_default().push(channel);
        }
        groups
            .into_values()
            .flat_map(|group| {
                group
                    .chunks(BATCH)
                    .map(<[ChannelKey]>::to_vec)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    async fn upstream(
        &self,
        channels: &[ChannelKey],
        subscribe: bool,
    ) -> Result<(), fred::error::Error> {
        let names: Vec<String> = channels
            .iter()
            .map(|c| self.keyspace.keys(c).pubsub)
            .collect();
        match (self.sharded, subscribe) {
            (false, true) => self.subscriber.subscribe(names).await,
            (false, false) => self.subscriber.unsubscribe(names).await,
            (true, true) => self.subscriber.ssubscribe(names).await,
            (true, false) => self.subscriber.sunsubscribe(names).await,
        }
    }
}
