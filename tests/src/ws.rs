//! A WebSocket client for Herald's native protocol: JSON frames in, JSON frames out, close codes.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::message::Delivered;

/// How long the helpers wait for a frame unless told otherwise.
pub const WS_TIMEOUT: Duration = Duration::from_secs(10);

/// One connected WebSocket client.
pub struct WsClient {
    /// The socket; nothing is read from it except inside the `next_*` and `expect_*` calls, so a
    /// test can stall the client simply by not calling them.
    stream: WebSocketStream<TcpStream>,
    /// The `welcome` frame Herald sent first.
    pub welcome: Value,
}

/// How to open the TCP connection under a [`WsClient`].
#[derive(Debug, Clone, Default)]
pub struct WsOptions {
    /// `SO_RCVBUF` to set before connecting; a small one lets a stalled client's kernel buffer
    /// fill quickly so that the server's outbox, not the kernel, absorbs what is sent.
    pub recv_buffer_bytes: Option<u32>,
}

/// One thing read from the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsEvent {
    /// A text frame.
    Text(String),
    /// A binary frame (only the echo route sends them).
    Binary(Vec<u8>),
    /// A close frame: code and reason (1005 and "" when the frame had no code).
    Close(u16, String),
    /// The connection ended without a close frame, or with an error.
    Ended(String),
    /// Nothing arrived in time.
    Timeout,
}

impl WsClient {
    /// Connects to `url` (`ws://127.0.0.1:PORT/ws`) and reads the `welcome` frame.
    pub async fn connect(url: &str) -> WsClient {
        WsClient::connect_with(url, WsOptions::default()).await
    }

    /// Connects with socket options and reads the `welcome` frame.
    pub async fn connect_with(url: &str, options: WsOptions) -> WsClient {
        let stream = WsClient::handshake(url, options).await;
        let mut client = WsClient {
            stream,
            welcome: Value::Null,
        };
        let welcome = client.next_json(WS_TIMEOUT).await;
        assert_eq!(
            welcome["type"], "welcome",
            "first frame must be welcome: {welcome}"
        );
        client.welcome = welcome;
        client
    }

    /// Connects to a route that sends no `welcome` (the echo route), reading nothing.
    pub async fn connect_silent(url: &str) -> WsClient {
        WsClient {
            stream: WsClient::handshake(url, WsOptions::default()).await,
            welcome: Value::Null,
        }
    }

    /// Opens the TCP connection and performs the WebSocket handshake, reading nothing more.
    pub async fn handshake(url: &str, options: WsOptions) -> WebSocketStream<TcpStream> {
        let addr = addr_of(url);
        let socket = TcpSocket::new_v4().expect("socket");
        if let Some(bytes) = options.recv_buffer_bytes {
            socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
        }
        let tcp = tokio::time::timeout(WS_TIMEOUT, socket.connect(addr))
            .await
            .unwrap_or_else(|_| panic!("connect to {addr} timed out"))
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        let config = WebSocketConfig::default();
        let (stream, response) = tokio::time::timeout(
            WS_TIMEOUT,
            tokio_tungstenite::client_async_with_config(url, tcp, Some(config)),
        )
        .await
        .unwrap_or_else(|_| panic!("WebSocket handshake with {url} timed out"))
        .unwrap_or_else(|e| panic!("WebSocket handshake with {url}: {e}"));
        assert_eq!(response.status(), 101, "upgrade answer: {response:?}");
        stream
    }

    /// Sends a JSON value as one text frame.
    pub async fn send_json(&mut self, value: &Value) {
        self.send_text(&value.to_string()).await;
    }

    /// Sends a text frame as is (for malformed input).
    pub async fn send_text(&mut self, text: &str) {
        self.stream
            .send(Message::text(text))
            .await
            .unwrap_or_else(|e| panic!("send text frame: {e}"));
    }

    /// Sends a binary frame.
    pub async fn send_binary(&mut self, bytes: &[u8]) {
        self.stream
            .send(Message::binary(bytes.to_vec()))
            .await
            .unwrap_or_else(|e| panic!("send binary frame: {e}"));
    }

    /// Reads the next data or close frame, skipping Ping/Pong.
    pub async fn next_event(&mut self, timeout: Duration) -> WsEvent {
        let read = async {
            loop {
                match self.stream.next().await {
                    None => return WsEvent::Ended("stream ended".into()),
                    Some(Err(e)) => return WsEvent::Ended(e.to_string()),
                    Some(Ok(Message::Text(text))) => return WsEvent::Text(text.to_string()),
                    Some(Ok(Message::Binary(bytes))) => return WsEvent::Binary(bytes.to_vec()),
                    Some(Ok(Message::Close(frame))) => {
                        // Answer the close at once, as browsers do; tungstenite has queued the
                        // answer but sends it only when the stream is driven again.
                        let _ = self.stream.flush().await;
                        return match frame {
                            Some(frame) => {
                                WsEvent::Close(frame.code.into(), frame.reason.to_string())
                            }
                            None => WsEvent::Close(1005, String::new()),
                        };
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                }
            }
        };
        tokio::time::timeout(timeout, read)
            .await
            .unwrap_or(WsEvent::Timeout)
    }

    /// Reads the next text frame; panics on anything else.
    pub async fn next_text(&mut self, timeout: Duration) -> String {
        match self.next_event(timeout).await {
            WsEvent::Text(text) => text,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// Reads the next text frame as JSON; panics on anything else.
    pub async fn next_json(&mut self, timeout: Duration) -> Value {
        let text = self.next_text(timeout).await;
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("frame is not JSON ({e}): {text}"))
    }

    /// Reads the next frame and parses it as a `message` frame; panics on anything else.
    pub async fn next_message(&mut self, timeout: Duration) -> Delivered {
        let text = self.next_text(timeout).await;
        Delivered::parse(&text)
    }

    /// Expects the next frame to be a close frame and returns its code and reason.
    pub async fn expect_close(&mut self, timeout: Duration) -> (u16, String) {
        match self.next_event(timeout).await {
            WsEvent::Close(code, reason) => (code, reason),
            other => panic!("expected a close frame, got {other:?}"),
        }
    }

    /// Reads text frames until a close frame; returns the text frames and the close code and reason.
    pub async fn read_until_close(&mut self, timeout: Duration) -> (Vec<String>, u16, String) {
        let mut texts = Vec::new();
        loop {
            match self.next_event(timeout).await {
                WsEvent::Text(text) => texts.push(text),
                WsEvent::Close(code, reason) => return (texts, code, reason),
                other => panic!(
                    "expected frames then a close frame, got {other:?} after {} frames",
                    texts.len()
                ),
            }
        }
    }

    /// Subscribes to `channel` and returns the `subscribed` frame.
    pub async fn subscribe(&mut self, channel: &str) -> Value {
        self.send_json(&json!({"type": "subscribe", "channel": channel}))
            .await;
        self.expect_subscribed(channel).await
    }

    /// Subscribes to `channel` from a position and returns the `subscribed` frame.
    pub async fn subscribe_since(&mut self, channel: &str, epoch: &str, offset: u64) -> Value {
        self.send_json(&json!({
            "type": "subscribe",
            "channel": channel,
            "since": {"epoch": epoch, "offset": offset},
        }))
        .await;
        self.expect_subscribed(channel).await
    }

    async fn expect_subscribed(&mut self, channel: &str) -> Value {
        let frame = self.next_json(WS_TIMEOUT).await;
        assert_eq!(
            frame["type"], "subscribed",
            "answer to subscribe {channel}: {frame}"
        );
        assert_eq!(
            frame["channel"], channel,
            "answer to subscribe {channel}: {frame}"
        );
        frame
    }

    /// Reads the next frame and checks that it is an `error` frame with `code`.
    pub async fn expect_error(&mut self, code: &str) -> Value {
        let frame = self.next_json(WS_TIMEOUT).await;
        assert_eq!(
            frame["type"], "error",
            "expected an error frame {code}: {frame}"
        );
        assert_eq!(frame["code"], code, "error code: {frame}");
        assert!(
            frame["message"].is_string(),
            "error frame has a message: {frame}"
        );
        frame
    }

    /// Sends a close frame (1000) and waits for the server's answer.
    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
        while let Ok(Some(Ok(_))) = tokio::time::timeout(WS_TIMEOUT, self.stream.next()).await {}
    }

    /// The underlying stream, for tests that drive the socket themselves.
    pub fn stream_mut(&mut self) -> &mut WebSocketStream<TcpStream> {
        &mut self.stream
    }
}

/// `ws://HOST:PORT/...` → `HOST:PORT` as a socket address.
fn addr_of(url: &str) -> SocketAddr {
    let rest = url
        .strip_prefix("ws://")
        .unwrap_or_else(|| panic!("not a ws:// URL: {url}"));
    let authority = rest.split('/').next().unwrap_or(rest);
    authority
        .parse()
        .unwrap_or_else(|e| panic!("{url}: host is not an IP address and port: {e}"))
}
