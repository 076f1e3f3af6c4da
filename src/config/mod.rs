//! Configuration in two layers (STYLE §6): [`raw`] serde structs that mirror the TOML file
//! (`deny_unknown_fields`), one file per section beside its validator (`listen`, `upstream`,
//! `session`, `policy`, `accounts`, `sinks`, `consent`, `admin`), validated into the types
//! their owner modules define ([`PolicyConfig`] and [`Account`] in `policy`, [`UpstreamConfig`]
//! in `relay`, [`SessionConfig`] in `session`, [`ConsentConfig`] in `consent`, `AuditConfig` in
//! `audit`, `CaptureConfig` in `capture`, [`AdminConfig`] in `admin`) and composed into
//! [`Config`] (`gateway::GatewayConfig`). This module sits at the top of the layers (architecture
//! §6): it imports every component's config type, and no component imports it.
//!
//! [`load`] reads the main file and its `include`s and reports every problem of every stage in
//! one run as a [`Diagnostic`] (`file:line: key: message`); missing referenced files and
//! expired licences are warnings. `check-config` exits 64 on any error. Its I/O: the config
//! files, `admin.token_file`, `complaints.calendar`, and opening the TLS files and the snapshot.
mod accounts;
mod admin;
mod consent;
mod dlt;
mod listen;
mod load;
mod policy;
pub mod raw;
mod running;
mod session;
mod sinks;
mod upstream;

pub use running::{for_gateway, load_for_gateway};

use std::fmt;
use std::path::{Path, PathBuf};

pub use crate::time::parse_duration;

pub use load::{load, summary, Diagnostic, Loaded, Severity, NEEDED_AT_START};

pub use crate::admin::{AdminConfig, Secret, DEFAULT_ADMIN_TOKEN_ENV};
pub use crate::capture::{
    DEFAULT_MAX_FILES as DEFAULT_CAPTURE_MAX_FILES, DEFAULT_MAX_FILE_BYTES as DEFAULT_CAPTURE_MAX_FILE_BYTES,
};
pub use crate::consent::ConsentConfig;
pub use crate::gateway::config::{GatewayConfig as Config, ListenConfig};
pub use crate::optout::DEFAULT_KEYWORDS as DEFAULT_OPTOUT_KEYWORDS;
pub use crate::policy::config::{
    pattern_matches, Account, BindRefusal, MessageClass, Pattern, PolicyConfig, PolicyMode, Regime, Unavailable,
};
pub use crate::relay::upstream::{
    UpstreamConfig, DEFAULT_BIND_TIMEOUT as DEFAULT_UPSTREAM_BIND_TIMEOUT, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_ENQUIRE_LINK_INTERVAL as DEFAULT_UPSTREAM_ENQUIRE_LINK_INTERVAL,
    DEFAULT_RESPONSE_TIMEOUT as DEFAULT_UPSTREAM_RESPONSE_TIMEOUT,
};
pub use crate::session::config::{
    SessionConfig, DEFAULT_BIND_TIMEOUT, DEFAULT_ENQUIRE_LINK_INTERVAL, DEFAULT_MAX_PDU_BYTES, DEFAULT_MAX_SESSIONS,
    DEFAULT_RESPONSE_TIMEOUT, DEFAULT_SHUTDOWN_GRACE, DEFAULT_WINDOW,
};

/// One problem found in a config file (the name existing callers use).
pub type ConfigError = Diagnostic;

/// Every error in a config, with the main file's name (each error names its own file too).
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors {
    pub file: PathBuf,
    pub errors: Vec<Diagnostic>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} problem(s)", self.file.display(), self.errors.len())?;
        for e in &self.errors {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

impl Config {
    /// Reads and validates a config file and its includes ([`load`] without the warnings).
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        load(path).map(|l| l.config).map_err(|d| ConfigErrors {
            file: path.to_owned(),
            errors: d.into_iter().filter(Diagnostic::is_error).collect(),
        })
    }

    /// The complaint register a config file names (`complaints.db`), read without validating
    /// the rest: the `complaints` commands need only this path, and must work in a shell
    /// that lacks the gateway's environment (a Redis password variable, say). `Ok(None)`:
    /// the file has no `[complaints]` section.
    pub fn complaints_db(path: &Path) -> Result<Option<PathBuf>, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        let v: toml::Value = toml::from_str(&text).map_err(|e| format!("{}: {}", path.display(), e.message()))?;
        let Some(c) = v.get("complaints") else { return Ok(None) };
        match c.get("db").and_then(toml::Value::as_str).map(str::trim) {
            Some(db) if !db.is_empty() => Ok(Some(PathBuf::from(db))),
            _ => Err(format!("{}: complaints.db: required: the register's SQLite file", path.display())),
        }
    }

    /// Parses and validates config text, named `<config>` in its problems; an `include` is
    /// relative to the current directory. Warnings are dropped.
    pub fn parse(text: &str) -> Result<Config, Vec<ConfigError>> {
        load::load_text(Path::new("<config>"), text.to_owned())
            .map(|l| l.config)
            .map_err(|d| d.into_iter().filter(Diagnostic::is_error).collect())
    }
}

pub use crate::time::{civil_from_days, days_from_civil, parse_date, today};

#[cfg(test)]
mod tests;
