//! The timeline shard of a user, computed as Herald and the web application
//! compute it (`docs/timelines.md`): `crc32("<site_id>:<user_id>") % shards`,
//! with the CRC-32 of zlib and PHP's `crc32()`. The fanout scenario uses it to
//! send each recipient to the node of its shard (`--shard-affinity`), as the
//! load balancer of `deploy/nginx/` does with the `shard` query parameter.

use serde::{Deserialize, Serialize};

/// Connect each user to one node per shard.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Affinity {
    /// The site id that prefixes the user id (`default` for the dev site).
    pub site: String,
    /// `timeline.shards` of the nodes.
    pub shards: u32,
}

impl Affinity {
    /// The node (of `nodes`) that user `user` connects to: its shard's.
    pub fn node(&self, user: usize, nodes: usize) -> usize {
        shard(&self.site, &user.to_string(), self.shards) as usize % nodes.max(1)
    }
}

/// `crc32("<site>:<user>") % shards`.
pub fn shard(site: &str, user: &str, shards: u32) -> u32 {
    let crc = crc32(&[site.as_bytes(), b":", user.as_bytes()]);
    crc % shards.max(1)
}

/// CRC-32 (IEEE 802.3, reflected, as zlib and PHP) of the concatenated parts.
fn crc32(parts: &[&[u8]]) -> u32 {
    let mut crc = !0u32;
    for byte in parts.iter().flat_map(|p| p.iter()) {
        crc = TABLE[((crc ^ u32::from(*byte)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// The byte-at-a-time table of the reflected polynomial 0xEDB88320.
const TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_is_zlibs() {
        assert_eq!(crc32(&[b"123456789"]), 0xCBF4_3926);
        assert_eq!(crc32(&[b""]), 0);
    }

    #[test]
    fn shards_match_php() {
        // `php -r 'echo crc32("default:42") % 1024;'` and so on.
        for (user, crc, shard_of) in [
            ("1", 856_618_546, 562),
            ("42", 2_940_605_758, 318),
            ("67", 3_977_937_715, 819),
            ("989935", 964_207_799, 183),
            ("alice", 2_526_115_488, 672),
        ] {
            let key = format!("default:{user}");
            assert_eq!(crc32(&[key.as_bytes()]), crc, "{key}");
            assert_eq!(shard("default", user, 1024), shard_of, "{key}");
        }
    }

    #[test]
    fn affinity_picks_the_shards_node() {
        let affinity = Affinity {
            site: "default".into(),
            shards: 1024,
        };
        // Shard 318 on 3 nodes: node 0; shard 562: node 1; shard 819: node 0.
        assert_eq!(affinity.node(42, 3), 318 % 3);
        assert_eq!(affinity.node(1, 3), 562 % 3);
        assert_eq!(affinity.node(67, 1), 0);
    }
}
