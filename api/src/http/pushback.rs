//! Publishers pushed back while this node's delivery lags.
//!
//! A publish is answered as soon as its message is in history, before the
//! fan-out; so when subscribers are more than the node can write to, a
//! publisher that is never told would queue seconds of backlog. Instead,
//! each publish and delivery first looks at how far delivery will lag
//! ([`fanout::lag::outlook_ms`]: the lag now, plus the time the connections
//! already woken will take to run at the pace they ran lately). Past half
//! of `delivery.max_lag_ms` it waits, in turn behind any publish already
//! waiting, looking again every [`CHECK_EVERY`]; if that takes longer than
//! `delivery.max_publish_wait_ms`, it is answered 503 `delivery_lagging`
//! with `Retry-After` and nothing is published. A closed-loop publisher
//! therefore slows to what the node can deliver, and an open-loop one
//! learns it must.
//!
//! Why the outlook and why half, measured at saturation (10,000 subscribers
//! on one channel, server on one core, 2 to 32 publish calls in flight):
//! admitting by the lag itself, which shows a backlog only once its oldest
//! message has aged, let the lag reach 300-600 ms (p99) against a 250 ms
//! bound; a message admitted now waits behind every connection already
//! woken, which the outlook counts. Admitting while the outlook is under
//! half the bound kept the lag's p99 at 110-120 ms; under 65 % or 80 % of
//! it, at 190-310 ms, for 1.7-2× the throughput. The other half is for
//! what the outlook cannot see: the connections an admitted message wakes.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use hyper::{Response, header};
use push::ErrorCode;
use tokio::time::Instant;

use super::{Body, reply};
use crate::App;

/// How often the first waiting publish looks at the lag again.
const CHECK_EVERY: Duration = Duration::from_millis(2);

/// Publishes waiting for the lag, first come first served: the one holding
/// the lock looks at the lag until it may go ahead, then hands the lock to
/// the next (tokio's mutex is fair). Without it a publisher answered a
/// moment ago could go ahead of one that had waited most of a second,
/// whenever it happened to look first.
static QUEUE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
/// How many publishes are in [`QUEUE`] or waiting for it. While none is, a
/// publish with room goes ahead without touching the lock: publishes on
/// several threads do not meet on it, and none of them reads as pushed back.
static WAITING: AtomicUsize = AtomicUsize::new(0);

/// A place among the waiting publishes, given back however the wait ends.
struct Waiting;

impl Waiting {
    fn enter() -> Self {
        WAITING.fetch_add(1, Ordering::Relaxed);
        Waiting
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        WAITING.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Returns once delivery is within its bound (at once, when it is or when
/// pushback is off); `Err` is the 503 to answer.
pub(crate) async fn wait_for_delivery(app: &App, site: &str) -> Result<(), Response<Body>> {
    let config = &app.config().delivery;
    let max_lag = config.max_lag.as_millis().min(u32::MAX as u128) as u32;
    if max_lag == 0 {
        return Ok(());
    }
    let admit_under = admission_threshold(max_lag);
    // Nobody waiting, and room: the common case takes no lock.
    if WAITING.load(Ordering::Relaxed) == 0 && admitted(admit_under) {
        return Ok(());
    }
    let metrics = app.metrics();
    let started = Instant::now();
    let deadline = started + config.max_publish_wait;
    let _waiting = Waiting::enter();
    if let Ok(_turn) = tokio::time::timeout_at(deadline, QUEUE.lock()).await {
        loop {
            if admitted(admit_under) {
                metrics.pushback_waits.inc();
                metrics
                    .pushback_wait_seconds
                    .inc_by(started.elapsed().as_secs_f64());
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            tokio::time::sleep_until((now + CHECK_EVERY).min(deadline)).await;
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

/// Whether a publish may go ahead now: by the outlook, the lag the work
/// already admitted will reach ([`fanout::lag::outlook_ms`]).
fn admitted(admit_under: u32) -> bool {
    fanout::lag::outlook_ms() <= admit_under
}

/// The outlook (ms) under which a publish goes ahead: half the bound, and
/// at least 1 ms (0 would read as "never lagging" once rounded).
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
