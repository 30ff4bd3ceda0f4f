//! `POST /api/deliver`: one notice to many users' timelines
//! (`docs/timelines.md`). The recipient list can be a million ids: it is
//! parsed on a blocking thread straight into per-shard buffers, without a
//! string per recipient, and published as one engine message per shard.

pub(crate) mod parse;

use std::net::SocketAddr;

use hyper::{Method, Request, Response, StatusCode, body::Incoming};

use push::{ErrorCode, Refusal};

use self::parse::parse;
use super::{Body, app_request, pushback, reply};
use crate::App;

pub(crate) async fn handle(
    app: &App,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<Body> {
    if request.method() != Method::POST {
        return reply::method_not_allowed("POST");
    }
    let max_body = app.config().timeline.max_body_bytes;
    let request = match app_request::read(app, peer, request, max_body).await {
        Ok(request) => request,
        Err(answer) => return answer,
    };
    let site = request.site().clone();
    let recipients = app.fanout().recipients(site.id());
    let max_message_bytes = site.settings().limits.max_message_bytes;
    // A million ids take a good fraction of a second to parse and group:
    // off the runtime's threads, so other requests go on meanwhile.
    let body = request.body.clone();
    let parsed =
        tokio::task::spawn_blocking(move || parse(&body, recipients, max_message_bytes)).await;
    let delivery = match parsed {
        Ok(Ok(delivery)) => delivery,
        Ok(Err(refusal)) => {
            if refusal.code == ErrorCode::PayloadTooLarge {
                app.sessions().metrics().reject(site.id(), refusal.code);
            }
            return reply::refusal(&refusal);
        }
        Err(error) => {
            tracing::error!(%error, "delivery parsing failed");
            return reply::refuse(ErrorCode::Internal, "the delivery could not be parsed");
        }
    };
    if let Err(answer) = pushback::wait_for_delivery(app, site.id()).await {
        return answer;
    }
    let shards = delivery.recipients.shards() as u32;
    if let Err(wait) = site.take_publish(shards) {
        let what = format!("a delivery to {shards} shards");
        return app_request::rate_limited(app, &site, wait, &what);
    }
    if let Err(refusal) = request.authenticated.accept(app).await {
        return reply::refusal(&refusal);
    }
    let result = app
        .fanout()
        .deliver(
            site.id(),
            delivery.kind,
            delivery.recipients,
            delivery.data,
            request.dedupe.clone(),
        )
        .await;
    match result {
        Ok(report) => reply::json(
            StatusCode::OK,
            serde_json::json!({
                "recipients": report.recipients,
                "shards": report.shards,
                "messages": report.messages,
                "duplicates": report.duplicates,
            })
            .to_string(),
        ),
        Err(error) => {
            tracing::warn!(site = site.id(), %error, "delivery failed");
            reply::refusal(&Refusal::from(error))
        }
    }
}
