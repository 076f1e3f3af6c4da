//! Link, network and transport layers: from a captured frame to a TCP segment.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Link types (tcpdump.org/linktypes.html).
pub(crate) mod linktype {
    pub const NULL: i32 = 0;
    pub const ETHERNET: i32 = 1;
    pub const RAW_OPENBSD: i32 = 14;
    pub const RAW_BSD: i32 = 12;
    pub const RAW: i32 = 101;
    pub const LOOP: i32 = 108;
    pub const LINUX_SLL: i32 = 113;
    pub const IPV4: i32 = 228;
    pub const IPV6: i32 = 229;
    pub const LINUX_SLL2: i32 = 276;
}

/// The IP packet inside a link-layer frame, or None (counted by the caller).
pub(super) fn ip_payload(link: i32, d: &[u8]) -> Option<&[u8]> {
    let ethertype_at = |d: &[u8], mut at: usize| -> Option<usize> {
        // Skip 802.1Q / 802.1ad tags.
        loop {
            let t = u16::from_be_bytes([*d.get(at)?, *d.get(at + 1)?]);
            match t {
                0x8100 | 0x88A8 | 0x9100 => at += 4,
                0x0800 | 0x86DD => return Some(at + 2),
                _ => return None,
            }
        }
    };
    match link {
        linktype::ETHERNET => d.get(ethertype_at(d, 12)?..),
        linktype::LINUX_SLL => d.get(ethertype_at(d, 14)?..),
        linktype::LINUX_SLL2 => {
            let t = u16::from_be_bytes([*d.first()?, *d.get(1)?]);
            matches!(t, 0x0800 | 0x86DD).then(|| d.get(20..)).flatten()
        }
        linktype::RAW | linktype::RAW_BSD | linktype::RAW_OPENBSD | linktype::IPV4 | linktype::IPV6 => Some(d),
        linktype::NULL | linktype::LOOP => {
            // 4-byte address family, host byte order (NULL) or network order (LOOP).
            let fam = d.get(..4)?;
            let v = u32::from_le_bytes([fam[0], fam[1], fam[2], fam[3]])
                .min(u32::from_be_bytes([fam[0], fam[1], fam[2], fam[3]]));
            matches!(v, 2 | 24 | 28 | 30).then(|| d.get(4..)).flatten()
        }
        _ => None,
    }
}

/// A TCP segment with its endpoints.
pub(super) struct Segment<'a> {
    pub(super) src: SocketAddr,
    pub(super) dst: SocketAddr,
    pub(super) seq: u32,
    pub(super) flags: u8,
    pub(super) payload: &'a [u8],
    /// Length of the TCP payload on the wire (more than `payload` when the packet was cut
    /// short by the snaplen).
    pub(super) real_len: usize,
}

/// What an IP packet holds, as far as the reader cares.
pub(super) enum L3<'a> {
    Tcp(Segment<'a>),
    NotTcp,
    Fragment,
    Truncated,
}

pub(super) fn parse_ip(p: &[u8]) -> L3<'_> {
    let Some(&v) = p.first() else { return L3::Truncated };
    // (source, destination, captured TCP header + payload, its length on the wire)
    let (src, dst, l4, wire) = match v >> 4 {
        4 => {
            if p.len() < 20 {
                return L3::Truncated;
            }
            let ihl = (p[0] & 0x0F) as usize * 4;
            let total = u16::from_be_bytes([p[2], p[3]]) as usize;
            if ihl < 20 || total < ihl || p.len() < ihl {
                return L3::Truncated;
            }
            let frag = u16::from_be_bytes([p[6], p[7]]);
            if frag & 0x3FFF != 0 {
                return L3::Fragment;
            }
            if p[9] != 6 {
                return L3::NotTcp;
            }
            let src = IpAddr::V4(Ipv4Addr::new(p[12], p[13], p[14], p[15]));
            let dst = IpAddr::V4(Ipv4Addr::new(p[16], p[17], p[18], p[19]));
            // total == 0: TSO on the capturing host; trust the captured length.
            let end = if total == 0 { p.len() } else { total.min(p.len()) };
            (src, dst, &p[ihl..end], if total == 0 { end - ihl } else { total - ihl })
        }
        6 => {
            if p.len() < 40 {
                return L3::Truncated;
            }
            let plen = u16::from_be_bytes([p[4], p[5]]) as usize;
            let mut next = p[6];
            let mut at = 40;
            loop {
                match next {
                    6 => break,
                    0 | 43 | 60 => {
                        let (Some(&nh), Some(&l)) = (p.get(at), p.get(at + 1)) else { return L3::Truncated };
                        next = nh;
                        at += (l as usize + 1) * 8;
                    }
                    44 => return L3::Fragment,
                    _ => return L3::NotTcp,
                }
            }
            let mut a = [0u8; 16];
            a.copy_from_slice(&p[8..24]);
            let src = IpAddr::V6(Ipv6Addr::from(a));
            a.copy_from_slice(&p[24..40]);
            let dst = IpAddr::V6(Ipv6Addr::from(a));
            let end = if plen == 0 { p.len() } else { (40 + plen).min(p.len()) };
            if at > end {
                return L3::Truncated;
            }
            (src, dst, &p[at..end], if plen == 0 { end - at } else { (40 + plen).saturating_sub(at) })
        }
        _ => return L3::NotTcp,
    };
    if l4.len() < 20 {
        return L3::Truncated;
    }
    let off = (l4[12] >> 4) as usize * 4;
    if off < 20 || l4.len() < off {
        return L3::Truncated;
    }
    L3::Tcp(Segment {
        src: SocketAddr::new(src, u16::from_be_bytes([l4[0], l4[1]])),
        dst: SocketAddr::new(dst, u16::from_be_bytes([l4[2], l4[3]])),
        seq: u32::from_be_bytes([l4[4], l4[5], l4[6], l4[7]]),
        flags: l4[13],
        payload: &l4[off..],
        real_len: wire.saturating_sub(off).max(l4.len() - off),
    })
}
