//! CMPP wire layer: China Mobile's enterprise SMS protocol (CMPP 2.0 and 3.0, QB-GF-028-2003),
//! the protocol SPs speak to the carrier's Internet SMS gateway (ISMG). This module is the wire
//! only: command ids and result codes, the 12-byte header, length-checked framing ([`frame`]),
//! zero-copy views of the bodies ([`peek`]), builders for the PDUs consentgate writes itself
//! ([`pdu`]), the 64-bit Msg_Id ([`msg_id`]) and Msg_Content text ([`text`]).
//!
//! Layering (STYLE §2), as for SMPP: bytes ↔ [`frame::Framer`] (length-checked, no allocation)
//! ↔ [`peek`] views (borrowing the frame) ↔ session behaviour (not here).
//!
//! ```text
//!  SP ──CMPP (7890)──► consentgate ──CMPP──► ISMG ──SMPP──► SMSC
//! ```
//!
//! Header (spec 3.0 §8.3), all integers big-endian, Octet Strings fixed-width and NUL
//! right-padded, no TLVs:
//!
//! | offset | field | size |
//! |---|---|---|
//! | 0 | Total_Length (header + body) | 4 |
//! | 4 | Command_Id | 4 |
//! | 8 | Sequence_Id | 4 |
//!
//! 2.0 and 3.0 share the header and the command ids; the version is per connection (the
//! CONNECT `Version` byte, [`Version`]) and changes body widths: terminal ids 21 → 32 bytes
//! with an added `*_type` byte, every response status/result 1 → 4 bytes, the trailing
//! `Reserve` (8) → `LinkID` (20), the status report 60 → 71 bytes. Every view and builder
//! therefore takes the connection's [`Version`] explicitly.
//!
//! Departures from the reference (`shared/reference/cmpp.md`), where the sources disagree or
//! are silent:
//!
//! - Octet Strings are read up to their first NUL (gocmpp's `ReadCString`, Wireshark's
//!   string fields), not merely right-trimmed: what the views give is what C-string readers
//!   on the ISMG side see.
//! - Responses are sent per spec but read leniently: a CONNECT_RESP, SUBMIT_RESP or
//!   DELIVER_RESP body (and a status report inside DELIVER) whose length is exactly the
//!   *other* version's is read with that version's widths: SMSGate's server picks the
//!   version from its own configuration, not from the CONNECT (cmpp.md §1.3), so a 2.0 SP
//!   can get 3.0-width answers.
//! - `TP_udhi` counts as set when bit 0 (the spec) *or* bit 6 (0x40, the SMPP esm_class value
//!   gateways pass through; SMSGate tests both) is set.
//! - Msg_Fmt 0 with bytes ≥ 0x80, and the Msg_Fmt values the spec does not define (9 and
//!   others, meaning unconfirmed), decode as UTF-8 when valid, else GB18030: for a Chinese
//!   SP, undeclared high bytes are far likelier GBK than Latin-1.
//! - Trailing bytes after `Reserve`/`LinkID` are tolerated (gocmpp and SMSGate ignore them)
//!   and kept verbatim by the SUBMIT rewrite.
//! - DestUsr_tl is accepted in 1..=99: the spec says "< 100"; gocmpp agrees.

pub mod auth;
pub mod frame;
pub mod msg_id;
pub mod pdu;
pub mod peek;
pub mod text;

#[cfg(test)]
mod tests;

/// Length of the CMPP header: Total_Length, Command_Id, Sequence_Id.
pub const HEADER_LEN: usize = 12;

/// Bit set in the Command_Id of every response.
pub const RESP_BIT: u32 = 0x8000_0000;

/// Most destinations one SUBMIT may carry (DestUsr_tl "< 100", spec 3.0 §8.4.3.1, §9).
pub const MAX_DESTINATIONS: u8 = 99;

/// Command ids an SP-facing link carries (spec 3.0 §8.7.1). FWD (0x09) and the GNS route
/// commands (0x10–0x17) are ISMG↔ISMG only and left out.
pub mod cmd {
    pub const CONNECT: u32 = 0x0000_0001;
    pub const CONNECT_RESP: u32 = 0x8000_0001;
    pub const TERMINATE: u32 = 0x0000_0002;
    pub const TERMINATE_RESP: u32 = 0x8000_0002;
    pub const SUBMIT: u32 = 0x0000_0004;
    pub const SUBMIT_RESP: u32 = 0x8000_0004;
    pub const DELIVER: u32 = 0x0000_0005;
    pub const DELIVER_RESP: u32 = 0x8000_0005;
    pub const QUERY: u32 = 0x0000_0006;
    pub const QUERY_RESP: u32 = 0x8000_0006;
    pub const CANCEL: u32 = 0x0000_0007;
    pub const CANCEL_RESP: u32 = 0x8000_0007;
    pub const ACTIVE_TEST: u32 = 0x0000_0008;
    pub const ACTIVE_TEST_RESP: u32 = 0x8000_0008;
}

/// A bounded label for a command id (metrics, logs); `"other"` for every id not in [`cmd`].
pub fn command_name(id: u32) -> &'static str {
    match id {
        cmd::CONNECT => "connect",
        cmd::CONNECT_RESP => "connect_resp",
        cmd::TERMINATE => "terminate",
        cmd::TERMINATE_RESP => "terminate_resp",
        cmd::SUBMIT => "submit",
        cmd::SUBMIT_RESP => "submit_resp",
        cmd::DELIVER => "deliver",
        cmd::DELIVER_RESP => "deliver_resp",
        cmd::QUERY => "query",
        cmd::QUERY_RESP => "query_resp",
        cmd::CANCEL => "cancel",
        cmd::CANCEL_RESP => "cancel_resp",
        cmd::ACTIVE_TEST => "active_test",
        cmd::ACTIVE_TEST_RESP => "active_test_resp",
        _ => "other",
    }
}

/// The protocol version of a connection, from the CONNECT `Version` byte (high nibble major,
/// low nibble minor).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// CMPP 2.0: `0x20`, and `0x21` (2.1, sent by gocmpp's `V21` and pycmpp; same layouts).
    V20,
    /// CMPP 3.0: `0x30`.
    V30,
}

/// A CONNECT `Version` byte that is neither 2.0/2.1 nor 3.0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown CMPP version 0x{0:02x}")]
pub struct UnknownVersion(pub u8);

impl TryFrom<u8> for Version {
    type Error = UnknownVersion;
    fn try_from(b: u8) -> Result<Version, UnknownVersion> {
        match b {
            0x20 | 0x21 => Ok(Version::V20),
            0x30 => Ok(Version::V30),
            _ => Err(UnknownVersion(b)),
        }
    }
}

impl Version {
    /// The `Version` byte this side sends (`0x20` or `0x30`).
    pub fn byte(self) -> u8 {
        match self {
            Version::V20 => 0x20,
            Version::V30 => 0x30,
        }
    }
    /// Width of a terminal id (Fee_terminal_Id, Dest_terminal_Id, Src_terminal_Id, the
    /// report's Dest_terminal_Id): 21 or 32 bytes.
    pub fn terminal_id_len(self) -> usize {
        match self {
            Version::V20 => 21,
            Version::V30 => 32,
        }
    }
    /// Width of a response's Status / Result / Success_Id: 1 or 4 bytes.
    pub fn status_len(self) -> usize {
        match self {
            Version::V20 => 1,
            Version::V30 => 4,
        }
    }
    /// Width of the trailing field of SUBMIT and DELIVER: Reserve 8 (2.0) or LinkID 20 (3.0).
    pub fn tail_len(self) -> usize {
        match self {
            Version::V20 => 8,
            Version::V30 => 20,
        }
    }
    /// Whether terminal ids are followed by a `*_type` byte (3.0).
    pub fn has_terminal_type(self) -> bool {
        self == Version::V30
    }
    /// Length of the status report carried in a DELIVER's Msg_Content: 60 or 71 bytes.
    pub fn report_len(self) -> usize {
        8 + 7 + 10 + 10 + self.terminal_id_len() + 4
    }
    /// Body length of CONNECT_RESP: 18 or 21 bytes.
    pub fn connect_resp_body_len(self) -> usize {
        self.status_len() + 16 + 1
    }
    /// Body length of SUBMIT_RESP and DELIVER_RESP: 9 or 12 bytes.
    pub fn msg_resp_body_len(self) -> usize {
        8 + self.status_len()
    }
    /// The other version (for the lenient reads described in the module docs).
    pub(crate) fn other(self) -> Version {
        match self {
            Version::V20 => Version::V30,
            Version::V30 => Version::V20,
        }
    }
}

/// CONNECT_RESP `Status` (spec 3.0 §8.4.1).
pub mod connect_status {
    pub const OK: u32 = 0;
    /// 消息结构错.
    pub const BAD_STRUCTURE: u32 = 1;
    /// 非法源地址 (Source_Addr unknown).
    pub const BAD_SOURCE_ADDR: u32 = 2;
    /// 认证错.
    pub const AUTH_FAILED: u32 = 3;
    /// 版本太高.
    pub const VERSION_TOO_HIGH: u32 = 4;
    /// 其他错误 (5 and above).
    pub const OTHER: u32 = 5;
}

/// SUBMIT_RESP `Result` (spec 3.0 §8.4.3.2; 2.0 defines 0–8 and "9~ other", codes 9–13 came
/// with 2.1). DELIVER_RESP uses 0–8 with the same meanings.
pub mod result {
    /// 正确.
    pub const OK: u32 = 0;
    /// 消息结构错.
    pub const BAD_STRUCTURE: u32 = 1;
    /// 命令字错.
    pub const BAD_COMMAND: u32 = 2;
    /// 消息序号重复.
    pub const DUPLICATE_SEQUENCE: u32 = 3;
    /// 消息长度错.
    pub const BAD_LENGTH: u32 = 4;
    /// 资费错.
    pub const BAD_FEE: u32 = 5;
    /// 超过最大信息长.
    pub const TOO_LONG: u32 = 6;
    /// 业务代码错.
    pub const BAD_SERVICE_ID: u32 = 7;
    /// 流量控制错. Clients resend on it: never answer a consent refusal with it.
    pub const FLOW_CONTROL: u32 = 8;
    /// 本网关不负责服务此计费号码 (3.0; "other error" in 2.0).
    pub const NOT_SERVED_FEE_TERMINAL: u32 = 9;
    /// Src_Id错误.
    pub const BAD_SRC_ID: u32 = 10;
    /// Msg_src错误.
    pub const BAD_MSG_SRC: u32 = 11;
    /// Fee_terminal_Id错误.
    pub const BAD_FEE_TERMINAL_ID: u32 = 12;
    /// Dest_terminal_Id错误.
    pub const BAD_DEST_TERMINAL_ID: u32 = 13;
    /// The range vendors define their own codes in, each with one meaning (spec 3.0 §8.7.2).
    pub const VENDOR: std::ops::RangeInclusive<u32> = 100..=199;

    const NAMES: [&str; 14] = [
        "ok",
        "bad_structure",
        "bad_command",
        "duplicate_sequence",
        "bad_length",
        "bad_fee",
        "too_long",
        "bad_service_id",
        "flow_control",
        "not_served_fee_terminal",
        "bad_src_id",
        "bad_msg_src",
        "bad_fee_terminal_id",
        "bad_dest_terminal_id",
    ];

    /// A bounded label for a Result: the names above for 0–13, `"vendor"` for 100–199,
    /// `"other"` otherwise.
    pub fn name(result: u32) -> &'static str {
        match NAMES.get(result as usize) {
            Some(n) => n,
            None if VENDOR.contains(&result) => "vendor",
            None => "other",
        }
    }
}

/// Status-report `Stat` values (7 ASCII bytes, spec 3.0 §8.4.5). Gateways also send
/// `XX:nnnn` codes (MA/MB/MC SMSC, CA/CB SCP, DA/DB DSMP, SA/SB SP, IA/IB/IC next ISMG).
pub mod stat {
    pub const DELIVRD: [u8; 7] = *b"DELIVRD";
    pub const EXPIRED: [u8; 7] = *b"EXPIRED";
    pub const DELETED: [u8; 7] = *b"DELETED";
    pub const UNDELIV: [u8; 7] = *b"UNDELIV";
    /// Intermediate: the message was accepted, a final report follows.
    pub const ACCEPTD: [u8; 7] = *b"ACCEPTD";
    pub const UNKNOWN: [u8; 7] = *b"UNKNOWN";
    pub const REJECTD: [u8; 7] = *b"REJECTD";
}

/// The 12-byte header (spec 3.0 §8.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub total_length: u32,
    pub command_id: u32,
    pub sequence_id: u32,
}

impl Header {
    /// Reads the header; `None` when `b` is shorter than [`HEADER_LEN`].
    #[inline]
    pub fn read(b: &[u8]) -> Option<Header> {
        (b.len() >= HEADER_LEN).then(|| Header {
            total_length: be32(b, 0),
            command_id: be32(b, 4),
            sequence_id: be32(b, 8),
        })
    }

    #[inline]
    pub fn is_response(&self) -> bool {
        self.command_id & RESP_BIT != 0
    }
}

/// Big-endian u32 at `at`; the caller guarantees 4 bytes there.
pub(crate) use crate::smpp::be32;

/// The Command_Id of a complete frame (0 if shorter than a header).
#[inline]
pub fn command_id(frame: &[u8]) -> u32 {
    Header::read(frame).map_or(0, |h| h.command_id)
}

/// The Sequence_Id of a complete frame (0 if shorter than a header).
#[inline]
pub fn sequence(frame: &[u8]) -> u32 {
    Header::read(frame).map_or(0, |h| h.sequence_id)
}

/// Rewrites the Sequence_Id of a complete frame in place (no-op on a frame shorter than a
/// header): how a relayed PDU leaves on the other leg.
#[inline]
pub fn set_sequence(frame: &mut [u8], seq: u32) {
    if let Some(s) = frame.get_mut(8..HEADER_LEN) {
        s.copy_from_slice(&seq.to_be_bytes());
    }
}
