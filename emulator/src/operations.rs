//! The emulated CodePipeline operations: one handler per operation, each
//! applying an already-validated JSON input to the job store.
//!
//! All ten job-worker operations are implemented. Inputs have passed model
//! validation when a handler runs, so handlers only implement service
//! semantics; [`dispatch`] checks every output against the model.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::model::model;
use crate::state::{ActionTypeId, FailureSnapshot, Job, JobKind, JobState, JobStore, Place};

/// Largest total size (bytes of all keys and values) of `outputVariables`.
pub(crate) const MAX_OUTPUT_VARIABLES_BYTES: usize = 122_880;

/// An AWS error response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AwsError {
    pub status: u16,
    pub error_type: String,
    pub message: String,
}

impl AwsError {
    pub fn new(status: u16, error_type: &str, message: impl Into<String>) -> AwsError {
        AwsError {
            status,
            error_type: error_type.to_owned(),
            message: message.into(),
        }
    }

    /// HTTP 400.
    pub fn client(error_type: &str, message: impl Into<String>) -> AwsError {
        AwsError::new(400, error_type, message)
    }

    /// The JSON body: `{"__type": …, "message": …}`.
    pub fn body(&self) -> Value {
        json!({"__type": self.error_type, "message": self.message})
    }
}

/// [`dispatch_in`] for a caller of the home account and region.
#[cfg(test)]
pub(crate) fn dispatch(
    operation: &str,
    jobs: &mut JobStore,
    input: &Value,
) -> Result<Value, AwsError> {
    let home = jobs.home().clone();
    dispatch_in(operation, jobs, &home, input)
}

/// Runs one operation, for a caller signed for `place`, against the job
/// store and returns its JSON output, which is checked against the model's
/// output shape (a mismatch is an emulator bug and answers 500
/// `InternalFailure`).
pub(crate) fn dispatch_in(
    operation: &str,
    jobs: &mut JobStore,
    place: &Place,
    input: &Value,
) -> Result<Value, AwsError> {
    let output = match operation {
        "PutJobSuccessResult" => put_job_success_result(jobs, place, parse(input)?),
        "PutThirdPartyJobSuccessResult" => {
            put_third_party_job_success_result(jobs, place, parse(input)?)
        }
        "PutJobFailureResult" => put_job_failure_result(jobs, place, parse(input)?),
        "PutThirdPartyJobFailureResult" => {
            put_third_party_job_failure_result(jobs, place, parse(input)?)
        }
        "PollForJobs" => poll_for_jobs(jobs, place, parse(input)?),
        "PollForThirdPartyJobs" => poll_for_third_party_jobs(jobs, place, parse(input)?),
        "AcknowledgeJob" => acknowledge_job(jobs, place, parse(input)?),
        "AcknowledgeThirdPartyJob" => acknowledge_third_party_job(jobs, place, parse(input)?),
        "GetJobDetails" => get_job_details(jobs, place, parse(input)?),
        "GetThirdPartyJobDetails" => get_third_party_job_details(jobs, place, parse(input)?),
        other => Err(AwsError::client(
            "UnknownOperationException",
            format!("The emulator does not implement {other}."),
        )),
    }?;
    model().validate_output(operation, &output).map_err(|f| {
        AwsError::new(
            500,
            "InternalFailure",
            format!(
                "emulator produced output that violates the model: {}",
                f.message()
            ),
        )
    })?;
    Ok(output)
}

fn parse<T: for<'de> Deserialize<'de>>(input: &Value) -> Result<T, AwsError> {
    // The model validator already checked types, so this only fails on a model/handler mismatch.
    T::deserialize(input).map_err(|e| {
        AwsError::new(
            500,
            "InternalFailure",
            format!("emulator could not read validated input: {e}"),
        )
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PutJobSuccessResultInput {
    job_id: String,
    continuation_token: Option<String>,
    output_variables: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PutThirdPartyJobSuccessResultInput {
    job_id: String,
    client_token: String,
    continuation_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FailureDetailsInput {
    #[serde(rename = "type")]
    failure_type: String,
    message: String,
    external_execution_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PutJobFailureResultInput {
    job_id: String,
    failure_details: FailureDetailsInput,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PutThirdPartyJobFailureResultInput {
    job_id: String,
    client_token: String,
    failure_details: FailureDetailsInput,
}

/// `ActionTypeId` as it arrives in a request (unknown members are ignored, as by AWS).
#[derive(Deserialize)]
struct ActionTypeIdInput {
    category: String,
    owner: String,
    provider: String,
    version: String,
}

impl From<ActionTypeIdInput> for ActionTypeId {
    fn from(i: ActionTypeIdInput) -> ActionTypeId {
        ActionTypeId::new(i.category, i.owner, i.provider, i.version)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PollForJobsInput {
    action_type_id: ActionTypeIdInput,
    max_batch_size: Option<i64>,
    query_param: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PollForThirdPartyJobsInput {
    action_type_id: ActionTypeIdInput,
    max_batch_size: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AcknowledgeJobInput {
    job_id: String,
    nonce: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AcknowledgeThirdPartyJobInput {
    job_id: String,
    nonce: String,
    client_token: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetJobDetailsInput {
    job_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetThirdPartyJobDetailsInput {
    job_id: String,
    client_token: String,
}

fn put_job_success_result(
    jobs: &mut JobStore,
    place: &Place,
    input: PutJobSuccessResultInput,
) -> Result<Value, AwsError> {
    if input.output_variables.is_some() && input.continuation_token.is_some() {
        return Err(AwsError::client(
            "ValidationException",
            "outputVariables can only be included when there is no continuation token on the request.",
        ));
    }
    let job = find_job(jobs, place, &input.job_id, JobKind::Custom)?;
    ensure_open(job)?;
    if let Some(vars) = &input.output_variables {
        let size: usize = vars.iter().map(|(k, v)| k.len() + v.len()).sum();
        if size > MAX_OUTPUT_VARIABLES_BYTES {
            return Err(AwsError::client(
                "OutputVariablesSizeExceededException",
                format!(
                    "The total size of the output variables ({size} bytes) exceeds the limit of {MAX_OUTPUT_VARIABLES_BYTES} bytes."
                ),
            ));
        }
    }
    record_success(jobs, &input.job_id, input.continuation_token);
    Ok(json!({}))
}

fn put_third_party_job_success_result(
    jobs: &mut JobStore,
    place: &Place,
    input: PutThirdPartyJobSuccessResultInput,
) -> Result<Value, AwsError> {
    let job = find_job(jobs, place, &input.job_id, JobKind::ThirdParty)?;
    check_client_token(job, &input.client_token)?;
    ensure_open(job)?;
    record_success(jobs, &input.job_id, input.continuation_token);
    Ok(json!({}))
}

fn put_job_failure_result(
    jobs: &mut JobStore,
    place: &Place,
    input: PutJobFailureResultInput,
) -> Result<Value, AwsError> {
    let job = find_job(jobs, place, &input.job_id, JobKind::Custom)?;
    ensure_open(job)?;
    record_failure(job, input.failure_details);
    Ok(json!({}))
}

fn put_third_party_job_failure_result(
    jobs: &mut JobStore,
    place: &Place,
    input: PutThirdPartyJobFailureResultInput,
) -> Result<Value, AwsError> {
    let job = find_job(jobs, place, &input.job_id, JobKind::ThirdParty)?;
    check_client_token(job, &input.client_token)?;
    ensure_open(job)?;
    record_failure(job, input.failure_details);
    Ok(json!({}))
}

fn poll_for_jobs(
    jobs: &mut JobStore,
    place: &Place,
    input: PollForJobsInput,
) -> Result<Value, AwsError> {
    let action_type_id = pollable_action_type(jobs, input.action_type_id, JobKind::Custom)?;
    let max = batch_size(input.max_batch_size);
    let query = input.query_param.unwrap_or_default();
    let dispatched = jobs.dispatch(
        place,
        JobKind::Custom,
        &action_type_id,
        max,
        Instant::now(),
        |job| {
            query
                .iter()
                .all(|(k, v)| job.data.action_configuration.configuration.get(k) == Some(v))
        },
    );
    let list: Vec<Value> = dispatched
        .into_iter()
        .map(|job| {
            json!({
                "id": job.id,
                "data": job.data_json(),
                "nonce": job.nonce,
                "accountId": job.place.account_id,
            })
        })
        .collect();
    Ok(json!({ "jobs": list }))
}

fn poll_for_third_party_jobs(
    jobs: &mut JobStore,
    place: &Place,
    input: PollForThirdPartyJobsInput,
) -> Result<Value, AwsError> {
    let action_type_id = pollable_action_type(jobs, input.action_type_id, JobKind::ThirdParty)?;
    let max = batch_size(input.max_batch_size);
    let dispatched = jobs.dispatch(
        place,
        JobKind::ThirdParty,
        &action_type_id,
        max,
        Instant::now(),
        |_| true,
    );
    let list: Vec<Value> = dispatched
        .into_iter()
        .map(|job| json!({ "clientId": job.client_id, "jobId": job.id }))
        .collect();
    Ok(json!({ "jobs": list }))
}

fn acknowledge_job(
    jobs: &mut JobStore,
    place: &Place,
    input: AcknowledgeJobInput,
) -> Result<Value, AwsError> {
    let job = find_job(jobs, place, &input.job_id, JobKind::Custom)?;
    acknowledge(job, &input.nonce)
}

fn acknowledge_third_party_job(
    jobs: &mut JobStore,
    place: &Place,
    input: AcknowledgeThirdPartyJobInput,
) -> Result<Value, AwsError> {
    let job = find_job(jobs, place, &input.job_id, JobKind::ThirdParty)?;
    check_client_token(job, &input.client_token)?;
    acknowledge(job, &input.nonce)
}

fn get_job_details(
    jobs: &mut JobStore,
    place: &Place,
    input: GetJobDetailsInput,
) -> Result<Value, AwsError> {
    let job = find_job(jobs, place, &input.job_id, JobKind::Custom)?;
    Ok(json!({
        "jobDetails": {"id": job.id, "data": job.data_json(), "accountId": job.place.account_id}
    }))
}

fn get_third_party_job_details(
    jobs: &mut JobStore,
    place: &Place,
    input: GetThirdPartyJobDetailsInput,
) -> Result<Value, AwsError> {
    let job = jobs
        .get_in(place, &input.job_id)
        .ok_or_else(job_not_found)?;
    if job.kind != JobKind::ThirdParty {
        return Err(AwsError::client(
            "InvalidJobException",
            "The job is not a third-party job.",
        ));
    }
    check_client_token(job, &input.client_token)?;
    let mut details = json!({"id": job.id, "data": job.data_json()});
    if let Some(nonce) = &job.nonce {
        details["nonce"] = json!(nonce);
    }
    Ok(json!({ "jobDetails": details }))
}

fn job_not_found() -> AwsError {
    AwsError::client("JobNotFoundException", "The job was not found.")
}

/// Looks a job up; a job of the other kind does not exist for this operation.
fn find_job<'a>(
    jobs: &'a mut JobStore,
    place: &Place,
    id: &str,
    kind: JobKind,
) -> Result<&'a mut Job, AwsError> {
    jobs.get_in(place, id)
        .filter(|j| j.kind == kind)
        .ok_or_else(job_not_found)
}

fn check_client_token(job: &Job, client_token: &str) -> Result<(), AwsError> {
    if job.client_token.as_deref() == Some(client_token) {
        Ok(())
    } else {
        Err(AwsError::client(
            "InvalidClientTokenException",
            "The client token does not match the job.",
        ))
    }
}

fn ensure_open(job: &Job) -> Result<(), AwsError> {
    if job.state.is_open() {
        Ok(())
    } else {
        Err(AwsError::client(
            "InvalidJobStateException",
            format!(
                "The job is {:?} and cannot accept another result.",
                job.state
            ),
        ))
    }
}

/// The owner must be the one the poll operation serves (→ `ValidationException`)
/// and the action type must be registered (→ `ActionTypeNotFoundException`).
fn pollable_action_type(
    jobs: &JobStore,
    input: ActionTypeIdInput,
    kind: JobKind,
) -> Result<ActionTypeId, AwsError> {
    let action_type_id = ActionTypeId::from(input);
    if action_type_id.owner != kind.owner() {
        let (operation, other) = match kind {
            JobKind::Custom => ("PollForJobs", "PollForThirdPartyJobs"),
            JobKind::ThirdParty => ("PollForThirdPartyJobs", "PollForJobs"),
        };
        return Err(AwsError::client(
            "ValidationException",
            format!(
                "{operation} only serves action types with owner {}; use {other} for the others.",
                kind.owner()
            ),
        ));
    }
    if !jobs.is_registered(&action_type_id) {
        return Err(AwsError::client(
            "ActionTypeNotFoundException",
            "The specified action type cannot be found.",
        ));
    }
    Ok(action_type_id)
}

/// `maxBatchSize` (validated ≥ 1), default 1.
fn batch_size(max_batch_size: Option<i64>) -> usize {
    max_batch_size
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
        .unwrap_or(1)
}

/// Only a `Dispatched` job with the dispatch's nonce can be acknowledged.
fn acknowledge(job: &mut Job, nonce: &str) -> Result<Value, AwsError> {
    if job.state != JobState::Dispatched {
        return Err(AwsError::client(
            "InvalidNonceException",
            format!(
                "The job is {:?}, not waiting for acknowledgement; the nonce is not valid.",
                job.state
            ),
        ));
    }
    if job.nonce.as_deref() != Some(nonce) {
        return Err(AwsError::client(
            "InvalidNonceException",
            "The nonce does not match the job's dispatch.",
        ));
    }
    job.state = JobState::InProgress;
    Ok(json!({"status": "InProgress"}))
}

/// A success result closes the job. With a continuation token it also queues
/// a continuation job carrying the token, as CodePipeline does: the action
/// goes on in that new job, not in this one.
fn record_success(jobs: &mut JobStore, job_id: &str, continuation_token: Option<String>) {
    let Some(job) = jobs.get_mut(job_id) else {
        return;
    };
    job.results_received += 1;
    job.state = JobState::Succeeded;
    if let Some(token) = continuation_token {
        job.continuation_token = Some(token.clone());
        jobs.create_continuation(job_id, &token);
    }
}

fn record_failure(job: &mut Job, details: FailureDetailsInput) {
    job.results_received += 1;
    job.state = JobState::Failed;
    job.failure = Some(FailureSnapshot {
        failure_type: details.failure_type,
        message: details.message,
        external_execution_id: details.external_execution_id,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err_type(r: Result<Value, AwsError>) -> String {
        r.unwrap_err().error_type
    }

    #[test]
    fn custom_job_success_and_state_rules() {
        let mut jobs = JobStore::default();
        let job = jobs.create(JobKind::Custom);
        let third = jobs.create(JobKind::ThirdParty);
        let put = |jobs: &mut JobStore, input: Value| dispatch("PutJobSuccessResult", jobs, &input);

        assert_eq!(
            err_type(put(
                &mut jobs,
                json!({"jobId": "00000000-0000-4000-8000-000000000000"})
            )),
            "JobNotFoundException"
        );
        assert_eq!(
            err_type(put(&mut jobs, json!({"jobId": third.job_id}))),
            "JobNotFoundException"
        );
        assert_eq!(
            err_type(put(
                &mut jobs,
                json!({"jobId": job.job_id, "continuationToken": "t0", "outputVariables": {"a": "b"}})
            )),
            "ValidationException"
        );
        // A continuation closes the job, and the action goes on in a new one.
        put(
            &mut jobs,
            json!({"jobId": job.job_id, "continuationToken": "t1"}),
        )
        .unwrap();
        let snap = jobs.get(&job.job_id).unwrap().snapshot();
        assert_eq!(
            (snap.state, snap.results_received),
            (JobState::Succeeded, 1)
        );
        assert_eq!(snap.continuation_token.as_deref(), Some("t1"));
        assert_eq!(
            err_type(put(&mut jobs, json!({"jobId": job.job_id}))),
            "InvalidJobStateException"
        );
        let continuation = jobs
            .iter()
            .find(|j| j.continuation_of.as_deref() == Some(job.job_id.as_str()))
            .map(|j| j.id.clone())
            .expect("a continuation job");
        put(
            &mut jobs,
            json!({"jobId": continuation, "outputVariables": {"a": "b"}}),
        )
        .unwrap();
        let snap = jobs.get(&continuation).unwrap().snapshot();
        assert_eq!(
            (snap.state, snap.results_received),
            (JobState::Succeeded, 1)
        );
    }

    #[test]
    fn output_variables_size_limit_counts_key_and_value_bytes() {
        let mut jobs = JobStore::default();
        let job = jobs.create(JobKind::Custom);
        // "k" + value = exactly the limit: accepted would close the job, so test over-limit first.
        let over = "x".repeat(MAX_OUTPUT_VARIABLES_BYTES); // + 1 byte key
        let r = dispatch(
            "PutJobSuccessResult",
            &mut jobs,
            &json!({"jobId": job.job_id, "outputVariables": {"k": over}}),
        );
        assert_eq!(err_type(r), "OutputVariablesSizeExceededException");
        assert_eq!(jobs.get(&job.job_id).unwrap().results_received, 0);
        let exact = "x".repeat(MAX_OUTPUT_VARIABLES_BYTES - 1);
        dispatch(
            "PutJobSuccessResult",
            &mut jobs,
            &json!({"jobId": job.job_id, "outputVariables": {"k": exact}}),
        )
        .unwrap();
    }

    #[test]
    fn third_party_success_checks_client_token_after_existence() {
        let mut jobs = JobStore::default();
        let custom = jobs.create(JobKind::Custom);
        let job = jobs.create(JobKind::ThirdParty);
        let token = job.client_token.clone().unwrap();
        let put = |jobs: &mut JobStore, input: Value| {
            dispatch("PutThirdPartyJobSuccessResult", jobs, &input)
        };
        assert_eq!(
            err_type(put(
                &mut jobs,
                json!({"jobId": "nope", "clientToken": "wrong"})
            )),
            "JobNotFoundException"
        );
        assert_eq!(
            err_type(put(
                &mut jobs,
                json!({"jobId": custom.job_id, "clientToken": token})
            )),
            "JobNotFoundException"
        );
        assert_eq!(
            err_type(put(
                &mut jobs,
                json!({"jobId": job.job_id, "clientToken": "wrong"})
            )),
            "InvalidClientTokenException"
        );
        put(
            &mut jobs,
            json!({"jobId": job.job_id, "clientToken": token}),
        )
        .unwrap();
        assert_eq!(jobs.get(&job.job_id).unwrap().state, JobState::Succeeded);
        assert_eq!(
            err_type(put(
                &mut jobs,
                json!({"jobId": job.job_id, "clientToken": token})
            )),
            "InvalidJobStateException"
        );
    }

    #[test]
    fn unknown_operations_are_rejected() {
        let r = dispatch("ListPipelines", &mut JobStore::default(), &json!({}));
        assert_eq!(err_type(r), "UnknownOperationException");
    }

    #[test]
    fn lifecycle_states_and_continuations_in_the_store() {
        let mut jobs = JobStore::default();
        let job = jobs.create(JobKind::Custom);
        let t = json!({"category": "Build", "owner": "Custom", "provider": "CpgwDevBuilder", "version": "1"});
        let out = dispatch("PollForJobs", &mut jobs, &json!({ "actionTypeId": t })).unwrap();
        let nonce = out["jobs"][0]["nonce"].as_str().unwrap().to_owned();
        assert_eq!(jobs.get(&job.job_id).unwrap().state, JobState::Dispatched);
        // Unknown members in a request's actionTypeId are ignored, as by AWS.
        let mut t2 = t.clone();
        t2["future"] = json!("x");
        let out = dispatch("PollForJobs", &mut jobs, &json!({ "actionTypeId": t2 })).unwrap();
        assert_eq!(out, json!({"jobs": []}));
        dispatch(
            "AcknowledgeJob",
            &mut jobs,
            &json!({"jobId": job.job_id, "nonce": nonce}),
        )
        .unwrap();
        dispatch(
            "PutJobSuccessResult",
            &mut jobs,
            &json!({"jobId": job.job_id, "continuationToken": "c1"}),
        )
        .unwrap();
        let ids: Vec<_> = jobs.iter().map(|j| j.id.clone()).collect();
        assert_eq!(ids.len(), 2);
        let cont = jobs.get(&ids[1]).unwrap();
        assert_eq!(cont.continuation_of.as_deref(), Some(job.job_id.as_str()));
        assert_eq!(cont.data.continuation_token.as_deref(), Some("c1"));
        assert_eq!(cont.state, JobState::Queued);
        dispatch(
            "PutJobFailureResult",
            &mut jobs,
            &json!({"jobId": ids[1], "failureDetails": {"type": "JobFailed", "message": "m"}}),
        )
        .unwrap();
        assert_eq!(jobs.get(&ids[1]).unwrap().state, JobState::Failed);
        // A failure result queues nothing.
        assert_eq!(jobs.iter().count(), 2);
    }
}
