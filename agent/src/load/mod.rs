//! Local load tests: `vantage-agent load FILE`.
//!
//! # Layout
//! - [`mod@file`]: the load file (TOML, k6 option names) → [`file::LoadPlan`].
//! - [`threshold`]: k6 thresholds per metric kind, evaluated live.
//! - [`executor`]: the six k6 executors (closed and open model).
//! - [`client`]: one keep-alive HTTP/1.1 connection per VU, timed in k6 phases.
//! - [`metrics`]: k6 metric names and the sharded per-second recorders.
//! - [`output`]: progress line, end-of-test summary, NDJSON and HdrHistogram logs.
//! - [`report`]: the self-contained HTML report with its charts.
//! - [`safety`]: the allowed hosts (loopback unless named).
//!
//! [`run`] starts every scenario at its `startTime`, folds the recorders
//! every second (outputs, progress, `abort_on_fail`), and returns the
//! summary once every scenario has ended.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::egress::EgressPolicy;

pub mod client;
pub mod executor;
pub mod file;
pub mod h1;
pub mod metrics;
pub mod output;
pub mod remote;
pub mod report;
pub mod safety;
pub mod threshold;

use executor::{Engine, RateCap, ScenarioRun};
use file::LoadPlan;
use metrics::{Shards, Stats};

/// Settings of a run besides the load file.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// `--max-vus`: can only lower the file's cap.
    pub max_vus: Option<u64>,
    /// `--max-rate`: the operator's cap (default [`file::DEFAULT_MAX_RATE`]);
    /// the file's `options.max_rate` can only lower it.
    pub max_rate: Option<f64>,
    /// Recorder shards per scenario (the worker thread count).
    pub shards: usize,
    /// `--out json=PATH`.
    pub json: Option<std::path::PathBuf>,
    /// `--hlog PATH`.
    pub hlog: Option<std::path::PathBuf>,
    /// `--out html=PATH`: the HTML report, written at the end of the run.
    pub html: Option<std::path::PathBuf>,
    /// The report's heading (the load file's name).
    pub title: String,
    /// `--ca-file`: extra trust anchors (PEM) for https targets.
    pub ca_file: Option<String>,
    /// Progress on stderr: `None` for `--quiet`, else whether stderr is a TTY.
    pub progress: Option<bool>,
    /// Set when the coordinator drives the run (a share of a distributed run).
    pub remote: Option<RemoteHooks>,
    /// Where requests may go, checked on the resolved addresses of every
    /// origin before the first request; `None` for a run the operator starts
    /// by hand (the host allow-list of the load file still applies).
    pub egress: Option<Arc<EgressPolicy>>,
    /// Longest planned run accepted; a longer plan is refused before it
    /// starts, and a run still going this long (plus its graceful stop)
    /// after its start is stopped. `None`: only the file's own limits.
    pub max_duration: Option<Duration>,
}

/// Time allowed past the duration cap and the graceful stop before the
/// backstop aborts a run.
const BACKSTOP_SLACK: Duration = Duration::from_secs(5);

/// How a coordinator-driven run is stopped and observed.
#[derive(Debug, Clone)]
pub struct RemoteHooks {
    /// Cancelled to abort the run (a `LoadAbort`, or the session is gone).
    pub abort: CancellationToken,
    /// Receives every interval's stats and the VU count, then the rest after
    /// the last fold; closed when the run returns. When it is full the
    /// collector waits (VUs keep recording into the shards): nothing is lost.
    pub intervals: tokio::sync::mpsc::Sender<(Stats, u64)>,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every threshold held.
    Passed,
    /// A threshold failed (exit 99).
    ThresholdsFailed,
    /// Every request of the first second failed to connect (exit 1).
    Unreachable,
}

/// Why a run could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The load file or the flags are wrong; fix them (exit 2).
    #[error("{0}")]
    Input(String),
    /// Anything else: an output file could not be written (exit 1).
    #[error("{0}")]
    Other(String),
}

/// The result of a run.
#[derive(Debug)]
pub struct Report {
    /// The verdict.
    pub verdict: Verdict,
    /// The end-of-test summary text.
    pub summary: String,
    /// Whether an `abort_on_fail` threshold stopped the run early.
    pub aborted: bool,
}

/// Per-scenario state of the collector: the interval histograms (for the
/// per-scenario NDJSON lines) and the run's counts. Run-wide histograms are
/// kept once, over all scenarios, to keep memory small.
struct Totals {
    total: output::ScenarioCounts,
    interval: Stats,
}

/// Runs `plan` to its end (or an abort) and returns the verdict and summary.
pub async fn run(plan: LoadPlan, opts: RunOptions) -> Result<Report, LoadError> {
    let max_vus = opts
        .max_vus
        .map_or(plan.options.max_vus, |v| v.min(plan.options.max_vus));
    let max_rate = opts
        .max_rate
        .unwrap_or(file::DEFAULT_MAX_RATE)
        .min(plan.options.max_rate);
    let needed_vus: u64 = plan.scenarios.iter().map(|s| s.executor.max_vus()).sum();
    if needed_vus > max_vus {
        return Err(LoadError::Input(format!(
            "the scenarios need up to {needed_vus} VUs, above the max_vus cap of {max_vus} (--max-vus)"
        )));
    }
    let needed_rate: f64 = plan
        .scenarios
        .iter()
        .filter_map(file::Scenario::max_request_rate)
        .sum();
    if needed_rate > max_rate {
        return Err(LoadError::Input(format!(
            "the scenarios schedule up to {needed_rate} requests per second, above the max_rate cap of {max_rate} (--max-rate)"
        )));
    }
    if let Some(cap) = opts.max_duration {
        let planned = plan.planned_length();
        if planned > cap {
            return Err(LoadError::Input(format!(
                "the scenarios run for {}, above the duration cap of {}",
                vantage_proto::spec::humantime_like(planned),
                vantage_proto::spec::humantime_like(cap)
            )));
        }
    }
    let needs_tls = plan
        .scenarios
        .iter()
        .flat_map(|s| &s.requests)
        .any(|r| r.url.scheme() == "https");
    let tls = if needs_tls {
        Some(client::tls_config(opts.ca_file.as_deref()).map_err(LoadError::Input)?)
    } else {
        None
    };
    let mut runs = Vec::new();
    for s in &plan.scenarios {
        let (requests, mut origins) = client::prepare(&s.requests).map_err(LoadError::Input)?;
        client::resolve(&mut origins, opts.egress.as_deref()).await?;
        runs.push(Arc::new(ScenarioRun {
            scenario: s.clone(),
            requests: requests.into(),
            origins: origins.into(),
            tls: tls.clone(),
            shards: Shards::new(opts.shards),
            vus: Default::default(),
            vus_max: Default::default(),
        }));
    }
    let mut out = output::Outputs::open(&opts).map_err(LoadError::Other)?;
    let engine = Arc::new(Engine {
        vu_permits: Arc::new(Semaphore::new(max_vus as usize)),
        rate: RateCap::new(max_rate),
        abort: opts
            .remote
            .as_ref()
            .map_or_else(CancellationToken::new, |r| r.abort.child_token()),
    });
    let planned = plan.planned_length();
    // A backstop behind the refusal above: whatever happens, the run ends
    // shortly after the duration cap.
    let _backstop = opts.max_duration.map(|cap| {
        let abort = engine.abort.clone();
        let at = cap + file::DEFAULT_GRACEFUL_STOP + BACKSTOP_SLACK;
        tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
            tokio::time::sleep(at).await;
            tracing::warn!(after = ?at, "load run stopped at the duration cap");
            abort.cancel();
        }))
    });
    let started_at = SystemTime::now();
    let start = Instant::now();
    let mut set = JoinSet::new();
    for sc in &runs {
        let (sc, engine) = (Arc::clone(sc), Arc::clone(&engine));
        set.spawn(async move {
            tokio::select! {
                _ = engine.abort.cancelled() => return,
                _ = tokio::time::sleep(sc.scenario.start_time) => {}
            }
            executor::run(sc, engine).await;
        });
    }
    out.start(started_at).map_err(LoadError::Other)?;

    let mut totals: Vec<Totals> = runs
        .iter()
        .map(|_| Totals {
            total: output::ScenarioCounts::default(),
            interval: Stats::default(),
        })
        .collect();
    let mut all = Stats::default();
    let mut merged_interval = Stats::default();
    let mut tick = tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut second = 0u64;
    let mut verdict = Verdict::Passed;
    let mut aborted = false;
    let mut last_tick = start;
    let mut finished = false;
    // Per-second figures for the HTML report: a few numbers per second.
    let mut series = out.wants_report().then(|| report::Series::new("local"));
    while !finished {
        tokio::select! {
            joined = set.join_next() => {
                if joined.is_some() {
                    continue;
                }
                finished = true;
            }
            _ = tick.tick() => {}
        }
        // Fold this interval (a tick, or the partial last one).
        let now = Instant::now();
        let interval_len = now - last_tick;
        last_tick = now;
        second += 1;
        merged_interval.reset();
        for (sc, t) in runs.iter().zip(totals.iter_mut()) {
            t.interval.reset();
            sc.shards.drain_into(&mut t.interval);
            t.total.add(&t.interval);
            merged_interval.merge(&t.interval);
            let vus = sc.vus.load(Ordering::Relaxed);
            out.interval(second, interval_len, &sc.scenario.name, &t.interval, vus)
                .map_err(LoadError::Other)?;
        }
        all.merge(&merged_interval);
        if let Some(s) = series.as_mut() {
            s.points.push(
                report::Point::from_interval(second, &merged_interval).with_len(interval_len),
            );
        }
        out.hlog_interval(start, now - interval_len, interval_len, &merged_interval)
            .map_err(LoadError::Other)?;
        let elapsed = now - start;
        let vus: u64 = runs.iter().map(|s| s.vus.load(Ordering::Relaxed)).sum();
        if let Some(r) = &opts.remote {
            let _ = r.intervals.send((merged_interval.clone(), vus)).await;
        }
        out.progress(elapsed, planned, &merged_interval, interval_len, &all, vus);
        if second == 1
            && merged_interval.reqs > 0
            && merged_interval.connect_errors == merged_interval.reqs
        {
            verdict = Verdict::Unreachable;
            engine.abort.cancel();
            break;
        }
        for def in plan.thresholds.iter().filter(|d| d.abort_on_fail) {
            if elapsed >= def.delay_abort_eval && !threshold::passes(def, &all, elapsed).1 {
                aborted = true;
                engine.abort.cancel();
            }
        }
        if aborted {
            break;
        }
    }
    engine.abort.cancel();
    while set.join_next().await.is_some() {}
    // Whatever was recorded after the last fold.
    let rest = &mut merged_interval;
    let mut rest_all = Stats::default();
    for (sc, t) in runs.iter().zip(totals.iter_mut()) {
        rest.reset();
        sc.shards.drain_into(rest);
        t.total.add(rest);
        all.merge(rest);
        rest_all.merge(rest);
    }
    // The few requests that ended after the last fold count in the last
    // second's rates (their latencies are in the totals, not redrawn).
    if let Some(last) = series.as_mut().and_then(|s| s.points.last_mut()) {
        last.reqs += rest_all.reqs;
        last.failed += rest_all.failed;
    }
    if let Some(r) = &opts.remote {
        if rest_all.reqs > 0 || rest_all.iterations > 0 || rest_all.dropped > 0 {
            let _ = r.intervals.send((rest_all, 0)).await;
        }
    }
    let elapsed = start.elapsed();
    let results: Vec<output::ThresholdResult> = plan
        .thresholds
        .iter()
        .map(|d| {
            let (observed, ok) = threshold::passes(d, &all, elapsed);
            output::ThresholdResult {
                def: d.clone(),
                observed,
                ok,
            }
        })
        .collect();
    if verdict == Verdict::Passed && results.iter().any(|r| !r.ok) {
        verdict = Verdict::ThresholdsFailed;
    }
    let scenario_info: Vec<output::ScenarioInfo<'_>> = runs
        .iter()
        .zip(&totals)
        .map(|(sc, t)| output::ScenarioInfo {
            scenario: &sc.scenario,
            stats: &t.total,
            vus_max: sc.vus_max.load(Ordering::Relaxed),
        })
        .collect();
    let summary = output::summary(&scenario_info, &all, &results, elapsed, verdict, aborted);
    out.finish(&scenario_info, &all, &results, elapsed, verdict, aborted)
        .map_err(LoadError::Other)?;
    if let Some(series) = series {
        let started_unix_ms = started_at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let data = report::RunData {
            title: opts.title.clone(),
            id: String::new(),
            state: match (verdict, aborted) {
                (Verdict::Passed, _) => "passed".into(),
                (Verdict::ThresholdsFailed, false) => "thresholds failed".into(),
                (Verdict::ThresholdsFailed, true) => {
                    "thresholds failed (aborted by abort_on_fail)".into()
                }
                (Verdict::Unreachable, _) => "target unreachable".into(),
            },
            ok: Some(verdict == Verdict::Passed),
            started_unix_ms: Some(started_unix_ms),
            planned,
            elapsed,
            scenarios: scenario_info
                .iter()
                .map(|s| report::ScenarioRow {
                    name: s.scenario.name.clone(),
                    executor: s.scenario.executor.name().to_owned(),
                })
                .collect(),
            targets: plan.origins(),
            regions: vec![series],
            vus_max: Some(scenario_info.iter().map(|s| s.vus_max).sum()),
            open_model: scenario_info
                .iter()
                .any(|s| s.scenario.executor.is_open_model()),
            thresholds: results.iter().map(report::ThresholdRow::from).collect(),
            notes: Vec::new(),
            totals: all,
        };
        out.report(&report::render(&data))
            .map_err(LoadError::Other)?;
    }
    Ok(Report {
        verdict,
        summary,
        aborted,
    })
}
