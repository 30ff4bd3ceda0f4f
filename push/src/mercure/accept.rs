//! `GET /.well-known/mercure` on a fresh connection, served off hyper as
//! native `/sse` streams are (`sse::accept`): the head is read and parsed
//! with httparse, checked and answered by the same functions as hyper's
//! path (`api/src/http/mercure.rs`), and the socket is owned by a small
//! [`SseSession`] speaking [`MercureSse`] for the rest of its life. An idle
//! Mercure subscriber then costs what a native SSE one does, plus its
//! selectors, instead of hyper's buffers besides.
//!
//! Publishing (`POST`) and preflights (`OPTIONS`) have bodies or no
//! stream, and stay on hyper.

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use wire::Wire;

use super::{MercureHeaders, answer, check, listed_origin};
use crate::{
    Context, ErrorCode, MercureSse, Refusal,
    sse::{self, Answer, request::read_head},
};

use std::net::SocketAddr;

/// The most headers a subscribe request may have.
const MAX_HEADERS: usize = 48;

/// The request line's start that this path serves.
const PREFIX: &[u8] = b"GET /.well-known/mercure";

/// Whether a request line (as peeked from the socket, at least
/// [`PREFIX`] and one byte long to say yes) asks for a Mercure stream.
pub fn is_mercure_request(line: &[u8]) -> bool {
    line.strip_prefix(PREFIX)
        .is_some_and(|rest| matches!(rest.first(), Some(b' ' | b'?')))
}

/// Reads and answers a subscribe request on a fresh connection. Returns
/// the session to spawn, or `None` when the request was refused (the
/// answer has then been written and the socket closed). The head must be
/// complete by `head_deadline`.
pub async fn accept(
    context: Context,
    mut socket: Wire,
    peer: SocketAddr,
    head_deadline: tokio::time::Instant,
) {
    let read = tokio::time::timeout_at(head_deadline, read_head(&mut socket)).await;
    let head = match read {
        Ok(Ok(head)) => Ok(head),
        Ok(Err(refusal)) => Err(refusal),
        Err(_) => Err(Refusal::new(
            ErrorCode::BadRequest,
            "request head not received in time",
        )),
    };
    let (answered, credentials_origin) = match head {
        Ok(head) => parsed_answer(&context, &head, peer).await,
        Err(refusal) => {
            let answered = answer(&context, Err(refusal), peer).await;
            (answered, None)
        }
    };
    let (answer, last_id) = answered;
    let body = match answer {
        Answer::Stream(mut connection) => {
            let head = stream_head(credentials_origin.as_deref(), last_id.as_deref());
            connection.out().push_front(Bytes::from(head));
            return sse::spawn_stream(socket, connection);
        }
        Answer::RetryLater(body) => {
            let head = stream_head(None, None);
            [head.as_bytes(), &body].concat()
        }
        Answer::Refused(refusal) => sse::http_error(&refusal, auth_header(&refusal)).into_bytes(),
    };
    let write = async {
        socket.write_all(&body).await?;
        socket.shutdown().await
    };
    // A client that does not take its answer within the time limit loses it.
    let _ = tokio::time::timeout(context.config().close_timeout, write).await;
}

/// What [`answer`] says, and the origin that may send credentials.
type Answered = ((Answer<MercureSse>, Option<String>), Option<String>);

/// Parses a complete head and answers it.
async fn parsed_answer(context: &Context, head: &[u8], peer: SocketAddr) -> Answered {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let parsed = match request.parse(head) {
        Ok(httparse::Status::Complete(_)) => Ok(()),
        Ok(httparse::Status::Partial) => Err(Refusal::new(
            ErrorCode::BadRequest,
            "incomplete request head",
        )),
        Err(httparse::Error::TooManyHeaders) => {
            Err(Refusal::new(ErrorCode::HeadersTooLarge, "too many headers"))
        }
        Err(error) => Err(Refusal::new(ErrorCode::BadRequest, error.to_string())),
    };
    if let Err(refusal) = parsed {
        return (answer(context, Err(refusal), peer).await, None);
    }
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
    };
    let target = request.path.unwrap_or_default();
    let headers = MercureHeaders {
        last_event_id: header("last-event-id"),
        authorization: header("authorization"),
        cookie: header("cookie"),
        origin: header("origin"),
        proxied: crate::is_proxied(|name| {
            request
                .headers
                .iter()
                .any(|h| h.name.eq_ignore_ascii_case(name))
        }),
    };
    let credentials_origin = listed_origin(context, target, headers.origin).map(str::to_string);
    let checked = check(context, request.method.unwrap_or_default(), target, headers);
    (answer(context, checked, peer).await, credentials_origin)
}

/// The response head of a stream: SSE's headers, CORS (credentials only
/// for a listed origin), where the stream starts, and no length.
fn stream_head(credentials_origin: Option<&str>, last_id: Option<&str>) -> String {
    let mut head = String::from("HTTP/1.1 200 OK\r\n");
    for (name, value) in sse::RESPONSE_HEADERS {
        if !name.starts_with("Access-Control") {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    match credentials_origin {
        Some(origin) => head.push_str(&format!(
            "Access-Control-Allow-Origin: {origin}\r\nAccess-Control-Allow-Credentials: true\r\n\
             Vary: Origin\r\n"
        )),
        None => head.push_str("Access-Control-Allow-Origin: *\r\n"),
    }
    // An id is one line (checked at publish), but only visible ASCII and
    // spaces make a header value that every client reads back.
    if let Some(id) = last_id.filter(|id| id.bytes().all(|b| (b' '..=b'~').contains(&b))) {
        head.push_str(&format!(
            "Last-Event-ID: {id}\r\nMercure-Last-Event-ID: {id}\r\n"
        ));
    }
    head.push_str("Connection: close\r\n\r\n");
    head
}

/// The header a 401, 403 or 405 carries, as on hyper's path.
fn auth_header(refusal: &Refusal) -> &'static str {
    match refusal.code.http_status() {
        401 => "WWW-Authenticate: Bearer error=\"invalid_token\"\r\n",
        403 => "WWW-Authenticate: Bearer error=\"insufficient_scope\"\r\n",
        405 => "Allow: GET, POST\r\n",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_for_this_path() {
        for (line, expected) in [
            (&b"GET /.well-known/mercure?topic=a HTTP/1.1"[..], true),
            (b"GET /.well-known/mercure HTTP/1.1", true),
            (b"GET /.well-known/mercure/subscriptions HTTP/1.1", false),
            (b"GET /.well-known/mercurex", false),
            (b"POST /.well-known/mercure HTTP/1.1", false),
            (b"OPTIONS /.well-known/mercure HTTP/1.1", false),
            (b"GET /.well-known/mercure", false),
            (b"GET /sse?channel=a", false),
        ] {
            assert_eq!(is_mercure_request(line), expected, "{line:?}");
        }
    }

    #[test]
    fn heads_say_where_the_stream_starts() {
        let head = stream_head(Some("https://app.example"), Some("urn:uuid:1"));
        assert!(
            head.contains("Content-Type: text/event-stream\r\n"),
            "{head}"
        );
        assert!(head.contains("Access-Control-Allow-Origin: https://app.example\r\n"));
        assert!(head.contains("Access-Control-Allow-Credentials: true\r\n"));
        assert!(
            head.contains("Last-Event-ID: urn:uuid:1\r\nMercure-Last-Event-ID: urn:uuid:1\r\n")
        );
        let head = stream_head(None, Some("bad\u{1}id"));
        assert!(
            head.contains("Access-Control-Allow-Origin: *\r\n"),
            "{head}"
        );
        assert!(!head.contains("Last-Event-ID"), "{head}");
        assert!(head.ends_with("Connection: close\r\n\r\n"));
    }
}
