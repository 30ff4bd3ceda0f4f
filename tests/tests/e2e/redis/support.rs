//! What the failure and churn tests share: a paced publisher that records every answer,
//! readers that collect a subscriber's messages, and the checks of what a subscriber holds.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use herald_tests::{
    Delivered, Herald, Position, Request, Response, SseClient, SseNext, WsClient, WsEvent,
};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};

/// The longest wait for a state change that should take well under a second (a node noticing
/// Redis went away or came back, an upstream unsubscribe after the linger): generous, because
/// these tests must pass on a busy two-core machine.
pub(super) const CHANGE_TIMEOUT: Duration = Duration::from_secs(15);

/// The longest wait for the paced publisher to reach a milestone.
pub(super) const PROGRESS_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a subscriber may take to catch up with everything once publishing stopped.
pub(super) const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the polling waits (`/readyz`, `PUBSUB NUMSUB`) look again.
pub(super) const POLL: Duration = Duration::from_millis(20);

/// The most publishes the paced publisher makes, whatever happens.
const PUBLISH_LIMIT: u64 = 5000;

/// The most publishes the paced publisher has waiting for an answer at once.
const PUBLISH_IN_FLIGHT: usize = 64;

/// The payload of the last message of a run: readers stop when they see it.
pub(super) const END: &str = r#""end""#;

/// Whether `message` is the last of a run.
pub(super) fn is_end(message: &Delivered) -> bool {
    message.data == END
}

/// Polls `/readyz` until it answers `status` (503 with the code `unavailable`).
pub(super) async fn wait_readyz(node: &Herald, status: u16) {
    let deadline = Instant::now() + CHANGE_TIMEOUT;
    loop {
        let response = node.get("/readyz").await;
        if response.status == status {
            if status == 503 {
                assert_eq!(response.error_code(), "unavailable", "{}", response.text());
            }
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz on {} still answers {} {} after {CHANGE_TIMEOUT:?}",
            node.addr,
            response.status,
            response.text()
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Why a reader stopped.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Stop {
    /// It read the message it was waiting for.
    Matched,
    /// `subscribed` with `recovered: false` came, at this position: the channel started a new
    /// epoch (Redis may have lost messages).
    Reset(Position),
    /// The connection ended, or something other than a message came.
    Ended(String),
    /// The time limit passed.
    TimedOut,
}

/// Reads `message` frames until one satisfies `until` (included), the connection ends, or
/// `limit` passes.
pub(super) async fn read_ws(
    ws: &mut WsClient,
    limit: Duration,
    until: impl Fn(&Delivered) -> bool,
) -> (Vec<Delivered>, Stop) {
    let deadline = Instant::now() + limit;
    let mut messages = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let text = match ws.next_event(left).await {
            WsEvent::Text(text) => text,
            WsEvent::Timeout => return (messages, Stop::TimedOut),
            other => return (messages, Stop::Ended(format!("{other:?}"))),
        };
        let frame: Value = serde_json::from_str(&text).expect("JSON frame");
        if frame["type"] == "subscribed" && frame["recovered"] == false {
            return (messages, Stop::Reset(Position::from_json(&frame)));
        }
        if frame["type"] != "message" {
            return (messages, Stop::Ended(format!("unexpected frame {text}")));
        }
        let message = Delivered::parse(&text);
        let done = until(&message);
        messages.push(message);
        if done {
            return (messages, Stop::Matched);
        }
    }
}

/// Like [`read_ws`], for an SSE stream.
pub(super) async fn read_sse(
    sse: &mut SseClient,
    limit: Duration,
    until: impl Fn(&Delivered) -> bool,
) -> (Vec<Delivered>, Stop) {
    let deadline = Instant::now() + limit;
    let mut messages = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = match sse.try_next_event(left).await {
            SseNext::Event(event) => event,
            SseNext::Timeout => return (messages, Stop::TimedOut),
            SseNext::Ended => return (messages, Stop::Ended("stream ended".into())),
        };
        if event.event == "subscribed" && event.json()["recovered"] == false {
            return (messages, Stop::Reset(Position::from_json(&event.json())));
        }
        if event.event != "message" {
            return (messages, Stop::Ended(format!("unexpected event {event:?}")));
        }
        let message = Delivered::parse(&event.data);
        let done = until(&message);
        messages.push(message);
        if done {
            return (messages, Stop::Matched);
        }
    }
}

/// What a subscriber read across resets: its messages, and where its channel started a new epoch.
#[derive(Debug)]
pub(super) struct Reading {
    /// The messages, in the order read.
    pub(super) messages: Vec<Delivered>,
    /// `(i, position)`: a `subscribed` with `recovered: false` at `position`, read before
    /// `messages[i]`.
    pub(super) resets: Vec<(usize, Position)>,
    /// Why reading stopped (never [`Stop::Reset`]).
    pub(super) stop: Stop,
}

/// Like [`read_ws`], reading on past resets and recording them.
pub(super) async fn read_ws_across_resets(
    ws: &mut WsClient,
    limit: Duration,
    until: impl Fn(&Delivered) -> bool,
) -> Reading {
    let deadline = Instant::now() + limit;
    let (mut messages, mut resets) = (Vec::new(), Vec::new());
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (more, stop) = read_ws(ws, left, &until).await;
        messages.extend(more);
        match stop {
            Stop::Reset(position) => resets.push((messages.len(), position)),
            stop => {
                return Reading {
                    messages,
                    resets,
                    stop,
                };
            }
        }
    }
}

/// Like [`read_sse`], reading on past resets and recording them.
pub(super) async fn read_sse_across_resets(
    sse: &mut SseClient,
    limit: Duration,
    until: impl Fn(&Delivered) -> bool,
) -> Reading {
    let deadline = Instant::now() + limit;
    let (mut messages, mut resets) = (Vec::new(), Vec::new());
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (more, stop) = read_sse(sse, left, &until).await;
        messages.extend(more);
        match stop {
            Stop::Reset(position) => resets.push((messages.len(), position)),
            stop => {
                return Reading {
                    messages,
                    resets,
                    stop,
                };
            }
        }
    }
}

/// Checks a subscriber that lived through one Redis restart, which started its channel on a new
/// epoch: before the one reset, the old epoch's messages from offset 1 with no gap; after it,
/// every message of the new epoch after the reset's position up to `end`, with no gap. Every
/// message is one the publisher sent, at the position it was told (or one whose publish got a
/// 503 but ran), and none comes twice. Acknowledged messages of the old epoch past what arrived
/// are what the reset announced as lost; acknowledged messages of the new epoch all arrive.
pub(super) fn assert_every_acknowledged_or_reset(
    name: &str,
    reading: &Reading,
    attempts: &[Attempt],
    end: &Position,
) {
    assert_eq!(
        reading.stop,
        Stop::Matched,
        "{name} stayed connected and got END"
    );
    let [(at, reset)] = reading.resets.as_slice() else {
        panic!("{name}: one reset, at the restart: {:?}", reading.resets);
    };
    assert_eq!(
        reset.epoch, end.epoch,
        "{name}: the reset announces END's epoch"
    );
    let (before, after) = reading.messages.split_at(*at);
    if let Some(first) = before.first() {
        assert_ne!(first.position.epoch, reset.epoch, "{name}: a new epoch");
        assert!(
            before
                .iter()
                .all(|m| m.position.epoch == first.position.epoch),
            "{name}: one epoch before the reset"
        );
        assert_contiguous(&format!("{name} before the reset"), 0, before);
    }
    assert!(
        after.iter().all(|m| m.position.epoch == reset.epoch),
        "{name}: the new epoch after the reset"
    );
    assert_contiguous(&format!("{name} after the reset"), reset.offset, after);
    assert_eq!(
        after.last().map(|m| (&m.position, m.data.as_str())),
        Some((end, END)),
        "{name}: END comes last"
    );
    let by_data: BTreeMap<&str, &Attempt> = attempts.iter().map(|a| (a.data.as_str(), a)).collect();
    for message in &reading.messages[..reading.messages.len() - 1] {
        let attempt = by_data.get(message.data.as_str()).unwrap_or_else(|| {
            panic!("{name}: {message:?} was never published (or published twice)")
        });
        if let Outcome::Acked(position) = &attempt.outcome {
            assert_eq!(
                position, &message.position,
                "{name}: {} arrived at another position than the publisher was told",
                message.data
            );
        }
    }
    let delivered: BTreeSet<&str> = reading.messages.iter().map(|m| m.data.as_str()).collect();
    assert_eq!(
        delivered.len(),
        reading.messages.len(),
        "{name}: a payload twice"
    );
    let missing: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| {
            matches!(&a.outcome, Outcome::Acked(p) if p.epoch == reset.epoch && p.offset > reset.offset)
                && !delivered.contains(a.data.as_str())
        })
        .collect();
    assert!(
        missing.is_empty(),
        "{name}: acknowledged in the new epoch but never delivered: {missing:#?}"
    );
}

/// Checks that `messages` continue a channel from offset `from` with no gap and no duplicate.
pub(super) fn assert_contiguous(name: &str, from: u64, messages: &[Delivered]) {
    let offsets: Vec<u64> = messages.iter().map(|m| m.position.offset).collect();
    let expected: Vec<u64> = (from + 1..=from + offsets.len() as u64).collect();
    assert_eq!(
        offsets, expected,
        "{name}: the messages after its position {from}, without a gap or a duplicate"
    );
}

/// Checks one subscriber's messages against what the publisher was told: every acknowledged
/// message is there with its data; offsets rise by exactly one from the first message to `end`
/// (in order, no duplicate, no hole); and every message is one the publisher sent, once.
/// Messages whose publish got a 503 but ran anyway are allowed only with `extras_allowed`.
pub(super) fn assert_holds_every_acknowledged(
    name: &str,
    messages: &[Delivered],
    attempts: &[Attempt],
    end: &Position,
    extras_allowed: bool,
) {
    assert_eq!(
        messages.last().map(|m| (&m.position, m.data.as_str())),
        Some((end, END)),
        "{name}: END comes last"
    );
    let offsets: Vec<u64> = messages.iter().map(|m| m.position.offset).collect();
    let disorder: Vec<(u64, u64)> = offsets
        .windows(2)
        .filter(|pair| pair[1] <= pair[0])
        .map(|pair| (pair[0], pair[1]))
        .collect();
    assert!(
        disorder.is_empty(),
        "{name}: out of order or duplicated (offset, then offset): {disorder:?}"
    );
    let present: BTreeSet<u64> = offsets.iter().copied().collect();
    let holes: Vec<u64> = (1..=end.offset).filter(|o| !present.contains(o)).collect();
    assert!(
        holes.is_empty(),
        "{name}: {} of {} offsets missing: {}",
        holes.len(),
        end.offset,
        ranges(&holes)
    );
    let epochs: BTreeSet<&str> = messages.iter().map(|m| m.position.epoch.as_str()).collect();
    assert_eq!(
        epochs,
        BTreeSet::from([end.epoch.as_str()]),
        "{name}: one epoch: Redis kept the channel"
    );
    let by_data: BTreeMap<&str, &Attempt> = attempts.iter().map(|a| (a.data.as_str(), a)).collect();
    for message in &messages[..messages.len() - 1] {
        let attempt = by_data.get(message.data.as_str()).unwrap_or_else(|| {
            panic!("{name}: {message:?} was never published (or published twice)")
        });
        match &attempt.outcome {
            Outcome::Acked(position) => assert_eq!(
                position, &message.position,
                "{name}: {} arrived at another position than the publisher was told",
                message.data
            ),
            _ => assert!(
                extras_allowed,
                "{name}: {message:?} arrived though its publish was refused"
            ),
        }
    }
    let delivered: BTreeSet<&str> = messages.iter().map(|m| m.data.as_str()).collect();
    assert_eq!(delivered.len(), messages.len(), "{name}: a payload twice");
    let missing: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| matches!(a.outcome, Outcome::Acked(_)) && !delivered.contains(a.data.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{name}: acknowledged but never delivered: {missing:#?}"
    );
}

/// `error.code` of an answer, if it has one (without panicking inside the publisher task).
fn error_code(response: &Response) -> Option<String> {
    let json: Value = serde_json::from_slice(&response.body).ok()?;
    json["error"]["code"].as_str().map(str::to_owned)
}

/// `[1, 2, 3, 7, 9, 10]` → `1-3, 7, 9-10`.
fn ranges(offsets: &[u64]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < offsets.len() {
        let mut j = i;
        while j + 1 < offsets.len() && offsets[j + 1] == offsets[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            offsets[i].to_string()
        } else {
            format!("{}-{}", offsets[i], offsets[j])
        });
        i = j + 1;
    }
    parts.join(", ")
}

/// Acknowledged attempts, all of them or those that started after `since`.
pub(super) fn acked(attempts: &[Attempt], since: Option<Instant>) -> u64 {
    attempts
        .iter()
        .filter(|a| matches!(a.outcome, Outcome::Acked(_)) && since.is_none_or(|s| a.started >= s))
        .count() as u64
}

/// One publish request made by the [`Publisher`].
#[derive(Debug, Clone)]
pub(super) struct Attempt {
    /// The index of the node it was sent to.
    pub(super) node: usize,
    /// When the request was sent.
    pub(super) started: Instant,
    /// When its answer had been read.
    pub(super) ended: Instant,
    /// What the answer said.
    pub(super) outcome: Outcome,
    /// The payload, `{"n":N}`: unique, so that subscribers' messages can be matched to it.
    data: String,
}

impl Attempt {
    /// The payload, `{"n":N}`.
    pub(super) fn data(&self) -> &str {
        &self.data
    }
}

/// What a publish was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Outcome {
    /// 200 with this position.
    Acked(Position),
    /// 503 with the code `unavailable`.
    Unavailable,
    /// Anything else: status and body.
    Other(u16, String),
}

/// A task that starts a publish of `{"n":1}`, `{"n":2}`, … to one channel every
/// `pace`, cycling through the nodes, until stopped or [`PUBLISH_LIMIT`] publishes; it
/// records every attempt. Each publish runs on its own (at most [`PUBLISH_IN_FLIGHT`] at once), so
/// that one slow answer does not hold up the ones after it, as with many independent publishers.
pub(super) struct Publisher {
    stop: Arc<AtomicBool>,
    attempts: watch::Receiver<Vec<Attempt>>,
    task: JoinHandle<()>,
}

impl Publisher {
    pub(super) fn start(nodes: Vec<SocketAddr>, channel: &str, pace: Duration) -> Publisher {
        let channel = json!(channel).to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, attempts) = watch::channel(Vec::new());
        let tx = Arc::new(tx);
        let task = tokio::spawn({
            let stop = Arc::clone(&stop);
            async move {
                let in_flight = Arc::new(Semaphore::new(PUBLISH_IN_FLIGHT));
                let mut running = JoinSet::new();
                let mut pace = tokio::time::interval(pace);
                pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                for n in 1..=PUBLISH_LIMIT {
                    pace.tick().await;
                    let permit = Arc::clone(&in_flight)
                        .acquire_owned()
                        .await
                        .expect("never closed");
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let node = (n as usize) % nodes.len();
                    let addr = nodes[node];
                    let data = format!(r#"{{"n":{n}}}"#);
                    let body = format!(r#"{{"channel":{channel},"data":{data}}}"#);
                    let tx = Arc::clone(&tx);
                    running.spawn(async move {
                        let started = Instant::now();
                        let response = Request::post(addr, "/api/publish")
                            .json_body(&body)
                            .send()
                            .await;
                        let ended = Instant::now();
                        drop(permit);
                        let outcome = match response.status {
                            200 => {
                                Outcome::Acked(Position::from_json(&response.json()["results"][0]))
                            }
                            503 if error_code(&response).as_deref() == Some("unavailable") => {
                                Outcome::Unavailable
                            }
                            status => Outcome::Other(status, response.text()),
                        };
                        tx.send_modify(|attempts| {
                            attempts.push(Attempt {
                                node,
                                started,
                                ended,
                                outcome,
                                data,
                            });
                        });
                    });
                }
                while let Some(done) = running.join_next().await {
                    done.expect("publish task");
                }
            }
        });
        Publisher {
            stop,
            attempts,
            task,
        }
    }

    /// How many publishes were acknowledged so far.
    pub(super) fn current(&self) -> u64 {
        acked(&self.attempts.borrow(), None)
    }

    /// Waits until the attempts so far satisfy `ready`.
    pub(super) async fn wait_for(&mut self, what: &str, ready: impl Fn(&[Attempt]) -> bool) {
        let waited = tokio::time::timeout(PROGRESS_TIMEOUT, self.attempts.wait_for(|a| ready(a)))
            .await
            .map(|result| result.is_ok());
        match waited {
            Ok(true) => {}
            Ok(false) => panic!("the publisher stopped before {what}"),
            Err(_) => panic!(
                "no {what} within {PROGRESS_TIMEOUT:?}; last attempts: {:#?}",
                self.attempts
                    .borrow()
                    .iter()
                    .rev()
                    .take(5)
                    .collect::<Vec<_>>()
            ),
        }
    }

    /// Stops publishing, waits for the publishes under way, and returns every attempt.
    pub(super) async fn stop(mut self) -> Vec<Attempt> {
        self.stop.store(true, Ordering::Relaxed);
        (&mut self.task).await.expect("publisher task");
        self.attempts.borrow().clone()
    }
}

impl Drop for Publisher {
    /// A test that fails half-way stops the publisher at once, so that its publishes do not
    /// outlive the nodes and bury the failure under connection errors.
    fn drop(&mut self) {
        self.task.abort();
    }
}
