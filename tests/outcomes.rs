//! Exact outcomes: the gateway says "outcome unknown" exactly when a request
//! may have reached AWS, including for calls its own shutdown cuts short.

mod common;

use std::{num::NonZeroU32, time::Duration};

use codepipeline_emulator::{Fault, FaultKind};
use codepipeline_gateway::proto::v1::{self, PutJobSuccessResultRequest};
use tokio::time::Instant;
use tonic::Code;
use tonic_types::StatusExt;

#[tokio::test]
async fn calls_cut_short_by_shutdown_say_whether_aws_may_have_them() {
    let mut settings = common::settings();
    settings.shutdown_grace = Duration::from_millis(300);
    // One call a second: the second call waits for its token.
    settings.rate_limit.per_second = 1.0;
    settings.rate_limit.burst = NonZeroU32::new(1).unwrap();
    let h = common::start_with(settings).await;
    h.emulator.inject_fault(Fault::for_operation(
        "PutJobSuccessResult",
        FaultKind::Delay(Duration::from_secs(3)),
        1,
    ));
    let sent = common::report_in_background(&h);
    common::until_received(&h.emulator, "PutJobSuccessResult", 1).await;
    let waiting = common::report_in_background(&h);
    tokio::time::sleep(Duration::from_millis(100)).await;

    let shutdown_started = Instant::now();
    h.gateway.shutdown().await.unwrap();
    assert!(shutdown_started.elapsed() < Duration::from_secs(2));

    let status = sent.await.unwrap().expect_err("cut short");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "SHUTTING_DOWN");
    assert_eq!(
        info.metadata.get("outcomeUnknown").map(String::as_str),
        Some("true"),
        "its attempt was on its way to AWS: {info:?}"
    );

    let status = waiting.await.unwrap().expect_err("cut short");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "SHUTTING_DOWN");
    assert!(
        !info.metadata.contains_key("outcomeUnknown"),
        "it never left the gateway: {info:?}"
    );
    assert_eq!(
        common::received(&h.emulator, "PutJobSuccessResult").len(),
        1
    );
}

/// A final report with a summary, so that two reports can differ.
fn report(job_id: &str, summary: &str) -> PutJobSuccessResultRequest {
    PutJobSuccessResultRequest {
        job_id: job_id.into(),
        execution_details: Some(v1::ExecutionDetails {
            summary: summary.into(),
            ..Default::default()
        }),
        output_variables: [("artifact".to_owned(), "s3://bucket/key".to_owned())].into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn the_identical_report_again_is_a_replay_and_a_different_one_is_refused() {
    let h = common::start().await;
    let job = h.emulator.create_custom_job();
    let mut client = h.client.clone();
    let first = client
        .put_job_success_result(report(&job.job_id, "built"))
        .await
        .expect("delivered")
        .into_inner();
    assert!(!first.replay && !first.earlier_attempt_may_have_been_applied);

    // The worker lost the answer and sends the same report again.
    let again = client
        .put_job_success_result(report(&job.job_id, "built"))
        .await
        .expect("a replay is OK")
        .into_inner();
    assert!(again.replay, "{again:?}");
    assert_eq!(again.aws_request_id, first.aws_request_id);
    assert_eq!(
        common::received(&h.emulator, "PutJobSuccessResult").len(),
        1
    );

    // A different result for the same job is not a replay: AWS answers.
    let status = client
        .put_job_success_result(report(&job.job_id, "built differently"))
        .await
        .expect_err("the job is closed");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(
        status.get_details_error_info().unwrap().reason,
        "INVALID_JOB_STATE"
    );
    assert_eq!(
        common::received(&h.emulator, "PutJobSuccessResult").len(),
        2
    );

    // An acknowledgement is remembered apart from the result.
    let polled = h.emulator.create_custom_job();
    let jobs = client
        .poll_for_jobs(common::poll(1))
        .await
        .unwrap()
        .into_inner()
        .jobs;
    let job = jobs.iter().find(|j| j.id == polled.job_id).expect("polled");
    let ack = v1::AcknowledgeJobRequest {
        target: String::new(),
        job_id: job.id.clone(),
        nonce: job.nonce.clone(),
    };
    let first = client
        .acknowledge_job(ack.clone())
        .await
        .unwrap()
        .into_inner();
    let again = client.acknowledge_job(ack).await.unwrap().into_inner();
    assert!(!first.replay && again.replay);
    assert_eq!(again.status, first.status);
    let metrics = common::metrics(&h).await;
    assert!(
        metrics.contains("cpgw_replays_total{method=\"AcknowledgeJob\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_success_after_an_unknown_outcome_says_so() {
    let h = common::start().await;
    let job = h.emulator.create_custom_job();
    // The first attempt is sent and its connection resets: outcome unknown
    // (here it was not applied, so the retry succeeds).
    h.emulator.inject_fault(Fault::for_operation(
        "PutJobSuccessResult",
        FaultKind::ResetBeforeApply,
        1,
    ));
    let answer = h
        .client
        .clone()
        .put_job_success_result(common::success(&job.job_id))
        .await
        .expect("the retry succeeds")
        .into_inner();
    assert!(answer.earlier_attempt_may_have_been_applied, "{answer:?}");
    assert!(!answer.replay);
    assert_eq!(
        common::received(&h.emulator, "PutJobSuccessResult").len(),
        2
    );
}

#[tokio::test]
async fn a_progress_report_is_never_repeated_blindly_after_an_unknown_outcome() {
    let h = common::start().await;
    let job = h.emulator.create_custom_job();
    let progress = PutJobSuccessResultRequest {
        job_id: job.job_id.clone(),
        continuation_token: "phase=deploy".into(),
        ..Default::default()
    };
    h.emulator.inject_fault(Fault::for_operation(
        "PutJobSuccessResult",
        FaultKind::ResetAfterApply,
        1,
    ));
    let status = h
        .client
        .clone()
        .put_job_success_result(progress.clone())
        .await
        .expect_err("not retried by the gateway");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!(
        info.metadata.get("outcomeUnknown").map(String::as_str),
        Some("true")
    );
    assert_eq!(info.metadata["attempts"], "1");
    assert_eq!(
        common::received(&h.emulator, "PutJobSuccessResult").len(),
        1,
        "sent once"
    );

    // The worker's own repeat, as docs/clients.md says: INVALID_JOB_STATE
    // means the first landed (and the continuation job is on its way).
    let status = h
        .client
        .clone()
        .put_job_success_result(progress)
        .await
        .expect_err("the first landed");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let continuation = h
        .client
        .clone()
        .poll_for_jobs(common::poll(10))
        .await
        .unwrap()
        .into_inner()
        .jobs;
    let continued: Vec<_> = continuation
        .iter()
        .filter(|j| {
            j.data
                .as_ref()
                .is_some_and(|d| d.continuation_token == "phase=deploy")
        })
        .collect();
    assert_eq!(continued.len(), 1, "one continuation job, not two");

    // A final report after the same fault is repeated by the gateway, and
    // the repeat's INVALID_JOB_STATE says an earlier attempt was applied.
    let job = h.emulator.create_custom_job();
    h.emulator.inject_fault(Fault::for_operation(
        "PutJobSuccessResult",
        FaultKind::ResetAfterApply,
        1,
    ));
    let status = h
        .client
        .clone()
        .put_job_success_result(common::success(&job.job_id))
        .await
        .expect_err("applied, then the repeat found the job closed");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.metadata["earlierAttemptMayHaveBeenApplied"], "true");
}

#[tokio::test]
async fn a_replay_still_needs_the_callers_credentials() {
    // A static token, so that a repeat without it can be tried.
    let dir = common::TempDir::new();
    let digest: String = {
        use sha2::{Digest, Sha256};
        Sha256::digest(b"worker-secret")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let mut settings = common::settings();
    settings.access.static_tokens_file =
        Some(dir.file("tokens.yaml", &format!("worker: {digest}\n")));
    let h = common::start_with(settings).await;
    let bearer = |request: v1::PutThirdPartyJobSuccessResultRequest, token: &str| {
        let mut request = tonic::Request::new(request);
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    };
    let job = h.emulator.create_third_party_job();
    let result = v1::PutThirdPartyJobSuccessResultRequest {
        job_id: job.job_id.clone(),
        client_token: job.client_token.clone().unwrap(),
        ..Default::default()
    };
    let mut client = h.client.clone();
    client
        .put_third_party_job_success_result(bearer(result.clone(), "worker-secret"))
        .await
        .expect("delivered");

    // The identical request from a caller without the token: refused, not a
    // replay, and nothing reaches AWS.
    let status = client
        .put_third_party_job_success_result(bearer(result.clone(), "forged"))
        .await
        .expect_err("unauthenticated");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    // A wrong client token makes another request: AWS judges it.
    let wrong = v1::PutThirdPartyJobSuccessResultRequest {
        client_token: "not-the-client-token".into(),
        ..result.clone()
    };
    let status = client
        .put_third_party_job_success_result(bearer(wrong, "worker-secret"))
        .await
        .expect_err("not a replay");
    assert_ne!(status.code(), Code::Ok);
    let sent = common::received(&h.emulator, "PutThirdPartyJobSuccessResult");
    assert_eq!(sent.len(), 2, "the forged repeat never reached AWS");
    assert_eq!(sent[1].body["clientToken"], "not-the-client-token");

    // The real caller's identical repeat is the replay.
    let again = client
        .put_third_party_job_success_result(bearer(result, "worker-secret"))
        .await
        .expect("a replay")
        .into_inner();
    assert!(again.replay);
    assert_eq!(
        common::received(&h.emulator, "PutThirdPartyJobSuccessResult").len(),
        2
    );
}
