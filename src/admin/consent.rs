//! `GET /v1/consent/{msisdn}` (the decision and why) and `POST /v1/consent` (a statement).

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{error, AdminState};
use crate::consent::msisdn;
use crate::consent::statement::{EntityName, NewStatement, StatementKind, StatementSource};
use crate::consent::store::{DurableError, RecordError};
use crate::policy::{self, ConsentView, Verdict};
use crate::telemetry::metrics as m;

/// How long `POST /v1/consent` waits for the journal to make the statement durable.
const DURABLE_WAIT: Duration = Duration::from_secs(5);

#[derive(Deserialize)]
pub(super) struct LookupQuery {
    entity: Option<String>,
}

pub(super) async fn lookup(
    State(state): State<AdminState>,
    Path(number): Path<String>,
    Query(q): Query<LookupQuery>,
) -> Response {
    let engine = state.engine.load();
    let policy = engine.config();
    let n = match msisdn::normalise_text(&number, &policy.default_country_code) {
        Ok(n) => n,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_msisdn", format!("{number}: {e}")),
    };
    let store = &state.store;
    let guard = store.current();
    let loaded = guard.as_deref();
    let snap = loaded.map(|l| &l.snapshot);
    let snapshot_part = snap.map(|s| {
        let pairs: Vec<Value> =
            s.pairs_of(n).map(|(e, st)| json!({ "entity": s.entity_name(e), "state": st.as_str() })).collect();
        json!({ "id": s.info().id(), "dnc": s.is_dnc(n), "pairs": pairs })
    });
    // The API reports Unix seconds; the delta holds milliseconds.
    let mut live = json!({ "dnc_at": store.delta.dnc(n).map(|ms| ms.div_euclid(1000)) });
    let mut decision = Value::Null;
    if let Some(entity) = &q.entity {
        let live_entity = store.delta.lookup_entity(entity);
        if let Some((kind, at)) = live_entity.and_then(|e| store.delta.pair(n, e)) {
            live["pair"] = json!({ "entity": entity, "kind": kind.as_str(), "at": at.div_euclid(1000) });
        }
        let data = ConsentView {
            snapshot: snap,
            delta: &store.delta,
            live_entity,
            snap_entity: snap.and_then(|s| s.entity_id(entity)),
        };
        let standing = policy::standing(&data, n);
        let now = crate::time::Clock::system().now();
        let q = engine.quiet_hours_state(n, now);
        // Step 8's counts today, in the subscriber's local day (upper bounds: see
        // policy::frequency).
        let caps = &policy.frequency;
        let usage = engine
            .frequency()
            .map(|f| f.usage(n, Some(policy::frequency::entity_key(entity)), policy.zones.of(Some(n)).local(now).day));
        let capped = usage.is_some_and(|u| {
            (caps.per_entity_per_day > 0 && u.entity_today >= caps.per_entity_per_day)
                || (caps.per_subscriber_per_day > 0 && u.subscriber_today >= caps.per_subscriber_per_day)
        });
        let enforced = match engine.consent_verdict(standing) {
            Verdict::Accept if q.inside => Verdict::Reject(policy::Reason::QuietHours),
            Verdict::Accept if capped => Verdict::Reject(policy::Reason::FrequencyCap),
            v => v,
        };
        let verdict = enforced.under(policy.mode);
        decision = json!({
            "entity": entity,
            "standing": standing.map(|s| s.label()),
            "consent_proof": crate::complaints::proof_json(loaded, n, entity),
            "verdict": verdict.label(),
            "reason": verdict.reason().map(|r| r.label()),
            "command_status": match verdict { Verdict::Reject(r) => Some(format!("0x{:08x}", engine.status(r))), _ => None },
            "regime": policy.regime.as_str(),
            "mode": policy.mode.as_str(),
            "quiet_hours": {
                "zone": q.zone,
                "local_time": policy::DailyWindow::fmt_time(q.local_minute as u16),
                "window": q.window.map(|w| format!("{}-{}", policy::DailyWindow::fmt_time(w.start), policy::DailyWindow::fmt_time(w.end))),
                "inside": q.inside,
            },
            "frequency": usage.map(|u| json!({
                "entity_today": u.entity_today,
                "per_entity_per_day": (caps.per_entity_per_day > 0).then_some(caps.per_entity_per_day),
                "subscriber_today": u.subscriber_today,
                "per_subscriber_per_day": (caps.per_subscriber_per_day > 0).then_some(caps.per_subscriber_per_day),
            })),
            "note": "for a commercial message from this entity now; licence, sender id, class, the text (content rules, signature, opt-out hint, same-text window) and an account's own quiet hours and cap depend on the account and the message and are not part of this lookup",
        });
    }
    Json(json!({ "msisdn": n.to_string(), "snapshot": snapshot_part, "live": live, "decision": decision }))
        .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatementIn {
    msisdn: String,
    kind: String,
    entity: Option<String>,
    /// RFC 3339 time or date; default now.
    at: Option<String>,
}

pub(super) async fn post(State(state): State<AdminState>, body: axum::body::Bytes) -> Response {
    let input: StatementIn = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_json", e.to_string()),
    };
    let n = match msisdn::normalise_text(&input.msisdn, &state.engine.load().config().default_country_code) {
        Ok(n) => n,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_msisdn", format!("{}: {e}", input.msisdn)),
    };
    let kind: StatementKind = match input.kind.parse() {
        Ok(k) => k,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_kind", e.to_string()),
    };
    let entity = match (kind, input.entity) {
        (StatementKind::Dnc, Some(_)) => {
            return error(StatusCode::BAD_REQUEST, "invalid_entity", "a dnc statement names no entity")
        }
        (StatementKind::Dnc, None) => None,
        (_, Some(e)) => match EntityName::parse(&e) {
            Ok(e) => Some(e),
            Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_entity", e.to_string()),
        },
        (_, None) => return error(StatusCode::BAD_REQUEST, "missing_entity", "grant and revoke need an entity"),
    };
    let at = match input.at.as_deref() {
        None => crate::time::Clock::system().now().unix_ms,
        Some(t) => match crate::time::parse_timestamp_ms(t.as_bytes()) {
            Some(at) => at,
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_at",
                    format!("`{t}`: expected an RFC 3339 time or date"),
                )
            }
        },
    };
    let statement = NewStatement { kind, source: StatementSource::Api, msisdn: n, entity: entity.clone(), at };
    let recorded = state.store.record_durably(statement, DURABLE_WAIT).await;
    metrics::counter!(m::STATEMENTS_TOTAL, "source" => "api", "kind" => kind.as_str()).increment(1);
    if kind != StatementKind::Grant {
        metrics::counter!(m::OPTOUTS_TOTAL, "source" => "api").increment(1);
    }
    let journal_seq = match recorded {
        Ok(seq) => seq,
        Err(e) => return durable_error(e),
    };
    tracing::info!(
        kind = kind.as_str(),
        entity = entity.as_deref().unwrap_or(""),
        "consent statement recorded via admin API"
    );
    (
        StatusCode::CREATED,
        Json(json!({
            "recorded": true,
            "durable": journal_seq.is_some(),
            "journal_seq": journal_seq,
            "statement": { "msisdn": n.to_string(), "kind": kind.as_str(), "entity": entity, "at": at.div_euclid(1000) },
        })),
    )
        .into_response()
}

/// The answer when a statement could not be acknowledged as durable.
pub(super) fn durable_error(e: DurableError) -> Response {
    match e {
        DurableError::Record(e @ RecordError::Invalid(_)) => {
            error(StatusCode::BAD_REQUEST, "invalid_statement", e.to_string())
        }
        DurableError::Record(e @ RecordError::JournalUnavailable) => {
            error(StatusCode::SERVICE_UNAVAILABLE, "journal_unavailable", e.to_string())
        }
        e @ DurableError::NotDurable(_) => error(StatusCode::SERVICE_UNAVAILABLE, "journal_not_durable", e.to_string()),
    }
}
