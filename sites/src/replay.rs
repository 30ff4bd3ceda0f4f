//! Signed requests a site already accepted, so that a recorded request
//! cannot be sent again while its timestamp is still inside the window.

use std::collections::HashMap;

/// The most signatures remembered per site. With the window at 300 s this
/// is over 3000 signed requests a second; past it, signed requests are
/// refused until old ones age out, rather than memory growing.
const MAX_REMEMBERED: usize = 1_000_000;

#[derive(Debug, PartialEq, Eq)]
pub enum ReplayError {
    /// This signature was accepted before.
    Replayed,
    /// Too many signatures inside the window to remember another.
    Full,
}

#[derive(Default)]
pub(crate) struct ReplayCache {
    /// Signature → its request's timestamp (Unix seconds).
    seen: HashMap<[u8; 32], u64>,
    /// Forget expired entries once the map reaches this size.
    prune_at: usize,
}

impl ReplayCache {
    pub fn contains(&self, signature: &[u8; 32]) -> bool {
        self.seen.contains_key(signature)
    }

    /// Remembers `signature` (of a request stamped `timestamp`), unless it
    /// was seen before. Entries older than `window` are forgotten.
    pub fn remember(
        &mut self,
        signature: [u8; 32],
        timestamp: u64,
        now: u64,
        window: u64,
    ) -> Result<(), ReplayError> {
        if self.seen.contains_key(&signature) {
            return Err(ReplayError::Replayed);
        }
        if self.seen.len() >= self.prune_at.max(1024) {
            let oldest = now.saturating_sub(window);
            self.seen.retain(|_, stamped| *stamped >= oldest);
            self.prune_at = self.seen.len() * 2;
            if self.seen.len() >= MAX_REMEMBERED {
                return Err(ReplayError::Full);
            }
        }
        self.seen.insert(signature, timestamp);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_second_use_and_forgets_old_ones() {
        let mut cache = ReplayCache::default();
        assert_eq!(cache.remember([1; 32], 1000, 1000, 300), Ok(()));
        assert_eq!(
            cache.remember([1; 32], 1000, 1001, 300),
            Err(ReplayError::Replayed)
        );
        for i in 0..2000u32 {
            let mut signature = [0; 32];
            signature[..4].copy_from_slice(&i.to_le_bytes());
            signature[31] = 9;
            cache.remember(signature, 2000, 2000, 300).unwrap();
        }
        // Pruning at 1024 entries forgot the one stamped 1000 (older than 2000 - 300).
        assert_eq!(cache.remember([1; 32], 1000, 2000, 300), Ok(()));
    }
}
