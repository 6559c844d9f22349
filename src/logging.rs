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

use tracing::Level;
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::{
    EnvFilter,
    filter::{Directive, Targets},
    fmt,
    prelude::*,
};

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
    // STS answers carry the credentials of every target's role.
    "aws_sdk_sts",
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

/// What must live as long as the process: the log writer and, when the
/// `OTEL_*` variables ask for traces, their exporter. Dropping it writes out
/// what is queued and exports the last spans.
pub struct Guards {
    _log_writer: WorkerGuard,
    _traces: Option<crate::traces::Traces>,
}

/// Installs the global subscriber: logs to stderr, and OpenTelemetry spans
/// when configured. Each has its own filter: log lines never show the trace
/// spans, and the trace layer sees nothing else.
pub fn init(format: LogFormat) -> Result<Guards, String> {
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("log-writer")
        .finish(BufWriter::new(std::io::stderr()));
    let log_filter = filter().add_directive(
        format!("{}=off", crate::traces::TARGET)
            .parse()
            .expect("valid directive"),
    );
    let logs = match format {
        LogFormat::Text => fmt::layer()
            .with_writer(writer)
            .with_target(false)
            .with_ansi(colour_wanted())
            .with_filter(log_filter)
            .boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(writer)
            .with_filter(log_filter)
            .boxed(),
    };
    // A list, not an Option: an absent Option layer would enable every
    // callsite, and each call would then build a span nobody reads.
    let mut layers = vec![logs];
    let traces = match crate::traces::from_environment()? {
        Some((tracer, traces)) => {
            let only_trace_spans = Targets::new().with_target(crate::traces::TARGET, Level::INFO);
            layers.push(
                tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    .with_filter(only_trace_spans)
                    .boxed(),
            );
            Some(traces)
        }
        None => None,
    };
    tracing_subscriber::registry().with(layers).init();
    Ok(Guards {
        _log_writer: guard,
        _traces: traces,
    })
}
