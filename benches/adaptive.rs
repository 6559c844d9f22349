//! Do replicas that share nothing settle on the account's quota? Four gateway
//! *processes* (the release binary), each configured well above the quota,
//! serve hungry clients against one emulator that throttles above Q calls a
//! second. CodePipeline's throttling is the only signal they share.
//!
//! Prints a per-second timeline (accepted and throttled attempts at the
//! emulator), then: when the total settled (from then on every 2-second window
//! holds ≥ 90 % of Q with ≤ 5 % of attempts throttled), the share of Q used
//! and the share of attempts throttled after 10 s. The same run repeats with
//! `--rate-limit-adaptive false`, as the baseline the figures compare with.
//!
//! Run: `cargo bench --bench adaptive` (`-- --quota 40 --seconds 30`).

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use codepipeline_emulator::{Emulator, EmulatorConfig};
use codepipeline_gateway::proto::v1::{
    GetJobDetailsRequest, job_worker_service_client::JobWorkerServiceClient,
};
use tokio::time::Instant;
use tonic::Code;

const GATEWAYS: usize = 4;
/// Calls each gateway's client keeps in flight: demand far above the quota.
const IN_FLIGHT_PER_GATEWAY: usize = 16;
/// Each gateway's configured rate: well above its share of the quota.
const CONFIGURED_RPS: &str = "100";

struct Options {
    quota: f64,
    seconds: u64,
}

fn options() -> Options {
    Options {
        quota: common::flag_value("--quota", 40.0),
        seconds: common::flag_value("--seconds", 30),
    }
}

/// Accepted and throttled GetJobDetails attempts the emulator has seen.
fn counts(emulator: &Emulator) -> (u64, u64) {
    let mut accepted = 0;
    let mut throttled = 0;
    for request in emulator.requests_for("GetJobDetails") {
        match request.error_type.as_deref() {
            Some("ThrottlingException") => throttled += 1,
            _ if request.status == 200 => accepted += 1,
            _ => {}
        }
    }
    (accepted, throttled)
}

struct Figures {
    settled_after: Option<u64>,
    quota_used_after_10s: f64,
    throttled_after_10s: f64,
}

async fn run(options: &Options, adaptive: bool) -> Figures {
    let emulator = Emulator::start(EmulatorConfig::default()).await.unwrap();
    emulator.set_quota(Some(options.quota));
    let job = emulator.create_custom_job();
    let mut gateways = Vec::new();
    for _ in 0..GATEWAYS {
        let adaptive = if adaptive { "true" } else { "false" };
        gateways.push(
            common::start_gateway(
                &emulator,
                &[
                    "--rate-limit-rps",
                    CONFIGURED_RPS,
                    "--rate-limit-burst",
                    CONFIGURED_RPS,
                    "--rate-limit-adaptive",
                    adaptive,
                ],
            )
            .await,
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut drivers = Vec::new();
    for (_, addr) in &gateways {
        let client = JobWorkerServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        for _ in 0..IN_FLIGHT_PER_GATEWAY {
            let mut client = client.clone();
            let stop = stop.clone();
            let job_id = job.job_id.clone();
            drivers.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let mut request = tonic::Request::new(GetJobDetailsRequest {
                        target: String::new(),
                        job_id: job_id.clone(),
                    });
                    request.set_timeout(Duration::from_secs(2));
                    if let Err(status) = client.get_job_details(request).await {
                        // Workers back off as docs/clients.md says.
                        let pause = match status.code() {
                            Code::ResourceExhausted | Code::Unavailable => 50,
                            _ => 10,
                        };
                        tokio::time::sleep(Duration::from_millis(pause)).await;
                    }
                }
            }));
        }
    }

    let mode = if adaptive { "adaptive" } else { "fixed" };
    println!(
        "\n{mode}: {GATEWAYS} gateway processes at --rate-limit-rps {CONFIGURED_RPS}, quota {} /s",
        options.quota
    );
    println!("  second  accepted/s  throttled/s  (% of quota, % of attempts throttled)");
    let started = Instant::now();
    let mut previous = counts(&emulator);
    let mut timeline = Vec::new();
    for second in 1..=options.seconds {
        tokio::time::sleep_until(started + Duration::from_secs(second)).await;
        let now = counts(&emulator);
        let accepted = now.0 - previous.0;
        let throttled = now.1 - previous.1;
        previous = now;
        let attempts = (accepted + throttled).max(1);
        println!(
            "  {second:>6}  {accepted:>10}  {throttled:>11}  ({:>5.1} %, {:>5.1} %)",
            100.0 * accepted as f64 / options.quota,
            100.0 * throttled as f64 / attempts as f64
        );
        timeline.push((accepted, throttled));
    }
    stop.store(true, Ordering::Relaxed);
    for driver in drivers {
        let _ = driver.await;
    }
    drop(gateways);

    let window_ok = |w: &[(u64, u64)]| {
        let accepted: u64 = w.iter().map(|(a, _)| a).sum();
        let throttled: u64 = w.iter().map(|(_, t)| t).sum();
        let attempts = (accepted + throttled).max(1) as f64;
        accepted as f64 >= 0.9 * options.quota * w.len() as f64
            && throttled as f64 <= 0.05 * attempts
    };
    let windows: Vec<bool> = timeline.windows(2).map(window_ok).collect();
    let settled_after = (0..windows.len())
        .find(|&start| windows[start..].iter().all(|ok| *ok))
        .map(|start| start as u64 + 2);
    let after: Vec<_> = timeline.iter().skip(10).collect();
    let accepted: u64 = after.iter().map(|(a, _)| a).sum();
    let throttled: u64 = after.iter().map(|(_, t)| t).sum();
    Figures {
        settled_after,
        quota_used_after_10s: accepted as f64 / (options.quota * after.len().max(1) as f64),
        throttled_after_10s: throttled as f64 / (accepted + throttled).max(1) as f64,
    }
}

#[tokio::main]
async fn main() {
    let options = options();
    let adaptive = run(&options, true).await;
    let fixed = run(&options, false).await;
    println!(
        "\nsummary ({GATEWAYS} processes, quota {} /s, {} s)",
        options.quota, options.seconds
    );
    println!("  mode      settled after  quota used after 10 s  attempts throttled after 10 s");
    for (mode, f) in [("adaptive", &adaptive), ("fixed", &fixed)] {
        println!(
            "  {mode:<8}  {:>13}  {:>20.1} %  {:>28.1} %",
            f.settled_after
                .map_or("never".to_owned(), |s| format!("{s} s")),
            100.0 * f.quota_used_after_10s,
            100.0 * f.throttled_after_10s
        );
    }
    println!("  goal: settled within 10 s, >= 90 % of the quota, <= 5 % throttled");
}
