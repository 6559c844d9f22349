//! Job state: the jobs the emulator knows about and their lifecycle.

use std::collections::HashMap;

use serde::Serialize;

/// Whether a job belongs to a custom action or to a third-party (partner) action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum JobKind {
    /// A custom-action job, completed with `PutJobSuccessResult` / `PutJobFailureResult`.
    Custom,
    /// A third-party job, completed with `PutThirdPartyJob*Result` and a client token.
    ThirdParty,
}

/// Lifecycle state of an emulated job.
///
/// Jobs are created already acknowledged (`InProgress`); a final success or
/// failure result moves them to `Succeeded` or `Failed`, after which every
/// further result is rejected with `InvalidJobStateException`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum JobState {
    /// Acknowledged by a worker; results are accepted.
    InProgress,
    /// A final success result was received.
    Succeeded,
    /// A final failure result was received.
    Failed,
}

/// What the control API hands out when a job is created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedJob {
    /// Job id (lowercase UUID v4 for both kinds).
    pub job_id: String,
    /// Custom or third-party.
    pub kind: JobKind,
    /// Third-party jobs only: the client id (UUID) a partner would use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Third-party jobs only: the client token that result calls must present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_token: Option<String>,
}

/// A point-in-time copy of a job's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobSnapshot {
    /// Job id.
    pub job_id: String,
    /// Custom or third-party.
    pub kind: JobKind,
    /// Current lifecycle state.
    pub state: JobState,
    /// How many result calls were applied to the job (including continuations).
    pub results_received: u32,
    /// The most recent continuation token received, if any (kept after the job finishes).
    pub continuation_token: Option<String>,
}

/// One emulated job.
#[derive(Clone, Debug)]
pub(crate) struct Job {
    pub id: String,
    pub kind: JobKind,
    pub state: JobState,
    pub client_id: Option<String>,
    pub client_token: Option<String>,
    pub results_received: u32,
    pub continuation_token: Option<String>,
}

impl Job {
    pub fn snapshot(&self) -> JobSnapshot {
        JobSnapshot {
            job_id: self.id.clone(),
            kind: self.kind,
            state: self.state,
            results_received: self.results_received,
            continuation_token: self.continuation_token.clone(),
        }
    }
}

/// All jobs, in creation order.
#[derive(Default)]
pub(crate) struct JobStore {
    jobs: Vec<Job>,
    index: HashMap<String, usize>,
}

impl JobStore {
    /// Creates a job in state `InProgress`.
    pub fn create(&mut self, kind: JobKind) -> CreatedJob {
        let id = uuid::Uuid::new_v4().to_string();
        let (client_id, client_token) = match kind {
            JobKind::Custom => (None, None),
            JobKind::ThirdParty => (
                Some(uuid::Uuid::new_v4().to_string()),
                Some(uuid::Uuid::new_v4().simple().to_string()),
            ),
        };
        let job = Job {
            id: id.clone(),
            kind,
            state: JobState::InProgress,
            client_id: client_id.clone(),
            client_token: client_token.clone(),
            results_received: 0,
            continuation_token: None,
        };
        self.index.insert(id.clone(), self.jobs.len());
        self.jobs.push(job);
        CreatedJob {
            job_id: id,
            kind,
            client_id,
            client_token,
        }
    }

    pub fn get(&self, id: &str) -> Option<&Job> {
        self.index.get(id).map(|&i| &self.jobs[i])
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut Job> {
        self.index.get(id).map(|&i| &mut self.jobs[i])
    }

    pub fn iter(&self) -> impl Iterator<Item = &Job> {
        self.jobs.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_jobs_start_in_progress_with_lowercase_uuid_ids() {
        let mut store = JobStore::default();
        let custom = store.create(JobKind::Custom);
        let third = store.create(JobKind::ThirdParty);
        for id in [&custom.job_id, &third.job_id] {
            assert_eq!(id.len(), 36);
            assert_eq!(*id, id.to_lowercase());
            assert_eq!(store.get(id).unwrap().state, JobState::InProgress);
        }
        assert!(custom.client_id.is_none() && custom.client_token.is_none());
        assert_eq!(third.client_id.as_deref().unwrap().len(), 36);
        assert_eq!(third.client_token.as_deref().unwrap().len(), 32);
        let ids: Vec<_> = store.iter().map(|j| j.id.clone()).collect();
        assert_eq!(ids, vec![custom.job_id, third.job_id]);
    }
}
