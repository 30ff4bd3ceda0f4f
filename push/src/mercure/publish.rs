//! A Mercure publish request's form (`POST /.well-known/mercure`,
//! `application/x-www-form-urlencoded`), parsed and checked by the rules
//! both Mercure generations share: `topic` repeats (the first is the
//! canonical one), `private` counts by its presence alone, and an `id`
//! that starts with `#` or is `earliest`, a `type` of `mercure`, and a
//! form without a topic are refused with 400.

use std::borrow::Cow;

use super::{EARLIEST, MAX_TOPIC_BYTES, update::check_line};
use crate::{ErrorCode, Refusal};

/// The most topics one update may carry.
pub const MAX_TOPICS: usize = 100;

/// A checked publish form.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PublishForm {
    /// The canonical topic first, then its alternates.
    pub topics: Vec<String>,
    pub data: String,
    pub private: bool,
    /// The publisher's id for the update; the hub makes one without it.
    pub id: Option<String>,
    /// The SSE `event:` type.
    pub kind: Option<String>,
    /// The SSE `retry:` delay, in milliseconds.
    pub retry: Option<u64>,
}

fn bad(message: impl Into<Cow<'static, str>>) -> Refusal {
    Refusal::new(ErrorCode::BadRequest, message)
}

impl PublishForm {
    pub fn parse(body: &[u8]) -> Result<Self, Refusal> {
        let mut form = PublishForm::default();
        let mut data = None;
        for (name, value) in form_urlencoded::parse(body) {
            match &*name {
                "topic" => {
                    if !check_line(&value) || value.len() > MAX_TOPIC_BYTES {
                        return Err(bad(format!(
                            "a topic is 1 to {MAX_TOPIC_BYTES} bytes on one line"
                        )));
                    }
                    if form.topics.len() == MAX_TOPICS {
                        return Err(bad(format!("an update has at most {MAX_TOPICS} topics")));
                    }
                    form.topics.push(value.into_owned());
                }
                // The first value counts, as in the Mercure hub.
                "data" => {
                    data.get_or_insert(value);
                }
                "private" => form.private = true,
                "id" => {
                    if value.starts_with('#') || value == EARLIEST {
                        return Err(bad(
                            "an id may not start with # nor be \"earliest\": those are the hub's",
                        ));
                    }
                    if !check_line(&value) {
                        return Err(bad("an id is one line, not empty"));
                    }
                    form.id = Some(value.into_owned());
                }
                "type" => {
                    if value == "mercure" {
                        return Err(bad("the type \"mercure\" is reserved"));
                    }
                    if !check_line(&value) {
                        return Err(bad("a type is one line, not empty"));
                    }
                    form.kind = Some(value.into_owned());
                }
                "retry" => {
                    let retry = value
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                        .then(|| value.parse::<u64>().ok())
                        .flatten()
                        .ok_or_else(|| bad("retry is a number of milliseconds"))?;
                    form.retry = Some(retry);
                }
                _ => {}
            }
        }
        if form.topics.is_empty() {
            return Err(bad("missing topic: an update has at least one topic"));
        }
        form.data = data.map(Cow::into_owned).unwrap_or_default();
        Ok(form)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(body: &str) -> Option<ErrorCode> {
        PublishForm::parse(body.as_bytes()).err().map(|r| r.code)
    }

    #[test]
    fn forms_read_as_the_hub_reads_them() {
        let form = PublishForm::parse(
            b"topic=https%3A%2F%2Fexample.com%2Fa&topic=b&data=x%0Ay&data=z&private=on\
              &id=urn%3Auuid%3A1&type=note&retry=100",
        )
        .unwrap();
        assert_eq!(
            form,
            PublishForm {
                topics: vec!["https://example.com/a".into(), "b".into()],
                data: "x\ny".into(),
                private: true,
                id: Some("urn:uuid:1".into()),
                kind: Some("note".into()),
                retry: Some(100),
            }
        );
        let bare = PublishForm::parse(b"topic=a").unwrap();
        assert_eq!(
            (bare.data.as_str(), bare.private, bare.id),
            ("", false, None)
        );
    }

    #[test]
    fn refused_forms_are_400() {
        for body in [
            "",
            "data=x",
            "topic=",
            "topic=a%0Aid:%20forged",
            "topic=a&id=%23frag",
            "topic=a&id=earliest",
            "topic=a&id=",
            "topic=a&id=a%0Ab",
            "topic=a&type=mercure",
            "topic=a&type=a%0Db",
            "topic=a&retry=1x",
            "topic=a&retry=-1",
            "topic=a&retry=99999999999999999999999",
        ] {
            assert_eq!(code(body), Some(ErrorCode::BadRequest), "{body:?}");
        }
        let many: Vec<String> = (0..=MAX_TOPICS).map(|i| format!("topic={i}")).collect();
        assert_eq!(code(&many.join("&")), Some(ErrorCode::BadRequest));
    }
}
