//! Limits shared by all of an account's sessions on this node (DESIGN §3 step 3).
//!
//! [`Rate`] is a GCRA (generic cell rate algorithm, the virtual-scheduling form of a token
//! bucket): one atomic "theoretical arrival time". A PDU at `t` conforms when the schedule is
//! less than the burst tolerance ahead of `t`; then the schedule moves one emission interval
//! on. Refused PDUs do not move it, so under overload exactly `max_tps` per second pass (plus
//! one burst), however many sessions compete: one compare-and-swap per PDU, no lock, no
//! timer.

use std::sync::atomic::{AtomicU64, Ordering};

/// Burst allowed beyond the steady rate: this fraction of a second's worth of PDUs (at
/// least two: with none to spare, PDUs arriving a little after their slot lose the slack,
/// and a slow rate ends ~10 % low). Small, so that the rate over any second stays within
/// 5 % of `max_tps`.
const BURST_DIVISOR: u64 = 20;

/// A per-second rate limit (see the module docs).
#[derive(Debug)]
pub struct Rate {
    interval_ns: u64,
    tolerance_ns: u64,
    /// Theoretical arrival time of the next PDU, ns on the caller's monotonic clock.
    tat_ns: AtomicU64,
}

impl Rate {
    /// `max` PDUs per second (at least 1).
    pub fn per_second(max: u32) -> Rate {
        let max = u64::from(max.max(1));
        let interval_ns = 1_000_000_000 / max;
        let burst = (max / BURST_DIVISOR).max(2);
        Rate { interval_ns, tolerance_ns: interval_ns * (burst - 1), tat_ns: AtomicU64::new(0) }
    }

    /// Takes one PDU's place at `now_ns` (a monotonic clock shared by every caller); false =
    /// over the rate (nothing is taken).
    #[inline]
    pub fn try_take(&self, now_ns: u64) -> bool {
        let mut tat = self.tat_ns.load(Ordering::Relaxed);
        loop {
            let start = tat.max(now_ns);
            if start - now_ns > self.tolerance_ns {
                return false;
            }
            match self.tat_ns.compare_exchange_weak(tat, start + self.interval_ns, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(t) => tat = t,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_steady_rate() {
        let r = Rate::per_second(100); // 10 ms apart, a burst of 5
        let t0 = 1_000_000_000;
        assert_eq!((0..20).filter(|_| r.try_take(t0)).count(), 5);
        assert!(!r.try_take(t0 + 9_000_000));
        assert!(r.try_take(t0 + 10_000_000));
        assert!(!r.try_take(t0 + 10_000_000));
        // Idle for a while: the burst comes back, never more.
        assert_eq!((0..20).filter(|_| r.try_take(t0 + 5_000_000_000)).count(), 5);
    }

    /// Ten times too much traffic for ten seconds: within 5 % of the rate.
    #[test]
    fn overload_passes_the_rate() {
        for max in [1, 7, 200, 5000, 100_000] {
            let r = Rate::per_second(max);
            let offered = u64::from(max) * 10 * 10;
            let step = 10_000_000_000 / offered;
            let passed = (0..offered).filter(|i| r.try_take(1 + i * step)).count() as f64;
            let want = f64::from(max) * 10.0;
            assert!((passed - want).abs() <= want * 0.05 + 1.0, "max {max}: {passed} passed, want {want}");
        }
    }

    /// Sessions on several threads share one rate.
    #[test]
    fn threads_share_the_rate() {
        let r = std::sync::Arc::new(Rate::per_second(1000));
        let passed: usize = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|k| {
                    let r = r.clone();
                    s.spawn(move || (0..10_000u64).filter(|i| r.try_take(1 + (i * 4 + k) * 25_000)).count())
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        // 40 000 PDUs over 1 s at 1000/s: 1000 + the burst of 50.
        assert!((1000..=1051).contains(&passed), "{passed}");
    }
}
