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
//! - Its queue is bounded per site (`timeline.expander_queue_per_site`
//!   shard messages), so one site's flood never costs another site its
//!   deliveries. Past the bound the node is hopelessly behind on that site:
//!   its new shard messages are dropped and counted
//!   (`herald_timeline_expander_dropped_total`) rather than memory growing
//!   without end, and never silently: once the site's queued messages are
//!   expanded, every local timeline of a shard that lost messages gets a
//!   gap notice ([`Message::gap`]), which its subscribers' clients see as
//!   `recovered: false` (timeline offsets skip by design, so they could not
//!   see the gap themselves). The dropped messages stay in the shard's
//!   history, where a resume with `since` finds them.
//! - While a site has dropped messages not yet announced, all its new shard
//!   messages are dropped too: no timeline can receive a message after the
//!   gap before it hears of the gap.

use std::{
    collections::{HashMap, VecDeque},
    fmt::Write as _,
    sync::Arc,
};

use parking_lot::Mutex;
use prometheus::IntCounter;
use tokio::sync::Notify;

use super::{payload::ShardPayload, shard_channel, shard_of};
use crate::{ChannelKey, Handoff, Hub, Message, Position, Subscriber};

/// Recipients looked up between two yields.
const CHUNK: usize = 1024;
/// The default of `timeline.expander_queue_per_site`.
pub const DEFAULT_QUEUE_PER_SITE: usize = 65_536;

pub(crate) struct Expander {
    queue: Mutex<Queue>,
    wake: Notify,
    /// Shard messages of one site that may wait.
    per_site: usize,
    /// The deployment's shard count, to find a timeline's shard.
    shards: u32,
    /// Shard messages dropped because their site's queue was full.
    dropped: IntCounter,
    /// Gap notices handed to local timelines.
    gaps: IntCounter,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Item>,
    /// Sites with shard messages queued or dropped; an entry lives only
    /// while its site has something waiting.
    sites: HashMap<Box<str>, Backlog>,
}

enum Item {
    Shard(Arc<Message>),
    /// Tell the site's timelines about the shard messages it lost.
    Gaps(Box<str>),
}

#[derive(Default)]
struct Backlog {
    /// The site's shard messages in the queue.
    queued: usize,
    /// Set while the site overflows (its `Item::Gaps` is queued): each
    /// shard channel that lost messages, with the last position lost.
    lost: Option<HashMap<ChannelKey, Position>>,
}

impl Expander {
    pub fn new(per_site: usize, shards: u32, dropped: IntCounter, gaps: IntCounter) -> Self {
        Self {
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
            per_site: per_site.max(1),
            shards,
            dropped,
            gaps,
        }
    }

    /// Expands queued shard messages until the process ends.
    pub async fn run(self: Arc<Self>, hub: Hub, expanded: IntCounter) {
        let mut name = String::with_capacity(64);
        loop {
            let next = self.next();
            match next {
                None => self.wake.notified().await,
                Some(Next::Shard(message)) => expand(&hub, &message, &mut name, &expanded).await,
                Some(Next::Gaps(site, lost)) => self.announce_gaps(&hub, &site, &lost).await,
            }
        }
    }

    fn next(&self) -> Option<Next> {
        let mut queue = self.queue.lock();
        let item = queue.items.pop_front()?;
        Some(match item {
            Item::Shard(message) => {
                let site = message.channel.site();
                if let Some(backlog) = queue.sites.get_mut(site) {
                    backlog.queued -= 1;
                    if backlog.queued == 0 && backlog.lost.is_none() {
                        queue.sites.remove(site);
                    }
                }
                Next::Shard(message)
            }
            Item::Gaps(site) => {
                // Everything the site queued before it overflowed came
                // before this item, and nothing was queued since: the entry
                // goes, and the site's next shard message is queued again.
                let lost = queue
                    .sites
                    .remove(&site)
                    .and_then(|backlog| backlog.lost)
                    .unwrap_or_default();
                Next::Gaps(site, lost)
            }
        })
    }

    /// Hands a gap notice to every local timeline of `site` whose shard
    /// lost messages, at the shard's last lost position.
    async fn announce_gaps(&self, hub: &Hub, site: &str, lost: &HashMap<ChannelKey, Position>) {
        let timelines =
            hub.channels_where(|channel| channel.site() == site && channel.timeline().is_some());
        let mut key = String::new();
        let mut announced = 0u64;
        for (i, timeline) in timelines.into_iter().enumerate() {
            let Some((_, user)) = timeline.timeline() else {
                continue;
            };
            let shard = shard_channel(site, shard_of(site, user, self.shards, &mut key));
            if let Some(&position) = lost.get(&shard) {
                hub.deliver(&Arc::new(Message::gap(timeline, position)));
                announced += 1;
            }
            if i % CHUNK == CHUNK - 1 {
                tokio::task::yield_now().await;
            }
        }
        self.gaps.inc_by(announced);
        tracing::warn!(
            site,
            shards = lost.len(),
            timelines = announced,
            "timeline expander fell behind and dropped shard messages; their timelines were told recovered: false"
        );
    }
}

enum Next {
    Shard(Arc<Message>),
    Gaps(Box<str>, HashMap<ChannelKey, Position>),
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
    fn deliver(&self, _slot: u32, message: &Arc<Message>) -> Handoff {
        {
            let mut queue = self.queue.lock();
            let site = message.channel.site();
            let backlog = match queue.sites.get_mut(site) {
                Some(backlog) => backlog,
                None => queue.sites.entry(site.into()).or_default(),
            };
            if let Some(lost) = &mut backlog.lost {
                lost.insert(message.channel.clone(), message.position);
                self.dropped.inc();
                return Handoff::Queued;
            }
            if backlog.queued >= self.per_site {
                backlog.lost = Some(HashMap::from([(message.channel.clone(), message.position)]));
                queue.items.push_back(Item::Gaps(site.into()));
                self.dropped.inc();
            } else {
                backlog.queued += 1;
                queue.items.push_back(Item::Shard(message.clone()));
            }
        }
        self.wake.notify_one();
        Handoff::Queued
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Epoch, Metrics, TimelineKind, registry::Watch, timeline::payload};

    #[derive(Default)]
    struct Recorder(parking_lot::Mutex<Vec<(String, u64, bool)>>);

    impl Subscriber for Recorder {
        fn deliver(&self, _slot: u32, message: &Arc<Message>) -> Handoff {
            self.0.lock().push((
                message.channel.name().to_string(),
                message.offset(),
                message.is_gap(),
            ));
            Handoff::Queued
        }
    }

    fn shard_message(site: &str, offset: u64, users: &str) -> Arc<Message> {
        let position = Position {
            epoch: Epoch::from_u64(1),
            offset,
        };
        let data = payload::encode(TimelineKind::User, users.as_bytes(), b"{}");
        Arc::new(Message::new(shard_channel(site, 0), position, data))
    }

    /// With one shard and a bound of 2 per site: site `a` overflows while
    /// nothing is expanded; `b` does not lose its message to `a`'s flood,
    /// and `a`'s timelines hear of the gap once `a`'s queued messages are out.
    #[tokio::test]
    async fn an_overflowing_site_tells_its_timelines_and_spares_the_others() {
        let hub = Hub::new(Metrics::default());
        let metrics = Metrics::default();
        let expander = Arc::new(Expander::new(
            2,
            1,
            metrics.timeline_dropped.clone(),
            metrics.timeline_gaps.clone(),
        ));
        let a = Arc::new(Recorder::default());
        let b = Arc::new(Recorder::default());
        let channel = |key: &str| ChannelKey::parse(key).unwrap();
        let _a1 = hub.subscribe(channel("a/user:1"), a.clone(), 0, Watch::No);
        let _b1 = hub.subscribe(channel("b/user:1"), b.clone(), 0, Watch::No);
        for offset in 1..=5 {
            expander.deliver(0, &shard_message("a", offset, "1"));
        }
        expander.deliver(0, &shard_message("b", 1, "1"));
        expander.deliver(0, &shard_message("a", 6, "1"));
        assert_eq!(metrics.timeline_dropped.get(), 4, "a's 3, 4, 5 and 6");

        let run = tokio::spawn(expander.clone().run(hub.clone(), metrics.timeline_expanded));
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while a.0.lock().len() < 3 || b.0.lock().is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "nothing expanded");
            tokio::task::yield_now().await;
        }
        assert_eq!(
            *a.0.lock(),
            [
                ("user:1".to_string(), 1, false),
                ("user:1".to_string(), 2, false),
                ("user:1".to_string(), 6, true),
            ]
        );
        assert_eq!(*b.0.lock(), [("user:1".to_string(), 1, false)]);
        assert_eq!(metrics.timeline_gaps.get(), 1);
        // Once told, the site queues again.
        expander.deliver(0, &shard_message("a", 7, "1"));
        while a.0.lock().len() < 4 {
            assert!(tokio::time::Instant::now() < deadline, "7 not expanded");
            tokio::task::yield_now().await;
        }
        assert_eq!(a.0.lock()[3], ("user:1".to_string(), 7, false));
        run.abort();
    }
}
