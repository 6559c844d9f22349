//! Job state: the registered action types, the jobs the emulator knows about,
//! their job data, and their lifecycle.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::model;

/// The emulator's home account: the account of its own access key, and of
/// jobs created without one (`accountId` of jobs, pipeline ARNs).
pub const ACCOUNT_ID: &str = "123456789012";

/// Where a job lives: CodePipeline jobs belong to one account and one region,
/// and only calls signed for both see them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Place {
    pub account_id: String,
    pub region: String,
}

impl Place {
    pub fn new(account_id: &str, region: &str) -> Place {
        Place {
            account_id: account_id.to_owned(),
            region: region.to_owned(),
        }
    }
}

/// Pipeline name used when a job is created without one.
pub(crate) const DEFAULT_PIPELINE_NAME: &str = "cpgw-dev-pipeline";

/// Identifies an action type: what `PollForJobs` / `PollForThirdPartyJobs`
/// ask for and what every job belongs to. Serialized as AWS's `ActionTypeId`
/// (`{"category", "owner", "provider", "version"}`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionTypeId {
    /// `Source`, `Build`, `Deploy`, `Test`, `Invoke`, `Approval` or `Compute`.
    pub category: String,
    /// `Custom` (custom actions, polled with `PollForJobs`), `ThirdParty`
    /// (partner actions, polled with `PollForThirdPartyJobs`) or `AWS`.
    pub owner: String,
    /// Provider name, 1–35 characters of `[0-9A-Za-z_-]`.
    pub provider: String,
    /// Version, 1–9 characters of `[0-9A-Za-z_-]`.
    pub version: String,
}

impl ActionTypeId {
    /// An action type from its four parts.
    pub fn new(
        category: impl Into<String>,
        owner: impl Into<String>,
        provider: impl Into<String>,
        version: impl Into<String>,
    ) -> ActionTypeId {
        ActionTypeId {
            category: category.into(),
            owner: owner.into(),
            provider: provider.into(),
            version: version.into(),
        }
    }

    /// The always-registered custom action type `{Build, Custom, CpgwDevBuilder, 1}`.
    pub fn default_custom() -> ActionTypeId {
        ActionTypeId::new("Build", "Custom", "CpgwDevBuilder", "1")
    }

    /// The always-registered partner action type `{Deploy, ThirdParty, CpgwDevPartner, 1}`.
    pub fn default_third_party() -> ActionTypeId {
        ActionTypeId::new("Deploy", "ThirdParty", "CpgwDevPartner", "1")
    }

    /// Checks the four parts against the model's `ActionTypeId` shape.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let value = serde_json::to_value(self).expect("action type serializes");
        model()
            .validate_shape("ActionTypeId", &value, "actionTypeId")
            .map_err(|f| format!("invalid actionTypeId: {}", f.message()))
    }
}

/// Whether a job belongs to a custom action or to a third-party (partner) action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum JobKind {
    /// A custom-action job, completed with `PutJobSuccessResult` / `PutJobFailureResult`.
    Custom,
    /// A third-party job, completed with `PutThirdPartyJob*Result` and a client token.
    ThirdParty,
}

impl JobKind {
    /// The `ActionTypeId.owner` that jobs of this kind have.
    pub(crate) fn owner(self) -> &'static str {
        match self {
            JobKind::Custom => "Custom",
            JobKind::ThirdParty => "ThirdParty",
        }
    }

    fn default_action_type(self) -> ActionTypeId {
        match self {
            JobKind::Custom => ActionTypeId::default_custom(),
            JobKind::ThirdParty => ActionTypeId::default_third_party(),
        }
    }
}

/// Lifecycle state of an emulated job.
///
/// `Queued` → (`PollForJobs` / `PollForThirdPartyJobs`) → `Dispatched` →
/// (`AcknowledgeJob` / `AcknowledgeThirdPartyJob` with the dispatch nonce) →
/// `InProgress` → (success or failure result) → `Succeeded` / `Failed`.
/// Results are accepted in `Queued`, `Dispatched` and `InProgress`; after a
/// result every further result is rejected with `InvalidJobStateException`.
/// A success with a continuation token also closes the job: the action goes
/// on in the continuation job it queues.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum JobState {
    /// Created and waiting to be polled.
    Queued,
    /// Handed out by a poll with a nonce; waiting to be acknowledged.
    Dispatched,
    /// Acknowledged by a worker; results are accepted.
    InProgress,
    /// A success result was received (with or without a continuation token).
    Succeeded,
    /// A failure result was received.
    Failed,
}

impl JobState {
    /// Whether result calls are still accepted.
    pub(crate) fn is_open(self) -> bool {
        matches!(
            self,
            JobState::Queued | JobState::Dispatched | JobState::InProgress
        )
    }
}

/// What to create with [`Emulator::create_job`](crate::Emulator::create_job).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewJob {
    /// Custom or third-party; must match `action_type_id`'s owner.
    pub kind: JobKind,
    /// The job's action type; `None` uses the kind's default
    /// ([`ActionTypeId::default_custom`] / [`ActionTypeId::default_third_party`]).
    /// An action type that is not registered yet is registered.
    pub action_type_id: Option<ActionTypeId>,
    /// `actionConfiguration.configuration` of the job data (keys 1–50
    /// characters, values 1–1000 characters).
    pub configuration: BTreeMap<String, String>,
    /// `pipelineContext.pipelineName`; `None` uses `cpgw-dev-pipeline`.
    pub pipeline_name: Option<String>,
    /// The account and region the job lives in; `None` is the emulator's
    /// home ([`ACCOUNT_ID`] and its configured region).
    pub place: Option<Place>,
}

impl Default for NewJob {
    /// A custom job of the default custom action type, no configuration, default pipeline.
    fn default() -> Self {
        NewJob {
            kind: JobKind::Custom,
            action_type_id: None,
            configuration: BTreeMap::new(),
            pipeline_name: None,
            place: None,
        }
    }
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
    /// The job's action type.
    pub action_type_id: ActionTypeId,
    /// The account the job lives in.
    pub account_id: String,
    /// The region the job lives in.
    pub region: String,
}

/// The failure details a failure result reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FailureSnapshot {
    /// `failureDetails.type`, e.g. `JobFailed` (serialized as `type`).
    #[serde(rename = "type")]
    pub failure_type: String,
    /// `failureDetails.message`.
    pub message: String,
    /// `failureDetails.externalExecutionId`, if sent.
    pub external_execution_id: Option<String>,
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
    /// The job's action type.
    pub action_type_id: ActionTypeId,
    /// The nonce of the job's dispatch, once a poll handed it out.
    pub nonce: Option<String>,
    /// How many polls handed the job out: more than one when its
    /// acknowledgement was overdue and a later poll offered it again.
    pub dispatches: u32,
    /// The failure details, once a failure result was received.
    pub failure: Option<FailureSnapshot>,
    /// For a continuation job: the id of the job whose continuation result created it.
    pub continuation_of: Option<String>,
    /// The account and region the job lives in (`accountId` and `region`).
    #[serde(flatten)]
    pub place: Place,
}

/// `JobData` / `ThirdPartyJobData` exactly as AWS serializes them.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JobData {
    pub action_type_id: ActionTypeId,
    pub action_configuration: ActionConfiguration,
    pub pipeline_context: PipelineContext,
    pub input_artifacts: Vec<Artifact>,
    pub output_artifacts: Vec<Artifact>,
    pub artifact_credentials: ArtifactCredentials,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub continuation_token: Option<String>,
    pub encryption_key: EncryptionKey,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct ActionConfiguration {
    pub configuration: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PipelineContext {
    pub pipeline_name: String,
    pub stage: NameContext,
    pub action: ActionContext,
    pub pipeline_arn: String,
    pub pipeline_execution_id: String,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct NameContext {
    pub name: String,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ActionContext {
    pub name: String,
    pub action_execution_id: String,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct Artifact {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    pub location: ArtifactLocation,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ArtifactLocation {
    #[serde(rename = "type")]
    pub location_type: &'static str,
    pub s3_location: S3Location,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct S3Location {
    pub bucket_name: String,
    pub object_key: String,
}

/// Fake, random per job; the gateway must treat them as secrets.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ArtifactCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct EncryptionKey {
    pub id: String,
    #[serde(rename = "type")]
    pub key_type: &'static str,
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
    pub nonce: Option<String>,
    /// When the latest poll handed the job out.
    pub dispatched_at: Option<Instant>,
    pub dispatches: u32,
    pub failure: Option<FailureSnapshot>,
    pub continuation_of: Option<String>,
    pub place: Place,
    pub data: JobData,
}

impl Job {
    pub fn snapshot(&self) -> JobSnapshot {
        JobSnapshot {
            job_id: self.id.clone(),
            kind: self.kind,
            state: self.state,
            results_received: self.results_received,
            continuation_token: self.continuation_token.clone(),
            action_type_id: self.data.action_type_id.clone(),
            nonce: self.nonce.clone(),
            dispatches: self.dispatches,
            failure: self.failure.clone(),
            continuation_of: self.continuation_of.clone(),
            place: self.place.clone(),
        }
    }

    /// The job data as AWS returns it (`JobData` / `ThirdPartyJobData`).
    pub fn data_json(&self) -> Value {
        serde_json::to_value(&self.data).expect("job data serializes")
    }

    fn created(&self) -> CreatedJob {
        CreatedJob {
            job_id: self.id.clone(),
            kind: self.kind,
            client_id: self.client_id.clone(),
            client_token: self.client_token.clone(),
            action_type_id: self.data.action_type_id.clone(),
            account_id: self.place.account_id.clone(),
            region: self.place.region.clone(),
        }
    }
}

/// Registered action types and all jobs, in creation order.
pub(crate) struct JobStore {
    /// Where jobs created without a place live, and what [`JobStore::get`] sees.
    home: Place,
    acknowledge_timeout: Duration,
    action_types: Vec<ActionTypeId>,
    jobs: Vec<Job>,
    index: HashMap<String, usize>,
}

impl Default for JobStore {
    fn default() -> Self {
        JobStore::new(crate::DEV_REGION, crate::DEFAULT_ACKNOWLEDGE_TIMEOUT)
    }
}

impl JobStore {
    /// An empty store for `region` with the two default action types
    /// registered, re-offering jobs not acknowledged within `acknowledge_timeout`.
    pub fn new(region: &str, acknowledge_timeout: Duration) -> JobStore {
        JobStore {
            home: Place::new(ACCOUNT_ID, region),
            acknowledge_timeout,
            action_types: vec![
                ActionTypeId::default_custom(),
                ActionTypeId::default_third_party(),
            ],
            jobs: Vec::new(),
            index: HashMap::new(),
        }
    }

    /// Creates a `Queued` job of the kind's default action type.
    pub fn create(&mut self, kind: JobKind) -> CreatedJob {
        self.create_job(NewJob {
            kind,
            ..NewJob::default()
        })
        .expect("default jobs are valid")
    }

    /// Creates a `Queued` job, registering its action type if needed.
    pub fn create_job(&mut self, new: NewJob) -> Result<CreatedJob, String> {
        let action_type_id = new
            .action_type_id
            .unwrap_or_else(|| new.kind.default_action_type());
        action_type_id.validate()?;
        if action_type_id.owner != new.kind.owner() {
            return Err(format!(
                "a {} job needs an action type with owner '{}', not '{}'",
                match new.kind {
                    JobKind::Custom => "custom",
                    JobKind::ThirdParty => "thirdParty",
                },
                new.kind.owner(),
                action_type_id.owner
            ));
        }
        let configuration = serde_json::to_value(&new.configuration).expect("map serializes");
        model()
            .validate_shape("ActionConfigurationMap", &configuration, "configuration")
            .map_err(|f| format!("invalid configuration: {}", f.message()))?;
        let pipeline_name = new
            .pipeline_name
            .unwrap_or_else(|| DEFAULT_PIPELINE_NAME.to_owned());
        model()
            .validate_shape(
                "PipelineName",
                &Value::String(pipeline_name.clone()),
                "pipelineName",
            )
            .map_err(|f| format!("invalid pipelineName: {}", f.message()))?;

        let place = new.place.unwrap_or_else(|| self.home.clone());
        if place.account_id.len() != 12 || !place.account_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "invalid accountId '{}': an AWS account id is 12 digits",
                place.account_id
            ));
        }
        if !crate::accounts::is_region_name(&place.region) {
            return Err(format!("invalid region '{}'", place.region));
        }
        self.register_action_type(action_type_id.clone());
        let data = new_job_data(&place, action_type_id, new.configuration, pipeline_name);
        let (client_id, client_token) = match new.kind {
            JobKind::Custom => (None, None),
            JobKind::ThirdParty => (
                Some(uuid::Uuid::new_v4().to_string()),
                Some(uuid::Uuid::new_v4().simple().to_string()),
            ),
        };
        let job = Job {
            id: uuid::Uuid::new_v4().to_string(),
            kind: new.kind,
            state: JobState::Queued,
            client_id,
            client_token,
            results_received: 0,
            continuation_token: None,
            nonce: None,
            dispatched_at: None,
            dispatches: 0,
            failure: None,
            continuation_of: None,
            place,
            data,
        };
        let created = job.created();
        self.insert(job);
        Ok(created)
    }

    /// Queues a continuation job of `job_id`: new id, same kind, client,
    /// action type, pipeline context, configuration and artifacts, fresh
    /// artifact credentials, and `continuationToken` set. Returns its id.
    pub fn create_continuation(&mut self, job_id: &str, token: &str) -> Option<String> {
        let original = self.get(job_id)?;
        let mut data = original.data.clone();
        data.continuation_token = Some(token.to_owned());
        data.artifact_credentials = fake_credentials();
        let job = Job {
            id: uuid::Uuid::new_v4().to_string(),
            kind: original.kind,
            state: JobState::Queued,
            client_id: original.client_id.clone(),
            client_token: original.client_token.clone(),
            results_received: 0,
            continuation_token: None,
            nonce: None,
            dispatched_at: None,
            dispatches: 0,
            failure: None,
            continuation_of: Some(original.id.clone()),
            place: original.place.clone(),
            data,
        };
        let id = job.id.clone();
        self.insert(job);
        Some(id)
    }

    fn insert(&mut self, job: Job) {
        self.index.insert(job.id.clone(), self.jobs.len());
        self.jobs.push(job);
    }

    /// Registers an action type; returns whether it was new. The caller validates it.
    pub fn register_action_type(&mut self, action_type_id: ActionTypeId) -> bool {
        if self.is_registered(&action_type_id) {
            return false;
        }
        self.action_types.push(action_type_id);
        true
    }

    pub fn is_registered(&self, action_type_id: &ActionTypeId) -> bool {
        self.action_types.contains(action_type_id)
    }

    /// Registered action types in registration order (the two defaults first).
    pub fn action_types(&self) -> &[ActionTypeId] {
        &self.action_types
    }

    /// The home account and region.
    pub fn home(&self) -> &Place {
        &self.home
    }

    /// Hands out up to `max` jobs in `place` of `kind` and exactly
    /// `action_type_id`, oldest first, that satisfy `filter` and are
    /// `Queued`, or `Dispatched` with the acknowledgement overdue at `now`:
    /// each becomes `Dispatched` with a fresh nonce, so an earlier nonce no
    /// longer acknowledges it.
    pub fn dispatch(
        &mut self,
        place: &Place,
        kind: JobKind,
        action_type_id: &ActionTypeId,
        max: usize,
        now: Instant,
        filter: impl Fn(&Job) -> bool,
    ) -> Vec<&Job> {
        let timeout = self.acknowledge_timeout;
        let available = |job: &Job| match job.state {
            JobState::Queued => true,
            JobState::Dispatched => job
                .dispatched_at
                .is_some_and(|at| now.saturating_duration_since(at) >= timeout),
            _ => false,
        };
        let picked: Vec<usize> = self
            .jobs
            .iter()
            .enumerate()
            .filter(|(_, j)| {
                j.kind == kind
                    && j.place == *place
                    && available(j)
                    && j.data.action_type_id == *action_type_id
                    && filter(j)
            })
            .map(|(i, _)| i)
            .take(max)
            .collect();
        for &i in &picked {
            let job = &mut self.jobs[i];
            job.state = JobState::Dispatched;
            job.nonce = Some(uuid::Uuid::new_v4().to_string());
            job.dispatched_at = Some(now);
            job.dispatches += 1;
        }
        picked.into_iter().map(|i| &self.jobs[i]).collect()
    }

    pub fn get(&self, id: &str) -> Option<&Job> {
        self.index.get(id).map(|&i| &self.jobs[i])
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut Job> {
        self.index.get(id).map(|&i| &mut self.jobs[i])
    }

    /// The job, if it lives in `place`: a job of another account or region
    /// does not exist for that caller, as in CodePipeline.
    pub fn get_in(&mut self, place: &Place, id: &str) -> Option<&mut Job> {
        self.get_mut(id).filter(|job| job.place == *place)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Job> {
        self.jobs.iter()
    }
}

/// Fresh job data for a new (non-continuation) job.
fn new_job_data(
    place: &Place,
    action_type_id: ActionTypeId,
    configuration: BTreeMap<String, String>,
    pipeline_name: String,
) -> JobData {
    let Place { account_id, region } = place;
    let bucket = format!("codepipeline-{region}-{account_id}");
    let artifact = |name: String, revision: Option<String>| {
        // Like AWS: <pipeline name, ≤20 chars>/<artifact name, ≤10 chars>/<random>.
        let object_key = format!(
            "{}/{}/{}",
            truncate(&pipeline_name, 20),
            truncate(&name, 10),
            random_string(7, ALNUM)
        );
        Artifact {
            name,
            revision,
            location: ArtifactLocation {
                location_type: "S3",
                s3_location: S3Location {
                    bucket_name: bucket.clone(),
                    object_key,
                },
            },
        }
    };
    // Source actions have no input artifacts; everything else consumes the source.
    let input_artifacts = if action_type_id.category == "Source" {
        Vec::new()
    } else {
        vec![artifact(
            "SourceOutput".to_owned(),
            Some(random_string(40, HEX)),
        )]
    };
    let output_artifacts = vec![artifact(format!("{}Output", action_type_id.category), None)];
    JobData {
        action_configuration: ActionConfiguration { configuration },
        pipeline_context: PipelineContext {
            pipeline_arn: format!("arn:aws:codepipeline:{region}:{account_id}:{pipeline_name}"),
            pipeline_name,
            stage: NameContext {
                name: action_type_id.category.clone(),
            },
            action: ActionContext {
                name: action_type_id.provider.clone(),
                action_execution_id: uuid::Uuid::new_v4().to_string(),
            },
            pipeline_execution_id: uuid::Uuid::new_v4().to_string(),
        },
        action_type_id,
        input_artifacts,
        output_artifacts,
        artifact_credentials: fake_credentials(),
        continuation_token: None,
        encryption_key: EncryptionKey {
            id: format!("arn:aws:kms:{region}:{account_id}:alias/aws/s3"),
            key_type: "KMS",
        },
    }
}

const HEX: &[u8] = b"0123456789abcdef";
const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const UPPER_ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const BASE64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Random session credentials shaped like STS's (`ASIA…` key id, 40-character
/// secret, long token). Not valid anywhere.
fn fake_credentials() -> ArtifactCredentials {
    ArtifactCredentials {
        access_key_id: format!("ASIA{}", random_string(16, UPPER_ALNUM)),
        secret_access_key: random_string(40, BASE64),
        session_token: format!("FwoGZXIvYXdzE{}", random_string(200, BASE64)),
    }
}

/// `len` characters drawn from `alphabet` using the random bits of UUID v4s
/// (the emulator needs no cryptographic quality, only uniqueness).
fn random_string(len: usize, alphabet: &[u8]) -> String {
    let mut out = String::with_capacity(len);
    while out.len() < len {
        let uuid = uuid::Uuid::new_v4();
        // Bytes 6 and 8 carry the version and variant bits.
        for (i, b) in uuid.as_bytes().iter().enumerate() {
            if i != 6 && i != 8 && out.len() < len {
                out.push(alphabet[usize::from(*b) % alphabet.len()] as char);
            }
        }
    }
    out
}

fn truncate(s: &str, max_chars: usize) -> &str {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_jobs_start_queued_with_lowercase_uuid_ids() {
        let mut store = JobStore::default();
        let custom = store.create(JobKind::Custom);
        let third = store.create(JobKind::ThirdParty);
        for id in [&custom.job_id, &third.job_id] {
            assert_eq!(id.len(), 36);
            assert_eq!(*id, id.to_lowercase());
            assert_eq!(store.get(id).unwrap().state, JobState::Queued);
        }
        assert!(custom.client_id.is_none() && custom.client_token.is_none());
        assert_eq!(custom.action_type_id, ActionTypeId::default_custom());
        assert_eq!(third.action_type_id, ActionTypeId::default_third_party());
        assert_eq!(third.client_id.as_deref().unwrap().len(), 36);
        assert_eq!(third.client_token.as_deref().unwrap().len(), 32);
        let ids: Vec<_> = store.iter().map(|j| j.id.clone()).collect();
        assert_eq!(ids, vec![custom.job_id, third.job_id]);
    }

    #[test]
    fn an_unacknowledged_job_is_offered_again_after_the_timeout_with_a_new_nonce() {
        let mut store = JobStore::new(crate::DEV_REGION, Duration::from_secs(30));
        let job = store.create(JobKind::Custom).job_id;
        let custom = ActionTypeId::default_custom();
        let home = store.home().clone();
        let start = Instant::now();
        let poll = |store: &mut JobStore, at: Instant| -> Vec<(String, String)> {
            store
                .dispatch(&home, JobKind::Custom, &custom, 10, at, |_| true)
                .into_iter()
                .map(|j| (j.id.clone(), j.nonce.clone().unwrap()))
                .collect()
        };
        let first = poll(&mut store, start);
        assert_eq!(first.len(), 1);
        // Within the timeout: nobody else gets it.
        assert!(poll(&mut store, start + Duration::from_millis(29_999)).is_empty());
        let second = poll(&mut store, start + Duration::from_secs(30));
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].0, job);
        assert_ne!(second[0].1, first[0].1, "a re-offered job has a new nonce");
        assert_eq!(store.get(&job).unwrap().snapshot().dispatches, 2);
        // Acknowledged jobs are never re-offered, however long they run.
        store.get_mut(&job).unwrap().state = JobState::InProgress;
        assert!(poll(&mut store, start + Duration::from_secs(3600)).is_empty());
    }

    #[test]
    fn job_data_passes_the_models_own_validation() {
        let mut store = JobStore::new("eu-west-1", crate::DEFAULT_ACKNOWLEDGE_TIMEOUT);
        let job = store
            .create_job(NewJob {
                kind: JobKind::ThirdParty,
                action_type_id: Some(ActionTypeId::new("Source", "ThirdParty", "Git", "2")),
                configuration: [("Repo".to_owned(), "a".repeat(1000))].into(),
                pipeline_name: Some("a-very-long-pipeline.name@with_all".to_owned()),
                place: None,
            })
            .unwrap();
        let cont = store.create_continuation(&job.job_id, "tok").unwrap();
        for id in [&job.job_id, &cont] {
            let data = store.get(id).unwrap().data_json();
            model().validate_shape("JobData", &data, "data").unwrap();
            model()
                .validate_shape("ThirdPartyJobData", &data, "data")
                .unwrap();
        }
        let data = store.get(&job.job_id).unwrap().data_json();
        assert_eq!(
            data["pipelineContext"]["pipelineArn"],
            "arn:aws:codepipeline:eu-west-1:123456789012:a-very-long-pipeline.name@with_all"
        );
        assert_eq!(data["inputArtifacts"], serde_json::json!([]));
        let key = data["outputArtifacts"][0]["location"]["s3Location"]["objectKey"]
            .as_str()
            .unwrap();
        assert!(key.starts_with("a-very-long-pipeline/SourceOutp/"), "{key}");
        assert!(data.get("continuationToken").is_none());
    }

    #[test]
    fn invalid_new_jobs_are_rejected_with_a_reason() {
        let mut store = JobStore::default();
        for (new, needle) in [
            (
                NewJob {
                    kind: JobKind::ThirdParty,
                    action_type_id: Some(ActionTypeId::default_custom()),
                    ..NewJob::default()
                },
                "owner 'ThirdParty'",
            ),
            (
                NewJob {
                    action_type_id: Some(ActionTypeId::new("Build", "Custom", "bad name", "1")),
                    ..NewJob::default()
                },
                "actionTypeId.provider",
            ),
            (
                NewJob {
                    configuration: [("k".to_owned(), String::new())].into(),
                    ..NewJob::default()
                },
                "configuration",
            ),
            (
                NewJob {
                    pipeline_name: Some("no spaces".to_owned()),
                    ..NewJob::default()
                },
                "pipelineName",
            ),
        ] {
            let err = store.create_job(new).unwrap_err();
            assert!(err.contains(needle), "{err}");
        }
        assert_eq!(store.iter().count(), 0);
        assert_eq!(store.action_types().len(), 2);
    }

    #[test]
    fn random_strings_use_the_alphabet_and_differ() {
        let a = random_string(100, HEX);
        assert_eq!(a.len(), 100);
        assert!(a.bytes().all(|b| HEX.contains(&b)));
        assert_ne!(a, random_string(100, HEX));
        assert_eq!(truncate("héllo", 2), "hé");
        assert_eq!(truncate("ab", 5), "ab");
    }
}
