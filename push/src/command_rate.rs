//! How fast one client may send frames: a token bucket per connection, kept
//! in four bytes.
//!
//! Every client frame costs the server a parse and usually an answer, and a
//! subscribe costs a history read; a client looping subscribe/unsubscribe
//! must not get these at line rate. The bucket is a GCRA (the "virtual
//! scheduling" form of a token bucket): one timestamp, the theoretical
//! arrival time (`tat`) of the next frame, in milliseconds of a process-wide
//! clock, wrapping in a `u32`. A frame is let through while `tat` is at most
//! one burst ahead of now. A refused frame still moves `tat` on, so a client
//! that keeps sending while refused digs itself deeper; once it is a second
//! burst ahead, the connection is closed.
//!
//! Invariants:
//! - Four bytes per connection: the session future is held to its
//!   allocation class (`session.rs`).
//! - The clock wraps every 49 days; comparisons are wrapping differences,
//!   good for ±24 days. The shared ticker pulls a `tat` left behind up to now
//!   ([`CommandRate::catch_up`]), so it never falls that far behind.

use std::{sync::OnceLock, time::Instant};

/// What to do with one client frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pace {
    /// Within the rate: read it.
    Go,
    /// Over the rate: refuse it, keep the connection.
    Refuse,
    /// Still sending a whole burst past the limit: close the connection.
    Close,
}

/// The theoretical arrival time of the next frame (see the module docs).
#[derive(Debug, Clone, Copy)]
pub(crate) struct CommandRate {
    tat: u32,
}

impl CommandRate {
    /// A full bucket.
    pub fn new() -> Self {
        Self { tat: now_ms() }
    }

    /// Charges one frame at `rate` per second with `burst` at once; a rate
    /// of 0 lets everything through.
    pub fn take(&mut self, rate: u32, burst: u32) -> Pace {
        self.take_at(now_ms(), rate, burst)
    }

    fn take_at(&mut self, now: u32, rate: u32, burst: u32) -> Pace {
        if rate == 0 {
            return Pace::Go;
        }
        // Milliseconds between frames at the rate (at most 1000 frames a
        // second are told apart; a faster rate counts as 1000).
        let interval = (1000 / rate).max(1);
        let tolerance = interval.saturating_mul(burst.max(1));
        let tat = if ahead(self.tat, now) > 0 {
            self.tat
        } else {
            now
        };
        self.tat = tat.wrapping_add(interval);
        let debt = ahead(self.tat, now).max(0) as u32;
        if debt <= tolerance {
            Pace::Go
        } else if debt <= tolerance.saturating_mul(2) {
            Pace::Refuse
        } else {
            Pace::Close
        }
    }

    /// Pulls a `tat` left in the past up to now (called on each shared
    /// tick), so that the wrapping clock never leaves it 24 days behind.
    pub fn catch_up(&mut self) {
        let now = now_ms();
        if ahead(self.tat, now) < 0 {
            self.tat = now;
        }
    }
}

/// How far `tat` is ahead of `now`, in wrapping milliseconds.
fn ahead(tat: u32, now: u32) -> i32 {
    tat.wrapping_sub(now) as i32
}

/// Milliseconds since the first call, wrapping.
fn now_ms() -> u32 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate_then_refusals_then_the_close() {
        // 50 a second (one per 20 ms), 10 at once.
        let mut rate = CommandRate { tat: 1000 };
        let go = (0..10)
            .filter(|_| rate.take_at(1000, 50, 10) == Pace::Go)
            .count();
        assert_eq!(go, 10, "the burst goes through");
        // The eleventh frame at the same instant is one interval too many.
        assert_eq!(rate.take_at(1000, 50, 10), Pace::Refuse);
        // Refused frames dig deeper: another burst's worth, and it closes.
        let pace: Vec<Pace> = (0..10).map(|_| rate.take_at(1000, 50, 10)).collect();
        assert_eq!(pace[..9], [Pace::Refuse; 9]);
        assert_eq!(pace[9], Pace::Close);
    }

    #[test]
    fn a_client_that_waits_is_served_again() {
        let mut rate = CommandRate { tat: 0 };
        for _ in 0..12 {
            rate.take_at(0, 50, 10);
        }
        assert_eq!(rate.take_at(0, 50, 10), Pace::Refuse);
        // 20 ms per frame: after a quiet second the bucket is full again.
        assert_eq!(rate.take_at(1000, 50, 10), Pace::Go);
        // A steady 50 a second never trips it.
        let mut steady = CommandRate { tat: 0 };
        assert!((0..1000).all(|i| steady.take_at(i * 20, 50, 10) == Pace::Go));
    }

    #[test]
    fn the_clock_may_wrap_and_zero_is_no_limit() {
        let mut rate = CommandRate { tat: u32::MAX - 5 };
        assert_eq!(rate.take_at(u32::MAX - 5, 50, 1), Pace::Go);
        assert_eq!(rate.take_at(40, 50, 1), Pace::Go, "across the wrap");
        let mut free = CommandRate { tat: 0 };
        assert!((0..10_000).all(|_| free.take_at(0, 0, 1) == Pace::Go));
    }
}
