//! Distributed load runs, agent side, and the pieces both sides share.
//!
//! The coordinator sends every chosen agent the whole load file, the agent's
//! index among `count` agents and one start instant ([`v1::LoadStart`]). Each
//! agent takes its [`share`] of the file, checks it against its *own* allowed
//! hosts and caps ([`Limits`]; the coordinator checked its own already), waits
//! for the instant, runs the share with the local engine and streams every
//! second's [`Stats`] ([`to_wire`]) until its share ends or a
//! [`v1::LoadAbort`] stops it. Thresholds are the coordinator's business: a
//! share carries none, and the coordinator evaluates the file's thresholds on
//! the merged fleet-wide data.
//!
//! Splitting ([`share`]) is exact: integer quantities (VUs, rates per
//! `timeUnit`, stage targets, shared iterations) are split as
//! `total / count` plus one for the first `total % count` agents, so the
//! shares add up to the file. An agent whose share of a scenario is zero does
//! not run it.

use crate::egress::EgressPolicy;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use vantage_proto::histogram;
use vantage_proto::v1::{self, agent_message, AgentMessage};

use super::file::{self, Executor, LoadPlan, Scenario, Stage};
use super::metrics::Stats;
use super::safety::AllowedHosts;
use super::{LoadError, RunOptions, Verdict};

/// Intervals queued between the engine and the session.
const INTERVALS_QUEUE: usize = 16;

/// Furthest in the future a start instant may be.
pub const MAX_START_LEAD: Duration = Duration::from_secs(60);

/// Agent `index`'s part of `total` split over `count` agents.
pub fn part(total: u64, index: u32, count: u32) -> u64 {
    let n = u64::from(count.max(1));
    let i = u64::from(index);
    total / n + u64::from(i < total % n)
}

/// Agent `index`'s share of `plan` among `count` agents, without thresholds.
pub fn share(plan: &LoadPlan, index: u32, count: u32) -> LoadPlan {
    let mut out = plan.clone();
    out.thresholds.clear();
    out.scenarios = plan
        .scenarios
        .iter()
        .filter_map(|s| share_scenario(s, index, count))
        .collect();
    out
}

fn share_stages(stages: &[Stage], index: u32, count: u32) -> Vec<Stage> {
    stages
        .iter()
        .map(|s| Stage {
            duration: s.duration,
            target: part(s.target, index, count),
        })
        .collect()
}

fn share_scenario(s: &Scenario, index: u32, count: u32) -> Option<Scenario> {
    let p = |v: u64| part(v, index, count);
    let executor = match s.executor.clone() {
        Executor::ConstantVus { vus, duration } => Executor::ConstantVus {
            vus: nonzero(p(vus))?,
            duration,
        },
        Executor::RampingVus { start_vus, stages } => {
            let stages = share_stages(&stages, index, count);
            let start_vus = p(start_vus);
            if start_vus == 0 && stages.iter().all(|s| s.target == 0) {
                return None;
            }
            Executor::RampingVus { start_vus, stages }
        }
        Executor::PerVuIterations {
            vus,
            iterations,
            max_duration,
        } => Executor::PerVuIterations {
            vus: nonzero(p(vus))?,
            iterations,
            max_duration,
        },
        Executor::SharedIterations {
            vus,
            iterations,
            max_duration,
        } => {
            // Only agents with a VU take iterations, so none is stranded.
            let with_vus = count.min(u32::try_from(vus).unwrap_or(u32::MAX));
            if index >= with_vus {
                return None;
            }
            Executor::SharedIterations {
                vus: part(vus, index, with_vus),
                iterations: nonzero(part(iterations, index, with_vus))?,
                max_duration,
            }
        }
        Executor::ConstantArrivalRate {
            rate,
            time_unit,
            duration,
            pre_allocated_vus,
            max_vus,
        } => {
            let pre = p(pre_allocated_vus).max(1);
            Executor::ConstantArrivalRate {
                rate: nonzero(p(rate))?,
                time_unit,
                duration,
                pre_allocated_vus: pre,
                max_vus: p(max_vus).max(pre),
            }
        }
        Executor::RampingArrivalRate {
            start_rate,
            time_unit,
            stages,
            pre_allocated_vus,
            max_vus,
        } => {
            let stages = share_stages(&stages, index, count);
            let start_rate = p(start_rate);
            if start_rate == 0 && stages.iter().all(|s| s.target == 0) {
                return None;
            }
            let pre = p(pre_allocated_vus).max(1);
            Executor::RampingArrivalRate {
                start_rate,
                time_unit,
                stages,
                pre_allocated_vus: pre,
                max_vus: p(max_vus).max(pre),
            }
        }
    };
    Some(Scenario {
        executor,
        ..s.clone()
    })
}

fn nonzero(v: u64) -> Option<u64> {
    (v > 0).then_some(v)
}

/// One interval's measurements on the wire.
pub fn to_wire(s: &Stats, vus: u64) -> v1::LoadStats {
    v1::LoadStats {
        http_req_duration: histogram::encode(&s.duration),
        http_req_duration_corrected: histogram::encode(&s.duration_corrected),
        http_req_waiting: histogram::encode(&s.waiting),
        http_req_connecting: histogram::encode(&s.connecting),
        http_req_tls_handshaking: histogram::encode(&s.tls),
        iteration_duration: histogram::encode(&s.iteration),
        http_reqs: s.reqs,
        http_req_failed: s.failed,
        connect_errors: s.connect_errors,
        checks_pass: s.checks_pass,
        checks_fail: s.checks_fail,
        iterations: s.iterations,
        dropped_iterations: s.dropped,
        data_received: s.bytes_received,
        data_sent: s.bytes_sent,
        vus,
    }
}

/// Decodes and checks an interval from the wire: histograms in the Vantage
/// profile, counters consistent (no more failures or checks than requests
/// allow for). Returns the stats and the VU count.
pub fn from_wire(w: &v1::LoadStats) -> Result<(Stats, u64), String> {
    let h = |name: &str, bytes: &[u8]| {
        if bytes.is_empty() {
            Ok(histogram::new_latency())
        } else {
            histogram::decode(bytes).map_err(|e| format!("{name}: {e}"))
        }
    };
    let s = Stats {
        duration: h("http_req_duration", &w.http_req_duration)?,
        duration_corrected: h(
            "http_req_duration_corrected",
            &w.http_req_duration_corrected,
        )?,
        waiting: h("http_req_waiting", &w.http_req_waiting)?,
        connecting: h("http_req_connecting", &w.http_req_connecting)?,
        tls: h("http_req_tls_handshaking", &w.http_req_tls_handshaking)?,
        iteration: h("iteration_duration", &w.iteration_duration)?,
        reqs: w.http_reqs,
        failed: w.http_req_failed,
        connect_errors: w.connect_errors,
        checks_pass: w.checks_pass,
        checks_fail: w.checks_fail,
        iterations: w.iterations,
        dropped: w.dropped_iterations,
        bytes_received: w.data_received,
        bytes_sent: w.data_sent,
    };
    if s.failed > s.reqs || s.connect_errors > s.reqs || s.duration.len() > s.reqs {
        return Err("counters are inconsistent (more failures or samples than requests)".into());
    }
    Ok((s, w.vus))
}

/// What this agent allows a coordinator to make it send.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Hosts load may go to (loopback always).
    pub allowed: AllowedHosts,
    /// VU cap (`None`: the file's, at most [`file::DEFAULT_MAX_VUS`]).
    pub max_vus: Option<u64>,
    /// Rate cap in requests per second (`None`: [`file::DEFAULT_MAX_RATE`]).
    pub max_rate: Option<f64>,
    /// Longest run this agent takes part in ([`DEFAULT_MAX_DURATION`]).
    pub max_duration: Duration,
}

/// The agent's default duration cap for coordinator-driven load.
pub const DEFAULT_MAX_DURATION: Duration = Duration::from_secs(3600);

impl Default for Limits {
    fn default() -> Self {
        Limits {
            allowed: AllowedHosts::new(std::iter::empty::<&str>()),
            max_vus: None,
            max_rate: None,
            max_duration: DEFAULT_MAX_DURATION,
        }
    }
}

/// Runs the coordinator's load commands, one run at a time.
pub struct Runner {
    limits: Limits,
    egress: Arc<EgressPolicy>,
    current: Mutex<Option<(String, CancellationToken)>>,
}

impl Runner {
    /// A runner enforcing `limits`, whose load connects only where `egress`
    /// allows.
    pub fn new(limits: Limits, egress: Arc<EgressPolicy>) -> Arc<Self> {
        Arc::new(Runner {
            limits,
            egress,
            current: Mutex::new(None),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(String, CancellationToken)>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts `msg`'s share in the background; progress goes to `out` (the
    /// session's outbound stream). A run that cannot start says why in a
    /// final progress message.
    pub fn start(self: &Arc<Self>, msg: v1::LoadStart, out: mpsc::Sender<AgentMessage>) {
        let run_id = msg.run_id.clone();
        let refuse = |why: String| {
            let out = out.clone();
            let run_id = run_id.clone();
            tokio::spawn(async move {
                tracing::warn!(%run_id, reason = %why, "load run refused");
                let _ = out.send(final_message(&run_id, 0, Some(why), false)).await;
            });
        };
        if !valid_run_id(&msg.run_id) {
            return refuse("invalid run id".into());
        }
        if msg.agent_count == 0 || msg.agent_index >= msg.agent_count {
            return refuse(format!(
                "invalid share {} of {}",
                msg.agent_index, msg.agent_count
            ));
        }
        let token = CancellationToken::new();
        {
            let mut current = self.lock();
            if let Some((busy, _)) = current.as_ref() {
                let why = format!("this agent is already running load run {busy}");
                drop(current);
                return refuse(why);
            }
            *current = Some((run_id.clone(), token.clone()));
        }
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let last = run_share((&me.limits, &me.egress), msg, token, &out).await;
            {
                let mut current = me.lock();
                if current.as_ref().is_some_and(|(id, _)| *id == run_id) {
                    *current = None;
                }
            }
            let _ = out.send(last).await;
        });
    }

    /// Stops run `run_id` if it is the one running.
    pub fn abort(&self, run_id: &str, reason: &str) {
        if let Some((id, token)) = self.lock().as_ref() {
            if id == run_id {
                tracing::warn!(%run_id, %reason, "load run aborted by the coordinator");
                token.cancel();
            }
        }
    }
}

/// Run ids: 1-64 characters from A-Z a-z 0-9 and `-`.
pub fn valid_run_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn progress_message(run_id: &str, second: u64, stats: v1::LoadStats) -> AgentMessage {
    AgentMessage {
        msg: Some(agent_message::Msg::LoadProgress(v1::LoadProgress {
            run_id: run_id.into(),
            second,
            stats: Some(stats),
            done: false,
            error: String::new(),
            aborted: false,
        })),
    }
}

fn final_message(run_id: &str, second: u64, error: Option<String>, aborted: bool) -> AgentMessage {
    AgentMessage {
        msg: Some(agent_message::Msg::LoadProgress(v1::LoadProgress {
            run_id: run_id.into(),
            second,
            stats: None,
            done: true,
            error: error.unwrap_or_default(),
            aborted,
        })),
    }
}

/// Runs one share; returns the final message.
async fn run_share(
    (limits, egress): (&Limits, &Arc<EgressPolicy>),
    msg: v1::LoadStart,
    token: CancellationToken,
    out: &mpsc::Sender<AgentMessage>,
) -> AgentMessage {
    let run_id = msg.run_id.clone();
    let fail = |second: u64, why: String| final_message(&run_id, second, Some(why), false);
    let plan = match file::parse(&msg.plan_toml, Path::new("loadtest.toml"), &limits.allowed) {
        Ok(p) => p,
        Err(e) => return fail(0, format!("this agent refuses the load file: {e}")),
    };
    let mine = share(&plan, msg.agent_index, msg.agent_count);
    let start = SystemTime::UNIX_EPOCH
        + Duration::from_millis(u64::try_from(msg.start_unix_ms).unwrap_or(0));
    let wait = start
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    if wait > MAX_START_LEAD {
        return fail(
            0,
            format!("start instant {wait:?} away, more than {MAX_START_LEAD:?}"),
        );
    }
    tokio::select! {
        () = tokio::time::sleep(wait) => {}
        () = token.cancelled() => return final_message(&run_id, 0, None, true),
    }
    tracing::info!(%run_id, share = msg.agent_index, of = msg.agent_count,
        scenarios = mine.scenarios.len(), "load run starting");
    // Bounded: when the session is slow the collector waits (recording goes
    // on in the shards), so no interval is lost.
    let (tx, mut rx) = mpsc::channel(INTERVALS_QUEUE);
    let opts = RunOptions {
        max_vus: limits.max_vus,
        max_rate: limits.max_rate,
        shards: std::thread::available_parallelism().map_or(1, |n| n.get()),
        remote: Some(super::RemoteHooks {
            abort: token.clone(),
            intervals: tx,
        }),
        egress: Some(Arc::clone(egress)),
        max_duration: Some(limits.max_duration),
        ..RunOptions::default()
    };
    let run = tokio::spawn(super::run(mine, opts));
    let mut second = 0;
    while let Some((stats, vus)) = rx.recv().await {
        second += 1;
        if out
            .send(progress_message(&run_id, second, to_wire(&stats, vus)))
            .await
            .is_err()
        {
            // The session is gone: nobody merges this run any more.
            tracing::warn!(%run_id, "session lost during a load run: stopping it");
            token.cancel();
        }
    }
    let aborted = token.is_cancelled();
    match run.await {
        Ok(Ok(report)) => match report.verdict {
            Verdict::Unreachable => fail(
                second,
                "target unreachable: every request of the first second failed to connect".into(),
            ),
            _ => final_message(&run_id, second, None, aborted),
        },
        Ok(Err(LoadError::Input(e) | LoadError::Other(e))) => fail(second, e),
        Err(e) => fail(second, format!("load run failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn parts_add_up_and_differ_by_at_most_one(total in 0u64..1_000_000, count in 1u32..50) {
            let parts: Vec<u64> = (0..count).map(|i| part(total, i, count)).collect();
            prop_assert_eq!(parts.iter().sum::<u64>(), total);
            let (min, max) = (parts.iter().min().unwrap(), parts.iter().max().unwrap());
            prop_assert!(max - min <= 1);
        }
    }

    fn plan(scenario: &str) -> LoadPlan {
        let text = format!(
            "[[scenario]]\nname = \"s\"\n{scenario}\n\n[[scenario.request]]\nurl = \"http://127.0.0.1:1/\"\n\n[thresholds]\nhttp_req_duration = [\"p(95)<500\"]\n"
        );
        file::parse(&text, Path::new("t.toml"), &AllowedHosts::default()).unwrap()
    }

    fn shares(p: &LoadPlan, count: u32) -> Vec<LoadPlan> {
        (0..count).map(|i| share(p, i, count)).collect()
    }

    #[test]
    fn shares_add_up_to_the_file_for_every_executor() {
        let p = plan("executor = \"constant-arrival-rate\"\nrate = 5\nduration = \"1s\"\npreAllocatedVUs = 3\nmaxVUs = 7");
        let s = shares(&p, 2);
        let rates: Vec<u64> = s
            .iter()
            .map(|p| match &p.scenarios[0].executor {
                Executor::ConstantArrivalRate { rate, .. } => *rate,
                e => panic!("{e:?}"),
            })
            .collect();
        assert_eq!(rates, [3, 2]);
        assert!(
            s.iter().all(|p| p.thresholds.is_empty()),
            "thresholds stay with the coordinator"
        );

        // One VU over three agents: two agents do not run the scenario.
        let p = plan("executor = \"constant-vus\"\nvus = 1\nduration = \"1s\"");
        let s = shares(&p, 3);
        assert_eq!(
            s.iter().map(|p| p.scenarios.len()).collect::<Vec<_>>(),
            [1, 0, 0]
        );

        // Shared iterations go only to agents with a VU, and add up.
        let p = plan("executor = \"shared-iterations\"\nvus = 2\niterations = 11");
        let s = shares(&p, 3);
        let its: Vec<(u64, u64)> = s
            .iter()
            .filter_map(|p| match p.scenarios.first().map(|s| &s.executor) {
                Some(Executor::SharedIterations {
                    vus, iterations, ..
                }) => Some((*vus, *iterations)),
                _ => None,
            })
            .collect();
        assert_eq!(its, [(1, 6), (1, 5)]);

        // Ramping targets are split stage by stage.
        let p = plan("executor = \"ramping-arrival-rate\"\nstartRate = 3\npreAllocatedVUs = 2\nstages = [{ duration = \"1s\", target = 9 }, { duration = \"1s\", target = 0 }]");
        let s = shares(&p, 2);
        let targets: Vec<Vec<u64>> = s
            .iter()
            .map(|p| match &p.scenarios[0].executor {
                Executor::RampingArrivalRate {
                    stages, start_rate, ..
                } => std::iter::once(*start_rate)
                    .chain(stages.iter().map(|s| s.target))
                    .collect(),
                e => panic!("{e:?}"),
            })
            .collect();
        assert_eq!(targets, [vec![2, 5, 0], vec![1, 4, 0]]);
    }

    #[test]
    fn stats_cross_the_wire_unchanged_and_bad_input_is_refused() {
        let mut s = Stats::default();
        for v in [100, 2_000, 30_000] {
            super::super::metrics::record(&mut s.duration, v);
        }
        s.reqs = 3;
        s.failed = 1;
        s.bytes_sent = 99;
        let (back, vus) = from_wire(&to_wire(&s, 7)).unwrap();
        assert_eq!(vus, 7);
        assert_eq!(back.duration, s.duration);
        assert_eq!((back.reqs, back.failed, back.bytes_sent), (3, 1, 99));

        let mut bad = to_wire(&s, 1);
        bad.http_req_failed = 4;
        assert!(from_wire(&bad).unwrap_err().contains("inconsistent"));
        let mut bad = to_wire(&s, 1);
        bad.http_req_waiting = vec![1, 2, 3];
        assert!(from_wire(&bad).unwrap_err().starts_with("http_req_waiting"));
    }

    /// The agent's own caps hold whatever the coordinator sends: a share
    /// above them is refused before a request, with the reason.
    #[tokio::test]
    async fn the_agents_caps_refuse_what_the_coordinator_asks_beyond_them() {
        let (out, _rx) = mpsc::channel(8);
        let open = Arc::new(EgressPolicy::unrestricted());
        let start = |scenario: &str| {
            v1::LoadStart {
            run_id: "lt-1".into(),
            plan_toml: format!(
                "[[scenario]]\nname = \"s\"\n{scenario}\n\n[[scenario.request]]\nurl = \"http://127.0.0.1:1/\"\n"
            ),
            agent_index: 0,
            agent_count: 1,
            start_unix_ms: 0,
        }
        };
        let cases = [
            (
                Limits {
                    max_duration: Duration::from_secs(1),
                    ..Limits::default()
                },
                "executor = \"constant-vus\"\nvus = 1\nduration = \"2s\"",
                "above the duration cap of 1s",
            ),
            (
                Limits {
                    max_vus: Some(2),
                    ..Limits::default()
                },
                "executor = \"constant-vus\"\nvus = 3\nduration = \"1s\"",
                "above the max_vus cap of 2",
            ),
            (
                Limits {
                    max_rate: Some(10.0),
                    ..Limits::default()
                },
                "executor = \"constant-arrival-rate\"\nrate = 50\nduration = \"1s\"\npreAllocatedVUs = 1",
                "above the max_rate cap of 10",
            ),
        ];
        for (limits, scenario, needle) in cases {
            let last = run_share(
                (&limits, &open),
                start(scenario),
                CancellationToken::new(),
                &out,
            )
            .await;
            let Some(agent_message::Msg::LoadProgress(p)) = last.msg else {
                panic!("{last:?}")
            };
            assert!(p.done, "{p:?}");
            assert!(p.error.contains(needle), "{needle}: {p:?}");
        }
    }

    #[test]
    fn run_ids_are_checked() {
        assert!(valid_run_id("lt-1a2b"));
        assert!(!valid_run_id(""));
        assert!(!valid_run_id("a/b"));
        assert!(!valid_run_id(&"a".repeat(65)));
    }
}
