//! The writer thread: takes batches off the queue, formats them into one buffer, writes that
//! buffer with one `write` to the active file, rotates, fsyncs and applies retention. Group
//! commit in the style of the consent journal's writer ([`crate::consent::store`]), except
//! that nothing waits for durability: a lost second of audit records is an incident to
//! report, not a reason to stall SMS.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use super::format::{compact_time, write_record};
use super::{AuditConfig, AuditError, AuditRecord, Core, Msg, FSYNC_EVERY, RETENTION_EVERY};

pub(super) const PREFIX: &str = "audit-";
pub(super) const SUFFIX: &str = ".jsonl";
/// Wait between attempts to open a new file after an error (records meanwhile are dropped).
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(1);
/// Write once this much formatted output is pending, even if more batches are queued.
const WRITE_CHUNK: usize = 1 << 20;

/// The file being appended to.
struct Active {
    file: File,
    path: PathBuf,
    len: u64,
    opened: Instant,
    /// Written since the last fsync.
    dirty: bool,
}

pub(super) struct Writer {
    dir: PathBuf,
    rotate_bytes: u64,
    rotate_interval: Duration,
    retention: Duration,
    core: Arc<Core>,
    active: Option<Active>,
    /// After an error, no new file is tried before this instant.
    retry_at: Option<Instant>,
    last_sync: Instant,
    last_retention: Instant,
    /// Formatted lines waiting for one write, and how many records they hold.
    buf: Vec<u8>,
    pending: usize,
    /// Local copy of the account names (refreshed when an unknown id shows up).
    names: Vec<(Arc<str>, Arc<str>)>,
}

impl Writer {
    /// Creates the directory, applies retention and opens the first file: problems here are
    /// start-up errors.
    pub(super) fn start(cfg: &AuditConfig, dir: PathBuf, core: Arc<Core>) -> Result<Writer, AuditError> {
        let io_err = |source| AuditError::Io { path: dir.clone(), source };
        fs::create_dir_all(&dir).map_err(io_err)?;
        let now = Instant::now();
        let mut w = Writer {
            dir: dir.clone(),
            rotate_bytes: cfg.rotate_bytes.max(1),
            rotate_interval: cfg.rotate_interval.max(Duration::from_millis(1)),
            retention: cfg.retention,
            core,
            active: None,
            retry_at: None,
            last_sync: now,
            last_retention: now,
            buf: Vec::with_capacity(WRITE_CHUNK + 4096),
            pending: 0,
            names: Vec::new(),
        };
        w.apply_retention();
        w.active = Some(w.create_file().map_err(io_err)?);
        Ok(w)
    }

    pub(super) fn run(mut self, rx: mpsc::Receiver<Msg>) {
        loop {
            let msg = match rx.recv_timeout(self.next_wakeup()) {
                Ok(m) => Some(m),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => Some(Msg::Close),
            };
            let mut closing = false;
            let mut next = msg;
            // Group commit: everything already queued goes into one write (up to WRITE_CHUNK).
            while let Some(m) = next.take() {
                match m {
                    Msg::Records(v) => self.take(v),
                    Msg::Close => closing = true,
                }
                if self.buf.len() >= WRITE_CHUNK {
                    self.write_pending();
                }
                if !closing {
                    next = rx.try_recv().ok();
                } else {
                    // Drain whatever was queued before the close, then stop.
                    next = rx.try_recv().ok().filter(|m| matches!(m, Msg::Records(_)));
                }
            }
            self.write_pending();
            self.tick();
            if closing {
                self.sync();
                if let Some(a) = &self.active {
                    tracing::info!(file = %a.path.display(), written = self.core.written.load(Relaxed), "audit: closed");
                }
                // Late flushes that raced with the close: count them rather than lose them silently.
                while let Ok(Msg::Records(v)) = rx.try_recv() {
                    self.core.queued.fetch_sub(v.len(), Relaxed);
                    self.core.dropped(v.len(), "closed");
                }
                return;
            }
        }
    }

    fn next_wakeup(&self) -> Duration {
        let now = Instant::now();
        let mut at = self.last_retention + RETENTION_EVERY;
        if let Some(a) = &self.active {
            at = at.min(a.opened + self.rotate_interval);
            if a.dirty {
                at = at.min(self.last_sync + FSYNC_EVERY);
            }
        }
        at.saturating_duration_since(now).max(Duration::from_millis(1))
    }

    /// Formats one batch into the pending buffer and gives the Vec back for reuse.
    fn take(&mut self, v: Vec<AuditRecord>) {
        #[cfg(test)]
        drop(self.core.stall.lock());
        for r in &v {
            let idx = r.account.0 as usize;
            if r.account != super::AccountId::UNKNOWN && idx >= self.names.len() {
                self.core.account_names(&mut self.names);
            }
            let (acct, entity) = match self.names.get(idx) {
                Some((a, e)) => (&**a, &**e),
                None => ("?", "?"),
            };
            write_record(&mut self.buf, r, acct, entity);
        }
        self.pending += v.len();
        self.core.queued.fetch_sub(v.len(), Relaxed);
        self.core.recycle(v);
    }

    /// Writes the pending buffer with one `write_all`, opening a file first if needed.
    fn write_pending(&mut self) {
        if self.pending == 0 {
            self.buf.clear();
            return;
        }
        let n = std::mem::take(&mut self.pending);
        if self.active.is_none() {
            if self.retry_at.is_some_and(|t| Instant::now() < t) {
                self.buf.clear();
                self.core.dropped(n, "disk");
                return;
            }
            match self.create_file() {
                Ok(a) => {
                    self.active = Some(a);
                    self.retry_at = None;
                }
                Err(e) => {
                    self.core.io_error("open", &self.dir, &e);
                    self.retry_at = Some(Instant::now() + RETRY_AFTER_ERROR);
                    self.buf.clear();
                    self.core.dropped(n, "disk");
                    return;
                }
            }
        }
        let a = self.active.as_mut().expect("opened above");
        match a.file.write_all(&self.buf) {
            Ok(()) => {
                a.len += self.buf.len() as u64;
                a.dirty = true;
                self.core.written(n);
                if a.len >= self.rotate_bytes {
                    self.rotate();
                }
            }
            Err(e) => {
                // The file may now end in a partial line: abandon it (search skips such lines)
                // and start a new one, at most once a second.
                self.core.io_error("write", &a.path, &e);
                self.core.dropped(n, "disk");
                let a = self.active.take().expect("active");
                if a.len == 0 {
                    let _ = fs::remove_file(&a.path);
                }
                self.retry_at = Some(Instant::now() + RETRY_AFTER_ERROR);
            }
        }
        self.buf.clear();
    }

    /// Periodic work: fsync, interval rotation, retention.
    fn tick(&mut self) {
        let now = Instant::now();
        if self.active.as_ref().is_some_and(|a| a.dirty) && now >= self.last_sync + FSYNC_EVERY {
            self.sync();
        }
        if self.active.as_ref().is_some_and(|a| now >= a.opened + self.rotate_interval) {
            self.rotate();
        }
        if now >= self.last_retention + RETENTION_EVERY {
            self.last_retention = now;
            self.apply_retention();
        }
    }

    /// fsyncs the active file if it has unsynced writes. A failed fsync abandons the file:
    /// the kernel may have dropped the pages, a retried fsync would not say so.
    fn sync(&mut self) {
        self.last_sync = Instant::now();
        let Some(a) = self.active.as_mut() else { return };
        if !a.dirty {
            return;
        }
        match a.file.sync_data() {
            Ok(()) => a.dirty = false,
            Err(e) => {
                self.core.io_error("fsync", &a.path, &e);
                self.active = None;
            }
        }
    }

    /// Closes the active file (fsynced); the next batch opens a new one. Idle periods
    /// therefore leave no empty files behind.
    fn rotate(&mut self) {
        self.sync();
        self.active = None;
    }

    /// A new file named after the current UTC second, its directory entry fsynced.
    fn create_file(&mut self) -> io::Result<Active> {
        let secs = crate::time::Clock::system().now().unix_s();
        let stamp = compact_time(secs);
        let mut n = 0u32;
        let (file, path) = loop {
            let name = match n {
                0 => format!("{PREFIX}{stamp}{SUFFIX}"),
                n => format!("{PREFIX}{stamp}-{n}{SUFFIX}"),
            };
            let path = self.dir.join(name);
            match OpenOptions::new().append(true).create_new(true).open(&path) {
                Ok(f) => break (f, path),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 10_000 => n += 1,
                Err(e) => return Err(e),
            }
        };
        File::open(&self.dir)?.sync_all()?;
        self.core.files_opened.fetch_add(1, Relaxed);
        Ok(Active { file, path, len: 0, opened: Instant::now(), dirty: false })
    }

    /// Deletes audit files (never the active one, never other names) whose last write is
    /// older than the retention period.
    fn apply_retention(&mut self) {
        let files = match list_files(&self.dir) {
            Ok(f) => f,
            Err(e) => {
                self.core.io_error("retention", &self.dir, &e);
                return;
            }
        };
        let Some(cutoff) = crate::time::system_now().checked_sub(self.retention) else { return };
        let active = self.active.as_ref().map(|a| a.path.clone());
        let mut deleted = 0u64;
        for f in files {
            if Some(&f.path) == active.as_ref() {
                continue;
            }
            let old = match fs::metadata(&f.path).and_then(|m| m.modified()) {
                Ok(mtime) => mtime < cutoff,
                Err(_) => continue,
            };
            if old {
                match fs::remove_file(&f.path) {
                    Ok(()) => deleted += 1,
                    Err(e) => self.core.io_error("retention", &f.path, &e),
                }
            }
        }
        if deleted > 0 {
            self.core.files_deleted.fetch_add(deleted, Relaxed);
            tracing::info!(
                dir = %self.dir.display(),
                files = deleted,
                retention_days = self.retention.as_secs() / 86_400,
                "audit: deleted files past retention"
            );
        }
    }
}

/// One audit file in a directory listing.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AuditFile {
    /// When the file was opened, unix seconds (from its name).
    pub start: i64,
    /// Disambiguator for files opened within the same second.
    pub n: u32,
    pub path: PathBuf,
}

/// Parses `audit-YYYYMMDDTHHMMSSZ[-N].jsonl` into (start unix seconds, N).
pub(super) fn parse_name(name: &str) -> Option<(i64, u32)> {
    let core = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    let (stamp, n) = match core.split_once('-') {
        Some((s, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => (s, n.parse().ok()?),
        Some(_) => return None,
        None => (core, 0),
    };
    let b = stamp.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    if !b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit) {
        return None;
    }
    let iso = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &stamp[0..4],
        &stamp[4..6],
        &stamp[6..8],
        &stamp[9..11],
        &stamp[11..13],
        &stamp[13..15]
    );
    Some((crate::time::parse_timestamp(iso.as_bytes())?, n))
}

/// The audit files in `dir`, oldest first (by the time in their names).
pub fn list_files(dir: &Path) -> io::Result<Vec<AuditFile>> {
    let mut v = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if let Some((start, n)) = entry.file_name().to_str().and_then(parse_name) {
            v.push(AuditFile { start, n, path: entry.path() });
        }
    }
    v.sort();
    Ok(v)
}
