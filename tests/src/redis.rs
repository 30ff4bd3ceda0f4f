//! Real `redis-server` processes for the Redis engine's tests: a standalone server that can be
//! SIGKILLed and restarted on the same port and data, a cluster of three masters (with or without
//! a replica each, so that a master can be failed over), and a master watched by a Sentinel.
//!
//! Every server runs on a free port with a temporary directory of its own, logs to a file there,
//! and is killed (SIGKILL, by the child's pid) when its owner is dropped. The system Redis on 6379
//! is never touched. `redis-server` and `redis-cli` come from `scripts/install-test-deps.sh`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::herald::free_port;

/// How long a starting server may take to answer `PING`.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a Sentinel waits before it calls an unanswering master down.
const SENTINEL_DOWN_AFTER: Duration = Duration::from_secs(5);

/// The same, for the Sentinel that is there to fail over quickly.
const SENTINEL_FAST_DOWN_AFTER: Duration = Duration::from_secs(1);

/// How long a new cluster may take to report `cluster_state:ok` on every node.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(30);

/// The cluster node timeout without replicas (nothing fails over).
const NODE_TIMEOUT_MS: u32 = 5000;

/// The cluster node timeout with replicas: short, so that a killed master is failed over soon
/// and the failover tests stay quick.
const FAILOVER_NODE_TIMEOUT_MS: u32 = 1000;

/// How often the start-up waits look again.
const POLL: Duration = Duration::from_millis(10);

/// How many fresh ports a start tries before giving up (another process may take a port between
/// the moment it was found free and the moment Redis binds it).
const START_ATTEMPTS: usize = 5;

/// Lines of a server's log printed when a test fails.
const LOG_TAIL_LINES: usize = 30;

/// A standalone `redis-server` with an append-only file synced on every write, so that whatever
/// it acknowledged survives a SIGKILL and comes back after [`Redis::restart`].
pub struct Redis {
    /// The port, kept across restarts so that clients reconnect to the same address.
    port: u16,
    /// The data directory (the append-only file and the log), kept across restarts.
    dir: TempDir,
    /// The running server; `None` between [`Redis::kill`] and [`Redis::restart`].
    server: Option<Child>,
    /// Server arguments past the defaults (persistence settings), kept across restarts.
    extra: Vec<String>,
}

/// A copy of a [`Redis`]'s data directory, taken with [`Redis::snapshot`] and put back with
/// [`Redis::restore`]: Redis coming back with older data, as after a crash that lost its last
/// writes or a failover to a replica that lagged.
pub struct RedisSnapshot {
    /// The copy.
    dir: TempDir,
}

/// Three `redis-server` masters joined into one Redis Cluster, with or without a replica each.
pub struct RedisCluster {
    /// One entry per server, in the order the cluster was created with (masters first).
    nodes: Vec<ClusterNode>,
}

/// A standalone master (and maybe a replica of it) and one Sentinel monitoring it under the
/// service name `herald`.
pub struct RedisSentinel {
    /// The master the Sentinel pointed clients to when it started.
    master: Redis,
    /// A replica it can fail over to.
    replica: Option<Redis>,
    /// The Sentinel's port.
    port: u16,
    /// The Sentinel's directory (its config file, which it rewrites, and its log).
    dir: TempDir,
    /// The running Sentinel.
    sentinel: Child,
}

/// One server of a [`RedisCluster`].
struct ClusterNode {
    /// The client port; the cluster bus listens on `port + 10000`.
    port: u16,
    /// The node's directory (`nodes.conf` and the log).
    dir: TempDir,
    /// The running server; `None` once [`RedisCluster::kill_master`] killed it.
    server: Option<Child>,
}

impl Redis {
    /// Starts a server on a free port and waits until it answers `PING`.
    pub fn start() -> Redis {
        Redis::start_with(&[])
    }

    /// Like [`Redis::start`], with more server arguments (which win over the defaults, e.g.
    /// `["--appendfsync", "everysec"]`), used again on every restart.
    pub fn start_with(extra: &[&str]) -> Redis {
        let dir = TempDir::new("redis");
        let extra: Vec<String> = extra.iter().map(|&a| a.to_owned()).collect();
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            match spawn_server(port, dir.path(), &standalone_args(&extra)) {
                Ok(server) => {
                    return Redis {
                        port,
                        dir,
                        server: Some(server),
                        extra,
                    };
                }
                Err(failure) => failures.push(failure),
            }
        }
        panic!("redis-server did not start: {failures:#?}");
    }

    /// Starts a replica of `master` (nothing on disk) and waits until its link to the master is up
    /// and the first sync is done.
    pub fn start_replica_of(master: &Redis) -> Redis {
        let port = master.port.to_string();
        let replica = Redis::start_with(&["--appendonly", "no", "--replicaof", "127.0.0.1", &port]);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let info = replica.cli(&["INFO", "replication"]);
            if info
                .lines()
                .any(|line| line.trim() == "master_link_status:up")
            {
                return replica;
            }
            assert!(
                Instant::now() < deadline,
                "replica on {} did not sync with its master within {START_TIMEOUT:?}:\n{info}",
                replica.port
            );
            std::thread::sleep(POLL);
        }
    }

    /// The port it listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILLs the server and waits until it is gone; its port is closed once this returns.
    pub fn kill(&mut self) {
        let mut server = self.server.take().expect("kill: the server is not running");
        kill_and_reap(&mut server);
    }

    /// Starts the server again on the same port with the same data directory, and waits until it
    /// has loaded its append-only file and answers `PING`.
    pub fn restart(&mut self) {
        assert!(self.server.is_none(), "restart: kill the server first");
        let server = spawn_server(self.port, self.dir.path(), &standalone_args(&self.extra))
            .unwrap_or_else(|failure| panic!("redis-server did not restart: {failure}"));
        self.server = Some(server);
    }

    /// Copies the data directory aside while the server runs. Take it while nothing writes:
    /// with the default `appendfsync always`, every acknowledged write is in the copy.
    pub fn snapshot(&self) -> RedisSnapshot {
        let snapshot = RedisSnapshot {
            dir: TempDir::new("redis-snapshot"),
        };
        copy_dir(self.dir.path(), snapshot.dir.path(), &["redis.log"]);
        snapshot
    }

    /// Puts a snapshot's data back in place of the current data; the server must be killed
    /// first, and [`Redis::restart`] then loads it.
    pub fn restore(&mut self, snapshot: &RedisSnapshot) {
        assert!(self.server.is_none(), "restore: kill the server first");
        let aof = self.dir.path().join("appendonlydir");
        let _ = std::fs::remove_dir_all(&aof);
        let _ = std::fs::remove_file(self.dir.path().join("dump.rdb"));
        copy_dir(snapshot.dir.path(), self.dir.path(), &[]);
    }

    /// Runs `redis-cli -p PORT ARGS…` and returns its standard output, trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        redis_cli(self.port, args)
    }

    /// Stops the server with SIGSTOP: it keeps its connections open but answers nothing, as a
    /// hung Redis does.
    pub fn pause(&self) {
        self.signal(Signal::SIGSTOP);
    }

    /// Lets a [`Redis::pause`]d server run again.
    pub fn resume(&self) {
        self.signal(Signal::SIGCONT);
    }

    fn signal(&self, signal: Signal) {
        let server = self.server.as_ref().expect("the server is not running");
        let pid = Pid::from_raw(i32::try_from(server.id()).expect("pid fits in i32"));
        nix::sys::signal::kill(pid, signal)
            .unwrap_or_else(|e| panic!("{signal} redis-server: {e}"));
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(server) = &mut self.server {
            kill_and_reap(server);
        }
        if std::thread::panicking() {
            print_log_tail(self.port, self.dir.path());
        }
    }
}

// === impl RedisSentinel ===

impl RedisSentinel {
    /// Starts a master, then a Sentinel monitoring it, and waits until the Sentinel names it.
    pub fn start() -> RedisSentinel {
        RedisSentinel::start_watching(Redis::start(), None, SENTINEL_DOWN_AFTER)
    }

    /// Starts a master, a replica of it and a Sentinel that fails the master over to the replica
    /// [`SENTINEL_FAST_DOWN_AFTER`] after it stops answering; waits until the Sentinel knows both.
    pub fn start_replicated() -> RedisSentinel {
        let master = Redis::start();
        let replica = Redis::start_replica_of(&master);
        RedisSentinel::start_watching(master, Some(replica), SENTINEL_FAST_DOWN_AFTER)
    }

    fn start_watching(
        master: Redis,
        replica: Option<Redis>,
        down_after: Duration,
    ) -> RedisSentinel {
        let dir = TempDir::new("sentinel");
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let config = format!(
                "port {port}\nbind 127.0.0.1\nlogfile redis.log\ndir {}\n\
                 sentinel monitor herald 127.0.0.1 {} 1\n\
                 sentinel down-after-milliseconds herald {}\n\
                 sentinel failover-timeout herald {}\n",
                dir.path().display(),
                master.port(),
                down_after.as_millis(),
                (down_after * 5).as_millis()
            );
            let conf = dir.path().join("sentinel.conf");
            std::fs::write(&conf, config).unwrap_or_else(|e| panic!("write sentinel.conf: {e}"));
            let mut sentinel = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("spawn redis-server --sentinel: {e}"));
            let deadline = Instant::now() + START_TIMEOUT;
            loop {
                let answer = redis_cli(port, &["SENTINEL", "get-master-addr-by-name", "herald"]);
                // A replica is found through the master's INFO, which the Sentinel reads
                // every few seconds: wait for it, or a failover would have nobody to promote.
                let replica_known = replica.as_ref().is_none_or(|replica| {
                    redis_cli(port, &["SENTINEL", "replicas", "herald"])
                        .contains(&replica.port().to_string())
                });
                if answer.contains(&master.port().to_string()) && replica_known {
                    return RedisSentinel {
                        master,
                        replica,
                        port,
                        dir,
                        sentinel,
                    };
                }
                let exited = sentinel.try_wait().ok().flatten();
                if exited.is_some() || Instant::now() > deadline {
                    kill_and_reap(&mut sentinel);
                    failures.push(format!(
                        "sentinel on {port}: {answer}\n{}",
                        log_tail(dir.path())
                    ));
                    break;
                }
                std::thread::sleep(POLL);
            }
        }
        panic!("the Sentinel did not start: {failures:#?}");
    }

    /// The port of the server the Sentinel names as master now.
    pub fn master_port_now(&self) -> Option<u16> {
        let answer = redis_cli(
            self.port,
            &["SENTINEL", "get-master-addr-by-name", "herald"],
        );
        answer.lines().nth(1)?.trim().parse().ok()
    }

    /// `redis-sentinel://127.0.0.1:PORT?sentinelServiceName=herald`.
    pub fn url(&self) -> String {
        format!(
            "redis-sentinel://127.0.0.1:{}?sentinelServiceName=herald",
            self.port
        )
    }

    /// The master behind the Sentinel (the one it was started with).
    pub fn master(&self) -> &Redis {
        &self.master
    }

    /// The master it was started with, to kill it.
    pub fn master_mut(&mut self) -> &mut Redis {
        &mut self.master
    }

    /// The replica of [`RedisSentinel::start_replicated`].
    pub fn replica(&self) -> &Redis {
        self.replica.as_ref().expect("started without a replica")
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        kill_and_reap(&mut self.sentinel);
        if std::thread::panicking() {
            print_log_tail(self.port, self.dir.path());
        }
    }
}

// === impl RedisCluster ===

impl RedisCluster {
    /// Starts three masters on free ports (whose bus ports are free too), joins them with
    /// `redis-cli --cluster create`, and waits until every node reports `cluster_state:ok`.
    pub fn start() -> RedisCluster {
        RedisCluster::start_with(0)
    }

    /// Like [`RedisCluster::start`], with a replica for each master (six servers) and a short
    /// node timeout, so that a killed master is failed over within seconds; waits until every
    /// replica is in sync with its master.
    pub fn start_with_replicas() -> RedisCluster {
        RedisCluster::start_with(1)
    }

    fn start_with(replicas: usize) -> RedisCluster {
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            match RedisCluster::try_start(replicas) {
                Ok(cluster) => return cluster,
                Err(failure) => failures.push(failure),
            }
        }
        panic!("the Redis cluster did not start: {failures:#?}");
    }

    fn try_start(replicas: usize) -> Result<RedisCluster, String> {
        let ports = cluster_ports(3 * (1 + replicas))?;
        let node_timeout = if replicas > 0 {
            FAILOVER_NODE_TIMEOUT_MS
        } else {
            NODE_TIMEOUT_MS
        };
        let mut nodes = Vec::new();
        for port in ports {
            let dir = TempDir::new("redis-cluster");
            // Dropping `nodes` on an error kills the servers already started.
            let server = spawn_server(port, dir.path(), &cluster_args(node_timeout))?;
            nodes.push(ClusterNode {
                port,
                dir,
                server: Some(server),
            });
        }
        let cluster = RedisCluster { nodes };
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for port in cluster.ports() {
            create.arg(format!("127.0.0.1:{port}"));
        }
        let output = create
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("run redis-cli --cluster create: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "redis-cli --cluster create: {}\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        let deadline = Instant::now() + CLUSTER_TIMEOUT;
        for port in cluster.ports() {
            loop {
                let info = redis_cli(port, &["CLUSTER", "INFO"]);
                if info.lines().any(|line| line.trim() == "cluster_state:ok") {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "node {port}: no cluster_state:ok within {CLUSTER_TIMEOUT:?}:\n{info}"
                    ));
                }
                std::thread::sleep(POLL);
            }
        }
        if replicas > 0 {
            for port in cluster.ports() {
                loop {
                    let info = redis_cli(port, &["INFO", "replication"]);
                    let synced = info.lines().any(|line| line.trim() == "role:master")
                        || info
                            .lines()
                            .any(|line| line.trim() == "master_link_status:up");
                    if synced {
                        break;
                    }
                    if Instant::now() > deadline {
                        return Err(format!("node {port}: replica not in sync:\n{info}"));
                    }
                    std::thread::sleep(POLL);
                }
            }
        }
        Ok(cluster)
    }

    /// The client ports of the servers still running, in creation order.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|node| node.server.is_some())
            .map(|node| node.port)
            .collect()
    }

    /// The client ports of the servers that are masters now.
    pub fn masters(&self) -> Vec<u16> {
        self.ports()
            .into_iter()
            .filter(|&port| {
                redis_cli(port, &["ROLE"])
                    .lines()
                    .next()
                    .is_some_and(|role| role.trim() == "master")
            })
            .collect()
    }

    /// SIGKILLs the master on `port` and returns the port of its replica, which the cluster
    /// promotes once the other masters agree the master failed (after the node timeout).
    pub fn kill_master(&mut self, port: u16) -> u16 {
        let id = redis_cli(port, &["CLUSTER", "MYID"]);
        let replica = self
            .ports()
            .into_iter()
            .find(|&other| {
                redis_cli(other, &["CLUSTER", "NODES"]).lines().any(|line| {
                    line.contains("myself") && line.contains("slave") && line.contains(&id)
                })
            })
            .unwrap_or_else(|| panic!("master {port} has no replica"));
        let node = self
            .nodes
            .iter_mut()
            .find(|node| node.port == port)
            .expect("a server of this cluster");
        let mut server = node.server.take().expect("the master is running");
        kill_and_reap(&mut server);
        replica
    }

    /// Waits until the server on `port` is a master and every running server reports
    /// `cluster_state:ok`; panics after `timeout`.
    pub fn wait_promoted(&self, port: u16, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let promoted = redis_cli(port, &["ROLE"]).lines().next() == Some("master")
                && self.ports().into_iter().all(|p| {
                    redis_cli(p, &["CLUSTER", "INFO"])
                        .lines()
                        .any(|line| line.trim() == "cluster_state:ok")
                });
            if promoted {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{port} was not promoted within {timeout:?}"
            );
            std::thread::sleep(POLL);
        }
    }

    /// `redis-cluster://127.0.0.1:P1?node=127.0.0.1:P2&node=127.0.0.1:P3`.
    pub fn url(&self) -> String {
        let ports = self.ports();
        let mut url = format!("redis-cluster://127.0.0.1:{}", ports[0]);
        for (i, port) in ports[1..].iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(&format!("node=127.0.0.1:{port}"));
        }
        url
    }

    /// Runs `redis-cli -p PORT ARGS…` against every master, in creation order.
    pub fn cli_each(&self, args: &[&str]) -> Vec<String> {
        self.ports()
            .into_iter()
            .map(|port| redis_cli(port, args))
            .collect()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(server) = &mut node.server {
                kill_and_reap(server);
            }
        }
        if std::thread::panicking() {
            for node in &self.nodes {
                print_log_tail(node.port, node.dir.path());
            }
        }
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        // A node dropped while the cluster is being built (a failed attempt) is killed here;
        // killing a reaped child again is harmless.
        if let Some(server) = &mut self.server {
            kill_and_reap(server);
        }
    }
}

/// Runs `redis-cli -p PORT ARGS…` and returns its standard output, trimmed; panics if
/// `redis-cli` cannot run. Redis errors come back as text (`ERR …`) for the caller to check.
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("run redis-cli: {e} (install it: scripts/install-test-deps.sh)")
        });
    let mut text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !stderr.trim().is_empty() {
        text.push_str(&format!("\n{}", stderr.trim()));
    }
    text
}

/// Arguments shared by every server: loopback only, logs in the data directory, no RDB dumps.
fn base_args(port: u16) -> Vec<String> {
    [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--daemonize",
        "no",
        "--logfile",
        "redis.log",
        "--save",
        "",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect()
}

/// A standalone server writes every command to its append-only file and syncs it before
/// answering, so an acknowledged publish survives a SIGKILL; `extra` comes last and wins.
fn standalone_args(extra: &[String]) -> Vec<&str> {
    let mut args = vec!["--appendonly", "yes", "--appendfsync", "always"];
    args.extend(extra.iter().map(String::as_str));
    args
}

/// Copies the files and folders of `from` into `to`, but those named in `skip`.
fn copy_dir(from: &Path, to: &Path, skip: &[&str]) {
    let entries =
        std::fs::read_dir(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display()));
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| panic!("read {}: {e}", from.display()));
        if skip.iter().any(|name| entry.file_name() == *name) {
            continue;
        }
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            std::fs::create_dir_all(&target)
                .unwrap_or_else(|e| panic!("create {}: {e}", target.display()));
            copy_dir(&entry.path(), &target, skip);
        } else {
            std::fs::copy(entry.path(), &target)
                .unwrap_or_else(|e| panic!("copy to {}: {e}", target.display()));
        }
    }
}

/// A cluster server; its data does not need to survive anything in these tests.
fn cluster_args(node_timeout_ms: u32) -> Vec<String> {
    [
        "--appendonly",
        "no",
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        &node_timeout_ms.to_string(),
    ]
    .into_iter()
    .map(str::to_owned)
    .collect()
}

/// Starts `redis-server` in `dir` on `port` and waits until it answers `PING` (which it does only
/// once the append-only file is loaded). On failure the server is killed and its log returned.
fn spawn_server<S: AsRef<std::ffi::OsStr>>(
    port: u16,
    dir: &Path,
    extra: &[S],
) -> Result<Child, String> {
    let mut server = Command::new("redis-server")
        .args(base_args(port))
        .args(extra)
        .arg("--dir")
        .arg(dir)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("spawn redis-server: {e} (install it: scripts/install-test-deps.sh)")
        });
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if ping(port) {
            return Ok(server);
        }
        let exited = server.try_wait().ok().flatten();
        if exited.is_some() || Instant::now() > deadline {
            kill_and_reap(&mut server);
            return Err(format!(
                "redis-server on port {port} {}; its log:\n{}",
                match exited {
                    Some(status) => format!("exited with {status}"),
                    None => format!("did not answer PING within {START_TIMEOUT:?}"),
                },
                log_tail(dir)
            ));
        }
        std::thread::sleep(POLL);
    }
}

/// Whether a server on `port` answers `PING` with `PONG` (not `-LOADING`, not a refusal).
fn ping(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut answer = [0u8; 7];
    stream.read_exact(&mut answer).is_ok() && &answer == b"+PONG\r\n"
}

/// SIGKILLs the child (std's `Child::kill` sends SIGKILL on Unix) and reaps it. The pid cannot
/// name another process meanwhile: the child stays unreaped until `wait` returns.
fn kill_and_reap(server: &mut Child) {
    if server.try_wait().ok().flatten().is_none() {
        let _ = server.kill();
    }
    let _ = server.wait();
}

/// `count` distinct free ports whose cluster bus ports (`port + 10000`) are free as well.
fn cluster_ports(count: usize) -> Result<Vec<u16>, String> {
    let mut ports: Vec<u16> = Vec::new();
    for _ in 0..1000 {
        if ports.len() == count {
            return Ok(ports);
        }
        let port = free_port();
        let Some(bus) = port.checked_add(10000) else {
            continue;
        };
        let taken = |p: u16| ports.iter().any(|&q| q == p || q + 10000 == p);
        if !taken(port) && !taken(bus) && TcpListener::bind(("127.0.0.1", bus)).is_ok() {
            ports.push(port);
        }
    }
    Err(format!(
        "found only {} ports with a free bus port",
        ports.len()
    ))
}

fn log_tail(dir: &Path) -> String {
    let log = std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

fn print_log_tail(port: u16, dir: &Path) {
    eprintln!(
        "----- redis-server log (port {port}, last {LOG_TAIL_LINES} lines) -----\n{}",
        log_tail(dir)
    );
}

/// A directory under the system temp dir, removed with everything in it on drop.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new(kind: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("herald-test-{kind}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        TempDir { path }
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
