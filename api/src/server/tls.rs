//! The handshake of a new connection on a TLS listener (`tls.cert`,
//! `tls.key`; the record layer and its memory are `wire`'s), counted in
//! `herald_tls_handshakes_total{result}`.
//!
//! Invariants:
//! - The handshake is due by the same deadline as the request head
//!   (`listener.header_timeout_secs`), and the connection counts as
//!   pending meanwhile (`listener.max_pending`).
//! - A client that speaks plain HTTP to the TLS port is told so, with a
//!   400 whose body names the scheme to use, and the connection closes.

use tokio::{io::AsyncWriteExt, net::TcpStream};
use wire::{Certificates, HandshakeError, Wire};

use crate::App;

/// The answer to plain HTTP on the TLS port.
const NOT_TLS: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Length: 57\r\n\
Connection: close\r\n\r\n\
This port speaks TLS: use https:// or wss:// to reach it\n";

/// The connection's socket after its handshake, or `None` when there is
/// none to serve (the caller counts it as a pending connection dropped).
pub(crate) async fn handshake(
    app: &App,
    certificates: &Certificates,
    stream: TcpStream,
    deadline: tokio::time::Instant,
) -> Option<Wire> {
    let peer = stream.peer_addr().ok();
    let result =
        tokio::time::timeout_at(deadline, wire::accept(stream, certificates.config())).await;
    let label = match &result {
        Ok(Ok(_)) => "ok",
        Ok(Err(error)) => error.label(),
        Err(_) => "timeout",
    };
    app.metrics()
        .tls_handshakes
        .with_label_values(&[label])
        .inc();
    match result {
        Ok(Ok(wire)) => Some(wire),
        Ok(Err(HandshakeError::NotTls(mut stream))) => {
            let answer = async {
                stream.write_all(NOT_TLS).await?;
                stream.shutdown().await
            };
            let _ = tokio::time::timeout(app.sessions().config().close_timeout, answer).await;
            None
        }
        Ok(Err(error)) => {
            tracing::debug!(client.addr = ?peer, %error, "TLS handshake failed");
            None
        }
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_plain_http_answer_is_well_formed() {
        let text = std::str::from_utf8(super::NOT_TLS).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }
}
