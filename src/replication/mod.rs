//! Several nodes (architecture §8): live statements shared through one Redis stream.
//!
//! Each node's fsynced journal stays the source of truth for what that node captured
//! (transactional outbox). Two tasks per node, each with its own connection and reconnect
//! loop (back-off 100 ms doubling to 5 s), every command bounded by `replication.timeout`:
//!
//! * the **publisher** ([`publisher`]) sends this node's durable statements in batches, one
//!   script each (an `XADD` per statement, then `HSET <stream>:published <node> <seq>`): the
//!   entries and the node's *published-through* marker move together, so after a Redis
//!   restart, a wipe or a failover to a replica that missed writes, the node republishes
//!   exactly what the stream lacks (from its journal; duplicates are harmless). A lease
//!   (`<stream>:lease:<node>`, `SET NX PX`) keeps two processes with one `[node] id` from
//!   fighting over the marker; its token is kept in the journal directory, so the same node
//!   restarted after a crash takes its lease back at once.
//! * the **reader** ([`reader`]) follows the whole stream with its own cursor (`XREAD BLOCK`,
//!   no consumer groups) and applies other origins' statements to the delta and journal
//!   ([`ConsentStore::record_replicated`]). It skips what the node already holds — per
//!   origin, statements arrive in origin-seq order (each publisher sends in order and only
//!   ever re-sends a prefix), so the highest origin seq held per origin (journal replay and
//!   snapshot watermarks, [`Watermarks`]) is enough to make apply idempotent.
//!
//! Readiness ([`Status`]): not ready until the reader has caught up with the stream's head as
//! seen at connect; while Redis is unreachable `on_disconnect` decides — `serve` (keep
//! deciding on local state; ready) or `unready` (`/readyz` 503 so the balancer drains the
//! node). A condition only an operator can clear (the node id held by another process, a
//! journal behind its own published marker, a stream trimmed past what this node holds)
//! makes the node unready in either mode, with the reason in `/readyz`.
//!
//! Decisions never wait for Redis: the hot path reads the delta, which the reader feeds.

pub mod caps;
pub mod entry;
pub mod ops;
mod publisher;
mod reader;
pub mod resp;

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::consent::store::ConsentStore;
use crate::consent::Watermarks;
use crate::telemetry::metrics as m;

pub use resp::RedisUrl;

/// Default stream key.
pub const DEFAULT_STREAM: &str = "consentgate:statements";
/// Default bound on a Redis reply (connect, and every command but the reader's `XREAD BLOCK`,
/// which gets its block time on top).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the reader's `XREAD` blocks on the server.
const BLOCK: Duration = Duration::from_millis(1000);
/// Statements per publisher batch (one script).
const PUBLISH_BATCH: usize = 512;
/// Entries per reader `XREAD`.
const READ_COUNT: usize = 1000;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// `replication.on_disconnect`: what a node does while it cannot reach Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDisconnect {
    /// Keep deciding on local state and stay ready (availability).
    Serve,
    /// Report not ready (`/readyz` 503) so the balancer drains the node (compliance: other
    /// nodes' opt-outs cannot reach it).
    Unready,
}

impl OnDisconnect {
    pub fn parse(s: &str) -> Option<OnDisconnect> {
        match s {
            "serve" => Some(OnDisconnect::Serve),
            "unready" => Some(OnDisconnect::Unready),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OnDisconnect::Serve => "serve",
            OnDisconnect::Unready => "unready",
        }
    }
}

/// `[replication]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationConfig {
    /// `replication.redis`: `redis://[[user]:password@]host[:port][/db]`.
    pub redis: RedisUrl,
    /// `replication.stream`: the stream key; the marker, lease and epoch keys are derived
    /// from it (`<stream>:published`, `<stream>:lease:<node>`, `<stream>:epoch`).
    pub stream: String,
    pub on_disconnect: OnDisconnect,
    /// `replication.timeout`: bound on connect and on each reply.
    pub timeout: Duration,
    /// `replication.caps` (on by default): frequency-cap counts exchanged between the nodes
    /// ([`caps`]).
    pub caps: Option<caps::CapsConfig>,
}

/// The Redis keys of one deployment.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    pub stream: String,
    pub published: String,
    pub epoch: String,
    pub lease: String,
    /// Node → the lease token of the journal that published as that node.
    pub owners: String,
}

impl Keys {
    fn new(stream: &str, node: &str) -> Keys {
        Keys {
            stream: stream.to_owned(),
            published: format!("{stream}:published"),
            epoch: format!("{stream}:epoch"),
            lease: format!("{stream}:lease:{node}"),
            owners: format!("{stream}:owners"),
        }
    }
}

/// Why replication is blocked: a condition only an operator can clear (module docs). The
/// `reason` label of `consentgate_replication_blocked`; the full text, naming the keys, ids
/// and files involved, is in `/readyz` and the ERROR log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockReason {
    /// Publisher: another process holds this node's lease — two gateways run with one
    /// `[node] id`. Retried: clears once the other process stops.
    LeaseHeld,
    /// Publisher: the stream's published-through marker for this node is past what its
    /// journal holds (the journal was lost or replaced by an older copy, or another node uses
    /// the same id). Recorded in `<journal>/replication.blocked`.
    JournalBehindMarker,
    /// Publisher: another journal has published as this node (its lease token differs).
    /// Recorded in `<journal>/replication.blocked`.
    OtherJournal,
    /// Publisher: `<journal>/replication.blocked`, left by an earlier run, holds a reason
    /// this build does not recognise.
    Recorded,
    /// Reader: the stream was trimmed past what this node holds; cleared by loading a
    /// snapshot built after the trim.
    StreamTrimmed,
    /// Reader: an entry written by a newer version; cleared by upgrading this node.
    NewerSchema,
}

impl BlockReason {
    pub const ALL: [BlockReason; 6] = [
        BlockReason::LeaseHeld,
        BlockReason::JournalBehindMarker,
        BlockReason::OtherJournal,
        BlockReason::Recorded,
        BlockReason::StreamTrimmed,
        BlockReason::NewerSchema,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            BlockReason::LeaseHeld => "lease_held",
            BlockReason::JournalBehindMarker => "journal_behind_marker",
            BlockReason::OtherJournal => "other_journal",
            BlockReason::Recorded => "recorded",
            BlockReason::StreamTrimmed => "stream_trimmed",
            BlockReason::NewerSchema => "newer_schema",
        }
    }
}

/// Replication's state, shared with `/readyz` and the metrics.
#[derive(Debug)]
pub struct Status {
    on_disconnect: OnDisconnect,
    publisher: AtomicBool,
    reader: AtomicBool,
    /// The reader has tried to connect at least once.
    attempted: AtomicBool,
    /// 0 not yet, 1 caught up with the head seen at the last connect.
    caught_up: AtomicU8,
    /// Conditions an operator must clear, by who raised them (`publisher`, `reader`), with
    /// the text `/readyz` shows. A std Mutex: held for a few assignments, never across an
    /// await.
    blocked: Mutex<Vec<(&'static str, BlockReason, String)>>,
    last_error: Mutex<Option<String>>,
    /// The frequency-cap exchange's (with `replication.caps`): not ready until it has
    /// caught up once (the day's counts loaded).
    caps: std::sync::OnceLock<Arc<caps::CapsStatus>>,
}

impl Status {
    fn new(on_disconnect: OnDisconnect) -> Status {
        Status {
            on_disconnect,
            publisher: AtomicBool::new(false),
            reader: AtomicBool::new(false),
            attempted: AtomicBool::new(false),
            caught_up: AtomicU8::new(0),
            blocked: Mutex::new(Vec::new()),
            last_error: Mutex::new(None),
            caps: std::sync::OnceLock::new(),
        }
    }

    fn set_connected(&self, conn: &'static str, up: bool) {
        let flag = if conn == "publisher" { &self.publisher } else { &self.reader };
        flag.store(up, Ordering::Release);
        metrics::gauge!(m::REPLICATION_CONNECTED, "conn" => conn).set(if up { 1.0 } else { 0.0 });
    }

    fn set_caught_up(&self, yes: bool) {
        self.caught_up.store(yes as u8, Ordering::Release);
    }

    /// Sets or clears `who`'s blocking condition, and `consentgate_replication_blocked`;
    /// true if it is newly set or changed.
    fn set_blocked(&self, who: &'static str, why: Option<(BlockReason, String)>) -> bool {
        let mut b = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        let before = b.iter().find(|(w, ..)| *w == who).map(|(_, r, t)| (*r, t.clone()));
        b.retain(|(w, ..)| *w != who);
        let changed = why.is_some() && before != why;
        if let Some((reason, text)) = why {
            b.push((who, reason, text));
        }
        for reason in BlockReason::ALL {
            let on = b.iter().any(|(_, r, _)| *r == reason);
            metrics::gauge!(m::REPLICATION_BLOCKED, "reason" => reason.label()).set(if on { 1.0 } else { 0.0 });
        }
        changed
    }

    fn set_error(&self, e: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = e;
    }

    /// Whether the reader has caught up with the stream (since its last connect).
    pub fn caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Acquire) == 1
    }

    /// Whether both connections are up.
    pub fn connected(&self) -> bool {
        self.publisher.load(Ordering::Acquire) && self.reader.load(Ordering::Acquire)
    }

    /// Ready as far as replication is concerned, and the JSON `/readyz` shows.
    pub fn readiness(&self) -> (bool, Value) {
        let publisher = self.publisher.load(Ordering::Acquire);
        let reader = self.reader.load(Ordering::Acquire);
        let caught_up = self.caught_up();
        let blocked: Vec<String> =
            self.blocked.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(.., t)| t.clone()).collect();
        let (caps_ok, caps) = match self.caps.get() {
            Some(c) => {
                let (ok, body) = c.readiness();
                (ok, body)
            }
            None => (true, Value::Null),
        };
        let ok = blocked.is_empty()
            && caps_ok
            && match self.on_disconnect {
                OnDisconnect::Unready => publisher && reader && caught_up,
                // Reachable: wait for the catch-up; unreachable: serve on local state.
                OnDisconnect::Serve => self.attempted.load(Ordering::Acquire) && (caught_up || !reader),
            };
        let body = json!({
            "ok": ok,
            "on_disconnect": self.on_disconnect.as_str(),
            "publisher_connected": publisher,
            "reader_connected": reader,
            "caught_up": caught_up,
            "blocked": blocked,
            "caps": caps,
            "error": self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        });
        (ok, body)
    }
}

/// The running replication tasks.
pub struct Replication {
    pub status: Arc<Status>,
    /// The frequency-cap exchange's, when `replication.caps` is on.
    pub caps: Option<Arc<caps::CapsStatus>>,
    tasks: Vec<JoinHandle<()>>,
}

/// What both tasks share.
pub(crate) struct Ctx {
    pub cfg: ReplicationConfig,
    pub keys: Keys,
    pub store: Arc<ConsentStore>,
    pub status: Arc<Status>,
}

impl Replication {
    /// Starts the publisher and the reader. `stop` turning true ends them (the publisher
    /// first sends what is already durable; the gateway waits 3 s for both, then aborts them).
    ///
    /// Needs the store's journal (config validation requires `consent.journal`).
    /// With `replication.caps`, also the frequency-cap exchange over `engine`'s tables
    /// ([`caps`]), told when the restored `frequency.state` was saved (`restored_at_s`).
    pub fn start(
        cfg: ReplicationConfig,
        store: Arc<ConsentStore>,
        engine: Arc<crate::policy::EngineCell>,
        restored_at_s: Option<i64>,
        stop: watch::Receiver<bool>,
    ) -> Replication {
        let status = Arc::new(Status::new(cfg.on_disconnect));
        for conn in ["publisher", "reader"] {
            metrics::gauge!(m::REPLICATION_CONNECTED, "conn" => conn).set(0.0);
        }
        for d in ["published", "applied", "duplicate", "invalid"] {
            metrics::counter!(m::REPLICATION_STATEMENTS_TOTAL, "direction" => d).increment(0);
        }
        for reason in BlockReason::ALL {
            metrics::gauge!(m::REPLICATION_BLOCKED, "reason" => reason.label()).set(0.0);
        }
        let keys = Keys::new(&cfg.stream, store.node().as_str());
        tracing::info!(redis = %cfg.redis, stream = %cfg.stream, node = %store.node(), on_disconnect = cfg.on_disconnect.as_str(), "replication starting");
        let mut caps_status = None;
        let mut tasks = Vec::new();
        if let Some(c) = cfg.caps {
            let (s, task) = caps::start(cfg.clone(), c, store.node().as_str(), engine, restored_at_s, stop.clone());
            let _ = status.caps.set(s.clone());
            caps_status = Some(s);
            tasks.push(task);
        }
        let ctx = Arc::new(Ctx { cfg, keys, store, status: status.clone() });
        tasks.push(tokio::spawn(publisher::run(ctx.clone(), stop.clone())));
        tasks.push(tokio::spawn(reader::run(ctx, stop)));
        Replication { status, caps: caps_status, tasks }
    }

    /// Waits for both tasks to end (after `stop`), at most `limit`.
    pub async fn join(self, limit: Duration) {
        let aborts: Vec<_> = self.tasks.iter().map(|t| t.abort_handle()).collect();
        let all = async {
            for t in self.tasks {
                let _ = t.await;
            }
        };
        if tokio::time::timeout(limit, all).await.is_err() {
            tracing::warn!("replication tasks did not stop in time; aborted");
            for a in aborts {
                a.abort();
            }
        }
    }
}

/// What the reader starts from: the journal's per-origin marks raised by the serving
/// snapshot's.
pub(crate) fn known_marks(store: &ConsentStore) -> Watermarks {
    let mut w = store.replayed_marks().clone();
    if let Some(l) = store.current().as_deref() {
        for (origin, seq) in l.snapshot.info().watermarks.iter() {
            if seq > w.get(origin) {
                w.insert(origin.clone(), seq);
            }
        }
    }
    w
}

/// A bounded label for an error.
pub(crate) fn error_kind(e: &resp::RedisError) -> &'static str {
    match e {
        resp::RedisError::Connect { .. } => "connect",
        resp::RedisError::Timeout(_) => "timeout",
        resp::RedisError::Io(_) => "io",
        resp::RedisError::Protocol(_) => "protocol",
        resp::RedisError::Server(_) => "server",
    }
}

/// Sleeps `d` unless `stop` turns true first; true if stopping.
pub(crate) async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    let stopped = tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stop.wait_for(|s| *s) => true,
    };
    stopped || *stop.borrow()
}

/// A random token (lease values, epochs).
pub(crate) fn token() -> String {
    let mut b = [0u8; 16];
    // SAFETY: `b` is writable for its length; getrandom writes at most that many bytes.
    #[allow(unsafe_code)]
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        // No entropy source: time and pid are unique enough for a lease holder.
        let t = crate::time::Clock::system().now().unix_ms as u128 ^ ((std::process::id() as u128) << 64);
        b = t.to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}
