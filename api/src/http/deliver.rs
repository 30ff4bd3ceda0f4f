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

/// Recipients of one delivery that traffic accounting ranks each: past
/// this, a delivery counts in its site's totals only, so that ranking never
/// costs a large delivery more than a few milliseconds (docs/operations.md).
const RANKED: usize = 10_000;

/// The ids accounting ranks for `delivery` (duplicates included), copied
/// before the recipients are handed to the engine; none past [`RANKED`].
fn ranked(delivery: &parse::Delivery) -> Vec<Box<str>> {
    if delivery.recipients.added() > RANKED {
        return Vec::new();
    }
    delivery.recipients.ids().map(Box::from).collect()
}

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
    let parsed = tokio::task::spawn_blocking(move || {
        parse(&body, recipients, max_message_bytes).map(|delivery| {
            let ranked = ranked(&delivery);
            (delivery, ranked)
        })
    })
    .await;
    let (delivery, ranked) = match parsed {
        Ok(Ok(parsed)) => parsed,
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
    let bytes = delivery.data.len();
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
        Ok(report) => {
            app.accounting().delivered(
                site.id(),
                report.recipients as u64,
                ranked.iter().map(|user| &**user),
                bytes,
            );
            reply::json(
                StatusCode::OK,
                serde_json::json!({
                    "recipients": report.recipients,
                    "shards": report.shards,
                    "messages": report.messages,
                    "duplicates": report.duplicates,
                })
                .to_string(),
            )
        }
        Err(error) => {
            tracing::warn!(site = site.id(), %error, "delivery failed");
            reply::refusal(&Refusal::from(error))
        }
    }
}
