//! The "Saturation: publish calls in flight" section of `docs/benchmarks.md`:
//! `broadcast --in-flight N` to 10,000 subscribers at 2, 8 and 32 calls in
//! flight, Herald against Nchan, pinned as the rest of the page; and the
//! 8-in-flight run once more unpinned (`--no-pin`), for reference.
//!
//! The unpinned run cannot happen in this process: the bench pinned itself
//! before its runtime started, and every thread and worker process it starts
//! inherits that. So it runs as a child `herald-bench compare … --no-pin`,
//! started with every CPU allowed, which writes its two results as JSON.

use std::{fmt::Write as _, process::Stdio};

use anyhow::{Context, bail};

use super::{Args, Row, cells, measure, words};
use crate::{
    cpus::{self, Pinning},
    outcome::{RunResult, format_number},
};

/// Publish calls in flight, one run each.
pub const IN_FLIGHT: [u16; 3] = [2, 8, 32];

/// The level measured again unpinned.
const UNPINNED_IN_FLIGHT: u16 = 8;

/// The section's runs.
pub struct Saturation {
    /// One per [`IN_FLIGHT`] level, pinned as the report is.
    pub rows: Vec<Row>,
    /// The [`UNPINNED_IN_FLIGHT`] run with `--no-pin`; none when the report
    /// itself is not pinned.
    pub unpinned: Option<Row>,
}

/// The columns of both tables: figure key and unit.
const COLUMNS: [(&str, &str); 11] = [
    ("deliveries_per_s", "/s"),
    ("cpu_per_million", "s"),
    ("latency_p50", "ms"),
    ("latency_p99", "ms"),
    ("latency_p999", "ms"),
    ("publish_p50", "ms"),
    ("publish_p99", "ms"),
    ("pushback", ""),
    ("server_lag_p99", "ms"),
    ("client_receive_queue_mb", "MB"),
    ("missing", ""),
];

const HEADER: &str = "| in flight | target | deliveries/s | CPU-s per 1M | p50 | p99 | p99.9 | \
                      publish call p50 | publish call p99 | pushed back | server lag p99 | unread by the bench | \
                      missing |\n\
                      |---|---|---|---|---|---|---|---|---|---|---|---|---|\n";

/// The command of one level (`subscribers` already scaled).
fn command(subscribers: usize, in_flight: u16, duration: u64, warmup: u64) -> String {
    format!(
        "broadcast --subscribers {subscribers} --in-flight {in_flight} --duration {duration} \
         --warmup {warmup}"
    )
}

/// Measures every level, then the unpinned reference if the report is pinned.
pub async fn measure_all(
    args: &Args,
    subscribers: usize,
    duration: u64,
    warmup: u64,
) -> anyhow::Result<Saturation> {
    let mut rows = Vec::new();
    for in_flight in IN_FLIGHT {
        let command = command(subscribers, in_flight, duration, warmup);
        rows.push(measure(args, words(&command)).await?);
    }
    let unpinned = if is_pinned(&args.pinning) {
        let command = command(subscribers, UNPINNED_IN_FLIGHT, duration, warmup);
        Some(measure_unpinned(args, words(&command)).await?)
    } else {
        None
    };
    Ok(Saturation { rows, unpinned })
}

fn is_pinned(pinning: &Pinning) -> bool {
    pinning.server_cpus.is_some() || pinning.client_cpus.is_some()
}

/// Runs `herald-bench compare <words> --no-pin` as a child allowed every CPU.
async fn measure_unpinned(args: &Args, mut words: Vec<String>) -> anyhow::Result<Row> {
    words.push("--no-pin".into());
    eprintln!("herald-bench report: {}", words.join(" "));
    let exe = std::env::current_exe().context("cannot find this binary")?;
    let json =
        std::env::temp_dir().join(format!("herald-bench-unpinned-{}.json", std::process::id()));
    let mut command = tokio::process::Command::new(exe);
    command.arg("compare").args(&words);
    if let Some(herald) = &args.herald {
        command.arg("--herald").arg(herald);
    }
    command
        .arg("--json")
        .arg(&json)
        .stdin(Stdio::null())
        // Its tables are in the JSON; its errors go to stderr.
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut child = cpus::spawn_unpinned(|| command.spawn())
        .context("cannot start herald-bench for the unpinned run")?;
    let status = child.wait().await?;
    if !status.success() && !json.exists() {
        bail!("the unpinned run `{}` failed ({status})", words.join(" "));
    }
    let text = std::fs::read_to_string(&json)
        .with_context(|| format!("the unpinned run wrote no {}", json.display()))?;
    let _ = std::fs::remove_file(&json);
    let runs: Vec<RunResult> = serde_json::from_str(&text)
        .with_context(|| format!("cannot read the unpinned run's {}", json.display()))?;
    let [herald, nchan] = <[RunResult; 2]>::try_from(runs)
        .map_err(|runs| anyhow::anyhow!("the unpinned run wrote {} results, not 2", runs.len()))?;
    Ok(Row {
        argv: words,
        herald,
        nchan,
    })
}

/// The section, from its heading to the blank line before the next.
pub fn section(saturation: &Saturation, pinning: &Pinning) -> String {
    let mut out = String::from("## Saturation: publish calls in flight\n\n");
    let subscribers = saturation
        .rows
        .first()
        .and_then(|r| r.herald.get("connections"))
        .map_or("–".into(), format_number);
    let _ = write!(
        out,
        "{subscribers} WebSocket subscribers on one channel; the publisher keeps N publish \
         calls in flight (`--in-flight N`, one keep-alive connection each): each call starts the \
         next as soon as its answer comes, and nothing else holds it back, so, unlike the \
         closed loop above, messages on their way to subscribers are not limited. Herald \
         answers a publish once the message is in history, before the fan-out, so a backlog \
         it cannot deliver shows here as latency, unless it pushes back: a publish call that \
         waits (publish call p99), then a `503` with `Retry-After` (\"pushed back\"; that \
         connection then waits as long as it says, and the message is not counted as failed). \
         Nchan answers after its fan-out, so its publish call is its backlog. Phases, latency \
         and CPU as above; \"missing\" is deliveries that had not arrived 10 s after \
         publishing stopped. \"Server lag p99\" is Herald's own `herald_delivery_lag_seconds` \
         (what `delivery.max_lag_ms` bounds), read every 100 ms during the measured phase: how \
         far the server ran behind. Where the latency is far above it, messages waited in \
         socket buffers for the load generator: \"unread by the bench\" is what sat in the \
         clients' sockets, received by the kernel but not yet read by the bench (the mean of \
         `/proc/net/tcp`'s receive queues, read every 500 ms); the bench's clients parse \
         frames in place, several messages per read, and take a few million deliveries a \
         second on their core. And whatever the server: with N calls in flight and a node \
         that fans out M messages a second, each call takes N ÷ M on average (Little's law), \
         and the latency counts it, since the timestamp is taken before the call. At 10,000 \
         subscribers and 110 messages a second (1.1M deliveries/s) that is 18 ms at 2 in \
         flight, 73 ms at 8 and 290 ms at 32; Herald's pushback makes the publish call that \
         wait, rather than a queue.\n\n\
         {}.\n\n{HEADER}",
        pinned_sentence(pinning, saturation.unpinned.is_some())
    );
    for row in &saturation.rows {
        table_rows(&mut out, row, &in_flight(row));
    }
    if let Some(row) = &saturation.unpinned {
        let _ = write!(
            out,
            "\nThe same run unpinned (`--no-pin`), for reference: servers and bench on whichever \
             CPUs the kernel gives them.\n\n{HEADER}"
        );
        table_rows(&mut out, row, &format!("{}, unpinned", in_flight(row)));
    }
    for row in saturation.rows.iter().chain(&saturation.unpinned) {
        for run in [&row.herald, &row.nchan] {
            for error in &run.errors {
                let _ = writeln!(out, "\n**{} ({}):** {error}.", run.target, in_flight(row));
            }
        }
    }
    out.push_str("\n```sh\n");
    for row in saturation.rows.iter().chain(&saturation.unpinned) {
        let _ = writeln!(out, "target/release/herald-bench {}", row.argv.join(" "));
    }
    out.push_str("```\n\n");
    out
}

/// Which pinning the first table had, and that the last one had none:
/// "Pinned: server CPU 0, bench CPU 1; the last table …".
fn pinned_sentence(pinning: &Pinning, unpinned: bool) -> String {
    let summary = pinning.summary();
    let mut chars = summary.chars();
    let main: String = chars
        .next()
        .into_iter()
        .flat_map(char::to_uppercase)
        .chain(chars)
        .collect();
    if unpinned {
        format!("{main}; the last table is the {UNPINNED_IN_FLIGHT}-in-flight run again, unpinned")
    } else {
        main
    }
}

/// The `--in-flight` value of a row's command.
fn in_flight(row: &Row) -> String {
    row.argv
        .iter()
        .position(|w| w == "--in-flight")
        .and_then(|i| row.argv.get(i + 1))
        .cloned()
        .unwrap_or_else(|| "–".into())
}

/// Herald's line, Nchan's, and the ratios, as the other comparison tables have.
fn table_rows(out: &mut String, row: &Row, label: &str) {
    let [h, c, r] = cells(row, &COLUMNS);
    let _ = writeln!(out, "| {label} | herald | {h} |");
    let _ = writeln!(out, "| | nchan | {c} |");
    let _ = writeln!(out, "| | **herald / nchan** | {r} |");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(target: &str, deliveries: f64, p99: f64, pushback: f64) -> RunResult {
        let mut r = RunResult::new("broadcast", target, "10000 ws subscribers".into());
        for (key, value) in [
            ("connections", 10_000.0),
            ("deliveries_per_s", deliveries),
            ("cpu_per_million", 0.5),
            ("latency_p50", 20.0),
            ("latency_p99", p99),
            ("latency_p999", 300.0),
            ("publish_p50", 1.0),
            ("publish_p99", 2.0),
            ("pushback", pushback),
            ("server_lag_p99", 150.0),
            ("client_receive_queue_mb", 12.0),
            ("missing", 0.0),
        ] {
            r.add(key, key, "", value);
        }
        r
    }

    fn row(in_flight: u16, unpinned: bool) -> Row {
        let mut argv = words(&command(10_000, in_flight, 10, 2));
        if unpinned {
            argv.push("--no-pin".into());
        }
        Row {
            argv,
            herald: run("herald", 1_200_000.0, 200.0, 3.0),
            nchan: run("nchan", 120_000.0, 250.0, 0.0),
        }
    }

    fn pinned() -> Pinning {
        Pinning {
            server_cpus: Some("0".parse().unwrap()),
            client_cpus: Some("1".parse().unwrap()),
            no_pin: false,
        }
    }

    #[test]
    fn a_table_pinned_and_one_unpinned() {
        let mut saturation = Saturation {
            rows: IN_FLIGHT.iter().map(|&n| row(n, false)).collect(),
            unpinned: Some(row(8, true)),
        };
        saturation.rows[2]
            .herald
            .errors
            .push("not every subscriber had every message".into());
        let text = section(&saturation, &pinned());
        assert!(text.starts_with("## Saturation: publish calls in flight\n\n10000 WebSocket"));
        assert!(
            text.contains(
                "\n\nPinned: server CPU 0, bench CPU 1; the last table is the 8-in-flight"
            ),
            "{text}"
        );
        for n in ["2", "8", "32"] {
            assert!(
                text.contains(&format!(
                    "| {n} | herald | 1200000 /s | 0.500 s | 20 ms | 200 ms | 300 ms | 1 ms | \
                     2 ms | 3 | 150 ms | 12 MB | 0 |\n| | nchan | 120000 /s |"
                )),
                "{n}: {text}"
            );
        }
        assert!(
            text.contains(
                "| | **herald / nchan** | 10× | 1× | 1× | 0.800× | 1× | 1× | 1× | – | 1× | 1× | – |"
            ),
            "{text}"
        );
        assert!(text.contains("| 8, unpinned | herald |"), "{text}");
        assert_eq!(text.matches(HEADER).count(), 2, "{text}");
        assert!(
            text.contains("**herald (32):** not every subscriber had every message."),
            "{text}"
        );
        assert!(
            text.contains(
                "target/release/herald-bench broadcast --subscribers 10000 --in-flight 8 \
                 --duration 10 --warmup 2 --no-pin\n```\n\n"
            ),
            "{text}"
        );
        assert!(text.ends_with("```\n\n"));
    }

    #[test]
    fn an_unpinned_report_has_one_table() {
        let saturation = Saturation {
            rows: vec![row(2, false)],
            unpinned: None,
        };
        let text = section(&saturation, &Pinning::default());
        assert!(text.contains("\n\nUnpinned.\n\n"), "{text}");
        assert_eq!(text.matches(HEADER).count(), 1, "{text}");
    }

    #[test]
    fn the_commands_parse() {
        for n in IN_FLIGHT {
            let words = words(&command(1000, n, 3, 1));
            let scenario = super::super::scenario(&words).unwrap();
            let crate::Scenario::Broadcast(args) = scenario else {
                panic!("not broadcast");
            };
            assert_eq!(args.load.in_flight, Some(n));
        }
        let mut unpinned = words(&command(1000, 8, 3, 1));
        unpinned.push("--no-pin".into());
        let scenario = super::super::scenario(&unpinned).unwrap();
        assert!(scenario.pinning().no_pin);
    }
}
