//! `consentgate dlt build`: the five CSV exports read one after the other (each needs the
//! ones before it to check its references), then the registry written in one pass.
//!
//! Memory: template contents go to a temporary file next to the output as they are read
//! (copied into the registry at the end), so what stays in memory is fixed-size: per
//! template its 40-byte record, 16 bytes of id index, 16 + 4 bytes per header it names and
//! ~9 bytes of duplicate check — about 90–110 bytes per template (≈ 1 GB at 10 M) — plus
//! ~70 bytes per header, 16 per entity, chain and preference. `--memory` makes that a limit:
//! the build stops, saying so, rather than exceed it. The whole registry is also written from
//! memory except the contents, so the output's size minus the contents must fit too.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use xxhash_rust::xxh3::xxh3_64;

use super::format::*;
use super::template::{check_content, gram_filter, group_key, mix, template_anchor};
use super::{Category, HeaderType, Status};
use crate::consent::msisdn::{normalise, ton};
use crate::consent::snapshot::{write_atomically, BlockHasher};
use crate::consent::source::{
    lossy, read_csv, FieldResult, InvalidBudget, RowErrors, SourceError, SourceSummary, TextColumn,
};

/// Header rows of the five inputs.
pub const ENTITIES_HEADER: [&str; 3] = ["pe_id", "name", "status"];
pub const HEADERS_HEADER: [&str; 4] = ["header", "pe_id", "type", "status"];
pub const TEMPLATES_HEADER: [&str; 7] =
    ["template_id", "pe_id", "headers", "category", "content_category", "content", "status"];
pub const CHAINS_HEADER: [&str; 2] = ["pe_id", "tm_id"];
pub const PREFERENCES_HEADER: [&str; 3] = ["msisdn", "categories", "registered_at"];

/// Most headers one template may name.
pub const MAX_TEMPLATE_HEADERS: usize = 255;
/// Longest entity name accepted, in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// Inputs of [`build`].
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub entities: PathBuf,
    pub headers: PathBuf,
    pub templates: PathBuf,
    /// `chains.csv`, if any (without: no PE declared any telemarketer).
    pub chains: Option<PathBuf>,
    /// `preferences.csv`, if any.
    pub preferences: Option<PathBuf>,
    /// Where to write the registry (via a temporary file in the same directory and a rename).
    pub out: PathBuf,
    /// Bad rows tolerated across all files before the build fails (`snapshot build`'s rule:
    /// 0 by default, so one bad row fails the build, naming the file and line).
    pub max_invalid: u64,
    /// Country code for national numbers in `preferences.csv` (India: 91).
    pub default_cc: String,
    /// Memory limit in bytes (`--memory`): the build stops rather than hold more (module docs).
    pub memory: Option<u64>,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            entities: "entities.csv".into(),
            headers: "headers.csv".into(),
            templates: "templates.csv".into(),
            chains: None,
            preferences: None,
            out: "registry.dlt".into(),
            max_invalid: 0,
            default_cc: "91".into(),
            memory: None,
        }
    }
}

/// What a build did.
#[derive(Debug, Clone, Default)]
pub struct BuildReport {
    pub out: PathBuf,
    pub entities: u64,
    pub headers: u64,
    pub templates: u64,
    pub template_headers: u64,
    pub chains: u64,
    pub preferences: u64,
    /// Data rows read, good and bad, over all files.
    pub rows_read: u64,
    pub invalid: RowErrors,
    pub max_invalid: u64,
    pub bytes_written: u64,
    /// Most bytes the build held in its tables (its own count, not the process's RSS).
    pub memory_used: u64,
    pub elapsed: Duration,
    /// Wall time per file read, then `writing`.
    pub phases: Vec<(&'static str, Duration)>,
}

impl std::fmt::Display for BuildReport {
    /// The summary `consentgate dlt build` prints.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = self;
        writeln!(f, "wrote {} ({} bytes) in {:.2} s", r.out.display(), r.bytes_written, r.elapsed.as_secs_f64())?;
        writeln!(f, "  rows read:    {}", r.rows_read)?;
        writeln!(f, "  entities:     {}", r.entities)?;
        writeln!(f, "  headers:      {}", r.headers)?;
        writeln!(f, "  templates:    {} ({} template-header pairs)", r.templates, r.template_headers)?;
        writeln!(f, "  chains:       {}", r.chains)?;
        writeln!(f, "  preferences:  {}", r.preferences)?;
        writeln!(f, "  tables held:  {:.1} MB", r.memory_used as f64 / 1e6)?;
        let phases: Vec<String> = r.phases.iter().map(|(p, d)| format!("{p} {:.2} s", d.as_secs_f64())).collect();
        write!(f, "  phases:       {}", phases.join(", "))?;
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
    /// A file could not be read or has a bad header / over-long record.
    #[error(transparent)]
    Source(SourceError),
    /// More bad rows than `max_invalid` across all files.
    #[error("more than {max} invalid rows (max_invalid){}", first_errors(.errors))]
    TooManyInvalid { max: u64, errors: RowErrors },
    /// The tables outgrew `--memory`.
    #[error(
        "{file}: stopped after {rows} rows: the build's tables would exceed --memory {budget} bytes \
         (about 110 bytes per template, 70 per header, 16 per entity, chain and preference)"
    )]
    Memory { file: String, rows: u64, budget: u64 },
    /// Writing the output or the temporary contents file failed.
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn first_errors(e: &RowErrors) -> String {
    e.first.iter().map(|r| format!("\n  {r}")).collect()
}

/// A header byte: ASCII letter, digit or `-` (the operator's type suffix).
pub(crate) fn header_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-'
}

/// The header index key of a name.
pub(crate) fn header_key(name: &str) -> u64 {
    xxh3_64(name.as_bytes())
}

/// A DLT id: 1 to 19 decimal digits, no leading zero.
fn parse_id(f: &[u8], field: &'static str) -> FieldResult<u64> {
    if f.is_empty() {
        return Err((field, "missing".into()));
    }
    if f.len() > 19 || !f.iter().all(u8::is_ascii_digit) || f[0] == b'0' {
        return Err((field, format!("`{}` is not a DLT id (1 to 19 digits, no leading zero)", lossy(f))));
    }
    Ok(f.iter().fold(0u64, |a, &d| a * 10 + u64::from(d - b'0')))
}

fn parse_status(f: &[u8]) -> FieldResult<Status> {
    Status::parse(f).ok_or_else(|| ("status", format!("`{}` is not active, inactive or blacklisted", lossy(f))))
}

fn text<'a>(f: &'a [u8], field: &'static str) -> FieldResult<&'a str> {
    std::str::from_utf8(f).map_err(|_| (field, "not UTF-8".into()))
}

/// A header name as a sortable key: its bytes zero-padded to 16, big-endian (byte order).
fn header_code(name: &[u8]) -> u128 {
    let mut b = [0u8; 16];
    b[..name.len()].copy_from_slice(name);
    u128::from_be_bytes(b)
}

/// Wraps a file so the build can stop reading it (`--memory`): the CSV reader sees an I/O
/// error.
struct Stoppable<'a, R> {
    inner: R,
    stop: &'a Cell<bool>,
}

impl<R: Read> Read for Stoppable<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.stop.get() {
            return Err(io::Error::other("memory budget exceeded"));
        }
        self.inner.read(buf)
    }
}

#[derive(Clone, Copy)]
struct HeaderRow {
    code: u128,
    len: u8,
    pe: u64,
    kind: HeaderType,
    status: Status,
}

/// Builds a registry file from the five exports. See the module docs.
pub fn build(opts: &BuildOptions) -> Result<BuildReport, BuildError> {
    let t0 = Instant::now();
    let budget = InvalidBudget::new(opts.max_invalid);
    let mut invalid = RowErrors::default();
    let mut phases = Vec::new();
    let mut sha = [[0u8; 32]; 5];
    let mut rows_read = 0u64;
    let stop = Cell::new(false);
    let limit = opts.memory.unwrap_or(u64::MAX);
    let mut memory_used = 0u64;

    // Reads one file through the shared CSV reader; row errors are collected, a fatal error
    // or the budget ends the build.
    let mut read = |path: &Path,
                    header: &[&'static str],
                    text_column: Option<TextColumn>,
                    slot: usize,
                    invalid: &mut RowErrors,
                    on_record: &mut dyn FnMut(&[&[u8]]) -> FieldResult<()>|
     -> Result<SourceSummary, BuildError> {
        let t = Instant::now();
        let name = path.display().to_string();
        let f =
            File::open(path).map_err(|source| BuildError::Source(SourceError::Io { file: name.clone(), source }))?;
        let input = Stoppable { inner: f, stop: &stop };
        let r = read_csv(input, &name, &[header], text_column, &budget, |_, _| {}, |f, _| on_record(f));
        let sum = match r {
            Ok(s) => s,
            Err(SourceError::TooManyInvalid { errors, .. }) => {
                invalid.merge(errors);
                return Err(BuildError::TooManyInvalid { max: opts.max_invalid, errors: std::mem::take(invalid) });
            }
            Err(SourceError::Io { .. }) if stop.get() => {
                return Err(BuildError::Memory { file: name, rows: 0, budget: limit });
            }
            Err(e) => return Err(BuildError::Source(e)),
        };
        invalid.merge(sum.errors.clone());
        sha[slot] = sum.sha256;
        rows_read += sum.rows + sum.errors.count;
        phases.push((["entities", "headers", "templates", "chains", "preferences"][slot], t.elapsed()));
        Ok(sum)
    };

    // entities.csv
    let mut entities: HashMap<u64, Status, foldhash::fast::RandomState> = HashMap::default();
    read(&opts.entities, &ENTITIES_HEADER, None, 0, &mut invalid, &mut |f: &[&[u8]]| {
        let pe = parse_id(f[0], "pe_id")?;
        let name = text(f[1], "name")?;
        if name.is_empty() || name.len() > MAX_NAME_BYTES || name.chars().any(char::is_control) {
            return Err(("name", format!("`{}`: 1 to {MAX_NAME_BYTES} bytes without control characters", lossy(f[1]))));
        }
        let status = parse_status(f[2])?;
        if entities.insert(pe, status).is_some() {
            return Err(("pe_id", format!("{pe} appears twice (an earlier row has it)")));
        }
        Ok(())
    })?;

    // headers.csv
    let mut headers: Vec<HeaderRow> = Vec::new();
    let mut seen_headers: HashSet<u128, foldhash::fast::RandomState> = HashSet::default();
    read(&opts.headers, &HEADERS_HEADER, None, 1, &mut invalid, &mut |f: &[&[u8]]| {
        let h = f[0];
        if h.is_empty() || h.len() > MAX_HEADER_BYTES || !h.iter().all(|&c| header_byte(c)) {
            return Err((
                "header",
                format!("`{}` is not 1 to {MAX_HEADER_BYTES} ASCII letters, digits or `-`", lossy(h)),
            ));
        }
        let pe = parse_id(f[1], "pe_id")?;
        if !entities.contains_key(&pe) {
            return Err(("pe_id", format!("{pe} is not in the entities file")));
        }
        let kind = HeaderType::parse(f[2]).ok_or_else(|| ("type", format!("`{}` is not P, S, T or G", lossy(f[2]))))?;
        let status = parse_status(f[3])?;
        let code = header_code(h);
        if !seen_headers.insert(code) {
            return Err(("header", format!("`{}` appears twice (an earlier row has it)", lossy(h))));
        }
        headers.push(HeaderRow { code, len: h.len() as u8, pe, kind, status });
        Ok(())
    })?;
    drop(seen_headers);
    headers.sort_unstable_by_key(|h| h.code);
    let header_of: HashMap<u128, u32, foldhash::fast::RandomState> =
        headers.iter().enumerate().map(|(i, h)| (h.code, i as u32)).collect();
    let fixed = |n: usize| n as u64 * 16;
    memory_used =
        memory_used.max(fixed(entities.capacity()) + headers.capacity() as u64 * 48 + header_of.capacity() as u64 * 24);

    // templates.csv: contents to a temporary file, fixed-size rows in memory.
    let out_name = opts.out.file_name().map_or_else(|| "registry".into(), |n| n.to_string_lossy().into_owned());
    let content_path = opts.out.with_file_name(format!(".{out_name}.content{}", std::process::id()));
    let _cleanup = RemoveOnDrop(content_path.clone());
    let io_out = |source| BuildError::Io { path: content_path.clone(), source };
    let mut content_out = BufWriter::with_capacity(1 << 20, File::create(&content_path).map_err(io_out)?);
    let mut content_len = 0u64;
    let mut content_err: Option<io::Error> = None;
    let mut records: Vec<u8> = Vec::new();
    let mut lists: Vec<u32> = Vec::new();
    let mut anchors: Vec<(u64, u64)> = Vec::new();
    let mut ids: Vec<(u64, u64)> = Vec::new();
    let mut groups: HashMap<u64, u64, foldhash::fast::RandomState> = HashMap::default();
    let mut seen_ids: HashSet<u64, foldhash::fast::RandomState> = HashSet::default();
    let mut rows = 0u64;
    let mut held = 0u64;
    let mut hdrs: Vec<u32> = Vec::with_capacity(8);
    let result = read(
        &opts.templates,
        &TEMPLATES_HEADER,
        Some(TextColumn { index: 5, line_breaks: true }),
        2,
        &mut invalid,
        &mut |f: &[&[u8]]| {
            let id = parse_id(f[0], "template_id")?;
            let pe = parse_id(f[1], "pe_id")?;
            if !entities.contains_key(&pe) {
                return Err(("pe_id", format!("{pe} is not in the entities file")));
            }
            hdrs.clear();
            for h in f[2].split(|&b| b == b';') {
                let h = crate::consent::source::trim(h);
                let idx = (!h.is_empty() && h.len() <= MAX_HEADER_BYTES)
                    .then(|| header_of.get(&header_code(h)))
                    .flatten()
                    .ok_or_else(|| ("headers", format!("`{}` is not in the headers file", lossy(h))))?;
                let owner = headers[*idx as usize].pe;
                if owner != pe {
                    return Err(("headers", format!("`{}` is registered by PE {owner}, not {pe}", lossy(h))));
                }
                if !hdrs.contains(idx) {
                    hdrs.push(*idx);
                }
            }
            if hdrs.len() > MAX_TEMPLATE_HEADERS {
                return Err(("headers", format!("{} headers, more than {MAX_TEMPLATE_HEADERS}", hdrs.len())));
            }
            let category = Category::parse(f[3]).ok_or_else(|| {
                (
                    "category",
                    format!(
                        "`{}` is not transactional, service_implicit, service_explicit or promotional",
                        lossy(f[3])
                    ),
                )
            })?;
            let cc = match (category.has_content_category(), f[4]) {
                (true, [d @ b'1'..=b'8']) => d - b'0',
                (true, c) => {
                    return Err((
                        "content_category",
                        format!("`{}`: a {} template needs 1 to 8", lossy(c), category.as_str()),
                    ))
                }
                (false, []) => 0,
                (false, c) => {
                    return Err((
                        "content_category",
                        format!("`{}`: a {} template has none (leave it empty)", lossy(c), category.as_str()),
                    ))
                }
            };
            let content = text(f[5], "content")?;
            let shape = check_content(content).map_err(|m| ("content", m))?;
            let status = parse_status(f[6])?;
            if !seen_ids.insert(id) {
                return Err(("template_id", format!("{id} appears twice (an earlier row has it)")));
            }
            // The row is good.
            let n = (records.len() / TEMPLATE_REC) as u64;
            if content_err.is_none() {
                if let Err(e) = content_out.write_all(content.as_bytes()) {
                    content_err = Some(e);
                }
            }
            let mut rec = [0u8; TEMPLATE_REC];
            rec[0..8].copy_from_slice(&id.to_le_bytes());
            rec[8..16].copy_from_slice(&pe.to_le_bytes());
            rec[16..24].copy_from_slice(&content_len.to_le_bytes());
            rec[24..28].copy_from_slice(&(content.len() as u32).to_le_bytes());
            rec[28..32].copy_from_slice(&(lists.len() as u32).to_le_bytes());
            rec[32] = hdrs.len() as u8;
            rec[33] = category as u8;
            rec[34] = cc;
            rec[35] = status as u8;
            rec[36] = shape.vars;
            rec[38..40].copy_from_slice(&shape.literal_bytes.to_le_bytes());
            records.extend_from_slice(&rec);
            content_len += content.len() as u64;
            ids.push((mix(id), n));
            for &h in &hdrs {
                lists.push(h);
                anchors.push((template_anchor(pe, h, content, shape), n | gram_filter(content, shape).unwrap_or(0)));
                let g = groups.entry(group_key(pe, h)).or_insert(0);
                *g = (*g | 1 << shape.prefix_rung | 1 << (8 + shape.suffix_rung)).wrapping_add(1 << 32);
            }
            rows += 1;
            if rows % 65_536 == 0 {
                held = records.capacity() as u64
                    + 4 * lists.capacity() as u64
                    + 16 * (anchors.capacity() + ids.capacity()) as u64
                    + 24 * groups.capacity() as u64
                    + 9 * seen_ids.capacity() as u64;
                if held > limit {
                    stop.set(true);
                }
            }
            Ok(())
        },
    );
    result.map_err(|e| match e {
        BuildError::Memory { file, budget, .. } => BuildError::Memory { file, rows, budget },
        e => e,
    })?;
    if let Some(e) = content_err {
        return Err(io_out(e));
    }
    content_out.flush().map_err(io_out)?;
    drop(content_out);
    drop(seen_ids);
    memory_used = memory_used.max(held);

    // chains.csv
    let mut chains: Vec<(u64, u64)> = Vec::new();
    if let Some(p) = &opts.chains {
        read(p, &CHAINS_HEADER, None, 3, &mut invalid, &mut |f: &[&[u8]]| {
            let pe = parse_id(f[0], "pe_id")?;
            if !entities.contains_key(&pe) {
                return Err(("pe_id", format!("{pe} is not in the entities file")));
            }
            let tm = parse_id(f[1], "tm_id")?;
            chains.push((mix(pe), tm));
            Ok(())
        })?;
    }
    chains.sort_unstable();
    chains.dedup();

    // preferences.csv: the latest registration of a number wins.
    let mut prefs: Vec<(u64, u64)> = Vec::new();
    if let Some(p) = &opts.preferences {
        let cc = opts.default_cc.as_str();
        read(p, &PREFERENCES_HEADER, None, 4, &mut invalid, &mut |f: &[&[u8]]| {
            let m = normalise(f[0], ton::UNKNOWN, 0, cc).map_err(|e| ("msisdn", format!("`{}`: {e}", lossy(f[0]))))?;
            let (full, mask) = parse_categories(f[1])?;
            let at = crate::time::parse_timestamp_ms(f[2])
                .filter(|&ms| (0..1 << 47).contains(&(ms / 1000)))
                .ok_or_else(|| {
                    (
                        "registered_at",
                        format!("`{}` is not an RFC 3339 timestamp or YYYY-MM-DD date after 1970", lossy(f[2])),
                    )
                })?
                / 1000;
            prefs.push((mix(m), (at as u64) << 16 | u64::from(full) << 8 | u64::from(mask)));
            Ok(())
        })?;
    }
    prefs.sort_unstable_by_key(|&(k, v)| (k, v >> 16));
    let mut w = 0;
    for r in 0..prefs.len() {
        if r + 1 < prefs.len() && prefs[r + 1].0 == prefs[r].0 {
            continue;
        }
        prefs[w] = prefs[r];
        w += 1;
    }
    prefs.truncate(w);

    // The indexes.
    let t = Instant::now();
    let mut ent: Vec<(u64, u64)> = entities.iter().map(|(&pe, &s)| (mix(pe), s as u64)).collect();
    ent.sort_unstable();
    let mut hdr_index: Vec<(u64, u64)> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            (header_key(std::str::from_utf8(&h.code.to_be_bytes()[..h.len as usize]).unwrap_or("")), i as u64)
        })
        .collect();
    hdr_index.sort_unstable();
    if hdr_index.windows(2).any(|w| w[0].0 == w[1].0) {
        // 2^-64 per pair: never seen, but a lookup relies on unique keys.
        return Err(BuildError::Io {
            path: opts.headers.clone(),
            source: io::Error::other("two header names share an xxh3-64 hash; rename one"),
        });
    }
    ids.sort_unstable();
    // Each bucket in record order, the filter bits ignored: the first template of a bucket
    // that matches wins, so ties between templates go to the earlier row of templates.csv.
    anchors.sort_unstable_by_key(|&(k, v)| (k, v & 0xFFFF_FFFF));
    let mut grp: Vec<(u64, u64)> = groups.into_iter().collect();
    grp.sort_unstable();
    memory_used = memory_used.max(
        records.len() as u64
            + 4 * lists.len() as u64
            + 16 * (anchors.len() + ids.len() + grp.len() + chains.len() + prefs.len()) as u64,
    );

    let mut header_bytes = Vec::with_capacity(HEADER_REC * headers.len());
    for h in &headers {
        let mut rec = [0u8; HEADER_REC];
        rec[0..8].copy_from_slice(&h.pe.to_le_bytes());
        rec[8..24].copy_from_slice(&h.code.to_be_bytes());
        rec[24] = h.len;
        rec[25] = h.kind as u8;
        rec[26] = h.status as u8;
        header_bytes.extend_from_slice(&rec);
    }
    let list_bytes: Vec<u8> = lists.iter().flat_map(|x| x.to_le_bytes()).collect();
    drop(lists);
    phases.push(("indexing", t.elapsed()));

    let t = Instant::now();
    let n_templates = (records.len() / TEMPLATE_REC) as u64;
    let mut h = Header {
        version: FORMAT_VERSION,
        built_at: crate::time::Clock::system().now().unix_s(),
        counts: [
            ent.len() as u64,
            headers.len() as u64,
            n_templates,
            anchors.len() as u64,
            chains.len() as u64,
            prefs.len() as u64,
        ],
        sha256: sha,
        ..Header::default()
    };
    let template_headers = anchors.len() as u64;
    let sections: Vec<Section_<'_>> = vec![
        Section_::Bytes(encode_index(&ent)),
        Section_::Borrowed(&header_bytes),
        Section_::Bytes(encode_index(&hdr_index)),
        Section_::Borrowed(&records),
        Section_::Borrowed(&list_bytes),
        Section_::Index(&ids),
        Section_::Bytes(encode_index(&grp)),
        Section_::Index(&anchors),
        Section_::Bytes(encode_index(&chains)),
        Section_::Bytes(encode_index(&prefs)),
        Section_::File(&content_path),
    ];
    let bytes_written = write_atomically(&opts.out, |f| {
        let mut bw = BufWriter::with_capacity(1 << 20, &mut *f);
        bw.write_all(&[0u8; HEADER_LEN])?;
        let mut hasher = BlockHasher::at(HEADER_LEN as u64);
        let mut pos = HEADER_LEN as u64;
        const PAD: [u8; SECTION_ALIGN as usize] = [0; SECTION_ALIGN as usize];
        for (i, s) in sections.iter().enumerate() {
            let start = pos;
            let mut emit = |chunk: &[u8]| -> io::Result<()> {
                hasher.update(chunk);
                pos += chunk.len() as u64;
                bw.write_all(chunk)
            };
            match s {
                Section_::Bytes(b) => emit(b)?,
                Section_::Borrowed(b) => emit(b)?,
                // The big indexes are encoded in pieces, not copied whole.
                Section_::Index(entries) => {
                    let enc = index_head(entries);
                    emit(&enc)?;
                    let mut buf = Vec::with_capacity(1 << 20);
                    for chunk in entries.chunks(1 << 16) {
                        buf.clear();
                        for &(k, v) in chunk {
                            buf.extend_from_slice(&k.to_le_bytes());
                            buf.extend_from_slice(&v.to_le_bytes());
                        }
                        emit(&buf)?;
                    }
                }
                Section_::File(p) => {
                    let mut r = BufReader::with_capacity(1 << 20, File::open(p)?);
                    let mut buf = vec![0u8; 1 << 20];
                    loop {
                        let n = r.read(&mut buf)?;
                        if n == 0 {
                            break;
                        }
                        emit(&buf[..n])?;
                    }
                }
            }
            h.sections[i] = Section { offset: start, len: pos - start };
            let pad = (pos.next_multiple_of(SECTION_ALIGN) - pos) as usize;
            hasher.update(&PAD[..pad]);
            bw.write_all(&PAD[..pad])?;
            pos += pad as u64;
        }
        if h.sections[S_CONTENT].len != content_len {
            return Err(io::Error::other("the contents file changed while the registry was written"));
        }
        bw.flush()?;
        drop(bw);
        h.payload_checksum = std::mem::take(&mut hasher).finish();
        f.seek(SeekFrom::Start(0))?;
        f.write_all(&h.encode())?;
        Ok(pos)
    })
    .map_err(|source| BuildError::Io { path: opts.out.clone(), source })?;
    phases.push(("writing", t.elapsed()));

    Ok(BuildReport {
        out: opts.out.clone(),
        entities: ent.len() as u64,
        headers: headers.len() as u64,
        templates: n_templates,
        template_headers,
        chains: chains.len() as u64,
        preferences: prefs.len() as u64,
        rows_read,
        invalid,
        max_invalid: opts.max_invalid,
        bytes_written,
        memory_used,
        elapsed: t0.elapsed(),
        phases,
    })
}

/// `all`, or `;`-separated categories 1–8: (fully blocked, bitmask).
fn parse_categories(f: &[u8]) -> FieldResult<(bool, u8)> {
    if f.eq_ignore_ascii_case(b"all") {
        return Ok((true, 0xff));
    }
    let mut mask = 0u8;
    for c in f.split(|&b| b == b';') {
        match crate::consent::source::trim(c) {
            [d @ b'1'..=b'8'] => mask |= 1 << (d - b'1'),
            other => {
                return Err((
                    "categories",
                    format!("`{}` is not `all` or a category 1 to 8 (`;` between several)", lossy(other)),
                ))
            }
        }
    }
    Ok((false, mask))
}

/// A section's bytes when writing.
enum Section_<'a> {
    Bytes(Vec<u8>),
    Borrowed(&'a [u8]),
    /// An index encoded as it is written.
    Index(&'a [(u64, u64)]),
    File(&'a Path),
}

/// Removes the temporary contents file however the build ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}
