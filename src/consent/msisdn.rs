//! Subscriber numbers as E.164 digits in a `u64` (architecture §4).
//!
//! Every MSISDN the gateway compares — a submit_sm destination, an MO source, a CSV row, a CLI
//! argument — goes through [`normalise`] so that `+8613812345678`, `008613812345678` and the
//! national `13812345678` (default country code 86) are the same key: `8613812345678`.
//! [`normalise`] is on the hot path: no allocation, one pass over at most 21 bytes.
//!
//! # Rules
//!
//! The address holds ASCII digits, optionally after one leading `+`; anything else is
//! [`MsisdnError::NotDigits`] (SMPP addresses carry no spaces or dashes). The country code
//! `default_cc` is 1–3 digits without a leading zero.
//!
//! | TON (v3.4 §5.2.5) | `+…` or `00…` | leading single `0` | other digits |
//! |---|---|---|---|
//! | 1 international | international | refused (no country code starts with 0) | international as is |
//! | 2 national | international | trunk `0` stripped, `default_cc` prepended | `default_cc` prepended |
//! | 0 unknown, 3 network specific, 4 subscriber number | international | national (as TON 2) | international if it starts with `default_cc` and has ≥ 11 digits, else national |
//! | 5 alphanumeric, 6 abbreviated (short code), 7+ reserved | [`MsisdnError::NotSubscriber`] | | |
//!
//! The result must have 7–15 digits (E.164 allows at most 15; 7 is the shortest subscriber
//! number in use with a country code) and its first digit cannot be 0.
//!
//! **NPI is not used to refuse an address.** NPI 1 (ISDN/E.164) and 0 (unknown) are the values
//! ESMEs send; other plans (8 national, 9 private, 6 E.212 …) are normalised with the same TON
//! rules rather than refused. Many SMSCs route on the digits alone, so refusing them would let a
//! sender dodge the do-not-call list under the opt-out regime just by setting NPI 9; under
//! opt-in a refusal and an unknown number lead to the same reject anyway. A non-E.164 address
//! (an IMSI, a private short code) normalises to a number no consent record names, or fails the
//! length check.
//!
//! Known limit: the trunk-prefix rule assumes the national `0` is not part of the number, which
//! holds for China, India, the UK and most plans but not for Italy (+39 06…); such numbers must
//! be sent international (TON 1) there.

/// Type of number values (SMPP v3.4 §5.2.5).
pub mod ton {
    pub const UNKNOWN: u8 = 0;
    pub const INTERNATIONAL: u8 = 1;
    pub const NATIONAL: u8 = 2;
    pub const NETWORK_SPECIFIC: u8 = 3;
    pub const SUBSCRIBER_NUMBER: u8 = 4;
    pub const ALPHANUMERIC: u8 = 5;
    pub const ABBREVIATED: u8 = 6;
}

/// Numbering plan indicator values (SMPP v3.4 §5.2.6) that ESMEs commonly send.
pub mod npi {
    pub const UNKNOWN: u8 = 0;
    pub const ISDN: u8 = 1;
    pub const NATIONAL: u8 = 8;
    pub const PRIVATE: u8 = 9;
}

/// Smallest valid normalised number (7 digits).
pub const MIN_MSISDN: u64 = 1_000_000;
/// Largest valid normalised number (15 digits, the E.164 maximum).
pub const MAX_MSISDN: u64 = 999_999_999_999_999;

/// Why an address is not a subscriber number. Returned by [`normalise`] and
/// [`normalise_text`]; [`MsisdnError::as_str`] is the stable label for metrics and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum MsisdnError {
    /// No digits at all (empty address, or only `+` / `00`).
    #[error("empty number")]
    Empty,
    /// A byte other than ASCII digits and one leading `+`.
    #[error("not digits (only 0-9 and a leading '+' are allowed)")]
    NotDigits,
    /// Fewer than 7 or more than 15 digits after normalisation.
    #[error("not 7 to 15 digits with the country code (E.164)")]
    BadLength,
    /// Alphanumeric sender, short code or reserved TON: no subscriber can be named by it.
    #[error("not a subscriber number (alphanumeric or short code)")]
    NotSubscriber,
    /// An international number starting with 0, or a `default_cc` that is not 1–3 digits
    /// without a leading zero.
    #[error("missing or invalid country code")]
    BadCountryCode,
}

impl MsisdnError {
    /// Stable snake_case label.
    pub fn as_str(self) -> &'static str {
        match self {
            MsisdnError::Empty => "empty",
            MsisdnError::NotDigits => "not_digits",
            MsisdnError::BadLength => "bad_length",
            MsisdnError::NotSubscriber => "not_subscriber",
            MsisdnError::BadCountryCode => "bad_country_code",
        }
    }
}

/// Normalises an SMPP address to E.164 digits. See the module docs for the rules.
///
/// ```
/// use consentgate::consent::msisdn::normalise;
/// assert_eq!(normalise(b"13812345678", 0, 1, "86"), Ok(8613812345678));
/// assert_eq!(normalise(b"+8613812345678", 1, 1, "86"), Ok(8613812345678));
/// ```
#[inline]
pub fn normalise(addr: &[u8], ton: u8, npi: u8, default_cc: &str) -> Result<u64, MsisdnError> {
    // NPI is deliberately not checked, see the module docs.
    let _ = npi;
    if ton > ton::SUBSCRIBER_NUMBER {
        return Err(MsisdnError::NotSubscriber);
    }
    let (plus, digits) = match addr {
        [b'+', rest @ ..] => (true, rest),
        _ => (false, addr),
    };
    if digits.is_empty() {
        return Err(MsisdnError::Empty);
    }
    if !all_digits(digits) {
        return Err(MsisdnError::NotDigits);
    }
    let cc = default_cc.as_bytes();
    if cc.is_empty() || cc.len() > 3 || cc[0] == b'0' || !cc.iter().all(u8::is_ascii_digit) {
        return Err(MsisdnError::BadCountryCode);
    }
    if plus {
        return international(digits);
    }
    if let Some(rest) = digits.strip_prefix(b"00") {
        return international(rest);
    }
    match ton {
        ton::INTERNATIONAL => international(digits),
        ton::NATIONAL => national(digits.strip_prefix(b"0").unwrap_or(digits), cc),
        _ => {
            if let Some(rest) = digits.strip_prefix(b"0") {
                national(rest, cc)
            } else if digits.len() >= 11 && digits.starts_with(cc) {
                international(digits)
            } else {
                national(digits, cc)
            }
        }
    }
}

/// Normalises a number typed by a person or read from a CSV file: surrounding whitespace is
/// ignored, then the TON-unknown rules apply.
pub fn normalise_text(s: &str, default_cc: &str) -> Result<u64, MsisdnError> {
    normalise(s.trim().as_bytes(), ton::UNKNOWN, npi::UNKNOWN, default_cc)
}

/// Digits that already start with the country code.
#[inline]
fn international(d: &[u8]) -> Result<u64, MsisdnError> {
    match d.first() {
        None => Err(MsisdnError::Empty),
        Some(b'0') => Err(MsisdnError::BadCountryCode),
        Some(_) if !(7..=15).contains(&d.len()) => Err(MsisdnError::BadLength),
        Some(_) => Ok(fold(0, d)),
    }
}

/// A national significant number: the country code goes in front. Leading zeros of `d` stay
/// significant because the value is built positionally.
#[inline]
fn national(d: &[u8], cc: &[u8]) -> Result<u64, MsisdnError> {
    if d.is_empty() {
        return Err(MsisdnError::Empty);
    }
    if !(7..=15).contains(&(cc.len() + d.len())) {
        return Err(MsisdnError::BadLength);
    }
    Ok(fold(fold(0, cc), d))
}

/// Appends ASCII digits to `acc` (callers bound the total to 15 digits). Eight digits at a
/// time in one word (this runs on every submit_sm).
#[inline]
fn fold(mut acc: u64, d: &[u8]) -> u64 {
    let mut chunks = d.chunks_exact(8);
    for c in &mut chunks {
        acc = acc * 100_000_000 + parse8(u64::from_le_bytes(c.try_into().expect("8 bytes")));
    }
    chunks.remainder().iter().fold(acc, |a, &b| a * 10 + u64::from(b - b'0'))
}

/// The value of eight ASCII digits loaded little-endian (first digit in the low byte).
#[inline]
fn parse8(x: u64) -> u64 {
    let x = x.wrapping_sub(0x3030_3030_3030_3030);
    let x = (x.wrapping_mul(10) + (x >> 8)) & 0x00FF_00FF_00FF_00FF;
    let x = (x.wrapping_mul(100) + (x >> 16)) & 0x0000_FFFF_0000_FFFF;
    (x.wrapping_mul(10_000) + (x >> 32)) & 0xFFFF_FFFF
}

/// Whether every byte is an ASCII digit; eight bytes per step. A byte b passes
/// `(b - 0x30) | (b + 0x46)` without its high bit only for 0x30..=0x39; a borrow or carry
/// only leaves a byte that already failed, and the lowest failing byte is computed exactly.
#[inline]
fn all_digits(d: &[u8]) -> bool {
    let mut chunks = d.chunks_exact(8);
    for c in &mut chunks {
        let x = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        if (x.wrapping_sub(0x3030_3030_3030_3030) | x.wrapping_add(0x4646_4646_4646_4646)) & 0x8080_8080_8080_8080 != 0
        {
            return false;
        }
    }
    chunks.remainder().iter().all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use MsisdnError::*;

    /// The word-at-a-time digit check and parse agree with the byte loops on every byte value
    /// in every position and on random digit strings.
    #[test]
    fn word_digit_helpers_match_byte_loops() {
        for len in 0..=16 {
            for pos in 0..len {
                for b in 0..=255u8 {
                    let mut d = vec![b'7'; len];
                    d[pos] = b;
                    assert_eq!(all_digits(&d), d.iter().all(u8::is_ascii_digit), "{d:?}");
                }
            }
        }
        let mut seed = 1u64;
        for _ in 0..20_000 {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let len = (seed >> 60) as usize % 16;
            let d: Vec<u8> = (0..len).map(|i| b'0' + ((seed >> (4 * i % 56)) % 10) as u8).collect();
            let naive = d.iter().fold(0u64, |a, &b| a * 10 + u64::from(b - b'0'));
            assert_eq!(fold(0, &d), naive, "{d:?}");
            assert_eq!(fold(86, &d), d.iter().fold(86u64, |a, &b| a * 10 + u64::from(b - b'0')));
        }
    }

    /// (addr, ton, npi, default_cc, expected)
    type Case = (&'static str, u8, u8, &'static str, Result<u64, MsisdnError>);

    #[test]
    fn smpp_addresses() {
        let cases: &[Case] = &[
            // Chinese 11-digit mobiles, every way ESMEs send them.
            ("13812345678", 0, 0, "86", Ok(8613812345678)),
            ("13812345678", 0, 1, "86", Ok(8613812345678)),
            ("13812345678", 2, 1, "86", Ok(8613812345678)),
            ("013812345678", 2, 1, "86", Ok(8613812345678)),
            ("8613812345678", 0, 1, "86", Ok(8613812345678)),
            ("8613812345678", 1, 1, "86", Ok(8613812345678)),
            ("+8613812345678", 1, 1, "86", Ok(8613812345678)),
            ("+8613812345678", 0, 0, "86", Ok(8613812345678)),
            ("+8613812345678", 2, 1, "86", Ok(8613812345678)),
            ("008613812345678", 0, 0, "86", Ok(8613812345678)),
            ("008613812345678", 1, 1, "86", Ok(8613812345678)),
            ("008613812345678", 2, 1, "86", Ok(8613812345678)),
            ("13812345678", 3, 1, "86", Ok(8613812345678)),
            ("13812345678", 4, 1, "86", Ok(8613812345678)),
            // Landlines with the trunk 0 and an area code (Beijing 010, Shenzhen 0755).
            ("01012345678", 0, 1, "86", Ok(861012345678)),
            ("01012345678", 2, 1, "86", Ok(861012345678)),
            ("075512345678", 0, 1, "86", Ok(8675512345678)),
            ("+86 75512345678", 0, 1, "86", Err(NotDigits)),
            // A national number that happens to start with the cc but is too short to be
            // international stays national.
            ("8612345", 0, 1, "86", Ok(868612345)),
            // "086…" is read as trunk 0 + national number: the rules never guess a cc after it.
            ("08613812345678", 0, 1, "86", Ok(868613812345678)),
            // India: 10-digit mobiles; a national number beginning with the cc digits "91".
            ("+919876543210", 1, 1, "91", Ok(919876543210)),
            ("9876543210", 0, 1, "91", Ok(919876543210)),
            ("9123456789", 0, 1, "91", Ok(919123456789)),
            ("919123456789", 0, 1, "91", Ok(919123456789)),
            ("09876543210", 2, 1, "91", Ok(919876543210)),
            // US +1: NANP 10-digit national numbers.
            ("+12125551234", 1, 1, "1", Ok(12125551234)),
            ("2125551234", 0, 1, "1", Ok(12125551234)),
            ("12125551234", 0, 1, "1", Ok(12125551234)),
            ("0012125551234", 0, 1, "86", Ok(12125551234)),
            // International number for another country while the default is 86.
            ("12125551234", 1, 1, "86", Ok(12125551234)),
            // Alphanumeric senders and short codes.
            ("ACME", 5, 0, "86", Err(NotSubscriber)),
            ("10086", 6, 0, "86", Err(NotSubscriber)),
            ("13812345678", 6, 1, "86", Err(NotSubscriber)),
            ("13812345678", 7, 1, "86", Err(NotSubscriber)),
            // NPI other than 0/1 is normalised, not refused (see module docs).
            ("13812345678", 0, 9, "86", Ok(8613812345678)),
            ("13812345678", 2, 8, "86", Ok(8613812345678)),
            // Lengths.
            ("+8613812345678901", 1, 1, "86", Err(BadLength)),
            ("1234567890123456", 1, 1, "86", Err(BadLength)),
            ("123456", 1, 1, "86", Err(BadLength)),
            ("1234567", 1, 1, "86", Ok(1234567)),
            ("123456789012345", 1, 1, "86", Ok(123456789012345)),
            // A short code sent as TON 0 is just a short national number: 86 + 10086 has 7
            // digits, so it normalises (and matches no consent record); 1008 does not.
            ("10086", 0, 1, "86", Ok(8610086)),
            ("1008", 0, 1, "86", Err(BadLength)),
            ("1381234567890123", 0, 1, "86", Err(BadLength)),
            ("99999999999999999999", 0, 1, "86", Err(BadLength)),
            // Shape errors.
            ("", 1, 1, "86", Err(Empty)),
            ("+", 1, 1, "86", Err(Empty)),
            ("00", 0, 1, "86", Err(Empty)),
            ("0", 2, 1, "86", Err(Empty)),
            ("138-1234-5678", 0, 1, "86", Err(NotDigits)),
            ("1381234567a", 0, 1, "86", Err(NotDigits)),
            ("++8613812345678", 1, 1, "86", Err(NotDigits)),
            ("86138+12345678", 1, 1, "86", Err(NotDigits)),
            ("013812345678", 1, 1, "86", Err(BadCountryCode)),
            ("+08613812345678", 1, 1, "86", Err(BadCountryCode)),
            // A bad default country code is reported as such.
            ("13812345678", 0, 1, "", Err(BadCountryCode)),
            ("13812345678", 0, 1, "086", Err(BadCountryCode)),
            ("13812345678", 0, 1, "8a", Err(BadCountryCode)),
            ("13812345678", 0, 1, "8612", Err(BadCountryCode)),
        ];
        for (addr, ton, npi, cc, want) in cases {
            assert_eq!(normalise(addr.as_bytes(), *ton, *npi, cc), *want, "{addr:?} ton={ton} npi={npi} cc={cc}");
        }
    }

    #[test]
    fn text_input() {
        let cases: &[(&str, Result<u64, MsisdnError>)] = &[
            (" 13812345678 ", Ok(8613812345678)),
            ("+8613812345678", Ok(8613812345678)),
            ("008613812345678", Ok(8613812345678)),
            ("\t8613812345678\r", Ok(8613812345678)),
            ("", Err(Empty)),
            ("   ", Err(Empty)),
            ("138 1234 5678", Err(NotDigits)),
        ];
        for (s, want) in cases {
            assert_eq!(normalise_text(s, "86"), *want, "{s:?}");
        }
    }

    #[test]
    fn labels_are_distinct() {
        let all = [Empty, NotDigits, BadLength, NotSubscriber, BadCountryCode];
        let labels: std::collections::HashSet<_> = all.iter().map(|e| e.as_str()).collect();
        assert_eq!(labels.len(), all.len());
    }
}
