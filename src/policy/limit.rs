//! Limits shared by all of an account's sessions on this node (architecture §3 step 3).
//!
//! [`Rate`] is a GCRA (generic cell rate algorithm, the virtual-scheduling form of a token
//! bucket): one atomic "theoretical arrival time". A PDU at `t` conforms when the schedule is
//! less than the burst tolerance ahead of `t`; then the schedule moves one emission interval
//! on. Refused PDUs do not move it, so under overload exactly `max_tps` per second pass (plus
//! one burst), however many sessions compete: one compare-and-swap per PDU, no lock, no
//! timer.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

/// Burst allowed beyond the steady rate: this fraction of a second's worth of PDUs (at
/// least two: with none to spare, PDUs arriving a little after their slot lose the slack,
/// and a slow rate ends ~10 % low). Small, so that the rate over any second stays within
/// 5 % of `max_tps`.
const BURST_DIVISOR: u64 = 20;

/// A per-second rate limit (see the module docs).
#[derive(Debug)]
pub struct Rate {
    /// The `max_tps` it was built for (a reload keeps a rate whose limit did not change).
    max: u32,
    interval_ns: u64,
    tolerance_ns: u64,
    /// Theoretical arrival time of the next PDU, ns on the caller's monotonic clock.
    tat_ns: AtomicU64,
}

impl Rate {
    /// `max` PDUs per second (at least 1).
    pub fn per_second(max: u32) -> Rate {
        let per_s = u64::from(max.max(1));
        let interval_ns = 1_000_000_000 / per_s;
        let burst = (per_s / BURST_DIVISOR).max(2);
        Rate { max, interval_ns, tolerance_ns: interval_ns * (burst - 1), tat_ns: AtomicU64::new(0) }
    }

    /// The `max_tps` this rate enforces.
    pub fn max(&self) -> u32 {
        self.max
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

/// Bound sessions per account on this node, against `[[account]] max_sessions`. Each
/// account's count lives in its own [`SessionCount`], which a config reload hands from the
/// old engine to the new one by `system_id` (the sessions bound before a reload keep their
/// slot, and the limit they count against is the new one).
#[derive(Debug)]
pub struct Sessions {
    accounts: Vec<Arc<SessionCount>>,
}

/// One account's bound sessions and its limit.
#[derive(Debug)]
pub struct SessionCount {
    /// `max_sessions`; `u32::MAX` = none. Changed in place by a reload.
    max: AtomicU32,
    active: AtomicU32,
}

impl SessionCount {
    pub fn new(max: Option<u32>) -> Arc<SessionCount> {
        Arc::new(SessionCount { max: AtomicU32::new(max.unwrap_or(u32::MAX)), active: AtomicU32::new(0) })
    }

    /// Sets the limit (a reload); sessions over a lowered limit stay, new binds are refused.
    pub fn set_max(&self, max: Option<u32>) {
        self.max.store(max.unwrap_or(u32::MAX), Ordering::Relaxed);
    }

    /// Sessions bound now.
    pub fn active(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }
}

/// One bound session of an account; the count goes down when it is dropped (the session
/// ended, however).
#[derive(Debug)]
pub struct SessionSlot {
    count: Arc<SessionCount>,
}

impl Sessions {
    /// `max[i]`: the limit of account `i` (`None` = none).
    pub fn new(max: Vec<Option<u32>>) -> Sessions {
        Sessions { accounts: max.into_iter().map(SessionCount::new).collect() }
    }

    /// The given counts, in account order (a reload: kept accounts bring their own).
    pub fn of(accounts: Vec<Arc<SessionCount>>) -> Sessions {
        Sessions { accounts }
    }

    /// Account `idx`'s count.
    pub fn count(&self, idx: usize) -> Option<&Arc<SessionCount>> {
        self.accounts.get(idx)
    }

    /// A slot for one more session of account `idx`, unless it has `max_sessions` already.
    pub fn open(&self, idx: usize) -> Option<SessionSlot> {
        let count = self.accounts.get(idx)?;
        let max = count.max.load(Ordering::Relaxed);
        count.active.fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| (c < max).then_some(c + 1)).ok()?;
        Some(SessionSlot { count: Arc::clone(count) })
    }

    /// Sessions of account `idx` bound now.
    pub fn active(&self, idx: usize) -> u32 {
        self.accounts.get(idx).map_or(0, |n| n.active())
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.count.active.fetch_sub(1, Ordering::AcqRel);
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

    #[test]
    fn sessions_up_to_the_limit_and_back() {
        let s = Arc::new(Sessions::new(vec![Some(2), None]));
        let (a, b) = (s.open(0).unwrap(), s.open(0).unwrap());
        assert!(s.open(0).is_none());
        drop(a);
        let c = s.open(0).expect("a slot freed");
        assert_eq!(s.active(0), 2);
        drop((b, c));
        assert_eq!(s.active(0), 0);
        let many: Vec<_> = (0..1000).map(|_| s.open(1).unwrap()).collect();
        assert_eq!(s.active(1), 1000);
        drop(many);
        assert!(s.open(7).is_none(), "no such account");
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
