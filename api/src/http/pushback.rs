//! Publishers pushed back while this node's delivery lags.
//!
//! A publish is answered as soon as its message is in history, before the
//! fan-out; so when subscribers are more than the node can write to, a
//! publisher that is never told would queue seconds of backlog. Instead,
//! each publish and delivery first looks at the delivery lag
//! ([`fanout::lag`]): past half of `delivery.max_lag_ms` it waits, checking
//! every [`CHECK_EVERY`], until the lag is back under that; if that takes
//! longer than `delivery.max_publish_wait_ms`, it is answered 503
//! `delivery_lagging` with `Retry-After` and nothing is published. A
//! closed-loop publisher therefore slows to what the node can deliver, and
//! an open-loop one learns it must.
//!
//! Why half: a message let in now wakes its subscribers' connections, and
//! they get a core one after another, behind every connection already
//! woken. Measured at saturation (10,000 subscribers on one channel, one
//! core), such a round over every connection takes a good part of the
//! bound itself, so a message admitted just under the bound reached its
//! last subscriber well past it. Admitting below half keeps the other half
//! for that round.

use std::time::Duration;

use hyper::{Response, header};
use push::ErrorCode;
use tokio::time::Instant;

use super::{Body, reply};
use crate::App;

/// How often a waiting publish looks at the lag again.
const CHECK_EVERY: Duration = Duration::from_millis(10);

/// Returns once delivery is within its bound (at once, when it is or when
/// pushback is off); `Err` is the 503 to answer.
pub(crate) async fn wait_for_delivery(app: &App, site: &str) -> Result<(), Response<Body>> {
    let config = &app.config().delivery;
    let max_lag = config.max_lag.as_millis().min(u32::MAX as u128) as u32;
    if max_lag == 0 {
        return Ok(());
    }
    let admit_under = admission_threshold(max_lag);
    if fanout::lag::current_ms() <= admit_under {
        return Ok(());
    }
    let metrics = app.metrics();
    let started = Instant::now();
    let deadline = started + config.max_publish_wait;
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        tokio::time::sleep_until((now + CHECK_EVERY).min(deadline)).await;
        if fanout::lag::current_ms() <= admit_under {
            metrics.pushback_waits.inc();
            metrics
                .pushback_wait_seconds
                .inc_by(started.elapsed().as_secs_f64());
            return Ok(());
        }
    }
    metrics.pushback_refusals.inc();
    metrics
        .pushback_wait_seconds
        .inc_by(started.elapsed().as_secs_f64());
    app.sessions()
        .metrics()
        .reject(site, ErrorCode::DeliveryLagging);
    let lag = fanout::lag::current_ms();
    let mut response = reply::refuse(
        ErrorCode::DeliveryLagging,
        &format!(
            "delivery on this node is {lag} ms behind (delivery.max_lag_ms is {max_lag}); \
             nothing was published, retry after Retry-After"
        ),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from(1));
    Err(response)
}

/// The lag (ms) under which a publish goes ahead: half the bound, and at
/// least 1 ms (0 would read as "never lagging" once rounded).
fn admission_threshold(max_lag_ms: u32) -> u32 {
    (max_lag_ms / 2).max(1)
}

#[cfg(test)]
mod tests {
    use super::admission_threshold;

    #[test]
    fn publishes_are_admitted_under_half_the_bound() {
        for (max_lag, admitted_under) in [(250, 125), (1000, 500), (3, 1), (1, 1), (2, 1)] {
            assert_eq!(admission_threshold(max_lag), admitted_under, "{max_lag}");
        }
    }
}
