//! The Pusher REST API's publishing: `POST /apps/<id>/events`,
//! `POST /apps/<id>/batch_events` and `POST /apps/<id>/users/<user>/events`
//! (to a signed-in user's `#server-to-user-<user>`), signed the Pusher way
//! (`sites::pusher`), so that the Pusher server libraries (PHP, Python,
//! Node, …) publish to Herald unchanged (docs/compat.md). A site's id, key
//! and secret are its Pusher `app_id`, `key` and `secret`.
//!
//! Every request without a valid signature is 401, whatever else is wrong
//! with it: the signature is checked before the body is parsed (a path of
//! another shape under `/apps/` is 404). Each
//! event is published as `POST /api/publish` would (the site's checks,
//! pushback and rate), under its event name.

use std::net::SocketAddr;

use fanout::{ChannelName, Tags};
use hyper::{Method, Request, Response, StatusCode, body::Incoming, header};
use push::protocol::pusher::{connection_of, herald_channel};
use push::{ErrorCode, Refusal};
use serde_json::Value;

use super::{
    Body,
    body::{self, BodyLimits},
    pusher_auth::signed_site,
    reply,
};
use crate::{
    App,
    compat::publish::{Port, Refused, message_data, publish_tagged},
};

/// The most channels one event names (Pusher's own limit).
const MAX_CHANNELS: usize = 100;
/// The most events in one batch (Pusher's hosted clusters take 10).
const MAX_BATCH: usize = 10;
/// The longest event name (Pusher's limit).
const MAX_EVENT_NAME: usize = 200;

/// One event to publish.
struct PusherEvent {
    name: String,
    data: Vec<u8>,
    /// Herald's channels, every one checked before anything is published.
    channels: Vec<ChannelName>,
    /// The connection of `socket_id`, which does not get the event.
    excluded: Option<u64>,
}

/// What a path asks for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `/apps/<id>/events`
    Events,
    /// `/apps/<id>/batch_events`
    Batch,
    /// `/apps/<id>/users/<user>/events`: to a signed-in user's connections.
    User,
}

pub(crate) async fn handle(
    app: &App,
    _peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<Body> {
    if request.method() != Method::POST {
        let mut answer = reply::refuse(ErrorCode::MethodNotAllowed, "this route takes POST");
        answer
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
        return answer;
    }
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or("").to_string();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (app_id, kind, user) = match segments[..] {
        ["apps", id, "events"] => (id, Kind::Events, None),
        ["apps", id, "batch_events"] => (id, Kind::Batch, None),
        ["apps", id, "users", user, "events"] => (id, Kind::User, Some(user.to_string())),
        _ => return reply::refuse(ErrorCode::NotFound, "no such route"),
    };
    let (parts, body) = request.into_parts();
    let declared = body::declared_length(&parts.headers);
    let limits = BodyLimits {
        max_bytes: app.config().publish.max_body_bytes,
        deadline: app.config().publish.body_timeout,
    };
    let read = match body::read(body, declared, limits, app.body_budget()).await {
        Ok(read) => read,
        Err(refusal) => return reply::refusal(&refusal),
    };
    let body = Some(&read.bytes[..]);
    let site = match signed_site(app, app_id, "POST", &path, &query, body) {
        Ok(site) => site,
        Err(unsigned) => return reply::refusal(&unsigned),
    };
    let events = match parse(&read.bytes, kind, user.as_deref()) {
        Ok(events) => events,
        Err(refusal) => return reply::refusal(&refusal),
    };
    for event in events {
        for name in &event.channels {
            let tags = Tags {
                event: Some(&event.name),
                excluded: event.excluded,
            };
            let published =
                publish_tagged(app, Port::Pusher, site.id(), name, tags, event.data.clone()).await;
            if let Err(refused) = published {
                return refused_answer(&refused);
            }
        }
    }
    reply::json(StatusCode::OK, "{}".to_string())
}

/// The answer to a publish the site's checks refused.
fn refused_answer(refused: &Refused) -> Response<Body> {
    let code = match refused {
        Refused::SiteGone(_) => ErrorCode::SiteUnknown,
        Refused::TooLarge { .. } => ErrorCode::PayloadTooLarge,
        Refused::Lagging => ErrorCode::DeliveryLagging,
        Refused::RateLimited { .. } => ErrorCode::RateLimited,
        Refused::Failed(_) => ErrorCode::Unavailable,
    };
    let mut answer = reply::refusal(&Refusal::new(code, refused.to_string()));
    if matches!(refused, Refused::Lagging | Refused::RateLimited { .. }) {
        answer
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(1));
    }
    answer
}

fn bad(message: impl Into<String>) -> Refusal {
    Refusal::new(ErrorCode::BadRequest, message.into())
}

/// The events of a body: one (`events`), a batch (`batch_events`), or one
/// to `user`'s channel, `user:<id>` (a signed-in Pusher client's
/// `#server-to-user-<id>`).
fn parse(body: &[u8], kind: Kind, user: Option<&str>) -> Result<Vec<PusherEvent>, Refusal> {
    let json: Value = serde_json::from_slice(body)
        .map_err(|e| Refusal::new(ErrorCode::BadJson, format!("the body is not JSON: {e}")))?;
    match (kind, user) {
        (Kind::Events, _) => return Ok(vec![event(&json, false)?]),
        (Kind::User, Some(user)) => {
            if !fanout::timeline::is_user_id(user) {
                return Err(Refusal::new(
                    ErrorCode::InvalidChannel,
                    format!("{user:?} cannot be a user id"),
                ));
            }
            let mut json = json;
            if let Some(object) = json.as_object_mut() {
                let channel = format!("#server-to-user-{user}");
                object.insert("channels".into(), Value::from(vec![channel]));
            }
            return Ok(vec![event(&json, false)?]);
        }
        _ => {}
    }
    let items = json
        .get("batch")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("a batch body is {\"batch\":[…]}"))?;
    if items.len() > MAX_BATCH {
        return Err(bad(format!("a batch holds at most {MAX_BATCH} events")));
    }
    items.iter().map(|item| event(item, true)).collect()
}

/// One event: `name`, `data` (a string, as the libraries send it) and
/// `channels` (or, in a batch, one `channel`).
fn event(json: &Value, in_batch: bool) -> Result<PusherEvent, Refusal> {
    let name = json
        .get("name")
        .and_then(Value::as_str)
        .filter(|name| !name.is_empty() && name.len() <= MAX_EVENT_NAME)
        .ok_or_else(|| bad(format!("name: a string of 1 to {MAX_EVENT_NAME} bytes")))?;
    if name.contains('\0') {
        return Err(bad("name: no NUL"));
    }
    // Pusher keeps these for itself; here they would pass for member events.
    if name.starts_with("pusher:") || name.starts_with("pusher_internal:") {
        return Err(bad(
            "name: pusher: and pusher_internal: events are Pusher's own",
        ));
    }
    // The libraries send data as a string (JSON they encoded); a string
    // that is JSON is published as that JSON, any other as a JSON string.
    let data = match json.get("data") {
        Some(Value::String(text)) => message_data(text.clone().into_bytes()).to_vec(),
        Some(other) => other.to_string().into_bytes(),
        None => return Err(bad("data is required")),
    };
    let channels: Vec<String> = match (json.get("channels"), json.get("channel")) {
        (Some(Value::Array(list)), None) if !in_batch => list
            .iter()
            .map(|c| c.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("channels: an array of strings"))?,
        (None, Some(Value::String(channel))) => vec![channel.clone()],
        _ if in_batch => return Err(bad("a batch event names one channel")),
        _ => return Err(bad("channels: an array of 1 to 100 channel names")),
    };
    if channels.is_empty() || channels.len() > MAX_CHANNELS {
        return Err(bad(format!("channels: 1 to {MAX_CHANNELS} of them")));
    }
    let channels = channels
        .iter()
        .map(|channel| {
            herald_channel(channel).map_err(|error| {
                Refusal::new(ErrorCode::InvalidChannel, format!("{channel}: {error}"))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let excluded = match json.get("socket_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) => Some(
            connection_of(id).ok_or_else(|| bad(format!("socket_id {id:?} is not a socket id")))?,
        ),
        Some(_) => return Err(bad("socket_id: a string")),
    };
    Ok(PusherEvent {
        name: name.to_string(),
        data,
        channels,
        excluded,
    })
}
