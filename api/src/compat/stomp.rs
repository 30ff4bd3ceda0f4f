//! The STOMP publish port (`stomp.listen`): what a StatusNet site's Orbited
//! plugin publishes with, through the STOMP client it bundles
//! (`extlib/Stomp.php`), so that it publishes to Herald unchanged
//! (docs/compat.md).
//!
//! The plugin's queue daemon connects once per notice: `CONNECT` with the
//! site's credentials, one `SEND` per timeline (`destination: /all/evan`,
//! the notice's JSON as the body), `DISCONNECT`. Each `SEND` is a publish to
//! the site's channel like any other; a `receipt` header is answered with a
//! `RECEIPT` once the message is accepted. Any refusal is an `ERROR` frame
//! with a `message` header, after which the connection is closed, as STOMP
//! has it. Subscribing is not served here (STOMP over WebSocket, `/stomp`,
//! is: `push::protocol::stomp`).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::BytesMut;
use fanout::ChannelName;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use crate::{
    App,
    compat::{
        MAX_CONNECTIONS, accept_each,
        publish::{Port, count_refused, max_message_bytes, publish},
    },
    config::CompatPortConfig,
};
use push::stomp::{self as frame, Frame, Parsed, encode};

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 8 * 1024;

/// Room for a frame's command and headers beside its body.
const HEAD_ROOM: usize = 8 * 1024;

/// How long what a client still sends after an `ERROR` is read and dropped
/// before the socket closes: closed with unread bytes, a socket resets the
/// connection, and the client could lose the `ERROR` frame that says why.
const LINGER: Duration = Duration::from_secs(2);

/// What every connection of the port shares.
struct Broker {
    app: App,
    config: CompatPortConfig,
    sessions: AtomicU64,
}

/// Serves the port for as long as the process runs.
pub(crate) async fn serve(listener: TcpListener, app: App, config: CompatPortConfig) {
    let broker = Arc::new(Broker {
        app,
        config,
        sessions: AtomicU64::new(0),
    });
    let message = format!("too many connections (at most {MAX_CONNECTIONS})");
    let refusal = encode("ERROR", &[("message", &message)], "");
    accept_each(listener, "stomp", refusal, move |stream| {
        let broker = broker.clone();
        async move { converse(stream, &broker).await }
    })
    .await;
}

/// What a frame leads to.
enum Next {
    Continue,
    /// Send this `ERROR` message, then close.
    Error(String),
    /// Close (after `DISCONNECT`).
    Close,
}

/// Serves one connection's frames until it disconnects, fails or closes.
async fn converse(mut stream: TcpStream, broker: &Broker) -> std::io::Result<()> {
    let mut buffer = BytesMut::new();
    let mut connected = false;
    loop {
        let next = match frame::parse(&mut buffer) {
            Parsed::Frame(frame) => broker.handle(&frame, &mut connected, &mut stream).await?,
            Parsed::Invalid(reason) => Next::Error(format!("malformed frame: {reason}")),
            Parsed::Incomplete => {
                let max = broker.max_frame();
                if buffer.len() > max {
                    Next::Error(format!("frame too large: at most {max} bytes"))
                } else {
                    buffer.reserve(READ_CHUNK);
                    if stream.read_buf(&mut buffer).await? == 0 {
                        return Ok(());
                    }
                    Next::Continue
                }
            }
        };
        match next {
            Next::Continue => {}
            Next::Close => return stream.shutdown().await,
            Next::Error(message) => {
                stream
                    .write_all(&encode("ERROR", &[("message", &message)], ""))
                    .await?;
                stream.shutdown().await?;
                let mut sink = [0u8; READ_CHUNK];
                let drain = async { while stream.read(&mut sink).await.is_ok_and(|n| n > 0) {} };
                let _ = tokio::time::timeout(LINGER, drain).await;
                return Ok(());
            }
        }
    }
}

impl Broker {
    /// The largest frame worth reading: the site's largest message and room
    /// for the headers.
    fn max_frame(&self) -> usize {
        max_message_bytes(&self.app, &self.config.site) + HEAD_ROOM
    }

    async fn handle(
        &self,
        frame: &Frame,
        connected: &mut bool,
        stream: &mut TcpStream,
    ) -> std::io::Result<Next> {
        let next = match (frame.command.as_str(), *connected) {
            ("CONNECT" | "STOMP", false) => match self.check_login(frame) {
                Ok(()) => {
                    *connected = true;
                    let session = self.sessions.fetch_add(1, Ordering::Relaxed) + 1;
                    let session = format!("herald-{session}");
                    let mut headers = vec![("session", session.as_str())];
                    // 1.2 when the client offers it; a 1.0 client (Stomp.php)
                    // sends no accept-version and gets no version header.
                    let offers_12 = frame
                        .header("accept-version")
                        .is_some_and(|versions| versions.split(',').any(|v| v.trim() == "1.2"));
                    if offers_12 {
                        headers.push(("version", "1.2"));
                        headers.push(("heart-beat", "0,0"));
                    }
                    headers.push(("server", concat!("herald/", env!("CARGO_PKG_VERSION"))));
                    stream.write_all(&encode("CONNECTED", &headers, "")).await?;
                    Next::Continue
                }
                Err(message) => Next::Error(message),
            },
            ("CONNECT" | "STOMP", true) => Next::Error("already connected".into()),
            (_, false) => Next::Error("send CONNECT first".into()),
            ("SEND", true) => match self.send(frame).await {
                Ok(()) => Next::Continue,
                Err(message) => Next::Error(message),
            },
            ("DISCONNECT", true) => Next::Close,
            ("SUBSCRIBE" | "UNSUBSCRIBE" | "ACK" | "NACK" | "BEGIN" | "COMMIT" | "ABORT", true) => {
                Next::Error(format!(
                    "{} is not served on this port, which only publishes",
                    frame.command
                ))
            }
            (_, true) => Next::Error(format!("unknown command {}", frame.command)),
        };
        if !matches!(next, Next::Error(_))
            && let Some(receipt) = frame.header("receipt")
        {
            stream
                .write_all(&encode("RECEIPT", &[("receipt-id", receipt)], ""))
                .await?;
        }
        Ok(next)
    }

    /// `login` and `passcode` against the site's publish credential: its
    /// key and one of its secrets. The dev site has no secret and checks
    /// nothing, as its HTTP publish from loopback does not.
    fn check_login(&self, frame: &Frame) -> Result<(), String> {
        let sites = self.app.sessions().sites();
        let Some(site) = sites.by_id(&self.config.site) else {
            return Err(format!("site {} is not configured", self.config.site));
        };
        if site.settings().secrets.is_empty() {
            return Ok(());
        }
        let passcode = frame.header("passcode").unwrap_or_default();
        let login = frame.header("login").unwrap_or_default();
        let owner = sites.by_secret(passcode);
        let matches =
            owner.is_some_and(|owner| owner.id() == site.id()) && login == site.settings().key;
        if matches {
            Ok(())
        } else {
            Err("login failed: login is the site's key, passcode its publish secret".into())
        }
    }

    async fn send(&self, frame: &Frame) -> Result<(), String> {
        let Some(destination) = frame.header("destination") else {
            count_refused(&self.app, Port::Stomp);
            return Err("SEND needs a destination header".into());
        };
        let channel = self.channel(destination).map_err(|error| {
            count_refused(&self.app, Port::Stomp);
            format!("invalid destination {destination}: {error}")
        })?;
        publish(
            &self.app,
            Port::Stomp,
            &self.config.site,
            &channel,
            frame.body.to_vec(),
        )
        .await
        .map(|_| ())
        .map_err(|refused| refused.to_string())
    }

    /// Herald's channel for an Orbited destination, by the rule the Meteor
    /// port follows (`push::statusnet`): `/all/evan` is `all-evan`, the
    /// name the Meteor plugin gives the same timeline.
    fn channel(&self, destination: &str) -> Result<ChannelName, fanout::Error> {
        self.config.names.stomp(destination)
    }
}
