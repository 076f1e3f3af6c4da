//! The relay logic of one session, without I/O: both legs' buffers ([`LegState`]), the
//! sequence tables, the [`Lifecycle`], and the calls into the decision pipeline, the opt-out
//! gate and the audit log. The driver in `mod.rs` moves bytes between the transports and
//! these buffers; unit tests (`tests.rs`) drive this type with PDUs and clock ticks alone.
//!
//! Invariant: every request consentgate accepted from either peer is answered exactly once —
//! by the other peer's response, or locally (window full, malformed, timeout, the other leg
//! gone, drain at shutdown).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tracing::debug;

use super::audit::SessionAudit;
use super::lifecycle::{Lifecycle, Step};
use super::metrics::{self, ErrorKind, SessionStats};
use super::optout_gate::OptoutGate;
use super::{Context, Settings};
use crate::policy::{Account, AccountIdx, Engine, SessionPolicy, PREFETCH_DISTANCE, PREFETCH_GROUP};
use crate::relay::seq::{Pending, SeqTable};
use crate::relay::LegState;
use crate::smpp::frame::Next;
use crate::smpp::pdu::put_header_only;
use crate::smpp::status::ESME_RX_T_APPN;
use crate::smpp::{cmd, peek, status, BindType, HEADER_LEN};
use crate::time::Now;

/// Which peer a leg faces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The ESME leg.
    Esme,
    /// The SMSC leg.
    Smsc,
}

/// Longest wait for the final unbind_resp(s) when a session closes.
const CLOSE_WAIT_MS: u64 = 2_000;

/// One bound session's state and behaviour.
pub struct Session {
    pub(super) ctx: Arc<Context>,
    /// The settings in force for this session, and the engine generation they (and the
    /// policy's engine) were taken at: both are re-taken when a config reload moves it.
    pub(super) settings: Arc<Settings>,
    generation: u64,
    pub(super) policy: SessionPolicy,
    pub(super) optout: OptoutGate,
    pub(super) audit: SessionAudit,
    pub stats: SessionStats,
    pub(super) metrics: metrics::SessionMetrics,
    /// Rejected destinations of forwarded submit_multi, by upstream sequence number.
    pub(super) multi_rejects: HashMap<u32, (u8, Vec<u8>)>,
    /// One sampled upstream request: (upstream sequence number, sent at µs).
    pub(super) up_sample: Option<(u32, u64)>,
    pub(super) bind_type: BindType,
    pub(super) peer: SocketAddr,
    pub esme: LegState,
    pub smsc: LegState,
    /// Requests written to the SMSC (relayed from the ESME, or consentgate's own).
    pub(super) smsc_table: SeqTable,
    /// Requests written to the ESME (relayed from the SMSC, or consentgate's own).
    pub(super) esme_table: SeqTable,
    pub(super) life: Lifecycle,
    /// The session clock, read once per event: µs and ms since the session began, and the
    /// wall clock for the decision pipeline.
    pub(super) now_us: u64,
    pub(super) now_ms: u64,
    pub(super) now: Now,
    pub(super) expired: Vec<Pending>,
}

impl Session {
    /// A session of `account` of `engine` (the engine that admitted the bind, and the
    /// generation read before it was loaded: a reload since is taken at the first read).
    pub(crate) fn new(
        ctx: Arc<Context>,
        (engine, generation): (Arc<Engine>, u64),
        account: AccountIdx,
        bind_type: BindType,
        peer: SocketAddr,
        esme_rbuf: BytesMut,
        smsc_rbuf: BytesMut,
    ) -> Session {
        let settings = ctx.settings();
        let cap = (settings.session.window * 2).max(64);
        let max = settings.session.max_pdu_bytes;
        let a = engine.account(account);
        let session_id = ctx.next_session.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Session {
            optout: OptoutGate::new(ctx.store.clone(), settings.keywords.clone(), settings.opt_in.of(&a.system_id)),
            audit: SessionAudit::new(&ctx.audit, &a.system_id, &a.entity, session_id),
            stats: SessionStats::default(),
            metrics: metrics::SessionMetrics::new(&a.system_id),
            multi_rejects: HashMap::new(),
            up_sample: None,
            bind_type,
            peer,
            esme: LegState::new(max, esme_rbuf),
            smsc: LegState::new(max, smsc_rbuf),
            smsc_table: SeqTable::new(cap),
            esme_table: SeqTable::new(cap),
            life: Lifecycle::default(),
            now_us: 0,
            now_ms: 0,
            now: Now { unix_ms: ctx.clock.unix_ms(), mono_ms: 0 },
            expired: Vec::new(),
            policy: SessionPolicy::new(engine, ctx.store.clone(), account),
            settings,
            generation,
            ctx,
        }
    }

    /// Takes a reloaded config (engine and settings) if one was swapped in since the last
    /// look: one relaxed load otherwise. Called before every read batch and on every tick.
    #[inline]
    pub(super) fn check_reload(&mut self) {
        if self.ctx.engine.generation() != self.generation {
            self.reload();
        }
    }

    /// A reload: the account is looked up again by `system_id` in the new engine. Kept, the
    /// session goes on under its new settings from the next PDU (nothing in flight is
    /// touched). Removed, its licence expired or its bind type no longer allowed, the
    /// session drains — new requests refused, every one in flight answered — and unbinds
    /// both legs.
    #[cold]
    fn reload(&mut self) {
        self.generation = self.ctx.engine.generation();
        let engine = self.ctx.engine.load();
        self.settings = self.ctx.settings();
        let opt_in = self.settings.opt_in.of(&self.account().system_id);
        self.optout.set_keywords(self.settings.keywords.clone(), opt_in);
        let want = (self.settings.session.window * 2).max(64);
        self.smsc_table.grow(want);
        self.esme_table.grow(want);
        let system_id = self.account().system_id.clone();
        let kept = match engine.lookup(&system_id) {
            None => Err("account removed by a config reload"),
            Some(idx) => {
                let a = engine.account(idx);
                if a.licence_valid_on(self.ctx.clock.now().utc_day()).is_err() {
                    Err("licence expired (config reload)")
                } else if !a.bind_types.contains(&self.bind_type) {
                    Err("bind type no longer allowed (config reload)")
                } else {
                    Ok(idx)
                }
            }
        };
        match kept {
            Ok(idx) => {
                let entity_changed = engine.account(idx).entity != self.account().entity;
                self.policy.rebind(engine, idx);
                if entity_changed {
                    let a = self.policy.engine().account(self.policy.account());
                    self.audit.set_account(&self.ctx.audit, &a.system_id, &a.entity);
                }
            }
            Err(why) => {
                tracing::info!(peer = %self.peer, system_id = %system_id, why, "session unbinding");
                self.begin_drain(why);
            }
        }
    }

    pub fn account(&self) -> &Account {
        self.policy.engine().account(self.policy.account())
    }

    pub fn close_reason(&self) -> &'static str {
        self.life.close_reason()
    }

    pub fn is_done(&self) -> bool {
        self.life.is_done()
    }

    /// Sets the session clock: `now_us` since the session began, and the wall clock.
    pub fn set_clock(&mut self, now_us: u64) {
        self.now_us = now_us;
        self.now_ms = now_us / 1000;
        // The session clock is this session's monotonic count: no second monotonic read.
        self.now = Now { unix_ms: self.ctx.clock.unix_ms(), mono_ms: self.now_ms };
    }

    // ----- framing -------------------------------------------------------------------------

    /// Handles every complete PDU the ESME leg has buffered.
    pub fn process_down(&mut self) {
        self.process(Side::Esme);
    }

    /// Handles every complete PDU the SMSC leg has buffered.
    pub fn process_up(&mut self) {
        self.process(Side::Smsc);
    }

    /// The leg that faces `side`.
    #[inline]
    pub(super) fn leg(&mut self, side: Side) -> &mut LegState {
        match side {
            Side::Esme => &mut self.esme,
            Side::Smsc => &mut self.smsc,
        }
    }

    /// Frames what `side`'s leg has buffered and handles each PDU. A command_length over the
    /// maximum is answered generic_nack and skipped; under 16 the stream cannot be
    /// resynchronised and the leg is dropped (the ESME is told first).
    fn process(&mut self, side: Side) {
        self.check_reload();
        let mut rbuf = std::mem::take(&mut self.leg(side).rbuf);
        // Submits from the ESME: their snapshot lines are prefetched about PREFETCH_DISTANCE
        // frames ahead of the one being handled, PREFETCH_GROUP at a time (`ahead` = offset
        // of the next frame to prefetch, `handled` = frames since the batch began).
        let pipeline = side == Side::Esme && self.life.is_bound();
        let mut ahead = if pipeline {
            self.policy.prefetch_ahead(&rbuf, 0, PREFETCH_DISTANCE, HEADER_LEN, peek::destination)
        } else {
            rbuf.len()
        };
        let mut handled = 0usize;
        let mut pos = 0;
        while self.leg(side).open {
            match self.leg(side).framer.next(&rbuf[pos..]) {
                Next::Frame(len) => {
                    let frame = &rbuf[pos..pos + len];
                    match side {
                        Side::Esme => self.on_esme_pdu(frame),
                        Side::Smsc => self.on_smsc_pdu(frame),
                    }
                    pos += len;
                    handled += 1;
                    if handled % PREFETCH_GROUP == 0 {
                        ahead = self.policy.prefetch_ahead(
                            &rbuf,
                            ahead.max(pos),
                            PREFETCH_GROUP,
                            HEADER_LEN,
                            peek::destination,
                        );
                    }
                }
                Next::Skip(n) => pos += n,
                Next::TooLong { sequence, .. } => {
                    self.stats.error(match side {
                        Side::Esme => ErrorKind::EsmeOversized,
                        Side::Smsc => ErrorKind::SmscOversized,
                    });
                    put_header_only(&mut self.leg(side).out, cmd::GENERIC_NACK, status::ESME_RINVCMDLEN, sequence);
                }
                Next::TooShort { .. } => {
                    pos = rbuf.len();
                    match side {
                        Side::Esme => {
                            put_header_only(&mut self.esme.out, cmd::GENERIC_NACK, status::ESME_RINVCMDLEN, 0);
                            self.esme_gone("esme sent command_length < 16");
                        }
                        Side::Smsc => self.smsc_gone("smsc sent command_length < 16"),
                    }
                }
                Next::Incomplete => break,
            }
        }
        rbuf.advance(pos.min(rbuf.len()));
        self.leg(side).rbuf = rbuf;
    }

    // ----- lifecycle -----------------------------------------------------------------------

    /// Shutdown, drain or an account gone (`why`, the close reason): stop taking new
    /// requests and let in-flight ones finish within the grace.
    pub fn begin_drain(&mut self, why: &'static str) {
        let grace = self.settings.session.shutdown_grace.as_millis() as u64;
        if self.life.begin_drain(self.now_ms + grace, why) {
            debug!(peer = %self.peer, "session draining");
            // New parts are refused from now on: held messages are decided on what came.
            self.release_holds(true);
        }
    }

    /// Moves the lifecycle on after every event.
    pub fn progress(&mut self) {
        match self.life.progress(self.now_ms, self.smsc_table.relayed(), self.smsc.open, self.esme.open) {
            Some(Step::EndDrain) => {
                if self.smsc_table.relayed() > 0 {
                    tracing::warn!(peer = %self.peer, pending = self.smsc_table.relayed(), "drain grace expired; answering in-flight requests with ESME_RSYSERR");
                }
                self.answer_pending_at_smsc(status::ESME_RSYSERR);
                self.start_closing(self.life.drain_reason());
            }
            Some(Step::Finish) => self.finish(self.life.close_reason()),
            None => {}
        }
    }

    fn close_deadline(&self) -> u64 {
        self.now_ms + CLOSE_WAIT_MS.min(self.settings.session.response_timeout.as_millis() as u64)
    }

    /// Sends consentgate's own unbind on every open leg not yet unbound and waits (bounded)
    /// for the answers.
    pub(super) fn start_closing(&mut self, reason: &'static str) {
        if self.life.start_closing(reason, self.close_deadline()) {
            self.send_unbinds();
        }
    }

    fn send_unbinds(&mut self) {
        if self.esme.open && !self.life.esme_unbound {
            self.send_local_down(cmd::UNBIND);
        }
        if self.smsc.open && !self.life.smsc_unbound {
            self.send_local_up(cmd::UNBIND);
        }
    }

    pub(super) fn finish(&mut self, reason: &'static str) {
        if self.life.is_done() {
            return;
        }
        self.answer_pending_at_smsc(status::ESME_RSYSERR);
        self.answer_pending_at_esme(ESME_RX_T_APPN);
        self.release_held();
        self.optout.finish(&mut self.smsc, self.peer);
        self.life.finish(reason);
    }

    /// `side`'s leg is gone, for reason `why`.
    pub(super) fn gone(&mut self, side: Side, why: &'static str) {
        match side {
            Side::Esme => self.esme_gone(why),
            Side::Smsc => self.smsc_gone(why),
        }
    }

    /// The ESME leg is gone: late upstream answers will be dropped, the SMSC gets a temporary
    /// error for whatever it was waiting on, and the upstream leg is unbound.
    pub(super) fn esme_gone(&mut self, why: &'static str) {
        if !self.esme.open {
            return;
        }
        self.esme.open = false;
        self.esme.out.clear();
        debug!(peer = %self.peer, why, "esme leg closed");
        self.answer_pending_at_esme(ESME_RX_T_APPN);
        let mut v = std::mem::take(&mut self.expired);
        self.smsc_table.drain(&mut v);
        v.clear();
        self.expired = v;
        if self.life.leg_lost(why, self.close_deadline()) {
            self.send_unbinds();
        }
    }

    /// The SMSC leg is gone: every in-flight ESME request is answered at once and the ESME is
    /// unbound.
    pub(super) fn smsc_gone(&mut self, why: &'static str) {
        if !self.smsc.open {
            return;
        }
        self.smsc.open = false;
        self.smsc.out.clear();
        debug!(peer = %self.peer, why, "smsc leg closed");
        if self.life.is_serving() {
            self.stats.error(ErrorKind::SmscLost);
        }
        self.answer_pending_at_smsc(status::ESME_RSYSERR);
        let mut v = std::mem::take(&mut self.expired);
        self.esme_table.drain(&mut v);
        v.clear();
        self.expired = v;
        if self.life.leg_lost(why, self.close_deadline()) {
            self.send_unbinds();
        }
    }

    /// At the end: audit records still waiting are written, metrics flushed.
    pub fn close(&mut self) {
        self.audit.abandon();
        self.audit.flush();
        self.metrics.flush(&self.stats, 0, false, false);
    }
}
