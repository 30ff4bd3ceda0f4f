//! The demo page in a real headless browser: a notice published with curl shows up in both panels,
//! and after a memory-engine Herald restarts, the page reconnects by itself and shows the next one.
//!
//! The browser side is `tests/browser/demo.mjs` (Debian's `chromium` driven by `playwright-core`);
//! this test starts and restarts Herald, publishes with the real `curl`, and steps the script
//! through its stdin/stdout line protocol (documented at the top of `demo.mjs`).
//! Set-up, once per machine, as root: `scripts/install-test-deps.sh`.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use herald_tests::{Herald, free_port};
use parking_lot::Mutex;

/// Chromium as Debian installs it; `npx playwright install` needs the internet.
const CHROMIUM: &str = "/usr/bin/chromium";

/// The time-outs below leave `demo.mjs` room to hit its own (shorter) ones first and print what
/// the page showed.
const READY_TIMEOUT: Duration = Duration::from_secs(45);
const SEE_TIMEOUT: Duration = Duration::from_secs(25);
const RECONNECT_TIMEOUT: Duration = Duration::from_secs(60);
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(20);

#[test]
fn demo_page_shows_curl_notices_and_reconnects_after_a_restart() {
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    check_dependencies(&browser_dir);

    // The restarted server must come back on the same port, or the page could not find it.
    let listen = format!("127.0.0.1:{}", free_port());
    let mut herald = Herald::builder().listen(&listen).start();
    let base_url = format!("http://{}", herald.addr);
    let publish_url = herald.url("/api/publish");
    let mut node = Node::spawn(&browser_dir, &base_url);
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

/// Fails with the set-up command when something the test needs is not installed.
fn check_dependencies(browser_dir: &Path) {
    let mut missing = Vec::new();
    if !browser_dir
        .join("node_modules/playwright-core/package.json")
        .is_file()
    {
        missing.push(format!("{}/node_modules", browser_dir.display()));
    }
    if !Path::new(CHROMIUM).is_file() {
        missing.push(CHROMIUM.to_owned());
    }
    for tool in ["node", "curl"] {
        let found = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            missing.push(tool.to_owned());
        }
    }
    assert!(
        missing.is_empty(),
        "the browser test needs {}: run `scripts/install-test-deps.sh` (as root) first",
        missing.join(", ")
    );
}

/// Publishes notice `n` to `public` and `user:42` (the demo page's default user) with curl.
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

/// `tests/browser/demo.mjs`, running, with its output gathered line by line.
struct Node {
    child: Child,
    /// Commands go here; `None` once closed, which also ends the script.
    stdin: Option<ChildStdin>,
    /// Every stdout line, as the reader thread gets it; disconnects when the script exits.
    lines: mpsc::Receiver<String>,
    /// The stdout lines received so far, for failure messages.
    transcript: Vec<String>,
    /// Everything the script wrote to stderr (Node's own errors).
    stderr: Arc<Mutex<String>>,
}

impl Node {
    fn spawn(browser_dir: &Path, base_url: &str) -> Node {
        let script: PathBuf = browser_dir.join("demo.mjs");
        let mut child = Command::new("node")
            .arg(&script)
            .arg(base_url)
            .current_dir(browser_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn node {}: {e}", script.display()));

        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout is piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("stderr is piped");
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut chunk = [0; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                sink.lock().push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
        Node {
            stdin: child.stdin.take(),
            child,
            lines,
            transcript: Vec::new(),
            stderr,
        }
    }

    fn send(&mut self, command: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        if let Err(e) = writeln!(stdin, "{command}").and_then(|()| stdin.flush()) {
            self.fail(&format!(
                "could not send {command:?} to the browser script: {e}"
            ));
        }
    }

    /// Waits for the line `want`, failing on `FAIL …`, on exit, or after `timeout`.
    fn expect(&mut self, want: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let failed = line.starts_with("FAIL");
                    let found = line == want;
                    self.transcript.push(line);
                    if found {
                        return;
                    }
                    if failed {
                        self.fail(&format!(
                            "the browser script failed while we waited for {want}"
                        ));
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.fail(&format!(
                        "no {want} from the browser script within {timeout:?}"
                    ));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.fail(&format!("the browser script exited before saying {want}"));
                }
            }
        }
    }

    /// Waits for a clean exit after `BYE`.
    fn finish(&mut self) {
        self.stdin = None;
        let deadline = Instant::now() + SEE_TIMEOUT;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => {
                    // Shown with `--nocapture`: the page's status changes and expected noise.
                    eprintln!("{}", self.transcript.join("\n"));
                    return;
                }
                Ok(Some(status)) => self.fail(&format!("the browser script exited with {status}")),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Ok(None) => self.fail("the browser script did not exit after BYE"),
                Err(e) => self.fail(&format!("wait for the browser script: {e}")),
            }
        }
    }

    /// Collects the rest of the script's output (it dumps the page after `FAIL`) and panics.
    fn fail(&mut self, reason: &str) -> ! {
        self.stdin = None;
        let deadline = Instant::now() + Duration::from_secs(15);
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.transcript.push(line);
        }
        panic!(
            "{reason}\n----- browser script stdout -----\n{}\n----- browser script stderr -----\n{}",
            self.transcript.join("\n"),
            self.stderr.lock()
        );
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Closing stdin makes the script close the browser and exit; kill it if it does not.
        self.stdin = None;
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) {
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
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
