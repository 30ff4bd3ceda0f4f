//! The Pusher REST API's channel information, signed as publishing is
//! (`pusher_auth.rs`), answered from every node's subscribers
//! (`fanout::occupancy`) and presence channels' members
//! (`fanout::presence`), so that the Pusher libraries' `get()` and
//! Laravel's channel queries work unchanged (docs/compat.md):
//!
//! | request | answer |
//! |---|---|
//! | `GET /apps/<id>/channels` (`filter_by_prefix`, `info=user_count` with `filter_by_prefix=presence-`) | `{"channels":{"<name>":{…}}}`, the occupied ones |
//! | `GET /apps/<id>/channels/<name>` (`info=subscription_count,user_count`) | `{"occupied":…,"subscription_count":…,"user_count":…}` |
//! | `GET /apps/<id>/channels/<name>/users` (presence channels) | `{"users":[{"id":…},…]}` |
//!
//! `user_count` asked of a channel that is not a presence channel, and
//! `/users` of one, are 400, as Pusher answers them.

use fanout::{ChannelKey, presence};
use hyper::{Method, Request, Response, StatusCode, body::Incoming, header};
use push::protocol::pusher::herald_channel;
use push::{ErrorCode, Refusal};
use serde_json::{Map, Value, json};

use super::{Body, pusher_auth::signed_site, reply};
use crate::App;

/// What a path asks for.
enum Query<'a> {
    Channels,
    Channel(&'a str),
    Users(&'a str),
}

pub(crate) async fn handle(app: &App, request: Request<Incoming>) -> Response<Body> {
    if request.method() != Method::GET {
        let mut answer = reply::refuse(ErrorCode::MethodNotAllowed, "this route takes GET");
        answer
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET"));
        return answer;
    }
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or("").to_string();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (app_id, asked) = match segments[..] {
        ["apps", id, "channels"] => (id, Query::Channels),
        ["apps", id, "channels", name] => (id, Query::Channel(name)),
        ["apps", id, "channels", name, "users"] => (id, Query::Users(name)),
        _ => return reply::refuse(ErrorCode::NotFound, "no such route"),
    };
    let site = match signed_site(app, app_id, "GET", &path, &query, None) {
        Ok(site) => site,
        Err(unsigned) => return reply::refusal(&unsigned),
    };
    let param = |name: &str| {
        form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
    };
    let info = param("info").unwrap_or_default();
    let wants = |attribute: &str| info.split(',').any(|a| a.trim() == attribute);
    let answer = match asked {
        Query::Channels => {
            let prefix = param("filter_by_prefix").unwrap_or_default();
            channels(app, site.id(), &prefix, wants("user_count")).await
        }
        Query::Channel(name) => {
            let subscriptions = wants("subscription_count");
            channel(app, site.id(), name, subscriptions, wants("user_count")).await
        }
        Query::Users(name) => users(app, site.id(), name).await,
    };
    match answer {
        Ok(body) => reply::json(StatusCode::OK, body.to_string()),
        Err(refusal) => reply::refusal(&refusal),
    }
}

fn bad(message: &str) -> Refusal {
    Refusal::new(ErrorCode::BadRequest, message.to_string())
}

fn unavailable(error: fanout::Error) -> Refusal {
    Refusal::new(ErrorCode::Unavailable, error.to_string())
}

/// The site's channel `name` (percent-decoded, as Pusher's names are).
fn site_channel(site: &str, name: &str) -> Result<ChannelKey, Refusal> {
    let decoded: String = form_urlencoded::parse(format!("n={name}").as_bytes())
        .next()
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    let local = herald_channel(&decoded)
        .map_err(|e| Refusal::new(ErrorCode::InvalidChannel, e.to_string()))?;
    Ok(ChannelKey::new(site, &local))
}

async fn channels(app: &App, site: &str, prefix: &str, user_count: bool) -> Result<Value, Refusal> {
    if user_count && !presence::is_presence(prefix) {
        return Err(bad(
            "info=user_count needs filter_by_prefix=presence-: only presence channels have users",
        ));
    }
    let occupied = app
        .fanout()
        .occupancy(site, prefix)
        .await
        .map_err(unavailable)?;
    let mut listed = Map::new();
    for name in occupied.keys() {
        let mut attributes = Map::new();
        if user_count {
            let channel = site_channel(site, name)?;
            let members = app
                .fanout()
                .presence_members(&channel)
                .await
                .map_err(unavailable)?;
            attributes.insert("user_count".into(), members.len().into());
        }
        listed.insert(name.clone(), Value::Object(attributes));
    }
    Ok(json!({ "channels": listed }))
}

async fn channel(
    app: &App,
    site: &str,
    name: &str,
    subscription_count: bool,
    user_count: bool,
) -> Result<Value, Refusal> {
    let channel = site_channel(site, name)?;
    let is_presence = presence::is_presence(channel.name());
    if user_count && !is_presence {
        return Err(bad("info=user_count is for presence channels only"));
    }
    let occupancy = app
        .fanout()
        .occupancy(site, channel.name())
        .await
        .map_err(unavailable)?;
    let subscriptions = occupancy.get(channel.name()).copied().unwrap_or(0);
    let mut answer = json!({ "occupied": subscriptions > 0 });
    if subscription_count {
        answer["subscription_count"] = subscriptions.into();
    }
    if user_count {
        let members = app
            .fanout()
            .presence_members(&channel)
            .await
            .map_err(unavailable)?;
        answer["user_count"] = members.len().into();
    }
    Ok(answer)
}

async fn users(app: &App, site: &str, name: &str) -> Result<Value, Refusal> {
    let channel = site_channel(site, name)?;
    if !presence::is_presence(channel.name()) {
        return Err(bad("only presence channels have users"));
    }
    let members = app
        .fanout()
        .presence_members(&channel)
        .await
        .map_err(unavailable)?;
    let users: Vec<Value> = members
        .iter()
        .map(|member| json!({ "id": &*member.user_id }))
        .collect();
    Ok(json!({ "users": users }))
}
