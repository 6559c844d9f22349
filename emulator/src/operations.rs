//! The emulated CodePipeline operations: one handler per operation, each
//! applying an already-validated JSON input to the job store.
//!
//! To add an operation: write a handler with the same signature and add it to
//! [`dispatch`]. Inputs have passed model validation when a handler runs, so
//! handlers only implement service semantics.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::state::{Job, JobKind, JobState, JobStore};

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

/// Runs one operation against the job store and returns its JSON output.
pub(crate) fn dispatch(
    operation: &str,
    jobs: &mut JobStore,
    input: &Value,
) -> Result<Value, AwsError> {
    match operation {
        "PutJobSuccessResult" => put_job_success_result(jobs, parse(input)?),
        "PutThirdPartyJobSuccessResult" => put_third_party_job_success_result(jobs, parse(input)?),
        other => Err(AwsError::client(
            "UnknownOperationException",
            format!("The emulator does not implement {other} yet."),
        )),
    }
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

fn put_job_success_result(
    jobs: &mut JobStore,
    input: PutJobSuccessResultInput,
) -> Result<Value, AwsError> {
    if input.output_variables.is_some() && input.continuation_token.is_some() {
        return Err(AwsError::client(
            "ValidationException",
            "outputVariables can only be included when there is no continuation token on the request.",
        ));
    }
    let job = find_job(jobs, &input.job_id, JobKind::Custom)?;
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
    record_success(job, input.continuation_token);
    Ok(json!({}))
}

fn put_third_party_job_success_result(
    jobs: &mut JobStore,
    input: PutThirdPartyJobSuccessResultInput,
) -> Result<Value, AwsError> {
    let job = find_job(jobs, &input.job_id, JobKind::ThirdParty)?;
    if job.client_token.as_deref() != Some(input.client_token.as_str()) {
        return Err(AwsError::client(
            "InvalidClientTokenException",
            "The client token does not match the job.",
        ));
    }
    ensure_open(job)?;
    record_success(job, input.continuation_token);
    Ok(json!({}))
}

/// Looks a job up; a job of the other kind does not exist for this operation.
fn find_job<'a>(jobs: &'a mut JobStore, id: &str, kind: JobKind) -> Result<&'a mut Job, AwsError> {
    jobs.get_mut(id)
        .filter(|j| j.kind == kind)
        .ok_or_else(|| AwsError::client("JobNotFoundException", "The job was not found."))
}

fn ensure_open(job: &Job) -> Result<(), AwsError> {
    match job.state {
        JobState::InProgress => Ok(()),
        done => Err(AwsError::client(
            "InvalidJobStateException",
            format!("The job is {done:?} and cannot accept another result."),
        )),
    }
}

/// A continuation keeps the job open; a final success closes it.
fn record_success(job: &mut Job, continuation_token: Option<String>) {
    job.results_received += 1;
    match continuation_token {
        Some(token) => job.continuation_token = Some(token),
        None => job.state = JobState::Succeeded,
    }
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
        put(
            &mut jobs,
            json!({"jobId": job.job_id, "continuationToken": "t1"}),
        )
        .unwrap();
        let snap = jobs.get(&job.job_id).unwrap().snapshot();
        assert_eq!(
            (snap.state, snap.results_received),
            (JobState::InProgress, 1)
        );
        assert_eq!(snap.continuation_token.as_deref(), Some("t1"));
        assert_eq!(
            err_type(put(
                &mut jobs,
                json!({"jobId": job.job_id, "continuationToken": "t2", "outputVariables": {"a": "b"}})
            )),
            "ValidationException"
        );
        put(
            &mut jobs,
            json!({"jobId": job.job_id, "outputVariables": {"a": "b"}}),
        )
        .unwrap();
        let snap = jobs.get(&job.job_id).unwrap().snapshot();
        assert_eq!(
            (snap.state, snap.results_received),
            (JobState::Succeeded, 2)
        );
        assert_eq!(
            err_type(put(&mut jobs, json!({"jobId": job.job_id}))),
            "InvalidJobStateException"
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
    fn unimplemented_operations_are_rejected() {
        let r = dispatch("GetJobDetails", &mut JobStore::default(), &json!({}));
        assert_eq!(err_type(r), "UnknownOperationException");
    }
}
