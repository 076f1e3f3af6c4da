//! The standard process metrics (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! … — names in [`super::metrics`]), read from `/proc/self` when `/metrics` is scraped and
//! appended to the exporter's text, the way the Prometheus client libraries do it.
//!
//! | metric | source |
//! |---|---|
//! | `process_cpu_seconds_total` | `/proc/self/stat` utime + stime, over `sysconf(_SC_CLK_TCK)` |
//! | `process_resident_memory_bytes` | `/proc/self/stat` rss (pages) × page size |
//! | `process_virtual_memory_bytes` | `/proc/self/stat` vsize |
//! | `process_open_fds` | entries of `/proc/self/fd` (as the accept loops count them, `relay::fds`) |
//! | `process_max_fds` | the soft limit of `Max open files` in `/proc/self/limits` (`RLIMIT_NOFILE`) |
//! | `process_start_time_seconds` | `/proc/self/stat` starttime over the clock tick, plus the boot time (`CLOCK_REALTIME` − `CLOCK_BOOTTIME`, read once) |
//!
//! Nothing is read outside `/proc/self`: the systemd unit's `ProcSubset=pid` hides
//! `/proc/stat` and `/proc/uptime`.
//!
//! Linux only: elsewhere (no `/proc/self/stat` in this format) [`render`] writes nothing and
//! the series are absent. A scrape costs two small file reads and a directory listing.

use std::fmt::Write as _;
use std::sync::OnceLock;

use super::metrics as m;

/// The fields of `/proc/self/stat` used here (proc(5) numbering in the comments).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// (14) user CPU time, clock ticks.
    pub utime: u64,
    /// (15) system CPU time, clock ticks.
    pub stime: u64,
    /// (22) start time, clock ticks after boot.
    pub starttime: u64,
    /// (23) virtual memory size, bytes.
    pub vsize: u64,
    /// (24) resident set size, pages.
    pub rss: u64,
}

/// Parses a `/proc/<pid>/stat` line. The command name (2) is in parentheses and may itself
/// hold spaces and parentheses, so fields are counted from the last `)`.
pub fn parse_stat(line: &str) -> Option<Stat> {
    let after = &line[line.rfind(')')? + 1..];
    // Field 3 (state) is index 0 here.
    let f: Vec<&str> = after.split_whitespace().collect();
    let at = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    Some(Stat { utime: at(14)?, stime: at(15)?, starttime: at(22)?, vsize: at(23)?, rss: at(24)? })
}

/// The soft limit of `Max open files` in a `/proc/<pid>/limits` text; None when unlimited
/// or absent.
pub fn parse_max_open_files(limits: &str) -> Option<u64> {
    let rest = limits.lines().find_map(|l| l.strip_prefix("Max open files"))?;
    rest.split_whitespace().next()?.parse().ok()
}

/// Open descriptors, from `/proc/self/fd` (whose own descriptor is listed too).
fn open_fds() -> Option<u64> {
    std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count().saturating_sub(1) as u64)
}

/// `sysconf(name)`, None if the system does not know it.
fn sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: sysconf reads a system constant; it takes no pointer and has no side effect.
    #[allow(unsafe_code)]
    let v = unsafe { libc::sysconf(name) };
    (v > 0).then_some(v as u64)
}

/// `clock_gettime(clock)` in seconds.
fn clock_seconds(clock: libc::clockid_t) -> Option<f64> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec that outlives the call.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    (rc == 0).then(|| ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9)
}

/// Clock ticks per second, page size, and boot time (unix seconds): fixed for the life of
/// the process, read at the first scrape.
fn constants() -> Option<(u64, u64, f64)> {
    static C: OnceLock<Option<(u64, u64, f64)>> = OnceLock::new();
    *C.get_or_init(|| {
        #[cfg(target_os = "linux")]
        let boot = clock_seconds(libc::CLOCK_REALTIME)? - clock_seconds(libc::CLOCK_BOOTTIME)?;
        #[cfg(not(target_os = "linux"))]
        let boot = clock_seconds(libc::CLOCK_REALTIME)? - clock_seconds(libc::CLOCK_MONOTONIC)?;
        Some((sysconf(libc::_SC_CLK_TCK)?, sysconf(libc::_SC_PAGESIZE)?, boot))
    })
}

/// One reading of the process metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub start_time_seconds: f64,
}

/// Reads the process metrics now; None where `/proc` is not Linux's.
pub fn sample() -> Option<Sample> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    let (tick, page, btime) = constants()?;
    let stat = parse_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
    Some(Sample {
        cpu_seconds: stat.utime.saturating_add(stat.stime) as f64 / tick as f64,
        resident_bytes: stat.rss.saturating_mul(page),
        virtual_bytes: stat.vsize,
        open_fds: open_fds(),
        max_fds: std::fs::read_to_string("/proc/self/limits").ok().as_deref().and_then(parse_max_open_files),
        start_time_seconds: btime + stat.starttime as f64 / tick as f64,
    })
}

/// Appends the process metrics to `out` in the Prometheus text format (nothing off Linux).
pub fn render(out: &mut String) {
    let Some(s) = sample() else { return };
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    let mut one = |name: &str, kind: &str, help: &str, value: String| {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n");
    };
    one(
        m::PROCESS_CPU_SECONDS_TOTAL,
        "counter",
        "Total user and system CPU time spent in seconds.",
        s.cpu_seconds.to_string(),
    );
    one(m::PROCESS_RESIDENT_MEMORY, "gauge", "Resident memory size in bytes.", s.resident_bytes.to_string());
    one(m::PROCESS_VIRTUAL_MEMORY, "gauge", "Virtual memory size in bytes.", s.virtual_bytes.to_string());
    if let Some(n) = s.open_fds {
        one(m::PROCESS_OPEN_FDS, "gauge", "Number of open file descriptors.", n.to_string());
    }
    if let Some(n) = s.max_fds {
        one(m::PROCESS_MAX_FDS, "gauge", "Maximum number of open file descriptors.", n.to_string());
    }
    one(
        m::PROCESS_START_TIME,
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        s.start_time_seconds.to_string(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        // A command name with a space and a parenthesis of its own.
        let line = "4242 (consent gate) x) S 1 4242 4242 0 -1 4194560 1200 0 3 0 150 75 0 0 20 0 9 0 \
                    123456 987654321 2500 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(
            parse_stat(line),
            Some(Stat { utime: 150, stime: 75, starttime: 123456, vsize: 987_654_321, rss: 2500 })
        );
        assert_eq!(parse_stat("4242 (short) S 1 2 3"), None);
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    fn the_soft_open_files_limit_is_read_from_limits() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             63432                63432                processes \n\
                      Max open files            524288               1048576              files     \n\
                      Max locked memory         8388608              8388608              bytes     \n";
        assert_eq!(parse_max_open_files(limits), Some(524_288));
        let unlimited = "Max open files            unlimited            unlimited            files     \n";
        assert_eq!(parse_max_open_files(unlimited), None);
        assert_eq!(parse_max_open_files("Max processes 1 1 processes\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_reads_plausibly() {
        let s = sample().expect("a Linux /proc");
        assert!(s.resident_bytes > 1 << 20, "{s:?}");
        assert!(s.virtual_bytes >= s.resident_bytes, "{s:?}");
        assert!(s.open_fds.is_some_and(|n| n >= 3), "{s:?}");
        assert!(s.max_fds.is_some_and(|m| s.open_fds.is_some_and(|n| n < m)), "{s:?}");
        let now = crate::time::unix_us() as f64 / 1e6;
        assert!(s.start_time_seconds <= now + 1.0 && s.start_time_seconds > now - 3600.0, "{s:?} vs {now}");
        let mut text = String::from("x 1");
        render(&mut text);
        assert!(text.starts_with("x 1\n# HELP process_cpu_seconds_total "), "{text}");
        assert!(text.contains("\n# TYPE process_open_fds gauge\nprocess_open_fds "), "{text}");
    }
}
