//! The session's side of the decision audit log (`crate::audit`): a rejected message is
//! recorded at once with the status the ESME got; a forwarded one (mode `all`, or
//! `would_reject` in monitor mode) waits for the SMSC's answer, which brings its status and
//! message_id, or is completed with the local status on timeout, drain or SMSC loss.

use std::collections::HashMap;

use crate::audit::{AccountId, Audit, AuditAddr, AuditBatch, AuditRecord, MessageId, Protocol, SnapshotRef};
use crate::policy::{classify, Decision, Engine, Message, SnapshotStamp, Verdict};
use crate::smpp::peek::{self, Addr};

/// One session's audit records.
pub struct SessionAudit {
    batch: AuditBatch,
    account: AccountId,
    session_id: u64,
    /// Records of forwarded messages, completed when the SMSC answers (upstream seq).
    pending: HashMap<u32, AuditRecord>,
    protocol: Protocol,
}

impl SessionAudit {
    pub fn new(audit: &Audit, system_id: &str, entity: &str, session_id: u64) -> SessionAudit {
        SessionAudit {
            batch: audit.sink(),
            account: audit.account(system_id, entity),
            session_id,
            pending: HashMap::new(),
            protocol: Protocol::Smpp,
        }
    }

    /// The records of a CMPP session: marked so, their statuses being CMPP Results.
    pub fn cmpp(mut self) -> SessionAudit {
        self.protocol = Protocol::Cmpp;
        self
    }

    /// The account's names after a config reload changed its entity.
    pub fn set_account(&mut self, audit: &Audit, system_id: &str, entity: &str) {
        self.account = audit.account(system_id, entity);
    }

    /// Whether this verdict is recorded under the configured mode.
    #[inline]
    pub fn wants(&self, verdict: Verdict) -> bool {
        self.batch.wants(verdict)
    }

    /// Adds the record of one decision. A rejected message is complete now (`status`); a
    /// forwarded one (`pending_up` = its upstream sequence number) waits for the SMSC.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &mut self,
        engine: &Engine,
        account: &crate::policy::Account,
        m: &Message,
        d: &Decision,
        esme_seq: u32,
        status: Option<u32>,
        pending_up: Option<u32>,
        stamp: SnapshotStamp,
    ) {
        let rec = AuditRecord {
            at_us: crate::time::unix_us(),
            account: self.account,
            session: self.session_id,
            sequence: esme_seq,
            source: AuditAddr::from_peek(m.source),
            destination: AuditAddr::from_peek(m.destination),
            msisdn: d.msisdn.or_else(|| engine.subscriber(&m.destination)),
            class: Some(d.class.unwrap_or_else(|| classify(account, m))),
            verdict: d.verdict,
            status,
            upstream_status: None,
            message_id: MessageId::NONE,
            snapshot: SnapshotRef { id: stamp.id, generation: stamp.generation, built_at: stamp.built_at },
            protocol: self.protocol,
            dlt: d.dlt,
        };
        match pending_up {
            Some(smsc_seq) => {
                self.pending.insert(smsc_seq, rec);
            }
            None => self.batch.push(rec),
        }
    }

    /// The SMSC answered upstream request `up_seq` with `frame`.
    #[inline]
    pub fn answered(&mut self, up_seq: u32, frame: &[u8]) {
        if self.pending.is_empty() {
            return;
        }
        self.complete(up_seq, crate::smpp::command_status(frame), peek::resp_message_id(frame));
    }

    /// Upstream request `up_seq` was answered with `status` and `message_id` (any protocol).
    pub fn complete(&mut self, up_seq: u32, status: u32, message_id: &[u8]) {
        if let Some(mut rec) = self.pending.remove(&up_seq) {
            rec.status = Some(status);
            rec.upstream_status = Some(status);
            rec.message_id = MessageId::new(message_id);
            self.batch.push(rec);
        }
    }

    /// A forwarded message answered by consentgate itself (timeout, SMSC gone, drain).
    pub fn local_answer(&mut self, up_seq: u32, st: u32) {
        if let Some(mut rec) = self.pending.remove(&up_seq) {
            rec.status = Some(st);
            self.batch.push(rec);
        }
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// At the end of the session: records still waiting for an answer are written as they are.
    pub fn abandon(&mut self) {
        for (_, rec) in self.pending.drain() {
            self.batch.push(rec);
        }
    }

    /// Hands this turn's records to the writer.
    pub fn flush(&mut self) {
        self.batch.flush();
    }
}

/// A distribution list name as the audit log's destination address.
pub fn list_addr(name: &[u8]) -> Addr<'_> {
    Addr { ton: 0, npi: 0, addr: name }
}
