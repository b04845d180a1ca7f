//! Fuzz target: arbitrary bytes as a durable queue's only segment, opened
//! as the router does after a crash, then read to the end.
//!
//! Checks: no panic; the records read come out in strictly increasing
//! sequence order, exactly as many as recovery found intact; a second open
//! finds nothing more to repair (recovery is idempotent); and the queue
//! takes a new record after them, which the next open reads back last.

#![no_main]

use std::sync::Arc;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use switchyard::message::{Message, Publisher, Topic};
use switchyard::store::{MemoryStorage, Options, Queue, Storage};

fn open(storage: &Arc<MemoryStorage>) -> (Queue, switchyard::store::Opened) {
    let storage: Arc<dyn Storage> = Arc::new(Arc::clone(storage));
    Queue::open_unstarted(storage, Options::default()).expect("a memory log always opens")
}

fn drain(q: &Queue) -> Vec<u64> {
    let mut out = Vec::new();
    while q.pop(0, 64, usize::MAX, &mut out).expect("memory reads") > 0 {}
    out.iter().map(|r| r.seq).collect()
}

fuzz_target!(|data: &[u8]| {
    let storage = MemoryStorage::new();
    storage.set_bytes("00000000000000000000.log", data.to_vec());
    let (q, opened) = open(&storage);
    let seqs = drain(&q);
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "out of order: {seqs:?}"
    );
    assert_eq!(seqs.len() as u64, opened.recovery.records);
    drop(q);

    let (q, again) = open(&storage);
    assert!(again.recovery.torn.is_empty(), "{:?}", again.recovery);
    assert_eq!(again.recovery.records, opened.recovery.records);
    let message = Message::new(
        Topic::try_from("fuzz.after").expect("valid topic"),
        Bytes::from_static(b"after"),
        Publisher::new("fuzz", ""),
    );
    let end = q.append([&message]).expect("appends");
    q.close().expect("memory commits");

    let (q, _) = open(&storage);
    let mut out = Vec::new();
    while q.pop(0, 64, usize::MAX, &mut out).expect("memory reads") > 0 {}
    let last = out.last().expect("the new record is read back");
    assert_eq!(last.seq, end - 1);
    assert_eq!(last.message.payload, message.payload);
});
