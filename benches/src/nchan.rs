//! Running Nchan (nginx with `libnginx-mod-nchan`) as the peer to compare
//! with, or a plain nginx terminating TLS in front of Herald (`--tls-proxy`):
//! `benches/nchan/setup.sh` installs it and writes the config; nginx then
//! runs in the foreground as this process' child, so the bench knows
//! exactly which PIDs it started and stops only those.

use std::{path::PathBuf, process::Stdio, time::Duration};

use anyhow::{Context, bail};
use nix::{sched::CpuSet, sys::signal, unistd::Pid};
use tokio::process::{Child, Command};

use crate::{cert::Certs, cpus};

/// The setup script, embedded so that the binary works from any directory.
const SETUP_SCRIPT: &str = include_str!("../nchan/setup.sh");

/// What a private nginx instance serves.
pub enum Site<'a> {
    /// Nchan's publisher and subscriber locations; with certificates, its
    /// listener speaks TLS alone (`listen … ssl`).
    Nchan { certs: Option<&'a Certs> },
    /// TLS terminated and proxied to `upstream` (`host:port`, plain HTTP),
    /// WebSocket upgrades included.
    TlsProxy { upstream: String, certs: &'a Certs },
}

/// A private nginx instance with Nchan (or a TLS proxy, [`Site`]).
pub struct Nchan {
    /// The nginx master, our child.
    master: Child,
    pub master_pid: u32,
    /// Its worker processes, found once it listens.
    pub worker_pids: Vec<u32>,
    pub addr: String,
    /// Prefix folder with `nginx.conf`, logs and temp files.
    dir: PathBuf,
    /// Set once [`Nchan::stop`] has run; otherwise dropping kills the PIDs.
    stopped: bool,
}

impl Nchan {
    /// Installs nginx and Nchan if missing, writes the config of `site`
    /// under a fresh folder in `base`, and starts nginx on a free loopback
    /// port, on `cpus` if given.
    pub async fn start_site(
        base: &std::path::Path,
        cpus: Option<&CpuSet>,
        site: &Site<'_>,
    ) -> anyhow::Result<Nchan> {
        let port = free_port()?;
        let dir = base.join(format!("nchan-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let script = dir.join("setup.sh");
        std::fs::write(&script, SETUP_SCRIPT)?;
        run_script(&script, &["install"]).await?;
        let text = |path: &std::path::Path| path.to_string_lossy().into_owned();
        let mut config = vec!["config".to_string(), text(&dir), port.to_string()];
        match site {
            Site::Nchan { certs: None } => {}
            Site::Nchan { certs: Some(certs) } => {
                config.extend([text(&certs.cert), text(&certs.key)]);
            }
            Site::TlsProxy { upstream, certs } => {
                config[0] = "proxy".into();
                config.extend([upstream.clone(), text(&certs.cert), text(&certs.key)]);
            }
        }
        let config: Vec<&str> = config.iter().map(String::as_str).collect();
        run_script(&script, &config).await?;
        let conf = dir.join("nginx.conf");
        let mut command = Command::new("nginx");
        command
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let master = cpus::spawn_on(cpus, || command.spawn()).context("cannot start nginx")?;
        let master_pid = master.id().context("nginx exited at once")?;
        let addr = format!("127.0.0.1:{port}");
        let mut nchan = Nchan {
            master,
            master_pid,
            worker_pids: Vec::new(),
            addr,
            dir,
            stopped: false,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = nchan.master.try_wait()? {
                bail!("nginx exited with {status}; see {}", nchan.dir.display());
            }
            let workers = crate::process::children_of(master_pid);
            if !workers.is_empty() && tokio::net::TcpStream::connect(&nchan.addr).await.is_ok() {
                nchan.worker_pids = workers;
                // The workers inherited the master's CPUs when it forked
                // them; pinned again by PID, they stay on them even if the
                // configuration ever gives them an affinity of their own.
                if let Some(cpus) = cpus {
                    for &pid in &nchan.worker_pids {
                        cpus::pin_process(pid, cpus)
                            .with_context(|| format!("cannot pin nginx worker {pid}"))?;
                    }
                }
                return Ok(nchan);
            }
            if tokio::time::Instant::now() > deadline {
                nchan.stop().await;
                bail!("nginx did not listen on 127.0.0.1:{port} within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.master_pid];
        pids.extend(&self.worker_pids);
        pids
    }

    /// Fast shutdown (SIGTERM to the master, which stops its workers); after
    /// 5 s, SIGKILL to the master and the workers it had. Only PIDs this
    /// process started are signalled.
    pub async fn stop(mut self) {
        let _ = signal::kill(
            Pid::from_raw(self.master_pid as i32),
            signal::Signal::SIGTERM,
        );
        let exited = tokio::time::timeout(Duration::from_secs(5), self.master.wait()).await;
        if exited.is_err() {
            for pid in self.pids() {
                let _ = signal::kill(Pid::from_raw(pid as i32), signal::Signal::SIGKILL);
            }
            let _ = self.master.wait().await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        self.stopped = true;
    }
}

impl Drop for Nchan {
    /// A run cut short (an error, its time limit) still leaves no nginx
    /// behind, nor its folder: SIGKILL to the master and the workers this
    /// process started.
    fn drop(&mut self) {
        if !self.stopped {
            for pid in self.pids() {
                let _ = signal::kill(Pid::from_raw(pid as i32), signal::Signal::SIGKILL);
            }
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

async fn run_script(script: &std::path::Path, args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new("bash")
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .status()
        .await
        .context("cannot run bash")?;
    if !status.success() {
        bail!(
            "benches/nchan/setup.sh {} failed ({status})",
            args.join(" ")
        );
    }
    Ok(())
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
