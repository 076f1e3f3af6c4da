//! The live layer of consent data (architecture §4): statements journalled since the snapshot was
//! built (MO opt-outs, admin API), held in memory and consulted before the snapshot.
//!
//! Two concurrent maps over `foldhash` (`perf-anchors.md` §4.3: dashmap only for the small live
//! layer, with a fast hasher; SipHash would cost another 1.5–2.5x):
//!
//! * pairs: (msisdn, interned entity) → latest grant / revoke with its `at` and identity;
//! * dnc: msisdn → latest do-not-call `at` and identity.
//!
//! The latest wins by the cross-node order of [`super::statement::Precedence`] (later `at`,
//! revoke over grant, origin, seq), so applying statements in any order, on any node, gives
//! the same result.
//! Reads never allocate. A read takes no lock unless the number has (or had) a live
//! statement: a membership bitset in front of the maps is tested with one plain atomic load,
//! and only a set bit leads to the map and its shard read lock. Entities are
//! interned to `u32` ids of this delta (not the snapshot's ids): a session resolves its entity
//! once with [`Delta::intern`] and looks up with the id. Origin nodes are interned to `u32`
//! as well, so an entry stays 24 bytes. Entries folded into a newer snapshot are dropped with
//! [`Delta::prune_through`], by the snapshot's per-origin watermarks.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::RwLock;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use foldhash::fast::RandomState;

use super::statement::{NodeId, Precedence, Statement, StatementKind, Watermarks};

type Map<K, V> = DashMap<K, V, RandomState>;

/// The latest statement for a key: what it says, when (Unix ms), and its identity (origin
/// interned in [`Nodes`], origin seq).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Latest {
    /// Grant or Revoke in the pair map; Dnc in the dnc map.
    kind: StatementKind,
    origin: u32,
    at: i64,
    seq: u64,
}

/// Origin node ids interned to dense `u32`s (a handful: one per gateway node). Read on
/// apply and prune only, never by a lookup.
#[derive(Debug, Default)]
struct Nodes(RwLock<Vec<NodeId>>);

impl Nodes {
    fn intern(&self, node: &NodeId) -> u32 {
        let find = |v: &Vec<NodeId>| v.iter().position(|n| n == node).map(|i| i as u32);
        if let Some(i) = find(&self.0.read().unwrap_or_else(|p| p.into_inner())) {
            return i;
        }
        let mut w = self.0.write().unwrap_or_else(|p| p.into_inner());
        find(&w).unwrap_or_else(|| {
            w.push(node.clone());
            (w.len() - 1) as u32
        })
    }
}

/// Maps entity ids (strings) to small integers, concurrently. Ids are dense from 0 in
/// first-intern order and never reused.
#[derive(Debug, Default)]
pub struct EntityInterner {
    ids: Map<Box<str>, u32>,
    next: AtomicU32,
}

impl EntityInterner {
    /// The id of `name`, assigning the next one on first sight (allocates only then).
    pub fn intern(&self, name: &str) -> u32 {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        // The entry holds the shard's write lock, so two threads interning the same new name
        // get the same id.
        *self.ids.entry(name.into()).or_insert_with(|| self.next.fetch_add(1, Ordering::Relaxed))
    }

    /// The id of `name` if it was interned; never allocates.
    pub fn lookup(&self, name: &str) -> Option<u32> {
        self.ids.get(name).map(|id| *id)
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// The in-memory live consent layer. Shared as `Arc<Delta>`; every method takes `&self`.
#[derive(Debug)]
pub struct Delta {
    pairs: Map<(u64, u32), Latest>,
    dnc: Map<u64, Latest>,
    entities: EntityInterner,
    nodes: Nodes,
    /// Entry counts kept beside the maps so that the hot path skips the shard locks entirely
    /// while a map is empty (the usual case right after a snapshot folded the journal in).
    n_pairs: AtomicUsize,
    n_dnc: AtomicUsize,
    /// One bit per hash of every msisdn that was given a statement ([`MEMBER_BITS`] bits,
    /// 1 MiB). A clear bit means "no live statement" without touching the maps. `apply`
    /// inserts into the map before it sets the bit (Release), so a reader that sees the bit
    /// (Acquire) finds the entry. Bits are never cleared — clearing could race with an apply
    /// and hide a live revocation; a stale bit only costs the locked map lookup. With 1 M
    /// distinct numbers ~11 % of other numbers share a bit.
    members: Box<[AtomicU64]>,
}

/// Bits of the membership set.
const MEMBER_BITS: u32 = 23;

impl Default for Delta {
    fn default() -> Delta {
        Delta {
            pairs: Map::default(),
            dnc: Map::default(),
            entities: EntityInterner::default(),
            nodes: Nodes::default(),
            n_pairs: AtomicUsize::new(0),
            n_dnc: AtomicUsize::new(0),
            members: (0..1usize << (MEMBER_BITS - 6)).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Delta {
    pub fn new() -> Delta {
        Delta::default()
    }

    #[inline]
    fn member_bit(msisdn: u64) -> (usize, u64) {
        let i = (msisdn.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - MEMBER_BITS)) as usize;
        (i >> 6, 1u64 << (i & 63))
    }

    /// Whether `msisdn` may have a live statement (false: it certainly has none).
    #[inline]
    fn maybe_member(&self, msisdn: u64) -> bool {
        let (w, b) = Delta::member_bit(msisdn);
        self.members[w].load(Ordering::Acquire) & b != 0
    }

    /// Records a statement, keeping the greater by [`Statement::precedence`] when the key
    /// already has one. A grant / revoke without an entity is ignored (the store and the
    /// journal refuse to make one).
    pub fn apply(&self, st: &Statement) {
        let new = Latest { kind: st.kind, origin: self.nodes.intern(&st.id.origin), at: st.at, seq: st.id.seq };
        match st.kind {
            StatementKind::Dnc => {
                if self.upsert(&self.dnc, st.msisdn, new, st) {
                    self.n_dnc.fetch_add(1, Ordering::Release);
                }
                self.mark(st.msisdn);
            }
            StatementKind::Grant | StatementKind::Revoke => {
                if let Some(entity) = st.entity.as_deref() {
                    if self.upsert(&self.pairs, (st.msisdn, self.entities.intern(entity)), new, st) {
                        self.n_pairs.fetch_add(1, Ordering::Release);
                    }
                    self.mark(st.msisdn);
                }
            }
        }
    }

    /// Sets `msisdn`'s membership bit, after its entry is in a map.
    fn mark(&self, msisdn: u64) {
        let (w, b) = Delta::member_bit(msisdn);
        self.members[w].fetch_or(b, Ordering::Release);
    }

    /// Inserts `new` (made from `st`) or keeps the entry that precedes; returns whether a new
    /// key was added.
    fn upsert<K: Eq + std::hash::Hash>(&self, map: &Map<K, Latest>, key: K, new: Latest, st: &Statement) -> bool {
        match map.entry(key) {
            Entry::Occupied(mut o) => {
                let old = *o.get();
                let wins = {
                    let nodes = self.nodes.0.read().unwrap_or_else(|p| p.into_inner());
                    Precedence::new(old.at, old.kind, &nodes[old.origin as usize], old.seq) < st.precedence()
                };
                if wins {
                    o.insert(new);
                }
                false
            }
            Entry::Vacant(v) => {
                v.insert(new);
                true
            }
        }
    }

    /// The latest grant or revoke for (subscriber, entity id) and when it was made (Unix ms).
    #[inline]
    pub fn pair(&self, msisdn: u64, entity: u32) -> Option<(StatementKind, i64)> {
        if self.n_pairs.load(Ordering::Acquire) == 0 || !self.maybe_member(msisdn) {
            return None;
        }
        self.pairs.get(&(msisdn, entity)).map(|e| (e.kind, e.at))
    }

    /// When the subscriber's latest do-not-call statement was made (Unix ms), if any.
    #[inline]
    pub fn dnc(&self, msisdn: u64) -> Option<i64> {
        if self.n_dnc.load(Ordering::Acquire) == 0 || !self.maybe_member(msisdn) {
            return None;
        }
        self.dnc.get(&msisdn).map(|e| e.at)
    }

    /// Drops every entry whose statement is covered by `marks` (origin seq at or below its
    /// origin's mark): those are in a snapshot that folded them in. Entries re-set by a later
    /// statement survive.
    pub fn prune_through(&self, marks: &Watermarks) {
        // The marks by interned origin (0 for an origin the snapshot has nothing from).
        let by_origin: Vec<u64> =
            self.nodes.0.read().unwrap_or_else(|p| p.into_inner()).iter().map(|n| marks.get(n)).collect();
        // An origin interned after the read above is newer than any snapshot: its mark is 0.
        let covered = |e: &Latest| e.seq <= by_origin.get(e.origin as usize).copied().unwrap_or(0);
        // Counts only ever move by what was really inserted or removed, so a concurrent apply
        // (whose statement is newer than the watermark and survives) is never lost from them.
        let mut gone = 0;
        self.pairs.retain(|_, e| {
            let keep = !covered(e);
            gone += usize::from(!keep);
            keep
        });
        self.n_pairs.fetch_sub(gone, Ordering::AcqRel);
        let mut gone = 0;
        self.dnc.retain(|_, e| {
            let keep = !covered(e);
            gone += usize::from(!keep);
            keep
        });
        self.n_dnc.fetch_sub(gone, Ordering::AcqRel);
    }

    /// The delta's id for an entity name, assigning one on first sight.
    pub fn intern(&self, name: &str) -> u32 {
        self.entities.intern(name)
    }

    /// The delta's id for an entity name if any statement or session named it; never allocates.
    pub fn lookup_entity(&self, name: &str) -> Option<u32> {
        self.entities.lookup(name)
    }

    pub fn entities(&self) -> &EntityInterner {
        &self.entities
    }

    /// Entries held: pair entries plus dnc entries.
    pub fn len(&self) -> usize {
        self.pairs.len() + self.dnc.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty() && self.dnc.is_empty()
    }

    /// Pair entries held.
    pub fn pair_len(&self) -> usize {
        self.pairs.len()
    }

    /// Do-not-call entries held.
    pub fn dnc_len(&self) -> usize {
        self.dnc.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consent::statement::{EntityName, StatementId, StatementSource};
    use std::sync::atomic::AtomicBool;

    fn id(origin: &str, seq: u64) -> StatementId {
        StatementId { origin: NodeId::parse(origin).unwrap(), seq }
    }

    fn pair_from(origin: &str, seq: u64, at: i64, kind: StatementKind, msisdn: u64, entity: &str) -> Statement {
        let entity = Some(EntityName::parse(entity).unwrap());
        Statement { at, kind, source: StatementSource::Api, msisdn, entity, id: id(origin, seq) }
    }

    fn pair(seq: u64, at: i64, kind: StatementKind, msisdn: u64, entity: &str) -> Statement {
        pair_from("n1", seq, at, kind, msisdn, entity)
    }

    fn dnc(seq: u64, at: i64, msisdn: u64) -> Statement {
        Statement { at, kind: StatementKind::Dnc, source: StatementSource::Mo, msisdn, entity: None, id: id("n1", seq) }
    }

    fn marks(m: &[(&str, u64)]) -> Watermarks {
        let mut w = Watermarks::new();
        for &(n, s) in m {
            w.insert(NodeId::parse(n).unwrap(), s);
        }
        w
    }

    const M: u64 = 8613800138000;

    #[test]
    fn latest_wins_by_at_then_seq() {
        use StatementKind::*;
        let d = Delta::new();
        d.apply(&pair(1, 100, Grant, M, "acme"));
        let acme = d.lookup_entity("acme").unwrap();
        assert_eq!(d.pair(M, acme), Some((Grant, 100)));
        // An older statement arriving later does not override.
        d.apply(&pair(2, 50, Revoke, M, "acme"));
        assert_eq!(d.pair(M, acme), Some((Grant, 100)));
        // Same second: the higher seq wins.
        d.apply(&pair(3, 100, Revoke, M, "acme"));
        assert_eq!(d.pair(M, acme), Some((Revoke, 100)));
        // Re-applying an older seq at the same second (replay) changes nothing.
        d.apply(&pair(1, 100, Grant, M, "acme"));
        assert_eq!(d.pair(M, acme), Some((Revoke, 100)));
        // Other entity, other subscriber: independent.
        assert_eq!(d.lookup_entity("other"), None);
        let other = d.intern("other");
        assert_ne!(other, acme);
        assert_eq!(d.pair(M, other), None);
        assert_eq!(d.pair(M + 1, acme), None);

        d.apply(&dnc(4, 200, M));
        d.apply(&dnc(5, 150, M));
        assert_eq!(d.dnc(M), Some(200));
        assert_eq!(d.dnc(M + 1), None);
        assert_eq!((d.len(), d.pair_len(), d.dnc_len()), (2, 1, 1));
    }

    /// The membership bitset never hides a statement, and numbers without one are answered
    /// without the maps.
    #[test]
    fn membership_bits_never_hide_a_statement() {
        let d = Delta::new();
        let mut seed = 7u64;
        let mut next = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            8_613_000_000_000 + (seed >> 20) % 7_000_000_000
        };
        let numbers: Vec<u64> = (0..50_000).map(|_| next()).collect();
        for (i, &m) in numbers.iter().enumerate() {
            let seq = i as u64 + 1;
            d.apply(&if i % 2 == 0 { dnc(seq, 100, m) } else { pair(seq, 100, StatementKind::Revoke, m, "acme") });
        }
        let acme = d.lookup_entity("acme").unwrap();
        for (i, &m) in numbers.iter().enumerate() {
            if i % 2 == 0 {
                assert_eq!(d.dnc(m), Some(100), "{m}");
            } else {
                assert_eq!(d.pair(m, acme), Some((StatementKind::Revoke, 100)), "{m}");
            }
        }
        let set: std::collections::HashSet<u64> = numbers.iter().copied().collect();
        let (mut absent, mut skipped) = (0, 0);
        for _ in 0..50_000 {
            let m = next();
            if !set.contains(&m) {
                absent += 1;
                assert_eq!(d.dnc(m), None);
                skipped += usize::from(!d.maybe_member(m));
            }
        }
        assert!(skipped * 100 > absent * 95, "{skipped} of {absent} absent numbers skipped the maps");
    }

    #[test]
    fn interner_is_stable() {
        let i = EntityInterner::default();
        assert!(i.is_empty());
        let a = i.intern("a");
        let b = i.intern("b");
        assert_eq!((a, b), (0, 1));
        assert_eq!(i.intern("a"), a);
        assert_eq!(i.lookup("b"), Some(b));
        assert_eq!(i.lookup("c"), None);
        assert_eq!(i.len(), 2);
    }

    #[test]
    fn prune_through_watermark() {
        use StatementKind::*;
        let d = Delta::new();
        d.apply(&pair(1, 10, Grant, M, "acme"));
        d.apply(&pair(2, 10, Grant, M + 1, "acme"));
        d.apply(&dnc(3, 10, M));
        d.apply(&pair(4, 20, Revoke, M + 1, "acme")); // supersedes seq 2
        d.prune_through(&marks(&[("n1", 3)]));
        let acme = d.lookup_entity("acme").unwrap();
        assert_eq!(d.pair(M, acme), None);
        assert_eq!(d.pair(M + 1, acme), Some((Revoke, 20)));
        assert_eq!(d.dnc(M), None);
        assert_eq!(d.len(), 1);
        d.prune_through(&marks(&[("other", u64::MAX)]));
        assert_eq!(d.len(), 1);
        d.prune_through(&marks(&[("n1", u64::MAX)]));
        assert!(d.is_empty());
        // Interned ids survive pruning.
        assert_eq!(d.lookup_entity("acme"), Some(acme));
    }

    #[test]
    fn concurrent_apply_and_read() {
        use StatementKind::*;
        const N: u64 = 20_000;
        const SUBS: u64 = 64;
        let d = Delta::new();
        let acme = d.intern("acme");
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                for seq in 1..=N {
                    let m = M + seq % SUBS;
                    let kind = if seq % 2 == 0 { Grant } else { Revoke };
                    d.apply(&pair(seq, seq as i64, kind, m, "acme"));
                    if seq % 7 == 0 {
                        d.apply(&dnc(seq, seq as i64, m));
                    }
                }
                done.store(true, Ordering::Release);
            });
            s.spawn(|| {
                // Per subscriber, what a reader sees only moves forward in time.
                let mut last = [0i64; SUBS as usize];
                let mut reads = 0u64;
                while !done.load(Ordering::Acquire) || reads == 0 {
                    for k in 0..SUBS {
                        if let Some((kind, at)) = d.pair(M + k, acme) {
                            assert!(at >= last[k as usize]);
                            assert_eq!(kind, if at % 2 == 0 { Grant } else { Revoke });
                            last[k as usize] = at;
                        }
                        if let Some(at) = d.dnc(M + k) {
                            assert_eq!(at % 7, 0);
                        }
                        reads += 1;
                    }
                }
            });
        });
        for k in 0..SUBS {
            // The last seq for subscriber k is the largest seq ≤ N with seq % SUBS == k.
            let last = (1..=N).rev().find(|s| s % SUBS == k).unwrap() as i64;
            assert_eq!(d.pair(M + k, acme).unwrap().1, last);
        }
        assert_eq!(d.pair_len(), SUBS as usize);
    }

    /// Two nodes' statements on one key: the same winner in any order (revoke over grant at
    /// one instant, then origin, then seq), and pruning goes by each origin's own mark.
    #[test]
    fn cross_node_order_and_per_origin_prune() {
        use StatementKind::*;
        let sts = [
            pair_from("gw-a", 7, 500, Grant, M, "acme"),
            pair_from("gw-b", 3, 500, Grant, M, "acme"),
            pair_from("gw-a", 8, 400, Revoke, M + 1, "acme"),
            pair_from("gw-b", 2, 400, Grant, M + 1, "acme"),
        ];
        for order in [[0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2]] {
            let d = Delta::new();
            for i in order {
                d.apply(&sts[i]);
            }
            let acme = d.lookup_entity("acme").unwrap();
            assert_eq!(d.pair(M, acme), Some((Grant, 500)));
            assert_eq!(d.pair(M + 1, acme), Some((Revoke, 400)));
            // M's entry is gw-b's (origin "gw-b" > "gw-a"): gw-a's mark does not prune it.
            d.prune_through(&marks(&[("gw-a", 100)]));
            assert_eq!(d.len(), 1);
            assert_eq!(d.pair(M, acme), Some((Grant, 500)));
            d.prune_through(&marks(&[("gw-a", 100), ("gw-b", 3)]));
            assert!(d.is_empty());
        }
    }
}
