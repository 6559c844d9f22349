//! The ten job-worker operations, one [`Operation`] impl each: its rules
//! (validation), the SDK call that sends it, and the response it answers.
//! Everything else about a call is generic over the trait.

use std::collections::HashMap;

use aws_sdk_codepipeline::{Client, operation::RequestId, types};

use crate::{
    aws::classify,
    call::CallError,
    client_tokens::{NeedsToken, WithToken},
    convert,
    operation::{Answer, Delivery, Operation, OperationId, PolledJob, Subject, Verb},
    proto::v1,
    validation::{Checker, InvalidRequest},
};

fn answer<T>(output: &impl RequestId, value: T) -> Answer<T> {
    Answer {
        request_id: output.request_id().map(str::to_owned),
        output: value,
    }
}

fn job(job_id: &str) -> Subject<'_> {
    Subject {
        job_id: Some(job_id),
        ..Subject::default()
    }
}

fn polled_type(poll: &Poll) -> Subject<'_> {
    Subject {
        action_type: Some(&poll.action_type_id),
        ..Subject::default()
    }
}

// --- the fields several operations share -------------------------------------

/// What a poll asks for.
pub struct Poll {
    pub action_type_id: types::ActionTypeId,
    pub max_batch_size: Option<i32>,
    pub query_param: Option<HashMap<String, String>>,
}

/// A custom job and its nonce.
pub struct Claim {
    pub job_id: String,
    pub nonce: String,
}

/// A custom job.
pub struct JobRef {
    pub job_id: String,
}

/// What a success result reports, beside the job (both kinds).
pub struct Success {
    pub current_revision: Option<types::CurrentRevision>,
    pub continuation_token: Option<String>,
    pub execution_details: Option<types::ExecutionDetails>,
}

/// A custom job's success result.
pub struct CustomSuccess {
    pub job_id: String,
    pub success: Success,
    pub output_variables: Option<HashMap<String, String>>,
}

/// A custom job's failure result.
pub struct CustomFailure {
    pub job_id: String,
    pub failure_details: types::FailureDetails,
}

impl Checker {
    fn success(
        &mut self,
        current_revision: Option<v1::CurrentRevision>,
        continuation_token: String,
        execution_details: Option<v1::ExecutionDetails>,
    ) -> Success {
        Success {
            current_revision: self.revision(current_revision),
            continuation_token: self.optional_text(
                "continuationToken",
                continuation_token,
                1,
                2048,
            ),
            execution_details: self.execution_details(execution_details),
        }
    }
}

// --- custom actions -------------------------------------------------------------

pub struct PollForJobs;

impl Operation for PollForJobs {
    const ID: OperationId = OperationId::PollForJobs;
    const VERB: Verb = Verb::Poll;
    type Request = v1::PollForJobsRequest;
    type Checked = Poll;
    type Valid = Poll;
    type Output = Vec<v1::Job>;
    type Response = v1::PollForJobsResponse;

    fn requested_target(r: &Self::Request) -> &str {
        &r.target
    }

    fn validate(r: Self::Request) -> Result<Poll, InvalidRequest> {
        let mut check = Checker::default();
        let action_type_id =
            check.action_type_id(r.action_type_id, v1::ActionOwner::Custom, "PollForJobs");
        let max_batch_size = check.max_batch_size(r.max_batch_size);
        let query_param = check.query_param(r.query_param);
        check.finish(|| {
            Some(Poll {
                action_type_id: action_type_id?,
                max_batch_size,
                query_param,
            })
        })
    }

    fn subject(poll: &Poll) -> Subject<'_> {
        polled_type(poll)
    }

    async fn send(client: &Client, poll: &Poll) -> Result<Answer<Self::Output>, CallError> {
        let output = client
            .poll_for_jobs()
            .action_type_id(poll.action_type_id.clone())
            .set_max_batch_size(poll.max_batch_size)
            .set_query_param(poll.query_param.clone())
            .send()
            .await
            .map_err(classify)?;
        let jobs = output.jobs().iter().map(convert::job_from).collect();
        Ok(answer(&output, jobs))
    }

    fn respond(jobs: Self::Output, delivery: Delivery) -> Self::Response {
        v1::PollForJobsResponse {
            jobs,
            aws_request_id: delivery.aws_request_id,
        }
    }

    fn mark_target(jobs: &mut Self::Output, target: &'static str) {
        for job in jobs {
            job.target = target.to_owned();
        }
    }

    fn polled(jobs: &Self::Output) -> Vec<PolledJob<'_>> {
        jobs.iter()
            .map(|job| PolledJob {
                job_id: &job.id,
                client_id: None,
            })
            .collect()
    }
}

pub struct AcknowledgeJob;

impl Operation for AcknowledgeJob {
    const ID: OperationId = OperationId::AcknowledgeJob;
    const VERB: Verb = Verb::Acknowledge;
    type Request = v1::AcknowledgeJobRequest;
    type Checked = Claim;
    type Valid = Claim;
    type Output = v1::JobStatus;
    type Response = v1::AcknowledgeJobResponse;

    fn requested_target(r: &Self::Request) -> &str {
        &r.target
    }

    fn validate(r: Self::Request) -> Result<Claim, InvalidRequest> {
        let mut check = Checker::default();
        let job_id = check.job_id("jobId", r.job_id);
        let nonce = check.nonce(r.nonce);
        check.finish(|| {
            Some(Claim {
                job_id: job_id?,
                nonce: nonce?,
            })
        })
    }

    fn subject(claim: &Claim) -> Subject<'_> {
        job(&claim.job_id)
    }

    async fn send(client: &Client, claim: &Claim) -> Result<Answer<Self::Output>, CallError> {
        let output = client
            .acknowledge_job()
            .job_id(&claim.job_id)
            .nonce(&claim.nonce)
            .send()
            .await
            .map_err(classify)?;
        Ok(answer(&output, convert::job_status_from(output.status())))
    }

    fn respond(status: Self::Output, delivery: Delivery) -> Self::Response {
        v1::AcknowledgeJobResponse {
            status: status.into(),
            aws_request_id: delivery.aws_request_id,
            earlier_attempt_may_have_been_applied: delivery.earlier_attempt_may_have_been_applied,
            replay: delivery.replay,
        }
    }
}

pub struct GetJobDetails;

impl Operation for GetJobDetails {
    const ID: OperationId = OperationId::GetJobDetails;
    const VERB: Verb = Verb::GetDetails;
    type Request = v1::GetJobDetailsRequest;
    type Checked = JobRef;
    type Valid = JobRef;
    type Output = Option<v1::JobDetails>;
    type Response = v1::GetJobDetailsResponse;

    fn requested_target(r: &Self::Request) -> &str {
        &r.target
    }

    fn validate(r: Self::Request) -> Result<JobRef, InvalidRequest> {
        let mut check = Checker::default();
        let job_id = check.job_id("jobId", r.job_id);
        check.finish(|| Some(JobRef { job_id: job_id? }))
    }

    fn subject(job_ref: &JobRef) -> Subject<'_> {
        job(&job_ref.job_id)
    }

    async fn send(client: &Client, job_ref: &JobRef) -> Result<Answer<Self::Output>, CallError> {
        let output = client
            .get_job_details()
            .job_id(&job_ref.job_id)
            .send()
            .await
            .map_err(classify)?;
        let details = output.job_details().map(convert::job_details_from);
        Ok(answer(&output, details))
    }

    fn respond(job_details: Self::Output, delivery: Delivery) -> Self::Response {
        v1::GetJobDetailsResponse {
            job_details,
            aws_request_id: delivery.aws_request_id,
        }
    }
}

pub struct PutJobSuccessResult;

impl Operation for PutJobSuccessResult {
    const ID: OperationId = OperationId::PutJobSuccessResult;
    const VERB: Verb = Verb::PutResult;
    type Request = v1::PutJobSuccessResultRequest;
    type Checked = CustomSuccess;
    type Valid = CustomSuccess;
    type Output = ();
    type Response = v1::PutJobSuccessResultResponse;

    fn requested_target(r: &Self::Request) -> &str {
        &r.target
    }

    fn validate(r: Self::Request) -> Result<CustomSuccess, InvalidRequest> {
        let mut check = Checker::default();
        let job_id = check.job_id("jobId", r.job_id);
        let continues = !r.continuation_token.is_empty();
        let success = check.success(
            r.current_revision,
            r.continuation_token,
            r.execution_details,
        );
        let output_variables = check.output_variables(r.output_variables, continues);
        check.finish(|| {
            Some(CustomSuccess {
                job_id: job_id?,
                success,
                output_variables,
            })
        })
    }

    fn subject(result: &CustomSuccess) -> Subject<'_> {
        job(&result.job_id)
    }

    async fn send(client: &Client, r: &CustomSuccess) -> Result<Answer<()>, CallError> {
        let output = client
            .put_job_success_result()
            .job_id(&r.job_id)
            .set_current_revision(r.success.current_revision.clone())
            .set_continuation_token(r.success.continuation_token.clone())
            .set_execution_details(r.success.execution_details.clone())
            .set_output_variables(r.output_variables.clone())
            .send()
            .await
            .map_err(classify)?;
        Ok(answer(&output, ()))
    }

    fn respond((): (), delivery: Delivery) -> Self::Response {
        v1::PutJobSuccessResultResponse {
            aws_request_id: delivery.aws_request_id,
            earlier_attempt_may_have_been_applied: delivery.earlier_attempt_may_have_been_applied,
            replay: delivery.replay,
        }
    }

    fn may_repeat_after_unknown_outcome(r: &CustomSuccess) -> bool {
        r.success.continuation_token.is_none()
    }
}

pub struct PutJobFailureResult;

impl Operation for PutJobFailureResult {
    const ID: OperationId = OperationId::PutJobFailureResult;
    const VERB: Verb = Verb::PutResult;
    type Request = v1::PutJobFailureResultRequest;
    type Checked = CustomFailure;
    type Valid = CustomFailure;
    type Output = ();
    type Response = v1::PutJobFailureResultResponse;

    fn requested_target(r: &Self::Request) -> &str {
        &r.target
    }

    fn validate(r: Self::Request) -> Result<CustomFailure, InvalidRequest> {
        let mut check = Checker::default();
        let job_id = check.job_id("jobId", r.job_id);
        let failure_details = check.failure_details(r.failure_details);
        check.finish(|| {
            Some(CustomFailure {
                job_id: job_id?,
                failure_details: failure_details?,
            })
        })
    }

    fn subject(result: &CustomFailure) -> Subject<'_> {
        job(&result.job_id)
    }

    async fn send(client: &Client, r: &CustomFailure) -> Result<Answer<()>, CallError> {
        let output = client
            .put_job_failure_result()
            .job_id(&r.job_id)
            .failure_details(r.failure_details.clone())
            .send()
            .await
            .map_err(classify)?;
        Ok(answer(&output, ()))
    }

    fn respond((): (), delivery: Delivery) -> Self::Response {
        v1::PutJobFailureResultResponse {
            aws_request_id: delivery.aws_request_id,
            earlier_attempt_may_have_been_applied: delivery.earlier_attempt_may_have_been_applied,
            replay: delivery.replay,
        }
    }
}

// --- partner (third-party) actions --------------------------------------------------

fn partner_job<B>(call: &NeedsToken<B>) -> Subject<'_> {
    Subject {
        job_id: Some(&call.job_id),
        partner_token: Some(&call.token),
        ..Subject::default()
    }
}

pub struct PollForThirdPartyJobs;

impl Operation for PollForThirdPartyJobs {
    const ID: OperationId = OperationId::PollForThirdPartyJobs;
    const VERB: Verb = Verb::Poll;
    type Request = v1::PollForThirdPartyJobsRequest;
    type Checked = Poll;
    type Valid = Poll;
    type Output = Vec<v1::ThirdPartyJob>;
    type Response = v1::PollForThirdPartyJobsResponse;

    fn requested_target(r: &Self::Request) -> &str {
        &r.target
    }

    fn validate(r: Self::Request) -> Result<Poll, InvalidRequest> {
        let mut check = Checker::default();
        let action_type_id = check.action_type_id(
            r.action_type_id,
            v1::ActionOwner::ThirdParty,
            "PollForThirdPartyJobs",
        );
        let max_batch_size = check.max_batch_size(r.max_batch_size);
        check.finish(|| {
            Some(Poll {
                action_type_id: action_type_id?,
                max_batch_size,
                query_param: None,
            })
        })
    }

    fn subject(poll: &Poll) -> Subject<'_> {
        polled_type(poll)
    }

    async fn send(client: &Client, poll: &Poll) -> Result<Answer<Self::Output>, CallError> {
        let output = client
            .poll_for_third_party_jobs()
            .action_type_id(poll.action_type_id.clone())
            .set_max_batch_size(poll.max_batch_size)
            .send()
            .await
            .map_err(classify)?;
        let jobs = output
            .jobs()
            .iter()
            .map(convert::third_party_job_from)
            .collect();
        Ok(answer(&output, jobs))
    }

    fn respond(jobs: Self::Output, delivery: Delivery) -> Self::Response {
        v1::PollForThirdPartyJobsResponse {
            jobs,
            aws_request_id: delivery.aws_request_id,
        }
    }

    fn mark_target(jobs: &mut Self::Output, target: &'static str) {
        for job in jobs {
            job.target = target.to_owned();
        }
    }

    fn polled(jobs: &Self::Output) -> Vec<PolledJob<'_>> {
        jobs.iter()
            .map(|job| PolledJob {
                job_id: &job.job_id,
                client_id: Some(&job.client_id),
            })
            .collect()
    }
}

pub struct AcknowledgeThirdPartyJob;

impl Operation for AcknowledgeThirdPartyJob {
    const ID: OperationId = OperationId::AcknowledgeThirdPartyJob;
    const VERB: Verb = Verb::Acknowledge;
    type Request = v1::AcknowledgeThirdPartyJobRequest;
    /// The nonce.
    type Checked = NeedsToken<String>;
    type Valid = WithToken<String>;
    type Output = v1::JobStatus;
    type Response = v1::AcknowledgeThirdPartyJobResponse;

    fn requested_target(r: &Self::Request) -> &str {
        &r.target
    }

    fn validate(r: Self::Request) -> Result<Self::Checked, InvalidRequest> {
        let mut check = Checker::default();
        let job_id = check.partner_job_id(r.job_id);
        let nonce = check.nonce(r.nonce);
        let token = check.client_token(r.client_token, r.client_id);
        check.finish(|| {
            Some(NeedsToken {
                job_id: job_id?,
                token: token?,
                body: nonce?,
            })
        })
    }

    fn subject(call: &Self::Checked) -> Subject<'_> {
        partner_job(call)
    }

    async fn send(client: &Client, r: &Self::Valid) -> Result<Answer<Self::Output>, CallError> {
        let output = client
            .acknowledge_third_party_job()
            .job_id(&r.job_id)
            .nonce(&r.body)
            .client_token(r.client_token.expose())
            .send()
            .await
            .map_err(classify)?;
        Ok(answer(&output, convert::job_status_from(output.status())))
    }

    fn respond(status: Self::Output, delivery: Delivery) -> Self::Response {
        v1::AcknowledgeThirdPartyJobResponse {
            status: status.into(),
            aws_request_id: delivery.aws_request_id,
            earlier_attempt_may_have_been_applied: delivery.earlier_attempt_may_have_been_applied,
            replay: delivery.replay,
        }
    }
}

pub struct GetThirdPartyJobDetails;

impl Operation for GetThirdPartyJobDetails {
    const ID: OperationId = OperationId::GetThirdPartyJobDetails;
    const VERB: Verb = Verb::GetDetails;
    type Request = v1::GetThirdPartyJobDetailsRequest;
    type Checked = NeedsToken<()>;
    type Valid = WithToken<()>;
    type Output = Option<v1::ThirdPartyJobDetails>;
    type Response = v1::GetThirdPartyJobDetailsResponse;

    fn requested_target(r: &Self::Request) -> &str {
        &r.target
    }

    fn validate(r: Self::Request) -> Result<Self::Checked, InvalidRequest> {
        let mut check = Checker::default();
        let job_id = check.partner_job_id(r.job_id);
        let token = check.client_token(r.client_token, r.client_id);
        check.finish(|| {
            Some(NeedsToken {
                job_id: job_id?,
                token: token?,
                body: (),
            })
        })
    }

    fn subject(call: &Self::Checked) -> Subject<'_> {
        partner_job(call)
    }

    async fn send(client: &Client, r: &Self::Valid) -> Result<Answer<Self::Output>, CallError> {
        let output = client
            .get_third_party_job_details()
            .job_id(&r.job_id)
            .client_token(r.client_token.expose())
            .send()
            .await
            .map_err(classify)?;
        let details = output
            .job_details()
            .map(convert::third_party_job_details_from);
        Ok(answer(&output, details))
    }

    fn respond(job_details: Self::Output, delivery: Delivery) -> Self::Response {
        v1::GetThirdPartyJobDetailsResponse {
            job_details,
            aws_request_id: delivery.aws_request_id,
        }
    }
}

pub struct PutThirdPartyJobSuccessResult;

impl Operation for PutThirdPartyJobSuccessResult {
    const ID: OperationId = OperationId::PutThirdPartyJobSuccessResult;
    const VERB: Verb = Verb::PutResult;
    type Request = v1::PutThirdPartyJobSuccessResultRequest;
    type Checked = NeedsToken<Success>;
    type Valid = WithToken<Success>;
    type Output = ();
    type Response = v1::PutThirdPartyJobSuccessResultResponse;

    fn requested_target(r: &Self::Request) -> &str {
        &r.target
    }

    fn validate(r: Self::Request) -> Result<Self::Checked, InvalidRequest> {
        let mut check = Checker::default();
        let job_id = check.partner_job_id(r.job_id);
        let token = check.client_token(r.client_token, r.client_id);
        let success = check.success(
            r.current_revision,
            r.continuation_token,
            r.execution_details,
        );
        check.finish(|| {
            Some(NeedsToken {
                job_id: job_id?,
                token: token?,
                body: success,
            })
        })
    }

    fn subject(call: &Self::Checked) -> Subject<'_> {
        partner_job(call)
    }

    async fn send(client: &Client, r: &Self::Valid) -> Result<Answer<()>, CallError> {
        let output = client
            .put_third_party_job_success_result()
            .job_id(&r.job_id)
            .client_token(r.client_token.expose())
            .set_current_revision(r.body.current_revision.clone())
            .set_continuation_token(r.body.continuation_token.clone())
            .set_execution_details(r.body.execution_details.clone())
            .send()
            .await
            .map_err(classify)?;
        Ok(answer(&output, ()))
    }

    fn respond((): (), delivery: Delivery) -> Self::Response {
        v1::PutThirdPartyJobSuccessResultResponse {
            aws_request_id: delivery.aws_request_id,
            earlier_attempt_may_have_been_applied: delivery.earlier_attempt_may_have_been_applied,
            replay: delivery.replay,
        }
    }

    fn may_repeat_after_unknown_outcome(r: &Self::Valid) -> bool {
        r.body.continuation_token.is_none()
    }
}

pub struct PutThirdPartyJobFailureResult;

impl Operation for PutThirdPartyJobFailureResult {
    const ID: OperationId = OperationId::PutThirdPartyJobFailureResult;
    const VERB: Verb = Verb::PutResult;
    type Request = v1::PutThirdPartyJobFailureResultRequest;
    type Checked = NeedsToken<types::FailureDetails>;
    type Valid = WithToken<types::FailureDetails>;
    type Output = ();
    type Response = v1::PutThirdPartyJobFailureResultResponse;

    fn requested_target(r: &Self::Request) -> &str {
        &r.target
    }

    fn validate(r: Self::Request) -> Result<Self::Checked, InvalidRequest> {
        let mut check = Checker::default();
        let job_id = check.partner_job_id(r.job_id);
        let token = check.client_token(r.client_token, r.client_id);
        let failure_details = check.failure_details(r.failure_details);
        check.finish(|| {
            Some(NeedsToken {
                job_id: job_id?,
                token: token?,
                body: failure_details?,
            })
        })
    }

    fn subject(call: &Self::Checked) -> Subject<'_> {
        partner_job(call)
    }

    async fn send(client: &Client, r: &Self::Valid) -> Result<Answer<()>, CallError> {
        let output = client
            .put_third_party_job_failure_result()
            .job_id(&r.job_id)
            .client_token(r.client_token.expose())
            .failure_details(r.body.clone())
            .send()
            .await
            .map_err(classify)?;
        Ok(answer(&output, ()))
    }

    fn respond((): (), delivery: Delivery) -> Self::Response {
        v1::PutThirdPartyJobFailureResultResponse {
            aws_request_id: delivery.aws_request_id,
            earlier_attempt_may_have_been_applied: delivery.earlier_attempt_may_have_been_applied,
            replay: delivery.replay,
        }
    }
}
