//! TLS for the tests: a throwaway certificate authority (rcgen) that issues
//! Herald's `tls.cert`/`tls.key` files, and clients that trust only it:
//! rustls through tokio-rustls, with tungstenite's WebSocket client on top
//! and plain HTTP/1.1 requests written by hand.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::{ClientConfig, RootCertStore, pki_types::ServerName};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::{TlsConnector, client::TlsStream};
use tokio_tungstenite::WebSocketStream;

/// How long a TLS test client waits for anything.
pub const TLS_TIMEOUT: Duration = Duration::from_secs(10);

/// A certificate authority of the test's own.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    der: Vec<u8>,
}

/// A certificate and key issued to `localhost` and `127.0.0.1`, as PEM
/// files in a folder of the test's own (removed on drop).
#[derive(Debug)]
pub struct ServerFiles {
    dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Drop for ServerFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl ServerFiles {
    /// The folder's paths as text, for `HERALD_TLS_CERT` and `HERALD_TLS_KEY`.
    pub fn cert_str(&self) -> String {
        self.cert.display().to_string()
    }

    pub fn key_str(&self) -> String {
        self.key.display().to_string()
    }
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("a CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("Herald test CA {name}"));
        let cert = params.self_signed(&key).expect("a CA certificate");
        TestCa {
            der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
        }
    }

    /// Issues a server certificate and writes it with its key.
    pub fn issue(&self) -> ServerFiles {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "herald-tls-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("a folder for the certificate");
        let files = ServerFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            dir,
        };
        self.write(&files.cert, &files.key);
        files
    }

    /// Writes a new server certificate and key over `cert` and `key`
    /// (each written aside and renamed, so that Herald never reads half).
    pub fn write(&self, cert: &Path, key: &Path) {
        let server_key = KeyPair::generate().expect("a server key");
        let params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("server params");
        let issued = params
            .signed_by(&server_key, &self.issuer)
            .expect("a server certificate");
        write_aside(cert, issued.pem().as_bytes());
        write_aside(key, server_key.serialize_pem().as_bytes());
    }

    /// A client that trusts this authority alone.
    pub fn connector(&self) -> TlsConnector {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.der.clone().into())
            .expect("the CA certificate");
        // ring's default order in this rustls puts P-384 first, which a
        // server computes at a millisecond a handshake; browsers, and these
        // clients, offer X25519 first.
        #[allow(deprecated)]
        let mut provider = rustls::crypto::ring::default_provider();
        provider.kx_groups = vec![
            rustls::crypto::ring::kx_group::X25519,
            rustls::crypto::ring::kx_group::SECP256R1,
        ];
        let config = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    }
}

fn write_aside(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, bytes).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    std::fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename {}: {e}", path.display()));
}

/// A TLS connection to `addr`, checked as `localhost`.
pub async fn tls_connect(
    addr: SocketAddr,
    connector: &TlsConnector,
) -> std::io::Result<TlsStream<TcpStream>> {
    tls_over(TcpStream::connect(addr).await?, connector).await
}

/// A TLS connection over `tcp` (a socket the test set up itself).
pub async fn tls_over(
    tcp: TcpStream,
    connector: &TlsConnector,
) -> std::io::Result<TlsStream<TcpStream>> {
    let name = ServerName::try_from("localhost").expect("a server name");
    tokio::time::timeout(TLS_TIMEOUT, connector.connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::other("TLS handshake timed out"))?
}

/// An HTTPS request (`Connection: close`): the status and the body.
pub async fn https(
    addr: SocketAddr,
    connector: &TlsConnector,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, String) {
    let mut stream = tls_connect(addr, connector)
        .await
        .unwrap_or_else(|e| panic!("TLS connection to {addr}: {e}"));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(TLS_TIMEOUT, stream.read_to_end(&mut answer))
        .await
        .expect("an answer in time")
        .expect("read");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (status, body.to_string())
}

/// A `wss://` connection to `path` by tungstenite's client.
pub async fn wss(
    addr: SocketAddr,
    connector: &TlsConnector,
    path: &str,
) -> WebSocketStream<TlsStream<TcpStream>> {
    let stream = tls_connect(addr, connector)
        .await
        .unwrap_or_else(|e| panic!("TLS connection to {addr}: {e}"));
    wss_over(stream, path).await
}

/// A `wss://` upgrade on a TLS connection the test opened itself.
pub async fn wss_over(
    stream: TlsStream<TcpStream>,
    path: &str,
) -> WebSocketStream<TlsStream<TcpStream>> {
    let url = format!("wss://localhost{path}");
    let (socket, _) =
        tokio::time::timeout(TLS_TIMEOUT, tokio_tungstenite::client_async(url, stream))
            .await
            .expect("the upgrade in time")
            .expect("the WebSocket upgrade");
    socket
}
