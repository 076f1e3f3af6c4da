//! PDUs consentgate creates or must read fully.
//!
//! Hot-path responses (locally answered submit_sm_resp, generic_nack, enquire_link_resp) are
//! written by hand straight into the output buffer: they are a header plus at most one
//! C-string. Binds and bind responses, which happen once per session, go through rusmpp's
//! full decoder/encoder so that every field is validated the way the spec says.

use bytes::{BufMut, BytesMut};
use rusmpp::decode::DecodeWithLength;
use rusmpp::encode::owned::Encode;
use rusmpp::encode::Length;
use rusmpp::types::COctetString;
use rusmpp::{Command, CommandStatus, Pdu};

use super::{cmd, BindType, HEADER_LEN};

/// Appends a body-less PDU (enquire_link, unbind, generic_nack, their responses, or an error
/// response without body).
#[inline]
pub fn put_header_only(out: &mut BytesMut, command_id: u32, status: u32, seq: u32) {
    out.reserve(HEADER_LEN);
    out.put_u32(HEADER_LEN as u32);
    out.put_u32(command_id);
    out.put_u32(status);
    out.put_u32(seq);
}

/// Appends a response carrying a message_id C-string (submit_sm_resp, data_sm_resp,
/// deliver_sm_resp). `message_id` must not contain NUL.
#[inline]
pub fn put_resp_with_id(out: &mut BytesMut, command_id: u32, status: u32, seq: u32, message_id: &[u8]) {
    let len = HEADER_LEN + message_id.len() + 1;
    out.reserve(len);
    out.put_u32(len as u32);
    out.put_u32(command_id);
    out.put_u32(status);
    out.put_u32(seq);
    out.put_slice(message_id);
    out.put_u8(0);
}

/// Appends the response a request gets when consentgate answers it locally with an error
/// `status`: the spec's body-less form for most responses, and an empty message_id for the
/// responses that always carry one (some ESMEs reject a submit_sm_resp without it).
pub fn put_local_error_resp(out: &mut BytesMut, request_id: u32, status: u32, seq: u32) {
    let resp = request_id | super::RESP_BIT;
    match request_id {
        cmd::SUBMIT_SM | cmd::DATA_SM | cmd::DELIVER_SM => put_resp_with_id(out, resp, status, seq, b""),
        cmd::SUBMIT_MULTI => {
            // message_id "" + no_unsuccess 0.
            out.reserve(HEADER_LEN + 2);
            out.put_u32(HEADER_LEN as u32 + 2);
            out.put_u32(resp);
            out.put_u32(status);
            out.put_u32(seq);
            out.put_u8(0);
            out.put_u8(0);
        }
        _ => put_header_only(out, resp, status, seq),
    }
}

/// The fields of a bind request consentgate uses (v3.4 §4.1.1).
#[derive(Clone, PartialEq, Eq)]
pub struct BindRequest {
    pub bind_type: BindType,
    pub system_id: String,
    pub password: String,
    pub system_type: String,
    pub interface_version: u8,
}

impl std::fmt::Debug for BindRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BindRequest")
            .field("bind_type", &self.bind_type)
            .field("system_id", &self.system_id)
            .field("password", &"***")
            .field("system_type", &self.system_type)
            .field("interface_version", &self.interface_version)
            .finish()
    }
}

/// Why a PDU could not be decoded fully.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// rusmpp refused the body (its message).
    #[error("malformed PDU: {0}")]
    Malformed(String),
    /// A well-formed PDU that is not the one expected here.
    #[error("not a bind request")]
    NotABind,
}

/// Fully decodes a frame with rusmpp. Only for PDUs outside the hot path.
pub fn decode(frame: &[u8]) -> Result<Command, DecodeError> {
    if frame.len() < 4 {
        return Err(DecodeError::Malformed("shorter than a command_length".into()));
    }
    let mut buf = BytesMut::from(&frame[4..]);
    Command::decode(&mut buf, frame.len() - 4).map(|(c, _)| c).map_err(|e| DecodeError::Malformed(e.to_string()))
}

/// Decodes a bind_transmitter / bind_receiver / bind_transceiver frame.
pub fn decode_bind(frame: &[u8]) -> Result<BindRequest, DecodeError> {
    let c = decode(frame)?;
    let (bind_type, system_id, password, system_type, iv) = match c.pdu() {
        Some(Pdu::BindTransmitter(b)) => {
            (BindType::Transmitter, &b.system_id, &b.password, &b.system_type, b.interface_version)
        }
        Some(Pdu::BindReceiver(b)) => {
            (BindType::Receiver, &b.system_id, &b.password, &b.system_type, b.interface_version)
        }
        Some(Pdu::BindTransceiver(b)) => {
            (BindType::Transceiver, &b.system_id, &b.password, &b.system_type, b.interface_version)
        }
        _ => return Err(DecodeError::NotABind),
    };
    Ok(BindRequest {
        bind_type,
        system_id: system_id.as_str().to_owned(),
        password: password.as_str().to_owned(),
        system_type: system_type.as_str().to_owned(),
        interface_version: iv.into(),
    })
}

/// Encodes a bind request (used by the load tool and tests).
pub fn encode_bind(bind_type: BindType, seq: u32, system_id: &str, password: &str) -> BytesMut {
    use rusmpp::pdus::{BindReceiver, BindTransceiver, BindTransmitter};
    use rusmpp::values::{InterfaceVersion, Npi, Ton};
    let sid = COctetString::from_str_lossy(system_id, 16);
    let pw = COctetString::from_str_lossy(password, 9);
    let st = COctetString::empty();
    let range = COctetString::empty();
    let iv = InterfaceVersion::Smpp3_4;
    let pdu: Pdu = match bind_type {
        BindType::Transmitter => BindTransmitter::new(sid, pw, st, iv, Ton::Unknown, Npi::Unknown, range).into(),
        BindType::Receiver => BindReceiver::new(sid, pw, st, iv, Ton::Unknown, Npi::Unknown, range).into(),
        BindType::Transceiver => BindTransceiver::new(sid, pw, st, iv, Ton::Unknown, Npi::Unknown, range).into(),
    };
    encode(&Command::new(CommandStatus::EsmeRok, seq, pdu))
}

/// Encodes a bind response with rusmpp. A failed bind carries no body (v3.4 §4.1.2).
pub fn encode_bind_resp(bind_type: BindType, status: u32, seq: u32, system_id: &str) -> BytesMut {
    use rusmpp::pdus::{BindReceiverResp, BindTransceiverResp, BindTransmitterResp};
    if status != 0 {
        let mut out = BytesMut::new();
        put_header_only(&mut out, bind_type.command_id() | super::RESP_BIT, status, seq);
        return out;
    }
    let sid = COctetString::from_str_lossy(system_id, 16);
    let pdu: Pdu = match bind_type {
        BindType::Transmitter => BindTransmitterResp::new(sid, None).into(),
        BindType::Receiver => BindReceiverResp::new(sid, None).into(),
        BindType::Transceiver => BindTransceiverResp::new(sid, None).into(),
    };
    encode(&Command::new(CommandStatus::from(status), seq, pdu))
}

/// Encodes a rusmpp command with its command_length prefix.
pub fn encode(c: &Command) -> BytesMut {
    let len = 4 + c.length();
    let mut out = BytesMut::with_capacity(len);
    out.put_u32(len as u32);
    c.encode(&mut out);
    out
}

trait FromStrLossy: Sized {
    fn from_str_lossy(s: &str, max_with_nul: usize) -> Self;
}

impl<const MIN: usize, const MAX: usize> FromStrLossy for COctetString<MIN, MAX> {
    /// Keeps the ASCII prefix that fits; SMPP ids are ASCII by spec.
    fn from_str_lossy(s: &str, max_with_nul: usize) -> Self {
        let mut v: Vec<u8> = s.bytes().filter(|b| b.is_ascii() && *b != 0).take(max_with_nul - 1).collect();
        v.push(0);
        COctetString::from_vec(v).unwrap_or_else(|_| COctetString::empty())
    }
}

/// Builds submit_sm / deliver_sm frames by hand (tests, simulator, load tool). Defaults:
/// international destination (TON 1, NPI 1), alphanumeric-free numeric source (TON 0).
#[derive(Debug, Clone)]
pub struct SubmitBuilder {
    command_id: u32,
    service_type: Vec<u8>,
    source: (u8, u8, Vec<u8>),
    dest: (u8, u8, Vec<u8>),
    esm_class: u8,
    registered_delivery: u8,
    data_coding: u8,
    short_message: Vec<u8>,
    tlvs: Vec<u8>,
}

impl SubmitBuilder {
    pub fn new(source: &str, destination: &str) -> SubmitBuilder {
        SubmitBuilder {
            command_id: cmd::SUBMIT_SM,
            service_type: Vec::new(),
            source: (0, 1, source.as_bytes().to_vec()),
            dest: (1, 1, destination.as_bytes().to_vec()),
            esm_class: 0,
            registered_delivery: 0,
            data_coding: 0,
            short_message: Vec::new(),
            tlvs: Vec::new(),
        }
    }
    pub fn deliver(mut self) -> Self {
        self.command_id = cmd::DELIVER_SM;
        self
    }
    pub fn service_type(mut self, s: &str) -> Self {
        self.service_type = s.as_bytes().to_vec();
        self
    }
    pub fn source_ton_npi(mut self, ton: u8, npi: u8) -> Self {
        self.source.0 = ton;
        self.source.1 = npi;
        self
    }
    pub fn dest_ton_npi(mut self, ton: u8, npi: u8) -> Self {
        self.dest.0 = ton;
        self.dest.1 = npi;
        self
    }
    pub fn esm_class(mut self, v: u8) -> Self {
        self.esm_class = v;
        self
    }
    pub fn registered_delivery(mut self, v: u8) -> Self {
        self.registered_delivery = v;
        self
    }
    pub fn data_coding(mut self, v: u8) -> Self {
        self.data_coding = v;
        self
    }
    /// Sets short_message (≤ 255 bytes; longer input is truncated — use message_payload).
    pub fn short_message(mut self, m: &[u8]) -> Self {
        self.short_message = m[..m.len().min(255)].to_vec();
        self
    }
    pub fn tlv(mut self, tag: u16, value: &[u8]) -> Self {
        self.tlvs.extend_from_slice(&tag.to_be_bytes());
        self.tlvs.extend_from_slice(&(value.len() as u16).to_be_bytes());
        self.tlvs.extend_from_slice(value);
        self
    }
    pub fn build(&self, seq: u32) -> BytesMut {
        let mut b = BytesMut::with_capacity(96 + self.short_message.len() + self.tlvs.len());
        b.put_u32(0);
        b.put_u32(self.command_id);
        b.put_u32(0);
        b.put_u32(seq);
        put_cstr(&mut b, &self.service_type);
        b.put_u8(self.source.0);
        b.put_u8(self.source.1);
        put_cstr(&mut b, &self.source.2);
        b.put_u8(self.dest.0);
        b.put_u8(self.dest.1);
        put_cstr(&mut b, &self.dest.2);
        b.put_u8(self.esm_class);
        b.put_u8(0); // protocol_id
        b.put_u8(0); // priority_flag
        b.put_u8(0); // schedule_delivery_time
        b.put_u8(0); // validity_period
        b.put_u8(self.registered_delivery);
        b.put_u8(0); // replace_if_present_flag
        b.put_u8(self.data_coding);
        b.put_u8(0); // sm_default_msg_id
        b.put_u8(self.short_message.len() as u8);
        b.put_slice(&self.short_message);
        b.put_slice(&self.tlvs);
        let len = b.len() as u32;
        b[0..4].copy_from_slice(&len.to_be_bytes());
        b
    }
}

fn put_cstr(b: &mut BytesMut, s: &[u8]) {
    b.put_slice(s);
    b.put_u8(0);
}

/// Appends `frame` (a whole PDU) to `out` with its sequence_number replaced by `seq`: how a
/// relayed PDU leaves on the other leg.
#[inline]
pub fn put_renumbered(out: &mut BytesMut, frame: &[u8], seq: u32) {
    let at = out.len();
    out.extend_from_slice(frame);
    super::set_sequence(&mut out[at..], seq);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_round_trips_through_rusmpp() {
        let f = encode_bind(BindType::Transceiver, 9, "acme", "secret");
        let b = decode_bind(&f).unwrap();
        assert_eq!(b.bind_type, BindType::Transceiver);
        assert_eq!(b.system_id, "acme");
        assert_eq!(b.password, "secret");
        assert_eq!(super::super::sequence(&f), 9);
        assert!(!format!("{b:?}").contains("secret"));
    }

    #[test]
    fn bind_resp_error_has_no_body() {
        let f = encode_bind_resp(BindType::Transmitter, 0x0F, 3, "x");
        assert_eq!(f.len(), 16);
        let ok = encode_bind_resp(BindType::Transmitter, 0, 3, "smsc");
        assert_eq!(&ok[16..], b"smsc\0");
    }
}
