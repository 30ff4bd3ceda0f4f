//! The measured figures the capacity model multiplies out, each with where it
//! came from: `docs/img/results.json` (the rows `herald-bench report`
//! records, by command) and, for the sections the report writes only into
//! the page (`report --only fanout`, `restart`, `pusher`), `docs/benchmarks.md`.
//!
//! Invariants:
//! - Every input says its source (file, row or section, date) and whether it
//!   was measured, derived from measured figures, taken from a published
//!   figure of another project, or defaulted because the file lacked it.
//! - A figure the files lack never stops the model: it takes the documented
//!   default below and says so.

use serde::Serialize;

use super::page::Page;
use crate::report::Results;

/// How far an input can be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Read as measured on this project's machine.
    Measured,
    /// Computed from measured figures (the source says how).
    Derived,
    /// Not measured here: another project's published figure.
    Published,
    /// Not found in the files: the model's built-in default.
    Defaulted,
}

/// One input of the model.
#[derive(Clone, Debug, Serialize)]
pub struct Input {
    /// What it is, as the tables name it.
    pub what: &'static str,
    pub value: f64,
    pub unit: &'static str,
    /// File, row command or section, and date.
    pub source: String,
    pub status: Status,
}

/// Everything the model reads.
#[derive(Clone, Debug, Serialize)]
pub struct Inputs {
    /// Herald's RSS per idle WebSocket on a shared channel, at the largest
    /// count measured (the margin, not the start-up share).
    pub rss_per_conn: Input,
    /// What a channel of its own (`user:<id>`, a timeline) adds to a connection.
    pub channel_per_conn: Input,
    /// The kernel's objects per idle socket (TCP, inode, file, dentry, epoll),
    /// which RSS does not show.
    pub kernel_per_socket: Input,
    /// A Herald process' RSS before any connection.
    pub process_rss: Input,
    /// Server CPU per idle connection per second (its pings).
    pub idle_cpu: Input,
    /// Server CPU per delivery written alone (timeline deliveries do not
    /// coalesce: each user's channel gets a message now and then).
    pub delivery_cpu: Input,
    /// Server CPU per recipient listed in `POST /api/deliver` (parsing and
    /// grouping by shard, the shard messages through Redis), deliveries apart.
    pub fanout_cpu: Input,
    /// Nodes each shard message reaches, with the load balancer's shard affinity.
    pub nodes_per_shard_message: Input,
    /// Server CPU per reconnect when a node is lost, on Redis (new node and
    /// Redis, history reads and live deliveries meanwhile included).
    pub reconnect_cpu_redis: Input,
    /// The same on the memory engine (one node: a restart).
    pub reconnect_cpu_memory: Input,
    /// Redis CPU per timeline shard publish (one FCALL of Herald's library).
    pub redis_publish_cpu: Input,
    /// Pub/sub messages one Redis primary sends out per second.
    pub redis_deliveries: Input,
}

/// Redis commands one shard publish runs with an `Idempotency-Key`, FCALL
/// included: GET (the key), HMGET (epoch, offset), TIME, XADD, EXPIRE, HSET,
/// EXPIRE, SPUBLISH, SET (the key): `HERALD_LIB_publish` in
/// `fanout/src/engine/redis/scripts.rs`.
const COMMANDS_PER_PUBLISH: f64 = 10.0;

const RESULTS: &str = "docs/img/results.json";
const PAGE: &str = "docs/benchmarks.md";

impl Inputs {
    /// Reads both files; `results` must parse, `page` may be empty.
    pub fn read(results: &Results, page: &Page) -> Self {
        let from_results = |command: &str| {
            format!(
                "{RESULTS}, `herald-bench {command}`, {}",
                or_unknown(&results.date)
            )
        };
        let herald = |row: &crate::report::Recorded, key: &str| row.herald.get(key);

        // The WebSocket idle row with the most connections.
        let idle = results
            .rows
            .iter()
            .filter(|r| r.herald.scenario == "idle" && r.command.iter().any(|w| w == "ws"))
            .max_by_key(|r| r.herald.get("connections").unwrap_or(0.0) as u64);
        let idle_figure = |key: &str, what, unit, scale: f64, default: f64| match idle
            .and_then(|row| herald(row, key).map(|v| (row, v)))
        {
            Some((row, value)) => Input {
                what,
                value: value * scale,
                unit,
                source: from_results(&row.command.join(" ")),
                status: Status::Measured,
            },
            None => defaulted(
                what,
                default,
                unit,
                &format!("an idle WebSocket row in {RESULTS}"),
            ),
        };
        let rss_per_conn = idle_figure(
            "bytes_per_conn",
            "Herald RSS per idle WebSocket",
            "B",
            1.0,
            800.0,
        );
        let kernel_per_socket = idle_figure(
            "kernel_slab_per_socket",
            "kernel objects per idle socket",
            "B",
            1.0,
            3712.0,
        );
        let process_rss = idle_figure(
            "rss_before",
            "Herald RSS per process, no connections",
            "MB",
            1.0,
            10.0,
        );
        let idle_cpu = idle_figure(
            "cpu_us_per_conn_s",
            "server CPU per idle connection per second",
            "µs",
            1.0,
            1.0,
        );

        // Broadcasts whose deliveries went out about one per write.
        let alone: Vec<(&crate::report::Recorded, f64)> = results
            .rows
            .iter()
            .filter(|r| {
                r.herald.scenario == "broadcast" && !r.command.iter().any(|w| w == "--in-flight")
            })
            .filter(|r| r.herald.get("per_write").is_some_and(|w| w <= 1.2))
            .filter_map(|r| Some((r, r.herald.get("cpu_per_million")?)))
            .collect();
        let delivery_cpu = if alone.is_empty() {
            defaulted(
                "server CPU per delivery, one per write",
                10.0,
                "µs",
                &format!("a broadcast row with about one delivery per write in {RESULTS}"),
            )
        } else {
            let mut values: Vec<f64> = alone.iter().map(|(_, v)| *v).collect();
            values.sort_by(f64::total_cmp);
            let commands: Vec<String> = alone
                .iter()
                .map(|(r, v)| format!("`{}` {v:.2}", r.command.join(" ")))
                .collect();
            Input {
                what: "server CPU per delivery, one per write",
                value: median(&values),
                unit: "µs",
                source: format!(
                    "{RESULTS}, {}: the median of the broadcasts with ≤ 1.2 deliveries per write ({})",
                    or_unknown(&results.date),
                    commands.join("; ")
                ),
                status: Status::Measured,
            }
        };

        let fanout = "## Timeline fan-out";
        let by_shard = "Redis, 3 nodes, by shard";
        let fanout_date = or_unknown(&page.measured(fanout).unwrap_or_default()).to_string();
        let fanout_source = format!("{PAGE}, \"Timeline fan-out\" ({by_shard}), {fanout_date}");
        let window = page.cell(
            fanout,
            "server CPU in the delivery window (user + system)",
            by_shard,
        );
        let connected = page.cell(fanout, "connected recipients", by_shard);
        let recipients = page.option(fanout, "--recipients");
        let fanout_cpu = match (window, connected, recipients) {
            (Some(window), Some(connected), Some(recipients)) if recipients > 0.0 => Input {
                what: "server CPU per recipient listed in a delivery",
                value: ((window.value * 1e6 - connected.value * delivery_cpu.value) / recipients)
                    .max(0.0),
                unit: "µs",
                source: format!(
                    "{fanout_source}: ({} s in the window − {} deliveries × CPU per delivery) ÷ {} recipients",
                    window.value, connected.value, recipients
                ),
                status: Status::Derived,
            },
            _ => defaulted(
                "server CPU per recipient listed in a delivery",
                1.0,
                "µs",
                &format!("{PAGE}, \"Timeline fan-out\""),
            ),
        };
        let shard_messages = page.cell(fanout, "engine messages (shards touched)", by_shard);
        let received = page.cell(
            fanout,
            "shard messages received by the nodes (Redis)",
            by_shard,
        );
        let nodes_per_shard_message = match (shard_messages, received) {
            (Some(sent), Some(received)) if sent.value > 0.0 => Input {
                what: "nodes each shard message reaches (shard affinity)",
                value: received.value / sent.value,
                unit: "",
                source: format!(
                    "{fanout_source}: {} shard messages received by the nodes ÷ {} published",
                    received.value, sent.value
                ),
                status: Status::Measured,
            },
            _ => defaulted(
                "nodes each shard message reaches (shard affinity)",
                1.0,
                "",
                &format!("{PAGE}, \"Timeline fan-out\""),
            ),
        };

        let restart = "## Node restart";
        let crash = "WebSocket, SIGKILL (a crash)";
        let reconnect_cpu_redis = match page.cell(restart, "server CPU per reconnect", crash) {
            Some(cell) => Input {
                what: "server + Redis CPU per reconnect after a node loss",
                value: cell.value,
                unit: "µs",
                source: format!(
                    "{PAGE}, \"Node restart\" ({crash}), {}",
                    or_unknown(&page.measured(restart).unwrap_or_default())
                ),
                status: Status::Measured,
            },
            None => defaulted(
                "server + Redis CPU per reconnect after a node loss",
                400.0,
                "µs",
                &format!("{PAGE}, \"Node restart\""),
            ),
        };
        let storm = results
            .rows
            .iter()
            .find(|r| r.herald.scenario == "reconnect" && !r.command.iter().any(|w| w == "sse"));
        let reconnect_cpu_memory =
            match storm.and_then(|r| Some((r, r.herald.get("cpu_us_per_reconnect")?))) {
                Some((row, value)) => Input {
                    what: "server CPU per reconnect, memory engine",
                    value,
                    unit: "µs",
                    source: from_results(&row.command.join(" ")),
                    status: Status::Measured,
                },
                None => defaulted(
                    "server CPU per reconnect, memory engine",
                    120.0,
                    "µs",
                    &format!("a WebSocket reconnect row in {RESULTS}"),
                ),
            };

        let own = "### Herald alone: what a subscription and a channel add";
        let column = "RSS per connection";
        let channel_per_conn = match (
            page.cell(
                own,
                "WebSocket, subscribed to a channel of its own (user:<n>)",
                column,
            ),
            page.cell(own, "WebSocket, subscribed to one shared channel", column),
        ) {
            (Some(own_channel), Some(shared)) => Input {
                what: "a channel of its own per connection (its timeline)",
                value: (own_channel.value - shared.value).max(0.0),
                unit: "B",
                source: format!(
                    "{PAGE}, \"Herald alone: what a subscription and a channel add\", {}: {} B on a channel of its own − {} B on a shared one",
                    or_unknown(&page.measured(own).unwrap_or_default()),
                    own_channel.value,
                    shared.value
                ),
                status: Status::Derived,
            },
            _ => defaulted(
                "a channel of its own per connection (its timeline)",
                340.0,
                "B",
                &format!("{PAGE}, \"Herald alone: what a subscription and a channel add\""),
            ),
        };

        // Measured: Redis' own CPU per shard message of a delivery whose
        // shard messages are as small as the model's load makes them. Else
        // derived from presence leaves, as before it was measured.
        let small = crate::report::FANOUT_SMALL;
        let measured_publish = page.cell(
            fanout,
            "Redis CPU per shard message (its own process, less its idle rate)",
            small,
        );
        let presence = "### Presence on Redis";
        let derived_publish = match (
            page.cell(presence, "Redis CPU per leave", "value"),
            page.cell(
                presence,
                "leave: commands Redis runs, those inside the functions included",
                "value",
            ),
        ) {
            (Some(cpu), Some(commands)) if commands.value > 0.0 => Input {
                what: "Redis CPU per timeline shard publish",
                value: cpu.value / commands.value * COMMANDS_PER_PUBLISH,
                unit: "µs",
                source: format!(
                    "{PAGE}, \"Presence on Redis\", {}: a leave's {} µs of Redis CPU ÷ its {} commands × the {COMMANDS_PER_PUBLISH} commands of one publish (fanout/src/engine/redis/scripts.rs); Redis CPU per publish is not measured directly",
                    or_unknown(&page.measured(presence).unwrap_or_default()),
                    cpu.value,
                    commands.value
                ),
                status: Status::Derived,
            },
            _ => defaulted(
                "Redis CPU per timeline shard publish",
                30.0,
                "µs",
                &format!("{PAGE}, \"Timeline fan-out\" ({small}) or \"Presence on Redis\""),
            ),
        };
        let redis_publish_cpu = match measured_publish {
            Some(cell) => Input {
                what: "Redis CPU per timeline shard publish",
                value: cell.value,
                unit: "µs",
                source: format!(
                    "{PAGE}, \"Timeline fan-out\" ({small}), {fanout_date}: Redis' own CPU over the delivery window, less its idle rate, ÷ the shard messages published"
                ),
                status: Status::Measured,
            },
            None => derived_publish,
        };
        let redis_deliveries = Input {
            what: "pub/sub messages one Redis primary sends per second",
            value: 650_000.0,
            unit: "/s",
            source: "not measured here: one Redis instance's pub/sub delivery rate in \
                     Centrifugo's \"Scaling Redis Pub/Sub\" (centrifugal.dev blog, 2026-06-29, \
                     256-byte messages)"
                .to_string(),
            status: Status::Published,
        };

        Self {
            rss_per_conn,
            channel_per_conn,
            kernel_per_socket,
            process_rss,
            idle_cpu,
            delivery_cpu,
            fanout_cpu,
            nodes_per_shard_message,
            reconnect_cpu_redis,
            reconnect_cpu_memory,
            redis_publish_cpu,
            redis_deliveries,
        }
    }

    /// Every input, in the order the model's tables list them.
    pub fn all(&self) -> [&Input; 12] {
        [
            &self.rss_per_conn,
            &self.channel_per_conn,
            &self.kernel_per_socket,
            &self.process_rss,
            &self.idle_cpu,
            &self.delivery_cpu,
            &self.fanout_cpu,
            &self.nodes_per_shard_message,
            &self.reconnect_cpu_redis,
            &self.reconnect_cpu_memory,
            &self.redis_publish_cpu,
            &self.redis_deliveries,
        ]
    }
}

fn defaulted(what: &'static str, value: f64, unit: &'static str, wanted: &str) -> Input {
    Input {
        what,
        value,
        unit,
        source: format!("defaulted: not found in {wanted}"),
        status: Status::Defaulted,
    }
}

fn or_unknown(date: &str) -> &str {
    if date.is_empty() {
        "date unknown"
    } else {
        date
    }
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed files: every input is found, none defaulted, and the
    /// figures are the ones the pages show.
    #[test]
    fn reads_the_committed_results_and_page() {
        let results = Results::parse(include_str!("../../../docs/img/results.json"))
            .expect("docs/img/results.json parses");
        let page = Page::new(include_str!("../../../docs/benchmarks.md").to_string());
        let inputs = Inputs::read(&results, &page);
        for input in inputs.all() {
            assert_ne!(
                input.status,
                Status::Defaulted,
                "{}: {}",
                input.what,
                input.source
            );
            assert!(input.value.is_finite() && input.value >= 0.0, "{input:?}");
        }
        // Plausible ranges, wide enough for the next report to stay inside.
        let within = |input: &Input, low: f64, high: f64| {
            assert!(
                (low..=high).contains(&input.value),
                "{}: {} {} not in {low}..={high}",
                input.what,
                input.value,
                input.unit
            );
        };
        within(&inputs.rss_per_conn, 300.0, 3000.0);
        within(&inputs.kernel_per_socket, 2000.0, 8000.0);
        within(&inputs.delivery_cpu, 1.0, 50.0);
        within(&inputs.reconnect_cpu_redis, 20.0, 5000.0);
        within(&inputs.nodes_per_shard_message, 0.5, 3.5);
        within(&inputs.redis_publish_cpu, 1.0, 200.0);
        assert_eq!(inputs.redis_publish_cpu.status, Status::Measured);
        assert!(inputs.rss_per_conn.source.contains("--connections 18000"));
    }

    #[test]
    fn an_empty_page_defaults_its_inputs_and_says_so() {
        let results = Results::parse(include_str!("../../../docs/img/results.json"))
            .expect("docs/img/results.json parses");
        let inputs = Inputs::read(&results, &Page::new(String::new()));
        assert_eq!(inputs.rss_per_conn.status, Status::Measured);
        assert_eq!(inputs.fanout_cpu.status, Status::Defaulted);
        assert!(
            inputs
                .fanout_cpu
                .source
                .starts_with("defaulted: not found in docs/benchmarks.md")
        );
        assert_eq!(inputs.redis_publish_cpu.status, Status::Defaulted);
        let none = Inputs::read(&Results::default(), &Page::new(String::new()));
        assert_eq!(none.rss_per_conn.status, Status::Defaulted);
        assert_eq!(none.delivery_cpu.status, Status::Defaulted);
    }
}
