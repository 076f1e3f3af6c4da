//! ISMG simulator: the carrier's CMPP 2.0/3.0 gateway as an SP sees it, for the tests, the
//! demo and the benchmarks of the CMPP front (the CMPP counterpart of the SMSC simulator in
//! [`super`]). [`start`] binds a listener and returns a [`CmppSimHandle`]; it runs on the
//! caller's tokio runtime (a current-thread `#[tokio::test]` is enough).
//!
//! ```text
//!  SP (test / consentgate) ──CMPP──► cmpp-sim
//!      CONNECT            ──►  CONNECT_RESP   (version from the Version byte, MD5 auth)
//!      SUBMIT             ──►  SUBMIT_RESP    (fresh Msg_Id; a group stands for Msg_Id…+(n−1))
//!                         ◄──  DELIVER report (Registered_Delivery=1: one per destination)
//!                         ◄──  DELIVER MO     (CmppSimHandle::send_mo, mo_every)
//!      DELIVER_RESP       ──►  (counted; answers send_mo)
//!      ACTIVE_TEST / TERMINATE ──► _RESP (TERMINATE then closes)
//! ```
//!
//! What it does, per connection (one task each, any number of SPs):
//!
//! - **CONNECT** (spec 3.0 §8.4.1): 0x20/0x21 → 2.0, 0x30 → 3.0; any other Version byte gets
//!   CONNECT_RESP Status 4 (above 3.0) or 5 (below: the spec has no "too low"), as
//!   [`PeekError::connect_status`](peek::PeekError::connect_status) maps it for consentgate's own front, then the link closes.
//!   With [`CmppSimConfig::secrets`], the Source_Addr must be known (else Status 2, 非法源地址)
//!   and AuthenticatorSource must equal MD5(Source_Addr + 9×0x00 + secret + Timestamp as
//!   `%010d`) (else Status 3), hashed with the Timestamp the SP sent, so the SP's clock does not
//!   matter. Accepted: Status 0, AuthenticatorISMG = MD5(Status + AuthenticatorSource + secret)
//!   with Status in the version's width (1 byte in 2.0, 4 in 3.0), all zero without a secret,
//!   Version = the byte the SP sent. Anything but CONNECT, ACTIVE_TEST and TERMINATE before a
//!   CONNECT, or no CONNECT within 30 s, closes the link.
//! - **SUBMIT**: every SUBMIT frame is recorded as received ([`CmppSimHandle::submits`], the
//!   last [`CmppSimConfig::record_limit`]); a malformed one is answered with the Result of its
//!   [`PeekError`](peek::PeekError) and Msg_Id 0. Otherwise SUBMIT_RESP Result 0 with a fresh [`MsgId`] (China
//!   Standard Time, [`CmppSimConfig::gateway_id`], a process-wide sequence advanced by
//!   DestUsr_tl so that a group's range never overlaps the next message's). With
//!   Registered_Delivery = 1 (and [`CmppSimConfig::reports`]), after
//!   [`CmppSimConfig::report_delay`], one status report per destination: Stat `DELIVRD`, or the
//!   Stat configured for that destination in [`CmppSimConfig::dest_errors`], report Msg_Id =
//!   the one that destination got ([`MsgId::nth`]), Dest_Id / Service_Id copied from the
//!   SUBMIT's Src_Id / Service_Id.
//! - **DELIVER window**: never more than [`WINDOW`] (16, spec 3.0 §7.1 W) DELIVERs unanswered
//!   per link; the rest wait in a queue (at most [`QUEUE_CAP`], overflow counted in
//!   [`CmppSimStats::delivers_dropped`]). A DELIVER unanswered after
//!   [`CmppSimConfig::deliver_timeout`] leaves the window (counted, not resent).
//! - **MO**: [`CmppSimHandle::send_mo`] sends a DELIVER with Registered_Delivery = 0 on the
//!   first connected link and returns the DELIVER_RESP Result; [`CmppSimHandle::inject_mo`]
//!   fires one round-robin without waiting; [`CmppSimConfig::mo_every`] adds one MO ("TD" from
//!   the first destination to the Src_Id) after every N-th SUBMIT of a link, for benchmarks.
//! - **ACTIVE_TEST** is answered; with [`CmppSimConfig::active_test_every`] the simulator also
//!   sends its own and counts the answers. **TERMINATE** gets TERMINATE_RESP, then the link
//!   closes. QUERY, CANCEL and unknown requests are counted and left unanswered (CMPP has no
//!   generic_nack).
//!
//! What it does not do: no SMPP side (nothing is forwarded anywhere), no billing or fee
//! checks, no Msg_src / Src_Id / Service_Id validation, no QUERY or CANCEL, no resending of
//! unanswered DELIVERs, no flow-control refusals (Result 8) of its own, no long-message
//! reassembly. Loopback or any address the caller binds; nothing else is contacted.
//!
//! A test injects an MO like this (the SP must have CONNECTed first, see
//! [`CmppSimHandle::links`]):
//!
//! ```no_run
//! # async fn f(sim: consentgate::sim::cmpp::CmppSimHandle) {
//! use consentgate::cmpp::text::fmt;
//! let tuiding: Vec<u8> = "退订".encode_utf16().flat_map(u16::to_be_bytes).collect();
//! let result = sim.send_mo("8613912345678", "1069012345", fmt::UCS2, &tuiding).await;
//! assert_eq!(result, Ok(0), "the SP acknowledged the MO with DELIVER_RESP Result 0");
//! # }
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tracing::{debug, info};

use super::lock;
pub use crate::cmpp::auth::{authenticator_ismg, authenticator_source, put_connect_as};
use crate::cmpp::frame::{Framer, Next, DEFAULT_MAX_PDU_BYTES};
use crate::cmpp::msg_id::MsgId;
use crate::cmpp::pdu::{self, DeliverFields};
use crate::cmpp::peek::{self, Report};
use crate::cmpp::{cmd, connect_status, result, set_sequence, stat, text, Header, Version, RESP_BIT};
use crate::time::{Civil, Clock};

/// Most DELIVERs a link has unanswered at once (spec 3.0 §7.1, W = 16).
pub const WINDOW: usize = 16;
/// Most DELIVERs (reports and MOs) a link keeps waiting for the window or their delay.
pub const QUEUE_CAP: usize = 65_536;
/// How long [`CmppSimHandle::send_mo`] waits for the DELIVER_RESP.
pub const MO_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`CmppSimConfig::gateway_id`]: an ISMG code of the 0XYZ01–0XYZ99 form (spec 3.0 §3).
pub const DEFAULT_GATEWAY_ID: u32 = 10_001;
/// Default [`CmppSimConfig::record_limit`].
pub const DEFAULT_RECORD_LIMIT: usize = 100_000;
/// How long a new link may take to send CONNECT.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Capacity of a link's command channel (MO requests).
const COMMAND_CAP: usize = 1024;
/// Unanswered ACTIVE_TESTs of our own remembered per link.
const ACTIVE_TEST_MEMORY: usize = 8;
/// China Standard Time (UTC+8, no DST): the ISMG's clock for Msg_Ids and report times.
const CST_OFFSET_S: i64 = 8 * 3600;

/// Simulator configuration. `Default` is a loopback listener on an ephemeral port that
/// accepts any SP and sends reports at once.
#[derive(Clone)]
pub struct CmppSimConfig {
    /// Listen address (`127.0.0.1:0` in tests).
    pub listen: SocketAddr,
    /// Source_Addr (SP_Id) → shared secret. Empty: any Source_Addr and authenticator are
    /// accepted and AuthenticatorISMG is all zero.
    pub secrets: HashMap<String, String>,
    /// The ISMG code in every Msg_Id (22 bits, [`crate::cmpp::msg_id::GATEWAY_MAX`]).
    pub gateway_id: u32,
    /// Send status reports for SUBMITs with Registered_Delivery = 1.
    pub reports: bool,
    /// Delay between a SUBMIT_RESP and its status reports.
    pub report_delay: Duration,
    /// Dest_terminal_Id (as sent, up to its first NUL) → the 7-byte Stat of its report, e.g.
    /// `*b"UNDELIV"`, `*b"MA:0001"`. Others get `DELIVRD`.
    pub dest_errors: HashMap<String, [u8; 7]>,
    /// Send ACTIVE_TEST on every connected link at this interval (None: never). Note that
    /// pycmpp 2.0.2 answers it with a malformed frame (see tests/interop/pycmpp_client.py).
    pub active_test_every: Option<Duration>,
    /// One MO DELIVER after every N-th SUBMIT of a link (None or 0: none).
    pub mo_every: Option<u32>,
    /// An unanswered DELIVER leaves the window after this long (spec 3.0 §7.1 T = 60 s).
    pub deliver_timeout: Duration,
    /// How many SUBMIT frames [`CmppSimHandle::submits`] keeps (the latest); 0 records none.
    pub record_limit: usize,
    /// Largest accepted Total_Length.
    pub max_pdu_bytes: usize,
}

impl Default for CmppSimConfig {
    fn default() -> CmppSimConfig {
        CmppSimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            secrets: HashMap::new(),
            gateway_id: DEFAULT_GATEWAY_ID,
            reports: true,
            report_delay: Duration::ZERO,
            dest_errors: HashMap::new(),
            active_test_every: None,
            mo_every: None,
            deliver_timeout: Duration::from_secs(60),
            record_limit: DEFAULT_RECORD_LIMIT,
            max_pdu_bytes: DEFAULT_MAX_PDU_BYTES,
        }
    }
}

/// Secrets masked (STYLE §6).
impl std::fmt::Debug for CmppSimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sps: Vec<&String> = self.secrets.keys().collect();
        f.debug_struct("CmppSimConfig")
            .field("listen", &self.listen)
            .field("secrets", &format_args!("{sps:?} (secrets masked)"))
            .field("gateway_id", &self.gateway_id)
            .field("reports", &self.reports)
            .field("report_delay", &self.report_delay)
            .field("dest_errors", &self.dest_errors.len())
            .field("active_test_every", &self.active_test_every)
            .field("mo_every", &self.mo_every)
            .field("deliver_timeout", &self.deliver_timeout)
            .field("record_limit", &self.record_limit)
            .field("max_pdu_bytes", &self.max_pdu_bytes)
            .finish()
    }
}

/// Counters (relaxed atomics, read them with `load`).
#[derive(Debug, Default)]
pub struct CmppSimStats {
    /// Links that completed CONNECT with Status 0.
    pub connections: AtomicU64,
    /// CONNECTs refused (bad structure, unknown version, unknown SP, bad authenticator).
    pub connect_refused: AtomicU64,
    /// Well-formed SUBMITs answered with Result 0.
    pub submits: AtomicU64,
    /// Malformed SUBMITs (answered with their PeekError's Result, or 4 when too long).
    pub submit_errors: AtomicU64,
    /// Destinations of the well-formed SUBMITs (DestUsr_tl summed).
    pub destinations: AtomicU64,
    /// Status-report DELIVERs written.
    pub reports_sent: AtomicU64,
    /// MO DELIVERs written.
    pub mo_sent: AtomicU64,
    /// DELIVER_RESPs with Result 0.
    pub deliver_acks: AtomicU64,
    /// DELIVER_RESPs with a non-zero Result.
    pub deliver_nacks: AtomicU64,
    /// DELIVERs that left the window unanswered after `deliver_timeout`.
    pub deliver_timeouts: AtomicU64,
    /// DELIVERs dropped because a link's queue was full ([`QUEUE_CAP`]).
    pub delivers_dropped: AtomicU64,
    /// ACTIVE_TESTs from SPs answered.
    pub active_tests: AtomicU64,
    /// ACTIVE_TESTs the simulator sent.
    pub active_tests_sent: AtomicU64,
    /// ACTIVE_TEST_RESPs received for them.
    pub active_test_resps: AtomicU64,
    /// TERMINATEs from SPs answered.
    pub terminates: AtomicU64,
    /// Requests left unanswered: QUERY, CANCEL, unknown command ids, anything before CONNECT.
    pub unsupported: AtomicU64,
}

/// Why [`CmppSimHandle::send_mo`] got no DELIVER_RESP Result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MoError {
    /// No SP link has completed CONNECT.
    #[error("no connected SP link")]
    NoLink,
    /// The link's command queue is full.
    #[error("the link's command queue is full")]
    Busy,
    /// The link closed (or dropped the MO from its full queue, or the MO left the window
    /// unanswered after `deliver_timeout`) before a DELIVER_RESP came.
    #[error("the link closed before the DELIVER_RESP")]
    Closed,
    /// No DELIVER_RESP within [`MO_TIMEOUT`].
    #[error("no DELIVER_RESP within the timeout")]
    Timeout,
}

/// What another task asks a link to do.
enum Command {
    Mo {
        src_terminal_id: Vec<u8>,
        dest_id: Vec<u8>,
        msg_fmt: u8,
        content: Vec<u8>,
        reply: Option<oneshot::Sender<u32>>,
    },
}

struct Shared {
    cfg: CmppSimConfig,
    stats: Arc<CmppSimStats>,
    /// Connected links (CONNECT accepted), by link id: the oldest first.
    links: Mutex<BTreeMap<u64, mpsc::Sender<Command>>>,
    /// The latest SUBMIT frames. A std Mutex: locked once per read batch, no await inside.
    recorded: Mutex<VecDeque<Vec<u8>>>,
    /// Sequence part of the next Msg_Id (only the low 16 bits are used).
    next_msg_seq: AtomicU32,
    stop: watch::Sender<bool>,
    next_link: AtomicU64,
    rr: AtomicUsize,
}

impl Shared {
    /// The first of `n` consecutive Msg_Ids (a group SUBMIT's range, spec 3.0 §9).
    fn msg_ids(&self, n: u8) -> u64 {
        let seq = self.next_msg_seq.fetch_add(u32::from(n.max(1)), Ordering::Relaxed) as u16;
        let c = cst_now();
        MsgId {
            month: c.month as u8,
            day: c.day as u8,
            hour: c.hour as u8,
            minute: c.minute as u8,
            second: c.second as u8,
            gateway: self.cfg.gateway_id,
            sequence: seq,
        }
        .encode()
    }

    fn record(&self, frames: &mut Vec<Vec<u8>>) {
        if frames.is_empty() {
            return;
        }
        let limit = self.cfg.record_limit;
        let mut r = lock(&self.recorded);
        for f in frames.drain(..) {
            if r.len() >= limit {
                r.pop_front();
            }
            r.push_back(f);
        }
    }

    /// The command channel of a connected link: the oldest, or round-robin.
    fn link(&self, round_robin: bool) -> Option<mpsc::Sender<Command>> {
        let links = lock(&self.links);
        let n = links.len();
        if n == 0 {
            return None;
        }
        let k = if round_robin { self.rr.fetch_add(1, Ordering::Relaxed) % n } else { 0 };
        links.values().nth(k).cloned()
    }
}

fn cst_now() -> Civil {
    Civil::from_unix_s(Clock::system().now().unix_s() + CST_OFFSET_S)
}

/// The report's Submit_time / Done_time: YYMMDDHHMM in China Standard Time (the SMPP
/// receipt's date format).
fn report_time() -> [u8; 10] {
    super::receipt::smpp_date(Clock::system().now().unix_s() + CST_OFFSET_S)
}

/// A running simulator. Dropping it stops the accept loop and every link.
pub struct CmppSimHandle {
    pub local_addr: SocketAddr,
    pub stats: Arc<CmppSimStats>,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl CmppSimHandle {
    /// The SUBMIT frames received (bytes as received, header included), oldest first: the last
    /// [`CmppSimConfig::record_limit`], malformed ones included.
    pub fn submits(&self) -> Vec<Vec<u8>> {
        lock(&self.shared.recorded).iter().cloned().collect()
    }

    /// Number of links that have completed CONNECT and are still open.
    pub fn links(&self) -> usize {
        lock(&self.shared.links).len()
    }

    /// Sends an MO (CMPP_DELIVER, Registered_Delivery = 0) from `src_terminal_id` to `dest_id`
    /// (the SP's service code + extension) on the oldest connected link and returns the
    /// Result of its DELIVER_RESP. Waits for the window like any DELIVER; at most
    /// [`MO_TIMEOUT`] in all. Msg_Content longer than 255 bytes is cut.
    pub async fn send_mo(
        &self,
        src_terminal_id: &str,
        dest_id: &str,
        msg_fmt: u8,
        content: &[u8],
    ) -> Result<u32, MoError> {
        let tx = self.shared.link(false).ok_or(MoError::NoLink)?;
        let (reply, answer) = oneshot::channel();
        let c = Command::Mo {
            src_terminal_id: src_terminal_id.as_bytes().to_vec(),
            dest_id: dest_id.as_bytes().to_vec(),
            msg_fmt,
            content: content.to_vec(),
            reply: Some(reply),
        };
        tx.try_send(c).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => MoError::Busy,
            mpsc::error::TrySendError::Closed(_) => MoError::Closed,
        })?;
        match tokio::time::timeout(MO_TIMEOUT, answer).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(_)) => Err(MoError::Closed),
            Err(_) => Err(MoError::Timeout),
        }
    }

    /// Sends an MO like [`CmppSimHandle::send_mo`] on the connected links in turn, without
    /// waiting for its answer (benchmarks, the CLI's `--mo-every`). False when no link is
    /// connected or its queue is full.
    pub fn inject_mo(&self, src_terminal_id: &str, dest_id: &str, msg_fmt: u8, content: &[u8]) -> bool {
        let Some(tx) = self.shared.link(true) else { return false };
        tx.try_send(Command::Mo {
            src_terminal_id: src_terminal_id.as_bytes().to_vec(),
            dest_id: dest_id.as_bytes().to_vec(),
            msg_fmt,
            content: content.to_vec(),
            reply: None,
        })
        .is_ok()
    }

    /// Stops listening, closes every link and waits for their tasks.
    pub async fn shutdown(mut self) {
        self.shared.stop.send_replace(true);
        if let Some(j) = self.accept.take() {
            let _ = j.await;
        }
    }
}

impl Drop for CmppSimHandle {
    fn drop(&mut self) {
        self.shared.stop.send_replace(true);
    }
}

/// Binds the listener and starts accepting SP links.
pub async fn start(cfg: CmppSimConfig) -> std::io::Result<CmppSimHandle> {
    let listener = TcpListener::bind(cfg.listen).await?;
    let local_addr = listener.local_addr()?;
    let stats = Arc::new(CmppSimStats::default());
    let shared = Arc::new(Shared {
        cfg,
        stats: stats.clone(),
        links: Mutex::new(BTreeMap::new()),
        recorded: Mutex::new(VecDeque::new()),
        next_msg_seq: AtomicU32::new(1),
        stop: watch::Sender::new(false),
        next_link: AtomicU64::new(1),
        rr: AtomicUsize::new(0),
    });
    info!(addr = %local_addr, gateway_id = shared.cfg.gateway_id, "CMPP ISMG simulator listening");
    let stop = shared.stop.subscribe();
    let accept = tokio::spawn(accept_loop(shared.clone(), listener, stop));
    Ok(CmppSimHandle { local_addr, stats, shared, accept: Some(accept) })
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            r = stop.changed() => {
                if r.is_err() || *stop.borrow() {
                    break;
                }
            }
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let id = shared.next_link.fetch_add(1, Ordering::Relaxed);
                    tasks.spawn(run_link(shared.clone(), id, stream, peer, shared.stop.subscribe()));
                }
                Err(e) => {
                    debug!(error = %e, "cmpp-sim accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    drop(listener);
    while tasks.join_next().await.is_some() {}
    info!("CMPP ISMG simulator stopped");
}

/// What an outstanding or queued DELIVER is.
enum Kind {
    Report,
    Mo(Option<oneshot::Sender<u32>>),
}

/// A DELIVER frame (Sequence_Id set when it is sent) and what it is.
struct Queued {
    frame: BytesMut,
    kind: Kind,
}

/// A DELIVER in the window.
struct Pending {
    kind: Kind,
    deadline: Instant,
}

/// One SP link's state.
struct Link {
    shared: Arc<Shared>,
    id: u64,
    /// Set once CONNECT is accepted.
    version: Option<Version>,
    framer: Framer,
    /// Output of the current event, written with one `write_all`.
    out: BytesMut,
    next_seq: u32,
    /// DELIVERs sent and not answered, by Sequence_Id (≤ [`WINDOW`]).
    pending: HashMap<u32, Pending>,
    /// DELIVERs waiting for the window.
    ready: VecDeque<Queued>,
    /// Reports waiting for `report_delay` (due times in order: the delay is constant).
    delayed: VecDeque<(Instant, Queued)>,
    /// Sequence_Ids of our unanswered ACTIVE_TESTs.
    active_tests: VecDeque<u32>,
    connect_deadline: Instant,
    /// SUBMITs seen on this link (for `mo_every`).
    submits: u64,
    /// SUBMIT frames of the current read batch, recorded at its end.
    batch: Vec<Vec<u8>>,
    /// Write what is in `out`, then close.
    close: bool,
    tx: mpsc::Sender<Command>,
}

async fn run_link(shared: Arc<Shared>, id: u64, stream: TcpStream, peer: SocketAddr, mut stop: watch::Receiver<bool>) {
    debug!(link = id, %peer, "cmpp-sim link accepted");
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel(COMMAND_CAP);
    let mut active = shared.cfg.active_test_every.filter(|d| !d.is_zero()).map(|every| {
        let mut i = tokio::time::interval_at(Instant::now() + every, every);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    let mut l = Link {
        framer: Framer::new(shared.cfg.max_pdu_bytes),
        shared,
        id,
        version: None,
        out: BytesMut::with_capacity(4096),
        next_seq: 1,
        pending: HashMap::with_capacity(WINDOW),
        ready: VecDeque::new(),
        delayed: VecDeque::new(),
        active_tests: VecDeque::new(),
        connect_deadline: Instant::now() + CONNECT_TIMEOUT,
        submits: 0,
        batch: Vec::new(),
        close: false,
        tx,
    };
    let mut inbuf = BytesMut::with_capacity(16 * 1024);
    loop {
        inbuf.reserve(8 * 1024);
        let due = l.next_deadline();
        let connected = l.version.is_some();
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => l.on_timer(Instant::now()),
            Some(c) = rx.recv() => l.on_command(c),
            _ = async {
                match active.as_mut() {
                    Some(i) => {
                        i.tick().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }, if connected => l.send_active_test(),
            r = rd.read_buf(&mut inbuf) => match r {
                Ok(0) | Err(_) => break,
                Ok(_) => l.process(&mut inbuf),
            },
        }
        l.pump();
        if !l.out.is_empty() {
            let ok = tokio::select! {
                r = wr.write_all(&l.out) => r.is_ok(),
                _ = stop.changed() => false,
            };
            l.out.clear();
            if !ok {
                break;
            }
        }
        if l.close {
            let _ = wr.shutdown().await;
            break;
        }
    }
    lock(&l.shared.links).remove(&id);
    debug!(link = id, %peer, "cmpp-sim link closed");
}

impl Link {
    fn stats(&self) -> &CmppSimStats {
        &self.shared.stats
    }

    fn next_seq(&mut self) -> u32 {
        let s = self.next_seq;
        self.next_seq = self.next_seq.checked_add(1).unwrap_or(1);
        s
    }

    /// The earliest of: the first delayed report, the first window timeout, the CONNECT
    /// deadline.
    fn next_deadline(&self) -> Option<Instant> {
        let mut due = self.delayed.front().map(|(at, _)| *at);
        for p in self.pending.values() {
            due = Some(due.map_or(p.deadline, |d| d.min(p.deadline)));
        }
        if self.version.is_none() {
            due = Some(due.map_or(self.connect_deadline, |d| d.min(self.connect_deadline)));
        }
        due
    }

    fn on_timer(&mut self, now: Instant) {
        if self.version.is_none() && now >= self.connect_deadline {
            debug!(link = self.id, "no CONNECT in time");
            self.close = true;
            return;
        }
        while self.delayed.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, q)) = self.delayed.pop_front() {
                self.ready.push_back(q);
            }
        }
        let before = self.pending.len();
        self.pending.retain(|_, p| p.deadline > now);
        let expired = (before - self.pending.len()) as u64;
        if expired > 0 {
            self.stats().deliver_timeouts.fetch_add(expired, Ordering::Relaxed);
        }
    }

    fn on_command(&mut self, c: Command) {
        let Some(v) = self.version else { return };
        match c {
            Command::Mo { src_terminal_id, dest_id, msg_fmt, content, reply } => {
                let mut frame = BytesMut::new();
                let d = DeliverFields {
                    msg_id: self.shared.msg_ids(1),
                    dest_id: &dest_id,
                    msg_fmt,
                    src_terminal_id: &src_terminal_id,
                    registered_delivery: 0,
                    msg_content: &content,
                    ..DeliverFields::default()
                };
                pdu::put_deliver(&mut frame, v, 0, &d);
                self.enqueue(Queued { frame, kind: Kind::Mo(reply) }, Duration::ZERO);
            }
        }
    }

    /// Queues a DELIVER for the window, after `delay`.
    fn enqueue(&mut self, q: Queued, delay: Duration) {
        if self.ready.len() + self.delayed.len() >= QUEUE_CAP {
            self.stats().delivers_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if delay.is_zero() {
            self.ready.push_back(q);
        } else {
            self.delayed.push_back((Instant::now() + delay, q));
        }
    }

    /// Sends queued DELIVERs while the window has room.
    fn pump(&mut self) {
        if self.version.is_none() || self.close {
            return;
        }
        let deadline = Instant::now() + self.shared.cfg.deliver_timeout;
        while self.pending.len() < WINDOW {
            let Some(mut q) = self.ready.pop_front() else { break };
            let seq = self.next_seq();
            set_sequence(&mut q.frame, seq);
            self.out.extend_from_slice(&q.frame);
            let counter = match q.kind {
                Kind::Report => &self.shared.stats.reports_sent,
                Kind::Mo(_) => &self.shared.stats.mo_sent,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            self.pending.insert(seq, Pending { kind: q.kind, deadline });
        }
    }

    fn send_active_test(&mut self) {
        if self.active_tests.len() >= ACTIVE_TEST_MEMORY {
            self.active_tests.pop_front();
        }
        let seq = self.next_seq();
        pdu::put_active_test(&mut self.out, seq);
        self.active_tests.push_back(seq);
        self.stats().active_tests_sent.fetch_add(1, Ordering::Relaxed);
    }

    /// Handles every complete frame of `inbuf`.
    fn process(&mut self, inbuf: &mut BytesMut) {
        while !self.close {
            match self.framer.next(inbuf) {
                Next::Incomplete => break,
                Next::Frame(n) => {
                    self.handle(&inbuf[..n]);
                    inbuf.advance(n);
                }
                Next::Skip(n) => inbuf.advance(n),
                Next::TooLong { command_id, sequence, length } => {
                    debug!(link = self.id, command_id, length, "oversized PDU");
                    match (command_id, self.version) {
                        (cmd::SUBMIT, Some(v)) => {
                            self.stats().submit_errors.fetch_add(1, Ordering::Relaxed);
                            pdu::put_submit_resp(&mut self.out, v, sequence, 0, result::BAD_LENGTH);
                        }
                        _ => self.close = true,
                    }
                }
                Next::TooShort { length } => {
                    debug!(link = self.id, length, "Total_Length below the header");
                    self.close = true;
                }
            }
        }
        let mut batch = std::mem::take(&mut self.batch);
        self.shared.record(&mut batch);
        self.batch = batch;
    }

    fn handle(&mut self, frame: &[u8]) {
        let Some(h) = Header::read(frame) else { return };
        let seq = h.sequence_id;
        match (h.command_id, self.version) {
            (cmd::CONNECT, None) => self.on_connect(frame, seq),
            (cmd::CONNECT, Some(v)) => {
                // Already connected: refused, the link stays as it is.
                pdu::put_connect_resp(&mut self.out, v, seq, connect_status::OTHER, &[0; 16], v.byte());
            }
            (cmd::ACTIVE_TEST, _) => {
                pdu::put_active_test_resp(&mut self.out, seq);
                self.stats().active_tests.fetch_add(1, Ordering::Relaxed);
            }
            (cmd::TERMINATE, _) => {
                pdu::put_terminate_resp(&mut self.out, seq);
                self.stats().terminates.fetch_add(1, Ordering::Relaxed);
                self.close = true;
            }
            (cmd::TERMINATE_RESP, _) => self.close = true,
            (cmd::SUBMIT, Some(v)) => self.on_submit(frame, seq, v),
            (cmd::DELIVER_RESP, Some(v)) => self.on_deliver_resp(frame, seq, v),
            (cmd::ACTIVE_TEST_RESP, Some(_)) => {
                if let Some(i) = self.active_tests.iter().position(|&s| s == seq) {
                    self.active_tests.remove(i);
                    self.stats().active_test_resps.fetch_add(1, Ordering::Relaxed);
                }
            }
            (id, None) if id & RESP_BIT == 0 => {
                // Requests before CONNECT: an unauthenticated SP.
                self.stats().unsupported.fetch_add(1, Ordering::Relaxed);
                self.close = true;
            }
            (id, Some(_)) if id & RESP_BIT == 0 => {
                self.stats().unsupported.fetch_add(1, Ordering::Relaxed);
            }
            _ => {} // a response nobody waits for
        }
    }

    /// Refuses a CONNECT with `status` (authenticator zero, Version 3.0 offered) and closes.
    fn refuse(&mut self, width: Version, seq: u32, status: u32) {
        pdu::put_connect_resp(&mut self.out, width, seq, status, &[0; 16], Version::V30.byte());
        self.stats().connect_refused.fetch_add(1, Ordering::Relaxed);
        self.close = true;
    }

    fn on_connect(&mut self, frame: &[u8], seq: u32) {
        let c = match peek::connect(frame) {
            Ok(c) => c,
            Err(e) => return self.refuse(Version::V30, seq, e.connect_status()),
        };
        let version = match c.version() {
            Ok(v) => v,
            Err(e) => {
                let width = if c.version_byte >= 0x30 { Version::V30 } else { Version::V20 };
                return self.refuse(width, seq, e.connect_status());
            }
        };
        let mut auth = [0u8; 16];
        if !self.shared.cfg.secrets.is_empty() {
            let secret = std::str::from_utf8(c.source_addr).ok().and_then(|sp| self.shared.cfg.secrets.get(sp));
            let Some(secret) = secret else {
                debug!(link = self.id, "CONNECT from an unknown Source_Addr");
                return self.refuse(version, seq, connect_status::BAD_SOURCE_ADDR);
            };
            if authenticator_source(c.source_addr, secret.as_bytes(), c.timestamp) != c.authenticator_source {
                debug!(link = self.id, "CONNECT authenticator mismatch");
                return self.refuse(version, seq, connect_status::AUTH_FAILED);
            }
            auth = authenticator_ismg(version, connect_status::OK, c.authenticator_source, secret.as_bytes());
        }
        pdu::put_connect_resp(&mut self.out, version, seq, connect_status::OK, &auth, c.version_byte);
        self.version = Some(version);
        lock(&self.shared.links).insert(self.id, self.tx.clone());
        self.stats().connections.fetch_add(1, Ordering::Relaxed);
    }

    fn on_submit(&mut self, frame: &[u8], seq: u32, v: Version) {
        if self.shared.cfg.record_limit > 0 {
            self.batch.push(frame.to_vec());
        }
        let s = match peek::submit(frame, v) {
            Ok(s) => s,
            Err(e) => {
                self.stats().submit_errors.fetch_add(1, Ordering::Relaxed);
                pdu::put_submit_resp(&mut self.out, v, seq, 0, e.result(v));
                return;
            }
        };
        let shared = Arc::clone(&self.shared);
        let (cfg, stats) = (&shared.cfg, &shared.stats);
        stats.submits.fetch_add(1, Ordering::Relaxed);
        stats.destinations.fetch_add(u64::from(s.dest_usr_tl), Ordering::Relaxed);
        let first = shared.msg_ids(s.dest_usr_tl);
        pdu::put_submit_resp(&mut self.out, v, seq, first, result::OK);
        if cfg.reports && s.registered_delivery == 1 {
            let time = report_time();
            for (i, dest) in s.destinations().enumerate() {
                let st = std::str::from_utf8(dest).ok().and_then(|d| cfg.dest_errors.get(d)).unwrap_or(&stat::DELIVRD);
                let msg_id = MsgId::nth(first, i as u8);
                let r = Report {
                    msg_id,
                    stat: st,
                    submit_time: &time,
                    done_time: &time,
                    dest_terminal_id: dest,
                    smsc_sequence: msg_id as u16 as u32,
                };
                let mut f = BytesMut::new();
                pdu::put_report(&mut f, v, 0, shared.msg_ids(1), s.src_id, s.service_id, &r);
                self.enqueue(Queued { frame: f, kind: Kind::Report }, cfg.report_delay);
            }
        }
        self.submits += 1;
        if let Some(every) = cfg.mo_every.filter(|&n| n > 0) {
            if self.submits % u64::from(every) == 0 {
                let mut f = BytesMut::new();
                let d = DeliverFields {
                    msg_id: shared.msg_ids(1),
                    dest_id: s.src_id,
                    service_id: s.service_id,
                    msg_fmt: text::fmt::ASCII,
                    src_terminal_id: s.destination(0).unwrap_or_default(),
                    msg_content: b"TD",
                    ..DeliverFields::default()
                };
                pdu::put_deliver(&mut f, v, 0, &d);
                self.enqueue(Queued { frame: f, kind: Kind::Mo(None) }, Duration::ZERO);
            }
        }
    }

    fn on_deliver_resp(&mut self, frame: &[u8], seq: u32, v: Version) {
        // A DELIVER_RESP too short to read still frees its window slot.
        let r = peek::deliver_resp(frame, v).map_or(result::BAD_STRUCTURE, |r| r.result);
        let Some(p) = self.pending.remove(&seq) else { return };
        let counter = if r == result::OK { &self.shared.stats.deliver_acks } else { &self.shared.stats.deliver_nacks };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Kind::Mo(Some(reply)) = p.kind {
            let _ = reply.send(r);
        }
    }
}
