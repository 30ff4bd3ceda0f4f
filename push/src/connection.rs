//! The connection core: one client connection, whatever carries it and
//! whatever protocol it speaks. Every decision about a connection is made
//! here, once for every transport: its subscriptions and their recovery,
//! the client's intents, what the hub and the ticker leave in its outbox,
//! shutdown advice, slow consumers, heartbeats and idle clients, token
//! expiry and refresh, site rechecks after a reload, and how it closes.
//! The [`Protocol`] only encodes what is decided here; the transport's
//! [`Link`](crate::session::Link) only moves bytes.
//!
//! Invariants:
//! - Recovery without gap or duplicate: a subscribe registers with the hub
//!   first (live messages start queueing in the outbox), then reads history
//!   after the client's position and sends it, then lets live messages
//!   through, dropping any whose offset was already sent
//!   (`subscriptions.rs`). While a subscribe reads history, no client frame
//!   is read and no live message is taken, so the replay always comes first.
//! - A close is decided once, counted when decided (a client that stopped
//!   reading may never see it), and bounded by `connection.close_timeout`.
//! - Size: every idle connection is one task holding its link and this
//!   struct, and tokio rounds a task's cell up (cells of 256, 384, 512 …
//!   bytes for futures up to 160, 288, 416 … bytes). So state that only
//!   exists for a moment (a subscribe in flight, a close deadline) is boxed
//!   in `aside`, the connection id lives in the outbox, and the small fields
//!   (tracker place, last heard tick, command-rate bucket, close state) pack
//!   into two words. `session.rs` holds the sizes with a test.

mod outgoing;

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context as TaskContext, Poll},
    time::Duration,
};

use bytes::Bytes;
use fanout::{ChannelKey, ChannelName, Error, Position};
use tokio::time::Sleep;

pub use outgoing::Outgoing;

use crate::{
    ClientFrame, CloseReason, Context, ErrorCode, Event, Intent, Protocol, Refusal,
    client::{ChannelProof, Client, unix_now, unix_now_ms},
    command_rate::{CommandRate, Pace},
    metrics::PerTransport,
    outbox::{Handed, Outbox, Queue, Queued},
    session::Inbound,
    subscriptions::{self, Accept, Opened, Subscriptions, opens_in_time},
    tracker::Tracked,
    traffic::Received,
};

/// Client frames are not read while this many chunks wait for the socket:
/// a client that sends but does not read stops being read once its answers
/// pile up, instead of growing them.
const MAX_UNWRITTEN: usize = 256;

type PendingOpen = Pin<Box<dyn Future<Output = Result<Opened, Error>> + Send>>;

/// One client connection.
pub struct Connection<P: Protocol> {
    context: Context,
    /// Where the hub leaves messages for this connection; it also holds the
    /// connection's id.
    outbox: Arc<Outbox>,
    /// This connection's place among those the ticker and shutdown reach.
    tracked: Tracked,
    subscriptions: Subscriptions,
    /// Encoded bytes waiting for the socket.
    out: Outgoing,
    /// The site, token and address this connection was admitted with.
    client: Client,
    /// State that exists only for a while; see [`Aside`].
    aside: Option<Box<Aside>>,
    /// Set once the connection is closing: why.
    closing: Option<CloseReason>,
    /// Whether the end was counted and logged.
    finished: bool,
    /// The tick at which the client was last heard from (ticks fit 32 bits
    /// for thousands of years).
    heard_at: u32,
    /// How fast the client may send frames (four bytes).
    commands: CommandRate,
    protocol: P,
}

/// What a connection holds only for a while: a subscribe waits for its
/// history read only while open, and a deadline runs only while closing.
enum Aside {
    Subscribing(PendingOpen),
    /// The close is abandoned when this fires: a client that stopped
    /// reading never takes its last words.
    Closing(Pin<Box<Sleep>>),
}

impl<P: Protocol> Connection<P> {
    /// A connection admitted as `client`, whose messages arrive in
    /// `outbox`. The protocol's opening words are queued at once.
    pub(crate) fn new(
        context: Context,
        outbox: Arc<Outbox>,
        client: Client,
        protocol: P,
        peer: SocketAddr,
    ) -> Self {
        let tracked = context.tracker().register(outbox.clone());
        let heard_at = context.tracker().now() as u32;
        let mut connection = Self {
            context,
            outbox,
            tracked,
            subscriptions: Subscriptions::default(),
            out: Outgoing::default(),
            client,
            aside: None,
            closing: None,
            finished: false,
            heard_at,
            commands: CommandRate::new(),
            protocol,
        };
        connection.metrics().connections.inc();
        tracing::debug!(
            conn.id = connection.id(),
            client.addr = %peer,
            site = connection.client.site().id(),
            user = connection.client.user(),
            transport = P::TRANSPORT.as_str(),
            "connection opened"
        );
        let opened = Event::Opened {
            connection_id: connection.id(),
            ping_interval: connection.context.config().ping_interval,
            expires_at: connection.client.expires_at(),
        };
        connection.encode(opened);
        connection
    }

    /// For logs, and the `connection_id` a client may see.
    pub fn id(&self) -> u64 {
        self.outbox.id()
    }

    pub(crate) fn out(&mut self) -> &mut Outgoing {
        &mut self.out
    }

    pub(crate) fn closing(&self) -> Option<CloseReason> {
        self.closing
    }

    pub(crate) fn protocol(&self) -> &P {
        &self.protocol
    }

    fn metrics(&self) -> &PerTransport {
        self.context.metrics().transport(P::TRANSPORT)
    }

    fn encode(&mut self, event: Event<'_>) {
        self.protocol
            .encode(event, &self.subscriptions, &mut self.out);
    }

    // === subscriptions ===

    /// Makes opened subscriptions live: every `subscribed` first, then what
    /// each channel missed, with positions moving along.
    pub(crate) fn start(&mut self, opened: Vec<Opened>) {
        let mut replays = Vec::with_capacity(opened.len());
        for subscription in opened {
            let announced = subscription.announced();
            self.subscriptions
                .put(subscription.slot, subscription.guard, announced);
            replays.push((
                subscription.slot,
                announced,
                subscription.history,
                subscription.members,
            ));
        }
        for (slot, position, history, members) in &replays {
            if let Some(channel) = self.subscriptions.channel(*slot) {
                let event = Event::Subscribed {
                    slot: *slot,
                    channel,
                    position: *position,
                    recovered: history.recovered,
                    members: members.as_deref(),
                };
                self.protocol
                    .encode(event, &self.subscriptions, &mut self.out);
            }
        }
        let mut replayed = 0;
        let mut replayed_bytes = 0;
        for (slot, _, history, _) in &replays {
            if history.recovered {
                for message in &history.messages {
                    self.subscriptions.advance(*slot, message.position);
                    self.protocol
                        .message(message, &self.subscriptions, &mut self.out);
                    replayed += 1;
                    replayed_bytes += message.data.len();
                }
            }
        }
        if replayed > 0 {
            self.outbox.count_handed(replayed, replayed_bytes);
        }
        // Only now, so that every replayed event's cursor holds what was
        // sent: live messages up to each channel's position when its history
        // was read were in that history (or were not this client's).
        for (slot, _, history, _) in replays {
            self.subscriptions.advance(slot, history.position);
        }
        self.metrics().delivered.inc_by(replayed as u64);
        self.end_if_answered();
    }

    // === what the client says ===

    /// Whether the transport may read from the client now.
    pub(crate) fn reads_client(&self) -> bool {
        !matches!(self.aside.as_deref(), Some(Aside::Subscribing(_)))
            && self.out.len() < MAX_UNWRITTEN
            && !self.out.mid_frame()
    }

    /// A frame from the client, for the protocol to read, if the client
    /// keeps to its site's `command_rate`.
    pub(crate) fn on_frame(&mut self, frame: ClientFrame<'_>) {
        if self.closing.is_some() {
            // Frames read in the same go as the one that closed it.
            return;
        }
        self.heard();
        let settings = self.client.site().settings();
        let (rate, burst) = (settings.limits.command_rate, settings.limits.command_burst);
        match self.commands.take(rate, burst) {
            Pace::Go => {}
            Pace::Refuse => {
                self.count_rejection(ErrorCode::CommandRateLimited);
                let refusal = Refusal::new(
                    ErrorCode::CommandRateLimited,
                    "too many frames; slow down (frames sent meanwhile are refused)",
                );
                return self.refuse_frame(refusal);
            }
            Pace::Close => {
                self.count_rejection(ErrorCode::CommandRateLimited);
                self.context
                    .metrics()
                    .client_error(ErrorCode::CommandRateLimited);
                let message = "kept sending while refused; reconnect after a back-off";
                let reason = CloseReason::Code(ErrorCode::CommandRateLimited);
                return self.begin_close(reason, message, None);
            }
        }
        match self.protocol.parse(frame) {
            Ok(intent) => self.on_intent(intent),
            Err(refusal) => self.refuse_frame(refusal),
        }
    }

    /// The largest frame or message the client may send.
    pub(crate) fn max_frame_bytes(&self) -> usize {
        self.client.site().settings().limits.max_frame_bytes
    }

    /// What else the transport read. `Some` when the connection is over now.
    pub(crate) fn on_inbound(&mut self, inbound: Inbound) -> Option<CloseReason> {
        match inbound {
            Inbound::Heard => self.heard(),
            // The transport answers the close itself; nothing of ours goes out after it.
            Inbound::Closed { answered: true } => {
                self.begin_close(CloseReason::ClientClosed, "", None);
            }
            Inbound::Closed { answered: false } => return Some(CloseReason::ClientClosed),
            Inbound::Broken(code) => {
                tracing::debug!(
                    conn.id = self.id(),
                    reason = code.as_str(),
                    "closing on a bad frame"
                );
                if code == ErrorCode::MessageTooBig {
                    self.context.metrics().reject(self.client.site().id(), code);
                }
                self.begin_close(CloseReason::Code(code), "", None);
            }
            Inbound::Failed => return Some(CloseReason::IoError),
        }
        None
    }

    fn heard(&mut self) {
        self.heard_at = self.context.tracker().now() as u32;
    }

    fn on_intent(&mut self, intent: Intent) {
        match intent {
            Intent::Subscribe {
                channel,
                since,
                signature,
                channel_data,
            } => self.subscribe(
                channel,
                since,
                signature.as_deref(),
                channel_data.as_deref(),
            ),
            Intent::Unsubscribe { channel } => self.unsubscribe(&channel),
            Intent::Ping => self.encode(Event::Pong),
            Intent::Refresh { token } => match self.client.refresh(&token) {
                Ok(expires_at) => self.encode(Event::Refreshed { expires_at }),
                Err(refusal) => {
                    self.count_rejection(refusal.code);
                    self.refuse_frame(refusal);
                }
            },
            Intent::SignIn {
                user_data,
                signature,
            } => {
                let connection_id = P::connection_id(self.id());
                match self.client.sign_in(&connection_id, &user_data, &signature) {
                    Ok(_) => self.encode(Event::SignedIn {
                        user_data: &user_data,
                    }),
                    Err(refusal) => {
                        self.count_rejection(refusal.code);
                        self.refuse_frame(refusal);
                    }
                }
            }
            Intent::Publish {
                channel,
                event,
                data,
            } => {
                if let Err(refusal) = self.publish(&channel, &event, &data) {
                    self.count_rejection(refusal.code);
                    self.refuse_frame(refusal.on_channel(channel.as_str()));
                }
            }
        }
    }

    /// Publishes a client's event to the other subscribers of a private or
    /// presence channel it is subscribed to, when its site allows client events,
    /// within the site's message size and publish rate. The engine's answer
    /// is not waited for: a client event has no acknowledgement.
    fn publish(&mut self, channel: &ChannelName, event: &str, data: &Bytes) -> Result<(), Refusal> {
        let site = self.client.site();
        let settings = site.settings();
        if !settings.client_events {
            return Err(Refusal::new(
                ErrorCode::Forbidden,
                "client events are not enabled on this site",
            ));
        }
        let name = channel.as_str();
        if !name.starts_with("private-") && !fanout::presence::is_presence(name) {
            return Err(Refusal::new(
                ErrorCode::Forbidden,
                "client events go to private and presence channels only",
            ));
        }
        let key = self.client.scope(channel);
        if self.subscriptions.find(&key).is_none() {
            return Err(Refusal::new(
                ErrorCode::NotSubscribed,
                "subscribe to the channel before sending it events",
            ));
        }
        let max = settings.limits.max_message_bytes;
        if data.len() > max {
            return Err(Refusal::new(
                ErrorCode::PayloadTooLarge,
                format!("a client event's data may be at most {max} bytes"),
            ));
        }
        if let Err(wait) = site.take_publish(1) {
            return Err(Refusal::new(
                ErrorCode::RateLimited,
                format!(
                    "this site's publish_rate is reached; retry in {} ms",
                    wait.as_millis().max(1)
                ),
            ));
        }
        let tags = fanout::Tags {
            event: Some(event),
            excluded: Some(self.id()),
        };
        let request = fanout::PublishRequest::tagged(key, tags, data);
        let fanout = self.context.fanout().clone();
        let id = self.id();
        tokio::spawn(async move {
            if let Err(error) = fanout.publish(vec![request]).await {
                tracing::debug!(conn.id = id, %error, "client event not published");
            }
        });
        Ok(())
    }

    fn subscribe(
        &mut self,
        channel: ChannelName,
        since: Option<Position>,
        signature: Option<&str>,
        channel_data: Option<&str>,
    ) {
        let key = self.client.scope(&channel);
        if self.subscriptions.find(&key).is_some() {
            let refusal = Refusal::new(ErrorCode::AlreadySubscribed, "already subscribed");
            return self.refuse_frame(refusal.on_channel(channel.as_str()));
        }
        let max = self.client.site().settings().limits.max_subscriptions;
        if self.subscriptions.len() >= max {
            let refusal = Refusal::new(
                ErrorCode::TooManySubscriptions,
                "this connection has as many channels as it may",
            );
            self.count_rejection(refusal.code);
            return self.refuse_frame(refusal.on_channel(channel.as_str()));
        }
        let connection_id = P::connection_id(self.id());
        let proof = ChannelProof {
            connection_id: &connection_id,
            signature,
            channel_data,
        };
        if let Err(refusal) = self.client.may_read(&channel, Some(proof)) {
            self.count_rejection(refusal.code);
            return self.refuse_frame(refusal.on_channel(channel.as_str()));
        }
        let signed = signature.is_some() && channel_data.is_some();
        let member = match self.client.member(&channel, channel_data, signed) {
            Ok(member) => member,
            Err(refusal) => {
                self.count_rejection(refusal.code);
                return self.refuse_frame(refusal.on_channel(channel.as_str()));
            }
        };
        if let Err(refusal) = opens_in_time(&self.context, &self.client, &key) {
            self.count_rejection(refusal.code);
            return self.refuse_frame(refusal.on_channel(channel.as_str()));
        }
        let slot = self.subscriptions.free_slot();
        let open = subscriptions::open(&self.context, &self.outbox, slot, key, since, member);
        self.aside = Some(Box::new(Aside::Subscribing(Box::pin(open))));
    }

    fn unsubscribe(&mut self, channel: &ChannelName) {
        if self.subscriptions.remove(&self.client.scope(channel)) {
            self.encode(Event::Unsubscribed { channel });
        } else {
            let refusal = Refusal::new(ErrorCode::NotSubscribed, "not subscribed");
            self.refuse_frame(refusal.on_channel(channel.as_str()));
        }
    }

    fn on_opened(&mut self, opened: Result<Opened, Error>) {
        match opened {
            Ok(opened) => self.start(vec![opened]),
            Err(error) => {
                tracing::warn!(conn.id = self.id(), %error, "subscribe failed");
                self.refuse_frame(Refusal::new(ErrorCode::Unavailable, error.to_string()));
            }
        }
    }

    /// Answers a refused frame; the connection stays open.
    fn refuse_frame(&mut self, refusal: Refusal) {
        self.context.metrics().client_error(refusal.code);
        tracing::debug!(
            conn.id = self.id(),
            code = refusal.code.as_str(),
            "client frame refused"
        );
        self.encode(Event::Refused(&refusal));
    }

    /// Counts a refusal of this site's rules or limits.
    fn count_rejection(&self, code: ErrorCode) {
        let site = self.client.site().id();
        self.context.metrics().reject(site, code);
    }

    // === what the hub and the ticker leave ===

    /// Moves a subscribe in flight along and picks up what the outbox
    /// holds. True when anything was queued or decided.
    pub(crate) fn poll_work(&mut self, cx: &mut TaskContext<'_>) -> bool {
        let mut progressed = false;
        if let Some(Aside::Subscribing(open)) = self.aside.as_deref_mut()
            && let Poll::Ready(opened) = open.as_mut().poll(cx)
        {
            self.aside = None;
            self.on_opened(opened);
            progressed = true;
        }
        progressed | self.poll_outbox(cx)
    }

    fn poll_outbox(&mut self, cx: &mut TaskContext<'_>) -> bool {
        let take = self.closing.is_none() && self.aside.is_none() && self.out.is_empty();
        let drained = self.outbox.drain(take, cx.waker());
        // What the hub sent while the connection was parked comes first.
        if let Some((slot, position)) = drained.parked {
            self.subscriptions.advance(slot, position);
        }
        let mut progressed = false;
        if let Some(started) = drained.started {
            self.finish_frame(started);
            progressed = true;
        }
        if self.closing.is_some() {
            // The waker stays registered; nothing new goes out any more.
            return progressed;
        }
        if drained.overflowed {
            let message = "the connection fell too far behind; reconnect to resume";
            self.begin_close(CloseReason::Code(ErrorCode::SlowConsumer), message, None);
            return true;
        }
        if let Some(delay) = drained.shutdown {
            return self.shut_down(drained.items, delay);
        }
        if (drained.tick || drained.recheck) && self.check_client() {
            return true;
        }
        if drained.disconnect && self.is_disconnected() {
            let message = "an operator disconnected this user";
            self.begin_close(CloseReason::Code(ErrorCode::Disconnected), message, None);
            return true;
        }
        if drained.tick {
            self.report_traffic(drained.handed);
            self.commands.catch_up();
            if self.is_idle() {
                let message = "nothing was heard from the client for too long";
                self.begin_close(CloseReason::Code(ErrorCode::IdleTimeout), message, None);
                return true;
            }
            self.encode(Event::Heartbeat);
            progressed = true;
        }
        if !drained.items.is_empty() {
            self.deliver(drained.items);
            progressed = true;
        }
        if progressed {
            self.end_if_answered();
        }
        progressed
    }

    /// Shutdown: every message already in the outbox (each was acknowledged
    /// to its publisher) goes out before the reconnect advice and the close.
    /// `taken` is what this round took from the outbox. A subscribe in
    /// flight finishes first, so that its replay keeps its place ahead of
    /// live messages; the shutdown signal stays set meanwhile.
    fn shut_down(&mut self, mut taken: Queue, reconnect_after: Duration) -> bool {
        if self.aside.is_some() {
            return false;
        }
        if taken.is_empty() {
            // Nothing was taken because earlier bytes were still on their way.
            taken = self.outbox.take_items();
        }
        self.deliver(taken);
        let reason = CloseReason::Code(ErrorCode::Shutdown);
        self.begin_close(reason, "the server is shutting down", Some(reconnect_after));
        true
    }

    /// Closes the connection if its site was removed or its token expired
    /// unrefreshed; true if it did.
    fn check_client(&mut self) -> bool {
        let Some(code) = self.client.check(unix_now()) else {
            return false;
        };
        self.count_rejection(code);
        self.context.metrics().client_error(code);
        let message = match code {
            ErrorCode::SiteRemoved => "this site is no longer served here",
            _ => "the token expired; reconnect with a fresh one and resume",
        };
        self.begin_close(CloseReason::Code(code), message, None);
        true
    }

    /// Whether an operator disconnected this connection's user.
    fn is_disconnected(&self) -> bool {
        let site = self.client.site().id();
        self.client
            .user()
            .is_some_and(|user| self.context.disconnects().includes(site, user))
    }

    fn is_idle(&self) -> bool {
        if !P::TRANSPORT.hears_client() {
            return false;
        }
        let now = self.context.tracker().now() as u32;
        let silent = now.wrapping_sub(self.heard_at);
        u64::from(silent) >= self.context.config().idle_ticks()
    }

    /// Queues the rest of a frame the hub wrote part of while the
    /// connection was parked; its position is the client's already.
    fn finish_frame(&mut self, started: Queued) {
        let Some(frame) = P::SHARED_FRAME else {
            return;
        };
        let rest = frame(&started.message).slice(started.written as usize..);
        self.out.push_rest(rest);
        self.metrics().delivered.inc();
    }

    /// Parks the connection when it has nothing to do, nothing unwritten,
    /// one subscription and a protocol whose frames the hub may write
    /// (`outbox.rs`): the hub then writes to the socket itself until the
    /// task's next drain. `link_idle`: the transport has nothing of its
    /// own to write either.
    pub(crate) fn park(&self, link_idle: bool) {
        if P::SHARED_FRAME.is_none()
            || !link_idle
            || self.closing.is_some()
            || self.aside.is_some()
            || !self.out.is_empty()
        {
            return;
        }
        if let Some((slot, position)) = self.subscriptions.only() {
            self.outbox.park(slot, position);
        }
    }

    /// Encodes live messages the client has not had, but those that must
    /// skip this connection (a Pusher publish's `socket_id`), which still
    /// move its position on.
    fn deliver(&mut self, items: Queue) {
        let mut sent = 0;
        let id = self.id();
        for Queued { slot, message, .. } in items {
            match self.subscriptions.accept(slot, &message) {
                Accept::Skip => continue,
                Accept::Deliver => {}
                // Dropped upstream (the timeline expander's overflow): the
                // client reloads from the last dropped position.
                Accept::Gap(position) => {
                    self.announce_reset(slot, &message.channel, position);
                    continue;
                }
                Accept::AfterReset(position) => {
                    self.announce_reset(slot, &message.channel, position);
                }
            }
            if message.excluded == Some(id) {
                continue;
            }
            self.protocol
                .message(&message, &self.subscriptions, &mut self.out);
            sent += 1;
        }
        self.metrics().delivered.inc_by(sent);
    }

    /// Tells the client that its position in a channel moved on without
    /// it (a new epoch, or messages dropped upstream): `subscribed` with
    /// `recovered: false`, so that it reloads.
    fn announce_reset(&mut self, slot: u32, channel: &ChannelKey, position: Position) {
        let event = Event::Subscribed {
            slot,
            channel,
            position,
            recovered: false,
            members: None,
        };
        self.protocol
            .encode(event, &self.subscriptions, &mut self.out);
    }

    // === closing ===

    /// Ends a response whose protocol has said all it will (a long-poll
    /// that got its messages or its ping).
    fn end_if_answered(&mut self) {
        if self.closing.is_none() && self.protocol.answered() {
            self.begin_close(CloseReason::Answered, "answered", None);
        }
    }

    /// Starts closing for `reason`: queues the protocol's last words and
    /// arms the deadline. `message` is for people; `reconnect_after` comes
    /// with a shutdown.
    ///
    /// A shutdown keeps everything queued ahead of its advice: those are
    /// messages their publishers were told were accepted, and the client is
    /// reading; an answered long-poll keeps its answer. Any other close drops what is queued (all but the rest of a
    /// frame on its way): the client is not reading, is gone, or is told
    /// its connection is over, and resumes from history.
    pub(crate) fn begin_close(
        &mut self,
        reason: CloseReason,
        message: &str,
        reconnect_after: Option<Duration>,
    ) {
        if self.closing.is_some() {
            return;
        }
        // An answered long-poll's messages are its answer.
        if !matches!(
            reason,
            CloseReason::Code(ErrorCode::Shutdown) | CloseReason::Answered
        ) {
            self.out.keep_started_frame();
        }
        self.encode(Event::Closing {
            reason,
            message,
            reconnect_after,
        });
        // Counted when decided: a client that stopped reading may never
        // take the close, and the operator should not have to wait for it.
        self.metrics().disconnected(reason);
        self.closing = Some(reason);
        let timeout = self.context.config().close_timeout;
        self.aside = Some(Box::new(Aside::Closing(Box::pin(tokio::time::sleep(
            timeout,
        )))));
    }

    /// Whether the close deadline has passed.
    pub(crate) fn poll_deadline(&mut self, cx: &mut TaskContext<'_>) -> bool {
        match self.aside.as_deref_mut() {
            Some(Aside::Closing(deadline)) => deadline.as_mut().poll(cx).is_ready(),
            _ => false,
        }
    }

    /// Counts and logs the end of the connection (once).
    pub(crate) fn finish(&mut self, reason: CloseReason) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.outbox.detach();
        self.report_traffic(self.outbox.take_handed());
        if self.closing.is_none() {
            self.metrics().disconnected(reason);
        }
        tracing::debug!(
            conn.id = self.id(),
            reason = reason.as_str(),
            "connection closed"
        );
    }

    /// Passes what the connection received since its last report on to
    /// the traffic accounting (`traffic.rs`): on each tick and at the end.
    fn report_traffic(&mut self, handed: Handed) {
        let Some(sink) = self.context.traffic() else {
            return;
        };
        let connected_ms = self.client.take_connected_ms(unix_now_ms());
        if handed == Handed::default() && connected_ms == 0 {
            return;
        }
        let received = Received {
            deliveries: handed.deliveries.into(),
            bytes: handed.bytes.into(),
            connected_ms,
        };
        sink.received(self.client.site().id(), self.client.user(), received);
    }

    // === writing ===

    /// Writes what is queued with `write`, counting the calls.
    pub(crate) fn poll_write(
        &mut self,
        cx: &mut TaskContext<'_>,
        write: impl FnMut(&mut TaskContext<'_>, &[std::io::IoSlice<'_>]) -> Poll<std::io::Result<usize>>,
    ) -> Poll<std::io::Result<()>> {
        let writes = &self.context.metrics().transport(P::TRANSPORT).writes;
        self.out.poll_write(cx, writes, write)
    }

    /// The next chunk to send, for a writer that takes chunks one by one
    /// (an HTTP response body). `None` once the connection has closed and
    /// everything was handed out.
    pub fn poll_chunk(&mut self, cx: &mut TaskContext<'_>) -> Poll<Option<Bytes>> {
        loop {
            if let Some(chunk) = self.out.pop() {
                return Poll::Ready(Some(chunk));
            }
            if let Some(reason) = self.closing {
                self.finish(reason);
                return Poll::Ready(None);
            }
            if !self.poll_work(cx) {
                return Poll::Pending;
            }
        }
    }
}

/// A connection whose bytes another writer takes chunk by chunk (an HTTP
/// response body), whatever its protocol.
pub trait Chunks: Send {
    /// See [`Connection::poll_chunk`].
    fn poll_chunk(&mut self, cx: &mut TaskContext<'_>) -> Poll<Option<Bytes>>;
}

impl<P: Protocol> Chunks for Connection<P> {
    fn poll_chunk(&mut self, cx: &mut TaskContext<'_>) -> Poll<Option<Bytes>> {
        Connection::poll_chunk(self, cx)
    }
}

impl<P: Protocol> Drop for Connection<P> {
    fn drop(&mut self) {
        // A connection dropped without a close (an HTTP body the server
        // dropped because its client went away) ends here.
        self.finish(CloseReason::ClientClosed);
        self.context.tracker().unregister(&self.tracked);
        self.metrics().connections.dec();
    }
}
