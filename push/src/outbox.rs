//! The bounded queue between the hub and one connection.
//!
//! Invariants:
//! - Publishers only lock, push and wake; the connection's task does all
//!   encoding and I/O.
//! - The queue is bounded in bytes. The first delivery that would pass the
//!   limit marks the outbox overflowed and drops what is queued: the
//!   connection is closed as a slow consumer and recovers from history when
//!   it reconnects. Its neighbours are never slowed down.
//! - Nothing is allocated while idle: the queue is a `Vec` that owns no
//!   memory until a message arrives, and is handed over whole to the
//!   connection, which lets it go once written. (It is only ever pushed to
//!   here and taken whole, so a `Vec` does, a word smaller than a `VecDeque`.)
//! - Size: every connection has one outbox, an `Arc` allocation that
//!   jemalloc rounds up to its class (80, 96, 112 … bytes). The outbox is
//!   80 bytes (96 with the `Arc`'s counts): the byte count and the shutdown
//!   delay are `u32`s so that it stays there. A test holds it.

use std::{sync::Arc, task::Waker, time::Duration};

use fanout::{Message, Subscriber};
use parking_lot::Mutex;

/// Queued messages, tagged with the subscription slot they belong to.
pub(crate) type Queue = Vec<(u32, Arc<Message>)>;

/// Roughly what framing adds to a message, so that many tiny messages still count.
const FRAMING_BYTES: usize = 64;

/// [`State::shutdown_ms`] before shutdown. Delays are clamped below it.
const NOT_SHUT_DOWN: u32 = u32::MAX;

pub(crate) struct Outbox {
    state: Mutex<State>,
    /// Bytes that may wait here before the connection counts as a slow
    /// consumer (at most `u32::MAX`, so that the count fits a `u32`).
    limit: usize,
    /// The connection's id: in its logs, and the `connection_id` its client
    /// may see. Random, so that a channel signature made for one connection
    /// is worth nothing on another. It lives here because the outbox is the
    /// one allocation every connection has, and the session future is held
    /// to its allocation class (see `connection.rs`).
    id: u64,
}

struct State {
    queue: Queue,
    /// Payload plus framing estimate of everything in `queue` (at most
    /// `limit`).
    bytes: u32,
    /// The connection task, when it waits for something to do.
    waker: Option<Waker>,
    /// Set once the limit was passed; the connection must close.
    overflowed: bool,
    /// Set by the shared ticker; the connection pings and checks its deadline.
    tick: bool,
    /// Set on shutdown: reconnect after this many milliseconds, then close;
    /// [`NOT_SHUT_DOWN`] until then. (A bare `u32`, not an `Option` or a
    /// `Duration`, keeps the outbox in its allocation class.)
    shutdown_ms: u32,
    /// Set when the connection's site may have changed (a reload): the
    /// connection checks whether it may stay.
    recheck: bool,
    /// The stamp of the first message queued since the connection last
    /// looked; 0 when none. While set, it counts as pending work in
    /// [`fanout::lag`], until a drain takes it (the connection ran) or the
    /// outbox is detached or dropped.
    first_stamp: u32,
}

/// What the connection task picks up from its outbox in one go.
#[derive(Default)]
pub(crate) struct Drained {
    pub items: Queue,
    pub overflowed: bool,
    pub tick: bool,
    pub shutdown: Option<Duration>,
    pub recheck: bool,
}

impl Outbox {
    pub fn new(limit: usize) -> Self {
        Self {
            state: Mutex::new(State {
                queue: Queue::new(),
                bytes: 0,
                waker: None,
                overflowed: false,
                tick: false,
                shutdown_ms: NOT_SHUT_DOWN,
                recheck: false,
                first_stamp: 0,
            }),
            limit: limit.min(u32::MAX as usize),
            // 53 bits: the id is also a JSON number's worth for clients that parse it so.
            id: rand::random::<u64>() >> 11,
        }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// Takes the signals, and the queued messages if `take_items`, and
    /// registers `waker` to be woken when more arrives.
    pub fn drain(&self, take_items: bool, waker: &Waker) -> Drained {
        let (drained, stamp) = self.drain_locked(take_items, waker);
        if stamp != 0 {
            fanout::lag::ran(stamp);
        }
        drained
    }

    /// [`Outbox::drain`] under the lock; also takes the pending stamp.
    fn drain_locked(&self, take_items: bool, waker: &Waker) -> (Drained, u32) {
        let mut state = self.state.lock();
        match &state.waker {
            Some(existing) if existing.will_wake(waker) => {}
            _ => state.waker = Some(waker.clone()),
        }
        let items = if take_items {
            state.bytes = 0;
            std::mem::take(&mut state.queue)
        } else {
            Queue::new()
        };
        let drained = Drained {
            items,
            overflowed: state.overflowed,
            tick: std::mem::take(&mut state.tick),
            shutdown: (state.shutdown_ms != NOT_SHUT_DOWN)
                .then(|| Duration::from_millis(state.shutdown_ms.into())),
            recheck: std::mem::take(&mut state.recheck),
        };
        (drained, std::mem::take(&mut state.first_stamp))
    }

    /// Takes the queued messages alone (signals stay for the next drain).
    pub fn take_items(&self) -> Queue {
        let mut state = self.state.lock();
        state.bytes = 0;
        std::mem::take(&mut state.queue)
    }

    /// Called by the shared ticker.
    pub fn tick(&self) {
        self.signal(|state| state.tick = true);
    }

    /// Called after a reload: the connection checks that its site stays.
    pub fn recheck(&self) {
        self.signal(|state| state.recheck = true);
    }

    /// Called on shutdown with this connection's jittered reconnect delay.
    pub fn shut_down(&self, reconnect_after: Duration) {
        let ms = u32::try_from(reconnect_after.as_millis())
            .unwrap_or(u32::MAX)
            .min(NOT_SHUT_DOWN - 1);
        self.signal(|state| state.shutdown_ms = ms);
    }

    /// Forgets the waker so that a finished connection is not woken again.
    pub fn detach(&self) {
        let stamp = {
            let mut state = self.state.lock();
            state.waker = None;
            state.queue = Queue::new();
            state.overflowed = true;
            std::mem::take(&mut state.first_stamp)
        };
        if stamp != 0 {
            fanout::lag::settled(stamp);
        }
    }

    fn signal(&self, set: impl FnOnce(&mut State)) {
        let waker = {
            let mut state = self.state.lock();
            set(&mut state);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let stamp = self.state.get_mut().first_stamp;
        if stamp != 0 {
            fanout::lag::settled(stamp);
        }
    }
}

impl Subscriber for Outbox {
    fn deliver(&self, slot: u32, message: &Arc<Message>) {
        let waker = {
            let mut state = self.state.lock();
            if state.overflowed {
                return;
            }
            let size = message.data.len() + FRAMING_BYTES;
            if state.bytes as usize + size > self.limit {
                state.overflowed = true;
                state.queue = Queue::new();
                state.bytes = 0;
            } else {
                state.queue.push((slot, message.clone()));
                // Fits: the sum is at most `limit`, which fits a `u32`.
                state.bytes += size as u32;
                if state.first_stamp == 0 {
                    state.first_stamp = message.stamp();
                    fanout::lag::pending(state.first_stamp);
                }
            }
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use fanout::{ChannelKey, Epoch, Position};
    use std::task::Waker;

    fn message(len: usize, offset: u64) -> Arc<Message> {
        let position = Position {
            epoch: Epoch::from_u64(1),
            offset,
        };
        Arc::new(Message::new(
            ChannelKey::parse("s/c").unwrap(),
            position,
            Bytes::from(vec![b'x'; len]),
        ))
    }

    #[test]
    fn overflow_drops_queue_and_flags() {
        let outbox = Outbox::new(1000);
        outbox.deliver(0, &message(400, 1));
        outbox.deliver(0, &message(400, 2));
        let drained = outbox.drain(false, Waker::noop());
        assert!(!drained.overflowed);
        outbox.deliver(0, &message(400, 3));
        let drained = outbox.drain(true, Waker::noop());
        assert!(drained.overflowed);
        assert!(drained.items.is_empty());
        // Nothing more is queued once overflowed.
        outbox.deliver(0, &message(1, 4));
        assert!(outbox.drain(true, Waker::noop()).items.is_empty());
    }

    #[test]
    fn draining_resets_the_byte_count() {
        let outbox = Outbox::new(1000);
        for round in 0..10 {
            outbox.deliver(0, &message(400, round * 2 + 1));
            outbox.deliver(0, &message(400, round * 2 + 2));
            let drained = outbox.drain(true, Waker::noop());
            assert_eq!(drained.items.len(), 2);
            assert!(!drained.overflowed);
        }
    }

    /// With the `Arc`'s two counts, 80 bytes are jemalloc's 96-byte class;
    /// one word more is the 112-byte class, 16 bytes more per connection.
    #[test]
    fn the_outbox_stays_in_its_allocation_class() {
        let size = std::mem::size_of::<Outbox>();
        assert!(size <= 80, "an outbox is {size} bytes");
    }

    #[test]
    fn tick_and_shutdown_are_signals() {
        let outbox = Outbox::new(1000);
        outbox.tick();
        outbox.shut_down(Duration::from_millis(5));
        let drained = outbox.drain(true, Waker::noop());
        assert!(drained.tick);
        assert_eq!(drained.shutdown, Some(Duration::from_millis(5)));
        let again = outbox.drain(true, Waker::noop());
        assert!(!again.tick, "a tick is seen once");
        assert!(again.shutdown.is_some(), "shutdown stays");
    }
}
