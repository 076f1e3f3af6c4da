//! Configuration in two layers (STYLE §6): [`raw`] serde structs that mirror the TOML file
//! (`deny_unknown_fields`), and the validated [`Config`] the gateway runs on. Validation
//! reports every problem at once, each naming its key; `check-config` exits 64 on any.

mod duration;
pub mod raw;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use duration::parse_duration;

use crate::smpp::BindType;

/// Default ESME window (requests in flight per session).
pub const DEFAULT_WINDOW: usize = 100;
/// Default largest PDU accepted (bytes, header included). SMPP PDUs with a 64 KiB
/// message_payload still fit.
pub const DEFAULT_MAX_PDU_BYTES: usize = 70_000;
/// Default time an ESME has to bind after connecting.
pub const DEFAULT_BIND_TIMEOUT: Duration = Duration::from_secs(10);
/// Default idle time before consentgate sends its own enquire_link on a leg.
pub const DEFAULT_ENQUIRE_LINK_INTERVAL: Duration = Duration::from_secs(30);
/// Default time the upstream has to answer one request.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time allowed to connect to the upstream SMSC.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default grace period for draining sessions at shutdown.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Default cap on concurrent ESME sessions.
pub const DEFAULT_MAX_SESSIONS: usize = 10_000;

/// One problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key path, e.g. `account[1].licence_expires`; `""` for whole-file errors.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

/// Every problem in one file, with the file's name.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors {
    pub file: PathBuf,
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} problem(s)", self.file.display(), self.errors.len())?;
        for e in &self.errors {
            write!(f, "\n  {}: {e}", self.file.display())?;
        }
        Ok(())
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Listen,
    pub upstream: Upstream,
    pub session: Session,
    pub policy: Policy,
    pub consent: ConsentConfig,
    pub admin: Admin,
    pub capture: Capture,
    /// Decision audit log (`[audit]`; off unless `audit.dir` is set).
    pub audit: crate::audit::AuditConfig,
    /// Accounts by SMPP system_id.
    pub accounts: HashMap<String, Account>,
}

/// Default `capture.max_file_bytes` (100 MB).
pub const DEFAULT_CAPTURE_MAX_FILE_BYTES: u64 = crate::capture::DEFAULT_MAX_FILE_BYTES;
/// Default `capture.max_files`.
pub const DEFAULT_CAPTURE_MAX_FILES: usize = crate::capture::DEFAULT_MAX_FILES;

/// `[capture]`: gateway-side pcapng recording of both legs of each session
/// ([`crate::capture`]).
#[derive(Debug, Clone, Default)]
pub struct Capture {
    /// Off by default; on, `dir` is required.
    pub enabled: bool,
    /// Where the rotated `consentgate-*.pcapng` files go.
    pub dir: PathBuf,
    /// Rotate before a file grows past this (≥ 64 KiB).
    pub max_file_bytes: u64,
    /// Oldest files beyond this many are deleted.
    pub max_files: usize,
    /// system_ids to record; empty = every session.
    pub accounts: Vec<String>,
}

impl Capture {
    /// The writer's settings (queue sizes at their defaults).
    pub fn writer_config(&self) -> crate::capture::CaptureConfig {
        crate::capture::CaptureConfig {
            dir: self.dir.clone(),
            max_file_bytes: self.max_file_bytes,
            max_files: self.max_files,
            accounts: self.accounts.clone(),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone)]
pub struct Listen {
    /// ESME-facing SMPP listener.
    pub smpp: SocketAddr,
    /// Admin HTTP listener (metrics, health, admin API).
    pub admin: SocketAddr,
}

#[derive(Debug, Clone)]
pub struct Upstream {
    /// The carrier SMSC (host:port; resolved at connect time).
    pub address: String,
    pub connect_timeout: Duration,
    /// Time the SMSC has to answer a bind.
    pub bind_timeout: Duration,
    /// Time the SMSC has to answer any other request before the ESME is answered with
    /// `response_timeout_status`.
    pub response_timeout: Duration,
    pub response_timeout_status: u32,
    /// Idle time on the upstream leg before consentgate sends its own enquire_link.
    pub enquire_link_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct Session {
    /// Requests in flight per ESME session; beyond it ESME_RTHROTTLED.
    pub window: usize,
    pub max_pdu_bytes: usize,
    /// Time an ESME has to bind after connecting.
    pub bind_timeout: Duration,
    /// Idle time on the ESME leg before consentgate sends its own enquire_link.
    pub enquire_link_interval: Duration,
    /// Time the ESME has to answer a deliver_sm or enquire_link sent to it.
    pub response_timeout: Duration,
    pub max_sessions: usize,
    pub shutdown_grace: Duration,
}

/// Policy settings (DESIGN §3).
#[derive(Debug, Clone)]
pub struct Policy {
    pub mode: PolicyMode,
    pub regime: Regime,
    /// Country calling code added to national numbers (no `+`), e.g. "86".
    pub default_country_code: String,
    /// What commercial traffic gets before any snapshot is loaded.
    pub on_snapshot_unavailable: Unavailable,
    /// MO texts (after normalisation) recorded as a refusal of the session's entity.
    pub optout_keywords: Vec<String>,
    /// command_status per reject reason, indexed by `policy::Reason as usize`.
    pub reject_status: [u32; crate::policy::Reason::COUNT],
}

/// `policy.on_snapshot_unavailable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// Reject commercial traffic with `snapshot_unavailable` (fail closed; default).
    Reject,
    /// Let it through (fail open).
    Allow,
}

/// Default opt-out keywords (DESIGN §1): Chinese, pinyin initials and the US/CTIA set.
pub const DEFAULT_OPTOUT_KEYWORDS: &[&str] =
    &["T", "TD", "R", "退订", "取消", "STOP", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyMode {
    Enforce,
    Monitor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Regime {
    OptIn,
    OptOut,
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

/// `[consent]` and `[node]` validate into the consent data's own config type.
pub use crate::consent::ConsentConfig;

/// Where the admin API's bearer token comes from (`[admin]`).
pub const DEFAULT_ADMIN_TOKEN_ENV: &str = "CONSENTGATE_ADMIN_TOKEN";

/// Admin API settings. Mutating endpoints need `Authorization: Bearer <token>`; without a
/// token configured they are refused.
#[derive(Debug, Clone, Default)]
pub struct Admin {
    pub token: Option<Secret>,
    /// Where the token was looked for (`file PATH` or `env NAME`), for messages.
    pub token_source: String,
}

/// A credential: never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// Constant-time comparison (no early exit on the first differing byte).
    pub fn matches(&self, candidate: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), candidate.as_bytes());
        let mut diff = (a.len() != b.len()) as u8;
        for (i, x) in a.iter().enumerate() {
            diff |= x ^ b.get(i).copied().unwrap_or(0);
        }
        diff == 0
    }
}

/// A sender platform allowed to bind.
#[derive(Debug, Clone)]
pub struct Account {
    pub system_id: String,
    /// The brand / organisation its consent records name.
    pub entity: String,
    pub class: MessageClass,
    /// Telecom licence number; a bind without one is refused.
    pub licence: Option<String>,
    /// Last valid day of the licence (UTC), as days since 1970-01-01.
    pub licence_expires: Option<i64>,
    /// Allowed source_addr patterns (`*` wildcard); empty = any.
    pub sender_id: Vec<String>,
    /// Per-source-address class overrides: (pattern, class), first match wins.
    pub source_class: Vec<(String, MessageClass)>,
    /// Class by service_type (exact match), consulted after `source_class`.
    pub service_type_class: Vec<(String, MessageClass)>,
    /// Per-account submit rate cap (msg/s); None = unlimited.
    pub max_tps: Option<u32>,
    pub bind_types: Vec<BindType>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageClass {
    Marketing,
    Transactional,
}

/// Why an account may not bind now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindRefusal {
    UnknownSystemId,
    NoLicence,
    LicenceExpired,
    BindTypeNotAllowed,
}

impl BindRefusal {
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
        }
    }
}

impl Account {
    /// Whether the licence is valid on `today` (days since 1970-01-01, UTC).
    pub fn licence_valid_on(&self, today: i64) -> Result<(), BindRefusal> {
        if self.licence.is_none() {
            return Err(BindRefusal::NoLicence);
        }
        match self.licence_expires {
            Some(last) if today > last => Err(BindRefusal::LicenceExpired),
            _ => Ok(()),
        }
    }
}

impl Config {
    /// Checks a bind against the account registry.
    pub fn admit(&self, system_id: &str, bind_type: BindType, today: i64) -> Result<&Account, BindRefusal> {
        let acct = self.accounts.get(system_id).ok_or(BindRefusal::UnknownSystemId)?;
        acct.licence_valid_on(today)?;
        if !acct.bind_types.contains(&bind_type) {
            return Err(BindRefusal::BindTypeNotAllowed);
        }
        Ok(acct)
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
            file: path.to_owned(),
            errors: vec![ConfigError { key: String::new(), message: format!("cannot read: {e}") }],
        })?;
        Config::parse(&text).map_err(|errors| ConfigErrors { file: path.to_owned(), errors })
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Config, Vec<ConfigError>> {
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| {
            let key = e.span().map(|s| line_of(text, s.start)).map(|l| format!("line {l}")).unwrap_or_default();
            vec![ConfigError { key, message: e.message().to_owned() }]
        })?;
        raw.validate()
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|&b| b == b'\n').count() + 1
}

pub use crate::time::{civil_from_days, days_from_civil, parse_date, today};

/// Matches a sender_id pattern: `*` matches any run of characters, everything else literally.
pub fn pattern_matches(pattern: &str, s: &[u8]) -> bool {
    let p = pattern.as_bytes();
    // The usual shapes, without the general loop (this runs per submit): a prefix (`1069*`)
    // and an exact sender id.
    match p.split_last() {
        Some((b'*', prefix)) if !prefix.contains(&b'*') => return s.starts_with(prefix),
        _ if !p.contains(&b'*') => return p == s,
        _ => {}
    }
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

#[cfg(test)]
mod tests;
