//! The six k6 executors.
//!
//! - Closed model (`constant-vus`, `ramping-vus`, `per-vu-iterations`,
//!   `shared-iterations`): each VU runs iterations back to back; a slow
//!   target slows the load down.
//! - Open model (`constant-arrival-rate`, `ramping-arrival-rate`): a
//!   dispatcher starts iteration `k` at its intended time `t_k`, where
//!   `iterations_due(t_k) = k`. Due iterations are computed from the elapsed
//!   time at each wake-up, so a late timer never loses iterations and the
//!   achieved rate is exact over the run. An iteration that finds no free VU
//!   and the pool at `maxVUs` is dropped and counted (`dropped_iterations`).
//!   Latency is recorded both from the actual send and from the intended
//!   start (coordinated-omission correction, as wrk2).
//!
//! Every executor stops starting iterations at its end; iterations in flight
//! get `gracefulStop`, then are interrupted (not counted), as in k6.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::client::{micros, Outcome, Prepared, VuClient};
use super::file::{Executor, Scenario, Stage};
use super::metrics::{record, record_corrected, Shards};

/// How often an idle `ramping-vus` VU looks at the target again: small
/// against a stage, large enough that 1000 idle VUs cost little.
const RAMP_POLL: Duration = Duration::from_millis(20);

/// What every VU of a scenario shares.
pub struct ScenarioRun {
    /// The scenario.
    pub scenario: Scenario,
    /// Its prepared requests.
    pub requests: Arc<[Prepared]>,
    /// Its origins and TLS config, to build VU clients.
    pub origins: Arc<[super::client::Origin]>,
    /// TLS client config (when an origin is https).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Where VUs record.
    pub shards: Shards,
    /// VUs currently allocated.
    pub vus: AtomicU64,
    /// Most VUs allocated at once.
    pub vus_max: AtomicU64,
}

/// What all scenarios share: caps and the stop signal.
pub struct Engine {
    /// One permit per VU: the engine's own `max_vus` cap.
    pub vu_permits: Arc<Semaphore>,
    /// The engine's own `max_rate` cap.
    pub rate: RateCap,
    /// Cancelled to interrupt everything (abort, or the end of `gracefulStop`
    /// of all scenarios).
    pub abort: CancellationToken,
}

/// Spaces requests so that at most `per_sec` start per second on average
/// since the start of the run, whatever the executors do.
pub struct RateCap {
    start: Instant,
    per_sec: f64,
    sent: AtomicU64,
}

impl RateCap {
    /// A cap of `per_sec` requests per second from now.
    pub fn new(per_sec: f64) -> Self {
        RateCap {
            start: Instant::now(),
            per_sec: per_sec.max(1.0),
            sent: AtomicU64::new(0),
        }
    }

    /// Waits until one more request is within the cap.
    async fn acquire(&self) {
        let n = self.sent.fetch_add(1, Ordering::Relaxed);
        let due = self.start + Duration::from_secs_f64(n as f64 / self.per_sec);
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        }
    }
}

/// When an open-model iteration should have started.
#[derive(Debug, Clone, Copy)]
struct Intended {
    /// The scheduled start.
    at: Instant,
    /// µs between iterations of one VU at the current rate with the whole
    /// pool busy (`maxVUs / rate`), for [`record_corrected`].
    vu_interval: u64,
}

/// A VU: its number, its connections and its permit.
struct Vu {
    index: usize,
    client: VuClient,
    _permit: OwnedSemaphorePermit,
}

impl ScenarioRun {
    fn new_vu(self: &Arc<Self>, engine: &Engine, index: usize) -> Option<Vu> {
        let permit = Arc::clone(&engine.vu_permits).try_acquire_owned().ok()?;
        let now = self.vus.fetch_add(1, Ordering::Relaxed) + 1;
        self.vus_max.fetch_max(now, Ordering::Relaxed);
        Some(Vu {
            index,
            client: VuClient::new(Arc::clone(&self.origins), self.tls.clone()),
            _permit: permit,
        })
    }

    fn release(&self, vu: Vu) {
        self.vus.fetch_sub(1, Ordering::Relaxed);
        drop(vu);
    }

    /// One iteration: every request in order. `intended` is the scheduled
    /// start and the per-VU interval (µs) for open-model executors.
    async fn iteration(&self, engine: &Engine, vu: &mut Vu, intended: Option<Intended>) {
        let start = Instant::now();
        let delay = intended.map_or(0, |i| micros(start.saturating_duration_since(i.at)));
        let interval = intended.map_or(0, |i| i.vu_interval);
        for req in self.requests.iter() {
            engine.rate.acquire().await;
            let (outcome, t) = vu.client.send(req).await;
            let mut s = self.shards.lock(vu.index);
            s.reqs += 1;
            if t.connecting > 0 || t.tls > 0 || !matches!(outcome, Outcome::ConnectFailed) {
                record(&mut s.connecting, t.connecting);
                record(&mut s.tls, t.tls);
            }
            match outcome {
                Outcome::Response {
                    status,
                    bytes,
                    body_matched,
                } => {
                    record(&mut s.duration, t.duration);
                    record_corrected(&mut s.duration_corrected, t.duration + delay, interval);
                    record(&mut s.waiting, t.waiting);
                    s.bytes_received += bytes;
                    if status >= 400 {
                        s.failed += 1;
                    }
                    if let Some(want) = req.check_status {
                        count_check(&mut s, status == want);
                    }
                    if let Some(found) = body_matched {
                        count_check(&mut s, found);
                    }
                }
                Outcome::ConnectFailed | Outcome::Failed => {
                    if matches!(outcome, Outcome::ConnectFailed) {
                        s.connect_errors += 1;
                    }
                    s.failed += 1;
                    for _ in 0..req.check_count() {
                        count_check(&mut s, false);
                    }
                }
            }
        }
        let mut s = self.shards.lock(vu.index);
        s.iterations += 1;
        record(&mut s.iteration, micros(start.elapsed()));
    }

    /// Runs `iteration` unless `hard` fires first (an interrupted iteration
    /// is not counted, as in k6).
    async fn guarded(
        &self,
        engine: &Engine,
        hard: &CancellationToken,
        vu: &mut Vu,
        intended: Option<Intended>,
    ) {
        tokio::select! {
            _ = hard.cancelled() => {}
            _ = self.iteration(engine, vu, intended) => {}
        }
    }
}

fn count_check(s: &mut super::metrics::Stats, pass: bool) {
    if pass {
        s.checks_pass += 1;
    } else {
        s.checks_fail += 1;
    }
}

impl Prepared {
    fn check_count(&self) -> usize {
        usize::from(self.check_status.is_some()) + usize::from(self.check_body.is_some())
    }
}

/// Runs the scenario from `start` (its `startTime` already waited) to its
/// end plus `gracefulStop`.
pub async fn run(sc: Arc<ScenarioRun>, engine: Arc<Engine>) {
    let start = Instant::now();
    let exec = sc.scenario.executor.clone();
    let end = start + exec.duration();
    // Interrupts iterations still running `gracefulStop` after the end.
    let hard = engine.abort.child_token();
    let hard_timer = {
        let hard = hard.clone();
        let at = end + sc.scenario.graceful_stop;
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            hard.cancel();
        })
    };
    match exec {
        Executor::ConstantVus { vus, .. } => {
            closed(&sc, &engine, &hard, vus, move |_, _| Instant::now() < end).await
        }
        Executor::PerVuIterations {
            vus, iterations, ..
        } => {
            closed(&sc, &engine, &hard, vus, move |_, done| {
                done < iterations && Instant::now() < end
            })
            .await
        }
        Executor::SharedIterations {
            vus, iterations, ..
        } => {
            let left = Arc::new(AtomicU64::new(iterations));
            closed(&sc, &engine, &hard, vus, move |_, _| {
                Instant::now() < end
                    && left
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                        .is_ok()
            })
            .await
        }
        Executor::RampingVus { start_vus, stages } => {
            ramping_vus(&sc, &engine, &hard, start, start_vus, stages).await
        }
        Executor::ConstantArrivalRate {
            rate,
            time_unit,
            duration,
            pre_allocated_vus,
            max_vus,
        } => {
            let stages = vec![Stage {
                duration,
                target: rate,
            }];
            let due = Due {
                start_rate: rate as f64,
                stages,
                unit: time_unit,
            };
            open(&sc, &engine, &hard, start, due, pre_allocated_vus, max_vus).await
        }
        Executor::RampingArrivalRate {
            start_rate,
            time_unit,
            stages,
            pre_allocated_vus,
            max_vus,
        } => {
            let due = Due {
                start_rate: start_rate as f64,
                stages,
                unit: time_unit,
            };
            open(&sc, &engine, &hard, start, due, pre_allocated_vus, max_vus).await
        }
    }
    hard_timer.abort();
}

/// `vus` VUs, each iterating while `more(vu, iterations_done_by_this_vu)`.
async fn closed<F>(
    sc: &Arc<ScenarioRun>,
    engine: &Arc<Engine>,
    hard: &CancellationToken,
    vus: u64,
    more: F,
) where
    F: Fn(usize, u64) -> bool + Clone + Send + Sync + 'static,
{
    let mut set = JoinSet::new();
    for index in 0..vus as usize {
        let Some(mut vu) = sc.new_vu(engine, index) else {
            tracing::warn!(scenario = %sc.scenario.name, "max_vus cap reached: VU {index} not started");
            break;
        };
        let (sc, engine, hard, more) = (
            Arc::clone(sc),
            Arc::clone(engine),
            hard.clone(),
            more.clone(),
        );
        set.spawn(async move {
            let mut done = 0;
            while !hard.is_cancelled() && more(index, done) {
                sc.guarded(&engine, &hard, &mut vu, None).await;
                done += 1;
            }
            sc.release(vu);
        });
    }
    while set.join_next().await.is_some() {}
}

/// VUs at `elapsed` for `ramping-vus`: linear within each stage; `None`
/// after the last stage.
pub fn ramp_target(start: u64, stages: &[Stage], elapsed: Duration) -> Option<u64> {
    let mut from = start as f64;
    let mut t0 = Duration::ZERO;
    for s in stages {
        let t1 = t0 + s.duration;
        if elapsed < t1 {
            let frac = (elapsed - t0).as_secs_f64() / s.duration.as_secs_f64();
            return Some((from + (s.target as f64 - from) * frac).round() as u64);
        }
        from = s.target as f64;
        t0 = t1;
    }
    None
}

async fn ramping_vus(
    sc: &Arc<ScenarioRun>,
    engine: &Arc<Engine>,
    hard: &CancellationToken,
    start: Instant,
    start_vus: u64,
    stages: Vec<Stage>,
) {
    let max = stages.iter().map(|s| s.target).fold(start_vus, u64::max);
    let stages: Arc<[Stage]> = stages.into();
    let mut set = JoinSet::new();
    for index in 0..max as usize {
        let (sc, engine, hard, stages) = (
            Arc::clone(sc),
            Arc::clone(engine),
            hard.clone(),
            Arc::clone(&stages),
        );
        set.spawn(async move {
            let mut vu: Option<Vu> = None;
            while !hard.is_cancelled() {
                let Some(target) = ramp_target(start_vus, &stages, start.elapsed()) else {
                    break;
                };
                if (index as u64) < target {
                    if vu.is_none() {
                        vu = sc.new_vu(&engine, index);
                    }
                    let Some(v) = vu.as_mut() else { break };
                    sc.guarded(&engine, &hard, v, None).await;
                } else {
                    // Ramped down (or not yet up): give the VU back.
                    if let Some(v) = vu.take() {
                        sc.release(v);
                    }
                    tokio::time::sleep(RAMP_POLL).await;
                }
            }
            if let Some(v) = vu.take() {
                sc.release(v);
            }
        });
    }
    while set.join_next().await.is_some() {}
}

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
async fn open(
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

    #[test]
    fn ramp_target_is_linear_per_stage() {
        let stages = [
            Stage {
                duration: secs(10),
                target: 10,
            },
            Stage {
                duration: secs(10),
                target: 0,
            },
        ];
        assert_eq!(ramp_target(0, &stages, secs(0)), Some(0));
        assert_eq!(ramp_target(0, &stages, secs(5)), Some(5));
        assert_eq!(ramp_target(0, &stages, secs(10)), Some(10));
        assert_eq!(ramp_target(0, &stages, secs(15)), Some(5));
        assert_eq!(ramp_target(0, &stages, secs(20)), None);
    }
}
