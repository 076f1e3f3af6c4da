//! `[audit]` settings as validated by the config (`Config.audit`) and their defaults.

use std::path::PathBuf;
use std::time::Duration;

use crate::policy::Verdict;

/// Default `audit.rotate_bytes`: 256 MiB.
pub const DEFAULT_ROTATE_BYTES: u64 = 256 << 20;
/// Default `audit.rotate_interval`: 1 h.
pub const DEFAULT_ROTATE_INTERVAL: Duration = Duration::from_secs(3600);
/// Default `audit.retention`: 150 days (the Chinese rule keeps records at least 5 months).
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(150 * 86_400);
/// Shortest `audit.retention` the config accepts.
pub const MIN_RETENTION: Duration = Duration::from_secs(86_400);
/// Default `audit.queue_records`: records queued for the writer before new ones are dropped.
pub const DEFAULT_QUEUE_RECORDS: usize = 65_536;

/// `audit.mode`: which decisions are recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuditMode {
    /// Every decision.
    All,
    /// `rejected` and `would_reject` decisions (the default when a directory is set).
    #[default]
    Rejects,
    /// Nothing (also the effective mode when `audit.dir` is not set).
    Off,
}

impl AuditMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditMode::All => "all",
            AuditMode::Rejects => "rejects",
            AuditMode::Off => "off",
        }
    }

    /// Whether a decision with this verdict is recorded.
    #[inline]
    pub fn records(self, verdict: Verdict) -> bool {
        match self {
            AuditMode::All => true,
            AuditMode::Rejects => !matches!(verdict, Verdict::Accept),
            AuditMode::Off => false,
        }
    }
}

/// Validated `[audit]` settings (`Config.audit`).
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// Effective mode: `Off` whenever `dir` is `None`.
    pub mode: AuditMode,
    /// Directory of the audit files (created at start if missing).
    pub dir: Option<PathBuf>,
    /// Start a new file when the active one reaches this size.
    pub rotate_bytes: u64,
    /// Start a new file when the active one is this old.
    pub rotate_interval: Duration,
    /// Delete files whose last write is older than this.
    pub retention: Duration,
    /// Records queued for the writer before new ones are dropped (bounds memory: about
    /// 200 bytes each).
    pub queue_records: usize,
}

impl Default for AuditConfig {
    /// Off (no directory); every other setting at its default.
    fn default() -> Self {
        AuditConfig {
            mode: AuditMode::Off,
            dir: None,
            rotate_bytes: DEFAULT_ROTATE_BYTES,
            rotate_interval: DEFAULT_ROTATE_INTERVAL,
            retention: DEFAULT_RETENTION,
            queue_records: DEFAULT_QUEUE_RECORDS,
        }
    }
}
