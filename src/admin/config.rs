//! `[admin]`: where the bearer token of the mutating endpoints comes from, and the
//! listener's connection limits.

use std::fmt;
use std::time::Duration;

/// Where the admin API's bearer token comes from by default.
pub const DEFAULT_ADMIN_TOKEN_ENV: &str = "CONSENTGATE_ADMIN_TOKEN";
/// Default cap on concurrent admin connections (`admin.max_connections`).
pub const DEFAULT_ADMIN_MAX_CONNECTIONS: usize = 256;
/// Default time a connection has to send a complete request head (`admin.header_timeout`).
pub const DEFAULT_ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a kept-alive connection may wait idle for its next request
/// (`admin.idle_timeout`).
pub const DEFAULT_ADMIN_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Admin API settings. Mutating endpoints need `Authorization: Bearer <token>`; without a
/// token configured they are refused.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub token: Option<Secret>,
    /// Where the token was looked for (`file PATH` or `env NAME`), for messages.
    pub token_source: String,
    /// Concurrent connections; beyond it a new connection is closed at once. 0 = no cap.
    pub max_connections: usize,
    /// Time from the connection's start, or from the first byte of a kept-alive
    /// connection's next request, until the request head is complete; then it is closed.
    pub header_timeout: Duration,
    /// Time a kept-alive connection may wait, idle, for its next request.
    pub idle_timeout: Duration,
}

impl Default for AdminConfig {
    fn default() -> AdminConfig {
        AdminConfig {
            token: None,
            token_source: String::new(),
            max_connections: DEFAULT_ADMIN_MAX_CONNECTIONS,
            header_timeout: DEFAULT_ADMIN_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_ADMIN_IDLE_TIMEOUT,
        }
    }
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
