//! The echo protocol, for conformance testing only (`docs/reliability.md`,
//! "Autobahn"): every text or binary message a client sends comes back
//! unchanged, in a frame of the same kind, and nothing else is said.
//!
//! It rides the whole WebSocket path of `/ws` (admission, the site's frame
//! limits, Herald's frame reader (`ws/reader.rs`) and control frames, its
//! own frame writer, the connection core and its close handshake), so a conformance
//! test suite pointed at it checks the codec that `/ws` clients meet. The
//! route that serves it is off unless configured, and loopback only.
//!
//! An echo is the answer to the frame it echoes, as a pong is to a ping:
//! [`EchoWs::parse`] keeps the frame and asks the core for
//! [`Intent::Ping`], and the core's [`Event::Pong`], encoded at once, writes
//! the kept frame back. The core needs nothing of its own for it.

use std::sync::Arc;

use bytes::Bytes;
use fanout::Message;

use super::{ClientFrame, Event, Intent, Protocol};
use crate::{Refusal, Transport, connection::Outgoing, subscriptions::Subscriptions, ws};

/// The echo protocol on WebSocket.
#[derive(Debug, Default)]
pub struct EchoWs {
    /// The frame answering the client's last message, until the core's
    /// answer to it is encoded.
    echo: Option<Bytes>,
}

impl Protocol for EchoWs {
    const TRANSPORT: Transport = Transport::Ws;

    fn parse(&mut self, frame: ClientFrame<'_>) -> Result<Intent, Refusal> {
        self.echo = Some(match frame {
            ClientFrame::Text(text) => ws::frame::text(text.as_bytes()),
            ClientFrame::Binary(data) => ws::frame::binary(data),
        });
        Ok(Intent::Ping)
    }

    /// Only the echo is written: no welcome, no heartbeat, no last words
    /// (the close frame with its code is the link's).
    fn encode(&mut self, event: Event<'_>, _view: &Subscriptions, out: &mut Outgoing) {
        if let Event::Pong = event
            && let Some(echo) = self.echo.take()
        {
            out.push(echo);
        }
    }

    /// An echo connection subscribes to nothing, so no message reaches it.
    fn message(&mut self, _message: &Arc<Message>, _view: &Subscriptions, _out: &mut Outgoing) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo(frame: ClientFrame<'_>) -> Vec<u8> {
        let mut protocol = EchoWs::default();
        assert_eq!(protocol.parse(frame), Ok(Intent::Ping));
        let mut out = Outgoing::default();
        protocol.encode(Event::Heartbeat, &Subscriptions::default(), &mut out);
        assert!(out.pop().is_none(), "a heartbeat says nothing");
        protocol.encode(Event::Pong, &Subscriptions::default(), &mut out);
        let frame = out.pop().expect("the echo").to_vec();
        assert!(out.pop().is_none());
        frame
    }

    #[test]
    fn echoes_text_as_text_and_binary_as_binary() {
        assert_eq!(echo(ClientFrame::Text("hé")), b"\x81\x03h\xc3\xa9");
        assert_eq!(echo(ClientFrame::Binary(&[0, 255])), b"\x82\x02\x00\xff");
    }
}
