//! The "HTTP long-poll" section of `docs/benchmarks.md`, in one sitting:
//! what a client waiting on Herald's `/poll` costs the server against an
//! idle native SSE stream, and what a delivery to a polling client costs
//! against one to an SSE stream, with Nchan's long-poll and SSE subscribers
//! beside them (`idle` and `broadcast` with `--transport poll` and `sse`).

use std::fmt::Write as _;

use super::{Args, Row, measure, stamp, words};
use crate::outcome::{RunResult, format_number, with_unit};

/// The section's heading, which `--only poll` looks for.
pub const HEADING: &str = "## HTTP long-poll\n";

/// The runs of the section, each on Herald and Nchan.
pub struct Poll {
    idle_poll: Row,
    idle_sse: Row,
    broadcast_poll: Row,
    broadcast_sse: Row,
}

pub async fn measure_poll(args: &Args) -> anyhow::Result<Poll> {
    let (clients, subscribers, settle, window, duration) = if args.quick {
        (1_000, 300, 1, 5, 3)
    } else {
        (10_000, 3_000, 5, 25, 10)
    };
    let idle = |transport: &str| {
        format!(
            "idle --transport {transport} --connections {clients} --channel bench \
             --settle {settle} --cpu-window {window}"
        )
    };
    let broadcast = |transport: &str| {
        format!(
            "broadcast --transport {transport} --subscribers {subscribers} --rate 5 \
             --duration {duration} --warmup 2"
        )
    };
    Ok(Poll {
        idle_poll: measure(args, words(&idle("poll"))).await?,
        idle_sse: measure(args, words(&idle("sse"))).await?,
        broadcast_poll: measure(args, words(&broadcast("poll"))).await?,
        broadcast_sse: measure(args, words(&broadcast("sse"))).await?,
    })
}

/// The table's rows: label, which run (idle or broadcast), figure key, unit.
const ROWS: [(&str, bool, &str, &str); 12] = [
    ("idle: server RSS per client", true, "bytes_per_conn", "B"),
    ("idle: server RSS, all waiting", true, "rss_after", "MB"),
    (
        "idle: kernel TCP + socket slab per connection, both ends",
        true,
        "kernel_slab_per_conn",
        "B",
    ),
    (
        "idle: server CPU per client per second",
        true,
        "cpu_us_per_conn_s",
        "µs",
    ),
    (
        "idle: server CPU per new client (first poll, or stream opened)",
        true,
        "cpu_us_per_new_conn",
        "µs",
    ),
    (
        "broadcast: server CPU-s per 1M deliveries",
        false,
        "cpu_per_million",
        "s",
    ),
    ("… of it user", false, "user_per_million", "s"),
    ("… of it system", false, "sys_per_million", "s"),
    ("broadcast: latency p50", false, "latency_p50", "ms"),
    ("broadcast: latency p99", false, "latency_p99", "ms"),
    ("broadcast: deliveries", false, "deliveries", ""),
    (
        "broadcast: deliveries lost, twice, missing at the end",
        false,
        "",
        "",
    ),
];

/// `lost / duplicates / missing` of a broadcast run; a stream client does
/// not track sequence numbers, so only `missing` is known for it.
fn losses(run: &RunResult) -> String {
    let count = |key: &str| run.get(key).map_or("–".into(), format_number);
    format!(
        "{} / {} / {}",
        count("lost"),
        count("duplicates"),
        count("missing")
    )
}

/// `a / b` as "2.5×", or "–".
fn times(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{}×", format_number(a / b)),
        _ => "–".into(),
    }
}

/// What the table says, with its ratios, and why.
fn reading(runs: &Poll) -> String {
    let rss = |row: &Row| {
        (
            row.herald.get("bytes_per_conn"),
            row.nchan.get("bytes_per_conn"),
        )
    };
    let cpu = |row: &Row| {
        (
            row.herald.get("cpu_per_million"),
            row.nchan.get("cpu_per_million"),
        )
    };
    let (poll_rss, nchan_poll_rss) = rss(&runs.idle_poll);
    let (sse_rss, _) = rss(&runs.idle_sse);
    let (poll_cpu, nchan_poll_cpu) = cpu(&runs.broadcast_poll);
    let (sse_cpu, _) = cpu(&runs.broadcast_sse);
    format!(
        "- A waiting long-poll client costs Herald {} the memory of an idle SSE stream, and {} \
         what a waiting long-poll client costs Nchan. A held poll is one hyper request \
         (`api/src/http/poll.rs`): hyper's connection with its buffers, the route's handler \
         future and the poll's `Connection`, where an SSE stream leaves hyper for a small task \
         of its own (`push::sse`). Nchan holds an nginx request for a long-poll and for an SSE \
         stream alike, so the two cost it the same. Between polls Herald keeps nothing: a \
         client is its cursor.\n\
         - A delivery to a long-poll client costs Herald {} one to an SSE stream, and {} one to \
         Nchan's long-poll client. It is a whole request: the answer, then the next poll's \
         request head, admission, subscription and history read, where an SSE delivery is one \
         write of a frame encoded once for all. At a few messages a second each answer carries \
         one message (Nchan's always does), so this is the cost of a poll; the latency grows \
         with it, since the server answers the clients one poll after another.\n",
        times(poll_rss, sse_rss),
        times(poll_rss, nchan_poll_rss),
        times(poll_cpu, sse_cpu),
        times(poll_cpu, nchan_poll_cpu),
    )
}

/// The section, from its heading to the blank line before the next.
pub fn section(runs: &Poll, pinning: &crate::cpus::Pinning) -> String {
    let mut out = String::from(HEADING);
    let n_idle = runs.idle_poll.herald.get("connections").unwrap_or(0.0);
    let n_broadcast = runs.broadcast_poll.herald.get("connections").unwrap_or(0.0);
    let _ = write!(
        out,
        "\nWhat a client waiting on Herald's `/poll` (docs/protocol.md) costs against an idle \
         native SSE stream, and a delivery to it against one to an SSE stream, with Nchan's \
         long-poll subscriber (`nchan_subscriber longpoll`: one message per answer, its id in \
         `Last-Modified` and `Etag`, sent back as `If-Modified-Since` and `If-None-Match`) and its \
         SSE subscriber beside them, all from one sitting. The bench's long-poll client \
         (`benches/src/poll.rs`) keeps one keep-alive connection and polls again as soon as an \
         answer is whole, from the cursor (Herald) or the message id (Nchan) it gave; every \
         answer is checked (status, JSON, cursor, headers), and a gap or a duplicate in a \
         client's sequence numbers fails the run. Polls time out after 25 s on both servers \
         (Herald's default `poll.timeout_secs`; `nchan_subscriber_timeout 25s` in the bench's \
         nginx) and are asked again.\n\n\
         Idle: {} clients on one channel, each with one poll held (or one SSE stream open); \
         server RSS growth per client once settled, and the server's CPU over a 25-s window \
         (one round of poll timeouts, of Herald's SSE pings). Broadcast: {} clients on one \
         channel, 5 messages/s of 100-byte JSON for 10 s after 2 s of warm-up; server CPU per \
         million deliveries and the latency from publish to receipt. Measured {}.\n\n",
        format_number(n_idle),
        format_number(n_broadcast),
        stamp(pinning)
    );
    out.push_str(
        "| | Herald long-poll | Herald SSE | Nchan long-poll | Nchan SSE |\n\
         |---|---|---|---|---|\n",
    );
    for (label, idle, key, unit) in ROWS {
        let (poll, sse) = if idle {
            (&runs.idle_poll, &runs.idle_sse)
        } else {
            (&runs.broadcast_poll, &runs.broadcast_sse)
        };
        let cell = |run: &RunResult| {
            if key.is_empty() {
                losses(run)
            } else {
                with_unit(run.get(key), unit)
            }
        };
        let _ = writeln!(
            out,
            "| {label} | {} | {} | {} | {} |",
            cell(&poll.herald),
            cell(&sse.herald),
            cell(&poll.nchan),
            cell(&sse.nchan),
        );
    }
    for row in [
        &runs.idle_poll,
        &runs.idle_sse,
        &runs.broadcast_poll,
        &runs.broadcast_sse,
    ] {
        for run in [&row.herald, &row.nchan] {
            if !run.ok {
                let _ = writeln!(
                    out,
                    "\n**Check failed** ({}, {}): {}.",
                    run.target,
                    run.setup,
                    run.errors.join("; ")
                );
            }
        }
    }
    let _ = write!(
        out,
        "\nA stream client does not track sequence numbers (`–`): its deliveries are checked by \
         count (missing at the end).\n\n{}\n```sh\n\
         cargo build --release -p api -p herald-bench\n",
        reading(runs)
    );
    for row in [
        &runs.idle_poll,
        &runs.idle_sse,
        &runs.broadcast_poll,
        &runs.broadcast_sse,
    ] {
        let command = row.argv.join(" ");
        let _ = writeln!(out, "target/release/herald-bench {command}");
        let _ = writeln!(out, "target/release/herald-bench {command} --target nchan");
    }
    out.push_str(
        "```\n\nRegenerate this section alone (about five minutes): \
         `target/release/herald-bench report --only poll`.\n\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_and_losses_read_as_the_page_shows_them() {
        for (a, b, want) in [
            (Some(21_773.0), Some(818.0), "26.6×"),
            (Some(16.4), Some(12.0), "1.37×"),
            (Some(3.0), Some(1.0), "3×"),
            (None, Some(1.0), "–"),
            (Some(1.0), None, "–"),
            (Some(1.0), Some(0.0), "–"),
        ] {
            assert_eq!(times(a, b), want, "{a:?} / {b:?}");
        }
        let mut poll = RunResult::new("broadcast", "herald", String::new());
        poll.add("lost", "", "", 0.0);
        poll.add("duplicates", "", "", 2.0);
        poll.add("missing", "", "", 0.0);
        assert_eq!(losses(&poll), "0 / 2 / 0");
        let mut sse = RunResult::new("broadcast", "herald", String::new());
        sse.add("missing", "", "", 0.0);
        assert_eq!(losses(&sse), "– / – / 0");
    }
}
