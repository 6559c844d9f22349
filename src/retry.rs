//! The retry layer: the one owner of retries (the SDK's own are switched off).
//!
//! Transient failures (throttling, 5xx, transport, attempt timeouts) are tried
//! again with exponential backoff and full jitter, up to a cap on attempts and
//! within a process-wide retry budget, so an AWS outage does not turn into a
//! retry storm. No attempt starts that could not finish before the caller's
//! deadline. Every final result is stamped with the number of attempts, and an
//! error that follows an attempt of unknown outcome says so.

use std::{num::NonZeroU32, sync::Arc, time::Duration};

use rand::Rng;
use tokio::time::Instant;
use tower::retry::budget::{Budget, TpsBudget};

use crate::{
    call::{Call, CallError, CallSuccess, ErrorKind},
    metrics::Metrics,
    operation::Operation,
};

/// The least time an attempt is given: a retry whose backoff would leave less
/// than this before the deadline is not started.
pub const MIN_ATTEMPT_TIME: Duration = Duration::from_millis(50);

/// How retries behave; validated at start-up.
#[derive(Clone, Debug)]
pub struct RetrySettings {
    /// Attempts per call, the first included (1 disables retries).
    pub max_attempts: NonZeroU32,
    /// The backoff cap before the first retry; it doubles for each further one.
    pub base_delay: Duration,
    /// The largest backoff cap.
    pub max_delay: Duration,
}

impl RetrySettings {
    /// The backoff cap before retry number `retry` (1-based):
    /// `min(max_delay, base_delay * 2^(retry-1))`.
    pub fn backoff_cap(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.saturating_sub(1));
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }
}

/// Full jitter: a uniformly random delay between zero and the cap.
fn full_jitter(cap: Duration) -> Duration {
    let cap_micros = cap.as_micros().min(u64::MAX as u128) as u64;
    Duration::from_micros(rand::rng().random_range(0..=cap_micros))
}

/// Creates the budget that all calls of the process share: retries may add at
/// most 20% to the calls of the last 10 seconds, plus 10 retries a second so
/// that a quiet gateway can still retry.
pub fn shared_budget() -> Arc<TpsBudget> {
    Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2))
}

/// A `tower::retry::Policy`; the retry layer clones it for every call, so the
/// per-call counters start from zero while the budget stays shared.
#[derive(Clone)]
pub struct RetryPolicy {
    settings: Arc<RetrySettings>,
    budget: Arc<TpsBudget>,
    metrics: Arc<Metrics>,
    attempts: u32,
    earlier_outcome_unknown: bool,
}

impl RetryPolicy {
    pub fn new(settings: RetrySettings, budget: Arc<TpsBudget>, metrics: Arc<Metrics>) -> Self {
        RetryPolicy {
            settings: Arc::new(settings),
            budget,
            metrics,
            attempts: 0,
            earlier_outcome_unknown: false,
        }
    }

    /// Decides whether to try `error`'s call again and how long to wait first.
    /// `None` means the error is final.
    fn next_delay(
        &self,
        method: &'static str,
        deadline: Instant,
        error: &CallError,
    ) -> Option<Duration> {
        if !error.kind.is_transient() || self.attempts >= self.settings.max_attempts.get() {
            return None;
        }
        let delay = full_jitter(self.settings.backoff_cap(self.attempts));
        if Instant::now() + delay + MIN_ATTEMPT_TIME > deadline {
            return None;
        }
        // Withdraw last: a retry that is not going to happen costs no budget.
        if !self.budget.withdraw() {
            self.metrics.record_retry_budget_exhausted(method);
            return None;
        }
        Some(delay)
    }
}

impl<O: Operation> tower::retry::Policy<Call<O>, CallSuccess<O::Output>, CallError>
    for RetryPolicy
{
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        call: &mut Call<O>,
        result: &mut Result<CallSuccess<O::Output>, CallError>,
    ) -> Option<Self::Future> {
        // An attempt that never started (its deadline passed while it
        // waited for a slot) is not counted.
        let started = result.as_ref().map_or_else(|e| e.attempts > 0, |_| true);
        if started {
            self.attempts += 1;
            if self.attempts == 1 {
                self.budget.deposit();
            }
        }
        match result {
            Ok(success) => {
                success.attempts = self.attempts;
                success.earlier_attempt_may_have_applied = self.earlier_outcome_unknown;
                None
            }
            Err(error) => {
                error.attempts = self.attempts;
                error.earlier_attempt_may_have_applied = self.earlier_outcome_unknown;
                self.earlier_outcome_unknown |= error.outcome_unknown;
                // A repeat that AWS might apply twice is the caller's choice.
                if error.outcome_unknown && !O::may_repeat_after_unknown_outcome(&call.request) {
                    return None;
                }
                let delay = self.next_delay(O::ID.name(), call.deadline, error)?;
                Some(tokio::time::sleep(delay))
            }
        }
    }

    fn clone_request(&mut self, call: &Call<O>) -> Option<Call<O>> {
        Some(call.clone())
    }
}

/// Whether a final error means the caller may try again later (and when).
pub fn suggested_retry_delay(error: &CallError, settings: &RetrySettings) -> Option<Duration> {
    match error.kind {
        ErrorKind::RateLimited | ErrorKind::Overloaded | ErrorKind::ShuttingDown => {
            error.retry_after
        }
        kind if kind.is_transient() => Some(settings.max_delay.min(Duration::from_secs(1))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{call::ErrorKind, operations::GetJobDetails};
    use std::sync::Arc as StdArc;
    use tower::retry::Policy;

    fn settings(max_attempts: u32) -> RetrySettings {
        RetrySettings {
            max_attempts: NonZeroU32::new(max_attempts).unwrap(),
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(4),
        }
    }

    fn call(deadline_in: Duration) -> Call<GetJobDetails> {
        Call::new(
            crate::operations::JobRef {
                job_id: "job".into(),
            },
            Instant::now() + deadline_in,
        )
    }

    /// An attempt that was sent and failed, as the forwarder reports it.
    fn failure(
        kind: ErrorKind,
    ) -> Result<CallSuccess<Option<crate::proto::v1::JobDetails>>, CallError> {
        let mut error = CallError::new(kind, "test");
        error.attempts = 1;
        Err(error)
    }

    #[test]
    fn backoff_cap_doubles_up_to_the_maximum() {
        let s = RetrySettings {
            max_attempts: NonZeroU32::new(10).unwrap(),
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(500),
        };
        let caps: Vec<u128> = (1..=5).map(|r| s.backoff_cap(r).as_millis()).collect();
        assert_eq!(caps, [100, 200, 400, 500, 500]);
        assert_eq!(s.backoff_cap(u32::MAX), Duration::from_millis(500));
    }

    #[test]
    fn full_jitter_stays_within_the_cap() {
        let cap = Duration::from_millis(10);
        for _ in 0..1000 {
            assert!(full_jitter(cap) <= cap);
        }
    }

    #[tokio::test]
    async fn transient_errors_are_retried_until_the_attempt_cap() {
        let mut policy =
            RetryPolicy::new(settings(3), shared_budget(), StdArc::new(Metrics::new()));
        let mut c = call(Duration::from_secs(10));
        assert!(
            policy
                .retry(&mut c, &mut failure(ErrorKind::Throttled))
                .is_some()
        );
        assert!(
            policy
                .retry(&mut c, &mut failure(ErrorKind::ServerError))
                .is_some()
        );
        let mut last = failure(ErrorKind::Transport);
        assert!(policy.retry(&mut c, &mut last).is_none());
        assert_eq!(last.unwrap_err().attempts, 3);
    }

    #[tokio::test]
    async fn permanent_errors_are_never_retried() {
        for kind in [
            ErrorKind::Validation,
            ErrorKind::JobNotFound,
            ErrorKind::InvalidJobState,
            ErrorKind::InvalidClientToken,
            ErrorKind::Misconfigured,
        ] {
            let mut policy =
                RetryPolicy::new(settings(3), shared_budget(), StdArc::new(Metrics::new()));
            let mut result = failure(kind);
            assert!(
                policy
                    .retry(&mut call(Duration::from_secs(10)), &mut result)
                    .is_none()
            );
            assert_eq!(result.unwrap_err().attempts, 1);
        }
    }

    #[tokio::test]
    async fn no_retry_that_cannot_finish_before_the_deadline() {
        let mut policy =
            RetryPolicy::new(settings(3), shared_budget(), StdArc::new(Metrics::new()));
        let mut c = call(MIN_ATTEMPT_TIME / 2);
        assert!(
            policy
                .retry(&mut c, &mut failure(ErrorKind::Throttled))
                .is_none()
        );
    }

    #[tokio::test]
    async fn an_exhausted_budget_stops_retries() {
        let budget = StdArc::new(TpsBudget::new(Duration::from_secs(1), 1, 0.0));
        let metrics = StdArc::new(Metrics::new());
        let mut retried = 0;
        for _ in 0..10 {
            let mut policy = RetryPolicy::new(settings(2), budget.clone(), metrics.clone());
            if policy
                .retry(
                    &mut call(Duration::from_secs(10)),
                    &mut failure(ErrorKind::Throttled),
                )
                .is_some()
            {
                retried += 1;
            }
        }
        // One retry a second is the floor; the 0% share adds none.
        assert!(retried <= 2, "retried {retried} times");
        let refused = 10 - retried;
        let text = metrics.encode();
        assert!(
            text.contains(&format!(
                "cpgw_retry_budget_exhausted_total{{method=\"GetJobDetails\"}} {refused}"
            )),
            "{text}"
        );
    }

    #[tokio::test]
    async fn an_error_after_an_unknown_outcome_says_so() {
        let mut policy =
            RetryPolicy::new(settings(3), shared_budget(), StdArc::new(Metrics::new()));
        let mut c = call(Duration::from_secs(10));
        let mut reset = CallError::new(ErrorKind::Transport, "reset");
        reset.outcome_unknown = true;
        reset.attempts = 1;
        assert!(policy.retry(&mut c, &mut Err(reset)).is_some());
        let mut state = failure(ErrorKind::InvalidJobState);
        assert!(policy.retry(&mut c, &mut state).is_none());
        let error = state.unwrap_err();
        assert!(error.earlier_attempt_may_have_applied);
        assert_eq!(error.attempts, 2);
    }

    #[tokio::test]
    async fn an_attempt_that_never_started_is_not_counted() {
        let mut policy =
            RetryPolicy::new(settings(3), shared_budget(), StdArc::new(Metrics::new()));
        let mut c = call(Duration::from_secs(10));
        assert!(
            policy
                .retry(&mut c, &mut failure(ErrorKind::Throttled))
                .is_some()
        );
        // Its deadline passed while it waited for an upstream slot.
        let mut waited = Err(CallError::deadline_exceeded(0));
        assert!(policy.retry(&mut c, &mut waited).is_none());
        assert_eq!(waited.unwrap_err().attempts, 1);
    }

    #[tokio::test]
    async fn success_reports_its_attempt_count() {
        let mut policy =
            RetryPolicy::new(settings(3), shared_budget(), StdArc::new(Metrics::new()));
        let mut c = call(Duration::from_secs(10));
        assert!(
            policy
                .retry(&mut c, &mut failure(ErrorKind::Throttled))
                .is_some()
        );
        let mut ok = Ok(CallSuccess::default());
        assert!(policy.retry(&mut c, &mut ok).is_none());
        assert_eq!(ok.unwrap().attempts, 2);
    }
}
