//! The TOML file as written: every section and key, with `deny_unknown_fields` so a typo is
//! an error rather than a silently ignored setting. [`RawConfig::validate`] turns it into a
//! [`Config`], collecting every problem.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::*;
use crate::capture::CaptureConfig;
use crate::policy::content::{CommercialConfig, ContentRule, ContentRules, RuleAction};
use crate::policy::frequency::FrequencyConfig;
use crate::policy::DailyWindow;
use crate::smpp::BindType;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub listen: Option<RawListen>,
    pub upstream: Option<RawUpstream>,
    pub session: Option<RawSession>,
    pub policy: Option<RawPolicy>,
    pub consent: Option<RawConsent>,
    pub node: Option<RawNode>,
    pub admin: Option<RawAdmin>,
    pub capture: Option<RawCapture>,
    pub audit: Option<RawAudit>,
    pub complaints: Option<RawComplaints>,
    pub replication: Option<RawReplication>,
    pub limits: Option<RawLimits>,
    #[serde(default)]
    pub account: Vec<RawAccount>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReplication {
    pub redis: Option<String>,
    pub password_env: Option<String>,
    pub stream: Option<String>,
    pub on_disconnect: Option<String>,
    pub timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawComplaints {
    pub db: Option<String>,
    pub calendar: Option<String>,
    pub respond_within: Option<i64>,
    pub suspend_after: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListen {
    pub smpp: Option<String>,
    pub smpp_tls: Option<String>,
    pub admin: Option<String>,
    pub tls: Option<RawListenTls>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenTls {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub client_ca: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    pub enabled: Option<bool>,
    pub ca: Option<String>,
    pub server_name: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub address: Option<String>,
    pub connect_timeout: Option<String>,
    pub bind_timeout: Option<String>,
    pub response_timeout: Option<String>,
    pub response_timeout_status: Option<u32>,
    pub enquire_link_interval: Option<String>,
    pub tls: Option<RawUpstreamTls>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSession {
    pub window: Option<i64>,
    pub max_pdu_bytes: Option<i64>,
    pub bind_timeout: Option<String>,
    pub enquire_link_interval: Option<String>,
    pub response_timeout: Option<String>,
    pub max_sessions: Option<i64>,
    pub shutdown_grace: Option<String>,
    pub pdu_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub bind_failures_per_ip: Option<i64>,
    pub bind_failure_window: Option<String>,
    pub bind_backoff: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub mode: Option<String>,
    pub regime: Option<String>,
    pub default_country_code: Option<String>,
    pub on_snapshot_unavailable: Option<String>,
    pub optout_keywords: Option<Vec<String>>,
    pub reject_status: Option<HashMap<String, u32>>,
    pub quiet_hours: Option<RawQuietHours>,
    pub timezones: Option<HashMap<String, String>>,
    pub reassembly_timeout: Option<String>,
    pub frequency: Option<RawFrequency>,
    pub commercial: Option<RawCommercial>,
    #[serde(default)]
    pub content_rule: Vec<RawContentRule>,
}

/// `[policy.frequency]`, and (only `per_entity_per_day`) `[account.frequency]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFrequency {
    pub per_entity_per_day: Option<i64>,
    pub per_subscriber_per_day: Option<i64>,
    pub same_text_window: Option<String>,
    pub subscribers: Option<i64>,
    pub peak_rate: Option<i64>,
}

/// `[policy.commercial]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCommercial {
    pub require_signature: Option<bool>,
    pub opt_out_hints: Option<Vec<String>>,
}

/// One `[[policy.content_rule]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawContentRule {
    pub name: Option<String>,
    pub literals: Option<Vec<String>>,
    pub regex: Option<Vec<String>>,
    pub action: Option<String>,
}

/// `[policy.quiet_hours]`, and (without `timezone`) `[account.quiet_hours]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQuietHours {
    pub start: Option<String>,
    pub end: Option<String>,
    pub timezone: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsent {
    pub snapshot: Option<String>,
    pub journal: Option<String>,
    pub watch: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    pub id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub token_file: Option<String>,
    pub token_env: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCapture {
    pub enabled: Option<bool>,
    pub dir: Option<String>,
    pub max_file_bytes: Option<i64>,
    pub max_files: Option<i64>,
    pub accounts: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    pub mode: Option<String>,
    pub dir: Option<String>,
    pub rotate_bytes: Option<i64>,
    pub rotate_interval: Option<String>,
    pub retention: Option<String>,
    pub queue_records: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccount {
    pub system_id: Option<String>,
    pub entity: Option<String>,
    pub class: Option<String>,
    pub licence: Option<String>,
    pub licence_expires: Option<String>,
    pub sender_id: Option<Vec<String>>,
    pub source_class: Option<HashMap<String, String>>,
    pub service_type_class: Option<HashMap<String, String>>,
    pub max_tps: Option<i64>,
    pub bind_types: Option<Vec<String>>,
    pub max_sessions: Option<i64>,
    pub quiet_hours: Option<RawQuietHours>,
    pub signatures: Option<Vec<String>>,
    pub frequency: Option<RawFrequency>,
}

/// Collects problems while validating.
struct Problems(Vec<ConfigError>);

/// The words a closed-set key takes, and what each means.
const MODES: &[(&str, PolicyMode)] = &[("enforce", PolicyMode::Enforce), ("monitor", PolicyMode::Monitor)];
const REGIMES: &[(&str, Regime)] = &[("opt-in", Regime::OptIn), ("opt-out", Regime::OptOut)];
const UNAVAILABLE: &[(&str, Unavailable)] = &[("reject", Unavailable::Reject), ("allow", Unavailable::Allow)];
const CLASSES: &[(&str, MessageClass)] =
    &[("marketing", MessageClass::Marketing), ("transactional", MessageClass::Transactional)];
const RULE_ACTIONS: &[(&str, RuleAction)] = &[("marketing", RuleAction::Marketing), ("reject", RuleAction::Reject)];
const BIND_TYPES: &[(&str, BindType)] =
    &[("transmitter", BindType::Transmitter), ("receiver", BindType::Receiver), ("transceiver", BindType::Transceiver)];

impl Problems {
    /// The meaning of `word` among `choices`; otherwise a problem under `key` listing them.
    fn choice<T: Copy>(&mut self, key: &str, word: &str, choices: &[(&str, T)]) -> Option<T> {
        let found = choices.iter().find(|(w, _)| *w == word).map(|&(_, v)| v);
        if found.is_none() {
            let names: Vec<&str> = choices.iter().map(|&(w, _)| w).collect();
            self.push(key, format!("`{word}`: expected {}", names.join(" | ")));
        }
        found
    }

    fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError { key: key.into(), message: message.into() });
    }
    /// `v`, or a problem naming `key` when it is missing.
    fn required(&mut self, key: &str, v: Option<String>) -> Option<String> {
        if v.is_none() {
            self.push(key, "required");
        }
        v
    }
    fn addr(&mut self, key: &str, v: Option<&str>, default: &str) -> SocketAddr {
        let s = v.unwrap_or(default);
        s.parse().unwrap_or_else(|_| {
            self.push(key, format!("`{s}` is not an IP:port socket address"));
            default.parse().expect("default address parses")
        })
    }
    fn duration(&mut self, key: &str, v: Option<&str>, default: Duration) -> Duration {
        match v.map(parse_duration) {
            None => default,
            Some(Ok(d)) if !d.is_zero() => d,
            Some(Ok(_)) => {
                self.push(key, "must be greater than zero");
                default
            }
            Some(Err(e)) => {
                self.push(key, e.to_string());
                default
            }
        }
    }
    fn range(&mut self, key: &str, v: Option<i64>, default: usize, lo: i64, hi: i64) -> usize {
        match v {
            None => default,
            Some(n) if (lo..=hi).contains(&n) => n as usize,
            Some(n) => {
                self.push(key, format!("{n} is outside {lo}..={hi}"));
                default
            }
        }
    }
}

impl RawConfig {
    /// Validates everything, reporting every problem with its key.
    pub fn validate(self) -> Result<Config, Vec<ConfigError>> {
        let mut p = Problems(Vec::new());
        let listen = validate_listen(self.listen.unwrap_or_default(), &mut p);
        let upstream = validate_upstream(self.upstream.unwrap_or_default(), &mut p);
        let mut session = validate_session(self.session.unwrap_or_default(), &mut p);
        session.limits = validate_limits(self.limits.unwrap_or_default(), &mut p);
        let (policy, optout_keywords) = validate_policy(self.policy.unwrap_or_default(), &mut p);
        let c = self.consent.unwrap_or_default();
        let node = match self.node.and_then(|n| n.id) {
            None => crate::consent::NodeId::from_hostname(),
            Some(id) => crate::consent::NodeId::parse(&id).unwrap_or_else(|e| {
                p.push("node.id", e.to_string());
                crate::consent::NodeId::from_hostname()
            }),
        };
        let consent = ConsentConfig {
            snapshot: c.snapshot.map(Into::into),
            journal: c.journal.map(Into::into),
            watch: c.watch.unwrap_or(false),
            node,
        };
        let admin = validate_admin(self.admin.unwrap_or_default(), &mut p);
        let accounts = validate_accounts(self.account, &mut p);
        let capture = validate_capture(self.capture.unwrap_or_default(), &accounts, &mut p);
        let audit = validate_audit(self.audit.unwrap_or_default(), &mut p);
        let complaints = self.complaints.and_then(|c| validate_complaints(c, &policy, &mut p));
        let replication = self.replication.and_then(|r| validate_replication(r, &consent, &mut p));
        if p.0.is_empty() {
            Ok(Config {
                listen,
                upstream,
                session,
                policy,
                accounts,
                optout_keywords,
                consent,
                admin,
                capture,
                audit,
                complaints,
                replication,
            })
        } else {
            Err(p.0)
        }
    }
}

fn validate_listen(l: RawListen, p: &mut Problems) -> ListenConfig {
    let smpp_tls = l.smpp_tls.as_deref().and_then(|a| match a.parse::<SocketAddr>() {
        Ok(v) => Some(v),
        Err(_) => {
            p.push("listen.smpp_tls", format!("`{a}` is not an IP:port socket address"));
            None
        }
    });
    let tls = match (l.tls, smpp_tls) {
        (None, None) => None,
        (None, Some(_)) => {
            p.push("listen.smpp_tls", "needs [listen.tls] with cert and key");
            None
        }
        (Some(_), None) => {
            p.push("listen.tls", "set but listen.smpp_tls (the TLS listener's address) is not");
            None
        }
        (Some(t), Some(_)) => {
            let (cert, key) = (p.required("listen.tls.cert", t.cert), p.required("listen.tls.key", t.key));
            match (cert, key) {
                (Some(cert), Some(key)) => {
                    let cfg = crate::relay::ServerTlsConfig {
                        cert: cert.into(),
                        key: key.into(),
                        client_ca: t.client_ca.map(PathBuf::from),
                    };
                    // Read now, so that `check-config` and a start refuse bad files.
                    if let Err(e) = crate::relay::tls::server_config(&cfg) {
                        let key =
                            tls_error_key(&e, &[(&cfg.cert, "cert"), (&cfg.key, "key")], cfg.client_ca.as_deref());
                        p.push(format!("listen.tls.{key}"), e.to_string());
                    }
                    Some(cfg)
                }
                _ => None,
            }
        }
    };
    ListenConfig {
        smpp: p.addr("listen.smpp", l.smpp.as_deref(), "0.0.0.0:2775"),
        smpp_tls,
        admin: p.addr("listen.admin", l.admin.as_deref(), "127.0.0.1:9775"),
        tls,
    }
}

/// The key (`cert`, `key`, `ca`/`client_ca`) whose file a TLS error names.
fn tls_error_key(
    e: &crate::relay::tls::TlsError,
    files: &[(&std::path::Path, &'static str)],
    ca: Option<&std::path::Path>,
) -> &'static str {
    match e {
        crate::relay::tls::TlsError::File { path, .. } => files
            .iter()
            .find(|(f, _)| *f == path.as_path())
            .map(|(_, k)| *k)
            .unwrap_or(if ca.is_some() { "client_ca" } else { "cert" }),
        crate::relay::tls::TlsError::Rustls(_) => "cert",
    }
}

fn validate_upstream_tls(t: RawUpstreamTls, address: &str, p: &mut Problems) -> Option<crate::relay::ClientTlsConfig> {
    if t.enabled == Some(false) {
        return None;
    }
    let ca = p.required("upstream.tls.ca", t.ca)?;
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h).trim_start_matches('[').trim_end_matches(']');
    let server_name = t.server_name.unwrap_or_else(|| host.to_owned());
    if t.cert.is_some() != t.key.is_some() {
        p.push("upstream.tls.cert", "cert and key go together (a client certificate for the SMSC)");
        return None;
    }
    let cfg = crate::relay::ClientTlsConfig {
        ca: ca.into(),
        server_name,
        cert: t.cert.map(PathBuf::from),
        key: t.key.map(PathBuf::from),
    };
    if let Err(e) = crate::relay::tls::client_config(&cfg) {
        let key = match &e {
            crate::relay::tls::TlsError::File { path, .. } if Some(path) == cfg.cert.as_ref() => "cert",
            crate::relay::tls::TlsError::File { path, .. } if Some(path) == cfg.key.as_ref() => "key",
            crate::relay::tls::TlsError::File { .. } => "ca",
            crate::relay::tls::TlsError::Rustls(_) => "server_name",
        };
        p.push(format!("upstream.tls.{key}"), e.to_string());
    }
    Some(cfg)
}

fn validate_upstream(u: RawUpstream, p: &mut Problems) -> UpstreamConfig {
    let address = match u.address {
        Some(a) if a.rsplit_once(':').is_some_and(|(h, port)| !h.is_empty() && port.parse::<u16>().is_ok()) => a,
        Some(a) => {
            p.push("upstream.address", format!("`{a}` is not host:port"));
            a
        }
        None => {
            p.push("upstream.address", "required: the SMSC to relay to (host:port)");
            String::new()
        }
    };
    UpstreamConfig {
        connect_timeout: p.duration("upstream.connect_timeout", u.connect_timeout.as_deref(), DEFAULT_CONNECT_TIMEOUT),
        bind_timeout: p.duration("upstream.bind_timeout", u.bind_timeout.as_deref(), DEFAULT_UPSTREAM_BIND_TIMEOUT),
        response_timeout: p.duration(
            "upstream.response_timeout",
            u.response_timeout.as_deref(),
            DEFAULT_UPSTREAM_RESPONSE_TIMEOUT,
        ),
        response_timeout_status: u.response_timeout_status.unwrap_or(crate::smpp::status::ESME_RSYSERR),
        enquire_link_interval: p.duration(
            "upstream.enquire_link_interval",
            u.enquire_link_interval.as_deref(),
            DEFAULT_UPSTREAM_ENQUIRE_LINK_INTERVAL,
        ),
        tls: u.tls.and_then(|t| validate_upstream_tls(t, &address, p)),
        address,
    }
}

fn validate_session(s: RawSession, p: &mut Problems) -> SessionConfig {
    SessionConfig {
        window: p.range("session.window", s.window, DEFAULT_WINDOW, 1, 100_000),
        max_pdu_bytes: p.range("session.max_pdu_bytes", s.max_pdu_bytes, DEFAULT_MAX_PDU_BYTES, 64, 16 << 20),
        bind_timeout: p.duration("session.bind_timeout", s.bind_timeout.as_deref(), DEFAULT_BIND_TIMEOUT),
        enquire_link_interval: p.duration(
            "session.enquire_link_interval",
            s.enquire_link_interval.as_deref(),
            DEFAULT_ENQUIRE_LINK_INTERVAL,
        ),
        response_timeout: p.duration(
            "session.response_timeout",
            s.response_timeout.as_deref(),
            DEFAULT_RESPONSE_TIMEOUT,
        ),
        max_sessions: p.range("session.max_sessions", s.max_sessions, DEFAULT_MAX_SESSIONS, 1, 1_000_000),
        shutdown_grace: p.duration("session.shutdown_grace", s.shutdown_grace.as_deref(), DEFAULT_SHUTDOWN_GRACE),
        pdu_timeout: p.duration(
            "session.pdu_timeout",
            s.pdu_timeout.as_deref(),
            crate::session::config::DEFAULT_PDU_TIMEOUT,
        ),
        limits: Default::default(),
    }
}

/// `[limits]` (DESIGN §9).
fn validate_limits(l: RawLimits, p: &mut Problems) -> crate::session::config::LimitsConfig {
    use crate::session::config::{
        LimitsConfig, DEFAULT_BIND_BACKOFF, DEFAULT_BIND_FAILURES_PER_IP, DEFAULT_BIND_FAILURE_WINDOW,
    };
    LimitsConfig {
        bind_failures_per_ip: p.range(
            "limits.bind_failures_per_ip",
            l.bind_failures_per_ip,
            DEFAULT_BIND_FAILURES_PER_IP as usize,
            0,
            1_000_000,
        ) as u32,
        bind_failure_window: p.duration(
            "limits.bind_failure_window",
            l.bind_failure_window.as_deref(),
            DEFAULT_BIND_FAILURE_WINDOW,
        ),
        bind_backoff: p.duration("limits.bind_backoff", l.bind_backoff.as_deref(), DEFAULT_BIND_BACKOFF),
        ..LimitsConfig::default()
    }
}

/// `[policy]`, and the opt-out keywords it carries for `optout`.
fn validate_policy(pol: RawPolicy, p: &mut Problems) -> (PolicyConfig, Vec<String>) {
    let mode = pol.mode.and_then(|w| p.choice("policy.mode", &w, MODES)).unwrap_or(PolicyMode::Enforce);
    let regime = pol.regime.and_then(|w| p.choice("policy.regime", &w, REGIMES)).unwrap_or(Regime::OptIn);
    let cc = pol.default_country_code.unwrap_or_else(|| "86".into());
    if cc.is_empty() || cc.len() > 3 || !cc.bytes().all(|b| b.is_ascii_digit()) || cc.starts_with('0') {
        p.push("policy.default_country_code", format!("`{cc}`: expected 1-3 digits without leading 0, e.g. \"86\""));
    }
    let on_snapshot_unavailable = pol
        .on_snapshot_unavailable
        .and_then(|w| p.choice("policy.on_snapshot_unavailable", &w, UNAVAILABLE))
        .unwrap_or(Unavailable::Reject);
    let optout_keywords = match pol.optout_keywords {
        None => DEFAULT_OPTOUT_KEYWORDS.iter().map(|s| s.to_string()).collect(),
        Some(v) => {
            if v.iter().any(|k| k.trim().is_empty()) {
                p.push("policy.optout_keywords", "keywords must not be empty");
            }
            v
        }
    };
    let mut reject_status = crate::policy::Reason::default_statuses();
    for (name, st) in pol.reject_status.unwrap_or_default() {
        match crate::policy::Reason::from_label(&name) {
            Some(r) if st != 0 => reject_status[r as usize] = st,
            Some(_) => p.push(format!("policy.reject_status.{name}"), "0 (ESME_ROK) cannot be a reject status"),
            None => p.push(
                format!("policy.reject_status.{name}"),
                format!("unknown reason; expected one of {}", crate::policy::Reason::labels().join(", ")),
            ),
        }
    }
    if reject_status.contains(&crate::smpp::status::ESME_RINVDSTADR) {
        p.push(
            "policy.reject_status",
            "0x0B (ESME_RINVDSTADR) makes senders purge the number; use the vendor range 0x400-0x4FF",
        );
    }
    let (quiet_hours, fallback) = match pol.quiet_hours {
        None => (None, crate::time::Zone::utc()),
        Some(q) => {
            let zone = match q.timezone.as_deref() {
                None => crate::time::Zone::utc(),
                Some(name) => crate::time::Zone::get(name).unwrap_or_else(|e| {
                    p.push("policy.quiet_hours.timezone", e.to_string());
                    crate::time::Zone::utc()
                }),
            };
            (daily_window("policy.quiet_hours", q.start, q.end, p), zone)
        }
    };
    let mut by_cc = Vec::new();
    for (cc, name) in pol.timezones.unwrap_or_default() {
        let key = format!("policy.timezones.\"{cc}\"");
        if cc.is_empty() || cc.len() > 3 || !cc.bytes().all(|b| b.is_ascii_digit()) || cc.starts_with('0') {
            p.push(&key, format!("`{cc}`: a country code is 1-3 digits without leading 0, e.g. \"86\""));
            continue;
        }
        match crate::time::Zone::get(&name) {
            Ok(z) => by_cc.push((cc, z)),
            Err(e) => p.push(&key, e.to_string()),
        }
    }
    let zones = crate::policy::Zones::new(by_cc, fallback);
    let content = validate_content_rules(pol.content_rule, p);
    let commercial = pol.commercial.unwrap_or_default();
    let hints = commercial.opt_out_hints.unwrap_or_default();
    if hints.iter().any(|h| h.trim().is_empty()) {
        p.push("policy.commercial.opt_out_hints", "hints must not be empty");
    }
    let commercial = CommercialConfig::new(commercial.require_signature.unwrap_or(false), hints);
    let frequency = validate_frequency(pol.frequency.unwrap_or_default(), p);
    let reassembly_timeout_ms = p
        .duration("policy.reassembly_timeout", pol.reassembly_timeout.as_deref(), Duration::from_secs(2))
        .as_millis()
        .min(60_000) as u64;
    (
        PolicyConfig {
            mode,
            regime,
            default_country_code: cc,
            on_snapshot_unavailable,
            reject_status,
            quiet_hours,
            zones,
            content,
            commercial,
            frequency,
            reassembly_timeout_ms,
        },
        optout_keywords,
    )
}

/// A daily cap at `key`: 1..=254 (the slot counts to 255), absent = 0 (no cap).
fn daily_cap(key: &str, v: Option<i64>, p: &mut Problems) -> u32 {
    match v {
        None => 0,
        Some(n) if (1..=FrequencyConfig::MAX_CAP as i64).contains(&n) => n as u32,
        Some(n) => {
            p.push(key, format!("{n} is outside 1..={} (omit the key for no cap)", FrequencyConfig::MAX_CAP));
            0
        }
    }
}

/// `[policy.frequency]`.
fn validate_frequency(f: RawFrequency, p: &mut Problems) -> FrequencyConfig {
    let same_text_window_s = match f.same_text_window.as_deref() {
        None => 0,
        Some(w) => {
            let d = p.duration("policy.frequency.same_text_window", Some(w), Duration::ZERO);
            if d > Duration::from_secs(7 * 86_400) {
                p.push("policy.frequency.same_text_window", "must be at most 7d");
            }
            d.as_secs().clamp(1, 7 * 86_400) as u32
        }
    };
    FrequencyConfig {
        per_entity_per_day: daily_cap("policy.frequency.per_entity_per_day", f.per_entity_per_day, p),
        per_subscriber_per_day: daily_cap("policy.frequency.per_subscriber_per_day", f.per_subscriber_per_day, p),
        same_text_window_s,
        subscribers: p.range(
            "policy.frequency.subscribers",
            f.subscribers,
            FrequencyConfig::DEFAULT_SUBSCRIBERS as usize,
            1_000,
            2_000_000_000,
        ) as u64,
        peak_rate: p.range(
            "policy.frequency.peak_rate",
            f.peak_rate,
            FrequencyConfig::DEFAULT_PEAK_RATE as usize,
            1,
            10_000_000,
        ) as u64,
    }
}

/// `[[policy.content_rule]]`, compiled; a bad regex names `policy.content_rule[i].regex[j]`.
fn validate_content_rules(raw: Vec<RawContentRule>, p: &mut Problems) -> ContentRules {
    let mut rules = Vec::with_capacity(raw.len());
    for (i, r) in raw.into_iter().enumerate() {
        let key = |f: &str| format!("policy.content_rule[{i}].{f}");
        let name = r.name.filter(|n| !n.trim().is_empty()).unwrap_or_else(|| {
            p.push(key("name"), "required: it labels the audit record of every message the rule decides");
            format!("rule{i}")
        });
        if rules.iter().any(|x: &ContentRule| x.name == name) {
            p.push(key("name"), format!("`{name}` is defined twice"));
        }
        let literals = r.literals.unwrap_or_default();
        if literals.iter().any(|l| l.trim().is_empty()) {
            p.push(key("literals"), "literals must not be empty");
        }
        let regex = r.regex.unwrap_or_default();
        if literals.is_empty() && regex.is_empty() {
            p.push(key("literals"), "a rule needs at least one of literals, regex");
        }
        let action = match r.action {
            None => {
                p.push(key("action"), "required: marketing | reject");
                RuleAction::Marketing
            }
            Some(w) => p.choice(&key("action"), &w, RULE_ACTIONS).unwrap_or(RuleAction::Marketing),
        };
        rules.push(ContentRule { name, literals, regex, action });
    }
    ContentRules::new(rules).unwrap_or_else(|e| {
        p.push(format!("policy.content_rule[{}].regex[{}]", e.rule, e.regex), e.message);
        ContentRules::default()
    })
}

/// `start` and `end` (`HH:MM`) of a quiet-hours table at `key`; problems name the key.
fn daily_window(key: &str, start: Option<String>, end: Option<String>, p: &mut Problems) -> Option<DailyWindow> {
    let mut time = |f: &str, v: Option<String>| -> Option<u16> {
        let Some(v) = v else {
            p.push(format!("{key}.{f}"), "required: HH:MM");
            return None;
        };
        DailyWindow::parse_time(&v).or_else(|| {
            p.push(format!("{key}.{f}"), format!("`{v}`: expected HH:MM, 00:00-23:59"));
            None
        })
    };
    let (start, end) = (time("start", start), time("end", end));
    let (start, end) = (start?, end?);
    if start == end {
        p.push(
            format!("{key}.end"),
            format!(
                "equals start ({}): the window would be empty; start > end wraps midnight (21:00-08:00)",
                DailyWindow::fmt_time(start)
            ),
        );
        return None;
    }
    Some(DailyWindow { start, end })
}

fn validate_admin(ad: RawAdmin, p: &mut Problems) -> AdminConfig {
    let token_env = ad.token_env.unwrap_or_else(|| DEFAULT_ADMIN_TOKEN_ENV.to_owned());
    let token = match &ad.token_file {
        Some(f) => match std::fs::read_to_string(f) {
            Ok(t) if !t.trim().is_empty() => Some(Secret(t.trim().to_owned())),
            Ok(_) => {
                p.push("admin.token_file", format!("{f}: the file is empty"));
                None
            }
            Err(e) => {
                p.push("admin.token_file", format!("{f}: {e}"));
                None
            }
        },
        None => std::env::var(&token_env).ok().filter(|t| !t.trim().is_empty()).map(|t| Secret(t.trim().to_owned())),
    };
    if token.as_ref().is_some_and(|t| t.0.len() < 16) {
        p.push(
            if ad.token_file.is_some() { "admin.token_file" } else { "admin.token_env" },
            "the token must be at least 16 characters",
        );
    }
    AdminConfig {
        token,
        token_source: ad.token_file.map(|f| format!("file {f}")).unwrap_or(format!("env {token_env}")),
        ..AdminConfig::default()
    }
}

fn validate_accounts(raw: Vec<RawAccount>, p: &mut Problems) -> Vec<Account> {
    let mut accounts: Vec<Account> = Vec::new();
    for (i, a) in raw.into_iter().enumerate() {
        let key = |f: &str| format!("account[{i}].{f}");
        let Some(system_id) = a.system_id.filter(|s| !s.is_empty()) else {
            p.push(key("system_id"), "required");
            continue;
        };
        if system_id.len() > 15 || !system_id.is_ascii() {
            p.push(key("system_id"), "SMPP system_id is at most 15 ASCII characters");
        }
        let class = match a.class.as_deref() {
            Some(w) => p.choice(&key("class"), w, CLASSES).unwrap_or(MessageClass::Marketing),
            None => {
                p.push(key("class"), "required: marketing | transactional");
                MessageClass::Marketing
            }
        };
        let licence_expires = a.licence_expires.as_deref().and_then(|d| {
            parse_date(d).or_else(|| {
                p.push(key("licence_expires"), format!("`{d}` is not a date YYYY-MM-DD"));
                None
            })
        });
        let bind_types = match a.bind_types {
            None => vec![BindType::Transmitter, BindType::Receiver, BindType::Transceiver],
            Some(v) => v.iter().filter_map(|t| p.choice(&key("bind_types"), t, BIND_TYPES)).collect(),
        };
        let mut limit = |field: &str, v: Option<i64>, max: i64| -> Option<u32> {
            let n = v?;
            if (1..=max).contains(&n) {
                return Some(n as u32);
            }
            p.push(key(field), format!("{n} is outside 1..={max}"));
            None
        };
        let max_tps = limit("max_tps", a.max_tps, 10_000_000);
        let max_sessions = limit("max_sessions", a.max_sessions, 1_000_000);
        let mut class_map = |field: &str, m: Option<HashMap<String, String>>| -> Vec<(String, MessageClass)> {
            let mut v: Vec<(String, MessageClass)> = m
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(pat, c)| p.choice(&key(&format!("{field}.{pat}")), &c, CLASSES).map(|c| (pat, c)))
                .collect();
            // Most specific (longest) pattern first, so the order in the file does not matter.
            v.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
            v
        };
        let source_class =
            class_map("source_class", a.source_class).into_iter().map(|(s, c)| (Pattern::new(&s), c)).collect();
        let service_type_class = class_map("service_type_class", a.service_type_class);
        let entity = a.entity.unwrap_or_else(|| system_id.clone());
        // The account's entity names the statements its MO opt-outs record: a bad one is
        // refused here, not by the journal at the first opt-out (it used to stop the writer).
        if let Err(e) = crate::consent::EntityName::parse(&entity) {
            p.push(key("entity"), e.to_string());
        }
        let quiet_hours = a.quiet_hours.and_then(|q| {
            if q.timezone.is_some() {
                p.push(
                    key("quiet_hours.timezone"),
                    "time zones are set once, in [policy.quiet_hours] and [policy.timezones]",
                );
            }
            daily_window(&key("quiet_hours"), q.start, q.end, p)
        });
        let signatures = a.signatures.unwrap_or_default();
        if signatures.iter().any(|s| s.trim().is_empty() || s.contains(['【', '】'])) {
            p.push(key("signatures"), "a signature is its text without the 【】 brackets, not empty");
        }
        let per_entity_per_day = a.frequency.map(|f| {
            if f.per_subscriber_per_day.is_some()
                || f.same_text_window.is_some()
                || f.subscribers.is_some()
                || f.peak_rate.is_some()
            {
                p.push(key("frequency"), "an account sets only per_entity_per_day; the rest is [policy.frequency]");
            }
            match f.per_entity_per_day {
                Some(0) => 0,
                v => daily_cap(&key("frequency.per_entity_per_day"), v, p),
            }
        });
        if accounts.iter().any(|x| x.system_id == system_id) {
            p.push(key("system_id"), format!("`{system_id}` is defined twice"));
            continue;
        }
        accounts.push(Account {
            system_id,
            entity,
            class,
            licence: a.licence.filter(|l| !l.is_empty()),
            licence_expires,
            sender_id: a.sender_id.unwrap_or_default().iter().map(|s| Pattern::new(s)).collect(),
            source_class,
            service_type_class,
            max_tps,
            bind_types,
            max_sessions,
            quiet_hours,
            signatures,
            per_entity_per_day,
        });
    }
    accounts
}

/// `[capture]`: `None` unless `enabled = true` (then `dir` is required).
fn validate_capture(cap: RawCapture, accounts: &[Account], p: &mut Problems) -> Option<CaptureConfig> {
    let cfg = CaptureConfig {
        dir: cap.dir.clone().unwrap_or_default().into(),
        max_file_bytes: match cap.max_file_bytes {
            None => DEFAULT_CAPTURE_MAX_FILE_BYTES,
            Some(n) if n >= 65_536 => n as u64,
            Some(n) => {
                p.push("capture.max_file_bytes", format!("{n}: must be at least 65536"));
                DEFAULT_CAPTURE_MAX_FILE_BYTES
            }
        },
        max_files: match cap.max_files {
            None => DEFAULT_CAPTURE_MAX_FILES,
            Some(n) if (1..=100_000).contains(&n) => n as usize,
            Some(n) => {
                p.push("capture.max_files", format!("{n}: must be 1..=100000"));
                DEFAULT_CAPTURE_MAX_FILES
            }
        },
        accounts: cap.accounts.unwrap_or_default(),
        ..Default::default()
    };
    let enabled = cap.enabled.unwrap_or(false);
    if enabled && cap.dir.as_deref().is_none_or(str::is_empty) {
        p.push("capture.dir", "required when capture.enabled = true");
    }
    for (i, a) in cfg.accounts.iter().enumerate() {
        if !accounts.iter().any(|x| &x.system_id == a) {
            p.push(format!("capture.accounts[{i}]"), format!("`{a}` is not an [[account]] system_id"));
        }
    }
    enabled.then_some(cfg)
}

/// `[audit]`: mode defaults to `rejects` when a directory is given and to off without one; an
/// explicit `all` / `rejects` without a directory is an error naming `audit.dir`.
fn validate_audit(a: RawAudit, p: &mut Problems) -> crate::audit::AuditConfig {
    use crate::audit::{
        AuditConfig, AuditMode, DEFAULT_QUEUE_RECORDS, DEFAULT_RETENTION, DEFAULT_ROTATE_BYTES,
        DEFAULT_ROTATE_INTERVAL, MIN_RETENTION,
    };
    let dir = match a.dir {
        Some(d) if d.trim().is_empty() => {
            p.push("audit.dir", "must not be empty (omit it, or set audit.mode = \"off\", to disable the audit log)");
            None
        }
        d => d.map(PathBuf::from),
    };
    let mode = match a.mode.as_deref() {
        None if dir.is_some() => AuditMode::Rejects,
        None | Some("off") => AuditMode::Off,
        Some(m @ ("all" | "rejects")) => {
            if dir.is_none() {
                p.push("audit.dir", format!("required when audit.mode = \"{m}\" (or set audit.mode = \"off\")"));
            }
            if m == "all" {
                AuditMode::All
            } else {
                AuditMode::Rejects
            }
        }
        Some(o) => {
            p.push("audit.mode", format!("`{o}`: expected all | rejects | off"));
            AuditMode::Off
        }
    };
    let rotate_bytes = p.range("audit.rotate_bytes", a.rotate_bytes, DEFAULT_ROTATE_BYTES as usize, 1 << 20, 1 << 40);
    let rotate_interval = p.duration("audit.rotate_interval", a.rotate_interval.as_deref(), DEFAULT_ROTATE_INTERVAL);
    if rotate_interval < Duration::from_secs(60) {
        p.push("audit.rotate_interval", "must be at least 1m");
    }
    let retention = p.duration("audit.retention", a.retention.as_deref(), DEFAULT_RETENTION);
    if retention < MIN_RETENTION {
        p.push("audit.retention", "must be at least 1d (complaint rules need months: the default is 150d)");
    }
    let queue_records = p.range("audit.queue_records", a.queue_records, DEFAULT_QUEUE_RECORDS, 1024, 16 << 20);
    AuditConfig {
        mode: if dir.is_some() { mode } else { AuditMode::Off },
        dir,
        rotate_bytes: rotate_bytes as u64,
        rotate_interval,
        retention,
        queue_records,
    }
}

/// `[complaints]`: `db` required; `calendar` read and checked now (its errors name the file,
/// line and key); without one, working days are Monday–Friday in the policy's default zone.
fn validate_complaints(
    c: RawComplaints,
    policy: &crate::policy::PolicyConfig,
    p: &mut Problems,
) -> Option<crate::complaints::ComplaintsConfig> {
    use crate::complaints::{ComplaintsConfig, DEFAULT_RESPOND_WITHIN};
    let db = match c.db.as_deref().map(str::trim) {
        Some(d) if !d.is_empty() => Some(PathBuf::from(d)),
        Some(_) => {
            p.push("complaints.db", "must not be empty");
            None
        }
        None => {
            p.push("complaints.db", "required: the register's SQLite file (e.g. /var/lib/consentgate/complaints.db)");
            None
        }
    };
    let calendar = match c.calendar.as_deref() {
        None => Some(crate::time::Calendar::weekends_only(policy.zones.of(None).clone())),
        Some(f) => match std::fs::read_to_string(f) {
            Err(e) => {
                p.push("complaints.calendar", format!("{f}: cannot read: {e}"));
                None
            }
            Ok(text) => match crate::time::Calendar::parse(&text) {
                Ok(cal) => Some(cal),
                Err(e) => {
                    p.push("complaints.calendar", format!("{f}: {e}"));
                    None
                }
            },
        },
    };
    let respond_within =
        p.range("complaints.respond_within", c.respond_within, DEFAULT_RESPOND_WITHIN as usize, 1, 365) as u32;
    let suspend_after = p.range("complaints.suspend_after", c.suspend_after, 0, 0, 1_000_000) as u32;
    Some(ComplaintsConfig { db: db?, calendar: calendar?, respond_within, suspend_after })
}

/// `[replication]` (DESIGN §8): `redis` required; the journal is the outbox, so
/// `consent.journal` is required too.
fn validate_replication(
    r: RawReplication,
    consent: &ConsentConfig,
    p: &mut Problems,
) -> Option<crate::replication::ReplicationConfig> {
    use crate::replication::{OnDisconnect, RedisUrl, ReplicationConfig, DEFAULT_STREAM, DEFAULT_TIMEOUT};
    let redis = match r.redis.as_deref() {
        None => {
            p.push("replication.redis", "required: the Redis server's URL (e.g. redis://127.0.0.1:6379/0)");
            None
        }
        Some(u) => match RedisUrl::parse(u) {
            Ok(u) => Some(u),
            Err(e) => {
                p.push("replication.redis", e);
                None
            }
        },
    };
    // The password from the environment rather than the config file (like the admin token).
    let redis = match (redis, r.password_env.as_deref()) {
        (Some(mut u), Some(var)) => match std::env::var(var).ok().filter(|v| !v.is_empty()) {
            Some(pw) => {
                u.password = Some(pw);
                Some(u)
            }
            None => {
                p.push("replication.password_env", format!("the environment variable {var} is not set or empty"));
                None
            }
        },
        (u, _) => u,
    };
    let stream = r.stream.unwrap_or_else(|| DEFAULT_STREAM.to_owned());
    if stream.is_empty() || stream.len() > 200 || stream.chars().any(|c| c.is_control() || c == ' ') {
        p.push("replication.stream", "must be 1 to 200 characters without spaces or control characters");
    }
    let on_disconnect = match r.on_disconnect.as_deref() {
        None => OnDisconnect::Serve,
        Some(v) => OnDisconnect::parse(v).unwrap_or_else(|| {
            p.push("replication.on_disconnect", format!("`{v}`: expected serve | unready"));
            OnDisconnect::Serve
        }),
    };
    let timeout = p.duration("replication.timeout", r.timeout.as_deref(), DEFAULT_TIMEOUT);
    if consent.journal.is_none() {
        p.push(
            "replication",
            "needs consent.journal: the journal is what the publisher sends from (and what survives Redis losing data)",
        );
    }
    Some(ReplicationConfig { redis: redis?, stream, on_disconnect, timeout })
}
