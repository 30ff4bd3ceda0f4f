//! The "Node restart" section of `docs/benchmarks.md`: `reconnect --restart`
//! with 15,000 clients (1,500 with `--quick`) on Herald with the Redis
//! engine, through a graceful restart (SIGTERM) and a crash (SIGKILL) on
//! WebSocket, and a crash on SSE. Herald alone: Nchan's memory store keeps
//! nothing across a restart, so it has no counterpart run.

use std::fmt::Write as _;

use super::{Args, Variant, herald_alone, stamp};
use crate::{cpus::Pinning, outcome::format_number};

/// The section's heading, which `--only restart` looks for.
pub const HEADING: &str = "## Node restart\n";

/// The runs: what each shows, and its flags.
const RUNS: [(&str, &str); 3] = [
    ("WebSocket, SIGTERM (a deploy)", "--restart term"),
    ("WebSocket, SIGKILL (a crash)", "--restart kill"),
    ("SSE, SIGKILL (a crash)", "--restart kill --transport sse"),
];

/// The table's rows: label, figure key and unit.
const ROWS: [(&str, &str, &str); 10] = [
    ("clients", "connections", ""),
    ("clients recovered with no gap", "recovered", ""),
    ("messages lost", "lost", ""),
    ("messages received twice", "duplicates", ""),
    ("publish calls sent again (node down)", "retried", ""),
    ("signal → new node listening", "down_ms", "ms"),
    ("signal → last client recovered", "all_back_ms", "ms"),
    ("reconnects/s, from listening", "accept_rate", "/s"),
    ("reconnect p50 (from the close)", "reconnect_p50", "ms"),
    ("server CPU per reconnect", "cpu_us_per_reconnect", "µs"),
];

pub async fn measure(args: &Args, clients: usize) -> anyhow::Result<Vec<Variant>> {
    let mut runs = Vec::new();
    for (what, flags) in RUNS {
        let command = format!("reconnect --clients {clients} --redis {flags}");
        let result = herald_alone(args, &command).await?;
        runs.push((what, command, result));
    }
    Ok(runs)
}

/// The section, from its heading to the blank line before the next.
pub fn section(runs: &[Variant], pinning: &Pinning) -> String {
    let mut out = String::from(HEADING);
    let _ = write!(
        out,
        "\nHerald alone, on the Redis engine (its history outlives the node; Nchan's memory \
         store keeps nothing across a restart, so it has no counterpart here). Clients on one \
         channel at 20 msg/s; after 3 s the node is restarted on its port: SIGTERM and Herald's \
         graceful drain (with `shutdown.readiness_delay_ms` 0: no load balancer here to take it \
         out first), or SIGKILL. Each client comes back as a client library would, at once when \
         the server closes it (not waiting out the drain's advice to spread over \
         `shutdown.reconnect_jitter_ms`: the harshest storm), then with full-jitter backoff, \
         50 ms doubling to 2 s, while refused, resuming from its last position (`since`, \
         `Last-Event-ID`). The publisher sends each message until it is accepted, with an \
         `Idempotency-Key`, so every client must get every message exactly once. Times are \
         from the signal; server CPU per reconnect is the new node's and Redis' from listening \
         until the last client was back, per reconnect, and includes the deliveries and history \
         reads meanwhile. Measured {}.\n\n",
        stamp(pinning),
    );
    out.push_str("| |");
    for (what, _, _) in runs {
        let _ = write!(out, " {what} |");
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(runs.len()));
    out.push('\n');
    for (label, key, unit) in ROWS {
        let _ = write!(out, "| {label} |");
        for (_, _, result) in runs {
            let cell = result.get(key).map_or("–".into(), |v| {
                let number = format_number(v);
                if unit.is_empty() {
                    number
                } else {
                    format!("{number} {unit}")
                }
            });
            let _ = write!(out, " {cell} |");
        }
        out.push('\n');
    }
    // CPU per reconnect × reconnects per second: how busy the server was.
    out.push_str("| server CPU busy, listening → last reconnect |");
    for (_, _, result) in runs {
        let busy = result
            .get("cpu_us_per_reconnect")
            .zip(result.get("accept_rate"))
            .map(|(cpu_us, rate)| cpu_us * rate / 1e4);
        let cell = busy.map_or("–".into(), |b| format!("{b:.0} %"));
        let _ = write!(out, " {cell} |");
    }
    out.push('\n');
    for (what, command, result) in runs {
        if let Some(error) = result.errors.first() {
            let _ = writeln!(out, "\n{what}, `{command}`: {error}.");
        }
    }
    out.push_str("\n```sh\n");
    for (_, command, _) in runs {
        let _ = writeln!(out, "target/release/herald-bench {command}");
    }
    out.push_str("```\n\n");
    out.push_str(LIMITS);
    out
}

/// What the figures rest on (kept with the page, not generated).
const LIMITS: &str = "\
What sets the time until every client is back is the server's core: the CPU per reconnect times
the reconnects per second is the share of it that Herald and Redis (both pinned to the server's
CPUs) were using from the moment the node listened until the last reconnect, and it is close to
all of it. A reconnect here costs about twice one of the storm above on the memory engine, since
its resume is a history read from Redis and its subscribe an upstream subscription, and the 20
messages a second to every client go on meanwhile. The clients' backoff adds at most its last
step for a client that was refused just before the node listened. A graceful restart is down for
as long as the drain takes (every connection told, 500 at a time, 10 ms apart, its outbox sent
first); a crash only while the new process starts. No message is lost either way: what was
published while the clients were away is read back from the Redis streams when they resume.

";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::RunResult;

    #[test]
    fn section_has_a_column_per_run_and_a_row_per_figure() {
        let mut term = RunResult::new("reconnect", "herald", "15000 ws clients".into());
        term.add("connections", "", "", 15_000.0);
        term.add("recovered", "", "", 15_000.0);
        term.add("all_back_ms", "", "ms", 2118.0);
        term.add("cpu_us_per_reconnect", "", "µs", 100.0);
        term.add("accept_rate", "", "/s", 9_000.0);
        let mut kill = RunResult::new("reconnect", "herald", "15000 ws clients".into());
        kill.add("recovered", "", "", 14_000.0);
        kill.errors.push("a client gave up".into());
        let runs = vec![
            ("term", "reconnect --restart term".to_string(), term),
            ("kill", "reconnect --restart kill".to_string(), kill),
        ];
        let text = section(&runs, &Pinning::default());
        assert!(text.starts_with(HEADING), "{text}");
        assert!(
            text.contains("| | term | kill |\n|---|---|---|\n"),
            "{text}"
        );
        assert!(
            text.contains("| clients recovered with no gap | 15000 | 14000 |"),
            "{text}"
        );
        assert!(
            text.contains("| signal → last client recovered | 2118 ms | – |"),
            "{text}"
        );
        assert!(
            text.contains("| server CPU busy, listening → last reconnect | 90 % | – |"),
            "{text}"
        );
        assert!(
            text.contains("\nkill, `reconnect --restart kill`: a client gave up."),
            "{text}"
        );
        assert!(text.contains("target/release/herald-bench reconnect --restart term\n"));
        // No other `## ` heading inside, so `splice` would replace it whole.
        assert_eq!(text.matches("\n## ").count(), 0);
    }
}
