//! The retry layer through real HTTP: what is retried, how often, and what a
//! worker is told when an earlier attempt may already have landed.

mod common;

use codepipeline_emulator::{Fault, FaultKind, JobState};
use codepipeline_gateway::error::metadata;
use tonic::Code;
use tonic_types::StatusExt;

const OP: &str = "PutJobSuccessResult";

use common::success;

#[tokio::test]
async fn throttled_twice_then_accepted_is_ok_after_three_attempts() {
    let mut h = common::start().await;
    let job = h.emulator.create_custom_job();
    h.emulator
        .inject_fault(Fault::for_operation(OP, FaultKind::Throttle, 2));
    let response = h
        .client
        .put_job_success_result(success(&job.job_id))
        .await
        .expect("ok")
        .into_inner();
    let received = h.emulator.requests_for(OP);
    assert_eq!(received.len(), 3);
    assert_eq!(
        received[0].error_type.as_deref(),
        Some("ThrottlingException")
    );
    assert_eq!(received[2].status, 200);
    assert_eq!(response.aws_request_id, received[2].request_id);
    // Every attempt carried the same request.
    assert!(received.iter().all(|r| r.body == received[0].body));
    assert_eq!(
        h.emulator.job(&job.job_id).unwrap().state,
        JobState::Succeeded
    );
}

#[tokio::test]
async fn a_non_retryable_error_is_attempted_exactly_once() {
    let mut h = common::start().await;
    let status = h
        .client
        .put_job_success_result(success("11111111-2222-4333-8444-555555555555"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(h.emulator.requests_for(OP).len(), 1);
}

#[tokio::test]
async fn attempts_are_capped_by_the_setting() {
    let mut settings = common::settings();
    settings.retry.max_attempts = std::num::NonZeroU32::new(2).unwrap();
    let mut h = common::start_with(settings).await;
    let job = h.emulator.create_custom_job();
    h.emulator
        .inject_fault(Fault::for_operation(OP, FaultKind::ServerError(500), 10));
    let status = h
        .client
        .put_job_success_result(success(&job.job_id))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(
        status.get_details_error_info().unwrap().metadata[metadata::ATTEMPTS],
        "2"
    );
    assert_eq!(h.emulator.requests_for(OP).len(), 2);
}

#[tokio::test]
async fn a_connection_reset_before_aws_applied_the_result_is_retried() {
    let mut h = common::start().await;
    let job = h.emulator.create_custom_job();
    h.emulator
        .inject_fault(Fault::for_operation(OP, FaultKind::ResetBeforeApply, 1));
    h.client
        .put_job_success_result(success(&job.job_id))
        .await
        .expect("retried to success");
    assert_eq!(h.emulator.requests_for(OP).len(), 2);
    assert_eq!(
        h.emulator.job(&job.job_id).unwrap().state,
        JobState::Succeeded
    );
}

#[tokio::test]
async fn a_retry_after_an_applied_but_unanswered_attempt_says_so() {
    let mut h = common::start().await;
    let job = h.emulator.create_custom_job();
    h.emulator
        .inject_fault(Fault::for_operation(OP, FaultKind::ResetAfterApply, 1));
    let status = h
        .client
        .put_job_success_result(success(&job.job_id))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    let info = status.get_details_error_info().unwrap();
    assert_eq!(info.reason, "INVALID_JOB_STATE");
    assert_eq!(
        info.metadata[metadata::EARLIER_ATTEMPT_MAY_HAVE_APPLIED],
        "true"
    );
    assert_eq!(info.metadata[metadata::ATTEMPTS], "2");
    assert!(
        status.message().contains("may have been applied"),
        "{}",
        status.message()
    );
    // The first attempt did land: nothing the worker reported was lost.
    assert_eq!(
        h.emulator.job(&job.job_id).unwrap().state,
        JobState::Succeeded
    );
}

#[tokio::test]
async fn a_refused_connection_was_never_sent_so_no_outcome_is_unknown() {
    // An address where nothing listens: every attempt fails to connect.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let emulator = codepipeline_emulator::Emulator::start(Default::default())
        .await
        .unwrap();
    let config = emulator.config().clone();
    let client = codepipeline_gateway::aws::config_for_endpoint(
        &endpoint,
        &config.region,
        &config.access_key_id,
        &config.secret_access_key,
    )
    .await;
    let gateway = codepipeline_gateway::server::Gateway::start(common::settings(), client)
        .await
        .unwrap();
    let mut worker = common::connect(&gateway).await;
    let job = emulator.create_custom_job();
    let status = worker
        .put_job_success_result(success(&job.job_id))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let info = status.get_details_error_info().unwrap();
    assert_eq!(
        info.metadata[metadata::ATTEMPTS],
        "3",
        "retried as transient"
    );
    // Nothing was sent: the worker must not read a later INVALID_JOB_STATE
    // as "my report landed".
    assert!(
        !info.metadata.contains_key(metadata::OUTCOME_UNKNOWN),
        "{info:?}"
    );
    assert!(
        !info
            .metadata
            .contains_key(metadata::EARLIER_ATTEMPT_MAY_HAVE_APPLIED),
        "{info:?}"
    );
    assert!(
        !status.message().contains("may have been applied"),
        "{status:?}"
    );
}
