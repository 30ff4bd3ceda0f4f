//! Whether a channel has subscribers on any node, for the sites that want
//! `channel_occupied` / `channel_vacated` told (`events.rs`).
//!
//! Each node marks itself in the channel's occupancy hash when it gets the
//! channel's first local subscriber and unmarks itself when the last one
//! leaves (`occupancy` in `scripts.rs`); the node whose mark made the hash
//! non-empty raises `Occupied`, the one whose unmark emptied it `Vacated`.
//! The marks of one node go to Redis one at a time, in the order the hub
//! saw them, from one task: a channel that empties and fills again at once
//! is never left unmarked. A node's marks are counted in its index like its
//! presence members, so that a dead node's are taken out (and the channels
//! it alone occupied vacated) when it is reaped (`presence.rs`). Sites that
//! want no events cost nothing here.

use std::sync::Weak;

use fred::types::Value;
use tokio::sync::mpsc;

use super::RedisEngine;
use crate::{ChannelKey, Error, events::ChannelEvent};

/// What the hub said of a channel on this node: its first subscriber
/// (`true`) or its last one gone (`false`).
pub(super) type Mark = (ChannelKey, bool);

impl RedisEngine {
    /// Queues a mark for the occupancy task, when the channel's site wants
    /// channel events. Called with a hub lock held: it only queues.
    pub(super) fn mark_occupancy(&self, channel: &ChannelKey, occupied: bool) {
        if self.hub.events_for(channel).is_some() {
            let _ = self.occupancy_marks.send((channel.clone(), occupied));
        }
    }

    async fn apply_mark(&self, channel: &ChannelKey, occupied: bool) -> Result<(), Error> {
        if occupied {
            self.count_index(channel, 1).await?;
        }
        let args = vec![
            Value::from(self.presence.node.as_str()),
            Value::from(if occupied { "1" } else { "0" }),
        ];
        let keys = vec![self.keyspace.occupancy(channel)];
        let changed = self
            .call_function(&self.library.occupancy, keys, args)
            .await?
            .as_i64();
        if !occupied {
            self.count_index(channel, -1).await?;
        }
        let event = match changed {
            Some(1) => ChannelEvent::Occupied,
            Some(2) => ChannelEvent::Vacated,
            _ => return Ok(()),
        };
        if let Some(events) = self.hub.events_for(channel) {
            events.event(channel, event);
        }
        Ok(())
    }
}

/// Applies the marks in order for as long as the engine lives. A mark that
/// Redis did not take is tried again after a pause, before the next one.
pub(super) async fn run(engine: Weak<RedisEngine>, mut marks: mpsc::UnboundedReceiver<Mark>) {
    while let Some((channel, occupied)) = marks.recv().await {
        loop {
            let Some(engine) = engine.upgrade() else {
                return;
            };
            match engine.apply_mark(&channel, occupied).await {
                Ok(()) => break,
                Err(error) => {
                    tracing::debug!(%channel, %error, "occupancy not recorded; trying again");
                    drop(engine);
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            }
        }
    }
}
