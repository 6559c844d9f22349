//! The unit of work that flows through the forwarding stack
//! (rate limit → retry → AWS), and what comes back out of it.
//!
//! These types know nothing about gRPC: `error.rs` turns a [`CallError`] into a
//! `tonic::Status` in one place. They are generic over the [`Operation`], so
//! each layer carries the operation's own validated request and output types.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;

use crate::operation::{Operation, OperationId};

/// A validated request on its way through the stack, with the instant by
/// which the caller needs an answer. Cloning is cheap (the body is shared),
/// because the retry layer keeps a copy for each further attempt.
pub struct Call<O: Operation> {
    pub request: Arc<O::Valid>,
    pub deadline: Instant,
    /// Shared by all of the call's attempts, and read by whoever cuts the
    /// call short (the shutdown), to say exactly what may have reached AWS.
    pub progress: Arc<Progress>,
}

impl<O: Operation> Call<O> {
    pub fn new(request: O::Valid, deadline: Instant) -> Self {
        Call {
            request: Arc::new(request),
            deadline,
            progress: Arc::default(),
        }
    }

    pub fn operation(&self) -> OperationId {
        O::ID
    }
}

impl<O: Operation> Clone for Call<O> {
    fn clone(&self) -> Self {
        Call {
            request: self.request.clone(),
            deadline: self.deadline,
            progress: self.progress.clone(),
        }
    }
}

/// What has reached AWS so far, for a call cut short before it finished.
#[derive(Debug, Default)]
pub struct Progress {
    in_flight: AtomicBool,
    unknown_outcome: AtomicBool,
    sent: AtomicU32,
}

impl Progress {
    /// An attempt's bytes are about to go out; returns its number (from 1).
    pub fn attempt_sent(&self) -> u32 {
        self.in_flight.store(true, Ordering::Release);
        self.sent.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The attempt ended; `outcome_unknown` if AWS may have applied it anyway.
    pub fn attempt_ended(&self, outcome_unknown: bool) {
        if outcome_unknown {
            self.unknown_outcome.store(true, Ordering::Release);
        }
        self.in_flight.store(false, Ordering::Release);
    }

    /// An attempt is on its way to AWS or back.
    pub fn in_flight(&self) -> bool {
        self.in_flight.load(Ordering::Acquire)
    }

    /// An attempt that ended may have been applied although it failed.
    pub fn earlier_outcome_unknown(&self) -> bool {
        self.unknown_outcome.load(Ordering::Acquire)
    }
}

/// Only the operation: the request holds secrets (client and continuation
/// tokens, output variable values) that must never be logged.
impl<O: Operation> fmt::Debug for Call<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Call({})", O::ID)
    }
}

/// AWS accepted the request.
#[derive(Clone, Default, PartialEq)]
pub struct CallSuccess<T> {
    /// `x-amzn-RequestId` of the attempt that succeeded.
    pub aws_request_id: Option<String>,
    /// How many attempts were sent to AWS, this one included.
    pub attempts: u32,
    /// An earlier attempt of this call had an unknown outcome: it may have
    /// been applied as well.
    pub earlier_attempt_may_have_applied: bool,
    /// Answered from the replica's memory of this exact request, delivered
    /// before (`replay.rs`); nothing was sent to AWS this time.
    pub replay: bool,
    /// What AWS answered, already in the gateway's proto types.
    pub output: T,
}

/// Not the output: job data holds artifact credentials and configuration
/// values, which must never be logged.
impl<T> fmt::Debug for CallSuccess<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallSuccess")
            .field("aws_request_id", &self.aws_request_id)
            .field("attempts", &self.attempts)
            .field(
                "earlier_attempt_may_have_applied",
                &self.earlier_attempt_may_have_applied,
            )
            .field("replay", &self.replay)
            .finish_non_exhaustive()
    }
}

/// Declares [`ErrorKind`] and its `ALL` list from one list of variants, so the
/// tests that walk every kind cannot miss a new one.
macro_rules! error_kinds {
    ($($(#[$doc:meta])* $kind:ident,)+) => {
        /// What went wrong, as far as the caller needs to know.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum ErrorKind {
            $($(#[$doc])* $kind,)+
        }

        impl ErrorKind {
            /// Every kind, in declaration order.
            pub const ALL: &[ErrorKind] = &[$(ErrorKind::$kind),+];
        }
    };
}

error_kinds! {
    /// AWS `ValidationException`.
    Validation,
    /// AWS `OutputVariablesSizeExceededException`.
    OutputVariablesSizeExceeded,
    /// AWS `JobNotFoundException`.
    JobNotFound,
    /// AWS `InvalidJobStateException`.
    InvalidJobState,
    /// AWS `InvalidClientTokenException`.
    InvalidClientToken,
    /// AWS `ActionTypeNotFoundException`.
    ActionTypeNotFound,
    /// AWS `InvalidNonceException`: another worker claimed the job, or this
    /// worker's own earlier acknowledgement landed.
    InvalidNonce,
    /// AWS `InvalidJobException`.
    InvalidJob,
    /// AWS throttled the request.
    Throttled,
    /// AWS answered with a 5xx.
    ServerError,
    /// No usable HTTP response: connection refused or reset, or a response cut off.
    Transport,
    /// One attempt took longer than the gateway's attempt timeout.
    AttemptTimedOut,
    /// The caller's deadline passed.
    DeadlineExceeded,
    /// The gateway's own rate limit could not admit the call in time.
    RateLimited,
    /// The gateway already had `--max-calls-in-flight` calls in flight (load
    /// shedding): refused at once, nothing sent.
    Overloaded,
    /// The gateway's shutdown grace ran out while the call was in flight.
    ShuttingDown,
    /// AWS refused the gateway's identity or its permissions: an operator problem.
    Misconfigured,
    /// The gateway found no usable AWS credentials, so nothing was sent.
    NoCredentials,
    /// Anything else AWS answered (an error code the gateway does not know).
    Unexpected,
}

impl ErrorKind {
    /// Whether another attempt may succeed where this one failed. This is the
    /// one place that decides it: the retry policy and the status a caller
    /// sees (UNAVAILABLE for what stayed transient) both follow it.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorKind::Throttled
                | ErrorKind::ServerError
                | ErrorKind::Transport
                | ErrorKind::AttemptTimedOut
        )
    }
}

/// The details AWS gave with an error.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AwsErrorDetails {
    /// The error code, e.g. `JobNotFoundException`.
    pub code: Option<String>,
    pub message: Option<String>,
    pub request_id: Option<String>,
    pub http_status: Option<u16>,
}

/// A call that failed, after every attempt the retry policy allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallError {
    pub kind: ErrorKind,
    /// Set when the error came from AWS (an HTTP response).
    pub aws: Option<Box<AwsErrorDetails>>,
    /// Human-readable cause for errors that did not come from AWS.
    pub detail: String,
    /// How many attempts were sent to AWS.
    pub attempts: u32,
    /// An attempt whose outcome is unknown (timeout, reset after sending) came
    /// before this error: AWS may have applied it.
    pub earlier_attempt_may_have_applied: bool,
    /// This attempt itself may have reached AWS (its outcome is unknown).
    pub outcome_unknown: bool,
    /// When a retry would make sense, how long to wait first.
    pub retry_after: Option<Duration>,
    /// The target the call went to (once an attempt was made).
    pub target: Option<&'static str>,
    /// The call named no target and this replica did not know the job's, so
    /// it went to the default target: a job not found there may belong to
    /// another.
    pub job_may_be_elsewhere: bool,
}

impl CallError {
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        CallError {
            kind,
            aws: None,
            detail: detail.into(),
            attempts: 0,
            earlier_attempt_may_have_applied: false,
            outcome_unknown: false,
            retry_after: None,
            target: None,
            job_may_be_elsewhere: false,
        }
    }

    pub fn deadline_exceeded(attempts: u32) -> Self {
        let mut error = CallError::new(
            ErrorKind::DeadlineExceeded,
            "the caller's deadline passed before CodePipeline answered",
        );
        error.attempts = attempts;
        error
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.aws {
            Some(aws) => write!(
                f,
                "{:?}: AWS {} ({})",
                self.kind,
                aws.code.as_deref().unwrap_or("error"),
                aws.message.as_deref().unwrap_or("no message"),
            ),
            None => write!(f, "{:?}: {}", self.kind, self.detail),
        }
    }
}

impl std::error::Error for CallError {}
