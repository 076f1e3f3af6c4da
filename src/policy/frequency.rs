//! Step 8, frequency caps (architecture §3): commercial messages per subscriber per entity per local
//! day, per subscriber per local day over all entities, and the same text from one entity to
//! one subscriber again within a window.
//!
//! The counts live in two fixed-size tables allocated when the engine is built
//! ([`Frequency::new`]; `policy.frequency.subscribers` sizes them), so memory is bounded
//! whatever the traffic. Both are arrays of 64-byte buckets, one cache line each. A hash of
//! the subscriber picks two of them: its **home**, where its keys go while the home has room
//! (with a slot to spare), and a second one that takes them when it has not (then the key goes
//! to the emptier of the two). A home records in its header which of its keys went to the
//! other bucket (a small fingerprint filter, live for the days or the window those keys can
//! still count), so a decision reads **one line per table** — the home, prefetched by the
//! session's read-ahead ([`Frequency::prefetch`]) — and locks and reads the second only for a
//! key the filter names or when the home is full (`Buckets::with`). At the load the tables
//! are sized for, about nine decisions in ten touch the home alone; below it, nearly all.
//! A bucket has a header word (a lock bit, "floors" and the spill filter, below) and
//! seven 64-bit slots:
//!
//! * **day table**: a slot is `fingerprint(44) | local day mod 4096 (12) | count (8)`; the
//!   key is (subscriber, entity) or (subscriber, all entities), both in the subscriber's
//!   two buckets, so one locked pair answers both daily caps. A slot of another day is free: days
//!   end at each subscriber's own local midnight with no sweep.
//! * **text table**: a slot is `fingerprint(32) | last sent, Unix seconds (32)`; the key is
//!   (subscriber, entity, folded text). A slot older than the window is free.
//!
//! **Approximate, and only ever over.** A full pair evicts its smallest live count (day
//! table) or its oldest time (text table) and remembers it in that bucket's floor: a key not
//! found in its pair reads as the higher floor — at least what it had when it was evicted. A
//! fingerprint shared by two keys of one pair (≈ 14 · 2⁻⁴⁴ per lookup) merges their counts.
//! Either way a count can only read high, so a table too small for the day's traffic refuses
//! early (`frequency_cap` on messages under the cap) and never lets a capped message through.
//! Day floors are kept for the newest day seen in the bucket and the two before it, so
//! subscribers up to two local dates apart (UTC+14 and UTC−12) share a bucket safely.
//!
//! Memory: [`Frequency::table_bytes`]; about 38 bytes per expected daily subscriber for the
//! day table (1.5 entities each, 60 % full: the home-first placement needs that headroom to
//! stay exact): 3.8 GB at 100 M distinct subscribers a day; the text table 15.2 bytes per
//! message of `peak_rate × same_text_window` (110 MB for 2 000/s and 1 h). A text table too small for the traffic of one window refuses nearly every
//! message as a repeat (its floors are recent times): size it for the peak. Allocated zeroed
//! and then, on a thread of its own, faulted in and moved onto 2 MiB pages (resident in full
//! a few seconds after start). At the load it is sized for, more than 99.9 % of subscribers reach their cap exactly (the
//! `at_design_load` test); past it the caps tighten, they never loosen.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// `[policy.frequency]` (and an account's `per_entity_per_day` override).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrequencyConfig {
    /// Commercial messages from one entity to one subscriber per local day; 0 = no cap.
    pub per_entity_per_day: u32,
    /// Commercial messages to one subscriber per local day over all entities; 0 = no cap.
    pub per_subscriber_per_day: u32,
    /// The same text from one entity to one subscriber again within this many seconds is
    /// refused; 0 = no check.
    pub same_text_window_s: u32,
    /// Distinct subscribers a day the day table is sized for.
    pub subscribers: u64,
    /// Commercial messages a second at peak that the text table is sized for: it holds every
    /// (subscriber, entity, text) sent within `same_text_window_s`, so
    /// `peak_rate × window` keys.
    pub peak_rate: u64,
    /// How often a running gateway saves the counts (`checkpoint_interval`): a crash loses
    /// at most this long's counts.
    pub checkpoint_s: u32,
}

impl FrequencyConfig {
    pub const DEFAULT_SUBSCRIBERS: u64 = 10_000_000;
    pub const DEFAULT_PEAK_RATE: u64 = 2_000;
    pub const DEFAULT_CHECKPOINT_S: u32 = 60;
    /// The largest cap a slot can count to (8-bit counts, saturating).
    pub const MAX_CAP: u32 = 254;

    pub fn is_active(&self) -> bool {
        self.per_entity_per_day > 0 || self.per_subscriber_per_day > 0 || self.same_text_window_s > 0
    }
}

/// Which cap refused (for the audit log and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cap {
    PerEntity,
    PerSubscriber,
    SameText,
}

/// What one subscriber has used today (the admin lookup).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Commercial messages forwarded today from the entity (an upper bound, see module docs).
    pub entity_today: u32,
    /// Over all entities.
    pub subscriber_today: u32,
}

/// The key of one cap check: who, from whom, which day, what text.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    pub msisdn: u64,
    /// The entity's [`entity_key`].
    pub entity: u32,
    /// The subscriber's local day (days since 1970-01-01).
    pub day: i64,
    /// Hash of the folded text (only read when the same-text check is on).
    pub text: u64,
    /// Now, Unix seconds.
    pub unix_s: i64,
}

/// The caps' state (see the module docs). Shared by every session of the engine; the tables
/// are shared with the next engine a config reload builds ([`Frequency::carried`]), and so
/// is the [`Outbox`] of marks for the other nodes.
#[derive(Debug)]
pub struct Frequency {
    config: FrequencyConfig,
    days: Arc<Buckets>,
    texts: Arc<Buckets>,
    outbox: Arc<Outbox>,
}

/// What one message allowed by step 8 counted: the mark a node sends the other nodes
/// (`replication::caps`), which count it as if they had allowed it. 24 bytes on the wire
/// ([`Mark::encode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub msisdn: u64,
    /// The entity's [`entity_key`].
    pub entity: u32,
    /// The subscriber's local day (days since 1970-01-01).
    pub day: u32,
    /// [`Mark::ENTITY`] | [`Mark::SUBSCRIBER`] | [`Mark::TEXT`]: which counts it moved.
    pub flags: u8,
    /// The same-text fingerprint (with [`Mark::TEXT`]).
    pub text_fp: u32,
    /// When, Unix seconds.
    pub unix_s: u32,
}

impl Mark {
    pub const ENTITY: u8 = 1;
    pub const SUBSCRIBER: u8 = 2;
    pub const TEXT: u8 = 4;
    pub const BYTES: usize = 24;

    /// `msisdn u64 | entity u32 | day u24 + flags u8 | text fingerprint u32 | unix s u32`,
    /// little-endian.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.msisdn.to_le_bytes());
        out.extend_from_slice(&self.entity.to_le_bytes());
        out.extend_from_slice(&((self.day & 0x00FF_FFFF) | (u32::from(self.flags) << 24)).to_le_bytes());
        out.extend_from_slice(&self.text_fp.to_le_bytes());
        out.extend_from_slice(&self.unix_s.to_le_bytes());
    }

    /// The marks of a blob [`Mark::encode`] wrote; None if its length is not a multiple of
    /// [`Mark::BYTES`].
    pub fn decode_all(b: &[u8]) -> Option<Vec<Mark>> {
        if b.len() % Mark::BYTES != 0 {
            return None;
        }
        let u32_at = |c: &[u8], i: usize| u32::from_le_bytes([c[i], c[i + 1], c[i + 2], c[i + 3]]);
        Some(
            b.chunks_exact(Mark::BYTES)
                .map(|c| {
                    let mut m = [0u8; 8];
                    m.copy_from_slice(&c[..8]);
                    let dayf = u32_at(c, 12);
                    Mark {
                        msisdn: u64::from_le_bytes(m),
                        entity: u32_at(c, 8),
                        day: dayf & 0x00FF_FFFF,
                        flags: (dayf >> 24) as u8,
                        text_fp: u32_at(c, 16),
                        unix_s: u32_at(c, 20),
                    }
                })
                .collect(),
        )
    }
}

/// The marks of this node's allowed messages not yet sent to the other nodes, and the cap
/// divisor used while they cannot be reached (`replication.caps_on_disconnect = "divide"`).
/// Collects only while an exchange runs ([`Outbox::enable`]); bounded: past
/// [`Outbox::LIMIT`] marks (Redis down for long) the oldest are dropped and counted.
#[derive(Debug, Default)]
pub struct Outbox {
    enabled: std::sync::atomic::AtomicBool,
    marks: std::sync::Mutex<std::collections::VecDeque<Mark>>,
    dropped: AtomicU64,
    /// 1 normally; N while disconnected in "divide" mode (each cap read as cap / N).
    divisor: std::sync::atomic::AtomicU32,
}

impl Outbox {
    /// 4 M marks, 96 MB.
    pub const LIMIT: usize = 4 << 20;

    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Release);
    }

    fn push(&self, m: Mark) {
        if !self.enabled.load(Ordering::Relaxed) {
            return;
        }
        let mut v = self.marks.lock().unwrap_or_else(|p| p.into_inner());
        // Full (Redis down for long): the oldest goes, in constant time.
        if v.len() >= Outbox::LIMIT {
            v.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        v.push_back(m);
    }

    /// Everything collected so far, oldest first.
    pub fn take(&self) -> Vec<Mark> {
        let q = std::mem::take(&mut *self.marks.lock().unwrap_or_else(|p| p.into_inner()));
        q.into()
    }

    /// Marks taken by [`Outbox::take`] that could not be sent go back in front.
    pub fn put_back(&self, marks: Vec<Mark>) {
        let mut v = self.marks.lock().unwrap_or_else(|p| p.into_inner());
        let newer = std::mem::take(&mut *v);
        let mut all: std::collections::VecDeque<Mark> = marks.into();
        all.extend(newer);
        if all.len() > Outbox::LIMIT {
            let over = all.len() - Outbox::LIMIT;
            all.drain(..over);
            self.dropped.fetch_add(over as u64, Ordering::Relaxed);
        }
        *v = all;
    }

    /// Marks dropped over the limit since start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Each cap is read as `cap / n` (at least 1) while `n > 1`.
    pub fn set_divisor(&self, n: u32) {
        self.divisor.store(n.max(1), Ordering::Release);
    }

    fn cap(&self, cap: u32) -> u32 {
        let n = self.divisor.load(Ordering::Relaxed);
        if n <= 1 || cap == 0 {
            cap
        } else {
            (cap / n).max(1)
        }
    }
}

/// The id an entity's counts are kept under: a hash of its name, so that the counts mean the
/// same in every process (a restart restores them, [`Frequency::restore`]) and after any
/// reload. Two entities sharing it (≈ 2⁻³² per pair) share their per-entity counts: an
/// over-count, as everywhere in this table.
pub fn entity_key(entity: &str) -> u32 {
    let k = xxhash_rust::xxh3::xxh3_64(entity.as_bytes()) as u32;
    // u32::MAX is "all entities" (ALL).
    if k == ALL {
        0
    } else {
        k
    }
}

const SLOTS: usize = 7;
const LOCK: u64 = 1 << 63;
/// A slot of the bucket that a one-line access did not read ([`Buckets::with`]): neither a
/// key, nor free, nor evictable.
const BLOCKED: u64 = u64::MAX;
/// The entity id standing for "all entities" in the day table.
const ALL: u32 = u32::MAX;

impl Frequency {
    /// Tables sized for `config.subscribers`; `None` when no cap is set.
    pub fn new(config: FrequencyConfig) -> Option<Frequency> {
        let (days, texts) = Frequency::geometry(config)?;
        Some(Frequency {
            config,
            days: Arc::new(Buckets::with_buckets(days)),
            texts: Arc::new(Buckets::with_buckets(texts)),
            outbox: Arc::new(Outbox::default()),
        })
    }

    /// The caps of `config` over this engine's tables (a config reload): every count and
    /// same-text mark is kept. A table whose size `config` changes (`subscribers`,
    /// `peak_rate`, `same_text_window`, or a cap turned on or off) starts empty — its counts
    /// cannot be moved, their keys being hashed — and is named in the second value.
    pub fn carried(&self, config: FrequencyConfig) -> (Option<Frequency>, Vec<&'static str>) {
        let Some(fresh) = Frequency::geometry(config) else { return (None, Vec::new()) };
        let mut reset = Vec::new();
        let mut pick = |old: &Arc<Buckets>, n: usize, what| {
            if old.buckets.len() == n {
                old.clone()
            } else {
                if !old.buckets.is_empty() {
                    reset.push(what);
                }
                Arc::new(Buckets::with_buckets(n))
            }
        };
        let days = pick(&self.days, fresh.0, "day counts");
        let texts = pick(&self.texts, fresh.1, "same-text marks");
        (Some(Frequency { config, days, texts, outbox: self.outbox.clone() }), reset)
    }

    /// The bucket counts of the two tables `config` needs; `None` when no cap is set.
    fn geometry(config: FrequencyConfig) -> Option<(usize, usize)> {
        if !config.is_active() {
            return None;
        }
        let subs = config.subscribers.max(1024);
        let day_slots =
            if config.per_entity_per_day > 0 || config.per_subscriber_per_day > 0 { subs * 5 / 2 } else { 0 };
        let text_slots = config.peak_rate.max(1) * u64::from(config.same_text_window_s);
        Some((Buckets::count_for(day_slots), Buckets::count_for(text_slots)))
    }

    pub fn config(&self) -> &FrequencyConfig {
        &self.config
    }

    /// The marks for the other nodes (`replication::caps`).
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// Counts a message another node allowed (its [`Mark`]), as this node would have: the
    /// day counts it moved there, its same-text mark. Counts only rise.
    pub fn apply_remote(&self, m: &Mark) {
        let h = mix(m.msisdn);
        if m.flags & (Mark::ENTITY | Mark::SUBSCRIBER) != 0 && !self.days.buckets.is_empty() {
            let day = u64::from(m.day & 0xFFF);
            let fp_e = fingerprint44(mix(m.msisdn ^ mix(u64::from(m.entity) + 1)));
            let fp_s = fingerprint44(mix(m.msisdn ^ mix(u64::from(ALL) + 1)));
            let fps = [
                if m.flags & Mark::ENTITY != 0 { fp_e } else { 0 },
                if m.flags & Mark::SUBSCRIBER != 0 { fp_s } else { 0 },
            ];
            let mark = |p: &mut Pair, home: usize| day_mark(p, home, day, fps);
            self.days.with(
                h,
                |b| day_single(b, day, fps, true),
                mark,
                |b| {
                    if m.flags & Mark::ENTITY != 0 {
                        let e = day_get(b, fp_e, day);
                        day_set(b, fp_e, day, e + 1);
                    }
                    if m.flags & Mark::SUBSCRIBER != 0 {
                        let s = day_get(b, fp_s, day);
                        day_set(b, fp_s, day, s + 1);
                    }
                },
            );
        }
        let window = i64::from(self.config.same_text_window_s);
        if m.flags & Mark::TEXT != 0 && window > 0 && !self.texts.buckets.is_empty() {
            let unix_s = i64::from(m.unix_s);
            let fp = u64::from(m.text_fp);
            let single = |b: &[u64; 8]| text_single(b, unix_s, window, fp, true);
            let mark = |p: &mut Pair, home: usize| text_mark(p, home, unix_s, window, fp);
            self.texts.with(h, single, mark, |b| {
                // A later local mark is kept (the newest time is what the window reads).
                if text_last(b, u64::from(m.text_fp)).is_none_or(|t| t < unix_s) {
                    text_set(b, u64::from(m.text_fp), unix_s, window);
                }
            });
        }
    }

    /// Bytes held by both tables.
    pub fn table_bytes(&self) -> u64 {
        self.days.bytes() + self.texts.bytes()
    }

    /// Starts the loads of `msisdn`'s buckets (the session's read-ahead).
    #[inline]
    pub fn prefetch(&self, msisdn: u64) {
        let h = mix(msisdn);
        self.days.prefetch(h);
        self.texts.prefetch(h);
    }

    /// Step 8 for a message that passed every other step: refused by the first cap reached
    /// (`Some`), or allowed and counted (`None`). `per_entity` is the account's cap (its
    /// override or the policy's).
    pub fn check_and_count(&self, k: &Key, per_entity: u32) -> Option<Cap> {
        let h = mix(k.msisdn);
        let per_entity = self.outbox.cap(per_entity);
        let per_sub = self.outbox.cap(self.config.per_subscriber_per_day);
        let window = i64::from(self.config.same_text_window_s);
        let text_fp =
            if window > 0 { Some(fingerprint32(mix(k.msisdn ^ mix(u64::from(k.entity) ^ k.text)))) } else { None };
        // The text check first and without counting: a refused message must not move the
        // daily counts, and a message refused by a daily cap must not mark its text as sent.
        if let Some(fp) = text_fp {
            let single = |b: &[u64; 8]| text_single(b, k.unix_s, window, fp, false);
            let last = self.texts.with(h, single, |_, _| {}, |b| text_last(b, fp));
            if last.is_some_and(|t| k.unix_s - t < window) {
                return Some(Cap::SameText);
            }
        }
        if per_entity > 0 || per_sub > 0 {
            let day = (k.day & 0xFFF) as u64;
            let fp_e = fingerprint44(mix(k.msisdn ^ mix(u64::from(k.entity) + 1)));
            let fp_s = fingerprint44(mix(k.msisdn ^ mix(u64::from(ALL) + 1)));
            let fps = [if per_entity > 0 { fp_e } else { 0 }, if per_sub > 0 { fp_s } else { 0 }];
            let single = |b: &[u64; 8]| day_single(b, day, fps, true);
            let mark = |p: &mut Pair, home: usize| day_mark(p, home, day, fps);
            let refused = self.days.with(h, single, mark, |b| {
                let (e, s) = (day_get(b, fp_e, day), day_get(b, fp_s, day));
                if per_entity > 0 && e >= per_entity {
                    return Some(Cap::PerEntity);
                }
                if per_sub > 0 && s >= per_sub {
                    return Some(Cap::PerSubscriber);
                }
                // Only the counts a cap reads are kept: fewer keys, fewer evictions.
                if per_entity > 0 {
                    day_set(b, fp_e, day, e + 1);
                }
                if per_sub > 0 {
                    day_set(b, fp_s, day, s + 1);
                }
                None
            });
            if refused.is_some() {
                return refused;
            }
        }
        if let Some(fp) = text_fp {
            let single = |b: &[u64; 8]| text_single(b, k.unix_s, window, fp, true);
            let mark = |p: &mut Pair, home: usize| text_mark(p, home, k.unix_s, window, fp);
            self.texts.with(h, single, mark, |b| text_set(b, fp, k.unix_s, window));
        }
        let flags = (u8::from(per_entity > 0) * Mark::ENTITY)
            | (u8::from(per_sub > 0) * Mark::SUBSCRIBER)
            | (u8::from(text_fp.is_some()) * Mark::TEXT);
        self.outbox.push(Mark {
            msisdn: k.msisdn,
            entity: k.entity,
            day: k.day.clamp(0, 0x00FF_FFFF) as u32,
            flags,
            text_fp: text_fp.unwrap_or(0) as u32,
            unix_s: k.unix_s.clamp(0, u32::MAX as i64) as u32,
        });
        None
    }

    /// What `msisdn` has used today from `entity` and over all entities (upper bounds).
    pub fn usage(&self, msisdn: u64, entity: Option<u32>, day: i64) -> Usage {
        if self.days.buckets.is_empty() {
            return Usage::default();
        }
        let h = mix(msisdn);
        let day = (day & 0xFFF) as u64;
        let fp_s = fingerprint44(mix(msisdn ^ mix(u64::from(ALL) + 1)));
        let fp_e = entity.map(|e| fingerprint44(mix(msisdn ^ mix(u64::from(e) + 1))));
        let fps = [fp_e.unwrap_or(0), fp_s];
        self.days.with(
            h,
            |b| day_single(b, day, fps, false),
            |_, _| {},
            |b| Usage {
                entity_today: fp_e.map_or(0, |fp| day_get(b, fp, day)),
                subscriber_today: day_get(b, fp_s, day),
            },
        )
    }
}

// ----- state file ---------------------------------------------------------------------------
//
// The counts outlive the process (a graceful stop saves them, a start restores them, and a
// running gateway checkpoints them): a file of the tables' non-empty buckets.
//
// | bytes | field |
// |---|---|
// | 8 | magic `CGFREQ01` |
// | 8 | day table buckets (u64 LE) |
// | 8 | text table buckets |
// | 8 | saved at, Unix seconds (i64) |
// | 72 × n | records: `table << 63 \| bucket index` (u64), then the bucket's 8 words (header without the lock bit, 7 slots) |
// | 8 | `u64::MAX` (end) |
// | 8 | number of records n |
// | 8 | xxh3-64 of every byte before it |
//
// 72 bytes per non-empty bucket: a subscriber counted today takes one or two buckets of the
// day table (its entity's and the all-entities count share a bucket unless it overflowed),
// so about 72–144 bytes per counted subscriber; a same-text mark 72 bytes or less (a bucket
// holds seven). Every slot carries its own day or time, so a file from yesterday restores
// nothing that counts today, and one from a minute ago restores what was counted until then.

const STATE_MAGIC: &[u8; 8] = b"CGFREQ01";
const STATE_END: u64 = u64::MAX;

/// What [`Frequency::save`] wrote or [`Frequency::restore`] read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StateStats {
    /// Non-empty buckets (records) in the file.
    pub buckets: u64,
    pub bytes: u64,
    /// When the file was written, Unix seconds.
    pub saved_at: i64,
    /// [`Frequency::restore`]: the table the file held for another size and that was not
    /// restored (the other one was).
    pub skipped: Option<&'static str>,
}

/// Why a state file was not restored.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{0}")]
    Io(#[from] io::Error),
    /// Not a state file, or damaged (a bad checksum, a record out of range).
    #[error("not a frequency state file or damaged: {0}")]
    Format(&'static str),
    /// Written for tables of another size (`policy.frequency.subscribers`, `peak_rate` or
    /// `same_text_window` changed): its keys cannot be placed in these.
    #[error("written for tables of {file_days}/{file_texts} buckets, these have {days}/{texts}: counts not restored")]
    Geometry { file_days: u64, file_texts: u64, days: u64, texts: u64 },
}

/// Writes through to `inner` while hashing.
struct Hashing<W> {
    inner: W,
    hash: xxhash_rust::xxh3::Xxh3,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(b)?;
        self.hash.update(&b[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Frequency {
    /// Writes every non-empty bucket of both tables to `w` (see the format above). Each
    /// bucket is copied under its lock, so the file holds no torn bucket; buckets are copied
    /// one after another while the sessions keep counting, so it is a fuzzy checkpoint: each
    /// count as it was at some moment of the save.
    pub fn save(&self, w: impl Write, unix_s: i64) -> io::Result<StateStats> {
        let mut h = Hashing { inner: io::BufWriter::with_capacity(1 << 20, w), hash: Default::default(), bytes: 0 };
        h.write_all(STATE_MAGIC)?;
        h.write_all(&(self.days.buckets.len() as u64).to_le_bytes())?;
        h.write_all(&(self.texts.buckets.len() as u64).to_le_bytes())?;
        h.write_all(&unix_s.to_le_bytes())?;
        let mut n = 0u64;
        for (t, table) in [(0u64, &self.days), (1u64, &self.texts)] {
            for i in 0..table.buckets.len() {
                let b = table.copy(i);
                if b[1..].iter().all(|&w| w == 0) && b[0] == 0 {
                    continue;
                }
                h.write_all(&((t << 63) | i as u64).to_le_bytes())?;
                for w in b {
                    h.write_all(&w.to_le_bytes())?;
                }
                n += 1;
            }
        }
        h.write_all(&STATE_END.to_le_bytes())?;
        h.write_all(&n.to_le_bytes())?;
        let sum = h.hash.digest();
        let bytes = h.bytes + 8;
        h.inner.write_all(&sum.to_le_bytes())?;
        h.inner.flush()?;
        Ok(StateStats { buckets: n, bytes, saved_at: unix_s, skipped: None })
    }

    /// Reads a file [`Frequency::save`] wrote into these tables, before any session counts:
    /// the file is checked whole (checksum, ranges) before a bucket is written, so a damaged
    /// file changes nothing. A bucket is merged word by word with what the table holds by
    /// taking the file's bucket only where the table's is empty — at start, every bucket.
    pub fn restore(&self, mut r: impl Read) -> Result<StateStats, StateError> {
        let mut all = Vec::new();
        r.read_to_end(&mut all)?;
        if all.len() < 32 + 24 || &all[..8] != STATE_MAGIC {
            return Err(StateError::Format("no header"));
        }
        let (body, sum) = all.split_at(all.len() - 8);
        if xxhash_rust::xxh3::xxh3_64(body) != u64::from_le_bytes(sum.try_into().expect("8 bytes")) {
            return Err(StateError::Format("checksum mismatch"));
        }
        let word = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().expect("8 bytes"));
        let (file_days, file_texts, saved_at) = (word(8), word(16), word(24) as i64);
        let (days, texts) = (self.days.buckets.len() as u64, self.texts.buckets.len() as u64);
        // Table by table: a table of another size (its key hashes place differently) is
        // skipped, the other restored; neither fits → nothing is.
        let fits = [file_days == days, file_texts == texts];
        if !fits[0] && !fits[1] {
            return Err(StateError::Geometry { file_days, file_texts, days, texts });
        }
        let skipped = match fits {
            [false, _] => Some("day counts"),
            [_, false] => Some("same-text marks"),
            _ => None,
        };
        let records = &body[32..body.len() - 16];
        if records.len() % 72 != 0 || word(body.len() - 16) != STATE_END {
            return Err(StateError::Format("truncated"));
        }
        let n = (records.len() / 72) as u64;
        if word(body.len() - 8) != n {
            return Err(StateError::Format("record count mismatch"));
        }
        let mut parsed = Vec::with_capacity(n as usize);
        for rec in records.chunks_exact(72) {
            let w = |k: usize| u64::from_le_bytes(rec[k * 8..k * 8 + 8].try_into().expect("8 bytes"));
            let (table, i) = (w(0) >> 63, (w(0) & !(1 << 63)) as usize);
            let limit = if table == 0 { file_days } else { file_texts };
            if i as u64 >= limit {
                return Err(StateError::Format("bucket index out of range"));
            }
            if !fits[table as usize] {
                continue;
            }
            let mut b = [0u64; 8];
            for (k, v) in b.iter_mut().enumerate() {
                *v = w(k + 1);
            }
            b[0] &= !LOCK;
            parsed.push((table, i, b));
        }
        for (table, i, b) in parsed {
            let t = if table == 0 { &self.days } else { &self.texts };
            let words = &t.buckets[i].0;
            let header = lock(&words[0]);
            let empty = header == 0 && (1..8).all(|j| words[j].load(Ordering::Relaxed) == 0);
            if empty {
                for (j, v) in b.iter().enumerate().skip(1) {
                    words[j].store(*v, Ordering::Relaxed);
                }
                words[0].store(b[0], Ordering::Release);
            } else {
                words[0].store(header, Ordering::Release);
            }
        }
        Ok(StateStats { buckets: n, bytes: all.len() as u64, saved_at, skipped })
    }
}

// ----- buckets ------------------------------------------------------------------------------

/// One table: an array of buckets, each `[header, slot × 7]`. A subscriber's keys may sit in
/// either of two buckets (two-choice hashing): a lone bucket of 7 slots overflows at a few
/// subscribers, a pair balances to ~90 % full before anything is evicted.
#[derive(Debug)]
struct Buckets {
    buckets: Box<[Bucket]>,
}

#[derive(Debug, Default)]
#[repr(C, align(64))]
struct Bucket([AtomicU64; 8]);

/// The two buckets of a subscriber, copied under their locks.
type Pair = [[u64; 8]; 2];

/// Fill the tables are sized for at the expected load (percent). 60: with home-first
/// placement at 80 % the `at_design_load` test saw 690 evictions in 80 000 decisions (99.5 %
/// exact), at 60 % 64 (> 99.9 %), with one decision in nine reading two lines.
const LOAD: u64 = 60;

impl Buckets {
    /// Buckets for `slots` keys at the design fill; 0 for none.
    fn count_for(slots: u64) -> usize {
        if slots == 0 {
            return 0;
        }
        (slots * 100 / LOAD / SLOTS as u64).max(2) as usize
    }

    fn with_buckets(n: usize) -> Buckets {
        if n == 0 {
            return Buckets { buckets: Box::new([]) };
        }
        Buckets { buckets: zeroed(n) }
    }

    /// A copy of bucket `i` taken under its lock (never a torn bucket), without the lock bit.
    fn copy(&self, i: usize) -> [u64; 8] {
        let words = &self.buckets[i].0;
        let header = lock(&words[0]);
        let mut out = [0u64; 8];
        out[0] = header;
        for (j, w) in out.iter_mut().enumerate().skip(1) {
            *w = words[j].load(Ordering::Relaxed);
        }
        words[0].store(header, Ordering::Release);
        out
    }

    fn bytes(&self) -> u64 {
        (self.buckets.len() * std::mem::size_of::<Bucket>()) as u64
    }

    /// The two distinct bucket indexes of hash `h` (multiply-shift onto any table size).
    #[inline]
    fn indexes(&self, h: u64) -> (usize, usize) {
        let n = self.buckets.len() as u64;
        let a = ((u128::from(h) * u128::from(n)) >> 64) as usize;
        let g = mix(h ^ 0x5851_F42D_4C95_7F2D);
        let mut b = ((u128::from(g) * u128::from(n)) >> 64) as usize;
        if b == a {
            b = if a + 1 < n as usize { a + 1 } else { 0 };
        }
        (a, b)
    }

    /// Starts the load of `h`'s home bucket: the only line a decision touches unless the
    /// home has spilled (see [`Buckets::with`]).
    #[inline]
    fn prefetch(&self, h: u64) {
        if !self.buckets.is_empty() {
            let (a, _) = self.indexes(h);
            crate::consent::snapshot::prefetch_read(&self.buckets[a]);
        }
    }

    /// Runs `f` on copies of `h`'s buckets under their locks and writes the copies back.
    ///
    /// **One line when it can.** `h`'s first bucket is its home: when `single` says the home
    /// is enough (no live spill marker for this key, room for what `f` may add), only the
    /// home is locked, read and written, and the pair's second bucket is [`BLOCKED`] (no key,
    /// no room, no floor). Otherwise both buckets are locked (in index order: no deadlock),
    /// `f` may use either, and `mark` records in the home's header which of the keys it wrote
    /// went to the other bucket (a spill filter, live for a few days or one window). A lock is one bit
    /// of the header, held for a few dozen instructions by the two or so threads a node runs:
    /// a spin is all the waiting it needs.
    fn with<R>(
        &self,
        h: u64,
        single: impl Fn(&[u64; 8]) -> bool,
        mark: impl Fn(&mut Pair, usize),
        f: impl FnOnce(&mut Pair) -> R,
    ) -> R {
        let (a, b) = self.indexes(h);
        let home = &self.buckets[a].0;
        let header = lock(&home[0]);
        let mut one = [0u64; 8];
        one[0] = header;
        for (j, w) in one.iter_mut().enumerate().skip(1) {
            *w = home[j].load(Ordering::Relaxed);
        }
        if single(&one) {
            let mut pair: Pair = [one, [0, BLOCKED, BLOCKED, BLOCKED, BLOCKED, BLOCKED, BLOCKED, BLOCKED]];
            let r = f(&mut pair);
            for j in 1..8 {
                if pair[0][j] != one[j] {
                    home[j].store(pair[0][j], Ordering::Relaxed);
                }
            }
            home[0].store(pair[0][0] & !LOCK, Ordering::Release);
            return r;
        }
        home[0].store(header, Ordering::Release);
        let (lo, hi) = (a.min(b), a.max(b));
        let headers = [lock(&self.buckets[lo].0[0]), lock(&self.buckets[hi].0[0])];
        let mut pair: Pair = [[0; 8]; 2];
        for (k, i) in [lo, hi].into_iter().enumerate() {
            for (j, w) in pair[k].iter_mut().enumerate() {
                *w = if j == 0 { headers[k] } else { self.buckets[i].0[j].load(Ordering::Relaxed) };
            }
        }
        let before = pair;
        let r = f(&mut pair);
        mark(&mut pair, usize::from(a == hi));
        for (k, i) in [lo, hi].into_iter().enumerate() {
            let words = &self.buckets[i].0;
            for j in 1..8 {
                if pair[k][j] != before[k][j] {
                    words[j].store(pair[k][j], Ordering::Relaxed);
                }
            }
        }
        self.buckets[hi].0[0].store(pair[1][0] & !LOCK, Ordering::Release);
        self.buckets[lo].0[0].store(pair[0][0] & !LOCK, Ordering::Release);
        r
    }
}

/// `n` zeroed buckets straight from the allocator (`calloc`: the kernel's zero pages, so a
/// table of gigabytes costs nothing until used, and builds in no time).
#[allow(unsafe_code)]
fn zeroed(n: usize) -> Box<[Bucket]> {
    let layout = std::alloc::Layout::array::<Bucket>(n).expect("table size fits the address space");
    // SAFETY: a Bucket is eight AtomicU64, for which all-zero bytes are a valid value; the
    // pointer comes from the global allocator with the layout of `[Bucket; n]`, which is what
    // the Box frees it with; madvise only advises on pages inside it.
    unsafe {
        let p = std::alloc::alloc_zeroed(layout).cast::<Bucket>();
        if p.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        // Random access over gigabytes: on 4 KiB pages nearly every lookup also misses the
        // TLB (a page walk, another DRAM access or two), and the first touch of each page is a
        // page fault. Ask for 2 MiB pages, then — on a thread of its own, so the engine is
        // ready at once — fault the table in and collapse it onto huge pages (MADV_COLLAPSE,
        // Linux ≥ 6.1: page faults alone rarely get huge pages on a host whose memory is
        // fragmented). Advice on whole pages inside the allocation, which changes neither
        // content nor address; failure changes nothing.
        #[cfg(target_os = "linux")]
        {
            const HUGE: usize = 2 << 20;
            let (base, len) = (p as usize, layout.size());
            let (start, end) = (base.next_multiple_of(HUGE), (base + len) / HUGE * HUGE);
            if end > start {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
                let _ = std::thread::Builder::new().name("freq-hugepages".into()).spawn(move || {
                    const CHUNK: usize = 64 << 20;
                    let mut at = start;
                    while at < end {
                        let n = CHUNK.min(end - at);
                        // Advice only, as above (inside the outer unsafe block), on pages of the
                        // table. It normally lives as long as the process (reloads carry it); if
                        // it is freed first (a reload that resizes it, tests), the advice lands on
                        // pages no longer ours: populate and collapse change no contents, so the
                        // worst is memory touched in vain.
                        let q = at as *mut libc::c_void;
                        libc::madvise(q, n, libc::MADV_POPULATE_WRITE);
                        libc::madvise(q, n, libc::MADV_COLLAPSE);
                        at += n;
                    }
                });
            }
        }
        Box::from_raw(std::ptr::slice_from_raw_parts_mut(p, n))
    }
}

/// Takes the lock bit of `header`; the header's value without it.
#[inline]
fn lock(header: &AtomicU64) -> u64 {
    let mut v = header.load(Ordering::Relaxed);
    loop {
        if v & LOCK != 0 {
            std::hint::spin_loop();
            v = header.load(Ordering::Relaxed);
            continue;
        }
        match header.compare_exchange_weak(v, v | LOCK, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => return v,
            Err(x) => v = x,
        }
    }
}

/// Where to write a key absent from both buckets: a free slot in the emptier bucket, else
/// `evict` picks the victim over both (`Err((bucket, slot))`).
fn place(
    pair: &Pair,
    free: impl Fn(u64) -> bool,
    evict: impl Fn(u64, u64) -> bool,
) -> Result<(usize, usize), (usize, usize)> {
    let free = |s: u64| s != BLOCKED && free(s);
    let frees = [0, 1].map(|k| (1..8).filter(|&j| free(pair[k][j])).count());
    let k = usize::from(frees[1] > frees[0]);
    if let Some(j) = (1..8).find(|&j| free(pair[k][j])) {
        return Ok((k, j));
    }
    let mut victim = (0, 1);
    for k in 0..2 {
        for j in 1..8 {
            if pair[k][j] != BLOCKED && evict(pair[k][j], pair[victim.0][victim.1]) {
                victim = (k, j);
            }
        }
    }
    Err(victim)
}

/// A 64-bit mix of a key (SplitMix64's finaliser).
#[inline]
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Non-zero 44-bit fingerprint (0 marks an empty slot).
#[inline]
fn fingerprint44(h: u64) -> u64 {
    (h >> 20).max(1)
}

#[inline]
fn fingerprint32(h: u64) -> u64 {
    (h >> 32).max(1)
}

// ----- day table ----------------------------------------------------------------------------
//
// header: lock (bit 63) | newest floor day (bits 24..36) | floor of that day (16..24), of the
// day before (8..16), of two days before (0..8).

#[inline]
fn slot_fp44(s: u64) -> u64 {
    s >> 20
}
#[inline]
fn slot_day(s: u64) -> u64 {
    (s >> 8) & 0xFFF
}
#[inline]
fn slot_count(s: u64) -> u32 {
    (s & 0xFF) as u32
}

/// Days `a` is before `b`, modulo the 12-bit day.
#[inline]
fn days_before(a: u64, b: u64) -> u64 {
    b.wrapping_sub(a) & 0xFFF
}

fn floor_of(header: u64, day: u64) -> u32 {
    let newest = (header >> 24) & 0xFFF;
    match days_before(day, newest) {
        0 => ((header >> 16) & 0xFF) as u32,
        1 => ((header >> 8) & 0xFF) as u32,
        2 => (header & 0xFF) as u32,
        // A day after the newest floor (nothing of that day evicted yet), or long before.
        _ => 0,
    }
}

/// Raises the floor of `day` to at least `count`.
fn raise_floor(header: &mut u64, day: u64, count: u32) {
    let newest = (*header >> 24) & 0xFFF;
    let floors = [(*header >> 16) & 0xFF, (*header >> 8) & 0xFF, *header & 0xFF];
    let ahead = days_before(newest, day);
    let (newest, floors) = if floors == [0, 0, 0] || (ahead > 0 && ahead < 2048) {
        // `day` is the first or after the newest: the floors move back by the difference.
        let mut f = [u64::from(count), 0, 0];
        if floors != [0, 0, 0] {
            for (i, v) in floors.into_iter().enumerate() {
                let j = i as u64 + ahead;
                if j <= 2 {
                    f[j as usize] = f[j as usize].max(v);
                }
            }
        }
        (day, f)
    } else {
        let back = days_before(day, newest);
        if back > 2 {
            return; // more than two days before the newest: no live key can read it.
        }
        let mut f = floors;
        f[back as usize] = f[back as usize].max(u64::from(count));
        (newest, f)
    };
    *header = (*header & (LOCK | DAY_SPILL_BITS)) | (newest << 24) | (floors[0] << 16) | (floors[1] << 8) | floors[2];
}

/// The day table's spill marker (see [`Buckets::with`]) in a home bucket's header: bits
/// 36..48 the newest local day on which one of its keys went to the other bucket, bits
/// 48..62 a 14-bit filter of those keys' fingerprints (none: 0). A key whose bits are not
/// all in the filter, or whose day is more than two days before the marker's or after it,
/// is not in the other bucket.
const DAY_SPILL_BITS: u64 = ((1 << 26) - 1) << 36;

fn spill_bits(fp: u64, width: u32) -> u64 {
    (1 << (fp % u64::from(width))) | (1 << ((fp >> 17) % u64::from(width)))
}

/// Key `fp` of `day` may be in the other bucket.
fn day_spilled(header: u64, day: u64, fp: u64) -> bool {
    let filter = (header >> 48) & 0x3FFF;
    let bits = spill_bits(fp, 14);
    filter & bits == bits && days_before(day, (header >> 36) & 0xFFF) <= 2
}

/// Records that key `fp` of `day` is in the other bucket.
fn day_mark_spill(header: &mut u64, day: u64, fp: u64) {
    let (filter, at) = ((*header >> 48) & 0x3FFF, (*header >> 36) & 0xFFF);
    let live = filter != 0 && (days_before(day, at) <= 2 || days_before(at, day) <= 2);
    let (filter, at) = if !live {
        (spill_bits(fp, 14), day)
    } else {
        let ahead = days_before(at, day);
        (filter | spill_bits(fp, 14), if ahead > 0 && ahead <= 2 { day } else { at })
    };
    *header = (*header & !DAY_SPILL_BITS) | (filter << 48) | (at << 36);
}

/// A day-table slot a key of `day` may take: empty, or of a day no subscriber can still be
/// on (more than two from `day`).
fn day_free(s: u64, day: u64) -> bool {
    s == 0 || days_before(slot_day(s), day) > 2 && days_before(day, slot_day(s)) > 2
}

/// One line is enough for an operation on `day` on the keys `fps` (0 = none) that `adds`
/// (writes them if absent) or only reads: none of them may be in the other bucket, and the
/// home has room for those it does not hold, with one slot to spare (a home that fills up
/// hands its next keys to the two-choice placement early, which keeps the pair balanced).
fn day_single(b: &[u64; 8], day: u64, fps: [u64; 2], adds: bool) -> bool {
    if fps.iter().any(|&fp| fp != 0 && day_spilled(b[0], day, fp)) {
        return false;
    }
    if !adds {
        return true;
    }
    let held = |fp: u64| b[1..].iter().any(|&s| s != 0 && slot_fp44(s) == fp && slot_day(s) == day);
    let new = fps.iter().filter(|&&fp| fp != 0 && !held(fp)).count();
    new == 0 || b[1..].iter().filter(|&&s| day_free(s, day)).count() > new
}

/// After a two-line operation on `day`: marks in the home (`pair[home]`) the keys of `fps`
/// that are in the other bucket.
fn day_mark(pair: &mut Pair, home: usize, day: u64, fps: [u64; 2]) {
    let other = 1 - home;
    for fp in fps.into_iter().filter(|&fp| fp != 0) {
        if pair[other][1..].iter().any(|&s| s != 0 && s != BLOCKED && slot_fp44(s) == fp && slot_day(s) == day) {
            day_mark_spill(&mut pair[home][0], day, fp);
        }
    }
}

fn day_get(pair: &Pair, fp: u64, day: u64) -> u32 {
    for b in pair {
        for &s in &b[1..] {
            if s != 0 && s != BLOCKED && slot_fp44(s) == fp && slot_day(s) == day {
                return slot_count(s);
            }
        }
    }
    floor_of(pair[0][0], day).max(floor_of(pair[1][0], day))
}

fn day_set(pair: &mut Pair, fp: u64, day: u64, count: u32) {
    let word = (fp << 20) | (day << 8) | u64::from(count.min(255));
    for b in pair.iter_mut() {
        for s in &mut b[1..] {
            if *s != 0 && *s != BLOCKED && slot_fp44(*s) == fp && slot_day(*s) == day {
                *s = word;
                return;
            }
        }
    }
    let (k, j) = match place(pair, |s| day_free(s, day), |s, v| slot_count(s) < slot_count(v)) {
        Ok(at) => at,
        Err((k, j)) => {
            let s = pair[k][j];
            raise_floor(&mut pair[k][0], slot_day(s), slot_count(s));
            (k, j)
        }
    };
    pair[k][j] = word;
}

// ----- text table ---------------------------------------------------------------------------
//
// header: lock (bit 63) | floor: the latest time evicted, Unix seconds (bits 0..32).

/// The text table's spill marker in a home bucket's header: bits 32..46 the latest time
/// (Unix seconds / 64, modulo 2^14) one of its keys went to the other bucket, bits 46..62 a
/// 16-bit filter of those keys' fingerprints.
const TEXT_SPILL_BITS: u64 = ((1 << 30) - 1) << 32;

fn text_spilled(header: u64, unix_s: i64, window: i64, fp: u64) -> bool {
    let filter = (header >> 46) & 0xFFFF;
    let bits = spill_bits(fp, 16);
    let at = (header >> 32) & 0x3FFF;
    let now = ((unix_s.max(0) as u64) / 64) & 0x3FFF;
    filter & bits == bits && (now.wrapping_sub(at) & 0x3FFF) as i64 <= window / 64 + 1
}

fn text_mark_spill(header: &mut u64, unix_s: i64, window: i64, fp: u64) {
    let (filter, at) = ((*header >> 46) & 0xFFFF, (*header >> 32) & 0x3FFF);
    let now = ((unix_s.max(0) as u64) / 64) & 0x3FFF;
    let live = filter != 0 && (now.wrapping_sub(at) & 0x3FFF) as i64 <= window / 64 + 1;
    let filter = if live { filter | spill_bits(fp, 16) } else { spill_bits(fp, 16) };
    *header = (*header & !TEXT_SPILL_BITS) | (filter << 46) | (now << 32);
}

fn text_free(s: u64, unix_s: i64, window: i64) -> bool {
    s == 0 || unix_s - (s & 0xFFFF_FFFF) as i64 >= window
}

/// One line is enough for a same-text operation at `unix_s` on key `fp`: it is not in the
/// other bucket, and when it `adds`, the home holds it or has room for it.
fn text_single(b: &[u64; 8], unix_s: i64, window: i64, fp: u64, adds: bool) -> bool {
    !text_spilled(b[0], unix_s, window, fp)
        && (!adds
            || b[1..].iter().any(|&s| s != 0 && s >> 32 == fp)
            || b[1..].iter().filter(|&&s| text_free(s, unix_s, window)).count() > 1)
}

/// After a two-line same-text operation: marks key `fp` in the home if it is in the other
/// bucket.
fn text_mark(pair: &mut Pair, home: usize, unix_s: i64, window: i64, fp: u64) {
    if pair[1 - home][1..].iter().any(|&s| s != 0 && s != BLOCKED && s >> 32 == fp) {
        text_mark_spill(&mut pair[home][0], unix_s, window, fp);
    }
}

fn text_last(pair: &Pair, fp: u64) -> Option<i64> {
    for b in pair {
        for &s in &b[1..] {
            if s != 0 && s != BLOCKED && s >> 32 == fp {
                return Some((s & 0xFFFF_FFFF) as i64);
            }
        }
    }
    let floor = (pair[0][0] & 0xFFFF_FFFF).max(pair[1][0] & 0xFFFF_FFFF) as i64;
    (floor > 0).then_some(floor)
}

fn text_set(pair: &mut Pair, fp: u64, unix_s: i64, window: i64) {
    let t = (unix_s.clamp(1, u32::MAX as i64)) as u64;
    let word = (fp << 32) | t;
    for b in pair.iter_mut() {
        for s in &mut b[1..] {
            if *s != 0 && *s != BLOCKED && *s >> 32 == fp {
                *s = word;
                return;
            }
        }
    }
    let at = |s: u64| (s & 0xFFFF_FFFF) as i64;
    let (k, j) = match place(pair, |s| text_free(s, unix_s, window), |s, v| at(s) < at(v)) {
        Ok(at) => at,
        Err((k, j)) => {
            let evicted = at(pair[k][j]) as u64;
            if evicted > pair[k][0] & 0xFFFF_FFFF {
                pair[k][0] = (pair[k][0] & !0xFFFF_FFFF) | evicted;
            }
            (k, j)
        }
    };
    pair[k][j] = word;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(e: u32, s: u32, w: u32) -> FrequencyConfig {
        FrequencyConfig {
            per_entity_per_day: e,
            per_subscriber_per_day: s,
            same_text_window_s: w,
            subscribers: 1024,
            peak_rate: 1024,
            checkpoint_s: FrequencyConfig::DEFAULT_CHECKPOINT_S,
        }
    }

    fn key(msisdn: u64, entity: u32, day: i64, text: u64, unix_s: i64) -> Key {
        Key { msisdn, entity, day, text, unix_s }
    }

    /// Counts `n` messages to each of `subs` subscribers from entity 7 on day 100.
    fn fill(f: &Frequency, subs: u64, n: u32) {
        for m in 0..subs {
            for i in 0..u64::from(n) {
                assert_eq!(f.check_and_count(&key(8613800000000 + m, 7, 100, m * 16 + i, 1_000), 5), None);
            }
        }
    }

    #[test]
    fn saved_counts_restore_exactly_into_empty_tables() {
        let f = Frequency::new(cfg(5, 9, 3600)).unwrap();
        fill(&f, 500, 3);
        let mut file = Vec::new();
        let st = f.save(&mut file, 1_234).unwrap();
        assert_eq!(st.bytes, file.len() as u64);
        assert!(st.buckets > 0 && st.buckets * 72 + 56 == st.bytes, "{st:?}");
        let g = Frequency::new(cfg(5, 9, 3600)).unwrap();
        let r = g.restore(&file[..]).unwrap();
        assert_eq!((r.buckets, r.saved_at), (st.buckets, 1_234));
        for m in 0..500 {
            let u = g.usage(8613800000000 + m, Some(7), 100);
            assert_eq!((u.entity_today, u.subscriber_today), (3, 3), "subscriber {m}");
            // The same-text marks came too.
            assert_eq!(g.check_and_count(&key(8613800000000 + m, 7, 100, m * 16, 1_010), 5), Some(Cap::SameText));
        }
        // Another day counts from zero (the slots carry their day).
        assert_eq!(g.usage(8613800000000, Some(7), 101).entity_today, 0);
    }

    /// The state file's size per subscriber counted today, at 10 % of the design load (one
    /// entity each: its count and the all-entities count) and at the design load.
    #[test]
    fn the_state_file_costs_at_most_two_buckets_per_counted_subscriber() {
        for (design, counted) in [(100_000u64, 10_000u64), (100_000, 100_000)] {
            let f = Frequency::new(FrequencyConfig { subscribers: design, ..cfg(5, 9, 0) }).unwrap();
            for m in 0..counted {
                assert_eq!(f.check_and_count(&key(8613000000000 + m * 7919, 7, 100, 0, 1_000), 5), None);
            }
            let mut file = Vec::new();
            let st = f.save(&mut file, 1).unwrap();
            let per = st.bytes as f64 / counted as f64;
            println!(
                "STATE|{counted} subscribers counted, tables for {design}: {} bytes, {per:.1} bytes each",
                st.bytes
            );
            assert!((20.0..=145.0).contains(&per), "{per} bytes per counted subscriber");
        }
    }

    #[test]
    fn a_damaged_or_foreign_state_file_changes_nothing() {
        let f = Frequency::new(cfg(5, 0, 0)).unwrap();
        fill(&f, 50, 2);
        let mut file = Vec::new();
        f.save(&mut file, 1).unwrap();
        let g = Frequency::new(cfg(5, 0, 0)).unwrap();
        let mut bad = file.clone();
        bad[40] ^= 1;
        assert!(matches!(g.restore(&bad[..]), Err(StateError::Format(_))));
        assert!(matches!(g.restore(&file[..file.len() - 9]), Err(StateError::Format(_))));
        assert!(matches!(g.restore(&b"not a state file at all, not at all, no"[..]), Err(StateError::Format(_))));
        assert_eq!(g.usage(8613800000000, Some(7), 100).entity_today, 0, "nothing restored");
        // The day table resized (no text table either side): nothing fits, nothing restored.
        let other = Frequency::new(FrequencyConfig { subscribers: 100_000, ..cfg(5, 0, 0) }).unwrap();
        let st = other.restore(&file[..]).unwrap();
        assert_eq!(st.skipped, Some("day counts"));
        assert_eq!(other.usage(8613800000000, Some(7), 100).entity_today, 0);
        // Both tables of other sizes: refused.
        let both = Frequency::new(FrequencyConfig { subscribers: 100_000, ..cfg(5, 0, 60) }).unwrap();
        assert!(matches!(both.restore(&file[..]), Err(StateError::Geometry { .. })));
    }

    /// A restart that resized one table (here the same-text table) restores the other.
    #[test]
    fn a_state_file_restores_the_table_whose_size_still_fits() {
        let f = Frequency::new(cfg(5, 0, 60)).unwrap();
        fill(&f, 50, 2);
        let mut file = Vec::new();
        f.save(&mut file, 1).unwrap();
        let g = Frequency::new(FrequencyConfig { peak_rate: 4096, ..cfg(5, 0, 60) }).unwrap();
        let st = g.restore(&file[..]).unwrap();
        assert_eq!(st.skipped, Some("same-text marks"));
        assert_eq!(g.usage(8613800000000, Some(7), 100).entity_today, 2, "day counts restored");
        assert_eq!(g.check_and_count(&key(8613800000000, 7, 100, 0, 1_010), 5), None, "marks not restored");
    }

    #[test]
    fn a_reload_carries_the_tables_unless_their_size_changes() {
        let f = Frequency::new(cfg(3, 0, 60)).unwrap();
        fill(&f, 10, 2);
        // New caps, same sizes: counts kept, the new cap applies.
        let (g, reset) = f.carried(cfg(2, 0, 60));
        let g = g.unwrap();
        assert!(reset.is_empty());
        assert_eq!(g.check_and_count(&key(8613800000000, 7, 100, 99, 2_000), 2), Some(Cap::PerEntity));
        // The text table resized: it starts empty, the day counts stay.
        let (h, reset) = f.carried(cfg(3, 0, 120));
        assert_eq!(reset, vec!["same-text marks"]);
        assert_eq!(h.unwrap().usage(8613800000001, Some(7), 100).entity_today, 2);
        assert!(f.carried(cfg(0, 0, 0)).0.is_none(), "no cap: no table");
    }

    #[test]
    fn a_node_counts_the_other_nodes_marks_as_its_own() {
        let (m, day, t) = (8613800138000, 20_600, 1_780_000_000);
        let here = Frequency::new(cfg(3, 0, 60)).unwrap();
        let there = Frequency::new(cfg(3, 0, 60)).unwrap();
        there.outbox().enable();
        assert!(here.outbox().take().is_empty(), "no exchange: nothing collected");
        assert_eq!(there.check_and_count(&key(m, 1, day, 7, t), 3), None);
        assert_eq!(there.check_and_count(&key(m, 1, day, 8, t), 3), None);
        let marks = there.outbox().take();
        assert_eq!(marks.len(), 2);
        // On the wire and back.
        let mut blob = Vec::new();
        for mk in &marks {
            mk.encode(&mut blob);
        }
        assert_eq!(blob.len(), 2 * Mark::BYTES);
        assert_eq!(Mark::decode_all(&blob).unwrap(), marks);
        assert_eq!(Mark::decode_all(&blob[1..]), None);
        for mk in &marks {
            here.apply_remote(mk);
        }
        // Two counted elsewhere: one left here; the same text is a repeat here too.
        assert_eq!(here.check_and_count(&key(m, 1, day, 7, t + 1), 3), Some(Cap::SameText));
        assert_eq!(here.check_and_count(&key(m, 1, day, 9, t + 1), 3), None);
        assert_eq!(here.check_and_count(&key(m, 1, day, 10, t + 1), 3), Some(Cap::PerEntity));
        assert_eq!(here.usage(m, Some(1), day).entity_today, 3);
    }

    #[test]
    fn divided_caps_and_a_bounded_outbox() {
        let (m, day, t) = (8613800138000, 20_600, 1_780_000_000);
        let f = Frequency::new(cfg(4, 0, 0)).unwrap();
        f.outbox().set_divisor(3);
        // 4 / 3 = 1 while the other nodes cannot be reached.
        assert_eq!(f.check_and_count(&key(m, 1, day, 0, t), 4), None);
        assert_eq!(f.check_and_count(&key(m, 1, day, 0, t), 4), Some(Cap::PerEntity));
        f.outbox().set_divisor(1);
        assert_eq!(f.check_and_count(&key(m, 1, day, 0, t), 4), None);
        // Marks not sent go back in front, in order.
        f.outbox().enable();
        assert_eq!(f.check_and_count(&key(m + 1, 1, day, 0, t), 4), None);
        let first = f.outbox().take();
        assert_eq!(f.check_and_count(&key(m + 2, 1, day, 0, t), 4), None);
        f.outbox().put_back(first);
        let all: Vec<u64> = f.outbox().take().iter().map(|k| k.msisdn).collect();
        assert_eq!(all, [m + 1, m + 2]);
        assert_eq!(f.outbox().dropped(), 0);
    }

    #[test]
    fn per_entity_and_per_subscriber_caps() {
        let f = Frequency::new(cfg(2, 3, 0)).unwrap();
        let (m, day, t) = (8613800138000, 20_600, 1_780_000_000);
        assert_eq!(f.check_and_count(&key(m, 1, day, 0, t), 2), None);
        assert_eq!(f.check_and_count(&key(m, 1, day, 0, t), 2), None);
        assert_eq!(f.check_and_count(&key(m, 1, day, 0, t), 2), Some(Cap::PerEntity));
        assert_eq!(f.check_and_count(&key(m, 2, day, 0, t), 2), None);
        assert_eq!(f.check_and_count(&key(m, 3, day, 0, t), 2), Some(Cap::PerSubscriber));
        assert_eq!(f.usage(m, Some(1), day), Usage { entity_today: 2, subscriber_today: 3 });
        // The next local day starts from zero; another subscriber is not affected.
        assert_eq!(f.check_and_count(&key(m, 1, day + 1, 0, t), 2), None);
        assert_eq!(f.check_and_count(&key(m + 1, 1, day, 0, t), 2), None);
        // An account override of 0 lifts the entity cap; the subscriber cap still holds.
        let g = Frequency::new(cfg(1, 2, 0)).unwrap();
        assert_eq!(g.check_and_count(&key(m, 1, day, 0, t), 0), None);
        assert_eq!(g.check_and_count(&key(m, 1, day, 0, t), 0), None);
        assert_eq!(g.check_and_count(&key(m, 1, day, 0, t), 0), Some(Cap::PerSubscriber));
    }

    #[test]
    fn same_text_within_the_window_only() {
        let f = Frequency::new(cfg(0, 0, 60)).unwrap();
        let (m, t) = (8613800138000, 1_780_000_000);
        assert_eq!(f.check_and_count(&key(m, 1, 0, 42, t), 0), None);
        assert_eq!(f.check_and_count(&key(m, 1, 0, 42, t + 59), 0), Some(Cap::SameText));
        assert_eq!(f.check_and_count(&key(m, 1, 0, 43, t + 59), 0), None, "another text");
        assert_eq!(f.check_and_count(&key(m, 2, 0, 42, t + 59), 0), None, "another entity");
        assert_eq!(f.check_and_count(&key(m, 1, 0, 42, t + 60), 0), None, "window over");
    }

    #[test]
    fn a_refused_message_is_not_counted() {
        let f = Frequency::new(cfg(1, 0, 60)).unwrap();
        let (m, t) = (8613800138000, 1_780_000_000);
        assert_eq!(f.check_and_count(&key(m, 1, 0, 1, t), 1), None);
        // Refused by the entity cap: its text must not be marked as sent.
        assert_eq!(f.check_and_count(&key(m, 1, 0, 2, t), 1), Some(Cap::PerEntity));
        assert_eq!(f.check_and_count(&key(m, 1, 1, 2, t + 1), 1), None, "next day, text 2 never sent");
    }

    /// A table far too small for its traffic: counts read high (refuse early), never low.
    #[test]
    fn an_overfull_table_only_over_counts() {
        let f = Frequency::new(FrequencyConfig { subscribers: 1, ..cfg(3, 0, 0) }).unwrap();
        let buckets = f.days.buckets.len() as u64 / 2;
        let day = 20_600;
        let subscribers = buckets * 40; // ~ 40 × 2 keys per bucket for 7 slots
        let mut sent = vec![0u32; subscribers as usize];
        for round in 0..5 {
            for (i, n) in sent.iter_mut().enumerate() {
                let m = 8613000000000 + i as u64 * 7919;
                let allowed = f.check_and_count(&key(m, 9, day, 0, 0), 3).is_none();
                if allowed {
                    *n += 1;
                }
                assert!(*n <= 3, "subscriber {i} got {n} in round {round}");
            }
        }
        for (i, &n) in sent.iter().enumerate() {
            let m = 8613000000000 + i as u64 * 7919;
            assert!(f.usage(m, Some(9), day).entity_today >= n, "{i}");
        }
    }

    /// At the load the table is sized for, almost every subscriber gets exactly the cap.
    #[test]
    fn at_design_load_the_cap_is_exact() {
        let subscribers = 20_000u64;
        let f = Frequency::new(FrequencyConfig { subscribers, ..cfg(3, 5, 0) }).unwrap();
        let day = 20_600;
        let mut sent = vec![0u32; subscribers as usize];
        for _ in 0..4 {
            for (i, n) in sent.iter_mut().enumerate() {
                let m = 8613000000000 + i as u64 * 7919;
                *n += u32::from(f.check_and_count(&key(m, 9, day, 0, 0), 3).is_none());
            }
        }
        assert!(sent.iter().all(|&n| n <= 3));
        let exact = sent.iter().filter(|&&n| n == 3).count() as f64 / subscribers as f64;
        assert!(exact > 0.999, "{exact}");
    }

    /// Subscribers on different local dates in one bucket: an eviction of the newer day must
    /// not wipe the floor of the older.
    #[test]
    fn floors_keep_three_days() {
        let mut h = 0u64;
        raise_floor(&mut h, 100, 5);
        raise_floor(&mut h, 101, 2);
        assert_eq!((floor_of(h, 100), floor_of(h, 101), floor_of(h, 102)), (5, 2, 0));
        raise_floor(&mut h, 99, 7);
        assert_eq!(floor_of(h, 99), 7);
        raise_floor(&mut h, 103, 1);
        assert_eq!((floor_of(h, 101), floor_of(h, 103), floor_of(h, 100)), (2, 1, 0));
        // Wraps at 4096 days.
        let mut w = 0u64;
        raise_floor(&mut w, 4095, 3);
        raise_floor(&mut w, 0, 4);
        assert_eq!((floor_of(w, 4095), floor_of(w, 0)), (3, 4));
    }
}
