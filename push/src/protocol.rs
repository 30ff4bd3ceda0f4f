//! The wire-protocol seam: what a client's frames mean, and how Herald's
//! events look on the wire, for one protocol on one transport.
//!
//! The connection core (`connection.rs`) makes every decision (admission,
//! subscriptions, recovery, the outbox, closing) in protocol-neutral terms.
//! It hands a [`Protocol`] each client frame to turn into an [`Intent`], and
//! each [`Event`] and published message to encode into the connection's
//! [`Outgoing`] queue. A protocol decides nothing and holds no connection
//! state but its own wire details.
//!
//! Invariants:
//! - A published message is encoded once per protocol and transport, in the
//!   protocol's own [`Slot`] of [`Message::encoded`], and shared by every
//!   subscriber; a protocol adds per-connection bytes (an SSE `id:` line)
//!   only as separate chunks.
//! - Encoding never fails and never blocks: it only appends chunks.

pub mod echo;
pub mod mercure;
pub mod meteor;
pub mod native;
pub mod pusher;
pub mod stomp;

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use fanout::{ChannelKey, ChannelName, Message, Position, presence::Member};

use crate::{CloseReason, Refusal, Transport, connection::Outgoing, subscriptions::Subscriptions};

pub use mercure::MercureSse;
pub use meteor::MeteorStream;
pub use native::{NativePoll, NativeSse, NativeWs};
pub use pusher::PusherWs;
pub use stomp::StompWs;

/// One wire protocol as one transport carries it.
pub trait Protocol: Send + Unpin + 'static {
    /// The transport this protocol's frames travel on.
    const TRANSPORT: Transport;

    /// Turns one client frame into an intent, or refuses it: the refusal is
    /// then encoded as [`Event::Refused`] and the connection stays open.
    fn parse(&mut self, frame: ClientFrame<'_>) -> Result<Intent, Refusal>;

    /// Appends `event` to `out`. `view` holds the connection's
    /// subscriptions, with their positions as the client knows them.
    fn encode(&mut self, event: Event<'_>, view: &Subscriptions, out: &mut Outgoing);

    /// Appends a published message to `out`: the part every subscriber
    /// shares from this protocol's slot, and anything of this connection's own.
    fn message(&mut self, message: &Arc<Message>, view: &Subscriptions, out: &mut Outgoing);

    /// A published message's whole frame, when it is the same bytes for
    /// every subscriber (nothing of the connection's own in it): the hub
    /// then writes it straight to the socket of a connection that has
    /// nothing else to do (`outbox.rs`). It must be what
    /// [`Protocol::message`] queues.
    const SHARED_FRAME: Option<fn(&Message) -> Bytes> = None;

    /// The connection id as this protocol shows it to its client, and as
    /// channel signatures sign it (`socket_id:channel`).
    fn connection_id(id: u64) -> String {
        format!("{id:x}")
    }

    /// Whether this connection's response has said all it will (a
    /// long-poll that was answered): the core then ends it
    /// ([`CloseReason::Answered`]) once what is queued is written.
    fn answered(&self) -> bool {
        false
    }

    /// The WebSocket close code for `reason`, on protocols a WebSocket carries.
    fn close_code(&self, reason: CloseReason) -> u16 {
        reason.ws_code()
    }
}

/// A frame as a client sent it.
#[derive(Debug, Clone, Copy)]
pub enum ClientFrame<'a> {
    Text(&'a str),
    Binary(&'a [u8]),
}

/// What a client asks for, whatever its protocol.
#[derive(Debug, PartialEq)]
pub enum Intent {
    /// Start receiving `channel`, resuming after `since` if given.
    Subscribe {
        channel: ChannelName,
        since: Option<Position>,
        /// The site's signature for a `private-` or `presence-` channel.
        signature: Option<String>,
        /// A `presence-` channel's member: JSON with `user_id` and
        /// `user_info`, which the signature covers.
        channel_data: Option<String>,
    },
    Unsubscribe {
        channel: ChannelName,
    },
    /// Answer that the connection is alive.
    Ping,
    /// Replace the connection's token with a fresher one for the same user.
    Refresh {
        token: String,
    },
    /// Be the user of `user_data`, which the site signed for this
    /// connection (Pusher's `pusher:signin`).
    SignIn {
        user_data: String,
        signature: String,
    },
    /// Send `data` as `event` to the channel's other subscribers (a Pusher
    /// `client-` event), where the site allows it.
    Publish {
        channel: ChannelName,
        event: String,
        data: Bytes,
    },
}

/// What the connection core tells a client, whatever its protocol.
#[derive(Debug)]
pub enum Event<'a> {
    /// The connection is open.
    Opened {
        connection_id: u64,
        ping_interval: Duration,
        /// When the client's token expires (Unix seconds), if it has one.
        expires_at: Option<u64>,
    },
    /// A subscription is live at `position`; with `recovered`, what the
    /// client missed follows. `slot` is the subscription's place in the view.
    Subscribed {
        slot: u32,
        channel: &'a ChannelKey,
        position: Position,
        recovered: bool,
        /// A presence channel's members when they were read at `position`
        /// (the member events after it are the changes since); `None` for
        /// other channels, and when a reset is announced.
        members: Option<&'a [Member]>,
    },
    Unsubscribed {
        channel: &'a ChannelName,
    },
    /// The answer to [`Intent::Ping`].
    Pong,
    /// The answer to [`Intent::Refresh`].
    Refreshed {
        expires_at: u64,
    },
    /// The answer to [`Intent::SignIn`]: the user data, as signed.
    SignedIn {
        user_data: &'a str,
    },
    /// A client frame was refused; the connection stays open.
    Refused(&'a Refusal),
    /// The shared ticker's keep-alive.
    Heartbeat,
    /// The connection is about to close for `reason`: the protocol's last
    /// words, if it has any. `reconnect_after` is the jittered delay of a
    /// shutdown.
    Closing {
        reason: CloseReason,
        message: &'a str,
        reconnect_after: Option<Duration>,
    },
}

/// The slots of [`Message::encoded`], one per protocol and transport, so
/// that two encodings never share one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Slot {
    NativeWs = 0,
    NativeSse = 1,
    /// A message's text as Meteor's templates quote it.
    MeteorText = 2,
    /// A message's Pusher frame.
    PusherWs = 3,
}

impl Slot {
    pub fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_slot_fits_the_message_cache() {
        for slot in [
            super::Slot::NativeWs,
            super::Slot::NativeSse,
            super::Slot::MeteorText,
            super::Slot::PusherWs,
        ] {
            assert!(slot.index() < fanout::ENCODINGS, "{slot:?}");
        }
    }
}
