//! What is measured: Herald or Nchan (presets), or any server described by
//! URL templates, and the processes whose CPU and memory are sampled.
//!
//! Templates use `{addr}` (a node's `host:port`), `{channel}` and, in the
//! publish body, `{payload}` (the JSON payload with its timestamp).

use std::path::PathBuf;

use anyhow::bail;
use serde::{Deserialize, Serialize};

use crate::{
    cert::Certs,
    cpus::Pinning,
    nchan::{Nchan, Site},
    redis::RedisServer,
    server::{Server, Stop},
};

/// A known server with its URL scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    Herald,
    Nchan,
}

impl Preset {
    pub fn name(self) -> &'static str {
        match self {
            Preset::Herald => "herald",
            Preset::Nchan => "nchan",
        }
    }
}

/// How a subscriber learns that its subscription is live, and how it resumes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Protocol {
    /// Herald's native protocol: `welcome`, then `subscribed` (after the
    /// subscribe frame when there is one); resume with `since` (in the
    /// WebSocket URL, or in the subscribe frame) or `Last-Event-ID` (SSE).
    Herald,
    /// The URL names the channel and the subscription is live once the
    /// response head has arrived (Nchan); resume with `Last-Event-ID` (SSE).
    Plain,
    /// The Pusher Channels protocol (Herald's `/app/<key>`):
    /// `pusher:connection_established`, then `pusher:subscribe` and
    /// `pusher_internal:subscription_succeeded`; a message's data is a JSON
    /// string. No resume.
    Pusher,
}

/// The requests a benchmark makes, as templates.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Templates {
    pub protocol: Protocol,
    pub ws_url: String,
    /// A text frame sent after the WebSocket handshake, if the protocol
    /// subscribes by frame (Herald can; its preset subscribes in the URL).
    pub ws_subscribe: Option<String>,
    pub sse_url: String,
    /// Long-poll: Herald's `/poll` (the cursor is added to its query),
    /// or Nchan's long-poll subscriber location.
    pub poll_url: String,
    pub publish_method: String,
    pub publish_url: String,
    pub publish_body: String,
    /// Channel names: one shared channel, and the per-user channel pattern (`{i}` = user number).
    pub shared_channel: String,
    pub user_channel: String,
    /// The CA (PEM) that `wss://` and `https://` clients trust: the one the
    /// bench made for the run (`--tls`), or `--tls-ca`.
    #[serde(default)]
    pub ca: Option<PathBuf>,
}

impl Templates {
    pub fn preset(preset: Preset) -> Templates {
        match preset {
            Preset::Herald => Templates {
                protocol: Protocol::Herald,
                // Subscribed in the URL, as Nchan does: no frame to send and
                // none to wait for before the subscription is live.
                ws_url: "ws://{addr}/ws?channel={channel}".into(),
                ws_subscribe: None,
                sse_url: "http://{addr}/sse?channel={channel}".into(),
                poll_url: "http://{addr}/poll?channel={channel}".into(),
                publish_method: "POST".into(),
                publish_url: "http://{addr}/api/publish".into(),
                publish_body: r#"{"channel":"{channel}","data":{payload}}"#.into(),
                shared_channel: "bench".into(),
                user_channel: "user:{i}".into(),
                ca: None,
            },
            Preset::Nchan => Templates {
                protocol: Protocol::Plain,
                ws_url: "ws://{addr}/sub/{channel}".into(),
                ws_subscribe: None,
                sse_url: "http://{addr}/sub/{channel}".into(),
                poll_url: "http://{addr}/poll/{channel}".into(),
                publish_method: "POST".into(),
                publish_url: "http://{addr}/pub/{channel}".into(),
                publish_body: "{payload}".into(),
                shared_channel: "bench".into(),
                user_channel: "user:{i}".into(),
                ca: None,
            },
        }
    }

    pub fn user_channel(&self, user: usize) -> String {
        self.user_channel.replace("{i}", &user.to_string())
    }
}

/// Fills `{addr}` and `{channel}` in a template.
pub fn fill(template: &str, addr: &str, channel: &str) -> String {
    template
        .replace("{addr}", addr)
        .replace("{channel}", channel)
}

/// Command-line options that choose and describe the target.
#[derive(clap::Args, Clone, Debug)]
pub struct TargetArgs {
    /// The server to measure (the bench starts it itself).
    #[arg(long, value_enum, default_value_t = Preset::Herald)]
    pub target: Preset,
    /// Measure an already running server at this `host:port` (on 127.0.0.0/8)
    /// instead of starting one; give its PIDs with --server-pid.
    #[arg(long)]
    pub addr: Option<String>,
    /// PIDs to sample when --addr is given (repeat for nginx master and workers).
    #[arg(long)]
    pub server_pid: Vec<u32>,
    /// The herald binary (default: `herald` next to this binary).
    #[arg(long)]
    pub herald: Option<PathBuf>,
    /// Herald nodes to start; more than one needs a shared engine (Redis).
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
    /// Extra environment for herald, `KEY=VALUE` (repeatable), e.g. HERALD_ENGINE=redis.
    #[arg(long)]
    pub herald_env: Vec<String>,
    /// Start a Redis of the bench's own and run every Herald node on the Redis
    /// engine (with --nodes: a cluster run). Redis' RSS and CPU count as the server's.
    #[arg(long)]
    pub redis: bool,
    /// Start every Herald node on one port with `--reuseport` (needs --redis):
    /// the kernel spreads the clients over the nodes, each under its own
    /// open-files limit. Each node serves /metrics on a port of its own.
    #[arg(long, requires = "redis")]
    pub reuseport: bool,
    /// Where Nchan's private nginx prefix folders go.
    #[arg(long, default_value = "/tmp/herald-bench")]
    pub work_dir: PathBuf,
    /// Herald's WebSocket clients speak the Pusher protocol (`/app/<key>` of
    /// the dev site, `pusher:subscribe`) instead of the native one.
    #[arg(long)]
    pub pusher: bool,
    /// Herald's SSE clients subscribe to the Mercure hub
    /// (`/.well-known/mercure?topic=<channel>` of the dev site) instead of
    /// `/sse`: idle memory per Mercure subscriber against native ones. The
    /// `idle` scenario on `--transport sse` only, since publishes go to
    /// `/api/publish`, which the hub's subscribers do not hear.
    #[arg(long, conflicts_with = "pusher")]
    pub mercure: bool,
    /// Subscribers speak TLS (`wss://`, `https://`; WebSocket and SSE). The
    /// bench makes a CA and a certificate for localhost and 127.0.0.1 under
    /// --work-dir and starts the server with them: Herald with
    /// `HERALD_TLS_CERT` and `HERALD_TLS_KEY`, Nchan with `listen … ssl`.
    #[arg(long)]
    pub tls: bool,
    /// Herald behind a private nginx (one worker) that terminates TLS and
    /// proxies to Herald's plain port, as a deployment without native TLS
    /// runs it; subscribers speak TLS to nginx. Its processes count as the
    /// server's, and the idle scenario reports each part.
    #[arg(long, conflicts_with_all = ["tls", "reuseport"])]
    pub tls_proxy: bool,
    /// With --addr and --tls: the CA (PEM file) the clients trust.
    #[arg(long, requires = "tls")]
    pub tls_ca: Option<PathBuf>,
    /// Override the WebSocket subscribe URL template.
    #[arg(long)]
    pub ws_url: Option<String>,
    /// Override the frame sent after the WebSocket handshake ("" for none).
    #[arg(long)]
    pub ws_subscribe: Option<String>,
    /// Override the SSE subscribe URL template.
    #[arg(long)]
    pub sse_url: Option<String>,
    /// Override the long-poll URL template.
    #[arg(long)]
    pub poll_url: Option<String>,
    /// Override the publish method.
    #[arg(long)]
    pub publish_method: Option<String>,
    /// Override the publish URL template.
    #[arg(long)]
    pub publish_url: Option<String>,
    /// Override the publish body template (`{payload}` is the JSON payload).
    #[arg(long)]
    pub publish_body: Option<String>,
    /// Which CPUs the servers started here, and the bench, run on.
    #[command(flatten)]
    pub pinning: Pinning,
}

impl TargetArgs {
    pub fn for_preset(&self, preset: Preset) -> TargetArgs {
        TargetArgs {
            target: preset,
            ..self.clone()
        }
    }

    pub fn templates(&self) -> Templates {
        let mut t = Templates::preset(self.target);
        if self.pusher && self.target == Preset::Herald {
            t.protocol = Protocol::Pusher;
            // The dev site's key is `default`.
            t.ws_url = "ws://{addr}/app/default?protocol=7".into();
            t.ws_subscribe =
                Some(r#"{"event":"pusher:subscribe","data":{"channel":"{channel}"}}"#.into());
        }
        if self.mercure && self.target == Preset::Herald {
            // Live once the response head has arrived: the hub sends no
            // event of its own.
            t.protocol = Protocol::Plain;
            t.sse_url = "http://{addr}/.well-known/mercure?topic={channel}".into();
        }
        if self.tls || (self.tls_proxy && self.target == Preset::Herald) {
            for url in [&mut t.ws_url, &mut t.sse_url, &mut t.poll_url] {
                *url = with_tls_scheme(url);
            }
            t.ca = self.tls_ca.clone();
        }
        if let Some(v) = &self.ws_url {
            t.ws_url = v.clone();
        }
        if let Some(v) = &self.ws_subscribe {
            t.ws_subscribe = (!v.is_empty()).then(|| v.clone());
        }
        if let Some(v) = &self.sse_url {
            t.sse_url = v.clone();
        }
        if let Some(v) = &self.poll_url {
            t.poll_url = v.clone();
        }
        if let Some(v) = &self.publish_method {
            t.publish_method = v.clone();
        }
        if let Some(v) = &self.publish_url {
            t.publish_url = v.clone();
        }
        if let Some(v) = &self.publish_body {
            t.publish_body = v.clone();
        }
        t
    }

    /// Whether every node sees every message (one node, or a shared engine).
    pub fn shared_delivery(&self) -> bool {
        self.nodes <= 1
            || self.redis
            || self.addr.is_some()
            || self
                .herald_env
                .iter()
                .any(|kv| kv.starts_with("HERALD_ENGINE=") && !kv.ends_with("=memory"))
    }
}

/// A path as the text an environment variable carries.
fn path_text(path: &std::path::Path) -> String {
    path.to_string_lossy().into_owned()
}

/// `ws://…` as `wss://…` and `http://…` as `https://…`; anything else as it is.
fn with_tls_scheme(url: &str) -> String {
    if let Some(rest) = url.strip_prefix("ws://") {
        format!("wss://{rest}")
    } else if let Some(rest) = url.strip_prefix("http://") {
        format!("https://{rest}")
    } else {
        url.to_string()
    }
}

/// The running server(s) of one measurement.
pub struct Running {
    pub preset: Preset,
    pub templates: Templates,
    /// One `host:port` per node, or the one port they share
    /// (`--reuseport`); clients are spread over them.
    pub addrs: Vec<String>,
    /// Where each Herald node serves `/metrics`: its own address, or with
    /// `--reuseport` a metrics listener of its own (the shared port would
    /// answer for whichever node the kernel picked).
    pub metrics_addrs: Vec<String>,
    /// The processes whose RSS and CPU are sampled.
    pub pids: Vec<u32>,
    /// With more than one kind of process serving (nginx in front of
    /// Herald, `--tls-proxy`), each kind's name and PIDs, so that memory is
    /// reported by part as well as in all; empty otherwise.
    pub parts: Vec<(&'static str, Vec<u32>)>,
    /// The run's certificates (`--tls`, `--tls-proxy`): held only so that
    /// their files go when the run does.
    _certs: Option<Certs>,
    handle: Handle,
}

enum Handle {
    /// Herald's nodes, the bench's Redis, and the TLS proxy in front.
    Herald(Vec<Server>, Option<Box<RedisServer>>, Option<Box<Nchan>>),
    Nchan(Box<Nchan>),
    External,
}

impl Running {
    /// The port and pid of the Redis this run started, if it started one.
    pub fn redis(&self) -> Option<(u16, u32)> {
        match &self.handle {
            Handle::Herald(_, Some(redis), _) => Some((redis.port, redis.pid)),
            _ => None,
        }
    }

    pub async fn start(args: &TargetArgs) -> anyhow::Result<Running> {
        let mut templates = args.templates();
        let certs = if (args.tls || args.tls_proxy) && args.addr.is_none() {
            let certs = Certs::generate(&args.work_dir)?;
            templates.ca = Some(certs.ca.clone());
            Some(certs)
        } else {
            None
        };
        if let Some(addr) = &args.addr {
            if args.tls && args.tls_ca.is_none() {
                bail!("--tls on --addr needs --tls-ca: the CA the server's certificate chains to");
            }
            if !addr.starts_with("127.") && !addr.starts_with("localhost") {
                bail!("--addr must be on 127.0.0.0/8: benchmarks send traffic to loopback only");
            }
            return Ok(Running {
                preset: args.target,
                templates,
                addrs: vec![addr.clone()],
                metrics_addrs: vec![addr.clone()],
                pids: args.server_pid.clone(),
                parts: Vec::new(),
                _certs: certs,
                handle: Handle::External,
            });
        }
        let cpus = args.pinning.server_set();
        match args.target {
            Preset::Herald => {
                let herald = args.herald.clone().unwrap_or_else(crate::default_herald);
                let mut env: Vec<(String, String)> = args
                    .herald_env
                    .iter()
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                if let (true, Some(certs)) = (args.tls, &certs) {
                    env.push(("HERALD_TLS_CERT".into(), path_text(&certs.cert)));
                    env.push(("HERALD_TLS_KEY".into(), path_text(&certs.key)));
                }
                if args.tls_proxy && args.nodes > 1 {
                    bail!("--tls-proxy puts one nginx in front of one Herald node");
                }
                let redis = if args.redis {
                    let redis = RedisServer::start(cpus.as_ref()).await?;
                    env.push(("HERALD_ENGINE".into(), "redis".into()));
                    env.push(("HERALD_REDIS_URL".into(), redis.url()));
                    Some(Box::new(redis))
                } else {
                    None
                };
                let mut servers: Vec<Server> = Vec::new();
                let mut metrics_addrs = Vec::new();
                for _ in 0..args.nodes.max(1) {
                    let server = if args.reuseport {
                        // The first node picks the port, the others share it.
                        let listen = servers.first().map_or("127.0.0.1:0", |s| &s.addr);
                        let metrics = format!("127.0.0.1:{}", crate::nchan::free_port()?);
                        let flags = ["--reuseport", "--metrics-listen", &metrics].map(String::from);
                        metrics_addrs.push(metrics);
                        Server::start_on(&herald, None, &env, cpus.as_ref(), listen, &flags).await?
                    } else {
                        let server = Server::start(&herald, None, &env, cpus.as_ref()).await?;
                        metrics_addrs.push(server.addr.clone());
                        server
                    };
                    servers.push(server);
                }
                let mut pids: Vec<u32> = servers.iter().map(|s| s.pid).collect();
                pids.extend(redis.as_ref().map(|r| r.pid));
                let mut addrs: Vec<String> = servers.iter().map(|s| s.addr.clone()).collect();
                if args.reuseport {
                    addrs.dedup();
                }
                let mut parts = Vec::new();
                let proxy = match (args.tls_proxy, &certs) {
                    (true, Some(certs)) => {
                        let site = Site::TlsProxy {
                            upstream: addrs[0].clone(),
                            certs,
                        };
                        let proxy = Nchan::start_site(&args.work_dir, cpus.as_ref(), &site).await?;
                        parts.push(("herald", pids.clone()));
                        parts.push(("nginx", proxy.pids()));
                        pids.extend(proxy.pids());
                        // Clients go to nginx; /metrics stays Herald's own.
                        addrs = vec![proxy.addr.clone()];
                        Some(Box::new(proxy))
                    }
                    _ => None,
                };
                Ok(Running {
                    preset: Preset::Herald,
                    templates,
                    addrs,
                    metrics_addrs,
                    pids,
                    parts,
                    _certs: certs,
                    handle: Handle::Herald(servers, redis, proxy),
                })
            }
            Preset::Nchan => {
                let site = Site::Nchan {
                    certs: certs.as_ref().filter(|_| args.tls),
                };
                let nchan = Nchan::start_site(&args.work_dir, cpus.as_ref(), &site).await?;
                Ok(Running {
                    preset: Preset::Nchan,
                    templates,
                    addrs: vec![nchan.addr.clone()],
                    metrics_addrs: Vec::new(),
                    pids: nchan.pids(),
                    parts: Vec::new(),
                    _certs: certs,
                    handle: Handle::Nchan(Box::new(nchan)),
                })
            }
        }
    }

    /// Restarts Herald node `node` on its port (see [`Server::restart`]),
    /// and points `pids` at the new process.
    pub async fn restart(&mut self, node: usize, how: Stop) -> anyhow::Result<()> {
        let Handle::Herald(servers, redis, _) = &mut self.handle else {
            bail!("only a Herald the bench started can be restarted");
        };
        if node >= servers.len() {
            bail!("no node {node}: {} running", servers.len());
        }
        let fresh = servers.remove(node).restart(how).await?;
        servers.insert(node, fresh);
        self.pids = servers.iter().map(|s| s.pid).collect();
        self.pids.extend(redis.as_ref().map(|r| r.pid));
        Ok(())
    }

    pub async fn stop(self) {
        match self.handle {
            Handle::Herald(servers, redis, proxy) => {
                // nginx first: it is one of Herald's clients.
                if let Some(proxy) = proxy {
                    proxy.stop().await;
                }
                for server in servers {
                    server.stop().await;
                }
                if let Some(redis) = redis {
                    redis.stop().await;
                }
            }
            Handle::Nchan(nchan) => nchan.stop().await,
            Handle::External => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_fill_in() {
        let herald = Templates::preset(Preset::Herald);
        assert_eq!(
            fill(&herald.sse_url, "127.0.0.1:1", "bench"),
            "http://127.0.0.1:1/sse?channel=bench"
        );
        let nchan = Templates::preset(Preset::Nchan);
        assert_eq!(
            fill(&nchan.ws_url, "127.0.0.1:2", &nchan.user_channel(7)),
            "ws://127.0.0.1:2/sub/user:7"
        );
    }

    #[test]
    fn mercure_subscribers_use_the_hub() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            target: TargetArgs,
        }
        let cli = Cli::parse_from(["bench", "--mercure"]);
        let templates = cli.target.templates();
        assert_eq!(templates.protocol, Protocol::Plain);
        assert_eq!(
            fill(&templates.sse_url, "127.0.0.1:1", "bench"),
            "http://127.0.0.1:1/.well-known/mercure?topic=bench"
        );
        let nchan = cli.target.for_preset(Preset::Nchan).templates();
        assert_eq!(nchan.protocol, Protocol::Plain);
        assert!(nchan.sse_url.contains("/sub/"));
        assert!(Cli::try_parse_from(["bench", "--mercure", "--pusher"]).is_err());
    }
}
