//! A subscriber's WebSocket connection: the opening handshake, and the
//! receive path, which parses every frame of a read in place.
//!
//! Invariants:
//! - Bytes that arrive with the handshake's answer, or behind a frame the
//!   set-up waited for, stay in the [`Inbox`]: nothing the server sent is
//!   skipped between the subscribe and the first measured message.
//! - Pongs (queued by [`Reader`]) are written without waiting
//!   (`try_write`), so that reading stays cancel-safe; what the socket did
//!   not take is written before the next read.

use anyhow::{Context, bail};
use memchr::memmem;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::handshake::{client::generate_key, derive_accept_key};

use crate::{
    frame::{self, Flow, Reader, opcode},
    http::Url,
    inbox::{Inbox, READ_SIZE},
    stream::Stream,
};

/// Largest answer to the handshake the client reads.
const MAX_HEAD: usize = 16 << 10;

pub struct WsConn {
    stream: Stream,
    reader: Reader,
}

impl WsConn {
    /// Opens the WebSocket of `url` on `stream` (RFC 6455 section 4.1).
    pub async fn handshake(mut stream: Stream, url: &Url) -> anyhow::Result<WsConn> {
        let key = generate_key();
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n",
            url.path, url.authority
        );
        stream.write_all(request.as_bytes()).await?;
        let mut inbox = Inbox::with_capacity(READ_SIZE);
        let head_len = loop {
            if let Some(at) = memmem::find(inbox.unparsed(), b"\r\n\r\n") {
                break at + 4;
            }
            let read = inbox.unparsed().len() < MAX_HEAD && inbox.read_more(&mut stream, 0).await?;
            if !read {
                bail!(
                    "no answer to the WebSocket handshake: {}",
                    String::from_utf8_lossy(inbox.unparsed())
                );
            }
        };
        check_answer(&inbox.unparsed()[..head_len], &key)?;
        inbox.consume(head_len);
        Ok(WsConn {
            stream,
            reader: Reader::new(inbox),
        })
    }

    /// Sends one text frame.
    pub async fn send_text(&mut self, text: &str) -> anyhow::Result<()> {
        let mut out = Vec::with_capacity(text.len() + 14);
        frame::write_masked(&mut out, opcode::TEXT, text.as_bytes());
        self.stream.write_all(&out).await?;
        Ok(())
    }

    /// Waits for a text message that contains `"type":"<kind>"`, skipping
    /// others; a `"type":"error"` message first is an error.
    pub async fn expect_type(&mut self, kind: &str) -> anyhow::Result<()> {
        self.expect_field("type", kind).await
    }

    /// Reads until a frame with `"event":"<event>"` (the Pusher protocol).
    pub async fn expect_event(&mut self, event: &str) -> anyhow::Result<()> {
        self.expect_field("event", event).await
    }

    async fn expect_field(&mut self, field: &str, kind: &str) -> anyhow::Result<()> {
        let wanted = format!(r#""{field}":"{kind}""#);
        loop {
            let mut found: Option<Result<(), String>> = None;
            let flow = self.parse(|text| {
                if memmem::find(text, wanted.as_bytes()).is_some() {
                    found = Some(Ok(()));
                } else if memmem::find(text, br#""type":"error""#).is_some()
                    || memmem::find(text, br#""event":"pusher:error""#).is_some()
                {
                    found = Some(Err(String::from_utf8_lossy(text).into_owned()));
                }
                found.is_none()
            })?;
            match found {
                Some(Ok(())) => return Ok(()),
                Some(Err(text)) => bail!("expected {kind}, got {text}"),
                None if flow == Flow::Closed => bail!("connection closed before {kind}"),
                None => {}
            }
            if !self.read_more().await? {
                bail!("connection closed before {kind}");
            }
        }
    }

    /// Hands every complete message received to `on_message`, in order,
    /// until it returns `false`; answers Pings on the way.
    pub fn parse(&mut self, on_message: impl FnMut(&[u8]) -> bool) -> anyhow::Result<Flow> {
        let flow = self.reader.parse(on_message)?;
        self.write_unsent()?;
        Ok(flow)
    }

    /// Reads once more from the socket; `false` once the server closed it.
    /// Cancel-safe.
    pub async fn read_more(&mut self) -> anyhow::Result<bool> {
        self.write_unsent()?;
        let need = self.reader.need()?;
        Ok(self.reader.inbox.read_more(&mut self.stream, need).await?)
    }

    /// Writes what the socket takes of the pending Pongs, without waiting.
    fn write_unsent(&mut self) -> anyhow::Result<()> {
        let unsent = &mut self.reader.unsent;
        while !unsent.is_empty() {
            match self.stream.try_write(unsent) {
                Ok(written) => {
                    unsent.drain(..written);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e).context("cannot answer a Ping"),
            }
        }
        // TLS records of earlier Pongs that the socket did not take then.
        self.stream.try_flush().context("cannot answer a Ping")?;
        Ok(())
    }
}

/// Checks the answer to the handshake: `101` with the `Sec-WebSocket-Accept`
/// that `key` calls for.
fn check_answer(head: &[u8], key: &str) -> anyhow::Result<()> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut answer = httparse::Response::new(&mut headers);
    let shown = || String::from_utf8_lossy(&head[..head.len().min(300)]).into_owned();
    answer
        .parse(head)
        .with_context(|| format!("unreadable answer to the WebSocket handshake: {}", shown()))?;
    if answer.code != Some(101) {
        bail!("the WebSocket handshake was answered {}", shown());
    }
    let accept = answer
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
        .map(|h| h.value);
    if accept != Some(derive_accept_key(key.as_bytes()).as_bytes()) {
        bail!(
            "the WebSocket handshake's Sec-WebSocket-Accept is wrong: {}",
            shown()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_the_handshake_answer() {
        // The example of RFC 6455 section 1.3.
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let ok = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                  Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        assert!(check_answer(ok.as_bytes(), key).is_ok());
        let cases = [
            (
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
                "answered HTTP/1.1 404",
            ),
            (
                "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: x\r\n\r\n",
                "Accept is wrong",
            ),
            (
                "HTTP/1.1 101 Switching Protocols\r\n\r\n",
                "Accept is wrong",
            ),
            ("garbage\r\n\r\n", "unreadable"),
        ];
        for (head, piece) in cases {
            let error = check_answer(head.as_bytes(), key).unwrap_err().to_string();
            assert!(error.contains(piece), "{head:?}: {error}");
        }
    }
}
