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

use std::sync::Arc;

use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, TcpStream},
};

use crate::{
    App,
    compat::{MAX_CONNECTIONS, accept_each},
    config::CompatPortConfig,
};
use controller::Controller;
use lines::{Line, Lines};

/// Serves the controller port for as long as the process runs.
pub(crate) async fn serve(listener: TcpListener, app: App, config: CompatPortConfig) {
    let controller = Arc::new(Controller::new(app, config));
    let refusal =
        format!("ERR Too many controller connections (at most {MAX_CONNECTIONS})\r\n").into_bytes();
    accept_each(listener, "meteor", refusal, move |stream| {
        let controller = controller.clone();
        async move { converse(stream, &controller).await }
    })
    .await;
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
