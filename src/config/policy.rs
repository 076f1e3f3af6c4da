//! `[policy]` and its tables (`quiet_hours`, `timezones`, `frequency`, `commercial`,
//! `[[policy.content_rule]]`); the quiet-hours window and daily cap that accounts share.

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;

use super::raw::*;
use super::*;
use crate::policy::content::{CommercialConfig, ContentRule, ContentRules, RuleAction};
use crate::policy::frequency::FrequencyConfig;
use crate::policy::{DailyWindow, Reason};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub mode: Option<String>,
    pub regime: Option<String>,
    pub default_country_code: Option<String>,
    pub on_snapshot_unavailable: Option<String>,
    pub optout_keywords: Option<Vec<String>>,
    pub opt_in_keywords: Option<Vec<String>>,
    pub reject_status: Option<HashMap<String, u32>>,
    pub quiet_hours: Option<RawQuietHours>,
    pub timezones: Option<HashMap<String, String>>,
    pub reassembly_timeout: Option<String>,
    pub frequency: Option<RawFrequency>,
    pub commercial: Option<RawCommercial>,
    pub cmpp: Option<RawPolicyCmpp>,
    #[serde(default)]
    pub content_rule: Vec<RawContentRule>,
}

/// `[policy.cmpp]`: how a refusal reads on the CMPP front.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicyCmpp {
    pub result: Option<HashMap<String, u32>>,
    pub stat: Option<HashMap<String, String>>,
}

/// `[policy.frequency]`, and (only `per_entity_per_day`) `[account.frequency]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFrequency {
    pub per_entity_per_day: Option<i64>,
    pub per_subscriber_per_day: Option<i64>,
    pub same_text_window: Option<String>,
    pub subscribers: Option<i64>,
    pub peak_rate: Option<i64>,
    pub checkpoint_interval: Option<String>,
}

/// `[policy.commercial]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCommercial {
    pub require_signature: Option<bool>,
    pub opt_out_hints: Option<Vec<String>>,
}

/// One `[[policy.content_rule]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawContentRule {
    pub name: Option<String>,
    pub literals: Option<Vec<String>>,
    pub regex: Option<Vec<String>>,
    pub action: Option<String>,
}

/// `[policy.quiet_hours]`, and (without `timezone`) `[account.quiet_hours]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQuietHours {
    pub start: Option<String>,
    pub end: Option<String>,
    pub timezone: Option<String>,
}

/// Opt-in keywords (`key`): none empty, none that is also an opt-out keyword (an MO is checked
/// for opt-out first, so such a keyword would never re-grant).
pub(super) fn check_opt_in(key: &str, words: &[String], optout: &[String], p: &mut Problems) {
    if words.iter().any(|k| k.trim().is_empty()) {
        p.push(key, "keywords must not be empty");
    }
    let out = crate::optout::Keywords::new(optout);
    for w in crate::optout::Keywords::new(words).iter() {
        if out.matches(w) {
            p.push(key, format!("`{w}` is also an opt-out keyword (policy.optout_keywords)"));
        }
    }
}

/// `[policy]`, and the opt-out keywords it carries for `optout`.
pub(super) fn validate_policy(pol: RawPolicy, p: &mut Problems) -> (PolicyConfig, Vec<String>) {
    let mode = pol.mode.and_then(|w| p.choice("policy.mode", &w, MODES)).unwrap_or(PolicyMode::Enforce);
    let regime = pol.regime.and_then(|w| p.choice("policy.regime", &w, REGIMES)).unwrap_or(Regime::OptIn);
    let cc = pol.default_country_code.unwrap_or_else(|| "86".into());
    if cc.is_empty() || cc.len() > 3 || !cc.bytes().all(|b| b.is_ascii_digit()) || cc.starts_with('0') {
        p.push("policy.default_country_code", format!("`{cc}`: expected 1-3 digits without leading 0, e.g. \"86\""));
    }
    let on_snapshot_unavailable = pol
        .on_snapshot_unavailable
        .and_then(|w| p.choice("policy.on_snapshot_unavailable", &w, UNAVAILABLE))
        .unwrap_or(Unavailable::Reject);
    let optout_keywords = match pol.optout_keywords {
        None => DEFAULT_OPTOUT_KEYWORDS.iter().map(|s| s.to_string()).collect(),
        Some(v) => {
            if v.iter().any(|k| k.trim().is_empty()) {
                p.push("policy.optout_keywords", "keywords must not be empty");
            }
            v
        }
    };
    let mut reject_status = crate::policy::Reason::default_statuses();
    for (name, st) in pol.reject_status.unwrap_or_default() {
        match crate::policy::Reason::from_label(&name) {
            Some(r) if st != 0 => reject_status[r as usize] = st,
            Some(_) => p.push(format!("policy.reject_status.{name}"), "0 (ESME_ROK) cannot be a reject status"),
            None => p.push(
                format!("policy.reject_status.{name}"),
                format!("unknown reason; expected one of {}", crate::policy::Reason::labels().join(", ")),
            ),
        }
    }
    if reject_status.contains(&crate::smpp::status::ESME_RINVDSTADR) {
        p.push(
            "policy.reject_status",
            "0x0B (ESME_RINVDSTADR) makes senders purge the number; use the vendor range 0x400-0x4FF",
        );
    }
    let (cmpp_result, cmpp_stat) = validate_policy_cmpp(pol.cmpp.unwrap_or_default(), p);
    let (quiet_hours, fallback) = match pol.quiet_hours {
        None => (None, crate::time::Zone::utc()),
        Some(q) => {
            let zone = match q.timezone.as_deref() {
                None => crate::time::Zone::utc(),
                Some(name) => crate::time::Zone::get(name).unwrap_or_else(|e| {
                    p.push("policy.quiet_hours.timezone", e.to_string());
                    crate::time::Zone::utc()
                }),
            };
            (daily_window("policy.quiet_hours", q.start, q.end, p), zone)
        }
    };
    let mut by_cc = Vec::new();
    for (cc, name) in pol.timezones.unwrap_or_default() {
        let key = format!("policy.timezones.\"{cc}\"");
        if cc.is_empty() || cc.len() > 3 || !cc.bytes().all(|b| b.is_ascii_digit()) || cc.starts_with('0') {
            p.push(&key, format!("`{cc}`: a country code is 1-3 digits without leading 0, e.g. \"86\""));
            continue;
        }
        match crate::time::Zone::get(&name) {
            Ok(z) => by_cc.push((cc, z)),
            Err(e) => p.push(&key, e.to_string()),
        }
    }
    let zones = crate::policy::Zones::new(by_cc, fallback);
    let content = validate_content_rules(pol.content_rule, p);
    let commercial = pol.commercial.unwrap_or_default();
    let hints = commercial.opt_out_hints.unwrap_or_default();
    if hints.iter().any(|h| h.trim().is_empty()) {
        p.push("policy.commercial.opt_out_hints", "hints must not be empty");
    }
    let commercial = CommercialConfig::new(commercial.require_signature.unwrap_or(false), hints);
    let frequency = validate_frequency(pol.frequency.unwrap_or_default(), p);
    let reassembly = p.duration("policy.reassembly_timeout", pol.reassembly_timeout.as_deref(), Duration::from_secs(2));
    // Parts are held in memory and the ESME waits for their responses: a minute is the most.
    if reassembly > Duration::from_secs(60) {
        p.push("policy.reassembly_timeout", "at most 60s (the parts of a message are held, unanswered, until then)");
    }
    let reassembly_timeout_ms = reassembly.as_millis().min(60_000) as u64;
    (
        PolicyConfig {
            mode,
            regime,
            default_country_code: cc,
            on_snapshot_unavailable,
            reject_status,
            cmpp_result,
            cmpp_stat,
            quiet_hours,
            zones,
            content,
            commercial,
            frequency,
            reassembly_timeout_ms,
            // `[dlt]` is its own section: the caller fills it in.
            dlt: None,
        },
        optout_keywords,
    )
}

/// A daily cap at `key`: 1..=254 (the slot counts to 255), absent = 0 (no cap).
pub(super) fn daily_cap(key: &str, v: Option<i64>, p: &mut Problems) -> u32 {
    match v {
        None => 0,
        Some(n) if (1..=FrequencyConfig::MAX_CAP as i64).contains(&n) => n as u32,
        Some(n) => {
            p.push(key, format!("{n} is outside 1..={} (omit the key for no cap)", FrequencyConfig::MAX_CAP));
            0
        }
    }
}

/// `[policy.frequency]`.
pub(super) fn validate_frequency(f: RawFrequency, p: &mut Problems) -> FrequencyConfig {
    let same_text_window_s = match f.same_text_window.as_deref() {
        None => 0,
        Some(w) => {
            let d = p.duration("policy.frequency.same_text_window", Some(w), Duration::ZERO);
            if d > Duration::from_secs(7 * 86_400) {
                p.push("policy.frequency.same_text_window", "must be at most 7d");
            }
            d.as_secs().clamp(1, 7 * 86_400) as u32
        }
    };
    FrequencyConfig {
        per_entity_per_day: daily_cap("policy.frequency.per_entity_per_day", f.per_entity_per_day, p),
        per_subscriber_per_day: daily_cap("policy.frequency.per_subscriber_per_day", f.per_subscriber_per_day, p),
        same_text_window_s,
        subscribers: p.range(
            "policy.frequency.subscribers",
            f.subscribers,
            FrequencyConfig::DEFAULT_SUBSCRIBERS as usize,
            1_000,
            2_000_000_000,
        ) as u64,
        peak_rate: p.range(
            "policy.frequency.peak_rate",
            f.peak_rate,
            FrequencyConfig::DEFAULT_PEAK_RATE as usize,
            1,
            10_000_000,
        ) as u64,
        checkpoint_s: {
            let key = "policy.frequency.checkpoint_interval";
            let d = p.duration(key, f.checkpoint_interval.as_deref(), Duration::from_secs(60));
            if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&d) {
                p.push(key, "must be between 1s and 1h");
            }
            d.as_secs().clamp(1, 3600) as u32
        },
    }
}

/// `[[policy.content_rule]]`, compiled; a bad regex names `policy.content_rule[name].regex[j]`.
pub(super) fn validate_content_rules(raw: Vec<RawContentRule>, p: &mut Problems) -> ContentRules {
    let mut rules = Vec::with_capacity(raw.len());
    let mut names = Vec::with_capacity(raw.len());
    for (i, r) in raw.into_iter().enumerate() {
        // Named by name (`policy.content_rule[casino].action`), by position when it has none.
        let label = r.name.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| i.to_string());
        let key = |f: &str| format!("policy.content_rule[{label}].{f}");
        let name = r.name.filter(|n| !n.trim().is_empty()).unwrap_or_else(|| {
            p.push(key("name"), "required: it labels the audit record of every message the rule decides");
            format!("rule{i}")
        });
        if rules.iter().any(|x: &ContentRule| x.name == name) {
            p.push(key("name"), format!("`{name}` is defined twice"));
        }
        let literals = r.literals.unwrap_or_default();
        if literals.iter().any(|l| l.trim().is_empty()) {
            p.push(key("literals"), "literals must not be empty");
        }
        let regex = r.regex.unwrap_or_default();
        if literals.is_empty() && regex.is_empty() {
            p.push(key("literals"), "a rule needs at least one of literals, regex");
        }
        let action = match r.action {
            None => {
                p.push(key("action"), "required: marketing | reject");
                RuleAction::Marketing
            }
            Some(w) => p.choice(&key("action"), &w, RULE_ACTIONS).unwrap_or(RuleAction::Marketing),
        };
        rules.push(ContentRule { name, literals, regex, action });
        names.push(label);
    }
    ContentRules::new(rules).unwrap_or_else(|e| {
        let rule = names.get(e.rule).cloned().unwrap_or_else(|| e.rule.to_string());
        p.push(format!("policy.content_rule[{rule}].regex[{}]", e.regex), e.message);
        ContentRules::default()
    })
}

/// `start` and `end` (`HH:MM`) of a quiet-hours table at `key`; problems name the key.
pub(super) fn daily_window(
    key: &str,
    start: Option<String>,
    end: Option<String>,
    p: &mut Problems,
) -> Option<DailyWindow> {
    let mut time = |f: &str, v: Option<String>| -> Option<u16> {
        let Some(v) = v else {
            p.push(format!("{key}.{f}"), "required: HH:MM");
            return None;
        };
        DailyWindow::parse_time(&v).or_else(|| {
            p.push(format!("{key}.{f}"), format!("`{v}`: expected HH:MM, 00:00-23:59"));
            None
        })
    };
    let (start, end) = (time("start", start), time("end", end));
    let (start, end) = (start?, end?);
    if start == end {
        p.push(
            format!("{key}.end"),
            format!(
                "equals start ({}): the window would be empty; start > end wraps midnight (21:00-08:00)",
                DailyWindow::fmt_time(start)
            ),
        );
        return None;
    }
    Some(DailyWindow { start, end })
}

/// `[policy.cmpp]`: `result` (reason → SUBMIT_RESP Result, 1–255: CMPP 2.0 carries one
/// byte) and `stat` (reason → a 7-character ASCII Stat); the defaults for the rest.
fn validate_policy_cmpp(c: RawPolicyCmpp, p: &mut Problems) -> ([u32; Reason::COUNT], [[u8; 7]; Reason::COUNT]) {
    let mut result = Reason::ALL.map(Reason::default_cmpp_result);
    let mut stat = Reason::ALL.map(Reason::default_cmpp_stat);
    let unknown = || format!("unknown reason; expected one of {}", Reason::labels().join(", "));
    for (name, r) in c.result.unwrap_or_default() {
        let key = format!("policy.cmpp.result.{name}");
        match Reason::from_label(&name) {
            None => p.push(key, unknown()),
            Some(_) if !(1..=255).contains(&r) => {
                p.push(key, format!("{r}: a Result is 1-255 (0 is success; CMPP 2.0 carries one byte)"))
            }
            Some(reason) if r == 8 && reason != Reason::Throttled => {
                p.push(key, "8 is flow control: SPs resend on it; use the vendor range 100-199 for a refusal")
            }
            Some(reason) => result[reason as usize] = r,
        }
    }
    for (name, s) in c.stat.unwrap_or_default() {
        let key = format!("policy.cmpp.stat.{name}");
        match Reason::from_label(&name) {
            None => p.push(key, unknown()),
            Some(reason) if s.len() == 7 && s.bytes().all(|b| b.is_ascii_graphic()) => {
                stat[reason as usize].copy_from_slice(s.as_bytes())
            }
            Some(_) => p.push(key, format!("`{s}`: a Stat is exactly 7 printable ASCII characters, e.g. \"CG:0101\"")),
        }
    }
    (result, stat)
}
