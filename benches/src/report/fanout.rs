//! The "Timeline fan-out" section of `docs/benchmarks.md`: `herald-bench
//! fanout` on the memory engine, and on Redis with three nodes, the
//! recipients round robin and then each on its shard's node; then a
//! delivery of small shard messages (8192 recipients over 8192 shards, all
//! connected), whose Redis CPU per shard message is the capacity model's
//! input; one column per run.

use std::fmt::Write as _;

use super::{Args, Variant, herald_alone, stamp};
use crate::{
    cpus::Pinning,
    outcome::{RunResult, format_number, format_ratio, with_unit},
};

/// The heading `--only fanout` looks for.
pub const HEADING: &str = "## Timeline fan-out\n";

/// The runs of the section: what each shows, its recipients and connected
/// ones (`None`: the section's million), and its options after the common ones.
const RUNS: [(&str, Option<&str>, &str); 4] = [
    ("memory engine, 1 node", None, ""),
    ("Redis, 3 nodes, round robin", None, " --redis --nodes 3"),
    (
        "Redis, 3 nodes, by shard",
        None,
        " --redis --nodes 3 --shard-affinity",
    ),
    (
        SMALL,
        Some("--recipients 8192 --connected 8192"),
        " --redis --nodes 3 --shard-affinity --shards 8192 --herald-env HERALD_TIMELINE_SHARDS=8192",
    ),
];

/// The run whose shard messages carry one or two recipients each, as a
/// notice to a hundred followers over 1024 shards does (the capacity model's
/// load): several thousand of them, so that Redis' CPU, read in 10 ms clock
/// ticks, is per shard message to within a few per cent.
pub const SMALL: &str = "Redis, 3 nodes, by shard, small shard messages";

/// Measures every run of the section.
pub async fn measure(args: &Args) -> anyhow::Result<Vec<Variant>> {
    let (audience, common) = if args.quick {
        (
            "--recipients 100000 --connected 1500",
            "--public-subscribers 10 --check",
        )
    } else {
        (
            "--recipients 1000000 --connected 15000",
            "--public-subscribers 100 --public-rate 200 --idle 3 --check",
        )
    };
    let mut runs = Vec::new();
    for (what, own, flags) in RUNS {
        let command = format!("fanout {} {common}{flags}", own.unwrap_or(audience));
        let result = herald_alone(args, &command).await?;
        runs.push((what, command, result));
    }
    Ok(runs)
}

/// The section, from its heading to the blank line before the next.
pub fn section(runs: &[Variant], pinning: &Pinning) -> String {
    let first = runs.first().map(|(_, _, r)| r);
    let get = |key: &str| {
        first
            .and_then(|r| r.get(key))
            .map_or("–".into(), format_number)
    };
    let mut out = String::from(HEADING);
    let _ = write!(
        out,
        "\nHerald alone (Nchan has no counterpart): one `POST /api/deliver` \
         (`docs/timelines.md`) to the home timelines of users 1 to {recipients}, a body of \
         {body} MB of integer ids built before anything is measured, with an \
         `Idempotency-Key`. {connected} of the recipients are connected over WebSocket, each \
         subscribed to `user:<id>` for every {stride}th id, so that they fall into the shards \
         as any sample would; {public} other clients are subscribed to an unrelated channel, \
         `public`, which a publisher sends {rate} messages per second to throughout.\n\n\
         The notice's `data` carries its send time, written into the body just before the \
         request is, so the recipients' workers measure its latency like any message's: the \
         largest is the time until the last connected recipient had it. The delivery window \
         runs from the request until every connected recipient has the notice and the answer \
         has come; server CPU (`/proc`) and RSS (sampled every 20 ms) are taken over it. The \
         unrelated channel's latency is measured over 3 s before the delivery (idle) and over \
         the delivery window (public messages sent in it, drained). After a quiet second the \
         same request is sent again with the same key, which must publish nothing; after \
         another, every connected recipient must have had the notice exactly once. Engine \
         messages are the answer's `messages`; on Redis, the shard messages the nodes received \
         come from `herald_redis_messages_received_total` (less the unrelated channel's). \
         \"By shard\" connects each recipient to node `crc32(\"default:<id>\") % 1024 % 3`, \
         as the load balancer of `deploy/nginx/` does with the `shard` parameter. \
         Measured {}.\n\n\
         On Redis, Redis' own CPU is read apart from the nodes' (the server CPU rows count \
         both) over the idle window and the delivery window; Redis CPU per shard message is \
         the window's less what Redis spent at the idle window's rate over as long (the \
         `public` channel's publishes, the nodes' own commands), divided by the engine \
         messages. A million recipients over 1024 shards make shard messages of about a \
         thousand ids (8 KB); the last column delivers to users 1 to 8192 over 8192 shards \
         (`timeline.shards`), every one of them connected, so that its few thousand shard \
         messages carry one or two ids each, as a notice to a hundred followers does: its \
         figure is the capacity model's Redis CPU per timeline shard publish \
         (`docs/scaling.md`).\n\n\
         The delivery window is short, so its `public` p99 rests on few messages ({during} in \
         the first column) and is close to their maximum; on a machine whose cores Herald, the \
         clients' workers and the publisher share, it varies several-fold from run to run. The \
         idle and delivery figures of one column come from the same run, back to back.\n\n",
        stamp(pinning),
        recipients = get("recipients"),
        body = get("body_mb"),
        connected = get("connections"),
        stride = get("stride"),
        public = get("public_connections"),
        rate = get("public_rate"),
        during = get("public_during_published"),
    );
    out.push('|');
    for (what, _, _) in runs {
        let _ = write!(out, " | {what}");
    }
    out.push_str(" |\n|---|");
    out.push_str(&"---|".repeat(runs.len()));
    out.push('\n');
    for (label, cell) in rows() {
        let _ = write!(out, "| {label} |");
        for (_, _, result) in runs {
            let _ = write!(out, " {} |", cell(result));
        }
        out.push('\n');
    }
    for (what, _, result) in runs {
        for error in &result.errors {
            let _ = writeln!(out, "\n**Check failed ({what}):** {error}.");
        }
    }
    out.push_str("\n```sh\n");
    for (_, command, _) in runs {
        let _ = writeln!(out, "target/release/herald-bench {command}");
    }
    out.push_str(
        "```\n\nRegenerate this section alone (about two minutes, no Nchan needed; Redis from \
         `scripts/install-test-deps.sh`): `cargo build --release -p api -p herald-bench && \
         target/release/herald-bench report --only fanout`.\n\n",
    );
    out
}

/// A cell of the table, from one run's figures.
type Cell = Box<dyn Fn(&RunResult) -> String>;

/// The table's rows: a label, and how a run's cell reads.
fn rows() -> Vec<(&'static str, Cell)> {
    fn one(key: &'static str, unit: &'static str) -> Cell {
        Box::new(move |r| with_unit(r.get(key), unit))
    }
    /// "a → b" for an idle and a during figure.
    fn change(idle: &'static str, during: &'static str, unit: &'static str) -> Cell {
        Box::new(move |r| {
            format!(
                "{} → {}",
                with_unit(r.get(idle), unit),
                with_unit(r.get(during), unit)
            )
        })
    }
    vec![
        ("connected recipients", one("connections", "")),
        (
            "`POST /api/deliver` answered after",
            one("request_ms", "ms"),
        ),
        (
            "**last connected recipient had the notice after**",
            Box::new(|r| format!("**{}**", with_unit(r.get("last_recipient_ms"), "ms"))),
        ),
        (
            "half of them / 99 % of them after",
            Box::new(|r| {
                format!(
                    "{} / {}",
                    with_unit(r.get("notice_p50"), "ms"),
                    with_unit(r.get("notice_p99"), "ms")
                )
            }),
        ),
        (
            "connected recipients with the notice / more than once",
            Box::new(|r| {
                format!(
                    "{} / {}",
                    with_unit(r.get("reached"), ""),
                    with_unit(r.get("repeated"), "")
                )
            }),
        ),
        (
            "**engine messages** (shards touched)",
            Box::new(|r| {
                format!(
                    "**{}** ({})",
                    with_unit(r.get("engine_messages"), ""),
                    with_unit(r.get("shards"), "")
                )
            }),
        ),
        (
            "shard messages received by the nodes (Redis)",
            one("metric_redis_received", ""),
        ),
        (
            "timeline messages expanded (`herald_timeline_expanded_total`)",
            one("metric_expanded", ""),
        ),
        (
            "**Redis CPU per shard message** (its own process, less its idle rate)",
            Box::new(|r| match r.get("redis_cpu_per_shard_message_us") {
                Some(us) => format!("**{}**", with_unit(Some(us), "µs")),
                None => "–".into(),
            }),
        ),
        (
            "Redis CPU in the delivery window; busy when idle (100 % = one core)",
            Box::new(|r| {
                format!(
                    "{}; {}",
                    with_unit(r.get("redis_cpu_s"), "s"),
                    with_unit(r.get("redis_idle_cpu_share"), "%")
                )
            }),
        ),
        (
            "server CPU in the delivery window (user + system)",
            Box::new(|r| {
                format!(
                    "{} ({} + {})",
                    with_unit(r.get("cpu_s"), "s"),
                    with_unit(r.get("user_s"), "s"),
                    with_unit(r.get("sys_s"), "s")
                )
            }),
        ),
        (
            "delivery window; server CPU busy in it (100 % = one core)",
            Box::new(|r| {
                format!(
                    "{}; {}",
                    with_unit(r.get("window_ms"), "ms"),
                    with_unit(r.get("server_cpu_share"), "%")
                )
            }),
        ),
        (
            "server RSS before → peak → after",
            Box::new(|r| {
                format!(
                    "{} → {} → {}",
                    with_unit(r.get("rss_before"), "MB"),
                    with_unit(r.get("rss_peak"), "MB"),
                    with_unit(r.get("rss_after"), "MB")
                )
            }),
        ),
        (
            "`public` latency p50, idle → during",
            change("public_idle_p50", "public_during_p50", "ms"),
        ),
        (
            "**`public` latency p99, idle → during** (ratio)",
            Box::new(|r| {
                format!(
                    "**{} → {}** ({})",
                    with_unit(r.get("public_idle_p99"), "ms"),
                    with_unit(r.get("public_during_p99"), "ms"),
                    format_ratio(r.get("public_p99_ratio"))
                )
            }),
        ),
        (
            "`public` latency max, idle → during",
            change("public_idle_max", "public_during_max", "ms"),
        ),
        (
            "`public` messages measured, idle → during",
            change("public_idle_published", "public_during_published", ""),
        ),
        (
            "`public` publish call p99, idle → during",
            change("public_idle_call_p99", "public_during_call_p99", "ms"),
        ),
        (
            "retry with the same key: engine messages / duplicates, answered after",
            Box::new(|r| {
                format!(
                    "{} / {}, {}",
                    with_unit(r.get("retry_messages"), ""),
                    with_unit(r.get("retry_duplicates"), ""),
                    with_unit(r.get("retry_ms"), "ms")
                )
            }),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(what: &'static str, last_ms: f64) -> Variant {
        let mut r = RunResult::new(
            "fanout",
            "herald",
            "1000000 recipients, 15000 ws connected (`user:<id>`, every 66th id), \
             100 on `public` at 200 msg/s"
                .into(),
        );
        for (key, value) in [
            ("connections", 15_000.0),
            ("recipients", 1_000_000.0),
            ("body_mb", 6.89),
            ("public_connections", 100.0),
            ("stride", 66.0),
            ("public_rate", 200.0),
            ("last_recipient_ms", last_ms),
            ("engine_messages", 1024.0),
            ("shards", 1024.0),
            ("public_idle_p99", 2.0),
            ("public_during_p99", 5.0),
            ("public_p99_ratio", 2.5),
        ] {
            r.add(key, key, "", value);
        }
        (what, format!("fanout --check # {what}"), r)
    }

    #[test]
    fn the_section_has_a_column_per_run() {
        let mut failed = run("b", 900.0);
        failed
            .2
            .errors
            .push("1 connected recipients never had the notice".into());
        let text = section(&[run("a", 250.0), failed], &Pinning::default());
        assert!(text.starts_with(HEADING), "{text}");
        assert!(
            text.contains("users 1 to 1000000, a body of 6.89 MB"),
            "{text}"
        );
        assert!(text.contains("every 66th id"), "{text}");
        assert!(text.contains("sends 200 messages per second"), "{text}");
        assert!(text.contains("\n| | a | b |\n|---|---|---|\n"), "{text}");
        assert!(
            text.contains(
                "| **last connected recipient had the notice after** | **250 ms** | **900 ms** |"
            ),
            "{text}"
        );
        assert!(text.contains("| **1024** (1024) |"), "{text}");
        assert!(text.contains("**2 ms → 5 ms** (2.50×)"), "{text}");
        assert!(
            text.contains("**Check failed (b):** 1 connected recipients"),
            "{text}"
        );
        assert!(
            text.contains("target/release/herald-bench fanout --check # a\n"),
            "{text}"
        );
        assert!(text.ends_with("report --only fanout`.\n\n"), "{text}");
    }

    #[test]
    fn the_commands_parse() {
        for (_, own, flags) in RUNS {
            let own = own.unwrap_or("");
            let words = super::super::words(&format!("fanout {own} --check{flags}"));
            assert!(super::super::scenario(&words).is_ok(), "{flags}");
        }
    }
}
