//! Readiness that tells the truth: the health service says NOT_SERVING while
//! the gateway shuts down, and while AWS does not accept its identity (no
//! credentials, an unrecognised or expired key), since then no call can
//! succeed and the pod should leave its Service.
//!
//! Every attempt's answer says whether AWS accepted the identity (start-up
//! has already checked that the credential chain yields credentials). Once it
//! is refused, no traffic reaches the pod to say when it is fixed, so a probe
//! asks CodePipeline every [`PROBE_INTERVAL`] until it is accepted again. The
//! probe reads the details of a job that cannot exist: it changes nothing, and
//! any answer from AWS but a refused identity (JobNotFound, even AccessDenied,
//! which is a permissions problem of one operation) proves the identity works.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU8, Ordering},
    },
    time::Duration,
};

use tokio::sync::{Mutex, Notify, watch};
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{
    aws::{classify, refuses_identity},
    call::CallError,
    proto::JOB_WORKER_SERVICE_NAME,
};

/// How often a refused identity is asked about again.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// How long one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// A job id CodePipeline cannot have issued (it issues random UUIDs).
const PROBE_JOB_ID: &str = "00000000-0000-0000-0000-000000000000";

/// What one answer says of the gateway's identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    Refused,
    /// No answer from AWS (transport, timeout): it says nothing.
    Unknown,
}

impl Verdict {
    pub fn of<T>(result: &Result<T, CallError>) -> Verdict {
        match result {
            Ok(_) => Verdict::Accepted,
            Err(error) if refuses_identity(error) => Verdict::Refused,
            Err(error) if error.aws.is_some() => Verdict::Accepted,
            Err(_) => Verdict::Unknown,
        }
    }
}

/// The health service's two reasons to say NOT_SERVING.
pub struct Readiness {
    reporter: HealthReporter,
    /// (stopping, identity refused); a lock so that two changes publish in order.
    state: Mutex<(bool, bool)>,
    /// The same, for readers that cannot wait on the lock.
    reasons: AtomicU8,
}

const STOPPING_REASON: u8 = 1;
const REFUSED_REASON: u8 = 2;

impl Readiness {
    pub fn new(reporter: HealthReporter) -> Self {
        Readiness {
            reporter,
            state: Mutex::new((false, false)),
            reasons: AtomicU8::new(0),
        }
    }

    /// SERVING, overall and for the job worker service, unless a reason holds.
    pub async fn start(&self) {
        self.publish(false, false).await;
    }

    /// Why the gateway is not ready, if it is not (for `/readyz`).
    pub fn not_ready_because(&self) -> Option<&'static str> {
        match self.reasons.load(Ordering::Acquire) {
            0 => None,
            STOPPING_REASON => Some("shutting down"),
            _ => Some("AWS refuses the gateway's identity"),
        }
    }

    /// Shutting down: NOT_SERVING for good.
    pub async fn stopping(&self) {
        let mut state = self.state.lock().await;
        state.0 = true;
        self.publish(state.0, state.1).await;
    }

    async fn identity_refused(&self, refused: bool) {
        let mut state = self.state.lock().await;
        state.1 = refused;
        self.publish(state.0, state.1).await;
    }

    async fn publish(&self, stopping: bool, refused: bool) {
        // Shutting down is the reason to give while both hold.
        let reasons = if stopping {
            STOPPING_REASON
        } else if refused {
            REFUSED_REASON
        } else {
            0
        };
        self.reasons.store(reasons, Ordering::Release);
        let status = if stopping || refused {
            ServingStatus::NotServing
        } else {
            ServingStatus::Serving
        };
        for service in ["", JOB_WORKER_SERVICE_NAME] {
            self.reporter.set_service_status(service, status).await;
        }
    }
}

/// Whether AWS accepts the gateway's identity, learnt from every answer.
pub struct IdentityWatch {
    refused: AtomicBool,
    became_refused: Notify,
    readiness: Arc<Readiness>,
}

impl IdentityWatch {
    pub fn new(readiness: Arc<Readiness>) -> Self {
        IdentityWatch {
            refused: AtomicBool::new(false),
            became_refused: Notify::new(),
            readiness,
        }
    }

    pub fn is_refused(&self) -> bool {
        self.refused.load(Ordering::Acquire)
    }

    /// Learns from one answer; only a change costs more than an atomic load.
    pub async fn observe(&self, verdict: Verdict) {
        let refused = match verdict {
            Verdict::Accepted => false,
            Verdict::Refused => true,
            Verdict::Unknown => return,
        };
        if self.refused.load(Ordering::Acquire) == refused
            || self.refused.swap(refused, Ordering::AcqRel) == refused
        {
            return;
        }
        if refused {
            tracing::error!(
                "AWS refuses the gateway's identity: health is NOT_SERVING until it accepts it \
                 again (asked every {}s); the call lines above carry AWS's error code",
                PROBE_INTERVAL.as_secs()
            );
            self.became_refused.notify_one();
        } else {
            tracing::info!("AWS accepts the gateway's identity again: health is SERVING");
        }
        self.readiness.identity_refused(refused).await;
    }

    /// While the identity is refused, asks CodePipeline every
    /// [`PROBE_INTERVAL`] until it is accepted again, until `stop`. Nothing is
    /// asked while calls succeed: a gateway at rest sends nothing to AWS.
    pub fn probe(
        self: &Arc<Self>,
        client: aws_sdk_codepipeline::Client,
        mut stop: watch::Receiver<bool>,
    ) {
        let watch = self.clone();
        tokio::spawn(async move {
            let stopped = async move {
                let _ = stop.wait_for(|stop| *stop).await;
            };
            tokio::pin!(stopped);
            loop {
                if !watch.is_refused() {
                    tokio::select! {
                        () = watch.became_refused.notified() => {}
                        () = &mut stopped => return,
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(PROBE_INTERVAL) => {}
                    () = &mut stopped => return,
                }
                let verdict = tokio::select! {
                    verdict = ask(&client) => verdict,
                    () = &mut stopped => return,
                };
                watch.observe(verdict).await;
            }
        });
    }
}

async fn ask(client: &aws_sdk_codepipeline::Client) -> Verdict {
    let asked = client.get_job_details().job_id(PROBE_JOB_ID).send();
    match tokio::time::timeout(PROBE_TIMEOUT, asked).await {
        Ok(answer) => Verdict::of(&answer.map_err(classify)),
        Err(_elapsed) => Verdict::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::{AwsErrorDetails, ErrorKind};

    fn aws(kind: ErrorKind, code: &str, status: u16) -> Result<(), CallError> {
        let mut error = CallError::new(kind, "x");
        error.aws = Some(Box::new(AwsErrorDetails {
            code: Some(code.into()),
            http_status: Some(status),
            ..Default::default()
        }));
        Err(error)
    }

    #[test]
    fn only_a_refused_identity_is_a_refusal() {
        let cases = [
            (Ok(()), Verdict::Accepted),
            (
                aws(ErrorKind::Misconfigured, "UnrecognizedClientException", 400),
                Verdict::Refused,
            ),
            (
                aws(ErrorKind::Misconfigured, "ExpiredTokenException", 400),
                Verdict::Refused,
            ),
            (
                aws(ErrorKind::Misconfigured, "InvalidSignatureException", 400),
                Verdict::Refused,
            ),
            (
                Err(CallError::new(ErrorKind::NoCredentials, "x")),
                Verdict::Refused,
            ),
            // Authenticated, not allowed this one operation: the pod still
            // serves the operations its role allows.
            (
                aws(ErrorKind::Misconfigured, "AccessDeniedException", 400),
                Verdict::Accepted,
            ),
            (
                aws(ErrorKind::JobNotFound, "JobNotFoundException", 400),
                Verdict::Accepted,
            ),
            (
                aws(ErrorKind::Throttled, "ThrottlingException", 400),
                Verdict::Accepted,
            ),
            (
                Err(CallError::new(ErrorKind::Transport, "x")),
                Verdict::Unknown,
            ),
            (
                Err(CallError::new(ErrorKind::AttemptTimedOut, "x")),
                Verdict::Unknown,
            ),
        ];
        for (result, verdict) in cases {
            assert_eq!(Verdict::of(&result), verdict, "{result:?}");
        }
    }
}
