//! Herald's own delivery lag (`herald_delivery_lag_seconds`), sampled from
//! every node's `/metrics` while a phase runs: how far the *server* ran
//! behind, beside the receipt latency the clients measure. The two differ
//! when the load generator, not the server, is what cannot keep up: then
//! messages wait in socket buffers, which no server-side figure sees.

use std::time::Duration;

use crate::{
    http::{HttpConn, metric_sum},
    sampler::Sampler,
};

/// How often the lag is read.
const EVERY: Duration = Duration::from_millis(100);

/// Samples of the lag in milliseconds: empty where the target has no such
/// metric (Nchan, an older Herald).
pub type LagSampler = Sampler<f64>;

/// Starts sampling the nodes at `metrics_addrs` (the largest lag of any
/// node at each sample, in milliseconds).
pub fn start(metrics_addrs: &[String]) -> LagSampler {
    let conns: Vec<HttpConn> = metrics_addrs.iter().map(|a| HttpConn::new(a)).collect();
    Sampler::start(EVERY, conns, |conns| {
        Box::pin(async move {
            let mut lag: Option<f64> = None;
            for conn in conns.iter_mut() {
                if let Ok((_, body)) = conn.request("GET", "/metrics", b"").await
                    && let Some(seconds) = metric_sum(
                        &String::from_utf8_lossy(&body),
                        "herald_delivery_lag_seconds",
                    )
                {
                    lag = Some(lag.unwrap_or(0.0).max(seconds * 1000.0));
                }
            }
            lag
        })
    })
}

/// The `q` quantile (0–1) of `samples`, nearest rank; `None` when empty.
pub fn quantile(samples: &[f64], q: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&samples, 0.5), Some(50.0));
        assert_eq!(quantile(&samples, 0.99), Some(99.0));
        assert_eq!(quantile(&samples, 1.0), Some(100.0));
        assert_eq!(quantile(&[7.0], 0.99), Some(7.0));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
