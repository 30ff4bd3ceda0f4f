//! What every scenario shares: the common options, starting the target and
//! the worker fleet, opening the connections while sampling the server's
//! memory, and reading Herald's own counters.

use std::{path::PathBuf, time::Duration};

use anyhow::bail;

use crate::{
    client::{self, Resume, Transport},
    fleet::Fleet,
    http::{HttpConn, metric_sum},
    kernel::Kernel,
    outcome::RunResult,
    process::{self, Sample, Usage},
    target::{Preset, Running, TargetArgs},
    ui::Ui,
    worker::{Spec, Users},
};

/// Options every scenario takes.
#[derive(clap::Args, Clone, Debug)]
pub struct Common {
    #[command(flatten)]
    pub target: TargetArgs,
    /// WebSocket, Server-Sent Events or HTTP long-poll.
    #[arg(long, value_enum, default_value_t = Transport::Ws)]
    pub transport: Transport,
    /// Worker processes holding the connections (default: one per 15000).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Handshakes in flight at once, per worker.
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
    /// Runtime threads per worker process.
    #[arg(long, default_value_t = 2)]
    pub client_threads: usize,
    /// Write the result as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the plots (SVG) into this folder.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Exit with status 1 unless every connection opened and nothing was lost.
    #[arg(long)]
    pub check: bool,
    /// Open the connections in this many steps, sampling the server's RSS after each.
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Hard limit for the whole run, in seconds.
    #[arg(long, default_value_t = 150)]
    pub time_limit: u64,
}

/// What a session's clients keep track of, beyond counting what they
/// receive and its latency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tracking {
    /// Nothing more.
    Counts,
    /// Sequence numbers and resume positions: losses, duplicates, recovery
    /// after a reconnect.
    Sequence,
    /// [`Tracking::Sequence`], and a connection the server closes comes back,
    /// resuming where it was, as a client library would (a node restarting).
    Follow,
}

/// A target with its connections open.
pub struct Session {
    pub running: Running,
    pub fleet: Fleet,
    pub ui: Ui,
    /// The server before any connection (after one warm-up connection).
    pub before: Sample,
    /// Each part of the server at `before` (see [`Running::parts`]).
    pub before_parts: Vec<Sample>,
    /// `(open connections, server RSS)` sampled while connecting.
    pub rss_curve: Vec<(u64, u64)>,
    /// The kernel's socket figures at `before`, and once every connection
    /// opened: connections cost the kernel memory no RSS shows.
    pub kernel_before: Kernel,
    pub kernel_after: Kernel,
    /// Connections that opened.
    pub connected: u64,
    pub connect_seconds: f64,
    /// What the server spent from `before` until every connection was open:
    /// the cost of new connections (the handshake, and the subscribe where
    /// the scenario's clients subscribe).
    pub connect_usage: Usage,
}

/// Where the `herald` binary to measure is: next to this binary.
pub fn default_herald() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .map(|dir| dir.join("herald"))
        .unwrap_or_else(|| PathBuf::from("target/release/herald"))
}

impl Session {
    /// Starts the target and `count` connections on `channel` (or each on its own).
    pub async fn open(
        common: &Common,
        scenario: &str,
        count: usize,
        channel: Option<String>,
        tracking: Tracking,
    ) -> anyhow::Result<Session> {
        Session::open_users(common, scenario, count, channel, tracking, Users::default()).await
    }

    /// [`Session::open`], with connections (each on its own channel) as `users`.
    pub async fn open_users(
        common: &Common,
        scenario: &str,
        count: usize,
        channel: Option<String>,
        tracking: Tracking,
        users: Users,
    ) -> anyhow::Result<Session> {
        if count == 0 {
            bail!("a scenario needs at least one connection");
        }
        let running = Running::start(&common.target).await?;
        let title = format!("{scenario} {}", running.preset.name());
        let mut ui = Ui::new(&title, count as u64);
        let templates = running.templates.clone();
        let channel = channel.map(|c| {
            if c.is_empty() {
                templates.shared_channel.clone()
            } else {
                c
            }
        });

        // Warm-up: one connection opened and closed, so the server's lazily
        // created parts exist before the first sample.
        let warm_channel = channel.clone().unwrap_or_else(|| templates.user_channel(0));
        let warm = client::open(
            &templates,
            common.transport,
            &running.addrs[0],
            &warm_channel,
            std::net::Ipv4Addr::new(127, 0, 0, 2),
            &Resume::Live,
        )
        .await?;
        drop(warm);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = process::sample(&running.pids)?;
        let before_parts = running
            .parts
            .iter()
            .map(|(_, pids)| process::sample(pids))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let kernel_before = Kernel::sample();

        let spec = Spec {
            worker: 0,
            templates,
            addrs: running.addrs.clone(),
            transport: common.transport,
            first: 0,
            count,
            channel,
            users,
            source_first: 10,
            source_count: 4,
            concurrency: common.concurrency,
            track: tracking != Tracking::Counts,
            follow: tracking == Tracking::Follow,
            threads: common.client_threads,
            total: count,
        };
        let mut fleet = Fleet::spawn(&spec, common.workers).await?;
        ui.phase("connecting");
        let started = std::time::Instant::now();
        let mut rss_curve = vec![(0, before.rss)];
        let pids = running.pids.clone();
        // At least two minutes, and longer for runs past 30k connections,
        // which a loaded machine opens at a few hundred per second.
        let connect_limit = Duration::from_secs((count as u64 / 250).max(120));
        let progress = fleet
            .connect(common.steps, connect_limit, async |p| {
                ui.set_connected(p.connected);
                // A moment for the server to finish what the step started.
                tokio::time::sleep(Duration::from_millis(100)).await;
                if let Ok(sample) = process::sample(&pids) {
                    rss_curve.push((p.connected, sample.rss));
                }
            })
            .await?;
        let connect_seconds = started.elapsed().as_secs_f64();
        let kernel_after = Kernel::sample();
        let connect_usage = process::sample(&running.pids)?.since(&before);
        ui.watch(fleet.monitor(), running.pids.clone());
        Ok(Session {
            running,
            fleet,
            ui,
            before,
            before_parts,
            rss_curve,
            kernel_before,
            kernel_after,
            connected: progress.connected,
            connect_seconds,
            connect_usage,
        })
    }

    /// Herald's delivery and socket-write counters, summed over its nodes.
    pub async fn herald_counters(&self) -> Option<(f64, f64)> {
        if self.running.preset != Preset::Herald {
            return None;
        }
        let mut delivered = 0.0;
        let mut writes = 0.0;
        for addr in &self.running.metrics_addrs {
            let mut conn = HttpConn::new(addr);
            let (_, body) = conn.request("GET", "/metrics", b"").await.ok()?;
            let page = String::from_utf8_lossy(&body);
            delivered += metric_sum(&page, "herald_messages_delivered_total")?;
            writes += metric_sum(&page, "herald_socket_writes_total")?;
        }
        Some((delivered, writes))
    }

    /// Open connections on each Herald node, from its own `/metrics`: how
    /// the kernel spread them over nodes sharing a port. Empty for Nchan.
    pub async fn connections_per_node(&self) -> Vec<f64> {
        let mut counts = Vec::new();
        if self.running.preset != Preset::Herald {
            return counts;
        }
        for addr in &self.running.metrics_addrs {
            let mut conn = HttpConn::new(addr);
            if let Ok((_, body)) = conn.request("GET", "/metrics", b"").await {
                let page = String::from_utf8_lossy(&body);
                counts.extend(metric_sum(&page, "herald_connections"));
            }
        }
        counts
    }

    /// Adds the connection figures every scenario reports.
    pub fn add_connection_figures(&self, result: &mut RunResult, wanted: usize) {
        let failed = wanted as u64 - self.connected.min(wanted as u64);
        result.add("connections", "connections open", "", self.connected as f64);
        result.add("failed", "connections failed", "", failed as f64);
        result.add(
            "connect_rate",
            "connections opened per second",
            "/s",
            self.connected as f64 / self.connect_seconds.max(1e-3),
        );
        if failed > 0 {
            result.ok = false;
        }
        self.add_kernel_figures(result);
        self.add_connect_cpu(result);
    }

    /// What the open connections cost the kernel: machine-wide figures, so
    /// both ends of each loopback connection, and anything else running.
    fn add_kernel_figures(&self, result: &mut RunResult) {
        let (before, after) = (&self.kernel_before, &self.kernel_after);
        let per = after.per_connection(before, self.connected);
        result.add(
            "tcp_sockets",
            "TCP sockets in use, machine-wide (sockstat inuse)",
            "",
            after.tcp_inuse as f64,
        );
        result.add(
            "kernel_tcp_mem",
            "kernel TCP buffer memory, machine-wide (sockstat mem)",
            "MB",
            after.tcp_mem as f64 / 1e6,
        );
        result.add(
            "kernel_tcp_mem_per_conn",
            "… growth per connection, both ends",
            "B",
            per.tcp_mem,
        );
        result.add(
            "kernel_slab_per_conn",
            "kernel TCP + socket-inode slab growth per connection, both ends",
            "B",
            per.slab,
        );
        result.add(
            "kernel_slab_per_socket",
            "kernel structures per socket (TCP, inode, file, dentry, epoll objects)",
            "B",
            after.slab_bytes_per_socket().map(|b| b as f64),
        );
    }

    /// The server's CPU per new connection while the connections opened
    /// (`cpu_us_per_new_conn`, and its user and system parts). Each
    /// connection's handshake (and subscribe, where the clients subscribe) is
    /// in it; so is whatever the idle server did meanwhile, which is small
    /// against thousands of handshakes. `/proc` counts in 10 ms ticks, so
    /// the figure needs a few thousand connections to be worth reading.
    pub fn add_connect_cpu(&self, result: &mut RunResult) {
        let n = self.connected;
        let usage = &self.connect_usage;
        let per_conn = |seconds: f64| (n > 0).then(|| seconds * 1e6 / n as f64);
        result.add(
            "cpu_us_per_new_conn",
            "server CPU per new connection",
            "µs",
            per_conn(usage.cpu_s()),
        );
        result.add(
            "user_us_per_new_conn",
            "… of it user",
            "µs",
            per_conn(usage.user_s),
        );
        result.add(
            "sys_us_per_new_conn",
            "… of it system",
            "µs",
            per_conn(usage.sys_s),
        );
    }

    /// Stops the workers' display and the target.
    pub async fn close(self) {
        self.ui.finish();
        self.running.stop().await;
    }
}

/// `setup` text: "1000 ws connections on herald".
pub fn describe(count: usize, transport: Transport, what: &str) -> String {
    format!("{count} {} {what}", transport.name())
}
