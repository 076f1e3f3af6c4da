//! The TOML file as written: every section and key, with `deny_unknown_fields` so a typo is
//! an error rather than a silently ignored setting. Each section's raw struct and validator
//! live in its own file (`listen`, `upstream`, `session`, `policy`, `accounts`, `sinks`,
//! `consent`, `admin`); this file holds the whole file's [`RawConfig`] and the [`Problems`]
//! collector. [`RawConfig::validate`] turns it into a [`Config`], collecting every problem.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::*;
use super::{accounts::*, admin::*, consent::*, listen::*, policy::*, session::*, sinks::*, upstream::*};
use crate::policy::content::RuleAction;
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
    pub dlt: Option<super::dlt::RawDlt>,
    #[serde(default)]
    pub account: Vec<RawAccount>,
}

/// Collects problems while validating.
pub(super) struct Problems(pub(super) Vec<Diagnostic>);

/// The words a closed-set key takes, and what each means.
pub(super) const MODES: &[(&str, PolicyMode)] = &[("enforce", PolicyMode::Enforce), ("monitor", PolicyMode::Monitor)];
pub(super) const REGIMES: &[(&str, Regime)] = &[("opt-in", Regime::OptIn), ("opt-out", Regime::OptOut)];
pub(super) const UNAVAILABLE: &[(&str, Unavailable)] =
    &[("reject", Unavailable::Reject), ("allow", Unavailable::Allow)];
pub(super) const CLASSES: &[(&str, MessageClass)] =
    &[("marketing", MessageClass::Marketing), ("transactional", MessageClass::Transactional)];
pub(super) const RULE_ACTIONS: &[(&str, RuleAction)] =
    &[("marketing", RuleAction::Marketing), ("reject", RuleAction::Reject)];
pub(super) const BIND_TYPES: &[(&str, BindType)] =
    &[("transmitter", BindType::Transmitter), ("receiver", BindType::Receiver), ("transceiver", BindType::Transceiver)];

impl Problems {
    /// The meaning of `word` among `choices`; otherwise a problem under `key` listing them.
    pub(super) fn choice<T: Copy>(&mut self, key: &str, word: &str, choices: &[(&str, T)]) -> Option<T> {
        let found = choices.iter().find(|(w, _)| *w == word).map(|&(_, v)| v);
        if found.is_none() {
            let names: Vec<&str> = choices.iter().map(|&(w, _)| w).collect();
            self.push(key, format!("`{word}`: expected {}", names.join(" | ")));
        }
        found
    }

    pub(super) fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Diagnostic::new(key, message, Severity::Error));
    }
    /// A problem that does not fail the check (see [`Severity::Warning`]).
    pub(super) fn warn(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Diagnostic::new(key, message, Severity::Warning));
    }
    /// Whether the file `path` (the value of `key`) can be opened; a warning under `key` when
    /// not (a referenced file that is missing is not a mistake in the config: it may be
    /// provisioned later, and the component that reads it at start refuses or reports it).
    pub(super) fn readable(&mut self, key: &str, path: &std::path::Path) -> bool {
        let r = std::fs::File::open(path).and_then(|f| f.metadata()).and_then(|m| {
            if m.is_dir() {
                Err(std::io::Error::other("is a directory"))
            } else {
                Ok(())
            }
        });
        match r {
            Ok(()) => true,
            Err(e) => {
                self.warn(key, format!("{}: cannot read: {e}", path.display()));
                false
            }
        }
    }
    /// `v`, or a problem naming `key` when it is missing.
    pub(super) fn required(&mut self, key: &str, v: Option<String>) -> Option<String> {
        if v.is_none() {
            self.push(key, "required");
        }
        v
    }
    pub(super) fn addr(&mut self, key: &str, v: Option<&str>, default: &str) -> SocketAddr {
        let s = v.unwrap_or(default);
        s.parse().unwrap_or_else(|_| {
            self.push(key, format!("`{s}` is not an IP:port socket address"));
            default.parse().expect("default address parses")
        })
    }
    pub(super) fn duration(&mut self, key: &str, v: Option<&str>, default: Duration) -> Duration {
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
    pub(super) fn range(&mut self, key: &str, v: Option<i64>, default: usize, lo: i64, hi: i64) -> usize {
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
    /// Validates everything, reporting every problem with its key (not yet its file and line:
    /// [`super::load`] places them). The config is there when no problem is an error.
    pub fn validate(mut self) -> (Option<Config>, Vec<Diagnostic>) {
        let mut p = Problems(Vec::new());
        let listen = validate_listen(self.listen.unwrap_or_default(), &mut p);
        let upstream = validate_upstream(self.upstream.unwrap_or_default(), &mut p);
        if listen.cmpp.is_some() && upstream.cmpp.is_none() {
            p.push("listen.cmpp", "needs [upstream.cmpp] with the ISMG's address");
        }
        let mut session = validate_session(self.session.unwrap_or_default(), &mut p);
        session.limits = validate_limits(self.limits.unwrap_or_default(), &mut p);
        let mut raw_policy = self.policy.unwrap_or_default();
        let opt_in_keywords = raw_policy.opt_in_keywords.take().unwrap_or_default();
        let mut account_opt_in_keywords = std::collections::HashMap::new();
        for a in self.account.iter_mut() {
            if let (Some(id), Some(words)) = (a.system_id.clone(), a.opt_in_keywords.take()) {
                account_opt_in_keywords.insert(id, words);
            }
        }
        let (mut policy, optout_keywords) = validate_policy(raw_policy, &mut p);
        super::policy::check_opt_in("policy.opt_in_keywords", &opt_in_keywords, &optout_keywords, &mut p);
        for (id, words) in &account_opt_in_keywords {
            super::policy::check_opt_in(&format!("account[{id}].opt_in_keywords"), words, &optout_keywords, &mut p);
        }
        policy.dlt = self.dlt.and_then(|d| super::dlt::validate_dlt(d, &mut p));
        let dlt_configured = policy.dlt.is_some();
        let c = self.consent.unwrap_or_default();
        let node = match self.node.and_then(|n| n.id) {
            None => crate::consent::NodeId::from_hostname(),
            Some(id) => crate::consent::NodeId::parse(&id).unwrap_or_else(|e| {
                p.push("node.id", e.to_string());
                crate::consent::NodeId::from_hostname()
            }),
        };
        if let Some(s) = &c.snapshot {
            p.readable("consent.snapshot", std::path::Path::new(s));
        }
        let consent = ConsentConfig {
            snapshot: c.snapshot.map(Into::into),
            journal: c.journal.map(Into::into),
            watch: c.watch.unwrap_or(false),
            node,
        };
        let admin = validate_admin(self.admin.unwrap_or_default(), &mut p);
        let accounts = validate_accounts(self.account, dlt_configured, &mut p);
        let capture = validate_capture(self.capture.unwrap_or_default(), &accounts, &mut p);
        let audit = validate_audit(self.audit.unwrap_or_default(), &mut p);
        let complaints = self.complaints.and_then(|c| validate_complaints(c, &policy, &mut p));
        let replication = self.replication.and_then(|r| validate_replication(r, &consent, &mut p));
        let ok = !p.0.iter().any(Diagnostic::is_error);
        let config = ok.then_some(Config {
            listen,
            upstream,
            session,
            policy,
            accounts,
            optout_keywords,
            opt_in_keywords,
            account_opt_in_keywords,
            consent,
            admin,
            capture,
            audit,
            complaints,
            replication,
        });
        (config, p.0)
    }
}
