//! `GET /v1/snapshot` and `POST /v1/snapshot/reload`: the serving consent snapshot.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::health::unix_of;
use super::{error, AdminState};
use tokio::sync::oneshot;

use crate::consent::snapshot::SnapshotError;
use crate::consent::store::Loaded;

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

pub(super) async fn snapshot(State(state): State<AdminState>) -> Response {
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

pub(super) async fn reload(State(state): State<AdminState>) -> Response {
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
