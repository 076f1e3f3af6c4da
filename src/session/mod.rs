//! One task per ESME connection (DESIGN §1, §6): bind admission, the paired upstream bind,
//! then the relay loop that serves *both* legs from one task.
//!
//! ```text
//!   ESME ──► down leg ──► [frame → check → window → seq remap] ──► up leg ──► SMSC
//!   ESME ◄── down leg ◄── [seq remap back / local answers]     ◄── up leg ◄── SMSC
//! ```
//!
//! Serving both legs from one task means the sequence tables need no lock and no cross-task
//! wake-up sits on the hot path: a read batch is framed, every PDU handled in place, and the
//! output for each leg leaves in one `try_write`. Reads stop on a leg whose opposite output
//! queue is over [`OUT_HIGH_WATER`], which turns a slow peer into TCP back-pressure.
//!
//! Invariant: every request consentgate accepted from either peer is answered exactly once —
//! by the other peer's response, or locally (window full, malformed, timeout, the other leg
//! gone, drain at shutdown).

mod bind;
mod metrics;
mod policy;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Buf;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, info};

use crate::config::{Account, Config};
use crate::consent::snapshot::EntityId;
use crate::consent::store::ConsentStore;
use crate::optout::{Keywords, Scratch};
use crate::policy::Verdict;
use crate::relay::seq::{Origin, Pending, SeqTable};
use crate::relay::{Leg, OUT_HIGH_WATER};
use crate::smpp::frame::Next;
use crate::smpp::pdu::{put_header_only, put_local_error_resp};
use crate::smpp::{self, cmd, peek, status, BindType, Header};

/// ESME_RX_T_APPN: the answer consentgate gives the SMSC for a deliver_sm it could not hand
/// to the ESME (temporary: the SMSC retries later).
pub const RX_T_APPN: u32 = 0x0000_0064;

/// How often timers (response timeouts, keep-alives, drain progress) are checked.
const TICK: Duration = Duration::from_millis(100);

/// Longest wait for the final unbind_resp(s) when a session closes.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// What every session shares: the config, the consent store and the opt-out keywords.
pub struct Shared {
    pub config: Arc<Config>,
    pub store: Arc<ConsentStore>,
    pub keywords: Arc<Keywords>,
    /// `[capture]` recording, when enabled.
    pub capture: Option<Arc<crate::capture::Capture>>,
    /// The decision audit log (`Audit::disabled()` when off).
    pub audit: crate::audit::Audit,
    /// Numbers sessions for the audit log.
    pub next_session: std::sync::atomic::AtomicU64,
}

impl Shared {
    pub fn new(config: Arc<Config>, store: Arc<ConsentStore>) -> Shared {
        let keywords = Arc::new(Keywords::new(&config.policy.optout_keywords));
        Shared {
            config,
            store,
            keywords,
            capture: None,
            audit: crate::audit::Audit::disabled(),
            next_session: std::sync::atomic::AtomicU64::new(1),
        }
    }
}

pub use metrics::{ErrorKind, SessionStats};

/// Hands `bytes` seen on `flow` to the session's recorder, if `[capture]` records it.
#[inline]
fn capture(cap: &mut Option<crate::capture::SessionCapture>, flow: crate::capture::Flow, bytes: &[u8], ts_us: u64) {
    if let Some(c) = cap {
        c.record(flow, bytes, ts_us);
    }
}

/// Serves one ESME connection until it ends. Never panics on peer input.
pub async fn serve(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>, shutdown: watch::Receiver<bool>) {
    let _ = stream.set_nodelay(true);
    let mut shutdown = shutdown;
    let bound = match bind::accept_bind(stream, peer, &shared.config, &mut shutdown).await {
        Some(b) => b,
        None => return,
    };
    let mut s = Session::new(bound, &shared);
    info!(peer = %peer, system_id = %s.account.system_id, bind = s.bind_type.as_str(), "session bound");
    s.run(&mut shutdown).await;
    info!(peer = %peer, system_id = %s.account.system_id, reason = s.close_reason, "session closed");
}

/// Where the session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Bound,
    /// The ESME sent unbind; it was relayed to the SMSC.
    EsmeUnbinding,
    /// The SMSC sent unbind; it was relayed to the ESME.
    SmscUnbinding,
    /// Shutdown: no new requests, waiting for in-flight ones until the deadline.
    Draining {
        deadline_ms: u64,
    },
    /// consentgate sent its own unbind(s); waiting for the answers until the deadline.
    Closing {
        deadline_ms: u64,
    },
    Done,
}

struct Session {
    config: Arc<Config>,
    store: Arc<ConsentStore>,
    keywords: Arc<Keywords>,
    scratch: Scratch,
    /// The account's entity in the live delta (interned once).
    live_entity: u32,
    /// The account's entity in the current snapshot, for generation `snap_gen`.
    snap_entity: Option<EntityId>,
    snap_gen: u64,
    /// Today (UTC days since 1970), refreshed per event: a licence can expire mid-session.
    today: i64,
    concat: policy::ConcatCache,
    /// Rejected destinations of forwarded submit_multi, by upstream sequence number.
    multi_rejects: std::collections::HashMap<u32, (u8, Vec<u8>)>,
    /// Journal tickets of MO opt-outs relayed to the ESME, by ESME-leg sequence number.
    mo_tickets: std::collections::HashMap<u32, u64>,
    /// deliver_sm_resp waiting for their opt-out to be durable.
    held: std::collections::VecDeque<policy::Held>,
    durable: watch::Receiver<u64>,
    pub stats: SessionStats,
    metrics: metrics::SessionMetrics,
    /// `[capture]`: this session's recorder (None when off or the account is not recorded),
    /// and the Unix time (µs) of the session clock's zero.
    capture: Option<crate::capture::SessionCapture>,
    capture_base_us: u64,
    /// Decision audit records of this session, handed to the writer once per event-loop turn.
    audit: crate::audit::AuditBatch,
    audit_account: crate::audit::AccountId,
    session_id: u64,
    /// The serving snapshot as the audit log names it (refreshed with `snap_gen`).
    audit_snapshot: crate::audit::SnapshotRef,
    /// Audit records of forwarded messages, completed when the SMSC answers (upstream seq).
    audit_pending: std::collections::HashMap<u32, crate::audit::AuditRecord>,
    /// One sampled upstream request: (upstream sequence number, sent at µs).
    up_sample: Option<(u32, u64)>,
    account: Account,
    bind_type: BindType,
    peer: SocketAddr,
    down: Leg,
    up: Leg,
    /// Requests written to the SMSC (relayed from the ESME, or consentgate's own).
    up_table: SeqTable,
    /// Requests written to the ESME (relayed from the SMSC, or consentgate's own).
    down_table: SeqTable,
    state: State,
    esme_unbound: bool,
    smsc_unbound: bool,
    epoch: Instant,
    /// The session clock, read once per event: µs and ms since the session began.
    now_us: u64,
    now_ms: u64,
    close_reason: &'static str,
    expired: Vec<Pending>,
}

/// Result of the bind phase.
pub(crate) struct Bound {
    pub down: Leg,
    pub up: Leg,
    pub account: Account,
    pub bind_type: BindType,
    pub peer: SocketAddr,
    /// The ESME's bind PDU and the response it got (for the capture).
    pub bind: Vec<u8>,
    pub bind_resp: Vec<u8>,
}

impl Session {
    fn new(b: Bound, shared: &Shared) -> Session {
        let config = shared.config.clone();
        let cap = (config.session.window * 2).max(64);
        let (bind, bind_resp) = (b.bind, b.bind_resp);
        let mut s = Session {
            store: shared.store.clone(),
            keywords: shared.keywords.clone(),
            scratch: Scratch::default(),
            live_entity: shared.store.delta.intern(&b.account.entity),
            snap_entity: None,
            snap_gen: 0,
            today: crate::config::today(),
            concat: Default::default(),
            multi_rejects: Default::default(),
            mo_tickets: Default::default(),
            held: Default::default(),
            durable: shared.store.durable(),
            stats: SessionStats::default(),
            metrics: metrics::SessionMetrics::new(&b.account.system_id),
            capture: shared.capture.as_ref().and_then(|c| c.session(&b.account.system_id)),
            capture_base_us: crate::capture::now_us(),
            audit: shared.audit.sink(),
            audit_account: shared.audit.account(&b.account.system_id, &b.account.entity),
            session_id: shared.next_session.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            audit_snapshot: crate::audit::SnapshotRef { id: 0, generation: 0, built_at: 0 },
            audit_pending: Default::default(),
            up_sample: None,
            up_table: SeqTable::new(cap),
            down_table: SeqTable::new(cap),
            config,
            account: b.account,
            bind_type: b.bind_type,
            peer: b.peer,
            down: b.down,
            up: b.up,
            state: State::Bound,
            esme_unbound: false,
            smsc_unbound: false,
            epoch: Instant::now(),
            now_us: 0,
            now_ms: 0,
            close_reason: "",
            expired: Vec::new(),
        };
        if let Some(c) = s.capture.as_mut() {
            use crate::capture::Flow;
            let t = s.capture_base_us;
            c.record(Flow::EsmeToGateway, &bind, t);
            c.record(Flow::GatewayToSmsc, &bind, t);
            c.record(Flow::SmscToGateway, &bind_resp, t);
            c.record(Flow::GatewayToEsme, &bind_resp, t);
        }
        s
    }

    fn clock(&mut self) {
        self.now_us = self.epoch.elapsed().as_micros() as u64;
        self.now_ms = self.now_us / 1000;
        self.today = crate::config::today();
    }

    async fn run(&mut self, shutdown: &mut watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // Bytes that arrived with the bind responses.
        self.clock();
        self.process_up();
        self.process_down();
        self.flush();
        let mut shutdown_seen = *shutdown.borrow();
        if shutdown_seen {
            self.begin_drain();
        }
        while self.state != State::Done {
            enum Ev {
                Down(std::io::Result<()>),
                Up(std::io::Result<()>),
                Writable,
                Durable,
                Tick,
                Shutdown,
            }
            let read_down = self.down.open && self.up.out.len() < OUT_HIGH_WATER;
            let read_up = self.up.open && self.down.out.len() < OUT_HIGH_WATER;
            let write_down = self.down.open && !self.down.out.is_empty();
            let write_up = self.up.open && !self.up.out.is_empty();
            let ev = tokio::select! {
                r = self.down.stream.readable(), if read_down => Ev::Down(r),
                r = self.up.stream.readable(), if read_up => Ev::Up(r),
                _ = self.down.stream.writable(), if write_down => Ev::Writable,
                _ = self.up.stream.writable(), if write_up => Ev::Writable,
                _ = self.durable.changed(), if !self.held.is_empty() => Ev::Durable,
                _ = tick.tick() => Ev::Tick,
                _ = shutdown.changed(), if !shutdown_seen => Ev::Shutdown,
            };
            self.clock();
            match ev {
                Ev::Down(r) => {
                    if r.is_ok() {
                        self.read_down();
                    }
                }
                Ev::Up(r) => {
                    if r.is_ok() {
                        self.read_up();
                    }
                }
                Ev::Writable => {}
                Ev::Durable => self.release_held(),
                Ev::Tick => self.on_tick(),
                Ev::Shutdown => {
                    shutdown_seen = true;
                    self.begin_drain();
                }
            }
            self.flush();
            self.progress();
            self.audit.flush();
        }
        self.teardown().await;
        self.audit_abandon_pending();
        self.audit.flush();
        self.metrics.flush(&self.stats, 0, false, false);
    }

    // ----- reading -----------------------------------------------------------------------

    fn read_down(&mut self) {
        match self.down.try_fill() {
            Ok(0) => self.esme_gone("esme closed the connection"),
            Ok(n) => {
                let (b, t) = (&self.down.rbuf, self.capture_base_us + self.now_us);
                capture(&mut self.capture, crate::capture::Flow::EsmeToGateway, &b[b.len() - n..], t);
                self.down.last_rx_ms = self.now_ms;
                self.process_down();
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => self.esme_gone("esme connection error"),
        }
    }

    fn read_up(&mut self) {
        match self.up.try_fill() {
            Ok(0) => self.smsc_gone("smsc closed the connection"),
            Ok(n) => {
                let (b, t) = (&self.up.rbuf, self.capture_base_us + self.now_us);
                capture(&mut self.capture, crate::capture::Flow::SmscToGateway, &b[b.len() - n..], t);
                self.up.last_rx_ms = self.now_ms;
                self.process_up();
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => self.smsc_gone("smsc connection error"),
        }
    }

    fn process_down(&mut self) {
        let mut rbuf = std::mem::take(&mut self.down.rbuf);
        self.prefetch_batch(&rbuf);
        let mut pos = 0;
        while self.down.open {
            match self.down.framer.next(&rbuf[pos..]) {
                Next::Frame(len) => {
                    self.on_esme_pdu(&rbuf[pos..pos + len]);
                    pos += len;
                }
                Next::Skip(n) => pos += n,
                Next::TooLong { sequence, .. } => {
                    self.stats.error(ErrorKind::EsmeOversized);
                    put_header_only(&mut self.down.out, cmd::GENERIC_NACK, status::ESME_RINVCMDLEN, sequence);
                }
                Next::TooShort { .. } => {
                    put_header_only(&mut self.down.out, cmd::GENERIC_NACK, status::ESME_RINVCMDLEN, 0);
                    pos = rbuf.len();
                    self.esme_gone("esme sent command_length < 16");
                }
                Next::Incomplete => break,
            }
        }
        rbuf.advance(pos.min(rbuf.len()));
        self.down.rbuf = rbuf;
    }

    fn process_up(&mut self) {
        let mut rbuf = std::mem::take(&mut self.up.rbuf);
        let mut pos = 0;
        while self.up.open {
            match self.up.framer.next(&rbuf[pos..]) {
                Next::Frame(len) => {
                    self.on_smsc_pdu(&rbuf[pos..pos + len]);
                    pos += len;
                }
                Next::Skip(n) => pos += n,
                Next::TooLong { sequence, .. } => {
                    self.stats.error(ErrorKind::SmscOversized);
                    put_header_only(&mut self.up.out, cmd::GENERIC_NACK, status::ESME_RINVCMDLEN, sequence);
                }
                Next::TooShort { .. } => {
                    pos = rbuf.len();
                    self.smsc_gone("smsc sent command_length < 16");
                }
                Next::Incomplete => break,
            }
        }
        rbuf.advance(pos.min(rbuf.len()));
        self.up.rbuf = rbuf;
    }

    // ----- ESME → SMSC ---------------------------------------------------------------------

    fn on_esme_pdu(&mut self, frame: &[u8]) {
        let h = Header::read(frame);
        self.stats.pdu(false, h.command_id);
        if h.is_response() {
            self.on_esme_response(frame, h);
            return;
        }
        let seq = h.sequence_number;
        match h.command_id {
            cmd::SUBMIT_SM | cmd::DATA_SM | cmd::SUBMIT_MULTI => {}
            cmd::QUERY_SM | cmd::CANCEL_SM | cmd::REPLACE_SM | 0x111..=0x113 => {}
            cmd::ENQUIRE_LINK => {
                return put_header_only(&mut self.down.out, cmd::ENQUIRE_LINK_RESP, status::ESME_ROK, seq);
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
                return put_header_only(&mut self.down.out, cmd::GENERIC_NACK, status::ESME_RINVCMDID, seq);
            }
        }
        // A message or message-management request: relay it if the session can.
        let refuse = match self.state {
            State::Bound if !self.bind_type.can_submit() => Some(status::ESME_RINVBNDSTS),
            State::Bound if !self.up.open => Some(status::ESME_RSYSERR),
            State::Bound if self.up_table.relayed() >= self.config.session.window => Some(status::ESME_RTHROTTLED),
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
                let verdict = self.verdict_for(&v);
                if let Verdict::Reject(r) = verdict {
                    let st = r.status(&self.config.policy);
                    if self.audit.wants(verdict) {
                        self.audit_record(&policy::submit_of(&v), seq, verdict, Some(st), None);
                    }
                    return self.answer_esme(h.command_id, st, seq);
                }
                let up_seq = self.relay_up(frame, seq, h.command_id);
                if self.audit.wants(verdict) {
                    match up_seq {
                        Some(up) => self.audit_record(&policy::submit_of(&v), seq, verdict, None, Some(up)),
                        None => {
                            self.audit_record(&policy::submit_of(&v), seq, verdict, Some(status::ESME_RTHROTTLED), None)
                        }
                    }
                }
            }
            cmd::SUBMIT_MULTI => self.on_submit_multi(frame, seq),
            _ => {
                self.relay_up(frame, seq, h.command_id);
            }
        }
    }

    /// Forwards an ESME request upstream under a fresh upstream sequence number, registered
    /// before the bytes are queued.
    #[inline]
    fn relay_up(&mut self, frame: &[u8], esme_seq: u32, command_id: u32) -> Option<u32> {
        match self.up_table.insert(esme_seq, command_id, Origin::Relayed, self.now_ms) {
            Some(up_seq) => {
                let at = self.up.out.len();
                self.up.out.extend_from_slice(frame);
                smpp::set_sequence(&mut self.up.out[at..], up_seq);
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
        match self.state {
            State::Bound if self.up.open => {
                self.state = State::EsmeUnbinding;
                let _ = self.relay_up(frame, seq, cmd::UNBIND);
            }
            _ => {
                // Crossing unbinds, or nothing left upstream: answer here.
                put_header_only(&mut self.down.out, cmd::UNBIND_RESP, status::ESME_ROK, seq);
                self.esme_unbound = true;
                if matches!(self.state, State::Bound | State::Draining { .. }) {
                    self.answer_all_up(status::ESME_RSYSERR);
                    self.start_closing("esme unbound");
                }
            }
        }
    }

    fn on_esme_response(&mut self, frame: &[u8], h: Header) {
        let Some(p) = self.down_table.take(h.sequence_number) else {
            return debug!(peer = %self.peer, seq = h.sequence_number, "response to unknown sequence from esme dropped");
        };
        match p.origin {
            Origin::Relayed => {
                let is_unbind_resp = p.command_id == cmd::UNBIND;
                if is_unbind_resp {
                    // SMSC-initiated unbind completes: answer what is still pending first.
                    self.answer_all_up(status::ESME_RSYSERR);
                }
                let ticket = if self.mo_tickets.is_empty() { None } else { self.mo_tickets.remove(&p.seq) };
                if let Some(ticket) = ticket {
                    if ticket > *self.durable.borrow() {
                        // The opt-out this MO carried is not on disk yet: the SMSC gets the
                        // ESME's answer only once it is.
                        self.held.push_back(policy::Held {
                            ticket,
                            smsc_seq: p.peer_seq,
                            frame: frame.to_vec(),
                            since_ms: self.now_ms,
                        });
                        return;
                    }
                }
                if self.up.open {
                    let at = self.up.out.len();
                    self.up.out.extend_from_slice(frame);
                    smpp::set_sequence(&mut self.up.out[at..], p.peer_seq);
                }
                if is_unbind_resp {
                    self.esme_unbound = true;
                    self.smsc_unbound = true;
                    self.finish("smsc unbound");
                }
            }
            Origin::Local => {
                if p.command_id == cmd::UNBIND {
                    self.esme_unbound = true;
                }
            }
        }
    }

    /// Answers an ESME request locally.
    #[inline]
    fn answer_esme(&mut self, command_id: u32, st: u32, seq: u32) {
        put_local_error_resp(&mut self.down.out, command_id, st, seq);
    }

    // ----- SMSC → ESME ---------------------------------------------------------------------

    fn on_smsc_pdu(&mut self, frame: &[u8]) {
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
                } else if !self.down.open || !matches!(self.state, State::Bound | State::Draining { .. }) {
                    Some(RX_T_APPN)
                } else {
                    None
                };
                if let Some(st) = refuse {
                    return put_local_error_resp(&mut self.up.out, h.command_id, st, seq);
                }
                let ticket = self.capture_optout(frame);
                if let (Some(down_seq), Some(t)) = (self.relay_down(frame, seq, h.command_id), ticket) {
                    if t > 0 {
                        self.mo_tickets.insert(down_seq, t);
                    }
                }
            }
            cmd::ALERT_NOTIFICATION => {
                if self.down.open && self.bind_type.can_receive() {
                    self.down.out.extend_from_slice(frame);
                }
            }
            cmd::ENQUIRE_LINK => put_header_only(&mut self.up.out, cmd::ENQUIRE_LINK_RESP, status::ESME_ROK, seq),
            cmd::UNBIND => match self.state {
                State::Bound if self.down.open => {
                    self.state = State::SmscUnbinding;
                    let _ = self.relay_down(frame, seq, cmd::UNBIND);
                }
                _ => {
                    put_header_only(&mut self.up.out, cmd::UNBIND_RESP, status::ESME_ROK, seq);
                    self.smsc_unbound = true;
                    if matches!(self.state, State::Bound | State::Draining { .. }) {
                        self.answer_all_up(status::ESME_RSYSERR);
                        self.start_closing("smsc unbound");
                    }
                }
            },
            id if smpp::is_known_command(id) => {
                put_local_error_resp(&mut self.up.out, id, status::ESME_RINVBNDSTS, seq);
            }
            _ => put_header_only(&mut self.up.out, cmd::GENERIC_NACK, status::ESME_RINVCMDID, seq),
        }
    }

    fn relay_down(&mut self, frame: &[u8], smsc_seq: u32, command_id: u32) -> Option<u32> {
        match self.down_table.insert(smsc_seq, command_id, Origin::Relayed, self.now_ms) {
            Some(down_seq) => {
                let at = self.down.out.len();
                self.down.out.extend_from_slice(frame);
                smpp::set_sequence(&mut self.down.out[at..], down_seq);
                Some(down_seq)
            }
            None => {
                put_local_error_resp(&mut self.up.out, command_id, RX_T_APPN, smsc_seq);
                None
            }
        }
    }

    fn on_smsc_response(&mut self, frame: &[u8], h: Header) {
        let Some(p) = self.up_table.take(h.sequence_number) else {
            return debug!(peer = %self.peer, seq = h.sequence_number, "late or unknown response from smsc dropped");
        };
        if !self.audit_pending.is_empty() {
            if let Some(mut rec) = self.audit_pending.remove(&h.sequence_number) {
                rec.status = Some(h.command_status);
                rec.upstream_status = Some(h.command_status);
                rec.message_id = crate::audit::MessageId::new(peek::resp_message_id(frame));
                self.audit.push(rec);
            }
        }
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
                    self.answer_all_up(status::ESME_RSYSERR);
                    self.answer_all_down(RX_T_APPN);
                }
                if self.down.open {
                    let merged = p.command_id == cmd::SUBMIT_MULTI
                        && !self.multi_rejects.is_empty()
                        && self.merge_multi_resp(frame, p.seq, p.peer_seq);
                    if !merged {
                        let at = self.down.out.len();
                        self.down.out.extend_from_slice(frame);
                        smpp::set_sequence(&mut self.down.out[at..], p.peer_seq);
                    }
                }
                if is_unbind_resp {
                    self.esme_unbound = true;
                    self.smsc_unbound = true;
                    self.finish("esme unbound");
                }
            }
            Origin::Local => {
                if p.command_id == cmd::UNBIND {
                    self.smsc_unbound = true;
                }
            }
        }
    }

    // ----- timers, drain, close ----------------------------------------------------------

    fn on_tick(&mut self) {
        let now = self.now_ms;
        let up_to = self.config.upstream.response_timeout.as_millis() as u64;
        let down_to = self.config.session.response_timeout.as_millis() as u64;
        let mut expired = std::mem::take(&mut self.expired);
        self.up_table.expire(now.saturating_sub(up_to), &mut expired);
        for p in expired.drain(..) {
            match (p.origin, p.command_id) {
                (Origin::Relayed, cmd::UNBIND) => {
                    put_header_only(&mut self.down.out, cmd::UNBIND_RESP, status::ESME_ROK, p.peer_seq);
                    self.esme_unbound = true;
                    self.finish("smsc did not answer unbind");
                }
                (Origin::Relayed, id) => {
                    self.stats.error(ErrorKind::SmscTimeout);
                    let st = self.config.upstream.response_timeout_status;
                    self.audit_local_answer(p.seq, st);
                    put_local_error_resp(&mut self.down.out, id, st, p.peer_seq);
                }
                (Origin::Local, cmd::ENQUIRE_LINK) => self.smsc_gone("smsc stopped answering enquire_link"),
                (Origin::Local, _) => self.smsc_unbound = true,
            }
        }
        self.down_table.expire(now.saturating_sub(down_to), &mut expired);
        for p in expired.drain(..) {
            match (p.origin, p.command_id) {
                (Origin::Relayed, cmd::UNBIND) => {
                    put_header_only(&mut self.up.out, cmd::UNBIND_RESP, status::ESME_ROK, p.peer_seq);
                    self.smsc_unbound = true;
                    self.finish("esme did not answer unbind");
                }
                (Origin::Relayed, id) => put_local_error_resp(&mut self.up.out, id, RX_T_APPN, p.peer_seq),
                (Origin::Local, cmd::ENQUIRE_LINK) => self.esme_gone("esme stopped answering enquire_link"),
                (Origin::Local, _) => self.esme_unbound = true,
            }
        }
        self.expired = expired;
        if self.up_sample.is_some_and(|(_, at)| self.now_us.saturating_sub(at) / 1000 > up_to) {
            self.up_sample = None;
        }
        self.metrics.flush(&self.stats, self.up_table.relayed(), self.down.open, self.up.open);
        self.concat.prune(now);
        if !self.multi_rejects.is_empty() && self.up_table.is_empty() {
            self.multi_rejects.clear();
        }
        if !self.mo_tickets.is_empty() && self.down_table.is_empty() {
            self.mo_tickets.clear();
        }
        self.release_held();
        if self.state == State::Bound {
            let up_idle = self.config.upstream.enquire_link_interval.as_millis() as u64;
            if self.up.open
                && now.saturating_sub(self.up.last_rx_ms) >= up_idle
                && !self.up_table.has_local(cmd::ENQUIRE_LINK)
            {
                self.send_local_up(cmd::ENQUIRE_LINK);
                self.up.last_rx_ms = now; // next probe one interval later
            }
            let down_idle = self.config.session.enquire_link_interval.as_millis() as u64;
            if self.down.open
                && now.saturating_sub(self.down.last_rx_ms) >= down_idle
                && !self.down_table.has_local(cmd::ENQUIRE_LINK)
            {
                self.send_local_down(cmd::ENQUIRE_LINK);
                self.down.last_rx_ms = now;
            }
        }
    }

    fn send_local_up(&mut self, command_id: u32) {
        if let Some(seq) = self.up_table.insert(0, command_id, Origin::Local, self.now_ms) {
            put_header_only(&mut self.up.out, command_id, status::ESME_ROK, seq);
        }
    }

    fn send_local_down(&mut self, command_id: u32) {
        if let Some(seq) = self.down_table.insert(0, command_id, Origin::Local, self.now_ms) {
            put_header_only(&mut self.down.out, command_id, status::ESME_ROK, seq);
        }
    }

    /// Shutdown: stop taking new requests and let in-flight ones finish within the grace.
    fn begin_drain(&mut self) {
        if self.state == State::Bound {
            let grace = self.config.session.shutdown_grace.as_millis() as u64;
            self.state = State::Draining { deadline_ms: self.now_ms + grace };
            debug!(peer = %self.peer, "session draining");
        }
    }

    /// Moves the state machine on after every event.
    fn progress(&mut self) {
        match self.state {
            State::Draining { deadline_ms }
                if self.up_table.relayed() == 0 || self.now_ms >= deadline_ms || !self.up.open =>
            {
                if self.up_table.relayed() > 0 {
                    tracing::warn!(peer = %self.peer, pending = self.up_table.relayed(), "drain grace expired; answering in-flight requests with ESME_RSYSERR");
                }
                self.answer_all_up(status::ESME_RSYSERR);
                self.start_closing("shutdown");
            }
            State::Closing { deadline_ms }
                if ((self.esme_unbound || !self.down.open) && (self.smsc_unbound || !self.up.open))
                    || self.now_ms >= deadline_ms =>
            {
                self.finish(self.close_reason);
            }
            _ => {}
        }
    }

    /// Sends consentgate's own unbind on every open leg not yet unbound and waits (bounded)
    /// for the answers.
    fn start_closing(&mut self, reason: &'static str) {
        if matches!(self.state, State::Closing { .. } | State::Done) {
            return;
        }
        self.close_reason = reason;
        if self.down.open && !self.esme_unbound {
            self.send_local_down(cmd::UNBIND);
        }
        if self.up.open && !self.smsc_unbound {
            self.send_local_up(cmd::UNBIND);
        }
        let wait = CLOSE_WAIT.min(self.config.session.response_timeout).as_millis() as u64;
        self.state = State::Closing { deadline_ms: self.now_ms + wait };
    }

    fn finish(&mut self, reason: &'static str) {
        if self.state == State::Done {
            return;
        }
        if self.close_reason.is_empty() {
            self.close_reason = reason;
        }
        self.answer_all_up(status::ESME_RSYSERR);
        self.answer_all_down(RX_T_APPN);
        self.release_held();
        for h in self.held.drain(..) {
            if self.up.open {
                put_local_error_resp(&mut self.up.out, cmd::DELIVER_SM, RX_T_APPN, h.smsc_seq);
            }
        }
        self.state = State::Done;
    }

    /// Answers every relayed request pending upstream with `st` (to the ESME, if reachable).
    fn answer_all_up(&mut self, st: u32) {
        let mut v = std::mem::take(&mut self.expired);
        self.up_table.drain(&mut v);
        for p in v.drain(..) {
            if p.origin == Origin::Relayed && self.down.open {
                if p.command_id == cmd::UNBIND {
                    put_header_only(&mut self.down.out, cmd::UNBIND_RESP, status::ESME_ROK, p.peer_seq);
                } else {
                    put_local_error_resp(&mut self.down.out, p.command_id, st, p.peer_seq);
                }
            }
            if p.origin == Origin::Relayed && !self.audit_pending.is_empty() {
                self.audit_local_answer(p.seq, st);
            }
        }
        self.expired = v;
    }

    /// Answers every relayed request pending at the ESME with `st` (to the SMSC, if reachable).
    fn answer_all_down(&mut self, st: u32) {
        let mut v = std::mem::take(&mut self.expired);
        self.down_table.drain(&mut v);
        for p in v.drain(..) {
            if p.origin == Origin::Relayed && self.up.open {
                if p.command_id == cmd::UNBIND {
                    put_header_only(&mut self.up.out, cmd::UNBIND_RESP, status::ESME_ROK, p.peer_seq);
                } else {
                    put_local_error_resp(&mut self.up.out, p.command_id, st, p.peer_seq);
                }
            }
        }
        self.expired = v;
    }

    /// The ESME leg is gone: late upstream answers will be dropped, the SMSC gets a temporary
    /// error for whatever it was waiting on, and the upstream leg is unbound.
    fn esme_gone(&mut self, why: &'static str) {
        if !self.down.open {
            return;
        }
        self.down.open = false;
        self.down.out.clear();
        debug!(peer = %self.peer, why, "esme leg closed");
        self.answer_all_down(RX_T_APPN);
        let mut v = std::mem::take(&mut self.expired);
        self.up_table.drain(&mut v);
        v.clear();
        self.expired = v;
        if self.state != State::Done {
            self.state = State::Bound; // allow start_closing from any prior state
            self.start_closing(why);
        }
    }

    /// The SMSC leg is gone: every in-flight ESME request is answered at once and the ESME is
    /// unbound.
    fn smsc_gone(&mut self, why: &'static str) {
        if !self.up.open {
            return;
        }
        self.up.open = false;
        self.up.out.clear();
        debug!(peer = %self.peer, why, "smsc leg closed");
        if matches!(self.state, State::Bound | State::Draining { .. }) {
            self.stats.error(ErrorKind::SmscLost);
        }
        self.answer_all_up(status::ESME_RSYSERR);
        let mut v = std::mem::take(&mut self.expired);
        self.down_table.drain(&mut v);
        v.clear();
        self.expired = v;
        if self.state != State::Done {
            self.state = State::Bound;
            self.start_closing(why);
        }
    }

    /// Writes what is queued on each leg; with `[capture]`, records what the socket took.
    fn flush(&mut self) {
        use crate::capture::Flow;
        let t = self.capture_base_us + self.now_us;
        if self.down.open
            && !self.down.out.is_empty()
            && self.down.try_flush_observed(|b| capture(&mut self.capture, Flow::GatewayToEsme, b, t)).is_err()
        {
            self.esme_gone("esme write failed");
        }
        if self.up.open
            && !self.up.out.is_empty()
            && self.up.try_flush_observed(|b| capture(&mut self.capture, Flow::GatewayToSmsc, b, t)).is_err()
        {
            self.smsc_gone("smsc write failed");
        }
    }

    async fn teardown(&mut self) {
        let limit = Duration::from_secs(1);
        let _ = self.down.flush_all(limit).await;
        let _ = self.up.flush_all(limit).await;
        let _ = tokio::time::timeout(limit, self.down.stream.shutdown()).await;
        let _ = tokio::time::timeout(limit, self.up.stream.shutdown()).await;
    }
}
