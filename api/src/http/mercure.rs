//! `/.well-known/mercure`: a Mercure-compatible hub (docs/compat.md,
//! "Mercure"). `GET` subscribes (checked by `push::mercure`, answered by
//! `push::sse::answer` in the Mercure protocol); `POST` publishes a form
//! authorized by an HS256 JWT whose `mercure.publish` claim covers every
//! topic, with the checks, pushback and rate of `POST /api/publish`.
//!
//! Every update of a site goes to the site's one Mercure channel
//! (`push::mercure::channel`, why in `push/src/protocol/mercure.rs`),
//! stored with its topics and its whole SSE event
//! (`push::mercure::update`), so history, Redis and recovery apply to it
//! unchanged.
//!
//! A `GET` on a fresh connection never gets here: the listener hands it to
//! `push::mercure::accept` with its socket, as native `/sse` streams. This
//! route serves streams asked for on a keep-alive connection that served
//! other requests first, with the same checks and answer.

use std::net::SocketAddr;

use hyper::{Method, Request, Response, StatusCode, body::Incoming, header, header::HeaderValue};
use push::{
    ErrorCode, Refusal,
    mercure::{self, MercureHeaders, publish::PublishForm, update::Update},
    sse::Answer,
};
use sites::mercure as jwt;

use super::{
    Body,
    body::{self, BodyLimits},
    full, reply,
    sse::SseBody,
};
use crate::{
    App,
    compat::publish::{Port, Refused, count_refused, publish_request},
};

/// How long a client waits before it asks again after a temporary refusal.
const RETRY_AFTER_SECS: &str = "2";

pub(crate) async fn handle(
    app: &App,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<Body> {
    // Decided before the request is consumed, by the site it names.
    let credentials_origin = request
        .headers()
        .get(header::ORIGIN)
        .filter(|origin| origin_listed(app, &request, origin))
        .cloned();
    let response = match *request.method() {
        Method::POST => publish(app, peer, request).await,
        Method::OPTIONS => preflight(),
        _ => subscribe(app, peer, &request).await,
    };
    with_cors(credentials_origin, response)
}

async fn subscribe(app: &App, peer: SocketAddr, request: &Request<Incoming>) -> Response<Body> {
    let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
    let headers = MercureHeaders {
        last_event_id: header("last-event-id"),
        authorization: header("authorization"),
        cookie: header("cookie"),
        origin: header("origin"),
        proxied: push::is_proxied(|name| request.headers().contains_key(name)),
    };
    let context = app.sessions();
    let checked = mercure::check(context, request.method().as_str(), target, headers);
    let (answer, last_id) = mercure::answer(context, checked, peer).await;
    match answer {
        Answer::Stream(connection) => {
            let body = http_body_util::Either::Right(SseBody(Box::new(connection)));
            let mut response = stream_response(body);
            if let Some(id) = last_id.and_then(|id| HeaderValue::from_str(&id).ok()) {
                let headers = response.headers_mut();
                headers.insert("last-event-id", id.clone());
                headers.insert("mercure-last-event-id", id);
            }
            response
        }
        Answer::RetryLater(body) => {
            let mut response = stream_response(full(body));
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
            response
        }
        Answer::Refused(refusal) => refused(&refusal),
    }
}

/// The answer to a CORS preflight: what a page that subscribes with an
/// `Authorization` header (an EventSource polyfill) or publishes from the
/// browser may send. [`with_cors`] adds the origin.
fn preflight() -> Response<Body> {
    reply::preflight(
        "GET, POST",
        "Authorization, Cache-Control, Content-Type, Last-Event-ID",
    )
}

/// `200` with the headers of every SSE stream but the CORS one, which
/// [`with_cors`] sets.
fn stream_response(body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    for (name, value) in push::sse::RESPONSE_HEADERS {
        if !name.starts_with("Access-Control") {
            response
                .headers_mut()
                .insert(*name, HeaderValue::from_static(value));
        }
    }
    response
}

async fn publish(app: &App, peer: SocketAddr, request: Request<Incoming>) -> Response<Body> {
    match checked_publish(app, peer, request).await {
        Ok(id) => {
            let mut response = Response::new(full(id));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            response
        }
        Err(response) => response,
    }
}

/// Checks and publishes an update; answers its id, or the refusal. What the
/// headers can refuse is refused before any of the body is read.
async fn checked_publish(
    app: &App,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Result<String, Response<Body>> {
    let context = app.sessions();
    let query = request.uri().query().unwrap_or("");
    let key = form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "key")
        .map(|(_, value)| value.into_owned());
    // Each refusal before the publish is counted here; the publish's own
    // (size, rate, pushback) by `publish_request`.
    let site = mercure::site(context, key.as_deref()).map_err(|r| {
        count_refused(app, Port::Mercure);
        refused(&r)
    })?;
    let refuse = |refusal: Refusal| {
        count_refused(app, Port::Mercure);
        context.metrics().reject(site.id(), refusal.code);
        refused(&refusal)
    };
    let settings = site.settings();
    let headers = request.headers();
    let header = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let query_jwt = form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "authorization")
        .map(|(_, value)| value.into_owned());
    let token = mercure::jwt(
        header(header::AUTHORIZATION),
        header(header::COOKIE),
        query_jwt.as_deref(),
    )
    .ok_or_else(|| {
        refuse(Refusal::new(
            ErrorCode::Unauthorized,
            "publish with a Mercure JWT: Authorization: Bearer <jwt>",
        ))
    })?;
    let claims = jwt::verify(settings.mercure_keys(), token)
        .map_err(|error| refuse(mercure::jwt_refusal(error)))?;
    if settings.is_dev() {
        // The dev site's key is public: it publishes only from the dev
        // site's trusted networks, and never through a proxy, as
        // `POST /api/publish` does without a credential.
        if push::is_proxied(|name| headers.contains_key(name)) {
            return Err(refuse(push::proxied_dev_site()));
        }
        let ip = peer.ip().to_canonical();
        if !app
            .config()
            .publish
            .trusted_networks
            .iter()
            .any(|net| net.contains(&ip))
        {
            return Err(refuse(Refusal::new(
                ErrorCode::Forbidden,
                "this is the dev site: without a publish secret configured, only trusted \
                 networks may publish",
            )));
        }
    }
    let form_type = header(header::CONTENT_TYPE)
        .map(|v| v.split(';').next().unwrap_or("").trim())
        .is_some_and(|v| v.eq_ignore_ascii_case("application/x-www-form-urlencoded"));
    if !form_type {
        return Err(refuse(Refusal::new(
            ErrorCode::UnsupportedMediaType,
            "send the update as Content-Type: application/x-www-form-urlencoded",
        )));
    }
    let declared = body::declared_length(headers);
    let limits = BodyLimits {
        max_bytes: app.config().publish.max_body_bytes,
        deadline: app.config().publish.body_timeout,
    };
    let read = body::read(request.into_body(), declared, limits, app.body_budget())
        .await
        .map_err(&refuse)?;
    let form = PublishForm::parse(&read.bytes).map_err(&refuse)?;
    if !claims.may_publish(form.topics.iter().map(String::as_str)) {
        return Err(refuse(Refusal::new(
            ErrorCode::Forbidden,
            "the JWT's mercure.publish claim does not cover every topic of the update",
        )));
    }
    let id = form.id.clone().unwrap_or_else(uuid_urn);
    let update = Update {
        topics: &form.topics,
        private: form.private,
        id: &id,
        kind: form.kind.as_deref(),
        retry: form.retry,
        data: &form.data,
    };
    let request = fanout::PublishRequest::new(mercure::channel(site.id()), update.store());
    publish_request(app, Port::Mercure, site.id(), form.data.len(), request)
        .await
        .map_err(|refused| publish_refused(&refused))?;
    Ok(id)
}

/// A new update's id: `urn:uuid:` and a random (version 4) UUID.
fn uuid_urn() -> String {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = hex::encode(bytes);
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// The answer to a publish the site's checks refused.
fn publish_refused(refused_publish: &Refused) -> Response<Body> {
    let code = match refused_publish {
        Refused::SiteGone(_) => ErrorCode::SiteUnknown,
        Refused::TooLarge { .. } => ErrorCode::PayloadTooLarge,
        Refused::Lagging => ErrorCode::DeliveryLagging,
        Refused::RateLimited { .. } => ErrorCode::RateLimited,
        Refused::Failed(_) => ErrorCode::Unavailable,
    };
    let mut answer = refused(&Refusal::new(code, refused_publish.to_string()));
    if matches!(
        refused_publish,
        Refused::Lagging | Refused::RateLimited { .. }
    ) {
        answer
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(1));
    }
    answer
}

/// A refusal with the headers Mercure clients look for: 401 and 403 say
/// which Bearer error they are (RFC 6750), 405 what the route takes.
fn refused(refusal: &Refusal) -> Response<Body> {
    let mut response = reply::refusal(refusal);
    let status = response.status();
    let headers = response.headers_mut();
    match status {
        StatusCode::UNAUTHORIZED => {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
        }
        StatusCode::FORBIDDEN => {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"insufficient_scope\""),
            );
        }
        StatusCode::METHOD_NOT_ALLOWED => {
            headers.insert(header::ALLOW, HeaderValue::from_static("GET, POST"));
        }
        _ => {}
    }
    response
}

/// Whether `origin` is one the request's site lists in its
/// `allowed_origins` (`push::mercure::listed_origin`, the rule both paths share).
fn origin_listed(app: &App, request: &Request<Incoming>, origin: &HeaderValue) -> bool {
    let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let origin = origin.to_str().ok();
    mercure::listed_origin(app.sessions(), target, origin).is_some()
}

/// CORS: a listed origin ([`origin_listed`]) gets its own name back, with
/// credentials; any other page may read public updates without a cookie,
/// as from any SSE stream of Herald's.
fn with_cors(
    credentials_origin: Option<HeaderValue>,
    mut response: Response<Body>,
) -> Response<Body> {
    let headers = response.headers_mut();
    match credentials_origin {
        Some(origin) => {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
            headers.insert(header::VARY, HeaderValue::from_static("Origin"));
        }
        None => {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
        }
    }
    response
}
