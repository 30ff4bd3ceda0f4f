//! Herald's native protocol (`docs/protocol.md`), on WebSocket
//! ([`NativeWs`]: JSON text frames both ways) and on SSE ([`NativeSse`]:
//! events whose `id` is a cursor over every channel of the stream), and on
//! HTTP long-poll ([`NativePoll`]: one JSON answer per request).

mod json;
mod parse;
mod poll;

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use fanout::Message;

use self::json::Typed;
pub use self::poll::NativePoll;
use super::{ClientFrame, Event, Intent, Protocol, Slot};
use crate::{
    CloseReason, ErrorCode, Refusal, Transport, connection::Outgoing, sse,
    subscriptions::Subscriptions, ws,
};

/// The native protocol on WebSocket.
#[derive(Debug, Default, Clone, Copy)]
pub struct NativeWs;

/// The native protocol on Server-Sent Events.
#[derive(Debug, Default, Clone, Copy)]
pub struct NativeSse;

/// The smallest `retry:` sent on shutdown, in milliseconds: EventSource
/// keeps using `retry` for every attempt while the server is down, with no
/// back-off of its own, so it is never handed a tiny one, even when the
/// jitter drew one.
const MIN_SHUTDOWN_RETRY_MS: u128 = 1000;

impl Protocol for NativeWs {
    const TRANSPORT: Transport = Transport::Ws;

    const SHARED_FRAME: Option<fn(&Message) -> Bytes> = Some(ws_message);

    fn parse(&mut self, frame: ClientFrame<'_>) -> Result<Intent, Refusal> {
        match frame {
            ClientFrame::Text(text) => parse::parse(text),
            ClientFrame::Binary(_) => Err(Refusal::new(
                ErrorCode::BadFrame,
                "binary frames are not part of the protocol; send JSON text",
            )),
        }
    }

    fn encode(&mut self, event: Event<'_>, _view: &Subscriptions, out: &mut Outgoing) {
        let json = match event {
            Event::Opened {
                connection_id,
                ping_interval,
                expires_at,
            } => json::welcome(connection_id, ping_interval.as_millis(), expires_at),
            Event::Subscribed {
                channel,
                position,
                recovered,
                members,
                ..
            } => json::subscribed(Typed::Yes, channel, position, recovered, members),
            Event::Unsubscribed { channel } => json::unsubscribed(channel),
            Event::Pong => json::pong(),
            Event::Refreshed { expires_at } => json::refreshed(expires_at),
            // The native protocol has no sign-in: its clients bring tokens.
            Event::SignedIn { .. } => return,
            Event::Refused(refusal) => json::error(Typed::Yes, refusal),
            Event::Heartbeat => return out.push(ws::frame::ping()),
            Event::Closing {
                reason,
                message,
                reconnect_after,
            } => match last_words(reason, Transport::Ws) {
                LastWords::None => return,
                LastWords::Reconnect => {
                    let delay = reconnect_after.unwrap_or_default().as_millis();
                    json::reconnect(Typed::Yes, delay)
                }
                LastWords::Error(code) => {
                    json::error(Typed::Yes, &Refusal::new(code, message.to_string()))
                }
            },
        };
        out.push(ws::frame::text(json.as_bytes()));
    }

    fn message(&mut self, message: &Arc<Message>, _view: &Subscriptions, out: &mut Outgoing) {
        out.push(ws_message(message));
    }
}

impl Protocol for NativeSse {
    const TRANSPORT: Transport = Transport::Sse;

    /// SSE clients send nothing after their request.
    fn parse(&mut self, _frame: ClientFrame<'_>) -> Result<Intent, Refusal> {
        Err(Refusal::new(
            ErrorCode::BadFrame,
            "an event stream takes no frames",
        ))
    }

    fn encode(&mut self, event: Event<'_>, view: &Subscriptions, out: &mut Outgoing) {
        match event {
            // The first words of every stream: how long EventSource waits
            // before it reconnects by itself.
            Event::Opened { .. } => out.push(Bytes::from_static(b"retry: 2000\n\n")),
            Event::Subscribed {
                slot,
                channel,
                position,
                recovered,
                members,
            } => {
                let id = sse::cursor::format(view.positions_before(slot, position));
                let data = json::subscribed(Typed::No, channel, position, recovered, members);
                out.push(sse::event::event(Some(&id), Some("subscribed"), &data));
            }
            Event::Refused(refusal) => {
                let data = json::error(Typed::No, refusal);
                out.push(sse::event::event(None, Some("error"), &data));
            }
            Event::Heartbeat => out.push(Bytes::from_static(b": ping\n\n")),
            Event::Closing {
                reason,
                message,
                reconnect_after,
            } => match last_words(reason, Transport::Sse) {
                LastWords::None => {}
                LastWords::Reconnect => {
                    let delay = reconnect_after.unwrap_or_default().as_millis();
                    let retry = delay.max(MIN_SHUTDOWN_RETRY_MS);
                    let data = json::reconnect(Typed::No, delay);
                    let mut words = format!("retry: {retry}\n").into_bytes();
                    words.extend_from_slice(&sse::event::event(None, Some("reconnect"), &data));
                    out.push(Bytes::from(words));
                }
                LastWords::Error(code) => {
                    let refusal = Refusal::new(code, message.to_string());
                    let data = json::error(Typed::No, &refusal);
                    out.push(sse::event::event(None, Some("error"), &data));
                }
            },
            // Answers to client frames, which an event stream never has.
            Event::Unsubscribed { .. }
            | Event::Pong
            | Event::Refreshed { .. }
            | Event::SignedIn { .. } => {}
        }
    }

    fn message(&mut self, message: &Arc<Message>, view: &Subscriptions, out: &mut Outgoing) {
        // The cursor is this stream's own; the event after it is everyone's.
        out.push_part(sse::cursor::id_line(view.positions()));
        out.push(sse_message(message));
    }
}

/// What the native protocol says before a connection closes.
enum LastWords {
    None,
    /// `reconnect` with the shutdown's delay.
    Reconnect,
    /// `error` with the code and the core's message.
    Error(ErrorCode),
}

fn last_words(reason: CloseReason, transport: Transport) -> LastWords {
    match reason {
        CloseReason::ClientClosed | CloseReason::IoError | CloseReason::Answered => LastWords::None,
        CloseReason::Code(ErrorCode::Shutdown) => LastWords::Reconnect,
        // A WebSocket whose client broke the framing hears it in the RFC
        // 6455 close code (100x) alone: a frame of ours could not be read
        // in any case. Every 40xx/41xx close (a slow or silent client
        // included: one small frame, bounded, since the queue behind it
        // was dropped) comes behind an `error` frame with its code, as
        // `docs/protocol.md` promises. SSE has no close code to say it.
        CloseReason::Code(
            ErrorCode::ProtocolError | ErrorCode::InvalidPayload | ErrorCode::MessageTooBig,
        ) if transport == Transport::Ws => LastWords::None,
        CloseReason::Code(code) => LastWords::Error(code),
    }
}

/// The WebSocket `message` frame of `message`, built once and shared by
/// every native WebSocket subscriber.
pub(crate) fn ws_message(message: &Message) -> Bytes {
    message.encoded(Slot::NativeWs.index(), |m| {
        let mut json = BytesMut::with_capacity(m.data.len() + 128);
        json::message(m, Typed::Yes, &mut json);
        ws::frame::text(&json)
    })
}

/// The shared part of an SSE message event (its `data:` lines and the
/// blank line that ends it), built once; each stream's `id:` line goes in
/// front of it.
pub(crate) fn sse_message(message: &Message) -> Bytes {
    message.encoded(Slot::NativeSse.index(), |m| {
        let mut json = BytesMut::with_capacity(m.data.len() + 128);
        json::message(m, Typed::No, &mut json);
        let mut event = BytesMut::with_capacity(json.len() + 16);
        sse::event::data_lines(&json, &mut event);
        event.put_u8(b'\n');
        event.freeze()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fanout::{ChannelKey, Epoch, Position};

    #[test]
    fn messages_keep_the_payload_bytes() {
        let position = Position {
            epoch: Epoch::from_u64(0x1f),
            offset: 3,
        };
        let data = Bytes::from_static(b"{\"a\" : [1,\n 2]}");
        let channel = ChannelKey::parse("s/public").unwrap();
        let message = Message::new(channel, position, data);
        let ws = ws_message(&message);
        assert_eq!(
            &ws[2..],
            b"{\"type\":\"message\",\"channel\":\"public\",\"epoch\":\"1f\",\"offset\":3,\"data\":{\"a\" : [1,\n 2]}}"
        );
        let sse = sse_message(&message);
        assert_eq!(
            &sse[..],
            b"data: {\"channel\":\"public\",\"epoch\":\"1f\",\"offset\":3,\"data\":{\"a\" : [1,\ndata:  2]}}\n\n"
        );
    }
}
