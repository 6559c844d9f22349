//! What the process benchmarks share: the release gateway started as its own
//! process against an in-process emulator, and its resident memory.
#![allow(dead_code)] // each benchmark uses its own subset

use std::{process::Stdio, time::Duration};

use codepipeline_emulator::{DEV_ACCESS_KEY_ID, DEV_REGION, DEV_SECRET_ACCESS_KEY, Emulator};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

/// Starts `codepipeline-gateway serve` on loopback ports against `emulator`,
/// open to every caller, with `flags`, then any flags given after `--gateway`
/// on the benchmark's own command line. Returns the child and its gRPC
/// address once it listens. Logs only start-up and errors.
pub async fn start_gateway(emulator: &Emulator, flags: &[&str]) -> (Child, String) {
    start_gateway_for(
        &emulator.endpoint_url(),
        flags,
        "error,codepipeline_gateway::server=info",
    )
    .await
}

/// [`start_gateway`] against any CodePipeline endpoint, logging at `rust_log`.
pub async fn start_gateway_for(
    endpoint_url: &str,
    flags: &[&str],
    rust_log: &str,
) -> (Child, String) {
    start_gateway_binary(&gateway_binary(), endpoint_url, flags, rust_log).await
}

/// [`start_gateway_for`] with the gateway from another build.
pub async fn start_gateway_binary(
    binary: &str,
    endpoint_url: &str,
    flags: &[&str],
    rust_log: &str,
) -> (Child, String) {
    let extra: Vec<String> = std::env::args()
        .skip_while(|a| a != "--gateway")
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let mut child = Command::new(binary)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--allow-unauthenticated",
        ])
        .args(flags)
        .args(extra)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", rust_log)
        .env("AWS_ENDPOINT_URL", endpoint_url)
        .env("AWS_REGION", DEV_REGION)
        .env("AWS_ACCESS_KEY_ID", DEV_ACCESS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", DEV_SECRET_ACCESS_KEY)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(
            std::env::vars()
                .filter(|(k, _)| k.starts_with("MALLOC_") || k.starts_with("TOKIO_WORKER")),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the gateway binary runs");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(json) = serde_json::from_str::<serde_json::Value>(&line)
                && let Some(addr) = json["grpc_addr"].as_str()
            {
                return addr.to_owned();
            }
        }
        panic!("the gateway exited before listening")
    })
    .await
    .expect("the gateway starts");
    // Keep draining its log so that it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}

/// The gateway binary the benchmarks run: this build's, or another build's
/// named by `CPGW_BENCH_BINARY` (to measure a change against the binary from
/// before it, with the same benchmark).
pub fn gateway_binary() -> String {
    std::env::var("CPGW_BENCH_BINARY")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_codepipeline-gateway").to_owned())
}

/// A process's resident memory, from /proc.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

/// CPU time (user + system) a process has used, from /proc/PID/stat
/// (`"self"` for this one).
pub fn cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // Clock ticks of 1/100 s on Linux.
    Duration::from_millis((field(11) + field(12)) * 10)
}

/// The value after `flag` on the benchmark's command line, parsed.
pub fn flag_value<T: std::str::FromStr>(flag: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    match args
        .iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
    {
        Some(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{flag}: cannot parse {value:?}")),
        None => default,
    }
}

/// The `p` quantile of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}
