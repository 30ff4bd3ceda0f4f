//! `POST /api/publish`: authenticate, check, hand to the engine, answer positions.
//! The channels named in the body are the site's: `public` here is
//! `<site>/public` in the engine.

use std::net::SocketAddr;

use bytes::Bytes;
use fanout::{ChannelKey, ChannelName, PublishRequest};
use hyper::{Method, Request, Response, StatusCode, body::Incoming};
use serde::Deserialize;
use serde_json::value::RawValue;

use push::{ErrorCode, Refusal};

use super::{Body, app_request, pushback, reply};
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
    let max_body = app.config().publish.max_body_bytes;
    let request = match app_request::read(app, peer, request, max_body).await {
        Ok(request) => request,
        Err(answer) => return answer,
    };
    let site = request.site().clone();
    let max_message_bytes = site.settings().limits.max_message_bytes;
    let max_channels = app.config().publish.max_channels;
    let parsed = match parse(&request.body, max_channels, max_message_bytes) {
        Ok(parsed) => parsed,
        Err(refusal) => {
            if refusal.code == ErrorCode::PayloadTooLarge {
                app.sessions().metrics().reject(site.id(), refusal.code);
            }
            return reply::refusal(&refusal);
        }
    };
    // Before the publish bucket and the signature's claim: a publish pushed
    // back may be sent again as it is.
    if let Err(answer) = pushback::wait_for_delivery(app, site.id()).await {
        return answer;
    }
    if let Err(wait) = site.take_publish(parsed.channels.len() as u32) {
        return app_request::rate_limited(app, &site, wait, "this publish");
    }
    if let Err(refusal) = request.authenticated.accept(app).await {
        return reply::refusal(&refusal);
    }
    let batch: Vec<PublishRequest> = parsed
        .channels
        .iter()
        .map(|name| PublishRequest {
            channel: ChannelKey::new(site.id(), name),
            data: parsed.data.clone(),
            dedupe: request.dedupe.clone(),
        })
        .collect();
    match app.fanout().publish(batch.clone()).await {
        Ok(positions) => {
            app.accounting().published(
                site.id(),
                parsed.channels.iter().map(|channel| channel.as_str()),
                parsed.data.len(),
            );
            let results: Vec<_> = batch
                .iter()
                .zip(positions)
                .map(|(request, published)| {
                    serde_json::json!({
                        "channel": request.channel.name(),
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
            reply::refusal(&Refusal::from(error))
        }
    }
}

/// A publish body, checked: the site's channels and the payload they all get.
struct Parsed {
    channels: Vec<ChannelName>,
    data: Bytes,
}

fn parse(body: &[u8], max_channels: usize, max_message_bytes: usize) -> Result<Parsed, Refusal> {
    let parsed: PublishBody =
        serde_json::from_slice(body).map_err(|error| match error.classify() {
            serde_json::error::Category::Data => {
                Refusal::new(ErrorCode::BadRequest, error.to_string())
            }
            _ => Refusal::new(ErrorCode::BadJson, error.to_string()),
        })?;
    let Some(data) = parsed.data else {
        return Err(Refusal::new(ErrorCode::BadRequest, "missing \"data\""));
    };
    let names = match (parsed.channel, parsed.channels) {
        (Some(channel), None) => vec![channel],
        (None, Some(channels)) if !channels.is_empty() => channels,
        (None, Some(_)) => {
            return Err(Refusal::new(ErrorCode::BadRequest, "\"channels\" is empty"));
        }
        _ => {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                "give exactly one of \"channel\" or \"channels\"",
            ));
        }
    };
    if names.len() > max_channels {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            format!("at most {max_channels} channels per publish"),
        ));
    }
    if data.get().len() > max_message_bytes {
        return Err(Refusal::new(
            ErrorCode::PayloadTooLarge,
            format!("\"data\" may be at most {max_message_bytes} bytes"),
        ));
    }
    let mut channels: Vec<ChannelName> = Vec::with_capacity(names.len());
    for name in &names {
        let channel = ChannelName::new(name)
            .map_err(|e| Refusal::new(ErrorCode::InvalidChannel, e.to_string()))?;
        if channels.contains(&channel) {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                format!("channel {channel} is listed twice"),
            ));
        }
        channels.push(channel);
    }
    let data = Bytes::copy_from_slice(data.get().as_bytes());
    Ok(Parsed { channels, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(body: &str) -> Option<String> {
        let refusal = parse(body.as_bytes(), 3, 100).err()?;
        let status = refusal.code.http_status();
        Some(format!("{status}"))
    }

    #[test]
    fn parses_and_refuses() {
        let ok = parse(br#"{"channel":"a","data":{"x" : 1}}"#, 3, 100)
            .ok()
            .unwrap();
        assert_eq!(ok.channels.len(), 1);
        assert_eq!(&ok.data[..], br#"{"x" : 1}"#);
        let many = parse(br#"{"channels":["a","b"],"data":[1]}"#, 3, 100)
            .ok()
            .unwrap();
        assert_eq!(many.channels.len(), 2);
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
