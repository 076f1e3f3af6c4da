//! Scenario files: one JSON object per line, each a message to send (`consentgate load
//! --scenario FILE`).

use crate::smpp::status;
use crate::smpp::text::split_text;
pub use crate::smpp::text::Encoding;

/// One message of a scenario file (one JSON object per line):
/// `{"source":"ACME","destination":"+8613800138000","text":"hi","encoding":"gsm7","expect":"ok"}`,
/// optionally with `"tlvs": {"0x1400": "1101000000000000001"}` (SMPP only: optional parameters
/// appended to every part, each tag hex `0x…` or decimal, each value sent as its ASCII/UTF-8
/// bytes; a tag also given by `load --tlv` takes the line's value).
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
    /// Optional parameters of this message: tag (`"0x1401"` or `"5121"`) → value.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tlvs: std::collections::BTreeMap<String, String>,
}

/// A TLV tag as `0x…` hex or decimal, 1–0xFFFF.
pub fn parse_tlv_tag(t: &str) -> Result<u16, String> {
    let v = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(h) => u16::from_str_radix(h, 16),
        None => t.parse::<u16>(),
    };
    match v {
        Ok(0) | Err(_) => Err(format!("TLV tag {t:?}: expected 0x0001–0xFFFF (hex with 0x, or decimal)")),
        Ok(v) => Ok(v),
    }
}

/// `TAG=VALUE` (`load --tlv 0x1400=1101000000000000001`): the tag and the value's bytes.
pub fn parse_tlv_arg(s: &str) -> Result<(u16, Vec<u8>), String> {
    let (tag, value) = s.split_once('=').ok_or_else(|| format!("--tlv {s:?}: expected TAG=VALUE"))?;
    let tag = parse_tlv_tag(tag.trim())?;
    check_tlv_value(tag, value)?;
    Ok((tag, value.as_bytes().to_vec()))
}

fn check_tlv_value(tag: u16, v: &str) -> Result<(), String> {
    if v.len() > usize::from(u16::MAX) {
        return Err(format!("TLV 0x{tag:04x}: value longer than 65 535 bytes"));
    }
    Ok(())
}

/// `base` (from `load --tlv`) with `line`'s TLVs put over it: one value per tag, in tag order.
pub(super) fn merged_tlvs(base: &[(u16, Vec<u8>)], line: &ScenarioLine) -> Result<Vec<(u16, Vec<u8>)>, String> {
    let mut out: std::collections::BTreeMap<u16, Vec<u8>> = base.iter().cloned().collect();
    for (t, v) in &line.tlvs {
        let tag = parse_tlv_tag(t)?;
        check_tlv_value(tag, v)?;
        out.insert(tag, v.as_bytes().to_vec());
    }
    Ok(out.into_iter().collect())
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
    merged_tlvs(&[], l)?;
    Ok(())
}

pub(super) fn check_addr(field: &str, a: &str) -> Result<(), String> {
    if a.is_empty() || a.len() > 20 || !a.is_ascii() || a.contains('\0') {
        return Err(format!("{field} {a:?}: must be 1–20 ASCII characters"));
    }
    Ok(())
}
