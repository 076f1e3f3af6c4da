//! Record → JSON line, by hand into a reused buffer (the writer formats hundreds of thousands
//! of records per second; no serde, no per-record allocation). Field order and names are the
//! file format documented in the module docs; [`super::search`] reads them back with serde.

use std::io::Write as _;

use super::{AuditAddr, AuditRecord};
use crate::policy::MessageClass;
use crate::time::Civil;

/// Appends one record as a JSON object and a `\n` to `out`.
pub fn write_record(out: &mut Vec<u8>, r: &AuditRecord, account: &str, entity: &str) {
    out.extend_from_slice(b"{\"time\":\"");
    push_time_us(out, r.at_us);
    out.extend_from_slice(b"\",\"account\":");
    push_str(out, account.as_bytes());
    out.extend_from_slice(b",\"entity\":");
    push_str(out, entity.as_bytes());
    out.extend_from_slice(b",\"session\":");
    push_u64(out, r.session);
    out.extend_from_slice(b",\"seq\":");
    push_u64(out, u64::from(r.sequence));
    push_addr(out, b"source", &r.source);
    push_addr(out, b"destination", &r.destination);
    out.extend_from_slice(b",\"msisdn\":");
    match r.msisdn {
        Some(m) => {
            out.push(b'"');
            push_u64(out, m);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"class\":");
    out.extend_from_slice(match r.class {
        Some(MessageClass::Marketing) => b"\"marketing\"",
        Some(MessageClass::Transactional) => b"\"transactional\"",
        None => b"null",
    });
    out.extend_from_slice(b",\"verdict\":\"");
    out.extend_from_slice(r.verdict.label().as_bytes());
    out.extend_from_slice(b"\",\"reason\":");
    match r.verdict.reason() {
        Some(reason) => {
            out.push(b'"');
            out.extend_from_slice(reason.label().as_bytes());
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"status\":");
    push_status(out, r.status);
    out.extend_from_slice(b",\"upstream_status\":");
    push_status(out, r.upstream_status);
    out.extend_from_slice(b",\"message_id\":");
    if r.message_id.is_none() {
        out.extend_from_slice(b"null");
    } else {
        push_str(out, r.message_id.as_bytes());
    }
    out.extend_from_slice(b",\"snapshot\":");
    if r.snapshot.id == 0 {
        out.extend_from_slice(b"null");
    } else {
        out.push(b'"');
        push_hex(out, r.snapshot.id, 16, b"0123456789abcdef");
        out.push(b'"');
    }
    out.extend_from_slice(b",\"snapshot_generation\":");
    push_u64(out, r.snapshot.generation);
    out.extend_from_slice(b",\"snapshot_built\":");
    if r.snapshot.id == 0 && r.snapshot.built_at == 0 {
        out.extend_from_slice(b"null");
    } else {
        out.push(b'"');
        push_time_s(out, r.snapshot.built_at);
        out.push(b'"');
    }
    if r.protocol == super::record::Protocol::Cmpp {
        out.extend_from_slice(b",\"protocol\":\"cmpp\"");
    }
    // Decimal strings: a 19-digit DLT id is beyond the integers JSON readers keep exact.
    if r.dlt.pe != 0 {
        out.extend_from_slice(b",\"dlt_pe\":\"");
        push_u64(out, r.dlt.pe);
        out.push(b'"');
    }
    if r.dlt.template != 0 {
        out.extend_from_slice(b",\"dlt_template\":\"");
        push_u64(out, r.dlt.template);
        out.push(b'"');
    }
    if r.source.truncated() {
        out.extend_from_slice(b",\"source_truncated\":true");
    }
    if r.destination.truncated() {
        out.extend_from_slice(b",\"destination_truncated\":true");
    }
    out.extend_from_slice(b"}\n");
}

fn push_addr(out: &mut Vec<u8>, name: &[u8], a: &AuditAddr) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name);
    out.extend_from_slice(b"\":");
    push_str(out, a.as_bytes());
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name);
    out.extend_from_slice(b"_ton\":");
    push_u64(out, u64::from(a.ton));
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name);
    out.extend_from_slice(b"_npi\":");
    push_u64(out, u64::from(a.npi));
}

fn push_status(out: &mut Vec<u8>, s: Option<u32>) {
    match s {
        Some(s) => {
            out.extend_from_slice(b"\"0x");
            push_hex(out, u64::from(s), 8, b"0123456789ABCDEF");
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
}

fn push_hex(out: &mut Vec<u8>, n: u64, digits: usize, alphabet: &[u8; 16]) {
    for i in (0..digits).rev() {
        out.push(alphabet[(n >> (4 * i) & 15) as usize]);
    }
}

fn push_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(crate::policy::dlt::decimal_str(n, &mut [0u8; 20]).as_bytes());
}

/// A JSON string. Valid UTF-8 is kept (with `"`, `\` and control characters escaped); any
/// other byte is written as `\u00XX` (its Latin-1 reading), so every line stays valid JSON.
fn push_str(out: &mut Vec<u8>, s: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    // Fast path: printable ASCII without quote or backslash (addresses, ids).
    if s.iter().all(|&b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\') {
        out.extend_from_slice(s);
        out.push(b'"');
        return;
    }
    let mut rest = s;
    while !rest.is_empty() {
        let (valid, bad) = match std::str::from_utf8(rest) {
            Ok(v) => (v.as_bytes(), &[][..]),
            Err(e) => {
                let (v, b) = rest.split_at(e.valid_up_to());
                (v, b)
            }
        };
        for &b in valid {
            match b {
                b'"' => out.extend_from_slice(b"\\\""),
                b'\\' => out.extend_from_slice(b"\\\\"),
                0..=0x1f | 0x7f => {
                    out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]])
                }
                _ => out.push(b),
            }
        }
        if let Some((&b, after)) = bad.split_first() {
            out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
            rest = after;
        } else {
            rest = &[];
        }
    }
    out.push(b'"');
}

fn push2(out: &mut Vec<u8>, n: u32) {
    out.extend_from_slice(&[b'0' + (n / 10 % 10) as u8, b'0' + (n % 10) as u8]);
}

/// `YYYY-MM-DDTHH:MM:SS` (UTC) for unix seconds.
fn push_datetime(out: &mut Vec<u8>, secs: i64) {
    let Civil { year: y, month: m, day: d, hour, minute, second } = Civil::from_unix_s(secs);
    if (0..=9999).contains(&y) {
        let y = y as u32;
        push2(out, y / 100);
        push2(out, y % 100);
    } else {
        let _ = write!(out, "{y}");
    }
    out.push(b'-');
    push2(out, m);
    out.push(b'-');
    push2(out, d);
    out.push(b'T');
    push2(out, hour);
    out.push(b':');
    push2(out, minute);
    out.push(b':');
    push2(out, second);
}

/// `YYYY-MM-DDTHH:MM:SS.ffffff` (no zone letter) for unix microseconds.
fn push_time_us(out: &mut Vec<u8>, us: i64) {
    push_datetime(out, us.div_euclid(1_000_000));
    let frac = us.rem_euclid(1_000_000) as u32;
    out.push(b'.');
    push2(out, frac / 10_000);
    push2(out, frac / 100 % 100);
    push2(out, frac % 100);
    out.push(b'Z');
}

fn push_time_s(out: &mut Vec<u8>, secs: i64) {
    push_datetime(out, secs);
    out.push(b'Z');
}

/// Unix microseconds as ISO-8601 UTC with microseconds: `2026-05-01T08:30:00.123456Z`.
pub fn format_time_us(us: i64) -> String {
    let mut v = Vec::with_capacity(27);
    push_time_us(&mut v, us);
    String::from_utf8(v).expect("ASCII")
}

/// Unix seconds as `YYYYMMDDTHHMMSSZ` (file names).
pub(super) fn compact_time(secs: i64) -> String {
    let mut v = Vec::with_capacity(20);
    push_datetime(&mut v, secs);
    v.retain(|&b| b != b'-' && b != b':');
    v.push(b'Z');
    String::from_utf8(v).expect("ASCII")
}

/// Parses our own `time` field (`YYYY-MM-DDTHH:MM:SS[.ffffff]Z`) back to unix microseconds.
pub(super) fn parse_time_us(s: &str) -> Option<i64> {
    let secs = crate::time::parse_timestamp(s.as_bytes())?;
    let frac = match s.find('.') {
        Some(dot) => {
            let digits: String = s[dot + 1..].chars().take_while(|c| c.is_ascii_digit()).take(6).collect();
            let n: i64 = digits.parse().ok()?;
            n * 10i64.pow(6 - digits.len() as u32)
        }
        None => 0,
    };
    Some(secs * 1_000_000 + frac)
}
