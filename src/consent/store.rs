//! The consent store the gateway runs on: the current snapshot behind an atomic pointer
//! (arc-swap: readers never wait, a reload never pauses traffic), the live delta consulted
//! before it, and the journal writer that makes live statements durable.
//!
//! Reload: the new file is opened and validated completely ([`Snapshot::open`]) *before* the
//! swap; a bad file is refused with its error and the old snapshot keeps serving.
//!
//! Live statements (MO opt-outs, admin API) are applied to the delta at once — the very next
//! submit_sm sees them — and handed to a dedicated writer thread that appends them to the
//! journal with group commit (one fdatasync per batch). Each statement gets its journal
//! sequence number up front (its *ticket*); [`ConsentStore::durable`] publishes the highest
//! sequence that is on disk, so a caller can hold an acknowledgement until its ticket is
//! durable. If the disk fails, the watermark stops advancing and nothing further is
//! acknowledged (the SMSC then retries the MO).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::SystemTime;

use arc_swap::{ArcSwapOption, Guard};
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::delta::Delta;
use super::journal::{Journal, Statement};
use super::snapshot::{Snapshot, SnapshotError};

/// `[consent]`: where the snapshot and the journal live.
#[derive(Debug, Clone, Default)]
pub struct ConsentConfig {
    pub snapshot: Option<PathBuf>,
    pub journal: Option<PathBuf>,
    /// Poll the snapshot file and reload it when it changes.
    pub watch: bool,
}

/// A loaded snapshot with its load metadata.
#[derive(Debug)]
pub struct Loaded {
    pub snapshot: Snapshot,
    /// Increments with every successful load; sessions re-resolve entity ids when it changes.
    pub generation: u64,
    pub path: PathBuf,
    pub loaded_at: SystemTime,
}

/// Why the store could not start.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("journal {0}: {1}")]
    Journal(PathBuf, String),
}

struct JournalWriter {
    /// Next ticket and the channel, under one lock so tickets reach the writer in order.
    /// A std Mutex: held only for an increment and a channel send, never across an await.
    submit: Mutex<(u64, Option<mpsc::Sender<Statement>>)>,
    durable: watch::Sender<u64>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Snapshot + delta + journal.
pub struct ConsentStore {
    current: ArcSwapOption<Loaded>,
    pub delta: Delta,
    journal: Option<JournalWriter>,
    /// Sequence for live statements when no journal is configured.
    volatile_seq: AtomicU64,
    generation: AtomicU64,
    snapshot_path: Option<PathBuf>,
    /// Serialises reloads (SIGHUP, file watch and admin API may race). No await inside.
    reload_lock: Mutex<()>,
}

impl std::fmt::Debug for ConsentStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsentStore")
            .field("snapshot_path", &self.snapshot_path)
            .field("generation", &self.generation.load(Ordering::Relaxed))
            .field("delta_len", &self.delta.len())
            .finish()
    }
}

impl ConsentStore {
    /// A store with no snapshot and no journal (tests, demo building blocks).
    pub fn in_memory() -> ConsentStore {
        ConsentStore {
            current: ArcSwapOption::empty(),
            delta: Delta::new(),
            journal: None,
            volatile_seq: AtomicU64::new(1),
            generation: AtomicU64::new(0),
            snapshot_path: None,
            reload_lock: Mutex::new(()),
        }
    }

    /// Opens the journal (replaying it into the delta) and loads the snapshot, per `[consent]`.
    /// A snapshot that fails validation at start is logged and left unloaded (commercial
    /// traffic then follows `policy.on_snapshot_unavailable`); a journal that cannot be opened
    /// is an error, because opt-outs could not be made durable.
    pub fn open(cfg: &ConsentConfig) -> Result<ConsentStore, StoreError> {
        let mut store = ConsentStore::in_memory();
        store.snapshot_path = cfg.snapshot.clone();
        if let Some(dir) = &cfg.journal {
            let (journal, replayed) =
                Journal::open(dir).map_err(|e| StoreError::Journal(dir.clone(), e.to_string()))?;
            for st in &replayed {
                store.delta.apply(st);
            }
            info!(journal = %dir.display(), statements = replayed.len(), "journal replayed");
            store.journal = Some(JournalWriter::start(journal));
        } else {
            warn!("no consent.journal configured: live opt-outs are kept in memory only and lost on restart");
        }
        if store.snapshot_path.is_some() {
            if let Err(e) = store.reload() {
                error!(error = %e, "consent snapshot not loaded at start");
            }
        }
        Ok(store)
    }

    /// The current snapshot, if any. Cheap (no lock, no reference-count write in the
    /// common case); hold the guard only for the decision.
    #[inline]
    pub fn current(&self) -> Guard<Option<Arc<Loaded>>> {
        self.current.load()
    }

    /// Loads and validates the configured snapshot file, then swaps it in.
    pub fn reload(&self) -> Result<Arc<Loaded>, SnapshotError> {
        let Some(path) = self.snapshot_path.clone() else {
            return Err(SnapshotError::Invalid {
                path: "(none)".into(),
                what: "consent.snapshot is not configured".into(),
            });
        };
        self.load_path(&path)
    }

    /// Loads and validates `path`, then swaps it in. On error the old snapshot stays.
    pub fn load_path(&self, path: &Path) -> Result<Arc<Loaded>, SnapshotError> {
        let _serial = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        let t0 = std::time::Instant::now();
        let snapshot = Snapshot::open(path)?;
        let watermark = snapshot.info().journal_watermark;
        let loaded = Arc::new(Loaded {
            snapshot,
            generation: self.generation.fetch_add(1, Ordering::Relaxed) + 1,
            path: path.to_owned(),
            loaded_at: SystemTime::now(),
        });
        self.current.store(Some(loaded.clone()));
        if watermark > 0 {
            self.delta.prune_through(watermark);
        }
        huge_pages_later(&loaded);
        let info = loaded.snapshot.info();
        info!(
            snapshot = %path.display(),
            generation = loaded.generation,
            dnc = info.dnc_count,
            pairs = info.pair_count,
            load_ms = t0.elapsed().as_millis() as u64,
            "snapshot loaded"
        );
        Ok(loaded)
    }

    /// Installs an already opened snapshot (tests, demo).
    pub fn install(&self, snapshot: Snapshot, path: PathBuf) -> Arc<Loaded> {
        let loaded = Arc::new(Loaded {
            snapshot,
            generation: self.generation.fetch_add(1, Ordering::Relaxed) + 1,
            path,
            loaded_at: SystemTime::now(),
        });
        self.current.store(Some(loaded.clone()));
        loaded
    }

    /// Records a live statement: applied to the delta now, journalled asynchronously.
    /// Returns its ticket (journal sequence); it is durable once [`durable`](Self::durable)
    /// reaches it. Without a journal the ticket is 0 (nothing to wait for).
    pub fn record(&self, mut st: Statement) -> u64 {
        match &self.journal {
            Some(j) => {
                let mut g = j.submit.lock().unwrap_or_else(|p| p.into_inner());
                let seq = g.0;
                st.seq = seq;
                self.delta.apply(&st);
                let sent = g.1.as_ref().map(|tx| tx.send(st).is_ok()).unwrap_or(false);
                if sent {
                    g.0 += 1;
                    seq
                } else {
                    error!("journal writer is gone; statement applied in memory only");
                    u64::MAX
                }
            }
            None => {
                st.seq = self.volatile_seq.fetch_add(1, Ordering::Relaxed);
                self.delta.apply(&st);
                0
            }
        }
    }

    /// Watches the highest durable journal sequence.
    pub fn durable(&self) -> watch::Receiver<u64> {
        match &self.journal {
            Some(j) => j.durable.subscribe(),
            None => watch::channel(u64::MAX).1,
        }
    }

    /// Stops the journal writer after it has written everything queued.
    pub fn close(&self) {
        if let Some(j) = &self.journal {
            j.submit.lock().unwrap_or_else(|p| p.into_inner()).1 = None;
            if let Some(t) = j.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
                let _ = t.join();
            }
        }
    }
}

impl JournalWriter {
    fn start(mut journal: Journal) -> JournalWriter {
        let (tx, rx) = mpsc::channel::<Statement>();
        let next = journal.next_seq();
        let (durable, _) = watch::channel(next.saturating_sub(1));
        let publish = durable.clone();
        let thread = std::thread::Builder::new()
            .name("consentgate-journal".into())
            .spawn(move || {
                let mut batch = Vec::with_capacity(1024);
                while let Ok(first) = rx.recv() {
                    batch.push(first);
                    while batch.len() < 4096 {
                        match rx.try_recv() {
                            Ok(st) => batch.push(st),
                            Err(_) => break,
                        }
                    }
                    let expect = batch[0].seq;
                    match journal.append_batch(&batch) {
                        Ok(first_seq) => {
                            if first_seq != expect {
                                error!(expected = expect, got = first_seq, "journal sequence mismatch");
                            }
                            let _ = publish.send(first_seq + batch.len() as u64 - 1);
                        }
                        Err(e) => {
                            // Stop: later tickets could no longer match journal sequences.
                            // Statements stay in the delta; acknowledgements are withheld.
                            error!(error = %e, pending = batch.len(), "journal append failed; journal writer stopped, opt-outs no longer durable");
                            return;
                        }
                    }
                    batch.clear();
                }
            })
            .expect("spawn journal writer thread");
        JournalWriter { submit: Mutex::new((next, Some(tx))), durable, thread: Mutex::new(Some(thread)) }
    }
}

impl Drop for ConsentStore {
    fn drop(&mut self) {
        self.close();
    }
}

/// Moves a just-installed snapshot onto huge pages on a background thread
/// ([`Snapshot::use_huge_pages`]); traffic is served from it meanwhile.
fn huge_pages_later(loaded: &Arc<Loaded>) {
    let loaded = loaded.clone();
    let spawned = std::thread::Builder::new().name("snapshot-thp".into()).spawn(move || {
        let t0 = std::time::Instant::now();
        let ok = loaded.snapshot.use_huge_pages();
        tracing::debug!(
            generation = loaded.generation,
            ok,
            ms = t0.elapsed().as_millis() as u64,
            "snapshot huge pages"
        );
    });
    if let Err(e) = spawned {
        tracing::debug!(error = %e, "snapshot huge pages: no thread");
    }
}
