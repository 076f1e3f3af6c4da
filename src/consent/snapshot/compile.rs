//! Compiling statements into a snapshot: the in-memory [`SnapshotBuilder`], sorting,
//! resolving the latest statement per key (later `at`, then revoke over grant: the
//! statement order of [`crate::consent::statement::Precedence`] without identities, which a
//! snapshot does not keep) and placing the entries in the hash table.

use std::io::{self, Cursor};
use std::thread;

use super::*;
use crate::consent::msisdn::{MAX_MSISDN, MIN_MSISDN};
use crate::consent::statement::{check_entity, EntityError, Statement, StatementKind};

/// Timestamps the builder accepts, Unix milliseconds: ±2^44 ms (±557 years) around the epoch.
pub const MIN_AT: i64 = -(1 << 44);
pub const MAX_AT: i64 = (1 << 44) - 1;
pub(super) const AT_BIAS: i64 = 1 << 44;
pub(super) const AT_MASK: u128 = (1 << 45) - 1;

/// A statement the builder refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StatementError {
    #[error("msisdn {0} is not 7 to 15 digits")]
    Msisdn(u64),
    #[error("timestamp {0} out of range")]
    At(i64),
    #[error("grant/revoke without an entity")]
    MissingEntity,
    /// An entity outside the rule ([`check_entity`]).
    #[error("{0}")]
    BadEntity(EntityError),
}

impl StatementError {
    /// The field at fault, as in [`crate::consent::source::RowError::field`].
    pub fn field(self) -> &'static str {
        match self {
            StatementError::Msisdn(_) => "msisdn",
            StatementError::At(_) => "at",
            StatementError::MissingEntity | StatementError::BadEntity(_) => "entity",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Builder
// ---------------------------------------------------------------------------------------------

/// Interns entity names to dense ids in order of first appearance (renumbered by name at the
/// end). Consecutive rows usually name the same entity, so the last one is checked first.
#[derive(Debug, Default)]
pub(super) struct Interner {
    pub(super) map: std::collections::HashMap<Box<str>, u32, foldhash::fast::RandomState>,
    pub(super) names: Vec<Box<str>>,
    pub(super) last: u32,
}

impl Interner {
    #[inline]
    pub(super) fn intern(&mut self, name: &str) -> u32 {
        if self.names.get(self.last as usize).is_some_and(|n| **n == *name) {
            return self.last;
        }
        let id = match self.map.get(name) {
            Some(&id) => id,
            None => {
                let id = u32::try_from(self.names.len()).expect("fewer than 2^32 entities");
                self.names.push(name.into());
                self.map.insert(name.into(), id);
                id
            }
        };
        self.last = id;
        id
    }
}

// Rows while building, one u128 each (16 bytes/row), sorted in place:
//   DNC:  msisdn << 64 | (at + AT_BIAS)
//   pair: msisdn << 78 | entity << 46 | (at + AT_BIAS) << 1 | revoke
// Sorting orders by key, then time, then grant < revoke, so the last row of a group wins.
#[inline]
pub(super) fn pack_dnc(msisdn: u64, at: i64) -> u128 {
    (u128::from(msisdn) << 64) | (at + AT_BIAS) as u128
}

#[inline]
pub(super) fn pack_pair(msisdn: u64, entity: u32, at: i64, revoke: bool) -> u128 {
    (u128::from(msisdn) << 78) | (u128::from(entity) << 46) | (((at + AT_BIAS) as u128) << 1) | u128::from(revoke)
}

#[inline]
pub(super) fn row_at(row: u128, shift: u32) -> i64 {
    ((row >> shift) & AT_MASK) as i64 - AT_BIAS
}

pub(super) fn check_statement(msisdn: u64, at: i64) -> Result<(), StatementError> {
    if !(MIN_MSISDN..=MAX_MSISDN).contains(&msisdn) {
        return Err(StatementError::Msisdn(msisdn));
    }
    if !(MIN_AT..=MAX_AT).contains(&at) {
        return Err(StatementError::At(at));
    }
    Ok(())
}

/// Collects statements in memory and compiles them into a snapshot. [`build`] drives it from
/// files; tests and tools can feed it directly and get an in-memory [`Snapshot`].
#[derive(Debug, Default)]
pub struct SnapshotBuilder {
    pub(super) dnc: Vec<u128>,
    pub(super) pairs: Vec<u128>,
    pub(super) entities: Interner,
}

impl SnapshotBuilder {
    pub fn new() -> SnapshotBuilder {
        SnapshotBuilder::default()
    }

    /// Adds a DNC registration.
    pub fn add_dnc(&mut self, msisdn: u64, registered_at: i64) -> Result<(), StatementError> {
        check_statement(msisdn, registered_at)?;
        self.dnc.push(pack_dnc(msisdn, registered_at));
        Ok(())
    }

    /// Adds a statement made at `at` (Unix ms); for [`StatementKind::Dnc`] the entity is
    /// ignored. `entity` is new input: it must pass the entity rule ([`check_entity`]).
    pub fn add_statement(
        &mut self,
        msisdn: u64,
        entity: &str,
        kind: StatementKind,
        at: i64,
    ) -> Result<(), StatementError> {
        if kind == StatementKind::Dnc {
            return self.add_dnc(msisdn, at);
        }
        check_entity(entity.as_bytes()).map_err(StatementError::BadEntity)?;
        self.add_pair(msisdn, entity, kind, at)
    }

    /// A grant or revoke whose entity is already validated.
    fn add_pair(&mut self, msisdn: u64, entity: &str, kind: StatementKind, at: i64) -> Result<(), StatementError> {
        check_statement(msisdn, at)?;
        let id = self.entities.intern(entity);
        self.pairs.push(pack_pair(msisdn, id, at, kind == StatementKind::Revoke));
        Ok(())
    }

    /// Adds a live statement (the journal's own type; its identity and source do not matter
    /// here: the builder's order is `at`, then revoke over grant, as in
    /// [`crate::consent::statement::Precedence`]).
    pub fn add(&mut self, s: &Statement) -> Result<(), StatementError> {
        match (s.kind, &s.entity) {
            (StatementKind::Dnc, _) => self.add_dnc(s.msisdn, s.at),
            // An `EntityName` is valid by construction: by the rule for statements made since,
            // by the earlier looser one for journal records written before
            // (`EntityName::parse_stored`), which a build must fold in, not drop.
            (_, Some(e)) => self.add_pair(s.msisdn, e, s.kind, s.at),
            (_, None) => Err(StatementError::MissingEntity),
        }
    }

    /// Statements added so far.
    pub fn len(&self) -> usize {
        self.dnc.len() + self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Compiles into an in-memory snapshot (same format and validation as a file).
    pub fn into_snapshot(self) -> Result<Snapshot, BuildError> {
        let compiled = self.compile(&mut |_, _| {})?;
        let meta = WriteMeta { built_at: unix_now(), ..WriteMeta::default() };

        let mut cur = Cursor::new(Vec::new());
        write_snapshot(&mut cur, &compiled, &meta)
            .map_err(|source| BuildError::Io { path: "<memory>".into(), source })?;
        Snapshot::from_bytes(&cur.into_inner(), "<memory>")
            .map_err(|e| BuildError::Io { path: "<memory>".into(), source: io::Error::other(e.to_string()) })
    }

    /// Sorts, resolves and places the statements in the table.
    pub(super) fn compile(self, phase: &mut dyn FnMut(Phase, u64)) -> Result<Compiled, BuildError> {
        let SnapshotBuilder { dnc, pairs, entities } = self;
        let rows_in = (dnc.len() + pairs.len()) as u64;
        let names = EntityOrder::of(entities);
        phase(Phase::Sorting, rows_in);
        let keys = names.keys(dnc, pairs, &mut || phase(Phase::Resolving, rows_in))?;
        let entries = keys.entries();
        if entries > MAX_ENTRIES {
            return Err(BuildError::TooManyKeys { what: "statements", count: entries, max: MAX_ENTRIES });
        }
        phase(Phase::Hashing, rows_in);
        let buckets = table::bucket_count(entries);
        let slots = table::place(|| MergeSorted::new(&keys.dnc, &keys.pairs), names.shift(), buckets);
        let counts = Counts { dnc: keys.dnc.len() as u64, pairs: keys.pairs.len() as u64, states: keys.counts };
        Ok(Compiled::of(names, counts, keys.msisdn_bits, buckets, slots))
    }
}

/// The entity names in id order (ids are ranks by name) and the map from the builder's
/// first-appearance ids.
pub(super) struct EntityOrder {
    pub(super) names: Vec<Box<str>>,
    remap: Vec<u32>,
    identity: bool,
    pub(super) entity_bits: u32,
}

impl EntityOrder {
    pub(super) fn of(entities: Interner) -> EntityOrder {
        let mut order: Vec<u32> = (0..entities.names.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| entities.names[a as usize].cmp(&entities.names[b as usize]));
        let mut remap = vec![0u32; order.len()];
        for (rank, &id) in order.iter().enumerate() {
            remap[id as usize] = rank as u32;
        }
        let identity = remap.iter().enumerate().all(|(i, &r)| i as u32 == r);
        let names: Vec<Box<str>> = order.iter().map(|&id| entities.names[id as usize].clone()).collect();
        let entity_bits = (u32::BITS - (names.len().saturating_sub(1) as u32).leading_zeros()).max(1);
        EntityOrder { names, remap, identity, entity_bits }
    }

    /// `S`: where the msisdn starts in a table entry.
    pub(super) fn shift(&self) -> u32 {
        self.entity_bits + 2
    }

    /// Renumbers the pair rows' entities, sorts both row sets (two threads), keeps the latest
    /// statement per key and resolves each pair against the DNC registrations: the table
    /// entries, each set sorted by key. `resolving` is called between the sort and the
    /// resolution (progress). Every row of an msisdn must be here (the bounded-memory build
    /// partitions rows by msisdn, so each partition is complete).
    pub(super) fn keys(
        &self,
        mut dnc: Vec<u128>,
        mut pairs: Vec<u128>,
        resolving: &mut dyn FnMut(),
    ) -> Result<Keys, BuildError> {
        let mid = if pairs.len() >= 1 << 16 { pairs.len() / 2 } else { pairs.len() };
        {
            let (a, b) = pairs.split_at_mut(mid);
            let (remap, identity) = (&self.remap, self.identity);
            let fix = move |half: &mut [u128]| {
                if !identity {
                    const ENT: u128 = (u32::MAX as u128) << 46;
                    for r in half.iter_mut() {
                        let e = ((*r >> 46) as u32) as usize;
                        *r = (*r & !ENT) | (u128::from(remap[e]) << 46);
                    }
                }
                half.sort_unstable();
            };
            thread::scope(|s| {
                s.spawn(|| sort_compact_dnc(&mut dnc));
                if !b.is_empty() {
                    s.spawn(|| fix(b));
                }
                fix(a);
            });
        }
        let (a, b) = pairs.split_at(mid);

        let max_msisdn = [a.last().map(|r| r >> 78), b.last().map(|r| r >> 78), dnc.last().map(|r| r >> 64)]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(0) as u64;
        let msisdn_bits = (u64::BITS - max_msisdn.leading_zeros()).max(1);
        if msisdn_bits + self.entity_bits + 2 > 64 {
            return Err(BuildError::KeyTooWide { msisdn_bits, entity_bits: self.entity_bits });
        }

        resolving();
        let mut counts = [0u64; 3];
        let pair_keys = resolve(a, b, &dnc, self.entity_bits, &mut counts);
        drop(pairs);
        let shift = self.shift();
        let dnc_keys: Vec<u64> = dnc.iter().map(|r| (((r >> 64) as u64) << shift) | DNC_STATE).collect();
        Ok(Keys { dnc: dnc_keys, pairs: pair_keys, counts, msisdn_bits })
    }
}

/// Resolved table entries of a set of subscribers, each vector sorted by key.
pub(super) struct Keys {
    pub(super) dnc: Vec<u64>,
    pub(super) pairs: Vec<u64>,
    /// Pairs per [`PairState`].
    pub(super) counts: [u64; 3],
    /// Width of the largest msisdn (at least 1).
    pub(super) msisdn_bits: u32,
}

impl Keys {
    pub(super) fn entries(&self) -> u64 {
        self.dnc.len() as u64 + self.pairs.len() as u64
    }
}

/// Two sorted, disjoint key arrays as one sorted sequence.
pub(super) struct MergeSorted<'a> {
    pub(super) a: &'a [u64],
    pub(super) b: &'a [u64],
}

impl<'a> MergeSorted<'a> {
    pub(super) fn new(a: &'a [u64], b: &'a [u64]) -> MergeSorted<'a> {
        MergeSorted { a, b }
    }
}

impl Iterator for MergeSorted<'_> {
    type Item = u64;
    #[inline]
    fn next(&mut self) -> Option<u64> {
        let take_a = match (self.a.first(), self.b.first()) {
            (Some(x), Some(y)) => x < y,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return None,
        };
        let side = if take_a { &mut self.a } else { &mut self.b };
        let (&k, rest) = side.split_first()?;
        *side = rest;
        Some(k)
    }
}

/// Sorts DNC rows and keeps the latest registration per msisdn.
pub(super) fn sort_compact_dnc(v: &mut Vec<u128>) {
    v.sort_unstable();
    let mut w = 0;
    for r in 0..v.len() {
        if r + 1 < v.len() && v[r + 1] >> 64 == v[r] >> 64 {
            continue;
        }
        v[w] = v[r];
        w += 1;
    }
    v.truncate(w);
}

/// Merges the two sorted halves of pair rows, keeps the last (latest; revoke on a tie) row of
/// each (msisdn, entity) and resolves it against the DNC registrations into a packed key.
pub(super) fn resolve(a: &[u128], b: &[u128], dnc: &[u128], entity_bits: u32, counts: &mut [u64; 3]) -> Vec<u64> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let shift = entity_bits + 2;
    let mut d = 0usize;
    let mut emit = |row: u128| {
        let msisdn = (row >> 78) as u64;
        let entity = u64::from((row >> 46) as u32);
        let state = if row & 1 == 1 {
            PairState::Revoked
        } else {
            while d < dnc.len() && ((dnc[d] >> 64) as u64) < msisdn {
                d += 1;
            }
            let dnc_newer = d < dnc.len() && (dnc[d] >> 64) as u64 == msisdn && row_at(dnc[d], 0) >= row_at(row, 1);
            if dnc_newer {
                PairState::DncNewer
            } else {
                PairState::Grant
            }
        };
        counts[state as usize] += 1;
        out.push((msisdn << shift) | (entity << 2) | state as u64);
    };
    let (mut i, mut j) = (0, 0);
    let mut cur: Option<u128> = None;
    loop {
        let next = match (a.get(i), b.get(j)) {
            (Some(&x), Some(&y)) if x <= y => {
                i += 1;
                x
            }
            (_, Some(&y)) => {
                j += 1;
                y
            }
            (Some(&x), None) => {
                i += 1;
                x
            }
            (None, None) => break,
        };
        if let Some(c) = cur {
            if c >> 46 != next >> 46 {
                emit(c);
            }
        }
        cur = Some(next);
    }
    if let Some(c) = cur {
        emit(c);
    }
    out.shrink_to_fit();
    out
}

/// Statements in a compiled table.
pub(super) struct Counts {
    pub(super) dnc: u64,
    pub(super) pairs: u64,
    /// Pairs per [`PairState`].
    pub(super) states: [u64; 3],
}

impl Compiled {
    /// The table `slots` (empty when it is written streamed) and what describes it.
    pub(super) fn of(names: EntityOrder, n: Counts, msisdn_bits: u32, buckets: u64, slots: Vec<u64>) -> Compiled {
        Compiled {
            dnc: n.dnc,
            pairs: n.pairs,
            slots,
            buckets,
            msisdn_bits,
            entity_bits: names.entity_bits,
            grants: n.states[PairState::Grant as usize],
            revoked: n.states[PairState::Revoked as usize],
            dnc_newer: n.states[PairState::DncNewer as usize],
            names: names.names,
        }
    }
}

/// The compiled content of a snapshot.
pub(super) struct Compiled {
    pub(super) dnc: u64,
    pub(super) pairs: u64,
    /// The lookup table ([`table`]).
    pub(super) slots: Vec<u64>,
    pub(super) buckets: u64,
    pub(super) names: Vec<Box<str>>,
    pub(super) msisdn_bits: u32,
    pub(super) entity_bits: u32,
    pub(super) grants: u64,
    pub(super) revoked: u64,
    pub(super) dnc_newer: u64,
}
