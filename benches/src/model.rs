//! `herald-bench model`: the capacity model. It measures nothing: it reads
//! the figures `herald-bench report` recorded (`docs/img/results.json`, and
//! `docs/benchmarks.md` for the sections the report writes only there),
//! multiplies them out for a load and a node shape, and prints the fleet
//! (nodes, processes, cores, memory, Redis primaries), what binds it, whether
//! issue 16's goal is met, and every input with its source.
//!
//! Everything it prints is extrapolated from measurements on a 2-vCPU machine
//! over loopback; `plan.rs` says how the figures are scaled to a node.

mod inputs;
mod page;
mod plan;

use std::{fmt::Write as _, path::PathBuf};

use anyhow::Context;
use serde::Serialize;

use crate::{outcome::format_number, report::Results};
use inputs::{Inputs, Status};
use page::Page;
use plan::{Load, Node, Plan};

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Registered users.
    #[arg(long, default_value_t = 1e8)]
    pub users: f64,
    /// Share of users connected at the peak.
    #[arg(long, default_value_t = 0.1)]
    pub online_share: f64,
    /// Notices each user posts per day, on average.
    #[arg(long, default_value_t = 1.0)]
    pub notices_per_user_day: f64,
    /// Followers per notice, on average (each gets it on `user:<id>`).
    #[arg(long, default_value_t = 100.0)]
    pub followers: f64,
    /// Notices per second in the busiest second over the day's mean.
    #[arg(long, default_value_t = 3.0)]
    pub peak_to_mean: f64,
    /// Share of online users that reconnect after a node loss (at least the
    /// lost node's own share).
    #[arg(long, default_value_t = 0.1)]
    pub storm_share: f64,
    /// Seconds in which they come back.
    #[arg(long, default_value_t = 10.0)]
    pub storm_secs: f64,
    /// `timeline.shards`, the same on every node (docs/timelines.md).
    #[arg(long, default_value_t = 1024.0)]
    pub timeline_shards: f64,
    /// Cores per node.
    #[arg(long, default_value_t = 16.0)]
    pub cores: f64,
    /// Memory per node, GiB.
    #[arg(long, default_value_t = 32.0)]
    pub memory_gib: f64,
    /// Share of a node's cores (and of a Redis primary's core) the steady
    /// peak may use; the rest is for storms.
    #[arg(long, default_value_t = 0.5)]
    pub cpu_headroom: f64,
    /// Share of a node's memory connections may use.
    #[arg(long, default_value_t = 0.7)]
    pub memory_headroom: f64,
    /// Open-files limit per process (the systemd unit's `LimitNOFILE`).
    #[arg(long, default_value_t = 1_048_576.0)]
    pub fd_limit: f64,
    /// The goal: at most this many nodes (issue 16: 10).
    #[arg(long, default_value_t = 10)]
    pub goal_nodes: u64,
    /// The goal: at most this many Redis primaries (issue 16: 6).
    #[arg(long, default_value_t = 6)]
    pub goal_primaries: u64,
    /// The report's recorded results.
    #[arg(long, default_value = "docs/img/results.json")]
    pub results: PathBuf,
    /// The report's page, for the sections it records only there.
    #[arg(long, default_value = "docs/benchmarks.md")]
    pub page: PathBuf,
    /// Print the model's answer for 10^0, 10^1, … 10^8 users (the rest of
    /// the load as given), as docs/scaling.md shows it.
    #[arg(long)]
    pub ladder: bool,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// The plan for one number of users.
#[derive(Serialize)]
struct Rung {
    users: f64,
    #[serde(flatten)]
    plan: Plan,
}

/// What `--json` prints.
#[derive(Serialize)]
struct Answer<'a> {
    load: &'a Load,
    node: &'a Node,
    /// One plan, or one per rung with `--ladder`.
    plans: Vec<Rung>,
    /// The goal's verdict for the last plan.
    goal: String,
    inputs: &'a Inputs,
    /// Which results file, of which report run.
    results: String,
    missing: Vec<String>,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.results)
        .with_context(|| format!("cannot read {}", args.results.display()))?;
    let results = Results::parse(&text)
        .with_context(|| format!("{} is not a report's results", args.results.display()))?;
    // The page is optional: without it, its inputs are defaulted and say so.
    let page = Page::new(std::fs::read_to_string(&args.page).unwrap_or_default());
    let inputs = Inputs::read(&results, &page);
    let load = Load {
        users: args.users,
        online_share: args.online_share,
        notices_per_user_day: args.notices_per_user_day,
        followers: args.followers,
        peak_to_mean: args.peak_to_mean,
        storm_share: args.storm_share,
        storm_secs: args.storm_secs.max(0.001),
        timeline_shards: args.timeline_shards,
    };
    let node = Node {
        cores: args.cores,
        memory_gib: args.memory_gib,
        cpu_headroom: args.cpu_headroom,
        memory_headroom: args.memory_headroom,
        fd_limit: args.fd_limit,
    };
    let users: Vec<f64> = if args.ladder {
        (0..=8).map(|e| 10f64.powi(e)).collect()
    } else {
        vec![args.users]
    };
    let mut plans = Vec::new();
    for users in users {
        let load = Load {
            users,
            ..load.clone()
        };
        let plan = Plan::new(&load, &node, &inputs)?;
        plans.push(Rung { users, plan });
    }
    let last = &plans.last().context("no plan")?.plan;
    let goal = goal(args, last);
    let answer = Answer {
        load: &load,
        node: &node,
        goal,
        inputs: &inputs,
        results: format!(
            "{}: `{}`, {}, commit {}",
            args.results.display(),
            results.command,
            results.date,
            results.commit
        ),
        missing: missing(&inputs),
        plans,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else if args.ladder {
        print!("{}", ladder(&answer));
    } else {
        print!("{}", one(&answer));
    }
    Ok(())
}

/// "goal met", or "goal not met: X binds".
fn goal(args: &Args, plan: &Plan) -> String {
    let mut over = Vec::new();
    if plan.nodes > args.goal_nodes {
        over.push(format!(
            "{} binds ({} nodes > {})",
            plan.binds.join(", "),
            plan.nodes,
            args.goal_nodes
        ));
    }
    if plan.redis.primaries > args.goal_primaries {
        over.push(format!(
            "Redis {} binds ({} primaries > {})",
            plan.redis.binds, plan.redis.primaries, args.goal_primaries
        ));
    }
    let goal = format!(
        "≤ {} nodes of {} cores / {} GiB and ≤ {} Redis primaries",
        args.goal_nodes,
        format_number(args.cores),
        format_number(args.memory_gib),
        args.goal_primaries
    );
    if over.is_empty() {
        format!("goal met: {goal}")
    } else {
        format!("goal not met: {} (goal: {goal})", over.join("; "))
    }
}

/// What the model lacks: inputs not measured here, and what it leaves out.
fn missing(inputs: &Inputs) -> Vec<String> {
    let mut missing: Vec<String> = inputs
        .all()
        .into_iter()
        .filter(|i| matches!(i.status, Status::Published | Status::Defaulted))
        .map(|i| format!("{}: {}", i.what, i.source))
        .collect();
    if inputs.redis_publish_cpu.status == Status::Derived {
        missing.push(
            "Redis CPU per shard publish is not measured directly: it is derived from presence leaves (inputs)"
                .into(),
        );
    }
    missing.extend(
        [
            "Redis memory (each shard's history) is not modelled",
            "Redis CPU for a storm's history reads is inside the node-restart figure, not counted per primary",
            "TLS is not measured: every input is a plain connection",
            "what a broadcast parks in slow sockets' send queues (kernel memory) is not measured",
            "every input was measured on one 2-vCPU machine over loopback and is scaled linearly per core",
        ]
        .map(String::from),
    );
    missing
}

/// Integers with thousands separators; others with three significant digits.
fn count(value: f64) -> String {
    if value < 1000.0 {
        return format_number(value);
    }
    let digits = format!("{:.0}", value);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// GiB, or MiB below one GiB.
fn memory(gib: f64) -> String {
    if gib < 1.0 {
        format!("{} MiB", format_number(gib * 1024.0))
    } else {
        format!("{} GiB", format_number(gib))
    }
}

fn redis_cell(plan: &Plan) -> String {
    match plan.redis.primaries {
        0 => "none (memory engine)".to_string(),
        1 => "1 (standalone or Sentinel)".to_string(),
        n => format!("{n} (Cluster)"),
    }
}

fn binds_cell(plan: &Plan) -> String {
    if plan.binds.is_empty() {
        "nothing: one process holds it".to_string()
    } else {
        plan.binds.join(", ")
    }
}

/// The tables of one plan, then the goal, the inputs and what is missing.
fn one(answer: &Answer) -> String {
    let Rung { users, plan } = answer.plans.last().expect("one plan");
    let (load, node) = (answer.load, answer.node);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Herald capacity model: {} users. Extrapolated from measured inputs, not measured at this scale.\n",
        count(*users)
    );
    let rows = [
        ("connections online", count(plan.online)),
        ("notices per second at the peak", count(plan.notices_per_s)),
        (
            "deliveries per second at the peak",
            count(plan.deliveries_per_s),
        ),
        (
            "shard messages per notice",
            format_number(plan.shards_per_notice),
        ),
        (
            "memory per connection (Herald + its channel + kernel)",
            format!("{} B", count(plan.bytes_per_conn)),
        ),
        (
            "memory used, all nodes",
            format!("{} GiB", format_number(plan.memory_used_gib)),
        ),
        (
            "CPU at the steady peak",
            format!(
                "{} cores (pings: {})",
                format_number(plan.steady_cores),
                format_number(plan.idle_cores)
            ),
        ),
        (
            "reconnect storm after a node loss",
            format!(
                "{} reconnects in {} s: {} cores more",
                count(plan.storm_reconnects),
                format_number(load.storm_secs),
                format_number(plan.storm_cores)
            ),
        ),
        ("engine", plan.engine.to_string()),
        (
            "**nodes**",
            format!(
                "**{}** of {} cores / {} GiB",
                plan.nodes,
                format_number(node.cores),
                format_number(node.memory_gib)
            ),
        ),
        (
            "processes per node (open files)",
            plan.processes_per_node.to_string(),
        ),
        (
            "cores, memory",
            format!(
                "{} cores, {} GiB",
                format_number(plan.cores),
                format_number(plan.memory_gib)
            ),
        ),
        ("what binds the nodes", binds_cell(plan)),
        (
            "Redis shard publishes per second",
            count(plan.redis.publishes_per_s),
        ),
        (
            "Redis pub/sub deliveries per second",
            count(plan.redis.deliveries_per_s),
        ),
        (
            "**Redis primaries**",
            format!(
                "**{}**{}",
                redis_cell(plan),
                if plan.redis.binds.is_empty() {
                    String::new()
                } else {
                    format!(
                        ", {} binds ({} for publishes, {} for deliveries)",
                        plan.redis.binds, plan.redis.for_publishes, plan.redis.for_deliveries
                    )
                }
            ),
        ),
    ];
    let _ = writeln!(out, "| | |\n|---|---|");
    for (what, value) in rows {
        let _ = writeln!(out, "| {what} | {value} |");
    }
    let _ = writeln!(out, "\n{}\n", answer.goal);
    out.push_str(&assumptions(answer));
    out
}

/// The ladder: one row per power of ten, then the goal and the inputs.
fn ladder(answer: &Answer) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| users | online | deliveries/s at the peak | nodes | processes per node | cores: used at the peak, of | memory: used, of | Redis primaries | what binds |\n|---|---|---|---|---|---|---|---|---|"
    );
    for Rung { users, plan } in &answer.plans {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} of {} | {} of {} GiB | {} | {} |",
            count(*users),
            count(plan.online),
            count(plan.deliveries_per_s),
            plan.nodes,
            plan.processes_per_node,
            format_number(plan.steady_cores),
            format_number(plan.cores),
            memory(plan.memory_used_gib),
            format_number(plan.memory_gib),
            redis_cell(plan),
            if plan.redis.primaries > 1 {
                format!("{}; Redis: {}", binds_cell(plan), plan.redis.binds)
            } else {
                binds_cell(plan)
            }
        );
    }
    let _ = writeln!(out, "\n10^8 users: {}\n", answer.goal);
    out.push_str(&assumptions(answer));
    out
}

/// The load, the node, every input with its source, and what is missing.
fn assumptions(answer: &Answer) -> String {
    let (load, node) = (answer.load, answer.node);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Load: {} % of users online; {} notices per user per day, {} followers each, the peak {}× the mean; \
         a node loss sends at least {} % of online users back within {} s; {} timeline shards.\n\
         Node: {} cores, {} GiB; the steady peak within {} % of the cores (a storm may use all of the nodes left), \
         connections within {} % of the memory; {} open files per process.\n",
        format_number(load.online_share * 100.0),
        format_number(load.notices_per_user_day),
        format_number(load.followers),
        format_number(load.peak_to_mean),
        format_number(load.storm_share * 100.0),
        format_number(load.storm_secs),
        format_number(load.timeline_shards),
        format_number(node.cores),
        format_number(node.memory_gib),
        format_number(node.cpu_headroom * 100.0),
        format_number(node.memory_headroom * 100.0),
        count(node.fd_limit),
    );
    let _ = writeln!(out, "Inputs ({}):\n", answer.results);
    let _ = writeln!(
        out,
        "| input | value | status | source |\n|---|---|---|---|"
    );
    for input in answer.inputs.all() {
        let _ = writeln!(
            out,
            "| {} | {} {} | {:?} | {} |",
            input.what,
            format_number(input.value),
            input.unit,
            input.status,
            input.source
        );
    }
    let _ = writeln!(out, "\nMissing:");
    for line in &answer.missing {
        let _ = writeln!(out, "- {line}");
    }
    out
}
