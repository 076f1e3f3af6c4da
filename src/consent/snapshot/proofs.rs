//! Consent proofs (architecture §4, Order No. 74 Art. 21): the `proof` column of `consent.csv`,
//! kept **outside** the snapshot — in a file next to it, `<snapshot>.proofs` — so the hot
//! table's ≤ 10 bytes per record stand and a gateway's memory does not grow with them. Nothing
//! on the message path reads it: the admin lookup, `snapshot lookup` and a complaint's evidence
//! open it per question and binary-search it with positioned reads (≈ 30 reads of 24 bytes at
//! 1 G proofs, from the page cache).
//!
//! What it holds: for every (msisdn, entity) of `consent.csv` with a grant row carrying a
//! proof, the proof of the latest such row and that row's `at`. Whether that grant still
//! stands is the snapshot's (and the live delta's) answer, shown beside it.
//!
//! # File format, version 1 (little-endian)
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 8 | magic `CGPROOF\x01` |
//! | 8 | 4 | version, 1 |
//! | 12 | 4 | header length, 64 |
//! | 16 | 8 | the snapshot's id (its payload checksum) this file belongs to |
//! | 24 | 8 | entry count N |
//! | 32 | 8 | offset of the records |
//! | 40 | 16 | reserved, zero |
//! | 56 | 8 | xxh3-64 of bytes 0..56 |
//! | 64 | 24 · N | entries sorted by (msisdn, entity): msisdn u64, at (Unix ms) i64, record offset u64 |
//! | … | | records: entity length u16, entity, proof length u16, proof (UTF-8) |
//!
//! A file whose snapshot id is not the serving snapshot's (a build in progress wrote the
//! snapshot but not yet this file, or an old file was left behind) answers
//! [`ProofLookup::Stale`], never another snapshot's proof.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::xxh3_64;

const MAGIC: [u8; 8] = *b"CGPROOF\x01";
const VERSION: u32 = 1;
const HEADER: u64 = 64;
const ENTRY: u64 = 24;

/// One proof row collected by the build.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProofRow {
    pub msisdn: u64,
    pub entity: Box<str>,
    /// The grant's `at`, Unix ms.
    pub at: i64,
    pub proof: Box<str>,
}

/// A proof on record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    pub proof: String,
    /// When the grant it proves was given, Unix ms.
    pub granted_at: i64,
}

/// What a lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProofLookup {
    Found(Proof),
    /// The file has no proof for the pair.
    None,
    /// No proofs file next to the snapshot (built without a proof column).
    NoFile,
    /// The file belongs to another snapshot.
    Stale,
}

/// `<snapshot>.proofs`.
pub fn path_for(snapshot: &Path) -> PathBuf {
    let mut p = snapshot.as_os_str().to_owned();
    p.push(".proofs");
    PathBuf::from(p)
}

/// Writes the proofs file for snapshot `snapshot_id` (temporary file, fsync, rename); with no
/// rows, removes a file left by an earlier build. Rows are sorted and, per pair, the latest
/// kept. The number of pairs written.
pub fn write(snapshot: &Path, snapshot_id: u64, mut rows: Vec<ProofRow>) -> io::Result<u64> {
    let path = path_for(snapshot);
    if rows.is_empty() {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(0),
        };
    }
    rows.sort_unstable_by(|a, b| (a.msisdn, &a.entity, a.at).cmp(&(b.msisdn, &b.entity, b.at)));
    // The latest per pair: the last of each run of equal (msisdn, entity).
    let mut kept: Vec<ProofRow> = Vec::with_capacity(rows.len());
    for r in rows {
        match kept.last_mut() {
            Some(last) if last.msisdn == r.msisdn && last.entity == r.entity => *last = r,
            _ => kept.push(r),
        }
    }
    let n = kept.len() as u64;
    let records_at = HEADER + ENTRY * n;
    let tmp = path.with_extension("proofs.tmp");
    let f = File::create(&tmp)?;
    let mut w = BufWriter::with_capacity(1 << 20, &f);
    let mut h = [0u8; HEADER as usize];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(HEADER as u32).to_le_bytes());
    h[16..24].copy_from_slice(&snapshot_id.to_le_bytes());
    h[24..32].copy_from_slice(&n.to_le_bytes());
    h[32..40].copy_from_slice(&records_at.to_le_bytes());
    let sum = xxh3_64(&h[..56]);
    h[56..64].copy_from_slice(&sum.to_le_bytes());
    w.write_all(&h)?;
    let mut off = records_at;
    for r in &kept {
        w.write_all(&r.msisdn.to_le_bytes())?;
        w.write_all(&r.at.to_le_bytes())?;
        w.write_all(&off.to_le_bytes())?;
        off += 4 + r.entity.len() as u64 + r.proof.len() as u64;
    }
    for r in &kept {
        w.write_all(&(r.entity.len() as u16).to_le_bytes())?;
        w.write_all(r.entity.as_bytes())?;
        w.write_all(&(r.proof.len() as u16).to_le_bytes())?;
        w.write_all(r.proof.as_bytes())?;
    }
    w.flush()?;
    drop(w);
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(n)
}

/// The proof of (msisdn, entity) in the proofs file of the snapshot at `snapshot` whose id is
/// `snapshot_id`.
pub fn lookup(snapshot: &Path, snapshot_id: u64, msisdn: u64, entity: &str) -> io::Result<ProofLookup> {
    let f = match File::open(path_for(snapshot)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ProofLookup::NoFile),
        Err(e) => return Err(e),
    };
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("proofs file: {what}"));
    let mut h = [0u8; HEADER as usize];
    f.read_exact_at(&mut h, 0)?;
    let u64_at = |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    if h[0..8] != MAGIC || u32::from_le_bytes(h[8..12].try_into().expect("4")) != VERSION {
        return Err(bad("not a version 1 proofs file"));
    }
    if u64_at(&h, 56) != xxh3_64(&h[..56]) {
        return Err(bad("header checksum mismatch"));
    }
    if u64_at(&h, 16) != snapshot_id {
        return Ok(ProofLookup::Stale);
    }
    let n = u64_at(&h, 24);
    let entry = |i: u64| -> io::Result<(u64, i64, u64)> {
        let mut e = [0u8; ENTRY as usize];
        f.read_exact_at(&mut e, HEADER + ENTRY * i)?;
        Ok((u64_at(&e, 0), u64_at(&e, 8) as i64, u64_at(&e, 16)))
    };
    // The first entry with this msisdn.
    let (mut lo, mut hi) = (0u64, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if entry(mid)?.0 < msisdn {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    let record = |off: u64| -> io::Result<(String, String)> {
        let mut len = [0u8; 2];
        f.read_exact_at(&mut len, off)?;
        let mut e = vec![0u8; u16::from_le_bytes(len) as usize];
        f.read_exact_at(&mut e, off + 2)?;
        let at = off + 2 + e.len() as u64;
        f.read_exact_at(&mut len, at)?;
        let mut p = vec![0u8; u16::from_le_bytes(len) as usize];
        f.read_exact_at(&mut p, at + 2)?;
        let s = |b: Vec<u8>| String::from_utf8(b).map_err(|_| bad("a record is not UTF-8"));
        Ok((s(e)?, s(p)?))
    };
    let mut i = lo;
    while i < n {
        let (m, at, off) = entry(i)?;
        if m != msisdn {
            break;
        }
        let (e, proof) = record(off)?;
        if e == entity {
            return Ok(ProofLookup::Found(Proof { proof, granted_at: at }));
        }
        i += 1;
    }
    Ok(ProofLookup::None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(msisdn: u64, entity: &str, at: i64, proof: &str) -> ProofRow {
        ProofRow { msisdn, entity: entity.into(), at, proof: proof.into() }
    }

    #[test]
    fn latest_per_pair_found_by_binary_search() {
        let dir = tempfile::tempdir().unwrap();
        let snap = dir.path().join("c.snap");
        let mut rows = Vec::new();
        for m in 0..1000u64 {
            rows.push(row(8613800000000 + m * 7, "acme", 10, &format!("p-{m}")));
        }
        rows.push(row(8613800000000, "acme", 20, "newer"));
        rows.push(row(8613800000000, "beta", 5, "beta-proof"));
        assert_eq!(write(&snap, 42, rows).unwrap(), 1001);
        let find = |m: u64, e: &str| lookup(&snap, 42, m, e).unwrap();
        assert_eq!(find(8613800000000, "acme"), ProofLookup::Found(Proof { proof: "newer".into(), granted_at: 20 }));
        assert_eq!(
            find(8613800000000, "beta"),
            ProofLookup::Found(Proof { proof: "beta-proof".into(), granted_at: 5 })
        );
        assert_eq!(
            find(8613800000000 + 7 * 999, "acme"),
            ProofLookup::Found(Proof { proof: "p-999".into(), granted_at: 10 })
        );
        assert_eq!(find(8613800000001, "acme"), ProofLookup::None);
        assert_eq!(find(8613800000000, "gamma"), ProofLookup::None);
        assert_eq!(lookup(&snap, 43, 8613800000000, "acme").unwrap(), ProofLookup::Stale);
        write(&snap, 44, Vec::new()).unwrap();
        assert_eq!(lookup(&snap, 44, 8613800000000, "acme").unwrap(), ProofLookup::NoFile);
    }
}
