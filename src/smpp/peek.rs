//! Zero-copy views of the fields the policy and the tools need, read straight from a frame
//! without a full decode (architecture §1 "hot path"). Every view borrows the frame; nothing is
//! allocated. A malformed body yields a [`PeekError`] that maps to the command_status the
//! sender gets back, and the stream stays in sync because framing used command_length.
//!
//! submit_sm / deliver_sm body (v3.4 §4.4.1, §4.6.1):
//!
//! | field | size |
//! |---|---|
//! | service_type | C-string ≤ 6 |
//! | source_addr_ton, source_addr_npi | 1, 1 |
//! | source_addr | C-string ≤ 21 |
//! | dest_addr_ton, dest_addr_npi | 1, 1 |
//! | destination_addr | C-string ≤ 21 |
//! | esm_class, protocol_id, priority_flag | 1, 1, 1 |
//! | schedule_delivery_time, validity_period | C-string ≤ 17 each |
//! | registered_delivery, replace_if_present_flag, data_coding, sm_default_msg_id | 1 each |
//! | sm_length, short_message | 1, sm_length |
//! | TLVs | tag u16, length u16, value |

use super::{cmd, status, HEADER_LEN};

/// A body field of the PDUs [`message`], [`multi`] and [`destination`] read: what a
/// [`PeekError`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    CommandId,
    DataCoding,
    DestAddrNpi,
    DestAddrTon,
    DestFlag,
    DestinationAddr,
    DlName,
    EsmClass,
    MessageId,
    NumberOfDests,
    PriorityFlag,
    ProtocolId,
    RegisteredDelivery,
    ReplaceIfPresentFlag,
    ScheduleDeliveryTime,
    ServiceType,
    SmDefaultMsgId,
    SmLength,
    SourceAddr,
    SourceAddrNpi,
    SourceAddrTon,
    ValidityPeriod,
    ShortMessage,
}

impl Field {
    /// The field's name in SMPP v3.4 §4.
    pub fn as_str(self) -> &'static str {
        match self {
            Field::CommandId => "command_id",
            Field::DataCoding => "data_coding",
            Field::DestAddrNpi => "dest_addr_npi",
            Field::DestAddrTon => "dest_addr_ton",
            Field::DestFlag => "dest_flag",
            Field::DestinationAddr => "destination_addr",
            Field::DlName => "dl_name",
            Field::EsmClass => "esm_class",
            Field::MessageId => "message_id",
            Field::NumberOfDests => "number_of_dests",
            Field::PriorityFlag => "priority_flag",
            Field::ProtocolId => "protocol_id",
            Field::RegisteredDelivery => "registered_delivery",
            Field::ReplaceIfPresentFlag => "replace_if_present_flag",
            Field::ScheduleDeliveryTime => "schedule_delivery_time",
            Field::ServiceType => "service_type",
            Field::SmDefaultMsgId => "sm_default_msg_id",
            Field::SmLength => "sm_length",
            Field::SourceAddr => "source_addr",
            Field::SourceAddrNpi => "source_addr_npi",
            Field::SourceAddrTon => "source_addr_ton",
            Field::ValidityPeriod => "validity_period",
            Field::ShortMessage => "short_message",
        }
    }
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a body could not be read; [`PeekError::status`] is what the sender is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PeekError {
    #[error("body truncated in field {0}")]
    Truncated(Field),
    #[error("C-octet-string {0} not NUL-terminated within its maximum length")]
    Unterminated(Field),
    #[error("sm_length runs past the end of the PDU")]
    BadSmLength,
    #[error("malformed TLV stream")]
    BadTlv,
    #[error("number_of_dests out of range")]
    BadDestCount,
}

impl PeekError {
    /// The command_status for the response to the malformed request.
    pub fn status(self) -> u32 {
        match self {
            PeekError::Unterminated(Field::SourceAddr) => status::ESME_RINVSRCADR,
            PeekError::Unterminated(Field::DestinationAddr) => status::ESME_RINVDSTADR,
            PeekError::BadTlv => status::ESME_RINVTLVSTREAM,
            PeekError::BadDestCount => status::ESME_RINVNUMDESTS,
            _ => status::ESME_RINVMSGLEN,
        }
    }
}

/// An address with its type of number and numbering plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addr<'a> {
    pub ton: u8,
    pub npi: u8,
    pub addr: &'a [u8],
}

/// The fields of a submit_sm, deliver_sm or data_sm that consentgate reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageView<'a> {
    pub command_id: u32,
    pub service_type: &'a [u8],
    pub source: Addr<'a>,
    pub destination: Addr<'a>,
    pub esm_class: u8,
    pub registered_delivery: u8,
    pub data_coding: u8,
    /// short_message (empty for data_sm).
    pub short_message: &'a [u8],
    /// The raw TLV area; iterate with [`tlvs`].
    pub tlvs: &'a [u8],
}

impl<'a> MessageView<'a> {
    /// esm_class bits 2–5 non-zero: a delivery receipt or another MC/SME acknowledgement,
    /// not a mobile-originated message (v3.4 §5.2.12).
    pub fn is_receipt(&self) -> bool {
        self.esm_class & 0x3C != 0
    }
    /// UDHI set: short_message starts with a user data header.
    pub fn has_udh(&self) -> bool {
        self.esm_class & 0x40 != 0
    }
    /// First TLV with this tag, if any.
    pub fn tlv(&self, tag: u16) -> Option<&'a [u8]> {
        tlvs(self.tlvs).find_map(|t| match t {
            Ok((t, v)) if t == tag => Some(v),
            _ => None,
        })
    }
    /// The user data with its header: short_message, or message_payload (0x0424) when
    /// short_message is empty.
    pub fn payload(&self) -> &'a [u8] {
        payload(self.short_message, self.tlvs)
    }
    /// The text's bytes: [`Self::payload`] with the user data header skipped
    /// ([`super::text::user_data`]).
    pub fn user_data(&self) -> &'a [u8] {
        super::text::user_data(self.esm_class, self.payload())
    }
}

/// short_message, or message_payload when short_message is empty (the TLVs are not read
/// otherwise).
fn payload<'a>(short_message: &'a [u8], tlvs: &'a [u8]) -> &'a [u8] {
    if !short_message.is_empty() {
        return short_message;
    }
    self::tlvs(tlvs)
        .find_map(|t| match t {
            Ok((tag, v)) if tag == tlv::MESSAGE_PAYLOAD => Some(v),
            _ => None,
        })
        .unwrap_or(short_message)
}

/// TLV tags consentgate reads.
pub mod tlv {
    pub const RECEIPTED_MESSAGE_ID: u16 = 0x001E;
    pub const SAR_MSG_REF_NUM: u16 = 0x020C;
    pub const SAR_TOTAL_SEGMENTS: u16 = 0x020E;
    pub const SAR_SEGMENT_SEQNUM: u16 = 0x020F;
    pub const MESSAGE_PAYLOAD: u16 = 0x0424;
    pub const MESSAGE_STATE: u16 = 0x0427;
}

/// Iterates a TLV area; yields an error (and stops) at the first malformed TLV.
pub fn tlvs(mut area: &[u8]) -> impl Iterator<Item = Result<(u16, &[u8]), PeekError>> {
    std::iter::from_fn(move || {
        if area.is_empty() {
            return None;
        }
        if area.len() < 4 {
            area = &[];
            return Some(Err(PeekError::BadTlv));
        }
        let tag = u16::from_be_bytes([area[0], area[1]]);
        let len = u16::from_be_bytes([area[2], area[3]]) as usize;
        if area.len() < 4 + len {
            area = &[];
            return Some(Err(PeekError::BadTlv));
        }
        let v = &area[4..4 + len];
        area = &area[4 + len..];
        Some(Ok((tag, v)))
    })
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    #[inline]
    fn u8(&mut self, field: Field) -> Result<u8, PeekError> {
        let v = *self.b.get(self.at).ok_or(PeekError::Truncated(field))?;
        self.at += 1;
        Ok(v)
    }
    /// A C-octet-string of at most `max` bytes including the NUL; returns it without the NUL.
    #[inline]
    fn cstr(&mut self, max: usize, field: Field) -> Result<&'a [u8], PeekError> {
        let rest = &self.b[self.at..];
        if rest.is_empty() {
            return Err(PeekError::Truncated(field));
        }
        let lim = rest.len().min(max);
        match rest[..lim].iter().position(|&c| c == 0) {
            Some(n) => {
                self.at += n + 1;
                Ok(&rest[..n])
            }
            None if rest.len() < max => Err(PeekError::Truncated(field)),
            None => Err(PeekError::Unterminated(field)),
        }
    }
    #[inline]
    fn take(&mut self, n: usize, field: Field) -> Result<&'a [u8], PeekError> {
        let end = self.at.checked_add(n).ok_or(PeekError::Truncated(field))?;
        let v = self.b.get(self.at..end).ok_or(PeekError::Truncated(field))?;
        self.at = end;
        Ok(v)
    }
    fn rest(&self) -> &'a [u8] {
        &self.b[self.at..]
    }
}

/// The destination of a submit_sm or data_sm frame, read without the rest of the body: the
/// session's prefetch pipeline over a read batch ([`crate::policy::SessionPolicy::prefetch_ahead`]). `None` for other
/// ids or a frame too damaged to say (the full read reports that).
#[inline]
pub fn destination(frame: &[u8]) -> Option<Addr<'_>> {
    let command_id = super::command_id(frame);
    let max = match command_id {
        cmd::SUBMIT_SM => 21,
        cmd::DATA_SM => 65,
        _ => return None,
    };
    let mut c = Cursor { b: frame, at: HEADER_LEN };
    c.cstr(6, Field::ServiceType).ok()?;
    c.take(2, Field::SourceAddrTon).ok()?;
    c.cstr(max, Field::SourceAddr).ok()?;
    Some(Addr {
        ton: c.u8(Field::DestAddrTon).ok()?,
        npi: c.u8(Field::DestAddrNpi).ok()?,
        addr: c.cstr(max, Field::DestinationAddr).ok()?,
    })
}

/// Reads a submit_sm, deliver_sm or data_sm frame (header included). Other ids are an error
/// of the caller and yield `Truncated(Field::CommandId)`.
pub fn message(frame: &[u8]) -> Result<MessageView<'_>, PeekError> {
    let command_id = super::command_id(frame);
    let mut c = Cursor { b: frame, at: HEADER_LEN };
    let service_type = c.cstr(6, Field::ServiceType)?;
    let (sa_max, da_max) = if command_id == cmd::DATA_SM { (65, 65) } else { (21, 21) };
    let source = Addr {
        ton: c.u8(Field::SourceAddrTon)?,
        npi: c.u8(Field::SourceAddrNpi)?,
        addr: c.cstr(sa_max, Field::SourceAddr)?,
    };
    let destination = Addr {
        ton: c.u8(Field::DestAddrTon)?,
        npi: c.u8(Field::DestAddrNpi)?,
        addr: c.cstr(da_max, Field::DestinationAddr)?,
    };
    let esm_class = c.u8(Field::EsmClass)?;
    let SmTail { registered_delivery, data_coding, short_message, tlvs } = match command_id {
        cmd::SUBMIT_SM | cmd::DELIVER_SM => sm_tail(&mut c)?,
        cmd::DATA_SM => {
            let registered_delivery = c.u8(Field::RegisteredDelivery)?;
            let data_coding = c.u8(Field::DataCoding)?;
            let tlvs = c.rest();
            check_tlvs(tlvs)?;
            SmTail { registered_delivery, data_coding, short_message: &[], tlvs }
        }
        _ => return Err(PeekError::Truncated(Field::CommandId)),
    };
    Ok(MessageView {
        command_id,
        service_type,
        source,
        destination,
        esm_class,
        registered_delivery,
        data_coding,
        short_message,
        tlvs,
    })
}

/// The fields after esm_class that submit_sm, deliver_sm and submit_multi share (v3.4
/// §4.4.1, §4.5.1, §4.6.1), the ones consentgate reads kept.
struct SmTail<'a> {
    registered_delivery: u8,
    data_coding: u8,
    short_message: &'a [u8],
    tlvs: &'a [u8],
}

/// Reads protocol_id … short_message and checks the TLV area after it.
#[inline]
fn sm_tail<'a>(c: &mut Cursor<'a>) -> Result<SmTail<'a>, PeekError> {
    c.u8(Field::ProtocolId)?;
    c.u8(Field::PriorityFlag)?;
    c.cstr(17, Field::ScheduleDeliveryTime)?;
    c.cstr(17, Field::ValidityPeriod)?;
    let registered_delivery = c.u8(Field::RegisteredDelivery)?;
    c.u8(Field::ReplaceIfPresentFlag)?;
    let data_coding = c.u8(Field::DataCoding)?;
    c.u8(Field::SmDefaultMsgId)?;
    let sm_length = c.u8(Field::SmLength)? as usize;
    let short_message = c.take(sm_length, Field::ShortMessage).map_err(|_| PeekError::BadSmLength)?;
    let tlvs = c.rest();
    check_tlvs(tlvs)?;
    Ok(SmTail { registered_delivery, data_coding, short_message, tlvs })
}

fn check_tlvs(area: &[u8]) -> Result<(), PeekError> {
    for t in tlvs(area) {
        t?;
    }
    Ok(())
}

/// A submit_multi (v3.4 §4.5.1): the source, the raw destination list and the message fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultiView<'a> {
    pub service_type: &'a [u8],
    pub source: Addr<'a>,
    /// Byte offset of number_of_dests within the frame.
    pub dests_at: usize,
    /// Byte offset just past the destination list within the frame.
    pub dests_end: usize,
    pub number_of_dests: u8,
    pub esm_class: u8,
    pub registered_delivery: u8,
    pub data_coding: u8,
    pub short_message: &'a [u8],
    pub tlvs: &'a [u8],
    frame: &'a [u8],
}

/// One entry of a submit_multi destination list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MultiDest<'a> {
    /// dest_flag 1: an SME address.
    Sme(Addr<'a>),
    /// dest_flag 2: a distribution list name held by the SMSC.
    List(&'a [u8]),
}

impl<'a> MultiView<'a> {
    /// As [`MessageView::user_data`].
    pub fn user_data(&self) -> &'a [u8] {
        super::text::user_data(self.esm_class, payload(self.short_message, self.tlvs))
    }

    /// The destinations with the byte range each occupies in the frame.
    pub fn destinations(&self) -> impl Iterator<Item = (MultiDest<'a>, std::ops::Range<usize>)> + '_ {
        let mut c = Cursor { b: self.frame, at: self.dests_at + 1 };
        (0..self.number_of_dests).map_while(move |_| {
            let start = c.at;
            let d = read_dest(&mut c).ok()?;
            Some((d, start..c.at))
        })
    }
}

fn read_dest<'a>(c: &mut Cursor<'a>) -> Result<MultiDest<'a>, PeekError> {
    match c.u8(Field::DestFlag)? {
        1 => Ok(MultiDest::Sme(Addr {
            ton: c.u8(Field::DestAddrTon)?,
            npi: c.u8(Field::DestAddrNpi)?,
            addr: c.cstr(21, Field::DestinationAddr)?,
        })),
        2 => Ok(MultiDest::List(c.cstr(21, Field::DlName)?)),
        _ => Err(PeekError::BadDestCount),
    }
}

/// Reads a submit_multi frame (header included).
pub fn multi(frame: &[u8]) -> Result<MultiView<'_>, PeekError> {
    let mut c = Cursor { b: frame, at: HEADER_LEN };
    let service_type = c.cstr(6, Field::ServiceType)?;
    let source = Addr {
        ton: c.u8(Field::SourceAddrTon)?,
        npi: c.u8(Field::SourceAddrNpi)?,
        addr: c.cstr(21, Field::SourceAddr)?,
    };
    let dests_at = c.at;
    let number_of_dests = c.u8(Field::NumberOfDests)?;
    if number_of_dests == 0 {
        return Err(PeekError::BadDestCount);
    }
    for _ in 0..number_of_dests {
        read_dest(&mut c)?;
    }
    let dests_end = c.at;
    let esm_class = c.u8(Field::EsmClass)?;
    let SmTail { registered_delivery, data_coding, short_message, tlvs } = sm_tail(&mut c)?;
    Ok(MultiView {
        service_type,
        source,
        dests_at,
        dests_end,
        number_of_dests,
        esm_class,
        registered_delivery,
        data_coding,
        short_message,
        tlvs,
        frame,
    })
}

/// Reads the message_id of a query_sm (v3.4 §4.8.1: a C-octet-string of at most 65 bytes
/// with its NUL, the first field of the body).
pub fn query_message_id(frame: &[u8]) -> Result<&[u8], PeekError> {
    let mut c = Cursor { b: frame, at: HEADER_LEN.min(frame.len()) };
    c.cstr(65, Field::MessageId)
}

/// Reads the message_id of a submit_sm_resp / data_sm_resp / submit_multi_resp (empty when
/// the response has no body, as error responses usually do).
pub fn resp_message_id(frame: &[u8]) -> &[u8] {
    let body = &frame[HEADER_LEN.min(frame.len())..];
    match body.iter().position(|&c| c == 0) {
        Some(n) => &body[..n],
        None => body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smpp::pdu::SubmitBuilder;

    #[test]
    fn reads_submit_fields_and_tlvs() {
        let f = SubmitBuilder::new("1069012345", "8613800138000")
            .registered_delivery(1)
            .data_coding(8)
            .short_message(&[0x90, 0x00, 0x8B, 0xA2])
            .tlv(0x0204, &[0, 7])
            .build(42);
        let v = message(&f).unwrap();
        assert_eq!(v.source.addr, b"1069012345");
        assert_eq!(v.destination.addr, b"8613800138000");
        assert_eq!(v.destination.ton, 1);
        assert_eq!(v.registered_delivery, 1);
        assert_eq!(v.data_coding, 8);
        assert_eq!(v.short_message, &[0x90, 0x00, 0x8B, 0xA2]);
        assert_eq!(v.tlv(0x0204), Some(&[0u8, 7][..]));
        assert!(!v.is_receipt());
    }

    #[test]
    fn query_message_id_needs_its_nul_within_65_bytes() {
        let q = |body: &[u8]| {
            let mut f = vec![0u8; HEADER_LEN];
            f.extend_from_slice(body);
            query_message_id(&f).map(<[u8]>::to_vec)
        };
        assert_eq!(q(b"ab\0c"), Ok(b"ab".to_vec()));
        assert_eq!(q(b"abc"), Err(PeekError::Truncated(Field::MessageId)));
        assert_eq!(q(b""), Err(PeekError::Truncated(Field::MessageId)));
        assert_eq!(q(&[b'a'; 70]), Err(PeekError::Unterminated(Field::MessageId)));
        let mut max = vec![b'a'; 64];
        max.push(0);
        assert_eq!(q(&max), Ok(vec![b'a'; 64]));
        assert_eq!(query_message_id(&[0, 0, 0]), Err(PeekError::Truncated(Field::MessageId)));
    }

    #[test]
    fn truncated_and_malformed_bodies_map_to_statuses() {
        let f = SubmitBuilder::new("src", "8613800138000").short_message(b"hello").build(1);
        // Cut inside short_message: sm_length overruns.
        assert_eq!(message(&f[..f.len() - 2]).unwrap_err(), PeekError::BadSmLength);
        // Cut inside destination_addr.
        assert!(matches!(message(&f[..30]).unwrap_err(), PeekError::Truncated(_)));
        // Trailing garbage that is not a TLV.
        let mut g = f.clone();
        g.extend_from_slice(&[1, 2, 3]);
        assert_eq!(message(&g).unwrap_err(), PeekError::BadTlv);
        assert_eq!(PeekError::BadTlv.status(), status::ESME_RINVTLVSTREAM);
        // source_addr longer than 21 without NUL.
        let mut h = f[..HEADER_LEN].to_vec();
        h.extend_from_slice(b"\0\x05\x00");
        h.extend_from_slice(&[b'A'; 30]);
        assert_eq!(message(&h).unwrap_err(), PeekError::Unterminated(Field::SourceAddr));
        assert_eq!(PeekError::Unterminated(Field::SourceAddr).status(), status::ESME_RINVSRCADR);
    }
}
