//! [`SessionPolicy`]: what one session holds for the decision pipeline — its account, the
//! account entity's ids in the live delta and in the serving snapshot (re-resolved when the
//! snapshot generation changes), the verdicts of concatenated messages in progress, and the
//! read-batch prefetch. The session calls [`SessionPolicy::decide`] per submit_sm / data_sm and
//! [`SessionPolicy::decide_multi`] per submit_multi destination, and knows none of the steps.

use std::sync::Arc;

use crate::consent::snapshot::EntityId;
use crate::consent::store::{self, ConsentStore, Loaded};
use crate::smpp::peek::Addr;
use crate::smpp::text::Concat;
use crate::time::Now;

use super::concat::{self, ConcatCache, Held, Hold, Holds};
use super::engine::{ConsentView, Message};
use super::{AccountIdx, Decision, Engine};
/// Reads a held frame again as the message it is (each front its own parser).
pub type MessageOf = for<'f> fn(&'f [u8]) -> Option<Message<'f>>;

/// How many frames ahead of the one being handled a session prefetches the snapshot line
/// ([`SessionPolicy::prefetch_ahead`]), and how many it prefetches at a time: every
/// [`PREFETCH_GROUP`] frames handled, the next group. Far enough ahead that a miss (a DRAM
/// access plus, under the hypervisor, a two-level page walk: 150–500 ns here) is over before
/// its turn (a frame costs ≈ 0.5 µs); few enough at once to fit the core's fill buffers and
/// page walkers; in groups, so that their page walks overlap instead of each stalling
/// retirement on its own. Measured in the gateway at 20 M records, traffic to random
/// numbers (msg/s, one core): all ~60 frames of a batch up front 1.38 M; distance 4 one at a
/// time 1.49 M, 8 → 1.59 M; distance 16 in groups of 4 1.77 M (8 → 1.72 M, 32/8 → 1.74 M).
pub const PREFETCH_DISTANCE: usize = 16;
/// See [`PREFETCH_DISTANCE`].
pub const PREFETCH_GROUP: usize = 4;

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
    /// The serving snapshot as of the store's swap count `swaps_seen`: the session's own
    /// `Arc`, so a decision reads it with no `arc_swap` load (3–4 % of the gateway's CPU
    /// at 1.8 M msg/s when each decision and each prefetch group took a guard). Re-read when
    /// [`ConsentStore::swaps`] moves, checked before every decision and prefetch group and on
    /// every tick (so a replaced snapshot is let go within one tick even by an idle session).
    loaded: Option<Arc<Loaded>>,
    swaps_seen: u64,
    snap_entity: Option<EntityId>,
    stamp: SnapshotStamp,
    concat: ConcatCache,
    /// Parts held for the rest of their message (only when the engine reads text).
    holds: Holds,
    /// Decoding buffer and the folded text of the message being decided (for a DLT account,
    /// its text decoded but not folded).
    scratch: String,
    folded: String,
}

/// What [`SessionPolicy::hold`] did with a submit_sm / data_sm.
#[derive(Debug)]
pub enum Part {
    /// Not a part to hold: decide it now ([`SessionPolicy::decide`]).
    Decide,
    /// Refused before holding (the account's rate, or no room to hold): answer it now.
    Refused(Decision),
    /// Held until the rest of its message comes.
    Waiting,
    /// It completed its message: decide it ([`SessionPolicy::decide_held`]) and release every
    /// part.
    Complete(Held),
}

impl SessionPolicy {
    pub fn new(engine: Arc<Engine>, store: Arc<ConsentStore>, account: AccountIdx) -> SessionPolicy {
        let live_entity = store.delta.intern(&engine.account(account).entity);
        SessionPolicy {
            engine,
            store,
            account,
            live_entity,
            loaded: None,
            swaps_seen: u64::MAX,
            snap_entity: None,
            stamp: SnapshotStamp::default(),
            concat: ConcatCache::default(),
            holds: Holds::default(),
            scratch: String::new(),
            folded: String::new(),
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// After a config reload: decide with `engine` for its account `account` (the same
    /// `system_id`) from the next message. The entity's ids are resolved again (its entity
    /// may have changed); concatenated messages in progress keep their verdicts and parts.
    pub fn rebind(&mut self, engine: Arc<Engine>, account: AccountIdx) {
        self.live_entity = self.store.delta.intern(&engine.account(account).entity);
        self.engine = engine;
        self.account = account;
        // Re-resolves the snapshot's entity id at the next decision.
        self.swaps_seen = u64::MAX;
    }

    pub fn account(&self) -> AccountIdx {
        self.account
    }

    /// The snapshot the last decision was made against.
    pub fn snapshot_stamp(&self) -> SnapshotStamp {
        self.stamp
    }

    /// The decision for one submit_sm / data_sm: first the account's rate (every PDU counts),
    /// then the pipeline. Unless the session holds the parts of a concatenated message
    /// ([`SessionPolicy::hold`]), all parts share the verdict of the first part to arrive (any
    /// order); later parts are not re-decided and come back with [`Decision::from_cache`] set
    /// (they are not counted as decisions).
    ///
    /// `concat` is the message's place in a concatenated message, if it is a part (SMPP:
    /// [`crate::smpp::text::concat_info`]).
    pub fn decide(&mut self, m: &Message, concat: Option<Concat>, now: Now) -> Decision {
        if let Some(d) = self.engine.throttle(self.account) {
            return d;
        }
        let Some(c) = concat else { return self.decide_text(m, now) };
        let key = concat::key(m, c);
        if let Some(d) = self.concat.part(key) {
            return d;
        }
        let d = self.decide_text(m, now);
        if c.total > 1 {
            self.concat.remember(key, d, 1, c.total, now.mono_ms);
        }
        d
    }

    /// When a step reads the text, a part of a concatenated message is held (its frame
    /// copied) until the rest comes; see [`concat`]. Every part still counts against the
    /// account's rate when it comes.
    pub fn hold(
        &mut self,
        m: &Message,
        concat: Option<Concat>,
        frame: &[u8],
        command_id: u32,
        seq: u32,
        now: Now,
    ) -> Part {
        if !self.engine.reads_text(self.account) {
            return Part::Decide;
        }
        let Some(c) = concat.filter(|c| c.total > 1) else { return Part::Decide };
        let key = concat::key(m, c);
        if self.concat.contains(key) {
            return Part::Decide; // its message was decided (timed out): it takes that verdict
        }
        if let Some(d) = self.engine.throttle(self.account) {
            return Part::Refused(d);
        }
        match self.holds.add(key, c, command_id, seq, frame, now.mono_ms) {
            Hold::Waiting => Part::Waiting,
            Hold::Complete(h) => Part::Complete(h),
            Hold::Full => Part::Refused(self.engine.refuse(crate::policy::Reason::Throttled)),
        }
    }

    /// The decision for a held message, on the text of its parts in segment order (all of
    /// them, or those that came before the timeout: later ones then take this verdict).
    /// `message_of` reads a held frame again (each parsed when it came).
    pub fn decide_held(&mut self, h: &Held, message_of: MessageOf, now: Now) -> Decision {
        let mut folded = std::mem::take(&mut self.folded);
        folded.clear();
        let parts = h.in_order();
        let mut first = None;
        let exact = self.engine.exact_text(self.account);
        for p in &parts {
            let Some(m) = message_of(&p.frame) else { continue };
            if exact {
                m.decode_text_into(&mut self.scratch, &mut folded);
            } else {
                m.fold_text_into(&mut self.scratch, &mut folded);
            }
            first.get_or_insert(p);
        }
        let d = match first.and_then(|p| message_of(&p.frame)) {
            Some(m) => self.decide_one(&m.with_text(&folded), now),
            None => self.engine.refuse(crate::policy::Reason::Throttled),
        };
        self.folded = folded;
        self.concat.remember(h.key, d, h.distinct() as u16, h.total, now.mono_ms);
        d
    }

    /// Held messages past `policy.reassembly_timeout`, to be decided on what came.
    pub fn expired_holds(&mut self, now: Now) -> Vec<Held> {
        self.holds.expired(now.mono_ms, self.engine.config().reassembly_timeout_ms)
    }

    /// Every held message (the session drains or closes: no more parts will come).
    pub fn drain_holds(&mut self) -> Vec<Held> {
        self.holds.drain()
    }

    /// The decision for one destination of a message sent to several (SMPP submit_multi):
    /// `Some` = one subscriber's message, `None` = a distribution list that hides its
    /// subscribers.
    pub fn decide_multi(&mut self, m: Option<&Message>, now: Now) -> Decision {
        if let Some(d) = self.engine.throttle(self.account) {
            return d;
        }
        match m {
            Some(m) => self.decide_text(m, now),
            None => self.engine.decide_list(),
        }
    }

    /// [`Self::decide_one`] with the message's folded text when a step reads it.
    #[inline]
    fn decide_text(&mut self, m: &Message, now: Now) -> Decision {
        if !self.engine.reads_text(self.account) {
            return self.decide_one(m, now);
        }
        let mut folded = std::mem::take(&mut self.folded);
        folded.clear();
        if self.engine.exact_text(self.account) {
            crate::smpp::text::decode_into(m.coding, m.user_data, &mut folded);
        } else {
            m.fold_text_into(&mut self.scratch, &mut folded);
        }
        let d = self.decide_one(&(*m).with_text(&folded), now);
        self.folded = folded;
        d
    }

    /// Takes the store's current snapshot if it was swapped since the last look (one load of
    /// the swap counter otherwise), and re-resolves the entity's id in it.
    #[inline]
    fn refresh(&mut self) {
        let swaps = self.store.swaps();
        if swaps != self.swaps_seen {
            self.refresh_slow(swaps);
        }
    }

    #[cold]
    fn refresh_slow(&mut self, swaps: u64) {
        self.swaps_seen = swaps;
        let old = std::mem::replace(&mut self.loaded, self.store.current().clone());
        store::release(old);
        match &self.loaded {
            Some(l) => {
                self.snap_entity = l.snapshot.entity_id(&self.engine.account(self.account).entity);
                let i = l.snapshot.info();
                self.stamp = SnapshotStamp { id: i.checksum, generation: l.generation, built_at: i.built_at };
            }
            None => {
                self.snap_entity = None;
                self.stamp = SnapshotStamp::default();
            }
        }
    }

    #[inline]
    fn decide_one(&mut self, m: &Message, now: Now) -> Decision {
        self.refresh();
        let data = ConsentView {
            snapshot: self.loaded.as_deref().map(|l| &l.snapshot),
            delta: &self.store.delta,
            live_entity: Some(self.live_entity),
            snap_entity: self.snap_entity,
        };
        self.engine.decide(self.account, &data, m, now)
    }

    /// Starts the snapshot loads of the next `n` frames of a read batch from byte offset
    /// `at` and returns the offset after them (`rbuf.len()` at the end of the complete
    /// frames or at a damaged one). The session calls it with [`PREFETCH_DISTANCE`] before
    /// the first frame of a batch and with [`PREFETCH_GROUP`] after every `PREFETCH_GROUP`
    /// frames it handles, so the line of a submit it will decide about `PREFETCH_DISTANCE`
    /// frames later is on its way while it works on the ones before (a software pipeline). Frames are walked by command_length only;
    /// those that are not submit_sm / data_sm cost a header read. Changes no verdict.
    ///
    /// Why a distance and not the whole batch at once:
    /// measured in the gateway at 20 M records with every message to a random number, the
    /// cycles of a decision rose with its place in a ~60-frame batch prefetched up front —
    /// ≈ 210 (first), 140 (2nd–8th), 180 (9th–32nd) and 510 cycles (33rd on), about an
    /// unprefetched miss: a burst of 60 prefetches outruns the core's fill buffers, and
    /// lines fetched 30 µs of work ahead are gone again when their decision comes.
    #[inline]
    ///
    /// Frames are walked by their first four bytes (the big-endian length of SMPP and CMPP
    /// alike) over at least `header` bytes; `destination` reads a frame's destination if it
    /// is a message to decide (SMPP: [`crate::smpp::peek::destination`]).
    pub fn prefetch_ahead<D>(&mut self, rbuf: &[u8], mut at: usize, n: usize, header: usize, destination: D) -> usize
    where
        D: for<'f> Fn(&'f [u8]) -> Option<Addr<'f>>,
    {
        if at >= rbuf.len() {
            return at;
        }
        self.refresh();
        let snapshot = self.loaded.as_deref().map(|l| &l.snapshot);
        if snapshot.is_none() && self.engine.frequency().is_none() && self.engine.config().dlt.is_none() {
            return rbuf.len();
        }
        for _ in 0..n {
            let Some(head) = rbuf.get(at..at + header) else { return rbuf.len() };
            let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
            let Some(frame) = rbuf.get(at..at + len).filter(|_| len >= header) else { return rbuf.len() };
            if let Some(m) = destination(frame).and_then(|d| self.engine.subscriber(&d)) {
                if let Some(s) = snapshot {
                    s.prefetch(m);
                }
                self.engine.prefetch(m);
            }
            at += len;
        }
        at
    }

    /// Periodic upkeep (the session's timer tick): takes a swapped snapshot (letting the old
    /// one go) and forgets concatenated messages whose other parts never came.
    pub fn tick(&mut self, now: Now) {
        self.refresh();
        self.concat.prune(now.mono_ms);
    }
}

impl Drop for SessionPolicy {
    fn drop(&mut self) {
        store::release(self.loaded.take());
    }
}
