//! `[session]`: the ESME-facing side of every session.

use std::time::Duration;

/// Default ESME window (requests in flight per session).
pub const DEFAULT_WINDOW: usize = 100;
pub use crate::smpp::frame::DEFAULT_MAX_PDU_BYTES;
/// Default time an ESME has to bind after connecting.
pub const DEFAULT_BIND_TIMEOUT: Duration = Duration::from_secs(10);
/// Default idle time before consentgate sends its own enquire_link on a leg.
pub const DEFAULT_ENQUIRE_LINK_INTERVAL: Duration = Duration::from_secs(30);
/// Default time the peer has to answer one request.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default grace period for draining sessions at shutdown.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Default cap on concurrent ESME sessions.
pub const DEFAULT_MAX_SESSIONS: usize = 10_000;
/// Default time a started PDU has to arrive whole (`session.pdu_timeout`).
pub const DEFAULT_PDU_TIMEOUT: Duration = Duration::from_secs(10);
/// Default failed binds from one source IP within [`DEFAULT_BIND_FAILURE_WINDOW`] that start
/// a back-off (`limits.bind_failures_per_ip`).
pub const DEFAULT_BIND_FAILURES_PER_IP: u32 = 10;
pub const DEFAULT_BIND_FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Default time binds from such an IP are refused without asking the SMSC.
pub const DEFAULT_BIND_BACKOFF: Duration = Duration::from_secs(300);
/// Default cap on connections from one source IP that have not bound yet
/// (`limits.unbound_per_ip`).
pub const DEFAULT_UNBOUND_PER_IP: usize = 32;
/// Default cap on connections that have not bound yet, all source IPs together
/// (`limits.unbound_total`).
pub const DEFAULT_UNBOUND_TOTAL: usize = 512;

/// The validated `[session]` section.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Requests in flight per ESME session; beyond it the `throttled` status
    /// (`policy.reject_status.throttled`, default ESME_RTHROTTLED).
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
    /// Time a PDU whose first bytes arrived has to arrive whole; then the session is closed
    /// (a peer holding a half-sent PDU holds the session's buffers and a slot).
    pub pdu_timeout: Duration,
    /// `[limits]`: failed binds per source IP.
    pub limits: LimitsConfig,
}

/// `[limits]`: failed binds from one source IP (refused by consentgate or by the SMSC —
/// wrong passwords are the SMSC's answer) within `bind_failure_window` beyond
/// `bind_failures_per_ip` start a back-off of `bind_backoff`, during which its binds are
/// refused at once (ESME_RBINDFAIL) and never reach the SMSC. 0 failures = no limit.
///
/// Connections that have not bound yet (connected, TLS handshake, bind in progress) are
/// capped per source IP (`unbound_per_ip`) and in total (`unbound_total`): beyond either a
/// new connection is closed at once (see [`super::limits::UnboundLimiter`]). Bound sessions
/// do not count. 0 = no cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitsConfig {
    pub bind_failures_per_ip: u32,
    pub bind_failure_window: Duration,
    pub bind_backoff: Duration,
    /// Unbound connections from one source IP (default [`DEFAULT_UNBOUND_PER_IP`]).
    pub unbound_per_ip: usize,
    /// Unbound connections in total (default [`DEFAULT_UNBOUND_TOTAL`]).
    pub unbound_total: usize,
}

impl Default for LimitsConfig {
    fn default() -> LimitsConfig {
        LimitsConfig {
            bind_failures_per_ip: DEFAULT_BIND_FAILURES_PER_IP,
            bind_failure_window: DEFAULT_BIND_FAILURE_WINDOW,
            bind_backoff: DEFAULT_BIND_BACKOFF,
            unbound_per_ip: DEFAULT_UNBOUND_PER_IP,
            unbound_total: DEFAULT_UNBOUND_TOTAL,
        }
    }
}

impl Default for SessionConfig {
    fn default() -> SessionConfig {
        SessionConfig {
            window: DEFAULT_WINDOW,
            max_pdu_bytes: DEFAULT_MAX_PDU_BYTES,
            bind_timeout: DEFAULT_BIND_TIMEOUT,
            enquire_link_interval: DEFAULT_ENQUIRE_LINK_INTERVAL,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            max_sessions: DEFAULT_MAX_SESSIONS,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            pdu_timeout: DEFAULT_PDU_TIMEOUT,
            limits: LimitsConfig::default(),
        }
    }
}
