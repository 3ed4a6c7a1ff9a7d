//! TLS for tests: a certificate authority made for the test, a server certificate it signs for
//! `localhost` and 127.0.0.1 (the files nginx or redis-server are given), and a client that
//! trusts that authority and nothing else, as a client given a private CA would.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// The name the server certificate is for (and 127.0.0.1).
pub const TLS_HOST: &str = "localhost";

/// A test's certificate authority and the server certificate it signed, as PEM files.
pub struct TestCa {
    /// The authority's certificate (what a client trusts).
    pub ca: PathBuf,
    /// The server's certificate and its key.
    pub cert: PathBuf,
    pub key: PathBuf,
    ca_der: CertificateDer<'static>,
    _dir: tempfile::TempDir,
}

impl TestCa {
    pub fn new() -> TestCa {
        let dir = tempfile::tempdir().expect("a temp dir for certificates");
        let mut params = CertificateParams::new(Vec::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Names of their own: OpenSSL (redis-cli) takes a certificate named like its issuer for
        // a self-signed one.
        params.distinguished_name.push(DnType::CommonName, "MatchStream test CA");
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("a CA key"))
            .expect("the CA's certificate");
        let names = vec![TLS_HOST.to_owned(), "127.0.0.1".to_owned()];
        let key = KeyPair::generate().expect("a server key");
        let mut params = CertificateParams::new(names).expect("server parameters");
        params.distinguished_name.push(DnType::CommonName, TLS_HOST);
        let cert = params.signed_by(&key, &issuer).expect("the server's certificate");
        let at = |name: &str, pem: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).expect("a certificate file");
            path
        };
        TestCa {
            ca: at("ca.pem", issuer.pem()),
            cert: at("server.pem", cert.pem()),
            key: at("server.key", key.serialize_pem()),
            ca_der: issuer.der().clone(),
            _dir: dir,
        }
    }

    /// A TLS connection to `addr` (HTTP/1.1, no ALPN), its certificate checked for
    /// [`TLS_HOST`] against this authority only.
    pub async fn connect(&self, addr: SocketAddr) -> TlsStream<TcpStream> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der.clone()).expect("the CA as a root");
        let config = ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let name = ServerName::try_from(TLS_HOST).expect("a server name");
        TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .unwrap_or_else(|e| panic!("a TLS handshake with {addr}: {e}"))
    }
}
