//! The registry file format (module docs of [`super`]): the 512-byte header and its checks,
//! the sorted-key index every lookup goes through, and the fixed-size records.

use xxhash_rust::xxh3::xxh3_64;

use super::RegistryError;

#[cfg(not(target_endian = "little"))]
compile_error!("the DLT registry format is little-endian; big-endian hosts are not supported");

/// First 8 bytes of every registry file.
pub const MAGIC: [u8; 8] = *b"CGDLT\0\0\x01";
/// The format version this build writes. Version 2 added the gram filter to the anchor
/// entries (module docs of [`super`]); version 1 files (no filter) are still read.
pub const FORMAT_VERSION: u32 = 2;
/// The oldest format version this build reads.
pub const OLDEST_FORMAT_VERSION: u32 = 1;
/// Header length.
pub const HEADER_LEN: usize = 512;
/// Sections start on cache-line boundaries.
pub(crate) const SECTION_ALIGN: u64 = 64;

/// Sections in file order.
pub(crate) const SECTION_NAMES: [&str; 11] = [
    "entities",
    "headers",
    "header_index",
    "templates",
    "template_headers",
    "template_ids",
    "groups",
    "anchors",
    "chains",
    "preferences",
    "content",
];
pub(crate) const S_ENTITIES: usize = 0;
pub(crate) const S_HEADERS: usize = 1;
pub(crate) const S_HEADER_INDEX: usize = 2;
pub(crate) const S_TEMPLATES: usize = 3;
pub(crate) const S_TEMPLATE_HEADERS: usize = 4;
pub(crate) const S_TEMPLATE_IDS: usize = 5;
pub(crate) const S_GROUPS: usize = 6;
pub(crate) const S_ANCHORS: usize = 7;
pub(crate) const S_CHAINS: usize = 8;
pub(crate) const S_PREFERENCES: usize = 9;
pub(crate) const S_CONTENT: usize = 10;

/// A header record: pe_id u64, name (16 bytes, zero padded), name length, type, status, 5
/// reserved bytes.
pub(crate) const HEADER_REC: usize = 32;
/// Longest header (sender id) accepted, in bytes.
pub const MAX_HEADER_BYTES: usize = 16;
/// A template record (module docs).
pub(crate) const TEMPLATE_REC: usize = 40;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Section {
    pub(crate) offset: u64,
    pub(crate) len: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) version: u32,
    pub(crate) built_at: i64,
    /// [`COUNT_NAMES`].
    pub(crate) counts: [u64; 6],
    pub(crate) sections: [Section; 11],
    /// SHA-256 of the five inputs: entities, headers, templates, chains, preferences.
    pub(crate) sha256: [[u8; 32]; 5],
    pub(crate) payload_checksum: u64,
}

impl Header {
    pub(crate) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        b[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
        b[16..24].copy_from_slice(&self.built_at.to_le_bytes());
        for (i, c) in self.counts.iter().enumerate() {
            b[24 + 8 * i..32 + 8 * i].copy_from_slice(&c.to_le_bytes());
        }
        for (i, s) in self.sections.iter().enumerate() {
            let o = 72 + 16 * i;
            b[o..o + 8].copy_from_slice(&s.offset.to_le_bytes());
            b[o + 8..o + 16].copy_from_slice(&s.len.to_le_bytes());
        }
        for (i, d) in self.sha256.iter().enumerate() {
            b[248 + 32 * i..280 + 32 * i].copy_from_slice(d);
        }
        b[496..504].copy_from_slice(&self.payload_checksum.to_le_bytes());
        let hx = xxh3_64(&b[..504]);
        b[504..512].copy_from_slice(&hx.to_le_bytes());
        b
    }

    /// Checks the header on its own: magic, version, header checksum and the section layout
    /// against the file length.
    pub(crate) fn check(b: &[u8], len: u64, name: &str) -> Result<Header, RegistryError> {
        let invalid = |what: String| RegistryError::Invalid { path: name.to_owned(), what };
        if len < HEADER_LEN as u64 || b.len() < HEADER_LEN {
            return Err(RegistryError::Truncated { path: name.to_owned(), len, need: HEADER_LEN as u64 });
        }
        if b[0..8] != MAGIC {
            return Err(RegistryError::BadMagic { path: name.to_owned() });
        }
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        let version = u32_at(8);
        if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(RegistryError::UnsupportedVersion { path: name.to_owned(), found: version });
        }
        if xxh3_64(&b[..504]) != u64_at(504) {
            return Err(RegistryError::HeaderChecksum { path: name.to_owned() });
        }
        if u32_at(12) as usize != HEADER_LEN {
            return Err(invalid(format!("header length {}, expected {HEADER_LEN}", u32_at(12))));
        }
        if b[408..496].iter().any(|&x| x != 0) {
            return Err(invalid("reserved header bytes 408..496 not zero".into()));
        }
        let mut h = Header { version, built_at: u64_at(16) as i64, payload_checksum: u64_at(496), ..Header::default() };
        for (i, c) in h.counts.iter_mut().enumerate() {
            *c = u64_at(24 + 8 * i);
        }
        for (i, s) in h.sections.iter_mut().enumerate() {
            *s = Section { offset: u64_at(72 + 16 * i), len: u64_at(80 + 16 * i) };
        }
        for (i, d) in h.sha256.iter_mut().enumerate() {
            d.copy_from_slice(&b[248 + 32 * i..280 + 32 * i]);
        }
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
            return Err(RegistryError::Truncated { path: name.to_owned(), len, need: pos });
        }
        if pos < len {
            return Err(invalid(format!("{} bytes after the last section", len - pos)));
        }
        Ok(h)
    }
}

// ---------------------------------------------------------------------------------------------
// The index
// ---------------------------------------------------------------------------------------------

/// Entries per directory slot the builder aims at (2–4: one or two cache lines to scan).
const PER_SLOT: u64 = 2;

/// Directory bits for `count` entries.
pub(crate) fn dir_bits(count: u64) -> u32 {
    let slots = (count / PER_SLOT).max(1);
    (63 - slots.leading_zeros()).min(30)
}

#[inline]
fn slot(key: u64, bits: u32) -> usize {
    if bits == 0 {
        0
    } else {
        (key >> (64 - bits)) as usize
    }
}

/// Encodes an index over `entries` (sorted by key, then value): [`index_head`], then the
/// entries (key u64, value u64).
pub(crate) fn encode_index(entries: &[(u64, u64)]) -> Vec<u8> {
    let mut b = index_head(entries);
    b.reserve(16 * entries.len());
    for &(k, v) in entries {
        b.extend_from_slice(&k.to_le_bytes());
        b.extend_from_slice(&v.to_le_bytes());
    }
    b
}

/// The bytes of an index before its entries: `bits` u32, 0 u32, `count` u64, the directory
/// (`2^bits + 1` u32: the first entry of each slot of the keys' top bits, then `count`), zero
/// padding to 16 bytes.
pub(crate) fn index_head(entries: &[(u64, u64)]) -> Vec<u8> {
    let n = entries.len() as u64;
    let bits = dir_bits(n);
    let slots = 1usize << bits;
    let dir_len = (4 * (slots + 1)).next_multiple_of(16);
    let mut b = Vec::with_capacity(16 + dir_len);
    b.extend_from_slice(&bits.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&n.to_le_bytes());
    let mut i = 0usize;
    for s in 0..=slots {
        while i < entries.len() && slot(entries[i].0, bits) < s {
            i += 1;
        }
        b.extend_from_slice(&(i as u32).to_le_bytes());
    }
    b.resize(16 + dir_len, 0);
    b
}

/// A read view of an encoded index (validated by [`Index::check`] at load).
#[derive(Clone, Copy)]
pub(crate) struct Index<'a> {
    bits: u32,
    dir: &'a [u8],
    entries: &'a [u8],
}

impl<'a> Index<'a> {
    /// The view over a section; checks its sizes (not its order: [`Index::check`]).
    pub(crate) fn parse(b: &'a [u8]) -> Result<Index<'a>, String> {
        if b.len() < 16 {
            return Err("shorter than its header".into());
        }
        let bits = u32::from_le_bytes(b[0..4].try_into().expect("4 bytes"));
        let n = u64::from_le_bytes(b[8..16].try_into().expect("8 bytes"));
        if bits > 30 || bits != dir_bits(n) || b[4..8] != [0; 4] {
            return Err(format!("{bits} directory bits for {n} entries"));
        }
        let dir_len = (4 * ((1usize << bits) + 1)).next_multiple_of(16);
        let want = 16u64 + dir_len as u64 + 16 * n;
        if b.len() as u64 != want {
            return Err(format!("{} bytes, {want} expected for {n} entries", b.len()));
        }
        Ok(Index { bits, dir: &b[16..16 + 4 * ((1usize << bits) + 1)], entries: &b[16 + dir_len..] })
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len() / 16
    }

    #[inline]
    fn dir_at(&self, s: usize) -> usize {
        u32::from_le_bytes(self.dir[4 * s..4 * s + 4].try_into().expect("4 bytes")) as usize
    }

    #[inline]
    pub(crate) fn entry(&self, i: usize) -> (u64, u64) {
        let e = &self.entries[16 * i..16 * i + 16];
        (
            u64::from_le_bytes(e[..8].try_into().expect("8 bytes")),
            u64::from_le_bytes(e[8..].try_into().expect("8 bytes")),
        )
    }

    /// The entries with `key`, as a range of entry positions (empty if none).
    #[inline]
    pub(crate) fn range(&self, key: u64) -> std::ops::Range<usize> {
        let s = slot(key, self.bits);
        let (mut lo, hi) = (self.dir_at(s), self.dir_at(s + 1));
        while lo < hi && self.entry(lo).0 < key {
            lo += 1;
        }
        let mut end = lo;
        while end < hi && self.entry(end).0 == key {
            end += 1;
        }
        lo..end
    }

    /// Starts the load of `key`'s directory slot (a hint: the lookup that follows then waits
    /// for one miss, its entries, instead of two).
    #[inline]
    #[allow(unsafe_code)]
    pub(crate) fn prefetch(&self, key: u64) {
        let p = self.dir.as_ptr().wrapping_add(4 * slot(key, self.bits));
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `_mm_prefetch` is a hint: it never faults and reads nothing, whatever the
        // address; `wrapping_add` has no in-bounds precondition.
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>());
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = p;
    }

    /// The first value under `key`.
    #[inline]
    pub(crate) fn get(&self, key: u64) -> Option<u64> {
        let r = self.range(key);
        (!r.is_empty()).then(|| self.entry(r.start).1)
    }

    /// Whether (key, value) is present: a binary search among the key's values.
    pub(crate) fn contains(&self, key: u64, value: u64) -> bool {
        let r = self.range(key);
        let (mut lo, mut hi) = (r.start, r.end);
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.entry(mid).1.cmp(&value) {
                std::cmp::Ordering::Equal => return true,
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        false
    }

    /// Every invariant a lookup relies on: the directory spans the entries, each entry in
    /// its key's slot, (key, value) non-decreasing; `value_ok` checks each value.
    pub(crate) fn check(&self, unique_keys: bool, value_ok: impl Fn(u64) -> bool) -> Result<(), String> {
        self.check_ordered(unique_keys, |v| v, value_ok)
    }

    /// [`Index::check`] with the entries of one key in the order of `order(value)` (the
    /// anchors: by record number, whatever the filter bits above it).
    pub(crate) fn check_ordered(
        &self,
        unique_keys: bool,
        order: impl Fn(u64) -> u64,
        value_ok: impl Fn(u64) -> bool,
    ) -> Result<(), String> {
        let slots = 1usize << self.bits;
        if self.dir_at(0) != 0 || self.dir_at(slots) != self.len() {
            return Err("directory does not span the entries".into());
        }
        let mut prev: Option<(u64, u64)> = None;
        for s in 0..slots {
            let (lo, hi) = (self.dir_at(s), self.dir_at(s + 1));
            if lo > hi || hi > self.len() {
                return Err(format!("directory slot {s} out of order"));
            }
            for i in lo..hi {
                let e = self.entry(i);
                if slot(e.0, self.bits) != s {
                    return Err(format!("entry {i} outside its directory slot"));
                }
                if let Some(p) = prev {
                    if (e.0, order(e.1)) < (p.0, order(p.1)) || (unique_keys && e.0 == p.0) {
                        return Err(format!("entry {i} out of order or repeated"));
                    }
                }
                if !value_ok(e.1) {
                    return Err(format!("entry {i}: value {:#x} out of range", e.1));
                }
                prev = Some(e);
            }
        }
        Ok(())
    }
}
