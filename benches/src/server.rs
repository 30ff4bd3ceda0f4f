//! Starting the `herald` processes to measure: one or more nodes on free
//! loopback ports, each killed when dropped, and restarting one on its port.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context, bail};
use nix::{
    sched::CpuSet,
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

use crate::cpus;

/// A running `herald` under measurement; killed when dropped.
pub struct Server {
    child: Child,
    pub addr: String,
    pub pid: u32,
    /// How it was started, to start it again.
    launch: Launch,
}

#[derive(Clone)]
struct Launch {
    herald: PathBuf,
    config: Option<PathBuf>,
    env: Vec<(String, String)>,
    cpus: Option<CpuSet>,
    args: Vec<String>,
}

/// How a node goes down when restarted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Stop {
    /// SIGTERM: Herald's graceful drain (a deploy).
    Term,
    /// SIGKILL: a crash.
    Kill,
}

impl Server {
    /// Starts `herald` on a free loopback port with `env` set (and `config`
    /// as its configuration file, if given), on `cpus` if given, and waits
    /// for its listening line.
    pub async fn start(
        herald: &Path,
        config: Option<&Path>,
        env: &[(String, String)],
        cpus: Option<&CpuSet>,
    ) -> anyhow::Result<Server> {
        Server::start_on(herald, config, env, cpus, "127.0.0.1:0", &[]).await
    }

    /// [`Server::start`] on `listen`, with `args` after the others.
    pub async fn start_on(
        herald: &Path,
        config: Option<&Path>,
        env: &[(String, String)],
        cpus: Option<&CpuSet>,
        listen: &str,
        args: &[String],
    ) -> anyhow::Result<Server> {
        let launch = Launch {
            herald: herald.to_path_buf(),
            config: config.map(Path::to_path_buf),
            env: env.to_vec(),
            cpus: cpus.copied(),
            args: args.to_vec(),
        };
        let mut command = Command::new(herald);
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        command
            .args(["--listen", listen])
            .args(args)
            .env("HERALD_LOG_LEVEL", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = cpus::spawn_on(cpus, || command.spawn()).with_context(|| {
            format!(
                "cannot start {} (build it: cargo build --release -p api)",
                herald.display()
            )
        })?;
        let pid = child.id().context("herald exited at once")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .context("herald did not start within 20 s")??;
        let Some(line) = line else {
            // Its stdout closed: it exited, and its stderr (inherited) said why.
            let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
            match status {
                Ok(Ok(status)) => bail!("herald exited before listening ({status})"),
                _ => bail!("herald closed its stdout before listening"),
            }
        };
        let url = line.strip_prefix("herald listening on ");
        let Some(url) = url.and_then(|url| {
            url.strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"))
        }) else {
            bail!("unexpected first line from herald: {line}");
        };
        Ok(Server {
            addr: url.to_string(),
            pid,
            child,
            launch,
        })
    }

    /// Stops the process as `how` says (waiting up to `GRACE` for a
    /// graceful one, then killing it) and starts it again on the same
    /// address, as before. The new process is listening when this returns.
    pub async fn restart(mut self, how: Stop) -> anyhow::Result<Server> {
        /// Longer than Herald's default `shutdown.grace_secs` plus its
        /// readiness delay.
        const GRACE: Duration = Duration::from_secs(40);
        match how {
            Stop::Kill => {
                let _ = self.child.kill().await;
            }
            Stop::Term => {
                kill(Pid::from_raw(self.pid as i32), Signal::SIGTERM)
                    .context("cannot signal herald")?;
                if tokio::time::timeout(GRACE, self.child.wait())
                    .await
                    .is_err()
                {
                    eprintln!(
                        "herald-bench: herald did not exit within {GRACE:?} of SIGTERM; killed"
                    );
                    let _ = self.child.kill().await;
                }
            }
        }
        let launch = &self.launch;
        Server::start_on(
            &launch.herald,
            launch.config.as_deref(),
            &launch.env,
            launch.cpus.as_ref(),
            &self.addr,
            &launch.args,
        )
        .await
    }

    /// Stops the process (SIGKILL: a benchmark does not measure shutdown).
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
