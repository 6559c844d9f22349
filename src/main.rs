use std::process::ExitCode;

use clap::Parser;
use codepipeline_gateway::cli::Cli;

#[tokio::main]
async fn main() -> ExitCode {
    Cli::parse().run().await
}
