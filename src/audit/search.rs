//! `consentgate audit search`: every decision recorded for one subscriber, oldest first.
//!
//! Files are read in the order of the times in their names. A line is matched on the
//! normalised destination (`msisdn`), so the number may be given in any form the normaliser
//! accepts (`+8613800138000`, `008613800138000`, national `13800138000` with the default
//! country code). Lines are first checked for the exact bytes `"msisdn":"<digits>"` and only
//! candidates are parsed, so a search reads at disk speed.
//!
//! The active file may end in a partially written line (the writer is mid-write, or a crash
//! cut it); a file abandoned after a write error may hold one in the middle. Both are skipped
//! and reported as warnings, never an error.
//!
//! `--since` / `--until` narrow by decision time and skip whole files that cannot hold
//! matching records (a file holds records written before the next file was opened).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::format::parse_time_us;
use super::writer::list_files;

/// Records can be stamped before the file that holds them was opened (queued while the
/// previous file rotated; a forwarded message's record is written when the SMSC answers, up to
/// the response timeout later); `--until` keeps files opened up to this long after it.
const UNTIL_SLACK_S: i64 = 3600;
/// At most this many warnings are listed (all are counted).
const MAX_WARNINGS: usize = 20;

/// One line of an audit file, as read back (field meanings in [`crate::audit`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuditLine {
    pub time: String,
    pub account: String,
    pub entity: String,
    pub session: u64,
    pub seq: u32,
    pub source: String,
    pub source_ton: u8,
    pub source_npi: u8,
    pub destination: String,
    pub destination_ton: u8,
    pub destination_npi: u8,
    pub msisdn: Option<String>,
    pub class: Option<String>,
    pub verdict: String,
    pub reason: Option<String>,
    pub status: Option<String>,
    pub upstream_status: Option<String>,
    pub message_id: Option<String>,
    pub snapshot: Option<String>,
    pub snapshot_generation: u64,
    pub snapshot_built: Option<String>,
    /// `cmpp` for a decision on the CMPP front (statuses are Results); absent for SMPP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// India DLT: the PE id (decimal), for an account with `scrubbing = "dlt"` once known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dlt_pe: Option<String>,
    /// India DLT: the template id (given, matched, or the closest tried).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dlt_template: Option<String>,
}

/// What to look for.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Normalised E.164 digits.
    pub msisdn: u64,
    /// Decision time at or after this (unix µs).
    pub since_us: Option<i64>,
    /// Decision time at or before this (unix µs).
    pub until_us: Option<i64>,
    /// Only this system_id.
    pub account: Option<String>,
}

/// What a search read.
#[derive(Debug, Clone, Default)]
pub struct SearchReport {
    /// Audit files read, and skipped by the time range.
    pub files: usize,
    pub files_skipped: usize,
    pub lines: u64,
    pub matched: u64,
    /// Last lines without their `\n` (being written, or cut by a crash): skipped.
    pub partial_lines: u64,
    /// Candidate lines that are not valid records: skipped.
    pub bad_lines: u64,
    /// `file:line: problem`, the first `MAX_WARNINGS`.
    pub warnings: Vec<String>,
}

impl SearchReport {
    fn warn(&mut self, w: String) {
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(w);
        }
    }
}

/// Errors of [`search`] and [`run`].
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// Bad arguments (the CLI exits 64).
    #[error("{0}")]
    Usage(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Writing the results failed (closed pipe, full disk).
    #[error("output: {0}")]
    Output(#[source] io::Error),
}

/// Reads the audit files in `dir` oldest first and calls `on_match` with every record that
/// matches `q` (the parsed record and the line as stored, `\n` included).
pub fn search(
    dir: &Path,
    q: &Query,
    mut on_match: impl FnMut(&AuditLine, &[u8]) -> io::Result<()>,
) -> Result<SearchReport, SearchError> {
    let io_at = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SearchError::Io { path, source }
    };
    let files = list_files(dir).map_err(io_at(dir))?;
    let mut report = SearchReport::default();
    let needle = format!("\"msisdn\":\"{}\"", q.msisdn).into_bytes();
    let since_s = q.since_us.map(|u| u.div_euclid(1_000_000));
    let until_s = q.until_us.map(|u| u.div_euclid(1_000_000));
    let mut line = Vec::with_capacity(1024);
    for (i, f) in files.iter().enumerate() {
        // Everything in file i was written before file i+1 was opened (second resolution).
        let ends_before_since = since_s.zip(files.get(i + 1)).is_some_and(|(s, next)| next.start + 1 < s);
        let starts_after_until = until_s.is_some_and(|u| f.start - UNTIL_SLACK_S > u);
        if ends_before_since || starts_after_until {
            report.files_skipped += 1;
            continue;
        }
        report.files += 1;
        let file = match File::open(&f.path) {
            Ok(file) => file,
            // Deleted by retention between the listing and now.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_at(&f.path)(e)),
        };
        let mut rd = BufReader::with_capacity(1 << 20, file);
        let mut lineno = 0u64;
        loop {
            line.clear();
            let n = rd.read_until(b'\n', &mut line).map_err(io_at(&f.path))?;
            if n == 0 {
                break;
            }
            lineno += 1;
            report.lines += 1;
            if line.last() != Some(&b'\n') {
                report.partial_lines += 1;
                report.warn(format!(
                    "{}:{lineno}: partial last line ({n} bytes; being written or cut by a crash), skipped",
                    f.path.display()
                ));
                break;
            }
            if !contains(&line, &needle) {
                continue;
            }
            let rec: AuditLine = match serde_json::from_slice(&line) {
                Ok(r) => r,
                Err(e) => {
                    report.bad_lines += 1;
                    report.warn(format!("{}:{lineno}: not a valid audit record ({e}), skipped", f.path.display()));
                    continue;
                }
            };
            if !matches(&rec, q) {
                continue;
            }
            report.matched += 1;
            on_match(&rec, &line).map_err(SearchError::Output)?;
        }
    }
    Ok(report)
}

fn matches(rec: &AuditLine, q: &Query) -> bool {
    let digits = q.msisdn.to_string();
    if rec.msisdn.as_deref() != Some(digits.as_str()) {
        return false;
    }
    if q.account.as_deref().is_some_and(|a| a != rec.account) {
        return false;
    }
    if q.since_us.is_some() || q.until_us.is_some() {
        let Some(t) = parse_time_us(&rec.time) else { return false };
        if q.since_us.is_some_and(|s| t < s) || q.until_us.is_some_and(|u| t > u) {
            return false;
        }
    }
    true
}

/// Substring search: jumps between occurrences of the needle's first byte.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    let Some((&first, _)) = needle.split_first() else { return true };
    let mut at = 0;
    while at + needle.len() <= hay.len() {
        match hay[at..=hay.len() - needle.len()].iter().position(|&b| b == first) {
            Some(p) => {
                let s = at + p;
                if &hay[s..s + needle.len()] == needle {
                    return true;
                }
                at = s + 1;
            }
            None => return false,
        }
    }
    false
}

/// A time bound: RFC 3339 (`2026-05-01T08:00:00Z`, `2026-05-01T16:00:00+08:00`), a date
/// (`2026-05-01`, midnight UTC), or an age relative to `now_us` (`7d`, `12h`, `30m`).
pub fn parse_when(s: &str, now_us: i64) -> Result<i64, String> {
    if let Ok(d) = crate::time::parse_duration(s) {
        return Ok(now_us - d.as_micros() as i64);
    }
    match crate::time::parse_timestamp(s.trim().as_bytes()) {
        Some(secs) => Ok(secs * 1_000_000),
        None => Err(format!(
            "`{s}`: expected an RFC 3339 time (2026-05-01T08:00:00Z), a date (2026-05-01) or an age (7d, 12h)"
        )),
    }
}

/// `audit search` arguments, as given on the command line.
#[derive(Debug, Clone)]
pub struct SearchArgs {
    pub dir: PathBuf,
    pub msisdn: String,
    pub since: Option<String>,
    pub until: Option<String>,
    pub account: Option<String>,
    /// JSON lines (as stored) instead of a table.
    pub json: bool,
    /// For national numbers.
    pub country_code: String,
}

/// The `audit search` command: prints matches to `out` (a table, or the stored JSON lines)
/// and the count plus any warnings to `err` (the count goes to `out` for the table). Returns
/// the number of matches.
pub fn run(args: &SearchArgs, out: &mut dyn Write, err: &mut dyn Write) -> Result<u64, SearchError> {
    let msisdn = crate::consent::msisdn::normalise_text(&args.msisdn, &args.country_code)
        .map_err(|e| SearchError::Usage(format!("--msisdn {}: {e}", args.msisdn)))?;
    let now = super::now_us();
    let when = |flag: &str, v: &Option<String>| -> Result<Option<i64>, SearchError> {
        v.as_deref().map(|s| parse_when(s, now).map_err(|e| SearchError::Usage(format!("{flag} {e}")))).transpose()
    };
    let q = Query {
        msisdn,
        since_us: when("--since", &args.since)?,
        until_us: when("--until", &args.until)?,
        account: args.account.clone(),
    };
    if !args.dir.is_dir() {
        return Err(SearchError::Usage(format!("--dir {}: not a directory", args.dir.display())));
    }
    let mut rows: Vec<[String; 12]> = Vec::new();
    let report = search(&args.dir, &q, |rec, line| {
        if args.json {
            out.write_all(line)
        } else {
            rows.push(row(rec));
            Ok(())
        }
    })?;
    let out_err = SearchError::Output;
    for w in &report.warnings {
        writeln!(err, "warning: {w}").map_err(out_err)?;
    }
    let more = (report.partial_lines + report.bad_lines).saturating_sub(report.warnings.len() as u64);
    if more > 0 {
        writeln!(err, "warning: {more} more line(s) skipped").map_err(out_err)?;
    }
    let summary = format!(
        "{} matching record(s) for {msisdn} in {} file(s) ({} skipped by time range)",
        report.matched, report.files, report.files_skipped
    );
    if args.json {
        writeln!(err, "{summary}").map_err(out_err)?;
    } else {
        print_table(out, &rows).map_err(out_err)?;
        writeln!(out, "{summary}").map_err(out_err)?;
    }
    out.flush().map_err(out_err)?;
    Ok(report.matched)
}

const HEADER: [&str; 12] = [
    "TIME (UTC)",
    "ACCOUNT",
    "ENTITY",
    "SESSION/SEQ",
    "SOURCE",
    "DESTINATION",
    "CLASS",
    "VERDICT",
    "REASON",
    "STATUS",
    "MESSAGE_ID",
    "SNAPSHOT",
];

fn row(r: &AuditLine) -> [String; 12] {
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    // On CMPP the statuses are Results, shown in decimal as the standard writes them.
    let cmpp = r.protocol.as_deref() == Some("cmpp");
    let (show, peer): (fn(&String) -> String, &str) = if cmpp {
        (|s| u32::from_str_radix(s.trim_start_matches("0x"), 16).map_or(s.clone(), |n| format!("result {n}")), "ismg")
    } else {
        (String::clone, "smsc")
    };
    let status = match (&r.status, &r.upstream_status) {
        (Some(s), Some(u)) if s != u => format!("{} ({peer} {})", show(s), show(u)),
        (Some(s), _) => show(s),
        (None, Some(u)) => format!("{peer} {}", show(u)),
        (None, None) => "-".into(),
    };
    let snapshot = match &r.snapshot {
        Some(s) => format!("{s} #{}", r.snapshot_generation),
        None => "none".into(),
    };
    [
        r.time.clone(),
        r.account.clone(),
        r.entity.clone(),
        format!("{}/{}", r.session, r.seq),
        r.source.clone(),
        r.destination.clone(),
        opt(&r.class),
        r.verdict.clone(),
        opt(&r.reason),
        status,
        opt(&r.message_id),
        snapshot,
    ]
}

fn print_table(out: &mut dyn Write, rows: &[[String; 12]]) -> io::Result<()> {
    let mut width = HEADER.map(|h| h.chars().count());
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |out: &mut dyn Write, cells: &mut dyn Iterator<Item = &str>| -> io::Result<()> {
        let mut s = String::new();
        for (i, c) in cells.enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            s.push_str(c);
            if i + 1 < width.len() {
                s.extend(std::iter::repeat_n(' ', width[i].saturating_sub(c.chars().count())));
            }
        }
        writeln!(out, "{}", s.trim_end())
    };
    if rows.is_empty() {
        return Ok(());
    }
    line(out, &mut HEADER.iter().copied())?;
    for r in rows {
        line(out, &mut r.iter().map(String::as_str))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmpp_statuses_are_shown_as_results() {
        let line = |protocol: Option<&str>| AuditLine {
            status: Some("0x00000065".into()),
            upstream_status: None,
            protocol: protocol.map(str::to_owned),
            ..Default::default()
        };
        assert_eq!(row(&line(Some("cmpp")))[9], "result 101");
        assert_eq!(row(&line(None))[9], "0x00000065");
        let mut fwd = line(Some("cmpp"));
        (fwd.status, fwd.upstream_status) = (Some("0x00000000".into()), Some("0x00000008".into()));
        assert_eq!(row(&fwd)[9], "result 0 (ismg result 8)");
    }

    #[test]
    fn substring_search() {
        assert!(contains(b"abc\"msisdn\":\"86\"x", b"\"msisdn\":\"86\""));
        assert!(!contains(b"abc\"msisdn\":\"861\"x", b"\"msisdn\":\"86\""));
        assert!(contains(b"xx", b""));
        assert!(!contains(b"x", b"xx"));
        assert!(contains(b"aab", b"ab"));
    }

    #[test]
    fn time_bounds() {
        let now = 1_800_000_000_000_000;
        assert_eq!(parse_when("7d", now), Ok(now - 7 * 86_400 * 1_000_000));
        assert_eq!(parse_when("2026-05-01", now), Ok(1_777_593_600 * 1_000_000));
        assert_eq!(parse_when("2026-05-01T08:00:00+08:00", now), Ok(1_777_593_600 * 1_000_000));
        assert!(parse_when("yesterday", now).is_err());
    }
}
