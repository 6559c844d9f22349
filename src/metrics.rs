//! Prometheus metrics, served on the admin port at `/metrics`.
//!
//! Calls are counted under the names grpc-ecosystem's Go middleware gave them
//! (`grpc_server_handled_total`, `grpc_server_handling_seconds`), because the
//! dashboards and alerts platform teams already run query those names; the
//! OpenTelemetry RPC conventions are still moving and export under different
//! names per SDK version. What only this gateway has (AWS attempts, its rate
//! limit, retries, refusals) is under `cpgw_`. No label holds a job id or any
//! caller-chosen text, so cardinality is bounded by the code.

use std::{sync::atomic::AtomicU64, time::Duration};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram, info::Info},
    registry::Registry,
};

use crate::{
    access::Refusal,
    call::ErrorKind,
    connections::Closed,
    operation::OperationId,
    proto::JOB_WORKER_SERVICE_NAME,
    rpc_metrics::{self, RpcMethod},
};

/// The labels grpc-ecosystem's middleware puts on a call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    grpc_type: &'static str,
    grpc_service: &'static str,
    grpc_method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandledLabels {
    grpc_type: &'static str,
    grpc_service: &'static str,
    grpc_method: &'static str,
    grpc_code: &'static str,
}

impl RpcLabels {
    fn of(method: RpcMethod) -> Self {
        RpcLabels {
            grpc_type: method.kind,
            grpc_service: method.service,
            grpc_method: method.method,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    method: &'static str,
    outcome: &'static str,
    target: &'static str,
}

/// 5 ms .. ~41 s: from a fast AWS answer to a call that waited out retries.
fn latency_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.005, 2.0, 14,
    ))
}

/// 1 ms .. ~33 s: a token due at once to one that waits out a long deadline.
fn wait_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 16,
    ))
}

/// A per-target series: each target has its own rate limit.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetMethodLabels {
    method: &'static str,
    target: &'static str,
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FeedLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FeedOutcomeLabels {
    kind: &'static str,
    outcome: &'static str,
}

/// Every `kind` label of a subscription: custom or partner jobs.
pub const FEED_KINDS: &[&str] = &["custom", "partner"];

/// Every `outcome` of a subscription's poll.
pub const FEED_POLL_OUTCOMES: &[&str] = &["jobs", "empty", "error"];

/// Every `outcome` of a job a subscription's poll returned.
pub const FEED_JOB_OUTCOMES: &[&str] = &[
    "delivered",
    "returned",
    "no_subscriber",
    "held_by_subscriber",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    started: Family<RpcLabels, Counter>,
    handled: Family<HandledLabels, Counter>,
    handling_seconds: HistogramFamily<RpcLabels>,
    calls_in_flight: Gauge,
    connections: Gauge,
    connections_closed: Family<ReasonLabels, Counter>,
    slow_requests: Counter,
    shed_calls: Family<MethodLabels, Counter>,
    replays: Family<MethodLabels, Counter>,
    rate_limits: Family<TargetMethodLabels, Gauge<f64, AtomicU64>>,
    rate_limit_waits: HistogramFamily<MethodLabels>,
    rate_limit_refusals: Family<MethodLabels, Counter>,
    retry_budget_exhausted: Family<MethodLabels, Counter>,
    refusals: Family<RefusalLabels, Counter>,
    job_type_lookups: Family<MethodLabels, Counter>,
    aws_attempts: Family<AttemptLabels, Counter>,
    subscriptions: Family<FeedLabels, Gauge>,
    feed_polls: Family<FeedOutcomeLabels, Counter>,
    feed_jobs: Family<FeedOutcomeLabels, Counter>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let started = Family::<RpcLabels, Counter>::default();
        let handled = Family::<HandledLabels, Counter>::default();
        let handling_seconds =
            HistogramFamily::<RpcLabels>::new_with_constructor(latency_histogram as fn() -> _);
        registry.register(
            "grpc_server_started",
            "RPCs started on the server, health and reflection included",
            started.clone(),
        );
        registry.register(
            "grpc_server_handled",
            "RPCs completed on the server, by final gRPC status code",
            handled.clone(),
        );
        registry.register(
            "grpc_server_handling_seconds",
            "Time from an RPC's headers to its final status",
            handling_seconds.clone(),
        );
        crate::process_metrics::register(&mut registry);

        let ours = registry.sub_registry_with_prefix("cpgw");
        ours.register(
            // Encoded as `cpgw_build_info`: OpenMetrics adds the suffix.
            "build",
            "The gateway's version; always 1",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        let calls_in_flight = Gauge::default();
        ours.register(
            "calls_in_flight",
            "Job worker calls admitted and not yet answered (bounded by --max-calls-in-flight)",
            calls_in_flight.clone(),
        );
        let refusals = Family::<RefusalLabels, Counter>::default();
        ours.register(
            "auth_refusals",
            "Calls refused before reaching AWS: unauthenticated or not authorized, by method and reason",
            refusals.clone(),
        );
        let job_type_lookups = Family::<MethodLabels, Counter>::default();
        ours.register(
            "job_type_lookups",
            "Job details read from AWS to learn a job's action type for authorization, by the method that needed it",
            job_type_lookups.clone(),
        );
        let aws_attempts = Family::<AttemptLabels, Counter>::default();
        ours.register(
            "aws_attempts",
            "Requests sent to CodePipeline, retries included, by outcome: ok, client_error, \
             throttled, server_error, transport_error, timeout, misconfigured, no_credentials \
             (nothing was sent), unexpected; by target (the AWS account and region)",
            aws_attempts.clone(),
        );
        let rate_limits = Family::<TargetMethodLabels, Gauge<f64, AtomicU64>>::default();
        ours.register(
            "rate_limit_per_second",
            "The rate limit in force per operation: the configured rate, or less while CodePipeline throttles (adaptive)",
            rate_limits.clone(),
        );
        let rate_limit_waits =
            HistogramFamily::<MethodLabels>::new_with_constructor(wait_histogram as fn() -> _);
        ours.register(
            "rate_limit_wait_seconds",
            "How long attempts waited for the rate limit's token (0 when one was free)",
            rate_limit_waits.clone(),
        );
        let rate_limit_refusals = Family::<MethodLabels, Counter>::default();
        ours.register(
            "rate_limit_refusals",
            "Attempts the rate limit refused: no token before the call's deadline, or too many waiting",
            rate_limit_refusals.clone(),
        );
        let retry_budget_exhausted = Family::<MethodLabels, Counter>::default();
        ours.register(
            "retry_budget_exhausted",
            "Retries not made because the process-wide retry budget was spent",
            retry_budget_exhausted.clone(),
        );
        let replays = Family::<MethodLabels, Counter>::default();
        ours.register(
            "replays",
            "Acknowledgements and results answered from memory: the identical request was delivered before",
            replays.clone(),
        );
        let connections = Gauge::default();
        ours.register(
            "connections",
            "Client connections open now",
            connections.clone(),
        );
        let connections_closed = Family::<ReasonLabels, Counter>::default();
        ours.register(
            "connections_closed",
            "Client connections closed, by reason: handshake_timeout, tls_failed, idle, max_age, shutdown, peer",
            connections_closed.clone(),
        );
        let slow_requests = Counter::default();
        ours.register(
            "slow_requests",
            "Requests whose body did not arrive within --request-arrival-timeout of their headers",
            slow_requests.clone(),
        );
        let shed_calls = Family::<MethodLabels, Counter>::default();
        ours.register(
            "shed_calls",
            "Calls refused at once because --max-calls-in-flight calls were already in flight",
            shed_calls.clone(),
        );
        let subscriptions = Family::<FeedLabels, Gauge>::default();
        ours.register(
            "subscriptions",
            "Job subscriptions open now (bounded by --max-subscriptions), by kind: custom, partner",
            subscriptions.clone(),
        );
        let feed_polls = Family::<FeedOutcomeLabels, Counter>::default();
        ours.register(
            "subscription_polls",
            "Polls the gateway made for its subscribers, by kind and outcome: jobs, empty, error",
            feed_polls.clone(),
        );
        let feed_jobs = Family::<FeedOutcomeLabels, Counter>::default();
        ours.register(
            "subscription_jobs",
            "Jobs the subscriptions' polls returned, by kind and outcome: delivered (handed to a \
             subscriber's stream); returned (taken back from a subscriber that left before they \
             were sent, for the next one); no_subscriber (none took it within 5s: never \
             acknowledged, so CodePipeline offers it again); held_by_subscriber (offered again \
             while the subscriber it went to is still connected, so not delivered twice)",
            feed_jobs.clone(),
        );
        let metrics = Metrics {
            registry,
            subscriptions,
            feed_polls,
            feed_jobs,
            started,
            handled,
            handling_seconds,
            calls_in_flight,
            connections,
            connections_closed,
            slow_requests,
            shed_calls,
            replays,
            rate_limits,
            rate_limit_waits,
            rate_limit_refusals,
            retry_budget_exhausted,
            refusals,
            job_type_lookups,
            aws_attempts,
        };
        metrics.start_known_series_at_zero();
        metrics.add_target(crate::targets::DEFAULT_TARGET);
        metrics
    }

    /// Creates every series whose labels are known in advance, at zero, as
    /// Prometheus advises: `rate()` and `increase()` then see a series' first
    /// event, and an alert's ratio reads 0 rather than "no data".
    /// (`get_or_create` makes the series; its guard is dropped at once.)
    fn start_known_series_at_zero(&self) {
        for method in rpc_metrics::methods_of(JOB_WORKER_SERVICE_NAME) {
            let labels = RpcLabels::of(method);
            drop(self.started.get_or_create(&labels));
            drop(self.handling_seconds.get_or_create(&labels));
            for code in (0..=16).map(tonic::Code::from_i32) {
                drop(self.handled.get_or_create(&HandledLabels {
                    grpc_type: method.kind,
                    grpc_service: method.service,
                    grpc_method: method.method,
                    grpc_code: go_code_name(code),
                }));
            }
        }
        for operation in OperationId::ALL {
            let method = operation.name();
            let labels = MethodLabels { method };
            for reason in Refusal::LABELS {
                drop(
                    self.refusals
                        .get_or_create(&RefusalLabels { method, reason }),
                );
            }
            drop(self.rate_limit_waits.get_or_create(&labels));
            drop(self.rate_limit_refusals.get_or_create(&labels));
            drop(self.retry_budget_exhausted.get_or_create(&labels));
            drop(self.shed_calls.get_or_create(&labels));
            drop(self.replays.get_or_create(&labels));
            drop(self.job_type_lookups.get_or_create(&labels));
        }
        for &kind in FEED_KINDS {
            drop(self.subscriptions.get_or_create(&FeedLabels { kind }));
            for &outcome in FEED_POLL_OUTCOMES {
                drop(
                    self.feed_polls
                        .get_or_create(&FeedOutcomeLabels { kind, outcome }),
                );
            }
            for &outcome in FEED_JOB_OUTCOMES {
                drop(
                    self.feed_jobs
                        .get_or_create(&FeedOutcomeLabels { kind, outcome }),
                );
            }
        }
        for closed in Closed::ALL {
            drop(self.connections_closed.get_or_create(&ReasonLabels {
                reason: closed.label(),
            }));
        }
    }

    /// Records an RPC's headers arriving.
    pub fn record_started(&self, method: RpcMethod) {
        self.started.get_or_create(&RpcLabels::of(method)).inc();
    }

    /// Records an RPC's final status.
    pub fn record_handled(&self, method: RpcMethod, code: tonic::Code, elapsed: Duration) {
        self.handled
            .get_or_create(&HandledLabels {
                grpc_type: method.kind,
                grpc_service: method.service,
                grpc_method: method.method,
                grpc_code: go_code_name(code),
            })
            .inc();
        self.handling_seconds
            .get_or_create(&RpcLabels::of(method))
            .observe(elapsed.as_secs_f64());
    }

    /// Counts a job worker call in flight until the guard drops.
    pub fn call_admitted(&self) -> InFlight {
        self.calls_in_flight.inc();
        InFlight(self.calls_in_flight.clone())
    }

    /// Records one attempt that was sent to AWS, by how it ended.
    pub fn record_attempt(
        &self,
        target: &'static str,
        method: &'static str,
        error: Option<ErrorKind>,
    ) {
        self.aws_attempts
            .get_or_create(&AttemptLabels {
                method,
                outcome: attempt_outcome(error),
                target,
            })
            .inc();
    }

    /// Starts a target's attempt series at zero, so that rates and alerts
    /// see it before its first call.
    pub fn add_target(&self, target: &'static str) {
        for operation in OperationId::ALL {
            for outcome in ATTEMPT_OUTCOMES {
                drop(self.aws_attempts.get_or_create(&AttemptLabels {
                    method: operation.name(),
                    outcome,
                    target,
                }));
            }
        }
    }

    /// Records how long an attempt waited for its rate-limit token.
    pub fn record_rate_limit_wait(&self, method: &'static str, waited: Duration) {
        self.rate_limit_waits
            .get_or_create(&MethodLabels { method })
            .observe(waited.as_secs_f64());
    }

    pub fn record_rate_limit_refusal(&self, method: &'static str) {
        self.rate_limit_refusals
            .get_or_create(&MethodLabels { method })
            .inc();
    }

    pub fn record_retry_budget_exhausted(&self, method: &'static str) {
        self.retry_budget_exhausted
            .get_or_create(&MethodLabels { method })
            .inc();
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

    pub fn set_rate_limit(&self, target: &'static str, method: &'static str, per_second: f64) {
        self.rate_limits
            .get_or_create(&TargetMethodLabels { method, target })
            .set(per_second);
    }

    /// Counts an open subscription until the guard drops.
    pub fn subscription_opened(&self, kind: &'static str) -> OpenSubscription {
        let gauge = self
            .subscriptions
            .get_or_create(&FeedLabels { kind })
            .clone();
        gauge.inc();
        OpenSubscription(gauge)
    }

    /// Records one poll made for subscribers; `outcome` is one of [`FEED_POLL_OUTCOMES`].
    pub fn record_feed_poll(&self, kind: &'static str, outcome: &'static str) {
        self.feed_polls
            .get_or_create(&FeedOutcomeLabels { kind, outcome })
            .inc();
    }

    /// Records what became of polled jobs; `outcome` is one of [`FEED_JOB_OUTCOMES`].
    pub fn record_feed_jobs(&self, kind: &'static str, outcome: &'static str, jobs: u64) {
        self.feed_jobs
            .get_or_create(&FeedOutcomeLabels { kind, outcome })
            .inc_by(jobs);
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

/// Every `outcome` label of an attempt.
const ATTEMPT_OUTCOMES: &[&str] = &[
    "ok",
    "client_error",
    "throttled",
    "server_error",
    "transport_error",
    "timeout",
    "misconfigured",
    "no_credentials",
    "unexpected",
];

/// The `outcome` label of an attempt that reached AWS (or was cut off on its
/// way): few values, so alerts can tell "our callers' mistakes" from "AWS is
/// throttling" from "the gateway's identity is refused".
pub fn attempt_outcome(error: Option<ErrorKind>) -> &'static str {
    use ErrorKind::*;
    match error {
        None => "ok",
        Some(Throttled) => "throttled",
        Some(ServerError) => "server_error",
        Some(Transport) => "transport_error",
        Some(AttemptTimedOut | DeadlineExceeded) => "timeout",
        Some(Misconfigured) => "misconfigured",
        Some(NoCredentials) => "no_credentials",
        Some(
            Validation
            | OutputVariablesSizeExceeded
            | JobNotFound
            | InvalidJobState
            | InvalidClientToken
            | ActionTypeNotFound
            | InvalidNonce
            | InvalidJob,
        ) => "client_error",
        Some(Unexpected | RateLimited | Overloaded | ShuttingDown) => "unexpected",
    }
}

/// One admitted call in the `calls_in_flight` gauge.
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// One open connection in the `connections` gauge.
pub struct OpenConnection(Gauge);

/// An open subscription, counted until dropped.
pub struct OpenSubscription(Gauge);

impl Drop for OpenSubscription {
    fn drop(&mut self) {
        self.0.dec();
    }
}

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

/// The code names grpc-go prints (`Canceled`, `InvalidArgument`, …): the
/// `grpc_code` values that grpc-ecosystem's dashboards and alerts match.
pub fn go_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_label_a_call_can_produce_is_started_at_zero() {
        for kind in ErrorKind::ALL {
            assert!(ATTEMPT_OUTCOMES.contains(&attempt_outcome(Some(*kind))));
        }
        use crate::auth::Unauthenticated::*;
        let refusals = [Missing, Malformed, Expired, Untrusted("x"), KeysUnavailable]
            .map(Refusal::Unauthenticated)
            .into_iter()
            .chain([Refusal::NotAuthorized {
                action_type: String::new(),
            }]);
        for refusal in refusals {
            assert!(Refusal::LABELS.contains(&refusal.label()));
        }
        let text = Metrics::new().encode();
        for line in [
            r#"cpgw_aws_attempts_total{method="PutJobFailureResult",outcome="misconfigured",target="default"} 0"#,
            r#"grpc_server_handled_total{grpc_type="unary",grpc_service="codepipeline_gateway.v1.JobWorkerService",grpc_method="PollForJobs",grpc_code="Unavailable"} 0"#,
            r#"cpgw_auth_refusals_total{method="AcknowledgeJob",reason="not_authorized"} 0"#,
            r#"cpgw_connections_closed_total{reason="handshake_timeout"} 0"#,
            r#"cpgw_retry_budget_exhausted_total{method="GetJobDetails"} 0"#,
        ] {
            assert!(text.contains(line), "no {line} in\n{text}");
        }
        // Bounded: the whole scrape of a fresh gateway stays small.
        assert!(text.len() < 200_000, "{} bytes", text.len());
    }
}
