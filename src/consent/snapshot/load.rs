//! Loading: reading a file (or bytes) into an aligned [`Image`], validating all of it while
//! it is read, and the errors a refused snapshot reports.

use std::fs::File;
use std::io;
use std::path::Path;
use std::thread;
use std::time::Instant;

use xxhash_rust::xxh3::xxh3_64;

use super::*;

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

impl Snapshot {
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
    pub(super) fn finish(
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
}

pub(crate) fn read_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
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
pub(super) const SPLIT_ABOVE: usize = 64 << 20;

/// Fills `out` (the whole file) block by block with `fill(block, file_offset)`, hashing each
/// block and validating the table slots in it right after it is filled, while it is in cache.
/// Large files are done as two halves on two threads. Measured at 100 M records (914 MB) on
/// the dev VM, per half: fill (page faults, zeroing, copy) ≈ 0.3 s, hash ≈ 0.04 s, table
/// checks ≈ 0.3 s. The checksum verdict comes first: a damaged payload is reported as such, not as
/// whatever it broke.
pub(super) fn load_blocks(
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
                let part = match image::as_words(&chunk[from - off..to - off]) {
                    Some(slots) => table::Scan::run(slots, (from - t_start) / 8, fields),
                    None => Err("table not 8-byte aligned in memory".to_owned()),
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

pub(super) type ScanResult = Result<Option<table::Scan>, String>;

/// Joins the scans of two adjacent slot ranges (either may be empty or failed).
pub(super) fn join_scans(a: ScanResult, b: ScanResult) -> ScanResult {
    match (a?, b?) {
        (Some(a), Some(b)) => a.join(b).map(Some),
        (a, b) => Ok(a.or(b)),
    }
}
