//! SMSC simulator: a small SMPP v3.4 server for tests, benchmarks and demos.
//!
//! One task per TCP connection. Each read fills a `BytesMut` (≥ 64 KiB spare), every complete
//! frame in it is handled in place by [`Framer`], and everything the batch produces (responses,
//! same-connection delivery receipts) is appended to one output buffer written with a single
//! `write_all`. The fast path allocates nothing per PDU, takes no lock, touches no shared
//! atomic (message ids are reserved in blocks, statistics are flushed once per batch) and logs
//! nothing.
//!
//! Cross-connection traffic (receipts for a transmitter bind delivered on a parallel receiver
//! bind of the same system_id, [`SimHandle::inject_mo`]) goes through a bounded per-connection
//! channel of ready-made frames; the receiving task assigns its own sequence numbers. Kill,
//! unbind and stop requests are broadcast with `watch` channels.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tracing::{debug, info};

use crate::smpp::frame::{Framer, Next};
use crate::smpp::pdu::{
    decode_bind, encode_bind_resp, put_header_only, put_local_error_resp, put_resp_with_id, SubmitBuilder,
};
use crate::smpp::peek::{self, tlv, MessageView, MultiDest};
use crate::smpp::{cmd, is_known_command, set_sequence, status, BindType, Header, HEADER_LEN, RESP_BIT};

/// Spare capacity reserved in the read buffer before every read.
const READ_SPARE: usize = 64 * 1024;
/// Message ids reserved from the process-wide counter at a time, per connection.
const ID_BLOCK: u64 = 1024;
/// Capacity (in batches) of a connection's inbound channel of frames to deliver.
const CHANNEL_CAP: usize = 256;
/// Capacity (in batches) of the delayed-writer queue when `response_delay > 0`.
const DELAY_QUEUE_CAP: usize = 1024;
/// How long an SMSC-initiated unbind waits for unbind_resp before closing.
const UNBIND_TIMEOUT: Duration = Duration::from_secs(2);
/// Upper bound of frames drained from the channel into one write.
const DRAIN_LIMIT: usize = 256 * 1024;

/// Process-wide message id counter; connections reserve [`ID_BLOCK`] ids at a time.
static NEXT_MSG_ID: AtomicU64 = AtomicU64::new(1);

/// Simulator configuration.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Listen address ("127.0.0.1:0" in tests).
    pub listen: SocketAddr,
    /// system_id reported in bind_resp.
    pub system_id: String,
    /// If set, only these (system_id, password) pairs may bind; others get ESME_RINVPASWD
    /// (known system_id) / ESME_RINVSYSID. None = accept any.
    pub credentials: Option<Vec<(String, String)>>,
    /// If set (and non-zero), every bind is refused with this status.
    pub refuse_binds: Option<u32>,
    /// Send delivery receipts when registered_delivery & 0x03 != 0.
    pub receipts: bool,
    /// Delay before submit responses (0 = none).
    pub response_delay: Duration,
    /// destination_addr -> command_status to answer submits with.
    pub dest_errors: HashMap<String, u32>,
    /// Keep a copy of every received PDU frame (bytes as received) for tests.
    pub record: bool,
    /// Largest accepted command_length.
    pub max_pdu_bytes: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            system_id: "consentgate-sim".to_owned(),
            credentials: None,
            refuse_binds: None,
            receipts: true,
            response_delay: Duration::ZERO,
            dest_errors: HashMap::new(),
            record: false,
            max_pdu_bytes: 65536,
        }
    }
}

/// Counters, updated once per read batch.
#[derive(Debug, Default)]
pub struct SimStats {
    /// Successful binds.
    pub binds: AtomicU64,
    /// submit_sm, data_sm and submit_multi received on a bind allowed to submit.
    pub submits: AtomicU64,
    /// Delivery receipts written (same connection) or handed to a sibling receiver session.
    pub receipts_sent: AtomicU64,
    /// MO deliver_sm handed to a session by [`SimHandle::inject_mo`].
    pub mo_sent: AtomicU64,
    /// enquire_link requests answered.
    pub enquire_links: AtomicU64,
    /// unbind requests received from ESMEs.
    pub unbinds: AtomicU64,
    /// Responses consumed silently (deliver_sm_resp, enquire_link_resp, unbind_resp, generic_nack, ...).
    pub resps_received: AtomicU64,
}

/// Frames another task asks a connection to write; it rewrites their sequence numbers.
struct Outbound {
    frames: BytesMut,
    /// Apply `response_delay` (receipts for submits answered with that delay).
    hold: bool,
}

/// A bound session in the registry.
struct Entry {
    conn_id: u64,
    bind: BindType,
    tx: mpsc::Sender<Outbound>,
}

struct Shared {
    cfg: SimConfig,
    stats: Arc<SimStats>,
    /// system_id -> bound sessions.
    registry: Mutex<HashMap<String, Vec<Entry>>>,
    recorded: Mutex<Vec<(String, Bytes)>>,
    kill: watch::Sender<u64>,
    unbind: watch::Sender<u64>,
    stop: watch::Sender<bool>,
    next_conn: AtomicU64,
    rr: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// The channel of one bound RX/TRX session (of `system_id`, or any), other than `exclude`,
    /// chosen round-robin by `rr`.
    fn pick_receiver(&self, system_id: Option<&str>, exclude: u64, rr: usize) -> Option<mpsc::Sender<Outbound>> {
        let reg = lock(&self.registry);
        let ok = |e: &&Entry| e.bind.can_receive() && e.conn_id != exclude;
        let n = match system_id {
            Some(s) => reg.get(s).map_or(0, |v| v.iter().filter(ok).count()),
            None => reg.values().flatten().filter(ok).count(),
        };
        if n == 0 {
            return None;
        }
        let k = rr % n;
        let e = match system_id {
            Some(s) => reg.get(s)?.iter().filter(ok).nth(k),
            None => reg.values().flatten().filter(ok).nth(k),
        };
        e.map(|e| e.tx.clone())
    }
}

/// A running simulator.
pub struct SimHandle {
    pub local_addr: SocketAddr,
    pub stats: Arc<SimStats>,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl SimHandle {
    /// Frames received so far (only when record = true), in arrival order per connection, with
    /// the system_id of the session ("" before bind).
    pub fn recorded(&self) -> Vec<(String, Bytes)> {
        lock(&self.shared.recorded).clone()
    }

    /// Sends an MO deliver_sm (esm_class 0) to one bound RX/TRX session of `system_id` (any
    /// session if None). Returns false if no suitable session is bound.
    pub fn inject_mo(
        &self,
        system_id: Option<&str>,
        source: &str,
        destination: &str,
        data_coding: u8,
        short_message: &[u8],
    ) -> bool {
        let rr = self.shared.rr.fetch_add(1, Ordering::Relaxed);
        let Some(tx) = self.shared.pick_receiver(system_id, u64::MAX, rr) else {
            return false;
        };
        let mut b = SubmitBuilder::new(source, destination).deliver().source_ton_npi(1, 1).data_coding(data_coding);
        b = if short_message.len() <= 255 {
            b.short_message(short_message)
        } else {
            b.tlv(tlv::MESSAGE_PAYLOAD, &short_message[..short_message.len().min(u16::MAX as usize)])
        };
        let frames = b.build(0);
        match tx.try_send(Outbound { frames, hold: false }) {
            Ok(()) => {
                self.stats.mo_sent.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(_) => false,
        }
    }

    /// Number of currently bound sessions.
    pub fn sessions(&self) -> usize {
        lock(&self.shared.registry).values().map(Vec::len).sum()
    }

    /// Abruptly closes every connection (simulates an SMSC crash); keeps listening.
    pub fn kill_connections(&self) {
        self.shared.kill.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Sends unbind to every bound session (SMSC-initiated unbind). Each session closes on
    /// unbind_resp, or after 2 s without one.
    pub fn unbind_all(&self) {
        self.shared.unbind.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Stops listening and closes everything; waits for tasks.
    pub async fn shutdown(mut self) {
        self.shared.stop.send_replace(true);
        if let Some(j) = self.accept.take() {
            let _ = j.await;
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.shared.stop.send_replace(true);
    }
}

/// Binds the listener and starts accepting connections.
pub async fn start(cfg: SimConfig) -> std::io::Result<SimHandle> {
    let listener = TcpListener::bind(cfg.listen).await?;
    let local_addr = listener.local_addr()?;
    let stats = Arc::new(SimStats::default());
    let shared = Arc::new(Shared {
        cfg,
        stats: stats.clone(),
        registry: Mutex::new(HashMap::new()),
        recorded: Mutex::new(Vec::new()),
        kill: watch::Sender::new(0),
        unbind: watch::Sender::new(0),
        stop: watch::Sender::new(false),
        next_conn: AtomicU64::new(1),
        rr: AtomicUsize::new(0),
    });
    info!(addr = %local_addr, system_id = %shared.cfg.system_id, "SMSC simulator listening");
    let stop = shared.stop.subscribe();
    let accept = tokio::spawn(accept_loop(shared.clone(), listener, stop));
    Ok(SimHandle { local_addr, stats, shared, accept: Some(accept) })
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
                    let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
                    // Subscribe before spawning so a kill issued right now is not missed.
                    let kill = shared.kill.subscribe();
                    let unbind = shared.unbind.subscribe();
                    tasks.spawn(run_conn(shared.clone(), id, stream, peer, kill, unbind));
                }
                Err(e) => {
                    debug!(error = %e, "sim accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    drop(listener);
    shared.kill.send_modify(|v| *v = v.wrapping_add(1));
    while tasks.join_next().await.is_some() {}
    info!("SMSC simulator stopped");
}

/// Where a connection's output goes.
enum Writer {
    Direct(OwnedWriteHalf),
    Delayed { tx: mpsc::Sender<(Instant, BytesMut)>, task: JoinHandle<()>, delay: Duration },
}

impl Writer {
    /// Writes (or queues) `out` and leaves it empty. False: the connection must end.
    async fn flush(&mut self, out: &mut BytesMut, kill: &mut watch::Receiver<u64>, hold: bool) -> bool {
        if out.is_empty() {
            return true;
        }
        match self {
            Writer::Direct(wr) => {
                let ok = tokio::select! {
                    r = wr.write_all(out) => r.is_ok(),
                    _ = kill.changed() => false,
                };
                out.clear();
                ok
            }
            Writer::Delayed { tx, delay, .. } => {
                let now = Instant::now();
                let at = if hold { now + *delay } else { now };
                let cap = out.len();
                let buf = std::mem::replace(out, BytesMut::with_capacity(cap));
                tokio::select! {
                    r = tx.send((at, buf)) => r.is_ok(),
                    _ = kill.changed() => false,
                }
            }
        }
    }

    /// Ends the writer: gracefully (queued output is written) or at once.
    async fn finish(self, graceful: bool) {
        if let Writer::Delayed { tx, mut task, delay } = self {
            drop(tx);
            if !graceful || tokio::time::timeout(delay + Duration::from_secs(1), &mut task).await.is_err() {
                task.abort();
            }
        }
    }
}

async fn delayed_writer(mut wr: OwnedWriteHalf, mut rx: mpsc::Receiver<(Instant, BytesMut)>) {
    while let Some((at, buf)) = rx.recv().await {
        tokio::time::sleep_until(at).await;
        if wr.write_all(&buf).await.is_err() {
            return;
        }
    }
    let _ = wr.shutdown().await;
}

async fn run_conn(
    shared: Arc<Shared>,
    conn_id: u64,
    stream: TcpStream,
    peer: SocketAddr,
    mut kill: watch::Receiver<u64>,
    mut unbind: watch::Receiver<u64>,
) {
    debug!(conn = conn_id, %peer, "sim connection accepted");
    let (mut rd, wr) = stream.into_split();
    let delay = shared.cfg.response_delay;
    let mut writer = if delay.is_zero() {
        Writer::Direct(wr)
    } else {
        let (tx, rx) = mpsc::channel(DELAY_QUEUE_CAP);
        Writer::Delayed { tx, task: tokio::spawn(delayed_writer(wr, rx)), delay }
    };
    let (tx, mut rx) = mpsc::channel::<Outbound>(CHANNEL_CAP);
    let mut c = Conn::new(shared, conn_id, tx);
    let mut inbuf = BytesMut::with_capacity(2 * READ_SPARE);
    let mut graceful = true;
    loop {
        inbuf.reserve(READ_SPARE);
        let deadline = c.unbind_deadline;
        let ok = tokio::select! {
            biased;
            _ = kill.changed() => {
                graceful = false;
                break;
            }
            _ = unbind.changed() => {
                if c.bind.is_some() && c.unbind_deadline.is_none() {
                    let seq = c.next_seq();
                    put_header_only(&mut c.out, cmd::UNBIND, status::ESME_ROK, seq);
                    c.unbind_deadline = Some(Instant::now() + UNBIND_TIMEOUT);
                    writer.flush(&mut c.out, &mut kill, false).await
                } else {
                    true
                }
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => break,
            Some(m) = rx.recv() => {
                let mut hold = m.hold;
                c.push_outbound(m.frames);
                while c.out.len() < DRAIN_LIMIT {
                    match rx.try_recv() {
                        Ok(m) => {
                            hold |= m.hold;
                            c.push_outbound(m.frames);
                        }
                        Err(_) => break,
                    }
                }
                writer.flush(&mut c.out, &mut kill, hold).await
            }
            r = rd.read_buf(&mut inbuf) => match r {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    c.process(&mut inbuf);
                    let hold = c.batch_has_submit;
                    let mut ok = writer.flush(&mut c.out, &mut kill, hold).await;
                    if ok && !c.sib_out.is_empty() {
                        ok = c.send_to_sibling(&mut kill, hold).await;
                    }
                    ok
                }
            },
        };
        if !ok {
            graceful = false;
            break;
        }
        if c.close {
            break;
        }
    }
    writer.finish(graceful).await;
    debug!(conn = conn_id, system_id = %c.system_id, %peer, "sim connection closed");
}

/// Per-connection state; everything the fast path touches.
struct Conn {
    shared: Arc<Shared>,
    conn_id: u64,
    framer: Framer,
    bind: Option<BindType>,
    system_id: String,
    tx: mpsc::Sender<Outbound>,
    /// Output of the current batch.
    out: BytesMut,
    /// Receipts for a sibling RX session (sequence numbers assigned by the receiver).
    sib_out: BytesMut,
    seq: u32,
    id_next: u64,
    id_end: u64,
    close: bool,
    unbind_deadline: Option<Instant>,
    rr: usize,
    batch_has_submit: bool,
    date: Option<[u8; 10]>,
    // Batch counters, flushed to SimStats once per batch.
    n_submits: u64,
    n_enquire: u64,
    n_receipts: u64,
    n_sib_receipts: u64,
    n_unbinds: u64,
    n_resps: u64,
    rec: Vec<(String, Bytes)>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        if self.bind.is_some() {
            let mut reg = lock(&self.shared.registry);
            if let Some(v) = reg.get_mut(&self.system_id) {
                v.retain(|e| e.conn_id != self.conn_id);
                if v.is_empty() {
                    reg.remove(&self.system_id);
                }
            }
        }
    }
}

impl Conn {
    fn new(shared: Arc<Shared>, conn_id: u64, tx: mpsc::Sender<Outbound>) -> Conn {
        let framer = Framer::new(shared.cfg.max_pdu_bytes);
        Conn {
            shared,
            conn_id,
            framer,
            bind: None,
            system_id: String::new(),
            tx,
            out: BytesMut::with_capacity(2 * READ_SPARE),
            sib_out: BytesMut::new(),
            seq: 1,
            id_next: 0,
            id_end: 0,
            close: false,
            unbind_deadline: None,
            rr: 0,
            batch_has_submit: false,
            date: None,
            n_submits: 0,
            n_enquire: 0,
            n_receipts: 0,
            n_sib_receipts: 0,
            n_unbinds: 0,
            n_resps: 0,
            rec: Vec::new(),
        }
    }

    #[inline]
    fn next_seq(&mut self) -> u32 {
        let s = self.seq;
        self.seq = if s >= 0x7FFF_FFFF { 1 } else { s + 1 };
        s
    }

    #[inline]
    fn next_msg_id(&mut self) -> u64 {
        if self.id_next == self.id_end {
            let base = NEXT_MSG_ID.fetch_add(ID_BLOCK, Ordering::Relaxed);
            self.id_next = base;
            self.id_end = base + ID_BLOCK;
        }
        let v = self.id_next;
        self.id_next += 1;
        v
    }

    /// The receipt date of this batch (read once per batch, only when needed).
    #[inline]
    fn date(&mut self) -> [u8; 10] {
        *self.date.get_or_insert_with(smpp_date_now)
    }

    /// Handles every complete frame in `inbuf` and consumes it.
    fn process(&mut self, inbuf: &mut BytesMut) {
        self.batch_has_submit = false;
        self.date = None;
        let mut pos = 0;
        while pos < inbuf.len() {
            let avail = &inbuf[pos..];
            match self.framer.next(avail) {
                Next::Incomplete => break,
                Next::Frame(n) => {
                    self.handle(&avail[..n]);
                    pos += n;
                    if self.close {
                        break;
                    }
                }
                Next::Skip(n) => pos += n,
                Next::TooLong { sequence, .. } => {
                    put_header_only(&mut self.out, cmd::GENERIC_NACK, status::ESME_RINVCMDLEN, sequence)
                }
                Next::TooShort { .. } => {
                    let seq = be32_at(avail, 12).unwrap_or(0);
                    put_header_only(&mut self.out, cmd::GENERIC_NACK, status::ESME_RINVCMDLEN, seq);
                    self.close = true;
                    break;
                }
            }
        }
        inbuf.advance(pos.min(inbuf.len()));
        self.end_batch();
    }

    fn end_batch(&mut self) {
        let st = &self.shared.stats;
        for (n, c) in [
            (&mut self.n_submits, &st.submits),
            (&mut self.n_enquire, &st.enquire_links),
            (&mut self.n_receipts, &st.receipts_sent),
            (&mut self.n_unbinds, &st.unbinds),
            (&mut self.n_resps, &st.resps_received),
        ] {
            if *n != 0 {
                c.fetch_add(*n, Ordering::Relaxed);
                *n = 0;
            }
        }
        if !self.rec.is_empty() {
            lock(&self.shared.recorded).append(&mut self.rec);
        }
    }

    fn handle(&mut self, f: &[u8]) {
        let h = Header::read(f);
        let (id, seq) = (h.command_id, h.sequence_number);
        let bound = self.bind.is_some();
        match id {
            cmd::SUBMIT_SM | cmd::DATA_SM if self.bind.is_some_and(BindType::can_submit) => self.submit(f, id, seq),
            cmd::SUBMIT_MULTI if self.bind.is_some_and(BindType::can_submit) => self.submit_multi(f, seq),
            cmd::ENQUIRE_LINK => {
                self.n_enquire += 1;
                put_header_only(&mut self.out, cmd::ENQUIRE_LINK_RESP, status::ESME_ROK, seq);
            }
            cmd::BIND_TRANSMITTER | cmd::BIND_RECEIVER | cmd::BIND_TRANSCEIVER => self.bind(f, id, seq),
            cmd::QUERY_SM if bound => self.query(f, seq),
            cmd::CANCEL_SM | cmd::REPLACE_SM if bound => {
                put_header_only(&mut self.out, id | RESP_BIT, status::ESME_ROK, seq)
            }
            cmd::UNBIND if bound => {
                self.n_unbinds += 1;
                put_header_only(&mut self.out, cmd::UNBIND_RESP, status::ESME_ROK, seq);
                self.close = true;
            }
            cmd::UNBIND_RESP => {
                self.n_resps += 1;
                if self.unbind_deadline.is_some() {
                    self.close = true;
                }
            }
            _ if id & RESP_BIT != 0 && is_known_command(id) => self.n_resps += 1,
            cmd::OUTBIND | cmd::ALERT_NOTIFICATION => {
                put_header_only(&mut self.out, cmd::GENERIC_NACK, status::ESME_RINVCMDID, seq)
            }
            cmd::SUBMIT_SM
            | cmd::DATA_SM
            | cmd::SUBMIT_MULTI
            | cmd::QUERY_SM
            | cmd::CANCEL_SM
            | cmd::REPLACE_SM
            | cmd::UNBIND => put_local_error_resp(&mut self.out, id, status::ESME_RINVBNDSTS, seq),
            _ if !bound && is_known_command(id) => {
                put_local_error_resp(&mut self.out, id, status::ESME_RINVBNDSTS, seq)
            }
            _ => put_header_only(&mut self.out, cmd::GENERIC_NACK, status::ESME_RINVCMDID, seq),
        }
        if self.shared.cfg.record {
            self.rec.push((self.system_id.clone(), Bytes::copy_from_slice(f)));
        }
    }

    fn bind(&mut self, f: &[u8], id: u32, seq: u32) {
        let Some(bt) = BindType::from_command(id) else {
            return;
        };
        if self.bind.is_some() {
            put_header_only(&mut self.out, id | RESP_BIT, status::ESME_RALYBND, seq);
            return;
        }
        let cfg = &self.shared.cfg;
        let (st, req) = match cfg.refuse_binds {
            Some(s) if s != status::ESME_ROK => (s, None),
            _ => match decode_bind(f) {
                Err(e) => {
                    debug!(conn = self.conn_id, error = %e, "sim: undecodable bind");
                    (status::ESME_RBINDFAIL, None)
                }
                Ok(req) => {
                    let st = match &cfg.credentials {
                        None => status::ESME_ROK,
                        Some(list) if list.iter().any(|(s, p)| *s == req.system_id && *p == req.password) => {
                            status::ESME_ROK
                        }
                        Some(list) if list.iter().any(|(s, _)| *s == req.system_id) => status::ESME_RINVPASWD,
                        Some(_) => status::ESME_RINVSYSID,
                    };
                    (st, Some(req))
                }
            },
        };
        let resp = encode_bind_resp(bt, st, seq, &cfg.system_id);
        self.out.extend_from_slice(&resp);
        match req {
            Some(req) if st == status::ESME_ROK => {
                self.bind = Some(bt);
                self.system_id = req.system_id;
                lock(&self.shared.registry).entry(self.system_id.clone()).or_default().push(Entry {
                    conn_id: self.conn_id,
                    bind: bt,
                    tx: self.tx.clone(),
                });
                self.shared.stats.binds.fetch_add(1, Ordering::Relaxed);
                debug!(conn = self.conn_id, system_id = %self.system_id, bind = bt.as_str(), "sim bind accepted");
            }
            req => {
                debug!(conn = self.conn_id, system_id = ?req.map(|r| r.system_id), status = st, "sim bind refused");
            }
        }
    }

    /// submit_sm / data_sm on a bind allowed to submit.
    #[inline]
    fn submit(&mut self, f: &[u8], id: u32, seq: u32) {
        self.n_submits += 1;
        self.batch_has_submit = true;
        let v = match peek::message(f) {
            Ok(v) => v,
            Err(e) => return put_local_error_resp(&mut self.out, id, e.status(), seq),
        };
        if let Some(st) = dest_error(&self.shared.cfg.dest_errors, v.destination.addr) {
            return put_local_error_resp(&mut self.out, id, st, seq);
        }
        let mut idbuf = [0u8; 16];
        let n = self.next_msg_id();
        let mid = hex_id(n, &mut idbuf);
        put_resp_with_id(&mut self.out, id | RESP_BIT, status::ESME_ROK, seq, mid);
        if self.shared.cfg.receipts && v.registered_delivery & 0x03 != 0 {
            let date = self.date();
            if self.bind.is_some_and(BindType::can_receive) {
                let s = self.next_seq();
                put_receipt(&mut self.out, s, &v, mid, &date);
                self.n_receipts += 1;
            } else {
                put_receipt(&mut self.sib_out, 0, &v, mid, &date);
                self.n_sib_receipts += 1;
            }
        }
    }

    fn submit_multi(&mut self, f: &[u8], seq: u32) {
        self.n_submits += 1;
        self.batch_has_submit = true;
        let m = match peek::multi(f) {
            Ok(m) => m,
            Err(e) => return put_local_error_resp(&mut self.out, cmd::SUBMIT_MULTI, e.status(), seq),
        };
        let mut idbuf = [0u8; 16];
        let n = self.next_msg_id();
        let mid = hex_id(n, &mut idbuf);
        let errs = &self.shared.cfg.dest_errors;
        let out = &mut self.out;
        out.reserve(HEADER_LEN + 20);
        let start = out.len();
        out.put_u32(0);
        out.put_u32(cmd::SUBMIT_MULTI_RESP);
        out.put_u32(status::ESME_ROK);
        out.put_u32(seq);
        out.put_slice(mid);
        out.put_u8(0);
        let count_at = out.len();
        out.put_u8(0);
        let mut unsuccess = 0u8;
        if !errs.is_empty() {
            for (d, _) in m.destinations() {
                if let MultiDest::Sme(a) = d {
                    if let Some(st) = dest_error(errs, a.addr) {
                        out.put_u8(a.ton);
                        out.put_u8(a.npi);
                        out.put_slice(a.addr);
                        out.put_u8(0);
                        out.put_u32(st);
                        unsuccess = unsuccess.saturating_add(1);
                    }
                }
            }
        }
        out[count_at] = unsuccess;
        let len = (out.len() - start) as u32;
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }

    fn query(&mut self, f: &[u8], seq: u32) {
        let body = f.get(HEADER_LEN..).unwrap_or(&[]);
        let Some(mid) = cstr(body, 65) else {
            return put_local_error_resp(&mut self.out, cmd::QUERY_SM, status::ESME_RINVMSGLEN, seq);
        };
        let out = &mut self.out;
        let len = HEADER_LEN + mid.len() + 1 + 1 + 2;
        out.reserve(len);
        out.put_u32(len as u32);
        out.put_u32(cmd::QUERY_SM_RESP);
        out.put_u32(status::ESME_ROK);
        out.put_u32(seq);
        out.put_slice(mid);
        out.put_u8(0);
        out.put_u8(0); // final_date ""
        out.put_u8(2); // message_state DELIVERED
        out.put_u8(0); // error_code
    }

    /// Appends frames handed over by another task, assigning this session's sequence numbers.
    fn push_outbound(&mut self, mut m: BytesMut) {
        let mut pos = 0;
        while let Some(len) = be32_at(&m, pos) {
            let len = len as usize;
            if len < HEADER_LEN || m.len() - pos < len {
                break;
            }
            let s = self.next_seq();
            set_sequence(&mut m[pos..], s);
            pos += len;
        }
        self.out.extend_from_slice(&m[..pos]);
    }

    /// Hands this batch's receipts to a bound RX/TRX session of the same system_id.
    /// Receipts are dropped when there is none. False: killed while waiting.
    async fn send_to_sibling(&mut self, kill: &mut watch::Receiver<u64>, hold: bool) -> bool {
        let cap = self.sib_out.len();
        let frames = std::mem::replace(&mut self.sib_out, BytesMut::with_capacity(cap));
        let n = std::mem::take(&mut self.n_sib_receipts);
        self.rr = self.rr.wrapping_add(1);
        let Some(tx) = self.shared.pick_receiver(Some(&self.system_id), self.conn_id, self.rr) else {
            return true;
        };
        let sent = tokio::select! {
            r = tx.send(Outbound { frames, hold }) => r.is_ok(),
            _ = kill.changed() => return false,
        };
        if sent {
            self.shared.stats.receipts_sent.fetch_add(n, Ordering::Relaxed);
        }
        true
    }
}

#[inline]
fn be32_at(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// A C-octet-string at the start of `b` of at most `max` bytes including the NUL.
fn cstr(b: &[u8], max: usize) -> Option<&[u8]> {
    let lim = b.len().min(max);
    let n = b.get(..lim)?.iter().position(|&c| c == 0)?;
    b.get(..n)
}

#[inline]
fn dest_error(errs: &HashMap<String, u32>, addr: &[u8]) -> Option<u32> {
    if errs.is_empty() {
        return None;
    }
    std::str::from_utf8(addr).ok().and_then(|a| errs.get(a)).copied()
}

/// Lowercase hex without leading zeros (at most 16 digits).
#[inline]
fn hex_id(v: u64, buf: &mut [u8; 16]) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = if v == 0 { 1 } else { (64 - v.leading_zeros() as usize).div_ceil(4) };
    for (i, d) in buf.iter_mut().take(digits).enumerate() {
        *d = HEX[((v >> (4 * (digits - 1 - i))) & 0xF) as usize];
    }
    &buf[..digits]
}

/// Appends a delivery receipt deliver_sm for the submitted message `v`.
fn put_receipt(out: &mut BytesMut, seq: u32, v: &MessageView<'_>, msg_id: &[u8], date: &[u8; 10]) {
    let src = &v.destination;
    let dst = &v.source;
    let sa = &src.addr[..src.addr.len().min(20)];
    let da = &dst.addr[..dst.addr.len().min(20)];
    let text = if v.data_coding == 0 { &v.short_message[..v.short_message.len().min(20)] } else { &[][..] };
    out.reserve(200 + sa.len() + da.len() + 2 * msg_id.len());
    let start = out.len();
    out.put_u32(0);
    out.put_u32(cmd::DELIVER_SM);
    out.put_u32(status::ESME_ROK);
    out.put_u32(seq);
    out.put_u8(0); // service_type
    out.put_u8(src.ton);
    out.put_u8(src.npi);
    out.put_slice(sa);
    out.put_u8(0);
    out.put_u8(dst.ton);
    out.put_u8(dst.npi);
    out.put_slice(da);
    out.put_u8(0);
    out.put_u8(0x04); // esm_class: SMSC delivery receipt
    out.put_slice(&[0, 0, 0, 0]); // protocol_id, priority_flag, schedule_delivery_time, validity_period
    out.put_slice(&[0, 0, 0, 0]); // registered_delivery, replace_if_present, data_coding, sm_default_msg_id
    let sm_len_at = out.len();
    out.put_u8(0);
    out.put_slice(b"id:");
    out.put_slice(msg_id);
    out.put_slice(b" sub:001 dlvrd:001 submit date:");
    out.put_slice(date);
    out.put_slice(b" done date:");
    out.put_slice(date);
    out.put_slice(b" stat:DELIVRD err:000 text:");
    out.put_slice(text);
    let sm_len = out.len() - sm_len_at - 1;
    out[sm_len_at] = sm_len.min(255) as u8;
    out.put_u16(tlv::RECEIPTED_MESSAGE_ID);
    out.put_u16(msg_id.len() as u16 + 1);
    out.put_slice(msg_id);
    out.put_u8(0);
    out.put_u16(tlv::MESSAGE_STATE);
    out.put_u16(1);
    out.put_u8(2); // DELIVERED
    let len = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// The current UTC time as YYMMDDhhmm.
fn smpp_date_now() -> [u8; 10] {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    smpp_date(secs)
}

fn smpp_date(unix_secs: u64) -> [u8; 10] {
    let (y, m, d) = crate::config::civil_from_days((unix_secs / 86_400) as i64);
    let rem = unix_secs % 86_400;
    let parts = [y.rem_euclid(100) as u64, m as u64, d as u64, rem / 3600, (rem % 3600) / 60];
    let mut out = [0u8; 10];
    for (i, p) in parts.iter().enumerate() {
        out[2 * i] = b'0' + (p / 10 % 10) as u8;
        out[2 * i + 1] = b'0' + (p % 10) as u8;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smpp::pdu::encode_bind;
    use crate::smpp::peek::resp_message_id;
    use crate::smpp::{command_id, command_status, sequence};

    const T: Duration = Duration::from_secs(2);

    struct Client {
        s: TcpStream,
        buf: BytesMut,
        framer: Framer,
    }

    impl Client {
        async fn connect(addr: SocketAddr) -> Client {
            let s = tokio::time::timeout(T, TcpStream::connect(addr)).await.unwrap().unwrap();
            Client { s, buf: BytesMut::with_capacity(4096), framer: Framer::new(1 << 20) }
        }
        async fn send(&mut self, b: &[u8]) {
            tokio::time::timeout(T, self.s.write_all(b)).await.unwrap().unwrap();
        }
        /// Next frame, None on EOF or after `wait`.
        async fn recv_within(&mut self, wait: Duration) -> Option<BytesMut> {
            let deadline = Instant::now() + wait;
            loop {
                if let Next::Frame(n) = self.framer.next(&self.buf) {
                    return Some(self.buf.split_to(n));
                }
                match tokio::time::timeout_at(deadline, self.s.read_buf(&mut self.buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
                    Ok(Ok(_)) => {}
                }
            }
        }
        async fn recv(&mut self) -> BytesMut {
            self.recv_within(T).await.expect("expected a frame")
        }
        async fn bind(&mut self, bt: BindType, sid: &str, pw: &str) -> u32 {
            self.send(&encode_bind(bt, 1, sid, pw)).await;
            let r = self.recv().await;
            assert_eq!(command_id(&r), bt.command_id() | RESP_BIT);
            assert_eq!(sequence(&r), 1);
            command_status(&r)
        }
        async fn expect_eof(&mut self) {
            let mut scratch = [0u8; 256];
            let r = tokio::time::timeout(T, self.s.read(&mut scratch)).await.expect("no EOF");
            assert!(matches!(r, Ok(0) | Err(_)), "expected EOF, got {r:?}");
        }
    }

    fn enquire(seq: u32) -> BytesMut {
        let mut b = BytesMut::new();
        put_header_only(&mut b, cmd::ENQUIRE_LINK, 0, seq);
        b
    }

    async fn sim(f: impl FnOnce(&mut SimConfig)) -> SimHandle {
        let mut cfg = SimConfig::default();
        f(&mut cfg);
        start(cfg).await.unwrap()
    }

    #[tokio::test]
    async fn submit_gets_resp_then_receipt_on_same_trx() {
        let h = sim(|_| {}).await;
        let mut c = Client::connect(h.local_addr).await;
        assert_eq!(c.bind(BindType::Transceiver, "acme", "pw").await, 0);
        assert_eq!(h.sessions(), 1);
        let sub = SubmitBuilder::new("ACME", "8613800138000")
            .registered_delivery(1)
            .short_message(b"hello receipt world!!")
            .build(7);
        c.send(&sub).await;
        let r = c.recv().await;
        assert_eq!(command_id(&r), cmd::SUBMIT_SM_RESP);
        assert_eq!((command_status(&r), sequence(&r)), (0, 7));
        let mid = resp_message_id(&r).to_vec();
        assert!(!mid.is_empty() && mid.len() <= 16);
        assert!(mid.iter().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        let d = c.recv().await;
        assert_eq!(command_id(&d), cmd::DELIVER_SM);
        assert_eq!(sequence(&d), 1);
        let v = peek::message(&d).unwrap();
        assert_eq!(v.esm_class, 0x04);
        assert!(v.is_receipt());
        assert_eq!(v.source.addr, b"8613800138000");
        assert_eq!((v.source.ton, v.source.npi), (1, 1));
        assert_eq!(v.destination.addr, b"ACME");
        assert_eq!(v.tlv(tlv::RECEIPTED_MESSAGE_ID).unwrap(), [&mid[..], b"\0"].concat());
        assert_eq!(v.tlv(tlv::MESSAGE_STATE), Some(&[2u8][..]));
        let text = std::str::from_utf8(v.short_message).unwrap();
        assert!(
            text.starts_with(&format!("id:{} sub:001 dlvrd:001 submit date:", std::str::from_utf8(&mid).unwrap())),
            "{text}"
        );
        assert!(text.contains(" stat:DELIVRD err:000 text:hello receipt world!"), "{text}");
        assert!(text.ends_with("text:hello receipt world!"), "{text}");
        // A second submit gets a different id; registered_delivery 0 gets no receipt.
        c.send(&SubmitBuilder::new("ACME", "1").build(8)).await;
        c.send(&enquire(9)).await;
        let r2 = c.recv().await;
        assert_ne!(resp_message_id(&r2), &mid[..]);
        assert_eq!(command_id(&c.recv().await), cmd::ENQUIRE_LINK_RESP);
        // Ack the receipt; unbind closes.
        let mut ack = BytesMut::new();
        put_resp_with_id(&mut ack, cmd::DELIVER_SM_RESP, 0, 1, b"");
        put_header_only(&mut ack, cmd::UNBIND, 0, 10);
        c.send(&ack).await;
        let u = c.recv().await;
        assert_eq!((command_id(&u), sequence(&u)), (cmd::UNBIND_RESP, 10));
        c.expect_eof().await;
        assert_eq!(h.stats.submits.load(Ordering::Relaxed), 2);
        assert_eq!(h.stats.receipts_sent.load(Ordering::Relaxed), 1);
        assert_eq!(h.stats.enquire_links.load(Ordering::Relaxed), 1);
        assert_eq!(h.stats.unbinds.load(Ordering::Relaxed), 1);
        assert_eq!(h.stats.resps_received.load(Ordering::Relaxed), 1);
        h.shutdown().await;
    }

    #[tokio::test]
    async fn dest_errors_answer_with_status_and_no_receipt() {
        let h = sim(|c| {
            c.dest_errors.insert("999".into(), status::ESME_RINVDSTADR);
        })
        .await;
        let mut c = Client::connect(h.local_addr).await;
        assert_eq!(c.bind(BindType::Transceiver, "acme", "pw").await, 0);
        c.send(&SubmitBuilder::new("ACME", "999").registered_delivery(1).build(2)).await;
        c.send(&enquire(3)).await;
        let r = c.recv().await;
        assert_eq!(
            (command_id(&r), command_status(&r), sequence(&r)),
            (cmd::SUBMIT_SM_RESP, status::ESME_RINVDSTADR, 2)
        );
        assert_eq!(command_id(&c.recv().await), cmd::ENQUIRE_LINK_RESP);
        h.shutdown().await;
    }

    #[tokio::test]
    async fn tx_receipt_goes_to_parallel_rx_bind() {
        let h = sim(|_| {}).await;
        let mut tx = Client::connect(h.local_addr).await;
        let mut rx = Client::connect(h.local_addr).await;
        let mut other = Client::connect(h.local_addr).await;
        assert_eq!(tx.bind(BindType::Transmitter, "acme", "pw").await, 0);
        assert_eq!(rx.bind(BindType::Receiver, "acme", "pw").await, 0);
        assert_eq!(other.bind(BindType::Receiver, "other", "pw").await, 0);
        assert_eq!(h.sessions(), 3);
        tx.send(&SubmitBuilder::new("ACME", "8613800138000").registered_delivery(1).build(5)).await;
        let r = tx.recv().await;
        assert_eq!((command_id(&r), command_status(&r)), (cmd::SUBMIT_SM_RESP, 0));
        let d = rx.recv().await;
        assert_eq!((command_id(&d), sequence(&d)), (cmd::DELIVER_SM, 1));
        let v = peek::message(&d).unwrap();
        assert_eq!(v.tlv(tlv::RECEIPTED_MESSAGE_ID).unwrap(), [resp_message_id(&r), b"\0"].concat());
        // Nothing for the TX itself nor for another system_id.
        assert!(tx.recv_within(Duration::from_millis(100)).await.is_none());
        assert!(other.recv_within(Duration::from_millis(50)).await.is_none());
        // A receiver may not submit.
        rx.send(&SubmitBuilder::new("ACME", "1").build(6)).await;
        let e = rx.recv().await;
        assert_eq!((command_id(&e), command_status(&e)), (cmd::SUBMIT_SM_RESP, status::ESME_RINVBNDSTS));
        h.shutdown().await;
    }

    #[tokio::test]
    async fn inject_mo_reaches_rx_session() {
        let h = sim(|_| {}).await;
        assert!(!h.inject_mo(None, "8613800138000", "1069", 0, b"STOP"));
        let mut rx = Client::connect(h.local_addr).await;
        assert_eq!(rx.bind(BindType::Receiver, "acme", "pw").await, 0);
        assert!(!h.inject_mo(Some("nobody"), "8613800138000", "1069", 0, b"STOP"));
        assert!(h.inject_mo(Some("acme"), "8613800138000", "1069", 8, &[0x90, 0x00]));
        assert!(h.inject_mo(None, "8613800138001", "1069", 0, b"STOP"));
        for (i, (src, dc, sm)) in
            [("8613800138000", 8u8, &[0x90u8, 0x00][..]), ("8613800138001", 0, b"STOP")].into_iter().enumerate()
        {
            let d = rx.recv().await;
            assert_eq!((command_id(&d), sequence(&d)), (cmd::DELIVER_SM, i as u32 + 1));
            let v = peek::message(&d).unwrap();
            assert_eq!(v.esm_class, 0);
            assert_eq!(v.source.addr, src.as_bytes());
            assert_eq!(v.destination.addr, b"1069");
            assert_eq!((v.data_coding, v.short_message), (dc, sm));
        }
        assert_eq!(h.stats.mo_sent.load(Ordering::Relaxed), 2);
        h.shutdown().await;
    }

    #[tokio::test]
    async fn oversized_pdu_gets_generic_nack_and_session_lives() {
        let h = sim(|c| c.max_pdu_bytes = 1024).await;
        let mut c = Client::connect(h.local_addr).await;
        assert_eq!(c.bind(BindType::Transceiver, "acme", "pw").await, 0);
        let mut big = BytesMut::new();
        big.put_u32(5000);
        big.put_u32(cmd::SUBMIT_SM);
        big.put_u32(0);
        big.put_u32(42);
        big.resize(5000, 0xAB);
        c.send(&big[..3000]).await;
        let n = c.recv().await;
        assert_eq!(
            (command_id(&n), command_status(&n), sequence(&n)),
            (cmd::GENERIC_NACK, status::ESME_RINVCMDLEN, 42)
        );
        c.send(&big[3000..]).await;
        c.send(&enquire(43)).await;
        let e = c.recv().await;
        assert_eq!((command_id(&e), sequence(&e)), (cmd::ENQUIRE_LINK_RESP, 43));
        // A length below 16 is answered and closes the session.
        c.send(&[0, 0, 0, 8, 0, 0, 0, 0x15, 0, 0, 0, 0, 0, 0, 0, 44]).await;
        let n = c.recv().await;
        assert_eq!((command_id(&n), command_status(&n)), (cmd::GENERIC_NACK, status::ESME_RINVCMDLEN));
        c.expect_eof().await;
        h.shutdown().await;
    }

    #[tokio::test]
    async fn refuse_binds_and_credentials() {
        let h = sim(|c| c.refuse_binds = Some(status::ESME_RBINDFAIL)).await;
        let mut c = Client::connect(h.local_addr).await;
        assert_eq!(c.bind(BindType::Transmitter, "acme", "pw").await, status::ESME_RBINDFAIL);
        assert_eq!(h.sessions(), 0);
        h.shutdown().await;

        let h = sim(|c| c.credentials = Some(vec![("acme".into(), "secret".into())])).await;
        let mut c = Client::connect(h.local_addr).await;
        assert_eq!(c.bind(BindType::Transmitter, "nobody", "secret").await, status::ESME_RINVSYSID);
        assert_eq!(c.bind(BindType::Transmitter, "acme", "wrong").await, status::ESME_RINVPASWD);
        assert_eq!(c.bind(BindType::Transmitter, "acme", "secret").await, 0);
        assert_eq!(c.bind(BindType::Transmitter, "acme", "secret").await, status::ESME_RALYBND);
        assert_eq!(h.stats.binds.load(Ordering::Relaxed), 1);
        h.shutdown().await;
    }

    #[tokio::test]
    async fn before_bind_and_unknown_commands() {
        let h = sim(|c| c.record = true).await;
        let mut c = Client::connect(h.local_addr).await;
        c.send(&SubmitBuilder::new("a", "b").build(1)).await;
        c.send(&enquire(2)).await;
        let mut unknown = BytesMut::new();
        put_header_only(&mut unknown, 0x0000_0999, 0, 3);
        c.send(&unknown).await;
        let r = c.recv().await;
        assert_eq!(
            (command_id(&r), command_status(&r), sequence(&r)),
            (cmd::SUBMIT_SM_RESP, status::ESME_RINVBNDSTS, 1)
        );
        assert_eq!(command_id(&c.recv().await), cmd::ENQUIRE_LINK_RESP);
        let n = c.recv().await;
        assert_eq!((command_id(&n), command_status(&n), sequence(&n)), (cmd::GENERIC_NACK, status::ESME_RINVCMDID, 3));
        assert_eq!(c.bind(BindType::Transmitter, "acme", "pw").await, 0);
        // Malformed submits get the peek error's status; then data_sm and query_sm.
        let good = SubmitBuilder::new("src", "dst").short_message(b"hello").build(4);
        let mut short = good[..good.len() - 2].to_vec();
        let l = short.len() as u32;
        short[0..4].copy_from_slice(&l.to_be_bytes());
        c.send(&short).await;
        let r = c.recv().await;
        assert_eq!(
            (command_id(&r), command_status(&r), sequence(&r)),
            (cmd::SUBMIT_SM_RESP, status::ESME_RINVMSGLEN, 4)
        );
        let mut bad = good.clone();
        bad.extend_from_slice(&[1, 2, 3]);
        let l = bad.len() as u32;
        bad[0..4].copy_from_slice(&l.to_be_bytes());
        set_sequence(&mut bad, 5);
        c.send(&bad).await;
        let r = c.recv().await;
        assert_eq!((command_status(&r), sequence(&r)), (status::ESME_RINVTLVSTREAM, 5));
        let mut ds = BytesMut::new();
        ds.put_u32(0);
        ds.put_u32(cmd::DATA_SM);
        ds.put_u32(0);
        ds.put_u32(7);
        ds.put_slice(b"\0\x01\x01src\0\x01\x01dst\0\x00\x00\x00");
        let l = ds.len() as u32;
        ds[0..4].copy_from_slice(&l.to_be_bytes());
        c.send(&ds).await;
        let r = c.recv().await;
        assert_eq!((command_id(&r), command_status(&r), sequence(&r)), (cmd::DATA_SM_RESP, 0, 7));
        assert!(!resp_message_id(&r).is_empty());
        let mut q = BytesMut::new();
        q.put_u32(0);
        q.put_u32(cmd::QUERY_SM);
        q.put_u32(0);
        q.put_u32(6);
        q.put_slice(b"abc\0\0\0x\0");
        let l = q.len() as u32;
        q[0..4].copy_from_slice(&l.to_be_bytes());
        c.send(&q).await;
        let r = c.recv().await;
        assert_eq!((command_id(&r), sequence(&r)), (cmd::QUERY_SM_RESP, 6));
        assert_eq!(&r[16..], b"abc\0\0\x02\0");
        let rec = h.recorded();
        assert_eq!(rec.len(), 8);
        assert_eq!(rec[0].0, "");
        assert_eq!(rec[3].0, "acme");
        assert_eq!(&rec[7].1[..], &q[..]);
        h.shutdown().await;
    }

    #[tokio::test]
    async fn submit_multi_lists_unsuccessful_dests() {
        let h = sim(|c| {
            c.dest_errors.insert("222".into(), 0x0B);
            c.record = true;
        })
        .await;
        let mut c = Client::connect(h.local_addr).await;
        assert_eq!(c.bind(BindType::Transmitter, "acme", "pw").await, 0);
        let mut m = BytesMut::new();
        m.put_u32(0);
        m.put_u32(cmd::SUBMIT_MULTI);
        m.put_u32(0);
        m.put_u32(9);
        m.put_slice(b"\0\x00\x01src\0");
        m.put_u8(2); // number_of_dests
        m.put_slice(b"\x01\x01\x01111\0");
        m.put_slice(b"\x01\x01\x01222\0");
        m.put_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        m.put_slice(b"hi");
        let l = m.len() as u32;
        m[0..4].copy_from_slice(&l.to_be_bytes());
        c.send(&m).await;
        let r = c.recv().await;
        assert_eq!((command_id(&r), command_status(&r), sequence(&r)), (cmd::SUBMIT_MULTI_RESP, 0, 9));
        let mid = resp_message_id(&r);
        let rest = &r[16 + mid.len() + 1..];
        assert_eq!(rest, b"\x01\x01\x01222\0\x00\x00\x00\x0B");
        let rec = h.recorded();
        assert_eq!(rec.len(), 2);
        assert_eq!(rec[0].0, "acme");
        assert_eq!(&rec[1].1[..], &m[..]);
        h.shutdown().await;
    }

    #[tokio::test]
    async fn kill_unbind_all_and_response_delay() {
        let h = sim(|c| c.response_delay = Duration::from_millis(100)).await;
        let mut a = Client::connect(h.local_addr).await;
        assert_eq!(a.bind(BindType::Transceiver, "acme", "pw").await, 0);
        let t0 = Instant::now();
        a.send(&SubmitBuilder::new("ACME", "1").registered_delivery(1).build(2)).await;
        let r = a.recv().await;
        assert!(t0.elapsed() >= Duration::from_millis(90));
        assert_eq!(command_id(&r), cmd::SUBMIT_SM_RESP);
        assert_eq!(command_id(&a.recv().await), cmd::DELIVER_SM);
        // SMSC-initiated unbind, answered: the session closes.
        h.unbind_all();
        let u = a.recv().await;
        assert_eq!((command_id(&u), sequence(&u)), (cmd::UNBIND, 2));
        let mut ur = BytesMut::new();
        put_header_only(&mut ur, cmd::UNBIND_RESP, 0, 2);
        a.send(&ur).await;
        a.expect_eof().await;
        // Crash: connections drop, listener stays.
        let mut b = Client::connect(h.local_addr).await;
        assert_eq!(b.bind(BindType::Transceiver, "acme", "pw").await, 0);
        h.kill_connections();
        b.expect_eof().await;
        let mut c = Client::connect(h.local_addr).await;
        assert_eq!(c.bind(BindType::Transceiver, "acme", "pw").await, 0);
        for _ in 0..50 {
            if h.sessions() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(h.sessions(), 1);
        let addr = h.local_addr;
        h.shutdown().await;
        c.expect_eof().await;
        assert!(TcpStream::connect(addr).await.is_err());
    }

    #[test]
    fn helpers() {
        let mut b = [0u8; 16];
        assert_eq!(hex_id(0, &mut b), b"0");
        assert_eq!(hex_id(0x1f, &mut b), b"1f");
        assert_eq!(hex_id(u64::MAX, &mut b), b"ffffffffffffffff");
        assert_eq!(&smpp_date(0), b"7001010000");
        // 2024-02-29 23:59 UTC
        assert_eq!(&smpp_date(1_709_251_140), b"2402292359");
        assert_eq!(cstr(b"ab\0c", 65), Some(&b"ab"[..]));
        assert_eq!(cstr(b"abc", 65), None);
        assert_eq!(be32_at(&[0, 0, 1], 0), None);
    }

    /// Throughput check (responses and, with `receipts`, TRX receipts):
    /// `cargo test --release --lib sim::tests::throughput -- --ignored --nocapture`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore]
    async fn throughput() {
        for receipts in [false, true] {
            let h = sim(|c| c.receipts = receipts).await;
            let conns = 3;
            let per_conn: u64 = 2_000_000;
            let t0 = std::time::Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..conns {
                let addr = h.local_addr;
                tasks.push(tokio::spawn(async move {
                    let mut c = Client::connect(addr).await;
                    assert_eq!(c.bind(BindType::Transceiver, "load", "pw").await, 0);
                    let one = SubmitBuilder::new("ACME", "8613800138000")
                        .registered_delivery(1)
                        .short_message(b"hello world")
                        .build(1);
                    let mut chunk = BytesMut::new();
                    for _ in 0..1000 {
                        chunk.extend_from_slice(&one);
                    }
                    let (mut rd, mut wr) = c.s.into_split();
                    let w = tokio::spawn(async move {
                        for _ in 0..per_conn / 1000 {
                            wr.write_all(&chunk).await.unwrap();
                        }
                        wr
                    });
                    let expect = if receipts { 2 * per_conn } else { per_conn };
                    let mut buf = BytesMut::with_capacity(1 << 20);
                    let mut framer = Framer::new(4096);
                    let (mut got, mut ok_resps) = (0u64, 0u64);
                    while got < expect {
                        buf.reserve(1 << 16);
                        if rd.read_buf(&mut buf).await.unwrap() == 0 {
                            break;
                        }
                        let mut pos = 0;
                        while let Next::Frame(n) = framer.next(&buf[pos..]) {
                            let f = &buf[pos..pos + n];
                            if command_id(f) == cmd::SUBMIT_SM_RESP && command_status(f) == 0 {
                                ok_resps += 1;
                            }
                            pos += n;
                            got += 1;
                        }
                        buf.advance(pos);
                    }
                    let _wr = w.await.unwrap();
                    assert_eq!(ok_resps, per_conn);
                    got
                }));
            }
            let mut total = 0;
            for t in tasks {
                total += t.await.unwrap();
            }
            let dt = t0.elapsed();
            let submits = h.stats.submits.load(Ordering::Relaxed);
            assert_eq!(submits, conns * per_conn);
            println!(
                "receipts={receipts}: {submits} submits, {total} frames back in {dt:?}: {:.0} submits/s",
                submits as f64 / dt.as_secs_f64()
            );
            h.shutdown().await;
        }
    }
}
