//! The circuit breaker shared by all instances of one plugin: after
//! `trip_after` consecutive failed calls it opens, calls are refused (the
//! caller applies the plugin's fail mode) until a backoff passes, then one
//! trial call is let through; success closes it, failure doubles the backoff
//! up to its maximum. Lock-free: one atomic load per call while closed.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::limits::FailurePolicy;

/// Breaker state, shared by every instance of a plugin.
pub(crate) struct Breaker {
    policy: FailurePolicy,
    base: Instant,
    /// Consecutive failed calls.
    failures: AtomicU32,
    /// Nanoseconds since `base` until which calls are refused; 0 = closed.
    open_until: AtomicU64,
    /// The current backoff in nanoseconds.
    backoff: AtomicU64,
}

/// What the breaker says about a call.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Make the call.
    Call,
    /// Refuse it: the circuit is open.
    Refuse,
}

impl Breaker {
    pub(crate) fn new(policy: FailurePolicy) -> Self {
        Self {
            backoff: AtomicU64::new(nanos(policy.backoff)),
            policy,
            base: Instant::now(),
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        // +1 so that "now" is never the closed marker 0.
        nanos(self.base.elapsed()).saturating_add(1)
    }

    /// Whether a call may go ahead now.
    pub(crate) fn admit(&self) -> Admit {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return Admit::Call;
        }
        let now = self.now();
        if now < until {
            return Admit::Refuse;
        }
        // Half-open: the first caller to move the deadline makes the trial
        // call; the others keep being refused until it reports.
        let trial_window = now.saturating_add(nanos(self.policy.max_backoff));
        match self.open_until.compare_exchange(
            until,
            trial_window,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => Admit::Call,
            Err(_) => Admit::Refuse,
        }
    }

    /// Records a successful call; returns true if this closed the circuit.
    pub(crate) fn success(&self) -> bool {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if self.open_until.load(Ordering::Acquire) != 0 {
            self.open_until.store(0, Ordering::Release);
            self.backoff
                .store(nanos(self.policy.backoff), Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Records a failed call; returns true if the circuit is (now) open.
    pub(crate) fn failure(&self) -> bool {
        let failures = self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        let was_open = self.open_until.load(Ordering::Acquire) != 0;
        if !was_open && failures < self.policy.trip_after.max(1) {
            return false;
        }
        let backoff = if was_open {
            // A failed trial: back off longer.
            let doubled = self
                .backoff
                .load(Ordering::Relaxed)
                .saturating_mul(2)
                .min(nanos(self.policy.max_backoff));
            self.backoff.store(doubled, Ordering::Relaxed);
            doubled
        } else {
            self.backoff.load(Ordering::Relaxed)
        };
        self.open_until
            .store(self.now().saturating_add(backoff), Ordering::Release);
        true
    }

    /// True while open.
    pub(crate) fn is_open(&self) -> bool {
        self.open_until.load(Ordering::Acquire) != 0
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::FailMode;

    fn policy() -> FailurePolicy {
        FailurePolicy {
            mode: FailMode::Open,
            trip_after: 3,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(4),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn trips_after_consecutive_failures_and_retries_with_backoff() {
        let b = Breaker::new(policy());
        assert!(!b.failure());
        assert!(!b.failure());
        assert!(!b.success(), "a success resets the count");
        assert!(!b.failure());
        assert!(!b.failure());
        assert!(b.failure(), "third consecutive failure trips");
        assert_eq!(b.admit(), Admit::Refuse);
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert_eq!(b.admit(), Admit::Call, "one trial after the backoff");
        assert_eq!(b.admit(), Admit::Refuse, "only one trial at a time");
        assert!(b.failure(), "failed trial reopens");
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(b.admit(), Admit::Refuse, "backoff doubled to 2 s");
        tokio::time::advance(Duration::from_millis(600)).await;
        assert_eq!(b.admit(), Admit::Call);
        assert!(b.success(), "a good trial closes");
        assert_eq!(b.admit(), Admit::Call);
        assert!(!b.is_open());
    }
}
