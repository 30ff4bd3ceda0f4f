//! Reading one value out of Prometheus text exposition, matching a subset of labels.

/// The sum of every sample of `name` whose labels include all of `labels` (0 when none match),
/// so that extra labels such as `site` do not break a test.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut sum = 0.0;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (metric, label_text) = match series.split_once('{') {
            Some((metric, rest)) => (metric, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric != name {
            continue;
        }
        let present = parse_labels(label_text);
        let matches = labels
            .iter()
            .all(|(k, v)| present.iter().any(|(pk, pv)| pk == k && pv == v));
        if matches {
            sum += value.trim().parse::<f64>().unwrap_or(0.0);
        }
    }
    sum
}

/// `a="x",b="y"` → pairs; values may contain escaped quotes and commas.
fn parse_labels(text: &str) -> Vec<(String, String)> {
    let mut labels = Vec::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(if escaped == 'n' { '\n' } else { escaped });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.push((key.trim_start_matches(',').trim().to_owned(), value));
        rest = &after[end..];
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::metric_value;

    #[test]
    fn sums_matching_series() {
        let text = "# HELP x y\n\
            herald_disconnects_total{reason=\"slow_consumer\",site=\"dev\",transport=\"ws\"} 2\n\
            herald_disconnects_total{reason=\"slow_consumer\",site=\"dev\",transport=\"sse\"} 1\n\
            herald_disconnects_total{reason=\"a,\\\"b\",transport=\"ws\"} 7\n\
            herald_up 1\n";
        let slow = [("reason", "slow_consumer"), ("transport", "ws")];
        assert_eq!(metric_value(text, "herald_disconnects_total", &slow), 2.0);
        assert_eq!(
            metric_value(
                text,
                "herald_disconnects_total",
                &[("reason", "slow_consumer")]
            ),
            3.0
        );
        assert_eq!(
            metric_value(text, "herald_disconnects_total", &[("reason", "a,\"b")]),
            7.0
        );
        assert_eq!(metric_value(text, "herald_up", &[]), 1.0);
        assert_eq!(metric_value(text, "herald_missing", &[]), 0.0);
    }
}
