//! The 64-bit CMPP Msg_Id (spec 3.0 §8.4.3.2), as the ISMG generates it:
//!
//! | bits (64 = most significant) | field | width |
//! |---|---|---|
//! | 64–61 | month | 4 |
//! | 60–56 | day | 5 |
//! | 55–51 | hour | 5 |
//! | 50–45 | minute | 6 |
//! | 44–39 | second | 6 |
//! | 38–17 | gateway (ISMG) code | 22 |
//! | 16–1 | sequence, wrapping | 16 |
//!
//! i.e. `month<<60 | day<<55 | hour<<50 | minute<<44 | second<<38 | gateway<<16 | sequence`
//! (SMSGate `DefaultMsgIdUtil`). The gateway field is 22 bits wide, not 21 (Arathi/cmpp-rs
//! masks 21, cmpp.md §1.7). A group SUBMIT to n destinations stands for Msg_Id … Msg_Id+(n−1),
//! the sequence part wrapping to 0 (spec 3.0 §9): [`MsgId::nth`].

/// A Msg_Id split into its fields. [`MsgId::encode`] keeps only the low bits of each field
/// that fit its width, so any value encodes without panicking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MsgId {
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    /// ISMG code (0XYZ01–0XYZ99 as an integer, spec 3.0 §3); 22 bits.
    pub gateway: u32,
    pub sequence: u16,
}

/// Largest gateway code the 22-bit field holds.
pub const GATEWAY_MAX: u32 = (1 << 22) - 1;

impl MsgId {
    /// The 64-bit value sent on the wire (big-endian u64 in the PDU).
    pub fn encode(self) -> u64 {
        (u64::from(self.month) & 0xF) << 60
            | (u64::from(self.day) & 0x1F) << 55
            | (u64::from(self.hour) & 0x1F) << 50
            | (u64::from(self.minute) & 0x3F) << 44
            | (u64::from(self.second) & 0x3F) << 38
            | (u64::from(self.gateway) & u64::from(GATEWAY_MAX)) << 16
            | u64::from(self.sequence)
    }

    /// Splits a wire Msg_Id into its fields.
    pub fn decode(v: u64) -> MsgId {
        MsgId {
            month: (v >> 60) as u8 & 0xF,
            day: (v >> 55) as u8 & 0x1F,
            hour: (v >> 50) as u8 & 0x1F,
            minute: (v >> 44) as u8 & 0x3F,
            second: (v >> 38) as u8 & 0x3F,
            gateway: (v >> 16) as u32 & GATEWAY_MAX,
            sequence: v as u16,
        }
    }

    /// The Msg_Id of the `i`-th destination (from 0) of a group SUBMIT answered with `first`:
    /// the sequence part advanced by `i`, wrapping within its 16 bits.
    pub fn nth(first: u64, i: u8) -> u64 {
        (first & !0xFFFF) | u64::from((first as u16).wrapping_add(u16::from(i)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_shift_form() {
        let id = MsgId { month: 12, day: 31, hour: 23, minute: 59, second: 58, gateway: 74565, sequence: 0xBEEF };
        let want = 12u64 << 60 | 31 << 55 | 23 << 50 | 59 << 44 | 58 << 38 | 74565 << 16 | 0xBEEF;
        assert_eq!(id.encode(), want);
        assert_eq!(MsgId::decode(want), id);
        // Every field at its maximum fills all 64 bits; the gateway uses all 22.
        let max =
            MsgId { month: 15, day: 31, hour: 31, minute: 63, second: 63, gateway: GATEWAY_MAX, sequence: 0xFFFF };
        assert_eq!(max.encode(), u64::MAX);
        assert_eq!(MsgId::decode(u64::MAX), max);
        assert_eq!(MsgId::decode(1 << 37).gateway, 1 << 21);
        assert_eq!(MsgId::decode(1 << 38), MsgId { second: 1, ..MsgId::default() });
        // Out-of-range fields are masked, not spilled into the neighbour.
        assert_eq!(MsgId { month: 0x1F, ..MsgId::default() }.encode(), 0xF << 60);
        assert_eq!(MsgId { gateway: u32::MAX, ..MsgId::default() }.encode(), u64::from(GATEWAY_MAX) << 16);
    }

    #[test]
    fn group_members_wrap_in_the_sequence() {
        let first = MsgId { month: 1, gateway: 7, sequence: 0xFFFE, ..MsgId::default() }.encode();
        assert_eq!(MsgId::decode(MsgId::nth(first, 1)).sequence, 0xFFFF);
        let wrapped = MsgId::decode(MsgId::nth(first, 3));
        assert_eq!((wrapped.sequence, wrapped.gateway, wrapped.month), (1, 7, 1));
        assert_eq!(MsgId::nth(first, 0), first);
    }
}
