//! MO opt-out capture (architecture §1): is this mobile-originated message a subscriber saying
//! "stop"? Pure and allocation-free per call; the session calls [`detect`] on each deliver_sm /
//! data_sm from the SMSC and, on a match, journals a revocation for (MO source_addr, entity of
//! the session) and applies it to the delta. The MO itself is still delivered to the ESME.
//!
//! Matching is on the **whole message**: the decoded text ([`crate::smpp::text`]) is normalised
//! ([`normalise_into`]) and must equal one normalised keyword. "STOP" and " Stop. " are opt-outs;
//! "Stop the car" and "STOP PLEASE" are not. A substring or first-word rule would turn ordinary
//! replies ("T恤还有吗", "End of the month?") into revocations the subscriber never meant, and
//! operators who want phrases ("STOP ALL", "回复TD") add them to `policy.optout_keywords`.
//!
//! Segments of a multi-part MO (concatenation total > 1) never match: a keyword is a whole
//! message and fits in one SMS, and a part's own text (e.g. a trailing " STOP" split off a long
//! reply) is not the message. A single part with a UDH (concat 1/1, port addressing) is matched on
//! its text with the header skipped.

use crate::smpp::peek::MessageView;
use crate::smpp::text::half_width;
use crate::smpp::{cmd, text};

/// The default opt-out keywords (architecture §1): Chinese carrier practice (T, TD, R, 退订, 取消) and
/// the international ones.
pub const DEFAULT_KEYWORDS: &[&str] =
    &["T", "TD", "R", "退订", "取消", "STOP", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT"];

/// The metric label [`detect`] returns for a keyword match (`consentgate_optouts_total`).
pub const MATCH_KEYWORD: &str = "keyword";

/// A set of opt-out keywords, stored normalised, sorted and de-duplicated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keywords {
    words: Vec<Box<str>>,
}

impl Keywords {
    /// Builds the set from configured keywords, normalising each like an MO text. Keywords that
    /// normalise to nothing (empty, only spaces or punctuation) are dropped, so an empty MO never
    /// matches.
    pub fn new<S: AsRef<str>>(words: &[S]) -> Keywords {
        let mut buf = String::new();
        let mut v: Vec<Box<str>> = words
            .iter()
            .filter_map(|w| {
                normalise_into(w.as_ref(), &mut buf);
                (!buf.is_empty()).then(|| buf.as_str().into())
            })
            .collect();
        v.sort_unstable();
        v.dedup();
        Keywords { words: v }
    }

    /// Whether `normalised` (output of [`normalise_into`]) is exactly one of the keywords.
    pub fn matches(&self, normalised: &str) -> bool {
        self.words.binary_search_by(|w| (**w).cmp(normalised)).is_ok()
    }

    /// The normalised keywords, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.words.iter().map(|w| &**w)
    }

    pub fn len(&self) -> usize {
        self.words.len()
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }
}

impl Default for Keywords {
    fn default() -> Keywords {
        Keywords::new(DEFAULT_KEYWORDS)
    }
}

/// What a whole-message MO says ([`intent`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// An opt-out keyword: record a refusal.
    OptOut,
    /// An opt-in keyword (`policy.opt_in_keywords`, e.g. the US `START`): record a grant.
    OptIn,
}

/// Caller-owned buffers for [`detect`]; keep one per session so detection does not allocate
/// once the buffers have grown.
#[derive(Debug, Default)]
pub struct Scratch {
    decoded: String,
    normalised: String,
}

impl Scratch {
    /// The normalised text of the last message [`detect`] looked at (tests, debugging; never
    /// log or label with it: it is subscriber content).
    pub fn normalised(&self) -> &str {
        &self.normalised
    }
}

/// Whether `view` is an MO opt-out: a deliver_sm or data_sm that is not a receipt
/// (esm_class bits 2–5 clear), not a segment of a multi-part message, whose decoded and
/// normalised text equals a keyword. Returns the metric label of the match ([`MATCH_KEYWORD`]).
pub fn detect(view: &MessageView, kw: &Keywords, scratch: &mut Scratch) -> Option<&'static str> {
    intent(view, kw, &Keywords::new::<&str>(&[]), scratch).map(|_| MATCH_KEYWORD)
}

/// Whether `view` is an MO whose whole text is an opt-out keyword (`out`, checked first) or an
/// opt-in keyword (`opt_in`); the same MOs as [`detect`] are looked at.
pub fn intent(view: &MessageView, out: &Keywords, opt_in: &Keywords, scratch: &mut Scratch) -> Option<Intent> {
    if !matches!(view.command_id, cmd::DELIVER_SM | cmd::DATA_SM) || view.is_receipt() {
        return None;
    }
    if text::concat_info(view).is_some_and(|c| c.total > 1) {
        return None;
    }
    intent_text(text::Coding::of_data_coding(view.data_coding), view.user_data(), out, opt_in, scratch)
}

/// [`intent`] for any protocol's MO once it is known to be a whole message and not a report.
pub fn intent_text(
    coding: text::Coding,
    user_data: &[u8],
    out: &Keywords,
    opt_in: &Keywords,
    scratch: &mut Scratch,
) -> Option<Intent> {
    text::decode_into(coding, user_data, &mut scratch.decoded);
    normalise_into(&scratch.decoded, &mut scratch.normalised);
    if out.matches(&scratch.normalised) {
        Some(Intent::OptOut)
    } else if opt_in.matches(&scratch.normalised) {
        Some(Intent::OptIn)
    } else {
        None
    }
}

/// Whether the text of an MO's user data (UDH already skipped), decoded per `coding` and
/// normalised, equals a keyword: [`detect`] for any protocol's MO once it is known to be a
/// whole message and not a report.
pub fn detect_text(
    coding: text::Coding,
    user_data: &[u8],
    kw: &Keywords,
    scratch: &mut Scratch,
) -> Option<&'static str> {
    text::decode_into(coding, user_data, &mut scratch.decoded);
    normalise_into(&scratch.decoded, &mut scratch.normalised);
    kw.matches(&scratch.normalised).then_some(MATCH_KEYWORD)
}

/// Clears `out` and appends the normalised form of `text` used for keyword matching:
///
/// * full-width ASCII (U+FF01–U+FF5E) → half-width, ideographic space U+3000 → space;
/// * lower-cased (Unicode simple lower case; a no-op for CJK);
/// * whitespace and control characters (CR, LF, NUL padding) collapsed to single spaces;
///   zero-width space and BOM dropped;
/// * leading and trailing whitespace and punctuation removed (". 。 ! ? , ， 、 ; : ~ quotes
///   brackets" and their full-width forms): "“TD”。" → "td".
///
/// Internal punctuation is kept: "t.d" stays "t.d".
pub fn normalise_into(text: &str, out: &mut String) {
    out.clear();
    let mut pending_space = false;
    for c in text.chars() {
        let c = half_width(c);
        if c.is_whitespace() || c.is_control() {
            pending_space = true;
            continue;
        }
        if matches!(c, '\u{200B}' | '\u{FEFF}') {
            continue;
        }
        if out.is_empty() && is_edge_punct(c) {
            continue; // leading punctuation
        }
        if pending_space && !out.is_empty() {
            out.push(' ');
        }
        pending_space = false;
        if c.is_ascii() {
            out.push(c.to_ascii_lowercase());
        } else {
            out.extend(c.to_lowercase());
        }
    }
    while let Some(c) = out.chars().next_back() {
        if c == ' ' || is_edge_punct(c) {
            out.pop();
        } else {
            break;
        }
    }
}

/// Punctuation stripped from either end of a message (after [`half_width`]).
#[inline]
fn is_edge_punct(c: char) -> bool {
    matches!(
        c,
        '.' | '!'
            | '?'
            | ','
            | ';'
            | ':'
            | '~'
            | '\''
            | '"'
            | '('
            | ')'
            | '['
            | ']'
            | '。'
            | '，'
            | '、'
            | '；'
            | '：'
            | '～'
            | '…'
            | '“'
            | '”'
            | '‘'
            | '’'
            | '「'
            | '」'
            | '【'
            | '】'
            | '《'
            | '》'
            | '¡'
            | '¿'
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smpp::pdu::SubmitBuilder;
    use crate::smpp::peek;

    fn norm(s: &str) -> String {
        let mut out = String::from("stale");
        normalise_into(s, &mut out);
        out
    }

    /// deliver_sm from the SMSC: MO from a subscriber to a service number.
    fn mo(dc: u8, esm: u8, sm: &[u8]) -> bytes::BytesMut {
        SubmitBuilder::new("8613800138000", "1069012345")
            .deliver()
            .esm_class(esm)
            .data_coding(dc)
            .short_message(sm)
            .build(7)
    }

    fn detect_frame(frame: &[u8]) -> Option<&'static str> {
        let v = peek::message(frame).unwrap();
        detect(&v, &Keywords::default(), &mut Scratch::default())
    }

    #[test]
    fn normalisation() {
        assert_eq!(norm(" Stop. "), "stop");
        assert_eq!(norm("ｔｄ"), "td");
        assert_eq!(norm("\u{3000}ＴＤ！\u{3000}"), "td");
        assert_eq!(norm("退订。"), "退订");
        assert_eq!(norm("“TD”"), "td");
        assert_eq!(norm("Opt \r\n  Out!!"), "opt out");
        assert_eq!(norm("STOP\0\0"), "stop");
        assert_eq!(norm("\u{FEFF}STOP"), "stop");
        assert_eq!(norm("t.d"), "t.d");
        assert_eq!(norm("..."), "");
        assert_eq!(norm(""), "");
    }

    #[test]
    fn keywords_default_set_and_exact_match() {
        let kw = Keywords::default();
        assert_eq!(kw.len(), DEFAULT_KEYWORDS.len());
        for w in ["t", "td", "r", "退订", "取消", "stop", "unsubscribe", "cancel", "end", "quit", "optout"] {
            assert!(kw.matches(w), "{w}");
        }
        assert!(!kw.matches("stop please"));
        assert!(!kw.matches("stop the car"));
        assert!(!kw.matches(""));
        // Configured keywords are normalised and empty ones dropped.
        let kw = Keywords::new(&["ＳＴＯＰ ＡＬＬ", " ", "!", "stop all"]);
        assert_eq!(kw.iter().collect::<Vec<_>>(), ["stop all"]);
    }

    #[test]
    fn detects_ucs2_chinese() {
        assert_eq!(detect_frame(&mo(0x08, 0, &[0x90, 0x00, 0x8B, 0xA2])), Some(MATCH_KEYWORD));
        // 取消 U+53D6 U+6D88, followed by a full-width full stop U+3002.
        assert_eq!(detect_frame(&mo(0x08, 0, &[0x53, 0xD6, 0x6D, 0x88, 0x30, 0x02])), Some(MATCH_KEYWORD));
        // Full-width "ｔｄ" in UCS-2: FF54 FF44.
        assert_eq!(detect_frame(&mo(0x08, 0, &[0xFF, 0x54, 0xFF, 0x44])), Some(MATCH_KEYWORD));
    }

    #[test]
    fn detects_gsm7_latin1_and_padded() {
        assert_eq!(detect_frame(&mo(0x00, 0, &[0x53, 0x54, 0x4F, 0x50])), Some(MATCH_KEYWORD));
        assert_eq!(detect_frame(&mo(0x00, 0, b" Stop. ")), Some(MATCH_KEYWORD));
        assert_eq!(detect_frame(&mo(0x03, 0, b"TD")), Some(MATCH_KEYWORD));
        assert_eq!(detect_frame(&mo(0x03, 0, b"td\xA0")), Some(MATCH_KEYWORD)); // trailing NBSP
    }

    #[test]
    fn phrases_and_other_text_do_not_match() {
        // Whole-message rule: a keyword followed by more words is not an opt-out.
        assert_eq!(detect_frame(&mo(0x00, 0, b"STOP PLEASE")), None);
        assert_eq!(detect_frame(&mo(0x00, 0, b"Stop the car")), None);
        assert_eq!(detect_frame(&mo(0x00, 0, b"")), None);
        // GSM 0x00 is '@', not NUL: "@" is not punctuation and not a keyword.
        assert_eq!(detect_frame(&mo(0x00, 0, &[0x00])), None);
    }

    #[test]
    fn receipts_and_submits_never_match() {
        // esm_class 0x04: SMSC delivery receipt, even if its text were "STOP".
        assert_eq!(detect_frame(&mo(0x00, 0x04, b"STOP")), None);
        assert_eq!(detect_frame(&mo(0x00, 0x08, b"STOP")), None); // SME delivery ack
        let submit = SubmitBuilder::new("1069012345", "8613800138000").short_message(b"STOP").build(1);
        assert_eq!(detect_frame(&submit), None);
    }

    #[test]
    fn multipart_mo_is_matched_on_its_own_text_only() {
        // Part 2 of 2 whose own text is " STOP": the message is longer than a keyword.
        let part2 = [0x05, 0x00, 0x03, 0x11, 0x02, 0x02, b' ', b'S', b'T', b'O', b'P'];
        assert_eq!(detect_frame(&mo(0x00, 0x40, &part2)), None);
        // A single part (1/1) with a UDH: the header bytes (which read as GSM text would be
        // "\u{5}@\u{3}…") are skipped and the text "TD" matches.
        let single = [0x05, 0x00, 0x03, 0x11, 0x01, 0x01, b'T', b'D'];
        assert_eq!(detect_frame(&mo(0x00, 0x40, &single)), Some(MATCH_KEYWORD));
        // UCS-2 with a 16-bit-reference UDH, 1/1.
        let single16 = [0x06, 0x08, 0x04, 0x12, 0x34, 0x01, 0x01, 0x90, 0x00, 0x8B, 0xA2];
        assert_eq!(detect_frame(&mo(0x08, 0x40, &single16)), Some(MATCH_KEYWORD));
        // The same bytes without UDHI are not a keyword: the header is text then.
        assert_eq!(detect_frame(&mo(0x00, 0, &single)), None);
    }

    #[test]
    fn mo_text_in_message_payload() {
        let f = SubmitBuilder::new("8613800138000", "1069012345")
            .deliver()
            .data_coding(0x08)
            .tlv(crate::smpp::peek::tlv::MESSAGE_PAYLOAD, &[0x90, 0x00, 0x8B, 0xA2])
            .build(3);
        assert_eq!(detect_frame(&f), Some(MATCH_KEYWORD));
    }

    #[test]
    fn scratch_is_reused_without_growth() {
        let kw = Keywords::default();
        let mut s = Scratch::default();
        let f = mo(0x08, 0, &[0x90, 0x00, 0x8B, 0xA2]);
        let v = peek::message(&f).unwrap();
        assert!(detect(&v, &kw, &mut s).is_some());
        let caps = (s.decoded.capacity(), s.normalised.capacity());
        for _ in 0..100 {
            assert!(detect(&v, &kw, &mut s).is_some());
        }
        assert_eq!((s.decoded.capacity(), s.normalised.capacity()), caps);
        assert_eq!(s.normalised(), "退订");
    }
}
