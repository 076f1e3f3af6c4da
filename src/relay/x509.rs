//! The one field of an X.509 certificate the gateway reads itself: `notAfter`, for
//! `consentgate_tls_certificate_expiry_timestamp_seconds` (rustls checks validity but does
//! not expose it). A DER walk of the first fields of the certificate (RFC 5280 §4.1) rather
//! than an X.509 crate: the path to the field is fixed and short, and nothing else of the
//! certificate is interpreted here.
//!
//! ```text
//! Certificate  ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }
//! TBSCertificate ::= SEQUENCE {
//!     version         [0] EXPLICIT INTEGER OPTIONAL,   -- absent in a v1 certificate
//!     serialNumber    INTEGER,
//!     signature       AlgorithmIdentifier,             -- SEQUENCE
//!     issuer          Name,                            -- SEQUENCE
//!     validity        SEQUENCE { notBefore Time, notAfter Time },
//!     ... }
//! Time ::= UTCTime "YYMMDDHHMMSSZ" (YY < 50: 20YY, else 19YY) | GeneralizedTime "YYYYMMDDHHMMSSZ"
//! ```
//!
//! Every length is checked against what is left before anything is read (STYLE §3); a
//! malformed certificate is an error, never a panic.

/// Why [`not_after`] could not read a certificate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum X509Error {
    /// The DER ends inside an element, or a length is longer than what follows.
    #[error("truncated DER")]
    Truncated,
    /// An element is not the one RFC 5280 puts there (`what`), or uses a length form DER
    /// forbids (indefinite, more than 4 length bytes).
    #[error("unexpected DER at {what}")]
    Unexpected { what: &'static str },
    /// The notAfter time is not `YYMMDDHHMMSSZ` / `YYYYMMDDHHMMSSZ` or not a real date.
    #[error("invalid notAfter time {0:?}")]
    Time(String),
}

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const VERSION: u8 = 0xa0; // [0] EXPLICIT, constructed
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// Splits one DER element off `input`: (tag, contents, rest). Single-byte tags only (every
/// tag on the path to notAfter is one).
fn element(input: &[u8]) -> Result<(u8, &[u8], &[u8]), X509Error> {
    let (&tag, rest) = input.split_first().ok_or(X509Error::Truncated)?;
    if tag & 0x1f == 0x1f {
        return Err(X509Error::Unexpected { what: "a multi-byte tag" });
    }
    let (&first, rest) = rest.split_first().ok_or(X509Error::Truncated)?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 {
            return Err(X509Error::Unexpected { what: "a length form" });
        }
        if rest.len() < n {
            return Err(X509Error::Truncated);
        }
        let len = rest[..n].iter().fold(0usize, |acc, &b| (acc << 8) | b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return Err(X509Error::Truncated);
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

/// The next element of `input`, which must have tag `want`: (contents, rest).
fn expect<'a>(input: &'a [u8], want: u8, what: &'static str) -> Result<(&'a [u8], &'a [u8]), X509Error> {
    let (tag, body, rest) = element(input)?;
    if tag != want {
        return Err(X509Error::Unexpected { what });
    }
    Ok((body, rest))
}

/// The certificate's notAfter, in Unix seconds (UTC).
pub fn not_after(der: &[u8]) -> Result<i64, X509Error> {
    let (cert, _) = expect(der, SEQUENCE, "Certificate")?;
    let (tbs, _) = expect(cert, SEQUENCE, "tbsCertificate")?;
    let mut rest = tbs;
    if rest.first() == Some(&VERSION) {
        rest = element(rest)?.2;
    }
    let (_, rest) = expect(rest, INTEGER, "serialNumber")?;
    let (_, rest) = expect(rest, SEQUENCE, "signature")?;
    let (_, rest) = expect(rest, SEQUENCE, "issuer")?;
    let (validity, _) = expect(rest, SEQUENCE, "validity")?;
    let (_, _, after) = element(validity)?; // notBefore
    let (tag, time, _) = element(after)?;
    match tag {
        UTC_TIME => parse_time(time, false),
        GENERALIZED_TIME => parse_time(time, true),
        _ => Err(X509Error::Unexpected { what: "notAfter" }),
    }
}

/// `YYMMDDHHMMSSZ` (UTCTime) or `YYYYMMDDHHMMSSZ` (GeneralizedTime, as RFC 5280 §4.1.2.5.2
/// requires: seconds, no fraction, `Z`) to Unix seconds.
fn parse_time(t: &[u8], generalized: bool) -> Result<i64, X509Error> {
    let bad = || X509Error::Time(String::from_utf8_lossy(t).into_owned());
    let digits = if generalized { 14 } else { 12 };
    if t.len() != digits + 1 || t[digits] != b'Z' || !t[..digits].iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let num = |i: usize, n: usize| t[i..i + n].iter().fold(0i64, |acc, &b| acc * 10 + i64::from(b - b'0'));
    let (year, at) = if generalized {
        (num(0, 4), 4)
    } else {
        let yy = num(0, 2);
        (if yy < 50 { 2000 + yy } else { 1900 + yy }, 2)
    };
    let (month, day) = (num(at, 2), num(at + 2, 2));
    let (hour, minute, second) = (num(at + 4, 2), num(at + 6, 2), num(at + 8, 2));
    let days = crate::time::parse_date(&format!("{year:04}-{month:02}-{day:02}")).ok_or_else(bad)?;
    if hour > 23 || minute > 59 || second > 59 {
        return Err(bad());
    }
    Ok(days * 86_400 + hour * 3600 + minute * 60 + second)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DER element: tag, definite length (short or long form), contents.
    fn der(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        match body.len() {
            n @ 0..=0x7f => v.push(n as u8),
            n @ 0x80..=0xff => v.extend([0x81, n as u8]),
            n => v.extend([0x82, (n >> 8) as u8, n as u8]),
        }
        v.extend_from_slice(body);
        v
    }

    /// A certificate skeleton with the given version element and validity times.
    fn cert(version: bool, not_before: &[u8], not_after: &[u8]) -> Vec<u8> {
        let mut tbs = Vec::new();
        if version {
            tbs.extend(der(VERSION, &der(INTEGER, &[2])));
        }
        tbs.extend(der(INTEGER, &[0x01, 0x23]));
        tbs.extend(der(SEQUENCE, &der(0x06, &[0x2a, 0x86, 0x48])));
        // An issuer long enough for a long-form length.
        tbs.extend(der(SEQUENCE, &[0x31; 200]));
        tbs.extend(der(SEQUENCE, &[not_before, not_after].concat()));
        tbs.extend(der(SEQUENCE, b"subject and the rest"));
        let body = [der(SEQUENCE, &tbs), der(SEQUENCE, &[0x05, 0x00]), der(0x03, &[0, 1, 2])].concat();
        der(SEQUENCE, &body)
    }

    #[test]
    fn reads_utc_and_generalized_times_with_and_without_version() {
        let nb = der(UTC_TIME, b"250101000000Z");
        // 2026-12-07T03:20:00Z = 1796613600
        assert_eq!(not_after(&cert(true, &nb, &der(UTC_TIME, b"261207032000Z"))), Ok(1_796_613_600));
        assert_eq!(not_after(&cert(false, &nb, &der(UTC_TIME, b"261207032000Z"))), Ok(1_796_613_600));
        // UTCTime years 50..99 are 19YY.
        assert_eq!(not_after(&cert(true, &nb, &der(UTC_TIME, b"700101000001Z"))), Ok(1));
        assert_eq!(not_after(&cert(true, &nb, &der(GENERALIZED_TIME, b"20500101000000Z"))), Ok(2_524_608_000));
        // RFC 5280's "no well-defined expiration date".
        assert_eq!(not_after(&cert(true, &nb, &der(GENERALIZED_TIME, b"99991231235959Z"))), Ok(253_402_300_799));
    }

    #[test]
    fn refuses_malformed_input_without_panicking() {
        let nb = der(UTC_TIME, b"250101000000Z");
        let good = cert(true, &nb, &der(UTC_TIME, b"261207032000Z"));
        for n in 0..good.len() {
            assert!(not_after(&good[..n]).is_err(), "truncated at {n}");
        }
        for bad in [&b"261307032000Z"[..], b"260230000000Z", b"261207242000Z", b"2612070320Z", b"26120703200aZ"] {
            assert!(matches!(not_after(&cert(true, &nb, &der(UTC_TIME, bad))), Err(X509Error::Time(_))), "{bad:?}");
        }
        assert!(not_after(&cert(true, &nb, &der(GENERALIZED_TIME, b"20500101000000.5Z"))).is_err());
        assert_eq!(not_after(&cert(true, &nb, &der(INTEGER, &[1]))), Err(X509Error::Unexpected { what: "notAfter" }));
        // Indefinite length (BER, not DER) and over-long length forms.
        assert_eq!(not_after(&[0x30, 0x80, 0, 0]), Err(X509Error::Unexpected { what: "a length form" }));
        assert_eq!(not_after(&[0x30, 0x85, 1, 1, 1, 1, 1]), Err(X509Error::Unexpected { what: "a length form" }));
        assert_eq!(not_after(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), Err(X509Error::Truncated));
        assert_eq!(not_after(&[INTEGER, 1, 5]), Err(X509Error::Unexpected { what: "Certificate" }));
        assert_eq!(not_after(b"-----BEGIN CERTIFICATE-----"), Err(X509Error::Truncated));
    }
}
