//! Distributed load runs: `POST /api/v1/loadtests` and what follows.
//!
//! A run is created from a load file (the agent's format, parsed by the same
//! code) and a list of regions. The coordinator checks the file against its
//! own `[load]` allow-list and caps, picks every connected agent of those
//! regions, and sends each a `LoadStart` with its index and one start instant
//! two seconds ahead. Agents stream one `LoadProgress` per second; each is
//! merged into the run's fleet-wide [`Stats`] as it arrives, and the file's
//! thresholds are evaluated on the merged data after every report: a failing
//! `abort_on_fail` threshold sends `LoadAbort` to every agent of the run. The
//! run ends when every agent has sent its final message; its result is
//! stored in sled (tree `loadruns`) and served by `GET /api/v1/loadtests/{id}`.
//!
//! Failure handling: an agent that refuses its share, loses its session or
//! stays silent for [`SILENCE_LIMIT`] ends the run for everyone (state
//! `error`, the others aborted): a fleet-wide figure missing a region is not
//! the answer that was asked for. An agent runs one load run at a time, so a
//! run needing a busy agent is refused (409).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use vantage_agent::load::file::{self, LoadPlan};
use vantage_agent::load::metrics::Stats;
use vantage_agent::load::output::{self, ThresholdResult};
use vantage_agent::load::safety::AllowedHosts;
use vantage_agent::load::{remote, report};
use vantage_agent::load::{threshold, Verdict};
use vantage_proto::histogram;
use vantage_proto::v1::{self, coordinator_message, CoordinatorMessage};

use crate::fleet::{Fleet, LoadEvent};
use crate::reload::LiveConfig;
use crate::store::{SledStore, StoreError};

/// Time between the creation of a run and its agreed start.
pub const START_LEAD: Duration = Duration::from_secs(2);
/// An agent silent this long during a run ends it.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(10);
/// Largest load file accepted by the API.
pub const MAX_FILE_BYTES: usize = 1024 * 1024;
/// Finished runs kept in memory (older ones are read from the store).
const KEEP_IN_MEMORY: usize = 50;

/// Stored load-run results.
pub trait LoadRunStore: Send + Sync + 'static {
    /// Stores the result of run `id` durably.
    fn put_load_run(&self, id: &str, result: &[u8]) -> Result<(), StoreError>;
    /// The stored result of run `id`.
    fn load_run(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Ids of stored runs, oldest first.
    fn load_run_ids(&self) -> Result<Vec<String>, StoreError>;
    /// Stores what the HTML report of run `id` needs beyond its result
    /// (per-second series per region, the merged stats; JSON).
    fn put_load_report(&self, id: &str, report: &[u8]) -> Result<(), StoreError>;
    /// The stored report data of run `id`.
    fn load_report(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError>;
}

impl LoadRunStore for SledStore {
    fn put_load_run(&self, id: &str, result: &[u8]) -> Result<(), StoreError> {
        self.db().open_tree("loadruns")?.insert(id, result)?;
        self.db().flush()?;
        Ok(())
    }

    fn load_run(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .db()
            .open_tree("loadruns")?
            .get(id)?
            .map(|v| v.to_vec()))
    }

    fn load_run_ids(&self) -> Result<Vec<String>, StoreError> {
        let mut ids = Vec::new();
        for key in self.db().open_tree("loadruns")?.iter().keys() {
            ids.push(String::from_utf8_lossy(&key?).into_owned());
        }
        Ok(ids)
    }

    // A tree of its own: the result stays small for listing, and the
    // series (a few bytes per second and region) are read only for a report.
    fn put_load_report(&self, id: &str, report: &[u8]) -> Result<(), StoreError> {
        self.db().open_tree("loadreports")?.insert(id, report)?;
        self.db().flush()?;
        Ok(())
    }

    fn load_report(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .db()
            .open_tree("loadreports")?
            .get(id)?
            .map(|v| v.to_vec()))
    }
}

/// Why a run could not be created: an HTTP status and a message for the user.
#[derive(Debug)]
pub struct Refused {
    /// 400, 409 or 503.
    pub status: u16,
    /// What to fix.
    pub message: String,
}

fn refused(status: u16, message: impl Into<String>) -> Refused {
    Refused {
        status,
        message: message.into(),
    }
}

struct AgentState {
    name: String,
    region: String,
    seconds: u64,
    done: bool,
    aborted: bool,
    error: Option<String>,
    totals: Stats,
    last_report: tokio::time::Instant,
}

struct Run {
    id: String,
    regions: Vec<String>,
    plan: LoadPlan,
    created_unix_ms: i64,
    start_unix_ms: i64,
    start: tokio::time::Instant,
    agents: Vec<AgentState>,
    merged: Stats,
    /// Per-second figures per region, for the HTML report.
    series: Vec<RegionSeries>,
    /// Set when an abort was sent: why, when, and whether a threshold did it.
    abort: Option<(String, i64, bool)>,
    finished: Option<Value>,
}

/// The load runs of this coordinator.
pub struct LoadTests {
    fleet: Arc<Fleet>,
    store: Arc<dyn LoadRunStore>,
    config: Arc<LiveConfig>,
    runs: Mutex<HashMap<String, Run>>,
}

impl LoadTests {
    /// Starts the manager: it follows the agents' reports until `stop`.
    pub fn start(
        fleet: Arc<Fleet>,
        store: Arc<dyn LoadRunStore>,
        config: Arc<LiveConfig>,
        stop: CancellationToken,
    ) -> Arc<Self> {
        let events = fleet.load_events();
        let me = Arc::new(LoadTests {
            fleet,
            store,
            config,
            runs: Mutex::new(HashMap::new()),
        });
        tokio::spawn(Arc::clone(&me).follow(events, stop));
        me
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Run>> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Validates and starts a run; returns its view.
    pub async fn create(&self, file_text: &str, regions: &[String]) -> Result<Value, Refused> {
        if file_text.len() > MAX_FILE_BYTES {
            return Err(refused(
                400,
                format!("file: larger than {MAX_FILE_BYTES} bytes"),
            ));
        }
        // One config for the whole validation, whatever a reload does meanwhile.
        let config = self.config.current();
        let allowed = AllowedHosts::new(&config.load.allowed_hosts);
        let plan = file::parse(file_text, std::path::Path::new("loadtest.toml"), &allowed)
            .map_err(|e| refused(400, format!("file: {e}")))?;
        let vus: u64 = plan.scenarios.iter().map(|s| s.executor.max_vus()).sum();
        if vus > config.load.max_vus {
            return Err(refused(
                400,
                format!(
                "the scenarios need up to {vus} VUs, above the coordinator's load.max_vus of {}",
                config.load.max_vus
            ),
            ));
        }
        let rate: f64 = plan
            .scenarios
            .iter()
            .filter_map(file::Scenario::max_request_rate)
            .sum();
        if rate > config.load.max_rate as f64 {
            return Err(refused(400, format!(
                "the scenarios schedule up to {rate} requests per second, above the coordinator's load.max_rate of {}",
                config.load.max_rate
            )));
        }
        let length = plan.planned_length();
        if length > config.load.max_duration {
            return Err(refused(
                400,
                format!(
                    "the scenarios run for {}, above the coordinator's load.max_duration of {}",
                    vantage_proto::spec::humantime_like(length),
                    vantage_proto::spec::humantime_like(config.load.max_duration)
                ),
            ));
        }
        if regions.is_empty() {
            return Err(refused(400, "regions: name at least one region"));
        }
        if let Some(bad) = regions.iter().find(|r| !vantage_proto::is_valid_name(r)) {
            return Err(refused(
                400,
                format!("regions: {bad:?} is not a region name"),
            ));
        }
        // Checked before every run: a proof removed since the last run
        // stops the next one.
        if let Some(token) = &config.load.ownership_token {
            crate::ownership::verify(&plan, token, config.load.ownership_dns_server)
                .await
                .map_err(|m| refused(400, m))?;
        }
        let mut agents: Vec<(String, String)> = self
            .fleet
            .agents()
            .into_iter()
            .filter(|a| regions.contains(&a.region))
            .map(|a| (a.region, a.name))
            .collect();
        agents.sort();
        if let Some(empty) = regions
            .iter()
            .find(|r| !agents.iter().any(|(ar, _)| ar == *r))
        {
            return Err(refused(
                409,
                format!("region {empty:?} has no connected agent"),
            ));
        }
        let mut runs = self.lock();
        for run in runs.values().filter(|r| r.finished.is_none()) {
            if let Some(a) = run
                .agents
                .iter()
                .find(|a| agents.iter().any(|(_, n)| *n == a.name))
            {
                return Err(refused(
                    409,
                    format!("agent {} is busy with load run {}", a.name, run.id),
                ));
            }
        }
        let id = format!("lt-{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
        let now = crate::now_ms();
        let start_unix_ms = now + START_LEAD.as_millis() as i64;
        let count = u32::try_from(agents.len()).unwrap_or(u32::MAX);
        for (i, (_, name)) in agents.iter().enumerate() {
            let msg = CoordinatorMessage {
                msg: Some(coordinator_message::Msg::LoadStart(v1::LoadStart {
                    run_id: id.clone(),
                    plan_toml: file_text.to_owned(),
                    agent_index: i as u32,
                    agent_count: count,
                    start_unix_ms,
                })),
            };
            if !self.fleet.send_to(name, msg) {
                for (_, other) in &agents[..i] {
                    self.send_abort(other, &id, "the run could not start on every agent");
                }
                return Err(refused(
                    503,
                    format!("agent {name} could not be reached; nothing started"),
                ));
            }
        }
        tracing::info!(run = %id, agents = agents.len(), ?regions, "load run created");
        let run = Run {
            id: id.clone(),
            regions: regions.to_vec(),
            plan,
            created_unix_ms: now,
            start_unix_ms,
            start: tokio::time::Instant::now() + START_LEAD,
            agents: agents
                .into_iter()
                .map(|(region, name)| AgentState {
                    name,
                    region,
                    seconds: 0,
                    done: false,
                    aborted: false,
                    error: None,
                    totals: Stats::default(),
                    last_report: tokio::time::Instant::now() + START_LEAD,
                })
                .collect(),
            merged: Stats::default(),
            series: regions.iter().map(|r| RegionSeries::new(r)).collect(),
            abort: None,
            finished: None,
        };
        let view = view(&run);
        runs.insert(id, run);
        Ok(view)
    }

    /// The live view or stored result of run `id`.
    pub fn get(&self, id: &str) -> Option<Value> {
        if let Some(run) = self.lock().get(id) {
            return Some(run.finished.clone().unwrap_or_else(|| view(run)));
        }
        if !remote::valid_run_id(id) {
            return None;
        }
        let bytes = self.store.load_run(id).ok()??;
        serde_json::from_slice(&bytes).ok()
    }

    /// The HTML report of run `id`: a live run's from memory, a finished
    /// run's from what is stored.
    pub fn report(&self, id: &str) -> Option<String> {
        // The data is copied under the lock and drawn after it.
        let live = self
            .lock()
            .get(id)
            .filter(|r| r.finished.is_none())
            .map(live_report);
        if let Some(data) = live {
            return Some(report::render(&data));
        }
        let result = self.get(id)?;
        let stored = self.store.load_report(id).ok().flatten();
        Some(report::render(&finished_report(&result, stored.as_deref())))
    }

    /// Every run: id, state and creation time, newest first.
    pub fn list(&self) -> Vec<Value> {
        let mut out: HashMap<String, Value> = HashMap::new();
        for id in self.store.load_run_ids().unwrap_or_default() {
            if let Some(v) = self.get(&id) {
                out.insert(id, v);
            }
        }
        for run in self.lock().values() {
            out.insert(
                run.id.clone(),
                run.finished.clone().unwrap_or_else(|| view(run)),
            );
        }
        let mut list: Vec<Value> = out
            .into_values()
            .map(|v| {
                json!({
                    "id": v["id"], "state": v["state"], "regions": v["regions"],
                    "created_unix_ms": v["created_unix_ms"], "verdict": v["verdict"],
                })
            })
            .collect();
        list.sort_by_key(|v| std::cmp::Reverse(v["created_unix_ms"].as_i64().unwrap_or(0)));
        list
    }

    fn send_abort(&self, agent: &str, run_id: &str, reason: &str) {
        let msg = CoordinatorMessage {
            msg: Some(coordinator_message::Msg::LoadAbort(v1::LoadAbort {
                run_id: run_id.into(),
                reason: reason.into(),
            })),
        };
        if !self.fleet.send_to(agent, msg) {
            tracing::warn!(%agent, run = %run_id, "could not send the abort");
        }
    }

    /// Sends an abort to every agent of `run` still running.
    fn abort(&self, run: &mut Run, reason: String, by_threshold: bool) {
        if run.abort.is_some() {
            return;
        }
        tracing::warn!(run = %run.id, %reason, "aborting load run");
        for a in run.agents.iter().filter(|a| !a.done) {
            self.send_abort(&a.name, &run.id, &reason);
        }
        run.abort = Some((reason, crate::now_ms(), by_threshold));
    }

    async fn follow(
        self: Arc<Self>,
        mut events: mpsc::Receiver<LoadEvent>,
        stop: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                e = events.recv() => match e {
                    Some(e) => self.on_event(e),
                    None => return,
                },
                _ = tick.tick() => self.watchdog(),
            }
        }
    }

    fn on_event(&self, event: LoadEvent) {
        let mut runs = self.lock();
        match event {
            LoadEvent::Progress { agent, progress } => {
                let Some(run) = runs
                    .get_mut(&progress.run_id)
                    .filter(|r| r.finished.is_none())
                else {
                    tracing::debug!(%agent, run = %progress.run_id, "report for an unknown or finished load run");
                    return;
                };
                let Some(i) = run.agents.iter().position(|a| a.name == agent) else {
                    tracing::warn!(%agent, run = %run.id, "report from an agent outside the run");
                    return;
                };
                let a = &mut run.agents[i];
                a.last_report = tokio::time::Instant::now();
                a.seconds = a.seconds.max(progress.second);
                if let Some(w) = &progress.stats {
                    match remote::from_wire(w) {
                        Ok((stats, _vus)) => {
                            a.totals.merge(&stats);
                            run.merged.merge(&stats);
                            let region = a.region.clone();
                            // A second beyond any possible run is counted
                            // in the totals but not drawn.
                            if let Some(rs) = run
                                .series
                                .iter_mut()
                                .find(|s| s.region == region && progress.second <= MAX_SECOND)
                            {
                                rs.add(progress.second, &stats);
                            }
                        }
                        Err(e) => {
                            a.error = Some(format!("invalid report: {e}"));
                        }
                    }
                }
                if progress.done {
                    a.done = true;
                    a.aborted = progress.aborted;
                    if !progress.error.is_empty() {
                        a.error = Some(truncate(&progress.error));
                    }
                }
                let failed = run.agents[i].error.clone();
                if let Some(e) = failed {
                    let reason = format!("agent {agent} failed: {e}");
                    self.abort(run, reason, false);
                }
                settle_series(run);
                self.check_thresholds(run);
                self.finish_if_done(run);
            }
            LoadEvent::Gone { agent } => {
                for run in runs.values_mut().filter(|r| r.finished.is_none()) {
                    if let Some(a) = run.agents.iter_mut().find(|a| a.name == agent && !a.done) {
                        a.done = true;
                        a.error = Some("the agent's session ended during the run".into());
                        let reason = format!("agent {agent} disconnected");
                        self.abort(run, reason, false);
                        self.finish_if_done(run);
                    }
                }
            }
        }
        self.trim(&mut runs);
    }

    fn watchdog(&self) {
        let mut runs = self.lock();
        let now = tokio::time::Instant::now();
        for run in runs.values_mut().filter(|r| r.finished.is_none()) {
            let silent: Vec<String> = run
                .agents
                .iter()
                .filter(|a| !a.done && now.saturating_duration_since(a.last_report) > SILENCE_LIMIT)
                .map(|a| a.name.clone())
                .collect();
            for name in silent {
                if let Some(a) = run.agents.iter_mut().find(|a| a.name == name) {
                    a.done = true;
                    a.error = Some(format!("no report for {SILENCE_LIMIT:?}"));
                }
                self.abort(run, format!("agent {name} stopped reporting"), false);
            }
            self.finish_if_done(run);
        }
    }

    fn check_thresholds(&self, run: &mut Run) {
        if run.abort.is_some() {
            return;
        }
        let elapsed = tokio::time::Instant::now().saturating_duration_since(run.start);
        let failing = run.plan.thresholds.iter().find(|d| {
            d.abort_on_fail
                && elapsed >= d.delay_abort_eval
                && !threshold::passes(d, &run.merged, elapsed).1
        });
        if let Some(d) = failing {
            let observed = threshold::passes(d, &run.merged, elapsed).0;
            let reason = format!(
                "threshold {}: {} failed (observed {observed:.3}) on the merged data",
                d.metric.name(),
                d.text
            );
            self.abort(run, reason, true);
        }
    }

    fn finish_if_done(&self, run: &mut Run) {
        if run.finished.is_some() || !run.agents.iter().all(|a| a.done) {
            return;
        }
        let finished_ms = crate::now_ms();
        for rs in &mut run.series {
            rs.settle(u64::MAX);
            // Agents do not say how long their last interval was: take it
            // from the end of the run, so a partial second is not drawn as
            // a drop in the request rate.
            if let Some(last) = rs.series.points.last_mut() {
                let began = i128::from(last.t.saturating_sub(1)) * 1000;
                let into = i128::from(finished_ms - run.start_unix_ms) - began;
                last.len_ms = into.clamp(1, 1000) as u64;
            }
        }
        let elapsed = Duration::from_millis(
            u64::try_from(finished_ms - run.start_unix_ms)
                .unwrap_or(0)
                .max(1),
        );
        let results: Vec<ThresholdResult> = run
            .plan
            .thresholds
            .iter()
            .map(|d| {
                let (observed, ok) = threshold::passes(d, &run.merged, elapsed);
                ThresholdResult {
                    def: d.clone(),
                    observed,
                    ok,
                }
            })
            .collect();
        let agent_error = run
            .agents
            .iter()
            .find_map(|a| a.error.as_ref().map(|e| format!("{}: {e}", a.name)));
        let by_threshold = run.abort.as_ref().is_some_and(|a| a.2);
        let (state, verdict) = if by_threshold {
            ("aborted", "thresholds_failed")
        } else if agent_error.is_some() {
            ("error", "error")
        } else if results.iter().any(|r| !r.ok) {
            ("failed", "thresholds_failed")
        } else {
            ("passed", "passed")
        };
        let summary_verdict = if verdict == "passed" {
            Verdict::Passed
        } else {
            Verdict::ThresholdsFailed
        };
        let mut summary = format!(
            "\n  distributed load run {}: {} agent(s) in {}\n",
            run.id,
            run.agents.len(),
            run.regions.join(", ")
        );
        for a in &run.agents {
            summary.push_str(&format!(
                "    * {} ({}): {} requests{}\n",
                a.name,
                a.region,
                a.totals.reqs,
                a.error
                    .as_ref()
                    .map(|e| format!(", error: {e}"))
                    .unwrap_or_default()
            ));
        }
        summary.push_str(&output::summary(
            &[],
            &run.merged,
            &results,
            elapsed,
            summary_verdict,
            by_threshold,
        ));
        if let Some(e) = &agent_error {
            summary.push_str(&format!("  error: {e}\n"));
        }
        let mut v = view(run);
        v["state"] = json!(state);
        v["verdict"] = json!(verdict);
        v["finished_unix_ms"] = json!(finished_ms);
        v["elapsed_s"] = json!(round3(elapsed.as_secs_f64()));
        v["thresholds"] = json!(results
            .iter()
            .map(|r| json!({
                "metric": r.def.metric.name(),
                "threshold": r.def.text,
                "abort_on_fail": r.def.abort_on_fail,
                "observed": if r.observed.is_finite() { json!(round3(r.observed)) } else { Value::Null },
                "ok": r.ok,
            }))
            .collect::<Vec<_>>());
        v["summary"] = json!(summary);
        let b64 = |h: &hdrhistogram::Histogram<u64>| {
            base64::engine::general_purpose::STANDARD.encode(histogram::encode(h))
        };
        v["histograms"] = json!({
            "http_req_duration": {
                "merged": b64(&run.merged.duration),
                "agents": run.agents.iter().map(|a| (a.name.clone(), json!(b64(&a.totals.duration)))).collect::<serde_json::Map<_, _>>(),
            }
        });
        match serde_json::to_vec(&v) {
            Ok(bytes) => {
                if let Err(e) = self.store.put_load_run(&run.id, &bytes) {
                    tracing::error!(run = %run.id, error = %e, "storing the load run result failed");
                }
            }
            Err(e) => {
                tracing::error!(run = %run.id, error = %e, "encoding the load run result failed")
            }
        }
        match serde_json::to_vec(&StoredReport::of(run)) {
            Ok(bytes) => {
                if let Err(e) = self.store.put_load_report(&run.id, &bytes) {
                    tracing::error!(run = %run.id, error = %e, "storing the load run report failed");
                }
            }
            Err(e) => {
                tracing::error!(run = %run.id, error = %e, "encoding the load run report failed")
            }
        }
        tracing::info!(run = %run.id, %state, reqs = run.merged.reqs, "load run finished");
        run.finished = Some(v);
    }

    /// Drops the oldest finished runs from memory (they stay in the store).
    fn trim(&self, runs: &mut HashMap<String, Run>) {
        let mut finished: Vec<(i64, String)> = runs
            .values()
            .filter(|r| r.finished.is_some())
            .map(|r| (r.created_unix_ms, r.id.clone()))
            .collect();
        if finished.len() > KEEP_IN_MEMORY {
            finished.sort();
            for (_, id) in &finished[..finished.len() - KEEP_IN_MEMORY] {
                runs.remove(id);
            }
        }
    }
}

/// Most seconds of a region held back waiting for a slower agent of the
/// same region; past it the oldest is drawn with what arrived (each held
/// second keeps a latency histogram of some 100 kB).
const MAX_PENDING_SECONDS: usize = 30;

/// Highest second of a run drawn in its report: a day (the longest
/// `max_duration`) plus the graceful stop, with room to spare.
const MAX_SECOND: u64 = 2 * 86_400;

/// One second of a region while its agents' reports come in.
struct PendingSecond {
    reqs: u64,
    failed: u64,
    duration: hdrhistogram::Histogram<u64>,
}

/// The per-second figures of one region: seconds every agent of the region
/// has reported are settled into `series`; the others wait in `pending`, so
/// a region's p99 is that of the union of its agents' histograms.
struct RegionSeries {
    region: String,
    series: report::Series,
    pending: std::collections::BTreeMap<u64, PendingSecond>,
}

impl RegionSeries {
    fn new(region: &str) -> Self {
        RegionSeries {
            region: region.to_owned(),
            series: report::Series::new(region),
            pending: Default::default(),
        }
    }

    fn add(&mut self, second: u64, stats: &Stats) {
        let p = self.pending.entry(second).or_insert_with(|| PendingSecond {
            reqs: 0,
            failed: 0,
            duration: histogram::new_latency(),
        });
        p.reqs = p.reqs.saturating_add(stats.reqs);
        p.failed = p.failed.saturating_add(stats.failed);
        histogram::merge(&mut p.duration, &stats.duration);
    }

    /// Settles every second up to `upto` (and the oldest past the cap).
    fn settle(&mut self, upto: u64) {
        loop {
            let over_cap = self.pending.len() > MAX_PENDING_SECONDS;
            let Some(entry) = self.pending.first_entry() else {
                break;
            };
            if *entry.key() > upto && !over_cap {
                break;
            }
            let (t, p) = entry.remove_entry();
            if self.series.points.last().is_some_and(|l| l.t >= t) {
                // A second reported after it was settled (an agent later
                // than the cap allows): counted in the totals, not drawn.
                continue;
            }
            self.series
                .points
                .push(report::Point::from_parts(t, p.reqs, p.failed, &p.duration));
        }
    }

    /// The settled series and what is still pending, for a live report.
    fn snapshot(&self) -> report::Series {
        let mut s = self.series.clone();
        for (t, p) in &self.pending {
            s.points
                .push(report::Point::from_parts(*t, p.reqs, p.failed, &p.duration));
        }
        s
    }
}

/// Settles the seconds every agent of a region has reported (or will not).
fn settle_series(run: &mut Run) {
    for rs in &mut run.series {
        let upto = run
            .agents
            .iter()
            .filter(|a| a.region == rs.region && !a.done)
            .map(|a| a.seconds)
            .min()
            .unwrap_or(u64::MAX);
        rs.settle(upto);
    }
}

/// What a finished run's report needs besides its stored result (tree
/// `loadreports`): the merged stats as the wire message (histograms in the
/// HdrHistogram V2 + deflate codec) and the series per region, both base64.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredReport {
    planned_ms: u64,
    open_model: bool,
    scenarios: Vec<(String, String)>,
    stats: String,
    series: Vec<(String, String)>,
}

impl StoredReport {
    fn of(run: &Run) -> Self {
        let b64 = |b: Vec<u8>| base64::engine::general_purpose::STANDARD.encode(b);
        StoredReport {
            planned_ms: u64::try_from(run.plan.planned_length().as_millis()).unwrap_or(u64::MAX),
            open_model: run
                .plan
                .scenarios
                .iter()
                .any(|s| s.executor.is_open_model()),
            scenarios: scenario_rows(&run.plan)
                .into_iter()
                .map(|r| (r.name, r.executor))
                .collect(),
            stats: b64(prost::Message::encode_to_vec(&remote::to_wire(
                &run.merged,
                0,
            ))),
            series: run
                .series
                .iter()
                .map(|rs| (rs.region.clone(), b64(rs.series.encode())))
                .collect(),
        }
    }
}

fn scenario_rows(plan: &LoadPlan) -> Vec<report::ScenarioRow> {
    plan.scenarios
        .iter()
        .map(|s| report::ScenarioRow {
            name: s.name.clone(),
            executor: s.executor.name().to_owned(),
        })
        .collect()
}

/// The report of a live run, from memory: thresholds on the data so far.
fn live_report(run: &Run) -> report::RunData {
    let view = view(run);
    let elapsed = tokio::time::Instant::now().saturating_duration_since(run.start);
    report::RunData {
        title: format!("distributed load run {}", run.id),
        id: run.id.clone(),
        state: format!("{} (live)", view["state"].as_str().unwrap_or("running")),
        ok: None,
        started_unix_ms: Some(run.start_unix_ms),
        planned: run.plan.planned_length(),
        elapsed,
        scenarios: scenario_rows(&run.plan),
        targets: run.plan.origins(),
        regions: run.series.iter().map(RegionSeries::snapshot).collect(),
        totals: run.merged.clone(),
        vus_max: None,
        open_model: run
            .plan
            .scenarios
            .iter()
            .any(|s| s.executor.is_open_model()),
        thresholds: run
            .plan
            .thresholds
            .iter()
            .map(|d| {
                let (observed, ok) = threshold::passes(d, &run.merged, elapsed);
                report::ThresholdRow::from(&ThresholdResult {
                    def: d.clone(),
                    observed,
                    ok,
                })
            })
            .collect(),
        notes: notes(&view),
    }
}

/// The abort reason and agent errors of a run's view.
fn notes(view: &Value) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(reason) = view["abort"]["reason"].as_str() {
        notes.push(format!("aborted: {reason}"));
    }
    for a in view["agents"].as_array().into_iter().flatten() {
        if let Some(e) = a["error"].as_str() {
            notes.push(format!(
                "agent {} ({}): {e}",
                a["name"].as_str().unwrap_or("?"),
                a["region"].as_str().unwrap_or("?")
            ));
        }
    }
    notes
}

/// The report of a finished run from its stored result and report data.
/// Data that cannot be read is left out (the page says "no data") rather
/// than refusing the page; a run stored before reports existed still shows
/// its merged latency distribution.
fn finished_report(result: &Value, stored: Option<&[u8]>) -> report::RunData {
    let stored: Option<StoredReport> = stored.and_then(|b| serde_json::from_slice(b).ok());
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.decode(s).ok();
    let mut totals = stored
        .as_ref()
        .and_then(|r| b64(&r.stats))
        .and_then(|b| <v1::LoadStats as prost::Message>::decode(b.as_slice()).ok())
        .and_then(|w| remote::from_wire(&w).ok())
        .map(|(s, _)| s);
    if totals.is_none() {
        let mut s = Stats::default();
        if let Some(h) = result["histograms"]["http_req_duration"]["merged"]
            .as_str()
            .and_then(b64)
            .and_then(|b| histogram::decode(&b).ok())
        {
            s.duration = h;
        }
        let m = &result["metrics"];
        s.reqs = m["http_reqs"].as_u64().unwrap_or(0);
        s.failed = m["http_req_failed"].as_u64().unwrap_or(0).min(s.reqs);
        s.iterations = m["iterations"].as_u64().unwrap_or(0);
        s.dropped = m["dropped_iterations"].as_u64().unwrap_or(0);
        totals = Some(s);
    }
    let regions: Vec<report::Series> = match &stored {
        Some(r) => r
            .series
            .iter()
            .map(|(region, points)| {
                b64(points)
                    .and_then(|b| report::Series::decode(region.as_str(), &b).ok())
                    .unwrap_or_else(|| report::Series::new(region.as_str()))
            })
            .collect(),
        None => result["regions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(report::Series::new)
            .collect(),
    };
    let state = result["state"].as_str().unwrap_or("unknown");
    let thresholds = result["thresholds"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let metric = t["metric"].as_str().unwrap_or("?");
            report::ThresholdRow {
                metric: metric.to_owned(),
                threshold: t["threshold"].as_str().unwrap_or("?").to_owned(),
                observed: t["observed"].as_f64(),
                unit: report::unit_of(metric),
                ok: t["ok"].as_bool().unwrap_or(false),
                abort_on_fail: t["abort_on_fail"].as_bool().unwrap_or(false),
            }
        })
        .collect();
    let elapsed = result["elapsed_s"]
        .as_f64()
        .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e9)
        .map_or(Duration::ZERO, Duration::from_secs_f64);
    report::RunData {
        title: format!(
            "distributed load run {}",
            result["id"].as_str().unwrap_or("?")
        ),
        id: result["id"].as_str().unwrap_or("").to_owned(),
        state: match result["verdict"].as_str() {
            Some(v) if v != state => format!("{state} ({})", v.replace('_', " ")),
            _ => state.to_owned(),
        },
        ok: Some(state == "passed"),
        started_unix_ms: result["start_unix_ms"].as_i64(),
        planned: stored
            .as_ref()
            .map_or(Duration::ZERO, |r| Duration::from_millis(r.planned_ms)),
        elapsed,
        scenarios: stored
            .as_ref()
            .map(|r| {
                r.scenarios
                    .iter()
                    .map(|(name, executor)| report::ScenarioRow {
                        name: name.clone(),
                        executor: executor.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        targets: result["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        regions,
        totals: totals.unwrap_or_default(),
        vus_max: None,
        open_model: stored.as_ref().is_some_and(|r| r.open_model),
        thresholds,
        notes: notes(result),
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(2000).collect()
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn ms(us: u64) -> f64 {
    round3(us as f64 / 1000.0)
}

/// Requests, failures and latency percentiles per region so far: the
/// agents of each region merged.
fn by_region(run: &Run) -> Vec<Value> {
    let mut regions: Vec<(&str, Stats)> = Vec::new();
    for a in &run.agents {
        match regions.iter_mut().find(|(r, _)| *r == a.region) {
            Some((_, s)) => s.merge(&a.totals),
            None => {
                let mut s = Stats::default();
                s.merge(&a.totals);
                regions.push((&a.region, s));
            }
        }
    }
    regions
        .iter()
        .map(|(region, s)| {
            let p = |q: f64| (!s.duration.is_empty()).then(|| ms(s.duration.value_at_quantile(q)));
            json!({
                "region": region, "http_reqs": s.reqs, "http_req_failed": s.failed,
                "p50": p(0.5), "p95": p(0.95), "p99": p(0.99),
            })
        })
        .collect()
}

/// The live view of a run.
fn view(run: &Run) -> Value {
    let now = crate::now_ms();
    let elapsed_s = ((now - run.start_unix_ms).max(0) as f64 / 1000.0).max(0.0);
    let m = &run.merged;
    let d = &m.duration;
    let trend = |h: &hdrhistogram::Histogram<u64>| {
        if h.is_empty() {
            Value::Null
        } else {
            json!({
                "avg": round3(h.mean() / 1000.0), "min": ms(h.min()), "med": ms(h.value_at_quantile(0.5)),
                "p90": ms(h.value_at_quantile(0.9)), "p95": ms(h.value_at_quantile(0.95)),
                "p99": ms(h.value_at_quantile(0.99)), "max": ms(h.max()),
            })
        }
    };
    let state = if run.abort.is_some() {
        "aborting"
    } else if now < run.start_unix_ms {
        "starting"
    } else {
        "running"
    };
    json!({
        "id": run.id,
        "state": state,
        "verdict": Value::Null,
        "regions": run.regions,
        "targets": run.plan.origins(),
        "created_unix_ms": run.created_unix_ms,
        "start_unix_ms": run.start_unix_ms,
        "elapsed_s": round3(elapsed_s),
        "abort": run.abort.as_ref().map(|(reason, at, by_threshold)| json!({
            "reason": reason, "at_unix_ms": at, "by_threshold": by_threshold,
        })),
        "agents": run.agents.iter().map(|a| json!({
            "name": a.name, "region": a.region, "seconds": a.seconds, "done": a.done,
            "aborted": a.aborted, "error": a.error,
            "http_reqs": a.totals.reqs, "iterations": a.totals.iterations,
        })).collect::<Vec<_>>(),
        "by_region": by_region(run),
        "metrics": {
            "http_reqs": m.reqs,
            "http_reqs_rate": if elapsed_s > 0.0 { round3(m.reqs as f64 / elapsed_s) } else { 0.0 },
            "http_req_failed": m.failed,
            "iterations": m.iterations,
            "dropped_iterations": m.dropped,
            "checks_pass": m.checks_pass,
            "checks_fail": m.checks_fail,
            "data_received": m.bytes_received,
            "data_sent": m.bytes_sent,
            "http_req_duration": trend(d),
            "http_req_duration_corrected": trend(&m.duration_corrected),
            "http_req_waiting": trend(&m.waiting),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interval(reqs: u64, failed: u64, latency_ms: &[u64]) -> Stats {
        let mut s = Stats::default();
        for ms in latency_ms {
            histogram::record_micros(&mut s.duration, ms * 1000);
        }
        s.reqs = reqs;
        s.failed = failed;
        s
    }

    #[test]
    fn a_region_second_is_the_union_of_its_agents() {
        let mut rs = RegionSeries::new("eu");
        // Agent A reports seconds 1 and 2; agent B only second 1 so far.
        rs.add(1, &interval(2, 0, &[10, 10]));
        rs.add(2, &interval(1, 1, &[50]));
        rs.add(1, &interval(2, 1, &[100, 100]));
        rs.settle(1);
        assert_eq!(rs.series.points.len(), 1);
        let p = rs.series.points[0];
        assert_eq!((p.t, p.reqs, p.failed, p.samples), (1, 4, 1, 4));
        // p50 of {10, 10, 100, 100} and p99 from B's samples: a max over
        // the agents' own percentiles would say the same only by chance.
        assert!((9_990..=10_010).contains(&p.p50_us), "{p:?}");
        assert!((99_900..=100_100).contains(&p.p99_us), "{p:?}");
        // Second 2 waits for B, but a live report shows it.
        assert_eq!(rs.pending.len(), 1);
        assert_eq!(rs.snapshot().points.len(), 2);
        // A second far behind is settled anyway once the cap is passed.
        for t in 3..=(MAX_PENDING_SECONDS as u64 + 3) {
            rs.add(t, &interval(1, 0, &[1]));
        }
        rs.settle(1);
        assert_eq!(rs.pending.len(), MAX_PENDING_SECONDS);
        assert_eq!(rs.series.points.last().unwrap().t, 3);
        // A late report for a settled second is not drawn twice.
        rs.add(2, &interval(5, 0, &[1]));
        rs.settle(u64::MAX);
        let ts: Vec<u64> = rs.series.points.iter().map(|p| p.t).collect();
        assert!(ts.windows(2).all(|w| w[0] < w[1]), "{ts:?}");
    }

    #[test]
    fn a_finished_report_is_read_back_from_what_is_stored() {
        let mut merged = interval(10, 2, &[5, 6, 7, 8, 9, 10, 11, 12, 13, 14]);
        merged.iterations = 10;
        let mut eu = report::Series::new("eu");
        eu.points
            .push(report::Point::from_interval(1, &interval(6, 1, &[5, 6])));
        let mut us = report::Series::new("us");
        us.points
            .push(report::Point::from_interval(1, &interval(4, 1, &[7])));
        let b64 = |b: Vec<u8>| base64::engine::general_purpose::STANDARD.encode(b);
        let stored = StoredReport {
            planned_ms: 3000,
            open_model: true,
            scenarios: vec![("api".into(), "constant-arrival-rate".into())],
            stats: b64(prost::Message::encode_to_vec(&remote::to_wire(&merged, 0))),
            series: vec![
                ("eu".into(), b64(eu.encode())),
                ("us".into(), b64(us.encode())),
            ],
        };
        let result = json!({
            "id": "lt-1", "state": "failed", "verdict": "thresholds_failed",
            "regions": ["eu", "us"], "targets": ["http://127.0.0.1:1"],
            "start_unix_ms": 1_800_000_000_000i64, "elapsed_s": 3.2,
            "agents": [{"name": "a", "region": "eu", "error": null}],
            "thresholds": [{"metric": "http_req_duration", "threshold": "p(95)<1",
                            "observed": 14.0, "ok": false, "abort_on_fail": false}],
        });
        let bytes = serde_json::to_vec(&stored).unwrap();
        let data = finished_report(&result, Some(&bytes));
        assert_eq!(data.regions, vec![eu, us]);
        assert_eq!(data.totals.reqs, 10);
        assert_eq!(data.totals.duration, merged.duration);
        assert_eq!(data.planned, Duration::from_millis(3000));
        assert_eq!(data.state, "failed (thresholds failed)");
        assert_eq!(data.ok, Some(false));
        assert!(data.open_model);
        assert_eq!(data.thresholds[0].unit, "ms");
        assert!(!data.thresholds[0].ok);

        // Damaged or missing report data: the page still renders, from the
        // result alone.
        for stored in [None, Some(&b"{not json"[..])] {
            let data = finished_report(&result, stored);
            assert_eq!(data.regions.len(), 2);
            assert!(data.regions.iter().all(|r| r.points.is_empty()));
            assert!(report::render(&data).contains(">no data</text>"));
        }
    }
}
