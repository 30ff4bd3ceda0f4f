//! The bounded queue between the hub and one connection, and the hub's way
//! straight to the socket of a connection with nothing else to do.
//!
//! Invariants:
//! - Publishers only lock, push and wake; the connection's task does all
//!   encoding and I/O, except while the connection is parked.
//! - Parked: a connection whose task has nothing to do and nothing
//!   unwritten, with one subscription and a protocol whose message frame is
//!   the same for every subscriber ([`Protocol::SHARED_FRAME`]), leaves that
//!   subscription's slot and position here ([`Outbox::park`]). The hub's
//!   delivery then writes the frame to the socket itself
//!   ([`Subscriber::flush`], after the hub's locks), and the task is not
//!   woken: at light load the wake-up and the poll, with their cache
//!   misses, were most of Herald's user CPU per delivery. Whatever the
//!   shortcut does not cover (a gap notice, a new epoch, an offset already
//!   sent, another slot, a socket that takes nothing or part of a frame)
//!   unparks the connection with the message queued, and the task decides
//!   as always.
//! - Writes to the socket never overlap, and keep their order: the hub
//!   writes only while parked, under the outbox lock; every drain unparks
//!   under that lock before the task writes anything, and hands the parked
//!   position back to the task; the task parks only with nothing queued.
//!   A frame the socket took only part of stays at the queue's head with
//!   what was written, and the next drain hands it over first.
//! - The socket outlives every hub write: the connection detaches (which
//!   unparks) before its link, which owns the socket, is dropped.
//! - The queue is bounded in bytes. The first delivery that would pass the
//!   limit marks the outbox overflowed and drops what is queued (all but a
//!   frame already partly written): the connection is closed as a slow
//!   consumer and recovers from history when it reconnects. Its neighbours
//!   are never slowed down.
//! - Nothing is allocated while idle: the queue is a `ThinVec` (one word)
//!   that owns no memory until a message arrives, and is handed over whole
//!   to the connection, which lets it go once written.
//! - Size: every connection has one outbox, an `Arc` allocation that
//!   jemalloc rounds up to its class (96, 112, 128 … bytes). The outbox is
//!   96 bytes (112 with the `Arc`'s counts): the byte count, the shutdown
//!   delay and the lag stamp are `u32`s, the parked slot a `u16` and the
//!   flags one byte, so that it stays there. A test holds it.

use std::{
    io::{self, IoSlice},
    os::fd::RawFd,
    sync::Arc,
    task::Waker,
    time::Duration,
};

use bytes::Bytes;
use fanout::{Flush, Handoff, Message, Position, Subscriber};
use nix::sys::socket::{MsgFlags, SockaddrStorage, sendmsg};
use parking_lot::Mutex;
use thin_vec::ThinVec;

#[cfg(doc)]
use crate::Protocol;
use crate::metrics::PerTransport;

/// A message waiting for the connection.
pub(crate) struct Queued {
    /// The subscription it belongs to.
    pub slot: u32,
    /// Bytes of its frame the hub already wrote: 0, except for a frame the
    /// socket took only part of (see [`Drained::started`]).
    pub written: u32,
    pub message: Arc<Message>,
}

/// Queued messages, oldest first.
pub(crate) type Queue = ThinVec<Queued>;

/// Roughly what framing adds to a message, so that many tiny messages still count.
const FRAMING_BYTES: usize = 64;

/// [`State::shutdown_ms`] before shutdown. Delays are clamped below it.
const NOT_SHUT_DOWN: u32 = u32::MAX;

/// [`State::parked_slot`] while no position is left here.
const NOT_PARKED: u16 = u16::MAX;

/// Frames one write of the hub gathers at most.
const MAX_FRAMES: usize = 16;

/// Bits of [`State::flags`].
const OVERFLOWED: u8 = 1;
const TICK: u8 = 2;
const RECHECK: u8 = 4;
/// Parked: the hub writes this connection's messages itself.
const DIRECT: u8 = 8;
/// An operator disconnects a user: the connection checks whether it is theirs.
const DISCONNECT: u8 = 16;

/// How the hub writes a protocol's frames to parked connections, and the
/// counters those writes go into: one per protocol and node, shared by
/// its connections (`Context::hub_writer`), so that each outbox holds one
/// pointer to it, not two.
pub(crate) struct HubWriter {
    /// The protocol's [`Protocol::SHARED_FRAME`].
    pub frame: fn(&Message) -> Bytes,
    pub counters: Arc<PerTransport>,
}

/// How the hub writes to one parked connection.
pub(crate) struct Direct {
    /// The socket; its link owns it (see the invariants).
    pub fd: RawFd,
    pub writer: Arc<HubWriter>,
}

/// What the hub handed to a connection since it was last asked, for the
/// traffic accounting (`crate::traffic`): messages, and their payload bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Handed {
    pub deliveries: u32,
    pub bytes: u32,
}

pub(crate) struct Outbox {
    state: Mutex<State>,
    /// The connection's id: in its logs, and the `connection_id` its client
    /// may see. Random, so that a channel signature made for one connection
    /// is worth nothing on another. It lives here because the outbox is the
    /// one allocation every connection has, and the session future is held
    /// to its allocation class (see `connection.rs`).
    id: u64,
    /// Bytes that may wait here before the connection counts as a slow
    /// consumer.
    limit: u32,
    /// [`Direct::fd`], or -1 when the hub never writes here.
    fd: RawFd,
    /// [`Direct::writer`], when the hub may write here.
    writer: Option<Arc<HubWriter>>,
}

struct State {
    queue: Queue,
    /// The connection task, when it waits for something to do.
    waker: Option<Waker>,
    /// While [`State::parked_slot`] names a slot: the position of the last
    /// message sent on it, the hub's writes included. The next drain hands
    /// it back to the task.
    parked_position: Position,
    /// Payload plus framing estimate of everything in `queue` (at most
    /// `limit`).
    bytes: u32,
    /// The stamp of the first message queued since the connection last
    /// looked, for the task; 0 when none. While set, it counts as pending
    /// work in [`fanout::lag`], until a drain takes it (the connection ran)
    /// or the outbox is detached or dropped. (What the hub writes itself is
    /// pending as its delivery, until written.)
    first_stamp: u32,
    /// Set on shutdown: reconnect after this many milliseconds, then close;
    /// [`NOT_SHUT_DOWN`] until then. (A bare `u32`, not an `Option` or a
    /// `Duration`, keeps the outbox in its allocation class.)
    shutdown_ms: u32,
    /// The slot whose position is left here, or [`NOT_PARKED`].
    parked_slot: u16,
    /// What the hub handed over since the connection last took it (on a
    /// tick, and when it ends). Two `u32`s fit where the outbox had room
    /// (see the size test); they saturate rather than wrap.
    handed: Handed,
    /// [`OVERFLOWED`]: the limit was passed; the connection must close.
    /// [`TICK`]: set by the shared ticker; the connection pings and checks
    /// its deadline. [`RECHECK`]: the connection's site may have changed (a
    /// reload); it checks whether it may stay. [`DIRECT`]: parked.
    /// [`DISCONNECT`]: an operator disconnects a user.
    flags: u8,
}

/// What the connection task picks up from its outbox in one go.
#[derive(Default)]
pub(crate) struct Drained {
    /// A frame the hub wrote part of: its rest goes out before anything else.
    pub started: Option<Queued>,
    pub items: Queue,
    /// The slot and position the connection had parked, moved on by
    /// whatever the hub wrote meanwhile.
    pub parked: Option<(u32, Position)>,
    /// On a tick: what the hub handed over since the last one.
    pub handed: Handed,
    pub overflowed: bool,
    pub tick: bool,
    pub disconnect: bool,
    pub shutdown: Option<Duration>,
    pub recheck: bool,
}

/// How far a hub write got.
enum Wrote {
    /// Every frame of the queue, and the position of the last.
    All,
    /// Not all: the task takes over what is left.
    Stopped,
}

impl Outbox {
    /// An outbox holding up to `limit` bytes; with `direct`, the hub writes
    /// to the socket itself while the connection is parked.
    pub fn new(limit: usize, direct: Option<Direct>) -> Self {
        let (fd, writer) = match direct {
            Some(Direct { fd, writer }) => (fd, Some(writer)),
            None => (-1, None),
        };
        Self {
            state: Mutex::new(State {
                queue: Queue::new(),
                waker: None,
                parked_position: Position {
                    epoch: fanout::Epoch::from_u64(0),
                    offset: 0,
                },
                bytes: 0,
                first_stamp: 0,
                shutdown_ms: NOT_SHUT_DOWN,
                parked_slot: NOT_PARKED,
                handed: Handed::default(),
                flags: 0,
            }),
            // 53 bits: the id is also a JSON number's worth for clients that parse it so.
            id: rand::random::<u64>() >> 11,
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
            fd,
            writer,
        }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// Takes the signals, the parked position, a frame the hub partly
    /// wrote, and the queued messages if `take_items`; registers `waker` to
    /// be woken when more arrives. Unparks.
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
        let parked = (state.parked_slot != NOT_PARKED)
            .then(|| (u32::from(state.parked_slot), state.parked_position));
        state.parked_slot = NOT_PARKED;
        state.flags &= !DIRECT;
        let started = match state.queue.first() {
            Some(first) if first.written > 0 => {
                let started = state.queue.remove(0);
                let size = started.message.data.len() + FRAMING_BYTES;
                state.bytes = state.bytes.saturating_sub(size as u32);
                Some(started)
            }
            _ => None,
        };
        let items = if take_items {
            state.bytes = 0;
            std::mem::take(&mut state.queue)
        } else {
            Queue::new()
        };
        let flags = state.flags;
        state.flags &= !(TICK | RECHECK | DISCONNECT);
        let handed = if flags & TICK != 0 {
            std::mem::take(&mut state.handed)
        } else {
            Handed::default()
        };
        let drained = Drained {
            handed,
            started,
            items,
            parked,
            overflowed: flags & OVERFLOWED != 0,
            tick: flags & TICK != 0,
            disconnect: flags & DISCONNECT != 0,
            shutdown: (state.shutdown_ms != NOT_SHUT_DOWN)
                .then(|| Duration::from_millis(state.shutdown_ms.into())),
            recheck: flags & RECHECK != 0,
        };
        (drained, std::mem::take(&mut state.first_stamp))
    }

    /// Takes what the hub handed over since it was last taken.
    pub fn take_handed(&self) -> Handed {
        std::mem::take(&mut self.state.lock().handed)
    }

    /// Counts messages the connection sent on its own (a replay from
    /// history) with those the hub handed over.
    pub fn count_handed(&self, deliveries: usize, bytes: usize) {
        self.state.lock().handed.add(deliveries, bytes);
    }

    /// Takes the queued messages alone (signals stay for the next drain).
    pub fn take_items(&self) -> Queue {
        let mut state = self.state.lock();
        state.bytes = 0;
        std::mem::take(&mut state.queue)
    }

    /// Parks the connection, whose one subscription is `slot`, sent up to
    /// `position`: from now on the hub writes its messages itself, until
    /// the next drain. Call only with nothing unwritten, no subscribe in
    /// flight and the connection open. Nothing happens when the hub cannot
    /// write here, or when something arrived since the last drain (the task
    /// was woken for it).
    pub fn park(&self, slot: u32, position: Position) {
        if self.writer.is_none() {
            return;
        }
        let Ok(slot) = u16::try_from(slot) else {
            return;
        };
        if slot == NOT_PARKED {
            return;
        }
        let mut state = self.state.lock();
        if !state.queue.is_empty() || state.waker.is_none() || state.flags & OVERFLOWED != 0 {
            return;
        }
        state.parked_slot = slot;
        state.parked_position = position;
        state.flags |= DIRECT;
    }

    /// Called by the shared ticker.
    pub fn tick(&self) {
        self.signal(|state| state.flags |= TICK);
    }

    /// Called after a reload: the connection checks that its site stays.
    pub fn recheck(&self) {
        self.signal(|state| state.flags |= RECHECK);
    }

    /// Called when an operator disconnects a user: the connection checks
    /// whether it is that user's.
    pub fn check_disconnect(&self) {
        self.signal(|state| state.flags |= DISCONNECT);
    }

    /// Called on shutdown with this connection's jittered reconnect delay.
    pub fn shut_down(&self, reconnect_after: Duration) {
        let ms = u32::try_from(reconnect_after.as_millis())
            .unwrap_or(u32::MAX)
            .min(NOT_SHUT_DOWN - 1);
        self.signal(|state| state.shutdown_ms = ms);
    }

    /// Forgets the waker so that a finished connection is not woken again,
    /// and unparks it for good: the hub writes nothing more to its socket.
    pub fn detach(&self) {
        let stamp = {
            let mut state = self.state.lock();
            state.waker = None;
            state.queue = Queue::new();
            state.flags = (state.flags | OVERFLOWED) & !DIRECT;
            state.parked_slot = NOT_PARKED;
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

    /// Writes the queue's frames to the socket, as far as the shortcut
    /// covers them and the socket takes them. Call parked, with the queue
    /// not empty.
    fn write_queue(&self, state: &mut State, writer: &HubWriter) -> Wrote {
        let frame = writer.frame;
        let counters = &writer.counters;
        loop {
            let mut frames: [Option<Bytes>; MAX_FRAMES] = Default::default();
            let mut count = 0;
            let mut position = state.parked_position;
            for item in state.queue.iter().take(MAX_FRAMES) {
                let message = &item.message;
                let next = message.position;
                let covered = item.written == 0
                    && item.slot == u32::from(state.parked_slot)
                    && !message.is_gap()
                    && message.excluded != Some(self.id)
                    && next.epoch == position.epoch
                    && next.offset > position.offset;
                if !covered {
                    break;
                }
                frames[count] = Some(frame(message));
                position = next;
                count += 1;
            }
            if count == 0 {
                return Wrote::Stopped;
            }
            let mut slices = [IoSlice::new(&[]); MAX_FRAMES];
            for (slice, bytes) in slices.iter_mut().zip(frames.iter().flatten()) {
                *slice = IoSlice::new(bytes);
            }
            let sent = sendmsg::<SockaddrStorage>(
                self.fd,
                &slices[..count],
                &[],
                MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
                None,
            )
            .map_err(io::Error::from);
            // Anything but bytes taken (a full socket, a peer gone) is the
            // task's to meet on its own write.
            let Ok(mut sent) = sent else {
                return Wrote::Stopped;
            };
            counters.writes.inc();
            let mut whole = 0;
            for bytes in frames.iter().flatten() {
                if sent < bytes.len() {
                    break;
                }
                sent -= bytes.len();
                whole += 1;
            }
            counters.delivered.inc_by(whole as u64);
            if whole > 0 {
                state.parked_position = state.queue[whole - 1].message.position;
                state.queue.drain(..whole);
            }
            if sent > 0 {
                // Part of the next frame went out: it is sent, as far as
                // the client's position goes; the task writes the rest.
                let head = &mut state.queue[0];
                state.parked_position = head.message.position;
                head.written = sent as u32;
                return Wrote::Stopped;
            }
            if state.queue.is_empty() {
                return Wrote::All;
            }
            if whole < count {
                return Wrote::Stopped;
            }
        }
    }
}

impl Handed {
    fn add(&mut self, deliveries: usize, bytes: usize) {
        let saturate = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        self.deliveries = self.deliveries.saturating_add(saturate(deliveries));
        self.bytes = self.bytes.saturating_add(saturate(bytes));
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
    fn connection_id(&self) -> Option<u64> {
        Some(self.id)
    }

    fn deliver(&self, slot: u32, message: &Arc<Message>) -> Handoff {
        let waker = {
            let mut state = self.state.lock();
            if state.flags & OVERFLOWED != 0 {
                return Handoff::Queued;
            }
            let size = message.data.len() + FRAMING_BYTES;
            if state.bytes as usize + size > self.limit as usize {
                state.flags = (state.flags | OVERFLOWED) & !DIRECT;
                // A frame already partly on the wire stays, so that the
                // close does not cut it.
                let keep = usize::from(state.queue.first().is_some_and(|first| first.written > 0));
                state.queue.truncate(keep);
                state.bytes = 0;
            } else {
                state.handed.add(1, message.data.len());
                state.queue.push(Queued {
                    slot,
                    written: 0,
                    message: message.clone(),
                });
                // Fits: the sum is at most `limit`, a `u32`.
                state.bytes += size as u32;
                if state.flags & DIRECT != 0 {
                    // Not pending for the lag: the delivery that hands it
                    // over writes it, and counts as pending until it has.
                    // One flush writes all that its hand-overs queued.
                    return match state.queue.len() {
                        1 => Handoff::Flush,
                        _ => Handoff::Queued,
                    };
                }
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
        Handoff::Queued
    }

    /// The hub's write to a parked connection, or (`Flush::Wake`) its
    /// unparking, so that its task writes instead.
    fn flush(&self, how: Flush) {
        let Some(writer) = self.writer.as_deref() else {
            return;
        };
        let waker = {
            let mut state = self.state.lock();
            if state.queue.is_empty() {
                return;
            }
            let wrote = if state.flags & DIRECT != 0 && how == Flush::Write {
                self.write_queue(&mut state, writer)
            } else {
                // Unparked meanwhile (the task has it: a wake-up spare), or
                // to be written by the task.
                Wrote::Stopped
            };
            match wrote {
                Wrote::All => {
                    state.bytes = 0;
                    // The queue's room goes back at once, as a drain would.
                    state.queue = Queue::new();
                    None
                }
                Wrote::Stopped => {
                    state.flags &= !DIRECT;
                    // What is left waits for the task from now on.
                    if state.first_stamp == 0 {
                        state.first_stamp = state.queue[0].message.stamp();
                        fanout::lag::pending(state.first_stamp);
                    }
                    state.bytes = state
                        .queue
                        .iter()
                        .map(|item| item.message.data.len() + FRAMING_BYTES)
                        .sum::<usize>()
                        .min(self.limit as usize) as u32;
                    state.waker.take()
                }
            }
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
    use fanout::{ChannelKey, Epoch};
    use std::{
        io::Read,
        os::{fd::AsRawFd, unix::net::UnixStream},
        sync::atomic::{AtomicUsize, Ordering},
        task::{Wake, Waker},
    };

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

    fn at(offset: u64) -> Position {
        Position {
            epoch: Epoch::from_u64(1),
            offset,
        }
    }

    /// The payload itself, as the frame: what the socket's peer reads back.
    fn payload(message: &Message) -> Bytes {
        message.data.clone()
    }

    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// An outbox the hub may write to, over one end of a socket pair.
    fn direct(limit: usize) -> (Outbox, UnixStream, UnixStream) {
        let (ours, peer) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        peer.set_nonblocking(true).unwrap();
        let outbox = Outbox::new(
            limit,
            Some(Direct {
                fd: ours.as_raw_fd(),
                writer: Arc::new(HubWriter {
                    frame: payload,
                    counters: crate::Metrics::new()
                        .transport(crate::Transport::Ws)
                        .clone(),
                }),
            }),
        );
        (outbox, ours, peer)
    }

    fn read_all(peer: &mut UnixStream) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buffer = [0; 64 * 1024];
        while let Ok(n) = peer.read(&mut buffer) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buffer[..n]);
        }
        out
    }

    #[test]
    fn overflow_drops_queue_and_flags() {
        let outbox = Outbox::new(1000, None);
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
        let outbox = Outbox::new(1000, None);
        for round in 0..10 {
            outbox.deliver(0, &message(400, round * 2 + 1));
            outbox.deliver(0, &message(400, round * 2 + 2));
            let drained = outbox.drain(true, Waker::noop());
            assert_eq!(drained.items.len(), 2);
            assert!(!drained.overflowed);
        }
    }

    /// With the `Arc`'s two counts, 96 bytes are jemalloc's 112-byte class;
    /// one word more is the 128-byte class, 16 bytes more per connection.
    #[test]
    fn the_outbox_stays_in_its_allocation_class() {
        let size = std::mem::size_of::<Outbox>();
        assert!(size <= 96, "an outbox is {size} bytes");
    }

    #[test]
    fn tick_and_shutdown_are_signals() {
        let outbox = Outbox::new(1000, None);
        outbox.tick();
        outbox.shut_down(Duration::from_millis(5));
        let drained = outbox.drain(true, Waker::noop());
        assert!(drained.tick);
        assert_eq!(drained.shutdown, Some(Duration::from_millis(5)));
        let again = outbox.drain(true, Waker::noop());
        assert!(!again.tick, "a tick is seen once");
        assert!(again.shutdown.is_some(), "shutdown stays");
    }

    #[test]
    fn a_parked_connection_gets_its_messages_from_the_hub_without_a_wake_up() {
        let (outbox, _ours, mut peer) = direct(1 << 20);
        let wakes = Arc::new(Wakes::default());
        let waker = Waker::from(wakes.clone());
        outbox.drain(true, &waker);
        outbox.park(3, at(10));
        for offset in 11..=12 {
            assert_eq!(outbox.deliver(3, &message(5, offset)), Handoff::Flush);
            outbox.flush(Flush::Write);
        }
        assert_eq!(read_all(&mut peer), b"xxxxxxxxxx");
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0, "the task slept");
        let drained = outbox.drain(true, &waker);
        assert_eq!(drained.parked, Some((3, at(12))), "the position comes back");
        assert!(drained.items.is_empty() && drained.started.is_none());
        // Unparked by the drain: the next message is the task's again.
        assert_eq!(outbox.deliver(3, &message(5, 13)), Handoff::Queued);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert!(read_all(&mut peer).is_empty());
    }

    #[test]
    fn a_busy_hub_hands_a_parked_connection_back_to_its_task() {
        let (outbox, _ours, mut peer) = direct(1 << 20);
        let wakes = Arc::new(Wakes::default());
        let waker = Waker::from(wakes.clone());
        outbox.drain(true, &waker);
        outbox.park(3, at(10));
        assert_eq!(outbox.deliver(3, &message(5, 11)), Handoff::Flush);
        outbox.flush(Flush::Wake);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "the task is woken");
        assert!(read_all(&mut peer).is_empty(), "nothing was written");
        // Unparked: what comes next queues for the task too, and the task
        // writes both in one go.
        assert_eq!(outbox.deliver(3, &message(5, 12)), Handoff::Queued);
        let drained = outbox.drain(true, &waker);
        assert_eq!(drained.parked, Some((3, at(10))), "nothing went out");
        let offsets: Vec<u64> = drained
            .items
            .iter()
            .map(|item| item.message.position.offset)
            .collect();
        assert_eq!(offsets, [11, 12]);
    }

    #[test]
    fn what_the_shortcut_does_not_cover_goes_to_the_task() {
        let gap = Arc::new(Message::gap(ChannelKey::parse("s/c").unwrap(), at(20)));
        let other_epoch = Arc::new(Message::new(
            ChannelKey::parse("s/c").unwrap(),
            Position {
                epoch: Epoch::from_u64(2),
                offset: 1,
            },
            Bytes::from_static(b"y"),
        ));
        let cases = [
            (3, message(5, 10)), // already sent
            (4, message(5, 11)), // another slot
            (3, gap),
            (3, other_epoch),
        ];
        for (slot, uncovered) in cases {
            let (outbox, _ours, mut peer) = direct(1 << 20);
            let wakes = Arc::new(Wakes::default());
            let waker = Waker::from(wakes.clone());
            outbox.drain(true, &waker);
            outbox.park(3, at(10));
            assert_eq!(outbox.deliver(slot, &uncovered), Handoff::Flush);
            outbox.flush(Flush::Write);
            assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "the task is woken");
            assert!(read_all(&mut peer).is_empty(), "nothing was written");
            let drained = outbox.drain(true, &waker);
            assert_eq!(drained.parked, Some((3, at(10))));
            assert_eq!(drained.items.len(), 1);
            assert_eq!(drained.items[0].written, 0);
        }
    }

    #[test]
    fn a_frame_the_socket_took_part_of_is_handed_over_first() {
        let (outbox, _ours, mut peer) = direct(8 << 20);
        let wakes = Arc::new(Wakes::default());
        let waker = Waker::from(wakes.clone());
        outbox.drain(true, &waker);
        outbox.park(0, at(0));
        let big = message(4 << 20, 1);
        outbox.deliver(0, &big);
        outbox.flush(Flush::Write);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "the task takes over");
        // Behind it, a message for the task, and an overflow that keeps the started frame.
        outbox.deliver(0, &message(5, 2));
        let first = read_all(&mut peer).len();
        assert!(first > 0 && first < big.data.len());
        let drained = outbox.drain(false, &waker);
        let started = drained.started.expect("the partly written frame");
        assert_eq!(started.written as usize, first);
        assert_eq!(
            drained.parked,
            Some((0, at(1))),
            "a frame begun counts as sent"
        );
        assert!(drained.items.is_empty(), "not taken");
        assert_eq!(outbox.drain(true, &waker).items.len(), 1);
    }

    #[test]
    fn overflow_keeps_a_frame_already_on_the_wire() {
        let (outbox, _ours, _peer) = direct(5 << 20);
        outbox.drain(true, Waker::noop());
        outbox.park(0, at(0));
        outbox.deliver(0, &message(4 << 20, 1));
        outbox.flush(Flush::Write);
        outbox.deliver(0, &message(2 << 20, 2));
        let drained = outbox.drain(true, Waker::noop());
        assert!(drained.overflowed);
        assert!(drained.started.is_some(), "the close does not cut it");
        assert!(drained.items.is_empty());
    }

    #[test]
    fn a_detached_outbox_is_never_written_to() {
        let (outbox, _ours, mut peer) = direct(1 << 20);
        outbox.drain(true, Waker::noop());
        outbox.park(0, at(0));
        outbox.detach();
        assert_eq!(outbox.deliver(0, &message(5, 1)), Handoff::Queued);
        outbox.flush(Flush::Write);
        assert!(read_all(&mut peer).is_empty());
    }
}
