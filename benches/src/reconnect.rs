//! The `reconnect` scenario: N clients on one channel, a publisher at a
//! steady rate; then every client drops its connection at once and
//! reconnects, resuming where it was (`since` on Herald's WebSocket,
//! `Last-Event-ID` on SSE). Reports the accept rate, the time until every
//! client had what it missed, and messages lost, which must be 0.
//!
//! The server's CPU per reconnect is its CPU from the drop until the last
//! client was back (sampled every 100 ms, so up to 100 ms more), divided by
//! the reconnects: it includes the deliveries made meanwhile, which at 20
//! msg/s to 10,000 clients are not small. Sampling goes on past the end of
//! publishing until the clients' reports are in, since the last clients of
//! a slow storm come back only then.
//!
//! Publishing uses one connection, so sequence numbers follow the channel's
//! order and a gap in a client's sequence is a lost message.
//!
//! With `--restart term|kill` the clients do not drop: the Herald node is
//! restarted on its port instead (SIGTERM and its graceful drain, or SIGKILL,
//! a crash), on the Redis engine, whose history outlives the node. Every
//! client comes back as a client library would: at once when the server
//! closes it (not waiting out the drain's advice to spread over
//! `shutdown.reconnect_jitter_ms`: the harshest storm), then with
//! full-jitter backoff (50 ms doubling to 2 s) while refused. The publisher
//! sends each message until accepted, with an `Idempotency-Key`, so the
//! clients can expect every one. Times are counted from the signal; the CPU
//! per reconnect is the new node's (and Redis') from listening until the
//! last client was back.

use std::time::Duration;

use anyhow::bail;
use tokio::sync::watch;

use crate::{
    client::Transport,
    outcome::RunResult,
    process::{self, Sample},
    publisher::{Channels, Pace, Publisher},
    scenario::{Common, Session, Tracking, describe},
    server::Stop,
    target::Protocol,
    worker::Command,
};

/// How long the clients may take, once publishing stopped, to have every
/// message.
const DRAIN: Duration = Duration::from_secs(10);

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Clients, all on one channel.
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Messages per second published throughout.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Seconds of publishing before the drop.
    #[arg(long, default_value_t = 3)]
    pub before: u64,
    /// Seconds of publishing after the drop (recovery must finish within it).
    #[arg(long, default_value_t = 10)]
    pub after: u64,
    /// Spread the reconnects evenly over this many milliseconds (0: all at once).
    #[arg(long, default_value_t = 0)]
    pub spread_ms: u64,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Instead of the clients dropping, restart the Herald node on its port
    /// (needs --redis): `term` (graceful drain) or `kill` (a crash).
    #[arg(long, value_enum)]
    pub restart: Option<Stop>,
}

pub async fn run(args: &Args) -> anyhow::Result<RunResult> {
    let common = &args.common;
    let templates = common.target.templates();
    if common.transport == Transport::Ws && templates.protocol == Protocol::Plain {
        bail!(
            "{} WebSocket subscribers carry no message ids here, so they cannot resume; use --transport sse",
            common.target.target.name()
        );
    }
    if common.transport == Transport::Poll && templates.protocol != Protocol::Herald {
        bail!(
            "{} long-poll clients resume by Last-Modified and Etag, which the bench keeps only \
             while a client polls; use --transport sse",
            common.target.target.name()
        );
    }
    if args.restart.is_some() && !common.target.redis {
        bail!("--restart needs history that outlives the node: add --redis");
    }
    let what = match args.restart {
        None => "all drop at once",
        Some(Stop::Term) => "the node restarted (SIGTERM)",
        Some(Stop::Kill) => "the node restarted (SIGKILL)",
    };
    let setup = format!(
        "{}, {} msg/s, {what}{}",
        describe(args.clients, common.transport, "clients on one channel"),
        args.rate,
        if args.spread_ms > 0 && args.restart.is_none() {
            format!(" and reconnect over {} ms", args.spread_ms)
        } else {
            String::new()
        }
    );
    let mut common = common.clone();
    let tracking = if args.restart.is_some() {
        // No load balancer here to take the node out first.
        common
            .target
            .herald_env
            .push("HERALD_SHUTDOWN_READINESS_DELAY_MS=0".into());
        Tracking::Follow
    } else {
        Tracking::Sequence
    };
    let common = &common;
    let mut session = Session::open(
        common,
        "reconnect",
        args.clients,
        Some(String::new()),
        tracking,
    )
    .await?;
    let mut result = RunResult::new("reconnect", session.running.preset.name(), setup);
    let mut publisher = Publisher::new(
        session.running.templates.clone(),
        session.running.addrs[0].clone(),
        Channels::Shared(session.running.templates.shared_channel.clone()),
        args.size,
        1,
    );
    if args.restart.is_some() {
        publisher = publisher.retrying();
    }
    let frontier = session.fleet.frontier();
    let total = Duration::from_secs(args.before + args.after);
    session.ui.phase("publishing");
    let pids = session.running.pids.clone();
    let (stop_sampling, stop) = watch::channel(false);
    // Bounded: past publishing and the drain, the clients' reports are due.
    let sampling_limit = Duration::from_secs(args.after) + DRAIN + Duration::from_secs(5);
    let (published, storm_start) = {
        let publishing = publisher.run(Pace::Rate(args.rate), total, u64::MAX, frontier.clone());
        let storming = async {
            tokio::time::sleep(Duration::from_secs(args.before)).await;
            let at = crate::now_us();
            match args.restart {
                None => {
                    session.ui.phase("dropping every connection");
                    let sampler = tokio::spawn(sample_storm(pids, at, sampling_limit, stop));
                    let sent = session
                        .fleet
                        .send(&Command::Drop {
                            spread_ms: args.spread_ms,
                        })
                        .await;
                    sent.map(|()| Storm {
                        at,
                        listening: at,
                        sampler,
                    })
                }
                Some(how) => {
                    session.ui.phase("restarting the node");
                    let restarted = session.running.restart(0, how).await;
                    let listening = crate::now_us();
                    // The new process, from its start: the old one is gone.
                    let pids = session.running.pids.clone();
                    let sampler = tokio::spawn(sample_storm(pids, listening, sampling_limit, stop));
                    restarted.map(|()| Storm {
                        at,
                        listening,
                        sampler,
                    })
                }
            }
        };
        let (published, storm) = tokio::join!(publishing, storming);
        (published, storm?)
    };
    let drop_at = storm_start.at;
    session.ui.phase("draining");
    let last = publisher.last_seq();
    let mut done = frontier.clone();
    let drained = tokio::time::timeout(DRAIN, done.wait_for(|&d| d >= last))
        .await
        .is_ok_and(|r| r.is_ok());
    let report = session.fleet.finish(Some(last)).await?;
    let _ = stop_sampling.send(true);
    let storm = storm_start.sampler.await.unwrap_or_default();

    session.add_connection_figures(&mut result, args.clients);
    result.add(
        "published",
        "messages published",
        "",
        published.accepted as f64,
    );
    result.add(
        "pushback",
        "publish calls pushed back (503, nothing published)",
        "",
        published.pushback as f64,
    );
    result.add(
        "reconnected",
        "clients reconnected",
        "",
        report.reconnected as f64,
    );
    result.add(
        "recovered",
        "clients recovered with no gap",
        "",
        report.recovered as f64,
    );
    if args.restart.is_some() {
        result.add(
            "retried",
            "publish calls sent again (the node was down)",
            "",
            published.retried as f64,
        );
        result.add(
            "down_ms",
            "the signal to the new node listening",
            "ms",
            storm_start.listening.saturating_sub(drop_at) as f64 / 1e3,
        );
        result.add(
            "all_back_ms",
            "the signal to the last client recovered",
            "ms",
            report
                .last_recovered_us
                .map(|last| last.saturating_sub(drop_at) as f64 / 1e3),
        );
    }
    // From the new node listening, after a restart: before it, every
    // attempt was refused.
    let span = report
        .last_reconnect_us
        .map(|last| last.saturating_sub(storm_start.listening) as f64 / 1e6);
    result.add(
        "accept_rate",
        "reconnects accepted per second",
        "/s",
        span.filter(|&s| s > 0.0)
            .map(|s| report.reconnected as f64 / s),
    );
    result.add(
        "cpu_us_per_reconnect",
        if args.restart.is_some() {
            "server CPU per reconnect, the new node listening to the last reconnect (deliveries \
             meanwhile included)"
        } else {
            "server CPU per reconnect, drop to last reconnect (deliveries meanwhile included)"
        },
        "µs",
        report
            .last_reconnect_us
            .and_then(|last| cpu_until(&storm, last))
            .filter(|_| report.reconnected > 0)
            .map(|cpu_s| cpu_s * 1e6 / report.reconnected as f64),
    );
    result.add_percentiles(
        "reconnect",
        "time to reconnect",
        &report.reconnect_time.percentiles(),
    );
    let recover = report.recover_time.percentiles();
    result.add(
        "all_recovered_ms",
        "time until all recovered",
        "ms",
        (recover.count > 0).then_some(recover.max),
    );
    result.add(
        "recover_p50",
        "time to recover p50",
        "ms",
        (recover.count > 0).then_some(recover.p50),
    );
    result.add("lost", "messages lost", "", report.lost as f64);
    result.add(
        "duplicates",
        "messages received twice",
        "",
        report.duplicates as f64,
    );
    result.add(
        "closed",
        "connections closed by the server",
        "",
        report.closed as f64,
    );
    result.errors = report.errors;
    if let Some(error) = published.first_error {
        result.errors.push(format!("publish: {error}"));
    }
    // The clients expect every sequence number up to the last one given
    // out, so a publish pushed back (nothing published) shows as one message
    // lost by each client: said here, so that it is not read as a loss.
    if published.pushback > 0 {
        result.errors.push(format!(
            "{} publish call(s) answered 503 with Retry-After (delivery lagging, nothing \
             published), which every client counts as lost",
            published.pushback
        ));
    }
    if report.lost > 0
        || report.duplicates > 0
        || report.recovered < session.connected
        || report.failed > 0
        || !drained
    {
        result.ok = false;
    }
    session.close().await;
    Ok(result)
}

/// The storm under way: when it began (the drop, or the restart's signal),
/// when the server was listening again (the same for a drop), and the CPU
/// sampler started then.
struct Storm {
    at: u64,
    listening: u64,
    sampler: tokio::task::JoinHandle<Vec<(u64, Sample)>>,
}

/// Samples the server's CPU every 100 ms from the drop at `drop_us` (the
/// first sample at once) until told to stop (then once more) or `limit`
/// after the drop, as `(µs since the epoch, sample)`. A failed sample (the
/// server gone) ends it.
async fn sample_storm(
    pids: Vec<u32>,
    drop_us: u64,
    limit: Duration,
    mut stop: watch::Receiver<bool>,
) -> Vec<(u64, Sample)> {
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let end = drop_us + limit.as_micros() as u64;
    loop {
        // Told to stop, it takes one last sample: the last reconnect may be
        // less than a tick before.
        let stopped = tokio::select! {
            _ = tick.tick() => false,
            _ = stop.wait_for(|&stop| stop) => true,
        };
        let now = crate::now_us();
        let Ok(sample) = process::sample(&pids) else {
            return samples;
        };
        samples.push((now.max(drop_us), sample));
        if stopped || now >= end {
            return samples;
        }
    }
}

/// Server CPU seconds from the first sample to the first one at or after
/// `until_us`; `None` if no sample came that late.
fn cpu_until(samples: &[(u64, Sample)], until_us: u64) -> Option<f64> {
    let (_, first) = samples.first()?;
    let (_, last) = samples.iter().find(|(at, _)| *at >= until_us)?;
    Some(last.since(first).cpu_s())
}
