//! Shared set-up for the end-to-end tests: a real emulator (HTTP on
//! loopback), a real gateway wired to it through the real AWS SDK, and a real
//! tonic client on its own connection.
#![allow(dead_code)] // each test binary uses its own subset

use std::{num::NonZeroU32, time::Duration};

use codepipeline_emulator::{
    DEV_ACCESS_KEY_ID, DEV_REGION, DEV_SECRET_ACCESS_KEY, Emulator, EmulatorConfig, RecordedRequest,
};
use codepipeline_gateway::{
    aws,
    config::{AccessSettings, Config},
    connections::ConnectionLimits,
    proto::v1::{
        self, ActionCategory, ActionOwner, PutJobSuccessResultRequest,
        job_worker_service_client::JobWorkerServiceClient,
    },
    rate_limit::RateLimitSettings,
    retry::RetrySettings,
    server::Gateway,
};
use tokio::io::AsyncBufReadExt;
use tonic::transport::Channel;

pub const CUSTOM_JOB_ID_SHAPE: &str = "00000000-0000-4000-8000-000000000000";

/// Generous limits and fast retries, so tests are quick unless they opt in.
pub fn settings() -> Config {
    let defaults = Config::defaults_without_auth();
    Config {
        targets: Vec::new(),
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        rate_limit: RateLimitSettings {
            adaptive: defaults.rate_limit.adaptive,
            per_second: 10_000.0,
            burst: NonZeroU32::new(10_000).unwrap(),
            max_waiting: 1_000,
        },
        retry: RetrySettings {
            max_attempts: NonZeroU32::new(3).unwrap(),
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(10),
        },
        attempt_timeout: Duration::from_secs(5),
        default_deadline: Duration::from_secs(20),
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
        access: AccessSettings::default(),
        reflection: true,
        tls: None,
    }
}

pub struct Harness {
    pub emulator: Emulator,
    pub gateway: Gateway,
    pub client: JobWorkerServiceClient<Channel>,
}

pub async fn start() -> Harness {
    start_with(settings()).await
}

pub async fn start_with(settings: Config) -> Harness {
    let emulator = Emulator::start(EmulatorConfig::default())
        .await
        .expect("emulator starts");
    start_against(emulator, settings, None).await
}

/// Starts a gateway whose AWS identity uses `secret` instead of the emulator's.
pub async fn start_against(emulator: Emulator, settings: Config, secret: Option<&str>) -> Harness {
    let client = aws::config_for_emulator(&emulator, secret).await;
    let gateway = Gateway::start(settings, client)
        .await
        .expect("gateway starts");
    let client = connect(&gateway).await;
    Harness {
        emulator,
        gateway,
        client,
    }
}

/// A new client on a new HTTP/2 connection.
pub async fn connect(gateway: &Gateway) -> JobWorkerServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://{}", gateway.grpc_addr()))
        .unwrap()
        .connect()
        .await
        .expect("connects to the gateway");
    JobWorkerServiceClient::new(channel)
}

/// The requests of one operation that the emulator received.
pub fn received(emulator: &Emulator, operation: &str) -> Vec<RecordedRequest> {
    emulator.requests_for(operation)
}

/// A minimal valid success result for a custom job.
pub fn success(job_id: &str) -> PutJobSuccessResultRequest {
    PutJobSuccessResultRequest {
        job_id: job_id.to_owned(),
        ..Default::default()
    }
}

/// The gateway's Prometheus metrics, read from its admin port.
pub async fn metrics(h: &Harness) -> String {
    admin(h, "/metrics").await
}

/// The admin port's whole HTTP answer to `GET path`.
#[allow(dead_code)]
pub async fn admin(h: &Harness, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(h.gateway.admin_addr())
        .await
        .unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

/// A throwaway directory for a test's files, removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let path = std::env::temp_dir().join(format!("cpgw-test-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    /// Writes `content` to `name` in the directory; returns its path.
    pub fn file(&self, name: &str, content: &str) -> std::path::PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The dev emulator's default custom action type: {Build, Custom, CpgwDevBuilder, 1}.
pub fn custom_type() -> v1::ActionTypeId {
    v1::ActionTypeId {
        category: ActionCategory::Build.into(),
        owner: ActionOwner::Custom.into(),
        provider: "CpgwDevBuilder".into(),
        version: "1".into(),
    }
}

/// A poll for up to `max` jobs of [`custom_type`].
pub fn poll(max: i32) -> v1::PollForJobsRequest {
    v1::PollForJobsRequest {
        target: String::new(),
        action_type_id: Some(custom_type()),
        max_batch_size: Some(max),
        query_param: Default::default(),
    }
}

/// A gRPC answer read off raw HTTP/2: the status from headers or trailers.
pub async fn grpc_status(response: h2::client::ResponseFuture) -> tonic::Status {
    let response = response.await.expect("a response");
    let (parts, mut body) = response.into_parts();
    let mut fields = parts.headers.clone();
    while let Some(chunk) = body.data().await {
        if chunk.is_err() {
            break;
        }
    }
    if let Ok(Some(trailers)) = body.trailers().await {
        fields.extend(trailers);
    }
    tonic::Status::from_header_map(&fields).expect("a gRPC status")
}

/// A raw HTTP/2 connection to the gateway, for what a tonic client will not
/// do (bodies that never come, resets, garbage).
pub async fn raw_http2(
    gateway: &Gateway,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = tokio::net::TcpStream::connect(gateway.grpc_addr())
        .await
        .unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    (client, tokio::spawn(connection))
}

/// The headers of a unary job-worker call to `method`.
pub fn grpc_request(gateway: &Gateway, method: &str) -> http::Request<()> {
    http::Request::builder()
        .method("POST")
        .uri(format!(
            "http://{}/codepipeline_gateway.v1.JobWorkerService/{method}",
            gateway.grpc_addr()
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap()
}

/// `message` framed as one uncompressed gRPC message.
pub fn grpc_frame(message: &impl prost::Message) -> bytes::Bytes {
    let encoded = message.encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend((encoded.len() as u32).to_be_bytes());
    framed.extend(encoded);
    framed.into()
}

/// A success report for a new custom job, sent on a task of its own.
pub fn report_in_background(
    h: &Harness,
) -> tokio::task::JoinHandle<Result<tonic::Response<v1::PutJobSuccessResultResponse>, tonic::Status>>
{
    let job = h.emulator.create_custom_job();
    let mut client = h.client.clone();
    tokio::spawn(async move { client.put_job_success_result(success(&job.job_id)).await })
}

/// Waits (at most 5 s) until the emulator has received `count` requests of
/// `operation`: the calls behind them are then in flight.
pub async fn until_received(emulator: &Emulator, operation: &str, count: usize) {
    tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while received(emulator, operation).len() < count {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the requests reach the emulator");
}

// --- the gateway binary as a process ----------------------------------------

const BINARY: &str = env!("CARGO_BIN_EXE_codepipeline-gateway");

/// The gateway binary pointed at `emulator` through the standard AWS variables.
pub fn gateway_command(emulator: &Emulator, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(BINARY);
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_ENDPOINT_URL", emulator.endpoint_url())
        .env("AWS_REGION", DEV_REGION)
        .env("AWS_ACCESS_KEY_ID", DEV_ACCESS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", DEV_SECRET_ACCESS_KEY)
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        // These tests are about other things; authentication has its own.
        .env("CPGW_ALLOW_UNAUTHENTICATED", "true")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    command
}

/// `serve` on loopback ports (any free ones), logging JSON lines.
pub const SERVE_ON_LOOPBACK: &[&str] = &[
    "serve",
    "--listen",
    "127.0.0.1:0",
    "--admin-listen",
    "127.0.0.1:0",
    "--log-format",
    "json",
];

/// Collects every stderr line; returns the gRPC address once it is logged.
pub async fn started(
    child: &mut tokio::process::Child,
) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let (lines_tx, mut lines_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = stderr.next_line().await {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let (all_tx, all_rx) = tokio::sync::mpsc::unbounded_channel();
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines_rx.recv().await {
            all_tx.send(line.clone()).unwrap();
            if let Ok(json) = serde_json::from_str::<serde_json::Value>(&line)
                && let Some(addr) = json["grpc_addr"].as_str()
            {
                return addr.to_owned();
            }
        }
        panic!("the gateway exited before listening")
    })
    .await
    .expect("the gateway starts within 30s");
    tokio::spawn(async move {
        while let Some(line) = lines_rx.recv().await {
            if all_tx.send(line).is_err() {
                break;
            }
        }
    });
    (addr, all_rx)
}
