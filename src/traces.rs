//! OpenTelemetry traces: a server span for each job worker call, joined to the
//! worker's trace when its metadata carries W3C `traceparent`/`tracestate`,
//! and a client span for each attempt sent to AWS (operation, attempt number,
//! outcome, AWS request id, job id), exported over OTLP/gRPC.
//!
//! Configured only by the standard variables: on when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is
//! set (and neither `OTEL_SDK_DISABLED=true` nor `OTEL_TRACES_EXPORTER=none`);
//! the exporter and SDK read the rest (`OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`,
//! `OTEL_EXPORTER_OTLP_HEADERS`, timeouts). Spans are tracing spans on their
//! own target, seen only by the OpenTelemetry layer: the log lines do not
//! change, and with traces off a span costs one disabled-callsite check.
//!
//! Attributes are the gateway's own words (method names, codes, counts, job
//! ids, AWS request ids), never a request's values: no token, client token,
//! continuation token or output variable can reach a span.

use opentelemetry::{
    propagation::{Extractor, TextMapPropagator},
    trace::TracerProvider,
};
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The target of every span meant for OpenTelemetry (and only for it).
pub const TARGET: &str = "cpgw_trace";

/// Keeps the exporter running; dropping it sends what is still buffered.
pub struct Traces {
    provider: SdkTracerProvider,
}

impl Drop for Traces {
    fn drop(&mut self) {
        if let Err(error) = self.provider.shutdown() {
            eprintln!("OpenTelemetry: the last spans could not be exported: {error}");
        }
    }
}

fn variable(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The tracer the `OTEL_*` variables ask for, or `None` when they ask for none.
pub fn from_environment() -> Result<Option<(opentelemetry_sdk::trace::SdkTracer, Traces)>, String> {
    let disabled = variable("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let no_exporter = variable("OTEL_TRACES_EXPORTER").is_some_and(|v| v == "none");
    let endpoint = variable("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .or_else(|| variable("OTEL_EXPORTER_OTLP_ENDPOINT"));
    if disabled || no_exporter || endpoint.is_none() {
        return Ok(None);
    }
    if let Some(exporter) = variable("OTEL_TRACES_EXPORTER")
        && exporter != "otlp"
    {
        return Err(format!(
            "OTEL_TRACES_EXPORTER={exporter}: only otlp (or none) is supported"
        ));
    }
    for name in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Some(protocol) = variable(name)
            && protocol != "grpc"
        {
            return Err(format!(
                "{name}={protocol}: only grpc is supported (OTLP over gRPC, port 4317)"
            ));
        }
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .map_err(|e| format!("OpenTelemetry: cannot set up the OTLP exporter: {e}"))?;
    let mut resource = Resource::builder();
    if variable("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("codepipeline-gateway");
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    let tracer = provider.tracer("codepipeline-gateway");
    Ok(Some((tracer, Traces { provider })))
}

/// Reads W3C trace context from gRPC metadata.
struct Metadata<'a>(&'a tonic::metadata::MetadataMap);

impl Extractor for Metadata<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|key| match key {
                tonic::metadata::KeyRef::Ascii(key) => Some(key.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// The server span of one call, a child of the caller's span when its
/// metadata carries one.
pub fn server_span(
    service: &'static str,
    method: &'static str,
    metadata: &tonic::metadata::MetadataMap,
) -> tracing::Span {
    let span = tracing::info_span!(
        target: TARGET,
        "rpc",
        otel.name = method,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty,
        job_id = tracing::field::Empty,
        // The gateway target (AWS account and region) the call went to.
        cpgw.target = tracing::field::Empty,
    );
    if !span.is_disabled() && metadata.contains_key("traceparent") {
        let parent = TraceContextPropagator::new().extract(&Metadata(metadata));
        // A malformed traceparent gives an empty context: the span is a root.
        let _ = span.set_parent(parent);
    }
    span
}

/// The client span of one attempt at a CodePipeline operation.
pub fn attempt_span(operation: &'static str, attempt: u32) -> tracing::Span {
    tracing::info_span!(
        target: TARGET,
        "aws",
        otel.name = operation,
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        rpc.system = "aws-api",
        rpc.service = "CodePipeline",
        rpc.method = operation,
        aws.attempt = attempt,
        aws.outcome = tracing::field::Empty,
        aws.request_id = tracing::field::Empty,
    )
}
