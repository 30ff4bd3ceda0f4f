//! `GET /ws/echo`: every message back to its sender, over the same
//! WebSocket path as `/ws` (`push::protocol::echo`), for the Autobahn
//! conformance suite (`scripts/autobahn.sh`, `docs/reliability.md`).
//!
//! Off unless `testing.ws_echo` is set, which the configuration accepts
//! only with a loopback `listen` address; even then, only loopback peers
//! are answered. Anyone else gets the 404 of a route that does not exist.

use std::net::SocketAddr;

use hyper::{Request, Response, body::Incoming};
use push::protocol::echo::EchoWs;

use super::{
    Body,
    upgrade::{self, Credentials},
};
use crate::App;

/// Whether the route exists for this peer.
pub(crate) fn serves(app: &App, peer: SocketAddr) -> bool {
    app.config().ws_echo && peer.ip().to_canonical().is_loopback()
}

/// Upgrades like `/ws` (admission with the `key` parameter, the site's
/// frame limits), then echoes.
pub(crate) fn handle(app: &App, peer: SocketAddr, request: Request<Incoming>) -> Response<Body> {
    let accept = match upgrade::handshake(&request) {
        Ok(accept) => accept,
        Err(answer) => return answer,
    };
    let query = request.uri().query().unwrap_or("");
    let key = form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "key")
        .map(|(_, value)| value.into_owned());
    let credentials = Credentials {
        key: key.as_deref(),
        token: None,
    };
    upgrade::upgrade(
        app,
        peer,
        request,
        accept,
        credentials,
        Ok(push::Opening::default()),
        EchoWs::default(),
    )
}
