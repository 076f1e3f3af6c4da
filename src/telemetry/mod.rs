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

static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Installs the global subscriber. `RUST_LOG` overrides `default_filter`.
pub fn init_logging(format: LogFormat, default_filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match format {
        LogFormat::Human => registry.with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr)).try_init(),
        LogFormat::Json => registry
            .with(tracing_subscriber::fmt::layer().json().flatten_event(true).with_writer(std::io::stderr))
            .try_init(),
    };
    if installed.is_ok() {
        let _ = FILTER.set(handle);
    }
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
