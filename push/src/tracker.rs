//! Every live client connection, so that one shared ticker can ping them and
//! shutdown can reach them. hyper does not see upgraded WebSockets, and SSE
//! streams never pass through hyper at all, so Herald tracks them itself.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use parking_lot::Mutex;
use slab::Slab;
use tokio::sync::Notify;

use crate::outbox::Outbox;

const SHARDS: usize = 16;
/// Bits of [`Tracked`] that name the shard.
const SHARD_BITS: u32 = SHARDS.trailing_zeros();

/// A cheap, cloneable handle on the set of live connections.
#[derive(Clone, Default)]
pub struct Tracker {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    shards: [Mutex<Slab<Arc<Outbox>>>; SHARDS],
    /// Picks the shard for the next connection, round robin.
    next: AtomicUsize,
    /// Live connections.
    count: AtomicUsize,
    /// Ticks so far; connections compare it with when they last heard from
    /// their client, which replaces a timer per connection.
    ticks: AtomicU64,
    /// Woken whenever a connection ends, for shutdown to wait on.
    ended: Notify,
}

/// A connection's place in the tracker. The connection gives it back with
/// [`Tracker::unregister`] when it is dropped; it holds no handle on the
/// tracker itself, which keeps every connection's future a word smaller.
/// One `u32`: the shard in the low bits, the slab key above them (2^28
/// connections per shard), so that it packs with the connection's other
/// small fields.
#[derive(Debug)]
pub(crate) struct Tracked(u32);

impl Tracked {
    fn new(shard: usize, key: usize) -> Self {
        Self(((key as u32) << SHARD_BITS) | shard as u32)
    }

    fn shard(&self) -> usize {
        (self.0 & (SHARDS as u32 - 1)) as usize
    }

    fn key(&self) -> usize {
        (self.0 >> SHARD_BITS) as usize
    }
}

impl Tracker {
    pub(crate) fn register(&self, outbox: Arc<Outbox>) -> Tracked {
        let shard = self.shared.next.fetch_add(1, Ordering::Relaxed) % SHARDS;
        let key = self.shared.shards[shard].lock().insert(outbox);
        self.shared.count.fetch_add(1, Ordering::Relaxed);
        Tracked::new(shard, key)
    }

    /// Removes a connection registered with [`Tracker::register`].
    pub(crate) fn unregister(&self, tracked: &Tracked) {
        let shared = &self.shared;
        shared.shards[tracked.shard()]
            .lock()
            .try_remove(tracked.key());
        shared.count.fetch_sub(1, Ordering::Relaxed);
        shared.ended.notify_waiters();
    }

    /// Live connections.
    pub fn count(&self) -> usize {
        self.shared.count.load(Ordering::Relaxed)
    }

    /// Ticks counted so far.
    pub(crate) fn now(&self) -> u64 {
        self.shared.ticks.load(Ordering::Relaxed)
    }

    /// Counts one tick and wakes every connection to ping and check its deadline.
    pub fn tick(&self) {
        self.shared.ticks.fetch_add(1, Ordering::Relaxed);
        self.for_each(Outbox::tick);
    }

    /// Has every connection check whether an operator disconnected its user.
    pub(crate) fn check_disconnects(&self) {
        self.for_each(Outbox::check_disconnect);
    }

    /// Has every connection check whether it may stay (after a reload
    /// removed sites).
    pub fn recheck_all(&self) {
        self.for_each(Outbox::recheck);
    }

    /// Runs the shared ticker until the process ends: one task for all connections.
    pub async fn run_ticker(self, period: Duration) {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.tick();
        }
    }

    /// Tells every connection to reconnect after a random delay up to
    /// `jitter` and to close, `batch` connections at a time with `pause`
    /// between batches so that the clients' reconnects and the closes'
    /// writes are spread out.
    pub async fn shut_down_all(&self, jitter: Duration, batch: usize, pause: Duration) {
        let targets: Vec<Arc<Outbox>> = self
            .shared
            .shards
            .iter()
            .flat_map(|s| s.lock().iter().map(|(_, o)| o.clone()).collect::<Vec<_>>())
            .collect();
        for chunk in targets.chunks(batch.max(1)) {
            for outbox in chunk {
                let delay = jitter.mul_f64(rand::random::<f64>());
                outbox.shut_down(delay);
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// Waits until no connection is left.
    pub async fn drained(&self) {
        loop {
            let ended = self.shared.ended.notified();
            if self.count() == 0 {
                return;
            }
            ended.await;
        }
    }

    fn for_each(&self, f: impl Fn(&Outbox)) {
        for shard in &self.shared.shards {
            // Signalling only locks the outbox and wakes; holding the shard
            // lock meanwhile only delays connections opening on this shard.
            for (_, outbox) in shard.lock().iter() {
                f(outbox);
            }
        }
    }
}
