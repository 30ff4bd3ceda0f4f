//! One connection's subscriptions, and the recovery rule they follow.
//!
//! Recovery without gap or duplicate: register with the hub first, so live
//! messages start queueing in the outbox; then read history after the
//! client's position and send it; then let live messages through, dropping
//! any whose offset was already sent. Both transports use this file.

use std::{future::Future, sync::Arc};

use fanout::{ChannelName, Error, History, Message, Position, Subscription};

use crate::{Context, outbox::Outbox};

/// The subscriptions of one connection, indexed by slot. Messages in the
/// outbox carry their slot, so finding the subscription is an index.
#[derive(Default)]
pub(crate) struct Subscriptions {
    slots: Vec<Option<Sub>>,
}

struct Sub {
    /// Last position sent to the client on this channel.
    position: Position,
    /// The registration with the hub; dropping it unsubscribes.
    guard: Subscription,
}

/// A subscription registered with the hub, with the history read after it.
pub(crate) struct Opened {
    pub slot: u32,
    pub guard: Subscription,
    pub history: History,
    pub since: Option<Position>,
}

impl Opened {
    /// The position to announce in `subscribed`: the client's own when its
    /// gap is replayed, else the channel's current one.
    pub fn announced(&self) -> Position {
        match self.since {
            Some(since) if self.history.recovered => since,
            _ => self.history.position,
        }
    }

    /// The messages to replay after `subscribed`.
    pub fn replay(&self) -> &[Arc<Message>] {
        if self.history.recovered {
            &self.history.messages
        } else {
            &[]
        }
    }
}

/// Registers `outbox` for `channel` in `slot`, then reads the history after `since`.
pub(crate) fn open(
    context: &Context,
    outbox: &Arc<Outbox>,
    slot: u32,
    channel: ChannelName,
    since: Option<Position>,
) -> impl Future<Output = Result<Opened, Error>> + Send + 'static {
    let fanout = context.fanout().clone();
    let subscriber = outbox.clone();
    async move {
        let guard = fanout.subscribe(channel, subscriber, slot);
        let history = fanout.history(guard.channel(), since).await?;
        Ok(Opened {
            slot,
            guard,
            history,
            since,
        })
    }
}

impl Subscriptions {
    pub fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    pub fn find(&self, channel: &ChannelName) -> Option<u32> {
        self.slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|sub| sub.guard.channel() == channel))
            .map(|i| i as u32)
    }

    /// The slot the next subscription will take.
    pub fn free_slot(&self) -> u32 {
        self.slots
            .iter()
            .position(Option::is_none)
            .unwrap_or(self.slots.len()) as u32
    }

    /// Stores an opened subscription; from now on live messages up to the
    /// channel's position at the time of the history read are dropped.
    pub fn put(&mut self, opened: Opened) {
        let slot = opened.slot as usize;
        if slot == self.slots.len() {
            // Grow one at a time: most connections hold one or two channels.
            self.slots.reserve_exact(1);
            self.slots.push(None);
        }
        self.slots[slot] = Some(Sub {
            position: opened.history.position,
            guard: opened.guard,
        });
    }

    pub fn remove(&mut self, channel: &ChannelName) -> bool {
        match self.find(channel) {
            Some(slot) => {
                self.slots[slot as usize] = None;
                while self.slots.last().is_some_and(Option::is_none) {
                    self.slots.pop();
                }
                true
            }
            None => false,
        }
    }

    /// Decides whether a live message goes to the client: not if its slot was
    /// given up (or reused by another channel), and not if its offset was
    /// already sent. Records it as sent otherwise.
    pub fn accept(&mut self, slot: u32, message: &Message) -> bool {
        let Some(Some(sub)) = self.slots.get_mut(slot as usize) else {
            return false;
        };
        if sub.guard.channel() != &message.channel {
            return false;
        }
        let position = message.position;
        if position.epoch == sub.position.epoch && position.offset <= sub.position.offset {
            return false;
        }
        sub.position = position;
        true
    }

    /// The last positions sent, in slot order (SSE cursors).
    pub fn positions(&self) -> impl Iterator<Item = Position> + '_ {
        self.slots.iter().flatten().map(|sub| sub.position)
    }
}
