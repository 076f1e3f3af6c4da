//! ESME load generator: `consentgate load` (architecture §4).
//!
//! ```text
//!  run(cfg) ─┬─ session 0: connect → bind → [fill window → write → read → process]* → drain
//!            ├─ session 1:   …                                        → receipts → unbind
//!            └─ …            (one task per session; shared atomics for the count budget and
//!                             the global receipt/accept tallies) ──► merged Report
//! ```
//!
//! Hot-path choices (the tool must never be the bottleneck; target ≥ 1 M submit_sm/s):
//! * every submit_sm frame is built once (`templates::Templates`); a send is a memcpy into the output
//!   buffer plus [`crate::smpp::set_sequence`] (plus one byte for the concatenation reference);
//! * one task per session alternates *fill window → one write → read what is there →
//!   process*; reads and writes are `try_*` calls on the socket, awaiting readiness only when
//!   the kernel says "would block", so a batch costs one write syscall and usually one read;
//! * send timestamps live in a ring indexed by `seq & mask`; the clock is read once per write
//!   batch and once per read batch, never per PDU;
//! * counters are per session (plain integers) and merged at the end; the only cross-session
//!   traffic is one atomic claim per batch against the `count` budget.
//!
//! Replay (`--pcap`, [`crate::pcap`]): the recorded requests become the templates, one list per
//! session (a recorded stream stays on one session, in order), each sent once with only the
//! sequence number rewritten. With a speed factor, a batch takes only the PDUs already due
//! (recorded offset / factor since the replay started) and the session sleeps until the next
//! one is; `max` is the plain window-bound loop. Each response is tallied against the
//! recorded status of its request ([`ReplayReport`]).

//!
//! | file | holds |
//! |---|---|
//! | `mod.rs` | [`LoadConfig`], [`run`], [`Speed`], the state the sessions share |
//! | `scenario.rs` | [`ScenarioLine`], [`parse_scenario`] and their checks |
//! | `templates.rs` | the pre-built submit_sm frames (generated, scenario, replay) |
//! | `session.rs` | one session's task: bind, send, drain, receipts, unbind |
//! | `rate.rs` | the token bucket behind `--rate` |
//! | `report.rs` | [`Report`], [`ReplayReport`] and the human-readable table |

pub mod client;
mod rate;
mod report;
mod scenario;
mod session;
mod templates;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

pub use report::{Latency, ReplayReport, Report, StatusPair};
pub use scenario::{parse_scenario, parse_tlv_arg, parse_tlv_tag, Encoding, ScenarioLine};
use session::{session_task, Stats};
use templates::{build_replay_templates, build_templates, Templates};

use crate::smpp::BindType;

/// The capture reader used to live here as `load::pcap`; the path stays (with [`Speed`]) for
/// the binary and older callers. New code uses [`crate::pcap`].
pub mod pcap {
    pub use super::Speed;
    pub use crate::pcap::*;
}

/// Upper bound on `window` (the latency ring is 4 × window, 16 bytes a slot).
const MAX_WINDOW: usize = 100_000;
/// Errors kept in the report; the rest are counted.
const MAX_ERRORS: usize = 64;

/// What to send, where, how hard. `Default` gives a 4 × 100 transceiver run of 10 s against
/// 127.0.0.1:2775 with random traffic.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// SMPP address of the gateway or SMSC under test.
    pub target: SocketAddr,
    pub system_id: String,
    pub password: String,
    /// Transceiver by default. Receiver sessions send nothing: they listen for `duration`.
    pub bind_type: BindType,
    /// Parallel binds (default 4).
    pub sessions: usize,
    /// submit_sm in flight per session (default 100, at most 100 000).
    pub window: usize,
    /// Total submit_sm PDUs across sessions; 0 = until `duration`. A multi-part message that
    /// has begun is always finished, so `sent` may exceed `count` by fewer parts than one
    /// message has.
    pub count: u64,
    /// Hard cap on the sending phase (default 10 s); zero = no time cap (then `count` > 0).
    pub duration: Duration,
    /// Optional total submit_sm/s cap, split evenly across sessions (token buckets refilled
    /// every 1 ms).
    pub rate: Option<u64>,
    /// Ask for delivery receipts (registered_delivery = 1).
    pub registered_delivery: bool,
    /// `None` = built-in random traffic.
    pub scenario: Option<Vec<ScenarioLine>>,
    /// After the last response, wait up to this long for outstanding receipts (default 2 s).
    pub receipt_wait: Duration,
    /// Source address of random traffic.
    pub source: String,
    /// Replay these recorded requests instead of generating traffic (`--pcap`).
    pub replay: Option<Arc<crate::pcap::Extracted>>,
    /// Replay pacing (default `1x`: as recorded).
    pub speed: Speed,
    /// Random traffic: every message to a destination drawn uniformly from this range
    /// (`--destinations LO-HI`), so lookups spread over a consent snapshot the way real
    /// traffic does. `None` = a pool of [`templates::RANDOM_POOL`] fixed destinations.
    pub destinations: Option<DestRange>,
    /// Random traffic: this text in every message instead of a verification code (GSM 7-bit
    /// when it can be, else UCS-2).
    pub text: Option<String>,
    /// Connect over TLS (`--tls-ca`): each session completes a handshake with this client
    /// configuration before it binds, as an ESME on the gateway's `smpp_tls` port would.
    pub tls: Option<Arc<crate::relay::tls::TlsClient>>,
    /// Speak CMPP in this version instead of SMPP (`--cmpp`): `system_id` is the SP_Id
    /// (CONNECT Source_Addr and every SUBMIT's Msg_src), `password` the shared secret of the
    /// MD5 authenticator, `source` (or a scenario line's) the Src_Id; statuses are SUBMIT_RESP Results, receipts
    /// are status reports (DELIVER with Registered_Delivery 1), and the session ends with
    /// TERMINATE.
    pub cmpp: Option<crate::cmpp::Version>,
    /// Optional parameters (tag, value) appended to every submit_sm (`--tlv`), e.g. India
    /// DLT's PE id, template id and chain (0x1400–0x1402); a scenario line's own `tlvs` win
    /// for their tags. SMPP only: CMPP has no TLVs.
    pub tlvs: Vec<(u16, Vec<u8>)>,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            target: SocketAddr::from(([127, 0, 0, 1], 2775)),
            system_id: "load".into(),
            password: String::new(),
            bind_type: BindType::Transceiver,
            sessions: 4,
            window: 100,
            count: 0,
            duration: Duration::from_secs(10),
            rate: None,
            registered_delivery: false,
            scenario: None,
            receipt_wait: Duration::from_secs(2),
            source: "1069012345".into(),
            replay: None,
            speed: Speed::Factor(1.0),
            destinations: None,
            text: None,
            tls: None,
            cmpp: None,
            tlvs: Vec::new(),
        }
    }
}

/// An inclusive range of destination numbers of one length (`8613800000000-8613899999999`):
/// the generator rewrites the destination digits of each message in place, so the frames
/// stay pre-built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DestRange {
    pub lo: u64,
    pub hi: u64,
    /// Digits of every number in the range.
    pub digits: u8,
}

impl DestRange {
    /// The `n`-th draw of a uniform random stream, as a number in the range.
    #[inline]
    pub(crate) fn pick(&self, r: u64) -> u64 {
        let span = u128::from(self.hi - self.lo) + 1;
        self.lo + ((u128::from(r) * span) >> 64) as u64
    }
}

impl std::str::FromStr for DestRange {
    type Err = String;
    fn from_str(s: &str) -> Result<DestRange, String> {
        let bad = || {
            format!(
                "destinations {s:?}: expected LO-HI, two numbers of the same length (e.g. 8613800000000-8613899999999)"
            )
        };
        let (lo, hi) = s.trim().split_once('-').ok_or_else(bad)?;
        let digits = lo.len();
        if digits == 0
            || digits > 20
            || hi.len() != digits
            || !(lo.bytes().chain(hi.bytes()).all(|c| c.is_ascii_digit()))
        {
            return Err(bad());
        }
        let (lo, hi) = (lo.parse::<u64>().map_err(|_| bad())?, hi.parse::<u64>().map_err(|_| bad())?);
        if lo > hi {
            return Err(format!("destinations {s:?}: LO is above HI"));
        }
        Ok(DestRange { lo, hi, digits: digits as u8 })
    }
}

// ---------------------------------------------------------------------------------------------
// Replay pacing

/// How fast to replay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Speed {
    /// Recorded time × 1/factor (`1x` = as recorded, `10x` = ten times faster).
    Factor(f64),
    /// As fast as the window allows.
    Max,
}

impl std::str::FromStr for Speed {
    type Err = String;
    fn from_str(s: &str) -> Result<Speed, String> {
        let t = s.trim().to_ascii_lowercase();
        if t == "max" {
            return Ok(Speed::Max);
        }
        let n = t.strip_suffix('x').unwrap_or(&t);
        match n.parse::<f64>() {
            Ok(f) if f.is_finite() && f > 0.0 => Ok(Speed::Factor(f)),
            _ => Err(format!("speed {s:?}: expected 1x, 10x, 0.5x … or max")),
        }
    }
}

impl std::fmt::Display for Speed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Speed::Factor(x) => write!(f, "{x}x"),
            Speed::Max => f.write_str("max"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Run

/// State shared by the sessions of one run.
pub(super) struct Shared {
    /// Total submit_sm budget; 0 = unlimited.
    pub(super) budget: u64,
    pub(super) claimed: AtomicU64,
    /// submit_sm_resp with status 0, published by each session when it stops sending.
    pub(super) accepted: AtomicU64,
    /// Receipts received on any session (published after each read batch).
    pub(super) receipts: AtomicU64,
    /// Sessions still in their sending or drain phase.
    pub(super) senders_active: AtomicUsize,
    /// When the last sender finished.
    pub(super) senders_done_at: OnceLock<Instant>,
    /// Replay pacing: when the first session started sending (time zero of the recording).
    pub(super) replay_epoch: OnceLock<Instant>,
}

impl Shared {
    /// Claims up to `want` submits from the budget.
    #[inline]
    pub(super) fn claim(&self, want: u64) -> u64 {
        if self.budget == 0 {
            return want;
        }
        if self.claimed.load(Ordering::Relaxed) >= self.budget {
            return 0;
        }
        let prev = self.claimed.fetch_add(want, Ordering::Relaxed);
        want.min(self.budget.saturating_sub(prev))
    }
}

/// Marks a session as done sending when dropped (on every path, errors included).
pub(super) struct SenderGuard(Arc<Shared>);

impl Drop for SenderGuard {
    fn drop(&mut self) {
        if self.0.senders_active.fetch_sub(1, Ordering::SeqCst) == 1 {
            let _ = self.0.senders_done_at.set(Instant::now());
        }
    }
}

/// Runs the load: connects and binds `sessions` sessions, sends, drains, waits for receipts,
/// unbinds, and returns the merged report. Session failures are reported in `errors`; only an
/// invalid configuration is an `Err`.
pub async fn run(cfg: LoadConfig) -> anyhow::Result<Report> {
    if cfg.sessions == 0 {
        anyhow::bail!("sessions must be at least 1");
    }
    if cfg.window == 0 || cfg.window > MAX_WINDOW {
        anyhow::bail!("window must be 1..={MAX_WINDOW}");
    }
    if cfg.count == 0 && cfg.duration.is_zero() && cfg.replay.is_none() {
        anyhow::bail!("count and duration are both 0: the run would never stop");
    }
    if cfg.rate == Some(0) {
        anyhow::bail!("rate must be positive");
    }
    if cfg.destinations.is_some() && (cfg.scenario.is_some() || cfg.replay.is_some()) {
        anyhow::bail!("destinations apply to random traffic only, not to a scenario or a replay");
    }
    if cfg.replay.is_some() && cfg.scenario.is_some() {
        anyhow::bail!("a scenario and a capture replay are alternatives");
    }
    if cfg.cmpp.is_some() {
        if cfg.replay.as_ref().is_some_and(|x| !x.cmpp) {
            anyhow::bail!("--cmpp replays a capture read as CMPP (extract it with ExtractOptions::cmpp)");
        }
        if cfg.tls.is_some() {
            anyhow::bail!("--cmpp runs over plain TCP (the CMPP front has no TLS listener)");
        }
        if cfg.bind_type != BindType::Transceiver {
            anyhow::bail!("--cmpp connects as an SP (one connection sends and receives): no bind type applies");
        }
    }
    if let Speed::Factor(k) = cfg.speed {
        if !(k.is_finite() && k > 0.0) {
            anyhow::bail!("speed must be a positive factor or max");
        }
    }
    // One template list per session: shared for generated traffic, dealt out for a replay.
    let tpls: Vec<Arc<Templates>> = match &cfg.replay {
        Some(x) => {
            if x.pdus.is_empty() {
                match x.cmpp {
                    false => anyhow::bail!("{}: no SMPP submit_sm / data_sm / submit_multi to replay", x.file),
                    true => anyhow::bail!("{}: no CMPP_SUBMIT to replay", x.file),
                }
            }
            build_replay_templates(x, cfg.sessions, cfg.speed).into_iter().map(Arc::new).collect()
        }
        None => {
            let t = Arc::new(build_templates(&cfg)?);
            (0..cfg.sessions).map(|_| t.clone()).collect()
        }
    };
    let sessions = tpls.len();
    let shared = Arc::new(Shared {
        budget: cfg.count,
        claimed: AtomicU64::new(0),
        accepted: AtomicU64::new(0),
        receipts: AtomicU64::new(0),
        senders_active: AtomicUsize::new(sessions),
        senders_done_at: OnceLock::new(),
        replay_epoch: OnceLock::new(),
    });
    let cfg = Arc::new(cfg);
    let handles: Vec<_> = tpls
        .into_iter()
        .enumerate()
        .map(|(i, tpl)| {
            let guard = SenderGuard(shared.clone());
            tokio::spawn(session_task(i, guard, cfg.clone(), tpl, shared.clone()))
        })
        .collect();

    let mut total = Stats::new();
    let mut errors = Vec::new();
    let mut first_send: Option<Instant> = None;
    let mut last_resp: Option<Instant> = None;
    for (i, h) in handles.into_iter().enumerate() {
        match h.await {
            Ok(st) => {
                first_send = min_opt(first_send, st.first_send);
                last_resp = max_opt(last_resp, st.last_resp);
                errors.extend(st.errors.iter().cloned());
                total.merge(&st);
            }
            Err(e) => errors.push(format!("session {i}: task failed: {e}")),
        }
    }
    if errors.len() > MAX_ERRORS {
        let more = errors.len() - MAX_ERRORS;
        errors.truncate(MAX_ERRORS);
        errors.push(format!("… and {more} more errors"));
    }
    let elapsed = match (first_send, last_resp) {
        (Some(a), Some(b)) if b > a => (b - a).as_secs_f64(),
        _ => 0.0,
    };
    let h = &total.hist;
    let latency_us = if h.is_empty() {
        Latency::default()
    } else {
        Latency {
            p50: h.value_at_quantile(0.5) as f64,
            p90: h.value_at_quantile(0.9) as f64,
            p99: h.value_at_quantile(0.99) as f64,
            p999: h.value_at_quantile(0.999) as f64,
            max: h.max() as f64,
        }
    };
    let mut statuses = BTreeMap::new();
    for (s, &n) in total.status_small.iter().enumerate() {
        if n > 0 {
            statuses.insert(format!("0x{s:08x}"), n);
        }
    }
    for &(s, n) in &total.status_other {
        *statuses.entry(format!("0x{s:08x}")).or_insert(0) += n;
    }
    let replay = cfg.replay.as_ref().map(|x| {
        let mut statuses: Vec<StatusPair> = total
            .pairs
            .iter()
            .map(|&((rec, rep), count)| StatusPair {
                recorded: rec.map_or_else(|| "none".to_owned(), |s| format!("0x{s:08x}")),
                replayed: format!("0x{rep:08x}"),
                count,
            })
            .collect();
        statuses.sort_by(|a, b| (&a.recorded, &a.replayed).cmp(&(&b.recorded, &b.replayed)));
        let compared = total.pairs.iter().map(|p| p.1).sum();
        let differ = total.pairs.iter().filter(|((r, p), _)| r.is_some_and(|r| r != *p)).map(|p| p.1).sum();
        let no_recorded_status = total.pairs.iter().filter(|((r, _), _)| r.is_none()).map(|p| p.1).sum();
        ReplayReport {
            speed: cfg.speed.to_string(),
            capture: x.summary(),
            compared,
            differ,
            no_recorded_status,
            statuses,
        }
    });
    Ok(Report {
        sessions,
        window: cfg.window,
        tls: cfg.tls.is_some(),
        sent: total.sent,
        messages: total.messages,
        responses: total.responses,
        statuses,
        unanswered: total.sent.saturating_sub(total.responses),
        receipts: total.receipts,
        mo_received: total.mo,
        expect_mismatches: total.expect_mismatches,
        elapsed_seconds: elapsed,
        submit_per_second: if elapsed > 0.0 { total.responses as f64 / elapsed } else { 0.0 },
        latency_us,
        bind_failures: total.bind_failures,
        errors,
        replay,
        cmpp: cfg.cmpp.map(|v| match v {
            crate::cmpp::Version::V20 => "2.0".to_owned(),
            crate::cmpp::Version::V30 => "3.0".to_owned(),
        }),
    })
}

fn min_opt(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn max_opt(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}
