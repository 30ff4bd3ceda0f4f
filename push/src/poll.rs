//! HTTP long-poll (`GET`/`POST /poll`, docs/protocol.md): the native
//! protocol for clients behind proxies that break streaming.
//!
//! A poll is an SSE stream's request with a different ending: it is
//! checked by the same rules (`opening.rs`, `sse::request`), admitted and
//! opened by the same code (`sse::open_stream`), driven by the same
//! connection core, and answered once, whole, when its protocol
//! ([`NativePoll`]) says it has answered or its timeout passes.
//!
//! Between polls the server keeps nothing: a client is its cursor, and each
//! poll resumes from it through history, so that no message is lost or sent
//! twice from poll to poll while history keeps them. While a poll is held
//! it costs what a held hyper request costs (its connection's buffers, this
//! future and its `Connection`); docs/benchmarks.md ("HTTP long-poll") has
//! the figures.

use std::{future::poll_fn, net::SocketAddr, pin::pin, task::Poll, time::Duration};

use bytes::Bytes;

use crate::{
    CloseReason, Context, ErrorCode, NativePoll, Refusal,
    connection::Connection,
    opening::{Opening, Query},
    sse::{self, SseRequest},
};

/// The largest `POST /poll` body, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A checked poll.
#[derive(Debug)]
pub struct PollRequest {
    /// Its channels, cursor and credentials, as an SSE stream's.
    stream: SseRequest,
    /// The `timeout` the client asked for, if it did.
    timeout: Option<Duration>,
}

/// The request headers a poll looks at.
#[derive(Debug, Default, Clone, Copy)]
pub struct PollHeaders<'a> {
    pub authorization: Option<&'a str>,
    pub origin: Option<&'a str>,
    /// Whether the request came through a proxy (`crate::is_proxied`).
    pub proxied: bool,
}

/// How a poll is answered.
#[derive(Debug)]
pub enum PollAnswer {
    /// `200` with this JSON body: `{"events":[…],"cursor":"…"}`.
    Answered(Bytes),
    /// The refusal's status and JSON error body.
    Refused(Refusal),
}

fn refusal(code: ErrorCode, message: impl Into<std::borrow::Cow<'static, str>>) -> Refusal {
    Refusal::new(code, message)
}

/// Checks a poll from its method, target (path and query), its form body
/// (a `POST`'s, already read and its type checked) and headers. The
/// parameters of a `POST`'s URL are read before its body's.
pub fn check(
    method: &str,
    target: &str,
    body: Option<&[u8]>,
    headers: PollHeaders<'_>,
) -> Result<PollRequest, Refusal> {
    if method != "GET" && method != "POST" {
        return Err(refusal(
            ErrorCode::MethodNotAllowed,
            "polls are GET or POST requests",
        ));
    }
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let body = std::str::from_utf8(body.unwrap_or_default())
        .map_err(|_| refusal(ErrorCode::BadRequest, "the form body is not UTF-8"))?;
    let params = match (query.is_empty(), body.is_empty()) {
        (_, true) => query.to_string(),
        (true, false) => body.to_string(),
        (false, false) => format!("{query}&{body}"),
    };
    let query = Query::parse(&params, "cursor", sse::MAX_REQUEST_CHANNELS)?;
    if query.channels.is_empty() {
        return Err(refusal(
            ErrorCode::MissingChannel,
            "give at least one channel=NAME",
        ));
    }
    // A member would join and leave with every poll, and each join's
    // `subscribed` (with the member list) would answer the poll at once.
    if let Some(channel) = query
        .channels
        .iter()
        .find(|c| c.as_str().starts_with(fanout::presence::PREFIX))
    {
        return Err(refusal(
            ErrorCode::Forbidden,
            format!("presence channel {channel} needs a connection that stays: use /ws or /sse"),
        ));
    }
    let timeout = timeout(&params)?;
    let cursor = query.cursor.as_deref().filter(|v| !v.is_empty());
    let opening = Opening::new(query.channels, cursor)?;
    let token = query
        .token
        .or_else(|| crate::admission::bearer(headers.authorization).map(str::to_string));
    Ok(PollRequest {
        stream: SseRequest {
            opening,
            key: query.key,
            token,
            origin: headers.origin.map(str::to_string),
            proxied: headers.proxied,
            vouched: false,
        },
        timeout,
    })
}

/// The `timeout` parameter: whole seconds (the last one given counts).
fn timeout(params: &str) -> Result<Option<Duration>, Refusal> {
    let mut timeout = None;
    for (name, value) in form_urlencoded::parse(params.as_bytes()) {
        if name == "timeout" {
            let secs = value.parse::<u64>().map_err(|_| {
                refusal(
                    ErrorCode::BadRequest,
                    "timeout must be a whole number of seconds",
                )
            })?;
            timeout = Some(Duration::from_secs(secs));
        }
    }
    Ok(timeout)
}

/// Answers a checked (or refused) poll: admits its client, opens its
/// channels from its cursor, and holds it until it is answered or
/// `max_timeout` (or the shorter timeout it asked for) passes. Every
/// refusal is counted.
pub async fn answer(
    context: &Context,
    request: Result<PollRequest, Refusal>,
    peer: SocketAddr,
    max_timeout: Duration,
) -> PollAnswer {
    let (stream, timeout) = match request {
        Ok(request) => {
            let timeout = request.timeout.map_or(max_timeout, |t| t.min(max_timeout));
            (Ok(request.stream), timeout)
        }
        Err(refusal) => (Err(refusal), max_timeout),
    };
    let resumed = stream.as_ref().is_ok_and(|s| s.opening.cursor.is_some());
    match sse::open_stream(context, stream, peer, NativePoll::new(resumed)).await {
        Ok(connection) => PollAnswer::Answered(hold(connection, timeout).await),
        Err(refusal) => PollAnswer::Refused(refusal),
    }
}

/// What one turn of a held poll brought.
enum Step {
    Event(Bytes),
    Done,
    Expired,
}

/// Takes the poll's events until its connection closes, closing it as
/// answered when `timeout` passes first, and builds the body.
async fn hold(mut connection: Connection<NativePoll>, timeout: Duration) -> Bytes {
    let mut events: Vec<Bytes> = Vec::new();
    let mut expiry = pin!(tokio::time::sleep(timeout));
    let mut expired = false;
    loop {
        let step = poll_fn(|cx| {
            if let Poll::Ready(chunk) = connection.poll_chunk(cx) {
                return Poll::Ready(chunk.map_or(Step::Done, Step::Event));
            }
            if !expired && expiry.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Step::Expired);
            }
            Poll::Pending
        })
        .await;
        match step {
            Step::Event(event) => events.push(event),
            Step::Done => break,
            Step::Expired => {
                expired = true;
                connection.begin_close(CloseReason::Answered, "the poll's timeout passed", None);
            }
        }
    }
    // Every close encodes the protocol's last words, which take the cursor.
    let cursor = connection.protocol().cursor().unwrap_or_default();
    body(&events, cursor)
}

/// `{"events":[…],"cursor":"…"}`. The cursor's alphabet (hex digits, `:`
/// and `,`) needs no escaping.
fn body(events: &[Bytes], cursor: &str) -> Bytes {
    let size: usize = events.iter().map(|e| e.len() + 1).sum::<usize>() + cursor.len() + 32;
    let mut body = Vec::with_capacity(size);
    body.extend_from_slice(b"{\"events\":[");
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(event);
    }
    body.extend_from_slice(b"],\"cursor\":\"");
    body.extend_from_slice(cursor.as_bytes());
    body.extend_from_slice(b"\"}");
    Bytes::from(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(method: &str, target: &str, body: &str) -> Option<ErrorCode> {
        let body = (!body.is_empty()).then_some(body.as_bytes());
        check(method, target, body, PollHeaders::default())
            .err()
            .map(|r| r.code)
    }

    #[test]
    fn requests() {
        let ok = |method: &str, target: &str, body: &str| {
            let body = (!body.is_empty()).then_some(body.as_bytes());
            check(method, target, body, PollHeaders::default()).map(|r| {
                (
                    r.stream.opening.channels.len(),
                    r.stream.opening.cursor.is_some(),
                    r.timeout.map(|t| t.as_secs()),
                )
            })
        };
        assert_eq!(
            ok("GET", "/poll?channel=a", "").ok(),
            Some((1, false, None))
        );
        assert_eq!(
            ok(
                "GET",
                "/poll?channel=a&channel=b&cursor=1f:3,2a:0&timeout=5",
                ""
            )
            .ok(),
            Some((2, true, Some(5)))
        );
        assert_eq!(
            ok("POST", "/poll", "channel=a&channel=b&cursor=").ok(),
            Some((2, false, None))
        );
        assert_eq!(
            ok("POST", "/poll?channel=a", "channel=b&timeout=0").ok(),
            Some((2, false, Some(0)))
        );
        assert_eq!(code("GET", "/poll", ""), Some(ErrorCode::MissingChannel));
        assert_eq!(
            code("GET", "/poll?channel=presence-room", ""),
            Some(ErrorCode::Forbidden)
        );
        assert_eq!(
            code("PUT", "/poll?channel=a", ""),
            Some(ErrorCode::MethodNotAllowed)
        );
        assert_eq!(
            code("GET", "/poll?channel=a&cursor=nope", ""),
            Some(ErrorCode::BadLastEventId)
        );
        assert_eq!(
            code("GET", "/poll?channel=a&timeout=soon", ""),
            Some(ErrorCode::BadRequest)
        );
        assert_eq!(
            code("POST", "/poll?channel=a", "channel=a"),
            Some(ErrorCode::DuplicateChannel)
        );
        assert_eq!(
            check(
                "POST",
                "/poll",
                Some(b"channel=\xff"),
                PollHeaders::default()
            )
            .err()
            .map(|r| r.code),
            Some(ErrorCode::BadRequest)
        );
    }

    #[test]
    fn bodies() {
        let events = [Bytes::from_static(b"{\"a\":1}"), Bytes::from_static(b"{}")];
        assert_eq!(
            body(&events, "1f:3"),
            &b"{\"events\":[{\"a\":1},{}],\"cursor\":\"1f:3\"}"[..]
        );
        assert_eq!(body(&[], ""), &b"{\"events\":[],\"cursor\":\"\"}"[..]);
    }
}
