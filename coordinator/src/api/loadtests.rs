//! `POST /api/v1/loadtests`, `GET /api/v1/loadtests`, `GET /api/v1/loadtests/{id}`,
//! `GET /api/v1/loadtests/{id}/report`.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::audit::AuditDetail;
use super::{ApiError, ApiState};

/// Body of `POST /api/v1/loadtests`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewRun {
    /// The load file (TOML), as `vantage-agent load` reads it.
    file: String,
    /// Regions whose connected agents share the load.
    regions: Vec<String>,
}

pub(super) async fn create(
    State(st): State<ApiState>,
    body: Result<Json<NewRun>, JsonRejection>,
) -> Result<Response, ApiError> {
    let body = super::json_body(body)?;
    // The audit log gets the file's digest (the file itself may be large),
    // the regions and, for a run that starts, its id and targets.
    let file_sha256 = super::auth::digest_hex(&body.file);
    let (mut response, detail) = match st.loadtests.create(&body.file, &body.regions).await {
        Ok(v) => {
            let detail = json!({
                "loadtest": v["id"], "regions": body.regions, "targets": v["targets"],
                "file_sha256": file_sha256,
            });
            ((StatusCode::CREATED, Json(v)).into_response(), detail)
        }
        Err(r) => {
            let detail = json!({
                "refused": r.message, "regions": body.regions, "file_sha256": file_sha256,
            });
            let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST);
            (ApiError::new(status, r.message).into_response(), detail)
        }
    };
    response.extensions_mut().insert(AuditDetail(detail));
    Ok(response)
}

pub(super) async fn get_one(
    State(st): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    st.loadtests
        .get(&id)
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no such load run"))
}

/// The report's content security policy: its inline CSS and SVG work, and
/// nothing else loads or runs (no script, no fetch, no external image).
const REPORT_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:";

pub(super) async fn report(
    State(st): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let html = st
        .loadtests
        .report(&id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no such load run"))?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, REPORT_CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        html,
    )
        .into_response())
}

pub(super) async fn list(State(st): State<ApiState>) -> Json<Value> {
    Json(json!({ "loadtests": st.loadtests.list() }))
}
