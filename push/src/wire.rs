//! The native wire format: parsing client frames and encoding server frames,
//! for WebSocket and SSE. `docs/protocol.md` is the contract this file keeps.

use std::fmt::Write as _;

use bytes::{BufMut, Bytes, BytesMut};
use fanout::{ChannelKey, ChannelName, Epoch, Message, Position};
use serde_json::Value;

use crate::ErrorCode;

/// [`Message::encoded`] slot of the WebSocket `message` frame.
const WS_MESSAGE_SLOT: usize = 0;
/// [`Message::encoded`] slot of the shared part of an SSE message event.
const SSE_MESSAGE_SLOT: usize = 1;

/// A frame a client may send.
#[derive(Debug, PartialEq)]
pub(crate) enum ClientFrame {
    Subscribe {
        /// The local name, as the client wrote it.
        channel: ChannelName,
        since: Option<Position>,
        /// The site's signature for a `private-` channel.
        signature: Option<String>,
    },
    Refresh {
        token: String,
    },
    Unsubscribe {
        channel: ChannelName,
    },
    Ping,
}

/// Why a client frame was refused; becomes an `error` frame.
#[derive(Debug, PartialEq)]
pub(crate) struct FrameError {
    pub code: ErrorCode,
    pub message: String,
    pub channel: Option<String>,
}

impl FrameError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            channel: None,
        }
    }
}

/// Parses one text frame from a client.
pub(crate) fn parse_client_frame(text: &str) -> Result<ClientFrame, FrameError> {
    let Ok(Value::Object(frame)) = serde_json::from_str::<Value>(text) else {
        return Err(FrameError::new(
            ErrorCode::BadJson,
            "a frame must be one JSON object",
        ));
    };
    let kind = match frame.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        _ => {
            return Err(FrameError::new(
                ErrorCode::UnknownType,
                "a frame needs a string \"type\"",
            ));
        }
    };
    let channel = || -> Result<ChannelName, FrameError> {
        let Some(Value::String(name)) = frame.get("channel") else {
            return Err(FrameError::new(
                ErrorCode::BadFrame,
                format!("{kind} needs a string \"channel\""),
            ));
        };
        ChannelName::new(name).map_err(|e| FrameError {
            code: ErrorCode::InvalidChannel,
            message: e.to_string(),
            channel: Some(name.clone()),
        })
    };
    match kind {
        "subscribe" => {
            let channel = channel()?;
            let since = match frame.get("since") {
                None | Some(Value::Null) => None,
                Some(since) => {
                    Some(
                        parse_since(since).ok_or_else(|| FrameError {
                            code: ErrorCode::BadFrame,
                            message:
                                "\"since\" must be {\"epoch\": \"<hex>\", \"offset\": <integer>}"
                                    .into(),
                            channel: Some(channel.to_string()),
                        })?,
                    )
                }
            };
            let signature = match frame.get("signature") {
                None | Some(Value::Null) => None,
                Some(Value::String(signature)) => Some(signature.clone()),
                Some(_) => {
                    return Err(FrameError {
                        code: ErrorCode::BadFrame,
                        message: "\"signature\" must be a string".into(),
                        channel: Some(channel.to_string()),
                    });
                }
            };
            Ok(ClientFrame::Subscribe {
                channel,
                since,
                signature,
            })
        }
        "unsubscribe" => Ok(ClientFrame::Unsubscribe {
            channel: channel()?,
        }),
        "ping" => Ok(ClientFrame::Ping),
        "refresh" => match frame.get("token") {
            Some(Value::String(token)) => Ok(ClientFrame::Refresh {
                token: token.clone(),
            }),
            _ => Err(FrameError::new(
                ErrorCode::BadFrame,
                "refresh needs a string \"token\"",
            )),
        },
        other => Err(FrameError::new(
            ErrorCode::UnknownType,
            format!("unknown frame type {other:?}"),
        )),
    }
}

fn parse_since(since: &Value) -> Option<Position> {
    let epoch = since.get("epoch")?.as_str()?.parse::<Epoch>().ok()?;
    let offset = since.get("offset")?.as_u64()?;
    Some(Position { epoch, offset })
}

/// Server frames other than `message`, as JSON text.
pub(crate) mod json {
    use super::*;

    pub fn welcome(connection_id: &str, ping_interval_ms: u128, expires_at: Option<u64>) -> String {
        let expires = match expires_at {
            Some(exp) => format!(r#","expires_at":{exp}"#),
            None => String::new(),
        };
        format!(
            r#"{{"type":"welcome","connection_id":"{connection_id}","ping_interval_ms":{ping_interval_ms}{expires}}}"#
        )
    }

    pub fn refreshed(expires_at: u64) -> String {
        format!(r#"{{"type":"refreshed","expires_at":{expires_at}}}"#)
    }

    /// `subscribed`: a WebSocket frame with `typed`, the data of an SSE
    /// `subscribed` event without (SSE names the event type itself).
    pub fn subscribed(
        channel: &ChannelKey,
        position: Position,
        recovered: bool,
        typed: bool,
    ) -> String {
        let kind = if typed { r#""type":"subscribed","# } else { "" };
        format!(
            r#"{{{kind}"channel":"{}","epoch":"{}","offset":{},"recovered":{recovered}}}"#,
            channel.name(),
            position.epoch,
            position.offset
        )
    }

    pub fn unsubscribed(channel: &ChannelName) -> String {
        format!(r#"{{"type":"unsubscribed","channel":"{channel}"}}"#)
    }

    pub fn pong() -> String {
        r#"{"type":"pong"}"#.to_string()
    }

    pub fn error(error: &FrameError) -> String {
        // Unwrap: serialising a string cannot fail.
        let message = serde_json::to_string(&error.message).unwrap();
        let channel = match &error.channel {
            Some(channel) => format!(r#","channel":{}"#, serde_json::to_string(channel).unwrap()),
            None => String::new(),
        };
        format!(
            r#"{{"type":"error","code":"{}","message":{message}{channel}}}"#,
            error.code.as_str()
        )
    }

    /// `reconnect`, typed for WebSocket, untyped as SSE event data.
    pub fn reconnect(delay_ms: u128, typed: bool) -> String {
        let kind = if typed { r#""type":"reconnect","# } else { "" };
        format!(r#"{{{kind}"delay_ms":{delay_ms},"reason":"shutdown"}}"#)
    }
}

/// `{"channel":…,"epoch":…,"offset":…,"data":…}` with an optional leading
/// `"type":"message",`. Channel names and epochs never need escaping.
fn message_json(message: &Message, with_type: bool, out: &mut BytesMut) {
    let mut head = String::with_capacity(96);
    head.push('{');
    if with_type {
        head.push_str(r#""type":"message","#);
    }
    let _ = write!(
        head,
        r#""channel":"{}","epoch":"{}","offset":{},"data":"#,
        message.channel.name(),
        message.position.epoch,
        message.position.offset
    );
    out.put_slice(head.as_bytes());
    out.put_slice(&message.data);
    out.put_u8(b'}');
}

/// The WebSocket frame of `message`, built once and shared by every subscriber.
pub(crate) fn ws_message(message: &Message) -> Bytes {
    message.encoded(WS_MESSAGE_SLOT, |m| {
        let mut json = BytesMut::with_capacity(m.data.len() + 128);
        message_json(m, true, &mut json);
        ws_text(&json)
    })
}

/// An unmasked, final WebSocket text frame (server to client).
pub(crate) fn ws_text(payload: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(payload.len() + 10);
    frame.put_u8(0x81);
    match payload.len() {
        len @ 0..=125 => frame.put_u8(len as u8),
        len @ 126..=0xffff => {
            frame.put_u8(126);
            frame.put_u16(len as u16);
        }
        len => {
            frame.put_u8(127);
            frame.put_u64(len as u64);
        }
    }
    frame.put_slice(payload);
    frame.freeze()
}

/// An empty WebSocket Ping control frame.
pub(crate) fn ws_ping() -> Bytes {
    Bytes::from_static(&[0x89, 0x00])
}

/// The shared part of an SSE message event: its `data:` lines and the blank
/// line that ends it. The per-stream `id:` line goes in front of it.
pub(crate) fn sse_message(message: &Message) -> Bytes {
    message.encoded(SSE_MESSAGE_SLOT, |m| {
        let mut json = BytesMut::with_capacity(m.data.len() + 128);
        message_json(m, false, &mut json);
        let mut event = BytesMut::with_capacity(json.len() + 16);
        sse_data(&json, &mut event);
        event.put_u8(b'\n');
        event.freeze()
    })
}

/// Writes `data` as `data:` lines. JSON may contain line breaks only as
/// whitespace between tokens, so splitting there keeps every string intact,
/// and EventSource joins the lines back with `\n`.
fn sse_data(data: &[u8], out: &mut BytesMut) {
    let mut rest = data;
    loop {
        out.put_slice(b"data: ");
        match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            Some(at) => {
                out.put_slice(&rest[..at]);
                out.put_u8(b'\n');
                let skip = if rest[at] == b'\r' && rest.get(at + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                rest = &rest[at + skip..];
            }
            None => {
                out.put_slice(rest);
                out.put_u8(b'\n');
                return;
            }
        }
    }
}

/// A complete SSE event with an optional `id` and `event` type.
pub(crate) fn sse_event(id: Option<&str>, event: Option<&str>, data: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 64);
    if let Some(id) = id {
        out.put_slice(b"id: ");
        out.put_slice(id.as_bytes());
        out.put_u8(b'\n');
    }
    if let Some(event) = event {
        out.put_slice(b"event: ");
        out.put_slice(event.as_bytes());
        out.put_u8(b'\n');
    }
    sse_data(data.as_bytes(), &mut out);
    out.put_u8(b'\n');
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(name: &str) -> ChannelName {
        ChannelName::new(name).unwrap()
    }

    #[test]
    fn client_frames() {
        let epoch = Epoch::from_u64(0xab);
        let cases: Vec<(&str, Result<ClientFrame, ErrorCode>)> = vec![
            (
                r#"{"type":"subscribe","channel":"public"}"#,
                Ok(ClientFrame::Subscribe {
                    channel: channel("public"),
                    since: None,
                    signature: None,
                }),
            ),
            (
                r#"{"type":"subscribe","channel":"user:1","since":{"epoch":"ab","offset":7}}"#,
                Ok(ClientFrame::Subscribe {
                    channel: channel("user:1"),
                    since: Some(Position { epoch, offset: 7 }),
                    signature: None,
                }),
            ),
            (
                r#"{"type":"subscribe","channel":"a","since":null}"#,
                Ok(ClientFrame::Subscribe {
                    channel: channel("a"),
                    since: None,
                    signature: None,
                }),
            ),
            (
                r#"{"type":"unsubscribe","channel":"a"}"#,
                Ok(ClientFrame::Unsubscribe {
                    channel: channel("a"),
                }),
            ),
            (r#"{"type":"ping"}"#, Ok(ClientFrame::Ping)),
            (
                r#"{"type":"subscribe","channel":"private-a","signature":"00ff"}"#,
                Ok(ClientFrame::Subscribe {
                    channel: channel("private-a"),
                    since: None,
                    signature: Some("00ff".into()),
                }),
            ),
            (
                r#"{"type":"refresh","token":"t"}"#,
                Ok(ClientFrame::Refresh { token: "t".into() }),
            ),
            (r#"{"type":"refresh"}"#, Err(ErrorCode::BadFrame)),
            (
                r#"{"type":"subscribe","channel":"a","signature":1}"#,
                Err(ErrorCode::BadFrame),
            ),
            ("not json", Err(ErrorCode::BadJson)),
            ("[1,2]", Err(ErrorCode::BadJson)),
            (r#"{"type":"subscribe""#, Err(ErrorCode::BadJson)),
            ("{}", Err(ErrorCode::UnknownType)),
            (r#"{"type":7}"#, Err(ErrorCode::UnknownType)),
            (r#"{"type":"publish"}"#, Err(ErrorCode::UnknownType)),
            (r#"{"type":"subscribe"}"#, Err(ErrorCode::BadFrame)),
            (
                r#"{"type":"subscribe","channel":5}"#,
                Err(ErrorCode::BadFrame),
            ),
            (
                r#"{"type":"subscribe","channel":"bad name"}"#,
                Err(ErrorCode::InvalidChannel),
            ),
            (
                r#"{"type":"subscribe","channel":"a","since":{"epoch":"zz","offset":1}}"#,
                Err(ErrorCode::BadFrame),
            ),
            (
                r#"{"type":"subscribe","channel":"a","since":{"epoch":"ab","offset":-1}}"#,
                Err(ErrorCode::BadFrame),
            ),
            (r#"{"type":"unsubscribe"}"#, Err(ErrorCode::BadFrame)),
        ];
        for (input, expect) in cases {
            let got = parse_client_frame(input).map_err(|e| e.code);
            assert_eq!(got, expect, "{input}");
        }
    }

    #[test]
    fn ws_frame_lengths() {
        for (len, header) in [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)] {
            let frame = ws_text(&vec![b'x'; len]);
            assert_eq!(frame.len(), len + header, "{len}");
            assert_eq!(frame[0], 0x81);
        }
    }

    #[test]
    fn messages_keep_the_payload_bytes() {
        let position = Position {
            epoch: Epoch::from_u64(0x1f),
            offset: 3,
        };
        let data = Bytes::from_static(b"{\"a\" : [1,\n 2]}");
        let message = Message::new(ChannelKey::parse("s/public").unwrap(), position, data);
        let ws = ws_message(&message);
        assert_eq!(
            &ws[2..],
            b"{\"type\":\"message\",\"channel\":\"public\",\"epoch\":\"1f\",\"offset\":3,\"data\":{\"a\" : [1,\n 2]}}"
        );
        let sse = sse_message(&message);
        assert_eq!(
            &sse[..],
            b"data: {\"channel\":\"public\",\"epoch\":\"1f\",\"offset\":3,\"data\":{\"a\" : [1,\ndata:  2]}}\n\n"
        );
    }

    #[test]
    fn sse_events_split_lines() {
        let event = sse_event(Some("1f:3"), Some("subscribed"), "a\r\nb\rc");
        assert_eq!(
            &event[..],
            b"id: 1f:3\nevent: subscribed\ndata: a\ndata: b\ndata: c\n\n"
        );
    }
}
