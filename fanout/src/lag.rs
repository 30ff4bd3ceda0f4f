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
//!   [`crate::Message::new`]). When a delivery wakes a connection, the
//!   connection's outbox keeps that stamp; when the connection runs, it
//!   reports the stamp's age ([`record`]). That age is the node's backlog:
//!   the delivery queue's wait plus the time the connection waited for a
//!   core.
//! - A connection whose own socket is full is woken and runs like any other,
//!   and reports only that wait: one slow client (which the outbox bound
//!   deals with) never reads as the node lagging.
//! - The meter keeps the largest age reported in the current window of
//!   [`WINDOW_MS`] and in the one before, so a backlog that has drained stops
//!   counting within two windows, and a reading is never older than that.
//! - The meter is process-wide: the backlog is the node's CPU time, which
//!   every channel shares, so every publisher on the node is pushed back.
//!
//! Cost: one clock read per publish (the stamp), and one per connection run
//! that follows a delivery wake; two atomic loads per report, and a write
//! only when a report raises the window's maximum.

use std::{
    sync::{
        OnceLock,
        atomic::{AtomicU32, Ordering::Relaxed},
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

/// Reports that a connection woken for a message stamped `stamp` ran now.
pub fn record(stamp: u32) {
    let now = now_ms();
    METER.record(now, now.wrapping_sub(stamp));
}

/// The node's delivery lag in milliseconds: the largest reported over the
/// last one to two windows (0 when nothing was delivered lately).
pub fn current_ms() -> u32 {
    METER.read(now_ms())
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
    fn a_stamp_from_the_future_is_no_lag() {
        let meter = Meter::new();
        meter.record(WINDOW_MS, 5u32.wrapping_sub(9));
        assert_eq!(meter.read(WINDOW_MS), 0);
    }

    #[test]
    fn the_clock_is_never_zero() {
        assert_ne!(now_ms(), 0);
    }
}
