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
//!
//! Meteor's optional UDP listener (`meteor.udp_listen`, off by default) takes
//! one `ADDMESSAGE` per datagram and answers nothing, as Meteor's did: a
//! refused or lost datagram is a notice lost without a word, which the docs
//! say. Its publishes are counted as the port's.

pub(crate) mod command;
mod controller;
mod lines;
pub(crate) mod unslash;

use std::sync::Arc;

use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, TcpStream, UdpSocket},
};

use crate::{
    App,
    compat::{
        MAX_CONNECTIONS, accept_each,
        publish::{Port, count_refused},
    },
    config::CompatPortConfig,
};
use controller::Controller;
use lines::{Line, Lines};

/// The largest UDP datagram taken, as Meteor's: a bigger one is dropped whole.
pub(crate) const MAX_DATAGRAM: usize = 8192;

/// Serves the controller port (and its UDP listener, when bound) for as long
/// as the process runs.
pub(crate) async fn serve(
    listener: TcpListener,
    udp: Option<UdpSocket>,
    app: App,
    config: CompatPortConfig,
) {
    let controller = Arc::new(Controller::new(app, config));
    if let Some(udp) = udp {
        tokio::spawn(serve_udp(udp, controller.clone()));
    }
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

/// Publishes each `ADDMESSAGE` datagram; answers nothing. Datagrams are taken
/// one at a time, so a flood waits in the socket's buffer (and the kernel
/// drops what does not fit) instead of in Herald's memory.
async fn serve_udp(socket: UdpSocket, controller: Arc<Controller>) {
    let mut buffer = vec![0u8; MAX_DATAGRAM + 1];
    loop {
        let (length, peer) = match socket.recv_from(&mut buffer).await {
            Ok(received) => received,
            Err(error) => {
                tracing::debug!(%error, "Meteor UDP listener: receive failed");
                continue;
            }
        };
        let datagram = &buffer[..length];
        let line = datagram
            .strip_suffix(b"\n")
            .map_or(datagram, |line| line.strip_suffix(b"\r").unwrap_or(line));
        let publishes = matches!(
            command::parse(line),
            Some(command::Command::AddMessage { .. })
        );
        if length > MAX_DATAGRAM || !publishes {
            tracing::debug!(client.addr = %peer, length, "Meteor UDP listener: datagram dropped");
            count_refused(controller.app(), Port::Meteor);
            continue;
        }
        let reply = controller.answer(line).await;
        if reply.text.starts_with("ERR") {
            tracing::debug!(client.addr = %peer, reply = reply.text.trim_end(), "Meteor UDP listener: not published");
        }
    }
}
