//! Failed binds per source IP (DESIGN §9, `[limits]`): consentgate passes an ESME's
//! credentials to the SMSC, so without a limit a client could try passwords as fast as the
//! SMSC answers (≈ 1 700 binds a second here). More than `bind_failures_per_ip` failed binds
//! from one IP within `bind_failure_window` start a back-off of `bind_backoff`: its binds are
//! then refused at once with ESME_RBINDFAIL, never forwarded, and the connection closed.
//! A successful bind forgets the IP's failures.
//!
//! One mutex over a map of at most [`MAX_TRACKED`] IPs, touched once per bind (never per
//! message). When full, entries whose window has passed and that are not backing off are
//! dropped first; if that frees nothing, the oldest window goes — an attacker with more
//! addresses than that can age out its own entries, never anyone's back-off ahead of time
//! by more than it already has.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::config::LimitsConfig;

/// Most source IPs tracked at once (≈ 48 bytes each).
pub const MAX_TRACKED: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Entry {
    window_start: Instant,
    failures: u32,
    blocked_until: Option<Instant>,
}

/// What a failure did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Counted,
    /// This failure started a back-off.
    BackoffStarted,
}

#[derive(Debug)]
pub struct BindLimiter {
    /// The limits in force: a config reload replaces them ([`BindLimiter::set_config`]); the
    /// failures counted so far are kept. A std Mutex, no await inside: taken once per bind.
    cfg: Mutex<LimitsConfig>,
    ips: Mutex<HashMap<IpAddr, Entry>>,
}

impl BindLimiter {
    pub fn new(cfg: LimitsConfig) -> BindLimiter {
        BindLimiter { cfg: Mutex::new(cfg), ips: Mutex::new(HashMap::new()) }
    }

    /// The limits in force.
    pub fn config(&self) -> LimitsConfig {
        *self.cfg.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the limits (a config reload).
    pub fn set_config(&self, cfg: LimitsConfig) {
        *self.cfg.lock().unwrap_or_else(|p| p.into_inner()) = cfg;
    }

    fn on(&self) -> bool {
        self.config().bind_failures_per_ip > 0
    }

    /// How long `ip` stays in back-off, if it is in one.
    pub fn backoff_left(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        if !self.on() {
            return None;
        }
        let ips = self.ips.lock().unwrap_or_else(|p| p.into_inner());
        ips.get(&ip).and_then(|e| e.blocked_until).and_then(|u| u.checked_duration_since(now)).filter(|d| !d.is_zero())
    }

    /// Records a failed bind from `ip`.
    pub fn failure(&self, ip: IpAddr, now: Instant) -> Failure {
        if !self.on() {
            return Failure::Counted;
        }
        let cfg = self.config();
        let mut ips = self.ips.lock().unwrap_or_else(|p| p.into_inner());
        if ips.len() >= MAX_TRACKED && !ips.contains_key(&ip) {
            self.make_room(&mut ips, now);
        }
        let e = ips.entry(ip).or_insert(Entry { window_start: now, failures: 0, blocked_until: None });
        if e.blocked_until.is_some_and(|u| u <= now) {
            *e = Entry { window_start: now, failures: 0, blocked_until: None };
        }
        if now.duration_since(e.window_start) > cfg.bind_failure_window {
            e.window_start = now;
            e.failures = 0;
        }
        e.failures += 1;
        if e.failures > cfg.bind_failures_per_ip && e.blocked_until.is_none() {
            e.blocked_until = Some(now + cfg.bind_backoff);
            return Failure::BackoffStarted;
        }
        Failure::Counted
    }

    /// A successful bind from `ip`: its failures are forgotten.
    pub fn success(&self, ip: IpAddr) {
        if self.on() {
            self.ips.lock().unwrap_or_else(|p| p.into_inner()).remove(&ip);
        }
    }

    /// IPs tracked now (failures in a window, or backing off).
    pub fn tracked(&self) -> usize {
        self.ips.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn make_room(&self, ips: &mut HashMap<IpAddr, Entry>, now: Instant) {
        let window = self.config().bind_failure_window;
        ips.retain(|_, e| e.blocked_until.is_some_and(|u| u > now) || now.duration_since(e.window_start) <= window);
        if ips.len() >= MAX_TRACKED {
            if let Some(oldest) = ips
                .iter()
                .filter(|(_, e)| e.blocked_until.is_none())
                .min_by_key(|(_, e)| e.window_start)
                .map(|(ip, _)| *ip)
            {
                ips.remove(&oldest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(n: u32) -> LimitsConfig {
        LimitsConfig {
            bind_failures_per_ip: n,
            bind_failure_window: Duration::from_secs(60),
            bind_backoff: Duration::from_secs(300),
        }
    }

    #[test]
    fn back_off_after_too_many_failures_then_expires() {
        let l = BindLimiter::new(cfg(3));
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(l.failure(a, t0 + Duration::from_secs(i)), Failure::Counted);
        }
        assert_eq!(l.backoff_left(a, t0), None, "three failures are allowed");
        assert_eq!(l.failure(a, t0 + Duration::from_secs(3)), Failure::BackoffStarted);
        assert_eq!(l.backoff_left(a, t0 + Duration::from_secs(3)), Some(Duration::from_secs(300)));
        assert_eq!(l.failure(a, t0 + Duration::from_secs(4)), Failure::Counted, "started once per burst");
        assert_eq!(l.backoff_left(b, t0), None, "per IP");
        assert_eq!(l.backoff_left(a, t0 + Duration::from_secs(303)), None, "back-off over");
        assert_eq!(l.failure(a, t0 + Duration::from_secs(304)), Failure::Counted, "a fresh window");
    }

    #[test]
    fn failures_spread_beyond_the_window_never_block_and_success_forgets() {
        let l = BindLimiter::new(cfg(2));
        let a: IpAddr = "::1".parse().unwrap();
        let t0 = Instant::now();
        for i in 0..10 {
            assert_eq!(l.failure(a, t0 + Duration::from_secs(61 * i)), Failure::Counted);
        }
        l.failure(a, t0 + Duration::from_secs(610));
        l.success(a);
        assert_eq!(l.tracked(), 0);
        let off = BindLimiter::new(cfg(0));
        for _ in 0..100 {
            off.failure(a, t0);
        }
        assert_eq!(off.backoff_left(a, t0), None, "0 = no limit");
    }

    #[test]
    fn the_map_is_bounded_and_keeps_back_offs() {
        let l = BindLimiter::new(cfg(1));
        let t0 = Instant::now();
        let blocked: IpAddr = "192.0.2.1".parse().unwrap();
        l.failure(blocked, t0);
        l.failure(blocked, t0);
        for i in 0..(MAX_TRACKED as u32 + 10) {
            l.failure(IpAddr::from(0x0A00_0000u32.wrapping_add(i).to_be_bytes()), t0 + Duration::from_millis(1));
        }
        assert!(l.tracked() <= MAX_TRACKED);
        assert!(l.backoff_left(blocked, t0 + Duration::from_secs(1)).is_some());
    }
}
