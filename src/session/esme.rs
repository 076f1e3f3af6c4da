//! ESME → SMSC: requests from the ESME are checked (bind state, window, policy) and relayed
//! under a fresh upstream sequence number or answered here; the ESME's responses go back to
//! the SMSC (held by the opt-out gate while their opt-out is not durable).

use bytes::BytesMut;
use tracing::debug;

use super::core::Session;
use super::metrics::{self, ErrorKind};
use super::optout_gate::Answers;
use crate::policy::{Decision, Held, Message, Part, Verdict};
use crate::relay::seq::Origin;
use crate::smpp::pdu::{put_header_only, put_local_error_resp, put_renumbered};
use crate::smpp::{cmd, peek, status, text, Header};

impl Session {
    pub(super) fn on_esme_pdu(&mut self, frame: &[u8]) {
        let h = Header::read(frame);
        self.stats.pdu(false, h.command_id);
        if h.is_response() {
            self.on_esme_response(frame, h);
            return;
        }
        let seq = h.sequence_number;
        match h.command_id {
            cmd::SUBMIT_SM | cmd::DATA_SM | cmd::SUBMIT_MULTI => {}
            cmd::QUERY_SM | cmd::CANCEL_SM | cmd::REPLACE_SM | cmd::BROADCAST_SM..=cmd::CANCEL_BROADCAST_SM => {}
            cmd::ENQUIRE_LINK => {
                return put_header_only(&mut self.esme.out, cmd::ENQUIRE_LINK_RESP, status::ESME_ROK, seq);
            }
            cmd::UNBIND => return self.on_esme_unbind(frame, seq),
            cmd::BIND_TRANSMITTER | cmd::BIND_RECEIVER | cmd::BIND_TRANSCEIVER => {
                return self.answer_esme(h.command_id, status::ESME_RALYBND, seq);
            }
            // Requests an ESME may not send to an MC, and alert_notification (no response).
            cmd::ALERT_NOTIFICATION => return,
            cmd::DELIVER_SM | cmd::OUTBIND => return self.answer_esme(h.command_id, status::ESME_RINVBNDSTS, seq),
            _ => {
                self.stats.error(ErrorKind::EsmeUnknownCommand);
                return put_header_only(&mut self.esme.out, cmd::GENERIC_NACK, status::ESME_RINVCMDID, seq);
            }
        }
        // A message or message-management request: relay it if the session can.
        use super::lifecycle::State;
        let refuse = match self.life.state() {
            State::Bound if !self.bind_type.can_submit() => Some(status::ESME_RINVBNDSTS),
            State::Bound if !self.smsc.open => Some(status::ESME_RSYSERR),
            // Policy step 3 (architecture §3): the window is a throughput limit, answered with the `throttled`
            // status (policy.reject_status.throttled, default ESME_RTHROTTLED).
            State::Bound if self.smsc_table.relayed() >= self.settings.session.window => {
                Some(self.policy.engine().status(crate::policy::Reason::Throttled))
            }
            State::Bound => None,
            State::Draining { .. } => Some(status::ESME_RTHROTTLED),
            _ => Some(status::ESME_RINVBNDSTS),
        };
        if let Some(st) = refuse {
            return self.answer_esme(h.command_id, st, seq);
        }
        match h.command_id {
            cmd::SUBMIT_SM | cmd::DATA_SM => {
                let v = match peek::message(frame) {
                    Ok(v) => v,
                    Err(e) => {
                        self.stats.error(ErrorKind::EsmeMalformed);
                        return self.answer_esme(h.command_id, e.status(), seq);
                    }
                };
                let now = self.now;
                let (m, concat) = (Message::of(&v), text::concat_info(&v));
                let d = match self.policy.hold(&m, concat, frame, h.command_id, seq, now) {
                    Part::Decide => self.decide(|p, now| p.decide(&m, concat, now)),
                    Part::Refused(d) => self.decide(move |_, _| d),
                    Part::Waiting => return,
                    Part::Complete(held) => {
                        let d = self.decide(|p, now| p.decide_held(&held, message_of, now));
                        return self.release_parts(held, d);
                    }
                };
                self.apply(frame, &v, seq, h.command_id, d);
            }
            cmd::SUBMIT_MULTI => self.on_submit_multi(frame, seq),
            _ => {
                self.relay_up(frame, seq, h.command_id);
            }
        }
    }

    /// Forwards a submit_sm / data_sm or answers it with its decision's status, and audits it.
    fn apply(&mut self, frame: &[u8], v: &peek::MessageView, seq: u32, command_id: u32, d: Decision) {
        if let Verdict::Reject(_) = d.verdict {
            if self.audit.wants(d.verdict) {
                self.audit_record(&Message::of(v), &d, seq, Some(d.status), None);
            }
            return self.answer_esme(command_id, d.status, seq);
        }
        if !self.smsc.open {
            return self.answer_esme(command_id, status::ESME_RSYSERR, seq);
        }
        let up_seq = self.relay_up(frame, seq, command_id);
        if self.audit.wants(d.verdict) {
            match up_seq {
                Some(smsc_seq) => self.audit_record(&Message::of(v), &d, seq, None, Some(smsc_seq)),
                None => self.audit_record(&Message::of(v), &d, seq, Some(status::ESME_RTHROTTLED), None),
            }
        }
    }

    /// Releases the held parts of a concatenated message with its one decision, in the order
    /// they came (the first carries the decision, the others are marked as following it).
    pub(super) fn release_parts(&mut self, held: Held, d: Decision) {
        for (i, p) in held.parts.into_iter().enumerate() {
            let d = Decision { from_cache: i > 0 || d.from_cache, ..d };
            match peek::message(&p.frame) {
                Ok(v) => self.apply(&p.frame, &v, p.seq, p.command_id, d),
                Err(e) => self.answer_esme(p.command_id, e.status(), p.seq),
            }
        }
    }

    /// Decides and releases every held message past `policy.reassembly_timeout` (on the
    /// parts that came), or all of them when `all` (draining: no more parts will come).
    pub(super) fn release_holds(&mut self, all: bool) {
        let now = self.now;
        let held = if all { self.policy.drain_holds() } else { self.policy.expired_holds(now) };
        for h in held {
            let d = self.decide(|p, now| p.decide_held(&h, message_of, now));
            self.release_parts(h, d);
        }
    }

    /// Runs one decision through the pipeline, counting it and sampling its duration. A
    /// later part of a concatenated message (answered from the first part's decision) is not
    /// a decision: it is neither counted nor timed.
    #[inline]
    pub(super) fn decide(
        &mut self,
        f: impl FnOnce(&mut crate::policy::SessionPolicy, crate::time::Now) -> Decision,
    ) -> Decision {
        let sample = self.stats.decisions.wrapping_add(1) % metrics::DECISION_SAMPLE_EVERY == 0;
        let t0 = sample.then(std::time::Instant::now);
        let d = f(&mut self.policy, self.now);
        if d.from_cache {
            return d;
        }
        if let Some(t0) = t0 {
            self.metrics.decision.record(t0.elapsed().as_secs_f64());
        }
        self.stats.decisions = self.stats.decisions.wrapping_add(1);
        self.stats.count(d.verdict);
        d
    }

    /// Records one decision in the audit log.
    pub(super) fn audit_record(
        &mut self,
        m: &Message,
        d: &Decision,
        esme_seq: u32,
        status: Option<u32>,
        pending_up: Option<u32>,
    ) {
        let (engine, stamp) = (self.policy.engine(), self.policy.snapshot_stamp());
        let account = engine.account(self.policy.account());
        self.audit.record(engine, account, m, d, esme_seq, status, pending_up, stamp);
    }

    /// Forwards an ESME request upstream under a fresh upstream sequence number, registered
    /// before the bytes are queued.
    #[inline]
    pub(super) fn relay_up(&mut self, frame: &[u8], esme_seq: u32, command_id: u32) -> Option<u32> {
        match self.smsc_table.insert(esme_seq, command_id, Origin::Relayed, self.now_ms) {
            Some(up_seq) => {
                put_renumbered(&mut self.smsc.out, frame, up_seq);
                self.stats.relayed = self.stats.relayed.wrapping_add(1);
                if self.up_sample.is_none() && self.stats.relayed % metrics::UPSTREAM_SAMPLE_EVERY == 0 {
                    self.up_sample = Some((up_seq, self.now_us));
                }
                Some(up_seq)
            }
            None => {
                self.answer_esme(command_id, status::ESME_RTHROTTLED, esme_seq);
                None
            }
        }
    }

    fn on_esme_unbind(&mut self, frame: &[u8], seq: u32) {
        if self.life.is_bound() && self.smsc.open {
            self.life.esme_unbinding();
            let _ = self.relay_up(frame, seq, cmd::UNBIND);
            return;
        }
        // Crossing unbinds, or nothing left upstream: answer here.
        put_header_only(&mut self.esme.out, cmd::UNBIND_RESP, status::ESME_ROK, seq);
        self.life.esme_unbound = true;
        if self.life.is_serving() {
            self.answer_pending_at_smsc(status::ESME_RSYSERR);
            self.start_closing("esme unbound");
        }
    }

    fn on_esme_response(&mut self, frame: &[u8], h: Header) {
        let Some(p) = self.esme_table.take(h.sequence_number) else {
            return debug!(peer = %self.peer, seq = h.sequence_number, "response to unknown sequence from esme dropped");
        };
        match p.origin {
            Origin::Relayed => {
                let is_unbind_resp = p.command_id == cmd::UNBIND;
                if is_unbind_resp {
                    // SMSC-initiated unbind completes: answer what is still pending first.
                    self.answer_pending_at_smsc(status::ESME_RSYSERR);
                }
                // The opt-out this MO carried is not on disk yet: the SMSC gets the ESME's
                // answer only once it is.
                let answers = || {
                    let (mut release, mut give_up) = (BytesMut::new(), BytesMut::new());
                    put_renumbered(&mut release, frame, p.peer_seq);
                    put_local_error_resp(&mut give_up, cmd::DELIVER_SM, status::ESME_RX_T_APPN, p.peer_seq);
                    Answers { release: release.to_vec(), give_up: give_up.to_vec() }
                };
                if self.optout.hold(p.seq, self.now_ms, answers) {
                    return;
                }
                if self.smsc.open {
                    put_renumbered(&mut self.smsc.out, frame, p.peer_seq);
                }
                if is_unbind_resp {
                    self.life.esme_unbound = true;
                    self.life.smsc_unbound = true;
                    self.finish("smsc unbound");
                }
            }
            Origin::Local => {
                if p.command_id == cmd::UNBIND {
                    self.life.esme_unbound = true;
                }
            }
        }
    }

    /// Answers an ESME request locally.
    #[inline]
    pub(super) fn answer_esme(&mut self, command_id: u32, st: u32, seq: u32) {
        put_local_error_resp(&mut self.esme.out, command_id, st, seq);
    }
}

/// A held submit_sm / data_sm read again as the message it is (it parsed when it came).
fn message_of(frame: &[u8]) -> Option<Message<'_>> {
    peek::message(frame).ok().map(|v| Message::of(&v))
}
