//! `GET /api/history?channel=A[&since=EPOCH:OFFSET]`: what an app needs to
//! re-sync a timeline. It takes the same credential as publishing.

use std::{fmt::Write as _, net::SocketAddr, sync::Arc};

use fanout::{ChannelKey, ChannelName, History, Position};
use hyper::{Method, Request, Response, StatusCode, body::Incoming};
use push::{ErrorCode, Refusal};
use sites::Site;

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
    let site = match authenticate(app, peer, request).await {
        Ok(site) => site,
        Err(refusal) => return reply::refusal(&refusal),
    };
    let (channel, since) = match query(request.uri().query().unwrap_or("")) {
        Ok(query) => query,
        Err(refusal) => return reply::refusal(&refusal),
    };
    let key = ChannelKey::new(site.id(), &channel);
    match app.fanout().history(&key, since).await {
        Ok(history) => reply::json(StatusCode::OK, body(&channel, &history)),
        Err(error) => reply::refusal(&Refusal::from(error)),
    }
}

/// History is the site's own: the request carries the site's credential.
async fn authenticate(
    app: &App,
    peer: SocketAddr,
    request: &Request<Incoming>,
) -> Result<Arc<Site>, Refusal> {
    let path_and_query = request
        .uri()
        .path_and_query()
        .map_or("/api/history", |p| p.as_str());
    let signed = Signed {
        method: "GET",
        path_and_query,
        idempotency_key: "",
        body: b"",
    };
    let authenticated = credentials::authenticate(app, peer, request.headers(), signed)?;
    authenticated.accept(app).await?;
    Ok(authenticated.site)
}

/// The `channel` and `since` parameters, checked.
fn query(query: &str) -> Result<(ChannelName, Option<Position>), Refusal> {
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
        return Err(Refusal::new(ErrorCode::MissingChannel, "give channel=NAME"));
    };
    let channel = ChannelName::new(&channel)
        .map_err(|error| Refusal::new(ErrorCode::InvalidChannel, error.to_string()))?;
    let since = match since {
        None => None,
        Some(text) => Some(text.parse::<Position>().map_err(|_| {
            Refusal::new(
                ErrorCode::BadRequest,
                "since must be EPOCH:OFFSET, as in a subscribed or message frame",
            )
        })?),
    };
    Ok((channel, since))
}

/// The answer's JSON. The payloads are JSON already (checked on publish):
/// they are copied in as they are.
fn body(channel: &ChannelName, history: &History) -> String {
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
    body
}
