//! A `redis-server` of the bench's own, for runs with several Herald nodes
//! sharing the Redis engine (`--redis`).

use std::{process::Stdio, time::Duration};

use anyhow::{Context, bail};
use nix::sched::CpuSet;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    process::{Child, Command},
};

use crate::cpus;

/// A Redis on a free loopback port, without persistence; killed on drop.
pub struct RedisServer {
    child: Child,
    pub port: u16,
    pub pid: u32,
}

impl RedisServer {
    /// Starts `redis-server`, on `cpus` if given, and waits until it answers.
    pub async fn start(cpus: Option<&CpuSet>) -> anyhow::Result<RedisServer> {
        let port = crate::nchan::free_port()?;
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let mut child = cpus::spawn_on(cpus, || command.spawn())
            .context("cannot start redis-server (install it: scripts/install-test-deps.sh)")?;
        let pid = child.id().context("redis-server exited at once")?;
        for _ in 0..200 {
            if ping(port).await {
                return Ok(RedisServer { child, port, pid });
            }
            if child.try_wait()?.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let _ = child.kill().await;
        bail!("redis-server on port {port} did not answer PING within 5 s")
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

async fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let mut answer = [0u8; 7];
    stream.write_all(b"PING\r\n").await.is_ok()
        && stream.read_exact(&mut answer).await.is_ok()
        && &answer == b"+PONG\r\n"
}
