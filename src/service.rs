//! The gRPC adapter: `JobWorkerService` validates each request, sends it
//! through the forwarding stack, and turns the outcome into a response or a
//! status. It is the only code that knows both tonic and the domain types.

use std::{sync::Arc, time::Duration};

use tokio::time::Instant;
use tonic::{Code, Request, Response, Status};
use tower::{ServiceExt, util::BoxCloneSyncService};

use crate::{
    call::{AwsRequest, Call, CallError, CallSuccess, Operation},
    deadline::deadline_for,
    error::{call_error_status, invalid_request_status},
    metrics::{Metrics, code_name},
    proto::v1::{
        PutJobSuccessResultRequest, PutJobSuccessResultResponse,
        PutThirdPartyJobSuccessResultRequest, PutThirdPartyJobSuccessResultResponse,
        job_worker_service_server::JobWorkerService,
    },
    retry::{RetrySettings, suggested_retry_delay},
    validation::{self, InvalidRequest},
};

/// rate limit → retry → AWS, type-erased so the adapter does not spell it out.
pub type ForwardingStack = BoxCloneSyncService<Call, CallSuccess, CallError>;

pub struct JobWorker {
    stack: ForwardingStack,
    metrics: Arc<Metrics>,
    default_deadline: Duration,
    retry: RetrySettings,
}

impl JobWorker {
    pub fn new(
        stack: ForwardingStack,
        metrics: Arc<Metrics>,
        default_deadline: Duration,
        retry: RetrySettings,
    ) -> Self {
        JobWorker {
            stack,
            metrics,
            default_deadline,
            retry,
        }
    }

    /// Validates, forwards, logs one line and records metrics for one call.
    async fn handle(
        &self,
        operation: Operation,
        grpc_timeout: Option<String>,
        checked: Result<(), InvalidRequest>,
        request: impl FnOnce() -> AwsRequest,
    ) -> Result<String, Status> {
        let arrived = Instant::now();
        let deadline = deadline_for(grpc_timeout.as_deref(), self.default_deadline, arrived);

        let outcome: Result<CallSuccess, (Status, Option<CallError>)> = match checked {
            Err(invalid) => Err((invalid_request_status(&invalid), None)),
            Ok(()) => {
                let call = Call {
                    request: request(),
                    deadline,
                };
                // The stack honours the deadline itself; this is the backstop.
                let result = tokio::time::timeout_at(deadline, self.stack.clone().oneshot(call))
                    .await
                    .unwrap_or_else(|_| {
                        let mut error = CallError::deadline_exceeded(0);
                        error.outcome_unknown = true;
                        Err(error)
                    });
                result.map_err(|error| {
                    let status =
                        call_error_status(&error, suggested_retry_delay(&error, &self.retry));
                    (status, Some(error))
                })
            }
        };

        let latency = arrived.elapsed();
        let method = operation.name();
        match &outcome {
            Ok(success) => {
                tracing::info!(
                    method,
                    code = "OK",
                    attempts = success.attempts,
                    latency_ms = latency.as_millis() as u64,
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
                let latency_ms = latency.as_millis() as u64;
                match status.code() {
                    // The operator must act: the cause goes to the log, which
                    // only ever holds AWS's own words, never request values.
                    Code::Internal => tracing::error!(
                        method, code, attempts, latency_ms, aws_error_code, aws_request_id,
                        cause = %error.as_ref().map(ToString::to_string).unwrap_or_default(),
                        "call finished"
                    ),
                    Code::Unavailable | Code::ResourceExhausted | Code::DeadlineExceeded => {
                        tracing::warn!(
                            method,
                            code,
                            attempts,
                            latency_ms,
                            aws_error_code,
                            aws_request_id,
                            "call finished"
                        )
                    }
                    _ => tracing::info!(
                        method,
                        code,
                        attempts,
                        latency_ms,
                        aws_error_code,
                        aws_request_id,
                        "call finished"
                    ),
                }
                self.metrics
                    .record_call(method, status.code(), latency.as_secs_f64(), attempts);
            }
        }
        outcome
            .map(|success| success.aws_request_id.unwrap_or_default())
            .map_err(|(status, _)| status)
    }
}

fn grpc_timeout<T>(request: &Request<T>) -> Option<String> {
    request
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[tonic::async_trait]
impl JobWorkerService for JobWorker {
    async fn put_job_success_result(
        &self,
        request: Request<PutJobSuccessResultRequest>,
    ) -> Result<Response<PutJobSuccessResultResponse>, Status> {
        let timeout = grpc_timeout(&request);
        let body = request.into_inner();
        let checked = validation::put_job_success_result(&body);
        let aws_request_id = self
            .handle(Operation::PutJobSuccessResult, timeout, checked, || {
                AwsRequest::PutJobSuccessResult(Arc::new(body))
            })
            .await?;
        Ok(Response::new(PutJobSuccessResultResponse {
            aws_request_id,
        }))
    }

    async fn put_third_party_job_success_result(
        &self,
        request: Request<PutThirdPartyJobSuccessResultRequest>,
    ) -> Result<Response<PutThirdPartyJobSuccessResultResponse>, Status> {
        let timeout = grpc_timeout(&request);
        let body = request.into_inner();
        let checked = validation::put_third_party_job_success_result(&body);
        let aws_request_id = self
            .handle(
                Operation::PutThirdPartyJobSuccessResult,
                timeout,
                checked,
                || AwsRequest::PutThirdPartyJobSuccessResult(Arc::new(body)),
            )
            .await?;
        Ok(Response::new(PutThirdPartyJobSuccessResultResponse {
            aws_request_id,
        }))
    }
}
