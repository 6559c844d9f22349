//! The optional client-token map: partner `clientId → clientToken`, kept by
//! the gateway so that partner workers need no secret at all.
//!
//! The operator mounts a JSON object (`{"<clientId>": "<clientToken>", …}`),
//! typically from a Kubernetes Secret. It is re-read when its content changes
//! (Kubernetes swaps mounted Secrets in place); a broken update is refused and
//! the last good map stays in use. The gateway learns which client a job
//! belongs to from the `PollForThirdPartyJobs` answers it forwards, or from
//! the caller's `client_id`. A token the caller sends always wins.
//!
//! The fill-in runs after validation, on the checked request: a partner call
//! is a [`NeedsToken`] until [`Resolve`] turns it into a [`WithToken`].

use std::{collections::HashMap, fmt, path::Path, sync::Arc, time::Duration};

use crate::{
    memory::JobMemory,
    operation::Resolve,
    validation::{FieldViolation, InvalidRequest},
    watched_file::{Reload, WatchedFile},
};

/// How many job → client assignments are remembered (oldest forgotten first).
const REMEMBERED_JOBS: usize = 50_000;

pub struct ClientTokens {
    tokens: Arc<WatchedFile<HashMap<String, String>>>,
    /// Which client each polled job belongs to.
    client_of: JobMemory<String>,
}

/// Parses the file's content; errors never quote it (it holds secrets).
fn parse(raw: &[u8], path: &Path) -> Result<HashMap<String, String>, String> {
    let value: serde_json::Value = serde_json::from_slice(raw).map_err(|e| {
        format!(
            "{} is not valid JSON (line {}, column {})",
            path.display(),
            e.line(),
            e.column()
        )
    })?;
    let object = value.as_object().ok_or_else(|| {
        format!(
            "{} must hold a JSON object of clientId to clientToken",
            path.display()
        )
    })?;
    let mut tokens = HashMap::with_capacity(object.len());
    for (client_id, token) in object {
        let token = token
            .as_str()
            .filter(|t| (1..=256).contains(&t.chars().count()));
        let Some(token) = token else {
            return Err(format!(
                "{}: the clientToken of clientId {client_id} must be a string of 1 to 256 characters",
                path.display()
            ));
        };
        tokens.insert(client_id.clone(), token.to_owned());
    }
    Ok(tokens)
}

impl ClientTokens {
    /// Reads the file once; a missing or broken file stops start-up.
    pub fn load(path: &Path) -> Result<ClientTokens, String> {
        let tokens = WatchedFile::load("client-token file", path, parse)?;
        tracing::info!(clients = tokens.get().len(), "client-token map loaded");
        Ok(ClientTokens {
            tokens: Arc::new(tokens),
            client_of: JobMemory::new(REMEMBERED_JOBS),
        })
    }

    /// Re-reads the file if its content changed (see `watched_file.rs`).
    pub fn reload(&self) -> Reload {
        self.tokens.reload()
    }

    /// Re-reads the file every `interval` for as long as the map is alive.
    pub fn watch(&self, interval: Duration) {
        self.tokens.watch(interval);
    }

    /// Remembers which client each polled job belongs to.
    pub fn remember(&self, job_id: &str, client_id: &str) {
        self.client_of.remember(job_id, client_id.to_owned());
    }

    /// The token for a job: by the caller's `client_id` if given, else by the
    /// client the job was polled for.
    pub fn token_for(&self, job_id: &str, client_id: &str) -> Option<String> {
        let client_id = if client_id.is_empty() {
            self.client_of.get(job_id)?
        } else {
            client_id.to_owned()
        };
        self.tokens.get().get(&client_id).cloned()
    }
}

/// A partner's client token: a secret shared with AWS, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientToken(String);

impl ClientToken {
    pub fn new(token: String) -> Self {
        ClientToken(token)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ClientToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientToken(<redacted>)")
    }
}

/// Where a partner call's client token comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSource {
    /// The caller sent it; it always wins.
    Sent(ClientToken),
    /// The caller left it out: the map supplies it, by the caller's
    /// `client_id` if given, else by the client the job was polled for.
    Lookup { client_id: Option<String> },
}

/// A checked partner call, before the gateway knows its client token.
pub struct NeedsToken<B> {
    pub job_id: String,
    pub token: TokenSource,
    /// The operation's other checked fields.
    pub body: B,
}

/// A partner call ready to send.
pub struct WithToken<B> {
    pub job_id: String,
    pub client_token: ClientToken,
    pub body: B,
}

impl<B> Resolve<WithToken<B>> for NeedsToken<B> {
    fn resolve(self, map: Option<&ClientTokens>) -> Result<WithToken<B>, InvalidRequest> {
        let client_token = match self.token {
            TokenSource::Sent(token) => Some(token),
            TokenSource::Lookup { client_id } => map
                .and_then(|m| m.token_for(&self.job_id, client_id.as_deref().unwrap_or("")))
                .map(ClientToken::new),
        };
        let Some(client_token) = client_token else {
            return Err(InvalidRequest {
                violations: vec![FieldViolation {
                    field: "clientToken".into(),
                    description: "is required (the gateway has no client token for this job: \
                                  send clientToken, or clientId when the gateway's client-token \
                                  map is configured)"
                        .into(),
                }],
                output_variables_too_large: false,
            });
        };
        Ok(WithToken {
            job_id: self.job_id,
            client_token,
            body: self.body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watched_file::tests::TempDir;
    use std::path::PathBuf;

    fn file(content: &str) -> (TempDir, PathBuf) {
        let dir = TempDir::new();
        let path = dir.file("client-tokens.json", content);
        (dir, path)
    }

    #[test]
    fn tokens_by_client_id_or_by_polled_job() {
        let (_dir, path) = file(r#"{"client-a": "token-a"}"#);
        let map = ClientTokens::load(&path).unwrap();
        assert_eq!(
            map.token_for("job-1", "client-a").as_deref(),
            Some("token-a")
        );
        assert_eq!(map.token_for("job-1", ""), None);
        map.remember("job-1", "client-a");
        assert_eq!(map.token_for("job-1", "").as_deref(), Some("token-a"));
        assert_eq!(map.token_for("job-1", "client-b"), None);
    }

    fn resolved(map: Option<&ClientTokens>, token: TokenSource) -> Option<String> {
        let call = NeedsToken {
            job_id: "job".into(),
            token,
            body: (),
        };
        let resolved: Result<WithToken<()>, _> = call.resolve(map);
        resolved.ok().map(|c| c.client_token.expose().to_owned())
    }

    #[test]
    fn a_token_from_the_caller_wins() {
        let (_dir, path) = file(r#"{"client-a": "token-a"}"#);
        let map = ClientTokens::load(&path).unwrap();
        let mine = TokenSource::Sent(ClientToken::new("mine".into()));
        assert_eq!(resolved(Some(&map), mine.clone()).as_deref(), Some("mine"));
        assert_eq!(resolved(None, mine).as_deref(), Some("mine"));
        let lookup = |id: &str| TokenSource::Lookup {
            client_id: Some(id.into()),
        };
        assert_eq!(
            resolved(Some(&map), lookup("client-a")).as_deref(),
            Some("token-a")
        );
        assert_eq!(resolved(Some(&map), lookup("client-b")), None);
        assert_eq!(resolved(None, lookup("client-a")), None);
        map.remember("job", "client-a");
        let by_job = TokenSource::Lookup { client_id: None };
        assert_eq!(resolved(Some(&map), by_job).as_deref(), Some("token-a"));
    }

    #[test]
    fn reload_picks_up_changes_and_keeps_the_last_good_map() {
        let (_dir, path) = file(r#"{"client-a": "token-a"}"#);
        let map = ClientTokens::load(&path).unwrap();
        assert_eq!(map.reload(), Reload::Unchanged);
        std::fs::write(&path, r#"{"client-a": "token-a2"}"#).unwrap();
        assert_eq!(map.reload(), Reload::Reloaded);
        assert_eq!(map.token_for("j", "client-a").as_deref(), Some("token-a2"));
        std::fs::write(&path, r#"{"client-a": "#).unwrap();
        assert!(matches!(map.reload(), Reload::Refused { .. }));
        assert_eq!(map.token_for("j", "client-a").as_deref(), Some("token-a2"));
    }

    #[test]
    fn broken_files_are_refused_without_quoting_secrets() {
        for content in [r#"["x"]"#, r#"{"c": 5}"#, r#"{"c": ""}"#, "{not json"] {
            let (_dir, path) = file(content);
            let error = ClientTokens::load(&path).err().expect(content);
            assert!(
                !error.contains("not json") || content != "{not json",
                "{error}"
            );
        }
        let (_dir, path) = file(
            r#"{"c": "SECRET-TOKEN-but-too-long-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#,
        );
        let error = ClientTokens::load(&path).err().unwrap();
        assert!(!error.contains("SECRET-TOKEN"), "{error}");
    }

    #[test]
    fn remembers_a_bounded_number_of_jobs() {
        let (_dir, path) = file(r#"{"c": "t"}"#);
        let map = ClientTokens::load(&path).unwrap();
        for i in 0..REMEMBERED_JOBS + 10 {
            map.remember(&format!("job-{i}"), "c");
        }
        assert_eq!(map.token_for("job-0", ""), None);
        assert_eq!(
            map.token_for(&format!("job-{}", REMEMBERED_JOBS + 9), "")
                .as_deref(),
            Some("t")
        );
    }
}
