//! `deploy/nginx/herald.conf` in front of three Herald nodes on one Redis, run as a private nginx
//! on loopback: clients with the same `shard` parameter land on the same node, each shard is
//! subscribed in Redis by one node only, and deliveries through nginx reach every client once.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use herald_tests::{
    DEFAULT_SHARDS, DEFAULT_SITE, Delivery, Herald, Position, Redis, Request, SseClient, Token,
    WsClient, free_port, metric_value, shard_of,
};

use super::support::{CHANGE_TIMEOUT, POLL, Subscriber, expect_all, expect_sse, notice, sentinel};
use crate::redis::node;

/// The site secret the nodes run with: never the dev site behind nginx (deploy/nginx/README.md).
const SECRET: &str = "nginx-test-secret-0123456789";

/// Shards the test puts users in, and users per shard.
const SHARDS_USED: [u32; 12] = [0, 1, 2, 3, 100, 317, 512, 700, 900, 1000, 1022, 1023];
const USERS_PER_SHARD: usize = 8;

/// How long nginx may take to start answering.
const NGINX_START: Duration = Duration::from_secs(10);

/// A private nginx (`master_process off`: one process, so killing it leaves nothing behind) with
/// its own prefix directory, removed on drop.
struct Nginx {
    /// Where it listens.
    addr: SocketAddr,
    /// The process.
    child: Child,
    /// Its prefix: the configuration, the error log, temporary files.
    dir: PathBuf,
}

impl Nginx {
    /// Starts nginx with `deploy/nginx/herald.conf`, its upstream pointed at `nodes` and its
    /// `listen` at a free loopback port, and waits until it proxies `/healthz`.
    async fn start(nodes: &[&Herald]) -> Nginx {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "herald-nginx-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let port = free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nginx/herald.conf");
        let shipped = std::fs::read_to_string(&conf)
            .unwrap_or_else(|e| panic!("read {}: {e}", conf.display()));
        std::fs::write(dir.join("herald.conf"), adapt(&shipped, nodes, addr))
            .expect("write herald.conf");
        let d = dir.display();
        let wrapper = format!(
            "pid {d}/nginx.pid;\nerror_log {d}/error.log warn;\nworker_rlimit_nofile 8192;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n    access_log off;\n    client_body_temp_path {d}/body;\n    \
             proxy_temp_path {d}/proxy;\n    fastcgi_temp_path {d}/fastcgi;\n    \
             uwsgi_temp_path {d}/uwsgi;\n    scgi_temp_path {d}/scgi;\n    \
             include {d}/herald.conf;\n}}\n"
        );
        std::fs::write(dir.join("nginx.conf"), wrapper).expect("write nginx.conf");
        let child = Command::new(nginx_bin())
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-g")
            .arg("daemon off; master_process off;")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("spawn nginx: {e} (install it: scripts/install-test-deps.sh)")
            });
        let mut nginx = Nginx { addr, child, dir };
        nginx.wait_ready().await;
        nginx
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + NGINX_START;
        loop {
            if tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                let response = Request::get(self.addr, "/healthz").send().await;
                assert_eq!(
                    response.status,
                    200,
                    "/healthz through nginx: {}",
                    response.text()
                );
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("nginx exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not listen on {}:\n{}",
                self.addr,
                self.log()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// `ws://NGINX/path`.
    fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("----- nginx error.log -----\n{}", self.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The nginx binary: on PATH, or Debian's `/usr/sbin/nginx` (not on every user's PATH).
fn nginx_bin() -> PathBuf {
    let sbin = PathBuf::from("/usr/sbin/nginx");
    if sbin.is_file() {
        sbin
    } else {
        PathBuf::from("nginx")
    }
}

/// `herald.conf` as shipped, with the lines its README says to adapt replaced: the node list
/// between its markers, and `listen 80;`.
fn adapt(shipped: &str, nodes: &[&Herald], listen: SocketAddr) -> String {
    let begin = "# --- Herald nodes";
    let end = "# --- end of Herald nodes ---";
    let mut out = Vec::new();
    let mut in_nodes = false;
    let (mut marked, mut listened) = (false, false);
    for line in shipped.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with(begin) {
            in_nodes = true;
            marked = true;
            out.push(line.to_owned());
            for node in nodes {
                out.push(format!("    server {};", node.addr));
            }
        } else if trimmed == end {
            in_nodes = false;
            out.push(line.to_owned());
        } else if in_nodes {
            assert!(
                trimmed.starts_with("server ") || trimmed.is_empty() || trimmed.starts_with('#'),
                "only server lines between the node markers: {line}"
            );
        } else if trimmed == "listen 80;" {
            listened = true;
            out.push(format!("    listen {listen};"));
        } else {
            out.push(line.to_owned());
        }
    }
    assert!(
        marked && !in_nodes,
        "herald.conf marks its node list with {begin:?} … {end:?}"
    );
    assert!(listened, "herald.conf has a `listen 80;` line");
    out.join("\n")
}

/// `herald_connections` on each node.
async fn connections(nodes: &[&Herald]) -> Vec<f64> {
    let mut counts = Vec::new();
    for node in nodes {
        counts.push(metric_value(
            &node.metrics().await,
            "herald_connections",
            &[],
        ));
    }
    counts
}

/// Waits until the nodes hold `total` connections together, and returns each node's count.
async fn settle(nodes: &[&Herald], total: f64) -> Vec<f64> {
    let deadline = Instant::now() + CHANGE_TIMEOUT;
    loop {
        let counts = connections(nodes).await;
        if counts.iter().sum::<f64>() == total {
            return counts;
        }
        assert!(
            Instant::now() < deadline,
            "connections per node {counts:?}, expected {total} in all"
        );
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_sends_every_user_of_a_shard_to_one_node() {
    let redis = Redis::start();
    let config = format!("[publish]\nsecret = \"{SECRET}\"\n");
    let [a, b, c] = [(); 3].map(|_| node(&redis.url()).config_toml(config.clone()).start());
    let nodes = [&a, &b, &c];
    let nginx = Nginx::start(&nodes).await;

    // USERS_PER_SHARD users in each shard of SHARDS_USED.
    let mut users: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for id in 1u64.. {
        let shard = shard_of(DEFAULT_SITE, &id.to_string(), DEFAULT_SHARDS);
        if SHARDS_USED.contains(&shard) {
            let list = users.entry(shard).or_default();
            if list.len() < USERS_PER_SHARD {
                list.push(id);
            }
        }
        if users.len() == SHARDS_USED.len() && users.values().all(|l| l.len() == USERS_PER_SHARD) {
            break;
        }
    }

    // Shard by shard: every user of the shard lands on one node.
    let mut subscribers = Vec::new();
    let mut node_of_shard = BTreeMap::new();
    let mut total = 0.0;
    for (shard, ids) in &users {
        let before = settle(&nodes, total).await;
        for id in ids {
            let token = Token::for_user(&id.to_string(), 3600).sign(SECRET);
            let url = nginx.ws_url(&format!("/ws?shard={shard}&token={token}"));
            subscribers
                .push(Subscriber::connect(&url, &format!("user:{id}"), &id.to_string()).await);
        }
        total += ids.len() as f64;
        let after = settle(&nodes, total).await;
        let grown: Vec<usize> = (0..3).filter(|&i| after[i] != before[i]).collect();
        assert_eq!(
            grown.len(),
            1,
            "the {} users of shard {shard} are on one node: connections {before:?} → {after:?}",
            ids.len()
        );
        node_of_shard.insert(*shard, grown[0]);
    }
    let used: BTreeSet<usize> = node_of_shard.values().copied().collect();
    assert!(
        used.len() > 1,
        "{} shards all on one node: nginx hashed on the client address, not on `shard`: {node_of_shard:?}",
        SHARDS_USED.len()
    );

    // An SSE stream with the same parameter joins its shard's node.
    let (shard, ids) = users.iter().next().expect("shards");
    let sse_user = ids[0];
    let token = Token::for_user(&sse_user.to_string(), 3600).sign(SECRET);
    let channel = format!("user:{sse_user}");
    let before = settle(&nodes, total).await;
    let mut sse = SseClient::connect(
        nginx.addr,
        &format!("/sse?channel={channel}&shard={shard}&token={token}"),
        None,
    )
    .await;
    // nginx keeps X-Accel-Buffering for itself, so not every header of Herald's stream is here.
    assert_eq!(sse.status, 200, "SSE through nginx: {:?}", sse.headers);
    let (_, subscribed) = sse.expect_subscribed(&channel).await;
    total += 1.0;
    let after = settle(&nodes, total).await;
    let node = node_of_shard[shard];
    assert_eq!(
        after[node],
        before[node] + 1.0,
        "SSE on shard {shard}: {before:?} → {after:?}"
    );

    // Each shard is one pub/sub channel in Redis with one node subscribed.
    // The nodes' question channels (`herald:ctl…`) aside.
    let channels = redis.cli(&["PUBSUB", "CHANNELS"]);
    let channels: Vec<&str> = channels
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains(":ctl"))
        .collect();
    assert_eq!(
        channels.len(),
        SHARDS_USED.len(),
        "one upstream channel per shard: {channels:?}"
    );
    for name in &channels {
        let numsub = redis.cli(&["PUBSUB", "NUMSUB", name]);
        let count = numsub.lines().nth(1).map(str::trim);
        assert_eq!(count, Some("1"), "{name}: one node subscribed ({numsub})");
    }

    // Deliveries through nginx, with the site's secret, reach every user once.
    let data = notice(11);
    let everyone: Vec<u64> = users.values().flatten().copied().collect();
    let delivery = Delivery::user(everyone.iter().copied().chain(5_000_000..5_000_100), &data)
        .bearer(SECRET)
        .key("nginx-1");
    let response = delivery.request(nginx.addr).send().await;
    assert_eq!(
        response.status,
        200,
        "a delivery through nginx: {}",
        response.text()
    );
    expect_all(&mut subscribers, &data, "a delivery through nginx").await;
    let seen = Position::from_json(&subscribed);
    let message = expect_sse(&mut sse, &channel, &seen, &data, "SSE through nginx").await;
    let end = sentinel("nginx");
    let response = Delivery::user(everyone.iter().copied(), &end)
        .bearer(SECRET)
        .request(nginx.addr)
        .send()
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    expect_all(&mut subscribers, &end, "nothing twice").await;
    expect_sse(
        &mut sse,
        &channel,
        &message.position,
        &end,
        "SSE: nothing twice",
    )
    .await;

    // Without the parameter nginx balances on the client address: all of ours on one node.
    let before = settle(&nodes, total).await;
    let mut plain = Vec::new();
    for _ in 0..6 {
        plain.push(WsClient::connect(&nginx.ws_url("/ws")).await);
    }
    let after = settle(&nodes, total + 6.0).await;
    let grown = (0..3).filter(|&i| after[i] != before[i]).count();
    assert_eq!(
        grown, 1,
        "one client address, one node: {before:?} → {after:?}"
    );
}
