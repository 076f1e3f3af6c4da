//! The policy decision for one submit_sm destination (DESIGN §3, STYLE §4–5).
//!
//! [`decide`] is a pure synchronous function over immutable inputs: the validated config, the
//! current consent snapshot (swapped atomically elsewhere) and the live delta. It does not
//! await, allocate or log. The snapshot is lock-free; the live delta is too unless the
//! destination has (or shares a membership bit with a number that has) a live statement —
//! then one uncontended dashmap shard read lock is taken for one probe (DESIGN §4).
//!
//! Decision order; the first failing step gives the reason:
//!
//! 1. **account** — licence present and not expired *today* (a licence that expires during a
//!    session rejects with `unlicensed`; binds are checked in [`crate::config::Config::admit`]);
//! 2. **sender id** — source_addr matches one of the account's `sender_id` patterns;
//! 3. *(throughput: per-account TPS — not yet enforced; the session window is)*;
//! 4. **class** — per-source-address override, then service_type, then the account's class;
//!    transactional traffic is not subject to consent;
//! 5. **consent** — `opt-in`: allowed only if the latest statement for (subscriber, entity) is a
//!    grant newer than any do-not-call registration; `opt-out`: allowed unless refused.
//!
//! In `monitor` mode every reject becomes [`Verdict::WouldReject`] and the message is forwarded.

use crate::config::{pattern_matches, Account, MessageClass, Policy, PolicyMode, Regime, Unavailable};
use crate::consent::delta::Delta;
use crate::consent::msisdn;
use crate::consent::snapshot::{EntityId, PairState, Snapshot};
use crate::consent::statement::StatementKind;
use crate::smpp::peek::Addr;

/// Why a message is (or would be) rejected: one closed set that yields both the SMPP status
/// (via `policy.reject_status`) and the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Reason {
    /// Commercial, opt-in regime, and no grant from this subscriber for this entity.
    NoConsent = 0,
    /// The subscriber's latest statement for this entity is a revocation (e.g. replied "TD").
    Revoked = 1,
    /// The subscriber is on the do-not-call registry and gave no newer grant.
    Dnc = 2,
    /// Outside the allowed local hours (not enforced yet).
    QuietHours = 3,
    /// Per-subscriber frequency cap reached (not enforced yet).
    FrequencyCap = 4,
    /// The account's licence is missing or has expired.
    Unlicensed = 5,
    /// source_addr not among the account's allowed sender ids.
    SenderId = 6,
    /// Rate or window exceeded.
    Throttled = 7,
    /// Commercial traffic while no consent snapshot is loaded (`on_snapshot_unavailable = "reject"`).
    SnapshotUnavailable = 8,
}

impl Reason {
    pub const COUNT: usize = 9;
    pub const ALL: [Reason; Reason::COUNT] = [
        Reason::NoConsent,
        Reason::Revoked,
        Reason::Dnc,
        Reason::QuietHours,
        Reason::FrequencyCap,
        Reason::Unlicensed,
        Reason::SenderId,
        Reason::Throttled,
        Reason::SnapshotUnavailable,
    ];

    /// The metric label and config key.
    pub fn label(self) -> &'static str {
        match self {
            Reason::NoConsent => "no_consent",
            Reason::Revoked => "revoked",
            Reason::Dnc => "dnc",
            Reason::QuietHours => "quiet_hours",
            Reason::FrequencyCap => "frequency_cap",
            Reason::Unlicensed => "unlicensed",
            Reason::SenderId => "sender_id",
            Reason::Throttled => "throttled",
            Reason::SnapshotUnavailable => "snapshot_unavailable",
        }
    }

    pub fn from_label(s: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.label() == s)
    }

    pub fn labels() -> Vec<&'static str> {
        Reason::ALL.iter().map(|r| r.label()).collect()
    }

    /// DESIGN §3 defaults: vendor range 0x400–0x405 for policy rejects (never 0x0B).
    pub fn default_statuses() -> [u32; Reason::COUNT] {
        [0x400, 0x401, 0x402, 0x403, 0x404, 0x405, 0x0A, 0x58, 0x08]
    }

    /// The command_status configured for this reason.
    #[inline]
    pub fn status(self, policy: &Policy) -> u32 {
        policy.reject_status[self as usize]
    }
}

/// The outcome for one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Reject(Reason),
    /// `policy.mode = "monitor"`: would be rejected; forwarded anyway.
    WouldReject(Reason),
}

impl Verdict {
    /// Whether the message goes upstream.
    #[inline]
    pub fn forwards(self) -> bool {
        !matches!(self, Verdict::Reject(_))
    }
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Accept => "accepted",
            Verdict::Reject(_) => "rejected",
            Verdict::WouldReject(_) => "would_reject",
        }
    }
    pub fn reason(self) -> Option<Reason> {
        match self {
            Verdict::Accept => None,
            Verdict::Reject(r) | Verdict::WouldReject(r) => Some(r),
        }
    }
}

/// What consent data says about (subscriber, entity).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Latest statement is a grant newer than any DNC registration.
    Granted,
    /// Latest statement for this entity is a revocation.
    Revoked,
    /// On the do-not-call registry with no newer grant for this entity.
    Dnc,
    /// No statement at all.
    None,
}

impl Standing {
    pub fn label(self) -> &'static str {
        match self {
            Standing::Granted => "granted",
            Standing::Revoked => "revoked",
            Standing::Dnc => "dnc",
            Standing::None => "none",
        }
    }
}

/// The fields of one message that the policy reads.
#[derive(Debug, Clone, Copy)]
pub struct Submit<'a> {
    pub source: Addr<'a>,
    pub destination: Addr<'a>,
    pub service_type: &'a [u8],
}

/// An account as a session sees it: the config entry plus its entity ids in the live delta
/// and in the current snapshot (resolved once per snapshot generation, not per message).
#[derive(Debug, Clone, Copy)]
pub struct AccountView<'a> {
    pub account: &'a Account,
    pub live_entity: u32,
    pub snap_entity: Option<EntityId>,
}

/// Everything else the decision reads.
#[derive(Clone, Copy)]
pub struct Inputs<'a> {
    pub policy: &'a Policy,
    pub snapshot: Option<&'a Snapshot>,
    pub delta: &'a Delta,
    /// Today (UTC), days since 1970-01-01.
    pub today: i64,
}

/// The message class after registration lookups (DESIGN §3 step 4).
pub fn classify(account: &Account, m: &Submit) -> MessageClass {
    for (pat, class) in &account.source_class {
        if pattern_matches(pat, m.source.addr) {
            return *class;
        }
    }
    for (st, class) in &account.service_type_class {
        if st.as_bytes() == m.service_type {
            return *class;
        }
    }
    account.class
}

/// Consent standing of `msisdn` for the account's entity: live delta first (newest), then
/// the snapshot. `None` when no snapshot is loaded and the delta has no answer.
#[inline]
pub fn standing(inp: &Inputs, acct: &AccountView, msisdn: u64) -> Option<Standing> {
    standing_of(inp, acct.live_entity, acct.snap_entity, msisdn)
}

/// [`standing`] for an entity given by its ids in the delta and the snapshot (the admin
/// lookup has an entity, not an account; `live_entity = u32::MAX` when never interned).
#[inline]
pub fn standing_of(inp: &Inputs, live_entity: u32, snap_entity: Option<EntityId>, msisdn: u64) -> Option<Standing> {
    let live_dnc = inp.delta.dnc(msisdn);
    if let Some((kind, at)) = inp.delta.pair(msisdn, live_entity) {
        return Some(match kind {
            StatementKind::Revoke => Standing::Revoked,
            _ if live_dnc.is_some_and(|d| d > at) => Standing::Dnc,
            _ => Standing::Granted,
        });
    }
    if live_dnc.is_some() {
        return Some(Standing::Dnc);
    }
    let snap = inp.snapshot?;
    let st = snap.statements(msisdn, snap_entity);
    Some(match st.pair {
        Some(PairState::Grant) => Standing::Granted,
        Some(PairState::Revoked) => Standing::Revoked,
        Some(PairState::DncNewer) => Standing::Dnc,
        None if st.dnc => Standing::Dnc,
        None => Standing::None,
    })
}

/// Starts loading the snapshot memory that deciding a message to `destination` will read.
/// A session calls it for every submit in a read batch before deciding the first, so the
/// batch's memory misses overlap instead of queueing one behind the other; it changes no
/// verdict.
#[inline]
pub fn prefetch(snapshot: &Snapshot, policy: &Policy, destination: &Addr) {
    if let Ok(m) = msisdn::normalise(destination.addr, destination.ton, destination.npi, &policy.default_country_code) {
        snapshot.prefetch(m);
    }
}

/// Decides one destination of one message.
#[inline]
pub fn decide(inp: &Inputs, acct: &AccountView, m: &Submit) -> Verdict {
    let v = decide_enforced(inp, acct, m);
    match (v, inp.policy.mode) {
        (Verdict::Reject(r), PolicyMode::Monitor) => Verdict::WouldReject(r),
        _ => v,
    }
}

fn decide_enforced(inp: &Inputs, acct: &AccountView, m: &Submit) -> Verdict {
    let a = acct.account;
    // 1. Account / licence.
    if a.licence_valid_on(inp.today).is_err() {
        return Verdict::Reject(Reason::Unlicensed);
    }
    // 2. Sender id.
    if !a.sender_id.is_empty() && !a.sender_id.iter().any(|p| pattern_matches(p, m.source.addr)) {
        return Verdict::Reject(Reason::SenderId);
    }
    // 4. Class.
    if classify(a, m) == MessageClass::Transactional {
        return Verdict::Accept;
    }
    // 5. Consent.
    let regime = inp.policy.regime;
    let Ok(msisdn) =
        msisdn::normalise(m.destination.addr, m.destination.ton, m.destination.npi, &inp.policy.default_country_code)
    else {
        // Not a subscriber number (alphanumeric, short code, malformed): nobody can have
        // consented; under opt-out nobody can have refused either.
        return match regime {
            Regime::OptIn => Verdict::Reject(Reason::NoConsent),
            Regime::OptOut => Verdict::Accept,
        };
    };
    consent_verdict(standing(inp, acct, msisdn), inp.policy)
}

/// Step 5 for a commercial message to a subscriber: the verdict a standing gives under the
/// configured regime (`None` = no snapshot and no live statement: `on_snapshot_unavailable`).
/// Enforce-mode verdict; [`decide`] applies monitor mode.
pub fn consent_verdict(st: Option<Standing>, policy: &Policy) -> Verdict {
    let Some(st) = st else {
        return match policy.on_snapshot_unavailable {
            Unavailable::Reject => Verdict::Reject(Reason::SnapshotUnavailable),
            Unavailable::Allow => Verdict::Accept,
        };
    };
    match (st, policy.regime) {
        (Standing::Granted, _) | (Standing::None, Regime::OptOut) => Verdict::Accept,
        (Standing::None, Regime::OptIn) => Verdict::Reject(Reason::NoConsent),
        (Standing::Revoked, _) => Verdict::Reject(Reason::Revoked),
        (Standing::Dnc, _) => Verdict::Reject(Reason::Dnc),
    }
}

#[cfg(test)]
mod tests;
