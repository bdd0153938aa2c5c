//! Open-model executors: `constant-arrival-rate` and `ramping-arrival-rate`
//! share one schedule ([`Due`]) and one dispatcher.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Engine, Intended, ScenarioRun};
use crate::load::file::Stage;

/// The schedule of an arrival-rate executor.
pub struct Due {
    /// Iterations per `unit` at the start.
    pub start_rate: f64,
    /// Rate targets, linear within each stage (one stage at a constant rate
    /// for `constant-arrival-rate`).
    pub stages: Vec<Stage>,
    /// `timeUnit`.
    pub unit: Duration,
}

impl Due {
    /// Length of the schedule.
    pub fn length(&self) -> Duration {
        self.stages.iter().map(|s| s.duration).sum()
    }

    /// Iterations due in `[0, t)`, as a real number.
    pub fn cumulative(&self, t: Duration) -> f64 {
        let unit = self.unit.as_secs_f64();
        let mut from = self.start_rate;
        let mut acc = 0.0;
        let mut t0 = 0.0;
        let t = t.as_secs_f64();
        for s in &self.stages {
            let d = s.duration.as_secs_f64();
            let to = s.target as f64;
            let span = (t - t0).clamp(0.0, d);
            if d > 0.0 {
                // Integral of a linear rate from `from` to `to` over `span`.
                acc += (from * span + (to - from) * span * span / (2.0 * d)) / unit;
            }
            if t <= t0 + d {
                return acc;
            }
            from = to;
            t0 += d;
        }
        acc
    }

    /// Total iterations: those with an intended time before the end.
    pub fn total(&self) -> u64 {
        let c = self.cumulative(self.length());
        // Iteration k is due at t_k with cumulative(t_k) = k; k = 0 is at 0s.
        let whole = c.ceil();
        // Guard floating error: 2999.9999999 is 3000 iterations.
        if (c - c.round()).abs() < 1e-6 {
            c.round() as u64
        } else {
            whole as u64
        }
    }

    /// µs between two iterations of one VU at the rate at `t` when all of
    /// `max_vus` are busy; 0 when the rate is 0.
    pub fn vu_interval(&self, t: Duration, max_vus: u64) -> u64 {
        let step = Duration::from_millis(10);
        let per_sec = (self.cumulative(t + step) - self.cumulative(t)) / step.as_secs_f64();
        if per_sec <= 0.0 {
            return 0;
        }
        (max_vus as f64 * 1e6 / per_sec) as u64
    }

    /// Intended time of iteration `k` (binary search on [`Self::cumulative`]).
    pub fn time_of(&self, k: u64) -> Duration {
        if k == 0 {
            return Duration::ZERO;
        }
        let target = k as f64;
        let (mut lo, mut hi) = (0.0f64, self.length().as_secs_f64());
        for _ in 0..60 {
            let mid = (lo + hi) / 2.0;
            if self.cumulative(Duration::from_secs_f64(mid)) + 1e-9 >= target {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Duration::from_secs_f64(hi)
    }
}

/// Longest the dispatcher thread sleeps at once, so an abort is seen quickly.
const DISPATCH_MAX_SLEEP: Duration = Duration::from_millis(20);

/// Runs an arrival-rate schedule. The dispatcher is a blocking thread that
/// sleeps with the OS timer (tens of µs late) rather than tokio's 1 ms
/// timer wheel, so the corrected latency does not include up to 1 ms of
/// timer slack; VUs run on the runtime.
#[allow(clippy::too_many_arguments)]
pub(super) async fn open(
    sc: &Arc<ScenarioRun>,
    engine: &Arc<Engine>,
    hard: &CancellationToken,
    start: Instant,
    due: Due,
    pre_allocated: u64,
    max_vus: u64,
) {
    let handle = tokio::runtime::Handle::current();
    let (sc, engine, hard) = (Arc::clone(sc), Arc::clone(engine), hard.clone());
    let dispatcher = tokio::task::spawn_blocking(move || {
        let _runtime = handle.enter();
        dispatch(&sc, &engine, &hard, start, &due, pre_allocated, max_vus)
    });
    if let Ok(mut set) = dispatcher.await {
        while set.join_next().await.is_some() {}
    }
}

/// The dispatcher loop (on a blocking thread inside the runtime context);
/// returns the VU tasks, which end after their current iteration.
#[allow(clippy::too_many_arguments)]
fn dispatch(
    sc: &Arc<ScenarioRun>,
    engine: &Arc<Engine>,
    hard: &CancellationToken,
    start: Instant,
    due: &Due,
    pre_allocated: u64,
    max_vus: u64,
) -> JoinSet<()> {
    // VUs hand their index back here when an iteration ends; at most
    // `max_vus` are outstanding, so a send never waits.
    let (free_tx, mut free_rx) = mpsc::channel::<usize>(max_vus.max(1) as usize);
    let mut senders: Vec<mpsc::Sender<Intended>> = Vec::new();
    let mut idle: Vec<usize> = Vec::new();
    let mut set = JoinSet::new();
    let spawn = |index: usize, set: &mut JoinSet<()>| -> Option<mpsc::Sender<Intended>> {
        let mut vu = sc.new_vu(engine, index)?;
        let (tx, mut rx) = mpsc::channel::<Intended>(1);
        let (sc, engine, hard, free_tx) = (
            Arc::clone(sc),
            Arc::clone(engine),
            hard.clone(),
            free_tx.clone(),
        );
        set.spawn(async move {
            while let Some(intended) = rx.recv().await {
                sc.guarded(&engine, &hard, &mut vu, Some(intended)).await;
                if hard.is_cancelled() || free_tx.send(index).await.is_err() {
                    break;
                }
            }
            sc.release(vu);
        });
        Some(tx)
    };
    for index in 0..pre_allocated as usize {
        match spawn(index, &mut set) {
            Some(tx) => {
                senders.push(tx);
                idle.push(index);
            }
            None => break,
        }
    }
    let total = due.total();
    let mut k = 0u64;
    let mut dropped = 0u64;
    while k < total && !hard.is_cancelled() {
        let now = start.elapsed();
        let vu_interval = due.vu_interval(now, max_vus);
        while k < total {
            let at = due.time_of(k);
            if at > now {
                break;
            }
            while let Ok(i) = free_rx.try_recv() {
                idle.push(i);
            }
            let vu = match idle.pop() {
                Some(i) => Some(i),
                None if (senders.len() as u64) < max_vus => match spawn(senders.len(), &mut set) {
                    Some(tx) => {
                        senders.push(tx);
                        Some(senders.len() - 1)
                    }
                    None => None,
                },
                None => None,
            };
            let intended = Intended {
                at: start + at,
                vu_interval,
            };
            match vu.and_then(|i| senders[i].try_send(intended).ok()) {
                Some(()) => {}
                None => dropped += 1,
            }
            k += 1;
        }
        if dropped > 0 {
            sc.shards.lock(0).dropped += dropped;
            dropped = 0;
        }
        if k < total {
            let next = start + due.time_of(k);
            let wait = next.saturating_duration_since(Instant::now());
            std::thread::sleep(wait.min(DISPATCH_MAX_SLEEP));
        }
    }
    // No more iterations: dropping the senders ends each VU after its
    // current one.
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn constant_rate_schedule_is_exact() {
        let due = Due {
            start_rate: 1000.0,
            stages: vec![Stage {
                duration: secs(3),
                target: 1000,
            }],
            unit: secs(1),
        };
        assert_eq!(due.total(), 3000);
        assert_eq!(due.time_of(0), Duration::ZERO);
        let t = due.time_of(1500).as_secs_f64();
        assert!((t - 1.5).abs() < 1e-6, "{t}");
        let per_minute = Due {
            start_rate: 30.0,
            stages: vec![Stage {
                duration: secs(60),
                target: 30,
            }],
            unit: secs(60),
        };
        assert_eq!(per_minute.total(), 30);
    }

    #[test]
    fn ramping_rate_integrates_the_stages() {
        // 0 → 100/s over 10 s (500 iterations), then 100/s for 5 s (500).
        let due = Due {
            start_rate: 0.0,
            stages: vec![
                Stage {
                    duration: secs(10),
                    target: 100,
                },
                Stage {
                    duration: secs(5),
                    target: 100,
                },
            ],
            unit: secs(1),
        };
        assert_eq!(due.total(), 1000);
        assert!((due.cumulative(secs(10)) - 500.0).abs() < 1e-6);
        // Half of the ramp's iterations are due at 10/sqrt(2) s.
        let t = due.time_of(250).as_secs_f64();
        assert!((t - 10.0 / 2f64.sqrt()).abs() < 1e-3, "{t}");
    }
}
