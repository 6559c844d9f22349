//! Local validation of every request against the CodePipeline API model.
//!
//! AWS checks these constraints too, but the gateway checks them first so that
//! nothing invalid is ever forwarded, and so that a worker learns about *every*
//! bad field at once, by its JSON path (`currentRevision.changeIdentifier`).
//! The rules come from botocore's model of CodePipeline (API version
//! 2015-07-09). Lengths are counted in characters (Unicode scalar values), as
//! the model does; only the output-variable total is counted in bytes.

use std::sync::LazyLock;

use regex::Regex;

use crate::proto::v1::{
    AcknowledgeJobRequest, AcknowledgeThirdPartyJobRequest, ActionCategory, ActionOwner,
    ActionTypeId, CurrentRevision, ExecutionDetails, FailureDetails, FailureType,
    GetJobDetailsRequest, GetThirdPartyJobDetailsRequest, PollForJobsRequest,
    PollForThirdPartyJobsRequest, PutJobFailureResultRequest, PutJobSuccessResultRequest,
    PutThirdPartyJobFailureResultRequest, PutThirdPartyJobSuccessResultRequest,
};

/// CodePipeline's documented limit on all output variables of one action, in bytes.
pub const OUTPUT_VARIABLES_MAX_BYTES: usize = 122_880;

/// Timestamps AWS can represent: 0001-01-01T00:00:00Z ..= 9999-12-31T23:59:59Z.
const MIN_TIMESTAMP_SECONDS: i64 = -62_135_596_800;
const MAX_TIMESTAMP_SECONDS: i64 = 253_402_300_799;

static JOB_ID: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new("^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$").expect("valid")
});
static OUTPUT_VARIABLE_KEY: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9@\-_]+$").expect("valid"));
static PROVIDER_OR_VERSION: LazyLock<Regex> =
    LazyLock::new(|| Regex::new("^[0-9A-Za-z_-]+$").expect("valid"));
static QUERY_PARAM_VALUE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new("^[a-zA-Z0-9_-]+$").expect("valid"));

/// One bad field: its JSON path and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

/// Why a request was refused: every violation found, never just the first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidRequest {
    pub violations: Vec<FieldViolation>,
    /// Set when the output variables are over [`OUTPUT_VARIABLES_MAX_BYTES`],
    /// which callers may want to tell apart from other mistakes.
    pub output_variables_too_large: bool,
}

/// Checks a `PutJobSuccessResult` request.
pub fn put_job_success_result(request: &PutJobSuccessResultRequest) -> Result<(), InvalidRequest> {
    let mut check = Checker::default();
    check.job_id("jobId", &request.job_id);
    check.revision(request.current_revision.as_ref());
    check.optional_length("continuationToken", &request.continuation_token, 1, 2048);
    check.execution_details(request.execution_details.as_ref());
    check.output_variables(&request.output_variables, &request.continuation_token);
    check.finish()
}

/// Checks a `PutThirdPartyJobSuccessResult` request.
pub fn put_third_party_job_success_result(
    request: &PutThirdPartyJobSuccessResultRequest,
) -> Result<(), InvalidRequest> {
    let mut check = Checker::default();
    check.required_length("jobId", &request.job_id, 1, 512);
    check.client_token(&request.client_token, &request.client_id);
    check.revision(request.current_revision.as_ref());
    check.optional_length("continuationToken", &request.continuation_token, 1, 2048);
    check.execution_details(request.execution_details.as_ref());
    check.finish()
}

/// Checks a `PollForJobs` request.
pub fn poll_for_jobs(request: &PollForJobsRequest) -> Result<(), InvalidRequest> {
    let mut check = Checker::default();
    check.action_type_id(request.action_type_id.as_ref());
    check.max_batch_size(request.max_batch_size);
    if request.query_param.len() > 1 {
        check.violation("queryParam", "may hold at most one entry");
    }
    let mut keys: Vec<&String> = request.query_param.keys().collect();
    keys.sort();
    for key in keys {
        let path = format!("queryParam[{}]", serde_json::Value::from(key.as_str()));
        let length = key.chars().count();
        if !(1..=50).contains(&length) {
            check.violation(
                &path,
                format!("key must be 1 to 50 characters long, but is {length}"),
            );
        }
        let value = &request.query_param[key];
        let length = value.chars().count();
        if !(1..=50).contains(&length) {
            check.violation(
                &path,
                format!("value must be 1 to 50 characters long, but is {length}"),
            );
        } else if !QUERY_PARAM_VALUE.is_match(value) {
            check.violation(&path, "value must match [a-zA-Z0-9_-]+");
        }
    }
    check.finish()
}

/// Checks an `AcknowledgeJob` request.
pub fn acknowledge_job(request: &AcknowledgeJobRequest) -> Result<(), InvalidRequest> {
    let mut check = Checker::default();
    check.job_id("jobId", &request.job_id);
    check.required_length("nonce", &request.nonce, 1, 50);
    check.finish()
}

/// Checks a `GetJobDetails` request.
pub fn get_job_details(request: &GetJobDetailsRequest) -> Result<(), InvalidRequest> {
    let mut check = Checker::default();
    check.job_id("jobId", &request.job_id);
    check.finish()
}

/// Checks a `PutJobFailureResult` request.
pub fn put_job_failure_result(request: &PutJobFailureResultRequest) -> Result<(), InvalidRequest> {
    let mut check = Checker::default();
    check.job_id("jobId", &request.job_id);
    check.failure_details(request.failure_details.as_ref());
    check.finish()
}

/// Checks a `PollForThirdPartyJobs` request.
pub fn poll_for_third_party_jobs(
    request: &PollForThirdPartyJobsRequest,
) -> Result<(), InvalidRequest> {
    let mut check = Checker::default();
    check.action_type_id(request.action_type_id.as_ref());
    check.max_batch_size(request.max_batch_size);
    check.finish()
}

/// Checks an `AcknowledgeThirdPartyJob` request (after the client token was filled in).
pub fn acknowledge_third_party_job(
    request: &AcknowledgeThirdPartyJobRequest,
) -> Result<(), InvalidRequest> {
    let mut check = Checker::default();
    check.required_length("jobId", &request.job_id, 1, 512);
    check.required_length("nonce", &request.nonce, 1, 50);
    check.client_token(&request.client_token, &request.client_id);
    check.finish()
}

/// Checks a `GetThirdPartyJobDetails` request (after the client token was filled in).
pub fn get_third_party_job_details(
    request: &GetThirdPartyJobDetailsRequest,
) -> Result<(), InvalidRequest> {
    let mut check = Checker::default();
    check.required_length("jobId", &request.job_id, 1, 512);
    check.client_token(&request.client_token, &request.client_id);
    check.finish()
}

/// Checks a `PutThirdPartyJobFailureResult` request (after the client token was filled in).
pub fn put_third_party_job_failure_result(
    request: &PutThirdPartyJobFailureResultRequest,
) -> Result<(), InvalidRequest> {
    let mut check = Checker::default();
    check.required_length("jobId", &request.job_id, 1, 512);
    check.client_token(&request.client_token, &request.client_id);
    check.failure_details(request.failure_details.as_ref());
    check.finish()
}

/// Collects violations; each method checks one rule of the model.
#[derive(Default)]
struct Checker {
    violations: Vec<FieldViolation>,
    output_variables_too_large: bool,
}

impl Checker {
    fn violation(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.violations.push(FieldViolation {
            field: field.into(),
            description: description.into(),
        });
    }

    fn required_length(&mut self, field: &str, value: &str, min: usize, max: usize) {
        if value.is_empty() {
            self.violation(field, "is required");
        } else {
            self.optional_length(field, value, min, max);
        }
    }

    /// An empty string means "not set", so only a non-empty value is checked.
    fn optional_length(&mut self, field: &str, value: &str, min: usize, max: usize) {
        if value.is_empty() {
            return;
        }
        let length = value.chars().count();
        if length < min || length > max {
            self.violation(
                field,
                format!("must be {min} to {max} characters long, but is {length}"),
            );
        }
    }

    fn job_id(&mut self, field: &str, value: &str) {
        if value.is_empty() {
            self.violation(field, "is required");
        } else if !JOB_ID.is_match(value) {
            self.violation(
                field,
                "must be a job id as returned by PollForJobs: a lowercase UUID matching \
                 [0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
            );
        }
    }

    /// `clientId` is not an AWS field: it only selects a token from the
    /// gateway's client-token map, and must look like AWS's client ids.
    fn client_token(&mut self, client_token: &str, client_id: &str) {
        if client_token.is_empty() {
            self.violation(
                "clientToken",
                "is required (the gateway has no client token for this job: send clientToken, \
                 or clientId when the gateway's client-token map is configured)",
            );
        } else {
            self.optional_length("clientToken", client_token, 1, 256);
        }
        if !client_id.is_empty() && !JOB_ID.is_match(client_id) {
            self.violation(
                "clientId",
                "must be a client id as returned by PollForThirdPartyJobs: a lowercase UUID",
            );
        }
    }

    fn action_type_id(&mut self, id: Option<&ActionTypeId>) {
        let Some(id) = id else {
            self.violation("actionTypeId", "is required");
            return;
        };
        if !matches!(ActionCategory::try_from(id.category), Ok(c) if c != ActionCategory::Unspecified)
        {
            self.violation(
                "actionTypeId.category",
                "is required: one of ACTION_CATEGORY_SOURCE, _BUILD, _DEPLOY, _TEST, _INVOKE, \
                 _APPROVAL, _COMPUTE",
            );
        }
        if !matches!(ActionOwner::try_from(id.owner), Ok(o) if o != ActionOwner::Unspecified) {
            self.violation(
                "actionTypeId.owner",
                "is required: one of ACTION_OWNER_AWS, ACTION_OWNER_THIRD_PARTY, ACTION_OWNER_CUSTOM",
            );
        }
        self.provider_or_version("actionTypeId.provider", &id.provider, 35);
        self.provider_or_version("actionTypeId.version", &id.version, 9);
    }

    fn provider_or_version(&mut self, field: &str, value: &str, max: usize) {
        let length = value.chars().count();
        if value.is_empty() {
            self.violation(field, "is required");
        } else if length > max {
            self.violation(
                field,
                format!("must be 1 to {max} characters long, but is {length}"),
            );
        } else if !PROVIDER_OR_VERSION.is_match(value) {
            self.violation(field, "must match [0-9A-Za-z_-]+");
        }
    }

    fn max_batch_size(&mut self, size: Option<i32>) {
        if let Some(size) = size
            && size < 1
        {
            self.violation("maxBatchSize", format!("must be at least 1, but is {size}"));
        }
    }

    fn failure_details(&mut self, details: Option<&FailureDetails>) {
        let Some(details) = details else {
            self.violation("failureDetails", "is required");
            return;
        };
        if !matches!(FailureType::try_from(details.r#type), Ok(t) if t != FailureType::Unspecified)
        {
            self.violation(
                "failureDetails.type",
                "is required: one of FAILURE_TYPE_JOB_FAILED, _CONFIGURATION_ERROR, \
                 _PERMISSION_ERROR, _REVISION_OUT_OF_SYNC, _REVISION_UNAVAILABLE, \
                 _SYSTEM_UNAVAILABLE",
            );
        }
        self.required_length("failureDetails.message", &details.message, 1, 5000);
        self.optional_length(
            "failureDetails.externalExecutionId",
            &details.external_execution_id,
            1,
            1500,
        );
    }

    fn revision(&mut self, revision: Option<&CurrentRevision>) {
        let Some(revision) = revision else { return };
        self.required_length("currentRevision.revision", &revision.revision, 1, 1500);
        self.required_length(
            "currentRevision.changeIdentifier",
            &revision.change_identifier,
            1,
            100,
        );
        self.optional_length(
            "currentRevision.revisionSummary",
            &revision.revision_summary,
            1,
            2048,
        );
        if let Some(created) = &revision.created {
            if !(MIN_TIMESTAMP_SECONDS..=MAX_TIMESTAMP_SECONDS).contains(&created.seconds) {
                self.violation(
                    "currentRevision.created",
                    "must be between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z",
                );
            } else if !(0..1_000_000_000).contains(&created.nanos) {
                self.violation(
                    "currentRevision.created",
                    "nanos must be between 0 and 999,999,999",
                );
            }
        }
    }

    fn execution_details(&mut self, details: Option<&ExecutionDetails>) {
        let Some(details) = details else { return };
        self.optional_length("executionDetails.summary", &details.summary, 1, 2048);
        self.optional_length(
            "executionDetails.externalExecutionId",
            &details.external_execution_id,
            1,
            1500,
        );
        if let Some(percent) = details.percent_complete
            && !(0..=100).contains(&percent)
        {
            self.violation(
                "executionDetails.percentComplete",
                format!("must be between 0 and 100, but is {percent}"),
            );
        }
    }

    fn output_variables(
        &mut self,
        variables: &std::collections::HashMap<String, String>,
        continuation_token: &str,
    ) {
        if variables.is_empty() {
            return;
        }
        if !continuation_token.is_empty() {
            self.violation(
                "outputVariables",
                "cannot be set together with continuationToken: output variables belong to \
                 the final result of a job",
            );
        }
        // Sorted so that the violations come out in a stable order.
        let mut keys: Vec<&String> = variables.keys().collect();
        keys.sort();
        for key in keys {
            if !OUTPUT_VARIABLE_KEY.is_match(key) {
                // The key is named (it is not a secret); the value never is.
                self.violation(
                    format!("outputVariables[{}]", serde_json::Value::from(key.as_str())),
                    "key must match [A-Za-z0-9@\\-_]+ (letters, digits, @, - and _)",
                );
            }
        }
        let bytes: usize = variables.iter().map(|(k, v)| k.len() + v.len()).sum();
        if bytes > OUTPUT_VARIABLES_MAX_BYTES {
            self.output_variables_too_large = true;
            self.violation(
                "outputVariables",
                format!(
                    "all keys and values together must be at most {OUTPUT_VARIABLES_MAX_BYTES} \
                     bytes, but are {bytes}"
                ),
            );
        }
    }

    fn finish(self) -> Result<(), InvalidRequest> {
        if self.violations.is_empty() {
            Ok(())
        } else {
            Err(InvalidRequest {
                violations: self.violations,
                output_variables_too_large: self.output_variables_too_large,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1::*;

    const JOB: &str = "0123abcd-0123-4567-89ab-0123456789ab";

    fn fields(result: Result<(), InvalidRequest>) -> Vec<String> {
        result
            .err()
            .map(|e| e.violations.into_iter().map(|v| v.field).collect())
            .unwrap_or_default()
    }

    fn custom(job_id: &str) -> PutJobSuccessResultRequest {
        PutJobSuccessResultRequest {
            job_id: job_id.into(),
            ..Default::default()
        }
    }

    #[test]
    fn job_id_must_be_a_whole_lowercase_uuid() {
        assert!(put_job_success_result(&custom(JOB)).is_ok());
        for bad in [
            "",
            "0123ABCD-0123-4567-89ab-0123456789ab",
            "x0123abcd-0123-4567-89ab-0123456789ab",
            "0123abcd-0123-4567-89ab-0123456789abx",
            "0123abcd-0123-4567-89ab-0123456789a",
        ] {
            assert_eq!(
                fields(put_job_success_result(&custom(bad))),
                ["jobId"],
                "{bad:?}"
            );
        }
    }

    #[test]
    fn lengths_count_characters_not_bytes() {
        let mut request = custom(JOB);
        request.continuation_token = "é".repeat(2048); // 4096 bytes, 2048 characters
        assert!(put_job_success_result(&request).is_ok());
        request.continuation_token.push('é');
        assert_eq!(
            fields(put_job_success_result(&request)),
            ["continuationToken"]
        );
    }

    #[test]
    fn revision_needs_revision_and_change_identifier_and_reports_both() {
        let mut request = custom(JOB);
        request.current_revision = Some(CurrentRevision::default());
        assert_eq!(
            fields(put_job_success_result(&request)),
            [
                "currentRevision.revision",
                "currentRevision.changeIdentifier"
            ]
        );
    }

    #[test]
    fn created_must_be_a_representable_timestamp() {
        let mut request = custom(JOB);
        let revision = |seconds, nanos| CurrentRevision {
            revision: "r".into(),
            change_identifier: "c".into(),
            created: Some(prost_types::Timestamp { seconds, nanos }),
            revision_summary: String::new(),
        };
        for (seconds, nanos, ok) in [
            (MAX_TIMESTAMP_SECONDS, 999_999_999, true),
            (MIN_TIMESTAMP_SECONDS, 0, true),
            (MAX_TIMESTAMP_SECONDS + 1, 0, false),
            (MIN_TIMESTAMP_SECONDS - 1, 0, false),
            (0, -1, false),
            (0, 1_000_000_000, false),
        ] {
            request.current_revision = Some(revision(seconds, nanos));
            assert_eq!(
                put_job_success_result(&request).is_ok(),
                ok,
                "{seconds} {nanos}"
            );
        }
    }

    #[test]
    fn percent_complete_zero_and_hundred_are_valid() {
        let mut request = custom(JOB);
        for (percent, ok) in [(-1, false), (0, true), (100, true), (101, false)] {
            request.execution_details = Some(ExecutionDetails {
                percent_complete: Some(percent),
                ..Default::default()
            });
            assert_eq!(put_job_success_result(&request).is_ok(), ok, "{percent}");
        }
    }

    #[test]
    fn output_variable_keys_and_total_size() {
        let mut request = custom(JOB);
        request.output_variables.insert("ok@-_9".into(), "v".into());
        assert!(put_job_success_result(&request).is_ok());
        request
            .output_variables
            .insert("bad key".into(), "v".into());
        request.output_variables.insert(String::new(), "v".into());
        assert_eq!(
            fields(put_job_success_result(&request)),
            [r#"outputVariables[""]"#, r#"outputVariables["bad key"]"#]
        );

        let mut request = custom(JOB);
        let value_len = OUTPUT_VARIABLES_MAX_BYTES - 1;
        request
            .output_variables
            .insert("k".into(), "v".repeat(value_len));
        assert!(put_job_success_result(&request).is_ok());
        request
            .output_variables
            .insert("k".into(), "v".repeat(value_len + 1));
        let error = put_job_success_result(&request).unwrap_err();
        assert!(error.output_variables_too_large);
        assert_eq!(error.violations[0].field, "outputVariables");
    }

    #[test]
    fn output_variables_cannot_come_with_a_continuation_token() {
        let mut request = custom(JOB);
        request.continuation_token = "more".into();
        request.output_variables.insert("k".into(), "v".into());
        assert_eq!(
            fields(put_job_success_result(&request)),
            ["outputVariables"]
        );
    }

    fn action_type(category: i32, owner: i32, provider: &str, version: &str) -> ActionTypeId {
        ActionTypeId {
            category,
            owner,
            provider: provider.into(),
            version: version.into(),
        }
    }

    #[test]
    fn action_type_id_enums_lengths_and_patterns() {
        let poll = |id: Option<ActionTypeId>| {
            fields(poll_for_jobs(&PollForJobsRequest {
                action_type_id: id,
                ..Default::default()
            }))
        };
        assert!(poll(Some(action_type(2, 3, &"p".repeat(35), &"v".repeat(9)))).is_empty());
        assert_eq!(poll(None), ["actionTypeId"]);
        assert_eq!(
            poll(Some(action_type(0, 0, "", ""))),
            [
                "actionTypeId.category",
                "actionTypeId.owner",
                "actionTypeId.provider",
                "actionTypeId.version"
            ]
        );
        // Unknown enum numbers are as bad as UNSPECIFIED.
        assert_eq!(
            poll(Some(action_type(99, 3, "p", "1"))),
            ["actionTypeId.category"]
        );
        assert_eq!(
            poll(Some(action_type(2, 3, &"p".repeat(36), &"v".repeat(10)))),
            ["actionTypeId.provider", "actionTypeId.version"]
        );
        assert_eq!(
            poll(Some(action_type(2, 3, "my provider", "1.0"))),
            ["actionTypeId.provider", "actionTypeId.version"]
        );
    }

    #[test]
    fn batch_size_and_query_param() {
        let ok_type = Some(action_type(2, 3, "p", "1"));
        let mut request = PollForJobsRequest {
            action_type_id: ok_type,
            max_batch_size: Some(1),
            ..Default::default()
        };
        assert!(poll_for_jobs(&request).is_ok());
        request.max_batch_size = Some(0);
        assert_eq!(fields(poll_for_jobs(&request)), ["maxBatchSize"]);
        request.max_batch_size = None;
        request.query_param.insert("k".repeat(50), "v".repeat(50));
        assert!(poll_for_jobs(&request).is_ok());
        request.query_param.clear();
        request
            .query_param
            .insert("k".repeat(51), "bad value".into());
        assert_eq!(fields(poll_for_jobs(&request)).len(), 2);
        request.query_param.clear();
        request.query_param.insert("a".into(), "1".into());
        request.query_param.insert("b".into(), "2".into());
        assert_eq!(fields(poll_for_jobs(&request)), ["queryParam"]);
    }

    #[test]
    fn failure_details_are_required_with_type_and_message() {
        let request = |details: Option<FailureDetails>| PutJobFailureResultRequest {
            job_id: JOB.into(),
            failure_details: details,
        };
        assert_eq!(
            fields(put_job_failure_result(&request(None))),
            ["failureDetails"]
        );
        assert_eq!(
            fields(put_job_failure_result(&request(Some(
                FailureDetails::default()
            )))),
            ["failureDetails.type", "failureDetails.message"]
        );
        let details = |message: usize, external: usize| FailureDetails {
            r#type: FailureType::JobFailed.into(),
            message: "m".repeat(message),
            external_execution_id: "e".repeat(external),
        };
        assert!(put_job_failure_result(&request(Some(details(5000, 1500)))).is_ok());
        assert_eq!(
            fields(put_job_failure_result(&request(Some(details(5001, 1501))))),
            [
                "failureDetails.message",
                "failureDetails.externalExecutionId"
            ]
        );
    }

    #[test]
    fn nonce_and_client_id() {
        let ack = |nonce: usize| AcknowledgeJobRequest {
            job_id: JOB.into(),
            nonce: "n".repeat(nonce),
        };
        assert_eq!(fields(acknowledge_job(&ack(0))), ["nonce"]);
        assert!(acknowledge_job(&ack(50)).is_ok());
        assert_eq!(fields(acknowledge_job(&ack(51))), ["nonce"]);
        let details = GetThirdPartyJobDetailsRequest {
            job_id: "j".into(),
            client_token: "t".into(),
            client_id: "not-a-uuid".into(),
        };
        assert_eq!(fields(get_third_party_job_details(&details)), ["clientId"]);
    }

    #[test]
    fn third_party_requires_job_id_and_client_token_within_bounds() {
        let request = |job: &str, token: &str| PutThirdPartyJobSuccessResultRequest {
            job_id: job.into(),
            client_token: token.into(),
            ..Default::default()
        };
        assert!(put_third_party_job_success_result(&request("j", "t")).is_ok());
        assert!(
            put_third_party_job_success_result(&request(&"j".repeat(512), &"t".repeat(256)))
                .is_ok()
        );
        assert_eq!(
            fields(put_third_party_job_success_result(&request("", ""))),
            ["jobId", "clientToken"]
        );
        assert_eq!(
            fields(put_third_party_job_success_result(&request(
                &"j".repeat(513),
                &"t".repeat(257)
            ))),
            ["jobId", "clientToken"]
        );
    }
}
