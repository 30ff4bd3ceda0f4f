//! WebSocket upgrades, answered by hyper, then handed to `push` with the
//! protocol the route speaks. `GET /ws` is the native protocol; a route
//! for another protocol checks the [`handshake`] the same way and calls
//! [`upgrade`] with its own protocol and credentials.

use std::net::SocketAddr;

use hyper::{
    HeaderMap, Method, Request, Response, StatusCode, body::Incoming, header, header::HeaderValue,
};
use hyper_util::rt::TokioIo;
use push::{Client, ConnectRequest, ErrorCode, NativeWs, Opening, Protocol, Refusal};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use wire::Wire;

use super::{Body, reply};
use crate::App;

/// The `Sec-WebSocket-Accept` value of a checked upgrade request.
pub(crate) struct AcceptKey(HeaderValue);

/// `GET /ws`: the native protocol; the site and token come from the `key`
/// and `token` parameters (or a bearer token), and the channels to open
/// with from `channel` and `since` ([`Opening::from_ws_query`]).
pub(crate) fn native(app: &App, peer: SocketAddr, request: Request<Incoming>) -> Response<Body> {
    let accept = match handshake(&request) {
        Ok(accept) => accept,
        Err(answer) => return answer,
    };
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let query = request.uri().query().unwrap_or("");
    let (key, token) = native_credentials(authorization, query);
    let opening = Opening::from_ws_query(query);
    let credentials = Credentials {
        key: key.as_deref(),
        token: token.as_deref(),
    };
    upgrade(app, peer, request, accept, credentials, opening, NativeWs)
}

/// The `key` and `token` of a native upgrade: the query's parameters, or
/// the bearer of `Authorization` when the query has no token.
pub(crate) fn native_credentials(
    authorization: Option<&str>,
    query: &str,
) -> (Option<String>, Option<String>) {
    let mut key = None;
    let mut token = push::bearer(authorization).map(str::to_string);
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*name {
            "key" => key = Some(value.into_owned()),
            "token" => token = Some(value.into_owned()),
            _ => {}
        }
    }
    (key, token)
}

/// What the handshake looks at in an upgrade request, however its head
/// was parsed (by hyper, or by the listener's own path for `/ws`).
pub(crate) struct UpgradeHead<'a> {
    pub is_get: bool,
    /// `Connection` has the token `upgrade`.
    pub connection_upgrade: bool,
    /// `Upgrade` has the token `websocket`.
    pub upgrade_websocket: bool,
    /// The first `Sec-WebSocket-Version`.
    pub version: Option<&'a [u8]>,
    /// The first `Sec-WebSocket-Key`.
    pub key: Option<&'a [u8]>,
}

/// Why an upgrade request is not one Herald takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BadUpgrade {
    /// Not a GET: 405 with `Allow: GET`.
    Method,
    /// No `Connection: upgrade` or `Upgrade: websocket`: 426.
    NotWebSocket,
    /// A WebSocket version other than 13: 426.
    Version,
    /// No `Sec-WebSocket-Key`: 400.
    MissingKey,
}

impl BadUpgrade {
    /// The refusal, and the header its answer carries besides the body.
    pub(crate) fn refusal(self) -> (Refusal, Option<(header::HeaderName, &'static str)>) {
        match self {
            BadUpgrade::Method => (
                Refusal::new(ErrorCode::MethodNotAllowed, "this route takes GET"),
                Some((header::ALLOW, "GET")),
            ),
            BadUpgrade::NotWebSocket => (
                Refusal::new(
                    ErrorCode::UpgradeRequired,
                    "this route speaks WebSocket only",
                ),
                Some((header::UPGRADE, "websocket")),
            ),
            BadUpgrade::Version => (
                Refusal::new(
                    ErrorCode::UpgradeRequired,
                    "only WebSocket version 13 is supported",
                ),
                Some((header::SEC_WEBSOCKET_VERSION, "13")),
            ),
            BadUpgrade::MissingKey => (
                Refusal::new(ErrorCode::BadRequest, "missing Sec-WebSocket-Key"),
                None,
            ),
        }
    }
}

/// Checks that an upgrade is one Herald takes (RFC 6455 version 13, GET),
/// and answers its `Sec-WebSocket-Accept` value.
pub(crate) fn check(head: &UpgradeHead<'_>) -> Result<String, BadUpgrade> {
    if !head.is_get {
        return Err(BadUpgrade::Method);
    }
    if !head.connection_upgrade || !head.upgrade_websocket {
        return Err(BadUpgrade::NotWebSocket);
    }
    if head.version != Some(b"13") {
        return Err(BadUpgrade::Version);
    }
    let key = head.key.ok_or(BadUpgrade::MissingKey)?;
    Ok(derive_accept_key(key))
}

/// Checks that `request` is a WebSocket upgrade Herald takes ([`check`]);
/// answers the accept key, or the refusal to send.
// The refusal is a whole answer, moved once on a path that ends the
// request; boxing it would only add an allocation.
#[allow(clippy::result_large_err)]
pub(crate) fn handshake(request: &Request<Incoming>) -> Result<AcceptKey, Response<Body>> {
    let headers = request.headers();
    let head = UpgradeHead {
        is_get: request.method() == Method::GET,
        connection_upgrade: has_token(headers, header::CONNECTION, "upgrade"),
        upgrade_websocket: has_token(headers, header::UPGRADE, "websocket"),
        version: headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .map(HeaderValue::as_bytes),
        key: headers
            .get(header::SEC_WEBSOCKET_KEY)
            .map(HeaderValue::as_bytes),
    };
    match check(&head) {
        // The accept key is base64, always a valid header value.
        Ok(accept) => HeaderValue::from_str(&accept)
            .map(AcceptKey)
            .map_err(|_| reply::refuse(ErrorCode::BadRequest, "bad Sec-WebSocket-Key")),
        Err(bad) => {
            let (refusal, header) = bad.refusal();
            let mut answer = reply::refusal(&refusal);
            if let Some((name, value)) = header {
                answer
                    .headers_mut()
                    .insert(name, HeaderValue::from_static(value));
            }
            Err(answer)
        }
    }
}

/// What names the site and the user of a connection.
pub(crate) struct Credentials<'a> {
    pub key: Option<&'a str>,
    pub token: Option<&'a str>,
}

/// Admits the client, answers 101 and hands the upgraded socket to a
/// session speaking `protocol`, subscribed to the channels of `opening`
/// (a route whose URL names none passes `Ok(Opening::default())`; a
/// refusal of them is a close code). Admission comes before the upgrade, so
/// that its refusal can be a close code (what a browser script sees),
/// except for a foreign origin: a page on another site never gets an
/// upgraded socket at all.
pub(crate) fn upgrade<P: Protocol>(
    app: &App,
    peer: SocketAddr,
    mut request: Request<Incoming>,
    accept: AcceptKey,
    credentials: Credentials<'_>,
    opening: Result<Opening, Refusal>,
    protocol: P,
) -> Response<Body> {
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    let proxied = push::is_proxied(|name| request.headers().contains_key(name));
    let admitted = match admit(app, peer, &credentials, origin, proxied) {
        Ok(admitted) => admitted,
        Err(refusal) => return reply::refusal(&refusal),
    };
    let on_upgrade = hyper::upgrade::on(&mut request);
    let context = app.sessions().clone();
    tokio::spawn(async move {
        let Some((stream, read_ahead)) = upgraded(on_upgrade, peer).await else {
            return;
        };
        let upgraded = push::ws::Upgraded {
            stream,
            read_ahead,
            peer,
            answer: None,
        };
        // The session gets a task of its own: this one's state (the
        // upgrade) is freed once it is answered.
        push::ws::start(context, upgraded, admitted, opening, protocol).await;
    });
    let mut response = reply::empty(StatusCode::SWITCHING_PROTOCOLS);
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept.0);
    response
}

/// Admission for an upgrade. `Err`: answer this refusal over HTTP and
/// upgrade nothing, because neither a page from a foreign origin nor anyone
/// behind a proxy in front of the dev site gets an upgraded socket at all.
/// `Ok(Err)`: upgrade, then close with the refusal's code.
// As in `handshake`, the refusal ends the request; boxing it would only
// add an allocation.
#[allow(clippy::result_large_err)]
pub(crate) fn admit(
    app: &App,
    peer: SocketAddr,
    credentials: &Credentials<'_>,
    origin: Option<&str>,
    proxied: bool,
) -> Result<Result<Client, Refusal>, Refusal> {
    let admitted = push::admit(
        app.sessions(),
        &ConnectRequest {
            key: credentials.key,
            token: credentials.token,
            origin,
            ip: Some(peer.ip().to_canonical()),
            proxied,
            vouched: false,
        },
    );
    match admitted {
        Err(refusal)
            if matches!(
                refusal.code,
                ErrorCode::OriginNotAllowed | ErrorCode::ProxiedDevSite
            ) =>
        {
            Err(refusal)
        }
        admitted => Ok(admitted),
    }
}

/// The socket under a finished upgrade, and the bytes hyper read past the
/// request. hyper serves the listener's `Wire` (plain or TLS), so the
/// downcast finds it; it also frees hyper's buffers.
async fn upgraded(
    on_upgrade: hyper::upgrade::OnUpgrade,
    peer: SocketAddr,
) -> Option<(Wire, Vec<u8>)> {
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(error) => {
            tracing::debug!(client.addr = %peer, %error, "upgrade failed");
            return None;
        }
    };
    let Ok(parts) = upgraded.downcast::<TokioIo<Wire>>() else {
        tracing::warn!(client.addr = %peer, "upgraded connection is not the listener's socket");
        return None;
    };
    Some((parts.io.into_inner(), parts.read_buf.to_vec()))
}

/// Whether a comma-separated header contains `token`, ignoring case.
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value
            .to_str()
            .map(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}
