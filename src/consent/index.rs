//! Radix bucket index over a sorted `u64` key array: the exact half of a snapshot lookup.
//!
//! The perf anchors (`/work/shared/reference/perf-anchors.md` §1) measured a sorted array with a
//! one-level bucket table (`(key - min) >> shift`, ~4 keys per bucket) at ~100 ns per lookup
//! for 100 M keys, against ~1 µs for `binary_search`. One level assumes keys spread evenly
//! over `[min, max]`. Real MSISDNs do not: a Chinese list is dense around 86 13x… – 86 19x…
//! with a thin scatter of landlines and foreign numbers, so one level would put thousands of
//! keys in the few buckets that cover the mobile ranges.
//!
//! Hence two levels, both sized by where the keys actually are:
//!
//! * **L1**: up to 2^15 buckets by value over `[min, max]` (16 B each, ≤ 512 KiB: stays in
//!   cache). Each bucket describes its own L2 table: the range its keys actually span (not the
//!   bucket's width), less a few outliers at either end when they stretch it (a scatter of
//!   foreign numbers around a dense national block), and a shift.
//! * **L2**: per bucket, `u32` start positions of 2^k slots over that range, sized for ~5–10
//!   keys per slot; where keys clump (dense number blocks), the table is refined up to 8× until
//!   at most 2 % of the bucket's keys sit in slots longer than [`WINDOW`].
//! * **Slot**: scanned for the key (≤ 32 keys), else binary-searched within the slot.
//!
//! A lookup is L1 (cache) → one L2 entry (DRAM) → one or two cache lines of keys (DRAM).
//! Probes outside a bucket's table range are clamped to its first or last slot rather than
//! branched on, and the slot scan is a short loop: few instructions per lookup keeps several
//! independent lookups in flight (a branch-free 16-key window count was measured slower on
//! the dev box for that reason). That is the memory traffic of the perf anchors' one-level
//! table, while keeping fine slots on skewed data, where one level degrades to long scans.
//! Memory: ~0.6–0.85 B per key.
//!
//! The index covers `key >> low` so that the pair keys' two state bits are ignored: all
//! variants of one (msisdn, entity) land in the same slot.

/// L1 has at most `2^L1_MAX_BITS` buckets.
const L1_MAX_BITS: u32 = 15;
/// Keys per L1 bucket aimed for, below the cap.
const L1_TARGET: usize = 64;
/// Keys per L2 slot aimed for at first (the average lands between this and twice this).
const SLOT_TARGET: usize = 5;
/// Slots longer than this count as spilled when sizing a table.
pub(crate) const WINDOW: usize = 16;
/// Slots up to this length are scanned, longer ones binary-searched.
const SCAN_MAX: usize = 32;
/// A bucket's table is refined while more than 1/`SPILL_DIV` of its keys are in long slots...
const SPILL_DIV: usize = 50;
/// ... by at most this many extra bits.
const MAX_REFINE: u32 = 3;
/// At most 2^26 slots per bucket (the slot count shares a u32 with the shift).
const MAX_SLOT_BITS: u32 = 26;
/// Largest key array the index (and so the snapshot format) supports: positions are u32.
pub(crate) const MAX_KEYS: u64 = u32::MAX as u64 - 1;

#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
struct L1 {
    /// Lowest `d = probe - min` in the bucket.
    base: u64,
    /// First entry of the bucket's table in `l2`.
    off: u32,
    /// `last << 6 | shift`: slot = `min((d - base) >> shift, last)`.
    last_shift: u32,
}

/// Index over one sorted, duplicate-free key array. Built at load; the keys themselves are not
/// owned (they live in the snapshot's buffer), so every lookup takes the slice it was built
/// from.
#[derive(Debug, Clone, Default)]
pub(crate) struct RadixIndex {
    /// Low bits of each key ignored (2 for pair keys).
    low: u32,
    min: u64,
    /// `max - min` of the probes.
    span: u64,
    empty: bool,
    shift1: u32,
    l1: Vec<L1>,
    l2: Vec<u32>,
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

/// Outlier counts tried at each end of a bucket's range.
const TRIMS: [usize; 6] = [0, 4, 16, 64, 256, 1024];

/// How many keys to leave out of a bucket's table range at the low and high end. A dense
/// national block often shares its bucket with a scatter of foreign numbers that would
/// stretch the range: among the trims in [`TRIMS`] (at most 1/32 of the bucket in total) the
/// one with the fewest keys left out whose range is within 25 % of the narrowest is taken, if
/// it at least halves the range. Left-out keys land in the first / last slot (lookups clamp).
fn trim(d: &impl Fn(usize) -> u64, s: usize, e: usize) -> (usize, usize) {
    let count = e - s;
    let span = |lo: usize, hi: usize| d(e - 1 - hi) - d(s + lo);
    let full = span(0, 0);
    let options = || {
        TRIMS.iter().flat_map(|&lo| TRIMS.iter().map(move |&hi| (lo, hi))).filter(|&(lo, hi)| (lo + hi) * 32 <= count)
    };
    let narrowest = options().map(|(lo, hi)| span(lo, hi)).min().unwrap_or(full);
    if narrowest > full / 2 {
        return (0, 0);
    }
    let limit = narrowest + narrowest / 4;
    options().filter(|&(lo, hi)| span(lo, hi) <= limit).min_by_key(|&(lo, hi)| lo + hi).unwrap_or((0, 0))
}

impl RadixIndex {
    /// Builds the index. `keys` must be sorted with `key >> low` strictly increasing and
    /// `keys.len() <= MAX_KEYS` (the loader checks both first).
    pub(crate) fn build(keys: &[u64], low: u32) -> RadixIndex {
        let n = keys.len();
        assert!(n as u64 <= MAX_KEYS, "index supports at most u32::MAX - 1 keys");
        if n == 0 {
            return RadixIndex { low, empty: true, ..RadixIndex::default() };
        }
        let min = keys[0] >> low;
        let d = |i: usize| (keys[i] >> low) - min;
        let span = d(n - 1);
        let want_bits = ceil_log2(n / L1_TARGET).clamp(1, L1_MAX_BITS);
        let shift1 = (u64::BITS - span.leading_zeros()).saturating_sub(want_bits);
        let nb1 = (span >> shift1) as usize + 1;

        // Bucket boundaries by binary search (keys are sorted): 2^15 searches, not a pass.
        let mut starts = vec![n as u32; nb1 + 1];
        starts[0] = 0;
        for b in 1..nb1 {
            let from = starts[b - 1] as usize;
            let bound = (b as u64) << shift1; // ≤ span: no overflow
            starts[b] = (from + keys[from..].partition_point(|&k| (k >> low) - min < bound)) as u32;
        }

        let mut l1 = Vec::with_capacity(nb1);
        let mut l2: Vec<u32> = Vec::with_capacity(n / SLOT_TARGET + 2 * nb1);
        for b in 0..nb1 {
            let (s, e) = (starts[b] as usize, starts[b + 1] as usize);
            let off = u32::try_from(l2.len()).expect("index table fits u32");
            if e == s {
                // Empty bucket: one empty slot.
                l1.push(L1 { base: 0, off, last_shift: 63 });
                l2.extend_from_slice(&[s as u32, s as u32]);
                continue;
            }
            // The table covers the bucket's keys, less up to TRIMS sparse outliers at either
            // end when that narrows the range a lot; outliers land in the first / last slot
            // (lookups clamp to them).
            let (t_lo, t_hi) = trim(&d, s, e);
            let base = d(s + t_lo);
            let sub_span = d(e - 1 - t_hi) - base;
            let span_bits = u64::BITS - sub_span.leading_zeros();
            let mut bits = floor_log2((e - s) / SLOT_TARGET);
            let max_bits = (bits + MAX_REFINE).min(span_bits).min(MAX_SLOT_BITS);
            bits = bits.min(max_bits);
            loop {
                let shift = span_bits - bits;
                let slots = (sub_span >> shift) as usize + 1;
                let at = l2.len();
                l2.resize(at + slots + 1, e as u32);
                let table = &mut l2[at..];
                let mut next = 0usize;
                for (i, &k) in keys[s..e].iter().enumerate() {
                    let slot = ((((k >> low) - min).saturating_sub(base)) >> shift).min(sub_span >> shift) as usize;
                    while next <= slot {
                        table[next] = (s + i) as u32;
                        next += 1;
                    }
                }
                // Refine while too many keys sit in slots longer than the window.
                let spilled: usize = table.windows(2).map(|w| (w[1] - w[0]) as usize).filter(|&len| len > WINDOW).sum();
                if spilled * SPILL_DIV > e - s && bits < max_bits {
                    l2.truncate(at);
                    bits += 1;
                    continue;
                }
                l1.push(L1 { base, off, last_shift: ((slots - 1) as u32) << 6 | shift });
                break;
            }
        }
        l2.shrink_to_fit();
        RadixIndex { low, min, span, empty: false, shift1, l1, l2 }
    }

    /// Heap bytes held by the index.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.l1.capacity() * std::mem::size_of::<L1>() + self.l2.capacity() * 4
    }

    /// The candidate range `[start, end)` of `keys` for `probe`.
    #[inline(always)]
    fn range(&self, probe: u64) -> (usize, usize) {
        let d = probe.wrapping_sub(self.min);
        if self.empty || d > self.span {
            return (0, 0);
        }
        let e = self.l1[(d >> self.shift1) as usize];
        let slot = ((d.saturating_sub(e.base)) >> (e.last_shift & 63)).min(u64::from(e.last_shift >> 6));
        let o = e.off as usize + slot as usize;
        (self.l2[o] as usize, self.l2[o + 1] as usize)
    }

    /// The stored key whose `key >> low` equals `probe`, if any.
    ///
    /// The slot is scanned for an equal key: a short loop with few instructions, so that the
    /// CPU keeps several independent lookups (each two DRAM misses) in flight. Measured on the
    /// dev box this beat a branch-free fixed-window count, whose extra instructions limit how
    /// many lookups fit in the reorder window. Slots longer than [`SCAN_MAX`] (rare: the
    /// tables are refined until they are) are binary-searched.
    #[inline(always)]
    pub(crate) fn find(&self, keys: &[u64], probe: u64) -> Option<u64> {
        let (s, e) = self.range(probe);
        let low = self.low;
        let slot = &keys[s..e];
        if slot.len() <= SCAN_MAX {
            slot.iter().copied().find(|&k| k >> low == probe)
        } else {
            let i = slot.partition_point(|&k| (k >> low) < probe);
            slot.get(i).copied().filter(|&k| k >> low == probe)
        }
    }

    /// Longest slot and the share of keys in slots longer than [`WINDOW`] (tests, diagnostics).
    #[cfg(test)]
    fn shape(&self) -> (usize, f64) {
        let (mut longest, mut spilled, mut total) = (0usize, 0usize, 0usize);
        for e in &self.l1 {
            for o in e.off as usize..=e.off as usize + (e.last_shift >> 6) as usize {
                let len = (self.l2[o + 1] - self.l2[o]) as usize;
                longest = longest.max(len);
                total += len;
                if len > WINDOW {
                    spilled += len;
                }
            }
        }
        (longest, spilled as f64 / total.max(1) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// splitmix64, for reproducible test data without a rand dependency.
    pub(super) fn rng(seed: &mut u64) -> u64 {
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
        assert!(keys.len() < 1000 || bpk < 1.2, "{bpk} index bytes per key");
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
        let (longest, spilled) = idx.shape();
        assert!(spilled < 0.05, "longest slot {longest}, {spilled} of keys in long slots");
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
        assert!(longest <= 16, "longest slot {longest}");
    }
}

/// Diagnostic, not a regression test: index cost against a raw random read and the perf
/// anchors' one-level table on this machine, uniform and skewed keys. Run with
/// `cargo test --release --lib consent::index::perf_probe -- --ignored --nocapture`.
#[cfg(test)]
mod perf_probe {
    use super::tests::rng;
    use super::*;
    use std::time::Instant;

    #[test]
    #[ignore]
    fn probe() {
        for (name, skew) in [("uniform", false), ("skewed", true)] {
            for n in [1_000_000usize, 10_000_000, if skew { 50_000_000 } else { 0 }] {
                if n == 0 {
                    continue;
                }
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
                let bits = usize::BITS - (keys.len() / 4).leading_zeros();
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
                let mut one = f64::NAN;
                for _ in 0..u32::from(!skew) * 3 {
                    let t = Instant::now();
                    let h = q
                        .iter()
                        .filter(|&&p| {
                            let p = std::hint::black_box(p);
                            let b = ((p - min) >> shift) as usize;
                            let (s, e) = (table[b] as usize, table[b + 1] as usize);
                            keys[s..e].contains(&p)
                        })
                        .count();
                    std::hint::black_box(h);
                    one = one.min(t.elapsed().as_nanos() as f64 / q.len() as f64).min(if one.is_nan() {
                        f64::MAX
                    } else {
                        one
                    });
                }
                let mut v_any = f64::MAX;
                let mut v_range = f64::MAX;
                for _ in 0..3 {
                    let t = Instant::now();
                    let h = q
                        .iter()
                        .filter(|&&p| {
                            let p = std::hint::black_box(p);
                            let (s, e) = idx.range(p);
                            keys[s..e].contains(&p)
                        })
                        .count();
                    std::hint::black_box(h);
                    v_any = v_any.min(t.elapsed().as_nanos() as f64 / q.len() as f64);
                    let t = Instant::now();
                    let h: usize = q.iter().map(|&p| idx.range(std::hint::black_box(p)).0).sum();
                    std::hint::black_box(h);
                    v_range = v_range.min(t.elapsed().as_nanos() as f64 / q.len() as f64);
                }
                eprintln!("  range+any {v_any:.1} ns; range only {v_range:.1} ns");
                eprintln!(
                    "  raw random read {raw:.1} ns; one-level radix ({:.2} B/key) {one:.1} ns",
                    table.len() as f64 * 4.0 / keys.len() as f64
                );
                let (longest, spilled) = idx.shape();
                eprintln!(
                    "{name} n={n}: build {bt:?}, {:.2} B/key, longest {longest}, spilled {spilled:.4}; thr {ns:.1} ns, lat {lat:.1} ns ({hits})",
                    idx.heap_bytes() as f64 / keys.len() as f64,
                );
            }
        }
    }
}
