//! The gRPC adapter: `JobWorkerService` validates each request, sends it
//! through the forwarding stack, and turns the outcome into a response or a
//! status. It is the only code that knows both tonic and the domain types,
//! and it is generic over the [`Operation`]: each RPC is one line.

use std::{sync::Arc, time::Duration};

use tokio::time::Instant;
use tonic::{Code, Request, Response, Status};

use crate::{
    call::{Call, CallError, CallSuccess},
    client_tokens::ClientTokens,
    deadline::deadline_for,
    error::{call_error_status, invalid_request_status},
    forwarding::ForwardingStack,
    metrics::{Metrics, code_name},
    operation::{Operation, Resolve},
    operations as op,
    proto::v1::job_worker_service_server::JobWorkerService,
    retry::{RetrySettings, suggested_retry_delay},
};

pub struct JobWorker {
    stack: ForwardingStack,
    metrics: Arc<Metrics>,
    default_deadline: Duration,
    retry: RetrySettings,
    client_tokens: Option<Arc<ClientTokens>>,
}

impl JobWorker {
    pub fn new(
        stack: ForwardingStack,
        metrics: Arc<Metrics>,
        default_deadline: Duration,
        retry: RetrySettings,
        client_tokens: Option<Arc<ClientTokens>>,
    ) -> Self {
        JobWorker {
            stack,
            metrics,
            default_deadline,
            retry,
            client_tokens,
        }
    }

    /// One call of any operation: validate, fill in what the gateway knows,
    /// forward, learn from the answer, log one line and record metrics.
    async fn handle<O: Operation>(
        &self,
        request: Request<O::Request>,
    ) -> Result<Response<O::Response>, Status> {
        let arrived = Instant::now();
        let deadline = deadline_for(
            grpc_timeout(&request).as_deref(),
            self.default_deadline,
            arrived,
        );
        let mut job_id = None;
        let outcome = match O::validate(request.into_inner()) {
            Err(invalid) => Err((invalid_request_status(&invalid), None)),
            Ok(checked) => {
                job_id = O::subject(&checked).job_id.map(str::to_owned);
                match checked.resolve(self.client_tokens.as_deref()) {
                    Err(invalid) => Err((invalid_request_status(&invalid), None)),
                    Ok(valid) => self.forward::<O>(Call::new(valid, deadline)).await,
                }
            }
        };
        self.finished(O::ID.name(), job_id.as_deref(), arrived, &outcome);
        let success = outcome.map_err(|(status, _)| status)?;
        if let Some(map) = &self.client_tokens {
            for job in O::polled(&success.output) {
                if let Some(client_id) = job.client_id {
                    map.remember(job.job_id, client_id);
                }
            }
        }
        let aws_request_id = success.aws_request_id.unwrap_or_default();
        Ok(Response::new(O::respond(success.output, aws_request_id)))
    }

    async fn forward<O: Operation>(
        &self,
        call: Call<O>,
    ) -> Result<CallSuccess<O::Output>, (Status, Option<CallError>)> {
        let deadline = call.deadline;
        // The stack honours the deadline itself; this is the backstop.
        let result = tokio::time::timeout_at(deadline, self.stack.forward(call))
            .await
            .unwrap_or_else(|_| {
                let mut error = CallError::deadline_exceeded(0);
                error.outcome_unknown = true;
                Err(error)
            });
        result.map_err(|error| {
            let status = call_error_status(&error, suggested_retry_delay(&error, &self.retry));
            (status, Some(error))
        })
    }

    /// The call's one log line and its metrics.
    fn finished<T>(
        &self,
        method: &'static str,
        job_id: Option<&str>,
        arrived: Instant,
        outcome: &Result<CallSuccess<T>, (Status, Option<CallError>)>,
    ) {
        let latency = arrived.elapsed();
        let latency_ms = latency.as_millis() as u64;
        let job_id = job_id.unwrap_or("");
        match outcome {
            Ok(success) => {
                tracing::info!(
                    method,
                    code = "OK",
                    job_id,
                    attempts = success.attempts,
                    latency_ms,
                    aws_request_id = success.aws_request_id.as_deref().unwrap_or(""),
                    "call finished"
                );
                self.metrics
                    .record_call(method, Code::Ok, latency.as_secs_f64(), success.attempts);
            }
            Err((status, error)) => {
                let attempts = error.as_ref().map_or(0, |e| e.attempts);
                let aws = error.as_ref().and_then(|e| e.aws.as_ref());
                let code = code_name(status.code());
                let aws_error_code = aws.and_then(|a| a.code.as_deref()).unwrap_or("");
                let aws_request_id = aws.and_then(|a| a.request_id.as_deref()).unwrap_or("");
                // The same fields at the level the outcome deserves.
                macro_rules! line {
                    ($level:ident $(, $cause:expr)?) => {
                        tracing::$level!(
                            method, code, job_id, attempts, latency_ms, aws_error_code,
                            aws_request_id, $(cause = %$cause,)? "call finished"
                        )
                    };
                }
                match status.code() {
                    // The operator must act: the cause goes to the log, which
                    // only ever holds AWS's own words, never request values.
                    Code::Internal => line!(
                        error,
                        error.as_ref().map(ToString::to_string).unwrap_or_default()
                    ),
                    Code::Unavailable | Code::ResourceExhausted | Code::DeadlineExceeded => {
                        line!(warn)
                    }
                    _ => line!(info),
                }
                self.metrics
                    .record_call(method, status.code(), latency.as_secs_f64(), attempts);
            }
        }
    }
}

fn grpc_timeout<T>(request: &Request<T>) -> Option<String> {
    request
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Each RPC is its operation, handled generically.
macro_rules! rpcs {
    ($($method:ident: $operation:ident),+ $(,)?) => {
        #[tonic::async_trait]
        impl JobWorkerService for JobWorker {
            $(
                async fn $method(
                    &self,
                    request: Request<<op::$operation as Operation>::Request>,
                ) -> Result<Response<<op::$operation as Operation>::Response>, Status> {
                    self.handle::<op::$operation>(request).await
                }
            )+
        }
    };
}

rpcs!(
    poll_for_jobs: PollForJobs,
    acknowledge_job: AcknowledgeJob,
    get_job_details: GetJobDetails,
    put_job_success_result: PutJobSuccessResult,
    put_job_failure_result: PutJobFailureResult,
    poll_for_third_party_jobs: PollForThirdPartyJobs,
    acknowledge_third_party_job: AcknowledgeThirdPartyJob,
    get_third_party_job_details: GetThirdPartyJobDetails,
    put_third_party_job_success_result: PutThirdPartyJobSuccessResult,
    put_third_party_job_failure_result: PutThirdPartyJobFailureResult,
);
