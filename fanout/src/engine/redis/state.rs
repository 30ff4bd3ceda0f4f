//! What the Redis engine knows of each channel that has (or recently had)
//! local subscribers: whether it is wanted, whether it is subscribed
//! upstream, and the last position the router delivered.
//!
//! Invariants:
//! - `active` means Redis confirmed the subscription on the pub/sub
//!   connection that is up now. Losing that connection makes every channel
//!   inactive at once ([`ChannelTable::lose_upstream`]); a confirmation that
//!   was on its way from the lost connection is ignored (the connection
//!   generation changed under it).
//! - A channel subscribed again after such a loss keeps its last delivered
//!   position and is caught up from history by the router, so its local
//!   subscribers see no hole.
//! - How long a wanted channel has waited for its subscription is what
//!   `/readyz` reports on ([`ChannelTable::upstream_behind`]).

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    sync::atomic::{AtomicU64, Ordering},
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
    /// Wakes the router: channels subscribed again wait for their catch-up.
    pub catch_up: Notify,
    /// Counts losses of the pub/sub connection, so that a subscription
    /// confirmed on a connection that has since gone is not trusted.
    generation: AtomicU64,
    /// Since when the longest-waiting wanted channel has been waiting for
    /// its upstream subscription (`None`: none waits). Recomputed by every
    /// [`ChannelTable::plan`]; set at once by a connection loss.
    behind_since: Mutex<Option<Instant>>,
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
    /// Since when the channel is wanted here but not subscribed upstream.
    waiting_since: Option<Instant>,
    /// Whether the channel was subscribed when the pub/sub connection was
    /// lost: once subscribed again it keeps `last` and is caught up.
    resubscribe: bool,
    /// Whether the router must catch the channel up from `last`.
    catch_up: bool,
}

impl ChannelState {
    fn new(local: bool) -> Self {
        let now = Instant::now();
        Self {
            local,
            idle_since: (!local).then_some(now),
            active: false,
            leaving: false,
            last: None,
            waiting_since: local.then_some(now),
            resubscribe: false,
            catch_up: false,
        }
    }
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
    /// The channel was subscribed again after a connection loss and awaits
    /// its catch-up: fill from history first (its last position may be
    /// none yet, so a message heard now cannot show a gap by itself).
    Behind,
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
            let state = shard
                .entry(channel.clone())
                .or_insert_with(|| ChannelState::new(local));
            state.local = local;
            state.idle_since = (!local).then(Instant::now);
            if local && !state.active && state.waiting_since.is_none() {
                state.waiting_since = Some(Instant::now());
            }
        }
        self.changed.notify_one();
    }

    /// The current pub/sub connection's generation; pass it back to
    /// [`ChannelTable::mark_active`] with what was subscribed on it.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The pub/sub connection was lost (and perhaps is back already): Redis
    /// forgot every subscription of this node. Every channel becomes
    /// inactive; wanted ones are subscribed again by the subscription
    /// manager and then caught up, lingering ones are let go of.
    pub fn lose_upstream(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        let now = Instant::now();
        let mut any_wanted = false;
        for shard in &self.shards {
            for state in shard.lock().values_mut() {
                if state.active && state.local {
                    state.resubscribe = true;
                    state.waiting_since = Some(now);
                }
                state.active = false;
                state.catch_up = false;
                any_wanted |= state.local;
            }
        }
        if any_wanted {
            let mut behind = self.behind_since.lock();
            *behind = Some(behind.map_or(now, |since| since.min(now)));
        }
        self.changed.notify_one();
    }

    /// Whether a channel wanted here has waited longer than `grace` for its
    /// upstream subscription: the node then misses what is published to it.
    pub fn upstream_behind(&self, grace: Duration) -> bool {
        self.behind_since
            .lock()
            .is_some_and(|since| since.elapsed() > grace)
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
        if state.resubscribe || state.catch_up {
            return Live::Behind;
        }
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

    /// Records a message read from history as delivered if it comes after
    /// the last one delivered (or starts a new epoch); whether it does. A
    /// fill that raced with a fresh subscribe never moves a channel back.
    pub fn advance(&self, channel: &ChannelKey, position: Position) -> bool {
        let mut shard = self.shard(channel.as_str()).lock();
        let Some(state) = shard.get_mut(channel.as_str()) else {
            return false;
        };
        let after = match state.last {
            Some(last) if last.epoch == position.epoch => position.offset > last.offset,
            _ => true,
        };
        if after {
            state.last = Some(position);
        }
        after
    }

    /// The last position delivered on a watched channel (`Some(None)` when
    /// nothing was yet), or `None` when nobody here watches it.
    pub fn last(&self, channel: &ChannelKey) -> Option<Option<Position>> {
        self.shard(channel.as_str())
            .lock()
            .get(channel.as_str())
            .map(|state| state.last)
    }

    /// The channels subscribed again since the last call, which the router
    /// must catch up from their last delivered position.
    pub fn take_catch_ups(&self) -> Vec<ChannelKey> {
        let mut out = Vec::new();
        for shard in &self.shards {
            for (channel, state) in shard.lock().iter_mut() {
                if std::mem::take(&mut state.catch_up) {
                    out.push(channel.clone());
                }
            }
        }
        out
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
        let mut behind_since: Option<Instant> = None;
        for shard in &self.shards {
            shard.lock().retain(|channel, state| {
                if state.local && !state.active {
                    let since = *state.waiting_since.get_or_insert(now);
                    behind_since = Some(behind_since.map_or(since, |b| b.min(since)));
                }
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
        *self.behind_since.lock() = behind_since;
        plan
    }

    /// Records channels as subscribed upstream, each with its position
    /// read right after the subscription took effect: everything after it
    /// arrives live, so the router can tell a gap from the first message on.
    /// History reads wait for this, so no subscriber reads history from
    /// before the position the router starts from.
    ///
    /// A channel subscribed again after a connection loss keeps its last
    /// delivered position instead, and is handed to the router to catch up
    /// from there. Nothing is recorded when the connection `generation`
    /// the subscription was made on is gone: the channels stay wanted and
    /// the next round subscribes them on the new connection.
    pub fn mark_active(&self, channels: &[(ChannelKey, Option<Position>)], generation: u64) {
        if generation != self.generation() {
            self.changed.notify_one();
            return;
        }
        let mut caught_up = false;
        for (channel, position) in channels {
            let mut shard = self.shard(channel.as_str()).lock();
            // A channel forgotten while its subscribe was on the way is
            // subscribed all the same: record it, so that it is let go of
            // after the linger instead of staying subscribed for ever.
            let state = shard
                .entry(channel.clone())
                .or_insert_with(|| ChannelState::new(false));
            state.active = true;
            state.leaving = false;
            state.waiting_since = None;
            if std::mem::take(&mut state.resubscribe) {
                state.catch_up = true;
                caught_up = true;
            } else {
                state.last = *position;
            }
        }
        self.activated.notify_waiters();
        self.changed.notify_one();
        if caught_up {
            self.catch_up.notify_one();
        }
    }

    /// An unsubscribe that failed: the channels are still subscribed
    /// upstream, unless the connection it was tried on is gone.
    pub fn restore_active(&self, channels: &[ChannelKey], generation: u64) {
        let current = generation == self.generation();
        for channel in channels {
            let mut shard = self.shard(channel.as_str()).lock();
            if let Some(state) = shard.get_mut(channel.as_str()) {
                state.active = current;
                state.leaving = false;
            }
        }
        self.activated.notify_waiters();
        self.changed.notify_one();
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
        table.mark_active(&[(channel("a"), None)], table.generation());
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
        table.mark_active(&[(a.clone(), None)], table.generation());
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
        table.mark_active(&[(a.clone(), Some(at(3)))], table.generation());
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
        assert_eq!(table.last(&a), Some(Some(reset)));
    }

    #[test]
    fn a_channel_subscribed_again_is_caught_up_before_live_messages() {
        let table = ChannelTable::default();
        let a = channel("a");
        let at = |offset| Position {
            epoch: Epoch::from_u64(1),
            offset,
        };
        table.set_local(&a, true);
        // Subscribed before anything was published: no position yet.
        table.mark_active(&[(a.clone(), None)], table.generation());
        table.lose_upstream();
        assert!(
            table.active().is_empty(),
            "inactive once the connection is lost"
        );
        assert_eq!(table.plan(Duration::ZERO).subscribe, vec![a.clone()]);
        // A confirmation from the lost connection does not count.
        table.mark_active(&[(a.clone(), Some(at(9)))], table.generation() - 1);
        assert!(table.active().is_empty());
        // Subscribed again: the last position is kept (not the one read
        // now), and a live message waits for the catch-up even though
        // nothing was delivered before (it cannot show the gap itself).
        table.mark_active(&[(a.clone(), Some(at(3)))], table.generation());
        assert_eq!(table.last(&a), Some(None));
        assert_eq!(table.live(&a, at(4)), Live::Behind);
        assert_eq!(table.take_catch_ups(), vec![a.clone()]);
        assert!(table.take_catch_ups().is_empty());
        assert_eq!(table.live(&a, at(4)), Live::Deliver);
    }

    #[test]
    fn readiness_waits_for_wanted_channels_past_a_grace() {
        let table = ChannelTable::default();
        let a = channel("a");
        table.set_local(&a, true);
        table.plan(Duration::ZERO);
        assert!(
            !table.upstream_behind(Duration::from_secs(60)),
            "within the grace"
        );
        assert!(
            table.upstream_behind(Duration::ZERO),
            "wanted, not subscribed"
        );
        table.mark_active(&[(a.clone(), None)], table.generation());
        table.plan(Duration::ZERO);
        assert!(!table.upstream_behind(Duration::ZERO));
        table.lose_upstream();
        assert!(
            table.upstream_behind(Duration::ZERO),
            "at once on a lost connection"
        );
    }
}
