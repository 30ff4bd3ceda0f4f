//! The listener: binds, accepts, routes each new connection, and shuts down
//! gracefully.
//!
//! Invariants:
//! - With `tls.cert`, a new connection's TLS handshake comes first
//!   (`tls.rs`), under the same deadline and pending cap as a request head,
//!   and everything below sees its plaintext through `wire::Wire`.
//! - Each new connection's first bytes are peeked, not read, once the
//!   socket is readable (`pending.rs`: no polling, a cap on connections not
//!   yet admitted, a deadline for the request head). A request for `/sse`
//!   goes to `push::sse` with the socket, and `GET /ws` to `ws.rs`, which
//!   answers the upgrade itself; anything else goes to hyper, which then
//!   reads the same bytes from the socket itself.
//! - Shutdown first turns `/readyz` to 503 and keeps accepting for
//!   `shutdown.readiness_delay_ms`, so that a load balancer stops sending
//!   new clients before the port closes; then it stops accepting, tells
//!   every WebSocket and SSE client to reconnect after a jittered delay, in
//!   batches, and lets hyper finish its in-flight requests; it waits for all
//!   of that at most the grace period.

mod metrics_listener;
mod pending;
mod tcp;
mod tls;
mod ws;

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
use wire::Wire;

use crate::{
    App,
    config::{Config, EngineKind},
    http,
    metrics::Metrics,
};
use pending::{Dropped, Pending, PendingGate, Route};

/// The longest the engine may take to leave the deployment at shutdown.
const STOP_ENGINE_WITHIN: Duration = Duration::from_secs(3);

/// Clients told to reconnect per batch during shutdown, and the pause between batches.
const SHUTDOWN_BATCH: usize = 500;
const SHUTDOWN_PAUSE: Duration = Duration::from_millis(10);

/// A bound, ready-to-run Herald server.
pub struct Server {
    listener: TcpListener,
    /// The listener of `metrics.listen`, when set.
    metrics_listener: Option<TcpListener>,
    /// The Meteor controller port (`meteor.listen`), when set.
    meteor_listener: Option<TcpListener>,
    /// Its UDP listener (`meteor.udp_listen`), when set.
    meteor_udp: Option<tokio::net::UdpSocket>,
    /// The STOMP publish port (`stomp.listen`), when set.
    stomp_listener: Option<TcpListener>,
    app: App,
}

/// hyper connections in flight, so that shutdown can wait for them.
#[derive(Default)]
struct HttpConnections {
    count: AtomicUsize,
    ended: Notify,
}

/// What every connection task shares.
#[derive(Clone)]
struct Shared {
    app: App,
    stop: watch::Receiver<bool>,
    http_connections: Arc<HttpConnections>,
    pending: Arc<PendingGate>,
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
                    presence_timeout: redis.presence_timeout,
                };
                let redis_metrics = RedisMetrics::register(&registry)?;
                RedisEngine::connect(hub.clone(), settings, fanout_metrics.clone(), redis_metrics)
                    .await
                    .with_context(|| format!("cannot use Redis at {}", redacted(&redis.url)))?
            }
        };
        let timelines = fanout::TimelineSettings {
            shards: config.timeline.shards,
            expander_queue_per_site: config.timeline.expander_queue_per_site,
        };
        let events_hub = hub.clone();
        let fanout = Fanout::start(hub, engine, timelines, fanout_metrics);
        let tracker = push::Tracker::default();
        tokio::spawn(tracker.clone().run_ticker(config.connection.ping_interval));
        let dev_site = config.is_dev_site();
        let site_count = config.sites.len();
        // The site table owns the sites from now on; one copy, not two, of
        // what can be ten thousand sites' settings.
        let sites = sites::Sites::new(std::mem::take(&mut config.sites));
        // Channel events go to the sites' webhooks (docs/compat.md).
        let webhook_metrics = crate::webhooks::WebhookMetrics::register(&registry)?;
        events_hub.set_events(crate::webhooks::Webhooks::start(
            sites.clone(),
            webhook_metrics,
        ));
        let accounting = crate::accounting::Accounting::new(config.accounting.clone(), &registry)?;
        // What reaches connections is counted when accounting is on, and
        // open connections are summed per site each second.
        let traffic = config.accounting.enabled.then(|| {
            tokio::spawn(accounting.clone().sample_connections(sites.clone()));
            Arc::new(accounting.clone()) as Arc<dyn push::TrafficSink>
        });
        let sessions = push::Context::new(
            fanout.clone(),
            config.connection.clone(),
            push_metrics,
            tracker,
            sites,
            traffic,
        );

        let listener = tcp::listen(config.listen, config.listener.reuseport)
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        // Each process keeps a metrics listener of its own: a scrape through
        // a shared port would reach whichever process the kernel picked.
        let metrics_listener = match config.metrics.listen {
            Some(addr) => Some(
                tcp::listen(addr, false)
                    .with_context(|| format!("cannot listen on {addr} (metrics.listen)"))?,
            ),
            None => None,
        };
        log_start(&config, listener.local_addr()?, dev_site, site_count);
        if let Some(metrics_listener) = &metrics_listener {
            tracing::info!(listen = %metrics_listener.local_addr()?, "metrics listener started; the main listener does not serve /metrics");
        }
        let meteor_listener = match &config.meteor {
            Some(meteor) => Some(
                crate::compat::bind(
                    meteor,
                    "meteor.listen",
                    "Meteor controller port listening (no authentication: firewall it)",
                )
                .await?,
            ),
            None => None,
        };
        let meteor_udp = match config.meteor.as_ref().and_then(|m| m.udp_listen) {
            Some(addr) => {
                let socket = tokio::net::UdpSocket::bind(addr).await.map_err(|e| {
                    anyhow::anyhow!("cannot listen on {addr} (meteor.udp_listen): {e}")
                })?;
                tracing::info!(listen = ?socket.local_addr().ok(), "Meteor UDP listener (no authentication, no replies: firewall it)");
                Some(socket)
            }
            None => None,
        };
        let stomp_listener = match &config.stomp {
            Some(stomp) => Some(
                crate::compat::bind(stomp, "stomp.listen", "STOMP publish port listening").await?,
            ),
            None => None,
        };
        // The zero-config dev site's console opens with a secret made up
        // now and logged, so that it works with no setup at all; it still
        // answers loopback only.
        let admin_secret = config.admin_secret.clone().or_else(|| {
            dev_site.then(|| {
                let bytes: [u8; 16] = rand::random();
                bytes.iter().map(|byte| format!("{byte:02x}")).collect()
            })
        });
        if config.admin_secret.is_none()
            && let Some(secret) = &admin_secret
        {
            tracing::info!(
                console = %format_args!(
                    "{}://{}/console#secret={secret}",
                    if config.tls.is_some() { "https" } else { "http" },
                    listener.local_addr()?
                ),
                "the operator console (dev site, loopback only; a new secret each start, or set admin.secret)"
            );
        }
        let app = App::new(
            config,
            fanout,
            sessions,
            registry,
            metrics,
            accounting,
            admin_secret,
        )
        .context("cannot set up TLS with tls.cert and tls.key")?;
        Ok(Server {
            listener,
            metrics_listener,
            meteor_listener,
            meteor_udp,
            stomp_listener,
            app,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        // The listener is bound, so it has an address.
        self.listener
            .local_addr()
            .unwrap_or_else(|_| self.app.config().listen)
    }

    /// The address of the `metrics.listen` listener, when there is one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref()?.local_addr().ok()
    }

    pub fn app(&self) -> &App {
        &self.app
    }

    /// Serves until `shutdown` resolves, then drains within the grace period.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Server {
            listener,
            metrics_listener,
            meteor_listener,
            meteor_udp,
            stomp_listener,
            app,
        } = self;
        let listener_config = app.config().listener.clone();
        if let Some(metrics_listener) = metrics_listener {
            let header_timeout = listener_config.header_timeout;
            tokio::spawn(metrics_listener::serve(
                metrics_listener,
                app.clone(),
                header_timeout,
            ));
        }
        if let (Some(meteor_listener), Some(meteor)) = (meteor_listener, &app.config().meteor) {
            tokio::spawn(crate::compat::meteor::serve(
                meteor_listener,
                meteor_udp,
                app.clone(),
                meteor.clone(),
            ));
        }
        if let (Some(stomp_listener), Some(stomp)) = (stomp_listener, &app.config().stomp) {
            tokio::spawn(crate::compat::stomp::serve(
                stomp_listener,
                app.clone(),
                stomp.clone(),
            ));
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let shared = Shared {
            app: app.clone(),
            stop: stop_rx,
            http_connections: Arc::new(HttpConnections::default()),
            pending: PendingGate::new(
                listener_config.max_pending,
                app.metrics().connections_pending.clone(),
                app.metrics().pending_closed.clone(),
            ),
        };
        accept_until(&listener, &shared, shutdown).await;

        // Not ready from now on, yet still serving: a load balancer takes
        // a few probes to notice, and clients it sends here meanwhile must
        // not find the port closed.
        app.begin_shutdown();
        let delay = app.config().shutdown.readiness_delay;
        if !delay.is_zero() {
            tracing::info!(
                readiness_delay_ms = delay.as_millis() as u64,
                "shutting down: /readyz answers 503; still accepting until the delay is over"
            );
            accept_until(&listener, &shared, tokio::time::sleep(delay)).await;
        }
        drop(listener);

        let grace = app.config().shutdown.grace;
        let jitter = app.config().shutdown.reconnect_jitter;
        let tracker = app.sessions().tracker().clone();
        tracing::info!(
            connections = tracker.count(),
            grace_secs = grace.as_secs_f64(),
            "shutting down: no longer accepting, telling clients to reconnect"
        );
        let _ = stop_tx.send(true);
        let http_connections = shared.http_connections.clone();
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
        // What the node holds for the deployment (presence members) leaves
        // with it, not at its heartbeat's timeout; bounded, as a Redis that
        // does not answer must not keep the process.
        let _ = tokio::time::timeout(STOP_ENGINE_WITHIN, app.fanout().stop()).await;
    }
}

/// Accepts connections, each routed on a task of its own, until `until` resolves.
async fn accept_until(listener: &TcpListener, shared: &Shared, until: impl Future<Output = ()>) {
    tokio::pin!(until);
    loop {
        tokio::select! {
            () = &mut until => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Past the cap the socket is closed here, before a task
                    // or a byte of buffer is spent on it.
                    let Some(pending) = shared.pending.enter() else {
                        continue;
                    };
                    tokio::spawn(route(shared.clone(), stream, peer, pending));
                }
                Err(error) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// Sends a new connection to the SSE code or to hyper, by its request line;
/// on a TLS listener, after its handshake, within the same deadline.
async fn route(shared: Shared, stream: TcpStream, peer: SocketAddr, pending: Pending) {
    let header_timeout = shared.app.config().listener.header_timeout;
    let deadline = tokio::time::Instant::now() + header_timeout;
    let mut stream = match shared.app.tls() {
        None => Wire::Plain(stream),
        Some(certificates) => {
            match tls::handshake(&shared.app, certificates, stream, deadline).await {
                Some(wire) => wire,
                None => return pending.dropped(Dropped::Handshake),
            }
        }
    };
    let route = match tokio::time::timeout_at(deadline, pending::request_line(&mut stream)).await {
        Ok(Ok(route)) => route,
        Ok(Err(why)) => return pending.dropped(why),
        Err(_) => return pending.dropped(Dropped::HeaderTimeout),
    };
    match route {
        Route::Sse => {
            let sessions = shared.app.sessions().clone();
            // The stream runs in a task of its own, so that this task's
            // state (the handshake) is freed once it is answered.
            push::sse::accept(sessions, stream, peer, deadline).await;
            pending.admitted();
        }
        Route::Mercure => {
            let sessions = shared.app.sessions().clone();
            push::mercure::accept(sessions, stream, peer, deadline).await;
            pending.admitted();
        }
        Route::Ws => {
            // The head is read (or the deadline passed) before the place is
            // given back; `accept` spawns the session itself.
            ws::accept(&shared.app, stream, peer, deadline, &pending).await;
        }
        // Boxed: hyper's connection future is ten times the size of the
        // others, and every new connection's task would carry (and copy)
        // room for it.
        Route::Http => Box::pin(serve_http(shared, stream, peer, pending)).await,
    }
}

/// Serves a connection with hyper until it ends, or until shutdown asks it
/// to finish its request in flight. The connection stops counting as
/// pending when its first request head is complete.
async fn serve_http(shared: Shared, stream: Wire, peer: SocketAddr, pending: Pending) {
    let Shared {
        app,
        mut stop,
        http_connections,
        ..
    } = shared;
    http_connections.count.fetch_add(1, Ordering::Relaxed);
    let header_timeout = app.config().listener.header_timeout;
    let service = service_fn(move |request| {
        pending.admitted();
        let app = app.clone();
        async move { Ok::<_, Infallible>(http::handle(app, peer, request).await) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        // A client may send its whole request and close its side (`nc`,
        // scripts): it still gets its answer. A request cut short by the
        // FIN still ends at the header deadline.
        .half_close(true)
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
        history.min_age_secs = config.history.min_age.as_secs(),
        history.max_size = config.history.cap(),
        history.ttl_secs = config.history.ttl.as_secs(),
        sites,
        "herald started"
    );
    if let Some(tls) = &config.tls {
        tracing::info!(
            listen = %addr,
            cert = %tls.cert.display(),
            "TLS: the listener serves https:// and wss:// only; SIGHUP re-reads the certificate"
        );
    }
    if config.listener.reuseport {
        tracing::info!(
            listen = %addr,
            "listener.reuseport: other herald processes may listen on this port too, and the \
             kernel spreads new connections over all of them"
        );
        if config.metrics.listen.is_none() {
            tracing::warn!(
                "listener.reuseport without metrics.listen: /metrics on the shared port answers \
                 for whichever process the kernel picked; give each process a metrics.listen \
                 address of its own"
            );
        }
    }
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
