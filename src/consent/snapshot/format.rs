//! The file format (module docs of [`super`]): magic, version, the 256-byte header and its
//! checks, the payload checksum, and the encodings of the entity and watermark sections.

use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use super::*;
use crate::consent::statement::NodeId;

#[cfg(not(target_endian = "little"))]
compile_error!("the consent snapshot format is little-endian and used in place; big-endian hosts are not supported");

/// First 8 bytes of every snapshot file.
pub const MAGIC: [u8; 8] = *b"CGSNAP\0\x01";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 3;
/// Header length (every format version so far).
pub const HEADER_LEN: usize = 256;

/// Sections in file order. The table is section 1 (its descriptor at header offset 136); the
/// watermarks, new in format 3, come last (descriptor at offset 184).
pub(super) const SECTION_NAMES: [&str; 3] = ["entities", "table", "watermarks"];
/// Sections start on cache-line boundaries (the table's buckets are cache lines).
pub(super) const SECTION_ALIGN: u64 = 64;
/// Unit of the payload checksum (module docs).
pub(crate) const CHECKSUM_BLOCK: u64 = 16 << 20;

/// The payload checksum (module docs): the payload cut at every multiple of
/// [`CHECKSUM_BLOCK`] bytes of *file* offset, each piece hashed with xxh3-64, and the
/// little-endian piece hashes hashed again. The pieces can be hashed in any order and on any
/// thread, as each is read.
#[derive(Default)]
pub(crate) struct BlockHasher {
    /// File offset of the next byte.
    pub(super) pos: u64,
    pub(super) cur: Xxh3,
    pub(super) sums: Vec<u8>,
}

impl BlockHasher {
    pub(crate) fn at(pos: u64) -> BlockHasher {
        BlockHasher { pos, cur: Xxh3::new(), sums: Vec::new() }
    }

    pub(crate) fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let room = (CHECKSUM_BLOCK - self.pos % CHECKSUM_BLOCK) as usize;
            let n = room.min(data.len());
            self.cur.update(&data[..n]);
            self.pos += n as u64;
            data = &data[n..];
            if self.pos % CHECKSUM_BLOCK == 0 {
                self.sums.extend_from_slice(&self.cur.digest().to_le_bytes());
                self.cur.reset();
            }
        }
    }

    pub(crate) fn finish(mut self) -> u64 {
        if self.pos % CHECKSUM_BLOCK != 0 {
            self.sums.extend_from_slice(&self.cur.digest().to_le_bytes());
        }
        xxh3_64(&self.sums)
    }
}

// ---------------------------------------------------------------------------------------------
// Header
// ---------------------------------------------------------------------------------------------

/// Header offsets of the section descriptors (offset u64, length u64), in file order.
pub(super) const SECTION_AT: [usize; 3] = [120, 136, 184];

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Section {
    pub(super) offset: u64,
    pub(super) len: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Header {
    pub(super) version: u32,
    pub(super) built_at: i64,
    pub(super) dnc_count: u64,
    pub(super) pair_count: u64,
    pub(super) entity_count: u32,
    pub(super) msisdn_bits: u8,
    pub(super) entity_bits: u8,
    pub(super) flags: u16,
    pub(super) dnc_sha256: [u8; 32],
    pub(super) consent_sha256: [u8; 32],
    /// In file order: [`SECTION_NAMES`].
    pub(super) sections: [Section; 3],
    pub(super) buckets: u64,
    /// Pairs per [`PairState`]: grant, revoked, dnc_newer.
    pub(super) states: [u64; 3],
    pub(super) payload_checksum: u64,
}

impl Header {
    pub(super) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        b[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
        b[16..24].copy_from_slice(&self.built_at.to_le_bytes());
        b[32..40].copy_from_slice(&self.dnc_count.to_le_bytes());
        b[40..48].copy_from_slice(&self.pair_count.to_le_bytes());
        b[48..52].copy_from_slice(&self.entity_count.to_le_bytes());
        b[52] = self.msisdn_bits;
        b[53] = self.entity_bits;
        b[54..56].copy_from_slice(&self.flags.to_le_bytes());
        b[56..88].copy_from_slice(&self.dnc_sha256);
        b[88..120].copy_from_slice(&self.consent_sha256);
        for (s, o) in self.sections.iter().zip(SECTION_AT) {
            b[o..o + 8].copy_from_slice(&s.offset.to_le_bytes());
            b[o + 8..o + 16].copy_from_slice(&s.len.to_le_bytes());
        }
        b[152..160].copy_from_slice(&self.buckets.to_le_bytes());
        for (i, n) in self.states.iter().enumerate() {
            b[160 + 8 * i..168 + 8 * i].copy_from_slice(&n.to_le_bytes());
        }
        b[240..248].copy_from_slice(&self.payload_checksum.to_le_bytes());
        let hx = xxh3_64(&b[..248]);
        b[248..256].copy_from_slice(&hx.to_le_bytes());
        b
    }

    /// Decodes the fixed fields (the caller has checked length, magic and version).
    pub(super) fn decode(b: &[u8]) -> Header {
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        let mut h = Header {
            version: u32_at(8),
            built_at: u64_at(16) as i64,
            dnc_count: u64_at(32),
            pair_count: u64_at(40),
            entity_count: u32_at(48),
            msisdn_bits: b[52],
            entity_bits: b[53],
            flags: u16::from_le_bytes([b[54], b[55]]),
            buckets: u64_at(152),
            states: [u64_at(160), u64_at(168), u64_at(176)],
            payload_checksum: u64_at(240),
            ..Header::default()
        };
        h.dnc_sha256.copy_from_slice(&b[56..88]);
        h.consent_sha256.copy_from_slice(&b[88..120]);
        for (s, o) in h.sections.iter_mut().zip(SECTION_AT) {
            *s = Section { offset: u64_at(o), len: u64_at(o + 8) };
        }
        h
    }

    /// Checks the header on its own: magic, version, header checksum, field ranges and the
    /// section layout against the file length.
    pub(super) fn check(b: &[u8], len: u64, name: &str) -> Result<Header, SnapshotError> {
        let invalid = |what: String| SnapshotError::Invalid { path: name.to_owned(), what };
        if len < HEADER_LEN as u64 || b.len() < HEADER_LEN {
            return Err(SnapshotError::Truncated { path: name.to_owned(), len, need: HEADER_LEN as u64 });
        }
        if b[0..8] != MAGIC {
            return Err(SnapshotError::BadMagic { path: name.to_owned() });
        }
        let version = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes"));
        if version != FORMAT_VERSION {
            return Err(SnapshotError::UnsupportedVersion { path: name.to_owned(), found: version });
        }
        if xxh3_64(&b[..248]) != u64::from_le_bytes(b[248..256].try_into().expect("8 bytes")) {
            return Err(SnapshotError::HeaderChecksum { path: name.to_owned() });
        }
        let hl = u32::from_le_bytes(b[12..16].try_into().expect("4 bytes"));
        if hl as usize != HEADER_LEN {
            return Err(invalid(format!("header length {hl}, expected {HEADER_LEN}")));
        }
        if b[24..32].iter().chain(&b[200..240]).any(|&x| x != 0) {
            return Err(invalid("reserved header bytes 24..32 or 200..240 not zero".into()));
        }
        let h = Header::decode(b);
        if h.flags != 0 {
            return Err(invalid(format!("unknown flags {:#06x}", h.flags)));
        }

        // Sections: in order, aligned, contiguous up to padding, ending at the file end.
        let mut pos = HEADER_LEN as u64;
        for (s, sname) in h.sections.iter().zip(SECTION_NAMES) {
            if s.offset != pos {
                return Err(invalid(format!("section {sname} at offset {}, expected {pos}", s.offset)));
            }
            pos = s
                .offset
                .checked_add(s.len)
                .and_then(|e| e.checked_add(SECTION_ALIGN - 1))
                .map(|e| e / SECTION_ALIGN * SECTION_ALIGN)
                .ok_or_else(|| invalid(format!("section {sname} length overflows")))?;
        }
        if pos > len {
            return Err(SnapshotError::Truncated { path: name.to_owned(), len, need: pos });
        }
        if pos < len {
            return Err(invalid(format!("{} bytes after the last section", len - pos)));
        }

        // Counts and widths.
        let entries = h.dnc_count.checked_add(h.pair_count).filter(|&n| n <= MAX_ENTRIES);
        let Some(entries) = entries else {
            return Err(invalid(format!(
                "statement counts {} / {} exceed the format limit",
                h.dnc_count, h.pair_count
            )));
        };
        if h.states.iter().try_fold(0u64, |a, &n| a.checked_add(n)) != Some(h.pair_count) {
            return Err(invalid(format!("pair states {:?} do not add up to {} pairs", h.states, h.pair_count)));
        }
        if h.buckets != table::bucket_count(entries) {
            return Err(invalid(format!(
                "{} buckets, expected {} for {entries} statements",
                h.buckets,
                table::bucket_count(entries)
            )));
        }
        let t = h.sections[1].len;
        if t % (8 * table::SLOTS as u64) != 0 || t / 8 < h.buckets * table::SLOTS as u64 || t / 8 > u64::from(u32::MAX)
        {
            return Err(invalid(format!("table section of {t} bytes does not fit {} buckets", h.buckets)));
        }
        let (mb, eb) = (u32::from(h.msisdn_bits), u32::from(h.entity_bits));
        let want_eb = (u32::BITS - h.entity_count.saturating_sub(1).leading_zeros()).max(1);
        if !(1..=50).contains(&mb) || eb != want_eb || mb + eb + 2 > 64 {
            return Err(invalid(format!(
                "bit widths msisdn {mb} / entity {eb} invalid for {} entities",
                h.entity_count
            )));
        }
        Ok(h)
    }
}

/// The watermarks section (format 3): `count` u32, then per origin node in strictly increasing
/// name order `seq` u64, `len` u8 and the node id's `len` ASCII bytes.
pub(super) fn encode_watermarks(w: &Watermarks) -> Vec<u8> {
    let mut b = Vec::with_capacity(4 + w.len() * 24);
    b.extend_from_slice(&(w.len() as u32).to_le_bytes());
    for (node, seq) in w.iter() {
        b.extend_from_slice(&seq.to_le_bytes());
        b.push(node.as_str().len() as u8);
        b.extend_from_slice(node.as_str().as_bytes());
    }
    b
}

pub(super) fn parse_watermarks(b: &[u8]) -> Result<Watermarks, String> {
    let bad = |what: &str| Err(format!("watermarks section: {what}"));
    if b.len() < 4 {
        return bad("shorter than its count");
    }
    let count = u32::from_le_bytes(b[..4].try_into().expect("4 bytes"));
    let mut w = Watermarks::new();
    let mut last: Option<NodeId> = None;
    let mut at = 4;
    for i in 0..count {
        if b.len() < at + 9 {
            return bad(&format!("entry {i} truncated"));
        }
        let seq = u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        let n = b[at + 8] as usize;
        let Some(name) = b.get(at + 9..at + 9 + n) else { return bad(&format!("entry {i} truncated")) };
        let node = NodeId::parse_bytes(name).map_err(|e| format!("watermarks section: entry {i}: {e}"))?;
        if last.as_ref().is_some_and(|l| *l >= node) {
            return bad(&format!("entry {i} ({node}): nodes not strictly increasing"));
        }
        if seq == 0 {
            return bad(&format!("entry {i} ({node}): seq 0"));
        }
        last = Some(node.clone());
        w.insert(node, seq);
        at += 9 + n;
    }
    if at != b.len() {
        return bad(&format!("{} bytes after the last entry", b.len() - at));
    }
    Ok(w)
}

/// The entity table: `count + 1` u32 end offsets, then the names; non-empty, UTF-8, strictly
/// increasing in byte order.
pub(super) fn parse_entities(ent: &[u8], count: u32) -> Result<Vec<Box<str>>, String> {
    let n_ent = count as usize;
    let table_len = 4 * (n_ent + 1);
    if ent.len() < table_len {
        return Err("entity table shorter than its offsets".into());
    }
    let (offs, blob) = ent.split_at(table_len);
    let off = |i: usize| u32::from_le_bytes(offs[4 * i..4 * i + 4].try_into().expect("4 bytes")) as usize;
    if off(0) != 0 || off(n_ent) != blob.len() {
        return Err("entity table offsets do not span the names".into());
    }
    let mut entities: Vec<Box<str>> = Vec::with_capacity(n_ent);
    for i in 0..n_ent {
        let (a, b) = (off(i), off(i + 1));
        if a >= b || b > blob.len() {
            return Err(format!("entity {i}: empty or out-of-range name"));
        }
        let s = std::str::from_utf8(&blob[a..b]).map_err(|_| format!("entity {i}: not UTF-8"))?;
        if entities.last().is_some_and(|p| **p >= *s) {
            return Err(format!("entity {i} ({s}): names not strictly increasing"));
        }
        entities.push(s.into());
    }
    Ok(entities)
}
