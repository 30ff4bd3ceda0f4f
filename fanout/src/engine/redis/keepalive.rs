//! Keeps the position of every channel this node watches alive in Redis.
//!
//! A channel's meta hash (its epoch and newest offset) expires with its
//! history, `history.ttl_secs` after the last publish. A channel that
//! subscribers watch but nobody publishes to would then come back on a new
//! epoch, and every client would be told `recovered: false` for nothing (the
//! memory engine keeps a watched channel's epoch). So one task per node
//! renews the meta's TTL of the channels it is subscribed to upstream, every
//! third of the TTL, in pipelined batches. The history itself still ages out.

use std::{sync::Arc, time::Duration};

use fred::{
    interfaces::ClientLike,
    types::{ClusterHash, CustomCommand, Value},
};
use futures_util::future::join_all;

use super::RedisEngine;

/// `EXPIRE` commands issued together (fred pipelines them on one connection).
const BATCH: usize = 1000;

/// The shortest pause between two rounds, whatever the TTL.
const MIN_PERIOD: Duration = Duration::from_millis(100);

pub(super) async fn run(engine: Arc<RedisEngine>) {
    let ttl = engine.config.history.ttl.max(Duration::from_secs(1));
    let mut ticks = tokio::time::interval((ttl / 3).max(MIN_PERIOD));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if engine.health.reachable() {
            engine.renew_watched(ttl).await;
        }
    }
}

impl RedisEngine {
    /// Renews the meta's TTL of every channel subscribed upstream.
    async fn renew_watched(&self, ttl: Duration) {
        let client = self.client.with_options(&self.options);
        let seconds = ttl.as_secs() as i64;
        // A command of its own: fred's `EXPIRE` needs its keys feature.
        let expire = CustomCommand::new_static("EXPIRE", ClusterHash::FirstKey, false);
        let channels = self.channels.active();
        for batch in channels.chunks(BATCH) {
            let renewals = batch.iter().map(|(channel, _)| {
                let meta = self.keyspace.keys(channel).meta;
                let (client, expire) = (&client, expire.clone());
                async move {
                    let args = vec![Value::from(meta), Value::Integer(seconds)];
                    client.custom::<i64, _>(expire, args).await
                }
            });
            // A failed renewal is tried again next round, well before the
            // key can expire; a Redis that is down is the health task's news.
            if let Some(Err(error)) = join_all(renewals).await.into_iter().find(Result::is_err) {
                tracing::debug!(%error, "renewing watched channels' positions in Redis failed");
                return;
            }
        }
    }
}
