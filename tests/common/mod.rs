//! Shared set-up for the end-to-end tests: a real emulator (HTTP on
//! loopback), a real gateway wired to it through the real AWS SDK, and a real
//! tonic client on its own connection.
#![allow(dead_code)] // each test binary uses its own subset

use std::{num::NonZeroU32, time::Duration};

use codepipeline_emulator::{Emulator, EmulatorConfig, RecordedRequest};
use codepipeline_gateway::{
    aws,
    config::{AccessSettings, Config},
    proto::v1::{
        self, ActionCategory, ActionOwner, PutJobSuccessResultRequest,
        job_worker_service_client::JobWorkerServiceClient,
    },
    rate_limit::RateLimitSettings,
    retry::RetrySettings,
    server::Gateway,
};
use tonic::transport::Channel;

pub const CUSTOM_JOB_ID_SHAPE: &str = "00000000-0000-4000-8000-000000000000";

/// Generous limits and fast retries, so tests are quick unless they opt in.
pub fn settings() -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        rate_limit: RateLimitSettings {
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
        max_connection_age: None,
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
    let client = aws::client_for_emulator(&emulator, secret).await;
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(h.gateway.admin_addr())
        .await
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
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
        action_type_id: Some(custom_type()),
        max_batch_size: Some(max),
        query_param: Default::default(),
    }
}
