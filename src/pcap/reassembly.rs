//! TCP reassembly: one direction's segments delivered in sequence-number order.

use std::collections::BTreeMap;

use super::link::Segment;
use super::tcp_flag::SYN;
use super::Damage;

/// Out-of-order bytes held per direction before the hole is declared a gap.
const MAX_PENDING_BYTES: usize = 4 * 1024 * 1024;

/// One TCP direction: in-order delivery by sequence number.
#[derive(Default)]
pub(super) struct Reasm {
    /// Next expected sequence number (None until the SYN or the first data segment).
    next: Option<u32>,
    /// Unwrapped stream offset of `next`.
    next_abs: u64,
    /// Out-of-order segments by unwrapped offset.
    pending: BTreeMap<u64, (u64, Vec<u8>)>,
    pending_bytes: usize,
    /// A SYN was seen (the stream start is known).
    syn: bool,
}

/// What reassembly hands to the SMPP layer.
pub(super) enum Chunk<'a> {
    Data(u64, &'a [u8]),
    Gap,
}

impl Reasm {
    /// Feeds a segment; delivers in-order data (and gaps) to `out`.
    pub(super) fn segment(&mut self, seg: &Segment<'_>, ts: u64, dmg: &mut Damage, out: &mut dyn FnMut(Chunk<'_>)) {
        if seg.flags & SYN != 0 {
            if self.next.is_none() {
                self.next = Some(seg.seq.wrapping_add(1));
                self.syn = true;
            }
            if seg.payload.is_empty() {
                return;
            }
        }
        if seg.payload.is_empty() {
            return;
        }
        let next = *self.next.get_or_insert(seg.seq);
        let rel = seg.seq.wrapping_sub(next) as i32 as i64;
        let len = seg.payload.len() as i64;
        if rel + len <= 0 {
            dmg.retransmissions += 1;
            return;
        }
        if rel > 0 {
            dmg.out_of_order += 1;
            let at = self.next_abs + rel as u64;
            let keep = match self.pending.get(&at) {
                Some((_, v)) => v.len() < seg.payload.len(),
                None => true,
            };
            if keep {
                if let Some((_, old)) = self.pending.insert(at, (ts, seg.payload.to_vec())) {
                    self.pending_bytes -= old.len();
                }
                self.pending_bytes += seg.payload.len();
            } else {
                dmg.retransmissions += 1;
            }
            if self.pending_bytes > MAX_PENDING_BYTES {
                self.skip_hole(dmg, out);
            }
            return;
        }
        let data = if rel < 0 {
            dmg.overlaps += 1;
            &seg.payload[(-rel) as usize..]
        } else {
            seg.payload
        };
        self.deliver(ts, data, out);
        if seg.real_len > seg.payload.len() {
            // Cut short by the snaplen: the rest of this segment was never captured.
            self.cut((seg.real_len - seg.payload.len()) as u32, dmg, out);
        }
        self.drain(dmg, out);
    }

    fn deliver(&mut self, ts: u64, data: &[u8], out: &mut dyn FnMut(Chunk<'_>)) {
        if let Some(n) = self.next.as_mut() {
            *n = n.wrapping_add(data.len() as u32);
        }
        self.next_abs += data.len() as u64;
        out(Chunk::Data(ts, data));
    }

    /// Delivers held segments that have become contiguous.
    fn drain(&mut self, dmg: &mut Damage, out: &mut dyn FnMut(Chunk<'_>)) {
        while let Some(entry) = self.pending.first_entry() {
            let at = *entry.key();
            if at > self.next_abs {
                break;
            }
            let (ts, v) = entry.remove();
            self.pending_bytes -= v.len();
            let skip = (self.next_abs - at) as usize;
            if skip >= v.len() {
                dmg.retransmissions += 1;
                continue;
            }
            if skip > 0 {
                dmg.overlaps += 1;
            }
            self.deliver(ts, &v[skip..], out);
        }
    }

    /// Gives up on the hole before the first held segment: a gap, then what follows it.
    fn skip_hole(&mut self, dmg: &mut Damage, out: &mut dyn FnMut(Chunk<'_>)) {
        let Some((&at, _)) = self.pending.first_key_value() else { return };
        dmg.gaps += 1;
        out(Chunk::Gap);
        let jump = at - self.next_abs;
        self.next_abs = at;
        if let Some(n) = self.next.as_mut() {
            *n = n.wrapping_add(jump as u32);
        }
        self.drain(dmg, out);
    }

    /// End of capture: whatever is still held follows holes.
    pub(super) fn finish(&mut self, dmg: &mut Damage, out: &mut dyn FnMut(Chunk<'_>)) {
        while !self.pending.is_empty() {
            self.skip_hole(dmg, out);
        }
    }

    /// `missing` bytes at `next` were never captured: a gap; move past them.
    fn cut(&mut self, missing: u32, dmg: &mut Damage, out: &mut dyn FnMut(Chunk<'_>)) {
        dmg.gaps += 1;
        out(Chunk::Gap);
        if let Some(n) = self.next.as_mut() {
            *n = n.wrapping_add(missing);
        }
        self.next_abs += missing as u64;
    }
}
