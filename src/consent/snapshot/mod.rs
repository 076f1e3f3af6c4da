//! The consent snapshot: an immutable file, read into memory, that the policy reads on every commercial
//! submit_sm (architecture §3 step 5, §4), and the builder that compiles it from the operator's CSV
//! exports and the live journal.
//!
//! # What is stored
//!
//! Statements are resolved at build time, so a lookup never compares timestamps. For every
//! (msisdn, entity) with at least one grant or revoke, the *latest* statement (by `at`, in
//! Unix ms; on a tie a revoke beats a grant — the order of
//! [`crate::consent::statement::Precedence`], whose origin and seq tie-breaks cannot change a
//! resolved state) is resolved into a 2-bit [`PairState`]:
//!
//! | state | value | when |
//! |---|---:|---|
//! | [`PairState::Grant`] | 0 | latest is a grant, strictly newer than the msisdn's DNC registration (if any) |
//! | [`PairState::Revoked`] | 1 | latest is a revoke |
//! | [`PairState::DncNewer`] | 2 | latest is a grant, but the DNC registration is as new or newer |
//!
//! Statements from the CSVs and from the journal ([`BuildOptions::journal_records`]) compete on
//! equal terms: latest wins across all of them. For each origin node the highest origin seq
//! of the journal statements folded in is recorded (the *watermarks*), so the gateway can drop
//! from its live delta what the snapshot already holds, per origin (architecture §8).
//!
//! Both kinds live in **one hash table** (module `table`): every entry is a `u64`
//! `msisdn << (entity_bits + 2) | entity_id << 2 | state`, with state 0–2 a pair's
//! [`PairState`] and state 3 the msisdn's DNC entry (entity field 0). `msisdn_bits` is the
//! width of the largest msisdn (≤ 50: 15 digits) and `entity_bits` that of the largest entity
//! id (≥ 1); a build whose keys would not fit 64 bits fails ([`BuildError::KeyTooWide`]).
//! Entity ids are the entity names' ranks in byte order; the names are stored in the file.
//! An msisdn's entries share a home bucket (a hash of the msisdn alone), so one policy
//! decision reads one 64-byte line for the pair and the DNC registration together.
//!
//! # File format, version 3 (all integers little-endian)
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 8 | magic `CGSNAP\0\x01` |
//! | 8 | 4 | format version, `3` |
//! | 12 | 4 | header length, `256` |
//! | 16 | 8 | build time, Unix seconds (i64) |
//! | 24 | 8 | reserved, zero (format 2: a single journal watermark) |
//! | 32 | 8 | DNC count |
//! | 40 | 8 | pair count |
//! | 48 | 4 | entity count |
//! | 52 | 1 | msisdn_bits |
//! | 53 | 1 | entity_bits |
//! | 54 | 2 | flags, 0 |
//! | 56 | 32 | SHA-256 of `dnc.csv` (zeros if none) |
//! | 88 | 32 | SHA-256 of `consent.csv` (zeros if none) |
//! | 120 | 2 × 16 | sections, each (offset u64, length u64): entities, table |
//! | 152 | 8 | bucket count B = ⌈(DNC + pairs) / 7⌉, at least 1 |
//! | 160 | 3 × 8 | pairs per state: grant, revoked, dnc_newer |
//! | 184 | 16 | section (offset u64, length u64): watermarks |
//! | 200 | 40 | reserved, zero |
//! | 240 | 8 | payload checksum (below); also the snapshot's id |
//! | 248 | 8 | xxh3-64 of bytes `0 .. 248` (the header) |
//!
//! Sections start on 64-byte boundaries, in the file order entities, table, watermarks (zero
//! padding between them; the file ends on one):
//!
//! * **entities**: `entity_count + 1` u32 end offsets (first is 0) into the UTF-8 names that
//!   follow; names non-empty, strictly increasing in byte order.
//! * **table**: at least `8 · B` u64 slots, a multiple of 8 (module `table`), used in place
//!   from a 64-byte-aligned buffer holding the whole file.
//! * **watermarks**: a u32 count, then per origin node, in strictly increasing name order, the
//!   highest origin seq folded in (u64, ≥ 1), the node id's length (u8) and its bytes
//!   ([`crate::consent::statement::NodeId`]).
//!
//! **Payload checksum**: the bytes `256 .. file end` cut at every multiple of 16 MiB of file
//! offset, each piece hashed with xxh3-64, and the concatenated little-endian piece hashes
//! hashed with xxh3-64 again, so that the loader hashes each piece on whichever thread read it.
//!
//! Any other version is refused ([`SnapshotError::UnsupportedVersion`]): rebuild the file with
//! `consentgate snapshot build`.
//!
//! # Lookups
//!
//! [`Snapshot::statements`] answers (msisdn, entity) with the pair's state and the DNC flag
//! from one table probe — usually one cache line; no allocation, no lock, nothing built at
//! load.
//!
//! # Loading
//!
//! [`Snapshot::open`] reads the file into an aligned heap buffer (not a mapping: an operator
//! may overwrite the file in place with `cp`, which would change a mapped snapshot under
//! traffic, or truncate it and SIGBUS) on two threads, and validates all of it before
//! returning: magic, version, header checksum, section bounds, the payload checksum, the entity
//! table, and every table invariant a lookup relies on (module `table`), with the counts per
//! state against the header. Each 16 MiB block is hashed and its slots checked right after it
//! is read. The builder writes a temporary file, fsyncs it and renames it over the target, so
//! readers never see a partial file.
//!
//! # Modules
//!
//! `format` (header, checksum, section encodings), `compile` ([`SnapshotBuilder`]: sort,
//! resolve, place), `build` (the file-driven [`build`] and its report), `load` ([`Snapshot::open`]
//! and validation), `image` (the aligned buffer: with `table`'s prefetch the only `unsafe`),
//! `table` (the hash table).

mod build;
mod compile;
mod external;
mod format;
mod image;
pub mod live;
mod load;
pub mod proofs;
mod table;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use build::{build, BuildError, BuildOptions, BuildReport, Phase, Progress};
pub use compile::{SnapshotBuilder, StatementError, MAX_AT, MIN_AT};
pub use format::{FORMAT_VERSION, HEADER_LEN, MAGIC};
pub use load::SnapshotError;
pub use table::prefetch_read;

// The file conventions the DLT registry (`crate::dlt`) shares: the aligned image, the payload
// checksum, positioned reads and the atomic write.
pub(crate) use build::write_atomically;
pub(crate) use format::{BlockHasher, CHECKSUM_BLOCK};
pub(crate) use image::Image;
pub(crate) use load::read_at;

use super::statement::Watermarks;
use table::{Table, DNC_STATE, MAX_ENTRIES};
#[allow(unused_imports)] // for the submodules' `use super::*` and the tests
use {build::*, compile::*, format::*, image::*, load::*};

// ---------------------------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------------------------

/// The resolved standing of one (msisdn, entity) pair; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PairState {
    Grant = 0,
    Revoked = 1,
    DncNewer = 2,
}

impl PairState {
    #[inline]
    fn from_bits(b: u64) -> Option<PairState> {
        match b {
            0 => Some(PairState::Grant),
            1 => Some(PairState::Revoked),
            2 => Some(PairState::DncNewer),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PairState::Grant => "grant",
            PairState::Revoked => "revoked",
            PairState::DncNewer => "dnc_newer",
        }
    }
}

/// An entity's id in one snapshot. Ids are only meaningful for the snapshot that issued them
/// ([`Snapshot::entity_id`]); resolve again after a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityId(pub u32);

/// Facts about a loaded snapshot (`snapshot inspect`, `GET /v1/snapshot`, metrics).
#[derive(Debug, Clone, Default)]
pub struct SnapshotInfo {
    /// The file, if loaded from one.
    pub path: Option<PathBuf>,
    pub format_version: u32,
    /// Build time, unix seconds.
    pub built_at: i64,
    /// Load time, unix seconds.
    pub loaded_at: i64,
    /// Time [`Snapshot::open`] took (read and validate).
    pub load_duration: Duration,
    pub dnc_count: u64,
    pub pair_count: u64,
    /// Pairs per resolved state.
    pub grants: u64,
    pub revoked: u64,
    pub dnc_newer: u64,
    pub entity_count: u32,
    pub msisdn_bits: u32,
    pub entity_bits: u32,
    pub dnc_sha256: Option<[u8; 32]>,
    pub consent_sha256: Option<[u8; 32]>,
    /// Per origin node, the highest origin seq of the journal statements folded in.
    pub watermarks: Watermarks,
    /// xxh3-64 of the payload: identifies this snapshot (decision logs, metrics).
    pub checksum: u64,
    pub file_bytes: u64,
    /// Hash table buckets (64-byte lines) and slots (8 per bucket, plus overflow buckets).
    pub buckets: u64,
    pub table_slots: u64,
    /// `file_bytes / (dnc_count + pair_count)`: nothing else is built at load.
    pub bytes_per_record: f64,
}

impl fmt::Display for SnapshotInfo {
    /// The report `consentgate snapshot inspect` prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = self;
        let hex = |d: Option<[u8; 32]>| {
            d.map(|d| d.iter().map(|b| format!("{b:02x}")).collect::<String>()).unwrap_or_else(|| "-".into())
        };
        writeln!(f, "{}", i.path.as_ref().map_or_else(|| "<memory>".into(), |p| p.display().to_string()))?;
        writeln!(f, "  id (payload xxh3):  {}", i.id())?;
        writeln!(f, "  format version:     {}", i.format_version)?;
        writeln!(f, "  built at (unix s):  {}", i.built_at)?;
        writeln!(f, "  dnc numbers:        {}", i.dnc_count)?;
        writeln!(
            f,
            "  consent pairs:      {} (grant {}, revoked {}, dnc newer {})",
            i.pair_count, i.grants, i.revoked, i.dnc_newer
        )?;
        writeln!(f, "  entities:           {}", i.entity_count)?;
        writeln!(f, "  key bits:           msisdn {} + entity {} + state 2", i.msisdn_bits, i.entity_bits)?;
        writeln!(
            f,
            "  hash table:         {} buckets, {} slots ({:.1} % full)",
            i.buckets,
            i.table_slots,
            100.0 * i.records() as f64 / i.table_slots.max(1) as f64
        )?;
        writeln!(f, "  journal watermarks: {}", i.watermarks)?;
        writeln!(f, "  dnc.csv sha256:     {}", hex(i.dnc_sha256))?;
        writeln!(f, "  consent.csv sha256: {}", hex(i.consent_sha256))?;
        writeln!(f, "  file bytes:         {} ({:.2} bytes/record)", i.file_bytes, i.bytes_per_record)?;
        write!(f, "  load + validate:    {:.1} ms", i.load_duration.as_secs_f64() * 1000.0)
    }
}

impl SnapshotInfo {
    /// DNC entries plus pairs.
    pub fn records(&self) -> u64 {
        self.dnc_count + self.pair_count
    }

    /// The checksum as 16 hex digits.
    pub fn id(&self) -> String {
        format!("{:016x}", self.checksum)
    }
}

fn unix_now() -> i64 {
    crate::time::Clock::system().now().unix_s()
}

// ---------------------------------------------------------------------------------------------
// Loaded snapshot
// ---------------------------------------------------------------------------------------------

/// A validated, immutable consent snapshot. Share it as `Arc<Snapshot>` (the store swaps whole
/// snapshots).
pub struct Snapshot {
    /// The table's slots are `image.words[slot_start..slot_start + slot_count]`: 64-byte
    /// aligned (one bucket per cache line). An index, not a pointer, so the snapshot is
    /// `Send + Sync` without `unsafe`.
    slot_start: usize,
    slot_count: usize,
    buckets: u64,
    /// `entity_bits + 2`: an entry is `msisdn << shift | entity << 2 | state`.
    shift: u32,
    msisdn_bits: u32,
    entities: Vec<Box<str>>,
    info: SnapshotInfo,
    /// The whole file, in cache-line units. Never mutated after validation.
    image: Image,
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot").field("info", &self.info).finish_non_exhaustive()
    }
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot::empty()
    }
}

/// What a snapshot holds for one (msisdn, entity): the answer of one table probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Statements {
    /// The pair's resolved state, if a grant or revoke named it.
    pub pair: Option<PairState>,
    /// Whether the number is on the do-not-call list.
    pub dnc: bool,
}

impl Snapshot {
    /// A snapshot with no records (every lookup absent). For tests and as a placeholder.
    pub fn empty() -> Snapshot {
        let image = Image::zeroed(8 * table::SLOTS);
        Snapshot {
            slot_start: image.word_index(0),
            slot_count: table::SLOTS,
            buckets: 1,
            shift: 3,
            msisdn_bits: 1,
            entities: Vec::new(),
            info: SnapshotInfo {
                format_version: FORMAT_VERSION,
                loaded_at: unix_now(),
                buckets: 1,
                ..SnapshotInfo::default()
            },
            image,
        }
    }

    #[inline(always)]
    fn table(&self) -> Table<'_> {
        // One bounds check per lookup; noise next to the cache miss of the probe.
        let slots = &self.image.buf[self.slot_start..self.slot_start + self.slot_count];
        Table { slots, buckets: self.buckets, shift: self.shift }
    }

    /// Everything the snapshot says about (msisdn, entity) — the pair's state and the DNC
    /// registration — from one probe of the table: usually one cache line. No allocation, no
    /// lock.
    #[inline]
    pub fn statements(&self, msisdn: u64, entity: Option<EntityId>) -> Statements {
        if msisdn >> self.msisdn_bits != 0 {
            return Statements::default();
        }
        let probe = match entity {
            Some(e) if (e.0 as usize) < self.entities.len() => (msisdn << (self.shift - 2)) | u64::from(e.0),
            _ => u64::MAX,
        };
        let hit = self.table().get(msisdn, probe);
        // hit.pair is 0 (no pair) or a pair entry (state 0–2): index by state + 1.
        const DECODE: [Option<PairState>; 4] =
            [None, Some(PairState::Grant), Some(PairState::Revoked), Some(PairState::DncNewer)];
        let idx = if hit.pair == 0 { 0 } else { (hit.pair & 3) as usize + 1 };
        Statements { pair: DECODE[idx & 3], dnc: hit.dnc }
    }

    /// Starts loading the table line [`Snapshot::statements`] will read for `msisdn`, so that
    /// a session can overlap the memory latency of a whole read batch (a hint: no effect on
    /// any answer).
    #[inline]
    pub fn prefetch(&self, msisdn: u64) {
        if msisdn >> self.msisdn_bits == 0 {
            self.table().prefetch(msisdn);
        }
    }

    /// Moves the snapshot's memory onto 2 MiB pages. Every lookup is a random line of a table
    /// of up to a GB: on 4 KiB pages nearly each one also misses the TLB, and under a
    /// hypervisor the page walk is two-dimensional. Measured on the dev VM at 10 M records
    /// (`benches/decide.rs`): session-batched decisions ≈ 350 → 250 ns, with prefetch
    /// ≈ 210 → 140 ns. Not done during [`Snapshot::open`]: faulting in fresh huge pages
    /// can stall for seconds in direct compaction (measured 0.67 s vs 2.0 s loads for the same
    /// 100 M file), so the loader reads onto small pages and the store calls this on a
    /// background thread after the swap; lookups go on meanwhile. Returns whether it worked
    /// (it does nothing with THP disabled, on old kernels, or when no huge pages are free).
    pub fn use_huge_pages(&self) -> bool {
        self.image.collapse_huge()
    }

    /// Whether `msisdn` is on the do-not-call list.
    #[inline]
    pub fn is_dnc(&self, msisdn: u64) -> bool {
        self.statements(msisdn, None).dnc
    }

    /// The resolved state of (msisdn, entity), if any statement named the pair.
    #[inline]
    pub fn pair(&self, msisdn: u64, entity: EntityId) -> Option<PairState> {
        self.statements(msisdn, Some(entity)).pair
    }

    /// The id of an entity in this snapshot (binary search; resolve once per session or
    /// snapshot generation, not per message).
    pub fn entity_id(&self, name: &str) -> Option<EntityId> {
        self.entities.binary_search_by(|n| (**n).cmp(name)).ok().map(|i| EntityId(i as u32))
    }

    /// The name of an entity id; `""` for an id this snapshot did not issue.
    pub fn entity_name(&self, id: EntityId) -> &str {
        self.entities.get(id.0 as usize).map_or("", |n| n)
    }

    /// All entities, by id.
    pub fn entities(&self) -> impl Iterator<Item = (EntityId, &str)> {
        self.entities.iter().enumerate().map(|(i, n)| (EntityId(i as u32), &**n))
    }

    /// Every stored pair of `msisdn` (cold path).
    pub fn pairs_of(&self, msisdn: u64) -> impl Iterator<Item = (EntityId, PairState)> + '_ {
        let run = if msisdn >> self.msisdn_bits != 0 { &[][..] } else { self.table().run(msisdn) };
        let emask = (1u64 << (self.shift - 2)) - 1;
        run.iter().filter_map(move |&k| Some((EntityId(((k >> 2) & emask) as u32), PairState::from_bits(k & 3)?)))
    }

    /// Human-readable account of what the snapshot holds for `msisdn` (`snapshot lookup`).
    pub fn describe(&self, msisdn: u64, entity: Option<&str>) -> String {
        let mut s = format!("msisdn {msisdn}\n  dnc: {}\n", if self.is_dnc(msisdn) { "yes" } else { "no" });
        match entity {
            Some(name) => match self.entity_id(name) {
                None => s.push_str(&format!("  entity {name}: not in this snapshot (no statements)\n")),
                Some(id) => {
                    let st = self.pair(msisdn, id).map_or("none (no statement)", PairState::as_str);
                    s.push_str(&format!("  entity {name}: {st}\n"));
                }
            },
            None => {
                let mut any = false;
                for (id, st) in self.pairs_of(msisdn) {
                    any = true;
                    s.push_str(&format!("  entity {}: {}\n", self.entity_name(id), st.as_str()));
                }
                if !any {
                    s.push_str("  no consent statements\n");
                }
            }
        }
        s
    }

    /// Build and load facts.
    pub fn info(&self) -> &SnapshotInfo {
        &self.info
    }

    /// Every DNC msisdn, in table order (tools, tests and benchmarks; not sorted).
    pub fn dnc_numbers(&self) -> impl Iterator<Item = u64> + '_ {
        let shift = self.shift;
        self.table().slots.iter().filter(|&&k| k != 0 && k & 3 == DNC_STATE).map(move |&k| k >> shift)
    }

    /// Every pair as (msisdn, entity, state), in table order (tools, tests and benchmarks).
    pub fn all_pairs(&self) -> impl Iterator<Item = (u64, EntityId, PairState)> + '_ {
        let (shift, emask) = (self.shift, (1u64 << (self.shift - 2)) - 1);
        self.table()
            .slots
            .iter()
            .filter(|&&k| k != 0 && k & 3 != DNC_STATE)
            .filter_map(move |&k| Some((k >> shift, EntityId(((k >> 2) & emask) as u32), PairState::from_bits(k & 3)?)))
    }

    /// The raw table slots (format tests).
    #[cfg(test)]
    fn slots(&self) -> &[u64] {
        self.table().slots
    }
}

#[cfg(test)]
mod tests;
