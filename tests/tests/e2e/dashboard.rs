//! `deploy/grafana/herald.json` shows every metric family Herald exports: the families of a real
//! node's `/metrics` (memory engine, and Redis engine, which adds `herald_redis_*`), and those of
//! the metrics table in docs/operations.md, which also lists the families that appear only once
//! something happened (webhooks, refusals, compatibility ports). A panel whose expression names a
//! family nobody exports fails too. The dashboard and the docs are compiled in with
//! `include_str!`, so editing either reruns this.

use std::collections::BTreeSet;

use herald_tests::{Herald, Redis, WS_TIMEOUT, WsClient, metric_value};

const DASHBOARD: &str = include_str!("../../../deploy/grafana/herald.json");
const OPERATIONS: &str = include_str!("../../../docs/operations.md");

#[tokio::test]
async fn the_dashboard_shows_every_family_of_the_memory_engine() {
    let herald = Herald::start();
    let text = scrape_after_a_delivery(&herald).await;
    assert_every_family_shown(&text);
    // process_open_fds and process_max_fds are read at each scrape: this process holds its
    // listener, a connection and more, under a limit above that.
    let open = metric_value(&text, "process_open_fds", &[]);
    let max = metric_value(&text, "process_max_fds", &[]);
    assert!(open >= 3.0 && max > open, "open {open}, max {max}\n{text}");
}

#[tokio::test]
async fn the_dashboard_shows_every_family_of_the_redis_engine() {
    let redis = Redis::start();
    let herald = Herald::builder()
        .arg("--engine")
        .arg("redis")
        .arg("--redis-url")
        .arg(redis.url())
        .start();
    let text = scrape_after_a_delivery(&herald).await;
    let families = scraped_families(&text);
    assert!(
        families.iter().any(|f| f.starts_with("herald_redis_")),
        "the Redis engine's families are missing: {families:?}"
    );
    assert_every_family_shown(&text);
}

#[test]
fn the_dashboard_shows_every_documented_family_and_no_other() {
    let documented = documented_families();
    assert!(
        documented.len() >= 40,
        "the metrics table of docs/operations.md was not found: {documented:?}"
    );
    let exprs = dashboard_exprs();
    let missing: Vec<_> = documented
        .iter()
        .filter(|family| !exprs.iter().any(|expr| uses(expr, family)))
        .collect();
    assert!(
        missing.is_empty(),
        "no panel of deploy/grafana/herald.json shows {missing:?}"
    );
    // Every family a panel names is one Herald documents (and so exports): a typo in an
    // expression would otherwise be an empty panel nobody notices.
    let unknown: BTreeSet<_> = exprs
        .iter()
        .flat_map(|expr| named_families(expr))
        .filter(|named| !documented.iter().any(|family| is_series_of(named, family)))
        .collect();
    assert!(
        unknown.is_empty(),
        "deploy/grafana/herald.json names families docs/operations.md does not list: {unknown:?}"
    );
}

/// Subscribes a WebSocket client, publishes one message and scrapes once it was delivered, so
/// that the families with labels have a series.
async fn scrape_after_a_delivery(herald: &Herald) -> String {
    let mut ws = WsClient::connect(&herald.ws_url("/ws")).await;
    ws.subscribe("news").await;
    herald.publish("news", "1").await;
    ws.next_message(WS_TIMEOUT).await;
    let text = herald.metrics().await;
    assert!(text.contains("# TYPE herald_"), "{text}");
    text
}

fn assert_every_family_shown(text: &str) {
    let exprs = dashboard_exprs();
    let families = scraped_families(text);
    let missing: Vec<_> = families
        .iter()
        .filter(|family| !exprs.iter().any(|expr| uses(expr, family)))
        .collect();
    assert!(
        missing.is_empty(),
        "/metrics has families no panel of deploy/grafana/herald.json shows: {missing:?}"
    );
    let documented = documented_families();
    let undocumented: Vec<_> = families
        .iter()
        .filter(|family| !documented.contains(*family))
        .collect();
    assert!(
        undocumented.is_empty(),
        "/metrics has families the table in docs/operations.md does not list: {undocumented:?}"
    );
}

/// The family names of `# TYPE` lines.
fn scraped_families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Every `expr` of every panel's targets, rows' nested panels included.
fn dashboard_exprs() -> Vec<String> {
    let dashboard: serde_json::Value =
        serde_json::from_str(DASHBOARD).expect("deploy/grafana/herald.json is JSON");
    let mut exprs = Vec::new();
    let mut panels: Vec<&serde_json::Value> = dashboard["panels"]
        .as_array()
        .expect("the dashboard has panels")
        .iter()
        .collect();
    while let Some(panel) = panels.pop() {
        if let Some(nested) = panel["panels"].as_array() {
            panels.extend(nested);
        }
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                exprs.push(expr.to_owned());
            }
        }
    }
    assert!(!exprs.is_empty(), "the dashboard has no expression");
    exprs
}

/// Whether `expr` reads `family`: the name as a whole identifier, or a histogram's
/// `_bucket`/`_sum`/`_count` series of it.
fn uses(expr: &str, family: &str) -> bool {
    named_families(expr)
        .iter()
        .any(|named| is_series_of(named, family))
}

/// Whether the series name `named` belongs to `family`: the family itself, or one of a
/// histogram's `_bucket`, `_sum` and `_count` series.
fn is_series_of(named: &str, family: &str) -> bool {
    named == family
        || ["_bucket", "_sum", "_count"]
            .iter()
            .any(|suffix| named.strip_suffix(suffix) == Some(family))
}

/// The `herald_*` and `process_*` identifiers of a PromQL expression.
fn named_families(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|word| word.starts_with("herald_") || word.starts_with("process_"))
        .map(str::to_owned)
        .collect()
}

/// The families named in the first column of docs/operations.md's metrics table.
fn documented_families() -> BTreeSet<String> {
    let mut families = BTreeSet::new();
    for line in OPERATIONS.lines().filter(|line| line.starts_with("| `")) {
        let first_cell = line.split('|').nth(1).unwrap_or_default();
        for quoted in first_cell.split('`').skip(1).step_by(2) {
            let name = quoted.split('{').next().unwrap_or_default();
            if name.starts_with("herald_") || name.starts_with("process_") {
                families.insert(name.to_owned());
            }
        }
    }
    families
}
