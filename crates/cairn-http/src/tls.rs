//! TLS for every listener (rustls with ring) and for the peer client.
//!
//! - The node's certificate and key sit in one [`CertStore`] that both the
//!   server and the peer client read per handshake, so a reload (SIGHUP)
//!   reaches new connections at once and never touches open ones.
//! - With `client_ca_file`, every client must present a certificate from
//!   that CA (mutual TLS); peers present the node's own certificate.
//! - A file that does not load on reload keeps what is in force.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};

/// The `tls` section: where the node's certificate, key and trusted CAs are.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM certificate chain, the node's own certificate first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the certificate.
    pub key_file: PathBuf,
    /// PEM CA certificates; when set, every client must present a
    /// certificate signed by one of them (mutual TLS).
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// PEM CA certificates the peer client trusts (default:
    /// `client_ca_file`, else the system trust store).
    #[serde(default)]
    pub peer_ca_file: Option<PathBuf>,
}

/// A TLS file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM.
    #[error("tls.{key} {path}: {reason}")]
    File {
        /// The config key, e.g. `cert_file`.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
    /// rustls refused the combination (e.g. a key that is not the certificate's).
    #[error("tls: {0}")]
    Setup(String),
}

/// The crypto provider every TLS config of the node uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::File {
        key,
        path: path.to_owned(),
        reason: format!("cannot read it: {e}"),
    })
}

/// Every certificate of a PEM file; at least one.
pub fn read_certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(key, path)?;
    let bad = |reason: String| TlsError::File { key, path: path.to_owned(), reason };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(bad("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into()));
    }
    Ok(certs)
}

/// The CA certificates of a PEM file, as trust roots.
pub fn read_roots(key: &'static str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in read_certs(key, path)? {
        roots.add(c).map_err(|e| TlsError::File {
            key,
            path: path.to_owned(),
            reason: format!("a certificate in it is not a usable CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

/// The node's certificate chain and key, checked to belong together.
fn load_key_pair(files: &TlsFiles) -> Result<CertifiedKey, TlsError> {
    let chain = read_certs("cert_file", &files.cert_file)?;
    let pem = read("key_file", &files.key_file)?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::File {
        key: "key_file",
        path: files.key_file.clone(),
        reason: format!("no PEM private key in it: {e}"),
    })?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| {
        TlsError::Setup(format!(
            "key_file {} does not fit cert_file {}: {e}",
            files.key_file.display(),
            files.cert_file.display()
        ))
    })
}

/// The node's current certificate and key; replaced whole on reload.
#[derive(Debug)]
pub struct CertStore {
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertStore {
    fn get(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn set(&self, k: CertifiedKey) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(k);
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

impl rustls::client::ResolvesClientCert for CertStore {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The server side of TLS for every listener of a node, reloadable.
#[derive(Debug)]
pub struct ServerTls {
    files: TlsFiles,
    certs: Arc<CertStore>,
    config: RwLock<Arc<ServerConfig>>,
}

impl ServerTls {
    /// Reads the files; any problem is an error naming the file.
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let certs = Arc::new(CertStore { current: RwLock::new(Arc::new(load_key_pair(&files)?)) });
        let config = RwLock::new(Arc::new(server_config(&files, &certs)?));
        Ok(Arc::new(ServerTls { files, certs, config }))
    }

    /// Reads the files again. New connections get the new certificate;
    /// open ones keep theirs. On error nothing changes.
    pub fn reload(&self) -> Result<(), TlsError> {
        let pair = load_key_pair(&self.files)?;
        // The client CA too, checked before anything is replaced.
        let config = server_config(&self.files, &self.certs)?;
        self.certs.set(pair);
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
        Ok(())
    }

    /// `mtls` when clients must present certificates, else `on`.
    pub fn mode(&self) -> &'static str {
        if self.files.client_ca_file.is_some() { "mtls" } else { "on" }
    }

    /// The acceptor for one new connection.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(Arc::clone(&self.config.read().unwrap_or_else(|p| p.into_inner())))
    }

    /// The peer client's TLS: trusts `peer_ca_file`, else `client_ca_file`,
    /// else the system trust store; presents the node's own certificate
    /// (the current one, also after a reload) when a peer asks for one.
    pub fn peer_client_config(&self) -> Result<rustls::ClientConfig, TlsError> {
        let roots = match self.files.peer_ca_file.as_deref() {
            Some(p) => read_roots("peer_ca_file", p)?,
            None => match self.files.client_ca_file.as_deref() {
                Some(p) => read_roots("client_ca_file", p)?,
                None => system_roots(),
            },
        };
        let cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_cert_resolver(Arc::clone(&self.certs) as Arc<dyn rustls::client::ResolvesClientCert>);
        Ok(cfg)
    }
}

/// The system trust store (unreadable certificates are skipped).
fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::warn!(error = %e, "reading the system trust store");
    }
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        tracing::warn!("the system trust store has no certificates; set tls.peer_ca_file");
    }
    roots
}

fn server_config(files: &TlsFiles, certs: &Arc<CertStore>) -> Result<ServerConfig, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    let builder = match files.client_ca_file.as_deref() {
        Some(p) => {
            let roots = read_roots("client_ca_file", p)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| TlsError::File { key: "client_ca_file", path: p.to_owned(), reason: e.to_string() })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder.with_cert_resolver(Arc::clone(certs) as Arc<dyn ResolvesServerCert>);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}
