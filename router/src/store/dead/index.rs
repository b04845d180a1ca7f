//! The dead-letter store's in-memory index: per live entry, where its
//! record is and the fields a filter looks at. Small by design (a few
//! dozen bytes an entry, names interned), and bounded by the store's
//! `max_entries`; payloads stay on disk.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use super::DeadReason;
use super::codec::nanos;

/// No output (route-level reasons).
const NONE: u32 = u32::MAX;

/// One live entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    /// Where its record starts in the segment holding its id.
    pub(crate) offset: u64,
    /// The record's length, header included.
    pub(crate) len: u32,
    route: u32,
    output: u32,
    pub(crate) reason: DeadReason,
    /// `last_failed`, ns since the epoch.
    pub(crate) last_failed: u64,
}

/// Which entries an operation applies to; every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// The route the entry failed on.
    pub route: Option<String>,
    /// The output that refused it.
    pub output: Option<String>,
    /// Why it is here.
    pub reason: Option<DeadReason>,
    /// `last_failed` at or after this.
    pub since: Option<SystemTime>,
    /// `last_failed` before this.
    pub until: Option<SystemTime>,
}

/// A filter with its names resolved against the index.
struct Resolved {
    route: Option<u32>,
    output: Option<u32>,
    reason: Option<DeadReason>,
    since: u64,
    until: u64,
}

impl Resolved {
    fn matches(&self, slot: &Slot) -> bool {
        self.route.is_none_or(|r| r == slot.route)
            && self.output.is_none_or(|o| o == slot.output)
            && self.reason.is_none_or(|r| r == slot.reason)
            && slot.last_failed >= self.since
            && slot.last_failed < self.until
    }
}

#[derive(Debug, Default)]
pub(crate) struct Index {
    slots: BTreeMap<u64, Slot>,
    names: Vec<Arc<str>>,
    lookup: HashMap<Arc<str>, u32>,
    /// Bytes of the live entries' records.
    bytes: u64,
}

impl Index {
    fn intern(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.lookup.get(name) {
            return i;
        }
        let i = self.names.len() as u32;
        let name: Arc<str> = Arc::from(name);
        self.names.push(Arc::clone(&name));
        self.lookup.insert(name, i);
        i
    }

    /// Adds entry `id`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn insert(
        &mut self,
        id: u64,
        offset: u64,
        len: u32,
        route: &str,
        output: Option<&str>,
        reason: DeadReason,
        last_failed: SystemTime,
    ) {
        let slot = Slot {
            offset,
            len,
            route: self.intern(route),
            output: output.map_or(NONE, |o| self.intern(o)),
            reason,
            last_failed: nanos(last_failed),
        };
        if let Some(old) = self.slots.insert(id, slot) {
            self.bytes -= u64::from(old.len);
        }
        self.bytes += u64::from(len);
    }

    /// Removes entry `id`, if it is live.
    pub(crate) fn remove(&mut self, id: u64) -> Option<Slot> {
        let slot = self.slots.remove(&id)?;
        self.bytes -= u64::from(slot.len);
        Some(slot)
    }

    /// Removes and returns the oldest entry.
    pub(crate) fn pop_first(&mut self) -> Option<(u64, Slot)> {
        let (id, slot) = self.slots.pop_first()?;
        self.bytes -= u64::from(slot.len);
        Some((id, slot))
    }

    pub(crate) fn first(&self) -> Option<(u64, Slot)> {
        self.slots.first_key_value().map(|(k, v)| (*k, *v))
    }

    pub(crate) fn get(&self, id: u64) -> Option<Slot> {
        self.slots.get(&id).copied()
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Up to `limit` entries matching `filter` with ids above `after`, in
    /// id order, and whether more may follow (the last id to continue
    /// after). Looks at no more than `budget` entries, so one call on a
    /// huge index stays short; a page cut by the budget may hold fewer
    /// than `limit` entries and still say more follow.
    pub(crate) fn scan(
        &self,
        filter: &Filter,
        after: Option<u64>,
        limit: usize,
        budget: usize,
        out: &mut Vec<(u64, Slot)>,
    ) -> Option<u64> {
        let resolve = |name: &Option<String>| match name {
            None => Ok(None),
            Some(n) => self.lookup.get(n.as_str()).map(|&i| Some(i)).ok_or(()),
        };
        let (Ok(route), Ok(output)) = (resolve(&filter.route), resolve(&filter.output)) else {
            // A name no entry has: nothing matches.
            return None;
        };
        let resolved = Resolved {
            route,
            output,
            reason: filter.reason,
            since: filter.since.map_or(0, nanos),
            until: filter.until.map_or(u64::MAX, nanos),
        };
        let start = after.map_or(0, |a| a.saturating_add(1));
        let mut last = None;
        for (looked, (&id, slot)) in self.slots.range(start..).enumerate() {
            if out.len() >= limit || looked >= budget {
                return last;
            }
            last = Some(id);
            if resolved.matches(slot) {
                out.push((id, *slot));
            }
        }
        None
    }
}
