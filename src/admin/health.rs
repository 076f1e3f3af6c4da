//! `GET /metrics`, `/livez`, `/readyz` and the log level: what an SRE's tooling reads.

use std::time::SystemTime;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{error, AdminState};
use crate::policy;
use crate::telemetry::metrics as m;

pub(super) fn unix_of(t: SystemTime) -> f64 {
    crate::time::unix_s_of(t) as f64
}

/// Gauges read from state at scrape time (always current; nothing to keep in sync).
fn refresh_gauges(state: &AdminState) {
    let store = &state.store;
    let cur = store.current();
    let (dnc, pairs, loaded, built) = match cur.as_deref() {
        Some(l) => {
            let i = l.snapshot.info();
            (i.dnc_count as f64, i.pair_count as f64, unix_of(l.loaded_at), i.built_at as f64)
        }
        None => (0.0, 0.0, 0.0, 0.0),
    };
    metrics::gauge!(m::SNAPSHOT_RECORDS, "kind" => "dnc").set(dnc);
    metrics::gauge!(m::SNAPSHOT_RECORDS, "kind" => "pair").set(pairs);
    metrics::gauge!(m::SNAPSHOT_LOADED_TIMESTAMP).set(loaded);
    metrics::gauge!(m::SNAPSHOT_BUILT_TIMESTAMP).set(built);
    metrics::gauge!(m::DELTA_STATEMENTS).set(store.delta.len() as f64);
    if let Some(c) = &state.capture {
        use std::sync::atomic::Ordering::Relaxed;
        let s = c.stats();
        metrics::counter!(m::CAPTURE_RECORDS_TOTAL, "result" => "written").absolute(s.records_written.load(Relaxed));
        metrics::counter!(m::CAPTURE_RECORDS_TOTAL, "result" => "dropped").absolute(s.records_dropped.load(Relaxed));
    }
}

pub(super) async fn metrics(State(state): State<AdminState>) -> Response {
    refresh_gauges(&state);
    if let Some(c) = state.complaints.clone() {
        let _ = tokio::task::spawn_blocking(move || c.refresh_gauges()).await;
    }
    let mut body = state.prometheus.render();
    crate::telemetry::process::render(&mut body);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

pub(super) async fn readyz(State(state): State<AdminState>) -> Response {
    let loaded = state.store.current().is_some();
    let snapshot_ok = loaded
        || state.snapshot_configured.is_none()
        || state.engine.load().config().on_snapshot_unavailable == policy::Unavailable::Allow;
    let upstream_cfg = state.upstream.load_full();
    let upstream = crate::relay::upstream::probe(&upstream_cfg).await;
    metrics::gauge!(m::UPSTREAM_REACHABLE).set(if upstream.is_ok() { 1.0 } else { 0.0 });
    let journal = state.store.journal_health();
    let (replication_ok, replication) = match &state.replication {
        Some(r) => r.readiness(),
        None => (true, Value::Null),
    };
    let draining = state.ops.draining();
    let ready = snapshot_ok && upstream.is_ok() && journal.is_ok() && replication_ok && !draining;
    let journal_error = match &journal {
        crate::consent::store::JournalHealth::Failing { last_error, .. } => Some(last_error.clone()),
        _ => None,
    };
    let body = json!({
        "ready": ready,
        "snapshot": { "ok": snapshot_ok, "loaded": loaded },
        "journal": { "ok": journal.is_ok(), "state": journal.as_str(), "error": journal_error },
        "upstream": { "ok": upstream.is_ok(), "address": upstream_cfg.address, "error": upstream.err().map(|e| e.to_string()) },
        "replication": replication,
        "draining": draining,
    });
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(body)).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogLevelIn {
    filter: String,
}

pub(super) async fn log_level(State(_state): State<AdminState>, body: axum::body::Bytes) -> Response {
    let input: LogLevelIn = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_json", e.to_string()),
    };
    match crate::telemetry::set_log_filter(&input.filter) {
        Ok(()) => {
            tracing::info!(filter = %input.filter, "log filter changed via admin API");
            Json(json!({ "filter": input.filter })).into_response()
        }
        Err(e) => error(StatusCode::BAD_REQUEST, "invalid_filter", e.to_string()),
    }
}

pub(super) async fn log_level_get() -> Response {
    Json(json!({ "filter": crate::telemetry::log_filter() })).into_response()
}
