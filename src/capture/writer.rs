//! The capture writer thread: turns records into synthetic packets, writes pcapng files,
//! rotates them by size and prunes the oldest.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::{server_port, CaptureConfig, Flow, Inner, Rec, MAX_SEGMENT};
use crate::pcap::tcp_flag::{ACK, FIN, PSH, SYN};
use crate::pcap::write::{build_packet, file_header, push_epb};
use crate::time::Civil;

/// Idle time after which the writer flushes its buffer to the file.
const FLUSH_IDLE: Duration = Duration::from_millis(200);
/// Wait between attempts to open a new file after a write error.
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(1);
/// File name prefix and suffix (rotation deletes only files named like this).
const PREFIX: &str = "consentgate-";
const SUFFIX: &str = ".pcapng";

// ---------------------------------------------------------------------------------------------
// Synthetic addressing

/// (client ip, client port, server ip) of a session's leg.
fn endpoints(session: u32, leg: usize) -> ([u8; 4], u16, [u8; 4]) {
    let a = (session >> 8) as u8;
    let b = session as u8;
    let port = 32768 + ((session >> 16) & 0x7FFF) as u16;
    if leg == 0 {
        ([10, 1, a, b], port, [10, 0, 0, 1])
    } else {
        ([10, 2, a, b], port, [10, 0, 0, 2])
    }
}

// ---------------------------------------------------------------------------------------------
// Writer thread

/// One leg's TCP state.
#[derive(Clone, Copy, Default)]
struct Leg {
    /// Next sequence number from the client and from the server.
    seq: [u32; 2],
    /// Generation of the file in which this leg's handshake was written (0 = never).
    gen: u64,
    /// Last timestamp written (FIN timestamps never go backwards).
    last_ts: u64,
}

pub(super) struct Writer {
    cfg: CaptureConfig,
    inner: Arc<Inner>,
    file: Option<(PathBuf, BufWriter<File>)>,
    file_bytes: u64,
    /// Incremented per opened file; legs compare it to know when to re-handshake.
    gen: u64,
    files_made: u64,
    legs: HashMap<(u32, usize), Leg>,
    ip_id: u16,
    block: Vec<u8>,
    packet: Vec<u8>,
    failed_at: Option<Instant>,
}

impl Writer {
    pub(super) fn new(cfg: CaptureConfig, inner: Arc<Inner>) -> Writer {
        Writer {
            cfg,
            inner,
            file: None,
            file_bytes: 0,
            gen: 0,
            files_made: 0,
            legs: HashMap::new(),
            ip_id: 0,
            block: Vec::with_capacity(MAX_SEGMENT + 256),
            packet: Vec::with_capacity(MAX_SEGMENT + 128),
            failed_at: None,
        }
    }

    pub(super) fn run(mut self, rx: Receiver<Rec>) {
        loop {
            match rx.recv_timeout(FLUSH_IDLE) {
                Ok(Rec::Data { session, flow, ts_us, gap, bytes }) => {
                    self.inner.queued.fetch_sub(bytes.len(), Ordering::Relaxed);
                    self.data(session, flow, ts_us, gap, &bytes);
                }
                Ok(Rec::Close { session, ts_us }) => self.close(session, ts_us),
                Ok(Rec::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => self.flush(),
            }
        }
        // Drain what was queued before the stop.
        while let Ok(r) = rx.try_recv() {
            match r {
                Rec::Data { session, flow, ts_us, gap, bytes } => {
                    self.inner.queued.fetch_sub(bytes.len(), Ordering::Relaxed);
                    self.data(session, flow, ts_us, gap, &bytes);
                }
                Rec::Close { session, ts_us } => self.close(session, ts_us),
                Rec::Stop => {}
            }
        }
        self.flush();
        self.file = None;
    }

    fn flush(&mut self) {
        if let Some((path, f)) = self.file.as_mut() {
            if let Err(e) = f.flush() {
                self.inner.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(file = %path.display(), error = %e, "capture: flush failed; file abandoned");
                self.file = None;
                self.failed_at = Some(Instant::now());
            }
        }
    }

    fn data(&mut self, session: u32, flow: Flow, ts_us: u64, gap: u32, bytes: &[u8]) {
        let li = flow.leg();
        let mut leg = *self.legs.entry((session, li)).or_insert_with(|| {
            // Deterministic initial sequence numbers, different per leg and side.
            let h = session.wrapping_mul(0x9E37_79B9) ^ (li as u32).wrapping_mul(0x85EB_CA6B);
            Leg { seq: [h | 1, h.rotate_left(16) | 1], gen: 0, last_ts: 0 }
        });
        let (cip, cport, sip) = endpoints(session, li);
        let client = (cip, cport);
        let server = (sip, server_port(session));
        let from_client = flow.is_client_to_server();
        let d = !from_client as usize;
        // Rough size: the packets of this record plus a possible handshake.
        let estimate = bytes.len() as u64 + (bytes.len() / MAX_SEGMENT + 4) as u64 * 100;
        if !self.ensure_file(estimate) {
            self.inner.stats.records_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.block.clear();
        if leg.gen != self.gen {
            // Handshake so that the next numbers are exactly the current ones.
            let (c, s) = (leg.seq[0], leg.seq[1]);
            self.pkt(ts_us, client, server, c.wrapping_sub(1), 0, SYN, &[]);
            self.pkt(ts_us, server, client, s.wrapping_sub(1), c, SYN | ACK, &[]);
            self.pkt(ts_us, client, server, c, s, ACK, &[]);
            leg.gen = self.gen;
        }
        leg.seq[d] = leg.seq[d].wrapping_add(gap);
        let (src, dst) = if from_client { (client, server) } else { (server, client) };
        for chunk in bytes.chunks(MAX_SEGMENT) {
            let seq = leg.seq[d];
            let ack = leg.seq[1 - d];
            self.pkt(ts_us, src, dst, seq, ack, PSH | ACK, chunk);
            leg.seq[d] = seq.wrapping_add(chunk.len() as u32);
        }
        leg.last_ts = leg.last_ts.max(ts_us);
        self.legs.insert((session, li), leg);
        if self.write_block() {
            self.inner.stats.records_written.fetch_add(1, Ordering::Relaxed);
        } else {
            self.inner.stats.records_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn close(&mut self, session: u32, ts_us: u64) {
        for li in 0..2 {
            let Some(leg) = self.legs.remove(&(session, li)) else { continue };
            if leg.gen != self.gen || self.file.is_none() {
                continue; // its handshake is in an older file: leave that stream open-ended
            }
            let ts = ts_us.max(leg.last_ts);
            let (cip, cport, sip) = endpoints(session, li);
            let (client, server) = ((cip, cport), (sip, server_port(session)));
            let (c, s) = (leg.seq[0], leg.seq[1]);
            self.block.clear();
            self.pkt(ts, client, server, c, s, FIN | ACK, &[]);
            self.pkt(ts, server, client, s, c.wrapping_add(1), FIN | ACK, &[]);
            self.pkt(ts, client, server, c.wrapping_add(1), s.wrapping_add(1), ACK, &[]);
            self.write_block();
        }
    }

    /// Appends one packet as an EPB to the pending block buffer.
    #[allow(clippy::too_many_arguments)]
    fn pkt(&mut self, ts: u64, src: ([u8; 4], u16), dst: ([u8; 4], u16), seq: u32, ack: u32, flags: u8, data: &[u8]) {
        self.packet.clear();
        self.ip_id = self.ip_id.wrapping_add(1);
        build_packet(&mut self.packet, src, dst, seq, ack, flags, self.ip_id, data);
        push_epb(&mut self.block, ts, &self.packet);
    }

    fn write_block(&mut self) -> bool {
        let Some((path, f)) = self.file.as_mut() else { return false };
        match f.write_all(&self.block) {
            Ok(()) => {
                self.file_bytes += self.block.len() as u64;
                self.inner.stats.bytes_written.fetch_add(self.block.len() as u64, Ordering::Relaxed);
                true
            }
            Err(e) => {
                self.inner.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(file = %path.display(), error = %e, "capture: write failed; file abandoned");
                self.file = None;
                self.failed_at = Some(Instant::now());
                false
            }
        }
    }

    /// Makes sure a file with room for `need` more bytes is open (rotating if needed).
    fn ensure_file(&mut self, need: u64) -> bool {
        let max = self.cfg.max_file_bytes.max(64 * 1024);
        if self.file.is_some() && self.file_bytes > 1024 && self.file_bytes + need > max {
            self.flush();
            self.file = None;
        }
        if self.file.is_some() {
            return true;
        }
        if self.failed_at.is_some_and(|t| t.elapsed() < RETRY_AFTER_ERROR) {
            return false;
        }
        self.files_made += 1;
        let path = self.cfg.dir.join(file_name(crate::time::system_now(), self.files_made));
        let opened = File::options().write(true).create_new(true).open(&path).and_then(|f| {
            let mut w = BufWriter::with_capacity(256 * 1024, f);
            let h = file_header();
            w.write_all(&h)?;
            Ok((w, h.len() as u64))
        });
        match opened {
            Ok((w, n)) => {
                self.file = Some((path, w));
                self.file_bytes = n;
                self.gen += 1;
                self.failed_at = None;
                self.inner.stats.files_opened.fetch_add(1, Ordering::Relaxed);
                self.inner.stats.bytes_written.fetch_add(n, Ordering::Relaxed);
                self.prune();
                true
            }
            Err(e) => {
                self.inner.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(file = %path.display(), error = %e, "capture: cannot create file");
                self.failed_at = Some(Instant::now());
                false
            }
        }
    }

    /// Deletes the oldest capture files beyond `max_files` (the open one included in the count).
    fn prune(&mut self) {
        let mut files = match list_captures(&self.cfg.dir) {
            Ok(f) => f,
            Err(_) => return,
        };
        let keep = self.cfg.max_files.max(1);
        if files.len() <= keep {
            return;
        }
        files.sort();
        let excess = files.len() - keep;
        for p in files.into_iter().take(excess) {
            if fs::remove_file(&p).is_err() {
                self.inner.stats.write_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The capture files in `dir` (named by this module), unsorted.
pub fn list_captures(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let Some(n) = name.to_str() else { continue };
        if n.starts_with(PREFIX) && n.ends_with(SUFFIX) {
            out.push(e.path());
        }
    }
    Ok(out)
}

/// `consentgate-20261128T101500Z-000001.pcapng`: sorts by time, then by file number.
pub(super) fn file_name(t: SystemTime, n: u64) -> String {
    let c = Civil::from_unix_s(crate::time::unix_s_of(t));
    let (y, mo, d, h, mi, s) = (c.year, c.month, c.day, c.hour, c.minute, c.second);
    format!("{PREFIX}{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z-{n:06}{SUFFIX}")
}
