//! The CONNECT authenticators (CMPP 3.0 §8.4.1; 2.0 alike), for the SP side (the load
//! generator, tests) and the ISMG side (the simulator). consentgate's own front never computes
//! them: it relays the CONNECT and its answer untouched and never knows the shared secret.

use bytes::BytesMut;
use md5::{Digest, Md5};

use super::{pdu, Version};

/// AuthenticatorSource of a CMPP_CONNECT: MD5(Source_Addr + 9×0x00 + secret + timestamp as
/// the 10-digit `%010d` string MMDDHHMMSS).
pub fn authenticator_source(source_addr: &[u8], secret: &[u8], timestamp: u32) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(source_addr);
    h.update([0u8; 9]);
    h.update(secret);
    h.update(format!("{timestamp:010}").as_bytes());
    h.finalize().into()
}

/// AuthenticatorISMG of a CMPP_CONNECT_RESP: MD5(Status + AuthenticatorSource + secret),
/// Status in `version`'s width (1 byte in 2.0, 4 big-endian bytes in 3.0).
pub fn authenticator_ismg(version: Version, status: u32, authenticator_source: &[u8], secret: &[u8]) -> [u8; 16] {
    let mut h = Md5::new();
    match version {
        Version::V20 => h.update([status as u8]),
        Version::V30 => h.update(status.to_be_bytes()),
    }
    h.update(authenticator_source);
    h.update(secret);
    h.finalize().into()
}

/// The CONNECT Timestamp for Unix second `unix_s`: MMDDHHMMSS in China Standard Time (UTC+8,
/// no daylight saving), as a decimal integer.
pub fn timestamp(unix_s: i64) -> u32 {
    let c = crate::time::Civil::from_unix_s(unix_s + 8 * 3600);
    c.month * 100_000_000 + c.day * 1_000_000 + c.hour * 10_000 + c.minute * 100 + c.second
}

/// Appends a CMPP_CONNECT as an SP sends it: `source_addr`'s authenticator for `secret`
/// (empty when the ISMG checks none) and `timestamp`.
pub fn put_connect_as(out: &mut BytesMut, seq: u32, source_addr: &str, secret: &str, version_byte: u8, timestamp: u32) {
    let auth = authenticator_source(source_addr.as_bytes(), secret.as_bytes(), timestamp);
    pdu::put_connect(out, seq, source_addr.as_bytes(), &auth, version_byte, timestamp);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// Vectors from Python's hashlib: md5(b'901234' + 9×b'\0' + b'secret' + b'0612123456'),
    /// then md5(status + that + b'secret') with a 1-byte (2.0) and a 4-byte (3.0) status.
    #[test]
    fn authenticators_match_an_independent_md5() {
        let src = authenticator_source(b"901234", b"secret", 612_123_456);
        assert_eq!(hex(&src), "7064930c91fa3509977afe1c6a4a2475");
        assert_eq!(hex(&authenticator_ismg(Version::V20, 0, &src, b"secret")), "bc61aad5c933d11bf7e7972905f47cab");
        assert_eq!(hex(&authenticator_ismg(Version::V30, 0, &src, b"secret")), "dcde8479f689d61c3e4a2dd7ebadc0e3");
    }

    #[test]
    fn timestamp_is_china_standard_time() {
        // 2026-12-07T16:05:09Z is 2026-12-08 00:05:09 in Beijing.
        assert_eq!(timestamp(1_796_659_509), 1_208_000_509);
    }
}
