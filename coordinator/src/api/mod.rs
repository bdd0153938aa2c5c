//! The coordinator's HTTP API (axum on hyper).
//!
//! | route | what |
//! |---|---|
//! | `GET /healthz` | liveness; no internals |
//! | `GET /api/v1/agents` | connected agents |
//! | `GET /api/v1/checks` | every check with per-region and merged summaries |
//! | `GET /api/v1/checks/{name}` | one check, with phase percentiles |
//! | `GET /api/v1/checks/{name}/history` | uptime and latency buckets, 24 h or 30 d ([`history`]) |
//! | `GET /api/v1/checks/{name}/series` | 60-point latency series per region ([`history`]) |
//! | `GET /api/v1/alerts` | alerts, outbox, silences ([`alerts`]) |
//! | `GET /api/v1/alerts/history` | the notifications made, newest first ([`alerts`]) |
//! | `POST /api/v1/silences`, `DELETE /api/v1/silences/{id}` | silences |
//! | `GET/POST /api/v1/loadtests`, `GET /api/v1/loadtests/{id}` | load runs |
//! | `GET /api/v1/loadtests/{id}/report` | a load run's HTML report |
//! | `GET /api/v1/audit` | who changed what ([`audit`]; admin) |
//! | `GET /api/v1/config` | this build and the config reloads ([`crate::reload`]; admin) |
//! | `GET /metrics` | Prometheus text format ([`crate::metrics`]) |
//! | `GET /`, `/assets/*` | the dashboard ([`crate::dashboard`]) |
//!
//! `?window=5m` (default 5 m, at most 24 h) selects the sliding window.
//!
//! Every route but `/healthz` needs a bearer token ([`auth`]); every
//! response carries `x-request-id`. No CORS headers are sent.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, MethodRouter};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::alert::store::AlertStore;
use crate::config::CheckConfig;

pub mod alerts;
pub mod audit;
pub mod auth;
pub mod history;
mod loadtests;

/// Largest request body accepted (RELIABILITY.md API4).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
use crate::eval::{self, RegionSummary};
use crate::fleet::{AgentInfo, Fleet};
use crate::store::Store;

/// Window used when the request names none.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(300);
/// Longest window a request may ask for; longer ones need roll-ups.
pub const MAX_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// State shared by the handlers.
#[derive(Clone)]
pub struct ApiState {
    /// The running configuration.
    pub config: Arc<crate::reload::LiveConfig>,
    /// Stored windows.
    pub store: Arc<dyn Store>,
    /// Connected agents.
    pub fleet: Arc<Fleet>,
    /// Alert state, outbox and silences.
    pub alerts: Arc<dyn AlertStore>,
    /// Distributed load runs.
    pub loadtests: Arc<crate::loadtest::LoadTests>,
    /// API tokens and the failed-authentication limiter.
    pub auth: Arc<auth::Auth>,
    /// Who changed what.
    pub audit: Arc<dyn audit::AuditLog>,
    /// The listeners' TLS, when `[server.tls]` is set.
    pub tls: Option<Arc<crate::tls::ServerTls>>,
}

/// One route: method, path, handler, largest body accepted.
type Route = (Method, &'static str, MethodRouter<ApiState>, usize);

/// Every route of the API. The router is built from this table, and the
/// route-table test walks it: a route exists only here.
fn table() -> Vec<Route> {
    // A load file may be larger than other bodies (JSON-escaped, so twice
    // the file limit).
    let load_body = 2 * crate::loadtest::MAX_FILE_BYTES;
    let route = |m, path, handler| (m, path, handler, MAX_BODY_BYTES);
    vec![
        route(Method::GET, "/healthz", get(healthz)),
        route(Method::GET, "/api/v1/agents", get(agents)),
        route(Method::GET, "/api/v1/checks", get(list_checks)),
        route(Method::GET, "/api/v1/checks/{name}", get(get_check)),
        route(
            Method::GET,
            "/api/v1/checks/{name}/history",
            get(history::get_history),
        ),
        route(
            Method::GET,
            "/api/v1/checks/{name}/series",
            get(history::get_series),
        ),
        route(Method::GET, "/api/v1/alerts", get(alerts::list)),
        route(Method::GET, "/api/v1/alerts/history", get(alerts::history)),
        route(Method::POST, "/api/v1/silences", post(alerts::create)),
        route(
            Method::DELETE,
            "/api/v1/silences/{id}",
            delete(alerts::delete),
        ),
        route(Method::GET, "/api/v1/loadtests", get(loadtests::list)),
        (
            Method::POST,
            "/api/v1/loadtests",
            post(loadtests::create),
            load_body,
        ),
        route(
            Method::GET,
            "/api/v1/loadtests/{id}",
            get(loadtests::get_one),
        ),
        route(
            Method::GET,
            "/api/v1/loadtests/{id}/report",
            get(loadtests::report),
        ),
        route(Method::GET, "/api/v1/audit", get(audit::list)),
        route(Method::GET, "/api/v1/config", get(config_status)),
        route(Method::GET, "/metrics", get(metrics)),
        route(Method::GET, "/", get(crate::dashboard::index)),
        route(Method::GET, "/assets/app.js", get(crate::dashboard::script)),
        route(Method::GET, "/assets/app.css", get(crate::dashboard::style)),
    ]
}

/// Method and path of every route, for tests and docs.
pub fn routes() -> Vec<(Method, &'static str)> {
    table().into_iter().map(|(m, p, _, _)| (m, p)).collect()
}

/// The API router. Serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()`: failed
/// authentications are limited per client address.
pub fn router(state: ApiState) -> Router {
    let auth = Arc::clone(&state.auth);
    table()
        .into_iter()
        .fold(Router::new(), |r, (_, path, handler, limit)| {
            r.route(
                path,
                handler.layer(axum::extract::DefaultBodyLimit::max(limit)),
            )
        })
        // Inside the guard: sees the caller it authenticated.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            audit::record,
        ))
        .with_state(state)
        // Outermost, so it covers every route above, any added later and the
        // 404 fallback (unknown paths are not revealed without a token).
        .layer(axum::middleware::from_fn_with_state(auth, auth::guard))
}

/// `GET /metrics`: probe results in blackbox_exporter's names, the agents
/// and the coordinator's own health (Prometheus text format 0.0.4).
async fn metrics(State(st): State<ApiState>) -> Result<Response, ApiError> {
    metrics_page(st).await
}

/// `GET /api/v1/config` (admin): this build, and what the config reloads
/// did ([`crate::reload::ReloadStatus`]).
async fn config_status(State(st): State<ApiState>) -> Json<serde_json::Value> {
    use vantage_proto::build_info as b;
    Json(serde_json::json!({
        "build": {
            "version": b::VERSION,
            "commit": b::COMMIT,
            "commit_date": b::COMMIT_DATE,
            "rustc": b::RUSTC,
            "target": b::TARGET,
            "profile": b::PROFILE,
            "compatible_agents": b::compatible_series(),
        },
        "reload": st.config.status(),
        "tls": st.tls.as_ref().map(|t| t.status()),
        "checks": st.config.current().checks.len(),
    }))
}

/// The text of `/metrics`.
async fn metrics_page(st: ApiState) -> Result<Response, ApiError> {
    use crate::alert::store::EntryState;
    use crate::exposition::{Exposition, Kind};

    let alerts = Arc::clone(&st.alerts);
    let outbox = tokio::task::spawn_blocking(move || alerts.outbox())
        .await
        .map_err(|e| ApiError::internal("metrics task", e))?
        .map_err(|e| ApiError::internal("reading the outbox", e))?;
    let mut e = Exposition::new();
    st.fleet.probe_metrics().write(&mut e);

    let agents = st.fleet.agents();
    e.family(
        "vantage_agents_connected",
        Kind::Gauge,
        "Agents with an open session.",
    );
    e.sample("vantage_agents_connected", &[], agents.len() as f64);
    type AgentValue = fn(&AgentInfo) -> f64;
    let per_agent: [(&str, Kind, &str, AgentValue); 5] = [
        (
            "vantage_agent_last_seen_timestamp_seconds",
            Kind::Gauge,
            "When the agent's last message arrived, unix seconds.",
            |a| a.last_seen_unix_ms as f64 / 1000.0,
        ),
        (
            "vantage_agent_spool_backlog_batches",
            Kind::Gauge,
            "Batches in the agent's spool waiting for an ack, as of its last heartbeat.",
            |a| a.spool_pending_batches as f64,
        ),
        (
            "vantage_agent_spool_dropped_windows_total",
            Kind::Counter,
            "Windows the agent's full spool dropped (a gap in its results).",
            |a| a.spool_dropped_windows_total as f64,
        ),
        (
            "vantage_agent_rejected_windows_total",
            Kind::Counter,
            "Windows refused because their check was not assigned to the agent.",
            |a| a.ingest.rejected_windows_total as f64,
        ),
        (
            "vantage_agent_duplicate_batches_total",
            Kind::Counter,
            "Batches received again after they were stored (acknowledged again).",
            |a| a.ingest.duplicate_batches_total as f64,
        ),
    ];
    for (name, kind, help, value) in per_agent {
        e.family(name, kind, help);
        for a in &agents {
            e.sample(name, &[("agent", &a.name), ("region", &a.region)], value(a));
        }
    }
    e.family(
        "vantage_agent_info",
        Kind::Gauge,
        "Connected agents, their versions and whether they are compatible with this coordinator, 1.",
    );
    for a in &agents {
        let labels = [
            ("agent", a.name.as_str()),
            ("region", a.region.as_str()),
            ("version", a.version.as_str()),
            (
                "compatible",
                if a.version_compatible {
                    "true"
                } else {
                    "false"
                },
            ),
        ];
        e.sample("vantage_agent_info", &labels, 1.0);
    }

    e.family(
        "vantage_outbox_entries",
        Kind::Gauge,
        "Notifications in the outbox by channel and state (queued, sending, failed).",
    );
    let mut depth: std::collections::BTreeMap<(&str, &str), u64> = Default::default();
    for entry in &outbox {
        let state = match entry.state {
            EntryState::Queued => "queued",
            EntryState::Sending => "sending",
            EntryState::Failed => "failed",
        };
        *depth.entry((entry.channel.as_str(), state)).or_default() += 1;
    }
    for ((channel, state), n) in depth {
        e.sample(
            "vantage_outbox_entries",
            &[("channel", channel), ("state", state)],
            n as f64,
        );
    }
    st.fleet.health().write(&mut e);
    let reload = st.config.status();
    let reload_families: [(&str, Kind, &str, f64); 5] = [
        (
            "vantage_config_last_reload_successful",
            Kind::Gauge,
            "Whether the last config reload attempt succeeded (1) or was rejected (0).",
            f64::from(u8::from(reload.last_ok)),
        ),
        (
            "vantage_config_last_reload_success_timestamp_seconds",
            Kind::Gauge,
            "When the running config was applied, unix seconds.",
            reload.applied_unix_ms as f64 / 1000.0,
        ),
        (
            "vantage_config_reloads_total",
            Kind::Counter,
            "Config reloads applied since the coordinator started.",
            reload.reloads_total as f64,
        ),
        (
            "vantage_config_reload_failures_total",
            Kind::Counter,
            "Config reloads rejected since the coordinator started.",
            reload.failures_total as f64,
        ),
        (
            "vantage_config_restart_required",
            Kind::Gauge,
            "1 when the config file changes a table a reload cannot apply ([server]).",
            f64::from(u8::from(!reload.restart_required.is_empty())),
        ),
    ];
    for (name, kind, help, v) in reload_families {
        e.family(name, kind, help);
        e.sample(name, &[], v);
    }
    e.family(
        "vantage_build_info",
        Kind::Gauge,
        "This coordinator's version, commit and compiler, 1.",
    );
    e.sample(
        "vantage_build_info",
        &[
            ("version", vantage_proto::build_info::VERSION),
            ("commit", vantage_proto::build_info::COMMIT),
            ("rustc", vantage_proto::build_info::RUSTC),
        ],
        1.0,
    );

    let mut response = e.finish().into_response();
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static(crate::exposition::CONTENT_TYPE),
    );
    Ok(response)
}

/// An API error: a status and a message safe to show (no internals).
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn internal(context: &str, err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "{context}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; see the coordinator log",
        )
    }
}

/// A JSON body, or the error: 413 past the body limit, 415 without a JSON
/// content type, 400 for anything else wrong with it.
fn json_body<T>(
    body: Result<Json<T>, axum::extract::rejection::JsonRejection>,
) -> Result<T, ApiError> {
    body.map(|Json(v)| v).map_err(|e| {
        let status = match e.status() {
            s @ (StatusCode::PAYLOAD_TOO_LARGE | StatusCode::UNSUPPORTED_MEDIA_TYPE) => s,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, format!("invalid body: {}", e.body_text()))
    })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let request_id = auth::REQUEST_ID.try_with(Clone::clone).ok();
        (
            self.status,
            Json(serde_json::json!({ "error": self.message, "request_id": request_id })),
        )
            .into_response()
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

#[derive(Serialize)]
struct AgentsBody {
    agents: Vec<AgentInfo>,
}

async fn agents(State(st): State<ApiState>) -> Json<AgentsBody> {
    Json(AgentsBody {
        agents: st.fleet.agents(),
    })
}

#[derive(Deserialize)]
struct WindowQuery {
    window: Option<String>,
}

fn parse_window(q: &WindowQuery) -> Result<Duration, ApiError> {
    let Some(text) = &q.window else {
        return Ok(DEFAULT_WINDOW);
    };
    let d = humantime::parse_duration(text).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "window: expected a duration such as 5m, 1h or 90s",
        )
    })?;
    if d.is_zero() || d > MAX_WINDOW {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "window: must be more than 0s and at most 24h",
        ));
    }
    Ok(d)
}

/// A check and what the agents reported about it.
#[derive(Serialize)]
pub struct CheckView {
    name: String,
    kind: &'static str,
    /// URL or host:port probed; credentials in a URL are removed.
    target: String,
    interval_s: f64,
    regions_configured: Vec<String>,
    window_s: u64,
    regions: Vec<RegionSummary>,
    all: RegionSummary,
}

fn target_of(c: &CheckConfig) -> String {
    use vantage_proto::spec::ProbeSpec;
    match &c.check.probe {
        ProbeSpec::Http(h) => without_credentials(&h.url),
        ProbeSpec::Tcp(t) => format!("{}:{}", t.host, t.port),
        ProbeSpec::Tls(t) => format!("{}:{}", t.host, t.port),
        ProbeSpec::Redirect(s) => without_credentials(&s.url),
        ProbeSpec::Headers(s) => without_credentials(&s.url),
        ProbeSpec::Cors(s) => without_credentials(&s.url),
        ProbeSpec::AuthRequired(s) => without_credentials(&s.url),
        ProbeSpec::RateLimit(s) => without_credentials(&s.url),
        ProbeSpec::EmailDns(s) => s.domain.clone(),
        ProbeSpec::ExposedSecrets(s) => without_credentials(&s.url),
    }
}

/// `url` as shown in the API: user name and password removed.
fn without_credentials(url: &url::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}

fn view(
    st: &ApiState,
    c: &CheckConfig,
    window: Duration,
    with_phases: bool,
) -> Result<CheckView, ApiError> {
    let since = crate::now_ms() - i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    let windows = st
        .store
        .windows_since(&c.check.name, since)
        .map_err(|e| ApiError::internal("reading windows", e))?;
    let (mut regions, mut all) = eval::summarize(&windows);
    let now = crate::now_ms();
    let interval_s = c.check.interval.as_secs_f64();
    for r in regions.iter_mut().chain(std::iter::once(&mut all)) {
        r.state = crate::status::state_of(r, interval_s, now);
    }
    if !with_phases {
        for r in regions.iter_mut().chain(std::iter::once(&mut all)) {
            r.phases_ms.clear();
        }
    }
    Ok(CheckView {
        name: c.check.name.clone(),
        kind: c.check.probe.kind().as_str(),
        target: target_of(c),
        interval_s: c.check.interval.as_secs_f64(),
        regions_configured: c.regions.clone(),
        window_s: window.as_secs(),
        regions,
        all,
    })
}

#[derive(Serialize)]
struct ChecksBody {
    checks: Vec<CheckView>,
}

async fn list_checks(
    State(st): State<ApiState>,
    Query(q): Query<WindowQuery>,
) -> Result<Json<ChecksBody>, ApiError> {
    let window = parse_window(&q)?;
    let checks = tokio::task::spawn_blocking(move || {
        st.config
            .current()
            .checks
            .iter()
            .map(|c| view(&st, c, window, false))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| ApiError::internal("summary task", e))??;
    Ok(Json(ChecksBody { checks }))
}

async fn get_check(
    State(st): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<WindowQuery>,
) -> Result<Json<CheckView>, ApiError> {
    let window = parse_window(&q)?;
    let check = st
        .config
        .current()
        .checks
        .iter()
        .find(|c| c.check.name == name)
        .cloned()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no such check"))?;
    let v = tokio::task::spawn_blocking(move || view(&st, &check, window, true))
        .await
        .map_err(|e| ApiError::internal("summary task", e))??;
    Ok(Json(v))
}
