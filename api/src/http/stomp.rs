//! `GET /stomp`: STOMP over WebSocket (`push::protocol::stomp`), for pages
//! that subscribe with `@stomp/stompjs` as Orbited pages did with `stomp.js`
//! (docs/compat.md). The site and the user come from the URL as on `/ws`
//! (`key`, `token` or a bearer token); with no `key`, the site the STOMP
//! port publishes for (`stomp.site`), else the only site. Destinations map
//! to channels as the STOMP port maps them.

use std::net::SocketAddr;

use hyper::{Request, Response, StatusCode, body::Incoming, header, header::HeaderValue};
use push::{ErrorCode, Opening, StompWs, protocol::stomp::SUBPROTOCOLS, statusnet::StatusNetNames};

use super::{
    Body, reply,
    upgrade::{self, Credentials},
};
use crate::App;

pub(crate) fn handle(app: &App, peer: SocketAddr, request: Request<Incoming>) -> Response<Body> {
    let accept = match upgrade::handshake(&request) {
        Ok(accept) => accept,
        Err(answer) => return answer,
    };
    let offered: Vec<&str> = request
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    let chosen = SUBPROTOCOLS
        .iter()
        .map(|(name, _)| *name)
        .find(|name| offered.contains(name));
    if chosen.is_none() && !offered.is_empty() {
        return reply::refuse(
            ErrorCode::BadRequest,
            "no subprotocol offered is served here: v12.stomp, v11.stomp or v10.stomp",
        );
    }
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let query = request.uri().query().unwrap_or("");
    let (key, token) = upgrade::native_credentials(authorization, query);
    let config = app.config();
    let port_site_key = config
        .stomp
        .as_ref()
        .and_then(|port| app.sessions().sites().by_id(&port.site))
        .map(|site| site.settings().key.clone());
    let names = match &config.stomp {
        Some(port) => port.names.clone(),
        None => StatusNetNames {
            channelbase: String::new(),
            users: config.user_timelines.clone(),
        },
    };
    let credentials = Credentials {
        key: key.as_deref().or(port_site_key.as_deref()),
        token: token.as_deref(),
    };
    let opening = Ok(Opening::default());
    let protocol = StompWs::new(names);
    let mut response = upgrade::upgrade(app, peer, request, accept, credentials, opening, protocol);
    if response.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(chosen) = chosen
    {
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(chosen),
        );
    }
    response
}
