//! The operator console (`/console`, docs/console.md) in Debian's Chromium: it signs in from the
//! link's `#secret=`, draws its charts and tables, shows the connections and deliveries that
//! `herald-bench` puts on the server, ranks a heavy publisher first among its top users, and its
//! forms publish (a WebSocket client receives it), show a channel's history and disconnect a
//! user (whose WebSocket closes with 4011). A wrong secret brings back the sign-in form, and
//! without `admin.secret` there is no console at all (404).
//!
//! The browser side is `tests/browser/console.mjs`, stepped through its stdin/stdout line protocol
//! (documented at the top of that file). The load is `herald-bench broadcast --addr`, the debug
//! build beside the `herald` binary (`scripts/test` builds both). A screenshot of the console
//! after the load is kept at `target/browser-artifacts/console.png`.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use herald_tests::{
    Herald, Request, Site, WsClient, WsEvent, herald_bin, publish_body, sites_toml,
};
use serde_json::json;

use crate::node_script::{Node, browser_dir, check_dependencies};

const ADMIN: &str = "console-admin-secret-for-tests";

/// The console script's own waits are shorter; these leave it room to print what the page showed.
const READY_TIMEOUT: Duration = Duration::from_secs(40);
const STEP_TIMEOUT: Duration = Duration::from_secs(25);
const RISE_TIMEOUT: Duration = Duration::from_secs(40);
/// The load: a few hundred subscribers on loopback for a few seconds.
const SUBSCRIBERS: u64 = 300;
const RATE: u64 = 50;
const BENCH_TIMEOUT: Duration = Duration::from_secs(60);
/// What the charts must have shown during the load: most of its connections, and deliveries at a
/// small part of the rate it offers (300 subscribers × 50 messages/s = 15,000 deliveries/s).
const CONNECTIONS_RISE: u64 = SUBSCRIBERS * 2 / 3;
const DELIVERIES_PER_SECOND: u64 = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_shows_load_ranks_users_and_acts() {
    let browser_dir = browser_dir();
    check_dependencies(&browser_dir);
    let bench = bench_bin();
    let started = Instant::now();

    // The zero-config dev site with an admin secret: the bench and the test publish without a
    // credential from loopback, as the dev site allows.
    let herald = Herald::builder()
        .config_toml(format!("[admin]\nsecret = \"{ADMIN}\"\n"))
        .start();
    let base = format!("http://{}", herald.addr);
    let mut node = Node::spawn(&browser_dir, "console.mjs", &[]);
    node.send(&format!("OPEN {base} {ADMIN}"));
    let site = node.expect_prefix("READY ", READY_TIMEOUT);

    // 1. Load: the connections and deliveries/s charts go up while herald-bench runs.
    node.send("VALUES");
    let before = node.expect_prefix("VALUES ", STEP_TIMEOUT);
    let connections_before = field(&before, "connections");
    let mut load = Bench::start(&bench, herald.addr);
    node.send(&format!(
        "ROSE {} {DELIVERIES_PER_SECOND}",
        connections_before + CONNECTIONS_RISE as f64
    ));
    let rose = node.expect_prefix("ROSE ", RISE_TIMEOUT);
    load.finish(BENCH_TIMEOUT);
    assert!(
        field(&rose, "messages") > 0.0,
        "messages/s should have risen too: {rose}"
    );
    node.send(&format!("SHOT {}", screenshot_path().display()));
    node.expect_prefix("SHOT ", STEP_TIMEOUT);

    // 2. Traffic ranking: the HTTP API counts a publish to `user:<name>` as produced by <name>.
    for _ in 0..30 {
        publish(herald.addr, "user:heavy", r#""a heavy user's notice""#).await;
    }
    for light in 1..=5 {
        for _ in 0..2 {
            publish(herald.addr, &format!("user:light{light}"), r#""light""#).await;
        }
    }
    node.send(&format!("TOP {site} heavy"));
    assert_eq!(node.expect_prefix("TOP ", STEP_TIMEOUT), "heavy");

    // 3. Actions: a message published from the console reaches a WebSocket subscriber, and the
    // channel view shows it in the history.
    let channel = "console-check";
    let marker = format!("from-the-console-{}", std::process::id());
    let mut subscriber = WsClient::connect(&herald.ws_url("/ws")).await;
    subscriber.subscribe(channel).await;
    let received = tokio::spawn(async move {
        let message = subscriber.next_message(STEP_TIMEOUT).await;
        (message.channel, message.data)
    });
    node.send(&format!("PUBLISH {site} {channel} {marker}"));
    let offset = node.expect_prefix("PUBLISHED ", STEP_TIMEOUT);
    assert!(offset.parse::<u64>().is_ok(), "offset {offset:?}");
    let (got_channel, data) = received.await.expect("the subscriber's task");
    assert_eq!(got_channel, channel);
    assert_eq!(data, json!(marker).to_string());
    node.send(&format!("CHANNEL {site} {channel} {marker}"));
    node.expect_prefix("CHANNEL ", STEP_TIMEOUT);

    // 4. Disconnecting a user needs users: a site whose clients bring tokens.
    let users = Site::new("social");
    let herald_b = Herald::builder()
        .config_toml(sites_toml(
            &format!("[admin]\nsecret = \"{ADMIN}\"\n"),
            &[&users],
        ))
        .start();
    let token = users.token("alice", 600);
    let mut alice = WsClient::connect(&herald_b.ws_url(&format!("/ws?token={token}"))).await;
    // Alice is told `disconnected` in an error frame, then closed.
    let closed = tokio::spawn(async move {
        let deadline = Instant::now() + READY_TIMEOUT + STEP_TIMEOUT;
        let mut frames = Vec::new();
        loop {
            match alice
                .next_event(deadline.saturating_duration_since(Instant::now()))
                .await
            {
                WsEvent::Text(text) => frames.push(text),
                other => return (frames, other),
            }
        }
    });
    let base_b = format!("http://{}", herald_b.addr);
    node.send(&format!("OPEN {base_b} {ADMIN}"));
    assert_eq!(node.expect_prefix("READY ", READY_TIMEOUT), "social");
    node.send("DISCONNECT social alice");
    node.expect("DISCONNECTED", STEP_TIMEOUT);
    let (frames, end) = closed.await.expect("alice's task");
    assert!(
        matches!(end, WsEvent::Close(4011, _)),
        "alice's connection should close with 4011, got {end:?} after {frames:?}"
    );
    assert!(
        frames.iter().any(|f| f.contains(r#""disconnected""#)),
        "alice should be told why: {frames:?}"
    );

    // 5. A wrong secret brings back the sign-in form; the right one typed into it signs in.
    node.send(&format!("WRONG {base} not-the-{ADMIN}"));
    let refused = node.expect_prefix("REFUSED ", STEP_TIMEOUT);
    assert!(!refused.is_empty());
    node.send(&format!("SIGNIN {ADMIN}"));
    node.expect("SIGNED_IN", STEP_TIMEOUT);
    node.send("DONE");
    node.expect("BYE", STEP_TIMEOUT);
    node.finish();
    eprintln!("console test took {:?}", started.elapsed());
}

/// The page is gated like the admin API (404 without `admin.secret` on a configured server),
/// while the script and styles it loads are public, static and hold no data.
#[tokio::test]
async fn console_page_needs_an_admin_secret_and_its_assets_are_public() {
    let site = Site::new("a");
    let herald = Herald::builder()
        .config_toml(sites_toml("", &[&site]))
        .start();
    Request::get(herald.addr, "/console")
        .send()
        .await
        .assert_error(404, "not_found");
    for (asset, content_type) in [
        ("/console.js", "text/javascript"),
        ("/console.css", "text/css"),
    ] {
        let response = Request::get(herald.addr, asset).send().await;
        assert_eq!(response.status, 200, "{asset}");
        assert!(
            response
                .header("content-type")
                .is_some_and(|t| t.starts_with(content_type)),
            "{asset}: {:?}",
            response.header("content-type")
        );
    }
    drop(herald);

    let herald = Herald::builder()
        .config_toml(sites_toml(
            &format!("[admin]\nsecret = \"{ADMIN}\"\n"),
            &[&site],
        ))
        .start();
    let page = Request::get(herald.addr, "/console").send().await;
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(
        page.header("content-type")
            .is_some_and(|t| t.starts_with("text/html")),
        "{:?}",
        page.header("content-type")
    );
    for link in ["\"/console.js\"", "\"/console.css\"", "id=\"signin-form\""] {
        assert!(page.text().contains(link), "the page has no {link}");
    }
}

async fn publish(addr: SocketAddr, channel: &str, data: &str) {
    let response = Request::post(addr, "/api/publish")
        .json_body(&publish_body(channel, data))
        .send()
        .await;
    assert_eq!(response.status, 200, "publish: {}", response.text());
}

/// `name=<last>/<max>` or `name=<value>` of a script line, as the larger number.
fn field(line: &str, name: &str) -> f64 {
    let value = line
        .split_whitespace()
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {name}= in {line:?}"));
    value
        .split('/')
        .map(|n| n.parse::<f64>().unwrap_or(0.0))
        .fold(0.0, f64::max)
}

/// `herald-bench` beside the `herald` binary the tests run.
fn bench_bin() -> PathBuf {
    let bench = herald_bin().with_file_name("herald-bench");
    assert!(
        bench.is_file(),
        "no herald-bench at {}: build it first: cargo build --workspace",
        bench.display()
    );
    bench
}

/// Where the screenshot after the load goes: `target/browser-artifacts/console.png`.
fn screenshot_path() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/browser-artifacts");
    std::fs::create_dir_all(&dir).expect("create target/browser-artifacts");
    dir.join("console.png")
}

/// A `herald-bench broadcast` run against the test's Herald; killed if the test ends first.
struct Bench {
    child: Option<Child>,
    log: PathBuf,
}

impl Bench {
    fn start(bench: &Path, addr: SocketAddr) -> Bench {
        let log = std::env::temp_dir().join(format!("herald-console-bench-{}.log", addr.port()));
        let out = File::create(&log).expect("create the bench log");
        let err = out.try_clone().expect("clone the bench log");
        let child = Command::new(bench)
            .arg("broadcast")
            .args(["--addr", &addr.to_string()])
            .args(["--subscribers", &SUBSCRIBERS.to_string()])
            .args(["--rate", &RATE.to_string()])
            .args(["--duration", "4", "--warmup", "1", "--time-limit", "50"])
            // The browser and the server share this machine's CPUs; pinning would crowd them.
            .args(["--no-pin", "--check"])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bench.display()));
        Bench {
            child: Some(child),
            log,
        }
    }

    /// Waits for the run to end and asserts that it passed its checks.
    fn finish(&mut self, timeout: Duration) {
        let mut child = self.child.take().expect("the bench is running");
        let deadline = Instant::now() + timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "herald-bench did not finish within {timeout:?}:\n{}",
                        self.output()
                    );
                }
                Err(e) => panic!("wait for herald-bench: {e}"),
            }
        };
        assert!(
            status.success(),
            "herald-bench failed ({status}):\n{}",
            self.output()
        );
        let _ = std::fs::remove_file(&self.log);
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn field_reads_the_larger_of_last_and_max() {
    assert_eq!(
        field("connections=3/310 messages=0/2.5", "connections"),
        310.0
    );
    assert_eq!(field("connections=3/310 messages=0/2.5", "messages"), 2.5);
    assert_eq!(
        field("ROSE connections=301 deliveries=1400", "deliveries"),
        1400.0
    );
    assert_eq!(field("connections=NaN/NaN", "connections"), 0.0);
}
