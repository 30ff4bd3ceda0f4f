//! A subscriber that behaves as a well-written client does through failures: it keeps the
//! position of the last thing it handled, reconnects to a live node when its connection ends,
//! resumes from that position, and remembers every `recovered: false` it is told after its first
//! subscription (the only way Herald may excuse a missing message).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_tests::{Delivered, Position, SseClient, SseNext, WS_TIMEOUT, WsClient, WsEvent};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::super::support::is_end;

/// The nodes a subscriber may (re)connect to: the test takes a node out before it kills it.
pub(super) type LiveNodes = Arc<Mutex<Vec<SocketAddr>>>;

/// The pause before a refused subscription or a failed connection is tried again.
const RETRY: Duration = Duration::from_millis(200);

/// The transport a subscriber uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Transport {
    WebSocket,
    Sse,
}

/// Everything one subscriber saw, for the tally.
#[derive(Debug)]
pub(super) struct Seen {
    /// Which subscriber: transport and first node.
    pub(super) name: String,
    /// Every message, in arrival order, across connections.
    pub(super) messages: Vec<Delivered>,
    /// The positions it was moved to by a `recovered: false` after its first subscription.
    pub(super) resets: Vec<Position>,
    /// How many times it connected again.
    pub(super) reconnects: u32,
    /// Whether it got the END message before its time ran out.
    pub(super) finished: bool,
}

/// Starts a subscriber of `channel`, first on `live[first]`, that runs until it has read END or
/// `limit` has passed, and says on `ready` when it is first subscribed.
pub(super) fn spawn(
    transport: Transport,
    live: LiveNodes,
    first: usize,
    channel: &'static str,
    limit: Duration,
    ready: mpsc::Sender<()>,
) -> JoinHandle<Seen> {
    tokio::spawn(async move {
        let mut client = Client {
            seen: Seen {
                name: format!("{transport:?} first on node {first}"),
                messages: Vec::new(),
                resets: Vec::new(),
                reconnects: 0,
                finished: false,
            },
            last: None,
            ready: Some(ready),
            channel,
            deadline: Instant::now() + limit,
        };
        let mut attempt = first;
        while !client.seen.finished && Instant::now() < client.deadline {
            let addr = {
                let live = live.lock();
                live[attempt % live.len()]
            };
            if attempt != first {
                client.seen.reconnects += 1;
            }
            attempt += 1;
            match transport {
                Transport::WebSocket => client.run_ws(addr).await,
                Transport::Sse => client.run_sse(addr).await,
            }
            if !client.seen.finished {
                tokio::time::sleep(RETRY).await;
            }
        }
        client.seen
    })
}

struct Client {
    seen: Seen,
    /// The position of the last message handled, or the one the last `subscribed` gave.
    last: Option<Position>,
    /// Told once, at the first subscription.
    ready: Option<mpsc::Sender<()>>,
    channel: &'static str,
    deadline: Instant,
}

impl Client {
    fn left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// A `subscribed` answer or announcement: after the first, `recovered: false` moves the
    /// client to a new position and excuses what it misses before it.
    fn subscribed(&mut self, frame: &Value) {
        let position = Position::from_json(frame);
        if self.last.is_some() && frame["recovered"] == false {
            self.seen.resets.push(position.clone());
        }
        self.last = Some(position);
        if let Some(ready) = self.ready.take() {
            let _ = ready.try_send(());
        }
    }

    /// Records a message; `true` when it is the last one.
    fn message(&mut self, message: Delivered) -> bool {
        self.last = Some(message.position.clone());
        let end = is_end(&message);
        self.seen.messages.push(message);
        self.seen.finished |= end;
        end
    }

    /// One WebSocket connection: subscribe (again, with `since`, while refused), then read
    /// until the connection ends.
    async fn run_ws(&mut self, addr: SocketAddr) {
        let mut ws = WsClient::connect(&format!("ws://{addr}/ws")).await;
        loop {
            let mut subscribe = json!({"type": "subscribe", "channel": self.channel});
            if let Some(last) = &self.last {
                subscribe["since"] = json!({"epoch": last.epoch, "offset": last.offset});
            }
            ws.send_json(&subscribe).await;
            match ws.next_event(WS_TIMEOUT.min(self.left())).await {
                WsEvent::Text(text) => {
                    let frame: Value = serde_json::from_str(&text).expect("JSON frame");
                    if frame["type"] == "subscribed" {
                        self.subscribed(&frame);
                        break;
                    }
                    // Refused (`unavailable` while Redis is away): ask again shortly.
                    assert_eq!(frame["type"], "error", "answer to subscribe: {text}");
                    tokio::time::sleep(RETRY).await;
                }
                _ => return,
            }
            if self.left().is_zero() {
                return;
            }
        }
        loop {
            let text = match ws.next_event(self.left()).await {
                WsEvent::Text(text) => text,
                _ => return,
            };
            let frame: Value = serde_json::from_str(&text).expect("JSON frame");
            match frame["type"].as_str() {
                Some("message") if self.message(Delivered::parse(&text)) => return,
                Some("subscribed") => self.subscribed(&frame),
                // Shutdown advice, errors before a close: the close follows.
                _ => {}
            }
        }
    }

    /// One SSE stream, resumed with `Last-Event-ID` from the last position.
    async fn run_sse(&mut self, addr: SocketAddr) {
        let cursor = self.last.as_ref().map(Position::cursor);
        let path = format!("/sse?channel={}", self.channel);
        let mut sse = SseClient::connect(addr, &path, cursor.as_deref()).await;
        if sse.status != 200 {
            return;
        }
        loop {
            let event = match sse.try_next_event(self.left()).await {
                SseNext::Event(event) => event,
                SseNext::Ended | SseNext::Timeout => return,
            };
            match event.event.as_str() {
                "message" if self.message(Delivered::parse(&event.data)) => return,
                "subscribed" => self.subscribed(&event.json()),
                // `error` (the stream ends next) and advice.
                _ => {}
            }
        }
    }
}
