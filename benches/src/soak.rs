//! The `soak` scenario: Herald alone under steady connection churn and
//! publishing for a long while, sampled over time, to show that nothing it
//! holds grows with the connections it has served.
//!
//! Herald is started on its zero-config dev site. For `--seconds`, new
//! subscribers open at `--churn` per second (WebSocket and SSE in turn, from
//! fifty loopback source addresses), each lives `--clients / --churn`
//! seconds reading what it receives, then hangs up, so about `--clients` are
//! open at any moment; half share the published channel, the other half each
//! take a channel of their own (created and dropped in the registry with
//! them). A publisher posts `--rate` messages per second to the shared
//! channel throughout.
//!
//! Every `--interval` seconds the server is sampled: RSS, open file
//! descriptors (`/proc/PID/fd`), threads, and from its `/metrics` the tokio
//! tasks alive and the open connections. Before the load (after one
//! warm-up connection) and after it (every client gone and the connection
//! gauge back at 0), the same figures are taken at rest.
//!
//! `--check` fails the run when, at rest, the server holds more file
//! descriptors or tasks than before the load (beyond [`REST_SLACK`]), when
//! its RSS at the end is more than [`RSS_GROWTH`] above its RSS at the end
//! of the warm-up, or when a subscriber could not connect.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use tokio::sync::{Semaphore, watch};

use crate::{
    client::{self, Resume, Transport},
    cpus::Pinning,
    http::{HttpConn, metric_sum},
    outcome::RunResult,
    plot::{self, Series},
    process,
    publisher::{Channels, Pace, Publisher},
    server::Server,
    target::{Preset, Templates},
};

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Seconds of churn and publishing.
    #[arg(long, default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub seconds: u64,
    /// Subscribers open at any moment (each lives clients / churn seconds).
    #[arg(long, default_value_t = 200,
          value_parser = clap::value_parser!(u64).range(1..=20_000))]
    pub clients: u64,
    /// New subscribers per second (and as many hang up).
    #[arg(long, default_value_t = 50.0)]
    pub churn: f64,
    /// Messages per second published to the shared channel.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Seconds between samples.
    #[arg(long, default_value_t = 5)]
    pub interval: u64,
    /// Seconds of warm-up: the RSS at its end is the baseline for --check
    /// (default: a fifth of the run, at least one interval).
    #[arg(long)]
    pub warmup: Option<u64>,
    /// The herald binary (default: `herald` next to this binary).
    #[arg(long)]
    pub herald: Option<PathBuf>,
    /// Write the samples as CSV to this file.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Write the plot (SVG) to this file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Write the result as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Exit with status 1 if file descriptors or tasks grew, RSS grew past
    /// the bound after warm-up, or a subscriber failed to connect.
    #[arg(long)]
    pub check: bool,
    /// Hard limit for the whole run, in seconds (default: --seconds + 120).
    #[arg(long)]
    pub time_limit: Option<u64>,
    /// Which CPUs the herald process, and the bench, run on.
    #[command(flatten)]
    pub pinning: Pinning,
}

impl Args {
    pub fn limit(&self) -> Duration {
        Duration::from_secs(self.time_limit.unwrap_or(self.seconds + 120))
    }

    fn warmup(&self) -> u64 {
        self.warmup
            .unwrap_or(self.seconds / 5)
            .max(self.interval)
            .min(self.seconds)
    }
}

/// File descriptors or tasks the server may hold at rest after the load
/// beyond what it held before: lazily created parts (a history sweeper's
/// first run, a keep-alive connection of the scrape) that exist once, not
/// per connection served.
pub const REST_SLACK: f64 = 4.0;

/// How much the RSS may grow after warm-up: a quarter, and at least 16 MiB
/// (the allocator keeps freed pages a while, and the outboxes and history
/// breathe with the traffic).
pub const RSS_GROWTH: (f64, u64) = (0.25, 16 << 20);

/// The subscribers' loopback source addresses: 127.0.0.10 to 127.0.0.59.
const SOURCES: (u8, u8) = (10, 50);

/// The channel the publisher posts to.
const SHARED: &str = "soak";

/// One sample of the server.
#[derive(Clone, Copy, Debug, Default)]
struct Point {
    seconds: f64,
    rss: u64,
    fds: u64,
    threads: u64,
    tasks: f64,
    connections: f64,
    opened: u64,
    failed: u64,
    received: u64,
}

/// What the subscribers did, counted as they go.
#[derive(Default)]
struct Counts {
    opened: AtomicU64,
    failed: AtomicU64,
    received: AtomicU64,
    first_error: parking_lot::Mutex<Option<String>>,
}

pub async fn run(args: &Args) -> anyhow::Result<RunResult> {
    if args.churn <= 0.0 || args.rate < 0.0 {
        bail!("--churn must be above 0 and --rate at least 0");
    }
    let herald = args.herald.clone().unwrap_or_else(crate::default_herald);
    let cpus = args.pinning.server_set();
    let server = Server::start(&herald, None, &[], cpus.as_ref()).await?;
    let outcome = soak(args, &server).await;
    server.stop().await;
    outcome
}

async fn soak(args: &Args, server: &Server) -> anyhow::Result<RunResult> {
    let templates = Templates::preset(Preset::Herald);
    let mut metrics = HttpConn::new(&server.addr);

    // One connection opened and closed first, so the server's lazily
    // created parts exist before the baseline.
    let warm = client::open(
        &templates,
        Transport::Ws,
        &server.addr,
        SHARED,
        std::net::Ipv4Addr::new(127, 0, 0, 2),
        &Resume::Live,
    )
    .await?;
    drop(warm);
    settle(&mut metrics).await?;
    let start = Instant::now();
    let before = sample(server.pid, &mut metrics, start, &Counts::default()).await?;
    eprintln!(
        "herald-bench: soak: {} s, {} clients, {}/s churn, {} msg/s",
        args.seconds, args.clients, args.churn, args.rate
    );

    let counts = Arc::new(Counts::default());
    let (stop_tx, stop) = watch::channel(false);
    let load = Duration::from_secs(args.seconds);
    let churn = tokio::spawn(churn(
        args.clone(),
        templates.clone(),
        server.addr.clone(),
        counts.clone(),
        stop.clone(),
    ));
    let publisher = Publisher::new(
        templates.clone(),
        server.addr.clone(),
        Channels::Shared(SHARED.into()),
        100,
        1,
    );
    let (_done_tx, done) = watch::channel(0);
    let publishing = async {
        if args.rate > 0.0 {
            publisher
                .run(Pace::Rate(args.rate), load, u64::MAX, done)
                .await
        } else {
            tokio::time::sleep(load).await;
            Default::default()
        }
    };
    // Rows are written as they are taken, so that a long run that fails
    // late still leaves its samples behind.
    let mut csv_file = match &args.csv {
        Some(path) => Some(Csv::create(path)?),
        None => None,
    };
    let mut record = |point: &Point| {
        eprintln!(
            "herald-bench: soak: {:>7.1} s  RSS {:.1} MB  fds {}  tasks {}  threads {}  connections {}",
            point.seconds,
            point.rss as f64 / 1e6,
            point.fds,
            point.tasks,
            point.threads,
            point.connections
        );
        if let Some(csv) = csv_file.as_mut() {
            csv.row(point);
        }
    };
    record(&before);
    let sampling = async {
        let mut points = vec![before];
        let interval = Duration::from_secs(args.interval.max(1));
        let mut next = start + interval;
        while next <= start + load {
            tokio::time::sleep_until(next.into()).await;
            let point = sample(server.pid, &mut metrics, start, &counts).await?;
            record(&point);
            points.push(point);
            next += interval;
        }
        anyhow::Ok(points)
    };
    // A publish call that never returns must not hold the run past its load.
    let publishing = async {
        tokio::time::timeout(load + Duration::from_secs(10), publishing)
            .await
            .unwrap_or_default()
    };
    let (published, points) = tokio::join!(publishing, sampling);
    let _ = stop_tx.send(true);
    let churned = churn.await;
    let mut points = points?;
    churned.context("the churn task failed")??;

    settle(&mut metrics).await?;
    let after = sample(server.pid, &mut metrics, start, &counts).await?;
    record(&after);
    points.push(after);

    let warm_end = args.warmup() as f64;
    let warm_rss = points
        .iter()
        .rfind(|p| p.seconds <= warm_end + 0.5)
        .map_or(before.rss, |p| p.rss);
    let loaded: Vec<&Point> = points[1..points.len() - 1].iter().collect();
    let end_rss = loaded.last().map_or(after.rss, |p| p.rss);
    let max_rss = loaded.iter().map(|p| p.rss).max().unwrap_or(after.rss);

    let setup = format!(
        "{} s: ~{} subscribers open (ws and sse), {}/s replaced, {} msg/s",
        args.seconds, args.clients, args.churn, args.rate
    );
    let mut result = RunResult::new("soak", Preset::Herald.name(), setup);
    let opened = counts.opened.load(Relaxed);
    let failed = counts.failed.load(Relaxed);
    result.add("opened", "connections opened", "", opened as f64);
    result.add("failed", "connections failed", "", failed as f64);
    result.add(
        "published",
        "messages published",
        "",
        published.accepted as f64,
    );
    result.add(
        "received",
        "messages received",
        "",
        counts.received.load(Relaxed) as f64,
    );
    let mb = |b: u64| b as f64 / 1e6;
    result.add("rss_before", "RSS at rest before", "MB", mb(before.rss));
    result.add("rss_warm", "RSS after warm-up", "MB", mb(warm_rss));
    result.add("rss_max", "RSS max under load", "MB", mb(max_rss));
    result.add("rss_end", "RSS at the end of the load", "MB", mb(end_rss));
    result.add("rss_after", "RSS at rest after", "MB", mb(after.rss));
    result.add(
        "fds_before",
        "file descriptors at rest before",
        "",
        before.fds as f64,
    );
    result.add(
        "fds_after",
        "file descriptors at rest after",
        "",
        after.fds as f64,
    );
    result.add(
        "tasks_before",
        "tokio tasks at rest before",
        "",
        before.tasks,
    );
    result.add("tasks_after", "tokio tasks at rest after", "", after.tasks);
    result.add(
        "threads_before",
        "threads at rest before",
        "",
        before.threads as f64,
    );
    result.add(
        "threads_after",
        "threads at rest after",
        "",
        after.threads as f64,
    );

    let problems = judge(&before, &after, warm_rss, end_rss, opened, failed);
    if let Some(error) = counts.first_error.lock().clone() {
        result.errors.push(format!("connect: {error}"));
    }
    if let Some(error) = published.first_error {
        result.errors.push(format!("publish: {error}"));
    }
    result.ok = problems.is_empty();
    result.errors.extend(problems);

    if let Some(path) = &args.plot {
        draw(path, &points, args)?;
    }
    if let Some(path) = &args.json {
        result.write_json(path)?;
    }
    Ok(result)
}

/// What `--check` holds against a run: the server at rest after the load
/// against before it, its RSS at the end against the end of the warm-up,
/// and the subscribers that could not connect. Empty when all is well.
fn judge(
    before: &Point,
    after: &Point,
    warm_rss: u64,
    end_rss: u64,
    opened: u64,
    failed: u64,
) -> Vec<String> {
    let mb = |b: u64| b as f64 / 1e6;
    let rss_bound = warm_rss + ((warm_rss as f64 * RSS_GROWTH.0) as u64).max(RSS_GROWTH.1);
    let mut problems = Vec::new();
    if after.fds as f64 > before.fds as f64 + REST_SLACK {
        problems.push(format!(
            "file descriptors grew at rest: {} before, {} after",
            before.fds, after.fds
        ));
    }
    if after.tasks > before.tasks + REST_SLACK {
        problems.push(format!(
            "tokio tasks grew at rest: {} before, {} after",
            before.tasks, after.tasks
        ));
    }
    if end_rss > rss_bound {
        problems.push(format!(
            "RSS grew after warm-up: {:.1} MB then, {:.1} MB at the end (bound {:.1} MB)",
            mb(warm_rss),
            mb(end_rss),
            mb(rss_bound)
        ));
    }
    if failed > 0 || opened == 0 {
        problems.push(format!(
            "{failed} of {} connections failed",
            opened + failed
        ));
    }
    problems
}

/// Opens `churn` subscribers per second until `stop`, each living
/// `clients / churn` seconds; returns once every one of them has ended.
async fn churn(
    args: Args,
    templates: Templates,
    addr: String,
    counts: Arc<Counts>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let lifetime = Duration::from_secs_f64(args.clients as f64 / args.churn);
    // Handshakes in flight at once: a stalled server must not make the
    // bench pile up sockets.
    let handshakes = Arc::new(Semaphore::new(200));
    let tick = Duration::from_millis(100);
    let per_tick = args.churn * tick.as_secs_f64();
    let mut owed = 0.0;
    let mut index: usize = 0;
    let mut tasks = tokio::task::JoinSet::new();
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|&s| s) => break,
        }
        owed += per_tick;
        while owed >= 1.0 {
            owed -= 1.0;
            let transport = if index.is_multiple_of(2) {
                Transport::Ws
            } else {
                Transport::Sse
            };
            // Half share the published channel; the rest take one each.
            let channel = if (index / 2).is_multiple_of(2) {
                SHARED.to_string()
            } else {
                format!("soak-{index}")
            };
            let source = client::source_for(index, SOURCES.0, SOURCES.1);
            let (templates, addr, counts) = (templates.clone(), addr.clone(), counts.clone());
            let (handshakes, mut stop) = (handshakes.clone(), stop.clone());
            tasks.spawn(async move {
                let open = async {
                    let _permit = tokio::select! {
                        permit = handshakes.acquire() => permit,
                        _ = stop.wait_for(|&s| s) => return Ok(Err(anyhow::anyhow!("stopped"))),
                    };
                    let open = client::open(
                        &templates,
                        transport,
                        &addr,
                        &channel,
                        source,
                        &Resume::Live,
                    );
                    tokio::time::timeout(Duration::from_secs(10), open).await
                };
                let mut conn = match open.await {
                    Ok(Ok(conn)) => conn,
                    _ if *stop.borrow() => return,
                    Ok(Err(error)) => return counts.fail(format!("{error:#}")),
                    Err(_) => return counts.fail("handshake timed out after 10 s".into()),
                };
                counts.opened.fetch_add(1, Relaxed);
                let reading = async {
                    let mut batch = client::Batch::default();
                    while conn.recv(false, &mut batch).await.is_ok() {
                        counts
                            .received
                            .fetch_add(batch.deliveries.len() as u64, Relaxed);
                        if batch.ended {
                            break;
                        }
                    }
                };
                tokio::select! {
                    () = reading => {}
                    () = tokio::time::sleep(lifetime) => {}
                    _ = stop.wait_for(|&s| s) => {}
                }
            });
            index += 1;
        }
        // Reap the ended ones, so the set holds only the live.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

impl Counts {
    fn fail(&self, error: String) {
        self.failed.fetch_add(1, Relaxed);
        self.first_error.lock().get_or_insert(error);
    }
}

/// Waits (at most 15 s) until the server counts no open connection, then a
/// moment more for what closing them started.
async fn settle(metrics: &mut HttpConn) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, connections) = scrape(metrics).await?;
        if connections == 0.0 || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(())
}

/// `(tokio tasks alive, open connections)` from `/metrics`.
async fn scrape(metrics: &mut HttpConn) -> anyhow::Result<(f64, f64)> {
    let request = metrics.request("GET", "/metrics", b"");
    let (status, body) = tokio::time::timeout(Duration::from_secs(10), request)
        .await
        .context("GET /metrics took over 10 s")??;
    if status != 200 {
        bail!("GET /metrics answered {status}");
    }
    let page = String::from_utf8_lossy(&body);
    let tasks = metric_sum(&page, "herald_runtime_alive_tasks")
        .context("no herald_runtime_alive_tasks on /metrics")?;
    Ok((
        tasks,
        metric_sum(&page, "herald_connections").unwrap_or(0.0),
    ))
}

async fn sample(
    pid: u32,
    metrics: &mut HttpConn,
    start: Instant,
    counts: &Counts,
) -> anyhow::Result<Point> {
    // The process figures first: the scrape itself allocates.
    let rss = process::sample(&[pid])?.rss;
    let fds = open_fds(pid)?;
    let threads = process::threads(pid)?;
    let (tasks, connections) = scrape(metrics).await?;
    Ok(Point {
        seconds: start.elapsed().as_secs_f64(),
        rss,
        fds,
        threads,
        tasks,
        connections,
        opened: counts.opened.load(Relaxed),
        failed: counts.failed.load(Relaxed),
        received: counts.received.load(Relaxed),
    })
}

/// The open file descriptors of `pid`: the entries of `/proc/PID/fd`.
fn open_fds(pid: u32) -> anyhow::Result<u64> {
    let dir = format!("/proc/{pid}/fd");
    let entries = std::fs::read_dir(&dir).with_context(|| format!("cannot read {dir}"))?;
    Ok(entries.count() as u64)
}

/// The CSV file of a run's samples, one row written per sample.
struct Csv(std::io::BufWriter<std::fs::File>);

const CSV_HEADER: &str = "seconds,rss_bytes,fds,threads,tasks,connections,opened,failed,received";

impl Csv {
    fn create(path: &Path) -> anyhow::Result<Csv> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::File::create(path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        let mut csv = Csv(std::io::BufWriter::new(file));
        let _ = writeln!(csv.0, "{CSV_HEADER}");
        Ok(csv)
    }

    fn row(&mut self, point: &Point) {
        let _ = writeln!(self.0, "{}", csv_row(point));
        let _ = self.0.flush();
    }
}

fn csv_row(p: &Point) -> String {
    format!(
        "{:.1},{},{},{},{},{},{},{},{}",
        p.seconds, p.rss, p.fds, p.threads, p.tasks, p.connections, p.opened, p.failed, p.received
    )
}

/// RSS (MB), file descriptors, tasks and open connections against time.
fn draw(path: &Path, points: &[Point], args: &Args) -> anyhow::Result<()> {
    let line = |f: &dyn Fn(&Point) -> f64| -> Vec<(f64, f64)> {
        points.iter().map(|p| (p.seconds / 60.0, f(p))).collect()
    };
    let rss = line(&|p| p.rss as f64 / 1e6);
    let fds = line(&|p| p.fds as f64);
    let tasks = line(&|p| p.tasks);
    let connections = line(&|p| p.connections);
    let title = format!(
        "herald soak: ~{} subscribers, {}/s churn, {} msg/s",
        args.clients, args.churn, args.rate
    );
    let threads = line(&|p| p.threads as f64);
    plot::over_time(
        path,
        &title,
        &[
            (
                "server RSS (MB)",
                &[Series {
                    name: "RSS",
                    points: &rss,
                }],
            ),
            (
                "count",
                &[
                    Series {
                        name: "open file descriptors",
                        points: &fds,
                    },
                    Series {
                        name: "tokio tasks",
                        points: &tasks,
                    },
                    Series {
                        name: "open connections",
                        points: &connections,
                    },
                    Series {
                        name: "threads",
                        points: &threads,
                    },
                ],
            ),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_has_a_row_per_sample() {
        let path = std::env::temp_dir().join(format!("herald-soak-{}.csv", std::process::id()));
        let mut csv = Csv::create(&path).unwrap();
        csv.row(&Point {
            seconds: 0.0,
            rss: 1000,
            fds: 12,
            threads: 3,
            tasks: 5.0,
            ..Point::default()
        });
        csv.row(&Point {
            seconds: 5.04,
            rss: 2000,
            fds: 212,
            threads: 3,
            tasks: 205.0,
            connections: 200.0,
            opened: 250,
            failed: 0,
            received: 999,
        });
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], CSV_HEADER);
        assert_eq!(lines[1], "0.0,1000,12,3,5,0,0,0,0");
        assert_eq!(lines[2], "5.0,2000,212,3,205,200,250,0,999");
    }

    #[test]
    fn check_flags_growth_at_rest_and_past_the_rss_bound() {
        let rest = Point {
            fds: 13,
            tasks: 9.0,
            ..Point::default()
        };
        let mb = 1_000_000;
        assert!(judge(&rest, &rest, 20 * mb, 30 * mb, 100, 0).is_empty());
        let leaked = Point {
            fds: 18,
            tasks: 14.0,
            ..rest
        };
        let problems = judge(&rest, &leaked, 20 * mb, 20 * mb, 100, 0);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("file descriptors") && problems[1].contains("tasks"));
        // A quarter of 100 MB is past the 16 MiB floor.
        assert!(judge(&rest, &rest, 100 * mb, 125 * mb, 100, 0).is_empty());
        assert_eq!(judge(&rest, &rest, 100 * mb, 126 * mb, 100, 0).len(), 1);
        assert_eq!(judge(&rest, &rest, 20 * mb, 20 * mb, 99, 1).len(), 1);
        assert_eq!(judge(&rest, &rest, 20 * mb, 20 * mb, 0, 0).len(), 1);
    }

    #[test]
    fn counts_this_process_fds() {
        assert!(open_fds(std::process::id()).unwrap() >= 3);
    }

    #[test]
    fn warmup_stays_within_the_run() {
        let mut args = Args {
            seconds: 60,
            clients: 1,
            churn: 1.0,
            rate: 1.0,
            interval: 5,
            warmup: None,
            herald: None,
            csv: None,
            plot: None,
            json: None,
            check: false,
            time_limit: None,
            pinning: Pinning::default(),
        };
        assert_eq!(args.warmup(), 12);
        args.seconds = 10;
        assert_eq!(args.warmup(), 5);
        args.warmup = Some(100);
        assert_eq!(args.warmup(), 10);
        assert_eq!(args.limit(), Duration::from_secs(130));
    }
}
