//! Connections: with --max-connection-age the gateway sends GOAWAY to old
//! connections, so clients that balance over pods reconnect and find new
//! ones, and calls in flight on an old connection still finish; accepted
//! sockets never hold an answer back for Nagle's algorithm.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use codepipeline_emulator::{Fault, FaultKind};
use codepipeline_gateway::proto::v1::{
    GetJobDetailsRequest, PutJobSuccessResultRequest,
    job_worker_service_client::JobWorkerServiceClient,
};
use tokio::net::{TcpListener, TcpStream};

/// A loopback TCP proxy in front of the gateway that counts the connections
/// clients open, so the test sees reconnections without touching the client.
async fn counting_proxy(target: std::net::SocketAddr) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let opened = Arc::new(AtomicUsize::new(0));
    let counter = opened.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (addr, opened)
}

async fn calls_over_time(max_connection_age: Option<Duration>) -> usize {
    let mut settings = common::settings();
    settings.connections.max_connection_age = max_connection_age;
    let h = common::start_with(settings).await;
    let (proxy, opened) = counting_proxy(h.gateway.grpc_addr()).await;
    let mut client = JobWorkerServiceClient::connect(format!("http://{proxy}"))
        .await
        .unwrap();

    // One slow call spans the age limit: it must still finish.
    h.emulator.inject_fault(Fault::for_operation(
        "PutJobSuccessResult",
        FaultKind::Delay(Duration::from_millis(800)),
        1,
    ));
    for _ in 0..6 {
        let job = h.emulator.create_custom_job();
        client
            .put_job_success_result(PutJobSuccessResultRequest {
                job_id: job.job_id,
                ..Default::default()
            })
            .await
            .expect("every call succeeds, across reconnections");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    opened.load(Ordering::SeqCst)
}

#[tokio::test]
async fn old_connections_are_recycled_without_failing_calls() {
    let opened = calls_over_time(Some(Duration::from_millis(300))).await;
    assert!(
        opened >= 2,
        "the client was never asked to reconnect ({opened} connection)"
    );
}

#[tokio::test]
async fn without_an_age_limit_one_connection_serves_every_call() {
    assert_eq!(calls_over_time(None).await, 1);
}

/// Calls slower than `typical` by at least most of a delayed acknowledgement.
fn stalled(times: &[Duration], typical: Duration) -> usize {
    times
        .iter()
        .filter(|t| **t > typical + Duration::from_millis(30))
        .count()
}

fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

/// Nagle's algorithm holds a small write while an earlier one is
/// unacknowledged, and a client with nothing to send delays its
/// acknowledgement (40 ms on Linux). A request larger than the 1 MB window the
/// gateway advertises makes it write a WINDOW_UPDATE after the body's end and
/// then its answer: without TCP_NODELAY on the accepted socket, about half of
/// such calls stalled 40 ms (measured: 14 of 30). The large calls (refused at
/// once, nothing reaches AWS) are compared with small ones on the same
/// connection, so machine noise counts against both alike.
#[tokio::test]
async fn a_large_request_does_not_wait_for_a_delayed_acknowledgement() {
    const CALLS: usize = 40;
    let h = common::start().await;
    let mut client = common::connect(&h.gateway).await;
    let (mut small, mut large) = (Vec::new(), Vec::new());
    for _ in 0..CALLS {
        for (job_id, times) in [
            ("x".repeat(100), &mut small),
            ("x".repeat(1_200_000), &mut large),
        ] {
            let started = Instant::now();
            let status = client
                .get_job_details(GetJobDetailsRequest { job_id })
                .await
                .unwrap_err();
            times.push(started.elapsed());
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
        }
    }
    let (small_stalls, large_stalls) = (
        stalled(&small, median(&small)),
        stalled(&large, median(&large)),
    );
    assert!(
        large_stalls <= small_stalls + CALLS / 5,
        "{large_stalls} of {CALLS} large calls took 30 ms more than their median {:?} \
         ({small_stalls} small ones did): the answer waited for a delayed acknowledgement",
        median(&large)
    );
    assert!(common::received(&h.emulator, "GetJobDetails").is_empty());
}
