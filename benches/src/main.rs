//! `herald-bench`: measures what Herald costs, over the real network path on
//! loopback, against a `herald` process it starts itself.
//!
//! Scenarios so far:
//! - `idle`: RSS per idle WebSocket or SSE connection.

mod client;
mod idle;
mod server;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(name = "herald-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// Opens N idle connections and reports the server's RSS per connection.
    Idle(idle::Args),
}

/// The transport a scenario's clients use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    Ws,
    Sse,
}

/// Where the `herald` binary to measure is; the release build by default.
pub fn default_herald() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .map(|dir| dir.join("herald"))
        .unwrap_or_else(|| PathBuf::from("target/release/herald"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Every client connection is a file descriptor.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    match Cli::parse().scenario {
        Scenario::Idle(args) => idle::run(args).await,
    }
}
