use std::process::ExitCode;

use codepipeline_gateway::cli::Cli;

/// jemalloc hands freed pages back to the system (its background thread purges
/// them after 10 s); glibc's malloc kept the 50 MiB of a 2,000-connection storm
/// for good, fragmented across its arenas (benches/storm.rs). Measured against
/// both on the gateway's own load (benches/gateway.rs, same run): glibc spent
/// 26 % more CPU per small report and 16 % more per large one, and kept 3.3x
/// its idle RSS after 2,000 idle connections closed (jemalloc: 1.2x);
/// mimalloc kept 3.7x and started at 28 MiB.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    // Purge freed memory in the background, not only when allocating again.
    let _ = tikv_jemalloc_ctl::background_thread::write(true);
    Cli::parse_naming_variables(std::env::args_os().collect())
        .run()
        .await
}
