//! Subscriptions against polling: what they cost CodePipeline and how fast
//! jobs are picked up. One gateway process (this build's binary) against an
//! in-process emulator; jobs of one action type arrive at a steady rate.
//!
//! - **Polling** (the baseline): 50 workers, each polling through the unary
//!   `PollForJobs` every 5 seconds (start times spread over the interval),
//!   working what they get (acknowledge, report success).
//! - **Subscribed**: 50 workers on `SubscribeJobs` with credit 1, adding one
//!   credit after each job; the gateway polls for all of them.
//!
//! Each run has its own action type, so its poll count is its own. Printed
//! per run: CodePipeline polls per job, pickup latency (job created → job in
//! the worker's hands) p50/p99/max, and jobs lost (not succeeded after the
//! drain) or delivered twice; then the ratios. Goals (issue 13): polls per
//! job ≥ 10× fewer, p50 pickup under 1 s, none lost or delivered twice.
//!
//! Run: `cargo bench --bench subscribe` (`-- --rate 2 --seconds 60 --workers 50`).

mod common;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use codepipeline_emulator::{ActionTypeId, Emulator, EmulatorConfig, JobKind, JobState, NewJob};
use codepipeline_gateway::proto::v1::{self, job_worker_service_client::JobWorkerServiceClient};
use tokio::{sync::mpsc, task::JoinSet, time::Instant};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

const POLL_INTERVAL: Duration = Duration::from_secs(5);
/// After the last job is created, how long the workers may take to finish.
const DRAIN: Duration = Duration::from_secs(12);

struct Options {
    rate: f64,
    seconds: u64,
    workers: usize,
}

fn options() -> Options {
    Options {
        rate: common::flag_value("--rate", 2.0),
        seconds: common::flag_value("--seconds", 60),
        workers: common::flag_value("--workers", 50),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Polling,
    Subscribed,
}

/// When each job was created, and when (and how often) a worker got it.
#[derive(Default)]
struct Record {
    created: HashMap<String, Instant>,
    pickups: HashMap<String, Vec<Duration>>,
}

type Shared = Arc<Mutex<Record>>;

fn picked(record: &Shared, job_id: &str) {
    let mut record = record.lock().unwrap();
    let latency = record.created.get(job_id).map(Instant::elapsed);
    if let Some(latency) = latency {
        record
            .pickups
            .entry(job_id.to_owned())
            .or_default()
            .push(latency);
    }
}

/// Claims and reports a job, as a worker does once it has one.
async fn work(client: &mut JobWorkerServiceClient<Channel>, job: &v1::Job) {
    let acknowledged = client
        .acknowledge_job(v1::AcknowledgeJobRequest {
            target: String::new(),
            job_id: job.id.clone(),
            nonce: job.nonce.clone(),
        })
        .await;
    if acknowledged.is_ok() {
        client
            .put_job_success_result(v1::PutJobSuccessResultRequest {
                job_id: job.id.clone(),
                ..Default::default()
            })
            .await
            .expect("the report is accepted");
    }
}

async fn poller(
    mut client: JobWorkerServiceClient<Channel>,
    action_type: v1::ActionTypeId,
    offset: Duration,
    until: Instant,
    record: Shared,
) {
    let mut ticks = tokio::time::interval_at(Instant::now() + offset, POLL_INTERVAL);
    loop {
        ticks.tick().await;
        if Instant::now() >= until {
            return;
        }
        let jobs = client
            .poll_for_jobs(v1::PollForJobsRequest {
                target: String::new(),
                action_type_id: Some(action_type.clone()),
                max_batch_size: Some(1),
                query_param: Default::default(),
            })
            .await
            .expect("the poll is answered")
            .into_inner()
            .jobs;
        for job in jobs {
            picked(&record, &job.id);
            work(&mut client, &job).await;
        }
    }
}

async fn subscriber(
    mut client: JobWorkerServiceClient<Channel>,
    action_type: v1::ActionTypeId,
    until: Instant,
    record: Shared,
) {
    let (credit, requests) = mpsc::channel(4);
    credit
        .send(v1::SubscribeJobsRequest {
            action_type_id: Some(action_type),
            credit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut jobs = client
        .subscribe_jobs(ReceiverStream::new(requests))
        .await
        .expect("subscribed")
        .into_inner();
    loop {
        let message = tokio::select! {
            message = jobs.message() => message.expect("the subscription lasts"),
            () = tokio::time::sleep_until(until) => return,
        };
        let Some(job) = message.and_then(|m| m.job) else {
            return;
        };
        picked(&record, &job.id);
        work(&mut client, &job).await;
        let more = v1::SubscribeJobsRequest {
            credit: 1,
            ..Default::default()
        };
        if credit.send(more).await.is_err() {
            return;
        }
    }
}

struct Figures {
    jobs: usize,
    polls: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
    lost: usize,
    twice: usize,
}

async fn run(emulator: &Emulator, target: &str, mode: Mode, options: &Options) -> Figures {
    let provider = match mode {
        Mode::Polling => "BenchPollers",
        Mode::Subscribed => "BenchSubscribers",
    };
    let emulator_type = ActionTypeId::new("Build", "Custom", provider, "1");
    emulator.register_action_type(emulator_type.clone());
    let action_type = v1::ActionTypeId {
        category: v1::ActionCategory::Build.into(),
        owner: v1::ActionOwner::Custom.into(),
        provider: provider.into(),
        version: "1".into(),
    };
    let record = Shared::default();
    let polls_before = polls_of(emulator, provider);
    let arrivals = Duration::from_secs(options.seconds);
    let until = Instant::now() + arrivals + DRAIN;
    let mut workers = JoinSet::new();
    for i in 0..options.workers {
        let channel = Channel::from_shared(format!("http://{target}"))
            .unwrap()
            .connect()
            .await
            .expect("connects");
        let client = JobWorkerServiceClient::new(channel);
        match mode {
            Mode::Polling => {
                let offset = POLL_INTERVAL.mul_f64(i as f64 / options.workers as f64);
                workers.spawn(poller(
                    client,
                    action_type.clone(),
                    offset,
                    until,
                    record.clone(),
                ));
            }
            Mode::Subscribed => {
                workers.spawn(subscriber(
                    client,
                    action_type.clone(),
                    until,
                    record.clone(),
                ));
            }
        }
    }
    // Jobs at a steady rate.
    let jobs = (options.rate * options.seconds as f64) as usize;
    let gap = Duration::from_secs_f64(1.0 / options.rate);
    let start = Instant::now() + Duration::from_millis(500);
    let mut ids = Vec::with_capacity(jobs);
    for n in 0..jobs {
        tokio::time::sleep_until(start + gap * n as u32).await;
        let mut shared = record.lock().unwrap();
        let created = emulator.create_job(NewJob {
            kind: JobKind::Custom,
            action_type_id: Some(emulator_type.clone()),
            ..NewJob::default()
        });
        shared
            .created
            .insert(created.job_id.clone(), Instant::now());
        ids.push(created.job_id);
    }
    while workers.join_next().await.is_some() {}
    let polls = polls_of(emulator, provider) - polls_before;
    let record = record.lock().unwrap();
    let mut first: Vec<Duration> = record.pickups.values().map(|p| p[0]).collect();
    first.sort();
    let lost = ids
        .iter()
        .filter(|id| {
            emulator
                .job(id)
                .is_none_or(|job| job.state != JobState::Succeeded)
        })
        .count();
    let twice = record.pickups.values().filter(|p| p.len() > 1).count();
    let quantile = |p: f64| {
        if first.is_empty() {
            Duration::ZERO
        } else {
            common::percentile(&first, p)
        }
    };
    Figures {
        jobs,
        polls,
        p50: quantile(0.50),
        p99: quantile(0.99),
        max: first.last().copied().unwrap_or_default(),
        lost,
        twice,
    }
}

fn polls_of(emulator: &Emulator, provider: &str) -> usize {
    emulator
        .requests_for("PollForJobs")
        .iter()
        .filter(|r| r.body["actionTypeId"]["provider"] == provider)
        .count()
}

fn print(label: &str, f: &Figures) {
    println!(
        "{label:<11} jobs {:>4}  CodePipeline polls {:>5} ({:>6.2} per job)  pickup p50 {:>5} ms  \
         p99 {:>5} ms  max {:>5} ms  lost {}  delivered twice {}",
        f.jobs,
        f.polls,
        f.polls as f64 / f.jobs as f64,
        f.p50.as_millis(),
        f.p99.as_millis(),
        f.max.as_millis(),
        f.lost,
        f.twice,
    );
}

#[tokio::main]
async fn main() {
    let options = options();
    let emulator = Emulator::start(EmulatorConfig::default())
        .await
        .expect("emulator starts");
    let (_gateway, target) = common::start_gateway(&emulator, &[]).await;
    println!(
        "{} workers, {} jobs/s for {} s, one gateway (polling workers: every {} s)",
        options.workers,
        options.rate,
        options.seconds,
        POLL_INTERVAL.as_secs()
    );
    let polling = run(&emulator, &target, Mode::Polling, &options).await;
    print("polling", &polling);
    let subscribed = run(&emulator, &target, Mode::Subscribed, &options).await;
    print("subscribed", &subscribed);
    let per_job = |f: &Figures| f.polls as f64 / f.jobs as f64;
    println!(
        "subscribed/polling: {:.1}x fewer CodePipeline polls per job; pickup p50 {:.2}x",
        per_job(&polling) / per_job(&subscribed),
        subscribed.p50.as_secs_f64() / polling.p50.as_secs_f64().max(1e-9),
    );
}
