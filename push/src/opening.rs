//! The channels a connection is subscribed to as it opens, named in its
//! URL: `GET /sse?channel=…` and `GET /ws?channel=…`, with a cursor to
//! resume from (`Last-Event-ID` or `last_event_id` on SSE, `since` on a
//! WebSocket). One set of rules for both transports: the same parsing, the
//! same admission checks, the same codes, and the same opening order
//! (every `subscribed`, in URL order, then what each channel missed).
//!
//! Opening happens before the connection's session exists, so that a
//! refusal is answered before anything is spawned and the session future
//! stays its size: nothing here is kept once the connection has started.

use std::{borrow::Cow, net::SocketAddr, sync::Arc};

use fanout::{ChannelKey, ChannelName, Position};

use crate::{
    Client, Context, ErrorCode, Protocol, Refusal,
    connection::Connection,
    outbox::{Direct, Outbox},
    sse::cursor,
    subscriptions::{self, Backlog},
};

/// The most channels one URL may name, whatever its site's limit (which
/// [`Opening::admit`] checks afterwards): it bounds parsing work.
pub const MAX_URL_CHANNELS: usize = 1024;

/// The channels named in a connection's URL, each with the position to
/// resume it from when the URL (or `Last-Event-ID`) had a cursor.
#[derive(Debug, Default)]
pub struct Opening {
    /// Local names, as the client wrote them, in URL order.
    pub(crate) channels: Vec<ChannelName>,
    /// One position per channel, in the same order.
    pub(crate) cursor: Option<Vec<Position>>,
    /// Or one backlog per channel, in the same order (Meteor's URLs).
    pub(crate) backlogs: Option<Vec<Backlog>>,
    /// The channels are Herald's own (`ChannelKey::own`), which no client
    /// names: their protocol decides what of them each client gets (a
    /// Mercure subscriber's topics), so the site's read rules are not asked.
    pub(crate) own: bool,
}

/// The query parameters a connection's URL may carry.
#[derive(Debug, Default)]
pub(crate) struct Query {
    pub channels: Vec<ChannelName>,
    /// The text of the cursor parameter (its name depends on the transport).
    pub cursor: Option<String>,
    pub key: Option<String>,
    pub token: Option<String>,
}

fn refusal(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Refusal {
    Refusal::new(code, message)
}

impl Query {
    /// Parses `query`; `cursor_param` names the parameter that holds the
    /// cursor. At most `max_channels` channels, each valid and listed once.
    pub(crate) fn parse(
        query: &str,
        cursor_param: &str,
        max_channels: usize,
    ) -> Result<Self, Refusal> {
        let mut params = Query::default();
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*name {
                "channel" => params.add_channel(&value, max_channels)?,
                "key" => params.key = Some(value.into_owned()),
                "token" => params.token = Some(value.into_owned()),
                name if name == cursor_param => params.cursor = Some(value.into_owned()),
                _ => {}
            }
        }
        Ok(params)
    }

    fn add_channel(&mut self, name: &str, max_channels: usize) -> Result<(), Refusal> {
        let channel = ChannelName::new(name)
            .map_err(|e| refusal(ErrorCode::InvalidChannel, e.to_string()))?;
        if self.channels.contains(&channel) {
            return Err(refusal(
                ErrorCode::DuplicateChannel,
                format!("channel {channel} is listed twice"),
            ));
        }
        self.channels.push(channel);
        if self.channels.len() > max_channels {
            return Err(refusal(
                ErrorCode::TooManyChannels,
                format!("a connection may name at most {max_channels} channels"),
            ));
        }
        Ok(())
    }
}

impl Opening {
    /// The channels of a WebSocket URL (`GET /ws?channel=…&since=…`); none
    /// is fine: such a client subscribes with frames.
    pub fn from_ws_query(query: &str) -> Result<Self, Refusal> {
        let query = Query::parse(query, "since", MAX_URL_CHANNELS)?;
        let since = query.cursor.as_deref().filter(|v| !v.is_empty());
        Opening::new(query.channels, since)
    }

    /// `channels`, resumed from `cursor` when there is one: exactly one
    /// `epoch:offset` per channel, in order.
    pub(crate) fn new(channels: Vec<ChannelName>, cursor: Option<&str>) -> Result<Self, Refusal> {
        let cursor = match cursor {
            None => None,
            Some(text) => Some(resume_cursor(text, channels.len())?),
        };
        Ok(Opening {
            channels,
            cursor,
            backlogs: None,
            own: false,
        })
    }

    /// `channels`, each replaying its `backlogs` entry of what it keeps.
    pub(crate) fn with_backlogs(channels: Vec<ChannelName>, backlogs: Vec<Backlog>) -> Self {
        debug_assert_eq!(channels.len(), backlogs.len());
        Opening {
            channels,
            cursor: None,
            backlogs: Some(backlogs),
            own: false,
        }
    }

    /// Herald's own channel `channel` of the client's site, replaying `backlog`.
    pub(crate) fn own(channel: ChannelName, backlog: Backlog) -> Self {
        Opening {
            own: true,
            ..Self::with_backlogs(vec![channel], vec![backlog])
        }
    }

    /// `channel` as a channel of `client`'s site.
    fn scope(&self, client: &Client, channel: &ChannelName) -> ChannelKey {
        if self.own {
            ChannelKey::own(client.site().id(), channel)
        } else {
            client.scope(channel)
        }
    }

    /// Checks that `client` may read every channel and no more of them than
    /// its site allows, and that opening them keeps within the site's
    /// new-channel rate. Each refusal is counted against the site.
    pub(crate) fn admit(&self, context: &Context, client: &Client) -> Result<(), Refusal> {
        let refuse = |refusal: Refusal| {
            context.metrics().reject(client.site().id(), refusal.code);
            refusal
        };
        let max = client.site().settings().limits.max_subscriptions;
        if self.channels.len() > max {
            return Err(refuse(Refusal::new(
                ErrorCode::TooManyChannels,
                format!("a connection may have at most {max} channels"),
            )));
        }
        let on_channel = |channel: &ChannelName, refusal: Refusal| {
            let message = format!("{channel}: {}", refusal.message);
            refuse(Refusal::new(refusal.code, message))
        };
        for channel in self.channels.iter().filter(|_| !self.own) {
            client
                .may_read(channel, None)
                .and_then(|()| client.member(channel, None, false).map(drop))
                .map_err(|refusal| on_channel(channel, refusal))?;
        }
        // After every read check, so that a refused client takes no token
        // from the site's bucket.
        for channel in &self.channels {
            subscriptions::opens_in_time(context, client, &self.scope(client, channel))
                .map_err(|refusal| on_channel(channel, refusal))?;
        }
        Ok(())
    }

    /// Subscribes an admitted client to every channel, each from its
    /// cursor position, and reads what each missed. The connection starts
    /// with [`Subscribed::start`]. With `direct`, the hub may write to the
    /// connection's socket itself while it is parked (`outbox.rs`).
    pub(crate) async fn subscribe(
        self,
        context: &Context,
        client: &Client,
        peer: SocketAddr,
        direct: Option<Direct>,
    ) -> Result<Subscribed, Refusal> {
        let limit = context.config().outbox_max_bytes;
        let outbox = Arc::new(Outbox::new(limit, direct));
        let mut opened = Vec::with_capacity(self.channels.len());
        for (slot, channel) in self.channels.iter().enumerate() {
            let key = self.scope(client, channel);
            let subscribed = match &self.backlogs {
                Some(backlogs) => {
                    subscriptions::open_backlog(context, &outbox, slot as u32, key, backlogs[slot])
                        .await
                }
                None => {
                    let since = self.cursor.as_ref().map(|cursor| cursor[slot]);
                    // Admitted: a presence channel's member is the token's user.
                    let member = client.member(channel, None, false).ok().flatten();
                    subscriptions::open(context, &outbox, slot as u32, key, since, member).await
                }
            };
            match subscribed {
                Ok(subscription) => opened.push(subscription),
                Err(error) => {
                    tracing::warn!(client.addr = %peer, %error, "subscribe at opening failed");
                    return Err(Refusal::new(ErrorCode::Unavailable, error.to_string()));
                }
            }
        }
        Ok(Subscribed { outbox, opened })
    }
}

/// A connection's URL channels, registered with the hub and read up to
/// now: what a [`Connection`] starts from.
pub(crate) struct Subscribed {
    /// Where the hub already leaves the channels' live messages.
    outbox: Arc<Outbox>,
    opened: Vec<subscriptions::Opened>,
}

impl Subscribed {
    /// The connection: its opening words, then every `subscribed` and
    /// what each channel missed.
    pub(crate) fn start<P: Protocol>(
        self,
        context: Context,
        client: Client,
        protocol: P,
        peer: SocketAddr,
    ) -> Connection<P> {
        let mut connection = Connection::new(context, self.outbox, client, protocol, peer);
        if !self.opened.is_empty() {
            connection.start(self.opened);
        }
        connection
    }
}

/// The position of each channel to resume from, from a cursor the server
/// handed out (an SSE event id, or positions joined by `,`).
fn resume_cursor(text: &str, channels: usize) -> Result<Vec<Position>, Refusal> {
    cursor::parse(text, channels).ok_or_else(|| {
        refusal(
            ErrorCode::BadLastEventId,
            format!("expected {channels} comma-separated epoch:offset positions, one per channel"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Ok`: the number of channels and of cursor positions; `Err`: the code.
    type Parsed = Result<(usize, Option<usize>), ErrorCode>;

    fn ws(query: &str) -> Parsed {
        Opening::from_ws_query(query)
            .map(|o| (o.channels.len(), o.cursor.map(|c| c.len())))
            .map_err(|r| r.code)
    }

    #[test]
    fn websocket_queries() {
        let cases: &[(&str, Parsed)] = &[
            ("", Ok((0, None))),
            ("key=k&token=t", Ok((0, None))),
            ("channel=a", Ok((1, None))),
            ("channel=a&channel=user%3A1", Ok((2, None))),
            ("channel=a&since=1f%3A3", Ok((1, Some(1)))),
            ("channel=a&channel=b&since=1f:3,2a:0", Ok((2, Some(2)))),
            ("channel=a&since=", Ok((1, None))),
            // SSE's cursor parameter means nothing here.
            ("channel=a&last_event_id=nope", Ok((1, None))),
            ("channel=bad%20name", Err(ErrorCode::InvalidChannel)),
            ("channel=a&channel=a", Err(ErrorCode::DuplicateChannel)),
            ("channel=a&since=nope", Err(ErrorCode::BadLastEventId)),
            (
                "channel=a&channel=b&since=1f:3",
                Err(ErrorCode::BadLastEventId),
            ),
            ("channel=a&since=1f:3,1f:4", Err(ErrorCode::BadLastEventId)),
            ("since=1f:3", Err(ErrorCode::BadLastEventId)),
        ];
        for (query, expected) in cases {
            assert_eq!(&ws(query), expected, "{query:?}");
        }
    }

    #[test]
    fn channels_are_bounded() {
        let query: Vec<String> = (0..=MAX_URL_CHANNELS)
            .map(|i| format!("channel=c{i}"))
            .collect();
        assert_eq!(ws(&query.join("&")), Err(ErrorCode::TooManyChannels));
        let parsed = Query::parse("channel=a&channel=b&channel=c", "since", 2);
        assert_eq!(
            parsed.err().map(|r| r.code),
            Some(ErrorCode::TooManyChannels)
        );
    }
}
