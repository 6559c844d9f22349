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
    CurrentRevision, ExecutionDetails, PutJobSuccessResultRequest,
    PutThirdPartyJobSuccessResultRequest,
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
    check.required_length("clientToken", &request.client_token, 1, 256);
    check.revision(request.current_revision.as_ref());
    check.optional_length("continuationToken", &request.continuation_token, 1, 2048);
    check.execution_details(request.execution_details.as_ref());
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
