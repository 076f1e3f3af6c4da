//! Streaming readers for the operator's source files (architecture §4).
//!
//! | file | header row | one row |
//! |---|---|---|
//! | `dnc.csv` | `msisdn,registered_at` | `8613812345678,2026-05-01T08:00:00+08:00` |
//! | `consent.csv` | `msisdn,entity,action,at` or `msisdn,entity,action,at,proof` | `13812345678,acme-retail,grant,2026-05-01,urn:acme:optin:8812` |
//!
//! * CSV as RFC 4180 has it, read by the `csv` crate: a field may be quoted (`"acme-retail"`
//!   is `acme-retail`), a quote inside a quoted field is doubled (`"say ""yes"""`), and a quoted
//!   field may hold commas. As spreadsheets and databases export it: UTF-8, an optional BOM,
//!   `\n` or `\r\n` line ends. Blank lines are skipped. The header row is required (quoted or
//!   not) and its names are checked (case-insensitive). Spaces and tabs around a field (inside
//!   its quotes too) are ignored.
//! * What RFC 4180 would accept but these files cannot hold is a row error, never a silently
//!   different row: a quote inside an unquoted field (`acme"s`) or a quote left open (an
//!   unclosed `"` would swallow the rows after it), a line break inside a quoted field (no
//!   column may contain one), a wrong number of fields. A record longer than
//!   [`MAX_RECORD_BYTES`] is fatal. One leniency of the `csv` crate is kept: text right after
//!   a closing quote joins the field (`"acme" ,` is `acme`, and so is `"ac"me`).
//! * `msisdn` goes through [`normalise`] with the TON-unknown rules and the configured country
//!   code. `action` is `grant` or `revoke` (case-insensitive). `entity` follows the one entity
//!   rule, [`check_entity`]: 1–255 bytes of UTF-8, letters and digits of any script (with their
//!   combining marks) and `- _ . : @ / + &`; no spaces, quotes, commas, backslashes or control
//!   characters.
//! * `proof` (optional column, architecture §4): the sender's reference to its evidence of the
//!   subscriber's consent (Order No. 74 Art. 21) — an id, URI or hash, up to [`MAX_PROOF_BYTES`]
//!   of UTF-8 without control characters (commas and quotes are fine, in a quoted field);
//!   empty = none.
//! * Timestamps: RFC 3339 (`2026-05-01T08:00:00Z`, `2026-05-01T08:00:00.250+08:00`, `T` or a
//!   space between date and time, fractions truncated) or a bare `YYYY-MM-DD` (midnight UTC).
//!   Parsed by [`crate::time::parse_timestamp_ms`] into Unix milliseconds, the unit of every
//!   statement's `at`.
//!
//! A bad row does not stop the read: it becomes a [`RowError`] (`file:line: field: message`,
//! the line where the record starts), counted per field, the first [`MAX_KEPT_ERRORS`] kept.
//! A shared [`InvalidBudget`] lets the caller cap bad rows across files (`max_invalid`);
//! exceeding it stops the read with [`SourceError::TooManyInvalid`]. Header, I/O and
//! over-long-record problems are fatal.
//!
//! Speed: `csv::ByteRecord`s reused row after row (no `String` per line) over a
//! [`CSV_BUFFER`] buffer; a `Read` wrapper hashes every byte the CSV reader consumes with
//! SHA-256 (the snapshot records the digest of each source); each good row goes to a
//! callback.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use super::msisdn::{normalise, ton};
use super::statement::{check_entity, StatementKind, MAX_ENTITY_BYTES};
/// RFC 3339 / date parsing lives in [`crate::time`]; re-exported for the callers that still
/// name it here (admin, audit).
pub use crate::time::parse_timestamp;

/// The CSV reader's buffer: bytes asked of the file per `read`, hashed and then parsed while
/// they are still in cache.
pub const CSV_BUFFER: usize = 256 << 10;
/// Longest record accepted, in bytes (quoted line breaks included): past it the file is not a
/// source of this kind, or a quote left open swallows the rest of it.
pub const MAX_RECORD_BYTES: usize = 4 << 20;
/// How many row errors are kept with their text (the rest are only counted).
pub const MAX_KEPT_ERRORS: usize = 20;
/// Longest entity id accepted, in bytes ([`MAX_ENTITY_BYTES`]).
pub const MAX_ENTITY_LEN: usize = MAX_ENTITY_BYTES;
/// Good rows between two `on_progress` calls.
const PROGRESS_ROWS: u64 = 1 << 16;

/// Header of `dnc.csv`.
pub const DNC_HEADER: [&str; 2] = ["msisdn", "registered_at"];
/// Header of `consent.csv`.
pub const CONSENT_HEADER: [&str; 4] = ["msisdn", "entity", "action", "at"];
/// Header of `consent.csv` with the optional proof column.
pub const CONSENT_HEADER_PROOF: [&str; 5] = ["msisdn", "entity", "action", "at", "proof"];
/// Longest consent proof accepted, in bytes.
pub const MAX_PROOF_BYTES: usize = 512;
/// The most columns of any file read with [`read_csv`] (the DLT `templates.csv` has 7).
const MAX_FIELDS: usize = 8;

/// One good row of `dnc.csv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DncRow {
    pub msisdn: u64,
    /// Unix milliseconds.
    pub registered_at: i64,
}

/// One good row of `consent.csv`; `entity` borrows the read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsentRow<'a> {
    pub msisdn: u64,
    pub entity: &'a str,
    /// [`StatementKind::Grant`] or [`StatementKind::Revoke`].
    pub action: StatementKind,
    /// Unix milliseconds.
    pub at: i64,
    /// The `proof` column, when the file has one and the field is not empty.
    pub proof: Option<&'a str>,
}

/// A row that was skipped. Displays as `file:line: field: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// The file's name as given to the reader (`journal` for journal records).
    pub file: String,
    /// 1-based line number where the record starts (the header is line 1).
    pub line: u64,
    /// The column at fault, or `row` for a wrong number of fields.
    pub field: &'static str,
    pub message: String,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}: {}", self.file, self.line, self.field, self.message)
    }
}

/// Skipped rows of one or more files: a count, the count per field and the first few.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowErrors {
    pub count: u64,
    pub by_field: BTreeMap<&'static str, u64>,
    /// The first [`MAX_KEPT_ERRORS`] errors, in file order.
    pub first: Vec<RowError>,
}

impl RowErrors {
    /// Records one bad row; the message is only formatted if it is kept.
    pub fn record(&mut self, file: &str, line: u64, field: &'static str, message: impl fmt::Display) {
        self.count += 1;
        *self.by_field.entry(field).or_default() += 1;
        if self.first.len() < MAX_KEPT_ERRORS {
            self.first.push(RowError { file: file.to_owned(), line, field, message: message.to_string() });
        }
    }

    /// Adds another file's errors (keeping at most [`MAX_KEPT_ERRORS`] in total).
    pub fn merge(&mut self, other: RowErrors) {
        self.count += other.count;
        for (k, v) in other.by_field {
            *self.by_field.entry(k).or_default() += v;
        }
        let room = MAX_KEPT_ERRORS.saturating_sub(self.first.len());
        self.first.extend(other.first.into_iter().take(room));
    }
}

/// How many bad rows may be skipped in total, shared by readers running in parallel.
#[derive(Debug)]
pub struct InvalidBudget {
    max: u64,
    used: AtomicU64,
}

impl InvalidBudget {
    pub fn new(max: u64) -> InvalidBudget {
        InvalidBudget { max, used: AtomicU64::new(0) }
    }

    /// No limit.
    pub fn unlimited() -> InvalidBudget {
        InvalidBudget::new(u64::MAX)
    }

    /// Takes one bad row from the budget; `false` once more than `max` have been taken.
    pub fn charge(&self) -> bool {
        self.used.fetch_add(1, Ordering::Relaxed) < self.max
    }

    /// Bad rows charged so far.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    pub fn max(&self) -> u64 {
        self.max
    }
}

/// A problem that stops reading a source file.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The file could not be opened or read.
    #[error("{file}: {source}")]
    Io {
        file: String,
        #[source]
        source: io::Error,
    },
    /// The first record is not the expected header row.
    #[error("{file}:1: header: expected `{expected}`, found `{found}`")]
    Header { file: String, expected: String, found: String },
    /// A record longer than [`MAX_RECORD_BYTES`]: not a CSV of this kind, or a quote left
    /// open. `line` is where the record starts (after any blank lines before it).
    #[error("{file}:{line}: record longer than {max} bytes (not a CSV source, or a quote left open)")]
    LineTooLong { file: String, line: u64, max: usize },
    /// The shared [`InvalidBudget`] ran out while reading this file.
    #[error("{file}: more than {max} invalid rows (max_invalid); first: {}", first_error(.errors))]
    TooManyInvalid { file: String, max: u64, errors: RowErrors },
}

fn first_error(e: &RowErrors) -> String {
    e.first.first().map_or_else(String::new, |e| e.to_string())
}

/// What one read produced besides the rows.
#[derive(Debug, Clone, Default)]
pub struct SourceSummary {
    pub file: String,
    /// Good rows handed to the callback.
    pub rows: u64,
    /// Lines seen, header and blank lines included.
    pub lines: u64,
    pub bytes: u64,
    /// SHA-256 of the whole file as read.
    pub sha256: [u8; 32],
    pub errors: RowErrors,
}

/// Reads `dnc.csv` from `input` (named `file` in messages). `on_progress(bytes, rows)` is
/// called every few thousand rows and at the end.
pub fn read_dnc<R: Read>(
    input: R,
    file: &str,
    default_cc: &str,
    budget: &InvalidBudget,
    mut on_row: impl FnMut(DncRow),
    on_progress: impl FnMut(u64, u64),
) -> Result<SourceSummary, SourceError> {
    read_csv(input, file, &[&DNC_HEADER], None, budget, on_progress, |f, _| {
        let msisdn = field_msisdn(f[0], default_cc)?;
        let registered_at = field_time(f[1], "registered_at")?;
        on_row(DncRow { msisdn, registered_at });
        Ok(())
    })
}

/// Reads `consent.csv` from `input` (named `file` in messages).
pub fn read_consent<R: Read>(
    input: R,
    file: &str,
    default_cc: &str,
    budget: &InvalidBudget,
    mut on_row: impl FnMut(ConsentRow<'_>),
    on_progress: impl FnMut(u64, u64),
) -> Result<SourceSummary, SourceError> {
    read_csv(
        input,
        file,
        &[&CONSENT_HEADER, &CONSENT_HEADER_PROOF],
        Some(TextColumn { index: 4, line_breaks: false }),
        budget,
        on_progress,
        |f, header| {
            let proof = if header == 0 { None } else { field_proof(f[4])? };
            let msisdn = field_msisdn(f[0], default_cc)?;
            let entity = field_entity(f[1])?;
            let a = f[2];
            let action = match a {
                _ if a.eq_ignore_ascii_case(b"grant") => StatementKind::Grant,
                _ if a.eq_ignore_ascii_case(b"revoke") => StatementKind::Revoke,
                _ => return Err(("action", format!("`{}` is not grant or revoke", lossy(a)))),
            };
            let at = field_time(f[3], "at")?;
            on_row(ConsentRow { msisdn, entity, action, at, proof });
            Ok(())
        },
    )
}

/// The free-text column of a file ([`read_csv`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct TextColumn {
    pub(crate) index: usize,
    /// Whether a line break inside its quotes is data (a DLT template's content) rather than
    /// an error (a consent proof).
    pub(crate) line_breaks: bool,
}

/// A field-level failure: (field, message).
pub(crate) type FieldResult<T> = Result<T, (&'static str, String)>;

#[inline]
fn field_msisdn(f: &[u8], default_cc: &str) -> FieldResult<u64> {
    normalise(f, ton::UNKNOWN, 0, default_cc).map_err(|e| ("msisdn", format!("`{}`: {e}", lossy(f))))
}

#[inline]
fn field_time(f: &[u8], name: &'static str) -> FieldResult<i64> {
    crate::time::parse_timestamp_ms(f)
        .ok_or_else(|| (name, format!("`{}` is not an RFC 3339 timestamp or YYYY-MM-DD date", lossy(f))))
}

#[inline]
fn field_entity(f: &[u8]) -> FieldResult<&str> {
    check_entity(f).map_err(|e| ("entity", format!("`{}`: {e}", lossy(f))))
}

#[inline]
fn field_proof(f: &[u8]) -> FieldResult<Option<&str>> {
    if f.is_empty() {
        return Ok(None);
    }
    if f.len() > MAX_PROOF_BYTES {
        return Err(("proof", format!("{} bytes, more than {MAX_PROOF_BYTES}", f.len())));
    }
    let p = std::str::from_utf8(f).map_err(|_| ("proof", "not UTF-8".to_owned()))?;
    if p.chars().any(char::is_control) {
        return Err(("proof", format!("`{}` contains a control character", lossy(f))));
    }
    Ok(Some(p))
}

pub(crate) fn lossy(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(64)]).into_owned();
    if b.len() > 64 {
        s + "…"
    } else {
        s
    }
}

#[inline]
pub(crate) fn trim(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t' | b'\r', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t' | b'\r'] = b {
        b = rest;
    }
    b
}

/// The file as the CSV reader consumes it: every byte hashed (SHA-256) and counted on its
/// way, and a bound on how far one record may run ([`MAX_RECORD_BYTES`]: without it, a quote
/// left open would make the rest of the file one record in memory).
struct Hashed<R> {
    inner: R,
    hasher: Sha256,
    /// Bytes read so far.
    bytes: u64,
    /// Whether a read returned 0 (end of file), and the last byte read before it.
    eof: bool,
    last: u8,
    /// Where the record being parsed starts (set by the reader loop after each record).
    record_start: u64,
    /// A read was refused because the current record ran past [`MAX_RECORD_BYTES`].
    too_long: bool,
}

impl<R: Read> Read for Hashed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // The CSV reader buffers at most CSV_BUFFER bytes ahead of the record it parses.
        if self.bytes - self.record_start > (MAX_RECORD_BYTES + CSV_BUFFER) as u64 {
            self.too_long = true;
            return Err(io::Error::other("record too long"));
        }
        let n = loop {
            match self.inner.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r?,
            }
        };
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        match n {
            0 => self.eof = true,
            _ => self.last = buf[n - 1],
        }
        Ok(n)
    }
}

/// Why a record's quoting is not RFC 4180 as these files need it: `None` when fine.
///
/// The `csv` crate is lenient: a quote inside an unquoted field is kept as data (`acme"s`),
/// and a quote left open runs on to the next closing quote or the end of the file. Neither is
/// an error for it. We see each record's raw length (`raw`, without its line end and the
/// blank lines before it) and its parsed fields: the bytes the parser dropped besides the
/// commas are quotes. A field holding a quote, comma or line break must have been quoted
/// whole (2 quotes plus one per quote inside, doubled); any other field may have been (2).
/// Quotes that do not add up to that are a stray or unclosed quote.
#[cold]
fn bad_quoting(rec: &csv::ByteRecord, raw: u64, names: &[&'static str], span: &str) -> Option<(&'static str, String)> {
    let n = rec.len() as u64;
    let Some(dropped) = raw.checked_sub(rec.as_slice().len() as u64 + n - 1) else {
        return Some(("row", format!("the record is shorter than its fields (a quote left open?){span}")));
    };
    let (mut must, mut needed, mut culprit) = (0u64, 0u64, None);
    for (i, f) in rec.iter().enumerate() {
        let quotes = f.iter().filter(|&&b| b == b'"').count() as u64;
        if quotes > 0 || f.contains(&b',') || f.contains(&b'\n') {
            must += 1;
            needed += 2 + quotes;
            if culprit.is_none() || quotes > 0 && culprit.is_some_and(|(_, q)| q == 0) {
                culprit = Some((i, quotes));
            }
        }
    }
    let spare = dropped.checked_sub(needed);
    if spare.is_some_and(|s| s % 2 == 0 && s / 2 <= n - must) {
        return None;
    }
    let field = culprit.map_or("row", |(i, _)| names.get(i).copied().unwrap_or("row"));
    Some((
        field,
        format!(
            "a stray or unclosed quote: a field with a quote, comma or line break is quoted whole, \
             a quote inside it doubled (RFC 4180: `\"say \"\"yes\"\"\"`){span}"
        ),
    ))
}

/// The shared record loop: the CSV reader, hashing, header check, blank lines, quoting,
/// field count, errors. `headers` are the header rows the file may have (at most
/// `MAX_FIELDS` columns); `on_record` gets the record's fields (trimmed; as many as that header
/// has) and the index of the header. `text_column`: the one column that may hold a quote as
/// data (consent proofs, DLT template contents), whose quoting is then always checked exactly,
/// and whether it may hold line breaks (inside its quotes). Also the reader of the DLT exports
/// ([`crate::dlt`]).
pub(crate) fn read_csv<R: Read>(
    input: R,
    file: &str,
    headers: &[&[&'static str]],
    text_column: Option<TextColumn>,
    budget: &InvalidBudget,
    mut on_progress: impl FnMut(u64, u64),
    mut on_record: impl FnMut(&[&[u8]], usize) -> FieldResult<()>,
) -> Result<SourceSummary, SourceError> {
    let mut sum = SourceSummary { file: file.to_owned(), ..SourceSummary::default() };
    let hashed =
        Hashed { inner: input, hasher: Sha256::new(), bytes: 0, eof: false, last: 0, record_start: 0, too_long: false };
    // Records end at `\n` alone: a `\r` before it is trimmed with the last field, so `\r\n`
    // and `\n` files read the same and the line numbers below stay exact. `flexible`: a wrong
    // field count is our own error, with the line.
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .terminator(csv::Terminator::Any(b'\n'))
        .quoting(true)
        .double_quote(true)
        .trim(csv::Trim::None)
        .buffer_capacity(CSV_BUFFER)
        .from_reader(hashed);
    let io_err = |rdr: &csv::Reader<Hashed<R>>, e: csv::Error, line: u64| match e.into_kind() {
        _ if rdr.get_ref().too_long => SourceError::LineTooLong { file: file.to_owned(), line, max: MAX_RECORD_BYTES },
        csv::ErrorKind::Io(source) => SourceError::Io { file: file.to_owned(), source },
        other => SourceError::Io { file: file.to_owned(), source: io::Error::other(format!("{other:?}")) },
    };
    let header = match rdr.byte_headers() {
        Ok(h) => h.clone(),
        Err(e) => return Err(io_err(&rdr, e, 1)),
    };
    let variant = check_header(file, &header, headers)?;
    let names = headers[variant];
    let mut rec = csv::ByteRecord::new();
    let mut next_progress = PROGRESS_ROWS;
    loop {
        let (prev_end, prev_line) = (rdr.position().byte(), rdr.position().line());
        rdr.get_mut().record_start = prev_end;
        match rdr.read_byte_record(&mut rec) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(io_err(&rdr, e, prev_line)),
        }
        // Where the record lies: it starts after the previous record's `\n` (at `start`,
        // `start_line`), after k blank lines, and ends at `end` (`end_line`), after its own
        // `\n` unless it is the last line of a file without one. The line breaks in between
        // are k, those inside its quoted fields and its own.
        let (start, start_line) = rec.position().map_or((prev_end, prev_line), |p| (p.byte(), p.line()));
        let (end, end_line) = (rdr.position().byte(), rdr.position().line());
        let h = rdr.get_ref();
        let own_nl = u64::from(!(h.eof && end == h.bytes && h.last != b'\n'));
        if end - start > MAX_RECORD_BYTES as u64 {
            return Err(SourceError::LineTooLong { file: file.to_owned(), line: start_line, max: MAX_RECORD_BYTES });
        }
        let mut line = start_line;
        let fields = rec.len();
        let mut quoting = None;
        let raw = (end - start).saturating_sub(own_nl);
        // The usual record has no quote, no line break inside and no blank line before it:
        // `raw` is its fields and commas. A quote in it then is data: a stray quote. Only the
        // text column (the proof) could take one as valid; in any other a quote fails the
        // field's own check, and the message is made below.
        if end_line - start_line != own_nl
            || raw != (rec.as_slice().len() + fields - 1) as u64
            || text_column.and_then(|c| rec.get(c.index)).is_some_and(|text| text.contains(&b'"'))
        {
            // Blank lines before it, quotes or line breaks inside: the exact account.
            let inner_nl = rec.as_slice().iter().filter(|&&b| b == b'\n').count() as u64;
            let blank = (end_line - start_line).saturating_sub(inner_nl + own_nl);
            line = start_line + blank;
            quoting = Some(raw.saturating_sub(blank));
        }
        // A blank line (spaces, or a `\r` of a `\r\n` file): nothing.
        if fields == 1 && trim(&rec[0]).is_empty() {
            continue;
        }
        let multiline = text_column.filter(|c| c.line_breaks).map(|c| c.index);
        let checked = check_record(&rec, names, quoting, line, end_line - own_nl, multiline);
        let result = checked.and_then(|()| {
            let mut f: [&[u8]; MAX_FIELDS] = [&[]; MAX_FIELDS];
            for (slot, field) in f.iter_mut().zip(rec.iter()) {
                *slot = trim(field);
            }
            on_record(&f[..names.len()], variant)
        });
        // A field refused with a stray quote in the record: say so (cold path).
        let result = match result {
            Err(e) if quoting.is_none() && rec.as_slice().contains(&b'"') => {
                Err(bad_quoting(&rec, raw, names, "").unwrap_or(e))
            }
            r => r,
        };
        match result {
            Ok(()) => {
                sum.rows += 1;
                if sum.rows == next_progress {
                    next_progress += PROGRESS_ROWS;
                    on_progress(end, sum.rows);
                }
            }
            Err((field, message)) => {
                sum.errors.record(file, line, field, message);
                if !budget.charge() {
                    return Err(SourceError::TooManyInvalid {
                        file: file.to_owned(),
                        max: budget.max(),
                        errors: std::mem::take(&mut sum.errors),
                    });
                }
            }
        }
    }
    let final_line = rdr.position().line();
    let h = rdr.into_inner();
    sum.bytes = h.bytes;
    // Line breaks seen, and a last line without one.
    sum.lines = final_line - 1 + u64::from(h.bytes > 0 && h.last != b'\n');
    on_progress(sum.bytes, sum.rows);
    sum.sha256 = h.hasher.finalize().into();
    Ok(sum)
}

/// The record-level checks before the fields': quoting (when the record had any, `raw`
/// being its length), line breaks inside quotes, the field count.
#[inline]
fn check_record(
    rec: &csv::ByteRecord,
    names: &[&'static str],
    raw: Option<u64>,
    line: u64,
    last_line: u64,
    multiline: Option<usize>,
) -> FieldResult<()> {
    if let Some(raw) = raw {
        let span = match last_line > line {
            true => format!("; the record runs over lines {line}–{last_line}"),
            false => String::new(),
        };
        if let Some(e) = bad_quoting(rec, raw, names, &span) {
            return Err(e);
        }
        if let Some(i) = rec.iter().enumerate().position(|(i, f)| Some(i) != multiline && f.contains(&b'\n')) {
            return Err((
                names.get(i).copied().unwrap_or("row"),
                format!(
                    "a line break inside a quoted field (the record runs over lines {line}–{last_line}); \
                     no column of this file may hold one"
                ),
            ));
        }
    }
    let (n, want) = (rec.len(), names.len());
    if n < want {
        return Err((names[n], "missing".to_owned()));
    }
    if n > want {
        return Err(("row", format!("expected {want} fields, found {n}")));
    }
    Ok(())
}

/// Which of `headers` the header record is.
fn check_header(file: &str, header: &csv::ByteRecord, headers: &[&[&str]]) -> Result<usize, SourceError> {
    let is = |expected: &[&str]| {
        header.len() == expected.len()
            && header.iter().zip(expected).all(|(n, want)| trim(n).eq_ignore_ascii_case(want.as_bytes()))
    };
    headers.iter().position(|h| is(h)).ok_or_else(|| {
        let found: Vec<String> = header.iter().map(|n| lossy(trim(n))).collect();
        SourceError::Header { file: file.to_owned(), expected: expected(headers), found: found.join(",") }
    })
}

/// The accepted header rows, for a message: `a,b` or `a,b,c`.
fn expected(headers: &[&[&str]]) -> String {
    headers.iter().map(|h| h.join(",")).collect::<Vec<_>>().join("` or `")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dnc(text: &str, budget: &InvalidBudget) -> (Result<SourceSummary, SourceError>, Vec<DncRow>) {
        let mut rows = Vec::new();
        let r = read_dnc(text.as_bytes(), "dnc.csv", "86", budget, |r| rows.push(r), |_, _| {});
        (r, rows)
    }

    #[test]
    fn the_optional_proof_column() {
        let mut rows = Vec::new();
        let text = "msisdn,entity,action,at,proof\n8613800000001,acme,grant,2026-01-01,urn:x:1\n\
                    8613800000002,acme,grant,2026-01-01,\n8613800000003,acme,grant,2026-01-01,a\u{7}b\n\
                    8613800000004,acme,grant,2026-01-01\n";
        let s = read_consent(
            text.as_bytes(),
            "consent.csv",
            "86",
            &InvalidBudget::unlimited(),
            |r| rows.push((r.msisdn, r.proof.map(str::to_owned))),
            |_, _| {},
        )
        .unwrap();
        assert_eq!(rows, [(8613800000001, Some("urn:x:1".into())), (8613800000002, None)]);
        let errs: Vec<String> = s.errors.first.iter().map(|e| e.to_string()).collect();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].starts_with("consent.csv:4: proof:") && errs[0].contains("control"), "{errs:?}");
        assert!(errs[1].starts_with("consent.csv:5: proof: missing"), "{errs:?}");
        let e = read_consent(
            "msisdn,entity,action\n".as_bytes(),
            "c.csv",
            "86",
            &InvalidBudget::unlimited(),
            |_| {},
            |_, _| {},
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "c.csv:1: header: expected `msisdn,entity,action,at` or `msisdn,entity,action,at,proof`, found `msisdn,entity,action`"
        );
    }

    fn consent(text: &str) -> (SourceSummary, Vec<(u64, String, StatementKind, i64)>) {
        let mut rows = Vec::new();
        let r = read_consent(
            text.as_bytes(),
            "consent.csv",
            "86",
            &InvalidBudget::unlimited(),
            |r| rows.push((r.msisdn, r.entity.to_owned(), r.action, r.at)),
            |_, _| {},
        )
        .unwrap();
        (r, rows)
    }

    /// The consent rows of `text` (msisdn, entity, action, proof) and its errors as shown.
    #[allow(clippy::type_complexity)]
    fn consent_rows_shown(
        text: &str,
    ) -> (Vec<(u64, String, StatementKind, Option<String>)>, Vec<String>, SourceSummary) {
        let mut rows = Vec::new();
        let s = read_consent(
            text.as_bytes(),
            "consent.csv",
            "86",
            &InvalidBudget::unlimited(),
            |r| rows.push((r.msisdn, r.entity.to_owned(), r.action, r.proof.map(str::to_owned))),
            |_, _| {},
        )
        .unwrap();
        let shown = s.errors.first.iter().map(|e| e.to_string()).collect();
        (rows, shown, s)
    }

    /// The case: an RFC 4180 export quotes the entity; it is the same entity, and its
    /// revocation reaches it.
    #[test]
    fn a_quoted_field_is_the_same_as_unquoted() {
        let want = vec![(8613800000001, "acme-retail".to_owned(), StatementKind::Revoke, None)];
        for text in [
            "msisdn,entity,action,at\n8613800000001,acme-retail,revoke,2026-11-01\n",
            "msisdn,entity,action,at\n8613800000001,\"acme-retail\",revoke,2026-11-01\n",
            "\"msisdn\",\"entity\",\"action\",\"at\"\n\"8613800000001\",\"acme-retail\",\"revoke\",\"2026-11-01\"\n",
            "msisdn,entity,action,at,proof\n\"+8613800000001\",\"acme-retail\" ,REVOKE,\"2026-11-01\",\"\"\n",
        ] {
            let (rows, errors, _) = consent_rows_shown(text);
            assert_eq!((&rows, errors.len()), (&want, 0), "{text:?}: {errors:?}");
        }
    }

    /// Doubled quotes and a comma inside a quoted proof are the proof's; a line break inside one
    /// is an error at the line where the record starts, and the record after it keeps its own
    /// line number.
    #[test]
    fn quoted_proofs() {
        let text = "msisdn,entity,action,at,proof\n\
                    8613800000001,acme,grant,2026-01-01,\"urn:acme:\"\"double\"\" opt-in, by SMS\"\n\
                    8613800000002,acme,grant,2026-01-01,\"first line\n\
                    second line\"\n\
                    8613800000003,acme,grant,2026-01-01,\"x,y\"\n\
                    8613800000004,acme,grant,2026-01-01,bad\"quote\n\
                    8613800000005,acme,grant,2026-01-01,\"unclosed\n\
                    8613800000006,acme,grant,2026-01-01,z\n";
        let (rows, errors, s) = consent_rows_shown(text);
        let proofs: Vec<(u64, Option<&str>)> = rows.iter().map(|r| (r.0, r.3.as_deref())).collect();
        assert_eq!(
            proofs,
            [(8613800000001, Some("urn:acme:\"double\" opt-in, by SMS")), (8613800000003, Some("x,y"))],
            "{errors:?}"
        );
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert_eq!(
            errors[0],
            "consent.csv:3: proof: a line break inside a quoted field (the record runs over lines 3–4); \
             no column of this file may hold one"
        );
        assert!(errors[1].starts_with("consent.csv:6: proof: a stray or unclosed quote:"), "{errors:?}");
        // The quote left open on line 7 runs to the end of the file: one error that says so,
        // not a proof holding the next row.
        assert!(errors[2].starts_with("consent.csv:7: proof: a stray or unclosed quote:"), "{errors:?}");
        assert!(errors[2].ends_with("; the record runs over lines 7–8"), "{errors:?}");
        assert_eq!((s.rows, s.errors.count, s.lines), (2, 3, 8));
    }

    /// A BOM, `\r\n` line ends and a blank line, with quoted and multi-line records: the rows,
    /// the line numbers and the digest of the bytes as read.
    #[test]
    fn bom_crlf_and_line_numbers() {
        let text = "\u{feff}msisdn,entity,action,at\r\n\
                    8613800000001,\"acme-retail\",revoke,2026-11-01\r\n\
                    \r\n\
                    \n\
                    8613800000002,\"品牌\",grant,2026-11-01\r\n\
                    8613800000003,\"a\r\nb\",grant,2026-11-01\r\n\
                    8613800000004,acme\"x,grant,2026-11-01\r\n\
                    8613800000005,\"acme,retail\",grant,2026-11-01\r\n\
                    8613800000006,acme,grant\r\n\
                    8613800000007,acme,grant,2026-11-01,x,y\r\n\
                    \r\n\
                    8613800000008,acme,grant,2026-11-01";
        let (rows, errors, s) = consent_rows_shown(text);
        let got: Vec<(u64, &str)> = rows.iter().map(|r| (r.0, r.1.as_str())).collect();
        assert_eq!(got, [(8613800000001, "acme-retail"), (8613800000002, "品牌"), (8613800000008, "acme")]);
        assert_eq!(errors.len(), 5, "{errors:?}");
        assert!(
            errors[0].starts_with(
                "consent.csv:6: entity: a line break inside a quoted field (the record runs over lines 6–7)"
            ),
            "{errors:?}"
        );
        assert!(errors[1].starts_with("consent.csv:8: entity: a stray or unclosed quote"), "{errors:?}");
        assert!(errors[2].starts_with("consent.csv:9: entity: `acme,retail`: entity id contains `,`"), "{errors:?}");
        assert_eq!(errors[3], "consent.csv:10: at: missing");
        assert_eq!(errors[4], "consent.csv:11: row: expected 4 fields, found 6");
        assert_eq!((s.bytes, s.lines), (text.len() as u64, 13));
        assert_eq!(s.sha256, <[u8; 32]>::from(Sha256::digest(text.as_bytes())));
    }

    /// An entity outside the one rule is refused with the rule, in the file's own words.
    #[test]
    fn entity_rule_in_csv() {
        let text = "msisdn,entity,action,at\n\
                    8613800000001,acme retail,grant,2026-11-01\n\
                    8613800000002,'acme',grant,2026-11-01\n\
                    8613800000003, \"acme\",grant,2026-11-01\n\
                    8613800000004,ヤマト運輸,grant,2026-11-01\n";
        let (rows, errors, _) = consent_rows_shown(text);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].1, "ヤマト運輸");
        assert!(errors[0].starts_with("consent.csv:2: entity: `acme retail`: entity id contains U+0020, not allowed; an entity id is 1 to 255 bytes"), "{errors:?}");
        assert!(errors[1].starts_with("consent.csv:3: entity: `'acme'`: entity id contains `'`"), "{errors:?}");
        // A space before the opening quote makes the quote data (RFC 4180): a stray quote.
        assert!(errors[2].starts_with("consent.csv:4: entity: a stray or unclosed quote"), "{errors:?}");
    }

    #[test]
    fn timestamps() {
        let cases: &[(&str, Option<i64>)] = &[
            ("1970-01-01", Some(0)),
            ("2026-05-01", Some(1_777_593_600)),
            ("2026-05-01T08:00:00Z", Some(1_777_622_400)),
            ("2026-05-01t08:00:00z", Some(1_777_622_400)),
            ("2026-05-01 08:00:00Z", Some(1_777_622_400)),
            ("2026-05-01T16:00:00+08:00", Some(1_777_622_400)),
            ("2026-05-01T02:30:00-05:30", Some(1_777_622_400)),
            ("2026-05-01T08:00:00.999Z", Some(1_777_622_400)),
            ("2024-02-29", Some(1_709_164_800)),
            ("1969-12-31T23:59:59Z", Some(-1)),
            ("2016-12-31T23:59:60Z", Some(1_483_228_800)),
            ("2023-02-29", None),
            ("2026-13-01", None),
            ("2026-00-10", None),
            ("2026-05-00", None),
            ("2026-5-01", None),
            ("2026-05-01T08:00:00", None),
            ("2026-05-01T08:00Z", None),
            ("2026-05-01T24:00:00Z", None),
            ("2026-05-01T08:60:00Z", None),
            ("2026-05-01T08:00:00+0800", None),
            ("2026-05-01T08:00:00+24:00", None),
            ("2026-05-01T08:00:00.Z", None),
            ("2026-05-01T08:00:00Zjunk", None),
            ("2026-05-01X08:00:00Z", None),
            ("20260501", None),
            ("", None),
            ("１９７０-01-01", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_timestamp(s.as_bytes()), *want, "{s}");
        }
    }

    #[test]
    fn dnc_rows_and_errors() {
        let text = "\u{feff}MSISDN , Registered_At\r\n\
                    13812345678,2026-05-01\r\n\
                    \r\n\
                    +8613900000000 , 2026-05-01T08:00:00Z \n\
                    abc,2026-05-01\n\
                    13812345679\n\
                    13812345679,2026-05-01,extra\n\
                    13812345679,yesterday\n\
                    8613700000000,2026-05-02";
        let (r, rows) = dnc(text, &InvalidBudget::unlimited());
        let s = r.unwrap();
        assert_eq!(
            rows,
            vec![
                DncRow { msisdn: 8613812345678, registered_at: 1_777_593_600_000 },
                DncRow { msisdn: 8613900000000, registered_at: 1_777_622_400_000 },
                DncRow { msisdn: 8613700000000, registered_at: 1_777_680_000_000 },
            ]
        );
        assert_eq!(s.rows, 3);
        assert_eq!(s.errors.count, 4);
        let shown: Vec<String> = s.errors.first.iter().map(|e| e.to_string()).collect();
        assert_eq!(shown[0], "dnc.csv:5: msisdn: `abc`: not digits (only 0-9 and a leading '+' are allowed)");
        assert_eq!(shown[1], "dnc.csv:6: registered_at: missing");
        assert_eq!(shown[2], "dnc.csv:7: row: expected 2 fields, found 3");
        assert!(shown[3].starts_with("dnc.csv:8: registered_at: `yesterday` is not"), "{}", shown[3]);
        assert_eq!(s.errors.by_field.get("registered_at"), Some(&2));
        assert_eq!(s.bytes, text.len() as u64);
        let digest: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        assert_eq!(s.sha256, digest);
    }

    #[test]
    fn budget_stops_the_read() {
        let text = "msisdn,registered_at\nx,2026-05-01\ny,2026-05-01\n13812345678,2026-05-01\nz,1\n";
        let (r, _) = dnc(text, &InvalidBudget::new(2));
        match r {
            Err(SourceError::TooManyInvalid { max: 2, errors, .. }) => {
                assert_eq!(errors.count, 3);
                assert_eq!(errors.first[2].line, 5);
            }
            other => panic!("{other:?}"),
        }
        let (r, rows) = dnc(text, &InvalidBudget::new(3));
        assert_eq!(r.unwrap().errors.count, 3);
        assert_eq!(rows.len(), 1);
    }

    #[test]
    fn headers_are_checked() {
        for bad in
            ["", "msisdn\n1,2\n", "number,registered_at\n", "msisdn,registered_at,x\n", "13812345678,2026-05-01\n"]
        {
            let (r, _) = dnc(bad, &InvalidBudget::unlimited());
            assert!(matches!(r, Err(SourceError::Header { .. })), "{bad:?}: {r:?}");
        }
        let (r, _) = dnc("msisdn,registered_at", &InvalidBudget::unlimited());
        assert_eq!(r.unwrap().rows, 0);
        let e = dnc("msisdn,at\n", &InvalidBudget::unlimited()).0.unwrap_err();
        assert_eq!(e.to_string(), "dnc.csv:1: header: expected `msisdn,registered_at`, found `msisdn,at`");
    }

    #[test]
    fn consent_rows() {
        let text = "msisdn,entity,action,at\n\
                    13812345678,acme-retail,grant,2026-05-01\n\
                    13812345678, 品牌 ,REVOKE,2026-05-02T00:00:00+08:00\n\
                    13812345678,acme,optin,2026-05-01\n\
                    13812345678,,grant,2026-05-01\n\
                    13812345678,a\u{7}b,grant,2026-05-01\n";
        let (s, rows) = consent(text);
        assert_eq!(
            rows,
            vec![
                (8613812345678, "acme-retail".to_owned(), StatementKind::Grant, 1_777_593_600_000),
                (8613812345678, "品牌".to_owned(), StatementKind::Revoke, 1_777_651_200_000),
            ]
        );
        let fields: Vec<&str> = s.errors.first.iter().map(|e| e.field).collect();
        assert_eq!(fields, ["action", "entity", "entity"]);
        assert_eq!(s.errors.first[0].line, 4);
    }

    #[test]
    fn lines_across_buffer_boundaries() {
        // Enough rows that records straddle many CSV_BUFFER refills.
        let mut text = String::from("msisdn,registered_at\n");
        let n = 3 * MAX_RECORD_BYTES / 30;
        for i in 0..n {
            text.push_str(&format!("86138{:08},2026-05-01\n", i));
        }
        let mut count = 0u64;
        let mut last = 0;
        let s = read_dnc(
            text.as_bytes(),
            "dnc.csv",
            "86",
            &InvalidBudget::new(0),
            |r| {
                count += 1;
                last = r.msisdn;
            },
            |_, _| {},
        )
        .unwrap();
        assert_eq!(count, n as u64);
        assert_eq!(s.rows, n as u64);
        assert_eq!(last, 8613800000000 + n as u64 - 1);
    }

    #[test]
    fn over_long_line_is_fatal() {
        let mut text = String::from("msisdn,registered_at\n");
        text.push_str(&"1".repeat(MAX_RECORD_BYTES + 10));
        let (r, _) = dnc(&text, &InvalidBudget::unlimited());
        assert!(matches!(r, Err(SourceError::LineTooLong { line: 2, .. })), "{r:?}");
        // A quote left open on line 3 of a long file: refused before the rest of the file is
        // one record in memory.
        let mut text = String::from("msisdn,registered_at\n13812345678,2026-05-01\n\"13812345679,2026-05-01\n");
        while text.len() < 3 * MAX_RECORD_BYTES {
            text.push_str("13812345679,2026-05-01\n");
        }
        let mut input = text.as_bytes();
        let mut rows = 0;
        let r = read_dnc(&mut input, "dnc.csv", "86", &InvalidBudget::unlimited(), |_| rows += 1, |_, _| {});
        assert_eq!(
            r.unwrap_err().to_string(),
            format!("dnc.csv:3: record longer than {MAX_RECORD_BYTES} bytes (not a CSV source, or a quote left open)")
        );
        assert_eq!(rows, 1);
        assert!(input.len() > MAX_RECORD_BYTES, "stopped early: {} bytes left", input.len());
    }
}

/// Diagnostic, not a regression test: reader throughput on in-memory CSV (no disk).
/// `cargo test --release --lib consent::source::read_probe -- --ignored --nocapture`
#[cfg(test)]
mod read_probe {
    use super::*;
    use std::time::Instant;

    #[test]
    #[ignore]
    fn probe() {
        let n = 5_000_000u64;
        let mut d = String::from("msisdn,registered_at\n");
        let mut c = String::from("msisdn,entity,action,at\n");
        for i in 0..n {
            let m = 13_000_000_000 + (i * 7_919) % 7_000_000_000;
            d.push_str(&format!("{m},2026-0{}-1{}T0{}:1{}:2{}Z\n", 1 + i % 9, i % 10, i % 10, i % 10, i % 10));
            c.push_str(&format!(
                "{m},brand-{:03},{},2026-05-1{}T08:00:00Z\n",
                i % 1000,
                if i % 7 == 0 { "revoke" } else { "grant" },
                i % 10
            ));
        }
        for (name, text) in [("dnc", &d), ("consent", &c)] {
            let t = Instant::now();
            let digest = Sha256::digest(text.as_bytes());
            let sha = t.elapsed();
            let t = Instant::now();
            let mut acc = 0u64;
            let s = if name == "dnc" {
                read_dnc(text.as_bytes(), name, "86", &InvalidBudget::new(0), |r| acc ^= r.msisdn, |_, _| {}).unwrap()
            } else {
                read_consent(
                    text.as_bytes(),
                    name,
                    "86",
                    &InvalidBudget::new(0),
                    |r| acc ^= r.msisdn ^ r.entity.len() as u64,
                    |_, _| {},
                )
                .unwrap()
            };
            let el = t.elapsed();
            assert_eq!(s.sha256, <[u8; 32]>::from(digest));
            eprintln!(
                "{name}: {} rows, {:.0} MB in {el:?}: {:.2} M rows/s, {:.0} MB/s (sha256 alone {sha:?}) {acc}",
                s.rows,
                text.len() as f64 / 1e6,
                s.rows as f64 / el.as_secs_f64() / 1e6,
                text.len() as f64 / el.as_secs_f64() / 1e6
            );
        }
    }
}
