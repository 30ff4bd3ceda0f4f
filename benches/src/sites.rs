//! The `sites` scenario: what configured but idle sites cost one Herald
//! process.
//!
//! Herald is started twice from a configuration file the bench writes into a
//! scratch folder (removed afterwards): with one site, then with N sites
//! (`site-00001`, key `key-00001`, one 32-byte secret, public, one allowed
//! origin; and so on). Each time, after a settle: the RSS (`VmRSS`), the
//! threads, the tokio tasks alive (Herald's own gauge
//! `herald_runtime_alive_tasks`, read at the scrape, so it includes the
//! scrape's own connection task: the same one in every figure) and the
//! start-up time, from spawn to the listening line. Then a few WebSocket
//! clients open on the first site, to show that tasks grow with connections
//! and not with sites. Both servers are started once more with jemalloc
//! told to return freed pages at once ([`PURGE`]), for the RSS that the
//! sites themselves hold.
//!
//! A configured site should cost its entries in hash maps: bytes, and no
//! task, no timer, no thread (`docs/security.md`, "Idle sites"). `--check`
//! fails the run when the N sites add a task or a thread.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use crate::{
    client::{self, Conn, Resume, Transport},
    cpus::Pinning,
    http::{HttpConn, metric_sum},
    outcome::{RunResult, format_number, with_unit},
    process,
    server::Server,
    target::{Preset, Templates},
};

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Sites in the large configuration (the baseline has one).
    #[arg(long, default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub sites: u32,
    /// WebSocket clients opened on the first site once the server is
    /// measured idle (0: none).
    #[arg(long, default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub connections: u32,
    /// Seconds to let each server settle before it is measured.
    #[arg(long, default_value_t = 2)]
    pub settle: u64,
    /// Write the one-site configurations without `[[sites]]`: the implicit
    /// site, from `publish.secret` (for a herald without multi-site support;
    /// with --sites 1, both runs are such).
    #[arg(long)]
    pub implicit_site: bool,
    /// The herald binary (default: `herald` next to this binary).
    #[arg(long)]
    pub herald: Option<PathBuf>,
    /// Write the result as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Exit with status 1 if the sites add a task or a thread, or a client failed.
    #[arg(long)]
    pub check: bool,
    /// Hard limit for the whole run, in seconds.
    #[arg(long, default_value_t = 120)]
    pub time_limit: u64,
    /// Which CPUs the herald processes, and the bench, run on.
    #[command(flatten)]
    pub pinning: Pinning,
}

/// jemalloc's options (tikv-jemallocator reads them under its `_RJEM_`
/// prefix): freed pages go back to the system at once. By default jemalloc
/// returns them over 10 s, but only as a side effect of later allocator
/// activity, which an idle process has none of: what start-up parsed and
/// dropped (the TOML document, the raw configuration) stays in its RSS.
const PURGE: (&str, &str) = ("_RJEM_MALLOC_CONF", "dirty_decay_ms:0,muzzy_decay_ms:0");

/// The first site's key: where the clients connect.
const FIRST_KEY: &str = "key-00001";

/// What one server measured.
#[derive(Debug)]
struct Measured {
    /// From spawn to the listening line.
    startup: Duration,
    rss: u64,
    threads: u64,
    tasks: f64,
    /// Size of the `/metrics` answer: per-site label sets would show here.
    metrics_bytes: usize,
    config_bytes: usize,
    /// The same figures with the clients open, if any were asked for.
    with_clients: Option<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    opened: u32,
    rss: u64,
    threads: u64,
    tasks: f64,
}

pub async fn run(args: &Args) -> anyhow::Result<RunResult> {
    let herald = args.herald.clone().unwrap_or_else(crate::default_herald);
    let scratch = Scratch::create()?;
    let seed = crate::now_us() ^ u64::from(std::process::id()).rotate_left(32);
    let one = measure(&herald, &scratch, 1, args, seed, false).await?;
    let many = measure(&herald, &scratch, args.sites, args, seed, false).await?;
    let one_purged = measure(&herald, &scratch, 1, args, seed, true).await?;
    let many_purged = measure(&herald, &scratch, args.sites, args, seed, true).await?;
    drop(scratch);

    let n = args.sites;
    let setup = format!(
        "{} configured and idle against 1{}, {} ws clients on one site",
        count(n),
        if args.implicit_site {
            " (the implicit site)"
        } else {
            ""
        },
        args.connections
    );
    let mut result = RunResult::new("sites", Preset::Herald.name(), setup);
    result.add("sites", "sites configured", "", f64::from(n));
    // Each figure twice, `KEY_one` and `KEY_many`: `table` pairs them up.
    let mut pair = |key: &str, label: &str, unit: &str, one: f64, many: f64| {
        result.add(
            &format!("{key}_one"),
            &format!("{label}, 1 site"),
            unit,
            one,
        );
        let label = format!("{label}, {}", count(n));
        result.add(&format!("{key}_many"), &label, unit, many);
    };
    let mb = |bytes: u64| bytes as f64 / 1e6;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let kb = |bytes: usize| bytes as f64 / 1e3;
    pair("rss", "server RSS", "MB", mb(one.rss), mb(many.rss));
    let purged = (mb(one_purged.rss), mb(many_purged.rss));
    pair(
        "rss_purged",
        "server RSS, freed pages returned",
        "MB",
        purged.0,
        purged.1,
    );
    pair("tasks", "tokio tasks", "", one.tasks, many.tasks);
    let threads = (one.threads as f64, many.threads as f64);
    pair("threads", "threads", "", threads.0, threads.1);
    pair(
        "startup",
        "start-up",
        "ms",
        ms(one.startup),
        ms(many.startup),
    );
    let metrics = (kb(one.metrics_bytes), kb(many.metrics_bytes));
    pair("metrics", "/metrics page", "kB", metrics.0, metrics.1);
    let config = (kb(one.config_bytes), kb(many.config_bytes));
    pair("config", "config file", "kB", config.0, config.1);
    let per_site = |one: f64, many: f64| (n > 1).then(|| (many - one) / f64::from(n - 1));
    let bytes_per_site = per_site(one.rss as f64, many.rss as f64);
    result.add(
        "bytes_per_site",
        "server RSS per added site",
        "B",
        bytes_per_site,
    );
    let purged_per_site = per_site(one_purged.rss as f64, many_purged.rss as f64);
    let label = "server RSS per added site, freed pages returned";
    result.add("bytes_per_site_purged", label, "B", purged_per_site);
    let startup_per_site = per_site(ms(one.startup), ms(many.startup)).map(|v| v * 1e3);
    result.add(
        "startup_per_site",
        "start-up per added site",
        "µs",
        startup_per_site,
    );
    if let (Some(a), Some(b)) = (&one.with_clients, &many.with_clients) {
        let c = args.connections;
        result.add("clients", "WebSocket clients on one site", "", f64::from(c));
        let mut pair = |key: &str, label: &str, unit: &str, one: f64, many: f64| {
            let label = format!("{label} with {c} clients");
            result.add(
                &format!("{key}_one"),
                &format!("{label}, 1 site"),
                unit,
                one,
            );
            let label = format!("{label}, {}", count(n));
            result.add(&format!("{key}_many"), &label, unit, many);
        };
        pair("clients_rss", "server RSS", "MB", mb(a.rss), mb(b.rss));
        pair("clients_tasks", "tokio tasks", "", a.tasks, b.tasks);
        let threads = (a.threads as f64, b.threads as f64);
        pair("clients_threads", "threads", "", threads.0, threads.1);
        let per_client = (b.opened > 0).then(|| (b.tasks - many.tasks) / f64::from(b.opened));
        result.add("tasks_per_client", "tokio tasks per client", "", per_client);
        let failed = 2 * c - a.opened - b.opened;
        result.add("failed", "clients failed", "", f64::from(failed));
        if failed > 0 {
            result.ok = false;
        }
    }
    if many.tasks != one.tasks {
        result.ok = false;
        result.errors.push(format!(
            "{n} idle sites run {} tokio tasks, 1 site {}",
            many.tasks, one.tasks
        ));
    }
    if many.threads != one.threads {
        result.ok = false;
        result.errors.push(format!(
            "{n} idle sites run {} threads, 1 site {}",
            many.threads, one.threads
        ));
    }
    Ok(result)
}

/// Starts herald with `sites` sites, lets it settle, measures it, opens the
/// clients, measures again, and stops it. With `purge`, under [`PURGE`] and
/// without clients.
async fn measure(
    herald: &Path,
    scratch: &Scratch,
    sites: u32,
    args: &Args,
    seed: u64,
    purge: bool,
) -> anyhow::Result<Measured> {
    let implicit = args.implicit_site && sites == 1;
    let text = config(sites, implicit, seed);
    let path = scratch.0.join(format!("sites-{sites}.toml"));
    std::fs::write(&path, &text).with_context(|| format!("cannot write {}", path.display()))?;
    let env: Vec<(String, String)> = if purge {
        vec![(PURGE.0.into(), PURGE.1.into())]
    } else {
        Vec::new()
    };
    let with = if purge {
        ", freed pages returned at once"
    } else {
        ""
    };
    eprintln!("herald-bench: sites: herald with {}{with}", count(sites));
    let started = Instant::now();
    let cpus = args.pinning.server_set();
    let server = Server::start(herald, Some(&path), &env, cpus.as_ref())
        .await
        .with_context(|| {
            format!(
                "herald with {} did not start (a herald without multi-site support exits with \
             status 64, unknown field `sites`; --sites 1 --implicit-site measures it with \
             its implicit site)",
                count(sites)
            )
        })?;
    let startup = started.elapsed();
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    // RSS and threads first: the scrape itself allocates.
    let rss = process::sample(&[server.pid])?.rss;
    let threads = process::threads(server.pid)?;
    let mut http = HttpConn::new(&server.addr);
    let (tasks, metrics_bytes) = alive_tasks(&mut http).await?;

    let with_clients = if args.connections > 0 && !purge {
        let mut templates = Templates::preset(Preset::Herald);
        if !implicit {
            templates.ws_url = format!("ws://{{addr}}/ws?key={FIRST_KEY}");
        }
        // Connected without a subscription: the connection alone.
        templates.ws_subscribe = None;
        let conns = open_clients(&templates, &server.addr, args.connections).await?;
        // A moment for the server to finish what the handshakes started.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let loaded = Loaded {
            opened: conns.len() as u32,
            rss: process::sample(&[server.pid])?.rss,
            threads: process::threads(server.pid)?,
            tasks: alive_tasks(&mut http).await?.0,
        };
        drop(conns);
        Some(loaded)
    } else {
        None
    };
    server.stop().await;
    Ok(Measured {
        startup,
        rss,
        threads,
        tasks,
        metrics_bytes,
        config_bytes: text.len(),
        with_clients,
    })
}

/// Opens `count` WebSocket clients one after another; those that fail are
/// left out (and counted as failed by the caller).
async fn open_clients(templates: &Templates, addr: &str, count: u32) -> anyhow::Result<Vec<Conn>> {
    let mut conns = Vec::with_capacity(count as usize);
    let mut first_error = None;
    let source = std::net::Ipv4Addr::new(127, 0, 0, 2);
    for _ in 0..count {
        let open = client::open(templates, Transport::Ws, addr, "", source, &Resume::Live);
        match tokio::time::timeout(Duration::from_secs(5), open).await {
            Ok(Ok(conn)) => conns.push(conn),
            Ok(Err(error)) => {
                first_error.get_or_insert_with(|| format!("{error:#}"));
            }
            Err(_) => {
                first_error.get_or_insert_with(|| "handshake timed out after 5 s".into());
            }
        }
    }
    match first_error {
        Some(error) if conns.is_empty() => bail!("no client could connect: {error}"),
        Some(error) => eprintln!("herald-bench: sites: some clients failed: {error}"),
        None => {}
    }
    Ok(conns)
}

/// `herald_runtime_alive_tasks` from `/metrics`, and the page's size.
async fn alive_tasks(http: &mut HttpConn) -> anyhow::Result<(f64, usize)> {
    let (status, body) = http.request("GET", "/metrics", b"").await?;
    if status != 200 {
        bail!("GET /metrics answered {status}");
    }
    let page = String::from_utf8_lossy(&body);
    let tasks = metric_sum(&page, "herald_runtime_alive_tasks")
        .context("no herald_runtime_alive_tasks on /metrics (a herald older than that gauge?)")?;
    Ok((tasks, body.len()))
}

/// The configuration file with `sites` sites; with `implicit` (one site
/// only), the implicit site of `publish.secret` instead of a `[[sites]]` table.
pub fn config(sites: u32, implicit: bool, seed: u64) -> String {
    let mut out = format!(
        "# Written by herald-bench sites: {}, idle; removed after the run.\n",
        count(sites)
    );
    if implicit {
        let _ = write!(out, "\n[publish]\nsecret = \"{}\"\n", secret(seed, 1));
        return out;
    }
    for n in 1..=sites {
        let _ = write!(
            out,
            "\n[[sites]]\nid = \"site-{n:05}\"\nkey = \"key-{n:05}\"\nsecrets = [\"{}\"]\n\
             mode = \"public\"\nallowed_origins = [\"https://site-{n:05}.example\"]\n",
            secret(seed, n)
        );
    }
    out
}

/// 32 random-ish bytes in hex for site `site`: distinct per site and per run,
/// which is all a benchmark's secret needs.
fn secret(seed: u64, site: u32) -> String {
    let mut state = seed ^ u64::from(site).wrapping_mul(0xA24B_AED4_963E_E407);
    (0..4).fold(String::with_capacity(64), |mut hex, _| {
        let _ = write!(hex, "{:016x}", splitmix64(&mut state));
        hex
    })
}

/// One step of SplitMix64: a fast, well-mixed sequence from any seed.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The side-by-side table of a result: 1 site, N sites, the difference and
/// the cost per added site.
pub fn table(result: &RunResult) -> String {
    let n = result.get("sites").unwrap_or(0.0);
    let mut out = format!(
        "| | 1 site | {} | difference | per added site |\n|---|---|---|---|---|\n",
        count(n as u32)
    );
    // (label, key, unit, per added site: scale and unit).
    let mut rows = vec![
        ("server RSS".to_string(), "rss", "MB", Some((1e6, "B"))),
        (
            "… with freed pages returned at once".into(),
            "rss_purged",
            "MB",
            Some((1e6, "B")),
        ),
        ("tokio tasks".into(), "tasks", "", Some((1.0, ""))),
        ("threads".into(), "threads", "", Some((1.0, ""))),
        (
            "start-up (spawn to listening)".into(),
            "startup",
            "ms",
            Some((1e3, "µs")),
        ),
        ("`/metrics` page".into(), "metrics", "kB", Some((1e3, "B"))),
    ];
    if let Some(c) = result.get("clients").map(format_number) {
        rows.push((
            format!("tokio tasks with {c} WebSocket clients"),
            "clients_tasks",
            "",
            None,
        ));
        rows.push((
            format!("server RSS with {c} WebSocket clients"),
            "clients_rss",
            "MB",
            None,
        ));
    }
    let added = n - 1.0;
    for (label, key, unit, per_site) in rows {
        let one = result.get(&format!("{key}_one"));
        let many = result.get(&format!("{key}_many"));
        let difference = one.zip(many).map(|(a, b)| b - a);
        let per = per_site
            .zip(difference)
            .filter(|_| added > 0.0)
            .map(|((scale, unit), d)| with_unit(Some(d * scale / added), unit));
        let _ = writeln!(
            out,
            "| {label} | {} | {} | {} | {} |",
            with_unit(one, unit),
            with_unit(many, unit),
            signed(difference, unit),
            per.unwrap_or_else(|| "–".into()),
        );
    }
    out
}

/// "1 site", "10000 sites".
fn count(sites: u32) -> String {
    if sites == 1 {
        "1 site".into()
    } else {
        format!("{sites} sites")
    }
}

/// A difference with its sign ("+4.40 MB", "0").
fn signed(value: Option<f64>, unit: &str) -> String {
    match value {
        Some(v) if v > 0.0 => format!("+{}", with_unit(Some(v), unit)),
        other => with_unit(other, unit),
    }
}

/// A scratch folder under the system's temporary folder, removed on drop
/// (also when the run is cut off by its time limit).
struct Scratch(PathBuf);

impl Scratch {
    fn create() -> anyhow::Result<Scratch> {
        let path = std::env::temp_dir().join(format!("herald-bench-sites-{}", std::process::id()));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Scratch(path))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_lists_every_site() {
        let text = config(3, false, 7);
        assert_eq!(text.matches("[[sites]]").count(), 3);
        assert!(
            text.contains("id = \"site-00001\"\nkey = \"key-00001\"\n"),
            "{text}"
        );
        assert!(
            text.contains("id = \"site-00003\"\nkey = \"key-00003\"\n"),
            "{text}"
        );
        assert!(text.contains("allowed_origins = [\"https://site-00002.example\"]"));
        assert!(!text.contains("[publish]"));
        // Ids keep their zero padding up to 99999 and simply grow past it.
        assert!(config(1, false, 7).contains("id = \"site-00001\""));
    }

    #[test]
    fn implicit_site_has_no_sites_table() {
        let text = config(1, true, 7);
        assert!(!text.contains("[[sites]]"), "{text}");
        assert!(text.contains("[publish]\nsecret = \""), "{text}");
    }

    #[test]
    fn secrets_are_32_bytes_of_hex_and_differ() {
        let a = secret(1, 1);
        assert_eq!(a.len(), 64);
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_ne!(a, secret(1, 2));
        assert_ne!(a, secret(2, 1));
        assert_eq!(a, secret(1, 1));
    }

    #[test]
    fn reads_the_task_gauge() {
        let page = "# HELP herald_runtime_alive_tasks Tokio tasks alive.\n\
                    # TYPE herald_runtime_alive_tasks gauge\n\
                    herald_runtime_alive_tasks 7\n\
                    herald_runtime_alive_tasks_other 99\n";
        assert_eq!(metric_sum(page, "herald_runtime_alive_tasks"), Some(7.0));
    }

    #[test]
    fn table_puts_the_runs_side_by_side() {
        let mut result = RunResult::new(
            "sites",
            "herald",
            "10000 sites configured and idle against 1, 100 ws clients on one site".into(),
        );
        result.add("sites", "sites configured", "", 10_000.0);
        result.add("rss_one", "", "MB", 8.0);
        result.add("rss_many", "", "MB", 12.9995);
        result.add("rss_purged_one", "", "MB", 7.0);
        result.add("rss_purged_many", "", "MB", 9.0);
        result.add("tasks_one", "", "", 5.0);
        result.add("tasks_many", "", "", 5.0);
        result.add("startup_one", "", "ms", 10.0);
        result.add("startup_many", "", "ms", 59.995);
        result.add("clients", "", "", 100.0);
        result.add("clients_tasks_one", "", "", 105.0);
        result.add("clients_tasks_many", "", "", 106.0);
        let table = table(&result);
        assert!(table.contains("| 1 site | 10000 sites |"), "{table}");
        assert!(
            table.contains("| server RSS | 8 MB | 13.0 MB | +5.00 MB | 500 B |"),
            "{table}"
        );
        assert!(
            table.contains("| … with freed pages returned at once | 7 MB | 9 MB | +2 MB | 200 B |"),
            "{table}"
        );
        assert!(table.contains("| tokio tasks | 5 | 5 | 0 | 0 |"), "{table}");
        assert!(table.contains("| threads | – | – | – | – |"), "{table}");
        assert!(table.contains("| 60.0 ms | +50.0 ms | 5 µs |"), "{table}");
        assert!(table.contains("| tokio tasks with 100 WebSocket clients | 105 | 106 | +1 | – |"));
        assert!(table.contains("| server RSS with 100 WebSocket clients | – | – | – | – |"));
    }
}
