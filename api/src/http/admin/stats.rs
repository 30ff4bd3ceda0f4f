//! `GET /api/admin/stats`: the node's figures for the console's charts and
//! tables, read from the same registry `/metrics` renders, so the two never
//! disagree. Counters are totals since the start; the page draws rates from
//! the differences between two answers.

use std::collections::BTreeMap;

use hyper::Response;
use prometheus::proto::{MetricFamily, MetricType};
use serde_json::{Map, Value, json};

use super::{Body, ok};
use crate::{App, config::EngineKind};

/// Channels listed in the busiest-channels table.
const BUSIEST_CHANNELS: usize = 20;

pub(super) fn snapshot(app: &App) -> Response<Body> {
    let families = app.registry().gather();
    let family = |name: &str| families.iter().find(|family| family.name() == name);
    let sum = |name: &str| family(name).map_or(0.0, |family| total(family, |_| true));

    let mut connections = Map::new();
    if let Some(family) = family("herald_connections") {
        for (transport, value) in by_label(family, "transport") {
            connections.insert(transport, json!(value as u64));
        }
    }
    let slow_consumer = family("herald_disconnects_total").map_or(0.0, |family| {
        total(family, |labels| {
            labels.get("reason") == Some(&"slow_consumer")
        })
    });
    let redis = match app.config().engine {
        EngineKind::Memory => Value::Null,
        EngineKind::Redis(_) => json!({
            "healthy": app.fanout().is_ready(),
            "reconnects": sum("herald_redis_reconnects_total") as u64,
            "publish_failures": sum("herald_redis_publish_failures_total") as u64,
            "gaps_detected": sum("herald_redis_gaps_detected_total") as u64,
        }),
    };
    let traffic = app.accounting().totals();
    let sites: Vec<Value> = app
        .sessions()
        .sites()
        .all()
        .into_iter()
        .map(|site| {
            let counted = traffic.get(site.id()).unwrap_or(&Value::Null);
            let figure = |key: &str| counted.get(key).cloned().unwrap_or(json!(0));
            json!({
                "id": site.id(),
                "connections": site.connections(),
                "messages_produced": figure("messages_produced"),
                "bytes_produced": figure("bytes_produced"),
                "deliveries_received": figure("deliveries_received"),
                "bytes_received": figure("bytes_received"),
                "connection_seconds": figure("connection_seconds"),
                "share": counted.get("share").cloned().unwrap_or(json!({})),
                "split_out": counted.get("split_out").cloned().unwrap_or(json!(false)),
            })
        })
        .collect();
    let channels: Vec<Value> = app
        .fanout()
        .busiest_channels(BUSIEST_CHANNELS)
        .into_iter()
        .map(|(channel, subscribers)| {
            json!({"site": channel.site(), "channel": channel.name(), "subscribers": subscribers})
        })
        .collect();
    let time_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64);
    ok(json!({
        "time_ms": time_ms,
        "engine": match app.config().engine {
            EngineKind::Memory => "memory",
            EngineKind::Redis(_) => "redis",
        },
        "uptime_s": app.started().elapsed().as_secs(),
        "connections": connections,
        "totals": {
            "published": sum("herald_messages_published_total") as u64,
            "delivered": sum("herald_messages_delivered_total") as u64,
            "slow_consumer_disconnects": slow_consumer as u64,
            "disconnects": sum("herald_disconnects_total") as u64,
        },
        "delivery_lag_seconds": f64::from(fanout::lag::current_ms()) / 1000.0,
        "redis": redis,
        "sites": sites,
        "channels": channels,
        "split_share": app.config().accounting.split_share,
    }))
}

/// The sum of a counter or gauge family's series whose labels `keep` takes.
fn total(family: &MetricFamily, keep: impl Fn(&BTreeMap<&str, &str>) -> bool) -> f64 {
    family
        .get_metric()
        .iter()
        .filter(|metric| {
            let labels = metric
                .get_label()
                .iter()
                .map(|pair| (pair.name(), pair.value()))
                .collect();
            keep(&labels)
        })
        .map(|metric| match family.get_field_type() {
            MetricType::GAUGE => metric.get_gauge().get_value(),
            _ => metric.get_counter().get_value(),
        })
        .sum()
}

/// A family's series summed by the value of its label `name`.
fn by_label(family: &MetricFamily, name: &str) -> BTreeMap<String, f64> {
    let mut sums = BTreeMap::new();
    for metric in family.get_metric() {
        let Some(label) = metric.get_label().iter().find(|pair| pair.name() == name) else {
            continue;
        };
        let value = match family.get_field_type() {
            MetricType::GAUGE => metric.get_gauge().get_value(),
            _ => metric.get_counter().get_value(),
        };
        *sums.entry(label.value().to_owned()).or_insert(0.0) += value;
    }
    sums
}
