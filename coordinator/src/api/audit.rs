//! The audit log: who changed what through the API, and when.
//!
//! Every request to a mutating route (anything but `GET`/`HEAD`) that got
//! past authentication is recorded after its handler ran: the time, the
//! request id, the token's name and role, the client address, the method
//! and path, the status and, where the handler adds one, a detail (a load
//! run's id, regions, targets and the SHA-256 of its file; a silence's id).
//! Refused attempts are recorded too (a 400 with its reason, a 409). The
//! entry is flushed to the store before the response leaves, and it is
//! also logged at info level (target `vantage::audit`). Requests without a
//! valid token never reach this layer: they are counted by the
//! failed-authentication limiter and logged by the guard.
//!
//! `GET /api/v1/audit?limit=N` (admin role) shows the newest entries first.
//! The store keeps the newest [`MAX_ENTRIES`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::auth::{Role, REQUEST_ID};
use super::{ApiError, ApiState};
use crate::store::{SledStore, StoreError};

/// Entries kept; older ones are removed as new ones arrive.
pub const MAX_ENTRIES: usize = 100_000;
/// Most entries one `GET /api/v1/audit` returns.
pub const MAX_LIMIT: usize = 1000;

/// One recorded change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When the handler finished (Unix ms).
    pub at_unix_ms: i64,
    /// The request's `x-request-id`.
    pub request_id: String,
    /// The API token's name (never the token).
    pub actor: String,
    /// Its role.
    pub role: String,
    /// The client's address.
    pub peer: String,
    /// Method and path as requested.
    pub method: String,
    /// Path, without the query.
    pub path: String,
    /// The response status.
    pub status: u16,
    /// What the handler says about the change (or why it refused it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
}

/// Where entries are kept.
pub trait AuditLog: Send + Sync + 'static {
    /// Stores `entry` durably (flushed).
    fn append(&self, entry: &AuditEntry) -> Result<(), StoreError>;
    /// The newest `limit` entries, newest first.
    fn recent(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError>;
}

/// The authenticated caller, put in the request's extensions by the guard.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's name.
    pub name: String,
    /// Its role.
    pub role: Role,
}

/// What a handler adds to its response for the audit log.
#[derive(Debug, Clone)]
pub struct AuditDetail(pub Value);

/// Entries appended by this process, to trim without counting the tree.
static APPENDED: AtomicUsize = AtomicUsize::new(0);

impl AuditLog for SledStore {
    fn append(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let tree = self.db().open_tree("audit")?;
        let mut key = crate::store::ordered_ms(entry.at_unix_ms).to_vec();
        key.extend_from_slice(&rand::random::<u64>().to_be_bytes());
        let value = serde_json::to_vec(entry).unwrap_or_default();
        tree.insert(key, value)?;
        tree.flush()?;
        // Trimming counts the tree, so it runs once per thousand appends.
        if APPENDED.fetch_add(1, Ordering::Relaxed) % 1000 == 999 {
            let excess = tree.len().saturating_sub(MAX_ENTRIES);
            for old in tree.iter().keys().take(excess) {
                tree.remove(old?)?;
            }
        }
        Ok(())
    }

    fn recent(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let tree = self.db().open_tree("audit")?;
        let mut out = Vec::new();
        for item in tree.iter().rev().take(limit) {
            let (_, v) = item?;
            // An entry this version cannot read is skipped, not fatal.
            if let Ok(e) = serde_json::from_slice(&v) {
                out.push(e);
            }
        }
        Ok(out)
    }
}

/// The layer inside the guard: records every mutating request.
pub async fn record(
    State(st): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    if req.method() == Method::GET || req.method() == Method::HEAD {
        return next.run(req).await;
    }
    let caller = req.extensions().get::<Caller>().cloned();
    let (method, path) = (req.method().to_string(), req.uri().path().to_owned());
    let response = next.run(req).await;
    // Only the guard's unauthenticated routes lack a caller (`/healthz`).
    let Some(caller) = caller else {
        return response;
    };
    let entry = AuditEntry {
        at_unix_ms: crate::now_ms(),
        request_id: REQUEST_ID.try_with(Clone::clone).unwrap_or_default(),
        actor: caller.name,
        role: caller.role.as_str().to_owned(),
        peer: peer.ip().to_string(),
        method,
        path,
        status: response.status().as_u16(),
        detail: response
            .extensions()
            .get::<AuditDetail>()
            .map(|d| d.0.clone()),
    };
    tracing::info!(
        target: "vantage::audit",
        actor = %entry.actor,
        peer = %entry.peer,
        method = %entry.method,
        path = %entry.path,
        status = entry.status,
        detail = %entry.detail.as_ref().map(ToString::to_string).unwrap_or_default(),
        "audit"
    );
    let log = Arc::clone(&st.audit);
    // The change is done: a failure to record it must not tell the client
    // otherwise (a retried load run would run twice), so it is logged.
    match tokio::task::spawn_blocking(move || log.append(&entry)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "writing the audit log failed"),
        Err(e) => tracing::error!(error = %e, "the audit task failed"),
    }
    response
}

/// `?limit=N` of `GET /api/v1/audit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditQuery {
    limit: Option<usize>,
}

/// `GET /api/v1/audit`: the newest entries first.
pub(super) async fn list(
    State(st): State<ApiState>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            format!("limit: use 1 to {MAX_LIMIT}"),
        ));
    }
    let log = Arc::clone(&st.audit);
    let entries = tokio::task::spawn_blocking(move || log.recent(limit))
        .await
        .map_err(|e| ApiError::internal("audit task", e))?
        .map_err(|e| ApiError::internal("reading the audit log", e))?;
    Ok(Json(json!({ "entries": entries })))
}
