//! The `fanout` scenario: one timeline delivery to a million recipients
//! (`POST /api/deliver`, `docs/timelines.md`) while about 15,000 of them are
//! connected, and what it does to unrelated traffic.
//!
//! Set-up: the recipients are users `1..=N`; `C` of them are connected, each
//! subscribed to `user:<id>` for ids `1, 1 + s, 1 + 2s, …` (`s = N / C`, 66
//! for the defaults), so that they spread over the shards as any sample would.
//! A second, small fleet subscribes to an unrelated channel (`public`), to
//! which a publisher sends a steady stream of timestamped messages throughout.
//!
//! Phases: warm-up publishing (not measured); the idle window (public
//! messages only, drained, their latency taken); the delivery window, from
//! the moment the request is written until every connected recipient has the
//! notice and Herald has answered (public messages keep flowing; those sent
//! in the window are drained and their latency taken); a quiet second, the
//! same request again with the same `Idempotency-Key` (it must publish
//! nothing), another quiet second, and the final count: every connected
//! recipient must have the notice exactly once.
//!
//! The notice's `data` carries its send time like any published payload, so
//! the recipients' workers measure its latency; the largest is the time until
//! the last connected recipient had it. Server CPU and RSS are sampled from
//! `/proc` over the delivery window; Herald's timeline counters from
//! `/metrics` before it and after the public channel has drained (on Redis,
//! the engine messages each node received: with `--shard-affinity`, each
//! shard message reaches one node; round robin, nearly every node).
//!
//! On the bench's own Redis (`--redis`), Redis' own CPU is sampled apart as
//! well, over the idle window and the delivery window: Redis CPU per shard
//! message is the window's, less what Redis spends at the idle window's rate
//! (the public channel's publishes, the nodes' heartbeats) over as long,
//! divided by the engine messages the delivery published. The server CPU
//! figures keep counting Redis with the nodes, as every scenario does.

use std::time::Duration;

use anyhow::{Context, bail};
use tokio::{sync::watch, time::Instant};

use crate::{
    delivery::{self, Answer, Body},
    fleet::Fleet,
    http::{HttpConn, metric_sum, metric_sum_with},
    now_us,
    outcome::RunResult,
    process::{self, Sample, Usage},
    publisher::{Channels, Pace, Published, Publisher},
    scenario::{Common, Session, Tracking, describe},
    shard::Affinity,
    stats::{WorkerReport, ratio},
    target::Preset,
    worker::{Command, Spec, Users},
};

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Recipients of the delivery: user ids 1..=N, as JSON integers.
    #[arg(long, default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub recipients: u64,
    /// Recipients connected, each subscribed to `user:<id>`: every
    /// (recipients / connected)-th id from 1.
    #[arg(long, default_value_t = 15_000)]
    pub connected: usize,
    /// Subscribers of the unrelated channel.
    #[arg(long, default_value_t = 100)]
    pub public_subscribers: usize,
    /// The unrelated channel.
    #[arg(long, default_value = "public")]
    pub public_channel: String,
    /// Messages per second published to the unrelated channel throughout.
    #[arg(long, default_value_t = 200.0)]
    pub public_rate: f64,
    /// Seconds of publishing before anything is measured.
    #[arg(long, default_value_t = 1)]
    pub warmup: u64,
    /// Seconds of the idle window (unrelated messages only).
    #[arg(long, default_value_t = 3)]
    pub idle: u64,
    /// Longest wait, in seconds, for every connected recipient to have the notice.
    #[arg(long, default_value_t = 60)]
    pub deadline: u64,
    /// Payload size in bytes (the notice's data and the unrelated messages).
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// With several nodes: connect each recipient to node `shard % nodes`,
    /// its shard being `crc32("<site>:<id>") % --shards`, as a load balancer
    /// hashing on the `shard` parameter would (deploy/nginx), instead of
    /// round robin. Each shard message then reaches one node.
    #[arg(long)]
    pub shard_affinity: bool,
    /// `timeline.shards` of the nodes (for --shard-affinity).
    #[arg(long, default_value_t = 1024)]
    pub shards: u32,
    /// The site id in the shard function (the dev site's is `default`).
    #[arg(long, default_value = "default")]
    pub site: String,
}

/// Source addresses of the unrelated channel's subscribers (one worker):
/// apart from the recipients' workers, which start at 127.0.0.10.
const PUBLIC_SOURCES: u8 = 240;

/// How long the run waits, once the delivery is complete, for a notice that
/// would arrive twice (and again after the retry).
const QUIET: Duration = Duration::from_secs(1);

pub async fn run(args: &Args) -> anyhow::Result<RunResult> {
    let common = &args.common;
    if common.target.target != Preset::Herald {
        bail!("the fanout scenario measures Herald's POST /api/deliver: Nchan has no counterpart");
    }
    if !common.target.shared_delivery() {
        bail!(
            "{} nodes on the memory engine do not share messages; pass --redis",
            common.target.nodes
        );
    }
    if args.public_subscribers == 0 || args.public_rate <= 0.0 {
        bail!("the fanout scenario needs public subscribers and a public rate above 0");
    }
    let (first, stride) = sample(args.recipients, args.connected)?;
    let users = Users {
        first,
        stride,
        affinity: args.shard_affinity.then(|| Affinity {
            site: args.site.clone(),
            shards: args.shards,
        }),
    };
    let mut body = Body::build(args.recipients, args.size);
    let nodes = common.target.nodes.max(1);
    let mut setup = format!(
        "{} recipients, {} (`user:<id>`, every {stride}th id), {} on `{}` at {} msg/s",
        args.recipients,
        describe(args.connected, common.transport, "connected"),
        args.public_subscribers,
        args.public_channel,
        args.public_rate,
    );
    if common.target.redis {
        setup.push_str(", Redis engine");
    }
    if nodes > 1 {
        let spread = if args.shard_affinity {
            "recipients on their shard's node"
        } else {
            "recipients round robin"
        };
        setup.push_str(&format!(", {nodes} nodes, {spread}"));
    }
    let mut session = Session::open_users(
        common,
        "fanout",
        args.connected,
        None,
        Tracking::Counts,
        users,
    )
    .await?;
    let mut result = RunResult::new("fanout", session.running.preset.name(), setup);
    let templates = session.running.templates.clone();
    let addrs = session.running.addrs.clone();
    let pids = session.running.pids.clone();
    // Redis' own CPU, apart from the nodes': only a Redis the bench started.
    let redis_pid = session.running.redis().map(|(_, pid)| pid);
    let redis_sample = || redis_pid.map(|pid| process::sample(&[pid])).transpose();

    // The unrelated channel's subscribers: a fleet of their own, so that
    // their latency is measured apart from the recipients'.
    session.ui.phase("connecting the public subscribers");
    let mut public = Fleet::spawn(
        &Spec {
            worker: 0,
            templates: templates.clone(),
            addrs: addrs.clone(),
            transport: common.transport,
            first: 0,
            count: args.public_subscribers,
            channel: Some(args.public_channel.clone()),
            users: Users::default(),
            source_first: PUBLIC_SOURCES,
            source_count: 4,
            concurrency: common.concurrency,
            track: false,
            follow: false,
            threads: 1,
            total: args.public_subscribers,
        },
        Some(1),
    )
    .await?;
    let opened = public
        .connect(1, Duration::from_secs(30), async |_| {})
        .await?;
    let publisher = Publisher::new(
        templates.clone(),
        addrs[0].clone(),
        Channels::Shared(args.public_channel.clone()),
        args.size,
        4,
    );
    let public_done = public.frontier();
    let pace = Pace::Rate(args.public_rate);

    session.ui.phase("warming up");
    publisher
        .run(
            pace,
            Duration::from_secs(args.warmup),
            u64::MAX,
            public_done.clone(),
        )
        .await;
    drain(
        &public_done,
        publisher.accepted_total(),
        Duration::from_secs(5),
    )
    .await;
    reset(&mut public).await?;

    session.ui.phase("idle window");
    let redis_idle_before = redis_sample()?;
    let idle_published = publisher
        .run(
            pace,
            Duration::from_secs(args.idle),
            u64::MAX,
            public_done.clone(),
        )
        .await;
    let redis_idle = redis_since(redis_sample()?, redis_idle_before);
    let idle_drained = drain(
        &public_done,
        publisher.accepted_total(),
        Duration::from_secs(10),
    )
    .await;
    let idle = public.report(Command::Report { published: None }).await?;
    reset(&mut public).await?;

    session.ui.phase("delivering");
    let deadline = Duration::from_secs(args.deadline);
    let key = format!("herald-bench-fanout-{}", now_us());
    let (stop_tx, stop) = watch::channel(false);
    let peak = tokio::spawn(peak_rss(pids.clone(), stop.clone()));
    let counters_before = counters(&addrs).await;
    let before = process::sample(&pids)?;
    let redis_before = redis_sample()?;
    let publishing = publisher.run_until(
        pace,
        deadline + Duration::from_secs(1),
        u64::MAX,
        public_done.clone(),
        stop,
    );
    let delivering = async {
        let window = deliver(
            &addrs[0],
            &mut body,
            &key,
            session.fleet.frontier(),
            deadline,
        )
        .await;
        let after = process::sample(&pids);
        let redis_after = redis_sample();
        let _ = stop_tx.send(true);
        (window, after, redis_after)
    };
    let (published, (window, after, redis_after)) = tokio::join!(publishing, delivering);
    let window = window?;
    let usage = after?.since(&before);
    let redis_window = redis_since(redis_after?, redis_before);
    let rss_peak = peak.await.unwrap_or(0).max(before.rss);
    session.ui.phase("draining the public channel");
    let during_drained = drain(
        &public_done,
        publisher.accepted_total(),
        Duration::from_secs(10),
    )
    .await;
    let during = public.report(Command::Report { published: None }).await?;
    let counters_after = counters(&addrs).await;

    // Anything that would arrive twice, then a retry that must publish nothing.
    tokio::time::sleep(QUIET).await;
    let retry = if window.answer.is_ok() {
        session.ui.phase("retrying with the same Idempotency-Key");
        let retry = post(&addrs[0], &body, &key).await;
        tokio::time::sleep(QUIET).await;
        Some(retry)
    } else {
        None
    };
    let after_all = process::sample(&pids)?;
    let recipients = session.fleet.finish(None).await?;
    let public_final = public.finish(None).await?;

    // The figures.
    session.add_connection_figures(&mut result, args.connected);
    result.add(
        "public_connections",
        "public-channel subscribers",
        "",
        opened.connected as f64,
    );
    result.add(
        "recipients",
        "recipients in the delivery",
        "",
        args.recipients as f64,
    );
    result.add(
        "stride",
        "connected recipients: every n-th id",
        "",
        stride as f64,
    );
    result.add(
        "public_rate",
        "public-channel publish rate asked",
        "msg/s",
        args.public_rate,
    );
    result.add(
        "body_mb",
        "request body",
        "MB",
        body.bytes().len() as f64 / 1e6,
    );
    result.add(
        "request_ms",
        "POST /api/deliver answered after",
        "ms",
        window.answered.map(ms),
    );
    let answer = window.answer.as_ref().ok();
    let field = |f: fn(&Answer) -> u64| answer.map(|a| f(a) as f64);
    result.add(
        "answer_recipients",
        "answer: recipients",
        "",
        field(|a| a.recipients),
    );
    result.add("shards", "answer: shards touched", "", field(|a| a.shards));
    result.add(
        "engine_messages",
        "answer: engine messages published",
        "",
        field(|a| a.messages),
    );
    result.add(
        "answer_duplicates",
        "answer: duplicates",
        "",
        field(|a| a.duplicates),
    );
    let notice = recipients.latency.percentiles();
    let has = notice.count > 0;
    result.add(
        "last_recipient_ms",
        "time until the last connected recipient had the notice",
        "ms",
        has.then_some(notice.max),
    );
    result.add(
        "notice_p50",
        "time until half of them had it",
        "ms",
        has.then_some(notice.p50),
    );
    result.add(
        "notice_p99",
        "time until 99 % of them had it",
        "ms",
        has.then_some(notice.p99),
    );
    result.add(
        "window_ms",
        "delivery window (until all had it and the answer came)",
        "ms",
        usage.wall_s * 1e3,
    );
    let open = session.connected.saturating_sub(recipients.closed);
    let reached = open.saturating_sub(recipients.unreached);
    result.add(
        "reached",
        "connected recipients with the notice",
        "",
        reached as f64,
    );
    result.add(
        "unreached",
        "connected recipients without it",
        "",
        recipients.unreached as f64,
    );
    result.add(
        "repeated",
        "connected recipients that had it more than once",
        "",
        recipients.repeated as f64,
    );
    // A labelled counter has no sample before its first increment: absent
    // before and present after counts from zero.
    let delta = |pick: fn(&Counters) -> Option<f64>| {
        let before = counters_before.as_ref().map(|c| pick(c).unwrap_or(0.0));
        let after = counters_after.as_ref().and_then(pick);
        before.zip(after).map(|(b, a)| a - b)
    };
    result.add(
        "metric_shard_published",
        "shard messages published (Herald metrics)",
        "",
        delta(|c| c.shard_published),
    );
    result.add(
        "metric_expanded",
        "timeline messages expanded to local subscribers (Herald metrics)",
        "",
        delta(|c| c.expanded),
    );
    // Each public message of the window reached every node with a public
    // subscriber (round robin: all of them, up to one per subscriber).
    let public_nodes = args.public_subscribers.min(addrs.len()) as f64;
    let public_received = published.accepted as f64 * public_nodes;
    result.add(
        "metric_redis_received",
        "shard messages received from Redis by the nodes (Herald metrics, less the public channel's)",
        "",
        delta(|c| c.redis_received).map(|d| (d - public_received).max(0.0)),
    );
    add_usage(&mut result, &usage);
    if let (Some(idle), Some(window)) = (&redis_idle, &redis_window) {
        result.add(
            "redis_cpu_s",
            "Redis CPU in the delivery window (its own process)",
            "s",
            window.cpu_s(),
        );
        result.add(
            "redis_idle_cpu_share",
            "Redis CPU busy in the idle window (100 % = one core)",
            "%",
            share(idle),
        );
        result.add(
            "redis_cpu_per_shard_message_us",
            "Redis CPU per shard message (the window's less the idle rate, ÷ engine messages)",
            "µs",
            answer.and_then(|a| redis_cpu_per_message(window, idle, a.messages)),
        );
    }
    result.add(
        "rss_before",
        "server RSS before",
        "MB",
        before.rss as f64 / 1e6,
    );
    result.add(
        "rss_peak",
        "server RSS, peak in the window (sampled every 20 ms)",
        "MB",
        rss_peak as f64 / 1e6,
    );
    result.add(
        "rss_after",
        "server RSS at the end",
        "MB",
        after_all.rss as f64 / 1e6,
    );
    add_public(&mut result, &idle, &idle_published, "idle", "idle");
    add_public(
        &mut result,
        &during,
        &published,
        "during",
        "during the delivery",
    );
    result.add(
        "public_p99_ratio",
        "public-channel latency p99, during / idle (ratio)",
        "",
        ratio(
            result.get("public_during_p99"),
            result.get("public_idle_p99"),
        ),
    );
    let retried = retry.as_ref().map(|r| r.as_ref().ok());
    result.add(
        "retry_ms",
        "retry with the same Idempotency-Key answered after",
        "ms",
        retried.flatten().map(|(_, took)| ms(*took)),
    );
    result.add(
        "retry_messages",
        "retry: engine messages published",
        "",
        retried.flatten().map(|(a, _)| a.messages as f64),
    );
    result.add(
        "retry_duplicates",
        "retry: duplicates",
        "",
        retried.flatten().map(|(a, _)| a.duplicates as f64),
    );
    result.latency_curve = recipients.latency.curve();
    result.rss_curve = session.rss_curve.clone();

    // The checks.
    let mut problems = Vec::new();
    match &window.answer {
        Ok(answer) if answer.recipients != args.recipients => problems.push(format!(
            "Herald counted {} recipients, not {}",
            answer.recipients, args.recipients
        )),
        Ok(_) => {}
        Err(error) => problems.push(format!("delivery: {error:#}")),
    }
    if window.answer.is_ok() && window.reached.is_none() {
        problems.push(format!(
            "not every connected recipient had the notice {deadline:?} after the request"
        ));
    }
    if recipients.unreached > 0 || recipients.repeated > 0 {
        problems.push(format!(
            "{} connected recipients never had the notice, {} had it more than once",
            recipients.unreached, recipients.repeated
        ));
    }
    match retry {
        Some(Ok((answer, _))) if answer.messages > 0 => problems.push(format!(
            "the retry with the same Idempotency-Key published {} engine messages",
            answer.messages
        )),
        Some(Err(error)) => problems.push(format!("retry: {error:#}")),
        _ => {}
    }
    if !idle_drained || !during_drained {
        problems.push("public-channel messages still missing 10 s after publishing stopped".into());
    }
    if recipients.closed > 0 || public_final.closed > 0 || public_final.failed > 0 {
        problems.push(format!(
            "connections closed by the server: {} recipients, {} public",
            recipients.closed, public_final.closed
        ));
    }
    result.errors = problems;
    result.errors.extend(recipients.errors);
    result.errors.extend(public_final.errors);
    for (what, published) in [("idle", &idle_published), ("during", &published)] {
        if let Some(error) = &published.first_error {
            result
                .errors
                .push(format!("public publish ({what}): {error}"));
        }
    }
    if !result.errors.is_empty() || published.failed > 0 || idle_published.failed > 0 {
        result.ok = false;
    }
    session.close().await;
    Ok(result)
}

/// The connected sample of users `1..=recipients`: `(first id, stride)`,
/// ids `first + i * stride` for `i` in `0..connected`, all within range.
pub fn sample(recipients: u64, connected: usize) -> anyhow::Result<(usize, usize)> {
    if connected == 0 || connected as u64 > recipients {
        bail!("--connected must be 1 to --recipients ({recipients}), not {connected}");
    }
    Ok((1, (recipients / connected as u64) as usize))
}

/// What the delivery window saw.
struct Window {
    /// Herald's answer, or why there was none.
    answer: anyhow::Result<Answer>,
    /// From writing the request to reading the whole answer.
    answered: Option<Duration>,
    /// From writing the request until every open recipient had the notice
    /// (as their workers' progress reports showed it); `None`: not within
    /// the deadline, or the request failed first.
    reached: Option<Duration>,
}

/// Stamps and sends the delivery, and waits for its answer and for every
/// open recipient (`frontier`: messages every one has) to have the notice.
async fn deliver(
    addr: &str,
    body: &mut Body,
    key: &str,
    mut frontier: watch::Receiver<u64>,
    deadline: Duration,
) -> anyhow::Result<Window> {
    let started = Instant::now();
    body.stamp(now_us())?;
    let body = &*body;
    let post = async {
        let mut http = HttpConn::new(addr);
        let answer = http
            .request_with(
                "POST",
                delivery::PATH,
                &[("Idempotency-Key", key)],
                body.bytes(),
            )
            .await;
        (answer, started.elapsed())
    };
    let reach = async {
        tokio::time::timeout(deadline, frontier.wait_for(|&n| n >= 1))
            .await
            .is_ok_and(|r| r.is_ok())
            .then(|| started.elapsed())
    };
    tokio::pin!(post, reach);
    let mut answered = None;
    let mut reached = None;
    while answered.is_none() || reached.is_none() {
        tokio::select! {
            (answer, took) = &mut post, if answered.is_none() => {
                if let Ok((404, _)) = &answer {
                    // Not a measurement: a herald without the feature.
                    return Err(delivery::missing());
                }
                let answer = answer.and_then(|(status, body)| delivery::parse_answer(status, &body));
                let failed = answer.is_err();
                answered = Some((answer, took));
                if failed {
                    // Nothing is on its way: no point waiting for it.
                    break;
                }
            }
            at = &mut reach, if reached.is_none() => reached = Some(at),
        }
    }
    let (answer, took) = answered.context("the delivery request was not answered")?;
    Ok(Window {
        answered: answer.is_ok().then_some(took),
        answer,
        reached: reached.flatten(),
    })
}

/// The same delivery again (a retry), timed.
async fn post(addr: &str, body: &Body, key: &str) -> anyhow::Result<(Answer, Duration)> {
    let started = Instant::now();
    let mut http = HttpConn::new(addr);
    let (status, answer) = http
        .request_with(
            "POST",
            delivery::PATH,
            &[("Idempotency-Key", key)],
            body.bytes(),
        )
        .await?;
    Ok((delivery::parse_answer(status, &answer)?, started.elapsed()))
}

/// Herald's timeline counters, summed over its nodes.
struct Counters {
    shard_published: Option<f64>,
    expanded: Option<f64>,
    /// On Redis: every engine message a node received, shard messages and
    /// the public channel's alike.
    redis_received: Option<f64>,
}

async fn counters(addrs: &[String]) -> Option<Counters> {
    let mut total = Counters {
        shard_published: None,
        expanded: None,
        redis_received: None,
    };
    let add = |sum: &mut Option<f64>, value: Option<f64>| {
        if let Some(value) = value {
            *sum = Some(sum.unwrap_or(0.0) + value);
        }
    };
    let family = "herald_timeline_shard_messages_total";
    for addr in addrs {
        let (status, body) = HttpConn::new(addr)
            .request("GET", "/metrics", b"")
            .await
            .ok()?;
        if status != 200 {
            return None;
        }
        let page = String::from_utf8_lossy(&body);
        let published = metric_sum_with(&page, family, r#"result="published""#);
        add(&mut total.shard_published, published);
        let expanded = metric_sum(&page, "herald_timeline_expanded_total");
        add(&mut total.expanded, expanded);
        let received = metric_sum(&page, "herald_redis_messages_received_total");
        add(&mut total.redis_received, received);
    }
    Some(total)
}

/// Zeroes the fleet's received counts and histograms, and returns once every
/// worker has done so (a report after the reset is answered after it).
async fn reset(fleet: &mut Fleet) -> anyhow::Result<()> {
    fleet.send(&Command::Reset).await?;
    fleet.report(Command::Report { published: None }).await?;
    Ok(())
}

/// Waits until `done` reaches `target` or `timeout` passes; true if reached.
async fn drain(done: &watch::Receiver<u64>, target: u64, timeout: Duration) -> bool {
    let mut done = done.clone();
    tokio::time::timeout(timeout, done.wait_for(|&d| d >= target))
        .await
        .is_ok_and(|r| r.is_ok())
}

/// The largest RSS of `pids` sampled every 20 ms until `stop` turns true.
async fn peak_rss(pids: Vec<u32>, mut stop: watch::Receiver<bool>) -> u64 {
    let mut peak = 0;
    loop {
        if let Ok(sample) = process::sample(&pids) {
            peak = peak.max(sample.rss);
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
            _ = stop.wait_for(|&stop| stop) => return peak,
        }
    }
}

/// Redis' usage from `before` to `after`, where both were sampled.
fn redis_since(after: Option<Sample>, before: Option<Sample>) -> Option<Usage> {
    Some(after?.since(&before?))
}

/// Share of one core busy over `usage`, in %.
fn share(usage: &Usage) -> f64 {
    usage.cpu_s() / usage.wall_s.max(1e-3) * 100.0
}

/// Redis CPU per shard message, in µs: what Redis spent in the delivery
/// `window`, less what it spends at the `idle` window's rate (the public
/// channel's publishes, the nodes' own commands) over as long, divided by the
/// `messages` the delivery published; `None` without any.
fn redis_cpu_per_message(window: &Usage, idle: &Usage, messages: u64) -> Option<f64> {
    if messages == 0 {
        return None;
    }
    let background = share(idle) / 100.0 * window.wall_s;
    Some((window.cpu_s() - background).max(0.0) * 1e6 / messages as f64)
}

/// Server CPU over the delivery window.
fn add_usage(result: &mut RunResult, usage: &Usage) {
    result.add(
        "cpu_s",
        "server CPU in the delivery window",
        "s",
        usage.cpu_s(),
    );
    result.add("user_s", "… of it user", "s", usage.user_s);
    result.add("sys_s", "… of it system", "s", usage.sys_s);
    result.add(
        "server_cpu_share",
        "server CPU busy in the window (100 % = one core)",
        "%",
        share(usage),
    );
}

/// The unrelated channel's figures for one window (`key`: `idle` or `during`).
fn add_public(
    result: &mut RunResult,
    report: &WorkerReport,
    published: &Published,
    key: &str,
    label: &str,
) {
    result.add(
        &format!("public_{key}_published"),
        &format!("public messages published {label}"),
        "",
        published.accepted as f64,
    );
    let latency = report.latency.percentiles();
    let has = latency.count > 0;
    for (suffix, name, value) in [("p50", "p50", latency.p50), ("p99", "p99", latency.p99)] {
        result.add(
            &format!("public_{key}_{suffix}"),
            &format!("public-channel latency {label} {name}"),
            "ms",
            has.then_some(value),
        );
    }
    result.add(
        &format!("public_{key}_max"),
        &format!("public-channel latency {label} max"),
        "ms",
        has.then_some(latency.max),
    );
    let calls = published.calls.percentiles();
    result.add(
        &format!("public_{key}_call_p99"),
        &format!("public publish call {label} p99"),
        "ms",
        (calls.count > 0).then_some(calls.p99),
    );
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_spread_over_the_recipients() {
        // (recipients, connected) -> (first, stride), last id.
        for (recipients, connected, stride, last) in [
            (1_000_000, 15_000, 66, 989_935),
            (1_000_000, 1_000_000, 1, 1_000_000),
            (100, 7, 14, 85),
            (10, 1, 10, 1),
        ] {
            let (first, s) = sample(recipients, connected).unwrap();
            assert_eq!((first, s), (1, stride), "{recipients}/{connected}");
            let last_id = first + (connected - 1) * s;
            assert_eq!(last_id, last);
            assert!(last_id as u64 <= recipients);
        }
        assert!(sample(10, 0).is_err());
        assert!(sample(10, 11).is_err());
    }

    #[test]
    fn redis_cpu_per_message_takes_out_the_idle_rate() {
        let usage = |wall_s: f64, user_s: f64, sys_s: f64| Usage {
            wall_s,
            user_s,
            sys_s,
            ..Usage::default()
        };
        // (window, idle, messages) -> µs per message.
        for (window, idle, messages, expect) in [
            // 0.25 s in 0.5 s; idle at 10 % of a core: 0.05 s of it is background.
            (
                usage(0.5, 0.15, 0.10),
                usage(3.0, 0.2, 0.1),
                5000,
                Some(40.0),
            ),
            // An idle Redis: all of the window's CPU is the delivery's.
            (
                usage(1.0, 0.02, 0.01),
                usage(3.0, 0.0, 0.0),
                1000,
                Some(30.0),
            ),
            // Less than the idle rate (clock ticks are 10 ms): none, not negative.
            (usage(1.0, 0.01, 0.0), usage(3.0, 0.1, 0.0), 1000, Some(0.0)),
            // Nothing published: no figure.
            (usage(1.0, 0.5, 0.0), usage(3.0, 0.0, 0.0), 0, None),
        ] {
            let got = redis_cpu_per_message(&window, &idle, messages);
            match (got, expect) {
                (Some(got), Some(expect)) => {
                    assert!((got - expect).abs() < 1e-6, "{got} ≠ {expect}")
                }
                _ => assert_eq!(got, expect),
            }
        }
    }
}
