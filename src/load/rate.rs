//! The token bucket behind the optional `--rate` cap.

use tokio::time::Instant;

/// Token bucket for the optional rate cap (refilled by elapsed time; the 1 ms ticker only
/// wakes the session).
pub(super) struct Bucket {
    pub(super) rate: f64,
    pub(super) cap: f64,
    pub(super) tokens: f64,
    pub(super) last: Instant,
}

impl Bucket {
    #[inline]
    pub(super) fn refill(&mut self, now: Instant) {
        let dt = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + self.rate * dt).min(self.cap);
    }
}
