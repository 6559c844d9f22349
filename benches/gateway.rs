//! How far the gateway is from the floor. In one run, on loopback, the same
//! `PutJobSuccessResult` calls go three ways:
//!
//! - **bare tonic**: a tonic server of the same contract that answers at once
//!   (the gRPC floor: what any gRPC front costs);
//! - **direct SDK**: a process that calls aws-sdk-codepipeline itself (the AWS
//!   hop every worker would pay without the gateway);
//! - **gateway**: a tonic client → the release gateway → the SDK.
//!
//! Both SDK paths call the same upstream: an HTTP responder in its own process
//! that answers `{}` at once, so no emulator work blurs the figures. Each
//! process runs alone as it would in production (the bench binary re-runs
//! itself as the upstream, the bare server and the direct client), and its
//! CPU time is read from /proc. The gateway's own CPU per call is what is left
//! after taking off the two floors: gateway − direct SDK − bare tonic.
//!
//! Small and ~110 KB requests, one call at a time and 32 in flight, in
//! rounds whose order rotates; each figure is the median of the rounds. Then a
//! fresh gateway's idle memory, before and after 2,000 idle connections, and
//! the binary's size. It prints the goals of issue 11 beside the figures and
//! asserts nothing.
//!
//! Run: `cargo bench --bench gateway` (`-- --gateway <flags>` passes flags to
//! the gateway). `CPGW_BENCH_COMPARE=<binary>` adds a second gateway from
//! another build to every round (a change against the build before it, in the
//! same run); `CPGW_BENCH_ROUNDS` and `CPGW_BENCH_SCENARIOS` (for example
//! `small:32,large:1`) narrow a run.

mod common;

use std::{
    collections::HashMap,
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use aws_sdk_codepipeline::config::{BehaviorVersion, Credentials, Region};
use codepipeline_gateway::proto::v1::{
    self, ExecutionDetails, PutJobSuccessResultRequest,
    job_worker_service_client::JobWorkerServiceClient,
    job_worker_service_server::{JobWorkerService, JobWorkerServiceServer},
};
use http_body_util::{BodyExt, Full};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    net::{TcpListener, TcpStream},
    process::{Child, Command},
};
use tonic::{Request, Response, Status, transport::Channel};

const DEFAULT_ROUNDS: usize = 3;
const IN_FLIGHT: usize = 32;
/// Client connections carrying the saturated load (workers each hold one).
const CONNECTIONS: usize = 4;
const WARM_UP_CALLS: usize = 64;
const IDLE_CONNECTIONS: usize = 2_000;
/// Output variables of a large report: about 110 KB of the 122,880 allowed.
const LARGE_VARIABLES: usize = 100;
const LARGE_VALUE_BYTES: usize = 1_090;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Size {
    Small,
    Large,
}

impl Size {
    fn name(self) -> &'static str {
        match self {
            Size::Small => "small",
            Size::Large => "large",
        }
    }

    fn parse(name: &str) -> Size {
        if name == "large" {
            Size::Large
        } else {
            Size::Small
        }
    }

    fn output_variables(self) -> HashMap<String, String> {
        match self {
            Size::Small => [("K".to_owned(), "v".repeat(64))].into(),
            Size::Large => (0..LARGE_VARIABLES)
                .map(|i| (format!("VAR_{i:03}"), "v".repeat(LARGE_VALUE_BYTES)))
                .collect(),
        }
    }

    /// Calls per measurement: about two seconds of work each.
    fn calls(self, in_flight: usize) -> usize {
        match (self, in_flight) {
            (Size::Small, 1) => 2_000,
            (Size::Small, _) => 12_000,
            (Size::Large, 1) => 300,
            (Size::Large, _) => 1_000,
        }
    }
}

/// A distinct, valid job id per call, so that no call is a replay.
fn job_id(n: usize) -> String {
    format!("{:08x}-0000-4000-8000-{:012x}", std::process::id(), n)
}

/// What one measurement of one path gave.
#[derive(Clone, Debug, Default)]
struct Run {
    calls_per_second: f64,
    p50: Duration,
    p99: Duration,
    /// CPU per call of the process measured (server, gateway or direct client).
    cpu_per_call: Duration,
    /// CPU per call of the upstream responder.
    upstream_cpu_per_call: Duration,
}

// --- the roles the bench binary plays in its own processes ---------------------

/// An HTTP/1.1 responder that reads each request and answers CodePipeline's
/// empty success at once.
async fn upstream() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("{}", listener.local_addr().unwrap());
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(
                |request: http::Request<hyper::body::Incoming>| async move {
                    let _ = request.into_body().collect().await;
                    http::Response::builder()
                        .header("content-type", "application/x-amz-json-1.1")
                        .header("x-amzn-requestid", "00000000-0000-4000-8000-000000000000")
                        .body(Full::new(bytes::Bytes::from_static(b"{}")))
                },
            );
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                .await;
        });
    }
}

/// The same contract as the gateway, answering every call at once.
struct Bare;

/// Implements every method of the service with an immediate default answer.
macro_rules! answering_at_once {
    ($($method:ident($request:ident) -> $response:ident;)+) => {
        #[tonic::async_trait]
        impl JobWorkerService for Bare {
            $(async fn $method(&self, _: Request<v1::$request>) -> Result<Response<v1::$response>, Status> {
                Ok(Response::new(v1::$response::default()))
            })+

            // Subscriptions are not measured here: refused at once.
            type SubscribeJobsStream = tokio_stream::Empty<Result<v1::SubscribeJobsResponse, Status>>;
            async fn subscribe_jobs(&self, _: Request<tonic::Streaming<v1::SubscribeJobsRequest>>) -> Result<Response<Self::SubscribeJobsStream>, Status> {
                Err(Status::unimplemented("not measured"))
            }
            type SubscribeThirdPartyJobsStream = tokio_stream::Empty<Result<v1::SubscribeThirdPartyJobsResponse, Status>>;
            async fn subscribe_third_party_jobs(&self, _: Request<tonic::Streaming<v1::SubscribeThirdPartyJobsRequest>>) -> Result<Response<Self::SubscribeThirdPartyJobsStream>, Status> {
                Err(Status::unimplemented("not measured"))
            }
        }
    };
}

answering_at_once! {
    poll_for_jobs(PollForJobsRequest) -> PollForJobsResponse;
    acknowledge_job(AcknowledgeJobRequest) -> AcknowledgeJobResponse;
    get_job_details(GetJobDetailsRequest) -> GetJobDetailsResponse;
    put_job_failure_result(PutJobFailureResultRequest) -> PutJobFailureResultResponse;
    put_job_success_result(PutJobSuccessResultRequest) -> PutJobSuccessResultResponse;
    put_third_party_job_success_result(PutThirdPartyJobSuccessResultRequest) -> PutThirdPartyJobSuccessResultResponse;
    poll_for_third_party_jobs(PollForThirdPartyJobsRequest) -> PollForThirdPartyJobsResponse;
    acknowledge_third_party_job(AcknowledgeThirdPartyJobRequest) -> AcknowledgeThirdPartyJobResponse;
    get_third_party_job_details(GetThirdPartyJobDetailsRequest) -> GetThirdPartyJobDetailsResponse;
    put_third_party_job_failure_result(PutThirdPartyJobFailureResultRequest) -> PutThirdPartyJobFailureResultResponse;
}

async fn bare_tonic() {
    let incoming = tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap())
        .unwrap()
        .with_nodelay(Some(true));
    println!("{}", incoming.local_addr().unwrap());
    tonic::transport::Server::builder()
        .add_service(JobWorkerServiceServer::new(Bare))
        .serve_with_incoming(incoming)
        .await
        .unwrap();
}

/// The AWS-hop baseline: `calls` reports through aws-sdk-codepipeline itself,
/// `in_flight` at a time; prints the run as one line of JSON.
async fn direct_sdk(endpoint_url: &str, size: Size, in_flight: usize, calls: usize) {
    let config = aws_sdk_codepipeline::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint_url)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("AKIDBENCH", "secret", None, None, "bench"))
        .build();
    let client = aws_sdk_codepipeline::Client::from_conf(config);
    let send = |client: aws_sdk_codepipeline::Client, n: usize, variables| async move {
        client
            .put_job_success_result()
            .job_id(job_id(n))
            .execution_details(
                aws_sdk_codepipeline::types::ExecutionDetails::builder()
                    .summary("bench")
                    .percent_complete(100)
                    .build(),
            )
            .set_output_variables(Some(variables))
            .send()
            .await
            .expect("the upstream answers")
    };
    for n in 0..WARM_UP_CALLS {
        send(client.clone(), n, size.output_variables()).await;
    }
    // Requests are made before the clock starts, as the gateway's are made by
    // its client.
    let mut inputs: Vec<Vec<(usize, HashMap<String, String>)>> = vec![Vec::new(); in_flight];
    for n in 0..calls {
        inputs[n % in_flight].push((WARM_UP_CALLS + n, size.output_variables()));
    }
    let pid = std::process::id().to_string();
    let cpu_before = common::cpu_time(&pid);
    let started = Instant::now();
    let tasks: Vec<_> = inputs
        .into_iter()
        .map(|inputs| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(inputs.len());
                for (n, variables) in inputs {
                    let call = Instant::now();
                    send(client.clone(), n, variables).await;
                    latencies.push(call.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(calls);
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    let cpu = common::cpu_time(&pid) - cpu_before;
    latencies.sort();
    println!(
        "{}",
        serde_json::json!({
            "calls_per_second": calls as f64 / elapsed.as_secs_f64(),
            "p50_ns": common::percentile(&latencies, 0.5).as_nanos() as u64,
            "p99_ns": common::percentile(&latencies, 0.99).as_nanos() as u64,
            "cpu_ns": cpu.as_nanos() as u64,
        })
    );
}

// --- the driver ------------------------------------------------------------------

/// Runs this bench binary as `role`, and reads the first line it prints.
async fn spawn_role(args: &[&str]) -> (Child, String) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .arg("--role")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next_line().await.unwrap().expect("the role prints");
    (child, first)
}

fn request(n: usize, variables: &HashMap<String, String>) -> PutJobSuccessResultRequest {
    PutJobSuccessResultRequest {
        job_id: job_id(n),
        execution_details: Some(ExecutionDetails {
            summary: "bench".into(),
            percent_complete: Some(100),
            ..Default::default()
        }),
        output_variables: variables
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        ..Default::default()
    }
}

/// `calls` reports through a gRPC server at `addr`, `in_flight` at a time;
/// CPU is read from `measured` (the server's process) and `upstream`.
async fn grpc_run(
    addr: &str,
    size: Size,
    in_flight: usize,
    calls: usize,
    first_job: usize,
    measured: &str,
    upstream: &str,
) -> Run {
    let variables = Arc::new(size.output_variables());
    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS.min(in_flight) {
        channels.push(
            Channel::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .unwrap(),
        );
    }
    let mut warm = JobWorkerServiceClient::new(channels[0].clone());
    for n in 0..WARM_UP_CALLS {
        warm.put_job_success_result(request(first_job + n, &variables))
            .await
            .expect("warm-up call succeeds");
    }
    let first_job = first_job + WARM_UP_CALLS;
    let (cpu_before, upstream_before) = (common::cpu_time(measured), common::cpu_time(upstream));
    let started = Instant::now();
    let tasks: Vec<_> = (0..in_flight)
        .map(|task| {
            let mut client = JobWorkerServiceClient::new(channels[task % channels.len()].clone())
                .max_decoding_message_size(4 << 20);
            let variables = variables.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                for n in (task..calls).step_by(in_flight) {
                    let request = request(first_job + n, &variables);
                    let call = Instant::now();
                    client
                        .put_job_success_result(request)
                        .await
                        .expect("call succeeds");
                    latencies.push(call.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(calls);
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    let cpu = common::cpu_time(measured) - cpu_before;
    let upstream_cpu = common::cpu_time(upstream) - upstream_before;
    latencies.sort();
    Run {
        calls_per_second: calls as f64 / elapsed.as_secs_f64(),
        p50: common::percentile(&latencies, 0.5),
        p99: common::percentile(&latencies, 0.99),
        cpu_per_call: cpu / calls as u32,
        upstream_cpu_per_call: upstream_cpu / calls as u32,
    }
}

async fn direct_run(upstream_url: &str, upstream_pid: &str, size: Size, in_flight: usize) -> Run {
    let calls = size.calls(in_flight);
    let upstream_before = common::cpu_time(upstream_pid);
    let (mut child, line) = spawn_role(&[
        "direct",
        upstream_url,
        size.name(),
        &in_flight.to_string(),
        &calls.to_string(),
    ])
    .await;
    let upstream_cpu = common::cpu_time(upstream_pid) - upstream_before;
    child.wait().await.unwrap();
    let figures: serde_json::Value = serde_json::from_str(&line).unwrap();
    let nanos = |key: &str| Duration::from_nanos(figures[key].as_u64().unwrap());
    Run {
        calls_per_second: figures["calls_per_second"].as_f64().unwrap(),
        p50: nanos("p50_ns"),
        p99: nanos("p99_ns"),
        cpu_per_call: nanos("cpu_ns") / calls as u32,
        // Includes the warm-up calls: a little high, and only shown.
        upstream_cpu_per_call: upstream_cpu / calls as u32,
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Path {
    Bare,
    Direct,
    Gateway,
    /// The gateway built from `CPGW_BENCH_COMPARE`.
    Compare,
}

impl Path {
    fn name(self) -> &'static str {
        match self {
            Path::Bare => "bare tonic",
            Path::Direct => "direct SDK",
            Path::Gateway => "gateway",
            Path::Compare => "compared build",
        }
    }
}

const GATEWAY_FLAGS: &[&str] = &[
    "--rate-limit-rps",
    "10000",
    "--rate-limit-burst",
    "1000000",
    "--rate-limit-adaptive",
    "false",
];

/// The production default: one access line per call (and an audit line per
/// report) is part of the cost.
const GATEWAY_LOG: &str = "info";

fn median(runs: &[Run], figure: impl Fn(&Run) -> f64) -> f64 {
    let mut values: Vec<f64> = runs.iter().map(figure).collect();
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

async fn driver() {
    let (_upstream, upstream_addr) = spawn_role(&["upstream"]).await;
    let upstream_url = format!("http://{upstream_addr}");
    let upstream_pid = _upstream.id().unwrap().to_string();
    let (bare, bare_addr) = spawn_role(&["bare"]).await;
    let bare_pid = bare.id().unwrap().to_string();
    let (gateway, gateway_addr) =
        common::start_gateway_for(&upstream_url, GATEWAY_FLAGS, GATEWAY_LOG).await;
    let gateway_pid = gateway.id().unwrap().to_string();
    let compare = match std::env::var("CPGW_BENCH_COMPARE") {
        Ok(binary) => {
            let (child, addr) =
                common::start_gateway_binary(&binary, &upstream_url, GATEWAY_FLAGS, GATEWAY_LOG)
                    .await;
            let pid = child.id().unwrap().to_string();
            Some((child, addr, pid))
        }
        Err(_) => None,
    };
    let rounds: usize = std::env::var("CPGW_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(DEFAULT_ROUNDS);
    let wanted = std::env::var("CPGW_BENCH_SCENARIOS").unwrap_or_default();
    let scenarios: Vec<(Size, usize)> = [
        (Size::Small, 1),
        (Size::Small, IN_FLIGHT),
        (Size::Large, 1),
        (Size::Large, IN_FLIGHT),
    ]
    .into_iter()
    .filter(|(size, in_flight)| {
        wanted.is_empty()
            || wanted
                .split(',')
                .any(|w| w == format!("{}:{in_flight}", size.name()))
    })
    .collect();
    let mut paths = vec![Path::Bare, Path::Direct, Path::Gateway];
    if compare.is_some() {
        paths.push(Path::Compare);
    }
    let mut runs: HashMap<(usize, usize), Vec<Run>> = HashMap::new();
    let mut next_job = 0;
    for round in 0..rounds {
        for (s, &(size, in_flight)) in scenarios.iter().enumerate() {
            for p in 0..paths.len() {
                let path = (p + round) % paths.len();
                let calls = size.calls(in_flight);
                let run = match paths[path] {
                    Path::Bare => {
                        grpc_run(
                            &bare_addr,
                            size,
                            in_flight,
                            calls,
                            next_job,
                            &bare_pid,
                            &upstream_pid,
                        )
                        .await
                    }
                    Path::Gateway => {
                        grpc_run(
                            &gateway_addr,
                            size,
                            in_flight,
                            calls,
                            next_job,
                            &gateway_pid,
                            &upstream_pid,
                        )
                        .await
                    }
                    Path::Compare => {
                        let (_, addr, pid) = compare.as_ref().unwrap();
                        grpc_run(addr, size, in_flight, calls, next_job, pid, &upstream_pid).await
                    }
                    Path::Direct => direct_run(&upstream_url, &upstream_pid, size, in_flight).await,
                };
                next_job += calls + WARM_UP_CALLS;
                runs.entry((s, path)).or_default().push(run);
            }
        }
        eprintln!("round {} of {rounds} done", round + 1);
    }
    let gateway_rss_loaded = common::rss_kib(gateway.id().unwrap());
    let bare_rss_loaded = common::rss_kib(bare.id().unwrap());
    drop(gateway);
    let compared = compare.is_some();
    drop(compare);

    println!(
        "gateway vs its floors: PutJobSuccessResult, medians of {rounds} rounds, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<18} {:>10} {:>10} {:>10} {:>10} {:>12}",
        "", "calls/s", "p50 ms", "p99 ms", "CPU µs", "upstream µs"
    );
    let mut own = Vec::new();
    for (s, &(size, in_flight)) in scenarios.iter().enumerate() {
        println!("{} request, {in_flight} in flight:", size.name());
        for (p, path) in paths.iter().enumerate() {
            let r = &runs[&(s, p)];
            println!(
                "  {:<16} {:>10.0} {:>10.2} {:>10.2} {:>10.1} {:>12.1}",
                path.name(),
                median(r, |r| r.calls_per_second),
                median(r, |r| r.p50.as_secs_f64() * 1e3),
                median(r, |r| r.p99.as_secs_f64() * 1e3),
                median(r, |r| us(r.cpu_per_call)),
                median(r, |r| us(r.upstream_cpu_per_call)),
            );
        }
        let cpu = |path: usize| median(&runs[&(s, path)], |r| us(r.cpu_per_call));
        own.push((size, in_flight, cpu(2) - cpu(1) - cpu(0)));
        if compared {
            println!(
                "  own CPU per call: gateway {:.1} µs, compared build {:.1} µs",
                cpu(2) - cpu(1) - cpu(0),
                cpu(3) - cpu(1) - cpu(0)
            );
        }
    }

    // A fresh gateway's memory: idle, then after 2,000 idle connections left.
    let (fresh, fresh_addr) = common::start_gateway_for(&upstream_url, &[], "info").await;
    let fresh_pid = fresh.id().unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss = common::rss_kib(fresh_pid);
    let mut idle = Vec::with_capacity(IDLE_CONNECTIONS);
    for _ in 0..IDLE_CONNECTIONS {
        let tcp = TcpStream::connect(&fresh_addr).await.unwrap();
        let (send, connection) = h2::client::handshake(tcp).await.unwrap();
        idle.push((send, tokio::spawn(connection)));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let with_idle_rss = common::rss_kib(fresh_pid);
    for (send, connection) in idle {
        drop(send);
        connection.abort();
    }
    // Long enough for the allocator to return what it freed.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let after_rss = common::rss_kib(fresh_pid);
    drop(fresh);

    let binary = std::fs::metadata(common::gateway_binary())
        .map(|m| m.len())
        .unwrap_or(0);

    println!(
        "memory: gateway idle {:.1} MiB, with {IDLE_CONNECTIONS} idle connections {:.1} MiB, after they closed {:.1} MiB; after the load {:.1} MiB (bare tonic {:.1} MiB)",
        mib(idle_rss),
        mib(with_idle_rss),
        mib(after_rss),
        mib(gateway_rss_loaded),
        mib(bare_rss_loaded),
    );
    println!("goals (issue 11):");
    for (size, in_flight, own_us) in &own {
        let goal = if *size == Size::Small { 20 } else { 40 };
        println!(
            "  gateway's own CPU per call, {} request, {in_flight} in flight: {own_us:.1} µs (gateway − direct SDK − bare tonic; goal ≤ {goal})",
            size.name()
        );
    }
    for (s, &(size, in_flight)) in scenarios.iter().enumerate() {
        let (bare, direct, gateway) = (&runs[&(s, 0)], &runs[&(s, 1)], &runs[&(s, 2)]);
        if in_flight > 1 {
            println!(
                "  throughput, {} request, {in_flight} in flight: gateway ÷ direct SDK = {:.2} (goal ≥ 0.80)",
                size.name(),
                median(gateway, |r| r.calls_per_second) / median(direct, |r| r.calls_per_second)
            );
        } else {
            let p50 = |runs: &[Run]| median(runs, |r| r.p50.as_secs_f64() * 1e3);
            let added = p50(gateway) - p50(direct);
            println!(
                "  added p50, {} request, one at a time: {added:.3} ms = {:.2}× bare tonic's p50 {:.3} ms (goal ≤ 1.2×)",
                size.name(),
                added / p50(bare),
                p50(bare)
            );
        }
        if size == Size::Large && in_flight == 1 {
            println!(
                "  large request one at a time, gateway p99 ÷ p50 = {:.2} (goal ≤ 3: no Nagle stall)",
                median(gateway, |r| r.p99.as_secs_f64()) / median(gateway, |r| r.p50.as_secs_f64())
            );
        }
    }
    println!(
        "  release binary: {:.1} MB (goal ≤ 12)",
        binary as f64 / 1e6
    );
    println!(
        "  idle RSS {:.1} MiB (goal ≤ 10 MB = 9.5 MiB); after {IDLE_CONNECTIONS} idle connections closed {:.2}× idle (goal ≤ 1.5×)",
        mib(idle_rss),
        after_rss as f64 / idle_rss.max(1) as f64
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let role = args
        .iter()
        .position(|a| a == "--role")
        .map(|i| &args[i + 1..]);
    match role.as_ref().map(|r| r[0].as_str()) {
        Some("upstream") => upstream().await,
        Some("bare") => bare_tonic().await,
        Some("direct") => {
            let r = role.unwrap();
            direct_sdk(
                &r[1],
                Size::parse(&r[2]),
                r[3].parse().unwrap(),
                r[4].parse().unwrap(),
            )
            .await
        }
        _ => driver().await,
    }
}
