//! The certificate and key a TLS listener presents (`tls.cert`,
//! `tls.key`: PEM files), and the rustls configuration handshakes use.
//!
//! A reload swaps the certificate in place ([`Certificates::swap`]): the
//! next handshake presents the new one, and connections already open keep
//! what they negotiated (after its handshake a connection holds only its
//! traffic keys, never the certificate or the configuration). The session
//! ticket keys stay across a swap, so clients resume as before.

use std::{path::Path, sync::Arc};

use parking_lot::RwLock;
use rustls::{
    ServerConfig,
    crypto::ring,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

/// Why a certificate and key could not be used, naming the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("cannot read the certificate chain from {path}: {message}")]
    Certificate { path: String, message: String },
    #[error("cannot read the private key from {path}: {message}")]
    Key { path: String, message: String },
    #[error("the private key in {key} does not belong to the certificate in {cert}")]
    Mismatch { cert: String, key: String },
    #[error("TLS set-up: {0}")]
    Tls(#[from] rustls::Error),
}

/// The crypto provider: ring's, which builds without a C library of its
/// own. rustls 0.23.48 deprecated it for lacking post-quantum key exchange
/// (X25519MLKEM768, aws-lc-rs only); that is the one thing lost, and
/// docs/deploy.md says so.
#[allow(deprecated)]
fn provider() -> rustls::crypto::CryptoProvider {
    ring::default_provider()
}

/// Reads a PEM certificate chain (the server's certificate first, then its
/// intermediates) and its PEM private key (PKCS#8, PKCS#1 or SEC1), and
/// checks that they belong together.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, CertificateError> {
    let cert_name = cert.display().to_string();
    let key_name = key.display().to_string();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|error| CertificateError::Certificate {
            path: cert_name.clone(),
            message: error.to_string(),
        })?;
    if chain.is_empty() {
        return Err(CertificateError::Certificate {
            path: cert_name,
            message: "no CERTIFICATE block in the file".into(),
        });
    }
    let private_key = PrivateKeyDer::from_pem_file(key).map_err(|error| CertificateError::Key {
        path: key_name.clone(),
        message: error.to_string(),
    })?;
    let signing_key = provider()
        .key_provider
        .load_private_key(private_key)
        .map_err(|error| CertificateError::Key {
            path: key_name.clone(),
            message: error.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => Ok(Arc::new(certified)),
        // Keys whose public half rustls cannot tell are not refused.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(Arc::new(certified))
        }
        Err(_) => Err(CertificateError::Mismatch {
            cert: cert_name,
            key: key_name,
        }),
    }
}

/// The certificate every new handshake presents, swapped on reload.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().clone())
    }
}

/// A TLS listener's configuration: what [`crate::accept`] takes.
#[derive(Debug, Clone)]
pub struct Certificates {
    config: Arc<ServerConfig>,
    current: Arc<Current>,
}

impl Certificates {
    pub fn new(certified: Arc<CertifiedKey>) -> Result<Self, CertificateError> {
        let current = Arc::new(Current(RwLock::new(certified)));
        let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        // hyper serves HTTP/1.1, and WebSocket upgrades need it.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        // The record layer after the handshake is Herald's (`records.rs`).
        config.enable_secret_extraction = true;
        // Stateless tickets, so that a reconnecting client resumes without
        // a certificate signature (the dearest part of a handshake) and
        // the server keeps no session cache; one per handshake, as a push
        // client holds one connection at a time.
        config.ticketer = ring::Ticketer::new()?;
        config.send_tls13_tickets = 1;
        Ok(Self {
            config: Arc::new(config),
            current,
        })
    }

    /// The configuration for the next handshake.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.config.clone()
    }

    /// Presents `certified` from the next handshake on.
    pub fn swap(&self, certified: Arc<CertifiedKey>) {
        *self.current.0.write() = certified;
    }
}
