//! `[session]` and `[limits]`: the ESME sessions and the bind-failure back-off.

use serde::Deserialize;

use super::raw::*;
use super::*;

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
    pub unbound_per_ip: Option<i64>,
    pub unbound_total: Option<i64>,
}

pub(super) fn validate_session(s: RawSession, p: &mut Problems) -> SessionConfig {
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

/// `[limits]` (architecture §9).
pub(super) fn validate_limits(l: RawLimits, p: &mut Problems) -> crate::session::config::LimitsConfig {
    use crate::session::config::{
        LimitsConfig, DEFAULT_BIND_BACKOFF, DEFAULT_BIND_FAILURES_PER_IP, DEFAULT_BIND_FAILURE_WINDOW,
        DEFAULT_UNBOUND_PER_IP, DEFAULT_UNBOUND_TOTAL,
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
        unbound_per_ip: p.range("limits.unbound_per_ip", l.unbound_per_ip, DEFAULT_UNBOUND_PER_IP, 0, 1_000_000),
        unbound_total: p.range("limits.unbound_total", l.unbound_total, DEFAULT_UNBOUND_TOTAL, 0, 1_000_000),
    }
}
