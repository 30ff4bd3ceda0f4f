//! The Meteor controller port (`meteor.listen`): the line protocol that a
//! StatusNet or GNU social site's Meteor plugin publishes with, so that the
//! plugin publishes to Herald unchanged (docs/compat.md).
//!
//! Each connection reads one command per line (LF or CRLF) and answers each
//! with its reply, in order, before it reads the next: the plugin keeps its
//! socket open (`STREAM_CLIENT_PERSISTENT`) and reads exactly one reply line
//! per `ADDMESSAGE`. A message published here is a publish to the site's
//! channel like any other: history, Redis and recovery all apply, and its
//! Meteor id is the channel's offset.
//!
//! Like Meteor's, the port has no authentication: it listens on loopback
//! unless `meteor.allow_network` says otherwise, and the docs say to
//! firewall it.

pub(crate) mod command;
mod controller;
mod lines;
pub(crate) mod unslash;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};

use crate::{App, config::CompatPortConfig};
use controller::Controller;
use lines::{Line, Lines};

/// Controller connections served at once; past it, a new one is answered
/// with an error and closed. A site's publishers hold one persistent socket
/// per PHP worker, so this is far above what a busy site needs.
const MAX_CONNECTIONS: usize = 1024;

/// Binds the port; the caller serves it with [`serve`] once the server runs.
pub(crate) async fn bind(config: &CompatPortConfig) -> anyhow::Result<TcpListener> {
    use anyhow::Context as _;
    TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (meteor.listen)", config.listen))
}

/// Serves the controller port for as long as the process runs.
pub(crate) async fn serve(listener: TcpListener, app: App, config: CompatPortConfig) {
    let controller = Arc::new(Controller::new(app, config));
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (mut stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "meteor listener: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tokio::spawn(async move {
                let refusal =
                    format!("ERR Too many controller connections (at most {MAX_CONNECTIONS})\r\n");
                let _ = stream.write_all(refusal.as_bytes()).await;
            });
            continue;
        };
        let controller = controller.clone();
        tokio::spawn(async move {
            if let Err(error) = converse(stream, &controller).await {
                tracing::debug!(client.addr = %peer, %error, "meteor connection ended with an error");
            }
            drop(slot);
        });
    }
}

/// Answers one connection's commands until it quits or closes.
async fn converse(stream: TcpStream, controller: &Controller) -> std::io::Result<()> {
    let (reader, mut writer) = stream.into_split();
    let mut lines = Lines::new(reader);
    while let Some(line) = lines.next(controller.max_line()).await? {
        let reply = match line {
            Line::Text(line) => controller.answer(&line).await,
            Line::TooLong => controller.too_long(),
        };
        writer.write_all(reply.text.as_bytes()).await?;
        if reply.close {
            writer.shutdown().await?;
            break;
        }
    }
    Ok(())
}

/// The address the port is bound to, for the start-up log.
pub(crate) fn log_listening(listener: &TcpListener, config: &CompatPortConfig) {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(
        listen = ?addr,
        site = config.site,
        channelbase = config.channelbase,
        "meteor controller port listening (no authentication: firewall it)"
    );
}
