//! `POST /api/publish`: authenticate, check, hand to the engine, answer positions.
//! The channels named in the body are the site's: `public` here is
//! `<site>/public` in the engine.

use std::net::SocketAddr;

use bytes::Bytes;
use fanout::{ChannelName, PublishRequest};
use http_body_util::{BodyExt, Limited};
use hyper::{Method, Request, Response, StatusCode, body::Incoming, header};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{
    Body,
    credentials::{self, Signed},
    idempotency, reply,
    reply::Refusal,
};
use crate::App;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    channel: Option<String>,
    channels: Option<Vec<String>>,
    /// Kept as raw text: the payload is stored and delivered byte for byte.
    data: Option<Box<RawValue>>,
}

pub(crate) async fn handle(
    app: &App,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<Body> {
    if request.method() != Method::POST {
        return reply::method_not_allowed("POST");
    }
    let path_and_query = request
        .uri()
        .path_and_query()
        .map_or("/api/publish", |p| p.as_str())
        .to_string();
    let limits = &app.config().publish;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limits.max_body_bytes as u64) {
        return too_large(app, limits.max_body_bytes);
    }
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, limits.max_body_bytes).collect().await {
        Ok(body) => body.to_bytes(),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            return too_large(app, limits.max_body_bytes);
        }
        Err(error) => {
            return reply::error(StatusCode::BAD_REQUEST, "bad_request", &error.to_string());
        }
    };
    let signed = Signed {
        method: "POST",
        path_and_query: &path_and_query,
        body: &body,
    };
    let authenticated = match credentials::authenticate(app, peer, &parts.headers, signed) {
        Ok(authenticated) => authenticated,
        Err(refusal) => return refusal.into_response(),
    };
    let site = authenticated.site.clone();
    let dedupe = match idempotency::key(&parts.headers) {
        Ok(key) => key,
        Err(refusal) => return refusal.into_response(),
    };
    let max_message_bytes = site.settings().limits.max_message_bytes;
    let batch = match parse(&body, limits.max_channels, max_message_bytes) {
        Ok(batch) => batch,
        Err(refusal) => {
            if refusal.status == StatusCode::PAYLOAD_TOO_LARGE {
                app.sessions().metrics().reject(site.id(), refusal.code);
            }
            return refusal.into_response();
        }
    };
    if let Err(wait) = site.take_publish(batch.len() as u32) {
        app.sessions().metrics().reject(site.id(), "rate_limited");
        let retry_after = wait.as_secs_f64().ceil().max(1.0) as u64;
        let mut response = reply::error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            &format!("the site publishes faster than its publish_rate; retry in {retry_after} s"),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(retry_after));
        return response;
    }
    if let Err(refusal) = authenticated.accept(app) {
        return refusal.into_response();
    }
    let batch: Vec<PublishRequest> = batch
        .into_iter()
        .map(|request| PublishRequest {
            channel: ChannelName::scoped(site.id(), &request.channel),
            data: request.data,
            dedupe: dedupe.clone(),
        })
        .collect();
    match app.fanout().publish(batch.clone()).await {
        Ok(positions) => {
            let results: Vec<_> = batch
                .iter()
                .zip(positions)
                .map(|(request, published)| {
                    serde_json::json!({
                        "channel": request.channel.local(),
                        "epoch": published.position.epoch.to_string(),
                        "offset": published.position.offset,
                    })
                })
                .collect();
            reply::json(
                StatusCode::OK,
                serde_json::json!({ "results": results }).to_string(),
            )
        }
        Err(error) => {
            tracing::warn!(site = site.id(), %error, "publish failed");
            reply::error(
                StatusCode::SERVICE_UNAVAILABLE,
                error.reason(),
                &error.to_string(),
            )
        }
    }
}

/// A body over `publish.max_body_bytes`, refused before it is read, so
/// before anyone knows the site: counted under site "-".
fn too_large(app: &App, limit: usize) -> Response<Body> {
    app.sessions().metrics().reject("-", "payload_too_large");
    reply::error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        &format!("the request body may be at most {limit} bytes"),
    )
}

fn bad(code: &'static str, message: &str) -> Refusal {
    Refusal::bad_request(code, message)
}

fn parse(
    body: &[u8],
    max_channels: usize,
    max_message_bytes: usize,
) -> Result<Vec<PublishRequest>, Refusal> {
    let parsed: PublishBody =
        serde_json::from_slice(body).map_err(|error| match error.classify() {
            serde_json::error::Category::Data => bad("bad_request", &error.to_string()),
            _ => bad("bad_json", &error.to_string()),
        })?;
    let Some(data) = parsed.data else {
        return Err(bad("bad_request", "missing \"data\""));
    };
    let names = match (parsed.channel, parsed.channels) {
        (Some(channel), None) => vec![channel],
        (None, Some(channels)) if !channels.is_empty() => channels,
        (None, Some(_)) => return Err(bad("bad_request", "\"channels\" is empty")),
        _ => {
            return Err(bad(
                "bad_request",
                "give exactly one of \"channel\" or \"channels\"",
            ));
        }
    };
    if names.len() > max_channels {
        return Err(bad(
            "bad_request",
            &format!("at most {max_channels} channels per publish"),
        ));
    }
    if data.get().len() > max_message_bytes {
        return Err(Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("\"data\" may be at most {max_message_bytes} bytes"),
        ));
    }
    let mut channels: Vec<ChannelName> = Vec::with_capacity(names.len());
    for name in &names {
        let channel = ChannelName::new(name).map_err(|e| bad("invalid_channel", &e.to_string()))?;
        if channels.contains(&channel) {
            return Err(bad(
                "bad_request",
                &format!("channel {channel} is listed twice"),
            ));
        }
        channels.push(channel);
    }
    let data = Bytes::copy_from_slice(data.get().as_bytes());
    Ok(channels
        .into_iter()
        .map(|channel| PublishRequest::new(channel, data.clone()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(body: &str) -> Option<String> {
        let refusal = parse(body.as_bytes(), 3, 100).err()?;
        let status = refusal.status.as_u16();
        Some(format!("{status}"))
    }

    #[test]
    fn parses_and_refuses() {
        let ok = parse(br#"{"channel":"a","data":{"x" : 1}}"#, 3, 100)
            .ok()
            .unwrap();
        assert_eq!(ok.len(), 1);
        assert_eq!(&ok[0].data[..], br#"{"x" : 1}"#);
        let many = parse(br#"{"channels":["a","b"],"data":[1]}"#, 3, 100)
            .ok()
            .unwrap();
        assert_eq!(many.len(), 2);
        let cases = [
            ("not json", "400"),
            (r#"{"channel":"a"}"#, "400"),
            (r#"{"data":1}"#, "400"),
            (r#"{"channel":"a","channels":["b"],"data":1}"#, "400"),
            (r#"{"channels":[],"data":1}"#, "400"),
            (r#"{"channels":["a","a"],"data":1}"#, "400"),
            (r#"{"channels":["a","b","c","d"],"data":1}"#, "400"),
            (r#"{"channel":"bad name","data":1}"#, "400"),
            (r#"{"chanel":"a","data":1}"#, "400"),
            (
                r#"{"channel":"a","data":"this string is far longer than the hundred bytes this test allows for one message, so it is refused"}"#,
                "413",
            ),
        ];
        for (body, status) in cases {
            assert_eq!(code(body).as_deref(), Some(status), "{body}");
        }
    }
}
