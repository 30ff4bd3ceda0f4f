//! A worker process: `herald-bench worker` holds a share of a scenario's
//! connections, so that a run can go past the open-files limit of one
//! process. The coordinator ([`crate::fleet`]) sends it a [`Spec`] and then
//! [`Command`]s as JSON lines on stdin; it answers with [`Event`]s as JSON
//! lines on stdout. Each worker uses its own 127.0.0.x source addresses.

use std::{
    io::Write as _,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use anyhow::Context as _;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    sync::{Semaphore, watch},
};

use crate::{
    client::{self, Batch, Conn, Resume, Transport},
    now_us,
    shard::Affinity,
    stats::{Latency, WorkerReport},
    target::Templates,
};

/// What one worker does.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Spec {
    pub worker: usize,
    pub templates: Templates,
    /// Server nodes; connection `i` goes to node `i % addrs.len()` (or the
    /// node of its user's shard, [`Users::affinity`]).
    pub addrs: Vec<String>,
    pub transport: Transport,
    /// This worker's connections are numbers `first .. first + count` of the run.
    pub first: usize,
    pub count: usize,
    /// All connections on this channel, or (`None`) each on the user channel
    /// of its user number ([`Users`]).
    pub channel: Option<String>,
    /// Which user each connection is, and which node it goes to.
    pub users: Users,
    /// Source addresses 127.0.0.`source_first` .. + `source_count`.
    pub source_first: u8,
    pub source_count: u8,
    /// Handshakes in flight at once.
    pub concurrency: usize,
    /// Track sequence numbers and resume positions (the reconnect scenario).
    pub track: bool,
    /// Come back when the server closes a connection, resuming where it was,
    /// as a client library would (`reconnect --restart`): at once, then with
    /// full-jitter backoff while refused. Otherwise a closed connection stays
    /// closed.
    #[serde(default)]
    pub follow: bool,
    /// Runtime threads of the worker.
    pub threads: usize,
    /// Total connections of the run (spreads reconnects evenly).
    pub total: usize,
}

/// Which user each connection of a run is: connection `i` is user
/// `first + i * stride`. Other scenarios number users as connections
/// ([`Users::default`]); the fanout scenario spreads them over a delivery's
/// recipients.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Users {
    pub first: usize,
    pub stride: usize,
    /// Each user to the node of its timeline shard, instead of connection
    /// `i` to node `i % nodes`.
    pub affinity: Option<Affinity>,
}

impl Default for Users {
    fn default() -> Self {
        Users {
            first: 0,
            stride: 1,
            affinity: None,
        }
    }
}

impl Users {
    /// The user number of connection `index` of the run.
    pub fn user(&self, index: usize) -> usize {
        self.first + index * self.stride
    }

    /// The node (of `nodes`) connection `index` goes to.
    pub fn node(&self, index: usize, nodes: usize) -> usize {
        match &self.affinity {
            Some(affinity) => affinity.node(self.user(index), nodes),
            None => index % nodes.max(1),
        }
    }
}

/// Coordinator → worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Open connections until `upto` of this worker's share are open (or failed).
    Connect { upto: usize },
    /// Start a measurement window: zero the received count and the histogram.
    Reset,
    /// Close every connection and reconnect it, resuming where it was; the
    /// reconnects are spread evenly over `spread_ms`.
    Drop { spread_ms: u64 },
    /// Send a report; `published` is the last sequence number published, for loss counting.
    Report { published: Option<u64> },
    /// Send a final report and exit.
    Finish { published: Option<u64> },
}

/// Worker → coordinator.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Progress(Progress),
    /// Every connection attempt has finished (opened or failed).
    Connected,
    Report {
        report: Box<WorkerReport>,
    },
}

/// Running counters of a worker (or, summed, of the fleet).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub connected: u64,
    pub failed: u64,
    pub closed: u64,
    pub reconnected: u64,
    /// Messages received since the last reset.
    pub received: u64,
    /// Messages received since the worker started (never reset).
    pub received_total: u64,
    /// Messages that every open connection has received (since it opened).
    pub frontier: u64,
}

/// State shared by the worker's connection tasks.
struct Shared {
    spec: Spec,
    handshakes: Semaphore,
    connected: AtomicU64,
    failed: AtomicU64,
    closed: AtomicU64,
    reconnected: AtomicU64,
    received: AtomicU64,
    received_total: AtomicU64,
    /// Messages received per connection; `u64::MAX` once it is closed.
    counts: Vec<AtomicU64>,
    /// Receipt latencies, in shards: connection `i` records into shard
    /// `i % LATENCY_SHARDS`, once per read, so that the runtime's threads
    /// seldom wait on each other; merged when a report is asked for.
    latency: Vec<Mutex<Latency>>,
    /// Per-connection sequence tracking (reconnect scenario only).
    tracks: Vec<Mutex<Track>>,
    reconnects: Mutex<Reconnects>,
    errors: Mutex<Vec<String>>,
    /// Bumped by every `Drop` command; each connection task watches it.
    drops: watch::Sender<(u64, u64)>,
}

/// Latency histograms per worker (about 140 KB each).
const LATENCY_SHARDS: usize = 16;

/// One connection's view of the sequence it received.
#[derive(Default)]
struct Track {
    next: Option<u64>,
    lost: u64,
    duplicates: u64,
    /// Set by a reconnect: (when the connection was dropped, the last
    /// sequence it had, `lost` then); cleared once it is recovered.
    awaiting: Option<(u64, u64, u64)>,
    alive: bool,
}

#[derive(Default)]
struct Reconnects {
    reconnect_time: Latency,
    recover_time: Latency,
    recovered: u64,
    first_us: Option<u64>,
    last_us: Option<u64>,
    last_recovered_us: Option<u64>,
}

/// Runs a worker: reads the spec and commands from stdin until `Finish`.
pub async fn run() -> anyhow::Result<()> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let spec: Spec = serde_json::from_str(&lines.next_line().await?.context("no spec on stdin")?)?;
    let shared = Arc::new(Shared {
        handshakes: Semaphore::new(spec.concurrency.max(1)),
        connected: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        closed: AtomicU64::new(0),
        reconnected: AtomicU64::new(0),
        received: AtomicU64::new(0),
        received_total: AtomicU64::new(0),
        counts: (0..spec.count).map(|_| AtomicU64::new(0)).collect(),
        latency: (0..LATENCY_SHARDS)
            .map(|_| Mutex::new(Latency::new()))
            .collect(),
        tracks: (0..if spec.track { spec.count } else { 0 })
            .map(|_| Mutex::new(Track::default()))
            .collect(),
        reconnects: Mutex::new(Reconnects::default()),
        errors: Mutex::new(Vec::new()),
        drops: watch::channel((0, 0)).0,
        spec,
    });
    tokio::spawn(report_progress(shared.clone()));
    // Connections spawned so far (they open in steps).
    let mut opened = 0;
    while let Some(line) = lines.next_line().await? {
        match serde_json::from_str::<Command>(&line)? {
            Command::Connect { upto } => {
                let upto = upto.min(shared.spec.count);
                let from = opened;
                opened = opened.max(upto);
                let shared = shared.clone();
                tokio::spawn(async move {
                    for local in from..upto {
                        tokio::spawn(connection(shared.clone(), local));
                    }
                    // Wait until every attempt finished (opened, or failed).
                    while shared.connected.load(Relaxed) + shared.failed.load(Relaxed) < upto as u64
                    {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    // The counts first, so that the coordinator reads them final.
                    emit(&Event::Progress(progress(&shared)));
                    emit(&Event::Connected);
                });
            }
            Command::Reset => {
                for shard in &shared.latency {
                    *shard.lock() = Latency::new();
                }
                shared.received.store(0, Relaxed);
            }
            Command::Drop { spread_ms } => {
                let generation = shared.drops.borrow().0 + 1;
                shared.drops.send_replace((generation, spread_ms));
            }
            Command::Report { published } => emit(&report(&shared, published)),
            Command::Finish { published } => {
                emit(&report(&shared, published));
                return Ok(());
            }
        }
    }
    Ok(())
}

fn emit(event: &Event) {
    // Unwrap: these types always serialise.
    let line = serde_json::to_string(event).unwrap();
    let mut out = std::io::stdout().lock();
    // A coordinator that went away leaves nobody to tell; the worker ends
    // when its stdin closes.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Emits progress every 100 ms, and at once when the frontier moves (the
/// closed-loop publisher waits on it), checking every 2 ms.
async fn report_progress(shared: Arc<Shared>) {
    let mut last = Progress::default();
    let mut ticks = 0u32;
    loop {
        tokio::time::sleep(Duration::from_millis(2)).await;
        ticks += 1;
        let progress = progress(&shared);
        let moved =
            progress.frontier != last.frontier || progress.received_total != last.received_total;
        if moved || ticks >= 50 {
            ticks = 0;
            last = progress;
            emit(&Event::Progress(progress));
        }
    }
}

fn progress(shared: &Shared) -> Progress {
    let frontier = shared
        .counts
        .iter()
        .map(|c| c.load(Relaxed))
        .filter(|&c| c != u64::MAX)
        .min()
        .unwrap_or(0);
    Progress {
        connected: shared.connected.load(Relaxed),
        failed: shared.failed.load(Relaxed),
        closed: shared.closed.load(Relaxed),
        reconnected: shared.reconnected.load(Relaxed),
        received: shared.received.load(Relaxed),
        received_total: shared.received_total.load(Relaxed),
        frontier,
    }
}

fn report(shared: &Shared, published: Option<u64>) -> Event {
    let progress = progress(shared);
    let mut report = WorkerReport {
        connected: progress.connected,
        failed: progress.failed,
        closed: progress.closed,
        received: progress.received,
        reconnected: progress.reconnected,
        latency: merged(&shared.latency),
        errors: shared.errors.lock().clone(),
        ..Default::default()
    };
    for count in &shared.counts {
        match count.load(Relaxed) {
            0 => report.unreached += 1,
            u64::MAX | 1 => {}
            _ => report.repeated += 1,
        }
    }
    for track in &shared.tracks {
        let track = track.lock();
        report.lost += track.lost;
        report.duplicates += track.duplicates;
        // Messages published after the last one an open connection got are
        // lost too, once publishing has stopped and the stream has drained.
        if let (Some(published), Some(next), true) = (published, track.next, track.alive) {
            report.lost += published.saturating_sub(next - 1);
        }
    }
    let reconnects = shared.reconnects.lock();
    report.recovered = reconnects.recovered;
    report.reconnect_time = reconnects.reconnect_time.clone();
    report.recover_time = reconnects.recover_time.clone();
    report.first_reconnect_us = reconnects.first_us;
    report.last_reconnect_us = reconnects.last_us;
    report.last_recovered_us = reconnects.last_recovered_us;
    Event::Report {
        report: Box::new(report),
    }
}

fn merged(shards: &[Mutex<Latency>]) -> Latency {
    let mut all = Latency::new();
    for shard in shards {
        all.merge(&shard.lock());
    }
    all
}

fn note_error(shared: &Shared, error: &anyhow::Error) {
    let mut errors = shared.errors.lock();
    if errors.len() < 8 {
        errors.push(format!("{error:#}"));
    }
}

/// Opens connection `local` with `resume`, holding a handshake permit.
async fn open(shared: &Shared, local: usize, resume: &Resume) -> anyhow::Result<Conn> {
    let spec = &shared.spec;
    let index = spec.first + local;
    let addr = &spec.addrs[spec.users.node(index, spec.addrs.len())];
    let channel = spec
        .channel
        .clone()
        .unwrap_or_else(|| spec.templates.user_channel(spec.users.user(index)));
    let source = client::source_for(index, spec.source_first, spec.source_count);
    // Unwrap: the semaphore is never closed.
    let _permit = shared.handshakes.acquire().await.unwrap();
    tokio::time::timeout(
        Duration::from_secs(30),
        client::open(
            &spec.templates,
            spec.transport,
            addr,
            &channel,
            source,
            resume,
        ),
    )
    .await
    .context("handshake took over 30 s")?
}

/// One connection for the life of the worker.
async fn connection(shared: Arc<Shared>, local: usize) {
    let mut conn = match open(&shared, local, &Resume::Live).await {
        Ok(conn) => conn,
        Err(error) => {
            gone(&shared, local, &error);
            return;
        }
    };
    shared.connected.fetch_add(1, Relaxed);
    let track = shared.spec.track;
    if track {
        shared.tracks[local].lock().alive = true;
    }
    // Kept for the life of the connection: its capacity, and with `track`
    // the position to resume from.
    let mut batch = Batch {
        resume: conn.initial_resume(),
        ..Batch::default()
    };
    let latency = &shared.latency[local % LATENCY_SHARDS];
    let mut drops = shared.drops.subscribe();
    drops.mark_unchanged();
    loop {
        // Where the connection ended, how to reopen it: after how long, and
        // whether to retry while refused.
        let (delay, retry) = tokio::select! {
            next = conn.recv(track, &mut batch) => {
                // Messages parsed before an error count too.
                if !batch.deliveries.is_empty() {
                    // One clock reading, one lock and three counter updates
                    // per read: every message of a read arrived together.
                    let now = now_us();
                    {
                        let mut latency = latency.lock();
                        for sent in batch.deliveries.iter().filter_map(|d| d.sent_us) {
                            latency.record(now.saturating_sub(sent));
                        }
                    }
                    let received = batch.deliveries.len() as u64;
                    shared.received.fetch_add(received, Relaxed);
                    shared.received_total.fetch_add(received, Relaxed);
                    shared.counts[local].fetch_add(received, Relaxed);
                    if track {
                        for seq in batch.deliveries.iter().filter_map(|d| d.seq) {
                            on_sequence(&shared, local, seq, now);
                        }
                    }
                }
                if next.is_ok() && !batch.ended {
                    continue;
                }
                shared.closed.fetch_add(1, Relaxed);
                if !shared.spec.follow {
                    shared.counts[local].store(u64::MAX, Relaxed);
                    if track {
                        shared.tracks[local].lock().alive = false;
                    }
                    return;
                }
                (Duration::ZERO, true)
            },
            changed = drops.changed() => {
                if changed.is_err() {
                    return;
                }
                let (_, spread_ms) = *drops.borrow_and_update();
                let index = shared.spec.first + local;
                let delay = spread_ms * index as u64 / shared.spec.total.max(1) as u64;
                (Duration::from_millis(delay), false)
            }
        };
        // Closed before reopening: the server may be waiting for it to go.
        drop(conn);
        match reopen(&shared, local, &batch.resume, delay, retry).await {
            Some(fresh) => conn = fresh,
            None => return,
        }
    }
}

/// How long a following connection keeps trying to come back.
const FOLLOW_LIMIT: Duration = Duration::from_secs(60);
/// Full-jitter backoff while refused: a random wait up to this, doubling
/// on every refusal up to [`BACKOFF_CAP`].
const BACKOFF_FIRST: Duration = Duration::from_millis(50);
const BACKOFF_CAP: Duration = Duration::from_secs(2);

/// Reopens connection `local` at `resume` after `delay`, once its previous
/// connection is gone (dropped by a `Drop`, or closed by the server), noting
/// when, so that its recovery is timed. With `retry`, a refused attempt is
/// retried with full-jitter backoff for up to [`FOLLOW_LIMIT`]. `None`, counted
/// as failed, when it could not.
async fn reopen(
    shared: &Shared,
    local: usize,
    resume: &Resume,
    delay: Duration,
    retry: bool,
) -> Option<Conn> {
    let dropped_at = now_us();
    if shared.spec.track {
        let mut t = shared.tracks[local].lock();
        let last = t.next.map_or(0, |n| n - 1);
        t.awaiting = Some((dropped_at, last, t.lost));
    }
    tokio::time::sleep(delay).await;
    let give_up = tokio::time::Instant::now() + FOLLOW_LIMIT;
    let mut backoff = BACKOFF_FIRST;
    let opened = loop {
        let attempt = open(shared, local, resume).await;
        if attempt.is_ok() || !retry || tokio::time::Instant::now() >= give_up {
            break attempt;
        }
        let wait = rand::random_range(0..=backoff.as_micros() as u64);
        tokio::time::sleep(Duration::from_micros(wait)).await;
        backoff = (backoff * 2).min(BACKOFF_CAP);
    };
    match opened {
        Ok(conn) => {
            let now = now_us();
            shared.reconnected.fetch_add(1, Relaxed);
            let mut r = shared.reconnects.lock();
            r.reconnect_time.record(now.saturating_sub(dropped_at));
            r.first_us = Some(r.first_us.map_or(now, |f| f.min(now)));
            r.last_us = Some(r.last_us.map_or(now, |l| l.max(now)));
            Some(conn)
        }
        Err(error) => {
            gone(shared, local, &error);
            None
        }
    }
}

/// Connection `local` could not be opened: it counts as failed, and as
/// closed for the loss count.
fn gone(shared: &Shared, local: usize, error: &anyhow::Error) {
    shared.failed.fetch_add(1, Relaxed);
    shared.counts[local].store(u64::MAX, Relaxed);
    if shared.spec.track {
        shared.tracks[local].lock().alive = false;
    }
    note_error(shared, error);
}

/// Checks `seq` against what connection `local` had; counts gaps,
/// duplicates, and the moment a reconnected connection has caught up.
fn on_sequence(shared: &Shared, local: usize, seq: u64, now: u64) {
    let mut track = shared.tracks[local].lock();
    match track.next {
        None => track.next = Some(seq + 1),
        Some(next) if seq == next => track.next = Some(next + 1),
        Some(next) if seq > next => {
            track.lost += seq - next;
            track.next = Some(seq + 1);
        }
        Some(_) => track.duplicates += 1,
    }
    if let Some((dropped_at, last, lost_then)) = track.awaiting
        && seq > last
    {
        track.awaiting = None;
        let clean = track.lost == lost_then;
        drop(track);
        let mut r = shared.reconnects.lock();
        r.recover_time.record(now.saturating_sub(dropped_at));
        r.last_recovered_us = r.last_recovered_us.max(Some(now));
        if clean {
            r.recovered += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_and_their_nodes() {
        let each = Users::default();
        assert_eq!((each.user(0), each.user(7)), (0, 7));
        assert_eq!((each.node(4, 3), each.node(5, 1)), (1, 0));
        let sample = Users {
            first: 1,
            stride: 66,
            affinity: None,
        };
        assert_eq!(
            (sample.user(0), sample.user(1), sample.user(14_999)),
            (1, 67, 989_935)
        );
        // By shard: users 1 and 42 are in shards 562 and 318 of 1024.
        let by_shard = Users {
            first: 1,
            stride: 41,
            affinity: Some(Affinity {
                site: "default".into(),
                shards: 1024,
            }),
        };
        assert_eq!(by_shard.node(0, 3), 562 % 3);
        assert_eq!(by_shard.node(1, 3), 318 % 3);
    }
}
