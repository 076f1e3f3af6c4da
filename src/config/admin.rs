//! `[admin]`: the admin API's bearer token and its listener's connection limits.

use serde::Deserialize;

use super::raw::*;
use super::*;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub token_file: Option<String>,
    pub token_env: Option<String>,
    pub max_connections: Option<i64>,
    pub header_timeout: Option<String>,
    pub idle_timeout: Option<String>,
}

pub(super) fn validate_admin(ad: RawAdmin, p: &mut Problems) -> AdminConfig {
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
        max_connections: p.range(
            "admin.max_connections",
            ad.max_connections,
            crate::admin::DEFAULT_ADMIN_MAX_CONNECTIONS,
            0,
            100_000,
        ),
        header_timeout: p.duration(
            "admin.header_timeout",
            ad.header_timeout.as_deref(),
            crate::admin::DEFAULT_ADMIN_HEADER_TIMEOUT,
        ),
        idle_timeout: p.duration(
            "admin.idle_timeout",
            ad.idle_timeout.as_deref(),
            crate::admin::DEFAULT_ADMIN_IDLE_TIMEOUT,
        ),
    }
}
