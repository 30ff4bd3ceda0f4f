//! The bench's TLS client (`--tls`): the handshake on a connected socket,
//! trusting only the CA the bench generated ([`crate::cert`]) or the one it
//! was given, with one rustls configuration per process for all of its
//! connections.
//!
//! Each handshake is a full one (resumption off): the bench's thousands of
//! connections stand for as many browsers, none of which has a session to
//! resume with the server yet.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context;
use parking_lot::Mutex;
use rustls::{
    ClientConfig, RootCertStore,
    client::Resumption,
    pki_types::{CertificateDer, ServerName, pem::PemObject},
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::stream::Stream;

/// The process' connector and the CA file it trusts. A worker process runs
/// one spec, so this is built once and then only cloned (an `Arc`).
static CONNECTOR: Mutex<Option<(PathBuf, TlsConnector)>> = Mutex::new(None);

/// Does the TLS handshake on `tcp` with the server at `authority`
/// (`host:port`; the host is the name checked against its certificate),
/// trusting the CA in the PEM file `ca`.
pub async fn handshake(tcp: TcpStream, authority: &str, ca: &Path) -> anyhow::Result<Stream> {
    let host = authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let name = ServerName::try_from(host.to_string())
        .with_context(|| format!("{host} is not a name TLS can check"))?;
    let tls = connector(ca)?
        .connect(name, tcp)
        .await
        .with_context(|| format!("TLS handshake with {authority}"))?;
    Ok(Stream::Tls(Box::new(tls)))
}

/// The connector trusting `ca`, built on first use and kept.
fn connector(ca: &Path) -> anyhow::Result<TlsConnector> {
    let mut cached = CONNECTOR.lock();
    if let Some((path, connector)) = cached.as_ref()
        && path == ca
    {
        return Ok(connector.clone());
    }
    let connector = TlsConnector::from(Arc::new(config(ca)?));
    *cached = Some((ca.to_path_buf(), connector.clone()));
    Ok(connector)
}

/// A client configuration that trusts the certificates in `ca` alone, offers
/// HTTP/1.1 by ALPN (WebSocket and SSE both run on it), and never resumes.
pub fn config(ca: &Path) -> anyhow::Result<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("cannot read the CA file {}", ca.display()))?
    {
        roots.add(cert.with_context(|| format!("unreadable PEM in {}", ca.display()))?)?;
    }
    if roots.is_empty() {
        anyhow::bail!("no certificate in the CA file {}", ca.display());
    }
    // *ring*, the provider the workspace builds rustls with, as Herald's
    // listener does, offering key exchange groups in the order browsers do
    // (X25519 first; their post-quantum hybrid aside, which ring lacks). A
    // TLS 1.3 server takes the client's first group, and ring's own default
    // order in rustls 0.23.48 puts P-384 first, which ring computes without
    // assembly: 1.3 ms of server CPU per handshake instead of about 0.3 ms,
    // a cost no browser would make the server pay.
    #[allow(deprecated)]
    let mut provider = rustls::crypto::ring::default_provider();
    provider.kx_groups = vec![
        rustls::crypto::ring::kx_group::X25519,
        rustls::crypto::ring::kx_group::SECP256R1,
        rustls::crypto::ring::kx_group::SECP384R1,
    ];
    let mut config = ClientConfig::builder_with_provider(std::sync::Arc::new(provider))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = Resumption::disabled();
    Ok(config)
}
