//! The snapshot's lookup structure: one bucketised hash table holding every statement of
//! every subscriber — do-not-call registrations and (msisdn, entity) pairs alike — so that a
//! policy decision reads **one cache line** of snapshot memory.
//!
//! # Why
//!
//! Format 1 kept DNC numbers and pairs as two sorted arrays, each behind a BinaryFuse8 filter
//! and a radix index built at load. A decision for a subscriber without a pair asked both:
//! filter → index slot → key line, twice; on the 2-core VM that was ~550 ns per decision at
//! 10 M records, ~60 % of it waiting on the index and key lines. Here the entries of one
//! subscriber share a home bucket chosen by a hash of the MSISDN alone, so the pair *and* the
//! DNC entry of a destination come from the same 64-byte line, and no load-time index or
//! filter exists (a filter probe would cost about what the one line costs).
//!
//! # Layout
//!
//! * **Entry** — one `u64`, a packed key `msisdn << S | entity << 2 | state`
//!   with `S = entity_bits + 2`, where state 0–2 is a pair's [`super::PairState`] and
//!   **state 3 marks the DNC entry** (its entity field is 0). `0` is an empty slot (no MSISDN
//!   is 0).
//! * **Buckets** — `B = ⌈n / 7⌉` buckets of [`SLOTS`] = 8 slots (64 bytes, one cache line;
//!   load ≈ 0.875, ≈ 9.1 bytes per entry). The home of an entry is
//!   `⌊mix(msisdn) · B / 2^64⌋` ([`home`]).
//! * **Order** — entries sorted by (home, key) are placed one after another, each at the
//!   first free slot at or after `home · 8` (linear probing, in sorted order). So every entry
//!   of an MSISDN lies in one run that starts in or after its home bucket, with no empty slot
//!   between the home bucket's first slot and the entry. A table is padded to whole buckets;
//!   overflow past the last bucket goes into extra buckets at the end.
//!
//! # Lookup
//!
//! Read the home line, compare all 8 slots against the pair key and the DNC key. That is the
//! answer unless the line's last slot is occupied by something at or before the probe's
//! MSISDN in (home, key) order — then the run may continue into the next line, and the run is
//! searched by galloping plus binary search ([`Table::seek`]); a subscriber with thousands of
//! statements costs O(log) lines, not a scan.
//!
//! # Validation
//!
//! [`Scan`] checks, in one pass that can be split over threads at any slot boundary, every
//! invariant the lookup relies on: fields in range, (home, key) strictly increasing over the
//! occupied slots, each entry at or after its home bucket with no empty slot in between, one
//! state per pair, and the counts per state.

#![allow(unsafe_code)] // one prefetch hint (`Table::prefetch`); see its SAFETY comment.

use crate::consent::msisdn::{MAX_MSISDN, MIN_MSISDN};

/// Slots per bucket: 8 × 8 bytes = one 64-byte cache line.
pub(crate) const SLOTS: usize = 8;
/// Entries per bucket aimed for: B = ⌈n / PER_BUCKET⌉.
const PER_BUCKET: u64 = 7;
/// State bits of the DNC entry.
pub(crate) const DNC_STATE: u64 = 3;
/// Slots per branch-free validation chunk.
const CHECK_CHUNK: usize = 4096;
/// Lines read one after another before a lookup switches to galloping search (a run that
/// long is a subscriber with dozens of statements).
const MAX_WALK: usize = 4;
/// Fibonacci hashing multiplier (2^64 / φ); the home is taken from the product's high bits.
const MIX: u64 = 0x9E37_79B9_7F4A_7C15;

/// Bucket count for `entries` entries (at least 1).
pub(crate) fn bucket_count(entries: u64) -> u64 {
    entries.div_ceil(PER_BUCKET).max(1)
}

/// The home bucket of `msisdn` among `buckets`.
#[inline(always)]
pub(crate) fn home(msisdn: u64, buckets: u64) -> u64 {
    ((u128::from(msisdn.wrapping_mul(MIX)) * u128::from(buckets)) >> 64) as u64
}

/// Most statements a snapshot holds: table positions are u32 (≈ 3.4 G slots at the load factor).
pub(crate) const MAX_ENTRIES: u64 = 3_000_000_000;

/// Places `entries` (sorted by key, strictly increasing; produced twice by `entries()`, once
/// to count and once to place) into a table of `buckets` buckets. Returns the slots, a
/// multiple of [`SLOTS`] long and at least `buckets * SLOTS`. Memory: the table plus 4 bytes
/// per bucket.
pub(crate) fn place<I: Iterator<Item = u64>>(entries: impl Fn() -> I, shift: u32, buckets: u64) -> Vec<u64> {
    let nb = usize::try_from(buckets).expect("bucket count fits usize");
    let mut fill = vec![0u32; nb];
    for k in entries() {
        let c = &mut fill[home(k >> shift, buckets) as usize];
        *c = c.checked_add(1).expect("fewer than 2^32 entries per bucket");
    }
    // Counts → first slot of each home's run.
    let mut pos = 0usize;
    for (h, f) in fill.iter_mut().enumerate() {
        let start = pos.max(h * SLOTS);
        pos = start + *f as usize;
        *f = u32::try_from(start).expect("table positions fit u32");
    }
    let len = pos.max(nb * SLOTS).next_multiple_of(SLOTS);
    let mut slots = vec![0u64; len];
    // Stable scatter: within a home, entries arrive in key order.
    for k in entries() {
        let f = &mut fill[home(k >> shift, buckets) as usize];
        slots[*f as usize] = k;
        *f += 1;
    }
    slots
}

/// What the table holds for one (msisdn, entity).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Hit {
    /// The pair entry, or 0.
    pub pair: u64,
    /// Whether the DNC entry exists.
    pub dnc: bool,
}

/// A validated table (see the module docs), borrowed from the snapshot's buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Table<'a> {
    pub slots: &'a [u64],
    pub buckets: u64,
    /// `S = entity_bits + 2`.
    pub shift: u32,
}

impl<'a> Table<'a> {
    /// The pair entry `pair_probe >> 2` (`msisdn << entity_bits | entity`; pass `u64::MAX`
    /// for none) and the DNC entry of `msisdn`. The caller has checked that `msisdn`
    /// fits `64 - shift` bits.
    #[inline(always)]
    pub(crate) fn get(&self, msisdn: u64, pair_probe: u64) -> Hit {
        let h = home(msisdn, self.buckets);
        let dnc_key = (msisdn << self.shift) | DNC_STATE;
        let mut base = h as usize * SLOTS;
        let mut hit = Hit::default();
        for _ in 0..MAX_WALK {
            // In bounds: the loader checked slots.len() >= buckets * SLOTS and a multiple of
            // SLOTS; `base` only advances while it stays below the end.
            let line = &self.slots[base..base + SLOTS];
            // Branch-free: where a match sits in the line is data, not something to predict.
            for &k in line {
                let is_pair = (k >> 2 == pair_probe) & (k & 3 != DNC_STATE);
                hit.pair |= k & u64::from(is_pair).wrapping_neg();
                hit.dnc |= k == dnc_key;
            }
            if !self.continues(line[SLOTS - 1], h, msisdn) {
                return hit;
            }
            base += SLOTS;
            if base == self.slots.len() {
                return hit;
            }
        }
        self.get_long(h, pair_probe, dnc_key)
    }

    /// Asks the CPU to start loading the home line of `msisdn` and the line after it (no
    /// effect on the result). About one lookup in five at 20 M records reads the next line
    /// too (a full home line whose last entry sorts before the probe); prefetching it as
    /// well measured +3–5 % gateway throughput.
    #[inline(always)]
    pub(crate) fn prefetch(&self, msisdn: u64) {
        let base = home(msisdn, self.buckets) as usize * SLOTS;
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `_mm_prefetch` is a hint: it never faults and reads nothing, whatever the
        // address. The addresses are computed with `wrapping_add`, which has no in-bounds
        // precondition (the home line is in bounds anyway: `home < buckets` and the table
        // holds at least `buckets * SLOTS` slots, checked at load; the next line may be one
        // past the end, which a hint may name).
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            let p = self.slots.as_ptr().wrapping_add(base);
            _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>());
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(SLOTS).cast::<i8>());
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = base;
    }

    /// Whether the run of `msisdn` (home `h`) may continue past a line whose last slot is
    /// `last`: the slot is occupied by an entry at or before (h, msisdn) in (home, key) order.
    #[inline(always)]
    fn continues(&self, last: u64, h: u64, msisdn: u64) -> bool {
        if last == 0 {
            return false;
        }
        let m = last >> self.shift;
        let hl = home(m, self.buckets);
        hl < h || (hl == h && m <= msisdn)
    }

    /// The run continues past the home line: search it.
    #[cold]
    #[inline(never)]
    fn get_long(&self, h: u64, pair_probe: u64, dnc_key: u64) -> Hit {
        let mut hit = Hit::default();
        if pair_probe != u64::MAX {
            // The pair's entry, if any, is the first at or after (h, probe << 2 | 0).
            if let Some(&k) = self.slots.get(self.seek(h, pair_probe << 2)) {
                if k >> 2 == pair_probe && k & 3 != DNC_STATE {
                    hit.pair = k;
                }
            }
        }
        hit.dnc = self.slots.get(self.seek(h, dnc_key)) == Some(&dnc_key);
        hit
    }

    /// The first position `p >= h * SLOTS` whose slot is empty or holds an entry at or after
    /// (h, key) in (home, key) order (`slots.len()` if none). Over that range the predicate
    /// is monotone: entries are in (home, key) order, and an empty slot there is followed only
    /// by entries of later homes.
    pub(crate) fn seek(&self, h: u64, key: u64) -> usize {
        let n = self.slots.len();
        let ge = |p: usize| {
            p >= n || {
                let k = self.slots[p];
                k == 0 || {
                    let hk = home(k >> self.shift, self.buckets);
                    hk > h || (hk == h && k >= key)
                }
            }
        };
        // Gallop: [lo, hi] brackets the answer.
        let mut lo = h as usize * SLOTS;
        let mut step = SLOTS;
        let mut hi = lo;
        while !ge(hi) {
            lo = hi + 1;
            hi = hi.saturating_add(step).min(n);
            step = step.saturating_mul(2);
        }
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if ge(mid) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        lo
    }

    /// Every entry of `msisdn`, in key order (cold path).
    pub(crate) fn run(&self, msisdn: u64) -> &'a [u64] {
        let h = home(msisdn, self.buckets);
        let start = self.seek(h, msisdn << self.shift);
        let slots: &'a [u64] = self.slots;
        let len = slots[start..].iter().take_while(|&&k| k != 0 && k >> self.shift == msisdn).count();
        &slots[start..start + len]
    }
}

/// The fields an entry must satisfy.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fields {
    pub shift: u32,
    pub msisdn_bits: u32,
    pub entities: u64,
    pub buckets: u64,
}

/// Validation state over a range of slots (module docs). Ranges validated on different
/// threads are joined with [`Scan::join`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Scan {
    /// First slot of the range.
    pub from: usize,
    /// One past the last slot scanned.
    pub to: usize,
    /// The first entry of the range, with its position and home.
    first: Option<(usize, u64, u64)>,
    /// Whether an empty slot came before the first entry (then the first entry's
    /// no-gap check was done locally).
    empty_before_first: bool,
    /// The last entry and its home.
    last: Option<(u64, u64)>,
    /// The last empty slot.
    last_empty: Option<usize>,
    /// Entries per state (0–2 pairs, 3 DNC).
    pub counts: [u64; 4],
}

impl Scan {
    /// Validates `part`, the table's slots from position `from` on.
    ///
    /// Chunks of [`CHECK_CHUNK`] slots go through a branch-free pass that only says whether
    /// everything holds (≈ 1–2 ns per slot: a 100 M-record table is checked in ~0.1 s on
    /// two threads); a failing chunk is re-run slot by slot for the exact error.
    pub(crate) fn run(part: &[u64], from: usize, f: Fields) -> Result<Scan, String> {
        let mut s = Scan { from, to: from, ..Scan::default() };
        for (c, chunk) in part.chunks(CHECK_CHUNK).enumerate() {
            let at = from + c * CHECK_CHUNK;
            let saved = s.clone();
            if !s.fast(chunk, at, &f) {
                let mut exact = saved;
                exact.exact(chunk, at, &f)?;
                return Err(format!("slots {at}..{}: invalid (no exact error found)", at + chunk.len()));
            }
        }
        Ok(s)
    }

    /// The branch-free pass over one chunk; false if any check fails (state then unusable).
    #[inline]
    fn fast(&mut self, chunk: &[u64], at: usize, f: &Fields) -> bool {
        if self.first.is_none() {
            if let Some(i) = chunk.iter().position(|&k| k != 0) {
                let k = chunk[i];
                self.first = Some((at + i, home(k >> f.shift, f.buckets), k));
                self.empty_before_first = self.last_empty.is_some() || i > 0;
            }
        }
        let (shift, buckets, entities) = (f.shift, f.buckets, f.entities);
        let emask = (1u64 << (shift - 2)) - 1;
        // `m - m_lo <= m_span` (wrapping) is the msisdn range check; an empty range fails all.
        let (m_lo, m_span) = match MAX_MSISDN.min((1u64 << f.msisdn_bits) - 1).checked_sub(MIN_MSISDN) {
            Some(span) => (MIN_MSISDN, span),
            None => (u64::MAX, 0),
        };
        // The previous entry as one u128 `home << 64 | key`: (home, key) order is u128 order,
        // and 0 (no entry yet) is below every entry.
        let mut prev = self.last.map_or(0u128, |(h, k)| (u128::from(h) << 64) | u128::from(k));
        // Last empty slot + 1; 0 = none.
        let mut le1 = self.last_empty.map_or(0, |e| e as u64 + 1);
        let [c0, mut c1, mut c2, mut c3] = self.counts;
        let mut occupied = 0u64;
        let mut ok = true;
        for (p, &k) in (at as u64..).zip(chunk) {
            let occ = k != 0;
            let m = k >> shift;
            let state = k & 3;
            let dnc = state == DNC_STATE;
            let h = home(m, buckets);
            let fs = h * SLOTS as u64;
            let cur = (u128::from(h) << 64) | u128::from(k);
            let fields = (m.wrapping_sub(m_lo) <= m_span) & (((k >> 2) & emask) < if dnc { 1 } else { entities });
            let placed = (fs <= p) & (le1 <= fs);
            let unique = dnc | (prev as u64 >> 2 != k >> 2);
            ok &= !occ | (fields & placed & (prev < cur) & unique);
            occupied += u64::from(occ);
            c1 += u64::from(occ & (state == 1));
            c2 += u64::from(occ & (state == 2));
            c3 += u64::from(occ & dnc);
            prev = if occ { cur } else { prev };
            le1 = if occ { le1 } else { p + 1 };
        }
        let (ph, pk) = ((prev >> 64) as u64, prev as u64);
        let c0 = c0 + occupied - (c1 - self.counts[1]) - (c2 - self.counts[2]) - (c3 - self.counts[3]);
        self.last = (pk != 0).then_some((ph, pk));
        self.last_empty = le1.checked_sub(1).map(|e| e as usize);
        self.counts = [c0, c1, c2, c3];
        self.to = at + chunk.len();
        ok
    }

    /// The slot-by-slot pass with exact errors.
    fn exact(&mut self, chunk: &[u64], at: usize, f: &Fields) -> Result<(), String> {
        let emask = (1u64 << (f.shift - 2)) - 1;
        for (p, &k) in chunk.iter().enumerate().map(|(i, k)| (at + i, k)) {
            self.to = p + 1;
            if k == 0 {
                self.last_empty = Some(p);
                continue;
            }
            let m = k >> f.shift;
            let state = k & 3;
            let entity = (k >> 2) & emask;
            if !(MIN_MSISDN..=MAX_MSISDN).contains(&m) || m >> f.msisdn_bits != 0 {
                return Err(format!("slot {p}: msisdn {m} out of range"));
            }
            if if state == DNC_STATE { entity != 0 } else { entity >= f.entities } {
                return Err(format!("slot {p}: entity id {entity} out of range"));
            }
            let h = home(m, f.buckets);
            let first_slot = h as usize * SLOTS;
            if first_slot > p {
                return Err(format!("slot {p}: entry before its home bucket {h}"));
            }
            match self.last_empty {
                Some(e) if e >= first_slot => {
                    return Err(format!("slot {p}: empty slot {e} between the entry and its home bucket {h}"))
                }
                _ => {}
            }
            match self.last {
                Some(prev) => check_order(prev, (h, k), p)?,
                None => {
                    self.first = Some((p, h, k));
                    self.empty_before_first = self.last_empty.is_some();
                }
            }
            self.last = Some((h, k));
            self.counts[state as usize] += 1;
        }
        Ok(())
    }

    /// Joins the scan of the range that directly follows this one.
    pub(crate) fn join(self, next: Scan) -> Result<Scan, String> {
        if self.to != next.from {
            return Err(format!("slot {}: scans not adjacent", next.from));
        }
        if let Some((p, h, k)) = next.first {
            if let Some(prev) = self.last {
                check_order(prev, (h, k), p)?;
            }
            // The first entry of `next` (the smallest home of those before its first empty
            // slot) must not have an empty slot of `self` between it and its home.
            if !next.empty_before_first {
                if let Some(e) = self.last_empty.filter(|&e| e >= h as usize * SLOTS) {
                    return Err(format!("slot {p}: empty slot {e} between the entry and its home bucket {h}"));
                }
            }
        }
        let mut counts = self.counts;
        for (c, n) in counts.iter_mut().zip(next.counts) {
            *c += n;
        }
        Ok(Scan {
            from: self.from,
            to: next.to,
            first: self.first.or(next.first),
            empty_before_first: if self.first.is_some() {
                self.empty_before_first
            } else {
                self.last_empty.is_some() || next.empty_before_first
            },
            last: next.last.or(self.last),
            last_empty: next.last_empty.or(self.last_empty),
            counts,
        })
    }
}

fn check_order(prev: (u64, u64), cur: (u64, u64), p: usize) -> Result<(), String> {
    if prev >= cur {
        return Err(format!("slot {p}: entries not in (home, key) order"));
    }
    if cur.1 & 3 != DNC_STATE && prev.1 >> 2 == cur.1 >> 2 {
        return Err(format!("slot {p}: two states for one (msisdn, entity) pair"));
    }
    Ok(())
}

/// Asks the CPU to start loading the cache line of `r` (no effect on any result): for other
/// tables on the decision's path (the frequency caps) that the session's read-ahead warms.
#[inline(always)]
pub fn prefetch_read<T>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` is a hint that never faults; the address is a live reference.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>((r as *const T).cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = r;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng(seed: &mut u64) -> u64 {
        *seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    const EB: u32 = 10;
    const SHIFT: u32 = EB + 2;

    /// Random entries: `subscribers` numbers, each with a DNC entry (1 in 3) and up to
    /// `max_pairs` pairs; every 5000th subscriber gets `heavy` pairs.
    fn entries(subscribers: usize, max_pairs: u64, heavy: u64, seed: u64) -> Vec<u64> {
        let mut s = seed;
        let mut v = Vec::new();
        for i in 0..subscribers {
            let m = 8_613_000_000_000 + rng(&mut s) % 7_000_000_000;
            if rng(&mut s) % 3 == 0 {
                v.push((m << SHIFT) | DNC_STATE);
            }
            let pairs = if i % 5000 == 17 { heavy } else { rng(&mut s) % (max_pairs + 1) };
            for _ in 0..pairs {
                let e = rng(&mut s) % 1000;
                v.push((m << SHIFT) | (e << 2) | (rng(&mut s) % 3));
            }
        }
        v.sort_unstable();
        v.dedup();
        // One state per pair.
        v.dedup_by(|b, a| *b >> 2 == *a >> 2 && *b & 3 != DNC_STATE);
        v
    }

    fn fields(buckets: u64) -> Fields {
        Fields { shift: SHIFT, msisdn_bits: 50, entities: 1000, buckets }
    }

    fn table(v: &[u64]) -> (Vec<u64>, u64) {
        let buckets = bucket_count(v.len() as u64);
        (place(|| v.iter().copied(), SHIFT, buckets), buckets)
    }

    fn check_lookups(v: &[u64], slots: &[u64], buckets: u64) {
        let t = Table { slots, buckets, shift: SHIFT };
        let set: std::collections::HashSet<u64> = v.iter().copied().collect();
        let pairs: std::collections::HashMap<u64, u64> =
            v.iter().filter(|&&k| k & 3 != DNC_STATE).map(|&k| (k >> 2, k)).collect();
        let mut runs: std::collections::HashMap<u64, Vec<u64>> = std::collections::HashMap::new();
        for &k in v {
            runs.entry(k >> SHIFT).or_default().push(k);
        }
        let mut s = 11;
        let mut probes: Vec<(u64, u64)> = v.iter().map(|&k| (k >> SHIFT, (k >> 2) & 1023)).collect();
        for _ in 0..v.len() {
            let m = v[(rng(&mut s) % v.len() as u64) as usize] >> SHIFT;
            probes.push((m, rng(&mut s) % 1000));
            probes.push((8_613_000_000_000 + rng(&mut s) % 7_000_000_000, rng(&mut s) % 1000));
        }
        for (m, e) in probes {
            let probe = (m << (SHIFT - 2)) | e;
            let hit = t.get(m, probe);
            assert_eq!(hit.pair, pairs.get(&probe).copied().unwrap_or(0), "pair ({m}, {e})");
            assert_eq!(hit.dnc, set.contains(&((m << SHIFT) | DNC_STATE)), "dnc {m}");
            assert_eq!(t.get(m, u64::MAX).pair, 0);
            assert_eq!(t.run(m), runs.get(&m).map_or(&[][..], |r| &r[..]), "run of {m}");
        }
    }

    #[test]
    fn lookups_match_a_model() {
        for (subs, max_pairs, heavy, seed) in [(0, 0, 0, 1), (1, 1, 0, 2), (3000, 3, 0, 3), (20_000, 12, 2000, 4)] {
            let v = entries(subs, max_pairs, heavy, seed);
            let (slots, buckets) = table(&v);
            assert!(slots.len() >= buckets as usize * SLOTS && slots.len() % SLOTS == 0);
            let scan = Scan::run(&slots, 0, fields(buckets)).expect("valid");
            assert_eq!(scan.counts.iter().sum::<u64>(), v.len() as u64);
            check_lookups(&v, &slots, buckets);
        }
    }

    #[test]
    fn split_scans_join_to_the_whole() {
        let v = entries(30_000, 6, 500, 9);
        let (slots, buckets) = table(&v);
        let whole = Scan::run(&slots, 0, fields(buckets)).unwrap();
        let mut s = 5;
        for _ in 0..200 {
            let mut cuts: Vec<usize> = (0..3).map(|_| (rng(&mut s) % slots.len() as u64) as usize).collect();
            cuts.push(0);
            cuts.push(slots.len());
            cuts.sort_unstable();
            let mut acc: Option<Scan> = None;
            for w in cuts.windows(2) {
                let part = Scan::run(&slots[w[0]..w[1]], w[0], fields(buckets)).unwrap();
                acc = Some(match acc {
                    None => part,
                    Some(a) => a.join(part).unwrap(),
                });
            }
            assert_eq!(acc.unwrap().counts, whole.counts);
        }
    }

    /// Every corruption is found whether or not a thread boundary falls next to it.
    #[test]
    fn corruptions_are_refused() {
        let v = entries(5000, 4, 300, 21);
        let (slots, buckets) = table(&v);
        let scan = |t: &[u64]| -> Result<(), String> {
            Scan::run(t, 0, fields(buckets))?;
            for cut in [1, t.len() / 3, t.len() / 2] {
                let a = Scan::run(&t[..cut], 0, fields(buckets))?;
                let b = Scan::run(&t[cut..], cut, fields(buckets))?;
                a.join(b)?;
            }
            Ok(())
        };
        scan(&slots).unwrap();
        // Positions inside runs that cross a bucket boundary (overflow).
        let crossing: Vec<usize> = (1..slots.len())
            .filter(|&p| p % SLOTS == 0 && slots[p] != 0 && home(slots[p] >> SHIFT, buckets) < (p / SLOTS) as u64)
            .collect();
        assert!(!crossing.is_empty(), "test data must overflow some buckets");
        let mut bad: Vec<(Vec<u64>, &str)> = Vec::new();
        let p = crossing[0];
        let mut t = slots.clone();
        t[p - 1] = 0; // a hole between an overflowed entry and its home
        bad.push((t, "empty slot"));
        let mut t = slots.clone();
        t.swap(p - 1, p);
        bad.push((t, "order"));
        let occupied: Vec<usize> = (0..slots.len()).filter(|&i| slots[i] != 0).collect();
        let q = occupied[occupied.len() / 2];
        let mut t = slots.clone();
        t[q] = (MAX_MSISDN + 1) << SHIFT;
        bad.push((t, "msisdn out of range"));
        let mut t = slots.clone();
        t[q] = (slots[q] & !(1023 << 2)) | (1001 << 2);
        bad.push((t, "entity out of range"));
        let mut t = slots.clone();
        let first = occupied
            .iter()
            .copied()
            .find(|&i| home(slots[i] >> SHIFT, buckets) as usize * SLOTS == i - i % SLOTS && i >= SLOTS);
        if let Some(i) = first {
            // Moved a bucket earlier than its home.
            t[i - SLOTS] = t[i];
            bad.push((t, "before home"));
        }
        let pair_at = occupied
            .iter()
            .copied()
            .find(|&i| slots[i] & 3 != DNC_STATE && i + 1 < slots.len() && slots[i + 1] == 0)
            .unwrap();
        let mut t = slots.clone();
        t[pair_at + 1] = (slots[pair_at] & !3) | if slots[pair_at] & 3 == 2 { 2 } else { (slots[pair_at] & 3) + 1 };
        if t[pair_at + 1] != slots[pair_at] {
            bad.push((t, "two states"));
        }
        for (t, what) in bad {
            assert!(scan(&t).is_err(), "{what} not detected");
        }
    }

    #[test]
    fn most_lookups_read_one_line() {
        let v = entries(100_000, 2, 0, 33);
        let (slots, buckets) = table(&v);
        let t = Table { slots: &slots, buckets, shift: SHIFT };
        let h = |k: u64| home(k >> SHIFT, buckets);
        let long =
            v.iter().filter(|&&k| t.continues(t.slots[h(k) as usize * SLOTS + SLOTS - 1], h(k), k >> SHIFT)).count();
        let share = long as f64 / v.len() as f64;
        eprintln!("{share} of lookups read a second line");
        assert!(share < 0.6, "{share} of lookups leave the home line");
        let bytes = slots.len() as f64 * 8.0 / v.len() as f64;
        assert!(bytes < 9.3, "{bytes} bytes per entry");
    }
}
