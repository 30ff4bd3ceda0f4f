//! Questions one node asks every node, over Redis pub/sub: how many
//! subscribers each has on a site's channels (`occupancy.rs`), for the
//! Pusher REST API's channel-info `GET`s.
//!
//! Every node listens on `<prefix>:ctl` (questions) and
//! `<prefix>:ctl:<node>` (its answers), on a pub/sub connection of its own,
//! which fred subscribes again after a reconnect: these two channels are
//! never refused, unlike a data channel on a Cluster failing over, so the
//! subscription manager's confirmations are not needed here. A question is
//! `{"id":…,"from":…,"site":…,"prefix":…}`; each node answers
//! `{"id":…,"counts":{name: count}}` from its hub. The asking node waits
//! for as many answers as `PUBLISH` reached listeners (on a Cluster, where
//! `PUBLISH` counts one shard's listeners only, as many as there are
//! beating nodes), or for the command timeout, and adds them up.

use std::{
    collections::HashMap,
    sync::{
        Arc, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use fred::{
    clients::SubscriberClient,
    interfaces::{ClientLike, EventInterface, PubsubInterface, SortedSetsInterface},
    types::Message as RedisMessage,
};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::{broadcast::error::RecvError, mpsc};

use super::RedisEngine;
use crate::{
    Error,
    occupancy::{self, Occupancy},
};

/// This node's side of the questions.
pub(super) struct Control {
    /// The pub/sub connection questions and answers arrive on.
    subscriber: SubscriberClient,
    /// Questions asked by this node that wait for answers, by id.
    pending: Mutex<HashMap<u64, mpsc::UnboundedSender<Occupancy>>>,
    next_id: AtomicU64,
}

impl Control {
    pub fn new(subscriber: SubscriberClient) -> Self {
        Self {
            subscriber,
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        }
    }
}

impl RedisEngine {
    fn questions_channel(&self) -> String {
        format!("{}:ctl", self.config.prefix)
    }

    fn answers_channel(&self, node: &str) -> String {
        format!("{}:ctl:{node}", self.config.prefix)
    }

    /// See [`crate::Engine::occupancy`].
    pub(super) async fn occupancy_everywhere(
        &self,
        site: &str,
        prefix: &str,
    ) -> Result<Occupancy, Error> {
        if !self.health.reachable() {
            return Err(Error::Unavailable("Redis is unreachable".into()));
        }
        let id = self.control.next_id.fetch_add(1, Ordering::Relaxed);
        let (answers, mut answered) = mpsc::unbounded_channel();
        self.control.pending.lock().insert(id, answers);
        let _forget = Forget { engine: self, id };
        let question =
            json!({"id": id, "from": self.presence.node, "site": site, "prefix": prefix});
        let unavailable = |e: fred::error::Error| Error::Unavailable(e.to_string());
        let client = self.client.with_options(&self.options);
        let listeners: i64 = client
            .publish(self.questions_channel(), question.to_string())
            .await
            .map_err(unavailable)?;
        let expected = if self.sharded {
            client
                .zcard::<i64, _>(self.keyspace.presence_nodes())
                .await
                .map_err(unavailable)?
        } else {
            listeners
        };
        let mut total = Occupancy::new();
        let mut heard = 0;
        let deadline = tokio::time::Instant::now() + self.config.command_timeout;
        while heard < expected {
            match tokio::time::timeout_at(deadline, answered.recv()).await {
                Ok(Some(counts)) => {
                    occupancy::add(&mut total, counts);
                    heard += 1;
                }
                Ok(None) | Err(_) => break,
            }
        }
        if heard < expected {
            tracing::debug!(
                heard,
                expected,
                "not every node answered how many subscribers it has; counting those that did"
            );
        }
        Ok(total)
    }

    /// Answers a question from its hub, or hands an answer to the question
    /// waiting for it.
    async fn on_control(&self, message: RedisMessage) {
        let Some(text) = message.value.as_str().map(|t| t.to_string()) else {
            return;
        };
        let Ok(body) = serde_json::from_str::<Value>(&text) else {
            return;
        };
        let Some(id) = body.get("id").and_then(Value::as_u64) else {
            return;
        };
        if let Some(counts) = body.get("counts").and_then(Value::as_object) {
            let counts: Occupancy = counts
                .iter()
                .filter_map(|(name, count)| Some((name.clone(), count.as_u64()?)))
                .collect();
            if let Some(waiting) = self.control.pending.lock().get(&id) {
                let _ = waiting.send(counts);
            }
            return;
        }
        let (Some(from), Some(site), Some(prefix)) = (
            body.get("from").and_then(Value::as_str),
            body.get("site").and_then(Value::as_str),
            body.get("prefix").and_then(Value::as_str),
        ) else {
            return;
        };
        let counts = occupancy::local(&self.hub, site, prefix);
        let answer = json!({"id": id, "counts": counts});
        let client = self.client.with_options(&self.options);
        let published: Result<i64, _> = client
            .publish(self.answers_channel(from), answer.to_string())
            .await;
        if let Err(error) = published {
            tracing::debug!(%error, "could not answer another node's question");
        }
    }
}

/// Drops a question's entry however its wait ends.
struct Forget<'a> {
    engine: &'a RedisEngine,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.engine.control.pending.lock().remove(&self.id);
    }
}

/// Listens for questions and answers for as long as the engine lives.
pub(super) async fn run(engine: Weak<RedisEngine>) {
    let Some(strong) = engine.upgrade() else {
        return;
    };
    let subscriber = strong.control.subscriber.clone();
    let channels = vec![
        strong.questions_channel(),
        strong.answers_channel(&strong.presence.node),
    ];
    let mut messages = subscriber.message_rx();
    // fred subscribes these again on every reconnect.
    let _resubscribing = subscriber.manage_subscriptions();
    loop {
        match subscriber.subscribe(channels.clone()).await {
            Ok(()) => break,
            Err(error) => {
                tracing::debug!(%error, "could not subscribe to the nodes' questions; trying again");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    drop(strong);
    loop {
        let message = match messages.recv().await {
            Ok(message) => message,
            // A question missed goes unanswered: its asker counts the others.
            Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => return,
        };
        let Some(engine) = engine.upgrade() else {
            return;
        };
        let engine: Arc<RedisEngine> = engine;
        tokio::spawn(async move { engine.on_control(message).await });
    }
}
