//! The listener: binds, accepts, routes each new connection, and shuts down
//! gracefully.
//!
//! Invariants:
//! - Each new connection's first bytes are peeked, not read. A request for
//!   `/sse` goes to `push::sse` with the socket; anything else goes to hyper,
//!   which then reads the same bytes from the socket itself.
//! - Shutdown stops accepting first, then tells every WebSocket and SSE
//!   client to reconnect after a jittered delay, in batches, and lets hyper
//!   finish its in-flight requests; it waits for all of it at most the grace
//!   period.

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use fanout::{Engine, Fanout, Hub, MemoryEngine, RedisConfig, RedisEngine, RedisMetrics};
use hyper::{server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::Registry;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Notify, watch},
};

use crate::{
    App,
    config::{Config, EngineKind},
    http,
    metrics::Metrics,
};

/// Pending connections the kernel may queue (it caps this at `net.core.somaxconn`).
const LISTEN_BACKLOG: u32 = 4096;
/// How long a new connection may take to send the start of its request.
const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(30);
/// hyper's limit for a complete request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Clients told to reconnect per batch during shutdown, and the pause between batches.
const SHUTDOWN_BATCH: usize = 500;
const SHUTDOWN_PAUSE: Duration = Duration::from_millis(10);

/// A bound, ready-to-run Herald server.
pub struct Server {
    listener: TcpListener,
    app: App,
}

/// hyper connections in flight, so that shutdown can wait for them.
#[derive(Default)]
struct HttpConnections {
    count: AtomicUsize,
    ended: Notify,
}

impl Server {
    /// Builds the engine, hub and sessions from `config` and binds the listener.
    pub async fn bind(mut config: Config) -> anyhow::Result<Server> {
        let registry = Registry::new();
        let fanout_metrics = fanout::Metrics::register(&registry)?;
        let push_metrics = push::Metrics::register(&registry)?;
        let metrics = Metrics::register(&registry)?;

        let hub = Hub::new(fanout_metrics.clone());
        let engine: Arc<dyn Engine> = match &config.engine {
            EngineKind::Memory => {
                MemoryEngine::start(hub.clone(), config.history, fanout_metrics.clone())
            }
            EngineKind::Redis(redis) => {
                let settings = RedisConfig {
                    url: redis.url.clone(),
                    prefix: redis.prefix.clone(),
                    partitions: redis.partitions,
                    linger: redis.linger,
                    command_timeout: redis.command_timeout,
                    history: config.history,
                };
                let redis_metrics = RedisMetrics::register(&registry)?;
                RedisEngine::connect(hub.clone(), settings, fanout_metrics.clone(), redis_metrics)
                    .await
                    .with_context(|| format!("cannot use Redis at {}", redacted(&redis.url)))?
            }
        };
        let fanout = Fanout::start(hub, engine, config.timeline.shards, fanout_metrics);
        let tracker = push::Tracker::default();
        tokio::spawn(tracker.clone().run_ticker(config.connection.ping_interval));
        let dev_site = config.is_dev_site();
        let site_count = config.sites.len();
        // The site table owns the sites from now on; one copy, not two, of
        // what can be ten thousand sites' settings.
        let sites = sites::Sites::new(std::mem::take(&mut config.sites));
        let sessions = push::Context::new(
            fanout.clone(),
            config.connection.clone(),
            push_metrics,
            tracker,
            sites,
        );

        let listener =
            listen(config.listen).with_context(|| format!("cannot listen on {}", config.listen))?;
        log_start(&config, listener.local_addr()?, dev_site, site_count);
        let app = App::new(config, fanout, sessions, registry, metrics);
        Ok(Server { listener, app })
    }

    pub fn local_addr(&self) -> SocketAddr {
        // The listener is bound, so it has an address.
        self.listener
            .local_addr()
            .unwrap_or_else(|_| self.app.config().listen)
    }

    pub fn app(&self) -> &App {
        &self.app
    }

    /// Serves until `shutdown` resolves, then drains within the grace period.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Server { listener, app } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let http_connections = Arc::new(HttpConnections::default());
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let task = route(app.clone(), stream, peer, stop_rx.clone(), http_connections.clone());
                        tokio::spawn(task);
                    }
                    Err(error) => {
                        // Usually out of file descriptors: back off instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
        drop(listener);
        app.begin_shutdown();
        let grace = app.config().shutdown.grace;
        let jitter = app.config().shutdown.reconnect_jitter;
        let tracker = app.sessions().tracker().clone();
        tracing::info!(
            connections = tracker.count(),
            grace_secs = grace.as_secs_f64(),
            "shutting down: no longer accepting, telling clients to reconnect"
        );
        let _ = stop_tx.send(true);
        let drain = async {
            app.sessions()
                .shut_down_all(jitter, SHUTDOWN_BATCH, SHUTDOWN_PAUSE)
                .await;
            tracker.drained().await;
            loop {
                let ended = http_connections.ended.notified();
                if http_connections.count.load(Ordering::Relaxed) == 0 {
                    break;
                }
                ended.await;
            }
        };
        match tokio::time::timeout(grace, drain).await {
            Ok(()) => tracing::info!("all connections drained"),
            Err(_) => tracing::warn!(
                remaining = tracker.count() + http_connections.count.load(Ordering::Relaxed),
                "grace period over; dropping the remaining connections"
            ),
        }
    }
}

/// Binds the listening socket with a backlog that absorbs reconnect storms:
/// the usual 128 overflows when a few hundred clients come back at once, and
/// each overflowed client waits a whole second for its SYN to be retried.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // A restarted Herald must bind its port while the old connections linger in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Sends a new connection to the SSE code or to hyper, by its first bytes.
async fn route(
    app: App,
    stream: TcpStream,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
    http_connections: Arc<HttpConnections>,
) {
    let Some(is_sse) = peek_is_sse(&stream).await else {
        return;
    };
    if is_sse {
        if let Some(session) = push::sse::accept(app.sessions().clone(), stream, peer).await {
            // The stream runs in a task of its own, so that this task's
            // state (the handshake) is freed now.
            tokio::spawn(session);
        }
        return;
    }
    http_connections.count.fetch_add(1, Ordering::Relaxed);
    let service = service_fn(move |request| {
        let app = app.clone();
        async move { Ok::<_, Infallible>(http::handle(app, peer, request).await) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = stop.changed() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(client.addr = %peer, %error, "HTTP connection ended with an error");
    }
    http_connections.count.fetch_sub(1, Ordering::Relaxed);
    http_connections.ended.notify_waiters();
}

/// Peeks at the request line. `None` when the client hung up or sent
/// nothing in time.
async fn peek_is_sse(stream: &TcpStream) -> Option<bool> {
    // "OPTIONS /sse?" is the longest prefix that decides the route.
    let mut head = [0u8; 16];
    let peek = async {
        loop {
            let seen = stream.peek(&mut head).await.ok()?;
            if seen == 0 {
                return None;
            }
            if seen == head.len() || head[..seen].contains(&b'\n') {
                return Some(push::sse::is_sse_request(&head[..seen]));
            }
            // Fewer bytes than a request line: peeking again at once would
            // see the same bytes, so give the rest a moment to arrive.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(FIRST_BYTES_TIMEOUT, peek)
        .await
        .ok()
        .flatten()
}

/// A Redis URL without its credentials (user info, and Sentinel passwords
/// in the query), for logs and error messages.
fn redacted(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut out = match (base.split_once("://"), base.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://***{}", &base[at..]),
        _ => base.to_string(),
    };
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((key, _)) if key.to_ascii_lowercase().contains("password") => {
                    format!("{key}=***")
                }
                _ => param.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

fn log_start(config: &Config, addr: SocketAddr, dev_site: bool, sites: usize) {
    let engine = match &config.engine {
        EngineKind::Memory => "memory".to_string(),
        EngineKind::Redis(redis) => format!("redis {}", redacted(&redis.url)),
    };
    tracing::info!(
        listen = %addr,
        engine,
        history.size = config.history.size,
        history.ttl_secs = config.history.ttl.as_secs(),
        sites,
        "herald started"
    );
    if dev_site {
        let networks: Vec<String> = config
            .publish
            .trusted_networks
            .iter()
            .map(ToString::to_string)
            .collect();
        tracing::warn!(
            trusted_networks = networks.join(","),
            "DEV SITE: no publish secret is set. Anyone connecting from the trusted networks can \
             publish without credentials, and everyone else is refused; with no secret there are \
             no tokens, so no channel rules either (user:, replies: and private- channels are \
             open). Configure [[sites]] or set publish.secret (HERALD_PUBLISH_SECRET) before \
             letting anything but this machine connect."
        );
        if !addr.ip().is_loopback() {
            tracing::warn!(
                listen = %addr,
                "DEV SITE on a non-loopback address: clients from the network can subscribe to \
                 every channel"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_credentials() {
        assert_eq!(
            super::redacted("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(
            super::redacted("redis://:secret@10.0.0.1:6379/0"),
            "redis://***@10.0.0.1:6379/0"
        );
        assert_eq!(
            super::redacted("redis-sentinel://u:p@h:26379?sentinelServiceName=m"),
            "redis-sentinel://***@h:26379?sentinelServiceName=m"
        );
        assert_eq!(
            super::redacted(
                "redis-sentinel://h:26379?sentinelServiceName=m&sentinelPassword=s3&node=h2:26379"
            ),
            "redis-sentinel://h:26379?sentinelServiceName=m&sentinelPassword=***&node=h2:26379"
        );
    }
}
