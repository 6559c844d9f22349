//! The gRPC adapter: `JobWorkerService` validates each request, sends it
//! through the forwarding stack, and turns the outcome into a response or a
//! status. It is the only code that knows both tonic and the domain types.

use std::{sync::Arc, time::Duration};

use tokio::time::Instant;
use tonic::{Code, Request, Response, Status};
use tower::{ServiceExt, util::BoxCloneSyncService};

use crate::{
    call::{AwsOutput, AwsRequest, Call, CallError, CallSuccess, Operation},
    client_tokens::{ClientTokens, fill_in},
    deadline::deadline_for,
    error::{call_error_status, invalid_request_status},
    metrics::{Metrics, code_name},
    proto::v1::{self, job_worker_service_server::JobWorkerService},
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

    /// Validates, forwards, logs one line and records metrics for one call.
    async fn handle(
        &self,
        operation: Operation,
        grpc_timeout: Option<String>,
        checked: Result<(), InvalidRequest>,
        request: impl FnOnce() -> AwsRequest,
    ) -> Result<CallSuccess, Status> {
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
        outcome.map_err(|(status, _)| status)
    }
}

fn grpc_timeout<T>(request: &Request<T>) -> Option<String> {
    request
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Validates and forwards one request type: `$validate` checks the message,
/// `$variant` wraps it for the stack. Evaluates to the call's `CallSuccess`.
macro_rules! forward {
    ($self:ident, $request:ident, $operation:ident, $validate:path) => {{
        let timeout = grpc_timeout(&$request);
        let body = $request.into_inner();
        let checked = $validate(&body);
        $self
            .handle(Operation::$operation, timeout, checked, || {
                AwsRequest::$operation(Arc::new(body))
            })
            .await?
    }};
}

fn request_id(success: &CallSuccess) -> String {
    success.aws_request_id.clone().unwrap_or_default()
}

#[tonic::async_trait]
impl JobWorkerService for JobWorker {
    async fn poll_for_jobs(
        &self,
        request: Request<v1::PollForJobsRequest>,
    ) -> Result<Response<v1::PollForJobsResponse>, Status> {
        let success = forward!(self, request, PollForJobs, validation::poll_for_jobs);
        let aws_request_id = request_id(&success);
        let AwsOutput::Jobs(jobs) = success.output else {
            unreachable!("PollForJobs answers jobs")
        };
        Ok(Response::new(v1::PollForJobsResponse {
            jobs,
            aws_request_id,
        }))
    }

    async fn acknowledge_job(
        &self,
        request: Request<v1::AcknowledgeJobRequest>,
    ) -> Result<Response<v1::AcknowledgeJobResponse>, Status> {
        let success = forward!(self, request, AcknowledgeJob, validation::acknowledge_job);
        let aws_request_id = request_id(&success);
        let AwsOutput::Status(status) = success.output else {
            unreachable!("AcknowledgeJob answers a status")
        };
        Ok(Response::new(v1::AcknowledgeJobResponse {
            status: status.into(),
            aws_request_id,
        }))
    }

    async fn get_job_details(
        &self,
        request: Request<v1::GetJobDetailsRequest>,
    ) -> Result<Response<v1::GetJobDetailsResponse>, Status> {
        let success = forward!(self, request, GetJobDetails, validation::get_job_details);
        let aws_request_id = request_id(&success);
        let AwsOutput::JobDetails(job_details) = success.output else {
            unreachable!("GetJobDetails answers job details")
        };
        Ok(Response::new(v1::GetJobDetailsResponse {
            job_details,
            aws_request_id,
        }))
    }

    async fn put_job_success_result(
        &self,
        request: Request<v1::PutJobSuccessResultRequest>,
    ) -> Result<Response<v1::PutJobSuccessResultResponse>, Status> {
        let success = forward!(
            self,
            request,
            PutJobSuccessResult,
            validation::put_job_success_result
        );
        Ok(Response::new(v1::PutJobSuccessResultResponse {
            aws_request_id: request_id(&success),
        }))
    }

    async fn put_job_failure_result(
        &self,
        request: Request<v1::PutJobFailureResultRequest>,
    ) -> Result<Response<v1::PutJobFailureResultResponse>, Status> {
        let success = forward!(
            self,
            request,
            PutJobFailureResult,
            validation::put_job_failure_result
        );
        Ok(Response::new(v1::PutJobFailureResultResponse {
            aws_request_id: request_id(&success),
        }))
    }

    async fn poll_for_third_party_jobs(
        &self,
        request: Request<v1::PollForThirdPartyJobsRequest>,
    ) -> Result<Response<v1::PollForThirdPartyJobsResponse>, Status> {
        let success = forward!(
            self,
            request,
            PollForThirdPartyJobs,
            validation::poll_for_third_party_jobs
        );
        let aws_request_id = request_id(&success);
        let AwsOutput::ThirdPartyJobs(jobs) = success.output else {
            unreachable!("PollForThirdPartyJobs answers jobs")
        };
        if let Some(map) = &self.client_tokens {
            for job in &jobs {
                map.remember(&job.job_id, &job.client_id);
            }
        }
        Ok(Response::new(v1::PollForThirdPartyJobsResponse {
            jobs,
            aws_request_id,
        }))
    }

    async fn acknowledge_third_party_job(
        &self,
        mut request: Request<v1::AcknowledgeThirdPartyJobRequest>,
    ) -> Result<Response<v1::AcknowledgeThirdPartyJobResponse>, Status> {
        fill_in(self.client_tokens.as_deref(), request.get_mut());
        let success = forward!(
            self,
            request,
            AcknowledgeThirdPartyJob,
            validation::acknowledge_third_party_job
        );
        let aws_request_id = request_id(&success);
        let AwsOutput::Status(status) = success.output else {
            unreachable!("AcknowledgeThirdPartyJob answers a status")
        };
        Ok(Response::new(v1::AcknowledgeThirdPartyJobResponse {
            status: status.into(),
            aws_request_id,
        }))
    }

    async fn get_third_party_job_details(
        &self,
        mut request: Request<v1::GetThirdPartyJobDetailsRequest>,
    ) -> Result<Response<v1::GetThirdPartyJobDetailsResponse>, Status> {
        fill_in(self.client_tokens.as_deref(), request.get_mut());
        let success = forward!(
            self,
            request,
            GetThirdPartyJobDetails,
            validation::get_third_party_job_details
        );
        let aws_request_id = request_id(&success);
        let AwsOutput::ThirdPartyJobDetails(job_details) = success.output else {
            unreachable!("GetThirdPartyJobDetails answers job details")
        };
        Ok(Response::new(v1::GetThirdPartyJobDetailsResponse {
            job_details,
            aws_request_id,
        }))
    }

    async fn put_third_party_job_success_result(
        &self,
        mut request: Request<v1::PutThirdPartyJobSuccessResultRequest>,
    ) -> Result<Response<v1::PutThirdPartyJobSuccessResultResponse>, Status> {
        fill_in(self.client_tokens.as_deref(), request.get_mut());
        let success = forward!(
            self,
            request,
            PutThirdPartyJobSuccessResult,
            validation::put_third_party_job_success_result
        );
        Ok(Response::new(v1::PutThirdPartyJobSuccessResultResponse {
            aws_request_id: request_id(&success),
        }))
    }

    async fn put_third_party_job_failure_result(
        &self,
        mut request: Request<v1::PutThirdPartyJobFailureResultRequest>,
    ) -> Result<Response<v1::PutThirdPartyJobFailureResultResponse>, Status> {
        fill_in(self.client_tokens.as_deref(), request.get_mut());
        let success = forward!(
            self,
            request,
            PutThirdPartyJobFailureResult,
            validation::put_third_party_job_failure_result
        );
        Ok(Response::new(v1::PutThirdPartyJobFailureResultResponse {
            aws_request_id: request_id(&success),
        }))
    }
}
