//! The optional client-token map: partner `clientId → clientToken`, kept by
//! the gateway so that partner workers need no secret at all.
//!
//! The operator mounts a JSON object (`{"<clientId>": "<clientToken>", …}`),
//! typically from a Kubernetes Secret. It is re-read when its content changes
//! (Kubernetes swaps mounted Secrets in place); a broken update is refused and
//! the last good map stays in use. The gateway learns which client a job
//! belongs to from the `PollForThirdPartyJobs` answers it forwards, or from
//! the caller's `client_id`. A token the caller sends always wins.

use std::{
    collections::{HashMap, VecDeque},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

/// How many job → client assignments are remembered (oldest forgotten first).
const REMEMBERED_JOBS: usize = 50_000;

pub struct ClientTokens {
    path: PathBuf,
    tokens: RwLock<Arc<TokenFile>>,
    jobs: Mutex<JobClients>,
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
            jobs: Mutex::new(JobClients::default()),
        })
    }

    /// Re-reads the file if its content changed. Returns whether it did.
    pub fn reload(&self) -> bool {
        let raw = match std::fs::read(&self.path) {
            Ok(raw) => raw,
            Err(error) => {
                tracing::warn!(path = %self.path.display(), %error, "cannot re-read the client-token file; keeping the last good map");
                return false;
            }
        };
        if self.tokens.read().expect("lock").raw == raw {
            return false;
        }
        match parse(&raw, &self.path) {
            Ok(tokens) => {
                tracing::info!(path = %self.path.display(), clients = tokens.len(), "client-token map reloaded");
                *self.tokens.write().expect("lock") = Arc::new(TokenFile { raw, tokens });
                true
            }
            Err(problem) => {
                tracing::warn!(%problem, "refusing the changed client-token file; keeping the last good map");
                false
            }
        }
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

/// A partner request whose missing client token the map can supply:
/// gives access to its `client_token`, `job_id` and `client_id`.
pub trait PartnerRequest {
    fn token_parts(&mut self) -> (&mut String, &str, &str);
}

macro_rules! partner_requests {
    ($($request:ident),+) => {$(
        impl PartnerRequest for crate::proto::v1::$request {
            fn token_parts(&mut self) -> (&mut String, &str, &str) {
                (&mut self.client_token, &self.job_id, &self.client_id)
            }
        }
    )+};
}

partner_requests!(
    AcknowledgeThirdPartyJobRequest,
    GetThirdPartyJobDetailsRequest,
    PutThirdPartyJobSuccessResultRequest,
    PutThirdPartyJobFailureResultRequest
);

/// Fills in a missing client token from the map, if there is one.
pub fn fill_in(map: Option<&ClientTokens>, request: &mut impl PartnerRequest) {
    let (client_token, job_id, client_id) = request.token_parts();
    if client_token.is_empty()
        && let Some(token) = map.and_then(|m| m.token_for(job_id, client_id))
    {
        *client_token = token;
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

    #[test]
    fn a_token_from_the_caller_wins() {
        let (_dir, path) = file(r#"{"client-a": "token-a"}"#);
        let map = ClientTokens::load(&path).unwrap();
        let mut request = crate::proto::v1::GetThirdPartyJobDetailsRequest {
            job_id: "job".into(),
            client_token: "mine".into(),
            client_id: "client-a".into(),
        };
        fill_in(Some(&map), &mut request);
        assert_eq!(request.client_token, "mine");
        request.client_token.clear();
        fill_in(Some(&map), &mut request);
        assert_eq!(request.client_token, "token-a");
    }

    #[test]
    fn reload_picks_up_changes_and_keeps_the_last_good_map() {
        let (_dir, path) = file(r#"{"client-a": "token-a"}"#);
        let map = ClientTokens::load(&path).unwrap();
        assert!(!map.reload(), "unchanged");
        std::fs::write(&path, r#"{"client-a": "token-a2"}"#).unwrap();
        assert!(map.reload());
        assert_eq!(map.token_for("j", "client-a").as_deref(), Some("token-a2"));
        std::fs::write(&path, r#"{"client-a": "#).unwrap();
        assert!(!map.reload());
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
