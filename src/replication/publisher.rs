//! The publisher: this node's durable statements into the stream, with the node's
//! published-through marker in the same MULTI/EXEC (module docs of [`super`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{error, info, warn};

use super::resp::{Conn, RedisError, Value};
use super::{entry, error_kind, sleep_or_stop, token, Ctx, FIRST_BACKOFF, MAX_BACKOFF, PUBLISH_BATCH};
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
    /// Needs an operator: the reason goes to `/readyz`.
    Blocked(String),
    Journal(String),
}

impl From<RedisError> for End {
    fn from(e: RedisError) -> End {
        End::Redis(e)
    }
}

pub(super) async fn run(ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>) {
    let Some(outbox) = ctx.store.outbox() else {
        error!("replication needs consent.journal; publisher not started");
        return;
    };
    let lease = token();
    let mut backoff = FIRST_BACKOFF;
    let mut failures = 0u64;
    loop {
        let mut connected = false;
        let end = session(&ctx, &outbox, &lease, &mut stop, &mut connected).await;
        ctx.status.set_connected("publisher", false);
        let (kind, msg) = match end {
            End::Stop => break,
            End::Redis(e) => (error_kind(&e), e.to_string()),
            End::Journal(e) => ("journal", e),
            End::Blocked(why) => {
                error!(reason = %why, "replication publisher blocked; retrying");
                ctx.status.set_blocked("publisher", Some(why.clone()));
                ("blocked", why)
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

/// One connection's life: connect, lease, republish from the marker, then follow the outbox.
async fn session(
    ctx: &Ctx,
    outbox: &crate::consent::store::Outbox,
    lease: &str,
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
        return End::Blocked(format!(
            "the stream says node `{node}` published through seq {marker} but its journal is durable only through {durable}: \
             the journal was lost or replaced, or another node uses the same [node] id"
        ));
    }
    ctx.status.set_blocked("publisher", None);
    *connected = true;
    ctx.status.set_connected("publisher", true);
    ctx.status.set_error(None);
    info!(marker, durable, "replication publisher connected");
    // Reset the outbox before reading the journal: anything durable after this is in both.
    outbox.reset();
    let mut through = marker;
    if let Err(e) = republish(ctx, &mut c, &mut through).await {
        return e;
    }
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
                if let Err(e) = republish(ctx, &mut c, &mut through).await {
                    return e;
                }
            }
            OutboxTake::Statements(v) => {
                let v: Vec<Statement> = v.into_iter().filter(|s| s.id.seq > through).collect();
                if !v.is_empty() {
                    if let Err(e) = send(ctx, &mut c, &v).await {
                        return e.into();
                    }
                    through = v[v.len() - 1].id.seq;
                } else if stopping {
                    // Everything durable before the stop is in the stream.
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
        }
    }
}

fn lease_lost(ctx: &Ctx) -> String {
    format!(
        "another process holds the lease {} for node `{}`: two gateways share one [node] id",
        ctx.keys.lease,
        ctx.store.node()
    )
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
async fn republish(ctx: &Ctx, c: &mut Conn, through: &mut u64) -> Result<(), End> {
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
        send(ctx, c, chunk).await?;
        *through = chunk[chunk.len() - 1].id.seq;
    }
    Ok(())
}

/// `MULTI; XADD …; HSET published node last; EXEC`, checked reply by reply.
async fn send(ctx: &Ctx, c: &mut Conn, sts: &[Statement]) -> Result<(), RedisError> {
    let k = &ctx.keys;
    c.queue(&[b"MULTI"]);
    for st in sts {
        let f = entry::fields(st);
        let mut args: Vec<&[u8]> = Vec::with_capacity(3 + 2 * f.len());
        args.extend_from_slice(&[b"XADD", k.stream.as_bytes(), b"*"]);
        for (name, v) in &f {
            args.push(name.as_bytes());
            args.push(v.as_bytes());
        }
        c.queue(&args);
    }
    let last = sts[sts.len() - 1].id.seq.to_string();
    c.queue(&[b"HSET", k.published.as_bytes(), ctx.store.node().as_str().as_bytes(), last.as_bytes()]);
    c.queue(&[b"EXEC"]);
    let replies = c.replies(None).await?;
    for r in &replies[..replies.len() - 1] {
        if let Value::Error(e) = r {
            return Err(RedisError::Server(e.clone()));
        }
    }
    match replies.last() {
        Some(Value::Array(items)) => {
            if let Some(Value::Error(e)) = items.iter().find(|v| matches!(v, Value::Error(_))) {
                return Err(RedisError::Server(e.clone()));
            }
        }
        Some(Value::Error(e)) => return Err(RedisError::Server(e.clone())),
        other => return Err(RedisError::Protocol(format!("EXEC answered {other:?}"))),
    }
    metrics::counter!(m::REPLICATION_STATEMENTS_TOTAL, "direction" => "published").increment(sts.len() as u64);
    Ok(())
}
