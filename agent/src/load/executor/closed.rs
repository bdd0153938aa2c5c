//! Closed-model executors: `constant-vus`, `per-vu-iterations`,
//! `shared-iterations` (one loop per VU) and `ramping-vus`.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Engine, ScenarioRun, Vu};
use crate::load::file::Stage;

/// How often an idle `ramping-vus` VU looks at the target again: small
/// against a stage, large enough that 1000 idle VUs cost little.
const RAMP_POLL: Duration = Duration::from_millis(20);

/// `vus` VUs, each iterating while `more(vu, iterations_done_by_this_vu)`.
pub(super) async fn closed<F>(
    sc: &Arc<ScenarioRun>,
    engine: &Arc<Engine>,
    hard: &CancellationToken,
    vus: u64,
    more: F,
) where
    F: Fn(usize, u64) -> bool + Clone + Send + Sync + 'static,
{
    // Every VU is allocated before the first starts (as k6 does): a VU that
    // finishes early must not free its slot for the next, or `vus_max`
    // would depend on the machine's speed.
    let mut pool = Vec::with_capacity(vus as usize);
    for index in 0..vus as usize {
        let Some(vu) = sc.new_vu(engine, index) else {
            tracing::warn!(scenario = %sc.scenario.name, "max_vus cap reached: VU {index} not started");
            break;
        };
        pool.push(vu);
    }
    let mut set = JoinSet::new();
    for mut vu in pool {
        let index = vu.index;
        let (sc, engine, hard, more) = (
            Arc::clone(sc),
            Arc::clone(engine),
            hard.clone(),
            more.clone(),
        );
        set.spawn(async move {
            // One wait on `hard` for the VU's whole life rather than one per
            // iteration: an interrupted iteration is still not counted.
            let iterate = async {
                let mut done = 0;
                while more(index, done) {
                    sc.iteration(&engine, &mut vu, None).await;
                    done += 1;
                }
            };
            tokio::select! {
                biased;
                () = hard.cancelled() => {}
                () = iterate => {}
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

pub(super) async fn ramping_vus(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
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
