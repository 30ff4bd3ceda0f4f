//! The "Pusher protocol" section of `docs/benchmarks.md`: what a client on
//! Herald's Pusher protocol (`/app/<key>`, `--pusher`) costs against one on
//! the native protocol, idle and in a broadcast, beside Nchan in the same
//! sitting (docs/compat.md; the issue's goal: a Pusher connection costs at
//! most 10 % more than a native one).

use std::fmt::Write as _;

use super::{Args, Row, herald_alone, measure, stamp, words};
use crate::outcome::{RunResult, format_number, with_unit};

/// The section's heading, which `--only pusher` looks for.
pub const HEADING: &str = "## The Pusher protocol\n";

/// The runs of the section: idle and broadcast, each native and Nchan
/// (one [`Row`]) and Pusher (Herald alone).
pub struct Pusher {
    idle: Row,
    idle_pusher: RunResult,
    idle_command: String,
    broadcast: Row,
    broadcast_pusher: RunResult,
    broadcast_command: String,
}

pub async fn measure_pusher(args: &Args) -> anyhow::Result<Pusher> {
    let connections = if args.quick { 1_000 } else { 10_000 };
    let idle_command = format!("idle --connections {connections} --subscribe --channel bench");
    let idle = measure(args, words(&idle_command)).await?;
    let idle_pusher = herald_alone(args, &format!("{idle_command} --pusher")).await?;
    let broadcast_command =
        format!("broadcast --subscribers {connections} --rate 5 --duration 10 --warmup 2");
    let broadcast = measure(args, words(&broadcast_command)).await?;
    let broadcast_pusher = herald_alone(args, &format!("{broadcast_command} --pusher")).await?;
    Ok(Pusher {
        idle,
        idle_pusher,
        idle_command,
        broadcast,
        broadcast_pusher,
        broadcast_command,
    })
}

/// `value` of `pusher` over `native`, as a percentage more (or less).
fn extra(pusher: Option<f64>, native: Option<f64>) -> String {
    match (pusher, native) {
        (Some(p), Some(n)) if n > 0.0 => format!("{:+.0} %", (p / n - 1.0) * 100.0),
        _ => "–".into(),
    }
}

/// The section, from its heading to the blank line before the next.
pub fn section(runs: &Pusher, pinning: &crate::cpus::Pinning) -> String {
    let mut out = String::from(HEADING);
    let _ = write!(
        out,
        "\nWhat a client on Herald's Pusher protocol (`/app/<key>`, docs/compat.md) costs against \
         one on the native protocol, with the same server, and Nchan beside them. The Pusher \
         clients are the bench's own (`--pusher`): they subscribe with `pusher:subscribe` and \
         read each message from its frame's `data` string. Idle: connections all subscribed to one \
         channel, server RSS growth per connection. Broadcast: one channel, 5 messages/s \
         for 10 s (after 2 s of warm-up), server CPU per million deliveries and the latency from \
         publish to receipt. The goal is that a Pusher connection costs at most 10 % more than \
         a native one. Measured {}.\n\n",
        stamp(pinning)
    );
    let native = &runs.idle.herald;
    let nchan = &runs.idle.nchan;
    let pusher = &runs.idle_pusher;
    out.push_str(
        "| | native WebSocket | Pusher | Pusher against native | Nchan WebSocket |\n\
         |---|---|---|---|---|\n",
    );
    let _ = writeln!(
        out,
        "| idle: server RSS per connection | {} | {} | {} | {} |",
        with_unit(native.get("bytes_per_conn"), "B"),
        with_unit(pusher.get("bytes_per_conn"), "B"),
        extra(pusher.get("bytes_per_conn"), native.get("bytes_per_conn")),
        with_unit(nchan.get("bytes_per_conn"), "B"),
    );
    let native = &runs.broadcast.herald;
    let nchan = &runs.broadcast.nchan;
    let pusher = &runs.broadcast_pusher;
    for (label, key, unit) in [
        (
            "broadcast: server CPU-s per 1M deliveries",
            "cpu_per_million",
            "s",
        ),
        ("… of it user", "user_per_million", "s"),
        ("… of it system", "sys_per_million", "s"),
        ("latency p50", "latency_p50", "ms"),
        ("latency p99", "latency_p99", "ms"),
    ] {
        let _ = writeln!(
            out,
            "| {label} | {} | {} | {} | {} |",
            with_unit(native.get(key), unit),
            with_unit(pusher.get(key), unit),
            extra(pusher.get(key), native.get(key)),
            with_unit(nchan.get(key), unit),
        );
    }
    let missing = pusher.get("missing").map_or("–".into(), format_number);
    let _ = write!(
        out,
        "\nDeliveries missing at the end of the Pusher broadcast: {missing}.\n\n```sh\n\
         target/release/herald-bench {idle}\n\
         target/release/herald-bench {idle} --pusher\n\
         target/release/herald-bench {idle} --target nchan\n\
         target/release/herald-bench {broadcast}\n\
         target/release/herald-bench {broadcast} --pusher\n\
         target/release/herald-bench {broadcast} --target nchan\n```\n\n",
        idle = runs.idle_command,
        broadcast = runs.broadcast_command,
    );
    out
}
