//! TLS on the node's public ports (SPEC 11): the certificate and key read from their PEM files,
//! served to every handshake of the HTTP port and the viewer ports through one resolver, and
//! swapped in place by [`Tls::reload`] (SIGHUP in the binary): handshakes from then on get the
//! new pair, connections already up keep the keys they agreed on, so a reload drops nobody.
//! What a TLS connection is after its handshake is `conn.rs`'s.
//!
//! rustls with the ring provider, named explicitly wherever a configuration is built (a second
//! provider compiled in by a dependency would otherwise make the default ambiguous).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;

/// Why a certificate pair cannot be served; each names the file and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: no certificate in it (expected PEM blocks \"BEGIN CERTIFICATE\")", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: no private key in it (expected a PEM block \"BEGIN PRIVATE KEY\", \"BEGIN RSA PRIVATE KEY\" or \"BEGIN EC PRIVATE KEY\")", path.display())]
    NoKey { path: PathBuf },
    #[error("{}: not valid PEM: {why}", path.display())]
    Pem { path: PathBuf, why: String },
    #[error("{}: {why}", path.display())]
    Unusable { path: PathBuf, why: String },
    #[error("the key in {} does not match the certificate in {}", key.display(), cert.display())]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("this node serves no TLS (no certificate was configured): nothing to reload")]
    NotConfigured,
}

/// The node's certificate, and the acceptors of its two kinds of port.
pub(crate) struct Tls {
    files: TlsFiles,
    current: Arc<Current>,
    provider: Arc<CryptoProvider>,
    /// The HTTP port: ALPN `http/1.1` (the only HTTP this node speaks).
    http: TlsAcceptor,
    /// The viewer ports: no ALPN, the TCP protocols run directly over TLS.
    viewers: TlsAcceptor,
}

impl Tls {
    /// Reads the pair and builds the acceptors; fails, naming the file, on anything that would
    /// make a handshake fail later.
    pub(crate) fn load(files: &TlsFiles) -> Result<Tls, TlsError> {
        let provider = Arc::new(provider());
        let key = read_pair(files, &provider)?;
        let current = Arc::new(Current(ArcSwap::from_pointee(key)));
        let config = |alpn: &[&[u8]]| -> Result<TlsAcceptor, TlsError> {
            let mut config = ServerConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| TlsError::Unusable { path: files.cert.clone(), why: e.to_string() })?
                .with_no_client_auth()
                .with_cert_resolver(current.clone());
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Ok(TlsAcceptor::from(Arc::new(config)))
        };
        Ok(Tls {
            http: config(&[b"http/1.1"])?,
            viewers: config(&[])?,
            files: files.clone(),
            current,
            provider,
        })
    }

    /// Reads the pair again and serves it to every handshake from now on; on any error the
    /// pair served so far stays.
    pub(crate) fn reload(&self) -> Result<(), TlsError> {
        let key = read_pair(&self.files, &self.provider)?;
        self.current.0.store(Arc::new(key));
        Ok(())
    }

    pub(crate) fn http(&self) -> &TlsAcceptor {
        &self.http
    }

    pub(crate) fn viewers(&self) -> &TlsAcceptor {
        &self.viewers
    }

    /// The files it serves, for the log.
    pub(crate) fn files(&self) -> &TlsFiles {
        &self.files
    }
}

/// rustls' ring provider: it builds with a C compiler alone (aws-lc-rs needs CMake). rustls
/// 0.23.48 deprecates it because ring has no post-quantum key exchange (X25519MLKEM768), which
/// only protects against recording today's traffic to decrypt it with a future quantum
/// computer: a live match is public minutes later.
#[allow(deprecated)]
fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The pair served now: read by every handshake, swapped by a reload.
struct Current(ArcSwap<CertifiedKey>);

impl fmt::Debug for Current {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Current(..)")
    }
}

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// Reads the certificate chain and its key, and checks that they belong together.
fn read_pair(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let cert_pem = read(&files.cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(&files.cert, e))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: files.cert.clone() });
    }
    let key_pem = read(&files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey { path: files.key.clone() },
        e => pem_error(&files.key, e),
    })?;
    let signing = provider.key_provider.load_private_key(key).map_err(|e| TlsError::Unusable {
        path: files.key.clone(),
        why: format!("not a usable private key ({e})"),
    })?;
    let pair = CertifiedKey::new(chain, signing);
    match pair.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(pair)
        }
        Err(rustls::Error::InconsistentKeys(_)) => {
            Err(TlsError::Mismatch { cert: files.cert.clone(), key: files.key.clone() })
        }
        Err(e) => Err(TlsError::Unusable {
            path: files.cert.clone(),
            why: format!("its first certificate cannot be read ({e})"),
        }),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_owned(), source })
}

fn pem_error(path: &Path, e: rustls::pki_types::pem::Error) -> TlsError {
    TlsError::Pem { path: path.to_owned(), why: e.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed pair for `127.0.0.1`, as PEM: (certificate, key).
    fn pair() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn files(dir: &Path, cert: &str, key: &str) -> TlsFiles {
        let files = TlsFiles { cert: dir.join("cert.pem"), key: dir.join("key.pem") };
        std::fs::write(&files.cert, cert).unwrap();
        std::fs::write(&files.key, key).unwrap();
        files
    }

    #[test]
    fn a_pair_loads_and_every_bad_file_is_named_with_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pair();
        assert!(Tls::load(&files(dir.path(), &cert, &key)).is_ok());

        let missing = TlsFiles { cert: dir.path().join("nope.pem"), key: dir.path().join("k") };
        let e = Tls::load(&missing).err().unwrap().to_string();
        assert!(e.starts_with("cannot read ") && e.contains("nope.pem"), "{e}");

        let e = Tls::load(&files(dir.path(), "hello", &key)).err().unwrap().to_string();
        assert!(e.contains("cert.pem: no certificate in it"), "{e}");

        let e = Tls::load(&files(dir.path(), &cert, &cert)).err().unwrap().to_string();
        assert!(e.contains("key.pem: no private key in it"), "{e}");

        let (_, other_key) = pair();
        let e = Tls::load(&files(dir.path(), &cert, &other_key)).err().unwrap().to_string();
        assert!(e.contains("key.pem does not match the certificate in"), "{e}");

        let broken = "-----BEGIN CERTIFICATE-----\nMIIB\n";
        let e = Tls::load(&files(dir.path(), broken, &key)).err().unwrap().to_string();
        assert!(e.contains("cert.pem: not valid PEM"), "{e}");
    }

    #[test]
    fn a_failed_reload_keeps_the_pair_served_so_far() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pair();
        let files = files(dir.path(), &cert, &key);
        let tls = Tls::load(&files).unwrap();
        let before = tls.current.0.load_full();
        std::fs::write(&files.key, "not a key").unwrap();
        assert!(matches!(tls.reload(), Err(TlsError::NoKey { .. })));
        assert!(Arc::ptr_eq(&before, &tls.current.0.load_full()), "the old pair stays");
        let (cert, key) = pair();
        std::fs::write(&files.cert, cert).unwrap();
        std::fs::write(&files.key, key).unwrap();
        tls.reload().unwrap();
        assert!(!Arc::ptr_eq(&before, &tls.current.0.load_full()), "the new pair is served");
    }
}
