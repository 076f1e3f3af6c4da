//! The publisher: this node's durable statements into the stream, with the node's
//! published-through marker in the same script (module docs of [`super`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{error, info, warn};

use super::resp::{Conn, RedisError, Value};
use super::{entry, error_kind, sleep_or_stop, token, BlockReason, Ctx, FIRST_BACKOFF, MAX_BACKOFF, PUBLISH_BATCH};
use crate::consent::store::OutboxTake;
use crate::consent::Statement;
use crate::telemetry::metrics as m;

/// Lease time-to-live and refresh period.
const LEASE_TTL: Duration = Duration::from_secs(15);
const LEASE_REFRESH: Duration = Duration::from_secs(5);
/// Refreshes the lease only if this process holds it (1), else 0.
const REFRESH_LEASE: &[u8] =
    b"if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end";
/// Deletes the lease only if this process holds it (a clean stop: the next start of this
/// node need not wait for the TTL).
const RELEASE_LEASE: &[u8] =
    b"if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

/// Why a publishing session ended.
enum End {
    Stop,
    Redis(RedisError),
    /// Needs an operator: the reason goes to `/readyz`; retried (another process may let the
    /// lease go).
    Blocked(String),
    /// Needs an operator and is not retried: kept in the journal directory
    /// ([`BLOCKED_FILE`]) so a restart does not clear it either.
    Fatal(BlockReason, String),
    Journal(String),
}

impl From<RedisError> for End {
    fn from(e: RedisError) -> End {
        End::Redis(e)
    }
}

/// In the journal directory: why this node must not publish, until an operator deletes it.
pub const BLOCKED_FILE: &str = "replication.blocked";

pub(super) async fn run(ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>) {
    let Some(outbox) = ctx.store.outbox() else {
        error!("replication needs consent.journal; publisher not started");
        return;
    };
    let blocked_file = ctx.store.journal_dir().map(|d| d.join(BLOCKED_FILE));
    if let Some(why) = blocked_file.as_ref().and_then(|f| std::fs::read_to_string(f).ok()) {
        let why = why.trim().to_owned();
        return fatal(&ctx, recorded_reason(&why), why, blocked_file.as_deref(), &mut stop).await;
    }
    let (lease, kept) = lease_token(&ctx);
    let mut backoff = FIRST_BACKOFF;
    let mut failures = 0u64;
    loop {
        let mut connected = false;
        let end = session(&ctx, &outbox, &lease, kept, &mut stop, &mut connected).await;
        ctx.status.set_connected("publisher", false);
        let (kind, msg) = match end {
            End::Stop => break,
            End::Redis(e) => (error_kind(&e), e.to_string()),
            End::Journal(e) => ("journal", e),
            End::Blocked(why) => {
                error!(reason = %why, "replication publisher blocked; retrying");
                ctx.status.set_blocked("publisher", Some((BlockReason::LeaseHeld, why.clone())));
                ("blocked", why)
            }
            End::Fatal(reason, why) => {
                if let Some(f) = &blocked_file {
                    if let Err(e) = std::fs::write(f, format!("{why}\n")) {
                        error!(file = %f.display(), error = %e, "cannot record why replication is blocked");
                    }
                }
                metrics::counter!(m::REPLICATION_ERRORS_TOTAL, "conn" => "publisher", "kind" => "blocked").increment(1);
                return fatal(&ctx, reason, why, blocked_file.as_deref(), &mut stop).await;
            }
        };
        if connected {
            backoff = FIRST_BACKOFF;
            failures = 0;
        }
        failures += 1;
        metrics::counter!(m::REPLICATION_ERRORS_TOTAL, "conn" => "publisher", "kind" => kind).increment(1);
        ctx.status.set_error(Some(format!("publisher: {msg}")));
        // The first failure of an episode, then about every half minute.
        if failures == 1 || failures % 6 == 0 {
            warn!(error = %msg, failures, retry_in_ms = backoff.as_millis() as u64, "replication publisher disconnected; statements stay queued in the journal");
        }
        if sleep_or_stop(backoff, &mut stop).await {
            break;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Publishes nothing until the process stops, with the reason (and the file to delete once
/// it is fixed) in `/readyz`.
async fn fatal(
    ctx: &Ctx,
    reason: BlockReason,
    why: String,
    file: Option<&std::path::Path>,
    stop: &mut watch::Receiver<bool>,
) {
    let why = match file {
        Some(f) => format!("{why} (publishing stopped; delete {} once fixed, then restart)", f.display()),
        None => why,
    };
    error!(reason = %why, "replication publisher stopped");
    ctx.status.set_blocked("publisher", Some((reason, why)));
    let _ = stop.wait_for(|s| *s).await;
}

/// One connection's life: connect, lease, republish from the marker, then follow the outbox.
async fn session(
    ctx: &Ctx,
    outbox: &crate::consent::store::Outbox,
    lease: &str,
    lease_kept: bool,
    stop: &mut watch::Receiver<bool>,
    connected: &mut bool,
) -> End {
    let t = ctx.cfg.timeout;
    let mut c = match Conn::connect(&ctx.cfg.redis, t).await {
        Ok(c) => c,
        Err(e) => return e.into(),
    };
    if let Err(e) = take_lease(&mut c, ctx, lease).await {
        return e;
    }
    let node = ctx.store.node().clone();
    let marker = match c.cmd(&[b"HGET", ctx.keys.published.as_bytes(), node.as_str().as_bytes()]).await {
        Ok(v) => v.as_int().unwrap_or(0).max(0) as u64,
        Err(e) => return e.into(),
    };
    let durable = ctx.store.durable_seq();
    if marker > durable {
        return End::Fatal(BlockReason::JournalBehindMarker, journal_behind(&node, marker, durable));
    }
    // The journal that published as this node before, named by its lease token (kept in the
    // journal directory): another one with the same id would publish statements whose
    // identities the first already used, and once its seqs pass the marker the check above
    // no longer sees it.
    if lease_kept {
        let owners = ctx.keys.owners.as_bytes();
        match c.cmd(&[b"HGET", owners, node.as_str().as_bytes()]).await {
            Ok(v) if v.as_bytes().is_some_and(|t| t != lease.as_bytes()) => {
                return End::Fatal(BlockReason::OtherJournal, other_journal(&node));
            }
            // None yet: the first batch this journal publishes names it (in the script).
            Ok(_) => {}
            Err(e) => return e.into(),
        }
    }
    ctx.status.set_blocked("publisher", None);
    ctx.status.set_connected("publisher", true);
    let owner = if lease_kept { lease } else { "" };
    ctx.status.set_error(None);
    info!(marker, durable, "replication publisher connected");
    // Reset the outbox before reading the journal: anything durable after this is in both.
    outbox.reset();
    let mut through = marker;
    if let Err(e) = republish(ctx, &mut c, lease, owner, &mut through).await {
        return e;
    }
    // Only now does the back-off start over: a session that fails before it has republished
    // (a full Redis, a marker the script refuses) keeps backing off.
    *connected = true;
    let mut lease_at = Instant::now();
    let mut stopping = false;
    loop {
        let got = tokio::select! {
            g = outbox.take(PUBLISH_BATCH, Duration::from_millis(500)) => g,
            _ = stop.wait_for(|s| *s), if !stopping => { stopping = true; continue }
            e = c.closed() => return e.into(),
        };
        match got {
            OutboxTake::Overflowed => {
                warn!(through, "replication outbox overflowed; re-reading the journal");
                outbox.reset();
                if let Err(e) = republish(ctx, &mut c, lease, owner, &mut through).await {
                    return e;
                }
            }
            OutboxTake::Statements(v) => {
                let v: Vec<Statement> = v.into_iter().filter(|s| s.id.seq > through).collect();
                if !v.is_empty() {
                    if let Err(e) = send(ctx, &mut c, lease, owner, through, &v).await {
                        return e;
                    }
                    through = v[v.len() - 1].id.seq;
                } else if stopping {
                    // The outbox is empty, but a statement can be durable and not yet in it
                    // (the writer marks a batch durable, then hands it over): send what the
                    // journal holds up to the durable point before letting the lease go.
                    if let Err(e) = republish(ctx, &mut c, lease, owner, &mut through).await {
                        return e;
                    }
                    let _ = c.cmd(&[b"EVAL", RELEASE_LEASE, b"1", ctx.keys.lease.as_bytes(), lease.as_bytes()]).await;
                    return End::Stop;
                }
            }
        }
        metrics::gauge!(m::REPLICATION_UNPUBLISHED).set(outbox.len() as f64);
        if lease_at.elapsed() >= LEASE_REFRESH {
            let ttl = LEASE_TTL.as_millis().to_string();
            let r = c
                .cmd(&[b"EVAL", REFRESH_LEASE, b"1", ctx.keys.lease.as_bytes(), lease.as_bytes(), ttl.as_bytes()])
                .await;
            match r {
                Ok(Value::Int(1)) => lease_at = Instant::now(),
                Ok(_) => return End::Blocked(lease_lost(ctx)),
                Err(e) => return e.into(),
            }
            // The marker behind what was sent (FLUSHALL, a failover with the connection kept):
            // reconnect, which republishes from the marker.
            let m = match c.cmd(&[b"HGET", ctx.keys.published.as_bytes(), node.as_str().as_bytes()]).await {
                Ok(v) => v.as_int().unwrap_or(0).max(0) as u64,
                Err(e) => return e.into(),
            };
            if m < through {
                warn!(
                    marker = m,
                    sent_through = through,
                    "the stream lost statements this node published; republishing"
                );
                return End::Redis(RedisError::Protocol(format!("published-through marker {m} behind {through}")));
            }
        }
    }
}

/// The text of [`BlockReason::JournalBehindMarker`].
fn journal_behind(node: &crate::consent::NodeId, marker: u64, durable: u64) -> String {
    format!(
        "the stream says node `{node}` published through seq {marker} but its journal is durable only through {durable}: \
         the journal was lost or replaced by an older copy, or another node uses the same [node] id; \
         statements recorded here now would reuse published identities"
    )
}

/// The text of [`BlockReason::OtherJournal`].
fn other_journal(node: &crate::consent::NodeId) -> String {
    format!(
        "node `{node}` has published from another journal (its lease token differs from this journal's \
         replication.lease): two journals with one [node] id would reuse statement identities; give this \
         node its own id"
    )
}

/// The reason a [`BLOCKED_FILE`] left by an earlier run records (the file holds the text
/// only, as [`journal_behind`] and [`other_journal`] wrote it).
fn recorded_reason(text: &str) -> BlockReason {
    if text.contains("published through seq") {
        BlockReason::JournalBehindMarker
    } else if text.contains("has published from another journal") {
        BlockReason::OtherJournal
    } else {
        BlockReason::Recorded
    }
}

fn lease_lost(ctx: &Ctx) -> String {
    format!(
        "another process holds the lease {} for node `{}`: two gateways share one [node] id (each needs its own, and its own journal)",
        ctx.keys.lease,
        ctx.store.node()
    )
}

/// The lease token: kept in the journal directory (`replication.lease`), so this node —
/// this journal — restarted after a crash holds its lease again at once, while another
/// process with the same node id and another journal does not. A fresh random one if the
/// file cannot be read or written (the lease then waits out its TTL after a crash). The
/// token also names the journal in `<stream>:owners`; `false` = not kept (no owner check).
fn lease_token(ctx: &Ctx) -> (String, bool) {
    let Some(dir) = ctx.store.journal_dir() else { return (token(), false) };
    let path = dir.join("replication.lease");
    if let Ok(t) = std::fs::read_to_string(&path) {
        let t = t.trim();
        if t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            return (t.to_owned(), true);
        }
    }
    let t = token();
    let kept = std::fs::write(&path, format!("{t}\n")).and_then(|()| std::fs::File::open(&path)?.sync_all());
    if let Err(e) = &kept {
        warn!(file = %path.display(), error = %e, "cannot keep the replication lease token; after a crash this node waits for its lease to expire");
    }
    (t, kept.is_ok())
}

async fn take_lease(c: &mut Conn, ctx: &Ctx, lease: &str) -> Result<(), End> {
    let ttl = LEASE_TTL.as_millis().to_string();
    let k = ctx.keys.lease.as_bytes();
    let set = c.cmd(&[b"SET", k, lease.as_bytes(), b"NX", b"PX", ttl.as_bytes()]).await?;
    if set != Value::Nil {
        return Ok(());
    }
    // Held: by this process (a reconnect within the TTL) or by another.
    match c.cmd(&[b"GET", k]).await? {
        v if v.as_bytes() == Some(lease.as_bytes()) => Ok(()),
        _ => Err(End::Blocked(lease_lost(ctx))),
    }
}

/// Sends every durable local statement above `through` from the journal.
async fn republish(ctx: &Ctx, c: &mut Conn, lease: &str, owner: &str, through: &mut u64) -> Result<(), End> {
    let Some(dir) = ctx.store.journal_dir().map(|d| d.to_owned()) else {
        return Err(End::Journal("no journal".into()));
    };
    let durable = ctx.store.durable_seq();
    if durable <= *through {
        return Ok(());
    }
    let node = ctx.store.node().clone();
    let after = *through;
    let read = tokio::task::spawn_blocking(move || crate::consent::journal::read_local(dir, &node, after, durable))
        .await
        .map_err(|e| End::Journal(e.to_string()))?
        .map_err(|e| End::Journal(e.to_string()))?;
    if !read.is_empty() {
        info!(from = after + 1, statements = read.len(), "replication: publishing from the journal");
    }
    for chunk in read.chunks(PUBLISH_BATCH) {
        send(ctx, c, lease, owner, *through, chunk).await?;
        *through = chunk[chunk.len() - 1].id.seq;
    }
    Ok(())
}

/// Appends a batch's entries and then moves the node's marker, in one script: Redis runs it
/// atomically (and replicates its effects as one unit), and an entry that fails stops it
/// *before* the marker moves — the entries already added are re-sent later (duplicates are
/// harmless), none is skipped. (A MULTI/EXEC would run the HSET even after a failed XADD.)
/// It runs only while this process holds the node's lease (a process paused past the TTL
/// while another took the id over writes nothing: fencing), and renews the lease last: Redis
/// checks maxmemory only at a script's first write, so the first write must be an XADD (a
/// full Redis then refuses the batch instead of growing past its limit). And only while the
/// marker is where this publisher left it: a marker that moved back under a connection that
/// stayed open (a failover to a replica that missed writes, behind a proxy) would otherwise be
/// moved past the statements the stream lost, and they would never be sent again; instead
/// the batch is refused (`MARKER n`) and the publisher reconnects and republishes from `n`.
/// A missing lease (expired, or the data wiped) is `LEASE expired`: reconnect and take it.
/// Each batch also names this journal as the node's owner (its lease token, when kept in the
/// journal directory; `''` = not kept), after the entries (the first write stays an XADD).
/// KEYS: stream, markers, lease, owners. ARGV: node, last seq, lease token, lease TTL ms, the
/// marker expected now, the owner token, then per entry its field count and its fields.
const PUBLISH: &[u8] = b"local l = redis.call('get', KEYS[3]) \
if l ~= ARGV[3] then \
  if l then return redis.error_reply('LEASE lost') end \
  return redis.error_reply('LEASE expired') \
end \
local m = tonumber(redis.call('hget', KEYS[2], ARGV[1]) or '0') \
if m ~= tonumber(ARGV[5]) then return redis.error_reply('MARKER ' .. tostring(m)) end \
local i = 7 \
while i <= #ARGV do \
  local n = tonumber(ARGV[i]) \
  redis.call('XADD', KEYS[1], '*', unpack(ARGV, i + 1, i + n)) \
  i = i + n + 1 \
end \
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2]) \
if ARGV[6] ~= '' then redis.call('HSET', KEYS[4], ARGV[1], ARGV[6]) end \
redis.call('pexpire', KEYS[3], ARGV[4]) \
return 1";

/// Publishes `sts` (local statements above `marker`, in order) if the node's marker in Redis
/// is still `marker`.
async fn send(ctx: &Ctx, c: &mut Conn, lease: &str, owner: &str, marker: u64, sts: &[Statement]) -> Result<(), End> {
    let k = &ctx.keys;
    let fields: Vec<Vec<(&'static str, String)>> = sts.iter().map(entry::fields).collect();
    let counts: Vec<String> = fields.iter().map(|f| (2 * f.len()).to_string()).collect();
    let last = sts[sts.len() - 1].id.seq.to_string();
    let mut args: Vec<&[u8]> = Vec::with_capacity(10 + sts.len() * 17);
    let ttl = LEASE_TTL.as_millis().to_string();
    let expected = marker.to_string();
    args.extend_from_slice(&[
        b"EVAL",
        PUBLISH,
        b"4",
        k.stream.as_bytes(),
        k.published.as_bytes(),
        k.lease.as_bytes(),
        k.owners.as_bytes(),
    ]);
    args.extend_from_slice(&[
        ctx.store.node().as_str().as_bytes(),
        last.as_bytes(),
        lease.as_bytes(),
        ttl.as_bytes(),
        expected.as_bytes(),
        owner.as_bytes(),
    ]);
    for (f, n) in fields.iter().zip(&counts) {
        args.push(n.as_bytes());
        for (name, v) in f {
            args.push(name.as_bytes());
            args.push(v.as_bytes());
        }
    }
    match c.cmd(&args).await {
        Ok(_) => {}
        Err(RedisError::Server(e)) if e.starts_with("LEASE lost") => return Err(End::Blocked(lease_lost(ctx))),
        Err(RedisError::Server(e)) if e.starts_with("MARKER") || e.starts_with("LEASE expired") => {
            warn!(reply = %e, expected_marker = marker, "replication: the stream is not where this node left it; reconnecting to republish");
            return Err(End::Redis(RedisError::Protocol(format!("publish refused: {e}"))));
        }
        Err(e) => return Err(e.into()),
    }
    metrics::counter!(m::REPLICATION_STATEMENTS_TOTAL, "direction" => "published").increment(sts.len() as u64);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A restart that finds `replication.blocked` labels the block as the run that wrote it did.
    #[test]
    fn a_recorded_block_keeps_its_reason() {
        let node = crate::consent::NodeId::parse("gw-1").unwrap();
        assert_eq!(recorded_reason(&journal_behind(&node, 9, 3)), BlockReason::JournalBehindMarker);
        assert_eq!(recorded_reason(&other_journal(&node)), BlockReason::OtherJournal);
        assert_eq!(recorded_reason("written by hand"), BlockReason::Recorded);
    }
}
