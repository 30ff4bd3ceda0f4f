//! A minimal HTTP/1.1 client for publishing and for `/metrics`: one
//! keep-alive connection, one request at a time, bodies framed by
//! `Content-Length` or chunked encoding. Enough for Herald and nginx, and
//! nothing a benchmark has to wait on beyond the server itself.

use anyhow::{Context, bail};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Largest response head or body the client accepts.
const MAX_RESPONSE: usize = 16 << 20;

/// A keep-alive connection to one server.
pub struct HttpConn {
    /// `host:port`, also sent as `Host`.
    authority: String,
    /// The open connection, if any; reopened when the server closed it.
    stream: Option<TcpStream>,
    /// Bytes read past the end of the last response.
    buffer: Vec<u8>,
}

/// An answer: its status, its body, and the one header a publisher acts on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Response {
    pub status: u16,
    /// `Retry-After`, as sent, if any: with a `503`, the server's pushback.
    pub retry_after: Option<String>,
    pub body: Vec<u8>,
}

/// A URL split into what the client needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Url {
    pub authority: String,
    pub path: String,
    /// `wss://` or `https://`: the subscriber clients speak TLS (`--tls`).
    pub tls: bool,
}

impl Url {
    /// Parses `http://host:port/path` or `ws://…`; the scheme says only
    /// whether the connection is TLS (`https://`, `wss://`).
    pub fn parse(url: &str) -> anyhow::Result<Url> {
        let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
        let tls = matches!(scheme, "https" | "wss");
        let rest = rest.to_string();
        let (authority, path) = match rest.find('/') {
            Some(at) => (rest[..at].to_string(), rest[at..].to_string()),
            None => (rest, "/".to_string()),
        };
        if authority.is_empty() {
            bail!("no host in {url}");
        }
        Ok(Url {
            authority,
            path,
            tls,
        })
    }
}

impl HttpConn {
    pub fn new(authority: &str) -> Self {
        Self {
            authority: authority.to_string(),
            stream: None,
            buffer: Vec::new(),
        }
    }

    /// Sends one request and returns the status and body.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        self.request_with(method, path, &[], body).await
    }

    /// [`HttpConn::request`] with extra header lines (`("Idempotency-Key", "k")`).
    pub async fn request_with(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        let response = self.send(method, path, headers, body).await?;
        Ok((response.status, response.body))
    }

    /// [`HttpConn::request_with`], answering with `Retry-After` too.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> anyhow::Result<Response> {
        // A keep-alive connection the server closed in the meantime fails on
        // first use; one retry on a fresh connection covers that.
        let reused = self.stream.is_some();
        match self.try_request(method, path, headers, body).await {
            Err(_) if reused => {
                self.stream = None;
                self.try_request(method, path, headers, body).await
            }
            result => result,
        }
    }

    async fn try_request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> anyhow::Result<Response> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(&self.authority)
                .await
                .with_context(|| format!("cannot connect to {}", self.authority))?;
            stream.set_nodelay(true)?;
            self.stream = Some(stream);
            self.buffer.clear();
        }
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n",
            self.authority,
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        let result = self.exchange(&request).await;
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    async fn exchange(&mut self, request: &[u8]) -> anyhow::Result<Response> {
        let Some(stream) = self.stream.as_mut() else {
            bail!("not connected");
        };
        stream.write_all(request).await?;
        // Read until the head is complete.
        let (status, head_len, length, chunked, close, retry_after) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(len) = response.parse(&self.buffer)? {
                let status = response.code.unwrap_or(0);
                let raw = |name: &str| {
                    response
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
                };
                let header = |name: &str| raw(name).map(|v| v.to_ascii_lowercase());
                let length = header("content-length").and_then(|v| v.trim().parse().ok());
                let chunked = header("transfer-encoding").is_some_and(|v| v.contains("chunked"));
                let close = header("connection").is_some_and(|v| v.contains("close"));
                break (status, len, length, chunked, close, raw("retry-after"));
            }
            read_more(stream, &mut self.buffer).await?;
        };
        self.buffer.drain(..head_len);
        let body = if chunked {
            read_chunked(stream, &mut self.buffer).await?
        } else if let Some(length) = length {
            if length > MAX_RESPONSE {
                bail!("response body of {length} bytes");
            }
            while self.buffer.len() < length {
                read_more(stream, &mut self.buffer).await?;
            }
            self.buffer.drain(..length).collect()
        } else if status == 204 || status == 304 {
            Vec::new()
        } else {
            // No framing: the body runs to the end of the connection.
            while read_more(stream, &mut self.buffer).await.is_ok() {}
            self.stream = None;
            std::mem::take(&mut self.buffer)
        };
        if close {
            self.stream = None;
        }
        Ok(Response {
            status,
            retry_after,
            body,
        })
    }
}

async fn read_more(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> anyhow::Result<()> {
    if buffer.len() > MAX_RESPONSE {
        bail!("response over {MAX_RESPONSE} bytes");
    }
    let mut chunk = [0u8; 8192];
    let read = stream.read(&mut chunk).await?;
    if read == 0 {
        bail!("connection closed mid-response");
    }
    buffer.extend_from_slice(&chunk[..read]);
    Ok(())
}

async fn read_chunked(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(at) = buffer.windows(2).position(|w| w == b"\r\n") {
                break at;
            }
            read_more(stream, buffer).await?;
        };
        let size_text = String::from_utf8_lossy(&buffer[..line_end]).to_string();
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).context("bad chunk size")?;
        buffer.drain(..line_end + 2);
        while buffer.len() < size + 2 {
            read_more(stream, buffer).await?;
        }
        body.extend_from_slice(&buffer[..size]);
        buffer.drain(..size + 2);
        if size == 0 {
            return Ok(body);
        }
        if body.len() > MAX_RESPONSE {
            bail!("chunked body over {MAX_RESPONSE} bytes");
        }
    }
}

/// The sum of every sample of `family` (all label sets) in a Prometheus text page.
pub fn metric_sum(page: &str, family: &str) -> Option<f64> {
    metric_sum_with(page, family, "")
}

/// The sum of the samples of `family` whose label set contains `label`
/// (`result="published"`; empty: every sample).
pub fn metric_sum_with(page: &str, family: &str, label: &str) -> Option<f64> {
    let mut found = false;
    let mut sum = 0.0;
    for line in page.lines() {
        let Some(rest) = line.strip_prefix(family) else {
            continue;
        };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        if !label.is_empty() {
            let labels = rest
                .strip_prefix('{')
                .and_then(|r| r.split_once('}'))
                .map_or("", |(labels, _)| labels);
            if !labels.split(',').any(|l| l == label) {
                continue;
            }
        }
        if let Some(value) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
            sum += value;
            found = true;
        }
    }
    found.then_some(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_urls() {
        assert_eq!(
            Url::parse("http://127.0.0.1:80/pub/a?x=1").unwrap(),
            Url {
                authority: "127.0.0.1:80".into(),
                path: "/pub/a?x=1".into(),
                tls: false,
            }
        );
        assert_eq!(Url::parse("ws://h:1").unwrap().path, "/");
        assert!(Url::parse("wss://h:1/ws").unwrap().tls);
        assert!(Url::parse("https://h:1/sse").unwrap().tls);
        assert!(!Url::parse("h:1/sse").unwrap().tls);
        assert!(Url::parse("http:///x").is_err());
    }

    #[test]
    fn sums_metric_families() {
        let page = "# HELP herald_socket_writes_total Writes.\n\
                    herald_socket_writes_total{transport=\"ws\"} 10\n\
                    herald_socket_writes_total{transport=\"sse\"} 5\n\
                    herald_socket_writes_total_other 99\n\
                    herald_connections 3\n";
        assert_eq!(metric_sum(page, "herald_socket_writes_total"), Some(15.0));
        assert_eq!(metric_sum(page, "herald_connections"), Some(3.0));
        assert_eq!(metric_sum(page, "missing"), None);
        let page = "herald_timeline_shard_messages_total{result=\"published\"} 1024\n\
                    herald_timeline_shard_messages_total{result=\"duplicate\",site=\"a\"} 3\n\
                    herald_timeline_shard_messages_total{site=\"b\",result=\"duplicate\"} 4\n";
        let family = "herald_timeline_shard_messages_total";
        assert_eq!(
            metric_sum_with(page, family, r#"result="published""#),
            Some(1024.0)
        );
        assert_eq!(
            metric_sum_with(page, family, r#"result="duplicate""#),
            Some(7.0)
        );
        assert_eq!(metric_sum_with(page, family, r#"result="x""#), None);
        assert_eq!(metric_sum_with(page, family, ""), Some(1031.0));
    }
}
