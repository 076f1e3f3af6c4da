//! India DLT (TRAI TCCCPR 2018, architecture §11): the operator's DLT registry compiled into
//! one file, and the checks a commercial message goes through against it — entity, header,
//! content template, PE→TM chain, subscriber preferences.
//!
//! ```text
//!  entities.csv ─┐
//!  headers.csv ──┤                      ┌─► entity(pe) / header(h) / template(id)
//!  templates.csv ┼─► dlt build ─► .dlt ─► Registry ─► chain_declared(pe, tm) / preference(msisdn)
//!  chains.csv ───┤   (module build)       (loaded,   └─► match_text(pe, header, id?, text)
//!  preferences ──┘                         validated)
//! ```
//!
//! # Inputs
//!
//! Five RFC 4180 CSV exports read by the consent sources' reader (`consent::source`: the same
//! quoting rules, header check, `file:line: field: message` row errors and `--max-invalid`
//! budget); see `docs/src/reference/formats.md` for the columns. IDs (`pe_id`, `template_id`,
//! `tm_id`) are the DLT platforms' numeric ids: 1 to 19 decimal digits, no leading zero,
//! kept as u64. Headers are 1–16 bytes of ASCII letters, digits and `-`, case-sensitive.
//!
//! # Matching a text (`match_text`)
//!
//! A template's content is literal runs separated by the case-sensitive `{#var#}`; a text
//! matches when the runs appear exactly (bytes) and in order and each placeholder stands for 0
//! to 30 characters (Unicode scalar values: a Hindi value is counted in characters, not in
//! UTF-8 or UCS-2 bytes); k adjacent placeholders stand for up to 30·k. The one-template
//! matcher (module `template`) keeps every position a run may end at, so it never loses a
//! match to a greedy choice, and says on failure which run or placeholder failed.
//!
//! With a template id the lookup is one index probe and one match. Without one, the
//! registry finds the candidates **without scanning the PE's templates**: each (template,
//! header) pair is indexed under an *anchor*, a hash of (PE, header, the first p bytes of the
//! content's first literal run, the last s bytes of its last run), p the longest of 0, 4, 8,
//! 16, 32, 64, 128 that the first run covers and s the longest of 0, 4, 8, 16, 32, 64 the last
//! covers (0 when the content begins or ends with `{#var#}`). A matching text begins and ends
//! with those same bytes, so hashing its own first p and last s bytes finds the template.
//! Per (PE, header) the registry keeps which p and s occur (two 8-bit masks), so a text costs
//! one probe per (p, s) pair present — usually one or two, at most 42 — plus one full match
//! per candidate under the probed anchors: templates of the same PE and header whose first
//! and last runs share those bytes. The cost depends on how alike a PE's templates are at
//! both ends, not on how many it has; `dlt inspect` prints the largest anchor bucket.
//!
//! A bucket of more than four candidates is filtered first (format 2): each anchor entry
//! carries, above its record number, two 4-byte grams of its template's literal text (from
//! the longest of: the longest run between placeholders, the part of the first run past the
//! anchor's prefix, the part of the last run before its suffix; as bits of a 1 024-bit set;
//! bit 63 says the filter is there), and the text's 4-byte grams are hashed once into the
//! same set. A template whose two grams are not both in the text cannot match and is dropped
//! without reading its record or content; no template that matches is ever dropped (its
//! literal runs, grams included, are in the text). A text no template matches is matched
//! again without the filter, so the refusal names the same closest template and reason as a
//! full match would. The first active template that matches wins: longest prefix, then
//! longest suffix, then the earlier row of templates.csv (a bucket is in record order).
//!
//! # File format, version 2 (all integers little-endian; version 1, without the gram filter, is still read)
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 8 | magic `CGDLT\0\0\x01` |
//! | 8 | 4 | format version, `2` (`1`: no gram filter) |
//! | 12 | 4 | header length, `512` |
//! | 16 | 8 | build time, Unix seconds (i64) |
//! | 24 | 6 × 8 | counts: entities, headers, templates, (template, header) pairs, chains, preferences |
//! | 72 | 11 × 16 | sections, each (offset u64, length u64), in the order below |
//! | 248 | 5 × 32 | SHA-256 of entities, headers, templates, chains, preferences CSV |
//! | 408 | 88 | reserved, zero |
//! | 496 | 8 | payload checksum (as the consent snapshot's: xxh3-64 of the xxh3-64s of the payload cut at every 16 MiB of file offset); the registry's id |
//! | 504 | 8 | xxh3-64 of bytes `0 .. 504` |
//!
//! Sections start on 64-byte boundaries, zero padding between them; the file ends on one.
//! An *index* is `bits` u32, 0 u32, `count` u64, a directory of `2^bits + 1` u32 (the first
//! entry whose key's top `bits` bits are each value; the last is `count`), zero padding to 16
//! bytes, then `count` entries (key u64, value u64) sorted by key then value. A lookup reads
//! one directory word and scans the 2–4 entries of its slot.
//!
//! | # | section | content |
//! |---:|---|---|
//! | 0 | entities | index: `mix(pe_id)` → status |
//! | 1 | headers | 32-byte records sorted by name: pe_id u64, name (16 bytes, zero padded), name length u8, type u8, status u8, 5 zero bytes |
//! | 2 | header_index | index: xxh3-64(name) → header record number |
//! | 3 | templates | 40-byte records in input order: template_id u64, pe_id u64, content offset u64, content length u32, first header-list slot u32, header count u8, category u8, content category u8 (0 none), status u8, placeholders u8, 0 u8, literal bytes u16 |
//! | 4 | template_headers | u32 header record numbers, each template's run |
//! | 5 | template_ids | index: `mix(template_id)` → template record number |
//! | 6 | groups | index: hash(pe_id, header) → prefix mask u8, suffix mask u8 << 8, templates << 32 |
//! | 7 | anchors | index: anchor (above) → template record number (bits 0–31), gram filter (bits 32–51: two 10-bit grams; bit 63: present); one anchor's entries by record number |
//! | 8 | chains | index: `mix(pe_id)` → tm_id |
//! | 9 | preferences | index: `mix(msisdn)` → registered_at (Unix s) << 16, fully blocked << 8, categories bitmask (bit k−1 = category k) |
//! | 10 | content | UTF-8 template contents |
//!
//! `mix` is the splitmix64 finaliser, a bijection: id keys never collide. Status values:
//! 1 active, 2 inactive, 3 blacklisted; header types 1 P, 2 S, 3 T, 4 G; categories 1
//! transactional, 2 service_implicit, 3 service_explicit, 4 promotional.
//!
//! # Loading
//!
//! [`Registry::open`] reads the file into an aligned buffer (not a mapping, for the
//! consent snapshot's reason: an operator's `cp` over the file must not change it under
//! traffic), checks the header and the payload checksum, then every invariant a lookup relies
//! on: each index in order and in its slots, every record's fields and ranges, every
//! reference (header → PE, template → PE and headers of that PE, index values), the contents
//! as UTF-8. The builder writes a temporary file, fsyncs and renames it.
//!
//! # Modules
//!
//! `format` (header, index, records), `template` (content checks, anchors, the
//! one-template matcher), `build` ([`build`]: reading the CSVs, writing the file), `synth`
//! (the synthetic registry generator for benchmarks), `tests`.

mod build;
mod format;
pub mod synth;
mod template;

use std::fmt;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use build::{build, BuildError, BuildOptions, BuildReport};
pub use format::{FORMAT_VERSION, HEADER_LEN, MAGIC, MAX_HEADER_BYTES, OLDEST_FORMAT_VERSION};
pub use template::{MAX_CONTENT_BYTES, MAX_VARS, MAX_VAR_CHARS, VAR};

use crate::consent::snapshot::{read_at, BlockHasher, Image, CHECKSUM_BLOCK};
use format::*;
use template::{anchor_key, group_key, match_content, mix, TextGrams, PREFIX_RUNGS, SUFFIX_RUNGS};

// ---------------------------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------------------------

/// Registration status of an entity, header or template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Status {
    Active = 1,
    Inactive = 2,
    Blacklisted = 3,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Inactive => "inactive",
            Status::Blacklisted => "blacklisted",
        }
    }

    fn from_u8(b: u8) -> Option<Status> {
        match b {
            1 => Some(Status::Active),
            2 => Some(Status::Inactive),
            3 => Some(Status::Blacklisted),
            _ => None,
        }
    }

    pub(crate) fn parse(s: &[u8]) -> Option<Status> {
        [Status::Active, Status::Inactive, Status::Blacklisted]
            .into_iter()
            .find(|v| s.eq_ignore_ascii_case(v.as_str().as_bytes()))
    }
}

/// An entity's status (`entity(pe)`).
pub type EntityStatus = Status;

/// A header's type: the suffix the operator appends since 2025-05-06 (`-P`, `-S`, `-T`, `-G`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum HeaderType {
    Promotional = 1,
    Service = 2,
    Transactional = 3,
    Government = 4,
}

impl HeaderType {
    pub fn letter(self) -> char {
        match self {
            HeaderType::Promotional => 'P',
            HeaderType::Service => 'S',
            HeaderType::Transactional => 'T',
            HeaderType::Government => 'G',
        }
    }

    fn from_u8(b: u8) -> Option<HeaderType> {
        match b {
            1 => Some(HeaderType::Promotional),
            2 => Some(HeaderType::Service),
            3 => Some(HeaderType::Transactional),
            4 => Some(HeaderType::Government),
            _ => None,
        }
    }

    pub(crate) fn parse(s: &[u8]) -> Option<HeaderType> {
        match s {
            b"P" | b"p" => Some(HeaderType::Promotional),
            b"S" | b"s" => Some(HeaderType::Service),
            b"T" | b"t" => Some(HeaderType::Transactional),
            b"G" | b"g" => Some(HeaderType::Government),
            _ => None,
        }
    }
}

/// A template's category: which scrubbing steps follow the template match (design §11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Category {
    Transactional = 1,
    ServiceImplicit = 2,
    ServiceExplicit = 3,
    Promotional = 4,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Transactional => "transactional",
            Category::ServiceImplicit => "service_implicit",
            Category::ServiceExplicit => "service_explicit",
            Category::Promotional => "promotional",
        }
    }

    /// Whether the template carries a content category (1–8): promotional and
    /// service-explicit ones, which preferences apply to.
    pub fn has_content_category(self) -> bool {
        matches!(self, Category::ServiceExplicit | Category::Promotional)
    }

    fn from_u8(b: u8) -> Option<Category> {
        match b {
            1 => Some(Category::Transactional),
            2 => Some(Category::ServiceImplicit),
            3 => Some(Category::ServiceExplicit),
            4 => Some(Category::Promotional),
            _ => None,
        }
    }

    pub(crate) fn parse(s: &[u8]) -> Option<Category> {
        [Category::Transactional, Category::ServiceImplicit, Category::ServiceExplicit, Category::Promotional]
            .into_iter()
            .find(|v| s.eq_ignore_ascii_case(v.as_str().as_bytes()))
    }
}

/// A registered header (`header(name)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderInfo {
    /// The PE that registered it.
    pub pe: u64,
    pub kind: HeaderType,
    pub status: Status,
}

/// A registered template: a view into the loaded registry (decoded from its 40-byte record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Template<'a> {
    pub id: u64,
    pub pe: u64,
    pub category: Category,
    /// 1–8 for promotional and service-explicit templates.
    pub content_category: Option<u8>,
    pub status: Status,
    /// Number of `{#var#}` placeholders.
    pub vars: u8,
    /// The content as registered, placeholders included.
    pub content: &'a str,
    /// Record number (for [`Registry::template_headers`]).
    index: u32,
    /// Bytes of literal text.
    literal_bytes: u16,
    /// Where its header list starts, and its length.
    hdr_off: u32,
    hdr_count: u8,
}

/// A subscriber's registered preferences (`preference(msisdn)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preference {
    /// `all`: no commercial communication at all.
    pub fully_blocked: bool,
    /// Refused content categories: bit k−1 set = category k refused.
    pub blocked: u8,
    /// When the preference was registered, Unix seconds.
    pub registered_at: i64,
}

impl Preference {
    /// Whether a message of `content_category` (1–8) is refused by this preference.
    pub fn refuses(&self, content_category: u8) -> bool {
        self.fully_blocked || (1..=8).contains(&content_category) && self.blocked & (1 << (content_category - 1)) != 0
    }
}

/// Why a text does not match one template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TextFail {
    /// Literal run `part` (0 = the text before the first placeholder) is not where it must
    /// be; `at` is the character of the text where it was expected.
    #[error("the text differs from the template's fixed part {part} at character {at}")]
    Literal { part: u16, at: u32 },
    /// Placeholder `var` (1-based) would stand for `chars` characters, more than 30.
    #[error("placeholder {var} would be {chars} characters (at most {MAX_VAR_CHARS})")]
    VariableTooLong { var: u16, chars: u32 },
}

/// Why [`Registry::match_text`] refused a message. Each variant says which check failed,
/// with the template and PE ids involved; [`Mismatch::label`] is its stable name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    /// The header is not registered (headers are case-sensitive).
    #[error("header not registered")]
    UnknownHeader,
    /// The header belongs to another PE.
    #[error("header registered by PE {owner}, not this PE")]
    HeaderOfOtherPe { owner: u64 },
    /// With a template id: no template has it.
    #[error("template {template_id} not registered")]
    UnknownTemplate { template_id: u64 },
    /// With a template id: the template is another PE's.
    #[error("template {template_id} belongs to PE {owner}")]
    TemplateOfOtherPe { template_id: u64, owner: u64 },
    /// With a template id: the template is not registered for this header.
    #[error("template {template_id} is not registered for this header")]
    TemplateOfOtherHeader { template_id: u64 },
    /// The template (given, or the only one the text matches) is not active.
    #[error("template {template_id} is {}", .status.as_str())]
    TemplateInactive { template_id: u64, status: Status },
    /// With a template id: the text does not match it.
    #[error("text does not match template {template_id}: {fail}")]
    Text { template_id: u64, fail: TextFail },
    /// Without a template id: the PE has no template for this header.
    #[error("no template of this PE for this header")]
    NoTemplateForHeader,
    /// Without a template id: no template of the PE for this header matches. `candidates`:
    /// templates whose anchors the text shares (each matched in full); `closest`: the one
    /// that matched furthest, and why it failed.
    #[error("no template matches ({candidates} candidate(s) tried{})", closest_text(.closest))]
    NoMatch { candidates: u32, closest: Option<(u64, TextFail)> },
}

fn closest_text(c: &Option<(u64, TextFail)>) -> String {
    c.map_or_else(String::new, |(id, f)| format!("; closest template {id}: {f}"))
}

impl Mismatch {
    /// Stable label (metrics, decision logs).
    pub fn label(&self) -> &'static str {
        match self {
            Mismatch::UnknownHeader => "header_unknown",
            Mismatch::HeaderOfOtherPe { .. } => "header_other_pe",
            Mismatch::UnknownTemplate { .. } => "template_unknown",
            Mismatch::TemplateOfOtherPe { .. } => "template_other_pe",
            Mismatch::TemplateOfOtherHeader { .. } => "template_other_header",
            Mismatch::TemplateInactive { .. } => "template_inactive",
            Mismatch::Text { fail: TextFail::Literal { .. }, .. } => "template_literal_mismatch",
            Mismatch::Text { fail: TextFail::VariableTooLong { .. }, .. } => "template_variable_too_long",
            Mismatch::NoTemplateForHeader => "no_template_for_header",
            Mismatch::NoMatch { .. } => "template_not_matched",
        }
    }
}

/// Why a registry file was refused. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}: truncated: {len} bytes, {need} needed")]
    Truncated { path: String, len: u64, need: u64 },
    #[error("{path}: not a consentgate DLT registry (bad magic)")]
    BadMagic { path: String },
    #[error(
        "{path}: unsupported DLT registry format version {found} (this build reads {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION}); \
         rebuild with `consentgate dlt build`"
    )]
    UnsupportedVersion { path: String, found: u32 },
    #[error("{path}: header checksum mismatch")]
    HeaderChecksum { path: String },
    #[error("{path}: payload checksum mismatch (header {stored:016x}, computed {computed:016x})")]
    PayloadChecksum { path: String, stored: u64, computed: u64 },
    /// A structural problem: a section's sizes or order, a record's fields, a reference.
    #[error("{path}: {what}")]
    Invalid { path: String, what: String },
}

/// Facts about a loaded registry (`dlt inspect`).
#[derive(Debug, Clone, Default)]
pub struct RegistryInfo {
    pub path: Option<PathBuf>,
    pub format_version: u32,
    pub built_at: i64,
    pub load_duration: Duration,
    pub entities: u64,
    pub headers: u64,
    pub templates: u64,
    /// (template, header) pairs: the anchor index's entries.
    pub template_headers: u64,
    pub chains: u64,
    pub preferences: u64,
    /// Section lengths in bytes, in file order (`SECTION_NAMES`).
    pub sections: Vec<(&'static str, u64)>,
    pub sha256: [[u8; 32]; 5],
    pub checksum: u64,
    pub file_bytes: u64,
}

impl RegistryInfo {
    /// The payload checksum as 16 hex digits: the registry's id.
    pub fn id(&self) -> String {
        format!("{:016x}", self.checksum)
    }

    /// File bytes per template (everything included: entities, headers, preferences too).
    pub fn bytes_per_template(&self) -> f64 {
        self.file_bytes as f64 / self.templates.max(1) as f64
    }
}

impl fmt::Display for RegistryInfo {
    /// The report `consentgate dlt inspect` prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = self;
        writeln!(f, "{}", i.path.as_ref().map_or_else(|| "<memory>".into(), |p| p.display().to_string()))?;
        writeln!(f, "  id (payload xxh3):  {}", i.id())?;
        writeln!(f, "  format version:     {}", i.format_version)?;
        writeln!(f, "  built at (unix s):  {}", i.built_at)?;
        writeln!(f, "  entities:           {}", i.entities)?;
        writeln!(f, "  headers:            {}", i.headers)?;
        writeln!(f, "  templates:          {} ({} template-header pairs)", i.templates, i.template_headers)?;
        writeln!(f, "  chains (PE→TM):     {}", i.chains)?;
        writeln!(f, "  preferences:        {}", i.preferences)?;
        for (name, len) in &i.sections {
            writeln!(f, "  section {name:<17} {len} bytes")?;
        }
        let names = ["entities", "headers", "templates", "chains", "preferences"];
        for (n, d) in names.iter().zip(&i.sha256) {
            let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
            writeln!(f, "  {:<19} {}", format!("{n}.csv sha256:"), if *d == [0; 32] { "-".into() } else { hex })?;
        }
        writeln!(f, "  file bytes:         {} ({:.1} bytes/template)", i.file_bytes, i.bytes_per_template())?;
        write!(f, "  load + validate:    {:.1} ms", i.load_duration.as_secs_f64() * 1000.0)
    }
}

/// Buckets of more candidates than this are filtered by their grams before being matched.
const FILTER_FROM: usize = 4;

/// Sizes of the anchor buckets (`dlt inspect`): how many templates one probe may have to
/// match in full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AnchorStats {
    /// Distinct anchors.
    pub anchors: u64,
    /// Templates under the largest anchor.
    pub largest: u64,
    /// Template-header pairs under anchors shared by more than 8.
    pub in_buckets_over_8: u64,
    /// (PE, header) groups, and the most (prefix, suffix) probes one of them needs.
    pub groups: u64,
    pub most_probes: u32,
}

// ---------------------------------------------------------------------------------------------
// The loaded registry
// ---------------------------------------------------------------------------------------------

/// A validated, immutable DLT registry. Every lookup reads the loaded file in place: no
/// allocation, no lock (share it as `Arc<Registry>`, swapped whole on reload).
pub struct Registry {
    /// Section byte ranges in the image.
    sections: [(usize, usize); 11],
    info: RegistryInfo,
    /// Set once the content section is known to be UTF-8 (see `content_str`).
    loaded: bool,
    image: Image,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry").field("info", &self.info).finish_non_exhaustive()
    }
}

#[inline]
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}

#[inline]
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}

impl Registry {
    /// Reads and validates a registry file (module docs, "Loading").
    pub fn open(path: impl AsRef<Path>) -> Result<Registry, RegistryError> {
        let t0 = Instant::now();
        let path = path.as_ref();
        let name = path.display().to_string();
        let io_err = |source| RegistryError::Io { path: name.clone(), source };
        let file = File::open(path).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        let mut head = [0u8; HEADER_LEN];
        if len >= HEADER_LEN as u64 {
            read_at(&file, &mut head, 0).map_err(io_err)?;
        }
        let header = Header::check(&head, len, &name)?;
        let mut image = Image::zeroed(len as usize);
        {
            let bytes = image.bytes_mut();
            let mut hasher = BlockHasher::at(HEADER_LEN as u64);
            for (i, chunk) in bytes.chunks_mut(CHECKSUM_BLOCK as usize).enumerate() {
                let off = i as u64 * CHECKSUM_BLOCK;
                read_at(&file, chunk, off).map_err(io_err)?;
                hasher.update(if i == 0 { &chunk[HEADER_LEN.min(chunk.len())..] } else { chunk });
            }
            let computed = hasher.finish();
            if computed != header.payload_checksum {
                return Err(RegistryError::PayloadChecksum { path: name, stored: header.payload_checksum, computed });
            }
        }
        let mut r = Registry::finish(image, header, &name, t0)?;
        r.info.path = Some(path.to_owned());
        Ok(r)
    }

    /// Validates a registry held in memory (copied into an aligned buffer).
    pub fn from_bytes(bytes: &[u8], name: &str) -> Result<Registry, RegistryError> {
        let t0 = Instant::now();
        let header = Header::check(bytes, bytes.len() as u64, name)?;
        let mut hasher = BlockHasher::at(HEADER_LEN as u64);
        hasher.update(&bytes[HEADER_LEN..]);
        let computed = hasher.finish();
        if computed != header.payload_checksum {
            return Err(RegistryError::PayloadChecksum {
                path: name.into(),
                stored: header.payload_checksum,
                computed,
            });
        }
        let mut image = Image::zeroed(bytes.len());
        image.bytes_mut().copy_from_slice(bytes);
        Registry::finish(image, header, name, t0)
    }

    fn finish(image: Image, h: Header, name: &str, t0: Instant) -> Result<Registry, RegistryError> {
        let mut sections = [(0usize, 0usize); 11];
        for (s, hs) in sections.iter_mut().zip(&h.sections) {
            *s = (hs.offset as usize, (hs.offset + hs.len) as usize);
        }
        let info = RegistryInfo {
            path: None,
            format_version: h.version,
            built_at: h.built_at,
            load_duration: Duration::ZERO,
            entities: h.counts[0],
            headers: h.counts[1],
            templates: h.counts[2],
            template_headers: h.counts[3],
            chains: h.counts[4],
            preferences: h.counts[5],
            sections: SECTION_NAMES.iter().zip(&h.sections).map(|(n, s)| (*n, s.len)).collect(),
            sha256: h.sha256,
            checksum: h.payload_checksum,
            file_bytes: image.len as u64,
        };
        let mut r = Registry { sections, info, loaded: false, image };
        let invalid = |what: String| RegistryError::Invalid { path: name.to_owned(), what };
        std::str::from_utf8(r.section(S_CONTENT)).map_err(|e| invalid(format!("section content: not UTF-8: {e}")))?;
        // From here `content_str` relies on the section being UTF-8; `validate` checks each
        // record's range before it decodes the record.
        r.loaded = true;
        r.validate().map_err(invalid)?;
        r.info.load_duration = t0.elapsed();
        Ok(r)
    }

    #[inline]
    fn section(&self, s: usize) -> &[u8] {
        let (a, b) = self.sections[s];
        &self.image.bytes()[a..b]
    }

    #[inline]
    fn index(&self, s: usize) -> Index<'_> {
        // Parsed and checked at load: cannot fail afterwards.
        Index::parse(self.section(s)).expect("validated at load")
    }

    /// Every invariant a lookup relies on (module docs, "Loading").
    fn validate(&self) -> Result<(), String> {
        let i = &self.info;
        let at = |s: usize, what: String| format!("section {}: {what}", SECTION_NAMES[s]);
        let idx = |s: usize| Index::parse(self.section(s)).map_err(|e| at(s, e));
        let expect_len = |s: usize, got: usize, want: u64| {
            (got as u64 == want).then_some(()).ok_or_else(|| at(s, format!("{got} entries, the header says {want}")))
        };
        let content = self.section(S_CONTENT);

        let entities = idx(S_ENTITIES)?;
        expect_len(S_ENTITIES, entities.len(), i.entities)?;
        entities.check(true, |v| Status::from_u8(v as u8).is_some() && v < 256).map_err(|e| at(S_ENTITIES, e))?;

        let hb = self.section(S_HEADERS);
        if hb.len() as u64 != i.headers * HEADER_REC as u64 {
            return Err(at(S_HEADERS, format!("{} bytes for {} headers", hb.len(), i.headers)));
        }
        let mut prev: &[u8] = &[];
        for (n, rec) in hb.chunks_exact(HEADER_REC).enumerate() {
            let len = rec[24] as usize;
            let name = &rec[8..8 + len.min(MAX_HEADER_BYTES)];
            let bad = len == 0
                || len > MAX_HEADER_BYTES
                || !name.iter().all(|&c| build::header_byte(c))
                || rec[8 + len..24].iter().any(|&b| b != 0)
                || HeaderType::from_u8(rec[25]).is_none()
                || Status::from_u8(rec[26]).is_none()
                || rec[27..32] != [0; 5]
                || entities.get(mix(u64_at(rec, 0))).is_none()
                || (n > 0 && name <= prev);
            if bad {
                return Err(at(S_HEADERS, format!("record {n} invalid, out of order or of an unknown PE")));
            }
            prev = name;
        }
        let hidx = idx(S_HEADER_INDEX)?;
        expect_len(S_HEADER_INDEX, hidx.len(), i.headers)?;
        hidx.check(true, |v| v < i.headers).map_err(|e| at(S_HEADER_INDEX, e))?;
        for n in 0..hidx.len() {
            let (k, v) = hidx.entry(n);
            if build::header_key(self.header_name(v as u32)) != k {
                return Err(at(S_HEADER_INDEX, format!("entry {n} does not hash its header's name")));
            }
        }

        let tb = self.section(S_TEMPLATES);
        if tb.len() as u64 != i.templates * TEMPLATE_REC as u64 {
            return Err(at(S_TEMPLATES, format!("{} bytes for {} templates", tb.len(), i.templates)));
        }
        let lists = self.section(S_TEMPLATE_HEADERS);
        if lists.len() as u64 != 4 * i.template_headers {
            return Err(at(S_TEMPLATE_HEADERS, format!("{} bytes for {} pairs", lists.len(), i.template_headers)));
        }
        let boundary =
            |i: u64| i as usize == content.len() || content.get(i as usize).is_some_and(|&b| (b as i8) >= -64);
        let mut next_list = 0u64;
        for n in 0..i.templates as usize {
            let rec = &tb[TEMPLATE_REC * n..TEMPLATE_REC * (n + 1)];
            let (off, len) = (u64_at(rec, 16), u64::from(u32_at(rec, 24)));
            // The range first: `decode_template` relies on it.
            let ok = off.checked_add(len).is_some_and(|e| e <= content.len() as u64)
                && boundary(off)
                && boundary(off + len)
                && u64::from(u32_at(rec, 28)) == next_list
                && rec[32] > 0
                && rec[37] == 0;
            let Some(t) = (if ok { self.decode_template(n as u32) } else { None }) else {
                return Err(at(S_TEMPLATES, format!("record {n} invalid")));
            };
            if entities.get(mix(t.pe)).is_none() {
                return Err(at(S_TEMPLATES, format!("template {} of unknown PE {}", t.id, t.pe)));
            }
            next_list += u64::from(t.hdr_count);
            if next_list > i.template_headers {
                return Err(at(S_TEMPLATES, format!("record {n}: header list out of range")));
            }
            for h in self.template_header_ids(&t) {
                if u64::from(h) >= i.headers || u64_at(self.header_rec(h), 0) != t.pe {
                    return Err(at(S_TEMPLATE_HEADERS, format!("template {}: header {h} not of its PE", t.id)));
                }
            }
        }
        if next_list != i.template_headers {
            return Err(at(S_TEMPLATE_HEADERS, "lists do not cover the section".into()));
        }
        let ids = idx(S_TEMPLATE_IDS)?;
        expect_len(S_TEMPLATE_IDS, ids.len(), i.templates)?;
        ids.check(true, |v| v < i.templates).map_err(|e| at(S_TEMPLATE_IDS, e))?;
        for n in 0..ids.len() {
            let (k, v) = ids.entry(n);
            if mix(u64_at(tb, TEMPLATE_REC * v as usize)) != k {
                return Err(at(S_TEMPLATE_IDS, format!("entry {n} does not hash its template's id")));
            }
        }
        idx(S_GROUPS)?.check(true, |v| v & 0x7f != 0 && (v >> 8) & 0x3f != 0).map_err(|e| at(S_GROUPS, e))?;
        let anchors = idx(S_ANCHORS)?;
        expect_len(S_ANCHORS, anchors.len(), i.template_headers)?;
        // The record number below bit 32; above it (version 2) the optional gram filter: the
        // flag and two 10-bit grams. A bucket's entries in record order (the first template
        // that matches wins, so ties go to the earlier row of templates.csv).
        let filter_ok = |v: u64| {
            v >> 32 == 0
                || (i.format_version >= 2 && v & template::FILTER_FLAG != 0 && (v >> 32) & !0x8000_0000 < 1 << 20)
        };
        anchors
            .check_ordered(false, |v| v & 0xFFFF_FFFF, |v| v & 0xFFFF_FFFF < i.templates && filter_ok(v))
            .map_err(|e| at(S_ANCHORS, e))?;
        let chains = idx(S_CHAINS)?;
        expect_len(S_CHAINS, chains.len(), i.chains)?;
        chains.check(false, |_| true).map_err(|e| at(S_CHAINS, e))?;
        let prefs = idx(S_PREFERENCES)?;
        expect_len(S_PREFERENCES, prefs.len(), i.preferences)?;
        prefs.check(true, |v| (v >> 8) & 0xff <= 1).map_err(|e| at(S_PREFERENCES, e))?;
        Ok(())
    }

    /// Build and load facts.
    pub fn info(&self) -> &RegistryInfo {
        &self.info
    }

    // -----------------------------------------------------------------------------------------
    // Lookups
    // -----------------------------------------------------------------------------------------

    /// The entity's status, if `pe` is registered.
    #[inline]
    pub fn entity(&self, pe: u64) -> Option<EntityStatus> {
        self.index(S_ENTITIES).get(mix(pe)).and_then(|v| Status::from_u8(v as u8))
    }

    #[inline]
    fn header_rec(&self, h: u32) -> &[u8] {
        let b = self.section(S_HEADERS);
        &b[HEADER_REC * h as usize..HEADER_REC * (h as usize + 1)]
    }

    fn header_name(&self, h: u32) -> &str {
        let rec = self.header_rec(h);
        // ASCII, checked at load.
        std::str::from_utf8(&rec[8..8 + rec[24] as usize]).unwrap_or("")
    }

    /// The header's record number, if registered (exact, case-sensitive).
    #[inline]
    fn header_id(&self, name: &str) -> Option<u32> {
        if name.is_empty() || name.len() > MAX_HEADER_BYTES {
            return None;
        }
        let idx = self.index(S_HEADER_INDEX);
        let r = idx.range(build::header_key(name));
        r.map(|i| idx.entry(i).1 as u32).find(|&h| self.header_name(h) == name)
    }

    /// The header's PE, type and status, if registered (exact, case-sensitive).
    #[inline]
    pub fn header(&self, name: &str) -> Option<HeaderInfo> {
        let rec = self.header_rec(self.header_id(name)?);
        Some(HeaderInfo { pe: u64_at(rec, 0), kind: HeaderType::from_u8(rec[25])?, status: Status::from_u8(rec[26])? })
    }

    fn decode_template(&self, n: u32) -> Option<Template<'_>> {
        let tb = self.section(S_TEMPLATES);
        let rec = tb.get(TEMPLATE_REC * n as usize..TEMPLATE_REC * (n as usize + 1))?;
        let content = self.section(S_CONTENT);
        let (off, len) = (u64_at(rec, 16) as usize, u32_at(rec, 24) as usize);
        let category = Category::from_u8(rec[33])?;
        let cc = rec[34];
        let cc_ok = if category.has_content_category() { (1..=8).contains(&cc) } else { cc == 0 };
        if !cc_ok {
            return None;
        }
        Some(Template {
            id: u64_at(rec, 0),
            pe: u64_at(rec, 8),
            category,
            content_category: (cc != 0).then_some(cc),
            status: Status::from_u8(rec[35])?,
            vars: rec[36],
            content: self.content_str(content.get(off..off.checked_add(len)?)?)?,
            index: n,
            literal_bytes: u16::from_le_bytes([rec[38], rec[39]]),
            hdr_off: u32_at(rec, 28),
            hdr_count: rec[32],
        })
    }

    /// A template's content as text. After load (`loaded`) the content section is known to
    /// be UTF-8 and every record's range to start and end on character boundaries, so it is
    /// not validated again on every lookup (it was: ~100 ns per candidate, and most of the
    /// load time); before, during validation, it is.
    #[inline]
    #[allow(unsafe_code)]
    fn content_str<'a>(&self, b: &'a [u8]) -> Option<&'a str> {
        if !self.loaded {
            return std::str::from_utf8(b).ok();
        }
        if !b.is_empty() && (b[0] as i8) < -64 {
            // Not a character's first byte: cannot happen for a validated record.
            return None;
        }
        // SAFETY: `loaded` is set only after `validate` checked the whole content section
        // with `str::from_utf8` and that each record's range begins and ends on a character
        // boundary; every `b` passed here is such a range of the immutable image. A UTF-8
        // string cut at two character boundaries is UTF-8.
        Some(unsafe { std::str::from_utf8_unchecked(b) })
    }

    /// The template with this id.
    #[inline]
    pub fn template(&self, id: u64) -> Option<Template<'_>> {
        let n = self.index(S_TEMPLATE_IDS).get(mix(id))?;
        self.decode_template(n as u32)
    }

    fn template_header_ids<'a>(&'a self, t: &Template<'_>) -> impl Iterator<Item = u32> + 'a {
        let lists = self.section(S_TEMPLATE_HEADERS);
        let (a, n) = (t.hdr_off as usize, t.hdr_count as usize);
        (a..a + n).map(move |i| u32_at(lists, 4 * i))
    }

    /// The headers a template is registered for.
    pub fn template_headers<'a>(&'a self, t: &Template<'_>) -> impl Iterator<Item = &'a str> + 'a {
        self.template_header_ids(t).map(|h| self.header_name(h))
    }

    /// Every template, in record order (tools, tests, benchmarks).
    pub fn templates(&self) -> impl Iterator<Item = Template<'_>> + '_ {
        (0..self.info.templates as u32).filter_map(|n| self.decode_template(n))
    }

    /// Whether the PE declared the telemarketer `tm` in its delivery chain.
    #[inline]
    pub fn chain_declared(&self, pe: u64, tm: u64) -> bool {
        self.index(S_CHAINS).contains(mix(pe), tm)
    }

    /// Starts the load of the preference index slot [`Registry::preference`] reads for
    /// `msisdn` (the session prefetches the messages ahead in its read buffer).
    #[inline]
    pub fn prefetch_preference(&self, msisdn: u64) {
        self.index(S_PREFERENCES).prefetch(mix(msisdn));
    }

    /// The subscriber's preferences, if registered (`msisdn` in international form, e.g.
    /// 919812345678).
    #[inline]
    pub fn preference(&self, msisdn: u64) -> Option<Preference> {
        let v = self.index(S_PREFERENCES).get(mix(msisdn))?;
        Some(Preference { fully_blocked: (v >> 8) & 1 == 1, blocked: v as u8, registered_at: (v >> 16) as i64 })
    }

    // -----------------------------------------------------------------------------------------
    // The matcher
    // -----------------------------------------------------------------------------------------

    /// Matches a message against the PE's templates for `header` (module docs): with
    /// `template_id`, that template (registered for this PE and header, active, and the text
    /// matching it); without, the active template of this PE and header that the text
    /// matches, found through the anchor index. Does not check the entity's or the header's
    /// status (`entity`, `header`: the steps before this one).
    pub fn match_text(
        &self,
        pe: u64,
        header: &str,
        template_id: Option<u64>,
        text: &str,
    ) -> Result<Template<'_>, Mismatch> {
        let h = self.header_id(header).ok_or(Mismatch::UnknownHeader)?;
        let owner = u64_at(self.header_rec(h), 0);
        if owner != pe {
            return Err(Mismatch::HeaderOfOtherPe { owner });
        }
        if let Some(id) = template_id {
            let t = self.template(id).ok_or(Mismatch::UnknownTemplate { template_id: id })?;
            if t.pe != pe {
                return Err(Mismatch::TemplateOfOtherPe { template_id: id, owner: t.pe });
            }
            if !self.template_header_ids(&t).any(|x| x == h) {
                return Err(Mismatch::TemplateOfOtherHeader { template_id: id });
            }
            if t.status != Status::Active {
                return Err(Mismatch::TemplateInactive { template_id: id, status: t.status });
            }
            return match match_content(t.content, text) {
                Ok(()) => Ok(t),
                Err((fail, _)) => Err(Mismatch::Text { template_id: id, fail }),
            };
        }
        let group = self.index(S_GROUPS).get(group_key(pe, h)).ok_or(Mismatch::NoTemplateForHeader)?;
        match self.match_anchored(pe, h, group, text, true) {
            // Candidates the filter dropped cannot match, but one of them may be the closest
            // (a typo inside its grams) and decide the reason: a text no template matches is
            // matched again without the filter, so a refusal names what it always named.
            (Err(Mismatch::NoMatch { .. }), skipped) if skipped > 0 => self.match_anchored(pe, h, group, text, false).0,
            (r, _) => r,
        }
    }

    /// The anchor probes of [`Registry::match_text`] for a (PE, header) group: the first
    /// active template of the header that matches, in the order of the prefix and suffix
    /// rungs (longest first) and within a bucket of the rows of templates.csv; with `filter`,
    /// big buckets' candidates whose grams the text lacks are skipped (and counted).
    fn match_anchored(
        &self,
        pe: u64,
        h: u32,
        group: u64,
        text: &str,
        filter: bool,
    ) -> (Result<Template<'_>, Mismatch>, u32) {
        let (pmask, smask) = (group as u8, (group >> 8) as u8);
        let anchors = self.index(S_ANCHORS);
        let bytes = text.as_bytes();
        let (mut candidates, mut skipped) = (0u32, 0u32);
        let mut closest: Option<(u64, TextFail, usize)> = None;
        let mut inactive: Option<Template<'_>> = None;
        // The text's grams, hashed once the first big bucket needs them.
        let mut grams: Option<TextGrams> = None;
        for (pi, &p) in PREFIX_RUNGS.iter().enumerate().rev() {
            if pmask & (1 << pi) == 0 || p > bytes.len() {
                continue;
            }
            for (si, &s) in SUFFIX_RUNGS.iter().enumerate().rev() {
                if smask & (1 << si) == 0 || s > bytes.len() {
                    continue;
                }
                let key = anchor_key(pe, h, &bytes[..p], &bytes[bytes.len() - s..]);
                let range = anchors.range(key);
                // A big bucket (templates alike at both ends): drop the candidates whose two
                // grams the text lacks before reading their records.
                let big = filter && range.len() > FILTER_FROM;
                for e in range {
                    let v = anchors.entry(e).1;
                    if big && !grams.get_or_insert_with(|| TextGrams::of(bytes)).admits(v) {
                        skipped += 1;
                        continue;
                    }
                    let Some(t) = self.decode_template(v as u32) else { continue };
                    // Length bounds first: no need to read the content of a template the
                    // text cannot fit (4 bytes per character at most).
                    let lit = usize::from(t.literal_bytes);
                    if t.pe != pe || bytes.len() < lit || bytes.len() > lit + 4 * MAX_VAR_CHARS * usize::from(t.vars) {
                        continue;
                    }
                    candidates += 1;
                    match match_content(t.content, text) {
                        Ok(()) if t.status == Status::Active && self.template_header_ids(&t).any(|x| x == h) => {
                            return (Ok(t), skipped)
                        }
                        Ok(()) => {
                            inactive.get_or_insert(t);
                        }
                        Err((fail, progress)) => {
                            if closest.is_none_or(|c| progress > c.2) {
                                closest = Some((t.id, fail, progress));
                            }
                        }
                    }
                }
            }
        }
        if let Some(t) = inactive {
            return (Err(Mismatch::TemplateInactive { template_id: t.id, status: t.status }), skipped);
        }
        (Err(Mismatch::NoMatch { candidates, closest: closest.map(|(id, f, _)| (id, f)) }), skipped)
    }

    /// Whether `text` matches one template's `content` (the matcher of [`Registry::match_text`]
    /// without the index: tools, and the benchmark's baseline scan).
    pub fn matches(content: &str, text: &str) -> Result<(), TextFail> {
        match_content(content, text).map_err(|(f, _)| f)
    }

    /// The anchor buckets' sizes and the probes per group (`dlt inspect`; a scan of two
    /// indexes).
    pub fn anchor_stats(&self) -> AnchorStats {
        let mut s = AnchorStats::default();
        let a = self.index(S_ANCHORS);
        let mut run = 0u64;
        let end_run = |run: u64, s: &mut AnchorStats| {
            if run > 0 {
                s.anchors += 1;
                s.largest = s.largest.max(run);
                if run > 8 {
                    s.in_buckets_over_8 += run;
                }
            }
        };
        for i in 0..a.len() {
            if i > 0 && a.entry(i).0 != a.entry(i - 1).0 {
                end_run(run, &mut s);
                run = 0;
            }
            run += 1;
        }
        end_run(run, &mut s);
        let g = self.index(S_GROUPS);
        s.groups = g.len() as u64;
        for i in 0..g.len() {
            let v = g.entry(i).1;
            s.most_probes = s.most_probes.max((v as u8).count_ones() * ((v >> 8) as u8).count_ones());
        }
        s
    }
}

#[cfg(test)]
mod tests;
