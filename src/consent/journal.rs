//! The append-only journal of live consent statements (DESIGN §4): MO opt-outs captured by
//! [`crate::optout`] and grants / revocations / do-not-call entries from the admin API. It is
//! replayed into the [`super::delta::Delta`] on start and folded into the next snapshot by
//! `consentgate snapshot build --journal DIR` ([`read_dir`]).
//!
//! # Files
//!
//! A directory of segments `journal-<first_seq:020>.log`, where `first_seq` is the sequence
//! number of the first record written to that segment. Segments are replayed in name order; only
//! the last one is ever appended to. A new segment is started when the next write would take the
//! current one past the size limit ([`DEFAULT_SEGMENT_BYTES`]); a segment holds at least one
//! write, so one large batch may exceed the limit. Files with other names are ignored.
//!
//! # Record (little-endian)
//!
//! | offset | field | size | notes |
//! |---:|---|---:|---|
//! | 0 | `len` | u32 | whole record in bytes, this field and the checksum included: 40 + entity_len |
//! | 4 | `seq` | u64 | strictly increasing across the journal, from 1 |
//! | 12 | `at` | i64 | when the statement was made, unix seconds |
//! | 20 | `kind` | u8 | 1 grant, 2 revoke, 3 dnc |
//! | 21 | `source` | u8 | 1 mo, 2 api |
//! | 22 | `msisdn` | u64 | E.164 digits as a number |
//! | 30 | `entity_len` | u16 | 0 for dnc (global); ≥ 1 for grant / revoke |
//! | 32 | `entity` | entity_len | UTF-8 entity id |
//! | 32 + entity_len | `checksum` | u64 | xxh3-64 of bytes `0 .. 32 + entity_len` |
//!
//! # Durability contract
//!
//! * [`Journal::append`] / [`Journal::append_batch`] return only after the records and the new
//!   file length are on stable storage: one `write` to a segment opened with `O_APPEND`, then
//!   `fdatasync`. A newly created segment also has its directory fsynced, so its name survives.
//!   The caller acknowledges a statement (admin API 200, MO metric) only after `Ok`.
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
//! * A failed write is rolled back by truncating the segment to its last good length, and the
//!   journal stays usable. A failed `fdatasync` poisons the journal: the kernel may have dropped
//!   the dirty pages, so a retried fsync could report success for data that is gone. Every later
//!   append fails until the journal is reopened. The outcome of a failed append is unknown: its
//!   records may reappear on replay; they were not acknowledged.
//! * One writer per directory. This is not enforced by a lock (`File::lock` needs Rust 1.89, the
//!   crate's MSRV is 1.85); the gateway owns its journal.
//! * Appends block for an fsync (about 0.1–10 ms): call them from a blocking thread, and batch
//!   under load with [`Journal::append_batch`] (one fsync for many statements).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::xxh3_64;

/// Default segment size limit (64 MiB).
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// Bytes before the entity: len, seq, at, kind, source, msisdn, entity_len.
const FIXED_LEN: usize = 4 + 8 + 8 + 1 + 1 + 8 + 2;
/// Trailing checksum.
const SUM_LEN: usize = 8;
/// The smallest record (no entity).
const MIN_RECORD: usize = FIXED_LEN + SUM_LEN;
/// Longest entity id a record can carry.
pub const MAX_ENTITY_BYTES: usize = u16::MAX as usize;

const SEGMENT_PREFIX: &str = "journal-";
const SEGMENT_SUFFIX: &str = ".log";
const SEGMENT_DIGITS: usize = 20;

/// What a statement says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum StatementKind {
    /// The subscriber consents to commercial messages from the entity.
    Grant = 1,
    /// The subscriber withdraws consent for the entity (e.g. an MO "退订").
    Revoke = 2,
    /// The subscriber refuses commercial messages from everyone (do-not-call); no entity.
    Dnc = 3,
}

impl StatementKind {
    pub fn from_u8(v: u8) -> Option<StatementKind> {
        match v {
            1 => Some(StatementKind::Grant),
            2 => Some(StatementKind::Revoke),
            3 => Some(StatementKind::Dnc),
            _ => None,
        }
    }
    /// Bounded label (metrics, admin API).
    pub fn as_str(self) -> &'static str {
        match self {
            StatementKind::Grant => "grant",
            StatementKind::Revoke => "revoke",
            StatementKind::Dnc => "dnc",
        }
    }
}

/// Where a statement came from (the `source` label of `consentgate_optouts_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum StatementSource {
    /// A mobile-originated keyword captured from a deliver_sm.
    Mo = 1,
    /// The admin API.
    Api = 2,
}

impl StatementSource {
    pub fn from_u8(v: u8) -> Option<StatementSource> {
        match v {
            1 => Some(StatementSource::Mo),
            2 => Some(StatementSource::Api),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            StatementSource::Mo => "mo",
            StatementSource::Api => "api",
        }
    }
}

/// One live statement about a subscriber.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Statement {
    /// Journal sequence number. Assigned by [`Journal::append`] (the value passed in is
    /// ignored); set on replay.
    pub seq: u64,
    /// When the statement was made, unix seconds. Latest wins, ties broken by `seq`.
    pub at: i64,
    pub kind: StatementKind,
    pub source: StatementSource,
    /// Subscriber, E.164 digits as a number.
    pub msisdn: u64,
    /// Entity id for grant / revoke (required, 1..=65535 bytes); `None` for dnc.
    pub entity: Option<String>,
}

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
    /// A record that is not a torn tail is damaged or out of order: acknowledged data is at
    /// stake, so the journal refuses to open instead of dropping it.
    #[error("journal segment {file} corrupt at byte offset {offset}: {reason}")]
    Corrupt { file: PathBuf, offset: u64, reason: &'static str },
}

pub type Result<T, E = JournalError> = std::result::Result<T, E>;

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
    /// Bytes in the current segment up to the end of the last complete write.
    len: u64,
    next_seq: u64,
    segment_bytes: u64,
    /// Encoding buffer, reused across appends.
    buf: Vec<u8>,
    /// Set by a failed fdatasync; appends fail until reopened.
    poisoned: bool,
    tail_repair: Option<TailRepair>,
}

impl Journal {
    /// Opens (creating if needed) the journal in `dir` and replays it: every statement in seq
    /// order. A torn tail of the last segment is truncated away and reported through
    /// [`Journal::tail_repair`]; any other damage is an error naming file and offset.
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
            let good = replay_segment(path, *first, &data, is_last, &mut last_seq, &mut out)?;
            if good < data.len() {
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
                (file, path, 0)
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
        self.segment_bytes = bytes.max(MIN_RECORD as u64);
    }

    /// Appends one statement durably (write + fdatasync) and returns its sequence number.
    /// `st.seq` is ignored. Fails with `InvalidInput` for a grant / revoke without an entity
    /// (or one over 65535 bytes) or a dnc with one.
    pub fn append(&mut self, st: &Statement) -> io::Result<u64> {
        self.append_batch(std::slice::from_ref(st))
    }

    /// Appends statements durably with one write and one fdatasync; they get consecutive
    /// sequence numbers starting at the returned one (for an empty batch: the number the next
    /// statement will get; nothing is written). All or none are validated before writing.
    pub fn append_batch(&mut self, sts: &[Statement]) -> io::Result<u64> {
        if self.poisoned {
            return Err(io::Error::other("journal poisoned by a failed fdatasync; reopen it"));
        }
        let first = self.next_seq;
        if sts.is_empty() {
            return Ok(first);
        }
        self.buf.clear();
        for (i, st) in sts.iter().enumerate() {
            validate(st)?;
            encode(st, first + i as u64, &mut self.buf);
        }
        let n = self.buf.len() as u64;
        if self.len > 0 && self.len + n > self.segment_bytes {
            self.rotate(first)?;
        }
        let t0 = std::time::Instant::now();
        if let Err(e) = self.file.write_all(&self.buf) {
            // Roll a partial write back so later records do not follow garbage.
            if self.file.set_len(self.len).is_err() {
                self.poisoned = true;
            }
            return Err(e);
        }
        if let Err(e) = self.file.sync_data() {
            self.poisoned = true;
            metrics::counter!(crate::telemetry::metrics::ERRORS_TOTAL, "stage" => "journal", "kind" => "fsync_failed")
                .increment(1);
            return Err(e);
        }
        metrics::histogram!(crate::telemetry::metrics::JOURNAL_FSYNC_DURATION).record(t0.elapsed().as_secs_f64());
        self.len += n;
        self.next_seq = first + sts.len() as u64;
        Ok(first)
    }

    /// Starts segment `journal-<first:020>.log`. The current one is already synced (every
    /// append syncs before returning).
    fn rotate(&mut self, first: u64) -> io::Result<()> {
        let (file, path) = create_segment(&self.dir, first)?;
        self.file = file;
        self.path = path;
        self.len = 0;
        Ok(())
    }

    /// The sequence number the next appended statement gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The sequence number of the last statement written (0 for an empty journal).
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

/// Creates a new empty segment and makes its directory entry durable.
fn create_segment(dir: &Path, first: u64) -> io::Result<(File, PathBuf)> {
    let path = dir.join(segment_name(first));
    let file = OpenOptions::new().append(true).create_new(true).open(&path)?;
    File::open(dir)?.sync_all()?;
    Ok((file, path))
}

/// Replays one segment into `out` and returns the length of its valid prefix. Damage is an
/// error unless it is a torn tail of the last segment (no valid record after it).
fn replay_segment(
    path: &Path,
    name_seq: u64,
    data: &[u8],
    is_last: bool,
    last_seq: &mut u64,
    out: &mut Vec<Statement>,
) -> Result<usize> {
    let corrupt =
        |offset: usize, reason| JournalError::Corrupt { file: path.to_path_buf(), offset: offset as u64, reason };
    let mut at = 0;
    while at < data.len() {
        match decode(&data[at..]) {
            Ok((st, n)) => {
                if st.seq <= *last_seq {
                    return Err(corrupt(at, "sequence number not increasing"));
                }
                if st.seq < name_seq {
                    return Err(corrupt(at, "sequence number below the segment's name"));
                }
                *last_seq = st.seq;
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
                return Ok(at);
            }
        }
    }
    Ok(at)
}

fn validate(st: &Statement) -> io::Result<()> {
    let bad = |m: &str| Err(io::Error::new(io::ErrorKind::InvalidInput, m.to_string()));
    match (st.kind, st.entity.as_deref()) {
        (StatementKind::Dnc, None) => Ok(()),
        (StatementKind::Dnc, Some(_)) => bad("a dnc statement is global and takes no entity"),
        (_, None | Some("")) => bad("a grant or revoke statement needs an entity"),
        (_, Some(e)) if e.len() > MAX_ENTITY_BYTES => bad("entity longer than 65535 bytes"),
        _ => Ok(()),
    }
}

/// Appends the record for `st` with sequence number `seq` to `buf`.
fn encode(st: &Statement, seq: u64, buf: &mut Vec<u8>) {
    let entity = st.entity.as_deref().unwrap_or("").as_bytes();
    let start = buf.len();
    buf.extend_from_slice(&((MIN_RECORD + entity.len()) as u32).to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&st.at.to_le_bytes());
    buf.push(st.kind as u8);
    buf.push(st.source as u8);
    buf.extend_from_slice(&st.msisdn.to_le_bytes());
    buf.extend_from_slice(&(entity.len() as u16).to_le_bytes());
    buf.extend_from_slice(entity);
    let sum = xxh3_64(&buf[start..]);
    buf.extend_from_slice(&sum.to_le_bytes());
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Decodes the record at the start of `b`: the statement and the record length, or why the
/// bytes are not a valid record. Cheap checks come before the checksum so that scanning for a
/// later valid record stays fast.
fn decode(b: &[u8]) -> std::result::Result<(Statement, usize), &'static str> {
    if b.len() < MIN_RECORD {
        return Err("truncated record");
    }
    let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let entity_len = u16::from_le_bytes([b[30], b[31]]) as usize;
    if len != MIN_RECORD + entity_len {
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
    let entity = match entity_len {
        0 => None,
        _ => Some(std::str::from_utf8(&b[FIXED_LEN..body]).map_err(|_| "entity not UTF-8")?.to_owned()),
    };
    match (kind, &entity) {
        (StatementKind::Dnc, Some(_)) => return Err("dnc record with an entity"),
        (StatementKind::Grant | StatementKind::Revoke, None) => return Err("grant/revoke record without an entity"),
        _ => {}
    }
    let st = Statement { seq: le_u64(b, 4), at: le_u64(b, 12) as i64, kind, source, msisdn: le_u64(b, 22), entity };
    Ok((st, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(i: u64) -> Statement {
        let kind = match i % 3 {
            0 => StatementKind::Grant,
            1 => StatementKind::Revoke,
            _ => StatementKind::Dnc,
        };
        Statement {
            seq: 0,
            at: 1_700_000_000 + i as i64,
            kind,
            source: if i % 2 == 0 { StatementSource::Api } else { StatementSource::Mo },
            msisdn: 8613800138000 + i,
            entity: (kind != StatementKind::Dnc).then(|| format!("brand-{}", i % 5)),
        }
    }

    fn with_seq(mut s: Statement, seq: u64) -> Statement {
        s.seq = seq;
        s
    }

    fn segments(dir: &Path) -> Vec<PathBuf> {
        list_segments(dir).unwrap().into_iter().map(|(_, p)| p).collect()
    }

    #[test]
    fn record_layout_is_as_documented() {
        let mut buf = Vec::new();
        let s = Statement {
            seq: 0,
            at: 1,
            kind: StatementKind::Revoke,
            source: StatementSource::Mo,
            msisdn: 8613800138000,
            entity: Some("ab".into()),
        };
        encode(&s, 7, &mut buf);
        assert_eq!(buf.len(), 42);
        assert_eq!(&buf[0..4], &42u32.to_le_bytes());
        assert_eq!(&buf[4..12], &7u64.to_le_bytes());
        assert_eq!(&buf[12..20], &1i64.to_le_bytes());
        assert_eq!(buf[20..22], [2, 1]);
        assert_eq!(&buf[22..30], &8613800138000u64.to_le_bytes());
        assert_eq!(buf[30..34], [2, 0, b'a', b'b']);
        assert_eq!(&buf[34..42], &xxh3_64(&buf[..34]).to_le_bytes());
        assert_eq!(decode(&buf), Ok((with_seq(s, 7), 42)));
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

        let expect: Vec<_> = (0..10).map(|i| with_seq(st(i), i + 1)).collect();
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
        dnc_with_entity.entity = Some("x".into());
        let mut grant_without = st(0);
        grant_without.entity = None;
        for bad in [dnc_with_entity, grant_without] {
            let e = j.append_batch(&[st(0), bad]).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        }
        assert_eq!(j.append(&st(0)).unwrap(), 1);
        assert_eq!(fs::metadata(j.segment_path()).unwrap().len(), 47);
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
        let last_len = 40 + "brand-4".len();
        let keep = full.len() - last_len + 13;
        let mut torn = full[..keep].to_vec();
        torn.extend_from_slice(&[0xA5; 100]);
        fs::write(&path, &torn).unwrap();

        // read_dir tolerates the tail without touching it.
        let good: Vec<_> = (0..4).map(|i| with_seq(st(i), i + 1)).collect();
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
        assert_eq!(replayed[4], with_seq(st(5), 5));
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
        let second = 40 + "brand-0".len();
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
        j.set_segment_bytes(200); // ~4 records per segment
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
            let (first, _) = decode(&data).unwrap();
            assert_eq!(p.file_name().unwrap().to_str().unwrap(), segment_name(first.seq));
            let mut n = 0;
            let mut at = 0;
            while at < data.len() {
                at += decode(&data[at..]).unwrap().1;
                n += 1;
            }
            seen += n;
            assert!(data.len() <= 200 || p == segs.last().unwrap());
        }
        assert_eq!(seen, 20);
        drop(j);
        let expect: Vec<_> = (0..20).map(|i| with_seq(st(i), i + 1)).collect();
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
}
