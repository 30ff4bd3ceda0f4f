//! The engine seam: what assigns offsets, keeps history and carries messages
//! to every node that has subscribers.
//!
//! The memory engine does all of it inside one process. A multi-node engine
//! (Redis) implements the same trait: it appends to a shared stream, publishes
//! to the other nodes, and hands what it receives to its local [`Hub`]; it
//! also implements [`crate::registry::ChannelWatcher`] to subscribe upstream
//! only to channels that have local subscribers.
//!
//! [`Hub`]: crate::Hub

mod delivery;
pub mod memory;
pub mod redis;

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use futures_util::future::BoxFuture;

use crate::{
    ChannelKey, Error, Position,
    presence::{Joined, Member},
};

pub use crate::history::History;

/// One message to publish.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    pub channel: ChannelKey,
    /// The payload, stored and delivered byte for byte.
    pub data: Bytes,
    /// An idempotency key: a publish to the same channel with the same key
    /// within [`crate::HistoryConfig::dedupe_ttl`] is not published again,
    /// and answers the first one's position. Checked atomically with the
    /// publish itself.
    pub dedupe: Option<Arc<str>>,
}

impl PublishRequest {
    pub fn new(channel: ChannelKey, data: Bytes) -> Self {
        Self {
            channel,
            data,
            dedupe: None,
        }
    }

    /// A publish of `data` with `tags` (a Pusher event's name, the socket
    /// it must skip), which every engine keeps with it
    /// ([`crate::message::stored_with_tags`]).
    pub fn tagged(channel: ChannelKey, tags: crate::Tags<'_>, data: &[u8]) -> Self {
        Self::new(channel, crate::message::stored_with_tags(tags, data))
    }
}

/// What became of one published message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub position: Position,
    /// The idempotency key had been used: nothing was published now, and
    /// `position` is the earlier publish's.
    pub duplicate: bool,
}

/// Where messages get their offsets, live in history and travel between nodes.
pub trait Engine: Send + Sync + 'static {
    /// Appends each message to its channel's history with the next offset and
    /// delivers it to the channel's subscribers on every node. Answers the
    /// positions in request order, and only once the engine has accepted every
    /// message: an `Ok` is a promise that the messages can be recovered.
    fn publish(&self, batch: Vec<PublishRequest>) -> BoxFuture<'_, Result<Vec<Published>, Error>>;

    /// The channel's current position and the messages after `since`.
    fn history<'a>(
        &'a self,
        channel: &'a ChannelKey,
        since: Option<Position>,
    ) -> BoxFuture<'a, Result<History, Error>>;

    /// The channel's current position, without its history: what a
    /// subscriber with no position to resume from needs. An engine whose
    /// history is dear to read (Redis) reads only the position.
    fn position<'a>(&'a self, channel: &'a ChannelKey) -> BoxFuture<'a, Result<Position, Error>> {
        Box::pin(async move { Ok(self.history(channel, None).await?.position) })
    }

    /// Resolves once every publish acknowledged before the call has reached
    /// this node's hub, where the engine can know it (the memory engine's
    /// delivery workers). Shutdown waits for it before it tells clients to
    /// go, so that nothing acknowledged is still on its way to them. A
    /// multi-node engine's messages arrive from the broker at their own
    /// pace; clients recover those from history.
    fn flushed(&self) -> BoxFuture<'_, ()> {
        Box::pin(futures_util::future::ready(()))
    }

    /// Makes `member` a member of presence channel `channel` through
    /// `connection`, on every node, and answers the channel's members with
    /// the position they were read at (`presence.rs`). The user's first
    /// connection on the channel publishes its [`crate::presence::MEMBER_ADDED`].
    /// A membership ends with [`Engine::presence_leave`], which the
    /// subscription calls when it is dropped, even while this call runs.
    fn presence_join<'a>(
        &'a self,
        channel: &'a ChannelKey,
        connection: u64,
        member: Member,
    ) -> BoxFuture<'a, Result<Joined, Error>>;

    /// Ends `connection`'s membership of `channel`, if it has one; the
    /// user's last connection there publishes its
    /// [`crate::presence::MEMBER_REMOVED`]. Nothing waits for it: the
    /// engine sees it through, retrying while its store is unreachable.
    fn presence_leave(&self, channel: &ChannelKey, connection: u64);

    /// The members of presence channel `channel`, on every node.
    fn presence_members<'a>(
        &'a self,
        channel: &'a ChannelKey,
    ) -> BoxFuture<'a, Result<Vec<Member>, Error>>;

    /// The subscribers every node has on the ordinary channels of `site`
    /// whose name starts with `prefix` (`occupancy.rs`). `None` (the
    /// default): this node's hub is all there is, the memory engine's case.
    fn occupancy<'a>(
        &'a self,
        site: &'a str,
        prefix: &'a str,
    ) -> Option<BoxFuture<'a, Result<crate::occupancy::Occupancy, Error>>> {
        let _ = (site, prefix);
        None
    }

    /// The node is going away, its connections closed: what it holds for
    /// the deployment (presence members, channel occupancy) goes now,
    /// rather than when the other nodes find its heartbeat stopped.
    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(futures_util::future::ready(()))
    }

    /// Whether the engine can take publishes right now (used by `/readyz`).
    fn is_ready(&self) -> bool {
        true
    }

    /// Records a signed request's `signature` (of `site`) as used for
    /// `ttl`, where every node of the deployment sees it, so that a recorded
    /// request cannot be sent again to another node, or to this one after a
    /// restart. Answers `Ok(true)` the first time, `Ok(false)` once it was
    /// recorded before.
    ///
    /// `None` (the default): the engine keeps nothing beyond this process,
    /// and the caller keeps its own record, in memory. That is the memory
    /// engine's case, which is one process anyway.
    fn claim_signature(
        &self,
        site: &str,
        signature: &[u8; 32],
        ttl: Duration,
    ) -> Option<BoxFuture<'_, Result<bool, Error>>> {
        let _ = (site, signature, ttl);
        None
    }
}
