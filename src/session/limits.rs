//! Failed binds per source IP (architecture §9, `[limits]`): consentgate passes an ESME's
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
//!
//! [`UnboundLimiter`] caps connections that have not bound yet (`limits.unbound_per_ip`,
//! `limits.unbound_total`): an idle TCP connection costs a descriptor until
//! `session.bind_timeout`, so without a cap a thousand of them from one host exhaust the
//! process's descriptors and nobody can bind. The accept loop takes an [`UnboundGuard`]
//! for each connection (or closes it at once when a cap is reached); the bind phase
//! releases it when the bind succeeds, and dropping it (the connection closed) releases it
//! otherwise.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
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

/// Which cap refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnboundRefusal {
    /// `limits.unbound_per_ip`.
    PerIp,
    /// `limits.unbound_total`.
    Total,
}

impl UnboundRefusal {
    /// The `limit` label of `consentgate_limits_total`.
    pub fn label(self) -> &'static str {
        match self {
            UnboundRefusal::PerIp => "unbound_per_ip",
            UnboundRefusal::Total => "unbound_total",
        }
    }
}

#[derive(Debug, Default)]
struct Unbound {
    /// Unbound connections per source IP; an IP leaves the map at 0, so the map never holds
    /// more entries than there are unbound connections.
    per_ip: HashMap<IpAddr, usize>,
    total: usize,
}

/// Connections accepted and not bound yet, per source IP and in total. One mutex, touched
/// twice per connection (admit, release), never per message.
#[derive(Debug)]
pub struct UnboundLimiter {
    /// The caps; a config reload replaces them ([`UnboundLimiter::set_limits`]).
    per_ip: std::sync::atomic::AtomicUsize,
    total: std::sync::atomic::AtomicUsize,
    state: Mutex<Unbound>,
}

impl UnboundLimiter {
    /// The caps of `cfg` (0 = no cap).
    pub fn new(cfg: &LimitsConfig) -> Arc<UnboundLimiter> {
        Arc::new(UnboundLimiter {
            per_ip: cfg.unbound_per_ip.into(),
            total: cfg.unbound_total.into(),
            state: Mutex::new(Unbound::default()),
        })
    }

    /// The caps of a reloaded config; connections already counted stay.
    pub fn set_limits(&self, cfg: &LimitsConfig) {
        use std::sync::atomic::Ordering::Relaxed;
        self.per_ip.store(cfg.unbound_per_ip, Relaxed);
        self.total.store(cfg.unbound_total, Relaxed);
    }

    /// Counts a new connection from `ip`, or says which cap it would pass.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<UnboundGuard, UnboundRefusal> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let n = s.per_ip.get(&ip).copied().unwrap_or(0);
        let (per_ip, total) = {
            use std::sync::atomic::Ordering::Relaxed;
            (self.per_ip.load(Relaxed), self.total.load(Relaxed))
        };
        if per_ip > 0 && n >= per_ip {
            return Err(UnboundRefusal::PerIp);
        }
        if total > 0 && s.total >= total {
            return Err(UnboundRefusal::Total);
        }
        s.per_ip.insert(ip, n + 1);
        s.total += 1;
        Ok(UnboundGuard { limiter: Some(self.clone()), ip })
    }

    /// Unbound connections now: (from `ip`, in total).
    pub fn count(&self, ip: IpAddr) -> (usize, usize) {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        (s.per_ip.get(&ip).copied().unwrap_or(0), s.total)
    }

    /// Source IPs with unbound connections now.
    pub fn ips(&self) -> usize {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).per_ip.len()
    }

    fn release(&self, ip: IpAddr) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.total = s.total.saturating_sub(1);
        if let Some(n) = s.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                s.per_ip.remove(&ip);
            }
        }
    }
}

/// One unbound connection's place under the caps: given back by [`UnboundGuard::release`]
/// (the bind succeeded) or when dropped (the connection closed unbound).
#[derive(Debug)]
pub struct UnboundGuard {
    limiter: Option<Arc<UnboundLimiter>>,
    ip: IpAddr,
}

impl UnboundGuard {
    /// A guard that counts nothing (a connection no limiter watches).
    pub fn none(ip: IpAddr) -> UnboundGuard {
        UnboundGuard { limiter: None, ip }
    }

    /// Gives the place back now; later calls and the drop do nothing.
    pub fn release(&mut self) {
        if let Some(l) = self.limiter.take() {
            l.release(self.ip);
        }
    }
}

impl Drop for UnboundGuard {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(n: u32) -> LimitsConfig {
        LimitsConfig { bind_failures_per_ip: n, ..LimitsConfig::default() }
    }

    fn caps(per_ip: usize, total: usize) -> Arc<UnboundLimiter> {
        UnboundLimiter::new(&LimitsConfig { unbound_per_ip: per_ip, unbound_total: total, ..LimitsConfig::default() })
    }

    #[test]
    fn unbound_per_ip_cap_refuses_that_ip_only_and_release_frees_a_place() {
        let l = caps(3, 100);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let mut held: Vec<_> = (0..3).map(|_| l.admit(a).expect("under the cap")).collect();
        assert_eq!(l.admit(a).unwrap_err(), UnboundRefusal::PerIp);
        assert_eq!(l.count(a), (3, 3), "a refusal takes no place");
        let other = l.admit(b).expect("another IP is not affected");
        // A bind succeeds: its place is free at once, and releasing twice (or dropping after)
        // does not free a second one.
        held[0].release();
        held[0].release();
        assert_eq!(l.count(a), (2, 3));
        let again = l.admit(a).expect("a place was freed");
        drop(held);
        assert_eq!(l.count(a), (1, 2), "the released guard's drop gave nothing back twice");
        drop((again, other));
        assert_eq!(l.count(a), (0, 0));
        assert_eq!(l.ips(), 0, "IPs leave the map at zero");
    }

    #[test]
    fn unbound_total_cap_counts_every_ip_and_zero_means_no_cap() {
        let l = caps(2, 5);
        let ip = |i: u8| IpAddr::from([10, 0, 1, i]);
        let held: Vec<_> = (0..5).map(|i| l.admit(ip(i)).expect("under the total")).collect();
        assert_eq!(l.admit(ip(9)).unwrap_err(), UnboundRefusal::Total);
        // The per-IP cap is checked first: it names the narrower cause.
        let l2 = caps(1, 1);
        let _g = l2.admit(ip(1)).unwrap();
        assert_eq!(l2.admit(ip(1)).unwrap_err(), UnboundRefusal::PerIp);
        assert_eq!(l2.admit(ip(2)).unwrap_err(), UnboundRefusal::Total);
        drop(held);
        assert_eq!(l.count(ip(0)), (0, 0));
        assert!(l.admit(ip(9)).is_ok(), "room again once they closed");
        let off = caps(0, 0);
        let many: Vec<_> = (0..1000).map(|_| off.admit(ip(1)).expect("no cap")).collect();
        assert_eq!(off.count(ip(1)), (1000, 1000));
        drop(many);
        assert_eq!(off.ips(), 0);
        let mut none = UnboundGuard::none(ip(1));
        none.release();
    }

    #[test]
    fn unbound_guards_across_threads_balance() {
        let l = caps(64, 1000);
        let threads: Vec<_> = (0..4u8)
            .map(|t| {
                let l = l.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u32 {
                        let ip = IpAddr::from([10, t, 0, (i % 7) as u8]);
                        if let Ok(mut g) = l.admit(ip) {
                            if i % 2 == 0 {
                                g.release();
                            }
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(l.count(IpAddr::from([10, 0, 0, 0])), (0, 0));
        assert_eq!(l.ips(), 0);
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
