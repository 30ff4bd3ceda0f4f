//! `presence`: what a presence channel's join and leave cost on Redis
//! (docs/presence.md). Herald alone, always on Redis: `--members` native
//! WebSocket clients join one presence channel one after the other (the
//! dev site takes their `channel_data` unsigned), each waiting for its
//! `subscribed` with the member list, then leave one after the other. The
//! figures: Redis commands per join and per leave (from `INFO
//! commandstats`, less what the nodes' background work — heartbeats,
//! position keep-alives — ran at its idle rate, measured first): those the
//! node sends (function calls) and those Redis runs (commandstats counts
//! the commands inside a function too); Redis and server CPU per join, and
//! the time from subscribe to `subscribed`.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::{connect_async, tungstenite::Message as WsMessage};

use crate::{
    outcome::RunResult,
    process,
    scenario::Common,
    stats::Latency,
    target::{Preset, Running},
};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Members that join, one after the other, then leave.
    #[arg(long, default_value_t = 1_000)]
    pub members: usize,
}

/// The presence channel joined.
const CHANNEL: &str = "presence-bench";
/// How long the background command rate is measured for.
const IDLE_WINDOW: Duration = Duration::from_secs(3);

/// Redis' command counts: all calls, and the function calls among them.
#[derive(Clone, Copy, Debug, Default)]
struct Calls {
    all: f64,
    functions: f64,
}

impl Calls {
    fn minus(self, earlier: Calls) -> Calls {
        Calls {
            all: self.all - earlier.all,
            functions: self.functions - earlier.functions,
        }
    }

    fn scaled(self, factor: f64) -> Calls {
        Calls {
            all: self.all * factor,
            functions: self.functions * factor,
        }
    }
}

/// `INFO commandstats`, less the INFO calls themselves.
async fn calls(port: u16) -> anyhow::Result<Calls> {
    let output = tokio::process::Command::new("redis-cli")
        .args(["-p", &port.to_string(), "INFO", "commandstats"])
        .output()
        .await
        .context("cannot run redis-cli (install it: scripts/install-test-deps.sh)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut counted = Calls::default();
    for line in text.lines() {
        let Some((name, stats)) = line
            .strip_prefix("cmdstat_")
            .and_then(|l| l.split_once(':'))
        else {
            continue;
        };
        let Some(count) = stats
            .split(',')
            .find_map(|kv| kv.strip_prefix("calls="))
            .and_then(|n| n.parse::<f64>().ok())
        else {
            continue;
        };
        if name == "info" {
            continue;
        }
        counted.all += count;
        if name == "fcall" {
            counted.functions += count;
        }
    }
    Ok(counted)
}

/// Whether any presence channel still has members in Redis.
async fn members_left(port: u16) -> anyhow::Result<bool> {
    let output = tokio::process::Command::new("redis-cli")
        .args(["-p", &port.to_string(), "--scan", "--pattern", "*:pu:*"])
        .output()
        .await?;
    Ok(!String::from_utf8_lossy(&output.stdout).trim().is_empty())
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Reads frames until one of `kind`.
async fn until(socket: &mut Socket, kind: &str) -> anyhow::Result<()> {
    let want = format!(r#""type":"{kind}""#);
    while let Some(frame) = socket.next().await {
        if let WsMessage::Text(text) = frame? {
            if text.contains(&want) {
                return Ok(());
            }
            if text.contains(r#""type":"error""#) {
                bail!("refused: {text}");
            }
        }
    }
    bail!("the connection closed before {kind}")
}

pub async fn run(args: &Args) -> anyhow::Result<RunResult> {
    let mut target = args.common.target.clone();
    if target.target != Preset::Herald || target.addr.is_some() {
        bail!("presence measures a Herald it starts itself, on Redis");
    }
    target.redis = true;
    let running = Running::start(&target).await?;
    let (redis_port, redis_pid) = running
        .redis()
        .context("the presence scenario runs on Redis")?;
    let mut result = RunResult::new(
        "presence",
        running.preset.name(),
        format!(
            "{} members join one presence channel one after the other, then leave; Redis",
            args.members
        ),
    );
    let url = format!("ws://{}/ws", running.addrs[0]);

    // The nodes' own commands at rest, to take out of the figures.
    let idle_from = calls(redis_port).await?;
    tokio::time::sleep(IDLE_WINDOW).await;
    let background = calls(redis_port)
        .await?
        .minus(idle_from)
        .scaled(1.0 / IDLE_WINDOW.as_secs_f64());

    let mut sockets = Vec::with_capacity(args.members);
    let mut joins = Latency::new();
    let before = calls(redis_port).await?;
    let redis_before = process::sample(&[redis_pid])?;
    let server_before = process::sample(&running.pids)?;
    let started = Instant::now();
    for i in 0..args.members {
        let (mut socket, _) = connect_async(url.as_str()).await?;
        until(&mut socket, "welcome").await?;
        let channel_data = format!(r#"{{"user_id":"u{i}","user_info":{{"n":{i}}}}}"#);
        let frame =
            serde_json::json!({"type":"subscribe","channel":CHANNEL,"channel_data":channel_data});
        let sent = Instant::now();
        socket.send(WsMessage::text(frame.to_string())).await?;
        until(&mut socket, "subscribed").await?;
        joins.record(sent.elapsed().as_micros() as u64);
        sockets.push(socket);
    }
    let joining = started.elapsed().as_secs_f64();
    let redis_cpu = process::sample(&[redis_pid])?.since(&redis_before).cpu_s();
    let server_cpu = process::sample(&running.pids)?
        .since(&server_before)
        .cpu_s();
    let joined = calls(redis_port)
        .await?
        .minus(before)
        .minus(background.scaled(joining));
    let n = args.members.max(1) as f64;
    result.add(
        "functions_per_join",
        "join: commands the node sends (Herald's functions, FCALL; one round trip)",
        "",
        joined.functions / n,
    );
    result.add(
        "commands_per_join",
        "join: commands Redis runs, those inside the functions included",
        "",
        joined.all / n,
    );
    result.add(
        "redis_cpu_per_join_us",
        "Redis CPU per join",
        "µs",
        redis_cpu * 1e6 / n,
    );
    result.add(
        "server_cpu_per_join_us",
        "server CPU per join",
        "µs",
        server_cpu * 1e6 / n,
    );
    result.add_percentiles(
        "join",
        "join: subscribe to subscribed",
        &joins.percentiles(),
    );

    let before = calls(redis_port).await?;
    let redis_before = process::sample(&[redis_pid])?;
    let started = Instant::now();
    for mut socket in sockets {
        socket.close(None).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while members_left(redis_port).await? {
        if Instant::now() > deadline {
            result
                .errors
                .push("members were still listed 60 s after every leave".into());
            result.ok = false;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let leaving = started.elapsed().as_secs_f64();
    let redis_cpu = process::sample(&[redis_pid])?.since(&redis_before).cpu_s();
    let left = calls(redis_port)
        .await?
        .minus(before)
        .minus(background.scaled(leaving));
    result.add(
        "functions_per_leave",
        "leave: commands the node sends (FCALL)",
        "",
        left.functions / n,
    );
    result.add(
        "commands_per_leave",
        "leave: commands Redis runs, those inside the functions included",
        "",
        left.all / n,
    );
    result.add(
        "redis_cpu_per_leave_us",
        "Redis CPU per leave",
        "µs",
        redis_cpu * 1e6 / n,
    );
    result.add(
        "background_commands_per_s",
        "the nodes' own commands at rest, taken out",
        "/s",
        background.all,
    );
    running.stop().await;
    Ok(result)
}
