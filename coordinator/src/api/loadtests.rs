//! `POST /api/v1/loadtests`, `GET /api/v1/loadtests`, `GET /api/v1/loadtests/{id}`.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

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
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = super::json_body(body)?;
    match st.loadtests.create(&body.file, &body.regions) {
        Ok(v) => Ok((StatusCode::CREATED, Json(v))),
        Err(r) => Err(ApiError::new(
            StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST),
            r.message,
        )),
    }
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

pub(super) async fn list(State(st): State<ApiState>) -> Json<Value> {
    Json(json!({ "loadtests": st.loadtests.list() }))
}
