//! The compatibility section of `docs/benchmarks.md`, in one sitting: what a
//! client on Herald's Pusher protocol (`/app/<key>`, `--pusher`) costs
//! against one on the native protocol, idle and in a broadcast, beside
//! Nchan (docs/compat.md; the goal: a Pusher connection costs at most 10 %
//! more than a native one); what an idle Mercure subscriber costs against a
//! native SSE one (`--mercure`); and what a presence join and leave cost on
//! Redis (`presence`, docs/presence.md).

use std::fmt::Write as _;

use super::{Args, Row, herald_alone, measure, stamp, words};
use crate::outcome::{RunResult, format_number, with_unit};

/// The section's heading, which `--only pusher` looks for.
pub const HEADING: &str = "## The Pusher protocol, the Mercure hub and presence\n";

/// The runs of the section: idle and broadcast, each native and Nchan
/// (one [`Row`]) and Pusher (Herald alone).
pub struct Pusher {
    idle: Row,
    idle_pusher: RunResult,
    idle_command: String,
    broadcast: Row,
    broadcast_pusher: RunResult,
    broadcast_command: String,
    /// Native SSE and Nchan's SSE.
    idle_sse: Row,
    idle_mercure: RunResult,
    sse_command: String,
    presence: RunResult,
    presence_command: String,
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
    let sse_command = format!("idle --transport sse --connections {connections} --channel bench");
    let idle_sse = measure(args, words(&sse_command)).await?;
    let idle_mercure = herald_alone(args, &format!("{sse_command} --mercure")).await?;
    let members = if args.quick { 200 } else { 1_000 };
    let presence_command = format!("presence --members {members}");
    let presence = herald_alone(args, &presence_command).await?;
    Ok(Pusher {
        idle,
        idle_pusher,
        idle_command,
        broadcast,
        broadcast_pusher,
        broadcast_command,
        idle_sse,
        idle_mercure,
        sse_command,
        presence,
        presence_command,
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
    out.push_str(&mercure(runs));
    out.push_str(&presence(runs));
    out
}

/// The Mercure part: idle subscribers of the hub against native SSE ones.
fn mercure(runs: &Pusher) -> String {
    let native = runs.idle_sse.herald.get("bytes_per_conn");
    let nchan = runs.idle_sse.nchan.get("bytes_per_conn");
    let mercure = runs.idle_mercure.get("bytes_per_conn");
    let mut out = String::from(
        "### The Mercure hub\n\nAn idle subscriber of Herald's Mercure hub \
         (`/.well-known/mercure?topic=…`, docs/compat.md) against a native SSE one, same server, \
         same sitting: the bench's SSE clients, with `--mercure` subscribed through the hub (one \
         `topic=` selector each), and Nchan's SSE subscribers beside them (a Mercure hub of its \
         own is not installed here). Server RSS growth per connection.\n\n\
         | | native SSE | Mercure | Mercure against native | Nchan SSE |\n|---|---|---|---|---|\n",
    );
    let _ = writeln!(
        out,
        "| idle: server RSS per connection | {} | {} | {} | {} |",
        with_unit(native, "B"),
        with_unit(mercure, "B"),
        extra(mercure, native),
        with_unit(nchan, "B"),
    );
    let _ = write!(
        out,
        "\n```sh\ntarget/release/herald-bench {sse}\ntarget/release/herald-bench {sse} --mercure\n\
         target/release/herald-bench {sse} --target nchan\n```\n\n",
        sse = runs.sse_command,
    );
    out
}

/// The presence part: what a join and a leave cost on Redis.
fn presence(runs: &Pusher) -> String {
    let result = &runs.presence;
    let mut out = String::from(
        "### Presence on Redis\n\nHerald on Redis alone (Nchan has no presence): native \
         WebSocket clients join one presence channel one after the other, each waiting for its \
         `subscribed` with the member list, then leave (docs/presence.md). Commands from Redis' \
         `INFO commandstats`, less the nodes' own background commands at their rate at rest; \
         Redis counts the commands run inside Herald's functions too, so both are given.\n\n\
         | figure | value |\n|---|---|\n",
    );
    for figure in &result.figures {
        let _ = writeln!(
            out,
            "| {} | {} |",
            figure.label,
            with_unit(figure.value, &figure.unit)
        );
    }
    for error in &result.errors {
        let _ = writeln!(out, "\n**Check failed:** {error}.");
    }
    let _ = write!(
        out,
        "\nEach join reads the whole member list (it is answered with the subscribe), so a join's \
         cost grows with the channel's members: presence channels are for rooms, not audiences.\n\n\
         ```sh\ntarget/release/herald-bench {}\n```\n\n",
        runs.presence_command
    );
    out
}
