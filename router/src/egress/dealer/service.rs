//! One service of the output: its connection, and its health, the rules
//! that take it out of rotation and put it back.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::ServiceState;
use crate::zmtp::connection::{PeerId, QueueTx};

/// Request ids of timed-out requests remembered per service, so that their
/// late replies are told apart from forged or unknown ones.
const EXPIRED_MEMORY: usize = 1024;

/// Whether a service takes requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Health {
    /// In rotation.
    Up,
    /// Out of rotation; from `until` on, the next request chosen for it is
    /// its probe.
    Ejected { until: Instant },
    /// Out of rotation while request `id`, its probe, is out.
    Probing { id: u64 },
}

#[derive(Debug)]
pub(super) struct Conn {
    pub(super) peer: PeerId,
    pub(super) queue: QueueTx,
}

#[derive(Debug)]
pub(super) struct Service {
    /// A connect endpoint as configured; `None` for a bound peer.
    pub(super) endpoint: Option<String>,
    /// A bound peer: its identity, else its address.
    pub(super) peer: Option<String>,
    /// What the ring hashes.
    pub(super) key: Bytes,
    pub(super) weight: u32,
    /// Its connect slot; `None` for a bound peer (removed when it goes).
    pub(super) slot: Option<usize>,
    pub(super) conn: Option<Conn>,
    pub(super) health: Health,
    /// Consecutive failures (timeouts, disconnects holding requests).
    pub(super) failures: u32,
    /// The wait before the next probe.
    pub(super) backoff: Duration,
    pub(super) in_flight: usize,
    /// Smooth weighted round-robin state.
    pub(super) current: i64,
    /// Recently expired request ids, and whether a reply to each counts as
    /// late (requests do; one-way messages do not).
    pub(super) expired: VecDeque<(u64, bool)>,
}

impl Service {
    pub(super) fn new(weight: u32, key: Bytes, probe_interval: Duration) -> Self {
        Self {
            endpoint: None,
            peer: None,
            key,
            weight: weight.max(1),
            slot: None,
            conn: None,
            health: Health::Up,
            failures: 0,
            backoff: probe_interval,
            in_flight: 0,
            current: 0,
            expired: VecDeque::new(),
        }
    }

    /// May take a request now (as its probe, if it is ejected).
    pub(super) fn eligible(&self, now: Instant) -> bool {
        self.conn.is_some()
            && match self.health {
                Health::Up => true,
                Health::Ejected { until } => until <= now,
                Health::Probing { .. } => false,
            }
    }

    pub(super) fn state(&self) -> ServiceState {
        match (&self.conn, self.health) {
            (None, _) => ServiceState::Disconnected,
            (Some(_), Health::Up) => ServiceState::Up,
            (Some(_), Health::Ejected { .. }) => ServiceState::Ejected,
            (Some(_), Health::Probing { .. }) => ServiceState::Probing,
        }
    }

    pub(super) fn remember_expired(&mut self, id: u64, counts: bool) {
        if self.expired.len() == EXPIRED_MEMORY {
            self.expired.pop_front();
        }
        self.expired.push_back((id, counts));
    }
}

/// When a service leaves rotation and how it comes back.
#[derive(Debug, Clone)]
pub(super) struct Policy {
    /// Failures in a row that eject it (at least 1).
    pub(super) eject_after: u32,
    /// First wait before a probe.
    pub(super) probe_interval: Duration,
    /// Cap of the doubling wait.
    pub(super) probe_interval_max: Duration,
}

/// What a failure did to a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Failure {
    /// Counted; its health did not change.
    Counted,
    /// Taken out of rotation (a new ejection).
    Ejected,
    /// Its probe failed: out again, for twice as long.
    ProbeFailed,
}

impl Service {
    /// Forgets a recently expired request `id`: `Some(counts)` when it was
    /// one (`counts`: its reply is a late one), `None` when it was not.
    pub(super) fn take_expired(&mut self, id: u64) -> Option<bool> {
        let pos = self.expired.iter().position(|&(x, _)| x == id)?;
        self.expired.remove(pos).map(|(_, counts)| counts)
    }

    /// It answered in time: back in rotation, its count and backoff reset.
    /// True when its health changed.
    pub(super) fn succeeded(&mut self, policy: &Policy) -> bool {
        self.failures = 0;
        self.backoff = policy.probe_interval;
        let changed = self.health != Health::Up;
        self.health = Health::Up;
        changed
    }

    /// It failed request `id` (`None`: its connection ended holding
    /// requests, or during its probe): ejected after `eject_after` in a
    /// row; a failed probe ejects it again for twice as long, up to the
    /// cap. A failure of an older request during a probe only counts.
    pub(super) fn failed(&mut self, id: Option<u64>, now: Instant, policy: &Policy) -> Failure {
        self.failures = self.failures.saturating_add(1);
        match self.health {
            Health::Probing { id: probe } if id.is_none_or(|id| id == probe) => {
                self.backoff = (self.backoff * 2).min(policy.probe_interval_max);
                self.health = Health::Ejected {
                    until: now + self.backoff,
                };
                Failure::ProbeFailed
            }
            Health::Up if self.failures >= policy.eject_after => {
                self.health = Health::Ejected {
                    until: now + self.backoff,
                };
                Failure::Ejected
            }
            _ => Failure::Counted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_ids_are_remembered_boundedly_and_once() {
        let mut s = Service::new(1, Bytes::from_static(b"k"), Duration::from_secs(1));
        for id in 0..(EXPIRED_MEMORY as u64 + 10) {
            s.remember_expired(id, id % 2 == 0);
        }
        assert_eq!(s.expired.len(), EXPIRED_MEMORY);
        assert_eq!(s.take_expired(3), None, "forgotten: the oldest go first");
        assert_eq!(s.take_expired(20), Some(true));
        assert_eq!(s.take_expired(20), None);
        assert_eq!(s.take_expired(21), Some(false));
    }

    #[test]
    fn an_old_request_failing_during_a_probe_only_counts() {
        let policy = Policy {
            eject_after: 1,
            probe_interval: Duration::from_secs(1),
            probe_interval_max: Duration::from_secs(8),
        };
        let mut s = Service::new(1, Bytes::from_static(b"k"), policy.probe_interval);
        let now = Instant::now();
        assert_eq!(s.failed(Some(1), now, &policy), Failure::Ejected);
        s.health = Health::Probing { id: 9 };
        assert_eq!(s.failed(Some(2), now, &policy), Failure::Counted);
        assert_eq!(s.failed(Some(9), now, &policy), Failure::ProbeFailed);
        assert_eq!(s.backoff, Duration::from_secs(2));
        assert!(s.succeeded(&policy));
        assert_eq!((s.failures, s.backoff), (0, Duration::from_secs(1)));
    }
}
