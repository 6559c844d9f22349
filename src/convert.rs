//! Conversions of what AWS answers, from the SDK's types to the gateway's
//! proto messages. Pure. (The other direction is validation's: it returns
//! requests already in the SDK's types.)

use aws_sdk_codepipeline::types;

use crate::proto::v1;

fn text(value: Option<&str>) -> String {
    value.unwrap_or_default().to_owned()
}

pub fn action_type_id_from(id: &types::ActionTypeId) -> v1::ActionTypeId {
    use v1::{ActionCategory as C, ActionOwner as O};
    let category = match id.category() {
        types::ActionCategory::Source => C::Source,
        types::ActionCategory::Build => C::Build,
        types::ActionCategory::Deploy => C::Deploy,
        types::ActionCategory::Test => C::Test,
        types::ActionCategory::Invoke => C::Invoke,
        types::ActionCategory::Approval => C::Approval,
        types::ActionCategory::Compute => C::Compute,
        _ => C::Unspecified,
    };
    let owner = match id.owner() {
        types::ActionOwner::Aws => O::Aws,
        types::ActionOwner::ThirdParty => O::ThirdParty,
        types::ActionOwner::Custom => O::Custom,
        _ => O::Unspecified,
    };
    v1::ActionTypeId {
        category: category.into(),
        owner: owner.into(),
        provider: id.provider().to_owned(),
        version: id.version().to_owned(),
    }
}

pub fn job_status_from(status: Option<&types::JobStatus>) -> v1::JobStatus {
    use v1::JobStatus as S;
    match status {
        Some(types::JobStatus::Created) => S::Created,
        Some(types::JobStatus::Queued) => S::Queued,
        Some(types::JobStatus::Dispatched) => S::Dispatched,
        Some(types::JobStatus::InProgress) => S::InProgress,
        Some(types::JobStatus::TimedOut) => S::TimedOut,
        Some(types::JobStatus::Succeeded) => S::Succeeded,
        Some(types::JobStatus::Failed) => S::Failed,
        _ => S::Unspecified,
    }
}

fn artifact_from(artifact: &types::Artifact) -> v1::Artifact {
    v1::Artifact {
        name: text(artifact.name()),
        revision: text(artifact.revision()),
        location: artifact.location().map(|location| v1::ArtifactLocation {
            r#type: location
                .r#type()
                .map(|t| t.as_str().to_owned())
                .unwrap_or_default(),
            s3_location: location.s3_location().map(|s3| v1::S3ArtifactLocation {
                bucket_name: s3.bucket_name().to_owned(),
                object_key: s3.object_key().to_owned(),
            }),
        }),
    }
}

fn pipeline_context_from(context: &types::PipelineContext) -> v1::PipelineContext {
    v1::PipelineContext {
        pipeline_name: text(context.pipeline_name()),
        stage: context.stage().map(|stage| v1::StageContext {
            name: text(stage.name()),
        }),
        action: context.action().map(|action| v1::ActionContext {
            name: text(action.name()),
            action_execution_id: text(action.action_execution_id()),
        }),
        pipeline_arn: text(context.pipeline_arn()),
        pipeline_execution_id: text(context.pipeline_execution_id()),
    }
}

/// `JobData` and `ThirdPartyJobData` are distinct SDK types with the same
/// members; one macro keeps their conversions from drifting apart.
macro_rules! job_data_from {
    ($data:expr) => {{
        let data = $data;
        v1::JobData {
            action_type_id: data.action_type_id().map(action_type_id_from),
            action_configuration: data
                .action_configuration()
                .map(|c| v1::ActionConfiguration {
                    configuration: c.configuration().cloned().unwrap_or_default(),
                }),
            pipeline_context: data.pipeline_context().map(pipeline_context_from),
            input_artifacts: data.input_artifacts().iter().map(artifact_from).collect(),
            output_artifacts: data.output_artifacts().iter().map(artifact_from).collect(),
            artifact_credentials: data
                .artifact_credentials()
                .map(|c| v1::AwsSessionCredentials {
                    access_key_id: c.access_key_id().to_owned(),
                    secret_access_key: c.secret_access_key().to_owned(),
                    session_token: c.session_token().to_owned(),
                }),
            continuation_token: text(data.continuation_token()),
            encryption_key: data.encryption_key().map(|k| v1::EncryptionKey {
                id: k.id().to_owned(),
                r#type: k.r#type().as_str().to_owned(),
            }),
        }
    }};
}

pub fn job_from(job: &types::Job) -> v1::Job {
    v1::Job {
        id: text(job.id()),
        data: job.data().map(|d| job_data_from!(d)),
        nonce: text(job.nonce()),
        account_id: text(job.account_id()),
        // Filled in by the gateway, which knows where it polled.
        target: String::new(),
    }
}

pub fn job_details_from(details: &types::JobDetails) -> v1::JobDetails {
    v1::JobDetails {
        id: text(details.id()),
        data: details.data().map(|d| job_data_from!(d)),
        account_id: text(details.account_id()),
    }
}

pub fn third_party_job_from(job: &types::ThirdPartyJob) -> v1::ThirdPartyJob {
    v1::ThirdPartyJob {
        client_id: text(job.client_id()),
        job_id: text(job.job_id()),
        target: String::new(),
    }
}

pub fn third_party_job_details_from(
    details: &types::ThirdPartyJobDetails,
) -> v1::ThirdPartyJobDetails {
    v1::ThirdPartyJobDetails {
        id: text(details.id()),
        data: details.data().map(|d| job_data_from!(d)),
        nonce: text(details.nonce()),
    }
}
