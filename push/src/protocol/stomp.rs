//! STOMP 1.0–1.2 over WebSocket (`GET /stomp`, subprotocols `v12.stomp`,
//! `v11.stomp`, `v10.stomp`): what browser pages written for Orbited's STOMP
//! subscribe with today, through the maintained `@stomp/stompjs` client
//! (docs/compat.md). One STOMP frame per WebSocket message, as stompjs sends.
//!
//! | client frame | intent | answer |
//! |---|---|---|
//! | `CONNECT` / `STOMP` | [`Intent::Ping`]: a hello the core answers | `CONNECTED` (`version`, `heart-beat`) |
//! | `SUBSCRIBE` (`destination`, `id`) | [`Intent::Subscribe`] to the mapped channel | `RECEIPT` if asked, then `MESSAGE`s |
//! | `UNSUBSCRIBE` (`id`) | [`Intent::Unsubscribe`] | `RECEIPT` if asked |
//! | `DISCONNECT` | [`Intent::Ping`] | `RECEIPT` if asked; the client then closes |
//! | a heart-beat (a message of line ends) | [`Intent::Ping`] | nothing: the frame was heard |
//! | `SEND` | refused: browsers do not publish on Herald (no site enables it) | `ERROR` |
//! | `ACK`, `NACK`, transactions, anything else | refused | `ERROR` |
//!
//! The site and the user are those of the WebSocket URL (`/stomp?key=…&token=…`),
//! admitted before the upgrade as on `/ws`; `CONNECT`'s `login` and
//! `passcode` are not looked at. Destinations map to channels by the rule
//! of every compatibility way in ([`StatusNetNames::stomp`]). A refused
//! frame is an `ERROR` frame and the connection stays open (a browser's
//! other subscriptions keep their messages); an `ERROR` before a close says
//! why. Herald's heartbeat is a STOMP heart-beat (a `\n` message) and a
//! WebSocket Ping, which the browser answers by itself.
//!
//! A `MESSAGE` carries its subscription's id, so its frame is this
//! connection's own: built per subscriber, the body copied in.

use std::{fmt::Write, sync::Arc};

use bytes::{Bytes, BytesMut};
use fanout::{ChannelName, Message};

use super::{ClientFrame, Event, Intent, Protocol};
use crate::{
    CloseReason, ErrorCode, Refusal, Transport,
    connection::Outgoing,
    statusnet::StatusNetNames,
    stomp::{self as frame, Frame, Parsed},
    subscriptions::Subscriptions,
    ws,
};

/// The subprotocols served, best first, with the STOMP version each means.
pub const SUBPROTOCOLS: &[(&str, &str)] = &[
    ("v12.stomp", "1.2"),
    ("v11.stomp", "1.1"),
    ("v10.stomp", "1.0"),
];

/// STOMP over one WebSocket.
#[derive(Debug, Default)]
pub struct StompWs {
    names: StatusNetNames,
    /// The heartbeat interval the core announced, in milliseconds.
    heartbeat_ms: u128,
    connected: bool,
    subscriptions: Vec<StompSubscription>,
    /// Answers owed to hellos (`CONNECT`, `DISCONNECT`), sent on [`Event::Pong`].
    owed: Vec<Owed>,
    /// The channel of the `SUBSCRIBE` the core is deciding on: its refusal
    /// drops the subscription's record.
    deciding: Option<ChannelName>,
}

#[derive(Debug)]
struct StompSubscription {
    id: String,
    destination: String,
    channel: ChannelName,
    /// The `receipt` to send once the subscribe (or unsubscribe) is done.
    receipt: Option<String>,
}

#[derive(Debug)]
enum Owed {
    Connected { version: &'static str },
    Receipt(String),
}

impl StompWs {
    /// STOMP over WebSocket naming channels by `names`.
    pub fn new(names: StatusNetNames) -> Self {
        Self {
            names,
            ..Self::default()
        }
    }

    fn refuse(message: impl Into<String>) -> Refusal {
        Refusal::new(ErrorCode::BadFrame, message.into())
    }

    fn on_frame(&mut self, frame: &Frame) -> Result<Intent, Refusal> {
        let command = frame.command.as_str();
        if !self.connected && !matches!(command, "CONNECT" | "STOMP") {
            return Err(Self::refuse("send CONNECT first"));
        }
        match command {
            "CONNECT" | "STOMP" => {
                if self.connected {
                    return Err(Self::refuse("already connected"));
                }
                let offered = frame.header("accept-version").unwrap_or("1.0");
                let version = SUBPROTOCOLS
                    .iter()
                    .map(|(_, version)| *version)
                    .find(|version| offered.split(',').any(|v| v.trim() == *version))
                    .ok_or_else(|| {
                        Self::refuse(format!(
                            "no STOMP version of {offered:?} is served: 1.0 to 1.2"
                        ))
                    })?;
                self.connected = true;
                self.owed.push(Owed::Connected { version });
                Ok(Intent::Ping)
            }
            "SUBSCRIBE" => self.subscribe(frame),
            "UNSUBSCRIBE" => {
                let id = frame
                    .header("id")
                    .or_else(|| frame.header("destination"))
                    .ok_or_else(|| Self::refuse("UNSUBSCRIBE needs an id header"))?;
                let sub = self
                    .subscriptions
                    .iter_mut()
                    .find(|sub| sub.id == id)
                    .ok_or_else(|| {
                        Refusal::new(ErrorCode::NotSubscribed, format!("no subscription {id}"))
                    })?;
                sub.receipt = frame.header("receipt").map(str::to_string);
                Ok(Intent::Unsubscribe {
                    channel: sub.channel.clone(),
                })
            }
            "DISCONNECT" => {
                if let Some(receipt) = frame.header("receipt") {
                    self.owed.push(Owed::Receipt(receipt.to_string()));
                }
                Ok(Intent::Ping)
            }
            "SEND" => Err(Refusal::new(
                ErrorCode::Forbidden,
                "SEND: browsers do not publish on this site; the site publishes",
            )),
            "ACK" | "NACK" => Err(Self::refuse(format!(
                "{command}: subscriptions here are ack:auto"
            ))),
            "BEGIN" | "COMMIT" | "ABORT" => Err(Self::refuse(format!(
                "{command}: transactions are not served"
            ))),
            other => Err(Self::refuse(format!("unknown command {other}"))),
        }
    }

    fn subscribe(&mut self, frame: &Frame) -> Result<Intent, Refusal> {
        let destination = frame
            .header("destination")
            .ok_or_else(|| Self::refuse("SUBSCRIBE needs a destination header"))?;
        // STOMP 1.0 made the id optional; stompjs always sends one.
        let id = frame.header("id").unwrap_or(destination);
        let channel = self.names.stomp(destination).map_err(|error| {
            Refusal::new(
                ErrorCode::InvalidChannel,
                format!("invalid destination: {error}"),
            )
            .on_channel(destination)
        })?;
        if self.subscriptions.iter().any(|sub| sub.id == id) {
            return Err(Self::refuse(format!("subscription id {id} is taken")));
        }
        if self.subscriptions.iter().any(|sub| sub.channel == channel) {
            return Err(Refusal::new(
                ErrorCode::AlreadySubscribed,
                format!("already subscribed to {destination}"),
            )
            .on_channel(destination));
        }
        self.subscriptions.push(StompSubscription {
            id: id.to_string(),
            destination: destination.to_string(),
            channel: channel.clone(),
            receipt: frame.header("receipt").map(str::to_string),
        });
        self.deciding = Some(channel.clone());
        Ok(Intent::Subscribe {
            channel,
            since: None,
            signature: None,
            channel_data: None,
        })
    }

    fn find(&self, channel: &str) -> Option<usize> {
        self.subscriptions
            .iter()
            .position(|sub| sub.channel.as_str() == channel)
    }
}

impl Protocol for StompWs {
    const TRANSPORT: Transport = Transport::Ws;

    fn parse(&mut self, client_frame: ClientFrame<'_>) -> Result<Intent, Refusal> {
        let bytes = match client_frame {
            ClientFrame::Text(text) => text.as_bytes(),
            ClientFrame::Binary(bytes) => bytes,
        };
        // A heart-beat: line ends only.
        if bytes.iter().all(|&b| b == b'\n' || b == b'\r') {
            return Ok(Intent::Ping);
        }
        let mut buffer = BytesMut::from(bytes);
        match frame::parse(&mut buffer) {
            Parsed::Frame(frame) => self.on_frame(&frame),
            Parsed::Incomplete => Err(Self::refuse(
                "malformed frame: a WebSocket message holds one whole frame, NUL-ended",
            )),
            Parsed::Invalid(reason) => Err(Self::refuse(format!("malformed frame: {reason}"))),
        }
    }

    fn encode(&mut self, event: Event<'_>, _view: &Subscriptions, out: &mut Outgoing) {
        match event {
            Event::Opened { ping_interval, .. } => self.heartbeat_ms = ping_interval.as_millis(),
            Event::Pong => {
                for owed in std::mem::take(&mut self.owed) {
                    let bytes = match owed {
                        Owed::Connected { version } => {
                            let heartbeat = format!("{},0", self.heartbeat_ms);
                            let headers = [
                                ("version", version),
                                ("heart-beat", heartbeat.as_str()),
                                ("server", "Herald"),
                            ];
                            frame::encode("CONNECTED", &headers, "")
                        }
                        Owed::Receipt(id) => frame::encode("RECEIPT", &[("receipt-id", &id)], ""),
                    };
                    out.push(ws::frame::text(&bytes));
                }
            }
            Event::Subscribed { channel, .. } => {
                self.deciding = None;
                if let Some(at) = self.find(channel.name())
                    && let Some(receipt) = self.subscriptions[at].receipt.take()
                {
                    let bytes = frame::encode("RECEIPT", &[("receipt-id", &receipt)], "");
                    out.push(ws::frame::text(&bytes));
                }
            }
            Event::Unsubscribed { channel } => {
                if let Some(at) = self.find(channel.as_str()) {
                    let sub = self.subscriptions.remove(at);
                    if let Some(receipt) = sub.receipt {
                        let bytes = frame::encode("RECEIPT", &[("receipt-id", &receipt)], "");
                        out.push(ws::frame::text(&bytes));
                    }
                }
            }
            Event::Refused(refusal) => {
                if let Some(channel) = self.deciding.take()
                    && let Some(at) = self.find(channel.as_str())
                {
                    self.subscriptions.remove(at);
                }
                let message = match &refusal.channel {
                    Some(channel) => format!("{channel}: {}", refusal.message),
                    None => refusal.message.to_string(),
                };
                out.push(error_frame(refusal.code, &message));
            }
            Event::Heartbeat => {
                out.push(ws::frame::text(b"\n"));
                out.push(ws::frame::ping());
            }
            Event::Closing {
                reason, message, ..
            } => {
                if let CloseReason::Code(code) = reason
                    && !matches!(
                        code,
                        ErrorCode::ProtocolError
                            | ErrorCode::InvalidPayload
                            | ErrorCode::MessageTooBig
                    )
                {
                    out.push(error_frame(code, message));
                }
            }
            Event::Refreshed { .. } | Event::SignedIn { .. } => {}
        }
    }

    fn message(&mut self, message: &Arc<Message>, _view: &Subscriptions, out: &mut Outgoing) {
        let Some(at) = self.find(message.channel.name()) else {
            return;
        };
        let sub = &self.subscriptions[at];
        let mut head = String::with_capacity(160);
        let _ = write!(
            head,
            "MESSAGE\nsubscription:{}\nmessage-id:{}\ndestination:{}\n\
             content-type:application/json\ncontent-length:{}\n\n",
            sub.id,
            message.position,
            sub.destination,
            message.data.len()
        );
        let mut payload = BytesMut::with_capacity(head.len() + message.data.len() + 1);
        payload.extend_from_slice(head.as_bytes());
        payload.extend_from_slice(&message.data);
        payload.extend_from_slice(b"\0");
        out.push(ws::frame::text(&payload));
    }
}

/// An `ERROR` frame: the code and message in the `message` header, the
/// message as the body. A refused subscription's message starts with the
/// channel it was for.
fn error_frame(code: ErrorCode, message: &str) -> Bytes {
    let summary = format!("{}: {message}", code.as_str());
    let bytes = frame::encode("ERROR", &[("message", &summary)], message);
    ws::frame::text(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(protocol: &mut StompWs, text: &str) -> Result<Intent, ErrorCode> {
        protocol.parse(ClientFrame::Text(text)).map_err(|r| r.code)
    }

    #[test]
    fn frames_become_intents_once_connected() {
        let mut stomp = StompWs::default();
        assert_eq!(
            parse(&mut stomp, "SUBSCRIBE\ndestination:/public\nid:0\n\n\0"),
            Err(ErrorCode::BadFrame),
            "before CONNECT"
        );
        assert_eq!(
            parse(
                &mut stomp,
                "CONNECT\naccept-version:1.2,1.1\nheart-beat:10000,10000\n\n\0"
            ),
            Ok(Intent::Ping)
        );
        assert!(matches!(
            stomp.owed[..],
            [Owed::Connected { version: "1.2" }]
        ));
        assert_eq!(parse(&mut stomp, "\n"), Ok(Intent::Ping), "a heart-beat");
        let subscribe = parse(
            &mut stomp,
            "SUBSCRIBE\ndestination:/all/evan\nid:sub-0\n\n\0",
        );
        assert!(
            matches!(&subscribe, Ok(Intent::Subscribe { channel, since: None, .. }) if channel.as_str() == "all-evan"),
            "{subscribe:?}"
        );
        assert_eq!(
            parse(
                &mut stomp,
                "SUBSCRIBE\ndestination:/all/evan\nid:sub-1\n\n\0"
            ),
            Err(ErrorCode::AlreadySubscribed)
        );
        assert_eq!(
            parse(&mut stomp, "SUBSCRIBE\ndestination:/x\nid:sub-0\n\n\0"),
            Err(ErrorCode::BadFrame),
            "an id in use"
        );
        assert_eq!(
            parse(&mut stomp, "SUBSCRIBE\ndestination:/bad name\nid:2\n\n\0"),
            Err(ErrorCode::InvalidChannel)
        );
        assert!(matches!(
            parse(&mut stomp, "UNSUBSCRIBE\nid:sub-0\n\n\0"),
            Ok(Intent::Unsubscribe { .. })
        ));
        assert_eq!(
            parse(&mut stomp, "UNSUBSCRIBE\nid:nope\n\n\0"),
            Err(ErrorCode::NotSubscribed)
        );
        assert_eq!(
            parse(&mut stomp, "SEND\ndestination:/public\n\n{}\0"),
            Err(ErrorCode::Forbidden)
        );
        assert_eq!(
            parse(&mut stomp, "ACK\nid:1\n\n\0"),
            Err(ErrorCode::BadFrame)
        );
        assert_eq!(
            parse(&mut stomp, "SUBSCRIBE\nid:1\n\n"),
            Err(ErrorCode::BadFrame),
            "no NUL"
        );
        assert_eq!(
            parse(&mut stomp, "subscribe\n\n\0"),
            Err(ErrorCode::BadFrame)
        );
        assert_eq!(
            parse(&mut stomp, "CONNECT\n\n\0"),
            Err(ErrorCode::BadFrame),
            "already connected"
        );
    }

    #[test]
    fn only_served_versions_connect() {
        let mut stomp = StompWs::default();
        assert_eq!(
            parse(&mut stomp, "CONNECT\naccept-version:2.0\n\n\0"),
            Err(ErrorCode::BadFrame)
        );
        assert_eq!(
            parse(&mut stomp, "STOMP\n\n\0"),
            Ok(Intent::Ping),
            "1.0 by default"
        );
        assert!(matches!(
            stomp.owed[..],
            [Owed::Connected { version: "1.0" }]
        ));
    }
}
