//! Sending a batch to one output, and again, after a pause, what it failed
//! to take: the retry policy a route has for that output ([`Retry`]:
//! exponential backoff with full jitter, optionally a most attempts and a
//! most time since the first failure). A pause is at least what the output
//! was told to wait ([`Delivery::retry_after`], a webhook's `Retry-After`),
//! capped by the policy's `max`.
//!
//! What counts as a failure worth another try: an error for the whole
//! batch ([`egress::Error`]), nobody to take a message
//! ([`Reject::NoSubscriber`]: no subscriber, no worker, all services
//! ejected) and a failure on one message ([`Reject::Failed`]: a peer's
//! error reply). A message too large for the output is refused for good
//! and not sent again. A shutdown stops the retrying: what was not taken
//! stays refused as it was.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::queue::RouteQueue;
use super::spec::Retry;
use crate::egress::{self, Delivery, Output, Reject, SendFuture};
use crate::message::Message;

/// What became of a batch sent to one output, retries included.
#[derive(Debug)]
pub(crate) struct Sent {
    /// The outcome by position in the batch: each message the output
    /// still refused at the end, with the reason of its last refusal.
    pub(crate) result: Result<Delivery, egress::Error>,
    /// The retry policy gave up on them: they were sent `max_attempts`
    /// times, or `max_elapsed` passed. False for a refusal for good, a
    /// stop, or no policy.
    pub(crate) exhausted: bool,
    /// Sends made of the messages still refused at the end.
    pub(crate) attempts: u32,
    /// What the first and the last failed send said.
    pub(crate) first_error: Option<String>,
    pub(crate) last_error: Option<String>,
    /// Retention asked for the batch back while it was being retried: the
    /// outcome is not final, nothing is to be counted.
    pub(crate) given_back: bool,
}

impl Sent {
    pub(crate) fn once(result: Result<Delivery, egress::Error>) -> Self {
        let error = describe(&result);
        Self {
            result,
            exhausted: false,
            attempts: 1,
            first_error: error.clone(),
            last_error: error,
            given_back: false,
        }
    }
}

/// Whether a refusal is worth another try.
fn retryable(reason: Reject) -> bool {
    matches!(reason, Reject::NoSubscriber | Reject::Failed)
}

/// A one-line account of a failed send, for the dead-letter store.
fn describe(result: &Result<Delivery, egress::Error>) -> Option<String> {
    match result {
        Err(e) => Some(e.to_string()),
        Ok(d) => d.rejections().first().map(|r| match d.detail() {
            Some(detail) => format!("{}: {detail}", r.reason.label()),
            None => r.reason.label().to_owned(),
        }),
    }
}

/// The pause before the next attempt after `attempt` sends failed
/// (counting from 1): uniform from zero up to
/// `min(max, initial * 2^(attempt - 1))`.
pub(crate) fn backoff(policy: &Retry, attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(31);
    let cap = policy
        .initial
        .saturating_mul(1u32 << doublings)
        .min(policy.max);
    cap.mul_f64(fastrand::f64())
}

/// The pause before the next attempt after `attempt` sends failed: the
/// [`backoff`], but at least the peer's `hint` (capped by the policy's
/// `max`, so a peer cannot stall a route for an hour).
pub(crate) fn pause(policy: &Retry, attempt: u32, hint: Option<Duration>) -> Duration {
    let drawn = backoff(policy, attempt);
    match hint {
        Some(hint) => drawn.max(hint.min(policy.max)),
        None => drawn,
    }
}

/// The peer's hint of when to try again, from one send's result.
fn hint_of(result: &Result<Delivery, egress::Error>) -> Option<Duration> {
    result.as_ref().ok().and_then(Delivery::retry_after)
}

/// How far an output must have got with a batch before it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Until {
    /// Taken ([`Output::send`]): a memory route.
    Taken,
    /// Written out of the router's memory ([`Output::send_written`]): a
    /// durable route, which releases the batch from disk on the answer.
    Written,
}

impl Until {
    /// `output`'s send of `batch` that answers this late.
    pub(crate) fn send<'a>(
        self,
        output: &'a Arc<dyn Output>,
        batch: &'a [Message],
    ) -> SendFuture<'a> {
        match self {
            Until::Taken => output.send(batch),
            Until::Written => output.send_written(batch),
        }
    }
}

/// Sends `batch` to `output` (answering per `until`); with a `policy`, sends what it failed to take
/// again after each pause until it is taken, the policy's attempts run out,
/// or a shutdown begins. Tells `retried` how many it sends again each
/// time, by the reason they were refused the time before. With `queue` (a durable route with retention), a pause ends early
/// when retention wants the batch back, and the send gives it up.
///
/// # Cancel safety
/// As [`Output::send`]: the pipeline drops it only when it stops the
/// route.
pub(crate) async fn send(
    output: &Arc<dyn Output>,
    batch: &[Message],
    until: Until,
    policy: Option<Retry>,
    shutting_down: &AtomicBool,
    retried: impl Fn(Reject, u64),
    queue: Option<&RouteQueue>,
) -> Sent {
    let first = until.send(output, batch).await;
    let Some(policy) = policy else {
        return Sent::once(first);
    };
    // Positions (in `batch`) still to be taken, and the reason each was
    // last refused for.
    let mut pending: Vec<(usize, Reject)> = Vec::new();
    let mut delivery = Delivery::accepted();
    let mut whole_error = None;
    absorb(&first, None, batch.len(), &mut pending, &mut delivery);
    if pending.is_empty() {
        return Sent::once(first);
    }
    if let Err(e) = &first {
        whole_error = Some(e.clone());
    }
    let first_error = describe(&first);
    let mut last_error = first_error.clone();
    let mut attempts = 1;
    let mut again: Vec<Message> = Vec::new();
    let mut positions: Vec<usize> = Vec::new();
    let failed_at = tokio::time::Instant::now();
    let mut hint = hint_of(&first);
    let exhausted = loop {
        if !policy.allows(attempts) {
            break true;
        }
        if shutting_down.load(Ordering::Relaxed) {
            break false;
        }
        let mut wait = pause(&policy, attempts, hint);
        if let Some(limit) = policy.max_elapsed {
            let spent = failed_at.elapsed();
            if spent >= limit {
                break true;
            }
            wait = wait.min(limit - spent);
        }
        let pause = tokio::time::sleep(wait);
        match queue {
            None => pause.await,
            Some(q) => tokio::select! {
                () = pause => {}
                () = q.room_wanted() => {}
            },
        }
        if queue.is_some_and(RouteQueue::take_room_wanted) {
            return Sent {
                result: Ok(Delivery::accepted()),
                exhausted: false,
                attempts,
                first_error: None,
                last_error: None,
                given_back: true,
            };
        }
        attempts += 1;
        positions.clear();
        positions.extend(pending.iter().map(|&(i, _)| i));
        again.clear();
        again.extend(positions.iter().map(|&i| batch[i].clone()));
        for reason in [Reject::NoSubscriber, Reject::Failed] {
            let n = pending.iter().filter(|&&(_, r)| r == reason).count();
            if n > 0 {
                retried(reason, n as u64);
            }
        }
        let result = until.send(output, &again).await;
        let before = pending.len();
        pending.clear();
        absorb(
            &result,
            Some(&positions),
            again.len(),
            &mut pending,
            &mut delivery,
        );
        tracing::debug!(
            output = output.name(),
            attempt = attempts,
            sent = before,
            refused = pending.len(),
            "retried a send"
        );
        match &result {
            Err(e) => whole_error = Some(e.clone()),
            Ok(_) => whole_error = None,
        }
        hint = hint_of(&result);
        if let Some(e) = describe(&result) {
            last_error = Some(e);
        }
        if pending.is_empty() {
            break false;
        }
    };
    if exhausted {
        tracing::warn!(
            output = output.name(),
            attempts,
            messages = pending.len(),
            first_error = first_error.as_deref().unwrap_or(""),
            last_error = last_error.as_deref().unwrap_or(""),
            "gave up sending after the retry policy's attempts or time"
        );
    }
    let result = match whole_error {
        // Every message still pending was refused as a whole by the last
        // send, and it was the first batch: report it as the output did.
        Some(e) if pending.len() == batch.len() => Err(e),
        _ => {
            pending.sort_unstable_by_key(|&(i, _)| i);
            for &(i, reason) in &pending {
                delivery.reject(i, reason);
            }
            Ok(delivery)
        }
    };
    Sent {
        result,
        exhausted,
        attempts,
        first_error,
        last_error,
        given_back: false,
    }
}

/// Sorts one send's outcome: refusals for good go into `delivery`, those
/// worth another try into `pending`, by position in the original batch
/// (`positions` maps the send's positions to it; `None`: the send was the
/// batch). A whole-batch error makes every message pending.
fn absorb(
    result: &Result<Delivery, egress::Error>,
    positions: Option<&[usize]>,
    len: usize,
    pending: &mut Vec<(usize, Reject)>,
    delivery: &mut Delivery,
) {
    let original = |k: usize| positions.map_or(k, |p| p[k]);
    match result {
        Err(_) => pending.extend((0..len).map(|k| (original(k), Reject::Failed))),
        Ok(d) => {
            let mut seen = vec![false; len];
            for r in d.rejections() {
                let range = r.messages.start.min(len)..r.messages.end.min(len);
                for (k, was) in seen
                    .iter_mut()
                    .enumerate()
                    .take(range.end)
                    .skip(range.start)
                {
                    if std::mem::replace(was, true) {
                        continue;
                    }
                    if retryable(r.reason) {
                        pending.push((original(k), r.reason));
                    } else {
                        delivery.reject(original(k), r.reason);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::egress::SendFuture;
    use crate::pipeline::testing::msgs;

    /// Refuses each message (by payload) the number of times its script
    /// says, then takes it.
    struct Flaky {
        refusals: Mutex<Vec<u32>>,
        reason: Reject,
        sends: Mutex<Vec<Vec<u8>>>,
    }

    impl Output for Flaky {
        fn name(&self) -> &str {
            "flaky"
        }

        fn send<'a>(&'a self, batch: &'a [Message]) -> SendFuture<'a> {
            let mut d = Delivery::accepted();
            let mut left = self.refusals.lock().expect("lock");
            for (k, m) in batch.iter().enumerate() {
                let n = usize::from(m.payload[0]);
                if left[n] > 0 {
                    left[n] -= 1;
                    d.reject(k, self.reason);
                }
            }
            self.sends
                .lock()
                .expect("lock")
                .push(batch.iter().map(|m| m.payload[0]).collect());
            Box::pin(std::future::ready(Ok(d)))
        }
    }

    fn flaky(refusals: Vec<u32>, reason: Reject) -> Arc<Flaky> {
        Arc::new(Flaky {
            refusals: Mutex::new(refusals),
            reason,
            sends: Mutex::new(Vec::new()),
        })
    }

    fn policy(max_attempts: Option<u32>) -> Retry {
        Retry {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(40),
            max_attempts,
            max_elapsed: None,
        }
    }

    fn counter() -> prometheus::IntCounter {
        prometheus::IntCounter::new("t", "t").expect("valid")
    }

    #[tokio::test(start_paused = true)]
    async fn what_failed_is_sent_again_until_taken() {
        let out = flaky(vec![0, 2, 0, 1], Reject::NoSubscriber);
        let dynout: Arc<dyn Output> = out.clone();
        let retried = counter();
        let sent = send(
            &dynout,
            &msgs("t.x", 0..4),
            Until::Taken,
            Some(policy(None)),
            &AtomicBool::new(false),
            |_, n| retried.inc_by(n),
            None,
        )
        .await;
        assert!(sent.result.expect("delivered").is_complete());
        assert!(!sent.exhausted);
        assert_eq!(
            *out.sends.lock().expect("lock"),
            vec![vec![0, 1, 2, 3], vec![1, 3], vec![1]],
            "only the refused are sent again, in order"
        );
        assert_eq!(retried.get(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_run_out_and_refusals_for_good_are_not_retried() {
        let out = flaky(vec![5, 0, 5], Reject::Failed);
        let dynout: Arc<dyn Output> = out.clone();
        let sent = send(
            &dynout,
            &msgs("t.x", 0..3),
            Until::Taken,
            Some(policy(Some(3))),
            &AtomicBool::new(false),
            |_, n| counter().inc_by(n),
            None,
        )
        .await;
        assert!(sent.exhausted);
        assert_eq!(sent.attempts, 3);
        assert_eq!(sent.last_error.as_deref(), Some("failed"));
        assert_eq!(out.sends.lock().expect("lock").len(), 3, "three attempts");
        let d = sent.result.expect("a delivery");
        let refused: Vec<usize> = d
            .rejections()
            .iter()
            .flat_map(|r| r.messages.clone())
            .collect();
        assert_eq!(refused, vec![0, 2]);

        let too_large = flaky(vec![5], Reject::TooLarge);
        let dynout: Arc<dyn Output> = too_large.clone();
        let sent = send(
            &dynout,
            &msgs("t.x", 0..1),
            Until::Taken,
            Some(policy(None)),
            &AtomicBool::new(false),
            |_, n| counter().inc_by(n),
            None,
        )
        .await;
        assert!(!sent.exhausted);
        assert_eq!(
            too_large.sends.lock().expect("lock").len(),
            1,
            "too large is final"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_shutdown_stops_the_retrying() {
        let out = flaky(vec![9], Reject::NoSubscriber);
        let dynout: Arc<dyn Output> = out.clone();
        let sent = send(
            &dynout,
            &msgs("t.x", 0..1),
            Until::Taken,
            Some(policy(None)),
            &AtomicBool::new(true),
            |_, n| counter().inc_by(n),
            None,
        )
        .await;
        assert_eq!(out.sends.lock().expect("lock").len(), 1);
        assert!(!sent.exhausted);
    }

    /// Refuses every message as failed, with a `Retry-After` hint, and
    /// records when (on the paused clock) each send came.
    struct Hinting {
        hint: Option<Duration>,
        at: Mutex<Vec<tokio::time::Instant>>,
    }

    impl Output for Hinting {
        fn name(&self) -> &str {
            "hinting"
        }

        fn send<'a>(&'a self, batch: &'a [Message]) -> SendFuture<'a> {
            self.at
                .lock()
                .expect("lock")
                .push(tokio::time::Instant::now());
            let mut d = Delivery::rejected_all(batch.len(), Reject::Failed);
            if let Some(h) = self.hint {
                d.set_retry_after(h);
            }
            Box::pin(std::future::ready(Ok(d)))
        }
    }

    async fn sends_apart(hint: Option<Duration>, policy: Retry) -> (Sent, Vec<Duration>) {
        let out = Arc::new(Hinting {
            hint,
            at: Mutex::new(Vec::new()),
        });
        let dynout: Arc<dyn Output> = out.clone();
        let sent = send(
            &dynout,
            &msgs("t.x", 0..1),
            Until::Taken,
            Some(policy),
            &AtomicBool::new(false),
            |_, _| {},
            None,
        )
        .await;
        let at = out.at.lock().expect("lock").clone();
        (sent, at.windows(2).map(|w| w[1] - w[0]).collect())
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_hint_sets_the_least_pause_capped_by_max() {
        let p = Retry {
            max: Duration::from_secs(5),
            ..policy(Some(4))
        };
        let (sent, gaps) = sends_apart(Some(Duration::from_secs(2)), p).await;
        assert!(sent.exhausted);
        assert_eq!(gaps.len(), 3);
        for g in &gaps {
            assert!(*g >= Duration::from_secs(2), "{gaps:?}");
            assert!(*g <= Duration::from_secs(5), "{gaps:?}");
        }
        // A hint past `max` is cut to `max`.
        let (_, gaps) = sends_apart(Some(Duration::from_secs(3600)), p).await;
        assert!(
            gaps.iter().all(|g| *g == Duration::from_secs(5)),
            "{gaps:?}"
        );
        // No hint: the backoff alone, at most 10ms, 20ms, 40ms.
        let (_, gaps) = sends_apart(None, policy(Some(4))).await;
        assert!(
            gaps.iter().all(|g| *g <= Duration::from_millis(40)),
            "{gaps:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn max_elapsed_ends_the_retrying_as_exhausted() {
        let p = Retry {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(1),
            max_attempts: None,
            max_elapsed: Some(Duration::from_millis(3500)),
        };
        let (sent, gaps) = sends_apart(Some(Duration::from_secs(1)), p).await;
        assert!(sent.exhausted);
        // Attempts at 0, 1, 2, 3 and (the last pause cut short) 3.5s.
        assert_eq!(sent.attempts, 5, "{gaps:?}");
        assert_eq!(gaps.last().copied(), Some(Duration::from_millis(500)));
        let total: Duration = gaps.iter().sum();
        assert_eq!(total, Duration::from_millis(3500));
    }

    #[test]
    fn pauses_honour_the_hint_within_max() {
        let p = policy(None);
        assert_eq!(pause(&p, 1, Some(Duration::from_secs(9))), p.max);
        assert!(pause(&p, 1, Some(Duration::from_millis(30))) >= Duration::from_millis(30));
        assert!(pause(&p, 1, None) <= p.initial);
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let p = policy(None);
        for attempt in 1..40 {
            let cap = Duration::from_millis(10 * (1u64 << (attempt - 1).min(2))).min(p.max);
            let b = backoff(&p, attempt);
            assert!(b <= cap, "attempt {attempt}: {b:?} > {cap:?}");
        }
        let draws: std::collections::BTreeSet<_> = (0..20).map(|_| backoff(&p, 3)).collect();
        assert!(draws.len() > 1, "jittered");
    }
}
