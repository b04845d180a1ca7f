//! The outcomes of a durable route whose targets each have their own lane
//! (cursor), counted once per message.
//!
//! Each lane sends the route's messages to its one output at its own pace,
//! so a message's outcome is known only once every lane has passed it:
//! when the store releases it. Until then the lanes note here what is not
//! a plain delivery, by sequence number: a refusal (the first one noted
//! wins, as a memory route counts the first refusing target), or that the
//! primary lane (the first target's) has already counted the message
//! itself (a plugin filtered, answered, dropped or dead-lettered it). At a
//! release, every released sequence number with a note counts as noted,
//! and every other one as delivered.
//!
//! Only what is not a plain delivery takes room, and the room is bounded:
//! past [`Tally::MAX`] notes, a lane that is not the slowest waits for the
//! slowest to catch up before it takes more (so the lanes stay within that
//! many noted messages of each other, not independent without limit).

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

use super::metrics::DropReason;

/// What a lane noted about one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    /// Counted already (by the primary lane's plugin stage).
    Counted,
    /// Refused by a target, or lost to damage on disk.
    Dropped(DropReason),
    /// Put in the dead-letter store for a target.
    DeadLettered,
}

/// The notes of one route, from its head on.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    notes: Mutex<BTreeMap<u64, Fate>>,
    /// Woken at each release that removes notes.
    room: Notify,
}

/// What a release counted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) delivered: u64,
    pub(crate) dead_lettered: u64,
    pub(crate) dropped: Vec<(DropReason, u64)>,
}

impl Tally {
    /// Notes past which a lane ahead of the slowest waits.
    pub(crate) const MAX: usize = 1 << 18;

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Fate>> {
        self.notes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes `fate` for `seq` unless it has a note already.
    pub(crate) fn note(&self, seq: u64, fate: Fate) {
        self.lock().entry(seq).or_insert(fate);
    }

    /// Notes `fate` for each of `seqs` that has no note yet.
    pub(crate) fn note_all(&self, seqs: impl IntoIterator<Item = u64>, fate: Fate) {
        let mut notes = self.lock();
        for seq in seqs {
            notes.entry(seq).or_insert(fate);
        }
    }

    /// How many notes it holds.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Waits until it holds at most [`Tally::MAX`] notes, or `slowest`
    /// says the caller is the slowest lane (which must go on, or nobody
    /// would release anything).
    pub(crate) async fn room(&self, slowest: impl Fn() -> bool) {
        loop {
            let notified = self.room.notified();
            if self.len() <= Self::MAX || slowest() {
                return;
            }
            notified.await;
        }
    }

    /// Counts the released sequence numbers `range`: each noted one as
    /// noted (a [`Fate::Counted`] one not again), the rest as delivered,
    /// or, with `rest`, as dropped for it (records retention dropped).
    pub(crate) fn release(&self, range: Range<u64>, rest: Option<DropReason>) -> Counts {
        let mut counts = Counts::default();
        if range.is_empty() {
            return counts;
        }
        let released = {
            let mut notes = self.lock();
            let rest = notes.split_off(&range.end);
            std::mem::replace(&mut *notes, rest)
        };
        let mut noted = 0;
        let mut dropped = [0u64; DropReason::ALL.len()];
        for (seq, fate) in &released {
            if *seq < range.start {
                // Below the head: released before (cannot happen; such a
                // note is dropped, not counted twice).
                continue;
            }
            noted += 1;
            match fate {
                Fate::Counted => {}
                Fate::Dropped(reason) => dropped[reason.index()] += 1,
                Fate::DeadLettered => counts.dead_lettered += 1,
            }
        }
        let unnoted = (range.end - range.start) - noted;
        match rest {
            None => counts.delivered = unnoted,
            Some(reason) => dropped[reason.index()] += unnoted,
        }
        counts.dropped = DropReason::ALL
            .iter()
            .filter(|r| dropped[r.index()] > 0)
            .map(|r| (*r, dropped[r.index()]))
            .collect();
        if !released.is_empty() {
            self.room.notify_waiters();
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_released_message_counts_once_first_note_wins() {
        let t = Tally::default();
        t.note(3, Fate::Dropped(DropReason::NoSubscriber));
        t.note(3, Fate::Dropped(DropReason::TooLarge));
        t.note_all([5, 6], Fate::Counted);
        t.note(9, Fate::Dropped(DropReason::OutputError));
        let counts = t.release(0..8, None);
        assert_eq!(
            counts,
            Counts {
                delivered: 5,
                dead_lettered: 0,
                dropped: vec![(DropReason::NoSubscriber, 1)],
            }
        );
        assert_eq!(t.len(), 1, "9 is not released yet");
        let counts = t.release(8..10, Some(DropReason::Retention));
        assert_eq!(counts.delivered, 0);
        assert_eq!(
            counts.dropped,
            vec![(DropReason::OutputError, 1), (DropReason::Retention, 1)]
        );
        assert_eq!(t.len(), 0);
    }

    #[tokio::test]
    async fn a_lane_ahead_waits_for_room_the_slowest_does_not() {
        let t = std::sync::Arc::new(Tally::default());
        t.note_all(0..(Tally::MAX as u64 + 10), Fate::Counted);
        t.room(|| true).await;
        let waiter = {
            let t = std::sync::Arc::clone(&t);
            tokio::spawn(async move { t.room(|| false).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        t.release(0..100, None);
        tokio::time::timeout(std::time::Duration::from_secs(30), waiter)
            .await
            .expect("woken by the release")
            .expect("joins");
    }
}
