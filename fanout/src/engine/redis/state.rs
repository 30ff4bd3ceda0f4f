//! What the Redis engine knows of each channel that has (or recently had)
//! local subscribers: whether it is wanted, whether it is subscribed
//! upstream, and the last position the router delivered.

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::{ChannelKey, Error, Position};

const SHARDS: usize = 16;

#[derive(Default)]
pub(crate) struct ChannelTable {
    shards: [Mutex<HashMap<ChannelKey, ChannelState>>; SHARDS],
    hasher: RandomState,
    /// Wakes the subscription manager: something is wanted or unwanted.
    pub changed: Notify,
    /// Wakes history reads waiting for their channel to be live upstream.
    activated: Notify,
}

#[derive(Debug)]
struct ChannelState {
    /// Whether the channel has local subscribers now.
    local: bool,
    /// When the last local subscriber left.
    idle_since: Option<Instant>,
    /// Whether the node is subscribed to the channel upstream (and history
    /// reads may go ahead).
    active: bool,
    /// Whether an upstream unsubscribe is on its way.
    leaving: bool,
    /// The last position delivered to local subscribers (or read by one).
    last: Option<Position>,
}

/// What the router should do with a live message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Live {
    /// Nobody here listens to the channel (any more).
    NotWatched,
    /// The next message: deliver it.
    Deliver,
    /// Already delivered.
    Duplicate,
    /// Messages are missing after `last`: fill from history first.
    Gap { last: Position },
}

/// What the subscription manager should do now.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub subscribe: Vec<ChannelKey>,
    pub unsubscribe: Vec<ChannelKey>,
    /// When the next lingering channel is due.
    pub next_deadline: Option<Instant>,
}

impl ChannelTable {
    fn shard(&self, channel: &str) -> &Mutex<HashMap<ChannelKey, ChannelState>> {
        &self.shards[self.hasher.hash_one(channel) as usize % SHARDS]
    }

    pub fn set_local(&self, channel: &ChannelKey, local: bool) {
        {
            let mut shard = self.shard(channel.as_str()).lock();
            let state = shard.entry(channel.clone()).or_insert(ChannelState {
                local,
                idle_since: None,
                active: false,
                leaving: false,
                last: None,
            });
            state.local = local;
            state.idle_since = (!local).then(Instant::now);
        }
        self.changed.notify_one();
    }

    /// Waits until a locally watched channel is subscribed upstream.
    /// Channels nobody here watches (an API history read) need not wait.
    pub async fn wait_active(&self, channel: &ChannelKey, timeout: Duration) -> Result<(), Error> {
        let wait = async {
            loop {
                let activated = self.activated.notified();
                let ready = self
                    .shard(channel.as_str())
                    .lock()
                    .get(channel.as_str())
                    .is_none_or(|s| !s.local || s.active);
                if ready {
                    return;
                }
                activated.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.map_err(|_| {
            Error::Unavailable(format!(
                "could not subscribe to {} in Redis in time",
                channel.name()
            ))
        })
    }

    /// Classifies a live message and, when it is to be delivered, records it.
    pub fn live(&self, channel: &ChannelKey, position: Position) -> Live {
        let mut shard = self.shard(channel.as_str()).lock();
        let Some(state) = shard.get_mut(channel.as_str()) else {
            return Live::NotWatched;
        };
        match state.last {
            Some(last) if last.epoch == position.epoch => {
                if position.offset <= last.offset {
                    Live::Duplicate
                } else if position.offset > last.offset + 1 {
                    Live::Gap { last }
                } else {
                    state.last = Some(position);
                    Live::Deliver
                }
            }
            // A new epoch (the history was lost) that began before this
            // message: its first messages come from history, so that
            // clients, told `recovered: false`, miss nothing after it.
            Some(last) if position.offset > 1 => Live::Gap { last },
            // The first message heard, or the first of a new epoch:
            // sessions tell their clients `recovered: false`.
            _ => {
                state.last = Some(position);
                Live::Deliver
            }
        }
    }

    /// The last position delivered on `channel` (or read by a local
    /// subscriber), if the channel is watched here.
    pub fn last(&self, channel: &ChannelKey) -> Option<Position> {
        self.shard(channel.as_str())
            .lock()
            .get(channel.as_str())
            .and_then(|state| state.last)
    }

    /// Records that everything up to `position` was delivered.
    pub fn delivered(&self, channel: &ChannelKey, position: Position) {
        if let Some(state) = self
            .shard(channel.as_str())
            .lock()
            .get_mut(channel.as_str())
        {
            state.last = Some(position);
        }
    }

    /// Channels subscribed upstream, with their last delivered position.
    pub fn active(&self) -> Vec<(ChannelKey, Option<Position>)> {
        let mut out = Vec::new();
        for shard in &self.shards {
            for (channel, state) in shard.lock().iter() {
                if state.active {
                    out.push((channel.clone(), state.last));
                }
            }
        }
        out
    }

    /// Works out what to subscribe and unsubscribe upstream (marking the
    /// latter inactive at once), and forgets channels that are neither
    /// wanted nor subscribed nor on their way out.
    pub fn plan(&self, linger: Duration) -> Plan {
        let now = Instant::now();
        let mut plan = Plan::default();
        for shard in &self.shards {
            shard.lock().retain(|channel, state| {
                if state.local && !state.active && !state.leaving {
                    plan.subscribe.push(channel.clone());
                } else if !state.local && state.active {
                    let due = state.idle_since.unwrap_or(now) + linger;
                    if due <= now {
                        // No longer active from now on: a subscriber arriving
                        // while the unsubscribe is on its way must wait for
                        // the next subscribe, not read history and then miss
                        // what is published before the node subscribes again.
                        state.active = false;
                        state.leaving = true;
                        state.last = None;
                        plan.unsubscribe.push(channel.clone());
                    } else {
                        plan.next_deadline = Some(plan.next_deadline.map_or(due, |d| d.min(due)));
                    }
                }
                state.local || state.active || state.leaving
            });
        }
        plan
    }

    /// Records channels as subscribed upstream, each with its position
    /// read right after the subscription took effect: everything after it
    /// arrives live, so the router can tell a gap from the first message on.
    /// History reads wait for this, so no subscriber reads history from
    /// before the position the router starts from.
    pub fn mark_active(&self, channels: &[(ChannelKey, Option<Position>)]) {
        for (channel, position) in channels {
            let mut shard = self.shard(channel.as_str()).lock();
            // A channel forgotten while its subscribe was on the way is
            // subscribed all the same: record it, so that it is let go of
            // after the linger instead of staying subscribed for ever.
            let state = shard.entry(channel.clone()).or_insert(ChannelState {
                local: false,
                idle_since: Some(Instant::now()),
                active: false,
                leaving: false,
                last: None,
            });
            state.active = true;
            state.leaving = false;
            state.last = *position;
        }
        self.activated.notify_waiters();
        self.changed.notify_one();
    }

    /// An unsubscribe that failed: the channels are still subscribed upstream.
    pub fn restore_active(&self, channels: &[ChannelKey]) {
        for channel in channels {
            let mut shard = self.shard(channel.as_str()).lock();
            if let Some(state) = shard.get_mut(channel.as_str()) {
                state.active = true;
                state.leaving = false;
            }
        }
        self.activated.notify_waiters();
    }

    /// After an upstream unsubscribe: forget the channels still unwanted;
    /// wanted-again ones get subscribed on the next round.
    pub fn mark_inactive(&self, channels: &[ChannelKey]) {
        for channel in channels {
            let mut shard = self.shard(channel.as_str()).lock();
            if let Some(state) = shard.get_mut(channel.as_str()) {
                state.leaving = false;
                if !state.local && !state.active {
                    shard.remove(channel.as_str());
                }
            }
        }
        self.changed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Epoch;

    fn channel(name: &str) -> ChannelKey {
        ChannelKey::parse(&format!("s/{name}")).unwrap()
    }

    #[test]
    fn plans_subscribe_and_lingering_unsubscribe() {
        let table = ChannelTable::default();
        table.set_local(&channel("a"), true);
        let plan = table.plan(Duration::from_secs(60));
        assert_eq!(plan.subscribe, vec![channel("a")]);
        table.mark_active(&[(channel("a"), None)]);
        table.set_local(&channel("a"), false);
        let plan = table.plan(Duration::from_secs(60));
        assert!(plan.unsubscribe.is_empty(), "lingers");
        assert!(plan.next_deadline.is_some());
        let plan = table.plan(Duration::ZERO);
        assert_eq!(plan.unsubscribe, vec![channel("a")]);
        table.mark_inactive(&plan.unsubscribe);
        assert!(table.active().is_empty());
    }

    #[test]
    fn a_channel_wanted_again_while_leaving_waits_for_the_unsubscribe() {
        let table = ChannelTable::default();
        let a = channel("a");
        table.set_local(&a, true);
        table.mark_active(&[(a.clone(), None)]);
        table.set_local(&a, false);
        let plan = table.plan(Duration::ZERO);
        assert_eq!(plan.unsubscribe, vec![a.clone()]);
        // Wanted again while the unsubscribe is on its way: no history read
        // may go ahead (inactive), and no second subscribe is planned yet.
        table.set_local(&a, true);
        assert!(table.active().is_empty());
        assert!(table.plan(Duration::ZERO).subscribe.is_empty());
        // Once the unsubscribe is done, the next round subscribes again.
        table.mark_inactive(std::slice::from_ref(&a));
        assert_eq!(table.plan(Duration::ZERO).subscribe, vec![a]);
    }

    #[test]
    fn live_messages_are_classified() {
        let table = ChannelTable::default();
        let a = channel("a");
        let e = Epoch::from_u64(1);
        let at = |offset| Position { epoch: e, offset };
        assert_eq!(table.live(&a, at(1)), Live::NotWatched);
        table.set_local(&a, true);
        table.mark_active(&[(a.clone(), Some(at(3)))]);
        assert_eq!(table.live(&a, at(3)), Live::Duplicate);
        assert_eq!(table.live(&a, at(4)), Live::Deliver);
        assert_eq!(table.live(&a, at(7)), Live::Gap { last: at(4) });
        table.delivered(&a, at(7));
        assert_eq!(table.live(&a, at(8)), Live::Deliver);
        let reset = Position {
            epoch: Epoch::from_u64(2),
            offset: 1,
        };
        assert_eq!(table.live(&a, reset), Live::Deliver);
        // A new epoch first heard past its start is filled from its start.
        let later = Position {
            epoch: Epoch::from_u64(3),
            offset: 4,
        };
        assert_eq!(table.live(&a, later), Live::Gap { last: reset });
        assert_eq!(table.last(&a), Some(reset));
    }
}
