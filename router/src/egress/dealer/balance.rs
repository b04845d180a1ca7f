//! Choosing a service: the stable hash and the hash ring of
//! `consistent_hash`, and the pick of smooth weighted round-robin.
//! Pure functions over indices; the table decides which services may take
//! a request.

/// A stable 64-bit hash of `parts` joined (FNV-1a, then a finaliser that
/// spreads nearby inputs over the whole range). Stable across processes
/// and versions, so a key reaches the same service after a restart.
pub(super) fn hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // Keeps ("ab", "c") apart from ("a", "bc").
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Points each unit of weight puts on the ring. More points spread keys
/// more evenly; 64 keeps a service's share within a few percent.
const POINTS_PER_WEIGHT: u32 = 64;
/// Most points one service puts on the ring, whatever its weight.
const MAX_POINTS: u32 = 64 * 16;

/// A consistent-hash ring: every service owns points (by its key), and a
/// message goes to the owner of the first point at or after its hash.
/// Adding or removing one service only moves the keys of its own points.
#[derive(Debug, Default)]
pub(super) struct Ring {
    /// `(point, service index)`, sorted by point.
    points: Vec<(u64, usize)>,
}

impl Ring {
    /// The ring of `services`: `(key, weight)` by index.
    pub(super) fn build<'a>(services: impl Iterator<Item = (&'a [u8], u32)>) -> Self {
        let mut points = Vec::new();
        for (index, (key, weight)) in services.enumerate() {
            let n = weight
                .max(1)
                .saturating_mul(POINTS_PER_WEIGHT)
                .min(MAX_POINTS);
            for v in 0..n {
                points.push((hash(&[key, &v.to_be_bytes()]), index));
            }
        }
        points.sort_unstable();
        Self { points }
    }

    /// Service indices in ring order from `key`'s position, wrapping once
    /// around (a service appears once per point it owns).
    pub(super) fn walk(&self, key: u64) -> impl Iterator<Item = usize> + '_ {
        let start = self.points.partition_point(|p| p.0 < key);
        let n = self.points.len();
        (0..n).map(move |i| self.points[(start + i) % n].1)
    }
}

/// Smooth weighted round-robin over `candidates` (`(index, weight,
/// current)`): returns the index whose `current + weight` is largest
/// (the first on ties). [`commit`] then records the pick, so that over
/// any window of `sum(weights)` picks each index is chosen exactly
/// `weight` times, interleaved rather than in runs.
pub(super) fn weighted_pick(candidates: impl Iterator<Item = (usize, u32, i64)>) -> Option<usize> {
    let mut best: Option<(usize, i64)> = None;
    for (index, weight, current) in candidates {
        let score = current + i64::from(weight);
        if best.is_none_or(|(_, b)| score > b) {
            best = Some((index, score));
        }
    }
    best.map(|(index, _)| index)
}

/// Records a [`weighted_pick`] of `chosen`: every candidate's `current`
/// grows by its weight, the chosen one's drops by the total.
pub(super) fn commit<'a>(
    chosen: usize,
    candidates: impl Iterator<Item = (usize, u32, &'a mut i64)>,
) {
    let mut total = 0i64;
    let mut chosen_current = None;
    for (index, weight, current) in candidates {
        *current += i64::from(weight);
        total += i64::from(weight);
        if index == chosen {
            chosen_current = Some(current);
        }
    }
    if let Some(c) = chosen_current {
        *c -= total;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_stable_and_separates_parts() {
        assert_eq!(hash(&[b"abc"]), hash(&[b"abc"]));
        assert_ne!(hash(&[b"ab", b"c"]), hash(&[b"a", b"bc"]));
        assert_ne!(hash(&[b"a"]), hash(&[b"b"]));
    }

    #[test]
    fn removing_a_service_moves_only_its_keys() {
        let keys: [&[u8]; 4] = [b"a:1", b"b:2", b"c:3", b"d:4"];
        let full = Ring::build(keys.iter().map(|k| (*k, 1)));
        // Without service 2 (indices shift past it).
        let less = Ring::build(
            keys.iter()
                .enumerate()
                .filter(|(i, _)| *i != 2)
                .map(|(_, k)| (*k, 1)),
        );
        let mut owned = [0usize; 4];
        for k in 0..2000u32 {
            let h = hash(&[&k.to_be_bytes()]);
            let before = full.walk(h).next().expect("non-empty");
            let after = less.walk(h).next().expect("non-empty");
            let after = if after >= 2 { after + 1 } else { after };
            owned[before] += 1;
            if before != 2 {
                assert_eq!(before, after, "key {k} moved");
            } else {
                assert_ne!(after, 2);
            }
        }
        // Every service owns a fair part of the keys.
        assert!(owned.iter().all(|&n| n > 250), "{owned:?}");
    }

    #[test]
    fn smooth_weighted_round_robin_is_exact_and_interleaved() {
        let weights = [3u32, 1, 2];
        let mut current = [0i64; 3];
        let mut picks = Vec::new();
        for _ in 0..60 {
            let cands = (0..3).map(|i| (i, weights[i], current[i]));
            let chosen = weighted_pick(cands).expect("candidates");
            commit(
                chosen,
                current
                    .iter_mut()
                    .enumerate()
                    .map(|(i, c)| (i, weights[i], c)),
            );
            picks.push(chosen);
        }
        for window in picks.chunks(6) {
            let count = |i| window.iter().filter(|&&p| p == i).count();
            assert_eq!((count(0), count(1), count(2)), (3, 1, 2), "{picks:?}");
        }
        // Interleaved: never three times the same in a row.
        assert!(picks.windows(3).all(|w| !(w[0] == w[1] && w[1] == w[2])));
    }
}
