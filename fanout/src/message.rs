//! Messages and their positions in a channel's stream.

use std::{fmt, str::FromStr, sync::OnceLock};

use bytes::Bytes;

use crate::ChannelKey;

/// How many wire encodings a message can cache (see [`Message::encoded`]).
pub const ENCODINGS: usize = 4;

/// The generation of a channel's stream. It changes whenever the channel's
/// history is lost or reset (a restart of the memory engine, a channel that
/// was freed and created again), so a client holding an old epoch knows its
/// offsets no longer mean anything.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Epoch(u64);

impl Epoch {
    /// A fresh random epoch. 64 random bits make it practically impossible
    /// for a channel to get the same epoch twice.
    pub fn random() -> Self {
        Self(rand::random::<u64>())
    }

    pub const fn from_u64(value: u64) -> Self {
        Self(value)
    }

    pub const fn as_u64(self) -> u64 {
        self.0
    }
}

/// Epochs are written as lowercase hex without padding; JSON carries them as
/// strings so that JavaScript does not round them.
impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

impl fmt::Debug for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Epoch({self})")
    }
}

impl FromStr for Epoch {
    type Err = InvalidEpoch;

    /// Accepts exactly what `Display` writes: 1 to 16 hex digits.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b.to_ascii_lowercase());
        if s.is_empty() || s.len() > 16 || !s.bytes().all(hex) {
            return Err(InvalidEpoch);
        }
        u64::from_str_radix(s, 16)
            .map(Epoch)
            .map_err(|_| InvalidEpoch)
    }
}

/// A string that is not an epoch as Herald writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidEpoch;

/// A point in a channel's stream: the epoch and the offset of the last
/// message seen. Offsets start at 1; offset 0 means "before the first message".
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Position {
    pub epoch: Epoch,
    pub offset: u64,
}

/// Positions are written `epoch:offset` (`1f3a:42`) wherever they travel as
/// text: SSE cursors, the history API's `since`.
impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.epoch, self.offset)
    }
}

impl FromStr for Position {
    type Err = InvalidPosition;

    /// Accepts exactly what `Display` writes.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (epoch, offset) = s.split_once(':').ok_or(InvalidPosition)?;
        // `u64::from_str` accepts a leading `+`; a position never has one.
        if offset.is_empty() || !offset.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidPosition);
        }
        Ok(Position {
            epoch: epoch.parse().map_err(|_| InvalidPosition)?,
            offset: offset.parse().map_err(|_| InvalidPosition)?,
        })
    }
}

/// A string that is not `epoch:offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidPosition;

/// One published message, shared by every subscriber through an `Arc`.
pub struct Message {
    /// The channel it was published to.
    pub channel: ChannelKey,
    /// Where it sits in the channel's stream.
    pub position: Position,
    /// The payload exactly as the publisher sent it (for the native protocol, JSON).
    pub data: Bytes,
    /// The event name it was published under, when its publisher gave one
    /// (a Pusher event's `name`): what Pusher clients listen for.
    pub event: Option<Box<str>>,
    /// The connection that must not get it (a Pusher publish's `socket_id`:
    /// the connection whose user caused it).
    pub excluded: Option<u64>,
    /// One lazily built encoding per wire format, so a message going to 10k
    /// WebSocket subscribers is framed once, not 10k times.
    encoded: [OnceLock<Bytes>; ENCODINGS],
    /// A gap notice rather than a message ([`Message::gap`]).
    gap: bool,
    /// When it reached this node ([`crate::lag::now_ms`]): what the delivery
    /// lag meter measures from.
    stamp: u32,
}

/// What a message carries besides its data: set by publishers that speak
/// another protocol (Pusher), and kept by every engine with the data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tags<'a> {
    /// [`Message::event`].
    pub event: Option<&'a str>,
    /// [`Message::excluded`].
    pub excluded: Option<u64>,
}

/// The bytes an engine stores and passes around for a message with
/// [`Tags`]: NUL, the event name, NUL, the excluded connection's id in
/// decimal, NUL, then the data (either field empty when absent). A
/// message's data is JSON, which never starts with NUL, so a message
/// without tags is stored as its data alone, as it always was, and engines
/// stay unaware.
pub fn stored_with_tags(tags: Tags<'_>, data: &[u8]) -> Bytes {
    if tags == Tags::default() {
        return Bytes::copy_from_slice(data);
    }
    let event = tags.event.unwrap_or_default();
    let excluded = tags.excluded.map(|id| id.to_string()).unwrap_or_default();
    let mut stored = Vec::with_capacity(event.len() + excluded.len() + data.len() + 3);
    stored.push(0);
    stored.extend_from_slice(event.as_bytes());
    stored.push(0);
    stored.extend_from_slice(excluded.as_bytes());
    stored.push(0);
    stored.extend_from_slice(data);
    Bytes::from(stored)
}

/// The tags and the data of stored bytes ([`stored_with_tags`]).
fn split_stored(stored: Bytes) -> (Option<Box<str>>, Option<u64>, Bytes) {
    if stored.first() != Some(&0) {
        return (None, None, stored);
    }
    let mut fields = stored[1..].splitn(3, |&b| b == 0);
    let (Some(event), Some(excluded), Some(data)) = (fields.next(), fields.next(), fields.next())
    else {
        return (None, None, stored);
    };
    let start = stored.len() - data.len();
    let event = (!event.is_empty()).then(|| String::from_utf8_lossy(event).into());
    let excluded = std::str::from_utf8(excluded)
        .ok()
        .and_then(|id| id.parse().ok());
    (event, excluded, stored.slice(start..))
}

impl Message {
    /// A message of `channel` at `position`, from the bytes its engine
    /// stored (its data, with its event name in front when it has one).
    pub fn new(channel: ChannelKey, position: Position, stored: Bytes) -> Self {
        let (event, excluded, data) = split_stored(stored);
        Self {
            channel,
            position,
            data,
            event,
            excluded,
            encoded: Default::default(),
            gap: false,
            stamp: crate::lag::now_ms(),
        }
    }

    /// A notice, not a message: messages of `channel` up to `position` may
    /// never reach this node's subscribers (the timeline expander had to drop
    /// them), so each must tell its client `recovered: false` at `position`.
    /// It has no data, is never stored in history, and is delivered live only.
    pub fn gap(channel: ChannelKey, position: Position) -> Self {
        Self {
            gap: true,
            ..Self::new(channel, position, Bytes::new())
        }
    }

    /// Whether this is a gap notice ([`Message::gap`]).
    pub fn is_gap(&self) -> bool {
        self.gap
    }

    /// When this message reached the node, on [`crate::lag::now_ms`]'s clock.
    pub fn stamp(&self) -> u32 {
        self.stamp
    }

    pub fn offset(&self) -> u64 {
        self.position.offset
    }

    /// The bytes of this message in wire format `slot`, built by `encode` the
    /// first time any subscriber asks and shared from then on.
    ///
    /// Each wire format in `push` owns one slot number below [`ENCODINGS`].
    pub fn encoded(&self, slot: usize, encode: impl FnOnce(&Message) -> Bytes) -> Bytes {
        self.encoded[slot].get_or_init(|| encode(self)).clone()
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("channel", &self.channel)
            .field("position", &self.position)
            .field("len", &self.data.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_round_trips_as_hex() {
        for value in [0, 1, 0xdead_beef, u64::MAX] {
            let epoch = Epoch::from_u64(value);
            assert_eq!(epoch.to_string().parse::<Epoch>().unwrap(), epoch);
        }
        assert!("".parse::<Epoch>().is_err());
        assert!("+1".parse::<Epoch>().is_err());
        assert!("xyz".parse::<Epoch>().is_err());
        assert!("1ffffffffffffffff".parse::<Epoch>().is_err());
    }

    #[test]
    fn tags_travel_in_front_of_the_data() {
        let channel = ChannelKey::parse("s/public").unwrap();
        let position = Position {
            epoch: Epoch::from_u64(1),
            offset: 1,
        };
        let tags = Tags {
            event: Some("new-notice"),
            excluded: Some(123_000_000_456),
        };
        let named = Message::new(
            channel.clone(),
            position,
            stored_with_tags(tags, br#"{"id":1}"#),
        );
        assert_eq!(named.event.as_deref(), Some("new-notice"));
        assert_eq!(named.excluded, Some(123_000_000_456));
        assert_eq!(named.data, r#"{"id":1}"#);
        let plain = Message::new(channel.clone(), position, Bytes::from_static(b"{}"));
        assert_eq!(
            (plain.event, plain.excluded, &plain.data[..]),
            (None, None, &b"{}"[..])
        );
        let untagged = stored_with_tags(Tags::default(), b"[]");
        assert_eq!(&untagged[..], b"[]", "no tags, no envelope");
        let only_excluded = Tags {
            event: None,
            excluded: Some(7),
        };
        let message = Message::new(
            channel,
            position,
            stored_with_tags(only_excluded, b"\"\0\""),
        );
        assert_eq!(
            (message.event, message.excluded, &message.data[..]),
            (None, Some(7), &b"\"\0\""[..]),
            "NUL inside the data stays data"
        );
    }

    #[test]
    fn encodes_once_per_slot() {
        let channel = ChannelKey::parse("s/public").unwrap();
        let position = Position {
            epoch: Epoch::from_u64(1),
            offset: 1,
        };
        let message = Message::new(channel, position, Bytes::from_static(b"{}"));
        let mut calls = 0;
        for _ in 0..3 {
            message.encoded(0, |_| {
                calls += 1;
                Bytes::from_static(b"frame")
            });
        }
        assert_eq!(calls, 1);
        assert_eq!(
            message.encoded(1, |_| Bytes::from_static(b"other")),
            "other"
        );
    }
}
