//! The policy side of a session: the verdict for each submit_sm / data_sm (with one verdict
//! per concatenated message), submit_multi split by destination, and MO opt-out capture with
//! the deliver_sm_resp held until the revocation is durable.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

use bytes::BufMut;

use super::{Session, State, RX_T_APPN};
use crate::consent::msisdn;
use crate::consent::statement::{EntityName, NewStatement, StatementKind, StatementSource};
use crate::consent::store::{RecordError, Ticket};
use crate::policy::{self, AccountView, Inputs, Reason, Submit, Verdict};
use crate::smpp::peek::{self, MessageView, MultiDest};
use crate::smpp::{self, cmd, text, HEADER_LEN};

/// How long the verdict of a concatenated message is remembered for its other parts.
pub(super) const CONCAT_TTL_MS: u64 = 120_000;
/// Most concatenated messages remembered per session.
const CONCAT_MAX: usize = 16_384;

/// Verdicts of concatenated messages in progress, keyed by (source, destination, reference,
/// total): the first part to arrive decides, later parts (any order) reuse its verdict.
#[derive(Debug, Default)]
pub(super) struct ConcatCache {
    map: HashMap<u64, ConcatEntry, foldhash::fast::FixedState>,
}

#[derive(Debug, Clone, Copy)]
struct ConcatEntry {
    verdict: Verdict,
    seen: u16,
    total: u8,
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

    pub(super) fn prune(&mut self, now_ms: u64) {
        if !self.map.is_empty() {
            self.map.retain(|_, e| now_ms.saturating_sub(e.at_ms) < CONCAT_TTL_MS);
        }
    }
}

/// A deliver_sm_resp held until the opt-out its MO carried is durable.
#[derive(Debug)]
pub(super) struct Held {
    pub ticket: u64,
    pub smsc_seq: u32,
    pub frame: Vec<u8>,
    pub since_ms: u64,
}

/// Submits per read batch whose snapshot lines are prefetched.
const PREFETCH_MAX: usize = 128;

/// The policy's view of a message.
#[inline]
pub(super) fn submit_of<'a>(v: &MessageView<'a>) -> Submit<'a> {
    Submit { source: v.source, destination: v.destination, service_type: v.service_type }
}

impl Session {
    /// The verdict for one submit_sm / data_sm; all parts of a concatenated message share
    /// the first part's verdict.
    pub(super) fn verdict_for(&mut self, v: &MessageView) -> Verdict {
        let submit = submit_of(v);
        let Some(c) = text::concat_info(v) else { return self.decide(&submit) };
        let key = ConcatCache::key(v, c);
        if let Some(e) = self.concat.map.get_mut(&key) {
            e.seen += 1;
            let verdict = e.verdict;
            if e.seen >= e.total as u16 {
                self.concat.map.remove(&key);
            }
            return verdict;
        }
        let verdict = self.decide(&submit);
        if c.total > 1 && self.concat.map.len() < CONCAT_MAX {
            self.concat.map.insert(key, ConcatEntry { verdict, seen: 1, total: c.total, at_ms: self.now_ms });
        }
        verdict
    }

    /// Runs the pure decision against the current snapshot and the live delta.
    #[inline]
    /// Before a read batch is handled: starts the snapshot loads of every submit_sm / data_sm
    /// in it (at most [`PREFETCH_MAX`]), so their memory latency overlaps — measured in
    /// `benches/decide.rs` (`_session_prefetch`). Frames are walked by command_length only;
    /// damaged ones are skipped here and handled by the real pass.
    pub(super) fn prefetch_batch(&self, rbuf: &[u8]) {
        if self.state != State::Bound || rbuf.len() < 2 * HEADER_LEN {
            return;
        }
        let guard = self.store.current();
        let Some(loaded) = guard.as_deref() else { return };
        let mut at = 0;
        for _ in 0..PREFETCH_MAX {
            let Some(head) = rbuf.get(at..at + HEADER_LEN) else { return };
            let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
            let Some(frame) = rbuf.get(at..at + len).filter(|_| len >= HEADER_LEN) else { return };
            if let Some(dest) = peek::destination(frame) {
                policy::prefetch(&loaded.snapshot, &self.config.policy, &dest);
            }
            at += len;
        }
    }

    pub(super) fn decide(&mut self, m: &Submit) -> Verdict {
        let guard = self.store.current();
        let loaded = guard.as_deref();
        match loaded {
            Some(l) if l.generation != self.snap_gen => {
                self.snap_entity = l.snapshot.entity_id(&self.account.entity);
                self.snap_gen = l.generation;
                let i = l.snapshot.info();
                self.audit_snapshot =
                    crate::audit::SnapshotRef { id: i.checksum, generation: l.generation, built_at: i.built_at };
            }
            None => {
                self.snap_entity = None;
                self.snap_gen = 0;
                self.audit_snapshot = crate::audit::SnapshotRef { id: 0, generation: 0, built_at: 0 };
            }
            _ => {}
        }
        let inputs = Inputs {
            policy: &self.config.policy,
            snapshot: loaded.map(|l| &l.snapshot),
            delta: &self.store.delta,
            today: self.today,
        };
        let acct = AccountView { account: &self.account, live_entity: self.live_entity, snap_entity: self.snap_entity };
        self.stats.decisions = self.stats.decisions.wrapping_add(1);
        let verdict = if self.stats.decisions % super::metrics::DECISION_SAMPLE_EVERY == 0 {
            let t0 = std::time::Instant::now();
            let v = policy::decide(&inputs, &acct, m);
            self.metrics.decision.record(t0.elapsed().as_secs_f64());
            v
        } else {
            policy::decide(&inputs, &acct, m)
        };
        self.stats.count(verdict);
        verdict
    }

    /// submit_multi (v3.4 §4.5): decided per destination. Allowed destinations are forwarded
    /// in a rewritten PDU; rejected ones are merged into the response's unsuccess_sme list.
    /// If none is allowed the request is answered here.
    pub(super) fn on_submit_multi(&mut self, frame: &[u8], seq: u32) {
        let mv = match peek::multi(frame) {
            Ok(m) => m,
            Err(e) => return self.answer_esme(cmd::SUBMIT_MULTI, e.status(), seq),
        };
        let mut keep: Vec<std::ops::Range<usize>> = Vec::new();
        let mut rejected: Vec<u8> = Vec::new();
        let mut n_rejected = 0u8;
        let mut first_status = 0;
        for (dest, range) in mv.destinations() {
            let verdict = match dest {
                MultiDest::Sme(addr) => {
                    self.decide(&Submit { source: mv.source, destination: addr, service_type: mv.service_type })
                }
                // A distribution list hides its subscribers: nobody on it can be checked.
                MultiDest::List(_) => match self.config.policy.regime {
                    crate::config::Regime::OptIn => {
                        let v = match self.config.policy.mode {
                            crate::config::PolicyMode::Monitor => Verdict::WouldReject(Reason::NoConsent),
                            crate::config::PolicyMode::Enforce => Verdict::Reject(Reason::NoConsent),
                        };
                        self.stats.count(v);
                        v
                    }
                    crate::config::Regime::OptOut => Verdict::Accept,
                },
            };
            if self.audit.wants(verdict) {
                let d = match dest {
                    MultiDest::Sme(a) => a,
                    MultiDest::List(name) => crate::smpp::peek::Addr { ton: 0, npi: 0, addr: name },
                };
                let st = match verdict {
                    Verdict::Reject(r) => Some(r.status(&self.config.policy)),
                    _ => None,
                };
                let m = Submit { source: mv.source, destination: d, service_type: mv.service_type };
                self.audit_record(&m, seq, verdict, st, None);
            }
            match verdict {
                Verdict::Reject(r) => {
                    let st = r.status(&self.config.policy);
                    if n_rejected == 0 {
                        first_status = st;
                    }
                    n_rejected += 1;
                    let (ton, npi, addr) = match dest {
                        MultiDest::Sme(a) => (a.ton, a.npi, a.addr),
                        MultiDest::List(name) => (0, 0, name),
                    };
                    rejected.put_u8(ton);
                    rejected.put_u8(npi);
                    rejected.put_slice(addr);
                    rejected.put_u8(0);
                    rejected.put_u32(st);
                }
                _ => keep.push(range),
            }
        }
        if n_rejected == 0 {
            self.relay_up(frame, seq, cmd::SUBMIT_MULTI);
            return;
        }
        if keep.is_empty() {
            // submit_multi_resp: message_id "", no_unsuccess, unsuccess_sme list.
            let len = HEADER_LEN + 2 + rejected.len();
            let out = &mut self.down.out;
            out.put_u32(len as u32);
            out.put_u32(cmd::SUBMIT_MULTI_RESP);
            out.put_u32(first_status);
            out.put_u32(seq);
            out.put_u8(0);
            out.put_u8(n_rejected);
            out.put_slice(&rejected);
            return;
        }
        let mut f = Vec::with_capacity(frame.len());
        f.extend_from_slice(&frame[..mv.dests_at]);
        f.push(keep.len() as u8);
        for r in &keep {
            f.extend_from_slice(&frame[r.clone()]);
        }
        f.extend_from_slice(&frame[mv.dests_end..]);
        let len = f.len() as u32;
        f[0..4].copy_from_slice(&len.to_be_bytes());
        if let Some(up_seq) = self.relay_up(&f, seq, cmd::SUBMIT_MULTI) {
            self.multi_rejects.insert(up_seq, (n_rejected, rejected));
        }
    }

    /// Merges consentgate's rejected destinations into the SMSC's submit_multi_resp.
    pub(super) fn merge_multi_resp(&mut self, frame: &[u8], up_seq: u32, esme_seq: u32) -> bool {
        let Some((n, list)) = self.multi_rejects.remove(&up_seq) else { return false };
        let body = &frame[HEADER_LEN.min(frame.len())..];
        let id = peek::resp_message_id(frame);
        let (theirs_n, theirs): (u8, &[u8]) = if body.len() > id.len() + 1 {
            (body[id.len() + 1], &body[(id.len() + 2).min(body.len())..])
        } else {
            (0, &[])
        };
        let out = &mut self.down.out;
        let len = HEADER_LEN + id.len() + 2 + theirs.len() + list.len();
        out.put_u32(len as u32);
        out.put_u32(cmd::SUBMIT_MULTI_RESP);
        out.put_u32(smpp::command_status(frame));
        out.put_u32(esme_seq);
        out.put_slice(id);
        out.put_u8(0);
        out.put_u8(theirs_n.saturating_add(n));
        out.put_slice(theirs);
        out.put_slice(&list);
        true
    }

    /// An MO deliver_sm / data_sm whose text is an opt-out keyword records a revocation for
    /// (subscriber = MO source, entity = this session's account). Returns the journal ticket.
    pub(super) fn capture_optout(&mut self, frame: &[u8]) -> Option<u64> {
        let v = peek::message(frame).ok()?;
        crate::optout::detect(&v, &self.keywords, &mut self.scratch)?;
        let m = match msisdn::normalise(
            v.source.addr,
            v.source.ton,
            v.source.npi,
            &self.config.policy.default_country_code,
        ) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(peer = %self.peer, error = %e, "opt-out keyword from a non-subscriber address ignored");
                return None;
            }
        };
        let entity = match EntityName::parse(&self.account.entity) {
            Ok(e) => e,
            Err(e) => {
                // Config validation refuses such an entity; never reached with a checked config.
                tracing::error!(peer = %self.peer, error = %e, "opt-out not recorded: the account's entity is invalid");
                return None;
            }
        };
        let at = crate::time::Clock::system().now().unix_ms;
        let recorded = self.store.record(NewStatement {
            kind: StatementKind::Revoke,
            source: StatementSource::Mo,
            msisdn: m,
            entity: Some(entity),
            at,
        });
        self.stats.optouts += 1;
        match recorded {
            Ok(Ticket::Journal(t)) => Some(t),
            // Nothing to wait for: durable() is u64::MAX without a journal.
            Ok(Ticket::Volatile) => Some(0),
            Err(e @ RecordError::Invalid(_)) => {
                tracing::error!(peer = %self.peer, error = %e, "opt-out not recorded");
                None
            }
            // Held until the response timeout, then answered for redelivery.
            Err(RecordError::JournalUnavailable) => Some(u64::MAX),
        }
    }

    /// Adds the audit record of one decision. A rejected message is complete now (`status`);
    /// a forwarded one (`pending_up` = its upstream sequence number) waits for the SMSC's
    /// answer, which brings its status and message_id.
    pub(super) fn audit_record(
        &mut self,
        m: &Submit,
        esme_seq: u32,
        verdict: Verdict,
        status: Option<u32>,
        pending_up: Option<u32>,
    ) {
        use crate::audit::{AuditAddr, AuditRecord, MessageId};
        let d = m.destination;
        let rec = AuditRecord {
            at_us: crate::audit::now_us(),
            account: self.audit_account,
            session: self.session_id,
            sequence: esme_seq,
            source: AuditAddr::from_peek(m.source),
            destination: AuditAddr::from_peek(d),
            msisdn: msisdn::normalise(d.addr, d.ton, d.npi, &self.config.policy.default_country_code).ok(),
            class: Some(policy::classify(&self.account, m)),
            verdict,
            status,
            upstream_status: None,
            message_id: MessageId::NONE,
            snapshot: self.audit_snapshot,
        };
        match pending_up {
            Some(up) => {
                self.audit_pending.insert(up, rec);
            }
            None => self.audit.push(rec),
        }
    }

    /// A forwarded message answered by consentgate itself (timeout, SMSC gone, drain).
    pub(super) fn audit_local_answer(&mut self, up_seq: u32, st: u32) {
        if let Some(mut rec) = self.audit_pending.remove(&up_seq) {
            rec.status = Some(st);
            self.audit.push(rec);
        }
    }

    /// At the end of the session: records still waiting for an answer are written as they are.
    pub(super) fn audit_abandon_pending(&mut self) {
        for (_, rec) in self.audit_pending.drain() {
            self.audit.push(rec);
        }
    }

    /// Releases held deliver_sm_resp whose opt-out is durable; gives up on those held longer
    /// than the response timeout (the SMSC gets ESME_RX_T_APPN and redelivers the MO).
    pub(super) fn release_held(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let durable = *self.durable.borrow_and_update();
        let limit = self.config.session.response_timeout.as_millis() as u64;
        let now = self.now_ms;
        let up_open = self.up.open;
        let mut i = 0;
        while i < self.held.len() {
            let h = &self.held[i];
            if h.ticket <= durable {
                let h = self.held.remove(i).expect("index in range");
                if up_open {
                    let at = self.up.out.len();
                    self.up.out.extend_from_slice(&h.frame);
                    smpp::set_sequence(&mut self.up.out[at..], h.smsc_seq);
                }
            } else if now.saturating_sub(h.since_ms) > limit {
                let h = self.held.remove(i).expect("index in range");
                self.stats.error(super::ErrorKind::OptoutNotDurable);
                static LIMIT: crate::telemetry::RateLimit =
                    crate::telemetry::RateLimit::new(std::time::Duration::from_secs(10));
                if let Some(suppressed) = LIMIT.allow() {
                    tracing::error!(peer = %self.peer, ticket = h.ticket, suppressed, "opt-out not durable in time; MO answered ESME_RX_T_APPN for redelivery");
                }
                if up_open {
                    crate::smpp::pdu::put_local_error_resp(&mut self.up.out, cmd::DELIVER_SM, RX_T_APPN, h.smsc_seq);
                }
            } else {
                i += 1;
            }
        }
    }
}
