//! `GET /api/history`: what an app needs to re-sync a timeline.

use std::{fmt::Write as _, net::SocketAddr};

use fanout::{ChannelKey, ChannelName, Epoch, Position};
use hyper::{Method, Request, Response, StatusCode, body::Incoming};

use super::{
    Body,
    credentials::{self, Signed},
    reply,
};
use crate::App;

pub(crate) async fn handle(
    app: &App,
    peer: SocketAddr,
    request: &Request<Incoming>,
) -> Response<Body> {
    if request.method() != Method::GET {
        return reply::method_not_allowed("GET");
    }
    // History is the site's own: the same credential as publishing.
    let path_and_query = request
        .uri()
        .path_and_query()
        .map_or("/api/history", |p| p.as_str());
    let signed = Signed {
        method: "GET",
        path_and_query,
        body: b"",
    };
    let site = match credentials::authenticate(app, peer, request.headers(), signed)
        .and_then(|authenticated| authenticated.accept(app).map(|()| authenticated.site))
    {
        Ok(site) => site,
        Err(refusal) => return refusal.into_response(),
    };
    let query = request.uri().query().unwrap_or("");
    let mut channel = None;
    let mut since = None;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "channel" => channel = Some(value.into_owned()),
            "since" => since = Some(value.into_owned()),
            _ => {}
        }
    }
    let Some(channel) = channel else {
        return reply::error(
            StatusCode::BAD_REQUEST,
            "missing_channel",
            "give channel=NAME",
        );
    };
    let channel = match ChannelName::new(&channel) {
        Ok(channel) => channel,
        Err(error) => {
            return reply::error(
                StatusCode::BAD_REQUEST,
                "invalid_channel",
                &error.to_string(),
            );
        }
    };
    let since = match since.as_deref().map(parse_since) {
        None => None,
        Some(Some(position)) => Some(position),
        Some(None) => {
            return reply::error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "since must be EPOCH:OFFSET, as in a subscribed or message frame",
            );
        }
    };
    let key = ChannelKey::new(site.id(), &channel);
    let history = match app.fanout().history(&key, since).await {
        Ok(history) => history,
        Err(error) => {
            return reply::error(
                StatusCode::SERVICE_UNAVAILABLE,
                error.reason(),
                &error.to_string(),
            );
        }
    };
    // The payloads are JSON already (checked on publish): copy them in as they are.
    let mut body = format!(
        r#"{{"channel":"{channel}","epoch":"{}","offset":{},"recovered":{},"messages":["#,
        history.position.epoch, history.position.offset, history.recovered
    );
    for (i, message) in history.messages.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        let _ = write!(body, r#"{{"offset":{},"data":"#, message.offset());
        body.push_str(&String::from_utf8_lossy(&message.data));
        body.push('}');
    }
    body.push_str("]}");
    reply::json(StatusCode::OK, body)
}

fn parse_since(text: &str) -> Option<Position> {
    let (epoch, offset) = text.split_once(':')?;
    if offset.is_empty() || !offset.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(Position {
        epoch: epoch.parse::<Epoch>().ok()?,
        offset: offset.parse().ok()?,
    })
}
