//! The console's actions (docs/console.md): publish a test message, look
//! at a channel (its subscribers here, its history, its presence), and
//! disconnect a user. Each names its site; the admin credential stands for
//! every site.

use std::sync::Arc;

use bytes::Bytes;
use fanout::{ChannelKey, ChannelName, PublishRequest, presence};
use hyper::{Request, Response, body::Incoming};
use push::{ErrorCode, Refusal};
use serde_json::{Value, json};
use sites::Site;

use super::{Body, ok, reply};
use crate::{
    App,
    http::body::{self, BodyLimits},
};

/// An action's body is a few short fields and a test message.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// History entries shown when the query does not say (`limit=N`), and at most.
const DEFAULT_HISTORY: usize = 20;
const MAX_HISTORY: usize = 1000;

/// `POST /api/admin/publish` `{"site","channel","data"}`: publishes `data`
/// (any JSON) as the site's publisher would; answers its offset.
pub(super) async fn publish(app: &App, request: Request<Incoming>) -> Response<Body> {
    let answer = async {
        let body = json_body(app, request).await?;
        let site = site(app, field(&body, "site")?)?;
        let channel = channel_name(field(&body, "channel")?)?;
        let data = body
            .get("data")
            .ok_or_else(|| Refusal::new(ErrorCode::BadRequest, "missing \"data\""))?;
        let data = Bytes::from(data.to_string());
        let max = site.settings().limits.max_message_bytes;
        if data.len() > max {
            return Err(Refusal::new(
                ErrorCode::PayloadTooLarge,
                format!("\"data\" may be at most {max} bytes"),
            ));
        }
        let request = PublishRequest {
            channel: ChannelKey::new(site.id(), &channel),
            data: data.clone(),
            dedupe: None,
        };
        let published = app.fanout().publish(vec![request]).await?;
        app.accounting()
            .published(site.id(), [channel.as_str()], data.len());
        let position = published
            .first()
            .map(|published| published.position)
            .ok_or_else(|| Refusal::new(ErrorCode::Internal, "the engine answered nothing"))?;
        Ok(json!({
            "site": site.id(),
            "channel": channel.as_str(),
            "epoch": position.epoch.to_string(),
            "offset": position.offset,
        }))
    };
    answer_with(answer.await)
}

/// `GET /api/admin/channel?site=S&channel=C[&limit=N]`: the channel's
/// subscribers on this node, its last `limit` messages, and its members
/// when it is a presence channel.
pub(super) async fn channel(app: &App, request: &Request<Incoming>) -> Response<Body> {
    let answer = async {
        let query = request.uri().query().unwrap_or("");
        let mut site_id = None;
        let mut channel_name = None;
        let mut limit = DEFAULT_HISTORY;
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*key {
                "site" => site_id = Some(value.into_owned()),
                "channel" => channel_name = Some(value.into_owned()),
                "limit" => {
                    limit = value.parse().map_err(|_| {
                        Refusal::new(ErrorCode::BadRequest, "limit must be a whole number")
                    })?;
                }
                _ => {}
            }
        }
        let site = site(app, site_id.as_deref().unwrap_or(""))?;
        let Some(name) = channel_name else {
            return Err(Refusal::new(ErrorCode::MissingChannel, "give channel=NAME"));
        };
        let channel = self::channel_name(&name)?;
        let key = ChannelKey::new(site.id(), &channel);
        let history = app.fanout().history(&key, None).await?;
        let skip = history
            .messages
            .len()
            .saturating_sub(limit.min(MAX_HISTORY));
        let messages: Vec<Value> = history.messages[skip..]
            .iter()
            .map(|message| {
                let data: Value = serde_json::from_slice(&message.data).unwrap_or_else(|_| {
                    Value::String(String::from_utf8_lossy(&message.data).into())
                });
                json!({"offset": message.offset(), "data": data})
            })
            .collect();
        let members = if presence::is_presence(channel.as_str()) {
            let members = app.fanout().presence_members(&key).await?;
            let members: Vec<Value> = members
                .iter()
                .map(|member| {
                    let info: Value =
                        serde_json::from_str(&member.user_info).unwrap_or(Value::Null);
                    json!({"user_id": &*member.user_id, "user_info": info})
                })
                .collect();
            Value::Array(members)
        } else {
            Value::Null
        };
        Ok(json!({
            "site": site.id(),
            "channel": channel.as_str(),
            "subscribers": app.fanout().local_subscribers(&key),
            "epoch": history.position.epoch.to_string(),
            "offset": history.position.offset,
            "history": messages,
            "members": members,
        }))
    };
    answer_with(answer.await)
}

/// `POST /api/admin/disconnect` `{"site","user"}`: closes the user's
/// connections on this node with `disconnected` (4011), shortly after the
/// answer. On Redis, each node is asked on its own (docs/console.md).
pub(super) async fn disconnect(app: &App, request: Request<Incoming>) -> Response<Body> {
    let answer = async {
        let body = json_body(app, request).await?;
        let site = site(app, field(&body, "site")?)?;
        let user = field(&body, "user")?;
        if user.is_empty() || user.len() > 200 {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                "\"user\" is a user id of 1 to 200 bytes",
            ));
        }
        app.sessions().disconnect_user(site.id(), user);
        tracing::info!(site = site.id(), user, "an operator disconnected a user");
        Ok(json!({"site": site.id(), "user": user, "disconnecting": true}))
    };
    answer_with(answer.await)
}

fn answer_with(answer: Result<Value, Refusal>) -> Response<Body> {
    match answer {
        Ok(value) => ok(value),
        Err(refusal) => reply::refusal(&refusal),
    }
}

async fn json_body(app: &App, request: Request<Incoming>) -> Result<Value, Refusal> {
    let (parts, incoming) = request.into_parts();
    let declared = body::declared_length(&parts.headers);
    let limits = BodyLimits {
        max_bytes: MAX_BODY_BYTES,
        deadline: app.config().publish.body_timeout,
    };
    let read = body::read(incoming, declared, limits, app.body_budget()).await?;
    let value: Value = serde_json::from_slice(&read.bytes)
        .map_err(|error| Refusal::new(ErrorCode::BadJson, format!("not JSON: {error}")))?;
    if !value.is_object() {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            "the body is a JSON object",
        ));
    }
    Ok(value)
}

fn field<'a>(body: &'a Value, name: &str) -> Result<&'a str, Refusal> {
    body.get(name).and_then(Value::as_str).ok_or_else(|| {
        Refusal::new(
            ErrorCode::BadRequest,
            format!("missing \"{name}\" (a string)"),
        )
    })
}

fn site(app: &App, id: &str) -> Result<Arc<Site>, Refusal> {
    app.sessions()
        .sites()
        .by_id(id)
        .ok_or_else(|| Refusal::new(ErrorCode::SiteUnknown, format!("no site has the id {id:?}")))
}

fn channel_name(name: &str) -> Result<ChannelName, Refusal> {
    ChannelName::new(name)
        .map_err(|error| Refusal::new(ErrorCode::InvalidChannel, error.to_string()))
}
