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
//!
//! This file holds what every executor shares (VUs, one iteration, the
//! engine caps, the start/stop of a scenario); [`closed`] and [`open`] hold
//! the two models.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::client::{micros, Outcome, Prepared, VuClient};
use super::file::{Executor, Scenario, Stage};
use super::metrics::{record, record_corrected, Shards};

pub mod closed;
pub mod open;

pub use closed::ramp_target;
pub use open::Due;

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
            s.bytes_sent += t.sent;
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
            closed::closed(&sc, &engine, &hard, vus, move |_, _| Instant::now() < end).await
        }
        Executor::PerVuIterations {
            vus, iterations, ..
        } => {
            closed::closed(&sc, &engine, &hard, vus, move |_, done| {
                done < iterations && Instant::now() < end
            })
            .await
        }
        Executor::SharedIterations {
            vus, iterations, ..
        } => {
            let left = Arc::new(AtomicU64::new(iterations));
            closed::closed(&sc, &engine, &hard, vus, move |_, _| {
                Instant::now() < end
                    && left
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                        .is_ok()
            })
            .await
        }
        Executor::RampingVus { start_vus, stages } => {
            closed::ramping_vus(&sc, &engine, &hard, start, start_vus, stages).await
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
            open::open(&sc, &engine, &hard, start, due, pre_allocated_vus, max_vus).await
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
            open::open(&sc, &engine, &hard, start, due, pre_allocated_vus, max_vus).await
        }
    }
    hard_timer.abort();
}
