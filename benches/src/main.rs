//! `herald-bench`: measures what Herald costs, over the real network path on
//! loopback, against servers it starts itself: Herald, and Nchan as the peer
//! to compare with (`compare`).
//!
//! Scenarios:
//! - `idle`: server RSS and CPU per idle WebSocket or SSE connection, or
//!   per waiting long-poll client (`--transport poll`);
//! - `broadcast`: N subscribers on one channel; deliveries/s, CPU per
//!   delivery, latency, publish-call time, deliveries per write (long-poll
//!   clients poll again after each answer, and count gaps and duplicates);
//! - `channels`: N users on a channel each, the same figures;
//! - `reconnect`: everyone drops and resumes; accept rate, recovery time, loss;
//! - `sites`: Herald alone, N configured idle sites against one; RSS, tokio
//!   tasks, threads, start-up time;
//! - `fanout`: one `POST /api/deliver` to a million users' timelines with
//!   15,000 of them connected; time until the last has it, engine messages,
//!   and the latency of an unrelated channel during the delivery against idle;
//! - `soak`: Herald alone under connection churn and publishing for N
//!   seconds; its RSS, file descriptors, tasks and threads over time;
//! - `publish`: server CPU per publish, one at a time, by each way in (HTTP;
//!   Herald's Meteor and STOMP ports too).
//!
//! `report` runs the set behind `docs/benchmarks.md` and rewrites it.
//! `model` measures nothing: it reads the figures `report` recorded and
//! prints the fleet a load needs (the capacity model, docs/scaling.md).
//! Connections are held by worker processes (this binary re-executed as
//! `herald-bench worker`), so that a run can pass one process' open-files limit.
//! On 2 CPUs or more, servers and bench run pinned to CPUs of their own by
//! default (`cpus`); `--no-pin` turns that off.

mod broadcast;
mod cert;
mod client;
mod cpus;
mod delivery;
mod fanout;
mod fleet;
mod frame;
mod http;
mod idle;
mod inbox;
mod kernel;
mod lag;
mod model;
mod nchan;
mod outcome;
mod plot;
mod poll;
mod presence;
mod process;
mod publish;
mod publisher;
mod queues;
mod reconnect;
mod redis;
mod report;
mod sampler;
mod scenario;
mod server;
mod shard;
mod sites;
mod soak;
mod sse;
mod stats;
mod stream;
mod target;
mod tls;
mod ui;
mod websocket;
mod worker;

use std::{process::ExitCode, time::Duration};

use anyhow::Context;
use clap::{Parser, Subcommand};

pub use scenario::default_herald;

use crate::{
    outcome::{RunResult, comparison},
    scenario::Common,
    target::Preset,
};

#[derive(Parser, Debug)]
#[command(name = "herald-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    #[command(flatten)]
    Scenario(Scenario),
    /// Runs a scenario against Herald, then against Nchan, and prints the ratios.
    Compare {
        #[command(subcommand)]
        scenario: Scenario,
    },
    /// Runs the whole set behind docs/benchmarks.md and rewrites it with its plots.
    Report(report::Args),
    /// The capacity model: the fleet a load needs, from the measured figures
    /// in docs/img/results.json and docs/benchmarks.md (measures nothing).
    Model(model::Args),
    /// (internal) Holds a share of a run's connections for the coordinator.
    #[command(hide = true)]
    Worker {
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
}

#[derive(Subcommand, Debug, Clone)]
pub enum Scenario {
    /// Opens N idle connections; server RSS and CPU per connection.
    Idle(idle::Args),
    /// N subscribers on one channel; throughput, CPU per delivery, latency.
    Broadcast(broadcast::Args),
    /// N users, each on a channel of their own; the same figures.
    Channels(broadcast::ChannelsArgs),
    /// N clients drop and reconnect with recovery; accept rate, recovery time, loss.
    Reconnect(reconnect::Args),
    /// Herald alone: N configured idle sites against one; RSS, tasks, threads, start-up.
    Sites(sites::Args),
    /// One timeline delivery to 1M users, 15k connected; unrelated latency during it.
    Fanout(fanout::Args),
    /// Herald alone: connection churn and publishing for N seconds; RSS, fds, tasks over time.
    Soak(soak::Args),
    /// Server CPU per publish, one at a time: HTTP, and Herald's Meteor and STOMP ports.
    Publish(publish::Args),
    /// Herald on Redis: presence joins and leaves, one at a time; Redis commands and CPU per join.
    Presence(presence::Args),
}

impl Scenario {
    fn common_mut(&mut self) -> Option<&mut Common> {
        match self {
            Scenario::Idle(a) => Some(&mut a.common),
            Scenario::Broadcast(a) => Some(&mut a.common),
            Scenario::Channels(a) => Some(&mut a.common),
            Scenario::Reconnect(a) => Some(&mut a.common),
            Scenario::Fanout(a) => Some(&mut a.common),
            Scenario::Publish(a) => Some(&mut a.common),
            Scenario::Presence(a) => Some(&mut a.common),
            Scenario::Sites(_) | Scenario::Soak(_) => None,
        }
    }

    /// The CPU pinning options, to resolve and apply before the runtime starts.
    fn pinning_mut(&mut self) -> &mut cpus::Pinning {
        match self {
            Scenario::Sites(a) => &mut a.pinning,
            Scenario::Soak(a) => &mut a.pinning,
            Scenario::Idle(a) => &mut a.common.target.pinning,
            Scenario::Broadcast(a) => &mut a.common.target.pinning,
            Scenario::Channels(a) => &mut a.common.target.pinning,
            Scenario::Reconnect(a) => &mut a.common.target.pinning,
            Scenario::Fanout(a) => &mut a.common.target.pinning,
            Scenario::Publish(a) => &mut a.common.target.pinning,
            Scenario::Presence(a) => &mut a.common.target.pinning,
        }
    }

    /// Whether the server is one the bench did not start (`--addr`).
    fn external(&self) -> bool {
        self.common().is_some_and(|c| c.target.addr.is_some())
    }

    /// The CPU pinning options; every scenario has them.
    fn pinning(&self) -> &cpus::Pinning {
        match self {
            Scenario::Sites(a) => &a.pinning,
            Scenario::Soak(a) => &a.pinning,
            Scenario::Idle(a) => &a.common.target.pinning,
            Scenario::Broadcast(a) => &a.common.target.pinning,
            Scenario::Channels(a) => &a.common.target.pinning,
            Scenario::Reconnect(a) => &a.common.target.pinning,
            Scenario::Fanout(a) => &a.common.target.pinning,
            Scenario::Publish(a) => &a.common.target.pinning,
            Scenario::Presence(a) => &a.common.target.pinning,
        }
    }

    fn common(&self) -> Option<&Common> {
        match self {
            Scenario::Idle(a) => Some(&a.common),
            Scenario::Broadcast(a) => Some(&a.common),
            Scenario::Channels(a) => Some(&a.common),
            Scenario::Reconnect(a) => Some(&a.common),
            Scenario::Fanout(a) => Some(&a.common),
            Scenario::Publish(a) => Some(&a.common),
            Scenario::Presence(a) => Some(&a.common),
            Scenario::Sites(_) | Scenario::Soak(_) => None,
        }
    }

    /// Runs the scenario once, against `preset` if given, within its time
    /// limit; the result says how it was pinned.
    pub async fn run(&self, preset: Option<Preset>) -> anyhow::Result<RunResult> {
        let mut result = self.run_once(preset).await?;
        result.cpus = self.pinning().summary();
        Ok(result)
    }

    async fn run_once(&self, preset: Option<Preset>) -> anyhow::Result<RunResult> {
        if let Scenario::Sites(args) = self {
            if preset == Some(Preset::Nchan) {
                anyhow::bail!("the sites scenario measures Herald alone: Nchan has no sites");
            }
            let limit = Duration::from_secs(args.time_limit);
            return tokio::time::timeout(limit, sites::run(args))
                .await
                .with_context(|| format!("the run passed its time limit of {limit:?}"))?;
        }
        if let Scenario::Soak(args) = self {
            if preset == Some(Preset::Nchan) {
                anyhow::bail!("the soak scenario measures Herald alone");
            }
            let limit = args.limit();
            return tokio::time::timeout(limit, soak::run(args))
                .await
                .with_context(|| format!("the run passed its time limit of {limit:?}"))?;
        }
        if let (Scenario::Fanout(_), Some(Preset::Nchan)) = (self, preset) {
            anyhow::bail!(
                "the fanout scenario measures Herald's POST /api/deliver: Nchan has none"
            );
        }
        if let Some(common) = self.common()
            && common.target.mercure
            && !(matches!(self, Scenario::Idle(_)) && common.transport == client::Transport::Sse)
        {
            anyhow::bail!(
                "--mercure measures idle SSE subscribers only (idle --transport sse): the hub's \
                 subscribers do not hear /api/publish"
            );
        }
        if let Some(common) = self.common()
            && (common.target.tls || common.target.tls_proxy)
            && !(matches!(self, Scenario::Idle(_)) && common.transport != client::Transport::Poll)
        {
            // Publishers, /metrics scrapes and long-poll clients speak plain
            // HTTP, which a TLS-only listener refuses.
            anyhow::bail!(
                "--tls and --tls-proxy measure idle WebSocket and SSE subscribers only \
                 (idle --transport ws|sse)"
            );
        }
        let mut scenario = self.clone();
        let common = scenario
            .common_mut()
            .context("every other scenario has the common options")?;
        if let Some(preset) = preset {
            common.target = common.target.for_preset(preset);
        }
        let limit = Duration::from_secs(common.time_limit);
        let run = async {
            match &scenario {
                Scenario::Idle(a) => idle::run(a).await,
                Scenario::Broadcast(a) => broadcast::run(a).await,
                Scenario::Channels(a) => broadcast::run_channels(a).await,
                Scenario::Reconnect(a) => reconnect::run(a).await,
                Scenario::Fanout(a) => fanout::run(a).await,
                Scenario::Publish(a) => publish::run(a).await,
                Scenario::Presence(a) => presence::run(a).await,
                Scenario::Sites(_) | Scenario::Soak(_) => unreachable!("handled above"),
            }
        };
        tokio::time::timeout(limit, run)
            .await
            .with_context(|| format!("the run passed its time limit of {limit:?}"))?
    }
}

/// Microseconds since the Unix epoch: the clock every process of a run shares.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn main() -> ExitCode {
    // Every client connection is a file descriptor.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let mut cli = Cli::parse();
    // The model reads files and measures nothing: no pinning, no runtime.
    if let Cmd::Model(args) = &cli.command {
        return match model::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("herald-bench: {error:#}");
                ExitCode::from(2)
            }
        };
    }
    // Before the runtime starts: its threads, and the worker processes they
    // spawn, inherit the CPUs of the thread that builds it.
    let pinning = match &mut cli.command {
        Cmd::Scenario(scenario) | Cmd::Compare { scenario } => {
            let external = scenario.external();
            Some((scenario.pinning_mut(), external))
        }
        Cmd::Report(args) => Some((&mut args.pinning, false)),
        Cmd::Worker { .. } | Cmd::Model(_) => None,
    };
    if let Some(Err(error)) = pinning.map(|(pinning, external)| pinning.pin_bench(external)) {
        eprintln!("herald-bench: {error:#}");
        return ExitCode::from(2);
    }
    let threads = match &cli.command {
        Cmd::Worker { threads } => *threads,
        _ => 2,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("herald-bench: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Cmd::Worker { .. } => worker::run().await.map(|()| true),
            Cmd::Scenario(scenario) => single(&scenario).await,
            Cmd::Compare { scenario } => compare(&scenario).await,
            Cmd::Report(args) => report::run(&args).await.map(|()| true),
            Cmd::Model(_) => unreachable!("handled before the runtime starts"),
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("herald-bench: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// One scenario against one target: the table, and JSON/plots if asked.
/// Returns false when `--check` is given and the run failed its checks.
async fn single(scenario: &Scenario) -> anyhow::Result<bool> {
    let result = scenario.run(None).await?;
    println!("{}", result.markdown());
    if let Scenario::Sites(args) = scenario {
        println!("{}", sites::table(&result));
        if let Some(path) = &args.json {
            result.write_json(path)?;
        }
        return Ok(!args.check || result.ok);
    }
    if let Scenario::Soak(args) = scenario {
        // The soak run writes its own CSV, plot and JSON.
        return Ok(!args.check || result.ok);
    }
    let common = scenario.common().context("no options")?;
    if let Some(path) = &common.json {
        result.write_json(path)?;
    }
    if let Some(dir) = &common.plot {
        report::plot_runs(dir, &result.scenario, &[&result])?;
    }
    Ok(!common.check || result.ok)
}

/// The same scenario against Herald and then Nchan, with ratios.
async fn compare(scenario: &Scenario) -> anyhow::Result<bool> {
    if let Scenario::Sites(_) = scenario {
        anyhow::bail!(
            "the sites scenario measures Herald alone (Nchan has no sites): run `herald-bench sites`"
        );
    }
    if let Scenario::Soak(_) = scenario {
        anyhow::bail!("the soak scenario measures Herald alone: run `herald-bench soak`");
    }
    if let Scenario::Fanout(_) = scenario {
        anyhow::bail!(
            "the fanout scenario measures Herald alone (Nchan has no timeline delivery): \
             run `herald-bench fanout`"
        );
    }
    let herald = scenario.run(Some(Preset::Herald)).await?;
    println!("{}", herald.markdown());
    let nchan = scenario.run(Some(Preset::Nchan)).await?;
    println!("{}", nchan.markdown());
    println!("{}", comparison(&herald, &nchan));
    let common = scenario.common().context("no options")?;
    if let Some(path) = &common.json {
        outcome::write_json(path, &[&herald, &nchan])?;
    }
    if let Some(dir) = &common.plot {
        report::plot_runs(dir, &herald.scenario, &[&herald, &nchan])?;
    }
    Ok(!common.check || (herald.ok && nchan.ok))
}
