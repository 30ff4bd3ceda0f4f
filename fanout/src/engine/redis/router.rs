//! The router: the one task through which everything from Redis reaches
//! the hub, so that each channel is delivered in offset order with no hole:
//! live messages, gap fills, and the catch-up after a lag or a reconnect.

use std::sync::Arc;

use fred::{interfaces::EventInterface, types::Message as RedisMessage};
use tokio::sync::broadcast::error::RecvError;

use super::{RedisEngine, parse_payload, state::Live};
use crate::{ChannelKey, Message, Position};

/// Tries of a history read that fills a gap, and the pause between them
/// (together longer than a Redis restart takes to load a modest AOF).
const FILL_ATTEMPTS: u32 = 50;
const FILL_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

pub(super) async fn run(engine: Arc<RedisEngine>) {
    let mut messages = engine.subscriber.message_rx();
    let mut reconnects = engine.subscriber.reconnect_rx();
    loop {
        tokio::select! {
            // Reconnects first: after one, nothing is delivered before the catch-up.
            biased;
            reconnect = reconnects.recv() => match reconnect {
                Ok(_) | Err(RecvError::Lagged(_)) => {
                    engine.redis_metrics.reconnects.inc();
                    engine.resubscribe().await;
                    engine.catch_up_all().await;
                }
                Err(RecvError::Closed) => return,
            },
            message = messages.recv() => match message {
                Ok(message) => engine.on_message(message).await,
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "Redis pub/sub receiver lagged; refilling from history");
                    engine.redis_metrics.lagged.inc();
                    engine.catch_up_all().await;
                }
                Err(RecvError::Closed) => return,
            },
        }
    }
}

impl RedisEngine {
    async fn on_message(&self, message: RedisMessage) {
        self.redis_metrics.received.inc();
        let Some(name) = self.keyspace.channel_of(&message.channel) else {
            return;
        };
        let Ok(channel) = ChannelKey::parse(name) else {
            return;
        };
        let Some((position, data)) = message.value.into_bytes().and_then(parse_payload) else {
            tracing::warn!(channel = %channel, "unreadable message on a Herald pub/sub channel");
            return;
        };
        match self.channels.live(&channel, position) {
            Live::NotWatched | Live::Duplicate => {}
            Live::Deliver => self.deliver(Message::new(channel, position, data)),
            Live::Gap { last } => {
                self.redis_metrics.gaps_detected.inc();
                self.fill(&channel, Some(last), Some(position.offset)).await;
                if self.channels.live(&channel, position) != Live::Duplicate {
                    // Filled (or history could not fill it: go on from here
                    // rather than hold the channel back for ever).
                    self.channels.delivered(&channel, position);
                    self.deliver(Message::new(channel, position, data));
                }
            }
        }
    }

    /// Delivers what history holds after `last` (all of it without one),
    /// below `until` if given.
    async fn fill(&self, channel: &ChannelKey, last: Option<Position>, until: Option<u64>) {
        // Connected clients must not see a hole, so a failed read is tried
        // again (Redis may just be coming back) before the gap is given up.
        let mut attempt = 0;
        let read = loop {
            match self
                .read(channel, self.keyspace.keys(channel), last.map(|l| l.offset))
                .await
            {
                Ok(read) => break read,
                Err(error) if attempt < FILL_ATTEMPTS => {
                    attempt += 1;
                    tracing::debug!(channel = %channel, %error, attempt, "history read for a gap failed; retrying");
                    tokio::time::sleep(FILL_RETRY).await;
                }
                Err(error) => {
                    tracing::error!(channel = %channel, %error, "cannot read history to fill a gap; clients miss messages");
                    return;
                }
            }
        };
        let same_epoch = last.is_some_and(|last| read.position.epoch == last.epoch);
        let messages = if same_epoch || last.is_none() {
            read.messages
        } else {
            // The epoch changed while we were away: the old history is gone.
            // Hand over the new epoch's history from its start.
            match self.read(channel, self.keyspace.keys(channel), None).await {
                Ok(read) => read.messages,
                Err(_) => return,
            }
        };
        let mut after = match last {
            Some(last) if same_epoch => last.offset,
            _ => 0,
        };
        for message in messages {
            let offset = message.offset();
            if offset <= after || (same_epoch && until.is_some_and(|until| offset >= until)) {
                continue;
            }
            if offset != after + 1 {
                tracing::warn!(
                    channel = %channel,
                    missing_from = after + 1,
                    missing_to = offset - 1,
                    "history no longer holds messages a gap needs"
                );
            }
            after = offset;
            self.channels.delivered(channel, message.position);
            self.redis_metrics.gap_messages_filled.inc();
            self.hub.deliver(&message);
        }
    }

    /// After a lag or a reconnect: every subscribed channel gets what it
    /// missed from history.
    async fn catch_up_all(&self) {
        // A channel with no position yet had no message when this node
        // subscribed and none delivered since: all its history is new here
        // (timeline shards are often such channels).
        for (channel, last) in self.channels.active() {
            self.fill(&channel, last, None).await;
        }
    }

    /// Subscribes again to every channel after the pub/sub connection came
    /// back, retrying until Redis takes it.
    async fn resubscribe(&self) {
        loop {
            match self.subscriber.resubscribe_all().await {
                Ok(()) => {
                    self.redis_metrics.resubscribes.inc();
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, "resubscribing to Redis failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            }
        }
    }
}
