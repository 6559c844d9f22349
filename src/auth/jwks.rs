//! Where a JWT issuer's public keys (its JWKS) come from: a file the
//! operator mounts, or the issuer itself over HTTPS, found through OIDC
//! discovery (`<issuer>/.well-known/openid-configuration`) or named directly.
//!
//! Inside Kubernetes the issuer is the API server: its discovery document and
//! keys are read with the pod's own service-account token and the cluster CA
//! (`--auth-jwks-bearer-token-file`, `--auth-jwks-ca-file`); the chart grants
//! the `system:service-account-issuer-discovery` role for it. On EKS the
//! issuer is a public OIDC URL and needs neither.

use std::{path::PathBuf, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Request, Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use jsonwebtoken::jwk::JwkSet;
use rustls_pki_types::{CertificateDer, pem::PemObject};

use crate::watched_file::WatchedFile;

/// Largest discovery document or key set accepted.
const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Longest wait for one fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// A JWKS source, as configured.
pub enum JwksSource {
    File(Arc<WatchedFile<JwkSet>>),
    Remote(Box<Remote>),
}

/// Keys fetched over HTTP(S).
pub struct Remote {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    location: Location,
    /// Sent as `Authorization: Bearer` (the pod's service-account token,
    /// re-read on every fetch since the kubelet rotates it), and only to the
    /// configured URL's origin: a discovery document naming another host
    /// does not get the pod's credential.
    bearer_token_file: Option<PathBuf>,
    origin: Uri,
}

enum Location {
    /// The key set's own URL.
    Jwks(Uri),
    /// The issuer: discovery names the key set's URL.
    Discover(String),
}

fn parse_jwks(raw: &[u8], path: &std::path::Path) -> Result<JwkSet, String> {
    serde_json::from_slice(raw)
        .map_err(|e| format!("{} is not a JWK set (JSON): {e}", path.display()))
}

impl JwksSource {
    /// Keys from a mounted file, re-read every `reload_interval`.
    pub fn file(path: &std::path::Path, reload_interval: Duration) -> Result<JwksSource, String> {
        let file = Arc::new(WatchedFile::load("JWKS file", path, parse_jwks)?);
        file.watch(reload_interval);
        Ok(JwksSource::File(file))
    }

    /// Keys from `jwks_url`, or found through the issuer's discovery document.
    pub fn remote(
        issuer: &str,
        jwks_url: Option<&str>,
        ca_file: Option<&std::path::Path>,
        bearer_token_file: Option<PathBuf>,
    ) -> Result<JwksSource, String> {
        let (location, origin) = match jwks_url {
            Some(url) => {
                let url = checked_url(url, "--auth-jwks-url")?;
                (Location::Jwks(url.clone()), url)
            }
            None => (
                Location::Discover(issuer.trim_end_matches('/').to_owned()),
                checked_url(issuer, "--auth-jwt-issuer")?,
            ),
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_roots() {
            let _ = roots.add(cert);
        }
        if let Some(path) = ca_file {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("cannot read the CA file {}: {e}", path.display()))?;
            for cert in certs {
                let cert =
                    cert.map_err(|e| format!("bad certificate in {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("bad certificate in {}: {e}", path.display()))?;
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(JwksSource::Remote(Box::new(Remote {
            client,
            location,
            bearer_token_file,
            origin,
        })))
    }

    /// The current key set.
    pub async fn fetch(&self) -> Result<JwkSet, String> {
        match self {
            JwksSource::File(file) => Ok((*file.get()).clone()),
            JwksSource::Remote(remote) => remote.fetch().await,
        }
    }
}

/// The platform's trusted roots (empty if none can be read).
fn rustls_native_roots() -> Vec<CertificateDer<'static>> {
    rustls_native_certs::load_native_certs().certs
}

/// Only HTTPS, except to loopback (tests and local issuers): keys fetched in
/// clear text over a network could be swapped by anyone on the path.
fn checked_url(url: &str, flag: &str) -> Result<Uri, String> {
    let uri: Uri = url
        .parse()
        .map_err(|_| format!("invalid {flag}: {url} is not a URL"))?;
    let host = uri.host().unwrap_or("");
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if loopback => Ok(uri),
        _ => Err(format!(
            "invalid {flag}: {url} must be an https:// URL (http:// only to loopback)"
        )),
    }
}

/// Same scheme, host and port.
fn same_origin(a: &Uri, b: &Uri) -> bool {
    let port = |uri: &Uri| {
        uri.port_u16().or(match uri.scheme_str() {
            Some("https") => Some(443),
            Some("http") => Some(80),
            _ => None,
        })
    };
    a.scheme() == b.scheme()
        && a.host().map(str::to_ascii_lowercase) == b.host().map(str::to_ascii_lowercase)
        && port(a) == port(b)
}

impl Remote {
    async fn fetch(&self) -> Result<JwkSet, String> {
        let jwks_url = match &self.location {
            Location::Jwks(url) => url.clone(),
            Location::Discover(issuer) => {
                let discovery = format!("{issuer}/.well-known/openid-configuration");
                let document: serde_json::Value = self.get_json(&discovery).await?;
                let url = document["jwks_uri"]
                    .as_str()
                    .ok_or_else(|| format!("{discovery} names no jwks_uri"))?;
                checked_url(url, "jwks_uri of the discovery document")?
            }
        };
        self.get_json(&jwks_url.to_string()).await
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, String> {
        let mut request = Request::get(url).header(header::ACCEPT, "application/json");
        let to_origin = url
            .parse::<Uri>()
            .is_ok_and(|uri| same_origin(&uri, &self.origin));
        if let Some(path) = self.bearer_token_file.as_ref().filter(|_| to_origin) {
            let token = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            request = request.header(header::AUTHORIZATION, format!("Bearer {}", token.trim()));
        }
        let request = request
            .body(Empty::new())
            .map_err(|e| format!("{url}: {e}"))?;
        let answer = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| format!("{url}: {e}"))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
                .collect()
                .await
                .map_err(|e| format!("{url}: {e}"))?
                .to_bytes();
            if !status.is_success() {
                return Err(format!("{url} answered {status}"));
            }
            serde_json::from_slice(&body).map_err(|e| format!("{url} sent no valid JSON: {e}"))
        };
        tokio::time::timeout(FETCH_TIMEOUT, answer)
            .await
            .map_err(|_| format!("{url} did not answer within {FETCH_TIMEOUT:?}"))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pods_token_goes_only_to_the_configured_origin() {
        let origin: Uri = "https://kubernetes.default.svc/openid/v1/jwks"
            .parse()
            .unwrap();
        for same in [
            "https://kubernetes.default.svc/.well-known/openid-configuration",
            "https://KUBERNETES.default.svc:443/openid/v1/jwks",
        ] {
            assert!(same_origin(&same.parse().unwrap(), &origin), "{same}");
        }
        for other in [
            "https://kubernetes.default.svc:6443/openid/v1/jwks",
            "https://attacker.example/openid/v1/jwks",
            "http://kubernetes.default.svc/openid/v1/jwks",
        ] {
            assert!(!same_origin(&other.parse().unwrap(), &origin), "{other}");
        }
    }

    #[test]
    fn keys_travel_over_https_or_stay_on_loopback() {
        assert!(checked_url("https://oidc.eks.amazonaws.com/id/X", "f").is_ok());
        assert!(checked_url("http://127.0.0.1:8080/jwks", "f").is_ok());
        assert!(checked_url("http://[::1]:8080/jwks", "f").is_ok());
        assert!(checked_url("http://localhost/jwks", "f").is_ok());
        for bad in [
            "http://kubernetes.default.svc/openid/v1/jwks",
            "ftp://x",
            "nope",
        ] {
            assert!(checked_url(bad, "f").is_err(), "{bad}");
        }
    }
}
