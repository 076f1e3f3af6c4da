//! The append-only journal of live consent statements (architecture §4): MO opt-outs captured by
//! [`crate::optout`], grants / revocations / do-not-call entries from the admin API, and
//! (architecture §8) statements replicated from other nodes. It is replayed into the
//! [`super::delta::Delta`] on start and folded into the next snapshot by
//! `consentgate snapshot build --journal DIR` ([`read_dir`]).
//!
//! # Files
//!
//! A directory of segments `journal-<first_seq:020>.log`, where `first_seq` is the journal
//! sequence number of the first record written to that segment. Segments are replayed in name
//! order; only the last one is ever appended to. A new segment is started when the next write
//! would take the current one past the size limit ([`DEFAULT_SEGMENT_BYTES`]); a segment holds
//! at least one write, so one large batch may exceed the limit. Files with other names are
//! ignored.
//!
//! # Segment header (16 bytes)
//!
//! | offset | field | size | notes |
//! |---:|---|---:|---|
//! | 0 | magic | 8 | `CGJRNL\0\0` |
//! | 8 | `version` | u32 | [`FORMAT_VERSION`] = 2 |
//! | 12 | reserved | u32 | 0 |
//!
//! A segment without this header, or with another version, is refused with
//! [`JournalError::Format`] naming the file (format 1, the first, had no header). The
//! one exception is the last segment shorter than a header whose bytes are a prefix of one
//! (a crash while a rotation created it): it holds no record and is rewritten as empty.
//!
//! # Record (little-endian)
//!
//! | offset | field | size | notes |
//! |---:|---|---:|---|
//! | 0 | `len` | u32 | whole record in bytes, this field and the checksum included: 48 + origin_len + entity_len |
//! | 4 | `seq` | u64 | journal position: strictly increasing across the journal, from 1 |
//! | 12 | `at` | i64 | when the statement was made, Unix **milliseconds** |
//! | 20 | `kind` | u8 | 1 grant, 2 revoke, 3 dnc ([`StatementKind`]) |
//! | 21 | `source` | u8 | 1 mo, 2 api, 3 complaint, 4 replica ([`StatementSource`]) |
//! | 22 | `origin_len` | u8 | 1..=64: the origin node id ([`NodeId`]) |
//! | 23 | `entity_len` | u8 | 0 for dnc (global); 1..=255 for grant / revoke ([`EntityName`]) |
//! | 24 | `msisdn` | u64 | E.164 digits as a number |
//! | 32 | `origin_seq` | u64 | the statement's seq at its origin ([`StatementId`]) |
//! | 40 | `origin` | origin_len | ASCII node id |
//! | 40 + origin_len | `entity` | entity_len | UTF-8 entity id |
//! | 40 + origin_len + entity_len | `checksum` | u64 | xxh3-64 of every byte before it |
//!
//! For a statement made on this node the origin is this node and `origin_seq` equals `seq`
//! (the store hands out journal sequence numbers as tickets, see [`super::store`]). A
//! statement replicated from another node keeps its origin and origin seq and gets the next
//! local `seq` like any other record.
//!
//! # Durability contract
//!
//! * [`Journal::append`] / [`Journal::append_batch`] return `Ok` only after the records and the
//!   new file length are on stable storage: one `write` to a segment opened with `O_APPEND`,
//!   then `fdatasync`. A newly created segment has its header synced and its directory fsynced,
//!   so its name survives. The caller acknowledges a statement (admin API 200, MO response)
//!   only after `Ok`.
//! * A crash at any point (kill -9, power loss on storage that honours flushes) leaves every
//!   acknowledged record intact; at worst the last segment ends in a partial write of records that
//!   were never acknowledged. [`Journal::open`] truncates that torn tail and reports it
//!   ([`Journal::tail_repair`], a WARN log).
//! * A damaged record that is *followed by* valid records cannot be a torn write of a crashed
//!   append: it is corruption of acknowledged data, and opening fails with
//!   [`JournalError::Corrupt`] naming the file and byte offset rather than silently dropping the
//!   records after it. The same holds for any damage in a segment other than the last. (After a
//!   power loss, storage that persists the pages of a single unsynced write out of order could in
//!   theory produce this too; the error then names the offset at which to truncate.)
//! * A failed append (write, fdatasync or rotation: `ENOSPC`, `EIO`) leaves the journal's
//!   *durable point* — the segment and length of the last successful append — and its next
//!   sequence number unchanged. A failed `fdatasync` poisons the journal: the kernel may have
//!   dropped the dirty pages and marked them clean, so a retried fsync on the same descriptor
//!   could report success for data that is gone. [`Journal::recover`] truncates the segment back
//!   to the durable point, syncs that, and reopens the segment; appending the *same* statements
//!   again then gives them the *same* sequence numbers. The writer thread in [`super::store`]
//!   does exactly that, with back-off, until it succeeds: nothing is lost, nothing is written
//!   twice under different numbers, and nothing is acknowledged before its retry is durable.
//!   Records of a failed append may reappear on replay after a crash; they were never
//!   acknowledged, and their retry (if it happened) carries the same numbers.
//! * One writer per directory. This is not enforced by a lock (`File::lock` needs Rust 1.89, the
//!   crate's MSRV is 1.85); the gateway owns its journal.
//! * Appends block for an fsync (about 0.1–10 ms): call them from a blocking thread, and batch
//!   under load with [`Journal::append_batch`] (one fsync for many statements).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::xxh3_64;

use super::statement::{EntityName, NodeId, Statement, StatementError, StatementId, StatementKind, StatementSource};

/// Default segment size limit (64 MiB).
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// First 8 bytes of every segment.
pub const MAGIC: [u8; 8] = *b"CGJRNL\0\0";
/// The segment format this build writes and reads.
pub const FORMAT_VERSION: u32 = 2;
/// Length of the segment header.
pub const HEADER_LEN: usize = 16;

/// Bytes before the origin: len, seq, at, kind, source, origin_len, entity_len, msisdn,
/// origin_seq.
const FIXED_LEN: usize = 4 + 8 + 8 + 1 + 1 + 1 + 1 + 8 + 8;
/// Trailing checksum.
const SUM_LEN: usize = 8;
/// The smallest record (one-byte origin, no entity).
const MIN_RECORD: usize = FIXED_LEN + 1 + SUM_LEN;

const SEGMENT_PREFIX: &str = "journal-";
const SEGMENT_SUFFIX: &str = ".log";
const SEGMENT_DIGITS: usize = 20;

/// Errors of [`Journal::open`] and [`read_dir`].
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The directory or a segment could not be created, listed, read or repaired.
    #[error("journal {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A segment does not start with the header of the format this build reads.
    #[error(
        "journal segment {file}: not a consentgate journal segment of format {FORMAT_VERSION} (found {found}); \
         this build cannot read format 1 (no header, written by the earliest development builds)"
    )]
    Format { file: PathBuf, found: String },
    /// A record that is not a torn tail is damaged or out of order: acknowledged data is at
    /// stake, so the journal refuses to open instead of dropping it.
    #[error("journal segment {file} corrupt at byte offset {offset}: {reason}")]
    Corrupt { file: PathBuf, offset: u64, reason: &'static str },
}

pub type Result<T, E = JournalError> = std::result::Result<T, E>;

/// Why an append failed. Nothing was acknowledged; see the durability contract.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Statement `index` of the batch is malformed; nothing was written.
    #[error("statement {index} of the batch: {error}")]
    Invalid { index: usize, error: StatementError },
    /// A previous fdatasync failed; [`Journal::recover`] must run first.
    #[error("journal poisoned by a failed fdatasync; recover (reopen) it first")]
    Poisoned,
    /// The write, the fdatasync or the creation of the next segment failed.
    #[error("journal {op} of {path}: {source}")]
    Io {
        /// `write`, `fsync` or `rotate`: a bounded label.
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl AppendError {
    /// A bounded label for metrics: `invalid`, `poisoned`, `write`, `fsync`, `rotate`.
    pub fn kind(&self) -> &'static str {
        match self {
            AppendError::Invalid { .. } => "invalid",
            AppendError::Poisoned => "poisoned",
            AppendError::Io { op, .. } => op,
        }
    }
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> JournalError + '_ {
    move |source| JournalError::Io { path: path.to_path_buf(), source }
}

/// A torn tail removed from the last segment by [`Journal::open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailRepair {
    pub file: PathBuf,
    /// Length the segment was truncated to (the end of its last valid record).
    pub offset: u64,
    /// Bytes removed (partial record and anything after it).
    pub dropped_bytes: u64,
}

/// The writer side of the journal. One per directory; see the module docs for the durability
/// contract.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    /// The segment appended to, opened with O_APPEND.
    file: File,
    path: PathBuf,
    /// The durable point: bytes in the current segment up to the end of the last successful
    /// append (the header included).
    len: u64,
    next_seq: u64,
    segment_bytes: u64,
    /// Encoding buffer, reused across appends.
    buf: Vec<u8>,
    /// Set by a failed fdatasync or a failed rollback; appends fail until [`Journal::recover`].
    poisoned: bool,
    tail_repair: Option<TailRepair>,
}

impl Journal {
    /// Opens (creating if needed) the journal in `dir` and replays it: every statement in
    /// journal order. A torn tail of the last segment is truncated away and reported through
    /// [`Journal::tail_repair`]; any other damage, and a segment of another format, is an
    /// error naming the file.
    pub fn open(dir: impl AsRef<Path>) -> Result<(Journal, Vec<Statement>)> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(io_at(&dir))?;
        let segments = list_segments(&dir)?;
        let mut out = Vec::new();
        let mut last_seq = 0;
        let mut tail_repair = None;
        let mut current = None;
        for (i, (first, path)) in segments.iter().enumerate() {
            let is_last = i + 1 == segments.len();
            let data = fs::read(path).map_err(io_at(path))?;
            let good = match replay_segment(path, *first, &data, is_last, &mut last_seq, &mut out)? {
                Replayed::Valid(good) => good,
                Replayed::TornHeader => {
                    tracing::warn!(file = %path.display(), bytes = data.len(), "journal: rewrote the torn header of an empty last segment");
                    write_header(path).map_err(io_at(path))?;
                    HEADER_LEN
                }
            };
            let data_len = data.len().max(HEADER_LEN);
            if good < data_len {
                let f = OpenOptions::new().write(true).open(path).map_err(io_at(path))?;
                f.set_len(good as u64).and_then(|()| f.sync_all()).map_err(io_at(path))?;
                let repair =
                    TailRepair { file: path.clone(), offset: good as u64, dropped_bytes: (data.len() - good) as u64 };
                tracing::warn!(
                    file = %repair.file.display(),
                    offset = repair.offset,
                    dropped_bytes = repair.dropped_bytes,
                    "journal: truncated a torn tail (unacknowledged partial write)"
                );
                tail_repair = Some(repair);
            }
            if is_last {
                current = Some((*first, path.clone(), good as u64));
            }
        }
        let mut next_seq = last_seq + 1;
        let (file, path, len) = match current {
            Some((first, path, len)) => {
                // An empty last segment may be named past the last record (created by a rotation
                // just before a crash); keep seqs ≥ its name so the name stays a lower bound.
                next_seq = next_seq.max(first);
                let file = OpenOptions::new().append(true).open(&path).map_err(io_at(&path))?;
                (file, path, len)
            }
            None => {
                let (file, path) = create_segment(&dir, next_seq).map_err(io_at(&dir))?;
                (file, path, HEADER_LEN as u64)
            }
        };
        let journal = Journal {
            dir,
            file,
            path,
            len,
            next_seq,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            buf: Vec::with_capacity(256),
            poisoned: false,
            tail_repair,
        };
        Ok((journal, out))
    }

    /// Sets the segment size limit (bytes) for later appends.
    pub fn set_segment_bytes(&mut self, bytes: u64) {
        self.segment_bytes = bytes.max((HEADER_LEN + MIN_RECORD) as u64);
    }

    /// Appends one statement durably (write + fdatasync) and returns its journal sequence
    /// number.
    pub fn append(&mut self, st: &Statement) -> Result<u64, AppendError> {
        self.append_batch(std::slice::from_ref(st))
    }

    /// Appends statements durably with one write and one fdatasync; they get consecutive
    /// journal sequence numbers starting at the returned one (for an empty batch: the number
    /// the next statement will get; nothing is written). All are checked before anything is
    /// written. On error nothing is acknowledged and the next sequence number is unchanged:
    /// appending the same batch again (after [`Journal::recover`] if it was an I/O error)
    /// gives it the same numbers.
    pub fn append_batch(&mut self, sts: &[Statement]) -> Result<u64, AppendError> {
        if self.poisoned {
            return Err(AppendError::Poisoned);
        }
        let first = self.next_seq;
        if sts.is_empty() {
            return Ok(first);
        }
        self.buf.clear();
        for (i, st) in sts.iter().enumerate() {
            st.check().map_err(|error| AppendError::Invalid { index: i, error })?;
            encode(st, first + i as u64, &mut self.buf);
        }
        let n = self.buf.len() as u64;
        if self.len > HEADER_LEN as u64 && self.len + n > self.segment_bytes {
            self.rotate(first).map_err(|source| AppendError::Io { op: "rotate", path: self.dir.clone(), source })?;
        }
        let t0 = std::time::Instant::now();
        if let Err(source) = self.file.write_all(&self.buf) {
            // Roll a partial write back so later records do not follow garbage.
            if self.file.set_len(self.len).is_err() {
                self.poisoned = true;
            }
            return Err(AppendError::Io { op: "write", path: self.path.clone(), source });
        }
        if let Err(source) = self.file.sync_data() {
            self.poisoned = true;
            return Err(AppendError::Io { op: "fsync", path: self.path.clone(), source });
        }
        metrics::histogram!(crate::telemetry::metrics::JOURNAL_FSYNC_DURATION).record(t0.elapsed().as_secs_f64());
        self.len += n;
        self.next_seq = first + sts.len() as u64;
        Ok(first)
    }

    /// Returns the journal to its durable point after a failed append: truncates the current
    /// segment to the end of the last successful append, syncs it, and reopens it (a new
    /// descriptor: the old one may carry a reported-and-forgotten writeback error). Clears the
    /// poisoning. Safe to call at any time and repeatedly; on error, call it again later.
    pub fn recover(&mut self) -> io::Result<()> {
        let f = OpenOptions::new().write(true).open(&self.path)?;
        f.set_len(self.len)?;
        f.sync_all()?;
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        self.poisoned = false;
        Ok(())
    }

    /// Whether a failed fdatasync poisoned the journal ([`Journal::recover`] clears it).
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Starts segment `journal-<first:020>.log`. The current one is already synced (every
    /// append syncs before returning).
    fn rotate(&mut self, first: u64) -> io::Result<()> {
        let (file, path) = create_segment(&self.dir, first)?;
        self.file = file;
        self.path = path;
        self.len = HEADER_LEN as u64;
        Ok(())
    }

    /// The journal sequence number the next appended statement gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The journal sequence number of the last statement written (0 for an empty journal).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// The segment currently appended to.
    pub fn segment_path(&self) -> &Path {
        &self.path
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The torn tail [`Journal::open`] removed, if any.
    pub fn tail_repair(&self) -> Option<&TailRepair> {
        self.tail_repair.as_ref()
    }
}

/// Reads every statement in the journal at `dir` without modifying it (for `snapshot build
/// --journal DIR`, possibly while the gateway appends). A torn tail of the last segment is
/// ignored; other damage is an error, as for [`Journal::open`].
pub fn read_dir(dir: impl AsRef<Path>) -> Result<Vec<Statement>> {
    let dir = dir.as_ref();
    let segments = list_segments(dir)?;
    let mut out = Vec::new();
    let mut last_seq = 0;
    for (i, (first, path)) in segments.iter().enumerate() {
        let data = fs::read(path).map_err(io_at(path))?;
        replay_segment(path, *first, &data, i + 1 == segments.len(), &mut last_seq, &mut out)?;
    }
    Ok(out)
}

/// The statements of origin `node` with an origin seq in `(after, through]`, in order: what
/// the replication publisher has yet to send (architecture §8; a local statement's origin seq is its
/// journal seq). Segments that end at or below `after` are not read. Safe while the writer
/// appends: only records at or below `through` (durable) are returned.
pub fn read_local(dir: impl AsRef<Path>, node: &NodeId, after: u64, through: u64) -> Result<Vec<Statement>> {
    let dir = dir.as_ref();
    let segments = list_segments(dir)?;
    let mut out = Vec::new();
    let mut last_seq = 0;
    for (i, (first, path)) in segments.iter().enumerate() {
        // Segment i holds seqs [first, next first); skip it if all of them are <= after.
        if segments.get(i + 1).is_some_and(|(next, _)| *next <= after + 1) {
            continue;
        }
        if *first > through {
            break;
        }
        let data = fs::read(path).map_err(io_at(path))?;
        let mut sts = Vec::new();
        // A skipped segment's last seq is unknown: start the order check from this name.
        last_seq = last_seq.max(first.saturating_sub(1));
        replay_segment(path, *first, &data, i + 1 == segments.len(), &mut last_seq, &mut sts)?;
        out.extend(sts.into_iter().filter(|st| &st.id.origin == node && st.id.seq > after && st.id.seq <= through));
    }
    Ok(out)
}

fn segment_name(first: u64) -> String {
    format!("{SEGMENT_PREFIX}{first:0SEGMENT_DIGITS$}{SEGMENT_SUFFIX}")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(SEGMENT_PREFIX)?.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != SEGMENT_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Segments in `dir`, sorted by first seq.
fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut v = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_at(dir))? {
        let entry = entry.map_err(io_at(dir))?;
        if let Some(first) = entry.file_name().to_str().and_then(parse_segment_name) {
            v.push((first, entry.path()));
        }
    }
    v.sort_unstable();
    Ok(v)
}

fn header() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h
}

/// (Re)writes `path` as an empty segment: the header alone, synced.
fn write_header(path: &Path) -> io::Result<File> {
    let mut file = OpenOptions::new().append(true).create(true).open(path)?;
    // A leftover of an earlier failed rotation to the same name holds no acknowledged record.
    file.set_len(0)?;
    file.write_all(&header())?;
    file.sync_all()?;
    Ok(file)
}

/// Creates a new empty segment (its header synced) and makes its directory entry durable.
fn create_segment(dir: &Path, first: u64) -> io::Result<(File, PathBuf)> {
    let path = dir.join(segment_name(first));
    let file = write_header(&path)?;
    File::open(dir)?.sync_all()?;
    Ok((file, path))
}

/// What [`replay_segment`] found.
enum Replayed {
    /// The length of the valid prefix (header included).
    Valid(usize),
    /// The last segment is shorter than a header and its bytes are a prefix of one.
    TornHeader,
}

/// Checks the segment header: `Ok(true)` if present and right, `Ok(false)` for a torn header
/// of the last segment.
fn check_header(path: &Path, data: &[u8], is_last: bool) -> Result<bool> {
    let want = header();
    if data.len() < HEADER_LEN && is_last && want.starts_with(data) {
        return Ok(false);
    }
    let found = if data.len() >= HEADER_LEN && data[..8] == MAGIC {
        let v = u32::from_le_bytes(data[8..12].try_into().expect("4 bytes"));
        if v == FORMAT_VERSION && data[12..16] == [0; 4] {
            return Ok(true);
        }
        format!("format version {v}")
    } else {
        let shown: Vec<String> = data.iter().take(8).map(|b| format!("{b:02x}")).collect();
        format!("no header; first bytes {}", if shown.is_empty() { "none".into() } else { shown.join(" ") })
    };
    Err(JournalError::Format { file: path.to_path_buf(), found })
}

/// The statements of one segment's bytes, as start-up replay reads them (`is_last`: the
/// segment being written, whose torn tail is tolerated). For tools and the fuzz targets.
pub fn replay_bytes(data: &[u8], is_last: bool) -> Result<Vec<Statement>> {
    let (mut last, mut out) = (0, Vec::new());
    replay_segment(Path::new("<bytes>"), 0, data, is_last, &mut last, &mut out)?;
    Ok(out)
}

/// Replays one segment into `out`. Damage is an error unless it is a torn tail of the last
/// segment (no valid record after it).
fn replay_segment(
    path: &Path,
    name_seq: u64,
    data: &[u8],
    is_last: bool,
    last_seq: &mut u64,
    out: &mut Vec<Statement>,
) -> Result<Replayed> {
    if !check_header(path, data, is_last)? {
        return Ok(Replayed::TornHeader);
    }
    let corrupt =
        |offset: usize, reason| JournalError::Corrupt { file: path.to_path_buf(), offset: offset as u64, reason };
    let mut at = HEADER_LEN;
    while at < data.len() {
        match decode(&data[at..]) {
            Ok((seq, st, n)) => {
                if seq <= *last_seq {
                    return Err(corrupt(at, "sequence number not increasing"));
                }
                if seq < name_seq {
                    return Err(corrupt(at, "sequence number below the segment's name"));
                }
                *last_seq = seq;
                out.push(st);
                at += n;
            }
            Err(reason) => {
                if !is_last {
                    return Err(corrupt(at, reason));
                }
                if (at + 1..data.len()).any(|o| decode(&data[o..]).is_ok()) {
                    return Err(corrupt(at, reason));
                }
                return Ok(Replayed::Valid(at));
            }
        }
    }
    Ok(Replayed::Valid(at))
}

/// Appends the record for `st` with journal sequence number `seq` to `buf`. The types
/// guarantee the field limits (origin ≤ 64 bytes, entity ≤ 255 bytes).
fn encode(st: &Statement, seq: u64, buf: &mut Vec<u8>) {
    let origin = st.id.origin.as_str().as_bytes();
    let entity = st.entity.as_deref().unwrap_or("").as_bytes();
    let start = buf.len();
    buf.extend_from_slice(&((FIXED_LEN + SUM_LEN + origin.len() + entity.len()) as u32).to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&st.at.to_le_bytes());
    buf.push(st.kind as u8);
    buf.push(st.source as u8);
    buf.push(origin.len() as u8);
    buf.push(entity.len() as u8);
    buf.extend_from_slice(&st.msisdn.to_le_bytes());
    buf.extend_from_slice(&st.id.seq.to_le_bytes());
    buf.extend_from_slice(origin);
    buf.extend_from_slice(entity);
    let sum = xxh3_64(&buf[start..]);
    buf.extend_from_slice(&sum.to_le_bytes());
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Decodes the record at the start of `b`: its journal seq, the statement and the record
/// length, or why the bytes are not a valid record. Cheap checks come before the checksum so
/// that scanning for a later valid record stays fast.
fn decode(b: &[u8]) -> std::result::Result<(u64, Statement, usize), &'static str> {
    if b.len() < MIN_RECORD {
        return Err("truncated record");
    }
    let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let (origin_len, entity_len) = (b[22] as usize, b[23] as usize);
    if origin_len == 0 || len != FIXED_LEN + SUM_LEN + origin_len + entity_len {
        return Err("bad record length");
    }
    if b.len() < len {
        return Err("truncated record");
    }
    let body = len - SUM_LEN;
    if xxh3_64(&b[..body]) != le_u64(b, body) {
        return Err("checksum mismatch");
    }
    let kind = StatementKind::from_u8(b[20]).ok_or("unknown statement kind")?;
    let source = StatementSource::from_u8(b[21]).ok_or("unknown statement source")?;
    let origin = NodeId::parse_bytes(&b[FIXED_LEN..FIXED_LEN + origin_len]).map_err(|_| "invalid origin node id")?;
    let entity = match entity_len {
        0 => None,
        // Records written under the looser entity rule of earlier versions (e.g. `品牌 A`) are
        // replayed as they are: a journalled statement is never dropped because the rule got
        // stricter (statement.rs, `EntityName::parse_stored`).
        _ => Some(EntityName::parse_stored(&b[FIXED_LEN + origin_len..body]).map_err(|_| "invalid entity id")?),
    };
    let st = Statement {
        kind,
        source,
        msisdn: le_u64(b, 24),
        entity,
        at: le_u64(b, 12) as i64,
        id: StatementId { origin, seq: le_u64(b, 32) },
    };
    st.check().map_err(|e| match e {
        StatementError::DncWithEntity => "dnc record with an entity",
        StatementError::MissingEntity => "grant/revoke record without an entity",
    })?;
    Ok((le_u64(b, 4), st, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Statement `i`, made on `node-a` as its journal seq `i + 1`.
    fn st(i: u64) -> Statement {
        let kind = match i % 3 {
            0 => StatementKind::Grant,
            1 => StatementKind::Revoke,
            _ => StatementKind::Dnc,
        };
        Statement {
            at: 1_700_000_000_000 + i as i64,
            kind,
            source: if i % 2 == 0 { StatementSource::Api } else { StatementSource::Mo },
            msisdn: 8613800138000 + i,
            entity: kind.has_entity().then(|| EntityName::parse(&format!("brand-{}", i % 5)).unwrap()),
            id: StatementId { origin: NodeId::parse("node-a").unwrap(), seq: i + 1 },
        }
    }

    /// Bytes of `st(i)`'s record: 48 + "node-a" + "brand-N" (none for a dnc).
    fn rec_len(i: u64) -> usize {
        48 + 6 + if i % 3 == 2 { 0 } else { 7 }
    }

    fn segments(dir: &Path) -> Vec<PathBuf> {
        list_segments(dir).unwrap().into_iter().map(|(_, p)| p).collect()
    }

    #[test]
    fn record_layout_is_as_documented() {
        let mut buf = Vec::new();
        let s = Statement {
            at: 1_700_000_000_123,
            kind: StatementKind::Revoke,
            source: StatementSource::Replica,
            msisdn: 8613800138000,
            entity: Some(EntityName::parse("ab").unwrap()),
            id: StatementId { origin: NodeId::parse("n2").unwrap(), seq: 5 },
        };
        encode(&s, 7, &mut buf);
        assert_eq!(buf.len(), 52);
        assert_eq!(&buf[0..4], &52u32.to_le_bytes());
        assert_eq!(&buf[4..12], &7u64.to_le_bytes());
        assert_eq!(&buf[12..20], &1_700_000_000_123i64.to_le_bytes());
        assert_eq!(buf[20..24], [2, 4, 2, 2]);
        assert_eq!(&buf[24..32], &8613800138000u64.to_le_bytes());
        assert_eq!(&buf[32..40], &5u64.to_le_bytes());
        assert_eq!(&buf[40..44], b"n2ab");
        assert_eq!(&buf[44..52], &xxh3_64(&buf[..44]).to_le_bytes());
        assert_eq!(decode(&buf), Ok((7, s, 52)));
        assert_eq!(header()[..12], *b"CGJRNL\0\0\x02\0\0\0");
    }

    /// A record written under the looser entity rule of earlier versions (`品牌 A`, an entity
    /// still in its CSV quotes) replays as it was written, and a build folds it in: a
    /// journalled revocation is never lost because the rule got stricter.
    #[test]
    fn records_of_the_earlier_entity_rule_replay() {
        for old in ["品牌 A", "\"acme-retail\""] {
            assert!(EntityName::parse(old).is_err(), "{old}");
            let mut s = st(1);
            s.entity = Some(EntityName::parse_stored(old.as_bytes()).unwrap());
            let mut buf = Vec::new();
            encode(&s, 2, &mut buf);
            let (seq, back, len) = decode(&buf).unwrap();
            assert_eq!((seq, &back, len), (2, &s, buf.len()));
            let mut b = crate::consent::snapshot::SnapshotBuilder::new();
            b.add(&back).unwrap();
            let snap = b.into_snapshot().unwrap();
            let e = snap.entity_id(old).expect("the entity as written");
            assert_eq!(snap.pair(s.msisdn, e), Some(crate::consent::PairState::Revoked));
        }
    }

    #[test]
    fn append_replay_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, replayed) = Journal::open(dir.path()).unwrap();
        assert!(replayed.is_empty());
        assert_eq!(j.next_seq(), 1);
        assert_eq!(j.append(&st(0)).unwrap(), 1);
        assert_eq!(j.append(&st(1)).unwrap(), 2);
        let batch: Vec<_> = (2..10).map(st).collect();
        assert_eq!(j.append_batch(&batch).unwrap(), 3);
        assert_eq!(j.append_batch(&[]).unwrap(), 11);
        assert_eq!(j.last_seq(), 10);
        drop(j);

        let expect: Vec<_> = (0..10).map(st).collect();
        let (j, replayed) = Journal::open(dir.path()).unwrap();
        assert_eq!(replayed, expect);
        assert_eq!(j.next_seq(), 11);
        assert!(j.tail_repair().is_none());
        assert_eq!(read_dir(dir.path()).unwrap(), expect);
        assert_eq!(segments(dir.path()), [dir.path().join("journal-00000000000000000001.log")]);
    }

    #[test]
    fn invalid_statements_are_refused_without_writing() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path()).unwrap();
        let mut dnc_with_entity = st(2);
        dnc_with_entity.entity = Some(EntityName::parse("x").unwrap());
        let mut grant_without = st(0);
        grant_without.entity = None;
        for (bad, want) in
            [(dnc_with_entity, StatementError::DncWithEntity), (grant_without, StatementError::MissingEntity)]
        {
            match j.append_batch(&[st(0), bad]) {
                Err(AppendError::Invalid { index: 1, error }) => assert_eq!(error, want),
                other => panic!("expected Invalid, got {other:?}"),
            }
        }
        assert_eq!(j.append(&st(0)).unwrap(), 1);
        assert_eq!(fs::metadata(j.segment_path()).unwrap().len(), (HEADER_LEN + rec_len(0)) as u64);
    }

    #[test]
    fn torn_tail_is_truncated_and_appends_continue() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path()).unwrap();
        for i in 0..5 {
            j.append(&st(i)).unwrap();
        }
        let path = j.segment_path().to_path_buf();
        drop(j);
        // Cut the last record mid-way and add garbage, as a crash during a write could leave.
        let full = fs::read(&path).unwrap();
        let last_len = rec_len(4);
        let keep = full.len() - last_len + 13;
        let mut torn = full[..keep].to_vec();
        torn.extend_from_slice(&[0xA5; 100]);
        fs::write(&path, &torn).unwrap();

        // read_dir tolerates the tail without touching it.
        let good: Vec<_> = (0..4).map(st).collect();
        assert_eq!(read_dir(dir.path()).unwrap(), good);
        assert_eq!(fs::metadata(&path).unwrap().len(), torn.len() as u64);

        let (mut j, replayed) = Journal::open(dir.path()).unwrap();
        assert_eq!(replayed, good);
        let repair = j.tail_repair().unwrap().clone();
        assert_eq!(repair.offset, (full.len() - last_len) as u64);
        assert_eq!(repair.dropped_bytes, (13 + 100) as u64);
        assert_eq!(fs::metadata(&path).unwrap().len(), repair.offset);
        // The lost record was never acknowledged; its seq is reused.
        assert_eq!(j.append(&st(5)).unwrap(), 5);
        drop(j);
        let (_, replayed) = Journal::open(dir.path()).unwrap();
        assert_eq!(replayed.len(), 5);
        assert_eq!(replayed[4], st(5));
    }

    #[test]
    fn zero_filled_tail_is_torn() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path()).unwrap();
        j.append(&st(0)).unwrap();
        let path = j.segment_path().to_path_buf();
        drop(j);
        let mut data = fs::read(&path).unwrap();
        data.extend_from_slice(&[0; 4096]);
        fs::write(&path, &data).unwrap();
        let (j, replayed) = Journal::open(dir.path()).unwrap();
        assert_eq!(replayed.len(), 1);
        assert_eq!(j.tail_repair().unwrap().dropped_bytes, 4096);
    }

    #[test]
    fn damage_before_valid_records_in_last_segment_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path()).unwrap();
        for i in 0..3 {
            j.append(&st(i)).unwrap();
        }
        let path = j.segment_path().to_path_buf();
        drop(j);
        let mut data = fs::read(&path).unwrap();
        let second = HEADER_LEN + rec_len(0);
        data[second + 25] ^= 0x10; // a bit of the second record's msisdn
        fs::write(&path, &data).unwrap();
        match Journal::open(dir.path()) {
            Err(JournalError::Corrupt { file, offset, reason }) => {
                assert_eq!((file, offset, reason), (path.clone(), second as u64, "checksum mismatch"));
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        assert!(read_dir(dir.path()).is_err());
        // Nothing was truncated.
        assert_eq!(fs::read(&path).unwrap(), data);
    }

    #[test]
    fn rotation_and_bit_flip_in_an_old_segment() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path()).unwrap();
        j.set_segment_bytes(200); // ~3 records per segment
        for i in 0..10 {
            j.append(&st(i)).unwrap();
        }
        j.append_batch(&(10..20).map(st).collect::<Vec<_>>()).unwrap();
        let segs = segments(dir.path());
        assert!(segs.len() >= 4, "{segs:?}");
        // Each segment is named after its first record and stays within the limit unless it
        // holds a single write.
        let mut seen = 0;
        for p in &segs {
            let data = fs::read(p).unwrap();
            let (first, _, _) = decode(&data[HEADER_LEN..]).unwrap();
            assert_eq!(p.file_name().unwrap().to_str().unwrap(), segment_name(first));
            let mut n = 0;
            let mut at = HEADER_LEN;
            while at < data.len() {
                at += decode(&data[at..]).unwrap().2;
                n += 1;
            }
            seen += n;
            assert!(data.len() <= 200 || p == segs.last().unwrap());
        }
        assert_eq!(seen, 20);
        drop(j);
        let expect: Vec<_> = (0..20).map(st).collect();
        let (mut j, replayed) = Journal::open(dir.path()).unwrap();
        assert_eq!(replayed, expect);
        assert_eq!(j.append(&st(20)).unwrap(), 21);
        drop(j);

        // Flip one bit in the middle of the first (old) segment.
        let mut data = fs::read(&segs[0]).unwrap();
        let mid = data.len() / 2;
        data[mid] ^= 0x01;
        fs::write(&segs[0], &data).unwrap();
        let err = Journal::open(dir.path()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(&err, JournalError::Corrupt { file, .. } if *file == segs[0]), "{msg}");
        assert!(msg.contains("journal-00000000000000000001.log") && msg.contains("offset"), "{msg}");
        assert!(read_dir(dir.path()).is_err());
    }

    #[test]
    fn empty_rotated_segment_and_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path()).unwrap();
        j.append(&st(0)).unwrap();
        drop(j);
        // A crash right after a rotation created the next segment, and an unrelated file.
        fs::write(dir.path().join(segment_name(2)), b"").unwrap();
        fs::write(dir.path().join("README"), b"not a segment").unwrap();
        let (mut j, replayed) = Journal::open(dir.path()).unwrap();
        assert_eq!(replayed.len(), 1);
        assert_eq!(j.segment_path(), dir.path().join(segment_name(2)));
        assert_eq!(j.append(&st(1)).unwrap(), 2);
        drop(j);
        assert_eq!(read_dir(dir.path()).unwrap().len(), 2);
    }

    #[test]
    fn read_dir_of_missing_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(read_dir(dir.path().join("nope")), Err(JournalError::Io { .. })));
    }

    #[test]
    fn segments_of_other_formats_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path()).unwrap();
        j.append(&st(0)).unwrap();
        let path = j.segment_path().to_path_buf();
        drop(j);
        let good = fs::read(&path).unwrap();
        // A format-1 segment: records from byte 0, no header.
        let mut v1 = good[HEADER_LEN..].to_vec();
        v1.extend_from_slice(&[0; 8]);
        let mut v3 = good.clone();
        v3[8] = 3;
        for (bytes, found) in [(v1, "no header; first bytes 3d 00 00 00"), (v3, "format version 3")] {
            fs::write(&path, &bytes).unwrap();
            for err in [Journal::open(dir.path()).unwrap_err(), read_dir(dir.path()).unwrap_err()] {
                let msg = err.to_string();
                assert!(matches!(&err, JournalError::Format { file, .. } if *file == path), "{msg}");
                assert!(msg.contains("journal-00000000000000000001.log"), "{msg}");
                assert!(msg.contains(found), "{msg}");
                assert!(msg.contains("not a consentgate journal segment of format 2"), "{msg}");
                assert!(msg.contains("cannot read format 1"), "{msg}");
            }
            // Refused, not repaired.
            assert_eq!(fs::read(&path).unwrap(), bytes);
        }
    }

    #[test]
    fn torn_header_of_the_last_segment_is_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path()).unwrap();
        j.append(&st(0)).unwrap();
        drop(j);
        fs::write(dir.path().join(segment_name(2)), &header()[..5]).unwrap();
        let (mut j, replayed) = Journal::open(dir.path()).unwrap();
        assert_eq!(replayed, [st(0)]);
        assert_eq!(fs::read(dir.path().join(segment_name(2))).unwrap(), header());
        assert_eq!(j.append(&st(1)).unwrap(), 2);
        drop(j);
        assert_eq!(read_dir(dir.path()).unwrap(), [st(0), st(1)]);
        // The same bytes in a segment that is not the last are damage.
        fs::write(dir.path().join(segment_name(1_000)), b"").unwrap();
        fs::write(dir.path().join(segment_name(2)), &header()[..5]).unwrap();
        assert!(matches!(read_dir(dir.path()), Err(JournalError::Format { .. })));
    }

    /// After a failed append, recover + the same batch gives the same numbers and no
    /// duplicate; an append after a poisoning fails until recovered.
    #[test]
    fn recover_returns_to_the_durable_point() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path()).unwrap();
        assert_eq!(j.append(&st(0)).unwrap(), 1);
        // Simulate a write that reached the file but whose fsync failed.
        let durable = fs::metadata(j.segment_path()).unwrap().len();
        let mut junk = Vec::new();
        encode(&st(1), 2, &mut junk);
        j.file.write_all(&junk).unwrap();
        j.poisoned = true;
        assert!(matches!(j.append(&st(1)), Err(AppendError::Poisoned)));
        j.recover().unwrap();
        assert!(!j.is_poisoned());
        assert_eq!(fs::metadata(j.segment_path()).unwrap().len(), durable);
        assert_eq!(j.append_batch(&[st(1), st(2)]).unwrap(), 2);
        drop(j);
        assert_eq!(read_dir(dir.path()).unwrap(), [st(0), st(1), st(2)]);
    }
}
