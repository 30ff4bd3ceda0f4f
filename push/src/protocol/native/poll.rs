//! The native protocol on HTTP long-poll (`GET`/`POST /poll`,
//! docs/protocol.md): one answer per request, a JSON object
//! `{"events":[…],"cursor":"…"}` whose events are the WebSocket protocol's
//! objects.
//!
//! The protocol queues exactly one chunk per event, each a whole JSON
//! object, and keeps the cursor it was left at when the poll closed;
//! `push::poll` joins them into the body. So a chunk boundary never has to
//! be read back out of the bytes, and the answer has a length.
//!
//! When a poll is answered:
//! - a first poll (no cursor): at once, with its `subscribed` events;
//! - a resumed poll: as soon as it carries a message, or a `subscribed`
//!   with `recovered: false` (the client must reload); a `subscribed` that
//!   recovered says nothing the client does not know, so it is left out;
//! - else at the poll's timeout (`push::poll`), or a close of the core's.

use std::sync::Arc;

use bytes::Bytes;
use fanout::Message;

use super::{LastWords, json, json::Typed, last_words, ws_message};
use crate::{
    ErrorCode, Refusal, Transport,
    connection::Outgoing,
    protocol::{ClientFrame, Event, Intent, Protocol},
    sse,
    subscriptions::Subscriptions,
};

/// The native protocol on one long-poll request.
#[derive(Debug, Default)]
pub struct NativePoll {
    /// The request resumed from a cursor: `subscribed` events that
    /// recovered are then not news.
    resumed: bool,
    /// Something the client must hear was queued: the poll ends.
    answered: bool,
    /// The cursor after the last event, taken as the poll closes.
    cursor: Option<String>,
}

impl NativePoll {
    /// A poll that resumes from a cursor (`resumed`) or starts afresh.
    pub fn new(resumed: bool) -> Self {
        Self {
            resumed,
            answered: false,
            cursor: None,
        }
    }

    /// The cursor the poll closed at; `None` while it is open.
    pub(crate) fn cursor(&self) -> Option<&str> {
        self.cursor.as_deref()
    }
}

impl Protocol for NativePoll {
    /// A response the client says nothing after, as SSE's (no idle
    /// timeout, no frames), counted apart in metrics.
    const TRANSPORT: Transport = Transport::Poll;

    fn parse(&mut self, _frame: ClientFrame<'_>) -> Result<Intent, Refusal> {
        Err(Refusal::new(ErrorCode::BadFrame, "a poll takes no frames"))
    }

    fn encode(&mut self, event: Event<'_>, view: &Subscriptions, out: &mut Outgoing) {
        let json = match event {
            Event::Subscribed {
                channel,
                position,
                recovered,
                members,
                ..
            } => {
                if self.resumed && recovered {
                    return;
                }
                self.answered = true;
                json::subscribed(Typed::Yes, channel, position, recovered, members)
            }
            Event::Refused(refusal) => json::error(Typed::Yes, refusal),
            Event::Closing {
                reason,
                message,
                reconnect_after,
            } => {
                self.cursor = Some(sse::cursor::format(view.positions()));
                match last_words(reason, Transport::Sse) {
                    LastWords::None => return,
                    LastWords::Reconnect => {
                        let delay = reconnect_after.unwrap_or_default().as_millis();
                        json::reconnect(Typed::Yes, delay)
                    }
                    LastWords::Error(code) => {
                        json::error(Typed::Yes, &Refusal::new(code, message.to_string()))
                    }
                }
            }
            // A poll is its own keep-alive: it ends before proxies give up.
            Event::Opened { .. }
            | Event::Heartbeat
            | Event::Unsubscribed { .. }
            | Event::Pong
            | Event::Refreshed { .. }
            | Event::SignedIn { .. } => return,
        };
        out.push(Bytes::from(json));
    }

    fn message(&mut self, message: &Arc<Message>, _view: &Subscriptions, out: &mut Outgoing) {
        out.push(poll_message(message));
        self.answered = true;
    }

    fn answered(&self) -> bool {
        self.answered
    }
}

/// A message's typed JSON object: the WebSocket frame's payload, so that
/// polls share the WebSocket subscribers' encoding and take no slot of
/// their own.
fn poll_message(message: &Message) -> Bytes {
    let frame = ws_message(message);
    // A server frame is unmasked: 2 bytes of header, then 2 or 8 more of
    // extended length when the 7-bit length says 126 or 127.
    let header = match frame.get(1).map(|b| b & 0x7f) {
        Some(126) => 4,
        Some(127) => 10,
        _ => 2,
    };
    frame.slice(header.min(frame.len())..)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fanout::{ChannelKey, Epoch, Position};

    #[test]
    fn messages_are_the_websocket_objects() {
        let channel = ChannelKey::parse("s/public").unwrap();
        for size in [3, 200, 70_000] {
            let data = format!("\"{}\"", "x".repeat(size));
            let position = Position {
                epoch: Epoch::from_u64(0x1f),
                offset: 3,
            };
            let message = Message::new(channel.clone(), position, Bytes::from(data.clone()));
            let json = poll_message(&message);
            let expected = format!(
                r#"{{"type":"message","channel":"public","epoch":"1f","offset":3,"data":{data}}}"#
            );
            assert_eq!(json, expected.as_bytes(), "{size}");
        }
    }
}
