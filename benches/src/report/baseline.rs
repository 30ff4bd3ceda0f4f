//! `docs/img/results.json` and the "Before and after" section: the report
//! records its own command, the date and the commit beside each run's
//! command and results, and before overwriting that file reads the previous
//! one, so the page can show the headline figures of the last run
//! ("before") beside this one's.
//!
//! Invariants:
//! - The reader is tolerant: a missing or unreadable file gives no "before"
//!   values, never an error, since a report must not fail for want of a
//!   previous one.
//! - The older format (a bare list of `[herald, nchan]` pairs, with neither
//!   commands nor a date) is matched by scenario, setup text and pinning;
//!   the new one by command words, so a `--quick` run (other counts, other
//!   commands) is never the "before" of a full one, nor the reverse.

use std::{fmt::Write as _, path::Path};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::{Broadcast, Row, saturation};
use crate::{
    outcome::{RunResult, format_number, format_ratio, with_unit},
    stats::ratio,
};

/// What `report` writes to `docs/img/results.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Results {
    /// The report's own command line (`herald-bench report --quick …`),
    /// which says whether its figures were a quick check; empty if unknown.
    #[serde(default)]
    pub command: String,
    /// When the report ran ("2026-12-03 14:50 UTC"); empty if unknown.
    #[serde(default)]
    pub date: String,
    /// The commit it was built from (`git rev-parse --short HEAD`); empty if unknown.
    #[serde(default)]
    pub commit: String,
    pub rows: Vec<Recorded>,
}

/// One measurement: the command (after `herald-bench`) and both runs.
#[derive(Debug, Serialize, Deserialize)]
pub struct Recorded {
    /// The command words; empty for rows read from the older format.
    #[serde(default)]
    pub command: Vec<String>,
    pub herald: RunResult,
    pub nchan: RunResult,
}

/// Either format of the file.
#[derive(Deserialize)]
#[serde(untagged)]
enum AnyResults {
    Now(Results),
    /// Before dates were recorded: `[[herald, nchan], …]`.
    Old(Vec<[RunResult; 2]>),
}

impl Results {
    /// The results of this run, stamped with the report's command line,
    /// the time and the commit.
    pub(super) fn new(rows: &[&Row]) -> Self {
        let command = std::iter::once("herald-bench".to_string())
            .chain(std::env::args().skip(1))
            .collect::<Vec<_>>()
            .join(" ");
        Self::from_rows(rows, command, now_utc(), commit())
    }

    fn from_rows(rows: &[&Row], command: String, date: String, commit: String) -> Self {
        let rows = rows
            .iter()
            .map(|r| Recorded {
                command: r.argv.clone(),
                herald: r.herald.clone(),
                nchan: r.nchan.clone(),
            })
            .collect();
        Self {
            command,
            date,
            commit,
            rows,
        }
    }

    /// Parses either format; `None` when the text is neither.
    pub fn parse(text: &str) -> Option<Self> {
        match serde_json::from_str::<AnyResults>(text).ok()? {
            AnyResults::Now(results) => Some(results),
            AnyResults::Old(pairs) => Some(Self {
                rows: pairs
                    .into_iter()
                    .map(|[herald, nchan]| Recorded {
                        command: Vec::new(),
                        herald,
                        nchan,
                    })
                    .collect(),
                ..Self::default()
            }),
        }
    }

    /// The previous results at `path`, if there is a readable file.
    pub fn read(path: &Path) -> Option<Self> {
        Self::parse(&std::fs::read_to_string(path).ok()?)
    }

    /// The Herald run of the recorded row that measured what `row` does:
    /// the same command words where both have them; otherwise (the older
    /// format) the same scenario, setup text and pinning.
    fn herald_of(&self, row: &Row) -> Option<&RunResult> {
        let found = self.rows.iter().find(|r| {
            if r.command.is_empty() {
                r.herald.scenario == row.herald.scenario
                    && r.herald.setup == row.herald.setup
                    && is_unpinned(&r.herald) == is_unpinned(&row.herald)
            } else {
                r.command == row.argv
            }
        })?;
        Some(&found.herald)
    }

    /// Which run "before" was, for the section's first sentence.
    fn describe(&self) -> String {
        let mut out = if self.date.is_empty() {
            "the previous `docs/img/results.json`, which recorded no date".to_string()
        } else {
            let mut out = format!("the run of {}", self.date);
            let details: Vec<String> = [("commit ", &self.commit), ("", &self.command)]
                .into_iter()
                .filter(|(_, text)| !text.is_empty())
                .map(|(what, text)| format!("{what}`{text}`"))
                .collect();
            if !details.is_empty() {
                let _ = write!(out, ": {}", details.join(", "));
            }
            out
        };
        // Results without a pinning were written before the bench pinned
        // anything, by default or not: they ran unpinned, which moves the
        // latency tails most of all.
        if self.rows.iter().any(|r| r.herald.cpus.is_empty()) {
            out.push_str("; its runs predate CPU pinning, so they ran unpinned");
        }
        out
    }
}

/// Whether `run` was the unpinned reference ("unpinned (--no-pin)"), or a
/// run of an unpinned report ("unpinned"). Old results carry no pinning
/// (empty): they count as pinned, so that they are the "before" of this
/// report's pinned runs, as the section says.
fn is_unpinned(run: &RunResult) -> bool {
    run.cpus.starts_with("unpinned")
}

/// One line of the section: what it shows, the row it comes from, the figure.
pub struct Headline<'a> {
    pub what: String,
    pub row: &'a Row,
    pub key: &'static str,
    pub unit: &'static str,
}

/// The headline figures, from this run's rows: idle memory, the cost of a
/// new connection, a light broadcast, saturation with publish calls in
/// flight, and the reconnect storm.
pub fn headlines<'a>(
    idle: &'a [Row],
    broadcast: &'a Broadcast,
    storms: &'a [Row],
) -> anyhow::Result<Vec<Headline<'a>>> {
    let count = |row: &Row| format_number(row.herald.get("connections").unwrap_or(0.0));
    let (ws, ws_most, sse) = (
        idle.get(1).context("no idle WebSocket run of 10k")?,
        idle.get(2).context("no idle WebSocket run of 18k")?,
        idle.get(3).context("no idle SSE run")?,
    );
    let light = broadcast.rates.get(3).context("no light broadcast")?;
    let mut lines = Vec::new();
    let mut line = |what: String, row: &'a Row, key: &'static str, unit: &'static str| {
        lines.push(Headline {
            what,
            row,
            key,
            unit,
        });
    };
    for row in [ws, ws_most, sse] {
        let what = format!(
            "idle RSS per connection, {} {}",
            row.transport(),
            count(row)
        );
        line(what, row, "bytes_per_conn", "B");
    }
    for row in [ws, sse] {
        let what = format!(
            "server CPU per new connection, {} {}",
            row.transport(),
            count(row)
        );
        line(what, row, "cpu_us_per_new_conn", "µs");
    }
    for (what, key, unit) in [
        ("latency p50", "latency_p50", "ms"),
        ("latency p99", "latency_p99", "ms"),
        ("user CPU-s per 1M deliveries", "user_per_million", "s"),
        ("system CPU-s per 1M deliveries", "sys_per_million", "s"),
    ] {
        let what = format!("broadcast to {} at 1 msg/s: {what}", count(light));
        line(what, light, key, unit);
    }
    for (in_flight, row) in saturation::IN_FLIGHT.iter().zip(&broadcast.saturation.rows) {
        for (what, key, unit) in [
            ("deliveries/s", "deliveries_per_s", "/s"),
            ("latency p99", "latency_p99", "ms"),
            ("server lag p99", "server_lag_p99", "ms"),
        ] {
            let what = format!(
                "{in_flight} publish calls in flight, {}: {what}",
                count(row)
            );
            line(what, row, key, unit);
        }
    }
    for row in storms {
        for (what, key, unit) in [
            ("clients recovered with no gap", "recovered", ""),
            ("reconnects/s", "accept_rate", "/s"),
            ("server CPU per reconnect", "cpu_us_per_reconnect", "µs"),
        ] {
            let what = format!(
                "reconnect storm, {} {}: {what}",
                row.transport(),
                count(row)
            );
            line(what, row, key, unit);
        }
    }
    Ok(lines)
}

/// The "Before and after" section: each headline figure of Herald in
/// `before` and now, Nchan now, and Herald now / Nchan now.
pub fn section(before: Option<&Results>, headlines: &[Headline]) -> String {
    let when = before.map_or_else(
        || {
            "no earlier run was recorded in `docs/img/results.json`, so the \"before\" column \
             is empty"
                .to_string()
        },
        |b| format!("before is {}", b.describe()),
    );
    let mut out = format!(
        "## Before and after\n\n\
         The headline figures of this run beside Herald's in the previous one ({when}). Rows are \
         matched by their command; \"–\" where the previous run did not measure that figure (a \
         `--quick` run and a full one measure different counts, so they are not each other's \
         \"before\"). The last column is Herald now / Nchan now, from this run; Nchan has no \
         server lag figure and cannot resume a WebSocket, hence its \"–\" there. Each figure \
         is one run on a shared machine: differences within 10–20 % are noise.\n\n\
         | figure | Herald before | Herald after | Nchan | after / Nchan |\n\
         |---|---|---|---|---|\n"
    );
    for h in headlines {
        let was = before
            .and_then(|b| b.herald_of(h.row))
            .and_then(|r| r.get(h.key));
        let (now, nchan) = (h.row.herald.get(h.key), h.row.nchan.get(h.key));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            h.what,
            with_unit(was, h.unit),
            with_unit(now, h.unit),
            with_unit(nchan, h.unit),
            format_ratio(ratio(now, nchan)),
        );
    }
    out.push('\n');
    out
}

/// The time now, as the page shows it: "2026-12-03 14:50 UTC".
fn now_utc() -> String {
    command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
}

/// The commit this was built from, if run in a git checkout.
fn commit() -> String {
    command_output("git", &["rev-parse", "--short", "HEAD"])
}

/// A command's trimmed standard output; empty if it failed.
fn command_output(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(target: &str, setup: &str, cpus: &str, bytes: f64) -> RunResult {
        let mut r = RunResult::new("idle", target, setup.into());
        r.cpus = cpus.into();
        r.add("bytes_per_conn", "RSS per connection", "B", bytes);
        r
    }

    fn row(argv: &str, setup: &str, cpus: &str, herald: f64, nchan: f64) -> Row {
        Row {
            argv: argv.split_whitespace().map(str::to_string).collect(),
            herald: run("herald", setup, cpus, herald),
            nchan: run("nchan", setup, cpus, nchan),
        }
    }

    const PINNED: &str = "pinned: server CPU 0, bench CPU 1";

    /// This run: 10k pinned, the same unpinned (`--no-pin`), and a `--quick` count.
    fn now() -> [Row; 3] {
        [
            row(
                "idle --connections 10000",
                "10000 ws idle",
                PINNED,
                1500.0,
                3000.0,
            ),
            row(
                "idle --connections 10000 --no-pin",
                "10000 ws idle",
                "unpinned (--no-pin)",
                1600.0,
                3200.0,
            ),
            row("idle --connections 1000", "1000 ws idle", PINNED, 1.0, 2.0),
        ]
    }

    /// A file in the new format, as an earlier run wrote it: the same
    /// commands, the setup text since reworded, other figures.
    fn new_format() -> String {
        let then = [
            row(
                "idle --connections 10000",
                "10000 ws, old words",
                PINNED,
                2000.0,
                1.0,
            ),
            row(
                "idle --connections 10000 --no-pin",
                "10000 ws, old words",
                "unpinned (--no-pin)",
                2200.0,
                1.0,
            ),
        ];
        let results = Results::from_rows(
            &[&then[0], &then[1]],
            "herald-bench report".into(),
            "2026-12-01 10:00 UTC".into(),
            "abc1234".into(),
        );
        serde_json::to_string_pretty(&results).unwrap()
    }

    /// The older format: one pair, with no `cpus` and no command.
    const OLD_FORMAT: &str = r#"[[
        {"scenario":"idle","target":"herald","setup":"10000 ws idle","figures":[
            {"key":"bytes_per_conn","label":"x","unit":"B","value":2100.0}],
         "rss_curve":[],"latency_curve":[],"errors":[],"ok":true},
        {"scenario":"idle","target":"nchan","setup":"10000 ws idle","figures":[],
         "rss_curve":[],"latency_curve":[],"errors":[],"ok":true}
    ]]"#;

    /// Writes `file` (none: no file at all) where the report would find it,
    /// reads it back as the report does, and returns the section's sentence
    /// saying which run "before" is, and the "Herald before" cell of each
    /// row of [`now`].
    fn read_back(case: usize, file: Option<&str>) -> (String, Vec<String>) {
        let dir = std::env::temp_dir().join(format!(
            "herald-bench-baseline-{}-{case}",
            std::process::id()
        ));
        let path = dir.join("results.json");
        let _ = std::fs::remove_dir_all(&dir);
        if let Some(text) = file {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, text).unwrap();
        }
        let before = Results::read(&path);
        let _ = std::fs::remove_dir_all(&dir);
        let rows = now();
        let lines: Vec<Headline> = rows
            .iter()
            .map(|row| Headline {
                what: row.argv.join(" "),
                row,
                key: "bytes_per_conn",
                unit: "B",
            })
            .collect();
        let text = section(before.as_ref(), &lines);
        let when = text
            .split_once("previous one (")
            .and_then(|(_, rest)| rest.split_once("). Rows"))
            .map(|(when, _)| when.to_string())
            .unwrap_or_default();
        let befores = text
            .lines()
            .filter(|l| l.starts_with("| idle"))
            .map(|l| l.split(" | ").nth(1).unwrap_or_default().to_string())
            .collect();
        (when, befores)
    }

    #[test]
    fn reads_the_previous_file_in_either_format() {
        let new = new_format();
        let cases: [(&str, Option<&str>, &str, [&str; 3]); 8] = [
            (
                "no file",
                None,
                "no earlier run was recorded in `docs/img/results.json`, so the \"before\" column is empty",
                ["–", "–", "–"],
            ),
            (
                "not JSON",
                Some("not json"),
                "no earlier run was recorded in `docs/img/results.json`, so the \"before\" column is empty",
                ["–", "–", "–"],
            ),
            (
                "neither format",
                Some(r#"{"rows": 3}"#),
                "no earlier run was recorded in `docs/img/results.json`, so the \"before\" column is empty",
                ["–", "–", "–"],
            ),
            (
                // Matched by scenario and setup text; the unpinned run is
                // not the pinned one's "before".
                "old format",
                Some(OLD_FORMAT),
                "before is the previous `docs/img/results.json`, which recorded no date; its runs \
                 predate CPU pinning, so they ran unpinned",
                ["2100 B", "–", "–"],
            ),
            (
                "old format, empty",
                Some("[]"),
                "before is the previous `docs/img/results.json`, which recorded no date",
                ["–", "–", "–"],
            ),
            (
                // Matched by command although the setup text changed.
                "new format",
                Some(&new),
                "before is the run of 2026-12-01 10:00 UTC: commit `abc1234`, `herald-bench report`",
                ["2000 B", "2200 B", "–"],
            ),
            (
                "new format, rows only",
                Some(r#"{"rows": []}"#),
                "before is the previous `docs/img/results.json`, which recorded no date",
                ["–", "–", "–"],
            ),
            (
                "new format, a date only",
                Some(r#"{"date": "2026-12-01 10:00 UTC", "rows": []}"#),
                "before is the run of 2026-12-01 10:00 UTC",
                ["–", "–", "–"],
            ),
        ];
        for (case, (what, file, when, befores)) in cases.into_iter().enumerate() {
            let (got_when, got_befores) = read_back(case, file);
            assert_eq!(got_when, when, "{what}");
            assert_eq!(got_befores, befores, "{what}");
        }
    }

    #[test]
    fn after_nchan_and_ratio_come_from_this_run() {
        let rows = now();
        let line = |key| Headline {
            what: "w".into(),
            row: &rows[0],
            key,
            unit: "B",
        };
        let before = Results::parse(OLD_FORMAT);
        let table = section(before.as_ref(), &[line("bytes_per_conn")]);
        assert!(
            table.contains("| w | 2100 B | 1500 B | 3000 B | 0.500× |"),
            "{table}"
        );
        // A figure neither run has prints as "–" throughout.
        let table = section(before.as_ref(), &[line("cpu_us_per_new_conn")]);
        assert!(table.contains("| w | – | – | – | – |"), "{table}");
    }

    #[test]
    fn the_committed_results_are_a_baseline() {
        // The next full report reads this file for its "before" column.
        let text = include_str!("../../../docs/img/results.json");
        let results = Results::parse(text).expect("docs/img/results.json parses");
        assert!(!results.rows.is_empty());
    }
}
