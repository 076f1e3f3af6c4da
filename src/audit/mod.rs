//! The decision audit log: one JSON line per policy decision, kept for months, so that an
//! operator can prove why a message was or was not delivered (a 12321 complaint, a DLT
//! dispute). `consentgate audit search` reads it back ([`search`]).
//!
//! ```text
//!  session task (hot path)                       writer thread ("consentgate-audit")
//!  ───────────────────────                       ───────────────────────────────────
//!  decide() ─► batch.push(AuditRecord)  (a Vec push, ~200 bytes copied, no allocation)
//!  end of event-loop turn: batch.flush() ──try──► queue (≤ audit.queue_records records)
//!      queue full / closed: counted dropped,            │ format JSON Lines, one write per batch
//!      ERROR logged (rate-limited), never waits         ▼
//!                                        dir/audit-YYYYMMDDTHHMMSSZ.jsonl   (active file)
//!                                        rotate by size / interval, fsync every 1 s and on
//!                                        rotation, delete files older than audit.retention
//! ```
//!
//! # Modes (`audit.mode`)
//!
//! * `rejects` (default when `audit.dir` is set): `rejected` and `would_reject` decisions;
//! * `all`: every decision, accepted ones included (for an accepted message the record is
//!   best emitted when the SMSC's submit_sm_resp arrives, so it carries the message_id);
//! * `off`, or no `audit.dir`: nothing is recorded and nothing runs.
//!
//! # Wiring it into a session
//!
//! ```no_run
//! use consentgate::audit::{now_us, Audit, AuditAddr, AuditConfig, AuditRecord, MessageId, SnapshotRef};
//! use consentgate::policy::{Reason, Verdict};
//! # let cfg = AuditConfig::default();
//! let audit = Audit::open(&cfg)?;            // at gateway start; Clone is cheap (Arc)
//! // per session:
//! let mut batch = audit.sink();
//! // at bind (system_id known), once:
//! let account = audit.account("acme", "acme-retail");
//! // per decided destination — skip building the record unless it is wanted:
//! let verdict = Verdict::Reject(Reason::NoConsent);
//! if batch.wants(verdict) {
//!     batch.push(AuditRecord {
//!         at_us: now_us(),
//!         account,
//!         session: 7,
//!         sequence: 42,
//!         source: AuditAddr::new(1, 1, b"1069012345"),
//!         destination: AuditAddr::new(1, 1, b"8613800138000"),
//!         msisdn: Some(8613800138000),
//!         class: Some(consentgate::policy::MessageClass::Marketing),
//!         verdict,
//!         status: Some(0x400),
//!         upstream_status: None,
//!         message_id: MessageId::NONE,
//!         snapshot: SnapshotRef { id: 0x5f0c_1d2e_3a4b_5c6d, generation: 3, built_at: 1_777_507_200 },
//!         protocol: Default::default(),
//!         dlt: Default::default(),
//!     });
//! }
//! // once per event-loop turn, and on close (dropping the batch flushes too):
//! batch.flush();
//! // at gateway exit: drain, fsync, join (bounded: CLOSE_TIMEOUT)
//! audit.close();
//! # Ok::<(), consentgate::audit::AuditError>(())
//! ```
//!
//! # File format (JSON Lines)
//!
//! One object per line, UTF-8, `\n`-terminated, fields always present in this order (`null`
//! when unknown):
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `time` | string | decision time, ISO-8601 UTC with µs: `2026-05-01T08:30:00.123456Z` |
//! | `account` | string | the ESME's system_id |
//! | `entity` | string | the brand its consent records name |
//! | `session` | number | session id (as in the session logs) |
//! | `seq` | number | the ESME's sequence_number of the request |
//! | `source`, `source_ton`, `source_npi` | string, number, number | source_addr as sent |
//! | `destination`, `destination_ton`, `destination_npi` | string, number, number | destination as sent |
//! | `msisdn` | string \| null | destination normalised to E.164 digits; null if not a subscriber number |
//! | `class` | string \| null | `marketing` \| `transactional`; null if decided before classification |
//! | `verdict` | string | `accepted` \| `rejected` \| `would_reject` |
//! | `reason` | string \| null | reject reason label (`no_consent`, `revoked`, `dnc`, …); null when accepted |
//! | `status` | string \| null | command_status answered to the ESME, `0x%08X` (a reject status, or the SMSC's) |
//! | `upstream_status` | string \| null | the SMSC's submit_sm_resp status when forwarded and answered |
//! | `message_id` | string \| null | the SMSC's message_id when forwarded and accepted |
//! | `snapshot` | string \| null | id of the consent snapshot decided on (16 hex digits, as `snapshot inspect`); null if none loaded |
//! | `snapshot_generation` | number | how many snapshots this process had loaded (0 = none) |
//! | `snapshot_built` | string \| null | that snapshot's build time, ISO-8601 UTC |
//!
//! An address longer than [`ADDR_CAP`] bytes (malformed) is written truncated and followed by
//! an extra `"source_truncated": true` / `"destination_truncated": true`. Bytes that are not
//! UTF-8 are written as `\u00XX` escapes (read as Latin-1).
//!
//! # Files, rotation, retention
//!
//! `dir/audit-YYYYMMDDTHHMMSSZ.jsonl`, named by the UTC time it was opened (`-N` is appended
//! when a name is taken). Only the newest file is written; a new one is started (never a
//! rename) when the active one reaches `audit.rotate_bytes` or is `audit.rotate_interval`
//! old, and after a write error. Files are fsynced every [`FSYNC_EVERY`] and on rotation. At
//! start and every hour, files whose last write (mtime) is older than `audit.retention` are
//! deleted; other file names in the directory are never touched.
//!
//! # Failure behaviour
//!
//! SMS traffic never waits for the audit log. A full queue or a writer that cannot write drops
//! records: `consentgate_audit_records_total{result="dropped"}` and
//! `consentgate_errors_total{stage="audit",kind=…}` count them and an ERROR is logged at most
//! every 10 s. After a write or open error the writer abandons the file and tries a new one at
//! most once a second, so it recovers by itself when the disk comes back.

mod config;
mod format;
mod record;
pub mod search;
mod writer;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use crate::policy::Verdict;
use crate::telemetry::metrics::{AUDIT_RECORDS_TOTAL, ERRORS_TOTAL};
use crate::telemetry::RateLimit;

/// Current time in unix microseconds (the record's `at_us`).
pub use crate::time::unix_us as now_us;
pub use config::{
    AuditConfig, AuditMode, DEFAULT_QUEUE_RECORDS, DEFAULT_RETENTION, DEFAULT_ROTATE_BYTES, DEFAULT_ROTATE_INTERVAL,
    MIN_RETENTION,
};
pub use format::{format_time_us, write_record};
pub use record::{AccountId, AuditAddr, AuditRecord, MessageId, Protocol, SnapshotRef, ADDR_CAP, MESSAGE_ID_CAP};
pub use writer::{list_files, AuditFile};

/// The writer fsyncs the active file this often while it has unsynced writes.
pub const FSYNC_EVERY: Duration = Duration::from_secs(1);
/// Retention is applied at start and this often.
pub const RETENTION_EVERY: Duration = Duration::from_secs(3600);
/// [`Audit::close`] waits this long for the writer to drain before giving up on it.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Distinct (system_id, entity) pairs the audit log can name; more map to `?`.
const MAX_ACCOUNTS: usize = 1 << 20;
/// Recycled batch buffers kept for sessions (each holds at most [`MAX_RECYCLED_CAPACITY`]
/// records): at most 64 × 512 × ~200 bytes ≈ 6.5 MB besides the queue itself.
const MAX_RECYCLED: usize = 64;
const MAX_RECYCLED_CAPACITY: usize = 512;
/// Capacity of a fresh batch buffer.
const BATCH_CAPACITY: usize = 64;

/// Why [`Audit::open`] failed: the directory cannot be created or its first file cannot be
/// opened. Returned at start so that a gateway asked to keep an audit log does not run
/// without one.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit.dir {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Counters of one audit log (also exported as metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditStats {
    /// Records written to a file.
    pub written: u64,
    /// Records dropped: queue full, writer failing, or flushed after close.
    pub dropped: u64,
    /// Failed opens, writes and fsyncs.
    pub write_errors: u64,
    /// Files created.
    pub files_opened: u64,
    /// Files deleted by retention.
    pub files_deleted: u64,
    /// Records queued for the writer right now.
    pub queued: u64,
}

enum Msg {
    Records(Vec<AuditRecord>),
    Close,
}

/// Names behind [`AccountId`]s. A std Mutex: taken at bind and by the writer when it meets a
/// new id, never on the per-message path.
#[derive(Default)]
struct Accounts {
    ids: HashMap<(Box<str>, Box<str>), u32>,
    names: Vec<(Arc<str>, Arc<str>)>,
}

/// State shared by the front (sessions) and the writer thread.
struct Core {
    queued: AtomicUsize,
    accounts: Mutex<Accounts>,
    /// Emptied batch buffers handed back by the writer for the next flush (a std Mutex, held
    /// for one push or pop).
    recycled: Mutex<Vec<Vec<AuditRecord>>>,
    written: AtomicU64,
    dropped: AtomicU64,
    write_errors: AtomicU64,
    files_opened: AtomicU64,
    files_deleted: AtomicU64,
    m_written: metrics::Counter,
    m_dropped: metrics::Counter,
    /// `consentgate_errors_total{stage="audit",kind="queue_full"}`, resolved once: it is
    /// counted on the sessions' side, once per dropping flush.
    m_queue_full: metrics::Counter,
    drop_log: RateLimit,
    error_log: RateLimit,
    /// Tests hold this lock to stall the writer.
    #[cfg(test)]
    stall: Mutex<()>,
}

impl Core {
    fn new() -> Core {
        Core {
            queued: AtomicUsize::new(0),
            accounts: Mutex::default(),
            recycled: Mutex::default(),
            written: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            files_opened: AtomicU64::new(0),
            files_deleted: AtomicU64::new(0),
            m_written: metrics::counter!(AUDIT_RECORDS_TOTAL, "result" => "written"),
            m_dropped: metrics::counter!(AUDIT_RECORDS_TOTAL, "result" => "dropped"),
            m_queue_full: metrics::counter!(ERRORS_TOTAL, "stage" => "audit", "kind" => "queue_full"),
            drop_log: RateLimit::new(Duration::from_secs(10)),
            error_log: RateLimit::new(Duration::from_secs(10)),
            #[cfg(test)]
            stall: Mutex::new(()),
        }
    }

    fn written(&self, n: usize) {
        self.written.fetch_add(n as u64, Relaxed);
        self.m_written.increment(n as u64);
    }

    /// Counts `n` dropped records and logs (rate-limited) why: `queue_full` (also an error of
    /// that kind), `disk` (the open / write error itself is counted by [`Core::io_error`]),
    /// `closed`, `writer_gone`.
    fn dropped(&self, n: usize, kind: &'static str) {
        if n == 0 {
            return;
        }
        self.dropped.fetch_add(n as u64, Relaxed);
        self.m_dropped.increment(n as u64);
        if kind == "queue_full" {
            self.m_queue_full.increment(1);
        }
        if let Some(suppressed) = self.drop_log.allow() {
            tracing::error!(
                records = n,
                kind,
                suppressed,
                total_dropped = self.dropped.load(Relaxed),
                "audit: decision records dropped (SMS traffic is not held back)"
            );
        }
    }

    /// Counts a failed file operation (`consentgate_errors_total{stage="audit",kind}` with
    /// kind `open` | `write` | `fsync` | `retention`) and logs it (rate-limited).
    fn io_error(&self, kind: &'static str, path: &std::path::Path, e: &std::io::Error) {
        self.write_errors.fetch_add(1, Relaxed);
        metrics::counter!(ERRORS_TOTAL, "stage" => "audit", "kind" => kind).increment(1);
        if let Some(suppressed) = self.error_log.allow() {
            tracing::error!(kind, file = %path.display(), error = %e, suppressed, "audit: file error");
        }
    }

    fn take_buffer(&self) -> Vec<AuditRecord> {
        if let Ok(mut r) = self.recycled.try_lock() {
            if let Some(v) = r.pop() {
                return v;
            }
        }
        Vec::with_capacity(BATCH_CAPACITY)
    }

    fn recycle(&self, mut v: Vec<AuditRecord>) {
        if v.capacity() > MAX_RECYCLED_CAPACITY {
            return;
        }
        v.clear();
        let mut r = self.recycled.lock().unwrap_or_else(|p| p.into_inner());
        if r.len() < MAX_RECYCLED {
            r.push(v);
        }
    }

    fn account_names(&self, out: &mut Vec<(Arc<str>, Arc<str>)>) {
        let a = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
        out.clone_from(&a.names);
    }
}

/// The sessions' side: queue, mode, writer thread.
struct Front {
    mode: AuditMode,
    capacity: usize,
    core: Arc<Core>,
    tx: Option<mpsc::Sender<Msg>>,
    closed: AtomicBool,
    /// The writer thread and its "finished" signal, taken by [`Audit::close`].
    thread: Mutex<Option<(std::thread::JoinHandle<()>, mpsc::Receiver<()>)>>,
}

impl Front {
    /// Hands a session's batch to the writer, or drops it (queue full, closed). Never blocks.
    fn submit(&self, buf: &mut Vec<AuditRecord>) {
        let n = buf.len();
        let Some(tx) = &self.tx else {
            buf.clear();
            return;
        };
        if self.closed.load(Relaxed) {
            buf.clear();
            self.core.dropped(n, "closed");
            return;
        }
        let before = self.core.queued.fetch_add(n, Relaxed);
        if before + n > self.capacity {
            self.core.queued.fetch_sub(n, Relaxed);
            buf.clear();
            self.core.dropped(n, "queue_full");
            return;
        }
        let full = std::mem::replace(buf, self.core.take_buffer());
        if let Err(mpsc::SendError(Msg::Records(v))) = tx.send(Msg::Records(full)) {
            // The writer is gone (it only exits after close, or if it panicked).
            self.core.queued.fetch_sub(v.len(), Relaxed);
            self.core.dropped(v.len(), "writer_gone");
        }
    }

    fn close(&self) {
        if self.closed.swap(true, Relaxed) {
            return;
        }
        if let Some(tx) = &self.tx {
            let _ = tx.send(Msg::Close);
        }
        let taken = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((thread, done)) = taken {
            match done.recv_timeout(CLOSE_TIMEOUT) {
                Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let _ = thread.join();
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    tracing::error!(
                        queued = self.core.queued.load(Relaxed),
                        timeout_s = CLOSE_TIMEOUT.as_secs(),
                        "audit: the writer did not finish in time (disk stalled?); queued records may be lost"
                    );
                }
            }
        }
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        self.close();
    }
}

/// The audit log handle. Cheap to clone; the writer stops when [`Audit::close`] is called or
/// the last clone and the last [`AuditBatch`] are dropped.
#[derive(Clone)]
pub struct Audit {
    front: Arc<Front>,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit").field("mode", &self.front.mode).field("stats", &self.stats()).finish()
    }
}

impl Audit {
    /// Starts the audit log per `[audit]`: creates the directory, opens the first file (so a
    /// directory that cannot be written is an error at start), applies retention and starts
    /// the writer thread. With mode `off` (or no directory) nothing is started and every
    /// batch discards its records.
    pub fn open(cfg: &AuditConfig) -> Result<Audit, AuditError> {
        let core = Arc::new(Core::new());
        let (mode, dir) = match (&cfg.dir, cfg.mode) {
            (Some(dir), mode) if mode != AuditMode::Off => (mode, dir.clone()),
            (None, _) => {
                tracing::info!("decision audit log off: no audit.dir configured");
                return Ok(Audit::disabled_with(core));
            }
            (Some(_), _) => {
                tracing::info!("decision audit log off (audit.mode = \"off\")");
                return Ok(Audit::disabled_with(core));
            }
        };
        let (tx, rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel();
        let w = writer::Writer::start(cfg, dir.clone(), core.clone())?;
        let thread = std::thread::Builder::new()
            .name("consentgate-audit".into())
            .spawn(move || {
                w.run(rx);
                let _ = done_tx.send(());
            })
            .map_err(|source| AuditError::Io { path: dir.clone(), source })?;
        tracing::info!(
            dir = %dir.display(),
            mode = mode.as_str(),
            rotate_bytes = cfg.rotate_bytes,
            rotate_interval_s = cfg.rotate_interval.as_secs(),
            retention_days = cfg.retention.as_secs() / 86_400,
            "decision audit log on"
        );
        Ok(Audit {
            front: Arc::new(Front {
                mode,
                capacity: cfg.queue_records.max(1),
                core,
                tx: Some(tx),
                closed: AtomicBool::new(false),
                thread: Mutex::new(Some((thread, done_rx))),
            }),
        })
    }

    /// A log that records nothing (mode off).
    pub fn disabled() -> Audit {
        Audit::disabled_with(Arc::new(Core::new()))
    }

    fn disabled_with(core: Arc<Core>) -> Audit {
        Audit {
            front: Arc::new(Front {
                mode: AuditMode::Off,
                capacity: 0,
                core,
                tx: None,
                closed: AtomicBool::new(false),
                thread: Mutex::new(None),
            }),
        }
    }

    /// The effective mode: the session skips building records it would not keep.
    #[inline]
    pub fn mode(&self) -> AuditMode {
        self.front.mode
    }

    /// A per-session batch (a local Vec; push is a plain push, flush hands it over).
    pub fn sink(&self) -> AuditBatch {
        AuditBatch { front: self.front.clone(), mode: self.front.mode, buf: Vec::new() }
    }

    /// The id under which records name (system_id, entity). Call once per session at bind;
    /// takes a lock and may allocate the first time a pair is seen.
    pub fn account(&self, system_id: &str, entity: &str) -> AccountId {
        if self.front.mode == AuditMode::Off {
            return AccountId::UNKNOWN;
        }
        let mut a = self.front.core.accounts.lock().unwrap_or_else(|p| p.into_inner());
        let key = (Box::<str>::from(system_id), Box::<str>::from(entity));
        if let Some(&id) = a.ids.get(&key) {
            return AccountId(id);
        }
        if a.names.len() >= MAX_ACCOUNTS {
            return AccountId::UNKNOWN;
        }
        let id = a.names.len() as u32;
        a.names.push((Arc::from(system_id), Arc::from(entity)));
        a.ids.insert(key, id);
        AccountId(id)
    }

    /// Counters (also exported as `consentgate_audit_records_total` and
    /// `consentgate_errors_total{stage="audit"}`).
    pub fn stats(&self) -> AuditStats {
        let c = &self.front.core;
        AuditStats {
            written: c.written.load(Relaxed),
            dropped: c.dropped.load(Relaxed),
            write_errors: c.write_errors.load(Relaxed),
            files_opened: c.files_opened.load(Relaxed),
            files_deleted: c.files_deleted.load(Relaxed),
            queued: c.queued.load(Relaxed) as u64,
        }
    }

    /// Stops accepting records, lets the writer write and fsync everything queued, and joins
    /// it — waiting at most [`CLOSE_TIMEOUT`] (a stalled disk is logged, not waited for).
    /// Records flushed afterwards are counted as dropped. Idempotent.
    pub fn close(&self) {
        self.front.close();
    }
}

/// One session's pending records. Not shared: the session pushes during its event-loop turn
/// and flushes at the end of the turn (and dropping it flushes).
pub struct AuditBatch {
    front: Arc<Front>,
    mode: AuditMode,
    buf: Vec<AuditRecord>,
}

impl AuditBatch {
    /// Whether a decision with this verdict is recorded (build the record only if so).
    #[inline]
    pub fn wants(&self, verdict: Verdict) -> bool {
        self.mode.records(verdict)
    }

    #[inline]
    pub fn mode(&self) -> AuditMode {
        self.mode
    }

    /// Adds a record (a Vec push; it allocates only when a turn holds more records than any
    /// before it in this buffer).
    #[inline]
    pub fn push(&mut self, record: AuditRecord) {
        self.buf.push(record);
    }

    /// Records pushed and not yet flushed.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Hands the pushed records to the writer without waiting: one channel send per call,
    /// none if empty. If the queue holds `audit.queue_records` already (or the log is
    /// closed), the records are dropped and counted instead.
    #[inline]
    pub fn flush(&mut self) {
        if !self.buf.is_empty() {
            self.front.submit(&mut self.buf);
        }
    }
}

impl Drop for AuditBatch {
    fn drop(&mut self) {
        self.flush();
    }
}

impl std::fmt::Debug for AuditBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditBatch").field("mode", &self.mode).field("pending", &self.buf.len()).finish()
    }
}

#[cfg(test)]
mod tests;
