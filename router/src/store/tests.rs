//! The store's format, recovery and model tests, on the simulated
//! directory (`testing`) and on a real one.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;

use super::queue::PENDING_HIGH;
use super::*;
use crate::message::{Message, Publisher, Topic};

fn message(n: u64) -> Message {
    let mut m = Message::new(
        Topic::try_from("sensors.temp").expect("valid topic"),
        Bytes::from(format!("payload-{n}")),
        Publisher::new("http-in", "127.0.0.1:5000").with_principal(Some("alice".into())),
    );
    m.attributes.insert("unit".into(), "celsius".into());
    m.attributes.insert("n".into(), n.to_string());
    m
}

fn options(fsync: Fsync) -> Options {
    Options {
        fsync,
        segment_bytes: 1 << 20,
        cache_bytes: 1 << 16,
        checkpoint_every: Duration::ZERO,
        on_sync: None,
        ..Options::default()
    }
}

fn open(storage: &Arc<MemoryStorage>) -> (Queue, Opened) {
    Queue::open_unstarted(Arc::new(Arc::clone(storage)), options(Fsync::Always)).expect("opens")
}

/// Pops everything readable now.
fn drain(q: &Queue) -> Vec<Record> {
    let mut out = Vec::new();
    while q.pop(0, 64, usize::MAX, &mut out).expect("reads") > 0 {}
    out
}

fn payload_numbers(records: &[Record]) -> Vec<u64> {
    records
        .iter()
        .map(|r| {
            r.message
                .attributes
                .get("n")
                .expect("n")
                .parse()
                .expect("number")
        })
        .collect()
}

#[test]
fn a_record_round_trips_and_its_length_is_known_beforehand() {
    let m = message(7);
    let mut buf = Vec::new();
    let len = encode(42, &m, &mut buf);
    assert_eq!(len, buf.len());
    assert_eq!(len, encoded_len(&m));
    match decode(&buf) {
        Decoded::Record(r, n) => {
            assert_eq!(n, len);
            assert_eq!(r.seq, 42);
            let mut expected = m.clone();
            // Time keeps nanoseconds; the id, attributes, publisher and
            // priority survive exactly.
            expected.publish_time = r.message.publish_time;
            assert_eq!(r.message, expected);
        }
        other => panic!("not decoded: {other:?}"),
    }
    assert_eq!(decode(&buf[..len - 1]), Decoded::Incomplete { need: len });
}

/// A log of three records in one segment, committed; returns the segment
/// name and the records' offsets.
fn three_records(storage: &Arc<MemoryStorage>) -> (String, Vec<usize>) {
    let (q, _) = open(storage);
    for n in 0..3 {
        q.append([&message(n)]).expect("appends");
        q.commit().expect("commits");
    }
    q.close().expect("closes");
    let name = storage.segments().pop().expect("a segment");
    let data = storage.bytes(&name).expect("bytes");
    let mut offsets = vec![0];
    let mut at = 0;
    while let Framed::Frame(f) = super::record::frame(&data[at..]) {
        at += f.len;
        offsets.push(at);
    }
    assert_eq!(offsets.len(), 4, "three whole records");
    (name, offsets)
}

#[test]
fn a_torn_tail_at_every_byte_of_the_last_record_is_cut_off() {
    let base = MemoryStorage::new();
    let (name, offsets) = three_records(&base);
    let whole = base.bytes(&name).expect("bytes");
    let cursors = base.bytes("cursors").expect("cursors");
    for cut in offsets[2]..offsets[3] {
        let storage = MemoryStorage::new();
        storage.set_bytes(&name, whole[..cut].to_vec());
        storage.set_bytes("cursors", cursors.clone());
        let (q, opened) = open(&storage);
        assert_eq!(opened.recovery.records, 2, "cut at {cut}");
        assert_eq!(
            opened.recovery.torn.len(),
            usize::from(cut > offsets[2]),
            "cut at {cut}"
        );
        assert!(opened.recovery.damaged.is_empty());
        assert_eq!(
            storage.bytes(&name).expect("bytes").len(),
            offsets[2],
            "truncated"
        );
        // The log goes on where the whole records end.
        q.append([&message(9)]).expect("appends");
        q.commit().expect("commits");
        q.close().expect("closes");
        let (q, opened) = open(&storage);
        assert_eq!(opened.recovery.records, 3);
        assert!(opened.recovery.torn.is_empty());
        drop(q);
    }
}

#[test]
fn a_flipped_bit_anywhere_in_a_record_loses_that_record_only() {
    let base = MemoryStorage::new();
    let (name, offsets) = three_records(&base);
    let whole = base.bytes(&name).expect("bytes");
    for byte in offsets[1]..offsets[2] {
        for bit in [0, 3, 7] {
            let storage = MemoryStorage::new();
            let mut data = whole.clone();
            data[byte] ^= 1 << bit;
            storage.set_bytes(&name, data);
            // No cursors: everything is to be delivered.
            let (q, opened) = open(&storage);
            assert_eq!(opened.recovery.records, 2, "byte {byte} bit {bit}");
            assert_eq!(opened.recovery.damaged.len(), 1, "byte {byte} bit {bit}");
            assert_eq!(
                opened.recovery.damaged[0].1,
                Damage {
                    offset: offsets[1] as u64,
                    len: (offsets[2] - offsets[1]) as u64
                }
            );
            let records = drain(&q);
            assert_eq!(
                payload_numbers(&records),
                vec![0, 2],
                "byte {byte} bit {bit}"
            );
            assert_eq!(q.stats().missing, 1, "the lost record is counted");
        }
    }
}

#[test]
fn a_zero_filled_tail_is_cut_off_and_the_records_before_it_kept() {
    let storage = MemoryStorage::new();
    let (name, offsets) = three_records(&storage);
    let mut data = storage.bytes(&name).expect("bytes");
    data.extend(std::iter::repeat_n(0, 4096));
    storage.set_bytes(&name, data);
    let (q, opened) = open(&storage);
    assert_eq!(opened.recovery.records, 3);
    assert_eq!(
        opened.recovery.torn[0].1,
        Damage {
            offset: offsets[3] as u64,
            len: 4096
        }
    );
    assert_eq!(storage.bytes(&name).expect("bytes").len(), offsets[3]);
    drop(q);
}

#[test]
fn damage_in_the_middle_of_many_records_loses_only_the_damaged_ones() {
    let storage = MemoryStorage::new();
    let (q, _) = open(&storage);
    for n in 0..1000 {
        q.append([&message(n)]).expect("appends");
    }
    q.commit().expect("commits");
    q.close().expect("closes");
    let name = storage.segments().pop().expect("a segment");
    let mut data = storage.bytes(&name).expect("bytes");
    // Zero 300 bytes somewhere in the middle: a few records.
    data[20_000..20_300].fill(0);
    storage.set_bytes(&name, data);
    storage.remove("cursors").expect("removes");
    let (q, opened) = open(&storage);
    let lost = 1000 - opened.recovery.records;
    assert!((2..=6).contains(&lost), "lost {lost}");
    let records = drain(&q);
    assert_eq!(records.len() as u64, opened.recovery.records);
    assert_eq!(q.stats().missing, lost);
    let numbers = payload_numbers(&records);
    assert!(numbers.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(
        numbers.last(),
        Some(&999),
        "every good record after the damage is kept"
    );
}

#[test]
fn missing_damaged_and_stale_cursors_mean_redelivery_not_loss() {
    let storage = MemoryStorage::new();
    let (q, _) = open(&storage);
    for n in 0..10 {
        q.append([&message(n)]).expect("appends");
    }
    q.commit().expect("commits");
    let mut out = Vec::new();
    q.pop(0, 4, usize::MAX, &mut out).expect("reads");
    q.ack(0);
    q.close().expect("closes");
    let current = storage.bytes("cursors").expect("cursors");

    // Current cursors: the 6 left.
    let (q, opened) = open(&storage);
    assert_eq!(
        (opened.backlog, opened.redeliver, opened.cursors_lost),
        (6, 0, false)
    );
    assert_eq!(payload_numbers(&drain(&q)), (4..10).collect::<Vec<_>>());
    drop(q);

    // A stale one (the head from before the ack): all 10 again.
    storage.set_bytes("cursors", SavedCursors::default().encode());
    let (q, opened) = open(&storage);
    assert_eq!(opened.backlog, 10);
    assert_eq!(drain(&q).len(), 10);
    drop(q);

    // Missing, or damaged: all 10 again, said so.
    for cursors in [None, Some(b"garbage".to_vec())] {
        match cursors {
            Some(bytes) => storage.set_bytes("cursors", bytes),
            None => storage.remove("cursors").expect("removes"),
        }
        let (q, opened) = open(&storage);
        assert_eq!((opened.backlog, opened.cursors_lost), (10, true));
        assert_eq!(drain(&q).len(), 10);
        drop(q);
    }

    // A cursor past the end of the log (records lost at a power cut after
    // the cursor was saved): clamped, and numbering goes on above it.
    let ahead = SavedCursors {
        head: 50,
        targets: Default::default(),
    };
    storage.set_bytes("cursors", ahead.encode());
    let (q, opened) = open(&storage);
    assert_eq!(opened.backlog, 0);
    assert_eq!(q.append([&message(11)]).expect("appends"), 51);
    drop(q);
    let _ = current;
}

#[test]
fn one_sync_covers_every_append_made_before_it() {
    let storage = MemoryStorage::new();
    let (q, _) = open(&storage);
    let mut last = 0;
    for n in 0..50 {
        last = q.append([&message(n)]).expect("appends");
        assert!(!q.is_durable(last));
    }
    let before = storage.syncs.load(Ordering::Relaxed);
    q.commit().expect("commits");
    assert!(q.is_durable(last));
    assert_eq!(storage.syncs.load(Ordering::Relaxed) - before, 1);
}

#[test]
fn a_full_disk_leaves_no_partial_record_and_the_queue_resumes() {
    let storage = MemoryStorage::new();
    let (q, _) = open(&storage);
    q.append([&message(0)]).expect("appends");
    q.commit().expect("commits");
    storage.full.store(true, Ordering::Relaxed);
    let end = q.append([&message(1), &message(2)]).expect("appends");
    assert!(q.commit().is_err());
    assert!(q.stats().failing);
    assert!(!q.is_durable(end));
    let name = storage.segments().pop().expect("segment");
    let len = storage.bytes(&name).expect("bytes").len();
    assert_eq!(
        len,
        encoded_len(&message(0)),
        "the half-written record is cut back"
    );
    storage.full.store(false, Ordering::Relaxed);
    q.commit().expect("commits once space returns");
    assert!(q.is_durable(end));
    assert_eq!(payload_numbers(&drain(&q)), vec![0, 1, 2]);
}

#[test]
fn segments_roll_and_are_deleted_behind_the_head() {
    let storage = MemoryStorage::new();
    let opts = Options {
        segment_bytes: 1024,
        ..options(Fsync::Always)
    };
    let (q, _) =
        Queue::open_unstarted(Arc::new(Arc::clone(&storage)), opts.clone()).expect("opens");
    for n in 0..100 {
        q.append([&message(n)]).expect("appends");
        q.commit().expect("commits");
    }
    let segments = storage.segments().len();
    assert!(segments > 5, "{segments} segments");
    let mut out = Vec::new();
    while q.pop(0, 10, usize::MAX, &mut out).expect("reads") > 0 {
        q.ack(0);
    }
    assert_eq!(payload_numbers(&out), (0..100).collect::<Vec<_>>());
    q.close().expect("closes");
    assert_eq!(storage.segments().len(), 1, "only the last segment stays");
    let (q, opened) =
        Queue::open_unstarted(Arc::new(Arc::clone(&storage)), opts.clone()).expect("opens");
    assert_eq!(opened.backlog, 0);
    assert_eq!(q.append([&message(100)]).expect("appends"), 101);
}

/// 100 records, one commit each, in 1 KiB segments: many sealed segments.
fn many_segments(storage: &Arc<MemoryStorage>) -> Options {
    let opts = Options {
        segment_bytes: 1024,
        ..options(Fsync::Always)
    };
    let (q, _) = Queue::open_unstarted(Arc::new(Arc::clone(storage)), opts.clone()).expect("opens");
    for n in 0..100 {
        q.append([&message(n)]).expect("appends");
        q.commit().expect("commits");
    }
    q.close().expect("closes");
    opts
}

#[test]
fn opening_leaves_sealed_segments_to_the_reader_which_counts_their_damage() {
    let storage = MemoryStorage::new();
    let opts = many_segments(&storage);
    let names = storage.segments();
    assert!(names.len() > 5, "{} segments", names.len());
    // Damage the second record of the first segment, a sealed one.
    let mut data = storage.bytes(&names[0]).expect("bytes");
    let Framed::Frame(first) = super::record::frame(&data) else {
        panic!("the segment opens with a record")
    };
    data[first.len + 20] ^= 0x10;
    storage.set_bytes(&names[0], data);

    let (q, opened) = Queue::open_unstarted(Arc::new(Arc::clone(&storage)), opts).expect("opens");
    assert!(
        opened.recovery.damaged.is_empty(),
        "a sealed segment is not read at open"
    );
    assert_eq!(opened.recovery.unverified_segments, names.len() - 1);
    assert_eq!(opened.backlog, 100, "counted by sequence number");
    assert_eq!(q.stats().held, 100);
    let records = drain(&q);
    let expected: Vec<u64> = (0..100).filter(|&n| n != 1).collect();
    assert_eq!(payload_numbers(&records), expected);
    let stats = q.stats();
    assert_eq!(
        (stats.missing, stats.damaged),
        (1, 1),
        "the reader finds the damage and counts the record lost"
    );
}

#[test]
fn a_head_inside_a_sealed_segment_is_counted_exactly_at_open() {
    let storage = MemoryStorage::new();
    let opts = many_segments(&storage);
    let (q, _) =
        Queue::open_unstarted(Arc::new(Arc::clone(&storage)), opts.clone()).expect("opens");
    let mut out = Vec::new();
    while out.len() < 35 {
        let want = 35 - out.len();
        assert!(q.pop(0, want, usize::MAX, &mut out).expect("reads") > 0);
        q.ack(0);
    }
    let before = q.stats();
    assert_eq!(before.head, 35);
    q.close().expect("closes");
    assert!(
        storage.segments().len() > 3,
        "the head is not in the last segment"
    );

    let segment = opts.segment_bytes;
    let (q, opened) = Queue::open_unstarted(Arc::new(Arc::clone(&storage)), opts).expect("opens");
    assert!(opened.recovery.unverified_segments > 0);
    assert_eq!(opened.backlog, 65);
    assert_eq!(opened.redeliver, 0);
    let after = q.stats();
    // Bytes are released a segment at a time while running, so before the
    // restart they may count the head's segment whole; opening counts
    // exactly what is past the head.
    let mut scratch = Vec::new();
    let exact: u64 = (35..100)
        .map(|n| record::encode(n, &message(n), &mut scratch) as u64)
        .sum();
    assert_eq!(
        after.held, before.held,
        "the same count as before the restart"
    );
    assert_eq!(after.held_bytes, exact, "exactly the records past the head");
    assert!(
        before.held_bytes >= exact && before.held_bytes - exact <= segment,
        "running, the head's segment is counted at most whole: {} vs {exact}",
        before.held_bytes
    );
    assert_eq!(payload_numbers(&drain(&q)), (35..100).collect::<Vec<_>>());
}

#[test]
fn a_reader_far_behind_reads_from_disk_with_bounded_memory() {
    let storage = MemoryStorage::new();
    let opts = Options {
        cache_bytes: 2048,
        ..options(Fsync::Always)
    };
    let (q, _) =
        Queue::open_unstarted(Arc::new(Arc::clone(&storage)), opts.clone()).expect("opens");
    for n in 0..500 {
        q.append([&message(n)]).expect("appends");
    }
    q.commit().expect("commits");
    let mut all = Vec::new();
    loop {
        let mut out = Vec::new();
        if q.pop(0, 1000, usize::MAX, &mut out).expect("reads") == 0 {
            break;
        }
        let bytes: usize = out.iter().map(|r| encoded_len(&r.message)).sum();
        assert!(bytes <= 2048 + 200, "one read holds {bytes} bytes");
        q.ack(0);
        all.extend(out);
    }
    assert_eq!(payload_numbers(&all), (0..500).collect::<Vec<_>>());
    assert_eq!(q.stats().held, 0);
}

#[test]
fn on_a_real_directory_records_survive_a_crash_and_a_clean_close() {
    let dir = std::env::temp_dir().join(format!("switchyard-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let storage = || -> Arc<dyn Storage> { Arc::new(Directory::create(&dir).expect("dir")) };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    {
        let (q, _) = Queue::open(storage(), Options::default()).expect("opens");
        let end = q
            .append((0..100).map(message).collect::<Vec<_>>().iter())
            .expect("appends");
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(30), q.durable(end))
                .await
                .expect("durable in time")
                .expect("durable");
        });
        // A crash: no close.
        drop(q);
    }
    let (q, opened) = Queue::open(storage(), Options::default()).expect("opens");
    assert_eq!(opened.backlog, 100);
    let mut out = Vec::new();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), q.readable(0))
            .await
            .expect("readable")
    });
    while q.pop(0, 64, usize::MAX, &mut out).expect("reads") > 0 {
        q.ack(0);
    }
    assert_eq!(payload_numbers(&out), (0..100).collect::<Vec<_>>());
    q.close().expect("closes");
    let (_q, opened) = Queue::open(storage(), Options::default()).expect("opens");
    assert_eq!(opened.backlog, 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Appends messages of `payload` bytes numbered from `from` until the
/// queue's pending buffer passes [`PENDING_HIGH`]; returns the next number.
fn append_past_high(q: &Queue, from: u64, payload: usize) -> u64 {
    let big = |n: u64| {
        let mut m = message(n);
        m.payload = Bytes::from(vec![b'x'; payload]);
        m
    };
    let count = (PENDING_HIGH / payload + 2) as u64;
    let batch: Vec<Message> = (from..from + count).map(big).collect();
    q.append(batch.iter()).expect("appends");
    from + count
}

/// Whether `future` is ready at its first poll.
fn ready_now<F: std::future::Future>(future: std::pin::Pin<&mut F>) -> bool {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    future.poll(&mut cx).is_ready()
}

/// Waits (up to 30 s) until `fact` holds.
async fn until(what: &str, mut fact: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !fact() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn keep_up_holds_appenders_back_while_the_disk_falls_behind() {
    let storage = MemoryStorage::new();
    let (q, _) =
        Queue::open(Arc::new(Arc::clone(&storage)), options(Fsync::Always)).expect("opens");
    let held = storage.hold_appends();
    // The writer takes the first record and is stuck writing it.
    let end = q.append([message(0)].iter()).expect("appends");
    until("the writer waits on the disk", || {
        storage.appends_held() == 1
    })
    .await;
    assert!(ready_now(std::pin::pin!(q.keep_up())), "little is pending");
    let end2 = append_past_high(&q, 1, 64 << 10);
    let mut keep_up = std::pin::pin!(q.keep_up());
    assert!(!ready_now(keep_up.as_mut()), "waits for the writer");
    assert_eq!(q.stats().written, end - 1);
    drop(held);
    tokio::time::timeout(Duration::from_secs(30), keep_up)
        .await
        .expect("caught up in time")
        .expect("open");
    until("all written", || q.stats().written == end2).await;
    q.close().expect("closes");
}

#[tokio::test]
async fn between_batch_syncs_the_writer_writes_early_when_far_behind() {
    let storage = MemoryStorage::new();
    let hour = Fsync::Batch(Duration::from_secs(3600));
    let (q, _) = Queue::open(Arc::new(Arc::clone(&storage)), options(hour)).expect("opens");
    // The first commit starts the interval; the writer then naps.
    let first = q.append([message(0)].iter()).expect("appends");
    tokio::time::timeout(Duration::from_secs(30), q.durable(first))
        .await
        .expect("first commit in time")
        .expect("open");
    let syncs = storage.syncs.load(Ordering::SeqCst);
    let end = append_past_high(&q, 1, 64 << 10);
    tokio::time::timeout(Duration::from_secs(30), q.keep_up())
        .await
        .expect("written in time")
        .expect("open");
    // Written, to the page cache as it were, and not synced before the
    // interval is up.
    until("all written", || q.stats().written == end).await;
    assert_eq!(q.stats().durable, first);
    assert_eq!(storage.syncs.load(Ordering::SeqCst), syncs);
    q.close().expect("closes");
    assert_eq!(q.stats().durable, end);
}

/// One step of the model test.
#[derive(Debug, Clone)]
enum Op {
    Append(u8),
    Commit,
    Pop(u8),
    Ack,
    /// A power cut tearing the unsynced bytes at this fraction (of 256).
    Crash(u8),
    Restart,
    DiskFull(bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u8..8).prop_map(Op::Append),
        3 => Just(Op::Commit),
        3 => (1u8..8).prop_map(Op::Pop),
        3 => Just(Op::Ack),
        1 => any::<u8>().prop_map(Op::Crash),
        1 => Just(Op::Restart),
        1 => any::<bool>().prop_map(Op::DiskFull),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

    /// Random appends, commits, pops, acks, restarts, crashes and full
    /// disks: the queue never hands out a message it was not given, never
    /// loses one it reported durable and not yet acknowledged, hands them
    /// out in order, and without crashes is exactly a FIFO.
    #[test]
    fn the_queue_matches_a_model_across_crashes(ops in proptest::collection::vec(op(), 1..60)) {
        let storage = MemoryStorage::new();
        let opts = Options { segment_bytes: 600, cache_bytes: 700, ..options(Fsync::Always) };
        let reopen = || Queue::open_unstarted(Arc::new(Arc::clone(&storage)), opts.clone()).expect("opens").0;
        let mut q = reopen();
        let mut next = 0u64;
        // Messages given and not acknowledged, by number, with whether
        // they were reported durable.
        let mut given: std::collections::BTreeMap<u64, bool> = Default::default();
        // Acknowledged since the last commit saved the cursors: a crash may
        // bring them back (at least once), so they may be handed out again.
        let mut acked_unsaved: std::collections::BTreeSet<u64> = Default::default();
        // What a crash may or may not have kept: acknowledged but unsaved,
        // or given but not yet durable. Allowed out, never required.
        let mut maybe: std::collections::BTreeSet<u64> = Default::default();
        let mut popped: Vec<Vec<u64>> = Vec::new();
        let mut crashed = false;
        for op in ops {
            match op {
                Op::Append(n) => {
                    let batch: Vec<Message> = (next..next + u64::from(n)).map(message).collect();
                    q.append(batch.iter()).expect("appends");
                    for m in next..next + u64::from(n) {
                        given.insert(m, false);
                    }
                    next += u64::from(n);
                }
                Op::Commit => {
                    if q.commit().is_ok() {
                        given.values_mut().for_each(|d| *d = true);
                        acked_unsaved.clear();
                    }
                }
                Op::Pop(n) => {
                    let mut out = Vec::new();
                    q.pop(0, usize::from(n), usize::MAX, &mut out).expect("reads");
                    let numbers = payload_numbers(&out);
                    for m in &numbers {
                        prop_assert!(*m < next, "handed out {m}, never given");
                        prop_assert!(
                            given.contains_key(m) || acked_unsaved.contains(m) || maybe.contains(m),
                            "handed out {m}, acknowledged and saved before"
                        );
                    }
                    if !numbers.is_empty() {
                        popped.push(numbers);
                    }
                }
                Op::Ack => {
                    if !popped.is_empty() {
                        q.ack(0);
                        for m in popped.remove(0) {
                            given.remove(&m);
                            acked_unsaved.insert(m);
                        }
                    }
                }
                Op::Crash(tear) => {
                    drop(q);
                    storage.crash(|n| n * usize::from(tear) / 256);
                    storage.full.store(false, Ordering::Relaxed);
                    q = reopen();
                    maybe.extend(given.iter().filter(|(_, d)| !**d).map(|(m, _)| *m));
                    maybe.append(&mut acked_unsaved);
                    given.retain(|_, durable| *durable);
                    popped.clear();
                    crashed = true;
                }
                Op::Restart => {
                    storage.full.store(false, Ordering::Relaxed);
                    q.close().expect("closes");
                    given.values_mut().for_each(|d| *d = true);
                    acked_unsaved.clear();
                    q = reopen();
                    popped.clear();
                }
                Op::DiskFull(full) => storage.full.store(full, Ordering::Relaxed),
            }
        }
        // Drain what is left: every durable message not acknowledged comes
        // out, in order.
        storage.full.store(false, Ordering::Relaxed);
        q.commit().expect("commits");
        given.values_mut().for_each(|d| *d = true);
        let mut out = Vec::new();
        while q.pop(0, 64, usize::MAX, &mut out).expect("reads") > 0 {}
        let numbers = payload_numbers(&out);
        prop_assert!(numbers.windows(2).all(|w| w[0] < w[1]), "in order: {numbers:?}");
        let outstanding: Vec<u64> = popped.iter().flatten().copied().collect();
        for m in given.keys() {
            prop_assert!(numbers.contains(m) || outstanding.contains(m), "lost {m}");
        }
        if !crashed {
            // Nothing was ever lost or duplicated: exactly the unacked ones.
            let expected: Vec<u64> = given.keys().copied().filter(|m| !outstanding.contains(m)).collect();
            prop_assert_eq!(numbers, expected);
        }
    }
}

fn two_readers() -> Options {
    Options {
        readers: vec!["a".into(), "b".into()],
        ..options(Fsync::Always)
    }
}

/// Pops everything `reader` can take now, acknowledging each batch.
fn drain_reader(q: &Queue, reader: usize) -> Vec<u64> {
    let mut out = Vec::new();
    loop {
        let before = out.len();
        if q.pop(reader, 7, usize::MAX, &mut out).expect("reads") == 0 {
            break;
        }
        assert!(out.len() > before);
        q.ack(reader);
    }
    out.iter().map(|r| r.seq).collect()
}

#[test]
fn readers_keep_their_own_cursors_across_a_restart() {
    let storage = MemoryStorage::new();
    let (q, _) =
        Queue::open_unstarted(Arc::new(Arc::clone(&storage)), two_readers()).expect("opens");
    // One append each, as a route makes them: bytes are released per
    // append.
    for n in 0..30 {
        q.append([&message(n)]).expect("appends");
    }
    q.commit().expect("commits");
    assert_eq!(drain_reader(&q, 0), (0..30).collect::<Vec<_>>());
    assert_eq!(q.stats().held, 30, "b has not acknowledged anything");
    // b takes a third.
    let mut out = Vec::new();
    q.pop(1, 10, usize::MAX, &mut out).expect("reads");
    let released = q.ack(1);
    assert_eq!((released.from, released.to), (0, 10));
    assert!(released.bytes > 0);
    q.close().expect("closes");

    let (q, opened) =
        Queue::open_unstarted(Arc::new(Arc::clone(&storage)), two_readers()).expect("reopens");
    assert_eq!(opened.backlog, 20);
    assert_eq!(
        opened.redeliver, 0,
        "every handed-out batch was acknowledged"
    );
    assert!(drain_reader(&q, 0).is_empty(), "a had them all");
    assert_eq!(drain_reader(&q, 1), (10..30).collect::<Vec<_>>());
    let stats = q.stats();
    assert_eq!((stats.held, stats.held_bytes), (0, 0));
}

#[test]
fn changing_the_readers_keeps_the_staying_ones_and_releases_for_the_gone() {
    let storage = MemoryStorage::new();
    let (q, _) =
        Queue::open_unstarted(Arc::new(Arc::clone(&storage)), two_readers()).expect("opens");
    let ms: Vec<Message> = (0..12).map(message).collect();
    q.append(&ms).expect("appends");
    q.commit().expect("commits");
    drain_reader(&q, 0);
    // b goes away: what only it held is released; c starts at the head.
    let released = q.set_readers(&["a".into(), "c".into()]);
    assert_eq!(released.records(), 0, "c starts at the head, holding it");
    assert_eq!(drain_reader(&q, 1), (0..12).collect::<Vec<_>>());
    assert_eq!(q.stats().held, 0);
    let more: Vec<Message> = (12..15).map(message).collect();
    q.append(&more).expect("appends");
    q.commit().expect("commits");
    drain_reader(&q, 0);
    let released = q.set_readers(&["a".into()]);
    assert_eq!((released.from, released.to), (12, 15), "only c held these");
}

#[test]
fn a_cursor_file_from_before_named_readers_redelivers_from_the_head() {
    let storage = MemoryStorage::new();
    {
        let (q, _) = open(&storage);
        let ms: Vec<Message> = (0..10).map(message).collect();
        q.append(&ms).expect("appends");
        q.commit().expect("commits");
        q.close().expect("closes");
    }
    // What the previous version saved: the head and one "sent" mark.
    let old = crate::store::SavedCursors {
        head: 4,
        targets: [("sent".to_owned(), 7)].into(),
    };
    storage
        .replace("cursors", &old.encode())
        .expect("writes the cursors");
    let (q, opened) = open(&storage);
    assert_eq!((opened.backlog, opened.redeliver), (6, 3));
    assert_eq!(drain_reader(&q, 0), (4..10).collect::<Vec<_>>());
}

/// A reader that fell behind the cache reads the gap from disk and is
/// served from the cache again: once the cache emptied, new records start
/// a new run there even though the reader has not reached them yet (it
/// used to need the reader exactly caught up, which under steady load,
/// with records always being written, kept it on the disk for good).
#[test]
fn a_reader_back_from_the_disk_finds_the_newest_records_cached() {
    let storage = MemoryStorage::new();
    let len = encoded_len(&message(0));
    let opts = Options {
        cache_bytes: 4 * len,
        ..options(Fsync::Os)
    };
    let (q, _) = Queue::open_unstarted(Arc::new(Arc::clone(&storage)), opts).expect("opens");
    let batch: Vec<Message> = (0..10).map(message).collect();
    q.append(batch.iter()).expect("appends");
    q.commit().expect("commits");
    let mut out = Vec::new();
    assert_eq!(
        q.pop_cached(0, 64, usize::MAX, &mut out),
        Some(4),
        "0..4 cached"
    );
    q.ack(0);
    assert_eq!(
        q.pop_cached(0, 64, usize::MAX, &mut out),
        None,
        "4.. from disk"
    );
    // Appended, not written yet: only the cache can hand it out.
    q.append([message(10)].iter()).expect("appends");
    let mut from_disk = 0;
    let cached = loop {
        if let Some(n) = q.pop_cached(0, 64, usize::MAX, &mut out) {
            break n;
        }
        from_disk += q
            .pop_from_disk(0, 64, usize::MAX, &mut out)
            .expect("reads")
            .0;
        q.ack(0);
    };
    assert_eq!((from_disk, cached), (6, 1), "4..10 from disk, 10 cached");
    assert_eq!(payload_numbers(&out), (0..11).collect::<Vec<_>>());
}

/// Records read from disk share the bytes read (the payload is a slice
/// of the read, not a copy) and their publisher names, and stay intact
/// after the reader reused its buffer for the next read.
#[test]
fn records_read_from_disk_share_the_read_and_stay_intact() {
    let storage = MemoryStorage::new();
    let (q, _) = open(&storage);
    let batch: Vec<Message> = (0..200).map(message).collect();
    q.append(batch.iter()).expect("appends");
    q.close().expect("closes");
    // Reopened: nothing is cached, every record comes from disk, in reads
    // of up to `cache_bytes`.
    let (q, _) = open(&storage);
    let mut out = Vec::new();
    while q.pop(0, 7, usize::MAX, &mut out).expect("reads") > 0 {
        q.ack(0);
    }
    assert_eq!(payload_numbers(&out), (0..200).collect::<Vec<_>>());
    for r in &out {
        assert_eq!(r.message.payload, format!("payload-{}", r.seq).as_bytes());
        assert_eq!(&*r.message.publisher.input, "http-in");
    }
    let (a, b) = (
        &out[0].message.publisher.input,
        &out[1].message.publisher.input,
    );
    assert!(Arc::ptr_eq(a, b), "one allocation per name");
}
