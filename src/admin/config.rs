//! `[admin]`: where the bearer token of the mutating endpoints comes from.

use std::fmt;

/// Where the admin API's bearer token comes from by default.
pub const DEFAULT_ADMIN_TOKEN_ENV: &str = "CONSENTGATE_ADMIN_TOKEN";

/// Admin API settings. Mutating endpoints need `Authorization: Bearer <token>`; without a
/// token configured they are refused.
#[derive(Debug, Clone, Default)]
pub struct AdminConfig {
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
