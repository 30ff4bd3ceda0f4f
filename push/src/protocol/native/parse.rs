//! Client frames of the native protocol: one JSON object per text frame,
//! with a `"type"`. Each frame type has its own parser; `docs/protocol.md`
//! lists the fields and the error codes kept here.

use fanout::{ChannelName, Epoch, Position};
use serde_json::{Map, Value};

use crate::{ErrorCode, Intent, Refusal};

type Object = Map<String, Value>;

/// Parses one text frame from a client.
pub(crate) fn parse(text: &str) -> Result<Intent, Refusal> {
    let Ok(Value::Object(frame)) = serde_json::from_str::<Value>(text) else {
        return Err(Refusal::new(
            ErrorCode::BadJson,
            "a frame must be one JSON object",
        ));
    };
    match frame.get("type") {
        Some(Value::String(kind)) => match kind.as_str() {
            "subscribe" => subscribe(&frame),
            "unsubscribe" => unsubscribe(&frame),
            "ping" => Ok(Intent::Ping),
            "refresh" => refresh(&frame),
            other => Err(Refusal::new(
                ErrorCode::UnknownType,
                format!("unknown frame type {other:?}"),
            )),
        },
        _ => Err(Refusal::new(
            ErrorCode::UnknownType,
            "a frame needs a string \"type\"",
        )),
    }
}

fn subscribe(frame: &Object) -> Result<Intent, Refusal> {
    let channel = channel(frame, "subscribe")?;
    let since = match frame.get("since") {
        None | Some(Value::Null) => None,
        Some(since) => Some(position(since).ok_or_else(|| {
            Refusal::new(
                ErrorCode::BadFrame,
                "\"since\" must be {\"epoch\": \"<hex>\", \"offset\": <integer>}",
            )
            .on_channel(channel.as_str())
        })?),
    };
    let signature = match frame.get("signature") {
        None | Some(Value::Null) => None,
        Some(Value::String(signature)) => Some(signature.clone()),
        Some(_) => {
            return Err(
                Refusal::new(ErrorCode::BadFrame, "\"signature\" must be a string")
                    .on_channel(channel.as_str()),
            );
        }
    };
    // A presence channel's member, as the site signed it with the
    // signature (docs/presence.md).
    let channel_data = match frame.get("channel_data") {
        None | Some(Value::Null) => None,
        Some(Value::String(data)) => Some(data.clone()),
        Some(_) => {
            return Err(
                Refusal::new(ErrorCode::BadFrame, "\"channel_data\" must be a string")
                    .on_channel(channel.as_str()),
            );
        }
    };
    Ok(Intent::Subscribe {
        channel,
        since,
        signature,
        channel_data,
    })
}

fn unsubscribe(frame: &Object) -> Result<Intent, Refusal> {
    let channel = channel(frame, "unsubscribe")?;
    Ok(Intent::Unsubscribe { channel })
}

fn refresh(frame: &Object) -> Result<Intent, Refusal> {
    match frame.get("token") {
        Some(Value::String(token)) => Ok(Intent::Refresh {
            token: token.clone(),
        }),
        _ => Err(Refusal::new(
            ErrorCode::BadFrame,
            "refresh needs a string \"token\"",
        )),
    }
}

/// The frame's `channel`, checked against the naming rules.
fn channel(frame: &Object, kind: &str) -> Result<ChannelName, Refusal> {
    let Some(Value::String(name)) = frame.get("channel") else {
        return Err(Refusal::new(
            ErrorCode::BadFrame,
            format!("{kind} needs a string \"channel\""),
        ));
    };
    ChannelName::new(name)
        .map_err(|e| Refusal::new(ErrorCode::InvalidChannel, e.to_string()).on_channel(name))
}

/// `{"epoch": "<hex>", "offset": <integer>}`.
fn position(since: &Value) -> Option<Position> {
    let epoch = since.get("epoch")?.as_str()?.parse::<Epoch>().ok()?;
    let offset = since.get("offset")?.as_u64()?;
    Some(Position { epoch, offset })
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
        let cases: Vec<(&str, Result<Intent, ErrorCode>)> = vec![
            (
                r#"{"type":"subscribe","channel":"public"}"#,
                Ok(Intent::Subscribe {
                    channel: channel("public"),
                    since: None,
                    signature: None,
                    channel_data: None,
                }),
            ),
            (
                r#"{"type":"subscribe","channel":"user:1","since":{"epoch":"ab","offset":7}}"#,
                Ok(Intent::Subscribe {
                    channel: channel("user:1"),
                    since: Some(Position { epoch, offset: 7 }),
                    signature: None,
                    channel_data: None,
                }),
            ),
            (
                r#"{"type":"subscribe","channel":"a","since":null}"#,
                Ok(Intent::Subscribe {
                    channel: channel("a"),
                    since: None,
                    signature: None,
                    channel_data: None,
                }),
            ),
            (
                r#"{"type":"unsubscribe","channel":"a"}"#,
                Ok(Intent::Unsubscribe {
                    channel: channel("a"),
                }),
            ),
            (r#"{"type":"ping"}"#, Ok(Intent::Ping)),
            (
                r#"{"type":"subscribe","channel":"private-a","signature":"00ff"}"#,
                Ok(Intent::Subscribe {
                    channel: channel("private-a"),
                    since: None,
                    signature: Some("00ff".into()),
                    channel_data: None,
                }),
            ),
            (
                r#"{"type":"refresh","token":"t"}"#,
                Ok(Intent::Refresh { token: "t".into() }),
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
            let got = parse(input).map_err(|e| e.code);
            assert_eq!(got, expect, "{input}");
        }
    }

    #[test]
    fn refusals_name_the_channel_they_concern() {
        let refusal = parse(r#"{"type":"subscribe","channel":"bad name"}"#).unwrap_err();
        assert_eq!(refusal.channel.as_deref(), Some("bad name"));
        let refusal = parse(r#"{"type":"subscribe","channel":"a","since":1}"#).unwrap_err();
        assert_eq!(refusal.channel.as_deref(), Some("a"));
    }
}
