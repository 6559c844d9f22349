//! What routing calls to targets (several AWS accounts) costs, next to the
//! AWS hop it decides. Prints figures; asserts nothing (`cargo bench --bench
//! targets`).
//!
//! Two in-process gateways on one emulator. One has no targets file. The
//! other has three targets, each with a role in its own account. Both send
//! the same GetJobDetails calls to the gateway's own account: the routed
//! gateway chooses a target for every call, by name (the worker sends back
//! `target`) or from its memory of the polls. The AWS hop is the same for
//! both, so the difference in process CPU per call is what routing costs.
//! The loads take turns, in an order that rotates each round, and the first
//! runs twice, so that the spread between two runs of the same thing shows
//! what is noise. Another load sends the calls to an assumed-role target,
//! whose requests also carry a session token. Then the choice itself is
//! timed alone: ns per lookup, against the hop's µs.

mod common;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use codepipeline_emulator::{ACCOUNT_ID, Emulator, EmulatorConfig, NewJob, Place, Role};
use codepipeline_gateway::{
    aws,
    config::Config,
    forwarding::{ForwardingStack, StackSettings},
    metrics::Metrics,
    proto::v1::{
        ActionCategory, ActionOwner, ActionTypeId, GetJobDetailsRequest, PollForJobsRequest,
        job_worker_service_client::JobWorkerServiceClient,
    },
    server::Gateway,
    targets::{TargetSpec, Targets},
};

const CONNECTIONS: usize = 16;
const CALLS_PER_CONNECTION: usize = 250;
const ROUNDS: usize = 5;
const LOOKUPS: usize = 1_000_000;

fn settings(targets: Vec<TargetSpec>) -> Config {
    let mut config = Config::defaults_without_auth();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.admin_listen = "127.0.0.1:0".parse().unwrap();
    config.rate_limit.per_second = 1e9;
    config.rate_limit.burst = std::num::NonZeroU32::new(1_000_000).unwrap();
    config.rate_limit.max_waiting = 10_000;
    config.connections.max_connection_age = None;
    config.shutdown_delay = Duration::ZERO;
    config.targets = targets;
    config
}

fn spec(name: &str, account: &str) -> TargetSpec {
    TargetSpec {
        name: name.into(),
        region: "us-east-1".into(),
        role_arn: Some(format!("arn:aws:iam::{account}:role/codepipeline-gateway")),
        external_id: Some(format!("{name}-bench")),
        session_name: None,
        endpoint_url: None,
        action_types: Vec::new(),
        rate_limit_rps: None,
        rate_limit_burst: None,
    }
}

fn custom_type() -> ActionTypeId {
    ActionTypeId {
        category: ActionCategory::Build.into(),
        owner: ActionOwner::Custom.into(),
        provider: "CpgwDevBuilder".into(),
        version: "1".into(),
    }
}

struct Run {
    cpu: Duration,
    latencies: Vec<Duration>,
}

/// CONNECTIONS × CALLS_PER_CONNECTION GetJobDetails calls for `job_id`
/// through `gateway`, naming `target`.
async fn load(gateway: &Gateway, job_id: &str, target: &str) -> Run {
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        clients.push(
            JobWorkerServiceClient::connect(format!("http://{}", gateway.grpc_addr()))
                .await
                .unwrap(),
        );
    }
    let cpu_before = common::cpu_time("self");
    let mut tasks = Vec::new();
    for mut client in clients {
        let (job_id, target) = (job_id.to_owned(), target.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(CALLS_PER_CONNECTION);
            for _ in 0..CALLS_PER_CONNECTION {
                let call = Instant::now();
                client
                    .get_job_details(GetJobDetailsRequest {
                        job_id: job_id.clone(),
                        target: target.clone(),
                    })
                    .await
                    .expect("call succeeds");
                latencies.push(call.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    latencies.sort();
    Run {
        cpu: common::cpu_time("self") - cpu_before,
        latencies,
    }
}

#[tokio::main]
async fn main() {
    let emulator = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let names = ["team-a", "team-b", "team-c"];
    let accounts = ["111111111111", "222222222222", "333333333333"];
    let mut specs = Vec::new();
    for (name, account) in names.iter().zip(accounts) {
        let spec = spec(name, account);
        let mut role = Role::new(account, "codepipeline-gateway");
        role.external_id = spec.external_id.clone();
        emulator.add_role(role);
        specs.push(spec);
    }
    let single = Gateway::start(
        settings(Vec::new()),
        aws::config_for_emulator(&emulator, None).await,
    )
    .await
    .unwrap();
    let routed = Gateway::start(
        settings(specs),
        aws::config_for_emulator(&emulator, None).await,
    )
    .await
    .unwrap();
    // The routed gateway polls the default job, so that it remembers it.
    let home_job = emulator.create_custom_job().job_id;
    let mut poller = JobWorkerServiceClient::connect(format!("http://{}", routed.grpc_addr()))
        .await
        .unwrap();
    let polled = poller
        .poll_for_jobs(PollForJobsRequest {
            action_type_id: Some(custom_type()),
            max_batch_size: Some(10),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert!(
        polled
            .iter()
            .any(|j| j.id == home_job && j.target == "default")
    );
    let team_b_job = emulator
        .create_job(NewJob {
            place: Some(Place::new(accounts[1], "us-east-1")),
            ..NewJob::default()
        })
        .job_id;

    let total = CONNECTIONS * CALLS_PER_CONNECTION;
    // Five loads a round, in an order that rotates from round to round so
    // that none always runs first or last. The fifth is the first again: how
    // far two runs of the same thing differ says what is noise.
    let loads: [(&str, &Gateway, &str, &str); 5] = [
        (
            "no targets file                          ",
            &single,
            &home_job,
            "",
        ),
        (
            "3 targets, call names \"default\"          ",
            &routed,
            &home_job,
            "default",
        ),
        (
            "3 targets, job remembered from the poll  ",
            &routed,
            &home_job,
            "",
        ),
        (
            "3 targets, assumed-role target team-b    ",
            &routed,
            &team_b_job,
            "team-b",
        ),
        (
            "no targets file, again (noise)           ",
            &single,
            &home_job,
            "",
        ),
    ];
    let mut cpu = vec![Vec::new(); loads.len()];
    let mut p50 = vec![Vec::new(); loads.len()];
    for round in 0..ROUNDS {
        for step in 0..loads.len() {
            let i = (round + step) % loads.len();
            let (_, gateway, job_id, target) = loads[i];
            let run = load(gateway, job_id, target).await;
            cpu[i].push(run.cpu);
            p50[i].push(common::percentile(&run.latencies, 0.5));
        }
    }
    let per_call = |cpu: &[Duration]| {
        cpu.iter().sum::<Duration>().as_secs_f64() * 1e6 / (cpu.len() * total) as f64
    };
    let median_ms = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64() * 1e3
    };
    let base = per_call(&cpu[0]);
    println!(
        "targets bench: {ROUNDS} rounds of {total} GetJobDetails calls over {CONNECTIONS} connections, each load in turn"
    );
    println!(
        "  CPU per call, whole process (gateway + emulator + clients); latency p50 (median of rounds):"
    );
    for (i, (label, ..)) in loads.iter().enumerate() {
        let us = per_call(&cpu[i]);
        println!(
            "    {label} {us:6.1} µs ({:+5.1} %)  p50 {:.2} ms",
            (us / base - 1.0) * 100.0,
            median_ms(&mut p50[i])
        );
    }

    // The choice alone, on a Targets like the routed gateway's.
    let base_config = aws::config_for_emulator(&emulator, None).await;
    let stack_settings = StackSettings {
        rate_limit: Config::defaults_without_auth().rate_limit,
        retry: Config::defaults_without_auth().retry,
        attempt_timeout: Duration::from_secs(10),
        upstream: Arc::new(tokio::sync::Semaphore::new(64)),
        metrics: Arc::new(Metrics::new()),
        several_targets: true,
    };
    let client = aws_sdk_codepipeline::Client::new(&base_config);
    let others = names
        .iter()
        .map(|name| {
            let name: &'static str = Box::leak(name.to_string().into_boxed_str());
            (
                spec(name, ACCOUNT_ID),
                ForwardingStack::new(client.clone(), name, &stack_settings, None),
            )
        })
        .collect();
    let targets = Targets::new(
        ForwardingStack::new(client, "default", &stack_settings, None),
        others,
    );
    let job_ids: Vec<String> = (0..1000)
        .map(|i| format!("{i:08}-0000-4000-8000-000000000000"))
        .collect();
    for id in &job_ids {
        targets.remember(id, "team-b");
    }
    let started = Instant::now();
    let mut found = 0usize;
    for i in 0..LOOKUPS {
        let (target, _) = targets.for_job("", &job_ids[i % job_ids.len()]).unwrap();
        found += target.name.len();
    }
    let remembered_ns = started.elapsed().as_nanos() as f64 / LOOKUPS as f64;
    let started = Instant::now();
    for _ in 0..LOOKUPS {
        let (target, _) = targets.for_job("team-c", "unused").unwrap();
        found += target.name.len();
    }
    let named_ns = started.elapsed().as_nanos() as f64 / LOOKUPS as f64;
    std::hint::black_box(found);
    let hop_us = median_ms(&mut p50[0]) * 1e3;
    println!(
        "  the choice alone: {named_ns:.0} ns by name, {remembered_ns:.0} ns from memory: {:.3} % of the p50 call ({hop_us:.0} µs)",
        remembered_ns.max(named_ns) / (hop_us * 1e3) * 100.0
    );
    single.shutdown().await.unwrap();
    routed.shutdown().await.unwrap();
}
