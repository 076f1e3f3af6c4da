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

use encoding_rs::{CoderResult, GB18030};

use crate::smpp::peek::{Addr, MessageView};
use crate::smpp::text as smpp_text;
pub use crate::smpp::text::Concat;

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
/// fields `smpp::text::{user_data, concat_info}` read are meaningful.
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
    smpp_text::user_data(&as_smpp(tp_udhi, content))
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
    match msg_fmt {
        fmt::UCS2 => smpp_text::decode_into(0x08, bytes, out),
        fmt::SIM_WRITE | fmt::BINARY => out.clear(),
        fmt::GB => {
            out.clear();
            gb18030_append(bytes, out);
        }
        _ => {
            out.clear();
            if bytes.is_ascii() {
                // ASCII is valid UTF-8: no copy through a decoder.
                out.push_str(std::str::from_utf8(bytes).unwrap_or_default());
            } else if let Ok(s) = std::str::from_utf8(bytes) {
                out.push_str(s);
            } else {
                gb18030_append(bytes, out);
            }
        }
    }
}

/// Appends the text of `bytes` decoded per `msg_fmt` and folded for content matching
/// ([`decode_into`] then [`crate::smpp::text::fold_append`]). UCS-2 is decoded and folded in
/// one pass (SMPP's fast path); the other formats go through `scratch`.
pub fn decode_fold_append(msg_fmt: u8, bytes: &[u8], scratch: &mut String, out: &mut String) {
    if msg_fmt == fmt::UCS2 {
        smpp_text::decode_fold_append(0x08, bytes, scratch, out);
        return;
    }
    decode_into(msg_fmt, bytes, scratch);
    smpp_text::fold_append(scratch, out);
}

/// GB18030 (GBK's superset) appended to `out`; malformed sequences become U+FFFD. The decoder
/// lives on the stack; `out` grows only when its capacity is short.
fn gb18030_append(bytes: &[u8], out: &mut String) {
    let mut d = GB18030.new_decoder_without_bom_handling();
    let mut src = bytes;
    loop {
        let need = d.max_utf8_buffer_length(src.len()).unwrap_or(src.len().saturating_mul(3));
        out.reserve(need);
        let (r, read, _) = d.decode_to_string(src, out, true);
        src = &src[read..];
        if r == CoderResult::InputEmpty {
            return;
        }
    }
}
