//! `herald-bench report`: runs the set of measurements behind
//! `docs/benchmarks.md` against Herald and Nchan, then rewrites that page
//! (tables with ratios, how it was measured, on what machine, what limits
//! it) and its plots under `docs/img/`.

mod accounting;
mod baseline;
mod fanout;
mod poll;
mod publish;
mod pusher;
mod restart;
mod saturation;
mod storm;
mod tls;

/// `docs/img/results.json`, which the capacity model (`herald-bench model`) reads.
pub use baseline::{Recorded, Results};
pub use fanout::SMALL as FANOUT_SMALL;

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use anyhow::Context;

use crate::{
    Scenario,
    cpus::Pinning,
    outcome::{RunResult, format_number, format_ratio, with_unit, write_json},
    plot::{self, Series},
    stats::ratio,
    target::Preset,
};

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// The docs folder: writes `benchmarks.md` there and plots under `img/`.
    #[arg(long, default_value = "docs")]
    pub docs: PathBuf,
    /// The herald binary (default: `herald` next to this binary).
    #[arg(long)]
    pub herald: Option<PathBuf>,
    /// A quick pass with a tenth of the connections and short phases, to
    /// check the pipeline; its figures mean little.
    #[arg(long)]
    pub quick: bool,
    /// Measure only this section and rewrite it in the existing page,
    /// leaving the rest of the page (and the plots) as they are.
    #[arg(long, value_enum)]
    pub only: Option<Section>,
    /// With `--only accounting`: a herald binary from before received-side
    /// counting, measured in turns beside the others.
    #[arg(long)]
    pub baseline_herald: Option<PathBuf>,
    /// Passed on to every run; the page's method text records them.
    #[command(flatten)]
    pub pinning: Pinning,
}

/// A section of the page that can be regenerated alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Section {
    /// "Idle sites": `herald-bench sites`, Herald alone, about 10 s.
    Sites,
    /// "Timeline fan-out": `herald-bench fanout`, Herald alone (memory
    /// engine; Redis with 3 nodes, round robin and by shard), about a minute.
    Fanout,
    /// "Node restart": `herald-bench reconnect --redis --restart`, Herald
    /// alone, 15,000 clients through three restarts, about a minute.
    Restart,
    /// "Publishing, by each way in": `herald-bench publish`, Herald (HTTP,
    /// Meteor, STOMP) and Nchan (HTTP), about half a minute.
    Publish,
    /// "The Pusher protocol, the Mercure hub and presence": idle and
    /// broadcast clients on Herald's Pusher protocol against native ones and
    /// Nchan, idle Mercure subscribers against native SSE ones, and presence
    /// joins on Redis, about four minutes.
    Pusher,
    /// "What accounting costs": the saturation broadcast with accounting
    /// on and off in turns, and Nchan, about three minutes.
    Accounting,
    /// "HTTP long-poll": idle and broadcast clients on long-poll against SSE
    /// ones, Herald and Nchan (`--transport poll` and `sse`), about five minutes.
    Poll,
    /// "Native TLS": idle WebSocket and SSE clients on Herald plain, Herald
    /// with TLS, nginx terminating TLS in front of Herald, and Nchan plain
    /// and with TLS (`idle --tls`, `--tls-proxy`), about ten minutes.
    Tls,
}

/// The heading of the idle-sites section, which `--only sites` looks for.
const SITES_HEADING: &str = "## Idle sites\n";
/// The heading the idle-sites section goes before when the page has none yet.
const METHOD_HEADING: &str = "## How the figures are measured\n";

/// One measurement of the report: a scenario command line, run on both targets.
struct Row {
    /// The command's arguments after `herald-bench` (and `--target`).
    argv: Vec<String>,
    herald: RunResult,
    nchan: RunResult,
}

impl Row {
    /// "SSE" or "WebSocket", as the page's tables name a row's transport.
    fn transport(&self) -> &'static str {
        if self.argv.iter().any(|w| w == "sse") {
            "SSE"
        } else {
            "WebSocket"
        }
    }
}

/// Parses a scenario from command-line words, exactly as a person would type them.
fn scenario(words: &[String]) -> anyhow::Result<Scenario> {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct One {
        #[command(subcommand)]
        scenario: Scenario,
    }
    let argv = std::iter::once("herald-bench".to_string()).chain(words.iter().cloned());
    Ok(One::try_parse_from(argv)?.scenario)
}

/// A run's command line: `words` (as the page shows them), then the
/// options of the report that every run takes too.
fn with_report_options(args: &Args, words: &[String]) -> Vec<String> {
    let mut full = words.to_vec();
    if let Some(herald) = &args.herald {
        full.push("--herald".into());
        full.push(herald.display().to_string());
    }
    full.extend(args.pinning.args());
    full
}

async fn measure(args: &Args, words: Vec<String>) -> anyhow::Result<Row> {
    let scenario = scenario(&with_report_options(args, &words))?;
    eprintln!("herald-bench report: {}", words.join(" "));
    let herald = scenario.run(Some(Preset::Herald)).await?;
    let nchan = scenario.run(Some(Preset::Nchan)).await?;
    Ok(Row {
        argv: words,
        herald,
        nchan,
    })
}

fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_string).collect()
}

pub async fn run(args: &Args) -> anyhow::Result<()> {
    if let Some(section) = args.only {
        return only(args, section).await;
    }
    let scale = |n: usize| if args.quick { (n / 10).max(50) } else { n };
    let (settle, window, duration, warmup) = if args.quick {
        (1, 2, 3, 1)
    } else {
        (5, 25, 10, 2)
    };
    let mut idle = Vec::new();
    for (transport, n) in [
        ("ws", 1_000),
        ("ws", 10_000),
        ("ws", 18_000),
        ("sse", 10_000),
    ] {
        let command = format!(
            "idle --transport {transport} --subscribe --channel bench --connections {} \
             --settle {settle} --cpu-window {window}",
            scale(n)
        );
        idle.push(measure(args, words(&command)).await?);
    }
    // Herald alone: what subscribing, and a channel per connection, add.
    let mut variants = Vec::new();
    for (what, flags) in [
        ("WebSocket, no subscription", "--transport ws"),
        (
            "WebSocket, subscribed to one shared channel",
            "--transport ws --subscribe --channel bench",
        ),
        (
            "WebSocket, subscribed to a channel of its own (`user:<n>`)",
            "--transport ws --subscribe",
        ),
        (
            "SSE, on one shared channel",
            "--transport sse --channel bench",
        ),
        (
            "SSE, on a channel of its own (`user:<n>`)",
            "--transport sse",
        ),
    ] {
        let command = format!(
            "idle {flags} --connections {} --settle {settle} --cpu-window {}",
            scale(10_000),
            window.min(5)
        );
        let result = herald_alone(args, &command).await?;
        variants.push((what, command, result));
    }
    // Herald alone on the Redis engine: the publish call against the memory
    // engine, and several nodes sharing one Redis.
    let mut redis = Vec::new();
    for (what, flags) in [
        (
            "memory engine, 1 node, 10 subscribers, 200 msg/s",
            format!("--subscribers {} --rate 200", scale(10).max(10)),
        ),
        (
            "Redis engine, 1 node, 10 subscribers, 200 msg/s",
            format!("--subscribers {} --rate 200 --redis", scale(10).max(10)),
        ),
        (
            "Redis engine, 3 nodes, 3000 subscribers, 20 msg/s",
            format!("--subscribers {} --nodes 3 --redis --rate 20", scale(3_000)),
        ),
    ] {
        let command = format!(
            "broadcast {flags} --duration {} --warmup {warmup} --check",
            duration.min(5)
        );
        let result = herald_alone(args, &command).await?;
        redis.push((what, command, result));
    }
    let sites = measure_sites(args).await?;
    let timelines = fanout::measure(args).await?;
    let mut rates = Vec::new();
    for (subscribers, rates_of) in [(1_000, ["10", "100", ""]), (10_000, ["1", "10", ""])] {
        for rate in rates_of {
            let rate = if rate.is_empty() {
                String::new()
            } else {
                format!(" --rate {rate}")
            };
            let command = format!(
                "broadcast --subscribers {}{rate} --duration {duration} --warmup {warmup}",
                scale(subscribers)
            );
            rates.push(measure(args, words(&command)).await?);
        }
    }
    let saturation =
        saturation::measure_all(args, scale(10_000), duration as u64, warmup as u64).await?;
    let broadcast = Broadcast { rates, saturation };
    let storms = storm::measure(args, scale(10_000)).await?;
    let restarts = restart::measure(args, scale(15_000)).await?;
    let publishing = publish::measure_publish(args).await?;
    let pushers = pusher::measure_pusher(args).await?;
    let accounted = accounting::measure_accounting(args).await?;
    let polls = poll::measure_poll(args).await?;
    let tls = tls::measure(args).await?;

    let img = args.docs.join("img");
    std::fs::create_dir_all(&img)?;
    let largest = idle
        .iter()
        .filter(|r| r.argv.contains(&"ws".to_string()))
        .max_by_key(|r| r.herald.get("connections").unwrap_or(0.0) as u64)
        .context("no idle runs")?;
    plot_pair(
        &img.join("idle-rss.svg"),
        "Server RSS while WebSocket connections open",
        largest,
        Plot::Rss,
    )?;
    let light = &broadcast.rates[3];
    let saturated = &broadcast.rates[5];
    plot_pair(
        &img.join("broadcast-latency-light.svg"),
        &format!("Latency, {}", light.herald.setup),
        light,
        Plot::Latency,
    )?;
    plot_pair(
        &img.join("broadcast-latency-saturated.svg"),
        &format!("Latency, {}", saturated.herald.setup),
        saturated,
        Plot::Latency,
    )?;
    let all: Vec<&Row> = idle
        .iter()
        .chain(&broadcast.rates)
        .chain(&broadcast.saturation.rows)
        .chain(&broadcast.saturation.unpinned)
        .chain(&storms)
        .collect();
    let results = img.join("results.json");
    let before = baseline::Results::read(&results);
    write_json(&results, &baseline::Results::new(&all))?;
    let before_after = baseline::section(
        before.as_ref(),
        &baseline::headlines(&idle, &broadcast, &storms)?,
    );
    let page = page(
        args,
        &before_after,
        &idle,
        &variants,
        &broadcast,
        &redis,
        &sites,
        &timelines,
        &storms,
        &restarts,
        &publishing,
        &pushers,
        &accounted,
        &polls,
        &tls,
    )
    .await;
    let path = args.docs.join("benchmarks.md");
    std::fs::write(&path, page)?;
    eprintln!(
        "herald-bench report: wrote {} and {}",
        path.display(),
        img.display()
    );
    Ok(())
}

enum Plot {
    Rss,
    Latency,
}

fn plot_pair(path: &Path, title: &str, row: &Row, kind: Plot) -> anyhow::Result<()> {
    let curve = |r: &RunResult| -> Vec<(f64, f64)> {
        match kind {
            Plot::Rss => r
                .rss_curve
                .iter()
                .map(|&(n, b)| (n as f64, b as f64))
                .collect(),
            Plot::Latency => r.latency_curve.clone(),
        }
    };
    let (h, n) = (curve(&row.herald), curve(&row.nchan));
    let series = [
        Series {
            name: "herald",
            points: &h,
        },
        Series {
            name: "nchan",
            points: &n,
        },
    ];
    match kind {
        Plot::Rss => plot::rss(path, title, &series),
        Plot::Latency => plot::latency(path, title, &series),
    }
}

/// Plots of a scenario's runs into `dir`: latency and RSS, where present.
pub fn plot_runs(dir: &Path, scenario: &str, runs: &[&RunResult]) -> anyhow::Result<()> {
    let rss: Vec<(String, Vec<(f64, f64)>)> = runs
        .iter()
        .map(|r| {
            let points = r
                .rss_curve
                .iter()
                .map(|&(n, b)| (n as f64, b as f64))
                .collect();
            (r.target.clone(), points)
        })
        .collect();
    let series: Vec<Series> = rss
        .iter()
        .filter(|(_, p)| !p.is_empty())
        .map(|(name, points)| Series { name, points })
        .collect();
    if !series.is_empty() {
        let title = format!("Server RSS, {}", runs[0].setup);
        plot::rss(&dir.join(format!("{scenario}-rss.svg")), &title, &series)?;
    }
    let series: Vec<Series> = runs
        .iter()
        .filter(|r| !r.latency_curve.is_empty())
        .map(|r| Series {
            name: &r.target,
            points: &r.latency_curve,
        })
        .collect();
    if !series.is_empty() {
        let title = format!("Latency, {}", runs[0].setup);
        plot::latency(
            &dir.join(format!("{scenario}-latency.svg")),
            &title,
            &series,
        )?;
    }
    Ok(())
}

/// A cell "herald / nchan (ratio)" is too dense to read; rows per target are used instead.
fn cells(row: &Row, keys: &[(&str, &str)]) -> [String; 3] {
    let line = |r: &RunResult| {
        keys.iter()
            .map(|(key, unit)| with_unit(r.get(key), unit))
            .collect::<Vec<_>>()
            .join(" | ")
    };
    let ratios = keys
        .iter()
        .map(|(key, _)| format_ratio(ratio(row.herald.get(key), row.nchan.get(key))))
        .collect::<Vec<_>>()
        .join(" | ");
    [line(&row.herald), line(&row.nchan), ratios]
}

/// The broadcast runs: at fixed rates and window saturation, and with
/// publish calls in flight.
struct Broadcast {
    rates: Vec<Row>,
    saturation: saturation::Saturation,
}

/// "New connections": the server's CPU per connection while the idle runs'
/// connections opened (the handshake, and the subscribe), Herald beside
/// Nchan from the same run. Runs under 5,000 connections are left out: at
/// 10 ms per `/proc` tick their figure is mostly rounding.
fn new_connections_section(idle: &[Row]) -> String {
    let mut out = String::from(
        "## New connections\n\n\
         The server's user + system CPU from before the first connection until the last one was \
         open, per connection, in the idle runs above: a WebSocket's handshake and subscribe, \
         the channel in the URL on both (Herald answers the upgrade, `welcome` and `subscribed` \
         in one write), an SSE stream's request and first event. This is the cost that decides a \
         reconnect storm.\n\n\
         | connections | target | CPU per new connection | of it user | of it system |\n\
         |---|---|---|---|---|\n",
    );
    for row in idle {
        let n = row.herald.get("connections").unwrap_or(0.0);
        if n < 5_000.0 {
            continue;
        }
        let transport = row.transport();
        let [h, c, r] = cells(
            row,
            &[
                ("cpu_us_per_new_conn", "µs"),
                ("user_us_per_new_conn", "µs"),
                ("sys_us_per_new_conn", "µs"),
            ],
        );
        let _ = writeln!(out, "| {} {transport} | herald | {h} |", format_number(n));
        let _ = writeln!(out, "| | nchan | {c} |");
        let _ = writeln!(out, "| | **herald / nchan** | {r} |");
    }
    out.push('\n');
    out
}

/// A Herald-only idle run: what it measured, its command, its result.
type Variant = (&'static str, String, RunResult);

/// Runs one scenario against Herald only.
async fn herald_alone(args: &Args, command: &str) -> anyhow::Result<RunResult> {
    let full = with_report_options(args, &words(command));
    eprintln!("herald-bench report: {command}");
    scenario(&full)?.run(Some(Preset::Herald)).await
}

#[allow(clippy::too_many_arguments)] // One per section, in page order.
async fn page(
    args: &Args,
    before_after: &str,
    idle: &[Row],
    variants: &[Variant],
    broadcast: &Broadcast,
    redis: &[Variant],
    sites: &Variant,
    timelines: &[Variant],
    storms: &[Row],
    restarts: &[Variant],
    publishing: &Row,
    pushers: &pusher::Pusher,
    accounted: &accounting::Accounting,
    polls: &poll::Poll,
    tls: &tls::Tls,
) -> String {
    let machine = machine().await;
    let cpus = if broadcast.saturation.unpinned.is_some() {
        format!(
            "{}, in every table but the one marked unpinned",
            args.pinning.summary()
        )
    } else {
        args.pinning.summary()
    };
    let mut out = String::new();
    let _ = write!(
        out,
        "# Benchmarks\n\n\
         What Herald costs per connection and per delivery, measured against [Nchan](https://nchan.io) \
         (nginx with `libnginx-mod-nchan`) in the same run, on the same machine, by the same load \
         generator. Every table gives Herald, Nchan, and the ratio Herald / Nchan: below 1 means \
         Herald needs less (memory, CPU, latency) or, for deliveries per second, delivers less.\n\n\
         This page is generated: after the README set-up (`scripts/install-test-deps.sh` installs \
         nginx and Nchan), run\n\n\
         ```sh\nbenches/run-all.sh        # cargo build --release -p api -p herald-bench && target/release/herald-bench report\n```\n\n\
         It takes about 20 minutes (and the release build, the first time) and rewrites this \
         page, its plots in `docs/img/` and the raw results in `docs/img/results.json`, whose \
         previous copy gives the \"before\" of [Before and after](#before-and-after).{}\n\n",
        if args.quick {
            "\n\n**This copy came from `--quick`: a tenth of the connections and short phases. \
             Its figures only show that the pipeline works.**"
        } else {
            ""
        }
    );
    out.push_str(before_after);
    let _ = write!(
        out,
        "## Machine\n\n{machine}- CPUs: {cpus} (see [How the figures are \
         measured](#how-the-figures-are-measured)).\n\n\
         The machine is **shared**: the 2 cores run the server, the load generator (its worker \
         processes parse every message they receive) and, during this run, other work on the \
         same machine. Absolute figures are therefore pessimistic and vary by some 10–20 % from \
         run to run; the ratios between Herald and Nchan, measured back to back, are the more \
         stable result.\n\n"
    );

    out.push_str("## Idle connections\n\n");
    out.push_str(
        "Every connection subscribed to one shared channel (`bench`), named in the URL on both \
         servers (WebSocket and SSE alike). Memory is the \
         growth of the server's RSS per connection; CPU is the server's user + system time per \
         connection per second while every connection sits idle (Herald pings each one every \
         25 s, Nchan sends nothing by default).\n\n\
         | connections | target | RSS per connection | CPU per connection per second | server RSS |\n\
         |---|---|---|---|---|\n",
    );
    for row in idle {
        let transport = row.transport();
        let n = row.herald.get("connections").unwrap_or(0.0);
        let [h, c, r] = cells(
            row,
            &[
                ("bytes_per_conn", "B"),
                ("cpu_us_per_conn_s", "µs"),
                ("rss_after", "MB"),
            ],
        );
        let _ = writeln!(out, "| {} {transport} | herald | {h} |", format_number(n));
        let _ = writeln!(out, "| | nchan | {c} |");
        let _ = writeln!(out, "| | **herald / nchan** | {r} |");
    }
    out.push_str(
        "\n![Server RSS against open connections](img/idle-rss.svg)\n\n\
         Commands (each run against both targets; add `--target nchan` for Nchan alone, or run \
         `herald-bench compare idle …` for both with ratios):\n\n```sh\n",
    );
    for row in idle {
        let _ = writeln!(out, "target/release/herald-bench {}", row.argv.join(" "));
    }
    out.push_str("```\n\n");
    let _ = write!(
        out,
        "### Herald alone: what a subscription and a channel add\n\n\
         {} connections each, bytes of server RSS per connection:\n\n\
         | connection | RSS per connection |\n|---|---|\n",
        variants
            .first()
            .and_then(|(_, _, r)| r.get("connections"))
            .map_or("–".into(), format_number)
    );
    for (what, _, result) in variants {
        let _ = writeln!(
            out,
            "| {what} | {} |",
            with_unit(result.get("bytes_per_conn"), "B")
        );
    }
    out.push_str("\n```sh\n");
    for (_, command, _) in variants {
        let _ = writeln!(out, "target/release/herald-bench {command}");
    }
    out.push_str("```\n\n");
    out.push_str(IDLE_CONTENTS);
    out.push('\n');
    out.push_str(&new_connections_section(idle));

    out.push_str("\n## Broadcast\n\n");
    out.push_str(
        "N WebSocket subscribers on one channel; a publisher sends 100-byte JSON messages at a \
         fixed rate (open loop), or closed loop at saturation (at most 4 messages on their way to \
         some subscriber). Two seconds of warm-up, then 10 s measured, then the drain until every \
         subscriber has every message. Latency is from the timestamp in the payload (taken just \
         before the publish request is written) to its arrival at the subscriber, over every \
         delivery, in an HDR histogram. CPU-s per 1M deliveries counts the server's user and \
         system time from the start of the measured phase to the end of the drain.\n\n\
         | subscribers, rate | target | deliveries/s | CPU-s per 1M | … user | … system | p50 | p99 | publish call p99 | deliveries per write |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for row in &broadcast.rates {
        let n = row.herald.get("connections").unwrap_or(0.0);
        let rate = row
            .argv
            .iter()
            .position(|w| w == "--rate")
            .and_then(|i| row.argv.get(i + 1))
            .map_or("saturation".to_string(), |r| format!("{r} msg/s"));
        let [h, c, r] = cells(
            row,
            &[
                ("deliveries_per_s", "/s"),
                ("cpu_per_million", "s"),
                ("user_per_million", "s"),
                ("sys_per_million", "s"),
                ("latency_p50", "ms"),
                ("latency_p99", "ms"),
                ("publish_p99", "ms"),
                ("per_write", ""),
            ],
        );
        let _ = writeln!(out, "| {}, {rate} | herald | {h} |", format_number(n));
        let _ = writeln!(out, "| | nchan | {c} |");
        let _ = writeln!(out, "| | **herald / nchan** | {r} |");
    }
    let _ = write!(
        out,
        "\n![Latency by percentile, light load](img/broadcast-latency-light.svg)\n\n\
         ![Latency by percentile, at saturation](img/broadcast-latency-saturated.svg)\n\n\
         Deliveries per write is deliveries divided by the server's socket writes: for Herald \
         its own count, `herald_messages_delivered_total` / `herald_socket_writes_total` on \
         `/metrics` (it writes with `sendmsg`, which `/proc/PID/io` does not count), for Nchan \
         its write system calls (`syscw` in `/proc/PID/io`: write and writev).\n\n```sh\n"
    );
    for row in &broadcast.rates {
        let _ = writeln!(out, "target/release/herald-bench {}", row.argv.join(" "));
    }
    out.push_str("```\n\nMore figures of each run (p90, p99.9, publish-call percentiles, messages missing, server CPU share) are in `docs/img/results.json`.\n\n");
    out.push_str(&saturation::section(&broadcast.saturation, &args.pinning));
    out.push_str(
        "## Herald on Redis\n\n\
         Herald alone (Nchan has no counterpart): `--redis` makes the bench start a Redis of its \
         own (no persistence) and run every Herald node on the Redis engine; `--nodes N` spreads \
         the subscribers over N nodes, and the publisher goes to the first. Redis' RSS and CPU \
         count as the server's. On this machine the nodes, Redis, the bench's workers and its \
         publisher all share the 2 cores.\n\n\
         | run | deliveries/s | CPU-s per 1M | p50 | p99 | publish call p50 | publish call p99 | missing |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for (what, _, result) in redis {
        let _ = writeln!(
            out,
            "| {what} | {} | {} | {} | {} | {} | {} | {} |",
            with_unit(result.get("deliveries_per_s"), "/s"),
            with_unit(result.get("cpu_per_million"), "s"),
            with_unit(result.get("latency_p50"), "ms"),
            with_unit(result.get("latency_p99"), "ms"),
            with_unit(result.get("publish_p50"), "ms"),
            with_unit(result.get("publish_p99"), "ms"),
            with_unit(result.get("missing"), ""),
        );
    }
    out.push_str("\n```sh\n");
    for (_, command, _) in redis {
        let _ = writeln!(out, "target/release/herald-bench {command}");
    }
    out.push_str("```\n\n");
    out.push_str(&sites_section(sites, &args.pinning));
    out.push_str(&fanout::section(timelines, &args.pinning));
    out.push_str(&storm::section(storms));
    out.push_str(&restart::section(restarts, &args.pinning));
    out.push_str(&publish::section(publishing));
    out.push_str(&pusher::section(pushers, &args.pinning));
    out.push_str(&accounting::section(accounted, &args.pinning));
    out.push_str(&poll::section(polls, &args.pinning));
    out.push_str(&tls::section(tls, &args.pinning));
    out.push_str(&method(&args.pinning));
    out
}

/// The idle-sites measurement: `herald-bench sites`, Herald alone.
async fn measure_sites(args: &Args) -> anyhow::Result<Variant> {
    let sites = if args.quick { 1_000 } else { 10_000 };
    let command = format!("sites --sites {sites} --connections 100 --settle 2");
    let result = herald_alone(args, &command).await?;
    Ok(("idle sites", command, result))
}

/// `--only SECTION`: measures that section and rewrites it alone in the
/// existing page (before "How the figures are measured" if it has none yet).
async fn only(args: &Args, section: Section) -> anyhow::Result<()> {
    let path = args.docs.join("benchmarks.md");
    let page = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read {} (run the whole report first)",
            path.display()
        )
    })?;
    let (heading, text) = match section {
        Section::Sites => (
            SITES_HEADING,
            sites_section(&measure_sites(args).await?, &args.pinning),
        ),
        Section::Fanout => (
            fanout::HEADING,
            fanout::section(&fanout::measure(args).await?, &args.pinning),
        ),
        Section::Publish => (
            publish::HEADING,
            publish::section(&publish::measure_publish(args).await?),
        ),
        Section::Pusher => (
            pusher::HEADING,
            pusher::section(&pusher::measure_pusher(args).await?, &args.pinning),
        ),
        Section::Accounting => (
            accounting::HEADING,
            accounting::section(&accounting::measure_accounting(args).await?, &args.pinning),
        ),
        Section::Poll => (
            poll::HEADING,
            poll::section(&poll::measure_poll(args).await?, &args.pinning),
        ),
        Section::Tls => (
            tls::HEADING,
            tls::section(&tls::measure(args).await?, &args.pinning),
        ),
        Section::Restart => {
            let clients = if args.quick { 1_500 } else { 15_000 };
            (
                restart::HEADING,
                restart::section(&restart::measure(args, clients).await?, &args.pinning),
            )
        }
    };
    let page = splice(&page, heading, &text, METHOD_HEADING);
    std::fs::write(&path, page)?;
    eprintln!(
        "herald-bench report: rewrote the section {:?} of {}",
        heading.trim_start_matches("## ").trim_end(),
        path.display()
    );
    Ok(())
}

/// The "Idle sites" section, from its `## ` heading to the blank line before the next.
fn sites_section((_, command, result): &Variant, pinning: &Pinning) -> String {
    let n = result.get("sites").map_or("–".into(), format_number);
    let mut out = String::from(SITES_HEADING);
    let _ = write!(
        out,
        "\nHerald alone (Nchan has no sites): one process started with a configuration of {n} \
         sites (`[[sites]]` tables: id, key, one 32-byte secret, public, one allowed origin), \
         against the same process with one site. Nobody connects until the figures are taken: \
         2 s after the listening line, RSS (`VmRSS`), threads (`/proc/PID/status`) and the tokio \
         tasks alive (Herald's own `herald_runtime_alive_tasks` on `/metrics`, which counts the \
         scrape's own connection too). Start-up is from spawn to the listening line, so it \
         includes reading and validating the file. Then WebSocket clients connect to the first \
         site (no subscription), to show that tasks follow connections and not sites. Measured \
         {}.\n\n\
         The second RSS row starts both servers again with jemalloc returning freed pages at once \
         (`_RJEM_MALLOC_CONF=dirty_decay_ms:0,muzzy_decay_ms:0`): by default jemalloc returns them \
         only on later allocator activity, which an idle process has none of, so the first row \
         still holds what start-up parsed and dropped (the TOML document, the raw \
         configuration). The second row is what the sites themselves hold.\n\n",
        stamp(pinning)
    );
    out.push_str(&crate::sites::table(result));
    if let Some(per_client) = result.get("tasks_per_client") {
        let _ = writeln!(
            out,
            "\nTokio tasks per WebSocket client: {}.",
            format_number(per_client)
        );
    }
    for error in &result.errors {
        let _ = writeln!(out, "\n**Check failed:** {error}.");
    }
    let _ = write!(
        out,
        "\n```sh\ntarget/release/herald-bench {command}\n```\n\n\
         Regenerate this section alone (about 10 s, no Nchan needed): \
         `cargo build --release -p api -p herald-bench && target/release/herald-bench report --only sites`.\n\n"
    );
    out
}

/// Replaces the section of `page` that starts at the line `heading` (up to
/// the next `## ` heading) with `section`; without one, inserts `section`
/// before the line `before`, or at the end.
fn splice(page: &str, heading: &str, section: &str, before: &str) -> String {
    let at_line = |text: &str, line: &str| {
        text.match_indices(line)
            .map(|(at, _)| at)
            .find(|&at| at == 0 || text[..at].ends_with('\n'))
    };
    let (start, end) = match at_line(page, heading) {
        Some(start) => {
            let rest = &page[start + heading.len()..];
            let end = at_line(rest, "## ").map_or(page.len(), |at| start + heading.len() + at);
            (start, end)
        }
        None => {
            let at = at_line(page, before).unwrap_or(page.len());
            (at, at)
        }
    };
    format!("{}{section}{}", &page[..start], &page[end..])
}

/// When and on what a section alone was measured: "2026-11-28 16:11 UTC
/// with Herald 0.1.0, release build, on 2 vCPU (AMD EPYC)", and the pinning
/// if any: a section rewritten alone (`--only`) leaves the method text as it was.
fn stamp(pinning: &Pinning) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            Some(
                l.strip_prefix("model name")?
                    .split(':')
                    .nth(1)?
                    .trim()
                    .to_string(),
            )
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = crate::cpus::machine_cpus();
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!(
        "{date} with Herald {}, release build, on {cores} vCPU ({cpu}){}",
        env!("CARGO_PKG_VERSION"),
        pinning.clause()
    )
}

/// What an idle connection contains (kept with the page, not generated).
const IDLE_CONTENTS: &str = "What Herald's figures contain:
- WebSocket (745–748 B at 10k, 738 B at 18k, on one shared channel): the same parts as an SSE
  stream's below, with a 160-byte session future (the socket, one pointer that is null while no
  frame is partly read, and the connection core). It was 963–979 B (986 B in the back-to-back run
  of the SSE change below) before the write queue stopped keeping its opening words' capacity
  and the outbox and subscription shrank. There is no read buffer per connection:
  Herald reads WebSocket frames itself (`push/src/ws/reader.rs`) into one 16 KiB buffer per worker
  thread, and keeps bytes only while a frame is partly read. Before that change the future was
  416 B (tungstenite's protocol state) in a 512-byte cell, plus tungstenite's 512-byte read
  buffer: 1798–1806 B per connection at 10k and 18k, against 963–972 B at 10k and 973–979 B at
  18k after it, measured back to back with the same bench, pinned (`--server-cpus 0 --client-cpus
  1 --settle 5 --cpu-window 5`) on the 2-core machine while other builds ran (RSS figures, which
  the load moves little). On a channel of its own: 1232 B.
- SSE (762–764 B at 10k, 756–759 B at 18k, on one shared channel; 990–995 B before, back to
  back): the session future (152 B) in its tokio task (a 256-byte cell); the socket's registration
  with tokio's I/O driver (an `Arc<ScheduledIo>`, cache-line aligned: 256 B); the outbox (80 B,
  96 with its `Arc`); the subscription in the connection's slot (48 B: its position and a
  four-word `Subscription`); its entry in the channel's subscriber slab in the hub (24 B) and its
  slot in the tracker (16 B). That is 696 B allocated, 512 of them tokio's for any task with a
  socket; the rest is jemalloc's own (its extent records, about 19 B per connection, and pages the
  handshakes freed) and the slabs' spare capacity. jemalloc's statistics before the cuts
  (`malloc_stats_print`, 10k streams) showed what went: the write queue kept the four chunks its
  opening words grew it to (160 B, now freed once written; this also cut the WebSocket), each
  subscription held a copy of the channel key (32 B, now the hub's), the outbox was 112 B and the
  subscription slot 64 B (a hub handle and a shard interest per subscription, now one shared
  owner).
- \"A channel of its own\" (`idle` without `--channel`) adds the channel's state: its registry entry
  in the hub and its (empty) history log in the memory engine, about 340 B. A channel shared by many
  connections costs that once.
- Kernel socket buffers are not in RSS and are not counted (for either server).

For comparison (measured by the team on the same machine before Herald's first round): Node `ws`
5.9–7.0 KB per WebSocket;
the floor measured with this exact stack (hyper 1, tokio, tokio-tungstenite, jemalloc) is
1.71–1.78 KB per WebSocket and 0.98–1.2 KB per SSE stream; for the WebSocket, that floor had a
512-byte tungstenite read buffer per connection, which Herald no longer has.
";

/// "How the figures are measured" and what follows it, with the run's pinning.
fn method(pinning: &Pinning) -> String {
    let bullet = format!("- **CPUs.** {}", pinning.describe());
    METHOD.replace("{cpus}", &wrap(&bullet, "  "))
}

/// `text` in lines of at most 100 characters, as the rest of the page is,
/// each after the first indented by `indent`.
fn wrap(text: &str, indent: &str) -> String {
    let mut out = String::new();
    let mut line = 0;
    for word in text.split_whitespace() {
        if line > 0 && line + 1 + word.len() > 100 {
            out.push('\n');
            out.push_str(indent);
            line = indent.len();
        } else if line > 0 {
            out.push(' ');
            line += 1;
        }
        out.push_str(word);
        line += word.len();
    }
    out
}

/// The method text; `{cpus}` is the pinning's list item.
const METHOD: &str = "
## How the figures are measured

- **Load generator.** `herald-bench` starts the server itself (a release `herald` on a free
  loopback port, memory engine; or nginx with Nchan from `benches/nchan/setup.sh`: one worker
  process, its own prefix and pid file, `nginx -g 'daemon off;'` as a child of the bench), then
  re-executes itself as worker processes that hold the connections (one per 15,000, each on its own
  127.0.0.x source addresses with `IP_BIND_ADDRESS_NO_PORT`), and merges what they report.
  Everything goes over the real network path on loopback: TCP, HTTP upgrade, WebSocket or SSE
  framing, or one long-poll request after another. Clients do their own WebSocket handshake and
  parse server frames and SSE events in place, every message of a read at once, with no allocation
  per message (`benches/src/inbox.rs`); a long-poll client reads each answer whole and checks it
  (`benches/src/poll.rs`).
{cpus}
- **Memory.** `VmRSS` of the server's processes (Herald: the one process; Nchan: the nginx master
  and its worker), after one warm-up connection and again 5 s after the last connection opened.
  Bytes per connection = (after − before) / N. The connections open in ten steps; the plot
  samples RSS after each.
- **CPU.** `utime` and `stime` from `/proc/PID/stat` of the same processes, user and system apart.
- **Latency.** Each payload carries the publisher's clock in µs; the receiving worker records
  `now − sent` in an HDR histogram (3 significant digits); workers' histograms are merged exactly.
- **Publish call.** The time from writing the publish request to reading the whole answer, on
  keep-alive connections (4 at once; N with `--in-flight N`). Herald answers once the message is
  in history and queued; Nchan answers once it has fanned the message out.
- **Bounds.** Every run stops by itself: phases are bounded in time and message count, each
  scenario has a hard limit (`--time-limit`, 150 s), and all traffic goes to 127.0.0.0/8.

## What limits these figures

- **Two shared cores.** Unless pinned apart (above), server and load generator compete for the
  same 2 vCPUs; the clients' parsing of every message takes a large share. Saturation figures are
  the saturation of this whole box, not of the server alone; latency includes the time a client
  waited for a core.
- **Open files.** The hard limit is 20,000 descriptors per process here, so one server process
  holds at most about 19,000 connections; 18k is the largest single-server figure. The bench
  passes the limit on its side with worker processes.
- **Loopback.** No NIC, no real RTT; about 70–90 % of a server's CPU at saturation is kernel time
  spent sending, which is why deliveries per write matters.
- **One run per figure.** Single runs vary by about ±100 B per idle connection and 10–20 % in
  throughput on this shared machine.
- **The kernel's share: where the floors are.** Profiles (`perf record -g` on the pinned
  server, 2026-12-04) put most of each figure in the kernel, which both servers pay alike:
  - *A new WebSocket connection* (15,000 opened at once, each subscribed in its URL): 66 %
    kernel. By syscall, with what it calls: `epoll_wait` 21 %, `sendmsg` 20 % (the one answer,
    the 101 with `welcome` and `subscribed`, including the loopback delivery into the client's
    socket), `accept4` 10 %, `recvfrom` 5 % (the routing peek and the head), `epoll_ctl` 4 %.
    Herald's own code is 28 %, spread thin (no frame above 2.1 %: copying, task spawn and
    teardown, routing, the handshake, the subscribe). Nchan's system time alone per connection
    (13–15 µs) is more than half its total, so no server on this kernel reaches half of Nchan's
    cost per connection. (Subscribing with a frame after the upgrade instead costs Herald a read
    and a write more: 24–26 µs against 18–22 µs in the URL, same binary, alternating runs.)
  - *A broadcast to 10,000 at 1–10 msg/s*: 82–92 % kernel (the send path with the receiver's
    wake-up and the retransmit timer, per delivery; on loopback the sending core also runs the
    receiving side). With a task per connection woken for each message, Herald's user time was
    1.2–1.6 µs per delivery, per-connection cache misses: the socket's readiness, the task's
    wake-up (`push_back`), the outbox drain and the core's `deliver`, 1–2.5 % each. A connection
    with nothing else to do and one channel is now *parked*: the hub writes the shared frame to
    its socket itself, without waking its task (ARCHITECTURE.md). Alternating runs on this kernel
    (2026-12-04, 19:00 UTC): 0.4–0.6 µs of user time per delivery against 1.3–1.6, p99 107–120 ms
    against 119–130. What is left, by profile: the `sendmsg` call's own entry (about a third), the
    outbox's cache line in `Outbox::flush` (a quarter), the registry walk. Later that day the same
    machine's writes cost 2.5× those of the before column (system CPU per delivery 13.8 µs
    against 5.5; Nchan's user time 2.9 µs against 1.9), and the user time rose with them: 1.0–1.9
    µs parked against 1.9–2.3 with a task per connection, alternating runs at 21:00 UTC.
  - *Light-load latency*: a broadcast's last delivery waits for every write before it on the
    core, so its p99 is about N × (kernel + user time per delivery). The kernel's part is the
    same for both servers (13.8 µs against 14.2 µs in the run above), so even with no user time
    at all Herald's p99 could not go under kernel ÷ (kernel + Nchan's user time) of Nchan's:
    0.83× in the run above, 0.74× in the before column's. Herald is at 0.89× and 0.93× there;
    the parked build's first full run, on the faster afternoon machine, measured 0.72×.
  - *Parked writes in a busy node*: written as each message came, a reconnect storm's
    connections lost the gathering of several messages into one write that a task per
    connection gets when all are woken at once and run late; a node restart on Redis then cost
    1.5–2× the CPU per reconnect. So when other tasks hold the thread longer than the writes do,
    the hub wakes the rest of the batch instead. `reconnect --clients 15000 --redis --restart
    term`, alternating runs of each build, 4 each: 185–257 µs per reconnect parked, against
    191–645 µs with a task per connection.
  - *Publish calls in flight*: with N calls in flight and a node fanning out M messages a
    second, a call takes N ÷ M on average (Little's law), and the latency counts it. At 32 in
    flight and 10,000 subscribers that is 32 ÷ 140–220 messages a second = 145–230 ms before the
    message is even queued for delivery (32 ÷ 89 = 360 ms in the run above); the delivery lag the
    node allows itself comes on top (publishers are pushed back once it passes half of
    `delivery.max_lag_ms`, 125 ms by default: the server lag p99 column). And no lag bound is
    under one message's own fan-out: 10,000 writes at 14 µs each took 140 ms in the run above. So
    a p99 under 250 ms at 32 in flight needs a core several times faster, a smaller
    `delivery.max_lag_ms`, or fewer calls in flight: it is set by the publisher's queue and the
    kernel's cost per write, not by Herald's part of the fan-out.

## Other scenarios

```sh
target/release/herald-bench channels --users 10000 --rate 2000     # one channel per user
target/release/herald-bench reconnect --clients 5000               # drop, resume with since, count losses
target/release/herald-bench reconnect --clients 5000 --transport sse   # Last-Event-ID
target/release/herald-bench reconnect --clients 5000 --transport poll  # long-poll, resumed from its cursor
target/release/herald-bench reconnect --clients 15000 --redis --restart kill   # the node restarted; clients follow it
target/release/herald-bench compare broadcast --subscribers 1000   # Herald, then Nchan, with ratios
target/release/herald-bench compare broadcast --subscribers 10000 --in-flight 8   # 8 publish calls in flight
target/release/herald-bench compare publish                        # server CPU per publish: HTTP; Herald's Meteor and STOMP ports
target/release/herald-bench broadcast --subscribers 1000 --json out.json --plot out/
cargo bench -p herald-bench                                        # criterion: hub delivery, frame encoding
```

`broadcast` and `channels` publish at `--rate R` (open loop), closed loop on delivery with
`--window N` (at most N messages on their way to some subscriber; the default), or closed loop on
the publish call with `--in-flight N` (N calls at once, one connection each, each starting the next
as soon as its answer comes; what is on its way to subscribers is not limited). A `503` with
`Retry-After` is counted as pushback, not as a failure, and that connection waits as long as it
says (never past the phase's end).

Every scenario takes `--target herald|nchan`, `--transport ws|sse|poll` (poll: HTTP long-poll),
`--workers N`, `--nodes N` with `--redis` (several Herald nodes on a Redis the bench starts), URL
templates (`--ws-url`, `--sse-url`, `--poll-url`, `--publish-url`, `--publish-body`, …) to measure
another server,
and `--check` to fail when a connection failed or a message was lost. `fanout` (timeline delivery,
Herald alone) also takes `--shard-affinity` to put each recipient on its shard's node. `idle` also
takes `--tls` (WebSocket and SSE subscribers on `wss://` and `https://`, trusting a CA the bench
makes for the run; the server it starts gets the certificate) and `--tls-proxy` (Herald behind a
private nginx terminating TLS, each part's memory reported).

**Pinned by default.** On a machine that gives it 2 CPUs or more, the bench pins the server's
processes (each Herald node, Redis, nginx's master and workers) to the first half of its CPUs and
itself with its worker processes to the rest: server CPU 0 and bench CPU 1 on 2 CPUs, `0-1` and
`2-3` on 4. Each run's text report says which (`CPUs: pinned: server CPU 0, bench CPU 1.`).
`--server-cpus LIST` and `--client-cpus LIST` (taskset-style lists such as `0` or `0,2-3`) choose
the sets, the side not given getting the CPUs the other leaves; `--no-pin` pins nothing, as before.
A server the bench did not start (`--addr`) is not pinned, nor is the bench then. `report` passes
its pinning on to every run, and adds one unpinned reference run.
";

/// The machine, in Markdown list items.
async fn machine() -> String {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split(':').nth(1))
        .unwrap_or("unknown")
        .trim()
        .to_string();
    let cores = crate::cpus::machine_cpus();
    let mem_kib: u64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| {
            l.strip_prefix("MemTotal:")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    let os = read("/etc/os-release")
        .lines()
        .find_map(|l| {
            l.strip_prefix("PRETTY_NAME=")
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_default();
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_string();
    let output = |program: &str, args: &[&str]| {
        std::process::Command::new(program)
            .args(args)
            .output()
            .map(|o| {
                let text = [o.stdout, o.stderr].concat();
                String::from_utf8_lossy(&text).trim().to_string()
            })
            .unwrap_or_default()
    };
    let date = output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let nginx = output("nginx", &["-v"]).replace("nginx version: ", "");
    let nchan = output("dpkg-query", &["-W", "-f=${Version}", "libnginx-mod-nchan"]);
    let herald = env!("CARGO_PKG_VERSION");
    format!(
        "- measured {date} with Herald {herald} (release build, memory engine, defaults) and Nchan {nchan} on {nginx}, one worker process;\n\
         - {cores} vCPU ({cpu}), {:.0} GiB memory, {os}, Linux {kernel};\n\
         - loopback only; 100-byte JSON payloads.\n",
        mem_kib as f64 / 1024.0 / 1024.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_run_gets_the_reports_pinning() {
        let args = Args {
            docs: "docs".into(),
            herald: None,
            quick: true,
            only: None,
            baseline_herald: None,
            pinning: Pinning {
                server_cpus: Some("0".parse().unwrap()),
                client_cpus: Some("1".parse().unwrap()),
                no_pin: false,
            },
        };
        for command in [
            "idle --connections 10",
            "sites --sites 10",
            "fanout --check",
        ] {
            let scenario = scenario(&with_report_options(&args, &words(command))).unwrap();
            assert_eq!(
                scenario.pinning().args(),
                ["--server-cpus", "0", "--client-cpus", "1"],
                "{command}"
            );
        }
        // Wrapped into lines, so compared with the line breaks as spaces.
        let method = words(&method(&args.pinning)).join(" ");
        assert!(method.contains("on CPU 0 and the bench with its worker processes on CPU 1 (`--server-cpus 0 --client-cpus 1`,"), "{method}");
    }

    #[test]
    fn splice_replaces_or_inserts_a_section() {
        let section = "## Idle sites\n\nnew\n\n";
        let with = "# B\n\n## Redis\n\nr\n\n## Idle sites\n\nold\n\n## How the figures are measured\n\nm\n";
        assert_eq!(
            splice(with, SITES_HEADING, section, METHOD_HEADING),
            "# B\n\n## Redis\n\nr\n\n## Idle sites\n\nnew\n\n## How the figures are measured\n\nm\n"
        );
        let without = "# B\n\n## Redis\n\nr\n\n## How the figures are measured\n\nm\n";
        assert_eq!(
            splice(without, SITES_HEADING, section, METHOD_HEADING),
            "# B\n\n## Redis\n\nr\n\n## Idle sites\n\nnew\n\n## How the figures are measured\n\nm\n"
        );
        // Last on the page, and a `### ` subsection inside it, are both replaced.
        let last = "# B\n\n## Idle sites\n\nold\n\n### more\n\nold\n";
        assert_eq!(
            splice(last, SITES_HEADING, section, METHOD_HEADING),
            "# B\n\n## Idle sites\n\nnew\n\n"
        );
        // Neither heading: at the end.
        assert_eq!(
            splice("# B\n", SITES_HEADING, section, METHOD_HEADING),
            format!("# B\n{section}")
        );
    }
}
