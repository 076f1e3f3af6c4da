//! One simulator connection: read a batch, handle every frame in it, write what it produced.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::debug;

use super::receipt::{dest_error, hex_id, put_receipt, smpp_date_now};
use super::{lock, Entry, Outbound, Shared, SimFault};
use crate::smpp::frame::{Framer, Next};
use crate::smpp::pdu::{decode_bind, encode_bind_resp, put_header_only, put_local_error_resp, put_resp_with_id};
use crate::smpp::peek::{self, MultiDest};
use crate::smpp::{
    be32, cmd, is_known_command, sequence, set_sequence, status, BindType, Header, HEADER_LEN, RESP_BIT,
};

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

pub(super) async fn run_conn(
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

/// [`SimFault::Garbage`]'s answer to a read batch: 64 bytes of an xorshift stream seeded by
/// the connection, whose first word (read as a command_length) is over any PDU cap.
fn put_garbage(out: &mut BytesMut, conn_id: u64) {
    let mut x = conn_id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    out.put_u32(0xFFFF_FF00 | (x as u32 & 0xFF));
    for _ in 0..15 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.put_u32(x as u32);
    }
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
    n_deliver_acks: u64,
    n_deliver_nacks: u64,
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
            n_deliver_acks: 0,
            n_deliver_nacks: 0,
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
        match self.shared.fault() {
            SimFault::None => {}
            SimFault::Silent => return inbuf.clear(),
            SimFault::Garbage => {
                inbuf.clear();
                return put_garbage(&mut self.out, self.conn_id);
            }
        }
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
                    let seq = if avail.len() >= HEADER_LEN { sequence(avail) } else { 0 };
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
            (&mut self.n_deliver_acks, &st.deliver_acks),
            (&mut self.n_deliver_nacks, &st.deliver_nacks),
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
            cmd::DELIVER_SM_RESP => {
                self.n_resps += 1;
                if h.command_status == status::ESME_ROK {
                    self.n_deliver_acks += 1;
                } else {
                    self.n_deliver_nacks += 1;
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
                debug!(conn = self.conn_id, system_id = %req.map(|r| r.system_id).unwrap_or_default(), status = st, "sim bind refused");
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
        let Ok(mid) = peek::query_message_id(f) else {
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
        while m.len() - pos >= HEADER_LEN {
            let len = be32(&m, pos) as usize;
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
