//! What a failure did to the subscribers, counted against what the publisher was told, and the
//! rule that holds it: every acknowledged message reached every subscriber, or that subscriber
//! was told `recovered: false` past it.

use std::collections::BTreeMap;
use std::fmt;

use herald_tests::Position;

use super::super::support::{Attempt, Outcome};
use super::subscriber::Seen;

/// One row of the failure matrix.
#[derive(Debug, Default)]
pub(super) struct Tally {
    /// Publishes answered 200.
    pub(super) acknowledged: usize,
    /// Subscribers.
    pub(super) subscribers: usize,
    /// Acknowledged messages that reached a subscriber, summed over subscribers.
    pub(super) delivered: usize,
    /// Messages a subscriber got more than once.
    pub(super) duplicates: usize,
    /// `recovered: false` told to a subscriber after its first subscription.
    pub(super) resets: usize,
    /// Acknowledged messages a subscriber missed after being told `recovered: false` past them.
    pub(super) excused: usize,
    /// Acknowledged messages a subscriber missed without being told: must be 0.
    pub(super) silent: Vec<String>,
    /// Reconnects, summed over subscribers.
    pub(super) reconnects: u32,
}

impl Tally {
    pub(super) fn count(attempts: &[Attempt], seen: &[Seen]) -> Tally {
        let acked: Vec<(&str, &Position)> = attempts
            .iter()
            .filter_map(|a| match &a.outcome {
                Outcome::Acked(position) => Some((a.data(), position)),
                _ => None,
            })
            .collect();
        let mut tally = Tally {
            acknowledged: acked.len(),
            subscribers: seen.len(),
            ..Tally::default()
        };
        for subscriber in seen {
            let mut times: BTreeMap<&str, usize> = BTreeMap::new();
            for message in &subscriber.messages {
                *times.entry(message.data.as_str()).or_default() += 1;
            }
            tally.duplicates += times.values().map(|n| n - 1).sum::<usize>();
            tally.resets += subscriber.resets.len();
            tally.reconnects += subscriber.reconnects;
            for (data, position) in &acked {
                if times.contains_key(data) {
                    tally.delivered += 1;
                } else if subscriber
                    .resets
                    .iter()
                    .any(|reset| passes(reset, position))
                {
                    tally.excused += 1;
                } else {
                    tally.silent.push(format!(
                        "{}: {data} at {}",
                        subscriber.name,
                        position.cursor()
                    ));
                }
            }
        }
        tally
    }
}

/// Whether a client moved to `reset` was told that it will not get the message at `position`:
/// the epoch it was in is gone, or the client skipped past it.
fn passes(reset: &Position, position: &Position) -> bool {
    reset.epoch != position.epoch || reset.offset >= position.offset
}

impl fmt::Display for Tally {
    /// A row of the table in docs/reliability.md (after the failure's name).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "| {} | {} | {} of {} | {} | {} | {} | {} | {} |",
            self.acknowledged,
            self.subscribers,
            self.delivered,
            self.acknowledged * self.subscribers,
            self.duplicates,
            self.resets,
            self.excused,
            self.silent.len(),
            self.reconnects
        )
    }
}
