//! The embedded single-process engine: offsets and history in memory.
//!
//! Invariants:
//! - A channel's offsets are assigned and appended, and the message handed
//!   to delivery, under that channel's own lock, so subscribers see each
//!   channel in offset order and a subscriber that registers before reading
//!   history misses nothing (see `engine/delivery.rs`).
//! - Logs are found through [`SHARDS`] small maps; a shard lock is only held
//!   to find or insert a log, never while delivering.
//! - One sweeper task for the whole engine frees logs whose history has
//!   expired and that have no local subscribers; idle channels cost nothing.
//! - A channel that only ever had readers costs its log only while someone
//!   subscribes: a subscriber's history read creates the log (its epoch must
//!   hold while anyone holds a position in it), and the engine, as the hub's
//!   [`ChannelWatcher`], drops a log that never had a message as soon as
//!   the channel's last subscriber leaves. A resume into a dropped one
//!   client looping subscribe/unsubscribe over random names leaves nothing.
//! - Epochs: a new log's epoch is the engine's current "fresh" epoch, a
//!   random seed for the engine's lifetime moved on each time the sweeper
//!   frees a log that had messages (under that log's shard lock, before it
//!   can be created again). So a client that read a channel at offset 0,
//!   whose log was then dropped because nobody listened and nothing was
//!   published, resumes exactly (`recovered: true`) once it comes back,
//!   even if the channel was published to meanwhile; but a position from
//!   before messages that have since expired and been freed is never taken
//!   for one in the new log: the epoch has moved on (`recovered: false`).

mod presence;

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    sync::{
        Arc, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::future::{self, BoxFuture};
use parking_lot::Mutex;

use crate::{
    ChannelKey, ChannelWatcher, Epoch, Error, Hub, Metrics, Position,
    engine::{
        Engine, History, PublishRequest, Published,
        delivery::{Delivery, Queue},
    },
    events::ChannelEvent,
    history::{ChannelLog, HistoryConfig},
    presence::{Joined, Member},
};
use presence::PresenceTable;

const SHARDS: usize = 64;

type Shard = Mutex<HashMap<ChannelKey, Arc<Mutex<ChannelLog>>>>;

/// The memory engine. Create it with [`MemoryEngine::start`].
pub struct MemoryEngine {
    /// Where published messages are delivered.
    hub: Hub,
    /// Delivery workers, when started on a runtime; without them (tests,
    /// micro-benchmarks) messages are delivered inline.
    delivery: Option<Delivery>,
    /// channel → log, split so that unrelated channels never contend.
    shards: Box<[Shard]>,
    hasher: RandomState,
    config: HistoryConfig,
    metrics: Metrics,
    /// Random for this engine's lifetime: new logs' epochs derive from it.
    epoch_seed: u64,
    /// How many times the sweeper freed a log that had messages; moves the
    /// epoch of logs created afterwards (see the module docs).
    freed_with_messages: AtomicU64,
    /// Presence channels' members (`memory/presence.rs`).
    presence: Mutex<PresenceTable>,
}

impl MemoryEngine {
    /// Creates the engine and spawns its sweeper on the current tokio runtime.
    /// The sweeper stops by itself once the engine is dropped.
    pub fn start(hub: Hub, config: HistoryConfig, metrics: Metrics) -> Arc<Self> {
        let mut engine = Self::new(hub.clone(), config, metrics);
        engine.delivery = Some(Delivery::start(hub.clone()));
        let engine = Arc::new(engine);
        let watcher: Arc<dyn ChannelWatcher> = engine.clone();
        hub.set_watcher(Arc::downgrade(&watcher));
        // Often enough that a burst kept by age is given back soon after
        // it ages out, and that expired logs are freed.
        let horizon = match config.min_age.is_zero() {
            true => config.ttl,
            false => config.min_age.min(config.ttl),
        };
        let period = (horizon / 4).clamp(Duration::from_secs(1), Duration::from_secs(30));
        tokio::spawn(sweep_forever(Arc::downgrade(&engine), period));
        engine
    }

    /// Creates the engine without a sweeper (tests and benchmarks).
    pub fn new(hub: Hub, config: HistoryConfig, metrics: Metrics) -> Self {
        Self {
            hub,
            delivery: None,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            config,
            metrics,
            epoch_seed: rand::random::<u64>(),
            freed_with_messages: AtomicU64::new(0),
            presence: Mutex::new(PresenceTable::default()),
        }
    }

    /// The epoch of a log created now.
    fn fresh_epoch(&self) -> Epoch {
        // Distinct for every count (an odd multiplier is a bijection).
        let moved = self.freed_with_messages.load(Ordering::SeqCst);
        Epoch::from_u64(
            self.epoch_seed
                .wrapping_add(moved.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        )
    }

    fn shard(&self, channel: &str) -> &Shard {
        &self.shards[self.hasher.hash_one(channel) as usize % SHARDS]
    }

    fn log(&self, channel: &ChannelKey) -> Arc<Mutex<ChannelLog>> {
        let mut shard = self.shard(channel.as_str()).lock();
        // Most publishes find their log: look it up by `&str` first, so only
        // a new channel pays for the owned key `entry` needs.
        if let Some(log) = shard.get(channel.as_str()) {
            return log.clone();
        }
        shard
            .entry(channel.clone())
            .or_insert_with(|| {
                self.metrics.history_channels.inc();
                Arc::new(Mutex::new(ChannelLog::new(
                    Instant::now(),
                    self.fresh_epoch(),
                )))
            })
            .clone()
    }

    /// Appends and hands over for delivery; returns what was published and,
    /// with delivery workers, the queue the message went to.
    fn publish_one(&self, request: PublishRequest) -> (Published, Option<&Arc<Queue>>) {
        loop {
            let log = self.log(&request.channel);
            let mut log = log.lock();
            if log.removed {
                // The sweeper unlinked this log between our lookup and lock.
                continue;
            }
            let now = Instant::now();
            // Under the channel's lock: two racing publishes with one key
            // cannot both get through.
            if let Some(key) = &request.dedupe
                && let Some(position) = log.published_as(key, now, self.config.dedupe_ttl)
            {
                let published = Published {
                    position,
                    duplicate: true,
                };
                return (published, None);
            }
            let (message, grown) = log.append(
                request.channel.clone(),
                request.data.clone(),
                now,
                self.config,
            );
            if let Some(key) = request.dedupe {
                log.remember(key, message.position, now);
            }
            self.metrics.history_messages.add(grown as i64);
            self.metrics.published.inc();
            // Handed over with the log locked: this is what keeps each channel
            // in offset order and lets a subscriber register, then read
            // history, without a gap.
            let published = Published {
                position: message.position,
                duplicate: false,
            };
            return match &self.delivery {
                Some(delivery) => (published, Some(delivery.queue(message))),
                None => {
                    self.hub.deliver(&message);
                    (published, None)
                }
            };
        }
    }

    fn read(&self, channel: &ChannelKey, since: Option<Position>) -> History {
        let log = self.log(channel);
        let log = log.lock();
        log.read(since, Instant::now(), self.config)
    }

    /// Trims every log to what history keeps (messages past the TTL, and
    /// those beyond `size` that outlived `min_age`), and frees the logs of
    /// channels that are quiet and have no subscribers. Returns how many
    /// logs were freed.
    pub fn sweep(&self) -> usize {
        self.sweep_at(Instant::now())
    }

    /// [`MemoryEngine::sweep`] as if it were `now` (tests look ahead).
    fn sweep_at(&self, now: Instant) -> usize {
        let mut freed = 0;
        for shard in &*self.shards {
            let mut shard = shard.lock();
            shard.retain(|channel, log| {
                // A log that is busy right now is certainly not idle.
                let Some(mut log) = log.try_lock() else {
                    return true;
                };
                let expired = log.trim(now, self.config);
                log.expire_keys(now, self.config.dedupe_ttl);
                self.metrics.history_messages.sub(expired as i64);
                // A log that never had a message is dropped as soon as nobody
                // listens (see `channel_idle`); one left behind (a busy lock
                // then, or an API history read) goes at the next sweep.
                let quiet = now.saturating_duration_since(log.touched) > self.config.ttl
                    || log.last_offset == 0;
                if log.len() == 0
                    && quiet
                    && !log.has_keys()
                    && !self.hub.has_subscribers(channel.as_str())
                {
                    if log.last_offset > 0 {
                        // Before the shard lock is let go, so that no log
                        // created again for this channel reuses the epoch.
                        self.freed_with_messages.fetch_add(1, Ordering::SeqCst);
                    }
                    log.removed = true;
                    freed += 1;
                    false
                } else {
                    true
                }
            });
        }
        self.metrics.history_channels.sub(freed as i64);
        freed
    }

    /// Number of channels whose log is held.
    pub fn channel_count(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }
}

impl ChannelWatcher for MemoryEngine {
    /// One node is the whole deployment: its first subscriber occupies
    /// the channel.
    fn channel_active(&self, channel: &ChannelKey) {
        if let Some(events) = self.hub.events_for(channel) {
            events.event(channel, ChannelEvent::Occupied);
        }
    }

    /// The last local subscriber left: a log that never had a message goes
    /// now. Called with a hub shard lock held, while a publisher may hold a
    /// log's lock and wait for that hub shard (inline delivery), and the
    /// sweeper holds an engine shard and asks the hub: so nothing is waited
    /// for here. A lock that is busy leaves the log to the sweeper.
    fn channel_idle(&self, channel: &ChannelKey) {
        if let Some(events) = self.hub.events_for(channel) {
            events.event(channel, ChannelEvent::Vacated);
        }
        let Some(mut shard) = self.shard(channel.as_str()).try_lock() else {
            return;
        };
        let Some(log) = shard.get(channel.as_str()) else {
            return;
        };
        let Some(mut log) = log.try_lock() else {
            return;
        };
        if log.last_offset != 0 || log.has_keys() {
            return;
        }
        log.removed = true;
        drop(log);
        shard.remove(channel.as_str());
        self.metrics.history_channels.dec();
    }
}

impl Engine for MemoryEngine {
    fn publish(&self, batch: Vec<PublishRequest>) -> BoxFuture<'_, Result<Vec<Published>, Error>> {
        Box::pin(async move {
            let mut positions = Vec::with_capacity(batch.len());
            for request in batch {
                let (published, queue) = self.publish_one(request);
                positions.push(published);
                if let Some(queue) = queue {
                    // Backpressure, with no lock held: a publisher outrunning
                    // delivery waits instead of growing the queue.
                    queue.room().await;
                }
            }
            Ok(positions)
        })
    }

    /// Done at once, under the presence table's lock (`memory/presence.rs`):
    /// the join, its event and the list are one step.
    fn presence_join<'a>(
        &'a self,
        channel: &'a ChannelKey,
        connection: u64,
        member: Member,
    ) -> BoxFuture<'a, Result<Joined, Error>> {
        let mut table = self.presence.lock();
        let position = if table.join(channel, connection, &member) {
            if let Some(events) = self.hub.events_for(channel) {
                events.event(channel, ChannelEvent::MemberAdded(member.user_id.clone()));
            }
            let added = PublishRequest::new(channel.clone(), member.added(connection));
            // Not waiting for the delivery queue's room: one small event.
            self.publish_one(added).0.position
        } else {
            self.read(channel, None).position
        };
        let members = table.members(channel);
        drop(table);
        Box::pin(future::ready(Ok(Joined { position, members })))
    }

    fn presence_leave(&self, channel: &ChannelKey, connection: u64) {
        let mut table = self.presence.lock();
        if let Some(user_id) = table.leave(channel, connection) {
            let removed = PublishRequest::new(channel.clone(), Member::removed(&user_id));
            self.publish_one(removed);
            if let Some(events) = self.hub.events_for(channel) {
                events.event(channel, ChannelEvent::MemberRemoved(user_id));
            }
        }
    }

    fn presence_members<'a>(
        &'a self,
        channel: &'a ChannelKey,
    ) -> BoxFuture<'a, Result<Vec<Member>, Error>> {
        Box::pin(future::ready(Ok(self.presence.lock().members(channel))))
    }

    fn history<'a>(
        &'a self,
        channel: &'a ChannelKey,
        since: Option<Position>,
    ) -> BoxFuture<'a, Result<History, Error>> {
        Box::pin(future::ready(Ok(self.read(channel, since))))
    }

    fn flushed(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(delivery) = &self.delivery {
                delivery.flushed().await;
            }
        })
    }
}

async fn sweep_forever(engine: Weak<MemoryEngine>, period: Duration) {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(engine) = engine.upgrade() else {
            return;
        };
        let freed = engine.sweep();
        if freed > 0 {
            tracing::debug!(freed, "freed idle channel logs");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Message, Subscriber, Watch};
    use bytes::Bytes;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<u64>>);

    impl Subscriber for Recorder {
        fn deliver(&self, _slot: u32, message: &Arc<Message>) -> crate::Handoff {
            self.0.lock().push(message.offset());
            crate::Handoff::Queued
        }
    }

    fn request(channel: &str) -> PublishRequest {
        PublishRequest::new(
            ChannelKey::parse(&format!("s/{channel}")).unwrap(),
            Bytes::from_static(b"{}"),
        )
    }

    #[tokio::test]
    async fn offsets_count_up_per_channel() {
        let engine = MemoryEngine::new(
            Hub::new(Metrics::default()),
            HistoryConfig::default(),
            Metrics::default(),
        );
        let positions = engine
            .publish(vec![request("a"), request("b"), request("a")])
            .await
            .unwrap();
        let offsets: Vec<u64> = positions.iter().map(|p| p.position.offset).collect();
        assert_eq!(offsets, [1, 1, 2]);
        assert_eq!(positions[0].position.epoch, positions[2].position.epoch);
    }

    #[tokio::test]
    async fn an_idempotency_key_publishes_once_per_channel() {
        let hub = Hub::new(Metrics::default());
        let engine = MemoryEngine::new(hub.clone(), HistoryConfig::default(), Metrics::default());
        let recorder = Arc::new(Recorder::default());
        let _sub = hub.subscribe(
            ChannelKey::parse("s/a").unwrap(),
            recorder.clone(),
            0,
            Watch::Yes,
        );
        let keyed = |channel: &str| PublishRequest {
            dedupe: Some(Arc::from("k1")),
            ..request(channel)
        };
        let first = engine.publish(vec![keyed("a"), keyed("b")]).await.unwrap();
        let again = engine.publish(vec![keyed("a"), keyed("b")]).await.unwrap();
        assert!(first.iter().all(|p| !p.duplicate));
        assert!(again.iter().all(|p| p.duplicate));
        assert_eq!(
            first.iter().map(|p| p.position).collect::<Vec<_>>(),
            again.iter().map(|p| p.position).collect::<Vec<_>>()
        );
        assert_eq!(*recorder.0.lock(), [1], "delivered once");
        let other = engine.publish(vec![request("a")]).await.unwrap();
        assert_eq!(other[0].position.offset, 2, "no key: published");
    }

    #[tokio::test]
    async fn a_channel_that_only_had_readers_is_dropped_when_its_last_subscriber_leaves() {
        let hub = Hub::new(Metrics::default());
        let engine = MemoryEngine::start(hub.clone(), HistoryConfig::default(), Metrics::default());
        let key = |name: &str| ChannelKey::parse(&format!("s/{name}")).unwrap();
        let recorder = Arc::new(Recorder::default());

        // Two readers: the log exists while either subscribes, with one epoch.
        let first = hub.subscribe(key("quiet"), recorder.clone(), 0, Watch::Yes);
        let epoch = engine.history(&key("quiet"), None).await.unwrap().position;
        let second = hub.subscribe(key("quiet"), recorder.clone(), 1, Watch::Yes);
        drop(first);
        let again = engine.history(&key("quiet"), None).await.unwrap().position;
        assert_eq!(again, epoch, "the epoch holds while anyone subscribes");
        assert_eq!(engine.channel_count(), 1);
        drop(second);
        assert_eq!(
            engine.channel_count(),
            0,
            "dropped with its last subscriber"
        );

        // Back after it was dropped: the same epoch at offset 0, so a client
        // that read it before resumes exactly, here and after a publish.
        let back = engine.history(&key("quiet"), None).await.unwrap().position;
        assert_eq!(back, epoch);
        engine.publish(vec![request("quiet")]).await.unwrap();
        let since = Some(epoch);
        let resumed = engine.history(&key("quiet"), since).await.unwrap();
        assert!(resumed.recovered);
        assert_eq!(resumed.messages.len(), 1);

        // A channel that had a message keeps its log (and epoch) for resumes.
        let reader = hub.subscribe(key("busy"), recorder.clone(), 0, Watch::Yes);
        engine.publish(vec![request("busy")]).await.unwrap();
        drop(reader);
        assert_eq!(
            engine.channel_count(),
            2,
            "`quiet` (now published to) and `busy`"
        );
    }

    #[tokio::test]
    async fn sweeper_frees_only_quiet_unwatched_channels() {
        let hub = Hub::new(Metrics::default());
        let config = HistoryConfig {
            size: 10,
            min_age: Duration::ZERO,
            max_size: 10,
            ttl: Duration::ZERO,
            dedupe_ttl: Duration::ZERO,
        };
        let engine = MemoryEngine::new(hub.clone(), config, Metrics::default());
        let recorder = Arc::new(Recorder::default());
        let _watched = hub.subscribe(
            ChannelKey::parse("s/watched").unwrap(),
            recorder.clone(),
            0,
            Watch::Yes,
        );
        // A reader of `oneoff` at offset 0, before its one message.
        let before = engine.read(&ChannelKey::parse("s/oneoff").unwrap(), None);
        engine
            .publish(vec![request("watched"), request("oneoff")])
            .await
            .unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(engine.sweep(), 1);
        assert_eq!(engine.channel_count(), 1);
        // Its messages are gone, and so is its epoch: a client from before
        // them is told, not given an empty "recovered" replay.
        let again = engine.read(
            &ChannelKey::parse("s/oneoff").unwrap(),
            Some(before.position),
        );
        assert!(!again.recovered);
        assert_ne!(again.position.epoch, before.position.epoch);
        // The watched channel keeps its epoch and counts on.
        let next = engine.publish(vec![request("watched")]).await.unwrap();
        assert_eq!(next[0].position.offset, 2);
        assert_eq!(*recorder.0.lock(), vec![1, 2]);
    }

    #[tokio::test]
    async fn the_sweeper_trims_a_quiet_burst_back_to_the_count() {
        let hub = Hub::new(Metrics::default());
        let metrics = Metrics::default();
        let config = HistoryConfig {
            size: 2,
            min_age: Duration::from_secs(60),
            max_size: 100,
            ..HistoryConfig::default()
        };
        let engine = MemoryEngine::new(hub, config, metrics.clone());
        let burst = (0..10).map(|_| request("burst")).collect();
        engine.publish(burst).await.unwrap();
        assert_eq!(metrics.history_messages.get(), 10, "all young: all kept");
        assert_eq!(engine.sweep(), 0);
        assert_eq!(metrics.history_messages.get(), 10);
        // A minute later, with no publish in between: back to `size`.
        assert_eq!(engine.sweep_at(Instant::now() + Duration::from_secs(61)), 0);
        assert_eq!(metrics.history_messages.get(), 2);
        let key = ChannelKey::parse("s/burst").unwrap();
        let kept = engine.read(&key, None);
        let offsets: Vec<u64> = kept.messages.iter().map(|m| m.offset()).collect();
        assert_eq!(offsets, [9, 10]);
    }
}
