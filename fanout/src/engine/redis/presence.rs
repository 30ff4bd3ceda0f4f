//! Presence on Redis: members that every node sees, and a killed node's
//! members gone within [`RedisConfig::presence_timeout`].
//!
//! A presence channel's members live in Redis beside its stream, in its
//! slot (`scripts.rs`, `presence_*`): a join or a leave is one function
//! call that changes them and, when the user list changes, appends and
//! publishes the member event; a join answers the list with the position
//! it was read at. Each node records which channels it has members on
//! (its index, counted up before a join and down after a leave), and
//! beats a heartbeat into a sorted set every third of the timeout. The
//! heartbeat also takes out the nodes whose last beat is older than the
//! timeout, and the node that took one out ends every membership it held,
//! channel by channel, publishing their leaves. So a SIGKILLed node's
//! members leave within the timeout and one heartbeat period, and a
//! restarted node (a new id) never finds its old members: no zombies after
//! a deploy.
//!
//! This node also keeps its own members ([`Local`]), the truth Redis is
//! brought back to: a join runs as a task of its own, so that a subscribe
//! abandoned half way (the client gone) still ends with its leave after
//! its join; a leave that Redis did not take is tried again on each
//! heartbeat; and a node that finds itself missing from the heartbeats
//! (Redis lost its data, or took the node for dead after a long stall)
//! joins its members again.
//!
//! Commands: a join is two (the index count and the join, sent together in
//! one round trip), a leave two, a heartbeat one, and reaping a dead node
//! one per channel it had members on.
//!
//! [`RedisConfig::presence_timeout`]: super::RedisConfig::presence_timeout

use std::{collections::HashMap, time::Duration};

use fred::{
    interfaces::{ClientLike, HashesInterface, KeysInterface, SortedSetsInterface},
    types::Value,
};
use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::{RedisEngine, malformed, parse_epoch};
use crate::{
    ChannelKey, Error, Position,
    events::ChannelEvent,
    presence::{Joined, Member},
};

/// This node's side of presence.
pub(super) struct Presence {
    /// This process's id among the nodes: random, so a restarted node is
    /// a new one, and its predecessor's members are reaped.
    pub node: String,
    local: Mutex<Local>,
}

/// The memberships this node holds.
#[derive(Default)]
struct Local {
    members: HashMap<(ChannelKey, u64), Membership>,
    /// Leaves Redis did not take yet (channel, connection, user): tried
    /// again on each heartbeat.
    unfinished_leaves: Vec<(ChannelKey, u64, Box<str>)>,
}

enum Membership {
    /// Its join is running; `left` once its subscription was dropped
    /// meanwhile: the join's task then leaves right after.
    Joining {
        left: bool,
    },
    Joined(Member),
}

impl Presence {
    pub fn new() -> Self {
        Self {
            node: format!("{:016x}", rand::random::<u64>()),
            local: Mutex::new(Local::default()),
        }
    }
}

impl RedisEngine {
    /// See [`crate::Engine::presence_join`].
    pub(super) async fn join_presence(
        &self,
        channel: &ChannelKey,
        connection: u64,
        member: Member,
    ) -> Result<Joined, Error> {
        let engine = self
            .me
            .upgrade()
            .ok_or_else(|| Error::Unavailable("the engine is shutting down".into()))?;
        // The subscriber takes live events after the joined position from
        // the node's subscription: the same wait as a history read.
        self.channels
            .wait_active(channel, self.config.command_timeout)
            .await?;
        let (answer, joined) = oneshot::channel();
        // Recorded and spawned in one step, with no await between: however
        // the caller's future ends, the join runs to its end, and a leave
        // that comes meanwhile follows it.
        self.presence.local.lock().members.insert(
            (channel.clone(), connection),
            Membership::Joining { left: false },
        );
        let channel = channel.clone();
        tokio::spawn(async move {
            let result = engine.call_join(&channel, connection, &member).await;
            let user_id = member.user_id.clone();
            let leave_now = {
                let mut local = engine.presence.local.lock();
                let key = (channel.clone(), connection);
                let left = matches!(
                    local.members.get(&key),
                    Some(Membership::Joining { left: true, .. })
                );
                if left || result.is_err() {
                    local.members.remove(&key);
                } else {
                    local.members.insert(key, Membership::Joined(member));
                }
                // A failed join may have run before its answer was lost:
                // leaving undoes it either way.
                left || result.is_err()
            };
            if leave_now {
                engine.finish_leave(channel, connection, user_id).await;
            }
            let _ = answer.send(result);
        });
        joined
            .await
            .map_err(|_| Error::Unavailable("the presence join was dropped".into()))?
    }

    /// See [`crate::Engine::presence_leave`].
    pub(super) fn leave_presence(&self, channel: &ChannelKey, connection: u64) {
        let key = (channel.clone(), connection);
        let user_id = {
            let mut local = self.presence.local.lock();
            match local.members.get_mut(&key) {
                Some(Membership::Joining { left, .. }) => {
                    // The join's task leaves once it is done.
                    *left = true;
                    return;
                }
                Some(Membership::Joined(_)) => match local.members.remove(&key) {
                    Some(Membership::Joined(member)) => member.user_id,
                    _ => return,
                },
                None => return,
            }
        };
        if let Some(engine) = self.me.upgrade() {
            tokio::spawn(async move { engine.finish_leave(key.0, key.1, user_id).await });
        }
    }

    /// See [`crate::Engine::presence_members`].
    pub(super) async fn presence_members_of(
        &self,
        channel: &ChannelKey,
    ) -> Result<Vec<Member>, Error> {
        let infos = self.keyspace.presence(channel, &self.presence.node)[3].clone();
        let client = self.client.with_options(&self.options);
        let pairs: Vec<(String, String)> = client
            .hgetall::<HashMap<String, String>, _>(infos)
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))?
            .into_iter()
            .collect();
        let mut members: Vec<Member> = pairs
            .into_iter()
            .map(|(user_id, user_info)| Member {
                user_id: user_id.into(),
                user_info: user_info.into(),
            })
            .collect();
        members.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        Ok(members)
    }

    /// The join's two commands, sent together: the index first, so that
    /// a node killed right after its join still has it reaped.
    async fn call_join(
        &self,
        channel: &ChannelKey,
        connection: u64,
        member: &Member,
    ) -> Result<Joined, Error> {
        let keys = self.keyspace.presence(channel, &self.presence.node);
        let mut args = self.publish_args(channel, bytes::Bytes::new(), Value::from(""));
        args.push(Value::from(connection.to_string()));
        args.push(Value::from(&*member.user_id));
        args.push(Value::from(&*member.user_info));
        let (_, reply) = futures_util::future::try_join(
            self.count_index(channel, 1),
            self.call_function(&self.library.presence_join, keys, args),
        )
        .await?;
        let mut parts = reply.into_array().into_iter();
        let epoch = parse_epoch(parts.next())?;
        let offset = parts
            .next()
            .and_then(|v| v.as_i64())
            .ok_or_else(|| malformed("presence join reply without an offset"))?;
        self.count_reset(channel, parts.next());
        let flat = parts.next().map(Value::into_array).unwrap_or_default();
        if parts.next().and_then(|v| v.as_i64()) == Some(1)
            && let Some(events) = self.hub.events_for(channel)
        {
            events.event(channel, ChannelEvent::MemberAdded(member.user_id.clone()));
        }
        let mut members = Vec::with_capacity(flat.len() / 2);
        let mut flat = flat.into_iter();
        while let (Some(user_id), Some(user_info)) = (flat.next(), flat.next()) {
            let (Some(user_id), Some(user_info)) = (user_id.as_string(), user_info.as_string())
            else {
                return Err(malformed("presence join reply with an unreadable member"));
            };
            members.push(Member {
                user_id: user_id.into(),
                user_info: user_info.into(),
            });
        }
        members.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        Ok(Joined {
            position: Position {
                epoch,
                offset: offset as u64,
            },
            members,
        })
    }

    /// Ends a membership in Redis, then counts it out of the index; kept
    /// for the next heartbeat when Redis does not take it.
    async fn finish_leave(&self, channel: ChannelKey, connection: u64, user_id: Box<str>) {
        match self.call_leave(&channel, connection).await {
            Ok(true) => {
                if let Some(events) = self.hub.events_for(&channel) {
                    events.event(&channel, ChannelEvent::MemberRemoved(user_id));
                }
            }
            Ok(false) => {}
            Err(error) => {
                tracing::debug!(%channel, %error, "presence leave not taken; retried on the next heartbeat");
                self.presence
                    .local
                    .lock()
                    .unfinished_leaves
                    .push((channel, connection, user_id));
            }
        }
    }

    /// Answers whether the user left the channel.
    async fn call_leave(&self, channel: &ChannelKey, connection: u64) -> Result<bool, Error> {
        let keys = self.keyspace.presence(channel, &self.presence.node);
        let mut args = self.publish_args(channel, bytes::Bytes::new(), Value::from(""));
        args.push(Value::from(connection.to_string()));
        let left = self
            .call_function(&self.library.presence_leave, keys, args)
            .await?;
        self.count_index(channel, -1).await?;
        Ok(left.as_i64() == Some(1))
    }

    /// Counts this node's memberships (and occupancy) on `channel` up or
    /// down in its index, which is how a dead node's channels are found.
    pub(super) async fn count_index(&self, channel: &ChannelKey, delta: i64) -> Result<(), Error> {
        let index = self.keyspace.presence_index(&self.presence.node);
        let args = vec![Value::from(channel.as_str()), Value::Integer(delta)];
        self.call_function(&self.library.presence_index, vec![index], args)
            .await
            .map(|_| ())
    }

    /// One heartbeat: beats, reaps the nodes found dead, retries leaves,
    /// and joins this node's members again if Redis lost them.
    async fn heartbeat(&self) -> Result<(), Error> {
        let nodes = self.keyspace.presence_nodes();
        let timeout = self.config.presence_timeout.as_millis() as i64;
        let args = vec![
            Value::from(self.presence.node.as_str()),
            Value::Integer(timeout),
        ];
        let reply = self
            .call_function(&self.library.presence_heartbeat, vec![nodes], args)
            .await?;
        let mut parts = reply.into_array().into_iter();
        let known = parts.next().and_then(|v| v.as_i64()) == Some(1);
        let dead = strings(parts.next());
        for node in dead {
            if let Err(error) = self.reap(&node).await {
                // Its members must not stay for ever.
                self.leave_for_reaping(&node).await;
                return Err(error);
            }
        }
        let retries = std::mem::take(&mut self.presence.local.lock().unfinished_leaves);
        for (channel, connection, user_id) in retries {
            self.finish_leave(channel, connection, user_id).await;
        }
        if !known {
            self.join_again().await;
        }
        Ok(())
    }

    /// Ends every membership a dead node held: one call per channel in
    /// its index, then the index.
    async fn reap(&self, node: &str) -> Result<(), Error> {
        let index = self.keyspace.presence_index(node);
        let client = self.client.with_options(&self.options);
        let channels: Vec<String> = client
            .hkeys(&index)
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))?;
        let mut left = 0;
        for name in &channels {
            let Ok(channel) = ChannelKey::parse(name) else {
                continue;
            };
            let mut keys = self.keyspace.presence(&channel, node);
            keys.push(self.keyspace.occupancy(&channel));
            let mut args = self.publish_args(&channel, bytes::Bytes::new(), Value::from(""));
            args.push(Value::from(node));
            let reply = self
                .call_function(&self.library.presence_reap, keys, args)
                .await?;
            let mut parts = reply.into_array().into_iter();
            let users = strings(parts.next());
            let vacated = parts.next().and_then(|v| v.as_i64()) == Some(1);
            left += users.len();
            if let Some(events) = self.hub.events_for(&channel) {
                for user in users {
                    events.event(&channel, ChannelEvent::MemberRemoved(user.into()));
                }
                if vacated {
                    events.event(&channel, ChannelEvent::Vacated);
                }
            }
        }
        let _: i64 = client
            .del(&index)
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))?;
        tracing::info!(
            node,
            channels = channels.len(),
            users_left = left,
            "a node stopped beating: its presence members were removed"
        );
        Ok(())
    }

    /// Takes this node out of the heartbeats and ends every membership and
    /// occupancy mark it holds, as a dead node's are (a graceful shutdown,
    /// once its connections are closed): nobody waits for the timeout.
    pub(super) async fn leave_the_deployment(&self) {
        let node = self.presence.node.clone();
        let client = self.client.with_options(&self.options);
        let _: Result<i64, _> = client.zrem(self.keyspace.presence_nodes(), &node).await;
        match self.reap(&node).await {
            Ok(()) => tracing::info!("this node's presence members and channel marks left with it"),
            Err(error) => {
                tracing::warn!(%error, "this node's presence members could not be removed; the other nodes will at their next heartbeat");
                self.leave_for_reaping(&node).await;
            }
        }
    }

    /// Puts `node` among the heartbeats as long dead (a beat at 0), so that
    /// the next heartbeat of any node reaps it: a reap that failed half
    /// way is tried again rather than leaving its members for ever.
    async fn leave_for_reaping(&self, node: &str) {
        let client = self.client.with_options(&self.options);
        let _: Result<i64, _> = client
            .zadd(
                self.keyspace.presence_nodes(),
                None,
                None,
                false,
                false,
                (0.0, node),
            )
            .await;
    }

    /// Joins this node's members again, after Redis forgot this node.
    async fn join_again(&self) {
        let members: Vec<(ChannelKey, u64, Member)> = {
            let local = self.presence.local.lock();
            local
                .members
                .iter()
                .filter_map(|((channel, connection), membership)| match membership {
                    Membership::Joined(member) => {
                        Some((channel.clone(), *connection, member.clone()))
                    }
                    Membership::Joining { .. } => None,
                })
                .collect()
        };
        if members.is_empty() {
            return;
        }
        tracing::warn!(
            members = members.len(),
            "Redis did not know this node (it lost its data, or took the node for dead): its presence members join again"
        );
        for (channel, connection, member) in members {
            if let Err(error) = self.call_join(&channel, connection, &member).await {
                tracing::debug!(%channel, %error, "presence member not joined again");
            }
        }
    }
}

/// The strings of an array a function answered (none when it is absent).
fn strings(array: Option<Value>) -> Vec<String> {
    array
        .map(Value::into_array)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|v| v.as_string())
        .collect()
}

/// Beats every third of the timeout for as long as the engine lives.
pub(super) async fn run(engine: std::sync::Weak<RedisEngine>, period: Duration) {
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(engine) = engine.upgrade() else {
            return;
        };
        if let Err(error) = engine.heartbeat().await {
            tracing::debug!(%error, "presence heartbeat failed");
        }
    }
}

impl std::fmt::Debug for Presence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presence")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}
