//! End-to-end tests with the real `aws-sdk-codepipeline` client.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_sdk_codepipeline::operation::RequestId;
use aws_sdk_codepipeline::primitives::DateTime;
use aws_sdk_codepipeline::types::{CurrentRevision, ExecutionDetails};
use codepipeline_emulator::{
    DEV_ACCESS_KEY_ID, DEV_REGION, DEV_SECRET_ACCESS_KEY, Fault, FaultKind, JobKind, JobState,
};
use common::{client, client_with, code, emulator, is_transport_error};
use serde_json::json;

fn revision() -> CurrentRevision {
    CurrentRevision::builder()
        .revision("rev-1")
        .change_identifier("change-1")
        .created(DateTime::from_fractional_secs(1_700_000_000, 0.5))
        .revision_summary("summary")
        .build()
        .unwrap()
}

fn details(percent: i32) -> ExecutionDetails {
    ExecutionDetails::builder()
        .summary("built")
        .external_execution_id("build-42")
        .percent_complete(percent)
        .build()
}

#[tokio::test]
async fn put_job_success_result_with_every_field() {
    let emu = emulator().await;
    let job = emu.create_custom_job();
    assert_eq!(job.kind, JobKind::Custom);
    let out = client(&emu)
        .put_job_success_result()
        .job_id(&job.job_id)
        .current_revision(revision())
        .execution_details(details(0))
        .output_variables("IMAGE_TAG", "v1.2.3")
        .output_variables("empty", "")
        .send()
        .await
        .expect("success");

    let snap = emu.job(&job.job_id).unwrap();
    assert_eq!(snap.state, JobState::Succeeded);
    assert_eq!(snap.results_received, 1);
    assert_eq!(snap.continuation_token, None);

    let recorded = emu.requests_for("PutJobSuccessResult");
    assert_eq!(recorded.len(), 1);
    let r = &recorded[0];
    assert!(r.signature_valid);
    assert_eq!(
        (r.status, r.error_type.as_deref(), r.fault.as_deref()),
        (200, None, None)
    );
    assert_eq!(Some(r.request_id.as_str()), out.request_id());
    assert_eq!(
        r.body,
        json!({
            "jobId": job.job_id,
            "currentRevision": {"revision": "rev-1", "changeIdentifier": "change-1", "created": 1_700_000_000.5, "revisionSummary": "summary"},
            "executionDetails": {"summary": "built", "externalExecutionId": "build-42", "percentComplete": 0},
            "outputVariables": {"IMAGE_TAG": "v1.2.3", "empty": ""}
        })
    );
    // The serialized request is camelCase JSON: RecordedRequest for the control API.
    let as_json = serde_json::to_value(r).unwrap();
    assert_eq!(as_json["signatureValid"], json!(true));
    assert_eq!(as_json["errorType"], json!(null));
}

#[tokio::test]
async fn put_third_party_job_success_result_with_every_field() {
    let emu = emulator().await;
    let job = emu.create_third_party_job();
    assert_eq!(job.kind, JobKind::ThirdParty);
    let token = job.client_token.clone().unwrap();
    let c = client(&emu);

    let err = c
        .put_third_party_job_success_result()
        .job_id(&job.job_id)
        .client_token("not-the-token")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), "InvalidClientTokenException");
    assert!(
        err.as_service_error()
            .unwrap()
            .is_invalid_client_token_exception()
    );

    c.put_third_party_job_success_result()
        .job_id(&job.job_id)
        .client_token(&token)
        .current_revision(revision())
        .continuation_token("cont-1")
        .execution_details(details(50))
        .send()
        .await
        .expect("continuation");
    let snap = emu.job(&job.job_id).unwrap();
    assert_eq!(
        (snap.state, snap.results_received),
        (JobState::Succeeded, 1)
    );
    assert_eq!(snap.continuation_token.as_deref(), Some("cont-1"));

    // The action goes on in the continuation job.
    let continuation = continuation_of(&emu, &job.job_id);
    c.put_third_party_job_success_result()
        .job_id(&continuation)
        .client_token(&token)
        .execution_details(details(100))
        .send()
        .await
        .expect("final success");
    let snap = emu.job(&continuation).unwrap();
    assert_eq!(
        (snap.state, snap.results_received),
        (JobState::Succeeded, 1)
    );

    let recorded = emu.requests_for("PutThirdPartyJobSuccessResult");
    let statuses: Vec<_> = recorded
        .iter()
        .map(|r| (r.status, r.error_type.clone()))
        .collect();
    assert_eq!(
        statuses,
        vec![
            (400, Some("InvalidClientTokenException".to_owned())),
            (200, None),
            (200, None)
        ]
    );
    assert_eq!(
        recorded[1].body,
        json!({
            "jobId": job.job_id,
            "clientToken": token,
            "currentRevision": {"revision": "rev-1", "changeIdentifier": "change-1", "created": 1_700_000_000.5, "revisionSummary": "summary"},
            "continuationToken": "cont-1",
            "executionDetails": {"summary": "built", "externalExecutionId": "build-42", "percentComplete": 50}
        })
    );
}

#[tokio::test]
async fn job_state_rules() {
    let emu = emulator().await;
    let c = client(&emu);
    let custom = emu.create_custom_job();
    let third = emu.create_third_party_job();

    let unknown = "0123abcd-0000-4000-8000-000000000000";
    let err = c
        .put_job_success_result()
        .job_id(unknown)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), "JobNotFoundException");
    assert!(err.as_service_error().unwrap().is_job_not_found_exception());
    // Third-party job through the custom-action operation, and vice versa.
    let err = c
        .put_job_success_result()
        .job_id(&third.job_id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), "JobNotFoundException");
    let err = c
        .put_third_party_job_success_result()
        .job_id(&custom.job_id)
        .client_token("t")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), "JobNotFoundException");
    // Unknown job with a bad token: existence is checked first.
    let err = c
        .put_third_party_job_success_result()
        .job_id(unknown)
        .client_token("bad")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), "JobNotFoundException");

    c.put_job_success_result()
        .job_id(&custom.job_id)
        .send()
        .await
        .unwrap();
    let err = c
        .put_job_success_result()
        .job_id(&custom.job_id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), "InvalidJobStateException");
    assert!(
        err.as_service_error()
            .unwrap()
            .is_invalid_job_state_exception()
    );
    let snap = emu.job(&custom.job_id).unwrap();
    assert_eq!(
        (snap.state, snap.results_received),
        (JobState::Succeeded, 1)
    );

    // Every response carries a distinct request id.
    let ids: std::collections::HashSet<_> =
        emu.requests().into_iter().map(|r| r.request_id).collect();
    assert_eq!(ids.len(), 6);
}

/// The continuation job queued by a continuation result on `job_id`.
fn continuation_of(emu: &codepipeline_emulator::Emulator, job_id: &str) -> String {
    emu.jobs()
        .into_iter()
        .find(|j| j.continuation_of.as_deref() == Some(job_id))
        .map(|j| j.job_id)
        .expect("a continuation job")
}

#[tokio::test]
async fn a_continuation_closes_the_job_and_the_action_goes_on_in_a_new_one() {
    let emu = emulator().await;
    let c = client(&emu);
    let mut job_id = emu.create_custom_job().job_id;
    for (i, token) in ["t1", "t2"].into_iter().enumerate() {
        c.put_job_success_result()
            .job_id(&job_id)
            .continuation_token(token)
            .execution_details(details(10 * (i as i32 + 1)))
            .send()
            .await
            .unwrap();
        let snap = emu.job(&job_id).unwrap();
        assert_eq!(snap.state, JobState::Succeeded);
        assert_eq!(snap.results_received, 1);
        assert_eq!(snap.continuation_token.as_deref(), Some(token));
        let err = c
            .put_job_success_result()
            .job_id(&job_id)
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&err), "InvalidJobStateException");
        job_id = continuation_of(&emu, &job_id);
        assert_eq!(
            emu.job_data(&job_id).unwrap()["continuationToken"],
            serde_json::json!(token)
        );
    }
    let err = c
        .put_job_success_result()
        .job_id(&job_id)
        .continuation_token("t3")
        .output_variables("k", "v")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), "ValidationException");
    assert!(err.as_service_error().unwrap().is_validation_exception());
    assert_eq!(emu.job(&job_id).unwrap().results_received, 0);

    c.put_job_success_result()
        .job_id(&job_id)
        .output_variables("k", "v")
        .send()
        .await
        .unwrap();
    let snap = emu.job(&job_id).unwrap();
    assert_eq!(
        (snap.state, snap.results_received),
        (JobState::Succeeded, 1)
    );
    assert_eq!(emu.jobs().len(), 3);
}

#[tokio::test]
async fn output_variables_size_limit() {
    let emu = emulator().await;
    let c = client(&emu);
    let job = emu.create_custom_job();
    // 3 keys of 2 bytes + values totalling 122875 bytes = 122881 bytes.
    let mut vars = HashMap::new();
    vars.insert("k1".to_owned(), "a".repeat(40_000));
    vars.insert("k2".to_owned(), "b".repeat(40_000));
    vars.insert("k3".to_owned(), "é".repeat(21_437) + "c"); // 42875 bytes, multi-byte
    let err = c
        .put_job_success_result()
        .job_id(&job.job_id)
        .set_output_variables(Some(vars.clone()))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), "OutputVariablesSizeExceededException");
    assert!(
        err.as_service_error()
            .unwrap()
            .is_output_variables_size_exceeded_exception()
    );
    assert_eq!(emu.job(&job.job_id).unwrap().state, JobState::Queued);

    // One byte less is exactly the limit and accepted.
    vars.insert("k3".to_owned(), "é".repeat(21_437));
    c.put_job_success_result()
        .job_id(&job.job_id)
        .set_output_variables(Some(vars))
        .send()
        .await
        .expect("122880 bytes is within the limit");
    assert_eq!(emu.job(&job.job_id).unwrap().state, JobState::Succeeded);
}

#[tokio::test]
async fn model_validation_through_the_sdk() {
    let emu = emulator().await;
    let c = client(&emu);
    let job = emu.create_custom_job();

    let err = c
        .put_job_success_result()
        .job_id(&job.job_id)
        .execution_details(details(101))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), "ValidationException");
    assert_eq!(
        err.as_service_error().unwrap().meta().message(),
        Some(
            "1 validation error detected: Value at 'executionDetails.percentComplete' failed to satisfy constraint: Member must have value less than or equal to 100"
        )
    );

    let err = c
        .put_job_success_result()
        .job_id("NOT-A-JOB-ID")
        .current_revision(
            CurrentRevision::builder()
                .revision("r")
                .change_identifier("x".repeat(101))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap_err();
    let message = err
        .as_service_error()
        .unwrap()
        .meta()
        .message()
        .unwrap()
        .to_owned();
    assert!(
        message.starts_with("2 validation errors detected: "),
        "{message}"
    );
    assert!(message.contains("Value at 'jobId' failed to satisfy constraint: Member must satisfy regular expression pattern"));
    assert!(message.contains("Value at 'currentRevision.changeIdentifier' failed to satisfy constraint: Member must have length less than or equal to 100"));
    assert!(
        !message.contains("NOT-A-JOB-ID") && !message.contains("xxxx"),
        "values must not be echoed"
    );

    let snap = emu.job(&job.job_id).unwrap();
    assert_eq!((snap.state, snap.results_received), (JobState::Queued, 0));
    let recorded = emu.requests();
    assert!(
        recorded
            .iter()
            .all(|r| r.status == 400 && r.error_type.as_deref() == Some("ValidationException"))
    );
}

#[tokio::test]
async fn authentication() {
    let emu = emulator().await;
    let job = emu.create_custom_job();

    let wrong_secret = client_with(&emu, DEV_ACCESS_KEY_ID, "wrong-secret", None, DEV_REGION);
    let err = wrong_secret
        .put_job_success_result()
        .job_id(&job.job_id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), "InvalidSignatureException");
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 403);

    let unknown_key = client_with(
        &emu,
        "AKIDUNKNOWN000000000",
        DEV_SECRET_ACCESS_KEY,
        None,
        DEV_REGION,
    );
    let err = unknown_key
        .put_job_success_result()
        .job_id(&job.job_id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), "UnrecognizedClientException");

    let other_region = client_with(
        &emu,
        DEV_ACCESS_KEY_ID,
        DEV_SECRET_ACCESS_KEY,
        None,
        "eu-west-1",
    );
    let err = other_region
        .put_job_success_result()
        .job_id(&job.job_id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), "InvalidSignatureException");

    // Auth failures must not touch job state, and are recorded as unsigned.
    assert_eq!(emu.job(&job.job_id).unwrap().state, JobState::Queued);
    let recorded = emu.requests();
    assert_eq!(recorded.len(), 3);
    assert!(
        recorded
            .iter()
            .all(|r| !r.signature_valid && r.status == 403)
    );
    assert_eq!(recorded[0].operation, "PutJobSuccessResult");

    // Temporary credentials: X-Amz-Security-Token is signed and accepted.
    let with_token = client_with(
        &emu,
        DEV_ACCESS_KEY_ID,
        DEV_SECRET_ACCESS_KEY,
        Some("session-token".into()),
        DEV_REGION,
    );
    with_token
        .put_job_success_result()
        .job_id(&job.job_id)
        .send()
        .await
        .expect("good credentials pass");
    assert!(emu.requests().last().unwrap().signature_valid);
}

#[tokio::test]
async fn custom_credentials_and_region_in_config() {
    let emu = codepipeline_emulator::Emulator::start(codepipeline_emulator::EmulatorConfig {
        access_key_id: "AKIDCUSTOM".into(),
        secret_access_key: "custom-secret".into(),
        region: "eu-central-1".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(emu.config().region, "eu-central-1");
    assert_eq!(emu.endpoint_url(), format!("http://{}", emu.local_addr()));
    let job = emu.create_custom_job();
    let c = client_with(&emu, "AKIDCUSTOM", "custom-secret", None, "eu-central-1");
    c.put_job_success_result()
        .job_id(&job.job_id)
        .send()
        .await
        .unwrap();
    let err = client(&emu)
        .put_job_success_result()
        .job_id(&job.job_id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), "UnrecognizedClientException");
}

#[tokio::test]
async fn throttle_server_error_and_custom_error_faults() {
    let emu = emulator().await;
    let c = client(&emu);
    let job = emu.create_custom_job();
    emu.inject_fault(Fault::once(FaultKind::Throttle));
    emu.inject_fault(Fault::once(FaultKind::ServerError(503)));
    emu.inject_fault(Fault::once(FaultKind::ServerError(500)));
    emu.inject_fault(Fault::for_operation(
        "PutJobSuccessResult",
        FaultKind::Error {
            error_type: "AccessDeniedException".into(),
            status: 400,
            message: "denied".into(),
        },
        1,
    ));

    let expected = [
        ("ThrottlingException", 400),
        ("ServiceUnavailableException", 503),
        ("InternalFailure", 500),
        ("AccessDeniedException", 400),
    ];
    for (error_type, status) in expected {
        let err = c
            .put_job_success_result()
            .job_id(&job.job_id)
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&err), error_type);
        assert_eq!(err.raw_response().unwrap().status().as_u16(), status);
        assert!(
            err.raw_response()
                .unwrap()
                .headers()
                .get("x-amzn-RequestId")
                .is_some()
        );
    }
    assert_eq!(emu.job(&job.job_id).unwrap().results_received, 0);
    c.put_job_success_result()
        .job_id(&job.job_id)
        .send()
        .await
        .expect("faults used up");

    let faults: Vec<_> = emu.requests().into_iter().map(|r| r.fault).collect();
    assert_eq!(
        faults,
        vec![
            Some("throttle".to_owned()),
            Some("serverError(503)".to_owned()),
            Some("serverError(500)".to_owned()),
            Some("error(AccessDeniedException)".to_owned()),
            None
        ]
    );
}

#[tokio::test]
async fn faults_match_operation_count_and_wait_for_valid_requests() {
    let emu = emulator().await;
    let c = client(&emu);
    let custom = emu.create_custom_job();
    let third = emu.create_third_party_job();
    emu.inject_fault(Fault::for_operation(
        "PutThirdPartyJobSuccessResult",
        FaultKind::Throttle,
        2,
    ));

    // Other operation: unaffected.
    c.put_job_success_result()
        .job_id(&custom.job_id)
        .continuation_token("t")
        .send()
        .await
        .unwrap();
    // An invalid request does not consume the fault (faults apply after validation).
    let err = c
        .put_third_party_job_success_result()
        .job_id(&third.job_id)
        .client_token("")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), "ValidationException");
    for _ in 0..2 {
        let err = c
            .put_third_party_job_success_result()
            .job_id(&third.job_id)
            .client_token(third.client_token.as_deref().unwrap())
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&err), "ThrottlingException");
    }
    c.put_third_party_job_success_result()
        .job_id(&third.job_id)
        .client_token(third.client_token.as_deref().unwrap())
        .send()
        .await
        .unwrap();

    // clear_faults drops pending ones.
    emu.inject_fault(Fault::once(FaultKind::Throttle));
    emu.clear_faults();
    c.put_job_success_result()
        .job_id(continuation_of(&emu, &custom.job_id))
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn delay_fault_delays_then_applies() {
    let emu = emulator().await;
    let c = client(&emu);
    let job = emu.create_custom_job();
    emu.inject_fault(Fault::once(FaultKind::Delay(Duration::from_millis(300))));
    let started = Instant::now();
    c.put_job_success_result()
        .job_id(&job.job_id)
        .send()
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(emu.job(&job.job_id).unwrap().state, JobState::Succeeded);
    let r = emu.requests().pop().unwrap();
    assert_eq!((r.status, r.fault.as_deref()), (200, Some("delay(300ms)")));
}

#[tokio::test]
async fn delayed_request_keeps_its_arrival_position() {
    let emu = emulator().await;
    let slow_job = emu.create_custom_job();
    let fast_job = emu.create_custom_job();
    emu.inject_fault(Fault::once(FaultKind::Delay(Duration::from_millis(400))));
    let slow = {
        let c = client(&emu);
        let id = slow_job.job_id.clone();
        tokio::spawn(async move { c.put_job_success_result().job_id(id).send().await })
    };
    // Wait until the slow request has been recorded.
    while emu.requests().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    client(&emu)
        .put_job_success_result()
        .job_id(&fast_job.job_id)
        .send()
        .await
        .unwrap();
    slow.await.unwrap().unwrap();
    let bodies: Vec<_> = emu
        .requests()
        .into_iter()
        .map(|r| (r.body["jobId"].clone(), r.status))
        .collect();
    assert_eq!(
        bodies,
        vec![(json!(slow_job.job_id), 200), (json!(fast_job.job_id), 200)]
    );
}

#[tokio::test]
async fn reset_before_apply_is_a_transport_error_and_changes_nothing() {
    let emu = emulator().await;
    let c = client(&emu);
    let job = emu.create_custom_job();
    emu.inject_fault(Fault::once(FaultKind::ResetBeforeApply));
    let err = c
        .put_job_success_result()
        .job_id(&job.job_id)
        .send()
        .await
        .unwrap_err();
    assert!(
        is_transport_error(&err),
        "expected a dispatch/response error, got {err:?}"
    );
    assert!(err.raw_response().is_none());
    let snap = emu.job(&job.job_id).unwrap();
    assert_eq!((snap.state, snap.results_received), (JobState::Queued, 0));
    let r = emu.requests().pop().unwrap();
    assert_eq!(
        (r.status, r.fault.as_deref(), r.error_type),
        (0, Some("resetBeforeApply"), None)
    );
    // The client recovers on a new connection.
    c.put_job_success_result()
        .job_id(&job.job_id)
        .send()
        .await
        .unwrap();
    assert_eq!(emu.job(&job.job_id).unwrap().state, JobState::Succeeded);
}

#[tokio::test]
async fn reset_after_apply_leaves_the_job_succeeded() {
    let emu = emulator().await;
    let c = client(&emu);
    let job = emu.create_custom_job();
    emu.inject_fault(Fault::for_operation(
        "PutJobSuccessResult",
        FaultKind::ResetAfterApply,
        1,
    ));
    let err = c
        .put_job_success_result()
        .job_id(&job.job_id)
        .send()
        .await
        .unwrap_err();
    assert!(
        is_transport_error(&err),
        "expected a dispatch/response error, got {err:?}"
    );
    let snap = emu.job(&job.job_id).unwrap();
    assert_eq!(
        (snap.state, snap.results_received),
        (JobState::Succeeded, 1)
    );
    // A retry by the caller now sees the job already finished.
    let err = c
        .put_job_success_result()
        .job_id(&job.job_id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), "InvalidJobStateException");
}

#[tokio::test]
async fn many_concurrent_clients() {
    let emu = emulator().await;
    let c = client(&emu);
    let jobs: Vec<_> = (0..64).map(|_| emu.create_custom_job()).collect();
    let tasks: Vec<_> = jobs
        .iter()
        .map(|job| {
            let c = c.clone();
            let id = job.job_id.clone();
            tokio::spawn(async move { c.put_job_success_result().job_id(id).send().await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().expect("concurrent success");
    }
    assert!(
        jobs.iter()
            .all(|j| emu.job(&j.job_id).unwrap().state == JobState::Succeeded)
    );
    assert_eq!(emu.requests().len(), 64);
    emu.clear_requests();
    assert!(emu.requests().is_empty());
}

#[tokio::test]
async fn dropping_the_last_handle_stops_the_server() {
    let emu = emulator().await;
    let addr = emu.local_addr();
    let clone = emu.clone();
    drop(emu);
    // A remaining clone keeps it serving.
    let job = clone.create_custom_job();
    client(&clone)
        .put_job_success_result()
        .job_id(&job.job_id)
        .send()
        .await
        .unwrap();
    drop(clone);
    // The server stops in the background: wait for it, within bounds.
    let give_up = std::time::Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(
            std::time::Instant::now() < give_up,
            "still listening after the last handle was dropped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let emu = emulator().await;
    let c = client(&emu);
    let job = emu.create_custom_job();
    c.put_job_success_result()
        .job_id(&job.job_id)
        .continuation_token("t")
        .send()
        .await
        .unwrap();
    let addr = emu.local_addr();
    emu.shutdown().await;
    emu.shutdown().await; // idempotent
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    let err = c
        .put_job_success_result()
        .job_id(&job.job_id)
        .send()
        .await
        .unwrap_err();
    assert!(is_transport_error(&err), "{err:?}");
}
