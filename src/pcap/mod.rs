//! SMPP traffic in capture files (architecture §5): the reader behind
//! `consentgate load --pcap FILE` and the packet/pcapng encoding the gateway's
//! [`crate::capture`] recorder writes with.
//!
//! | file | holds |
//! |---|---|
//! | `mod.rs` | [`extract`] / [`extract_from`] and what they return ([`Extracted`], [`Damage`], …) |
//! | `link.rs` | link layer → IPv4 / IPv6 → TCP segment |
//! | `reassembly.rs` | per-direction TCP reassembly by sequence number |
//! | `smpp_stream.rs` | SMPP framing over a reassembled direction: hunting, resync |
//! | `analyze.rs` | connections, which side is the ESME, request/response matching |
//! | [`mod@write`] | synthetic Ethernet / IPv4 / TCP packets and pcapng blocks |
//!
//! Reading:
//!
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
//! plausible command_length (16 ..= [`DEFAULT_MAX_PDU_BYTES`]) and a known command_id, followed by
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

mod analyze;
mod link;
mod reassembly;
mod smpp_stream;
pub mod write;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;

use pcap_parser::{Block, PcapBlockOwned, PcapError};

#[doc(no_inline)]
pub use crate::smpp::frame::DEFAULT_MAX_PDU_BYTES;
use analyze::Analyzer;

/// A direction that does not frame as SMPP within this many bytes is not SMPP.
pub const HUNT_LIMIT: usize = 64 * 1024;
/// Streams listed individually in the report; the rest are counted.
pub(crate) const MAX_LISTED: usize = 100;
/// pcap-parser buffer at the start (zero-filled by the crate, so small: a capture of
/// ordinary packets never needs more); grown ×4 up to [`MAX_BLOCK_BYTES`] for a large block.
const READ_BUFFER: usize = 64 * 1024;
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
    /// Read the streams as CMPP 2.0 / 3.0 instead of SMPP: the requests to replay are
    /// CMPP_SUBMITs, their recorded status the SUBMIT_RESP's Result, the system_id the
    /// CONNECT's Source_Addr (`load --cmpp --pcap`).
    pub cmpp: bool,
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
    /// Read as CMPP ([`ExtractOptions::cmpp`]).
    pub cmpp: bool,
    /// The file, as given (for messages).
    pub file: String,
    /// Packets (EPB/SPB/pcap records) read.
    pub packets: u64,
    /// TCP connections seen.
    pub tcp_connections: u64,
    /// Requests to replay, in capture order.
    pub pdus: Vec<RecordedPdu>,
    pub streams: Vec<StreamInfo>,
    /// Connections with nothing to replay (the first `MAX_LISTED`).
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
            let name = if self.cmpp {
                crate::cmpp::command_name(p.command_id)
            } else {
                crate::smpp::command_name(p.command_id)
            };
            *by_command.entry(name).or_insert(0u64) += 1;
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

/// TCP header flags (RFC 9293 §3.1), for the reader and for [`mod@write`].
pub mod tcp_flag {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}
