//! Turning a burst of events into one batch: after the first relevant
//! event, wait for a quiet period, but never past a cap.
//!
//! ```text
//! events:   x  x x   x                   (relevant)      o  (ignored)
//!           |<- debounce ->|  ...  restarts on each x; o does not restart it
//!           |<------------- max_delay ------------->|    the hard cap
//! ```

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Settings;

/// Waits for the first event that `absorb` takes as relevant, then keeps
/// absorbing until `settings.debounce` passes with no relevant event or
/// `settings.max_delay` has passed since the first one, and returns the
/// batch. `absorb` adds what an event means to the batch and says whether it
/// was relevant. Returns `None` once the channel is closed and drained with
/// no batch started. Time comes from `tokio::time`, so a paused clock
/// drives it in tests.
///
/// # Cancel safety
/// Cancel safe between batches; cancelling mid-batch loses the batch (the
/// events stay consumed).
pub(super) async fn gather<E, B: Default>(
    rx: &mut mpsc::Receiver<E>,
    settings: &Settings,
    mut absorb: impl FnMut(E, &mut B) -> bool,
) -> Option<B> {
    let mut batch = B::default();
    loop {
        let event = rx.recv().await?;
        if absorb(event, &mut batch) {
            break;
        }
    }
    let cap = Instant::now() + settings.max_delay;
    let mut deadline = (Instant::now() + settings.debounce).min(cap);
    loop {
        tokio::select! {
            // The deadline first: events that queued up behind it start the
            // next batch rather than stretching this one past its cap.
            biased;
            () = tokio::time::sleep_until(deadline) => return Some(batch),
            event = rx.recv() => match event {
                Some(event) => {
                    if absorb(event, &mut batch) {
                        deadline = (Instant::now() + settings.debounce).min(cap);
                    }
                }
                None => return Some(batch),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MS: Duration = Duration::from_millis(1);

    /// Events are numbers; even ones are relevant and collected.
    fn absorb(event: u32, batch: &mut Vec<u32>) -> bool {
        let relevant = event.is_multiple_of(2);
        if relevant {
            batch.push(event);
        }
        relevant
    }

    /// Sends each `(delay before it, event)` from a task on the paused clock.
    fn feed(events: Vec<(Duration, u32)>) -> mpsc::Receiver<u32> {
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            for (delay, event) in events {
                tokio::time::sleep(delay).await;
                if tx.send(event).await.is_err() {
                    return;
                }
            }
            // Keep the channel open: a closed channel would end the batch.
            std::future::pending::<()>().await;
        });
        rx
    }

    #[tokio::test(start_paused = true)]
    async fn a_single_event_waits_out_the_debounce() {
        let mut rx = feed(vec![(10 * MS, 2)]);
        let started = Instant::now();
        let batch = gather(&mut rx, &Settings::default(), absorb).await;
        assert_eq!(batch, Some(vec![2]));
        assert_eq!(started.elapsed(), 210 * MS);
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_event_within_the_debounce_extends_it() {
        // A truncated half-write, then the rest 100 ms later.
        let mut rx = feed(vec![(Duration::ZERO, 2), (100 * MS, 4)]);
        let started = Instant::now();
        let batch = gather(&mut rx, &Settings::default(), absorb).await;
        assert_eq!(batch, Some(vec![2, 4]));
        assert_eq!(started.elapsed(), 300 * MS);
    }

    #[tokio::test(start_paused = true)]
    async fn irrelevant_events_neither_start_nor_extend_a_batch() {
        let mut rx = feed(vec![
            (Duration::ZERO, 1),
            (50 * MS, 2),
            (150 * MS, 3),
            (150 * MS, 5),
        ]);
        let started = Instant::now();
        let batch = gather(&mut rx, &Settings::default(), absorb).await;
        assert_eq!(batch, Some(vec![2]));
        assert_eq!(started.elapsed(), 250 * MS);
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_stream_is_cut_at_the_cap() {
        // 50 saves, 20 ms apart.
        let events = (0..50).map(|i| (20 * MS, i * 2)).collect();
        let mut rx = feed(events);
        let started = Instant::now();
        let first = gather(&mut rx, &Settings::default(), absorb)
            .await
            .expect("first batch");
        // First event at 20 ms, cap 1 s later.
        assert_eq!(started.elapsed(), 1020 * MS);
        assert_eq!(first.len(), 50, "events up to the cap: {first:?}");
        let more = tokio::time::timeout(
            Duration::from_secs(10),
            gather(&mut rx, &Settings::default(), absorb),
        )
        .await;
        assert!(more.is_err(), "no second batch: {more:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_longer_stream_gives_one_batch_per_cap_then_one_after_the_last() {
        // 75 events, 20 ms apart: 20 ms .. 1500 ms.
        let events = (0..75).map(|i| (20 * MS, i * 2)).collect();
        let mut rx = feed(events);
        let started = Instant::now();
        let first = gather(&mut rx, &Settings::default(), absorb)
            .await
            .expect("first batch");
        assert_eq!(started.elapsed(), 1020 * MS);
        let second = gather(&mut rx, &Settings::default(), absorb)
            .await
            .expect("second batch");
        // The last event at 1500 ms, then 200 ms of quiet.
        assert_eq!(started.elapsed(), 1700 * MS);
        assert_eq!(first.len() + second.len(), 75);
        assert_eq!(second.last(), Some(&148));
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_channel_ends_the_batch_and_then_the_loop() {
        let (tx, mut rx) = mpsc::channel(4);
        tx.send(2).await.expect("send");
        drop(tx);
        let settings = Settings::default();
        assert_eq!(gather(&mut rx, &settings, absorb).await, Some(vec![2]));
        assert_eq!(gather(&mut rx, &settings, absorb).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cap_below_the_debounce_wins() {
        let mut rx = feed(vec![(Duration::ZERO, 2)]);
        let settings = Settings {
            debounce: 500 * MS,
            max_delay: 100 * MS,
        };
        let started = Instant::now();
        assert_eq!(gather(&mut rx, &settings, absorb).await, Some(vec![2]));
        assert_eq!(started.elapsed(), 100 * MS);
    }
}
