//! `GET /ws` on a fresh connection, answered off hyper.
//!
//! hyper would parse the head into a header map, build a response, write
//! the 101 on its own, hand the socket over through an upgrade future on a
//! task of its own, and only then would the session's first write send the
//! welcome. Here the head is read once, parsed with httparse, checked by the
//! same rules as hyper's path (`http::upgrade`: [`upgrade::check`],
//! [`upgrade::admit`]), and the 101 goes out in the same write as the
//! protocol's opening words (with channels in the URL, every `subscribed`
//! and what each missed, too): one task, one read and one write per
//! handshake.
//!
//! Invariants:
//! - Only a request line `GET /ws` or `GET /ws?…` comes here; every other
//!   request (another method, `/ws/echo`, `/ws` on a keep-alive connection
//!   after other requests) is hyper's, and is answered the same way.
//! - The head is bounded ([`MAX_HEAD`], [`MAX_HEADERS`]: 431 past them) and
//!   due by `listener.header_timeout_secs`, as hyper's are.
//! - Bytes the client sent behind its head (a first frame) are replayed to
//!   the session before anything is read from the socket.
//! - Every answer is counted in `herald_http_requests_total{route="ws"}`,
//!   as hyper's path counts it.

use std::net::SocketAddr;

use bytes::Bytes;
use hyper::{StatusCode, header::HeaderName};
use push::{Client, ErrorCode, NativeWs, Opening, Refusal};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wire::Wire;

use super::pending::{Dropped, Pending};
use crate::{
    App,
    http::upgrade::{self, Credentials, UpgradeHead},
};

/// The largest request head taken on this path.
const MAX_HEAD: usize = 16 * 1024;
/// The most header lines taken on this path: hyper's own limit.
const MAX_HEADERS: usize = 100;

/// Whether a peeked request line is one this path serves.
pub(crate) fn is_ws_request(head: &[u8]) -> bool {
    head.strip_prefix(b"GET /ws")
        .is_some_and(|rest| matches!(rest.first(), Some(b' ' | b'?')))
}

/// Reads the head of a `GET /ws` request and answers it: with a session,
/// spawned; with a close code after the 101 when admission refused the
/// client; or with an HTTP refusal. Returns once the head is answered.
pub(crate) async fn accept(
    app: &App,
    mut stream: Wire,
    peer: SocketAddr,
    deadline: tokio::time::Instant,
    pending: &Pending,
) {
    let read = match tokio::time::timeout_at(deadline, read_head(&mut stream)).await {
        Ok(Ok(read)) => read,
        Ok(Err(Some(refusal))) => {
            pending.admitted();
            return refuse(app, stream, &refusal, None).await;
        }
        // The peer hung up, or took too long: hyper, too, ends such a
        // connection without an answer.
        Ok(Err(None)) => return pending.dropped(Dropped::HungUp),
        Err(_) => return pending.dropped(Dropped::HeaderTimeout),
    };
    pending.admitted();
    let (buffer, head_len) = read;
    let (answer, admitted, opening) = match handshake(app, peer, &buffer[..head_len]) {
        Ok(upgrade) => upgrade,
        Err((refusal, header)) => return refuse(app, stream, &refusal, header).await,
    };
    count(app, StatusCode::SWITCHING_PROTOCOLS);
    let read_ahead = buffer[head_len..].to_vec();
    drop(buffer);
    let upgraded = push::ws::Upgraded {
        stream,
        read_ahead,
        peer,
        answer: Some(answer),
    };
    let context = app.sessions().clone();
    // The URL's channels are opened here, before the session exists, so
    // that their `subscribed` go out in the same write as the 101.
    // The session gets a task of its own: this one's state (the
    // handshake) is freed once it is answered.
    push::ws::start(context, upgraded, admitted, opening, NativeWs).await;
}

/// An HTTP refusal, with the header its answer carries besides the body.
type Refused = (Refusal, Option<(HeaderName, &'static str)>);

/// What a checked handshake leads to: the 101 answer, admission's result
/// and the channels the URL named (either refusal is a close code after
/// the upgrade).
type Upgrade = (Bytes, Result<Client, Refusal>, Result<Opening, Refusal>);

/// Parses and checks a complete head, and admits its client. `Ok`: the
/// upgrade; `Err`: answer over HTTP, upgrade nothing.
fn handshake(app: &App, peer: SocketAddr, head: &[u8]) -> Result<Upgrade, Refused> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Err(httparse::Error::TooManyHeaders) => {
            return Err((
                Refusal::new(ErrorCode::HeadersTooLarge, "too many headers"),
                None,
            ));
        }
        Ok(httparse::Status::Partial) | Err(_) => {
            return Err((
                Refusal::new(ErrorCode::BadRequest, "malformed request head"),
                None,
            ));
        }
    }
    let first = |name: &str| {
        request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let has_token = |name: &str, token: &str| {
        request
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .filter_map(|h| visible(h.value))
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    let checked = UpgradeHead {
        is_get: request.method == Some("GET"),
        connection_upgrade: has_token("connection", "upgrade"),
        upgrade_websocket: has_token("upgrade", "websocket"),
        version: first("sec-websocket-version"),
        key: first("sec-websocket-key"),
    };
    let accept_key = upgrade::check(&checked).map_err(|bad| bad.refusal())?;
    let target = request.path.unwrap_or_default();
    let query = target.split_once('?').map_or("", |(_, query)| query);
    let authorization = first("authorization").and_then(visible);
    let (key, token) = upgrade::native_credentials(authorization, query);
    let opening = Opening::from_ws_query(query);
    let credentials = Credentials {
        key: key.as_deref(),
        token: token.as_deref(),
    };
    let origin = first("origin").and_then(visible);
    let proxied = push::is_proxied(|name| first(name).is_some());
    let admitted = upgrade::admit(app, peer, &credentials, origin, proxied)
        .map_err(|refusal| (refusal, None))?;
    let answer = Bytes::from(format!(
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Accept: {accept_key}\r\n\r\n"
    ));
    Ok((answer, admitted, opening))
}

/// Reads until the end of the request head. Answers the bytes read and
/// the head's length; bytes past the head are the client's first frames.
/// `Err(Some)`: a refusal to answer; `Err(None)`: the peer is gone.
async fn read_head(stream: &mut Wire) -> Result<(Vec<u8>, usize), Option<Refusal>> {
    let mut buffer = Vec::with_capacity(1024);
    loop {
        let scan_from = buffer.len().saturating_sub(3);
        if buffer.len() == buffer.capacity() {
            buffer.reserve(1024);
        }
        let read = stream.read_buf(&mut buffer).await.map_err(|_| None)?;
        if read == 0 {
            return Err(None);
        }
        if let Some(end) = buffer[scan_from..]
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
        {
            return Ok((buffer, scan_from + end + 4));
        }
        if buffer.len() >= MAX_HEAD {
            return Err(Some(Refusal::new(
                ErrorCode::HeadersTooLarge,
                "request head over 16 KiB",
            )));
        }
    }
}

/// A header value as text, when it is visible ASCII (what hyper's
/// `HeaderValue::to_str` takes).
fn visible(value: &[u8]) -> Option<&str> {
    value
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
        .then(|| std::str::from_utf8(value).ok())
        .flatten()
}

/// Answers an HTTP refusal with the JSON body of `docs/protocol.md` (and
/// `header`, when the refusal has one), then ends the connection.
async fn refuse(
    app: &App,
    mut stream: Wire,
    refusal: &Refusal,
    header: Option<(HeaderName, &'static str)>,
) {
    let status = StatusCode::from_u16(refusal.code.http_status())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    count(app, status);
    let body = refusal.http_body();
    let header = header.map_or(String::new(), |(name, value)| {
        format!("{}: {value}\r\n", name.as_str())
    });
    let answer = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{header}\
         Connection: close\r\n\r\n{body}",
        status.as_str(),
        status.canonical_reason().unwrap_or(""),
        body.len(),
    );
    let write = async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await
    };
    // A client that does not take its answer within the time limit loses it.
    let _ = tokio::time::timeout(app.sessions().config().close_timeout, write).await;
}

fn count(app: &App, status: StatusCode) {
    app.metrics()
        .requests
        .with_label_values(&["ws", status.as_str()])
        .inc();
}

#[cfg(test)]
mod tests {
    #[test]
    fn takes_only_get_ws() {
        for (line, expected) in [
            (&b"GET /ws HTTP/1.1\r\n"[..], true),
            (b"GET /ws?key=k&token", true),
            (b"GET /ws/echo HTTP/1", false),
            (b"GET /wsx HTTP/1.1\r\n", false),
            (b"POST /ws HTTP/1.1\r\n", false),
            (b"GET /sse HTTP/1.1\r\n", false),
            (b"GET /ws", false),
        ] {
            assert_eq!(super::is_ws_request(line), expected, "{line:?}");
        }
    }

    #[test]
    fn header_values_are_visible_ascii() {
        assert_eq!(
            super::visible(b"https://a.example"),
            Some("https://a.example")
        );
        assert_eq!(super::visible(b"a\tb"), Some("a\tb"));
        assert_eq!(super::visible(b"a\x01b"), None);
        assert_eq!(super::visible("é".as_bytes()), None);
    }
}
