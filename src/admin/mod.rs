//! The admin HTTP listener (architecture §5): metrics, health, snapshot and consent administration.
//!
//! | endpoint | auth | what |
//! |---|---|---|
//! | `GET /metrics` | – | Prometheus text exposition |
//! | `GET /livez` | – | 200 while the process serves HTTP |
//! | `GET /readyz` | – | 503 while draining; else 200 when a snapshot is loaded (or the config allows running without one), the journal is writable, the upstream SMSC accepts a TCP connection and (with `[replication]`) the reader has caught up with the stream or, with `on_disconnect = "serve"`, Redis is unreachable; else 503, with the failing checks in the JSON body |
//! | `GET /v1/snapshot` | – | the serving snapshot: id, counts, build/load time, source digests, live statements |
//! | `POST /v1/snapshot/reload` | bearer | reload the configured file now; 200 with the new snapshot, or 422 with the exact validation error (the old one keeps serving) |
//! | `GET /v1/consent/{msisdn}?entity=E` | – | statements held for the subscriber (snapshot and live) and the decision for a commercial message from `E` |
//! | `POST /v1/consent` | bearer | record a grant / revoke / dnc statement; answered once it is durable in the journal |
//! | `GET /v1/dlt/lookup?header=H&text=T&pe_id=P\|account=A&template_id=&chain=&msisdn=&at=` | – | India DLT: each DLT step's verdict for that message on the running registry, consent data and clock (404 `dlt_not_configured` without `[dlt]`) |
//! | `GET /v1/config` | – | the running config: SHA-256, files, every key (secrets masked) |
//! | `POST /v1/config/reload` | bearer | re-read and validate the whole config; if valid, put it in force: 200 with what changed, what applied and what needs a restart; else 422 `config_invalid` with every problem (nothing changes) |
//! | `GET /v1/drain` | – | `{"draining": bool, "sessions": n}` |
//! | `POST /v1/drain` | bearer | stop taking binds and unbind every session (in-flight answered), process and admin API stay up, `/readyz` 503; `{"cancel": true}` takes binds again. 202 while draining, 200 after a cancel |
//! | `PUT /v1/log-level` | bearer | replace the log filter (`{"filter": "consentgate=debug,info"}`) |
//! | `POST /v1/complaints` | bearer | file a complaint (architecture §7, [`crate::complaints`]): 201 with id, due date, actions and evidence; 200 for a reference filed before; 422 `complaint_incomplete` naming every missing field or `complaint_invalid` naming the field |
//! | `GET /v1/complaints?status=open\|overdue\|closed&entity=E&limit=N` | – | complaints, newest first (open includes overdue) |
//! | `GET /v1/complaints/{id}` | – | one complaint with its evidence |
//! | `POST /v1/complaints/{id}/resolution` | bearer | close it: `{"outcome": "upheld" \| "not_upheld" \| "withdrawn", "note": "…"}`; 409 if closed |
//! | `DELETE /v1/entities/{entity}/suspension` | bearer | lift a complaint suspension (404 `not_suspended`; 400 `invalid_entity` for a name no entity can have) |
//! | `GET /v1/suspensions` | – | entities suspended now |
//!
//! One file per resource: `health` (metrics, probes, log level), `snapshot`, `consent`, `dlt`,
//! `complaints`, `ops` (config, drain); `client` is the small HTTP client the CLI, the demo
//! and the tests use. Every mutating endpoint is wrapped by [`guarded`] (the token check as
//! a route layer).
//!
//! Errors are JSON `{"error": "<stable code>", "message": "<human text>"}`. The token comes
//! from `[admin]` (a file or an environment variable) and is never logged; without one the
//! mutating endpoints answer 403 `admin_token_not_configured`. Reloads go through the
//! gateway's one control channel (STYLE §9), like SIGHUP and the file watch.

mod client;
mod complaints;
mod config;
mod consent;
mod dlt;
mod health;
pub mod listener;
mod ops;
mod snapshot;

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Request as HttpRequest, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put, MethodRouter};
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

pub use client::request;
pub use config::{
    AdminConfig, Secret, DEFAULT_ADMIN_HEADER_TIMEOUT, DEFAULT_ADMIN_IDLE_TIMEOUT, DEFAULT_ADMIN_MAX_CONNECTIONS,
    DEFAULT_ADMIN_TOKEN_ENV,
};
pub use ops::{ConfigReloadError, ConfigReply, ConfigReport, DrainStatus, Ops, Request};
pub use snapshot::{snapshot_json, ReloadError, ReloadReply};

use crate::capture::Capture;
use crate::complaints::Complaints;
use crate::consent::store::ConsentStore;
use crate::policy::EngineCell;
use crate::relay::UpstreamConfig;

/// The admin API's narrow handle on the running gateway: what its endpoints read, and a
/// channel to ask for a reload (the gateway's control loop serves it, STYLE §9).
#[derive(Clone)]
pub struct AdminState {
    pub store: Arc<ConsentStore>,
    /// The engine in force (swapped by config reloads).
    pub engine: Arc<EngineCell>,
    pub admin: AdminConfig,
    /// `consent.snapshot`, if configured.
    pub snapshot_configured: Option<PathBuf>,
    /// The upstream SMSC in force (`/readyz` probes it; a config reload replaces it).
    pub upstream: Arc<arc_swap::ArcSwap<UpstreamConfig>>,
    pub capture: Option<Arc<Capture>>,
    /// The complaint register (`[complaints]`), if configured.
    pub complaints: Option<Arc<Complaints>>,
    /// Replication's state (`[replication]`), if configured: part of `/readyz`.
    pub replication: Option<Arc<crate::replication::Status>>,
    pub reload: mpsc::Sender<ReloadReply>,
    /// Config reload, drain, and the running config.
    pub ops: Ops,
    pub prometheus: metrics_exporter_prometheus::PrometheusHandle,
}

/// Serves the admin API on `listener` until `shutdown` resolves, under the connection
/// limits of `[admin]` (see [`listener`]): requests in flight then finish, idle
/// connections close.
pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = listener::Limits {
        max_connections: state.admin.max_connections,
        header_timeout: state.admin.header_timeout,
        idle_timeout: state.admin.idle_timeout,
    };
    listener::serve(listener, router(state), limits, shutdown).await
}

/// The endpoints. Every mutating one goes through [`guarded`], which puts the bearer-token
/// check in front of it as a route layer: a new handler cannot forget it.
pub fn router(state: AdminState) -> Router {
    let auth = |m: MethodRouter<AdminState>| guarded(&state, m);
    Router::new()
        .route("/metrics", get(health::metrics))
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(health::readyz))
        .route("/v1/snapshot", get(snapshot::snapshot))
        .route("/v1/snapshot/reload", auth(post(snapshot::reload)))
        .route("/v1/config", get(ops::config_get))
        .route("/v1/config/reload", auth(post(ops::config_reload)))
        .route("/v1/drain", get(ops::drain_get).merge(auth(post(ops::drain_post))))
        .route("/v1/consent/{msisdn}", get(consent::lookup))
        .route("/v1/consent", auth(post(consent::post)))
        .route("/v1/dlt/lookup", get(dlt::lookup))
        .route("/v1/log-level", get(health::log_level_get).merge(auth(put(health::log_level))))
        .route("/v1/complaints", get(complaints::list).merge(auth(post(complaints::post))))
        .route("/v1/complaints/{id}", get(complaints::show))
        .route("/v1/complaints/{id}/resolution", auth(post(complaints::resolve)))
        .route("/v1/entities/{entity}/suspension", auth(delete(complaints::suspension_lift)))
        .route("/v1/suspensions", get(complaints::suspension_list))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .with_state(state)
}

/// `m` behind the bearer-token check ([`require_token`]).
fn guarded(state: &AdminState, m: MethodRouter<AdminState>) -> MethodRouter<AdminState> {
    m.route_layer(middleware::from_fn_with_state(state.clone(), require_token))
}

/// The route layer of the mutating endpoints: `Authorization: Bearer <token>` must match the
/// configured token; without one configured they answer 403.
async fn require_token(State(state): State<AdminState>, req: HttpRequest, next: Next) -> Response {
    let Some(token) = &state.admin.token else {
        return error(
            StatusCode::FORBIDDEN,
            "admin_token_not_configured",
            format!("mutating endpoints are disabled: no admin token configured ({})", state.admin.token_source),
        );
    };
    let given =
        req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(t) if token.matches(t.trim()) => next.run(req).await,
        Some(_) => error(StatusCode::UNAUTHORIZED, "invalid_token", "the bearer token does not match"),
        None => error(StatusCode::UNAUTHORIZED, "unauthorized", "Authorization: Bearer <token> required"),
    }
}

fn error(code: StatusCode, error: &str, message: impl Into<String>) -> Response {
    (code, Json(json!({ "error": error, "message": message.into() }))).into_response()
}
