//! Concatenated messages (architecture §3: "all parts share the first part's verdict"), two ways:
//!
//! * [`ConcatCache`] — when no step reads the text, the first part to arrive (any order) is
//!   decided and its verdict remembered for the others, which pass or fail with it unheld;
//! * [`Holds`] — when a step reads the text (content rules, commercial checks, the same-text
//!   cap), a part alone says too little: "优惠" may sit in part 2, the 【signature】 at the end of
//!   the last. The parts are held, their frames copied, until all have come or
//!   `policy.reassembly_timeout` passes; then the message is decided once on its whole text
//!   (or on what came) and every held part released with that verdict, in arrival order. A
//!   part that comes after its message was decided takes the verdict from the cache.
//!
//! Holding is bounded per session ([`HOLD_MAX_BYTES`], [`HOLD_MAX_MESSAGES`]); a part that
//! does not fit is refused at once with `throttled` (the sender retries it), never dropped.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

use super::engine::Message;
use crate::smpp::text;

use super::Decision;

/// How long the verdict of a concatenated message is remembered for its other parts.
pub const CONCAT_TTL_MS: u64 = 120_000;
/// Most concatenated messages remembered per session.
const CONCAT_MAX: usize = 16_384;
/// Most bytes of held frames per session.
pub const HOLD_MAX_BYTES: usize = 4 << 20;
/// Most concatenated messages held at once per session.
pub const HOLD_MAX_MESSAGES: usize = 4_096;

/// The key of a concatenated message: (source, destination, reference, total).
pub fn key(m: &Message, c: text::Concat) -> u64 {
    let mut h = foldhash::fast::FixedState::with_seed(0x5eed).build_hasher();
    h.write(m.source.addr);
    h.write_u8(0);
    h.write(m.destination.addr);
    h.write_u16(c.reference);
    h.write_u8(c.total);
    h.finish()
}

/// Decisions of concatenated messages in progress.
#[derive(Debug, Default)]
pub struct ConcatCache {
    map: HashMap<u64, ConcatEntry, foldhash::fast::FixedState>,
}

#[derive(Debug, Clone, Copy)]
struct ConcatEntry {
    decision: Decision,
    seen: u16,
    total: u8,
    /// When the message was decided, monotonic ms.
    at_ms: u64,
}

impl ConcatCache {
    /// The remembered decision for another part of `key` (marked [`Decision::from_cache`]);
    /// forgotten once all `total` parts have been seen.
    pub fn part(&mut self, key: u64) -> Option<Decision> {
        let e = self.map.get_mut(&key)?;
        e.seen += 1;
        let d = Decision { from_cache: true, ..e.decision };
        if e.seen >= u16::from(e.total) {
            self.map.remove(&key);
        }
        Some(d)
    }

    /// Remembers `d` for the parts of `key` still to come (`seen` of `total` are in).
    pub fn remember(&mut self, key: u64, d: Decision, seen: u16, total: u8, now_ms: u64) {
        if seen < u16::from(total) && self.map.len() < CONCAT_MAX {
            self.map.insert(key, ConcatEntry { decision: d, seen, total, at_ms: now_ms });
        }
    }

    pub fn contains(&self, key: u64) -> bool {
        self.map.contains_key(&key)
    }

    pub fn prune(&mut self, now_ms: u64) {
        if !self.map.is_empty() {
            self.map.retain(|_, e| now_ms.saturating_sub(e.at_ms) < CONCAT_TTL_MS);
        }
    }
}

/// One held part: the request as the ESME sent it.
#[derive(Debug)]
pub struct HeldPart {
    /// Segment number, 1..=total.
    pub part: u8,
    pub command_id: u32,
    /// The ESME's sequence number (the frame still carries it).
    pub seq: u32,
    pub frame: Vec<u8>,
}

/// The parts of one message, as they came.
#[derive(Debug)]
pub struct Held {
    pub key: u64,
    pub total: u8,
    /// When the first part came, monotonic ms.
    pub first_ms: u64,
    pub parts: Vec<HeldPart>,
    /// Segment numbers present (bit n-1 for part n ≤ 64; larger totals count distinct parts
    /// by scan).
    present: u64,
}

impl Held {
    /// Distinct segment numbers held.
    pub fn distinct(&self) -> usize {
        if self.total <= 64 {
            return self.present.count_ones() as usize;
        }
        let mut seen = [false; 256];
        self.parts.iter().filter(|p| !std::mem::replace(&mut seen[p.part as usize], true)).count()
    }

    pub fn complete(&self) -> bool {
        self.distinct() >= self.total as usize
    }

    /// The held parts in segment order, one per segment number (the first copy of a resent
    /// one): what the text is read from.
    pub fn in_order(&self) -> Vec<&HeldPart> {
        let mut v: Vec<&HeldPart> = Vec::with_capacity(self.parts.len());
        for p in &self.parts {
            if !v.iter().any(|q| q.part == p.part) {
                v.push(p);
            }
        }
        v.sort_by_key(|p| p.part);
        v
    }
}

/// What [`Holds::add`] did with a part.
#[derive(Debug)]
pub enum Hold {
    /// Kept; the message waits for its other parts.
    Waiting,
    /// The last part came: the whole message, to be decided and released.
    Complete(Held),
    /// No room: refuse this part now (`throttled`).
    Full,
}

/// The messages a session holds for their other parts.
#[derive(Debug, Default)]
pub struct Holds {
    map: HashMap<u64, Held, foldhash::fast::FixedState>,
    bytes: usize,
}

impl Holds {
    /// Holds one part of the message `key`.
    pub fn add(&mut self, key: u64, c: text::Concat, command_id: u32, seq: u32, frame: &[u8], now_ms: u64) -> Hold {
        let room = self.bytes + frame.len() <= HOLD_MAX_BYTES;
        if !room || (!self.map.contains_key(&key) && self.map.len() >= HOLD_MAX_MESSAGES) {
            return Hold::Full;
        }
        self.bytes += frame.len();
        let h = self.map.entry(key).or_insert_with(|| Held {
            key,
            total: c.total,
            first_ms: now_ms,
            parts: Vec::with_capacity(c.total as usize),
            present: 0,
        });
        if (1..=64).contains(&c.seq) {
            h.present |= 1 << (c.seq - 1);
        }
        h.parts.push(HeldPart { part: c.seq, command_id, seq, frame: frame.to_vec() });
        if h.complete() {
            return Hold::Complete(self.take(key).expect("just added"));
        }
        Hold::Waiting
    }

    fn take(&mut self, key: u64) -> Option<Held> {
        let h = self.map.remove(&key)?;
        self.bytes -= h.parts.iter().map(|p| p.frame.len()).sum::<usize>();
        Some(h)
    }

    /// Messages whose first part came `timeout_ms` or more ago, oldest first: decided on the
    /// parts that came.
    pub fn expired(&mut self, now_ms: u64, timeout_ms: u64) -> Vec<Held> {
        if self.map.is_empty() {
            return Vec::new();
        }
        let mut keys: Vec<(u64, u64)> = self
            .map
            .values()
            .filter(|h| now_ms.saturating_sub(h.first_ms) >= timeout_ms)
            .map(|h| (h.first_ms, h.key))
            .collect();
        keys.sort_unstable();
        keys.into_iter().filter_map(|(_, k)| self.take(k)).collect()
    }

    /// Everything held (the session is closing), oldest first.
    pub fn drain(&mut self) -> Vec<Held> {
        self.expired(u64::MAX, 0)
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Bytes of frames held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(seq: u8, total: u8) -> text::Concat {
        text::Concat { reference: 7, total, seq }
    }

    #[test]
    fn parts_in_any_order_complete_once() {
        let mut h = Holds::default();
        assert!(matches!(h.add(1, c(3, 3), 4, 30, b"ccc", 0), Hold::Waiting));
        assert!(matches!(h.add(1, c(1, 3), 4, 10, b"a", 1), Hold::Waiting));
        // A resent part 1 is kept (it needs its own answer) but does not complete the message.
        assert!(matches!(h.add(1, c(1, 3), 4, 11, b"a", 2), Hold::Waiting));
        assert_eq!(h.bytes(), 5);
        let Hold::Complete(m) = h.add(1, c(2, 3), 4, 20, b"bb", 3) else { panic!("complete") };
        assert_eq!(m.parts.iter().map(|p| p.seq).collect::<Vec<_>>(), [30, 10, 11, 20], "arrival order");
        assert_eq!(m.in_order().iter().map(|p| p.seq).collect::<Vec<_>>(), [10, 20, 30], "segment order");
        assert!(h.is_empty());
        assert_eq!(h.bytes(), 0);
    }

    #[test]
    fn timeouts_release_oldest_first_and_limits_refuse() {
        let mut h = Holds::default();
        h.add(2, c(1, 2), 4, 1, b"x", 100);
        h.add(1, c(1, 2), 4, 2, b"y", 50);
        assert!(h.expired(1_000, 2_000).is_empty());
        let out = h.expired(2_100, 2_000);
        assert_eq!(out.iter().map(|m| m.key).collect::<Vec<_>>(), [1, 2]);
        let big = vec![0u8; HOLD_MAX_BYTES];
        assert!(matches!(h.add(3, c(1, 2), 4, 3, &big, 0), Hold::Waiting));
        assert!(matches!(h.add(3, c(2, 2), 4, 4, b"z", 0), Hold::Full), "over the byte bound");
        assert_eq!(h.drain().len(), 1);
        assert_eq!(h.bytes(), 0);
    }
}
