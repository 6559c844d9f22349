//! Who is calling: every job-worker call presents a credential, and the
//! gateway turns it into a [`Caller`] (an identity and how it was proved)
//! before it looks at the request. The rest of the code sees only the
//! `Caller`, never the credential.
//!
//! Ways to present an identity, in the order they are tried:
//! - a client certificate verified during the TLS handshake (mTLS,
//!   `crate::tls`): its SPIFFE ID, else its subject CN;
//! - a static bearer token from the operator's token file
//!   ([`static_tokens`]);
//! - a signed JWT, typically a Kubernetes projected service-account token
//!   ([`jwt`]): `authorization: Bearer <jwt>`, verified locally against the
//!   issuer's keys.
//!
//! With none configured, the operator must have said
//! `--allow-unauthenticated`, and every caller is [`Caller::anonymous`].

pub mod jwks;
pub mod jwt;
pub mod static_tokens;

use std::{fmt, sync::Arc};

use rustls_pki_types::CertificateDer;
use tonic::metadata::MetadataMap;

use self::{jwt::JwtVerifier, static_tokens::StaticTokens};

/// How a caller proved who it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// A token from the operator's static token file.
    StaticToken,
    /// A JWT signed by a trusted issuer (a Kubernetes service-account token).
    Jwt,
    /// A client certificate verified against the operator's CA bundle (mTLS).
    ClientCertificate,
    /// Nothing: authentication is off (`--allow-unauthenticated`).
    None,
}

impl Method {
    pub const fn name(self) -> &'static str {
        match self {
            Method::StaticToken => "static_token",
            Method::Jwt => "jwt",
            Method::ClientCertificate => "client_certificate",
            Method::None => "none",
        }
    }
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// `system:serviceaccount:<ns>:<name>` for service-account tokens, the
    /// token's name for static tokens, `anonymous` without authentication.
    pub identity: String,
    pub method: Method,
}

impl Caller {
    pub fn anonymous() -> Caller {
        Caller {
            identity: "anonymous".into(),
            method: Method::None,
        }
    }
}

/// Why a call is refused as `UNAUTHENTICATED`. The texts never quote the
/// credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unauthenticated {
    /// No `authorization` metadata.
    Missing,
    /// Not `Bearer <token>`, or not a token at all.
    Malformed,
    /// A JWT past its `exp` (or before its `nbf`).
    Expired,
    /// A credential the gateway does not trust: unknown static token, bad
    /// signature, wrong issuer or audience, disallowed algorithm.
    Untrusted(&'static str),
    /// The issuer's keys could not be had, so nothing can be verified now.
    KeysUnavailable,
}

impl Unauthenticated {
    /// The `reason` label in metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Unauthenticated::Missing => "missing_credential",
            Unauthenticated::Malformed => "malformed_credential",
            Unauthenticated::Expired => "expired_credential",
            Unauthenticated::Untrusted(_) => "untrusted_credential",
            Unauthenticated::KeysUnavailable => "issuer_keys_unavailable",
        }
    }
}

impl fmt::Display for Unauthenticated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unauthenticated::Missing => f.write_str(
                "no credential: send `authorization: Bearer <token>` (a service-account token or \
                 a token from the gateway's operator)",
            ),
            Unauthenticated::Malformed => {
                f.write_str("the authorization metadata must be `Bearer <token>`")
            }
            Unauthenticated::Expired => f.write_str("the token has expired or is not valid yet"),
            Unauthenticated::Untrusted(why) => write!(f, "the credential is not trusted: {why}"),
            Unauthenticated::KeysUnavailable => {
                f.write_str("the token issuer's keys cannot be fetched right now; retry later")
            }
        }
    }
}

/// The ways of authenticating the operator enabled.
pub struct Authenticator {
    client_certificates: bool,
    static_tokens: Option<StaticTokens>,
    jwt: Option<Arc<JwtVerifier>>,
}

impl Authenticator {
    /// `client_certificates`: the TLS layer verifies client certificates,
    /// so a presented one is an identity.
    pub fn new(
        client_certificates: bool,
        static_tokens: Option<StaticTokens>,
        jwt: Option<Arc<JwtVerifier>>,
    ) -> Self {
        Authenticator {
            client_certificates,
            static_tokens,
            jwt,
        }
    }

    /// Whether any way of authenticating is configured; if not, every
    /// caller is anonymous.
    pub fn is_enabled(&self) -> bool {
        self.client_certificates || self.static_tokens.is_some() || self.jwt.is_some()
    }

    /// Who is calling, from the connection's verified client certificate
    /// (`peer_certificates`, leaf first) or the call's bearer token.
    pub async fn authenticate(
        &self,
        peer_certificates: Option<&[CertificateDer<'static>]>,
        metadata: &MetadataMap,
    ) -> Result<Caller, Unauthenticated> {
        if !self.is_enabled() {
            return Ok(Caller::anonymous());
        }
        // rustls verified the chain during the handshake; only the identity
        // in it is read here.
        if self.client_certificates
            && let Some(leaf) = peer_certificates.and_then(|chain| chain.first())
        {
            return match crate::tls::identity_of(leaf) {
                Some(identity) => Ok(Caller {
                    identity,
                    method: Method::ClientCertificate,
                }),
                None => Err(Unauthenticated::Untrusted(
                    "the client certificate names no SPIFFE ID and no common name",
                )),
            };
        }
        let token = bearer_token(metadata)?;
        if let Some(tokens) = &self.static_tokens
            && let Some(name) = tokens.identify(token)
        {
            return Ok(Caller {
                identity: name,
                method: Method::StaticToken,
            });
        }
        match &self.jwt {
            Some(verifier) if jwt::looks_like_jwt(token) => verifier.verify(token).await,
            _ => Err(Unauthenticated::Untrusted("unknown token")),
        }
    }
}

/// The token of `authorization: Bearer <token>`.
fn bearer_token(metadata: &MetadataMap) -> Result<&str, Unauthenticated> {
    let value = metadata
        .get("authorization")
        .ok_or(Unauthenticated::Missing)?
        .to_str()
        .map_err(|_| Unauthenticated::Malformed)?;
    let (scheme, token) = value.split_once(' ').ok_or(Unauthenticated::Malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(Unauthenticated::Malformed);
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(value: &str) -> MetadataMap {
        let mut map = MetadataMap::new();
        map.insert("authorization", value.parse().unwrap());
        map
    }

    #[test]
    fn bearer_tokens_are_read_case_insensitively_and_never_empty() {
        assert_eq!(bearer_token(&metadata("Bearer abc")), Ok("abc"));
        assert_eq!(bearer_token(&metadata("bearer abc ")), Ok("abc"));
        assert_eq!(
            bearer_token(&MetadataMap::new()),
            Err(Unauthenticated::Missing)
        );
        for bad in ["Basic abc", "Bearer", "Bearer  ", "abc"] {
            assert_eq!(
                bearer_token(&metadata(bad)),
                Err(Unauthenticated::Malformed),
                "{bad}"
            );
        }
    }
}
