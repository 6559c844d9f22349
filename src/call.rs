//! The unit of work that flows through the forwarding stack
//! (rate limit → retry → AWS), and what comes back out of it.
//!
//! These types know nothing about gRPC: `error.rs` turns a [`CallError`] into a
//! `tonic::Status` in one place.

use std::{fmt, sync::Arc, time::Duration};

use tokio::time::Instant;

use crate::proto::v1;

/// The CodePipeline operations the gateway forwards. Rate limits, metrics and
/// logs are kept per operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    PollForJobs,
    AcknowledgeJob,
    GetJobDetails,
    PutJobSuccessResult,
    PutJobFailureResult,
    PollForThirdPartyJobs,
    AcknowledgeThirdPartyJob,
    GetThirdPartyJobDetails,
    PutThirdPartyJobSuccessResult,
    PutThirdPartyJobFailureResult,
}

impl Operation {
    pub const ALL: [Operation; 10] = [
        Operation::PollForJobs,
        Operation::AcknowledgeJob,
        Operation::GetJobDetails,
        Operation::PutJobSuccessResult,
        Operation::PutJobFailureResult,
        Operation::PollForThirdPartyJobs,
        Operation::AcknowledgeThirdPartyJob,
        Operation::GetThirdPartyJobDetails,
        Operation::PutThirdPartyJobSuccessResult,
        Operation::PutThirdPartyJobFailureResult,
    ];

    /// The AWS operation name, as in `X-Amz-Target` and IAM actions.
    pub fn name(self) -> &'static str {
        match self {
            Operation::PollForJobs => "PollForJobs",
            Operation::AcknowledgeJob => "AcknowledgeJob",
            Operation::GetJobDetails => "GetJobDetails",
            Operation::PutJobSuccessResult => "PutJobSuccessResult",
            Operation::PutJobFailureResult => "PutJobFailureResult",
            Operation::PollForThirdPartyJobs => "PollForThirdPartyJobs",
            Operation::AcknowledgeThirdPartyJob => "AcknowledgeThirdPartyJob",
            Operation::GetThirdPartyJobDetails => "GetThirdPartyJobDetails",
            Operation::PutThirdPartyJobSuccessResult => "PutThirdPartyJobSuccessResult",
            Operation::PutThirdPartyJobFailureResult => "PutThirdPartyJobFailureResult",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A validated request, ready to forward. Cloning is cheap (the body is shared),
/// because the retry layer keeps a copy for each further attempt.
/// Third-party requests hold the client token the gateway resolved, which
/// may differ from the (possibly empty) one in the caller's message.
#[derive(Clone)]
pub enum AwsRequest {
    PollForJobs(Arc<v1::PollForJobsRequest>),
    AcknowledgeJob(Arc<v1::AcknowledgeJobRequest>),
    GetJobDetails(Arc<v1::GetJobDetailsRequest>),
    PutJobSuccessResult(Arc<v1::PutJobSuccessResultRequest>),
    PutJobFailureResult(Arc<v1::PutJobFailureResultRequest>),
    PollForThirdPartyJobs(Arc<v1::PollForThirdPartyJobsRequest>),
    AcknowledgeThirdPartyJob(Arc<v1::AcknowledgeThirdPartyJobRequest>),
    GetThirdPartyJobDetails(Arc<v1::GetThirdPartyJobDetailsRequest>),
    PutThirdPartyJobSuccessResult(Arc<v1::PutThirdPartyJobSuccessResultRequest>),
    PutThirdPartyJobFailureResult(Arc<v1::PutThirdPartyJobFailureResultRequest>),
}

impl AwsRequest {
    pub fn operation(&self) -> Operation {
        match self {
            AwsRequest::PollForJobs(_) => Operation::PollForJobs,
            AwsRequest::AcknowledgeJob(_) => Operation::AcknowledgeJob,
            AwsRequest::GetJobDetails(_) => Operation::GetJobDetails,
            AwsRequest::PutJobSuccessResult(_) => Operation::PutJobSuccessResult,
            AwsRequest::PutJobFailureResult(_) => Operation::PutJobFailureResult,
            AwsRequest::PollForThirdPartyJobs(_) => Operation::PollForThirdPartyJobs,
            AwsRequest::AcknowledgeThirdPartyJob(_) => Operation::AcknowledgeThirdPartyJob,
            AwsRequest::GetThirdPartyJobDetails(_) => Operation::GetThirdPartyJobDetails,
            AwsRequest::PutThirdPartyJobSuccessResult(_) => {
                Operation::PutThirdPartyJobSuccessResult
            }
            AwsRequest::PutThirdPartyJobFailureResult(_) => {
                Operation::PutThirdPartyJobFailureResult
            }
        }
    }
}

/// Deliberately not derived: the request holds secrets (client and
/// continuation tokens, output variable values) that must never be logged.
impl fmt::Debug for AwsRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AwsRequest({})", self.operation())
    }
}

/// A request on its way through the stack, with the instant by which the
/// caller needs an answer.
#[derive(Clone, Debug)]
pub struct Call {
    pub request: AwsRequest,
    pub deadline: Instant,
}

/// What AWS answered, already in the gateway's proto types.
#[derive(Clone, Default, PartialEq)]
pub enum AwsOutput {
    /// The operation answers nothing but success.
    #[default]
    Empty,
    Jobs(Vec<v1::Job>),
    Status(v1::JobStatus),
    JobDetails(Option<v1::JobDetails>),
    ThirdPartyJobs(Vec<v1::ThirdPartyJob>),
    ThirdPartyJobDetails(Option<v1::ThirdPartyJobDetails>),
}

/// Only the shape: job data holds artifact credentials and configuration
/// values, which must never be logged.
impl fmt::Debug for AwsOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AwsOutput::Empty => f.write_str("Empty"),
            AwsOutput::Jobs(jobs) => write!(f, "Jobs(<{} jobs>)", jobs.len()),
            AwsOutput::Status(status) => write!(f, "Status({status:?})"),
            AwsOutput::JobDetails(_) => f.write_str("JobDetails(<redacted>)"),
            AwsOutput::ThirdPartyJobs(jobs) => write!(f, "ThirdPartyJobs(<{} jobs>)", jobs.len()),
            AwsOutput::ThirdPartyJobDetails(_) => f.write_str("ThirdPartyJobDetails(<redacted>)"),
        }
    }
}

/// AWS accepted the request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CallSuccess {
    /// `x-amzn-RequestId` of the attempt that succeeded.
    pub aws_request_id: Option<String>,
    /// How many attempts were sent to AWS, this one included.
    pub attempts: u32,
    pub output: AwsOutput,
}

/// What went wrong, as far as the caller needs to know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// AWS `ValidationException`.
    Validation,
    /// AWS `OutputVariablesSizeExceededException`.
    OutputVariablesSizeExceeded,
    /// AWS `JobNotFoundException`.
    JobNotFound,
    /// AWS `InvalidJobStateException`.
    InvalidJobState,
    /// AWS `InvalidClientTokenException`.
    InvalidClientToken,
    /// AWS `ActionTypeNotFoundException`.
    ActionTypeNotFound,
    /// AWS `InvalidNonceException`: another worker claimed the job, or this
    /// worker's own earlier acknowledgement landed.
    InvalidNonce,
    /// AWS `InvalidJobException`.
    InvalidJob,
    /// AWS throttled the request.
    Throttled,
    /// AWS answered with a 5xx.
    ServerError,
    /// No usable HTTP response: connection refused or reset, or a response cut off.
    Transport,
    /// One attempt took longer than the gateway's attempt timeout.
    AttemptTimedOut,
    /// The caller's deadline passed.
    DeadlineExceeded,
    /// The gateway's own rate limit could not admit the call in time.
    RateLimited,
    /// AWS refused the gateway's identity, or it has none: an operator problem.
    Misconfigured,
    /// Anything else AWS answered (an error code the gateway does not know).
    Unexpected,
}

impl ErrorKind {
    /// Whether another attempt may succeed where this one failed. This is the
    /// one place that decides it: the retry policy and the status a caller
    /// sees (UNAVAILABLE for what stayed transient) both follow it.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorKind::Throttled
                | ErrorKind::ServerError
                | ErrorKind::Transport
                | ErrorKind::AttemptTimedOut
        )
    }
}

/// The details AWS gave with an error.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AwsErrorDetails {
    /// The error code, e.g. `JobNotFoundException`.
    pub code: Option<String>,
    pub message: Option<String>,
    pub request_id: Option<String>,
    pub http_status: Option<u16>,
}

/// A call that failed, after every attempt the retry policy allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallError {
    pub kind: ErrorKind,
    /// Set when the error came from AWS (an HTTP response).
    pub aws: Option<Box<AwsErrorDetails>>,
    /// Human-readable cause for errors that did not come from AWS.
    pub detail: String,
    /// How many attempts were sent to AWS.
    pub attempts: u32,
    /// An attempt whose outcome is unknown (timeout, reset after sending) came
    /// before this error: AWS may have applied it.
    pub earlier_attempt_may_have_applied: bool,
    /// This attempt itself may have reached AWS (its outcome is unknown).
    pub outcome_unknown: bool,
    /// When a retry would make sense, how long to wait first.
    pub retry_after: Option<Duration>,
}

impl CallError {
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        CallError {
            kind,
            aws: None,
            detail: detail.into(),
            attempts: 0,
            earlier_attempt_may_have_applied: false,
            outcome_unknown: false,
            retry_after: None,
        }
    }

    pub fn deadline_exceeded(attempts: u32) -> Self {
        let mut error = CallError::new(
            ErrorKind::DeadlineExceeded,
            "the caller's deadline passed before CodePipeline answered",
        );
        error.attempts = attempts;
        error
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.aws {
            Some(aws) => write!(
                f,
                "{:?}: AWS {} ({})",
                self.kind,
                aws.code.as_deref().unwrap_or("error"),
                aws.message.as_deref().unwrap_or("no message"),
            ),
            None => write!(f, "{:?}: {}", self.kind, self.detail),
        }
    }
}

impl std::error::Error for CallError {}
