//! `GET /app/<key>`: the Pusher Channels protocol over WebSocket
//! (`push::protocol::pusher`), for pusher-js, Laravel Echo and the Pusher
//! mobile SDKs (docs/compat.md). The path's key is the site's key (its
//! Pusher app key); a site's `private-` channels take Pusher's channel
//! authorization, which is Herald's channel signature.

use std::net::SocketAddr;

use hyper::{Request, Response, body::Incoming};
use push::{ErrorCode, Opening, PusherWs, Refusal};

use super::{
    Body,
    upgrade::{self, Credentials},
};
use crate::App;

pub(crate) fn handle(app: &App, peer: SocketAddr, request: Request<Incoming>) -> Response<Body> {
    let accept = match upgrade::handshake(&request) {
        Ok(accept) => accept,
        Err(answer) => return answer,
    };
    let key = request
        .uri()
        .path()
        .strip_prefix("/app/")
        .unwrap_or_default()
        .to_string();
    // pusher-js says protocol=7, pysher 6; older clients speak what this
    // serves too, so only a version from the future is refused.
    let version = form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
        .find(|(name, _)| name == "protocol")
        .and_then(|(_, value)| value.parse::<u32>().ok());
    let opening = match version {
        Some(version) if version > 7 => Err(Refusal::new(
            ErrorCode::BadRequest,
            format!("Pusher protocol {version} is not served: 7 at most"),
        )),
        _ => Ok(Opening::default()),
    };
    let credentials = Credentials {
        key: Some(&key),
        token: None,
    };
    upgrade::upgrade(
        app,
        peer,
        request,
        accept,
        credentials,
        opening,
        PusherWs::default(),
    )
}
