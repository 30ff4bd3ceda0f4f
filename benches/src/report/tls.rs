//! The "Native TLS" section of `docs/benchmarks.md`, in one sitting: what an
//! idle TLS connection costs Herald's listener (`tls.cert`, `tls.key`)
//! against a plain one, against nginx terminating TLS in front of a plain
//! Herald, and against Nchan with and without TLS (`idle --tls`,
//! `idle --tls-proxy`), on WebSocket and SSE.
//!
//! A run that fails (a Herald built without TLS, say) is kept as a failed
//! result, shown as `–` with its error under the table, so that the other
//! columns are still written.

use std::fmt::Write as _;

use super::{Args, scenario, stamp, with_report_options, words};
use crate::{
    outcome::{RunResult, format_number, format_ratio, with_unit},
    stats::ratio,
};

/// The section's heading, which `--only tls` looks for.
pub const HEADING: &str = "## Native TLS\n";

/// The goal of issue 16: an idle `wss://` connection costs Herald at most
/// this many times a plain one.
const GOAL: f64 = 2.0;

/// The servers measured, in the table's column order: heading, then the
/// options that choose it.
const COLUMNS: [(&str, &str); 5] = [
    ("Herald plain", ""),
    ("Herald TLS", "--tls"),
    ("nginx TLS → Herald", "--tls-proxy"),
    ("Nchan plain", "--target nchan"),
    ("Nchan TLS", "--target nchan --tls"),
];

/// One transport's runs, one per column.
pub struct Transport {
    /// "WebSocket" or "SSE".
    name: &'static str,
    runs: Vec<Run>,
}

/// One column's run: its command words (after `herald-bench`) and result.
struct Run {
    argv: Vec<String>,
    result: RunResult,
}

pub struct Tls {
    transports: Vec<Transport>,
}

pub async fn measure(args: &Args) -> anyhow::Result<Tls> {
    let (connections, settle, window) = if args.quick {
        (1_000, 1, 5)
    } else {
        (10_000, 5, 25)
    };
    // nginx in front of Herald holds two sockets per client (the client's,
    // and its own to Herald) in one worker, under the same open-files limit
    // as every process here.
    let proxied = connections.min(proxy_capacity());
    let mut transports = Vec::new();
    for (name, transport) in [("WebSocket", "ws"), ("SSE", "sse")] {
        let mut runs = Vec::new();
        for (_, options) in COLUMNS {
            let count = if options == "--tls-proxy" {
                proxied
            } else {
                connections
            };
            // Herald's WebSocket subscribes only when asked; SSE always does.
            let subscribe = if transport == "ws" {
                " --subscribe"
            } else {
                ""
            };
            let argv = words(&format!(
                "idle --transport {transport} --connections {count} --channel bench{subscribe} \
                 --settle {settle} --cpu-window {window} --time-limit 600 {options}"
            ));
            runs.push(Run {
                result: run(args, &argv).await,
                argv,
            });
        }
        transports.push(Transport { name, runs });
    }
    Ok(Tls { transports })
}

/// Connections one nginx worker can proxy: two descriptors each, and a
/// hundred kept for its listener, logs and the like.
fn proxy_capacity() -> usize {
    let limit = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(u64::MAX, |(_, hard)| hard);
    usize::try_from(limit.saturating_sub(100) / 2).unwrap_or(usize::MAX)
}

/// Runs one column; an error becomes a failed result, so the section is
/// still written with the other columns.
async fn run(args: &Args, argv: &[String]) -> RunResult {
    eprintln!("herald-bench report: {}", argv.join(" "));
    let outcome = async { scenario(&with_report_options(args, argv))?.run(None).await };
    match outcome.await {
        Ok(result) => result,
        Err(error) => {
            let target = if argv.iter().any(|w| w == "nchan") {
                "nchan"
            } else {
                "herald"
            };
            let mut failed = RunResult::new("idle", target, argv.join(" "));
            failed.ok = false;
            failed.errors.push(format!("{error:#}"));
            failed
        }
    }
}

/// The table's rows: label, figure key, unit.
const ROWS: [(&str, &str, &str); 8] = [
    ("connections open", "connections", ""),
    ("server RSS per connection", "bytes_per_conn", "B"),
    ("… of it Herald", "bytes_per_conn_herald", "B"),
    ("… of it nginx", "bytes_per_conn_nginx", "B"),
    (
        "kernel TCP + socket slab per connection, both ends",
        "kernel_slab_per_conn",
        "B",
    ),
    (
        "kernel TCP buffers per connection, both ends",
        "kernel_tcp_mem_per_conn",
        "B",
    ),
    (
        "server CPU per new connection (handshakes, subscribe)",
        "cpu_us_per_new_conn",
        "µs",
    ),
    (
        "server CPU per idle connection per second",
        "cpu_us_per_conn_s",
        "µs",
    ),
];

impl Transport {
    fn figure(&self, column: usize, key: &str) -> Option<f64> {
        self.runs.get(column)?.result.get(key)
    }

    /// Server RSS per connection of `column` against the plain server it
    /// stands beside: Herald plain for Herald's columns, Nchan plain for Nchan's.
    fn against_plain(&self, column: usize) -> Option<f64> {
        let plain = if column >= 3 { 3 } else { 0 };
        ratio(
            self.figure(column, "bytes_per_conn"),
            self.figure(plain, "bytes_per_conn"),
        )
    }

    fn table(&self) -> String {
        let mut out = format!("{}:\n\n| |", self.name);
        for (heading, _) in COLUMNS {
            let _ = write!(out, " {heading} |");
        }
        out.push_str("\n|---|---|---|---|---|---|\n");
        for (label, key, unit) in ROWS {
            let _ = write!(out, "| {label} |");
            for column in 0..COLUMNS.len() {
                // Per-part rows belong to the proxied column alone.
                let cell = if key.ends_with("_herald") || key.ends_with("_nginx") {
                    if column == 2 {
                        with_unit(self.figure(column, key), unit)
                    } else {
                        String::new()
                    }
                } else {
                    with_unit(self.figure(column, key), unit)
                };
                let _ = write!(out, " {cell} |");
            }
            out.push('\n');
            if key == "bytes_per_conn" {
                out.push_str("| … against the same server plain |");
                for column in 0..COLUMNS.len() {
                    let _ = write!(out, " {} |", format_ratio(self.against_plain(column)));
                }
                out.push('\n');
            }
        }
        for run in &self.runs {
            if !run.result.ok {
                let errors = if run.result.errors.is_empty() {
                    "a connection failed or was closed".to_string()
                } else {
                    run.result.errors.join("; ")
                };
                let _ = writeln!(
                    out,
                    "\n**Check failed** (`{}`): {errors}.",
                    run.argv.join(" ")
                );
            }
        }
        out
    }
}

/// Whether Herald's native TLS meets the goal on `transport`, in words.
fn verdict(transport: &Transport) -> String {
    match transport.against_plain(1) {
        Some(r) if r <= GOAL => format!(
            "met on {}: {}× a plain connection",
            transport.name,
            format_number(r)
        ),
        Some(r) => format!(
            "**not met** on {}: {}× a plain connection",
            transport.name,
            format_number(r)
        ),
        None => format!("not measured on {}", transport.name),
    }
}

/// What TLS adds per connection on Herald's own listener, and what nginx in
/// front adds, in words.
fn compared(transport: &Transport) -> String {
    let bytes = |column: usize| transport.figure(column, "bytes_per_conn");
    let (Some(plain), Some(native), Some(proxied)) = (bytes(0), bytes(1), bytes(2)) else {
        return String::new();
    };
    format!(
        "- {}: TLS on Herald's own listener adds {} B per idle connection to a plain one; nginx \
         in front of a plain Herald costs {} B in all, {} Herald's own TLS connection.\n",
        transport.name,
        format_number(native - plain),
        format_number(proxied),
        format_ratio(ratio(Some(proxied), Some(native))),
    )
}

/// The section, from its heading to the blank line before the next.
pub fn section(tls: &Tls, pinning: &crate::cpus::Pinning) -> String {
    let mut out = String::from(HEADING);
    let count = |column: usize, key: &str| {
        tls.transports
            .first()
            .and_then(|t| t.runs.get(column))
            .and_then(|run| {
                // The count asked for, from the command line: a failed run
                // has no figures.
                let at = run.argv.iter().position(|w| w == key)?;
                run.argv.get(at + 1)?.parse::<f64>().ok()
            })
            .unwrap_or(0.0)
    };
    let (n, proxied) = (count(0, "--connections"), count(2, "--connections"));
    let proxied = if proxied < n {
        format!(
            " ({} for nginx in front of Herald, which holds two sockets per client under the \
             machine's open-files limit)",
            format_number(proxied)
        )
    } else {
        String::new()
    };
    let _ = write!(
        out,
        "\nWhat an idle TLS connection costs the server against a plain one: Herald's own \
         listener with `tls.cert` and `tls.key` set (rustls; `wss://` and `https://` on the one \
         port), against a plain Herald behind a private nginx that terminates TLS (one worker, \
         nginx's TLS defaults, `proxy_pass` over HTTP/1.1 with the Upgrade headers, \
         `proxy_buffering off`), and Nchan plain and with `listen … ssl` as the peer, all from one \
         sitting. {} connections each{proxied} on one shared channel, idle; memory is the growth of the \
         server's RSS (`VmRSS`, every process of it: nginx's master and worker, Herald) from one \
         warm-up connection to all of them open and settled, per connection. For nginx in front \
         of Herald the sum is both, and each part is shown. Kernel memory is machine-wide, so it \
         holds both ends of each loopback connection, and nginx's second socket to Herald; its \
         TCP buffer figure is noise around zero for idle connections. CPU: \
         per new connection while they open (the TCP and TLS handshakes, the WebSocket or SSE \
         request, the subscribe), and per idle connection over a 25-s window (Herald's pings, \
         encrypted where TLS).\n\n\
         The bench makes a throwaway CA and an ECDSA P-256 certificate for `localhost` and \
         127.0.0.1 (rcgen) for each run, gives them to the servers it starts \
         (`HERALD_TLS_CERT`/`HERALD_TLS_KEY`; `ssl_certificate`/`ssl_certificate_key`), and its \
         clients (`benches/src/tls.rs`: tokio-rustls) trust that CA alone, offer `http/1.1` by \
         ALPN and the key exchange groups in browsers' order (X25519, then P-256 and P-384; a \
         TLS 1.3 server takes the client's first), and do a full handshake each, never resuming \
         a session, as that many browsers meeting the server for the first time would. \
         Measured {}.\n\n",
        format_number(n),
        stamp(pinning)
    );
    for transport in &tls.transports {
        out.push_str(&transport.table());
        out.push('\n');
    }
    let verdicts: Vec<String> = tls.transports.iter().map(verdict).collect();
    for transport in &tls.transports {
        out.push_str(&compared(transport));
    }
    let _ = write!(
        out,
        "\nGoal (issue 16): an idle `wss://` connection costs Herald's RSS at most {}× a plain \
         `ws://` one: {}.\n\n\
         The nginx column is what a deployment without native TLS pays: nginx's own connection \
         pair and OpenSSL's state for each client, on top of Herald's plain connection (its part \
         of the column).\n\n```sh\ncargo build --release -p api -p herald-bench\n",
        format_number(GOAL),
        verdicts.join("; ")
    );
    for transport in &tls.transports {
        for run in &transport.runs {
            let _ = writeln!(out, "target/release/herald-bench {}", run.argv.join(" "));
        }
    }
    out.push_str(
        "```\n\nRegenerate this section alone (about ten minutes): \
         `target/release/herald-bench report --only tls`.\n\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(bytes: Option<f64>) -> Run {
        let mut result = RunResult::new("idle", "herald", String::new());
        result.add("bytes_per_conn", "", "B", bytes);
        result.add("connections", "", "", 10.0);
        Run {
            argv: Vec::new(),
            result,
        }
    }

    /// Ratios are each server against its own plain column; a missing run
    /// reads `–`; the goal is judged on Herald's native column.
    #[test]
    fn columns_compare_with_their_own_plain_server() {
        let transport = Transport {
            name: "WebSocket",
            runs: [
                Some(4000.0),
                Some(7000.0),
                Some(30000.0),
                Some(1000.0),
                None,
            ]
            .map(run)
            .into(),
        };
        let ratios: Vec<_> = (0..5).map(|c| transport.against_plain(c)).collect();
        assert_eq!(ratios, [Some(1.0), Some(1.75), Some(7.5), Some(1.0), None]);
        assert_eq!(
            verdict(&transport),
            "met on WebSocket: 1.75× a plain connection"
        );
        assert_eq!(
            compared(&transport),
            "- WebSocket: TLS on Herald's own listener adds 3000 B per idle connection to a plain \
             one; nginx in front of a plain Herald costs 30000 B in all, 4.29× Herald's own TLS \
             connection.\n"
        );
        let table = transport.table();
        assert!(
            table.contains("| … against the same server plain | 1× | 1.75× | 7.50× | 1× | – |"),
            "{table}"
        );
        // Per-part rows are the proxied column's alone.
        assert!(
            table.contains("| … of it nginx |  |  | – |  |  |"),
            "{table}"
        );

        let over = Transport {
            name: "SSE",
            runs: [Some(1000.0), Some(2500.0)].map(run).into(),
        };
        assert!(verdict(&over).starts_with("**not met**"));
    }
}
