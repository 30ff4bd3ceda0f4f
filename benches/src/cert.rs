//! Throwaway certificates for `--tls` runs: a CA made for the run, and a
//! server certificate it signs for `localhost` and 127.0.0.1, written as PEM
//! files under the work folder for the servers the bench starts (Herald's
//! `HERALD_TLS_CERT`/`HERALD_TLS_KEY`, nginx's `ssl_certificate` and
//! `ssl_certificate_key`), while the bench's clients trust the CA alone.
//!
//! ECDSA P-256 keys (rcgen's default), as a certificate authority issues
//! today: the handshake's signature is the server's to make, so the key type
//! is part of what a handshake costs it.

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering::Relaxed},
};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

/// Runs in this process so far: each gets a folder of its own, since a
/// process' TLS clients keep the CA they first read from a path
/// ([`crate::tls`]), and a report runs one target after another.
static RUNS: AtomicUsize = AtomicUsize::new(0);

/// The PEM files of one run's certificates; dropping it removes them.
#[derive(Debug)]
pub struct Certs {
    /// The folder they are in, this run's alone.
    pub dir: PathBuf,
    /// The CA certificate the clients trust.
    pub ca: PathBuf,
    /// The server's certificate, signed by the CA.
    pub cert: PathBuf,
    /// The server's private key (PKCS #8).
    pub key: PathBuf,
}

impl Certs {
    /// Makes a fresh CA and server certificate and writes them into a new
    /// folder under `base`.
    pub fn generate(base: &Path) -> anyhow::Result<Certs> {
        let run = RUNS.fetch_add(1, Relaxed);
        let dir = base.join(format!("tls-{}-{run}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "herald-bench throwaway CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let cert = params.signed_by(&key, &ca)?;

        let certs = Certs {
            dir: dir.clone(),
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        };
        std::fs::write(&certs.ca, ca.pem())?;
        std::fs::write(&certs.cert, cert.pem())?;
        std::fs::write(&certs.key, key.serialize_pem())?;
        Ok(certs)
    }
}

impl Drop for Certs {
    /// The run is over, or never started: nobody reads the files again.
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::{TcpListener, TcpStream},
    };

    use super::*;

    /// A server holding `certs` on a loopback port: it answers one
    /// connection's handshake, then writes `hello`.
    async fn serve(certs: &Certs) -> String {
        let chain = vec![CertificateDer::from_pem_file(&certs.cert).unwrap()];
        let key = PrivateKeyDer::from_pem_file(&certs.key).unwrap();
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let _ = tls.write_all(b"hello").await;
                    let _ = tls.shutdown().await;
                }
            }
        });
        addr
    }

    /// The bench's client gets through to a server holding the certificate,
    /// by address and by name, and refuses one whose CA it was not given.
    #[tokio::test]
    async fn clients_trust_the_run_ca_alone() {
        let base = std::env::temp_dir().join(format!("herald-bench-cert-{}", std::process::id()));
        let certs = Certs::generate(&base).unwrap();
        let other = Certs::generate(&base).unwrap();
        assert_ne!(certs.dir, other.dir);
        let addr = serve(&certs).await;
        let port = addr.rsplit_once(':').unwrap().1;
        for authority in [addr.clone(), format!("localhost:{port}")] {
            let tcp = TcpStream::connect(&addr).await.unwrap();
            let mut stream = crate::tls::handshake(tcp, &authority, &certs.ca)
                .await
                .unwrap();
            let mut text = String::new();
            stream.read_to_string(&mut text).await.unwrap();
            assert_eq!(text, "hello", "{authority}");
        }
        let tcp = TcpStream::connect(&addr).await.unwrap();
        let refused = crate::tls::handshake(tcp, &addr, &other.ca).await;
        assert!(
            refused.is_err(),
            "a certificate from another CA was trusted"
        );
        let dir = certs.dir.clone();
        drop(certs);
        assert!(!dir.exists());
        drop(other);
        std::fs::remove_dir_all(base).unwrap();
    }
}
