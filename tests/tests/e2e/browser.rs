//! The demo page in a real headless browser: a notice published with curl shows up in both panels,
//! and after a memory-engine Herald restarts, the page reconnects by itself and shows the next one.
//!
//! The browser side is `tests/browser/demo.mjs` (Debian's `chromium` driven by `playwright-core`);
//! this test starts and restarts Herald, publishes with the real `curl`, and steps the script
//! through its stdin/stdout line protocol (documented at the top of `demo.mjs`).
//! Set-up, once per machine, as root: `scripts/install-test-deps.sh`.

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herald_tests::{Herald, free_port};

use crate::node_script::{Node, browser_dir, check_dependencies};

/// The time-outs below leave `demo.mjs` room to hit its own (shorter) ones first and print what
/// the page showed.
const READY_TIMEOUT: Duration = Duration::from_secs(45);
const SEE_TIMEOUT: Duration = Duration::from_secs(25);
const RECONNECT_TIMEOUT: Duration = Duration::from_secs(60);
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(20);

#[test]
fn demo_page_shows_curl_notices_and_reconnects_after_a_restart() {
    let browser_dir = browser_dir();
    check_dependencies(&browser_dir);

    // The restarted server must come back on the same port, or the page could not find it.
    let listen = format!("127.0.0.1:{}", free_port());
    let mut herald = Herald::builder().listen(&listen).start();
    let base_url = format!("http://{}", herald.addr);
    let publish_url = herald.url("/api/publish");
    let mut node = Node::spawn(&browser_dir, "demo.mjs", &[&base_url]);
    node.expect("READY", READY_TIMEOUT);

    // Unique texts, so that a notice can only be found where this run put it.
    let tag = format!("{}-{}", std::process::id(), unix_now().as_millis());

    let first = format!("first notice via curl {tag}");
    curl_publish(&publish_url, 1, &first);
    node.send(&format!("SEE 1 {first}"));
    node.expect("SEEN 1", SEE_TIMEOUT);

    node.send("RESTART");
    node.expect("WATCHING", SEE_TIMEOUT);
    herald.sigterm();
    let status = herald.wait_exit(SHUTDOWN_TIMEOUT);
    assert!(
        status.is_some_and(|s| s.success()),
        "herald should exit with status 0 on SIGTERM, got {status:?}\n----- herald stderr -----\n{}",
        herald.log()
    );
    herald = Herald::builder().listen(&listen).start();
    node.expect("RECONNECTED", RECONNECT_TIMEOUT);

    let second = format!("second notice via curl {tag}");
    curl_publish(&publish_url, 2, &second);
    node.send(&format!("SEE 2 {second}"));
    node.expect("SEEN 2", SEE_TIMEOUT);

    // The page's own form publishes too.
    let third = format!("third notice via the form {tag}");
    node.send(&format!("POST 3 {third}"));
    node.expect("SEEN 3", SEE_TIMEOUT);

    // DONE also fails if the console showed errors beyond the restart's connection errors.
    node.send("DONE");
    node.expect("BYE", SEE_TIMEOUT);
    node.finish();
    drop(herald);
}

/// Publishes notice `n` to `public` and `user:42` (the demo page's default user) with curl.
/// The demo as a microblog, in Chromium: two users, one of them on long-poll only, following,
/// home timelines, tags and the unread count (tests/browser/microblog.mjs).
#[test]
fn demo_users_follow_each_other_and_tags_live_even_on_long_poll() {
    let browser_dir = browser_dir();
    check_dependencies(&browser_dir);
    let herald = Herald::start();
    let base_url = format!("http://{}", herald.addr);
    let mut node = Node::spawn(&browser_dir, "microblog.mjs", &[&base_url]);
    for step in ["OPEN", "PUBLIC", "HOME", "TAG"] {
        node.expect(step, READY_TIMEOUT);
    }
    // One notice since Bob's page was hidden, counted once though it reached two of his timelines.
    let title = node.expect_prefix("TITLE ", READY_TIMEOUT);
    assert!(title.starts_with("(1) "), "{title}");
    node.expect("DONE", READY_TIMEOUT);
    node.finish();
}

fn curl_publish(url: &str, n: u64, text: &str) {
    let body = serde_json::json!({
        "channels": ["public", "user:42"],
        "data": { "id": n, "user": "42", "text": text, "created_at": iso8601(unix_now()) },
    });
    let output = Command::new("curl")
        .args(["-sS", "-f", "--max-time", "10", "-X", "POST", url])
        .args([
            "-H",
            "Content-Type: application/json",
            "-d",
            &body.to_string(),
        ])
        .output()
        .expect("run curl");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "curl publish of notice {n} failed ({}): {stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("publish answered {stdout:?}, not JSON: {e}"));
    assert_eq!(
        answer["results"].as_array().map(Vec::len),
        Some(2),
        "publish should answer one result per channel: {answer}"
    );
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
}

/// `since_epoch` as `YYYY-MM-DDTHH:MM:SSZ` (the `created_at` the demo page's form sends).
fn iso8601(since_epoch: Duration) -> String {
    let secs = since_epoch.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 (never negative here).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[test]
fn iso8601_formats_known_instants() {
    for (secs, want) in [
        (0, "1970-01-01T00:00:00Z"),
        (951_782_400, "2000-02-29T00:00:00Z"),
        (1_767_225_599, "2025-12-31T23:59:59Z"),
    ] {
        assert_eq!(iso8601(Duration::from_secs(secs)), want);
    }
}
