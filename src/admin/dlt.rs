//! `GET /v1/dlt/lookup`: what the DLT steps ([`crate::policy::dlt`]) decide for a message, on
//! the running gateway's registry, consent data and clock, step by step.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::{error, AdminState};
use crate::consent::msisdn;
use crate::policy::dlt::{self as steps, Probe};
use crate::policy::{ConsentView, DailyWindow, Verdict};

/// Unknown parameters are ignored, as for `/v1/consent/{msisdn}`.
#[derive(Deserialize)]
pub(super) struct LookupQuery {
    /// The PE id (TLV `dlt.pe_id_tlv`); without it, `account`'s `pe_id`.
    pe_id: Option<String>,
    /// An account (`system_id`): its `pe_id` when `pe_id` is absent.
    account: Option<String>,
    header: Option<String>,
    template_id: Option<String>,
    /// TM ids, comma-separated (TLV `dlt.chain_tlv`).
    chain: Option<String>,
    msisdn: Option<String>,
    text: Option<String>,
    /// RFC 3339; default now.
    at: Option<String>,
}

pub(super) async fn lookup(State(state): State<AdminState>, Query(q): Query<LookupQuery>) -> Response {
    let engine = state.engine.load();
    let policy = engine.config();
    let Some(cfg) = &policy.dlt else {
        return error(StatusCode::NOT_FOUND, "dlt_not_configured", "no [dlt] registry in the running config");
    };
    let bad = |field: &str, m: String| error(StatusCode::BAD_REQUEST, &format!("invalid_{field}"), m);
    let (Some(header), Some(text)) = (q.header.as_deref(), q.text.as_deref()) else {
        return error(StatusCode::BAD_REQUEST, "missing_field", "header and text are required");
    };
    let account_pe = match q.account.as_deref() {
        None => None,
        Some(a) => match engine.lookup(a) {
            Some(idx) => engine.account(idx).pe_id,
            None => return bad("account", format!("{a:?}: no [[account]] has this system_id")),
        },
    };
    let pe = match q.pe_id.as_deref() {
        None => account_pe,
        Some(v) => match steps::decimal(v.as_bytes()) {
            Some(pe) => Some(pe),
            None => return bad("pe_id", format!("{v:?}: 1–19 decimal digits")),
        },
    };
    let template_id = match q.template_id.as_deref() {
        None => None,
        Some(v) => match steps::decimal(v.as_bytes()) {
            Some(t) => Some(t),
            None => return bad("template_id", format!("{v:?}: 1–19 decimal digits")),
        },
    };
    let msisdn = match q.msisdn.as_deref() {
        None => None,
        Some(n) => match msisdn::normalise_text(n, &policy.default_country_code) {
            Ok(n) => Some(n),
            Err(e) => return bad("msisdn", format!("{n}: {e}")),
        },
    };
    let now = match q.at.as_deref() {
        None => crate::time::Clock::system().now(),
        Some(t) => match crate::time::parse_timestamp_ms(t.as_bytes()) {
            Some(ms) => crate::time::Now::at(ms),
            None => return bad("at", format!("`{t}`: expected an RFC 3339 time")),
        },
    };
    let store = &state.store;
    let guard = store.current();
    let data = ConsentView {
        snapshot: guard.as_deref().map(|l| &l.snapshot),
        delta: &store.delta,
        live_entity: None,
        snap_entity: None,
    };
    let probe = Probe { pe, header, template_id, chain: q.chain.as_deref(), text, msisdn };
    let x = steps::explain(cfg, &probe, &data, now);
    let enforced = match x.outcome {
        Ok(_) => Verdict::Accept,
        Err(r) => Verdict::Reject(r),
    };
    let verdict = enforced.under(policy.mode);
    let local = cfg.zone.local(now);
    Json(json!({
        "pe_id": (x.ids.pe != 0).then(|| x.ids.pe.to_string()),
        "template_id": (x.ids.template != 0).then(|| x.ids.template.to_string()),
        "msisdn": msisdn.map(|n| n.to_string()),
        "steps": x.steps.iter().map(|s| json!({ "step": s.step, "ok": s.ok, "detail": s.detail })).collect::<Vec<_>>(),
        "category": x.outcome.ok().map(|p| p.category.as_str()),
        "verdict": verdict.label(),
        "reason": verdict.reason().map(|r| r.label()),
        "command_status": match enforced { Verdict::Reject(r) => Some(format!("0x{:08x}", engine.status(r))), _ => None },
        "cmpp_result": match enforced { Verdict::Reject(r) => Some(policy.cmpp_result[r as usize]), _ => None },
        "mode": policy.mode.as_str(),
        "local_time": format!("{} {}", DailyWindow::fmt_time(local.minute_of_day as u16), cfg.zone.name()),
        "registry": cfg.path.display().to_string(),
        "note": "the DLT steps for this message now (or at `at`); the account's licence, bind, TPS and frequency caps are not part of this lookup",
    }))
    .into_response()
}
