//! The "What accounting costs" section of `docs/benchmarks.md`: the
//! saturation broadcast (10,000 subscribers, 8 publish calls in flight) with
//! traffic accounting on (the default) and off (`accounting.enabled =
//! false`), in turns, so that drift between runs falls on both alike; and,
//! when `--baseline-herald` names one, a build from before the received side
//! was counted, whose connections' outboxes count nothing at all. Nchan
//! (which counts nothing) from the same sitting stands beside them. The goal
//! (docs/operations.md, "Accounting"): at most 3 % more CPU per delivery.

use std::{fmt::Write as _, path::Path};

use super::{Args, herald_alone, measure, stamp};
use crate::outcome::{RunResult, with_unit};

/// The section's heading, which `--only accounting` looks for.
pub const HEADING: &str = "## What accounting costs\n";

/// Turns of (on, off[, baseline]).
const TURNS: usize = 3;

pub struct Accounting {
    command: String,
    on: Vec<RunResult>,
    off: Vec<RunResult>,
    baseline: Vec<RunResult>,
    nchan: RunResult,
}

pub async fn measure_accounting(args: &Args) -> anyhow::Result<Accounting> {
    let subscribers = if args.quick { 1_000 } else { 10_000 };
    let command =
        format!("broadcast --subscribers {subscribers} --in-flight 8 --duration 10 --warmup 2");
    let turns = if args.quick { 1 } else { TURNS };
    let mut on = Vec::new();
    let mut off = Vec::new();
    let mut baseline = Vec::new();
    let mut nchan = None;
    for turn in 0..turns {
        if turn == 0 {
            let row = measure(args, super::words(&command)).await?;
            on.push(row.herald);
            nchan = Some(row.nchan);
        } else {
            on.push(herald_alone(args, &command).await?);
        }
        let without = format!("{command} --herald-env HERALD_ACCOUNTING_ENABLED=false");
        off.push(herald_alone(args, &without).await?);
        if let Some(before) = &args.baseline_herald {
            baseline.push(with_binary(args, &command, before).await?);
        }
    }
    Ok(Accounting {
        command,
        on,
        off,
        baseline,
        nchan: nchan.expect("one turn at least"),
    })
}

/// `command` on another herald binary.
async fn with_binary(args: &Args, command: &str, herald: &Path) -> anyhow::Result<RunResult> {
    let args = Args {
        herald: Some(herald.to_path_buf()),
        ..args.clone()
    };
    herald_alone(&args, command).await
}

fn median(runs: &[RunResult], key: &str) -> Option<f64> {
    let mut values: Vec<f64> = runs.iter().filter_map(|run| run.get(key)).collect();
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => None,
        n if n % 2 == 1 => Some(values[n / 2]),
        n => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// How far the runs' CPU per delivery lies from their median, as ±%.
fn spread(runs: &[RunResult]) -> String {
    let Some(middle) = median(runs, "cpu_per_million").filter(|m| *m > 0.0) else {
        return "–".into();
    };
    let furthest = runs
        .iter()
        .filter_map(|run| run.get("cpu_per_million"))
        .map(|cpu| (cpu / middle - 1.0).abs())
        .fold(0.0, f64::max);
    format!("±{:.1} %", furthest * 100.0)
}

fn versus(value: Option<f64>, reference: Option<f64>) -> String {
    match (value, reference) {
        (Some(v), Some(r)) if r > 0.0 => format!("{:+.1} %", (v / r - 1.0) * 100.0),
        _ => "–".into(),
    }
}

/// The section, from its heading to the blank line before the next.
pub fn section(runs: &Accounting, pinning: &crate::cpus::Pinning) -> String {
    let mut out = String::from(HEADING);
    let _ = write!(
        out,
        "\nWhat per-site and per-user traffic accounting (docs/operations.md, \"Accounting\") \
         costs a node at saturation: the broadcast of \"Saturation: publish calls in flight\" at \
         8 calls in flight, with accounting on (the default) and off \
         (`HERALD_ACCOUNTING_ENABLED=false`), in turns, {} turns; the figure is each setting's \
         median. With accounting off the outboxes still count what the hub hands them (two \
         additions under a lock already held); the connections then report nothing. {}The \
         subscribers are anonymous, so what they receive goes to the site's totals; a connection \
         with a user adds one sketch update per ping interval (400 a second for 10,000 users at \
         the default 25 s), not per delivery. The goal is at most 3 % more CPU per delivery. \
         Measured {}.\n\n",
        runs.on.len(),
        if runs.baseline.is_empty() {
            ""
        } else {
            "The baseline is a build from before the received side was counted at all \
             (`--baseline-herald`). "
        },
        stamp(pinning)
    );
    out.push_str(
        "| | CPU-s per 1M deliveries | against off | deliveries/s | p50 | p99 | missing | runs |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    let off_cpu = median(&runs.off, "cpu_per_million");
    let mut row = |label: &str, results: &[RunResult]| {
        if results.is_empty() {
            return;
        }
        let cpu = median(results, "cpu_per_million");
        let runs_cpu: Vec<String> = results
            .iter()
            .map(|run| with_unit(run.get("cpu_per_million"), "s"))
            .collect();
        let _ = writeln!(
            out,
            "| {label} | {} | {} | {} | {} | {} | {} | {} |",
            with_unit(cpu, "s"),
            versus(cpu, off_cpu),
            with_unit(median(results, "deliveries_per_s"), "/s"),
            with_unit(median(results, "latency_p50"), "ms"),
            with_unit(median(results, "latency_p99"), "ms"),
            with_unit(
                results
                    .iter()
                    .filter_map(|r| r.get("missing"))
                    .reduce(f64::max),
                ""
            ),
            runs_cpu.join(", "),
        );
    };
    row("Herald, accounting on", &runs.on);
    row("Herald, accounting off", &runs.off);
    row("Herald before received-side counting", &runs.baseline);
    row("Nchan (counts nothing)", std::slice::from_ref(&runs.nchan));
    let _ = write!(
        out,
        "\nAccounting on against off: {} CPU per delivery. The runs of each setting spread \
         {} (on) and {} (off) around their medians; a difference inside that spread is more \
         than this sitting can resolve.\n",
        versus(median(&runs.on, "cpu_per_million"), off_cpu),
        spread(&runs.on),
        spread(&runs.off),
    );
    let _ = write!(
        out,
        "\n```sh\ntarget/release/herald-bench {command}\n\
         target/release/herald-bench {command} --herald-env HERALD_ACCOUNTING_ENABLED=false\n\
         target/release/herald-bench {command} --target nchan\n\
         # the whole section, turns included:\n\
         target/release/herald-bench report --only accounting [--baseline-herald PATH]\n```\n\n",
        command = runs.command,
    );
    out
}
