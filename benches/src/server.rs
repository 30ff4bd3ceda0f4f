//! Starting a `herald` process to measure, and reading its figures from `/proc`.

use std::{path::Path, process::Stdio, time::Duration};

use anyhow::{Context, bail};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

/// A running `herald` under measurement; killed when dropped.
pub struct Server {
    child: Child,
    pub addr: String,
    pub pid: u32,
}

impl Server {
    /// Starts `herald` on a free loopback port with `env` set and waits for its listening line.
    pub async fn start(herald: &Path, env: &[(&str, String)]) -> anyhow::Result<Server> {
        let mut command = Command::new(herald);
        command
            .args(["--listen", "127.0.0.1:0"])
            .env("HERALD_LOG_LEVEL", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {}", herald.display()))?;
        let pid = child.id().context("herald exited at once")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .context("herald did not start within 20 s")??
            .context("herald exited before listening")?;
        let Some(url) = line.strip_prefix("herald listening on http://") else {
            bail!("unexpected first line from herald: {line}");
        };
        Ok(Server {
            addr: url.to_string(),
            pid,
            child,
        })
    }

    /// The server's resident set size in bytes.
    pub fn rss(&self) -> anyhow::Result<u64> {
        rss_bytes(self.pid)
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// VmRSS of `pid`, in bytes.
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_vm_rss(&status).context("no VmRSS line")
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vm_rss() {
        let status = "Name:\therald\nVmPeak:\t  9000 kB\nVmRSS:\t    1234 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(1234 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
    }
}
