//! The session's timer tick (every 100 ms): requests past their response timeout are answered
//! locally, idle legs get consentgate's own enquire_link, caches are pruned and metrics
//! flushed; and the helpers that answer everything pending on one leg.

use super::core::{Session, Side};
use super::metrics::ErrorKind;
use crate::relay::seq::Origin;
use crate::smpp::pdu::{put_header_only, put_local_error_resp};
use crate::smpp::status::ESME_RX_T_APPN;
use crate::smpp::{cmd, status};

impl Session {
    /// `session.pdu_timeout`: the ESME's leg has held part of a PDU, with no whole PDU read
    /// since, for longer than the timeout — a peer keeping a half-sent PDU (and the session's
    /// buffers and slot) open. The session is closed; counted and logged once per burst.
    fn check_pdu_timeout(&mut self) {
        let frames: u64 = self.stats.pdus[0].iter().sum();
        let now = self.now_ms;
        match self.esme.partial {
            // Nothing buffered, or reading paused by back-pressure (the rest may be waiting
            // in the socket because the SMSC is slow): not the ESME's stall.
            _ if self.esme.rbuf.is_empty()
                || !self.esme.open
                || self.smsc.out.len() >= crate::relay::OUT_HIGH_WATER =>
            {
                self.esme.partial = None
            }
            Some((_, seen)) if seen != frames => self.esme.partial = Some((now, frames)),
            None => self.esme.partial = Some((now, frames)),
            Some((since, _)) if now.saturating_sub(since) >= self.settings.session.pdu_timeout.as_millis() as u64 => {
                metrics::counter!(crate::telemetry::metrics::LIMITS_TOTAL, "limit" => "pdu_timeout").increment(1);
                static LIMIT: crate::telemetry::RateLimit =
                    crate::telemetry::RateLimit::new(std::time::Duration::from_secs(10));
                if let Some(suppressed) = LIMIT.allow() {
                    tracing::warn!(
                        peer = %self.peer,
                        buffered = self.esme.rbuf.len(),
                        timeout = ?self.settings.session.pdu_timeout,
                        suppressed,
                        "closing session: a PDU left unfinished past session.pdu_timeout"
                    );
                }
                self.esme.partial = None;
                self.esme_gone("pdu_timeout");
            }
            Some(_) => {}
        }
    }

    pub fn on_tick(&mut self) {
        // An idle session takes a reload (or learns its account is gone) within a tick.
        self.check_reload();
        let now = self.now_ms;
        let up_to = self.settings.upstream.response_timeout.as_millis() as u64;
        let down_to = self.settings.session.response_timeout.as_millis() as u64;
        let mut expired = std::mem::take(&mut self.expired);
        self.smsc_table.expire(now.saturating_sub(up_to), &mut expired);
        for p in expired.drain(..) {
            match (p.origin, p.command_id) {
                (Origin::Relayed, cmd::UNBIND) => {
                    put_header_only(&mut self.esme.out, cmd::UNBIND_RESP, status::ESME_ROK, p.peer_seq);
                    self.life.esme_unbound = true;
                    self.finish("smsc did not answer unbind");
                }
                (Origin::Relayed, id) => {
                    self.stats.error(ErrorKind::SmscTimeout);
                    let st = self.settings.upstream.response_timeout_status;
                    self.audit.local_answer(p.seq, st);
                    put_local_error_resp(&mut self.esme.out, id, st, p.peer_seq);
                }
                (Origin::Local, cmd::ENQUIRE_LINK) => self.smsc_gone("smsc stopped answering enquire_link"),
                (Origin::Local, _) => self.life.smsc_unbound = true,
            }
        }
        self.esme_table.expire(now.saturating_sub(down_to), &mut expired);
        for p in expired.drain(..) {
            match (p.origin, p.command_id) {
                (Origin::Relayed, cmd::UNBIND) => {
                    put_header_only(&mut self.smsc.out, cmd::UNBIND_RESP, status::ESME_ROK, p.peer_seq);
                    self.life.smsc_unbound = true;
                    self.finish("esme did not answer unbind");
                }
                (Origin::Relayed, id) => put_local_error_resp(&mut self.smsc.out, id, ESME_RX_T_APPN, p.peer_seq),
                (Origin::Local, cmd::ENQUIRE_LINK) => self.esme_gone("esme stopped answering enquire_link"),
                (Origin::Local, _) => self.life.esme_unbound = true,
            }
        }
        self.expired = expired;
        self.check_pdu_timeout();
        if self.up_sample.is_some_and(|(_, at)| self.now_us.saturating_sub(at) / 1000 > up_to) {
            self.up_sample = None;
        }
        self.metrics.flush(&self.stats, self.smsc_table.relayed(), self.esme.open, self.smsc.open);
        self.policy.tick(self.now);
        self.release_holds(false);
        if !self.multi_rejects.is_empty() && self.smsc_table.is_empty() {
            self.multi_rejects.clear();
        }
        self.optout.prune(self.esme_table.is_empty());
        self.release_held();
        if self.life.is_bound() {
            let up_idle = self.settings.upstream.enquire_link_interval.as_millis() as u64;
            if self.smsc.open
                && now.saturating_sub(self.smsc.last_rx_ms) >= up_idle
                && !self.smsc_table.has_local(cmd::ENQUIRE_LINK)
            {
                self.send_local_up(cmd::ENQUIRE_LINK);
                self.smsc.last_rx_ms = now; // next probe one interval later
            }
            let down_idle = self.settings.session.enquire_link_interval.as_millis() as u64;
            if self.esme.open
                && now.saturating_sub(self.esme.last_rx_ms) >= down_idle
                && !self.esme_table.has_local(cmd::ENQUIRE_LINK)
            {
                self.send_local_down(cmd::ENQUIRE_LINK);
                self.esme.last_rx_ms = now;
            }
        }
    }

    /// Releases held deliver_sm_resp whose opt-out is durable (and gives up on overdue ones).
    pub fn release_held(&mut self) {
        let limit = self.settings.session.response_timeout.as_millis() as u64;
        for _ in 0..self.optout.release(self.now_ms, limit, &mut self.smsc, self.peer) {
            self.stats.error(ErrorKind::OptoutNotDurable);
        }
    }

    pub(super) fn send_local_up(&mut self, command_id: u32) {
        self.send_local(Side::Smsc, command_id);
    }

    pub(super) fn send_local_down(&mut self, command_id: u32) {
        self.send_local(Side::Esme, command_id);
    }

    /// Sends consentgate's own request (enquire_link, unbind) to `side`.
    fn send_local(&mut self, side: Side, command_id: u32) {
        let (table, leg) = match side {
            Side::Esme => (&mut self.esme_table, &mut self.esme),
            Side::Smsc => (&mut self.smsc_table, &mut self.smsc),
        };
        if let Some(seq) = table.insert(0, command_id, Origin::Local, self.now_ms) {
            put_header_only(&mut leg.out, command_id, status::ESME_ROK, seq);
        }
    }

    /// Answers every relayed request pending upstream with `st` (to the ESME, if reachable).
    pub(super) fn answer_pending_at_smsc(&mut self, st: u32) {
        self.answer_all(Side::Smsc, st);
        // Parts held for the rest of their message never reached the SMSC: answered too.
        for h in self.policy.drain_holds() {
            for p in h.parts {
                if self.esme.open {
                    put_local_error_resp(&mut self.esme.out, p.command_id, st, p.seq);
                }
            }
        }
    }

    /// Answers every relayed request pending at the ESME with `st` (to the SMSC, if reachable).
    pub(super) fn answer_pending_at_esme(&mut self, st: u32) {
        self.answer_all(Side::Esme, st);
    }

    /// Answers every relayed request pending at `side` with `st`, to the peer that sent it (if
    /// its leg is open): unbind with unbind_resp, anything else with its response carrying `st`.
    fn answer_all(&mut self, side: Side, st: u32) {
        let mut v = std::mem::take(&mut self.expired);
        let (table, requester) = match side {
            Side::Smsc => (&mut self.smsc_table, &mut self.esme),
            Side::Esme => (&mut self.esme_table, &mut self.smsc),
        };
        table.drain(&mut v);
        for p in v.drain(..) {
            if p.origin != Origin::Relayed {
                continue;
            }
            if requester.open {
                if p.command_id == cmd::UNBIND {
                    put_header_only(&mut requester.out, cmd::UNBIND_RESP, status::ESME_ROK, p.peer_seq);
                } else {
                    put_local_error_resp(&mut requester.out, p.command_id, st, p.peer_seq);
                }
            }
            if side == Side::Smsc && self.audit.has_pending() {
                self.audit.local_answer(p.seq, st);
            }
        }
        self.expired = v;
    }
}
