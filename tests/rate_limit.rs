//! The rate limit is one token bucket per operation for the whole process:
//! many connections at once share it (a limiter cloned per connection would
//! let each connection through on its own). Adaptive, it backs off when
//! CodePipeline (the emulator with a quota) throttles.

mod common;

use codepipeline_gateway::proto::v1::PutJobSuccessResultRequest;
use tonic::Code;

const CONNECTIONS: usize = 24;

#[tokio::test]
async fn the_limit_holds_across_many_concurrent_connections() {
    let mut settings = common::settings();
    settings.rate_limit.per_second = 0.01; // no refill during the test
    settings.rate_limit.burst = std::num::NonZeroU32::new(5).unwrap();
    settings.rate_limit.max_waiting = 0;
    let h = common::start_with(settings).await;

    let mut calls = Vec::new();
    for _ in 0..CONNECTIONS {
        let mut client = common::connect(&h.gateway).await; // its own HTTP/2 connection
        let job = h.emulator.create_custom_job();
        calls.push(tokio::spawn(async move {
            client
                .put_job_success_result(PutJobSuccessResultRequest {
                    job_id: job.job_id,
                    ..Default::default()
                })
                .await
                .map(|_| ())
                .map_err(|s| s.code())
        }));
    }
    let mut ok = 0;
    let mut exhausted = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(()) => ok += 1,
            Err(Code::ResourceExhausted) => exhausted += 1,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((ok, exhausted), (5, CONNECTIONS - 5));
    assert_eq!(h.emulator.requests_for("PutJobSuccessResult").len(), 5);
}

#[tokio::test]
async fn calls_over_the_burst_wait_for_a_token_when_their_deadline_allows() {
    let mut settings = common::settings();
    settings.rate_limit.per_second = 50.0;
    settings.rate_limit.burst = std::num::NonZeroU32::new(1).unwrap();
    settings.rate_limit.max_waiting = 16;
    let h = common::start_with(settings).await;

    let mut calls = Vec::new();
    for _ in 0..8 {
        let mut client = common::connect(&h.gateway).await;
        let job = h.emulator.create_custom_job();
        calls.push(tokio::spawn(async move {
            client
                .put_job_success_result(PutJobSuccessResultRequest {
                    job_id: job.job_id,
                    ..Default::default()
                })
                .await
        }));
    }
    for call in calls {
        call.await
            .unwrap()
            .expect("waited for a token, then succeeded");
    }
    assert_eq!(h.emulator.requests_for("PutJobSuccessResult").len(), 8);
}

/// Drives GetJobDetails at 8 calls in flight for 2.5 s against a 20/s quota
/// and returns the rate limit the gateway then has in force for it.
async fn rate_in_force_after_throttling(adaptive: bool) -> f64 {
    let mut settings = common::settings();
    settings.rate_limit.per_second = 200.0;
    settings.rate_limit.burst = std::num::NonZeroU32::new(200).unwrap();
    settings.rate_limit.adaptive = adaptive;
    let h = common::start_with(settings).await;
    // CodePipeline's quota for the account: 20 calls a second.
    h.emulator.set_quota(Some(20.0));
    let job = h.emulator.create_custom_job();
    let stop = std::time::Instant::now() + std::time::Duration::from_millis(2500);
    let mut drivers = Vec::new();
    for _ in 0..8 {
        let mut client = h.client.clone();
        let job_id = job.job_id.clone();
        drivers.push(tokio::spawn(async move {
            while std::time::Instant::now() < stop {
                let _ = client
                    .get_job_details(codepipeline_gateway::proto::v1::GetJobDetailsRequest {
                        target: String::new(),
                        job_id: job_id.clone(),
                    })
                    .await;
            }
        }));
    }
    for driver in drivers {
        driver.await.unwrap();
    }
    let throttled = h
        .emulator
        .requests_for("GetJobDetails")
        .iter()
        .filter(|r| r.error_type.as_deref() == Some("ThrottlingException"))
        .count();
    assert!(throttled > 0, "the quota throttled some attempts");
    let metrics = common::metrics(&h).await;
    let value = |prefix: &str| -> f64 {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{metrics}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    // Every throttled attempt the emulator answered is counted as one.
    assert_eq!(
        value(
            r#"cpgw_aws_attempts_total{method="GetJobDetails",outcome="throttled",target="default"}"#
        ),
        throttled as f64
    );
    value(r#"cpgw_rate_limit_per_second{method="GetJobDetails",target="default"}"#)
}

#[tokio::test]
async fn throttling_lowers_the_adaptive_rate_and_not_a_fixed_one() {
    let adaptive = rate_in_force_after_throttling(true).await;
    assert!(
        adaptive < 100.0,
        "CodePipeline throttled, so the rate backed off from 200/s: {adaptive}"
    );
    let fixed = rate_in_force_after_throttling(false).await;
    assert_eq!(fixed, 200.0);
}
