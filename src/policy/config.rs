//! The policy's validated configuration (architecture §3, §5): the `[policy]` settings and the
//! `[[account]]` registry, as `crate::config` validates them from the TOML file. Nothing here
//! reads a file; [`super::Engine`] is built from these types.

use crate::smpp::BindType;

use super::content::{CommercialConfig, ContentRules};
use super::frequency::FrequencyConfig;
use super::Reason;

/// `[policy]`.
#[derive(Debug, Clone)]
pub struct PolicyConfig {
    pub mode: PolicyMode,
    pub regime: Regime,
    /// Country calling code added to national numbers (no `+`), e.g. "86".
    pub default_country_code: String,
    /// What commercial traffic gets before any snapshot is loaded.
    pub on_snapshot_unavailable: Unavailable,
    /// command_status per reject reason, indexed by `Reason as usize`.
    pub reject_status: [u32; Reason::COUNT],
    /// `[policy.cmpp] result`: the CMPP SUBMIT_RESP Result per reason, indexed like
    /// `reject_status`.
    pub cmpp_result: [u32; Reason::COUNT],
    /// `[policy.cmpp] stat`: the Stat of the status report for a refused destination of a
    /// group SUBMIT, per reason.
    pub cmpp_stat: [[u8; 7]; Reason::COUNT],
    /// `[policy.quiet_hours]` (step 7); `None` = no quiet hours unless an account sets its own.
    pub quiet_hours: Option<DailyWindow>,
    /// The subscriber's time zone by country code (`[policy.timezones]`), else
    /// `policy.quiet_hours.timezone` (default UTC).
    pub zones: Zones,
    /// `[[policy.content_rule]]` compiled (step 4).
    pub content: ContentRules,
    /// `[policy.commercial]` (step 5).
    pub commercial: CommercialConfig,
    /// `[policy.frequency]` (step 8); all caps 0 = none.
    pub frequency: FrequencyConfig,
    /// `policy.reassembly_timeout`: how long the parts of a concatenated message are held
    /// for the rest when the text decides (steps 4–5), ms.
    pub reassembly_timeout_ms: u64,
    /// `[dlt]` (architecture §11): the registry and TLV tags the accounts with
    /// `scrubbing = "dlt"` are checked against; `None` when not configured.
    pub dlt: Option<super::dlt::DltConfig>,
}

impl Default for PolicyConfig {
    fn default() -> PolicyConfig {
        PolicyConfig {
            mode: PolicyMode::Enforce,
            regime: Regime::OptIn,
            default_country_code: "86".into(),
            on_snapshot_unavailable: Unavailable::Reject,
            reject_status: Reason::default_statuses(),
            cmpp_result: Reason::ALL.map(Reason::default_cmpp_result),
            cmpp_stat: Reason::ALL.map(Reason::default_cmpp_stat),
            quiet_hours: None,
            zones: Zones::default(),
            content: ContentRules::default(),
            commercial: CommercialConfig::default(),
            frequency: FrequencyConfig {
                per_entity_per_day: 0,
                per_subscriber_per_day: 0,
                same_text_window_s: 0,
                subscribers: FrequencyConfig::DEFAULT_SUBSCRIBERS,
                peak_rate: FrequencyConfig::DEFAULT_PEAK_RATE,
                checkpoint_s: FrequencyConfig::DEFAULT_CHECKPOINT_S,
            },
            reassembly_timeout_ms: 2_000,
            dlt: None,
        }
    }
}

/// A daily window of local time, `[start, end)` in minutes since midnight; `start > end`
/// wraps midnight (21:00–08:00). Never empty: `start == end` is refused by the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailyWindow {
    pub start: u16,
    pub end: u16,
}

impl DailyWindow {
    /// Whether `minute` (0..1440 since local midnight) is inside the window.
    #[inline]
    pub fn contains(self, minute: u32) -> bool {
        let (s, e) = (u32::from(self.start), u32::from(self.end));
        if s <= e {
            s <= minute && minute < e
        } else {
            minute >= s || minute < e
        }
    }

    /// `HH:MM` → minutes since midnight (00:00–23:59).
    pub fn parse_time(t: &str) -> Option<u16> {
        let (h, m) = t.split_once(':')?;
        if h.len() != 2 || m.len() != 2 {
            return None;
        }
        let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60).then_some(h * 60 + m)
    }

    /// `HH:MM`.
    pub fn fmt_time(minute: u16) -> String {
        format!("{:02}:{:02}", minute / 60, minute % 60)
    }
}

/// Subscribers' time zones: by the longest matching country code, else the fallback.
#[derive(Debug, Clone)]
pub struct Zones {
    /// (country code as a number, its digit count, zone), longest codes first.
    by_cc: Vec<(u64, u32, crate::time::Zone)>,
    fallback: crate::time::Zone,
}

impl Default for Zones {
    fn default() -> Zones {
        Zones { by_cc: Vec::new(), fallback: crate::time::Zone::utc() }
    }
}

impl Zones {
    /// `by_cc`: (country code digits, zone); `fallback`: for every other number.
    pub fn new(by_cc: Vec<(String, crate::time::Zone)>, fallback: crate::time::Zone) -> Zones {
        let mut v: Vec<(u64, u32, crate::time::Zone)> =
            by_cc.into_iter().filter_map(|(cc, z)| Some((cc.parse().ok()?, cc.len() as u32, z))).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        Zones { by_cc: v, fallback }
    }

    /// The zone of an E.164 number (`None`: not a subscriber number → the fallback).
    #[inline]
    pub fn of(&self, msisdn: Option<u64>) -> &crate::time::Zone {
        if let Some(m) = msisdn.filter(|&m| m > 0) {
            let digits = m.ilog10() + 1;
            for (cc, len, z) in &self.by_cc {
                if *len < digits && m / 10u64.pow(digits - len) == *cc {
                    return z;
                }
            }
        }
        &self.fallback
    }

    pub fn fallback(&self) -> &crate::time::Zone {
        &self.fallback
    }
}

/// `policy.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyMode {
    /// Rejects are answered with their status.
    Enforce,
    /// Rejects become [`super::Verdict::WouldReject`] and the message is forwarded.
    Monitor,
}

/// `policy.regime`: what no statement at all means for a commercial message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Regime {
    /// Only an explicit grant allows (Order No. 74: no consent counts as refusal).
    OptIn,
    /// Allowed unless the subscriber refused.
    OptOut,
}

/// `policy.on_snapshot_unavailable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// Reject commercial traffic with `snapshot_unavailable` (fail closed; default).
    Reject,
    /// Let it through (fail open).
    Allow,
}

impl PolicyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyMode::Enforce => "enforce",
            PolicyMode::Monitor => "monitor",
        }
    }
}

impl Regime {
    pub fn as_str(self) -> &'static str {
        match self {
            Regime::OptIn => "opt-in",
            Regime::OptOut => "opt-out",
        }
    }
}

/// The class of a message: only marketing (commercial) messages need consent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageClass {
    Marketing,
    Transactional,
}

impl MessageClass {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageClass::Marketing => "marketing",
            MessageClass::Transactional => "transactional",
        }
    }
}

/// A sender platform allowed to bind (`[[account]]`).
#[derive(Debug, Clone)]
pub struct Account {
    pub system_id: String,
    /// The brand / organisation its consent records name (validated non-empty).
    pub entity: String,
    pub class: MessageClass,
    /// Telecom licence number; a bind without one is refused.
    pub licence: Option<String>,
    /// Last valid day of the licence (UTC), as days since 1970-01-01.
    pub licence_expires: Option<i64>,
    /// Allowed source_addr patterns; empty = any.
    pub sender_id: Vec<Pattern>,
    /// Per-source-address class overrides, most specific (longest) pattern first.
    pub source_class: Vec<(Pattern, MessageClass)>,
    /// Class by service_type (exact match), consulted after `source_class`.
    pub service_type_class: Vec<(String, MessageClass)>,
    /// Per-account submit rate cap (PDUs/s over all its sessions on this node; step 3);
    /// None = unlimited.
    pub max_tps: Option<u32>,
    pub bind_types: Vec<BindType>,
    /// Bound sessions at once on this node; a bind beyond is refused ESME_RBINDFAIL.
    pub max_sessions: Option<u32>,
    /// `[account.quiet_hours]`: this account's window instead of `[policy.quiet_hours]`
    /// (same time zones).
    pub quiet_hours: Option<DailyWindow>,
    /// Registered 【signature】 texts, as written (step 5).
    pub signatures: Vec<String>,
    /// `[account.frequency] per_entity_per_day`: this account's cap instead of the policy's
    /// (0 = none for this account).
    pub per_entity_per_day: Option<u32>,
    /// `scrubbing`: `"dlt"` runs the India DLT steps ([`super::dlt`]) instead of steps 4–7.
    pub scrubbing: super::dlt::Scrubbing,
    /// `pe_id`: the DLT PE id used when a message carries none in `dlt.pe_id_tlv`.
    pub pe_id: Option<u64>,
}

/// Why an account may not bind now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindRefusal {
    UnknownSystemId,
    NoLicence,
    LicenceExpired,
    BindTypeNotAllowed,
    /// The account has `max_sessions` bound on this node already.
    TooManySessions,
}

impl BindRefusal {
    /// The bind_resp command_status.
    pub fn status(self) -> u32 {
        use crate::smpp::status;
        match self {
            BindRefusal::UnknownSystemId => status::ESME_RINVSYSID,
            _ => status::ESME_RBINDFAIL,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            BindRefusal::UnknownSystemId => "unknown_system_id",
            BindRefusal::NoLicence => "no_licence",
            BindRefusal::LicenceExpired => "licence_expired",
            BindRefusal::BindTypeNotAllowed => "bind_type_not_allowed",
            BindRefusal::TooManySessions => "too_many_sessions",
        }
    }
}

impl Account {
    /// Whether the licence is valid on `day` (days since 1970-01-01, UTC).
    pub fn licence_valid_on(&self, day: i64) -> Result<(), BindRefusal> {
        if self.licence.is_none() {
            return Err(BindRefusal::NoLicence);
        }
        match self.licence_expires {
            Some(last) if day > last => Err(BindRefusal::LicenceExpired),
            _ => Ok(()),
        }
    }

    /// Whether any of its messages can be classed commercial by registration (its class or
    /// one of its `source_class` / `service_type_class` overrides); the content rules may
    /// still make any message commercial.
    pub fn may_be_commercial(&self) -> bool {
        self.class == MessageClass::Marketing
            || self.source_class.iter().any(|(_, c)| *c == MessageClass::Marketing)
            || self.service_type_class.iter().any(|(_, c)| *c == MessageClass::Marketing)
    }
}

/// A source-address pattern compiled at validation: `*` matches any run of characters,
/// everything else literally. The usual shapes (an exact sender id, a prefix `1069*`) get
/// their own variant so the per-message match never rescans the pattern for `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Exact(Box<[u8]>),
    Prefix(Box<[u8]>),
    Glob(Box<[u8]>),
}

impl Pattern {
    pub fn new(pattern: &str) -> Pattern {
        let p = pattern.as_bytes();
        match p.split_last() {
            Some((b'*', prefix)) if !prefix.contains(&b'*') => Pattern::Prefix(prefix.into()),
            _ if !p.contains(&b'*') => Pattern::Exact(p.into()),
            _ => Pattern::Glob(p.into()),
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> String {
        match self {
            Pattern::Exact(p) | Pattern::Glob(p) => String::from_utf8_lossy(p).into_owned(),
            Pattern::Prefix(p) => format!("{}*", String::from_utf8_lossy(p)),
        }
    }

    /// Pattern length as written (for most-specific-first ordering).
    pub fn len(&self) -> usize {
        match self {
            Pattern::Exact(p) | Pattern::Glob(p) => p.len(),
            Pattern::Prefix(p) => p.len() + 1,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    pub fn matches(&self, s: &[u8]) -> bool {
        match self {
            Pattern::Exact(p) => **p == *s,
            Pattern::Prefix(p) => s.starts_with(p),
            Pattern::Glob(p) => glob(p, s),
        }
    }
}

/// The general `*` matcher (greedy with backtracking to the last star).
fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while si < s.len() {
        if pi < p.len() && p[pi] != b'*' && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            pi += 1;
            mark = si;
        } else if let Some(sp) = star {
            pi = sp + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

/// Matches a sender_id pattern given as text (compiles it first; for one-off checks).
pub fn pattern_matches(pattern: &str, s: &[u8]) -> bool {
    Pattern::new(pattern).matches(s)
}
