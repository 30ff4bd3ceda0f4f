//! One connection's subscriptions, and the recovery rule they follow.
//!
//! Recovery without gap or duplicate: register with the hub first, so live
//! messages start queueing in the outbox; then read history after the
//! client's position and send it; then let live messages through, dropping
//! any whose offset was already sent. The connection core keeps these for
//! every transport; protocols read the positions (an SSE cursor) as a view.

use std::{future::Future, sync::Arc};

use fanout::{ChannelKey, Error, History, Message, Position, Subscription, presence::Member};

use crate::{Client, Context, ErrorCode, Refusal, outbox::Outbox};

/// The subscriptions of one connection, indexed by slot. Messages in the
/// outbox carry their slot, so finding the subscription is an index.
#[derive(Default)]
pub struct Subscriptions {
    slots: Vec<Option<Sub>>,
}

struct Sub {
    /// Last position sent to the client on this channel.
    position: Position,
    /// The registration with the hub; dropping it unsubscribes.
    guard: Subscription,
}

/// What to do with a live message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Accept {
    /// Not for this client (given up, or already sent).
    Skip,
    /// Send it.
    Deliver,
    /// Send `subscribed` with `recovered: false` at this position first:
    /// the channel's epoch changed under the client.
    AfterReset(Position),
    /// Send `subscribed` with `recovered: false` at this position, and no
    /// message: a gap notice ([`Message::gap`]) says the client may have
    /// missed messages up to it.
    Gap(Position),
}

/// A subscription registered with the hub, with the history read after it.
pub(crate) struct Opened {
    pub slot: u32,
    pub guard: Subscription,
    pub history: History,
    pub since: Option<Position>,
    /// A presence channel's members, read with `history.position`.
    pub members: Option<Vec<Member>>,
}

impl Opened {
    /// The position to announce in `subscribed`: the client's own when its
    /// gap is replayed, else the channel's current one.
    pub fn announced(&self) -> Position {
        match self.since {
            Some(since) if self.history.recovered => since,
            _ => self.history.position,
        }
    }
}

/// Whether `client` may open `channel` now as far as its site's
/// `new_channel_rate` goes: a channel that nobody on this node subscribes
/// to costs the engine state (a log, an upstream subscription), so opening
/// one takes a token from the site's bucket; joining an open channel, or a
/// timeline (whose shard channel is shared), is free.
pub(crate) fn opens_in_time(
    context: &Context,
    client: &Client,
    channel: &ChannelKey,
) -> Result<(), Refusal> {
    if !context.fanout().opens_channel(channel) {
        return Ok(());
    }
    client.site().take_new_channel().map_err(|wait| {
        Refusal::new(
            ErrorCode::NewChannelRateLimited,
            format!(
                "this site opens new channels faster than it may; retry in {} s",
                wait.as_secs() + 1
            ),
        )
    })
}

/// Registers `outbox` for `channel` in `slot`, then reads the history after
/// `since`. With a `member` (a presence channel), joins it too, after the
/// registration: the join answers the members with the position they were
/// read at, which is where a fresh subscriber starts, so that the member
/// events it gets are exactly the changes since the list. A resumed one
/// replays from `since` as always, and may hear of a change the list
/// already shows: adding a member twice or removing one that is gone
/// changes nothing on the client.
pub(crate) fn open(
    context: &Context,
    outbox: &Arc<Outbox>,
    slot: u32,
    channel: ChannelKey,
    since: Option<Position>,
    member: Option<Member>,
) -> impl Future<Output = Result<Opened, Error>> + Send + 'static {
    let fanout = context.fanout().clone();
    let subscriber = outbox.clone();
    let connection = outbox.id();
    async move {
        let guard = fanout.subscribe(channel, subscriber, slot);
        let mut history = match since {
            Some(_) => Some(fanout.history(guard.channel(), since).await?),
            None => None,
        };
        let mut members = None;
        if let Some(member) = member {
            let joined = fanout
                .presence_join(guard.channel(), connection, member)
                .await?;
            members = Some(joined.members);
            history.get_or_insert(History {
                position: joined.position,
                recovered: false,
                messages: Vec::new(),
            });
        }
        let history = match history {
            Some(history) => history,
            // Nothing to replay: the position is all a fresh subscriber needs.
            None => History {
                position: fanout.position(guard.channel()).await?,
                recovered: false,
                messages: Vec::new(),
            },
        };
        Ok(Opened {
            slot,
            guard,
            history,
            since,
            members,
        })
    }
}

/// What a subscription replays of what its channel keeps, by position in
/// the history rather than by a cursor the server handed out: how Meteor's
/// subscriber URLs ask (`.r<id>`, `.b<n>`, `.h`, docs/compat.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backlog {
    /// Nothing: live messages only.
    None,
    /// The kept messages from this offset on (none when every kept offset is lower).
    From(u64),
    /// The newest `n` kept messages.
    Last(u64),
    /// Everything kept.
    All,
}

impl Backlog {
    /// The part of `kept` (oldest first) this backlog asks for.
    fn pick(self, kept: Vec<Arc<Message>>) -> Vec<Arc<Message>> {
        let skip = match self {
            Backlog::None => kept.len(),
            Backlog::From(offset) => kept.iter().take_while(|m| m.offset() < offset).count(),
            Backlog::Last(n) => kept
                .len()
                .saturating_sub(usize::try_from(n).unwrap_or(usize::MAX)),
            Backlog::All => 0,
        };
        kept.into_iter().skip(skip).collect()
    }
}

/// Registers `outbox` for `channel` in `slot`, then replays what `backlog`
/// picks of what the channel keeps, as a recovered replay: live messages
/// after it follow without gap or duplicate, by the same rule as [`open`].
pub(crate) fn open_backlog(
    context: &Context,
    outbox: &Arc<Outbox>,
    slot: u32,
    channel: ChannelKey,
    backlog: Backlog,
) -> impl Future<Output = Result<Opened, Error>> + Send + 'static {
    let fanout = context.fanout().clone();
    let subscriber = outbox.clone();
    async move {
        let guard = fanout.subscribe(channel, subscriber, slot);
        let (position, messages) = if backlog == Backlog::None {
            (fanout.position(guard.channel()).await?, Vec::new())
        } else {
            // No position asked for: the engine hands out all it keeps.
            let kept = fanout.history(guard.channel(), None).await?;
            (kept.position, backlog.pick(kept.messages))
        };
        let since = messages.first().map_or(position, |first| Position {
            epoch: first.position.epoch,
            offset: first.offset().saturating_sub(1),
        });
        Ok(Opened {
            slot,
            guard,
            history: History {
                position,
                recovered: true,
                messages,
            },
            since: Some(since),
            members: None,
        })
    }
}

impl Subscriptions {
    pub(crate) fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    pub(crate) fn find(&self, channel: &ChannelKey) -> Option<u32> {
        self.slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|sub| sub.guard.channel() == channel))
            .map(|i| i as u32)
    }

    /// The slot the next subscription will take.
    pub(crate) fn free_slot(&self) -> u32 {
        self.slots
            .iter()
            .position(Option::is_none)
            .unwrap_or(self.slots.len()) as u32
    }

    /// Stores a subscription in `slot` (a [`Subscriptions::free_slot`]), as
    /// sent up to `position`: live messages at or below it are dropped.
    pub(crate) fn put(&mut self, slot: u32, guard: Subscription, position: Position) {
        let slot = slot as usize;
        while self.slots.len() <= slot {
            // Grow one at a time: most connections hold one or two channels.
            self.slots.reserve_exact(1);
            self.slots.push(None);
        }
        self.slots[slot] = Some(Sub { position, guard });
    }

    /// Records that the client has what `slot`'s channel holds up to `position`.
    pub(crate) fn advance(&mut self, slot: u32, position: Position) {
        if let Some(Some(sub)) = self.slots.get_mut(slot as usize) {
            sub.position = position;
        }
    }

    /// The slot and position of the one subscription, when there is
    /// exactly one (what a connection may park with, `outbox.rs`).
    pub(crate) fn only(&self) -> Option<(u32, Position)> {
        let mut live = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(slot, sub)| Some((slot as u32, sub.as_ref()?.position)));
        let only = live.next()?;
        live.next().is_none().then_some(only)
    }

    /// The channel of `slot`, if it is subscribed.
    pub(crate) fn channel(&self, slot: u32) -> Option<&ChannelKey> {
        let sub = self.slots.get(slot as usize)?.as_ref()?;
        Some(sub.guard.channel())
    }

    pub(crate) fn remove(&mut self, channel: &ChannelKey) -> bool {
        match self.find(channel) {
            Some(slot) => {
                self.slots[slot as usize] = None;
                while self.slots.last().is_some_and(Option::is_none) {
                    self.slots.pop();
                }
                true
            }
            None => false,
        }
    }

    /// Decides whether a live message goes to the client: not if its slot was
    /// given up (or reused by another channel), and not if its offset was
    /// already sent. Records it as sent otherwise.
    pub(crate) fn accept(&mut self, slot: u32, message: &Message) -> Accept {
        let Some(Some(sub)) = self.slots.get_mut(slot as usize) else {
            return Accept::Skip;
        };
        if sub.guard.channel() != &message.channel {
            return Accept::Skip;
        }
        let position = message.position;
        if message.is_gap() {
            // A resubscribe that already replayed past the gap from
            // history has nothing to be told.
            if position.epoch == sub.position.epoch && position.offset <= sub.position.offset {
                return Accept::Skip;
            }
            sub.position = position;
            return Accept::Gap(position);
        }
        if position.epoch != sub.position.epoch {
            // The channel's history was lost or reset upstream (a Redis
            // that came back empty): the client's positions mean nothing
            // any more. It is told so, the way a resubscribe would be.
            sub.position = position;
            return Accept::AfterReset(Position {
                epoch: position.epoch,
                offset: position.offset.saturating_sub(1),
            });
        }
        if position.offset <= sub.position.offset {
            return Accept::Skip;
        }
        sub.position = position;
        Accept::Deliver
    }

    /// The positions in slot order, with `slot` at `position` instead (the
    /// cursor of a reset announced just before its first message).
    pub fn positions_before(
        &self,
        slot: u32,
        position: Position,
    ) -> impl Iterator<Item = Position> + '_ {
        self.slots.iter().enumerate().filter_map(move |(i, sub)| {
            let sub = sub.as_ref()?;
            Some(if i == slot as usize {
                position
            } else {
                sub.position
            })
        })
    }

    /// The last positions sent, in slot order (SSE cursors).
    pub fn positions(&self) -> impl Iterator<Item = Position> + '_ {
        self.slots.iter().flatten().map(|sub| sub.position)
    }
}
