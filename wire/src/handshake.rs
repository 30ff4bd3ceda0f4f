//! The TLS handshake on a new connection, by rustls' unbuffered server
//! connection, whose buffers are ours: when it is over, the bytes it did
//! not consume (the start of the client's first request, read in the same
//! segment as its `Finished`) are known exactly and go on to the record
//! layer, with the traffic keys (`rustls::kernel`), and every handshake
//! buffer and rustls' connection are dropped.
//!
//! The caller bounds the handshake in time (`listener.header_timeout_secs`)
//! and in number (`listener.max_pending`), as it does a request head.

use std::sync::Arc;

use rustls::{
    ServerConfig, SupportedCipherSuite,
    server::UnbufferedServerConnection,
    unbuffered::{AppDataRecord, ConnectionState, EncodeError, UnbufferedStatus},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::{
    TlsStream, Wire,
    records::{RecordError, Records},
    tls::Tls,
};

/// The most a client's handshake may send before it is over: a client
/// hello with its extensions, and certificates if one is sent.
const MAX_HANDSHAKE_BYTES: usize = 64 * 1024;

/// The handshake's first read buffer; it doubles while a client's messages
/// do not fit, up to [`MAX_HANDSHAKE_BYTES`].
const FIRST_READ_BYTES: usize = 4096;

/// The first byte of every TLS handshake: a handshake record.
const HANDSHAKE_RECORD: u8 = 0x16;

/// Why a connection did not become a TLS one.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The client spoke plain HTTP (or something else) to the TLS port: its
    /// socket is handed back, so that it can be told so.
    #[error("the client did not start a TLS handshake")]
    NotTls(TcpStream),
    #[error("TLS handshake failed: {0}")]
    Tls(#[from] rustls::Error),
    #[error("TLS handshake failed: {0}")]
    Records(#[from] RecordError),
    #[error("the client's handshake is larger than {MAX_HANDSHAKE_BYTES} bytes")]
    TooLarge,
    #[error("the client closed the connection during the TLS handshake")]
    Closed,
    #[error("TLS handshake: {0}")]
    Io(#[from] std::io::Error),
}

impl HandshakeError {
    /// A short name for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            HandshakeError::NotTls(_) => "not_tls",
            HandshakeError::Tls(_) | HandshakeError::Records(_) | HandshakeError::TooLarge => {
                "failed"
            }
            HandshakeError::Closed | HandshakeError::Io(_) => "hung_up",
        }
    }
}

/// Runs the server's side of a handshake on `tcp` with `config` (which must
/// allow secret extraction: [`crate::server_config`]).
pub async fn accept(mut tcp: TcpStream, config: Arc<ServerConfig>) -> Result<Wire, HandshakeError> {
    let mut first = [0u8; 1];
    if tcp.peek(&mut first).await? == 0 {
        return Err(HandshakeError::Closed);
    }
    if first[0] != HANDSHAKE_RECORD {
        return Err(HandshakeError::NotTls(tcp));
    }
    let mut connection = UnbufferedServerConnection::new(config)?;
    // A client hello is a few hundred bytes to 2 kB; a larger one grows
    // the buffer. Kept small, a handshake's buffers stay in the allocator's
    // small classes, among the connections' own allocations.
    let mut incoming = vec![0u8; FIRST_READ_BYTES];
    let mut incoming_used = 0;
    // Our flight: the server hello and the certificate chain, usually under
    // 4 kB; rustls says when it needs more.
    let mut outgoing = vec![0u8; 4096];
    let mut outgoing_used = 0;
    let mut plaintext = Vec::new();
    loop {
        let UnbufferedStatus { mut discard, state } =
            connection.process_tls_records(&mut incoming[..incoming_used]);
        match state? {
            ConnectionState::ReadTraffic(mut traffic) => {
                while let Some(record) = traffic.next_record() {
                    let AppDataRecord {
                        discard: taken,
                        payload,
                    } = record?;
                    discard += taken;
                    plaintext.extend_from_slice(payload);
                }
            }
            ConnectionState::EncodeTlsData(mut encode) => loop {
                match encode.encode(&mut outgoing[outgoing_used..]) {
                    Ok(written) => {
                        outgoing_used += written;
                        break;
                    }
                    Err(EncodeError::InsufficientSize(size)) => {
                        outgoing.resize(outgoing_used + size.required_size, 0);
                    }
                    Err(error) => {
                        return Err(rustls::Error::General(error.to_string()).into());
                    }
                }
            },
            ConnectionState::TransmitTlsData(transmit) => {
                tcp.write_all(&outgoing[..outgoing_used]).await?;
                outgoing_used = 0;
                transmit.done();
            }
            ConnectionState::BlockedHandshake => {
                if incoming_used == incoming.len() {
                    if incoming.len() >= MAX_HANDSHAKE_BYTES {
                        return Err(HandshakeError::TooLarge);
                    }
                    incoming.resize(incoming.len() * 2, 0);
                }
                let read = tcp.read(&mut incoming[incoming_used..]).await?;
                if read == 0 {
                    return Err(HandshakeError::Closed);
                }
                incoming_used += read;
            }
            ConnectionState::WriteTraffic(_) => break,
            ConnectionState::PeerClosed | ConnectionState::Closed => {
                return Err(HandshakeError::Closed);
            }
            // Early data is never offered (`max_early_data_size` is 0).
            _ => return Err(rustls::Error::General("unexpected handshake state".into()).into()),
        }
        if discard > 0 {
            incoming.copy_within(discard..incoming_used, 0);
            incoming_used -= discard;
        }
    }
    let (secrets, kernel) = connection.dangerous_into_kernel_connection()?;
    let limit = match kernel.negotiated_cipher_suite() {
        SupportedCipherSuite::Tls12(suite) => suite.common.confidentiality_limit,
        SupportedCipherSuite::Tls13(suite) => suite.common.confidentiality_limit,
    };
    let records = Records::new(kernel.protocol_version(), limit, secrets)?;
    drop(outgoing);
    let tls = Tls::new(records, &incoming[..incoming_used], plaintext)?;
    Ok(Wire::Tls(TlsStream::new(tcp, tls)))
}
