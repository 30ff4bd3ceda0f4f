//! The `POST /api/deliver` request of the `fanout` scenario
//! (`docs/timelines.md`): its JSON body, built once and stamped with the send
//! time just before it is written, and its answer.

use std::{io::Write as _, ops::Range};

use anyhow::{Context, anyhow, bail};
use serde::Deserialize;

use crate::client::payload;

/// Where timeline deliveries go.
pub const PATH: &str = "/api/deliver";

/// Digits of a send time in µs since the Unix epoch (until the year 2286).
const STAMP_DIGITS: usize = 16;

/// The send time the body is built with, replaced by [`Body::stamp`]: any
/// number of [`STAMP_DIGITS`] digits.
const PLACEHOLDER_US: u64 = 1_000_000_000_000_000;

/// The body of one delivery to the home timelines of users `1..=recipients`:
/// `{"timeline":"user","data":{"t":…,"seq":1,"pad":"…"},"recipients":[1,2,…]}`.
///
/// A million ids make about 7 MB. The body is built once, before anything is
/// measured; only the 16 digits of the send time in `data` change before it
/// is sent, so that the subscribers' workers measure the notice's latency from
/// the moment the request is written, as they do for any published message.
pub struct Body {
    bytes: Vec<u8>,
    /// Where the digits of the send time are in `bytes`.
    stamp: Range<usize>,
}

impl Body {
    /// The body for users `1..=recipients` (as JSON integers), with a `data`
    /// payload of `data_size` bytes (at least its fields).
    pub fn build(recipients: u64, data_size: usize) -> Body {
        let data = payload(PLACEHOLDER_US, 1, data_size);
        // About 7 bytes per id ("123456,") for a million.
        let mut bytes = Vec::with_capacity(64 + data.len() + recipients as usize * 7);
        bytes.extend_from_slice(br#"{"timeline":"user","data":"#);
        // The payload opens with `{"t":`, then the digits.
        let stamp_at = bytes.len() + r#"{"t":"#.len();
        bytes.extend_from_slice(data.as_bytes());
        bytes.extend_from_slice(br#","recipients":["#);
        for id in 1..=recipients {
            if id > 1 {
                bytes.push(b',');
            }
            // Writing into a Vec cannot fail.
            let _ = write!(bytes, "{id}");
        }
        bytes.extend_from_slice(b"]}");
        Body {
            bytes,
            stamp: stamp_at..stamp_at + STAMP_DIGITS,
        }
    }

    /// Writes `sent_us` (µs since the Unix epoch) as the notice's send time.
    pub fn stamp(&mut self, sent_us: u64) -> anyhow::Result<()> {
        let digits = sent_us.to_string();
        if digits.len() != STAMP_DIGITS {
            bail!("a send time of {sent_us} µs does not have {STAMP_DIGITS} digits");
        }
        self.bytes[self.stamp.clone()].copy_from_slice(digits.as_bytes());
        Ok(())
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Herald's answer to an accepted delivery.
#[derive(Clone, Copy, Debug, Default, PartialEq, Deserialize)]
pub struct Answer {
    /// Distinct recipients.
    pub recipients: u64,
    /// Shards touched.
    pub shards: u64,
    /// Engine messages published by this request (one per shard, less duplicates).
    pub messages: u64,
    /// Shard messages skipped because this idempotency key had delivered them.
    pub duplicates: u64,
}

/// Reads the answer to `POST /api/deliver`: `200` with its counts, or an
/// error that says what Herald answered.
pub fn parse_answer(status: u16, body: &[u8]) -> anyhow::Result<Answer> {
    let text = String::from_utf8_lossy(body);
    let text: String = text.chars().take(300).collect();
    match status {
        200 => serde_json::from_slice(body)
            .with_context(|| format!("unexpected answer to {PATH}: {text}")),
        404 => Err(missing()),
        _ => bail!("{PATH} answered {status}: {text}"),
    }
}

/// What a herald without `POST /api/deliver` answering 404 means.
pub fn missing() -> anyhow::Error {
    anyhow!(
        "{PATH} answered 404: this herald has no timeline fan-out (docs/timelines.md); \
         build one that has: cargo build --release -p api"
    )
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn the_body_is_the_documented_json() {
        let mut body = Body::build(5, 100);
        body.stamp(1_764_000_000_123_456).unwrap();
        let value: Value = serde_json::from_slice(body.bytes()).unwrap();
        assert_eq!(value["timeline"], "user");
        assert_eq!(value["recipients"], json!([1, 2, 3, 4, 5]));
        assert_eq!(value["data"]["t"], 1_764_000_000_123_456_u64);
        assert_eq!(value["data"]["seq"], 1);
        let data = serde_json::to_string(&value["data"]).unwrap();
        assert_eq!(data.len(), 100, "{data}");
    }

    #[test]
    fn stamping_again_replaces_the_send_time() {
        let mut body = Body::build(3, 100);
        let len = body.bytes().len();
        for sent in [1_000_000_000_000_001, 9_999_999_999_999_999] {
            body.stamp(sent).unwrap();
            let value: Value = serde_json::from_slice(body.bytes()).unwrap();
            assert_eq!(value["data"]["t"], sent);
            assert_eq!(body.bytes().len(), len);
        }
        assert!(body.stamp(999_999_999_999_999).is_err());
        assert!(body.stamp(10_000_000_000_000_000).is_err());
    }

    #[test]
    fn a_million_recipients_fit_the_default_body_limit() {
        let body = Body::build(1_000_000, 100);
        let bytes = body.bytes();
        // "1,…,9," + "10,…,99," + … + "1000000": 6,888,895 bytes of ids.
        let ids: usize = (1..=6)
            .map(|d| 9 * 10usize.pow(d - 1) * (d as usize + 1))
            .sum();
        let ids = ids + "1000000".len();
        assert_eq!(ids, 6_888_895);
        let head = r#"{"timeline":"user","data":"#.len() + 100 + r#","recipients":["#.len();
        assert_eq!(bytes.len(), head + ids + 2);
        assert!(bytes.len() < 16 << 20, "deliver.max_body_bytes");
        assert!(bytes.ends_with(b",999999,1000000]}"));
    }

    #[test]
    fn answers() {
        let ok = br#"{"recipients":1000000,"shards":1024,"messages":1024,"duplicates":0}"#;
        assert_eq!(
            parse_answer(200, ok).unwrap(),
            Answer {
                recipients: 1_000_000,
                shards: 1024,
                messages: 1024,
                duplicates: 0
            }
        );
        // Fields Herald may add later are ignored.
        let more = br#"{"recipients":2,"shards":2,"messages":0,"duplicates":2,"took_ms":1}"#;
        assert_eq!(parse_answer(200, more).unwrap().duplicates, 2);
        for (status, body, says) in [
            (200, &b"{}"[..], "unexpected answer"),
            (404, b"not found", "no timeline fan-out"),
            (
                429,
                br#"{"error":{"code":"rate_limited"}}"#,
                "answered 429: {\"error\"",
            ),
        ] {
            let error = parse_answer(status, body).unwrap_err();
            let text = format!("{error:#}");
            assert!(text.contains(says), "{status}: {text}");
        }
    }
}
