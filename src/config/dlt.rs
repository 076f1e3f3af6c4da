//! `[dlt]`: the India DLT registry and how its ids travel (architecture §11). The registry
//! file is opened and fully validated here, so `check-config`, start and every reload refuse
//! a file that does not load (naming it) and a reload keeps the running one. A reload that
//! finds the file unchanged keeps the registry in use without reading it again ([`open`]).

use std::sync::Arc;

use serde::Deserialize;

use super::policy::{daily_window, RawQuietHours};
use super::raw::*;
use crate::dlt::Registry;
use crate::policy::dlt::{
    DltConfig, DEFAULT_CHAIN_TLV, DEFAULT_PE_ID_TLV, DEFAULT_PROMOTIONAL_HOURS, DEFAULT_TEMPLATE_ID_TLV,
    DEFAULT_TIMEZONE,
};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDlt {
    pub registry: Option<String>,
    pub pe_id_tlv: Option<i64>,
    pub template_id_tlv: Option<i64>,
    pub chain_tlv: Option<i64>,
    pub promotional_hours: Option<RawQuietHours>,
}

/// `[dlt]`, with its registry open; `None` after a problem (reported under its key).
pub(super) fn validate_dlt(d: RawDlt, p: &mut Problems) -> Option<DltConfig> {
    let mut tag = |key: &str, v: Option<i64>, default: u16| -> u16 {
        match v {
            None => default,
            Some(n) if (1..=0xFFFF).contains(&n) => n as u16,
            Some(n) => {
                p.push(key, format!("{n} is not a TLV tag (1..=0xFFFF; vendor tags are 0x1400-0x3FFF)"));
                default
            }
        }
    };
    let pe_id_tlv = tag("dlt.pe_id_tlv", d.pe_id_tlv, DEFAULT_PE_ID_TLV);
    let template_id_tlv = tag("dlt.template_id_tlv", d.template_id_tlv, DEFAULT_TEMPLATE_ID_TLV);
    let chain_tlv = tag("dlt.chain_tlv", d.chain_tlv, DEFAULT_CHAIN_TLV);
    if template_id_tlv == pe_id_tlv {
        p.push(
            "dlt.template_id_tlv",
            format!("{template_id_tlv:#06x} is dlt.pe_id_tlv too: each id needs its own tag"),
        );
    }
    if chain_tlv == pe_id_tlv || chain_tlv == template_id_tlv {
        p.push("dlt.chain_tlv", format!("{chain_tlv:#06x} is used by another dlt tag: each needs its own"));
    }
    let (promotional_hours, zone) = match d.promotional_hours {
        None => (Some(DEFAULT_PROMOTIONAL_HOURS), crate::time::Zone::get(DEFAULT_TIMEZONE).ok()),
        Some(h) => {
            let name = h.timezone.as_deref().unwrap_or(DEFAULT_TIMEZONE);
            let zone =
                crate::time::Zone::get(name).map_err(|e| p.push("dlt.promotional_hours.timezone", e.to_string())).ok();
            (daily_window("dlt.promotional_hours", h.start, h.end, p), zone)
        }
    };
    let Some(path) = d.registry.filter(|r| !r.trim().is_empty()) else {
        p.push("dlt.registry", "required: the registry file `consentgate dlt build` wrote");
        return None;
    };
    let registry = match open(std::path::Path::new(&path)) {
        Ok(r) => r,
        Err(e) => {
            // The error names the file.
            p.push("dlt.registry", e.to_string());
            return None;
        }
    };
    Some(DltConfig {
        registry,
        path: path.into(),
        pe_id_tlv,
        template_id_tlv,
        chain_tlv,
        promotional_hours: promotional_hours?,
        zone: zone.unwrap_or_else(crate::time::Zone::utc),
    })
}

/// The registry last opened, while an engine still holds it: a config reload that finds the
/// same file (path, inode, length, modification time) reuses it instead of reading and
/// validating gigabytes again for an edit of an account. `dlt build` renames a new file into
/// place (a new inode), and a copy over the old one changes its length or time, so a new
/// registry is always read. A std Mutex: no await inside; only config loads take it.
static LAST: std::sync::Mutex<Option<(std::path::PathBuf, Stamp, std::sync::Weak<Registry>)>> =
    std::sync::Mutex::new(None);

type Stamp = (u64, u64, Option<std::time::SystemTime>);

fn stamp(path: &std::path::Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.ino(), m.len(), m.modified().ok()))
}

/// The registry at `path`: the one in use if the file is unchanged, else opened and validated.
fn open(path: &std::path::Path) -> Result<Arc<Registry>, crate::dlt::RegistryError> {
    let before = stamp(path);
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    if let (Some(s), Some((p, st, weak))) = (before, last.as_ref()) {
        if p == path && *st == s {
            if let Some(r) = weak.upgrade() {
                return Ok(r);
            }
        }
    }
    let r = Arc::new(Registry::open(path)?);
    // Stamped as it was before reading: a file replaced while it was read is read again.
    if let Some(s) = before {
        *last = Some((path.to_owned(), s, Arc::downgrade(&r)));
    }
    Ok(r)
}
