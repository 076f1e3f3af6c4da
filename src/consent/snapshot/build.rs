//! The file-driven build (`consentgate snapshot build`): CSV readers on two threads, the
//! journal statements, progress, the report, and writing the file (temporary file, fsync,
//! rename).

use std::fs::{self, File};
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Instant;

use super::*;
use crate::consent::source::{self, InvalidBudget, RowErrors, SourceError, SourceSummary};
use crate::consent::statement::{Statement, StatementKind};

/// Inputs of [`build`].
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// `dnc.csv`, if any.
    pub dnc: Option<PathBuf>,
    /// `consent.csv`, if any.
    pub consent: Option<PathBuf>,
    /// Journal statements to fold in (latest wins across CSV and journal). Their highest
    /// origin seq per origin node is stored as the snapshot's watermarks, so the gateway knows
    /// which live statements the snapshot already contains; they are also written to
    /// `<out>.live/` ([`super::live`]) for the next build's `--base`.
    pub journal_records: Vec<Statement>,
    /// Where to write the snapshot (via a temporary file in the same directory and a rename).
    pub out: PathBuf,
    /// Bad rows tolerated across all sources before the build fails.
    pub max_invalid: u64,
    /// `policy.default_country_code`, for national numbers in the CSVs.
    pub default_cc: String,
    /// Memory budget of a bounded-memory build (`--memory`): when the rows would not fit in
    /// about half of it, they are partitioned to temporary files next to `out` (module
    /// `external`). `None`: everything in memory (16 bytes per row, then the table).
    pub memory: Option<u64>,
    /// Force this many partitions (tests, tuning); overrides `memory`.
    pub parts: Option<u64>,
    /// `--require-proof`: a `consent.csv` grant without a proof is compiled as no grant (and
    /// counted in [`BuildReport::grants_without_proof`]).
    pub require_proof: bool,
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
            memory: None,
            parts: None,
            require_proof: false,
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
    /// Live statements kept in `<out>.live/` for the next build: each key's winner and each
    /// origin's newest ([`live::compact`]).
    pub live_kept: u64,
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
    /// Pairs with a consent proof written to `<out>.proofs` ([`proofs`]).
    pub proofs: u64,
    /// Grants dropped by [`BuildOptions::require_proof`].
    pub grants_without_proof: u64,
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
        if r.proofs > 0 {
            write!(f, "\n  proofs:       {} pair(s), in {}", r.proofs, proofs::path_for(&r.out).display())?;
        }
        if r.journal_records > 0 {
            write!(
                f,
                "\n  live:         {} of {} statement(s) kept in {} (the next build's --base; superseded ones dropped)",
                r.live_kept,
                r.journal_records,
                live::path_for(&r.out).display()
            )?;
        }
        if r.grants_without_proof > 0 {
            write!(f, "\n  grants without proof, compiled as no grant (--require-proof): {}", r.grants_without_proof)?;
        }
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

pub(super) fn first_errors(e: &RowErrors) -> String {
    let mut s = String::new();
    for r in &e.first {
        s.push_str("\n  ");
        s.push_str(&r.to_string());
    }
    s
}

/// Header facts that do not come from the statements.
#[derive(Debug, Clone, Default)]
pub(super) struct WriteMeta {
    pub(super) built_at: i64,
    pub(super) watermarks: Watermarks,
    pub(super) dnc_sha256: [u8; 32],
    pub(super) consent_sha256: [u8; 32],
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

    // The journal statements the builder took, kept in `<out>.live/` (a bad one skipped under
    // --max-invalid is not).
    let mut folded: Vec<&Statement> = Vec::with_capacity(opts.journal_records.len());
    for (i, st) in opts.journal_records.iter().enumerate() {
        if let Err(e) = b.add(st) {
            invalid.record("journal", i as u64 + 1, e.field(), e);
            if !budget.charge() {
                return Err(BuildError::TooManyInvalid { max: opts.max_invalid, errors: invalid });
            }
        } else {
            folded.push(st);
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

    // Bounded memory: rows go to partition files instead of memory (module `external`).
    let parts = opts.parts.or(opts.memory.map(|m| external::parts_for(total_bytes, m)).filter(|&k| k > 1));
    let spill = match parts {
        Some(k) => Some(external::Spill::create(&opts.out, k).map_err(|source| io_err(&opts.out, source))?),
        None => None,
    };
    let SnapshotBuilder { dnc, pairs, entities } = &mut b;
    let (mut dnc_sink, mut pairs_sink) = match &spill {
        Some(sp) => {
            let e = |source| io_err(&opts.out, source);
            let (mut d, mut p) = (sp.writers("dnc").map_err(e)?, sp.writers("pairs").map_err(e)?);
            // Journal statements added above go to the parts like every other row.
            for r in dnc.drain(..) {
                d.push((r >> 64) as u64, r);
            }
            for r in pairs.drain(..) {
                p.push((r >> 78) as u64, r);
            }
            (Rows::Spill(d), Rows::Spill(p))
        }
        None => (Rows::Memory(dnc), Rows::Memory(pairs)),
    };
    let mut proof_rows: Vec<proofs::ProofRow> = Vec::new();
    let without_proof = AtomicU64::new(0);
    let (dnc_res, consent_res) = thread::scope(|s| {
        let h_dnc = s.spawn(|| -> Result<Option<SourceSummary>, SourceError> {
            let Some((f, name, len)) = dnc_src else { return Ok(None) };
            let est = Estimate::new(len);
            let sum = source::read_dnc(
                f,
                &name,
                cc,
                &budget,
                |r| dnc_sink.push(&est, r.msisdn, pack_dnc(r.msisdn, r.registered_at)),
                |bytes, rows| {
                    est.observe(bytes, rows);
                    bytes_read[0].store(bytes, Ordering::Relaxed);
                    rows_read[0].store(rows, Ordering::Relaxed);
                },
            )?;
            // Sort while the (larger) consent file is still being read.
            if let Rows::Memory(v) = &mut dnc_sink {
                sort_compact_dnc(v);
            }
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
                    let grant = r.action == StatementKind::Grant;
                    if grant && r.proof.is_none() && opts.require_proof {
                        without_proof.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    if let (true, Some(p)) = (grant, r.proof) {
                        proof_rows.push(proofs::ProofRow {
                            msisdn: r.msisdn,
                            entity: r.entity.into(),
                            at: r.at,
                            proof: p.into(),
                        });
                    }
                    let id = entities.intern(r.entity);
                    pairs_sink.push(&est, r.msisdn, pack_pair(r.msisdn, id, r.at, !grant));
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
    let sinks = [dnc_sink, pairs_sink];
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
    // Source errors first: a bad file is the cause, a part file that could not be written after
    // it is not.
    for sink in sinks {
        if let Rows::Spill(w) = sink {
            w.finish().map_err(|source| io_err(&opts.out, source))?;
        }
    }
    let (dnc_sum, consent_sum) = (summaries[0].take(), summaries[1].take());
    phases.push((Phase::Reading, phase_start.elapsed()));
    phase_start = Instant::now();

    let rows_total = journal_good + rows_read.iter().map(|a| a.load(Ordering::Relaxed)).sum::<u64>();
    let mut last_phase = Phase::Sorting;
    let mut phase = |p: Phase| {
        if p != last_phase {
            phases.push((last_phase, phase_start.elapsed()));
            phase_start = Instant::now();
            last_phase = p;
        }
        progress(Progress { phase: p, rows: rows_total, bytes: total_bytes, total_bytes });
    };
    let meta = |dnc_sum: &Option<SourceSummary>, consent_sum: &Option<SourceSummary>| WriteMeta {
        built_at: unix_now(),
        watermarks: Watermarks::of(&opts.journal_records),
        dnc_sha256: dnc_sum.as_ref().map_or([0; 32], |s| s.sha256),
        consent_sha256: consent_sum.as_ref().map_or([0; 32], |s| s.sha256),
    };
    let (compiled, table_slots, bytes_written) = match &spill {
        None => {
            let compiled = b.compile(&mut |p, _| phase(p))?;
            phase(Phase::Writing);
            let meta = meta(&dnc_sum, &consent_sum);
            let written = write_file(&opts.out, &compiled, &meta)?;
            let slots = compiled.slots.len() as u64;
            (compiled, slots, written)
        }
        Some(sp) => {
            // Bounded memory: resolve part by part, then place and write the table streamed.
            phase(Phase::Sorting);
            let names = EntityOrder::of(std::mem::take(&mut b.entities));
            phase(Phase::Resolving);
            let r = external::resolve_parts(sp, &names)?;
            let buckets = table::bucket_count(r.dnc + r.pairs);
            let shift = names.shift();
            let counts = Counts { dnc: r.dnc, pairs: r.pairs, states: r.counts };
            let compiled = Compiled::of(names, counts, r.msisdn_bits, buckets, Vec::new());
            let meta = meta(&dnc_sum, &consent_sum);
            let mut slots = 0;
            // Placing and writing are one streamed pass here: timed as writing.
            phase(Phase::Writing);
            let written = write_file_with(&opts.out, &compiled, &meta, &mut |emit| {
                slots = external::place_parts(sp, shift, buckets, emit)?;
                Ok(())
            })?;
            (compiled, slots, written)
        }
    };
    // The proofs file names the snapshot it belongs to by its id (header offset 240).
    let snapshot_id = {
        let mut id = [0u8; 8];
        let f = File::open(&opts.out).map_err(|source| io_err(&opts.out, source))?;
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut id, 240).map_err(|source| io_err(&opts.out, source))?;
        u64::from_le_bytes(id)
    };
    let proofs_path = proofs::path_for(&opts.out);
    let proof_pairs =
        proofs::write(&opts.out, snapshot_id, proof_rows).map_err(|source| io_err(&proofs_path, source))?;
    let live_path = live::path_for(&opts.out);
    let mut live_kept = 0;
    if folded.is_empty() {
        if live_path.exists() {
            fs::remove_dir_all(&live_path).map_err(|source| io_err(&live_path, source))?;
        }
    } else {
        let kept = live::compact(folded.into_iter().cloned().collect());
        live_kept = kept.len() as u64;
        live::write(&opts.out, snapshot_id, &kept).map_err(|source| io_err(&live_path, source))?;
    }
    phases.push((last_phase, phase_start.elapsed()));
    progress(Progress { phase: Phase::Done, rows: rows_total, bytes: total_bytes, total_bytes });
    drop(spill);

    let nonzero = |d: [u8; 32]| (d != [0; 32]).then_some(d);
    let good = |s: &Option<SourceSummary>| s.as_ref().map_or(0, |s| s.rows);
    Ok(BuildReport {
        out: opts.out.clone(),
        dnc_rows: good(&dnc_sum),
        consent_rows: good(&consent_sum),
        journal_records: opts.journal_records.len() as u64,
        live_kept,
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
        table_slots,
        dnc_sha256: dnc_sum.as_ref().map(|s| s.sha256).and_then(nonzero),
        consent_sha256: consent_sum.as_ref().map(|s| s.sha256).and_then(nonzero),
        bytes_written,
        elapsed: t0.elapsed(),
        phases,
        proofs: proof_pairs,
        grants_without_proof: without_proof.load(Ordering::Relaxed),
    })
}

fn io_err(path: &Path, source: io::Error) -> BuildError {
    BuildError::Io { path: path.to_owned(), source }
}

/// Where the reading threads put rows: memory, or the partition files of a bounded-memory
/// build.
enum Rows<'a> {
    Memory(&'a mut Vec<u128>),
    Spill(external::PartWriters),
}

impl Rows<'_> {
    #[inline]
    fn push(&mut self, est: &Estimate, msisdn: u64, row: u128) {
        match self {
            Rows::Memory(v) => {
                est.reserve(v);
                v.push(row);
            }
            Rows::Spill(w) => w.push(msisdn, row),
        }
    }
}

/// After the first buffer, reserves room for the whole file from the bytes per row seen so
/// far: spares repeated doubling copies of multi-GB vectors.
pub(super) struct Estimate {
    pub(super) file_len: u64,
    /// Rows expected in the file; 0 until known, `u64::MAX` once reserved.
    pub(super) rows: std::cell::Cell<u64>,
}

impl Estimate {
    pub(super) fn new(file_len: u64) -> Estimate {
        Estimate { file_len, rows: std::cell::Cell::new(0) }
    }

    pub(super) fn observe(&self, bytes: u64, rows: u64) {
        if self.rows.get() == 0 && rows >= 1000 && bytes > 0 {
            self.rows.set((self.file_len as f64 * rows as f64 / bytes as f64 * 1.02) as u64 + 1);
        }
    }

    #[inline]
    pub(super) fn reserve(&self, v: &mut Vec<u128>) {
        let want = self.rows.get();
        if want != 0 && want != u64::MAX {
            v.reserve((want as usize).saturating_sub(v.len()));
            self.rows.set(u64::MAX);
        }
    }
}

/// Writes to a temporary file next to `out`, fsyncs it and renames it over `out`.
pub(super) fn write_file(out: &Path, c: &Compiled, meta: &WriteMeta) -> Result<u64, BuildError> {
    write_file_with(out, c, meta, &mut in_memory(c))
}

/// The table section of an in-memory build: `c.slots`, in 1 MiB pieces.
fn in_memory(c: &Compiled) -> impl FnMut(&mut Emit<'_>) -> io::Result<()> + '_ {
    |emit| {
        for chunk in u64_bytes(&c.slots).chunks(1 << 20) {
            emit(chunk)?;
        }
        Ok(())
    }
}

/// The bytes of the table section, handed to `emit` in order (the in-memory table, or the
/// bounded-memory build placing it partition by partition).
pub(super) type SlotWriter<'a> = dyn FnMut(&mut Emit<'_>) -> io::Result<()> + 'a;

/// Takes the next bytes of a section (hashing and writing them).
pub(super) type Emit<'a> = dyn FnMut(&[u8]) -> io::Result<()> + 'a;

/// [`write_file`] with the table section produced by `slots` (`c.slots` is then unused).
pub(super) fn write_file_with(
    out: &Path,
    c: &Compiled,
    meta: &WriteMeta,
    slots: &mut SlotWriter<'_>,
) -> Result<u64, BuildError> {
    write_atomically(out, |f| write_snapshot_with(f, c, meta, slots))
        .map_err(|source| BuildError::Io { path: out.to_owned(), source })
}

/// Writes a file the way every compiled file is written (the consent snapshot, the DLT
/// registry): `write` fills a temporary file next to `out` (`.NAME.tmpPID`), which is fsynced
/// and renamed over `out`, so a reader never sees half a file; on failure the temporary file
/// is removed. Returns what `write` returned (the length written).
pub(crate) fn write_atomically(out: &Path, write: impl FnOnce(&mut File) -> io::Result<u64>) -> io::Result<u64> {
    let file_name = out.file_name().map_or_else(|| "snapshot".into(), |n| n.to_string_lossy().into_owned());
    let tmp = out.with_file_name(format!(".{file_name}.tmp{}", std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        let len = write(&mut f)?;
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
    result
}

/// Serialises `c`: header placeholder, payload (hashed as it is written), then the header.
pub(super) fn write_snapshot<W: Write + Seek>(w: &mut W, c: &Compiled, meta: &WriteMeta) -> io::Result<u64> {
    write_snapshot_with(w, c, meta, &mut in_memory(c))
}

/// [`write_snapshot`] with the table section produced by `slots`; its length must be a
/// multiple of 64 bytes.
pub(super) fn write_snapshot_with<W: Write + Seek>(
    w: &mut W,
    c: &Compiled,
    meta: &WriteMeta,
    slots: &mut SlotWriter<'_>,
) -> io::Result<u64> {
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
    for i in 0..3 {
        let start = pos;
        let mut emit = |chunk: &[u8]| -> io::Result<()> {
            hasher.update(chunk);
            pos += chunk.len() as u64;
            bw.write_all(chunk)
        };
        match i {
            0 => emit(&ent)?,
            1 => slots(&mut emit)?,
            _ => emit(&marks)?,
        }
        h.sections[i] = Section { offset: start, len: pos - start };
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
pub(super) fn align(x: u64) -> u64 {
    x.next_multiple_of(SECTION_ALIGN)
}
