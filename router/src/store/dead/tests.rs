use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::message::{Message, Publisher, Topic};
use crate::store::MemoryStorage;

fn message(topic: &str, payload: &[u8]) -> Message {
    let mut m = Message::new(
        Topic::new(Bytes::copy_from_slice(topic.as_bytes())).expect("topic"),
        Bytes::copy_from_slice(payload),
        Publisher::new("api", "127.0.0.1:1"),
    );
    m.attributes.insert("k".into(), "v".into());
    m
}

fn entry(route: &str, output: Option<&str>, reason: DeadReason, payload: &[u8]) -> DeadLetter {
    let now = SystemTime::now();
    DeadLetter {
        message: message("sensors.a", payload),
        route: route.into(),
        output: output.map(Into::into),
        reason,
        attempts: 3,
        first_error: "first".into(),
        last_error: "last".into(),
        first_failed: now - Duration::from_secs(1),
        last_failed: now,
    }
}

fn options() -> Options {
    Options {
        fsync: Fsync::Always,
        ..Options::default()
    }
}

fn open(storage: &Arc<MemoryStorage>, options: Options) -> (DeadLetters, Opened, Registry) {
    let registry = Registry::new();
    let (store, opened) = DeadLetters::open(
        Arc::new(Arc::clone(storage)),
        options,
        Metrics::register(&registry),
    )
    .expect("opens");
    (store, opened, registry)
}

fn all_ids(store: &DeadLetters) -> Vec<u64> {
    let mut ids = Vec::new();
    let mut after = None;
    loop {
        let (page, next) = store.ids(&Filter::default(), after, 1000);
        ids.extend(page);
        match next {
            Some(n) => after = Some(n),
            None => return ids,
        }
    }
}

fn metric(registry: &Registry, needle: &str) -> u64 {
    registry
        .encode()
        .lines()
        .find(|l| l.starts_with(needle))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn put_list_filter_paginate_get_remove_and_reopen() {
    let storage = MemoryStorage::new();
    let (store, opened, registry) = open(&storage, options());
    assert_eq!(opened.entries, 0);
    let mut batch = Vec::new();
    for i in 0..10u8 {
        let (route, output, reason) = if i % 2 == 0 {
            ("a", Some("out"), DeadReason::TooLarge)
        } else {
            ("b", None, DeadReason::Verdict)
        };
        batch.push(entry(route, output, reason, &[i; 3]));
    }
    store.put(batch.clone()).await.expect("put");
    assert_eq!(store.stats().entries, 10);
    assert_eq!(
        metric(
            &registry,
            "switchyard_dead_letter_messages_total{reason=\"too_large\",route=\"a\"}"
        ),
        5
    );
    assert_eq!(metric(&registry, "switchyard_dead_letter_depth"), 10);

    // Paginate by 3: four pages, in order, each id once.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.list(&Filter::default(), after, 3).expect("list");
        assert!(page.entries.len() <= 3);
        seen.extend(page.entries.iter().map(|s| s.id));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen.len(), 10);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));

    let only_a = Filter {
        route: Some("a".into()),
        ..Filter::default()
    };
    let page = store.list(&only_a, None, 100).expect("list");
    assert_eq!(page.entries.len(), 5);
    assert!(page.entries.iter().all(|s| s.route == "a"
        && s.output.as_deref() == Some("out")
        && s.reason == DeadReason::TooLarge
        && s.attempts == 3
        && s.topic == "sensors.a"
        && s.first_error == "first"));
    let verdicts = Filter {
        reason: Some(DeadReason::Verdict),
        output: None,
        ..Filter::default()
    };
    assert_eq!(
        store
            .list(&verdicts, None, 100)
            .expect("list")
            .entries
            .len(),
        5
    );
    let unknown = Filter {
        route: Some("nope".into()),
        ..Filter::default()
    };
    assert!(
        store
            .list(&unknown, None, 100)
            .expect("list")
            .entries
            .is_empty()
    );
    let future = Filter {
        since: Some(SystemTime::now() + Duration::from_secs(60)),
        ..Filter::default()
    };
    assert!(
        store
            .list(&future, None, 100)
            .expect("list")
            .entries
            .is_empty()
    );
    let past = Filter {
        until: Some(SystemTime::now() + Duration::from_secs(60)),
        ..Filter::default()
    };
    assert_eq!(
        store.list(&past, None, 100).expect("list").entries.len(),
        10
    );

    // Get: the whole message back.
    let first = seen[0];
    let (got, summary) = store.get(first).expect("get").expect("present");
    assert_eq!(got.message, batch[0].message);
    assert_eq!(got.route, "a");
    assert_eq!(summary.size, batch[0].message.size() as u64);
    assert_eq!(store.get(9999).expect("get"), None);

    // Remove (as a replay) the route "b" entries, and one purge.
    let (b_ids, _) = store.ids(
        &Filter {
            route: Some("b".into()),
            ..Filter::default()
        },
        None,
        100,
    );
    assert_eq!(
        store
            .remove(&b_ids, Removal::Replayed("b"))
            .await
            .expect("remove"),
        5
    );
    assert_eq!(
        store.remove(&b_ids, Removal::Purged).await.expect("remove"),
        0
    );
    assert_eq!(
        store
            .remove(&[first], Removal::Purged)
            .await
            .expect("remove"),
        1
    );
    assert_eq!(
        metric(
            &registry,
            "switchyard_dead_letter_replayed_total{route=\"b\"}"
        ),
        5
    );
    assert_eq!(metric(&registry, "switchyard_dead_letter_purged_total"), 1);
    let left = all_ids(&store);
    assert_eq!(left.len(), 4);
    let next_id = store.stats().next_id;
    store.close().expect("close");
    drop(store);

    // Reopen: the same entries, the same ids, and ids never go back.
    let (store, opened, _) = open(&storage, options());
    assert_eq!(opened.entries, 4);
    assert_eq!(all_ids(&store), left);
    let (got, _) = store.get(left[0]).expect("get").expect("present");
    assert_eq!(got.message, batch[2].message);
    store
        .put(vec![entry("a", None, DeadReason::PluginError, b"x")])
        .await
        .expect("put");
    assert!(all_ids(&store).last().is_some_and(|&id| id >= next_id));
}

#[tokio::test]
async fn retention_by_count() {
    let storage = MemoryStorage::new();
    let (store, _, registry) = open(
        &storage,
        Options {
            max_entries: 5,
            ..options()
        },
    );
    for i in 0..8u8 {
        store
            .put(vec![entry("a", None, DeadReason::Verdict, &[i])])
            .await
            .expect("put");
    }
    store.shared.enforce_retention().expect("retention");
    let ids = all_ids(&store);
    assert_eq!(ids.len(), 5);
    let (first, _) = store.get(ids[0]).expect("get").expect("present");
    assert_eq!(&first.message.payload[..], &[3]);
    assert_eq!(
        metric(
            &registry,
            "switchyard_dead_letter_expired_total{reason=\"verdict\"}"
        ),
        3
    );
    drop(store);
    let (store, opened, _) = open(&storage, options());
    assert_eq!(opened.entries, 5, "the expired entries stay gone");
    assert_eq!(all_ids(&store), ids);
}

#[tokio::test]
async fn retention_by_age() {
    let storage = MemoryStorage::new();
    let (store, _, registry) = open(
        &storage,
        Options {
            max_age: Duration::from_secs(3600),
            ..options()
        },
    );
    let mut old = entry("a", None, DeadReason::PluginError, b"old");
    old.last_failed = SystemTime::now() - Duration::from_secs(7200);
    store
        .put(vec![old, entry("a", None, DeadReason::Verdict, b"new")])
        .await
        .expect("put");
    store.shared.enforce_retention().expect("retention");
    let ids = all_ids(&store);
    assert_eq!(ids.len(), 1);
    let (kept, _) = store.get(ids[0]).expect("get").expect("present");
    assert_eq!(&kept.message.payload[..], b"new");
    assert_eq!(
        metric(
            &registry,
            "switchyard_dead_letter_expired_total{reason=\"plugin_error\"}"
        ),
        1
    );
}

#[tokio::test]
async fn retention_by_bytes_bounds_the_files() {
    let storage = MemoryStorage::new();
    let max_bytes = 1 << 20;
    let (store, _, _) = open(
        &storage,
        Options {
            max_bytes,
            ..options()
        },
    );
    let payload = vec![7u8; 10_000];
    let mut put_ids = Vec::new();
    for _ in 0..300 {
        store
            .put(vec![entry("a", None, DeadReason::Verdict, &payload)])
            .await
            .expect("put");
        put_ids.extend(all_ids(&store).last().copied());
        store.shared.enforce_retention().expect("retention");
        let stats = store.stats();
        assert!(stats.disk_bytes <= max_bytes + 11_000, "{stats:?}");
    }
    let stats = store.stats();
    assert!(stats.entries > 10 && stats.entries < 110, "{stats:?}");
    // What is kept is the newest.
    let ids = all_ids(&store);
    assert_eq!(ids, put_ids[put_ids.len() - ids.len()..]);
}

#[tokio::test]
async fn a_purge_frees_segments() {
    let storage = MemoryStorage::new();
    let (store, _, _) = open(
        &storage,
        Options {
            max_bytes: 1 << 20,
            ..options()
        },
    );
    let payload = vec![1u8; 20_000];
    for _ in 0..20 {
        store
            .put(vec![entry("a", None, DeadReason::Verdict, &payload)])
            .await
            .expect("put");
    }
    assert!(storage.segments().len() > 2, "{:?}", storage.segments());
    let ids = all_ids(&store);
    store.remove(&ids, Removal::Purged).await.expect("purge");
    store.shared.enforce_retention().expect("retention");
    assert_eq!(storage.segments().len(), 1);
    assert_eq!(store.stats().entries, 0);
}

#[tokio::test]
async fn batch_and_os_policies_commit() {
    for fsync in [Fsync::Batch(Duration::from_millis(5)), Fsync::Os] {
        let storage = MemoryStorage::new();
        let (store, _, _) = open(&storage, Options { fsync, ..options() });
        let puts = (0..20u8).map(|i| store.put(vec![entry("a", None, DeadReason::Verdict, &[i])]));
        for r in futures_join(puts).await {
            r.expect("put");
        }
        assert_eq!(store.stats().entries, 20);
        store.close().expect("close");
        assert!(
            store
                .put(vec![entry("a", None, DeadReason::Verdict, b"late")])
                .await
                .is_err()
        );
    }
}

async fn futures_join<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futures {
        set.push(Box::pin(f));
    }
    let mut out = Vec::new();
    // Polled together: the group commit sees them at once.
    let mut results: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut busy = false;
        for (f, r) in set.iter_mut().zip(results.iter_mut()) {
            if r.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *r = Some(v),
                    std::task::Poll::Pending => busy = true,
                }
            }
        }
        if busy {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.extend(results.into_iter().flatten());
    out
}

#[tokio::test]
async fn damage_costs_only_the_damaged_entry() {
    let storage = MemoryStorage::new();
    let (store, _, _) = open(&storage, options());
    for i in 0..5u8 {
        store
            .put(vec![entry("a", None, DeadReason::Verdict, &[i; 100])])
            .await
            .expect("put");
    }
    let ids = all_ids(&store);
    let slot = locked(&store.shared.inner).index.get(ids[2]).expect("slot");
    store.close().expect("close");
    drop(store);
    let name = storage.segments()[0].clone();
    let mut bytes = storage.bytes(&name).expect("segment");
    bytes[slot.offset as usize + 40] ^= 0xff;
    storage.set_bytes(&name, bytes);
    let (store, opened, _) = open(&storage, options());
    assert_eq!(opened.recovery.damaged.len(), 1, "{opened:?}");
    let mut expect = ids.clone();
    expect.remove(2);
    assert_eq!(all_ids(&store), expect);
}

#[derive(Debug, Clone)]
enum Op {
    /// Put this many entries on route `r{route}`.
    Put(usize, u8),
    /// Remove the live entry at this index (modulo).
    Remove(usize),
    /// Purge every entry of route `r{route}`.
    Purge(u8),
    /// Close and open again.
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1usize..5, 0u8..3).prop_map(|(n, r)| Op::Put(n, r)),
        2 => any::<usize>().prop_map(Op::Remove),
        1 => (0u8..3).prop_map(Op::Purge),
        1 => Just(Op::Reopen),
    ]
}

type Model = std::collections::BTreeMap<u64, (String, Vec<u8>)>;

/// The store lists exactly the model's entries, per route too, and each
/// reads back whole.
fn check(store: &DeadLetters, model: &Model) -> Result<(), TestCaseError> {
    let ids: Vec<u64> = model.keys().copied().collect();
    prop_assert_eq!(all_ids(store), ids);
    for r in 0..3 {
        let route = format!("r{r}");
        let filter = Filter {
            route: Some(route.clone()),
            ..Filter::default()
        };
        let listed: Vec<u64> = store
            .list(&filter, None, 1000)
            .expect("list")
            .entries
            .iter()
            .map(|s| s.id)
            .collect();
        let want: Vec<u64> = model
            .iter()
            .filter(|(_, (m, _))| *m == route)
            .map(|(id, _)| *id)
            .collect();
        prop_assert_eq!(listed, want);
    }
    for (id, (route, payload)) in model {
        let (e, _) = store.get(*id).expect("get").expect("present");
        prop_assert_eq!(&e.route, route);
        prop_assert_eq!(&e.message.payload[..], &payload[..]);
    }
    prop_assert_eq!(store.stats().entries as usize, model.len());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Against a model (id -> route and payload), through puts, removals,
    /// purges by route and reopens.
    #[test]
    fn the_store_behaves_like_a_map(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            let storage = MemoryStorage::new();
            let (mut store, _, _) = open(&storage, options());
            let mut model = Model::new();
            let mut n = 0u8;
            for op in &ops {
                match op {
                    Op::Put(count, route) => {
                        let route = format!("r{route}");
                        let before: std::collections::BTreeSet<u64> =
                            all_ids(&store).into_iter().collect();
                        let batch: Vec<DeadLetter> = (0..*count)
                            .map(|_| {
                                n = n.wrapping_add(1);
                                entry(&route, None, DeadReason::Verdict, &[n; 5])
                            })
                            .collect();
                        store.put(batch.clone()).await.expect("put");
                        let new: Vec<u64> =
                            all_ids(&store).into_iter().filter(|id| !before.contains(id)).collect();
                        prop_assert_eq!(new.len(), batch.len());
                        for (id, e) in new.into_iter().zip(&batch) {
                            model.insert(id, (route.clone(), e.message.payload.to_vec()));
                        }
                    }
                    Op::Remove(pick) => {
                        if let Some(&id) = model.keys().nth(pick % model.len().max(1)) {
                            let removed = store.remove(&[id], Removal::Purged).await.expect("remove");
                            prop_assert_eq!(removed, 1);
                            model.remove(&id);
                        }
                    }
                    Op::Purge(route) => {
                        let route = format!("r{route}");
                        let filter = Filter { route: Some(route.clone()), ..Filter::default() };
                        let removed = store.remove_matching(&filter, Removal::Purged).await.expect("purge");
                        let before = model.len();
                        model.retain(|_, (r, _)| *r != route);
                        prop_assert_eq!(removed as usize, before - model.len());
                    }
                    Op::Reopen => {
                        store.close().expect("close");
                        drop(store);
                        store = open(&storage, options()).0;
                    }
                }
                check(&store, &model)?;
            }
            Ok(())
        })?;
    }

    /// A crash at any point: every entry whose put resolved survives, with
    /// its id and its message, unless it was removed; no entry appears
    /// that was never put; a removal whose tombstone was durable stays.
    #[test]
    fn a_crash_keeps_what_was_durable_and_invents_nothing(
        ops in proptest::collection::vec((0u8..4, 1usize..4, any::<u16>()), 1..30),
        tear in any::<u64>(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            let storage = MemoryStorage::new();
            let (store, _, _) = open(&storage, Options { max_bytes: 1 << 20, ..options() });
            // Payload -> id, of the entries put and not removed.
            let mut live: std::collections::BTreeMap<u64, Vec<u8>> = Default::default();
            let mut removed = std::collections::BTreeSet::new();
            let mut n = 0u32;
            for (op, count, pick) in &ops {
                if *op == 0 && !live.is_empty() {
                    let ids: Vec<u64> = live.keys().copied().collect();
                    let id = ids[usize::from(*pick) % ids.len()];
                    store.remove(&[id], Removal::Purged).await.expect("remove");
                    live.remove(&id);
                    removed.insert(id);
                    continue;
                }
                let mut batch = Vec::new();
                for _ in 0..*count {
                    n += 1;
                    let payload = vec![(n % 251) as u8; usize::from(*pick % 2000) + 1];
                    batch.push(entry("r", None, DeadReason::Verdict, &payload));
                }
                let before: std::collections::BTreeSet<u64> = all_ids(&store).into_iter().collect();
                store.put(batch.clone()).await.expect("put");
                for id in all_ids(&store) {
                    if !before.contains(&id) {
                        let (e, _) = store.get(id).expect("get").expect("present");
                        live.insert(id, e.message.payload.to_vec());
                    }
                }
            }
            // An unsynced tail follows: one more entry written past the
            // last sync, with the writer stopped.
            store.close().expect("close");
            let maybe = {
                let mut inner = locked(&store.shared.inner);
                let seq = inner.log.next_seq();
                let mut buf = Vec::new();
                codec::encode_entry(seq, &entry("r", None, DeadReason::Verdict, b"maybe"), &mut buf);
                inner.log.write(&buf, seq..seq + 1).expect("write");
                seq
            };
            let mut state = tear;
            storage.crash(|n| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                (state >> 33) as usize % (n + 1)
            });
            // The process is gone: nothing of it may touch the files again.
            std::mem::forget(store);
            let (store, _, _) = open(&storage, options());
            let after: std::collections::BTreeSet<u64> = all_ids(&store).into_iter().collect();
            for (id, payload) in &live {
                prop_assert!(after.contains(id), "entry {} was durable", id);
                let (e, _) = store.get(*id).expect("get").expect("present");
                prop_assert_eq!(&e.message.payload[..], &payload[..]);
            }
            for id in &after {
                prop_assert!(live.contains_key(id) || *id == maybe, "entry {} was never put or was removed", id);
            }
            prop_assert!(removed.iter().all(|id| !after.contains(id)));
            Ok(())
        })?;
    }
}
