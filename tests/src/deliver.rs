//! `POST /api/deliver` (docs/timelines.md) for the tests: a request builder, the answer's counts,
//! and the shard function a web application uses to pick a user's shard.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use serde_json::Value;

use crate::herald::Herald;
use crate::http::{Request, Response};

/// `timeline.shards` when the configuration does not set it.
pub const DEFAULT_SHARDS: u32 = 1024;

/// The id of the implicit site of a configuration without `[[sites]]` (the dev site, or the one
/// site of `publish.secret`): the `site_id` of the shard function there.
pub const DEFAULT_SITE: &str = "default";

/// One `POST /api/deliver` to build and send.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// `"user"` or `"replies"` (or anything else, for the refusals).
    timeline: String,
    /// The recipient ids as JSON values (strings or integers), in request order.
    recipients: Vec<Value>,
    /// The `data` JSON text, sent byte for byte.
    data: String,
    /// The `Idempotency-Key` header, if any.
    idempotency_key: Option<String>,
    /// The site secret sent as `Authorization: Bearer`, if any.
    bearer: Option<String>,
}

/// The counts of a `200` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryAnswer {
    /// Distinct recipient ids.
    pub recipients: u64,
    /// Shards touched.
    pub shards: u64,
    /// Engine messages published by this request.
    pub messages: u64,
    /// Shard messages skipped because the idempotency key had already delivered them.
    pub duplicates: u64,
}

impl Delivery {
    /// A delivery of `data` (JSON text) on the `timeline` timeline, with no recipients yet.
    pub fn new(timeline: &str, data: &str) -> Delivery {
        Delivery {
            timeline: timeline.to_owned(),
            recipients: Vec::new(),
            data: data.to_owned(),
            idempotency_key: None,
            bearer: None,
        }
    }

    /// A delivery of `data` to the home timelines (`user:<id>`) of numeric ids, sent as integers.
    pub fn user(ids: impl IntoIterator<Item = u64>, data: &str) -> Delivery {
        Delivery::new("user", data).ids(ids)
    }

    /// Adds numeric recipient ids, written as JSON integers.
    pub fn ids(mut self, ids: impl IntoIterator<Item = u64>) -> Delivery {
        self.recipients.extend(ids.into_iter().map(Value::from));
        self
    }

    /// Adds recipient ids written as JSON strings.
    pub fn names<S: AsRef<str>>(mut self, ids: impl IntoIterator<Item = S>) -> Delivery {
        self.recipients
            .extend(ids.into_iter().map(|id| Value::from(id.as_ref())));
        self
    }

    /// Adds recipients as arbitrary JSON values (for the refusals).
    pub fn values(mut self, values: impl IntoIterator<Item = Value>) -> Delivery {
        self.recipients.extend(values);
        self
    }

    /// Sets the `Idempotency-Key` header.
    pub fn key(mut self, key: &str) -> Delivery {
        self.idempotency_key = Some(key.to_owned());
        self
    }

    /// Sends the site's secret as `Authorization: Bearer`.
    pub fn bearer(mut self, secret: &str) -> Delivery {
        self.bearer = Some(secret.to_owned());
        self
    }

    /// The request body: `{"timeline":…,"recipients":[…],"data":…}` with `data` as given.
    pub fn body(&self) -> String {
        let recipients: Vec<String> = self.recipients.iter().map(Value::to_string).collect();
        format!(
            r#"{{"timeline":{},"recipients":[{}],"data":{}}}"#,
            Value::from(self.timeline.as_str()),
            recipients.join(","),
            self.data
        )
    }

    /// The request to `addr`, with the body of [`Delivery::body`].
    pub fn request(&self, addr: SocketAddr) -> Request {
        let mut request = Request::post(addr, "/api/deliver").json_body(&self.body());
        if let Some(key) = &self.idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        if let Some(secret) = &self.bearer {
            request = request.bearer(secret);
        }
        request
    }

    /// Sends the request to `addr` and returns the whole answer, whatever it is.
    pub async fn send(&self, addr: SocketAddr) -> Response {
        self.request(addr).send().await
    }
}

impl DeliveryAnswer {
    /// Checks a `200` answer and reads its four counts.
    pub fn from_response(response: &Response) -> DeliveryAnswer {
        assert_eq!(response.status, 200, "deliver answer: {}", response.text());
        let json = response.json();
        let count = |name: &str| {
            json[name]
                .as_u64()
                .unwrap_or_else(|| panic!("deliver answer has no integer {name:?}: {json}"))
        };
        DeliveryAnswer {
            recipients: count("recipients"),
            shards: count("shards"),
            messages: count("messages"),
            duplicates: count("duplicates"),
        }
    }
}

// === impl Herald: deliveries ===

impl Herald {
    /// Sends `delivery` to this node; asserts a `200` and returns its counts.
    pub async fn deliver(&self, delivery: &Delivery) -> DeliveryAnswer {
        DeliveryAnswer::from_response(&delivery.send(self.addr).await)
    }
}

/// The shard of `user_id` on `site_id`: `crc32(site_id ":" user_id) mod shards`, with the CRC-32
/// of zlib and PHP's `crc32()` (docs/timelines.md).
pub fn shard_of(site_id: &str, user_id: &str, shards: u32) -> u32 {
    crc32(format!("{site_id}:{user_id}").as_bytes()) % shards
}

/// How many distinct shards the users `ids` of `site_id` fall in.
pub fn shards_touched<S: AsRef<str>>(
    site_id: &str,
    ids: impl IntoIterator<Item = S>,
    shards: u32,
) -> u64 {
    let touched: BTreeSet<u32> = ids
        .into_iter()
        .map(|id| shard_of(site_id, id.as_ref(), shards))
        .collect();
    touched.len() as u64
}

/// CRC-32 (ISO-HDLC: reflected polynomial 0xEDB88320, initial and final XOR 0xFFFFFFFF), bit by
/// bit: the tests hash a few thousand short ids, so a table is not worth its lines.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_check_value() {
        // The standard check value of CRC-32/ISO-HDLC, and PHP's crc32("The quick brown fox
        // jumped over the lazy dog.") from its manual.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(
            crc32(b"The quick brown fox jumped over the lazy dog."),
            2_191_738_434
        );
    }

    #[test]
    fn body_keeps_data_and_id_types() {
        let delivery = Delivery::new("replies", r#"{ "a" : 1 }"#)
            .ids([17])
            .names(["alice"]);
        assert_eq!(
            delivery.body(),
            r#"{"timeline":"replies","recipients":[17,"alice"],"data":{ "a" : 1 }}"#
        );
    }

    #[test]
    fn shards_touched_counts_distinct_shards() {
        assert_eq!(shards_touched(DEFAULT_SITE, ["1", "1", "1"], 1024), 1);
        assert_eq!(shards_touched(DEFAULT_SITE, ["1", "2", "3"], 1), 1);
    }
}
