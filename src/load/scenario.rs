//! Scenario files: one JSON object per line, each a message to send (`consentgate load
//! --scenario FILE`).

use crate::smpp::status;
use crate::smpp::text::split_text;
pub use crate::smpp::text::Encoding;

/// One message of a scenario file (one JSON object per line):
/// `{"source":"ACME","destination":"+8613800138000","text":"hi","encoding":"gsm7","expect":"ok"}`.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioLine {
    /// Numeric (TON 0) or alphanumeric (TON 5) sender, ≤ 20 characters.
    pub source: String,
    /// Recipient, ≤ 20 digits; a leading `+` is dropped (always sent as TON 1 / NPI 1).
    pub destination: String,
    /// Message text; split into concatenated parts when too long for one SMS.
    pub text: String,
    #[serde(default)]
    pub encoding: Encoding,
    /// Expected submit_sm_resp status: `"0x00000058"`, `"88"`, `"ok"`, `"ESME_RTHROTTLED"` or
    /// `"throttled"`. Every part of a multi-part message is checked.
    #[serde(default)]
    pub expect: Option<String>,
}

/// Reads a JSONL scenario. Blank lines and lines starting with `#` are skipped; every error
/// names `file:line`.
pub fn parse_scenario(text: &str, file_name: &str) -> anyhow::Result<Vec<ScenarioLine>> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_start_matches('\u{feff}').trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let n = i + 1;
        let l: ScenarioLine = serde_json::from_str(line).map_err(|e| anyhow::anyhow!("{file_name}:{n}: {e}"))?;
        check_line(&l).map_err(|e| anyhow::anyhow!("{file_name}:{n}: {e}"))?;
        out.push(l);
    }
    if out.is_empty() {
        anyhow::bail!("{file_name}: no messages");
    }
    Ok(out)
}

pub(super) fn check_line(l: &ScenarioLine) -> Result<(), String> {
    check_addr("source", &l.source)?;
    check_addr("destination", l.destination.strip_prefix('+').unwrap_or(&l.destination))?;
    if let Some(e) = &l.expect {
        status::parse(e).ok_or_else(|| format!("expect {e:?}: not a status (0x…, decimal, ok, ESME_R…)"))?;
    }
    split_text(&l.text, l.encoding).map_err(|e| e.to_string())?;
    Ok(())
}

pub(super) fn check_addr(field: &str, a: &str) -> Result<(), String> {
    if a.is_empty() || a.len() > 20 || !a.is_ascii() || a.contains('\0') {
        return Err(format!("{field} {a:?}: must be 1–20 ASCII characters"));
    }
    Ok(())
}
