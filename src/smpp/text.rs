//! Message text for keyword matching and content rules (architecture §2 "Text"): the user data with
//! the UDH skipped, decoding per data_coding, and the concatenation info of a segment; and the
//! other way, for the load generator: text encoded per [`Encoding`] and split into
//! concatenated parts ([`split_text`]). Both directions use the one GSM 03.38 table here.
//!
//! Nothing here allocates on its own: [`decode_into`] appends to a caller-owned `String` that is
//! reused across messages, so once it has grown to the largest text seen, decoding is
//! allocation-free.
//!
//! data_coding handled (SMPP v3.4 §5.2.19, GSM 03.38 §4; `smpp-tech.md` §2.10):
//!
//! | data_coding | decoded as |
//! |---|---|
//! | 0x00 | GSM 03.38 default alphabet, unpacked (one septet per byte) with the 0x1B extension table |
//! | 0x01 | IA5 / ASCII |
//! | 0x03 | Latin-1 (ISO-8859-1) |
//! | 0x08 | UCS-2, read as UTF-16BE (surrogate pairs joined; a lone surrogate → U+FFFD) |
//! | 0xC0–0xDF | GSM message-waiting groups, 7-bit default alphabet → GSM 03.38 |
//! | 0xE0–0xEF | GSM message-waiting group, UCS-2 → UTF-16BE |
//! | 0xF0–0xFF | GSM data coding / message class: bit 2 = 0 → GSM 03.38, bit 2 = 1 → 8-bit binary → no text |
//! | anything else | Latin-1, best effort |
//!
//! 7-bit codings (0x00, 0x01, and the GSM groups) carry bytes 0x00–0x7F only. A message labelled
//! 7-bit that contains a byte ≥ 0x80 is not 7-bit data: some SMSCs put Latin-1 or UTF-8 under
//! data_coding 0 (`smpp-tech.md` §2.10). Such a message is decoded as UTF-8 when it is valid
//! UTF-8 (a Chinese "退订" sent that way still matches), else as Latin-1.

use super::peek::{tlv, MessageView};

/// The text's bytes of a payload (short_message or message_payload): the user data header
/// skipped when UDHI (esm_class 0x40) is set. Every view's `user_data` comes here.
///
/// The UDH is `UDHL` followed by UDHL bytes of information elements (GSM 03.40 §9.2.3.24). A
/// UDHL that runs past the end of the payload means the header is corrupt and no boundary between
/// header and text can be trusted: the result is empty (no text) rather than header bytes
/// decoded as text.
pub fn user_data(esm_class: u8, payload: &[u8]) -> &[u8] {
    if esm_class & 0x40 == 0 {
        return payload;
    }
    match payload.split_first() {
        Some((&udhl, rest)) if (udhl as usize) <= rest.len() => &rest[udhl as usize..],
        _ => &[],
    }
}

/// How a message's user data is encoded, whichever protocol carried it: what its text is
/// decoded by ([`decode_into`]). SMPP's data_coding maps onto it by
/// [`Coding::of_data_coding`] (the table above).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// GSM 03.38 default alphabet, one septet per byte (UTF-8 or Latin-1 when a byte ≥ 0x80
    /// says it is not 7-bit data).
    Gsm7,
    /// IA5 / ASCII (likewise UTF-8 or Latin-1 past 0x7F).
    Ascii,
    /// Latin-1 (ISO-8859-1); also the best effort for codings without a decoder here.
    Latin1,
    /// UCS-2, read as UTF-16BE (surrogate pairs joined; a lone surrogate → U+FFFD).
    Ucs2,
    /// 8-bit binary (ports, OTA, WAP): no text.
    Binary,
    /// GB18030, GBK's superset (CMPP Msg_Fmt 15).
    Gb18030,
    /// ASCII; past 0x7F UTF-8 when valid, else GB18030 (CMPP Msg_Fmt 0: Chinese gateways put
    /// GBK there as often as UTF-8).
    AsciiOrGb18030,
}

impl Coding {
    /// The coding of an SMPP data_coding (the table in the module docs).
    pub fn of_data_coding(data_coding: u8) -> Coding {
        match data_coding {
            0x00 | 0xC0..=0xDF => Coding::Gsm7,
            0x01 => Coding::Ascii,
            0x08 | 0xE0..=0xEF => Coding::Ucs2,
            0xF0..=0xFF if data_coding & 0x04 == 0 => Coding::Gsm7,
            0xF0..=0xFF => Coding::Binary,
            _ => Coding::Latin1,
        }
    }
}

/// Clears `out` and appends the text of `bytes` decoded per `coding`. Never fails:
/// undecodable input yields U+FFFD or, for binary, nothing.
pub fn decode_into(coding: Coding, bytes: &[u8], out: &mut String) {
    out.clear();
    match coding {
        Coding::Gsm7 => gsm7_into(bytes, out),
        Coding::Ascii => utf8_or_latin1_into(bytes, out),
        Coding::Ucs2 => ucs2_into(bytes, out),
        Coding::Binary => {}
        Coding::Latin1 => latin1_into(bytes, out),
        Coding::Gb18030 => gb18030_append(bytes, out),
        Coding::AsciiOrGb18030 => match std::str::from_utf8(bytes) {
            Ok(s) => out.push_str(s),
            Err(_) => gb18030_append(bytes, out),
        },
    }
}

/// GB18030 (GBK's superset) appended to `out`; malformed sequences become U+FFFD. The decoder
/// lives on the stack; `out` grows only when its capacity is short.
fn gb18030_append(bytes: &[u8], out: &mut String) {
    use encoding_rs::{CoderResult, GB18030};
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

/// Clears `out` and appends `text` folded for content matching (architecture §3): full-width ASCII
/// and the ideographic space to their half-width forms ([`half_width`]), then Unicode simple
/// lower case (a no-op for CJK). Nothing is removed, so positions such as "starts with
/// 【signature】" survive.
pub fn fold_into(text: &str, out: &mut String) {
    out.clear();
    fold_append(text, out);
}

/// Appends the text of `bytes` decoded per `coding` and folded ([`decode_into`] then
/// [`fold_append`]). UCS-2 — nearly all Chinese traffic — is decoded and folded in one pass;
/// the other codings go through `scratch`.
pub fn decode_fold_append(coding: Coding, bytes: &[u8], scratch: &mut String, out: &mut String) {
    if coding == Coding::Ucs2 {
        ucs2_fold_append(bytes, out);
        return;
    }
    decode_into(coding, bytes, scratch);
    fold_append(scratch, out);
}

/// UCS-2 (UTF-16BE) decoded and folded straight into `out`'s bytes, one code unit at a time:
/// the same result as [`decode_into`] then [`fold_append`] (the `ucs2_fold_is_decode_then_fold`
/// test compares them), at ~1/3 of the cost of going through `char::decode_utf16` and
/// `String::push` — the UCS-2 text of a Chinese message is nearly all in the caseless blocks,
/// each unit three UTF-8 bytes written at once.
#[allow(unsafe_code)]
fn ucs2_fold_append(bytes: &[u8], out: &mut String) {
    const REPLACEMENT: [u8; 3] = [0xEF, 0xBF, 0xBD];
    // SAFETY: `v` is appended only whole UTF-8 encodings of scalar values — ASCII bytes, the
    // three-byte form of a BMP value outside the surrogates, U+FFFD, or `char::encode_utf8`
    // — so the string stays valid UTF-8.
    let v = unsafe { out.as_mut_vec() };
    v.reserve(bytes.len() / 2 * 3);
    let push_char = |v: &mut Vec<u8>, c: char| {
        for l in c.to_lowercase() {
            v.extend_from_slice(l.encode_utf8(&mut [0; 4]).as_bytes());
        }
    };
    // An odd trailing byte cannot form a code unit and is ignored.
    let mut units = bytes.chunks_exact(2).map(|p| u16::from_be_bytes([p[0], p[1]])).peekable();
    while let Some(u) = units.next() {
        match u {
            0..=0x7F => v.push((u as u8).to_ascii_lowercase()),
            0xFF01..=0xFF5E => v.push(((u - 0xFEE0) as u8).to_ascii_lowercase()),
            0x3000 => v.push(b' '),
            // The caseless blocks of [`caseless`] (surrogates excluded: D800 ends the range).
            0x2E80..=0xA63F | 0xAC00..=0xD7FF | 0xF900..=0xFFFF => {
                v.extend_from_slice(&[0xE0 | (u >> 12) as u8, 0x80 | ((u >> 6) & 0x3F) as u8, 0x80 | (u & 0x3F) as u8])
            }
            0xD800..=0xDBFF => match units.peek() {
                Some(&lo @ 0xDC00..=0xDFFF) => {
                    units.next();
                    let c = 0x10000 + ((u32::from(u) - 0xD800) << 10) + (u32::from(lo) - 0xDC00);
                    push_char(v, char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER));
                }
                // A lone high surrogate; the next unit is read on its own.
                _ => v.extend_from_slice(&REPLACEMENT),
            },
            0xDC00..=0xDFFF => v.extend_from_slice(&REPLACEMENT),
            _ => push_char(v, char::from_u32(u32::from(u)).unwrap_or(char::REPLACEMENT_CHARACTER)),
        }
    }
}

/// [`fold_into`] without clearing `out` first.
pub fn fold_append(text: &str, out: &mut String) {
    out.reserve(text.len());
    for c in text.chars() {
        fold_char(c, out);
    }
}

#[inline]
fn fold_char(c: char, out: &mut String) {
    let c = half_width(c);
    if c.is_ascii() {
        out.push(c.to_ascii_lowercase());
    } else if caseless(c) {
        out.push(c);
    } else {
        out.extend(c.to_lowercase());
    }
}

/// Blocks with no case mapping at all (CJK, kana, Hangul, Yi, CJK compatibility and the
/// half-/full-width forms once [`half_width`] has run): the common characters of Chinese
/// text skip `to_lowercase`'s table search (~10 ns a character).
#[inline]
fn caseless(c: char) -> bool {
    matches!(c as u32, 0x2E80..=0xA63F | 0xAC00..=0xD7FF | 0xF900..=0xFFFF)
}

/// Full-width forms of ASCII (U+FF01–U+FF5E) and the ideographic space to their ASCII form.
#[inline]
pub fn half_width(c: char) -> char {
    match c {
        '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
        '\u{3000}' => ' ',
        _ => c,
    }
}

/// Concatenation info of one segment of a long message (GSM 03.40 §9.2.3.24.1/.8, SMPP v3.4
/// §5.3.2.22–24).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Concat {
    /// Reference shared by all segments of one message (8-bit references are zero-extended).
    pub reference: u16,
    /// Number of segments, ≥ 1.
    pub total: u8,
    /// This segment's number, 1..=total.
    pub seq: u8,
}

/// IEI of the concatenated-SM information element with an 8-bit reference.
const IEI_CONCAT_8: u8 = 0x00;
/// IEI of the concatenated-SM information element with a 16-bit reference.
const IEI_CONCAT_16: u8 = 0x08;

/// The concatenation info of a message: from the UDH (IEI 0x00 `00 03 ref total seq`, IEI 0x08
/// `08 04 refH refL total seq`) when UDHI is set, else from the sar_msg_ref_num (0x020C),
/// sar_total_segments (0x020E) and sar_segment_seqnum (0x020F) TLVs, all three required.
///
/// An element with total = 0, seq = 0 or seq > total is ignored, as GSM 03.40 §9.2.3.24.1
/// tells the receiver to do. `None` means the message is not (recognisably) a segment.
pub fn concat_info(view: &MessageView) -> Option<Concat> {
    if view.has_udh() {
        if let Some(c) = udh_concat(view.payload()) {
            return Some(c);
        }
    }
    let reference = match view.tlv(tlv::SAR_MSG_REF_NUM)? {
        [h, l] => u16::from_be_bytes([*h, *l]),
        _ => return None,
    };
    let total = match view.tlv(tlv::SAR_TOTAL_SEGMENTS)? {
        [t] => *t,
        _ => return None,
    };
    let seq = match view.tlv(tlv::SAR_SEGMENT_SEQNUM)? {
        [s] => *s,
        _ => return None,
    };
    valid(Concat { reference, total, seq })
}

fn valid(c: Concat) -> Option<Concat> {
    (c.total != 0 && c.seq != 0 && c.seq <= c.total).then_some(c)
}

/// Walks the information elements of the UDH at the start of `payload`.
fn udh_concat(payload: &[u8]) -> Option<Concat> {
    let (&udhl, rest) = payload.split_first()?;
    let mut ies = rest.get(..udhl as usize)?;
    while let [iei, iel, tail @ ..] = ies {
        let data = tail.get(..*iel as usize)?;
        ies = &tail[*iel as usize..];
        let found = match (*iei, data) {
            (IEI_CONCAT_8, &[r, total, seq]) => valid(Concat { reference: r as u16, total, seq }),
            (IEI_CONCAT_16, &[rh, rl, total, seq]) => {
                valid(Concat { reference: u16::from_be_bytes([rh, rl]), total, seq })
            }
            _ => None,
        };
        if found.is_some() {
            return found;
        }
    }
    None
}

/// Length of the UDH [`put_udh_concat8`] writes.
pub const UDH_CONCAT8_LEN: usize = 6;
/// Offset of the reference byte within that UDH.
pub const UDH_CONCAT8_REF_AT: usize = 3;

/// Appends a UDH holding only the concatenated-SM element with an 8-bit reference:
/// `05 | 00 03 ref total seq` (GSM 03.40 §9.2.3.24.1), as `udh_concat` reads it.
pub fn put_udh_concat8(out: &mut Vec<u8>, reference: u8, total: u8, seq: u8) {
    out.extend_from_slice(&[UDH_CONCAT8_LEN as u8 - 1, IEI_CONCAT_8, 3, reference, total, seq]);
}

/// GSM 03.38 default alphabet, indexed by septet.
#[rustfmt::skip]
const GSM7_BASIC: [char; 128] = [
    '@', '£', '$', '¥', 'è', 'é', 'ù', 'ì', 'ò', 'Ç', '\n', 'Ø', 'ø', '\r', 'Å', 'å',
    'Δ', '_', 'Φ', 'Γ', 'Λ', 'Ω', 'Π', 'Ψ', 'Σ', 'Θ', 'Ξ', '\u{A0}', 'Æ', 'æ', 'ß', 'É',
    ' ', '!', '"', '#', '¤', '%', '&', '\'', '(', ')', '*', '+', ',', '-', '.', '/',
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', ':', ';', '<', '=', '>', '?',
    '¡', 'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K', 'L', 'M', 'N', 'O',
    'P', 'Q', 'R', 'S', 'T', 'U', 'V', 'W', 'X', 'Y', 'Z', 'Ä', 'Ö', 'Ñ', 'Ü', '§',
    '¿', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o',
    'p', 'q', 'r', 's', 't', 'u', 'v', 'w', 'x', 'y', 'z', 'ä', 'ö', 'ñ', 'ü', 'à',
];

/// Septet 0x1B: escape to the extension table for the next septet.
const GSM7_ESC: u8 = 0x1B;

/// GSM 03.38 extension table: the characters reached by 0x1B followed by this septet.
const GSM7_EXT: [(u8, char); 10] = [
    (0x0A, '\u{0C}'), // form feed
    (0x14, '^'),
    (0x28, '{'),
    (0x29, '}'),
    (0x2F, '\\'),
    (0x3C, '['),
    (0x3D, '~'),
    (0x3E, ']'),
    (0x40, '|'),
    (0x65, '€'),
];

/// The character after an escape. Unassigned codes fall back to the basic table, as
/// GSM 03.38 §6.2.1.1 tells the receiver to do.
fn gsm7_ext(septet: u8) -> char {
    match GSM7_EXT.iter().find(|&&(s, _)| s == septet) {
        Some(&(_, c)) => c,
        // 0x1B 0x1B would escape to a further table (none defined): show a space.
        None if septet == GSM7_ESC => ' ',
        None => GSM7_BASIC[septet as usize],
    }
}

fn gsm7_into(bytes: &[u8], out: &mut String) {
    if !bytes.is_ascii() {
        return utf8_or_latin1_into(bytes, out);
    }
    out.reserve(bytes.len());
    let mut rest = bytes;
    while !rest.is_empty() {
        // Runs of septets that are their own ASCII character (letters, digits, most
        // punctuation: nearly all of a Latin-script text) are copied whole.
        let run = rest.iter().position(|&b| !GSM7_SAME[b as usize]).unwrap_or(rest.len());
        if run > 0 {
            // All ASCII (checked above): valid UTF-8.
            out.push_str(std::str::from_utf8(&rest[..run]).unwrap_or_default());
            rest = &rest[run..];
            continue;
        }
        let b = rest[0];
        rest = &rest[1..];
        if b == GSM7_ESC {
            // A trailing lone escape carries no character.
            if let Some((&n, tail)) = rest.split_first() {
                out.push(gsm7_ext(n));
                rest = tail;
            }
        } else {
            out.push(GSM7_BASIC[b as usize]);
        }
    }
}

/// Septets that decode to the ASCII character of the same code.
const GSM7_SAME: [bool; 128] = {
    let mut t = [false; 128];
    let mut i = 0;
    while i < 128 {
        t[i] = GSM7_BASIC[i] as u32 == i as u32;
        i += 1;
    }
    t
};

/// IA5, and the fallback for 7-bit-labelled text with high bytes: UTF-8 when valid (all-ASCII
/// input always is), else Latin-1.
fn utf8_or_latin1_into(bytes: &[u8], out: &mut String) {
    match std::str::from_utf8(bytes) {
        Ok(s) => out.push_str(s),
        Err(_) => latin1_into(bytes, out),
    }
}

fn latin1_into(bytes: &[u8], out: &mut String) {
    out.reserve(bytes.len());
    out.extend(bytes.iter().map(|&b| b as char));
}

fn ucs2_into(bytes: &[u8], out: &mut String) {
    // An odd trailing byte cannot form a code unit and is ignored.
    let units = bytes.chunks_exact(2).map(|p| u16::from_be_bytes([p[0], p[1]]));
    out.reserve(bytes.len() / 2 * 3);
    out.extend(char::decode_utf16(units).map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER)));
}

// ---------------------------------------------------------------------------------------------
// Encoding (the load generator's scenario texts)

/// Text encoding of an outgoing message (scenario `encoding`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// GSM 03.38 default alphabet, unpacked (one septet per octet), data_coding 0x00.
    /// 160 septets per SMS, 153 per concatenated part.
    #[default]
    Gsm7,
    /// UTF-16BE, data_coding 0x08. 70 code units per SMS, 67 per part.
    Ucs2,
    /// ISO-8859-1, data_coding 0x03. 140 octets per SMS, 134 per part.
    Latin1,
}

impl Encoding {
    /// The data_coding a message in this encoding carries.
    pub fn data_coding(self) -> u8 {
        match self {
            Encoding::Gsm7 => 0x00,
            Encoding::Ucs2 => 0x08,
            Encoding::Latin1 => 0x03,
        }
    }

    /// (octets in a single SMS, octets of text in one concatenated part).
    pub fn limits(self) -> (usize, usize) {
        match self {
            Encoding::Gsm7 => (160, 153),
            Encoding::Ucs2 | Encoding::Latin1 => (140, 134),
        }
    }
}

/// A text that needs more than 255 concatenated parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("text needs {0} parts (at most 255)")]
pub struct TooManyParts(pub usize);

/// Appends the encoding of one character; a character the encoding lacks becomes `?`.
pub fn encode_char(c: char, enc: Encoding, out: &mut Vec<u8>) {
    match enc {
        Encoding::Gsm7 => gsm7_char(c, out),
        Encoding::Ucs2 => {
            let mut u = [0u16; 2];
            for unit in c.encode_utf16(&mut u) {
                out.extend_from_slice(&unit.to_be_bytes());
            }
        }
        Encoding::Latin1 => out.push(if (c as u32) <= 0xFF { c as u8 } else { b'?' }),
    }
}

/// Whether every character of `text` is in the GSM 7-bit default alphabet (or its extension).
pub fn is_gsm7(text: &str) -> bool {
    let mut buf = Vec::with_capacity(2);
    text.chars().all(|c| {
        buf.clear();
        gsm7_char(c, &mut buf);
        c == '?' || buf != [b'?']
    })
}

/// GSM 03.38, unpacked: the basic table, else escape + the extension table, else `?`.
fn gsm7_char(c: char, out: &mut Vec<u8>) {
    // Most text is ASCII that the basic table holds at the same code.
    if matches!(c, ' '..='#' | '%'..='?' | 'A'..='Z' | 'a'..='z') {
        out.push(c as u8);
        return;
    }
    // Position 0x1B is the escape, not a character of its own.
    if let Some(s) = GSM7_BASIC.iter().enumerate().position(|(s, &b)| b == c && s != GSM7_ESC as usize) {
        out.push(s as u8);
    } else if let Some(&(s, _)) = GSM7_EXT.iter().find(|&&(_, e)| e == c) {
        out.extend_from_slice(&[GSM7_ESC, s]);
    } else {
        out.push(b'?');
    }
}

/// Encodes `text` and returns the short_message of each part: one body without UDH when the
/// text fits one SMS, else parts that each begin with the 6-byte UDH `05 00 03 ref total seq`
/// ([`put_udh_concat8`]; ref 0 here, the sender patches it per message at
/// [`UDH_CONCAT8_REF_AT`]). Parts break only between characters, so neither a GSM escape pair
/// nor a UTF-16 surrogate pair is ever split.
pub fn split_text(text: &str, enc: Encoding) -> Result<Vec<Vec<u8>>, TooManyParts> {
    let mut bytes = Vec::with_capacity(text.len() * 2);
    let mut ends = Vec::with_capacity(text.len());
    for c in text.chars() {
        encode_char(c, enc, &mut bytes);
        ends.push(bytes.len());
    }
    let (single, part) = enc.limits();
    if bytes.len() <= single {
        return Ok(vec![bytes]);
    }
    let mut chunks = Vec::new();
    let (mut start, mut last) = (0, 0);
    for &end in &ends {
        if end - start > part {
            chunks.push(start..last);
            start = last;
        }
        last = end;
    }
    chunks.push(start..bytes.len());
    let total = chunks.len();
    if total > 255 {
        return Err(TooManyParts(total));
    }
    Ok(chunks
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let mut v = Vec::with_capacity(UDH_CONCAT8_LEN + r.len());
            put_udh_concat8(&mut v, 0, total as u8, (i + 1) as u8);
            v.extend_from_slice(&bytes[r]);
            v
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smpp::pdu::SubmitBuilder;
    use crate::smpp::peek;

    #[test]
    fn ucs2_fold_is_decode_then_fold() {
        // Units from every block the fast path splits on, surrogates paired and lone, odd tails.
        let picks: [u16; 16] = [
            0x41, 0x7A, 0xFF21, 0xFF5E, 0x3000, 0x4E2D, 0xAC00, 0xFFFD, 0xD83D, 0xDE00, 0xDC00, 0x0130, 0x0391, 0xA640,
            0xE000, 0x2E7F,
        ];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for len in 0..400 {
            let mut bytes = Vec::new();
            for _ in 0..len % 23 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let u = if x & 1 == 0 { picks[(x >> 1) as usize % picks.len()] } else { (x >> 16) as u16 };
                bytes.extend_from_slice(&u.to_be_bytes());
            }
            if len % 5 == 0 {
                bytes.push(0x4E);
            }
            let (mut scratch, mut want, mut got) = (String::new(), String::new(), String::from("x"));
            decode_into(Coding::Ucs2, &bytes, &mut scratch);
            want.push('x');
            fold_append(&scratch, &mut want);
            decode_fold_append(Coding::Ucs2, &bytes, &mut scratch, &mut got);
            assert_eq!(got, want, "units {bytes:02X?}");
        }
    }

    fn dec(dc: u8, b: &[u8]) -> String {
        let mut s = String::from("stale");
        decode_into(Coding::of_data_coding(dc), b, &mut s);
        s
    }

    #[test]
    fn gsm7_unpacked_text_and_specials() {
        // "STOP" in GSM 03.38 is the same code points as ASCII.
        assert_eq!(dec(0x00, &[0x53, 0x54, 0x4F, 0x50]), "STOP");
        // 0x00 '@', 0x01 '£', 0x02 '$' (not ASCII's NUL, SOH, STX).
        assert_eq!(dec(0x00, &[0x00, 0x01, 0x02]), "@£$");
        assert_eq!(dec(0x00, &[0x11, 0x24, 0x40, 0x5F, 0x60, 0x7F]), "_¤¡§¿à");
        // Extension table: 1B 65 = €, and the bracket family.
        assert_eq!(dec(0x00, &[0x1B, 0x65, 0x35]), "€5");
        assert_eq!(
            dec(
                0x00,
                &[0x1B, 0x3C, 0x1B, 0x3E, 0x1B, 0x28, 0x1B, 0x29, 0x1B, 0x2F, 0x1B, 0x3D, 0x1B, 0x14, 0x1B, 0x40]
            ),
            "[]{}\\~^|"
        );
        // Unassigned extension code falls back to the basic table; a trailing escape is dropped.
        assert_eq!(dec(0x00, &[0x1B, 0x41, 0x42, 0x1B]), "AB");
        // GSM class/coding group with bit 2 clear is GSM 7-bit too; with bit 2 set it is binary.
        assert_eq!(dec(0xF0, b"STOP"), "STOP");
        assert_eq!(dec(0xF4, b"STOP"), "");
    }

    #[test]
    fn seven_bit_label_with_high_bytes_is_utf8_or_latin1() {
        assert_eq!(dec(0x00, "退订".as_bytes()), "退订");
        assert_eq!(dec(0x00, &[b'T', 0xC9]), "TÉ"); // invalid UTF-8 → Latin-1
        assert_eq!(dec(0x01, b"TD"), "TD");
    }

    #[test]
    fn latin1_and_unknown_codings() {
        assert_eq!(dec(0x03, &[b'T', b'D', 0xE9, 0xA0]), "TDé\u{A0}");
        assert_eq!(dec(0x04, b"STOP"), "STOP"); // 8-bit "binary", Latin-1 best effort
    }

    #[test]
    fn ucs2_chinese_surrogates_and_odd_bytes() {
        // 退 U+9000, 订 U+8BA2.
        assert_eq!(dec(0x08, &[0x90, 0x00, 0x8B, 0xA2]), "退订");
        // 😀 U+1F600 = D83D DE00.
        assert_eq!(dec(0x08, &[0xD8, 0x3D, 0xDE, 0x00, 0x00, 0x41]), "😀A");
        // Lone high surrogate, then 'A'; odd trailing byte ignored.
        assert_eq!(dec(0x08, &[0xD8, 0x3D, 0x00, 0x41, 0x42]), "\u{FFFD}A");
        // Lone low surrogate.
        assert_eq!(dec(0x08, &[0xDE, 0x00]), "\u{FFFD}");
        // MWI UCS-2 group.
        assert_eq!(dec(0xE0, &[0x00, 0x54, 0x00, 0x44]), "TD");
    }

    #[test]
    fn udh_is_skipped_and_concat_read_8bit() {
        // GSM 03.40 §9.2.3.24.1: 05 | 00 03 ref total seq.
        let sm = [0x05, 0x00, 0x03, 0x2A, 0x02, 0x01, b'S', b'T', b'O', b'P'];
        let f = SubmitBuilder::new("8613800138000", "10690").deliver().esm_class(0x40).short_message(&sm).build(1);
        let v = peek::message(&f).unwrap();
        assert_eq!(v.user_data(), b"STOP");
        assert_eq!(concat_info(&v), Some(Concat { reference: 0x2A, total: 2, seq: 1 }));
        // Without UDHI the same bytes are all text and there is no concat info.
        let f = SubmitBuilder::new("8613800138000", "10690").deliver().short_message(&sm).build(1);
        let v = peek::message(&f).unwrap();
        assert_eq!(v.user_data(), &sm[..]);
        assert_eq!(concat_info(&v), None);
    }

    #[test]
    fn udh_16bit_reference_after_another_ie() {
        // UDHL 0x0C: IE 0x05 (port addressing, 4 bytes) then IE 0x08 refH refL total seq.
        let sm = [0x0C, 0x05, 0x04, 0x0B, 0x84, 0x23, 0xF0, 0x08, 0x04, 0x12, 0x34, 0x03, 0x03, 0x90, 0x00, 0x8B, 0xA2];
        let f = SubmitBuilder::new("a", "b").esm_class(0x43).data_coding(8).short_message(&sm).build(1);
        let v = peek::message(&f).unwrap();
        assert_eq!(concat_info(&v), Some(Concat { reference: 0x1234, total: 3, seq: 3 }));
        assert_eq!(dec(v.data_coding, v.user_data()), "退订");
    }

    #[test]
    fn bad_udh_is_harmless() {
        // UDHL claims 9 bytes of header, only 3 follow: no text, no concat.
        let f = SubmitBuilder::new("a", "b").esm_class(0x40).short_message(&[0x09, 0x00, 0x03]).build(1);
        let v = peek::message(&f).unwrap();
        assert_eq!(v.user_data(), b"");
        assert_eq!(concat_info(&v), None);
        // Empty short_message with UDHI.
        let f = SubmitBuilder::new("a", "b").esm_class(0x40).build(1);
        let v = peek::message(&f).unwrap();
        assert_eq!(v.user_data(), b"");
        // IE length running past UDHL; seq > total is ignored.
        for sm in [&[0x03, 0x00, 0x03, 0x01, b'x'][..], &[0x05, 0x00, 0x03, 0x01, 0x02, 0x03, b'x']] {
            let f = SubmitBuilder::new("a", "b").esm_class(0x40).short_message(sm).build(1);
            assert_eq!(concat_info(&peek::message(&f).unwrap()), None);
        }
    }

    #[test]
    fn sar_tlvs_and_message_payload() {
        let f = SubmitBuilder::new("a", "b")
            .tlv(tlv::SAR_MSG_REF_NUM, &[0xAB, 0xCD])
            .tlv(tlv::SAR_TOTAL_SEGMENTS, &[2])
            .tlv(tlv::SAR_SEGMENT_SEQNUM, &[2])
            .tlv(tlv::MESSAGE_PAYLOAD, b"STOP")
            .build(1);
        let v = peek::message(&f).unwrap();
        assert_eq!(concat_info(&v), Some(Concat { reference: 0xABCD, total: 2, seq: 2 }));
        assert_eq!(v.user_data(), b"STOP");
        // Missing one of the three SAR TLVs: not a segment.
        let f =
            SubmitBuilder::new("a", "b").tlv(tlv::SAR_MSG_REF_NUM, &[0, 1]).tlv(tlv::SAR_TOTAL_SEGMENTS, &[2]).build(1);
        assert_eq!(concat_info(&peek::message(&f).unwrap()), None);
    }

    #[test]
    fn long_gsm7_text_splits_into_two_parts_with_udh() {
        let text: String = (0..200).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        let parts = split_text(&text, Encoding::Gsm7).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(&parts[0][..6], &[0x05, 0x00, 0x03, 0, 2, 1]);
        assert_eq!(&parts[1][..6], &[0x05, 0x00, 0x03, 0, 2, 2]);
        assert_eq!(parts[0].len(), 6 + 153);
        assert_eq!(parts[1].len(), 6 + 47);
        assert_eq!(&parts[0][6..], &text.as_bytes()[..153]);
        // 160 septets still fit one SMS, without UDH; GSM specials are mapped.
        let one = split_text(&"x".repeat(160), Encoding::Gsm7).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].len(), 160);
        assert_eq!(split_text("@$_{", Encoding::Gsm7).unwrap()[0], vec![0x00, 0x02, 0x11, 0x1B, 0x28]);
        // An escape pair is never split across parts.
        let esc = format!("{}{{{}", "a".repeat(152), "b".repeat(20));
        let p = split_text(&esc, Encoding::Gsm7).unwrap();
        assert_eq!(p[0].len(), 6 + 152);
        assert_eq!(&p[1][6..8], &[0x1B, 0x28]);
    }

    #[test]
    fn long_ucs2_text_splits_at_67_chars_per_part() {
        let text: String = "中".repeat(100);
        let parts = split_text(&text, Encoding::Ucs2).unwrap();
        assert_eq!(parts.len(), 2);
        for (i, p) in parts.iter().enumerate() {
            assert!(p.len() <= 140, "part {i} is {} bytes", p.len());
            assert_eq!(&p[..6], &[0x05, 0x00, 0x03, 0, 2, i as u8 + 1]);
        }
        assert_eq!(parts[0].len(), 6 + 134);
        assert_eq!(&parts[0][6..8], &[0x4E, 0x2D]);
        assert_eq!(split_text(&"中".repeat(70), Encoding::Ucs2).unwrap().len(), 1);
        assert_eq!(split_text("é€", Encoding::Latin1).unwrap()[0], vec![0xE9, b'?']);
    }

    #[test]
    fn caseless_blocks_fold_as_to_lowercase_would() {
        for r in [0x2E80u32..=0xA63F, 0xAC00..=0xD7FF, 0xF900..=0xFFFF] {
            for c in r.filter_map(char::from_u32) {
                let c = half_width(c);
                if !c.is_ascii() {
                    assert!(c.to_lowercase().eq(std::iter::once(c)), "{c:?} U+{:04X}", c as u32);
                }
            }
        }
    }

    #[test]
    fn ucs2_decode_and_fold_in_one_pass_equals_two() {
        let text = "【ＡＣＭＥ商城】Sale ÄÖ 50% off，回T退订 \u{1F600}";
        let ucs2: Vec<u8> = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
        let (mut scratch, mut one, mut two) = (String::new(), String::from("x"), String::new());
        decode_fold_append(Coding::Ucs2, &ucs2, &mut scratch, &mut one);
        decode_into(Coding::Ucs2, &ucs2, &mut scratch);
        fold_into(&scratch, &mut two);
        assert_eq!(one, format!("x{two}"));
        assert!(one.starts_with("x【acme商城】sale äö"), "{one}");
    }

    #[test]
    fn gsm7_or_not() {
        assert!(is_gsm7("Sale? 50% off {today} €5"));
        assert!(!is_gsm7("【Acme】 sale"));
    }

    #[test]
    fn gsm7_encoder_and_decoder_round_trip_every_character() {
        let enc = |c: char| {
            let mut v = Vec::new();
            encode_char(c, Encoding::Gsm7, &mut v);
            v
        };
        for (s, &c) in GSM7_BASIC.iter().enumerate() {
            if s == GSM7_ESC as usize {
                continue;
            }
            assert_eq!(enc(c), vec![s as u8], "{c:?}");
            assert_eq!(dec(0x00, &[s as u8]), c.to_string());
        }
        for &(s, c) in &GSM7_EXT {
            assert_eq!(enc(c), vec![GSM7_ESC, s], "{c:?}");
            assert_eq!(dec(0x00, &[GSM7_ESC, s]), c.to_string());
        }
        // Not in the alphabet: '?'. The escape position's NBSP is not encodable either.
        assert_eq!(enc('中'), b"?");
        assert_eq!(enc('\u{A0}'), b"?");
        assert_eq!(enc('`'), b"?");
        // The whole alphabet as one text decodes back to itself.
        let all: String =
            GSM7_BASIC.iter().enumerate().filter(|&(s, _)| s != GSM7_ESC as usize).map(|(_, &c)| c).collect();
        let all = all + &GSM7_EXT.iter().map(|&(_, c)| c).collect::<String>();
        let parts = split_text(&all, Encoding::Gsm7).unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(dec(0x00, &parts[0]), all);
    }

    #[test]
    fn udh_builder_is_read_back_by_concat_info() {
        let mut sm = Vec::new();
        put_udh_concat8(&mut sm, 0x2A, 3, 2);
        assert_eq!(sm, [0x05, 0x00, 0x03, 0x2A, 0x03, 0x02]);
        assert_eq!(sm.len(), UDH_CONCAT8_LEN);
        assert_eq!(sm[UDH_CONCAT8_REF_AT], 0x2A);
        assert_eq!(udh_concat(&sm), Some(Concat { reference: 0x2A, total: 3, seq: 2 }));
    }
}
