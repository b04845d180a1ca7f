//! Reading the dead-letter log: the index rebuilt from every record at
//! open, and a listing's summaries read from the front of each record.

use std::io;

use super::codec::{self, Summary};
use super::index::{Index, Slot};
use crate::store::log::{Extent, Log};
use crate::store::queue::Error;
use crate::store::scan::{Cursor, Step, Window};

/// The extent holding `id`.
pub(super) fn extent_of(extents: &[Extent], id: u64) -> Option<&Extent> {
    extents.iter().rev().find(|e| e.base() <= id)
}

/// The summary of entry `id`, reading only the front of its record.
pub(super) fn read_summary(
    extents: &[Extent],
    id: u64,
    slot: &Slot,
    buf: &mut Vec<u8>,
) -> Result<Option<Summary>, Error> {
    let Some(extent) = extent_of(extents, id) else {
        return Ok(None);
    };
    let len = slot.len as usize;
    buf.resize(len.min(codec::SUMMARY_GUESS), 0);
    let got = extent.file().read_at(slot.offset, buf)?;
    buf.truncate(got);
    let Some(need) = codec::summary_len(buf).filter(|&n| n <= len) else {
        tracing::warn!(
            id,
            "a dead letter's record does not parse; left out of the listing"
        );
        return Ok(None);
    };
    if need > buf.len() {
        buf.resize(need, 0);
        let got = extent.file().read_at(slot.offset, buf)?;
        buf.truncate(got);
    }
    match codec::parse(buf) {
        Some(codec::Body::Entry(s)) if s.id == id => Ok(Some(*s)),
        _ => {
            tracing::warn!(
                id,
                "a dead letter's record does not parse; left out of the listing"
            );
            Ok(None)
        }
    }
}

/// Builds the index from every intact record of `log`; returns how many
/// records framed well but did not parse.
pub(super) fn rebuild(log: &Log, index: &mut Index) -> io::Result<u64> {
    let mut unreadable = 0;
    let mut buf = bytes::Bytes::new();
    for extent in log.extents(0) {
        let mut window = Window::new(&**extent.file(), extent.len(), std::mem::take(&mut buf));
        let mut cursor = Cursor {
            pos: 0,
            last_seq: extent.base().checked_sub(1),
        };
        loop {
            match cursor.step(&mut window)? {
                Step::Record { offset, frame } => {
                    let mut view = window.view(offset, frame.len.min(codec::SUMMARY_GUESS))?;
                    if let Some(need) = codec::summary_len(view)
                        && need > view.len()
                        && need <= frame.len
                    {
                        view = window.view(offset, need)?;
                    }
                    match codec::parse(view) {
                        Some(codec::Body::Entry(s)) => index.insert(
                            frame.seq,
                            offset,
                            frame.len as u32,
                            &s.route,
                            s.output.as_deref(),
                            s.reason,
                            s.last_failed,
                        ),
                        Some(codec::Body::Tombstone(ids)) => {
                            for id in ids {
                                index.remove(id);
                            }
                        }
                        None => unreadable += 1,
                    }
                }
                // The log reported (and cut) damage when it opened.
                Step::Damaged(_) => {}
                Step::Torn(_) | Step::End => break,
            }
        }
        buf = window.into_buf();
    }
    Ok(unreadable)
}
