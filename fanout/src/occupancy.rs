//! Which of a site's channels are occupied, and by how many subscribers:
//! what the Pusher REST API's channel-info `GET`s answer
//! (`/apps/<id>/channels`, `/channels/<name>`).
//!
//! On one node it is the hub's count. On Redis every node counts its own
//! and the asking node adds them up ([`crate::Engine::occupancy`],
//! `engine/redis/control.rs`): nothing is kept per subscription anywhere
//! but in each node's hub, so subscribing costs no Redis command, and a
//! listing costs one round of messages between the nodes.

use std::collections::BTreeMap;

use crate::{Hub, channel::INTERNAL};

/// Subscribers per channel name (the name as clients write it), for the
/// channels that have any.
pub type Occupancy = BTreeMap<String, u64>;

/// This node's subscribers to the ordinary channels of `site` whose name
/// starts with `prefix`.
pub fn local(hub: &Hub, site: &str, prefix: &str) -> Occupancy {
    hub.counts_where(|channel| {
        channel.site() == site
            && channel.timeline().is_none()
            && channel.name().starts_with(prefix)
            && !channel.name().starts_with(INTERNAL)
    })
    .into_iter()
    .map(|(channel, count)| (channel.name().to_string(), count as u64))
    .collect()
}

/// Adds `other`'s counts to `into`.
pub fn add(into: &mut Occupancy, other: Occupancy) {
    for (name, count) in other {
        *into.entry(name).or_default() += count;
    }
}
