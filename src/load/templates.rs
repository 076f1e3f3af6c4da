//! Pre-built submit_sm frames: every frame a run sends is built once, before the run, so a
//! send is a memcpy plus the sequence number (and, for multi-part messages, the reference).

use super::scenario::{check_addr, check_line, merged_tlvs, Encoding};
use super::{LoadConfig, Speed};
use crate::pcap::Extracted;
use crate::smpp::pdu::SubmitBuilder;
use crate::smpp::text::{split_text, UDH_CONCAT8_REF_AT};

/// Random traffic: number of distinct pre-built submit_sm frames.
pub(super) const RANDOM_POOL: usize = 1024;

/// One pre-built submit_sm.
#[derive(Debug, Clone, Copy)]
pub(super) struct Tpl {
    pub(super) start: u32,
    pub(super) len: u32,
    /// Offset of the UDH reference byte within the frame; 0 = single-part message.
    pub(super) ref_off: u16,
    /// Offset of the destination digits within the frame (rewritten per message with
    /// [`super::LoadConfig::destinations`]).
    pub(super) dest_off: u16,
    /// First (or only) part of a message.
    pub(super) first: bool,
    pub(super) expect: Option<u32>,
}

/// All frames back to back in one buffer, sent in order, cyclically (or once, for replay).
#[derive(Debug, Default)]
pub(super) struct Templates {
    pub(super) blob: Vec<u8>,
    pub(super) pdus: Vec<Tpl>,
    pub(super) max_len: usize,
    /// Send the list once, then stop (replay).
    pub(super) once: bool,
    /// `expect` is the recorded status; tally (recorded, replayed) pairs.
    pub(super) replay: bool,
    /// Replay pacing: when each PDU is due, ns after the replay start (empty = no pacing).
    pub(super) due_ns: Vec<u64>,
}

impl Templates {
    #[allow(clippy::too_many_arguments)]
    fn push_message(
        &mut self,
        source: &str,
        destination: &str,
        enc: Encoding,
        bodies: &[Vec<u8>],
        tlvs: &[(u16, Vec<u8>)],
        registered_delivery: bool,
        expect: Option<u32>,
    ) {
        let dest = destination.strip_prefix('+').unwrap_or(destination);
        let multi = bodies.len() > 1;
        for (i, body) in bodies.iter().enumerate() {
            let mut b = SubmitBuilder::new(source, dest)
                .esm_class(if multi { 0x40 } else { 0 })
                .registered_delivery(registered_delivery as u8)
                .data_coding(enc.data_coding())
                .short_message(body);
            if !source.bytes().all(|c| c.is_ascii_digit()) {
                b = b.source_ton_npi(5, 0);
            }
            for (tag, v) in tlvs {
                b = b.tlv(*tag, v);
            }
            let f = b.build(0);
            let offset = |p: &[u8]| (p.as_ptr() as usize - f.as_ptr() as usize) as u16;
            // short_message starts with the UDH; the TLVs (if any) follow it.
            let ref_off = match crate::smpp::peek::message(&f) {
                Ok(m) if multi => offset(m.short_message) + UDH_CONCAT8_REF_AT as u16,
                _ => 0,
            };
            let dest_off = crate::smpp::peek::destination(&f).map_or(0, |d| offset(d.addr));
            self.push_frame(&f, ref_off, dest_off, i == 0, expect);
        }
    }

    /// Appends one pre-built frame.
    fn push_frame(&mut self, f: &[u8], ref_off: u16, dest_off: u16, first: bool, expect: Option<u32>) {
        self.pdus.push(Tpl { start: self.blob.len() as u32, len: f.len() as u32, ref_off, dest_off, first, expect });
        self.max_len = self.max_len.max(f.len());
        self.blob.extend_from_slice(f);
    }

    /// `--cmpp`: one message as CMPP_SUBMITs in `version`'s layout, Msg_src the SP_Id
    /// (`sp_id`), Src_Id `source`. ASCII text goes as Msg_Fmt 0, anything else as UCS-2
    /// (Msg_Fmt 8); a long one as parts with TP_udhi and the same concatenation header as SMPP.
    #[allow(clippy::too_many_arguments)]
    fn push_cmpp_message(
        &mut self,
        version: crate::cmpp::Version,
        sp_id: &str,
        source: &str,
        destination: &str,
        text: &str,
        registered_delivery: bool,
        expect: Option<u32>,
    ) -> anyhow::Result<()> {
        use crate::cmpp::{pdu, peek, text::fmt};
        let dest = destination.strip_prefix('+').unwrap_or(destination);
        let (enc, msg_fmt) = if text.is_ascii() { (Encoding::Latin1, fmt::ASCII) } else { (Encoding::Ucs2, fmt::UCS2) };
        let bodies = split_text(text, enc)?;
        let total = bodies.len();
        for (i, body) in bodies.iter().enumerate() {
            let dests = [dest.as_bytes()];
            let f = pdu::SubmitFields {
                pk_total: total as u8,
                pk_number: (i + 1) as u8,
                registered_delivery: registered_delivery as u8,
                service_id: b"LOAD",
                tp_udhi: (total > 1) as u8,
                msg_fmt,
                msg_src: sp_id.as_bytes(),
                src_id: source.as_bytes(),
                dest_terminal_ids: &dests,
                msg_content: body,
                ..pdu::SubmitFields::default()
            };
            let mut out = bytes::BytesMut::new();
            pdu::put_submit(&mut out, version, 0, &f);
            let sub = peek::submit(&out, version).map_err(|e| anyhow::anyhow!("a CMPP_SUBMIT to {dest}: {e}"))?;
            let offset = |p: &[u8]| (p.as_ptr() as usize - out.as_ptr() as usize) as u16;
            let ref_off = if total > 1 { offset(sub.msg_content) + UDH_CONCAT8_REF_AT as u16 } else { 0 };
            let dest_off = sub.destinations().next().map_or(0, offset);
            self.push_frame(&out, ref_off, dest_off, i == 0, expect);
        }
        Ok(())
    }

    #[inline]
    pub(super) fn frame(&self, p: &Tpl) -> &[u8] {
        &self.blob[p.start as usize..(p.start + p.len) as usize]
    }
}

/// Writes `n` as exactly `digits.len()` decimal digits (leading zeros).
#[inline]
pub(super) fn write_digits(digits: &mut [u8], mut n: u64) {
    for d in digits.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// xorshift64: good enough for test numbers, no dependency.
pub(super) struct XorShift(pub(super) u64);

impl XorShift {
    #[inline]
    pub(super) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// Replay: the recorded streams dealt to `sessions` template lists (largest stream first, to
/// the least loaded session), each PDU with its recorded status as `expect`.
pub(super) fn build_replay_templates(x: &Extracted, sessions: usize, speed: Speed) -> Vec<Templates> {
    let n = sessions.min(x.streams.len()).max(1);
    let mut order: Vec<usize> = (0..x.streams.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(x.streams[i].pdus));
    let mut load = vec![0u64; n];
    let mut session_of = vec![0usize; x.streams.len()];
    for i in order {
        let s = (0..n).min_by_key(|&k| load[k]).unwrap_or(0);
        load[s] += x.streams[i].pdus;
        session_of[i] = s;
    }
    let t0 = x.pdus.iter().map(|p| p.ts_ns).min().unwrap_or(0);
    let mut out: Vec<Templates> =
        (0..n).map(|_| Templates { once: true, replay: true, ..Default::default() }).collect();
    for p in &x.pdus {
        let t = &mut out[session_of[p.stream as usize]];
        let f = x.frame(p);
        t.pdus.push(Tpl {
            start: t.blob.len() as u32,
            len: f.len() as u32,
            ref_off: 0,
            dest_off: 0,
            first: true,
            expect: p.recorded_status,
        });
        t.max_len = t.max_len.max(f.len());
        t.blob.extend_from_slice(f);
        if let Speed::Factor(k) = speed {
            let due = ((p.ts_ns - t0) as f64 / k) as u64;
            // Never earlier than the PDU before it on this session (capture clocks can step).
            let due = due.max(t.due_ns.last().copied().unwrap_or(0));
            t.due_ns.push(due);
        }
    }
    out
}

pub(super) fn build_templates(cfg: &LoadConfig) -> anyhow::Result<Templates> {
    let mut t = Templates::default();
    let line_tlvs = cfg.scenario.iter().flatten().any(|l| !l.tlvs.is_empty());
    if cfg.cmpp.is_some() && (!cfg.tlvs.is_empty() || line_tlvs) {
        anyhow::bail!("TLVs (--tlv, a scenario's \"tlvs\") are SMPP optional parameters: CMPP has none");
    }
    match &cfg.scenario {
        Some(lines) => {
            if lines.is_empty() {
                anyhow::bail!("scenario has no messages");
            }
            for (i, l) in lines.iter().enumerate() {
                check_line(l).map_err(|e| anyhow::anyhow!("scenario message {}: {e}", i + 1))?;
                let expect = l.expect.as_deref().and_then(crate::smpp::status::parse);
                if let Some(v) = cfg.cmpp {
                    let (sp, rd) = (&cfg.system_id, cfg.registered_delivery);
                    t.push_cmpp_message(v, sp, &l.source, &l.destination, &l.text, rd, expect)?;
                    continue;
                }
                let bodies = split_text(&l.text, l.encoding)?;
                let tlvs = merged_tlvs(&cfg.tlvs, l).map_err(|e| anyhow::anyhow!("scenario message {}: {e}", i + 1))?;
                t.push_message(&l.source, &l.destination, l.encoding, &bodies, &tlvs, cfg.registered_delivery, expect);
            }
        }
        None => {
            check_addr("source", &cfg.source).map_err(anyhow::Error::msg)?;
            let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
            for _ in 0..RANDOM_POOL {
                let dest = match cfg.destinations {
                    // Placeholder digits of the right length; each send writes its own.
                    Some(r) => format!("{:0w$}", r.lo, w = r.digits as usize),
                    None => format!("86138{:08}", rng.next_u64() % 100_000_000),
                };
                let (text, enc) = match &cfg.text {
                    Some(t) => (t.clone(), if crate::smpp::text::is_gsm7(t) { Encoding::Gsm7 } else { Encoding::Ucs2 }),
                    None => (
                        format!(
                            "Your verification code is {:06}. It expires in 5 minutes.",
                            rng.next_u64() % 1_000_000
                        ),
                        Encoding::Gsm7,
                    ),
                };
                if let Some(v) = cfg.cmpp {
                    t.push_cmpp_message(v, &cfg.system_id, &cfg.source, &dest, &text, cfg.registered_delivery, None)?;
                    continue;
                }
                let bodies = split_text(&text, enc)?;
                t.push_message(&cfg.source, &dest, enc, &bodies, &cfg.tlvs, cfg.registered_delivery, None);
            }
        }
    }
    Ok(t)
}
