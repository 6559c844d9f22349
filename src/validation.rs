//! Local validation of every request against the CodePipeline API model.
//!
//! AWS checks these constraints too, but the gateway checks them first so that
//! nothing invalid is ever forwarded, and so that a worker learns about *every*
//! bad field at once, by its JSON path (`currentRevision.changeIdentifier`).
//! The rules come from botocore's model of CodePipeline (API version
//! 2015-07-09). Lengths are counted in characters (Unicode scalar values), as
//! the model does; only the output-variable total is counted in bytes.
//!
//! Validation *returns* the checked value, typed for the SDK, so nothing
//! downstream re-asserts what was checked here. Each operation's `validate`
//! (in `operations.rs`) reads as the list of its rules.

use std::{
    collections::{BTreeMap, HashMap},
    sync::LazyLock,
};

use aws_sdk_codepipeline::types;
use aws_smithy_types::DateTime;
use regex::Regex;

use crate::{
    client_tokens::{ClientToken, TokenSource},
    proto::v1,
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

impl InvalidRequest {
    /// A request with one bad field.
    pub fn one(field: &str, description: impl Into<String>) -> InvalidRequest {
        InvalidRequest {
            violations: vec![FieldViolation {
                field: field.to_owned(),
                description: description.into(),
            }],
            output_variables_too_large: false,
        }
    }
}

/// Collects violations; each method checks one rule of the model and returns
/// the checked value in the SDK's types (`None` when it is absent or bad).
/// [`Checker::finish`] hands the typed request on only if nothing was bad.
#[derive(Default)]
pub struct Checker {
    violations: Vec<FieldViolation>,
    output_variables_too_large: bool,
}

impl Checker {
    pub fn violation(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.violations.push(FieldViolation {
            field: field.into(),
            description: description.into(),
        });
    }

    /// The typed request, if no rule was broken. `build` returns `None` only
    /// when a required value is missing, and every check that leaves one
    /// missing records a violation; the fallback below keeps that a refusal
    /// rather than a panic should a check ever forget.
    pub fn finish<T>(self, build: impl FnOnce() -> Option<T>) -> Result<T, InvalidRequest> {
        let built = if self.violations.is_empty() {
            build()
        } else {
            None
        };
        built.ok_or_else(|| {
            let mut violations = self.violations;
            if violations.is_empty() {
                violations.push(FieldViolation {
                    field: String::new(),
                    description: "the request is incomplete".into(),
                });
            }
            InvalidRequest {
                violations,
                output_variables_too_large: self.output_variables_too_large,
            }
        })
    }

    /// A value of `min..=max` characters, or a violation (also when empty).
    pub fn required_text(
        &mut self,
        field: &str,
        value: String,
        min: usize,
        max: usize,
    ) -> Option<String> {
        if value.is_empty() {
            self.violation(field, "is required");
            return None;
        }
        self.optional_text(field, value, min, max)
    }

    /// An empty string means "not set": `None`, and no violation.
    pub fn optional_text(
        &mut self,
        field: &str,
        value: String,
        min: usize,
        max: usize,
    ) -> Option<String> {
        if value.is_empty() {
            return None;
        }
        let length = value.chars().count();
        if length < min || length > max {
            self.violation(
                field,
                format!("must be {min} to {max} characters long, but is {length}"),
            );
            return None;
        }
        Some(value)
    }

    /// A custom job's id: a lowercase UUID.
    pub fn job_id(&mut self, field: &str, value: String) -> Option<String> {
        if value.is_empty() {
            self.violation(field, "is required");
            None
        } else if !JOB_ID.is_match(&value) {
            self.violation(
                field,
                "must be a job id as returned by PollForJobs: a lowercase UUID matching \
                 [0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
            );
            None
        } else {
            Some(value)
        }
    }

    /// A partner job's id: AWS only bounds its length.
    pub fn partner_job_id(&mut self, value: String) -> Option<String> {
        self.required_text("jobId", value, 1, 512)
    }

    pub fn nonce(&mut self, value: String) -> Option<String> {
        self.required_text("nonce", value, 1, 50)
    }

    /// The token a partner call carries, or how the gateway may find it.
    /// `clientId` is not an AWS field: it only selects a token from the
    /// gateway's client-token map, and must look like AWS's client ids.
    pub fn client_token(&mut self, client_token: String, client_id: String) -> Option<TokenSource> {
        // Both are checked, so that both are reported when both are bad.
        let no_token = client_token.is_empty();
        let sent = self.optional_text("clientToken", client_token, 1, 256);
        let client_id_ok = client_id.is_empty() || JOB_ID.is_match(&client_id);
        if !client_id_ok {
            self.violation(
                "clientId",
                "must be a client id as returned by PollForThirdPartyJobs: a lowercase UUID",
            );
        }
        match (no_token, sent) {
            _ if !client_id_ok => None,
            (true, _) => Some(TokenSource::Lookup {
                client_id: (!client_id.is_empty()).then_some(client_id),
            }),
            (false, sent) => sent.map(|token| TokenSource::Sent(ClientToken::new(token))),
        }
    }

    /// The action type of a poll, whose owner must be the one the poll serves.
    pub fn action_type_id(
        &mut self,
        id: Option<v1::ActionTypeId>,
        expected_owner: v1::ActionOwner,
        polled_by: &str,
    ) -> Option<types::ActionTypeId> {
        let Some(id) = id else {
            self.violation("actionTypeId", "is required");
            return None;
        };
        let category = match v1::ActionCategory::try_from(id.category) {
            Ok(v1::ActionCategory::Source) => Some(types::ActionCategory::Source),
            Ok(v1::ActionCategory::Build) => Some(types::ActionCategory::Build),
            Ok(v1::ActionCategory::Deploy) => Some(types::ActionCategory::Deploy),
            Ok(v1::ActionCategory::Test) => Some(types::ActionCategory::Test),
            Ok(v1::ActionCategory::Invoke) => Some(types::ActionCategory::Invoke),
            Ok(v1::ActionCategory::Approval) => Some(types::ActionCategory::Approval),
            Ok(v1::ActionCategory::Compute) => Some(types::ActionCategory::Compute),
            Ok(v1::ActionCategory::Unspecified) | Err(_) => {
                self.violation(
                    "actionTypeId.category",
                    "is required: one of ACTION_CATEGORY_SOURCE, _BUILD, _DEPLOY, _TEST, \
                     _INVOKE, _APPROVAL, _COMPUTE",
                );
                None
            }
        };
        let owner = match v1::ActionOwner::try_from(id.owner) {
            Ok(given) if given == expected_owner => sdk_owner(given),
            Ok(v1::ActionOwner::Unspecified) | Err(_) => {
                self.violation(
                    "actionTypeId.owner",
                    format!(
                        "is required: {} for {polled_by}",
                        expected_owner.as_str_name()
                    ),
                );
                None
            }
            Ok(_) => {
                self.violation(
                    "actionTypeId.owner",
                    format!(
                        "must be {} for {polled_by} (PollForJobs serves custom actions, \
                         PollForThirdPartyJobs partner actions)",
                        expected_owner.as_str_name()
                    ),
                );
                None
            }
        };
        let provider = self.provider_or_version("actionTypeId.provider", id.provider, 35);
        let version = self.provider_or_version("actionTypeId.version", id.version, 9);
        let built = types::ActionTypeId::builder()
            .set_category(category)
            .set_owner(owner)
            .set_provider(provider)
            .set_version(version)
            .build();
        // Every missing member was reported above.
        built.ok()
    }

    fn provider_or_version(&mut self, field: &str, value: String, max: usize) -> Option<String> {
        let length = value.chars().count();
        if value.is_empty() {
            self.violation(field, "is required");
        } else if length > max {
            self.violation(
                field,
                format!("must be 1 to {max} characters long, but is {length}"),
            );
        } else if !PROVIDER_OR_VERSION.is_match(&value) {
            self.violation(field, "must match [0-9A-Za-z_-]+");
        } else {
            return Some(value);
        }
        None
    }

    pub fn max_batch_size(&mut self, size: Option<i32>) -> Option<i32> {
        match size {
            Some(size) if size < 1 => {
                self.violation("maxBatchSize", format!("must be at least 1, but is {size}"));
                None
            }
            size => size,
        }
    }

    pub fn query_param(
        &mut self,
        query_param: HashMap<String, String>,
    ) -> Option<HashMap<String, String>> {
        if query_param.is_empty() {
            return None;
        }
        let before = self.violations.len();
        if query_param.len() > 1 {
            self.violation("queryParam", "may hold at most one entry");
        }
        // Sorted so that the violations come out in a stable order.
        let mut keys: Vec<&String> = query_param.keys().collect();
        keys.sort();
        for key in keys {
            let path = format!("queryParam[{}]", serde_json::Value::from(key.as_str()));
            let length = key.chars().count();
            if !(1..=50).contains(&length) {
                self.violation(
                    &path,
                    format!("key must be 1 to 50 characters long, but is {length}"),
                );
            }
            let value = &query_param[key];
            let length = value.chars().count();
            if !(1..=50).contains(&length) {
                self.violation(
                    &path,
                    format!("value must be 1 to 50 characters long, but is {length}"),
                );
            } else if !QUERY_PARAM_VALUE.is_match(value) {
                self.violation(&path, "value must match [a-zA-Z0-9_-]+");
            }
        }
        (self.violations.len() == before).then_some(query_param)
    }

    pub fn failure_details(
        &mut self,
        details: Option<v1::FailureDetails>,
    ) -> Option<types::FailureDetails> {
        let Some(details) = details else {
            self.violation("failureDetails", "is required");
            return None;
        };
        let failure_type = match v1::FailureType::try_from(details.r#type) {
            Ok(v1::FailureType::JobFailed) => Some(types::FailureType::JobFailed),
            Ok(v1::FailureType::ConfigurationError) => Some(types::FailureType::ConfigurationError),
            Ok(v1::FailureType::PermissionError) => Some(types::FailureType::PermissionError),
            Ok(v1::FailureType::RevisionOutOfSync) => Some(types::FailureType::RevisionOutOfSync),
            Ok(v1::FailureType::RevisionUnavailable) => {
                Some(types::FailureType::RevisionUnavailable)
            }
            Ok(v1::FailureType::SystemUnavailable) => Some(types::FailureType::SystemUnavailable),
            Ok(v1::FailureType::Unspecified) | Err(_) => {
                self.violation(
                    "failureDetails.type",
                    "is required: one of FAILURE_TYPE_JOB_FAILED, _CONFIGURATION_ERROR, \
                     _PERMISSION_ERROR, _REVISION_OUT_OF_SYNC, _REVISION_UNAVAILABLE, \
                     _SYSTEM_UNAVAILABLE",
                );
                None
            }
        };
        let message = self.required_text("failureDetails.message", details.message, 1, 5000);
        let external_execution_id = self.optional_text(
            "failureDetails.externalExecutionId",
            details.external_execution_id,
            1,
            1500,
        );
        types::FailureDetails::builder()
            .set_type(failure_type)
            .set_message(message)
            .set_external_execution_id(external_execution_id)
            .build()
            .ok()
    }

    pub fn revision(
        &mut self,
        revision: Option<v1::CurrentRevision>,
    ) -> Option<types::CurrentRevision> {
        let revision = revision?;
        let before = self.violations.len();
        let text = self.required_text("currentRevision.revision", revision.revision, 1, 1500);
        let change_identifier = self.required_text(
            "currentRevision.changeIdentifier",
            revision.change_identifier,
            1,
            100,
        );
        let summary = self.optional_text(
            "currentRevision.revisionSummary",
            revision.revision_summary,
            1,
            2048,
        );
        let created = revision.created.and_then(|created| {
            if !(MIN_TIMESTAMP_SECONDS..=MAX_TIMESTAMP_SECONDS).contains(&created.seconds) {
                self.violation(
                    "currentRevision.created",
                    "must be between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z",
                );
                None
            } else if let Ok(nanos @ 0..1_000_000_000) = u32::try_from(created.nanos) {
                Some(DateTime::from_secs_and_nanos(created.seconds, nanos))
            } else {
                self.violation(
                    "currentRevision.created",
                    "nanos must be between 0 and 999,999,999",
                );
                None
            }
        });
        if self.violations.len() != before {
            return None;
        }
        types::CurrentRevision::builder()
            .set_revision(text)
            .set_change_identifier(change_identifier)
            .set_created(created)
            .set_revision_summary(summary)
            .build()
            .ok()
    }

    pub fn execution_details(
        &mut self,
        details: Option<v1::ExecutionDetails>,
    ) -> Option<types::ExecutionDetails> {
        let details = details?;
        let summary = self.optional_text("executionDetails.summary", details.summary, 1, 2048);
        let external_execution_id = self.optional_text(
            "executionDetails.externalExecutionId",
            details.external_execution_id,
            1,
            1500,
        );
        let percent_complete = match details.percent_complete {
            Some(percent) if !(0..=100).contains(&percent) => {
                self.violation(
                    "executionDetails.percentComplete",
                    format!("must be between 0 and 100, but is {percent}"),
                );
                None
            }
            percent => percent,
        };
        Some(
            types::ExecutionDetails::builder()
                .set_summary(summary)
                .set_external_execution_id(external_execution_id)
                .set_percent_complete(percent_complete)
                .build(),
        )
    }

    pub fn output_variables(
        &mut self,
        variables: BTreeMap<String, String>,
        with_continuation_token: bool,
    ) -> Option<HashMap<String, String>> {
        if variables.is_empty() {
            return None;
        }
        if with_continuation_token {
            self.violation(
                "outputVariables",
                "cannot be set together with continuationToken: output variables belong to \
                 the final result of a job",
            );
        }
        // In key order, so that the violations come out in a stable order.
        for key in variables.keys() {
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
        Some(variables.into_iter().collect())
    }
}

fn sdk_owner(owner: v1::ActionOwner) -> Option<types::ActionOwner> {
    match owner {
        v1::ActionOwner::Aws => Some(types::ActionOwner::Aws),
        v1::ActionOwner::ThirdParty => Some(types::ActionOwner::ThirdParty),
        v1::ActionOwner::Custom => Some(types::ActionOwner::Custom),
        v1::ActionOwner::Unspecified => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{operation::Operation, operations as op, proto::v1::*};

    /// The rules of one operation, as its `validate` applies them.
    fn check<O: Operation>(request: &O::Request) -> Result<(), InvalidRequest>
    where
        O::Request: Clone,
    {
        O::validate(request.clone()).map(drop)
    }

    fn put_job_success_result(r: &PutJobSuccessResultRequest) -> Result<(), InvalidRequest> {
        check::<op::PutJobSuccessResult>(r)
    }
    fn put_job_failure_result(r: &PutJobFailureResultRequest) -> Result<(), InvalidRequest> {
        check::<op::PutJobFailureResult>(r)
    }
    fn poll_for_jobs(r: &PollForJobsRequest) -> Result<(), InvalidRequest> {
        check::<op::PollForJobs>(r)
    }
    fn acknowledge_job(r: &AcknowledgeJobRequest) -> Result<(), InvalidRequest> {
        check::<op::AcknowledgeJob>(r)
    }
    fn get_third_party_job_details(
        r: &GetThirdPartyJobDetailsRequest,
    ) -> Result<(), InvalidRequest> {
        check::<op::GetThirdPartyJobDetails>(r)
    }
    fn put_third_party_job_success_result(
        r: &PutThirdPartyJobSuccessResultRequest,
    ) -> Result<(), InvalidRequest> {
        check::<op::PutThirdPartyJobSuccessResult>(r)
    }

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
    fn each_poll_serves_its_own_owner() {
        let custom = Some(action_type(2, 3, "p", "1"));
        let partner = Some(action_type(3, 2, "p", "1"));
        let poll = |id| {
            fields(poll_for_jobs(&PollForJobsRequest {
                action_type_id: id,
                ..Default::default()
            }))
        };
        let poll_partner = |id| {
            fields(check::<op::PollForThirdPartyJobs>(
                &PollForThirdPartyJobsRequest {
                    target: String::new(),
                    action_type_id: id,
                    max_batch_size: None,
                },
            ))
        };
        assert!(poll(custom.clone()).is_empty());
        assert_eq!(poll(partner.clone()), ["actionTypeId.owner"]);
        assert!(poll_partner(partner).is_empty());
        assert_eq!(poll_partner(custom), ["actionTypeId.owner"]);
        assert_eq!(
            poll(Some(action_type(2, 1, "p", "1"))),
            ["actionTypeId.owner"],
            "AWS-owned actions are not polled by workers"
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
            target: String::new(),
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
            target: String::new(),
            job_id: JOB.into(),
            nonce: "n".repeat(nonce),
        };
        assert_eq!(fields(acknowledge_job(&ack(0))), ["nonce"]);
        assert!(acknowledge_job(&ack(50)).is_ok());
        assert_eq!(fields(acknowledge_job(&ack(51))), ["nonce"]);
        let details = GetThirdPartyJobDetailsRequest {
            target: String::new(),
            job_id: "j".into(),
            client_token: "t".into(),
            client_id: "not-a-uuid".into(),
        };
        assert_eq!(fields(get_third_party_job_details(&details)), ["clientId"]);
    }

    #[test]
    fn a_bad_client_token_and_a_bad_client_id_are_both_reported() {
        let details = GetThirdPartyJobDetailsRequest {
            target: String::new(),
            job_id: "j".into(),
            client_token: "t".repeat(257),
            client_id: "not-a-uuid".into(),
        };
        assert_eq!(
            fields(get_third_party_job_details(&details)),
            ["clientToken", "clientId"]
        );
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
        // A missing token is not a field error yet: the gateway's map may
        // fill it in after validation (client_tokens.rs).
        assert_eq!(
            fields(put_third_party_job_success_result(&request("", ""))),
            ["jobId"]
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
