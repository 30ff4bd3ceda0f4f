//! One channel's history in the memory engine: a ring bounded by count and age.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;

use crate::{ChannelKey, Epoch, Message, Position};

/// How much history each channel keeps.
///
/// The rule, the same in every engine ([`HistoryConfig::keeps`]): a message
/// is kept while it is among the newest `size` of its channel, **or** younger
/// than `min_age`; but never once `max_size` newer messages follow it, and
/// never past `ttl`. `size` is what a quiet channel keeps; `min_age` is what
/// a busy one keeps, so that clients coming back from a reconnect storm (a
/// node dying, a deploy) find everything they missed however fast their
/// channel moved meanwhile; `max_size` bounds what a firehose channel costs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryConfig {
    /// The newest messages always kept per channel (within `ttl`).
    pub size: usize,
    /// Messages younger than this are kept too, beyond `size`, up to
    /// `max_size`. Zero keeps by count only.
    pub min_age: Duration,
    /// The most messages a channel keeps, however young; `size` where that
    /// is larger (see [`HistoryConfig::cap`]).
    pub max_size: usize,
    /// How long a message stays in history at most.
    pub ttl: Duration,
    /// How long a publish's idempotency key is remembered per channel.
    pub dedupe_ttl: Duration,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            size: 100,
            // Six times the reconnect storm measured for 10k clients (about
            // 10 s until all were back; docs/benchmarks.md), and a tenth of
            // the TTL.
            min_age: Duration::from_secs(60),
            max_size: 10_000,
            ttl: Duration::from_secs(600),
            dedupe_ttl: Duration::from_secs(3600),
        }
    }
}

impl HistoryConfig {
    /// The most messages one channel keeps: `max_size`, or `size` where
    /// that is larger (a config that asks for more by count gets it), or
    /// just `size` when nothing is kept by age. 0: history is off.
    pub fn cap(&self) -> usize {
        if self.min_age.is_zero() {
            self.size
        } else {
            self.max_size.max(self.size)
        }
    }

    /// Whether a message `age` old, with `newer` messages published to its
    /// channel after it, is still in history.
    ///
    /// Monotone: a message older, or with more after it, is never kept when
    /// a younger one is not, so what a channel keeps is always its newest
    /// messages, with no holes.
    pub fn keeps(&self, age: Duration, newer: u64) -> bool {
        age <= self.ttl
            && newer < self.cap() as u64
            && (newer < self.size as u64 || age < self.min_age)
    }
}

/// What a channel can tell a (re)subscribing client.
#[derive(Debug, Clone)]
pub struct History {
    /// The channel's current position: its epoch and the offset of its newest message.
    pub position: Position,
    /// Whether `messages` is everything after the position the client asked
    /// from. False when the epoch changed or history no longer reaches back
    /// that far; the client must then reload from the application.
    pub recovered: bool,
    /// The messages after the requested position, oldest first.
    pub messages: Vec<Arc<Message>>,
}

/// Idempotency keys → the position they were published at, and when.
type Remembered = HashMap<Arc<str>, (Position, Instant)>;

/// The log of one channel.
pub(crate) struct ChannelLog {
    /// The generation of this log, chosen by the engine when it creates
    /// the log (`engine/memory.rs` says which).
    pub(crate) epoch: Epoch,
    /// Offset of the newest message ever appended (0 before the first).
    pub(crate) last_offset: u64,
    /// Retained messages with the time they were appended, oldest first.
    entries: VecDeque<(Instant, Arc<Message>)>,
    /// When this log was last written or created; the sweeper frees logs
    /// that have been quiet for longer than the history TTL.
    pub(crate) touched: Instant,
    /// Set by the sweeper when it unlinks this log, so that a publisher that
    /// already held it starts over on the new one instead of writing into a
    /// log nobody can read.
    pub(crate) removed: bool,
    /// Idempotency keys of recent publishes → their position and when they
    /// were published. Boxed: most channels never see a key.
    dedupe: Option<Box<Remembered>>,
}

impl ChannelLog {
    pub(crate) fn new(now: Instant, epoch: Epoch) -> Self {
        Self {
            epoch,
            last_offset: 0,
            entries: VecDeque::new(),
            touched: now,
            removed: false,
            dedupe: None,
        }
    }

    /// The position of an earlier publish with idempotency key `key`, if
    /// it is still remembered.
    pub(crate) fn published_as(&self, key: &str, now: Instant, ttl: Duration) -> Option<Position> {
        let (position, at) = self.dedupe.as_ref()?.get(key)?;
        (now.saturating_duration_since(*at) <= ttl && position.epoch == self.epoch)
            .then_some(*position)
    }

    /// Remembers that the publish with idempotency key `key` got `position`.
    pub(crate) fn remember(&mut self, key: Arc<str>, position: Position, now: Instant) {
        self.dedupe
            .get_or_insert_with(Default::default)
            .insert(key, (position, now));
    }

    /// Whether idempotency keys are still remembered here, so that the log
    /// must not be freed yet.
    pub(crate) fn has_keys(&self) -> bool {
        self.dedupe.as_ref().is_some_and(|keys| !keys.is_empty())
    }

    pub(crate) fn position(&self) -> Position {
        Position {
            epoch: self.epoch,
            offset: self.last_offset,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Appends a message with the next offset and returns it, with the
    /// change in the number of retained messages.
    pub(crate) fn append(
        &mut self,
        channel: ChannelKey,
        data: Bytes,
        now: Instant,
        config: HistoryConfig,
    ) -> (Arc<Message>, isize) {
        self.last_offset += 1;
        self.touched = now;
        let message = Arc::new(Message::new(channel, self.position(), data));
        let before = self.entries.len() as isize;
        if config.cap() > 0 {
            self.entries.push_back((now, message.clone()));
        }
        self.trim(now, config);
        (message, self.entries.len() as isize - before)
    }

    /// Forgets idempotency keys older than `ttl`.
    pub(crate) fn expire_keys(&mut self, now: Instant, ttl: Duration) {
        if let Some(keys) = &mut self.dedupe {
            keys.retain(|_, (_, at)| now.saturating_duration_since(*at) <= ttl);
            if keys.is_empty() {
                self.dedupe = None;
            }
        }
    }

    /// Drops the messages history no longer keeps ([`HistoryConfig::keeps`]);
    /// returns how many went. A ring that shrank to a small part of what it
    /// once held (a burst, then quiet) gives the memory back.
    pub(crate) fn trim(&mut self, now: Instant, config: HistoryConfig) -> usize {
        let before = self.entries.len();
        let first = self.first_kept(now, config);
        self.entries.drain(..first);
        let capacity = self.entries.capacity();
        if self.entries.is_empty() && capacity > 0 {
            self.entries = VecDeque::new();
        } else if capacity > SHRINK_ABOVE && self.entries.len() < capacity / 4 {
            // To twice what is held: a channel that keeps refilling to
            // about the same length does not reallocate on every trim.
            self.entries.shrink_to(self.entries.len() * 2);
        }
        before - self.entries.len()
    }

    /// The index of the oldest entry still kept at `now` (the length when
    /// none is). Entries before it may wait for the next trim; nothing
    /// hands them out meanwhile.
    fn first_kept(&self, now: Instant, config: HistoryConfig) -> usize {
        // The rule is monotone (see `keeps`) and entries are in append
        // order, so the kept ones are a suffix: bisect for where it starts,
        // so that a read of a quiet channel whose burst is not trimmed yet
        // does not walk it.
        self.entries.partition_point(|(at, message)| {
            let newer = self.last_offset - message.offset();
            !config.keeps(now.saturating_duration_since(*at), newer)
        })
    }

    /// The messages after `since`, if history still covers them.
    pub(crate) fn read(
        &self,
        since: Option<Position>,
        now: Instant,
        config: HistoryConfig,
    ) -> History {
        let position = self.position();
        let kept = self.entries.range(self.first_kept(now, config)..);
        let Some(since) = since else {
            // No position asked for: hand out everything retained.
            return History {
                position,
                recovered: false,
                messages: kept.map(|(_, m)| m.clone()).collect(),
            };
        };
        if since.epoch != self.epoch || since.offset > self.last_offset {
            return History {
                position,
                recovered: false,
                messages: Vec::new(),
            };
        }
        let oldest = kept
            .clone()
            .next()
            .map_or(self.last_offset + 1, |(_, m)| m.offset());
        if since.offset + 1 < oldest {
            return History {
                position,
                recovered: false,
                messages: Vec::new(),
            };
        }
        // Offsets in the ring follow each other with no hole (appends add
        // the next one, trims take from the front): skip straight to `since`.
        let messages = kept
            .skip((since.offset + 1 - oldest) as usize)
            .map(|(_, m)| m.clone())
            .collect();
        History {
            position,
            recovered: true,
            messages,
        }
    }
}

/// Rings with room for more entries than this give it back once they hold
/// under a quarter of it; smaller ones keep theirs (a few hundred bytes).
const SHRINK_ABOVE: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;

    /// Kept by count only, as before `min_age` existed.
    fn config(size: usize, ttl_secs: u64) -> HistoryConfig {
        HistoryConfig {
            size,
            min_age: Duration::ZERO,
            ttl: Duration::from_secs(ttl_secs),
            ..HistoryConfig::default()
        }
    }

    fn log_with(n: u64, cfg: HistoryConfig, now: Instant) -> ChannelLog {
        let mut log = ChannelLog::new(now, Epoch::random());
        for _ in 0..n {
            log.append(ChannelKey::parse("s/c").unwrap(), Bytes::new(), now, cfg);
        }
        log
    }

    fn offsets(h: &History) -> Vec<u64> {
        h.messages.iter().map(|m| m.offset()).collect()
    }

    #[test]
    fn recovery_cases() {
        let now = Instant::now();
        let cfg = config(5, 60);
        let log = log_with(8, cfg, now); // retains offsets 4..=8
        let at = |offset| {
            Some(Position {
                epoch: log.epoch,
                offset,
            })
        };
        // (since, recovered, replayed offsets)
        let cases: Vec<(Option<Position>, bool, Vec<u64>)> = vec![
            (at(8), true, vec![]),
            (at(6), true, vec![7, 8]),
            (at(3), true, vec![4, 5, 6, 7, 8]),
            (at(2), false, vec![]),
            (at(9), false, vec![]),
            (
                Some(Position {
                    epoch: Epoch::from_u64(log.epoch.as_u64() ^ 1),
                    offset: 8,
                }),
                false,
                vec![],
            ),
            (None, false, vec![4, 5, 6, 7, 8]),
        ];
        for (since, recovered, expect) in cases {
            let h = log.read(since, now, cfg);
            assert_eq!(h.recovered, recovered, "{since:?}");
            assert_eq!(offsets(&h), expect, "{since:?}");
            assert_eq!(h.position.offset, 8);
        }
    }

    #[test]
    fn age_limits_history() {
        let start = Instant::now();
        let cfg = config(100, 10);
        let mut log = log_with(3, cfg, start);
        let later = start + Duration::from_secs(11);
        let since = Some(Position {
            epoch: log.epoch,
            offset: 1,
        });
        assert!(!log.read(since, later, cfg).recovered);
        // Nothing missed: still recovered even with every message expired.
        let up_to_date = Some(log.position());
        assert!(log.read(up_to_date, later, cfg).recovered);
        assert_eq!(log.trim(later, cfg), 3);
        assert_eq!(log.len(), 0);
    }

    #[test]
    fn zero_size_keeps_nothing() {
        let now = Instant::now();
        let cfg = config(0, 10);
        let log = log_with(2, cfg, now);
        assert_eq!(log.len(), 0);
        let behind = Some(Position {
            epoch: log.epoch,
            offset: 1,
        });
        assert!(!log.read(behind, now, cfg).recovered);
        assert!(log.read(Some(log.position()), now, cfg).recovered);
    }

    /// The rule itself: (size, min_age, max_size, ttl) in seconds/messages,
    /// then (age in seconds, newer messages, kept).
    #[test]
    fn the_rule() {
        let rule = |size, min_age, max_size, ttl| HistoryConfig {
            size,
            min_age: Duration::from_secs(min_age),
            max_size,
            ttl: Duration::from_secs(ttl),
            ..HistoryConfig::default()
        };
        let cases = [
            // By count: the newest `size`, at any age within the TTL.
            (rule(5, 0, 100, 600), 600, 4, true),
            (rule(5, 0, 100, 600), 0, 5, false),
            // By age: younger than min_age, however many are newer...
            (rule(5, 60, 100, 600), 59, 99, true),
            (rule(5, 60, 100, 600), 60, 5, false),
            // ... up to the cap.
            (rule(5, 60, 100, 600), 0, 100, false),
            // The TTL bounds both.
            (rule(5, 60, 100, 600), 601, 0, false),
            (rule(5, 60, 100, 30), 31, 0, false),
            // A size above the cap raises the cap.
            (rule(500, 60, 100, 600), 0, 499, true),
            (rule(500, 60, 100, 600), 0, 500, false),
            // Nothing kept at all.
            (rule(0, 0, 100, 600), 0, 0, false),
            (rule(0, 60, 0, 600), 0, 0, false),
            (rule(0, 60, 100, 600), 0, 0, true),
        ];
        for (cfg, age, newer, kept) in cases {
            assert_eq!(
                cfg.keeps(Duration::from_secs(age), newer),
                kept,
                "{cfg:?} age {age} newer {newer}"
            );
        }
    }

    #[test]
    fn young_messages_outlast_the_count() {
        let start = Instant::now();
        let cfg = HistoryConfig {
            size: 5,
            min_age: Duration::from_secs(60),
            max_size: 50,
            ttl: Duration::from_secs(600),
            ..HistoryConfig::default()
        };
        let mut log = log_with(30, cfg, start);
        assert_eq!(log.len(), 30, "all younger than min_age");
        let at = |offset| {
            Some(Position {
                epoch: log.epoch,
                offset,
            })
        };
        let h = log.read(at(0), start, cfg);
        assert!(h.recovered);
        assert_eq!(offsets(&h), (1..=30).collect::<Vec<_>>());

        // Once they are older than min_age, only the newest `size` are kept,
        // even before a trim takes the others away.
        let later = start + Duration::from_secs(61);
        assert!(!log.read(at(24), later, cfg).recovered);
        let h = log.read(at(25), later, cfg);
        assert!(h.recovered);
        assert_eq!(offsets(&h), vec![26, 27, 28, 29, 30]);
        assert_eq!(log.trim(later, cfg), 25);
        assert_eq!(log.len(), 5);
    }

    #[test]
    fn the_cap_bounds_young_messages() {
        let now = Instant::now();
        let cfg = HistoryConfig {
            size: 5,
            min_age: Duration::from_secs(60),
            max_size: 50,
            ttl: Duration::from_secs(600),
            ..HistoryConfig::default()
        };
        let mut log = log_with(80, cfg, now);
        assert_eq!(log.len(), 50);
        let at = |offset| {
            Some(Position {
                epoch: log.epoch,
                offset,
            })
        };
        assert!(!log.read(at(29), now, cfg).recovered);
        let h = log.read(at(30), now, cfg);
        assert!(h.recovered);
        assert_eq!(offsets(&h), (31..=80).collect::<Vec<_>>());
        // Appends keep it at the cap.
        log.append(ChannelKey::parse("s/c").unwrap(), Bytes::new(), now, cfg);
        assert_eq!(log.len(), 50);
    }

    #[test]
    fn a_drained_ring_gives_its_memory_back() {
        let start = Instant::now();
        let cfg = HistoryConfig {
            size: 2,
            min_age: Duration::from_secs(60),
            max_size: 10_000,
            ttl: Duration::from_secs(600),
            ..HistoryConfig::default()
        };
        let mut log = log_with(5000, cfg, start);
        assert!(log.entries.capacity() >= 5000);
        log.trim(start + Duration::from_secs(61), cfg);
        assert_eq!(log.len(), 2);
        assert!(
            log.entries.capacity() <= SHRINK_ABOVE,
            "{}",
            log.entries.capacity()
        );
    }
}
