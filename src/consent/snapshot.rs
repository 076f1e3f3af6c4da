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
//! Both kinds live in **one hash table** (module `table`): every entry is a `u64`
//! `msisdn << (entity_bits + 2) | entity_id << 2 | state`, with state 0–2 a pair's
//! [`PairState`] and state 3 the msisdn's DNC entry (entity field 0). `msisdn_bits` is the
//! width of the largest msisdn (≤ 50: 15 digits) and `entity_bits` that of the largest entity
//! id (≥ 1); a build whose keys would not fit 64 bits fails ([`BuildError::KeyTooWide`]).
//! Entity ids are the entity names' ranks in byte order; the names are stored in the file.
//! An msisdn's entries share a home bucket (a hash of the msisdn alone), so one policy
//! decision reads one 64-byte line for the pair and the DNC registration together.
//!
//! # File format, version 2 (all integers little-endian)
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 8 | magic `CGSNAP\0\x01` |
//! | 8 | 4 | format version, `2` |
//! | 12 | 4 | header length, `256` |
//! | 16 | 8 | build time, unix seconds (i64) |
//! | 24 | 8 | journal watermark: highest journal sequence folded in, 0 if none |
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
//! | 184 | 56 | reserved, zero |
//! | 240 | 8 | payload checksum (below); also the snapshot's id |
//! | 248 | 8 | xxh3-64 of bytes `0 .. 248` (the header) |
//!
//! Sections start on 64-byte boundaries (zero padding between them; the file ends on one):
//!
//! * **entities**: `entity_count + 1` u32 end offsets (first is 0) into the UTF-8 names that
//!   follow; names non-empty, strictly increasing in byte order.
//! * **table**: at least `8 · B` u64 slots, a multiple of 8 (module `table`), used in place
//!   from a 64-byte-aligned buffer holding the whole file.
//!
//! **Payload checksum**: the bytes `256 .. file end` cut at every multiple of 16 MiB of file
//! offset, each piece hashed with xxh3-64, and the concatenated little-endian piece hashes
//! hashed with xxh3-64 again, so that the loader hashes each piece on whichever thread read it.
//!
//! # Lookups
//!
//! [`Snapshot::statements`] answers (msisdn, entity) with the pair's state and the DNC flag
//! from one table probe — usually one cache line; no allocation, no lock, nothing built at
//! load. Format 1 had two sorted arrays, each with a radix index built at load and a
//! BinaryFuse8 front filter; it took ~3 dependent memory misses per array. A front filter no
//! longer pays: it would cost about what the one line costs.
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

use std::fs::{self, File};
use std::io::{self, BufWriter, Cursor, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use std::{fmt, mem, slice, thread};

use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use super::msisdn::{MAX_MSISDN, MIN_MSISDN};
use super::source::{self, InvalidBudget, RowErrors, SourceError, SourceSummary};
use super::statement::{check_entity, NodeId, Statement, StatementKind, Watermarks};
use super::table::{self, Table, DNC_STATE, MAX_ENTRIES};

#[cfg(not(target_endian = "little"))]
compile_error!("the consent snapshot format is little-endian and used in place; big-endian hosts are not supported");

/// First 8 bytes of every snapshot file.
pub const MAGIC: [u8; 8] = *b"CGSNAP\0\x01";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 3;
/// Header length (every format version so far).
pub const HEADER_LEN: usize = 256;

/// Sections in file order. The table is section 1 (its descriptor at header offset 136); the
/// watermarks, new in format 3, come last (descriptor at offset 184).
const SECTION_NAMES: [&str; 3] = ["entities", "table", "watermarks"];
/// Sections start on cache-line boundaries (the table's buckets are cache lines).
const SECTION_ALIGN: u64 = 64;
/// Unit of the payload checksum (module docs).
const CHECKSUM_BLOCK: u64 = 16 << 20;

/// Timestamps the builder accepts, Unix milliseconds: ±2^44 ms (±557 years) around the epoch.
pub const MIN_AT: i64 = -(1 << 44);
pub const MAX_AT: i64 = (1 << 44) - 1;
const AT_BIAS: i64 = 1 << 44;
const AT_MASK: u128 = (1 << 45) - 1;

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

/// Inputs of [`build`].
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// `dnc.csv`, if any.
    pub dnc: Option<PathBuf>,
    /// `consent.csv`, if any.
    pub consent: Option<PathBuf>,
    /// Journal statements to fold in (latest wins across CSV and journal). Their highest
    /// origin seq per origin node is stored as the snapshot's watermarks, so the gateway knows
    /// which live statements the snapshot already contains.
    pub journal_records: Vec<Statement>,
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
    /// Placing the statements into the hash table.
    Hashing,
    Writing,
    Done,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Reading => "reading",
            Phase::Sorting => "sorting",
            Phase::Resolving => "resolving",
            Phase::Hashing => "hashing",
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
    /// The [`BuildOptions::max_invalid`] the build ran with.
    pub max_invalid: u64,
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
    /// Hash table buckets (64-byte lines) and slots.
    pub buckets: u64,
    pub table_slots: u64,
    pub dnc_sha256: Option<[u8; 32]>,
    pub consent_sha256: Option<[u8; 32]>,
    pub bytes_written: u64,
    pub elapsed: Duration,
    /// Wall time per phase.
    pub phases: Vec<(Phase, Duration)>,
}

impl fmt::Display for BuildReport {
    /// The summary `consentgate snapshot build` prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self;
        writeln!(f, "wrote {} ({} bytes) in {:.2} s", r.out.display(), r.bytes_written, r.elapsed.as_secs_f64())?;
        writeln!(
            f,
            "  rows read:    {} (dnc {}, consent {}, journal {})",
            r.rows_read, r.dnc_rows, r.consent_rows, r.journal_records
        )?;
        writeln!(f, "  dnc numbers:  {}", r.dnc)?;
        writeln!(
            f,
            "  pairs:        {} (grant {}, revoked {}, grant older than dnc {})",
            r.pairs, r.grants, r.revoked, r.dnc_newer
        )?;
        write!(f, "  entities:     {}", r.entities)?;
        if r.invalid.count > 0 {
            write!(f, "\n  skipped {} invalid row(s) (allowed by --max-invalid {}):", r.invalid.count, r.max_invalid)?;
            for (field, n) in &r.invalid.by_field {
                write!(f, "\n    {field}: {n}")?;
            }
            for e in &r.invalid.first {
                write!(f, "\n    {e}")?;
            }
        }
        Ok(())
    }
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
    /// More statements than the table's u32 positions can address.
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
    #[error("entity empty, longer than {} bytes or with a control character", super::statement::MAX_ENTITY_BYTES)]
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
    #[error(
        "{path}: unsupported snapshot format version {found} (this build reads {FORMAT_VERSION}); \
         rebuild with `consentgate snapshot build`"
    )]
    UnsupportedVersion { path: String, found: u32 },
    #[error("{path}: header checksum mismatch")]
    HeaderChecksum { path: String },
    #[error("{path}: payload checksum mismatch (header {stored:016x}, computed {computed:016x})")]
    PayloadChecksum { path: String, stored: u64, computed: u64 },
    /// A structural problem: section bounds, entity table, table order or fields, counts.
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

    /// Adds a statement made at `at` (Unix ms); for [`StatementKind::Dnc`] the entity is
    /// ignored.
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
        check_statement(msisdn, at)?;
        check_entity(entity.as_bytes()).map_err(|_| StatementError::BadEntity)?;
        let id = self.entities.intern(entity);
        self.pairs.push(pack_pair(msisdn, id, at, kind == StatementKind::Revoke));
        Ok(())
    }

    /// Adds a live statement (the journal's own type; its identity and source do not matter
    /// here: the builder's order is `at`, then revoke over grant, as in
    /// [`super::statement::Precedence`]).
    pub fn add(&mut self, s: &Statement) -> Result<(), StatementError> {
        match (s.kind, &s.entity) {
            (StatementKind::Dnc, _) => self.add_dnc(s.msisdn, s.at),
            (_, Some(e)) => self.add_statement(s.msisdn, e, s.kind, s.at),
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

        let max_msisdn = [a.last().map(|r| r >> 78), b.last().map(|r| r >> 78), dnc.last().map(|r| r >> 64)]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(0) as u64;
        let msisdn_bits = (u64::BITS - max_msisdn.leading_zeros()).max(1);
        let entity_bits = (u32::BITS - (names.len().saturating_sub(1) as u32).leading_zeros()).max(1);
        if msisdn_bits + entity_bits + 2 > 64 {
            return Err(BuildError::KeyTooWide { msisdn_bits, entity_bits });
        }
        let entries = dnc.len() as u64 + a.len() as u64 + b.len() as u64;
        if entries > MAX_ENTRIES {
            return Err(BuildError::TooManyKeys { what: "statements", count: entries, max: MAX_ENTRIES });
        }

        phase(Phase::Resolving, rows_in);
        let mut counts = [0u64; 3];
        let pair_keys = resolve(a, b, &dnc, entity_bits, &mut counts);
        drop(pairs);
        let shift = entity_bits + 2;
        let dnc_keys: Vec<u64> = dnc.iter().map(|r| (((r >> 64) as u64) << shift) | DNC_STATE).collect();
        drop(dnc);

        phase(Phase::Hashing, rows_in);
        let buckets = table::bucket_count((dnc_keys.len() + pair_keys.len()) as u64);
        let slots = table::place(|| MergeSorted::new(&dnc_keys, &pair_keys), shift, buckets);

        Ok(Compiled {
            dnc: dnc_keys.len() as u64,
            pairs: pair_keys.len() as u64,
            slots,
            buckets,
            names,
            msisdn_bits,
            entity_bits,
            grants: counts[PairState::Grant as usize],
            revoked: counts[PairState::Revoked as usize],
            dnc_newer: counts[PairState::DncNewer as usize],
        })
    }
}

/// Two sorted, disjoint key arrays as one sorted sequence.
struct MergeSorted<'a> {
    a: &'a [u64],
    b: &'a [u64],
}

impl<'a> MergeSorted<'a> {
    fn new(a: &'a [u64], b: &'a [u64]) -> MergeSorted<'a> {
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

/// The compiled content of a snapshot.
struct Compiled {
    dnc: u64,
    pairs: u64,
    /// The lookup table ([`table`]).
    slots: Vec<u64>,
    buckets: u64,
    names: Vec<Box<str>>,
    msisdn_bits: u32,
    entity_bits: u32,
    grants: u64,
    revoked: u64,
    dnc_newer: u64,
}

/// Header facts that do not come from the statements.
#[derive(Debug, Clone, Default)]
struct WriteMeta {
    built_at: i64,
    watermarks: Watermarks,
    dnc_sha256: [u8; 32],
    consent_sha256: [u8; 32],
}

fn unix_now() -> i64 {
    crate::time::Clock::system().now().unix_s()
}

/// Builds a snapshot file from CSV sources and journal statements. See the module docs.
///
/// The DNC and consent files are parsed in parallel (one thread each) while this thread
/// reports progress; sorting uses two threads as well. Memory: 16 bytes per row while reading
/// and sorting, then the table (~9.1 bytes per statement) beside the sorted keys while they
/// are placed.
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
                    pairs.push(pack_pair(r.msisdn, id, r.at, r.action == StatementKind::Revoke));
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
        watermarks: Watermarks::of(&opts.journal_records),
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
        max_invalid: opts.max_invalid,
        dnc: compiled.dnc,
        pairs: compiled.pairs,
        grants: compiled.grants,
        revoked: compiled.revoked,
        dnc_newer: compiled.dnc_newer,
        entities: compiled.names.len() as u32,
        msisdn_bits: compiled.msisdn_bits,
        entity_bits: compiled.entity_bits,
        buckets: compiled.buckets,
        table_slots: compiled.slots.len() as u64,
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

fn u64_bytes(k: &[u64]) -> &[u8] {
    // SAFETY: u64 has no padding and any byte pattern is a valid u8; the host is little-endian
    // (compile_error above), so this is the on-disk encoding.
    unsafe { slice::from_raw_parts(k.as_ptr().cast::<u8>(), mem::size_of_val(k)) }
}

/// The payload checksum (module docs): the payload cut at every multiple of
/// [`CHECKSUM_BLOCK`] bytes of *file* offset, each piece hashed with xxh3-64, and the
/// little-endian piece hashes hashed again. The pieces can be hashed in any order and on any
/// thread, as each is read.
#[derive(Default)]
struct BlockHasher {
    /// File offset of the next byte.
    pos: u64,
    cur: Xxh3,
    sums: Vec<u8>,
}

impl BlockHasher {
    fn at(pos: u64) -> BlockHasher {
        BlockHasher { pos, cur: Xxh3::new(), sums: Vec::new() }
    }

    fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let room = (CHECKSUM_BLOCK - self.pos % CHECKSUM_BLOCK) as usize;
            let n = room.min(data.len());
            self.cur.update(&data[..n]);
            self.pos += n as u64;
            data = &data[n..];
            if self.pos % CHECKSUM_BLOCK == 0 {
                self.sums.extend_from_slice(&self.cur.digest().to_le_bytes());
                self.cur.reset();
            }
        }
    }

    fn finish(mut self) -> u64 {
        if self.pos % CHECKSUM_BLOCK != 0 {
            self.sums.extend_from_slice(&self.cur.digest().to_le_bytes());
        }
        xxh3_64(&self.sums)
    }
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
    let marks = encode_watermarks(&meta.watermarks);
    let parts: [&[u8]; 3] = [&ent, u64_bytes(&c.slots), &marks];

    let mut h = Header {
        version: FORMAT_VERSION,
        built_at: meta.built_at,
        dnc_count: c.dnc,
        pair_count: c.pairs,
        entity_count: c.names.len() as u32,
        msisdn_bits: c.msisdn_bits as u8,
        entity_bits: c.entity_bits as u8,
        dnc_sha256: meta.dnc_sha256,
        consent_sha256: meta.consent_sha256,
        buckets: c.buckets,
        states: [c.grants, c.revoked, c.dnc_newer],
        ..Header::default()
    };

    let mut bw = BufWriter::with_capacity(1 << 20, &mut *w);
    bw.write_all(&[0u8; HEADER_LEN])?;
    let mut hasher = BlockHasher::at(HEADER_LEN as u64);
    let mut pos = HEADER_LEN as u64;
    const PAD: [u8; SECTION_ALIGN as usize] = [0; SECTION_ALIGN as usize];
    for (i, part) in parts.iter().enumerate() {
        h.sections[i] = Section { offset: pos, len: part.len() as u64 };
        for chunk in part.chunks(1 << 20) {
            hasher.update(chunk);
            bw.write_all(chunk)?;
        }
        pos += part.len() as u64;
        let pad = (align(pos) - pos) as usize;
        hasher.update(&PAD[..pad]);
        bw.write_all(&PAD[..pad])?;
        pos += pad as u64;
    }
    bw.flush()?;
    drop(bw);
    h.payload_checksum = hasher.finish();
    w.seek(SeekFrom::Start(0))?;
    w.write_all(&h.encode())?;
    w.flush()?;
    Ok(pos)
}

#[inline]
fn align(x: u64) -> u64 {
    x.next_multiple_of(SECTION_ALIGN)
}

// ---------------------------------------------------------------------------------------------
// Header
// ---------------------------------------------------------------------------------------------

/// Header offsets of the section descriptors (offset u64, length u64), in file order.
const SECTION_AT: [usize; 3] = [120, 136, 184];

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Section {
    offset: u64,
    len: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Header {
    version: u32,
    built_at: i64,
    dnc_count: u64,
    pair_count: u64,
    entity_count: u32,
    msisdn_bits: u8,
    entity_bits: u8,
    flags: u16,
    dnc_sha256: [u8; 32],
    consent_sha256: [u8; 32],
    /// In file order: [`SECTION_NAMES`].
    sections: [Section; 3],
    buckets: u64,
    /// Pairs per [`PairState`]: grant, revoked, dnc_newer.
    states: [u64; 3],
    payload_checksum: u64,
}

impl Header {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        b[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
        b[16..24].copy_from_slice(&self.built_at.to_le_bytes());
        b[32..40].copy_from_slice(&self.dnc_count.to_le_bytes());
        b[40..48].copy_from_slice(&self.pair_count.to_le_bytes());
        b[48..52].copy_from_slice(&self.entity_count.to_le_bytes());
        b[52] = self.msisdn_bits;
        b[53] = self.entity_bits;
        b[54..56].copy_from_slice(&self.flags.to_le_bytes());
        b[56..88].copy_from_slice(&self.dnc_sha256);
        b[88..120].copy_from_slice(&self.consent_sha256);
        for (s, o) in self.sections.iter().zip(SECTION_AT) {
            b[o..o + 8].copy_from_slice(&s.offset.to_le_bytes());
            b[o + 8..o + 16].copy_from_slice(&s.len.to_le_bytes());
        }
        b[152..160].copy_from_slice(&self.buckets.to_le_bytes());
        for (i, n) in self.states.iter().enumerate() {
            b[160 + 8 * i..168 + 8 * i].copy_from_slice(&n.to_le_bytes());
        }
        b[240..248].copy_from_slice(&self.payload_checksum.to_le_bytes());
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
            dnc_count: u64_at(32),
            pair_count: u64_at(40),
            entity_count: u32_at(48),
            msisdn_bits: b[52],
            entity_bits: b[53],
            flags: u16::from_le_bytes([b[54], b[55]]),
            buckets: u64_at(152),
            states: [u64_at(160), u64_at(168), u64_at(176)],
            payload_checksum: u64_at(240),
            ..Header::default()
        };
        h.dnc_sha256.copy_from_slice(&b[56..88]);
        h.consent_sha256.copy_from_slice(&b[88..120]);
        for (s, o) in h.sections.iter_mut().zip(SECTION_AT) {
            *s = Section { offset: u64_at(o), len: u64_at(o + 8) };
        }
        h
    }

    /// Checks the header on its own: magic, version, header checksum, field ranges and the
    /// section layout against the file length.
    fn check(b: &[u8], len: u64, name: &str) -> Result<Header, SnapshotError> {
        let invalid = |what: String| SnapshotError::Invalid { path: name.to_owned(), what };
        if len < HEADER_LEN as u64 || b.len() < HEADER_LEN {
            return Err(SnapshotError::Truncated { path: name.to_owned(), len, need: HEADER_LEN as u64 });
        }
        if b[0..8] != MAGIC {
            return Err(SnapshotError::BadMagic { path: name.to_owned() });
        }
        let version = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes"));
        if version != FORMAT_VERSION {
            return Err(SnapshotError::UnsupportedVersion { path: name.to_owned(), found: version });
        }
        if xxh3_64(&b[..248]) != u64::from_le_bytes(b[248..256].try_into().expect("8 bytes")) {
            return Err(SnapshotError::HeaderChecksum { path: name.to_owned() });
        }
        let hl = u32::from_le_bytes(b[12..16].try_into().expect("4 bytes"));
        if hl as usize != HEADER_LEN {
            return Err(invalid(format!("header length {hl}, expected {HEADER_LEN}")));
        }
        if b[24..32].iter().chain(&b[200..240]).any(|&x| x != 0) {
            return Err(invalid("reserved header bytes 24..32 or 200..240 not zero".into()));
        }
        let h = Header::decode(b);
        if h.flags != 0 {
            return Err(invalid(format!("unknown flags {:#06x}", h.flags)));
        }

        // Sections: in order, aligned, contiguous up to padding, ending at the file end.
        let mut pos = HEADER_LEN as u64;
        for (s, sname) in h.sections.iter().zip(SECTION_NAMES) {
            if s.offset != pos {
                return Err(invalid(format!("section {sname} at offset {}, expected {pos}", s.offset)));
            }
            pos = s
                .offset
                .checked_add(s.len)
                .and_then(|e| e.checked_add(SECTION_ALIGN - 1))
                .map(|e| e / SECTION_ALIGN * SECTION_ALIGN)
                .ok_or_else(|| invalid(format!("section {sname} length overflows")))?;
        }
        if pos > len {
            return Err(SnapshotError::Truncated { path: name.to_owned(), len, need: pos });
        }
        if pos < len {
            return Err(invalid(format!("{} bytes after the last section", len - pos)));
        }

        // Counts and widths.
        let entries = h.dnc_count.checked_add(h.pair_count).filter(|&n| n <= MAX_ENTRIES);
        let Some(entries) = entries else {
            return Err(invalid(format!(
                "statement counts {} / {} exceed the format limit",
                h.dnc_count, h.pair_count
            )));
        };
        if h.states.iter().try_fold(0u64, |a, &n| a.checked_add(n)) != Some(h.pair_count) {
            return Err(invalid(format!("pair states {:?} do not add up to {} pairs", h.states, h.pair_count)));
        }
        if h.buckets != table::bucket_count(entries) {
            return Err(invalid(format!(
                "{} buckets, expected {} for {entries} statements",
                h.buckets,
                table::bucket_count(entries)
            )));
        }
        let t = h.sections[1].len;
        if t % (8 * table::SLOTS as u64) != 0 || t / 8 < h.buckets * table::SLOTS as u64 || t / 8 > u64::from(u32::MAX)
        {
            return Err(invalid(format!("table section of {t} bytes does not fit {} buckets", h.buckets)));
        }
        let (mb, eb) = (u32::from(h.msisdn_bits), u32::from(h.entity_bits));
        let want_eb = (u32::BITS - h.entity_count.saturating_sub(1).leading_zeros()).max(1);
        if !(1..=50).contains(&mb) || eb != want_eb || mb + eb + 2 > 64 {
            return Err(invalid(format!(
                "bit widths msisdn {mb} / entity {eb} invalid for {} entities",
                h.entity_count
            )));
        }
        Ok(h)
    }
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

    /// Reads and validates a snapshot file. See the module docs.
    ///
    /// Read into an aligned heap buffer rather than mmap: operators replace snapshot files
    /// with `cp` as often as with `mv`, and an in-place rewrite (or truncation) of a mapped
    /// file would change — or SIGBUS — the snapshot that is serving traffic. The file is read
    /// on two threads in checksum blocks, each block hashed and its table slots validated
    /// right after it is read, while it is still in cache.
    pub fn open(path: impl AsRef<Path>) -> Result<Snapshot, SnapshotError> {
        let t0 = Instant::now();
        let path = path.as_ref();
        let name = path.display().to_string();
        let io_err = |source| SnapshotError::Io { path: name.clone(), source };
        let file = File::open(path).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        let mut head = [0u8; HEADER_LEN];
        if len >= HEADER_LEN as u64 {
            read_at(&file, &mut head, 0).map_err(io_err)?;
        }
        let header = Header::check(&head, len, &name)?;
        let mut buf = Image::zeroed(len as usize);
        let scan = load_blocks(&header, buf.bytes_mut(), &name, |block, offset| read_at(&file, block, offset))?;
        let mut snap = Snapshot::finish(buf, len as usize, header, scan, &name, t0)?;
        snap.info.path = Some(path.to_owned());
        Ok(snap)
    }

    /// Validates a snapshot held in memory (copied into an aligned buffer).
    pub fn from_bytes(bytes: &[u8], name: &str) -> Result<Snapshot, SnapshotError> {
        let t0 = Instant::now();
        let len = bytes.len() as u64;
        let header = Header::check(bytes, len, name)?;
        let mut buf = Image::zeroed(bytes.len());
        let scan = load_blocks(&header, buf.bytes_mut(), name, |block, offset| {
            block.copy_from_slice(&bytes[offset as usize..offset as usize + block.len()]);
            Ok(())
        })?;
        Snapshot::finish(buf, bytes.len(), header, scan, name, t0)
    }

    /// The checks that need the whole file (entity table, counts), then the snapshot.
    fn finish(
        buf: Image,
        len: usize,
        h: Header,
        scan: table::Scan,
        name: &str,
        t0: Instant,
    ) -> Result<Snapshot, SnapshotError> {
        let invalid = |what: String| SnapshotError::Invalid { path: name.to_owned(), what };
        let bytes = buf.bytes();
        let section = |i: usize| {
            let s = h.sections[i];
            &bytes[s.offset as usize..(s.offset + s.len) as usize]
        };
        let entities = parse_entities(section(0), h.entity_count).map_err(invalid)?;
        let watermarks = parse_watermarks(section(2)).map_err(invalid)?;
        let [grants, revoked, dnc_newer, dnc] = scan.counts;
        if dnc != h.dnc_count || [grants, revoked, dnc_newer] != h.states {
            return Err(invalid(format!(
                "table holds {dnc} dnc entries and pairs {:?}; the header says {} and {:?}",
                [grants, revoked, dnc_newer],
                h.dnc_count,
                h.states
            )));
        }
        let t = h.sections[1];
        let records = h.dnc_count + h.pair_count;
        let nonzero = |d: [u8; 32]| (d != [0; 32]).then_some(d);
        let info = SnapshotInfo {
            path: None,
            format_version: h.version,
            built_at: h.built_at,
            loaded_at: unix_now(),
            load_duration: t0.elapsed(),
            dnc_count: h.dnc_count,
            pair_count: h.pair_count,
            grants,
            revoked,
            dnc_newer,
            entity_count: h.entity_count,
            msisdn_bits: u32::from(h.msisdn_bits),
            entity_bits: u32::from(h.entity_bits),
            dnc_sha256: nonzero(h.dnc_sha256),
            consent_sha256: nonzero(h.consent_sha256),
            watermarks,
            checksum: h.payload_checksum,
            file_bytes: len as u64,
            buckets: h.buckets,
            table_slots: t.len / 8,
            bytes_per_record: if records == 0 { 0.0 } else { len as f64 / records as f64 },
        };
        Ok(Snapshot {
            // The section is inside the image (checked against the file length) and starts on
            // a multiple of 64 bytes, so on a word and on a cache line of the image.
            slot_start: buf.word_index(t.offset as usize / 8),
            slot_count: (t.len / 8) as usize,
            buckets: h.buckets,
            shift: u32::from(h.entity_bits) + 2,
            msisdn_bits: u32::from(h.msisdn_bits),
            entities,
            info,
            image: buf,
        })
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

/// The file's bytes in memory, starting on a 64-byte boundary (so the table's buckets are
/// cache lines). Allocated as zeroed `u64`s: for a large buffer the allocator hands out
/// fresh, untouched pages (`calloc` → `mmap`), so the huge-page advice still applies when the
/// read first touches them. (`alloc_zeroed` with 64-byte alignment would memset every byte
/// first: measured +0.5 s per GB on the dev VM.)
struct Image {
    buf: Vec<u64>,
    /// Words before the 64-byte-aligned start.
    off: usize,
    len: usize,
}

impl Image {
    fn zeroed(len: usize) -> Image {
        let buf = vec![0u64; len.div_ceil(8) + 8];
        let off = (buf.as_ptr() as usize).next_multiple_of(64).wrapping_sub(buf.as_ptr() as usize) / 8;
        Image { buf, off, len }
    }

    /// The index in `buf` of the image's word `i` (byte `8 i`).
    fn word_index(&self, i: usize) -> usize {
        self.off + i
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `off + len.div_ceil(8) <= buf.len()` words; any u64 is valid as bytes.
        unsafe { slice::from_raw_parts(self.buf.as_ptr().add(self.off).cast::<u8>(), self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`; any byte pattern is a valid u64.
        unsafe { slice::from_raw_parts_mut(self.buf.as_mut_ptr().add(self.off).cast::<u8>(), self.len) }
    }

    /// Moves the image onto transparent huge pages (2 MiB): `MADV_HUGEPAGE`, then
    /// `MADV_COLLAPSE` (Linux ≥ 6.1), which copies the pages synchronously. The content and
    /// the addresses do not change, so readers carry on meanwhile. Returns whether the kernel
    /// collapsed the range.
    fn collapse_huge(&self) -> bool {
        #[cfg(target_os = "linux")]
        {
            const HUGE: usize = 2 << 20;
            let base = self.buf.as_ptr() as usize;
            let start = base.next_multiple_of(HUGE);
            let end = (base + 8 * self.buf.len()) / HUGE * HUGE;
            if end <= start {
                return false;
            }
            // SAFETY: advice on whole pages inside `buf`, which `self` keeps alive; neither
            // call changes the memory's content or address. Failure changes nothing.
            unsafe {
                let p = start as *mut libc::c_void;
                libc::madvise(p, end - start, libc::MADV_HUGEPAGE);
                libc::madvise(p, end - start, libc::MADV_COLLAPSE) == 0
            }
        }
        #[cfg(not(target_os = "linux"))]
        false
    }
}

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

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

/// Files up to this size are loaded on one thread.
const SPLIT_ABOVE: usize = 64 << 20;

/// Fills `out` (the whole file) block by block with `fill(block, file_offset)`, hashing each
/// block and validating the table slots in it right after it is filled, while it is in cache.
/// Large files are done as two halves on two threads. Measured at 100 M records (914 MB) on
/// the dev VM, per half: fill (page faults, zeroing, copy) ≈ 0.3 s, hash ≈ 0.04 s, table
/// checks ≈ 0.3 s. The checksum verdict comes first: a damaged payload is reported as such, not as
/// whatever it broke.
fn load_blocks(
    h: &Header,
    out: &mut [u8],
    name: &str,
    fill: impl Fn(&mut [u8], u64) -> io::Result<()> + Sync,
) -> Result<table::Scan, SnapshotError> {
    let len = out.len();
    let t = h.sections[1];
    let (t_start, t_end) = (t.offset as usize, (t.offset + t.len) as usize);
    let fields = table::Fields {
        shift: u32::from(h.entity_bits) + 2,
        msisdn_bits: u32::from(h.msisdn_bits),
        entities: u64::from(h.entity_count),
        buckets: h.buckets,
    };
    let block = CHECKSUM_BLOCK as usize;
    let split = if len > SPLIT_ABOVE { len.div_ceil(block) / 2 * block } else { len };
    let (a, b) = out.split_at_mut(split);
    let half = |part: &mut [u8], start: usize| -> io::Result<(Vec<u64>, ScanResult)> {
        let mut sums = Vec::with_capacity(part.len().div_ceil(block));
        let mut scan: ScanResult = Ok(None);
        for (i, chunk) in part.chunks_mut(block).enumerate() {
            let off = start + i * block;
            fill(chunk, off as u64)?;
            let chunk = &*chunk;
            sums.push(xxh3_64(if off == 0 { &chunk[HEADER_LEN.min(chunk.len())..] } else { chunk }));
            let (from, to) = (t_start.max(off), t_end.min(off + chunk.len()));
            if from < to && scan.is_ok() {
                // SAFETY: u64 accepts any bit pattern; alignment is checked by align_to.
                let (pre, slots, post) = unsafe { chunk[from - off..to - off].align_to::<u64>() };
                let part = if pre.is_empty() && post.is_empty() {
                    table::Scan::run(slots, (from - t_start) / 8, fields)
                } else {
                    Err("table not 8-byte aligned in memory".to_owned())
                };
                scan = join_scans(scan, part.map(Some));
            }
        }
        Ok((sums, scan))
    };
    let (ra, rb) = thread::scope(|s| {
        let hb = (!b.is_empty()).then(|| s.spawn(|| half(b, split)));
        let ra = half(a, 0);
        let rb = hb.map(|h| h.join().unwrap_or_else(|_| Err(io::Error::other("reader thread panicked"))));
        (ra, rb)
    });
    let io_err = |source| SnapshotError::Io { path: name.to_owned(), source };
    let (mut sums, mut scan) = ra.map_err(io_err)?;
    if let Some(rb) = rb {
        let (sums_b, scan_b) = rb.map_err(io_err)?;
        sums.extend(sums_b);
        scan = join_scans(scan, scan_b);
    }
    let sums: Vec<u8> = sums.iter().flat_map(|s| s.to_le_bytes()).collect();
    let computed = xxh3_64(&sums);
    if computed != h.payload_checksum {
        return Err(SnapshotError::PayloadChecksum { path: name.to_owned(), stored: h.payload_checksum, computed });
    }
    let scan = scan.map_err(|w| SnapshotError::Invalid { path: name.to_owned(), what: format!("table {w}") })?;
    scan.ok_or_else(|| SnapshotError::Invalid { path: name.to_owned(), what: "empty table".into() })
}

type ScanResult = Result<Option<table::Scan>, String>;

/// Joins the scans of two adjacent slot ranges (either may be empty or failed).
fn join_scans(a: ScanResult, b: ScanResult) -> ScanResult {
    match (a?, b?) {
        (Some(a), Some(b)) => a.join(b).map(Some),
        (a, b) => Ok(a.or(b)),
    }
}

/// The watermarks section (format 3): `count` u32, then per origin node in strictly increasing
/// name order `seq` u64, `len` u8 and the node id's `len` ASCII bytes.
fn encode_watermarks(w: &Watermarks) -> Vec<u8> {
    let mut b = Vec::with_capacity(4 + w.len() * 24);
    b.extend_from_slice(&(w.len() as u32).to_le_bytes());
    for (node, seq) in w.iter() {
        b.extend_from_slice(&seq.to_le_bytes());
        b.push(node.as_str().len() as u8);
        b.extend_from_slice(node.as_str().as_bytes());
    }
    b
}

fn parse_watermarks(b: &[u8]) -> Result<Watermarks, String> {
    let bad = |what: &str| Err(format!("watermarks section: {what}"));
    if b.len() < 4 {
        return bad("shorter than its count");
    }
    let count = u32::from_le_bytes(b[..4].try_into().expect("4 bytes"));
    let mut w = Watermarks::new();
    let mut last: Option<NodeId> = None;
    let mut at = 4;
    for i in 0..count {
        if b.len() < at + 9 {
            return bad(&format!("entry {i} truncated"));
        }
        let seq = u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        let n = b[at + 8] as usize;
        let Some(name) = b.get(at + 9..at + 9 + n) else { return bad(&format!("entry {i} truncated")) };
        let node = NodeId::parse_bytes(name).map_err(|e| format!("watermarks section: entry {i}: {e}"))?;
        if last.as_ref().is_some_and(|l| *l >= node) {
            return bad(&format!("entry {i} ({node}): nodes not strictly increasing"));
        }
        if seq == 0 {
            return bad(&format!("entry {i} ({node}): seq 0"));
        }
        last = Some(node.clone());
        w.insert(node, seq);
        at += 9 + n;
    }
    if at != b.len() {
        return bad(&format!("{} bytes after the last entry", b.len() - at));
    }
    Ok(w)
}

/// The entity table: `count + 1` u32 end offsets, then the names; non-empty, UTF-8, strictly
/// increasing in byte order.
fn parse_entities(ent: &[u8], count: u32) -> Result<Vec<Box<str>>, String> {
    let n_ent = count as usize;
    let table_len = 4 * (n_ent + 1);
    if ent.len() < table_len {
        return Err("entity table shorter than its offsets".into());
    }
    let (offs, blob) = ent.split_at(table_len);
    let off = |i: usize| u32::from_le_bytes(offs[4 * i..4 * i + 4].try_into().expect("4 bytes")) as usize;
    if off(0) != 0 || off(n_ent) != blob.len() {
        return Err("entity table offsets do not span the names".into());
    }
    let mut entities: Vec<Box<str>> = Vec::with_capacity(n_ent);
    for i in 0..n_ent {
        let (a, b) = (off(i), off(i + 1));
        if a >= b || b > blob.len() {
            return Err(format!("entity {i}: empty or out-of-range name"));
        }
        let s = std::str::from_utf8(&blob[a..b]).map_err(|_| format!("entity {i}: not UTF-8"))?;
        if entities.last().is_some_and(|p| **p >= *s) {
            return Err(format!("entity {i} ({s}): names not strictly increasing"));
        }
        entities.push(s.into());
    }
    Ok(entities)
}

#[cfg(test)]
#[path = "snapshot_tests.rs"]
mod tests;
