//! Routing of the requests hyper serves, and the answers that need no engine.

mod admin;
mod app_request;
mod body;
mod credentials;
pub(crate) mod deliver;
mod demo;
mod echo;
mod history;
mod idempotency;
mod mercure;
mod meteor_push;
mod poll;
mod publish;
pub(crate) mod pushback;
mod pusher;
mod pusher_auth;
mod pusher_channels;
mod pusher_events;
mod reply;
mod sse;
mod stomp;
pub(crate) mod upgrade;

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Incoming, header};
use prometheus::{Encoder, TextEncoder};
use push::ErrorCode;

use crate::App;

pub(crate) use body::BodyBudget;

/// Every answer is a plain body, except SSE streams that reach hyper.
pub(crate) type Body = http_body_util::Either<Full<Bytes>, sse::SseBody>;

/// A complete body.
pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Either::Left(Full::new(bytes.into()))
}

/// Answers one request. Every outcome, including every refusal, is counted
/// in `herald_http_requests_total`.
pub(crate) async fn handle(
    app: App,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<Body> {
    let path = request.uri().path().to_string();
    let (route, response) = match path.as_str() {
        "/ws" => ("ws", upgrade::native(&app, peer, request)),
        "/ws/echo" if echo::serves(&app, peer) => ("ws_echo", echo::handle(&app, peer, request)),
        "/sse" => ("sse", sse::handle(&app, peer, &request).await),
        "/poll" => ("poll", poll::handle(&app, peer, request).await),
        "/stomp" => ("stomp", stomp::handle(&app, peer, request)),
        "/api/publish" => ("publish", publish::handle(&app, peer, request).await),
        "/api/deliver" => ("deliver", deliver::handle(&app, peer, request).await),
        admin if admin.starts_with("/api/admin/") => admin::handle(&app, peer, request).await,
        "/console" => ("console", admin::console(&app, peer, &request)),
        "/api/history" => ("history", history::handle(&app, peer, &request).await),
        // Publishes and streams are counted apart, as `/api/publish` and `/sse` are.
        "/.well-known/mercure" if request.method() == Method::POST => (
            "mercure_publish",
            mercure::handle(&app, peer, request).await,
        ),
        "/.well-known/mercure" => ("mercure", mercure::handle(&app, peer, request).await),
        "/healthz" => ("healthz", reply::text(StatusCode::OK, "ok")),
        "/readyz" => ("readyz", readyz(&app)),
        app_key if app_key.starts_with("/app/") => ("pusher", pusher::handle(&app, peer, request)),
        apps if apps.starts_with("/apps/") && apps.split('/').nth(3) == Some("channels") => (
            "pusher_channels",
            pusher_channels::handle(&app, request).await,
        ),
        events if events.starts_with("/apps/") && events.ends_with("events") => (
            "pusher_events",
            pusher_events::handle(&app, peer, request).await,
        ),
        demo if demo.starts_with("/demo/") => ("demo", demo::handle(&app, request).await),
        push if push.starts_with("/push/") => (
            "meteor_push",
            meteor_push::handle(&app, peer, &request).await,
        ),
        // With a metrics listener of its own, metrics are not served to
        // whoever can reach the public port.
        "/metrics" if app.config().metrics.listen.is_none() => ("metrics", metrics(&app)),
        _ => static_asset(&request, &path),
    };
    count(&app, route, &response);
    response
}

/// Answers one request on the `metrics.listen` listener: `/metrics`,
/// `/healthz` and `/readyz`, nothing else.
pub(crate) fn handle_ops(app: &App, request: Request<Incoming>) -> Response<Body> {
    let (route, response) = match request.uri().path() {
        "/metrics" => ("metrics", metrics(app)),
        "/healthz" => ("healthz", reply::text(StatusCode::OK, "ok")),
        "/readyz" => ("readyz", readyz(app)),
        _ => (
            "not_found",
            reply::refuse(ErrorCode::NotFound, "no such route"),
        ),
    };
    count(app, route, &response);
    response
}

fn count(app: &App, route: &str, response: &Response<Body>) {
    app.metrics()
        .requests
        .with_label_values(&[route, response.status().as_str()])
        .inc();
}

/// What `/readyz` answers 200 to, for `herald_ready`.
fn is_ready(app: &App) -> bool {
    !app.is_shutting_down() && app.fanout().is_ready()
}

fn readyz(app: &App) -> Response<Body> {
    if app.is_shutting_down() {
        reply::refuse(ErrorCode::Unavailable, "shutting down")
    } else if !app.fanout().is_ready() {
        reply::refuse(ErrorCode::Unavailable, "engine not ready")
    } else {
        reply::text(StatusCode::OK, "ready")
    }
}

fn metrics(app: &App) -> Response<Body> {
    let alive = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    app.metrics().alive_tasks.set(alive as i64);
    app.metrics()
        .body_bytes_in_flight
        .set(app.body_budget().in_flight() as i64);
    app.metrics()
        .delivery_lag_seconds
        .set(f64::from(fanout::lag::current_ms()) / 1000.0);
    app.metrics().read_fds();
    app.metrics().ready.set(i64::from(is_ready(app)));
    let encoder = TextEncoder::new();
    let mut text = Vec::with_capacity(8 * 1024);
    if let Err(error) = encoder.encode(&app.registry().gather(), &mut text) {
        tracing::warn!(%error, "cannot encode metrics");
        return reply::refuse(ErrorCode::Internal, "cannot encode metrics");
    }
    let mut response = Response::new(full(text));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

fn static_asset(request: &Request<Incoming>, path: &str) -> (&'static str, Response<Body>) {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return (
            "not_found",
            reply::refuse(ErrorCode::NotFound, "no such route"),
        );
    }
    match web::asset(path) {
        Some(asset) => {
            let mut response = Response::new(full(Bytes::from_static(asset.body)));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(asset.content_type),
            );
            headers.insert(
                header::CACHE_CONTROL,
                header::HeaderValue::from_static("no-cache"),
            );
            ("web", response)
        }
        None => (
            "not_found",
            reply::refuse(ErrorCode::NotFound, "no such route"),
        ),
    }
}
