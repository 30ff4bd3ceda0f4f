//! The TLS wire against rustls' own client (tokio-rustls), over loopback:
//! every version and cipher suite the server offers, records split and
//! joined every way, the close, and what is refused.

use std::{io::IoSlice, sync::Arc};

use rustls::{
    ClientConfig, RootCertStore, SupportedCipherSuite,
    crypto::ring::cipher_suite,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_rustls::TlsConnector;

use crate::{Certificates, HandshakeError, Socket, TlsStream, Wire, accept};

struct Pki {
    certificates: Certificates,
    roots: RootCertStore,
}

fn pki() -> Pki {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let der = CertificateDer::from(cert.der().to_vec());
    let mut roots = RootCertStore::empty();
    roots.add(der.clone()).unwrap();
    let private = PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    #[allow(deprecated)]
    let signing = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(private)
        .unwrap();
    let certified = Arc::new(rustls::sign::CertifiedKey::new(vec![der], signing));
    Pki {
        certificates: Certificates::new(certified).unwrap(),
        roots,
    }
}

/// A client offering only `suite`.
fn client(pki: &Pki, suite: SupportedCipherSuite) -> TlsConnector {
    #[allow(deprecated)]
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![suite];
    let config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[suite.version()])
        .unwrap()
        .with_root_certificates(pki.roots.clone())
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// A server wire and the client's end, after a handshake; `early` is
/// written by the client right behind its handshake.
async fn pair(
    pki: &Pki,
    suite: SupportedCipherSuite,
    early: &[u8],
) -> (TlsStream, tokio_rustls::client::TlsStream<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = pki.certificates.config();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        accept(tcp, config).await
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut client = client(pki, suite).connect(name, tcp).await.unwrap();
    if !early.is_empty() {
        client.write_all(early).await.unwrap();
        client.flush().await.unwrap();
    }
    let Wire::Tls(wire) = server.await.unwrap().unwrap() else {
        panic!("a plain wire after a handshake");
    };
    (wire, client)
}

const SUITES: [SupportedCipherSuite; 7] = [
    cipher_suite::TLS13_AES_128_GCM_SHA256,
    cipher_suite::TLS13_AES_256_GCM_SHA384,
    cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    cipher_suite::TLS13_AES_128_GCM_SHA256,
];

#[tokio::test]
async fn every_suite_carries_data_both_ways_and_a_close() {
    let pki = pki();
    for suite in SUITES {
        let (mut wire, mut client) = pair(&pki, suite, b"").await;
        assert!(wire.plain_fd().is_none(), "the hub never writes to TLS");
        client.write_all(b"hello server").await.unwrap();
        let mut got = [0u8; 12];
        wire.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello server", "{suite:?}");

        // Vectored, and larger than one record: the first write takes one
        // record's worth from both slices, the rest goes on from there.
        let writing = tokio::spawn(async move {
            let big = vec![7u8; 40_000];
            let first = std::future::poll_fn(|cx| {
                wire.poll_write_slices(cx, &[IoSlice::new(b"head:"), IoSlice::new(&big)])
            })
            .await
            .unwrap();
            assert_eq!(first, 1 << 14, "one whole record");
            wire.write_all(&big[first - 5..]).await.unwrap();
            wire.shutdown().await.unwrap();
            wire
        });
        let mut received = Vec::new();
        client.read_to_end(&mut received).await.unwrap();
        assert_eq!(received.len(), 40_005, "{suite:?}");
        assert!(received.starts_with(b"head:") && received[5..].iter().all(|&b| b == 7));
        let _wire = writing.await.unwrap();
    }
}

#[tokio::test]
async fn bytes_behind_the_handshake_are_kept_and_peeked_then_read() {
    let pki = pki();
    let request = b"GET /ws?channel=a HTTP/1.1\r\nHost: x\r\n\r\n";
    let (wire, _client) = pair(&pki, cipher_suite::TLS13_AES_128_GCM_SHA256, request).await;
    let mut wire = Wire::Tls(wire);
    let line = wire
        .peek(|bytes| {
            bytes
                .iter()
                .position(|&b| b == b'\n')
                .map(|end| bytes[..end].to_vec())
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(line, b"GET /ws?channel=a HTTP/1.1\r");
    let mut all = vec![0u8; request.len()];
    wire.read_exact(&mut all).await.unwrap();
    assert_eq!(&all, request, "peeking took nothing");
}

#[tokio::test]
async fn client_records_arriving_in_pieces_are_joined() {
    let pki = pki();
    let (mut wire, client) = pair(&pki, cipher_suite::TLS13_CHACHA20_POLY1305_SHA256, b"").await;
    // Seal a record with the client, then send its bytes one at a time.
    let (tcp, mut session) = client.into_inner();
    let mut sealed = Vec::new();
    std::io::Write::write_all(&mut session.writer(), &[b'x'; 3000]).unwrap();
    while session.wants_write() {
        session.write_tls(&mut sealed).unwrap();
    }
    let mut tcp = tcp;
    let sending = tokio::spawn(async move {
        for byte in sealed {
            tcp.write_all(&[byte]).await.unwrap();
            tokio::task::yield_now().await;
        }
        tcp
    });
    let mut got = vec![0u8; 3000];
    wire.read_exact(&mut got).await.unwrap();
    assert!(got.iter().all(|&b| b == b'x'));
    let _tcp = sending.await.unwrap();
}

#[tokio::test]
async fn plain_http_to_the_tls_port_is_handed_back() {
    let pki = pki();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let (tcp, _) = listener.accept().await.unwrap();
    match accept(tcp, pki.certificates.config()).await {
        Err(HandshakeError::NotTls(_)) => {}
        other => panic!("expected NotTls, got {other:?}"),
    }
}

#[tokio::test]
async fn a_tampered_record_ends_the_connection() {
    let pki = pki();
    let (mut wire, client) = pair(&pki, cipher_suite::TLS13_AES_256_GCM_SHA384, b"").await;
    let (mut tcp, mut session) = client.into_inner();
    let mut sealed = Vec::new();
    std::io::Write::write_all(&mut session.writer(), b"secret").unwrap();
    while session.wants_write() {
        session.write_tls(&mut sealed).unwrap();
    }
    let last = sealed.len() - 1;
    sealed[last] ^= 1;
    tcp.write_all(&sealed).await.unwrap();
    let mut got = [0u8; 6];
    let error = wire.read_exact(&mut got).await.unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
}

#[test]
fn an_idle_tls_connection_keeps_only_its_keys() {
    // The boxed state a TLS connection keeps while idle: keys, IVs and
    // sequence numbers, and three empty buffers of one pointer each.
    let size = std::mem::size_of::<crate::tls::Tls>();
    assert!(size <= 160, "the TLS state is {size} bytes");
    let tcp = std::mem::size_of::<TcpStream>();
    let stream = std::mem::size_of::<TlsStream>();
    assert!(
        stream <= tcp + 8,
        "a TLS stream is {stream} bytes, its socket {tcp}"
    );
}
