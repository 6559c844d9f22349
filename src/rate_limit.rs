//! The rate-limit layer: one token bucket per CodePipeline operation, shared
//! by every connection and every caller of the process, in front of every
//! attempt sent to AWS (retries included).
//!
//! The limiter lives behind an `Arc` that every clone of the layer's service
//! shares. (A limiter cloned per connection, as `tower::limit::RateLimit`
//! would be, limits each connection instead of the process.)
//!
//! A call that finds the bucket empty *reserves* the next free token and waits
//! for it, so waiters are served in arrival order without a background task.
//! It is refused at once (RESOURCE_EXHAUSTED, with the time to wait) when the
//! token would come after its deadline or when too many calls already wait.
//!
//! **Adaptive** (on by default): replicas share nothing but AWS, so
//! CodePipeline's throttling is the only signal that they share. Each bucket's
//! rate backs off multiplicatively when CodePipeline throttles and grows back
//! along a cubic curve when it does not, never above the configured rate: the
//! client-side rate limiter of the AWS SDKs' `adaptive` retry mode (CUBIC,
//! β = 0.7, a send rate measured in half-second buckets and smoothed), with
//! four changes measured by `benches/adaptive.rs` and `benches/soak.rs`: the
//! curve's scale is relative to the rate (back at it 4 s after a cut), it
//! probes past that rate at 5 % a second before the cubic term takes over,
//! throttles within a second of a cut do not cut again, and a sporadic
//! throttle (fewer than 2, or under 5 % of the last second's answers) does
//! not cut at all.
//! N replicas, each configured above the account's quota, so settle near the
//! quota together without talking to each other.

use std::{
    collections::VecDeque,
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
    metrics::Metrics,
    operation::{Operation, OperationId},
};

/// Limits per operation; validated at start-up.
#[derive(Clone, Copy, Debug)]
pub struct RateLimitSettings {
    /// Tokens added per second: the ceiling when adaptive.
    pub per_second: f64,
    /// Bucket size: how many calls may pass at once after a quiet spell.
    pub burst: NonZeroU32,
    /// How many calls may wait for a token at once.
    pub max_waiting: u32,
    /// Back off when CodePipeline throttles.
    pub adaptive: bool,
}

/// The multiplicative decrease on a throttle.
const BETA: f64 = 0.7;
/// How fast the rate grows back, relative to the rate at the last throttle
/// (per s³): back at that rate 4 s after a cut, whatever its size. (The SDKs'
/// absolute 0.4 requests/s per s³ made four small replicas overshoot a
/// 40/s quota together every few seconds.)
const SCALE: f64 = (1.0 - BETA) / 64.0;
/// Past the rate of the last throttle, growth per second, relative to it.
const PROBE: f64 = 0.05;
/// The least rate an adaptive bucket falls to.
const MIN_RATE: f64 = 0.5;
/// Throttles within this many seconds of a cut answer attempts sent before
/// it: they do not cut again (TCP, likewise, reacts once per round trip).
const CUT_COOLDOWN: f64 = 1.0;
/// A throttle cuts the rate only when it is not alone: at least
/// [`THROTTLE_MIN`] throttles and [`THROTTLE_SHARE`] of the answers in the
/// last [`THROTTLE_WINDOW`] seconds. A sporadic throttle is the retry layer's
/// business; a quota overshoot throttles a share of every second.
const THROTTLE_WINDOW: f64 = 1.0;
const THROTTLE_MIN: usize = 2;
const THROTTLE_SHARE: f64 = 0.05;
/// The send rate is measured over buckets of this many seconds...
const MEASURE_BUCKET: f64 = 0.5;
/// ...and smoothed with this weight for the newest bucket.
const SMOOTHING: f64 = 0.8;

/// A token bucket that lets its level go negative: `-level` tokens are
/// reserved by waiting calls.
#[derive(Debug)]
pub struct TokenBucket {
    settings: RateLimitSettings,
    started: Instant,
    state: Mutex<BucketState>,
}

#[derive(Debug)]
struct BucketState {
    level: f64,
    updated: Instant,
    /// The current fill rate: `settings.per_second` until AWS throttles.
    rate: f64,
    adapting: Option<Cubic>,
    measured: SendRate,
    recent: Recent,
}

/// The cubic curve the rate follows back up after a throttle.
#[derive(Clone, Copy, Debug)]
struct Cubic {
    /// The rate when AWS last throttled.
    max: f64,
    /// Seconds from the throttle until the curve is back at `max`.
    k: f64,
    /// When AWS last throttled (seconds since the bucket started).
    at: f64,
}

impl Cubic {
    fn after_throttle(max: f64, at: f64) -> Cubic {
        Cubic {
            max,
            k: ((1.0 - BETA) / SCALE).cbrt(),
            at,
        }
    }

    fn rate_at(&self, now: f64) -> f64 {
        let since = now - self.at - self.k;
        if since < 0.0 {
            self.max * (1.0 + SCALE * since.powi(3))
        } else {
            // Past the old maximum, probe slowly at first (N replicas
            // probing together overshoot N times as fast), then faster, so
            // that capacity freed elsewhere is found within seconds.
            self.max * (1.0 + PROBE * since + SCALE / 8.0 * since.powi(3))
        }
    }
}

/// The attempts of the last [`THROTTLE_WINDOW`] seconds: when each was
/// answered, and whether it was throttled.
#[derive(Debug, Default)]
struct Recent {
    answers: VecDeque<(f64, bool)>,
    throttled: usize,
}

impl Recent {
    /// Records one answer; returns the share of the window's answers that
    /// were throttled and how many.
    fn record(&mut self, now: f64, throttled: bool) -> (f64, usize) {
        self.answers.push_back((now, throttled));
        self.throttled += usize::from(throttled);
        while let Some(&(at, was_throttled)) = self.answers.front() {
            if now - at <= THROTTLE_WINDOW {
                break;
            }
            self.answers.pop_front();
            self.throttled -= usize::from(was_throttled);
        }
        (
            self.throttled as f64 / self.answers.len() as f64,
            self.throttled,
        )
    }
}

/// The rate at which attempts are actually sent, smoothed.
#[derive(Debug, Default)]
struct SendRate {
    smoothed: f64,
    count: f64,
    bucket_start: f64,
}

impl SendRate {
    fn record(&mut self, now: f64) {
        self.count += 1.0;
        let bucket = (now / MEASURE_BUCKET).floor() * MEASURE_BUCKET;
        if bucket > self.bucket_start {
            let rate = self.count / (bucket - self.bucket_start);
            self.smoothed = rate * SMOOTHING + self.smoothed * (1.0 - SMOOTHING);
            self.count = 0.0;
            self.bucket_start = bucket;
        }
    }
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
            started: now,
            state: Mutex::new(BucketState {
                level: f64::from(settings.burst.get()),
                updated: now,
                rate: settings.per_second,
                adapting: None,
                measured: SendRate::default(),
                recent: Recent::default(),
            }),
        }
    }

    /// While adapting, a burst is at most one second at the current rate.
    fn capacity(&self, state: &BucketState) -> f64 {
        let burst = f64::from(self.settings.burst.get());
        match state.adapting {
            Some(_) => burst.min(state.rate.max(1.0)),
            None => burst,
        }
    }

    /// Takes or reserves a token for a call that must start by `deadline`.
    pub fn admit(&self, now: Instant, deadline: Instant) -> Admission {
        let mut state = self.state.lock().expect("bucket lock poisoned");
        let elapsed = now.saturating_duration_since(state.updated).as_secs_f64();
        let capacity = self.capacity(&state);
        state.level = (state.level + elapsed * state.rate).min(capacity);
        state.updated = now;

        if state.level >= 1.0 {
            state.level -= 1.0;
            return Admission::Now;
        }
        let wait = Duration::from_secs_f64((1.0 - state.level) / state.rate);
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
        let capacity = self.capacity(&state);
        state.level = (state.level + 1.0).min(capacity);
    }

    /// Learns from one attempt's answer: throttled or not. Returns the rate
    /// now in force.
    pub fn observe(&self, now: Instant, throttled: bool) -> f64 {
        let mut state = self.state.lock().expect("bucket lock poisoned");
        if !self.settings.adaptive {
            return state.rate;
        }
        let t = now.saturating_duration_since(self.started).as_secs_f64();
        state.measured.record(t);
        let (share, throttles) = state.recent.record(t, throttled);
        let measured = state.measured.smoothed;
        let ceiling = self.settings.per_second;
        let recently_cut = state
            .adapting
            .is_some_and(|cubic| t - cubic.at < CUT_COOLDOWN);
        let sporadic = throttles < THROTTLE_MIN || share < THROTTLE_SHARE;
        if throttled && (recently_cut || sporadic) {
            return state.rate;
        }
        let next = if throttled {
            // Cut from what is really sent, not from an unused ceiling.
            let basis = if measured > 0.0 {
                measured.min(state.rate)
            } else {
                state.rate
            };
            state.adapting = Some(Cubic::after_throttle(basis, t));
            basis * BETA
        } else {
            match state.adapting {
                None => return state.rate,
                // Never far above what is actually sent.
                Some(cubic) => cubic.rate_at(t).min(2.0 * measured.max(MIN_RATE)),
            }
        };
        state.rate = next.clamp(MIN_RATE.min(ceiling), ceiling);
        if !throttled && state.rate >= ceiling {
            // Back at the ceiling: the configured limit alone applies again.
            state.adapting = None;
        }
        state.rate
    }

    /// The rate now in force.
    pub fn rate(&self) -> f64 {
        self.state.lock().expect("bucket lock poisoned").rate
    }
}

/// One bucket per operation, created up front (indexed by
/// [`OperationId::index`]) so the table is never written after start-up.
pub struct RateLimiter {
    buckets: Vec<TokenBucket>,
    metrics: Arc<Metrics>,
    /// The target whose calls these buckets pace: its gauge's label.
    target: &'static str,
}

impl RateLimiter {
    pub fn new(settings: RateLimitSettings, target: &'static str, metrics: Arc<Metrics>) -> Self {
        let now = Instant::now();
        for operation in OperationId::ALL {
            metrics.set_rate_limit(target, operation.name(), settings.per_second);
        }
        RateLimiter {
            target,
            buckets: OperationId::ALL
                .iter()
                .map(|_| TokenBucket::new(settings, now))
                .collect(),
            metrics,
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
            let asked = Instant::now();
            match bucket.admit(asked, call.deadline) {
                Admission::Now => limiter
                    .metrics
                    .record_rate_limit_wait(operation.name(), Duration::ZERO),
                Admission::At(start) => {
                    let mut reservation = Reservation {
                        bucket,
                        used: false,
                    };
                    tokio::time::sleep_until(start).await;
                    reservation.used = true;
                    limiter
                        .metrics
                        .record_rate_limit_wait(operation.name(), asked.elapsed());
                }
                Admission::Refused { retry_after } => {
                    limiter.metrics.record_rate_limit_refusal(operation.name());
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
            let result = inner.call(call).await;
            // An attempt that reached AWS teaches the adaptive rate.
            let throttled = match &result {
                Ok(_) => Some(false),
                Err(error) if error.attempts == 0 => None,
                Err(error) => Some(error.kind == ErrorKind::Throttled),
            };
            if let Some(throttled) = throttled {
                let before = bucket.rate();
                let rate = bucket.observe(Instant::now(), throttled);
                // The gauge's label lookup only when the rate moved.
                if rate != before {
                    limiter
                        .metrics
                        .set_rate_limit(limiter.target, operation.name(), rate);
                }
            }
            result
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
            adaptive: true,
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

    #[test]
    fn throttling_cuts_the_rate_and_quiet_grows_it_back_to_the_ceiling() {
        let (b, start) = bucket(100.0, 10, 10);
        // 40 attempts a second are really sent, then AWS throttles.
        let mut now = start;
        for _ in 0..80 {
            now += Duration::from_millis(25);
            b.observe(now, false);
        }
        assert_eq!(b.rate(), 100.0, "no throttle, no change");
        assert_eq!(
            b.observe(now, true),
            100.0,
            "one throttle alone is sporadic"
        );
        for _ in 0..3 {
            now += Duration::from_millis(1);
            b.observe(now, true);
        }
        let cut = b.rate();
        assert!(
            (20.0..=35.0).contains(&cut),
            "cut to 0.7 x the measured ~40/s, not the 100/s ceiling: {cut}"
        );
        // Throttles right after a cut answer attempts sent before it.
        assert_eq!(b.observe(now + Duration::from_millis(25), true), cut);
        // Throttles a while later cut again.
        now += Duration::from_millis(1500);
        for _ in 0..3 {
            now += Duration::from_millis(1);
            b.observe(now, true);
        }
        let again = b.rate();
        assert!(again < cut, "{again} < {cut}");
        // Quiet: the curve climbs back, never past the ceiling, and stops
        // adapting there.
        let mut rates = Vec::new();
        for _ in 0..(60 * 100) {
            now += Duration::from_millis(10);
            rates.push(b.observe(now, false));
        }
        assert!(rates.windows(2).all(|w| w[1] >= w[0] - 1e-9), "monotonic");
        assert_eq!(b.rate(), 100.0);
        assert!(b.state.lock().unwrap().adapting.is_none());
    }

    #[test]
    fn a_fixed_limit_ignores_throttling() {
        let now = Instant::now();
        let settings = RateLimitSettings {
            per_second: 10.0,
            burst: NonZeroU32::new(1).unwrap(),
            max_waiting: 1,
            adaptive: false,
        };
        let b = TokenBucket::new(settings, now);
        assert_eq!(b.observe(now, true), 10.0);
    }

    #[test]
    fn while_adapting_the_burst_is_one_second_at_the_current_rate() {
        let (b, now) = bucket(100.0, 50, 0);
        b.observe(now, true);
        b.observe(now, true);
        let rate = b.rate();
        assert!(rate < 100.0);
        let later = now + Duration::from_secs(30);
        let mut admitted = 0;
        while b.admit(later, later) == Admission::Now {
            admitted += 1;
        }
        assert!(f64::from(admitted) <= rate.max(1.0), "{admitted} > {rate}");
    }

    #[test]
    fn sporadic_throttles_do_not_cut() {
        let (b, start) = bucket(100.0, 10, 10);
        let mut now = start;
        // One attempt in a hundred throttled, at 100 a second, for a minute.
        for i in 0..6_000 {
            now += Duration::from_millis(10);
            b.observe(now, i % 100 == 0);
        }
        assert_eq!(b.rate(), 100.0);
    }
}
