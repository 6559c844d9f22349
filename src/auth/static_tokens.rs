//! Static bearer tokens, for callers outside Kubernetes: the operator's file
//! (typically a mounted Secret) maps a caller's name to the SHA-256 of its
//! token, in hex, as YAML or JSON:
//!
//! ```yaml
//! ci-runner: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
//! ```
//!
//! The gateway never holds the tokens themselves. A presented token is
//! hashed and compared with every entry in constant time, so the time taken
//! says nothing about which entry came close. The file is re-read when it
//! changes (`watched_file.rs`).

use std::{collections::BTreeMap, path::Path, sync::Arc, time::Duration};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::watched_file::WatchedFile;

type Digests = Vec<(String, [u8; 32])>;

pub struct StaticTokens {
    file: Arc<WatchedFile<Digests>>,
}

fn parse(raw: &[u8], path: &Path) -> Result<Digests, String> {
    let entries: BTreeMap<String, String> = serde_yaml_ng::from_slice(raw).map_err(|_| {
        format!(
            "{} must map caller names to the SHA-256 of their tokens in hex",
            path.display()
        )
    })?;
    let mut digests = Vec::with_capacity(entries.len());
    for (name, hex) in entries {
        if name.trim().is_empty() {
            return Err(format!("{}: a caller name is empty", path.display()));
        }
        let Some(digest) = from_hex(hex.trim()) else {
            // Naming the caller is safe; the value may be a pasted token.
            return Err(format!(
                "{}: the entry for {name} is not a SHA-256 in hex (64 hex digits); store \
                 `sha256sum` of the token, never the token",
                path.display()
            ));
        };
        digests.push((name, digest));
    }
    Ok(digests)
}

fn from_hex(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut digest = [0u8; 32];
    for (i, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(digest)
}

impl StaticTokens {
    /// Reads the file and re-reads it every `reload_interval`.
    pub fn load(path: &Path, reload_interval: Duration) -> Result<StaticTokens, String> {
        let file = Arc::new(WatchedFile::load("static token file", path, parse)?);
        tracing::info!(callers = file.get().len(), "static bearer tokens loaded");
        file.watch(reload_interval);
        Ok(StaticTokens { file })
    }

    /// The name of the caller whose token this is.
    pub fn identify(&self, token: &str) -> Option<String> {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        // Every entry is compared, whatever matched, so timing reveals nothing.
        for (name, digest) in self.file.get().iter() {
            if bool::from(digest.ct_eq(&presented)) {
                found = Some(name.clone());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watched_file::tests::TempDir;

    fn sha256_hex(token: &str) -> String {
        Sha256::digest(token.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[tokio::test]
    async fn tokens_are_known_by_their_digest_only() {
        let dir = TempDir::new();
        let path = dir.file(
            "tokens.yaml",
            &format!(
                "ci-runner: {}\nnightly: \"{}\"\n",
                sha256_hex("s3cret-ci"),
                sha256_hex("s3cret-nightly").to_uppercase()
            ),
        );
        let tokens = StaticTokens::load(&path, Duration::from_secs(3600)).unwrap();
        assert_eq!(tokens.identify("s3cret-ci").as_deref(), Some("ci-runner"));
        assert_eq!(
            tokens.identify("s3cret-nightly").as_deref(),
            Some("nightly")
        );
        assert_eq!(tokens.identify("s3cret"), None);
        assert_eq!(tokens.identify(&sha256_hex("s3cret-ci")), None);
    }

    #[tokio::test]
    async fn json_works_too_and_pasted_tokens_are_refused_without_quoting_them() {
        let dir = TempDir::new();
        let path = dir.file(
            "tokens.json",
            &format!(r#"{{"ci": "{}"}}"#, sha256_hex("t")),
        );
        assert!(StaticTokens::load(&path, Duration::from_secs(3600)).is_ok());
        let path = dir.file("pasted.json", r#"{"ci": "PASTED-TOKEN-SECRET"}"#);
        let error = StaticTokens::load(&path, Duration::from_secs(3600))
            .err()
            .unwrap();
        assert!(error.contains("entry for ci"), "{error}");
        assert!(!error.contains("PASTED-TOKEN-SECRET"), "{error}");
    }
}
