//! The one place where failures become gRPC statuses (the table in README.md).
//!
//! Every status carries a `google.rpc.ErrorInfo`: `reason` in UPPER_SNAKE,
//! `domain` `codepipeline.amazonaws.com` when AWS produced the error (else
//! `codepipeline-gateway`), and metadata with the AWS request id and the number
//! of attempts. Validation errors add a `google.rpc.BadRequest`; errors worth
//! retrying later add a `google.rpc.RetryInfo`.

use std::{collections::HashMap, time::Duration};

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use crate::{
    access::Refusal,
    auth::Unauthenticated,
    call::{CallError, ErrorKind},
    validation::InvalidRequest,
};

pub const AWS_DOMAIN: &str = "codepipeline.amazonaws.com";
pub const GATEWAY_DOMAIN: &str = "codepipeline-gateway";

/// ErrorInfo metadata keys, shared with the documentation and the tests.
pub mod metadata {
    pub const AWS_REQUEST_ID: &str = "awsRequestId";
    pub const AWS_ERROR_CODE: &str = "awsErrorCode";
    pub const ATTEMPTS: &str = "attempts";
    pub const OPERATION: &str = "operation";
    pub const EARLIER_ATTEMPT_MAY_HAVE_APPLIED: &str = "earlierAttemptMayHaveBeenApplied";
    pub const OUTCOME_UNKNOWN: &str = "outcomeUnknown";
    pub const ACTION_TYPE: &str = "actionType";
    pub const IDENTITY: &str = "identity";
    pub const TARGET: &str = "target";
    pub const JOB_MAY_BELONG_TO_ANOTHER_TARGET: &str = "jobMayBelongToAnotherTarget";
}

/// A call refused before anything was sent to AWS: `UNAUTHENTICATED` (no,
/// malformed, expired or untrusted credential; `UNAVAILABLE` while the
/// issuer's keys cannot be had) or `PERMISSION_DENIED` (known caller, not
/// allowed). Never the credential, never the policy's text.
pub fn refusal_status(refusal: &Refusal, operation: &str, identity: &str) -> Status {
    let mut meta = HashMap::from([
        (metadata::OPERATION.to_owned(), operation.to_owned()),
        (metadata::ATTEMPTS.to_owned(), "0".to_owned()),
    ]);
    let mut details = ErrorDetails::new();
    let (code, reason, message) = match refusal {
        Refusal::Unauthenticated(Unauthenticated::KeysUnavailable) => {
            details.set_retry_info(Some(Duration::from_secs(1)));
            (
                Code::Unavailable,
                "ISSUER_KEYS_UNAVAILABLE",
                Unauthenticated::KeysUnavailable.to_string(),
            )
        }
        Refusal::Unauthenticated(why) => {
            (Code::Unauthenticated, "UNAUTHENTICATED", why.to_string())
        }
        Refusal::NotAuthorized { action_type } if action_type.is_empty() => {
            meta.insert(metadata::IDENTITY.to_owned(), identity.to_owned());
            (
                Code::PermissionDenied,
                "NOT_AUTHORIZED",
                format!("{identity} may not call {operation} for jobs of any action type"),
            )
        }
        Refusal::NotAuthorized { action_type } => {
            meta.insert(metadata::ACTION_TYPE.to_owned(), action_type.clone());
            meta.insert(metadata::IDENTITY.to_owned(), identity.to_owned());
            (
                Code::PermissionDenied,
                "NOT_AUTHORIZED",
                format!(
                    "{identity} may not call {operation} for jobs of action type {action_type}"
                ),
            )
        }
    };
    details.set_error_info(reason, GATEWAY_DOMAIN, meta);
    Status::with_error_details(code, message, details)
}

/// A request body that is not the method's protobuf message (garbage, or
/// another message): the caller's mistake, and nothing was sent to AWS.
pub fn undecodable_request_status(problem: &str) -> Status {
    let mut details = ErrorDetails::new();
    let meta = HashMap::from([(metadata::ATTEMPTS.to_owned(), "0".to_owned())]);
    details.set_error_info("UNDECODABLE_REQUEST", GATEWAY_DOMAIN, meta);
    Status::with_error_details(
        Code::InvalidArgument,
        format!("the request body is not this method's protobuf message: {problem}"),
        details,
    )
}

/// A request whose body did not arrive within `limit` of its headers: the
/// call was never handled, and nothing was sent to AWS.
pub fn slow_request_status(limit: Duration) -> Status {
    let mut details = ErrorDetails::new();
    let meta = HashMap::from([(metadata::ATTEMPTS.to_owned(), "0".to_owned())]);
    details.set_error_info("REQUEST_ARRIVAL_TIMEOUT", GATEWAY_DOMAIN, meta);
    Status::with_error_details(
        Code::DeadlineExceeded,
        format!(
            "the request's body did not arrive within {} of its headers \
             (--request-arrival-timeout); nothing was sent to AWS",
            humantime::format_duration(limit)
        ),
        details,
    )
}

/// A request that failed local validation: nothing was sent to AWS.
pub fn invalid_request_status(invalid: &InvalidRequest) -> Status {
    let reason = if invalid.output_variables_too_large {
        "OUTPUT_VARIABLES_SIZE_EXCEEDED"
    } else {
        "INVALID_REQUEST"
    };
    let summary = invalid
        .violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ");
    let count = invalid.violations.len();
    let message = format!(
        "{count} invalid field{}: {summary}",
        if count == 1 { "" } else { "s" }
    );
    let mut details = ErrorDetails::new();
    // Nothing was sent to AWS: zero attempts, and no AWS request id.
    let meta = HashMap::from([(metadata::ATTEMPTS.to_owned(), "0".to_owned())]);
    details.set_error_info(reason, GATEWAY_DOMAIN, meta);
    details.set_bad_request(
        invalid
            .violations
            .iter()
            .map(|v| FieldViolation::new(v.field.clone(), v.description.clone()))
            .collect::<Vec<_>>(),
    );
    Status::with_error_details(Code::InvalidArgument, message, details)
}

/// `ThrottlingException` → `THROTTLING`, `JobNotFoundException` → `JOB_NOT_FOUND`.
pub fn reason_from_aws_code(code: &str) -> String {
    let base = code.strip_suffix("Exception").unwrap_or(code);
    let mut reason = String::with_capacity(base.len() + 4);
    for (i, c) in base.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            reason.push('_');
        }
        if c.is_ascii_alphanumeric() {
            reason.push(c.to_ascii_uppercase());
        } else {
            reason.push('_');
        }
    }
    reason
}

fn code_for(kind: ErrorKind) -> Code {
    match kind {
        // What stayed transient after the gateway's own retries.
        kind if kind.is_transient() => Code::Unavailable,
        ErrorKind::Validation | ErrorKind::OutputVariablesSizeExceeded => Code::InvalidArgument,
        ErrorKind::JobNotFound | ErrorKind::ActionTypeNotFound => Code::NotFound,
        ErrorKind::InvalidJobState | ErrorKind::InvalidNonce | ErrorKind::InvalidJob => {
            Code::FailedPrecondition
        }
        ErrorKind::InvalidClientToken => Code::PermissionDenied,
        ErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
        ErrorKind::RateLimited | ErrorKind::Overloaded => Code::ResourceExhausted,
        ErrorKind::ShuttingDown => Code::Unavailable,
        // Misconfigured and Unexpected: the operator's problem. The mapping
        // test lists every kind, so a new one cannot land here unnoticed.
        _ => Code::Internal,
    }
}

fn reason_for(error: &CallError) -> String {
    match (
        error.kind,
        error.aws.as_ref().and_then(|a| a.code.as_deref()),
    ) {
        (ErrorKind::Misconfigured, _) => "GATEWAY_MISCONFIGURED".into(),
        (ErrorKind::NoCredentials, _) => "NO_AWS_CREDENTIALS".into(),
        (_, Some(code)) => reason_from_aws_code(code),
        (ErrorKind::ServerError, None) => "AWS_SERVER_ERROR".into(),
        (ErrorKind::Transport, None) => "AWS_UNREACHABLE".into(),
        (ErrorKind::AttemptTimedOut, None) => "AWS_ATTEMPT_TIMED_OUT".into(),
        (ErrorKind::DeadlineExceeded, None) => "DEADLINE_EXCEEDED".into(),
        (ErrorKind::RateLimited, None) => "RATE_LIMITED".into(),
        (kind, None) => reason_from_aws_code(&format!("{kind:?}")),
    }
}

fn message_for(error: &CallError) -> String {
    let aws_message = error.aws.as_ref().and_then(|a| a.message.clone());
    let base = match error.kind {
        // Details of a misconfiguration are for the operator's log, not callers.
        ErrorKind::Misconfigured => {
            "the gateway is misconfigured: CodePipeline refused its AWS identity; the \
             gateway's log has the details"
                .to_owned()
        }
        ErrorKind::NoCredentials => match error.target {
            Some(target) if target != crate::targets::DEFAULT_TARGET => format!(
                "the gateway could not assume the role of target {target:?} (another AWS \
                 account), so nothing was sent to CodePipeline; the gateway's log has STS's answer"
            ),
            _ => "the gateway has no AWS credentials, so nothing was sent to CodePipeline; the \
                  gateway's log names the credential sources it tried"
                .to_owned(),
        },
        ErrorKind::Unexpected => format!(
            "CodePipeline answered with an unexpected error ({}); the gateway's log has the \
             details",
            error
                .aws
                .as_ref()
                .and_then(|a| a.code.as_deref())
                .unwrap_or("no code")
        ),
        kind if kind.is_transient() => format!(
            "CodePipeline is unavailable after {} attempt{}: {}",
            error.attempts,
            if error.attempts == 1 { "" } else { "s" },
            aws_message.unwrap_or_else(|| error.detail.clone())
        ),
        // Say what it means for the worker, not only what AWS said.
        ErrorKind::InvalidNonce => format!(
            "{} (the nonce no longer claims this job: another worker acknowledged it, or an \
             earlier acknowledgement of yours already did)",
            aws_message.unwrap_or_else(|| "invalid nonce".to_owned())
        ),
        _ => aws_message.unwrap_or_else(|| error.detail.clone()),
    };
    if error.earlier_attempt_may_have_applied {
        format!(
            "{base} (an earlier attempt of this call had an unknown outcome and may have been \
             applied by CodePipeline: check the job before reporting again)"
        )
    } else {
        base
    }
}

/// A call that failed after local validation passed.
pub fn call_error_status(error: &CallError, retry_delay: Option<Duration>) -> Status {
    let from_aws = error.aws.is_some();
    let mut meta = HashMap::new();
    meta.insert(metadata::ATTEMPTS.to_owned(), error.attempts.to_string());
    if let Some(aws) = &error.aws {
        if let Some(id) = &aws.request_id {
            meta.insert(metadata::AWS_REQUEST_ID.to_owned(), id.clone());
        }
        if let Some(code) = &aws.code {
            meta.insert(metadata::AWS_ERROR_CODE.to_owned(), code.clone());
        }
    }
    if error.earlier_attempt_may_have_applied {
        meta.insert(
            metadata::EARLIER_ATTEMPT_MAY_HAVE_APPLIED.to_owned(),
            "true".to_owned(),
        );
    }
    if error.outcome_unknown {
        meta.insert(metadata::OUTCOME_UNKNOWN.to_owned(), "true".to_owned());
    }
    if let Some(target) = error.target {
        meta.insert(metadata::TARGET.to_owned(), target.to_owned());
    }
    if error.job_may_be_elsewhere {
        meta.insert(
            metadata::JOB_MAY_BELONG_TO_ANOTHER_TARGET.to_owned(),
            "true".to_owned(),
        );
    }

    let mut details = ErrorDetails::new();
    details.set_error_info(
        reason_for(error),
        if from_aws { AWS_DOMAIN } else { GATEWAY_DOMAIN },
        meta,
    );
    if let Some(delay) = retry_delay {
        details.set_retry_info(Some(delay));
    }
    let mut message = message_for(error);
    if error.job_may_be_elsewhere {
        message.push_str(
            "; the call named no target and this replica does not know the job's, so it went \
             to the gateway's own account (target \"default\"): the job may belong to another \
             target. Send the target its poll answered with.",
        );
    }
    Status::with_error_details(code_for(error.kind), message, details)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::AwsErrorDetails;

    #[test]
    fn aws_codes_become_upper_snake_reasons() {
        assert_eq!(
            reason_from_aws_code("JobNotFoundException"),
            "JOB_NOT_FOUND"
        );
        assert_eq!(reason_from_aws_code("ThrottlingException"), "THROTTLING");
        assert_eq!(
            reason_from_aws_code("OutputVariablesSizeExceededException"),
            "OUTPUT_VARIABLES_SIZE_EXCEEDED"
        );
        assert_eq!(reason_from_aws_code("InternalFailure"), "INTERNAL_FAILURE");
    }

    #[test]
    fn each_kind_maps_to_its_documented_code() {
        let cases = [
            (ErrorKind::Validation, Code::InvalidArgument),
            (
                ErrorKind::OutputVariablesSizeExceeded,
                Code::InvalidArgument,
            ),
            (ErrorKind::JobNotFound, Code::NotFound),
            (ErrorKind::InvalidJobState, Code::FailedPrecondition),
            (ErrorKind::ActionTypeNotFound, Code::NotFound),
            (ErrorKind::InvalidNonce, Code::FailedPrecondition),
            (ErrorKind::InvalidJob, Code::FailedPrecondition),
            (ErrorKind::InvalidClientToken, Code::PermissionDenied),
            (ErrorKind::Throttled, Code::Unavailable),
            (ErrorKind::ServerError, Code::Unavailable),
            (ErrorKind::Transport, Code::Unavailable),
            (ErrorKind::AttemptTimedOut, Code::Unavailable),
            (ErrorKind::RateLimited, Code::ResourceExhausted),
            (ErrorKind::Overloaded, Code::ResourceExhausted),
            (ErrorKind::ShuttingDown, Code::Unavailable),
            (ErrorKind::DeadlineExceeded, Code::DeadlineExceeded),
            (ErrorKind::Misconfigured, Code::Internal),
            (ErrorKind::NoCredentials, Code::Internal),
            (ErrorKind::Unexpected, Code::Internal),
        ];
        for kind in ErrorKind::ALL {
            assert!(
                cases.iter().any(|(k, _)| k == kind),
                "{kind:?} has no documented code in this table"
            );
        }
        for (kind, code) in cases {
            assert_eq!(
                call_error_status(&CallError::new(kind, "x"), None).code(),
                code
            );
        }
    }

    #[test]
    fn aws_errors_carry_the_aws_domain_request_id_and_attempts() {
        let mut error = CallError::new(ErrorKind::JobNotFound, "x");
        error.attempts = 1;
        error.aws = Some(Box::new(AwsErrorDetails {
            code: Some("JobNotFoundException".into()),
            message: Some("no such job".into()),
            request_id: Some("req-1".into()),
            http_status: Some(400),
        }));
        let status = call_error_status(&error, None);
        let info = status.get_details_error_info().expect("ErrorInfo");
        assert_eq!(info.reason, "JOB_NOT_FOUND");
        assert_eq!(info.domain, AWS_DOMAIN);
        assert_eq!(info.metadata[metadata::AWS_REQUEST_ID], "req-1");
        assert_eq!(info.metadata[metadata::ATTEMPTS], "1");
        assert_eq!(status.message(), "no such job");
    }

    #[test]
    fn misconfiguration_hides_aws_details_from_callers() {
        let mut error = CallError::new(ErrorKind::Misconfigured, "x");
        error.aws = Some(Box::new(AwsErrorDetails {
            code: Some("AccessDeniedException".into()),
            message: Some("User arn:aws:iam::123:role/x is not authorized".into()),
            ..Default::default()
        }));
        let status = call_error_status(&error, None);
        assert!(status.message().contains("misconfigured"));
        assert!(!status.message().contains("arn:aws"));
        assert_eq!(
            status.get_details_error_info().unwrap().reason,
            "GATEWAY_MISCONFIGURED"
        );
    }
}
