//! The complaint endpoints (`/v1/complaints…`, `/v1/entities/{entity}/suspension`,
//! `/v1/suspensions`): the 12321 loop.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::consent::durable_error;
use super::{error, AdminState};
use crate::complaints::{self, ComplaintIn, Complaints, FileError, Resolved, StatusFilter};
use crate::telemetry::metrics as m;

// ----- complaints (architecture §7) ----------------------------------------------------------------

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

pub(super) async fn post(State(state): State<AdminState>, body: axum::body::Bytes) -> Response {
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
pub(super) struct ListQuery {
    status: Option<String>,
    entity: Option<String>,
    limit: Option<u32>,
}

pub(super) async fn list(State(state): State<AdminState>, Query(q): Query<ListQuery>) -> Response {
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

pub(super) async fn show(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
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

pub(super) async fn resolve(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
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

pub(super) async fn suspension_lift(State(state): State<AdminState>, Path(entity): Path<String>) -> Response {
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
        Ok(None) => match crate::consent::statement::EntityName::parse(&entity) {
            Err(e) => error(StatusCode::BAD_REQUEST, "invalid_entity", format!("`{entity}`: {e}")),
            Ok(_) => error(StatusCode::NOT_FOUND, "not_suspended", format!("entity `{entity}` is not suspended")),
        },
        Err(e) => register_error(e),
    }
}

pub(super) async fn suspension_list(State(state): State<AdminState>) -> Response {
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
