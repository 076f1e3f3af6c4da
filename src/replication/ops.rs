//! Operator commands on the stream (`consentgate replication status | trim`), and the trim
//! marks the reader checks.
//!
//! # Trimming (architecture §8: tied to snapshot watermarks)
//!
//! The stream only has to keep what some node could still need: everything a node's snapshot
//! does not already hold. [`trim`] takes the per-origin watermarks of a snapshot — the
//! *oldest* one any node may start from (the previous generation, when the builder job has
//! just distributed a new one) — and removes the longest prefix of the stream whose every
//! entry is at or below its origin's mark (`XTRIM MINID`); an entry above stops it, so a slow
//! origin keeps everything after it. Before removing, it raises `<stream>:trimmed` (a hash:
//! origin → highest origin seq removed). A reader whose node holds less than that for some
//! origin (snapshot + journal) cannot catch up from the stream: it refuses to apply anything
//! and reports the node unready, naming the origin, until it is given a newer snapshot
//! (checked again on every reload and reconnect).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::entry::EntryId;
use super::resp::{Conn, RedisError, Value as R};
use super::{Keys, ReplicationConfig};
use crate::consent::{NodeId, Watermarks};

/// Raises a hash field to ARGV[2] if that is greater (trim marks only ever rise).
const RAISE: &[u8] = b"local c = tonumber(redis.call('hget', KEYS[1], ARGV[1]) or '0') \
if tonumber(ARGV[2]) > c then redis.call('hset', KEYS[1], ARGV[1], ARGV[2]) end return 1";

/// Entries per `XRANGE` while scanning.
const SCAN: usize = 1000;

/// How often a reader reports its cursor (`<stream>:cursors`, node → `<id> <unix ms>`).
pub(crate) const CURSOR_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// A reader whose cursor report is older than this is taken to be down: [`trim`] does not
/// wait for it (a node restarted later is checked against the trim marks instead).
pub const CURSOR_STALE_MS: i64 = 10 * 60 * 1000;

/// The key of the readers' cursors.
pub(crate) fn cursors_key(stream: &str) -> String {
    format!("{stream}:cursors")
}

/// The readers' cursors reported within [`CURSOR_STALE_MS`] of `now_ms`, by node.
async fn live_cursors(c: &mut Conn, stream: &str, now_ms: i64) -> Result<BTreeMap<String, EntryId>, RedisError> {
    let mut out = BTreeMap::new();
    if let R::Array(kv) = c.cmd(&[b"HGETALL", cursors_key(stream).as_bytes()]).await? {
        for p in kv.chunks(2) {
            let (Some(node), Some(v)) = (p.first().and_then(R::as_str), p.get(1).and_then(R::as_str)) else { continue };
            let mut it = v.split(' ');
            let (Some(id), Some(at)) =
                (it.next().and_then(EntryId::parse), it.next().and_then(|t| t.parse::<i64>().ok()))
            else {
                continue;
            };
            if now_ms - at <= CURSOR_STALE_MS {
                out.insert(node.to_owned(), id);
            }
        }
    }
    Ok(out)
}

/// The key of the trim marks.
pub(crate) fn trimmed_key(stream: &str) -> String {
    format!("{stream}:trimmed")
}

/// Reads a hash of origin → seq as watermarks (fields that are not node ids are skipped).
pub(crate) async fn read_marks(c: &mut Conn, key: &str) -> Result<Watermarks, RedisError> {
    let mut w = Watermarks::new();
    if let R::Array(kv) = c.cmd(&[b"HGETALL", key.as_bytes()]).await? {
        for p in kv.chunks(2) {
            if let (Some(k), Some(v)) = (p.first().and_then(R::as_str), p.get(1).and_then(R::as_int)) {
                if let Ok(n) = NodeId::parse(k) {
                    w.insert(n, v.max(0) as u64);
                }
            }
        }
    }
    Ok(w)
}

/// The first origin (other than `me`) whose removed statements this node does not hold:
/// the reason it cannot catch up from the stream.
pub(crate) fn uncovered(known: &Watermarks, trimmed: &Watermarks, me: &NodeId) -> Option<String> {
    trimmed.iter().filter(|(o, _)| *o != me).find(|(o, t)| known.get(o) < *t).map(|(o, t)| {
        format!(
            "the stream was trimmed through {o}'s statement {t}, but this node holds {o}'s only through {}: \
             load a newer snapshot (one built after that trim)",
            known.get(o)
        )
    })
}

/// What [`trim`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrimReport {
    /// Entries removed.
    pub removed: u64,
    /// Entries left.
    pub left: u64,
    /// The first id kept (`XTRIM MINID`), if anything was removed.
    pub min_id: Option<String>,
    /// Highest origin seq removed, per origin.
    pub through: BTreeMap<String, u64>,
    /// The live reader that stopped the trim (it had not read further yet), if one did.
    pub held_by: Option<String>,
}

/// Removes the prefix of the stream that `marks` covers (module docs) and that every live
/// reader (cursor reported within [`CURSOR_STALE_MS`]) has already read.
pub async fn trim(cfg: &ReplicationConfig, marks: &Watermarks) -> Result<TrimReport, RedisError> {
    let keys = Keys::new(&cfg.stream, "-");
    let mut c = Conn::connect(&cfg.redis, cfg.timeout).await?;
    let now = crate::time::Clock::system().now().unix_ms;
    let cursors = live_cursors(&mut c, &cfg.stream, now).await?;
    let slowest = cursors.iter().min_by_key(|(_, id)| **id).map(|(n, id)| (n.clone(), *id));
    let mut held_by = None;
    let mut from = "-".to_owned();
    let mut last: Option<EntryId> = None;
    let mut through: BTreeMap<String, u64> = BTreeMap::new();
    'scan: loop {
        let count = SCAN.to_string();
        let r = c.cmd(&[b"XRANGE", keys.stream.as_bytes(), from.as_bytes(), b"+", b"COUNT", count.as_bytes()]).await?;
        let R::Array(entries) = r else { break };
        if entries.is_empty() {
            break;
        }
        let n = entries.len();
        for e in &entries {
            let R::Array(parts) = e else { return Err(RedisError::Protocol("XRANGE entry is not an array".into())) };
            let id = parts.first().and_then(R::as_str).and_then(EntryId::parse);
            let Some(id) = id else { return Err(RedisError::Protocol("XRANGE entry id".into())) };
            if let Some((node, at)) = &slowest {
                if id > *at {
                    held_by = Some(node.clone());
                    break 'scan;
                }
            }
            let field = |name: &[u8]| -> Option<&R> {
                match parts.get(1) {
                    Some(R::Array(kv)) => kv.chunks(2).find(|p| p[0].as_bytes() == Some(name)).and_then(|p| p.get(1)),
                    _ => None,
                }
            };
            let origin = field(b"o").and_then(R::as_str).and_then(|o| NodeId::parse(o).ok());
            let seq = field(b"q").and_then(R::as_int).map(|q| q.max(0) as u64);
            // An entry that is not a statement is needed by nobody: it does not stop the trim.
            if let (Some(o), Some(q)) = (origin, seq) {
                if q > marks.get(&o) {
                    break 'scan;
                }
                let t = through.entry(o.to_string()).or_insert(0);
                *t = (*t).max(q);
            }
            last = Some(id);
        }
        if n < SCAN {
            break;
        }
        from = format!("({}", last.expect("a full batch has a last entry"));
    }
    let Some(last) = last else {
        let left = c.cmd(&[b"XLEN", keys.stream.as_bytes()]).await?.as_int().unwrap_or(0).max(0) as u64;
        return Ok(TrimReport { removed: 0, left, min_id: None, through, held_by });
    };
    let tk = trimmed_key(&cfg.stream);
    for (o, q) in &through {
        c.cmd(&[b"EVAL", RAISE, b"1", tk.as_bytes(), o.as_bytes(), q.to_string().as_bytes()]).await?;
    }
    let min = last.next().to_string();
    let removed = c.cmd(&[b"XTRIM", keys.stream.as_bytes(), b"MINID", min.as_bytes()]).await?.as_int().unwrap_or(0);
    let left = c.cmd(&[b"XLEN", keys.stream.as_bytes()]).await?.as_int().unwrap_or(0).max(0) as u64;
    Ok(TrimReport { removed: removed.max(0) as u64, left, min_id: Some(min), through, held_by })
}

/// The stream as operators see it: length, first and last ids, each node's published-through
/// marker, the trim marks, which node ids hold a lease now, and which journal (its lease
/// token) published as each node.
pub async fn status(cfg: &ReplicationConfig) -> Result<Value, RedisError> {
    let keys = Keys::new(&cfg.stream, "-");
    let mut c = Conn::connect(&cfg.redis, cfg.timeout).await?;
    let len = c.cmd(&[b"XLEN", keys.stream.as_bytes()]).await?.as_int().unwrap_or(0);
    let first = match c.cmd(&[b"XRANGE", keys.stream.as_bytes(), b"-", b"+", b"COUNT", b"1"]).await? {
        R::Array(v) => v.first().and_then(|e| match e {
            R::Array(p) => p.first().and_then(R::as_str).map(str::to_owned),
            _ => None,
        }),
        _ => None,
    };
    let last = match c.cmd(&[b"XREVRANGE", keys.stream.as_bytes(), b"+", b"-", b"COUNT", b"1"]).await? {
        R::Array(v) => v.first().and_then(|e| match e {
            R::Array(p) => p.first().and_then(R::as_str).map(str::to_owned),
            _ => None,
        }),
        _ => None,
    };
    let published = read_marks(&mut c, &keys.published).await?;
    let trimmed = read_marks(&mut c, &trimmed_key(&cfg.stream)).await?;
    let now = crate::time::Clock::system().now().unix_ms;
    let cursors: BTreeMap<String, String> =
        live_cursors(&mut c, &cfg.stream, now).await?.into_iter().map(|(n, id)| (n, id.to_string())).collect();
    let pattern = format!("{}:lease:*", cfg.stream);
    let mut leases = Vec::new();
    let mut cursor = "0".to_owned();
    loop {
        let r = c.cmd(&[b"SCAN", cursor.as_bytes(), b"MATCH", pattern.as_bytes(), b"COUNT", b"100"]).await?;
        let R::Array(p) = r else { break };
        cursor = p.first().and_then(R::as_str).unwrap_or("0").to_owned();
        if let Some(R::Array(ks)) = p.get(1) {
            leases.extend(ks.iter().filter_map(R::as_str).map(|k| k.rsplit(':').next().unwrap_or(k).to_owned()));
        }
        if cursor == "0" {
            break;
        }
    }
    leases.sort();
    let epoch = c.cmd(&[b"GET", keys.epoch.as_bytes()]).await?.as_str().map(str::to_owned);
    let mut owners = BTreeMap::new();
    if let R::Array(kv) = c.cmd(&[b"HGETALL", keys.owners.as_bytes()]).await? {
        for p in kv.chunks(2) {
            if let (Some(n), Some(t)) = (p.first().and_then(R::as_str), p.get(1).and_then(R::as_str)) {
                owners.insert(n.to_owned(), t.to_owned());
            }
        }
    }
    let marks = |w: &Watermarks| w.iter().map(|(n, s)| (n.to_string(), s)).collect::<BTreeMap<_, _>>();
    Ok(json!({
        "redis": cfg.redis.to_string(),
        "stream": cfg.stream,
        "epoch": epoch,
        "length": len,
        "first_id": first,
        "last_id": last,
        "published_through": marks(&published),
        "trimmed_through": marks(&trimmed),
        "reader_cursors": cursors,
        "nodes_with_lease": leases,
        "journal_owners": owners,
    }))
}
