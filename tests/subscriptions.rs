//! Job subscriptions end to end: a real tonic client streams SubscribeJobs /
//! SubscribeThirdPartyJobs to the gateway, whose poller polls the emulator
//! through the real SDK; jobs are acknowledged and reported through the
//! unary calls, as a worker would.

mod common;

use std::{collections::HashSet, time::Duration};

use codepipeline_emulator::{
    ActionTypeId as EmulatorActionType, Emulator, EmulatorConfig, Fault, FaultKind, JobKind,
    JobState, NewJob,
};
use codepipeline_gateway::{
    config::AccessSettings,
    proto::v1::{self, job_worker_service_client::JobWorkerServiceClient},
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, Streaming, transport::Channel};

/// Every wait for a job in these tests ends by this.
const PATIENCE: Duration = Duration::from_secs(10);

/// A subscriber: where its credit goes, and its jobs.
struct Subscriber {
    credit: mpsc::Sender<v1::SubscribeJobsRequest>,
    jobs: Streaming<v1::SubscribeJobsResponse>,
}

impl Subscriber {
    async fn next_job(&mut self) -> v1::Job {
        let message = tokio::time::timeout(PATIENCE, self.jobs.message())
            .await
            .expect("a job within the patience")
            .expect("the stream stays open")
            .expect("the stream has not ended");
        message.job.expect("a job")
    }

    /// Asserts that no job comes within `wait`.
    async fn nothing_within(&mut self, wait: Duration) {
        if let Ok(message) = tokio::time::timeout(wait, self.jobs.message()).await {
            panic!("expected no job, got {message:?}");
        }
    }

    async fn add_credit(&self, credit: i32) {
        self.credit
            .send(v1::SubscribeJobsRequest {
                credit,
                ..Default::default()
            })
            .await
            .expect("the request stream is open");
    }

    /// The status the stream ends with.
    async fn end(&mut self) -> Status {
        loop {
            match tokio::time::timeout(PATIENCE, self.jobs.message())
                .await
                .expect("the stream ends within the patience")
            {
                Ok(Some(_)) => continue,
                Ok(None) => return Status::ok(""),
                Err(status) => return status,
            }
        }
    }
}

fn first(action_type: v1::ActionTypeId, credit: i32) -> v1::SubscribeJobsRequest {
    v1::SubscribeJobsRequest {
        action_type_id: Some(action_type),
        credit,
        ..Default::default()
    }
}

async fn try_subscribe(
    client: &mut JobWorkerServiceClient<Channel>,
    message: v1::SubscribeJobsRequest,
) -> Result<Subscriber, Status> {
    let (credit, requests) = mpsc::channel(16);
    credit.send(message).await.unwrap();
    let jobs = client
        .subscribe_jobs(ReceiverStream::new(requests))
        .await?
        .into_inner();
    Ok(Subscriber { credit, jobs })
}

async fn subscribe(client: &mut JobWorkerServiceClient<Channel>, credit: i32) -> Subscriber {
    try_subscribe(client, first(common::custom_type(), credit))
        .await
        .expect("subscribed")
}

/// A gateway whose emulator hands out unacknowledged jobs again after `timeout`.
async fn start_with_acknowledge_timeout(timeout: Duration) -> common::Harness {
    let emulator = Emulator::start(EmulatorConfig {
        acknowledge_timeout: timeout,
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    common::start_against(emulator, common::settings(), None).await
}

fn polls(emulator: &Emulator) -> Vec<serde_json::Value> {
    common::received(emulator, "PollForJobs")
        .into_iter()
        .map(|r| r.body)
        .collect()
}

fn deploy_type() -> EmulatorActionType {
    EmulatorActionType {
        category: "Deploy".into(),
        owner: "Custom".into(),
        provider: "Deployer".into(),
        version: "1".into(),
    }
}

fn deploy_type_v1() -> v1::ActionTypeId {
    v1::ActionTypeId {
        category: v1::ActionCategory::Deploy.into(),
        owner: v1::ActionOwner::Custom.into(),
        provider: "Deployer".into(),
        version: "1".into(),
    }
}

#[tokio::test]
async fn a_subscriber_gets_a_job_and_works_it_through_the_unary_calls() {
    let mut h = common::start().await;
    let mut subscriber = subscribe(&mut h.client, 1).await;
    let created = h.emulator.create_custom_job();
    let job = subscriber.next_job().await;
    assert_eq!(job.id, created.job_id);
    assert!(!job.nonce.is_empty());
    assert_eq!(
        job.data
            .as_ref()
            .and_then(|d| d.action_type_id.as_ref())
            .map(|t| t.provider.as_str()),
        Some("CpgwDevBuilder")
    );
    h.client
        .acknowledge_job(v1::AcknowledgeJobRequest {
            target: String::new(),
            job_id: job.id.clone(),
            nonce: job.nonce.clone(),
        })
        .await
        .expect("the nonce the subscription delivered acknowledges the job");
    h.client
        .put_job_success_result(common::success(&job.id))
        .await
        .expect("reported");
    assert_eq!(h.emulator.job(&job.id).unwrap().state, JobState::Succeeded);
    let metrics = common::metrics(&h).await;
    assert!(
        metrics.contains(r#"cpgw_subscription_jobs_total{kind="custom",outcome="delivered"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"cpgw_subscriptions{kind="custom"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn credit_bounds_what_is_polled_and_delivered_and_no_credit_means_no_polls() {
    let mut h = common::start().await;
    for _ in 0..5 {
        h.emulator.create_custom_job();
    }
    let mut subscriber = subscribe(&mut h.client, 2).await;
    let mut seen = HashSet::new();
    for _ in 0..2 {
        seen.insert(subscriber.next_job().await.id);
    }
    subscriber.nothing_within(Duration::from_millis(1500)).await;
    // With its credit spent, the poller does not poll at all.
    let polled = polls(&h.emulator);
    assert!(
        polled
            .iter()
            .all(|body| body["maxBatchSize"].as_i64() <= Some(2)),
        "{polled:?}"
    );
    let before = polled.len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(polls(&h.emulator).len(), before, "no credit, no polls");
    // Credit comes back: the poller asks for exactly that much.
    subscriber.add_credit(3).await;
    for _ in 0..3 {
        seen.insert(subscriber.next_job().await.id);
    }
    assert_eq!(seen.len(), 5, "five different jobs");
    let after = polls(&h.emulator);
    assert_eq!(after[before]["maxBatchSize"], 3, "{after:?}");
}

#[tokio::test]
async fn jobs_are_shared_round_robin_between_subscribers() {
    let mut h = common::start().await;
    let mut subscribers = Vec::new();
    for _ in 0..3 {
        let mut client = common::connect(&h.gateway).await;
        subscribers.push(subscribe(&mut client, 10).await);
    }
    // Let the poller see all three before the jobs exist.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..9 {
        h.emulator.create_custom_job();
    }
    let mut all = HashSet::new();
    for subscriber in &mut subscribers {
        for _ in 0..3 {
            assert!(
                all.insert(subscriber.next_job().await.id),
                "delivered twice"
            );
        }
    }
    for subscriber in &mut subscribers {
        subscriber.nothing_within(Duration::from_millis(300)).await;
    }
    assert_eq!(all.len(), 9);
    let _ = &mut h;
}

#[tokio::test]
async fn a_job_its_subscriber_left_with_goes_to_the_next_once_offered_again() {
    let mut h = start_with_acknowledge_timeout(Duration::from_secs(1)).await;
    let mut leaving = subscribe(&mut h.client, 1).await;
    let created = h.emulator.create_custom_job();
    let first = leaving.next_job().await;
    assert_eq!(first.id, created.job_id);
    drop(leaving);
    // The job was delivered, never acknowledged; once CodePipeline offers it
    // again, the subscriber that is here now gets it, with the new nonce.
    let mut client = common::connect(&h.gateway).await;
    let mut staying = subscribe(&mut client, 1).await;
    let again = staying.next_job().await;
    assert_eq!(again.id, created.job_id);
    assert_ne!(again.nonce, first.nonce);
    h.client
        .acknowledge_job(v1::AcknowledgeJobRequest {
            target: String::new(),
            job_id: again.id.clone(),
            nonce: again.nonce.clone(),
        })
        .await
        .expect("the new nonce claims it");
    assert_eq!(h.emulator.job(&again.id).unwrap().dispatches, 2);
}

#[tokio::test]
async fn a_job_offered_again_is_not_delivered_twice_while_its_subscriber_is_connected() {
    let mut h = start_with_acknowledge_timeout(Duration::from_millis(500)).await;
    let mut slow = subscribe(&mut h.client, 1).await;
    let mut client = common::connect(&h.gateway).await;
    let mut other = subscribe(&mut client, 5).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let created = h.emulator.create_custom_job();
    // Whoever got it holds it, unacknowledged, past the acknowledge timeout.
    let (holder, bystander) = tokio::select! {
        job = slow.next_job() => { assert_eq!(job.id, created.job_id); (&mut slow, &mut other) }
        job = other.next_job() => { assert_eq!(job.id, created.job_id); (&mut other, &mut slow) }
    };
    holder.add_credit(1).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    bystander.nothing_within(Duration::from_millis(100)).await;
    holder.nothing_within(Duration::from_millis(100)).await;
    assert!(
        h.emulator.job(&created.job_id).unwrap().dispatches >= 2,
        "the emulator offered it again"
    );
    let metrics = common::metrics(&h).await;
    let held = counter(
        &metrics,
        r#"cpgw_subscription_jobs_total{kind="custom",outcome="held_by_subscriber"}"#,
    );
    assert!(held >= 1, "{metrics}");
    let delivered = counter(
        &metrics,
        r#"cpgw_subscription_jobs_total{kind="custom",outcome="delivered"}"#,
    );
    assert_eq!(delivered, 1, "delivered once: {metrics}");
}

/// A gateway whose emulator re-offers unacknowledged jobs after 1 s, with a
/// job created and one subscriber that leaves while the poll that fetches
/// the job (800 ms) is on its way.
async fn a_subscriber_leaves_during_the_poll() -> (common::Harness, String) {
    let mut h = start_with_acknowledge_timeout(Duration::from_secs(1)).await;
    let created = h.emulator.create_custom_job();
    h.emulator.inject_fault(Fault::for_operation(
        "PollForJobs",
        FaultKind::Delay(Duration::from_millis(800)),
        1,
    ));
    let leaving = subscribe(&mut h.client, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(leaving);
    (h, created.job_id)
}

#[tokio::test]
async fn a_job_polled_for_a_subscriber_that_left_waits_for_the_next_one() {
    let (h, job_id) = a_subscriber_leaves_during_the_poll().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The worker reconnects within the hold: the job is its, as polled.
    let mut client = common::connect(&h.gateway).await;
    let mut next = subscribe(&mut client, 1).await;
    let job = next.next_job().await;
    assert_eq!(job.id, job_id);
    assert_eq!(h.emulator.job(&job_id).unwrap().dispatches, 1);
    h.client
        .clone()
        .acknowledge_job(v1::AcknowledgeJobRequest {
            target: String::new(),
            job_id: job.id.clone(),
            nonce: job.nonce.clone(),
        })
        .await
        .expect("the nonce of the poll still claims it");
}

#[tokio::test]
async fn a_job_no_subscriber_takes_is_left_unacknowledged_for_codepipeline() {
    let (h, job_id) = a_subscriber_leaves_during_the_poll().await;
    // Nobody comes within the hold (5 s): the gateway lets go of the job,
    // unacknowledged, and CodePipeline offers it again.
    tokio::time::sleep(Duration::from_millis(6000)).await;
    let job = h.emulator.job(&job_id).unwrap();
    assert_eq!(
        job.state,
        JobState::Dispatched,
        "polled, never acknowledged"
    );
    let metrics = common::metrics(&h).await;
    assert_eq!(
        counter(
            &metrics,
            r#"cpgw_subscription_jobs_total{kind="custom",outcome="no_subscriber"}"#
        ),
        1,
        "{metrics}"
    );
    let mut client = common::connect(&h.gateway).await;
    let mut next = subscribe(&mut client, 1).await;
    let again = next.next_job().await;
    assert_eq!(again.id, job_id);
    assert_eq!(h.emulator.job(&job_id).unwrap().dispatches, 2);
}

#[tokio::test]
async fn two_action_types_are_polled_apart_and_their_jobs_never_cross() {
    let mut h = common::start().await;
    h.emulator.register_action_type(deploy_type());
    let mut builds = subscribe(&mut h.client, 5).await;
    let mut client = common::connect(&h.gateway).await;
    let mut deploys = try_subscribe(&mut client, first(deploy_type_v1(), 5))
        .await
        .unwrap();
    let build = h.emulator.create_custom_job();
    let deploy = h.emulator.create_job(NewJob {
        kind: JobKind::Custom,
        action_type_id: Some(deploy_type()),
        ..NewJob::default()
    });
    assert_eq!(builds.next_job().await.id, build.job_id);
    assert_eq!(deploys.next_job().await.id, deploy.job_id);
    builds.nothing_within(Duration::from_millis(500)).await;
    deploys.nothing_within(Duration::from_millis(100)).await;
    let providers: HashSet<String> = polls(&h.emulator)
        .iter()
        .map(|b| b["actionTypeId"]["provider"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        providers,
        HashSet::from(["CpgwDevBuilder".to_owned(), "Deployer".to_owned()])
    );
}

#[tokio::test]
async fn partner_jobs_come_with_their_client_id_and_are_claimed_through_the_map() {
    let mut h = common::start().await;
    let created = h.emulator.create_third_party_job();
    let (credit, requests) = mpsc::channel(4);
    credit
        .send(v1::SubscribeThirdPartyJobsRequest {
            target: String::new(),
            action_type_id: Some(v1::ActionTypeId {
                category: v1::ActionCategory::Deploy.into(),
                owner: v1::ActionOwner::ThirdParty.into(),
                provider: "CpgwDevPartner".into(),
                version: "1".into(),
            }),
            credit: 1,
        })
        .await
        .unwrap();
    let mut jobs = h
        .client
        .subscribe_third_party_jobs(ReceiverStream::new(requests))
        .await
        .expect("subscribed")
        .into_inner();
    let job = tokio::time::timeout(PATIENCE, jobs.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .job
        .unwrap();
    assert_eq!(job.job_id, created.job_id);
    assert_eq!(Some(job.client_id.as_str()), created.client_id.as_deref());
}

#[tokio::test]
async fn a_bad_subscription_is_refused_naming_the_field_and_nothing_is_polled() {
    let mut h = common::start().await;
    let cases = [
        (
            v1::SubscribeJobsRequest {
                credit: 1,
                ..Default::default()
            },
            "actionTypeId",
        ),
        (first(common::custom_type(), 0), "credit"),
        (first(common::custom_type(), 101), "credit"),
        (
            first(
                v1::ActionTypeId {
                    owner: v1::ActionOwner::ThirdParty.into(),
                    ..common::custom_type()
                },
                1,
            ),
            "actionTypeId.owner",
        ),
    ];
    for (message, field) in cases {
        let status = try_subscribe(&mut h.client, message).await.err().unwrap();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            violations(&status).contains(&field.to_owned()),
            "{field}: {status:?}"
        );
    }
    // Credit past the bound ends a live subscription, naming the field.
    let mut subscriber = subscribe(&mut h.client, 60).await;
    subscriber.add_credit(41).await;
    let status = subscriber.end().await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(violations(&status), ["credit"]);
    // A later message may not change what is subscribed to.
    let subscriber = subscribe(&mut h.client, 1).await;
    subscriber
        .credit
        .send(first(common::custom_type(), 1))
        .await
        .unwrap();
    let mut subscriber = subscriber;
    let status = subscriber.end().await;
    assert_eq!(violations(&status), ["actionTypeId"]);
    // A stream that ends before its first message.
    let (credit, requests) = mpsc::channel::<v1::SubscribeJobsRequest>(1);
    drop(credit);
    let status = h
        .client
        .subscribe_jobs(ReceiverStream::new(requests))
        .await
        .err()
        .unwrap();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        polls(&h.emulator).len() <= 2,
        "only the two live subscriptions polled"
    );
}

/// The value of one series in the Prometheus text.
fn counter(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("{series} in {metrics}"))
}

fn violations(status: &Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_subscriber_must_be_allowed_to_poll_the_action_type() {
    let dir = common::TempDir::new();
    let digest = |token: &str| -> String {
        use sha2::{Digest, Sha256};
        Sha256::digest(token.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let mut settings = common::settings();
    settings.access = AccessSettings {
        static_tokens_file: Some(dir.file(
            "tokens.yaml",
            &format!("builder: {}\n", digest("builder-secret")),
        )),
        policy_file: Some(dir.file(
            "policy.yaml",
            "rules:\n  - identities: [builder]\n    verbs: [poll]\n    actionTypes:\n      - {category: Build, owner: Custom, provider: CpgwDevBuilder, version: \"*\"}\n",
        )),
        ..AccessSettings::default()
    };
    let mut h = common::start_with(settings).await;
    h.emulator.register_action_type(deploy_type());
    let with_token = |message: v1::SubscribeJobsRequest, token: Option<&str>| {
        let (credit, requests) = mpsc::channel(1);
        credit.try_send(message).unwrap();
        let mut request = tonic::Request::new(ReceiverStream::new(requests));
        if let Some(token) = token {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        (credit, request)
    };
    let (_keep, request) = with_token(first(common::custom_type(), 1), None);
    let status = h.client.subscribe_jobs(request).await.err().unwrap();
    assert_eq!(status.code(), Code::Unauthenticated);
    let (_keep, request) = with_token(first(deploy_type_v1(), 1), Some("builder-secret"));
    let status = h.client.subscribe_jobs(request).await.err().unwrap();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("Deployer"), "{status:?}");
    assert!(!status.message().contains("builder-secret"));
    assert!(
        polls(&h.emulator).is_empty(),
        "nothing unauthorized is polled"
    );
    let (_keep, request) = with_token(first(common::custom_type(), 1), Some("builder-secret"));
    let jobs = h.client.subscribe_jobs(request).await.expect("allowed");
    let created = h.emulator.create_custom_job();
    let mut jobs = jobs.into_inner();
    let job = tokio::time::timeout(PATIENCE, jobs.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(job.job.unwrap().id, created.job_id);
}

#[tokio::test]
async fn subscriptions_are_bounded_and_end_when_the_gateway_shuts_down() {
    let mut settings = common::settings();
    settings.max_subscriptions = 1;
    let mut h = common::start_with(settings).await;
    let mut subscriber = subscribe(&mut h.client, 1).await;
    let status = try_subscribe(&mut h.client, first(common::custom_type(), 1))
        .await
        .err()
        .unwrap();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("--max-subscriptions"));
    h.gateway.begin_shutdown();
    let status = subscriber.end().await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("subscribe again"), "{status:?}");
}

#[tokio::test]
async fn an_idle_timeout_does_not_close_a_connection_that_holds_a_subscription() {
    let mut settings = common::settings();
    settings.connections.idle_timeout = Some(Duration::from_millis(300));
    let mut h = common::start_with(settings).await;
    let mut subscriber = subscribe(&mut h.client, 1).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let created = h.emulator.create_custom_job();
    assert_eq!(subscriber.next_job().await.id, created.job_id);
}

#[tokio::test]
async fn a_subscription_ends_at_its_connections_maximum_age_so_the_worker_reconnects() {
    let mut settings = common::settings();
    settings.connections.max_connection_age = Some(Duration::from_millis(500));
    let mut h = common::start_with(settings).await;
    let mut subscriber = subscribe(&mut h.client, 1).await;
    let status = subscriber.end().await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let mut client = common::connect(&h.gateway).await;
    let mut again = subscribe(&mut client, 1).await;
    let created = h.emulator.create_custom_job();
    assert_eq!(again.next_job().await.id, created.job_id);
}

/// A loopback TCP proxy to the gateway that can go silent, like a worker
/// whose node vanished: bytes stop flowing both ways, nothing is closed.
async fn freezable_proxy(
    target: std::net::SocketAddr,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::{Arc, atomic::AtomicBool};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let frozen = Arc::new(AtomicBool::new(false));
    let flag = frozen.clone();
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        let server = tokio::net::TcpStream::connect(target).await.unwrap();
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = server.into_split();
        let pump = |mut from: tokio::net::tcp::OwnedReadHalf,
                    mut to: tokio::net::tcp::OwnedWriteHalf,
                    frozen: Arc<AtomicBool>| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut buffer = vec![0; 16 * 1024];
            while let Ok(n) = from.read(&mut buffer).await {
                if n == 0 {
                    break;
                }
                if frozen.load(std::sync::atomic::Ordering::SeqCst) {
                    // Swallowed: the peer hears nothing, and nothing closes.
                    continue;
                }
                if to.write_all(&buffer[..n]).await.is_err() {
                    break;
                }
            }
            // Hold the write half open: a dead peer sends no FIN.
            std::future::pending::<()>().await;
        };
        tokio::spawn(pump(client_read, server_write, flag.clone()));
        tokio::spawn(pump(server_read, client_write, flag));
    });
    (addr, frozen)
}

#[tokio::test]
async fn keepalives_drop_a_subscriber_that_went_silent() {
    let mut settings = common::settings();
    settings.connections.keepalive_interval = Some(Duration::from_millis(200));
    settings.connections.keepalive_timeout = Duration::from_millis(300);
    let h = common::start_with(settings).await;
    let (proxy, frozen) = freezable_proxy(h.gateway.grpc_addr()).await;
    let channel = Channel::from_shared(format!("http://{proxy}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = JobWorkerServiceClient::new(channel);
    let _silent = subscribe(&mut client, 1).await;
    let open = |metrics: &str| counter(metrics, r#"cpgw_subscriptions{kind="custom"}"#);
    assert_eq!(open(&common::metrics(&h).await), 1);
    frozen.store(true, std::sync::atomic::Ordering::SeqCst);
    // Without keepalives (interval None) this waits out the patience and fails.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while open(&common::metrics(&h).await) != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the silent subscriber is still there"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // No job goes its way: the next subscriber gets the next job.
    let mut client = common::connect(&h.gateway).await;
    let mut alive = subscribe(&mut client, 1).await;
    let created = h.emulator.create_custom_job();
    assert_eq!(alive.next_job().await.id, created.job_id);
}

#[tokio::test]
async fn a_job_whose_subscriber_left_during_the_poll_goes_to_the_next_subscriber() {
    let mut h = common::start().await;
    let leaving = subscribe(&mut h.client, 1).await;
    let mut client = common::connect(&h.gateway).await;
    let mut staying = subscribe(&mut client, 1).await;
    // The first (empty) poll is done; the next one takes 800 ms.
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.emulator.inject_fault(Fault::for_operation(
        "PollForJobs",
        FaultKind::Delay(Duration::from_millis(800)),
        1,
    ));
    let created = h.emulator.create_custom_job();
    // The first subscriber, next in the round, leaves while that poll is on
    // its way: the job goes straight to the other, not back to CodePipeline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(leaving);
    let job = staying.next_job().await;
    assert_eq!(job.id, created.job_id);
    assert_eq!(h.emulator.job(&job.id).unwrap().dispatches, 1);
    let metrics = common::metrics(&h).await;
    let series = |outcome: &str| {
        counter(
            &metrics,
            &format!(r#"cpgw_subscription_jobs_total{{kind="custom",outcome="{outcome}"}}"#),
        )
    };
    assert_eq!((series("delivered"), series("no_subscriber")), (1, 0));
}
