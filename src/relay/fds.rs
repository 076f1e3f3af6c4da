//! File descriptors (architecture §9): the process's open-file limit and a reserve kept free for
//! what must never fail for want of one — bound sessions' upstream connects, the journal,
//! the audit log, the admin API's own answers.
//!
//! * [`raise_nofile_limit`]: at start the soft `RLIMIT_NOFILE` is raised to the hard limit
//!   (the default soft limit of 1 024 is far below what a gateway needs; the hard one is
//!   what the administrator granted).
//! * [`FdBudget`]: the SMPP and admin accept loops call [`FdBudget::room`] before each
//!   accept. While open descriptors are within [`reserve`] of the soft limit it pauses
//!   (polling every [`PAUSE_POLL`], no spinning), counted once per pause in
//!   `consentgate_limits_total{limit="fd_reserve"}` and logged once per burst. Counting
//!   is cheap: a live count of the connections the accept loops took ([`FdToken`]) on top of
//!   the last real count from `/proc/self/fd`, re-read at most once a second far from the
//!   limit and at most every 10 ms close to it.
//! * [`AcceptBackoff`]: an accept error (EMFILE / ENFILE, ECONNABORTED, …) backs off
//!   100 ms, doubling to 1 s, reset by the next accept; counted in
//!   `consentgate_limits_total{limit="accept_error"}` and logged once per burst.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tracing::warn;

use crate::telemetry::metrics as m;
use crate::telemetry::RateLimit;

/// The reserve is at least this many descriptors…
pub const FD_RESERVE_MIN: u64 = 64;
/// …or this fraction (1/20 = 5 %) of the soft limit, whichever is larger (never more than
/// half the limit).
pub const FD_RESERVE_DIVISOR: u64 = 20;
/// How often a paused accept loop looks again.
pub const PAUSE_POLL: Duration = Duration::from_millis(100);
/// First back-off after an accept error; doubles up to [`ACCEPT_BACKOFF_MAX`].
pub const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Far from the limit the real count is re-read this often…
const RECOUNT_FAR: Duration = Duration::from_secs(1);
/// …and this often once the estimate is within twice the reserve of it.
const RECOUNT_NEAR: Duration = Duration::from_millis(10);

/// The descriptors kept free below a soft limit of `soft`.
pub fn reserve(soft: u64) -> u64 {
    (soft / FD_RESERVE_DIVISOR).max(FD_RESERVE_MIN).min(soft / 2)
}

/// What [`raise_nofile_limit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    /// The soft limit before.
    pub before: u64,
    /// The soft limit now.
    pub soft: u64,
    pub hard: u64,
}

/// The soft and hard `RLIMIT_NOFILE` (`u64::MAX` = unlimited).
#[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux, not on every target
pub fn nofile_limit() -> std::io::Result<(u64, u64)> {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into the valid, exclusively borrowed `r`.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let conv = |v: libc::rlim_t| if v == libc::RLIM_INFINITY { u64::MAX } else { v as u64 };
    Ok((conv(r.rlim_cur), conv(r.rlim_max)))
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (an unlimited hard limit: to
/// `/proc/sys/fs/nr_open`, the kernel's ceiling). Never lowers it.
#[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux, not on every target
pub fn raise_nofile_limit() -> std::io::Result<NofileLimit> {
    let (before, hard) = nofile_limit()?;
    let target = if hard == u64::MAX {
        std::fs::read_to_string("/proc/sys/fs/nr_open").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(before)
    } else {
        hard
    };
    if target > before {
        let r = libc::rlimit {
            rlim_cur: target as libc::rlim_t,
            rlim_max: if hard == u64::MAX { libc::RLIM_INFINITY } else { hard as libc::rlim_t },
        };
        // SAFETY: setrlimit reads one valid rlimit; it changes only this process's limit.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    let (soft, hard) = nofile_limit()?;
    Ok(NofileLimit { before, soft, hard })
}

/// Open descriptors of this process, from `/proc/self/fd` (None where there is no /proc).
pub fn open_fds() -> Option<u64> {
    // The directory's own descriptor is listed too.
    std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count().saturating_sub(1) as u64)
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    fds: u64,
    live: i64,
    at: Instant,
}

/// The process's descriptor budget, shared by every accept loop (descriptors are a process
/// resource): see the module docs.
#[derive(Debug)]
pub struct FdBudget {
    /// Connections the accept loops hold now ([`FdToken`]s alive).
    live: AtomicI64,
    /// The soft limit, read at the first use and after [`FdBudget::refresh_limit`].
    soft: AtomicU64,
    sample: Mutex<Option<Sample>>,
    /// Pauses since the start, and whether one is on now.
    paused: AtomicU64,
    paused_now: AtomicBool,
}

/// A connection counted in the budget until dropped.
#[derive(Debug)]
pub struct FdToken(&'static FdBudget);

impl Drop for FdToken {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::Relaxed);
    }
}

impl FdBudget {
    /// The process-wide budget.
    pub fn global() -> &'static FdBudget {
        static BUDGET: OnceLock<FdBudget> = OnceLock::new();
        BUDGET.get_or_init(|| {
            let b = FdBudget {
                live: AtomicI64::new(0),
                soft: AtomicU64::new(0),
                sample: Mutex::new(None),
                paused: AtomicU64::new(0),
                paused_now: AtomicBool::new(false),
            };
            b.refresh_limit();
            b
        })
    }

    /// Re-reads the soft limit (after it was raised).
    pub fn refresh_limit(&self) {
        let soft = nofile_limit().map(|(s, _)| s).unwrap_or(u64::MAX);
        self.soft.store(soft, Ordering::Relaxed);
    }

    /// The soft limit in force (`u64::MAX` = unlimited).
    pub fn soft_limit(&self) -> u64 {
        self.soft.load(Ordering::Relaxed)
    }

    /// Counts one accepted connection until the token drops.
    pub fn track(&'static self) -> FdToken {
        self.live.fetch_add(1, Ordering::Relaxed);
        FdToken(self)
    }

    /// Times an accept loop paused at the reserve (since the start).
    pub fn pauses(&self) -> u64 {
        self.paused.load(Ordering::Relaxed)
    }

    /// Whether one more descriptor may be taken for a new connection: the open count (an
    /// estimate from the last real count plus the connections accepted since) stays more
    /// than the reserve below the soft limit.
    pub fn has_room(&self) -> bool {
        let soft = self.soft_limit();
        if soft == u64::MAX {
            return true;
        }
        let reserve = reserve(soft);
        let live = self.live.load(Ordering::Relaxed);
        let mut sample = self.sample.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let estimate = sample.map(|s| (s.fds as i64 + live - s.live).max(0) as u64);
        let recount_after = match estimate {
            Some(e) if e + 2 * reserve < soft => RECOUNT_FAR,
            _ => RECOUNT_NEAR,
        };
        let fds = match (*sample, estimate) {
            (Some(s), Some(e)) if now.duration_since(s.at) < recount_after => e,
            _ => match open_fds() {
                Some(n) => {
                    *sample = Some(Sample { fds: n, live, at: now });
                    n
                }
                // No /proc: the connections are all that is counted.
                None => live.max(0) as u64,
            },
        };
        fds + reserve < soft
    }

    /// Returns once [`FdBudget::has_room`]; until then sleeps [`PAUSE_POLL`] at a time. A
    /// pause is counted once and logged once per burst; `what` names the listener.
    pub async fn room(&self, what: &'static str) {
        if self.has_room() {
            self.paused_now.store(false, Ordering::Relaxed);
            return;
        }
        // Counted when a pause starts (an accept loop re-entering it, or the other loop
        // joining it, is the same pause).
        if !self.paused_now.swap(true, Ordering::Relaxed) {
            self.paused.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(m::LIMITS_TOTAL, "limit" => "fd_reserve").increment(1);
            static LOG: RateLimit = RateLimit::new(Duration::from_secs(10));
            if let Some(suppressed) = LOG.allow() {
                let soft = self.soft_limit();
                warn!(
                    listener = what,
                    open = open_fds(),
                    soft_limit = soft,
                    reserve = reserve(soft),
                    suppressed,
                    "open file descriptors within the reserve of RLIMIT_NOFILE; accepting paused"
                );
            }
        }
        loop {
            tokio::time::sleep(PAUSE_POLL).await;
            if self.has_room() {
                self.paused_now.store(false, Ordering::Relaxed);
                return;
            }
        }
    }
}

/// The back-off of an accept loop after accept errors (see the module docs).
#[derive(Debug)]
pub struct AcceptBackoff {
    what: &'static str,
    next: Duration,
}

impl AcceptBackoff {
    pub fn new(what: &'static str) -> AcceptBackoff {
        AcceptBackoff { what, next: ACCEPT_BACKOFF_MIN }
    }

    /// An accept succeeded: the next error starts from the minimum again.
    pub fn reset(&mut self) {
        self.next = ACCEPT_BACKOFF_MIN;
    }

    /// An accept failed: count it, log once per burst, and return how long to wait.
    pub fn failed(&mut self, e: &std::io::Error) -> Duration {
        metrics::counter!(m::LIMITS_TOTAL, "limit" => "accept_error").increment(1);
        static LOG: RateLimit = RateLimit::new(Duration::from_secs(10));
        let wait = self.next;
        if let Some(suppressed) = LOG.allow() {
            warn!(listener = self.what, error = %e, open = open_fds(), backoff_ms = wait.as_millis() as u64, suppressed, "accept failed; backing off");
        }
        self.next = (self.next * 2).min(ACCEPT_BACKOFF_MAX);
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_is_64_or_5_percent_and_never_half_the_limit() {
        assert_eq!(reserve(1024), 64);
        assert_eq!(reserve(4096), 204);
        assert_eq!(reserve(65_536), 3276);
        assert_eq!(reserve(100), 50);
    }

    #[test]
    fn backoff_doubles_to_a_second_and_resets() {
        let mut b = AcceptBackoff::new("test");
        let e = std::io::Error::from_raw_os_error(libc::EMFILE);
        let waits: Vec<u64> = (0..6).map(|_| b.failed(&e).as_millis() as u64).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.failed(&e), ACCEPT_BACKOFF_MIN);
    }

    #[test]
    fn open_fds_sees_a_new_descriptor() {
        let before = open_fds().expect("/proc/self/fd");
        let files: Vec<_> = (0..8).map(|_| std::fs::File::open("/proc/self/status").unwrap()).collect();
        let after = open_fds().unwrap();
        // Other test threads may open or close files meanwhile; 8 of ours are there.
        assert!(after + 4 >= before + 8, "{before} -> {after}");
        drop(files);
    }
}
