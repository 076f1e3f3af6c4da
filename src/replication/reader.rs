//! The reader: the whole stream, with this node's own cursor, applied to the delta and journal
//! (module docs of [`super`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{error, info, warn};

use super::entry::{self, EntryId};
use super::resp::{Conn, RedisError, Value};
use super::{
    error_kind, known_marks, sleep_or_stop, token, BlockReason, Ctx, BLOCK, FIRST_BACKOFF, MAX_BACKOFF, READ_COUNT,
};
use crate::consent::{Statement, Watermarks};
use crate::telemetry::metrics as m;

/// Clock difference to Redis above which a warning is logged (latest-wins compares `at`).
const SKEW_WARN_MS: i64 = 100;

/// What survives a reconnect.
struct Follow {
    cursor: EntryId,
    /// Highest origin seq held (journal or serving snapshot), per origin.
    known: Watermarks,
    /// Highest origin seq in this node's journal, per origin. Where the serving snapshot or
    /// the stream's trim marks are above it, the journal lacks statements (the reader skips
    /// what the snapshot holds, and cannot read what was trimmed): recorded as the journal's
    /// gap ([`crate::consent::snapshot::live::PARTIAL_FILE`]), so a build from this journal
    /// asks for a base that holds them.
    journaled: Watermarks,
    /// The gaps recorded so far.
    noted: Watermarks,
    epoch: Option<String>,
    /// When the reader was last caught up (lag while disconnected).
    caught_up_at: Instant,
    /// The store's snapshot swap count when `known` last took the snapshot's marks.
    swaps: u64,
}

pub(super) async fn run(ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>) {
    let swaps = ctx.store.swaps();
    let mut f = Follow {
        cursor: EntryId::ZERO,
        known: known_marks(&ctx.store),
        journaled: ctx.store.replayed_marks().clone(),
        noted: Watermarks::new(),
        epoch: None,
        caught_up_at: Instant::now(),
        swaps,
    };
    info!(known = %f.known, "replication reader starting from the stream's beginning; statements held are skipped");
    let mut backoff = FIRST_BACKOFF;
    let mut failures = 0u64;
    loop {
        let mut connected = false;
        let r = session(&ctx, &mut f, &mut stop, &mut connected).await;
        ctx.status.attempted.store(true, std::sync::atomic::Ordering::Release);
        ctx.status.set_connected("reader", false);
        ctx.status.set_caught_up(false);
        let e = match r {
            Ok(()) => break,
            Err(e) => e,
        };
        if connected {
            backoff = FIRST_BACKOFF;
            failures = 0;
        }
        failures += 1;
        metrics::counter!(m::REPLICATION_ERRORS_TOTAL, "conn" => "reader", "kind" => error_kind(&e)).increment(1);
        ctx.status.set_error(Some(format!("reader: {e}")));
        if failures == 1 || failures % 6 == 0 {
            warn!(error = %e, failures, retry_in_ms = backoff.as_millis() as u64, "replication reader disconnected; deciding on local state");
        }
        metrics::gauge!(m::REPLICATION_LAG_SECONDS).set(f.caught_up_at.elapsed().as_secs_f64());
        if sleep_or_stop(backoff, &mut stop).await {
            break;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn session(
    ctx: &Ctx,
    f: &mut Follow,
    stop: &mut watch::Receiver<bool>,
    connected: &mut bool,
) -> Result<(), RedisError> {
    let k = &ctx.keys;
    let mut c = Conn::connect(&ctx.cfg.redis, ctx.cfg.timeout).await?;
    // The stream's epoch: created once; a new one means the data was wiped.
    // A write: a full Redis (noeviction) refuses it, which must not stop the reading.
    match c.cmd(&[b"SET", k.epoch.as_bytes(), token().as_bytes(), b"NX"]).await {
        Ok(_) => {}
        Err(RedisError::Server(e)) => warn!(error = %e, "replication: cannot create the stream epoch; reading on"),
        Err(e) => return Err(e),
    }
    let epoch = c.cmd(&[b"GET", k.epoch.as_bytes()]).await?.as_str().map(str::to_owned);
    if f.epoch.is_some() && f.epoch != epoch {
        warn!(
            old = f.epoch.as_deref().unwrap_or("none"),
            new = epoch.as_deref().unwrap_or("none"),
            "replication stream epoch changed (Redis wiped?): re-reading from the start"
        );
        f.cursor = EntryId::ZERO;
    }
    f.epoch = epoch;
    check_clock(&mut c).await?;
    // Trimmed past what this node holds: it cannot catch up from the stream. Apply nothing
    // (that would leave a gap in its journal) until a newer snapshot covers the trim.
    let mut trimmed = super::ops::read_marks(&mut c, &super::ops::trimmed_key(&k.stream)).await?;
    loop {
        refresh_known(ctx, f);
        match super::ops::uncovered(&f.known, &trimmed, ctx.store.node()) {
            None => break,
            Some(why) => {
                if ctx.status.set_blocked("reader", Some((BlockReason::StreamTrimmed, why.clone()))) {
                    error!(reason = %why, "replication reader blocked");
                }
                if sleep_or_stop(Duration::from_secs(1), stop).await {
                    return Ok(());
                }
                // Keep the connection honest while waiting.
                c.cmd(&[b"PING"]).await?;
            }
        }
    }
    ctx.status.set_blocked("reader", None);
    record_gaps(ctx, f, &trimmed)?;
    // The head to catch up with, read now (the wait above can be long).
    let head = match c.cmd(&[b"XREVRANGE", k.stream.as_bytes(), b"+", b"-", b"COUNT", b"1"]).await? {
        Value::Array(v) => v.first().and_then(entry_id),
        _ => None,
    };
    if head.is_some_and(|h| h < f.cursor) {
        warn!(cursor = %f.cursor, head = %head.map_or_else(|| "none".to_string(), |h| h.to_string()), "replication stream is behind this reader's cursor (recreated?): re-reading from the start");
        f.cursor = EntryId::ZERO;
    }
    *connected = true;
    ctx.status.attempted.store(true, std::sync::atomic::Ordering::Release);
    ctx.status.set_connected("reader", true);
    ctx.status.set_error(None);
    let head = head.unwrap_or(EntryId::ZERO);
    let mut caught_up = f.cursor >= head;
    ctx.status.set_caught_up(caught_up);
    info!(cursor = %f.cursor, head = %head, "replication reader connected");
    let block_ms = BLOCK.as_millis().to_string();
    let count = READ_COUNT.to_string();
    let cursors = super::ops::cursors_key(&k.stream);
    let mut reported: Option<(EntryId, Instant)> = None;
    loop {
        // Where this reader is, for `replication trim` (which never removes what a live
        // reader has yet to read): on change, and at least every CURSOR_EVERY.
        if reported.is_none_or(|(at, t)| at != f.cursor || t.elapsed() >= super::ops::CURSOR_EVERY) {
            let v = format!("{} {}", f.cursor, crate::time::Clock::system().now().unix_ms);
            match c.cmd(&[b"HSET", cursors.as_bytes(), ctx.store.node().as_str().as_bytes(), v.as_bytes()]).await {
                // Best effort (a full Redis refuses writes; reading goes on): trim then sees
                // this reader as stale after 10 minutes, and a restart is checked by the marks.
                Ok(_) | Err(RedisError::Server(_)) => {}
                Err(e) => return Err(e),
            }
            reported = Some((f.cursor, Instant::now()));
        }
        if *stop.borrow() {
            return Ok(());
        }
        let cursor = f.cursor.to_string();
        let args: [&[u8]; 8] = [
            b"XREAD",
            b"COUNT",
            count.as_bytes(),
            b"BLOCK",
            block_ms.as_bytes(),
            b"STREAMS",
            k.stream.as_bytes(),
            cursor.as_bytes(),
        ];
        let reply = tokio::select! {
            r = c.cmd_within(&args, Some(BLOCK + ctx.cfg.timeout)) => r?,
            _ = stop.wait_for(|s| *s) => return Ok(()),
        };
        let entries = match &reply {
            Value::Nil => Vec::new(),
            Value::Array(streams) => streams
                .first()
                .and_then(|s| match s {
                    Value::Array(pair) if pair.len() == 2 => match &pair[1] {
                        Value::Array(es) => Some(es.as_slice()),
                        _ => None,
                    },
                    _ => None,
                })
                .ok_or_else(|| RedisError::Protocol("XREAD reply is not [[stream, entries]]".into()))?
                .iter()
                .collect(),
            other => return Err(RedisError::Protocol(format!("XREAD answered {other:?}"))),
        };
        let n = entries.len();
        refresh_known(ctx, f);
        if n > 0 {
            // A trim that ran after the check at connect, before this reader's first cursor
            // report (or on the cursor of this node's previous run), can have removed entries
            // it had not read; this batch would then start past them. Trim marks are raised
            // before entries are removed, so reading them after the XREAD sees any such trim:
            // uncovered by what this node holds → reconnect, which refuses readiness.
            let now = super::ops::read_marks(&mut c, &super::ops::trimmed_key(&k.stream)).await?;
            if now != trimmed {
                if let Some(why) = super::ops::uncovered(&f.known, &now, ctx.store.node()) {
                    return Err(RedisError::Protocol(format!("the stream was trimmed under this reader: {why}")));
                }
                trimmed = now;
            }
        }
        record_gaps(ctx, f, &trimmed)?;
        if n > 0 {
            if let Err(why) = apply(ctx, f, &entries)? {
                // An entry this build cannot read (a newer schema): apply nothing more, so no
                // statement is skipped, until the node is upgraded and restarted.
                error!(reason = %why, "replication reader stopped");
                ctx.status.set_blocked("reader", Some((BlockReason::NewerSchema, why)));
                ctx.status.set_caught_up(false);
                let _ = stop.wait_for(|s| *s).await;
                return Ok(());
            }
        }
        if !caught_up && f.cursor >= head {
            caught_up = true;
            ctx.status.set_caught_up(true);
            info!(cursor = %f.cursor, "replication reader caught up");
        }
        let lag = if n >= READ_COUNT {
            let now = crate::time::Clock::system().now().unix_ms.max(0) as u64;
            now.saturating_sub(f.cursor.ms) as f64 / 1000.0
        } else {
            f.caught_up_at = Instant::now();
            0.0
        };
        metrics::gauge!(m::REPLICATION_LAG_SECONDS).set(lag);
    }
}

/// Raises `known` by the serving snapshot's marks after a reload.
fn refresh_known(ctx: &Ctx, f: &mut Follow) {
    let swaps = ctx.store.swaps();
    if swaps != f.swaps {
        f.swaps = swaps;
        let now = known_marks(&ctx.store);
        for (o, s) in now.iter() {
            if s > f.known.get(o) {
                f.known.insert(o.clone(), s);
            }
        }
    }
}

fn entry_id(v: &Value) -> Option<EntryId> {
    match v {
        Value::Array(e) => e.first()?.as_str().and_then(EntryId::parse),
        _ => None,
    }
}

/// Applies a batch of entries: other origins' statements this node does not hold yet. The
/// cursor and the known marks move only once the batch is recorded. `Ok(Err(reason))`: an
/// entry of a schema this build does not read; nothing of the batch from it on is applied.
fn apply(ctx: &Ctx, f: &mut Follow, entries: &[&Value]) -> Result<Result<(), String>, RedisError> {
    let me = ctx.store.node();
    let mut fresh: Vec<Statement> = Vec::new();
    let (mut dup, mut invalid) = (0u64, 0u64);
    let mut known = f.known.clone();
    let mut journaled = f.journaled.clone();
    let mut cursor = f.cursor;
    let mut stopped = None;
    for e in entries {
        let Value::Array(parts) = e else { return Err(RedisError::Protocol("stream entry is not an array".into())) };
        let id = parts.first().and_then(Value::as_str).unwrap_or("?").to_owned();
        let eid = EntryId::parse(&id).ok_or_else(|| RedisError::Protocol(format!("entry id `{id}`")))?;
        let kv: Vec<(&[u8], &[u8])> = match parts.get(1) {
            Some(Value::Array(kv)) => {
                kv.chunks(2).filter_map(|p| Some((p.first()?.as_bytes()?, p.get(1)?.as_bytes()?))).collect()
            }
            _ => Vec::new(),
        };
        match entry::decode(&id, &kv) {
            Ok(st) if &st.id.origin == me => {}
            // In the journal, or in the serving snapshot (then the journal's gap is recorded).
            Ok(st) if known.covers(&st.id) => dup += 1,
            Ok(st) => {
                known.observe(&st.id);
                journaled.observe(&st.id);
                fresh.push(st);
            }
            Err(e) if e.newer_schema => {
                stopped = Some(format!("{e}: a node of a newer version wrote it; upgrade this node"));
                break;
            }
            Err(e) => {
                invalid += 1;
                error!(error = %e, "replication: stream entry skipped");
            }
        }
        cursor = cursor.max(eid);
    }
    let applied = fresh.len() as u64;
    if !fresh.is_empty() {
        if let Err(e) = ctx.store.record_replicated(fresh) {
            // Applied in memory; the journal writer is gone (shutting down).
            warn!(error = %e, "replicated statements not journalled");
        }
    }
    f.known = known;
    f.journaled = journaled;
    f.cursor = cursor;
    metrics::counter!(m::REPLICATION_STATEMENTS_TOTAL, "direction" => "applied").increment(applied);
    metrics::counter!(m::REPLICATION_STATEMENTS_TOTAL, "direction" => "duplicate").increment(dup);
    metrics::counter!(m::REPLICATION_STATEMENTS_TOTAL, "direction" => "invalid").increment(invalid);
    Ok(stopped.map_or(Ok(()), Err))
}

/// Records in the journal directory what this node's journal lacks, for `snapshot build`
/// ([`crate::consent::snapshot::live`]): per other origin, the serving snapshot's mark and
/// the stream's trim mark where they are above what the journal holds. Written before the
/// reader applies anything past them; a failure to write it stops the reading (reconnect).
fn record_gaps(ctx: &Ctx, f: &mut Follow, trimmed: &Watermarks) -> Result<(), RedisError> {
    let me = ctx.store.node();
    let snap = ctx.store.current().as_deref().map(|l| l.snapshot.info().watermarks.clone()).unwrap_or_default();
    let mut gaps = Watermarks::new();
    for marks in [&snap, trimmed] {
        for (o, s) in marks.iter() {
            if o != me && s > f.journaled.get(o) && s > f.noted.get(o) && s > gaps.get(o) {
                gaps.insert(o.clone(), s);
            }
        }
    }
    if gaps.is_empty() {
        return Ok(());
    }
    let Some(dir) = ctx.store.journal_dir() else { return Ok(()) };
    if let Err(e) = crate::consent::snapshot::live::note_partial(dir, &gaps) {
        error!(error = %e, "replication: cannot record what the journal lacks; reading stopped until it can");
        return Err(RedisError::Io(std::io::Error::other(e)));
    }
    for (o, s) in gaps.iter() {
        f.noted.insert(o.clone(), s);
    }
    Ok(())
}

/// Compares this node's clock with Redis's `TIME`; latest-wins needs them close (NTP).
async fn check_clock(c: &mut Conn) -> Result<(), RedisError> {
    let t0 = crate::time::Clock::system().now().unix_ms;
    let v = c.cmd(&[b"TIME"]).await?;
    let t1 = crate::time::Clock::system().now().unix_ms;
    if let Value::Array(p) = v {
        if let (Some(s), Some(us)) = (p.first().and_then(Value::as_int), p.get(1).and_then(Value::as_int)) {
            let redis_ms = s * 1000 + us / 1000;
            let skew = redis_ms - (t0 + t1) / 2;
            if skew.abs() > SKEW_WARN_MS {
                warn!(skew_ms = skew, "this node's clock differs from Redis's: statements from several nodes are ordered by time; check NTP");
            }
        }
    }
    Ok(())
}
