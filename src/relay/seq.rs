//! Sequence-number remapping for one leg (architecture §1, smpp-tech §2.2).
//!
//! consentgate allocates the sequence number of every request it writes on a leg and records
//! what the answer must be matched to *before* the write, so a response that arrives at once
//! is never lost. The table is a power-of-two ring indexed by `seq & mask`: an O(1) lookup
//! with no hashing. Capacity is at least twice the window, so a free slot is always found in a
//! few probes; a stored entry is matched on its full sequence number, so a stale or forged
//! response is recognised as unknown.

/// What a pending request on this leg is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Relayed from the other leg: the answer goes back there with `peer_seq`.
    Relayed,
    /// Originated by consentgate itself (enquire_link, unbind): the answer is consumed.
    Local,
}

/// One request awaiting its response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    /// Sequence number consentgate used on this leg.
    pub seq: u32,
    /// Sequence number of the request on the other leg (Relayed only).
    pub peer_seq: u32,
    pub command_id: u32,
    pub origin: Origin,
    /// When it was written, in the session's coarse clock (ms).
    pub sent_ms: u64,
}

/// Ring of pending requests for one leg.
#[derive(Debug)]
pub struct SeqTable {
    slots: Vec<Option<Pending>>,
    mask: u32,
    next: u32,
    len: usize,
    relayed: usize,
}

/// Largest sequence number allowed by SMPP (v3.4 §5.1.4: 0x00000001–0x7FFFFFFF).
const MAX_SEQ: u32 = 0x7FFF_FFFF;

impl SeqTable {
    /// A table for at least `capacity` pending requests (rounded up to a power of two ≥ 64).
    pub fn new(capacity: usize) -> SeqTable {
        let n = capacity.max(64).next_power_of_two();
        SeqTable { slots: vec![None; n], mask: (n - 1) as u32, next: 1, len: 0, relayed: 0 }
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Makes room for at least `capacity` pending requests (a window raised by a config
    /// reload), keeping every pending one under its sequence number. Never shrinks; `false`
    /// when two pending numbers would share a slot of the larger table (the table keeps its
    /// size; the next call, with fewer pending, may succeed).
    pub fn grow(&mut self, capacity: usize) -> bool {
        let n = capacity.max(64).next_power_of_two();
        if n <= self.slots.len() {
            return true;
        }
        let mut slots: Vec<Option<Pending>> = vec![None; n];
        let mask = (n - 1) as u32;
        for p in self.slots.iter().flatten() {
            let slot = &mut slots[(p.seq & mask) as usize];
            if slot.is_some() {
                return false;
            }
            *slot = Some(*p);
        }
        self.slots = slots;
        self.mask = mask;
        true
    }

    /// Pending requests of any origin.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Pending relayed requests (what the window counts).
    pub fn relayed(&self) -> usize {
        self.relayed
    }

    /// Records a request and returns the sequence number to write it with; `None` if full.
    #[inline]
    pub fn insert(&mut self, peer_seq: u32, command_id: u32, origin: Origin, now_ms: u64) -> Option<u32> {
        if self.len >= self.slots.len() {
            return None;
        }
        loop {
            let seq = self.next;
            self.next = if seq >= MAX_SEQ { 1 } else { seq + 1 };
            let slot = &mut self.slots[(seq & self.mask) as usize];
            if slot.is_none() {
                *slot = Some(Pending { seq, peer_seq, command_id, origin, sent_ms: now_ms });
                self.len += 1;
                if origin == Origin::Relayed {
                    self.relayed += 1;
                }
                return Some(seq);
            }
        }
    }

    /// Removes and returns the request answered by a response with `seq`.
    #[inline]
    pub fn take(&mut self, seq: u32) -> Option<Pending> {
        let slot = &mut self.slots[(seq & self.mask) as usize];
        match slot {
            Some(p) if p.seq == seq => {
                let p = *p;
                *slot = None;
                self.len -= 1;
                if p.origin == Origin::Relayed {
                    self.relayed -= 1;
                }
                Some(p)
            }
            _ => None,
        }
    }

    /// Whether a local request with this command id is pending (e.g. an enquire_link).
    pub fn has_local(&self, command_id: u32) -> bool {
        self.len > 0 && self.slots.iter().flatten().any(|p| p.origin == Origin::Local && p.command_id == command_id)
    }

    /// Removes and returns every request sent before `deadline_ms`.
    pub fn expire(&mut self, deadline_ms: u64, out: &mut Vec<Pending>) {
        if self.len == 0 {
            return;
        }
        for slot in self.slots.iter_mut() {
            if let Some(p) = slot {
                if p.sent_ms < deadline_ms {
                    out.push(*p);
                    *slot = None;
                }
            }
        }
        self.recount();
    }

    /// Removes and returns everything.
    pub fn drain(&mut self, out: &mut Vec<Pending>) {
        out.extend(self.slots.iter_mut().filter_map(Option::take));
        self.len = 0;
        self.relayed = 0;
    }

    fn recount(&mut self) {
        self.len = self.slots.iter().flatten().count();
        self.relayed = self.slots.iter().flatten().filter(|p| p.origin == Origin::Relayed).count();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_take_roundtrip_and_unknown_seq() {
        let mut t = SeqTable::new(4);
        let a = t.insert(100, 4, Origin::Relayed, 0).unwrap();
        let b = t.insert(101, 4, Origin::Relayed, 0).unwrap();
        assert_ne!(a, b);
        assert_eq!(t.relayed(), 2);
        assert_eq!(t.take(b).unwrap().peer_seq, 101);
        assert_eq!(t.take(b), None, "answered twice");
        assert_eq!(t.take(a + 64), None, "same slot, other seq");
        assert_eq!(t.take(a).unwrap().peer_seq, 100);
        assert!(t.is_empty());
    }

    #[test]
    fn fills_to_capacity_and_skips_busy_slots_across_wrap() {
        let mut t = SeqTable::new(64);
        t.next = MAX_SEQ - 10;
        let long_lived = t.insert(1, 4, Origin::Relayed, 0).unwrap();
        for i in 0..10_000u32 {
            let s = t.insert(i, 4, Origin::Relayed, 0).unwrap();
            assert!((1..=MAX_SEQ).contains(&s));
            assert_ne!(s, long_lived);
            assert_eq!(t.take(s).unwrap().peer_seq, i);
        }
        for i in 0..63 {
            t.insert(i, 4, Origin::Relayed, 0).unwrap();
        }
        assert_eq!(t.insert(0, 4, Origin::Relayed, 0), None);
        assert_eq!(t.take(long_lived).unwrap().peer_seq, 1);
    }

    #[test]
    fn expiry_returns_old_entries_only() {
        let mut t = SeqTable::new(8);
        let old = t.insert(1, 4, Origin::Relayed, 10).unwrap();
        let _new = t.insert(2, 0x15, Origin::Local, 500).unwrap();
        let mut out = Vec::new();
        t.expire(100, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].seq, old);
        assert_eq!((t.len(), t.relayed()), (1, 0));
        assert!(t.has_local(0x15));
    }
}
