//! The result of one scenario run against one target: named figures (for
//! tables and ratios), curves (for plots), and how they print as JSON and
//! Markdown.

use std::{fmt::Write as _, path::Path};

use serde::{Deserialize, Serialize};

use crate::stats::{Percentiles, ratio};

/// One run of one scenario against one target.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunResult {
    pub scenario: String,
    pub target: String,
    /// What was run, in words ("10000 ws subscribers, 5 msg/s").
    pub setup: String,
    /// How servers and bench were pinned to CPUs ("pinned: server CPU 0,
    /// bench CPU 1", "unpinned"); empty in results written before it existed.
    #[serde(default)]
    pub cpus: String,
    pub figures: Vec<Figure>,
    /// `(open connections, server RSS bytes)` while connecting.
    pub rss_curve: Vec<(u64, u64)>,
    /// `(percentile, milliseconds)` of the delivery latency.
    pub latency_curve: Vec<(f64, f64)>,
    /// Failures worth reading (first few).
    pub errors: Vec<String>,
    /// Whether the run met its own checks (every connection opened, nothing lost).
    pub ok: bool,
}

/// One named number.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Figure {
    /// Stable key, used to pair figures of two runs.
    pub key: String,
    pub label: String,
    pub unit: String,
    pub value: Option<f64>,
}

impl RunResult {
    pub fn new(scenario: &str, target: &str, setup: String) -> Self {
        Self {
            scenario: scenario.into(),
            target: target.into(),
            setup,
            ok: true,
            ..Default::default()
        }
    }

    /// Adds a figure.
    pub fn add(&mut self, key: &str, label: &str, unit: &str, value: impl Into<Option<f64>>) {
        self.figures.push(Figure {
            key: key.into(),
            label: label.into(),
            unit: unit.into(),
            value: value.into(),
        });
    }

    /// Adds `p50`, `p90`, `p99`, `p99.9` and `max` figures under `key`.
    pub fn add_percentiles(&mut self, key: &str, label: &str, p: &Percentiles) {
        let has = p.count > 0;
        for (suffix, name, value) in [
            ("p50", "p50", p.p50),
            ("p90", "p90", p.p90),
            ("p99", "p99", p.p99),
            ("p999", "p99.9", p.p999),
            ("max", "max", p.max),
        ] {
            self.add(
                &format!("{key}_{suffix}"),
                &format!("{label} {name}"),
                "ms",
                has.then_some(value),
            );
        }
    }

    pub fn get(&self, key: &str) -> Option<f64> {
        self.figures.iter().find(|f| f.key == key)?.value
    }

    /// A Markdown table of the figures.
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "### {} — {} ({})\n\n{}| figure | value |\n|---|---|\n",
            self.scenario,
            self.target,
            self.setup,
            cpus_line(&self.cpus)
        );
        for f in &self.figures {
            let _ = writeln!(out, "| {} | {} |", f.label, with_unit(f.value, &f.unit));
        }
        for error in &self.errors {
            let _ = writeln!(out, "\nerror: {error}");
        }
        out
    }

    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        write_json(path, self)
    }
}

pub fn write_json(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(value)? + "\n")?;
    Ok(())
}

/// Herald and Nchan side by side, with the ratio Herald / Nchan.
pub fn comparison(herald: &RunResult, nchan: &RunResult) -> String {
    let cpus = if herald.cpus == nchan.cpus {
        cpus_line(&herald.cpus)
    } else {
        cpus_line(&format!("herald {}; nchan {}", herald.cpus, nchan.cpus))
    };
    let mut out = format!(
        "### {} — herald vs nchan ({})\n\n{cpus}| figure | herald | nchan | herald / nchan |\n|---|---|---|---|\n",
        herald.scenario, herald.setup
    );
    for f in &herald.figures {
        let other = nchan.get(&f.key);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            f.label,
            with_unit(f.value, &f.unit),
            with_unit(other, &f.unit),
            format_ratio(ratio(f.value, other)),
        );
    }
    out
}

/// The pinning as a line before a table: "CPUs: pinned: server CPU 0, bench CPU 1".
fn cpus_line(cpus: &str) -> String {
    if cpus.is_empty() {
        String::new()
    } else {
        format!("CPUs: {cpus}.\n\n")
    }
}

/// A number for a table: three significant digits, no trailing noise.
pub fn format_number(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 100.0 || magnitude == 0.0 || value.fract() == 0.0 {
        format!("{value:.0}")
    } else if magnitude >= 10.0 {
        format!("{value:.1}")
    } else if magnitude >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

pub fn with_unit(value: Option<f64>, unit: &str) -> String {
    match value {
        None => "–".into(),
        Some(v) if unit.is_empty() => format_number(v),
        Some(v) => format!("{} {unit}", format_number(v)),
    }
}

pub fn format_ratio(value: Option<f64>) -> String {
    value.map_or_else(|| "–".into(), |r| format!("{}×", format_number(r)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_print_with_three_digits() {
        for (value, text) in [
            (0.0, "0"),
            (1234.56, "1235"),
            (42.0, "42"),
            (12.345, "12.3"),
            (1.2345, "1.23"),
            (0.01234, "0.012"),
        ] {
            assert_eq!(format_number(value), text, "{value}");
        }
        assert_eq!(with_unit(None, "ms"), "–");
        assert_eq!(format_ratio(Some(0.5)), "0.500×");
    }

    #[test]
    fn comparison_pairs_figures_by_key() {
        let mut a = RunResult::new("broadcast", "herald", "1000 ws subscribers".into());
        a.add("cpu", "CPU", "s", 2.0);
        a.add("only_a", "only in a", "", 1.0);
        let mut b = RunResult::new("broadcast", "nchan", "1000 ws subscribers".into());
        b.add("cpu", "CPU", "s", 8.0);
        let table = comparison(&a, &b);
        assert!(table.contains("| CPU | 2 s | 8 s | 0.250× |"), "{table}");
        assert!(!table.contains("CPUs:"), "{table}");
        a.cpus = "pinned: server CPU 0, bench CPU 1".into();
        b.cpus = a.cpus.clone();
        let table = comparison(&a, &b);
        assert!(
            table.contains("\n\nCPUs: pinned: server CPU 0, bench CPU 1.\n\n| figure |"),
            "{table}"
        );
        assert!(
            a.markdown()
                .contains("CPUs: pinned: server CPU 0, bench CPU 1.\n")
        );
        assert!(table.contains("| only in a | 1 | – | – |"), "{table}");
    }
}
