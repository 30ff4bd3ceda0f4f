//! The demo page in Chromium where the network is hostile: behind a proxy that refuses WebSocket
//! (herald.js falls back to SSE), behind one that buffers streams (it falls back to long-poll),
//! through network cuts, and through a restart of Herald on the Redis engine. In each, numbered
//! notices are published while it happens, and the page must show every one exactly once, in
//! order (read from the page's timelines, `tests/browser/fallback.mjs`).
//!
//! The proxy is `herald_tests::Proxy` (tests/src/proxy.rs). Each test leaves a screenshot and a
//! Playwright trace (`npx playwright show-trace <file>`) of its page in
//! `target/browser-artifacts/`, whether it passed or failed.

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::process::Command;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use herald_tests::{Herald, Proxy, ProxyMode, Redis, free_port};

use crate::node_script::{Node, browser_dir, check_dependencies};

/// Numbered notices per test: fewer than the demo's 50 per panel, so all of them stay shown.
const COUNT: u64 = 30;
/// The pace of the publisher, so that the cuts and the restart land among the notices.
const PACE: Duration = Duration::from_millis(100);
/// How long one notice may go unaccepted (while Herald restarts) before the test fails.
const PUBLISH_DEADLINE: Duration = Duration::from_secs(30);
/// Longer than fallback.mjs's own time-outs, so that it can say what the page showed first.
const READY_TIMEOUT: Duration = Duration::from_secs(45);
const NUMBERS_TIMEOUT: Duration = Duration::from_secs(45);
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(20);
/// A cut waits for a connection held this long: a stream, a WebSocket or a held poll, not a
/// request that is being answered (cutting that one could go unnoticed).
const HELD: Duration = Duration::from_millis(50);
/// How long the long-poll test leaves the page's poll waiting, with nothing published, before
/// it cuts it.
const QUIET: Duration = Duration::from_millis(300);
/// How long a cut waits for such a connection (the page reconnects within a back-off).
const CUT_TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn websocket_refused_by_a_proxy_falls_back_to_sse_and_loses_nothing_across_a_cut() {
    let herald = Herald::start();
    let proxy = Proxy::start(herald.addr, ProxyMode::REFUSE_WEBSOCKET);
    let (mut page, transport) = open_page(&proxy.url("/"), "websocket-refused");
    page.check(
        transport == "sse",
        "the page should have fallen back to SSE",
    );
    page.check(proxy.websockets_refused() > 0, "no WebSocket was refused");

    let tag = tag("sse");
    let mut publisher = Publisher::start(&herald, &tag, 1..=COUNT);
    publisher.wait_for(COUNT / 2);
    let cut = proxy.cut_when_held(HELD, CUT_TIMEOUT);
    page.check(cut > 0, "the page had no stream open to cut");
    publisher.finish();

    let (transport, drops) = page.numbers(&tag);
    page.check(transport == "sse", "the page should have stayed on SSE");
    page.check(drops > 0, "the page never noticed the cut");
    page.done();
}

#[test]
fn streams_buffered_by_a_proxy_fall_back_to_long_poll_and_lose_nothing_across_a_cut() {
    let herald = Herald::start();
    let proxy = Proxy::start(herald.addr, ProxyMode::BUFFERING);
    // herald.js gives SSE its connect time-out (8 s) to say anything, then moves to long-poll.
    let (mut page, transport) = open_page(&proxy.url("/"), "streams-buffered");
    page.check(
        transport == "poll",
        "the page should have fallen back to long-poll",
    );
    page.check(proxy.websockets_refused() > 0, "no WebSocket was refused");
    page.check(proxy.streams_buffered() > 0, "no SSE stream was held back");

    let tag = tag("poll");
    // Publishing pauses for the cut: a poll is answered as soon as a notice comes, and a cut
    // that lands just after an answer went through would go unnoticed. With nothing to answer,
    // the poll that is cut is one the page is waiting on.
    Publisher::start(&herald, &tag, 1..=COUNT / 2).finish();
    std::thread::sleep(QUIET);
    let cut = proxy.cut_when_held(QUIET, CUT_TIMEOUT);
    page.check(cut > 0, "the page had no poll held to cut");
    Publisher::start(&herald, &tag, COUNT / 2 + 1..=COUNT).finish();

    let (transport, drops) = page.numbers(&tag);
    page.check(
        transport == "poll",
        "the page should have stayed on long-poll",
    );
    page.check(drops > 0, "the page never noticed the cut");
    page.done();
}

#[test]
fn network_cuts_mid_stream_lose_no_notice() {
    let herald = Herald::start();
    let proxy = Proxy::start(herald.addr, ProxyMode::PASS);
    let (mut page, transport) = open_page(&proxy.url("/"), "network-cut");
    page.check(transport == "ws", "the page should be on WebSocket");

    let tag = tag("cut");
    let mut publisher = Publisher::start(&herald, &tag, 1..=COUNT);
    for n in [COUNT / 4, COUNT / 2, 3 * COUNT / 4] {
        publisher.wait_for(n);
        let cut = proxy.cut_when_held(HELD, CUT_TIMEOUT);
        page.check(
            cut > 0,
            &format!("the page had no WebSocket open at notice {n}"),
        );
    }
    publisher.finish();

    let (transport, drops) = page.numbers(&tag);
    page.check(
        transport == "ws",
        "the page should have come back on WebSocket",
    );
    page.check(drops > 0, "the page never noticed the cuts");
    page.done();
}

#[test]
fn a_restart_on_the_redis_engine_loses_no_notice_in_the_page() {
    let redis = Redis::start();
    // The restarted Herald must come back on the same port, or the page could not find it.
    let listen = format!("127.0.0.1:{}", free_port());
    let start = || {
        Herald::builder()
            .listen(&listen)
            .arg("--engine")
            .arg("redis")
            .arg("--redis-url")
            .arg(redis.url())
            .start()
    };
    let mut herald = start();
    let (mut page, transport) = open_page(&herald.url("/"), "redis-restart");
    page.check(transport == "ws", "the page should be on WebSocket");

    let tag = tag("restart");
    let mut publisher = Publisher::start(&herald, &tag, 1..=COUNT);
    publisher.wait_for(COUNT / 2);
    herald.sigterm();
    let status = herald.wait_exit(SHUTDOWN_TIMEOUT);
    assert!(
        status.is_some_and(|s| s.success()),
        "herald should exit with status 0 on SIGTERM, got {status:?}\n{}",
        herald.log()
    );
    herald = start();
    publisher.finish();

    let (transport, drops) = page.numbers(&tag);
    page.check(
        transport == "ws",
        "the page should have come back on WebSocket",
    );
    page.check(drops > 0, "the page never noticed the restart");
    page.done();
    drop(herald);
}

// === the page ===

/// The demo page in Chromium, run by `tests/browser/fallback.mjs`.
struct Page {
    node: Node,
}

/// Opens the demo page at `url` and waits until it is live; answers the transport it shows.
/// `name` names its screenshot and trace in `target/browser-artifacts/`.
fn open_page(url: &str, name: &str) -> (Page, String) {
    let browser_dir = browser_dir();
    check_dependencies(&browser_dir);
    let artifacts = artifacts_dir().join(name);
    let mut node = Node::spawn(
        &browser_dir,
        "fallback.mjs",
        &[url, &artifacts.to_string_lossy()],
    );
    let transport = node.expect_prefix("READY ", READY_TIMEOUT);
    (Page { node }, transport)
}

impl Page {
    /// Waits until the page shows `<tag> notice 1` … `<tag> notice COUNT` in both timelines, each
    /// once and in order (fallback.mjs fails otherwise); answers the transport then in use and how
    /// often the page went from live to reconnecting.
    fn numbers(&mut self, tag: &str) -> (String, u64) {
        self.node.send(&format!("NUMBERS {tag} {COUNT}"));
        let answer = self.node.expect_prefix("NUMBERS ", NUMBERS_TIMEOUT);
        let (transport, drops) = answer
            .split_once(' ')
            .unwrap_or_else(|| panic!("NUMBERS answered {answer:?}"));
        let drops = drops
            .parse()
            .unwrap_or_else(|e| panic!("NUMBERS answered {answer:?}: {e}"));
        (transport.to_owned(), drops)
    }

    /// Fails the test with `why`, and what the page saw, unless `ok`.
    fn check(&mut self, ok: bool, why: &str) {
        if !ok {
            self.node.fail(why);
        }
    }

    /// Saves the artifacts and closes the browser.
    fn done(mut self) {
        self.node.send("DONE");
        self.node.expect("BYE", NUMBERS_TIMEOUT);
        self.node.finish();
    }
}

/// `target/browser-artifacts/`, created: the test binary runs as `target/<profile>/deps/<name>`.
fn artifacts_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let target = exe
        .ancestors()
        .nth(3)
        .expect("the test binary is in target/<profile>/deps/");
    let dir = target.join("browser-artifacts");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// A tag for this run's notices: letters, digits and `-` only (fallback.mjs puts it in a regex).
fn tag(what: &str) -> String {
    format!("{what}-{}", std::process::id())
}

// === the publisher ===

/// Publishes `<tag> notice <n>` to `public` and `user:42` (both panels of the demo page) for each
/// `n` in turn, at `PACE`, on a thread of its own: each notice is sent until Herald accepts it,
/// with an `Idempotency-Key`, so that a retry of one accepted just before a restart is not
/// published twice.
struct Publisher {
    /// Each number once it was accepted.
    accepted: mpsc::Receiver<u64>,
    /// The highest number accepted so far.
    last: u64,
    thread: Option<JoinHandle<Result<(), String>>>,
}

impl Publisher {
    fn start(herald: &Herald, tag: &str, numbers: RangeInclusive<u64>) -> Publisher {
        let url = herald.url("/api/publish");
        let tag = tag.to_owned();
        let (tx, accepted) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            for n in numbers {
                publish_until_accepted(&url, &tag, n)?;
                // The test may have stopped listening after its last wait.
                let _ = tx.send(n);
                std::thread::sleep(PACE);
            }
            Ok(())
        });
        Publisher {
            accepted,
            last: 0,
            thread: Some(thread),
        }
    }

    /// Waits until notice `n` was accepted.
    fn wait_for(&mut self, n: u64) {
        let deadline = Instant::now() + PUBLISH_DEADLINE;
        while self.last < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.accepted.recv_timeout(left) {
                Ok(accepted) => self.last = accepted,
                Err(_) => self.finish_with(&format!("notice {n} was not accepted in time")),
            }
        }
    }

    /// Waits until every notice was accepted.
    fn finish(mut self) {
        self.finish_with("");
    }

    fn finish_with(&mut self, why: &str) {
        let thread = self.thread.take().expect("the publisher is finished once");
        let result = thread.join().expect("the publisher thread panicked");
        if let Err(e) = result {
            panic!("{why}{}{e}", if why.is_empty() { "" } else { ": " });
        }
        assert!(why.is_empty(), "{why}");
    }
}

/// Publishes one notice with curl, again every 100 ms while refused (Herald down or draining),
/// for up to `PUBLISH_DEADLINE`.
fn publish_until_accepted(url: &str, tag: &str, n: u64) -> Result<(), String> {
    let body = serde_json::json!({
        "channels": ["public", "user:42"],
        "data": { "id": n, "user": "42", "text": format!("{tag} notice {n}") },
    })
    .to_string();
    let key = format!("Idempotency-Key: {tag}-{n}");
    let deadline = Instant::now() + PUBLISH_DEADLINE;
    loop {
        let output = Command::new("curl")
            .args(["-sS", "-f", "--max-time", "5", "-X", "POST", url])
            .args(["-H", "Content-Type: application/json", "-H", &key])
            .args(["-d", &body])
            .output()
            .map_err(|e| format!("run curl: {e}"))?;
        if output.status.success() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "notice {n} was refused for {PUBLISH_DEADLINE:?}: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
