//! Grouping a delivery's recipients by shard, one id at a time, without a
//! string per recipient: each shard's ids go into one byte buffer, and
//! duplicates are removed per shard at the end.

use std::collections::BTreeMap;

use super::shard_of;

/// The recipients of one delivery, grouped by shard as they are added.
pub struct Recipients {
    site: String,
    shards: u32,
    /// Shard → its ids, each followed by a comma.
    groups: BTreeMap<u32, Vec<u8>>,
    /// Ids added, duplicates included.
    added: usize,
    /// Scratch space for the shard key.
    key: String,
}

/// A shard's recipients, ready to be sent: distinct ids, comma-separated.
pub struct ShardGroup {
    pub shard: u32,
    pub ids: Vec<u8>,
    pub count: usize,
}

impl Recipients {
    pub fn new(site: &str, shards: u32) -> Self {
        Self {
            site: site.to_string(),
            shards: shards.max(1),
            groups: BTreeMap::new(),
            added: 0,
            key: String::with_capacity(64),
        }
    }

    /// Adds one user id; the caller checked it (channel-name characters).
    pub fn add(&mut self, user: &str) {
        let shard = shard_of(&self.site, user, self.shards, &mut self.key);
        let ids = self.groups.entry(shard).or_default();
        ids.extend_from_slice(user.as_bytes());
        ids.push(b',');
        self.added += 1;
    }

    /// Shards touched so far.
    pub fn shards(&self) -> usize {
        self.groups.len()
    }

    /// Ids added so far, duplicates included.
    pub fn added(&self) -> usize {
        self.added
    }

    /// The ids added so far, by shard, duplicates included: what traffic
    /// accounting ranks. Ids are checked channel-name characters, so ASCII.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.groups
            .values()
            .flat_map(|ids| ids.split(|&b| b == b','))
            .filter_map(|id| std::str::from_utf8(id).ok())
            .filter(|id| !id.is_empty())
    }

    /// The shards touched, each with its distinct recipients.
    pub fn into_groups(self) -> Vec<ShardGroup> {
        self.groups
            .into_iter()
            .map(|(shard, ids)| {
                let mut distinct: Vec<&[u8]> = ids
                    .split(|&b| b == b',')
                    .filter(|id| !id.is_empty())
                    .collect();
                distinct.sort_unstable();
                distinct.dedup();
                let count = distinct.len();
                let joined = distinct.join(&b',');
                ShardGroup {
                    shard,
                    ids: joined,
                    count,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_by_shard_and_drops_duplicates() {
        let mut recipients = Recipients::new("s", 4);
        for id in ["1", "2", "3", "1", "40", "2"] {
            recipients.add(id);
        }
        assert_eq!(recipients.added(), 6);
        let mut ids: Vec<&str> = recipients.ids().collect();
        ids.sort_unstable();
        assert_eq!(
            ids,
            ["1", "1", "2", "2", "3", "40"],
            "every id added, as added"
        );
        let groups = recipients.into_groups();
        let total: usize = groups.iter().map(|g| g.count).sum();
        assert_eq!(total, 4, "1, 2, 3 and 40, once each");
        for group in &groups {
            for id in group.ids.split(|&b| b == b',') {
                let id = std::str::from_utf8(id).unwrap();
                assert_eq!(shard_of("s", id, 4, &mut String::new()), group.shard);
            }
        }
    }
}
