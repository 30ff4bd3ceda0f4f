//! Benchmark clients: WebSocket and SSE connections from chosen loopback
//! source addresses (one source address gives only about 28k ports).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};
use tokio_tungstenite::{
    WebSocketStream, client_async_with_config,
    tungstenite::{Message, protocol::WebSocketConfig},
};

/// The loopback source address for connection number `index`.
pub fn source_for(index: usize, sources: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 2 + (index % sources.max(1)) as u8)
}

async fn connect_tcp(server: &str, source: Ipv4Addr) -> anyhow::Result<TcpStream> {
    let server: SocketAddr = server.parse().context("server address")?;
    let socket = TcpSocket::new_v4()?;
    // Without this, bind() picks the port itself, scanning every port in use
    // on the address: connecting grows quadratic past about 10k sockets.
    // With it, connect() picks the port from the full 4-tuple, cheaply.
    nix::sys::socket::setsockopt(
        &socket,
        nix::sys::socket::sockopt::IpBindAddressNoPort,
        &true,
    )?;
    socket.bind(SocketAddr::V4(SocketAddrV4::new(source, 0)))?;
    let stream = socket.connect(server).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Opens a WebSocket, waits for `welcome`, and subscribes to `channel` if given.
pub async fn websocket(
    server: &str,
    source: Ipv4Addr,
    channel: Option<&str>,
) -> anyhow::Result<WebSocketStream<TcpStream>> {
    let stream = connect_tcp(server, source).await?;
    // The client's own buffers matter too when one process holds 18k of them.
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let (mut ws, _) =
        client_async_with_config(format!("ws://{server}/ws"), stream, Some(config)).await?;
    expect_type(&mut ws, "welcome").await?;
    if let Some(channel) = channel {
        let subscribe = serde_json::json!({"type": "subscribe", "channel": channel});
        ws.send(Message::text(subscribe.to_string())).await?;
        expect_type(&mut ws, "subscribed").await?;
    }
    Ok(ws)
}

async fn expect_type(ws: &mut WebSocketStream<TcpStream>, kind: &str) -> anyhow::Result<()> {
    loop {
        match ws.next().await.context("connection closed")?? {
            Message::Text(text) => {
                let frame: serde_json::Value = serde_json::from_str(&text)?;
                if frame["type"] == kind {
                    return Ok(());
                }
                bail!("expected {kind}, got {text}");
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            other => bail!("expected {kind}, got {other:?}"),
        }
    }
}

/// Opens an SSE stream on `channel` and waits for its `subscribed` event.
pub async fn sse(server: &str, source: Ipv4Addr, channel: &str) -> anyhow::Result<TcpStream> {
    let mut stream = connect_tcp(server, source).await?;
    let request = format!(
        "GET /sse?channel={channel} HTTP/1.1\r\nHost: {server}\r\nAccept: text/event-stream\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut seen = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    while !seen.windows(17).any(|w| w == b"event: subscribed") {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            bail!(
                "stream closed before subscribed: {}",
                String::from_utf8_lossy(&seen)
            );
        }
        seen.extend_from_slice(&chunk[..read]);
    }
    if !seen.starts_with(b"HTTP/1.1 200") {
        bail!("unexpected answer: {}", String::from_utf8_lossy(&seen));
    }
    Ok(stream)
}
