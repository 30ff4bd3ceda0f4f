//! One channel's history in the memory engine: a ring bounded by count and age.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;

use crate::{ChannelKey, Epoch, Message, Position};

/// How much history each channel keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryConfig {
    /// The most messages kept per channel; 0 keeps none.
    pub size: usize,
    /// How long a message stays in history.
    pub ttl: Duration,
    /// How long a publish's idempotency key is remembered per channel.
    pub dedupe_ttl: Duration,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            size: 100,
            ttl: Duration::from_secs(600),
            dedupe_ttl: Duration::from_secs(3600),
        }
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
        if config.size > 0 {
            if self.entries.len() == config.size {
                self.entries.pop_front();
            }
            self.entries.push_back((now, message.clone()));
        }
        self.expire(now, config.ttl);
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

    /// Drops messages older than `ttl`; returns how many went.
    pub(crate) fn expire(&mut self, now: Instant, ttl: Duration) -> usize {
        let before = self.entries.len();
        while let Some((at, _)) = self.entries.front() {
            if now.saturating_duration_since(*at) <= ttl {
                break;
            }
            self.entries.pop_front();
        }
        if self.entries.is_empty() && self.entries.capacity() > 0 {
            self.entries = VecDeque::new();
        }
        before - self.entries.len()
    }

    /// The messages after `since`, if history still covers them.
    pub(crate) fn read(&self, since: Option<Position>, now: Instant, ttl: Duration) -> History {
        let position = self.position();
        let live = |(at, _): &&(Instant, Arc<Message>)| now.saturating_duration_since(*at) <= ttl;
        let Some(since) = since else {
            // No position asked for: hand out everything retained.
            return History {
                position,
                recovered: false,
                messages: self
                    .entries
                    .iter()
                    .filter(live)
                    .map(|(_, m)| m.clone())
                    .collect(),
            };
        };
        if since.epoch != self.epoch || since.offset > self.last_offset {
            return History {
                position,
                recovered: false,
                messages: Vec::new(),
            };
        }
        let oldest = self
            .entries
            .iter()
            .find(live)
            .map_or(self.last_offset + 1, |(_, m)| m.offset());
        if since.offset + 1 < oldest {
            return History {
                position,
                recovered: false,
                messages: Vec::new(),
            };
        }
        let messages = self
            .entries
            .iter()
            .filter(|(_, m)| m.offset() > since.offset)
            .map(|(_, m)| m.clone())
            .collect();
        History {
            position,
            recovered: true,
            messages,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(size: usize, ttl_secs: u64) -> HistoryConfig {
        HistoryConfig {
            size,
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
            let h = log.read(since, now, cfg.ttl);
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
        assert!(!log.read(since, later, cfg.ttl).recovered);
        // Nothing missed: still recovered even with every message expired.
        let up_to_date = Some(log.position());
        assert!(log.read(up_to_date, later, cfg.ttl).recovered);
        assert_eq!(log.expire(later, cfg.ttl), 3);
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
        assert!(!log.read(behind, now, cfg.ttl).recovered);
        assert!(log.read(Some(log.position()), now, cfg.ttl).recovered);
    }
}
