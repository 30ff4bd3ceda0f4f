//! The "Publishing, by each way in" section of `docs/benchmarks.md`:
//! `herald-bench publish`, server CPU per publish through Herald's HTTP
//! publish, its Meteor controller port and its STOMP port, beside Nchan's
//! HTTP publish in the same run.

use std::fmt::Write as _;

use super::{Args, Row, measure, words};
use crate::outcome::{RunResult, format_ratio, with_unit};

/// The section's heading, which `--only publish` looks for.
pub const HEADING: &str = "## Publishing, by each way in\n";

/// The ways in: label, figure key prefix.
const WAYS: [(&str, &str); 3] = [
    ("HTTP publish", "http"),
    ("Meteor `ADDMESSAGE`", "meteor"),
    ("STOMP `SEND` with a receipt", "stomp"),
];

/// The table's columns after the way and the target: figure key suffix, unit.
const COLUMNS: [(&str, &str); 6] = [
    ("rate", "/s"),
    ("cpu_us", "µs"),
    ("user_us", "µs"),
    ("sys_us", "µs"),
    ("call_p50", "ms"),
    ("call_p99", "ms"),
];

pub async fn measure_publish(args: &Args) -> anyhow::Result<Row> {
    let messages = if args.quick { 2_000 } else { 20_000 };
    let command = format!("publish --messages {messages}");
    measure(args, words(&command)).await
}

fn cells(result: &RunResult, way: &str) -> Vec<String> {
    COLUMNS
        .iter()
        .map(|(suffix, unit)| with_unit(result.get(&format!("{way}_{suffix}")), unit))
        .collect()
}

/// The section, from its heading to the blank line before the next.
pub fn section(row: &Row) -> String {
    let mut out = String::from(HEADING);
    out.push_str(
        "\nWhat one publish costs the server, by the way it comes in: Herald's `POST \
         /api/publish`, its Meteor controller port (`ADDMESSAGE` on one persistent connection, \
         the text escaped with `addslashes` as StatusNet's Meteor plugin sends it) and its STOMP \
         port (`SEND` with a `receipt` on one connection, the receipt awaited), and Nchan's HTTP \
         publish (`POST /pub/<channel>`). One publish at a time, each waiting for its answer, \
         100-byte JSON, to one channel nobody subscribes to, so that the figure is the publish \
         path alone (docs/compat.md). CPU is the server's user and system time over the \
         measured publishes (after a warm-up of 1,000), from `/proc`; the call is the \
         publisher's time from writing the request to reading the whole answer.\n\n",
    );
    out.push_str(
        "| way in | target | publishes/s | server CPU per publish | … user | … system | call p50 | \
         call p99 |\n|---|---|---|---|---|---|---|---|\n",
    );
    for (label, way) in WAYS {
        let _ = writeln!(
            out,
            "| {label} | herald | {} |",
            cells(&row.herald, way).join(" | ")
        );
        if way == "http" {
            let _ = writeln!(out, "| | nchan | {} |", cells(&row.nchan, way).join(" | "));
        }
        let ratios: Vec<String> = COLUMNS
            .iter()
            .map(|(suffix, _)| {
                let herald = row.herald.get(&format!("{way}_{suffix}"));
                let nchan = row.nchan.get(&format!("http_{suffix}"));
                format_ratio(
                    herald
                        .zip(nchan)
                        .and_then(|(h, n)| (n > 0.0).then(|| h / n)),
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "| | **herald / nchan's HTTP publish** | {} |",
            ratios.join(" | ")
        );
    }
    let _ = write!(
        out,
        "\n```sh\ntarget/release/herald-bench {}\n```\n\nRegenerate this section alone (about \
         half a minute, with Nchan): `cargo build --release -p api -p herald-bench && \
         target/release/herald-bench report --only publish`.\n\n",
        row.argv.join(" ")
    );
    out
}
