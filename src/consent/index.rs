//! Radix bucket index over a sorted `u64` key array: the exact half of a snapshot lookup.
//!
//! The perf anchors (`/work/shared/reference/perf-anchors.md` §1) measured a sorted array with a
//! one-level bucket table (`(key - min) >> shift`, ~4 keys per bucket) at ~100 ns per lookup
//! for 100 M keys, against ~1 µs for `binary_search`. One level assumes keys spread evenly
//! over `[min, max]`. Real MSISDNs do not: a Chinese list is dense around 86 13x… – 86 19x…
//! with a thin scatter of landlines and foreign numbers, so one level would put thousands of
//! keys in the few buckets that cover the mobile ranges.
//!
//! Hence a small radix *tree* whose nodes adapt to where the keys are:
//!
//! * **Root**: about one slot per 256 keys (at most 2^16, ≤ 256 KiB: stays in cache) over
//!   `[min, max]`. A slot is the position of its first key (its range ends where the next
//!   slot's begins), or a child node.
//! * **Child**: a slot holding more than [`SPLIT_ABOVE`] keys becomes a node over the range its
//!   keys *actually* span (not the slot's width), with 5–10 keys per slot on average. A dense
//!   block of numbers inside a wide, sparse range is thus cut finely wherever it sits, and
//!   outliers only cost a few extra slots. At most [`MAX_DEPTH`] levels.
//! * **Leaf**: a linear scan (≤ 16 keys) or, where keys still clump below the deepest level, a
//!   binary search bounded by the leaf.
//!
//! For uniform keys a lookup reads the root slot (cached), one node (cached: 32 B per 256
//! keys), one child slot and one or two cache lines of keys: the same DRAM traffic as the
//! one-level table. Memory is ~0.7 B per key (one u32 per ~6 keys). The index covers
//! `key >> low` so that the pair keys' two state bits are ignored: all variants of one
//! (msisdn, entity) land in the same leaf.

/// The root has at most `2^ROOT_MAX_BITS` slots.
const ROOT_MAX_BITS: u32 = 16;
/// Keys per root slot aimed for.
const ROOT_TARGET: usize = 256;
/// Fewest keys per child slot aimed for (the average is between this and twice this).
pub(crate) const LEAF_MIN: usize = 5;
/// A slot with more keys than this becomes a child node (so leaves fit the search window).
pub(crate) const SPLIT_ABOVE: usize = WINDOW;
/// Root plus children: at most this many levels.
pub(crate) const MAX_DEPTH: u32 = 4;
/// Keys compared per leaf search; a longer leaf (only below [`MAX_DEPTH`]) is binary-searched.
pub(crate) const WINDOW: usize = 16;
/// Slot tag: the low 31 bits are a node index, not a key position.
const CHILD: u32 = 1 << 31;
/// Largest key array the index (and so the snapshot format) supports: positions need 31 bits.
pub(crate) const MAX_KEYS: u64 = (1 << 31) - 1;

#[derive(Debug, Clone, Copy, Default)]
struct Node {
    /// Lowest `d = probe - min` under this node.
    base: u64,
    /// Highest `d` minus `base`; larger offsets are absent.
    span: u64,
    /// Slot = `(d - base) >> shift`.
    shift: u32,
    /// First slot in `slots`.
    slot_off: u32,
    /// Position of the node's first key (the end of the slot before it).
    start: u32,
}

/// Index over one sorted, duplicate-free key array. Built at load; the keys themselves are not
/// owned (they live in the snapshot mapping), so every lookup takes the slice it was built
/// from.
#[derive(Debug, Clone, Default)]
pub(crate) struct RadixIndex {
    /// Low bits of each key ignored (2 for pair keys).
    low: u32,
    min: u64,
    empty: bool,
    /// `nodes[0]` is the root.
    nodes: Vec<Node>,
    slots: Vec<u32>,
}

#[inline]
fn ceil_log2(x: usize) -> u32 {
    if x <= 1 {
        0
    } else {
        usize::BITS - (x - 1).leading_zeros()
    }
}

#[inline]
fn floor_log2(x: usize) -> u32 {
    if x <= 1 {
        0
    } else {
        usize::BITS - 1 - x.leading_zeros()
    }
}

impl RadixIndex {
    /// Builds the index. `keys` must be sorted with `key >> low` strictly increasing and
    /// `keys.len() <= MAX_KEYS` (the loader checks both first).
    pub(crate) fn build(keys: &[u64], low: u32) -> RadixIndex {
        let n = keys.len();
        assert!(n as u64 <= MAX_KEYS, "index supports at most 2^31 - 1 keys");
        let mut idx = RadixIndex { low, empty: n == 0, ..RadixIndex::default() };
        if n == 0 {
            return idx;
        }
        idx.min = keys[0] >> low;
        let root_bits = ceil_log2(n / ROOT_TARGET).clamp(1, ROOT_MAX_BITS);
        idx.build_node(keys, 0, n, root_bits, 0);
        idx.nodes.shrink_to_fit();
        idx.slots.shrink_to_fit();
        idx
    }

    /// Adds a node over `keys[s..e]` (at least 2 keys) and returns its index.
    fn build_node(&mut self, keys: &[u64], s: usize, e: usize, bits: u32, depth: u32) -> u32 {
        let (low, min) = (self.low, self.min);
        let d = |i: usize| (keys[i] >> low) - min;
        let base = d(s);
        let span = d(e - 1) - base;
        let shift = (u64::BITS - span.leading_zeros()).saturating_sub(bits);
        let n_slots = (span >> shift) as usize + 1;
        let off = self.slots.len();
        let me = self.nodes.len();
        self.nodes.push(Node {
            base,
            span,
            shift,
            slot_off: u32::try_from(off).expect("index slots fit u32"),
            start: s as u32,
        });
        self.slots.resize(off + n_slots + 1, e as u32);
        let mut next = 0usize;
        for i in s..e {
            let slot = ((d(i) - base) >> shift) as usize;
            while next <= slot {
                self.slots[off + next] = i as u32;
                next += 1;
            }
        }
        if depth + 1 < MAX_DEPTH {
            for slot in 0..n_slots {
                // Neither entry has been replaced yet: slots are visited in order.
                let (ls, le) = (self.slots[off + slot] as usize, self.slots[off + slot + 1] as usize);
                if le - ls > SPLIT_ABOVE {
                    let bits = floor_log2((le - ls) / LEAF_MIN).max(1);
                    let child = self.build_node(keys, ls, le, bits, depth + 1);
                    self.slots[off + slot] = CHILD | child;
                }
            }
        }
        u32::try_from(me).ok().filter(|&m| m < CHILD).expect("fewer than 2^31 index nodes")
    }

    /// Heap bytes held by the index.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.nodes.capacity() * std::mem::size_of::<Node>() + self.slots.capacity() * 4
    }

    /// Position stored in a slot entry (a child's first key for a child entry).
    #[inline(always)]
    fn position(&self, entry: u32) -> usize {
        if entry & CHILD == 0 {
            entry as usize
        } else {
            self.nodes[(entry & !CHILD) as usize].start as usize
        }
    }

    /// The candidate range `[start, end)` of `keys` for `probe` (empty when out of range).
    #[inline(always)]
    fn range(&self, probe: u64) -> (usize, usize) {
        if self.empty {
            return (0, 0);
        }
        let d = probe.wrapping_sub(self.min);
        let mut node = &self.nodes[0];
        loop {
            let rel = d.wrapping_sub(node.base);
            if rel > node.span {
                return (0, 0);
            }
            let o = node.slot_off as usize + (rel >> node.shift) as usize;
            let entry = self.slots[o];
            if entry & CHILD != 0 {
                node = &self.nodes[(entry & !CHILD) as usize];
                continue;
            }
            return (entry as usize, self.position(self.slots[o + 1]));
        }
    }

    /// The stored key whose `key >> low` equals `probe`, if any.
    ///
    /// Branch-free in the common case, so that independent lookups overlap in the CPU: the
    /// leaf (≤ [`WINDOW`] keys by construction) is searched by counting the keys below `probe`
    /// in a fixed window that contains it. Keys outside the leaf do not disturb the count:
    /// those before it are smaller than any probe routed to the leaf, those after it larger.
    #[inline(always)]
    pub(crate) fn find(&self, keys: &[u64], probe: u64) -> Option<u64> {
        let (s, e) = self.range(probe);
        let low = self.low;
        let n = keys.len();
        if e - s <= WINDOW && n >= WINDOW {
            let ws = s.min(n - WINDOW);
            let w: &[u64; WINDOW] = keys[ws..ws + WINDOW].try_into().expect("window in bounds");
            let below: usize = w.iter().map(|&k| usize::from((k >> low) < probe)).sum();
            let k = *keys.get(ws + below)?;
            return (k >> low == probe).then_some(k);
        }
        let leaf = &keys[s..e];
        let i = leaf.partition_point(|&k| (k >> low) < probe);
        leaf.get(i).copied().filter(|&k| k >> low == probe)
    }

    /// Longest leaf and deepest level (diagnostics and tests).
    #[cfg(test)]
    fn shape(&self) -> (usize, u32) {
        let slots = |n: &Node| n.slot_off as usize..n.slot_off as usize + (n.span >> n.shift) as usize + 1;
        let longest = self
            .nodes
            .iter()
            .flat_map(slots)
            .filter(|&o| self.slots[o] & CHILD == 0)
            .map(|o| self.position(self.slots[o + 1]) - self.slots[o] as usize)
            .max()
            .unwrap_or(0);
        fn depth(idx: &RadixIndex, n: usize) -> u32 {
            let node = idx.nodes[n];
            let r = node.slot_off as usize..node.slot_off as usize + (node.span >> node.shift) as usize + 1;
            1 + idx.slots[r]
                .iter()
                .filter(|&&e| e & CHILD != 0)
                .map(|&e| depth(idx, (e & !CHILD) as usize))
                .max()
                .unwrap_or(0)
        }
        (longest, if self.nodes.is_empty() { 0 } else { depth(self, 0) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// splitmix64, for reproducible test data without a rand dependency.
    fn rng(seed: &mut u64) -> u64 {
        *seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn check(keys: &[u64], low: u32) -> RadixIndex {
        let idx = RadixIndex::build(keys, low);
        for &k in keys {
            assert_eq!(idx.find(keys, k >> low), Some(k), "present key {k}");
        }
        let mut s = 7;
        let set: std::collections::HashSet<u64> = keys.iter().map(|k| k >> low).collect();
        for _ in 0..20_000 {
            let base = keys.get(rng(&mut s) as usize % keys.len().max(1)).copied().unwrap_or(0) >> low;
            for p in [base.wrapping_sub(1), base.wrapping_add(1), rng(&mut s) >> 14, 0, u64::MAX >> low] {
                assert_eq!(idx.find(keys, p).is_some(), set.contains(&p), "probe {p}");
            }
        }
        let bpk = idx.heap_bytes() as f64 / keys.len().max(1) as f64;
        assert!(keys.len() < 1000 || bpk < 1.0, "{bpk} index bytes per key");
        idx
    }

    #[test]
    fn uniform_and_small() {
        check(&[], 0);
        check(&[42], 0);
        check(&[5, 9], 0);
        check(&(0..1000).collect::<Vec<_>>(), 0);
        let mut s = 1;
        let mut keys: Vec<u64> = (0..100_000).map(|_| 8_600_000_000_000 + rng(&mut s) % 100_000_000_000_000).collect();
        keys.sort_unstable();
        keys.dedup();
        check(&keys, 0);
    }

    #[test]
    fn skewed_like_real_numbers() {
        // 95 % Chinese mobiles in a narrow band, a few landlines, a scatter of foreign numbers.
        let mut s = 3;
        let mut keys = Vec::new();
        for i in 0..200_000u64 {
            let k = match i % 100 {
                0..=94 => 8_613_000_000_000 + rng(&mut s) % 900_000_000,
                95..=97 => 861_000_000_000 + rng(&mut s) % 10_000_000_000,
                _ => 1_000_000 + rng(&mut s) % 999_999_000_000_000,
            };
            keys.push(k);
        }
        keys.sort_unstable();
        keys.dedup();
        let idx = check(&keys, 0);
        let (longest, depth) = idx.shape();
        assert!(longest <= 40 && depth <= 3, "longest leaf {longest}, depth {depth}");
        // The same as pair keys: low 2 bits are state.
        let pairs: Vec<u64> =
            keys.iter().enumerate().map(|(i, k)| (k << 4) | ((i as u64 % 3) << 2) | (i as u64 % 3)).collect();
        check(&pairs, 2);
    }

    #[test]
    fn extreme_span() {
        let mut keys: Vec<u64> = vec![0, 1, 2, u64::MAX - 1, u64::MAX];
        keys.extend((0..5000).map(|i| (1u64 << 40) + i * 3));
        keys.sort_unstable();
        let idx = check(&keys, 0);
        // The dense block is cut finely although it is a speck of the full range.
        let (longest, _) = idx.shape();
        assert!(longest <= 32, "longest leaf {longest}");
    }
}

#[cfg(test)]
mod perf_probe {
    use super::*;
    use std::time::Instant;

    fn rng(seed: &mut u64) -> u64 {
        *seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    #[test]
    #[ignore]
    fn probe() {
        for (name, skew) in [("uniform", false), ("skewed", true)] {
            for n in [1_000_000usize, 10_000_000] {
                let mut s = 1;
                let mut keys: Vec<u64> = (0..n)
                    .map(|_| {
                        let r = rng(&mut s);
                        if !skew {
                            1_000_000_000_000 + r % 9_000_000_000_000
                        } else {
                            match r % 100 {
                                0..=89 => 8_613_000_000_000 + (r >> 8) % 7_000_000_000,
                                90..=96 => 861_000_000_000 + (r >> 8) % 9_000_000_000,
                                _ => 1_000_000_000 + (r >> 8) % 998_000_000_000_000,
                            }
                        }
                    })
                    .collect();
                keys.sort_unstable();
                keys.dedup();
                let t = Instant::now();
                let idx = RadixIndex::build(&keys, 0);
                let bt = t.elapsed();
                let q: Vec<u64> = (0..2_000_000).map(|_| keys[rng(&mut s) as usize % keys.len()]).collect();
                let mut ns = f64::MAX;
                let mut hits = 0;
                for _ in 0..3 {
                    let t = Instant::now();
                    hits = q.iter().filter(|&&p| idx.find(&keys, std::hint::black_box(p)).is_some()).count();
                    ns = ns.min(t.elapsed().as_nanos() as f64 / q.len() as f64);
                }
                let mut lat = f64::MAX;
                for _ in 0..3 {
                    let t = Instant::now();
                    let mut acc = 0u64;
                    for &p in &q {
                        // Serialised: the next probe depends on this result.
                        acc = idx.find(&keys, p ^ (acc >> 63)).map_or(1, |k| k & 1);
                    }
                    std::hint::black_box(acc);
                    lat = lat.min(t.elapsed().as_nanos() as f64 / q.len() as f64);
                }
                // Reference points on this machine: one random read of the key array, and the
                // one-level radix table of the perf anchors.
                let mut raw = f64::MAX;
                for _ in 0..3 {
                    let t = Instant::now();
                    let mut x = 0u64;
                    for &p in &q {
                        x = x.wrapping_add(keys[(p as usize).wrapping_mul(0x9E37_79B9) % keys.len()]);
                    }
                    std::hint::black_box(x);
                    raw = raw.min(t.elapsed().as_nanos() as f64 / q.len() as f64);
                }
                let (min, max) = (keys[0], keys[keys.len() - 1]);
                let bits = (usize::BITS - (keys.len() / 4).leading_zeros()) as u32;
                let shift = (u64::BITS - (max - min).leading_zeros()).saturating_sub(bits);
                let nb = ((max - min) >> shift) as usize + 1;
                let mut table = vec![0u32; nb + 1];
                let mut next = 0;
                for (i, &k) in keys.iter().enumerate() {
                    let b = ((k - min) >> shift) as usize;
                    while next <= b {
                        table[next] = i as u32;
                        next += 1;
                    }
                }
                for t in &mut table[next..] {
                    *t = keys.len() as u32;
                }
                let mut one = f64::MAX;
                for _ in 0..3 {
                    let t = Instant::now();
                    let h = q
                        .iter()
                        .filter(|&&p| {
                            let p = std::hint::black_box(p);
                            let b = ((p - min) >> shift) as usize;
                            let (s, e) = (table[b] as usize, table[b + 1] as usize);
                            keys[s..e].iter().any(|&k| k == p)
                        })
                        .count();
                    std::hint::black_box(h);
                    one = one.min(t.elapsed().as_nanos() as f64 / q.len() as f64);
                }
                eprintln!("  raw random read {raw:.1} ns; one-level radix ({:.2} B/key) {one:.1} ns", table.len() as f64 * 4.0 / keys.len() as f64);
                let (longest, depth) = idx.shape();
                eprintln!(
                    "{name} n={n}: build {bt:?}, {:.2} B/key, nodes {}, depth {depth}, longest {longest}; thr {ns:.1} ns, lat {lat:.1} ns ({hits})",
                    idx.heap_bytes() as f64 / keys.len() as f64,
                    idx.nodes.len()
                );
            }
        }
    }
}
