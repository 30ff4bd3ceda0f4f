//! Publishing during a scenario: at a fixed rate (open loop: the schedule
//! does not wait for the server), closed loop on delivery (at most `window`
//! messages not yet received by every subscriber), or closed loop on the
//! publish call (`in_flight` calls at once, whatever is still on its way to
//! subscribers). Every message carries its send time and a sequence number;
//! every publish call is timed.
//!
//! A `503` with `Retry-After` is pushback, not a failure: the server says it
//! cannot deliver more now (Herald past `delivery.max_lag_ms`). It is counted
//! apart, and the connection that got it waits as long as it says (never past
//! the phase's end) before its next call.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use parking_lot::Mutex;
use tokio::{sync::watch, time::Instant};

use crate::{
    client::payload,
    http::{HttpConn, Url},
    now_us,
    stats::Latency,
    target::{Templates, fill},
};

/// Which channel each message goes to.
#[derive(Clone, Debug)]
pub enum Channels {
    /// Every message to this one channel.
    Shared(String),
    /// Message `k` to user channel `k % users`.
    Users(usize),
}

/// How fast to publish.
#[derive(Clone, Copy, Debug)]
pub enum Pace {
    /// Messages per second, open loop.
    Rate(f64),
    /// Closed loop on delivery: publish while fewer than `window` messages
    /// are still on their way to some subscriber.
    Window(u64),
    /// Closed loop on the publish call: this many calls at once, one per
    /// connection, each connection sending the next as soon as its answer
    /// comes. What is on its way to subscribers is not limited, so a server
    /// that answers before it fans out (Herald) shows its backlog here.
    InFlight(usize),
}

impl Pace {
    /// The publish connections this pace needs: one per call in flight, or
    /// `connections` for the others.
    pub fn connections(self, connections: usize) -> usize {
        match self {
            Pace::InFlight(calls) => calls,
            Pace::Rate(_) | Pace::Window(_) => connections,
        }
        .max(1)
    }
}

/// Publishes messages for a scenario; the sequence continues across phases.
pub struct Publisher {
    templates: Templates,
    /// The node publishes go to.
    addr: String,
    channels: Channels,
    /// Payload size in bytes.
    size: usize,
    /// Concurrent publish connections.
    connections: usize,
    /// The last sequence number handed out (the first message is 1).
    seq: Arc<AtomicU64>,
    /// Send a message not accepted (failed, or pushed back) again until it
    /// is, with an `Idempotency-Key`: [`Publisher::retrying`].
    retry: bool,
    /// Sequence numbers handed out whose call was not accepted (failed or
    /// pushed back): no subscriber will ever see them, so closed loop and
    /// the drain must not wait for them.
    unaccepted: Arc<AtomicU64>,
}

/// How long a retrying publisher waits before sending a failed call again.
const RETRY_WAIT: Duration = Duration::from_millis(50);
/// How long past its phase's end a retrying publisher may go on trying.
const RETRY_PAST_END: Duration = Duration::from_secs(5);

/// What one phase of publishing did.
#[derive(Clone, Debug, Default)]
pub struct Published {
    /// Messages the server accepted.
    pub accepted: u64,
    /// Publish calls refused or failed (pushback not included).
    pub failed: u64,
    pub first_error: Option<String>,
    /// Publish calls answered `503` with `Retry-After`: nothing published.
    pub pushback: u64,
    /// Publish calls sent again, the same message ([`Publisher::retrying`]).
    pub retried: u64,
    /// Seconds the connections waited because of `Retry-After`, in all.
    pub pushback_wait_s: f64,
    /// Duration of each accepted publish call.
    pub calls: Latency,
}

/// How one publish call ended.
#[derive(Debug, PartialEq)]
enum Outcome {
    Accepted,
    /// `503` with `Retry-After`: wait this long before the next call.
    Pushback(Duration),
    Failed(String),
}

impl Outcome {
    /// Classifies an answer: any 2xx is accepted; a 503 is pushback when its
    /// `Retry-After` is a number of seconds (RFC 9110 also allows a date,
    /// which no server measured here sends: that counts as a failure).
    fn of(status: u16, retry_after: Option<&str>, body: &[u8]) -> Outcome {
        if (200..300).contains(&status) {
            return Outcome::Accepted;
        }
        if status == 503
            && let Some(wait) = retry_after.and_then(retry_after_seconds)
        {
            return Outcome::Pushback(wait);
        }
        let body = String::from_utf8_lossy(body);
        let body: String = body.chars().take(300).collect();
        Outcome::Failed(format!("{status} {body}"))
    }
}

/// `Retry-After` as delay-seconds (`1`; a fraction such as `0.5` is taken
/// too); anything else, or more than an hour, is not understood.
fn retry_after_seconds(value: &str) -> Option<Duration> {
    let seconds: f64 = value.trim().parse().ok()?;
    (seconds.is_finite() && (0.0..=3600.0).contains(&seconds))
        .then(|| Duration::from_secs_f64(seconds))
}

impl Publisher {
    pub fn new(
        templates: Templates,
        addr: String,
        channels: Channels,
        size: usize,
        connections: usize,
    ) -> Self {
        Self {
            templates,
            addr,
            channels,
            size,
            connections: connections.max(1),
            seq: Arc::new(AtomicU64::new(0)),
            unaccepted: Arc::new(AtomicU64::new(0)),
            retry: false,
        }
    }

    /// Sends a message the server did not accept (the call failed, or was
    /// pushed back) again, every [`RETRY_WAIT`] (or after `Retry-After`),
    /// until it is, up to [`RETRY_PAST_END`] past the phase's end: for a run
    /// through a node restart, whose clients expect every message. Each
    /// message carries `Idempotency-Key: bench-<seq>`, so that one whose
    /// answer was lost is not published twice (Herald only).
    pub fn retrying(mut self) -> Self {
        self.retry = true;
        self
    }

    /// The last sequence number published (0: none yet).
    pub fn last_seq(&self) -> u64 {
        self.seq.load(Relaxed)
    }

    /// Messages accepted so far, in every phase: what each subscriber of a
    /// shared channel has once delivery has caught up.
    pub fn accepted_total(&self) -> u64 {
        self.seq
            .load(Relaxed)
            .saturating_sub(self.unaccepted.load(Relaxed))
    }

    /// Publishes for `duration` (and at most `max` messages) at `pace`.
    /// `done` counts messages fully delivered in the same units as the
    /// sequence (for closed loop); `on_tick` sees the running count.
    pub async fn run(
        &self,
        pace: Pace,
        duration: Duration,
        max: u64,
        done: watch::Receiver<u64>,
    ) -> Published {
        // Never set: the sender lives until every task has ended.
        let (_never, stop) = watch::channel(false);
        self.run_until(pace, duration, max, done, stop).await
    }

    /// [`Publisher::run`] that also stops, early, once `stop` turns true:
    /// for a phase whose end is an event (the fanout scenario's delivery),
    /// with `duration` as its bound.
    pub async fn run_until(
        &self,
        pace: Pace,
        duration: Duration,
        max: u64,
        done: watch::Receiver<u64>,
        stop: watch::Receiver<bool>,
    ) -> Published {
        let start = Instant::now();
        let end = start + duration;
        let claimed = Arc::new(AtomicU64::new(0));
        let result = Arc::new(Mutex::new(Published::default()));
        let tasks: Vec<_> = (0..pace.connections(self.connections))
            .map(|_| {
                let templates = self.templates.clone();
                let addr = self.addr.clone();
                let channels = self.channels.clone();
                let size = self.size;
                let seq = self.seq.clone();
                let unaccepted = self.unaccepted.clone();
                let claimed = claimed.clone();
                let result = result.clone();
                let mut done = done.clone();
                let mut stop = stop.clone();
                let retry = self.retry;
                tokio::spawn(async move {
                    let url = fill(&templates.publish_url, &addr, "{channel}");
                    let Ok(url) = Url::parse(&url) else {
                        return;
                    };
                    let mut conn = HttpConn::new(&url.authority);
                    loop {
                        match pace {
                            Pace::Rate(rate) => {
                                let k = claimed.fetch_add(1, Relaxed);
                                if k >= max {
                                    return;
                                }
                                let due = start + Duration::from_secs_f64(k as f64 / rate);
                                if due >= end || *stop.borrow() {
                                    return;
                                }
                                tokio::select! {
                                    () = tokio::time::sleep_until(due) => {}
                                    _ = stop.wait_for(|&stop| stop) => return,
                                }
                            }
                            Pace::Window(window) => loop {
                                if Instant::now() >= end
                                    || claimed.load(Relaxed) >= max
                                    || *stop.borrow()
                                {
                                    return;
                                }
                                let in_flight = seq
                                    .load(Relaxed)
                                    .saturating_sub(unaccepted.load(Relaxed))
                                    .saturating_sub(*done.borrow());
                                if in_flight < window {
                                    claimed.fetch_add(1, Relaxed);
                                    break;
                                }
                                let _ = tokio::time::timeout_at(end, done.changed()).await;
                            },
                            Pace::InFlight(_) => {
                                if Instant::now() >= end
                                    || *stop.borrow()
                                    || claimed.fetch_add(1, Relaxed) >= max
                                {
                                    return;
                                }
                            }
                        }
                        let n = seq.fetch_add(1, Relaxed) + 1;
                        let channel = match &channels {
                            Channels::Shared(name) => name.clone(),
                            Channels::Users(users) => {
                                templates.user_channel((n as usize - 1) % users.max(&1))
                            }
                        };
                        let path = url.path.replace("{channel}", &channel);
                        let sent = now_us();
                        let body = templates
                            .publish_body
                            .replace("{channel}", &channel)
                            .replace("{payload}", &payload(sent, n, size));
                        // With `retry`, the same message (the same key: never
                        // published twice) is sent again until accepted.
                        let key = format!("bench-{n}");
                        let headers: &[(&str, &str)] = if retry {
                            &[("Idempotency-Key", &key)]
                        } else {
                            &[]
                        };
                        let (outcome, took) = loop {
                            let began = Instant::now();
                            let answer = conn
                                .send(&templates.publish_method, &path, headers, body.as_bytes())
                                .await;
                            let took = began.elapsed().as_micros() as u64;
                            let outcome = match answer {
                                Ok(answer) => Outcome::of(
                                    answer.status,
                                    answer.retry_after.as_deref(),
                                    &answer.body,
                                ),
                                Err(error) => Outcome::Failed(format!("{error:#}")),
                            };
                            if !retry
                                || outcome == Outcome::Accepted
                                || Instant::now() >= end + RETRY_PAST_END
                            {
                                break (outcome, took);
                            }
                            result.lock().retried += 1;
                            let wait = match outcome {
                                Outcome::Pushback(wait) => wait,
                                _ => RETRY_WAIT,
                            };
                            tokio::time::sleep(wait).await;
                        };
                        if outcome != Outcome::Accepted {
                            unaccepted.fetch_add(1, Relaxed);
                        }
                        let wait = {
                            let mut result = result.lock();
                            match outcome {
                                Outcome::Accepted => {
                                    result.accepted += 1;
                                    result.calls.record(took);
                                    None
                                }
                                Outcome::Pushback(wait) => {
                                    // Never past the phase's end.
                                    let wait =
                                        wait.min(end.saturating_duration_since(Instant::now()));
                                    result.pushback += 1;
                                    result.pushback_wait_s += wait.as_secs_f64();
                                    Some(wait)
                                }
                                Outcome::Failed(error) => {
                                    result.failed += 1;
                                    result.first_error.get_or_insert(error);
                                    None
                                }
                            }
                        };
                        if let Some(wait) = wait {
                            tokio::select! {
                                () = tokio::time::sleep(wait) => {}
                                _ = stop.wait_for(|&stop| stop) => return,
                            }
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            let _ = task.await;
        }
        result.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::*;
    use crate::target::Preset;

    /// A status, its `Retry-After`, and how the call counts.
    #[test]
    fn answers_are_accepted_pushed_back_or_failed() {
        let failed = |text: &str| Outcome::Failed(text.into());
        let cases: &[(u16, Option<&str>, Outcome)] = &[
            (200, None, Outcome::Accepted),
            (202, None, Outcome::Accepted),
            (201, Some("1"), Outcome::Accepted),
            (503, Some("1"), Outcome::Pushback(Duration::from_secs(1))),
            (503, Some(" 2 "), Outcome::Pushback(Duration::from_secs(2))),
            (503, Some("0"), Outcome::Pushback(Duration::ZERO)),
            (
                503,
                Some("0.5"),
                Outcome::Pushback(Duration::from_millis(500)),
            ),
            (
                503,
                Some("3600"),
                Outcome::Pushback(Duration::from_secs(3600)),
            ),
            // Not understood: a failure, with what the server said.
            (503, None, failed("503 busy")),
            (503, Some(""), failed("503 busy")),
            (503, Some("-1"), failed("503 busy")),
            (503, Some("3601"), failed("503 busy")),
            (503, Some("NaN"), failed("503 busy")),
            (
                503,
                Some("Wed, 21 Oct 2015 07:28:00 GMT"),
                failed("503 busy"),
            ),
            // Only a 503 is pushback: a 429 with Retry-After is a site's rate limit.
            (429, Some("1"), failed("429 busy")),
            (500, Some("1"), failed("500 busy")),
        ];
        for (status, retry_after, expected) in cases {
            assert_eq!(
                &Outcome::of(*status, *retry_after, b"busy"),
                expected,
                "{status} {retry_after:?}"
            );
        }
    }

    #[test]
    fn in_flight_opens_a_connection_per_call() {
        assert_eq!(Pace::InFlight(32).connections(4), 32);
        assert_eq!(Pace::Window(4).connections(4), 4);
        assert_eq!(Pace::Rate(10.0).connections(0), 1);
    }

    /// A publish endpoint on loopback that answers the `k`th request (from
    /// 0) with `answer(k)`, on keep-alive connections.
    async fn scripted(answer: fn(u64) -> &'static str) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let count = Arc::new(AtomicU64::new(0));
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let count = count.clone();
                tokio::spawn(async move {
                    let mut buffer = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        // One request: its head, then Content-Length bytes.
                        let end = loop {
                            if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                                break at + 4;
                            }
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
                        let length: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        while buffer.len() < end + length {
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buffer.drain(..end + length);
                        let k = count.fetch_add(1, Relaxed);
                        if stream.write_all(answer(k).as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
    const PUSHBACK: &str =
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 0\r\nContent-Length: 4\r\n\r\nbusy";
    const UNAVAILABLE: &str = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\ndown";

    #[tokio::test]
    async fn pushback_is_counted_apart_and_the_drain_does_not_wait_for_it() {
        // Requests 3 and 5 are pushed back, 7 is a 503 without Retry-After.
        let addr = scripted(|k| match k {
            3 | 5 => PUSHBACK,
            7 => UNAVAILABLE,
            _ => OK,
        })
        .await;
        let publisher = Publisher::new(
            Templates::preset(Preset::Herald),
            addr,
            Channels::Shared("bench".into()),
            100,
            1,
        );
        let (_done_tx, done) = watch::channel(0);
        // Ends on the message count; the duration only bounds it.
        let published = publisher
            .run(Pace::InFlight(4), Duration::from_secs(120), 20, done)
            .await;
        assert_eq!(published.pushback, 2, "{published:?}");
        assert_eq!(published.failed, 1, "{published:?}");
        assert_eq!(published.accepted, 17, "{published:?}");
        assert_eq!(published.calls.count(), 17);
        assert!(
            published
                .first_error
                .as_deref()
                .unwrap()
                .starts_with("503 down")
        );
        assert_eq!(publisher.last_seq(), 20);
        assert_eq!(publisher.accepted_total(), 17);
    }
}
