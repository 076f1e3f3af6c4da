//! `[[account]]`: the sender platforms allowed to bind.

use std::collections::HashMap;

use serde::Deserialize;

use super::policy::{daily_cap, daily_window, RawFrequency, RawQuietHours};
use super::raw::*;
use super::*;
use crate::policy::dlt::Scrubbing;
use crate::smpp::BindType;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccount {
    pub system_id: Option<String>,
    pub entity: Option<String>,
    pub class: Option<String>,
    pub licence: Option<String>,
    pub licence_expires: Option<String>,
    pub sender_id: Option<Vec<String>>,
    pub source_class: Option<HashMap<String, String>>,
    pub service_type_class: Option<HashMap<String, String>>,
    pub max_tps: Option<i64>,
    pub bind_types: Option<Vec<String>>,
    pub max_sessions: Option<i64>,
    pub quiet_hours: Option<RawQuietHours>,
    pub signatures: Option<Vec<String>>,
    pub frequency: Option<RawFrequency>,
    pub scrubbing: Option<String>,
    /// A number, or a string of digits (ids up to 19 digits exceed a TOML integer).
    pub pe_id: Option<toml::Value>,
    /// This account's own opt-in keywords instead of `policy.opt_in_keywords`.
    pub opt_in_keywords: Option<Vec<String>>,
}

const SCRUBBING: &[(&str, Scrubbing)] = &[("none", Scrubbing::Default), ("dlt", Scrubbing::Dlt)];

/// `dlt`: whether `[dlt]` is configured (with a registry that loaded); an account with
/// `scrubbing = "dlt"` needs it.
pub(super) fn validate_accounts(raw: Vec<RawAccount>, dlt: bool, p: &mut Problems) -> Vec<Account> {
    let mut accounts: Vec<Account> = Vec::new();
    for (i, a) in raw.into_iter().enumerate() {
        // Named by system_id (`account[acme].max_tps`), by position when it has none.
        let name = a.system_id.clone().filter(|s| !s.is_empty()).unwrap_or_else(|| i.to_string());
        let key = |f: &str| format!("account[{name}].{f}");
        let Some(system_id) = a.system_id.filter(|s| !s.is_empty()) else {
            p.push(key("system_id"), "required");
            continue;
        };
        if system_id.len() > 15 || !system_id.is_ascii() {
            p.push(key("system_id"), "SMPP system_id is at most 15 ASCII characters");
        }
        let scrubbing = match a.scrubbing.as_deref() {
            None => Scrubbing::Default,
            Some(w) => p.choice(&key("scrubbing"), w, SCRUBBING).unwrap_or(Scrubbing::Default),
        };
        if scrubbing == Scrubbing::Dlt && !dlt {
            p.push(key("scrubbing"), "\"dlt\" needs [dlt] with a registry that loads (dlt.registry)");
        }
        let pe_id = a.pe_id.and_then(|v| {
            let id = match &v {
                toml::Value::Integer(n) => {
                    u64::try_from(*n).ok().and_then(|n| crate::policy::dlt::decimal(n.to_string().as_bytes()))
                }
                toml::Value::String(s) => crate::policy::dlt::decimal(s.as_bytes()),
                _ => None,
            };
            if id.is_none() {
                let shown = match &v {
                    toml::Value::Integer(n) => n.to_string(),
                    toml::Value::String(s) => format!("\"{s}\""),
                    _ => "this value".into(),
                };
                p.push(key("pe_id"), format!("{shown}: a DLT PE id is 1-19 digits without a leading 0"));
            }
            id
        });
        if pe_id.is_some() && scrubbing != Scrubbing::Dlt {
            p.push(key("pe_id"), "only for an account with scrubbing = \"dlt\"");
        }
        let class = match a.class.as_deref() {
            Some(w) => p.choice(&key("class"), w, CLASSES).unwrap_or(MessageClass::Marketing),
            // A DLT account's class is its template's category.
            None if scrubbing == Scrubbing::Dlt => MessageClass::Marketing,
            None => {
                p.push(key("class"), "required: marketing | transactional");
                MessageClass::Marketing
            }
        };
        let licence_expires = a.licence_expires.as_deref().and_then(|d| {
            parse_date(d).or_else(|| {
                p.push(key("licence_expires"), format!("`{d}` is not a date YYYY-MM-DD"));
                None
            })
        });
        // Not an error: the account stays configured and its binds are refused until renewed.
        if let Some(last) = licence_expires.filter(|&d| d < today()) {
            p.warn(
                key("licence_expires"),
                format!(
                    "the licence expired on {}: binds are refused (ESME_RBINDFAIL) until it is renewed",
                    crate::time::calendar::fmt_date(last)
                ),
            );
        }
        let bind_types = match a.bind_types {
            None => vec![BindType::Transmitter, BindType::Receiver, BindType::Transceiver],
            Some(v) => v.iter().filter_map(|t| p.choice(&key("bind_types"), t, BIND_TYPES)).collect(),
        };
        let mut limit = |field: &str, v: Option<i64>, max: i64| -> Option<u32> {
            let n = v?;
            if (1..=max).contains(&n) {
                return Some(n as u32);
            }
            p.push(key(field), format!("{n} is outside 1..={max}"));
            None
        };
        let max_tps = limit("max_tps", a.max_tps, 10_000_000);
        let max_sessions = limit("max_sessions", a.max_sessions, 1_000_000);
        let mut class_map = |field: &str, m: Option<HashMap<String, String>>| -> Vec<(String, MessageClass)> {
            let mut v: Vec<(String, MessageClass)> = m
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(pat, c)| p.choice(&key(&format!("{field}.{pat}")), &c, CLASSES).map(|c| (pat, c)))
                .collect();
            // Most specific (longest) pattern first, so the order in the file does not matter.
            v.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
            v
        };
        let source_class =
            class_map("source_class", a.source_class).into_iter().map(|(s, c)| (Pattern::new(&s), c)).collect();
        let service_type_class = class_map("service_type_class", a.service_type_class);
        let entity = a.entity.unwrap_or_else(|| system_id.clone());
        // The account's entity names the statements its MO opt-outs record: a bad one is
        // refused here, not by the journal at the first opt-out (it used to stop the writer).
        if let Err(e) = crate::consent::EntityName::parse(&entity) {
            p.push(key("entity"), e.to_string());
        }
        let quiet_hours = a.quiet_hours.and_then(|q| {
            if q.timezone.is_some() {
                p.push(
                    key("quiet_hours.timezone"),
                    "time zones are set once, in [policy.quiet_hours] and [policy.timezones]",
                );
            }
            daily_window(&key("quiet_hours"), q.start, q.end, p)
        });
        let signatures = a.signatures.unwrap_or_default();
        if signatures.iter().any(|s| s.trim().is_empty() || s.contains(['【', '】'])) {
            p.push(key("signatures"), "a signature is its text without the 【】 brackets, not empty");
        }
        let per_entity_per_day = a.frequency.map(|f| {
            if f.per_subscriber_per_day.is_some()
                || f.same_text_window.is_some()
                || f.subscribers.is_some()
                || f.peak_rate.is_some()
                || f.checkpoint_interval.is_some()
            {
                p.push(key("frequency"), "an account sets only per_entity_per_day; the rest is [policy.frequency]");
            }
            match f.per_entity_per_day {
                Some(0) => 0,
                v => daily_cap(&key("frequency.per_entity_per_day"), v, p),
            }
        });
        if accounts.iter().any(|x| x.system_id == system_id) {
            p.push(key("system_id"), format!("`{system_id}` is defined twice"));
            continue;
        }
        accounts.push(Account {
            system_id,
            entity,
            class,
            licence: a.licence.filter(|l| !l.is_empty()),
            licence_expires,
            sender_id: a.sender_id.unwrap_or_default().iter().map(|s| Pattern::new(s)).collect(),
            source_class,
            service_type_class,
            max_tps,
            bind_types,
            max_sessions,
            quiet_hours,
            signatures,
            per_entity_per_day,
            scrubbing,
            pe_id,
        });
    }
    accounts
}
