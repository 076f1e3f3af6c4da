//! The bounded-memory build (`snapshot build --memory SIZE`): radix partitioning by the
//! table's own hash, so that a registry of a billion records compiles on a node that could
//! not hold its rows (16 bytes each while sorting) and its table at once.
//!
//! ```text
//!  CSV rows ──► part_of(msisdn) ──► K row files      (pass 1: while reading, 16 B/row on disk)
//!  each part: sort, keep latest, resolve ──► K key files (pass 2: one part's rows in memory)
//!  B = ⌈entries / 7⌉; each part: sort by (home, key), place ──► table section, streamed
//!                                                        (pass 3: one part's keys in memory)
//! ```
//!
//! * **Partition = hash range.** `part_of(m) = ⌊mix(m) · K / 2^64⌋` and the table's home is
//!   `⌊mix(m) · B / 2^64⌋` ([`table::home`]): both are monotone in `mix(m)`, so part `p`'s
//!   homes all come at or before part `p + 1`'s, and every row of one msisdn (its DNC
//!   registration and all its pairs) lands in one part — which is all that resolving needs.
//! * **The seam.** A bucket's home range can straddle two parts. Entries of the last home of a
//!   part are held back and placed with the next part, so each home's entries are still placed
//!   together in key order: the table is byte for byte the one [`super::table::place`] builds in
//!   memory (tested).
//! * **Memory.** Pass 2 holds one part's rows (16 B each) and their keys (8 B), pass 3 one
//!   part's keys; K is chosen from the input size so that is about half the budget. The write
//!   buffers of pass 1 are 64 KiB per part and source. **Disk**: the row files (16 B per row)
//!   next to the output, then the key files (8 B per entry), removed as they are used.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::compile::{EntityOrder, Keys, MergeSorted};
use super::table::{home, SLOTS};
use super::{BuildError, MAX_ENTRIES};

/// Most parts: pass 1 keeps 2 × K files open, within the common soft limit of 1024 open files.
/// A budget that would need more parts gets this many, and bigger parts than it asked for.
pub(super) const MAX_PARTS: u64 = 256;
/// Parts when the input size is unknown (a pipe): enough for tens of GB at a few GB of budget.
pub(super) const PARTS_UNKNOWN_SIZE: u64 = 64;
/// Write buffer per part file.
const PART_BUF: usize = 64 << 10;

/// How many parts keep one part's working set (rows 16 B + keys 8 B per row, with a CSV row
/// taken as 14 bytes, the shortest DNC line) within half of `memory` bytes.
pub(super) fn parts_for(input_bytes: u64, memory: u64) -> u64 {
    if input_bytes == 0 {
        return PARTS_UNKNOWN_SIZE;
    }
    let rows = input_bytes / 14 + 1;
    (rows * 24).div_ceil((memory / 2).max(1)).clamp(1, MAX_PARTS)
}

/// The part of `msisdn` among `k` (the same hash as the table's home).
#[inline]
pub(super) fn part_of(msisdn: u64, k: u64) -> usize {
    home(msisdn, k) as usize
}

/// A temporary directory next to the output, removed when dropped.
pub(super) struct Spill {
    pub(super) dir: PathBuf,
    pub(super) parts: u64,
}

impl Spill {
    /// Also removes what an earlier build of the same output left behind when it was killed
    /// (`.NAME.parts*` next to it: 16 bytes per row).
    pub(super) fn create(out: &Path, parts: u64) -> io::Result<Spill> {
        let name = out.file_name().map_or_else(|| "snapshot".into(), |n| n.to_string_lossy().into_owned());
        let prefix = format!(".{name}.parts");
        let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if let Ok(entries) = fs::read_dir(parent) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
        let dir = out.with_file_name(format!("{prefix}{}", std::process::id()));
        fs::create_dir_all(&dir)?;
        Ok(Spill { dir, parts: parts.clamp(1, MAX_PARTS) })
    }

    fn path(&self, what: &str, p: usize) -> PathBuf {
        self.dir.join(format!("{what}.{p}"))
    }

    /// Row writers for one source (`dnc` or `pairs`).
    pub(super) fn writers(&self, what: &'static str) -> io::Result<PartWriters> {
        let files = (0..self.parts as usize)
            .map(|p| File::create(self.path(what, p)).map(|f| BufWriter::with_capacity(PART_BUF, f)))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(PartWriters { files, error: None })
    }
}

impl Drop for Spill {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The part files of one source while reading. A write error is kept (the readers' row
/// callbacks cannot fail) and reported by [`PartWriters::finish`].
pub(super) struct PartWriters {
    files: Vec<BufWriter<File>>,
    error: Option<io::Error>,
}

impl PartWriters {
    #[inline]
    pub(super) fn push(&mut self, msisdn: u64, row: u128) {
        if self.error.is_none() {
            let k = self.files.len() as u64;
            if let Err(e) = self.files[part_of(msisdn, k)].write_all(&row.to_le_bytes()) {
                self.error = Some(e);
            }
        }
    }

    pub(super) fn finish(self) -> io::Result<()> {
        if let Some(e) = self.error {
            return Err(e);
        }
        for mut f in self.files {
            f.flush()?;
        }
        Ok(())
    }
}

/// Reads a file of little-endian values `width` bytes each and removes it.
fn read_values<T>(path: &Path, width: usize, from: impl Fn(&[u8]) -> T) -> io::Result<Vec<T>> {
    let f = File::open(path)?;
    let len = f.metadata()?.len() as usize;
    let mut v = Vec::with_capacity(len / width);
    let mut r = BufReader::with_capacity(1 << 20, f);
    let mut buf = vec![0u8; (1 << 20) / width * width];
    loop {
        let n = read_full(&mut r, &mut buf)?;
        if n % width != 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("{}: truncated", path.display())));
        }
        v.extend(buf[..n].chunks_exact(width).map(&from));
        if n < buf.len() {
            break;
        }
    }
    fs::remove_file(path)?;
    Ok(v)
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// What pass 2 found over all parts.
pub(super) struct Resolved {
    pub(super) dnc: u64,
    pub(super) pairs: u64,
    pub(super) counts: [u64; 3],
    pub(super) msisdn_bits: u32,
}

/// Pass 2: each part's rows sorted, resolved into table entries and written back as a key
/// file (sorted by key). Row files are removed as they are read.
pub(super) fn resolve_parts(spill: &Spill, names: &EntityOrder) -> Result<Resolved, BuildError> {
    let io_err = |source| BuildError::Io { path: spill.dir.clone(), source };
    let mut r = Resolved { dnc: 0, pairs: 0, counts: [0; 3], msisdn_bits: 1 };
    for p in 0..spill.parts as usize {
        let u128_of = |b: &[u8]| u128::from_le_bytes(b.try_into().expect("16 bytes"));
        let dnc = read_values(&spill.path("dnc", p), 16, u128_of).map_err(io_err)?;
        let pairs = read_values(&spill.path("pairs", p), 16, u128_of).map_err(io_err)?;
        let keys: Keys = names.keys(dnc, pairs, &mut || {})?;
        r.dnc += keys.dnc.len() as u64;
        r.pairs += keys.pairs.len() as u64;
        for (c, n) in r.counts.iter_mut().zip(keys.counts) {
            *c += n;
        }
        r.msisdn_bits = r.msisdn_bits.max(keys.msisdn_bits);
        let mut w = BufWriter::with_capacity(1 << 20, File::create(spill.path("keys", p)).map_err(io_err)?);
        for k in MergeSorted::new(&keys.dnc, &keys.pairs) {
            w.write_all(&k.to_le_bytes()).map_err(io_err)?;
        }
        w.flush().map_err(io_err)?;
    }
    let entries = r.dnc + r.pairs;
    if entries > MAX_ENTRIES {
        return Err(BuildError::TooManyKeys { what: "statements", count: entries, max: MAX_ENTRIES });
    }
    Ok(r)
}

/// Pass 3: the table section, part by part: each part's keys sorted by (home, key) and placed
/// as [`super::table::place`] would (each entry at the first free slot at or after its home bucket),
/// handed to `emit` in order, empty slots included. Returns the slot count.
pub(super) fn place_parts(
    spill: &Spill,
    shift: u32,
    buckets: u64,
    emit: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<u64> {
    static ZEROS: [u8; 1 << 16] = [0; 1 << 16];
    let zeros = |n: u64, emit: &mut dyn FnMut(&[u8]) -> io::Result<()>| -> io::Result<()> {
        let mut left = n * 8;
        while left > 0 {
            let k = left.min(ZEROS.len() as u64) as usize;
            emit(&ZEROS[..k])?;
            left -= k as u64;
        }
        Ok(())
    };
    let order = |k: u64| (home(k >> shift, buckets), k);
    let mut written = 0u64;
    let mut carry: Vec<u64> = Vec::new();
    let mut out: Vec<u8> = Vec::with_capacity(1 << 20);
    for p in 0..spill.parts as usize {
        let mut keys = read_values(&spill.path("keys", p), 8, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")))?;
        keys.append(&mut carry);
        keys.sort_unstable_by_key(|&k| order(k));
        // The seam: the last home's entries wait for the next part, which may hold more of it.
        let cut = match keys.last() {
            Some(&last) if p + 1 < spill.parts as usize => {
                let h = order(last).0;
                keys.partition_point(|&k| order(k).0 < h)
            }
            _ => keys.len(),
        };
        carry.extend_from_slice(&keys[cut..]);
        for &k in &keys[..cut] {
            let at = written.max(order(k).0 * SLOTS as u64);
            if at > written {
                emit(&out)?;
                out.clear();
                zeros(at - written, emit)?;
            }
            out.extend_from_slice(&k.to_le_bytes());
            written = at + 1;
            if out.len() >= 1 << 20 {
                emit(&out)?;
                out.clear();
            }
        }
    }
    emit(&out)?;
    let len = written.max(buckets * SLOTS as u64).next_multiple_of(SLOTS as u64);
    zeros(len - written, emit)?;
    Ok(len)
}
