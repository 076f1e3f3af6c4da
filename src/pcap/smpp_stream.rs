//! SMPP (or CMPP) framing over a reassembled TCP direction: finding the first header, losing
//! and regaining sync around gaps. Both protocols put the PDU's length in its first 4 bytes;
//! they differ in the header's size (16, 12) and in what a believable header holds.

use super::HUNT_LIMIT;
use crate::smpp::frame::{Framer, Next, DEFAULT_MAX_PDU_BYTES};
use crate::smpp::{cmd, is_known_command, Header, HEADER_LEN, RESP_BIT};

/// Body-less PDUs: their command_length is exactly 16.
fn header_only(id: u32) -> bool {
    matches!(
        id,
        cmd::GENERIC_NACK
            | cmd::ENQUIRE_LINK
            | cmd::ENQUIRE_LINK_RESP
            | cmd::UNBIND
            | cmd::UNBIND_RESP
            | cmd::CANCEL_SM_RESP
            | cmd::REPLACE_SM_RESP
    )
}

/// Whether `b` (≥ 12 bytes) starts with a believable CMPP header: a known command, a length
/// from 12 to [`DEFAULT_MAX_PDU_BYTES`]. `strict` also wants the exact length of body-less
/// PDUs, a body on the others, and a non-zero Sequence_Id.
fn plausible_cmpp(b: &[u8], strict: bool) -> bool {
    use crate::cmpp::{cmd as c, command_name, HEADER_LEN as CMPP_HEADER_LEN};
    let (len, id, seq) = (be32(b) as usize, be32(&b[4..]), be32(&b[8..]));
    if !(CMPP_HEADER_LEN..=DEFAULT_MAX_PDU_BYTES).contains(&len) || command_name(id) == "other" {
        return false;
    }
    if !strict {
        return true;
    }
    match id {
        c::TERMINATE | c::TERMINATE_RESP | c::ACTIVE_TEST => len == CMPP_HEADER_LEN,
        c::ACTIVE_TEST_RESP => len == CMPP_HEADER_LEN + 1,
        _ => len > CMPP_HEADER_LEN && seq != 0,
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Whether `b` (≥ 16 bytes) starts with a believable SMPP header. `strict` (used when hunting
/// for a header after lost sync) also wants status 0 on requests, a sequence number in
/// range and the exact length of body-less PDUs.
fn plausible(b: &[u8], strict: bool) -> bool {
    let h = Header::read(b);
    let len = h.command_length as usize;
    if !(HEADER_LEN..=DEFAULT_MAX_PDU_BYTES).contains(&len) || !is_known_command(h.command_id) {
        return false;
    }
    if !strict {
        return true;
    }
    let req = h.command_id & RESP_BIT == 0;
    (!req || h.command_status == 0)
        && (h.sequence_number <= 0x7FFF_FFFF)
        && (h.sequence_number != 0 || h.command_id == cmd::GENERIC_NACK)
        && (!header_only(h.command_id) || len == HEADER_LEN)
        && (header_only(h.command_id) || len > HEADER_LEN || h.command_id & RESP_BIT != 0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// Looking for the first header (stream start) or the next one after lost sync.
    Hunt,
    Sync,
    /// Not SMPP; bytes are dropped.
    Ignored,
}

/// One direction's SMPP (or CMPP) framing state.
pub(super) struct SmppDir {
    /// Frames CMPP instead of SMPP.
    cmpp: bool,
    pub(super) buf: Vec<u8>,
    pub(super) start: usize,
    /// Timestamp of the newest data in `buf`.
    ts: u64,
    pub(super) mode: Mode,
    framer: Framer,
    /// Bytes received in total.
    pub(super) bytes: u64,
    /// Bytes scanned while hunting before the first sync.
    hunted_before_sync: usize,
    pub(super) pdus: u64,
    /// Lost framing and found it again.
    pub(super) resyncs: u64,
    /// Bytes dropped while hunting (or cut off by the end of the capture).
    pub(super) bytes_skipped: u64,
}

impl SmppDir {
    pub(super) fn new(cmpp: bool) -> SmppDir {
        SmppDir {
            cmpp,
            buf: Vec::new(),
            start: 0,
            ts: 0,
            mode: Mode::Hunt,
            framer: Framer::new(DEFAULT_MAX_PDU_BYTES),
            bytes: 0,
            hunted_before_sync: 0,
            pdus: 0,
            resyncs: 0,
            bytes_skipped: 0,
        }
    }

    /// The protocol's header size.
    fn header_len(&self) -> usize {
        if self.cmpp {
            crate::cmpp::HEADER_LEN
        } else {
            HEADER_LEN
        }
    }

    fn plausible(&self, b: &[u8], strict: bool) -> bool {
        if self.cmpp {
            plausible_cmpp(b, strict)
        } else {
            plausible(b, strict)
        }
    }

    /// Bytes are missing from here on: frame what is complete (as at the end of the data),
    /// drop the partial PDU, and hunt for the next header in what follows.
    pub(super) fn gap(&mut self, on: &mut dyn FnMut(u64, &[u8])) {
        if self.mode == Mode::Ignored {
            return;
        }
        self.parse(true, on);
        self.bytes_skipped += (self.buf.len() - self.start) as u64;
        self.buf.clear();
        self.start = 0;
        self.mode = Mode::Hunt;
        self.framer = Framer::new(DEFAULT_MAX_PDU_BYTES);
    }

    /// Appends data and returns the frames now complete through `on`.
    pub(super) fn push(&mut self, ts: u64, data: &[u8], on: &mut dyn FnMut(u64, &[u8])) {
        self.bytes += data.len() as u64;
        if self.mode == Mode::Ignored {
            return;
        }
        self.ts = ts;
        self.buf.extend_from_slice(data);
        self.parse(false, on);
        // Compact.
        if self.start > 0 && (self.start == self.buf.len() || self.start > 64 * 1024) {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }

    /// Frames what the buffer holds; `eof` = no more data will come.
    pub(super) fn parse(&mut self, eof: bool, on: &mut dyn FnMut(u64, &[u8])) {
        loop {
            match self.mode {
                Mode::Ignored => return,
                Mode::Sync => {
                    let avail = &self.buf[self.start..];
                    if avail.len() < self.header_len() {
                        return;
                    }
                    if !self.plausible(avail, false) {
                        self.mode = Mode::Hunt;
                        self.framer = Framer::new(DEFAULT_MAX_PDU_BYTES);
                        continue;
                    }
                    // CMPP: `plausible` has checked the length, so a frame is its length.
                    let next = match (self.cmpp, be32(avail) as usize) {
                        (true, len) if avail.len() >= len => Next::Frame(len),
                        (true, _) => Next::Incomplete,
                        (false, _) => self.framer.next(avail),
                    };
                    match next {
                        Next::Frame(n) => {
                            self.pdus += 1;
                            on(self.ts, &avail[..n]);
                            self.start += n;
                        }
                        Next::Incomplete => return,
                        // Excluded by `plausible`; treat as lost sync all the same.
                        _ => {
                            self.mode = Mode::Hunt;
                            self.framer = Framer::new(DEFAULT_MAX_PDU_BYTES);
                        }
                    }
                }
                Mode::Hunt => {
                    let before = self.pdus == 0;
                    match self.hunt(eof) {
                        Some(skipped) => {
                            self.bytes_skipped += skipped as u64;
                            if !before {
                                self.resyncs += 1;
                            }
                            self.mode = Mode::Sync;
                        }
                        None => {
                            if before && self.hunted_before_sync > HUNT_LIMIT {
                                self.mode = Mode::Ignored;
                                self.buf = Vec::new();
                                self.start = 0;
                            }
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Scans for a header followed by another header (or the end of the data). On success
    /// the buffer starts there and the number of bytes skipped is returned; otherwise the
    /// bytes that cannot start a header are dropped and None is returned (wait for more).
    fn hunt(&mut self, eof: bool) -> Option<usize> {
        let avail = &self.buf[self.start..];
        let hl = self.header_len();
        let mut i = 0;
        let found = loop {
            if avail.len() - i < hl {
                break None;
            }
            let c = &avail[i..];
            if self.plausible(c, true) {
                let len = be32(c) as usize;
                if c.len() < len {
                    if eof {
                        i += 1;
                        continue;
                    }
                    break None; // wait for the candidate to complete
                }
                let rest = &c[len..];
                if rest.is_empty() {
                    break Some(i);
                }
                if rest.len() < hl {
                    if eof {
                        break Some(i);
                    }
                    break None;
                }
                if self.plausible(rest, false) {
                    break Some(i);
                }
            }
            i += 1;
        };
        match found {
            Some(i) => {
                self.start += i;
                if self.pdus == 0 {
                    self.hunted_before_sync += i;
                }
                Some(i)
            }
            None => {
                // Keep the unscanned tail (a candidate may start there).
                if self.pdus == 0 {
                    self.hunted_before_sync += i;
                }
                self.start += i;
                None
            }
        }
    }
}
