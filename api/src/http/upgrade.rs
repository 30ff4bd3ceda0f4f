//! `GET /ws`: the WebSocket upgrade, answered by hyper, then handed to `push`.

use std::net::SocketAddr;

use hyper::{
    HeaderMap, Method, Request, Response, StatusCode, body::Incoming, header, header::HeaderValue,
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use push::{Client, ConnectRequest, Refused};

use super::{Body, reply};
use crate::App;

pub(crate) fn handle(
    app: &App,
    peer: SocketAddr,
    mut request: Request<Incoming>,
) -> Response<Body> {
    if request.method() != Method::GET {
        return reply::method_not_allowed("GET");
    }
    let headers = request.headers();
    if !has_token(headers, header::CONNECTION, "upgrade")
        || !has_token(headers, header::UPGRADE, "websocket")
    {
        let mut response = reply::error(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            "this route speaks WebSocket only",
        );
        response
            .headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        return response;
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        let mut response = reply::error(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            "only WebSocket version 13 is supported",
        );
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return response;
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return reply::error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "missing Sec-WebSocket-Key",
        );
    };
    let accept = derive_accept_key(key.as_bytes());

    // Admission before the upgrade, so that its refusal can be a close code
    // (what a browser script sees), except for a foreign origin: a page on
    // another site never gets an upgraded socket at all.
    let admitted = admit(app, peer, &request);
    if let Err(refused) = &admitted
        && refused.code == push::ErrorCode::OriginNotAllowed
    {
        return reply::error(
            StatusCode::FORBIDDEN,
            refused.code.as_str(),
            &refused.message,
        );
    }

    let on_upgrade = hyper::upgrade::on(&mut request);
    let sessions = app.sessions().clone();
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                tracing::debug!(client.addr = %peer, %error, "upgrade failed");
                return;
            }
        };
        // hyper serves plain TCP here, so the downcast finds the socket; it
        // also frees hyper's buffers, keeping only bytes read past the request.
        let Ok(parts) = upgraded.downcast::<TokioIo<TcpStream>>() else {
            tracing::warn!(client.addr = %peer, "upgraded connection is not a TCP stream");
            return;
        };
        let read_ahead = parts.read_buf.to_vec();
        let stream = parts.io.into_inner();
        match admitted {
            Ok(client) => {
                let session = push::ws::start(sessions, stream, read_ahead, peer, client);
                // A task of its own: this one's state (the upgrade) is freed now.
                tokio::spawn(session);
            }
            Err(refused) => push::ws::refuse(sessions, stream, refused).await,
        }
    });

    let mut response = reply::empty(StatusCode::SWITCHING_PROTOCOLS);
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

/// Admits the connection by its `key` and `token` parameters (or bearer
/// token) and its `Origin`.
fn admit(app: &App, peer: SocketAddr, request: &Request<Incoming>) -> Result<Client, Refused> {
    let mut key = None;
    let mut token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|v| v.trim().to_string());
    let query = request.uri().query().unwrap_or("");
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*name {
            "key" => key = Some(value.into_owned()),
            "token" => token = Some(value.into_owned()),
            _ => {}
        }
    }
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    push::admit(
        app.sessions(),
        &ConnectRequest {
            key: key.as_deref(),
            token: token.as_deref(),
            origin,
            ip: Some(peer.ip().to_canonical()),
        },
    )
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
