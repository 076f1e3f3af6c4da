//! The consent snapshot: an immutable file, read into memory, that the policy reads on every commercial
//! submit_sm (DESIGN §3 step 5, §4), and the builder that compiles it from the operator's CSV
//! exports and the live journal.
//!
//! # What is stored
//!
//! Statements are resolved at build time, so a lookup never compares timestamps:
//!
//! * **Do-not-call list** — every MSISDN with a registration (its latest `registered_at` is
//!   used below), as a sorted `u64` array.
//! * **Pairs** — for every (msisdn, entity) with at least one grant or revoke, the *latest*
//!   statement (by `at`; on a tie a revoke beats a grant) resolved into a 2-bit
//!   [`PairState`]:
//!
//!   | state | value | when |
//!   |---|---:|---|
//!   | [`PairState::Grant`] | 0 | latest is a grant, strictly newer than the msisdn's DNC registration (if any) |
//!   | [`PairState::Revoked`] | 1 | latest is a revoke |
//!   | [`PairState::DncNewer`] | 2 | latest is a grant, but the DNC registration is as new or newer |
//!
//!   stored as sorted packed keys `msisdn << (entity_bits + 2) | entity_id << 2 | state`,
//!   where `msisdn_bits` is the width of the largest msisdn in a pair (≤ 50: 15 digits) and
//!   `entity_bits` the width of the largest entity id (≥ 1). A build whose keys would not fit
//!   64 bits fails ([`BuildError::KeyTooWide`]). Entity ids are the entity names' ranks in
//!   byte order; the names are stored in the file.
//!
//! Statements from the CSVs and from the journal ([`BuildOptions::journal_records`]) compete on
//! equal terms: latest wins across all of them.
//!
//! # File format, version 1 (all integers little-endian)
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 8 | magic `CGSNAP\0\x01` |
//! | 8 | 4 | format version, `1` |
//! | 12 | 4 | header length, `256` |
//! | 16 | 8 | build time, unix seconds (i64) |
//! | 24 | 8 | journal watermark: highest journal sequence folded in, 0 if none |
//! | 32 | 8 | DNC count |
//! | 40 | 8 | pair count |
//! | 48 | 4 | entity count |
//! | 52 | 1 | msisdn_bits |
//! | 53 | 1 | entity_bits |
//! | 54 | 2 | flags: bit 0 DNC filter present, bit 1 pair filter present |
//! | 56 | 32 | SHA-256 of `dnc.csv` (zeros if none) |
//! | 88 | 32 | SHA-256 of `consent.csv` (zeros if none) |
//! | 120 | 5 × 16 | sections, each (offset u64, length u64): entities, DNC keys, pair keys, DNC filter, pair filter |
//! | 200 | 20 | DNC filter descriptor: seed u64, segment_length u32, segment_length_mask u32, segment_count_length u32 |
//! | 220 | 20 | pair filter descriptor (same layout) |
//! | 240 | 8 | xxh3-64 of bytes `256 .. file end` (the payload); also the snapshot's id |
//! | 248 | 8 | xxh3-64 of bytes `0 .. 248` (the header) |
//!
//! Payload sections start on 8-byte boundaries (zero padding between them; the file ends on
//! one), so the key arrays are used in place as `&[u64]` from one 8-byte-aligned buffer holding
//! the whole file:
//!
//! * **entities**: `entity_count + 1` u32 end offsets (first is 0) into the UTF-8 names that
//!   follow; names non-empty, strictly increasing in byte order.
//! * **DNC keys**: `dnc_count` × u64 MSISDNs, strictly increasing.
//! * **pair keys**: `pair_count` × u64 packed keys, `key >> 2` strictly increasing.
//! * **filters**: xorf `BinaryFuse8` fingerprints (descriptor in the header, the layout of
//!   `xorf::DmaSerializable`) over the DNC keys and over the pair keys without their state
//!   bits (`key >> 2`). Used zero-copy through `xorf::BinaryFuse8Ref`. A filter is absent (flag
//!   clear, empty section) when the set is empty or construction failed.
//!
//! # Lookups
//!
//! [`Snapshot::is_dnc`] and [`Snapshot::pair`] ask the filter first — a miss is a definite
//! "absent" (~15–50 ns, settles most DNC lookups, since most destinations are not listed) —
//! and go to the exact array on a hit through the radix index (module `index`). No
//! allocation, no lock. The filter never decides "present": a false positive (~0.4 %) only
//! costs the exact lookup.
//!
//! # Loading
//!
//! [`Snapshot::open`] reads the file into an aligned heap buffer (not a mapping: an operator
//! may overwrite the file in place with `cp`, which would change a mapped snapshot under
//! traffic, or truncate it and SIGBUS) and validates all of it before returning: magic,
//! version, header checksum, section bounds, payload checksum, entity table, sortedness and
//! uniqueness of both key arrays, field ranges of every key (state bits, entity ids, msisdn
//! width), the filter descriptors, and that the filters contain a sample of the keys. Then it
//! builds the indexes (checksum, DNC and pair work run on three threads). The builder writes a
//! temporary file, fsyncs it and renames it over the target, so readers never see a partial
//! file.

use std::fs::{self, File};
use std::io::{self, BufWriter, Cursor, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use std::{fmt, mem, ptr, slice, thread};

use xorf::{BinaryFuse8, BinaryFuse8Ref, Descriptor, DmaSerializable, Filter, FilterRef};
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use super::index::{RadixIndex, MAX_KEYS};
use super::msisdn::{MAX_MSISDN, MIN_MSISDN};
use super::source::{self, InvalidBudget, RowErrors, SourceError, SourceSummary, MAX_ENTITY_LEN};

#[cfg(not(target_endian = "little"))]
compile_error!("the consent snapshot format is little-endian and used in place; big-endian hosts are not supported");

/// First 8 bytes of every snapshot file.
pub const MAGIC: [u8; 8] = *b"CGSNAP\0\x01";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Header length of format version 1.
pub const HEADER_LEN: usize = 256;

const FLAG_DNC_FILTER: u16 = 1;
const FLAG_PAIR_FILTER: u16 = 2;
const SECTION_NAMES: [&str; 5] = ["entities", "dnc keys", "pair keys", "dnc filter", "pair filter"];
/// Keys checked against their filter at load (evenly spaced).
const FILTER_SAMPLE: usize = 65_536;

/// Timestamps the builder accepts: ±2^40 s (±34 000 years) around the epoch.
pub const MIN_AT: i64 = -(1 << 40);
pub const MAX_AT: i64 = (1 << 40) - 1;
const AT_BIAS: i64 = 1 << 40;
const AT_MASK: u128 = (1 << 45) - 1;

// ---------------------------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------------------------

/// What a statement says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// The subscriber consents to messages from the entity.
    Grant,
    /// The subscriber withdraws consent from the entity.
    Revoke,
    /// The subscriber refuses commercial messages from everyone (do-not-call registration).
    Dnc,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Grant => "grant",
            Action::Revoke => "revoke",
            Action::Dnc => "dnc",
        }
    }
}

/// One statement from the live journal, folded into a build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalStatement {
    /// Normalised MSISDN (see [`super::msisdn`]).
    pub msisdn: u64,
    /// The entity for grant / revoke; `None` for [`Action::Dnc`] (a DNC entity is ignored).
    pub entity: Option<String>,
    pub action: Action,
    /// Unix seconds.
    pub at: i64,
}

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

/// Inputs of [`build`].
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// `dnc.csv`, if any.
    pub dnc: Option<PathBuf>,
    /// `consent.csv`, if any.
    pub consent: Option<PathBuf>,
    /// Journal statements to fold in (latest wins across CSV and journal).
    pub journal_records: Vec<JournalStatement>,
    /// Highest journal sequence number in `journal_records` (0 if none); stored in the header
    /// so the gateway knows which journal records the snapshot already contains.
    pub journal_watermark: u64,
    /// Where to write the snapshot (via a temporary file in the same directory and a rename).
    pub out: PathBuf,
    /// Bad rows tolerated across all sources before the build fails.
    pub max_invalid: u64,
    /// `policy.default_country_code`, for national numbers in the CSVs.
    pub default_cc: String,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            dnc: None,
            consent: None,
            journal_records: Vec::new(),
            journal_watermark: 0,
            out: PathBuf::from("consent.snap"),
            max_invalid: 0,
            default_cc: "86".to_owned(),
        }
    }
}

/// Build phases, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    Reading,
    Sorting,
    Resolving,
    Filtering,
    Writing,
    Done,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Reading => "reading",
            Phase::Sorting => "sorting",
            Phase::Resolving => "resolving",
            Phase::Filtering => "filtering",
            Phase::Writing => "writing",
            Phase::Done => "done",
        }
    }
}

/// Progress of a build, for a progress bar (reported every ~100 ms while reading and once
/// per later phase).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub phase: Phase,
    /// Good rows read so far (CSV + journal).
    pub rows: u64,
    /// Source bytes read so far.
    pub bytes: u64,
    /// Size of all source files.
    pub total_bytes: u64,
}

/// What a build did.
#[derive(Debug, Clone)]
pub struct BuildReport {
    pub out: PathBuf,
    /// Good rows per source.
    pub dnc_rows: u64,
    pub consent_rows: u64,
    pub journal_records: u64,
    /// Data rows read (good and bad) from all sources.
    pub rows_read: u64,
    /// Rows skipped, with the first [`source::MAX_KEPT_ERRORS`] and counts per field.
    pub invalid: RowErrors,
    /// Distinct DNC msisdns.
    pub dnc: u64,
    /// Distinct (msisdn, entity) pairs, and how they resolved.
    pub pairs: u64,
    pub grants: u64,
    pub revoked: u64,
    pub dnc_newer: u64,
    pub entities: u32,
    pub msisdn_bits: u32,
    pub entity_bits: u32,
    pub dnc_filter: bool,
    pub pair_filter: bool,
    pub dnc_sha256: Option<[u8; 32]>,
    pub consent_sha256: Option<[u8; 32]>,
    pub bytes_written: u64,
    pub elapsed: Duration,
    /// Wall time per phase.
    pub phases: Vec<(Phase, Duration)>,
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A source file could not be read or has a bad header / line.
    #[error(transparent)]
    Source(SourceError),
    /// More bad rows than `max_invalid` across all sources.
    #[error("more than {max} invalid rows (max_invalid){}", first_errors(.errors))]
    TooManyInvalid { max: u64, errors: RowErrors },
    /// The packed pair key does not fit 64 bits.
    #[error("pair keys too wide: {msisdn_bits} msisdn bits + {entity_bits} entity bits + 2 state bits > 64")]
    KeyTooWide { msisdn_bits: u32, entity_bits: u32 },
    /// More keys than the index's u32 positions can address.
    #[error("{what}: {count} keys, more than the format's limit of {max}")]
    TooManyKeys { what: &'static str, count: u64, max: u64 },
    /// A statement given to [`SnapshotBuilder`] directly is invalid.
    #[error("invalid statement: {0}")]
    Statement(#[from] StatementError),
    /// Writing the output failed.
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn first_errors(e: &RowErrors) -> String {
    let mut s = String::new();
    for r in &e.first {
        s.push_str("\n  ");
        s.push_str(&r.to_string());
    }
    s
}

/// A statement the builder refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StatementError {
    #[error("msisdn {0} is not 7 to 15 digits")]
    Msisdn(u64),
    #[error("timestamp {0} out of range")]
    At(i64),
    #[error("grant/revoke without an entity")]
    MissingEntity,
    #[error("entity empty, longer than {MAX_ENTITY_LEN} bytes or with a control character")]
    BadEntity,
}

impl StatementError {
    /// The field at fault, as in [`source::RowError::field`].
    pub fn field(self) -> &'static str {
        match self {
            StatementError::Msisdn(_) => "msisdn",
            StatementError::At(_) => "at",
            StatementError::MissingEntity | StatementError::BadEntity => "entity",
        }
    }
}

/// Why a snapshot was refused. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}: truncated: {len} bytes, the header needs {need}")]
    Truncated { path: String, len: u64, need: u64 },
    #[error("{path}: not a consentgate snapshot (bad magic)")]
    BadMagic { path: String },
    #[error("{path}: unsupported snapshot format version {found} (this build reads {FORMAT_VERSION})")]
    UnsupportedVersion { path: String, found: u32 },
    #[error("{path}: header checksum mismatch")]
    HeaderChecksum { path: String },
    #[error("{path}: payload checksum mismatch (header {stored:016x}, computed {computed:016x})")]
    PayloadChecksum { path: String, stored: u64, computed: u64 },
    /// A structural problem: section bounds, entity table, key order or fields, filters.
    #[error("{path}: {what}")]
    Invalid { path: String, what: String },
}

impl SnapshotError {
    /// Stable label (e.g. for `consentgate_snapshot_reloads_total{result}`).
    pub fn as_str(&self) -> &'static str {
        match self {
            SnapshotError::Io { .. } => "io",
            SnapshotError::Truncated { .. } => "truncated",
            SnapshotError::BadMagic { .. } => "bad_magic",
            SnapshotError::UnsupportedVersion { .. } => "unsupported_version",
            SnapshotError::HeaderChecksum { .. } => "header_checksum",
            SnapshotError::PayloadChecksum { .. } => "payload_checksum",
            SnapshotError::Invalid { .. } => "invalid",
        }
    }
}

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
    /// Time [`Snapshot::open`] took (map, validate, index).
    pub load_duration: Duration,
    pub dnc_count: u64,
    pub pair_count: u64,
    pub entity_count: u32,
    pub msisdn_bits: u32,
    pub entity_bits: u32,
    pub dnc_sha256: Option<[u8; 32]>,
    pub consent_sha256: Option<[u8; 32]>,
    pub journal_watermark: u64,
    /// xxh3-64 of the payload: identifies this snapshot (decision logs, metrics).
    pub checksum: u64,
    pub file_bytes: u64,
    /// Heap bytes of the radix indexes built at load.
    pub index_bytes: u64,
    /// `(file_bytes + index_bytes) / (dnc_count + pair_count)`.
    pub bytes_per_record: f64,
    pub dnc_filter: bool,
    pub pair_filter: bool,
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

// ---------------------------------------------------------------------------------------------
// Builder
// ---------------------------------------------------------------------------------------------

/// Interns entity names to dense ids in order of first appearance (renumbered by name at the
/// end). Consecutive rows usually name the same entity, so the last one is checked first.
#[derive(Debug, Default)]
struct Interner {
    map: std::collections::HashMap<Box<str>, u32, foldhash::fast::RandomState>,
    names: Vec<Box<str>>,
    last: u32,
}

impl Interner {
    #[inline]
    fn intern(&mut self, name: &str) -> u32 {
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
fn pack_dnc(msisdn: u64, at: i64) -> u128 {
    (u128::from(msisdn) << 64) | (at + AT_BIAS) as u128
}

#[inline]
fn pack_pair(msisdn: u64, entity: u32, at: i64, revoke: bool) -> u128 {
    (u128::from(msisdn) << 78) | (u128::from(entity) << 46) | (((at + AT_BIAS) as u128) << 1) | u128::from(revoke)
}

#[inline]
fn row_at(row: u128, shift: u32) -> i64 {
    ((row >> shift) & AT_MASK) as i64 - AT_BIAS
}

fn check_statement(msisdn: u64, at: i64) -> Result<(), StatementError> {
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
    dnc: Vec<u128>,
    pairs: Vec<u128>,
    entities: Interner,
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

    /// Adds a statement; for [`Action::Dnc`] the entity is ignored.
    pub fn add_statement(&mut self, msisdn: u64, entity: &str, action: Action, at: i64) -> Result<(), StatementError> {
        if action == Action::Dnc {
            return self.add_dnc(msisdn, at);
        }
        check_statement(msisdn, at)?;
        if entity.is_empty() || entity.len() > MAX_ENTITY_LEN || entity.chars().any(char::is_control) {
            return Err(StatementError::BadEntity);
        }
        let id = self.entities.intern(entity);
        self.pairs.push(pack_pair(msisdn, id, at, action == Action::Revoke));
        Ok(())
    }

    /// Adds a journal statement.
    pub fn add(&mut self, s: &JournalStatement) -> Result<(), StatementError> {
        match (&s.action, &s.entity) {
            (Action::Dnc, _) => self.add_dnc(s.msisdn, s.at),
            (_, Some(e)) => self.add_statement(s.msisdn, e, s.action, s.at),
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

    /// Sorts, resolves and builds the filters.
    fn compile(self, phase: &mut dyn FnMut(Phase, u64)) -> Result<Compiled, BuildError> {
        let SnapshotBuilder { mut dnc, mut pairs, entities } = self;
        let rows_in = (dnc.len() + pairs.len()) as u64;

        // Entity ids by name: rank of each first-appearance id.
        let mut order: Vec<u32> = (0..entities.names.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| entities.names[a as usize].cmp(&entities.names[b as usize]));
        let mut remap = vec![0u32; order.len()];
        for (rank, &id) in order.iter().enumerate() {
            remap[id as usize] = rank as u32;
        }
        let identity = remap.iter().enumerate().all(|(i, &r)| i as u32 == r);
        let names: Vec<Box<str>> = order.iter().map(|&id| entities.names[id as usize].clone()).collect();
        drop(entities);

        phase(Phase::Sorting, rows_in);
        let mid = if pairs.len() >= 1 << 16 { pairs.len() / 2 } else { pairs.len() };
        {
            let (a, b) = pairs.split_at_mut(mid);
            let remap = &remap;
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

        let max_msisdn = [a.last(), b.last()].into_iter().flatten().map(|r| (r >> 78) as u64).max().unwrap_or(0);
        let msisdn_bits = (u64::BITS - max_msisdn.leading_zeros()).max(1);
        let entity_bits = (u32::BITS - (names.len().saturating_sub(1) as u32).leading_zeros()).max(1);
        if msisdn_bits + entity_bits + 2 > 64 {
            return Err(BuildError::KeyTooWide { msisdn_bits, entity_bits });
        }
        if dnc.len() as u64 > MAX_KEYS {
            return Err(BuildError::TooManyKeys { what: "dnc", count: dnc.len() as u64, max: MAX_KEYS });
        }

        phase(Phase::Resolving, rows_in);
        let mut counts = [0u64; 3];
        let pair_keys = resolve(a, b, &dnc, entity_bits, &mut counts);
        drop(pairs);
        if pair_keys.len() as u64 > MAX_KEYS {
            return Err(BuildError::TooManyKeys { what: "pairs", count: pair_keys.len() as u64, max: MAX_KEYS });
        }
        let dnc_keys: Vec<u64> = dnc.iter().map(|r| (r >> 64) as u64).collect();
        drop(dnc);

        phase(Phase::Filtering, rows_in);
        let (dnc_filter, pair_filter) = thread::scope(|s| {
            let h = s.spawn(|| build_filter(dnc_keys.iter().copied()));
            let p = build_filter(pair_keys.iter().map(|k| k >> 2));
            (h.join().expect("filter thread"), p)
        });

        Ok(Compiled {
            dnc_keys,
            pair_keys,
            names,
            msisdn_bits,
            entity_bits,
            dnc_filter,
            pair_filter,
            grants: counts[PairState::Grant as usize],
            revoked: counts[PairState::Revoked as usize],
            dnc_newer: counts[PairState::DncNewer as usize],
        })
    }
}

/// Sorts DNC rows and keeps the latest registration per msisdn.
fn sort_compact_dnc(v: &mut Vec<u128>) {
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
fn resolve(a: &[u128], b: &[u128], dnc: &[u128], entity_bits: u32, counts: &mut [u64; 3]) -> Vec<u64> {
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

/// Builds a BinaryFuse8 over distinct keys, or `None` (empty set, construction failure, or a
/// layout the loader would not accept).
fn build_filter<I: ExactSizeIterator<Item = u64> + Clone>(keys: I) -> Option<BinaryFuse8> {
    if keys.len() == 0 {
        return None;
    }
    let f = BinaryFuse8::try_from_iterator(keys).ok()?;
    descriptor_ok(&f.descriptor, f.fingerprints.len()).then_some(f)
}

/// The invariants that keep `contains` in bounds: indexes reach at most
/// `segment_count_length + 2 * segment_length - 1`.
fn descriptor_ok(d: &Descriptor, fingerprints: usize) -> bool {
    let need = u64::from(d.segment_count_length) + 2 * u64::from(d.segment_length);
    d.segment_length.is_power_of_two()
        && d.segment_length_mask == d.segment_length - 1
        && d.segment_count_length % d.segment_length == 0
        && need <= u64::from(u32::MAX)
        && fingerprints as u64 == need
}

/// The compiled content of a snapshot.
struct Compiled {
    dnc_keys: Vec<u64>,
    pair_keys: Vec<u64>,
    names: Vec<Box<str>>,
    msisdn_bits: u32,
    entity_bits: u32,
    dnc_filter: Option<BinaryFuse8>,
    pair_filter: Option<BinaryFuse8>,
    grants: u64,
    revoked: u64,
    dnc_newer: u64,
}

/// Header facts that do not come from the statements.
#[derive(Debug, Clone, Default)]
struct WriteMeta {
    built_at: i64,
    watermark: u64,
    dnc_sha256: [u8; 32],
    consent_sha256: [u8; 32],
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Builds a snapshot file from CSV sources and journal statements. See the module docs.
///
/// The DNC and consent files are parsed in parallel (one thread each) while this thread
/// reports progress; sorting and filter construction use two threads as well. Memory: 16
/// bytes per row while reading and sorting, ~33 bytes per key transiently while the filters
/// are built.
pub fn build(opts: &BuildOptions, mut progress: impl FnMut(Progress)) -> Result<BuildReport, BuildError> {
    let t0 = Instant::now();
    let mut phases: Vec<(Phase, Duration)> = Vec::new();
    let mut phase_start = Instant::now();
    let budget = InvalidBudget::new(opts.max_invalid);
    let mut invalid = RowErrors::default();
    let mut b = SnapshotBuilder::new();

    for (i, st) in opts.journal_records.iter().enumerate() {
        if let Err(e) = b.add(st) {
            invalid.record("journal", i as u64 + 1, e.field(), e);
            if !budget.charge() {
                return Err(BuildError::TooManyInvalid { max: opts.max_invalid, errors: invalid });
            }
        }
    }
    let journal_good = b.len() as u64;

    let open = |p: &Option<PathBuf>| -> Result<Option<(File, String, u64)>, BuildError> {
        let Some(p) = p else { return Ok(None) };
        let name = p.display().to_string();
        let f = File::open(p).map_err(|source| BuildError::Source(SourceError::Io { file: name.clone(), source }))?;
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Some((f, name, len)))
    };
    let dnc_src = open(&opts.dnc)?;
    let consent_src = open(&opts.consent)?;
    let total_bytes = dnc_src.as_ref().map_or(0, |s| s.2) + consent_src.as_ref().map_or(0, |s| s.2);

    let bytes_read = [AtomicU64::new(0), AtomicU64::new(0)];
    let rows_read = [AtomicU64::new(0), AtomicU64::new(0)];
    let cc = opts.default_cc.as_str();
    let report = |progress: &mut dyn FnMut(Progress), phase: Phase| {
        progress(Progress {
            phase,
            rows: journal_good + rows_read.iter().map(|a| a.load(Ordering::Relaxed)).sum::<u64>(),
            bytes: bytes_read.iter().map(|a| a.load(Ordering::Relaxed)).sum(),
            total_bytes,
        })
    };
    report(&mut progress, Phase::Reading);

    let SnapshotBuilder { dnc, pairs, entities } = &mut b;
    let (dnc_res, consent_res) = thread::scope(|s| {
        let h_dnc = s.spawn(|| -> Result<Option<SourceSummary>, SourceError> {
            let Some((f, name, len)) = dnc_src else { return Ok(None) };
            let est = Estimate::new(len);
            let sum = source::read_dnc(
                f,
                &name,
                cc,
                &budget,
                |r| {
                    est.reserve(dnc);
                    dnc.push(pack_dnc(r.msisdn, r.registered_at));
                },
                |bytes, rows| {
                    est.observe(bytes, rows);
                    bytes_read[0].store(bytes, Ordering::Relaxed);
                    rows_read[0].store(rows, Ordering::Relaxed);
                },
            )?;
            // Sort while the (larger) consent file is still being read.
            sort_compact_dnc(dnc);
            Ok(Some(sum))
        });
        let h_consent = s.spawn(|| -> Result<Option<SourceSummary>, SourceError> {
            let Some((f, name, len)) = consent_src else { return Ok(None) };
            let est = Estimate::new(len);
            let sum = source::read_consent(
                f,
                &name,
                cc,
                &budget,
                |r| {
                    est.reserve(pairs);
                    let id = entities.intern(r.entity);
                    pairs.push(pack_pair(r.msisdn, id, r.at, r.action == Action::Revoke));
                },
                |bytes, rows| {
                    est.observe(bytes, rows);
                    bytes_read[1].store(bytes, Ordering::Relaxed);
                    rows_read[1].store(rows, Ordering::Relaxed);
                },
            )?;
            Ok(Some(sum))
        });
        while !(h_dnc.is_finished() && h_consent.is_finished()) {
            report(&mut progress, Phase::Reading);
            thread::sleep(Duration::from_millis(50));
        }
        (h_dnc.join().expect("dnc reader"), h_consent.join().expect("consent reader"))
    });
    report(&mut progress, Phase::Reading);

    let mut summaries = Vec::new();
    let mut fatal = None;
    for r in [dnc_res, consent_res] {
        match r {
            Ok(s) => summaries.push(s),
            Err(SourceError::TooManyInvalid { errors, .. }) => {
                invalid.merge(errors);
                fatal.get_or_insert(None);
                summaries.push(None);
            }
            Err(e) => {
                fatal = Some(Some(e));
                summaries.push(None);
            }
        }
    }
    for s in summaries.iter().flatten() {
        invalid.merge(s.errors.clone());
    }
    match fatal {
        Some(Some(e)) => return Err(BuildError::Source(e)),
        Some(None) => return Err(BuildError::TooManyInvalid { max: opts.max_invalid, errors: invalid }),
        None => {}
    }
    let (dnc_sum, consent_sum) = (summaries[0].take(), summaries[1].take());
    phases.push((Phase::Reading, phase_start.elapsed()));
    phase_start = Instant::now();

    let rows_total = journal_good + rows_read.iter().map(|a| a.load(Ordering::Relaxed)).sum::<u64>();
    let mut last_phase = Phase::Sorting;
    let compiled = b.compile(&mut |p, _| {
        if p != last_phase {
            phases.push((last_phase, phase_start.elapsed()));
            phase_start = Instant::now();
            last_phase = p;
        }
        progress(Progress { phase: p, rows: rows_total, bytes: total_bytes, total_bytes });
    })?;
    phases.push((last_phase, phase_start.elapsed()));
    phase_start = Instant::now();

    progress(Progress { phase: Phase::Writing, rows: rows_total, bytes: total_bytes, total_bytes });
    let meta = WriteMeta {
        built_at: unix_now(),
        watermark: opts.journal_watermark,
        dnc_sha256: dnc_sum.as_ref().map_or([0; 32], |s| s.sha256),
        consent_sha256: consent_sum.as_ref().map_or([0; 32], |s| s.sha256),
    };
    let bytes_written = write_file(&opts.out, &compiled, &meta)?;
    phases.push((Phase::Writing, phase_start.elapsed()));
    progress(Progress { phase: Phase::Done, rows: rows_total, bytes: total_bytes, total_bytes });

    let nonzero = |d: [u8; 32]| (d != [0; 32]).then_some(d);
    let good = |s: &Option<SourceSummary>| s.as_ref().map_or(0, |s| s.rows);
    Ok(BuildReport {
        out: opts.out.clone(),
        dnc_rows: good(&dnc_sum),
        consent_rows: good(&consent_sum),
        journal_records: opts.journal_records.len() as u64,
        rows_read: good(&dnc_sum) + good(&consent_sum) + journal_good + invalid.count,
        invalid,
        dnc: compiled.dnc_keys.len() as u64,
        pairs: compiled.pair_keys.len() as u64,
        grants: compiled.grants,
        revoked: compiled.revoked,
        dnc_newer: compiled.dnc_newer,
        entities: compiled.names.len() as u32,
        msisdn_bits: compiled.msisdn_bits,
        entity_bits: compiled.entity_bits,
        dnc_filter: compiled.dnc_filter.is_some(),
        pair_filter: compiled.pair_filter.is_some(),
        dnc_sha256: nonzero(meta.dnc_sha256),
        consent_sha256: nonzero(meta.consent_sha256),
        bytes_written,
        elapsed: t0.elapsed(),
        phases,
    })
}

/// After the first buffer, reserves room for the whole file from the bytes per row seen so
/// far: spares repeated doubling copies of multi-GB vectors.
struct Estimate {
    file_len: u64,
    /// Rows expected in the file; 0 until known, `u64::MAX` once reserved.
    rows: std::cell::Cell<u64>,
}

impl Estimate {
    fn new(file_len: u64) -> Estimate {
        Estimate { file_len, rows: std::cell::Cell::new(0) }
    }

    fn observe(&self, bytes: u64, rows: u64) {
        if self.rows.get() == 0 && rows >= 1000 && bytes > 0 {
            self.rows.set((self.file_len as f64 * rows as f64 / bytes as f64 * 1.02) as u64 + 1);
        }
    }

    #[inline]
    fn reserve(&self, v: &mut Vec<u128>) {
        let want = self.rows.get();
        if want != 0 && want != u64::MAX {
            v.reserve((want as usize).saturating_sub(v.len()));
            self.rows.set(u64::MAX);
        }
    }
}

/// Writes to a temporary file next to `out`, fsyncs it and renames it over `out`.
fn write_file(out: &Path, c: &Compiled, meta: &WriteMeta) -> Result<u64, BuildError> {
    let io_err = |source| BuildError::Io { path: out.to_owned(), source };
    let file_name = out.file_name().map_or_else(|| "snapshot".into(), |n| n.to_string_lossy().into_owned());
    let tmp = out.with_file_name(format!(".{file_name}.tmp{}", std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        let len = write_snapshot(&mut f, c, meta)?;
        f.sync_all()?;
        fs::rename(&tmp, out)?;
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            // Best effort: make the rename durable.
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(len)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_err)
}

#[inline]
fn align8(x: u64) -> u64 {
    (x + 7) & !7
}

fn u64_bytes(k: &[u64]) -> &[u8] {
    // SAFETY: u64 has no padding and any byte pattern is a valid u8; the host is little-endian
    // (compile_error above), so this is the on-disk encoding.
    unsafe { slice::from_raw_parts(k.as_ptr().cast::<u8>(), mem::size_of_val(k)) }
}

/// Serialises `c`: header placeholder, payload (hashed as it is written), then the header.
fn write_snapshot<W: Write + Seek>(w: &mut W, c: &Compiled, meta: &WriteMeta) -> io::Result<u64> {
    let mut ent = Vec::with_capacity(4 * (c.names.len() + 1) + c.names.iter().map(|n| n.len()).sum::<usize>());
    let mut end = 0u32;
    ent.extend_from_slice(&0u32.to_le_bytes());
    for n in &c.names {
        end += n.len() as u32;
        ent.extend_from_slice(&end.to_le_bytes());
    }
    for n in &c.names {
        ent.extend_from_slice(n.as_bytes());
    }
    let empty: &[u8] = &[];
    let dnc_fp = c.dnc_filter.as_ref().map_or(empty, |f| f.dma_fingerprints());
    let pair_fp = c.pair_filter.as_ref().map_or(empty, |f| f.dma_fingerprints());
    let parts: [&[u8]; 5] = [&ent, u64_bytes(&c.dnc_keys), u64_bytes(&c.pair_keys), dnc_fp, pair_fp];

    let mut h = Header {
        version: FORMAT_VERSION,
        built_at: meta.built_at,
        watermark: meta.watermark,
        dnc_count: c.dnc_keys.len() as u64,
        pair_count: c.pair_keys.len() as u64,
        entity_count: c.names.len() as u32,
        msisdn_bits: c.msisdn_bits as u8,
        entity_bits: c.entity_bits as u8,
        flags: u16::from(c.dnc_filter.is_some()) * FLAG_DNC_FILTER
            + u16::from(c.pair_filter.is_some()) * FLAG_PAIR_FILTER,
        dnc_sha256: meta.dnc_sha256,
        consent_sha256: meta.consent_sha256,
        ..Header::default()
    };
    for (i, f) in [&c.dnc_filter, &c.pair_filter].into_iter().enumerate() {
        if let Some(f) = f {
            let mut d = [0u8; Descriptor::DMA_LEN];
            f.dma_copy_descriptor_to(&mut d);
            h.filters[i] = d;
        }
    }

    let mut bw = BufWriter::with_capacity(1 << 20, &mut *w);
    bw.write_all(&[0u8; HEADER_LEN])?;
    let mut hasher = Xxh3::new();
    let mut pos = HEADER_LEN as u64;
    const PAD: [u8; 8] = [0; 8];
    for (i, part) in parts.iter().enumerate() {
        h.sections[i] = Section { offset: pos, len: part.len() as u64 };
        for chunk in part.chunks(1 << 20) {
            hasher.update(chunk);
            bw.write_all(chunk)?;
        }
        pos += part.len() as u64;
        let pad = (align8(pos) - pos) as usize;
        hasher.update(&PAD[..pad]);
        bw.write_all(&PAD[..pad])?;
        pos += pad as u64;
    }
    bw.flush()?;
    drop(bw);
    h.payload_xxh3 = hasher.digest();
    w.seek(SeekFrom::Start(0))?;
    w.write_all(&h.encode())?;
    w.flush()?;
    Ok(pos)
}

// ---------------------------------------------------------------------------------------------
// Header
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Section {
    offset: u64,
    len: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Header {
    version: u32,
    built_at: i64,
    watermark: u64,
    dnc_count: u64,
    pair_count: u64,
    entity_count: u32,
    msisdn_bits: u8,
    entity_bits: u8,
    flags: u16,
    dnc_sha256: [u8; 32],
    consent_sha256: [u8; 32],
    sections: [Section; 5],
    filters: [[u8; Descriptor::DMA_LEN]; 2],
    payload_xxh3: u64,
}

impl Header {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        b[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
        b[16..24].copy_from_slice(&self.built_at.to_le_bytes());
        b[24..32].copy_from_slice(&self.watermark.to_le_bytes());
        b[32..40].copy_from_slice(&self.dnc_count.to_le_bytes());
        b[40..48].copy_from_slice(&self.pair_count.to_le_bytes());
        b[48..52].copy_from_slice(&self.entity_count.to_le_bytes());
        b[52] = self.msisdn_bits;
        b[53] = self.entity_bits;
        b[54..56].copy_from_slice(&self.flags.to_le_bytes());
        b[56..88].copy_from_slice(&self.dnc_sha256);
        b[88..120].copy_from_slice(&self.consent_sha256);
        for (i, s) in self.sections.iter().enumerate() {
            let o = 120 + 16 * i;
            b[o..o + 8].copy_from_slice(&s.offset.to_le_bytes());
            b[o + 8..o + 16].copy_from_slice(&s.len.to_le_bytes());
        }
        b[200..220].copy_from_slice(&self.filters[0]);
        b[220..240].copy_from_slice(&self.filters[1]);
        b[240..248].copy_from_slice(&self.payload_xxh3.to_le_bytes());
        let hx = xxh3_64(&b[..248]);
        b[248..256].copy_from_slice(&hx.to_le_bytes());
        b
    }

    /// Decodes the fixed fields (the caller has checked length, magic and version).
    fn decode(b: &[u8]) -> Header {
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        let mut h = Header {
            version: u32_at(8),
            built_at: u64_at(16) as i64,
            watermark: u64_at(24),
            dnc_count: u64_at(32),
            pair_count: u64_at(40),
            entity_count: u32_at(48),
            msisdn_bits: b[52],
            entity_bits: b[53],
            flags: u16::from_le_bytes([b[54], b[55]]),
            payload_xxh3: u64_at(240),
            ..Header::default()
        };
        h.dnc_sha256.copy_from_slice(&b[56..88]);
        h.consent_sha256.copy_from_slice(&b[88..120]);
        for (i, s) in h.sections.iter_mut().enumerate() {
            *s = Section { offset: u64_at(120 + 16 * i), len: u64_at(128 + 16 * i) };
        }
        h.filters[0].copy_from_slice(&b[200..220]);
        h.filters[1].copy_from_slice(&b[220..240]);
        h
    }
}

// ---------------------------------------------------------------------------------------------
// Loaded snapshot
// ---------------------------------------------------------------------------------------------

/// Memory the key arrays and filters point into. Mapped or heap memory does not move when the
/// `Snapshot` moves.
enum Backing {
    None,
    /// A `u64` buffer so that the bytes are 8-byte aligned.
    Heap(#[allow(dead_code)] Vec<u64>),
}

/// One sorted key array with its index and front filter.
struct KeySet {
    ptr: *const u64,
    len: usize,
    index: RadixIndex,
    /// Borrows the backing; never handed out, so the `'static` never escapes.
    filter: Option<BinaryFuse8Ref<'static>>,
}

// SAFETY: `ptr` points into memory owned by the enclosing `Snapshot` (its `Backing`), which is
// immutable for the snapshot's lifetime; sharing read-only pointers across threads is sound.
unsafe impl Send for KeySet {}
unsafe impl Sync for KeySet {}

impl KeySet {
    fn empty() -> KeySet {
        KeySet { ptr: ptr::NonNull::dangling().as_ptr(), len: 0, index: RadixIndex::build(&[], 0), filter: None }
    }

    #[inline(always)]
    fn keys(&self) -> &[u64] {
        // SAFETY: `ptr`/`len` were taken from a validated, 8-aligned section of the backing,
        // which lives as long as `self` (see `Snapshot`).
        unsafe { slice::from_raw_parts(self.ptr, self.len) }
    }

    /// The stored key whose `key >> low` is `probe`: filter first, then the exact array.
    #[inline(always)]
    fn get(&self, probe: u64) -> Option<u64> {
        if let Some(f) = &self.filter {
            if !f.contains(&probe) {
                return None;
            }
        }
        self.index.find(self.keys(), probe)
    }
}

/// A validated, indexed consent snapshot. Immutable; share it as `Arc<Snapshot>` (the store
/// swaps whole snapshots).
pub struct Snapshot {
    dnc: KeySet,
    pairs: KeySet,
    /// `entity_bits`: a pair probe is `msisdn << entity_bits | entity`.
    entity_bits: u32,
    msisdn_bits: u32,
    entities: Vec<Box<str>>,
    info: SnapshotInfo,
    /// Declared last: dropped after the views into it (which have no drop glue anyway).
    _backing: Backing,
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

impl Snapshot {
    /// A snapshot with no records (every lookup absent). For tests and as a placeholder.
    pub fn empty() -> Snapshot {
        Snapshot {
            dnc: KeySet::empty(),
            pairs: KeySet::empty(),
            entity_bits: 1,
            msisdn_bits: 1,
            entities: Vec::new(),
            info: SnapshotInfo { format_version: FORMAT_VERSION, loaded_at: unix_now(), ..SnapshotInfo::default() },
            _backing: Backing::None,
        }
    }

    /// Maps and validates a snapshot file, then indexes it. See the module docs.
    pub fn open(path: impl AsRef<Path>) -> Result<Snapshot, SnapshotError> {
        let t0 = Instant::now();
        let path = path.as_ref();
        let name = path.display().to_string();
        let io_err = |source| SnapshotError::Io { path: name.clone(), source };
        let file = File::open(path).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        if len < HEADER_LEN as u64 {
            return Err(SnapshotError::Truncated { path: name, len, need: HEADER_LEN as u64 });
        }
        // Read into an aligned heap buffer rather than mmap: operators replace snapshot files
        // with `cp` as often as with `mv`, and an in-place rewrite (or truncation) of a mapped
        // file would change — or SIGBUS — the snapshot that is serving traffic. Reading costs
        // about memcpy speed from the page cache (0.5 s per 800 MB here) and the same memory.
        let mut buf = vec![0u64; (len as usize).div_ceil(8)];
        {
            // SAFETY: `buf` owns at least `len` bytes; u64 accepts any bit pattern.
            let bytes = unsafe { slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<u8>(), len as usize) };
            read_parallel(&file, bytes).map_err(io_err)?;
        }
        let mut snap = Snapshot::from_backing_len(Backing::Heap(buf), len as usize, &name, t0)?;
        snap.info.path = Some(path.to_owned());
        Ok(snap)
    }

    /// Validates and indexes a snapshot held in memory (copied into an aligned buffer).
    pub fn from_bytes(bytes: &[u8], name: &str) -> Result<Snapshot, SnapshotError> {
        let t0 = Instant::now();
        let mut buf = vec![0u64; bytes.len().div_ceil(8)];
        // SAFETY: `buf` has at least `bytes.len()` bytes; u64 accepts any bit pattern.
        unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), buf.as_mut_ptr().cast::<u8>(), bytes.len()) };
        let backing = Backing::Heap(buf);
        // Keep the real length: the buffer may be padded up to 8 bytes.
        Snapshot::from_backing_len(backing, bytes.len(), name, t0)
    }

    fn from_backing_len(backing: Backing, len: usize, name: &str, t0: Instant) -> Result<Snapshot, SnapshotError> {
        let bytes: &[u8] = match &backing {
            // SAFETY: the Vec owns at least `len` initialised bytes.
            Backing::Heap(v) => unsafe { slice::from_raw_parts(v.as_ptr().cast::<u8>(), len) },
            Backing::None => &[],
        };
        // SAFETY: `bytes` points into `backing`, which is moved into the returned Snapshot
        // and outlives every view created from it; moving it does not move the memory.
        let bytes: &'static [u8] = unsafe { slice::from_raw_parts(bytes.as_ptr(), bytes.len()) };
        let v = validate(bytes, name)?;
        let index_bytes = (v.dnc.index.heap_bytes() + v.pairs.index.heap_bytes()) as u64;
        let records = v.header.dnc_count + v.header.pair_count;
        let nonzero = |d: [u8; 32]| (d != [0; 32]).then_some(d);
        let info = SnapshotInfo {
            path: None,
            format_version: v.header.version,
            built_at: v.header.built_at,
            loaded_at: unix_now(),
            load_duration: t0.elapsed(),
            dnc_count: v.header.dnc_count,
            pair_count: v.header.pair_count,
            entity_count: v.header.entity_count,
            msisdn_bits: u32::from(v.header.msisdn_bits),
            entity_bits: u32::from(v.header.entity_bits),
            dnc_sha256: nonzero(v.header.dnc_sha256),
            consent_sha256: nonzero(v.header.consent_sha256),
            journal_watermark: v.header.watermark,
            checksum: v.header.payload_xxh3,
            file_bytes: len as u64,
            index_bytes,
            bytes_per_record: if records == 0 { 0.0 } else { (len as u64 + index_bytes) as f64 / records as f64 },
            dnc_filter: v.dnc.filter.is_some(),
            pair_filter: v.pairs.filter.is_some(),
        };
        Ok(Snapshot {
            dnc: v.dnc,
            pairs: v.pairs,
            entity_bits: info.entity_bits,
            msisdn_bits: info.msisdn_bits,
            entities: v.entities,
            info,
            _backing: backing,
        })
    }

    /// Whether `msisdn` is on the do-not-call list.
    #[inline]
    pub fn is_dnc(&self, msisdn: u64) -> bool {
        self.dnc.get(msisdn).is_some()
    }

    /// The resolved state of (msisdn, entity), if any statement named the pair.
    #[inline]
    pub fn pair(&self, msisdn: u64, entity: EntityId) -> Option<PairState> {
        if msisdn >> self.msisdn_bits != 0 || entity.0 as usize >= self.entities.len() {
            return None;
        }
        let k = self.pairs.get((msisdn << self.entity_bits) | u64::from(entity.0))?;
        PairState::from_bits(k & 3)
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

    /// Every stored pair of `msisdn` (cold path: two binary searches).
    pub fn pairs_of(&self, msisdn: u64) -> impl Iterator<Item = (EntityId, PairState)> + '_ {
        let keys = self.pairs.keys();
        let shift = self.entity_bits + 2;
        let range = if msisdn >> self.msisdn_bits != 0 || keys.is_empty() {
            0..0
        } else {
            let lo = keys.partition_point(|&k| k >> shift < msisdn);
            let hi = keys.partition_point(|&k| k >> shift <= msisdn);
            lo..hi
        };
        let emask = (1u64 << self.entity_bits) - 1;
        keys[range]
            .iter()
            .filter_map(move |&k| Some((EntityId(((k >> 2) & emask) as u32), PairState::from_bits(k & 3)?)))
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

    /// The sorted DNC msisdns, as stored (for tools and benchmarks).
    pub fn dnc_keys(&self) -> &[u64] {
        self.dnc.keys()
    }

    /// The sorted packed pair keys, as stored (for tools and benchmarks).
    pub fn pair_keys(&self) -> &[u64] {
        self.pairs.keys()
    }
}

/// Reads the whole file into `out`. Large files are read as two halves on two threads: on the
/// dev VM the cost is page-faulting and zeroing the fresh buffer (~0.6 GB/s on one thread), not
/// the copy from the page cache, and that halves with a second core.
fn read_parallel(file: &File, out: &mut [u8]) -> io::Result<()> {
    fn read_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        #[cfg(unix)]
        use std::os::unix::fs::FileExt;
        #[cfg(windows)]
        use std::os::windows::fs::FileExt;
        while !buf.is_empty() {
            #[cfg(unix)]
            let n = file.read_at(buf, offset);
            #[cfg(windows)]
            let n = file.seek_read(buf, offset);
            match n {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank while being read")),
                Ok(n) => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
    const SPLIT_ABOVE: usize = 64 << 20;
    if out.len() <= SPLIT_ABOVE {
        return read_at(file, out, 0);
    }
    let mid = out.len() / 2;
    let (a, b) = out.split_at_mut(mid);
    thread::scope(|s| {
        let h = s.spawn(|| read_at(file, b, mid as u64));
        let ra = read_at(file, a, 0);
        let rb = h.join().unwrap_or_else(|_| Err(io::Error::other("reader thread panicked")));
        ra.and(rb)
    })
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

struct Validated {
    header: Header,
    dnc: KeySet,
    pairs: KeySet,
    entities: Vec<Box<str>>,
}

fn validate(bytes: &'static [u8], name: &str) -> Result<Validated, SnapshotError> {
    let invalid = |what: String| SnapshotError::Invalid { path: name.to_owned(), what };
    let len = bytes.len() as u64;
    if len < HEADER_LEN as u64 {
        return Err(SnapshotError::Truncated { path: name.to_owned(), len, need: HEADER_LEN as u64 });
    }
    if bytes[0..8] != MAGIC {
        return Err(SnapshotError::BadMagic { path: name.to_owned() });
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(SnapshotError::UnsupportedVersion { path: name.to_owned(), found: version });
    }
    if xxh3_64(&bytes[..248]) != u64::from_le_bytes(bytes[248..256].try_into().expect("8 bytes")) {
        return Err(SnapshotError::HeaderChecksum { path: name.to_owned() });
    }
    let hl = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes"));
    if hl as usize != HEADER_LEN {
        return Err(invalid(format!("header length {hl}, expected {HEADER_LEN}")));
    }
    let h = Header::decode(bytes);

    // Sections: in order, aligned, contiguous up to padding, ending at the file end.
    let mut pos = HEADER_LEN as u64;
    for (s, sname) in h.sections.iter().zip(SECTION_NAMES) {
        if s.offset != pos {
            return Err(invalid(format!("section {sname} at offset {}, expected {pos}", s.offset)));
        }
        pos = s
            .offset
            .checked_add(s.len)
            .and_then(|e| e.checked_add(7))
            .map(|e| e & !7)
            .ok_or_else(|| invalid(format!("section {sname} length overflows")))?;
    }
    if pos > len {
        return Err(SnapshotError::Truncated { path: name.to_owned(), len, need: pos });
    }
    if pos < len {
        return Err(invalid(format!("{} bytes after the last section", len - pos)));
    }
    let section = |i: usize| {
        let s = h.sections[i];
        &bytes[s.offset as usize..(s.offset + s.len) as usize]
    };

    // Counts and widths.
    if h.dnc_count > MAX_KEYS || h.pair_count > MAX_KEYS {
        return Err(invalid(format!("key counts {} / {} exceed the format limit", h.dnc_count, h.pair_count)));
    }
    if h.sections[1].len != h.dnc_count * 8 || h.sections[2].len != h.pair_count * 8 {
        return Err(invalid(format!(
            "key sections ({} / {} bytes) do not match the counts ({} / {})",
            h.sections[1].len, h.sections[2].len, h.dnc_count, h.pair_count
        )));
    }
    let (mb, eb) = (u32::from(h.msisdn_bits), u32::from(h.entity_bits));
    let want_eb = (u32::BITS - h.entity_count.saturating_sub(1).leading_zeros()).max(1);
    if !(1..=50).contains(&mb) || eb != want_eb || mb + eb + 2 > 64 {
        return Err(invalid(format!("bit widths msisdn {mb} / entity {eb} invalid for {} entities", h.entity_count)));
    }
    if h.flags & !(FLAG_DNC_FILTER | FLAG_PAIR_FILTER) != 0 {
        return Err(invalid(format!("unknown flags {:#06x}", h.flags)));
    }

    let as_keys = |i: usize| -> Result<&'static [u64], SnapshotError> {
        let s = section(i);
        if s.as_ptr() as usize % 8 != 0 {
            return Err(invalid(format!("{} not 8-byte aligned in memory", SECTION_NAMES[i])));
        }
        // SAFETY: the section is 8-byte aligned (checked), a multiple of 8 bytes long (its
        // length is count * 8), inside `bytes`, and u64 accepts any bit pattern.
        Ok(unsafe { slice::from_raw_parts(s.as_ptr().cast::<u64>(), s.len() / 8) })
    };
    let (dnc_keys, pair_keys) = (as_keys(1)?, as_keys(2)?);

    // The heavy part, on three threads: payload checksum, DNC keys, pair keys. The checksum
    // verdict comes first: a damaged payload is reported as such, not as whatever it broke.
    let (sum, dnc_res, pair_res) = thread::scope(|s| {
        let sum = s.spawn(|| xxh3_64(&bytes[HEADER_LEN..]));
        let dnc = s.spawn(|| check_dnc_keys(dnc_keys).map(|()| RadixIndex::build(dnc_keys, 0)));
        let pairs = check_pair_keys(pair_keys, mb, eb, h.entity_count).map(|()| RadixIndex::build(pair_keys, 2));
        (sum.join().expect("checksum thread"), dnc.join().expect("dnc thread"), pairs)
    });
    if sum != h.payload_xxh3 {
        return Err(SnapshotError::PayloadChecksum { path: name.to_owned(), stored: h.payload_xxh3, computed: sum });
    }
    let dnc_index = dnc_res.map_err(|w| invalid(format!("dnc keys: {w}")))?;
    let pair_index = pair_res.map_err(|w| invalid(format!("pair keys: {w}")))?;

    // Entities: end offsets, then names; non-empty, UTF-8, strictly increasing.
    let ent = section(0);
    let n_ent = h.entity_count as usize;
    let table_len = 4 * (n_ent + 1);
    if ent.len() < table_len {
        return Err(invalid("entity table shorter than its offsets".into()));
    }
    let (offs, blob) = ent.split_at(table_len);
    let off = |i: usize| u32::from_le_bytes(offs[4 * i..4 * i + 4].try_into().expect("4 bytes")) as usize;
    if off(0) != 0 || off(n_ent) != blob.len() {
        return Err(invalid("entity table offsets do not span the names".into()));
    }
    let mut entities: Vec<Box<str>> = Vec::with_capacity(n_ent);
    for i in 0..n_ent {
        let (a, b) = (off(i), off(i + 1));
        if a >= b || b > blob.len() {
            return Err(invalid(format!("entity {i}: empty or out-of-range name")));
        }
        let s = std::str::from_utf8(&blob[a..b]).map_err(|_| invalid(format!("entity {i}: not UTF-8")))?;
        if entities.last().is_some_and(|p| **p >= *s) {
            return Err(invalid(format!("entity {i} ({s}): names not strictly increasing")));
        }
        entities.push(s.into());
    }

    // Filters.
    let filter = |i: usize, flag: u16, sec: usize| -> Result<Option<BinaryFuse8Ref<'static>>, SnapshotError> {
        let fp = section(sec);
        if h.flags & flag == 0 {
            return if fp.is_empty() {
                Ok(None)
            } else {
                Err(invalid(format!("{}: data without flag", SECTION_NAMES[sec])))
            };
        }
        let f = BinaryFuse8Ref::from_dma(&h.filters[i], fp);
        let d = xorf_descriptor(&h.filters[i]);
        if !descriptor_ok(&d, fp.len()) {
            return Err(invalid(format!(
                "{}: descriptor does not match {} fingerprints",
                SECTION_NAMES[sec],
                fp.len()
            )));
        }
        Ok(Some(f))
    };
    let dnc_filter = filter(0, FLAG_DNC_FILTER, 3)?;
    let pair_filter = filter(1, FLAG_PAIR_FILTER, 4)?;

    // A filter that misses a key would turn a listed number into "absent": check a sample.
    for (f, keys, low, sname) in [(&dnc_filter, dnc_keys, 0, "dnc filter"), (&pair_filter, pair_keys, 2, "pair filter")]
    {
        if let Some(f) = f {
            let step = (keys.len() / FILTER_SAMPLE).max(1);
            let mut i = 0;
            while i < keys.len() {
                if !f.contains(&(keys[i] >> low)) {
                    return Err(invalid(format!("{sname}: key {i} missing from the filter")));
                }
                i += step;
            }
            if let Some(&k) = keys.last() {
                if !f.contains(&(k >> low)) {
                    return Err(invalid(format!("{sname}: last key missing from the filter")));
                }
            }
        }
    }

    Ok(Validated {
        header: h,
        dnc: KeySet { ptr: dnc_keys.as_ptr(), len: dnc_keys.len(), index: dnc_index, filter: dnc_filter },
        pairs: KeySet { ptr: pair_keys.as_ptr(), len: pair_keys.len(), index: pair_index, filter: pair_filter },
        entities,
    })
}

fn xorf_descriptor(b: &[u8; Descriptor::DMA_LEN]) -> Descriptor {
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
    Descriptor {
        seed: u64::from_le_bytes(b[0..8].try_into().expect("8 bytes")),
        segment_length: u32_at(8),
        segment_length_mask: u32_at(12),
        segment_count_length: u32_at(16),
    }
}

/// Chunk size for the validation passes: the per-chunk check vectorises, the exact position
/// is only looked for after a chunk fails.
const CHECK_CHUNK: usize = 4096;

fn check_dnc_keys(keys: &[u64]) -> Result<(), String> {
    let mut prev: Option<u64> = None;
    for (c, chunk) in keys.chunks(CHECK_CHUNK).enumerate() {
        let mut ok = prev.is_none_or(|p| p < chunk[0]);
        for w in chunk.windows(2) {
            ok &= w[0] < w[1];
        }
        for &k in chunk {
            ok &= (MIN_MSISDN..=MAX_MSISDN).contains(&k);
        }
        if !ok {
            let base = c * CHECK_CHUNK;
            for (i, &k) in chunk.iter().enumerate() {
                if !(MIN_MSISDN..=MAX_MSISDN).contains(&k) {
                    return Err(format!("key {} ({k}) is not a 7 to 15 digit msisdn", base + i));
                }
                let p = if i == 0 { prev } else { Some(chunk[i - 1]) };
                if p.is_some_and(|p| p >= k) {
                    return Err(format!("key {} not strictly increasing (sorted, unique)", base + i));
                }
            }
        }
        prev = chunk.last().copied();
    }
    Ok(())
}

fn check_pair_keys(keys: &[u64], msisdn_bits: u32, entity_bits: u32, entities: u32) -> Result<(), String> {
    let emask = (1u64 << entity_bits) - 1;
    let shift = entity_bits + 2;
    let entities = u64::from(entities);
    let field_ok = |k: u64| {
        let m = k >> shift;
        (k & 3) != 3 && ((k >> 2) & emask) < entities && m >> msisdn_bits == 0 && (MIN_MSISDN..=MAX_MSISDN).contains(&m)
    };
    let mut prev: Option<u64> = None;
    for (c, chunk) in keys.chunks(CHECK_CHUNK).enumerate() {
        let mut ok = prev.is_none_or(|p| p >> 2 < chunk[0] >> 2);
        for w in chunk.windows(2) {
            ok &= w[0] >> 2 < w[1] >> 2;
        }
        for &k in chunk {
            ok &= field_ok(k);
        }
        if !ok {
            let base = c * CHECK_CHUNK;
            for (i, &k) in chunk.iter().enumerate() {
                if k & 3 == 3 {
                    return Err(format!("key {}: invalid state bits 3", base + i));
                }
                if !field_ok(k) {
                    return Err(format!("key {}: msisdn or entity id out of range", base + i));
                }
                let p = if i == 0 { prev } else { Some(chunk[i - 1]) };
                if p.is_some_and(|p| p >> 2 >= k >> 2) {
                    return Err(format!("key {} not strictly increasing (sorted, one state per pair)", base + i));
                }
            }
        }
        prev = chunk.last().copied();
    }
    Ok(())
}

#[cfg(test)]
#[path = "snapshot_tests.rs"]
mod tests;
