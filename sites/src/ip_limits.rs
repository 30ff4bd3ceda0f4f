//! Per-client-IP counters of one site: open connections and the rate of new
//! ones. An address has an entry only while it has connections or a recent
//! burst, so the table stays as small as the set of active clients.

use std::{collections::HashMap, net::IpAddr, time::Instant};

use crate::{ConnectionLimit, bucket::TokenBucket, settings::SiteLimits};

#[derive(Default)]
pub(crate) struct IpTable {
    entries: HashMap<IpAddr, Entry>,
    /// Forget idle entries once the table reaches this size.
    prune_at: usize,
}

struct Entry {
    open: u32,
    bucket: TokenBucket,
}

impl IpTable {
    /// Counts a new connection from `ip`, or says which limit it hit.
    pub fn open(
        &mut self,
        ip: IpAddr,
        limits: &SiteLimits,
        now: Instant,
    ) -> Result<(), ConnectionLimit> {
        if self.entries.len() >= self.prune_at.max(1024) {
            self.prune(limits, now);
        }
        let entry = self.entries.entry(ip).or_insert_with(|| Entry {
            open: 0,
            bucket: TokenBucket::full(limits.connection_burst_per_ip),
        });
        if limits.connection_rate_per_ip > 0
            && entry
                .bucket
                .take(
                    1,
                    limits.connection_rate_per_ip,
                    limits.connection_burst_per_ip,
                    now,
                )
                .is_err()
        {
            return Err(ConnectionLimit::Rate);
        }
        if limits.connections_per_ip > 0 && entry.open >= limits.connections_per_ip {
            return Err(ConnectionLimit::Ip);
        }
        entry.open += 1;
        Ok(())
    }

    /// Counts a connection from `ip` as closed.
    pub fn close(&mut self, ip: IpAddr, limits: &SiteLimits, now: Instant) {
        if let Some(entry) = self.entries.get_mut(&ip) {
            entry.open = entry.open.saturating_sub(1);
            if entry.open == 0 && Self::forgettable(entry, limits, now) {
                self.entries.remove(&ip);
            }
        }
    }

    fn prune(&mut self, limits: &SiteLimits, now: Instant) {
        self.entries
            .retain(|_, entry| entry.open > 0 || !Self::forgettable(entry, limits, now));
        self.prune_at = self.entries.len() * 2;
    }

    /// An entry without connections whose bucket is full again says nothing
    /// a fresh one would not.
    fn forgettable(entry: &mut Entry, limits: &SiteLimits, now: Instant) -> bool {
        limits.connection_rate_per_ip == 0
            || entry.bucket.is_full(
                limits.connection_rate_per_ip,
                limits.connection_burst_per_ip,
                now,
            )
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn counts_per_address_and_forgets_idle_ones() {
        let limits = SiteLimits {
            connections_per_ip: 2,
            connection_rate_per_ip: 1,
            connection_burst_per_ip: 3,
            ..SiteLimits::default()
        };
        let now = Instant::now();
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap());
        let mut table = IpTable::default();
        assert_eq!(table.open(a, &limits, now), Ok(()));
        assert_eq!(table.open(a, &limits, now), Ok(()));
        assert_eq!(table.open(a, &limits, now), Err(ConnectionLimit::Ip));
        assert_eq!(table.open(a, &limits, now), Err(ConnectionLimit::Rate));
        assert_eq!(table.open(b, &limits, now), Ok(()));
        table.close(a, &limits, now);
        table.close(a, &limits, now);
        assert_eq!(table.len(), 2, "a's burst is not refilled yet");
        table.close(b, &limits, now + Duration::from_secs(10));
        assert_eq!(table.len(), 1, "b is forgotten once idle and refilled");
    }
}
