//! The live demo's routes (`api/src/demo.rs`), on the zero-config dev site only; a configured
//! Herald answers 404 for all of them:
//!
//! | request | answer |
//! |---|---|
//! | `GET /demo/state?nick=<nick>` | `{"nick","following","followers","users","notices"}` |
//! | `POST /demo/notices` `{"nick","text"}` | `{"notice":{…}}`, once published where it goes |
//! | `POST /demo/follow` `{"nick","target","follow":true\|false}` | `{"nick","following"}` |
//!
//! Bad input is 400 `bad_request` (or `bad_json`) with the reason.

use bytes::Bytes;
use fanout::{ChannelKey, ChannelName, PublishRequest, TimelineKind};
use hyper::{Method, Request, Response, StatusCode, body::Incoming};
use push::{ErrorCode, Refusal};
use serde_json::Value;

use super::{
    Body,
    body::{self, BodyLimits},
    reply,
};
use crate::{App, demo::DemoRefusal};

/// A demo request body is a nickname and a notice: a few KiB at most.
const MAX_BODY_BYTES: usize = 8 * 1024;

pub(crate) async fn handle(app: &App, request: Request<Incoming>) -> Response<Body> {
    let Some(site) = app
        .sessions()
        .sites()
        .only()
        .filter(|site| site.settings().is_dev())
    else {
        return reply::refuse(
            ErrorCode::NotFound,
            "the demo runs in zero-config mode only",
        );
    };
    let path = request.uri().path().to_string();
    let answer = match (request.method().clone(), path.as_str()) {
        (Method::GET, "/demo/state") => {
            let query = request.uri().query().unwrap_or("");
            let nick = form_urlencoded::parse(query.as_bytes())
                .find(|(name, _)| name == "nick")
                .map(|(_, value)| value.into_owned())
                .unwrap_or_default();
            app.demo().state(&nick).map_err(bad)
        }
        (Method::POST, "/demo/notices") => match json_body(app, request).await {
            Ok(body) => post(app, site.id(), &body).await,
            Err(refusal) => Err(refusal),
        },
        (Method::POST, "/demo/follow") => match json_body(app, request).await {
            Ok(body) => app
                .demo()
                .follow(
                    field(&body, "nick"),
                    field(&body, "target"),
                    body.get("follow").and_then(Value::as_bool).unwrap_or(true),
                )
                .map_err(bad),
            Err(refusal) => Err(refusal),
        },
        (_, "/demo/state") => return reply::method_not_allowed("GET"),
        (_, "/demo/notices" | "/demo/follow") => return reply::method_not_allowed("POST"),
        _ => return reply::refuse(ErrorCode::NotFound, "no such route"),
    };
    match answer {
        Ok(body) => reply::json(StatusCode::OK, body.to_string()),
        Err(refusal) => reply::refusal(&refusal),
    }
}

fn bad(refusal: DemoRefusal) -> Refusal {
    Refusal::new(ErrorCode::BadRequest, refusal.0)
}

fn field<'a>(body: &'a Value, name: &str) -> &'a str {
    body.get(name).and_then(Value::as_str).unwrap_or("")
}

async fn json_body(app: &App, request: Request<Incoming>) -> Result<Value, Refusal> {
    let (parts, body) = request.into_parts();
    let declared = body::declared_length(&parts.headers);
    let limits = BodyLimits {
        max_bytes: MAX_BODY_BYTES,
        deadline: app.config().publish.body_timeout,
    };
    let read = body::read(body, declared, limits, app.body_budget()).await?;
    serde_json::from_slice(&read.bytes)
        .map_err(|e| Refusal::new(ErrorCode::BadJson, format!("not JSON: {e}")))
}

/// Records the notice, then publishes it to its channels and delivers it to its homes.
async fn post(app: &App, site: &str, body: &Value) -> Result<Value, Refusal> {
    let posted = app
        .demo()
        .post(field(body, "nick"), field(body, "text"), time_now())
        .map_err(bad)?;
    let data = Bytes::from(posted.notice.to_string());
    let mut batch = Vec::with_capacity(posted.channels.len());
    for name in &posted.channels {
        let name = ChannelName::new(name)
            .map_err(|e| Refusal::new(ErrorCode::BadRequest, e.to_string()))?;
        batch.push(PublishRequest::new(
            ChannelKey::new(site, &name),
            data.clone(),
        ));
    }
    app.fanout().publish(batch).await.map_err(Refusal::from)?;
    let mut homes = app.fanout().recipients(site);
    for user in &posted.homes {
        homes.add(user);
    }
    app.fanout()
        .deliver(site, TimelineKind::User, homes, data, None)
        .await
        .map_err(Refusal::from)?;
    Ok(serde_json::json!({ "notice": posted.notice }))
}

/// Now, in milliseconds since the Unix epoch: the page formats it.
fn time_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
