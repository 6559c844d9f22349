//! The rate-limit layer: one token bucket per CodePipeline operation, shared
//! by every connection and every caller of the process.
//!
//! The limiter lives behind an `Arc` that every clone of the layer's service
//! shares. (A limiter cloned per connection, as `tower::limit::RateLimit`
//! would be, limits each connection instead of the process.)
//!
//! A call that finds the bucket empty *reserves* the next free token and waits
//! for it, so waiters are served in arrival order without a background task.
//! It is refused at once (RESOURCE_EXHAUSTED, with the time to wait) when the
//! token would come after its deadline or when too many calls already wait.

use std::{
    future::Future,
    num::NonZeroU32,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use tokio::time::Instant;

use crate::{
    call::{Call, CallError, ErrorKind},
    operation::{Operation, OperationId},
};

/// Limits per operation; validated at start-up.
#[derive(Clone, Copy, Debug)]
pub struct RateLimitSettings {
    /// Tokens added per second.
    pub per_second: f64,
    /// Bucket size: how many calls may pass at once after a quiet spell.
    pub burst: NonZeroU32,
    /// How many calls may wait for a token at once.
    pub max_waiting: u32,
}

/// A token bucket that lets its level go negative: `-level` tokens are
/// reserved by waiting calls.
#[derive(Debug)]
pub struct TokenBucket {
    settings: RateLimitSettings,
    state: Mutex<BucketState>,
}

#[derive(Debug)]
struct BucketState {
    level: f64,
    updated: Instant,
}

/// The bucket's answer to one call.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Admission {
    /// Go ahead now.
    Now,
    /// A token is reserved: go ahead at this instant.
    At(Instant),
    /// Refused; a token would be free after this long.
    Refused { retry_after: Duration },
}

impl TokenBucket {
    pub fn new(settings: RateLimitSettings, now: Instant) -> Self {
        TokenBucket {
            settings,
            state: Mutex::new(BucketState {
                level: f64::from(settings.burst.get()),
                updated: now,
            }),
        }
    }

    /// Takes or reserves a token for a call that must start by `deadline`.
    pub fn admit(&self, now: Instant, deadline: Instant) -> Admission {
        let mut state = self.state.lock().expect("bucket lock poisoned");
        let elapsed = now.saturating_duration_since(state.updated).as_secs_f64();
        state.level = (state.level + elapsed * self.settings.per_second)
            .min(f64::from(self.settings.burst.get()));
        state.updated = now;

        if state.level >= 1.0 {
            state.level -= 1.0;
            return Admission::Now;
        }
        let wait = Duration::from_secs_f64((1.0 - state.level) / self.settings.per_second);
        let waiting = (-state.level).max(0.0).ceil() as u32;
        if waiting >= self.settings.max_waiting || now + wait > deadline {
            return Admission::Refused { retry_after: wait };
        }
        state.level -= 1.0;
        Admission::At(now + wait)
    }

    /// Gives back a reserved token whose call went away before using it.
    pub fn refund(&self) {
        let mut state = self.state.lock().expect("bucket lock poisoned");
        state.level = (state.level + 1.0).min(f64::from(self.settings.burst.get()));
    }
}

/// One bucket per operation, created up front (indexed by
/// [`OperationId::index`]) so the table is never written after start-up.
#[derive(Debug)]
pub struct RateLimiter {
    buckets: Vec<TokenBucket>,
}

impl RateLimiter {
    pub fn new(settings: RateLimitSettings) -> Self {
        let now = Instant::now();
        RateLimiter {
            buckets: OperationId::ALL
                .iter()
                .map(|_| TokenBucket::new(settings, now))
                .collect(),
        }
    }

    fn bucket(&self, operation: OperationId) -> &TokenBucket {
        // ALL holds every operation, so every index has its bucket.
        &self.buckets[operation.index()]
    }
}

/// Wraps a service with the process-wide [`RateLimiter`].
#[derive(Clone)]
pub struct RateLimitLayer {
    limiter: Arc<RateLimiter>,
}

impl RateLimitLayer {
    pub fn new(limiter: Arc<RateLimiter>) -> Self {
        RateLimitLayer { limiter }
    }
}

impl<S> tower::Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            limiter: self.limiter.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    limiter: Arc<RateLimiter>,
}

/// Refunds a reserved token if the waiting call is dropped (the caller went away).
struct Reservation<'a> {
    bucket: &'a TokenBucket,
    used: bool,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.used {
            self.bucket.refund();
        }
    }
}

impl<O, S> tower::Service<Call<O>> for RateLimit<S>
where
    O: Operation,
    S: tower::Service<Call<O>, Error = CallError> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send,
{
    type Response = S::Response;
    type Error = CallError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, CallError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), CallError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: Call<O>) -> Self::Future {
        let limiter = self.limiter.clone();
        // The ready clone is taken and a fresh one left behind (tower's idiom).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let operation = call.operation();
            let bucket = limiter.bucket(operation);
            match bucket.admit(Instant::now(), call.deadline) {
                Admission::Now => {}
                Admission::At(start) => {
                    let mut reservation = Reservation {
                        bucket,
                        used: false,
                    };
                    tokio::time::sleep_until(start).await;
                    reservation.used = true;
                }
                Admission::Refused { retry_after } => {
                    let mut error = CallError::new(
                        ErrorKind::RateLimited,
                        format!(
                            "the gateway's rate limit for {operation} cannot admit this call \
                             before its deadline; retry after {}ms",
                            retry_after.as_millis().max(1)
                        ),
                    );
                    error.retry_after = Some(retry_after);
                    return Err(error);
                }
            }
            inner.call(call).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(per_second: f64, burst: u32, max_waiting: u32) -> (TokenBucket, Instant) {
        let now = Instant::now();
        let settings = RateLimitSettings {
            per_second,
            burst: NonZeroU32::new(burst).unwrap(),
            max_waiting,
        };
        (TokenBucket::new(settings, now), now)
    }

    const LATER: Duration = Duration::from_secs(3600);

    #[test]
    fn a_full_bucket_admits_a_burst_then_reserves() {
        let (b, now) = bucket(10.0, 3, 5);
        for _ in 0..3 {
            assert_eq!(b.admit(now, now + LATER), Admission::Now);
        }
        assert_eq!(
            b.admit(now, now + LATER),
            Admission::At(now + Duration::from_millis(100))
        );
        assert_eq!(
            b.admit(now, now + LATER),
            Admission::At(now + Duration::from_millis(200))
        );
    }

    #[test]
    fn refills_at_the_configured_rate_up_to_the_burst() {
        let (b, now) = bucket(2.0, 2, 0);
        assert_eq!(b.admit(now, now), Admission::Now);
        assert_eq!(b.admit(now, now), Admission::Now);
        assert!(matches!(b.admit(now, now), Admission::Refused { .. }));
        let later = now + Duration::from_secs(10);
        assert_eq!(b.admit(later, later), Admission::Now);
        assert_eq!(b.admit(later, later), Admission::Now);
        assert!(matches!(b.admit(later, later), Admission::Refused { .. }));
    }

    #[test]
    fn refuses_a_call_whose_token_comes_after_its_deadline() {
        let (b, now) = bucket(1.0, 1, 10);
        assert_eq!(b.admit(now, now), Admission::Now);
        let Admission::Refused { retry_after } = b.admit(now, now + Duration::from_millis(500))
        else {
            panic!("expected a refusal")
        };
        assert_eq!(retry_after, Duration::from_secs(1));
        // A refusal reserves nothing: a patient call still gets the next token.
        assert_eq!(
            b.admit(now, now + LATER),
            Admission::At(now + Duration::from_secs(1))
        );
    }

    #[test]
    fn the_waiting_queue_is_bounded() {
        let (b, now) = bucket(1.0, 1, 2);
        assert_eq!(b.admit(now, now + LATER), Admission::Now);
        assert!(matches!(b.admit(now, now + LATER), Admission::At(_)));
        assert!(matches!(b.admit(now, now + LATER), Admission::At(_)));
        assert!(matches!(
            b.admit(now, now + LATER),
            Admission::Refused { .. }
        ));
    }

    #[test]
    fn a_refund_frees_the_reserved_slot() {
        let (b, now) = bucket(1.0, 1, 1);
        assert_eq!(b.admit(now, now + LATER), Admission::Now);
        assert!(matches!(b.admit(now, now + LATER), Admission::At(_)));
        assert!(matches!(
            b.admit(now, now + LATER),
            Admission::Refused { .. }
        ));
        b.refund();
        assert_eq!(
            b.admit(now, now + LATER),
            Admission::At(now + Duration::from_secs(1))
        );
    }
}
