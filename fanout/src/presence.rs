//! Presence: who is subscribed to a `presence-` channel, as users rather
//! than connections, on every node.
//!
//! A member is a user (its id and the JSON its site signed for it) joined
//! through one connection. A user with several connections on a channel is
//! one member: the first connection's join adds it, the last one's leave
//! removes it. Joins and leaves that change the member list are published
//! on the channel itself as ordinary messages tagged
//! [`MEMBER_ADDED`]/[`MEMBER_REMOVED`] (Pusher's own event names, so a
//! Pusher client takes them as they are), with offsets like any other: a
//! subscriber's member list is a snapshot at a position, and the events
//! after that position are exactly the changes since. That is why a join
//! answers the list and the position together, read atomically
//! ([`Joined`]), and a subscriber starts from that position.
//!
//! The engines keep the members ([`crate::Engine::presence_join`]): the
//! memory engine in a table beside its logs, the Redis engine in hashes
//! beside the channel's stream, with node heartbeats so that a killed
//! node's members leave (`engine/redis/presence.rs`). A membership ends
//! when its subscription is dropped, whatever the reason
//! ([`crate::Subscription`]): an unsubscribe, a closed connection, or a
//! subscribe abandoned half way.

use bytes::Bytes;

use crate::{Position, Tags, message::stored_with_tags};

/// The event of a message that says a user joined the channel.
pub const MEMBER_ADDED: &str = "pusher_internal:member_added";
/// The event of a message that says a user left the channel.
pub const MEMBER_REMOVED: &str = "pusher_internal:member_removed";

/// The prefix of presence channels' names, in every protocol.
pub const PREFIX: &str = "presence-";

/// The longest user id a member may have (Pusher's limit).
pub const MAX_USER_ID_LEN: usize = 128;
/// The longest `user_info` a member may carry, as JSON text (Pusher's limit).
pub const MAX_USER_INFO_LEN: usize = 1024;

/// Whether a channel (its name as clients write it) is a presence channel.
pub fn is_presence(name: &str) -> bool {
    name.starts_with(PREFIX)
}

/// One user on a presence channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub user_id: Box<str>,
    /// The user's information as its site signed it: JSON text (`null`
    /// when there is none).
    pub user_info: Box<str>,
}

/// Why channel data does not make a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidMember(pub &'static str);

impl std::fmt::Display for InvalidMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl Member {
    /// A member with no information beyond its id.
    pub fn new(user_id: &str) -> Result<Self, InvalidMember> {
        Self::with_info(user_id, "null")
    }

    fn with_info(user_id: &str, user_info: &str) -> Result<Self, InvalidMember> {
        if user_id.is_empty() || user_id.len() > MAX_USER_ID_LEN {
            return Err(InvalidMember("user_id must have 1 to 128 characters"));
        }
        if user_info.len() > MAX_USER_INFO_LEN {
            return Err(InvalidMember("user_info may be at most 1024 bytes of JSON"));
        }
        Ok(Self {
            user_id: user_id.into(),
            user_info: user_info.into(),
        })
    }

    /// A member from a presence subscribe's `channel_data`: a JSON object
    /// with `user_id` (a string, or a number taken as its digits) and an
    /// optional `user_info`.
    pub fn from_channel_data(channel_data: &str) -> Result<Self, InvalidMember> {
        let value: serde_json::Value = serde_json::from_str(channel_data)
            .map_err(|_| InvalidMember("channel_data is not JSON"))?;
        let user_id = match value.get("user_id") {
            Some(serde_json::Value::String(id)) => id.clone(),
            Some(serde_json::Value::Number(id)) => id.to_string(),
            _ => return Err(InvalidMember("channel_data needs a user_id")),
        };
        let info = match value.get("user_info") {
            Some(info) => info.to_string(),
            None => "null".to_string(),
        };
        Self::with_info(&user_id, &info)
    }

    /// The data of the message that announces this member's join:
    /// `{"user_id":…,"user_info":…}`, tagged [`MEMBER_ADDED`] and skipping
    /// the connection that joined (it has the member list).
    pub fn added(&self, connection: u64) -> Bytes {
        let data = format!(
            r#"{{"user_id":{},"user_info":{}}}"#,
            json_string(&self.user_id),
            self.user_info
        );
        let tags = Tags {
            event: Some(MEMBER_ADDED),
            excluded: Some(connection),
        };
        stored_with_tags(tags, data.as_bytes())
    }

    /// The data of the message that announces this member's leave.
    pub fn removed(user_id: &str) -> Bytes {
        let data = format!(r#"{{"user_id":{}}}"#, json_string(user_id));
        let tags = Tags {
            event: Some(MEMBER_REMOVED),
            excluded: None,
        };
        stored_with_tags(tags, data.as_bytes())
    }
}

fn json_string(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// What a join answers: the channel's members, the joiner included, and
/// the channel's position when they were read. Every change after that
/// position arrives as a member event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    pub position: Position,
    pub members: Vec<Member>,
}

/// The member list as Pusher's `subscription_succeeded` carries it, and
/// the REST API's `users`: `{"count":…,"ids":[…],"hash":{id: info}}`.
pub fn pusher_presence(members: &[Member]) -> serde_json::Value {
    let ids: Vec<&str> = members.iter().map(|m| &*m.user_id).collect();
    let hash: serde_json::Map<String, serde_json::Value> = members
        .iter()
        .map(|m| {
            let info = serde_json::from_str(&m.user_info).unwrap_or(serde_json::Value::Null);
            (m.user_id.to_string(), info)
        })
        .collect();
    serde_json::json!({"count": members.len(), "ids": ids, "hash": hash})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChannelKey, ChannelName, Epoch, Message};

    fn message(stored: Bytes) -> Message {
        let channel = ChannelKey::new("s", &ChannelName::new("presence-a").unwrap());
        let position = Position {
            epoch: Epoch::random(),
            offset: 1,
        };
        Message::new(channel, position, stored)
    }

    #[test]
    fn channel_data_makes_a_member() {
        let member =
            Member::from_channel_data(r#"{"user_id":"7","user_info":{"name":"Ann"}}"#).unwrap();
        assert_eq!(&*member.user_id, "7");
        assert_eq!(&*member.user_info, r#"{"name":"Ann"}"#);
        let numeric = Member::from_channel_data(r#"{"user_id":42}"#).unwrap();
        assert_eq!(&*numeric.user_id, "42");
        assert_eq!(&*numeric.user_info, "null");
        for bad in [
            "",
            "{}",
            r#"{"user_id":""}"#,
            r#"{"user_id":null}"#,
            r#"{"user_id":["a"]}"#,
        ] {
            assert!(Member::from_channel_data(bad).is_err(), "{bad}");
        }
        let long = format!(r#"{{"user_id":"{}"}}"#, "a".repeat(129));
        assert!(Member::from_channel_data(&long).is_err());
        let big = format!(r#"{{"user_id":"a","user_info":"{}"}}"#, "b".repeat(1100));
        assert!(Member::from_channel_data(&big).is_err());
    }

    #[test]
    fn member_events_are_tagged_messages() {
        let member =
            Member::from_channel_data(r#"{"user_id":"a\"b","user_info":{"x":1}}"#).unwrap();
        let added = message(member.added(99));
        assert_eq!(added.event.as_deref(), Some(MEMBER_ADDED));
        assert_eq!(added.excluded, Some(99));
        assert_eq!(
            &added.data[..],
            br#"{"user_id":"a\"b","user_info":{"x":1}}"#
        );
        let removed = message(Member::removed("a\"b"));
        assert_eq!(removed.event.as_deref(), Some(MEMBER_REMOVED));
        assert_eq!(removed.excluded, None);
        assert_eq!(&removed.data[..], br#"{"user_id":"a\"b"}"#);
    }

    #[test]
    fn the_pusher_member_list() {
        let members = [
            Member::from_channel_data(r#"{"user_id":"1","user_info":{"n":"a"}}"#).unwrap(),
            Member::new("2").unwrap(),
        ];
        assert_eq!(
            pusher_presence(&members),
            serde_json::json!({"count":2,"ids":["1","2"],"hash":{"1":{"n":"a"},"2":null}})
        );
    }
}
