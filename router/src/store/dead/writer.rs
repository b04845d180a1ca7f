//! The dead-letter store's writer thread: group commit of entries and
//! tombstones, and retention.

use std::io;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::oneshot;

use std::sync::PoisonError;

use super::{DeadLetter, DeadReason, Fsync, Inner, Shared, codec, locked};
use crate::store::queue::Error;

pub(super) type Reply = oneshot::Sender<Result<(), (io::ErrorKind, String)>>;

pub(super) enum Request {
    Put(Vec<DeadLetter>, Reply),
    Tombstone(Vec<u64>, Reply),
}

#[derive(Default)]
pub(super) struct Pending {
    pub(super) requests: Vec<Request>,
    pub(super) closed: bool,
}

impl Shared {
    pub(super) fn submit(&self, request: Request) -> Result<(), Error> {
        let mut pending = locked(&self.pending);
        if pending.closed {
            return Err(Error::Closed);
        }
        pending.requests.push(request);
        drop(pending);
        self.work.notify_one();
        Ok(())
    }

    /// The writer thread: takes what was submitted, writes it as one
    /// group, syncs per the policy, answers; enforces retention between
    /// groups and at least once a second.
    pub(super) fn write_loop(&self) {
        let mut last_sync = Instant::now();
        let mut buf = Vec::new();
        loop {
            let (requests, closed) = {
                let mut pending = locked(&self.pending);
                if pending.requests.is_empty() && !pending.closed {
                    pending = self
                        .work
                        .wait_timeout(pending, Duration::from_secs(1))
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                if let Fsync::Batch(interval) = self.options.fsync
                    && !pending.requests.is_empty()
                    && !pending.closed
                {
                    // Group commit: let the interval since the last sync
                    // fill up before taking the group.
                    let since = last_sync.elapsed();
                    if since < interval {
                        drop(pending);
                        std::thread::sleep(interval - since);
                        pending = locked(&self.pending);
                    }
                }
                (std::mem::take(&mut pending.requests), pending.closed)
            };
            if !requests.is_empty() {
                let result = self.commit(&requests, &mut buf);
                if !matches!(self.options.fsync, Fsync::Os) {
                    last_sync = Instant::now();
                }
                let answer = result.map_err(|e| (e.kind(), e.to_string()));
                for request in requests {
                    let (Request::Put(_, reply) | Request::Tombstone(_, reply)) = request;
                    let _ = reply.send(answer.clone());
                }
            }
            if let Err(e) = self.enforce_retention() {
                tracing::warn!(error = %e, "dead-letter store: retention failed; tried again");
            }
            if closed && locked(&self.pending).requests.is_empty() {
                return;
            }
        }
    }

    /// Writes `requests` as one group and syncs it per the policy.
    fn commit(&self, requests: &[Request], buf: &mut Vec<u8>) -> io::Result<()> {
        buf.clear();
        let now = SystemTime::now();
        let tail = {
            let mut inner = locked(&self.inner);
            let first = inner.log.next_seq();
            let mut seq = first;
            // (id, offset in buf, len) of each entry written.
            let mut placed = Vec::new();
            for request in requests {
                match request {
                    Request::Put(entries, _) => {
                        for e in entries {
                            let at = buf.len();
                            let len = codec::encode_entry(seq, e, buf);
                            placed.push((seq, at, len, e));
                            seq += 1;
                        }
                    }
                    Request::Tombstone(ids, _) => {
                        for chunk in ids.chunks(codec::MAX_TOMBSTONE_IDS) {
                            codec::encode_tombstone(seq, now, chunk, buf);
                            seq += 1;
                        }
                    }
                }
            }
            inner.log.write(buf, first..seq)?;
            let tail = inner.log.tail().expect("a write leaves a tail segment");
            let start = tail.size()? - buf.len() as u64;
            for (id, at, len, e) in placed {
                inner.index.insert(
                    id,
                    start + at as u64,
                    len as u32,
                    &e.route,
                    e.output.as_deref(),
                    e.reason,
                    e.last_failed,
                );
            }
            self.metrics.depth.set(inner.index.len() as i64);
            self.metrics.disk_bytes.set(inner.log.bytes() as i64);
            tail
        };
        if !matches!(self.options.fsync, Fsync::Os) {
            tail.sync()?;
        }
        Ok(())
    }

    /// Drops the oldest entries past `max_entries`, `max_bytes` or
    /// `max_age`, writes their tombstones, and deletes segments no live
    /// entry needs.
    pub(super) fn enforce_retention(&self) -> io::Result<()> {
        let o = &self.options;
        let mut inner = locked(&self.inner);
        let Inner { log, index } = &mut *inner;
        let mut expired: Vec<(u64, DeadReason)> = Vec::new();
        let oldest_kept = codec::nanos(
            SystemTime::now()
                .checked_sub(o.max_age)
                .unwrap_or(SystemTime::UNIX_EPOCH),
        );
        while index.len() as u64 > o.max_entries
            || index.bytes() > o.max_bytes
            || index
                .first()
                .is_some_and(|(_, s)| s.last_failed < oldest_kept)
        {
            let Some((id, slot)) = index.pop_first() else {
                break;
            };
            expired.push((id, slot.reason));
        }
        // The files: drop whole front segments while over the bound.
        loop {
            let head = index.first().map_or(log.next_seq(), |(id, _)| id);
            log.release(head)?;
            if log.bytes() <= o.max_bytes {
                break;
            }
            let extents = log.extents(0);
            let Some(second) = extents.get(1) else {
                break;
            };
            let upto = second.base();
            let before = expired.len();
            while let Some((id, slot)) = index.first().filter(|(id, _)| *id < upto) {
                index.remove(id);
                expired.push((id, slot.reason));
            }
            if expired.len() == before {
                // Nothing live pins the front segment, yet it stays: stop
                // rather than spin.
                break;
            }
        }
        if !expired.is_empty() {
            let mut counts = [0u64; DeadReason::ALL.len()];
            for (_, reason) in &expired {
                counts[*reason as usize] += 1;
            }
            for reason in DeadReason::ALL {
                if counts[reason as usize] > 0 {
                    self.metrics
                        .expired
                        .with_label_values(&[reason.label()])
                        .inc_by(counts[reason as usize]);
                }
            }
            let ids: Vec<u64> = expired.iter().map(|(id, _)| *id).collect();
            let mut buf = Vec::new();
            let first = log.next_seq();
            let mut seq = first;
            for chunk in ids.chunks(codec::MAX_TOMBSTONE_IDS) {
                codec::encode_tombstone(seq, SystemTime::now(), chunk, &mut buf);
                seq += 1;
            }
            log.write(&buf, first..seq)?;
            tracing::debug!(
                expired = ids.len(),
                "dead-letter store: retention dropped the oldest entries"
            );
        }
        self.metrics.depth.set(index.len() as i64);
        self.metrics.disk_bytes.set(log.bytes() as i64);
        Ok(())
    }
}
