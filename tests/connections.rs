//! Connection ageing: with --max-connection-age the gateway sends GOAWAY to
//! old connections, so clients that balance over pods reconnect and find new
//! ones; calls in flight on an old connection still finish.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use codepipeline_emulator::{Fault, FaultKind};
use codepipeline_gateway::proto::v1::{
    PutJobSuccessResultRequest, job_worker_service_client::JobWorkerServiceClient,
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
