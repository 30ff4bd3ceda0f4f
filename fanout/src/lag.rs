//! How far this node's delivery runs behind: the time from a message
//! reaching the node to the moment a connection it woke gets to run.
//!
//! Herald answers a publish before it fans the message out, so when the node
//! has more to write than its cores can, the backlog does not show to the
//! publisher: it sits in the delivery queues and in woken connections
//! waiting for a core. This meter makes it visible, and the publish path
//! (in `api`) pushes publishers back while it is past `delivery.max_lag_ms`.
//!
//! What is measured, and why:
//! - Every message is stamped when it reaches the node ([`now_ms`], in
//!   [`crate::Message::new`]). When a delivery finds a connection with
//!   nothing pending, its outbox keeps that stamp ([`pending`]); when the
//!   connection runs, the outbox hands the stamp back ([`ran`]). The
//!   stamp's age then is the node's backlog as that connection saw it: the
//!   delivery queue's wait plus the time it waited for a core.
//! - The lag is the age of the oldest stamp still pending (in an outbox,
//!   or a message in a delivery worker's queue), which grows the moment a
//!   backlog starts and is 0 the moment it has cleared. Stamps are counted
//!   per 16 ms slot, one second of slots, in per-thread shards so that
//!   threads do not share counters. A backlog older than a second is seen
//!   by the window meter: the largest age reported by connections that ran
//!   in the last one to two windows of [`WINDOW_MS`], which counts only
//!   once it is past the second the slots reach.
//! - The outlook ([`outlook_ms`]) is what publishers are admitted by: the
//!   lag plus the connections pending times the time one connection's run
//!   took lately while work waited (runs counted per shard, paced over
//!   spans of 16 ms or more during which something was pending throughout,
//!   so that an idle node's few runs never read as a slow one).
//! - A connection whose own socket is full is woken and runs like any other,
//!   and reports only its wait for a core: one slow client (which the outbox
//!   bound deals with) never reads as the node lagging.
//! - The meter is process-wide: the backlog is the node's CPU time, which
//!   every channel shares, so every publisher on the node is pushed back.
//!
//! Cost: one clock read per publish (the stamp) and one per connection run
//! that follows a delivery; one uncontended atomic add when a connection
//! gets something pending and one when it runs; reading scans the slots,
//! at most once per millisecond.

use std::{
    sync::{
        OnceLock,
        atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed},
    },
    time::Instant,
};

/// Length of one window of the meter, in milliseconds (a power of two, so
/// that a window number is a shift).
pub const WINDOW_MS: u32 = 1 << WINDOW_SHIFT;
const WINDOW_SHIFT: u32 = 7;

/// Milliseconds since the process's first call, wrapping after 49 days;
/// never 0, which outboxes read as "no stamp".
pub fn now_ms() -> u32 {
    static START: OnceLock<Instant> = OnceLock::new();
    let elapsed = START.get_or_init(Instant::now).elapsed().as_millis() as u32;
    elapsed.max(1)
}

/// Work stamped `stamp` is waiting: a connection got a message with nothing
/// else pending, or a message waits for a delivery worker. It counts until
/// [`ran`] or [`settled`] with the same stamp.
pub fn pending(stamp: u32) {
    PENDING.add(stamp, 1);
}

/// The connection that was [`pending`] for `stamp` ran now: no longer
/// pending, and its wait is reported to the window meter.
pub fn ran(stamp: u32) {
    PENDING.ran(stamp);
    let now = now_ms();
    METER.record(now, now.wrapping_sub(stamp));
}

/// What was [`pending`] for `stamp` is no longer (a delivery worker handed
/// the message to the hub, or a connection is gone without running).
pub fn settled(stamp: u32) {
    PENDING.add(stamp, u32::MAX);
}

/// The node's delivery lag in milliseconds: 0 when nothing is pending;
/// otherwise the age of the oldest stamp still pending, or, when
/// connections reported waits past what the slots see (a second), the
/// largest of those over the last one to two windows.
pub fn current_ms() -> u32 {
    reading().lag
}

/// What the lag will have grown to by the time every connection pending now
/// has run, at the pace connections ran lately while a backlog waited: the
/// lag plus the pending connections times the time one run took. It is the
/// lag while no such pace is known (nothing waited lately).
///
/// This is what publishers are admitted by: the lag itself only shows a
/// backlog once its oldest message has aged, while a message admitted now
/// waits behind every connection already woken, which the outlook counts.
pub fn outlook_ms() -> u32 {
    reading().outlook
}

#[derive(Clone, Copy)]
struct Reading {
    lag: u32,
    outlook: u32,
}

/// The lag and the outlook, computed at most once per millisecond.
fn reading() -> Reading {
    let now = now_ms();
    let cached = CACHED.load(Relaxed);
    let outlook = CACHED_OUTLOOK.load(Relaxed);
    if (cached >> 32) as u32 == now && (outlook >> 32) as u32 == now {
        return Reading {
            lag: cached as u32,
            outlook: outlook as u32,
        };
    }
    let (oldest, count, runs) = PENDING.scan(now);
    let lag = combine(oldest, METER.read(now));
    let per_run_us = PACE.lock().update(now, count, runs);
    let outlook = match per_run_us {
        Some(us) if count > 0 => {
            let ahead_ms = (f64::from(count) * f64::from(us) / 1000.0) as u32;
            lag.saturating_add(ahead_ms)
        }
        _ => lag,
    };
    CACHED.store((u64::from(now) << 32) | u64::from(lag), Relaxed);
    CACHED_OUTLOOK.store((u64::from(now) << 32) | u64::from(outlook), Relaxed);
    Reading { lag, outlook }
}

static CACHED_OUTLOOK: AtomicU64 = AtomicU64::new(0);

static PACE: parking_lot::Mutex<Pace> = parking_lot::Mutex::new(Pace::new());

/// How long one connection's run takes while a backlog waits: runs counted
/// over spans of at least [`PACE_SPAN_MS`] during which something was
/// pending throughout (so the node was working on it, not idle), smoothed.
struct Pace {
    /// Start of the current span, and the run count then; `None` when
    /// nothing was pending at the last reading.
    span: Option<(u32, u32)>,
    /// Microseconds per run, smoothed; `None` until a span completed.
    per_run_us: Option<f32>,
    /// When the last span completed: an estimate older than
    /// [`PACE_MAX_AGE_MS`] is forgotten (the load may be another now).
    measured_at: u32,
}

/// The shortest span a pace is measured over.
const PACE_SPAN_MS: u32 = 16;
/// How long a pace is trusted without a new span.
const PACE_MAX_AGE_MS: u32 = 2000;

impl Pace {
    const fn new() -> Self {
        Self {
            span: None,
            per_run_us: None,
            measured_at: 0,
        }
    }

    /// Takes a reading (`pending` connections and messages now, `runs` so
    /// far, wrapping) and returns the pace.
    fn update(&mut self, now: u32, pending: u32, runs: u32) -> Option<f32> {
        if self.per_run_us.is_some() && now.wrapping_sub(self.measured_at) > PACE_MAX_AGE_MS {
            self.per_run_us = None;
        }
        if pending == 0 {
            self.span = None;
            return self.per_run_us;
        }
        match self.span {
            None => self.span = Some((now, runs)),
            Some((start, runs_then)) => {
                let elapsed = now.wrapping_sub(start);
                if elapsed >= PACE_SPAN_MS {
                    // Nothing ran in a whole span with work waiting: one run
                    // took the span at least.
                    let ran = runs.wrapping_sub(runs_then).max(1);
                    let sample = elapsed as f32 * 1000.0 / ran as f32;
                    self.per_run_us = Some(match self.per_run_us {
                        Some(previous) => (previous + sample) / 2.0,
                        None => sample,
                    });
                    self.measured_at = now;
                    self.span = Some((now, runs));
                }
            }
        }
        self.per_run_us
    }
}

/// The lag from its two readings: nothing pending is no lag; otherwise the
/// age of the oldest pending stamp, unless connections lately reported a
/// wait longer than the slots reach ([`HORIZON_MS`]), which the slots then
/// read short (an older stamp counts in the slot of a newer one).
///
/// The window meter is not simply the larger reading: its memory (up to
/// two windows) held the lag high after the backlog had cleared, and at
/// the start of the next round over the connections. Measured at
/// saturation (10,000 subscribers, one core), publishers then waited
/// 150-200 ms after each round while the node sat idle, a third of the
/// time.
fn combine(oldest_pending: u32, reported: u32) -> u32 {
    if oldest_pending == 0 {
        0
    } else if reported >= HORIZON_MS {
        oldest_pending.max(reported)
    } else {
        oldest_pending
    }
}

/// The last reading and the millisecond it was taken, so that publishers
/// arriving together scan the slots once.
static CACHED: AtomicU64 = AtomicU64::new(0);

static PENDING: Pending = Pending::new();

/// Stamps of one slot span `1 << SLOT_SHIFT` ms.
const SLOT_SHIFT: u32 = 4;
/// Slots kept: a second of stamps. A stamp older than that counts in the
/// slot of a newer one (and is seen by the window meter when it runs).
const SLOTS: usize = 64;
/// How far back the slots see, in milliseconds.
const HORIZON_MS: u32 = (SLOTS as u32) << SLOT_SHIFT;
/// Counter shards; each thread adds to one, chosen on its first use.
const SHARDS: usize = 8;

/// Connections pending, by the slot of their stamp, as the difference of
/// two wrapping counts summed over shards: exact however the adds and the
/// subtracts are spread over threads.
struct Pending {
    shards: [Shard; SHARDS],
}

#[repr(align(64))]
struct Shard {
    slots: [AtomicU32; SLOTS],
    /// Connection runs that took a stamp ([`ran`]), wrapping.
    runs: AtomicU32,
}

impl Pending {
    const fn new() -> Self {
        Self {
            shards: [const {
                Shard {
                    slots: [const { AtomicU32::new(0) }; SLOTS],
                    runs: AtomicU32::new(0),
                }
            }; SHARDS],
        }
    }

    fn add(&self, stamp: u32, delta: u32) {
        let slot = (stamp >> SLOT_SHIFT) as usize % SLOTS;
        self.shards[shard()].slots[slot].fetch_add(delta, Relaxed);
    }

    /// A connection pending for `stamp` ran: one lookup of this thread's
    /// shard for both counts, since this is once per connection run.
    fn ran(&self, stamp: u32) {
        let shard = &self.shards[shard()];
        let slot = (stamp >> SLOT_SHIFT) as usize % SLOTS;
        shard.slots[slot].fetch_sub(1, Relaxed);
        shard.runs.fetch_add(1, Relaxed);
    }

    /// In one pass over the slots: the milliseconds since the start of the
    /// oldest slot with something pending (0 when nothing is), how many are
    /// pending, and the runs so far (wrapping).
    fn scan(&self, now: u32) -> (u32, u32, u32) {
        let newest = now >> SLOT_SHIFT;
        let mut oldest_age = None;
        let mut count = 0u32;
        for back in (0..SLOTS as u32).rev() {
            let slot_number = newest.wrapping_sub(back);
            let slot = slot_number as usize % SLOTS;
            let pending = self.shards.iter().fold(0u32, |sum, shard| {
                sum.wrapping_add(shard.slots[slot].load(Relaxed))
            });
            if pending != 0 && oldest_age.is_none() {
                oldest_age = Some(now.wrapping_sub(slot_number << SLOT_SHIFT));
            }
            count = count.wrapping_add(pending);
        }
        let runs = self.shards.iter().fold(0u32, |sum, shard| {
            sum.wrapping_add(shard.runs.load(Relaxed))
        });
        // A count "below zero" is a subtract racing its add: nothing pending.
        let count = if count > u32::MAX / 2 { 0 } else { count };
        (oldest_age.unwrap_or(0), count, runs)
    }

    /// Milliseconds since the start of the oldest slot with a connection
    /// pending; 0 when none is.
    #[cfg(test)]
    fn oldest_age(&self, now: u32) -> u32 {
        self.scan(now).0
    }
}

/// This thread's counter shard.
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Relaxed) % SHARDS;
    }
    SHARD.with(|shard| *shard)
}

static METER: Meter = Meter::new();

struct Meter {
    /// The window `current` belongs to.
    window: AtomicU32,
    /// The largest lag reported in `window`.
    current: AtomicU32,
    /// The largest lag reported in the window before.
    previous: AtomicU32,
}

impl Meter {
    const fn new() -> Self {
        Self {
            window: AtomicU32::new(0),
            current: AtomicU32::new(0),
            previous: AtomicU32::new(0),
        }
    }

    fn record(&self, now: u32, lag: u32) {
        // A stamp from the future (a clock read racing the stamp) is no lag.
        let lag = if lag > u32::MAX / 2 { 0 } else { lag };
        self.rotate(now >> WINDOW_SHIFT);
        if lag > self.current.load(Relaxed) {
            self.current.fetch_max(lag, Relaxed);
        }
    }

    fn read(&self, now: u32) -> u32 {
        let window = now >> WINDOW_SHIFT;
        let recorded = self.window.load(Relaxed);
        match window.wrapping_sub(recorded) {
            0 => self.current.load(Relaxed).max(self.previous.load(Relaxed)),
            1 => self.current.load(Relaxed),
            _ => 0,
        }
    }

    /// Starts window `window` if it is not the current one. Two reporters
    /// racing here may lose a report of the old window; the meter is a gauge
    /// for pushing back, and the next report corrects it.
    fn rotate(&self, window: u32) {
        let recorded = self.window.load(Relaxed);
        if recorded == window
            || self
                .window
                .compare_exchange(recorded, window, Relaxed, Relaxed)
                .is_err()
        {
            return;
        }
        let last = self.current.swap(0, Relaxed);
        let previous = if window.wrapping_sub(recorded) == 1 {
            last
        } else {
            0
        };
        self.previous.store(previous, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_largest_lag_of_two_windows_then_forgets_it() {
        let meter = Meter::new();
        let start = 10 * WINDOW_MS;
        meter.record(start, 40);
        meter.record(start + 1, 300);
        meter.record(start + 2, 20);
        assert_eq!(meter.read(start + 3), 300);
        // The next window still shows the last one's maximum.
        meter.record(start + WINDOW_MS, 10);
        assert_eq!(meter.read(start + WINDOW_MS + 1), 300);
        // A window later, only what was reported since counts.
        meter.record(start + 2 * WINDOW_MS, 15);
        assert_eq!(meter.read(start + 2 * WINDOW_MS), 15);
        // Nothing reported for two windows: no lag.
        assert_eq!(meter.read(start + 5 * WINDOW_MS), 0);
        // Reading without reports in the window after: only the previous one.
        meter.record(start + 6 * WINDOW_MS, 70);
        assert_eq!(meter.read(start + 7 * WINDOW_MS), 70);
    }

    #[test]
    fn the_oldest_pending_stamp_is_the_lag_unless_waits_passed_the_slots() {
        for (oldest_pending, reported, lag) in [
            (0, 0, 0),
            (0, 400, 0),
            (0, 3000, 0),
            // A round just started: the last one's waits do not count.
            (30, 400, 30),
            (300, 20, 300),
            // Past the slots' second: the meter's reading.
            (500, 1500, 1500),
        ] {
            assert_eq!(
                combine(oldest_pending, reported),
                lag,
                "{oldest_pending} {reported}"
            );
        }
    }

    #[test]
    fn the_pace_is_measured_only_while_work_waits() {
        let mut pace = Pace::new();
        // Nothing pending: no pace, however much ran.
        assert_eq!(pace.update(1000, 0, 50), None);
        // A backlog: the span starts, and a pace comes once it is long enough.
        assert_eq!(pace.update(1001, 10_000, 100), None);
        assert_eq!(pace.update(1010, 8_000, 2_100), None);
        // 3,200 runs in 16 ms: 5 µs each.
        assert_eq!(pace.update(1017, 6_000, 3_300), Some(5.0));
        // The next span took 20 µs a run: smoothed to 12.5.
        assert_eq!(pace.update(1033, 5_200, 4_100), Some(12.5));
        // The backlog cleared: the pace stays for the next one...
        assert_eq!(pace.update(1040, 0, 4_500), Some(12.5));
        // ...but not for ever.
        assert_eq!(pace.update(1040 + PACE_MAX_AGE_MS, 0, 4_500), None);
        // A span in which nothing ran with work waiting: one run took it all.
        let mut stuck = Pace::new();
        stuck.update(5000, 10, 7);
        assert_eq!(stuck.update(5032, 10, 7), Some(32_000.0));
    }

    #[test]
    fn a_stamp_from_the_future_is_no_lag() {
        let meter = Meter::new();
        meter.record(WINDOW_MS, 5u32.wrapping_sub(9));
        assert_eq!(meter.read(WINDOW_MS), 0);
    }

    #[test]
    fn the_oldest_pending_stamp_is_the_lag_until_its_connection_runs() {
        let pending = Pending::new();
        let now = 1000 * WINDOW_MS;
        assert_eq!(pending.oldest_age(now), 0);
        let old = now - 200;
        let newer = now - 40;
        pending.add(old, 1);
        pending.add(newer, 1);
        pending.add(newer, 1);
        // The slot's start, so at most one slot more than the stamp's age.
        let age = pending.oldest_age(now);
        assert!((200..200 + (1 << SLOT_SHIFT)).contains(&age), "{age}");
        pending.add(old, u32::MAX);
        let age = pending.oldest_age(now);
        assert!((40..40 + (1 << SLOT_SHIFT)).contains(&age), "{age}");
        pending.add(newer, u32::MAX);
        pending.add(newer, u32::MAX);
        assert_eq!(pending.oldest_age(now), 0);
    }

    #[test]
    fn pending_counts_balance_across_threads() {
        let pending = std::sync::Arc::new(Pending::new());
        let stamp = 5000;
        let adder = {
            let pending = pending.clone();
            std::thread::spawn(move || (0..1000).for_each(|_| pending.add(stamp, 1)))
        };
        adder.join().unwrap();
        (0..1000).for_each(|_| pending.add(stamp, u32::MAX));
        assert_eq!(pending.oldest_age(stamp + 1), 0);
    }

    #[test]
    fn the_clock_is_never_zero() {
        assert_ne!(now_ms(), 0);
    }
}
