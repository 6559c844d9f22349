//! Throughput and latency of the whole path — tonic client → gateway → real
//! aws-sdk-codepipeline → HTTP → emulator — on loopback, plus the process's
//! memory. Prints figures; asserts nothing (`cargo bench --bench gateway`).
//!
//! The emulator shares the process and the two cores, so these figures are a
//! floor for the gateway itself, useful to compare one change with another.

use std::{
    num::NonZeroU32,
    time::{Duration, Instant},
};

use codepipeline_emulator::{Emulator, EmulatorConfig};
use codepipeline_gateway::{
    aws,
    config::{AccessSettings, Config},
    proto::v1::{
        ExecutionDetails, PutJobSuccessResultRequest,
        job_worker_service_client::JobWorkerServiceClient,
    },
    rate_limit::RateLimitSettings,
    retry::RetrySettings,
    server::Gateway,
};

const CONNECTIONS: usize = 16;
const CALLS_PER_CONNECTION: usize = 250;

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::main]
async fn main() {
    let emulator = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let client = aws::client_for_emulator(&emulator, None).await;
    let settings = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        rate_limit: RateLimitSettings {
            per_second: 1e9,
            burst: NonZeroU32::new(1_000_000).unwrap(),
            max_waiting: 10_000,
        },
        retry: RetrySettings {
            max_attempts: NonZeroU32::new(3).unwrap(),
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_secs(1),
        },
        attempt_timeout: Duration::from_secs(10),
        default_deadline: Duration::from_secs(30),
        max_connection_age: None,
        shutdown_grace: Duration::from_secs(5),
        client_tokens: None,
        access: AccessSettings::default(),
        reflection: true,
        tls: None,
    };
    let gateway = Gateway::start(settings, client).await.unwrap();
    let rss_idle = rss_kib();

    let total = CONNECTIONS * CALLS_PER_CONNECTION;
    let jobs: Vec<Vec<String>> = (0..CONNECTIONS)
        .map(|_| {
            (0..CALLS_PER_CONNECTION)
                .map(|_| emulator.create_custom_job().job_id)
                .collect()
        })
        .collect();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for job_ids in jobs {
        let mut client = JobWorkerServiceClient::connect(format!("http://{}", gateway.grpc_addr()))
            .await
            .unwrap();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(job_ids.len());
            for job_id in job_ids {
                let call = Instant::now();
                client
                    .put_job_success_result(PutJobSuccessResultRequest {
                        job_id,
                        execution_details: Some(ExecutionDetails {
                            summary: "bench".into(),
                            percent_complete: Some(100),
                            ..Default::default()
                        }),
                        output_variables: [("K".to_owned(), "v".repeat(64))].into(),
                        ..Default::default()
                    })
                    .await
                    .expect("call succeeds");
                latencies.push(call.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    let rss_loaded = rss_kib();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];

    println!("gateway bench: {total} PutJobSuccessResult calls over {CONNECTIONS} connections");
    println!(
        "  throughput: {:.0} calls/s ({:.2} s)",
        total as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!(
        "  latency: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.90).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3
    );
    println!(
        "  resident memory (gateway + emulator + client, one process): idle {} KiB, after load {} KiB",
        rss_idle.map_or("?".into(), |v| v.to_string()),
        rss_loaded.map_or("?".into(), |v| v.to_string())
    );
    assert_eq!(emulator.requests_for("PutJobSuccessResult").len(), total);
    gateway.shutdown().await.unwrap();
}
