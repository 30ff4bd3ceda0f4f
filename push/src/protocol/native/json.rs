//! The JSON of the native protocol's server events and messages. On
//! WebSocket each object carries its `"type"`; on SSE the event line names
//! the type and the data is the same object without it.
//!
//! Channel names and epochs never need escaping (their alphabet is
//! `[A-Za-z0-9_\-:.@=~]` and hex), so they are copied in as they are.

use std::fmt::Write as _;

use bytes::{BufMut, BytesMut};
use fanout::{ChannelKey, ChannelName, Message, Position, presence::Member};

use crate::Refusal;

/// Whether an object names its own type (WebSocket) or leaves it to the
/// SSE `event:` line.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Typed {
    Yes,
    No,
}

fn kind(typed: Typed, kind: &str) -> String {
    match typed {
        Typed::Yes => format!(r#""type":"{kind}","#),
        Typed::No => String::new(),
    }
}

pub(crate) fn welcome(
    connection_id: u64,
    ping_interval_ms: u128,
    expires_at: Option<u64>,
) -> String {
    let expires = match expires_at {
        Some(exp) => format!(r#","expires_at":{exp}"#),
        None => String::new(),
    };
    format!(
        r#"{{"type":"welcome","connection_id":"{connection_id:x}","ping_interval_ms":{ping_interval_ms}{expires}}}"#
    )
}

pub(crate) fn refreshed(expires_at: u64) -> String {
    format!(r#"{{"type":"refreshed","expires_at":{expires_at}}}"#)
}

/// `subscribed`; a presence channel's adds `members`, each
/// `{"user_id":…,"user_info":…}`.
pub(crate) fn subscribed(
    typed: Typed,
    channel: &ChannelKey,
    position: Position,
    recovered: bool,
    members: Option<&[Member]>,
) -> String {
    let mut text = format!(
        r#"{{{}"channel":"{}","epoch":"{}","offset":{},"recovered":{recovered}"#,
        kind(typed, "subscribed"),
        channel.name(),
        position.epoch,
        position.offset
    );
    if let Some(members) = members {
        text.push_str(r#","members":["#);
        for (i, member) in members.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            let user_id = serde_json::Value::from(&*member.user_id);
            let _ = write!(
                text,
                r#"{{"user_id":{user_id},"user_info":{}}}"#,
                member.user_info
            );
        }
        text.push(']');
    }
    text.push('}');
    text
}

pub(crate) fn unsubscribed(channel: &ChannelName) -> String {
    format!(r#"{{"type":"unsubscribed","channel":"{channel}"}}"#)
}

pub(crate) fn pong() -> String {
    r#"{"type":"pong"}"#.to_string()
}

/// `error`, with the channel the refusal concerns when it names one.
pub(crate) fn error(typed: Typed, refusal: &Refusal) -> String {
    let mut object = serde_json::json!({
        "code": refusal.code.as_str(),
        "message": refusal.message,
    });
    if let Some(channel) = &refusal.channel {
        object["channel"] = channel.as_str().into();
    }
    // serde_json writes keys in order (code, channel, message); the type goes first.
    let body = object.to_string();
    format!("{{{}{}", kind(typed, "error"), &body[1..])
}

/// `reconnect`: the server is going away; come back after the delay.
pub(crate) fn reconnect(typed: Typed, delay_ms: u128) -> String {
    format!(
        r#"{{{}"delay_ms":{delay_ms},"reason":"shutdown"}}"#,
        kind(typed, "reconnect")
    )
}

/// `{"channel":…,"epoch":…,"offset":…,"data":…}` with an optional leading
/// `"type":"message",`; `data` is the payload, byte for byte.
pub(crate) fn message(message: &Message, typed: Typed, out: &mut BytesMut) {
    let mut head = String::with_capacity(96);
    head.push('{');
    if typed == Typed::Yes {
        head.push_str(r#""type":"message","#);
    }
    let _ = write!(
        head,
        r#""channel":"{}","epoch":"{}","offset":{},"#,
        message.channel.name(),
        message.position.epoch,
        message.position.offset
    );
    // Only a message published with a name has one (a Pusher event's).
    if let Some(event) = &message.event {
        let name = serde_json::Value::from(&**event);
        let _ = write!(head, r#""event":{name},"#);
    }
    head.push_str(r#""data":"#);
    out.put_slice(head.as_bytes());
    out.put_slice(&message.data);
    out.put_u8(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    #[test]
    fn a_message_names_its_event_when_it_has_one() {
        let channel = fanout::ChannelKey::parse("s/public").unwrap();
        let position = fanout::Position {
            epoch: fanout::Epoch::from_u64(1),
            offset: 2,
        };
        let tags = fanout::Tags {
            event: Some("new \"notice\""),
            excluded: None,
        };
        let stored = fanout::PublishRequest::tagged(channel.clone(), tags, b"{}").data;
        let mut out = BytesMut::new();
        message(
            &Message::new(channel.clone(), position, stored),
            Typed::Yes,
            &mut out,
        );
        assert_eq!(
            &out[..],
            br#"{"type":"message","channel":"public","epoch":"1","offset":2,"event":"new \"notice\"","data":{}}"#
        );
        let mut out = BytesMut::new();
        let plain = Message::new(channel, position, bytes::Bytes::from_static(b"[]"));
        message(&plain, Typed::No, &mut out);
        assert_eq!(
            &out[..],
            br#"{"channel":"public","epoch":"1","offset":2,"data":[]}"#
        );
    }

    #[test]
    fn errors_put_the_type_first_and_name_their_channel() {
        let refusal = Refusal::new(ErrorCode::Forbidden, "not \"yours\"").on_channel("user:2");
        assert_eq!(
            error(Typed::Yes, &refusal),
            r#"{"type":"error","channel":"user:2","code":"forbidden","message":"not \"yours\""}"#
        );
        let refusal = Refusal::new(ErrorCode::SlowConsumer, "behind");
        assert_eq!(
            error(Typed::No, &refusal),
            r#"{"code":"slow_consumer","message":"behind"}"#
        );
    }
}
