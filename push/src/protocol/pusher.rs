//! The Pusher Channels protocol, versions 6 and 7 (`GET /app/<key>`,
//! docs/compat.md), for pusher-js, Laravel Echo and the Pusher mobile SDKs.
//!
//! Every WebSocket text frame is one JSON object: `event`, `channel`,
//! `data`. Server frames carry `data` as a JSON-encoded string; client
//! frames as an object (or, from pysher, a string).
//!
//! | client frame | intent | answer |
//! |---|---|---|
//! | `pusher:subscribe` (`channel`, `auth`) | [`Intent::Subscribe`], `auth` without its `key:` as the signature | `pusher_internal:subscription_succeeded` |
//! | `pusher:unsubscribe` | [`Intent::Unsubscribe`] | nothing |
//! | `pusher:ping` | [`Intent::Ping`] | `pusher:pong` |
//! | `pusher:pong` | heard, nothing answered | |
//! | `client-…` (`channel`, `data`) | [`Intent::Publish`]: the core checks the site allows it | nothing; the channel's other subscribers get it |
//! | `pusher:signin` (`auth`, `user_data`) | [`Intent::SignIn`] | `pusher:signin_success` |
//! | `pusher:subscribe` to `presence-…` (`channel`, `auth`, `channel_data`) | [`Intent::Subscribe`] with the member; `auth` signs `socket_id:channel:channel_data` | `subscription_succeeded` with `presence` (`count`, `ids`, `hash`); then `pusher_internal:member_added`/`member_removed` |
//!
//! A signed-in user's `#server-to-user-<id>` is Herald's `user:<id>`, which
//! only that user may read: server-to-user events (`POST
//! /apps/<id>/users/<user>/events`) and timeline deliveries reach it.
//!
//! The socket id is the connection's id written `<digits>.<digits>`, and a
//! `private-` channel's `auth` is checked as Herald checks any channel
//! signature, which is Pusher's formula: the HMAC of `socket_id:channel`
//! under the site's secret. A message's frame is the same bytes for every
//! Pusher subscriber (its event name, its channel, its data as a string),
//! encoded once in its own slot, so an idle Pusher connection parks as a
//! native one does.

use std::{borrow::Cow, sync::Arc};

use bytes::Bytes;
use fanout::{ChannelName, Message, presence};
use serde_json::{Value, json};

use super::{ClientFrame, Event, Intent, Protocol, Slot};
use crate::{
    CloseReason, ErrorCode, Refusal, Transport, connection::Outgoing, subscriptions::Subscriptions,
    ws,
};

/// The event name of a message published without one (through the native
/// API, Meteor or STOMP).
pub const DEFAULT_EVENT: &str = "message";

/// Pusher on one WebSocket. One byte of state: a Pusher session stays in
/// the allocation class of a native one (`session.rs`).
#[derive(Debug, Default)]
pub struct PusherWs {
    /// The last intent was a `pusher:pong`: its answer is silence.
    swallow_pong: bool,
}

fn refuse(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Refusal {
    Refusal::new(code, message)
}

/// The socket id Pusher clients see for connection `id`: `^\d+\.\d+$`, as
/// the Pusher server libraries check.
pub fn socket_id(id: u64) -> String {
    format!("{}.{}", id / 1_000_000_000, id % 1_000_000_000)
}

/// The connection id of a socket id ([`socket_id`]), when it is one.
pub fn connection_of(socket_id: &str) -> Option<u64> {
    let (high, low) = socket_id.split_once('.')?;
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(high) || !all_digits(low) || low.len() > 9 {
        return None;
    }
    let high: u64 = high.parse().ok()?;
    let low: u64 = low.parse().ok()?;
    high.checked_mul(1_000_000_000)?.checked_add(low)
}

impl PusherWs {
    fn subscribe(data: &Value) -> Result<Intent, Refusal> {
        let Some(name) = data.get("channel").and_then(Value::as_str) else {
            return Err(refuse(
                ErrorCode::MissingChannel,
                "pusher:subscribe needs data.channel",
            ));
        };
        if is_timeline(name) {
            return Err(refuse(
                ErrorCode::Forbidden,
                "a user's channel is #server-to-user-<id>, after pusher:signin",
            )
            .on_channel(name));
        }
        let channel = herald_channel(name)
            .map_err(|e| refuse(ErrorCode::InvalidChannel, e.to_string()).on_channel(name))?;
        // `<key>:<hex HMAC>`; the HMAC is what proves the subscribe.
        let signature = data
            .get("auth")
            .and_then(Value::as_str)
            .filter(|auth| !auth.is_empty())
            .map(|auth| {
                auth.rsplit_once(':')
                    .map_or(auth, |(_, hex)| hex)
                    .to_string()
            });
        // A presence channel's member, which the `auth` signs too.
        let channel_data = data
            .get("channel_data")
            .and_then(Value::as_str)
            .map(str::to_string);
        Ok(Intent::Subscribe {
            channel,
            since: None,
            signature,
            channel_data,
        })
    }
}

impl Protocol for PusherWs {
    const TRANSPORT: Transport = Transport::Ws;

    fn connection_id(id: u64) -> String {
        socket_id(id)
    }

    const SHARED_FRAME: Option<fn(&Message) -> Bytes> = Some(pusher_message);

    fn parse(&mut self, frame: ClientFrame<'_>) -> Result<Intent, Refusal> {
        self.swallow_pong = false;
        let ClientFrame::Text(text) = frame else {
            return Err(refuse(
                ErrorCode::BadFrame,
                "binary frames are not part of the Pusher protocol",
            ));
        };
        let message: Value = serde_json::from_str(text)
            .map_err(|e| refuse(ErrorCode::BadJson, format!("not a Pusher frame: {e}")))?;
        let Some(event) = message.get("event").and_then(Value::as_str) else {
            return Err(refuse(
                ErrorCode::BadFrame,
                "a Pusher frame names its event",
            ));
        };
        // pysher sends its data as a string.
        let data = match message.get("data") {
            Some(Value::String(text)) => serde_json::from_str(text).unwrap_or(Value::Null),
            Some(data) => data.clone(),
            None => Value::Null,
        };
        match event {
            "pusher:subscribe" => Self::subscribe(&data),
            "pusher:unsubscribe" => {
                let name = data.get("channel").and_then(Value::as_str).unwrap_or("");
                let channel = herald_channel(name).map_err(|e| {
                    refuse(ErrorCode::InvalidChannel, e.to_string()).on_channel(name)
                })?;
                Ok(Intent::Unsubscribe { channel })
            }
            "pusher:ping" => Ok(Intent::Ping),
            "pusher:pong" => {
                self.swallow_pong = true;
                Ok(Intent::Ping)
            }
            "pusher:signin" => {
                let user_data = data.get("user_data").and_then(Value::as_str);
                let auth = data.get("auth").and_then(Value::as_str);
                let (Some(user_data), Some(auth)) = (user_data, auth) else {
                    return Err(refuse(
                        ErrorCode::BadRequest,
                        "pusher:signin needs data.auth and data.user_data",
                    ));
                };
                Ok(Intent::SignIn {
                    user_data: user_data.to_string(),
                    signature: auth
                        .rsplit_once(':')
                        .map_or(auth, |(_, hex)| hex)
                        .to_string(),
                })
            }
            event if event.starts_with("client-") => {
                let name = message.get("channel").and_then(Value::as_str).unwrap_or("");
                let channel = ChannelName::new(name).map_err(|e| {
                    refuse(ErrorCode::InvalidChannel, e.to_string()).on_channel(name)
                })?;
                // The data as JSON text: a string that holds JSON is that
                // JSON, as the REST API takes it.
                let data = match message.get("data") {
                    Some(Value::String(text)) if serde_json::from_str::<Value>(text).is_ok() => {
                        text.clone()
                    }
                    Some(data) => data.to_string(),
                    None => "null".to_string(),
                };
                Ok(Intent::Publish {
                    channel,
                    event: event.to_string(),
                    data: Bytes::from(data),
                })
            }
            event => Err(refuse(
                ErrorCode::UnknownType,
                format!("unknown event {event}"),
            )),
        }
    }

    fn encode(&mut self, event: Event<'_>, _view: &Subscriptions, out: &mut Outgoing) {
        let frame = match event {
            Event::Opened {
                connection_id,
                ping_interval,
                ..
            } => {
                let data = json!({
                    "socket_id": socket_id(connection_id),
                    "activity_timeout": ping_interval.as_secs().max(1),
                });
                json!({"event": "pusher:connection_established", "data": data.to_string()})
            }
            // Also when a channel's positions were reset under the client
            // (its history lost): a Pusher client has no positions, and
            // hears `subscription_succeeded` again, as after a reconnect,
            // which is when apps reload what they show.
            // A presence channel's reset is not announced: the member list
            // pusher-js holds stays right, as member events keep coming.
            Event::Subscribed {
                channel,
                members: None,
                ..
            } if presence::is_presence(channel.name()) => return,
            Event::Subscribed {
                channel, members, ..
            } => {
                let data = match members {
                    Some(members) => json!({ "presence": presence::pusher_presence(members) }),
                    None => json!({}),
                };
                json!({
                    "event": "pusher_internal:subscription_succeeded",
                    "channel": pusher_channel(channel.name()),
                    "data": data.to_string(),
                })
            }
            Event::Unsubscribed { .. } => return,
            Event::Pong => {
                if std::mem::take(&mut self.swallow_pong) {
                    return;
                }
                json!({"event": "pusher:pong", "data": "{}"})
            }
            Event::Refused(refusal) => {
                let message = match &refusal.channel {
                    Some(channel) => format!("{channel}: {}", refusal.message),
                    None => refusal.message.to_string(),
                };
                // A refused frame is not fatal: Pusher says so with no code.
                json!({"event": "pusher:error", "data": {"code": null, "message": message}})
            }
            // Browsers and the `ws` package answer a WebSocket Ping by
            // themselves; pusher-js pings on its own `activity_timeout`.
            Event::Heartbeat => return out.push(ws::frame::ping()),
            Event::Closing {
                reason, message, ..
            } => {
                let code = close_code(reason);
                if code < 4000 {
                    return;
                }
                json!({"event": "pusher:error", "data": {"code": code, "message": message}})
            }
            Event::SignedIn { user_data } => {
                let data = json!({ "user_data": user_data });
                json!({"event": "pusher:signin_success", "data": data.to_string()})
            }
            Event::Refreshed { .. } => return,
        };
        out.push(ws::frame::text(frame.to_string().as_bytes()));
    }

    fn message(&mut self, message: &Arc<Message>, _view: &Subscriptions, out: &mut Outgoing) {
        out.push(pusher_message(message));
    }

    fn close_code(&self, reason: CloseReason) -> u16 {
        close_code(reason)
    }
}

/// The prefix of a signed-in user's channel in Pusher.
const USER_CHANNEL: &str = "#server-to-user-";

/// Whether `name` is one of Herald's timeline channels (`user:…`,
/// `replies:…`), which Pusher clients do not name.
fn is_timeline(name: &str) -> bool {
    name.starts_with("user:") || name.starts_with("replies:")
}

/// Herald's channel for a Pusher channel name: a signed-in user's
/// `#server-to-user-<id>` is the user's own channel, `user:<id>`, which
/// server-to-user events and timeline deliveries publish to.
pub fn herald_channel(name: &str) -> Result<ChannelName, fanout::Error> {
    match name.strip_prefix(USER_CHANNEL) {
        Some(user) if fanout::timeline::is_user_id(user) => {
            ChannelName::new(&format!("user:{user}"))
        }
        // Refused for its `#`, as any name Herald does not take.
        _ => ChannelName::new(name),
    }
}

/// The Pusher name of one of Herald's channels ([`herald_channel`] back).
fn pusher_channel(name: &str) -> Cow<'_, str> {
    match name.strip_prefix("user:") {
        Some(user) => Cow::Owned(format!("{USER_CHANNEL}{user}")),
        None => Cow::Borrowed(name),
    }
}

/// The close code pusher-js acts on for `reason` (protocols.md §1.5):
/// 4001–4099 it never retries, 4100–4199 it retries after a second,
/// 4200–4299 at once.
fn close_code(reason: CloseReason) -> u16 {
    let CloseReason::Code(code) = reason else {
        return reason.ws_code();
    };
    match code {
        ErrorCode::SiteUnknown => 4001,
        ErrorCode::SiteRemoved => 4003,
        ErrorCode::Shutdown => 4200,
        ErrorCode::IdleTimeout => 4201,
        // Framing errors keep their RFC 6455 codes, which pusher-js retries.
        ErrorCode::ProtocolError | ErrorCode::InvalidPayload | ErrorCode::MessageTooBig => {
            code.close_code()
        }
        code if code.is_temporary() || code == ErrorCode::SlowConsumer => 4100,
        _ => 4009,
    }
}

/// A message's Pusher frame, built once and shared by every Pusher
/// subscriber: its event name ([`DEFAULT_EVENT`] without one), its channel,
/// and its data as a JSON-encoded string.
pub(crate) fn pusher_message(message: &Message) -> Bytes {
    message.encoded(Slot::PusherWs.index(), |m| {
        let data = String::from_utf8_lossy(&m.data);
        let frame = json!({
            "event": m.event.as_deref().unwrap_or(DEFAULT_EVENT),
            "channel": pusher_channel(m.channel.name()),
            "data": data,
        });
        ws::frame::text(frame.to_string().as_bytes())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Intent, ErrorCode> {
        PusherWs::default()
            .parse(ClientFrame::Text(text))
            .map_err(|r| r.code)
    }

    #[test]
    fn socket_ids_are_digits_dot_digits() {
        assert_eq!(socket_id(123_000_000_456), "123.456");
        assert_eq!(socket_id(7), "0.7");
        for id in [0, 7, 123_000_000_456, u64::MAX >> 11] {
            assert_eq!(connection_of(&socket_id(id)), Some(id));
        }
        for bad in [
            "",
            "1",
            "1.",
            ".1",
            "a.1",
            "1.1234567890",
            "99999999999999999999.1",
        ] {
            assert_eq!(connection_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn client_frames_become_intents() {
        let subscribe = parse(
            r#"{"event":"pusher:subscribe","data":{"auth":"app-key:02191fa5e537ed34e8f6d37d3be420047de41ffd8ce93ed6f1552981fab10162","channel":"private-user-7"}}"#,
        );
        match subscribe {
            Ok(Intent::Subscribe {
                channel, signature, ..
            }) => {
                assert_eq!(channel.as_str(), "private-user-7");
                assert_eq!(
                    signature.as_deref(),
                    Some("02191fa5e537ed34e8f6d37d3be420047de41ffd8ce93ed6f1552981fab10162")
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(r#"{"event":"pusher:subscribe","data":{"auth":"","channel":"timeline-public"}}"#),
            Ok(Intent::Subscribe {
                signature: None,
                ..
            })
        ));
        assert_eq!(
            parse(r#"{"event":"pusher:ping","data":{}}"#),
            Ok(Intent::Ping)
        );
        assert_eq!(
            parse(r#"{"event":"pusher:ping","data":""}"#),
            Ok(Intent::Ping)
        );
        assert_eq!(
            parse(r#"{"event":"client-typing","channel":"private-a","data":{"typing":true}}"#),
            Ok(Intent::Publish {
                channel: ChannelName::new("private-a").unwrap(),
                event: "client-typing".into(),
                data: Bytes::from_static(br#"{"typing":true}"#),
            })
        );
        assert!(matches!(
            parse(r#"{"event":"pusher:unsubscribe","data":{"channel":"a"}}"#),
            Ok(Intent::Unsubscribe { .. })
        ));
        let cases = [
            (
                r#"{"event":"pusher:subscribe","data":{}}"#,
                ErrorCode::MissingChannel,
            ),
            (
                r#"{"event":"pusher:subscribe","data":{"channel":"a,b"}}"#,
                ErrorCode::InvalidChannel,
            ),
            (
                r#"{"event":"client-typing","channel":"a b","data":{}}"#,
                ErrorCode::InvalidChannel,
            ),
            (
                r#"{"event":"pusher:signin","data":{}}"#,
                ErrorCode::BadRequest,
            ),
            (
                r#"{"event":"pusher:subscribe","data":{"channel":"user:7"}}"#,
                ErrorCode::Forbidden,
            ),
            (r#"{"event":"nope","data":{}}"#, ErrorCode::UnknownType),
            ("not json", ErrorCode::BadJson),
        ];
        for (frame, code) in cases {
            assert_eq!(parse(frame).err(), Some(code), "{frame}");
        }
    }

    #[test]
    fn a_users_channel_is_herald_s_user_channel() {
        assert_eq!(
            herald_channel("#server-to-user-42").unwrap().as_str(),
            "user:42"
        );
        assert_eq!(pusher_channel("user:42"), "#server-to-user-42");
        assert_eq!(herald_channel("private-a").unwrap().as_str(), "private-a");
        assert_eq!(pusher_channel("private-a"), "private-a");
        assert!(herald_channel("#server-to-user-").is_err());
        let signin = parse(
            r#"{"event":"pusher:signin","data":{"auth":"app-key:ce5a","user_data":"{\"id\":\"42\"}"}}"#,
        );
        assert_eq!(
            signin,
            Ok(Intent::SignIn {
                user_data: r#"{"id":"42"}"#.into(),
                signature: "ce5a".into(),
            })
        );
    }

    #[test]
    fn close_codes_follow_what_pusher_js_does() {
        let code = |c| close_code(CloseReason::Code(c));
        assert_eq!(code(ErrorCode::SiteUnknown), 4001);
        assert_eq!(code(ErrorCode::Shutdown), 4200);
        assert_eq!(code(ErrorCode::IdleTimeout), 4201);
        assert_eq!(code(ErrorCode::SlowConsumer), 4100);
        assert_eq!(code(ErrorCode::SiteConnectionLimit), 4100);
        assert_eq!(code(ErrorCode::TokenInvalid), 4009);
        assert_eq!(close_code(CloseReason::ClientClosed), 1000);
    }
}
