//! The `herald` binary: parse the command line, load and check the
//! configuration (exit 64 on any error, naming the key), then serve until
//! SIGTERM or SIGINT and drain gracefully.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use api::{Server, config};
use clap::Parser;

// jemalloc returns freed memory to the system more readily than glibc and
// costs about 200 B less per idle connection (shared/reference/memory.md).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Exit status for a configuration error (EX_USAGE from sysexits.h).
const EXIT_CONFIG: u8 = 64;

/// Herald: real-time push for microblog timelines.
///
/// With no arguments, serves the zero-config dev site on 127.0.0.1:8080.
/// Every setting can also come from a TOML file or a HERALD_* variable
/// (see docs/configuration.md).
#[derive(Parser, Debug)]
#[command(name = "herald", version)]
struct Cli {
    /// TOML configuration file (also HERALD_CONFIG).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on (also HERALD_LISTEN).
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<String>,
    /// Engine: memory (also HERALD_ENGINE).
    #[arg(long, value_name = "memory|redis")]
    engine: Option<String>,
    /// Redis URL for the redis engine (also HERALD_REDIS_URL).
    #[arg(long, value_name = "URL")]
    redis_url: Option<String>,
    /// A listener of its own for /metrics, which the main one then does
    /// not serve (also HERALD_METRICS_LISTEN).
    #[arg(long, value_name = "ADDR:PORT")]
    metrics_listen: Option<String>,
    /// The Meteor controller port, for StatusNet's Meteor plugin; off
    /// unless given (also HERALD_METEOR_LISTEN; docs/compat.md).
    #[arg(long, value_name = "ADDR:PORT")]
    meteor_listen: Option<String>,
    /// The STOMP publish port, for StatusNet's Orbited plugin; off unless
    /// given (also HERALD_STOMP_LISTEN; docs/compat.md).
    #[arg(long, value_name = "ADDR:PORT")]
    stomp_listen: Option<String>,
    /// Let the dev site (no publish secret, no [[sites]]) listen on an
    /// address other than loopback (also HERALD_PUBLISH_ALLOW_DEV_SITE_ON_NETWORK).
    #[arg(long)]
    allow_dev_site_on_network: bool,
    /// Share the listening port with other herald processes (SO_REUSEPORT);
    /// needs the redis engine (also HERALD_LISTENER_REUSEPORT).
    #[arg(long)]
    reuseport: bool,
    /// Validate the configuration and exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let overrides = config::Overrides {
        config_file: cli.config,
        listen: cli.listen,
        engine: cli.engine,
        redis_url: cli.redis_url,
        metrics_listen: cli.metrics_listen,
        meteor_listen: cli.meteor_listen,
        stomp_listen: cli.stomp_listen,
        allow_dev_site_on_network: cli.allow_dev_site_on_network,
        reuseport: cli.reuseport,
    };
    let config = match config::load(&overrides, env()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("herald: invalid configuration: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if cli.check_config {
        println!("herald: configuration is valid");
        return ExitCode::SUCCESS;
    }
    api::logging::init(&config.log);
    raise_open_files_limit();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("herald: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let server = Server::bind(config).await?;
        let shutdown = shutdown_signal()?;
        tokio::spawn(reload_on_hangup(server.app().clone(), overrides)?);
        // Scripts and tests wait for this exact line (https:// with tls.cert).
        let scheme = if server.app().config().tls.is_some() {
            "https"
        } else {
            "http"
        };
        println!("herald listening on {scheme}://{}", server.local_addr());
        // The server runs on a runtime worker, not on this (the main)
        // thread: a task spawned from a worker starts on that worker's own
        // queue, while one spawned from here must wake a worker, a system
        // call and a context switch for every new connection.
        tokio::spawn(server.run(shutdown))
            .await
            .context("the server task panicked")?;
        anyhow::Ok(())
    });
    // Sessions cut off by the grace period must not delay the exit.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "herald stopped");
            eprintln!("herald: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The `HERALD_*` environment, as the configuration reads it.
fn env() -> impl Iterator<Item = (String, String)> {
    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
}

/// Reloads the configuration on every SIGHUP: the same file, variables and
/// flags as at start, checked whole; see `App::reload` for what applies.
fn reload_on_hangup(
    app: api::App,
    overrides: config::Overrides,
) -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup())?;
    Ok(async move {
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP received: reloading the configuration");
            app.reload(config::load(&overrides, env()));
        }
    })
}

/// Every connection is a file descriptor, and many systems start processes
/// with a soft limit of 1024. Raise it to the hard limit, as nginx's
/// `worker_rlimit_nofile` would, and say what we got.
fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(limit, "open files limit"),
        Err(error) => tracing::warn!(%error, "cannot raise the open files limit"),
    }
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed here, before
/// the readiness line is printed, so that a signal sent right after start-up
/// is a graceful shutdown and not the default "terminate now".
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
            _ = interrupt.recv() => tracing::info!("SIGINT received"),
        }
    })
}
