//! Server TLS with rustls, and client certificates as caller identities
//! (mTLS).
//!
//! The certificate, key and client CA bundle are files (a cert-manager
//! Secret, typically), re-read every interval: a change that parses and
//! whose key matches its certificate takes effect for new connections at
//! once, while connections already open keep the configuration they
//! started with, so a rotation drops no call. A change that does not work is
//! refused with one warning and the last good configuration stays.
//!
//! With a client CA bundle, the gateway asks every client for a certificate
//! and verifies one that is presented (chain, validity, usage) against the
//! bundle; a client without one must authenticate another way. The identity
//! in a verified certificate is its SPIFFE ID (the `spiffe://` URI SAN that
//! SPIRE, Istio and cert-manager's CSI driver issue), else its subject CN.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use rustls::{
    ServerConfig,
    crypto::aws_lc_rs,
    server::{WebPkiClientVerifier, danger::ClientCertVerifier},
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio_rustls::TlsAcceptor;

use crate::watched_file::WatchedFile;

/// Where the TLS files are, as configured.
#[derive(Clone, Debug)]
pub struct TlsSettings {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Verify client certificates against this bundle (mTLS); `None`: no
    /// client certificates.
    pub client_ca_file: Option<PathBuf>,
}

/// The TLS files, re-read together as one watched file.
pub struct TlsFiles {
    files: Arc<WatchedFile<ServerConfig>>,
    verifies_clients: bool,
}

impl TlsFiles {
    /// Reads the files; a missing or unusable one stops start-up.
    pub fn load(settings: TlsSettings) -> Result<Arc<TlsFiles>, String> {
        let mut paths = vec![settings.cert_file.clone(), settings.key_file.clone()];
        paths.extend(settings.client_ca_file.clone());
        let verifies_clients = settings.client_ca_file.is_some();
        let files =
            WatchedFile::load_together("TLS files", paths, move |raw| build(raw, &settings))?;
        tracing::info!(client_certificates = verifies_clients, "TLS configured");
        Ok(Arc::new(TlsFiles {
            files: Arc::new(files),
            verifies_clients,
        }))
    }

    /// Whether client certificates are verified (and so are identities).
    pub fn verifies_clients(&self) -> bool {
        self.verifies_clients
    }

    /// The acceptor for a new connection, with the current configuration.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.files.get())
    }

    /// Re-reads the files every `interval`; connections already open keep
    /// the configuration they started with.
    pub fn watch(&self, interval: Duration) {
        self.files.watch(interval);
    }
}

/// A rustls server configuration from PEM files: the certificate chain and
/// its key (which must match), ALPN `h2` for gRPC, and, with a client CA
/// bundle, optional client certificates verified against it.
fn build(raw: &[Vec<u8>], settings: &TlsSettings) -> Result<ServerConfig, String> {
    let (cert, key, client_ca) = (&raw[0], &raw[1], raw.get(2));
    let cert_path = settings.cert_file.display();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{cert_path} holds no valid PEM certificate: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{cert_path} holds no certificate"));
    }
    // Never quote the key file: it is a secret.
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|_| {
        format!(
            "{} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
            settings.key_file.display()
        )
    })?;
    let provider = Arc::new(aws_lc_rs::default_provider());
    let verifier: Arc<dyn ClientCertVerifier> = match client_ca {
        None => WebPkiClientVerifier::no_client_auth(),
        Some(bundle) => {
            let ca_path = settings
                .client_ca_file
                .as_deref()
                .unwrap_or(Path::new(""))
                .display();
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(bundle) {
                let cert = cert.map_err(|e| format!("{ca_path}: invalid PEM: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("{ca_path}: not a usable CA certificate: {e}"))?;
            }
            if roots.is_empty() {
                return Err(format!("{ca_path} holds no CA certificate"));
            }
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|e| format!("{ca_path}: {e}"))?
        }
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| format!("{cert_path} and its key do not work together: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The identity in a verified client certificate: its SPIFFE ID (a
/// `spiffe://` URI SAN), else its subject's common name.
pub fn identity_of(certificate: &CertificateDer<'_>) -> Option<String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, parsed) = X509Certificate::from_der(certificate.as_ref()).ok()?;
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::URI(uri) = name
                && uri.starts_with("spiffe://")
            {
                return Some((*uri).to_owned());
            }
        }
    }
    parsed
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .filter(|cn| !cn.is_empty())
        .map(str::to_owned)
}
