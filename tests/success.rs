//! Both success RPCs end to end: every field reaches AWS exactly as sent.

mod common;

use codepipeline_emulator::JobState;
use codepipeline_gateway::proto::v1::{
    CurrentRevision, ExecutionDetails, PutJobSuccessResultRequest,
    PutThirdPartyJobSuccessResultRequest,
};
use serde_json::json;

fn revision() -> CurrentRevision {
    CurrentRevision {
        revision: "9f3c2ab".into(),
        change_identifier: "change-42".into(),
        created: Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 250_000_000,
        }),
        revision_summary: "Fix the flaky build".into(),
    }
}

#[tokio::test]
async fn custom_job_success_forwards_every_field() {
    let mut h = common::start().await;
    let job = h.emulator.create_custom_job();

    let response = h
        .client
        .put_job_success_result(PutJobSuccessResultRequest {
            target: String::new(),
            job_id: job.job_id.clone(),
            current_revision: Some(revision()),
            continuation_token: String::new(),
            execution_details: Some(ExecutionDetails {
                summary: "deployed".into(),
                external_execution_id: "run-7".into(),
                percent_complete: Some(0),
            }),
            output_variables: [("IMAGE_TAG".to_owned(), "v1.2.3".to_owned())].into(),
        })
        .await
        .expect("success")
        .into_inner();

    let received = common::received(&h.emulator, "PutJobSuccessResult");
    assert_eq!(received.len(), 1);
    assert!(received[0].signature_valid);
    assert_eq!(
        received[0].body,
        json!({
            "jobId": job.job_id,
            "currentRevision": {
                "revision": "9f3c2ab",
                "changeIdentifier": "change-42",
                "created": 1_700_000_000.25,
                "revisionSummary": "Fix the flaky build",
            },
            "executionDetails": {
                "summary": "deployed",
                "externalExecutionId": "run-7",
                "percentComplete": 0,
            },
            "outputVariables": {"IMAGE_TAG": "v1.2.3"},
        })
    );
    assert_eq!(response.aws_request_id, received[0].request_id);
    assert_eq!(
        h.emulator.job(&job.job_id).unwrap().state,
        JobState::Succeeded
    );
}

#[tokio::test]
async fn empty_strings_and_absent_messages_are_not_sent() {
    let mut h = common::start().await;
    let job = h.emulator.create_custom_job();
    h.client
        .put_job_success_result(PutJobSuccessResultRequest {
            job_id: job.job_id.clone(),
            execution_details: Some(ExecutionDetails::default()),
            ..Default::default()
        })
        .await
        .expect("success");
    let received = common::received(&h.emulator, "PutJobSuccessResult");
    assert_eq!(
        received[0].body,
        json!({"jobId": job.job_id, "executionDetails": {}})
    );
}

#[tokio::test]
async fn a_continuation_token_closes_the_job_and_the_final_result_goes_to_the_next() {
    let mut h = common::start().await;
    let job = h.emulator.create_custom_job();
    h.client
        .put_job_success_result(PutJobSuccessResultRequest {
            job_id: job.job_id.clone(),
            continuation_token: "step-2".into(),
            execution_details: Some(ExecutionDetails {
                percent_complete: Some(50),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("first result");
    assert_eq!(
        h.emulator.job(&job.job_id).unwrap().state,
        JobState::Succeeded
    );
    // CodePipeline hands the token back in a new job of the same action.
    let next = h
        .emulator
        .jobs()
        .into_iter()
        .find(|j| j.continuation_of.as_deref() == Some(job.job_id.as_str()))
        .expect("a continuation job");
    assert_eq!(
        h.emulator.job_data(&next.job_id).unwrap()["continuationToken"],
        "step-2"
    );
    h.client
        .put_job_success_result(PutJobSuccessResultRequest {
            job_id: next.job_id.clone(),
            output_variables: [("DONE".to_owned(), "yes".to_owned())].into(),
            ..Default::default()
        })
        .await
        .expect("final result");
    let snapshot = h.emulator.job(&next.job_id).unwrap();
    assert_eq!(snapshot.state, JobState::Succeeded);
    assert_eq!(snapshot.results_received, 1);
    let bodies: Vec<_> = common::received(&h.emulator, "PutJobSuccessResult")
        .into_iter()
        .map(|r| r.body)
        .collect();
    assert_eq!(bodies[0]["continuationToken"], "step-2");
    assert_eq!(bodies[0]["executionDetails"]["percentComplete"], 50);
    assert_eq!(bodies[1]["outputVariables"], json!({"DONE": "yes"}));
}

#[tokio::test]
async fn third_party_job_success_forwards_every_field() {
    let mut h = common::start().await;
    let job = h.emulator.create_third_party_job();
    let token = job.client_token.clone().unwrap();

    let response = h
        .client
        .put_third_party_job_success_result(PutThirdPartyJobSuccessResultRequest {
            target: String::new(),
            job_id: job.job_id.clone(),
            client_token: token.clone(),
            current_revision: Some(revision()),
            continuation_token: "partner-step".into(),
            execution_details: Some(ExecutionDetails {
                summary: "partner ran".into(),
                external_execution_id: "ext-1".into(),
                percent_complete: Some(0),
            }),
            client_id: String::new(),
        })
        .await
        .expect("success")
        .into_inner();

    let received = common::received(&h.emulator, "PutThirdPartyJobSuccessResult");
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].body,
        json!({
            "jobId": job.job_id,
            "clientToken": token,
            "currentRevision": {
                "revision": "9f3c2ab",
                "changeIdentifier": "change-42",
                "created": 1_700_000_000.25,
                "revisionSummary": "Fix the flaky build",
            },
            "continuationToken": "partner-step",
            "executionDetails": {
                "summary": "partner ran",
                "externalExecutionId": "ext-1",
                "percentComplete": 0,
            },
        })
    );
    assert_eq!(response.aws_request_id, received[0].request_id);
}
