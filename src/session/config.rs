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
        }
    }
}
