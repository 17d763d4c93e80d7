//! TLS, once: PEM loading and the one acceptor every TLS listener shares.
//!
//! PEM is read through rustls-pki-types' `PemObject`, the successor that
//! rustls-pemfile's own README points to. With no `certfiles` configured, a
//! self-signed development certificate for the hosted domains, `localhost`,
//! 127.0.0.1 and ::1 is made in the data directory on first start and reused.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certfiles: {path}: {problem}")]
    Pem { path: String, problem: String },
    #[error("certfiles: no certificate found in {0}")]
    NoCertificate(String),
    #[error("certfiles: no private key found in {0}")]
    NoKey(String),
    #[error("certfiles: key does not fit the certificate: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("development certificate: {0}")]
    DevCert(String),
}

pub const DEV_CERT: &str = "dev-cert.pem";
pub const DEV_KEY: &str = "dev-key.pem";

/// The certificate every TLS handshake gets, swapped by a reload
/// (`SIGHUP`, `petrel ctl reload`): new handshakes get the new one,
/// established sessions keep theirs.
#[derive(Debug)]
struct CurrentCert(std::sync::RwLock<Arc<rustls::sign::CertifiedKey>>);

impl rustls::server::ResolvesServerCert for CurrentCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// The shared acceptor and what it was loaded from, so it can be reloaded.
pub struct Tls {
    pub acceptor: TlsAcceptor,
    current: Arc<CurrentCert>,
    /// The files named by `certfiles` (a reload may name others).
    certfiles: std::sync::Mutex<Vec<PathBuf>>,
    data_dir: PathBuf,
    hosts: Vec<String>,
}

/// A certificate read and checked by [`Tls::prepare`], not yet served.
pub struct Prepared {
    key: Arc<rustls::sign::CertifiedKey>,
    certfiles: Vec<PathBuf>,
    /// The files it came from.
    pub names: String,
}

impl Tls {
    /// Reads the certificate files again and serves them from the next
    /// handshake on; on any problem the old certificate stays. The files
    /// it read.
    pub fn reload(&self) -> Result<String, TlsError> {
        let files = self
            .certfiles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let p = self.prepare(&files)?;
        let names = p.names.clone();
        self.install(p);
        Ok(names)
    }

    /// Reads and checks the certificate in `certfiles` (the development
    /// one when empty) without serving it yet.
    pub fn prepare(&self, certfiles: &[PathBuf]) -> Result<Prepared, TlsError> {
        let (key, names) = load(certfiles, &self.data_dir, &self.hosts)?;
        Ok(Prepared {
            key: Arc::new(key),
            certfiles: certfiles.to_vec(),
            names,
        })
    }

    /// Serves a prepared certificate from the next handshake on;
    /// established sessions keep theirs.
    pub fn install(&self, p: Prepared) {
        *self.current.0.write().unwrap_or_else(|e| e.into_inner()) = p.key;
        *self.certfiles.lock().unwrap_or_else(|e| e.into_inner()) = p.certfiles;
        tracing::info!(files = %p.names, "TLS certificate reloaded");
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads the configured PEM files (chain and key in any of them), or the
/// development certificate, and returns the shared acceptor.
pub fn acceptor(certfiles: &[PathBuf], data_dir: &Path, hosts: &[String]) -> Result<Tls, TlsError> {
    let (key, _) = load(certfiles, data_dir, hosts)?;
    let current = Arc::new(CurrentCert(std::sync::RwLock::new(Arc::new(key))));
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(current.clone());
    Ok(Tls {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        current,
        certfiles: std::sync::Mutex::new(certfiles.to_vec()),
        data_dir: data_dir.to_path_buf(),
        hosts: hosts.to_vec(),
    })
}

/// The certificate chain and key, checked to fit each other, and the names
/// of the files they came from.
fn load(
    certfiles: &[PathBuf],
    data_dir: &Path,
    hosts: &[String],
) -> Result<(rustls::sign::CertifiedKey, String), TlsError> {
    let files = if certfiles.is_empty() {
        dev_cert(data_dir, hosts)?
    } else {
        certfiles.to_vec()
    };
    let mut chain: Vec<CertificateDer<'static>> = Vec::new();
    let mut key: Option<PrivateKeyDer<'static>> = None;
    for f in &files {
        let pem_err = |e: rustls_pki_types::pem::Error| TlsError::Pem {
            path: f.display().to_string(),
            problem: e.to_string(),
        };
        for c in CertificateDer::pem_file_iter(f).map_err(pem_err)? {
            chain.push(c.map_err(pem_err)?);
        }
        if key.is_none() {
            match PrivateKeyDer::from_pem_file(f) {
                Ok(k) => key = Some(k),
                Err(rustls_pki_types::pem::Error::NoItemsFound) => {}
                Err(e) => return Err(pem_err(e)),
            }
        }
    }
    let names = files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(names));
    }
    let key = key.ok_or_else(|| TlsError::NoKey(names.clone()))?;
    let certified = rustls::sign::CertifiedKey::from_der(chain, key, &provider())?;
    Ok((certified, names))
}

/// Makes (once) and returns the development certificate and key files.
fn dev_cert(data_dir: &Path, hosts: &[String]) -> Result<Vec<PathBuf>, TlsError> {
    let cert = data_dir.join(DEV_CERT);
    let key = data_dir.join(DEV_KEY);
    if cert.exists() && key.exists() {
        return Ok(vec![cert, key]);
    }
    let mut names: Vec<String> = hosts.to_vec();
    for extra in ["localhost", "127.0.0.1", "::1"] {
        if !names.iter().any(|n| n == extra) {
            names.push(extra.to_string());
        }
    }
    let dev = |e: rcgen::Error| TlsError::DevCert(e.to_string());
    let key_pair = rcgen::KeyPair::generate().map_err(dev)?;
    let mut params = rcgen::CertificateParams::new(names).map_err(dev)?;
    // Named for what it is (rcgen's default subject is "rcgen self signed cert").
    let host = hosts.first().map_or("localhost", String::as_str);
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("{host} (Petrel development certificate)"),
    );
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "Petrel");
    let made = rcgen::CertifiedKey {
        cert: params.self_signed(&key_pair).map_err(dev)?,
        signing_key: key_pair,
    };
    std::fs::create_dir_all(data_dir).map_err(|e| TlsError::DevCert(e.to_string()))?;
    // Private like everything in the data directory (the server alone reads it).
    write_private(&cert, made.cert.pem().as_bytes())
        .map_err(|e| TlsError::DevCert(e.to_string()))?;
    write_private(&key, made.signing_key.serialize_pem().as_bytes())
        .map_err(|e| TlsError::DevCert(e.to_string()))?;
    tracing::info!(cert = %cert.display(), "made a development certificate");
    Ok(vec![cert, key])
}

/// Writes a file readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_cert_is_made_once_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        acceptor(&[], dir.path(), &["localhost".into()]).unwrap();
        let first = std::fs::read(dir.path().join(DEV_CERT)).unwrap();
        acceptor(&[], dir.path(), &["localhost".into()]).unwrap();
        assert_eq!(
            first,
            std::fs::read(dir.path().join(DEV_CERT)).unwrap(),
            "reused, not remade"
        );
        // The same files given as certfiles load too.
        acceptor(
            &[dir.path().join(DEV_CERT), dir.path().join(DEV_KEY)],
            dir.path(),
            &[],
        )
        .unwrap();
    }

    #[test]
    fn missing_key_or_garbage_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        acceptor(&[], dir.path(), &["localhost".into()]).unwrap();
        let e = acceptor(&[dir.path().join(DEV_CERT)], dir.path(), &[])
            .err()
            .unwrap();
        assert!(matches!(e, TlsError::NoKey(_)), "{e}");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "hello").unwrap();
        let e = acceptor(&[junk], dir.path(), &[]).err().unwrap();
        assert!(matches!(e, TlsError::NoCertificate(_)), "{e}");
    }
}
