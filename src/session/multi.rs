//! submit_multi (SMPP v3.4 §4.5): decided per destination. Allowed destinations are forwarded
//! in a rewritten PDU; rejected ones are merged into the response's unsuccess_sme list. If
//! none is allowed the request is answered here.

use bytes::BufMut;

use super::audit::list_addr;
use super::core::Session;
use crate::policy::{Message, Verdict};
use crate::smpp::peek::{self, MultiDest};
use crate::smpp::{self, cmd, HEADER_LEN};

impl Session {
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
            let m = match dest {
                MultiDest::Sme(a) => Some(Message::of_multi(&mv, a)),
                MultiDest::List(_) => None,
            };
            let d = self.decide(|p, now| p.decide_multi(m.as_ref(), now));
            let addr = match dest {
                MultiDest::Sme(a) => a,
                MultiDest::List(name) => list_addr(name),
            };
            if self.audit.wants(d.verdict) {
                let st = matches!(d.verdict, Verdict::Reject(_)).then_some(d.status);
                self.audit_record(&Message::of_multi(&mv, addr), &d, seq, st, None);
            }
            match d.verdict {
                Verdict::Reject(_) => {
                    if n_rejected == 0 {
                        first_status = d.status;
                    }
                    n_rejected += 1;
                    rejected.put_u8(addr.ton);
                    rejected.put_u8(addr.npi);
                    rejected.put_slice(addr.addr);
                    rejected.put_u8(0);
                    rejected.put_u32(d.status);
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
            let out = &mut self.esme.out;
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
        let out = &mut self.esme.out;
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
}
