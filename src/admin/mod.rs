//! The admin HTTP listener (DESIGN §5): metrics, health, snapshot and consent administration.
//!
//! | endpoint | auth | what |
//! |---|---|---|
//! | `GET /metrics` | – | Prometheus text exposition |
//! | `GET /livez` | – | 200 while the process serves HTTP |
//! | `GET /readyz` | – | 200 when a snapshot is loaded (or the config allows running without one), the journal is writable, the upstream SMSC accepts a TCP connection and (with `[replication]`) the reader has caught up with the stream or, with `on_disconnect = "serve"`, Redis is unreachable; else 503, with the failing checks in the JSON body |
//! | `GET /v1/snapshot` | – | the serving snapshot: id, counts, build/load time, source digests, live statements |
//! | `POST /v1/snapshot/reload` | bearer | reload the configured file now; 200 with the new snapshot, or 422 with the exact validation error (the old one keeps serving) |
//! | `GET /v1/consent/{msisdn}?entity=E` | – | statements held for the subscriber (snapshot and live) and the decision for a commercial message from `E` |
//! | `POST /v1/consent` | bearer | record a grant / revoke / dnc statement; answered once it is durable in the journal |
//! | `PUT /v1/log-level` | bearer | replace the log filter (`{"filter": "consentgate=debug,info"}`) |
//! | `POST /v1/complaints` | bearer | file a complaint (DESIGN §7, [`crate::complaints`]): 201 with id, due date, actions and evidence; 200 for a reference filed before; 422 `complaint_incomplete` naming every missing field or `complaint_invalid` naming the field |
//! | `GET /v1/complaints?status=open\|overdue\|closed&entity=E&limit=N` | – | complaints, newest first (open includes overdue) |
//! | `GET /v1/complaints/{id}` | – | one complaint with its evidence |
//! | `POST /v1/complaints/{id}/resolution` | bearer | close it: `{"outcome": "upheld" \| "not_upheld" \| "withdrawn", "note": "…"}`; 409 if closed |
//! | `DELETE /v1/entities/{entity}/suspension` | bearer | lift a complaint suspension (404 `not_suspended`; 400 `invalid_entity` for a name no entity can have) |
//! | `GET /v1/suspensions` | – | entities suspended now |
//!
//! Errors are JSON `{"error": "<stable code>", "message": "<human text>"}`. The token comes
//! from `[admin]` (a file or an environment variable) and is never logged; without one the
//! mutating endpoints answer 403 `admin_token_not_configured`. Reloads go through the
//! gateway's one control channel (STYLE §9), like SIGHUP and the file watch.

mod config;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

pub use config::{AdminConfig, Secret, DEFAULT_ADMIN_TOKEN_ENV};

use crate::capture::Capture;
use crate::complaints::{self, ComplaintIn, Complaints, FileError, Resolved, StatusFilter};
use crate::consent::msisdn;
use crate::consent::snapshot::SnapshotError;
use crate::consent::statement::{EntityName, NewStatement, StatementKind, StatementSource};
use crate::consent::store::{ConsentStore, DurableError, Loaded, RecordError};
use crate::policy::{self, ConsentView, Engine, Verdict};
use crate::relay::UpstreamConfig;
use crate::telemetry::metrics as m;

/// How long `POST /v1/consent` waits for the journal to make the statement durable.
const DURABLE_WAIT: Duration = Duration::from_secs(5);
/// How long a reload may take before `POST /v1/snapshot/reload` gives up waiting (the reload
/// itself still completes).
const RELOAD_WAIT: Duration = Duration::from_secs(120);

/// Why a snapshot reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file could not be read, or failed validation (the old snapshot keeps serving).
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The reload task died (a bug or a shutdown).
    #[error("reload task failed: {0}")]
    Aborted(String),
}

/// How the admin API asks the gateway for a reload and gets the answer.
pub type ReloadReply = oneshot::Sender<Result<Arc<Loaded>, ReloadError>>;

/// The admin API's narrow handle on the running gateway: what its endpoints read, and a
/// channel to ask for a reload (the gateway's control loop serves it, STYLE §9).
#[derive(Clone)]
pub struct AdminState {
    pub store: Arc<ConsentStore>,
    pub engine: Arc<Engine>,
    pub admin: AdminConfig,
    /// `consent.snapshot`, if configured.
    pub snapshot_configured: Option<PathBuf>,
    pub upstream: UpstreamConfig,
    pub capture: Option<Arc<Capture>>,
    /// The complaint register (`[complaints]`), if configured.
    pub complaints: Option<Arc<Complaints>>,
    /// Replication's state (`[replication]`), if configured: part of `/readyz`.
    pub replication: Option<Arc<crate::replication::Status>>,
    pub reload: mpsc::Sender<ReloadReply>,
    pub prometheus: metrics_exporter_prometheus::PrometheusHandle,
}

/// Serves the admin API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/v1/snapshot", get(snapshot))
        .route("/v1/snapshot/reload", post(reload))
        .route("/v1/consent/{msisdn}", get(consent_lookup))
        .route("/v1/consent", post(consent_post))
        .route("/v1/log-level", put(log_level).get(log_level_get))
        .route("/v1/complaints", post(complaint_post).get(complaint_list))
        .route("/v1/complaints/{id}", get(complaint_show))
        .route("/v1/complaints/{id}/resolution", post(complaint_resolve))
        .route("/v1/entities/{entity}/suspension", delete(suspension_lift))
        .route("/v1/suspensions", get(suspension_list))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .with_state(state)
}

fn error(code: StatusCode, error: &str, message: impl Into<String>) -> Response {
    (code, Json(json!({ "error": error, "message": message.into() }))).into_response()
}

/// Checks `Authorization: Bearer <token>` against the configured token.
#[allow(clippy::result_large_err)]
fn authorise(state: &AdminState, headers: &HeaderMap) -> Result<(), Response> {
    let Some(token) = &state.admin.token else {
        return Err(error(
            StatusCode::FORBIDDEN,
            "admin_token_not_configured",
            format!("mutating endpoints are disabled: no admin token configured ({})", state.admin.token_source),
        ));
    };
    let given =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(t) if token.matches(t.trim()) => Ok(()),
        Some(_) => Err(error(StatusCode::UNAUTHORIZED, "invalid_token", "the bearer token does not match")),
        None => Err(error(StatusCode::UNAUTHORIZED, "unauthorized", "Authorization: Bearer <token> required")),
    }
}

fn unix_of(t: SystemTime) -> f64 {
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

async fn metrics(State(state): State<AdminState>) -> Response {
    refresh_gauges(&state);
    if let Some(c) = state.complaints.clone() {
        let _ = tokio::task::spawn_blocking(move || c.refresh_gauges()).await;
    }
    let body = state.prometheus.render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

async fn readyz(State(state): State<AdminState>) -> Response {
    let loaded = state.store.current().is_some();
    let snapshot_ok = loaded
        || state.snapshot_configured.is_none()
        || state.engine.config().on_snapshot_unavailable == policy::Unavailable::Allow;
    let upstream = crate::relay::upstream::probe(&state.upstream).await;
    metrics::gauge!(m::UPSTREAM_REACHABLE).set(if upstream.is_ok() { 1.0 } else { 0.0 });
    let journal = state.store.journal_health();
    let (replication_ok, replication) = match &state.replication {
        Some(r) => r.readiness(),
        None => (true, Value::Null),
    };
    let ready = snapshot_ok && upstream.is_ok() && journal.is_ok() && replication_ok;
    let journal_error = match &journal {
        crate::consent::store::JournalHealth::Failing { last_error, .. } => Some(last_error.clone()),
        _ => None,
    };
    let body = json!({
        "ready": ready,
        "snapshot": { "ok": snapshot_ok, "loaded": loaded },
        "journal": { "ok": journal.is_ok(), "state": journal.as_str(), "error": journal_error },
        "upstream": { "ok": upstream.is_ok(), "address": state.upstream.address, "error": upstream.err().map(|e| e.to_string()) },
        "replication": replication,
    });
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(body)).into_response()
}

fn hex(d: Option<[u8; 32]>) -> Value {
    d.map(|d| Value::String(d.iter().map(|b| format!("{b:02x}")).collect())).unwrap_or(Value::Null)
}

/// The JSON description of a loaded snapshot.
pub fn snapshot_json(l: &Loaded) -> Value {
    let i = l.snapshot.info();
    json!({
        "id": i.id(),
        "generation": l.generation,
        "path": l.path.display().to_string(),
        "format_version": i.format_version,
        "built_at": i.built_at,
        "loaded_at": unix_of(l.loaded_at) as i64,
        "load_ms": i.load_duration.as_secs_f64() * 1000.0,
        "counts": { "dnc": i.dnc_count, "pairs": i.pair_count, "entities": i.entity_count },
        "watermarks": i.watermarks.iter().map(|(n, s)| (n.to_string(), s)).collect::<std::collections::BTreeMap<_, _>>(),
        "sources": { "dnc_sha256": hex(i.dnc_sha256), "consent_sha256": hex(i.consent_sha256) },
        "file_bytes": i.file_bytes,
        "bytes_per_record": i.bytes_per_record,
    })
}

async fn snapshot(State(state): State<AdminState>) -> Response {
    let store = &state.store;
    let live =
        json!({ "statements": store.delta.len(), "dnc": store.delta.dnc_len(), "pairs": store.delta.pair_len() });
    match store.current().as_deref() {
        Some(l) => Json(json!({ "loaded": true, "snapshot": snapshot_json(l), "live": live })).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({
                "error": "no_snapshot",
                "message": "no consent snapshot is loaded",
                "configured": state.snapshot_configured.as_ref().map(|p| p.display().to_string()),
                "live": live,
            })),
        )
            .into_response(),
    }
}

async fn reload(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    if let Err(r) = authorise(&state, &headers) {
        return r;
    }
    if state.snapshot_configured.is_none() {
        return error(StatusCode::CONFLICT, "no_snapshot_configured", "consent.snapshot is not set in the config");
    }
    let (tx, rx) = oneshot::channel();
    if state.reload.send(tx).await.is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "the gateway is shutting down");
    }
    match tokio::time::timeout(RELOAD_WAIT, rx).await {
        Ok(Ok(Ok(l))) => Json(json!({ "reloaded": true, "snapshot": snapshot_json(&l) })).into_response(),
        // A file that is not there or cannot be read is not an invalid snapshot.
        Ok(Ok(Err(ReloadError::Snapshot(SnapshotError::Io { path, source }))))
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            error(StatusCode::NOT_FOUND, "snapshot_not_found", format!("{path}: {source}"))
        }
        Ok(Ok(Err(ReloadError::Snapshot(e @ SnapshotError::Io { .. })))) => {
            error(StatusCode::INTERNAL_SERVER_ERROR, "snapshot_io_error", e.to_string())
        }
        Ok(Ok(Err(ReloadError::Snapshot(e)))) => {
            error(StatusCode::UNPROCESSABLE_ENTITY, "snapshot_invalid", e.to_string())
        }
        Ok(Ok(Err(e @ ReloadError::Aborted(_)))) => {
            error(StatusCode::INTERNAL_SERVER_ERROR, "reload_failed", e.to_string())
        }
        Ok(Err(_)) => error(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "the gateway is shutting down"),
        Err(_) => error(StatusCode::GATEWAY_TIMEOUT, "reload_timeout", "the reload is still running"),
    }
}

#[derive(Deserialize)]
struct LookupQuery {
    entity: Option<String>,
}

async fn consent_lookup(
    State(state): State<AdminState>,
    Path(number): Path<String>,
    Query(q): Query<LookupQuery>,
) -> Response {
    let engine = &state.engine;
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
        let usage = engine.frequency().map(|f| f.usage(n, live_entity, policy.zones.of(Some(n)).local(now).day));
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
            "consent_proof": complaints::proof_json(loaded, n, entity),
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

async fn consent_post(State(state): State<AdminState>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if let Err(r) = authorise(&state, &headers) {
        return r;
    }
    let input: StatementIn = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_json", e.to_string()),
    };
    let n = match msisdn::normalise_text(&input.msisdn, &state.engine.config().default_country_code) {
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
fn durable_error(e: DurableError) -> Response {
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogLevelIn {
    filter: String,
}

async fn log_level(State(state): State<AdminState>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if let Err(r) = authorise(&state, &headers) {
        return r;
    }
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

async fn log_level_get() -> Response {
    Json(json!({ "filter": crate::telemetry::log_filter() })).into_response()
}

// ----- complaints (DESIGN §7) ----------------------------------------------------------------

#[allow(clippy::result_large_err)]
fn complaints_of(state: &AdminState) -> Result<&Arc<Complaints>, Response> {
    state.complaints.as_ref().ok_or_else(|| {
        error(StatusCode::CONFLICT, "complaints_not_configured", "no [complaints] section in the config")
    })
}

fn register_error(e: complaints::RegisterError) -> Response {
    tracing::error!(error = %e, "complaint register");
    metrics::counter!(m::ERRORS_TOTAL, "stage" => "admin", "kind" => "complaint_register").increment(1);
    error(StatusCode::INTERNAL_SERVER_ERROR, "register_failed", e.to_string())
}

async fn complaint_post(State(state): State<AdminState>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if let Err(r) = authorise(&state, &headers) {
        return r;
    }
    let c = match complaints_of(&state) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let input: ComplaintIn = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_json", e.to_string()),
    };
    match c.file(input).await {
        Ok(f) => {
            let code = if f.created { StatusCode::CREATED } else { StatusCode::OK };
            let mut body = complaints::row_json(&f.row, c.now_ms());
            body["created"] = json!(f.created);
            body["actions"] = json!(f.actions);
            (code, Json(body)).into_response()
        }
        Err(FileError::Incomplete(missing)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({
                "error": "complaint_incomplete",
                "message": format!("missing: {}", missing.join(", ")),
                "missing": missing,
            })),
        )
            .into_response(),
        Err(FileError::Invalid { field, message }) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "error": "complaint_invalid", "field": field, "message": message })),
        )
            .into_response(),
        Err(FileError::Journal(e)) => durable_error(e),
        Err(FileError::Register(e)) => register_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    entity: Option<String>,
    limit: Option<u32>,
}

async fn complaint_list(State(state): State<AdminState>, Query(q): Query<ListQuery>) -> Response {
    let c = match complaints_of(&state) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let status = match q.status.as_deref().map(StatusFilter::parse) {
        None => StatusFilter::All,
        Some(Some(s)) => s,
        Some(None) => {
            return error(StatusCode::BAD_REQUEST, "invalid_status", "status: expected open | overdue | closed | all")
        }
    };
    let (now, limit, entity) = (c.now_ms(), q.limit.unwrap_or(100).clamp(1, 1000), q.entity);
    match c.blocking(move |r| r.list(status, entity.as_deref(), now, limit)).await {
        Ok(rows) => {
            let list: Vec<Value> = rows.iter().map(|r| complaints::row_json(r, now)).collect();
            Json(json!({ "count": list.len(), "complaints": list })).into_response()
        }
        Err(e) => register_error(e),
    }
}

async fn complaint_show(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    let c = match complaints_of(&state) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Ok(id) = id.parse::<i64>() else {
        return error(StatusCode::BAD_REQUEST, "invalid_id", format!("`{id}`: expected a complaint id"));
    };
    match c.blocking(move |r| r.get(id)).await {
        Ok(Some(row)) => Json(complaints::row_json(&row, c.now_ms())).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "complaint_not_found", format!("no complaint {id}")),
        Err(e) => register_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolutionIn {
    outcome: String,
    note: Option<String>,
}

async fn complaint_resolve(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = authorise(&state, &headers) {
        return r;
    }
    let c = match complaints_of(&state) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Ok(id) = id.parse::<i64>() else {
        return error(StatusCode::BAD_REQUEST, "invalid_id", format!("`{id}`: expected a complaint id"));
    };
    let input: ResolutionIn = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_json", e.to_string()),
    };
    if !complaints::OUTCOMES.contains(&input.outcome.as_str()) {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_outcome",
            format!("outcome `{}`: expected {}", input.outcome, complaints::OUTCOMES.join(" | ")),
        );
    }
    let now = c.now_ms();
    match c.blocking(move |r| r.resolve(id, &input.outcome, input.note.as_deref(), now)).await {
        Ok(Resolved::Closed(row)) => {
            tracing::info!(id, outcome = row.outcome.as_deref().unwrap_or(""), "complaint resolved");
            Json(complaints::row_json(&row, now)).into_response()
        }
        Ok(Resolved::NotFound) => error(StatusCode::NOT_FOUND, "complaint_not_found", format!("no complaint {id}")),
        Ok(Resolved::AlreadyClosed(row)) => (
            StatusCode::CONFLICT,
            Json(json!({ "error": "already_closed", "message": format!("complaint {id} is closed"), "complaint": complaints::row_json(&row, now) })),
        )
            .into_response(),
        Err(e) => register_error(e),
    }
}

async fn suspension_lift(State(state): State<AdminState>, headers: HeaderMap, Path(entity): Path<String>) -> Response {
    if let Err(r) = authorise(&state, &headers) {
        return r;
    }
    let c = match complaints_of(&state) {
        Ok(c) => c,
        Err(r) => return r,
    };
    match c.lift(&entity).await {
        Ok(Some(s)) => Json(json!({
            "lifted": true,
            "entity": s.entity,
            "since": crate::audit::format_time_us(s.since * 1000),
            "complaints": s.complaints,
        }))
        .into_response(),
        // Lifting only removes what the register holds (a suspension filed under the looser
        // entity rule of an earlier version can still be lifted); a name no entity can have
        // is told apart from one that is merely not suspended.
        Ok(None) => match EntityName::parse(&entity) {
            Err(e) => error(StatusCode::BAD_REQUEST, "invalid_entity", format!("`{entity}`: {e}")),
            Ok(_) => error(StatusCode::NOT_FOUND, "not_suspended", format!("entity `{entity}` is not suspended")),
        },
        Err(e) => register_error(e),
    }
}

async fn suspension_list(State(state): State<AdminState>) -> Response {
    let c = match complaints_of(&state) {
        Ok(c) => c,
        Err(r) => return r,
    };
    match c.blocking(|r| r.suspensions()).await {
        Ok(list) => {
            let list: Vec<Value> = list
                .iter()
                .map(|s| json!({ "entity": s.entity, "since": crate::audit::format_time_us(s.since * 1000), "complaints": s.complaints }))
                .collect();
            Json(json!({ "suspended": list })).into_response()
        }
        Err(e) => register_error(e),
    }
}

/// A minimal HTTP/1.1 client for the admin API (one request per connection): the demo and
/// the tests use it, so no HTTP client crate is needed. Returns (status code, body).
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || method != "GET" {
        req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut raw))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no complete HTTP response within 30 s"))??;
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP response"))?;
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(rest) } else { rest.to_owned() };
    Ok((code, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}
