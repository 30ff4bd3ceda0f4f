//! The body of `POST /api/deliver`, read by a serde visitor straight into
//! the per-shard recipient buffers, in one pass and without a string per
//! recipient. Its own file so that the fuzz target in `fuzz/` reaches it.

use std::fmt;

use bytes::Bytes;
use fanout::{Recipients, TimelineKind, timeline::is_user_id};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use push::{ErrorCode, Refusal};

/// A parsed delivery.
pub(crate) struct Delivery {
    pub(crate) kind: TimelineKind,
    pub(crate) recipients: Recipients,
    pub(crate) data: Bytes,
}

/// The start of the serde error message for a bad recipient id, so that
/// it can be told apart from other errors (it answers `invalid_channel`).
const BAD_RECIPIENT: &str = "bad recipient id";

/// Reads a delivery's body; `data` is at most `max_message_bytes`.
pub(crate) fn parse(
    body: &Bytes,
    recipients: Recipients,
    max_message_bytes: usize,
) -> Result<Delivery, Refusal> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let mut visitor = BodyVisitor {
        recipients,
        kind: None,
        data: None,
        seen_recipients: false,
    };
    let result = de::Deserializer::deserialize_map(&mut deserializer, &mut visitor)
        .and_then(|()| deserializer.end());
    if let Err(error) = result {
        let message = error.to_string();
        let code = if message.starts_with(BAD_RECIPIENT) {
            ErrorCode::InvalidChannel
        } else if error.classify() == serde_json::error::Category::Data {
            ErrorCode::BadRequest
        } else {
            ErrorCode::BadJson
        };
        return Err(Refusal::new(code, message));
    }
    let BodyVisitor {
        recipients,
        kind,
        data,
        seen_recipients,
    } = visitor;
    let Some(kind) = kind else {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            "give \"timeline\": \"user\" or \"replies\"",
        ));
    };
    if !seen_recipients || recipients.added() == 0 {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            "give a non-empty \"recipients\" list of user ids",
        ));
    }
    let Some((at, len)) = data else {
        return Err(Refusal::new(ErrorCode::BadRequest, "missing \"data\""));
    };
    if len > max_message_bytes {
        return Err(Refusal::new(
            ErrorCode::PayloadTooLarge,
            format!("\"data\" may be at most {max_message_bytes} bytes"),
        ));
    }
    // The raw value borrows from the body: its address is inside it.
    let start = at - body.as_ptr() as usize;
    Ok(Delivery {
        kind,
        recipients,
        data: body.slice(start..start + len),
    })
}

/// Reads the body's object, feeding recipients to the grouper as they come.
struct BodyVisitor {
    recipients: Recipients,
    kind: Option<TimelineKind>,
    /// Where `data` is: its address (inside the body) and length.
    data: Option<(usize, usize)>,
    seen_recipients: bool,
}

impl<'de> Visitor<'de> for &mut BodyVisitor {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object with \"timeline\", \"recipients\" and \"data\"")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match &*key {
                "timeline" => {
                    let text: std::borrow::Cow<'de, str> = map.next_value()?;
                    self.kind = Some(TimelineKind::parse(&text).ok_or_else(|| {
                        de::Error::custom(format!(
                            "\"timeline\" must be \"user\" or \"replies\", not {text:?}"
                        ))
                    })?);
                }
                "recipients" => {
                    map.next_value_seed(RecipientList(&mut self.recipients))?;
                    self.seen_recipients = true;
                }
                "data" => {
                    let raw: &'de RawValue = map.next_value()?;
                    self.data = Some((raw.get().as_ptr() as usize, raw.get().len()));
                }
                other => {
                    return Err(de::Error::custom(format!("unknown field {other:?}")));
                }
            }
        }
        Ok(())
    }
}

/// The `recipients` array, each element added as it is read.
struct RecipientList<'a>(&'a mut Recipients);

impl<'de> DeserializeSeed<'de> for RecipientList<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for RecipientList<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of user ids")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut number = String::with_capacity(20);
        while seq
            .next_element_seed(Recipient {
                recipients: self.0,
                number: &mut number,
            })?
            .is_some()
        {}
        Ok(())
    }
}

/// One recipient id, a string or an integer.
struct Recipient<'a> {
    recipients: &'a mut Recipients,
    /// Scratch space for an integer's decimal text.
    number: &'a mut String,
}

impl<'de> DeserializeSeed<'de> for Recipient<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Recipient<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a user id (a string, or a non-negative integer)")
    }

    fn visit_str<E: de::Error>(self, id: &str) -> Result<(), E> {
        if !is_user_id(id) {
            return Err(E::custom(format!(
                "{BAD_RECIPIENT} {id:?}: 1-100 of A-Z a-z 0-9 _ - : . @ ="
            )));
        }
        self.recipients.add(id);
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, id: u64) -> Result<(), E> {
        use std::fmt::Write as _;
        self.number.clear();
        let _ = write!(self.number, "{id}");
        self.recipients.add(self.number);
        Ok(())
    }

    /// A negative integer is not a user id at all (ids are strings and
    /// non-negative integers): `bad_request`, like any other wrong type,
    /// not `invalid_channel`, which is for ids that break the naming rules.
    fn visit_i64<E: de::Error>(self, id: i64) -> Result<(), E> {
        Err(E::invalid_type(de::Unexpected::Signed(id), &self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(body: &str) -> Result<(usize, usize, String), (u16, String)> {
        let body = Bytes::copy_from_slice(body.as_bytes());
        parse(&body, Recipients::new("s", 16), 100)
            .map(|d| {
                let added = d.recipients.added();
                let groups = d.recipients.into_groups();
                let distinct = groups.iter().map(|g| g.count).sum();
                (added, distinct, String::from_utf8(d.data.to_vec()).unwrap())
            })
            .map_err(|r| (r.code.http_status(), r.code.as_str().to_string()))
    }

    #[test]
    fn parses_recipients_as_they_come() {
        let ok = run(r#"{"recipients":[1,"2",1,"alice"],"data":{"a" : [1]},"timeline":"user"}"#);
        assert_eq!(ok, Ok((4, 3, r#"{"a" : [1]}"#.to_string())));
        let cases = [
            ("not json", (400, "bad_json")),
            (
                r#"{"timeline":"user","recipients":[1]}"#,
                (400, "bad_request"),
            ),
            (
                r#"{"timeline":"home","recipients":[1],"data":1}"#,
                (400, "bad_request"),
            ),
            (
                r#"{"timeline":"user","recipients":[],"data":1}"#,
                (400, "bad_request"),
            ),
            (r#"{"timeline":"user","data":1}"#, (400, "bad_request")),
            (r#"{"recipients":[1],"data":1}"#, (400, "bad_request")),
            (
                r#"{"timeline":"user","recipients":["a b"],"data":1}"#,
                (400, "invalid_channel"),
            ),
            (
                r#"{"timeline":"user","recipients":["a/b"],"data":1}"#,
                (400, "invalid_channel"),
            ),
            (
                r#"{"timeline":"user","recipients":[-1],"data":1}"#,
                (400, "bad_request"),
            ),
            (
                r#"{"timeline":"user","recipients":[1.5],"data":1}"#,
                (400, "bad_request"),
            ),
            (
                r#"{"timeline":"user","recipients":[1],"data":1,"x":2}"#,
                (400, "bad_request"),
            ),
            (
                r#"{"timeline":"user","recipients":[1],"data":1} trailing"#,
                (400, "bad_json"),
            ),
        ];
        for (body, expected) in cases {
            let got = run(body).err();
            assert_eq!(
                got.as_ref().map(|(s, c)| (*s, c.as_str())),
                Some(expected),
                "{body}"
            );
        }
        let big = format!(
            r#"{{"timeline":"user","recipients":[1],"data":"{}"}}"#,
            "x".repeat(200)
        );
        assert_eq!(run(&big).err().map(|e| e.0), Some(413));
    }
}
