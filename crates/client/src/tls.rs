//! TLS for a client of a node that has a certificate (SPEC 11): which certificates it trusts (a
//! private CA's, given as a PEM file, or else the system's roots), as one rustls configuration
//! shared by the HTTP API's client (reqwest) and the raw sockets of viewers; and [`Stream`], a
//! connection that is plain TCP or TLS over it, which every viewer reads and writes alike.
//!
//! rustls with the ring provider, as the server (`transport/tls.rs` there says why).

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Why the certificates to trust cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: no certificate in it (expected PEM blocks \"BEGIN CERTIFICATE\")", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: {why}", path.display())]
    Bad { path: PathBuf, why: String },
    #[error("this system has no root certificates to trust (install ca-certificates, or name the server's CA with --ca-cert)")]
    NoSystemRoots,
    #[error("TLS cannot be set up: {0}")]
    Setup(String),
}

/// The certificates a client trusts, ready to make TLS connections. Cheap to clone.
#[derive(Clone, Debug)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
}

impl TlsClient {
    /// Trusts the certificates of `ca` (a PEM file: a private CA, or a self-signed server's
    /// own certificate) and nothing else; with `None`, the system's root certificates.
    pub fn new(ca: Option<&Path>) -> Result<TlsClient, TlsError> {
        let mut roots = RootCertStore::empty();
        match ca {
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|source| TlsError::Read { path: path.to_owned(), source })?;
                let bad = |why: String| TlsError::Bad { path: path.to_owned(), why };
                let certs = CertificateDer::pem_slice_iter(&pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| bad(format!("not valid PEM: {e}")))?;
                if certs.is_empty() {
                    return Err(TlsError::NoCertificate { path: path.to_owned() });
                }
                for cert in certs {
                    roots.add(cert).map_err(|e| bad(format!("not a usable certificate: {e}")))?;
                }
            }
            None => {
                // Files the system cannot read are skipped; only having none at all is an error.
                let found = rustls_native_certs::load_native_certs();
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    return Err(TlsError::NoSystemRoots);
                }
            }
        }
        let config = ClientConfig::builder_with_provider(Arc::new(provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsClient { config: Arc::new(config) })
    }

    /// The configuration, for an HTTP client (reqwest's `use_preconfigured_tls`).
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Makes the TLS handshake on `tcp`, checking the certificate against `host` (a name, or
    /// an IP address, possibly in brackets). An untrusted certificate is an `InvalidData`
    /// error that says so.
    pub async fn connect(&self, host: &str, tcp: TcpStream) -> io::Result<Stream> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_owned()).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{host:?} is not a host name"))
        })?;
        let tls = TlsConnector::from(self.config.clone()).connect(name, tcp).await;
        tls.map(|s| Stream::Tls(Box::new(s))).map_err(|e| explain(e, host))
    }

    /// Connects to `addr` (`host:port`) and makes the handshake with `host`.
    pub async fn open(&self, addr: &str) -> io::Result<Stream> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        self.connect(host_of(addr), tcp).await
    }
}

/// The host of `host:port` (an IPv6 address keeps its brackets).
pub fn host_of(addr: &str) -> &str {
    addr.rsplit_once(':').map_or(addr, |(host, _)| host)
}

/// A failed handshake's error, saying when it is the certificate that was not trusted.
fn explain(e: io::Error, host: &str) -> io::Error {
    let Some(why) = crate::watcher::untrusted(&e) else {
        return e;
    };
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "the certificate of {host} is not trusted ({why:?}): name the CA that signed it with \
             --ca-cert, or use the host name the certificate is for"
        ),
    )
}

/// rustls' ring provider, as the server's (see there why, and why its deprecation does not
/// matter here).
#[allow(deprecated)]
fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// A client's connection: plain TCP, or TLS over it.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// The socket under it.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref().0,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }
}

impl From<TcpStream> for Stream {
    fn from(tcp: TcpStream) -> Stream {
        Stream::Plain(tcp)
    }
}

impl From<TlsStream<TcpStream>> for Stream {
    fn from(tls: TlsStream<TcpStream>) -> Stream {
        Stream::Tls(Box::new(tls))
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
