//! The "Reconnect storm" section of `docs/benchmarks.md`: `reconnect` with
//! 10,000 clients (1,000 with `--quick`) on WebSocket and on SSE, Herald
//! against Nchan, then what limits the rate and the before/after of history
//! kept by age, which are kept as written (they cannot be regenerated).

use std::fmt::Write as _;

use super::{Args, Row, cells, scenario, with_report_options, words};
use crate::{
    outcome::{RunResult, format_number},
    target::Preset,
};

/// The columns of the table: figure key and unit.
const COLUMNS: [(&str, &str); 6] = [
    ("recovered", ""),
    ("accept_rate", "/s"),
    ("all_recovered_ms", "ms"),
    ("reconnect_p99", "ms"),
    ("lost", ""),
    ("cpu_us_per_reconnect", "µs"),
];

/// Measures both transports.
pub async fn measure(args: &Args, clients: usize) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for flags in ["", " --transport sse"] {
        let command = format!("reconnect --clients {clients}{flags}");
        rows.push(measure_row(args, words(&command)).await?);
    }
    Ok(rows)
}

/// Like `report::measure`, except that a run Nchan cannot do (a WebSocket
/// resume: its WebSocket frames carry no message ids) is a row with that
/// reason and no figures, not the end of the report.
async fn measure_row(args: &Args, words: Vec<String>) -> anyhow::Result<Row> {
    let scenario = scenario(&with_report_options(args, &words))?;
    eprintln!("herald-bench report: {}", words.join(" "));
    let herald = scenario.run(Some(Preset::Herald)).await?;
    let nchan = match scenario.run(Some(Preset::Nchan)).await {
        Ok(nchan) => nchan,
        Err(error) => {
            let mut nchan = RunResult::new(&herald.scenario, "nchan", herald.setup.clone());
            nchan.ok = false;
            nchan.errors.push(format!("{error:#}"));
            nchan
        }
    };
    Ok(Row {
        argv: words,
        herald,
        nchan,
    })
}

/// The section, from its heading to the blank line before the next.
pub fn section(rows: &[Row]) -> String {
    let clients = rows
        .first()
        .and_then(|r| r.herald.get("connections"))
        .map_or("–".into(), format_number);
    let mut out = format!(
        "## Reconnect storm\n\n\
         {clients} clients on one channel at 20 msg/s, all dropped at once after 3 s, each \
         resuming from its last position (`since` on Herald's WebSocket, `Last-Event-ID` on SSE); \
         publishing goes on for 10 s after the drop. Clients recovered counts those that got \
         every message they missed, none twice; time until all recovered is from the drop. \
         Server CPU per reconnect is the server's CPU from the drop until the last client was \
         back, per reconnect: it includes the deliveries made meanwhile.\n\n\
         | transport | target | clients recovered with no gap | reconnects/s | all recovered after | \
         reconnect p99 | messages lost | server CPU per reconnect |\n\
         |---|---|---|---|---|---|---|---|\n"
    );
    for row in rows {
        let transport = row.transport();
        let [h, c, r] = cells(row, &COLUMNS);
        let _ = writeln!(out, "| {transport} | herald | {h} |");
        let _ = writeln!(out, "| | nchan | {c} |");
        let _ = writeln!(out, "| | **herald / nchan** | {r} |");
    }
    for row in rows {
        for (target, run) in [("Herald", &row.herald), ("Nchan", &row.nchan)] {
            if let Some(error) = run.errors.first() {
                let _ = writeln!(out, "\n{target}, `{}`: {error}.", row.argv.join(" "));
            }
        }
    }
    out.push_str("\n```sh\n");
    for row in rows {
        let _ = writeln!(out, "target/release/herald-bench {}", row.argv.join(" "));
    }
    out.push_str("```\n\n");
    out.push_str(LIMITS);
    out.push_str(HISTORY_BY_AGE);
    out
}

/// What limits the reconnect rate (kept with the page, not generated).
const LIMITS: &str = "\
**What limits the reconnect rate here is the load generator's worker process, not the server and
not the bench's handshake concurrency.** One worker process (the default for 10,000 clients, 2
runtime threads) receives all 200,000 messages/s of its connections, and that alone takes about
90 % of a core: pinned, its core ran at 88–93 % through the storm while the server's ran at about
60 %. Unpinned on a busy machine it gets less than that, its reconnects wait behind the messages,
and the storm stretched to 10 s (850–1,760 reconnects/s; the last clients came back when
publishing stopped). Raising `--concurrency` from 200 to 2,000 handshakes in flight changed
nothing (941/s); a second worker process (`--workers 2`, more CPU share for the client side) took
the same busy-machine storm to 2,311–4,493/s on WebSocket, all back in 2.1–4.1 s, and 8,198/s on
SSE, all back in 1.2 s. With publishing at 1 msg/s instead of 20, the 10,000 reconnects were
accepted at 10,233/s, all back in 1.0 s. Measure storms pinned, or with at least two worker
processes.

";

/// The before/after of history kept by age, measured by hand once (kept
/// with the page, not generated: the "before" build is gone).
const HISTORY_BY_AGE: &str = "\
### Measured when history kept by age landed (2026-12-03, single runs)

Not regenerated by `report`: measured by hand with the build before and after history was kept by
age as well as by count. How long the storm lasts depends above all on how much CPU the load
generator gets (see above), so the runs came in two kinds: unpinned while other builds ran on the
two shared cores (load 6–10), where the storm lasted about 10 s; and pinned (`--server-cpus 0
--client-cpus 1`) when the machine was quieter (load 2–4), where it lasted 0.9–1.6 s. The counts
of recovered clients are what matters.

| | history by count only (`size` 100), before | kept by age too (`min_age_secs` 60, default), after |
|---|---|---|
| WebSocket, 10 s storm: clients recovered with no gap | 1,390–5,643 of 10,000 (6 runs) | 10,000 of 10,000 in each of 8 runs, 0 messages lost |
| SSE, 10 s storm: clients recovered with no gap | 7,206 and 8,176 of 10,000 (2 runs) | 10,000 of 10,000 in each of 3 runs, 0 messages lost |
| WebSocket, pinned, 0.9–1.6 s storm | 10,000 of 10,000 (7,854 reconnects/s) | 10,000 of 10,000 (5,865–10,165/s, 3 runs) |
| SSE, pinned, 1.1–1.2 s storm | 10,000 of 10,000 (7,967/s) | 10,000 of 10,000 (8,645/s) |
| WebSocket on Redis (`--redis`), unpinned, 7.7 / 9.2 s storm | 8,858 of 10,000 | 10,000 of 10,000, 0 messages lost |

A storm that ends within 100 messages (5 s at 20 msg/s) was always covered; one that lasts longer
is now covered up to `history.min_age_secs` (60 s) or `history.max_size` (10,000 messages).

```sh
target/release/herald-bench reconnect --clients 10000
target/release/herald-bench reconnect --clients 10000 --transport sse
target/release/herald-bench reconnect --clients 10000 --server-cpus 0 --client-cpus 1
target/release/herald-bench reconnect --clients 10000 --redis
```

";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_pairs_herald_and_nchan_and_keeps_the_static_text() {
        let mut herald = RunResult::new("reconnect", "herald", "10000 ws clients".into());
        herald.add("connections", "", "", 10_000.0);
        herald.add("recovered", "", "", 10_000.0);
        herald.add("accept_rate", "", "/s", 8_000.0);
        herald.add("cpu_us_per_reconnect", "", "µs", 50.0);
        let mut nchan = RunResult::new("reconnect", "nchan", "10000 ws clients".into());
        nchan
            .errors
            .push("nchan WebSocket subscribers carry no message ids here".into());
        let ws = Row {
            argv: words("reconnect --clients 10000"),
            herald: herald.clone(),
            nchan,
        };
        let mut nchan = RunResult::new("reconnect", "nchan", "10000 sse clients".into());
        nchan.add("recovered", "", "", 10_000.0);
        nchan.add("accept_rate", "", "/s", 4_000.0);
        nchan.add("cpu_us_per_reconnect", "", "µs", 100.0);
        let sse = Row {
            argv: words("reconnect --clients 10000 --transport sse"),
            herald,
            nchan,
        };
        let text = section(&[ws, sse]);
        assert!(
            text.starts_with("## Reconnect storm\n\n10000 clients"),
            "{text}"
        );
        assert!(
            text.contains("| WebSocket | herald | 10000 | 8000 /s | – | – | – | 50 µs |"),
            "{text}"
        );
        assert!(
            text.contains("| | nchan | – | – | – | – | – | – |"),
            "{text}"
        );
        assert!(text.contains("| SSE | herald |"), "{text}");
        assert!(
            text.contains("| | **herald / nchan** | 1× | 2× | – | – | – | 0.500× |"),
            "{text}"
        );
        assert!(
            text.contains("\nNchan, `reconnect --clients 10000`: nchan WebSocket"),
            "{text}"
        );
        assert!(text.contains("limits the reconnect rate here is the load generator's worker"));
        assert!(
            text.contains("### Measured when history kept by age landed (2026-12-03, single runs)")
        );
        // No other `## ` heading inside, so `splice` would replace it whole.
        assert_eq!(text.matches("\n## ").count(), 0);
    }
}
