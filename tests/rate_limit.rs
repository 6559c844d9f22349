//! The rate limit is one token bucket per operation for the whole process:
//! many connections at once share it (a limiter cloned per connection would
//! let each connection through on its own).

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
