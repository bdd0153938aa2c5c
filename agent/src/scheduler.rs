//! Runs the assigned checks on their intervals.
//!
//! Each check gets its own task with a random initial offset (so a hundred
//! 10-second checks do not all fire on the same tick), a missed-tick policy of
//! "skip" (a probe slower than its interval delays, never piles up), and a
//! shared semaphore capping probes in flight. Outcomes go to the recorder over a
//! bounded channel; when it is full the probe task waits (probes are few and the
//! spool behind the recorder is the real buffer).

use crate::egress::EgressPolicy;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use vantage_proto::spec::Check;
use vantage_proto::v1::ErrorClass;

use crate::probe::{self, Phases, ProbeError, ProbeOutcome};

/// Probes allowed in flight at once by default.
pub const DEFAULT_MAX_CONCURRENT_PROBES: usize = 64;
/// Slack on top of a check's timeout before the scheduler gives up on a probe
/// that failed to honour it (a probe bug, not a slow target).
const PROBE_OVERRUN_SLACK: Duration = Duration::from_secs(2);

/// Check name, the outcome of one attempt, and how late it started.
pub type Outcome = (String, ProbeOutcome, Lag);

/// How far behind its schedule an attempt started (scheduler honesty: an
/// overloaded agent says so instead of reporting a quiet gap).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lag {
    /// Start time minus scheduled time (waiting for a probe slot included).
    pub lag: Duration,
    /// `lag` above [`late_after`] of the check's interval.
    pub late: bool,
}

/// An attempt is late when it starts more than this after its scheduled
/// time: a quarter of the interval, at least 250 ms.
pub fn late_after(interval: Duration) -> Duration {
    (interval / 4).max(Duration::from_millis(250))
}

/// Runs until `checks` closes or `stop` fires, then stops every check task.
pub async fn run(
    mut checks: watch::Receiver<Vec<Check>>,
    results: mpsc::Sender<Outcome>,
    max_concurrent: usize,
    egress: Arc<EgressPolicy>,
    stop: tokio_util::sync::CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(max_concurrent.max(1)));
    let mut running: HashMap<String, (Check, JoinHandle<()>)> = HashMap::new();
    loop {
        let desired = checks.borrow_and_update().clone();
        apply(&mut running, desired, &results, &permits, &egress);
        tokio::select! {
            changed = checks.changed() => if changed.is_err() { break },
            _ = stop.cancelled() => break,
        }
    }
    for (_, (_, task)) in running.drain() {
        task.abort();
        let _ = task.await;
    }
}

/// Starts new and changed checks, stops removed and changed ones.
fn apply(
    running: &mut HashMap<String, (Check, JoinHandle<()>)>,
    desired: Vec<Check>,
    results: &mpsc::Sender<Outcome>,
    permits: &Arc<Semaphore>,
    egress: &Arc<EgressPolicy>,
) {
    let keep: HashMap<&str, &Check> = desired.iter().map(|c| (c.name.as_str(), c)).collect();
    running.retain(|name, (check, task)| {
        let same = keep.get(name.as_str()).is_some_and(|c| *c == check);
        if !same {
            task.abort();
        }
        same
    });
    for check in desired {
        if running.contains_key(&check.name) {
            continue;
        }
        let probe = match probe::build(&check, egress) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(check = %check.name, error = %e, "cannot run check on this agent");
                continue;
            }
        };
        let task = tokio::spawn(check_loop(
            check.clone(),
            probe,
            results.clone(),
            Arc::clone(permits),
        ));
        running.insert(check.name.clone(), (check, task));
    }
}

async fn check_loop(
    check: Check,
    probe: Box<dyn probe::Probe>,
    results: mpsc::Sender<Outcome>,
    permits: Arc<Semaphore>,
) {
    let interval_ms = check.interval.as_millis().max(1) as u64;
    let offset = Duration::from_millis(rand::random_range(0..interval_ms));
    let mut ticks = tokio::time::interval_at(Instant::now() + offset, check.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let limit = check.timeout + PROBE_OVERRUN_SLACK;
    let late = late_after(check.interval);
    loop {
        let scheduled = ticks.tick().await;
        // Invariant: the semaphore is owned here and never closed.
        let permit = permits.acquire().await.expect("semaphore never closed");
        let lag = scheduled.elapsed();
        let lag = Lag {
            lag,
            late: lag > late,
        };
        if lag.late {
            tracing::debug!(check = %check.name, ?lag, "check started late");
        }
        let started = SystemTime::now();
        let outcome = match tokio::time::timeout(limit, probe.run()).await {
            Ok(o) => o,
            Err(_) => overrun(started, limit),
        };
        drop(permit);
        if results
            .send((check.name.clone(), outcome, lag))
            .await
            .is_err()
        {
            return;
        }
    }
}

fn overrun(started: SystemTime, limit: Duration) -> ProbeOutcome {
    ProbeOutcome {
        started,
        error: Some(ProbeError::new(
            ErrorClass::Timeout,
            format!("probe did not finish within {limit:?}"),
        )),
        phases: Phases {
            total: limit,
            ..Phases::default()
        },
        status: None,
        tls: None,
        http_version: None,
        redirects: 0,
        final_url: None,
    }
}
