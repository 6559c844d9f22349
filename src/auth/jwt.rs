//! JWT bearer tokens, verified locally: Kubernetes projected service-account
//! tokens (with the gateway's own audience), or any OIDC issuer's.
//!
//! A token is accepted when its signature checks against one of the issuer's
//! keys (found by `kid`), with an allowed algorithm pinned to that key (RS256
//! for RSA keys, ES256 for P-256 keys; never `none`, never HMAC, so a public
//! key can never be used as a shared secret), and its `iss`, `aud`, `exp`,
//! `nbf` (30 s leeway for clock skew) and `sub` are right. The caller's
//! identity is `sub`: `system:serviceaccount:<namespace>:<name>` for
//! Kubernetes tokens.
//!
//! Keys are fetched at start-up, every `refresh` interval, and when a token
//! names an unknown `kid` (the issuer rotated its keys), at most once per
//! [`MIN_REFETCH`]. A verified token is remembered by its SHA-256 until it
//! expires, so the hot path does not redo the signature check.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use jsonwebtoken::{
    Algorithm, DecodingKey, Validation,
    errors::ErrorKind as JwtError,
    jwk::{AlgorithmParameters, EllipticCurve, JwkSet},
};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::{Caller, Method, Unauthenticated, jwks::JwksSource};
use crate::watched_file::every;

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECONDS: u64 = 30;
/// Unknown-`kid` refetches are at most this frequent, so tokens with made-up
/// key ids cannot turn into a stream of requests to the issuer.
pub const MIN_REFETCH: Duration = Duration::from_secs(10);
/// Verified tokens remembered at most (the oldest half is dropped when full).
const REMEMBERED_TOKENS: usize = 10_000;

/// What the operator configured.
pub struct JwtSettings {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub source: JwksSource,
    pub refresh: Duration,
    pub min_refetch: Duration,
}

pub struct JwtVerifier {
    issuer: String,
    audiences: Vec<String>,
    source: JwksSource,
    min_refetch: Duration,
    keys: RwLock<Arc<HashMap<String, (DecodingKey, Algorithm)>>>,
    /// When keys were last fetched; held while fetching (one fetch at a time).
    fetched: tokio::sync::Mutex<Option<Instant>>,
    verified: Mutex<HashMap<[u8; 32], (Caller, u64)>>,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
}

/// Three base64url parts separated by dots.
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The usable keys of a key set: RSA (RS256) and P-256 (ES256) keys with a
/// `kid`. Others are skipped.
fn usable_keys(set: &JwkSet) -> HashMap<String, (DecodingKey, Algorithm)> {
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let Some(kid) = jwk.common.key_id.clone() else {
            continue;
        };
        let algorithm = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
                Algorithm::ES256
            }
            _ => continue,
        };
        if let Ok(key) = DecodingKey::from_jwk(jwk) {
            keys.insert(kid, (key, algorithm));
        }
    }
    keys
}

impl JwtVerifier {
    /// Fetches the keys once (a failure is logged, not fatal: calls are
    /// refused as UNAVAILABLE until a fetch succeeds) and refreshes them
    /// every `settings.refresh` in the background.
    pub async fn start(settings: JwtSettings) -> Arc<JwtVerifier> {
        let verifier = Arc::new(JwtVerifier {
            issuer: settings.issuer,
            audiences: settings.audiences,
            source: settings.source,
            min_refetch: settings.min_refetch,
            keys: RwLock::new(Arc::new(HashMap::new())),
            fetched: tokio::sync::Mutex::new(None),
            verified: Mutex::new(HashMap::new()),
        });
        verifier.refetch(Duration::ZERO).await;
        every(&verifier, settings.refresh, |verifier| async move {
            verifier.refetch(Duration::ZERO).await;
        });
        verifier
    }

    /// Fetches the keys unless they were fetched less than `unless_within` ago.
    async fn refetch(&self, unless_within: Duration) {
        let mut fetched = self.fetched.lock().await;
        if fetched.is_some_and(|at| at.elapsed() < unless_within) {
            return;
        }
        *fetched = Some(Instant::now());
        match self.source.fetch().await {
            Ok(set) => {
                let keys = usable_keys(&set);
                tracing::info!(issuer = %self.issuer, keys = keys.len(), "token issuer keys fetched");
                let mut current = self.keys.write().expect("lock");
                // A key the issuer withdrew (rotated out, or compromised) must
                // stop vouching for tokens at once, cached ones included.
                let withdrawn = current.keys().any(|kid| !keys.contains_key(kid));
                *current = Arc::new(keys);
                drop(current);
                if withdrawn {
                    self.verified.lock().expect("lock").clear();
                }
            }
            Err(error) => {
                tracing::warn!(issuer = %self.issuer, %error, "cannot fetch the token issuer's keys; keeping the last ones");
            }
        }
    }

    fn key(&self, kid: &str) -> Option<(DecodingKey, Algorithm)> {
        self.keys.read().expect("lock").get(kid).cloned()
    }

    pub async fn verify(&self, token: &str) -> Result<Caller, Unauthenticated> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = now_seconds();
        if let Some((caller, exp)) = self.verified.lock().expect("lock").get(&digest)
            && now <= *exp
        {
            return Ok(caller.clone());
        }

        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| Unauthenticated::Untrusted("not a JWT signed with RS256 or ES256"))?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(Unauthenticated::Untrusted(
                "the token's algorithm is not allowed (RS256 or ES256 only)",
            ));
        }
        let kid = header
            .kid
            .ok_or(Unauthenticated::Untrusted("the token names no key (kid)"))?;
        let (key, algorithm) = match self.key(&kid) {
            Some(found) => found,
            None => {
                // The issuer may have rotated its keys.
                self.refetch(self.min_refetch).await;
                match self.key(&kid) {
                    Some(found) => found,
                    None if self.keys.read().expect("lock").is_empty() => {
                        return Err(Unauthenticated::KeysUnavailable);
                    }
                    None => {
                        return Err(Unauthenticated::Untrusted(
                            "the token is signed with a key the issuer does not publish",
                        ));
                    }
                }
            }
        };
        if header.alg != algorithm {
            return Err(Unauthenticated::Untrusted(
                "the token's algorithm does not match its key",
            ));
        }

        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&self.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECONDS;
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map_err(|error| match error.kind() {
                JwtError::ExpiredSignature | JwtError::ImmatureSignature => {
                    Unauthenticated::Expired
                }
                JwtError::InvalidSignature => Unauthenticated::Untrusted("bad signature"),
                JwtError::InvalidIssuer => {
                    Unauthenticated::Untrusted("the token is from another issuer")
                }
                JwtError::InvalidAudience => {
                    Unauthenticated::Untrusted("the token is meant for another audience")
                }
                JwtError::MissingRequiredClaim(_) => {
                    Unauthenticated::Untrusted("the token lacks exp, iss, aud or sub")
                }
                _ => Unauthenticated::Untrusted("the token is invalid"),
            })?
            .claims;
        let caller = Caller {
            identity: claims.sub,
            method: Method::Jwt,
        };
        let mut verified = self.verified.lock().expect("lock");
        if verified.len() >= REMEMBERED_TOKENS {
            verified.retain(|_, (_, exp)| *exp >= now);
            if verified.len() >= REMEMBERED_TOKENS {
                verified.clear();
            }
        }
        verified.insert(digest, (caller.clone(), claims.exp + LEEWAY_SECONDS));
        Ok(caller)
    }
}
