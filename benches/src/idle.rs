//! The `idle` scenario: what an idle connection costs the server.
//!
//! Memory: RSS is sampled after a warm-up connection (so that one-off
//! allocations such as thread stacks do not count), then while the N
//! connections open (the RSS-against-connections curve), and again once they
//! have settled. Bytes per connection = (after − before) / N.
//! CPU: user and system time over a window with every connection idle,
//! per connection per second. Herald pings every connection each 25 s, so
//! the default window is one ping interval.
//! Long-poll (`--transport poll`): each client has one poll held; the
//! server answers it empty after its timeout (25 s on Herald and on the
//! bench's Nchan) and the client polls again, so the CPU window holds about
//! one round of those, as it holds one round of pings.

use std::time::Duration;

use crate::{
    client::Transport,
    outcome::RunResult,
    process,
    scenario::{Common, Session, Tracking, describe},
    stats::bytes_per_connection,
    target::Protocol,
};

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Idle connections to open.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Subscribe each Herald WebSocket to a channel (SSE streams, polls and
    /// Nchan subscribers always have one).
    #[arg(long)]
    pub subscribe: bool,
    /// Put every connection on this one channel instead of one of its own
    /// (`user:<n>`), leaving out the per-channel state.
    #[arg(long)]
    pub channel: Option<String>,
    /// Seconds to let the server settle before the memory sample.
    #[arg(long, default_value_t = 5)]
    pub settle: u64,
    /// Seconds over which idle CPU is measured.
    #[arg(long, default_value_t = 25)]
    pub cpu_window: u64,
}

pub async fn run(args: &Args) -> anyhow::Result<RunResult> {
    let common = &args.common;
    let mut setup = describe(args.connections, common.transport, "idle connections");
    let channel = if common.transport == Transport::Ws
        && !args.subscribe
        && common.target.templates().protocol == Protocol::Herald
    {
        setup.push_str(", not subscribed");
        // Herald's WebSocket on no channel: no `channel` in the URL, and no
        // subscribe frame.
        Some(String::new())
    } else {
        match &args.channel {
            Some(name) => {
                setup.push_str(&format!(", all on channel {name}"));
                Some(name.clone())
            }
            None => {
                setup.push_str(", a channel each");
                None
            }
        }
    };
    let subscribe = common.transport != Transport::Ws || args.subscribe;
    let mut common = common.clone();
    if !subscribe {
        // Herald: no subscribe frame at all.
        common.target.ws_subscribe = Some(String::new());
    }
    let mut session =
        Session::open(&common, "idle", args.connections, channel, Tracking::Counts).await?;
    let mut result = RunResult::new("idle", session.running.preset.name(), setup);

    session.ui.phase("settling");
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let settled = process::sample(&session.running.pids)?;
    let settled_parts = session
        .running
        .parts
        .iter()
        .map(|(_, pids)| process::sample(pids))
        .collect::<anyhow::Result<Vec<_>>>()?;
    session.ui.phase("measuring idle CPU");
    tokio::time::sleep(Duration::from_secs(args.cpu_window)).await;
    let end = process::sample(&session.running.pids)?;
    let report = session.fleet.finish(None).await?;

    session.add_connection_figures(&mut result, args.connections);
    let n = session.connected;
    result.add(
        "bytes_per_conn",
        "server RSS per connection",
        "B",
        bytes_per_connection(session.before.rss, settled.rss, n),
    );
    // nginx in front of Herald (`--tls-proxy`): what each process holds of
    // the sum above.
    for (((name, _), before), after) in session
        .running
        .parts
        .iter()
        .zip(&session.before_parts)
        .zip(&settled_parts)
    {
        result.add(
            &format!("bytes_per_conn_{name}"),
            &format!("… of it {name}"),
            "B",
            bytes_per_connection(before.rss, after.rss, n),
        );
    }
    result.add(
        "rss_before",
        "server RSS before",
        "MB",
        session.before.rss as f64 / 1e6,
    );
    result.add(
        "rss_after",
        "server RSS with all open",
        "MB",
        settled.rss as f64 / 1e6,
    );
    let usage = end.since(&settled);
    let per_conn = |seconds: f64| (n > 0).then(|| seconds * 1e6 / usage.wall_s / n as f64);
    result.add(
        "cpu_us_per_conn_s",
        "server CPU per connection per second",
        "µs",
        per_conn(usage.cpu_s()),
    );
    result.add(
        "user_us_per_conn_s",
        "… of it user",
        "µs",
        per_conn(usage.user_s),
    );
    result.add(
        "sys_us_per_conn_s",
        "… of it system",
        "µs",
        per_conn(usage.sys_s),
    );
    result.add(
        "closed",
        "connections closed by the server",
        "",
        report.closed as f64,
    );
    if report.closed > 0 {
        result.ok = false;
    }
    result.errors = report.errors;
    result.rss_curve = session.rss_curve.clone();
    result.rss_curve.push((n, settled.rss));
    session.close().await;
    Ok(result)
}
