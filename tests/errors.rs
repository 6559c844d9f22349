//! Each row of the error table in README.md, through real gRPC and real HTTP.

mod common;

use std::time::Duration;

use codepipeline_emulator::{Emulator, EmulatorConfig, Fault, FaultKind};
use codepipeline_gateway::{
    error::{AWS_DOMAIN, GATEWAY_DOMAIN, metadata},
    identity,
    proto::{JOB_WORKER_SERVICE_NAME, v1::PutThirdPartyJobSuccessResultRequest},
};
use tonic::{Code, Request, Status};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_types::StatusExt;

const OP: &str = "PutJobSuccessResult";

use common::success;

fn aws_error(error_type: &str, status: u16) -> Fault {
    Fault::for_operation(
        OP,
        FaultKind::Error {
            error_type: error_type.into(),
            status,
            message: format!("injected {error_type}"),
        },
        1,
    )
}

fn assert_aws_error(status: &Status, code: Code, reason: &str, attempts: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.reason, reason);
    assert_eq!(info.domain, AWS_DOMAIN);
    assert_eq!(info.metadata[metadata::ATTEMPTS], attempts);
    assert!(!info.metadata[metadata::AWS_REQUEST_ID].is_empty());
}

#[tokio::test]
async fn aws_validation_exception_is_invalid_argument() {
    let mut h = common::start().await;
    let job = h.emulator.create_custom_job();
    h.emulator
        .inject_fault(aws_error("ValidationException", 400));
    let status = h
        .client
        .put_job_success_result(success(&job.job_id))
        .await
        .unwrap_err();
    assert_aws_error(&status, Code::InvalidArgument, "VALIDATION", "1");
    assert_eq!(status.message(), "injected ValidationException");
}

#[tokio::test]
async fn aws_output_variables_size_exceeded_is_invalid_argument() {
    let mut h = common::start().await;
    let job = h.emulator.create_custom_job();
    h.emulator
        .inject_fault(aws_error("OutputVariablesSizeExceededException", 400));
    let status = h
        .client
        .put_job_success_result(success(&job.job_id))
        .await
        .unwrap_err();
    assert_aws_error(
        &status,
        Code::InvalidArgument,
        "OUTPUT_VARIABLES_SIZE_EXCEEDED",
        "1",
    );
}

#[tokio::test]
async fn unknown_job_is_not_found_and_quotes_the_aws_request_id() {
    let mut h = common::start().await;
    let status = h
        .client
        .put_job_success_result(success("11111111-2222-4333-8444-555555555555"))
        .await
        .unwrap_err();
    assert_aws_error(&status, Code::NotFound, "JOB_NOT_FOUND", "1");
    let info = status.get_details_error_info().unwrap();
    let recorded = h.emulator.requests_for(OP);
    assert_eq!(
        info.metadata[metadata::AWS_REQUEST_ID],
        recorded[0].request_id
    );
    assert_eq!(
        info.metadata[metadata::AWS_ERROR_CODE],
        "JobNotFoundException"
    );
}

#[tokio::test]
async fn a_second_result_for_a_finished_job_is_failed_precondition() {
    let mut h = common::start().await;
    let job = h.emulator.create_custom_job();
    h.client
        .put_job_success_result(success(&job.job_id))
        .await
        .expect("first");
    // A different result (the identical one is a replay: tests/outcomes.rs).
    let mut second = success(&job.job_id);
    second.continuation_token = "again".into();
    let status = h.client.put_job_success_result(second).await.unwrap_err();
    assert_aws_error(&status, Code::FailedPrecondition, "INVALID_JOB_STATE", "1");
    assert!(
        !status
            .get_details_error_info()
            .unwrap()
            .metadata
            .contains_key(metadata::EARLIER_ATTEMPT_MAY_HAVE_APPLIED)
    );
}

#[tokio::test]
async fn a_wrong_client_token_is_permission_denied() {
    let mut h = common::start().await;
    let job = h.emulator.create_third_party_job();
    let status = h
        .client
        .put_third_party_job_success_result(PutThirdPartyJobSuccessResultRequest {
            job_id: job.job_id,
            client_token: "not-the-token".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_aws_error(&status, Code::PermissionDenied, "INVALID_CLIENT_TOKEN", "1");
}

#[tokio::test]
async fn throttling_that_outlasts_the_retries_is_unavailable_with_retry_info() {
    let mut h = common::start().await;
    let job = h.emulator.create_custom_job();
    h.emulator
        .inject_fault(Fault::for_operation(OP, FaultKind::Throttle, 10));
    let status = h
        .client
        .put_job_success_result(success(&job.job_id))
        .await
        .unwrap_err();
    assert_aws_error(&status, Code::Unavailable, "THROTTLING", "3");
    assert!(
        status
            .get_details_retry_info()
            .and_then(|r| r.retry_delay)
            .is_some()
    );
    assert_eq!(h.emulator.requests_for(OP).len(), 3);
}

#[tokio::test]
async fn server_errors_that_outlast_the_retries_are_unavailable() {
    let mut h = common::start().await;
    let job = h.emulator.create_custom_job();
    h.emulator
        .inject_fault(Fault::for_operation(OP, FaultKind::ServerError(503), 10));
    let status = h
        .client
        .put_job_success_result(success(&job.job_id))
        .await
        .unwrap_err();
    assert_aws_error(&status, Code::Unavailable, "SERVICE_UNAVAILABLE", "3");
    assert!(status.get_details_retry_info().is_some());
}

#[tokio::test]
async fn the_gateways_own_rate_limit_is_resource_exhausted_with_retry_info() {
    let mut settings = common::settings();
    settings.rate_limit.per_second = 0.5;
    settings.rate_limit.burst = std::num::NonZeroU32::new(1).unwrap();
    settings.rate_limit.max_waiting = 0;
    let mut h = common::start_with(settings).await;
    let first = h.emulator.create_custom_job();
    let second = h.emulator.create_custom_job();
    h.client
        .put_job_success_result(success(&first.job_id))
        .await
        .expect("within burst");
    let status = h
        .client
        .put_job_success_result(success(&second.job_id))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    let info = status.get_details_error_info().unwrap();
    assert_eq!(
        (info.reason.as_str(), info.domain.as_str()),
        ("RATE_LIMITED", GATEWAY_DOMAIN)
    );
    let delay = status
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .expect("RetryInfo");
    assert!(
        delay > Duration::ZERO && delay <= Duration::from_secs(2),
        "{delay:?}"
    );
    assert_eq!(h.emulator.requests_for(OP).len(), 1);
}

#[tokio::test]
async fn a_short_client_deadline_against_a_slow_aws_is_deadline_exceeded() {
    let mut h = common::start().await;
    let job = h.emulator.create_custom_job();
    h.emulator.inject_fault(Fault::for_operation(
        OP,
        FaultKind::Delay(Duration::from_secs(3)),
        1,
    ));
    let mut request = Request::new(success(&job.job_id));
    request.set_timeout(Duration::from_millis(300));
    let status = h.client.put_job_success_result(request).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "DEADLINE_EXCEEDED");
    assert_eq!(info.metadata[metadata::OUTCOME_UNKNOWN], "true");
}

#[tokio::test]
async fn access_denied_is_internal_and_says_the_gateway_is_misconfigured() {
    let mut h = common::start().await;
    let job = h.emulator.create_custom_job();
    h.emulator
        .inject_fault(aws_error("AccessDeniedException", 400));
    let status = h
        .client
        .put_job_success_result(success(&job.job_id))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Internal);
    assert!(
        status.message().contains("misconfigured"),
        "{}",
        status.message()
    );
    assert!(
        !status.message().contains("injected"),
        "AWS details leaked to the caller"
    );
    assert_eq!(
        status.get_details_error_info().unwrap().reason,
        "GATEWAY_MISCONFIGURED"
    );
    assert_eq!(h.emulator.requests_for(OP).len(), 1, "not retried");
    // A permission one operation lacks is no reason to leave the Service.
    assert_eq!(health(&h, "").await, ServingStatus::Serving);
}

async fn health(h: &common::Harness, service: &str) -> ServingStatus {
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", h.gateway.grpc_addr()))
            .unwrap()
            .connect()
            .await
            .unwrap();
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status()
}

#[tokio::test]
async fn a_refused_identity_is_not_serving_until_aws_accepts_it_again() {
    let mut h = common::start().await;
    let job = h.emulator.create_custom_job();
    h.emulator
        .inject_fault(aws_error("UnrecognizedClientException", 400));
    let status = h
        .client
        .put_job_success_result(success(&job.job_id))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    for service in ["", JOB_WORKER_SERVICE_NAME] {
        assert_eq!(health(&h, service).await, ServingStatus::NotServing);
    }
    // The same for probes that cannot speak gRPC (TLS), on the admin port.
    let readyz = common::admin(&h, "/readyz").await;
    assert!(readyz.starts_with("HTTP/1.1 503"), "{readyz}");
    assert!(
        readyz.contains("AWS refuses the gateway's identity"),
        "{readyz}"
    );
    assert!(
        common::admin(&h, "/healthz")
            .await
            .starts_with("HTTP/1.1 200")
    );
    // Nothing reaches the pod now; the gateway asks AWS by itself, and the
    // fault was for one request only.
    let asked = std::time::Instant::now();
    while health(&h, "").await != ServingStatus::Serving {
        assert!(
            asked.elapsed() < identity::PROBE_INTERVAL * 3,
            "still NOT_SERVING"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        health(&h, JOB_WORKER_SERVICE_NAME).await,
        ServingStatus::Serving
    );
    // The probe read a job that cannot exist: nothing changed.
    let probes = h.emulator.requests_for("GetJobDetails");
    assert_eq!(probes.len(), 1, "{probes:?}");
    h.client
        .put_job_success_result(success(&job.job_id))
        .await
        .unwrap();
}

#[tokio::test]
async fn bad_credentials_are_internal_and_say_the_gateway_is_misconfigured() {
    let emulator = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let job = emulator.create_custom_job();
    let mut h = common::start_against(emulator, common::settings(), Some("wrong-secret")).await;
    let status = h
        .client
        .put_job_success_result(success(&job.job_id))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Internal);
    assert!(status.message().contains("misconfigured"));
    let recorded = h.emulator.requests_for(OP);
    assert_eq!(recorded.len(), 1);
    assert!(!recorded[0].signature_valid);
}
