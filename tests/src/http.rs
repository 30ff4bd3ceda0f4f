//! A small HTTP/1.1 client for Herald's API (publish, history, metrics, health), able to connect from a chosen local address.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// How long one request may take.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(20);

/// A request to build and send; one TCP connection per request (`Connection: close`).
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    addr: SocketAddr,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The local address to bind before connecting (for "publish from an untrusted address").
    source: Option<IpAddr>,
}

/// A whole response.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The de-chunked body.
    pub body: Vec<u8>,
}

impl Request {
    /// A request with any method to `path` on `addr`.
    pub fn new(method: &str, addr: SocketAddr, path: &str) -> Request {
        Request {
            method: method.to_owned(),
            addr,
            path: path.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
            source: None,
        }
    }

    /// `GET path`.
    pub fn get(addr: SocketAddr, path: &str) -> Request {
        Request::new("GET", addr, path)
    }

    /// `POST path`.
    pub fn post(addr: SocketAddr, path: &str) -> Request {
        Request::new("POST", addr, path)
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Adds `Authorization: Bearer <secret>`.
    pub fn bearer(self, secret: &str) -> Request {
        self.header("Authorization", &format!("Bearer {secret}"))
    }

    /// Sets a JSON body given as text, sent byte for byte.
    pub fn json_body(mut self, body: &str) -> Request {
        self.body = body.as_bytes().to_vec();
        self.header("Content-Type", "application/json")
    }

    /// The method.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The path and query.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The body as it will be sent.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The value of the last header of this name (case-insensitive) added so far.
    pub fn header_value(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .rev()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Sets the body, sent byte for byte, without a `Content-Type` of its own.
    pub fn raw_body(mut self, body: &[u8]) -> Request {
        self.body = body.to_vec();
        self
    }

    /// Connects from this local address instead of the default one.
    pub fn source(mut self, ip: IpAddr) -> Request {
        self.source = Some(ip);
        self
    }

    /// Sends the request and reads the whole response.
    pub async fn send(self) -> Response {
        let what = format!("{} {}", self.method, self.path);
        tokio::time::timeout(HTTP_TIMEOUT, self.send_inner())
            .await
            .unwrap_or_else(|_| panic!("{what}: no answer within {HTTP_TIMEOUT:?}"))
    }

    async fn send_inner(self) -> Response {
        let socket = if self.addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .expect("socket");
        if let Some(ip) = self.source {
            socket
                .bind(SocketAddr::new(ip, 0))
                .unwrap_or_else(|e| panic!("bind {ip}: {e}"));
        }
        let mut stream = socket
            .connect(self.addr)
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.addr));
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.method, self.path, self.addr
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if !self.body.is_empty() || self.method == "POST" {
            head.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        head.push_str("\r\n");
        let mut request = head.into_bytes();
        request.extend_from_slice(&self.body);
        stream.write_all(&request).await.expect("send request");

        // With `Connection: close` the server ends the connection after the answer.
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .await
            .unwrap_or_else(|e| panic!("{} {}: reading the answer: {e}", self.method, self.path));
        parse_response(&raw)
    }
}

impl Response {
    /// A header by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}); status {}: {}",
                self.status,
                self.text()
            )
        })
    }

    /// `error.code` of an error body; panics if the body is not a documented error body.
    pub fn error_code(&self) -> String {
        let json = self.json();
        assert!(
            json["error"]["message"].is_string(),
            "error body has a message: {json}"
        );
        json["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error.code in {json}"))
            .to_owned()
    }

    /// Asserts the status and the error code of an error answer.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "status; body: {}", self.text());
        assert_eq!(self.error_code(), code, "error code; body: {}", self.text());
    }
}

/// A request sent only in part, as a slow or stalled publisher sends it: its whole head, then the
/// body bit by bit, with the socket held open meanwhile.
#[derive(Debug)]
pub struct PartRequest {
    stream: TcpStream,
    /// What the server answered so far.
    answer: Vec<u8>,
    /// Whether the server closed the connection (or reset it).
    closed: bool,
}

impl PartRequest {
    /// Connects to `addr` and sends `head` (the request line and headers, each ending in
    /// `\r\n`; the blank line is added) and the first bytes of the body, in one write.
    pub async fn start(addr: SocketAddr, head: &str, body_start: &[u8]) -> PartRequest {
        let mut stream = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        let mut bytes = format!("{head}\r\n").into_bytes();
        bytes.extend_from_slice(body_start);
        stream
            .write_all(&bytes)
            .await
            .expect("send the request head");
        PartRequest {
            stream,
            answer: Vec::new(),
            closed: false,
        }
    }

    /// Sends more of the body.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send body bytes");
    }

    /// Waits up to `within` for the server to answer and close the connection, sending one byte
    /// of `trickle` every `every` meanwhile (none when `trickle` is empty); `None` if no answer
    /// came in time.
    pub async fn answer(
        &mut self,
        within: Duration,
        trickle: &[u8],
        every: Duration,
    ) -> Option<Response> {
        let deadline = tokio::time::Instant::now() + within;
        let mut left = trickle;
        let mut buf = [0u8; 4096];
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        while !self.closed {
            tokio::select! {
                read = self.stream.read(&mut buf) => match read {
                    Ok(0) | Err(_) => self.closed = true,
                    Ok(n) => {
                        self.answer.extend_from_slice(&buf[..n]);
                        // Nothing more is sent once the answer is coming, so that the server's
                        // close is not turned into a reset that could lose it.
                        left = &[];
                    }
                },
                _ = tick.tick(), if !left.is_empty() => {
                    // The server may close while a byte is on its way: that is an answer, read next.
                    let _ = self.stream.write_all(&left[..1]).await;
                    left = &left[1..];
                }
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        (!self.answer.is_empty()).then(|| Response::parse(&self.answer))
    }
}

impl Response {
    /// Parses a whole response as read from the socket.
    pub fn parse(raw: &[u8]) -> Response {
        parse_response(raw)
    }
}

fn parse_response(raw: &[u8]) -> Response {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(raw) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            panic!(
                "incomplete response head: {:?}",
                String::from_utf8_lossy(raw)
            )
        }
        Err(e) => panic!(
            "bad response head ({e}): {:?}",
            String::from_utf8_lossy(raw)
        ),
    };
    let status = response.code.expect("status code");
    let headers = header_list(response.headers);
    let rest = &raw[head_len..];
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map(|(_, v)| {
            v.trim()
                .parse::<usize>()
                .expect("Content-Length is a number")
        });
    let body = if chunked {
        dechunk(rest)
    } else if let Some(len) = length {
        assert!(
            rest.len() >= len,
            "body shorter ({}) than Content-Length {len}",
            rest.len()
        );
        rest[..len].to_vec()
    } else {
        rest.to_vec()
    };
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let line = String::from_utf8_lossy(&rest[..end]).into_owned();
        let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or_else(|e| panic!("bad chunk size {line:?}: {e}"));
        rest = &rest[end + 2..];
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// A parsed response's headers as (lower-case name, value) pairs.
pub(crate) fn header_list(headers: &[httparse::Header<'_>]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect()
}
