//! What one careless or hostile client can do to a gateway: a storm of
//! 5,000 concurrent calls on one HTTP/2 connection plus 2,000 idle
//! connections, against the release binary in its own process with its
//! default limits. Prints the gateway's RSS (idle, peak, after), the most
//! connections it opened to CodePipeline (the emulator here), how many storm
//! calls were shed, and a well-behaved client's latency on its own connection
//! during the storm, as a ratio of the same client's latency before it.
//!
//! Goals (issue 10): RSS < 64 MB under the storm, upstream connections within
//! --upstream-concurrency, the well-behaved p99 < 3x its unloaded p99, RSS back
//! within 1.5x idle afterwards.
//!
//! Run: `cargo bench --bench storm` (`-- --gateway <flags>` passes flags to the
//! gateway; `MALLOC_*` variables are passed on too).

mod common;

use std::time::Duration;

use codepipeline_emulator::{Emulator, EmulatorConfig};
use codepipeline_gateway::proto::v1::{
    GetJobDetailsRequest, job_worker_service_client::JobWorkerServiceClient,
};
use tokio::{net::TcpStream, time::Instant};
use tonic::{Code, transport::Channel};

const STORM_CALLS: usize = 5_000;
const IDLE_CONNECTIONS: usize = 2_000;
const PROBE_CALLS: usize = 300;
const UPSTREAM_CONCURRENCY: usize = 64;

/// Established TCP connections to `port` (the gateway's, to the emulator).
fn connections_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default()
        + &std::fs::read_to_string("/proc/net/tcp6").unwrap_or_default();
    let port = format!("{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() > 3
                && fields[2].rsplit(':').next() == Some(port.as_str())
                && fields[3] == "01"
        })
        .count()
}

/// One call at a time on its own connection: latencies, sorted.
async fn probe(addr: &str, job_id: &str) -> Vec<Duration> {
    let mut client = JobWorkerServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let mut latencies = Vec::with_capacity(PROBE_CALLS);
    for _ in 0..PROBE_CALLS {
        let started = Instant::now();
        client
            .get_job_details(GetJobDetailsRequest {
                target: String::new(),
                job_id: job_id.to_owned(),
            })
            .await
            .expect("the well-behaved client is served");
        latencies.push(started.elapsed());
    }
    latencies.sort();
    latencies
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let emulator = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let emulator_port = emulator.local_addr().port();
    let job = emulator.create_custom_job();
    let (child, addr) = common::start_gateway(
        &emulator,
        &["--rate-limit-rps", "10000", "--rate-limit-burst", "1000000"],
    )
    .await;
    let pid = child.id().expect("running");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = common::rss_kib(pid);

    let unloaded = probe(&addr, &job.job_id).await;
    emulator.clear_requests();

    // 2,000 connections that speak HTTP/2 and then say nothing.
    let mut idle = Vec::with_capacity(IDLE_CONNECTIONS);
    for _ in 0..IDLE_CONNECTIONS {
        let tcp = TcpStream::connect(&addr).await.unwrap();
        let (send, connection) = h2::client::handshake(tcp).await.unwrap();
        idle.push((send, tokio::spawn(connection)));
    }

    // 5,000 calls at once on one connection.
    let storm_channel: Channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let storm_started = Instant::now();
    let storm: Vec<_> = (0..STORM_CALLS)
        .map(|_| {
            let mut client = JobWorkerServiceClient::new(storm_channel.clone());
            let job_id = job.job_id.clone();
            tokio::spawn(async move {
                client
                    .get_job_details(GetJobDetailsRequest {
                        target: String::new(),
                        job_id,
                    })
                    .await
                    .map(|_| ())
                    .map_err(|s| s.code())
            })
        })
        .collect();

    // Watch the gateway while the storm lasts, and probe beside it.
    let watch = tokio::spawn(async move {
        let mut peak_rss = 0;
        let mut peak_upstream = 0;
        for _ in 0..600 {
            peak_rss = peak_rss.max(common::rss_kib(pid));
            peak_upstream = peak_upstream.max(connections_to(emulator_port));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (peak_rss, peak_upstream)
    });
    // The probe has a thread and runtime of its own, so that it does not
    // queue behind the storm's 5,000 client tasks in this process.
    let loaded = {
        let (addr, job_id) = (addr.clone(), job.job_id.clone());
        tokio::task::spawn_blocking(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(probe(&addr, &job_id))
        })
        .await
        .unwrap()
    };
    let mut ok = 0;
    let mut shed = 0;
    let mut other = 0;
    for call in storm {
        match call.await.unwrap() {
            Ok(()) => ok += 1,
            Err(Code::ResourceExhausted) => shed += 1,
            Err(_) => other += 1,
        }
    }
    let storm_took = storm_started.elapsed();
    let (peak_rss, peak_upstream) = watch.await.unwrap();
    let storm_rss = common::rss_kib(pid);

    let gateway_port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    let open_during = connections_to(gateway_port);
    for (send, connection) in idle {
        drop(send);
        connection.abort();
    }
    drop(storm_channel);
    // Long enough for an allocator's purge (jemalloc's decay is 10 s).
    let mut settling = Vec::new();
    for second in 1..=20 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if second % 5 == 0 {
            settling.push(format!(
                "{second} s: {:.1} MiB",
                common::rss_kib(pid) as f64 / 1024.0
            ));
        }
    }
    let open_after = connections_to(gateway_port);
    let after_rss = common::rss_kib(pid);

    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "storm: {STORM_CALLS} calls at once on one connection + {IDLE_CONNECTIONS} idle HTTP/2 connections"
    );
    println!(
        "  storm calls: {ok} OK, {shed} shed (RESOURCE_EXHAUSTED), {other} other, in {:.2} s",
        storm_took.as_secs_f64()
    );
    println!(
        "  gateway RSS: idle {:.1} MiB, peak {:.1} MiB (goal < 64), 20 s after the storm {:.1} MiB = {:.2}x idle (goal <= 1.5x)",
        mib(idle_rss),
        mib(peak_rss.max(storm_rss)),
        mib(after_rss),
        after_rss as f64 / idle_rss.max(1) as f64
    );
    println!(
        "  connections to CodePipeline: at most {peak_upstream} (goal <= --upstream-concurrency {UPSTREAM_CONCURRENCY})"
    );
    println!(
        "  client connections open: {open_during} during, {open_after} after the clients left"
    );
    println!("  RSS after the clients left: {}", settling.join(", "));
    let (p50_before, p99_before) = (
        common::percentile(&unloaded, 0.5),
        common::percentile(&unloaded, 0.99),
    );
    let (p50_during, p99_during) = (
        common::percentile(&loaded, 0.5),
        common::percentile(&loaded, 0.99),
    );
    println!(
        "  well-behaved client, {PROBE_CALLS} calls one at a time: p50 {:.2} -> {:.2} ms, p99 {:.2} -> {:.2} ms = {:.2}x (goal < 3x)",
        ms(p50_before),
        ms(p50_during),
        ms(p99_before),
        ms(p99_during),
        ms(p99_during) / ms(p99_before)
    );
    drop(child);
}
