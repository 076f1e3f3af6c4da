//! Gateway-side traffic recording to pcapng ( architecture §5 "record and replay").
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

mod writer;

#[cfg(test)]
mod tests;

use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

pub use writer::list_captures;
use writer::Writer;

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
/// The CMPP port of the synthetic servers of a CMPP session (Wireshark's CMPP dissector
/// claims 7890, the SP long-connection port).
pub const CMPP_PORT: u16 = 7890;
/// Set in a session number whose legs are CMPP (the synthetic addresses use the bits below).
pub(crate) const CMPP_SESSION: u32 = 1 << 31;

/// The synthetic servers' port for session number `session`.
pub(crate) fn server_port(session: u32) -> u16 {
    if session & CMPP_SESSION != 0 {
        CMPP_PORT
    } else {
        SMPP_PORT
    }
}

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
    pub(crate) fn leg(self) -> usize {
        match self {
            Flow::EsmeToGateway | Flow::GatewayToEsme => 0,
            Flow::GatewayToSmsc | Flow::SmscToGateway => 1,
        }
    }
    /// Sent by the TCP client of its leg (the ESME, or the gateway towards the SMSC).
    pub(crate) fn is_client_to_server(self) -> bool {
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

pub(crate) struct Inner {
    accounts: Vec<String>,
    queue_bytes: usize,
    pub(crate) queued: AtomicUsize,
    next_session: AtomicU32,
    pub(crate) stats: CaptureStats,
}

pub(crate) enum Rec {
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

    /// [`Capture::session`] for a CMPP session: its legs' servers listen on [`CMPP_PORT`], so
    /// that Wireshark and tshark decode them as CMPP.
    pub fn session_cmpp(&self, system_id: &str) -> Option<SessionCapture> {
        let mut s = self.session(system_id)?;
        s.id |= CMPP_SESSION;
        Some(s)
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

/// Microseconds since the Unix epoch (the `ts_us` of [`SessionCapture::record`]);
/// [`crate::time::unix_us`], 0 before 1970.
#[inline]
pub fn now_us() -> u64 {
    crate::time::unix_us().max(0) as u64
}
