//! Positions and delivered messages, parsed so that `data` keeps the exact bytes Herald sent.

use std::collections::BTreeMap;

use serde_json::Value;
use serde_json::value::RawValue;

/// A position in a channel: `epoch` and `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The channel's epoch (1–16 lowercase hex digits).
    pub epoch: String,
    /// The offset within the epoch.
    pub offset: u64,
}

/// A `message` (WebSocket frame or SSE event data), with `data` kept as raw JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The channel it was published to.
    pub channel: String,
    /// Its position.
    pub position: Position,
    /// The `data` value exactly as it appears in the frame.
    pub data: String,
}

impl Position {
    /// Reads `epoch` and `offset` from an object (a publish result, `subscribed`, `message`).
    pub fn from_json(json: &Value) -> Position {
        let epoch = json["epoch"]
            .as_str()
            .unwrap_or_else(|| panic!("no string epoch in {json}"))
            .to_owned();
        assert!(
            (1..=16).contains(&epoch.len())
                && epoch
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "epoch is 1-16 lowercase hex digits: {json}"
        );
        let offset = json["offset"]
            .as_u64()
            .unwrap_or_else(|| panic!("no integer offset in {json}"));
        Position { epoch, offset }
    }

    /// The SSE cursor form `epoch:offset`.
    pub fn cursor(&self) -> String {
        format!("{}:{}", self.epoch, self.offset)
    }
}

impl Delivered {
    /// Parses a WebSocket `message` frame (with `"type":"message"`) or an SSE message event's data
    /// (the same object without `type`).
    pub fn parse(text: &str) -> Delivered {
        let fields: BTreeMap<&str, &RawValue> = serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("message is not a JSON object ({e}): {text}"));
        if let Some(kind) = fields.get("type") {
            assert_eq!(kind.get(), r#""message""#, "not a message frame: {text}");
        }
        let json: Value = serde_json::from_str(text).expect("parsed above");
        let channel = json["channel"]
            .as_str()
            .unwrap_or_else(|| panic!("message without channel: {text}"))
            .to_owned();
        let data = fields
            .get("data")
            .unwrap_or_else(|| panic!("message without data: {text}"))
            .get()
            .to_owned();
        Delivered {
            channel,
            position: Position::from_json(&json),
            data,
        }
    }
}
