//! Frequency caps across nodes (architecture §8): each node decides step 8 on its own tables
//! — never a network round trip on a message's path — and the nodes exchange what they
//! counted through the Redis they already share.
//!
//! Every `replication.caps_interval` (100 ms by default) the exchange task of each node
//! * sends the marks of the messages its step 8 allowed since the last send
//!   ([`crate::policy::frequency::Mark`], 24 bytes each) as one entry of the stream
//!   `<replication.stream>:caps` (`XADD … MINID ~ <now − 48 h>`: the stream holds two days),
//!   fields `o` (the node id) and `d` (the marks);
//! * reads the entries after its cursor and counts the other nodes' marks into its own
//!   tables ([`Frequency::apply_remote`]), as if it had allowed those messages itself.
//!
//! So each node's tables hold its own counts plus what the others reported. **The bound on
//! overshoot**: a message allowed on one node reaches the others' tables at most
//! `2 × caps_interval` plus one Redis round trip later (one interval until its node sends it,
//! one until the others read it); a subscriber messaged at `r` messages a second through the
//! other nodes can get `⌈r × (2 × caps_interval + RTT)⌉` messages over a cap, and none when
//! its messages are further apart than that (`tests/caps_nodes.rs` measures both).
//!
//! **Start.** The day's counts come from the stream before the node is ready (`/readyz`
//! `caps.caught_up`): the reader starts at the stream's beginning and applies every entry up
//! to the head seen at connect — except what the restored `frequency.state` already holds
//! (entries older than the file; the file lags the stream by at most one read interval, so a
//! restart can under-count that much). Own entries are applied in this pass only (they are a
//! previous run's: this run sends nothing before it has caught up); afterwards own entries
//! are skipped, their counts being local already.
//!
//! **Redis down.** Decisions go on with what the node has; its marks queue (bounded, the
//! oldest dropped past 4 M, counted) and are sent on reconnect. `caps_on_disconnect`:
//! `local` keeps the caps as configured (a subscriber can get up to N × cap over N nodes
//! while it lasts), `divide` reads every cap as `cap / N` (N = the nodes seen in the stream,
//! at least 1) — never over, but refusing early under skew. `consentgate_caps_exchange_connected`
//! is 0 meanwhile (alert `ConsentgateCapsExchangeDown`).
//!
//! **Cost to Redis** per million allowed commercial messages: 24.9 MB of memory (measured
//! with `MEMORY USAGE` on 1 000 entries of 1 000 marks; kept two days), one `XADD` per
//! [`MARKS_PER_ENTRY`] marks and one `XREAD` per node per interval.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value as Json};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::entry::EntryId;
use super::resp::{Conn, RedisError, Value};
use super::{error_kind, sleep_or_stop, ReplicationConfig, FIRST_BACKOFF, MAX_BACKOFF};
use crate::policy::frequency::Mark;
use crate::policy::EngineCell;
use crate::telemetry::metrics as m;

/// Default `replication.caps_interval`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(100);
/// How long the stream keeps entries (a local day anywhere is covered).
const RETAIN_MS: u64 = 48 * 3600 * 1000;
/// Marks per entry: 32 768 × 24 bytes = 768 KiB, under the largest bulk string the reply
/// parser takes (1 MiB; 65 536 marks per entry did not parse: the exchange disconnected as
/// soon as one interval held more than 43 690 allowed messages, ~437 k/s at 100 ms).
const MARKS_PER_ENTRY: usize = 32_768;
/// Entries per read: 16 full entries are 12 MiB, under the largest reply (16 MiB).
const READ_COUNT: usize = 16;
const _: () = assert!(
    MARKS_PER_ENTRY * Mark::BYTES < super::resp::MAX_BULK
        && READ_COUNT * (MARKS_PER_ENTRY * Mark::BYTES + 1024) < super::resp::MAX_REPLY
);

/// `replication.caps_on_disconnect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapsOnDisconnect {
    /// Keep the caps as configured on the node's own counts.
    Local,
    /// Read each cap as `cap / N` (N = nodes seen in the stream).
    Divide,
}

impl CapsOnDisconnect {
    pub fn parse(s: &str) -> Option<CapsOnDisconnect> {
        match s {
            "local" => Some(CapsOnDisconnect::Local),
            "divide" => Some(CapsOnDisconnect::Divide),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CapsOnDisconnect::Local => "local",
            CapsOnDisconnect::Divide => "divide",
        }
    }
}

/// The caps part of `[replication]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapsConfig {
    pub interval: Duration,
    pub on_disconnect: CapsOnDisconnect,
}

/// The exchange's state for `/readyz` and the metrics.
#[derive(Debug, Default)]
pub struct CapsStatus {
    connected: AtomicBool,
    caught_up: AtomicBool,
    /// Tried to connect at least once.
    attempted: AtomicBool,
}

impl CapsStatus {
    pub fn caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Acquire)
    }

    /// Ready as far as the caps are concerned: caught up with the stream once since start,
    /// or Redis unreachable (then the node decides on its own counts, as
    /// `caps_on_disconnect` says; `replication.on_disconnect = "unready"` still makes it
    /// unready), and the JSON `/readyz` shows.
    pub fn readiness(&self) -> (bool, Json) {
        let (c, u) = (self.connected.load(Ordering::Acquire), self.caught_up());
        let ok = u || (self.attempted.load(Ordering::Acquire) && !c);
        (ok, json!({"connected": c, "caught_up": u}))
    }
}

/// What the task needs.
struct Ctx {
    cfg: ReplicationConfig,
    caps: CapsConfig,
    key: String,
    node: String,
    engine: Arc<EngineCell>,
    status: Arc<CapsStatus>,
    /// When the restored `frequency.state` was written, Unix ms (0: nothing restored).
    restored_ms: u64,
}

/// Starts the exchange task; `stop` turning true ends it after one last send.
pub fn start(
    cfg: ReplicationConfig,
    caps: CapsConfig,
    node: &str,
    engine: Arc<EngineCell>,
    restored_at_s: Option<i64>,
    stop: watch::Receiver<bool>,
) -> (Arc<CapsStatus>, JoinHandle<()>) {
    let status = Arc::new(CapsStatus::default());
    metrics::gauge!(m::CAPS_EXCHANGE_CONNECTED).set(0.0);
    for d in ["sent", "applied", "dropped"] {
        metrics::counter!(m::CAPS_EXCHANGE_MARKS_TOTAL, "direction" => d).increment(0);
    }
    let key = format!("{}:caps", cfg.stream);
    // Collect from now on: nothing allowed while the task catches up is lost.
    if let Some(f) = engine.load().frequency() {
        f.outbox().enable();
    }
    info!(key = %key, interval_ms = caps.interval.as_millis() as u64, on_disconnect = caps.on_disconnect.as_str(), "frequency-cap exchange starting");
    let restored_ms = restored_at_s.map_or(0, |s| (s.max(0) as u64).saturating_mul(1000));
    let ctx = Arc::new(Ctx { cfg, caps, key, node: node.to_owned(), engine, status: status.clone(), restored_ms });
    (status, tokio::spawn(run(ctx, stop)))
}

/// What survives a reconnect.
struct Follow {
    cursor: EntryId,
    nodes: BTreeSet<String>,
    /// Dropped marks already counted in the metric.
    dropped_seen: u64,
}

async fn run(ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>) {
    let mut f = Follow { cursor: EntryId::ZERO, nodes: BTreeSet::from([ctx.node.clone()]), dropped_seen: 0 };
    let mut backoff = FIRST_BACKOFF;
    let mut failures = 0u64;
    loop {
        let r = session(&ctx, &mut f, &mut stop).await;
        set_connected(&ctx, &f, false);
        ctx.status.attempted.store(true, Ordering::Release);
        match r {
            Ok(()) => return,
            Err(e) => {
                failures += 1;
                metrics::counter!(m::REPLICATION_ERRORS_TOTAL, "kind" => error_kind(&e)).increment(1);
                if failures == 1 || failures.is_power_of_two() {
                    warn!(error = %e, failures, on_disconnect = ctx.caps.on_disconnect.as_str(), "frequency-cap exchange disconnected; deciding on this node's counts");
                }
            }
        }
        if sleep_or_stop(backoff, &mut stop).await {
            return;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn set_connected(ctx: &Ctx, f: &Follow, up: bool) {
    ctx.status.connected.store(up, Ordering::Release);
    metrics::gauge!(m::CAPS_EXCHANGE_CONNECTED).set(if up { 1.0 } else { 0.0 });
    let divisor = if !up && ctx.caps.on_disconnect == CapsOnDisconnect::Divide { f.nodes.len() as u32 } else { 1 };
    if let Some(fr) = ctx.engine.load().frequency() {
        fr.outbox().set_divisor(divisor);
    }
}

async fn session(ctx: &Ctx, f: &mut Follow, stop: &mut watch::Receiver<bool>) -> Result<(), RedisError> {
    let mut c = Conn::connect(&ctx.cfg.redis, ctx.cfg.timeout).await?;
    // The head at connect: caught up once the cursor reaches it.
    let head = match c.cmd(&[b"XREVRANGE", ctx.key.as_bytes(), b"+", b"-", b"COUNT", b"1"]).await? {
        Value::Array(es) => es.first().and_then(entry_id).unwrap_or(EntryId::ZERO),
        _ => EntryId::ZERO,
    };
    set_connected(ctx, f, true);
    loop {
        // Read everything new.
        loop {
            let cursor = f.cursor.to_string();
            let reply = c
                .cmd(&[
                    b"XREAD",
                    b"COUNT",
                    READ_COUNT.to_string().as_bytes(),
                    b"STREAMS",
                    ctx.key.as_bytes(),
                    cursor.as_bytes(),
                ])
                .await?;
            let entries = stream_entries(&reply)?;
            let n = entries.len();
            let catching_up = !ctx.status.caught_up();
            let mut applied = 0u64;
            let engine = ctx.engine.load();
            let fr = engine.frequency();
            if let Some(fr) = fr {
                // A reload that turned the caps on made a new outbox.
                fr.outbox().enable();
            }
            for e in entries {
                let Some(id) = entry_id(e) else { continue };
                f.cursor = id;
                let (origin, marks) = match fields(e) {
                    Some((o, d)) => (o, Mark::decode_all(d)),
                    None => continue,
                };
                if !f.nodes.contains(origin) {
                    f.nodes.insert(origin.to_owned());
                }
                let own = origin == ctx.node;
                // Own entries only while catching up (a previous run's); anything the
                // restored state file holds is skipped.
                if (own && !catching_up) || (catching_up && id.ms <= ctx.restored_ms) {
                    continue;
                }
                let (Some(marks), Some(fr)) = (marks, fr) else { continue };
                for mk in &marks {
                    fr.apply_remote(mk);
                }
                applied += marks.len() as u64;
            }
            if applied > 0 {
                metrics::counter!(m::CAPS_EXCHANGE_MARKS_TOTAL, "direction" => "applied").increment(applied);
            }
            if catching_up && f.cursor >= head {
                ctx.status.caught_up.store(true, Ordering::Release);
                info!(cursor = %f.cursor, nodes = f.nodes.len(), "frequency-cap exchange caught up");
            }
            if n < 200 {
                break;
            }
        }
        // Send this node's marks (only once caught up: see the module docs).
        if ctx.status.caught_up() {
            send(&mut c, ctx, f).await?;
        }
        if sleep_or_stop(ctx.caps.interval, stop).await {
            // The last marks before the stop.
            if ctx.status.caught_up() {
                send(&mut c, ctx, f).await?;
            }
            return Ok(());
        }
    }
}

async fn send(c: &mut Conn, ctx: &Ctx, f: &mut Follow) -> Result<(), RedisError> {
    let engine = ctx.engine.load();
    let Some(fr) = engine.frequency() else { return Ok(()) };
    let dropped = fr.outbox().dropped();
    if dropped > f.dropped_seen {
        metrics::counter!(m::CAPS_EXCHANGE_MARKS_TOTAL, "direction" => "dropped").increment(dropped - f.dropped_seen);
        f.dropped_seen = dropped;
    }
    let marks = fr.outbox().take();
    if marks.is_empty() {
        return Ok(());
    }
    let now = crate::time::Clock::system().now().unix_ms.max(0) as u64;
    let minid = format!("{}-0", now.saturating_sub(RETAIN_MS));
    for (i, chunk) in marks.chunks(MARKS_PER_ENTRY).enumerate() {
        let mut blob = Vec::with_capacity(chunk.len() * Mark::BYTES);
        for mk in chunk {
            mk.encode(&mut blob);
        }
        let r = c
            .cmd(&[
                b"XADD",
                ctx.key.as_bytes(),
                b"MINID",
                b"~",
                minid.as_bytes(),
                b"*",
                b"o",
                ctx.node.as_bytes(),
                b"d",
                &blob,
            ])
            .await;
        if let Err(e) = r {
            // Not sent: back in front of the queue, sent after the reconnect.
            fr.outbox().put_back(marks[i * MARKS_PER_ENTRY..].to_vec());
            return Err(e);
        }
        metrics::counter!(m::CAPS_EXCHANGE_MARKS_TOTAL, "direction" => "sent").increment(chunk.len() as u64);
    }
    Ok(())
}

/// The entries of an `XREAD` reply for one stream (empty on nil).
fn stream_entries(reply: &Value) -> Result<Vec<&Value>, RedisError> {
    match reply {
        Value::Nil => Ok(Vec::new()),
        Value::Array(streams) => streams
            .first()
            .and_then(|s| match s {
                Value::Array(pair) if pair.len() == 2 => match &pair[1] {
                    Value::Array(es) => Some(es.iter().collect()),
                    _ => None,
                },
                _ => None,
            })
            .ok_or_else(|| RedisError::Protocol("XREAD reply is not [[stream, entries]]".into())),
        other => Err(RedisError::Protocol(format!("XREAD answered {other:?}"))),
    }
}

fn entry_id(e: &Value) -> Option<EntryId> {
    match e {
        Value::Array(p) if p.len() == 2 => EntryId::parse(p[0].as_str()?),
        _ => None,
    }
}

/// The `o` and `d` fields of an entry.
fn fields(e: &Value) -> Option<(&str, &[u8])> {
    let Value::Array(p) = e else { return None };
    let Value::Array(kv) = p.get(1)? else { return None };
    let (mut o, mut d) = (None, None);
    for pair in kv.chunks_exact(2) {
        match pair[0].as_bytes()? {
            b"o" => o = pair[1].as_str(),
            b"d" => d = pair[1].as_bytes(),
            _ => {}
        }
    }
    Some((o?, d?))
}
