//! A misbehaving HTTP proxy on loopback, put between a browser and Herald by the browser tests:
//! it refuses WebSocket upgrades, holds back streamed responses (SSE) as a buffering corporate
//! proxy does, and cuts every open connection on command, as a network cut would.
//!
//! It speaks just enough HTTP/1.1 for that: each client connection carries one request, sent on
//! with `Connection: close` (the answer says `Connection: close` too, so the browser opens a new
//! connection for its next request); a WebSocket upgrade that is let through is piped both ways
//! untouched. It runs on a tokio runtime of its own, so that the synchronous browser tests can
//! hold it like a [`crate::Herald`], and everything it runs stops when it is dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::task::AbortHandle;

/// A request or response head larger than this is refused: nothing the tests send comes near.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// A held-back stream is passed on once this much of it has been held (a buffering proxy's
/// limit); an SSE stream of a test never gets there, so it is held until it ends.
const BUFFER_LIMIT_BYTES: usize = 1024 * 1024;

/// How the proxy misbehaves; the flags combine, and [`Proxy::set_mode`] changes them for the
/// connections that come next.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyMode {
    /// WebSocket upgrade requests are answered `403 Forbidden` and closed.
    pub refuse_websocket: bool,
    /// A `text/event-stream` response is held back until it ends (or reaches
    /// `BUFFER_LIMIT_BYTES`); every other response passes at once.
    pub buffer_streams: bool,
}

impl ProxyMode {
    /// Passes everything through (until [`Proxy::cut`]).
    pub const PASS: ProxyMode = ProxyMode {
        refuse_websocket: false,
        buffer_streams: false,
    };

    /// Refuses WebSocket, passes the rest.
    pub const REFUSE_WEBSOCKET: ProxyMode = ProxyMode {
        refuse_websocket: true,
        buffer_streams: false,
    };

    /// A buffering proxy, which (like most) cannot carry WebSocket either: both flags.
    pub const BUFFERING: ProxyMode = ProxyMode {
        refuse_websocket: true,
        buffer_streams: true,
    };
}

/// The proxy, listening on `127.0.0.1`; dropping it closes the listener and every connection.
pub struct Proxy {
    /// Where browsers connect.
    pub addr: SocketAddr,
    /// What the connection tasks share with the test.
    shared: Arc<Shared>,
    /// The proxy's own runtime; `None` only while it is being dropped.
    runtime: Option<Runtime>,
}

/// The state every connection task sees.
struct Shared {
    /// Herald's address.
    upstream: SocketAddr,
    /// The current misbehaviour, read once per connection.
    mode: Mutex<ProxyMode>,
    /// Every connection task not known to have finished, with when it was accepted, so that
    /// [`Proxy::cut`] can end them.
    connections: Mutex<Vec<(Instant, AbortHandle)>>,
    /// What the proxy did, for tests to prove that it was in the way.
    counts: Counts,
}

/// Counters of what the proxy did.
#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    websockets_refused: AtomicU64,
    websockets_passed: AtomicU64,
    streams_buffered: AtomicU64,
    connections_cut: AtomicU64,
}

impl Proxy {
    /// Starts a proxy to Herald at `upstream` on a free loopback port.
    pub fn start(upstream: SocketAddr, mode: ProxyMode) -> Proxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .thread_name("test-proxy")
            .build()
            .expect("build the proxy's runtime");
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind the proxy on 127.0.0.1:0");
        let addr = listener.local_addr().expect("the proxy's address");
        let shared = Arc::new(Shared {
            upstream,
            mode: Mutex::new(mode),
            connections: Mutex::new(Vec::new()),
            counts: Counts::default(),
        });
        runtime.spawn(accept(listener, Arc::clone(&shared)));
        Proxy {
            addr,
            shared,
            runtime: Some(runtime),
        }
    }

    /// `http://<proxy>/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.addr, path.trim_start_matches('/'))
    }

    /// Changes the misbehaviour for the connections accepted from now on.
    pub fn set_mode(&self, mode: ProxyMode) {
        *self.shared.mode.lock() = mode;
    }

    /// Ends every open connection at once, both sides, as a network cut would, and keeps
    /// accepting new ones; answers how many were open.
    pub fn cut(&self) -> u64 {
        let open = std::mem::take(&mut *self.shared.connections.lock());
        let mut cut = 0;
        for (_, connection) in open.iter().filter(|(_, c)| !c.is_finished()) {
            connection.abort();
            cut += 1;
        }
        self.shared
            .counts
            .connections_cut
            .fetch_add(cut, Ordering::Relaxed);
        cut
    }

    /// Waits (up to `timeout`) until a connection has been open for `held_for` (a stream, a
    /// WebSocket or a held poll, not a request being answered), then cuts every connection as
    /// [`Proxy::cut`] does; answers how many were open, 0 if none was held in time.
    pub fn cut_when_held(&self, held_for: Duration, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let held = self
                .shared
                .connections
                .lock()
                .iter()
                .any(|(since, c)| !c.is_finished() && since.elapsed() >= held_for);
            if held {
                return self.cut();
            }
            if Instant::now() >= deadline {
                return 0;
            }
            // Polled, because connections come and go on the proxy's own runtime.
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Requests (WebSocket upgrades included) received so far.
    pub fn requests(&self) -> u64 {
        self.shared.counts.requests.load(Ordering::Relaxed)
    }

    /// WebSocket upgrades answered 403 so far.
    pub fn websockets_refused(&self) -> u64 {
        self.shared
            .counts
            .websockets_refused
            .load(Ordering::Relaxed)
    }

    /// WebSocket upgrades let through so far.
    pub fn websockets_passed(&self) -> u64 {
        self.shared.counts.websockets_passed.load(Ordering::Relaxed)
    }

    /// `text/event-stream` responses held back so far.
    pub fn streams_buffered(&self) -> u64 {
        self.shared.counts.streams_buffered.load(Ordering::Relaxed)
    }

    /// Connections ended by [`Proxy::cut`] so far.
    pub fn connections_cut(&self) -> u64 {
        self.shared.counts.connections_cut.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Drops every task, and with them the listener and every socket.
            runtime.shutdown_background();
        }
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let task = tokio::spawn(serve(client, Arc::clone(&shared)));
        let mut connections = shared.connections.lock();
        connections.retain(|(_, c)| !c.is_finished());
        connections.push((Instant::now(), task.abort_handle()));
    }
}

/// One client connection: its request, and the answer passed back (or held, or refused).
/// Errors end the connection; they are the browser's or Herald's hang-ups, which the browser
/// sees as such.
async fn serve(mut client: TcpStream, shared: Arc<Shared>) -> std::io::Result<()> {
    let Some((head, rest)) = read_head(&mut client, Head::Request).await? else {
        return Ok(());
    };
    shared.counts.requests.fetch_add(1, Ordering::Relaxed);
    let mode = *shared.mode.lock();
    let websocket = head
        .header("upgrade")
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if websocket && mode.refuse_websocket {
        shared
            .counts
            .websockets_refused
            .fetch_add(1, Ordering::Relaxed);
        let body = "WebSocket is not allowed through this proxy\n";
        let answer = format!(
            "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
        client.write_all(answer.as_bytes()).await?;
        return client.shutdown().await;
    }

    let mut server = TcpStream::connect(shared.upstream).await?;
    if websocket {
        shared
            .counts
            .websockets_passed
            .fetch_add(1, Ordering::Relaxed);
        server.write_all(&head.raw).await?;
        server.write_all(&rest).await?;
        tokio::io::copy_bidirectional(&mut client, &mut server).await?;
        return Ok(());
    }
    server.write_all(&head.closing()).await?;
    server.write_all(&rest).await?;

    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    // A browser never half-closes after its request: the end of what it sends is the end of the
    // connection (an EventSource closed by herald.js, say), whatever the answer is doing.
    tokio::select! {
        sent = tokio::io::copy(&mut client_read, &mut server_write) => sent.map(drop),
        answered = answer(&mut server_read, &mut client_write, mode, &shared) => answered,
    }
}

/// Passes Herald's answer to the client: at once, or, for a stream while buffering, once it has
/// ended or grown past `BUFFER_LIMIT_BYTES`.
async fn answer(
    server: &mut (impl AsyncRead + Unpin),
    client: &mut (impl AsyncWrite + Unpin),
    mode: ProxyMode,
    shared: &Shared,
) -> std::io::Result<()> {
    let Some((head, rest)) = read_head(server, Head::Response).await? else {
        return Ok(());
    };
    let stream = head
        .header("content-type")
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
    if stream && mode.buffer_streams {
        shared
            .counts
            .streams_buffered
            .fetch_add(1, Ordering::Relaxed);
        let mut held = rest;
        let mut chunk = [0; 16 * 1024];
        while held.len() < BUFFER_LIMIT_BYTES {
            match server.read(&mut chunk).await? {
                0 => break,
                n => held.extend_from_slice(&chunk[..n]),
            }
        }
        client.write_all(&head.closing()).await?;
        client.write_all(&held).await?;
    } else {
        client.write_all(&head.closing()).await?;
        client.write_all(&rest).await?;
    }
    tokio::io::copy(server, client).await?;
    client.shutdown().await
}

/// Which head [`read_head`] reads.
#[derive(Clone, Copy)]
enum Head {
    Request,
    Response,
}

/// A parsed head: its first line and headers, and the bytes as received.
struct Parsed {
    first_line: String,
    headers: Vec<(String, Vec<u8>)>,
    raw: Vec<u8>,
}

impl Parsed {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// The head again, with `Connection: close` in place of the hop-by-hop connection headers.
    fn closing(&self) -> Vec<u8> {
        let mut out = self.first_line.clone().into_bytes();
        out.extend_from_slice(b"\r\n");
        for (name, value) in &self.headers {
            let hop = ["connection", "keep-alive", "proxy-connection"]
                .iter()
                .any(|h| name.eq_ignore_ascii_case(h));
            if !hop {
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(value);
                out.extend_from_slice(b"\r\n");
            }
        }
        out.extend_from_slice(b"Connection: close\r\n\r\n");
        out
    }
}

/// Reads a request or response head; answers it and the bytes read past it, or `None` when the
/// peer closed before sending one.
async fn read_head(
    from: &mut (impl AsyncRead + Unpin),
    kind: Head,
) -> std::io::Result<Option<(Parsed, Vec<u8>)>> {
    let mut buf = Vec::new();
    let mut chunk = [0; 4096];
    loop {
        let n = from.read(&mut chunk).await?;
        if n == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(std::io::ErrorKind::UnexpectedEof.into())
            };
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(parsed) = parse_head(&buf, kind)? {
            let rest = buf.split_off(parsed.raw.len());
            return Ok(Some((parsed, rest)));
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(std::io::Error::other("head too large"));
        }
    }
}

/// Parses a complete head at the start of `buf`; `None` while it is incomplete.
fn parse_head(buf: &[u8], kind: Head) -> std::io::Result<Option<Parsed>> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let invalid = |e: httparse::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    let (len, first_line, headers) = match kind {
        Head::Request => {
            let mut request = httparse::Request::new(&mut headers);
            let httparse::Status::Complete(len) = request.parse(buf).map_err(invalid)? else {
                return Ok(None);
            };
            let line = format!(
                "{} {} HTTP/1.{}",
                request.method.unwrap_or("GET"),
                request.path.unwrap_or("/"),
                request.version.unwrap_or(1)
            );
            (len, line, request.headers)
        }
        Head::Response => {
            let mut response = httparse::Response::new(&mut headers);
            let httparse::Status::Complete(len) = response.parse(buf).map_err(invalid)? else {
                return Ok(None);
            };
            let line = format!(
                "HTTP/1.{} {} {}",
                response.version.unwrap_or(1),
                response.code.unwrap_or(200),
                response.reason.unwrap_or("")
            );
            (len, line, response.headers)
        }
    };
    Ok(Some(Parsed {
        first_line,
        headers: headers
            .iter()
            .map(|h| (h.name.to_owned(), h.value.to_vec()))
            .collect(),
        raw: buf[..len].to_vec(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_head_is_sent_on_with_connection_close_only() {
        let raw = b"GET /poll?channel=public HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\
                    Keep-Alive: timeout=5\r\nAccept: */*\r\n\r\nrest";
        let parsed = parse_head(raw, Head::Request).unwrap().unwrap();
        assert_eq!(parsed.raw.len(), raw.len() - 4);
        assert_eq!(
            String::from_utf8(parsed.closing()).unwrap(),
            "GET /poll?channel=public HTTP/1.1\r\nHost: a\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn a_response_head_is_found_and_its_content_type_read() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\nretry: 2000\n";
        assert!(parse_head(&raw[..20], Head::Response).unwrap().is_none());
        let parsed = parse_head(raw, Head::Response).unwrap().unwrap();
        assert_eq!(parsed.header("content-type"), Some("text/event-stream"));
        assert_eq!(parsed.first_line, "HTTP/1.1 200 OK");
    }
}
