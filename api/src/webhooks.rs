//! Pusher webhooks: a site with a `webhook_url` is told of its channels'
//! events (`fanout::events`: `channel_occupied`, `channel_vacated`,
//! `member_added`, `member_removed`) by signed POSTs, as Pusher sends them,
//! so that a Laravel or Pusher app's webhook endpoint works unchanged
//! (docs/compat.md).
//!
//! - **Never in the way of delivery.** The engines hand events over with
//!   locks held: [`Webhooks::event`] only tries a bounded queue, and an
//!   event that finds it full is dropped and counted.
//! - **Batched.** One task takes what the queue holds for up to
//!   [`BATCH_WINDOW`], and sends each site's events in one POST (at most
//!   [`MAX_EVENTS_PER_POST`] each): `{"time_ms":…,"events":[{"name":…,
//!   "channel":…,"user_id":…}]}`, with `X-Pusher-Key` (the site's key) and
//!   `X-Pusher-Signature` (the hex HMAC-SHA256 of the body under the site's
//!   secret).
//! - **Retried.** A POST that fails (no connection, no answer within
//!   [`POST_TIMEOUT`], a status other than 2xx) is sent again after 1, 2,
//!   4, 8 and 16 s, then given up and counted. At most [`MAX_IN_FLIGHT`]
//!   POSTs run at once; retries wait their turn, so a dead receiver holds
//!   up only its own site's batches, and only up to that bound.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use fanout::{
    ChannelKey,
    events::{ChannelEvent, ChannelEvents},
};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Uri, header};
use hyper_util::rt::TokioIo;
use prometheus::{IntCounterVec, Opts, Registry};
use serde_json::{Value, json};
use sites::{Sites, signature};
use tokio::{
    net::TcpStream,
    sync::{Semaphore, mpsc},
};

/// How long events gather before they are sent.
const BATCH_WINDOW: Duration = Duration::from_millis(100);
/// The most events in one POST (Pusher sends up to 100).
const MAX_EVENTS_PER_POST: usize = 100;
/// Events waiting to be sent, all sites together; past it they are dropped.
const QUEUE: usize = 65_536;
/// POSTs running at once, retries included.
const MAX_IN_FLIGHT: usize = 64;
/// How long one POST may take, connection included.
const POST_TIMEOUT: Duration = Duration::from_secs(5);
/// The pauses before each retry.
const RETRIES: [Duration; 5] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(16),
];

/// The webhook sender: the [`ChannelEvents`] sink the engines raise
/// events into.
pub(crate) struct Webhooks {
    sites: Sites,
    queue: mpsc::Sender<(Box<str>, Value)>,
    metrics: WebhookMetrics,
}

/// Webhook events, by outcome.
#[derive(Clone)]
pub(crate) struct WebhookMetrics {
    /// `sent`, `dropped` (the queue was full), `failed` (every retry failed).
    events: IntCounterVec,
    /// POSTs, by result: `ok`, `retried`, `failed`.
    posts: IntCounterVec,
}

impl WebhookMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let events = IntCounterVec::new(
            Opts::new(
                "herald_webhook_events_total",
                "Webhook events, by result: sent, dropped (queue full), failed (every retry failed).",
            ),
            &["result"],
        )?;
        registry.register(Box::new(events.clone()))?;
        let posts = IntCounterVec::new(
            Opts::new(
                "herald_webhook_posts_total",
                "Webhook POSTs, by result: ok, retried (failed, tried again), failed (given up).",
            ),
            &["result"],
        )?;
        registry.register(Box::new(posts.clone()))?;
        Ok(Self { events, posts })
    }
}

impl Webhooks {
    /// The sender, with its batching task started on the current runtime.
    pub fn start(sites: Sites, metrics: WebhookMetrics) -> Arc<Self> {
        let (queue, events) = mpsc::channel(QUEUE);
        tokio::spawn(run(sites.clone(), events, metrics.clone()));
        Arc::new(Self {
            sites,
            queue,
            metrics,
        })
    }
}

impl ChannelEvents for Webhooks {
    fn wants(&self, site: &str) -> bool {
        self.sites
            .by_id(site)
            .is_some_and(|site| site.settings().webhook_url.is_some())
    }

    fn event(&self, channel: &ChannelKey, event: ChannelEvent) {
        let name = channel.name();
        let body = match event {
            ChannelEvent::Occupied => json!({"name": "channel_occupied", "channel": name}),
            ChannelEvent::Vacated => json!({"name": "channel_vacated", "channel": name}),
            ChannelEvent::MemberAdded(user) => {
                json!({"name": "member_added", "channel": name, "user_id": &*user})
            }
            ChannelEvent::MemberRemoved(user) => {
                json!({"name": "member_removed", "channel": name, "user_id": &*user})
            }
        };
        if self.queue.try_send((channel.site().into(), body)).is_err() {
            self.metrics.events.with_label_values(&["dropped"]).inc();
        }
    }
}

/// Gathers events for [`BATCH_WINDOW`] and sends each site's.
async fn run(sites: Sites, mut events: mpsc::Receiver<(Box<str>, Value)>, metrics: WebhookMetrics) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(first) = events.recv().await {
        let mut batches: BTreeMap<Box<str>, Vec<Value>> = BTreeMap::new();
        let deadline = tokio::time::Instant::now() + BATCH_WINDOW;
        let mut next = Some(first);
        while let Some((site, event)) = next.take() {
            batches.entry(site).or_default().push(event);
            next = tokio::time::timeout_at(deadline, events.recv())
                .await
                .ok()
                .flatten();
        }
        for (site_id, events) in batches {
            let Some(site) = sites.by_id(&site_id) else {
                continue;
            };
            let settings = site.settings();
            let (Some(url), Some(secret)) = (&settings.webhook_url, settings.secrets.first())
            else {
                continue;
            };
            for chunk in events.chunks(MAX_EVENTS_PER_POST) {
                let time_ms = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                let body = json!({"time_ms": time_ms, "events": chunk}).to_string();
                let post = Post {
                    url: url.clone(),
                    key: settings.key.clone(),
                    signature: signature::sign(secret, &[body.as_bytes()]),
                    body: Bytes::from(body),
                    events: chunk.len() as u64,
                };
                let permit = in_flight.clone().acquire_owned().await;
                let metrics = metrics.clone();
                tokio::spawn(async move {
                    post.send_with_retries(&metrics).await;
                    drop(permit);
                });
            }
        }
    }
}

/// One signed POST of a batch.
struct Post {
    url: String,
    key: String,
    signature: String,
    body: Bytes,
    events: u64,
}

impl Post {
    async fn send_with_retries(&self, metrics: &WebhookMetrics) {
        let mut pauses = RETRIES.iter();
        loop {
            let outcome = tokio::time::timeout(POST_TIMEOUT, self.send()).await;
            let why = match outcome {
                Ok(Ok(())) => {
                    metrics.posts.with_label_values(&["ok"]).inc();
                    metrics
                        .events
                        .with_label_values(&["sent"])
                        .inc_by(self.events);
                    return;
                }
                Ok(Err(why)) => why,
                Err(_) => format!("no answer within {POST_TIMEOUT:?}"),
            };
            let Some(pause) = pauses.next() else {
                metrics.posts.with_label_values(&["failed"]).inc();
                metrics
                    .events
                    .with_label_values(&["failed"])
                    .inc_by(self.events);
                tracing::warn!(url = %self.url, events = self.events, why, "webhook given up after its retries");
                return;
            };
            metrics.posts.with_label_values(&["retried"]).inc();
            tracing::debug!(url = %self.url, why, retry_in = ?pause, "webhook failed; retrying");
            tokio::time::sleep(*pause).await;
        }
    }

    async fn send(&self) -> Result<(), String> {
        let uri: Uri = self.url.parse().map_err(|e| format!("{e}"))?;
        let host = uri.host().ok_or("no host")?.to_string();
        let port = uri.port_u16().unwrap_or(80);
        let stream = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(connection);
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let authority = uri.authority().map_or(host.clone(), |a| a.to_string());
        let request = Request::post(path)
            .header(header::HOST, authority)
            .header(header::CONTENT_TYPE, "application/json")
            .header("X-Pusher-Key", &self.key)
            .header("X-Pusher-Signature", &self.signature)
            .body(Full::new(self.body.clone()))
            .map_err(|e| format!("request: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("send: {e}"))?;
        let status = response.status();
        // Read to the end, so that the connection closes cleanly.
        let _ = response.into_body().collect().await;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("status {status}"))
        }
    }
}
