//! Connections: which TCP streams are SMPP, which side is the ESME, which requests to replay
//! and which recorded response answered each.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::link::{ip_payload, linktype, parse_ip, Segment, L3};
use super::reassembly::{Chunk, Reasm};
use super::smpp_stream::{Mode, SmppDir};
use super::tcp_flag::{ACK, SYN};
use super::{CapturedPdu, ExtractOptions, Extracted, RecordedPdu, SkippedStream, StreamInfo, MAX_LISTED};
use crate::smpp::{cmd, Header, RESP_BIT};

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

/// The same three for CMPP ([`ExtractOptions::cmpp`]): (from the SP, from the ISMG,
/// replayable).
mod cmpp_roles {
    use crate::cmpp::cmd;

    pub(super) fn esme_evidence(id: u32) -> bool {
        matches!(id, cmd::CONNECT | cmd::SUBMIT | cmd::QUERY | cmd::CANCEL | cmd::DELIVER_RESP)
    }

    pub(super) fn smsc_evidence(id: u32) -> bool {
        matches!(id, cmd::CONNECT_RESP | cmd::SUBMIT_RESP | cmd::DELIVER)
    }

    pub(super) fn is_replayable(id: u32) -> bool {
        id == cmd::SUBMIT
    }
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
    fn new(cmpp: bool) -> Dir {
        Dir {
            reasm: Reasm::default(),
            smpp: SmppDir::new(cmpp),
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
pub(super) struct Analyzer {
    opts: ExtractOptions,
    pub(super) x: Extracted,
    conns: Vec<Conn>,
    by_key: HashMap<(SocketAddr, SocketAddr), u32>,
    /// Replay candidates from either direction, finalised at the end.
    cands: Vec<RecordedPdu>,
    pub(super) last_ts: u64,
    /// Connections ignored because of the port filter (by key, so each counts once).
    other_port: HashMap<(SocketAddr, SocketAddr), ()>,
    /// Frames completed by the current segment: bytes, and (timestamp, start, end).
    scratch: Vec<u8>,
    frames: Vec<(u64, usize, usize)>,
}

impl Analyzer {
    pub(super) fn new(opts: ExtractOptions) -> Analyzer {
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

    pub(super) fn packets_seen(&mut self) {
        self.x.packets += 1;
    }

    pub(super) fn packet(&mut self, ts: u64, link: i32, data: &[u8]) {
        self.x.packets += 1;
        self.packet_counted(ts, link, data);
    }

    pub(super) fn packet_counted(&mut self, ts: u64, link: i32, data: &[u8]) {
        self.last_ts = ts;
        let Some(ip) = ip_payload(link, data) else {
            if matches!(
                link,
                linktype::ETHERNET
                    | linktype::LINUX_SLL
                    | linktype::LINUX_SLL2
                    | linktype::NULL
                    | linktype::LOOP
                    | linktype::RAW
                    | linktype::RAW_BSD
                    | linktype::RAW_OPENBSD
                    | linktype::IPV4
                    | linktype::IPV6
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
                    dirs: [Dir::new(self.opts.cmpp), Dir::new(self.opts.cmpp)],
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
        if self.opts.cmpp {
            return self.on_cmpp_pdu(idx, d, ts, f);
        }
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

    /// [`Self::on_pdu`] for a CMPP stream: a SUBMIT's recorded status is its SUBMIT_RESP's
    /// Result (read in the width the response's length says: 21 bytes 2.0, 24 bytes 3.0).
    fn on_cmpp_pdu(&mut self, idx: usize, d: usize, ts: u64, f: &[u8]) {
        use crate::cmpp::{self as c, peek, Version};
        let (id, seq) = (c::command_id(f), c::sequence(f));
        let conn = &mut self.conns[idx];
        if self.opts.keep_all {
            let (src, dst) = (conn.ends[d], conn.ends[1 - d]);
            self.x.all.push(CapturedPdu { conn: idx as u32, src, dst, ts_ns: ts, frame: f.to_vec() });
        }
        if cmpp_roles::esme_evidence(id) {
            conn.dirs[d].esme_ev += 1;
        } else if cmpp_roles::smsc_evidence(id) {
            conn.dirs[d].smsc_ev += 1;
        }
        if id == c::cmd::CONNECT && conn.system_id.is_none() {
            if let Ok(k) = peek::connect(f) {
                conn.system_id = Some(String::from_utf8_lossy(k.source_addr).into_owned());
            }
        }
        if cmpp_roles::is_replayable(id) {
            let i = self.cands.len() as u32;
            let start = self.x.blob.len() as u32;
            self.x.blob.extend_from_slice(f);
            let len = f.len() as u32;
            self.cands.push(RecordedPdu {
                stream: idx as u32,
                ts_ns: ts,
                command_id: id,
                sequence: seq,
                recorded_status: None,
                start,
                len,
            });
            conn.dirs[d].requests.push(i);
            conn.dirs[d].pending.insert(seq, i);
        } else if id == c::cmd::SUBMIT_RESP {
            let other = &mut conn.dirs[1 - d];
            let version =
                if f.len() >= c::HEADER_LEN + Version::V30.msg_resp_body_len() { Version::V30 } else { Version::V20 };
            match (other.pending.remove(&seq), peek::submit_resp(f, version)) {
                (Some(i), Ok(r)) => self.cands[i as usize].recorded_status = Some(r.result),
                _ => self.x.damage.unmatched_responses += 1,
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

    pub(super) fn finish(mut self) -> Extracted {
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
                    (None, _) if c.ends[0].port() == if self.opts.cmpp { 7890 } else { 2775 } => 1,
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
                let reason = match (self.opts.cmpp, smpp) {
                    (false, true) => "SMPP without submit_sm/data_sm/submit_multi",
                    (false, false) => "not SMPP",
                    (true, true) => "CMPP without SUBMIT",
                    (true, false) => "not CMPP",
                };
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
        self.x.cmpp = self.opts.cmpp;
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
