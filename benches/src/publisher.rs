//! Publishing during a scenario: at a fixed rate (open loop: the schedule
//! does not wait for the server) or closed loop (at most `window` messages
//! not yet received by every subscriber). Every message carries its send
//! time and a sequence number; every publish call is timed.

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
    /// Closed loop: publish while fewer than `window` messages are still on
    /// their way to some subscriber.
    Window(u64),
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
}

/// What one phase of publishing did.
#[derive(Clone, Debug, Default)]
pub struct Published {
    /// Messages the server accepted.
    pub accepted: u64,
    /// Publish calls refused or failed.
    pub failed: u64,
    pub first_error: Option<String>,
    /// Duration of each accepted publish call.
    pub calls: Latency,
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
        }
    }

    /// The last sequence number published (0: none yet).
    pub fn last_seq(&self) -> u64 {
        self.seq.load(Relaxed)
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
        let tasks: Vec<_> = (0..self.connections)
            .map(|_| {
                let templates = self.templates.clone();
                let addr = self.addr.clone();
                let channels = self.channels.clone();
                let size = self.size;
                let seq = self.seq.clone();
                let claimed = claimed.clone();
                let result = result.clone();
                let mut done = done.clone();
                let mut stop = stop.clone();
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
                                let in_flight = seq.load(Relaxed).saturating_sub(*done.borrow());
                                if in_flight < window {
                                    claimed.fetch_add(1, Relaxed);
                                    break;
                                }
                                let _ = tokio::time::timeout_at(end, done.changed()).await;
                            },
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
                        let began = Instant::now();
                        let answer = conn
                            .request(&templates.publish_method, &path, body.as_bytes())
                            .await;
                        let took = began.elapsed().as_micros() as u64;
                        let mut result = result.lock();
                        match answer {
                            Ok((status, _)) if (200..300).contains(&status) => {
                                result.accepted += 1;
                                result.calls.record(took);
                            }
                            Ok((status, body)) => {
                                result.failed += 1;
                                result.first_error.get_or_insert_with(|| {
                                    format!("{status} {}", String::from_utf8_lossy(&body))
                                });
                            }
                            Err(error) => {
                                result.failed += 1;
                                result
                                    .first_error
                                    .get_or_insert_with(|| format!("{error:#}"));
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
