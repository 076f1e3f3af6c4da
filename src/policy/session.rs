//! [`SessionPolicy`]: what one session holds for the decision pipeline — its account, the
//! account entity's ids in the live delta and in the serving snapshot (re-resolved when the
//! snapshot generation changes), the verdicts of concatenated messages in progress, and the
//! read-batch prefetch. The session calls [`SessionPolicy::decide`] per submit_sm / data_sm and
//! [`SessionPolicy::decide_multi`] per submit_multi destination, and knows none of the steps.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use crate::consent::snapshot::EntityId;
use crate::consent::store::ConsentStore;
use crate::smpp::peek::{self, MessageView, MultiDest, MultiView};
use crate::smpp::{text, HEADER_LEN};
use crate::time::Now;

use super::engine::{ConsentView, Message};
use super::{AccountIdx, Decision, Engine};

/// How long the verdict of a concatenated message is remembered for its other parts.
pub const CONCAT_TTL_MS: u64 = 120_000;
/// Most concatenated messages remembered per session.
const CONCAT_MAX: usize = 16_384;
/// Submits per read batch whose snapshot lines are prefetched.
const PREFETCH_MAX: usize = 128;

/// The serving snapshot as a session last saw it: what the audit log names a decision by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SnapshotStamp {
    /// The snapshot's checksum (its id); 0 when none is loaded.
    pub id: u64,
    /// The store's load generation; 0 when none is loaded.
    pub generation: u64,
    /// When it was built, Unix seconds.
    pub built_at: i64,
}

/// The per-session side of the pipeline. Not shared: a session owns one.
#[derive(Debug)]
pub struct SessionPolicy {
    engine: Arc<Engine>,
    store: Arc<ConsentStore>,
    account: AccountIdx,
    live_entity: u32,
    snap_entity: Option<EntityId>,
    stamp: SnapshotStamp,
    concat: ConcatCache,
}

impl SessionPolicy {
    pub fn new(engine: Arc<Engine>, store: Arc<ConsentStore>, account: AccountIdx) -> SessionPolicy {
        let live_entity = store.delta.intern(&engine.account(account).entity);
        SessionPolicy {
            engine,
            store,
            account,
            live_entity,
            snap_entity: None,
            stamp: SnapshotStamp::default(),
            concat: ConcatCache::default(),
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn account(&self) -> AccountIdx {
        self.account
    }

    /// The snapshot the last decision was made against.
    pub fn snapshot_stamp(&self) -> SnapshotStamp {
        self.stamp
    }

    /// The decision for one submit_sm / data_sm. All parts of a concatenated message share
    /// the verdict of the first part to arrive (any order); later parts are not re-decided and
    /// come back with [`Decision::from_cache`] set (they are not counted as decisions).
    pub fn decide(&mut self, v: &MessageView, now: Now) -> Decision {
        let Some(c) = text::concat_info(v) else { return self.decide_one(&Message::of(v), now) };
        let key = ConcatCache::key(v, c);
        if let Some(e) = self.concat.map.get_mut(&key) {
            e.seen += 1;
            let d = Decision { from_cache: true, ..e.decision };
            if e.seen >= e.total as u16 {
                self.concat.map.remove(&key);
            }
            return d;
        }
        let d = self.decide_one(&Message::of(v), now);
        if c.total > 1 && self.concat.map.len() < CONCAT_MAX {
            self.concat.map.insert(key, ConcatEntry { decision: d, seen: 1, total: c.total, at_ms: now.mono_ms });
        }
        d
    }

    /// The decision for one destination of a submit_multi (an SME address or a distribution
    /// list).
    pub fn decide_multi(&mut self, v: &MultiView, dest: MultiDest, now: Now) -> Decision {
        match dest {
            MultiDest::Sme(addr) => self.decide_one(&Message::of_multi(v, addr), now),
            MultiDest::List(_) => self.engine.decide_list(),
        }
    }

    #[inline]
    fn decide_one(&mut self, m: &Message, now: Now) -> Decision {
        let guard = self.store.current();
        let loaded = guard.as_deref();
        match loaded {
            Some(l) if l.generation != self.stamp.generation => {
                self.snap_entity = l.snapshot.entity_id(&self.engine.account(self.account).entity);
                let i = l.snapshot.info();
                self.stamp = SnapshotStamp { id: i.checksum, generation: l.generation, built_at: i.built_at };
            }
            None if self.stamp.generation != 0 => {
                self.snap_entity = None;
                self.stamp = SnapshotStamp::default();
            }
            _ => {}
        }
        let data = ConsentView {
            snapshot: loaded.map(|l| &l.snapshot),
            delta: &self.store.delta,
            live_entity: Some(self.live_entity),
            snap_entity: self.snap_entity,
        };
        self.engine.decide(self.account, &data, m, now)
    }

    /// Before a read batch is handled: starts the snapshot loads of every submit_sm / data_sm
    /// in it (at most `PREFETCH_MAX`), so their memory latency overlaps — measured in
    /// `benches/decide.rs` (`_session_prefetch`). Frames are walked by command_length only;
    /// damaged ones are skipped here and handled by the real pass. Changes no verdict.
    pub fn prefetch_batch(&self, rbuf: &[u8]) {
        if rbuf.len() < 2 * HEADER_LEN {
            return;
        }
        let guard = self.store.current();
        let Some(loaded) = guard.as_deref() else { return };
        let mut at = 0;
        for _ in 0..PREFETCH_MAX {
            let Some(head) = rbuf.get(at..at + HEADER_LEN) else { return };
            let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
            let Some(frame) = rbuf.get(at..at + len).filter(|_| len >= HEADER_LEN) else { return };
            if let Some(m) = peek::destination(frame).and_then(|d| self.engine.subscriber(&d)) {
                loaded.snapshot.prefetch(m);
            }
            at += len;
        }
    }

    /// Periodic upkeep (the session's timer tick): forgets concatenated messages whose other
    /// parts never came.
    pub fn tick(&mut self, now: Now) {
        self.concat.prune(now.mono_ms);
    }
}

/// Decisions of concatenated messages in progress, keyed by (source, destination, reference,
/// total).
#[derive(Debug, Default)]
struct ConcatCache {
    map: HashMap<u64, ConcatEntry, foldhash::fast::FixedState>,
}

#[derive(Debug, Clone, Copy)]
struct ConcatEntry {
    decision: Decision,
    seen: u16,
    total: u8,
    /// When the first part was decided, monotonic ms ([`Now::mono_ms`]).
    at_ms: u64,
}

impl ConcatCache {
    fn key(v: &MessageView, c: text::Concat) -> u64 {
        let mut h = foldhash::fast::FixedState::with_seed(0x5eed).build_hasher();
        h.write(v.source.addr);
        h.write_u8(0);
        h.write(v.destination.addr);
        h.write_u16(c.reference);
        h.write_u8(c.total);
        h.finish()
    }

    fn prune(&mut self, now_ms: u64) {
        if !self.map.is_empty() {
            self.map.retain(|_, e| now_ms.saturating_sub(e.at_ms) < CONCAT_TTL_MS);
        }
    }
}
