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

use std::{
    collections::{HashMap, VecDeque},
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use crate::{
    operation::Resolve,
    validation::{FieldViolation, InvalidRequest},
};

/// How many job → client assignments are remembered (oldest forgotten first).
const REMEMBERED_JOBS: usize = 50_000;

pub struct ClientTokens {
    path: PathBuf,
    tokens: RwLock<Arc<TokenFile>>,
    /// The last change that was refused, so that it is warned about once,
    /// not on every reload tick.
    refused: Mutex<Option<Refused>>,
    jobs: Mutex<JobClients>,
}

/// What one look at the file did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reload {
    Unchanged,
    Reloaded,
    /// The file changed but cannot be used; the last good map stays.
    /// `warned` is false when this same change was already warned about.
    Refused {
        warned: bool,
    },
}

#[derive(PartialEq)]
enum Refused {
    Unreadable(String),
    Broken(Vec<u8>),
}

/// One parsed version of the file; `raw` tells whether it changed.
#[derive(PartialEq)]
struct TokenFile {
    raw: Vec<u8>,
    tokens: HashMap<String, String>,
}

#[derive(Default)]
struct JobClients {
    client_of: HashMap<String, String>,
    order: VecDeque<String>,
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
        let raw = std::fs::read(path)
            .map_err(|e| format!("cannot read the client-token file {}: {e}", path.display()))?;
        let tokens = parse(&raw, path)?;
        tracing::info!(path = %path.display(), clients = tokens.len(), "client-token map loaded");
        Ok(ClientTokens {
            path: path.to_owned(),
            tokens: RwLock::new(Arc::new(TokenFile { raw, tokens })),
            refused: Mutex::new(None),
            jobs: Mutex::new(JobClients::default()),
        })
    }

    /// Re-reads the file if its content changed. A refused change is
    /// warned about once, not on every tick until the file changes again.
    pub fn reload(&self) -> Reload {
        let raw = match std::fs::read(&self.path) {
            Ok(raw) => raw,
            Err(error) => {
                let error = error.to_string();
                let warned = self.refuse_again(Refused::Unreadable(error.clone()));
                if warned {
                    tracing::warn!(path = %self.path.display(), %error, "cannot re-read the client-token file; keeping the last good map");
                }
                return Reload::Refused { warned };
            }
        };
        if self.tokens.read().expect("lock").raw == raw {
            *self.refused.lock().expect("lock") = None;
            return Reload::Unchanged;
        }
        match parse(&raw, &self.path) {
            Ok(tokens) => {
                tracing::info!(path = %self.path.display(), clients = tokens.len(), "client-token map reloaded");
                *self.tokens.write().expect("lock") = Arc::new(TokenFile { raw, tokens });
                *self.refused.lock().expect("lock") = None;
                Reload::Reloaded
            }
            Err(problem) => {
                let warned = self.refuse_again(Refused::Broken(raw));
                if warned {
                    tracing::warn!(%problem, "refusing the changed client-token file; keeping the last good map");
                }
                Reload::Refused { warned }
            }
        }
    }

    /// Records a refusal; true if it is new (and so worth a warning).
    fn refuse_again(&self, refused: Refused) -> bool {
        let mut last = self.refused.lock().expect("lock");
        if last.as_ref() == Some(&refused) {
            return false;
        }
        *last = Some(refused);
        true
    }

    /// Re-reads the file every `interval` for as long as the map is alive.
    pub fn watch(self: &Arc<Self>, interval: Duration) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(map) = weak.upgrade() else { return };
                // File reads block; keep them off the async workers.
                let _ = tokio::task::spawn_blocking(move || map.reload()).await;
            }
        });
    }

    /// Remembers which client each polled job belongs to.
    pub fn remember(&self, job_id: &str, client_id: &str) {
        let mut jobs = self.jobs.lock().expect("lock");
        if jobs
            .client_of
            .insert(job_id.to_owned(), client_id.to_owned())
            .is_none()
        {
            jobs.order.push_back(job_id.to_owned());
            while jobs.order.len() > REMEMBERED_JOBS {
                if let Some(oldest) = jobs.order.pop_front() {
                    jobs.client_of.remove(&oldest);
                }
            }
        }
    }

    /// The token for a job: by the caller's `client_id` if given, else by the
    /// client the job was polled for.
    pub fn token_for(&self, job_id: &str, client_id: &str) -> Option<String> {
        let client_id = if client_id.is_empty() {
            self.jobs
                .lock()
                .expect("lock")
                .client_of
                .get(job_id)
                .cloned()?
        } else {
            client_id.to_owned()
        };
        self.tokens
            .read()
            .expect("lock")
            .tokens
            .get(&client_id)
            .cloned()
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

    fn file(content: &str) -> (tempdir::Dir, PathBuf) {
        let dir = tempdir::Dir::new();
        let path = dir.0.join("client-tokens.json");
        std::fs::write(&path, content).unwrap();
        (dir, path)
    }

    /// A throwaway directory, removed on drop (no extra crate for one test).
    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                let path = std::env::temp_dir().join(format!(
                    "cpgw-test-{}-{}",
                    std::process::id(),
                    rand::random::<u64>()
                ));
                std::fs::create_dir_all(&path).unwrap();
                Dir(path)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
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
    fn a_refused_change_is_warned_about_once_until_the_file_changes_again() {
        let (_dir, path) = file(r#"{"client-a": "token-a"}"#);
        let map = ClientTokens::load(&path).unwrap();
        std::fs::write(&path, "{broken").unwrap();
        assert_eq!(map.reload(), Reload::Refused { warned: true });
        assert_eq!(map.reload(), Reload::Refused { warned: false });
        assert_eq!(map.reload(), Reload::Refused { warned: false });
        std::fs::write(&path, "{broken again").unwrap();
        assert_eq!(map.reload(), Reload::Refused { warned: true });
        std::fs::remove_file(&path).unwrap();
        assert_eq!(map.reload(), Reload::Refused { warned: true });
        assert_eq!(map.reload(), Reload::Refused { warned: false });
        std::fs::write(&path, r#"{"client-a": "token-a3"}"#).unwrap();
        assert_eq!(map.reload(), Reload::Reloaded);
        assert_eq!(map.token_for("j", "client-a").as_deref(), Some("token-a3"));
        // After a good version, the same broken content is news again.
        std::fs::write(&path, "{broken").unwrap();
        assert_eq!(map.reload(), Reload::Refused { warned: true });
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
