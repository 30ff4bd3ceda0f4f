//! `publish`: what one publish costs the server, by each way in. Herald is
//! measured through `POST /api/publish`, its Meteor controller port
//! (`ADDMESSAGE` on a persistent connection, as StatusNet's Meteor plugin
//! publishes) and its STOMP port (`SEND` with a receipt, as the Orbited
//! plugin's `Stomp.php` does, on one connection); Nchan through its HTTP
//! publish. One publish at a time, each waiting for its answer, to one
//! channel nobody subscribes to, so that the figure is the publish path
//! alone: server CPU per publish from `/proc`, and the call's time.

use std::time::Instant;

use anyhow::{Context, bail};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

use crate::{
    client::payload,
    http::{HttpConn, Url},
    nchan,
    outcome::RunResult,
    process,
    scenario::Common,
    stats::Latency,
    target::{Preset, Running, Templates, fill},
};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Publishes measured per way in.
    #[arg(long, default_value_t = 20_000)]
    pub messages: usize,
    /// Publishes made before measuring, per way in.
    #[arg(long, default_value_t = 1_000)]
    pub warmup_messages: usize,
}

/// The channel published to; nobody subscribes to it.
const CHANNEL: &str = "bench";
/// The payload's size, as in the other scenarios.
const PAYLOAD_BYTES: usize = 100;

/// One way to publish, connected.
enum Way {
    Http {
        conn: HttpConn,
        method: String,
        path: String,
        body: String,
    },
    Meteor(BufReader<TcpStream>),
    Stomp(BufReader<TcpStream>),
}

impl Way {
    /// The key and words of its figures.
    fn names(&self) -> (&'static str, &'static str) {
        match self {
            Way::Http { .. } => ("http", "HTTP publish"),
            Way::Meteor(_) => ("meteor", "Meteor ADDMESSAGE"),
            Way::Stomp(_) => ("stomp", "STOMP SEND"),
        }
    }

    fn http(addr: &str, templates: &Templates) -> anyhow::Result<Way> {
        let url = Url::parse(&fill(&templates.publish_url, addr, CHANNEL))?;
        Ok(Way::Http {
            conn: HttpConn::new(&url.authority),
            method: templates.publish_method.clone(),
            path: url.path,
            body: fill(&templates.publish_body, addr, CHANNEL),
        })
    }

    async fn meteor(port: u16) -> anyhow::Result<Way> {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .context("cannot reach Herald's Meteor port")?;
        stream.set_nodelay(true)?;
        Ok(Way::Meteor(BufReader::new(stream)))
    }

    async fn stomp(port: u16) -> anyhow::Result<Way> {
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .context("cannot reach Herald's STOMP port")?;
        stream.set_nodelay(true)?;
        stream
            .write_all(b"CONNECT\nlogin: default\npasscode: x\n\n\0\n")
            .await?;
        let mut stream = BufReader::new(stream);
        let reply = read_frame(&mut stream).await?;
        if !reply.starts_with(b"CONNECTED") {
            bail!("STOMP CONNECT answered {}", String::from_utf8_lossy(&reply));
        }
        Ok(Way::Stomp(stream))
    }

    /// Publishes `data` (JSON) and waits for the server's answer.
    async fn publish(&mut self, data: &str) -> anyhow::Result<()> {
        match self {
            Way::Http {
                conn,
                method,
                path,
                body,
            } => {
                let body = body.replace("{payload}", data);
                let (status, answer) = conn.request(method, path, body.as_bytes()).await?;
                if !(200..300).contains(&status) {
                    bail!(
                        "publish answered {status}: {}",
                        String::from_utf8_lossy(&answer)
                    );
                }
            }
            Way::Meteor(stream) => {
                // The plugin's escaping: addslashes(json_encode(...)).
                let text = data.replace('\\', "\\\\").replace('"', "\\\"");
                let line = format!("ADDMESSAGE {CHANNEL} {text}\n");
                stream.get_mut().write_all(line.as_bytes()).await?;
                let mut reply = String::new();
                stream.read_line(&mut reply).await?;
                if !reply.starts_with("OK\t") {
                    bail!("ADDMESSAGE answered {reply:?}");
                }
            }
            Way::Stomp(stream) => {
                let frame = format!("SEND\ndestination: /{CHANNEL}\nreceipt: r\n\n{data}\0\n");
                stream.get_mut().write_all(frame.as_bytes()).await?;
                let reply = read_frame(stream).await?;
                if !reply.starts_with(b"RECEIPT") {
                    bail!("SEND answered {}", String::from_utf8_lossy(&reply));
                }
            }
        }
        Ok(())
    }
}

/// Reads one STOMP frame, through its NUL and the LF after it.
async fn read_frame(stream: &mut BufReader<TcpStream>) -> anyhow::Result<Vec<u8>> {
    let mut frame = Vec::new();
    stream.read_until(0, &mut frame).await?;
    if frame.last() != Some(&0) || stream.read_u8().await? != b'\n' {
        bail!("the STOMP port closed mid-frame");
    }
    Ok(frame)
}

pub async fn run(args: &Args) -> anyhow::Result<crate::outcome::RunResult> {
    let mut target = args.common.target.clone();
    let herald = target.target == Preset::Herald && target.addr.is_none();
    let (meteor_port, stomp_port) = (nchan::free_port()?, nchan::free_port()?);
    if herald {
        target
            .herald_env
            .push(format!("HERALD_METEOR_LISTEN=127.0.0.1:{meteor_port}"));
        target
            .herald_env
            .push(format!("HERALD_STOMP_LISTEN=127.0.0.1:{stomp_port}"));
    }
    let running = Running::start(&target).await?;
    let mut result = RunResult::new(
        "publish",
        running.preset.name(),
        format!(
            "{} publishes per way in, one at a time, {PAYLOAD_BYTES}-byte JSON, no subscriber",
            args.messages
        ),
    );
    let addr = running.addrs[0].clone();
    let mut ways = vec![Way::http(&addr, &running.templates)?];
    if herald {
        ways.push(Way::meteor(meteor_port).await?);
        ways.push(Way::stomp(stomp_port).await?);
    }
    for mut way in ways {
        let (key, label) = way.names();
        for seq in 0..args.warmup_messages as u64 {
            way.publish(&payload(crate::now_us(), seq, PAYLOAD_BYTES))
                .await?;
        }
        let mut calls = Latency::new();
        let before = process::sample(&running.pids)?;
        // With the bench's own Redis, its CPU apart too (the server's
        // figures count it with the node's, as every scenario does).
        let redis_pid = running.redis().map(|(_, pid)| pid);
        let redis_before = redis_pid.map(|pid| process::sample(&[pid])).transpose()?;
        let started = Instant::now();
        for seq in 0..args.messages as u64 {
            let data = payload(crate::now_us(), seq, PAYLOAD_BYTES);
            let call = Instant::now();
            way.publish(&data).await?;
            calls.record(call.elapsed().as_micros() as u64);
        }
        let elapsed = started.elapsed().as_secs_f64();
        let usage = process::sample(&running.pids)?.since(&before);
        let redis_usage = match (redis_pid, redis_before) {
            (Some(pid), Some(before)) => Some(process::sample(&[pid])?.since(&before)),
            _ => None,
        };
        let per_publish = |seconds: f64| seconds * 1e6 / args.messages.max(1) as f64;
        result.add(
            &format!("{key}_rate"),
            &format!("{label}: publishes per second"),
            "/s",
            args.messages as f64 / elapsed,
        );
        result.add(
            &format!("{key}_cpu_us"),
            &format!("{label}: server CPU per publish"),
            "µs",
            per_publish(usage.cpu_s()),
        );
        result.add(
            &format!("{key}_user_us"),
            &format!("{label}: … of it user"),
            "µs",
            per_publish(usage.user_s),
        );
        result.add(
            &format!("{key}_sys_us"),
            &format!("{label}: … of it system"),
            "µs",
            per_publish(usage.sys_s),
        );
        if let Some(redis) = redis_usage {
            // The node's own commands at rest (heartbeats) are in it too,
            // spread over the publishes: not taken out.
            result.add(
                &format!("{key}_redis_cpu_us"),
                &format!("{label}: Redis CPU per publish (its own process)"),
                "µs",
                per_publish(redis.cpu_s()),
            );
        }
        let p = calls.percentiles();
        result.add(
            &format!("{key}_call_p50"),
            &format!("{label}: call p50"),
            "ms",
            p.p50,
        );
        result.add(
            &format!("{key}_call_p99"),
            &format!("{label}: call p99"),
            "ms",
            p.p99,
        );
    }
    running.stop().await;
    Ok(result)
}
