//! Streaming readers for the operator's source files (DESIGN §4).
//!
//! | file | header row | one row |
//! |---|---|---|
//! | `dnc.csv` | `msisdn,registered_at` | `8613812345678,2026-05-01T08:00:00+08:00` |
//! | `consent.csv` | `msisdn,entity,action,at` or `msisdn,entity,action,at,proof` | `13812345678,acme-retail,grant,2026-05-01,urn:acme:optin:8812` |
//!
//! * UTF-8; an optional BOM; `\n` or `\r\n` line ends; blank lines are skipped. The header row is
//!   required and its names are checked (case-insensitive). No quoting: fields cannot contain
//!   commas. Spaces and tabs around a field are ignored.
//! * `msisdn` goes through [`normalise`] with the TON-unknown rules and the configured country
//!   code. `action` is `grant` or `revoke` (case-insensitive). `entity` follows
//!   [`EntityName`](super::statement::EntityName)'s rule: 1–255 bytes of UTF-8 without control
//!   characters.
//! * `proof` (optional column, DESIGN §4): the sender's reference to its evidence of the
//!   subscriber's consent (Order No. 74 Art. 21) — an id, URI or hash, up to [`MAX_PROOF_BYTES`]
//!   of UTF-8 without control characters; empty = none.
//! * Timestamps: RFC 3339 (`2026-05-01T08:00:00Z`, `2026-05-01T08:00:00.250+08:00`, `T` or a
//!   space between date and time, fractions truncated) or a bare `YYYY-MM-DD` (midnight UTC).
//!   Parsed by [`crate::time::parse_timestamp_ms`] into Unix milliseconds, the unit of every
//!   statement's `at`.
//!
//! A bad row does not stop the read: it becomes a [`RowError`] (`file:line: field: message`),
//! counted per field, the first [`MAX_KEPT_ERRORS`] kept. A shared [`InvalidBudget`] lets the
//! caller cap bad rows across files (`max_invalid`); exceeding it stops the read with
//! [`SourceError::TooManyInvalid`]. Header, I/O and over-long-line problems are fatal.
//!
//! Speed: the readers parse bytes in place over one 4 MiB buffer (no `String` per line), hash
//! every byte with SHA-256 as it streams past (the snapshot records the digest of each source)
//! and hand each good row to a callback.

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

/// Bytes read from a source file per `read` call at most; also the longest line accepted.
pub const READ_BUFFER: usize = 4 << 20;
/// The read buffer's first size: it doubles (up to [`READ_BUFFER`]) while reads fill it or a
/// line does not fit, so a small file (or a fuzz input) does not pay for 4 MiB.
const FIRST_READ_BUFFER: usize = 64 << 10;
/// How many row errors are kept with their text (the rest are only counted).
pub const MAX_KEPT_ERRORS: usize = 20;
/// Longest entity id accepted, in bytes ([`MAX_ENTITY_BYTES`]).
pub const MAX_ENTITY_LEN: usize = MAX_ENTITY_BYTES;

/// Header of `dnc.csv`.
pub const DNC_HEADER: [&str; 2] = ["msisdn", "registered_at"];
/// Header of `consent.csv`.
pub const CONSENT_HEADER: [&str; 4] = ["msisdn", "entity", "action", "at"];
/// Header of `consent.csv` with the optional proof column.
pub const CONSENT_HEADER_PROOF: [&str; 5] = ["msisdn", "entity", "action", "at", "proof"];
/// Longest consent proof accepted, in bytes.
pub const MAX_PROOF_BYTES: usize = 512;

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
    /// 1-based line number (the header is line 1).
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
    /// The first line is not the expected header row.
    #[error("{file}:1: header: expected `{expected}`, found `{found}`")]
    Header { file: String, expected: String, found: String },
    /// A line longer than [`READ_BUFFER`]: not a CSV of this kind.
    #[error("{file}:{line}: line longer than {max} bytes")]
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
/// called after each buffer.
pub fn read_dnc<R: Read>(
    input: R,
    file: &str,
    default_cc: &str,
    budget: &InvalidBudget,
    mut on_row: impl FnMut(DncRow),
    on_progress: impl FnMut(u64, u64),
) -> Result<SourceSummary, SourceError> {
    read_csv(input, file, &[&DNC_HEADER], budget, on_progress, |line, _| {
        let [m, at] = split_fields(line, &DNC_HEADER)?;
        let msisdn = field_msisdn(m, default_cc)?;
        let registered_at = field_time(at, "registered_at")?;
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
    read_csv(input, file, &[&CONSENT_HEADER, &CONSENT_HEADER_PROOF], budget, on_progress, |line, header| {
        let ([m, e, a, at], proof) = if header == 0 {
            (split_fields(line, &CONSENT_HEADER)?, None)
        } else {
            let [m, e, a, at, p] = split_fields(line, &CONSENT_HEADER_PROOF)?;
            ([m, e, a, at], field_proof(p)?)
        };
        let msisdn = field_msisdn(m, default_cc)?;
        let entity = field_entity(e)?;
        let action = match a {
            _ if a.eq_ignore_ascii_case(b"grant") => StatementKind::Grant,
            _ if a.eq_ignore_ascii_case(b"revoke") => StatementKind::Revoke,
            _ => return Err(("action", format!("`{}` is not grant or revoke", lossy(a)))),
        };
        let at = field_time(at, "at")?;
        on_row(ConsentRow { msisdn, entity, action, at, proof });
        Ok(())
    })
}

/// A field-level failure: (field, message).
type FieldResult<T> = Result<T, (&'static str, String)>;

/// Splits a line into exactly `N` trimmed fields.
#[inline]
fn split_fields<'a, const N: usize>(line: &'a [u8], names: &[&'static str; N]) -> FieldResult<[&'a [u8]; N]> {
    let mut out: [&[u8]; N] = [&[]; N];
    let mut rest = line;
    for (i, slot) in out.iter_mut().enumerate() {
        if i + 1 == N {
            if rest.contains(&b',') {
                let found = line.iter().filter(|&&b| b == b',').count() + 1;
                return Err(("row", format!("expected {N} fields, found {found}")));
            }
            *slot = trim(rest);
        } else {
            match rest.iter().position(|&b| b == b',') {
                Some(p) => {
                    *slot = trim(&rest[..p]);
                    rest = &rest[p + 1..];
                }
                None => return Err((names[i + 1], "missing".to_owned())),
            }
        }
    }
    Ok(out)
}

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
    check_entity(f).map_err(|e| ("entity", e.to_string()))
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

fn lossy(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(64)]).into_owned();
    if b.len() > 64 {
        s + "…"
    } else {
        s
    }
}

#[inline]
fn trim(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t' | b'\r', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t' | b'\r'] = b {
        b = rest;
    }
    b
}

/// The shared line loop: buffer management, hashing, header check, blank lines, errors.
/// `headers` are the header rows the file may have; `on_line` gets the index of the one it has.
fn read_csv<R: Read>(
    mut input: R,
    file: &str,
    headers: &[&[&str]],
    budget: &InvalidBudget,
    mut on_progress: impl FnMut(u64, u64),
    mut on_line: impl FnMut(&[u8], usize) -> FieldResult<()>,
) -> Result<SourceSummary, SourceError> {
    let mut variant = 0;
    let mut sum = SourceSummary { file: file.to_owned(), ..SourceSummary::default() };
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; FIRST_READ_BUFFER];
    let (mut start, mut filled) = (0usize, 0usize);
    let mut eof = false;
    let mut header_seen = false;
    while !eof {
        let n = loop {
            match input.read(&mut buf[filled..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(SourceError::Io { file: file.to_owned(), source }),
            }
        };
        hasher.update(&buf[filled..filled + n]);
        sum.bytes += n as u64;
        let full = filled + n == buf.len();
        filled += n;
        eof = n == 0;
        loop {
            let line = match find_newline(&buf[start..filled]) {
                Some(p) => {
                    let l = &buf[start..start + p];
                    start += p + 1;
                    l
                }
                None if eof && start < filled => {
                    let l = &buf[start..filled];
                    start = filled;
                    l
                }
                None => break,
            };
            sum.lines += 1;
            if !header_seen {
                variant = check_header(file, line, headers)?;
                header_seen = true;
                continue;
            }
            let line = trim(line);
            if line.is_empty() {
                continue;
            }
            match on_line(line, variant) {
                Ok(()) => sum.rows += 1,
                Err((field, message)) => {
                    sum.errors.record(file, sum.lines, field, message);
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
        if !eof {
            if start == 0 && filled == buf.len() && buf.len() >= READ_BUFFER {
                return Err(SourceError::LineTooLong { file: file.to_owned(), line: sum.lines + 1, max: READ_BUFFER });
            }
            if full && buf.len() < READ_BUFFER {
                buf.resize(buf.len() * 2, 0);
            }
            buf.copy_within(start..filled, 0);
            filled -= start;
            start = 0;
        }
        on_progress(sum.bytes, sum.rows);
    }
    if !header_seen {
        return Err(SourceError::Header { file: file.to_owned(), expected: expected(headers), found: String::new() });
    }
    sum.sha256 = hasher.finalize().into();
    Ok(sum)
}

/// Position of the first `\n`: eight bytes at a time (SWAR), as lines are ~30–60 bytes.
#[inline]
fn find_newline(hay: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    const NL: u64 = LO * b'\n' as u64;
    let mut chunks = hay.chunks_exact(8);
    let mut base = 0;
    for c in &mut chunks {
        let x = u64::from_le_bytes(c.try_into().expect("8 bytes")) ^ NL;
        let found = x.wrapping_sub(LO) & !x & HI;
        if found != 0 {
            return Some(base + (found.trailing_zeros() / 8) as usize);
        }
        base += 8;
    }
    chunks.remainder().iter().position(|&b| b == b'\n').map(|p| base + p)
}

/// Which of `headers` the line is.
fn check_header(file: &str, line: &[u8], headers: &[&[&str]]) -> Result<usize, SourceError> {
    let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
    let line = trim(line);
    let is = |expected: &[&str]| {
        let mut names = line.split(|&b| b == b',').map(trim);
        expected.iter().all(|want| names.next().is_some_and(|n| n.eq_ignore_ascii_case(want.as_bytes())))
            && names.next().is_none()
    };
    headers.iter().position(|h| is(h)).ok_or_else(|| SourceError::Header {
        file: file.to_owned(),
        expected: expected(headers),
        found: lossy(line),
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
        // Enough rows that lines straddle several READ_BUFFER refills.
        let mut text = String::from("msisdn,registered_at\n");
        let n = 3 * READ_BUFFER / 30;
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
        text.push_str(&"1".repeat(READ_BUFFER + 10));
        let (r, _) = dnc(&text, &InvalidBudget::unlimited());
        assert!(matches!(r, Err(SourceError::LineTooLong { line: 2, .. })), "{r:?}");
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

#[cfg(test)]
mod newline_tests {
    #[test]
    fn find_newline_matches_position() {
        let mut v = vec![b'a'; 40];
        assert_eq!(super::find_newline(&v), None);
        for i in 0..40 {
            v[i] = b'\n';
            assert_eq!(super::find_newline(&v), Some(i));
            assert_eq!(super::find_newline(&v[..i]), None);
            v[i] = 0x8A; // high bit set, low bits of '\n'
            assert_eq!(super::find_newline(&v), None);
            v[i] = b'a';
        }
    }
}
