//! The expander: turns each timeline shard message this node receives into
//! messages on the `user:`/`replies:` channels of its local subscribers.
//!
//! Invariants:
//! - It is a hub subscriber like a connection: `deliver` only queues and
//!   wakes, so engines hand it shard messages without waiting.
//! - One task expands everything, in arrival order, so each timeline sees
//!   its shard's messages in offset order.
//! - It yields every [`CHUNK`] recipients: a million-recipient shard message
//!   never holds the runtime away from other channels.
//! - Its queue is bounded ([`MAX_QUEUED`] shard messages). Past it the node
//!   is hopelessly behind, and a new shard message is dropped and counted
//!   (`herald_timeline_expander_dropped_total`) rather than memory growing
//!   without end; the message stays in the shard's history, so its users
//!   get it back when they resume with `since`.

use std::{collections::VecDeque, fmt::Write as _, sync::Arc};

use parking_lot::Mutex;
use prometheus::IntCounter;
use tokio::sync::Notify;

use super::payload::ShardPayload;
use crate::{ChannelKey, Hub, Message, Subscriber};

/// Recipients looked up between two yields.
const CHUNK: usize = 1024;
/// Shard messages that may wait for expansion.
const MAX_QUEUED: usize = 65_536;

pub(crate) struct Expander {
    queue: Mutex<VecDeque<Arc<Message>>>,
    wake: Notify,
    /// Shard messages dropped because the queue was full.
    dropped: IntCounter,
}

impl Expander {
    pub fn new(dropped: IntCounter) -> Self {
        Self {
            queue: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            dropped,
        }
    }

    /// Expands queued shard messages until the process ends.
    pub async fn run(self: Arc<Self>, hub: Hub, expanded: IntCounter) {
        let mut name = String::with_capacity(64);
        loop {
            let next = self.queue.lock().pop_front();
            let Some(message) = next else {
                self.wake.notified().await;
                continue;
            };
            expand(&hub, &message, &mut name, &expanded).await;
        }
    }
}

/// Delivers `shard_message` to every local subscriber of its recipients'
/// timelines, each as a message of that timeline with the shard's position.
async fn expand(hub: &Hub, shard_message: &Message, name: &mut String, expanded: &IntCounter) {
    let Some(payload) = ShardPayload::decode(&shard_message.data) else {
        tracing::warn!(channel = ?shard_message.channel, "unreadable timeline shard message");
        return;
    };
    let data = payload.data(&shard_message.data);
    // `<site>/<kind>:` once; each recipient only swaps the id after it.
    name.clear();
    let _ = write!(
        name,
        "{}/{}:",
        shard_message.channel.site(),
        payload.kind.as_str()
    );
    let prefix = name.len();
    for (i, user) in payload.recipients().enumerate() {
        name.truncate(prefix);
        name.push_str(user);
        if hub.has_subscribers(name) {
            let channel = ChannelKey::trusted(name.clone());
            let message = Arc::new(Message::new(channel, shard_message.position, data.clone()));
            hub.deliver(&message);
            expanded.inc();
        }
        if i % CHUNK == CHUNK - 1 {
            tokio::task::yield_now().await;
        }
    }
}

impl Subscriber for Expander {
    fn deliver(&self, _slot: u32, message: &Arc<Message>) {
        {
            let mut queue = self.queue.lock();
            if queue.len() >= MAX_QUEUED {
                self.dropped.inc();
                return;
            }
            queue.push_back(message.clone());
        }
        self.wake.notify_one();
    }
}
