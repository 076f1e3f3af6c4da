//! Msg_Content as text, for keyword matching and content rules: the UDH skipped when TP_udhi
//! says there is one, the concatenation info of a long-message part, and decoding per Msg_Fmt
//! folded exactly as SMPP text is ([`crate::smpp::text::fold_append`]), so that one set of
//! keywords and content rules serves both protocols.
//!
//! Nothing here allocates on its own: the decoders append to caller-owned `String`s reused
//! across messages (the hot path's buffers), as [`crate::smpp::text`] does.
//!
//! | Msg_Fmt | decoded as |
//! |---|---|
//! | 0 ASCII | ASCII; with bytes ≥ 0x80, UTF-8 when valid, else GB18030 |
//! | 3 写卡 (SIM write), 4 binary | no text |
//! | 8 UCS-2 | UTF-16BE (surrogate pairs joined, a lone one → U+FFFD), SMPP's one-pass fold |
//! | 15 含GB汉字 | GB18030 (a superset of GBK; gocmpp and SMGP read 15 so), via `encoding_rs` |
//! | anything else (9, meaning unconfirmed; …) | as 0 |
//!
//! `TP_udhi` is taken as set when bit 0 (the spec, GSM 03.40 §9.2.3.23) or bit 6 (0x40, what
//! gateways pass through from SMPP's esm_class) is set. The UDH itself and its concatenation
//! elements (IEI 0x00 with an 8-bit reference, 0x08 with a 16-bit one) are read by
//! [`crate::smpp::text`]'s readers, over a stand-in SMPP view of the content.

use crate::smpp::peek::{Addr, MessageView};
pub use crate::smpp::text::Concat;
use crate::smpp::text::{self as smpp_text, Coding};

/// Msg_Fmt values (spec 3.0 §8.4.3.1).
pub mod fmt {
    pub const ASCII: u8 = 0;
    /// 写卡操作: SIM-card write, binary.
    pub const SIM_WRITE: u8 = 3;
    pub const BINARY: u8 = 4;
    pub const UCS2: u8 = 8;
    /// 含GB汉字: GBK / GB18030.
    pub const GB: u8 = 15;
}

/// Whether a TP_udhi byte says Msg_Content starts with a user data header (bit 0 or bit 6).
#[inline]
pub fn has_udh(tp_udhi: u8) -> bool {
    tp_udhi & 0x41 != 0
}

/// Whether Msg_Fmt carries text at all (3 and 4 do not).
#[inline]
pub fn is_text(msg_fmt: u8) -> bool {
    !matches!(msg_fmt, fmt::SIM_WRITE | fmt::BINARY)
}

/// The content as an SMPP view: UDHI in esm_class when TP_udhi says so, no TLVs. Only the
/// fields `smpp::text::concat_info` reads are meaningful.
fn as_smpp(tp_udhi: u8, content: &[u8]) -> MessageView<'_> {
    let none = Addr { ton: 0, npi: 0, addr: &[] };
    MessageView {
        command_id: 0,
        service_type: &[],
        source: none,
        destination: none,
        esm_class: if has_udh(tp_udhi) { 0x40 } else { 0 },
        registered_delivery: 0,
        data_coding: 0,
        short_message: content,
        tlvs: &[],
    }
}

/// The text part of Msg_Content: the UDH skipped when TP_udhi is set. A UDH length running
/// past the content leaves no trustworthy text: empty.
pub fn user_data(tp_udhi: u8, content: &[u8]) -> &[u8] {
    smpp_text::user_data(if has_udh(tp_udhi) { 0x40 } else { 0 }, content)
}

/// The coding of a Msg_Fmt (the table in the module docs).
pub fn coding(msg_fmt: u8) -> Coding {
    match msg_fmt {
        fmt::UCS2 => Coding::Ucs2,
        fmt::SIM_WRITE | fmt::BINARY => Coding::Binary,
        fmt::GB => Coding::Gb18030,
        _ => Coding::AsciiOrGb18030,
    }
}

/// The concatenation info of a long-message part from its UDH (IEI 0x00 `00 03 ref total seq`
/// or IEI 0x08 `08 04 refH refL total seq`); `None` without TP_udhi, without such an element,
/// or with total 0, seq 0 or seq > total. Pk_total / Pk_number of a SUBMIT repeat total/seq.
pub fn concat(tp_udhi: u8, content: &[u8]) -> Option<Concat> {
    smpp_text::concat_info(&as_smpp(tp_udhi, content))
}

/// Clears `out` and appends the text of `bytes` (UDH already skipped) decoded per `msg_fmt`
/// (table in the module docs). Never fails: undecodable input yields U+FFFD, binary nothing.
pub fn decode_into(msg_fmt: u8, bytes: &[u8], out: &mut String) {
    smpp_text::decode_into(coding(msg_fmt), bytes, out);
}

/// Appends the text of `bytes` decoded per `msg_fmt` and folded for content matching, exactly
/// as the decision pipeline folds SMPP text ([`crate::smpp::text::decode_fold_append`]).
pub fn decode_fold_append(msg_fmt: u8, bytes: &[u8], scratch: &mut String, out: &mut String) {
    smpp_text::decode_fold_append(coding(msg_fmt), bytes, scratch, out);
}
