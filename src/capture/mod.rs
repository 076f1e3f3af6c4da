//! Gateway-side traffic recording to pcapng (issue #5; DESIGN §5 "record and replay").
//!
//! The gateway sees SMPP PDUs, not packets. [`Capture`] turns them into a pcapng file that
//! Wireshark / tshark decode as SMPP and that `consentgate load --pcap` replays: every PDU
//! (or write batch) becomes one Enhanced Packet Block holding a synthetic
//! Ethernet / IPv4 / TCP packet, with correctly incrementing sequence and acknowledgement
//! numbers per leg and a SYN / SYN-ACK / ACK preamble so dissectors see a clean stream.
//!
//! ```text
//!  session n (one per ESME connection, n = 1, 2, …):
//!    ESME leg     10.1.a.b:p  ──►  10.0.0.1:2775   (ESME → gateway, the ESME is the client)
//!    SMSC leg     10.2.a.b:p  ──►  10.0.0.2:2775   (gateway → SMSC, the gateway is the client)
//!  where a.b = n & 0xFFFF and p = 32768 + (n >> 16) & 0x7FFF, so the two legs of one
//!  session share their last two octets and port: filter `ip.addr == 10.1.0.7 || ip.addr ==
//!  10.2.0.7` shows session 7 on both sides.
//! ```
//!
//! **Cost.** Off, the gateway holds `None` and pays nothing. On, [`SessionCapture::record`]
//! copies the bytes into a `Vec` and `try_send`s it on a bounded channel to one background
//! writer thread: no lock, no syscall, no blocking. When the channel (record count) or the
//! queued-byte budget is full the record is dropped and counted
//! ([`CaptureStats::records_dropped`]); the dropped bytes still advance that direction's TCP
//! sequence number, so the capture shows the hole ("previous segment not captured") instead of
//! silently splicing the stream.
//!
//! **Files.** `dir/consentgate-YYYYMMDDTHHMMSSZ-NNNNNN.pcapng` (UTC, `N` counts files of this
//! process). A file is closed and a new one started when the next block would take it past
//! `max_file_bytes`; then the oldest `consentgate-*.pcapng` files beyond `max_files` are
//! deleted. Each file starts with its own section header and interface block, and every leg
//! gets a fresh handshake in each file (its initial sequence number chosen so the numbers
//! continue), so any single file opens on its own. The writer flushes when idle for 200 ms.
//!
//! # Wiring it into a session (one call per PDU)
//!
//! ```no_run
//! use consentgate::capture::{now_us, Capture, CaptureConfig, Flow};
//! # let frame: &[u8] = &[];
//! let capture = Capture::start(CaptureConfig { dir: "/var/lib/consentgate/capture".into(), ..Default::default() })?;
//! // In the session, when the bind arrives (system_id known); None = not recorded:
//! let mut rec = capture.session("acme");
//! // For every PDU read or written, with the bytes as they are on that leg's wire
//! // (after the sequence-number rewrite for the PDUs the gateway writes):
//! if let Some(r) = rec.as_mut() {
//!     r.record(Flow::EsmeToGateway, frame, now_us());
//! }
//! // Flows: EsmeToGateway, GatewayToEsme, GatewayToSmsc, SmscToGateway. Record the bind
//! // itself too (it is the first PDU of both legs). Several back-to-back PDUs may be passed
//! // in one call (one packet per call, split at 65 000 bytes). Dropping the SessionCapture
//! // (end of session) writes FIN / FIN / ACK on the legs that carried data.
//! # drop(rec);
//! capture.shutdown(); // at gateway exit: drains the queue, flushes the file
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! [`Capture::stats`] gives the counters for metrics (records written / dropped, bytes, files,
//! write errors). A write error (disk full) is counted, the file is abandoned, and a new file
//! is tried at most once a second; records meanwhile are dropped and counted.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Default `capture.max_file_bytes`: 100 MB.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 100_000_000;
/// Default `capture.max_files`.
pub const DEFAULT_MAX_FILES: usize = 10;
/// Records the channel holds before dropping.
pub const DEFAULT_QUEUE_RECORDS: usize = 16 * 1024;
/// Bytes of PDU data queued before dropping.
pub const DEFAULT_QUEUE_BYTES: usize = 64 << 20;
/// TCP payload per synthetic packet (IPv4 total length must stay ≤ 65 535).
pub const MAX_SEGMENT: usize = 65_000;
/// The SMPP port of the synthetic servers.
pub const SMPP_PORT: u16 = 2775;
/// Idle time after which the writer flushes its buffer to the file.
const FLUSH_IDLE: Duration = Duration::from_millis(200);
/// Wait between attempts to open a new file after a write error.
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(1);
/// File name prefix and suffix (rotation deletes only files named like this).
const PREFIX: &str = "consentgate-";
const SUFFIX: &str = ".pcapng";

/// Recording settings (`[capture]` in the config).
#[derive(Debug, Clone)]
pub struct CaptureConfig {
    /// Directory for the files (created if missing).
    pub dir: PathBuf,
    /// Rotate before a file grows past this (default 100 MB; at least 64 KiB is used).
    pub max_file_bytes: u64,
    /// Keep at most this many files (default 10; at least 1).
    pub max_files: usize,
    /// Record only these system_ids; empty = every session.
    pub accounts: Vec<String>,
    /// Channel capacity in records.
    pub queue_records: usize,
    /// Queued PDU bytes allowed before records are dropped.
    pub queue_bytes: usize,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            dir: PathBuf::from("capture"),
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            max_files: DEFAULT_MAX_FILES,
            accounts: Vec::new(),
            queue_records: DEFAULT_QUEUE_RECORDS,
            queue_bytes: DEFAULT_QUEUE_BYTES,
        }
    }
}

/// Which leg and which way a PDU travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flow {
    EsmeToGateway,
    GatewayToEsme,
    GatewayToSmsc,
    SmscToGateway,
}

impl Flow {
    /// 0 = ESME leg, 1 = SMSC leg.
    fn leg(self) -> usize {
        match self {
            Flow::EsmeToGateway | Flow::GatewayToEsme => 0,
            Flow::GatewayToSmsc | Flow::SmscToGateway => 1,
        }
    }
    /// Sent by the TCP client of its leg (the ESME, or the gateway towards the SMSC).
    fn is_client_to_server(self) -> bool {
        matches!(self, Flow::EsmeToGateway | Flow::GatewayToSmsc)
    }
    fn index(self) -> usize {
        self.leg() * 2 + !self.is_client_to_server() as usize
    }
}

/// Counters (read them for metrics).
#[derive(Debug, Default)]
pub struct CaptureStats {
    /// Records (PDUs or batches) written to a file.
    pub records_written: AtomicU64,
    /// Records dropped: queue full, writer gone, or no writable file.
    pub records_dropped: AtomicU64,
    /// Bytes written to files (pcapng overhead included).
    pub bytes_written: AtomicU64,
    /// Files opened.
    pub files_opened: AtomicU64,
    /// I/O errors (open, write, delete).
    pub write_errors: AtomicU64,
}

struct Inner {
    accounts: Vec<String>,
    queue_bytes: usize,
    queued: AtomicUsize,
    next_session: AtomicU32,
    stats: CaptureStats,
}

enum Rec {
    Data { session: u32, flow: Flow, ts_us: u64, gap: u32, bytes: Vec<u8> },
    Close { session: u32, ts_us: u64 },
    Stop,
}

/// The recorder: owns the writer thread. Share it (`Arc`) between sessions.
pub struct Capture {
    inner: Arc<Inner>,
    tx: SyncSender<Rec>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture").field("stats", &self.inner.stats).finish_non_exhaustive()
    }
}

impl Capture {
    /// Creates the directory and starts the writer thread (the first file is opened with the
    /// first record).
    pub fn start(cfg: CaptureConfig) -> io::Result<Capture> {
        fs::create_dir_all(&cfg.dir).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", cfg.dir.display())))?;
        let inner = Arc::new(Inner {
            accounts: cfg.accounts.clone(),
            queue_bytes: cfg.queue_bytes.max(1),
            queued: AtomicUsize::new(0),
            next_session: AtomicU32::new(1),
            stats: CaptureStats::default(),
        });
        let (tx, rx) = mpsc::sync_channel(cfg.queue_records.max(1));
        let w = Writer::new(cfg, inner.clone());
        let thread = std::thread::Builder::new().name("capture-writer".into()).spawn(move || w.run(rx))?;
        Ok(Capture { inner, tx, thread: Mutex::new(Some(thread)) })
    }

    /// A recorder for one gateway session of `system_id`, or None when the account is not
    /// selected by `accounts`.
    pub fn session(&self, system_id: &str) -> Option<SessionCapture> {
        if !self.inner.accounts.is_empty() && !self.inner.accounts.iter().any(|a| a == system_id) {
            return None;
        }
        let id = self.inner.next_session.fetch_add(1, Ordering::Relaxed);
        Some(SessionCapture { id, tx: self.tx.clone(), inner: self.inner.clone(), gap: [0; 4], used: [false; 2] })
    }

    pub fn stats(&self) -> &CaptureStats {
        &self.inner.stats
    }

    /// Writes what is queued, closes the file and stops the thread. Records sent afterwards
    /// (by sessions still alive) are dropped and counted.
    pub fn shutdown(&self) {
        let _ = self.tx.send(Rec::Stop);
        let t = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = t {
            let _ = t.join();
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// One session's handle; owned by the session task (`&mut self`: no synchronisation).
pub struct SessionCapture {
    id: u32,
    tx: SyncSender<Rec>,
    inner: Arc<Inner>,
    /// Bytes dropped per flow since the last record that got through.
    gap: [u32; 4],
    /// Legs that carried data (only those get a FIN).
    used: [bool; 2],
}

impl SessionCapture {
    /// The session number used in the synthetic addresses.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Queues one PDU (or several back to back) seen on `flow` at `ts_us` (µs since the Unix
    /// epoch, see [`now_us`]). Never blocks; drops and counts when the queue is full.
    #[inline]
    pub fn record(&mut self, flow: Flow, bytes: &[u8], ts_us: u64) {
        if bytes.is_empty() {
            return;
        }
        let i = flow.index();
        let inner = &*self.inner;
        if inner.queued.load(Ordering::Relaxed) + bytes.len() > inner.queue_bytes {
            self.dropped(i, bytes.len());
            return;
        }
        let rec = Rec::Data { session: self.id, flow, ts_us, gap: self.gap[i], bytes: bytes.to_vec() };
        inner.queued.fetch_add(bytes.len(), Ordering::Relaxed);
        match self.tx.try_send(rec) {
            Ok(()) => {
                self.gap[i] = 0;
                self.used[flow.leg()] = true;
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                inner.queued.fetch_sub(bytes.len(), Ordering::Relaxed);
                self.dropped(i, bytes.len());
            }
        }
    }

    #[cold]
    fn dropped(&mut self, i: usize, n: usize) {
        self.gap[i] = self.gap[i].wrapping_add(n as u32);
        self.inner.stats.records_dropped.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for SessionCapture {
    fn drop(&mut self) {
        if self.used.iter().any(|&u| u) {
            let _ = self.tx.try_send(Rec::Close { session: self.id, ts_us: now_us() });
        }
    }
}

/// Microseconds since the Unix epoch (the `ts_us` of [`SessionCapture::record`]).
#[inline]
pub fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

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

fn mac(ip: [u8; 4]) -> [u8; 6] {
    [0x02, 0x00, ip[0], ip[1], ip[2], ip[3]]
}

const F_FIN: u8 = 0x01;
const F_SYN: u8 = 0x02;
const F_PSH: u8 = 0x08;
const F_ACK: u8 = 0x10;

/// Ones' complement sum, folded later.
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

fn fold(mut acc: u32) -> u16 {
    while acc > 0xFFFF {
        acc = (acc & 0xFFFF) + (acc >> 16);
    }
    !(acc as u16)
}

/// Appends Ethernet + IPv4 + TCP + payload to `out`.
#[allow(clippy::too_many_arguments)]
fn build_packet(
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
    out.extend_from_slice(&(if flags & F_ACK != 0 { ack } else { 0 }).to_be_bytes());
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
// pcapng blocks (pcapng spec, draft-ietf-opsawg-pcapng; little-endian sections)

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
fn file_header() -> Vec<u8> {
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
    body.extend_from_slice(&1u16.to_le_bytes()); // LINKTYPE_ETHERNET
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

/// Appends an Enhanced Packet Block around `packet`.
fn push_epb(out: &mut Vec<u8>, ts_us: u64, packet: &[u8]) {
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

struct Writer {
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
    fn new(cfg: CaptureConfig, inner: Arc<Inner>) -> Writer {
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

    fn run(mut self, rx: Receiver<Rec>) {
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
        let server = (sip, SMPP_PORT);
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
            self.pkt(ts_us, client, server, c.wrapping_sub(1), 0, F_SYN, &[]);
            self.pkt(ts_us, server, client, s.wrapping_sub(1), c, F_SYN | F_ACK, &[]);
            self.pkt(ts_us, client, server, c, s, F_ACK, &[]);
            leg.gen = self.gen;
        }
        leg.seq[d] = leg.seq[d].wrapping_add(gap);
        let (src, dst) = if from_client { (client, server) } else { (server, client) };
        for chunk in bytes.chunks(MAX_SEGMENT) {
            let seq = leg.seq[d];
            let ack = leg.seq[1 - d];
            self.pkt(ts_us, src, dst, seq, ack, F_PSH | F_ACK, chunk);
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
            let (client, server) = ((cip, cport), (sip, SMPP_PORT));
            let (c, s) = (leg.seq[0], leg.seq[1]);
            self.block.clear();
            self.pkt(ts, client, server, c, s, F_FIN | F_ACK, &[]);
            self.pkt(ts, server, client, s, c.wrapping_add(1), F_FIN | F_ACK, &[]);
            self.pkt(ts, client, server, c.wrapping_add(1), s.wrapping_add(1), F_ACK, &[]);
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
        let path = self.cfg.dir.join(file_name(SystemTime::now(), self.files_made));
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
fn file_name(t: SystemTime, n: u64) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = crate::config::civil_from_days(days);
    format!("{PREFIX}{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z-{n:06}{SUFFIX}", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::pcap::{extract_from, ExtractOptions};
    use crate::smpp::pdu::{put_resp_with_id, SubmitBuilder};
    use crate::smpp::{cmd, sequence};
    use bytes::BytesMut;

    fn submit(seq: u32, i: u32) -> Vec<u8> {
        SubmitBuilder::new("1069", &format!("86138{i:08}")).short_message(b"hi there").build(seq).to_vec()
    }

    fn resp(seq: u32, status: u32) -> Vec<u8> {
        let mut b = BytesMut::new();
        put_resp_with_id(&mut b, cmd::SUBMIT_SM_RESP, status, seq, b"abc");
        b.to_vec()
    }

    fn only_file(dir: &Path) -> PathBuf {
        let mut f = list_captures(dir).unwrap();
        f.sort();
        assert_eq!(f.len(), 1, "{f:?}");
        f.pop().unwrap()
    }

    #[test]
    fn file_names_sort_by_time() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_860_900); // 2026-11-28T10:15:00Z
        assert_eq!(file_name(t, 3), "consentgate-20261128T101500Z-000003.pcapng");
        assert_eq!(crate::config::civil_from_days(0), (1970, 1, 1));
        assert_eq!(crate::config::civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn reader_round_trips_every_pdu_with_timestamps_and_both_directions() {
        let dir = tempfile::tempdir().unwrap();
        let cap = Capture::start(CaptureConfig { dir: dir.path().into(), ..Default::default() }).unwrap();
        let mut s = cap.session("acme").unwrap();
        let mut want = Vec::new(); // (flow, ts, frame)
        let t0 = 1_795_860_900_000_000u64;
        for i in 0..50u32 {
            let f = submit(i + 1, i);
            s.record(Flow::EsmeToGateway, &f, t0 + i as u64 * 10);
            want.push((Flow::EsmeToGateway, t0 + i as u64 * 10, f.clone()));
            let mut up = f.clone();
            crate::smpp::set_sequence(&mut up, 1000 + i);
            s.record(Flow::GatewayToSmsc, &up, t0 + i as u64 * 10 + 1);
            want.push((Flow::GatewayToSmsc, t0 + i as u64 * 10 + 1, up));
            let r = resp(1000 + i, if i % 7 == 0 { 0x0B } else { 0 });
            s.record(Flow::SmscToGateway, &r, t0 + i as u64 * 10 + 5);
            want.push((Flow::SmscToGateway, t0 + i as u64 * 10 + 5, r));
            let r = resp(i + 1, if i % 7 == 0 { 0x0B } else { 0 });
            s.record(Flow::GatewayToEsme, &r, t0 + i as u64 * 10 + 6);
            want.push((Flow::GatewayToEsme, t0 + i as u64 * 10 + 6, r));
        }
        // One big batch of PDUs in one call (split into several packets).
        let mut big = Vec::new();
        for i in 0..2000u32 {
            big.extend(submit(10_000 + i, i));
        }
        s.record(Flow::EsmeToGateway, &big, t0 + 1000);
        drop(s);
        cap.shutdown();
        assert_eq!(cap.stats().records_dropped.load(Ordering::Relaxed), 0);

        let f = only_file(dir.path());
        let x = extract_from(File::open(&f).unwrap(), "f", &ExtractOptions { keep_all: true, ..Default::default() })
            .unwrap();
        assert_eq!(x.damage.gaps, 0, "{:?}", x.damage);
        assert_eq!(x.damage.resyncs, 0);
        assert_eq!(x.damage.retransmissions, 0);
        assert_eq!(x.tcp_connections, 2);
        let flow_of = |p: &crate::load::pcap::CapturedPdu| match (p.src.to_string().as_str(), p.dst.port()) {
            ("10.0.0.1:2775", _) => Flow::GatewayToEsme,
            ("10.0.0.2:2775", _) => Flow::SmscToGateway,
            (s, 2775) if s.starts_with("10.1.") => Flow::EsmeToGateway,
            _ => Flow::GatewayToSmsc,
        };
        // Per flow, the PDUs in order with their timestamps.
        for fl in [Flow::EsmeToGateway, Flow::GatewayToEsme, Flow::GatewayToSmsc, Flow::SmscToGateway] {
            let got: Vec<(u64, &[u8])> =
                x.all.iter().filter(|p| flow_of(p) == fl).map(|p| (p.ts_ns, &p.frame[..])).collect();
            let mut exp: Vec<(u64, &[u8])> =
                want.iter().filter(|w| w.0 == fl).map(|w| (w.1 * 1000, &w.2[..])).collect();
            if fl == Flow::EsmeToGateway {
                let mut at = 0;
                while at < big.len() {
                    let l = u32::from_be_bytes(big[at..at + 4].try_into().unwrap()) as usize;
                    exp.push(((t0 + 1000) * 1000, &big[at..at + l]));
                    at += l;
                }
            }
            assert_eq!(got.len(), exp.len(), "{fl:?}");
            assert!(got == exp, "{fl:?} differs");
        }
        // Replay view: the ESME leg's and the SMSC leg's submits, statuses matched.
        assert_eq!(x.streams.len(), 2);
        assert_eq!(x.pdus.len(), 50 + 2000 + 50);
        let esme: Vec<_> = x.pdus.iter().filter(|p| x.streams[p.stream as usize].esme.starts_with("10.1.")).collect();
        assert_eq!(esme.len(), 2050);
        assert_eq!(esme[0].recorded_status, Some(0x0B));
        assert_eq!(esme[1].recorded_status, Some(0));
        assert_eq!(esme[60].recorded_status, None);
        assert_eq!(sequence(x.frame(esme[2])), 3);
    }

    #[test]
    fn rotation_caps_size_and_count_and_each_file_stands_alone() {
        let dir = tempfile::tempdir().unwrap();
        let cfg =
            CaptureConfig { dir: dir.path().into(), max_file_bytes: 64 * 1024, max_files: 3, ..Default::default() };
        let cap = Capture::start(cfg).unwrap();
        let mut s = cap.session("acme").unwrap();
        for i in 0..3000u32 {
            s.record(Flow::EsmeToGateway, &submit(i + 1, i), 1_000_000 + i as u64);
            s.record(Flow::GatewayToEsme, &resp(i + 1, 0), 1_000_000 + i as u64);
        }
        drop(s);
        cap.shutdown();
        let st = cap.stats();
        assert!(st.files_opened.load(Ordering::Relaxed) > 3);
        let files = list_captures(dir.path()).unwrap();
        assert_eq!(files.len(), 3);
        let mut total = 0;
        for f in &files {
            assert!(fs::metadata(f).unwrap().len() <= 64 * 1024, "{f:?}");
            let x = extract_from(File::open(f).unwrap(), "f", &ExtractOptions::default()).unwrap();
            // A fresh handshake in every file: no hunting, no gap.
            assert_eq!(x.damage.gaps, 0);
            assert_eq!(x.damage.bytes_skipped, 0);
            assert!(!x.pdus.is_empty());
            assert!(x.pdus.iter().all(|p| p.recorded_status == Some(0)));
            total += x.pdus.len();
        }
        assert!(total < 3000);
    }

    #[test]
    fn full_queue_drops_and_counts_and_the_hole_shows_as_a_gap() {
        let dir = tempfile::tempdir().unwrap();
        // A queue of 40 bytes: a 20-byte response fits, a ~60-byte submit never does.
        let cfg = CaptureConfig { dir: dir.path().into(), queue_bytes: 40, ..Default::default() };
        let cap = Capture::start(cfg).unwrap();
        let mut s = cap.session("acme").unwrap();
        let small = resp(1, 0); // 20 bytes
        let big = submit(2, 2); // > 64 bytes
        s.record(Flow::GatewayToEsme, &small, 1);
        s.record(Flow::GatewayToEsme, &big, 2);
        std::thread::sleep(Duration::from_millis(50));
        s.record(Flow::GatewayToEsme, &resp(3, 0), 3);
        drop(s);
        cap.shutdown();
        assert_eq!(cap.stats().records_dropped.load(Ordering::Relaxed), 1);
        assert_eq!(cap.stats().records_written.load(Ordering::Relaxed), 2);
        let x = extract_from(
            File::open(only_file(dir.path())).unwrap(),
            "f",
            &ExtractOptions { keep_all: true, ..Default::default() },
        )
        .unwrap();
        assert_eq!(x.damage.gaps, 1);
        assert_eq!(x.all.len(), 2);
        // Accounts filter.
        let cap = Capture::start(CaptureConfig {
            dir: dir.path().into(),
            accounts: vec!["bank".into()],
            ..Default::default()
        })
        .unwrap();
        assert!(cap.session("acme").is_none());
        assert!(cap.session("bank").is_some());
    }

    #[test]
    fn checksums_are_valid() {
        let mut p = Vec::new();
        build_packet(&mut p, ([10, 1, 0, 1], 32768), ([10, 0, 0, 1], 2775), 1, 2, F_ACK | F_PSH, 7, b"hello");
        // Summing a header including its checksum gives 0xFFFF (folded: 0).
        assert_eq!(fold(sum16(0, &p[14..34])), 0);
        let tcp = &p[34..];
        let mut acc = sum16(0, &[10, 1, 0, 1]);
        acc = sum16(acc, &[10, 0, 0, 1]);
        acc += 6 + tcp.len() as u32;
        assert_eq!(fold(sum16(acc, tcp)), 0);
    }
}
