//! What happens to channels that a site may want told (Pusher's webhooks,
//! docs/compat.md): a channel occupied or vacated, a presence channel's
//! member added or removed, each once for the whole deployment.
//!
//! The engines raise them where they know them: the memory engine from
//! its hub (the first and the last subscriber) and its presence table; the
//! Redis engine from the functions that keep every node's view (the first
//! node with a subscriber and the last, a join or leave that changed the
//! member list, a dead node's reaping), on the node that ran the call. A
//! [`ChannelEvents`] sink takes them without waiting: it is called with
//! locks held. Only sites the sink [`ChannelEvents::wants`] cost anything
//! beyond that question.

use crate::ChannelKey;

/// One thing that happened to a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelEvent {
    /// The channel has a subscriber somewhere, and had none.
    Occupied,
    /// The channel's last subscriber anywhere left.
    Vacated,
    /// A user joined the presence channel (its first connection there).
    MemberAdded(Box<str>),
    /// A user left the presence channel (its last connection there).
    MemberRemoved(Box<str>),
}

/// Where channel events go.
pub trait ChannelEvents: Send + Sync + 'static {
    /// Whether `site` wants its channels' events; asked before any work
    /// is done to find them.
    fn wants(&self, site: &str) -> bool;

    /// Takes one event; must not block.
    fn event(&self, channel: &ChannelKey, event: ChannelEvent);
}
