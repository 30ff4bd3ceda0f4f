//! Whether Redis is reachable right now, so that publishes fail at once
//! while it is not (fred keeps a command waiting until its timeout when the
//! connection died under it, which would stall every publisher).
//!
//! A connection error marks Redis unreachable at once; a reconnect, or a
//! PING every [`PERIOD`], marks it reachable again. PINGs that go unanswered
//! for the command timeout mark it unreachable (Redis hangs without closing
//! the connection); one late PING does not, since on a loaded machine it
//! is more often the node's own scheduling than Redis.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use fred::{
    error::ErrorKind,
    interfaces::{ClientLike, EventInterface},
};
use tokio::sync::broadcast::error::RecvError;

use super::RedisEngine;

const PERIOD: Duration = Duration::from_millis(250);

#[derive(Debug)]
pub(crate) struct Health {
    reachable: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            reachable: AtomicBool::new(true),
        }
    }
}

impl Health {
    pub fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    fn set(&self, reachable: bool) {
        let was = self.reachable.swap(reachable, Ordering::Relaxed);
        if was != reachable {
            if reachable {
                tracing::info!("Redis is reachable again");
            } else {
                tracing::warn!("Redis is unreachable: publishes answer 503 until it is back");
            }
        }
    }
}

pub(super) async fn run(engine: Arc<RedisEngine>) {
    let mut errors = engine.client.error_rx();
    let mut reconnects = engine.client.reconnect_rx();
    let mut ticks = tokio::time::interval(PERIOD);
    // Since when PINGs have been timing out, if they are.
    let mut slow_since: Option<Instant> = None;
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let options = fred::prelude::Options {
        fail_fast: true,
        max_attempts: Some(1),
        timeout: Some(PERIOD),
        ..fred::prelude::Options::default()
    };
    loop {
        tokio::select! {
            error = errors.recv() => match error {
                Ok(_) | Err(RecvError::Lagged(_)) => engine.health.set(false),
                Err(RecvError::Closed) => return,
            },
            // Back at once after a reconnect, so that reads stop being
            // refused for a stale flag. Nothing orders this against the
            // router's own reconnect listener: its catch-up may read
            // history before the flag is back, and then the refused read
            // is retried (router.rs, `fill`), which is what makes it work.
            reconnect = reconnects.recv() => match reconnect {
                Ok(_) | Err(RecvError::Lagged(_)) => engine.health.set(true),
                Err(RecvError::Closed) => return,
            },
            _ = ticks.tick() => {
                let pong: Result<String, _> = engine.client.with_options(&options).ping(None).await;
                match pong {
                    Ok(_) => {
                        slow_since = None;
                        engine.health.set(true);
                    }
                    // A PING that is only late may be a busy machine, not a hung
                    // Redis: the node stays reachable until PINGs have gone
                    // unanswered for as long as any command may take.
                    Err(error) if *error.kind() == ErrorKind::Timeout => {
                        let since = *slow_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= engine.config.command_timeout {
                            engine.health.set(false);
                        }
                    }
                    Err(_) => engine.health.set(false),
                }
            }
        }
    }
}
