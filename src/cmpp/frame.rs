//! Length-checked CMPP framing, the twin of [`crate::smpp::frame`] for a 12-byte header.
//!
//! The framer looks at Total_Length *before* anything is allocated: 12 ≤ length ≤
//! `max_pdu_bytes`. A frame that is too long is reported once (the caller answers it, e.g.
//! SUBMIT_RESP Result 4) and its bytes are then skipped as they arrive, so the stream stays
//! in sync. A length below 12 leaves no trustworthy boundary for the next PDU: the caller
//! answers and closes the connection.
//!
//! The framer never copies or allocates: it reports lengths over the caller's buffer.
//!
//! SMGP 3.0 has the same header shape (PacketLength, RequestID, SequenceID; 12 bytes,
//! big-endian), so an SMGP front reuses this [`Framer`] as it is. SGIP's 20-byte header
//! (12-byte sequence) would need the header length and the sequence offset as parameters.

use super::{be32, HEADER_LEN};

/// Default largest PDU accepted (bytes, header included). The largest legal CMPP PDU is a 3.0
/// SUBMIT with 99 destinations and a 255-byte Msg_Content: 12 + 151 + 32·99 + 255 = 3,586
/// bytes (cmpp.md §1.4 gives 3,490 with the spec's 159-byte content limit); 4 KiB leaves room.
pub const DEFAULT_MAX_PDU_BYTES: usize = 4096;

/// What the next bytes of the stream hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Not enough bytes yet for the next decision.
    Incomplete,
    /// A complete PDU of this many bytes starts at the front of the buffer.
    Frame(usize),
    /// This many bytes belong to an oversized PDU already reported; drop them.
    Skip(usize),
    /// The PDU at the front claims more than `max_pdu_bytes`. The framer skips its bytes
    /// from now on; the caller answers with `sequence` and does *not* advance.
    TooLong { command_id: u32, sequence: u32, length: u32 },
    /// Total_Length < 12: unrecoverable for this stream.
    TooShort { length: u32 },
}

/// Frame splitter with the state needed to skip an oversized PDU across reads.
#[derive(Debug, Clone)]
pub struct Framer {
    max: usize,
    skip: usize,
}

impl Default for Framer {
    fn default() -> Framer {
        Framer::new(DEFAULT_MAX_PDU_BYTES)
    }
}

impl Framer {
    /// A framer accepting PDUs of up to `max_pdu_bytes` (never less than a header).
    pub fn new(max_pdu_bytes: usize) -> Framer {
        Framer { max: max_pdu_bytes.max(HEADER_LEN), skip: 0 }
    }

    pub fn max_pdu_bytes(&self) -> usize {
        self.max
    }

    /// Looks at `avail` (the unprocessed bytes) and says what is at its front.
    #[inline]
    pub fn next(&mut self, avail: &[u8]) -> Next {
        if self.skip > 0 {
            let n = self.skip.min(avail.len());
            if n == 0 {
                return Next::Incomplete;
            }
            self.skip -= n;
            return Next::Skip(n);
        }
        if avail.len() < 4 {
            return Next::Incomplete;
        }
        let length = be32(avail, 0);
        if (length as usize) < HEADER_LEN {
            return Next::TooShort { length };
        }
        if avail.len() < HEADER_LEN {
            return Next::Incomplete;
        }
        if length as usize > self.max {
            self.skip = length as usize;
            return Next::TooLong { command_id: be32(avail, 4), sequence: be32(avail, 8), length };
        }
        if avail.len() < length as usize {
            Next::Incomplete
        } else {
            Next::Frame(length as usize)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pdu(len: u32, id: u32, seq: u32) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&len.to_be_bytes());
        v.extend_from_slice(&id.to_be_bytes());
        v.extend_from_slice(&seq.to_be_bytes());
        v.resize(len.max(12) as usize, 0xAB);
        v
    }

    #[test]
    fn splits_back_to_back_frames_including_header_only_ones() {
        // ACTIVE_TEST (12 bytes, no body) then ACTIVE_TEST_RESP (13 bytes).
        let mut buf = pdu(12, 0x08, 1);
        buf.extend(pdu(13, 0x8000_0008, 1));
        let mut f = Framer::default();
        assert_eq!(f.next(&buf), Next::Frame(12));
        assert_eq!(f.next(&buf[12..]), Next::Frame(13));
        assert_eq!(f.next(&buf[25..]), Next::Incomplete);
        assert_eq!(f.next(&buf[12..20]), Next::Incomplete);
        assert_eq!(f.next(&buf[12..14]), Next::Incomplete);
    }

    #[test]
    fn oversized_frame_is_skipped_across_reads_and_stream_stays_in_sync() {
        let mut f = Framer::new(64);
        let big = pdu(100, 0x04, 7);
        let next = pdu(12, 0x08, 8);
        // The header must be complete before TooLong can name the sequence.
        assert_eq!(f.next(&big[..10]), Next::Incomplete);
        assert_eq!(f.next(&big[..40]), Next::TooLong { command_id: 4, sequence: 7, length: 100 });
        assert_eq!(f.next(&big[..40]), Next::Skip(40));
        assert_eq!(f.next(&[]), Next::Incomplete);
        let mut rest = big[40..].to_vec();
        rest.extend_from_slice(&next);
        assert_eq!(f.next(&rest), Next::Skip(60));
        assert_eq!(f.next(&rest[60..]), Next::Frame(12));
    }

    #[test]
    fn too_short_is_reported_before_allocation() {
        let mut f = Framer::new(64);
        assert_eq!(f.next(&[0, 0, 0, 11, 0, 0]), Next::TooShort { length: 11 });
        assert_eq!(f.next(&[0, 0, 0, 0]), Next::TooShort { length: 0 });
        let mut h = pdu(12, 4, 3);
        h[0..4].copy_from_slice(&0xFFFF_FFF0u32.to_be_bytes());
        assert!(matches!(Framer::new(64).next(&h), Next::TooLong { sequence: 3, .. }));
        // The cap never drops below a header.
        assert_eq!(Framer::new(0).max_pdu_bytes(), HEADER_LEN);
    }
}
