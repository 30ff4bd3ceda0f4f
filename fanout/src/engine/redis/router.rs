//! The router: everything from Redis reaches the hub through it, so that
//! each channel is delivered in offset order with no hole: live messages,
//! gap fills, and the catch-up after a lag or a reconnect.
//!
//! Invariants:
//! - Live messages are taken in the order Redis sent them, by one task.
//! - A channel that needs history (a gap on the live path, a lag, being
//!   subscribed again after a reconnect) is *filling*: its fill runs as a
//!   task of its own, at most [`MAX_FILLS`] at once, and only that fill
//!   delivers to the channel. Its live messages are held meanwhile and
//!   delivered after the fill, skipping what the fill delivered. Other
//!   channels' live messages go on at once: a channel whose history cannot
//!   be read delays nobody else.
//! - Held messages are bounded ([`HELD_LIMIT`] per channel); past that they
//!   are dropped and the channel is filled once more, since history has them.

use std::{
    collections::{HashMap, VecDeque, hash_map::Entry},
    sync::Arc,
    time::Duration,
};

use fred::{interfaces::EventInterface, types::Message as RedisMessage};
use tokio::{
    sync::broadcast::error::{RecvError, TryRecvError},
    task::{Id, JoinError, JoinSet},
};

use super::{RedisEngine, parse_payload, state::Live};
use crate::{ChannelKey, Flushes, Message};

/// Tries of a history read that fills a gap, and the pause between them
/// (together longer than a Redis restart takes to load a modest AOF).
const FILL_ATTEMPTS: u32 = 50;
const FILL_RETRY: Duration = Duration::from_millis(100);
/// Fills running at once; more wait their turn. Enough that a few channels
/// whose reads fail leave room for the rest, few enough that a catch-up of
/// every channel after a lag does not flood Redis.
const MAX_FILLS: usize = 16;
/// Live messages held per filling channel.
const HELD_LIMIT: usize = 4096;

/// Messages already received that are handed to the hub before one flush
/// of their subscribers (as the memory engine's delivery workers do).
const MESSAGES_PER_FLUSH: usize = 16;

pub(super) async fn run(engine: Arc<RedisEngine>) {
    let mut messages = engine.subscriber.message_rx();
    let mut reconnects = engine.subscriber.reconnect_rx();
    let mut router = Router::new(engine.clone());
    loop {
        let catch_up = engine.channels.catch_up.notified();
        tokio::select! {
            // Reconnects first: the channels become inactive before anything
            // else is heard on the new connection.
            biased;
            reconnect = reconnects.recv() => match reconnect {
                Ok(_) | Err(RecvError::Lagged(_)) => {
                    engine.redis_metrics.reconnects.inc();
                    tracing::warn!("the Redis pub/sub connection was lost and is back; subscribing every channel again");
                    engine.channels.lose_upstream();
                }
                Err(RecvError::Closed) => return,
            },
            Some(ended) = router.fills.join_next_with_id() => router.fill_ended(ended),
            () = catch_up => {
                for channel in engine.channels.take_catch_ups() {
                    router.fill(channel);
                }
            }
            message = messages.recv() => {
                // What else already waits is handed over before one flush,
                // so that a subscriber the hub writes to itself gets it in
                // one write.
                let mut flushes = Flushes::new();
                let mut next = Some(message);
                let mut handled = 0;
                while let Some(received) = next.take() {
                    match received {
                        Ok(message) => router.on_message(message, &mut flushes),
                        Err(RecvError::Lagged(missed)) => router.lagged(missed),
                        Err(RecvError::Closed) => return,
                    }
                    handled += 1;
                    if handled == MESSAGES_PER_FLUSH {
                        break;
                    }
                    next = match messages.try_recv() {
                        Ok(message) => Some(Ok(message)),
                        Err(TryRecvError::Empty) => None,
                        Err(TryRecvError::Lagged(missed)) => Some(Err(RecvError::Lagged(missed))),
                        Err(TryRecvError::Closed) => Some(Err(RecvError::Closed)),
                    };
                }
                flushes.flush_yielding().await;
            }
        }
    }
}

/// The router's own state: the channels being filled.
struct Router {
    engine: Arc<RedisEngine>,
    /// Channels with a fill running or waiting for a slot.
    filling: HashMap<ChannelKey, Filling>,
    /// Channels waiting for a slot, in the order they asked.
    waiting: VecDeque<ChannelKey>,
    /// The running fills; each ends with whether it read history through.
    fills: JoinSet<(ChannelKey, bool)>,
    /// Which channel each running fill is for, so that one that panicked
    /// does not leave its channel filling for ever.
    running: HashMap<Id, ChannelKey>,
}

/// A channel being filled.
#[derive(Default)]
struct Filling {
    /// Live messages that arrived meanwhile, in order.
    held: Vec<Message>,
    /// Whether the channel must be filled once more after this fill (it
    /// was asked for again while running, or held messages were dropped).
    again: bool,
    /// Whether its fill runs (rather than waits for a slot).
    running: bool,
}

impl Router {
    fn new(engine: Arc<RedisEngine>) -> Self {
        Self {
            engine,
            filling: HashMap::new(),
            waiting: VecDeque::new(),
            fills: JoinSet::new(),
            running: HashMap::new(),
        }
    }

    /// The pub/sub receiver missed `missed` messages: every active channel
    /// is filled from history.
    fn lagged(&mut self, missed: u64) {
        tracing::warn!(
            missed,
            "Redis pub/sub receiver lagged; refilling from history"
        );
        self.engine.redis_metrics.lagged.inc();
        for (channel, _) in self.engine.channels.active() {
            self.fill(channel);
        }
    }

    /// Takes one message from Redis: hands it to the hub now (its
    /// subscribers joining `flushes`), or holds it while its channel fills.
    fn on_message(&mut self, message: RedisMessage, flushes: &mut Flushes) {
        let engine = &self.engine;
        engine.redis_metrics.received.inc();
        let Some(name) = engine.keyspace.channel_of(&message.channel) else {
            return;
        };
        let Ok(channel) = ChannelKey::parse(name) else {
            return;
        };
        let Some((position, data)) = message.value.into_bytes().and_then(parse_payload) else {
            tracing::warn!(channel = %channel, "unreadable message on a Herald pub/sub channel");
            return;
        };
        if let Some(filling) = self.filling.get_mut(&channel) {
            if filling.held.len() < HELD_LIMIT {
                filling.held.push(Message::new(channel, position, data));
            } else {
                filling.again = true;
            }
            return;
        }
        match engine.channels.live(&channel, position) {
            Live::NotWatched | Live::Duplicate => {}
            Live::Deliver => {
                let message = Arc::new(Message::new(channel, position, data));
                engine.hub.hand_over(&message, flushes);
            }
            behind @ (Live::Gap { .. } | Live::Behind) => {
                if behind != Live::Behind {
                    engine.redis_metrics.gaps_detected.inc();
                }
                self.fill(channel.clone());
                if let Some(filling) = self.filling.get_mut(&channel) {
                    filling.held.push(Message::new(channel, position, data));
                }
            }
        }
    }

    /// Fills `channel` from its last delivered position, now or once a
    /// slot is free; once more after the current fill if one runs.
    fn fill(&mut self, channel: ChannelKey) {
        match self.filling.entry(channel) {
            Entry::Occupied(mut entry) => {
                let filling = entry.get_mut();
                filling.again |= filling.running;
            }
            Entry::Vacant(entry) => {
                self.waiting.push_back(entry.key().clone());
                entry.insert(Filling::default());
            }
        }
        self.start_waiting();
    }

    fn start_waiting(&mut self) {
        while self.fills.len() < MAX_FILLS {
            let Some(channel) = self.waiting.pop_front() else {
                return;
            };
            let Some(filling) = self.filling.get_mut(&channel) else {
                continue;
            };
            filling.running = true;
            let engine = self.engine.clone();
            let task = channel.clone();
            let handle = self.fills.spawn(async move {
                let through = engine.fill(&task).await;
                (task, through)
            });
            self.running.insert(handle.id(), channel);
        }
    }

    fn fill_ended(&mut self, ended: Result<(Id, (ChannelKey, bool)), JoinError>) {
        let (channel, through) = match ended {
            Ok((id, (channel, through))) => {
                self.running.remove(&id);
                (channel, through)
            }
            Err(error) => {
                tracing::error!(%error, "a history fill failed");
                match self.running.remove(&error.id()) {
                    Some(channel) => (channel, false),
                    None => return,
                }
            }
        };
        let Some(mut filling) = self.filling.remove(&channel) else {
            return;
        };
        if through && filling.again {
            filling.again = false;
            filling.running = false;
            self.filling.insert(channel.clone(), filling);
            self.waiting.push_back(channel);
            self.start_waiting();
            return;
        }
        let mut held = filling.held.into_iter();
        while let Some(message) = held.next() {
            match self.engine.channels.live(&channel, message.position) {
                Live::NotWatched | Live::Duplicate => {}
                Live::Deliver => self.engine.deliver(message),
                // Subscribed again meanwhile: its catch-up comes first, and
                // this message and the rest wait for it.
                Live::Behind => {
                    self.fill(channel.clone());
                    if let Some(filling) = self.filling.get_mut(&channel) {
                        filling.held.push(message);
                        filling.held.extend(held);
                    }
                    return;
                }
                Live::Gap { last } => {
                    // History was just read through its end (or could not
                    // be read at all): what is missing is not to be had, so
                    // go on from here rather than hold the channel back.
                    if through {
                        tracing::warn!(
                            channel = %channel,
                            missing_from = last.offset + 1,
                            missing_to = message.offset() - 1,
                            "history no longer holds messages a gap needs"
                        );
                    }
                    self.engine.channels.delivered(&channel, message.position);
                    self.engine.deliver(message);
                }
            }
        }
        self.start_waiting();
    }
}

impl RedisEngine {
    /// Delivers what history holds after the channel's last delivered
    /// position (all of it when nothing was delivered yet). Whether history
    /// could be read: a failing read is tried again for a while (Redis may
    /// just be coming back) before the gap is given up.
    async fn fill(&self, channel: &ChannelKey) -> bool {
        let Some(last) = self.channels.last(channel) else {
            // Nobody here watches it any more.
            return true;
        };
        let mut attempt = 0;
        let read = loop {
            match self
                .read(channel, self.keyspace.keys(channel), last.map(|l| l.offset))
                .await
            {
                Ok(read) => break read,
                Err(error) if attempt < FILL_ATTEMPTS => {
                    attempt += 1;
                    tracing::debug!(channel = %channel, %error, attempt, "history read for a gap failed; retrying");
                    tokio::time::sleep(FILL_RETRY).await;
                }
                Err(error) => {
                    tracing::error!(channel = %channel, %error, "cannot read history to fill a gap; clients miss messages");
                    return false;
                }
            }
        };
        let same_epoch = last.is_some_and(|last| read.position.epoch == last.epoch);
        let messages = if same_epoch || last.is_none() {
            read.messages
        } else {
            // The epoch changed while we were away: the old history is gone.
            // Hand over the new epoch's history from its start.
            match self.read(channel, self.keyspace.keys(channel), None).await {
                Ok(read) => read.messages,
                Err(error) => {
                    tracing::error!(channel = %channel, %error, "cannot read the new epoch's history; clients miss messages");
                    return false;
                }
            }
        };
        let mut after = match last {
            Some(last) if same_epoch => last.offset,
            _ => 0,
        };
        for message in messages {
            let offset = message.offset();
            if offset <= after || !self.channels.advance(channel, message.position) {
                continue;
            }
            if offset != after + 1 {
                tracing::warn!(
                    channel = %channel,
                    missing_from = after + 1,
                    missing_to = offset - 1,
                    "history no longer holds messages a gap needs"
                );
            }
            after = offset;
            self.redis_metrics.gap_messages_filled.inc();
            self.hub.deliver(&message);
        }
        true
    }
}
