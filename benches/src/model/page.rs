//! The figures `herald-bench report` writes only into `docs/benchmarks.md`
//! (the sections regenerated with `report --only …`, which do not go into
//! `docs/img/results.json`): a cell of a section's table, found by the
//! section's heading, the row's label and the column's header, and the date
//! the section says it was measured.
//!
//! Invariants:
//! - Nothing here fails: a section, row, column or number that is not there
//!   is `None`, and the model says which input it then defaulted.
//! - Labels and headers are compared without Markdown emphasis (`**`, `` ` ``),
//!   so the report may bold a row without breaking the model.

/// `docs/benchmarks.md` (or any page the report wrote), held as text.
pub struct Page {
    text: String,
}

/// A number read from a table cell, with the unit written after it.
#[derive(Clone, Debug, PartialEq)]
pub struct Cell {
    pub value: f64,
    pub unit: String,
}

impl Page {
    pub fn new(text: String) -> Self {
        Self { text }
    }

    /// The first table cell of the section headed `heading` (the whole
    /// heading line, `## Node restart`) in the row whose first cell is
    /// `row` and the column headed `column`.
    pub fn cell(&self, heading: &str, row: &str, column: &str) -> Option<Cell> {
        let section = self.section(heading)?;
        let mut header: Option<Vec<String>> = None;
        for line in section.lines() {
            let line = line.trim();
            if !line.starts_with('|') {
                header = None;
                continue;
            }
            let cells = cells(line);
            match &header {
                None => header = Some(cells),
                Some(names) => {
                    if cells.first().map(String::as_str) != Some(row) {
                        continue;
                    }
                    let at = names.iter().position(|name| name == column)?;
                    return number(cells.get(at)?);
                }
            }
        }
        None
    }

    /// The value of a command-line option in the section's first command
    /// (`--recipients 1000000` in "Timeline fan-out").
    pub fn option(&self, heading: &str, flag: &str) -> Option<f64> {
        let section = self.section(heading)?;
        let at = section.find(&format!("{flag} "))? + flag.len() + 1;
        section[at..].split_whitespace().next()?.parse().ok()
    }

    /// When the section headed `heading` was measured: its own "Measured …
    /// UTC" sentence, else its parent's (a `###` under a `##`), else the
    /// whole report's (the "Machine" section).
    pub fn measured(&self, heading: &str) -> Option<String> {
        let start = self.text.find(heading)?;
        let own = self.section(heading)?;
        if let Some(date) = date_in(own) {
            return Some(date);
        }
        // A `###` section's parent: the nearest `## ` heading before it.
        let parent = (heading.starts_with("### "))
            .then(|| self.text[..start].rfind("\n## "))
            .flatten()
            .map(|at| &self.text[at + 1..])
            .and_then(|rest| rest.lines().next())
            .and_then(|line| self.section(line))
            .and_then(date_in);
        parent.or_else(|| self.section("## Machine").and_then(date_in))
    }

    /// The text from the heading line to the next heading of any level.
    fn section(&self, heading: &str) -> Option<&str> {
        let start = self
            .text
            .match_indices(heading)
            .find(|(at, _)| *at == 0 || self.text.as_bytes()[at - 1] == b'\n')
            .map(|(at, _)| at)?;
        let body = &self.text[start + heading.len()..];
        let end = body.find("\n#").map_or(body.len(), |at| at + 1);
        Some(&body[..end])
    }
}

/// The cells of a table line, trimmed and without emphasis.
fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    inner
        .split('|')
        .map(|cell| cell.replace("**", "").replace('`', "").trim().to_string())
        .collect()
}

/// The leading number of a cell (`1.08 s (0.700 s + 0.380 s)` is 1.08 s,
/// `1024 (1024)` is 1024, `19,593 /s` is 19593 /s).
fn number(cell: &str) -> Option<Cell> {
    let cell = cell.trim();
    let end = cell
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ',' || c == '-'))
        .unwrap_or(cell.len());
    let value = cell[..end].replace(',', "").parse().ok()?;
    let unit = cell[end..]
        .split(['(', ';'])
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    Some(Cell { value, unit })
}

/// "2026-12-04 21:37 UTC" from a sentence "Measured 2026-12-04 21:37 UTC …"
/// (or "measured …", as the Machine section writes it).
fn date_in(text: &str) -> Option<String> {
    let at = text.find("easured 20")? + "easured ".len();
    let rest = &text[at..];
    let end = rest.find(" UTC")? + " UTC".len();
    (end <= 24).then(|| rest[..end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "\
# Benchmarks

## Machine

- measured 2026-12-04 21:37 UTC with Herald 0.1.0;

## Node restart

Clients on one channel. Measured 2026-12-04 21:40 UTC with Herald.

| | WebSocket, SIGTERM (a deploy) | WebSocket, SIGKILL (a crash) |
|---|---|---|
| clients | 15000 | 15000 |
| **server CPU per reconnect** | 192 µs | 1,327 µs (all of it) |

## The Pusher protocol

Measured 2026-12-05 23:42 UTC with Herald 0.1.0.

### Presence on Redis

| figure | value |
|---|---|
| Redis CPU per leave | 50 µs |
| `leave`: commands | 16.0 |

### Herald alone

| connection | RSS per connection |
|---|---|
| WebSocket, own | 1072 B |
";

    #[test]
    fn reads_cells_by_heading_row_and_column() {
        let page = Page::new(PAGE.to_string());
        let check = |heading, row, column, expect: Option<(f64, &str)>| {
            let got = page.cell(heading, row, column);
            assert_eq!(
                got.map(|c| (c.value, c.unit)),
                expect.map(|(v, u)| (v, u.to_string())),
                "{heading} / {row} / {column}"
            );
        };
        check(
            "## Node restart",
            "server CPU per reconnect",
            "WebSocket, SIGKILL (a crash)",
            Some((1327.0, "µs")),
        );
        check(
            "## Node restart",
            "clients",
            "WebSocket, SIGTERM (a deploy)",
            Some((15000.0, "")),
        );
        check(
            "### Presence on Redis",
            "Redis CPU per leave",
            "value",
            Some((50.0, "µs")),
        );
        check(
            "### Presence on Redis",
            "leave: commands",
            "value",
            Some((16.0, "")),
        );
        check("## Node restart", "no such row", "value", None);
        check("## Node restart", "clients", "no such column", None);
        check("## No such section", "clients", "value", None);
    }

    #[test]
    fn finds_the_date_of_a_section_or_its_parent_or_the_report() {
        let page = Page::new(PAGE.to_string());
        assert_eq!(
            page.measured("## Node restart").as_deref(),
            Some("2026-12-04 21:40 UTC")
        );
        assert_eq!(
            page.measured("### Presence on Redis").as_deref(),
            Some("2026-12-05 23:42 UTC")
        );
        // "### Herald alone" has no date of its own: its parent's.
        assert_eq!(
            page.measured("### Herald alone").as_deref(),
            Some("2026-12-05 23:42 UTC")
        );
        // A `##` section without a date of its own: the report's, never the
        // section before it.
        let page = Page::new(PAGE.replace("Measured 2026-12-04 21:40 UTC", "Measured then"));
        assert_eq!(
            page.measured("## Node restart").as_deref(),
            Some("2026-12-04 21:37 UTC")
        );
    }
}
