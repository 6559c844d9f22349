//! Log setup. `RUST_LOG` picks levels (default `info`), but the crates that
//! can print raw requests at debug/trace level (the AWS SDK's HTTP and signing
//! layers, hyper, h2) are held at `warn` whatever it says: their traces can
//! hold request bodies (client tokens, output variable values) and signatures.
//!
//! Lines are written by a thread of their own: a call never waits on a
//! write to stderr (a slow pipe or terminal), and lines written while that
//! thread is busy go out in one write. The queue is not lossy: an access or
//! audit line is never dropped; when it is full, callers wait.

use std::io::{BufWriter, IsTerminal};

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::{EnvFilter, filter::Directive, fmt, prelude::*};

use crate::cli::LogFormat;

const CAPPED_TARGETS: &[&str] = &[
    "aws_smithy_runtime",
    "aws_smithy_runtime_api",
    "aws_smithy_http",
    "aws_smithy_http_client",
    "aws_smithy_types",
    "aws_sigv4",
    "aws_runtime",
    "aws_sdk_codepipeline",
    "aws_config",
    "hyper",
    "hyper_util",
    "h2",
    "tonic",
    "tower",
];

fn filter() -> EnvFilter {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    for target in CAPPED_TARGETS {
        let directive: Directive = format!("{target}=warn").parse().expect("valid directive");
        filter = filter.add_directive(directive);
    }
    filter
}

/// Colour codes only for a person at a terminal: a pipe, a file or a log
/// collector gets plain text. `NO_COLOR` (no-color.org) turns them off too.
fn colour_wanted() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Lines queued for the writer thread before callers wait.
const QUEUED_LINES: usize = 16_384;

/// Installs the global subscriber; logs go to stderr. Keep the guard until
/// the process ends: dropping it writes out what is queued.
#[must_use = "dropping the guard stops the log writer"]
pub fn init(format: LogFormat) -> WorkerGuard {
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("log-writer")
        .finish(BufWriter::new(std::io::stderr()));
    let registry = tracing_subscriber::registry().with(filter());
    match format {
        LogFormat::Text => registry
            .with(
                fmt::layer()
                    .with_writer(writer)
                    .with_target(false)
                    .with_ansi(colour_wanted()),
            )
            .init(),
        LogFormat::Json => registry
            .with(fmt::layer().json().flatten_event(true).with_writer(writer))
            .init(),
    }
    guard
}
