//! The subscription manager: one task per node that keeps the node's
//! upstream subscriptions equal to the channels it has local subscribers
//! for, batching the commands, and letting go of a channel only after it
//! stayed unwanted for the linger time.
//!
//! It is also what subscribes every channel again after the pub/sub
//! connection was lost (the router marks them inactive, see
//! `ChannelTable::lose_upstream`): fred's own `resubscribe_all` cannot be
//! trusted for that, as it reports success for a `SUBSCRIBE` that Redis
//! refused, and sends `SUBSCRIBE` with no channel on a cluster. Here a
//! channel counts as subscribed only once Redis confirmed it, and a refused
//! batch is tried again every [`RETRY`] until Redis takes it, with the node
//! reported not ready meanwhile.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use fred::{
    clients::Pipeline,
    interfaces::{ClientLike, PubsubInterface},
    types::Value,
};
use futures_util::{StreamExt, stream};

use super::RedisEngine;
use crate::ChannelKey;

/// Channels per SUBSCRIBE / UNSUBSCRIBE command.
const BATCH: usize = 500;
/// Pause before trying again after Redis refused a (un)subscribe.
const RETRY: Duration = Duration::from_millis(200);
/// How often a refusal that lasts is logged again at WARN.
const WARN_EVERY: Duration = Duration::from_secs(30);
/// Batches subscribed at once on a cluster, where they go to different
/// primaries: one primary that is failing over must not hold up the others.
const CLUSTER_CONCURRENCY: usize = 16;

pub(super) async fn run(engine: Arc<RedisEngine>) {
    let mut refusals = Refusals::default();
    // The connection generation whose subscriptions were all restored.
    let mut restored = engine.channels.generation();
    loop {
        let changed = engine.channels.changed.notified();
        let plan = engine.channels.plan(engine.config.linger);
        let generation = engine.channels.generation();
        let mut failure = None;
        let concurrency = if engine.sharded {
            CLUSTER_CONCURRENCY
        } else {
            // One connection, and replies matched by order: one at a time.
            1
        };
        let mut subscribes = stream::iter(engine.batches(plan.subscribe))
            .map(|batch| {
                let engine = &engine;
                async move {
                    // Subscribed first, position read second: whatever is
                    // published after the position arrives live.
                    let subscribed = match engine.upstream(&batch, true).await {
                        Ok(()) => engine.positions(&batch).await,
                        Err(error) => Err(crate::Error::Unavailable(error.to_string())),
                    };
                    (batch, subscribed)
                }
            })
            .buffer_unordered(concurrency);
        while let Some((batch, subscribed)) = subscribes.next().await {
            match subscribed {
                Ok(positions) => {
                    let batch: Vec<_> = batch.into_iter().zip(positions).collect();
                    engine.channels.mark_active(&batch, generation);
                }
                Err(error) => {
                    engine.redis_metrics.subscribe_failures.inc();
                    failure = Some((error.to_string(), batch.len()));
                }
            }
        }
        drop(subscribes);
        for batch in engine.batches(plan.unsubscribe) {
            match engine.upstream(&batch, false).await {
                Ok(()) => engine.channels.mark_inactive(&batch),
                Err(error) => {
                    tracing::warn!(%error, channels = batch.len(), "Redis unsubscribe failed; retrying");
                    engine.channels.restore_active(&batch, generation);
                    failure.get_or_insert((error.to_string(), 0));
                }
            }
        }
        match &failure {
            Some((error, channels)) if *channels > 0 => refusals.failed(error, *channels),
            _ => refusals.succeeded(),
        }
        if failure.is_none() && restored != generation && engine.channels.generation() == generation
        {
            // Every channel wanted here is subscribed on the connection that
            // is up now: the resubscribe after a reconnect is complete.
            restored = generation;
            engine.redis_metrics.resubscribes.inc();
        }
        let wait = if failure.is_some() {
            Some(RETRY)
        } else {
            plan.next_deadline
                .map(|due| due.saturating_duration_since(Instant::now()))
        };
        match wait {
            Some(wait) => {
                let _ = tokio::time::timeout(wait, changed).await;
            }
            None => changed.await,
        }
    }
}

/// Logs subscribe refusals: at WARN when they start and every
/// [`WARN_EVERY`] while they last, and once when they end.
#[derive(Default)]
struct Refusals {
    /// When the current run of refusals started, and when it was last logged.
    since: Option<(Instant, Instant)>,
}

impl Refusals {
    fn failed(&mut self, error: &str, channels: usize) {
        let now = Instant::now();
        match &mut self.since {
            Some((_, logged)) if now.duration_since(*logged) < WARN_EVERY => {
                tracing::debug!(%error, channels, "Redis subscribe failed again; retrying");
            }
            Some((started, logged)) => {
                *logged = now;
                tracing::warn!(
                    %error,
                    channels,
                    failing_for_s = now.duration_since(*started).as_secs(),
                    "Redis still refuses to subscribe: this node misses what is published to these channels, and /readyz answers 503"
                );
            }
            None => {
                self.since = Some((now, now));
                tracing::warn!(
                    %error,
                    channels,
                    "Redis subscribe failed; retrying. Until it succeeds this node misses what is published to these channels, and /readyz answers 503"
                );
            }
        }
    }

    fn succeeded(&mut self) {
        if let Some((started, _)) = self.since.take() {
            tracing::info!(
                failed_for_ms = started.elapsed().as_millis() as u64,
                "Redis subscriptions restored; catching up from history"
            );
        }
    }
}

impl RedisEngine {
    /// Groups channels into commands: by partition on a cluster (one
    /// `SSUBSCRIBE` may only name channels of one slot), in batches of
    /// [`BATCH`] everywhere.
    fn batches(&self, channels: Vec<ChannelKey>) -> Vec<Vec<ChannelKey>> {
        let mut groups: BTreeMap<u16, Vec<ChannelKey>> = BTreeMap::new();
        for channel in channels {
            let key = if self.sharded {
                self.keyspace.partition(channel.as_str())
            } else {
                0
            };
            groups.entry(key).or_default().push(channel);
        }
        groups
            .into_values()
            .flat_map(|group| {
                group
                    .chunks(BATCH)
                    .map(<[ChannelKey]>::to_vec)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// (Un)subscribes `channels` upstream; `Ok` only once Redis took it.
    async fn upstream(
        &self,
        channels: &[ChannelKey],
        subscribe: bool,
    ) -> Result<(), fred::error::Error> {
        let names: Vec<String> = channels
            .iter()
            .map(|c| self.keyspace.keys(c).pubsub)
            .collect();
        match (self.sharded, subscribe) {
            (false, true) => self.subscribe_confirmed(names).await,
            (false, false) => self.subscriber.unsubscribe(names).await,
            // fred waits for SSUBSCRIBE's own reply (to follow redirections),
            // so a refusal comes back here.
            (true, true) => self.subscriber.ssubscribe(names).await,
            (true, false) => self.subscriber.sunsubscribe(names).await,
        }
    }

    /// Sends `SUBSCRIBE` and reports whether Redis took it. fred does not
    /// wait for SUBSCRIBE's reply (its confirmations arrive out of band), so
    /// a refusal (an ACL `NOPERM`, say) would pass unseen. A `PING` with a
    /// token of its own is written right behind it in one pipeline, before
    /// any reply is read: Redis answers it only after the SUBSCRIBE, and a
    /// refusal is taken as the PING's reply. A reply without the token is
    /// one out of step: report a failure, and the next round tries again.
    async fn subscribe_confirmed(&self, names: Vec<String>) -> Result<(), fred::error::Error> {
        let token = format!("herald-{:016x}", rand::random::<u64>());
        let pipeline = Pipeline::from(self.subscriber.clone());
        pipeline.subscribe(names).await?;
        pipeline.ping::<Value>(Some(token.clone())).await?;
        let reply: Value = pipeline.last().await?;
        let echoed = reply
            .into_array()
            .iter()
            .any(|part| part.as_str().is_some_and(|s| *s == *token));
        if echoed {
            Ok(())
        } else {
            Err(fred::error::Error::new(
                fred::error::ErrorKind::Unknown,
                "SUBSCRIBE not confirmed (a reply out of step)",
            ))
        }
    }
}
