//! One message published from a compatibility way in (Meteor, STOMP, the
//! Pusher REST API, Mercure): the
//! same checks, pushback and rate limit as `POST /api/publish`, with each
//! refusal worded for the port to pass on in its own protocol's error.

use std::fmt;

use bytes::Bytes;
use fanout::{ChannelKey, ChannelName, PublishRequest, Tags};

use crate::{App, http::pushback};

/// Why nothing was published; its `Display` is the sentence the port sends.
#[derive(Debug)]
pub(crate) enum Refused {
    SiteGone(String),
    TooLarge { max: usize },
    Lagging,
    RateLimited { retry_ms: u128 },
    Failed(fanout::Error),
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SiteGone(site) => {
                write!(f, "Site {site} is not configured; nothing was published")
            }
            Self::TooLarge { max } => {
                write!(
                    f,
                    "Message too large: at most {max} bytes; nothing was published"
                )
            }
            Self::Lagging => f.write_str(
                "Delivery is lagging on this node; nothing was published, retry in a second",
            ),
            Self::RateLimited { retry_ms } => write!(
                f,
                "Publish rate limit reached; nothing was published, retry in {retry_ms} ms"
            ),
            Self::Failed(error) => write!(f, "Publish failed: {error}"),
        }
    }
}

/// The largest message `site` accepts (0 once the site is gone): what a
/// port's line or frame bound follows.
pub(crate) fn max_message_bytes(app: &App, site: &str) -> usize {
    app.sessions()
        .sites()
        .by_id(site)
        .map_or(0, |site| site.settings().limits.max_message_bytes)
}

/// Which compatibility port a publish came through, for the metrics.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Port {
    Meteor,
    Stomp,
    Pusher,
    Mercure,
}

impl Port {
    fn label(self) -> &'static str {
        match self {
            Port::Meteor => "meteor",
            Port::Stomp => "stomp",
            Port::Pusher => "pusher",
            Port::Mercure => "mercure",
        }
    }
}

/// Counts a publish the port refused before it got here (a bad channel
/// name or destination).
pub(crate) fn count_refused(app: &App, port: Port) {
    app.metrics()
        .compat_publishes
        .with_label_values(&[port.label(), "refused"])
        .inc();
}

/// Publishes `text` to `channel` of `site` and counts the result under
/// `port`; answers the message's offset.
pub(crate) async fn publish(
    app: &App,
    port: Port,
    site: &str,
    channel: &ChannelName,
    text: Vec<u8>,
) -> Result<u64, Refused> {
    publish_tagged(app, port, site, channel, Tags::default(), text).await
}

/// [`publish`] with `tags` (a Pusher event's `name`, the socket it skips).
pub(crate) async fn publish_tagged(
    app: &App,
    port: Port,
    site: &str,
    channel: &ChannelName,
    tags: Tags<'_>,
    text: Vec<u8>,
) -> Result<u64, Refused> {
    let data = message_data(text);
    let request = PublishRequest::tagged(ChannelKey::new(site, channel), tags, &data);
    publish_request(app, port, site, data.len(), request).await
}

/// Publishes `request` for `site`, whose message's data (what the site's
/// `max_message_bytes` bounds) is `size` bytes, and counts the result
/// under `port`; answers the message's offset.
pub(crate) async fn publish_request(
    app: &App,
    port: Port,
    site: &str,
    size: usize,
    request: PublishRequest,
) -> Result<u64, Refused> {
    let result = publish_checked(app, site, size, request).await;
    let outcome = if result.is_ok() {
        "published"
    } else {
        "refused"
    };
    app.metrics()
        .compat_publishes
        .with_label_values(&[port.label(), outcome])
        .inc();
    result
}

async fn publish_checked(
    app: &App,
    site: &str,
    size: usize,
    request: PublishRequest,
) -> Result<u64, Refused> {
    let Some(site) = app.sessions().sites().by_id(site) else {
        return Err(Refused::SiteGone(site.to_string()));
    };
    let max = site.settings().limits.max_message_bytes;
    if size > max {
        return Err(Refused::TooLarge { max });
    }
    if pushback::wait_for_delivery(app, site.id()).await.is_err() {
        return Err(Refused::Lagging);
    }
    if let Err(wait) = site.take_publish(1) {
        return Err(Refused::RateLimited {
            retry_ms: wait.as_millis().max(1),
        });
    }
    let channel = request.channel.clone();
    match app.fanout().publish(vec![request]).await {
        Ok(published) => {
            app.accounting()
                .published(site.id(), [channel.name()], size);
            Ok(published.first().map_or(0, |p| p.position.offset))
        }
        Err(error) => {
            tracing::warn!(site = site.id(), %error, "compatibility port publish failed");
            Err(Refused::Failed(error))
        }
    }
}

/// What subscribers get for a message's text: the text itself when it is
/// JSON, any other text as a JSON string.
pub(crate) fn message_data(text: Vec<u8>) -> Bytes {
    if serde_json::from_slice::<serde::de::IgnoredAny>(&text).is_ok() {
        return Bytes::from(text);
    }
    let text = String::from_utf8_lossy(&text);
    Bytes::from(serde_json::Value::String(text.into_owned()).to_string())
}

#[cfg(test)]
mod tests {
    use super::message_data;

    #[test]
    fn json_goes_through_byte_for_byte_and_other_text_as_a_string() {
        let json = br#"{"text":"it's","id":1}"#.to_vec();
        assert_eq!(&message_data(json.clone())[..], &json[..]);
        assert_eq!(
            &message_data(b"hello \"you\"".to_vec())[..],
            br#""hello \"you\"""#
        );
        assert_eq!(&message_data(b"".to_vec())[..], br#""""#);
    }
}
