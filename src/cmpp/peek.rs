//! Zero-copy views of CMPP bodies, read straight from a frame (header included) for the
//! connection's [`Version`]. Every view borrows the frame; nothing is allocated. Every fixed
//! field must be present and Msg_Length / DestUsr_tl must fit the body; a malformed body yields
//! a [`PeekError`] naming the field, which maps to the Result ([`PeekError::result`]) or the
//! CONNECT Status ([`PeekError::connect_status`]) the sender gets back. Octet Strings are
//! given up to their first NUL (module docs of [`super`]).
//!
//! CMPP_SUBMIT body (spec 3.0 §8.4.3.1; n = DestUsr_tl, L = Msg_Length):
//!
//! | field | 2.0 off+len | 3.0 off+len |
//! |---|---|---|
//! | Msg_Id | 0+8 | 0+8 |
//! | Pk_total, Pk_number, Registered_Delivery, Msg_level | 8, 9, 10, 11 | 8, 9, 10, 11 |
//! | Service_Id | 12+10 | 12+10 |
//! | Fee_UserType | 22 | 22 |
//! | Fee_terminal_Id (+ Fee_terminal_type) | 23+21 | 23+32 (+ 55) |
//! | TP_pId, TP_udhi, Msg_Fmt | 44, 45, 46 | 56, 57, 58 |
//! | Msg_src, FeeType, FeeCode | 47+6, 53+2, 55+6 | 59+6, 65+2, 67+6 |
//! | ValId_Time, At_Time | 61+17, 78+17 | 73+17, 90+17 |
//! | Src_Id | 95+21 | 107+21 |
//! | DestUsr_tl | 116 | 128 |
//! | Dest_terminal_Id × n (+ Dest_terminal_type) | 117+21n | 129+32n (+1) |
//! | Msg_Length, Msg_Content | 1, L | 1, L |
//! | Reserve / LinkID | 8 | 20 |
//!
//! CMPP_DELIVER body (spec 3.0 §8.4.5):
//!
//! | field | 2.0 off+len | 3.0 off+len |
//! |---|---|---|
//! | Msg_Id, Dest_Id, Service_Id | 0+8, 8+21, 29+10 | same |
//! | TP_pid, TP_udhi, Msg_Fmt | 39, 40, 41 | same |
//! | Src_terminal_Id (+ type) | 42+21 | 42+32 (+ 74) |
//! | Registered_Delivery, Msg_Length, Msg_Content | 63, 64, 65+L | 75, 76, 77+L |
//! | Reserve / LinkID | 8 | 20 |
//!
//! Status report in a DELIVER's Msg_Content when Registered_Delivery = 1: Msg_Id 8, Stat 7,
//! Submit_time 10, Done_time 10, Dest_terminal_Id 21 / 32, SMSC_sequence 4 (60 / 71 bytes).

use std::ops::Range;

use super::{cmd, connect_status, result, Version, HEADER_LEN, MAX_DESTINATIONS};

/// A body field: what a [`PeekError`] names. Names as in the spec (`as_str`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    // CONNECT / CONNECT_RESP
    SourceAddr,
    AuthenticatorSource,
    Version,
    Timestamp,
    Status,
    AuthenticatorIsmg,
    // SUBMIT
    MsgId,
    PkTotal,
    PkNumber,
    RegisteredDelivery,
    MsgLevel,
    ServiceId,
    FeeUserType,
    FeeTerminalId,
    FeeTerminalType,
    TpPid,
    TpUdhi,
    MsgFmt,
    MsgSrc,
    FeeType,
    FeeCode,
    ValidTime,
    AtTime,
    SrcId,
    DestUsrTl,
    DestTerminalId,
    DestTerminalType,
    MsgLength,
    MsgContent,
    /// Reserve (2.0) or LinkID (3.0).
    ReserveOrLinkId,
    // responses, DELIVER and the status report
    Result,
    DestId,
    SrcTerminalId,
    SrcTerminalType,
    Stat,
    SubmitTime,
    DoneTime,
    SmscSequence,
}

impl Field {
    /// The field's name in spec 3.0 §8.4.
    pub fn as_str(self) -> &'static str {
        match self {
            Field::SourceAddr => "Source_Addr",
            Field::AuthenticatorSource => "AuthenticatorSource",
            Field::Version => "Version",
            Field::Timestamp => "Timestamp",
            Field::Status => "Status",
            Field::AuthenticatorIsmg => "AuthenticatorISMG",
            Field::MsgId => "Msg_Id",
            Field::PkTotal => "Pk_total",
            Field::PkNumber => "Pk_number",
            Field::RegisteredDelivery => "Registered_Delivery",
            Field::MsgLevel => "Msg_level",
            Field::ServiceId => "Service_Id",
            Field::FeeUserType => "Fee_UserType",
            Field::FeeTerminalId => "Fee_terminal_Id",
            Field::FeeTerminalType => "Fee_terminal_type",
            Field::TpPid => "TP_pId",
            Field::TpUdhi => "TP_udhi",
            Field::MsgFmt => "Msg_Fmt",
            Field::MsgSrc => "Msg_src",
            Field::FeeType => "FeeType",
            Field::FeeCode => "FeeCode",
            Field::ValidTime => "ValId_Time",
            Field::AtTime => "At_Time",
            Field::SrcId => "Src_Id",
            Field::DestUsrTl => "DestUsr_tl",
            Field::DestTerminalId => "Dest_terminal_Id",
            Field::DestTerminalType => "Dest_terminal_type",
            Field::MsgLength => "Msg_Length",
            Field::MsgContent => "Msg_Content",
            Field::ReserveOrLinkId => "Reserve/LinkID",
            Field::Result => "Result",
            Field::DestId => "Dest_Id",
            Field::SrcTerminalId => "Src_terminal_Id",
            Field::SrcTerminalType => "Src_terminal_type",
            Field::Stat => "Stat",
            Field::SubmitTime => "Submit_time",
            Field::DoneTime => "Done_time",
            Field::SmscSequence => "SMSC_sequence",
        }
    }
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a body could not be read. Returned by every reader here; [`PeekError::result`] and
/// [`PeekError::connect_status`] say what the sender is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PeekError {
    /// The body ends inside this fixed-width field.
    #[error("body truncated in field {0}")]
    Truncated(Field),
    /// Msg_Length runs past the end of the body.
    #[error("Msg_Length {0} runs past the end of the body")]
    BadMsgLength(u8),
    /// DestUsr_tl is 0 or more than [`MAX_DESTINATIONS`].
    #[error("DestUsr_tl {0} outside 1..=99")]
    BadDestCount(u8),
    /// CONNECT carries a Version byte other than 0x20, 0x21, 0x30.
    #[error("unknown CMPP version 0x{0:02x}")]
    UnknownVersion(u8),
    /// The frame's Command_Id is not the one this reader reads (the caller's mistake, or a
    /// frame shorter than a header).
    #[error("command id 0x{0:08x} is not the PDU this reader reads")]
    WrongCommand(u32),
}

impl PeekError {
    /// The SUBMIT_RESP / DELIVER_RESP Result for a malformed SUBMIT / DELIVER: 4 (消息长度错)
    /// for lengths that do not add up, 2 (命令字错) for a wrong command, 13
    /// (Dest_terminal_Id错误) for a bad destination count on 3.0 and 1 (消息结构错) on 2.0,
    /// which has no code 13.
    pub fn result(self, version: Version) -> u32 {
        match self {
            PeekError::Truncated(_) | PeekError::BadMsgLength(_) => result::BAD_LENGTH,
            PeekError::BadDestCount(_) if version == Version::V30 => result::BAD_DEST_TERMINAL_ID,
            PeekError::WrongCommand(_) => result::BAD_COMMAND,
            PeekError::BadDestCount(_) | PeekError::UnknownVersion(_) => result::BAD_STRUCTURE,
        }
    }

    /// The CONNECT_RESP Status for a malformed CONNECT: 4 (版本太高) for a version above 3.0,
    /// 5 (其他错误) for another unknown one, 1 (消息结构错) otherwise.
    pub fn connect_status(self) -> u32 {
        match self {
            PeekError::UnknownVersion(v) if v > 0x30 => connect_status::VERSION_TOO_HIGH,
            PeekError::UnknownVersion(_) => connect_status::OTHER,
            _ => connect_status::BAD_STRUCTURE,
        }
    }
}

/// The bytes of a fixed-width Octet String up to its first NUL.
#[inline]
pub fn octets(field: &[u8]) -> &[u8] {
    match field.iter().position(|&b| b == 0) {
        Some(n) => &field[..n],
        None => field,
    }
}

/// Reads the body of a frame, field by field.
struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor at the body of `frame`, which must carry `id`.
    fn body(frame: &'a [u8], id: u32) -> Result<Cursor<'a>, PeekError> {
        let got = super::command_id(frame);
        if got != id || frame.len() < HEADER_LEN {
            return Err(PeekError::WrongCommand(got));
        }
        Ok(Cursor { b: frame, at: HEADER_LEN })
    }
    #[inline]
    fn take(&mut self, n: usize, field: Field) -> Result<&'a [u8], PeekError> {
        let v = self.b.get(self.at..self.at + n).ok_or(PeekError::Truncated(field))?;
        self.at += n;
        Ok(v)
    }
    #[inline]
    fn u8(&mut self, field: Field) -> Result<u8, PeekError> {
        Ok(self.take(1, field)?[0])
    }
    #[inline]
    fn u32(&mut self, field: Field) -> Result<u32, PeekError> {
        let b = self.take(4, field)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    #[inline]
    fn u64(&mut self, field: Field) -> Result<u64, PeekError> {
        let b = self.take(8, field)?;
        Ok(u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    }
    /// A fixed-width Octet String, up to its first NUL.
    #[inline]
    fn octets(&mut self, n: usize, field: Field) -> Result<&'a [u8], PeekError> {
        self.take(n, field).map(octets)
    }
    /// A Status / Result: 1 byte in 2.0, a u32 in 3.0.
    #[inline]
    fn status(&mut self, version: Version, field: Field) -> Result<u32, PeekError> {
        match version {
            Version::V20 => self.u8(field).map(u32::from),
            Version::V30 => self.u32(field),
        }
    }
    /// The `*_type` byte after a terminal id: `Some` in 3.0, absent in 2.0.
    #[inline]
    fn terminal_type(&mut self, version: Version, field: Field) -> Result<Option<u8>, PeekError> {
        if version.has_terminal_type() {
            self.u8(field).map(Some)
        } else {
            Ok(None)
        }
    }
    /// Msg_Length then Msg_Content.
    #[inline]
    fn content(&mut self) -> Result<&'a [u8], PeekError> {
        let len = self.u8(Field::MsgLength)?;
        self.take(usize::from(len), Field::MsgContent).map_err(|_| PeekError::BadMsgLength(len))
    }
    fn body_len(&self) -> usize {
        self.b.len().saturating_sub(HEADER_LEN)
    }
}

/// The width to read a response or report with: `expected`, unless the body is exactly the
/// other version's length (module docs of [`super`]).
fn lenient(expected: Version, len: usize, len_of: fn(Version) -> usize) -> Version {
    if len != len_of(expected) && len == len_of(expected.other()) {
        expected.other()
    } else {
        expected
    }
}

/// CMPP_CONNECT (spec 3.0 §8.4.1): the same 27-byte body in both versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connect<'a> {
    /// SP_Id (企业代码), 6 bytes.
    pub source_addr: &'a [u8],
    /// MD5(Source_Addr + 9×0x00 + secret + "MMDDHHMMSS"), opaque here; all 16 bytes.
    pub authenticator_source: &'a [u8],
    /// The Version byte as sent; [`Connect::version`] interprets it.
    pub version_byte: u8,
    /// MMDDHHMMSS as a decimal integer.
    pub timestamp: u32,
}

impl Connect<'_> {
    /// The version the SP asked for; an unknown byte is [`PeekError::UnknownVersion`].
    pub fn version(&self) -> Result<Version, PeekError> {
        Version::try_from(self.version_byte).map_err(|e| PeekError::UnknownVersion(e.0))
    }
}

/// Reads a CMPP_CONNECT frame. The version byte is not judged here ([`Connect::version`]),
/// so that a proxy can still relay or refuse with the SP's own sequence number.
pub fn connect(frame: &[u8]) -> Result<Connect<'_>, PeekError> {
    let mut c = Cursor::body(frame, cmd::CONNECT)?;
    Ok(Connect {
        source_addr: c.octets(6, Field::SourceAddr)?,
        authenticator_source: c.take(16, Field::AuthenticatorSource)?,
        version_byte: c.u8(Field::Version)?,
        timestamp: c.u32(Field::Timestamp)?,
    })
}

/// CMPP_CONNECT_RESP (spec 3.0 §8.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectResp<'a> {
    /// The width the body was read with (lenient, see [`super`]).
    pub read_as: Version,
    /// 0 ok; [`connect_status`] for the rest.
    pub status: u32,
    /// MD5(Status + AuthenticatorSource + secret); all zero or garbage on failure.
    pub authenticator_ismg: &'a [u8],
    /// The highest version the ISMG supports.
    pub version_byte: u8,
}

/// Reads a CMPP_CONNECT_RESP frame: Status 1 byte (2.0) or 4 bytes (3.0).
pub fn connect_resp(frame: &[u8], version: Version) -> Result<ConnectResp<'_>, PeekError> {
    let mut c = Cursor::body(frame, cmd::CONNECT_RESP)?;
    let read_as = lenient(version, c.body_len(), Version::connect_resp_body_len);
    Ok(ConnectResp {
        read_as,
        status: c.status(read_as, Field::Status)?,
        authenticator_ismg: c.take(16, Field::AuthenticatorIsmg)?,
        version_byte: c.u8(Field::Version)?,
    })
}

/// CMPP_SUBMIT_RESP or CMPP_DELIVER_RESP: Msg_Id and Result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsgResp {
    /// The width the body was read with (lenient, see [`super`]).
    pub read_as: Version,
    pub msg_id: u64,
    /// 0 ok; [`result`] for the rest.
    pub result: u32,
}

/// A SUBMIT_RESP (spec 3.0 §8.4.3.2).
pub type SubmitResp = MsgResp;
/// A DELIVER_RESP (spec 3.0 §8.4.5.2): the same layout.
pub type DeliverResp = MsgResp;

fn msg_resp(frame: &[u8], id: u32, version: Version) -> Result<MsgResp, PeekError> {
    let mut c = Cursor::body(frame, id)?;
    let read_as = lenient(version, c.body_len(), Version::msg_resp_body_len);
    Ok(MsgResp { read_as, msg_id: c.u64(Field::MsgId)?, result: c.status(read_as, Field::Result)? })
}

/// Reads a CMPP_SUBMIT_RESP frame: Result 1 byte (2.0) or 4 bytes (3.0).
pub fn submit_resp(frame: &[u8], version: Version) -> Result<SubmitResp, PeekError> {
    msg_resp(frame, cmd::SUBMIT_RESP, version)
}

/// Reads a CMPP_DELIVER_RESP frame: Result 1 byte (2.0) or 4 bytes (3.0).
pub fn deliver_resp(frame: &[u8], version: Version) -> Result<DeliverResp, PeekError> {
    msg_resp(frame, cmd::DELIVER_RESP, version)
}

/// A CMPP_SUBMIT, every field, for one version (table in the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submit<'a> {
    pub version: Version,
    /// Empty (0) from SPs in 2.0; "信息标识" in 3.0.
    pub msg_id: u64,
    pub pk_total: u8,
    pub pk_number: u8,
    /// 0 no report, 1 report (2.0 also 2: SMC bill).
    pub registered_delivery: u8,
    pub msg_level: u8,
    pub service_id: &'a [u8],
    pub fee_user_type: u8,
    pub fee_terminal_id: &'a [u8],
    /// 3.0 only: 0 real number, 1 pseudo-code.
    pub fee_terminal_type: Option<u8>,
    pub tp_pid: u8,
    /// Raw byte; [`super::text::has_udh`] interprets it.
    pub tp_udhi: u8,
    pub msg_fmt: u8,
    /// The SP_Id the content comes from.
    pub msg_src: &'a [u8],
    pub fee_type: &'a [u8],
    pub fee_code: &'a [u8],
    pub valid_time: &'a [u8],
    pub at_time: &'a [u8],
    /// Service code / long number shown to the user.
    pub src_id: &'a [u8],
    /// DestUsr_tl, 1..=99.
    pub dest_usr_tl: u8,
    /// 3.0 only: one type byte for the whole destination list.
    pub dest_terminal_type: Option<u8>,
    pub msg_content: &'a [u8],
    /// Reserve (2.0) or LinkID (3.0), up to its first NUL.
    pub reserve: &'a [u8],
    /// Byte range of the destination list within the frame (n slots of
    /// [`Version::terminal_id_len`] bytes each).
    pub dests: Range<usize>,
    frame: &'a [u8],
}

impl<'a> Submit<'a> {
    /// The destinations, each up to its first NUL, in order.
    pub fn destinations(&self) -> impl ExactSizeIterator<Item = &'a [u8]> + 'a {
        let frame: &'a [u8] = self.frame;
        frame[self.dests.clone()].chunks_exact(self.version.terminal_id_len()).map(octets)
    }
    /// The `i`-th destination (from 0).
    pub fn destination(&self, i: usize) -> Option<&'a [u8]> {
        let w = self.version.terminal_id_len();
        let at = self.dests.start + i.checked_mul(w)?;
        if at + w > self.dests.end {
            return None;
        }
        self.frame.get(at..at + w).map(octets)
    }
    /// The frame the view reads.
    pub fn frame(&self) -> &'a [u8] {
        self.frame
    }
}

/// Reads a CMPP_SUBMIT frame for `version`.
pub fn submit(frame: &[u8], version: Version) -> Result<Submit<'_>, PeekError> {
    let mut c = Cursor::body(frame, cmd::SUBMIT)?;
    let tid = version.terminal_id_len();
    let msg_id = c.u64(Field::MsgId)?;
    let pk_total = c.u8(Field::PkTotal)?;
    let pk_number = c.u8(Field::PkNumber)?;
    let registered_delivery = c.u8(Field::RegisteredDelivery)?;
    let msg_level = c.u8(Field::MsgLevel)?;
    let service_id = c.octets(10, Field::ServiceId)?;
    let fee_user_type = c.u8(Field::FeeUserType)?;
    let fee_terminal_id = c.octets(tid, Field::FeeTerminalId)?;
    let fee_terminal_type = c.terminal_type(version, Field::FeeTerminalType)?;
    let tp_pid = c.u8(Field::TpPid)?;
    let tp_udhi = c.u8(Field::TpUdhi)?;
    let msg_fmt = c.u8(Field::MsgFmt)?;
    let msg_src = c.octets(6, Field::MsgSrc)?;
    let fee_type = c.octets(2, Field::FeeType)?;
    let fee_code = c.octets(6, Field::FeeCode)?;
    let valid_time = c.octets(17, Field::ValidTime)?;
    let at_time = c.octets(17, Field::AtTime)?;
    let src_id = c.octets(21, Field::SrcId)?;
    let dest_usr_tl = c.u8(Field::DestUsrTl)?;
    if dest_usr_tl == 0 || dest_usr_tl > MAX_DESTINATIONS {
        return Err(PeekError::BadDestCount(dest_usr_tl));
    }
    let start = c.at;
    c.take(usize::from(dest_usr_tl) * tid, Field::DestTerminalId)?;
    let dests = start..c.at;
    let dest_terminal_type = c.terminal_type(version, Field::DestTerminalType)?;
    let msg_content = c.content()?;
    let reserve = c.octets(version.tail_len(), Field::ReserveOrLinkId)?;
    Ok(Submit {
        version,
        msg_id,
        pk_total,
        pk_number,
        registered_delivery,
        msg_level,
        service_id,
        fee_user_type,
        fee_terminal_id,
        fee_terminal_type,
        tp_pid,
        tp_udhi,
        msg_fmt,
        msg_src,
        fee_type,
        fee_code,
        valid_time,
        at_time,
        src_id,
        dest_usr_tl,
        dest_terminal_type,
        msg_content,
        reserve,
        dests,
        frame,
    })
}

/// A CMPP_DELIVER (MO message or status report), every field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deliver<'a> {
    pub version: Version,
    pub msg_id: u64,
    /// The SP service code / long number (+ extension) the user sent to.
    pub dest_id: &'a [u8],
    pub service_id: &'a [u8],
    pub tp_pid: u8,
    pub tp_udhi: u8,
    pub msg_fmt: u8,
    /// The user; for a report, the original destination.
    pub src_terminal_id: &'a [u8],
    /// 3.0 only.
    pub src_terminal_type: Option<u8>,
    /// 0 MO message, 1 status report.
    pub registered_delivery: u8,
    pub msg_content: &'a [u8],
    /// Reserve (2.0) or LinkID (3.0), up to its first NUL.
    pub reserve: &'a [u8],
}

impl<'a> Deliver<'a> {
    /// Registered_Delivery = 1: Msg_Content is a status report.
    pub fn is_report(&self) -> bool {
        self.registered_delivery == 1
    }
    /// The status report in Msg_Content (whatever Registered_Delivery says; check
    /// [`Deliver::is_report`] first).
    pub fn report(&self) -> Result<Report<'a>, PeekError> {
        report(self.msg_content, self.version)
    }
}

/// Reads a CMPP_DELIVER frame for `version`.
pub fn deliver(frame: &[u8], version: Version) -> Result<Deliver<'_>, PeekError> {
    let mut c = Cursor::body(frame, cmd::DELIVER)?;
    Ok(Deliver {
        version,
        msg_id: c.u64(Field::MsgId)?,
        dest_id: c.octets(21, Field::DestId)?,
        service_id: c.octets(10, Field::ServiceId)?,
        tp_pid: c.u8(Field::TpPid)?,
        tp_udhi: c.u8(Field::TpUdhi)?,
        msg_fmt: c.u8(Field::MsgFmt)?,
        src_terminal_id: c.octets(version.terminal_id_len(), Field::SrcTerminalId)?,
        src_terminal_type: c.terminal_type(version, Field::SrcTerminalType)?,
        registered_delivery: c.u8(Field::RegisteredDelivery)?,
        msg_content: c.content()?,
        reserve: c.octets(version.tail_len(), Field::ReserveOrLinkId)?,
    })
}

/// The status report in a DELIVER's Msg_Content (spec 3.0 §8.4.5.1). Also the input of
/// [`super::pdu::put_report`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report<'a> {
    /// The Msg_Id the ISMG gave the SUBMIT (in its SUBMIT_RESP).
    pub msg_id: u64,
    /// 7 bytes, e.g. `DELIVRD`, `MA:0001` (up to the first NUL).
    pub stat: &'a [u8],
    /// YYMMDDHHMM.
    pub submit_time: &'a [u8],
    /// YYMMDDHHMM.
    pub done_time: &'a [u8],
    pub dest_terminal_id: &'a [u8],
    pub smsc_sequence: u32,
}

/// Reads a status report (60 bytes in 2.0, 71 in 3.0; the other version's exact length is
/// read with its widths). Bytes after the report are ignored.
pub fn report(content: &[u8], version: Version) -> Result<Report<'_>, PeekError> {
    let version = lenient(version, content.len(), Version::report_len);
    let mut c = Cursor { b: content, at: 0 };
    Ok(Report {
        msg_id: c.u64(Field::MsgId)?,
        stat: c.octets(7, Field::Stat)?,
        submit_time: c.octets(10, Field::SubmitTime)?,
        done_time: c.octets(10, Field::DoneTime)?,
        dest_terminal_id: c.octets(version.terminal_id_len(), Field::DestTerminalId)?,
        smsc_sequence: c.u32(Field::SmscSequence)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octet_strings_end_at_the_first_nul() {
        assert_eq!(octets(b"abc\0\0\0"), b"abc");
        assert_eq!(octets(b"abc"), b"abc");
        assert_eq!(octets(b"\0abc"), b"");
        assert_eq!(octets(b"ab\0c\0"), b"ab");
    }

    #[test]
    fn errors_map_to_results_and_statuses() {
        assert_eq!(PeekError::Truncated(Field::MsgSrc).result(Version::V30), result::BAD_LENGTH);
        assert_eq!(PeekError::BadMsgLength(9).result(Version::V20), result::BAD_LENGTH);
        assert_eq!(PeekError::BadDestCount(0).result(Version::V30), result::BAD_DEST_TERMINAL_ID);
        assert_eq!(PeekError::BadDestCount(0).result(Version::V20), result::BAD_STRUCTURE);
        assert_eq!(PeekError::WrongCommand(9).result(Version::V20), result::BAD_COMMAND);
        assert_eq!(PeekError::UnknownVersion(0x40).connect_status(), connect_status::VERSION_TOO_HIGH);
        assert_eq!(PeekError::UnknownVersion(0x10).connect_status(), connect_status::OTHER);
        assert_eq!(PeekError::Truncated(Field::Timestamp).connect_status(), connect_status::BAD_STRUCTURE);
        assert_eq!(PeekError::Truncated(Field::DestTerminalId).to_string(), "body truncated in field Dest_terminal_Id");
    }
}
