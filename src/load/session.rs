//! One load session: connect, bind, send (window-bound, optionally rate-capped or paced by
//! the recording), drain, wait for receipts, unbind.

use std::io::ErrorKind;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use hdrhistogram::Histogram;
use tokio::net::TcpStream;
use tokio::time::{Instant, Interval, MissedTickBehavior, Sleep};

use super::rate::Bucket;
use super::templates::{write_digits, Templates, XorShift, RANDOM_POOL};
use super::*;
use crate::relay::transport::Transport;
use crate::smpp::frame::{Framer, Next};
use crate::smpp::pdu::{encode_bind, put_header_only, put_resp_with_id};
use crate::smpp::{cmd, peek, set_sequence, status, Header, RESP_BIT};
use crate::{cmpp, cmpp::pdu as cpdu};

/// TCP connect timeout per session.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a session waits for its bind response.
const BIND_TIMEOUT: Duration = Duration::from_secs(5);
/// After the sending phase, how long a session waits for outstanding submit_sm_resp.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a session waits for unbind_resp.
const UNBIND_TIMEOUT: Duration = Duration::from_secs(1);
/// A write that makes no progress for this long ends the session.
const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Sending phase: no byte from the peer for this long with submits in flight ends the session
/// (only matters when `duration` is zero, i.e. no time cap).
const READ_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Polling period of the receipt phase (checks the global receipt tally).
const RECEIPT_POLL: Duration = Duration::from_millis(10);
/// Largest PDU accepted from the peer.
pub(super) const MAX_PDU_BYTES: usize = 64 * 1024;
/// Read granularity.
pub(super) const READ_CHUNK: usize = 64 * 1024;

/// Per-session tallies, merged at the end.
pub(super) struct Stats {
    pub(super) sent: u64,
    pub(super) messages: u64,
    pub(super) responses: u64,
    pub(super) accepted: u64,
    /// Count by status for status < 256 (the common case, no map on the hot path).
    pub(super) status_small: Vec<u64>,
    pub(super) status_other: Vec<(u32, u64)>,
    pub(super) receipts: u64,
    pub(super) mo: u64,
    pub(super) expect_mismatches: u64,
    /// Submits whose ring slot was reused before they were answered (no latency recorded).
    pub(super) evicted: u64,
    pub(super) bind_failures: u64,
    /// Replay: responses per (recorded status, replayed status).
    pub(super) pairs: Vec<((Option<u32>, u32), u64)>,
    pub(super) hist: Histogram<u64>,
    pub(super) errors: Vec<String>,
    pub(super) first_send: Option<Instant>,
    pub(super) last_resp: Option<Instant>,
}

impl Stats {
    pub(super) fn new() -> Stats {
        Stats {
            sent: 0,
            messages: 0,
            responses: 0,
            accepted: 0,
            status_small: vec![0; 256],
            status_other: Vec::new(),
            receipts: 0,
            mo: 0,
            expect_mismatches: 0,
            evicted: 0,
            bind_failures: 0,
            pairs: Vec::new(),
            hist: Histogram::new_with_bounds(1, 60_000_000, 3).expect("static histogram bounds are valid"),
            errors: Vec::new(),
            first_send: None,
            last_resp: None,
        }
    }

    #[inline]
    fn count_status(&mut self, s: u32, n: u64) {
        match self.status_small.get_mut(s as usize) {
            Some(c) => *c += n,
            None => match self.status_other.iter_mut().find(|(k, _)| *k == s) {
                Some((_, c)) => *c += n,
                None => self.status_other.push((s, n)),
            },
        }
    }

    /// Replay tally; a short list (a handful of distinct pairs in practice), linear search.
    fn count_pair(&mut self, key: (Option<u32>, u32), n: u64) {
        match self.pairs.iter_mut().find(|(k, _)| *k == key) {
            Some((_, c)) => *c += n,
            None => self.pairs.push((key, n)),
        }
    }

    pub(super) fn merge(&mut self, o: &Stats) {
        self.sent += o.sent;
        self.messages += o.messages;
        self.responses += o.responses;
        self.accepted += o.accepted;
        for (s, &n) in o.status_small.iter().enumerate() {
            self.status_small[s] += n;
        }
        for &(s, n) in &o.status_other {
            self.count_status(s, n);
        }
        self.receipts += o.receipts;
        self.mo += o.mo;
        self.expect_mismatches += o.expect_mismatches;
        self.evicted += o.evicted;
        self.bind_failures += o.bind_failures;
        for &(k, n) in &o.pairs {
            self.count_pair(k, n);
        }
        let _ = self.hist.add(&o.hist);
    }
}

pub(super) async fn session_task(
    idx: usize,
    guard: SenderGuard,
    cfg: Arc<LoadConfig>,
    tpl: Arc<Templates>,
    shared: Arc<Shared>,
) -> Stats {
    let mut st = Stats::new();
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(cfg.target)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            st.errors.push(format!("session {idx}: connect {}: {e}", cfg.target));
            return st;
        }
        Err(_) => {
            st.errors.push(format!("session {idx}: connect {}: timed out after {:?}", cfg.target, CONNECT_TIMEOUT));
            return st;
        }
    };
    let stream = match &cfg.tls {
        None => Transport::tcp(stream),
        Some(client) => match client.connect(stream, CONNECT_TIMEOUT).await {
            Ok(t) => Transport::Tls(Box::new(t)),
            Err(e) => {
                st.errors.push(format!("session {idx}: TLS handshake with {}: {e}", cfg.target));
                return st;
            }
        },
    };
    let mut s = Session::new(idx, &cfg, &tpl, &shared, stream, st);
    if let Err(e) = s.drive(guard).await {
        s.st.errors.push(format!("session {idx}: {e}"));
    }
    if s.st.evicted > 0 {
        s.st.errors.push(format!(
            "session {idx}: {} submits outstanding past 4 windows; their latency was not recorded",
            s.st.evicted
        ));
    }
    s.st
}

/// Send time of an in-flight submit_sm.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// 0 = free.
    seq: u32,
    tpl: u32,
    sent_ns: u64,
}

/// Why [`Session::pump`] returned.
enum Wake {
    /// Bytes were read and processed.
    Data,
    /// The wake-up time passed.
    Timer,
    /// The rate ticker fired.
    Tick,
    /// The peer closed the connection.
    Eof,
}

struct Session<'a> {
    idx: usize,
    cfg: &'a LoadConfig,
    tpl: &'a Templates,
    shared: &'a Shared,
    stream: Transport,
    inbuf: BytesMut,
    out: BytesMut,
    framer: Framer,
    /// `--cmpp`: the CMPP framer (12-byte headers) used instead of `framer`.
    cmpp_framer: cmpp::frame::Framer,
    ring: Vec<Slot>,
    mask: u32,
    inflight: usize,
    seq: u32,
    tidx: usize,
    msg_ref: u8,
    /// `--destinations`: the random stream and the current message's destination.
    dest_rng: XorShift,
    dest: u64,
    epoch: Instant,
    sleep: Pin<Box<Sleep>>,
    ticker: Option<Interval>,
    /// Coarse time of the last read (updated at most once a second).
    stall_base: Instant,
    bind_seq: u32,
    bind_status: Option<u32>,
    peer_unbound: bool,
    got_unbind_resp: bool,
    published_receipts: u64,
    oversized_reported: bool,
    st: Stats,
}

impl<'a> Session<'a> {
    fn new(
        idx: usize,
        cfg: &'a LoadConfig,
        tpl: &'a Templates,
        shared: &'a Shared,
        stream: Transport,
        st: Stats,
    ) -> Session<'a> {
        let ring_len = (cfg.window.next_power_of_two() * 4).max(64);
        let now = Instant::now();
        Session {
            idx,
            cfg,
            tpl,
            shared,
            stream,
            inbuf: BytesMut::with_capacity(READ_CHUNK * 2),
            out: BytesMut::with_capacity(cfg.window.min(4096) * tpl.max_len.max(64) + 4096),
            framer: Framer::new(MAX_PDU_BYTES),
            cmpp_framer: cmpp::frame::Framer::new(MAX_PDU_BYTES),
            ring: vec![Slot::default(); ring_len],
            mask: (ring_len - 1) as u32,
            inflight: 0,
            seq: 1,
            // Spread sessions over the random pool and over concatenation references.
            tidx: if cfg.scenario.is_none() && cfg.replay.is_none() {
                idx * RANDOM_POOL / cfg.sessions.max(1) % tpl.pdus.len().max(1)
            } else {
                0
            },
            msg_ref: (idx as u8).wrapping_mul(37),
            // Seeded per run as well as per session: runs after runs (benches/e2e_relay.py)
            // must not replay one sequence of numbers, or every frequency cap and same-text
            // check would see the previous run's messages again.
            dest_rng: XorShift(
                0x2545_F491_4F6C_DD1D
                    ^ ((idx as u64 + 1) << 32)
                    ^ std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos() as u64)
                    | 1,
            ),
            dest: 0,
            epoch: now,
            sleep: Box::pin(tokio::time::sleep_until(far_future(now))),
            ticker: None,
            stall_base: now,
            bind_seq: 0,
            bind_status: None,
            peer_unbound: false,
            got_unbind_resp: false,
            published_receipts: 0,
            oversized_reported: false,
            st,
        }
    }

    #[inline]
    fn next_seq(&mut self) -> u32 {
        let s = self.seq;
        self.seq = if s >= 0x7FFF_FFFF { 1 } else { s + 1 };
        s
    }

    /// The whole life of a bound session.
    async fn drive(&mut self, guard: SenderGuard) -> Result<(), String> {
        // Bind (CMPP: CONNECT, the password the shared secret of its authenticator).
        self.bind_seq = self.next_seq();
        match self.cfg.cmpp {
            None => {
                let bind = encode_bind(self.cfg.bind_type, self.bind_seq, &self.cfg.system_id, &self.cfg.password);
                self.out.extend_from_slice(&bind);
            }
            Some(v) => {
                let ts = cmpp::auth::timestamp(crate::time::unix_s_of(crate::time::system_now()));
                let (sp, secret) = (&self.cfg.system_id, &self.cfg.password);
                cmpp::auth::put_connect_as(&mut self.out, self.bind_seq, sp, secret, v.byte(), ts);
            }
        }
        self.flush().await?;
        let bind_end = Instant::now() + BIND_TIMEOUT;
        match self.pump_until(bind_end, |s| s.bind_status.is_some()).await? {
            Some(Wake::Eof) => return Err("peer closed the connection during bind".into()),
            Some(_) => return Err(format!("no bind response within {BIND_TIMEOUT:?}")),
            None => {}
        }
        let bs = self.bind_status.unwrap_or(status::ESME_RSYSERR);
        if bs != status::ESME_ROK {
            self.st.bind_failures += 1;
            return Err(match self.cfg.cmpp {
                None => format!("bind refused: status 0x{bs:08x}"),
                Some(_) => format!("CONNECT refused: Status {bs}"),
            });
        }

        // Send (or, on a receiver bind, listen) and drain.
        if self.cfg.bind_type.can_submit() {
            self.send_phase().await?;
            if self.peer_unbound {
                return self.peer_unbind();
            }
            self.drain_phase().await?;
            if self.peer_unbound {
                return self.peer_unbind();
            }
            self.shared.accepted.fetch_add(self.st.accepted, Ordering::SeqCst);
            drop(guard);
        } else {
            drop(guard);
            self.listen_phase().await?;
            if self.peer_unbound {
                return self.peer_unbind();
            }
        }

        // Receipts.
        if self.cfg.registered_delivery && self.cfg.bind_type.can_receive() {
            self.receipt_phase().await?;
            if self.peer_unbound {
                return self.peer_unbind();
            }
        }

        // Unbind (CMPP: TERMINATE).
        let seq = self.next_seq();
        match self.cfg.cmpp {
            None => put_header_only(&mut self.out, cmd::UNBIND, 0, seq),
            Some(_) => cpdu::put_terminate(&mut self.out, seq),
        }
        self.flush().await?;
        let end = Instant::now() + UNBIND_TIMEOUT;
        if let Some(Wake::Timer) = self.pump_until(end, |s| s.got_unbind_resp || s.peer_unbound).await? {
            return Err(format!("no unbind_resp within {UNBIND_TIMEOUT:?}"));
        }
        if self.peer_unbound {
            self.flush().await?;
        }
        Ok(())
    }

    /// The peer sent unbind: it has been answered (in `out`); send that and stop.
    fn peer_unbind(&mut self) -> Result<(), String> {
        // Best effort: the answer is small and the socket writable in practice.
        let _ = self.stream.try_write(&self.out);
        let _ = self.stream.flush_own();
        self.out.clear();
        Err("peer sent unbind".into())
    }

    /// Sending phase: fill the window, write, read, repeat, until the budget or the time cap
    /// is exhausted.
    async fn send_phase(&mut self) -> Result<(), String> {
        let start = Instant::now();
        let deadline = if self.cfg.duration.is_zero() { far_future(start) } else { start + self.cfg.duration };
        let window = self.cfg.window;
        let mut bucket = self.cfg.rate.map(|r| {
            let rate = r as f64 / self.cfg.sessions as f64;
            Bucket { rate, cap: (rate * 0.01).max(1.0), tokens: 1.0, last: start }
        });
        if bucket.is_some() {
            let mut t = tokio::time::interval(Duration::from_millis(1));
            t.set_missed_tick_behavior(MissedTickBehavior::Delay);
            self.ticker = Some(t);
        }
        self.stall_base = start;
        // Set when no new message may begin (budget or time exhausted); a multi-part message
        // already begun is still finished, until `stop_by`.
        let mut stopping = false;
        let mut stop_by = far_future(start);
        let paced = !self.tpl.due_ns.is_empty();
        let replay_epoch = if paced { *self.shared.replay_epoch.get_or_init(|| start) } else { start };
        loop {
            let now = Instant::now();
            if !stopping && now >= deadline {
                stopping = true;
                stop_by = now + DRAIN_TIMEOUT;
            }
            if self.tidx == self.tpl.pdus.len() || (stopping && self.tpl.pdus[self.tidx].first) {
                break; // (tidx only reaches the end of a `once` list)
            }
            let mut allow = window.saturating_sub(self.inflight);
            if self.tpl.once {
                allow = allow.min(self.tpl.pdus.len() - self.tidx);
            }
            // Replay pacing: only the PDUs already due; otherwise wake when the next one is.
            let mut next_due = None;
            if paced && allow > 0 {
                let rel = (now - replay_epoch).as_nanos() as u64;
                let due = &self.tpl.due_ns[self.tidx..self.tidx + allow];
                let n = due.iter().take_while(|&&d| d <= rel).count();
                if n < allow {
                    next_due = Some(replay_epoch + Duration::from_nanos(due[n]));
                    allow = n;
                }
            }
            let mut token_limited = false;
            if let Some(b) = bucket.as_mut() {
                b.refill(now);
                let t = b.tokens as usize;
                if t < allow {
                    allow = t;
                    token_limited = true;
                }
            }
            if stopping {
                allow = allow.min(self.parts_left());
            } else if allow > 0 {
                let got = self.shared.claim(allow as u64) as usize;
                if got < allow {
                    stopping = true;
                    stop_by = now + DRAIN_TIMEOUT;
                }
                allow = got;
            }
            if allow > 0 {
                self.fill(allow, now);
                if let Some(b) = bucket.as_mut() {
                    b.tokens -= allow as f64;
                }
            }
            if !self.out.is_empty() {
                self.flush().await?;
            }
            if self.tidx == self.tpl.pdus.len() || (stopping && self.tpl.pdus[self.tidx].first) {
                break;
            }
            // Wait for responses (or tokens, or the clock, or the next recorded PDU).
            let mut wake_at = if stopping { stop_by } else { deadline.min(self.stall_base + READ_STALL_TIMEOUT) };
            if let Some(d) = next_due {
                wake_at = wake_at.min(d);
            }
            let need_tick = token_limited && self.inflight < window;
            match self.pump(wake_at, need_tick).await? {
                Wake::Data | Wake::Tick => {}
                Wake::Eof => return Err("peer closed the connection".into()),
                Wake::Timer => {
                    let now = Instant::now();
                    if stopping && now >= stop_by {
                        break;
                    }
                    if !stopping && now < deadline && now >= self.stall_base + READ_STALL_TIMEOUT {
                        if self.inflight > 0 {
                            return Err(format!(
                                "no data from the peer for {READ_STALL_TIMEOUT:?} with {} submits in flight",
                                self.inflight
                            ));
                        }
                        self.stall_base = now;
                    }
                }
            }
            if self.peer_unbound {
                return Ok(());
            }
            // Let other tasks on this worker run when the socket is always ready.
            tokio::task::coop::consume_budget().await;
        }
        self.ticker = None;
        if !self.out.is_empty() {
            self.flush().await?;
        }
        Ok(())
    }

    /// Parts of the current message not yet sent (counting the one at `tidx`).
    fn parts_left(&self) -> usize {
        let pdus = &self.tpl.pdus;
        let mut n = 1;
        while self.tidx + n < pdus.len() && !pdus[self.tidx + n].first {
            n += 1;
        }
        n
    }

    /// Appends `n` submit_sm to `out`, all stamped `now`.
    #[inline]
    fn fill(&mut self, n: usize, now: Instant) {
        let tpl = self.tpl;
        let sent_ns = (now - self.epoch).as_nanos() as u64;
        for _ in 0..n {
            let p = tpl.pdus[self.tidx];
            let seq = self.next_seq();
            let at = self.out.len();
            self.out.extend_from_slice(tpl.frame(&p));
            let f = &mut self.out[at..];
            match self.cfg.cmpp {
                None => set_sequence(f, seq),
                Some(_) => cmpp::set_sequence(f, seq),
            }
            if p.first {
                self.st.messages += 1;
                if p.ref_off != 0 {
                    self.msg_ref = self.msg_ref.wrapping_add(1);
                }
            }
            if p.ref_off != 0 {
                f[p.ref_off as usize] = self.msg_ref;
            }
            if let Some(r) = self.cfg.destinations {
                if p.first {
                    self.dest = r.pick(self.dest_rng.next_u64());
                }
                let at = p.dest_off as usize;
                write_digits(&mut f[at..at + r.digits as usize], self.dest);
            }
            let slot = &mut self.ring[(seq & self.mask) as usize];
            if slot.seq != 0 {
                // Still unanswered after 4 windows: give its slot (and its window place) up.
                self.inflight -= 1;
                self.st.evicted += 1;
            }
            *slot = Slot { seq, tpl: self.tidx as u32, sent_ns };
            self.inflight += 1;
            self.tidx += 1;
            if self.tidx == tpl.pdus.len() && !tpl.once {
                self.tidx = 0;
            }
        }
        self.st.sent += n as u64;
        if self.st.first_send.is_none() {
            self.st.first_send = Some(now);
        }
    }

    /// Waits for the outstanding responses (bounded).
    async fn drain_phase(&mut self) -> Result<(), String> {
        let end = Instant::now() + DRAIN_TIMEOUT;
        if let Some(Wake::Eof) = self.pump_until(end, |s| s.inflight == 0 || s.peer_unbound).await? {
            return Err("peer closed the connection while draining".into());
        }
        Ok(())
    }

    /// Receiver bind: only listen (answering deliver_sm) for `duration`.
    async fn listen_phase(&mut self) -> Result<(), String> {
        let d = if self.cfg.duration.is_zero() { Duration::from_secs(10) } else { self.cfg.duration };
        let end = Instant::now() + d;
        if let Some(Wake::Eof) = self.pump_until(end, |s| s.peer_unbound).await? {
            return Err("peer closed the connection".into());
        }
        Ok(())
    }

    /// Waits until every sender has finished and receipts ≥ accepted (run-wide), or
    /// `receipt_wait` after the last sender finished.
    async fn receipt_phase(&mut self) -> Result<(), String> {
        let start = Instant::now();
        // Safety net in case the senders take unusually long to finish.
        let hard_end = start + self.cfg.receipt_wait + self.cfg.duration + DRAIN_TIMEOUT + WRITE_STALL_TIMEOUT;
        while !self.peer_unbound {
            let now = Instant::now();
            if let Some(&done_at) = self.shared.senders_done_at.get() {
                if self.shared.receipts.load(Ordering::SeqCst) >= self.shared.accepted.load(Ordering::SeqCst)
                    || now >= done_at + self.cfg.receipt_wait
                {
                    break;
                }
            }
            if now >= hard_end {
                break;
            }
            match self.pump((now + RECEIPT_POLL).min(hard_end), false).await? {
                Wake::Data | Wake::Tick => self.flush().await?,
                Wake::Timer => {}
                Wake::Eof => return Err("peer closed the connection while waiting for receipts".into()),
            }
        }
        Ok(())
    }

    /// Reads and answers (flushing after every read) until `done` holds: `None`. Otherwise
    /// the reason it stopped first, [`Wake::Timer`] (`end` passed) or [`Wake::Eof`].
    async fn pump_until(&mut self, end: Instant, done: fn(&Self) -> bool) -> Result<Option<Wake>, String> {
        while !done(self) {
            match self.pump(end, false).await? {
                Wake::Data | Wake::Tick => self.flush().await?,
                w @ (Wake::Timer | Wake::Eof) => return Ok(Some(w)),
            }
        }
        Ok(None)
    }

    /// Reads once (waiting for readiness if needed, until `wake_at` or a ticker tick when
    /// `tick` is set) and processes every complete PDU read.
    async fn pump(&mut self, wake_at: Instant, tick: bool) -> Result<Wake, String> {
        loop {
            self.inbuf.reserve(READ_CHUNK);
            match self.stream.try_read_buf(&mut self.inbuf) {
                Ok(0) => return Ok(Wake::Eof),
                Ok(_) => {
                    let now = Instant::now();
                    if now.duration_since(self.stall_base) > Duration::from_secs(1) {
                        self.stall_base = now;
                    }
                    self.process(now)?;
                    return Ok(Wake::Data);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("read: {e}")),
            }
            if self.sleep.deadline() != wake_at {
                self.sleep.as_mut().reset(wake_at);
            }
            let stream = &self.stream;
            let sleep = &mut self.sleep;
            let ticker = &mut self.ticker;
            tokio::select! {
                biased;
                r = stream.readable() => r.map_err(|e| format!("read: {e}"))?,
                _ = sleep.as_mut() => return Ok(Wake::Timer),
                _ = async { match ticker.as_mut() { Some(t) => { t.tick().await; } None => std::future::pending::<()>().await } }, if tick => return Ok(Wake::Tick),
            }
        }
    }

    /// Writes all of `out` (and, over TLS, every record it became). While the socket is full,
    /// keeps reading (into `inbuf`, processed later) so that a peer blocked on its own writes
    /// cannot deadlock us.
    async fn flush(&mut self) -> Result<(), String> {
        let mut pos = 0;
        loop {
            let stuck = if pos < self.out.len() {
                match self.stream.try_write(&self.out[pos..]) {
                    Ok(n) => {
                        pos += n;
                        false
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => true,
                    Err(e) if e.kind() == ErrorKind::Interrupted => false,
                    Err(e) => return Err(format!("write: {e}")),
                }
            } else if self.stream.wants_write() {
                self.stream.flush_own().map_err(|e| format!("write: {e}"))?;
                self.stream.wants_write()
            } else {
                break;
            };
            if !stuck {
                continue;
            }
            let stream = &self.stream;
            let readable = tokio::time::timeout(WRITE_STALL_TIMEOUT, async {
                tokio::select! {
                    r = stream.writable() => r.map(|()| false),
                    r = stream.readable() => r.map(|()| true),
                }
            })
            .await
            .map_err(|_| format!("write stalled for {WRITE_STALL_TIMEOUT:?}"))?
            .map_err(|e| format!("write: {e}"))?;
            if readable {
                self.inbuf.reserve(READ_CHUNK);
                match self.stream.try_read_buf(&mut self.inbuf) {
                    Ok(0) => return Err("peer closed the connection".into()),
                    Ok(_) => {}
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                    Err(e) => return Err(format!("read: {e}")),
                }
            }
        }
        self.out.clear();
        Ok(())
    }

    /// Handles every complete PDU in `inbuf`; answers go to `out`.
    fn process(&mut self, now: Instant) -> Result<(), String> {
        let now_ns = (now - self.epoch).as_nanos() as u64;
        let inbuf = std::mem::take(&mut self.inbuf);
        let mut pos = 0;
        let mut result = Ok(());
        loop {
            let next = match self.cfg.cmpp {
                None => self.framer.next(&inbuf[pos..]),
                Some(_) => match self.cmpp_framer.next(&inbuf[pos..]) {
                    cmpp::frame::Next::Incomplete => Next::Incomplete,
                    cmpp::frame::Next::Frame(n) => Next::Frame(n),
                    cmpp::frame::Next::Skip(n) => Next::Skip(n),
                    cmpp::frame::Next::TooLong { command_id, sequence, length } => {
                        Next::TooLong { command_id, sequence, length }
                    }
                    cmpp::frame::Next::TooShort { length } => Next::TooShort { length },
                },
            };
            match next {
                Next::Incomplete => break,
                Next::Skip(n) => pos += n,
                Next::Frame(n) => {
                    match self.cfg.cmpp {
                        None => self.on_frame(&inbuf[pos..pos + n], now, now_ns),
                        Some(v) => self.on_cmpp_frame(&inbuf[pos..pos + n], v, now, now_ns),
                    }
                    pos += n;
                }
                Next::TooLong { command_id, sequence, length } => {
                    // CMPP has no generic_nack: the oversized PDU is only skipped.
                    if command_id & RESP_BIT == 0 && self.cfg.cmpp.is_none() {
                        put_header_only(&mut self.out, cmd::GENERIC_NACK, status::ESME_RINVCMDLEN, sequence);
                    }
                    if !self.oversized_reported {
                        self.oversized_reported = true;
                        self.err(format!("peer sent a {length}-byte PDU (0x{command_id:08x}); skipped"));
                    }
                }
                Next::TooShort { length } => {
                    result = Err(format!("peer sent command_length {length}; stream out of sync"));
                    break;
                }
            }
        }
        self.inbuf = inbuf;
        self.inbuf.advance(pos);
        if self.st.receipts != self.published_receipts {
            self.shared.receipts.fetch_add(self.st.receipts - self.published_receipts, Ordering::SeqCst);
            self.published_receipts = self.st.receipts;
        }
        result
    }

    fn err(&mut self, e: String) {
        if self.st.errors.len() < MAX_ERRORS {
            self.st.errors.push(format!("session {}: {e}", self.idx));
        }
    }

    #[inline]
    fn on_frame(&mut self, f: &[u8], now: Instant, now_ns: u64) {
        let h = Header::read(f);
        let seq = h.sequence_number;
        match h.command_id {
            cmd::SUBMIT_SM_RESP | cmd::DATA_SM_RESP | cmd::SUBMIT_MULTI_RESP => {
                self.on_submit_resp(seq, h.command_status, now, now_ns)
            }
            cmd::DELIVER_SM | cmd::DATA_SM => {
                let st = match peek::message(f) {
                    Ok(m) => {
                        if m.is_receipt() {
                            self.st.receipts += 1;
                        } else {
                            self.st.mo += 1;
                        }
                        status::ESME_ROK
                    }
                    Err(e) => e.status(),
                };
                put_resp_with_id(&mut self.out, h.command_id | RESP_BIT, st, seq, b"");
            }
            cmd::ENQUIRE_LINK => put_header_only(&mut self.out, cmd::ENQUIRE_LINK_RESP, 0, seq),
            cmd::UNBIND => {
                put_header_only(&mut self.out, cmd::UNBIND_RESP, 0, seq);
                self.peer_unbound = true;
            }
            cmd::UNBIND_RESP => self.got_unbind_resp = true,
            cmd::GENERIC_NACK => {
                if self.bind_status.is_none() && seq == self.bind_seq {
                    self.bind_status = Some(h.command_status.max(1));
                } else if seq != 0 && self.ring[(seq & self.mask) as usize].seq == seq {
                    self.on_submit_resp(seq, h.command_status, now, now_ns);
                } else {
                    self.err(format!("generic_nack 0x{:08x} for sequence {seq}", h.command_status));
                }
            }
            id if self.bind_status.is_none() && id == self.cfg.bind_type.command_id() | RESP_BIT => {
                self.bind_status = Some(h.command_status);
            }
            cmd::ALERT_NOTIFICATION | cmd::OUTBIND => {}
            id if id & RESP_BIT == 0 => put_header_only(&mut self.out, cmd::GENERIC_NACK, status::ESME_RINVCMDID, seq),
            _ => {} // enquire_link_resp, deliver_sm_resp, …
        }
    }

    /// A PDU from the ISMG side of a `--cmpp` run: SUBMIT_RESP Results are the statuses.
    #[inline]
    fn on_cmpp_frame(&mut self, f: &[u8], v: cmpp::Version, now: Instant, now_ns: u64) {
        let seq = cmpp::sequence(f);
        match cmpp::command_id(f) {
            cmpp::cmd::SUBMIT_RESP => {
                let r = cmpp::peek::submit_resp(f, v).map_or(cmpp::result::BAD_STRUCTURE, |r| r.result);
                self.on_submit_resp(seq, r, now, now_ns);
            }
            cmpp::cmd::DELIVER => {
                let (msg_id, r) = match cmpp::peek::deliver(f, v) {
                    Ok(d) => {
                        if d.is_report() {
                            self.st.receipts += 1;
                        } else {
                            self.st.mo += 1;
                        }
                        (d.msg_id, cmpp::result::OK)
                    }
                    Err(_) => (0, cmpp::result::BAD_STRUCTURE),
                };
                cpdu::put_deliver_resp(&mut self.out, v, seq, msg_id, r);
            }
            cmpp::cmd::ACTIVE_TEST => cpdu::put_active_test_resp(&mut self.out, seq),
            cmpp::cmd::TERMINATE => {
                cpdu::put_terminate_resp(&mut self.out, seq);
                self.peer_unbound = true;
            }
            cmpp::cmd::TERMINATE_RESP => self.got_unbind_resp = true,
            cmpp::cmd::CONNECT_RESP if self.bind_status.is_none() => {
                self.bind_status = Some(cmpp::peek::connect_resp(f, v).map_or(u32::MAX, |r| r.status));
            }
            id if id & cmpp::RESP_BIT == 0 => {
                self.err(format!("the peer sent {} (0x{id:08x}); not answered", cmpp::command_name(id)))
            }
            _ => {} // ACTIVE_TEST_RESP, …
        }
    }

    #[inline]
    fn on_submit_resp(&mut self, seq: u32, st: u32, now: Instant, now_ns: u64) {
        self.st.responses += 1;
        self.st.last_resp = Some(now);
        self.st.count_status(st, 1);
        if st == status::ESME_ROK {
            self.st.accepted += 1;
        }
        let slot = &mut self.ring[(seq & self.mask) as usize];
        if seq != 0 && slot.seq == seq {
            slot.seq = 0;
            let us = (now_ns.saturating_sub(slot.sent_ns) / 1000).clamp(1, 60_000_000);
            let tpl = slot.tpl as usize;
            self.inflight -= 1;
            self.st.hist.saturating_record(us);
            let expect = self.tpl.pdus[tpl].expect;
            if let Some(exp) = expect {
                if exp != st {
                    self.st.expect_mismatches += 1;
                }
            }
            if self.tpl.replay {
                self.st.count_pair((expect, st), 1);
            }
        }
    }
}

/// "Never", without overflowing `Instant` (tokio uses the same 30 years).
fn far_future(now: Instant) -> Instant {
    now + Duration::from_secs(86_400 * 365 * 30)
}
