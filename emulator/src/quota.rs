//! A per-operation request quota, as CodePipeline enforces one per account
//! and region: each operation has a token bucket of `per_second` tokens a
//! second holding at most one second's worth, and a request that finds it
//! empty is answered `ThrottlingException` without touching job state.
//!
//! AWS does not publish how its buckets are shaped; one second of burst is
//! the emulator's assumption. Off unless set ([`crate::Emulator::set_quota`]
//! or `emulator --quota-per-second`).

use std::{collections::HashMap, time::Instant};

#[derive(Default)]
pub(crate) struct Quota {
    per_second: Option<f64>,
    buckets: HashMap<String, (f64, Instant)>,
}

impl Quota {
    pub fn set(&mut self, per_second: Option<f64>) {
        self.per_second = per_second.filter(|q| q.is_finite() && *q > 0.0);
        self.buckets.clear();
    }

    /// Takes a token for one request of `operation`; `false`: throttle it.
    pub fn admit(&mut self, operation: &str, now: Instant) -> bool {
        let Some(rate) = self.per_second else {
            return true;
        };
        let capacity = rate.max(1.0);
        let (level, updated) = self
            .buckets
            .entry(operation.to_owned())
            .or_insert((capacity, now));
        let elapsed = now.saturating_duration_since(*updated).as_secs_f64();
        *level = (*level + elapsed * rate).min(capacity);
        *updated = now;
        if *level >= 1.0 {
            *level -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn admits_the_quota_per_operation_and_throttles_the_rest() {
        let mut quota = Quota::default();
        let now = Instant::now();
        assert!(
            (0..100).all(|_| quota.admit("GetJobDetails", now)),
            "off by default"
        );
        quota.set(Some(5.0));
        let admitted = (0..20)
            .filter(|_| quota.admit("GetJobDetails", now))
            .count();
        assert_eq!(admitted, 5, "one second of burst");
        assert!(
            quota.admit("PollForJobs", now),
            "each operation has its own"
        );
        let later = now + Duration::from_millis(400);
        let admitted = (0..20)
            .filter(|_| quota.admit("GetJobDetails", later))
            .count();
        assert_eq!(admitted, 2, "refilled at 5 a second");
    }
}
