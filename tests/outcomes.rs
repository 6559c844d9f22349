//! Exact outcomes: the gateway says "outcome unknown" exactly when a request
//! may have reached AWS, including for calls its own shutdown cuts short.

mod common;

use std::{num::NonZeroU32, time::Duration};

use codepipeline_emulator::{Fault, FaultKind};
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
    let sent_job = h.emulator.create_custom_job();
    let waiting_job = h.emulator.create_custom_job();
    let mut client = h.client.clone();
    let sent = tokio::spawn(async move {
        client
            .put_job_success_result(common::success(&sent_job.job_id))
            .await
    });
    let started = Instant::now();
    while common::received(&h.emulator, "PutJobSuccessResult").is_empty() {
        assert!(started.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut client = h.client.clone();
    let waiting = tokio::spawn(async move {
        client
            .put_job_success_result(common::success(&waiting_job.job_id))
            .await
    });
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
