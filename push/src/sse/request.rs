//! Reading and checking the request head of an SSE stream.

use std::borrow::Cow;

use bytes::BufMut;
use tokio::io::AsyncReadExt;
use wire::Wire;

use crate::{
    ErrorCode, Refusal,
    opening::{MAX_URL_CHANNELS, Opening, Query},
};

/// The largest request head accepted.
const MAX_HEAD: usize = 8 * 1024;
const MAX_HEADERS: usize = 48;

/// The most channels one stream's request may name, whatever its site's
/// limit (which admission checks afterwards): it bounds parsing work.
pub const MAX_REQUEST_CHANNELS: usize = MAX_URL_CHANNELS;

/// A checked SSE request.
#[derive(Debug)]
pub struct SseRequest {
    /// The channels, and the position per channel to resume from, from
    /// `Last-Event-ID` or `last_event_id`.
    pub(crate) opening: Opening,
    /// The `key` parameter.
    pub(crate) key: Option<String>,
    /// The `token` parameter, or the bearer of `Authorization`.
    pub(crate) token: Option<String>,
    /// The `Origin` header.
    pub(crate) origin: Option<String>,
    /// Whether the request came through a proxy (`crate::is_proxied`).
    pub(crate) proxied: bool,
    /// Whether its protocol verified a credential of its own
    /// ([`crate::ConnectRequest::vouched`]).
    pub(crate) vouched: bool,
}

/// The request headers an SSE stream looks at.
#[derive(Debug, Default, Clone, Copy)]
pub struct SseHeaders<'a> {
    pub last_event_id: Option<&'a str>,
    pub authorization: Option<&'a str>,
    pub origin: Option<&'a str>,
    /// Whether the request came through a proxy (`crate::is_proxied`).
    pub proxied: bool,
}

fn refusal(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Refusal {
    Refusal::new(code, message)
}

/// Whether `head` starts with a request for `/sse` (any method: a wrong one
/// is answered by the SSE code with 405).
pub(crate) fn is_sse_route(head: &[u8]) -> bool {
    let Some(space) = head.iter().position(|&b| b == b' ') else {
        return false;
    };
    let target = &head[space + 1..];
    target.starts_with(b"/sse") && matches!(target.get(4), Some(b' ' | b'?'))
}

/// Reads the request head from `stream` and checks it.
pub(crate) async fn read(
    stream: &mut Wire,
    deadline: tokio::time::Instant,
) -> Result<SseRequest, Refusal> {
    let head = tokio::time::timeout_at(deadline, read_head(stream))
        .await
        .map_err(|_| refusal(ErrorCode::BadRequest, "request head not received in time"))??;
    parse(&head, MAX_REQUEST_CHANNELS)
}

pub(crate) async fn read_head(stream: &mut Wire) -> Result<Vec<u8>, Refusal> {
    let mut head = Vec::with_capacity(1024);
    loop {
        if head.len() >= MAX_HEAD {
            return Err(refusal(
                ErrorCode::HeadersTooLarge,
                "request head over 8 KiB",
            ));
        }
        // Read straight into the head's spare room: no buffer on the
        // future's stack to copy from (the future is moved into its task
        // whole, so every byte of it is copied once per connection).
        if head.len() == head.capacity() {
            head.reserve(1024);
        }
        let room = (head.capacity() - head.len()).min(MAX_HEAD - head.len());
        let scan_from = head.len().saturating_sub(3);
        let read = stream
            .read_buf(&mut (&mut head).limit(room))
            .await
            .map_err(|e| refusal(ErrorCode::BadRequest, e.to_string()))?;
        if read == 0 {
            return Err(refusal(
                ErrorCode::BadRequest,
                "connection closed mid-request",
            ));
        }
        if let Some(end) = head[scan_from..].windows(4).position(|w| w == b"\r\n\r\n") {
            head.truncate(scan_from + end + 4);
            return Ok(head);
        }
    }
}

/// Checks a complete request head.
pub(crate) fn parse(head: &[u8], max_channels: usize) -> Result<SseRequest, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err(refusal(ErrorCode::BadRequest, "incomplete request head"));
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(refusal(ErrorCode::HeadersTooLarge, "too many headers"));
        }
        Err(error) => return Err(refusal(ErrorCode::BadRequest, error.to_string())),
    }
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
    };
    let headers = SseHeaders {
        last_event_id: header("last-event-id"),
        authorization: header("authorization"),
        origin: header("origin"),
        proxied: crate::is_proxied(|name| {
            request
                .headers
                .iter()
                .any(|h| h.name.eq_ignore_ascii_case(name))
        }),
    };
    check(
        request.method.unwrap_or_default(),
        request.path.unwrap_or_default(),
        headers,
        max_channels,
    )
}

/// Checks an SSE request from its method, target (path and query) and
/// headers, however the head was parsed.
pub fn check(
    method: &str,
    target: &str,
    headers: SseHeaders<'_>,
    max_channels: usize,
) -> Result<SseRequest, Refusal> {
    if method != "GET" {
        return Err(refusal(
            ErrorCode::MethodNotAllowed,
            "SSE streams are opened with GET",
        ));
    }
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let params = Query::parse(query, "last_event_id", max_channels)?;
    if params.channels.is_empty() {
        return Err(refusal(
            ErrorCode::MissingChannel,
            "give at least one channel=NAME",
        ));
    }
    // The header wins: EventSource sends it on every reconnect, while the
    // query parameter stays what the page first asked for.
    let header_cursor = headers
        .last_event_id
        .map(str::trim)
        .filter(|v| !v.is_empty());
    let query_cursor = params.cursor.as_deref().filter(|v| !v.is_empty());
    let opening = Opening::new(params.channels, header_cursor.or(query_cursor))?;
    let token = params
        .token
        .or_else(|| crate::admission::bearer(headers.authorization).map(str::to_string));
    Ok(SseRequest {
        opening,
        key: params.key,
        token,
        origin: headers.origin.map(str::to_string),
        proxied: headers.proxied,
        vouched: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(target: &str, extra: &str) -> Vec<u8> {
        format!("GET {target} HTTP/1.1\r\nHost: x\r\n{extra}\r\n").into_bytes()
    }

    #[test]
    fn routes() {
        assert!(is_sse_route(b"GET /sse?channel=a HTTP/1.1\r\n"));
        assert!(is_sse_route(b"GET /sse HTTP/1.1\r\n"));
        assert!(is_sse_route(b"POST /sse HTTP/1.1\r\n"));
        assert!(!is_sse_route(b"GET /ssex HTTP/1.1\r\n"));
        assert!(!is_sse_route(b"GET / HTTP/1.1\r\n"));
        assert!(!is_sse_route(b"GET /ws HTTP/1.1\r\n"));
    }

    #[test]
    fn requests() {
        let ok = |target: &str, extra: &str| {
            parse(&head(target, extra), 3)
                .map(|r| (r.opening.channels.len(), r.opening.cursor.map(|c| c.len())))
        };
        let code = |target: &str, extra: &str| parse(&head(target, extra), 3).err().map(|r| r.code);
        assert_eq!(ok("/sse?channel=a", "").ok(), Some((1, None)));
        assert_eq!(
            ok("/sse?channel=a&channel=user%3A1", "").ok(),
            Some((2, None))
        );
        assert_eq!(
            ok("/sse?channel=a", "Last-Event-ID: 1f:3\r\n").ok(),
            Some((1, Some(1)))
        );
        assert_eq!(
            ok("/sse?channel=a&last_event_id=1f%3A3", "").ok(),
            Some((1, Some(1)))
        );
        assert_eq!(
            ok("/sse?channel=a", "Last-Event-ID: \r\n").ok(),
            Some((1, None))
        );
        assert_eq!(code("/sse", ""), Some(ErrorCode::MissingChannel));
        assert_eq!(
            code("/sse?channel=bad%20name", ""),
            Some(ErrorCode::InvalidChannel)
        );
        assert_eq!(
            code("/sse?channel=a&channel=a", ""),
            Some(ErrorCode::DuplicateChannel)
        );
        assert_eq!(
            code("/sse?channel=a&channel=b&channel=c&channel=d", ""),
            Some(ErrorCode::TooManyChannels)
        );
        assert_eq!(
            code("/sse?channel=a", "Last-Event-ID: nope\r\n"),
            Some(ErrorCode::BadLastEventId)
        );
        assert_eq!(
            code("/sse?channel=a&channel=b", "Last-Event-ID: 1f:3\r\n"),
            Some(ErrorCode::BadLastEventId)
        );
        let post = b"POST /sse?channel=a HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(
            parse(post, 3).err().map(|r| r.code),
            Some(ErrorCode::MethodNotAllowed)
        );
        assert_eq!(
            parse(b"GET /sse?channel=a HTTP/1.1\r\nBad Header\r\n\r\n", 3)
                .err()
                .map(|r| r.code),
            Some(ErrorCode::BadRequest)
        );
    }
}
