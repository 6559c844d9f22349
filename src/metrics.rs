//! Prometheus metrics, served on the admin port at `/metrics`.
//!
//! Every call records its final gRPC code, so expected outcomes (NOT_FOUND,
//! INVALID_ARGUMENT) can be told apart from the gateway's own failures.

use std::sync::atomic::AtomicU64;

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    method: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
}

fn latency_histogram() -> Histogram {
    // 5 ms .. ~41 s: from a fast AWS answer to a call that waited out retries.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.005, 2.0, 14,
    ))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    method: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

pub struct Metrics {
    registry: Registry,
    connections: Gauge,
    connections_closed: Family<ReasonLabels, Counter>,
    slow_requests: Counter,
    shed_calls: Family<MethodLabels, Counter>,
    replays: Family<MethodLabels, Counter>,
    rate_limits: Family<MethodLabels, Gauge<f64, AtomicU64>>,
    throttles: Family<MethodLabels, Counter>,
    calls: Family<CallLabels, Counter>,
    refusals: Family<RefusalLabels, Counter>,
    job_type_lookups: Family<MethodLabels, Counter>,
    latency: Family<MethodLabels, Histogram, fn() -> Histogram>,
    aws_attempts: Family<MethodLabels, Counter>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("cpgw");
        let calls = Family::<CallLabels, Counter>::default();
        let latency = Family::<MethodLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let aws_attempts = Family::<MethodLabels, Counter>::default();
        let refusals = Family::<RefusalLabels, Counter>::default();
        let job_type_lookups = Family::<MethodLabels, Counter>::default();
        registry.register(
            "auth_refusals",
            "Calls refused before reaching AWS: unauthenticated or not authorized, by method and reason",
            refusals.clone(),
        );
        registry.register(
            "job_type_lookups",
            "Job details read from AWS to learn a job's action type for authorization, by the method that needed it",
            job_type_lookups.clone(),
        );
        registry.register(
            "grpc_calls",
            "gRPC calls handled, by method and final gRPC status code",
            calls.clone(),
        );
        registry.register(
            "grpc_call_duration_seconds",
            "Time from a call's arrival to its answer",
            latency.clone(),
        );
        registry.register(
            "aws_attempts",
            "Requests sent to CodePipeline, retries included",
            aws_attempts.clone(),
        );
        let connections = Gauge::default();
        let connections_closed = Family::<ReasonLabels, Counter>::default();
        let slow_requests = Counter::default();
        let shed_calls = Family::<MethodLabels, Counter>::default();
        let replays = Family::<MethodLabels, Counter>::default();
        let rate_limits = Family::<MethodLabels, Gauge<f64, AtomicU64>>::default();
        let throttles = Family::<MethodLabels, Counter>::default();
        registry.register(
            "rate_limit_per_second",
            "The rate limit in force per operation: the configured rate, or less while CodePipeline throttles (adaptive)",
            rate_limits.clone(),
        );
        registry.register(
            "aws_throttles",
            "Attempts CodePipeline answered with throttling",
            throttles.clone(),
        );
        registry.register(
            "replays",
            "Acknowledgements and results answered from memory: the identical request was delivered before",
            replays.clone(),
        );
        registry.register(
            "connections",
            "Client connections open now",
            connections.clone(),
        );
        registry.register(
            "connections_closed",
            "Client connections closed, by reason: handshake_timeout, tls_failed, idle, max_age, shutdown, peer",
            connections_closed.clone(),
        );
        registry.register(
            "slow_requests",
            "Requests whose body did not arrive within --request-arrival-timeout of their headers",
            slow_requests.clone(),
        );
        registry.register(
            "shed_calls",
            "Calls refused at once because --max-calls-in-flight calls were already in flight",
            shed_calls.clone(),
        );
        Metrics {
            registry,
            connections,
            connections_closed,
            slow_requests,
            shed_calls,
            replays,
            rate_limits,
            throttles,
            calls,
            refusals,
            job_type_lookups,
            latency,
            aws_attempts,
        }
    }

    /// Records one finished call.
    pub fn record_call(
        &self,
        method: &'static str,
        code: tonic::Code,
        seconds: f64,
        aws_attempts: u32,
    ) {
        self.calls
            .get_or_create(&CallLabels {
                method,
                code: code_name(code),
            })
            .inc();
        let labels = MethodLabels { method };
        self.latency.get_or_create(&labels).observe(seconds);
        if aws_attempts > 0 {
            self.aws_attempts
                .get_or_create(&labels)
                .inc_by(u64::from(aws_attempts));
        }
    }

    /// Records a call refused by authentication or authorization.
    pub fn record_refusal(&self, method: &'static str, reason: &'static str) {
        self.refusals
            .get_or_create(&RefusalLabels { method, reason })
            .inc();
    }

    /// Records a job's action type read from AWS for authorization.
    pub fn record_job_type_lookup(&self, method: &'static str) {
        self.job_type_lookups
            .get_or_create(&MethodLabels { method })
            .inc();
    }

    /// Counts an open connection until the guard drops.
    pub fn connection_opened(&self) -> OpenConnection {
        self.connections.inc();
        OpenConnection(self.connections.clone())
    }

    pub fn record_connection_closed(&self, reason: &'static str) {
        self.connections_closed
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn record_slow_request(&self) {
        self.slow_requests.inc();
    }

    pub fn record_shed(&self, method: &'static str) {
        self.shed_calls
            .get_or_create(&MethodLabels { method })
            .inc();
    }

    pub fn set_rate_limit(&self, method: &'static str, per_second: f64) {
        self.rate_limits
            .get_or_create(&MethodLabels { method })
            .set(per_second);
    }

    pub fn record_throttle(&self, method: &'static str) {
        self.throttles.get_or_create(&MethodLabels { method }).inc();
    }

    pub fn record_replay(&self, method: &'static str) {
        self.replays.get_or_create(&MethodLabels { method }).inc();
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

/// One open connection in the `connections` gauge.
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// The canonical gRPC code names, as other gRPC tooling prints them.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}
