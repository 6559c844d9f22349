//! The gRPC adapter: `JobWorkerService` validates each request, sends it
//! through the forwarding stack, and turns the outcome into a response or a
//! status. It is the only code that knows both tonic and the domain types,
//! and it is generic over the [`Operation`]: each RPC is one line.

use std::{sync::Arc, time::Duration};

use tokio::{
    sync::{Semaphore, watch},
    time::Instant,
};
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::Instrument;

use aws_sdk_codepipeline::types::ActionTypeId;

use crate::{
    access::{Access, Refusal, ShowActionType},
    auth::Caller,
    call::{Call, CallError, CallSuccess, ErrorKind, Progress},
    client_tokens::{ClientTokens, NeedsToken},
    connections::HeadersArrived,
    deadline::deadline_for,
    error::{call_error_status, invalid_request_status, refusal_status},
    metrics::{Metrics, code_name},
    operation::{Delivery, Operation, Resolve, Subject},
    operations as op,
    proto::{
        JOB_WORKER_SERVICE_NAME,
        v1::{self, job_worker_service_server::JobWorkerService},
    },
    replay::{Deliveries, Fingerprint},
    retry::{RetrySettings, suggested_retry_delay},
    subscriptions::{CustomJobs, FeedContext, JobStream, PartnerJobs, Subscriptions},
    targets::{Chosen, Target, Targets},
    traces,
    validation::{Checker, InvalidRequest},
};

pub struct JobWorker {
    targets: Arc<Targets>,
    metrics: Arc<Metrics>,
    default_deadline: Duration,
    /// One permit per call in flight; none left means shed the call.
    in_flight: Arc<Semaphore>,
    /// Turns true when the shutdown grace is over.
    cut_short: watch::Receiver<bool>,
    retry: RetrySettings,
    client_tokens: Option<Arc<ClientTokens>>,
    access: Arc<Access>,
    deliveries: Deliveries,
    subscriptions: Subscriptions,
}

/// What a finished call's log line and audit event say about it.
struct Record {
    method: &'static str,
    caller: Option<Caller>,
    job_id: Option<String>,
    action_type: Option<ActionTypeId>,
    /// For acknowledgements and results of an authenticated caller: the
    /// request's digest, to answer an identical repeat from memory.
    fingerprint: Option<Fingerprint>,
    /// The target the call went to, once chosen.
    target: Option<&'static str>,
}

type Outcome<T> = Result<CallSuccess<T>, (Status, Option<CallError>)>;

/// The limits on calls the service applies itself.
pub struct Bounds {
    /// For calls that carry no `grpc-timeout`, counted from their headers.
    pub default_deadline: Duration,
    /// Calls in flight before new ones are shed.
    pub max_calls_in_flight: usize,
    /// Subscriptions open at once.
    pub max_subscriptions: usize,
    /// How long after its headers a subscription's first message may come.
    pub first_message_timeout: Duration,
    /// Turns true when the shutdown grace is over: calls still in flight
    /// answer at once.
    pub cut_short: watch::Receiver<bool>,
}

/// How long a shed caller is asked to wait before trying again.
const SHED_RETRY_DELAY: Duration = Duration::from_secs(1);

impl JobWorker {
    pub fn new(
        targets: Arc<Targets>,
        metrics: Arc<Metrics>,
        bounds: Bounds,
        retry: RetrySettings,
        client_tokens: Option<Arc<ClientTokens>>,
        access: Arc<Access>,
    ) -> Self {
        let subscriptions = Subscriptions::new(FeedContext {
            targets: targets.clone(),
            metrics: metrics.clone(),
            access: access.clone(),
            client_tokens: client_tokens.clone(),
            poll_deadline: bounds.default_deadline,
            first_message_timeout: bounds.first_message_timeout,
            slots: Arc::new(Semaphore::new(bounds.max_subscriptions)),
        });
        JobWorker {
            subscriptions,
            targets,
            metrics,
            default_deadline: bounds.default_deadline,
            in_flight: Arc::new(Semaphore::new(bounds.max_calls_in_flight)),
            cut_short: bounds.cut_short,
            retry,
            client_tokens,
            access,
            deliveries: Deliveries::new(),
        }
    }

    /// One call of any operation, in its trace span (a child of the
    /// worker's, when it sent `traceparent`).
    async fn handle<O: Operation>(
        &self,
        request: Request<O::Request>,
    ) -> Result<Response<O::Response>, Status> {
        let span = traces::server_span(JOB_WORKER_SERVICE_NAME, O::ID.name(), request.metadata());
        let result = self
            .handle_in_span::<O>(request, &span)
            .instrument(span.clone())
            .await;
        if !span.is_disabled() {
            let code = result.as_ref().map_or_else(Status::code, |_| Code::Ok);
            span.record("rpc.grpc.status_code", code as i64);
            if code != Code::Ok {
                span.record("otel.status_code", "error");
            }
        }
        result
    }

    /// Authenticate, validate, authorize, fill in what the gateway knows,
    /// forward, learn from the answer, log one line, audit what changed
    /// state, and record metrics.
    async fn handle_in_span<O: Operation>(
        &self,
        request: Request<O::Request>,
        span: &tracing::Span,
    ) -> Result<Response<O::Response>, Status> {
        // The deadline counts from the headers, not from the decoded body.
        let arrived = request
            .extensions()
            .get::<HeadersArrived>()
            .map_or_else(Instant::now, |headers| headers.0);
        let deadline = deadline_for(
            grpc_timeout(&request).as_deref(),
            self.default_deadline,
            arrived,
        );
        let mut record = Record {
            method: O::ID.name(),
            caller: None,
            job_id: None,
            action_type: None,
            fingerprint: None,
            target: None,
        };
        // Load shedding: refused before any work, so an overload costs little.
        let Ok(_in_flight) = self.in_flight.clone().try_acquire_owned() else {
            self.metrics.record_shed(record.method);
            let mut error = CallError::new(
                ErrorKind::Overloaded,
                "the gateway has too many calls in flight (--max-calls-in-flight); nothing was \
                 sent to AWS",
            );
            error.retry_after = Some(SHED_RETRY_DELAY);
            return Err(call_error_status(&error, error.retry_after));
        };
        let _counted = self.metrics.call_admitted();
        let outcome = self.decide::<O>(request, deadline, &mut record).await;
        if let Some(job_id) = &record.job_id {
            span.record("job_id", job_id.as_str());
        }
        if let Some(target) = record.target {
            span.record("cpgw.target", target);
        }
        self.finished(&record, arrived, &outcome);
        if O::VERB.changes_state() {
            audit(&record, &outcome);
        }
        let success = outcome.map_err(|(status, _)| status)?;
        if let (Some(fingerprint), Some(job_id), false) =
            (record.fingerprint, &record.job_id, success.replay)
        {
            self.deliveries.remember::<O>(job_id, fingerprint, &success);
        }
        let mut success = success;
        // Said only where there is a choice: a gateway of one account
        // answers as before.
        if let Some(target) = record.target
            && self.targets.several()
        {
            O::mark_target(&mut success.output, target);
        }
        for job in O::polled(&success.output) {
            if let Some(action_type) = &record.action_type {
                self.access.remember_job_type(job.job_id, action_type);
            }
            if let Some(target) = record.target {
                self.targets.remember(job.job_id, target);
            }
            if let (Some(map), Some(client_id)) = (&self.client_tokens, job.client_id) {
                map.remember(job.job_id, client_id);
            }
        }
        let delivery = Delivery {
            aws_request_id: success.aws_request_id.unwrap_or_default(),
            earlier_attempt_may_have_been_applied: success.earlier_attempt_may_have_applied,
            replay: success.replay,
        };
        Ok(Response::new(O::respond(success.output, delivery)))
    }

    /// Everything between arrival and AWS's answer; fills in `record` as it
    /// learns who calls and about what.
    async fn decide<O: Operation>(
        &self,
        request: Request<O::Request>,
        deadline: Instant,
        record: &mut Record,
    ) -> Outcome<O::Output> {
        let refuse = |refusal: Refusal, record: &Record| {
            self.metrics.record_refusal(record.method, refusal.label());
            let identity = record.caller.as_ref().map_or("", |c| c.identity.as_str());
            Err((refusal_status(&refusal, record.method, identity), None))
        };
        let caller = match self.access.caller_of(&request).await {
            Ok(caller) => caller,
            Err(refusal) => return refuse(refusal, record),
        };
        record.caller = Some(caller.clone());
        // Acknowledgements and results are remembered once delivered, so an
        // identical repeat can be answered as a replay. Digested only now: a
        // caller without credentials costs no hash of a 120 KB report.
        record.fingerprint = O::VERB
            .changes_state()
            .then(|| Fingerprint::of::<O>(request.get_ref()));
        let requested_target = O::requested_target(request.get_ref()).to_owned();
        let checked = match O::validate(request.into_inner()) {
            Ok(checked) => checked,
            Err(invalid) => return Err((invalid_request_status(&invalid), None)),
        };
        let subject = O::subject(&checked);
        record.job_id = subject.job_id.map(str::to_owned);
        let (target, chosen) = self
            .choose_target(&requested_target, &subject)
            .map_err(|invalid| (invalid_request_status(&invalid), None))?;
        record.target = Some(target.name);
        // The job's type decides the policy and goes into the audit event;
        // a plain read without a policy needs neither.
        let needs_type = self.access.has_policy() || O::VERB.changes_state();
        record.action_type = match (subject.action_type, subject.job_id) {
            (Some(polled), _) => Some(polled.clone()),
            (None, Some(job_id)) if needs_type => self.access.known_job_type(job_id),
            (None, _) => None,
        };
        if self.access.has_policy() {
            if record.action_type.is_none() {
                // Learning the job's type may cost a read from AWS: not for
                // a caller that no rule lets do this at all.
                if let Err(refusal) = self.access.authorize_verb(&caller, O::VERB) {
                    return refuse(refusal, record);
                }
                // The target first: a caller may not make the gateway
                // read a job from an account it may not use.
                if let Err(refusal) = self.access.authorize_target(&caller, O::VERB, target.name) {
                    return refuse(refusal, record);
                }
                record.action_type = Some(
                    self.look_up_job_type(&target, chosen, &subject, record.method, deadline)
                        .await?,
                );
            }
            if let Some(action_type) = &record.action_type
                && let Err(refusal) =
                    self.access
                        .authorize(&caller, O::VERB, action_type, target.name)
            {
                return refuse(refusal, record);
            }
        }
        // Only now, for a caller allowed to act on the job, may the map's
        // client token be used.
        let valid = checked
            .resolve(self.client_tokens.as_deref())
            .map_err(|invalid| (invalid_request_status(&invalid), None))?;
        // Only now, authorized: the repeat of a request this replica
        // delivered is answered from memory.
        if let (Some(fingerprint), Some(job_id)) = (record.fingerprint, &record.job_id)
            && let Some(replay) = self.deliveries.recall::<O>(job_id, fingerprint)
        {
            self.metrics.record_replay(record.method);
            return Ok(replay);
        }
        self.forward::<O>(&target, chosen, Call::new(valid, deadline))
            .await
    }

    /// The target a call goes to: the one it names, else for a poll the one
    /// configured for its action type, for a job the one this replica
    /// remembers, else the default.
    fn choose_target(
        &self,
        requested: &str,
        subject: &Subject<'_>,
    ) -> Result<(Arc<Target>, Chosen), InvalidRequest> {
        let (target, chosen) = match (subject.action_type, subject.job_id) {
            (Some(action_type), _) => self.targets.for_poll(requested, action_type)?,
            (None, Some(job_id)) => self.targets.for_job(requested, job_id)?,
            (None, None) => (self.targets.default_target(), Chosen::Fallback),
        };
        Ok((target.clone(), chosen))
    }

    /// A job's action type from AWS, for a replica that did not answer the
    /// job's poll: one GetJobDetails / GetThirdPartyJobDetails through the
    /// same stack (rate limit, retries, deadline), remembered afterwards.
    async fn look_up_job_type(
        &self,
        target: &Target,
        chosen: Chosen,
        subject: &Subject<'_>,
        method: &'static str,
        deadline: Instant,
    ) -> Result<ActionTypeId, (Status, Option<CallError>)> {
        let job_id = subject.job_id.unwrap_or_default().to_owned();
        self.metrics.record_job_type_lookup(method);
        let (found, owner, read_by) = match subject.partner_token {
            None => {
                let details = self
                    .forward::<op::GetJobDetails>(
                        target,
                        chosen,
                        Call::new(
                            op::JobRef {
                                job_id: job_id.clone(),
                            },
                            deadline,
                        ),
                    )
                    .await?;
                let found = details.output.and_then(|d| d.data?.action_type_id);
                (found, v1::ActionOwner::Custom, "GetJobDetails")
            }
            Some(token) => {
                let lookup = NeedsToken {
                    job_id: job_id.clone(),
                    token: token.clone(),
                    body: (),
                }
                .resolve(self.client_tokens.as_deref())
                .map_err(|invalid| (invalid_request_status(&invalid), None))?;
                let details = self
                    .forward::<op::GetThirdPartyJobDetails>(
                        target,
                        chosen,
                        Call::new(lookup, deadline),
                    )
                    .await?;
                let found = details.output.and_then(|d| d.data?.action_type_id);
                (
                    found,
                    v1::ActionOwner::ThirdParty,
                    "GetThirdPartyJobDetails",
                )
            }
        };
        // The same rules as a poll's action type; a job without a usable one
        // cannot be authorized.
        let mut check = Checker::default();
        let action_type = check.action_type_id(found, owner, read_by);
        let action_type = check.finish(|| action_type).map_err(|_| {
            let status = Status::internal(format!(
                "CodePipeline's {read_by} answer for this job names no usable action type, so \
                 the call cannot be authorized"
            ));
            (status, None)
        })?;
        self.access.remember_job_type(&job_id, &action_type);
        Ok(action_type)
    }

    async fn forward<O: Operation>(
        &self,
        target: &Target,
        chosen: Chosen,
        call: Call<O>,
    ) -> Result<CallSuccess<O::Output>, (Status, Option<CallError>)> {
        let progress = call.progress.clone();
        let mut cut_short = self.cut_short.clone();
        // No timer here: every wait in the stack is bounded by the deadline
        // where it starts (rate-limit admission, retry delays, the upstream
        // slot, each attempt's one timer), so a call runs one timer, not three.
        let result = tokio::select! {
            result = target.stack.forward(call) => result,
            _ = async { let _ = cut_short.wait_for(|cut| *cut).await; } => {
                let mut error = CallError::new(
                    ErrorKind::ShuttingDown,
                    "the gateway shut down before CodePipeline answered; try again (another \
                     replica will answer)",
                );
                error.retry_after = Some(Duration::ZERO);
                Err(interrupted(error, &progress))
            }
        };
        result.map_err(|mut error| {
            error.job_may_be_elsewhere = chosen == Chosen::Fallback
                && self.targets.several()
                && error.kind == ErrorKind::JobNotFound;
            let status = call_error_status(&error, suggested_retry_delay(&error, &self.retry));
            (status, Some(error))
        })
    }

    /// The call's one log line (its metrics are counted where it leaves HTTP).
    fn finished<T>(&self, record: &Record, arrived: Instant, outcome: &Outcome<T>) {
        let latency = arrived.elapsed();
        let latency_ms = latency.as_millis() as u64;
        let method = record.method;
        let job_id = record.job_id.as_deref().unwrap_or("");
        let caller = record.caller.as_ref().map_or("", |c| c.identity.as_str());
        // The AWS account and region the call went to (empty: refused
        // first). Not `target`: JSON lines use that for the tracing target.
        let aws_target = record.target.unwrap_or("");
        match outcome {
            Ok(success) => {
                tracing::info!(
                    method,
                    code = "OK",
                    caller,
                    job_id,
                    aws_target,
                    attempts = success.attempts,
                    replay = success.replay,
                    latency_ms,
                    aws_request_id = success.aws_request_id.as_deref().unwrap_or(""),
                    "call finished"
                );
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
                            method, code, caller, job_id, aws_target, attempts, latency_ms,
                            aws_error_code, aws_request_id, $(cause = %$cause,)? "call finished"
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
            }
        }
    }
}

/// `error` for a call stopped from outside the stack (the shutdown): "outcome
/// unknown" exactly when an attempt was on its way to AWS, and what earlier
/// attempts left behind.
fn interrupted(mut error: CallError, progress: &Progress) -> CallError {
    error.outcome_unknown = progress.in_flight();
    error.earlier_attempt_may_have_applied = progress.earlier_outcome_unknown();
    error
}

/// One event per call that would change a job's state (acknowledgements and
/// results, refused ones included), on its own `audit` target so that it can
/// be routed apart: who, how authenticated, what, on which job of which
/// action type, with what outcome. Never a secret.
fn audit<T>(record: &Record, outcome: &Outcome<T>) {
    let (outcome, aws_request_id) = match outcome {
        Ok(success) => ("OK", success.aws_request_id.as_deref()),
        Err((status, error)) => (
            code_name(status.code()),
            error
                .as_ref()
                .and_then(|e| e.aws.as_ref())
                .and_then(|aws| aws.request_id.as_deref()),
        ),
    };
    let caller = record.caller.as_ref();
    tracing::info!(
        target: "audit",
        caller = caller.map_or("", |c| c.identity.as_str()),
        auth_method = caller.map_or("", |c| c.method.name()),
        operation = record.method,
        job_id = record.job_id.as_deref().unwrap_or(""),
        aws_target = record.target.unwrap_or(""),
        action_type = %record.action_type.as_ref().map(|t| ShowActionType(t).to_string()).unwrap_or_default(),
        outcome,
        aws_request_id = aws_request_id.unwrap_or(""),
        "state-changing call"
    );
}

fn grpc_timeout<T>(request: &Request<T>) -> Option<String> {
    request
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Each unary RPC is its operation, handled generically; the subscriptions
/// are their own module's.
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

            type SubscribeJobsStream = JobStream<CustomJobs>;

            async fn subscribe_jobs(
                &self,
                request: Request<Streaming<v1::SubscribeJobsRequest>>,
            ) -> Result<Response<Self::SubscribeJobsStream>, Status> {
                self.subscriptions.custom.subscribe(request).await
            }

            type SubscribeThirdPartyJobsStream = JobStream<PartnerJobs>;

            async fn subscribe_third_party_jobs(
                &self,
                request: Request<Streaming<v1::SubscribeThirdPartyJobsRequest>>,
            ) -> Result<Response<Self::SubscribeThirdPartyJobsStream>, Status> {
                self.subscriptions.partner.subscribe(request).await
            }
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
