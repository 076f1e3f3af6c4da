//! Writing captures: synthetic Ethernet / IPv4 / TCP packets and the pcapng blocks around
//! them (pcapng spec, draft-ietf-opsawg-pcapng; little-endian sections). The gateway's
//! [`crate::capture`] recorder uses these; tests use them to build captures by hand.

use super::link::linktype;
use super::tcp_flag::ACK;

/// A synthetic host's MAC address: locally administered, derived from its IPv4 address.
fn mac(ip: [u8; 4]) -> [u8; 6] {
    [0x02, 0x00, ip[0], ip[1], ip[2], ip[3]]
}

/// Ones' complement sum of `b` added to `acc` (RFC 1071), folded by [`fold`].
fn sum16(mut acc: u32, b: &[u8]) -> u32 {
    let mut chunks = b.chunks_exact(2);
    for c in &mut chunks {
        acc += u16::from_be_bytes([c[0], c[1]]) as u32;
    }
    if let [x] = chunks.remainder() {
        acc += (*x as u32) << 8;
    }
    acc
}

/// The checksum of a [`sum16`] total: folded to 16 bits and complemented.
fn fold(mut acc: u32) -> u16 {
    while acc > 0xFFFF {
        acc = (acc & 0xFFFF) + (acc >> 16);
    }
    !(acc as u16)
}

/// Appends Ethernet + IPv4 + TCP + payload to `out`, checksums filled in. `ack` is written
/// only when `flags` has ACK; the IPv4 total length must fit 16 bits (payload ≤ 65 495).
#[allow(clippy::too_many_arguments)]
pub fn build_packet(
    out: &mut Vec<u8>,
    src: ([u8; 4], u16),
    dst: ([u8; 4], u16),
    seq: u32,
    ack: u32,
    flags: u8,
    ip_id: u16,
    payload: &[u8],
) {
    out.extend_from_slice(&mac(dst.0));
    out.extend_from_slice(&mac(src.0));
    out.extend_from_slice(&0x0800u16.to_be_bytes());
    let ip_at = out.len();
    let total = (20 + 20 + payload.len()) as u16;
    out.extend_from_slice(&[0x45, 0]);
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&ip_id.to_be_bytes());
    out.extend_from_slice(&[0x40, 0, 64, 6, 0, 0]);
    out.extend_from_slice(&src.0);
    out.extend_from_slice(&dst.0);
    let c = fold(sum16(0, &out[ip_at..ip_at + 20]));
    out[ip_at + 10..ip_at + 12].copy_from_slice(&c.to_be_bytes());
    let tcp_at = out.len();
    out.extend_from_slice(&src.1.to_be_bytes());
    out.extend_from_slice(&dst.1.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&(if flags & ACK != 0 { ack } else { 0 }).to_be_bytes());
    out.extend_from_slice(&[0x50, flags, 0xFF, 0xFF, 0, 0, 0, 0]);
    out.extend_from_slice(payload);
    let tcp_len = (20 + payload.len()) as u32;
    let mut acc = sum16(0, &src.0);
    acc = sum16(acc, &dst.0);
    acc += 6 + tcp_len;
    acc = sum16(acc, &out[tcp_at..]);
    let c = fold(acc);
    out[tcp_at + 16..tcp_at + 18].copy_from_slice(&c.to_be_bytes());
}

// ---------------------------------------------------------------------------------------------
// pcapng blocks

fn pad4(n: usize) -> usize {
    (4 - n % 4) % 4
}

fn push_option(out: &mut Vec<u8>, code: u16, value: &[u8]) {
    out.extend_from_slice(&code.to_le_bytes());
    out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    out.extend_from_slice(value);
    out.resize(out.len() + pad4(value.len()), 0);
}

/// Section header + one Ethernet interface with microsecond timestamps.
pub fn file_header() -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    // SHB
    let mut body = Vec::new();
    body.extend_from_slice(&0x1A2B_3C4Du32.to_le_bytes());
    body.extend_from_slice(&1u16.to_le_bytes());
    body.extend_from_slice(&0u16.to_le_bytes());
    body.extend_from_slice(&u64::MAX.to_le_bytes()); // section length unknown
    push_option(&mut body, 4, concat!("consentgate ", env!("CARGO_PKG_VERSION")).as_bytes()); // shb_userappl
    push_option(&mut body, 0, &[]);
    push_block(&mut out, 0x0A0D_0D0A, &body);
    // IDB
    let mut body = Vec::new();
    body.extend_from_slice(&(linktype::ETHERNET as u16).to_le_bytes());
    body.extend_from_slice(&0u16.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes()); // snaplen: no limit
    push_option(&mut body, 2, b"consentgate"); // if_name
    push_option(&mut body, 9, &[6]); // if_tsresol: microseconds
    push_option(&mut body, 0, &[]);
    push_block(&mut out, 1, &body);
    out
}

fn push_block(out: &mut Vec<u8>, kind: u32, body: &[u8]) {
    let len = (12 + body.len()) as u32;
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(&len.to_le_bytes());
}

/// Appends an Enhanced Packet Block around `packet` (interface 0, `ts_us` µs since the Unix
/// epoch).
pub fn push_epb(out: &mut Vec<u8>, ts_us: u64, packet: &[u8]) {
    let pad = pad4(packet.len());
    let len = (32 + packet.len() + pad) as u32;
    out.extend_from_slice(&6u32.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes()); // interface 0
    out.extend_from_slice(&((ts_us >> 32) as u32).to_le_bytes());
    out.extend_from_slice(&(ts_us as u32).to_le_bytes());
    out.extend_from_slice(&(packet.len() as u32).to_le_bytes());
    out.extend_from_slice(&(packet.len() as u32).to_le_bytes());
    out.extend_from_slice(packet);
    out.resize(out.len() + pad, 0);
    out.extend_from_slice(&len.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pcap::tcp_flag::PSH;

    #[test]
    fn checksums_are_valid() {
        let mut p = Vec::new();
        build_packet(&mut p, ([10, 1, 0, 1], 32768), ([10, 0, 0, 1], 2775), 1, 2, ACK | PSH, 7, b"hello");
        // Summing a header including its checksum gives 0xFFFF (folded: 0).
        assert_eq!(fold(sum16(0, &p[14..34])), 0);
        let tcp = &p[34..];
        let mut acc = sum16(0, &[10, 1, 0, 1]);
        acc = sum16(acc, &[10, 0, 0, 1]);
        acc += 6 + tcp.len() as u32;
        assert_eq!(fold(sum16(acc, tcp)), 0);
    }
}
