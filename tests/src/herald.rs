//! A real `herald` process for one test: start it on a free port, wait until it listens, signal it, and kill it on drop.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;
use parking_lot::{Condvar, Mutex};

/// How long a starting Herald may take to print its readiness line.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The variable of `shutdown.readiness_delay_ms`, which the harness sets to 0 unless a test sets it.
const READINESS_DELAY_VAR: &str = "HERALD_SHUTDOWN_READINESS_DELAY_MS";

const PUBLISH_WAIT_VAR: &str = "HERALD_DELIVERY_MAX_PUBLISH_WAIT_MS";

/// The line prefix Herald prints on stdout once its listener is bound,
/// then `http://` or (with `tls.cert`) `https://` and the address.
const READY_PREFIX: &str = "herald listening on ";

/// A running `herald` process. Dropping it kills the process if it is still running.
pub struct Herald {
    /// The address the server listens on, read from its readiness line.
    pub addr: SocketAddr,
    /// The process id, kept so that signals can be sent while the waiter thread owns the `Child`.
    pid: u32,
    /// The exit status once the waiter thread has reaped the process; the lock also keeps a signal
    /// from being sent to a pid that has already been reaped (and so might be reused).
    exit: Arc<ExitCell>,
    /// Everything the process wrote to stderr so far (its logs).
    log: Arc<Mutex<String>>,
    /// The temporary config file, removed on drop.
    config_file: Option<PathBuf>,
}

/// Configures a `herald` process before it starts: flags, `HERALD_*` variables, a config file.
#[derive(Debug, Default)]
pub struct HeraldBuilder {
    /// Extra command-line arguments, after `--listen` and `--config`.
    args: Vec<String>,
    /// Environment variables set for the process; every inherited `HERALD_*` variable is removed first.
    envs: BTreeMap<String, String>,
    /// The content of a TOML config file passed with `--config`.
    config_toml: Option<String>,
    /// The `--listen` address; `127.0.0.1:0` unless set.
    listen: Option<String>,
    /// Whether to pass `--listen` at all (a test of `HERALD_LISTEN` or of the config file's
    /// `listen` key must not have it overridden by the flag).
    no_listen_flag: bool,
}

/// The result of running `herald` to completion (for `--check-config` and start-up failures).
#[derive(Debug)]
pub struct Finished {
    /// How the process ended.
    pub status: ExitStatus,
    /// Everything it wrote to stdout.
    pub stdout: String,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

/// Returns a TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// Finds the `herald` binary: `HERALD_BIN`, else next to this test in `target/<profile>/`.
pub fn herald_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("HERALD_BIN") {
        return PathBuf::from(bin);
    }
    // A test runs as target/<profile>/deps/<test>-<hash>; the binary is target/<profile>/herald.
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(|deps| {
            if deps.ends_with("deps") {
                deps.parent()
            } else {
                Some(deps)
            }
        })
        .expect("test binary has a parent directory");
    let bin = profile_dir.join("herald");
    assert!(
        bin.is_file(),
        "no herald binary at {}: build it first: cargo build -p api",
        bin.display()
    );
    bin
}

impl Herald {
    /// Starts `herald --listen 127.0.0.1:0` with nothing else and waits until it listens.
    pub fn start() -> Herald {
        Herald::builder().start()
    }

    /// Starts configuring a `herald` process.
    pub fn builder() -> HeraldBuilder {
        HeraldBuilder::default()
    }

    /// `http://ADDR/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, slash(path))
    }

    /// `ws://ADDR/path`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, slash(path))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends SIGTERM (graceful shutdown).
    pub fn sigterm(&self) {
        self.signal(Signal::SIGTERM);
    }

    /// Sends SIGINT (Ctrl-C; also a graceful shutdown).
    pub fn sigint(&self) {
        self.signal(Signal::SIGINT);
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.exit.wait(timeout)
    }

    /// Everything the process wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().clone()
    }

    fn signal(&self, signal: Signal) {
        self.exit.signal(self.pid, signal);
    }
}

impl Drop for Herald {
    fn drop(&mut self) {
        if self.exit.status.lock().is_none() {
            self.signal(Signal::SIGKILL);
            self.exit.wait(Duration::from_secs(10));
        }
        if std::thread::panicking() {
            // A failing test shows what the server said; a passing one stays quiet.
            eprintln!(
                "----- herald stderr (pid {}) -----\n{}",
                self.pid,
                self.log()
            );
        }
        if let Some(path) = self.config_file.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

// === impl HeraldBuilder ===

impl HeraldBuilder {
    /// Adds a command-line argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Sets an environment variable for the process (normally a `HERALD_*` one).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.envs.insert(key.into(), value.into());
        self
    }

    /// Writes `toml` to a temporary file and passes it as `--config FILE`.
    pub fn config_toml(mut self, toml: impl Into<String>) -> Self {
        self.config_toml = Some(toml.into());
        self
    }

    /// Passes `--listen ADDR` instead of `--listen 127.0.0.1:0`.
    pub fn listen(mut self, addr: impl Into<String>) -> Self {
        self.listen = Some(addr.into());
        self
    }

    /// Passes no `--listen` flag, so the address comes from the config file, `HERALD_LISTEN` or
    /// the default.
    pub fn no_listen_flag(mut self) -> Self {
        self.no_listen_flag = true;
        self
    }

    /// Starts the process and waits until it prints its readiness line.
    pub fn start(self) -> Herald {
        let (mut command, config_file) = self.command();
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {:?}: {e}", command.get_program()));
        let pid = child.id();

        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr is piped");
        let stderr_done = capture_lines(stderr, Arc::clone(&log));

        // Stdout carries the readiness line; the thread keeps draining it afterwards so the
        // pipe never fills.
        let (ready_tx, ready_rx) = mpsc::channel::<String>();
        let stdout = child.stdout.take().expect("stdout is piped");
        std::thread::spawn(move || {
            let mut ready_tx = Some(ready_tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.strip_prefix(READY_PREFIX)
                    && let Some(rest) = url
                        .strip_prefix("http://")
                        .or_else(|| url.strip_prefix("https://"))
                    && let Some(tx) = ready_tx.take()
                {
                    let _ = tx.send(rest.trim().to_owned());
                }
            }
        });

        let exit = Arc::new(ExitCell::default());
        spawn_waiter(child, Arc::clone(&exit));

        let addr = match ready_rx.recv_timeout(READY_TIMEOUT) {
            Ok(addr) => addr,
            Err(e) => {
                let ended = exit.wait(Duration::from_secs(2));
                if ended.is_none() {
                    exit.signal(pid, Signal::SIGKILL);
                    exit.wait(Duration::from_secs(10));
                }
                let _ = stderr_done.recv_timeout(Duration::from_secs(2));
                panic!(
                    "herald did not print its readiness line ({e}); exit: {:?}\n----- stderr -----\n{}",
                    exit.status.lock(),
                    log.lock()
                );
            }
        };
        let addr: SocketAddr = addr
            .parse()
            .unwrap_or_else(|e| panic!("readiness line names {addr:?}, not an address: {e}"));
        Herald {
            addr,
            pid,
            exit,
            log,
            config_file,
        }
    }

    /// Runs the process to completion (it is expected to exit by itself, as with
    /// `--check-config` or a bad config) and returns its status and output. Panics if it is still
    /// running after `timeout`.
    pub fn run_to_exit(self, timeout: Duration) -> Finished {
        let (mut command, config_file) = self.command();
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn herald");
        let pid = child.id();
        let stdout_log = Arc::new(Mutex::new(String::new()));
        let stderr_log = Arc::new(Mutex::new(String::new()));
        let stdout_done =
            capture_lines(child.stdout.take().expect("piped"), Arc::clone(&stdout_log));
        let stderr_done =
            capture_lines(child.stderr.take().expect("piped"), Arc::clone(&stderr_log));
        let exit = Arc::new(ExitCell::default());
        spawn_waiter(child, Arc::clone(&exit));
        let status = exit.wait(timeout);
        if status.is_none() {
            exit.signal(pid, Signal::SIGKILL);
            exit.wait(Duration::from_secs(10));
        }
        let _ = stdout_done.recv_timeout(Duration::from_secs(5));
        let _ = stderr_done.recv_timeout(Duration::from_secs(5));
        if let Some(path) = config_file {
            let _ = std::fs::remove_file(path);
        }
        let stdout = stdout_log.lock().clone();
        let stderr = stderr_log.lock().clone();
        let Some(status) = status else {
            panic!(
                "herald was still running after {timeout:?}\n----- stdout -----\n{stdout}\n----- stderr -----\n{stderr}"
            );
        };
        Finished {
            status,
            stdout,
            stderr,
        }
    }

    fn command(&self) -> (Command, Option<PathBuf>) {
        let mut command = Command::new(herald_bin());
        // An unknown HERALD_* variable is a fatal config error, so nothing of the test runner's
        // own environment (HERALD_BIN, say) may leak into the server.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("HERALD_") {
                command.env_remove(key);
            }
        }
        command.envs(&self.envs);
        // At shutdown Herald keeps serving with /readyz at 503 for
        // `shutdown.readiness_delay_ms` (2 s) before its listener closes;
        // only the tests of that delay want to wait for it.
        let delay_set = self.envs.contains_key(READINESS_DELAY_VAR)
            || self
                .config_toml
                .as_deref()
                .is_some_and(|toml| toml.contains("readiness_delay_ms"));
        if !delay_set {
            command.env(READINESS_DELAY_VAR, "0");
        }
        // Delivery lag is bounded as by default (`delivery.max_lag_ms`), but a
        // publish pushed back waits up to a minute rather than a second before
        // 503: a test publishing in bursts on a loaded machine is slowed, not
        // refused. The tests of pushback set their own wait.
        let wait_set = self.envs.contains_key(PUBLISH_WAIT_VAR)
            || self
                .config_toml
                .as_deref()
                .is_some_and(|toml| toml.contains("max_publish_wait_ms"));
        if !wait_set {
            command.env(PUBLISH_WAIT_VAR, "60000");
        }
        if !self.no_listen_flag {
            command
                .arg("--listen")
                .arg(self.listen.as_deref().unwrap_or("127.0.0.1:0"));
        }
        let config_file = self.config_toml.as_ref().map(|toml| {
            let path = temp_config_path();
            std::fs::write(&path, toml).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
            path
        });
        if let Some(path) = &config_file {
            command.arg("--config").arg(path);
        }
        command.args(&self.args);
        (command, config_file)
    }
}

/// The exit status of a child, filled in by its waiter thread.
#[derive(Default)]
struct ExitCell {
    status: Mutex<Option<ExitStatus>>,
    exited: Condvar,
}

impl ExitCell {
    /// Sends `signal` to `pid` unless the process has already been reaped.
    fn signal(&self, pid: u32, signal: Signal) {
        let status = self.status.lock();
        // While the lock is held and no status is recorded, the process is not reaped, so the pid
        // still names it (possibly as a zombie, which ignores the signal harmlessly).
        if status.is_none() {
            let pid = Pid::from_raw(i32::try_from(pid).expect("pid fits in i32"));
            kill(pid, signal).unwrap_or_else(|e| panic!("kill({pid}, {signal}): {e}"));
        }
    }

    fn wait(&self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let mut status = self.status.lock();
        while status.is_none() {
            if self.exited.wait_until(&mut status, deadline).timed_out() {
                break;
            }
        }
        *status
    }
}

/// Waits for the child on a thread of its own: first without reaping it (so the pid stays valid
/// for signals), then, under the lock, reaps it and records the status.
fn spawn_waiter(mut child: Child, exit: Arc<ExitCell>) {
    std::thread::spawn(move || {
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits in i32"));
        let _ = waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT);
        let mut status = exit.status.lock();
        *status = Some(child.wait().expect("wait for herald"));
        exit.exited.notify_all();
    });
}

/// Appends every line read from `pipe` to `log`; the returned channel disconnects at EOF.
fn capture_lines(pipe: impl Read + Send + 'static, log: Arc<Mutex<String>>) -> mpsc::Receiver<()> {
    let (done_tx, done_rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let _done = done_tx;
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => log.lock().push_str(&String::from_utf8_lossy(&line)),
            }
        }
    });
    done_rx
}

fn temp_config_path() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("herald-test-{}-{n}.toml", std::process::id()))
}

fn slash(path: &str) -> String {
    if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    }
}
