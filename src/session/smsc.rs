//! SMSC → ESME: deliver_sm / data_sm (receipts and MO, with opt-out capture) and the SMSC's
//! other requests are relayed to the ESME under a fresh sequence number or answered here; the
//! SMSC's responses go back to the ESME (submit_multi responses merged with consentgate's own
//! rejected destinations).

use tracing::debug;

use super::core::Session;
use crate::relay::seq::Origin;
use crate::smpp::pdu::{put_header_only, put_local_error_resp, put_renumbered};
use crate::smpp::status::ESME_RX_T_APPN;
use crate::smpp::{self, cmd, status, Header};

impl Session {
    pub(super) fn on_smsc_pdu(&mut self, frame: &[u8]) {
        let h = Header::read(frame);
        self.stats.pdu(true, h.command_id);
        if h.is_response() {
            return self.on_smsc_response(frame, h);
        }
        let seq = h.sequence_number;
        match h.command_id {
            cmd::DELIVER_SM | cmd::DATA_SM => {
                let refuse = if !self.bind_type.can_receive() {
                    Some(status::ESME_RINVBNDSTS)
                } else if !self.esme.open || !self.life.is_serving() {
                    Some(ESME_RX_T_APPN)
                } else {
                    None
                };
                if let Some(st) = refuse {
                    return put_local_error_resp(&mut self.smsc.out, h.command_id, st, seq);
                }
                let ticket = {
                    let entity = &self.policy.engine().account(self.policy.account()).entity;
                    self.optout.capture(frame, self.policy.engine(), entity, self.now, self.peer)
                };
                let ticket = ticket.map(|(intent, t)| {
                    self.stats.mo_statement(intent);
                    t
                });
                if let (Some(down_seq), Some(t)) = (self.relay_down(frame, seq, h.command_id), ticket) {
                    self.optout.relayed(down_seq, t);
                }
            }
            cmd::ALERT_NOTIFICATION => {
                if self.esme.open && self.bind_type.can_receive() {
                    self.esme.out.extend_from_slice(frame);
                }
            }
            cmd::ENQUIRE_LINK => put_header_only(&mut self.smsc.out, cmd::ENQUIRE_LINK_RESP, status::ESME_ROK, seq),
            cmd::UNBIND => {
                if self.life.is_bound() && self.esme.open {
                    self.life.smsc_unbinding();
                    let _ = self.relay_down(frame, seq, cmd::UNBIND);
                } else {
                    put_header_only(&mut self.smsc.out, cmd::UNBIND_RESP, status::ESME_ROK, seq);
                    self.life.smsc_unbound = true;
                    if self.life.is_serving() {
                        self.answer_pending_at_smsc(status::ESME_RSYSERR);
                        self.start_closing("smsc unbound");
                    }
                }
            }
            id if smpp::is_known_command(id) => {
                put_local_error_resp(&mut self.smsc.out, id, status::ESME_RINVBNDSTS, seq);
            }
            _ => put_header_only(&mut self.smsc.out, cmd::GENERIC_NACK, status::ESME_RINVCMDID, seq),
        }
    }

    fn relay_down(&mut self, frame: &[u8], smsc_seq: u32, command_id: u32) -> Option<u32> {
        match self.esme_table.insert(smsc_seq, command_id, Origin::Relayed, self.now_ms) {
            Some(down_seq) => {
                put_renumbered(&mut self.esme.out, frame, down_seq);
                Some(down_seq)
            }
            None => {
                put_local_error_resp(&mut self.smsc.out, command_id, ESME_RX_T_APPN, smsc_seq);
                None
            }
        }
    }

    fn on_smsc_response(&mut self, frame: &[u8], h: Header) {
        let Some(p) = self.smsc_table.take(h.sequence_number) else {
            return debug!(peer = %self.peer, seq = h.sequence_number, "late or unknown response from smsc dropped");
        };
        self.audit.answered(h.sequence_number, frame);
        if let Some((seq, sent_us)) = self.up_sample {
            if seq == h.sequence_number {
                self.metrics.upstream.record(self.now_us.saturating_sub(sent_us) as f64 * 1e-6);
                self.up_sample = None;
            }
        }
        match p.origin {
            Origin::Relayed => {
                let is_unbind_resp = p.command_id == cmd::UNBIND;
                if is_unbind_resp {
                    self.answer_pending_at_smsc(status::ESME_RSYSERR);
                    self.answer_pending_at_esme(ESME_RX_T_APPN);
                }
                if self.esme.open {
                    let merged = p.command_id == cmd::SUBMIT_MULTI
                        && !self.multi_rejects.is_empty()
                        && self.merge_multi_resp(frame, p.seq, p.peer_seq);
                    if !merged {
                        put_renumbered(&mut self.esme.out, frame, p.peer_seq);
                    }
                }
                if is_unbind_resp {
                    self.life.esme_unbound = true;
                    self.life.smsc_unbound = true;
                    self.finish("esme unbound");
                }
            }
            Origin::Local => {
                if p.command_id == cmd::UNBIND {
                    self.life.smsc_unbound = true;
                }
            }
        }
    }
}
