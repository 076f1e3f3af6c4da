//! Per-session counts and their export (STYLE §11).
//!
//! The hot path only increments plain integers in [`SessionStats`]. Every tick (100 ms) and
//! when the session ends, [`SessionMetrics::flush`] adds what changed since the last flush to
//! metric handles that are resolved once, the first time a series has something to add.
//! Timings are sampled: the decision one in [`DECISION_SAMPLE_EVERY`], the upstream response
//! time one relayed request in [`UPSTREAM_SAMPLE_EVERY`] using the session's per-event clock
//! (no extra clock read).

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};

use crate::policy::{Reason, Verdict};
use crate::smpp::COMMAND_LABELS;
use crate::telemetry::metrics as m;

pub(super) use m::{DECISION_SAMPLE_EVERY, UPSTREAM_SAMPLE_EVERY};

const VERDICTS: usize = 3;
const REASONS: usize = Reason::COUNT + 1;
const COMMANDS: usize = COMMAND_LABELS.len();

/// Error kinds a session counts, with their `{stage, kind}` labels.
#[derive(Debug, Clone, Copy)]
#[repr(u8)]
pub enum ErrorKind {
    /// A request from the ESME whose body does not parse (answered with an error status).
    EsmeMalformed = 0,
    /// A PDU from the ESME with an unknown command id (generic_nack).
    EsmeUnknownCommand,
    /// A PDU from the ESME longer than `session.max_pdu_bytes` (generic_nack, skipped).
    EsmeOversized,
    /// A PDU from the SMSC longer than `session.max_pdu_bytes`.
    SmscOversized,
    /// A relayed request the SMSC did not answer within `upstream.response_timeout`.
    SmscTimeout,
    /// The SMSC leg closed or stopped answering enquire_link while bound.
    SmscLost,
    /// An MO opt-out whose journal write did not become durable in time (MO redelivered).
    OptoutNotDurable,
}

const ERRORS: [(&str, &str); 7] = [
    ("esme", "malformed_pdu"),
    ("esme", "unknown_command"),
    ("esme", "oversized_pdu"),
    ("smsc", "oversized_pdu"),
    ("smsc", "response_timeout"),
    ("smsc", "connection_lost"),
    ("journal", "optout_not_durable"),
];

/// Plain per-session counters, incremented on the hot path.
#[derive(Debug)]
pub struct SessionStats {
    /// `[verdict][reason]` (reason index `Reason::COUNT` = none).
    pub verdicts: [[u64; REASONS]; VERDICTS],
    /// `[0 = from ESME, 1 = from SMSC][command index]`.
    pub pdus: [[u64; COMMANDS]; 2],
    pub optouts: u64,
    /// MO opt-ins (`opt_in_keywords`) recorded as grants.
    pub optins: u64,
    pub errors: [u64; ERRORS.len()],
    /// Decisions made (drives the timing sample).
    pub decisions: u32,
    /// Requests relayed upstream (drives the response-time sample).
    pub relayed: u32,
}

impl Default for SessionStats {
    fn default() -> SessionStats {
        SessionStats {
            verdicts: [[0; REASONS]; VERDICTS],
            pdus: [[0; COMMANDS]; 2],
            optouts: 0,
            optins: 0,
            errors: [0; ERRORS.len()],
            decisions: 0,
            relayed: 0,
        }
    }
}

impl SessionStats {
    /// An MO recorded as a statement: an opt-out, or an opt-in.
    pub fn mo_statement(&mut self, intent: crate::optout::Intent) {
        match intent {
            crate::optout::Intent::OptOut => self.optouts += 1,
            crate::optout::Intent::OptIn => self.optins += 1,
        }
    }

    #[inline]
    pub fn count(&mut self, v: Verdict) {
        let vi = verdict_index(v);
        let ri = v.reason().map(|r| r as usize).unwrap_or(Reason::COUNT);
        self.verdicts[vi][ri] += 1;
    }

    #[inline]
    pub fn pdu(&mut self, from_smsc: bool, command_id: u32) {
        self.pdus[from_smsc as usize][crate::smpp::command_index(command_id)] += 1;
    }

    #[inline]
    pub fn error(&mut self, kind: ErrorKind) {
        self.errors[kind as usize] += 1;
    }
}

fn verdict_index(v: Verdict) -> usize {
    match v {
        Verdict::Accept => 0,
        Verdict::Reject(_) => 1,
        Verdict::WouldReject(_) => 2,
    }
}

const VERDICT_LABELS: [&str; VERDICTS] = ["accepted", "rejected", "would_reject"];

/// A counter series resolved on first use, and how much of the local count it already has.
#[derive(Default)]
struct Lazy {
    handle: Option<Counter>,
    flushed: u64,
}

impl Lazy {
    #[inline]
    fn sync(&mut self, now: u64, resolve: impl FnOnce() -> Counter) {
        if now > self.flushed {
            self.handle.get_or_insert_with(resolve).increment(now - self.flushed);
            self.flushed = now;
        }
    }
}

/// The session's metric handles (one account's series) and the last values flushed.
pub struct SessionMetrics {
    account: String,
    /// `(verdict × REASONS + reason, series)` for the pairs this session has counted: sparse,
    /// so a session's allocation does not grow with the number of reasons (a dense table of
    /// every pair fragmented the heap under session churn: `tests/faults.rs`).
    verdicts: Vec<(u16, Lazy)>,
    pdus: Vec<Lazy>,
    optouts: Lazy,
    optins: Lazy,
    errors: Vec<Lazy>,
    pub decision: Histogram,
    pub upstream: Histogram,
    window: Gauge,
    window_reported: usize,
    esme_session: Gauge,
    smsc_session: Gauge,
    legs_reported: (bool, bool),
}

impl SessionMetrics {
    pub fn new(account: &str) -> SessionMetrics {
        let lazies = |n: usize| (0..n).map(|_| Lazy::default()).collect::<Vec<_>>();
        SessionMetrics {
            account: account.to_owned(),
            verdicts: Vec::new(),
            pdus: lazies(2 * COMMANDS),
            optouts: Lazy::default(),
            optins: Lazy::default(),
            errors: lazies(ERRORS.len()),
            decision: histogram!(m::DECISION_DURATION),
            upstream: histogram!(m::UPSTREAM_RESPONSE_DURATION, "account" => account.to_owned()),
            window: gauge!(m::WINDOW_IN_FLIGHT, "account" => account.to_owned()),
            window_reported: 0,
            esme_session: gauge!(m::SESSIONS, "side" => "esme"),
            smsc_session: gauge!(m::SESSIONS, "side" => "smsc"),
            legs_reported: (false, false),
        }
    }

    /// Adds what `stats` counted since the last flush; sets the gauges to this session's
    /// share (`in_flight` relayed requests; which legs are open).
    pub fn flush(&mut self, stats: &SessionStats, in_flight: usize, esme_open: bool, smsc_open: bool) {
        for (vi, row) in stats.verdicts.iter().enumerate() {
            for (ri, &n) in row.iter().enumerate() {
                if n == 0 {
                    continue;
                }
                let key = (vi * REASONS + ri) as u16;
                let at = match self.verdicts.iter().position(|(k, _)| *k == key) {
                    Some(at) => at,
                    None => {
                        self.verdicts.push((key, Lazy::default()));
                        self.verdicts.len() - 1
                    }
                };
                let account = &self.account;
                self.verdicts[at].1.sync(n, || {
                    let reason = if ri == Reason::COUNT { "none" } else { Reason::ALL[ri].label() };
                    counter!(m::SUBMIT_TOTAL, "account" => account.clone(), "verdict" => VERDICT_LABELS[vi], "reason" => reason)
                });
            }
        }
        for (side, row) in stats.pdus.iter().enumerate() {
            for (ci, &n) in row.iter().enumerate() {
                self.pdus[side * COMMANDS + ci].sync(n, || {
                    let direction = if side == 0 { "from_esme" } else { "from_smsc" };
                    counter!(m::PDUS_TOTAL, "direction" => direction, "command" => COMMAND_LABELS[ci])
                });
            }
        }
        self.optouts.sync(stats.optouts, || counter!(m::OPTOUTS_TOTAL, "source" => "mo"));
        self.optins.sync(stats.optins, || counter!(m::STATEMENTS_TOTAL, "source" => "mo", "kind" => "grant"));
        for (i, &n) in stats.errors.iter().enumerate() {
            self.errors[i].sync(n, || counter!(m::ERRORS_TOTAL, "stage" => ERRORS[i].0, "kind" => ERRORS[i].1));
        }
        if in_flight != self.window_reported {
            self.window.increment(in_flight as f64 - self.window_reported as f64);
            self.window_reported = in_flight;
        }
        if esme_open != self.legs_reported.0 {
            self.esme_session.increment(if esme_open { 1.0 } else { -1.0 });
        }
        if smsc_open != self.legs_reported.1 {
            self.smsc_session.increment(if smsc_open { 1.0 } else { -1.0 });
        }
        self.legs_reported = (esme_open, smsc_open);
    }
}
