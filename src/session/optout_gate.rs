//! The opt-out durability gate (architecture §1): an MO deliver_sm whose text is an opt-out keyword
//! records a revocation; the ESME's deliver_sm_resp for that MO is held until the revocation is
//! durable in the journal, so the SMSC never sees the MO acknowledged before the opt-out is on
//! disk (if it is not durable within the response timeout, the SMSC gets ESME_RX_T_APPN and
//! redelivers the MO).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;

use crate::consent::statement::{EntityName, NewStatement, StatementKind, StatementSource};
use crate::consent::store::{ConsentStore, RecordError, Ticket};
use crate::optout::{Keywords, Scratch};
use crate::policy::Engine;
use crate::relay::LegState;
use crate::smpp::pdu::{put_local_error_resp, put_renumbered};
use crate::smpp::status::ESME_RX_T_APPN;
use crate::smpp::{cmd, peek};
use crate::time::Now;

/// A deliver_sm_resp held until the opt-out its MO carried is durable.
#[derive(Debug)]
struct Held {
    ticket: u64,
    smsc_seq: u32,
    frame: Vec<u8>,
    since_ms: u64,
}

/// MO opt-out capture and the held responses of one session.
pub struct OptoutGate {
    store: Arc<ConsentStore>,
    keywords: Arc<Keywords>,
    scratch: Scratch,
    /// Journal tickets of MO opt-outs relayed to the ESME, by ESME-leg sequence number.
    mo_tickets: HashMap<u32, u64>,
    /// deliver_sm_resp waiting for their opt-out to be durable.
    held: VecDeque<Held>,
    durable: watch::Receiver<u64>,
}

impl OptoutGate {
    /// The keywords in force after a config reload.
    pub fn set_keywords(&mut self, keywords: Arc<Keywords>) {
        self.keywords = keywords;
    }

    pub fn new(store: Arc<ConsentStore>, keywords: Arc<Keywords>) -> OptoutGate {
        let durable = store.durable();
        OptoutGate {
            store,
            keywords,
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
    /// (subscriber = MO source, entity = the session's account). Returns the journal ticket.
    pub fn capture(&mut self, frame: &[u8], engine: &Engine, entity: &str, now: Now, peer: SocketAddr) -> Option<u64> {
        let v = peek::message(frame).ok()?;
        crate::optout::detect(&v, &self.keywords, &mut self.scratch)?;
        let Some(m) = engine.subscriber(&v.source) else {
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
            kind: StatementKind::Revoke,
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

    /// The ESME answered `down_seq` with `frame`: `true` if the answer is held here until its
    /// opt-out is durable (the caller must not forward it).
    pub fn hold(&mut self, down_seq: u32, frame: &[u8], smsc_seq: u32, now_ms: u64) -> bool {
        let Some(ticket) = (if self.mo_tickets.is_empty() { None } else { self.mo_tickets.remove(&down_seq) }) else {
            return false;
        };
        if ticket <= *self.durable.borrow() {
            return false;
        }
        self.held.push_back(Held { ticket, smsc_seq, frame: frame.to_vec(), since_ms: now_ms });
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
                    if smsc.open {
                        put_renumbered(&mut smsc.out, &h.frame, h.smsc_seq);
                    }
                }
            } else if now_ms.saturating_sub(h.since_ms) > limit_ms {
                if let Some(h) = self.held.remove(i) {
                    given_up += 1;
                    static LIMIT: crate::telemetry::RateLimit =
                        crate::telemetry::RateLimit::new(std::time::Duration::from_secs(10));
                    if let Some(suppressed) = LIMIT.allow() {
                        tracing::error!(peer = %peer, ticket = h.ticket, suppressed, "opt-out not durable in time; MO answered ESME_RX_T_APPN for redelivery");
                    }
                    if smsc.open {
                        put_local_error_resp(&mut smsc.out, cmd::DELIVER_SM, ESME_RX_T_APPN, h.smsc_seq);
                    }
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
        self.release(0, u64::MAX, smsc, peer);
        for h in self.held.drain(..) {
            if smsc.open {
                put_local_error_resp(&mut smsc.out, cmd::DELIVER_SM, ESME_RX_T_APPN, h.smsc_seq);
            }
        }
    }
}
