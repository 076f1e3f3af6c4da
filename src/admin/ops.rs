//! Operating the gateway live: the running config (`GET /v1/config`), reloading it
//! (`POST /v1/config/reload`) and draining (`GET|POST /v1/drain`). The gateway serves the
//! requests on its control loop (STYLE §9); this file holds the endpoints and the types they
//! exchange with it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::{error, AdminState};

/// How long `POST /v1/config/reload` waits for the reload (it compiles the content rules).
const CONFIG_RELOAD_WAIT: Duration = Duration::from_secs(60);

/// What a config reload did (the 200 answer of `POST /v1/config/reload`, and the log).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ConfigReport {
    /// SHA-256 of the config now running (the files read, in order).
    pub sha256: String,
    /// Whether anything changed at all.
    pub changed: bool,
    /// Keys whose value changed and that are in force now (dotted, accounts by system_id).
    pub applied: Vec<String>,
    /// Keys whose value changed but that only a restart puts in force (listen addresses,
    /// directories, node id, …); the running gateway keeps their old value.
    pub restart_required: Vec<String>,
    pub accounts_added: Vec<String>,
    pub accounts_removed: Vec<String>,
    pub accounts_changed: Vec<String>,
    /// Anything else the operator should know (a cap table that had to start empty).
    pub notes: Vec<String>,
    /// Problems that do not stop the config (an include matching nothing, a licence expired).
    pub warnings: Vec<String>,
}

/// Why a config reload changed nothing.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConfigReloadError {
    /// The new config has problems (each `file:line: key: message`); the running one stays.
    #[error("config invalid ({} problem(s)); the running config stays", .0.len())]
    Invalid(Vec<String>),
    /// The gateway was started without a config file (tests, demo): nothing to re-read.
    #[error("the gateway runs without a config file to re-read")]
    NoSource,
    /// The reload could not finish (a bug, or the gateway stopping).
    #[error("reload failed: {0}")]
    Aborted(String),
}

pub type ConfigReply = oneshot::Sender<Result<ConfigReport, ConfigReloadError>>;

/// Whether the gateway is draining, and the ESME connections it still has.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct DrainStatus {
    pub draining: bool,
    pub sessions: usize,
}

/// What the admin API asks of the gateway's control loop.
#[derive(Debug)]
pub enum Request {
    ReloadConfig(ConfigReply),
    /// Start draining (`cancel` = false) or take binds again (`cancel` = true).
    Drain {
        cancel: bool,
        reply: oneshot::Sender<DrainStatus>,
    },
}

/// The admin API's handle on live operation, shared with the gateway.
#[derive(Clone)]
pub struct Ops {
    pub requests: mpsc::Sender<Request>,
    /// `GET /v1/config`'s body: the running config's summary (secrets masked), replaced by
    /// every successful reload.
    pub config: Arc<ArcSwap<Value>>,
    /// Set while draining (`/readyz` answers 503).
    pub draining: Arc<AtomicBool>,
    /// ESME connections open now (bound or binding).
    pub sessions: Arc<AtomicUsize>,
}

impl Ops {
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

pub(super) async fn config_get(State(state): State<AdminState>) -> Response {
    Json((**state.ops.config.load()).clone()).into_response()
}

pub(super) async fn config_reload(State(state): State<AdminState>) -> Response {
    let (tx, rx) = oneshot::channel();
    if state.ops.requests.send(Request::ReloadConfig(tx)).await.is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "the gateway is shutting down");
    }
    match tokio::time::timeout(CONFIG_RELOAD_WAIT, rx).await {
        Ok(Ok(Ok(report))) => Json(report).into_response(),
        Ok(Ok(Err(ConfigReloadError::Invalid(problems)))) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(serde_json::json!({
                "error": "config_invalid",
                "message": format!("{} problem(s); the running config stays", problems.len()),
                "problems": problems,
            })),
        )
            .into_response(),
        Ok(Ok(Err(e @ ConfigReloadError::NoSource))) => error(StatusCode::CONFLICT, "no_config_file", e.to_string()),
        Ok(Ok(Err(e @ ConfigReloadError::Aborted(_)))) => {
            error(StatusCode::INTERNAL_SERVER_ERROR, "reload_failed", e.to_string())
        }
        Ok(Err(_)) => error(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "the gateway is shutting down"),
        Err(_) => error(StatusCode::GATEWAY_TIMEOUT, "reload_timeout", "the reload is still running"),
    }
}

pub(super) async fn drain_get(State(state): State<AdminState>) -> Response {
    Json(DrainStatus { draining: state.ops.draining(), sessions: state.ops.sessions.load(Ordering::Relaxed) })
        .into_response()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DrainIn {
    #[serde(default)]
    cancel: bool,
}

pub(super) async fn drain_post(State(state): State<AdminState>, body: axum::body::Bytes) -> Response {
    let input: DrainIn = if body.iter().all(u8::is_ascii_whitespace) {
        DrainIn::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(i) => i,
            Err(e) => {
                return error(StatusCode::BAD_REQUEST, "invalid_body", format!("expected {{\"cancel\": bool}}: {e}"))
            }
        }
    };
    let (tx, rx) = oneshot::channel();
    if state.ops.requests.send(Request::Drain { cancel: input.cancel, reply: tx }).await.is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "the gateway is shutting down");
    }
    match rx.await {
        Ok(s) => (if s.draining { StatusCode::ACCEPTED } else { StatusCode::OK }, Json(s)).into_response(),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "the gateway is shutting down"),
    }
}
