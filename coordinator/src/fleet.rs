//! The gRPC side: one `Session` stream per agent.
//!
//! A session starts with `Hello` (within [`HELLO_TIMEOUT`]); the coordinator
//! answers `Welcome` (with the highest seq it has stored for that agent) and an
//! `Assignment`. Each `ResultBatch` is validated, stored durably, and only then
//! acknowledged. Checks are spread over the connected agents of each region by
//! rendezvous hashing, so each region runs each check once and a disconnect moves
//! only the leaving agent's checks.
//!
//! Before `Hello` is read, the session's token is checked
//! ([`crate::agent_auth`]): a missing or unknown token ends it with
//! `Unauthenticated`; a `Hello` naming another agent than the token's, or
//! another region than the pinned one, with `PermissionDenied`. Either way
//! nothing is stored and no session is registered. After that the session's
//! identity is fixed: every later message is attributed to it.
//!
//! An agent's results are accepted only for checks that were assigned to it
//! (now or earlier: the store keeps every (agent, check) pair ever assigned,
//! so a backlog that outlived a reassignment or a coordinator restart still
//! lands) and that run in its region. Windows of any other check are
//! dropped, counted (`rejected_windows_total` in `/api/v1/agents`) and
//! logged; the rest of the batch is stored and the batch acknowledged, so
//! the agent does not resend it forever and its legitimate windows are
//! never held back.
//!
//! Errors are mapped to `tonic::Status` once, in `From<FleetError> for Status`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use vantage_proto::spec::ProbeKind;
use vantage_proto::v1::{
    self, agent_message, coordinator_message, AgentMessage, CoordinatorMessage,
};
use vantage_proto::{histogram, is_valid_name};

use crate::agent_auth::{AgentAuth, AgentAuthError, Credential};
use crate::config::Config;
use crate::now_ms;
use crate::reload::LiveConfig;
use crate::store::{IngestOutcome, Store, StoreError};

/// How long a new session may take to send `Hello`.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Outbound messages buffered per session. Only acks and assignments go out, a
/// few per window; a full buffer means the agent stopped reading, and ingest
/// waits for it (backpressure) rather than buffering without bound.
const SESSION_OUTBOUND_CAPACITY: usize = 64;
/// Most batches stored with one flush (group commit).
const MAX_GROUP: usize = 64;
/// Most windows one batch may carry (RELIABILITY.md API4). 100 checks at a 1 s
/// window for a minute is 6,000.
pub const MAX_WINDOWS_PER_BATCH: usize = 20_000;
/// Accepted age of a window: a region cut off for a while drains its backlog
/// later, so old windows are normal; older than this is a clock or a bug.
const MAX_WINDOW_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Accepted clock skew into the future.
const MAX_WINDOW_SKEW: Duration = Duration::from_secs(300);
/// Longest accepted window.
const MAX_WINDOW_MS: u32 = 3_600_000;
/// Longest accepted free-text field in a window (error text, cert names).
const MAX_TEXT: usize = 2048;

/// Why a session or a message was refused.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The first message was not a valid `Hello`.
    #[error("handshake: {0}")]
    Handshake(String),
    /// A message broke the protocol or carried invalid data.
    #[error("invalid message: {0}")]
    Invalid(String),
    /// No valid agent token.
    #[error("{0}")]
    Unauthenticated(String),
    /// The agent claimed an identity its token does not give it.
    #[error("{0}")]
    Forbidden(String),
    /// Storage failed; the batch was not acknowledged and will be resent.
    #[error("storage unavailable")]
    Store(#[from] StoreError),
}

impl From<FleetError> for Status {
    fn from(e: FleetError) -> Self {
        match e {
            FleetError::Handshake(m) | FleetError::Invalid(m) => Status::invalid_argument(m),
            FleetError::Unauthenticated(m) => Status::unauthenticated(m),
            FleetError::Forbidden(m) => Status::permission_denied(m),
            // Storage internals stay in the coordinator's log.
            FleetError::Store(_) => Status::unavailable("storage unavailable, retry later"),
        }
    }
}

/// A connected agent, as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct AgentInfo {
    /// Agent name.
    pub name: String,
    /// Region.
    pub region: String,
    /// Reported version.
    pub version: String,
    /// Whether that version works with this coordinator (the rule in
    /// [`vantage_proto::build_info`]); an incompatible agent is served, and
    /// warned about.
    pub version_compatible: bool,
    /// Unix ms of connection.
    pub connected_unix_ms: i64,
    /// Unix ms of the last message.
    pub last_seen_unix_ms: i64,
    /// Checks currently assigned.
    pub checks: Vec<String>,
    /// Windows the agent's spool dropped because it was full (its gap), as
    /// last reported.
    pub spool_dropped_windows_total: u64,
    /// Batches in the agent's spool waiting for an ack, as of its last
    /// heartbeat (its backlog).
    pub spool_pending_batches: u64,
    /// What ingest saw from this agent since the coordinator started.
    #[serde(flatten)]
    pub ingest: IngestCounts,
}

/// Per-agent ingest counters, kept across the agent's sessions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct IngestCounts {
    /// Batches received again after they were stored: normal after a lost
    /// ack (the agent restarted or the session broke before the ack reached
    /// its spool); acknowledged again, not stored again.
    pub duplicate_batches_total: u64,
    /// Windows received under a new seq although already stored: never
    /// expected; a non-zero value is an agent bug (the newer copy is kept).
    pub rewritten_windows_total: u64,
    /// Windows dropped because their check was never assigned to this agent
    /// (or does not run in its region): a misconfigured or misbehaving
    /// agent. Not stored; the rest of their batch was.
    pub rejected_windows_total: u64,
}

struct Session {
    id: u64,
    info: AgentInfo,
    capabilities: Vec<ProbeKind>,
    /// What the session authenticated with, to re-check it against a
    /// reloaded config.
    credential: Credential,
    tx: mpsc::Sender<Result<CoordinatorMessage, Status>>,
}

/// Whether an agent is connected, and when it was last heard from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Liveness {
    /// Agent name.
    pub name: String,
    /// Region.
    pub region: String,
    /// A session is open.
    pub connected: bool,
    /// Unix ms of its last message (or of its disconnection).
    pub last_seen_unix_ms: i64,
}

/// Fleet state shared by all sessions.
pub struct Fleet {
    config: Arc<LiveConfig>,
    store: Arc<dyn Store>,
    sessions: Mutex<HashMap<String, Session>>,
    /// Agents whose session ended, with region and last-seen time.
    departed: Mutex<HashMap<String, (String, i64)>>,
    next_session: AtomicU64,
    assignment_version: AtomicU64,
    ingested: tokio::sync::Notify,
    /// Where agents' load-run reports go ([`Fleet::load_events`]).
    load_events: Mutex<Option<mpsc::Sender<LoadEvent>>>,
    /// Ingest counters by agent name.
    ingest_counts: Mutex<HashMap<String, IngestCounts>>,
    /// Which agents may connect; replaced by a config reload.
    auth: std::sync::RwLock<Arc<AgentAuth>>,
    /// Sessions refused for want of a valid token, by client address: past
    /// a burst, more are refused before the token is even compared.
    auth_failures: crate::api::auth::FailureLimiter,
    /// Checks ever assigned to each agent that connected since start: read
    /// from the store at `Hello`, grown by every assignment (and persisted).
    assigned: Mutex<HashMap<String, HashSet<String>>>,
    /// `/metrics`: the latest window per check and region, and counters.
    probe_metrics: crate::metrics::ProbeMetrics,
    /// `/metrics`: the coordinator's own health.
    health: Arc<crate::metrics::Health>,
}

/// Load-run reports queued for the manager.
const LOAD_EVENTS_QUEUE: usize = 1024;

/// What agents say about distributed load runs, for the load-run manager.
#[derive(Debug)]
pub enum LoadEvent {
    /// A progress or final message.
    Progress {
        /// The agent.
        agent: String,
        /// Its message.
        progress: Box<v1::LoadProgress>,
    },
    /// The agent's session ended.
    Gone {
        /// The agent.
        agent: String,
    },
}

/// Polls `fut` once: its output if it is ready now. For reading what a
/// stream has already buffered; dropping the future is fine for futures
/// that keep no state of their own (tonic's `Streaming::message`).
fn poll_once<F: std::future::Future>(fut: F) -> Option<F::Output> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match std::pin::pin!(fut).poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

/// FNV-1a, 64 bit: a stable hash for rendezvous placement, so assignments do not
/// change with the Rust version.
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

impl Fleet {
    /// A fleet with no agents connected.
    pub fn new(config: Arc<LiveConfig>, store: Arc<dyn Store>) -> Arc<Self> {
        Arc::new(Fleet {
            auth: std::sync::RwLock::new(Arc::new(AgentAuth::new(config.current().agents.clone()))),
            auth_failures: Default::default(),
            assigned: Mutex::new(HashMap::new()),
            config,
            store,
            sessions: Mutex::new(HashMap::new()),
            departed: Mutex::new(HashMap::new()),
            next_session: AtomicU64::new(1),
            assignment_version: AtomicU64::new(0),
            ingested: tokio::sync::Notify::new(),
            load_events: Mutex::new(None),
            ingest_counts: Mutex::new(HashMap::new()),
            probe_metrics: crate::metrics::ProbeMetrics::default(),
            health: Arc::default(),
        })
    }

    /// Whether `id` is `agent`'s current session.
    fn is_current(&self, agent: &str, id: u64) -> bool {
        self.lock().get(agent).is_some_and(|s| s.id == id)
    }

    fn auth(&self) -> Arc<AgentAuth> {
        Arc::clone(&self.auth.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// A reloaded config is running: admits agents by its `[[agent]]`
    /// tables from now on, closes the sessions it no longer admits, and
    /// sends every connected agent its assignment under the new checks
    /// (unchanged checks keep running on the agents).
    pub fn config_applied(&self, new: &Config) {
        let auth = Arc::new(AgentAuth::new(new.agents.clone()));
        *self.auth.write().unwrap_or_else(|p| p.into_inner()) = Arc::clone(&auth);
        let mut regions: Vec<String> = Vec::new();
        let mut closed: Vec<(String, String)> = Vec::new();
        {
            let mut sessions = self.lock();
            sessions.retain(|name, s| {
                if !regions.contains(&s.info.region) {
                    regions.push(s.info.region.clone());
                }
                if auth.admits(name, &s.info.region, &s.credential) {
                    return true;
                }
                let _ = s.tx.try_send(Err(Status::permission_denied(
                    "this agent's [[agent]] entry was removed or changed by a config reload",
                )));
                closed.push((name.clone(), s.info.region.clone()));
                false
            });
        }
        for (agent, region) in closed {
            tracing::warn!(%agent, %region, "agent session closed: the reloaded config no longer admits it");
            self.departed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(agent, (region, now_ms()));
        }
        for region in regions {
            self.reassign(&region);
        }
    }

    /// The coordinator's own health figures, for `/metrics`.
    pub fn health(&self) -> &Arc<crate::metrics::Health> {
        &self.health
    }

    /// Records the backlog an agent's heartbeat reported.
    fn note_backlog(&self, agent: &str, session_id: u64, pending: u64) {
        if let Some(s) = self.lock().get_mut(agent) {
            if s.id == session_id {
                s.info.spool_pending_batches = pending;
            }
        }
    }

    /// The probe metrics of stored windows, for `/metrics`.
    pub fn probe_metrics(&self) -> &crate::metrics::ProbeMetrics {
        &self.probe_metrics
    }

    /// Agents' load-run reports from now on (one receiver: a new call
    /// replaces the previous one). Bounded: when the receiver lags, the
    /// reporting agents' sessions wait, so no report is lost.
    pub fn load_events(&self) -> mpsc::Receiver<LoadEvent> {
        let (tx, rx) = mpsc::channel(LOAD_EVENTS_QUEUE);
        *self.load_events.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        rx
    }

    async fn load_event(&self, event: LoadEvent) {
        let tx = self
            .load_events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(tx) = tx {
            let _ = tx.send(event).await;
        }
    }

    /// Queues `msg` for connected agent `agent`; false when it is not
    /// connected or its outbound queue is full.
    pub fn send_to(&self, agent: &str, msg: CoordinatorMessage) -> bool {
        self.lock()
            .get(agent)
            .is_some_and(|s| s.tx.try_send(Ok(msg)).is_ok())
    }

    /// Signalled after each newly stored batch, so evaluation can run on
    /// fresh data without waiting for its next tick.
    pub fn ingested(&self) -> &tokio::sync::Notify {
        &self.ingested
    }

    /// Connected agents and agents that left since this process started.
    pub fn liveness(&self) -> Vec<Liveness> {
        let mut out: Vec<Liveness> = self
            .lock()
            .values()
            .map(|s| Liveness {
                name: s.info.name.clone(),
                region: s.info.region.clone(),
                connected: true,
                last_seen_unix_ms: s.info.last_seen_unix_ms,
            })
            .collect();
        let departed = self.departed.lock().unwrap_or_else(|p| p.into_inner());
        for (name, (region, last_seen)) in departed.iter() {
            if !out.iter().any(|l| &l.name == name) {
                out.push(Liveness {
                    name: name.clone(),
                    region: region.clone(),
                    connected: false,
                    last_seen_unix_ms: *last_seen,
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Connected agents, sorted by name.
    pub fn agents(&self) -> Vec<AgentInfo> {
        let mut v: Vec<_> = self.lock().values().map(|s| s.info.clone()).collect();
        let counts = self.ingest_counts.lock().unwrap_or_else(|p| p.into_inner());
        for a in &mut v {
            a.ingest = counts.get(&a.name).copied().unwrap_or_default();
        }
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // A panic while holding this lock would be a bug in this module; the map
        // itself stays consistent, so keep serving rather than poisoning forever.
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Recomputes the checks of every agent in `region` and sends each its new
    /// `Assignment`. Called when an agent joins or leaves.
    fn reassign(&self, region: &str) {
        let version = self.assignment_version.fetch_add(1, Ordering::Relaxed) + 1;
        let mut sessions = self.lock();
        let mut names: Vec<String> = sessions
            .values()
            .filter(|s| s.info.region == region)
            .map(|s| s.info.name.clone())
            .collect();
        names.sort();
        let mut owned: HashMap<String, Vec<v1::Check>> =
            names.iter().map(|n| (n.clone(), Vec::new())).collect();
        let mut unplaced: Vec<&str> = Vec::new();
        let config = self.config.current();
        for c in &config.checks {
            if !c.regions.iter().any(|r| r == region) {
                continue;
            }
            let kind = c.check.probe.kind();
            let owner = names
                .iter()
                .filter(|n| {
                    sessions
                        .get(*n)
                        .is_some_and(|s| s.capabilities.contains(&kind))
                })
                .max_by_key(|n| fnv1a(&[&c.check.name, n]));
            match owner {
                Some(owner) => {
                    if let Some(list) = owned.get_mut(owner) {
                        list.push(assigned_check(&c.check, region));
                    }
                }
                None if !names.is_empty() => unplaced.push(c.check.name.as_str()),
                None => {}
            }
        }
        if !unplaced.is_empty() {
            tracing::warn!(%region, checks = ?unplaced,
                "no agent of the region supports these checks' kinds (older agents?): they do not run there until one that does connects");
        }
        let mut newly: Vec<(String, Vec<String>)> = Vec::new();
        {
            let mut assigned = self.assigned.lock().unwrap_or_else(|p| p.into_inner());
            for (name, checks) in &owned {
                let ever = assigned.entry(name.clone()).or_default();
                let new: Vec<String> = checks
                    .iter()
                    .filter(|c| ever.insert(c.name.clone()))
                    .map(|c| c.name.clone())
                    .collect();
                if !new.is_empty() {
                    newly.push((name.clone(), new));
                }
            }
        }
        if !newly.is_empty() {
            // Persisted off the runtime; the in-memory set above already
            // admits the agent's results, and every ingest's flush makes
            // this durable with them.
            let store = Arc::clone(&self.store);
            tokio::task::spawn_blocking(move || {
                for (agent, checks) in newly {
                    if let Err(e) = store.record_assigned(&agent, &checks) {
                        tracing::error!(%agent, error = %e, "recording an assignment failed");
                    }
                }
            });
        }
        for (name, checks) in owned {
            let Some(s) = sessions.get_mut(&name) else {
                continue;
            };
            s.info.checks = checks.iter().map(|c| c.name.clone()).collect();
            let msg = CoordinatorMessage {
                msg: Some(coordinator_message::Msg::Assignment(v1::Assignment {
                    version,
                    checks,
                })),
            };
            // try_send: never block while holding the lock. A session whose
            // buffer is full is not reading; dropping its assignment is safe
            // because the next reassignment sends the full set again, and a
            // stuck session is closed by keepalive.
            if s.tx.try_send(Ok(msg)).is_err() {
                tracing::warn!(agent = %name, "assignment not delivered: session not reading");
            }
        }
    }

    fn validate_hello(hello: &v1::Hello) -> Result<Vec<ProbeKind>, FleetError> {
        if !is_valid_name(&hello.agent) {
            return Err(FleetError::Handshake(format!(
                "agent name {:?} is invalid: use 1-64 characters from A-Z a-z 0-9 . _ -",
                truncate(&hello.agent)
            )));
        }
        if !is_valid_name(&hello.region) {
            return Err(FleetError::Handshake(format!(
                "region {:?} is invalid: use 1-64 characters from A-Z a-z 0-9 . _ -",
                truncate(&hello.region)
            )));
        }
        if hello.version.len() > 64 || hello.capabilities.len() > 32 {
            return Err(FleetError::Handshake(
                "version or capabilities too long".into(),
            ));
        }
        Ok(hello
            .capabilities
            .iter()
            .filter_map(|c| ProbeKind::parse(c))
            .collect())
    }

    /// Whether `agent` (in `region`) may report `check`: assigned to it now
    /// or before, and configured to run in that region.
    fn may_report(&self, agent: &str, region: &str, check: &str) -> bool {
        let runs_here = self
            .config
            .current()
            .checks
            .iter()
            .any(|c| c.check.name == check && c.regions.iter().any(|r| r == region));
        runs_here
            && self
                .assigned
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(agent)
                .is_some_and(|set| set.contains(check))
    }

    /// Drops the windows of `batch` that `agent` may not report; returns
    /// how many, logging the first check's name.
    fn drop_unassigned(&self, agent: &str, region: &str, batch: &mut v1::ResultBatch) -> usize {
        let before = batch.windows.len();
        let mut first = None;
        batch.windows.retain(|w| {
            let ok = self.may_report(agent, region, &w.check);
            if !ok && first.is_none() {
                first = Some(truncate(&w.check));
            }
            ok
        });
        let dropped = before - batch.windows.len();
        if let Some(check) = first {
            tracing::warn!(%agent, %region, seq = batch.seq, dropped, first_check = %check,
                "rejected windows of checks not assigned to this agent; not stored");
        }
        dropped
    }

    /// Checks a batch before anything is stored (RELIABILITY.md API1/API4).
    /// Which checks the agent may report is decided after, by
    /// [`Fleet::drop_unassigned`].
    fn validate_batch(&self, batch: &v1::ResultBatch) -> Result<(), FleetError> {
        if batch.seq == 0 {
            return Err(FleetError::Invalid("seq must start at 1".into()));
        }
        if batch.windows.len() > MAX_WINDOWS_PER_BATCH {
            return Err(FleetError::Invalid(format!(
                "{} windows in one batch (max {MAX_WINDOWS_PER_BATCH})",
                batch.windows.len()
            )));
        }
        let now = now_ms();
        let oldest = now - MAX_WINDOW_AGE.as_millis() as i64;
        let newest = now + MAX_WINDOW_SKEW.as_millis() as i64;
        for w in &batch.windows {
            let bad = |why: String| FleetError::Invalid(format!("window of {:?}: {why}", w.check));
            if w.start_unix_ms < oldest || w.start_unix_ms > newest {
                return Err(bad(format!(
                    "start {} outside the accepted time range",
                    w.start_unix_ms
                )));
            }
            if w.duration_ms == 0 || w.duration_ms > MAX_WINDOW_MS {
                return Err(bad(format!("duration {} ms out of range", w.duration_ms)));
            }
            if w.successes > w.attempts {
                return Err(bad("more successes than attempts".into()));
            }
            let failures: u64 = w
                .errors
                .iter()
                .map(|e| e.count)
                .fold(0, u64::saturating_add);
            if failures > w.attempts {
                return Err(bad("more errors than attempts".into()));
            }
            if w.errors
                .iter()
                .any(|e| v1::ErrorClass::try_from(e.class).is_err())
            {
                return Err(bad("unknown error class".into()));
            }
            if w.phases.len() > 8 {
                return Err(bad("too many phase histograms".into()));
            }
            for p in &w.phases {
                if v1::Phase::try_from(p.phase).is_err() {
                    return Err(bad(format!("unknown phase {}", p.phase)));
                }
                histogram::decode(&p.histogram).map_err(|e| bad(e.to_string()))?;
            }
            if w.last_error.len() > MAX_TEXT {
                return Err(bad("last_error too long".into()));
            }
            if let Some(t) = &w.tls {
                let text = t.subject.len() + t.issuer.len() + t.verify_error.len();
                if text > 3 * MAX_TEXT
                    || t.sans.len() > 256
                    || t.sans.iter().any(|s| s.len() > 256)
                    || t.protocol_version.len() > 16
                {
                    return Err(bad("TLS facts too large".into()));
                }
            }
        }
        Ok(())
    }

    fn note_spool_drops(&self, agent: &str, session_id: u64, total: u64) {
        if let Some(s) = self.lock().get_mut(agent) {
            if s.id == session_id && s.info.spool_dropped_windows_total != total {
                if total > s.info.spool_dropped_windows_total {
                    tracing::warn!(%agent, spool_dropped_windows_total = total,
                        "the agent's spool dropped windows: a gap in its results");
                }
                s.info.spool_dropped_windows_total = total;
            }
        }
    }

    fn touch(&self, agent: &str, session_id: u64) {
        if let Some(s) = self.lock().get_mut(agent) {
            if s.id == session_id {
                s.info.last_seen_unix_ms = now_ms();
            }
        }
    }

    /// Stores `batches` (consecutive batches of one session) with one
    /// flush. Validated first: the batches before an invalid one are stored,
    /// then the error is returned. Returns the highest seq stored, to ack.
    ///
    /// Everything runs on the blocking pool: validating and observing inflate
    /// every histogram, and a reconnecting agent's backlog holds thousands,
    /// which would otherwise hold a runtime worker for seconds and stall the
    /// API and the other sessions with it.
    async fn ingest(
        self: &Arc<Self>,
        agent: &str,
        region: &str,
        batches: Vec<v1::ResultBatch>,
    ) -> (Option<u64>, Result<(), FleetError>) {
        let fleet = Arc::clone(self);
        let (agent, region) = (agent.to_owned(), region.to_owned());
        tokio::task::spawn_blocking(move || fleet.ingest_blocking(&agent, &region, batches))
            .await
            .unwrap_or_else(|e| {
                (
                    None,
                    Err(FleetError::Invalid(format!("ingest task failed: {e}"))),
                )
            })
    }

    /// [`Fleet::ingest`], on a thread that may block.
    fn ingest_blocking(
        &self,
        agent: &str,
        region: &str,
        mut batches: Vec<v1::ResultBatch>,
    ) -> (Option<u64>, Result<(), FleetError>) {
        let mut verdict = Ok(());
        if let Some(bad) = batches.iter().position(|b| self.validate_batch(b).is_err()) {
            verdict = self.validate_batch(&batches[bad]);
            batches.truncate(bad);
        }
        let rejected: usize = batches
            .iter_mut()
            .map(|b| self.drop_unassigned(agent, region, b))
            .sum();
        if rejected > 0 {
            let mut counts = self.ingest_counts.lock().unwrap_or_else(|p| p.into_inner());
            counts
                .entry(agent.to_owned())
                .or_default()
                .rejected_windows_total += rejected as u64;
        }
        let Some(last) = batches.last().map(|b| b.seq) else {
            return (None, verdict);
        };
        let group: Vec<(u64, &[v1::Window])> = batches
            .iter()
            .map(|b| (b.seq, b.windows.as_slice()))
            .collect();
        let outcomes = match self.store.ingest_batches(agent, region, &group) {
            Ok(outcomes) => outcomes,
            Err(e) => return (None, Err(FleetError::Store(e))),
        };
        // Observed before the counters are locked: `/api/v1/agents` reads
        // them and must not wait for histograms to inflate.
        for (outcome, batch) in outcomes.iter().zip(&batches) {
            if matches!(outcome, IngestOutcome::Stored { .. }) {
                for w in &batch.windows {
                    self.probe_metrics.observe(region, w);
                }
            }
        }
        let mut counts = self.ingest_counts.lock().unwrap_or_else(|p| p.into_inner());
        let counts = counts.entry(agent.to_owned()).or_default();
        for (outcome, batch) in outcomes.into_iter().zip(&batches) {
            let seq = batch.seq;
            match outcome {
                IngestOutcome::Duplicate => {
                    counts.duplicate_batches_total += 1;
                    tracing::debug!(agent, seq, "duplicate batch acknowledged again");
                }
                IngestOutcome::Stored { replaced_windows } => {
                    if replaced_windows > 0 {
                        counts.rewritten_windows_total += replaced_windows as u64;
                        tracing::warn!(
                            agent,
                            seq,
                            replaced_windows,
                            "the agent reported windows it had reported before under another seq"
                        );
                    }
                    self.ingested.notify_one();
                }
            }
        }
        (Some(last), verdict)
    }

    /// Runs one session after its `Hello`, until the agent goes away.
    async fn serve(
        self: Arc<Self>,
        session_id: u64,
        hello: v1::Hello,
        mut inbound: Streaming<AgentMessage>,
        tx: mpsc::Sender<Result<CoordinatorMessage, Status>>,
    ) {
        let (agent, region) = (hello.agent.clone(), hello.region.clone());
        let stream_error =
            |s: Status| FleetError::Invalid(format!("stream error: {}", s.message()));
        let result: Result<(), FleetError> = async {
            // A message read while gathering a group, handled next.
            let mut next: Option<AgentMessage> = None;
            // The stream's end, seen while gathering: the session ends
            // after the group is stored and acknowledged.
            let mut end: Option<Result<(), FleetError>> = None;
            loop {
                let msg = match next.take() {
                    Some(m) => m,
                    None => match inbound.message().await.map_err(stream_error)? {
                        Some(m) => m,
                        None => break,
                    },
                };
                self.touch(&agent, session_id);
                match msg.msg {
                    Some(agent_message::Msg::Results(_)) if !self.is_current(&agent, session_id) => {
                        // Replaced by a newer session, or no longer admitted
                        // after a config reload: nothing more is stored here
                        // (what was not acknowledged stays in the agent's
                        // spool).
                        return Err(FleetError::Forbidden(
                            "this session was closed (replaced, or no longer admitted by the config)".into(),
                        ));
                    }
                    Some(agent_message::Msg::Results(batch)) => {
                        // Group commit: the batches the agent has already
                        // sent (its in-flight window, a backlog after a
                        // reconnect) are stored with one flush.
                        let mut group = vec![batch];
                        while group.len() < MAX_GROUP {
                            match poll_once(inbound.message()) {
                                Some(Ok(Some(AgentMessage {
                                    msg: Some(agent_message::Msg::Results(b)),
                                }))) => group.push(b),
                                Some(Ok(Some(other))) => {
                                    next = Some(other);
                                    break;
                                }
                                Some(Ok(None)) => {
                                    end = Some(Ok(()));
                                    break;
                                }
                                Some(Err(s)) => {
                                    end = Some(Err(stream_error(s)));
                                    break;
                                }
                                None => break,
                            }
                        }
                        let drops = group.last().map_or(0, |b| b.spool_dropped_windows_total);
                        self.note_spool_drops(&agent, session_id, drops);
                        let (stored, verdict) = self.ingest(&agent, &region, group).await;
                        if let Some(seq) = stored {
                            // Acks are cumulative: every seq up to this one.
                            let ack = CoordinatorMessage {
                                msg: Some(coordinator_message::Msg::Ack(v1::Ack { seq })),
                            };
                            if tx.send(Ok(ack)).await.is_err() {
                                break;
                            }
                        }
                        verdict?;
                        if let Some(end) = end.take() {
                            return end;
                        }
                    }
                    Some(agent_message::Msg::Heartbeat(beat)) => {
                        self.note_backlog(&agent, session_id, beat.spool_pending_batches);
                    }
                    Some(agent_message::Msg::LoadProgress(progress)) => {
                        self.load_event(LoadEvent::Progress {
                            agent: agent.clone(),
                            progress: Box::new(progress),
                        })
                        .await;
                    }
                    Some(agent_message::Msg::Hello(_)) => {
                        return Err(FleetError::Invalid("Hello sent twice".into()))
                    }
                    None => return Err(FleetError::Invalid("empty message".into())),
                }
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => tracing::info!(%agent, %region, "agent disconnected"),
            Err(e) => {
                match &e {
                    FleetError::Store(inner) => {
                        tracing::error!(%agent, error = %inner, "storage failed during ingest")
                    }
                    other => tracing::warn!(%agent, error = %other, "session ended"),
                }
                let _ = tx.send(Err(Status::from(e))).await;
            }
        }
        let removed = {
            let mut sessions = self.lock();
            if sessions.get(&agent).is_some_and(|s| s.id == session_id) {
                sessions.remove(&agent);
                true
            } else {
                false
            }
        };
        if removed {
            self.departed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(agent.clone(), (region.clone(), now_ms()));
        }
        if removed {
            self.reassign(&region);
            self.load_event(LoadEvent::Gone {
                agent: agent.clone(),
            })
            .await;
        }
    }
}

/// Header naming the probing region on every HTTP check request, so a
/// target's logs can tell regions (and probe traffic) apart (contract).
pub const REGION_HEADER: &str = "X-Vantage-Region";

/// The check as sent to an agent of `region`: HTTP requests carry
/// [`REGION_HEADER`] unless the check sets that header itself.
fn assigned_check(check: &vantage_proto::spec::Check, region: &str) -> v1::Check {
    let mut wire = v1::Check::from(check);
    if let Some(v1::check::Probe::Http(h)) = wire.probe.as_mut() {
        if !h
            .headers
            .iter()
            .any(|x| x.name.eq_ignore_ascii_case(REGION_HEADER))
        {
            h.headers.push(v1::Header {
                name: REGION_HEADER.into(),
                value: region.into(),
            });
        }
    }
    wire
}

impl From<AgentAuthError> for FleetError {
    fn from(e: AgentAuthError) -> Self {
        match e {
            AgentAuthError::Unauthenticated => FleetError::Unauthenticated(e.to_string()),
            AgentAuthError::Forbidden(m) => FleetError::Forbidden(m),
        }
    }
}

/// The refusal of a session from an address past its failed-authentication
/// allowance: `RESOURCE_EXHAUSTED` with `retry-after` seconds, as the HTTP
/// API's 429.
fn auth_limited(retry_after: u64) -> Status {
    let mut status = Status::resource_exhausted(format!(
        "too many failed agent authentications from this address: retry in {retry_after} s"
    ));
    if let Ok(v) = retry_after.to_string().parse() {
        status.metadata_mut().insert("retry-after", v);
    }
    status
}

fn truncate(s: &str) -> String {
    s.chars().take(70).collect()
}

/// The tonic service.
pub struct FleetService {
    fleet: Arc<Fleet>,
    coordinator_version: &'static str,
}

impl FleetService {
    /// Serves sessions for `fleet`.
    pub fn new(fleet: Arc<Fleet>) -> Self {
        FleetService {
            fleet,
            coordinator_version: vantage_proto::build_info::VERSION,
        }
    }
}

#[tonic::async_trait]
impl v1::fleet_server::Fleet for FleetService {
    type SessionStream = ReceiverStream<Result<CoordinatorMessage, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        // The token (or client certificate) first: without a valid one, not
        // even Hello is read.
        let auth = self.fleet.auth();
        let cert_names = request
            .peer_certs()
            .and_then(|certs| certs.first().map(|leaf| crate::tls::dns_names(leaf)));
        let credential = match auth.authenticate(request.metadata(), cert_names.as_deref()) {
            Ok(c) => c,
            Err(e) => {
                let peer = request.remote_addr();
                let limited = peer.and_then(|p| {
                    self.fleet
                        .auth_failures
                        .fail(p.ip(), std::time::Instant::now())
                });
                if let Some(retry_after) = limited {
                    tracing::debug!(
                        ?peer,
                        retry_after,
                        "agent session refused: too many failed authentications"
                    );
                    return Err(auth_limited(retry_after));
                }
                tracing::warn!(?peer, "agent session refused: no valid token");
                return Err(FleetError::from(e).into());
            }
        };
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
            .await
            .map_err(|_| FleetError::Handshake("no Hello within 10 s".into()))?
            .map_err(|s| FleetError::Handshake(format!("reading Hello: {}", s.message())))?;
        let hello = match first.and_then(|m| m.msg) {
            Some(agent_message::Msg::Hello(h)) => h,
            _ => {
                return Err(FleetError::Handshake("the first message must be Hello".into()).into())
            }
        };
        let capabilities = Fleet::validate_hello(&hello)?;
        if let Err(e) = auth.authorize(&credential, &hello.agent, &hello.region) {
            tracing::warn!(credential = ?credential,
                hello_agent = %hello.agent, hello_region = %hello.region, error = %e,
                "agent session refused: identity does not match the token or certificate");
            return Err(FleetError::from(e).into());
        }
        let version_compatible = match vantage_proto::build_info::compatibility(&hello.version) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(agent = %hello.agent, region = %hello.region,
                    coordinator_version = vantage_proto::build_info::VERSION,
                    "agent runs an incompatible version: {e}; serving it, but upgrade it (coordinator first, then agents)");
                false
            }
        };
        let fleet = Arc::clone(&self.fleet);
        let (last_stored_seq, ever_assigned) = {
            let store = Arc::clone(&fleet.store);
            let agent = hello.agent.clone();
            tokio::task::spawn_blocking(move || {
                Ok::<_, StoreError>((store.last_seq(&agent)?, store.assigned_checks(&agent)?))
            })
            .await
            .map_err(|_| Status::internal("internal error"))?
            .map_err(FleetError::from)?
        };
        fleet
            .assigned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(hello.agent.clone())
            .or_default()
            .extend(ever_assigned);
        let (tx, rx) = mpsc::channel(SESSION_OUTBOUND_CAPACITY);
        let welcome = CoordinatorMessage {
            msg: Some(coordinator_message::Msg::Welcome(v1::Welcome {
                coordinator_version: self.coordinator_version.into(),
                last_stored_seq,
                window_ms: u32::try_from(fleet.config.current().server.window.as_millis())
                    .unwrap_or(u32::MAX),
            })),
        };
        // Invariant: the channel is new and empty, so the first send fits.
        tx.try_send(Ok(welcome)).expect("fresh channel has room");

        let session_id = fleet.next_session.fetch_add(1, Ordering::Relaxed);
        let now = now_ms();
        let previous = fleet.lock().insert(
            hello.agent.clone(),
            Session {
                id: session_id,
                info: AgentInfo {
                    name: hello.agent.clone(),
                    region: hello.region.clone(),
                    version: hello.version.clone(),
                    version_compatible,
                    connected_unix_ms: now,
                    last_seen_unix_ms: now,
                    checks: Vec::new(),
                    spool_dropped_windows_total: hello.spool_dropped_windows_total,
                    spool_pending_batches: 0,
                    ingest: IngestCounts::default(),
                },
                capabilities,
                credential,
                tx: tx.clone(),
            },
        );
        if let Some(prev) = previous {
            tracing::info!(agent = %hello.agent, "agent reconnected; replacing its older session");
            let _ = prev.tx.try_send(Err(Status::aborted(
                "replaced by a newer session of the same agent",
            )));
            if prev.info.region != hello.region {
                fleet.reassign(&prev.info.region);
            }
        }
        tracing::info!(agent = %hello.agent, region = %hello.region, version = %hello.version,
            last_stored_seq, "agent connected");
        fleet.reassign(&hello.region);
        tokio::spawn(Arc::clone(&fleet).serve(session_id, hello, inbound, tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendezvous_moves_only_the_leaving_agents_checks() {
        let agents = ["a1", "a2", "a3"];
        let owner = |check: &str, pool: &[&str]| -> String {
            pool.iter()
                .max_by_key(|a| fnv1a(&[check, a]))
                .unwrap()
                .to_string()
        };
        let checks: Vec<String> = (0..200).map(|i| format!("check-{i}")).collect();
        let before: Vec<_> = checks.iter().map(|c| owner(c, &agents)).collect();
        for a in agents {
            let n = before.iter().filter(|o| *o == a).count();
            assert!(n > 30, "{a} owns only {n} of 200");
        }
        let after: Vec<_> = checks.iter().map(|c| owner(c, &["a1", "a3"])).collect();
        for (b, a) in before.iter().zip(&after) {
            if b != "a2" {
                assert_eq!(b, a, "a check not owned by a2 moved");
            }
        }
    }
}
