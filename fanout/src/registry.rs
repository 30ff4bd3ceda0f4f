//! The hub: which local subscribers listen to which channel.
//!
//! Invariants:
//! - The registry is split into [`SHARDS`] independently locked maps, so a
//!   publish to one channel never waits on a global lock.
//! - No lock here is held across an `.await`; [`Subscriber::deliver`] only
//!   enqueues and wakes, so holding a shard lock while delivering is short.
//!   A subscriber that writes to its socket itself does it in
//!   [`Subscriber::flush`], which the hub calls after the shard lock is
//!   released. What `deliver` queued is in the subscriber before
//!   [`Hub::unregister`] can return, so a subscriber that left a channel
//!   never receives from it afterwards: a flush only writes what its own
//!   `deliver` queued under the lock.
//! - A [`Subscription`] removes itself when dropped; a channel with no
//!   subscribers left is removed from the map at once.
//! - The [`ChannelWatcher`] hears "active" and "idle" under the shard lock,
//!   so the two never reach it out of order for one channel. It hears only
//!   about channels registered as [`Watch::Yes`]; which ones those are is
//!   the caller's business (the fan-out facade leaves timelines out).

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    sync::{Arc, OnceLock, Weak},
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use slab::Slab;

use crate::{ChannelKey, Message, Metrics, events::ChannelEvents};

/// Number of registry shards. A power of two well above the core count keeps
/// contention negligible while the empty maps cost about 3 KB in all.
const SHARDS: usize = 64;

/// One registry shard: channel → its local subscribers.
type Shard = Mutex<HashMap<ChannelKey, Slab<Entry>>>;

/// Something that receives messages: in practice, one client connection.
pub trait Subscriber: Send + Sync + 'static {
    /// Hands `message` to the subscriber for its subscription `slot`.
    ///
    /// Called on the publisher's task with registry and history locks held:
    /// it must only enqueue and wake, never block or do I/O. It answers
    /// [`Handoff::Flush`] to have [`Subscriber::flush`] called once those
    /// locks are released.
    fn deliver(&self, slot: u32, message: &Arc<Message>) -> Handoff;

    /// Called after a `deliver` that answered [`Handoff::Flush`], with no
    /// registry lock held (a caller may still hold its channel's log): it
    /// may write what it queued to a socket, without blocking, or, as
    /// `how` asks, leave it to its own task.
    fn flush(&self, _how: Flush) {}

    /// The client connection this subscriber is, where it is one: what a
    /// presence membership is keyed by ([`crate::presence`]).
    fn connection_id(&self) -> Option<u64> {
        None
    }
}

/// How [`Subscriber::flush`] is to pass on what it queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// Write it now, from the caller's thread.
    Write,
    /// Wake the subscriber's own task to write it. The node is busy: by
    /// the time the task runs, later messages have queued too, and go out
    /// in the same write.
    Wake,
}

/// What a subscriber did with a message it was handed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handoff {
    /// Queued (or dropped); nothing more to do.
    Queued,
    /// Queued; call [`Subscriber::flush`] once the locks are released.
    Flush,
}

/// Subscribers that asked to be flushed ([`Handoff::Flush`]), gathered
/// over one or more [`Hub::hand_over`]s, each once. Whatever is not flushed
/// explicitly is handed to its subscriber's task ([`Flush::Wake`]) when
/// this is dropped, so that no subscriber waits for a flush that never
/// comes.
pub struct Flushes(Vec<Arc<dyn Subscriber>>);

thread_local! {
    /// Room for [`Flushes`], reused from batch to batch on each thread.
    static SPARE: std::cell::Cell<Vec<Arc<dyn Subscriber>>> =
        const { std::cell::Cell::new(Vec::new()) };
}

/// [`SPARE`] keeps up to this many entries' room between batches (16 B
/// each); a larger fan-out gives its memory back.
const SPARE_KEPT: usize = 16 * 1024;

/// Flushes [`Flushes::flush_yielding`] does before it lets other tasks run:
/// up to about a millisecond of socket writes.
const FLUSHES_PER_TURN: usize = 64;

/// Time other tasks held the thread, summed over a batch's yields, past
/// which [`Flushes::flush_yielding`] counts the node as busy, provided it
/// is also more than the batch's own writes took. A lone stall of the
/// machine is shorter; a reconnect storm's handshakes are far longer.
const BUSY_AFTER: Duration = Duration::from_millis(1);

impl Flushes {
    pub fn new() -> Self {
        Self(SPARE.take())
    }

    /// Flushes every subscriber gathered.
    pub fn flush(mut self) {
        for subscriber in self.0.drain(..) {
            subscriber.flush(Flush::Write);
        }
    }

    /// [`Flushes::flush`] for a task: other tasks run every
    /// [`FLUSHES_PER_TURN`] flushes (socket writes), so that a fan-out to
    /// many sockets does not hold its worker thread for all of them.
    ///
    /// When those other tasks hold the thread longer than the writes do
    /// (past [`BUSY_AFTER`] in all), the node is busy, with a reconnect
    /// storm's handshakes say, and the rest of the batch is woken at once
    /// ([`Flush::Wake`]) instead of written one by one: woken together and
    /// run late, each connection then gathers every message that reached
    /// it meanwhile into one write, as it would without direct writes.
    pub async fn flush_yielding(mut self) {
        // Popped one by one, so that what is left is still handed to its
        // tasks by the drop if the task is cancelled; in the order handed over.
        self.0.reverse();
        let mut done = 0;
        let mut writing = Duration::ZERO;
        let mut yielded = Duration::ZERO;
        let mut turn = Instant::now();
        while let Some(subscriber) = self.0.pop() {
            subscriber.flush(Flush::Write);
            done += 1;
            if done % FLUSHES_PER_TURN == 0 {
                let yielding = Instant::now();
                writing += yielding - turn;
                tokio::task::yield_now().await;
                turn = Instant::now();
                yielded += turn - yielding;
                if yielded >= BUSY_AFTER && yielded > writing {
                    self.wake_all();
                    return;
                }
            }
        }
    }

    /// Hands every subscriber left to its own task ([`Flush::Wake`]).
    fn wake_all(&mut self) {
        for subscriber in self.0.drain(..) {
            subscriber.flush(Flush::Wake);
        }
    }
}

impl Default for Flushes {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Flushes {
    fn drop(&mut self) {
        // Cancelled, or never flushed: the subscribers' tasks write it.
        self.wake_all();
        let room = std::mem::take(&mut self.0);
        if room.capacity() > 0 && room.capacity() <= SPARE_KEPT {
            SPARE.set(room);
        }
    }
}

/// Told when this node gains its first local subscriber to a channel, or
/// loses its last. A multi-node engine subscribes to and unsubscribes from
/// the channel upstream; the memory engine ignores both.
///
/// Called with a registry shard lock held: record the change and return,
/// without blocking and without touching the hub.
pub trait ChannelWatcher: Send + Sync + 'static {
    fn channel_active(&self, channel: &ChannelKey);
    fn channel_idle(&self, channel: &ChannelKey);
}

/// A cheap, cloneable handle on the subscriber registry.
#[derive(Clone)]
pub struct Hub {
    shared: Arc<Shared>,
}

struct Shared {
    /// The sharded registry: channel → its local subscribers.
    shards: Box<[Shard]>,
    /// Picks a shard for a channel name; random keys so that clients cannot
    /// aim all their channels at one shard.
    hasher: RandomState,
    /// Set once by [`Hub::set_watcher`]; weak so that hub and engine do not
    /// keep each other alive.
    watcher: OnceLock<Weak<dyn ChannelWatcher>>,
    /// Set once by [`Hub::set_events`]: where the engines raise channel
    /// events (`events.rs`).
    events: OnceLock<Arc<dyn ChannelEvents>>,
    metrics: Metrics,
}

struct Entry {
    subscriber: Arc<dyn Subscriber>,
    slot: u32,
}

/// Whether the [`ChannelWatcher`] hears when a channel gains its first
/// local subscriber and loses its last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Watch {
    Yes,
    /// The channel is fed some other way (a timeline, through its shard).
    No,
}

/// One subscriber's place in the registry for one channel. Dropping it
/// unregisters.
pub struct Registration {
    hub: Hub,
    channel: ChannelKey,
    /// The subscriber's key in the channel's slab (slab keys stay far below 2^32).
    key: u32,
    /// Kept so that the last one out tells the watcher what the first one in did.
    watch: Watch,
}

impl Hub {
    pub fn new(metrics: Metrics) -> Self {
        let shards = (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect();
        Self {
            shared: Arc::new(Shared {
                shards,
                hasher: RandomState::new(),
                watcher: OnceLock::new(),
                events: OnceLock::new(),
                metrics,
            }),
        }
    }

    /// Registers the engine (or anything else) that wants to know when
    /// channels become active or idle on this node. Only the first call counts.
    pub fn set_watcher(&self, watcher: Weak<dyn ChannelWatcher>) {
        let _ = self.shared.watcher.set(watcher);
    }

    /// Sets where channel events go (once; later calls are ignored).
    pub fn set_events(&self, events: Arc<dyn ChannelEvents>) {
        let _ = self.shared.events.set(events);
    }

    /// The sink for `channel`'s events, when its site wants them.
    pub(crate) fn events_for(&self, channel: &ChannelKey) -> Option<&dyn ChannelEvents> {
        let events = self.shared.events.get()?;
        events.wants(channel.site()).then_some(&**events)
    }

    /// Adds `subscriber` to `channel`; its messages arrive tagged with `slot`.
    pub fn subscribe(
        &self,
        channel: ChannelKey,
        subscriber: Arc<dyn Subscriber>,
        slot: u32,
        watch: Watch,
    ) -> Registration {
        let (channel, key) = self.register(channel, subscriber, slot, watch);
        Registration {
            hub: self.clone(),
            channel,
            key,
            watch,
        }
    }

    /// Adds `subscriber` to `channel`'s subscribers; returns the channel's
    /// key as the map holds it, and the subscriber's key in its slab. The
    /// caller gives it back with [`Hub::unregister`].
    pub(crate) fn register(
        &self,
        channel: ChannelKey,
        subscriber: Arc<dyn Subscriber>,
        slot: u32,
        watch: Watch,
    ) -> (ChannelKey, u32) {
        let (channel, key) = {
            let mut shard = self.shard(channel.as_str()).lock();
            let entry = shard.entry(channel);
            // The registration shares the map's key: on a channel that
            // already has subscribers, the caller's copy (an allocation of
            // its own) is dropped here instead of living as long as the
            // subscription.
            let channel = entry.key().clone();
            let entries = entry.or_default();
            let first = entries.is_empty();
            let key = entries.insert(Entry { subscriber, slot });
            if first {
                self.shared.metrics.active_channels.inc();
                // Told under the shard lock, so that "active" and "idle" for
                // one channel reach the watcher in the order they happened.
                if watch == Watch::Yes {
                    self.notify(|w| w.channel_active(&channel));
                }
            }
            (channel, key)
        };
        self.shared.metrics.subscriptions.inc();
        (channel, key as u32)
    }

    /// Hands `message` to every local subscriber of its channel and returns
    /// how many there were. The subscribers that asked for it are flushed
    /// before it returns, with the shard lock released.
    pub fn deliver(&self, message: &Arc<Message>) -> usize {
        let mut flushes = Flushes::new();
        let count = self.hand_over(message, &mut flushes);
        flushes.flush();
        count
    }

    /// The locked half of a delivery: every local subscriber of the
    /// message's channel gets it, and those that ask to be flushed are
    /// added to `flushes`. Handing several messages over before one flush
    /// lets a subscriber write them together. Answers how many subscribers
    /// there were.
    pub fn hand_over(&self, message: &Arc<Message>, flushes: &mut Flushes) -> usize {
        let shard = self.shard(message.channel.as_str()).lock();
        let Some(entries) = shard.get(message.channel.as_str()) else {
            return 0;
        };
        for (_, entry) in entries {
            if entry.subscriber.deliver(entry.slot, message) == Handoff::Flush {
                flushes.0.push(entry.subscriber.clone());
            }
        }
        entries.len()
    }

    /// Every channel with local subscribers that `keep` accepts. It locks
    /// each registry shard in turn and visits every channel: for rare,
    /// node-wide work (the timeline expander's overflow), never on the
    /// publish path.
    pub fn channels_where(&self, keep: impl Fn(&ChannelKey) -> bool) -> Vec<ChannelKey> {
        let mut out = Vec::new();
        for shard in &self.shared.shards {
            out.extend(shard.lock().keys().filter(|key| keep(key)).cloned());
        }
        out
    }

    /// The channels `keep` takes, with how many local subscribers each has.
    /// It visits every channel of the node: for rare, operator-driven
    /// listings, never on a publish or delivery path.
    pub fn counts_where(&self, keep: impl Fn(&ChannelKey) -> bool) -> Vec<(ChannelKey, usize)> {
        let mut out = Vec::new();
        for shard in &self.shared.shards {
            let shard = shard.lock();
            out.extend(
                shard
                    .iter()
                    .filter(|(key, _)| keep(key))
                    .map(|(key, entries)| (key.clone(), entries.len())),
            );
        }
        out
    }

    /// The `n` channels `keep` takes with the most local subscribers, most
    /// first. It visits every channel of the node but holds only `n` at a
    /// time: for operator views, never on a publish or delivery path.
    pub fn busiest_where(
        &self,
        n: usize,
        keep: impl Fn(&ChannelKey) -> bool,
    ) -> Vec<(ChannelKey, usize)> {
        use std::{cmp::Reverse, collections::BinaryHeap};
        // A min-heap of the n busiest so far: the least busy is replaced.
        let mut busiest: BinaryHeap<Reverse<(usize, ChannelKey)>> = BinaryHeap::new();
        if n == 0 {
            return Vec::new();
        }
        for shard in &self.shared.shards {
            let shard = shard.lock();
            for (key, entries) in shard.iter() {
                let count = entries.len();
                let beats_least = busiest
                    .peek()
                    .is_none_or(|Reverse((least, _))| count > *least);
                if (busiest.len() < n || beats_least) && keep(key) {
                    busiest.push(Reverse((count, key.clone())));
                    if busiest.len() > n {
                        busiest.pop();
                    }
                }
            }
        }
        let mut out: Vec<(ChannelKey, usize)> = busiest
            .into_iter()
            .map(|Reverse((count, key))| (key, count))
            .collect();
        out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.as_str().cmp(b.0.as_str())));
        out
    }

    /// Whether any local subscriber listens to `channel`.
    pub fn has_subscribers(&self, channel: &str) -> bool {
        self.shard(channel).lock().contains_key(channel)
    }

    /// Number of local subscribers of `channel`.
    pub fn subscriber_count(&self, channel: &str) -> usize {
        self.shard(channel).lock().get(channel).map_or(0, Slab::len)
    }

    fn shard(&self, channel: &str) -> &Shard {
        let index = self.shared.hasher.hash_one(channel) as usize % SHARDS;
        &self.shared.shards[index]
    }

    /// Removes a subscriber added with [`Hub::register`]; answers the
    /// removed subscriber's connection id, where it has one.
    pub(crate) fn unregister(&self, channel: &ChannelKey, key: usize, watch: Watch) -> Option<u64> {
        let removed;
        {
            let mut shard = self.shard(channel.as_str()).lock();
            let entries = shard.get_mut(channel.as_str())?;
            removed = entries.try_remove(key);
            if entries.is_empty() {
                shard.remove(channel.as_str());
                self.shared.metrics.active_channels.dec();
                // Under the shard lock, like "active": see `subscribe`.
                if watch == Watch::Yes {
                    self.notify(|w| w.channel_idle(channel));
                }
            } else if entries.capacity() > 64 && entries.len() < entries.capacity() / 4 {
                // A slab never gives memory back by itself; after a big channel
                // empties out, compact it so the capacity follows the audience.
                entries.shrink_to_fit();
            }
        }
        self.shared.metrics.subscriptions.dec();
        removed.and_then(|entry| entry.subscriber.connection_id())
    }

    fn notify(&self, f: impl FnOnce(&dyn ChannelWatcher)) {
        if let Some(watcher) = self.shared.watcher.get().and_then(Weak::upgrade) {
            f(&*watcher);
        }
    }
}

impl Registration {
    pub fn channel(&self) -> &ChannelKey {
        &self.channel
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub
            .unregister(&self.channel, self.key as usize, self.watch);
    }
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("channel", &self.channel)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Epoch, Position};
    use bytes::Bytes;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(u32, u64)>>);

    impl Subscriber for Recorder {
        fn deliver(&self, slot: u32, message: &Arc<Message>) -> Handoff {
            self.0.lock().push((slot, message.offset()));
            Handoff::Queued
        }
    }

    fn message(channel: &str, offset: u64) -> Arc<Message> {
        let position = Position {
            epoch: Epoch::from_u64(7),
            offset,
        };
        Arc::new(Message::new(
            ChannelKey::parse(&format!("s/{channel}")).unwrap(),
            position,
            Bytes::new(),
        ))
    }

    /// Records how each flush was asked for.
    #[derive(Default)]
    struct FlushRecorder(Mutex<Vec<Flush>>);

    impl Subscriber for FlushRecorder {
        fn deliver(&self, _slot: u32, _message: &Arc<Message>) -> Handoff {
            Handoff::Flush
        }

        fn flush(&self, how: Flush) {
            self.0.lock().push(how);
        }
    }

    /// Hands one message to `count` subscribers of one channel; returns
    /// them in the order subscribed, with what must outlive the flushes.
    fn handed_over(count: usize) -> (Vec<Arc<FlushRecorder>>, Flushes, Vec<Registration>) {
        let hub = Hub::new(Metrics::default());
        let channel = ChannelKey::parse("s/a").unwrap();
        let mut subscribers = Vec::new();
        let mut registrations = Vec::new();
        for slot in 0..count {
            let subscriber = Arc::new(FlushRecorder::default());
            let registration =
                hub.subscribe(channel.clone(), subscriber.clone(), slot as u32, Watch::No);
            subscribers.push(subscriber);
            registrations.push(registration);
        }
        let mut flushes = Flushes::new();
        assert_eq!(hub.hand_over(&message("a", 1), &mut flushes), count);
        (subscribers, flushes, registrations)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_quiet_node_writes_every_subscriber_itself() {
        let (subscribers, flushes, _registrations) = handed_over(FLUSHES_PER_TURN * 3);
        flushes.flush_yielding().await;
        for subscriber in &subscribers {
            assert_eq!(*subscriber.0.lock(), [Flush::Write]);
        }
    }

    /// A task that holds the thread for several milliseconds at each turn
    /// (a reconnect storm's handshakes): after the first turn's writes, the
    /// rest of the batch is woken at once.
    #[tokio::test(flavor = "current_thread")]
    async fn a_busy_node_wakes_the_rest_of_the_batch_at_once() {
        let (subscribers, flushes, _registrations) = handed_over(FLUSHES_PER_TURN * 3);
        let busy = tokio::spawn(async {
            for _ in 0..3 {
                std::thread::sleep(BUSY_AFTER * 3);
                tokio::task::yield_now().await;
            }
        });
        flushes.flush_yielding().await;
        busy.await.unwrap();
        let (written, woken) = subscribers.split_at(FLUSHES_PER_TURN);
        for subscriber in written {
            assert_eq!(*subscriber.0.lock(), [Flush::Write]);
        }
        for subscriber in woken {
            assert_eq!(*subscriber.0.lock(), [Flush::Wake]);
        }
    }

    #[test]
    fn flushes_dropped_unflushed_wake_their_subscribers() {
        let (subscribers, flushes, _registrations) = handed_over(3);
        drop(flushes);
        for subscriber in &subscribers {
            assert_eq!(*subscriber.0.lock(), [Flush::Wake]);
        }
    }

    #[test]
    fn delivers_to_subscribers_of_the_channel_only() {
        let hub = Hub::new(Metrics::default());
        let a = Arc::new(Recorder::default());
        let b = Arc::new(Recorder::default());
        let _sa = hub.subscribe(ChannelKey::parse("s/a").unwrap(), a.clone(), 1, Watch::Yes);
        let sb = hub.subscribe(ChannelKey::parse("s/b").unwrap(), b.clone(), 2, Watch::Yes);
        assert_eq!(hub.deliver(&message("a", 1)), 1);
        assert_eq!(hub.deliver(&message("b", 5)), 1);
        assert_eq!(*a.0.lock(), vec![(1, 1)]);
        assert_eq!(*b.0.lock(), vec![(2, 5)]);
        drop(sb);
        assert!(!hub.has_subscribers("b"));
        assert_eq!(hub.deliver(&message("b", 6)), 0);
        assert_eq!(b.0.lock().len(), 1);
    }

    #[test]
    fn watcher_hears_first_and_last() {
        #[derive(Default)]
        struct Log(Mutex<Vec<String>>);
        impl ChannelWatcher for Log {
            fn channel_active(&self, c: &ChannelKey) {
                self.0.lock().push(format!("+{c}"));
            }
            fn channel_idle(&self, c: &ChannelKey) {
                self.0.lock().push(format!("-{c}"));
            }
        }
        let hub = Hub::new(Metrics::default());
        let log = Arc::new(Log::default());
        let weak: Weak<dyn ChannelWatcher> =
            Arc::downgrade(&(log.clone() as Arc<dyn ChannelWatcher>));
        hub.set_watcher(weak);
        let sub = Arc::new(Recorder::default());
        let one = hub.subscribe(
            ChannelKey::parse("s/c").unwrap(),
            sub.clone(),
            0,
            Watch::Yes,
        );
        let two = hub.subscribe(
            ChannelKey::parse("s/c").unwrap(),
            sub.clone(),
            1,
            Watch::Yes,
        );
        let quiet = hub.subscribe(ChannelKey::parse("s/q").unwrap(), sub, 2, Watch::No);
        drop(one);
        drop(two);
        drop(quiet);
        assert_eq!(*log.0.lock(), vec!["+s/c".to_string(), "-s/c".to_string()]);
    }
}
