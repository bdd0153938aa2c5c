//! Alert state and silences.
//!
//! | route | what |
//! |---|---|
//! | `GET /api/v1/alerts` | pending and firing alerts, the outbox (queued and failed notifications), silences |
//! | `GET /api/v1/alerts/history?subject=&limit=` | the notifications made, newest first (firing, reminders, resolved, channel_failed) |
//! | `POST /api/v1/silences` | add a silence; body `{"subject", "rule", "starts_at", "ends_at" or "duration", "comment"}` |
//! | `DELETE /api/v1/silences/{id}` | remove a silence |

use std::time::{Duration, UNIX_EPOCH};

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{ApiError, ApiState};
use crate::alert::lifecycle::AlertRecord;
use crate::alert::store::{EntryState, Silence};
use crate::now_ms;

/// Longest silence accepted.
pub const MAX_SILENCE: Duration = Duration::from_secs(90 * 24 * 3600);

/// An outbox entry as the API shows it.
#[derive(Serialize)]
pub struct OutboxView {
    id: u64,
    channel: String,
    notification_id: String,
    title: String,
    state: EntryState,
    attempts: u32,
    next_attempt_unix_ms: i64,
    last_error: Option<String>,
    possible_duplicate: bool,
    queued_unix_ms: i64,
}

#[derive(Serialize)]
pub(super) struct AlertsBody {
    alerts: Vec<AlertRecord>,
    outbox: Vec<OutboxView>,
    silences: Vec<Silence>,
}

pub(super) async fn list(State(st): State<ApiState>) -> Result<Json<AlertsBody>, ApiError> {
    let alerts = st.alerts.clone();
    let body = tokio::task::spawn_blocking(move || {
        let now = now_ms();
        Ok::<_, crate::store::StoreError>(AlertsBody {
            alerts: alerts.alerts()?,
            outbox: alerts
                .outbox()?
                .into_iter()
                .map(|e| OutboxView {
                    id: e.id,
                    channel: e.channel,
                    title: e.notification.title(),
                    notification_id: e.notification.id,
                    state: e.state,
                    attempts: e.attempts,
                    next_attempt_unix_ms: e.next_attempt_unix_ms,
                    last_error: e.last_error,
                    possible_duplicate: e.notification.possible_duplicate,
                    queued_unix_ms: e.queued_unix_ms,
                })
                .collect(),
            silences: alerts
                .silences()?
                .into_iter()
                .filter(|s| s.ends_unix_ms > now)
                .collect(),
        })
    })
    .await
    .map_err(|e| ApiError::internal("alerts task", e))?
    .map_err(|e| ApiError::internal("reading alerts", e))?;
    Ok(Json(body))
}

/// Most history events one request returns.
pub const MAX_HISTORY_LIMIT: usize = 1_000;

/// `?subject=NAME&limit=N` of `GET /api/v1/alerts/history`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HistoryQuery {
    subject: Option<String>,
    limit: Option<usize>,
}

/// One event as the API shows it.
#[derive(Serialize)]
struct EventView {
    at_unix_ms: i64,
    kind: crate::alert::NotificationKind,
    subject: String,
    rule: String,
    severity: crate::alert::Severity,
    title: String,
    summary: String,
    breaching_regions: Vec<String>,
    firing_since_unix_ms: i64,
    notification_id: String,
    channels: Vec<String>,
}

/// `GET /api/v1/alerts/history`: what the alerts did, newest first, kept
/// across restarts (the newest 10,000 events).
pub(super) async fn history(
    State(st): State<ApiState>,
    axum::extract::Query(q): axum::extract::Query<HistoryQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_HISTORY_LIMIT {
        return Err(bad(format!("limit: use 1 to {MAX_HISTORY_LIMIT}")));
    }
    if q.subject
        .as_ref()
        .is_some_and(|s| s.is_empty() || s.len() > 200)
    {
        return Err(bad("subject: 1 to 200 characters, or leave it out for all"));
    }
    let alerts = st.alerts.clone();
    let events = tokio::task::spawn_blocking(move || alerts.history(q.subject.as_deref(), limit))
        .await
        .map_err(|e| ApiError::internal("alert history task", e))?
        .map_err(|e| ApiError::internal("reading the alert history", e))?;
    let events: Vec<EventView> = events
        .into_iter()
        .map(|e| {
            let n = e.notification;
            EventView {
                at_unix_ms: n.at_unix_ms,
                kind: n.kind,
                title: n.title(),
                subject: n.subject,
                rule: n.rule,
                severity: n.severity,
                summary: n.summary,
                breaching_regions: n.breaching_regions,
                firing_since_unix_ms: n.firing_since_unix_ms,
                notification_id: n.id,
                channels: e.channels,
            }
        })
        .collect();
    Ok(Json(serde_json::json!({ "events": events })))
}

/// Body of `POST /api/v1/silences`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewSilence {
    subject: Option<String>,
    rule: Option<String>,
    starts_at: Option<String>,
    ends_at: Option<String>,
    duration: Option<String>,
    comment: String,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

fn rfc3339_ms(field: &str, text: &str) -> Result<i64, ApiError> {
    let t = humantime::parse_rfc3339(text).map_err(|_| {
        bad(format!(
            "{field}: expected an RFC 3339 UTC time like 2026-12-01T22:00:00Z"
        ))
    })?;
    t.duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .ok_or_else(|| bad(format!("{field}: out of range")))
}

impl NewSilence {
    fn validate(self, now: i64) -> Result<Silence, ApiError> {
        for (field, v) in [("subject", &self.subject), ("rule", &self.rule)] {
            if let Some(v) = v {
                if v.is_empty() || v.len() > 200 {
                    return Err(bad(format!(
                        "{field}: 1 to 200 characters, or leave it out to match all"
                    )));
                }
            }
        }
        if self.comment.trim().is_empty() || self.comment.len() > 1000 {
            return Err(bad("comment: say why, in 1 to 1000 characters"));
        }
        let starts = match &self.starts_at {
            Some(t) => rfc3339_ms("starts_at", t)?,
            None => now,
        };
        let ends = match (&self.ends_at, &self.duration) {
            (Some(t), None) => rfc3339_ms("ends_at", t)?,
            (None, Some(d)) => {
                let d = humantime::parse_duration(d)
                    .map_err(|_| bad("duration: expected a duration like 2h or 30m"))?;
                starts.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            }
            _ => return Err(bad("give exactly one of ends_at and duration")),
        };
        if ends <= starts || ends <= now {
            return Err(bad(
                "the silence must end after it starts and in the future",
            ));
        }
        if ends - starts > i64::try_from(MAX_SILENCE.as_millis()).unwrap_or(i64::MAX) {
            return Err(bad("a silence may last at most 90 days"));
        }
        Ok(Silence {
            id: 0,
            subject: self.subject,
            rule: self.rule,
            starts_unix_ms: starts,
            ends_unix_ms: ends,
            comment: self.comment,
            created_unix_ms: now,
        })
    }
}

pub(super) async fn create(
    State(st): State<ApiState>,
    body: Result<Json<NewSilence>, JsonRejection>,
) -> Result<axum::response::Response, ApiError> {
    let body = super::json_body(body)?;
    let silence = body.validate(now_ms())?;
    let alerts = st.alerts.clone();
    let saved = tokio::task::spawn_blocking(move || alerts.add_silence(silence))
        .await
        .map_err(|e| ApiError::internal("silence task", e))?
        .map_err(|e| ApiError::internal("storing a silence", e))?;
    tracing::info!(id = saved.id, subject = ?saved.subject, rule = ?saved.rule, "silence added");
    let detail = super::audit::AuditDetail(serde_json::json!({
        "silence": saved.id, "subject": saved.subject, "rule": saved.rule,
        "ends_unix_ms": saved.ends_unix_ms,
    }));
    let mut response = (StatusCode::CREATED, Json(saved)).into_response();
    response.extensions_mut().insert(detail);
    Ok(response)
}

pub(super) async fn delete(
    State(st): State<ApiState>,
    Path(id): Path<String>,
) -> Result<axum::response::Response, ApiError> {
    let id: u64 = id
        .parse()
        .map_err(|_| bad("silence id: expected a number"))?;
    let alerts = st.alerts.clone();
    let removed = tokio::task::spawn_blocking(move || alerts.delete_silence(id))
        .await
        .map_err(|e| ApiError::internal("silence task", e))?
        .map_err(|e| ApiError::internal("removing a silence", e))?;
    if removed {
        tracing::info!(id, "silence removed");
        let mut response = StatusCode::NO_CONTENT.into_response();
        response.extensions_mut().insert(super::audit::AuditDetail(
            serde_json::json!({ "silence": id }),
        ));
        Ok(response)
    } else {
        Err(ApiError::new(StatusCode::NOT_FOUND, "no such silence"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn silence(json: &str) -> Result<Silence, String> {
        let body: NewSilence = serde_json::from_str(json).map_err(|e| e.to_string())?;
        body.validate(1_000_000).map_err(|e| e.message)
    }

    #[test]
    fn silences_are_validated() {
        let s = silence(r#"{"subject":"web","duration":"2h","comment":"deploy"}"#).unwrap();
        assert_eq!(
            (s.starts_unix_ms, s.ends_unix_ms),
            (1_000_000, 1_000_000 + 7_200_000)
        );
        assert!(silence(r#"{"duration":"2h","comment":" "}"#)
            .unwrap_err()
            .contains("comment"));
        assert!(silence(r#"{"comment":"x"}"#)
            .unwrap_err()
            .contains("exactly one"));
        assert!(
            silence(r#"{"comment":"x","duration":"1h","ends_at":"2030-01-01T00:00:00Z"}"#)
                .unwrap_err()
                .contains("exactly one")
        );
        assert!(silence(r#"{"comment":"x","duration":"soon"}"#)
            .unwrap_err()
            .contains("duration"));
        assert!(
            silence(r#"{"comment":"x","ends_at":"1970-01-01T00:00:01Z"}"#)
                .unwrap_err()
                .contains("future")
        );
        assert!(silence(r#"{"comment":"x","duration":"1000d"}"#)
            .unwrap_err()
            .contains("90 days"));
        assert!(silence(r#"{"comment":"x","duration":"1h","subject":""}"#)
            .unwrap_err()
            .contains("subject"));
        assert!(silence(r#"{"comment":"x","duration":"1h","bogus":1}"#)
            .unwrap_err()
            .contains("unknown field"));
    }
}
