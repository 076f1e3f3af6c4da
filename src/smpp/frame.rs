//! Length-checked PDU framing (architecture §2).
//!
//! The framer looks at `command_length` *before* anything is allocated: 16 ≤ length ≤
//! `max_pdu_bytes`. A frame that is too long is answered (generic_nack ESME_RINVCMDLEN, by the
//! caller) and its bytes are then skipped as they arrive, so the stream stays in sync and the
//! session lives. A length below 16 cannot be skipped meaningfully (the sender's idea of where
//! the next PDU starts is already broken), so the caller answers and closes that one session.
//!
//! The framer never copies: it reports lengths over the caller's buffer, which the caller
//! processes in place (rewriting the sequence number) and then advances past.

use super::{be32, HEADER_LEN};

/// Default largest PDU accepted (bytes, header included; `session.max_pdu_bytes`). SMPP PDUs
/// with a 64 KiB message_payload still fit. The capture reader uses it as the largest
/// plausible command_length.
pub const DEFAULT_MAX_PDU_BYTES: usize = 70_000;

/// What the next bytes of the stream hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Not enough bytes yet for the next decision.
    Incomplete,
    /// A complete PDU of this many bytes starts at the front of the buffer.
    Frame(usize),
    /// This many bytes belong to an oversized PDU already answered; drop them.
    Skip(usize),
    /// The PDU at the front claims more than `max_pdu_bytes`. The framer will skip its bytes
    /// from now on; the caller answers generic_nack with `sequence` and does *not* advance.
    TooLong { command_id: u32, sequence: u32, length: u32 },
    /// command_length < 16: unrecoverable for this stream.
    TooShort { length: u32 },
}

/// Frame splitter with the state needed to skip an oversized PDU across reads.
#[derive(Debug, Clone)]
pub struct Framer {
    max: usize,
    skip: usize,
}

impl Framer {
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
        if length as usize > self.max {
            if avail.len() < HEADER_LEN {
                return Next::Incomplete;
            }
            self.skip = length as usize;
            return Next::TooLong { command_id: be32(avail, 4), sequence: be32(avail, 12), length };
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
        v.extend_from_slice(&0u32.to_be_bytes());
        v.extend_from_slice(&seq.to_be_bytes());
        v.resize(len.max(16) as usize, 0xAB);
        v
    }

    #[test]
    fn splits_back_to_back_frames() {
        let mut buf = pdu(16, 0x15, 1);
        buf.extend(pdu(20, 0x04, 2));
        let mut f = Framer::new(4096);
        assert_eq!(f.next(&buf), Next::Frame(16));
        assert_eq!(f.next(&buf[16..]), Next::Frame(20));
        assert_eq!(f.next(&buf[36..]), Next::Incomplete);
        assert_eq!(f.next(&buf[16..30]), Next::Incomplete);
    }

    #[test]
    fn oversized_frame_is_skipped_across_reads_and_stream_stays_in_sync() {
        let mut f = Framer::new(64);
        let big = pdu(100, 0x04, 7);
        let next = pdu(16, 0x15, 8);
        assert_eq!(f.next(&big[..40]), Next::TooLong { command_id: 4, sequence: 7, length: 100 });
        assert_eq!(f.next(&big[..40]), Next::Skip(40));
        assert_eq!(f.next(&[]), Next::Incomplete);
        let mut rest = big[40..].to_vec();
        rest.extend_from_slice(&next);
        assert_eq!(f.next(&rest), Next::Skip(60));
        assert_eq!(f.next(&rest[60..]), Next::Frame(16));
    }

    #[test]
    fn too_short_is_reported_before_allocation() {
        let mut f = Framer::new(64);
        assert_eq!(f.next(&[0, 0, 0, 8, 0, 0]), Next::TooShort { length: 8 });
        // A huge length needs only the header to be refused.
        let mut f = Framer::new(64);
        let hdr = pdu(16, 4, 3);
        let mut h = hdr.clone();
        h[0..4].copy_from_slice(&0xFFFF_FFF0u32.to_be_bytes());
        assert!(matches!(f.next(&h), Next::TooLong { sequence: 3, .. }));
    }
}
