//! The opt-out durability gate (architecture §1): an MO (SMPP deliver_sm, CMPP DELIVER) whose text
//! is an opt-out keyword records a revocation; the sender's response to that MO is held until
//! the revocation is durable in the journal, so the SMSC / ISMG never sees the MO acknowledged
//! before the opt-out is on disk (if it is not durable within the response timeout, it gets
//! the protocol's temporary error — SMPP ESME_RX_T_APPN — and redelivers the MO). The gate
//! holds bytes, not PDUs: the front gives it both answers ready-made ([`Answers`]), so one gate
//! serves every protocol.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;

use crate::consent::statement::{EntityName, NewStatement, StatementKind, StatementSource};
use crate::consent::store::{ConsentStore, RecordError, Ticket};
use crate::optout::{Intent, Keywords, Scratch};
use crate::policy::Engine;
use crate::relay::LegState;
use crate::smpp::peek::{self, Addr};
use crate::smpp::text::Coding;
use crate::time::Now;

/// A response held until the opt-out its MO carried is durable.
#[derive(Debug)]
struct Held {
    ticket: u64,
    answers: Answers,
    since_ms: u64,
}

/// The two ways a held response can leave towards the SMSC / ISMG, encoded by the front.
#[derive(Debug)]
pub struct Answers {
    /// The sender's response, renumbered for the upstream leg: sent once the opt-out is
    /// durable.
    pub release: Vec<u8>,
    /// A temporary error for the same MO: sent when the opt-out is not durable in time, so
    /// that the MO is redelivered.
    pub give_up: Vec<u8>,
}

/// MO opt-out capture and the held responses of one session.
pub struct OptoutGate {
    store: Arc<ConsentStore>,
    keywords: Arc<Keywords>,
    /// The account's opt-in keywords (`opt_in_keywords`; empty: none).
    opt_in: Arc<Keywords>,
    scratch: Scratch,
    /// Journal tickets of MO opt-outs relayed to the ESME, by ESME-leg sequence number.
    mo_tickets: HashMap<u32, u64>,
    /// deliver_sm_resp waiting for their opt-out to be durable.
    held: VecDeque<Held>,
    durable: watch::Receiver<u64>,
}

impl OptoutGate {
    /// The keywords in force after a config reload: opt-out, and the account's opt-in.
    pub fn set_keywords(&mut self, keywords: Arc<Keywords>, opt_in: Arc<Keywords>) {
        self.keywords = keywords;
        self.opt_in = opt_in;
    }

    pub fn new(store: Arc<ConsentStore>, keywords: Arc<Keywords>, opt_in: Arc<Keywords>) -> OptoutGate {
        let durable = store.durable();
        OptoutGate {
            store,
            keywords,
            opt_in,
            scratch: Scratch::default(),
            mo_tickets: HashMap::new(),
            held: VecDeque::new(),
            durable,
        }
    }

    /// Whether responses are held (the session then also waits on [`OptoutGate::durable_changed`]).
    pub fn holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// Resolves when the durable watermark moves.
    pub async fn durable_changed(&mut self) {
        let _ = self.durable.changed().await;
    }

    /// An MO deliver_sm / data_sm whose text is an opt-out keyword records a revocation for
    /// (subscriber = MO source, entity = the session's account); one whose text is an opt-in
    /// keyword, a grant. Returns what it said and the journal ticket.
    pub fn capture(
        &mut self,
        frame: &[u8],
        engine: &Engine,
        entity: &str,
        now: Now,
        peer: SocketAddr,
    ) -> Option<(Intent, u64)> {
        let v = peek::message(frame).ok()?;
        let intent = crate::optout::intent(&v, &self.keywords, &self.opt_in, &mut self.scratch)?;
        Some((intent, self.record(intent, &v.source, engine, entity, now, peer)?))
    }

    /// [`OptoutGate::capture`] for an MO another front has read: `source` sent the text
    /// `user_data` (UDH skipped) in `coding`. The front has checked that it is an MO (not a
    /// report) and a whole message.
    #[allow(clippy::too_many_arguments)]
    pub fn capture_text(
        &mut self,
        source: &Addr,
        coding: Coding,
        user_data: &[u8],
        engine: &Engine,
        entity: &str,
        now: Now,
        peer: SocketAddr,
    ) -> Option<(Intent, u64)> {
        let intent = crate::optout::intent_text(coding, user_data, &self.keywords, &self.opt_in, &mut self.scratch)?;
        Some((intent, self.record(intent, source, engine, entity, now, peer)?))
    }

    /// Records the revocation (or, for an opt-in, the grant) of `source` for `entity`; the
    /// journal ticket to wait for.
    fn record(
        &mut self,
        intent: Intent,
        source: &Addr,
        engine: &Engine,
        entity: &str,
        now: Now,
        peer: SocketAddr,
    ) -> Option<u64> {
        let Some(m) = engine.subscriber(source) else {
            tracing::debug!(peer = %peer, "opt-out keyword from a non-subscriber address ignored");
            return None;
        };
        let entity = match EntityName::parse(entity) {
            Ok(e) => e,
            Err(e) => {
                // Config validation refuses such an entity; never reached with a checked config.
                tracing::error!(peer = %peer, error = %e, "opt-out not recorded: the account's entity is invalid");
                return None;
            }
        };
        let recorded = self.store.record(NewStatement {
            kind: match intent {
                Intent::OptOut => StatementKind::Revoke,
                Intent::OptIn => StatementKind::Grant,
            },
            source: StatementSource::Mo,
            msisdn: m,
            entity: Some(entity),
            at: now.unix_ms,
        });
        match recorded {
            Ok(Ticket::Journal(t)) => Some(t),
            // Nothing to wait for: durable() is u64::MAX without a journal.
            Ok(Ticket::Volatile) => Some(0),
            Err(e @ RecordError::Invalid(_)) => {
                tracing::error!(peer = %peer, error = %e, "opt-out not recorded");
                None
            }
            // Held until the response timeout, then answered for redelivery.
            Err(RecordError::JournalUnavailable) => Some(u64::MAX),
        }
    }

    /// The MO carrying opt-out `ticket` went to the ESME as `down_seq`.
    pub fn relayed(&mut self, down_seq: u32, ticket: u64) {
        if ticket > 0 {
            self.mo_tickets.insert(down_seq, ticket);
        }
    }

    /// The sender answered `down_seq`: `true` if the answer is held here until its opt-out is
    /// durable (the caller must not forward it; `answers` encodes what leaves later).
    pub fn hold(&mut self, down_seq: u32, now_ms: u64, answers: impl FnOnce() -> Answers) -> bool {
        let Some(ticket) = (if self.mo_tickets.is_empty() { None } else { self.mo_tickets.remove(&down_seq) }) else {
            return false;
        };
        if ticket <= *self.durable.borrow() {
            return false;
        }
        self.held.push_back(Held { ticket, answers: answers(), since_ms: now_ms });
        true
    }

    /// Tickets of MOs no longer pending at the ESME are forgotten.
    pub fn prune(&mut self, nothing_pending: bool) {
        if nothing_pending && !self.mo_tickets.is_empty() {
            self.mo_tickets.clear();
        }
    }

    /// Releases held responses whose opt-out is durable; gives up on those held longer than
    /// `limit_ms` (the SMSC gets ESME_RX_T_APPN and redelivers the MO). Returns how many were
    /// given up.
    pub fn release(&mut self, now_ms: u64, limit_ms: u64, smsc: &mut LegState, peer: SocketAddr) -> u32 {
        if !smsc.open {
            let mut discard = bytes::BytesMut::new();
            return self.release_bytes(now_ms, limit_ms, &mut discard, peer);
        }
        self.release_bytes(now_ms, limit_ms, &mut smsc.out, peer)
    }

    /// [`OptoutGate::release`] into the upstream leg's output buffer `out`.
    pub fn release_bytes(&mut self, now_ms: u64, limit_ms: u64, out: &mut bytes::BytesMut, peer: SocketAddr) -> u32 {
        if self.held.is_empty() {
            return 0;
        }
        let durable = *self.durable.borrow_and_update();
        let mut given_up = 0;
        let mut i = 0;
        while i < self.held.len() {
            let h = &self.held[i];
            if h.ticket <= durable {
                if let Some(h) = self.held.remove(i) {
                    out.extend_from_slice(&h.answers.release);
                }
            } else if now_ms.saturating_sub(h.since_ms) > limit_ms {
                if let Some(h) = self.held.remove(i) {
                    given_up += 1;
                    static LIMIT: crate::telemetry::RateLimit =
                        crate::telemetry::RateLimit::new(std::time::Duration::from_secs(10));
                    if let Some(suppressed) = LIMIT.allow() {
                        tracing::error!(peer = %peer, ticket = h.ticket, suppressed, "opt-out not durable in time; MO answered with a temporary error for redelivery");
                    }
                    out.extend_from_slice(&h.answers.give_up);
                }
            } else {
                i += 1;
            }
        }
        given_up
    }

    /// At the end of the session: what is durable is released, the rest answered
    /// ESME_RX_T_APPN (the SMSC redelivers those MOs).
    pub fn finish(&mut self, smsc: &mut LegState, peer: SocketAddr) {
        if smsc.open {
            self.finish_bytes(&mut smsc.out, peer);
        } else {
            self.finish_bytes(&mut bytes::BytesMut::new(), peer);
        }
    }

    /// [`OptoutGate::finish`] into the upstream leg's output buffer `out`.
    pub fn finish_bytes(&mut self, out: &mut bytes::BytesMut, peer: SocketAddr) {
        self.release_bytes(0, u64::MAX, out, peer);
        for h in self.held.drain(..) {
            out.extend_from_slice(&h.answers.give_up);
        }
    }
}
