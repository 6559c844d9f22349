//! The whole job-worker lifecycle through the gateway (poll, acknowledge,
//! details, success with continuation, failure), for custom and partner
//! actions, compared against what the emulator received and returned.

mod common;

use std::collections::BTreeMap;

use codepipeline_emulator::{ActionTypeId as EmuActionTypeId, Fault, FaultKind, JobState, NewJob};
use codepipeline_gateway::{
    config::ClientTokenSettings,
    error::metadata,
    proto::v1::{self, ActionCategory, ActionOwner, FailureType, JobStatus},
};
use serde_json::{Value, json};
use tonic::Code;
use tonic_types::StatusExt;

use common::{custom_type, poll};

fn partner_type() -> v1::ActionTypeId {
    v1::ActionTypeId {
        category: ActionCategory::Deploy.into(),
        owner: ActionOwner::ThirdParty.into(),
        provider: "CpgwDevPartner".into(),
        version: "1".into(),
    }
}

/// The gateway's job data written back as AWS JSON, to compare with what the
/// emulator handed out. Every field of the message is mapped.
fn aws_json(data: &v1::JobData) -> Value {
    let action_type = data.action_type_id.as_ref().unwrap();
    let category = match action_type.category() {
        ActionCategory::Build => "Build",
        ActionCategory::Deploy => "Deploy",
        other => panic!("unexpected category {other:?}"),
    };
    let owner = match action_type.owner() {
        ActionOwner::Custom => "Custom",
        ActionOwner::ThirdParty => "ThirdParty",
        other => panic!("unexpected owner {other:?}"),
    };
    let artifacts = |list: &[v1::Artifact]| -> Value {
        list.iter()
            .map(|a| {
                let location = a.location.as_ref().unwrap();
                let s3 = location.s3_location.as_ref().unwrap();
                let mut artifact = json!({"name": a.name, "location": {"type": location.r#type, "s3Location": {"bucketName": s3.bucket_name, "objectKey": s3.object_key}}});
                // An empty string is how proto3 says "absent".
                if !a.revision.is_empty() {
                    artifact["revision"] = json!(a.revision);
                }
                artifact
            })
            .collect()
    };
    let context = data.pipeline_context.as_ref().unwrap();
    let credentials = data.artifact_credentials.as_ref().unwrap();
    let key = data.encryption_key.as_ref().unwrap();
    let mut value = json!({
        "actionTypeId": {"category": category, "owner": owner, "provider": action_type.provider, "version": action_type.version},
        "actionConfiguration": {"configuration": data.action_configuration.as_ref().unwrap().configuration},
        "pipelineContext": {
            "pipelineName": context.pipeline_name,
            "stage": {"name": context.stage.as_ref().unwrap().name},
            "action": {"name": context.action.as_ref().unwrap().name, "actionExecutionId": context.action.as_ref().unwrap().action_execution_id},
            "pipelineArn": context.pipeline_arn,
            "pipelineExecutionId": context.pipeline_execution_id,
        },
        "inputArtifacts": artifacts(&data.input_artifacts),
        "outputArtifacts": artifacts(&data.output_artifacts),
        "artifactCredentials": {"accessKeyId": credentials.access_key_id, "secretAccessKey": credentials.secret_access_key, "sessionToken": credentials.session_token},
        "encryptionKey": {"id": key.id, "type": key.r#type},
    });
    if !data.continuation_token.is_empty() {
        value["continuationToken"] = json!(data.continuation_token);
    }
    value
}

#[tokio::test]
async fn custom_lifecycle_poll_ack_details_continue_and_finish() {
    let mut h = common::start().await;
    let configuration: BTreeMap<String, String> = [("Env".to_owned(), "prod".to_owned())].into();
    let created = h.emulator.create_job(NewJob {
        configuration,
        ..NewJob::default()
    });

    // Poll: the request AWS got, and every field of what it returned.
    let polled = h.client.poll_for_jobs(poll(5)).await.unwrap().into_inner();
    assert_eq!(polled.jobs.len(), 1);
    let job = &polled.jobs[0];
    assert_eq!(job.id, created.job_id);
    assert_eq!(job.account_id, "123456789012");
    assert!(!job.nonce.is_empty());
    assert_eq!(
        aws_json(job.data.as_ref().unwrap()),
        h.emulator.job_data(&job.id).unwrap()
    );
    let received = h.emulator.requests_for("PollForJobs");
    assert_eq!(
        received[0].body,
        json!({"actionTypeId": {"category": "Build", "owner": "Custom", "provider": "CpgwDevBuilder", "version": "1"}, "maxBatchSize": 5})
    );
    assert_eq!(polled.aws_request_id, received[0].request_id);
    // Handed out once: a second poll finds nothing.
    assert!(
        h.client
            .poll_for_jobs(poll(5))
            .await
            .unwrap()
            .into_inner()
            .jobs
            .is_empty()
    );

    let ack = h
        .client
        .acknowledge_job(v1::AcknowledgeJobRequest {
            target: String::new(),
            job_id: job.id.clone(),
            nonce: job.nonce.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.status(), JobStatus::InProgress);
    assert_eq!(
        h.emulator.requests_for("AcknowledgeJob")[0].body,
        json!({"jobId": job.id, "nonce": job.nonce})
    );

    let details = h
        .client
        .get_job_details(v1::GetJobDetailsRequest {
            target: String::new(),
            job_id: job.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .job_details
        .unwrap();
    assert_eq!(details.id, job.id);
    assert_eq!(details.account_id, "123456789012");
    assert_eq!(
        aws_json(details.data.as_ref().unwrap()),
        h.emulator.job_data(&job.id).unwrap()
    );

    // Continuation: AWS queues a job that carries the token.
    h.client
        .put_job_success_result(v1::PutJobSuccessResultRequest {
            job_id: job.id.clone(),
            continuation_token: "halfway".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let next = h
        .client
        .poll_for_jobs(poll(5))
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(next.len(), 1);
    let continuation = &next[0];
    assert_ne!(continuation.id, job.id);
    assert_eq!(
        continuation.data.as_ref().unwrap().continuation_token,
        "halfway"
    );
    assert_eq!(
        h.emulator
            .job(&continuation.id)
            .unwrap()
            .continuation_of
            .as_deref(),
        Some(job.id.as_str())
    );
    h.client
        .acknowledge_job(v1::AcknowledgeJobRequest {
            target: String::new(),
            job_id: continuation.id.clone(),
            nonce: continuation.nonce.clone(),
        })
        .await
        .unwrap();
    h.client
        .put_job_success_result(v1::PutJobSuccessResultRequest {
            job_id: continuation.id.clone(),
            output_variables: [("RESULT".to_owned(), "done".to_owned())].into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        h.emulator.job(&continuation.id).unwrap().state,
        JobState::Succeeded
    );
}

#[tokio::test]
async fn custom_lifecycle_poll_ack_fail() {
    let mut h = common::start().await;
    h.emulator.create_custom_job();
    let job = h
        .client
        .poll_for_jobs(poll(1))
        .await
        .unwrap()
        .into_inner()
        .jobs
        .remove(0);
    h.client
        .acknowledge_job(v1::AcknowledgeJobRequest {
            target: String::new(),
            job_id: job.id.clone(),
            nonce: job.nonce.clone(),
        })
        .await
        .unwrap();
    let response = h
        .client
        .put_job_failure_result(v1::PutJobFailureResultRequest {
            target: String::new(),
            job_id: job.id.clone(),
            failure_details: Some(v1::FailureDetails {
                r#type: FailureType::ConfigurationError.into(),
                message: "missing ProjectName".into(),
                external_execution_id: "run-9".into(),
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let received = h.emulator.requests_for("PutJobFailureResult");
    assert_eq!(
        received[0].body,
        json!({"jobId": job.id, "failureDetails": {"type": "ConfigurationError", "message": "missing ProjectName", "externalExecutionId": "run-9"}})
    );
    assert_eq!(response.aws_request_id, received[0].request_id);
    let snapshot = h.emulator.job(&job.id).unwrap();
    assert_eq!(snapshot.state, JobState::Failed);
    // A failed job takes no further result.
    let status = h
        .client
        .put_job_success_result(v1::PutJobSuccessResultRequest {
            job_id: job.id,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
}

/// A gateway holding the partner's client token: the worker sends none.
async fn partner_gateway() -> (
    common::Harness,
    tempfile_path::TempFile,
    codepipeline_emulator::CreatedJob,
) {
    let emulator = codepipeline_emulator::Emulator::start(Default::default())
        .await
        .unwrap();
    let job = emulator.create_third_party_job();
    let file = tempfile_path::TempFile::with(
        &json!({ job.client_id.clone().unwrap(): job.client_token.clone().unwrap() }).to_string(),
    );
    let mut settings = common::settings();
    settings.client_tokens = Some(ClientTokenSettings {
        path: file.0.clone(),
        reload_interval: std::time::Duration::from_secs(60),
    });
    let h = common::start_against(emulator, settings, None).await;
    (h, file, job)
}

mod tempfile_path {
    pub struct TempFile(pub std::path::PathBuf);
    impl TempFile {
        pub fn with(content: &str) -> TempFile {
            let path = std::env::temp_dir().join(format!(
                "cpgw-tokens-{}-{}.json",
                std::process::id(),
                rand_suffix()
            ));
            std::fs::write(&path, content).unwrap();
            TempFile(path)
        }
    }
    fn rand_suffix() -> u128 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    }
    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

#[tokio::test]
async fn partner_lifecycle_with_the_client_token_map_needs_no_secret() {
    let (mut h, _file, created) = partner_gateway().await;
    let token = created.client_token.clone().unwrap();

    let polled = h
        .client
        .poll_for_third_party_jobs(v1::PollForThirdPartyJobsRequest {
            target: String::new(),
            action_type_id: Some(partner_type()),
            max_batch_size: Some(2),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        polled.jobs,
        [v1::ThirdPartyJob {
            target: String::new(),
            client_id: created.client_id.clone().unwrap(),
            job_id: created.job_id.clone()
        }]
    );

    // No clientToken, no clientId: the gateway knows the job from the poll.
    let details = h
        .client
        .get_third_party_job_details(v1::GetThirdPartyJobDetailsRequest {
            job_id: created.job_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .job_details
        .unwrap();
    assert_eq!(
        aws_json(details.data.as_ref().unwrap()),
        h.emulator.job_data(&created.job_id).unwrap()
    );
    assert_eq!(
        h.emulator.requests_for("GetThirdPartyJobDetails")[0].body,
        json!({"jobId": created.job_id, "clientToken": token})
    );

    let ack = h
        .client
        .acknowledge_third_party_job(v1::AcknowledgeThirdPartyJobRequest {
            job_id: created.job_id.clone(),
            nonce: details.nonce.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.status(), JobStatus::InProgress);

    h.client
        .put_third_party_job_success_result(v1::PutThirdPartyJobSuccessResultRequest {
            job_id: created.job_id.clone(),
            continuation_token: "partner-halfway".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let next = h
        .client
        .poll_for_third_party_jobs(v1::PollForThirdPartyJobsRequest {
            target: String::new(),
            action_type_id: Some(partner_type()),
            max_batch_size: None,
        })
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(next.len(), 1);
    let continuation = next[0].job_id.clone();
    let details = h
        .client
        .get_third_party_job_details(v1::GetThirdPartyJobDetailsRequest {
            job_id: continuation.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .job_details
        .unwrap();
    assert_eq!(details.data.unwrap().continuation_token, "partner-halfway");
    h.client
        .acknowledge_third_party_job(v1::AcknowledgeThirdPartyJobRequest {
            job_id: continuation.clone(),
            nonce: details.nonce,
            ..Default::default()
        })
        .await
        .unwrap();
    h.client
        .put_third_party_job_success_result(v1::PutThirdPartyJobSuccessResultRequest {
            job_id: continuation.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        h.emulator.job(&continuation).unwrap().state,
        JobState::Succeeded
    );
    // Every call reached AWS with the real token.
    for request in h.emulator.requests() {
        if request.operation != "PollForThirdPartyJobs" {
            assert_eq!(request.body["clientToken"], token, "{}", request.operation);
        }
    }
}

#[tokio::test]
async fn partner_failure_by_client_id_and_a_callers_token_wins() {
    let (mut h, _file, created) = partner_gateway().await;
    // Not polled through the gateway: the worker names its client.
    h.client
        .put_third_party_job_failure_result(v1::PutThirdPartyJobFailureResultRequest {
            job_id: created.job_id.clone(),
            client_id: created.client_id.clone().unwrap(),
            failure_details: Some(v1::FailureDetails {
                r#type: FailureType::JobFailed.into(),
                message: "deploy failed".into(),
                external_execution_id: String::new(),
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        h.emulator.requests_for("PutThirdPartyJobFailureResult")[0].body,
        json!({"jobId": created.job_id, "clientToken": created.client_token, "failureDetails": {"type": "JobFailed", "message": "deploy failed"}})
    );
    assert_eq!(
        h.emulator.job(&created.job_id).unwrap().state,
        JobState::Failed
    );

    // A token the caller sends is used as it is, even with the map on.
    let other = h.emulator.create_third_party_job();
    let status = h
        .client
        .get_third_party_job_details(v1::GetThirdPartyJobDetailsRequest {
            target: String::new(),
            job_id: other.job_id.clone(),
            client_token: "callers-own-token".into(),
            client_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(
        h.emulator.requests_for("GetThirdPartyJobDetails")[0].body["clientToken"],
        "callers-own-token"
    );
}

#[tokio::test]
async fn without_a_token_or_a_map_entry_nothing_is_forwarded() {
    let (mut h, _file, _created) = partner_gateway().await;
    let unknown_job = h.emulator.create_third_party_job(); // not in the map, not polled
    let status = h
        .client
        .acknowledge_third_party_job(v1::AcknowledgeThirdPartyJobRequest {
            job_id: unknown_job.job_id,
            nonce: "n".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields: Vec<_> = status
        .get_details_bad_request()
        .unwrap()
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(fields, ["clientToken"]);
    assert!(h.emulator.requests().is_empty());
}

#[tokio::test]
async fn new_error_rows() {
    let mut h = common::start().await;

    // ActionTypeNotFoundException -> NOT_FOUND
    let mut unknown = custom_type();
    unknown.provider = "NoSuchProvider".into();
    let status = h
        .client
        .poll_for_jobs(v1::PollForJobsRequest {
            action_type_id: Some(unknown),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(
        status.get_details_error_info().unwrap().reason,
        "ACTION_TYPE_NOT_FOUND"
    );

    // InvalidNonceException -> FAILED_PRECONDITION, saying what it means
    h.emulator.create_custom_job();
    let job = h
        .client
        .poll_for_jobs(poll(1))
        .await
        .unwrap()
        .into_inner()
        .jobs
        .remove(0);
    let status = h
        .client
        .acknowledge_job(v1::AcknowledgeJobRequest {
            target: String::new(),
            job_id: job.id.clone(),
            nonce: "not-the-nonce".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(
        status.get_details_error_info().unwrap().reason,
        "INVALID_NONCE"
    );
    assert!(
        status.message().contains("another worker"),
        "{}",
        status.message()
    );

    // InvalidJobException -> FAILED_PRECONDITION
    let status = h
        .client
        .get_third_party_job_details(v1::GetThirdPartyJobDetailsRequest {
            job_id: job.id.clone(),
            client_token: "t".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(
        status.get_details_error_info().unwrap().reason,
        "INVALID_JOB"
    );
}

#[tokio::test]
async fn an_acknowledgement_retried_after_it_landed_says_so() {
    let mut h = common::start().await;
    h.emulator.create_custom_job();
    let job = h
        .client
        .poll_for_jobs(poll(1))
        .await
        .unwrap()
        .into_inner()
        .jobs
        .remove(0);
    h.emulator.inject_fault(Fault::for_operation(
        "AcknowledgeJob",
        FaultKind::ResetAfterApply,
        1,
    ));
    let status = h
        .client
        .acknowledge_job(v1::AcknowledgeJobRequest {
            target: String::new(),
            job_id: job.id.clone(),
            nonce: job.nonce,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    let info = status.get_details_error_info().unwrap();
    assert_eq!(info.reason, "INVALID_NONCE");
    assert_eq!(
        info.metadata[metadata::EARLIER_ATTEMPT_MAY_HAVE_APPLIED],
        "true"
    );
    assert_eq!(h.emulator.job(&job.id).unwrap().state, JobState::InProgress);
}

#[tokio::test]
async fn polls_are_retried_through_throttling_and_honour_query_params() {
    let mut h = common::start().await;
    let tagged = h.emulator.create_job(NewJob {
        configuration: [("Queue".to_owned(), "gpu".to_owned())].into(),
        ..NewJob::default()
    });
    h.emulator.create_custom_job();
    h.emulator
        .inject_fault(Fault::for_operation("PollForJobs", FaultKind::Throttle, 2));
    let mut request = poll(10);
    request.query_param.insert("Queue".into(), "gpu".into());
    let jobs = h
        .client
        .poll_for_jobs(request)
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(
        jobs.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
        [tagged.job_id.as_str()]
    );
    assert_eq!(h.emulator.requests_for("PollForJobs").len(), 3);
}

#[tokio::test]
async fn compute_actions_are_polled_and_their_category_round_trips() {
    let mut h = common::start().await;
    let job = h.emulator.create_job(NewJob {
        action_type_id: Some(EmuActionTypeId::new(
            "Compute",
            "Custom",
            "CpgwCompute",
            "1",
        )),
        ..NewJob::default()
    });
    let compute = v1::ActionTypeId {
        category: ActionCategory::Compute.into(),
        owner: ActionOwner::Custom.into(),
        provider: "CpgwCompute".into(),
        version: "1".into(),
    };
    let jobs = h
        .client
        .poll_for_jobs(v1::PollForJobsRequest {
            action_type_id: Some(compute.clone()),
            max_batch_size: Some(5),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].id, job.job_id);
    let data = jobs[0].data.as_ref().unwrap();
    assert_eq!(data.action_type_id.as_ref(), Some(&compute));
    assert_eq!(
        h.emulator.requests_for("PollForJobs")[0].body["actionTypeId"]["category"],
        "Compute"
    );
}

#[tokio::test]
async fn invalid_lifecycle_requests_never_reach_aws() {
    let mut h = common::start().await;
    let mut no_owner = custom_type();
    no_owner.owner = 0;
    let status = h
        .client
        .poll_for_jobs(v1::PollForJobsRequest {
            action_type_id: Some(no_owner),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        status.get_details_bad_request().unwrap().field_violations[0].field,
        "actionTypeId.owner"
    );
    // A partner action type polled as a custom one, and the reverse.
    let status = h
        .client
        .poll_for_jobs(v1::PollForJobsRequest {
            action_type_id: Some(partner_type()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let violation = &status.get_details_bad_request().unwrap().field_violations[0];
    assert_eq!(violation.field, "actionTypeId.owner");
    assert!(
        violation.description.contains("ACTION_OWNER_CUSTOM"),
        "{violation:?}"
    );
    let status = h
        .client
        .poll_for_third_party_jobs(v1::PollForThirdPartyJobsRequest {
            action_type_id: Some(custom_type()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        status.get_details_bad_request().unwrap().field_violations[0].field,
        "actionTypeId.owner"
    );
    let status = h.client.poll_for_jobs(poll(0)).await.unwrap_err();
    assert_eq!(
        status.get_details_bad_request().unwrap().field_violations[0].field,
        "maxBatchSize"
    );
    let status = h
        .client
        .acknowledge_job(v1::AcknowledgeJobRequest {
            target: String::new(),
            job_id: common::CUSTOM_JOB_ID_SHAPE.into(),
            nonce: "n".repeat(51),
        })
        .await
        .unwrap_err();
    assert_eq!(
        status.get_details_bad_request().unwrap().field_violations[0].field,
        "nonce"
    );
    let status = h
        .client
        .put_job_failure_result(v1::PutJobFailureResultRequest {
            target: String::new(),
            job_id: common::CUSTOM_JOB_ID_SHAPE.into(),
            failure_details: Some(v1::FailureDetails {
                r#type: 0,
                message: "m".repeat(5001),
                external_execution_id: String::new(),
            }),
        })
        .await
        .unwrap_err();
    let fields: Vec<_> = status
        .get_details_bad_request()
        .unwrap()
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(fields, ["failureDetails.type", "failureDetails.message"]);
    let status = h
        .client
        .poll_for_third_party_jobs(v1::PollForThirdPartyJobsRequest {
            target: String::new(),
            action_type_id: None,
            max_batch_size: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(h.emulator.requests().is_empty());
    // The emulator's own defaults are what the gateway's enums name.
    assert_eq!(
        EmuActionTypeId::default_custom().provider,
        custom_type().provider
    );
    assert_eq!(EmuActionTypeId::default_third_party().owner, "ThirdParty");
}

#[tokio::test]
async fn a_rotated_client_token_file_takes_effect_without_a_restart() {
    let emulator = codepipeline_emulator::Emulator::start(Default::default())
        .await
        .unwrap();
    let first = emulator.create_third_party_job();
    let second = emulator.create_third_party_job(); // another partner client
    let entry = |job: &codepipeline_emulator::CreatedJob| {
        (
            job.client_id.clone().unwrap(),
            json!(job.client_token.clone().unwrap()),
        )
    };
    let file = tempfile_path::TempFile::with(
        &Value::Object([entry(&first)].into_iter().collect()).to_string(),
    );
    let mut settings = common::settings();
    settings.client_tokens = Some(ClientTokenSettings {
        path: file.0.clone(),
        reload_interval: std::time::Duration::from_millis(50),
    });
    let mut h = common::start_against(emulator, settings, None).await;
    let details = |job: &codepipeline_emulator::CreatedJob| v1::GetThirdPartyJobDetailsRequest {
        job_id: job.job_id.clone(),
        client_id: job.client_id.clone().unwrap(),
        ..Default::default()
    };
    h.client
        .get_third_party_job_details(details(&first))
        .await
        .expect("first client is mapped");
    let status = h
        .client
        .get_third_party_job_details(details(&second))
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::InvalidArgument,
        "second client not mapped yet"
    );

    // Broken content is refused; the last good map stays in use.
    std::fs::write(&file.0, "{ not json").unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    h.client
        .get_third_party_job_details(details(&first))
        .await
        .expect("last good map kept");

    std::fs::write(
        &file.0,
        Value::Object([entry(&first), entry(&second)].into_iter().collect()).to_string(),
    )
    .unwrap();
    let reloaded = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            if h.client
                .get_third_party_job_details(details(&second))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    })
    .await;
    assert!(reloaded.is_ok(), "the new client token was never picked up");
}

/// Each new rule at its boundaries: the valid side reaches AWS (which may
/// still refuse, e.g. an unknown action type), the invalid side never does
/// and names its field.
#[tokio::test]
async fn lifecycle_rules_at_their_boundaries() {
    let mut h = common::start().await;
    let s = |n: usize| "x".repeat(n);
    let with_type = |f: &dyn Fn(&mut v1::ActionTypeId)| {
        let mut id = custom_type();
        f(&mut id);
        v1::PollForJobsRequest {
            action_type_id: Some(id),
            ..Default::default()
        }
    };
    let mut polls: Vec<(&str, v1::PollForJobsRequest, Option<&str>)> = vec![
        ("provider 35", with_type(&|t| t.provider = s(35)), None),
        (
            "provider 36",
            with_type(&|t| t.provider = s(36)),
            Some("actionTypeId.provider"),
        ),
        (
            "provider pattern",
            with_type(&|t| t.provider = "a.b".into()),
            Some("actionTypeId.provider"),
        ),
        ("version 9", with_type(&|t| t.version = s(9)), None),
        (
            "version 10",
            with_type(&|t| t.version = s(10)),
            Some("actionTypeId.version"),
        ),
        (
            "category unknown number",
            with_type(&|t| t.category = 42),
            Some("actionTypeId.category"),
        ),
        (
            "maxBatchSize 1",
            v1::PollForJobsRequest {
                max_batch_size: Some(1),
                ..poll(1)
            },
            None,
        ),
        (
            "maxBatchSize 0",
            v1::PollForJobsRequest {
                max_batch_size: Some(0),
                ..poll(1)
            },
            Some("maxBatchSize"),
        ),
    ];
    for (key, value, bad) in [
        (s(50), s(50), None),
        (
            s(51),
            s(1),
            Some(r#"queryParam["xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"]"#),
        ),
        ("k".into(), s(51), Some(r#"queryParam["k"]"#)),
        ("k".into(), "a b".into(), Some(r#"queryParam["k"]"#)),
    ] {
        let mut request = poll(1);
        request.query_param.insert(key, value);
        polls.push(("queryParam", request, bad));
    }
    for (what, request, bad) in polls {
        let before = h.emulator.requests().len();
        let result = h.client.poll_for_jobs(request).await;
        match bad {
            None => {
                if let Err(status) = &result {
                    assert_ne!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
                }
                assert_eq!(
                    h.emulator.requests().len(),
                    before + 1,
                    "{what}: not forwarded"
                );
            }
            Some(field) => {
                let status = result.expect_err(what);
                let fields: Vec<_> = status
                    .get_details_bad_request()
                    .unwrap()
                    .field_violations
                    .into_iter()
                    .map(|v| v.field)
                    .collect();
                assert_eq!(fields, [field], "{what}");
                assert_eq!(h.emulator.requests().len(), before, "{what}: forwarded");
            }
        }
    }

    let job = common::CUSTOM_JOB_ID_SHAPE.to_owned();
    for (nonce, bad) in [(50, false), (51, true)] {
        let before = h.emulator.requests().len();
        let result = h
            .client
            .acknowledge_job(v1::AcknowledgeJobRequest {
                target: String::new(),
                job_id: job.clone(),
                nonce: s(nonce),
            })
            .await;
        assert_eq!(
            result.unwrap_err().code() == Code::InvalidArgument,
            bad,
            "nonce {nonce}"
        );
        assert_eq!(h.emulator.requests().len(), before + usize::from(!bad));
    }
    for (message, external, bad) in [(5000, 1500, false), (5001, 1, true), (1, 1501, true)] {
        let before = h.emulator.requests().len();
        let result = h
            .client
            .put_job_failure_result(v1::PutJobFailureResultRequest {
                target: String::new(),
                job_id: job.clone(),
                failure_details: Some(v1::FailureDetails {
                    r#type: FailureType::SystemUnavailable.into(),
                    message: s(message),
                    external_execution_id: s(external),
                }),
            })
            .await;
        // The valid one reaches AWS, which does not know the job.
        let code = result.unwrap_err().code();
        assert_eq!(
            code == Code::InvalidArgument,
            bad,
            "message {message} external {external}"
        );
        assert_eq!(h.emulator.requests().len(), before + usize::from(!bad));
    }
    for (job_len, token_len, client_id, bad) in [
        (512, 256, String::new(), None),
        (513, 1, String::new(), Some("jobId")),
        (1, 257, String::new(), Some("clientToken")),
        (1, 1, "not-a-uuid".to_owned(), Some("clientId")),
    ] {
        let before = h.emulator.requests().len();
        let status = h
            .client
            .put_third_party_job_failure_result(v1::PutThirdPartyJobFailureResultRequest {
                target: String::new(),
                job_id: s(job_len),
                client_token: s(token_len),
                client_id,
                failure_details: Some(v1::FailureDetails {
                    r#type: FailureType::JobFailed.into(),
                    message: "m".into(),
                    external_execution_id: String::new(),
                }),
            })
            .await
            .unwrap_err();
        match bad {
            None => {
                assert_eq!(status.code(), Code::NotFound);
                assert_eq!(h.emulator.requests().len(), before + 1);
            }
            Some(field) => {
                assert_eq!(
                    status.get_details_bad_request().unwrap().field_violations[0].field,
                    field
                );
                assert_eq!(h.emulator.requests().len(), before);
            }
        }
    }
}
