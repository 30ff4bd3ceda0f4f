//! Where a channel lives in Redis: its partition, its keys and its pub/sub
//! channel, all sharing one hash tag so that a Redis Cluster keeps them in
//! one slot (the Lua scripts touch them together, and `SPUBLISH` from a
//! script must stay in the script's slot).
//!
//! `herald:{7}:m:public` — the channel's meta hash: `e` (epoch), `o` (last offset)
//! `herald:{7}:s:public` — its history stream; entry id `<offset>-0`, fields `t` (ms), `d` (data)
//! `herald:{7}:c:public` — its pub/sub channel; payload `<epoch> <offset> <data>`
//! `herald:{7}:pu:presence-a`, `…:pi:…`, `…:pc:<node>:…` — a presence
//! channel's users, their infos and each node's connections (`presence.rs`)
//! `herald:pn:<node>` — a node's presence channels; `herald:pnodes` — the
//! nodes' heartbeats

use crate::ChannelKey;

/// The names of one channel in Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChannelKeys {
    pub partition: u16,
    pub meta: String,
    pub stream: String,
    pub pubsub: String,
}

/// Maps channels to partitions and names.
#[derive(Debug, Clone)]
pub(crate) struct Keyspace {
    prefix: String,
    partitions: u16,
}

impl Keyspace {
    pub fn new(prefix: &str, partitions: u16) -> Self {
        Self {
            prefix: prefix.to_string(),
            partitions: partitions.max(1),
        }
    }

    /// The partition of `channel`. Every node must agree on it, so this is a
    /// fixed hash (FNV-1a), never a randomly seeded one.
    pub fn partition(&self, channel: &str) -> u16 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in channel.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        (hash % u64::from(self.partitions)) as u16
    }

    pub fn keys(&self, channel: &ChannelKey) -> ChannelKeys {
        let partition = self.partition(channel.as_str());
        let base = format!("{}:{{{partition}}}", self.prefix);
        ChannelKeys {
            partition,
            meta: format!("{base}:m:{}", channel.as_str()),
            stream: format!("{base}:s:{}", channel.as_str()),
            pubsub: format!("{base}:c:{}", channel.as_str()),
        }
    }

    /// A presence channel's keys as its functions take them: meta, stream,
    /// users, infos and `node`'s connections, all in the channel's slot.
    pub fn presence(&self, channel: &ChannelKey, node: &str) -> Vec<String> {
        let keys = self.keys(channel);
        let base = format!("{}:{{{}}}", self.prefix, keys.partition);
        let name = channel.as_str();
        vec![
            keys.meta,
            keys.stream,
            format!("{base}:pu:{name}"),
            format!("{base}:pi:{name}"),
            format!("{base}:pc:{node}:{name}"),
        ]
    }

    /// A channel's occupancy hash: which nodes have subscribers to it
    /// (kept only for sites that want channel events).
    pub fn occupancy(&self, channel: &ChannelKey) -> String {
        let partition = self.partition(channel.as_str());
        format!("{}:{{{partition}}}:on:{}", self.prefix, channel.as_str())
    }

    /// A node's index of the presence channels it has members on.
    pub fn presence_index(&self, node: &str) -> String {
        format!("{}:pn:{node}", self.prefix)
    }

    /// The nodes' heartbeats.
    pub fn presence_nodes(&self) -> String {
        format!("{}:pnodes", self.prefix)
    }

    /// The key that records a publish's idempotency key on `channel`; in the
    /// channel's partition, so a Cluster runs the publish script on it.
    ///
    /// The channel's length comes first: channel names and idempotency keys
    /// may both hold `:`, and without it channel `a` with key `b:c` and
    /// channel `a:b` with key `c` would share one record.
    pub fn dedupe(&self, channel: &ChannelKey, key: &str) -> String {
        let partition = self.partition(channel.as_str());
        let channel = channel.as_str();
        format!(
            "{}:{{{partition}}}:d:{}:{channel}:{key}",
            self.prefix,
            channel.len()
        )
    }

    /// The key that records a signed request's signature as used, on every
    /// node. A key of its own (no hash tag), so that a Cluster spreads them.
    pub fn signature(&self, site: &str, signature: &[u8; 32]) -> String {
        let mut hex = String::with_capacity(64);
        for byte in signature {
            use std::fmt::Write as _;
            let _ = write!(hex, "{byte:02x}");
        }
        format!("{}:r:{site}:{hex}", self.prefix)
    }

    /// The channel name inside a pub/sub channel name, if it is one of ours.
    pub fn channel_of<'a>(&self, pubsub: &'a str) -> Option<&'a str> {
        let rest = pubsub.strip_prefix(&self.prefix)?.strip_prefix(":{")?;
        let (_, rest) = rest.split_once('}')?;
        rest.strip_prefix(":c:")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_share_the_hash_tag() {
        let keyspace = Keyspace::new("herald", 16);
        let channel = ChannelKey::parse("s/user:42").unwrap();
        let keys = keyspace.keys(&channel);
        let tag = format!("{{{}}}", keys.partition);
        for name in [&keys.meta, &keys.stream, &keys.pubsub] {
            assert!(name.contains(&tag), "{name}");
        }
        assert_eq!(keyspace.channel_of(&keys.pubsub), Some("s/user:42"));
        assert_eq!(keyspace.channel_of("other:{1}:c:x"), None);
        assert_eq!(keyspace.channel_of(&keys.meta), None);
    }

    #[test]
    fn idempotency_records_do_not_run_into_each_other() {
        let keyspace = Keyspace::new("herald", 1);
        let a = ChannelKey::parse("s/a").unwrap();
        let ab = ChannelKey::parse("s/a:b").unwrap();
        assert_ne!(keyspace.dedupe(&a, "b:c"), keyspace.dedupe(&ab, "c"));
        assert_eq!(keyspace.dedupe(&a, "k"), "herald:{0}:d:3:s/a:k");
    }

    #[test]
    fn partitions_are_stable_and_spread() {
        let keyspace = Keyspace::new("herald", 16);
        // Fixed values: every node and every release must agree.
        assert_eq!(keyspace.partition("public"), keyspace.partition("public"));
        let mut seen = [0u32; 16];
        for i in 0..1600 {
            seen[keyspace.partition(&format!("user:{i}")) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
    }
}
