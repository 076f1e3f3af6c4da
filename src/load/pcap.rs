//! SMPP traffic from a capture file: `consentgate load --pcap FILE` (DESIGN §5, issue #5).
//!
//! ```text
//!  file ─► pcap-parser (classic pcap or pcapng, streaming, bounded buffer)
//!       ─► link layer (Ethernet ± VLAN, Linux SLL / SLL2, raw IPv4/IPv6, BSD loopback)
//!       ─► IPv4 / IPv6 ─► TCP segment
//!       ─► per connection, per direction: reassembly by sequence number
//!              (retransmissions and overlaps trimmed, out-of-order segments held, a hole
//!               = a gap: reported, then resynchronised at the next plausible SMPP header)
//!       ─► SMPP framing (smpp::frame::Framer over the reassembled bytes)
//!       ─► requests submit_sm / data_sm / submit_multi kept with their timestamps;
//!          responses matched to them by sequence number within the connection
//! ```
//!
//! **Which streams are SMPP.** Any TCP port (or only `--port P`). A direction is SMPP when,
//! within its first [`HUNT_LIMIT`] bytes, the stream frames as SMPP: a header with a
//! plausible command_length (16 ..= [`MAX_PDU_BYTES`]) and a known command_id, followed by
//! another such header (or the end of the data). A connection whose two directions never
//! frame is listed as skipped (`not SMPP`); one that frames but carries no submit is listed
//! as `SMPP without submits` (a receiver bind, say).
//!
//! **Which side is the ESME.** By content: bind requests, submit_sm, submit_multi,
//! query/cancel/replace_sm and deliver_sm_resp travel ESME → SMSC; bind responses,
//! submit_sm_resp, deliver_sm and outbind travel back. Ties (e.g. only enquire_link) fall back
//! to the TCP client (the SYN sender), then to the side not on the SMPP port.
//!
//! **Damage is data.** Truncated files, snaplen-cut packets, IP fragments, unknown link
//! types, gaps and resynchronisations are counted in [`Damage`]; only a file with no usable
//! request at all is an error (naming the file).
//!
//! Timestamps are nanoseconds since the Unix epoch (pcap µs/ns magic, pcapng `if_tsresol` and
//! `if_tsoffset` honoured). A PDU's timestamp is the one of the packet that completed it, as
//! Wireshark shows a reassembled PDU.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use pcap_parser::{Block, PcapBlockOwned, PcapError};

use crate::smpp::frame::{Framer, Next};
use crate::smpp::{cmd, is_known_command, Header, HEADER_LEN, RESP_BIT};

/// Largest command_length considered plausible (the gateway's default `max_pdu_bytes`).
pub const MAX_PDU_BYTES: usize = 70_000;
/// A direction that does not frame as SMPP within this many bytes is not SMPP.
pub const HUNT_LIMIT: usize = 64 * 1024;
/// Out-of-order bytes held per direction before the hole is declared a gap.
const MAX_PENDING_BYTES: usize = 4 * 1024 * 1024;
/// Streams listed individually in the report; the rest are counted.
const MAX_LISTED: usize = 100;
/// pcap-parser buffer; grown up to [`MAX_BLOCK_BYTES`] for a large block.
const READ_BUFFER: usize = 1 << 20;
/// A capture block bigger than this is treated as corruption.
const MAX_BLOCK_BYTES: usize = 64 << 20;

/// What to extract.
#[derive(Debug, Clone, Default)]
pub struct ExtractOptions {
    /// Only TCP connections with this port on either side.
    pub port: Option<u16>,
    /// Only connections whose SMSC side has this IP address (e.g. `10.0.0.1`, the gateway
    /// side of the ESME leg in a consentgate `[capture]` file).
    pub server: Option<std::net::IpAddr>,
    /// Also keep every SMPP PDU of every direction in [`Extracted::all`] (tests, tools).
    pub keep_all: bool,
}

/// One recorded request to replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordedPdu {
    /// Index into [`Extracted::streams`].
    pub stream: u32,
    /// Capture time, ns since the Unix epoch.
    pub ts_ns: u64,
    /// submit_sm, data_sm or submit_multi.
    pub command_id: u32,
    /// The recorded sequence number (replay rewrites it).
    pub sequence: u32,
    /// command_status of the recorded response, if the capture holds it.
    pub recorded_status: Option<u32>,
    start: u32,
    len: u32,
}

/// Any SMPP PDU seen (only with [`ExtractOptions::keep_all`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedPdu {
    /// Connection number in order of first appearance (both directions share it).
    pub conn: u32,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub ts_ns: u64,
    pub frame: Vec<u8>,
}

/// One SMPP connection that carried requests to replay.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StreamInfo {
    /// The ESME side, `ip:port`.
    pub esme: String,
    /// The SMSC (or gateway) side.
    pub smsc: String,
    /// system_id of the recorded bind, when the capture holds it.
    pub system_id: Option<String>,
    /// Requests extracted (submit_sm + data_sm + submit_multi).
    pub pdus: u64,
    /// Of those, how many have a recorded response status.
    pub with_status: u64,
}

/// A TCP connection that yielded nothing to replay, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SkippedStream {
    pub a: String,
    pub b: String,
    pub bytes: u64,
    pub reason: &'static str,
}

/// Problems in the capture, all survivable.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Damage {
    /// The file ends inside a block (cut-off download, capture still being written).
    pub file_truncated: bool,
    /// A block could not be parsed; reading stopped there.
    pub bad_block: Option<String>,
    /// Packets on an interface whose link type is not supported.
    pub unsupported_link: u64,
    /// Packets that are not IPv4/IPv6, or not TCP.
    pub not_tcp: u64,
    /// IP fragments (not reassembled).
    pub ip_fragments: u64,
    /// Packets cut short by the snaplen or malformed headers; their TCP data is partial.
    pub truncated_packets: u64,
    /// Segments entirely seen before (retransmissions).
    pub retransmissions: u64,
    /// Segments partly seen before (trimmed).
    pub overlaps: u64,
    /// Segments that arrived ahead of a missing one and were held.
    pub out_of_order: u64,
    /// Holes in a TCP direction (bytes never captured).
    pub gaps: u64,
    /// Times an SMPP direction lost framing (after a gap or a malformed header) and found the
    /// next plausible header again.
    pub resyncs: u64,
    /// Bytes skipped while looking for the next header.
    pub bytes_skipped: u64,
    /// Responses whose request was not in the capture (or already answered).
    pub unmatched_responses: u64,
}

/// Everything read from one capture.
#[derive(Default)]
pub struct Extracted {
    /// The file, as given (for messages).
    pub file: String,
    /// Packets (EPB/SPB/pcap records) read.
    pub packets: u64,
    /// TCP connections seen.
    pub tcp_connections: u64,
    /// Requests to replay, in capture order.
    pub pdus: Vec<RecordedPdu>,
    pub streams: Vec<StreamInfo>,
    /// Connections with nothing to replay (the first [`MAX_LISTED`]).
    pub skipped: Vec<SkippedStream>,
    /// Skipped connections beyond the listed ones.
    pub skipped_more: u64,
    /// Connections outside `--port`.
    pub other_port: u64,
    pub damage: Damage,
    /// Every SMPP PDU (only with `keep_all`).
    pub all: Vec<CapturedPdu>,
    blob: Vec<u8>,
}

impl std::fmt::Debug for Extracted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extracted")
            .field("file", &self.file)
            .field("packets", &self.packets)
            .field("pdus", &self.pdus.len())
            .field("streams", &self.streams.len())
            .field("skipped", &(self.skipped.len() as u64 + self.skipped_more))
            .field("damage", &self.damage)
            .finish_non_exhaustive()
    }
}

impl Extracted {
    /// The bytes of one recorded request (as captured, original sequence number).
    #[inline]
    pub fn frame(&self, p: &RecordedPdu) -> &[u8] {
        &self.blob[p.start as usize..(p.start + p.len) as usize]
    }

    /// The serialisable summary for the load report.
    pub fn summary(&self) -> ExtractSummary {
        let mut by_command = BTreeMap::new();
        for p in &self.pdus {
            *by_command.entry(crate::smpp::command_name(p.command_id)).or_insert(0u64) += 1;
        }
        ExtractSummary {
            file: self.file.clone(),
            packets: self.packets,
            tcp_connections: self.tcp_connections,
            pdus_extracted: self.pdus.len() as u64,
            by_command,
            with_recorded_status: self.pdus.iter().filter(|p| p.recorded_status.is_some()).count() as u64,
            streams_found: self.streams.len() as u64,
            streams: self.streams.iter().take(MAX_LISTED).cloned().collect(),
            skipped_streams: self.skipped.len() as u64 + self.skipped_more,
            skipped: self.skipped.clone(),
            other_port: self.other_port,
            damage: self.damage.clone(),
        }
    }
}

/// What the load report says about the capture.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExtractSummary {
    pub file: String,
    pub packets: u64,
    pub tcp_connections: u64,
    pub pdus_extracted: u64,
    pub by_command: BTreeMap<&'static str, u64>,
    pub with_recorded_status: u64,
    pub streams_found: u64,
    /// The first 100 streams.
    pub streams: Vec<StreamInfo>,
    pub skipped_streams: u64,
    /// The first 100 skipped connections with the reason.
    pub skipped: Vec<SkippedStream>,
    /// Connections ignored because of `--port`.
    pub other_port: u64,
    pub damage: Damage,
}

/// Why a capture could not be used at all.
#[derive(Debug, thiserror::Error)]
pub enum PcapReadError {
    /// The file cannot be opened or read.
    #[error("{file}: {error}")]
    Io { file: String, error: std::io::Error },
    /// Not a pcap or pcapng file.
    #[error("{file}: not a pcap or pcapng capture ({detail})")]
    Format { file: String, detail: String },
    /// Read fine but holds nothing to replay.
    #[error("{file}: no SMPP submit_sm / data_sm / submit_multi found ({detail})")]
    NoPdus { file: String, detail: String },
}

/// Reads `path` and extracts the SMPP requests to replay. Errors only when the file cannot be
/// read as a capture, or holds no usable request; everything else is counted in
/// [`Extracted::damage`] and [`Extracted::skipped`].
pub fn extract(path: &Path, opts: &ExtractOptions) -> Result<Extracted, PcapReadError> {
    let file = path.display().to_string();
    let f = File::open(path).map_err(|e| PcapReadError::Io { file: file.clone(), error: e })?;
    let mut x = extract_from(f, &file, opts)?;
    if x.pdus.is_empty() && !opts.keep_all {
        let detail = format!(
            "{} packets, {} TCP connections, {} skipped{}{}",
            x.packets,
            x.tcp_connections,
            x.skipped.len() as u64 + x.skipped_more,
            if x.other_port > 0 { format!(", {} on other ports", x.other_port) } else { String::new() },
            if x.damage.file_truncated { ", file truncated" } else { "" },
        );
        return Err(PcapReadError::NoPdus { file, detail });
    }
    x.file = path.display().to_string();
    Ok(x)
}

/// [`extract`] over any reader (`file` names it in messages). An empty result is not an error
/// here.
pub fn extract_from<R: Read + Send>(r: R, file: &str, opts: &ExtractOptions) -> Result<Extracted, PcapReadError> {
    let mut reader = match pcap_parser::create_reader(READ_BUFFER, r) {
        Ok(r) => r,
        Err(PcapError::Eof) => {
            return Err(PcapReadError::Format { file: file.into(), detail: "the file is empty".into() })
        }
        Err(PcapError::ReadError) => {
            return Err(PcapReadError::Format { file: file.into(), detail: "read error".into() })
        }
        Err(e) => return Err(PcapReadError::Format { file: file.into(), detail: format!("{e:?}") }),
    };
    let mut an = Analyzer::new(opts.clone());
    // Per pcapng section: (link type, ns per tick numerator/denominator, offset s) per interface.
    let mut ifaces: Vec<Iface> = Vec::new();
    let mut legacy: Option<(i32, bool)> = None;
    let mut cap = READ_BUFFER;
    loop {
        match reader.next() {
            Ok((offset, block)) => {
                match block {
                    PcapBlockOwned::LegacyHeader(h) => legacy = Some((h.network.0, h.is_nanosecond_precision())),
                    PcapBlockOwned::Legacy(b) => {
                        if let Some((link, nanos)) = legacy {
                            let frac = if nanos { b.ts_usec as u64 } else { b.ts_usec as u64 * 1000 };
                            let ts = (b.ts_sec as u64) * 1_000_000_000 + frac;
                            let data = &b.data[..(b.caplen as usize).min(b.data.len())];
                            an.packet(ts, link, data);
                        }
                    }
                    PcapBlockOwned::NG(Block::SectionHeader(_)) => ifaces.clear(),
                    PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => ifaces.push(Iface {
                        link: idb.linktype.0,
                        resolution: idb.ts_resolution().unwrap_or(1_000_000),
                        offset_s: idb.ts_offset(),
                    }),
                    PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                        an.packets_seen();
                        if let Some(i) = ifaces.get(epb.if_id as usize) {
                            let ticks = ((epb.ts_high as u64) << 32) | epb.ts_low as u64;
                            let data = &epb.data[..(epb.caplen as usize).min(epb.data.len())];
                            an.packet_counted(i.ts_ns(ticks), i.link, data);
                        } else {
                            an.x.damage.unsupported_link += 1;
                        }
                    }
                    PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
                        an.packets_seen();
                        if let Some(i) = ifaces.first() {
                            // No timestamp in an SPB: reuse the last one seen.
                            let data = &spb.data[..(spb.origlen as usize).min(spb.data.len())];
                            an.packet_counted(an.last_ts, i.link, data);
                        }
                    }
                    PcapBlockOwned::NG(_) => {}
                }
                reader.consume(offset);
            }
            Err(PcapError::Eof) => break,
            Err(PcapError::Incomplete(_)) => {
                if reader.reader_exhausted() {
                    an.x.damage.file_truncated |= !reader.data().is_empty();
                    break;
                }
                let at = reader.consumed();
                if let Err(e) = reader.refill() {
                    an.x.damage.bad_block = Some(format!("read error after {at} bytes: {e:?}"));
                    break;
                }
            }
            Err(PcapError::UnexpectedEof) => {
                an.x.damage.file_truncated |= !reader.data().is_empty();
                break;
            }
            Err(PcapError::BufferTooSmall) => {
                if cap >= MAX_BLOCK_BYTES || !reader.grow(cap * 4) {
                    an.x.damage.bad_block = Some(format!("block larger than {cap} bytes at {}", reader.consumed()));
                    break;
                }
                cap *= 4;
                let at = reader.consumed();
                if let Err(e) = reader.refill() {
                    an.x.damage.bad_block = Some(format!("read error after {at} bytes: {e:?}"));
                    break;
                }
            }
            Err(e) => {
                let detail = match e {
                    PcapError::NomError(_, k) | PcapError::OwnedNomError(_, k) => format!("{k:?}"),
                    e => format!("{e:?}"),
                };
                an.x.damage.bad_block = Some(format!("unparsable block at byte {}: {detail}", reader.consumed()));
                break;
            }
        }
    }
    let mut x = an.finish();
    x.file = file.to_owned();
    Ok(x)
}

/// A pcapng interface: its link type and clock.
struct Iface {
    link: i32,
    /// Ticks per second.
    resolution: u64,
    offset_s: i64,
}

impl Iface {
    fn ts_ns(&self, ticks: u64) -> u64 {
        let ns = (ticks as u128 * 1_000_000_000 / self.resolution.max(1) as u128) as i128
            + self.offset_s as i128 * 1_000_000_000;
        ns.clamp(0, u64::MAX as i128) as u64
    }
}

// ---------------------------------------------------------------------------------------------
// Link, network and transport layers

/// Link types (tcpdump.org/linktypes.html).
mod link {
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
fn ip_payload(link: i32, d: &[u8]) -> Option<&[u8]> {
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
        link::ETHERNET => d.get(ethertype_at(d, 12)?..),
        link::LINUX_SLL => d.get(ethertype_at(d, 14)?..),
        link::LINUX_SLL2 => {
            let t = u16::from_be_bytes([*d.first()?, *d.get(1)?]);
            matches!(t, 0x0800 | 0x86DD).then(|| d.get(20..)).flatten()
        }
        link::RAW | link::RAW_BSD | link::RAW_OPENBSD | link::IPV4 | link::IPV6 => Some(d),
        link::NULL | link::LOOP => {
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
struct Segment<'a> {
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    flags: u8,
    payload: &'a [u8],
    /// Length of the TCP payload on the wire (more than `payload` when the packet was cut
    /// short by the snaplen).
    real_len: usize,
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

enum L3<'a> {
    Tcp(Segment<'a>),
    NotTcp,
    Fragment,
    Truncated,
}

fn parse_ip(p: &[u8]) -> L3<'_> {
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

// ---------------------------------------------------------------------------------------------
// TCP reassembly

/// One TCP direction: in-order delivery by sequence number.
#[derive(Default)]
struct Reasm {
    /// Next expected sequence number (None until the SYN or the first data segment).
    next: Option<u32>,
    /// Unwrapped stream offset of `next`.
    next_abs: u64,
    /// Out-of-order segments by unwrapped offset.
    pending: BTreeMap<u64, (u64, Vec<u8>)>,
    pending_bytes: usize,
    /// A SYN was seen (the stream start is known).
    syn: bool,
}

/// What reassembly hands to the SMPP layer.
enum Chunk<'a> {
    Data(u64, &'a [u8]),
    Gap,
}

impl Reasm {
    /// Feeds a segment; delivers in-order data (and gaps) to `out`.
    fn segment(&mut self, seg: &Segment<'_>, ts: u64, dmg: &mut Damage, out: &mut dyn FnMut(Chunk<'_>)) {
        if seg.flags & SYN != 0 {
            if self.next.is_none() {
                self.next = Some(seg.seq.wrapping_add(1));
                self.syn = true;
            }
            if seg.payload.is_empty() {
                return;
            }
        }
        if seg.payload.is_empty() {
            return;
        }
        let next = *self.next.get_or_insert(seg.seq);
        let rel = seg.seq.wrapping_sub(next) as i32 as i64;
        let len = seg.payload.len() as i64;
        if rel + len <= 0 {
            dmg.retransmissions += 1;
            return;
        }
        if rel > 0 {
            dmg.out_of_order += 1;
            let at = self.next_abs + rel as u64;
            let keep = match self.pending.get(&at) {
                Some((_, v)) => v.len() < seg.payload.len(),
                None => true,
            };
            if keep {
                if let Some((_, old)) = self.pending.insert(at, (ts, seg.payload.to_vec())) {
                    self.pending_bytes -= old.len();
                }
                self.pending_bytes += seg.payload.len();
            } else {
                dmg.retransmissions += 1;
            }
            if self.pending_bytes > MAX_PENDING_BYTES {
                self.skip_hole(dmg, out);
            }
            return;
        }
        let data = if rel < 0 {
            dmg.overlaps += 1;
            &seg.payload[(-rel) as usize..]
        } else {
            seg.payload
        };
        self.deliver(ts, data, out);
        if seg.real_len > seg.payload.len() {
            // Cut short by the snaplen: the rest of this segment was never captured.
            self.cut((seg.real_len - seg.payload.len()) as u32, dmg, out);
        }
        self.drain(dmg, out);
    }

    fn deliver(&mut self, ts: u64, data: &[u8], out: &mut dyn FnMut(Chunk<'_>)) {
        if let Some(n) = self.next.as_mut() {
            *n = n.wrapping_add(data.len() as u32);
        }
        self.next_abs += data.len() as u64;
        out(Chunk::Data(ts, data));
    }

    /// Delivers held segments that have become contiguous.
    fn drain(&mut self, dmg: &mut Damage, out: &mut dyn FnMut(Chunk<'_>)) {
        while let Some(entry) = self.pending.first_entry() {
            let at = *entry.key();
            if at > self.next_abs {
                break;
            }
            let (ts, v) = entry.remove();
            self.pending_bytes -= v.len();
            let skip = (self.next_abs - at) as usize;
            if skip >= v.len() {
                dmg.retransmissions += 1;
                continue;
            }
            if skip > 0 {
                dmg.overlaps += 1;
            }
            self.deliver(ts, &v[skip..], out);
        }
    }

    /// Gives up on the hole before the first held segment: a gap, then what follows it.
    fn skip_hole(&mut self, dmg: &mut Damage, out: &mut dyn FnMut(Chunk<'_>)) {
        let Some((&at, _)) = self.pending.first_key_value() else { return };
        dmg.gaps += 1;
        out(Chunk::Gap);
        let jump = at - self.next_abs;
        self.next_abs = at;
        if let Some(n) = self.next.as_mut() {
            *n = n.wrapping_add(jump as u32);
        }
        self.drain(dmg, out);
    }

    /// End of capture: whatever is still held follows holes.
    fn finish(&mut self, dmg: &mut Damage, out: &mut dyn FnMut(Chunk<'_>)) {
        while !self.pending.is_empty() {
            self.skip_hole(dmg, out);
        }
    }

    /// `missing` bytes at `next` were never captured: a gap; move past them.
    fn cut(&mut self, missing: u32, dmg: &mut Damage, out: &mut dyn FnMut(Chunk<'_>)) {
        dmg.gaps += 1;
        out(Chunk::Gap);
        if let Some(n) = self.next.as_mut() {
            *n = n.wrapping_add(missing);
        }
        self.next_abs += missing as u64;
    }
}

// ---------------------------------------------------------------------------------------------
// SMPP framing over a reassembled direction

/// Body-less PDUs: their command_length is exactly 16.
fn header_only(id: u32) -> bool {
    matches!(
        id,
        cmd::GENERIC_NACK
            | cmd::ENQUIRE_LINK
            | cmd::ENQUIRE_LINK_RESP
            | cmd::UNBIND
            | cmd::UNBIND_RESP
            | cmd::CANCEL_SM_RESP
            | cmd::REPLACE_SM_RESP
    )
}

/// Whether `b` (≥ 16 bytes) starts with a believable SMPP header. `strict` (used when hunting
/// for a header after lost sync) also wants status 0 on requests, a sequence number in
/// range and the exact length of body-less PDUs.
fn plausible(b: &[u8], strict: bool) -> bool {
    let h = Header::read(b);
    let len = h.command_length as usize;
    if !(HEADER_LEN..=MAX_PDU_BYTES).contains(&len) || !is_known_command(h.command_id) {
        return false;
    }
    if !strict {
        return true;
    }
    let req = h.command_id & RESP_BIT == 0;
    (!req || h.command_status == 0)
        && (h.sequence_number <= 0x7FFF_FFFF)
        && (h.sequence_number != 0 || h.command_id == cmd::GENERIC_NACK)
        && (!header_only(h.command_id) || len == HEADER_LEN)
        && (header_only(h.command_id) || len > HEADER_LEN || h.command_id & RESP_BIT != 0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Looking for the first header (stream start) or the next one after lost sync.
    Hunt,
    Sync,
    /// Not SMPP; bytes are dropped.
    Ignored,
}

/// One direction's SMPP framing state.
struct SmppDir {
    buf: Vec<u8>,
    start: usize,
    /// Timestamp of the newest data in `buf`.
    ts: u64,
    mode: Mode,
    framer: Framer,
    /// Bytes received in total.
    bytes: u64,
    /// Bytes scanned while hunting before the first sync.
    hunted_before_sync: usize,
    pdus: u64,
    /// Lost framing and found it again.
    resyncs: u64,
    /// Bytes dropped while hunting (or cut off by the end of the capture).
    bytes_skipped: u64,
}

impl SmppDir {
    fn new() -> SmppDir {
        SmppDir {
            buf: Vec::new(),
            start: 0,
            ts: 0,
            mode: Mode::Hunt,
            framer: Framer::new(MAX_PDU_BYTES),
            bytes: 0,
            hunted_before_sync: 0,
            pdus: 0,
            resyncs: 0,
            bytes_skipped: 0,
        }
    }

    /// Bytes are missing from here on: frame what is complete (as at the end of the data),
    /// drop the partial PDU, and hunt for the next header in what follows.
    fn gap(&mut self, on: &mut dyn FnMut(u64, &[u8])) {
        if self.mode == Mode::Ignored {
            return;
        }
        self.parse(true, on);
        self.bytes_skipped += (self.buf.len() - self.start) as u64;
        self.buf.clear();
        self.start = 0;
        self.mode = Mode::Hunt;
        self.framer = Framer::new(MAX_PDU_BYTES);
    }

    /// Appends data and returns the frames now complete through `on`.
    fn push(&mut self, ts: u64, data: &[u8], on: &mut dyn FnMut(u64, &[u8])) {
        self.bytes += data.len() as u64;
        if self.mode == Mode::Ignored {
            return;
        }
        self.ts = ts;
        self.buf.extend_from_slice(data);
        self.parse(false, on);
        // Compact.
        if self.start > 0 && (self.start == self.buf.len() || self.start > 64 * 1024) {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }

    /// Frames what the buffer holds; `eof` = no more data will come.
    fn parse(&mut self, eof: bool, on: &mut dyn FnMut(u64, &[u8])) {
        loop {
            match self.mode {
                Mode::Ignored => return,
                Mode::Sync => {
                    let avail = &self.buf[self.start..];
                    if avail.len() < HEADER_LEN {
                        return;
                    }
                    if !plausible(avail, false) {
                        self.mode = Mode::Hunt;
                        self.framer = Framer::new(MAX_PDU_BYTES);
                        continue;
                    }
                    match self.framer.next(avail) {
                        Next::Frame(n) => {
                            self.pdus += 1;
                            on(self.ts, &avail[..n]);
                            self.start += n;
                        }
                        Next::Incomplete => return,
                        // Excluded by `plausible`; treat as lost sync all the same.
                        _ => {
                            self.mode = Mode::Hunt;
                            self.framer = Framer::new(MAX_PDU_BYTES);
                        }
                    }
                }
                Mode::Hunt => {
                    let before = self.pdus == 0;
                    match self.hunt(eof) {
                        Some(skipped) => {
                            self.bytes_skipped += skipped as u64;
                            if !before {
                                self.resyncs += 1;
                            }
                            self.mode = Mode::Sync;
                        }
                        None => {
                            if before && self.hunted_before_sync > HUNT_LIMIT {
                                self.mode = Mode::Ignored;
                                self.buf = Vec::new();
                                self.start = 0;
                            }
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Scans for a header followed by another header (or the end of the data). On success
    /// the buffer starts there and the number of bytes skipped is returned; otherwise the
    /// bytes that cannot start a header are dropped and None is returned (wait for more).
    fn hunt(&mut self, eof: bool) -> Option<usize> {
        let avail = &self.buf[self.start..];
        let mut i = 0;
        let found = loop {
            if avail.len() - i < HEADER_LEN {
                break None;
            }
            let c = &avail[i..];
            if plausible(c, true) {
                let len = Header::read(c).command_length as usize;
                if c.len() < len {
                    if eof {
                        i += 1;
                        continue;
                    }
                    break None; // wait for the candidate to complete
                }
                let rest = &c[len..];
                if rest.is_empty() {
                    break Some(i);
                }
                if rest.len() < HEADER_LEN {
                    if eof {
                        break Some(i);
                    }
                    break None;
                }
                if plausible(rest, false) {
                    break Some(i);
                }
            }
            i += 1;
        };
        match found {
            Some(i) => {
                self.start += i;
                if self.pdus == 0 {
                    self.hunted_before_sync += i;
                }
                Some(i)
            }
            None => {
                // Keep the unscanned tail (a candidate may start there).
                if self.pdus == 0 {
                    self.hunted_before_sync += i;
                }
                self.start += i;
                None
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Connections

/// Role evidence from the command ids a direction carries.
fn esme_evidence(id: u32) -> bool {
    matches!(
        id,
        cmd::BIND_RECEIVER
            | cmd::BIND_TRANSMITTER
            | cmd::BIND_TRANSCEIVER
            | cmd::SUBMIT_SM
            | cmd::SUBMIT_MULTI
            | cmd::QUERY_SM
            | cmd::CANCEL_SM
            | cmd::REPLACE_SM
            | cmd::DELIVER_SM_RESP
    )
}

fn smsc_evidence(id: u32) -> bool {
    matches!(
        id,
        cmd::BIND_RECEIVER_RESP
            | cmd::BIND_TRANSMITTER_RESP
            | cmd::BIND_TRANSCEIVER_RESP
            | cmd::SUBMIT_SM_RESP
            | cmd::SUBMIT_MULTI_RESP
            | cmd::DELIVER_SM
            | cmd::OUTBIND
            | cmd::ALERT_NOTIFICATION
    )
}

fn is_replayable(id: u32) -> bool {
    matches!(id, cmd::SUBMIT_SM | cmd::DATA_SM | cmd::SUBMIT_MULTI)
}

struct Dir {
    reasm: Reasm,
    smpp: SmppDir,
    esme_ev: u64,
    smsc_ev: u64,
    /// Indexes (into the analyzer's candidates) of requests sent this way.
    requests: Vec<u32>,
    /// Unanswered requests by sequence number.
    pending: HashMap<u32, u32>,
}

impl Dir {
    fn new() -> Dir {
        Dir {
            reasm: Reasm::default(),
            smpp: SmppDir::new(),
            esme_ev: 0,
            smsc_ev: 0,
            requests: Vec::new(),
            pending: HashMap::new(),
        }
    }
}

struct Conn {
    /// `ends[0]` sent the first packet seen.
    ends: [SocketAddr; 2],
    dirs: [Dir; 2],
    /// Which end sent the SYN, if seen.
    client: Option<usize>,
    system_id: Option<String>,
    data_seen: bool,
}

/// Builds the [`Extracted`] packet by packet.
struct Analyzer {
    opts: ExtractOptions,
    x: Extracted,
    conns: Vec<Conn>,
    by_key: HashMap<(SocketAddr, SocketAddr), u32>,
    /// Replay candidates from either direction, finalised at the end.
    cands: Vec<RecordedPdu>,
    last_ts: u64,
    /// Connections ignored because of the port filter (by key, so each counts once).
    other_port: HashMap<(SocketAddr, SocketAddr), ()>,
    /// Frames completed by the current segment: bytes, and (timestamp, start, end).
    scratch: Vec<u8>,
    frames: Vec<(u64, usize, usize)>,
}

impl Analyzer {
    fn new(opts: ExtractOptions) -> Analyzer {
        Analyzer {
            opts,
            x: Extracted::default(),
            conns: Vec::new(),
            by_key: HashMap::new(),
            cands: Vec::new(),
            last_ts: 0,
            other_port: HashMap::new(),
            scratch: Vec::new(),
            frames: Vec::new(),
        }
    }

    fn packets_seen(&mut self) {
        self.x.packets += 1;
    }

    fn packet(&mut self, ts: u64, link: i32, data: &[u8]) {
        self.x.packets += 1;
        self.packet_counted(ts, link, data);
    }

    fn packet_counted(&mut self, ts: u64, link: i32, data: &[u8]) {
        self.last_ts = ts;
        let Some(ip) = ip_payload(link, data) else {
            if matches!(
                link,
                link::ETHERNET
                    | link::LINUX_SLL
                    | link::LINUX_SLL2
                    | link::NULL
                    | link::LOOP
                    | link::RAW
                    | link::RAW_BSD
                    | link::RAW_OPENBSD
                    | link::IPV4
                    | link::IPV6
            ) {
                self.x.damage.not_tcp += 1;
            } else {
                self.x.damage.unsupported_link += 1;
            }
            return;
        };
        match parse_ip(ip) {
            L3::Tcp(seg) => self.segment(ts, seg),
            L3::NotTcp => self.x.damage.not_tcp += 1,
            L3::Fragment => self.x.damage.ip_fragments += 1,
            L3::Truncated => self.x.damage.truncated_packets += 1,
        }
    }

    fn segment(&mut self, ts: u64, seg: Segment<'_>) {
        if let Some(p) = self.opts.port {
            if seg.src.port() != p && seg.dst.port() != p {
                self.other_port.insert(canonical(seg.src, seg.dst), ());
                return;
            }
        }
        let key = canonical(seg.src, seg.dst);
        let fresh_syn = seg.flags & (SYN | ACK) == SYN;
        let idx = match self.by_key.get(&key) {
            Some(&i) if !(fresh_syn && self.conns[i as usize].data_seen) => i as usize,
            _ => {
                // New connection (or the 4-tuple reused after a finished one).
                if let Some(&old) = self.by_key.get(&key) {
                    self.close(old as usize);
                }
                let i = self.conns.len();
                self.conns.push(Conn {
                    ends: [seg.src, seg.dst],
                    dirs: [Dir::new(), Dir::new()],
                    client: None,
                    system_id: None,
                    data_seen: false,
                });
                self.by_key.insert(key, i as u32);
                self.x.tcp_connections += 1;
                i
            }
        };
        let d = if self.conns[idx].ends[0] == seg.src { 0 } else { 1 };
        let conn = &mut self.conns[idx];
        if fresh_syn {
            conn.client.get_or_insert(d);
        }
        if !seg.payload.is_empty() {
            conn.data_seen = true;
        }
        if seg.real_len > seg.payload.len() {
            self.x.damage.truncated_packets += 1;
        }
        let dir = &mut conn.dirs[d];
        // Reassembly feeds SMPP framing; complete frames are collected in the scratch buffers
        // (reused, so nothing is allocated per segment) and handled afterwards.
        let (reasm, smpp) = (&mut dir.reasm, &mut dir.smpp);
        let (bytes, frames) = (&mut self.scratch, &mut self.frames);
        reasm.segment(&seg, ts, &mut self.x.damage, &mut |c| match c {
            Chunk::Data(t, b) => smpp.push(t, b, &mut |t, f| {
                let s = bytes.len();
                bytes.extend_from_slice(f);
                frames.push((t, s, bytes.len()));
            }),
            Chunk::Gap => smpp.gap(&mut |t, f| {
                let s = bytes.len();
                bytes.extend_from_slice(f);
                frames.push((t, s, bytes.len()));
            }),
        });
        self.flush_frames(idx, d);
    }

    /// Handles the frames collected in the scratch buffers.
    fn flush_frames(&mut self, idx: usize, d: usize) {
        if self.frames.is_empty() {
            return;
        }
        let bytes = std::mem::take(&mut self.scratch);
        let mut frames = std::mem::take(&mut self.frames);
        for &(t, s, e) in &frames {
            self.on_pdu(idx, d, t, &bytes[s..e]);
        }
        frames.clear();
        self.frames = frames;
        self.scratch = bytes;
        self.scratch.clear();
    }

    fn on_pdu(&mut self, idx: usize, d: usize, ts: u64, f: &[u8]) {
        let h = Header::read(f);
        let conn = &mut self.conns[idx];
        if self.opts.keep_all {
            self.x.all.push(CapturedPdu {
                conn: idx as u32,
                src: conn.ends[d],
                dst: conn.ends[1 - d],
                ts_ns: ts,
                frame: f.to_vec(),
            });
        }
        let id = h.command_id;
        if esme_evidence(id) {
            conn.dirs[d].esme_ev += 1;
        } else if smsc_evidence(id) {
            conn.dirs[d].smsc_ev += 1;
        }
        if matches!(id, cmd::BIND_RECEIVER | cmd::BIND_TRANSMITTER | cmd::BIND_TRANSCEIVER) && conn.system_id.is_none()
        {
            if let Ok(b) = crate::smpp::pdu::decode_bind(f) {
                conn.system_id = Some(b.system_id);
            }
        }
        if is_replayable(id) {
            let i = self.cands.len() as u32;
            let start = self.x.blob.len() as u32;
            self.x.blob.extend_from_slice(f);
            self.cands.push(RecordedPdu {
                stream: idx as u32,
                ts_ns: ts,
                command_id: id,
                sequence: h.sequence_number,
                recorded_status: None,
                start,
                len: f.len() as u32,
            });
            conn.dirs[d].requests.push(i);
            conn.dirs[d].pending.insert(h.sequence_number, i);
        } else if id & RESP_BIT != 0 {
            let other = &mut conn.dirs[1 - d];
            let matched = match other.pending.get(&h.sequence_number) {
                Some(&i) => {
                    let c = &mut self.cands[i as usize];
                    if id == c.command_id | RESP_BIT || id == cmd::GENERIC_NACK {
                        c.recorded_status = Some(h.command_status);
                        other.pending.remove(&h.sequence_number);
                        true
                    } else {
                        false
                    }
                }
                None => false,
            };
            if !matched
                && matches!(id, cmd::SUBMIT_SM_RESP | cmd::DATA_SM_RESP | cmd::SUBMIT_MULTI_RESP | cmd::GENERIC_NACK)
            {
                self.x.damage.unmatched_responses += 1;
            }
        }
    }

    /// End of a connection's life (capture end or 4-tuple reuse): flush held data.
    fn close(&mut self, idx: usize) {
        for d in 0..2 {
            let dir = &mut self.conns[idx].dirs[d];
            let (reasm, smpp) = (&mut dir.reasm, &mut dir.smpp);
            let (bytes, frames) = (&mut self.scratch, &mut self.frames);
            let mut on = |t: u64, f: &[u8]| {
                let s = bytes.len();
                bytes.extend_from_slice(f);
                frames.push((t, s, bytes.len()));
            };
            reasm.finish(&mut self.x.damage, &mut |c| match c {
                Chunk::Data(t, b) => smpp.push(t, b, &mut on),
                Chunk::Gap => smpp.gap(&mut on),
            });
            smpp.parse(true, &mut on);
            let left = smpp.buf.len() - smpp.start;
            if smpp.mode == Mode::Sync && left > 0 {
                // A PDU cut off by the end of the capture.
                smpp.bytes_skipped += left as u64;
            }
            smpp.buf = Vec::new();
            smpp.start = 0;
            self.flush_frames(idx, d);
        }
    }

    fn finish(mut self) -> Extracted {
        for i in 0..self.conns.len() {
            self.close(i);
        }
        self.x.other_port = self.other_port.len() as u64;
        for c in &self.conns {
            for d in &c.dirs {
                self.x.damage.resyncs += d.smpp.resyncs;
                self.x.damage.bytes_skipped += d.smpp.bytes_skipped;
            }
        }
        let mut keep = vec![false; self.cands.len()];
        let mut stream_of_conn: HashMap<usize, u32> = HashMap::new();
        for (ci, c) in self.conns.iter().enumerate() {
            let score = |d: usize| c.dirs[d].esme_ev + c.dirs[1 - d].smsc_ev;
            let esme = match score(0).cmp(&score(1)) {
                std::cmp::Ordering::Greater => 0,
                std::cmp::Ordering::Less => 1,
                std::cmp::Ordering::Equal => match (c.client, self.opts.port) {
                    (Some(cl), _) => cl,
                    (None, Some(p)) if c.ends[0].port() == p => 1,
                    (None, _) if c.ends[0].port() == 2775 => 1,
                    _ => 0,
                },
            };
            let smpp = c.dirs.iter().any(|d| d.smpp.pdus > 0);
            let reqs = &c.dirs[esme].requests;
            let other_server = self.opts.server.is_some_and(|ip| c.ends[1 - esme].ip() != ip);
            if !reqs.is_empty() && other_server {
                if self.x.skipped.len() < MAX_LISTED {
                    self.x.skipped.push(SkippedStream {
                        a: c.ends[esme].to_string(),
                        b: c.ends[1 - esme].to_string(),
                        bytes: c.dirs[0].smpp.bytes + c.dirs[1].smpp.bytes,
                        reason: "SMSC side is not --server",
                    });
                } else {
                    self.x.skipped_more += 1;
                }
            } else if !reqs.is_empty() {
                let sid = self.x.streams.len() as u32;
                stream_of_conn.insert(ci, sid);
                let mut with_status = 0;
                for &r in reqs {
                    keep[r as usize] = true;
                    with_status += self.cands[r as usize].recorded_status.is_some() as u64;
                }
                self.x.streams.push(StreamInfo {
                    esme: c.ends[esme].to_string(),
                    smsc: c.ends[1 - esme].to_string(),
                    system_id: c.system_id.clone(),
                    pdus: reqs.len() as u64,
                    with_status,
                });
            } else {
                let bytes = c.dirs[0].smpp.bytes + c.dirs[1].smpp.bytes;
                if bytes == 0 {
                    continue; // handshake only: nothing worth listing
                }
                let reason = if smpp { "SMPP without submit_sm/data_sm/submit_multi" } else { "not SMPP" };
                if self.x.skipped.len() < MAX_LISTED {
                    self.x.skipped.push(SkippedStream {
                        a: c.ends[0].to_string(),
                        b: c.ends[1].to_string(),
                        bytes,
                        reason,
                    });
                } else {
                    self.x.skipped_more += 1;
                }
            }
        }
        let cands = std::mem::take(&mut self.cands);
        self.x.pdus = cands
            .into_iter()
            .zip(keep)
            .filter(|(_, k)| *k)
            .map(|(mut p, _)| {
                p.stream = stream_of_conn[&(p.stream as usize)];
                p
            })
            .collect();
        self.x
    }
}

fn canonical(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

// ---------------------------------------------------------------------------------------------
// Replay pacing

/// How fast to replay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Speed {
    /// Recorded time × 1/factor (`1x` = as recorded, `10x` = ten times faster).
    Factor(f64),
    /// As fast as the window allows.
    Max,
}

impl std::str::FromStr for Speed {
    type Err = String;
    fn from_str(s: &str) -> Result<Speed, String> {
        let t = s.trim().to_ascii_lowercase();
        if t == "max" {
            return Ok(Speed::Max);
        }
        let n = t.strip_suffix('x').unwrap_or(&t);
        match n.parse::<f64>() {
            Ok(f) if f.is_finite() && f > 0.0 => Ok(Speed::Factor(f)),
            _ => Err(format!("speed {s:?}: expected 1x, 10x, 0.5x … or max")),
        }
    }
}

impl std::fmt::Display for Speed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Speed::Factor(x) => write!(f, "{x}x"),
            Speed::Max => f.write_str("max"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smpp::pdu::{put_resp_with_id, SubmitBuilder};
    use bytes::BytesMut;

    /// A classic pcap (µs, LINKTYPE_ETHERNET) built by hand.
    pub(crate) struct PcapBuilder {
        pub out: Vec<u8>,
    }

    impl PcapBuilder {
        pub fn new(link: u32) -> PcapBuilder {
            let mut out = Vec::new();
            out.extend_from_slice(&0xA1B2_C3D4u32.to_le_bytes());
            out.extend_from_slice(&2u16.to_le_bytes());
            out.extend_from_slice(&4u16.to_le_bytes());
            out.extend_from_slice(&0i32.to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&65535u32.to_le_bytes());
            out.extend_from_slice(&link.to_le_bytes());
            PcapBuilder { out }
        }
        pub fn packet(&mut self, ts_us: u64, data: &[u8]) {
            self.out.extend_from_slice(&((ts_us / 1_000_000) as u32).to_le_bytes());
            self.out.extend_from_slice(&((ts_us % 1_000_000) as u32).to_le_bytes());
            self.out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            self.out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            self.out.extend_from_slice(data);
        }
        /// Ethernet + IPv4 + TCP around `payload`.
        pub fn tcp(
            &mut self,
            ts_us: u64,
            src: ([u8; 4], u16),
            dst: ([u8; 4], u16),
            seq: u32,
            flags: u8,
            payload: &[u8],
        ) {
            let mut p = vec![0u8; 12];
            p.extend_from_slice(&0x0800u16.to_be_bytes());
            let total = 20 + 20 + payload.len();
            p.extend_from_slice(&[0x45, 0, (total >> 8) as u8, total as u8, 0, 0, 0x40, 0, 64, 6, 0, 0]);
            p.extend_from_slice(&src.0);
            p.extend_from_slice(&dst.0);
            p.extend_from_slice(&src.1.to_be_bytes());
            p.extend_from_slice(&dst.1.to_be_bytes());
            p.extend_from_slice(&seq.to_be_bytes());
            p.extend_from_slice(&0u32.to_be_bytes());
            p.extend_from_slice(&[0x50, flags, 0xFF, 0xFF, 0, 0, 0, 0]);
            p.extend_from_slice(payload);
            self.packet(ts_us, &p);
        }
    }

    const ESME: ([u8; 4], u16) = ([192, 0, 2, 1], 40000);
    const SMSC: ([u8; 4], u16) = ([192, 0, 2, 2], 2775);

    fn submit(seq: u32, dest: &str) -> Vec<u8> {
        SubmitBuilder::new("1069", dest).short_message(b"hello").build(seq).to_vec()
    }

    fn resp(seq: u32, status: u32) -> Vec<u8> {
        let mut b = BytesMut::new();
        put_resp_with_id(&mut b, cmd::SUBMIT_SM_RESP, status, seq, b"id");
        b.to_vec()
    }

    fn read(bytes: &[u8], opts: &ExtractOptions) -> Extracted {
        extract_from(std::io::Cursor::new(bytes.to_vec()), "t.pcap", opts).unwrap()
    }

    #[test]
    fn out_of_order_and_retransmitted_segments_reassemble() {
        let mut stream = Vec::new();
        for i in 1..=4 {
            stream.extend(submit(i, &format!("861380000000{i}")));
        }
        let mut pb = PcapBuilder::new(1);
        pb.tcp(0, ESME, SMSC, 999, SYN, &[]);
        // Segments of 37 bytes, sent as: 0, 2, 1 (out of order), 1 again (retransmission),
        // a segment overlapping 2 and 3, then the rest.
        let isn = 1000u32;
        let seg = |k: usize| (k * 37, ((k + 1) * 37).min(stream.len()));
        let n = stream.len().div_ceil(37);
        let mut order: Vec<usize> = vec![0, 2, 1, 1];
        order.extend(3..n);
        for (t, &k) in order.iter().enumerate() {
            let (a, b) = seg(k);
            pb.tcp(t as u64 * 10, ESME, SMSC, isn + a as u32, ACK, &stream[a..b]);
            if k == 2 {
                // Overlap: bytes 60..100 again.
                pb.tcp(t as u64 * 10 + 1, ESME, SMSC, isn + 60, ACK, &stream[60..100]);
            }
        }
        // Responses, one with an error.
        let mut back = resp(1, 0);
        back.extend(resp(2, 0x0B));
        back.extend(resp(4, 0));
        pb.tcp(500, SMSC, ESME, 5000, ACK, &back);
        let x = read(&pb.out, &ExtractOptions::default());
        assert_eq!(x.pdus.len(), 4, "{:?}", x.damage);
        for (i, p) in x.pdus.iter().enumerate() {
            assert_eq!(p.sequence, i as u32 + 1);
            assert_eq!(x.frame(p), &submit(p.sequence, &format!("861380000000{}", i + 1))[..]);
        }
        assert_eq!(x.pdus[0].recorded_status, Some(0));
        assert_eq!(x.pdus[1].recorded_status, Some(0x0B));
        assert_eq!(x.pdus[2].recorded_status, None);
        assert_eq!(x.pdus[3].recorded_status, Some(0));
        assert!(x.damage.out_of_order >= 1);
        assert!(x.damage.retransmissions >= 1);
        assert_eq!(x.damage.gaps, 0);
        assert_eq!(x.damage.resyncs, 0);
        assert_eq!(x.streams.len(), 1);
        assert_eq!(x.streams[0].esme, "192.0.2.1:40000");
        assert_eq!(x.streams[0].with_status, 3);
    }

    #[test]
    fn a_gap_is_reported_and_framing_resynchronises() {
        let mut stream = Vec::new();
        for i in 1..=5 {
            stream.extend(submit(i, "8613800000001"));
        }
        let l = submit(1, "8613800000001").len();
        let mut pb = PcapBuilder::new(1);
        // PDU 1 whole, then a hole in the middle of PDU 2, then the rest.
        pb.tcp(0, ESME, SMSC, 1, ACK, &stream[..l + 10]);
        pb.tcp(1, ESME, SMSC, 1 + (l + 30) as u32, ACK, &stream[l + 30..]);
        let x = read(&pb.out, &ExtractOptions::default());
        assert_eq!(x.damage.gaps, 1);
        assert_eq!(x.damage.resyncs, 1);
        let seqs: Vec<u32> = x.pdus.iter().map(|p| p.sequence).collect();
        assert_eq!(seqs, vec![1, 3, 4, 5]);
    }

    #[test]
    fn non_smpp_stream_and_truncated_file_are_reported_not_fatal() {
        let mut pb = PcapBuilder::new(1);
        let web = ([192, 0, 2, 9], 80);
        pb.tcp(0, ([192, 0, 2, 8], 50000), web, 1, ACK, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        pb.tcp(1, web, ([192, 0, 2, 8], 50000), 1, ACK, &vec![b'x'; 70_000 / 2]);
        pb.tcp(2, ESME, SMSC, 1, ACK, &submit(7, "8613800000001"));
        pb.tcp(3, SMSC, ESME, 1, ACK, &resp(7, 0x58));
        pb.tcp(4, ESME, SMSC, 1 + 80, ACK, &submit(8, "8613800000001"));
        // Cut the file inside the last packet.
        let cut = &pb.out[..pb.out.len() - 20];
        let x = read(cut, &ExtractOptions::default());
        assert!(x.damage.file_truncated);
        assert_eq!(x.pdus.len(), 1);
        assert_eq!(x.pdus[0].recorded_status, Some(0x58));
        assert_eq!(x.skipped.len(), 1);
        assert_eq!(x.skipped[0].reason, "not SMPP");
        // --port filter.
        let x = read(cut, &ExtractOptions { port: Some(80), ..Default::default() });
        assert_eq!(x.pdus.len(), 0);
        assert_eq!(x.other_port, 1);
        // Garbage is a format error naming the file; an empty capture is NoPdus naming it.
        let e = extract_from(
            std::io::Cursor::new(b"not a capture at all, really".to_vec()),
            "junk.bin",
            &ExtractOptions::default(),
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("junk.bin: not a pcap"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("empty.pcap");
        std::fs::write(&p, PcapBuilder::new(1).out).unwrap();
        let e = extract(&p, &ExtractOptions::default()).unwrap_err().to_string();
        assert!(e.contains("empty.pcap: no SMPP"), "{e}");
    }

    #[test]
    fn link_types_and_ipv6_are_decoded() {
        // Linux SLL + IPv6.
        let pdu = submit(3, "8613800000003");
        let mut ip6 = vec![0x60, 0, 0, 0];
        ip6.extend_from_slice(&((20 + pdu.len()) as u16).to_be_bytes());
        ip6.extend_from_slice(&[6, 64]);
        ip6.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        ip6.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        ip6.extend_from_slice(&40001u16.to_be_bytes());
        ip6.extend_from_slice(&2775u16.to_be_bytes());
        ip6.extend_from_slice(&7u32.to_be_bytes());
        ip6.extend_from_slice(&0u32.to_be_bytes());
        ip6.extend_from_slice(&[0x50, ACK, 0xFF, 0xFF, 0, 0, 0, 0]);
        ip6.extend_from_slice(&pdu);
        let mut sll = vec![0u8; 14];
        sll.extend_from_slice(&0x86DDu16.to_be_bytes());
        sll.extend_from_slice(&ip6);
        let mut pb = PcapBuilder::new(113);
        pb.packet(1_500_000, &sll);
        let x = read(&pb.out, &ExtractOptions::default());
        assert_eq!(x.pdus.len(), 1);
        assert_eq!(x.pdus[0].ts_ns, 1_500_000_000);
        assert_eq!(x.streams[0].smsc, "[::1]:2775");
        // Raw IPv6 and SLL2 carry the same packet.
        let mut pb = PcapBuilder::new(101);
        pb.packet(0, &ip6);
        assert_eq!(read(&pb.out, &ExtractOptions::default()).pdus.len(), 1);
        let mut sll2 = vec![0x86, 0xDD];
        sll2.resize(20, 0);
        sll2.extend_from_slice(&ip6);
        let mut pb = PcapBuilder::new(276);
        pb.packet(0, &sll2);
        assert_eq!(read(&pb.out, &ExtractOptions::default()).pdus.len(), 1);
        // An unknown link type is counted, not fatal.
        let mut pb = PcapBuilder::new(147);
        pb.packet(0, &ip6);
        assert_eq!(read(&pb.out, &ExtractOptions::default()).damage.unsupported_link, 1);
    }

    #[test]
    fn speed_parses() {
        assert_eq!("1x".parse::<Speed>(), Ok(Speed::Factor(1.0)));
        assert_eq!("10X".parse::<Speed>(), Ok(Speed::Factor(10.0)));
        assert_eq!("0.5".parse::<Speed>(), Ok(Speed::Factor(0.5)));
        assert_eq!("max".parse::<Speed>(), Ok(Speed::Max));
        assert!("0x".parse::<Speed>().is_err());
        assert!("fast".parse::<Speed>().is_err());
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut pb = PcapBuilder::new(1);
        let mut x = 0x1234_5678_9ABC_DEF0u64;
        for t in 0..300 {
            let mut p = Vec::new();
            for _ in 0..(x % 300) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                p.push(x as u8);
            }
            // Half of them as TCP segments on one connection with random seqs.
            if t % 2 == 0 {
                pb.tcp(t, ESME, SMSC, x as u32, (x >> 40) as u8, &p);
            } else {
                pb.packet(t, &p);
            }
        }
        let _ = read(&pb.out, &ExtractOptions::default());
        // And random bytes as a whole file.
        let _ = extract_from(std::io::Cursor::new(pb.out[24..].to_vec()), "r", &ExtractOptions::default());
    }
}

#[cfg(test)]
mod perf {
    use super::*;
    use crate::capture::{Capture, CaptureConfig, Flow};
    use crate::smpp::pdu::{put_resp_with_id, SubmitBuilder};
    use bytes::BytesMut;

    /// Writes a capture of `CONSENTGATE_PCAP_PDUS` (1 M) submit_sm + responses on 8 sessions,
    /// `CONSENTGATE_PCAP_BATCH` (64) PDUs per packet, to `CONSENTGATE_PCAP_OUT` or a temp
    /// dir, then times the reader over it.
    #[test]
    #[ignore = "throughput: cargo test --release --lib load::pcap::perf -- --ignored --nocapture"]
    fn read_throughput() {
        let n: u32 = std::env::var("CONSENTGATE_PCAP_PDUS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
        let tmp = tempfile::tempdir().unwrap();
        let dir = std::env::var("CONSENTGATE_PCAP_OUT").map(std::path::PathBuf::from).unwrap_or(tmp.path().into());
        let cap = Capture::start(CaptureConfig {
            dir: dir.clone(),
            max_file_bytes: 4 << 30,
            queue_records: 1 << 20,
            queue_bytes: 1 << 30,
            ..Default::default()
        })
        .unwrap();
        let mut sessions: Vec<_> = (0..8).map(|_| cap.session("perf").unwrap()).collect();
        let batch: u32 = std::env::var("CONSENTGATE_PCAP_BATCH").ok().and_then(|v| v.parse().ok()).unwrap_or(64);
        let frames: Vec<Vec<u8>> = (0..batch.max(1))
            .map(|i| {
                SubmitBuilder::new("1069012345", &format!("86138{:08}", i * 7919))
                    .short_message(b"Your verification code is 123456. It expires in 5 minutes.")
                    .build(0)
                    .to_vec()
            })
            .collect();
        let t = std::time::Instant::now();
        let mut seq = 0u32;
        let mut ts = 1_795_860_900_000_000u64;
        while seq < n {
            for s in sessions.iter_mut() {
                let (mut req, mut resp) = (Vec::new(), BytesMut::new());
                for f in &frames {
                    seq += 1;
                    let mut f = f.clone();
                    crate::smpp::set_sequence(&mut f, seq);
                    req.extend_from_slice(&f);
                    put_resp_with_id(&mut resp, cmd::SUBMIT_SM_RESP, 0, seq, b"0123456789abcdef");
                }
                ts += 50;
                s.record(Flow::EsmeToGateway, &req, ts);
                s.record(Flow::GatewayToEsme, &resp, ts + 20);
            }
        }
        drop(sessions);
        cap.shutdown();
        let write = t.elapsed();
        let dropped = cap.stats().records_dropped.load(std::sync::atomic::Ordering::Relaxed);
        let files = crate::capture::list_captures(&dir).unwrap();
        let bytes: u64 = files.iter().map(|f| std::fs::metadata(f).unwrap().len()).sum();
        println!("wrote {seq} submits + responses in {write:?} ({dropped} records dropped), {bytes} bytes, {files:?}");
        let t = std::time::Instant::now();
        let x = extract(&files[0], &ExtractOptions::default()).unwrap();
        let el = t.elapsed();
        let pdus = x.pdus.len() as f64 * 2.0;
        println!(
            "read {} packets, {} requests + responses in {el:?}: {:.0} PDUs/s, {:.0} MB/s; damage {:?}",
            x.packets,
            x.pdus.len(),
            pdus / el.as_secs_f64(),
            bytes as f64 / el.as_secs_f64() / 1e6,
            x.damage
        );
        if dropped == 0 {
            assert_eq!(x.damage.gaps, 0);
        }
    }
}
