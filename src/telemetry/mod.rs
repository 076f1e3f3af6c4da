//! Logging setup (tracing with EnvFilter, human or JSON lines, level changeable at run time),
//! the metrics module ([`metrics`]: every metric name, the Prometheus recorder) and the
//! process metrics read from `/proc` at scrape time ([`process`]).

pub mod metrics;
pub mod process;

use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

/// The commit the binary was built from (12 hex digits; `unknown` outside a git checkout).
pub const COMMIT: &str = env!("CONSENTGATE_COMMIT");
/// The build date, `YYYY-MM-DD` UTC (`SOURCE_DATE_EPOCH` when the build set it).
pub const BUILD_DATE: &str = env!("CONSENTGATE_BUILD_DATE");
/// What `consentgate --version` prints after the name: `0.1.0 (commit 60730af6e1a2, built 2026-12-07)`.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("CONSENTGATE_COMMIT"),
    ", built ",
    env!("CONSENTGATE_BUILD_DATE"),
    ")"
);

static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Installs the global subscriber. `RUST_LOG` overrides `default_filter`.
pub fn init_logging(format: LogFormat, default_filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match format {
        LogFormat::Human => registry
            .with(tracing_subscriber::fmt::layer().with_ansi(colour_on_stderr()).with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Json => registry
            .with(tracing_subscriber::fmt::layer().json().flatten_event(true).with_writer(std::io::stderr))
            .try_init(),
    };
    if installed.is_ok() {
        let _ = FILTER.set(handle);
    }
}

/// Colour (ANSI escapes) in human logs only when stderr is a terminal and `NO_COLOR` is unset
/// or empty (<https://no-color.org>): a log file or the journal gets plain text.
fn colour_on_stderr() -> bool {
    use std::io::IsTerminal;
    colour_allowed(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR").as_deref())
}

fn colour_allowed(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Replaces the log filter (EnvFilter syntax: `info`, `consentgate=debug,warn`, …); used by
/// `PUT /v1/log-level`. Errors: the directive does not parse, or logging was not initialised
/// by [`init_logging`].
pub fn set_log_filter(directives: &str) -> Result<(), LogFilterError> {
    let filter = EnvFilter::try_new(directives).map_err(|e| LogFilterError::Invalid(e.to_string()))?;
    let handle = FILTER.get().ok_or(LogFilterError::NotManaged)?;
    handle.reload(filter).map_err(|e| LogFilterError::Invalid(e.to_string()))
}

/// Why [`set_log_filter`] refused a filter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogFilterError {
    /// The directives do not parse (the parser's message).
    #[error("{0}")]
    Invalid(String),
    /// Logging was not set up by [`init_logging`] in this process.
    #[error("logging is not managed by consentgate in this process")]
    NotManaged,
}

/// The current log filter, if [`init_logging`] installed it.
pub fn log_filter() -> Option<String> {
    FILTER.get().and_then(|h| h.with_current(|f| f.to_string()).ok())
}

/// Rate limiter for repeated warnings (STYLE §12): `allow()` is true at most once per
/// `every`; `suppressed()` tells how many were skipped since the last allowed one.
#[derive(Debug)]
pub struct RateLimit {
    every_ms: u64,
    last_ms: std::sync::atomic::AtomicU64,
    skipped: std::sync::atomic::AtomicU64,
}

impl RateLimit {
    pub const fn new(every: std::time::Duration) -> RateLimit {
        RateLimit {
            every_ms: every.as_millis() as u64,
            last_ms: std::sync::atomic::AtomicU64::new(0),
            skipped: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Whether to log now; if so, returns the number of suppressed occurrences since the
    /// previous logged one.
    pub fn allow(&self) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        // Monotonic: a wall clock stepped backwards must not silence warnings until it
        // catches up. Milliseconds since the first use in this process, from 1.
        static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let now = EPOCH.get_or_init(std::time::Instant::now).elapsed().as_millis() as u64 + 1;
        let last = self.last_ms.load(Relaxed);
        if last != 0 && now.saturating_sub(last) < self.every_ms {
            self.skipped.fetch_add(1, Relaxed);
            return None;
        }
        if self.last_ms.compare_exchange(last, now, Relaxed, Relaxed).is_err() {
            self.skipped.fetch_add(1, Relaxed);
            return None;
        }
        Some(self.skipped.swap(0, Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour_allowed(true, None));
        assert!(colour_allowed(true, Some(OsStr::new(""))), "an empty NO_COLOR does not count");
        assert!(!colour_allowed(true, Some(OsStr::new("1"))));
        assert!(!colour_allowed(false, None), "a file or pipe gets no escape codes");
    }

    #[test]
    fn long_version_names_the_commit_and_date() {
        assert!(LONG_VERSION.starts_with(env!("CARGO_PKG_VERSION")));
        assert_eq!(BUILD_DATE.len(), 10, "{BUILD_DATE}");
        assert!(COMMIT == "unknown" || COMMIT.chars().all(|c| c.is_ascii_hexdigit()), "{COMMIT}");
    }
}
