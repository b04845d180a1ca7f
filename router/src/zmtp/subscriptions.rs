//! Prefix subscriptions: which subscribers want a message whose first frame
//! is `topic`.
//!
//! [`SubscriptionTrie`] is a compressed (radix) trie over subscription
//! prefixes; each node lists the subscribers holding exactly that prefix.
//! Matching walks the topic once from the root, so its cost is bounded by
//! the length of the longest matching prefix, whatever the number of
//! subscriptions. Memory is one node per distinct prefix (plus at most one
//! split node each). The trie holds a set per prefix; duplicate
//! subscriptions by one subscriber are counted by the caller
//! ([`publish`](super::publish) keeps a count per subscriber and prefix and
//! only inserts on 0 -> 1 and removes on 1 -> 0).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use bytes::Bytes;
use tokio::sync::watch;

/// Index of a subscriber in the caller's table.
pub type SubscriberId = u32;

const ROOT: u32 = 0;

#[derive(Debug, Default, Clone)]
struct Node {
    /// Bytes on the edge from the parent to this node (empty for the root).
    label: Vec<u8>,
    /// Children, keyed by the first byte of their label (distinct).
    children: Vec<(u8, u32)>,
    /// Subscribers whose prefix ends exactly here.
    subs: Vec<SubscriberId>,
}

/// A compressed prefix trie mapping subscription prefixes to subscribers.
#[derive(Debug, Clone)]
pub struct SubscriptionTrie {
    nodes: Vec<Node>,
    free: Vec<u32>,
    len: usize,
}

impl Default for SubscriptionTrie {
    fn default() -> Self {
        Self::new()
    }
}

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl SubscriptionTrie {
    /// An empty trie.
    pub fn new() -> Self {
        Self {
            nodes: vec![Node::default()],
            free: Vec::new(),
            len: 0,
        }
    }

    /// Number of (prefix, subscriber) pairs held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no subscription is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn alloc(&mut self, node: Node) -> u32 {
        if let Some(i) = self.free.pop() {
            self.nodes[i as usize] = node;
            i
        } else {
            self.nodes.push(node);
            u32::try_from(self.nodes.len() - 1).expect("fewer than 2^32 trie nodes")
        }
    }

    fn child(&self, node: u32, first: u8) -> Option<(usize, u32)> {
        self.nodes[node as usize]
            .children
            .iter()
            .enumerate()
            .find(|(_, (b, _))| *b == first)
            .map(|(i, (_, c))| (i, *c))
    }

    /// Adds `sub` under `prefix`. Returns false if it was already there.
    pub fn insert(&mut self, prefix: &[u8], sub: SubscriberId) -> bool {
        let mut node = ROOT;
        let mut rest = prefix;
        loop {
            let Some(&first) = rest.first() else {
                let subs = &mut self.nodes[node as usize].subs;
                if subs.contains(&sub) {
                    return false;
                }
                subs.push(sub);
                self.len += 1;
                return true;
            };
            let Some((slot, child)) = self.child(node, first) else {
                let leaf = self.alloc(Node {
                    label: rest.to_vec(),
                    children: Vec::new(),
                    subs: vec![sub],
                });
                self.nodes[node as usize].children.push((first, leaf));
                self.len += 1;
                return true;
            };
            let label = &self.nodes[child as usize].label;
            let common = common_prefix(label, rest);
            if common < label.len() {
                // Split the edge: parent -> mid (label[..common]) -> child.
                let tail = self.nodes[child as usize].label.split_off(common);
                let head = std::mem::replace(&mut self.nodes[child as usize].label, tail);
                let child_first = self.nodes[child as usize].label[0];
                let mid = self.alloc(Node {
                    label: head,
                    children: vec![(child_first, child)],
                    subs: Vec::new(),
                });
                self.nodes[node as usize].children[slot].1 = mid;
                node = mid;
            } else {
                node = child;
            }
            rest = &rest[common..];
        }
    }

    /// Removes `sub` from `prefix`. Returns false if it was not there.
    pub fn remove(&mut self, prefix: &[u8], sub: SubscriberId) -> bool {
        // Path of (parent, slot in parent's children) down to the node.
        let mut path: Vec<(u32, usize)> = Vec::new();
        let mut node = ROOT;
        let mut rest = prefix;
        while let Some(&first) = rest.first() {
            let Some((slot, child)) = self.child(node, first) else {
                return false;
            };
            let label = &self.nodes[child as usize].label;
            if !rest.starts_with(label) {
                return false;
            }
            rest = &rest[label.len()..];
            path.push((node, slot));
            node = child;
        }
        let subs = &mut self.nodes[node as usize].subs;
        let Some(pos) = subs.iter().position(|s| *s == sub) else {
            return false;
        };
        subs.swap_remove(pos);
        self.len -= 1;
        self.prune(node, &path);
        true
    }

    /// Deletes `node` if it became useless and merges single-child chains,
    /// keeping the trie compressed (so memory follows the live prefixes).
    fn prune(&mut self, node: u32, path: &[(u32, usize)]) {
        if node == ROOT {
            return;
        }
        let n = &self.nodes[node as usize];
        if !n.subs.is_empty() {
            return;
        }
        let Some(&(parent, slot)) = path.last() else {
            return;
        };
        match n.children.len() {
            0 => {
                self.nodes[parent as usize].children.swap_remove(slot);
                self.release(node);
                // The parent may now be a subscriber-less single-child node.
                self.merge_if_chain(parent, &path[..path.len() - 1]);
            }
            1 => self.merge_if_chain(node, path),
            _ => {}
        }
    }

    /// Merges `node` into its only child when it holds no subscriber.
    fn merge_if_chain(&mut self, node: u32, path: &[(u32, usize)]) {
        if node == ROOT {
            return;
        }
        let n = &self.nodes[node as usize];
        if !n.subs.is_empty() || n.children.len() != 1 {
            return;
        }
        let Some(&(parent, slot)) = path.last() else {
            return;
        };
        let (_, child) = n.children[0];
        let mut label = std::mem::take(&mut self.nodes[node as usize].label);
        label.extend_from_slice(&self.nodes[child as usize].label);
        self.nodes[child as usize].label = label;
        self.nodes[parent as usize].children[slot].1 = child;
        self.release(node);
    }

    fn release(&mut self, node: u32) {
        self.nodes[node as usize] = Node::default();
        self.free.push(node);
    }

    /// Calls `f` for every subscriber holding a prefix of `topic`. A
    /// subscriber holding several matching prefixes is reported once per
    /// prefix; callers de-duplicate (e.g. with a per-send stamp).
    #[inline]
    pub fn for_each_match(&self, topic: &[u8], mut f: impl FnMut(SubscriberId)) {
        let mut node = &self.nodes[ROOT as usize];
        let mut pos = 0;
        loop {
            for &s in &node.subs {
                f(s);
            }
            let Some(&first) = topic.get(pos) else {
                return;
            };
            let Some(&(_, child)) = node.children.iter().find(|(b, _)| *b == first) else {
                return;
            };
            let next = &self.nodes[child as usize];
            if !topic[pos..].starts_with(&next.label) {
                return;
            }
            pos += next.label.len();
            node = next;
        }
    }

    /// Whether any held prefix is a prefix of `topic`.
    #[inline]
    pub fn matches_any(&self, topic: &[u8]) -> bool {
        let mut hit = false;
        self.for_each_match(topic, |_| hit = true);
        hit
    }

    /// Nodes in use (for tests and memory accounting).
    pub fn node_count(&self) -> usize {
        self.nodes.len() - self.free.len()
    }
}

/// The subscriptions a SUB socket wants: a count per distinct prefix (a
/// prefix subscribed twice needs two unsubscribes), a lock-free snapshot for
/// filtering inbound messages, and a change signal that every connection's
/// writer watches to send SUBSCRIBE/CANCEL for the difference to what it
/// already sent that peer (so a (re)connected publisher gets them all).
#[derive(Debug)]
pub(crate) struct SubscriptionSet {
    counts: Mutex<BTreeMap<Bytes, usize>>,
    /// Filter snapshot, rebuilt lazily by the first reader after a change
    /// (so a burst of N subscriptions costs one rebuild, not N).
    filter: ArcSwap<SubscriptionTrie>,
    stale: AtomicBool,
    changed: watch::Sender<()>,
}

impl Default for SubscriptionSet {
    fn default() -> Self {
        Self {
            counts: Mutex::new(BTreeMap::new()),
            filter: ArcSwap::from_pointee(SubscriptionTrie::new()),
            stale: AtomicBool::new(false),
            changed: watch::channel(()).0,
        }
    }
}

impl SubscriptionSet {
    fn counts(&self) -> std::sync::MutexGuard<'_, BTreeMap<Bytes, usize>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (single insert/remove), so a poisoned lock is still usable.
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds one subscription to `prefix`.
    pub(crate) fn subscribe(&self, prefix: Bytes) {
        let mut counts = self.counts();
        let n = counts.entry(prefix).or_insert(0);
        *n += 1;
        if *n == 1 {
            self.stale.store(true, Ordering::Release);
            drop(counts);
            self.changed.send_replace(());
        }
    }

    /// Removes one subscription to `prefix`; false if there was none.
    pub(crate) fn unsubscribe(&self, prefix: &[u8]) -> bool {
        let mut counts = self.counts();
        let Some(n) = counts.get_mut(prefix) else {
            return false;
        };
        *n -= 1;
        if *n == 0 {
            counts.remove(prefix);
            self.stale.store(true, Ordering::Release);
            drop(counts);
            self.changed.send_replace(());
        }
        true
    }

    /// The distinct prefixes wanted now.
    pub(crate) fn prefixes(&self) -> Vec<Bytes> {
        self.counts().keys().cloned().collect()
    }

    /// A snapshot for filtering inbound messages.
    pub(crate) fn filter(&self) -> Arc<SubscriptionTrie> {
        if self.stale.swap(false, Ordering::AcqRel) {
            // The flag is set under the counts lock, so this build sees the
            // change that set it (a later change sets it again).
            let counts = self.counts();
            let mut trie = SubscriptionTrie::new();
            for prefix in counts.keys() {
                trie.insert(prefix, 0);
            }
            let trie = Arc::new(trie);
            self.filter.store(trie.clone());
            return trie;
        }
        self.filter.load_full()
    }

    /// A change signal (marked changed once, so the first sync sends all).
    pub(crate) fn watch(&self) -> watch::Receiver<()> {
        let mut rx = self.changed.subscribe();
        rx.mark_changed();
        rx
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    fn matches(t: &SubscriptionTrie, topic: &[u8]) -> BTreeSet<SubscriberId> {
        let mut out = BTreeSet::new();
        t.for_each_match(topic, |s| {
            out.insert(s);
        });
        out
    }

    #[test]
    fn prefix_matching_basics() {
        let mut t = SubscriptionTrie::new();
        assert!(t.insert(b"abc", 1));
        assert!(!t.insert(b"abc", 1));
        assert!(t.insert(b"ab", 2));
        assert!(t.insert(b"", 3));
        assert!(t.insert(b"abd", 4));
        assert_eq!(matches(&t, b"abcdef"), [1, 2, 3].into());
        assert_eq!(matches(&t, b"ab"), [2, 3].into());
        assert_eq!(matches(&t, b"abd"), [2, 3, 4].into());
        assert_eq!(matches(&t, b"x"), [3].into());
        assert!(t.remove(b"ab", 2));
        assert!(!t.remove(b"ab", 2));
        assert!(!t.remove(b"a", 1));
        assert_eq!(matches(&t, b"abc"), [1, 3].into());
        assert!(t.remove(b"abc", 1));
        assert!(t.remove(b"abd", 4));
        assert!(t.remove(b"", 3));
        assert!(t.is_empty());
        assert_eq!(t.node_count(), 1, "everything pruned back to the root");
    }

    #[test]
    fn subscription_set_counts_duplicates() {
        let set = SubscriptionSet::default();
        let mut w = set.watch();
        assert!(w.has_changed().unwrap_or(false));
        w.mark_unchanged();
        set.subscribe(Bytes::from_static(b"a"));
        set.subscribe(Bytes::from_static(b"a"));
        assert!(w.has_changed().unwrap_or(false));
        assert!(set.filter().matches_any(b"abc"));
        assert!(set.unsubscribe(b"a"));
        assert!(set.filter().matches_any(b"abc"), "one subscription left");
        assert!(set.unsubscribe(b"a"));
        assert!(!set.unsubscribe(b"a"));
        assert!(!set.filter().matches_any(b"abc"));
        assert!(set.prefixes().is_empty());
    }

    #[test]
    fn many_subscriptions_cost_one_rebuild() {
        let set = SubscriptionSet::default();
        for i in 0..20_000u32 {
            set.subscribe(Bytes::from(format!("topic.{i}.")));
        }
        let f = set.filter();
        assert_eq!(f.len(), 20_000);
        assert!(f.matches_any(b"topic.19999.x"));
        assert!(!f.matches_any(b"topic.20000.x"));
        assert!(
            Arc::ptr_eq(&f, &set.filter()),
            "no rebuild without a change"
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(Vec<u8>, SubscriberId),
        Remove(Vec<u8>, SubscriberId),
    }

    fn key() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(prop::sample::select(vec![b'a', b'b', b'c']), 0..6)
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (key(), 0u32..5).prop_map(|(k, s)| Op::Insert(k, s)),
            (key(), 0u32..5).prop_map(|(k, s)| Op::Remove(k, s)),
        ]
    }

    proptest! {
        #[test]
        fn trie_matches_naive_model(ops in prop::collection::vec(op(), 0..80),
                                    topics in prop::collection::vec(key(), 1..20)) {
            let mut trie = SubscriptionTrie::new();
            let mut model: BTreeSet<(Vec<u8>, SubscriberId)> = BTreeSet::new();
            for op in ops {
                match op {
                    Op::Insert(k, s) => {
                        let fresh = model.insert((k.clone(), s));
                        prop_assert_eq!(trie.insert(&k, s), fresh);
                    }
                    Op::Remove(k, s) => {
                        let had = model.remove(&(k.clone(), s));
                        prop_assert_eq!(trie.remove(&k, s), had);
                    }
                }
                prop_assert_eq!(trie.len(), model.len());
                for topic in &topics {
                    let want: BTreeSet<SubscriberId> = model
                        .iter()
                        .filter(|(p, _)| topic.starts_with(p))
                        .map(|(_, s)| *s)
                        .collect();
                    prop_assert_eq!(matches(&trie, topic), want);
                }
            }
            // Memory follows live prefixes: at most 2 nodes per distinct prefix + root.
            let distinct: BTreeSet<&Vec<u8>> = model.iter().map(|(p, _)| p).collect();
            prop_assert!(trie.node_count() <= 1 + 2 * distinct.len());
        }
    }
}
