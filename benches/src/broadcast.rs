//! The `broadcast` scenario (N subscribers on one channel) and the
//! `channels` scenario (N users, each on a channel of their own): publish at
//! a fixed rate, closed loop on delivery (`--window`) or closed loop on the
//! publish call (`--in-flight`), and measure deliveries per second, server
//! CPU per delivery (user and system apart), deliveries per write system
//! call, delivery latency from the timestamp in each payload, how long each
//! publish call took, how often the server pushed back (503 with
//! `Retry-After`), and how busy the load generator itself was (its worker
//! processes, and this process, which publishes): a load generator near
//! 100 % of its core is what the latency then measures.
//!
//! Phases: connect; warm up (publishing, not measured) and drain; reset the
//! workers' counters; publish for the measured duration; drain (until every
//! subscriber has every message, or 10 s). CPU and deliveries count from the
//! reset to the end of the drain.
//!
//! Long-poll subscribers (`--transport poll`) poll again from each answer's
//! position as soon as it arrives; they track the payloads' sequence
//! numbers on the shared channel of `broadcast`, and a gap or a duplicate
//! fails the run: the cursor (Herald) or the message id (Nchan) makes
//! long-poll lossless.

use std::time::Duration;

use tokio::sync::watch;

use crate::{
    client::Transport,
    lag::{self, quantile},
    outcome::RunResult,
    process,
    publisher::{Channels, Pace, Publisher},
    queues,
    scenario::{Common, Session, Tracking, describe},
    stats::{bytes_per_connection, cpu_per_million, ratio},
    target::Preset,
    worker::Command,
};

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Subscribers, all on one channel.
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    #[command(flatten)]
    pub load: Load,
}

#[derive(clap::Args, Clone, Debug)]
pub struct ChannelsArgs {
    #[command(flatten)]
    pub common: Common,
    /// Users, each subscribed to a channel of their own.
    #[arg(long, default_value_t = 1000)]
    pub users: usize,
    #[command(flatten)]
    pub load: Load,
}

/// How messages are published.
#[derive(clap::Args, Clone, Debug)]
pub struct Load {
    /// Messages per second (open loop); without it, closed loop at saturation.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Closed loop on delivery: messages allowed on their way to some
    /// subscriber at once (default: 4 for broadcast, 256 for channels, where
    /// each message has one receiver).
    #[arg(long, conflicts_with = "in_flight")]
    pub window: Option<u64>,
    /// Closed loop on the publish call, for saturation: N publish calls at
    /// once (one connection each), each starting the next as soon as its
    /// answer comes; messages on their way to subscribers are not limited.
    /// A 503 with Retry-After is counted as pushback and honoured.
    #[arg(long, value_name = "N", conflicts_with = "rate",
          value_parser = clap::value_parser!(u16).range(1..=MAX_IN_FLIGHT))]
    pub in_flight: Option<u16>,
    /// Seconds of measured publishing.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Seconds of publishing before the measurement.
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
    /// Payload size in bytes (JSON with a timestamp, a sequence number and padding).
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Concurrent publish connections (with --in-flight, one per call instead).
    #[arg(long, default_value_t = 4)]
    pub publishers: usize,
    /// Most messages per phase, whatever the rate.
    #[arg(long, default_value_t = 1_000_000)]
    pub max_messages: u64,
}

/// Most publish calls `--in-flight` keeps going: each is a connection.
const MAX_IN_FLIGHT: i64 = 1024;

impl Load {
    fn pace(&self, shared: bool) -> Pace {
        match (self.rate, self.in_flight) {
            (_, Some(calls)) => Pace::InFlight(calls.into()),
            (Some(rate), None) if rate > 0.0 => Pace::Rate(rate),
            _ => Pace::Window(self.window(shared)),
        }
    }

    fn window(&self, shared: bool) -> u64 {
        self.window.unwrap_or(if shared { 4 } else { 256 }).max(1)
    }

    fn describe(&self, shared: bool) -> String {
        match self.pace(shared) {
            Pace::Rate(rate) => format!("{rate} msg/s"),
            Pace::Window(window) => format!("closed loop (window {window})"),
            Pace::InFlight(1) => "closed loop (1 publish call in flight)".into(),
            Pace::InFlight(calls) => format!("closed loop ({calls} publish calls in flight)"),
        }
    }
}

pub async fn run(args: &Args) -> anyhow::Result<RunResult> {
    let setup = format!(
        "{}, {}",
        describe(
            args.subscribers,
            args.common.transport,
            "subscribers on one channel"
        ),
        args.load.describe(true)
    );
    deliver(
        &args.common,
        &args.load,
        "broadcast",
        setup,
        args.subscribers,
        true,
    )
    .await
}

pub async fn run_channels(args: &ChannelsArgs) -> anyhow::Result<RunResult> {
    let setup = format!(
        "{}, {}",
        describe(args.users, args.common.transport, "users on a channel each"),
        args.load.describe(false)
    );
    deliver(
        &args.common,
        &args.load,
        "channels",
        setup,
        args.users,
        false,
    )
    .await
}

async fn deliver(
    common: &Common,
    load: &Load,
    scenario: &str,
    setup: String,
    count: usize,
    shared: bool,
) -> anyhow::Result<RunResult> {
    if !common.target.shared_delivery() {
        anyhow::bail!(
            "{} nodes on the memory engine do not share messages; pass --herald-env HERALD_ENGINE=redis",
            common.target.nodes
        );
    }
    let channel = shared.then(String::new);
    // Long-poll is lossless only through its cursor: every delivery is
    // checked. On one shared channel each subscriber gets every sequence
    // number; on a channel each, the numbers are spread over the channels.
    let tracking = if shared && common.transport == Transport::Poll {
        Tracking::Sequence
    } else {
        Tracking::Counts
    };
    let mut session = Session::open(common, scenario, count, channel, tracking).await?;
    let mut result = RunResult::new(scenario, session.running.preset.name(), setup);
    let per_node = session.connections_per_node().await;
    let templates = session.running.templates.clone();
    let channels = if shared {
        Channels::Shared(templates.shared_channel.clone())
    } else {
        Channels::Users(count)
    };
    let publisher = Publisher::new(
        templates,
        session.running.addrs[0].clone(),
        channels,
        load.size,
        load.publishers,
    );
    // Closed loop waits on "every subscriber has it" for a shared channel,
    // and on "its one subscriber has it" for a channel each.
    let done = if shared {
        session.fleet.frontier()
    } else {
        session.fleet.received_total()
    };
    let pace = load.pace(shared);

    session.ui.phase("warming up");
    publisher
        .run(
            pace,
            Duration::from_secs(load.warmup),
            load.max_messages,
            done.clone(),
        )
        .await;
    drain(&done, publisher.accepted_total(), Duration::from_secs(5)).await;

    session.fleet.send(&Command::Reset).await?;
    let counters_before = session.herald_counters().await;
    let before = process::sample(&session.running.pids)?;
    let bench_pids = (session.fleet.pids(), [std::process::id()]);
    let workers_before = process::sample(&bench_pids.0)?;
    let own_before = process::sample(&bench_pids.1)?;
    let lag = (session.running.preset == Preset::Herald)
        .then(|| lag::start(&session.running.metrics_addrs));
    let queue_sampler = queues::start(&session.running.addrs);
    session.ui.phase("measuring");
    let published = publisher
        .run(
            pace,
            Duration::from_secs(load.duration),
            load.max_messages,
            done.clone(),
        )
        .await;
    let publish_end = process::sample(&session.running.pids)?;
    let lag_samples = match lag {
        Some(lag) => lag.finish().await,
        None => Vec::new(),
    };
    let queued = queues::mean(&queue_sampler.finish().await);
    session.ui.phase("draining");
    let drained = drain(&done, publisher.accepted_total(), Duration::from_secs(10)).await;
    let after = process::sample(&session.running.pids)?;
    let workers = process::sample(&bench_pids.0)?.since(&workers_before);
    let own = process::sample(&bench_pids.1)?.since(&own_before);
    let counters_after = session.herald_counters().await;
    // With every sequence number accepted, a tracking client that stopped
    // short of the last one lost the rest.
    let last = (tracking != Tracking::Counts && publisher.accepted_total() == publisher.last_seq())
        .then(|| publisher.last_seq());
    let report = session.fleet.finish(last).await?;

    let usage = after.since(&before);
    let received = report.received;
    let alive = session.connected.saturating_sub(report.closed);
    let expected = if shared {
        published.accepted * alive
    } else {
        published.accepted
    };
    session.add_connection_figures(&mut result, count);
    // The servers' RSS (every node, and Redis) once the last connection
    // step opened, against before the first: memory per subscriber.
    let connected_rss = session.rss_curve.last().map_or(0, |&(_, rss)| rss);
    result.add(
        "bytes_per_conn",
        "server RSS per connection, all open",
        "B",
        bytes_per_connection(session.before.rss, connected_rss, session.connected),
    );
    if per_node.len() > 1 {
        let fewest = per_node.iter().copied().fold(f64::INFINITY, f64::min);
        let most = per_node.iter().copied().fold(0.0, f64::max);
        result.add(
            "node_conns_min",
            "connections on the least loaded node",
            "",
            fewest,
        );
        result.add(
            "node_conns_max",
            "connections on the most loaded node",
            "",
            most,
        );
    }
    result.add(
        "closed",
        "connections closed by the server",
        "",
        report.closed as f64,
    );
    result.add(
        "published",
        "messages published",
        "",
        published.accepted as f64,
    );
    result.add(
        "publish_rate",
        "publish rate achieved",
        "msg/s",
        published.accepted as f64 / publish_end.since(&before).wall_s.max(1e-3),
    );
    result.add(
        "publish_failed",
        "publish calls failed",
        "",
        published.failed as f64,
    );
    result.add(
        "pushback",
        "publish calls pushed back (503 with Retry-After)",
        "",
        published.pushback as f64,
    );
    result.add(
        "pushback_wait",
        "… Retry-After waited, all connections together",
        "s",
        published.pushback_wait_s,
    );
    result.add("deliveries", "deliveries", "", received as f64);
    result.add(
        "missing",
        "deliveries missing at the end",
        "",
        expected.saturating_sub(received) as f64,
    );
    if tracking != Tracking::Counts {
        result.add(
            "lost",
            "deliveries lost (gaps in a subscriber's sequence)",
            "",
            report.lost as f64,
        );
        result.add(
            "duplicates",
            "deliveries received twice",
            "",
            report.duplicates as f64,
        );
        if report.lost > 0 || report.duplicates > 0 {
            result.ok = false;
            result.errors.push(format!(
                "{} deliveries lost and {} received twice",
                report.lost, report.duplicates
            ));
        }
    }
    result.add(
        "deliveries_per_s",
        "deliveries per second",
        "/s",
        received as f64 / usage.wall_s.max(1e-3),
    );
    result.add(
        "cpu_per_million",
        "server CPU-s per 1M deliveries",
        "s",
        cpu_per_million(usage.cpu_s(), received),
    );
    result.add(
        "user_per_million",
        "… of it user",
        "s",
        cpu_per_million(usage.user_s, received),
    );
    result.add(
        "sys_per_million",
        "… of it system",
        "s",
        cpu_per_million(usage.sys_s, received),
    );
    result.add(
        "server_cpu_share",
        "server CPU busy",
        "%",
        usage.cpu_s() / usage.wall_s.max(1e-3) * 100.0,
    );
    result.add(
        "client_cpu_share",
        "load generator CPU busy: worker processes (one core = 100)",
        "%",
        workers.cpu_s() / workers.wall_s.max(1e-3) * 100.0,
    );
    result.add(
        "client_cpu_per_million",
        "… their CPU-s per 1M deliveries",
        "s",
        cpu_per_million(workers.cpu_s(), received),
    );
    result.add(
        "publisher_cpu_share",
        "… and this process (publisher, coordinator)",
        "%",
        own.cpu_s() / own.wall_s.max(1e-3) * 100.0,
    );
    result.add_percentiles("latency", "latency", &report.latency.percentiles());
    result.add_percentiles("publish", "publish call", &published.calls.percentiles());
    if !lag_samples.is_empty() {
        // What the server itself saw: when these stay low while the latency
        // above is high, messages waited in socket buffers for the clients.
        result.add(
            "server_lag_p50",
            "server delivery lag (herald_delivery_lag_seconds every 100 ms) p50",
            "ms",
            quantile(&lag_samples, 0.5),
        );
        result.add(
            "server_lag_p99",
            "server delivery lag p99",
            "ms",
            quantile(&lag_samples, 0.99),
        );
        result.add(
            "server_lag_max",
            "server delivery lag max",
            "ms",
            quantile(&lag_samples, 1.0),
        );
    }
    // Where the latency above lives when it is not the server's.
    result.add(
        "server_send_queue_mb",
        "written by the server, not yet taken by the clients' sockets (mean, /proc/net/tcp)",
        "MB",
        queued.map(|q| q.server_send as f64 / 1e6),
    );
    result.add(
        "client_receive_queue_mb",
        "in the clients' sockets, not yet read by the load generator (mean)",
        "MB",
        queued.map(|q| q.client_receive as f64 / 1e6),
    );
    let per_syscw = ratio(Some(received as f64), Some(usage.write_calls as f64));
    result.add(
        "per_write_syscall",
        "deliveries per write syscall (/proc io syscw: write and writev, not sendmsg)",
        "",
        per_syscw,
    );
    let metric = counters_before
        .zip(counters_after)
        .map(|(b, a)| (a.0 - b.0, a.1 - b.1));
    let per_metric = metric.and_then(|(delivered, writes)| ratio(Some(delivered), Some(writes)));
    result.add(
        "per_write_metric",
        "deliveries per socket write (Herald metrics)",
        "",
        per_metric,
    );
    // Herald writes with sendmsg, which syscw does not count: its own count
    // is the one to compare with another server's syscw.
    result.add(
        "per_write",
        "deliveries per socket write (Herald: its metrics; others: syscw)",
        "",
        per_metric.or(per_syscw),
    );
    result.add("rss_after", "server RSS", "MB", after.rss as f64 / 1e6);
    result.latency_curve = report.latency.curve();
    result.rss_curve = session.rss_curve.clone();
    result.errors.extend(report.errors);
    if let Some(error) = published.first_error {
        result.errors.push(format!("publish: {error}"));
    }
    if report.failed > 0 || report.closed > 0 || published.failed > 0 || !drained {
        result.ok = false;
    }
    if !drained {
        result
            .errors
            .push("not every subscriber had every message 10 s after publishing stopped".into());
    }
    session.close().await;
    Ok(result)
}

/// Waits until `done` reaches `target` or `timeout` passes; true if reached.
async fn drain(done: &watch::Receiver<u64>, target: u64, timeout: Duration) -> bool {
    let mut done = done.clone();
    tokio::time::timeout(timeout, done.wait_for(|&d| d >= target))
        .await
        .is_ok_and(|r| r.is_ok())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn load(line: &str) -> Result<Load, String> {
        let argv = std::iter::once("broadcast").chain(line.split_whitespace());
        Cli::try_parse_from(argv)
            .map(|cli| cli.args.load)
            .map_err(|error| error.to_string())
    }

    /// Options, and how the broadcast publishes (`Ok`) or a piece of the error.
    #[test]
    fn publishing_options() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("", Ok("closed loop (window 4)")),
            ("--window 16", Ok("closed loop (window 16)")),
            ("--rate 100", Ok("100 msg/s")),
            ("--rate 0", Ok("closed loop (window 4)")),
            (
                "--in-flight 8",
                Ok("closed loop (8 publish calls in flight)"),
            ),
            (
                "--in-flight 1",
                Ok("closed loop (1 publish call in flight)"),
            ),
            (
                "--in-flight 1024",
                Ok("closed loop (1024 publish calls in flight)"),
            ),
            ("--in-flight 0", Err("0 is not in 1..=1024")),
            ("--in-flight 1025", Err("1025 is not in 1..=1024")),
            ("--in-flight x", Err("invalid value 'x'")),
            ("--in-flight 8 --rate 10", Err("cannot be used with")),
            ("--in-flight 8 --window 4", Err("cannot be used with")),
        ];
        for (line, expected) in cases {
            match (expected, load(line)) {
                (Ok(words), Ok(load)) => assert_eq!(load.describe(true), *words, "{line}"),
                (Err(piece), Err(error)) => assert!(error.contains(piece), "{line}: {error}"),
                (expected, got) => panic!(
                    "{line}: expected {expected:?}, got {:?}",
                    got.map(|l| l.describe(true))
                ),
            }
        }
        let load = load("--in-flight 32 --publishers 2").unwrap();
        let pace = load.pace(true);
        assert!(matches!(pace, Pace::InFlight(32)), "{pace:?}");
        assert_eq!(pace.connections(load.publishers), 32);
    }
}
