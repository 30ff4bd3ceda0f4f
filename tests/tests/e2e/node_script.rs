//! Browser scripts of `tests/browser/` (Debian's `chromium` driven by `playwright-core`), run
//! with `node` and stepped through their stdin/stdout line protocols: what the browser tests share.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Chromium as Debian installs it; `npx playwright install` needs the internet.
const CHROMIUM: &str = "/usr/bin/chromium";

/// How long a script may take to exit after its last command.
const EXIT_TIMEOUT: Duration = Duration::from_secs(25);

/// The directory of the browser scripts and their `node_modules`.
pub(crate) fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// Fails with the set-up command when something the test needs is not installed.
pub(crate) fn check_dependencies(browser_dir: &Path) {
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

/// A browser script of `tests/browser/`, running, with its output gathered line by line.
pub(crate) struct Node {
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
    /// Runs `script` (a file of `browser_dir`) with `args`.
    pub(crate) fn spawn(browser_dir: &Path, script: &str, args: &[&str]) -> Node {
        let script: PathBuf = browser_dir.join(script);
        let mut child = Command::new("node")
            .arg(&script)
            .args(args)
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

    pub(crate) fn send(&mut self, command: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        if let Err(e) = writeln!(stdin, "{command}").and_then(|()| stdin.flush()) {
            self.fail(&format!(
                "could not send {command:?} to the browser script: {e}"
            ));
        }
    }

    /// Waits for the line `want`, failing on `FAIL …`, on exit, or after `timeout`.
    pub(crate) fn expect(&mut self, want: &str, timeout: Duration) {
        self.expect_line(want, |line| line == want, timeout);
    }

    /// Waits for a line starting with `prefix` and answers the rest of it.
    pub(crate) fn expect_prefix(&mut self, prefix: &str, timeout: Duration) -> String {
        let line = self.expect_line(prefix, |line| line.starts_with(prefix), timeout);
        line[prefix.len()..].to_owned()
    }

    /// Waits up to `timeout` for a line starting with `prefix` and answers the rest of it, or
    /// an empty string if none came (other lines are kept in the transcript and skipped).
    pub(crate) fn expect_prefix_within(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.strip_prefix(prefix).map(str::to_owned);
                    let failed = line.starts_with("FAIL");
                    self.transcript.push(line);
                    if failed {
                        self.fail(&format!(
                            "the browser script failed while we waited for {prefix}"
                        ));
                    }
                    if let Some(rest) = found {
                        return rest;
                    }
                }
                Err(RecvTimeoutError::Timeout) => return String::new(),
                Err(RecvTimeoutError::Disconnected) => {
                    self.fail(&format!("the browser script exited before saying {prefix}"));
                }
            }
        }
    }

    /// Waits for the first line that `wanted` takes (skipping others), failing on `FAIL …`, on
    /// exit, or after `timeout`; `want` says what was awaited.
    fn expect_line(
        &mut self,
        want: &str,
        wanted: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let failed = line.starts_with("FAIL");
                    let found = wanted(&line);
                    self.transcript.push(line.clone());
                    if found {
                        return line;
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
    pub(crate) fn finish(&mut self) {
        self.stdin = None;
        let deadline = Instant::now() + EXIT_TIMEOUT;
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
    pub(crate) fn fail(&mut self, reason: &str) -> ! {
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
