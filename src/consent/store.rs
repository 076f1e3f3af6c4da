//! The consent store the gateway runs on: the current snapshot behind an atomic pointer
//! (arc-swap: readers never wait, a reload never pauses traffic), the live delta consulted
//! before it, and the journal writer that makes live statements durable.
//!
//! Reload: the new file is opened and validated completely ([`Snapshot::open`]) *before* the
//! swap; a bad file is refused with its error and the old snapshot keeps serving. After the
//! swap the delta drops what the snapshot's per-origin watermarks cover.
//!
//! Live statements (MO opt-outs, admin API) are checked ([`NewStatement::check`]; a malformed
//! one is refused to its caller alone), applied to the delta at once — the very next
//! submit_sm sees them — and handed to a dedicated writer thread that appends them to the
//! journal with group commit (one fdatasync per batch). Each statement gets its journal
//! sequence number up front (its [`Ticket`], also its origin seq: its identity is
//! (`[node] id`, ticket)); [`ConsentStore::durable`] publishes the highest sequence that is
//! on disk, so a caller can hold an acknowledgement until its ticket is durable.
//!
//! The writer never gives up. When an append fails (`ENOSPC`, `EIO`, a failed fdatasync) it
//! keeps the failing batch, returns the journal to its durable point
//! ([`Journal::recover`]) and appends the same batch again — same statements, same
//! sequence numbers — after a back-off of 10 ms doubling to 1 s, until it succeeds. Meanwhile
//! the durable watermark stands still, so nothing further is acknowledged (the SMSC retries the
//! MO, the admin API answers 503), later statements queue behind the batch in ticket order,
//! [`ConsentStore::journal_health`] reports [`JournalHealth::Failing`] (for `/readyz`), and
//! every failure is counted in `consentgate_journal_write_failures_total{kind}`. Once an
//! append succeeds the store is healthy again by itself.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::{ArcSwapOption, Guard};
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::config::ConsentConfig;
use super::delta::Delta;
use super::journal::{AppendError, Journal, JournalError};
use super::snapshot::{Snapshot, SnapshotError};
use super::statement::{NewStatement, NodeId, Statement, StatementError, StatementId, Watermarks};
use crate::telemetry::metrics as m;

/// First back-off after a failed journal append; doubled per failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Statements per group commit, at most.
const MAX_BATCH: usize = 4096;
/// Local durable statements the [`Outbox`] holds for the publisher, at most; past that it
/// drops them and says so (the publisher re-reads the journal, the source of truth).
const OUTBOX_CAP: usize = 100_000;

/// Local statements that became durable, in journal order, for the replication publisher
/// (architecture §8, outbox pattern). The journal stays the source of truth: the outbox is only
/// the fast path between two reads of it. Inactive (nothing kept) until
/// [`Outbox::reset`] is first called.
#[derive(Debug, Default)]
pub struct Outbox {
    inner: Mutex<OutboxInner>,
    ready: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct OutboxInner {
    active: bool,
    queue: std::collections::VecDeque<Statement>,
    /// Something was dropped since the last reset: re-read the journal.
    overflowed: bool,
}

/// What [`Outbox::take`] found.
#[derive(Debug)]
pub enum OutboxTake {
    /// Statements in journal order (possibly none).
    Statements(Vec<Statement>),
    /// More became durable than the outbox holds: read the journal from the last published seq.
    Overflowed,
}

impl Outbox {
    /// Empties the outbox and starts keeping every local statement that becomes durable from
    /// now on. Call it *before* reading the journal, so that nothing durable falls between
    /// the read and the outbox (the overlap is filtered by seq).
    pub fn reset(&self) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.active = true;
        g.queue.clear();
        g.overflowed = false;
    }

    /// Takes up to `max` statements, waiting up to `wait` for the first.
    pub async fn take(&self, max: usize, wait: Duration) -> OutboxTake {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.ready.notified();
            {
                let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
                if g.overflowed {
                    return OutboxTake::Overflowed;
                }
                if !g.queue.is_empty() {
                    let n = g.queue.len().min(max);
                    return OutboxTake::Statements(g.queue.drain(..n).collect());
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return OutboxTake::Statements(Vec::new());
            }
        }
    }

    /// How many statements are waiting.
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push(&self, batch: &[Statement], node: &NodeId) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if !g.active || g.overflowed {
            return;
        }
        for st in batch.iter().filter(|s| &s.id.origin == node) {
            if g.queue.len() >= OUTBOX_CAP {
                g.queue.clear();
                g.overflowed = true;
                break;
            }
            g.queue.push_back(st.clone());
        }
        drop(g);
        self.ready.notify_one();
    }
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

impl Loaded {
    /// The consent proof on record for (msisdn, entity) in this snapshot's proofs file
    /// ([`super::snapshot::proofs`]; read from disk, never on the message path).
    pub fn proof(&self, msisdn: u64, entity: &str) -> std::io::Result<super::snapshot::proofs::ProofLookup> {
        super::snapshot::proofs::lookup(&self.path, self.snapshot.info().checksum, msisdn, entity)
    }
}

/// Why the store could not start.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The journal could not be opened or replayed (the error names the file).
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// What [`ConsentStore::record`] promises for a recorded statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ticket {
    /// No journal is configured: the statement is in memory only, nothing to wait for.
    Volatile,
    /// The statement's journal sequence number: it is durable once
    /// [`ConsentStore::durable`] reaches it.
    Journal(u64),
}

/// Why [`ConsentStore::record`] refused a statement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The statement is malformed; nothing was applied or journalled.
    #[error("invalid statement: {0}")]
    Invalid(#[from] StatementError),
    /// The journal writer has stopped (the store is closing): the statement was applied in
    /// memory but will not be durable.
    #[error("the journal writer has stopped: the statement applies in memory but is not durable")]
    JournalUnavailable,
}

/// Why [`ConsentStore::record_durably`] could not say a statement is durable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurableError {
    #[error(transparent)]
    Record(#[from] RecordError),
    /// Applied in memory, journalled later or never: not durable within the wait.
    #[error("not durable within {0:?}: the statement applies in memory; retry to be sure")]
    NotDurable(Duration),
}

/// The state of the journal writer, for `/readyz` and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JournalHealth {
    /// No journal configured (live statements are volatile).
    Disabled,
    /// The last append succeeded.
    Healthy,
    /// Appends are failing and being retried; nothing since `since_ms` has become durable.
    Failing {
        /// When the first append of this episode failed, Unix ms.
        since_ms: i64,
        /// Failed attempts in this episode.
        failures: u64,
        last_error: String,
    },
    /// The writer has stopped (store closed).
    Stopped,
}

impl JournalHealth {
    /// Bounded label: `disabled`, `healthy`, `failing`, `stopped`.
    pub fn as_str(&self) -> &'static str {
        match self {
            JournalHealth::Disabled => "disabled",
            JournalHealth::Healthy => "healthy",
            JournalHealth::Failing { .. } => "failing",
            JournalHealth::Stopped => "stopped",
        }
    }

    /// Whether statements recorded now can become durable soon (healthy, or no journal).
    pub fn is_ok(&self) -> bool {
        matches!(self, JournalHealth::Disabled | JournalHealth::Healthy)
    }
}

/// The submit side: next ticket and the channel, under one lock so tickets reach the writer in
/// order.
struct Submit {
    next: u64,
    tx: Option<mpsc::Sender<Statement>>,
}

struct JournalWriter {
    dir: PathBuf,
    outbox: Arc<Outbox>,
    /// A std Mutex: held only for an increment, a delta apply and a channel send, never across
    /// an await.
    submit: Mutex<Submit>,
    durable: watch::Sender<u64>,
    health: Arc<Mutex<JournalHealth>>,
    /// Set by [`ConsentStore::close`]: a failing writer gives up instead of retrying forever.
    closing: Arc<AtomicBool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Snapshot + delta + journal.
pub struct ConsentStore {
    current: ArcSwapOption<Loaded>,
    pub delta: Delta,
    journal: Option<JournalWriter>,
    /// This node: the origin of the statements recorded here.
    node: NodeId,
    /// The highest origin seq per origin among the statements replayed from the journal at
    /// open (replication's starting knowledge, with the snapshot's watermarks).
    replayed: Watermarks,
    /// Sequence for live statements when no journal is configured.
    volatile_seq: AtomicU64,
    generation: AtomicU64,
    /// Bumped (Release) after every swap of `current`: a session holding its own `Arc` of the
    /// snapshot ([`ConsentStore::swaps`]) re-reads `current` when this moves.
    swaps: AtomicU64,
    snapshot_path: Option<PathBuf>,
    /// Serialises reloads (SIGHUP, file watch and admin API may race). No await inside.
    reload_lock: Mutex<()>,
}

impl std::fmt::Debug for ConsentStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsentStore")
            .field("node", &self.node)
            .field("snapshot_path", &self.snapshot_path)
            .field("generation", &self.generation.load(Ordering::Relaxed))
            .field("delta_len", &self.delta.len())
            .finish()
    }
}

impl ConsentStore {
    /// A store with no snapshot and no journal (tests, demo building blocks); the node id is
    /// the host name's.
    pub fn in_memory() -> ConsentStore {
        ConsentStore::volatile(NodeId::from_hostname())
    }

    fn volatile(node: NodeId) -> ConsentStore {
        ConsentStore {
            current: ArcSwapOption::empty(),
            delta: Delta::new(),
            journal: None,
            node,
            replayed: Watermarks::new(),
            volatile_seq: AtomicU64::new(1),
            generation: AtomicU64::new(0),
            swaps: AtomicU64::new(0),
            snapshot_path: None,
            reload_lock: Mutex::new(()),
        }
    }

    /// Opens the journal (replaying it into the delta) and loads the snapshot, per `[consent]`.
    /// A snapshot that fails validation at start is logged and left unloaded (commercial
    /// traffic then follows `policy.on_snapshot_unavailable`); a journal that cannot be opened
    /// is an error, because opt-outs could not be made durable.
    pub fn open(cfg: &ConsentConfig) -> Result<ConsentStore, StoreError> {
        let mut store = ConsentStore::volatile(cfg.node.clone());
        store.snapshot_path = cfg.snapshot.clone();
        if let Some(dir) = &cfg.journal {
            let (journal, replayed) = Journal::open(dir)?;
            for st in &replayed {
                store.delta.apply(st);
            }
            store.replayed = Watermarks::of(&replayed);
            info!(journal = %dir.display(), statements = replayed.len(), node = %cfg.node, "journal replayed");
            store.journal = Some(JournalWriter::start(journal, cfg.node.clone()));
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

    /// This node's id: the origin of statements recorded here.
    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// The current snapshot, if any. Cheap (no lock, no reference-count write in the
    /// common case); hold the guard only for the decision.
    #[inline]
    pub fn current(&self) -> Guard<Option<Arc<Loaded>>> {
        self.current.load()
    }

    /// How many times the serving snapshot was swapped. A reader that keeps the
    /// [`current`](Self::current) `Arc` across decisions (a session does, to keep the
    /// `arc_swap` load off its hot path) compares this first — one plain load — and
    /// re-reads `current` when it moved; it must also drop its copy within a bounded time
    /// (a session does on its 100 ms tick) so a replaced snapshot's memory is freed.
    #[inline]
    pub fn swaps(&self) -> u64 {
        self.swaps.load(Ordering::Acquire)
    }

    fn publish(&self, loaded: &Arc<Loaded>) {
        self.current.store(Some(Arc::clone(loaded)));
        self.swaps.fetch_add(1, Ordering::Release);
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
        let loaded = Arc::new(Loaded {
            snapshot,
            generation: self.generation.fetch_add(1, Ordering::Relaxed) + 1,
            path: path.to_owned(),
            loaded_at: crate::time::system_now(),
        });
        self.publish(&loaded);
        let marks = &loaded.snapshot.info().watermarks;
        if !marks.is_empty() {
            self.delta.prune_through(marks);
        }
        huge_pages_later(&loaded);
        let info = loaded.snapshot.info();
        info!(
            snapshot = %path.display(),
            generation = loaded.generation,
            dnc = info.dnc_count,
            pairs = info.pair_count,
            watermarks = %info.watermarks,
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
            loaded_at: crate::time::system_now(),
        });
        self.publish(&loaded);
        loaded
    }

    /// Records a live statement made on this node: checks it, gives it its identity (this
    /// node, its ticket), applies it to the delta now and journals it asynchronously.
    ///
    /// A malformed statement is refused ([`RecordError::Invalid`]) and changes nothing; other
    /// callers are unaffected. With a journal the ticket is durable once
    /// [`durable`](Self::durable) reaches it — while the journal is failing that waits until it
    /// recovers. After [`close`](Self::close) the statement still applies in memory and
    /// [`RecordError::JournalUnavailable`] says it will not be durable.
    pub fn record(&self, st: NewStatement) -> Result<Ticket, RecordError> {
        st.check()?;
        match &self.journal {
            Some(j) => {
                let mut g = j.submit.lock().unwrap_or_else(|p| p.into_inner());
                let seq = g.next;
                let st = st.with_id(StatementId { origin: self.node.clone(), seq });
                self.delta.apply(&st);
                let sent = g.tx.as_ref().is_some_and(|tx| tx.send(st).is_ok());
                if !sent {
                    error!("journal writer is gone; statement applied in memory only");
                    return Err(RecordError::JournalUnavailable);
                }
                g.next += 1;
                Ok(Ticket::Journal(seq))
            }
            None => {
                let seq = self.volatile_seq.fetch_add(1, Ordering::Relaxed);
                self.delta.apply(&st.with_id(StatementId { origin: self.node.clone(), seq }));
                Ok(Ticket::Volatile)
            }
        }
    }

    /// Records statements made on other nodes (replication, architecture §8) with the identity they
    /// carry: each is checked, applied to the delta and journalled at the next local journal
    /// position (its origin and origin seq kept). Idempotent in effect — the delta keeps the
    /// greatest by precedence — but each call journals what it is given: the caller filters
    /// what it already holds ([`Self::replayed_marks`]). Returns the last journal ticket
    /// (durable once [`Self::durable`] reaches it), `None` without a journal or for an empty
    /// batch. A malformed statement is refused before anything of the batch is applied.
    pub fn record_replicated(&self, sts: Vec<Statement>) -> Result<Option<u64>, RecordError> {
        for st in &sts {
            st.check()?;
        }
        let Some(j) = &self.journal else {
            for st in &sts {
                self.delta.apply(st);
            }
            return Ok(None);
        };
        let mut g = j.submit.lock().unwrap_or_else(|p| p.into_inner());
        let mut last = None;
        for st in sts {
            self.delta.apply(&st);
            let sent = g.tx.as_ref().is_some_and(|tx| tx.send(st).is_ok());
            if !sent {
                error!("journal writer is gone; replicated statement applied in memory only");
                return Err(RecordError::JournalUnavailable);
            }
            last = Some(g.next);
            g.next += 1;
        }
        Ok(last)
    }

    /// The highest origin seq per origin among the statements the journal held at open.
    pub fn replayed_marks(&self) -> &Watermarks {
        &self.replayed
    }

    /// The journal directory, if one is configured.
    pub fn journal_dir(&self) -> Option<&Path> {
        self.journal.as_ref().map(|j| j.dir.as_path())
    }

    /// Local statements as they become durable (replication's publisher); `None` without a
    /// journal.
    pub fn outbox(&self) -> Option<Arc<Outbox>> {
        self.journal.as_ref().map(|j| j.outbox.clone())
    }

    /// The highest durable journal sequence now (0 when nothing is; `u64::MAX` without a
    /// journal).
    pub fn durable_seq(&self) -> u64 {
        match &self.journal {
            Some(j) => *j.durable.borrow(),
            None => u64::MAX,
        }
    }

    /// [`record`](Self::record), then waits up to `wait` until the statement is durable: what
    /// every caller that acknowledges a statement to someone does (the admin API, the
    /// complaint register). The journal sequence, or `None` without a journal.
    pub async fn record_durably(&self, st: NewStatement, wait: Duration) -> Result<Option<u64>, DurableError> {
        let mut durable = self.durable();
        let ticket = match self.record(st)? {
            Ticket::Journal(t) => t,
            Ticket::Volatile => return Ok(None),
        };
        let done = matches!(tokio::time::timeout(wait, durable.wait_for(|&d| d >= ticket)).await, Ok(Ok(_)));
        if done {
            Ok(Some(ticket))
        } else {
            Err(DurableError::NotDurable(wait))
        }
    }

    /// Watches the highest durable journal sequence (`u64::MAX` without a journal: every
    /// ticket is as durable as it will get).
    pub fn durable(&self) -> watch::Receiver<u64> {
        match &self.journal {
            Some(j) => j.durable.subscribe(),
            None => watch::channel(u64::MAX).1,
        }
    }

    /// Whether `ticket` is durable now.
    pub fn is_durable(&self, ticket: Ticket) -> bool {
        match (ticket, &self.journal) {
            (Ticket::Volatile, _) | (Ticket::Journal(_), None) => true,
            (Ticket::Journal(t), Some(j)) => *j.durable.borrow() >= t,
        }
    }

    /// The journal writer's state (`/readyz`).
    pub fn journal_health(&self) -> JournalHealth {
        match &self.journal {
            Some(j) => j.health.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            None => JournalHealth::Disabled,
        }
    }

    /// Stops the journal writer after it has written everything queued. A writer that is
    /// failing makes one more attempt and then gives up: what it held was never acknowledged.
    pub fn close(&self) {
        if let Some(j) = &self.journal {
            j.closing.store(true, Ordering::Release);
            j.submit.lock().unwrap_or_else(|p| p.into_inner()).tx = None;
            if let Some(t) = j.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
                let _ = t.join();
            }
        }
    }
}

impl JournalWriter {
    fn start(journal: Journal, node: NodeId) -> JournalWriter {
        let (tx, rx) = mpsc::channel::<Statement>();
        let dir = journal.dir().to_owned();
        let outbox = Arc::new(Outbox::default());
        let next = journal.next_seq();
        let (durable, _) = watch::channel(next.saturating_sub(1));
        let health = Arc::new(Mutex::new(JournalHealth::Healthy));
        let closing = Arc::new(AtomicBool::new(false));
        metrics::gauge!(m::JOURNAL_HEALTHY).set(1.0);
        let writer = Writer {
            journal,
            publish: durable.clone(),
            health: health.clone(),
            closing: closing.clone(),
            outbox: outbox.clone(),
            node,
        };
        let thread = std::thread::Builder::new()
            .name("consentgate-journal".into())
            .spawn(move || writer.run(rx))
            .expect("spawn journal writer thread");
        JournalWriter {
            dir,
            outbox,
            submit: Mutex::new(Submit { next, tx: Some(tx) }),
            durable,
            health,
            closing,
            thread: Mutex::new(Some(thread)),
        }
    }
}

/// The writer thread's state.
struct Writer {
    journal: Journal,
    publish: watch::Sender<u64>,
    health: Arc<Mutex<JournalHealth>>,
    closing: Arc<AtomicBool>,
    outbox: Arc<Outbox>,
    /// Statements of this origin go to the outbox once durable.
    node: NodeId,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Statement>) {
        let mut batch = Vec::with_capacity(1024);
        while let Ok(first) = rx.recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(st) => batch.push(st),
                    Err(_) => break,
                }
            }
            if !self.commit(&mut batch) {
                break;
            }
            batch.clear();
        }
        *self.health.lock().unwrap_or_else(|p| p.into_inner()) = JournalHealth::Stopped;
        metrics::gauge!(m::JOURNAL_HEALTHY).set(0.0);
    }

    /// Appends `batch` until it is durable and publishes it. Returns false only if the store
    /// is closing while appends fail (the batch was never acknowledged).
    fn commit(&mut self, batch: &mut Vec<Statement>) -> bool {
        let mut backoff = FIRST_BACKOFF;
        let mut failures = 0u64;
        loop {
            match self.journal.append_batch(batch) {
                Ok(first_seq) => {
                    // A local statement's origin seq is its journal position (its ticket).
                    let mismatch = batch
                        .iter()
                        .enumerate()
                        .find(|(i, st)| st.id.origin == self.node && st.id.seq != first_seq + *i as u64);
                    if let Some((i, st)) = mismatch {
                        error!(expected = first_seq + i as u64, got = st.id.seq, "journal sequence mismatch");
                    }
                    if failures > 0 {
                        info!(failures, statements = batch.len(), "journal writable again; statements durable");
                        *self.health.lock().unwrap_or_else(|p| p.into_inner()) = JournalHealth::Healthy;
                        metrics::gauge!(m::JOURNAL_HEALTHY).set(1.0);
                    }
                    // send_replace: the value must advance even while nobody is subscribed (is_durable reads it).
                    self.publish.send_replace(first_seq + batch.len() as u64 - 1);
                    self.outbox.push(batch, &self.node);
                    return true;
                }
                Err(AppendError::Invalid { index, error }) => {
                    // Unreachable: `record` refuses what `append_batch` would (the same
                    // `check`). Drop the one statement rather than the writer.
                    error!(%error, seq = batch[index].id.seq, "journal refused a statement; dropped");
                    batch.remove(index);
                    if batch.is_empty() {
                        return true;
                    }
                }
                Err(e) => {
                    failures += 1;
                    metrics::counter!(m::JOURNAL_WRITE_FAILURES_TOTAL, "kind" => e.kind()).increment(1);
                    if matches!(e, AppendError::Io { op: "fsync", .. }) {
                        metrics::counter!(m::ERRORS_TOTAL, "stage" => "journal", "kind" => "fsync_failed").increment(1);
                    }
                    metrics::gauge!(m::JOURNAL_HEALTHY).set(0.0);
                    {
                        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
                        let since_ms = match &*h {
                            JournalHealth::Failing { since_ms, .. } => *since_ms,
                            _ => crate::time::Clock::system().now().unix_ms,
                        };
                        *h = JournalHealth::Failing { since_ms, failures, last_error: e.to_string() };
                    }
                    if self.closing.load(Ordering::Acquire) {
                        error!(error = %e, statements = batch.len(), "journal append failed at shutdown; statements not durable (never acknowledged)");
                        return false;
                    }
                    // Log the first failure and then about once a second.
                    if failures == 1 || backoff == MAX_BACKOFF {
                        error!(error = %e, failures, pending = batch.len(), retry_in_ms = backoff.as_millis() as u64, "journal append failed; retrying, opt-outs not acknowledged meanwhile");
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    if let Err(e) = self.journal.recover() {
                        metrics::counter!(m::JOURNAL_WRITE_FAILURES_TOTAL, "kind" => "recover").increment(1);
                        warn!(error = %e, "journal recovery failed; retrying");
                    }
                }
            }
        }
    }
}

impl Drop for ConsentStore {
    fn drop(&mut self) {
        self.close();
    }
}

/// Moves a just-installed snapshot onto huge pages on a background thread
/// ([`Snapshot::use_huge_pages`]); traffic is served from it meanwhile.
/// Lets go of a snapshot reference held outside the store (a session's). When it is the last
/// one, the snapshot's memory (GBs at a billion records) is freed on a short-lived thread,
/// not on the gateway worker that happened to hold it last: unmapping 9 GB takes long
/// enough to stall every session on that worker.
pub fn release(loaded: Option<Arc<Loaded>>) {
    let Some(l) = loaded else { return };
    // Only the holder of the last reference frees; `into_inner` decides that atomically.
    let Some(last) = Arc::into_inner(l) else { return };
    if last.snapshot.info().file_bytes < RELEASE_INLINE_BELOW {
        return drop(last);
    }
    let spawned = std::thread::Builder::new().name("snapshot-free".into()).spawn(move || drop(last));
    if let Err(e) = spawned {
        // The closure, and with it the snapshot, was dropped here.
        tracing::debug!(error = %e, "snapshot free: no thread");
    }
}

/// Snapshots smaller than this are freed where their last reference goes.
const RELEASE_INLINE_BELOW: u64 = 64 << 20;

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

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::Instant;

    use super::*;
    use crate::consent::journal::read_dir;
    use crate::consent::statement::{EntityName, StatementKind, StatementSource};

    fn revoke(i: u64) -> NewStatement {
        NewStatement {
            kind: StatementKind::Revoke,
            source: StatementSource::Mo,
            msisdn: 8613800000000 + i,
            entity: Some(EntityName::parse("acme").unwrap()),
            at: 1_780_000_000_000 + i as i64,
        }
    }

    fn node() -> NodeId {
        NodeId::parse("test-node").unwrap()
    }

    fn wait_durable(store: &ConsentStore, ticket: u64, within: Duration) -> bool {
        let t0 = Instant::now();
        while t0.elapsed() < within {
            if store.is_durable(Ticket::Journal(ticket)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    #[test]
    fn record_refuses_a_malformed_statement_alone() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ConsentConfig { journal: Some(dir.path().join("j")), node: node(), ..ConsentConfig::default() };
        let store = ConsentStore::open(&cfg).unwrap();
        let mut bad = revoke(0);
        bad.entity = None;
        assert_eq!(store.record(bad), Err(RecordError::Invalid(StatementError::MissingEntity)));
        assert!(store.delta.is_empty());
        let t = store.record(revoke(1)).unwrap();
        assert_eq!(t, Ticket::Journal(1));
        assert!(wait_durable(&store, 1, Duration::from_secs(5)));
        assert_eq!(store.journal_health(), JournalHealth::Healthy);
        store.close();
        assert_eq!(store.journal_health(), JournalHealth::Stopped);
        assert_eq!(store.record(revoke(2)), Err(RecordError::JournalUnavailable));
        let on_disk = read_dir(dir.path().join("j")).unwrap();
        assert_eq!(on_disk.len(), 1);
        assert_eq!(on_disk[0].id, StatementId { origin: node(), seq: 1 });

        let mem = ConsentStore::in_memory();
        assert_eq!(mem.record(revoke(3)), Ok(Ticket::Volatile));
        assert_eq!(mem.journal_health(), JournalHealth::Disabled);
        assert!(mem.is_durable(Ticket::Volatile));
    }

    /// Unmounts (lazily) on drop, so a failing test does not leave the mount behind.
    struct Mount(PathBuf);

    impl Drop for Mount {
        fn drop(&mut self) {
            let ok = std::process::Command::new("umount").arg("-l").arg(&self.0).status().is_ok_and(|s| s.success());
            if !ok {
                eprintln!("WARNING: could not unmount the test tmpfs at {}", self.0.display());
            }
        }
    }

    /// A real full file system (a 1 MiB tmpfs): statements recorded while it is full are not
    /// acknowledged, the writer reports `Failing` and keeps retrying, and once space is freed
    /// they become durable by themselves, exactly once each and in ticket order, and survive a
    /// reopen. Needs root (to mount); without it the test says so loudly.
    #[test]
    fn full_disk_is_retried_until_durable() {
        // SAFETY: geteuid has no preconditions and cannot fail.
        #[allow(unsafe_code)]
        let root = unsafe { libc::geteuid() } == 0;
        if !root {
            eprintln!("\n*** SKIPPED full_disk_is_retried_until_durable: not root, cannot mount a tmpfs ***\n");
            return;
        }
        // SAFETY: sysconf has no preconditions.
        #[allow(unsafe_code)]
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().join("mnt");
        fs_err(std::fs::create_dir(&mnt));
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(&mnt)
            .status()
            .expect("run mount");
        assert!(status.success(), "running as root but `mount -t tmpfs` failed ({status}): cannot test a full disk");
        let _mount = Mount(mnt.clone());

        let jdir = mnt.join("journal");
        let cfg = ConsentConfig { journal: Some(jdir.clone()), node: node(), ..ConsentConfig::default() };
        let store = ConsentStore::open(&cfg).unwrap();
        // Fill the segment's last page so that the next record needs a new one.
        let Ticket::Journal(mut last) = store.record(revoke(0)).unwrap() else { panic!("journalled") };
        assert!(wait_durable(&store, last, Duration::from_secs(5)));
        let seg_len = || std::fs::metadata(jdir.join("journal-00000000000000000001.log")).unwrap().len();
        let rec = seg_len() - 16;
        let mut n = 1;
        while seg_len() % page + rec <= page {
            let Ticket::Journal(t) = store.record(revoke(n)).unwrap() else { panic!("journalled") };
            assert!(wait_durable(&store, t, Duration::from_secs(5)));
            last = t;
            n += 1;
        }
        let before = n;
        // Fill the file system.
        let fill = mnt.join("fill");
        {
            let mut f = std::fs::File::create(&fill).unwrap();
            let chunk = vec![0u8; 4096];
            while f.write_all(&chunk).is_ok() {}
            let _ = f.sync_all();
        }

        let mut tickets = Vec::new();
        for i in 0..20 {
            match store.record(revoke(n + i)).unwrap() {
                Ticket::Journal(t) => tickets.push(t),
                Ticket::Volatile => panic!("journalled"),
            }
        }
        assert_eq!(tickets, (last + 1..=last + 20).collect::<Vec<_>>());
        // Applied at once, durable never while the disk is full.
        assert!(store.delta.len() as u64 >= before + 20);
        std::thread::sleep(Duration::from_millis(300));
        assert!(!store.is_durable(Ticket::Journal(tickets[0])), "acknowledged on a full disk");
        match store.journal_health() {
            JournalHealth::Failing { failures, last_error, .. } => {
                assert!(failures >= 2, "retried: {failures}");
                assert!(last_error.contains("No space left") || last_error.contains("os error 28"), "{last_error}");
            }
            h => panic!("expected Failing, got {h:?}"),
        }
        assert_eq!(read_dir(&jdir).unwrap().len() as u64, before, "nothing of the failing batch on disk");
        // A malformed statement is still refused alone meanwhile.
        let mut bad = revoke(999);
        bad.entity = None;
        assert!(matches!(store.record(bad), Err(RecordError::Invalid(_))));

        // Free the space: the writer recovers by itself.
        std::fs::remove_file(&fill).unwrap();
        assert!(wait_durable(&store, *tickets.last().unwrap(), Duration::from_secs(10)), "durable after space freed");
        assert_eq!(store.journal_health(), JournalHealth::Healthy);
        store.close();
        drop(store);

        // Everything survives a reopen, once each, identities = tickets in order.
        let (_, replayed) = Journal::open(&jdir).unwrap();
        let seqs: Vec<u64> = replayed.iter().map(|s| s.id.seq).collect();
        assert_eq!(seqs, (1..=last + 20).collect::<Vec<_>>());
        assert!(replayed.iter().all(|s| s.id.origin == node()));
        assert_eq!(replayed.last().unwrap().msisdn, 8613800000000 + n + 19);
    }

    fn fs_err(r: std::io::Result<()>) {
        r.expect("create the mount point");
    }
}
