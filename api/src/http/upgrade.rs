//! WebSocket upgrades, answered by hyper, then handed to `push` with the
//! protocol the route speaks. `GET /ws` is the native protocol; a route
//! for another protocol checks the [`handshake`] the same way and calls
//! [`upgrade`] with its own protocol and credentials.

use std::net::SocketAddr;

use hyper::{
    HeaderMap, Method, Request, Response, StatusCode, body::Incoming, header, header::HeaderValue,
};
use hyper_util::rt::TokioIo;
use push::{Client, ConnectRequest, ErrorCode, NativeWs, Protocol, Refusal};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::{Body, reply};
use crate::App;

/// The `Sec-WebSocket-Accept` value of a checked upgrade request.
pub(crate) struct AcceptKey(HeaderValue);

/// `GET /ws`: the native protocol; the site and token come from the `key`
/// and `token` parameters (or a bearer token).
pub(crate) fn native(app: &App, peer: SocketAddr, request: Request<Incoming>) -> Response<Body> {
    let accept = match handshake(&request) {
        Ok(accept) => accept,
        Err(answer) => return answer,
    };
    let mut key = None;
    let mut token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| push::bearer(Some(v)))
        .map(str::to_string);
    let query = request.uri().query().unwrap_or("");
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*name {
            "key" => key = Some(value.into_owned()),
            "token" => token = Some(value.into_owned()),
            _ => {}
        }
    }
    let credentials = Credentials {
        key: key.as_deref(),
        token: token.as_deref(),
    };
    upgrade(app, peer, request, accept, credentials, NativeWs)
}

/// Checks that `request` is a WebSocket upgrade Herald takes (RFC 6455
/// version 13, GET); answers the accept key, or the refusal to send.
// The refusal is a whole answer, moved once on a path that ends the
// request; boxing it would only add an allocation.
#[allow(clippy::result_large_err)]
pub(crate) fn handshake(request: &Request<Incoming>) -> Result<AcceptKey, Response<Body>> {
    if request.method() != Method::GET {
        return Err(reply::method_not_allowed("GET"));
    }
    let headers = request.headers();
    if !has_token(headers, header::CONNECTION, "upgrade")
        || !has_token(headers, header::UPGRADE, "websocket")
    {
        let mut answer = reply::refuse(
            ErrorCode::UpgradeRequired,
            "this route speaks WebSocket only",
        );
        answer
            .headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        return Err(answer);
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        let mut answer = reply::refuse(
            ErrorCode::UpgradeRequired,
            "only WebSocket version 13 is supported",
        );
        answer.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return Err(answer);
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return Err(reply::refuse(
            ErrorCode::BadRequest,
            "missing Sec-WebSocket-Key",
        ));
    };
    HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
        .map(AcceptKey)
        .map_err(|_| reply::refuse(ErrorCode::BadRequest, "bad Sec-WebSocket-Key"))
}

/// What names the site and the user of a connection.
pub(crate) struct Credentials<'a> {
    pub key: Option<&'a str>,
    pub token: Option<&'a str>,
}

/// Admits the client, answers 101 and hands the upgraded socket to a
/// session speaking `protocol`. Admission comes before the upgrade, so
/// that its refusal can be a close code (what a browser script sees),
/// except for a foreign origin: a page on another site never gets an
/// upgraded socket at all.
pub(crate) fn upgrade<P: Protocol>(
    app: &App,
    peer: SocketAddr,
    mut request: Request<Incoming>,
    accept: AcceptKey,
    credentials: Credentials<'_>,
    protocol: P,
) -> Response<Body> {
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    let admitted = push::admit(
        app.sessions(),
        &ConnectRequest {
            key: credentials.key,
            token: credentials.token,
            origin,
            ip: Some(peer.ip().to_canonical()),
            proxied: push::is_proxied(|name| request.headers().contains_key(name)),
        },
    );
    // Neither a page from a foreign origin nor anyone behind a proxy in
    // front of the dev site gets an upgraded socket at all.
    if let Err(refusal) = &admitted
        && matches!(
            refusal.code,
            ErrorCode::OriginNotAllowed | ErrorCode::ProxiedDevSite
        )
    {
        return reply::refusal(refusal);
    }
    let on_upgrade = hyper::upgrade::on(&mut request);
    let context = app.sessions().clone();
    tokio::spawn(async move {
        let Some((stream, read_ahead)) = upgraded(on_upgrade, peer).await else {
            return;
        };
        run(context, stream, read_ahead, peer, admitted, protocol).await;
    });
    let mut response = reply::empty(StatusCode::SWITCHING_PROTOCOLS);
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept.0);
    response
}

/// The socket under a finished upgrade, and the bytes hyper read past the
/// request. hyper serves plain TCP here, so the downcast finds the socket;
/// it also frees hyper's buffers.
async fn upgraded(
    on_upgrade: hyper::upgrade::OnUpgrade,
    peer: SocketAddr,
) -> Option<(TcpStream, Vec<u8>)> {
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(error) => {
            tracing::debug!(client.addr = %peer, %error, "upgrade failed");
            return None;
        }
    };
    let Ok(parts) = upgraded.downcast::<TokioIo<TcpStream>>() else {
        tracing::warn!(client.addr = %peer, "upgraded connection is not a TCP stream");
        return None;
    };
    Some((parts.io.into_inner(), parts.read_buf.to_vec()))
}

/// Runs the session of an admitted client, or refuses it with a close code.
async fn run<P: Protocol>(
    context: push::Context,
    stream: TcpStream,
    read_ahead: Vec<u8>,
    peer: SocketAddr,
    admitted: Result<Client, Refusal>,
    protocol: P,
) {
    match admitted {
        Ok(client) => {
            let session = push::ws::start(context, stream, read_ahead, peer, client, protocol);
            // A task of its own: this one's state (the upgrade) is freed now.
            tokio::spawn(session);
        }
        Err(refusal) => push::ws::refuse(context, stream, refusal, protocol).await,
    }
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
