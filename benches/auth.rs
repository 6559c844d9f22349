//! What authentication costs on the whole path — tonic client → gateway →
//! real aws-sdk-codepipeline → HTTP → emulator — on loopback, plus that
//! path's throughput, latency and memory with everything in one process.
//! Prints figures; asserts nothing (`cargo bench --bench auth`).
//!
//! The emulator shares the process and the two cores, so these figures are a
//! floor for the gateway itself, useful to compare one change with another.
//! The authentication cost is the difference in process CPU time per call
//! between two gateways in the same run, one open and one that verifies a
//! service-account token (cached after its first call) and decides a policy,
//! in alternating rounds so that machine noise hits both alike.

mod common;

use std::{
    num::NonZeroU32,
    time::{Duration, Instant},
};

use aws_lc_rs::{
    rand::SystemRandom,
    signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use codepipeline_emulator::{Emulator, EmulatorConfig};
use codepipeline_gateway::{
    aws,
    config::{AccessSettings, Config, JwksLocation, JwtSettings},
    connections::ConnectionLimits,
    proto::v1::{
        ActionCategory, ActionOwner, ActionTypeId, ExecutionDetails, PollForJobsRequest,
        PutJobSuccessResultRequest, job_worker_service_client::JobWorkerServiceClient,
    },
    rate_limit::RateLimitSettings,
    retry::RetrySettings,
    server::Gateway,
};
use serde_json::json;

const CONNECTIONS: usize = 16;
const CALLS_PER_CONNECTION: usize = 250;
const AUTH_ROUNDS: usize = 3;

fn settings(access: AccessSettings) -> Config {
    let defaults = Config::defaults_without_auth();
    Config {
        targets: Vec::new(),
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        rate_limit: RateLimitSettings {
            adaptive: defaults.rate_limit.adaptive,
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
        connections: ConnectionLimits {
            max_connection_age: None,
            ..defaults.connections
        },
        max_calls_in_flight: defaults.max_calls_in_flight,
        max_subscriptions: defaults.max_subscriptions,
        upstream_concurrency: defaults.upstream_concurrency,
        shutdown_delay: Duration::ZERO,
        shutdown_grace: Duration::from_secs(5),
        client_tokens: None,
        access,
        reflection: true,
        tls: None,
    }
}

struct Run {
    elapsed: Duration,
    cpu: Duration,
    latencies: Vec<Duration>,
}

/// CONNECTIONS × CALLS_PER_CONNECTION success reports through `gateway`,
/// each with `token` as bearer token when given.
async fn load(emulator: &Emulator, gateway: &Gateway, token: Option<&str>) -> Run {
    let jobs: Vec<Vec<String>> = (0..CONNECTIONS)
        .map(|_| {
            (0..CALLS_PER_CONNECTION)
                .map(|_| emulator.create_custom_job().job_id)
                .collect()
        })
        .collect();
    // Workers poll before they report, so a replica knows each job's action
    // type before the report arrives (a cold replica would read it from AWS
    // once per job: README "Authentication").
    let mut poller = JobWorkerServiceClient::connect(format!("http://{}", gateway.grpc_addr()))
        .await
        .unwrap();
    let mut polled = 0;
    while polled < CONNECTIONS * CALLS_PER_CONNECTION {
        let mut request = tonic::Request::new(PollForJobsRequest {
            action_type_id: Some(ActionTypeId {
                category: ActionCategory::Build.into(),
                owner: ActionOwner::Custom.into(),
                provider: "CpgwDevBuilder".into(),
                version: "1".into(),
            }),
            max_batch_size: Some(100),
            ..Default::default()
        });
        if let Some(token) = token {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        let jobs = poller
            .poll_for_jobs(request)
            .await
            .unwrap()
            .into_inner()
            .jobs;
        assert!(!jobs.is_empty(), "every created job is polled");
        polled += jobs.len();
    }
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        clients.push(
            JobWorkerServiceClient::connect(format!("http://{}", gateway.grpc_addr()))
                .await
                .unwrap(),
        );
    }
    let cpu_before = common::cpu_time("self");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (job_ids, mut client) in jobs.into_iter().zip(clients) {
        let authorization = token.map(|t| format!("Bearer {t}"));
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(job_ids.len());
            for job_id in job_ids {
                let mut request = tonic::Request::new(PutJobSuccessResultRequest {
                    job_id,
                    execution_details: Some(ExecutionDetails {
                        summary: "bench".into(),
                        percent_complete: Some(100),
                        ..Default::default()
                    }),
                    output_variables: [("K".to_owned(), "v".repeat(64))].into(),
                    ..Default::default()
                });
                if let Some(value) = &authorization {
                    request
                        .metadata_mut()
                        .insert("authorization", value.parse().unwrap());
                }
                let call = Instant::now();
                client
                    .put_job_success_result(request)
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
    let elapsed = started.elapsed();
    let cpu = common::cpu_time("self") - cpu_before;
    latencies.sort();
    Run {
        elapsed,
        cpu,
        latencies,
    }
}

/// A service-account token signed in the bench, and the issuer's key set.
fn signed_token(dir: &std::path::Path) -> (String, std::path::PathBuf) {
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let point = pair.public_key().as_ref().to_vec();
    let jwks = json!({"keys": [{
        "kty": "EC", "crv": "P-256", "alg": "ES256", "kid": "bench",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
    }]});
    let path = dir.join("jwks.json");
    std::fs::write(&path, jwks.to_string()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("bench".into());
    let claims = json!({"iss": "https://issuer.bench", "aud": "codepipeline-gateway",
        "sub": "system:serviceaccount:ci:bench", "nbf": now, "exp": now + 3600});
    let token = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref()),
    )
    .unwrap();
    (token, path)
}

#[tokio::main]
async fn main() {
    let emulator = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let open = Gateway::start(
        settings(AccessSettings::default()),
        aws::config_for_emulator(&emulator, None).await,
    )
    .await
    .unwrap();
    let rss_idle = common::rss_kib(std::process::id());
    let run = load(&emulator, &open, None).await;
    let rss_loaded = common::rss_kib(std::process::id());
    let total = run.latencies.len();

    println!("gateway bench: {total} PutJobSuccessResult calls over {CONNECTIONS} connections");
    println!(
        "  throughput: {:.0} calls/s ({:.2} s)",
        total as f64 / run.elapsed.as_secs_f64(),
        run.elapsed.as_secs_f64()
    );
    println!(
        "  latency: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        common::percentile(&run.latencies, 0.50).as_secs_f64() * 1e3,
        common::percentile(&run.latencies, 0.90).as_secs_f64() * 1e3,
        common::percentile(&run.latencies, 0.99).as_secs_f64() * 1e3,
        run.latencies.last().unwrap().as_secs_f64() * 1e3
    );
    println!(
        "  resident memory (gateway + emulator + client, one process): idle {} KiB, after load {} KiB",
        rss_idle, rss_loaded
    );

    // The same load through a gateway that authenticates and authorizes.
    let dir = std::env::temp_dir().join(format!("cpgw-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (token, jwks) = signed_token(&dir);
    let policy = dir.join("policy.yaml");
    std::fs::write(
        &policy,
        r#"rules: [{identities: ["system:serviceaccount:ci:*"], verbs: [poll, put_result],
            actionTypes: [{category: "*", owner: Custom, provider: "*", version: "*"}]}]"#,
    )
    .unwrap();
    let closed = Gateway::start(
        settings(AccessSettings {
            jwt: Some(JwtSettings {
                issuer: "https://issuer.bench".into(),
                audiences: vec!["codepipeline-gateway".into()],
                keys: JwksLocation::File(jwks),
                refresh: Duration::from_secs(300),
                min_refetch: Duration::from_secs(10),
            }),
            policy_file: Some(policy),
            ..AccessSettings::default()
        }),
        aws::config_for_emulator(&emulator, None).await,
    )
    .await
    .unwrap();
    let (mut open_cpu, mut closed_cpu) = (Vec::new(), Vec::new());
    let (mut open_p50, mut closed_p50) = (Vec::new(), Vec::new());
    for _ in 0..AUTH_ROUNDS {
        let a = load(&emulator, &open, None).await;
        let b = load(&emulator, &closed, Some(&token)).await;
        open_cpu.push(a.cpu);
        closed_cpu.push(b.cpu);
        open_p50.push(common::percentile(&a.latencies, 0.5));
        closed_p50.push(common::percentile(&b.latencies, 0.5));
    }
    let per_call = |cpu: &[Duration]| {
        cpu.iter().sum::<Duration>().as_secs_f64() * 1e6 / (cpu.len() * total) as f64
    };
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64() * 1e3
    };
    let (open_us, closed_us) = (per_call(&open_cpu), per_call(&closed_cpu));
    println!(
        "authentication ({AUTH_ROUNDS} alternating rounds of {total} reports on polled jobs; cached service-account token + policy):"
    );
    println!(
        "  CPU per call, whole process: open {open_us:.1} µs, authenticated {closed_us:.1} µs: {:+.1} % (goal: at most +5 %)",
        (closed_us / open_us - 1.0) * 100.0
    );
    println!(
        "  latency p50 (median of rounds): open {:.2} ms, authenticated {:.2} ms",
        median(open_p50),
        median(closed_p50)
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        emulator.requests_for("PutJobSuccessResult").len(),
        total * (1 + 2 * AUTH_ROUNDS)
    );
    open.shutdown().await.unwrap();
    closed.shutdown().await.unwrap();
}
