//! The soak: job workers drive the whole lifecycle (poll, acknowledge, read,
//! report success, failure or progress) through the release gateway in its
//! own process while the emulator injects faults into about 5 % of the
//! calls (throttling, 5xx, resets before and after applying, delays). The
//! workers follow docs/clients.md. At the end the emulator's job states are
//! the ground truth, and the bench prints the exact accounting:
//!
//! - calls made, answered OK, answered with another code;
//! - **lost**: reports the gateway answered OK that CodePipeline does not have;
//! - **silently duplicated**: results applied twice, or a progress report
//!   that queued two continuation jobs, without the worker being told;
//! - honest "outcome unknown" answers, and how many of those had in fact
//!   been applied (the worker's repeat then settles it);
//! - the gateway's RSS before and after.
//!
//! Run: `cargo bench --bench soak` (`-- --calls 30000 --workers 32`, and
//! `--gateway <flags>` last to pass flags to the gateway).

mod common;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use codepipeline_emulator::{Emulator, EmulatorConfig, Fault, FaultKind, JobState};
use codepipeline_gateway::proto::v1::{
    self, AcknowledgeJobRequest, GetJobDetailsRequest, PollForJobsRequest,
    PutJobFailureResultRequest, PutJobSuccessResultRequest,
    job_worker_service_client::JobWorkerServiceClient,
};
use rand::Rng;
use tokio::time::Instant;
use tonic::{Code, Status, transport::Channel};
use tonic_types::StatusExt;

const FAULT_SHARE: f64 = 0.05;
const ATTEMPTS: u32 = 5;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| v.parse().expect("a number"))
}

/// What the workers were told, for the accounting.
#[derive(Default)]
struct Ledger {
    calls: AtomicU64,
    ok: AtomicU64,
    outcome_unknown: AtomicU64,
    codes: Mutex<HashMap<Code, u64>>,
    /// Job id → the result the worker was told landed.
    delivered: Mutex<HashMap<String, Told>>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Told {
    Success,
    Failure,
    Progress,
}

impl Ledger {
    fn count<T>(&self, result: &Result<T, Status>) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(_) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(status) => {
                if unknown(status) {
                    self.outcome_unknown.fetch_add(1, Ordering::Relaxed);
                }
                *self.codes.lock().unwrap().entry(status.code()).or_default() += 1;
            }
        }
    }
}

fn meta(status: &Status, key: &str) -> bool {
    status
        .get_details_error_info()
        .is_some_and(|info| info.metadata.get(key).is_some_and(|v| v == "true"))
}

/// Whether the call may have landed (docs/clients.md).
fn unknown(status: &Status) -> bool {
    meta(status, "outcomeUnknown")
        || status.code() == Code::DeadlineExceeded
        || (status.code() == Code::Unavailable && status.get_details_error_info().is_none())
}

fn reason(status: &Status) -> String {
    status
        .get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default()
}

fn retryable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::ResourceExhausted | Code::DeadlineExceeded
    )
}

/// Keeps about [`FAULT_SHARE`] of the attempts that reach AWS faulted: every
/// 50 ms, queues that share of the attempts since the last look as faults of
/// random kinds on random operations.
async fn inject_faults(emulator: Emulator, stop: Arc<std::sync::atomic::AtomicBool>) {
    const OPERATIONS: [&str; 5] = [
        "PollForJobs",
        "AcknowledgeJob",
        "GetJobDetails",
        "PutJobSuccessResult",
        "PutJobFailureResult",
    ];
    let mut seen = 0;
    let mut owed = 0.0;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = emulator.requests().len();
        owed += (now - seen) as f64 * FAULT_SHARE;
        seen = now;
        while owed >= 1.0 {
            owed -= 1.0;
            let operation = OPERATIONS[rand::rng().random_range(0..OPERATIONS.len())];
            emulator.inject_fault(Fault::for_operation(operation, random_fault(), 1));
        }
    }
}

fn random_fault() -> FaultKind {
    let mut rng = rand::rng();
    match rng.random_range(0..6) {
        0 => FaultKind::Throttle,
        1 => FaultKind::ServerError(503),
        2 => FaultKind::ResetBeforeApply,
        3 => FaultKind::ResetAfterApply,
        4 => FaultKind::Delay(Duration::from_millis(1500)),
        _ => FaultKind::ServerError(500),
    }
}

/// Waits as `RetryInfo` asks (docs/clients.md), at least 20 ms.
async fn back_off(status: &Status) {
    let delay = status
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .unwrap_or_default()
        .max(Duration::from_millis(20));
    tokio::time::sleep(delay).await;
}

async fn work_one_job(client: &mut JobWorkerServiceClient<Channel>, ledger: &Ledger, job: v1::Job) {
    let deadline = Duration::from_secs(3);
    // Acknowledge: INVALID_NONCE after our own unknown outcome means ours.
    let mut earlier_unknown = false;
    let mut acknowledged = false;
    for _ in 0..ATTEMPTS {
        let mut request = tonic::Request::new(AcknowledgeJobRequest {
            target: String::new(),
            job_id: job.id.clone(),
            nonce: job.nonce.clone(),
        });
        request.set_timeout(deadline);
        let result = client.acknowledge_job(request).await;
        ledger.count(&result);
        match result {
            Ok(_) => {
                acknowledged = true;
                break;
            }
            Err(status) if reason(&status) == "INVALID_NONCE" => {
                acknowledged = earlier_unknown || meta(&status, "earlierAttemptMayHaveBeenApplied");
                break;
            }
            Err(status) if retryable(&status) => {
                earlier_unknown |= unknown(&status);
                back_off(&status).await;
            }
            Err(_) => break,
        }
    }
    if !acknowledged {
        return;
    }
    let mut request = tonic::Request::new(GetJobDetailsRequest {
        target: String::new(),
        job_id: job.id.clone(),
    });
    request.set_timeout(deadline);
    let details = client.get_job_details(request).await;
    ledger.count(&details);

    let continues = job
        .data
        .as_ref()
        .is_some_and(|d| !d.continuation_token.is_empty());
    let roll: f64 = rand::rng().random();
    let told = if continues || roll < 0.7 {
        Told::Success
    } else if roll < 0.9 {
        Told::Failure
    } else {
        Told::Progress
    };
    let mut earlier_unknown = false;
    for _ in 0..ATTEMPTS {
        let result = match told {
            Told::Failure => {
                let mut request = tonic::Request::new(PutJobFailureResultRequest {
                    target: String::new(),
                    job_id: job.id.clone(),
                    failure_details: Some(v1::FailureDetails {
                        r#type: v1::FailureType::JobFailed.into(),
                        message: "soak".into(),
                        external_execution_id: String::new(),
                    }),
                });
                request.set_timeout(deadline);
                client.put_job_failure_result(request).await.map(|_| ())
            }
            Told::Success | Told::Progress => {
                let mut request = tonic::Request::new(PutJobSuccessResultRequest {
                    job_id: job.id.clone(),
                    continuation_token: if told == Told::Progress {
                        "soak-step".into()
                    } else {
                        String::new()
                    },
                    ..Default::default()
                });
                request.set_timeout(deadline);
                client.put_job_success_result(request).await.map(|_| ())
            }
        };
        ledger.count(&result);
        match result {
            Ok(()) => {
                ledger
                    .delivered
                    .lock()
                    .unwrap()
                    .insert(job.id.clone(), told);
                return;
            }
            Err(status)
                if reason(&status) == "INVALID_JOB_STATE"
                    && (earlier_unknown || meta(&status, "earlierAttemptMayHaveBeenApplied")) =>
            {
                // Already reported (docs/clients.md).
                ledger
                    .delivered
                    .lock()
                    .unwrap()
                    .insert(job.id.clone(), told);
                return;
            }
            Err(status) if retryable(&status) => {
                earlier_unknown |= unknown(&status);
                back_off(&status).await;
            }
            Err(_) => return,
        }
    }
}

#[tokio::main]
async fn main() {
    let target_calls = arg("--calls", 30_000);
    let workers = arg("--workers", 32) as usize;
    let emulator = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let (child, addr) = common::start_gateway(
        &emulator,
        &[
            "--rate-limit-rps",
            "10000",
            "--rate-limit-burst",
            "100000",
            "--attempt-timeout",
            "1s",
        ],
    )
    .await;
    let pid = child.id().expect("running");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = common::rss_kib(pid);
    let ledger = Arc::new(Ledger::default());
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let started = Instant::now();
    let stop_faults = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let injector = tokio::spawn(inject_faults(emulator.clone(), stop_faults.clone()));
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let ledger = ledger.clone();
        let emulator = emulator.clone();
        let mut client = JobWorkerServiceClient::new(channel.clone());
        tasks.push(tokio::spawn(async move {
            while ledger.calls.load(Ordering::Relaxed) < target_calls {
                emulator.create_custom_job();
                let mut request = tonic::Request::new(PollForJobsRequest {
                    target: String::new(),
                    action_type_id: Some(v1::ActionTypeId {
                        category: v1::ActionCategory::Build.into(),
                        owner: v1::ActionOwner::Custom.into(),
                        provider: "CpgwDevBuilder".into(),
                        version: "1".into(),
                    }),
                    max_batch_size: Some(1),
                    query_param: HashMap::new(),
                });
                request.set_timeout(Duration::from_secs(3));
                let polled = client.poll_for_jobs(request).await;
                ledger.count(&polled);
                let polled = match polled {
                    Ok(polled) => polled,
                    Err(status) => {
                        back_off(&status).await;
                        continue;
                    }
                };
                for job in polled.into_inner().jobs {
                    work_one_job(&mut client, &ledger, job).await;
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let took = started.elapsed();
    stop_faults.store(true, Ordering::Relaxed);
    injector.await.unwrap();
    emulator.clear_faults();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = common::rss_kib(pid);

    // Ground truth: the emulator's jobs.
    let jobs = emulator.jobs();
    let by_id: HashMap<&str, _> = jobs.iter().map(|j| (j.job_id.as_str(), j)).collect();
    let mut continuations: HashMap<&str, u32> = HashMap::new();
    for job in &jobs {
        if let Some(original) = &job.continuation_of {
            *continuations.entry(original.as_str()).or_default() += 1;
        }
    }
    let delivered = ledger.delivered.lock().unwrap();
    let mut lost = 0;
    for (job_id, told) in delivered.iter() {
        let job = by_id[job_id.as_str()];
        let landed = match told {
            Told::Success => job.state == JobState::Succeeded,
            Told::Failure => job.state == JobState::Failed,
            Told::Progress => {
                job.state == JobState::Succeeded
                    && continuations.get(job_id.as_str()).copied().unwrap_or(0) >= 1
            }
        };
        if !landed {
            lost += 1;
        }
    }
    let duplicated = jobs.iter().filter(|j| j.results_received > 1).count()
        + continuations.values().filter(|n| **n > 1).count();

    let calls = ledger.calls.load(Ordering::Relaxed);
    let ok = ledger.ok.load(Ordering::Relaxed);
    let unknown = ledger.outcome_unknown.load(Ordering::Relaxed);
    let codes = ledger.codes.lock().unwrap();
    let faults: usize = emulator
        .requests()
        .iter()
        .filter(|r| r.fault.is_some())
        .count();
    let attempts = emulator.requests().len();
    println!(
        "soak: {workers} workers, {calls} calls in {:.1} s ({:.0} calls/s), {faults} of {attempts} AWS attempts faulted ({:.1} %)",
        took.as_secs_f64(),
        calls as f64 / took.as_secs_f64(),
        100.0 * faults as f64 / attempts.max(1) as f64
    );
    println!("  answered OK:                      {ok}");
    println!("  reports delivered (told so):      {}", delivered.len());
    println!("  lost (OK, not recorded by AWS):   {lost}");
    println!("  silently duplicated:              {duplicated}");
    println!("  honest outcome-unknown answers:   {unknown}");
    let mut other: Vec<_> = codes.iter().collect();
    other.sort_by_key(|(code, _)| format!("{code:?}"));
    println!(
        "  errors by code:                   {}",
        other
            .iter()
            .map(|(code, n)| format!("{code:?} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  gateway RSS:                      {:.1} MiB before, {:.1} MiB after",
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0
    );
    drop(child);
}
