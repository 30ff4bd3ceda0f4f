//! Delivery off the publisher's path: the memory engine hands each message
//! to a worker task that fans it out to the hub, so a publish call answers
//! as soon as the message is in history, however many subscribers wait.
//!
//! Invariants:
//! - A channel always maps to the same queue, and messages are queued
//!   under the channel's log lock, so each channel is delivered in offset
//!   order.
//! - A message is in history before it is queued, so a subscriber that
//!   registers and then reads history misses nothing: whatever the worker
//!   has not delivered yet is in what it reads, and is deduplicated by offset.
//! - Each queue is bounded: past [`QUEUE_LIMIT`] messages, publishers wait
//!   (after releasing every lock) until the worker catches up.
//! - A queued message counts as pending work in [`crate::lag`] until the
//!   worker has handed it to the hub and flushed the subscribers that write
//!   it themselves, so a queue that falls behind shows as delivery lag at
//!   once.
//! - Each queue counts what it was handed and what its worker delivered, so
//!   that shutdown can wait until every acknowledged message reached the hub
//!   ([`Delivery::flushed`]) before it tells clients to go.

use std::{
    collections::VecDeque,
    hash::{BuildHasher, RandomState},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::{Flushes, Hub, Message};

/// Worker tasks, each with its queue. Channels are spread over them.
const WORKERS: usize = 4;
/// Messages a queue may hold before publishers wait.
pub(crate) const QUEUE_LIMIT: usize = 4096;
/// Messages handed to the hub before their subscribers are flushed: under
/// load, a connection the hub writes to itself gets up to this many in one
/// write; idle, each message is flushed as it comes.
const MESSAGES_PER_FLUSH: usize = 32;

pub(crate) struct Delivery {
    queues: Box<[Arc<Queue>]>,
    hasher: RandomState,
}

pub(crate) struct Queue {
    items: Mutex<VecDeque<Arc<Message>>>,
    /// Wakes the worker.
    work: Notify,
    /// Wakes publishers waiting for room.
    room: Notify,
    /// Messages ever queued here (counted under `items`' lock).
    queued: AtomicU64,
    /// Messages the worker has handed to the hub.
    delivered: AtomicU64,
    /// Wakes whoever waits for the worker to catch up ([`Delivery::flushed`]).
    caught_up: Notify,
}

impl Delivery {
    /// Spawns the workers on the current tokio runtime.
    pub fn start(hub: Hub) -> Self {
        let queues: Box<[Arc<Queue>]> = (0..WORKERS)
            .map(|_| {
                Arc::new(Queue {
                    items: Mutex::new(VecDeque::new()),
                    work: Notify::new(),
                    room: Notify::new(),
                    queued: AtomicU64::new(0),
                    delivered: AtomicU64::new(0),
                    caught_up: Notify::new(),
                })
            })
            .collect();
        for queue in &*queues {
            tokio::spawn(run(queue.clone(), hub.clone()));
        }
        Self {
            queues,
            hasher: RandomState::new(),
        }
    }

    /// Queues `message` (call with its channel's log locked) and returns its queue.
    pub fn queue(&self, message: Arc<Message>) -> &Arc<Queue> {
        let queue = &self.queues[self.hasher.hash_one(message.channel.as_str()) as usize % WORKERS];
        {
            let mut items = queue.items.lock();
            crate::lag::pending(message.stamp());
            items.push_back(message);
            queue.queued.fetch_add(1, Ordering::SeqCst);
        }
        queue.work.notify_one();
        queue
    }

    /// Waits until every message queued before the call has been handed to
    /// the hub (that is, sits in its subscribers' outboxes).
    pub async fn flushed(&self) {
        for queue in &*self.queues {
            let target = queue.queued.load(Ordering::SeqCst);
            loop {
                let caught_up = queue.caught_up.notified();
                if queue.delivered.load(Ordering::SeqCst) >= target {
                    break;
                }
                caught_up.await;
            }
        }
    }
}

impl Queue {
    /// Waits while the queue is over its limit (call with no lock held).
    pub async fn room(&self) {
        loop {
            let room = self.room.notified();
            if self.items.lock().len() <= QUEUE_LIMIT {
                return;
            }
            room.await;
        }
    }
}

async fn run(queue: Arc<Queue>, hub: Hub) {
    let mut batch = VecDeque::new();
    // Handed over, not yet flushed: the subscribers to flush, and the
    // messages' stamps, pending for the lag until then.
    let mut flushes = Flushes::new();
    let mut stamps = Vec::new();
    loop {
        let work = queue.work.notified();
        std::mem::swap(&mut batch, &mut *queue.items.lock());
        if batch.is_empty() {
            if stamps.is_empty() {
                work.await;
            } else {
                // Nothing more came: write what was handed over.
                flush(&mut flushes, &mut stamps).await;
            }
            continue;
        }
        queue.room.notify_waiters();
        let count = batch.len() as u64;
        // While messages keep coming, up to MESSAGES_PER_FLUSH are handed
        // over before their flush, so that a subscriber the hub writes to
        // itself gets them in one write.
        for message in batch.drain(..) {
            hub.hand_over(&message, &mut flushes);
            stamps.push(message.stamp());
            if stamps.len() >= MESSAGES_PER_FLUSH {
                flush(&mut flushes, &mut stamps).await;
            }
        }
        queue.delivered.fetch_add(count, Ordering::SeqCst);
        queue.caught_up.notify_waiters();
        if batch.capacity() > 1024 {
            batch = VecDeque::new();
        }
        // A long batch should not keep other tasks from the core.
        tokio::task::yield_now().await;
    }
}

/// Flushes the subscribers handed over to, then settles their messages.
async fn flush(flushes: &mut Flushes, stamps: &mut Vec<u32>) {
    std::mem::take(flushes).flush_yielding().await;
    for stamp in stamps.drain(..) {
        crate::lag::settled(stamp);
    }
}
