//! Shared set-up for the end-to-end tests: a real emulator (HTTP on
//! loopback), a real gateway wired to it through the real AWS SDK, and a real
//! tonic client on its own connection.
#![allow(dead_code)] // each test binary uses its own subset

use std::time::Duration;

use codepipeline_emulator::{Emulator, EmulatorConfig, RecordedRequest};
use codepipeline_gateway::{
    aws,
    proto::v1::job_worker_service_client::JobWorkerServiceClient,
    rate_limit::RateLimitSettings,
    retry::RetrySettings,
    server::{Gateway, Settings},
};
use tonic::transport::Channel;

pub const CUSTOM_JOB_ID_SHAPE: &str = "00000000-0000-4000-8000-000000000000";

/// Generous limits and fast retries, so tests are quick unless they opt in.
pub fn settings() -> Settings {
    Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        rate_limit: RateLimitSettings {
            per_second: 10_000.0,
            burst: 10_000,
            max_waiting: 1_000,
        },
        retry: RetrySettings {
            max_attempts: 3,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(10),
        },
        attempt_timeout: Duration::from_secs(5),
        default_deadline: Duration::from_secs(20),
        max_connection_age: None,
        shutdown_grace: Duration::from_secs(5),
        client_tokens: None,
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

pub async fn start_with(settings: Settings) -> Harness {
    let emulator = Emulator::start(EmulatorConfig::default())
        .await
        .expect("emulator starts");
    start_against(emulator, settings, None).await
}

/// Starts a gateway whose AWS identity uses `secret` instead of the emulator's.
pub async fn start_against(
    emulator: Emulator,
    settings: Settings,
    secret: Option<&str>,
) -> Harness {
    let config = emulator.config().clone();
    let client = aws::client_for_endpoint(
        &emulator.endpoint_url(),
        &config.region,
        &config.access_key_id,
        secret.unwrap_or(&config.secret_access_key),
    )
    .await;
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
