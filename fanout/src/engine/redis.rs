//! The Redis engine: many Herald nodes share channels, history and recovery.
//!
//! Invariants:
//! - A publish is one Redis function (`scripts.rs`): the offset is assigned,
//!   the message is appended to the channel's stream and published,
//!   atomically. The API answers only after Redis has run it, so an
//!   acknowledged message is in history (as durable as Redis' persistence
//!   makes it). Nothing is written before the append, so a failed append
//!   burns no offset.
//! - A position is never reused for another message. Redis can come back
//!   behind where it was (a restart under `appendfsync everysec`, a failover
//!   to a replica that lagged): each channel's meta records the run id of the
//!   Redis process that wrote it, and the first publish or read of the
//!   channel under another process starts a new epoch, so clients are told
//!   `recovered: false` instead of getting new messages at old offsets. A
//!   channel that Redis shows behind the position this node has already
//!   delivered in the same epoch (the router's, passed as a floor) starts a
//!   new epoch the same way.
//! - A subscriber with no position reads only the channel's position, never
//!   its stream.
//! - What history keeps is [`HistoryConfig::keeps`], applied to every entry
//!   a read returns (entry times are Redis' own clock, as is "now"). The
//!   stream's trimming (`MAXLEN ~` the cap, `XTRIM MINID` by age in
//!   `scripts.rs`) is coarser and later, never sooner: it only gives memory
//!   back.
//! - A channel this node watches keeps its position (and so its epoch) in
//!   Redis while it is quiet: `keepalive.rs` renews the meta's TTL.
//! - Commands fail fast while Redis is unreachable: a publish then answers
//!   503, never 200-and-drop.
//! - A node subscribes upstream to a channel only while it has local
//!   subscribers (one Redis subscription per channel per node), and lets go
//!   after a linger so that churn does not flap.
//! - A subscriber's history read waits until the node's upstream
//!   subscription is active, so "subscribe, then read history" leaves no gap.
//!   Active means Redis confirmed the subscription on the connection that is
//!   up now; after the pub/sub connection is lost every channel is inactive
//!   until the subscription manager subscribed it again.
//! - `/readyz` follows the subscriptions: the node is not ready while a
//!   channel it has subscribers for stays unsubscribed upstream.
//! - Everything from Redis reaches the hub through the router, which
//!   tracks the last offset it delivered per channel and fills any hole
//!   from the stream before delivering past it. Fills run beside the live
//!   path, one per channel at a time, so a channel whose history cannot be
//!   read delays no other channel.

mod control;
mod health;
mod keepalive;
mod keys;
mod metrics;
mod occupancy;
mod presence;
mod replay;
mod router;
mod scripts;
mod state;
mod subscriptions;

use std::{
    sync::{Arc, Weak},
    time::{Duration, Instant},
};

use bytes::Bytes;
use fred::{
    clients::{Client, SubscriberClient},
    interfaces::{ClientLike, FunctionInterface, HashesInterface},
    prelude::{Builder, Config, Options, ReconnectPolicy},
    types::Value,
};
use futures_util::future::{BoxFuture, try_join_all};

pub use metrics::RedisMetrics;

use crate::{
    ChannelKey, ChannelWatcher, Epoch, Error, Hub, Message, Metrics, Position,
    engine::{Engine, History, PublishRequest, Published},
    history::HistoryConfig,
};
use keys::{ChannelKeys, Keyspace};
use state::ChannelTable;

/// How long a channel wanted here may wait for its upstream subscription
/// before the node stops reporting ready: longer than a normal subscribe
/// takes, so that new channels do not make readiness flap.
const UPSTREAM_GRACE: Duration = Duration::from_secs(1);

/// Settings of the Redis engine.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://`, `redis-sentinel://…?sentinelServiceName=…` or `redis-cluster://…` (fred's URL forms).
    pub url: String,
    /// Prefix of every key and pub/sub channel.
    pub prefix: String,
    /// Hash-tag partitions: channels are spread over this many tags, so that
    /// resubscribing after a cluster failover is one command per partition.
    pub partitions: u16,
    /// How long a channel stays subscribed upstream after its last local subscriber left.
    pub linger: Duration,
    /// Longest wait for a Redis command before it counts as failed.
    pub command_timeout: Duration,
    pub history: HistoryConfig,
    /// How long a node may go without a heartbeat before its presence
    /// members are removed (`presence.rs`); it beats every third of it.
    pub presence_timeout: Duration,
}

/// The Redis engine. Create it with [`RedisEngine::connect`].
pub struct RedisEngine {
    /// The engine itself, for the tasks its calls start (presence joins).
    me: Weak<RedisEngine>,
    hub: Hub,
    config: RedisConfig,
    keyspace: Keyspace,
    /// Commands: scripts (publish, read). fred pipelines concurrent commands on it.
    client: Client,
    /// The pub/sub connection.
    subscriber: SubscriberClient,
    /// Redis Cluster: sharded pub/sub (`SSUBSCRIBE`/`SPUBLISH`).
    sharded: bool,
    /// Channels with local subscribers, and what the router knows of them.
    channels: ChannelTable,
    /// Whether Redis answers right now; publishes fail at once when not.
    health: health::Health,
    /// Options for every command: fail at once while disconnected, never
    /// retry a function call that may have run, give up after the timeout.
    options: Options,
    /// The Redis functions Herald calls, and their names.
    library: scripts::Library,
    metrics: Metrics,
    redis_metrics: RedisMetrics,
    /// When a new epoch forced by a loss was last logged at WARN: a Redis
    /// restart resets every channel as it is used, and one line a minute
    /// tells the operator as much as thousands would.
    reset_warned: parking_lot::Mutex<Option<Instant>>,
    /// This node's presence members and id (`presence.rs`).
    presence: presence::Presence,
    /// Questions to every node, and their answers (`control.rs`).
    control: control::Control,
    /// Occupancy marks on their way to Redis, in order (`occupancy.rs`).
    occupancy_marks: tokio::sync::mpsc::UnboundedSender<occupancy::Mark>,
}

/// How often a new epoch forced by a loss is logged at WARN, at most.
const RESET_WARN_PERIOD: Duration = Duration::from_secs(60);

impl RedisEngine {
    /// Connects to Redis, loads the scripts and starts the subscription
    /// manager and the router. Fails when Redis cannot be reached now.
    pub async fn connect(
        hub: Hub,
        config: RedisConfig,
        metrics: Metrics,
        redis_metrics: RedisMetrics,
    ) -> Result<Arc<Self>, Error> {
        let unavailable = |e: fred::error::Error| Error::Unavailable(e.to_string());
        let fred_config = Config::from_url(&config.url).map_err(unavailable)?;
        let sharded = fred_config.server.is_clustered();
        let mut builder = Builder::from_config(fred_config);
        builder
            // Reconnect forever: 10 ms, doubling, at most 1 s apart.
            .set_policy(ReconnectPolicy::new_exponential(0, 10, 1000, 2))
            .with_connection_config(|c| {
                c.connection_timeout = config.command_timeout;
                c.internal_command_timeout = config.command_timeout;
            })
            .with_performance_config(|p| {
                // fred's default of 32 drops messages under any burst; the
                // router drains at once, and refills from history on a lag anyway.
                p.broadcast_channel_capacity = 16 * 1024;
                p.default_command_timeout = config.command_timeout;
            });
        let client = builder.build().map_err(unavailable)?;
        let subscriber = builder.build_subscriber_client().map_err(unavailable)?;
        let control = builder.build_subscriber_client().map_err(unavailable)?;
        client.init().await.map_err(unavailable)?;
        subscriber.init().await.map_err(unavailable)?;
        control.init().await.map_err(unavailable)?;
        let options = Options {
            fail_fast: true,
            max_attempts: Some(1),
            timeout: Some(config.command_timeout),
            ..Options::default()
        };
        let (occupancy_marks, marks) = tokio::sync::mpsc::unbounded_channel();
        let engine = Arc::new_cyclic(|me| Self {
            me: me.clone(),
            keyspace: Keyspace::new(&config.prefix, config.partitions),
            hub: hub.clone(),
            client,
            subscriber,
            sharded,
            channels: ChannelTable::default(),
            health: health::Health::default(),
            options,
            library: scripts::library(),
            config,
            metrics,
            redis_metrics,
            reset_warned: parking_lot::Mutex::new(None),
            presence: presence::Presence::new(),
            control: control::Control::new(control),
            occupancy_marks,
        });
        engine.load_library().await?;
        let watcher: Arc<dyn ChannelWatcher> = engine.clone();
        hub.set_watcher(Arc::downgrade(&watcher));
        tokio::spawn(subscriptions::run(engine.clone()));
        tokio::spawn(router::run(engine.clone()));
        tokio::spawn(health::run(engine.clone()));
        tokio::spawn(keepalive::run(engine.clone()));
        let beat = (engine.config.presence_timeout / 3).max(Duration::from_millis(100));
        tokio::spawn(presence::run(Arc::downgrade(&engine), beat));
        tokio::spawn(control::run(Arc::downgrade(&engine)));
        tokio::spawn(occupancy::run(Arc::downgrade(&engine), marks));
        Ok(engine)
    }

    /// Loads the function library (on every primary of a Cluster).
    /// Replacing it is harmless: its name changes with its code, and a
    /// reloaded library only reads the run id again.
    async fn load_library(&self) -> Result<(), Error> {
        let code = self.library.code.clone();
        let loaded: Result<Value, _> = if self.sharded {
            self.client.function_load_cluster(true, code).await
        } else {
            self.client.function_load(true, code).await
        };
        loaded.map(|_| ()).map_err(|e| {
            let hint = if e.details().to_ascii_lowercase().contains("unknown command") {
                " (Herald needs Redis 7.0 or later: it runs Redis functions)"
            } else {
                ""
            };
            Error::Unavailable(format!("loading Herald's Redis functions: {e}{hint}"))
        })
    }

    /// Calls one of Herald's Redis functions, loading the library again if
    /// Redis lost it (a restart without persistence).
    async fn call_function(
        &self,
        function: &str,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<Value, Error> {
        // fred would hold the command until its timeout when the connection
        // died under it; every publisher would stall that long.
        if !self.health.reachable() {
            return Err(Error::Unavailable("Redis is unreachable".into()));
        }
        let started = Instant::now();
        let client = self.client.with_options(&self.options);
        let mut result: Result<Value, _> = client.fcall(function, keys.clone(), args.clone()).await;
        if let Err(error) = &result
            && error.details().contains("Function not found")
        {
            self.load_library().await?;
            result = client.fcall(function, keys, args).await;
        }
        self.redis_metrics
            .roundtrip
            .observe(started.elapsed().as_secs_f64());
        result.map_err(|e| Error::Unavailable(e.to_string()))
    }

    /// The arguments of a publish of `data` to `channel` (`publish` in
    /// `scripts.rs`), which presence's functions take too.
    fn publish_args(&self, channel: &ChannelKey, data: Bytes, dedupe_ttl: Value) -> Vec<Value> {
        let history = self.config.history;
        let [floor_epoch, floor_offset] = self.floor(channel);
        vec![
            Value::Bytes(data),
            Value::Integer(clamped(history.size)),
            Value::Integer(history.ttl.as_secs().max(1) as i64),
            Value::from(Epoch::random().to_string()),
            Value::from(self.keyspace.keys(channel).pubsub),
            Value::from(if self.sharded { "s" } else { "p" }),
            dedupe_ttl,
            floor_epoch,
            floor_offset,
            // Past the TTL nothing is kept anyway: trimming by age need not
            // wait longer.
            Value::Integer(history.min_age.min(history.ttl).as_millis() as i64),
            Value::Integer(clamped(history.cap())),
        ]
    }

    async fn publish_one(&self, request: PublishRequest) -> Result<Published, Error> {
        let keys = self.keyspace.keys(&request.channel);
        let history = self.config.history;
        let (dedupe_key, dedupe_ttl) = match &request.dedupe {
            Some(key) => (
                self.keyspace.dedupe(&request.channel, key),
                Value::Integer(history.dedupe_ttl.as_secs().max(1) as i64),
            ),
            None => (keys.meta.clone(), Value::from("")),
        };
        let args = self.publish_args(&request.channel, request.data.clone(), dedupe_ttl);
        let reply = self
            .call_function(
                &self.library.publish,
                vec![keys.meta, keys.stream, dedupe_key],
                args,
            )
            .await
            .inspect_err(|_| self.redis_metrics.publish_failures.inc())?;
        let mut parts = reply.into_array().into_iter();
        let epoch = parse_epoch(parts.next())?;
        let offset = parts
            .next()
            .and_then(|v| v.as_i64())
            .ok_or_else(|| malformed("publish reply without an offset"))?;
        let duplicate = parts.next().and_then(|v| v.as_i64()) == Some(1);
        self.count_reset(&request.channel, parts.next());
        if !duplicate {
            self.metrics.published.inc();
        }
        Ok(Published {
            position: Position {
                epoch,
                offset: offset as u64,
            },
            duplicate,
        })
    }

    /// Reads a channel's position and its history after `after` (an
    /// offset; all of it without one).
    async fn read(
        &self,
        channel: &ChannelKey,
        keys: ChannelKeys,
        after: Option<u64>,
    ) -> Result<Read, Error> {
        self.read_after(channel, keys, Some(after.unwrap_or(0)))
            .await
    }

    /// Reads a channel's position only.
    async fn read_position(&self, channel: &ChannelKey) -> Result<Position, Error> {
        let read = self
            .read_after(channel, self.keyspace.keys(channel), None)
            .await?;
        Ok(read.position)
    }

    /// Reads a channel's position, and its history after `after` if given.
    async fn read_after(
        &self,
        channel: &ChannelKey,
        keys: ChannelKeys,
        after: Option<u64>,
    ) -> Result<Read, Error> {
        let history = self.config.history;
        // `MAXLEN ~` keeps up to about one stream node (100 entries) more
        // than the cap; read that much so a covered gap is never cut short.
        let count = history.cap().saturating_add(128);
        let [floor_epoch, floor_offset] = self.floor(channel);
        let args: Vec<Value> = vec![
            Value::from(Epoch::random().to_string()),
            Value::Integer(history.ttl.as_secs().max(1) as i64),
            Value::from(after.map(|o| o.to_string()).unwrap_or_default()),
            Value::Integer(clamped(count)),
            floor_epoch,
            floor_offset,
        ];
        let reply = self
            .call_function(&self.library.read, vec![keys.meta, keys.stream], args)
            .await?;
        let mut parts = reply.into_array().into_iter();
        let epoch = parse_epoch(parts.next())?;
        let top = parts
            .next()
            .and_then(|v| v.as_i64())
            .ok_or_else(|| malformed("read reply without an offset"))? as u64;
        let now_ms = parts.next().and_then(|v| v.as_i64()).unwrap_or(0);
        let entries = parts.next().map(Value::into_array).unwrap_or_default();
        self.count_reset(channel, parts.next());
        let mut messages = Vec::with_capacity(entries.len());
        let mut aged = false;
        for entry in entries {
            let Some((offset, at_ms, data)) = parse_entry(entry) else {
                return Err(malformed("unreadable stream entry"));
            };
            let age = Duration::from_millis(now_ms.saturating_sub(at_ms).max(0) as u64);
            if !history.keeps(age, top.saturating_sub(offset)) {
                // Past what history keeps (by count, age or TTL): as good as
                // gone, even if not trimmed yet. Trimming is lazy and coarse;
                // this is what makes the rule exact, the same as in memory.
                aged = true;
                continue;
            }
            let position = Position { epoch, offset };
            messages.push(Arc::new(Message::new(channel.clone(), position, data)));
        }
        let truncated =
            messages.len() >= count && messages.last().is_some_and(|m| m.offset() < top);
        Ok(Read {
            position: Position { epoch, offset: top },
            messages,
            aged,
            truncated,
        })
    }

    /// The channels' current positions (`None` for one nothing was
    /// published to yet), read together in one pipelined round.
    async fn positions(&self, channels: &[ChannelKey]) -> Result<Vec<Option<Position>>, Error> {
        let client = self.client.with_options(&self.options);
        let reads = channels.iter().map(|channel| {
            let meta = self.keyspace.keys(channel).meta;
            let client = &client;
            async move {
                let fields: Vec<Option<String>> = client
                    .hmget(meta, vec!["e", "o"])
                    .await
                    .map_err(|e| Error::Unavailable(e.to_string()))?;
                let epoch = fields
                    .first()
                    .cloned()
                    .flatten()
                    .and_then(|e| e.parse::<Epoch>().ok());
                let offset = fields
                    .get(1)
                    .cloned()
                    .flatten()
                    .and_then(|o| o.parse::<u64>().ok());
                Ok(epoch.map(|epoch| Position {
                    epoch,
                    offset: offset.unwrap_or(0),
                }))
            }
        });
        try_join_all(reads).await
    }

    /// The position this node has delivered on `channel`, as the floor
    /// arguments of a function call: Redis must not be behind it in the
    /// same epoch. `''` twice when the node has delivered nothing there.
    fn floor(&self, channel: &ChannelKey) -> [Value; 2] {
        match self.channels.last(channel).flatten() {
            Some(last) => [
                Value::from(last.epoch.to_string()),
                Value::from(last.offset.to_string()),
            ],
            None => [Value::from(""), Value::from("")],
        }
    }

    /// Counts (and logs) a new epoch that a function call started for a
    /// channel that had one: `restart` or `behind`.
    fn count_reset(&self, channel: &ChannelKey, reason: Option<Value>) {
        let reason = reason.and_then(|v| v.as_string()).unwrap_or_default();
        if reason != "restart" && reason != "behind" {
            return;
        }
        self.redis_metrics
            .epoch_resets
            .with_label_values(&[reason.as_str()])
            .inc();
        let warn = {
            let mut warned = self.reset_warned.lock();
            let due = warned.is_none_or(|at| at.elapsed() >= RESET_WARN_PERIOD);
            if due {
                *warned = Some(Instant::now());
            }
            due
        };
        if warn {
            tracing::warn!(channel = %channel, reason, "Redis may have lost messages (a restart, a failover, or keys behind this node): channels start new epochs as they are used, and their clients reload once (herald_redis_epoch_resets_total counts them)");
        } else {
            tracing::debug!(channel = %channel, reason, "Redis may have lost messages of the channel: it starts a new epoch");
        }
    }

    fn deliver(&self, message: Message) {
        self.hub.deliver(&Arc::new(message));
    }

    pub fn metrics(&self) -> &RedisMetrics {
        &self.redis_metrics
    }
}

/// A channel's position and the history read after some offset.
struct Read {
    position: Position,
    /// Retained messages after the offset asked for, oldest first.
    messages: Vec<Arc<Message>>,
    /// Whether entries history no longer keeps were skipped.
    aged: bool,
    /// Whether more messages exist than were returned.
    truncated: bool,
}

impl Read {
    /// Whether these messages are exactly everything after `since`.
    fn covers(&self, since: Position) -> bool {
        if since.epoch != self.position.epoch || since.offset > self.position.offset {
            return false;
        }
        if since.offset == self.position.offset {
            return true;
        }
        let first_is_next = self
            .messages
            .first()
            .is_some_and(|m| m.offset() == since.offset + 1);
        first_is_next && !self.aged && !self.truncated
    }
}

/// A count as Redis takes it: a configured size past `i64::MAX` means "no
/// bound" anyway.
fn clamped(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

fn malformed(what: &str) -> Error {
    Error::Unavailable(format!("unexpected answer from Redis: {what}"))
}

fn parse_epoch(value: Option<Value>) -> Result<Epoch, Error> {
    value
        .and_then(|v| v.as_str().map(|s| s.to_string()))
        .and_then(|s| s.parse::<Epoch>().ok())
        .ok_or_else(|| malformed("no valid epoch"))
}

/// `[id, [field, value, …]]` → (offset, time in ms, data).
fn parse_entry(entry: Value) -> Option<(u64, i64, Bytes)> {
    let mut parts = entry.into_array().into_iter();
    let id = parts.next()?.as_str()?.to_string();
    let offset = id.split_once('-')?.0.parse().ok()?;
    let mut fields = parts.next()?.into_array().into_iter();
    let (mut at, mut data) = (None, None);
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        match name.as_str()?.as_ref() {
            "t" => at = value.as_i64().or_else(|| value.as_str()?.parse().ok()),
            "d" => data = value.into_bytes(),
            _ => {}
        }
    }
    Some((offset, at?, data?))
}

/// Splits a pub/sub payload `<epoch> <offset> <data>`.
fn parse_payload(payload: Bytes) -> Option<(Position, Bytes)> {
    let first = payload.iter().position(|&b| b == b' ')?;
    let second = first + 1 + payload[first + 1..].iter().position(|&b| b == b' ')?;
    let epoch = std::str::from_utf8(&payload[..first]).ok()?.parse().ok()?;
    let offset = std::str::from_utf8(&payload[first + 1..second])
        .ok()?
        .parse()
        .ok()?;
    Some((Position { epoch, offset }, payload.slice(second + 1..)))
}

impl Engine for RedisEngine {
    fn publish(&self, batch: Vec<PublishRequest>) -> BoxFuture<'_, Result<Vec<Published>, Error>> {
        // Issued together, so fred pipelines them on one connection.
        Box::pin(try_join_all(batch.into_iter().map(|r| self.publish_one(r))))
    }

    fn history<'a>(
        &'a self,
        channel: &'a ChannelKey,
        since: Option<Position>,
    ) -> BoxFuture<'a, Result<History, Error>> {
        Box::pin(async move {
            // A local subscriber reads history only once the node hears the
            // channel live, or a message published in between would be lost.
            self.channels
                .wait_active(channel, self.config.command_timeout)
                .await?;
            let read = self
                .read(
                    channel,
                    self.keyspace.keys(channel),
                    since.map(|s| s.offset),
                )
                .await?;
            Ok(match since {
                None => History {
                    position: read.position,
                    recovered: false,
                    messages: read.messages,
                },
                Some(since) if read.covers(since) => History {
                    position: read.position,
                    recovered: true,
                    messages: read.messages,
                },
                Some(_) => History {
                    position: read.position,
                    recovered: false,
                    messages: Vec::new(),
                },
            })
        })
    }

    fn position<'a>(&'a self, channel: &'a ChannelKey) -> BoxFuture<'a, Result<Position, Error>> {
        Box::pin(async move {
            // The same wait as a history read: the subscriber takes live
            // messages after this position from the node's subscription.
            self.channels
                .wait_active(channel, self.config.command_timeout)
                .await?;
            self.read_position(channel).await
        })
    }

    fn presence_join<'a>(
        &'a self,
        channel: &'a ChannelKey,
        connection: u64,
        member: crate::presence::Member,
    ) -> BoxFuture<'a, Result<crate::presence::Joined, Error>> {
        Box::pin(self.join_presence(channel, connection, member))
    }

    fn occupancy<'a>(
        &'a self,
        site: &'a str,
        prefix: &'a str,
    ) -> Option<BoxFuture<'a, Result<crate::occupancy::Occupancy, Error>>> {
        Some(Box::pin(self.occupancy_everywhere(site, prefix)))
    }

    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.leave_the_deployment())
    }

    fn presence_leave(&self, channel: &ChannelKey, connection: u64) {
        self.leave_presence(channel, connection);
    }

    fn presence_members<'a>(
        &'a self,
        channel: &'a ChannelKey,
    ) -> BoxFuture<'a, Result<Vec<crate::presence::Member>, Error>> {
        Box::pin(self.presence_members_of(channel))
    }

    /// Ready while Redis answers and this node hears every channel it has
    /// subscribers for: a channel left unsubscribed upstream past
    /// [`UPSTREAM_GRACE`] (Redis refusing SUBSCRIBE, a primary failing
    /// over) means its subscribers miss messages, so the node is not ready.
    fn is_ready(&self) -> bool {
        self.health.reachable()
            && self.client.is_connected()
            && self.subscriber.is_connected()
            && !self.channels.upstream_behind(UPSTREAM_GRACE)
    }

    fn claim_signature(
        &self,
        site: &str,
        signature: &[u8; 32],
        ttl: Duration,
    ) -> Option<BoxFuture<'_, Result<bool, Error>>> {
        let key = self.keyspace.signature(site, signature);
        Some(Box::pin(self.claim_once(key, ttl)))
    }
}

impl ChannelWatcher for RedisEngine {
    fn channel_active(&self, channel: &ChannelKey) {
        self.channels.set_local(channel, true);
        self.mark_occupancy(channel, true);
    }

    fn channel_idle(&self, channel: &ChannelKey) {
        self.channels.set_local(channel, false);
        self.mark_occupancy(channel, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads() {
        let (position, data) = parse_payload(Bytes::from_static(b"1f 42 {\"a\": 1 }")).unwrap();
        assert_eq!(position.epoch, Epoch::from_u64(0x1f));
        assert_eq!(position.offset, 42);
        assert_eq!(&data[..], b"{\"a\": 1 }");
        assert!(parse_payload(Bytes::from_static(b"1f 42")).is_none());
        assert!(parse_payload(Bytes::from_static(b"zz 42 {}")).is_none());
        assert!(parse_payload(Bytes::from_static(b"1f x {}")).is_none());
    }

    #[test]
    fn coverage() {
        let epoch = Epoch::from_u64(9);
        let message = |offset| {
            Arc::new(Message::new(
                ChannelKey::parse("s/c").unwrap(),
                Position { epoch, offset },
                Bytes::new(),
            ))
        };
        let read = Read {
            position: Position { epoch, offset: 5 },
            messages: vec![message(4), message(5)],
            aged: false,
            truncated: false,
        };
        let at = |offset| Position { epoch, offset };
        assert!(read.covers(at(3)));
        assert!(read.covers(at(5)));
        assert!(!read.covers(at(2)));
        assert!(!read.covers(at(6)));
        assert!(!read.covers(Position {
            epoch: Epoch::from_u64(8),
            offset: 3
        }));
    }
}
