//! The CMPP front (architecture §11): one task per SP connection, paired with its own
//! connection to the ISMG, running the same decision pipeline as the SMPP sessions
//! ([`SessionPolicy`]) on every destination of every SUBMIT.
//!
//! ```text
//!   SP ──CONNECT──► admit by Source_Addr (= [[account]] system_id, licence) ──► ISMG
//!   SP ◄─CONNECT_RESP (the ISMG's, unchanged: it authenticates; no secret here) ◄── ISMG
//!   SP ──SUBMIT──► [per destination: pipeline] ──► forward / rewrite / answer ──► ISMG
//!   SP ◄─DELIVER (MO: opt-out keywords recorded first; reports unchanged) ◄────── ISMG
//! ```
//!
//! * **Admission.** The CONNECT's Source_Addr (the SP_Id) must be an account's `system_id`
//!   with a valid licence; otherwise CONNECT_RESP Status 2 (unknown SP) or 5 (no licence,
//!   too many connections) and nothing reaches the ISMG. An admitted CONNECT is relayed
//!   byte for byte and the ISMG's CONNECT_RESP comes back byte for byte: the MD5
//!   authenticators stay between the SP and the ISMG.
//! * **SUBMIT.** Each destination is decided alone. All allowed (or monitor mode): the SUBMIT
//!   is forwarded unchanged but for its Sequence_Id. All refused: SUBMIT_RESP with the first
//!   refused destination's Result (`policy.cmpp.result`) and a Msg_Id of consentgate's own;
//!   nothing is forwarded. Some refused: the SUBMIT is forwarded without them (DestUsr_tl
//!   and Total_Length fixed, every other byte kept) and, once the ISMG's SUBMIT_RESP
//!   (Result 0, Msg_Id M) has gone to the SP, each refused destination gets a status report
//!   with Msg_Id M, its Dest_terminal_Id and the reason's Stat (`policy.cmpp.stat`).
//!   **Msg_Id:** an SP matches a group's reports by (Msg_Id, Dest_terminal_Id); M is the only
//!   Msg_Id the SP has for the group, so the refused destinations' reports carry M. The
//!   ISMG's own reports for the kept destinations carry whatever it assigned (M, or M..M+k−1
//!   in the order of the kept destinations); consentgate does not renumber them.
//! * **DELIVER.** Status reports pass unchanged (but the Sequence_Id). An MO is checked for
//!   the opt-out keywords (ASCII, UCS-2, GBK) and recorded as a revocation of the account's
//!   entity exactly as on SMPP: the SP's DELIVER_RESP goes to the ISMG only once the
//!   revocation is durable ([`OptoutGate`]); not durable within T, the ISMG gets Result 9 and
//!   redelivers.
//! * **Link.** ACTIVE_TEST is answered on each leg; each leg idle for C gets one of
//!   consentgate's, and N unanswered close the session. TERMINATE from either side is
//!   answered and passed to the other. A request unanswered for T is answered locally:
//!   SUBMIT Result 8 (the SP resends), DELIVER Result 9 (the ISMG redelivers).
//! * **Bad input.** A SUBMIT that does not parse gets SUBMIT_RESP with the error's Result
//!   and the stream stays in sync (lengths are checked before anything else); an oversized
//!   PDU is skipped; a PDU shorter than its header ends the session (nothing after it can be
//!   framed).
//!
//! * **Long messages.** When a step reads the account's text, the parts of a
//!   single-destination long message (UDH with TP_udhi) are held until all have come (or
//!   `policy.reassembly_timeout`) and decided once on the whole text, as on SMPP.
//! * **Reload.** A config reload reaches a connected session at its next read: the new
//!   engine, the account looked up again by SP_Id (gone: the session is terminated).
//!
//! * **Capture.** With `[capture]`, both legs go to the pcapng files like SMPP sessions, on
//!   the synthetic servers' port 7890 so that Wireshark and tshark decode them as CMPP.
//!
//! * **Audit.** Decisions go to the audit log like SMPP ones, marked `"protocol":"cmpp"`,
//!   their `status` the Result the SP got (a group's forwarded destinations without the
//!   ISMG's answer).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::audit::SessionAudit;
use super::metrics::{ErrorKind, SessionMetrics, SessionStats};
use super::optout_gate::{Answers, OptoutGate};
use super::Context;
use crate::capture::{now_us, Flow, SessionCapture};
use crate::cmpp::frame::{Framer, Next, DEFAULT_MAX_PDU_BYTES};
use crate::cmpp::msg_id::MsgId;
use crate::cmpp::peek::{self as cpeek, Report};
use crate::cmpp::{self, cmd, connect_status, pdu, result, text as ctext, Version};
use crate::policy::{
    AccountIdx, Decision, Engine, Held, Message, MessageOf, Part, Reason, SessionPolicy, SessionSlot, Verdict,
};
use crate::relay::CmppUpstreamConfig;
use crate::smpp::peek::Addr;
use crate::smpp::BindType;

/// How often the link timers are checked.
const TICK: Duration = Duration::from_millis(200);
/// Output queued for a leg beyond this stops reading from the other leg.
const OUT_HIGH_WATER: usize = 4 << 20;
/// DELIVER_RESP Result for an MO the SP did not answer in time, or whose opt-out is not
/// durable in time: 9 ("other error" in 2.0): the ISMG redelivers.
const DELIVER_RETRY_RESULT: u32 = 9;

/// Serves one SP connection until it ends. Never panics on peer input.
pub async fn serve(stream: TcpStream, peer: SocketAddr, ctx: Arc<Context>, mut shutdown: watch::Receiver<bool>) {
    let _ = stream.set_nodelay(true);
    let Some(mut s) = connect(stream, peer, &ctx, &mut shutdown).await else { return };
    let system_id = s.engine.account(s.account).system_id.clone();
    info!(peer = %peer, system_id = %system_id, version = s.version.byte(), "cmpp session connected");
    s.run(&mut shutdown).await;
    info!(peer = %peer, system_id = %system_id, reason = s.done.unwrap_or("closed"), "cmpp session closed");
}

/// One leg: its socket, buffers and framing.
struct Leg {
    stream: TcpStream,
    rbuf: BytesMut,
    out: BytesMut,
    framer: Framer,
    open: bool,
    last_rx: Instant,
    /// consentgate's ACTIVE_TESTs on this leg not answered yet.
    tests_out: u32,
    last_test: Instant,
}

impl Leg {
    fn new(stream: TcpStream, rbuf: BytesMut) -> Leg {
        let now = Instant::now();
        Leg {
            stream,
            rbuf,
            out: BytesMut::with_capacity(16 * 1024),
            framer: Framer::new(DEFAULT_MAX_PDU_BYTES),
            open: true,
            last_rx: now,
            tests_out: 0,
            last_test: now,
        }
    }

    /// Reads what is there (shown to `seen`); false when the peer closed or failed.
    fn fill(&mut self, seen: impl FnOnce(&[u8])) -> bool {
        if self.rbuf.capacity() - self.rbuf.len() < 16 * 1024 {
            self.rbuf.reserve(64 * 1024);
        }
        match self.stream.try_read_buf(&mut self.rbuf) {
            Ok(0) => false,
            Ok(n) => {
                self.last_rx = Instant::now();
                seen(&self.rbuf[self.rbuf.len() - n..]);
                true
            }
            Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
        }
    }

    /// Writes what the socket takes now (shown to `seen`); false on an error.
    fn flush(&mut self, mut seen: impl FnMut(&[u8])) -> bool {
        while !self.out.is_empty() {
            match self.stream.try_write(&self.out) {
                Ok(0) => return false,
                Ok(n) => {
                    seen(&self.out[..n]);
                    self.out.advance(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                Err(_) => return false,
            }
        }
        true
    }
}

/// A request relayed to the ISMG, by the ISMG-leg Sequence_Id.
struct Up {
    sp_seq: u32,
    command_id: u32,
    since: Instant,
    /// Destinations taken out of a group SUBMIT: each reported to the SP once the ISMG has
    /// answered (destination, reason).
    refused: Vec<(Vec<u8>, Reason)>,
}

/// A request sent to the SP, by the SP-leg Sequence_Id.
struct Down {
    /// The ISMG's Sequence_Id of the DELIVER relayed; `None` for consentgate's own reports.
    ismg_seq: Option<u32>,
    since: Instant,
}

struct CmppSession {
    ctx: Arc<Context>,
    engine: Arc<Engine>,
    /// The engine cell's generation `engine` came from.
    generation: u64,
    sp_id: String,
    account: AccountIdx,
    _slot: SessionSlot,
    entity: String,
    version: Version,
    cfg: CmppUpstreamConfig,
    peer: SocketAddr,
    policy: SessionPolicy,
    sp: Leg,
    ismg: Leg,
    up: HashMap<u32, Up>,
    next_ismg_seq: u32,
    down: HashMap<u32, Down>,
    next_sp_seq: u32,
    optout: OptoutGate,
    stats: SessionStats,
    metrics: SessionMetrics,
    /// Msg_Ids of consentgate's own SUBMIT_RESPs and reports.
    next_msg_id: u16,
    /// `[capture]`: this session's recorder (legs on the CMPP port).
    capture: Option<SessionCapture>,
    /// The decision audit log's side of this session (records marked CMPP).
    audit: SessionAudit,
    done: Option<&'static str>,
}

/// Reads the SP's CONNECT, admits it, connects to the ISMG and relays the CONNECT and its
/// answer. `None` when the session ends there (refused, malformed, ISMG down or refusing).
async fn connect(
    mut stream: TcpStream,
    peer: SocketAddr,
    ctx: &Arc<Context>,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<CmppSession> {
    let settings = ctx.settings();
    let Some(cfg) = settings.upstream.cmpp.clone() else {
        warn!(peer = %peer, "cmpp connection without [upstream.cmpp]; closing");
        return None;
    };
    let deadline = Instant::now() + settings.session.bind_timeout;
    let mut rbuf = BytesMut::with_capacity(4096);
    let mut framer = Framer::new(DEFAULT_MAX_PDU_BYTES);
    // The CONNECT.
    let frame = loop {
        match framer.next(&rbuf) {
            Next::Frame(len) => {
                let f = rbuf.split_to(len);
                if cmpp::command_id(&f) == cmd::CONNECT {
                    break f;
                }
                debug!(peer = %peer, command = cmpp::command_name(cmpp::command_id(&f)), "cmpp request before CONNECT; closing");
                return None;
            }
            Next::Incomplete => {}
            _ => return None,
        }
        rbuf.reserve(4096);
        tokio::select! {
            r = stream.readable() => match r.and_then(|()| stream.try_read_buf(&mut rbuf)) {
                Ok(0) => return None,
                Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => return None,
                _ => {}
            },
            _ = tokio::time::sleep_until(deadline) => {
                debug!(peer = %peer, "no CONNECT within session.bind_timeout; closing");
                return None;
            }
            _ = shutdown.changed() => return None,
        }
    };
    let seq = cmpp::sequence(&frame);
    let refuse = |status: u32, version: Version| {
        let mut out = BytesMut::new();
        pdu::put_connect_resp(&mut out, version, seq, status, &[0; 16], version.byte());
        out
    };
    let c = match cpeek::connect(&frame) {
        Ok(c) => c,
        Err(e) => {
            let _ = stream.write_all(&refuse(e.connect_status(), Version::V30)).await;
            return None;
        }
    };
    let version = match c.version() {
        Ok(v) => v,
        Err(e) => {
            let _ = stream.write_all(&refuse(e.connect_status(), Version::V30)).await;
            return None;
        }
    };
    let sp_id = String::from_utf8_lossy(c.source_addr).into_owned();
    let generation = ctx.engine.generation();
    let engine = ctx.engine();
    let label = if engine.lookup(&sp_id).is_some() { sp_id.clone() } else { "unknown".to_owned() };
    let count = |result: &'static str| {
        metrics::counter!(crate::telemetry::metrics::BINDS_TOTAL, "account" => label.clone(), "result" => result)
            .increment(1)
    };
    let admitted = engine
        .admit(&sp_id, BindType::Transceiver, ctx.clock.now().utc_day())
        .and_then(|idx| engine.open_session(idx).map(|slot| (idx, slot)));
    let (account, slot) = match admitted {
        Ok(a) => a,
        Err(why) => {
            let status = match why {
                crate::policy::BindRefusal::UnknownSystemId => connect_status::BAD_SOURCE_ADDR,
                _ => connect_status::OTHER,
            };
            info!(peer = %peer, sp_id = %sp_id, refusal = why.as_str(), "cmpp CONNECT refused");
            count("refused");
            let _ = stream.write_all(&refuse(status, version)).await;
            return None;
        }
    };
    // The ISMG: connect, relay the CONNECT unchanged, relay its answer unchanged.
    let limit = cfg.connect_timeout;
    let up = tokio::time::timeout(limit, TcpStream::connect(&cfg.address)).await;
    let mut up = match up {
        Ok(Ok(s)) => s,
        _ => {
            warn!(peer = %peer, address = %cfg.address, "ISMG unreachable; CONNECT answered Status 5");
            count("upstream_unreachable");
            let _ = stream.write_all(&refuse(connect_status::OTHER, version)).await;
            return None;
        }
    };
    let _ = up.set_nodelay(true);
    if up.write_all(&frame).await.is_err() {
        let _ = stream.write_all(&refuse(connect_status::OTHER, version)).await;
        return None;
    }
    let mut ubuf = BytesMut::with_capacity(4096);
    let mut ufr = Framer::new(DEFAULT_MAX_PDU_BYTES);
    let until = Instant::now() + limit;
    let resp = loop {
        if let Next::Frame(len) = ufr.next(&ubuf) {
            let f = ubuf.split_to(len);
            if cmpp::command_id(&f) == cmd::CONNECT_RESP {
                break Some(f);
            }
            continue;
        }
        ubuf.reserve(4096);
        tokio::select! {
            r = up.readable() => match r.and_then(|()| up.try_read_buf(&mut ubuf)) {
                Ok(0) => break None,
                Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => break None,
                _ => {}
            },
            _ = tokio::time::sleep_until(until) => break None,
        }
    };
    let Some(resp) = resp else {
        warn!(peer = %peer, address = %cfg.address, "no CONNECT_RESP from the ISMG; CONNECT answered Status 5");
        count("upstream_unreachable");
        let _ = stream.write_all(&refuse(connect_status::OTHER, version)).await;
        return None;
    };
    let status = cpeek::connect_resp(&resp, version).map(|r| r.status).unwrap_or(connect_status::OTHER);
    if stream.write_all(&resp).await.is_err() || status != connect_status::OK {
        info!(peer = %peer, sp_id = %sp_id, status, "ISMG refused the CONNECT");
        count("upstream_refused");
        return None;
    }
    count("ok");
    let system_id = engine.account(account).system_id.clone();
    let entity = engine.account(account).entity.clone();
    let policy = SessionPolicy::new(engine.clone(), ctx.store.clone(), account);
    let optout = OptoutGate::new(ctx.store.clone(), settings.keywords.clone(), settings.opt_in.of(&system_id));
    let mut capture = ctx.capture.as_ref().and_then(|c| c.session_cmpp(&system_id));
    if let Some(c) = capture.as_mut() {
        let t = now_us();
        c.record(Flow::EsmeToGateway, &frame, t);
        c.record(Flow::GatewayToSmsc, &frame, t);
        c.record(Flow::SmscToGateway, &resp, t);
        c.record(Flow::GatewayToEsme, &resp, t);
    }
    let session_id = ctx.next_session.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let audit = SessionAudit::new(&ctx.audit, &system_id, &entity, session_id).cmpp();
    let mut sp = Leg::new(stream, rbuf);
    sp.framer = framer;
    let mut ismg = Leg::new(up, ubuf);
    ismg.framer = ufr;
    Some(CmppSession {
        ctx: ctx.clone(),
        engine,
        generation,
        sp_id,
        account,
        _slot: slot,
        entity,
        version,
        cfg,
        peer,
        policy,
        sp,
        ismg,
        up: HashMap::new(),
        next_ismg_seq: 1,
        down: HashMap::new(),
        next_sp_seq: 1,
        optout,
        stats: SessionStats::default(),
        metrics: SessionMetrics::new(&system_id),
        next_msg_id: 0,
        capture,
        audit,
        done: None,
    })
}

impl CmppSession {
    async fn run(&mut self, shutdown: &mut watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Bytes that came with the CONNECT and its answer.
        self.process_sp();
        self.process_ismg();
        while self.done.is_none() {
            self.flush();
            if self.done.is_some() {
                break;
            }
            let read_sp = self.ismg.out.len() < OUT_HIGH_WATER;
            let read_ismg = self.sp.out.len() < OUT_HIGH_WATER;
            let (w_sp, w_ismg) = (!self.sp.out.is_empty(), !self.ismg.out.is_empty());
            let holding = self.optout.holding();
            enum Ev {
                Sp,
                Ismg,
                Writable,
                Durable,
                Tick,
                Shutdown,
            }
            let ev = tokio::select! {
                r = self.sp.stream.readable(), if read_sp => if r.is_ok() { Ev::Sp } else { Ev::Tick },
                r = self.ismg.stream.readable(), if read_ismg => if r.is_ok() { Ev::Ismg } else { Ev::Tick },
                _ = self.sp.stream.writable(), if w_sp => Ev::Writable,
                _ = self.ismg.stream.writable(), if w_ismg => Ev::Writable,
                _ = self.optout.durable_changed(), if holding => Ev::Durable,
                _ = tick.tick() => Ev::Tick,
                _ = shutdown.changed() => Ev::Shutdown,
            };
            match ev {
                Ev::Sp => {
                    let cap = &mut self.capture;
                    if self.sp.fill(|b| record(cap, Flow::EsmeToGateway, b)) {
                        self.process_sp();
                    } else {
                        self.sp.open = false;
                        self.end("sp closed the connection");
                    }
                }
                Ev::Ismg => {
                    let cap = &mut self.capture;
                    if self.ismg.fill(|b| record(cap, Flow::SmscToGateway, b)) {
                        self.process_ismg();
                    } else {
                        self.ismg.open = false;
                        self.end("ismg closed the connection");
                    }
                }
                Ev::Writable => {}
                Ev::Durable => self.release_held(),
                Ev::Tick => self.on_tick(),
                Ev::Shutdown => self.terminate_both("shutdown"),
            }
            self.metrics.flush(&self.stats, self.up.len(), self.sp.open, self.ismg.open);
            self.audit.flush();
        }
        // Long messages still held: decided on what came (the ISMG may still take them).
        self.release_holds(true);
        self.flush();
        // What is durable goes; the rest is answered for redelivery.
        self.optout.finish_bytes(&mut self.ismg.out, self.peer);
        let limit = Duration::from_secs(1);
        for leg in [&mut self.sp, &mut self.ismg] {
            if leg.open && !leg.out.is_empty() {
                let _ = tokio::time::timeout(limit, leg.stream.write_all(&leg.out)).await;
            }
            let _ = tokio::time::timeout(limit, leg.stream.shutdown()).await;
        }
        self.metrics.flush(&self.stats, 0, false, false);
        self.audit.abandon();
        self.audit.flush();
    }

    fn end(&mut self, why: &'static str) {
        self.done.get_or_insert(why);
    }

    fn flush(&mut self) {
        let cap = &mut self.capture;
        if self.sp.open && !self.sp.flush(|b| record(cap, Flow::GatewayToEsme, b)) {
            self.sp.open = false;
            self.end("sp write failed");
        }
        let cap = &mut self.capture;
        if self.ismg.open && !self.ismg.flush(|b| record(cap, Flow::GatewayToSmsc, b)) {
            self.ismg.open = false;
            self.end("ismg write failed");
        }
    }

    fn ismg_seq(&mut self) -> u32 {
        let s = self.next_ismg_seq;
        self.next_ismg_seq = self.next_ismg_seq.wrapping_add(1).max(1);
        s
    }

    fn sp_seq(&mut self) -> u32 {
        let s = self.next_sp_seq;
        self.next_sp_seq = self.next_sp_seq.wrapping_add(1).max(1);
        s
    }

    /// A Msg_Id of consentgate's own (gateway code 0: no ISMG uses it).
    fn own_msg_id(&mut self) -> u64 {
        self.next_msg_id = self.next_msg_id.wrapping_add(1);
        let t = jiff::Timestamp::from_millisecond(self.ctx.clock.now().unix_ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        let d = t.to_zoned(jiff::tz::TimeZone::UTC);
        MsgId {
            month: d.month() as u8,
            day: d.day() as u8,
            hour: d.hour() as u8,
            minute: d.minute() as u8,
            second: d.second() as u8,
            gateway: 0,
            sequence: self.next_msg_id,
        }
        .encode()
    }

    /// A reload since the last look: the new engine, the account found again by SP_Id.
    fn follow_reload(&mut self) {
        let g = self.ctx.engine.generation();
        if g == self.generation {
            return;
        }
        self.generation = g;
        let engine = self.ctx.engine();
        match engine.lookup(&self.sp_id) {
            Some(idx) => {
                self.entity = engine.account(idx).entity.clone();
                self.policy.rebind(engine.clone(), idx);
                let settings = self.ctx.settings();
                self.optout.set_keywords(settings.keywords.clone(), settings.opt_in.of(&self.sp_id));
                self.account = idx;
                self.engine = engine;
            }
            None => self.terminate_both("account removed by a reload"),
        }
    }

    fn process_sp(&mut self) {
        self.follow_reload();
        loop {
            match self.sp.framer.next(&self.sp.rbuf) {
                Next::Frame(len) => {
                    let frame = self.sp.rbuf.split_to(len);
                    self.on_sp(&frame);
                }
                Next::Skip(n) => self.sp.rbuf.advance(n),
                Next::TooLong { command_id, sequence, .. } => {
                    self.stats.error(ErrorKind::EsmeOversized);
                    if command_id == cmd::SUBMIT {
                        pdu::put_submit_resp(&mut self.sp.out, self.version, sequence, 0, result::TOO_LONG);
                    }
                }
                Next::TooShort { .. } => {
                    self.stats.error(ErrorKind::EsmeMalformed);
                    return self.terminate_both("sp sent a pdu shorter than its header");
                }
                Next::Incomplete => return,
            }
        }
    }

    fn process_ismg(&mut self) {
        loop {
            match self.ismg.framer.next(&self.ismg.rbuf) {
                Next::Frame(len) => {
                    let frame = self.ismg.rbuf.split_to(len);
                    self.on_ismg(&frame);
                }
                Next::Skip(n) => self.ismg.rbuf.advance(n),
                Next::TooLong { .. } => self.stats.error(ErrorKind::SmscOversized),
                Next::TooShort { .. } => return self.terminate_both("ismg sent a pdu shorter than its header"),
                Next::Incomplete => return,
            }
        }
    }

    fn on_sp(&mut self, frame: &[u8]) {
        let (id, seq) = (cmpp::command_id(frame), cmpp::sequence(frame));
        match id {
            cmd::SUBMIT => self.on_submit(frame, seq),
            cmd::ACTIVE_TEST => pdu::put_active_test_resp(&mut self.sp.out, seq),
            cmd::ACTIVE_TEST_RESP => self.sp.tests_out = 0,
            cmd::TERMINATE => {
                pdu::put_terminate_resp(&mut self.sp.out, seq);
                self.sp_terminated();
            }
            cmd::TERMINATE_RESP => self.end("terminated"),
            id if id & cmpp::RESP_BIT != 0 => self.on_sp_response(frame, seq),
            _ => {
                // QUERY, CANCEL and anything else an SP may send: relayed as it is.
                let s = self.ismg_seq();
                self.up.insert(s, Up { sp_seq: seq, command_id: id, since: Instant::now(), refused: Vec::new() });
                pdu::put_renumbered(&mut self.ismg.out, frame, s);
            }
        }
    }

    /// The SP ended the link: the ISMG is told, and the session ends once both are flushed.
    fn sp_terminated(&mut self) {
        let s = self.ismg_seq();
        pdu::put_terminate(&mut self.ismg.out, s);
        self.end("sp terminated");
    }

    fn terminate_both(&mut self, why: &'static str) {
        let (a, b) = (self.sp_seq(), self.ismg_seq());
        pdu::put_terminate(&mut self.sp.out, a);
        pdu::put_terminate(&mut self.ismg.out, b);
        self.end(why);
    }

    fn on_submit(&mut self, frame: &[u8], seq: u32) {
        let s = match cpeek::submit(frame, self.version) {
            Ok(s) => s,
            Err(e) => {
                self.stats.error(ErrorKind::EsmeMalformed);
                return pdu::put_submit_resp(&mut self.sp.out, self.version, seq, 0, e.result(self.version));
            }
        };
        if self.up.len() >= self.cfg.window as usize {
            self.stats.count(Verdict::Reject(Reason::Throttled));
            let id = self.own_msg_id();
            return pdu::put_submit_resp(&mut self.sp.out, self.version, seq, id, result::FLOW_CONTROL);
        }
        let now = self.ctx.clock.now();
        if s.dest_usr_tl == 1 {
            // One destination: a part of a long message may be held for the rest, so that the
            // text steps read the whole text (as on SMPP).
            let Some(m) = message(&s, 0) else { return };
            let concat = ctext::concat(s.tp_udhi, s.msg_content);
            let d = match self.policy.hold(&m, concat, frame, cmd::SUBMIT, seq, now) {
                Part::Decide => self.policy.decide(&m, concat, now),
                Part::Refused(d) => d,
                Part::Waiting => return,
                Part::Complete(held) => {
                    let d = self.policy.decide_held(&held, self.message_of(), now);
                    return self.release_parts(held, d);
                }
            };
            if !d.from_cache {
                self.stats.count(d.verdict);
            }
            return self.apply(frame, seq, d);
        }
        let mut verdicts: Vec<Decision> = Vec::with_capacity(usize::from(s.dest_usr_tl));
        for i in 0..usize::from(s.dest_usr_tl) {
            let Some(m) = message(&s, i) else { return };
            let d = self.policy.decide_multi(Some(&m), now);
            self.stats.count(d.verdict);
            if self.audit.wants(d.verdict) {
                // A group's destinations are recorded as decided: a refused one with its
                // Result, a forwarded one without the ISMG's answer (one per SUBMIT).
                let status = refusal(&d).map(|r| self.engine.config().cmpp_result[r as usize]);
                self.audit_record(&m, &d, seq, status, None);
            }
            verdicts.push(d);
        }
        let n_refused = verdicts.iter().filter(|d| refusal(d).is_some()).count();
        if n_refused == verdicts.len() {
            return self.apply(frame, seq, verdicts[0]);
        }
        let up_seq = self.ismg_seq();
        let mut out_refused = Vec::new();
        if n_refused == 0 {
            pdu::put_renumbered(&mut self.ismg.out, frame, up_seq);
        } else {
            let at = self.ismg.out.len();
            pdu::put_submit_keeping(&mut self.ismg.out, &s, |i, _| refusal(&verdicts[i]).is_none());
            cmpp::set_sequence(&mut self.ismg.out[at..], up_seq);
            for (i, dest) in s.destinations().enumerate() {
                if let Some(r) = refusal(&verdicts[i]) {
                    out_refused.push((dest.to_vec(), r));
                }
            }
        }
        self.up
            .insert(up_seq, Up { sp_seq: seq, command_id: cmd::SUBMIT, since: Instant::now(), refused: out_refused });
        self.stats.relayed += 1;
    }

    /// Forwards a SUBMIT whose every destination has decision `d`, or answers it with the
    /// reason's Result and a Msg_Id of consentgate's own.
    fn apply(&mut self, frame: &[u8], seq: u32, d: Decision) {
        let audited = self.audit.wants(d.verdict).then(|| (self.message_of())(frame)).flatten();
        if let Some(r) = refusal(&d) {
            let res = self.engine.config().cmpp_result[r as usize];
            if let Some(m) = audited {
                self.audit_record(&m, &d, seq, Some(res), None);
            }
            let id = self.own_msg_id();
            return pdu::put_submit_resp(&mut self.sp.out, self.version, seq, id, res);
        }
        let up_seq = self.ismg_seq();
        if let Some(m) = audited {
            self.audit_record(&m, &d, seq, None, Some(up_seq));
        }
        pdu::put_renumbered(&mut self.ismg.out, frame, up_seq);
        self.up.insert(up_seq, Up { sp_seq: seq, command_id: cmd::SUBMIT, since: Instant::now(), refused: Vec::new() });
        self.stats.relayed += 1;
    }

    /// The parts of a held long message, each forwarded or answered with its one decision.
    fn release_parts(&mut self, held: Held, d: Decision) {
        if !d.from_cache {
            self.stats.count(d.verdict);
        }
        for p in held.parts {
            self.apply(&p.frame, p.seq, d);
        }
    }

    /// Decides and releases the long messages whose parts stopped coming, or all of them.
    fn release_holds(&mut self, all: bool) {
        let now = self.ctx.clock.now();
        let held = if all { self.policy.drain_holds() } else { self.policy.expired_holds(now) };
        for h in held {
            let d = self.policy.decide_held(&h, self.message_of(), now);
            self.release_parts(h, d);
        }
    }

    /// How a held SUBMIT frame is read again: this connection's version.
    fn message_of(&self) -> MessageOf {
        match self.version {
            Version::V20 => |f| message(&cpeek::submit(f, Version::V20).ok()?, 0),
            Version::V30 => |f| message(&cpeek::submit(f, Version::V30).ok()?, 0),
        }
    }

    /// The SP answered one of the ISMG's requests (relayed) or one of consentgate's reports.
    fn on_sp_response(&mut self, frame: &[u8], seq: u32) {
        let Some(d) = self.down.remove(&seq) else { return };
        let Some(ismg_seq) = d.ismg_seq else { return };
        let version = self.version;
        let answers = || {
            let mut release = BytesMut::new();
            pdu::put_renumbered(&mut release, frame, ismg_seq);
            let mut give_up = BytesMut::new();
            let msg_id = cpeek::deliver_resp(frame, version).map(|r| r.msg_id).unwrap_or(0);
            pdu::put_deliver_resp(&mut give_up, version, ismg_seq, msg_id, DELIVER_RETRY_RESULT);
            Answers { release: release.to_vec(), give_up: give_up.to_vec() }
        };
        let now_ms = self.mono_ms();
        if self.optout.hold(seq, now_ms, answers) {
            return;
        }
        pdu::put_renumbered(&mut self.ismg.out, frame, ismg_seq);
    }

    fn audit_record(&mut self, m: &Message, d: &Decision, seq: u32, status: Option<u32>, pending: Option<u32>) {
        let account = self.engine.account(self.account);
        let stamp = self.policy.snapshot_stamp();
        self.audit.record(&self.engine, account, m, d, seq, status, pending, stamp);
    }

    fn mono_ms(&self) -> u64 {
        self.ctx.clock.now().mono_ms
    }

    fn on_ismg(&mut self, frame: &[u8]) {
        let (id, seq) = (cmpp::command_id(frame), cmpp::sequence(frame));
        match id {
            cmd::DELIVER => self.on_deliver(frame, seq),
            cmd::ACTIVE_TEST => pdu::put_active_test_resp(&mut self.ismg.out, seq),
            cmd::ACTIVE_TEST_RESP => self.ismg.tests_out = 0,
            cmd::TERMINATE => {
                pdu::put_terminate_resp(&mut self.ismg.out, seq);
                let s = self.sp_seq();
                pdu::put_terminate(&mut self.sp.out, s);
                self.end("ismg terminated");
            }
            cmd::TERMINATE_RESP => self.end("terminated"),
            id if id & cmpp::RESP_BIT != 0 => self.on_ismg_response(frame, seq),
            _ => {
                let s = self.sp_seq();
                self.down.insert(s, Down { ismg_seq: Some(seq), since: Instant::now() });
                pdu::put_renumbered(&mut self.sp.out, frame, s);
            }
        }
    }

    fn on_ismg_response(&mut self, frame: &[u8], seq: u32) {
        let Some(u) = self.up.remove(&seq) else { return };
        pdu::put_renumbered(&mut self.sp.out, frame, u.sp_seq);
        if u.command_id == cmd::SUBMIT && self.audit.has_pending() {
            if let Ok(r) = cpeek::submit_resp(frame, self.version) {
                // The ISMG's Msg_Id in decimal, without an allocation per response.
                let mut buf = [0u8; 20];
                self.audit.complete(seq, r.result, crate::policy::dlt::decimal_str(r.msg_id, &mut buf).as_bytes());
            }
        }
        if u.refused.is_empty() {
            return;
        }
        // A group SUBMIT with refused destinations: each refused one reported under the
        // Msg_Id the SP just got.
        let Ok(resp) = cpeek::submit_resp(frame, self.version) else { return };
        if resp.result != result::OK {
            return;
        }
        let stamp = report_time(self.ctx.clock.now().unix_ms);
        for (dest, reason) in u.refused {
            let stat = self.engine.config().cmpp_stat[reason as usize];
            let r = Report {
                msg_id: resp.msg_id,
                stat: &stat,
                submit_time: stamp.as_bytes(),
                done_time: stamp.as_bytes(),
                dest_terminal_id: &dest,
                smsc_sequence: 0,
            };
            let s = self.sp_seq();
            let deliver_id = self.own_msg_id();
            pdu::put_report(&mut self.sp.out, self.version, s, deliver_id, &[], &[], &r);
            self.down.insert(s, Down { ismg_seq: None, since: Instant::now() });
        }
    }

    fn on_deliver(&mut self, frame: &[u8], seq: u32) {
        let sp_seq = self.sp_seq();
        let mut ticket = None;
        match cpeek::deliver(frame, self.version) {
            Ok(d) if !d.is_report() => {
                let whole = ctext::concat(d.tp_udhi, d.msg_content).is_none_or(|c| c.total <= 1);
                if whole {
                    let source = Addr { ton: 0, npi: 0, addr: d.src_terminal_id };
                    let (coding, ud) = (ctext::coding(d.msg_fmt), ctext::user_data(d.tp_udhi, d.msg_content));
                    let now = self.ctx.clock.now();
                    let captured =
                        self.optout.capture_text(&source, coding, ud, &self.engine, &self.entity, now, self.peer);
                    ticket = captured.map(|(intent, t)| {
                        self.stats.mo_statement(intent);
                        t
                    });
                }
            }
            Ok(_) => {}
            Err(_) => self.stats.error(ErrorKind::EsmeMalformed),
        }
        if let Some(t) = ticket {
            self.optout.relayed(sp_seq, t);
        }
        self.down.insert(sp_seq, Down { ismg_seq: Some(seq), since: Instant::now() });
        pdu::put_renumbered(&mut self.sp.out, frame, sp_seq);
    }

    fn release_held(&mut self) {
        let limit = self.cfg.response_timeout.as_millis() as u64;
        let given_up = self.optout.release_bytes(self.mono_ms(), limit, &mut self.ismg.out, self.peer);
        for _ in 0..given_up {
            self.stats.error(ErrorKind::OptoutNotDurable);
        }
    }

    fn on_tick(&mut self) {
        self.release_held();
        self.policy.tick(self.ctx.clock.now());
        self.release_holds(false);
        let now = Instant::now();
        let t = self.cfg.response_timeout;
        // Requests the other side left unanswered for T.
        let late: Vec<u32> = self.up.iter().filter(|(_, u)| now.duration_since(u.since) > t).map(|(s, _)| *s).collect();
        for s in late {
            if let Some(u) = self.up.remove(&s) {
                self.stats.error(ErrorKind::SmscTimeout);
                if u.command_id == cmd::SUBMIT {
                    self.audit.local_answer(s, result::FLOW_CONTROL);
                    let id = self.own_msg_id();
                    pdu::put_submit_resp(&mut self.sp.out, self.version, u.sp_seq, id, result::FLOW_CONTROL);
                }
            }
        }
        let late: Vec<u32> =
            self.down.iter().filter(|(_, d)| now.duration_since(d.since) > t).map(|(s, _)| *s).collect();
        for s in late {
            if let Some(Down { ismg_seq: Some(q), .. }) = self.down.remove(&s) {
                pdu::put_deliver_resp(&mut self.ismg.out, self.version, q, 0, DELIVER_RETRY_RESULT);
            }
        }
        self.optout.prune(self.down.is_empty());
        // Link checks: ACTIVE_TEST on an idle leg; N unanswered end the session.
        let (c, n) = (self.cfg.active_test_interval, self.cfg.active_test_retries);
        for side in [true, false] {
            let leg = if side { &mut self.sp } else { &mut self.ismg };
            if leg.tests_out >= n && now.duration_since(leg.last_test) > c.min(t) {
                let why = if side { "sp stopped answering ACTIVE_TEST" } else { "ismg stopped answering ACTIVE_TEST" };
                return self.terminate_both(why);
            }
            if now.duration_since(leg.last_rx) > c && now.duration_since(leg.last_test) > c.min(t) {
                leg.tests_out += 1;
                leg.last_test = now;
                let s = if side { self.sp_seq() } else { self.ismg_seq() };
                let leg = if side { &mut self.sp } else { &mut self.ismg };
                pdu::put_active_test(&mut leg.out, s);
            }
        }
    }
}

/// Hands bytes seen on `flow` to the session's recorder, if `[capture]` records it.
fn record(cap: &mut Option<SessionCapture>, flow: Flow, bytes: &[u8]) {
    if let Some(c) = cap {
        c.record(flow, bytes, now_us());
    }
}

/// Destination `i` of a SUBMIT as the pipeline reads it.
fn message<'a>(s: &cpeek::Submit<'a>, i: usize) -> Option<Message<'a>> {
    Some(Message {
        source: Addr { ton: 0, npi: 0, addr: s.src_id },
        destination: Addr { ton: 0, npi: 0, addr: s.destination(i)? },
        service: s.service_id,
        coding: ctext::coding(s.msg_fmt),
        user_data: ctext::user_data(s.tp_udhi, s.msg_content),
        // CMPP carries no TLVs: a DLT account's PE id is its `pe_id`.
        tlvs: &[],
        text: None,
    })
}

/// The reason of a refusal (monitor mode's would-reject forwards).
fn refusal(d: &Decision) -> Option<Reason> {
    match d.verdict {
        Verdict::Reject(r) => Some(r),
        _ => None,
    }
}

/// YYMMDDHHMM (UTC) for a report's Submit_time and Done_time.
fn report_time(unix_ms: i64) -> String {
    let t = jiff::Timestamp::from_millisecond(unix_ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let d = t.to_zoned(jiff::tz::TimeZone::UTC);
    format!("{:02}{:02}{:02}{:02}{:02}", d.year() % 100, d.month(), d.day(), d.hour(), d.minute())
}
