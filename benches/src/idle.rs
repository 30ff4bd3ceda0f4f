//! The `idle` scenario: what one idle connection costs the server.
//!
//! RSS is sampled after a warm-up connection (so that one-off allocations
//! such as thread stacks and the first TLS-less handshake do not count),
//! then again once all N connections are open and have settled for a few
//! seconds. Bytes per connection = (after - before) / N.

use std::{path::PathBuf, time::Duration};

use futures_util::{StreamExt, stream};

use crate::{Transport, client, server::Server};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Number of idle connections to open.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    #[arg(long, value_enum, default_value_t = Transport::Ws)]
    transport: Transport,
    /// Subscribe each WebSocket to a channel (SSE streams always have one).
    #[arg(long)]
    subscribe: bool,
    /// Put every connection on this one channel instead of a channel of its own
    /// (`user:<n>`), which leaves out the per-channel state of the hub and history.
    #[arg(long)]
    channel: Option<String>,
    /// The herald binary to measure.
    #[arg(long)]
    herald: Option<PathBuf>,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// Seconds to let the server settle before the second sample.
    #[arg(long, default_value_t = 5)]
    settle: u64,
}

/// An open connection, held only so that it stays open.
#[allow(dead_code)]
enum Held {
    Ws(Box<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>>),
    Sse(tokio::net::TcpStream),
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let herald = args.herald.clone().unwrap_or_else(crate::default_herald);
    let server = Server::start(&herald, &[]).await?;
    let sources = args.connections.div_ceil(20_000).max(1) + 1;

    // Warm-up: one connection opened and closed, so the runtime's lazily
    // created parts exist before the first sample.
    let warm_up = channel_for(args.channel.as_deref(), 0);
    drop(
        open(
            &server.addr,
            args.transport,
            args.subscribe,
            &warm_up,
            0,
            sources,
        )
        .await?,
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = server.rss()?;

    let started = std::time::Instant::now();
    let addr = server.addr.clone();
    let held: Vec<Held> = stream::iter(0..args.connections)
        .map(|i| {
            let addr = addr.clone();
            let channel = channel_for(args.channel.as_deref(), i + 1);
            async move {
                open(
                    &addr,
                    args.transport,
                    args.subscribe,
                    &channel,
                    i + 1,
                    sources,
                )
                .await
            }
        })
        .buffer_unordered(args.concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let open_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let after = server.rss()?;
    let per_connection = (after.saturating_sub(before)) as f64 / held.len() as f64;
    let channels = if args.channel.is_some() {
        "one shared channel"
    } else {
        "a channel each"
    };
    let transport = match args.transport {
        Transport::Ws if args.subscribe => format!("ws, subscribed to {channels}"),
        Transport::Ws => "ws, no subscription".to_string(),
        Transport::Sse => format!("sse, subscribed to {channels}"),
    };
    println!(
        "{}",
        serde_json::json!({
            "scenario": "idle",
            "transport": transport,
            "connections": held.len(),
            "rss_before_bytes": before,
            "rss_after_bytes": after,
            "bytes_per_connection": per_connection.round(),
            "open_seconds": (open_secs * 100.0).round() / 100.0,
        })
    );
    drop(held);
    server.stop().await;
    Ok(())
}

fn channel_for(shared: Option<&str>, index: usize) -> String {
    shared.map_or_else(|| format!("user:{index}"), str::to_string)
}

async fn open(
    addr: &str,
    transport: Transport,
    subscribe: bool,
    channel: &str,
    index: usize,
    sources: usize,
) -> anyhow::Result<Held> {
    let source = client::source_for(index, sources);
    Ok(match transport {
        Transport::Ws => {
            let channel = subscribe.then_some(channel);
            Held::Ws(Box::new(client::websocket(addr, source, channel).await?))
        }
        Transport::Sse => Held::Sse(client::sse(addr, source, channel).await?),
    })
}
