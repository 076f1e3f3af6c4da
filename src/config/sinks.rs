//! Where decisions and complaints go: `[capture]`, `[audit]`, `[complaints]`.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::raw::*;
use super::*;
use crate::capture::CaptureConfig;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCapture {
    pub enabled: Option<bool>,
    pub dir: Option<String>,
    pub max_file_bytes: Option<i64>,
    pub max_files: Option<i64>,
    pub accounts: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    pub mode: Option<String>,
    pub dir: Option<String>,
    pub rotate_bytes: Option<i64>,
    pub rotate_interval: Option<String>,
    pub retention: Option<String>,
    pub queue_records: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawComplaints {
    pub db: Option<String>,
    pub calendar: Option<String>,
    pub respond_within: Option<i64>,
    pub suspend_after: Option<i64>,
}

/// `[capture]`: `None` unless `enabled = true` (then `dir` is required).
pub(super) fn validate_capture(cap: RawCapture, accounts: &[Account], p: &mut Problems) -> Option<CaptureConfig> {
    let cfg = CaptureConfig {
        dir: cap.dir.clone().unwrap_or_default().into(),
        max_file_bytes: match cap.max_file_bytes {
            None => DEFAULT_CAPTURE_MAX_FILE_BYTES,
            Some(n) if n >= 65_536 => n as u64,
            Some(n) => {
                p.push("capture.max_file_bytes", format!("{n}: must be at least 65536"));
                DEFAULT_CAPTURE_MAX_FILE_BYTES
            }
        },
        max_files: match cap.max_files {
            None => DEFAULT_CAPTURE_MAX_FILES,
            Some(n) if (1..=100_000).contains(&n) => n as usize,
            Some(n) => {
                p.push("capture.max_files", format!("{n}: must be 1..=100000"));
                DEFAULT_CAPTURE_MAX_FILES
            }
        },
        accounts: cap.accounts.unwrap_or_default(),
        ..Default::default()
    };
    let enabled = cap.enabled.unwrap_or(false);
    if enabled && cap.dir.as_deref().is_none_or(str::is_empty) {
        p.push("capture.dir", "required when capture.enabled = true");
    }
    for (i, a) in cfg.accounts.iter().enumerate() {
        if !accounts.iter().any(|x| &x.system_id == a) {
            p.push(format!("capture.accounts[{i}]"), format!("`{a}` is not an [[account]] system_id"));
        }
    }
    enabled.then_some(cfg)
}

/// `[audit]`: mode defaults to `rejects` when a directory is given and to off without one; an
/// explicit `all` / `rejects` without a directory is an error naming `audit.dir`.
pub(super) fn validate_audit(a: RawAudit, p: &mut Problems) -> crate::audit::AuditConfig {
    use crate::audit::{
        AuditConfig, AuditMode, DEFAULT_QUEUE_RECORDS, DEFAULT_RETENTION, DEFAULT_ROTATE_BYTES,
        DEFAULT_ROTATE_INTERVAL, MIN_RETENTION,
    };
    let dir = match a.dir {
        Some(d) if d.trim().is_empty() => {
            p.push("audit.dir", "must not be empty (omit it, or set audit.mode = \"off\", to disable the audit log)");
            None
        }
        d => d.map(PathBuf::from),
    };
    let mode = match a.mode.as_deref() {
        None if dir.is_some() => AuditMode::Rejects,
        None | Some("off") => AuditMode::Off,
        Some(m @ ("all" | "rejects")) => {
            if dir.is_none() {
                p.push("audit.dir", format!("required when audit.mode = \"{m}\" (or set audit.mode = \"off\")"));
            }
            if m == "all" {
                AuditMode::All
            } else {
                AuditMode::Rejects
            }
        }
        Some(o) => {
            p.push("audit.mode", format!("`{o}`: expected all | rejects | off"));
            AuditMode::Off
        }
    };
    let rotate_bytes = p.range("audit.rotate_bytes", a.rotate_bytes, DEFAULT_ROTATE_BYTES as usize, 1 << 20, 1 << 40);
    let rotate_interval = p.duration("audit.rotate_interval", a.rotate_interval.as_deref(), DEFAULT_ROTATE_INTERVAL);
    if rotate_interval < Duration::from_secs(60) {
        p.push("audit.rotate_interval", "must be at least 1m");
    }
    let retention = p.duration("audit.retention", a.retention.as_deref(), DEFAULT_RETENTION);
    if retention < MIN_RETENTION {
        p.push("audit.retention", "must be at least 1d (complaint rules need months: the default is 150d)");
    }
    let queue_records = p.range("audit.queue_records", a.queue_records, DEFAULT_QUEUE_RECORDS, 1024, 16 << 20);
    AuditConfig {
        mode: if dir.is_some() { mode } else { AuditMode::Off },
        dir,
        rotate_bytes: rotate_bytes as u64,
        rotate_interval,
        retention,
        queue_records,
    }
}

/// `[complaints]`: `db` required; `calendar` read and checked now (its errors name the file,
/// line and key); without one, working days are Monday–Friday in the policy's default zone.
pub(super) fn validate_complaints(
    c: RawComplaints,
    policy: &crate::policy::PolicyConfig,
    p: &mut Problems,
) -> Option<crate::complaints::ComplaintsConfig> {
    use crate::complaints::{ComplaintsConfig, DEFAULT_RESPOND_WITHIN};
    let db = match c.db.as_deref().map(str::trim) {
        Some(d) if !d.is_empty() => Some(PathBuf::from(d)),
        Some(_) => {
            p.push("complaints.db", "must not be empty");
            None
        }
        None => {
            p.push("complaints.db", "required: the register's SQLite file (e.g. /var/lib/consentgate/complaints.db)");
            None
        }
    };
    let calendar = match c.calendar.as_deref() {
        None => Some(crate::time::Calendar::weekends_only(policy.zones.of(None).clone())),
        Some(f) => match std::fs::read_to_string(f) {
            // A warning for check-config (the file may be provisioned later); `run` refuses
            // to start on it (`Diagnostic::refuses_start`). Meanwhile: weekends only.
            Err(e) => {
                p.warn("complaints.calendar", format!("{f}: cannot read: {e}"));
                Some(crate::time::Calendar::weekends_only(policy.zones.of(None).clone()))
            }
            Ok(text) => match crate::time::Calendar::parse(&text) {
                Ok(cal) => Some(cal),
                Err(e) => {
                    p.push("complaints.calendar", format!("{f}: {e}"));
                    None
                }
            },
        },
    };
    let respond_within =
        p.range("complaints.respond_within", c.respond_within, DEFAULT_RESPOND_WITHIN as usize, 1, 365) as u32;
    let suspend_after = p.range("complaints.suspend_after", c.suspend_after, 0, 0, 1_000_000) as u32;
    Some(ComplaintsConfig { db: db?, calendar: calendar?, respond_within, suspend_after })
}
