//! The gateway's whole validated configuration: each part is the owning module's own type
//! (architecture §6), and `crate::config` fills them from the TOML file. Nothing below the gateway
//! sees this struct; each component gets its part.

use std::net::SocketAddr;

use crate::admin::AdminConfig;
use crate::audit::AuditConfig;
use crate::capture::CaptureConfig;
use crate::consent::ConsentConfig;
use crate::policy::{Account, Engine, PolicyConfig};
use crate::relay::UpstreamConfig;
use crate::session::SessionConfig;

/// `[listen]`.
#[derive(Debug, Clone)]
pub struct ListenConfig {
    /// ESME-facing SMPP listener.
    pub smpp: SocketAddr,
    /// `listen.smpp_tls`: the same over TLS, with `tls`'s certificate.
    pub smpp_tls: Option<SocketAddr>,
    /// `listen.cmpp`: the SP-facing CMPP listener (needs `[upstream.cmpp]`).
    pub cmpp: Option<SocketAddr>,
    /// Admin HTTP listener (metrics, health, admin API).
    pub admin: SocketAddr,
    /// `[listen.tls]` (set exactly when `smpp_tls` is).
    pub tls: Option<crate::relay::ServerTlsConfig>,
}

/// Everything the gateway runs on.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub listen: ListenConfig,
    pub upstream: UpstreamConfig,
    pub session: SessionConfig,
    pub policy: PolicyConfig,
    /// `[[account]]` in file order: the position is the account's [`crate::policy::AccountIdx`].
    pub accounts: Vec<Account>,
    /// `policy.optout_keywords`: MO texts (after normalisation) recorded as a refusal.
    pub optout_keywords: Vec<String>,
    /// `policy.opt_in_keywords`: MO texts recorded as a grant for the account's entity
    /// (default none; the US `START`, `UNSTOP`, `YES`).
    pub opt_in_keywords: Vec<String>,
    /// `[[account]] opt_in_keywords`, by system_id: an account's own instead of the policy's.
    pub account_opt_in_keywords: std::collections::HashMap<String, Vec<String>>,
    pub consent: ConsentConfig,
    pub admin: AdminConfig,
    /// `[capture]`; `None` when off.
    pub capture: Option<CaptureConfig>,
    /// Decision audit log (`[audit]`; off unless `audit.dir` is set).
    pub audit: AuditConfig,
    /// The complaint register (`[complaints]`; `None` when the section is absent).
    pub complaints: Option<crate::complaints::ComplaintsConfig>,
    /// Live statements shared with other nodes (`[replication]`; `None` when absent).
    pub replication: Option<crate::replication::ReplicationConfig>,
}

impl GatewayConfig {
    /// The account with this system_id.
    pub fn account(&self, system_id: &str) -> Option<&Account> {
        self.accounts.iter().find(|a| a.system_id == system_id)
    }

    /// The decision engine for this config.
    pub fn engine(&self) -> Engine {
        Engine::new(self.policy.clone(), self.accounts.clone())
    }
}

/// A config as read from its files, with what a reload compares and reports. The
/// composition layer (`crate::config`) makes it; the gateway only applies it.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: GatewayConfig,
    /// SHA-256 (hex) over the files read, in order.
    pub sha256: String,
    /// Every setting of the effective config, dotted key → value text (secrets masked but
    /// changing with the secret); accounts keyed by system_id (`account.acme.max_tps`).
    pub keys: std::collections::BTreeMap<String, String>,
    /// `GET /v1/config`'s body.
    pub summary: serde_json::Value,
    /// Every file read (the main file first) and the directories include patterns matched
    /// in: what `--watch-config` watches.
    pub files: Vec<std::path::PathBuf>,
    pub include_dirs: Vec<std::path::PathBuf>,
    /// Problems that do not stop the config (each `file:line: key: message`).
    pub warnings: Vec<String>,
}

/// Reads and validates the config again (SIGHUP, `POST /v1/config/reload`, the file watch):
/// every problem (`file:line: key: message`) when it is not valid.
pub type ConfigSource = std::sync::Arc<dyn Fn() -> Result<LoadedConfig, Vec<String>> + Send + Sync>;

/// Settings only a restart puts in force: a reload that changes one reports it
/// (`restart_required`) and keeps the running value. Everything else — `[policy]` and its
/// subsections, `[[account]]`, `[session]`, `[limits]`, `[upstream]` but its TLS — applies
/// live.
pub const RESTART_REQUIRED: &[&str] =
    &["listen.", "node.", "consent.", "audit.", "capture.", "complaints.", "replication.", "upstream.tls.", "admin."];

/// Whether a change to `key` needs a restart ([`RESTART_REQUIRED`]).
pub fn needs_restart(key: &str) -> bool {
    RESTART_REQUIRED.iter().any(|p| key.starts_with(p) || p.strip_suffix('.') == Some(key))
}
