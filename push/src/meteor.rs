//! Meteor's subscriber URLs (docs/compat.md):
//! `GET /push/<hostid>/<mode>/<channel>[.r<id>|.b<n>|.h][/<channel>…]`.
//!
//! A request is checked here into the same stream request as
//! `GET /sse?channel=…` (`sse::SseRequest`), for the site Meteor's port
//! serves, and answered by `sse::answer` in the [`MeteorStream`] protocol:
//! admission, limits, history and the connection core are SSE's.

use std::borrow::Cow;

use fanout::ChannelName;

use crate::{
    ErrorCode, MeteorStream, Refusal, opening::Opening, sse::SseRequest, statusnet::StatusNetNames,
    subscriptions::Backlog,
};

/// The most channels one `/push` URL may name: Meteor pages join a few.
pub const MAX_CHANNELS: usize = 64;

/// How a Meteor client reads its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `xhrinteractive` (and `iframe`, the same stream): one response for
    /// as long as the client stays.
    Stream,
    /// `longpoll`: each response ends after a message or a ping.
    LongPoll,
}

/// A checked `/push` request.
#[derive(Debug)]
pub struct MeteorRequest {
    pub stream: SseRequest,
    pub protocol: MeteorStream,
    pub mode: Mode,
}

/// What a `/push` request carries besides its path.
#[derive(Debug, Default, Clone, Copy)]
pub struct PushHeaders<'a> {
    pub origin: Option<&'a str>,
    pub proxied: bool,
}

fn refusal(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Refusal {
    Refusal::new(code, message)
}

/// Checks a `/push` request for the site whose `key` Meteor's port serves,
/// naming channels by `names`. A `token` query parameter (Herald's
/// `meteor.js` sends `Meteor.token`) admits the client as its user, for
/// channels that need one.
pub fn check(
    method: &str,
    target: &str,
    key: &str,
    names: &StatusNetNames,
    headers: PushHeaders<'_>,
) -> Result<MeteorRequest, Refusal> {
    if method != "GET" {
        return Err(refusal(
            ErrorCode::MethodNotAllowed,
            "Meteor streams are opened with GET",
        ));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let rest = path.strip_prefix("/push/").unwrap_or_default();
    let mut parts = rest.split('/');
    let (Some(hostid), Some(mode)) = (parts.next(), parts.next()) else {
        return Err(usage());
    };
    if hostid.is_empty()
        || hostid.len() > 64
        || !hostid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(refusal(
            ErrorCode::BadRequest,
            "the host id is 1 to 64 letters, digits, `_` or `-`",
        ));
    }
    let mode = match mode {
        "xhrinteractive" | "iframe" => Mode::Stream,
        "longpoll" => Mode::LongPoll,
        other => {
            return Err(refusal(
                ErrorCode::BadRequest,
                format!("mode {other:?} is not served: use xhrinteractive, iframe or longpoll"),
            ));
        }
    };
    let mut meteor_names = Vec::new();
    let mut channels: Vec<ChannelName> = Vec::new();
    let mut backlogs = Vec::new();
    for part in parts.filter(|part| !part.is_empty()) {
        let (name, backlog) = split_backlog(part)?;
        let channel = names
            .meteor(name)
            .map_err(|e| refusal(ErrorCode::InvalidChannel, format!("{name}: {e}")))?;
        if channels.contains(&channel) {
            return Err(refusal(
                ErrorCode::DuplicateChannel,
                format!("channel {name} is listed twice"),
            ));
        }
        if channels.len() == MAX_CHANNELS {
            return Err(refusal(
                ErrorCode::TooManyChannels,
                format!("a Meteor stream may name at most {MAX_CHANNELS} channels"),
            ));
        }
        meteor_names.push(name);
        channels.push(channel);
        backlogs.push(backlog);
    }
    if channels.is_empty() {
        return Err(refusal(
            ErrorCode::MissingChannel,
            "name at least one channel: /push/<hostid>/<mode>/<channel>",
        ));
    }
    let token = form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "token")
        .map(|(_, value)| value.into_owned());
    Ok(MeteorRequest {
        protocol: MeteorStream::new(&meteor_names, mode == Mode::LongPoll),
        stream: SseRequest {
            opening: Opening::with_backlogs(channels, backlogs),
            key: Some(key.to_string()),
            token,
            origin: headers.origin.map(str::to_string),
            proxied: headers.proxied,
            vouched: false,
        },
        mode,
    })
}

fn usage() -> Refusal {
    refusal(
        ErrorCode::NotFound,
        "Meteor streams are /push/<hostid>/<mode>/<channel>[/<channel>…]",
    )
}

/// A channel part of the URL and what it replays: `.r<id>` the kept
/// messages from id `<id>` on, `.b<n>` the last `<n>`, `.h` all of them,
/// nothing without a suffix.
fn split_backlog(part: &str) -> Result<(&str, Backlog), Refusal> {
    let Some((name, suffix)) = part.rsplit_once('.') else {
        return Ok((part, Backlog::None));
    };
    let number = |digits: &str| {
        digits.parse::<u64>().map_err(|_| {
            refusal(
                ErrorCode::BadRequest,
                format!("{part}: .r and .b take a number"),
            )
        })
    };
    let backlog = match suffix.as_bytes().first() {
        Some(b'h') if suffix == "h" => Backlog::All,
        Some(b'r') if suffix.len() > 1 && suffix[1..].bytes().all(|b| b.is_ascii_digit()) => {
            Backlog::From(number(&suffix[1..])?)
        }
        Some(b'b') if suffix.len() > 1 && suffix[1..].bytes().all(|b| b.is_ascii_digit()) => {
            Backlog::Last(number(&suffix[1..])?)
        }
        // A dot that is part of the name (`tag-v1.2`).
        _ => return Ok((part, Backlog::None)),
    };
    Ok((name, backlog))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(target: &str) -> Result<(Vec<String>, Vec<Backlog>, Mode), ErrorCode> {
        let names = StatusNetNames {
            channelbase: "mysite".into(),
            ..Default::default()
        };
        check("GET", target, "k", &names, PushHeaders::default())
            .map(|request| {
                let opening = request.stream.opening;
                let channels = opening.channels.iter().map(|c| c.to_string()).collect();
                (channels, opening.backlogs.unwrap_or_default(), request.mode)
            })
            .map_err(|refusal| refusal.code)
    }

    #[test]
    fn urls_name_channels_and_backlogs() {
        assert_eq!(
            parsed("/push/123/xhrinteractive/mysite-public.r17/all-evan.b5/tag-v1.2/x.h"),
            Ok((
                vec![
                    "public".into(),
                    "all-evan".into(),
                    "tag-v1.2".into(),
                    "x".into()
                ],
                vec![
                    Backlog::From(17),
                    Backlog::Last(5),
                    Backlog::None,
                    Backlog::All
                ],
                Mode::Stream
            ))
        );
        assert_eq!(
            parsed("/push/a1/longpoll/public?token=t").map(|p| p.2),
            Ok(Mode::LongPoll)
        );
    }

    #[test]
    fn bad_urls_get_their_codes() {
        let code = |target: &str| parsed(target).err();
        assert_eq!(code("/push/"), Some(ErrorCode::NotFound));
        assert_eq!(code("/push/1"), Some(ErrorCode::NotFound));
        assert_eq!(
            code("/push/1/xhrinteractive"),
            Some(ErrorCode::MissingChannel)
        );
        assert_eq!(
            code("/push/1/xhrinteractive/"),
            Some(ErrorCode::MissingChannel)
        );
        assert_eq!(code("/push/1/smartpoll/a"), Some(ErrorCode::BadRequest));
        assert_eq!(code("/push/a%20b/longpoll/a"), Some(ErrorCode::BadRequest));
        assert_eq!(
            code("/push/1/longpoll/a%20b"),
            Some(ErrorCode::InvalidChannel)
        );
        assert_eq!(
            code("/push/1/longpoll/a/a.h"),
            Some(ErrorCode::DuplicateChannel)
        );
        assert_eq!(
            code("/push/1/longpoll/a.r99999999999999999999999"),
            Some(ErrorCode::BadRequest)
        );
        let many: Vec<String> = (0..=MAX_CHANNELS).map(|i| format!("c{i}")).collect();
        assert_eq!(
            code(&format!("/push/1/longpoll/{}", many.join("/"))),
            Some(ErrorCode::TooManyChannels)
        );
        let post = check(
            "POST",
            "/push/1/longpoll/a",
            "k",
            &StatusNetNames::default(),
            PushHeaders::default(),
        );
        assert_eq!(
            post.err().map(|r| r.code),
            Some(ErrorCode::MethodNotAllowed)
        );
    }
}
