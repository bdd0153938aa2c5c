//! Aggregates probe outcomes into per-check windows aligned to the wall clock
//! (every agent's window `[k·len, (k+1)·len)` lines up, so regions merge by
//! start time) and hands closed windows to the spool.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use tokio::sync::{mpsc, watch};
use vantage_proto::histogram;
use vantage_proto::v1::{self, Phase};

use crate::probe::ProbeOutcome;
use crate::scheduler::Lag;
use crate::spool::Spool;

/// Longest error text kept per window (the coordinator refuses longer).
const MAX_ERROR_TEXT: usize = 512;

/// Accumulates one check's outcomes for one window.
#[derive(Default)]
struct WindowAcc {
    attempts: u64,
    successes: u64,
    errors: HashMap<i32, u64>,
    /// Each phase's durations in µs. Kept as values while the window is
    /// open and turned into a histogram only when it closes: a check makes
    /// at most window / interval attempts (1,500 at the extremes, 5 m and
    /// 200 ms), while one open latency histogram per phase costs about
    /// 190 KB, which made an agent's memory grow by some 0.6 MiB per check.
    phases: HashMap<i32, Vec<u64>>,
    tls: Option<v1::TlsFacts>,
    last_status: u32,
    last_error: String,
    consecutive_failures: u32,
    late_attempts: u64,
    max_lag_ms: u32,
}

impl WindowAcc {
    /// Adds one outcome; `streak` is the check's failures in a row including
    /// this outcome.
    fn record(&mut self, o: &ProbeOutcome, streak: u32, lag: Lag) {
        self.attempts += 1;
        self.consecutive_failures = streak;
        if lag.late {
            self.late_attempts += 1;
        }
        self.max_lag_ms = self
            .max_lag_ms
            .max(u32::try_from(lag.lag.as_millis()).unwrap_or(u32::MAX));
        match &o.error {
            None => self.successes += 1,
            Some(e) => {
                *self.errors.entry(e.class as i32).or_default() += 1;
                self.last_error = e.message.chars().take(MAX_ERROR_TEXT).collect();
            }
        }
        let p = &o.phases;
        let timed = [
            (Phase::Dns, p.dns),
            (Phase::Connect, p.connect),
            (Phase::Tls, p.tls),
            (Phase::Waiting, p.waiting),
            (Phase::Total, Some(p.total)),
        ];
        for (phase, d) in timed {
            if let Some(d) = d {
                self.phases
                    .entry(phase as i32)
                    .or_default()
                    .push(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
            }
        }
        if let Some(t) = &o.tls {
            self.tls = Some(t.clone());
        }
        if let Some(s) = o.status {
            self.last_status = u32::from(s);
        }
    }

    fn into_window(self, check: String, start_ms: i64, len: Duration) -> v1::Window {
        let mut errors: Vec<_> = self
            .errors
            .into_iter()
            .map(|(class, count)| v1::ErrorCount { class, count })
            .collect();
        errors.sort_by_key(|e| e.class);
        let mut phases: Vec<_> = self
            .phases
            .into_iter()
            .map(|(phase, values)| v1::PhaseHistogram {
                phase,
                histogram: encode_values(&values),
            })
            .collect();
        phases.sort_by_key(|p| p.phase);
        v1::Window {
            check,
            start_unix_ms: start_ms,
            duration_ms: u32::try_from(len.as_millis()).unwrap_or(u32::MAX),
            attempts: self.attempts,
            successes: self.successes,
            errors,
            phases,
            tls: self.tls,
            last_status: self.last_status,
            last_error: self.last_error,
            consecutive_failures: self.consecutive_failures,
            late_attempts: self.late_attempts,
            max_lag_ms: self.max_lag_ms,
        }
    }
}

/// The encoded latency histogram of `micros` (one histogram alive at a time).
fn encode_values(micros: &[u64]) -> Vec<u8> {
    let mut h: Histogram<u64> = histogram::new_latency();
    for &v in micros {
        histogram::record_micros(&mut h, v);
    }
    histogram::encode(&h)
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn window_start(t_ms: i64, len_ms: i64) -> i64 {
    t_ms.div_euclid(len_ms) * len_ms
}

/// The open windows of every check.
pub struct Recorder {
    len: Duration,
    open_start: i64,
    open: HashMap<String, WindowAcc>,
    /// Failures in a row per check, carried across windows.
    streaks: HashMap<String, u32>,
}

impl Recorder {
    /// A recorder with windows of `len`, the first one containing `now`.
    pub fn new(len: Duration, now: SystemTime) -> Self {
        let len = len.max(Duration::from_millis(100));
        Recorder {
            open_start: window_start(unix_ms(now), len.as_millis() as i64),
            len,
            open: HashMap::new(),
            streaks: HashMap::new(),
        }
    }

    /// Records an outcome into the open window. An attempt that started in a
    /// window already closed (a slow probe) counts in the open one, so a window
    /// is never sent twice.
    pub fn record(&mut self, check: &str, outcome: &ProbeOutcome) {
        self.record_timed(check, outcome, Lag::default());
    }

    /// [`Recorder::record`] for an attempt that started `lag` behind its
    /// schedule. A late failure does not count towards the failures in a row
    /// (the `down` rule): an overloaded agent must not declare a target down.
    pub fn record_timed(&mut self, check: &str, outcome: &ProbeOutcome, lag: Lag) {
        let streak = self.streaks.entry(check.to_owned()).or_default();
        *streak = if outcome.is_success() {
            0
        } else if lag.late {
            *streak
        } else {
            streak.saturating_add(1)
        };
        let streak = *streak;
        self.open
            .entry(check.to_owned())
            .or_default()
            .record(outcome, streak, lag);
    }

    /// When the open window ends.
    pub fn open_end(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis((self.open_start + self.len.as_millis() as i64) as u64)
    }

    /// Closes the open window if `now` is past its end (or `force`), returning
    /// its windows, and opens the window containing `now` with length `len`.
    pub fn roll(&mut self, now: SystemTime, len: Duration, force: bool) -> Vec<v1::Window> {
        if !force && now < self.open_end() {
            return Vec::new();
        }
        // A window closed early (shutdown, a new window length) says how
        // long it really was.
        let len_ms = self.len.as_millis() as i64;
        let ran_ms = (unix_ms(now) - self.open_start).clamp(1, len_ms.max(1));
        let closed_len = Duration::from_millis(ran_ms as u64);
        let closed: Vec<_> = self
            .open
            .drain()
            .map(|(check, acc)| acc.into_window(check, self.open_start, closed_len))
            .collect();
        self.len = len.max(Duration::from_millis(100));
        self.open_start = window_start(unix_ms(now), self.len.as_millis() as i64);
        closed
    }
}

/// Runs until `results` closes, then pushes the last partial window.
pub async fn run(
    mut results: mpsc::Receiver<crate::scheduler::Outcome>,
    mut window_len: watch::Receiver<Duration>,
    spool: Arc<Spool>,
) {
    let mut rec = Recorder::new(*window_len.borrow_and_update(), SystemTime::now());
    let mut watching = true;
    loop {
        let wait = rec
            .open_end()
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        tokio::select! {
            r = results.recv() => match r {
                Some((check, outcome, lag)) => rec.record_timed(&check, &outcome, lag),
                None => {
                    store(&spool, rec.roll(SystemTime::now(), rec.len, true)).await;
                    return;
                }
            },
            _ = tokio::time::sleep(wait) => {
                let len = *window_len.borrow();
                if let Ok(late) = SystemTime::now().duration_since(rec.open_end()) {
                    if late >= Duration::from_millis(100) {
                        tracing::debug!(late_ms = late.as_millis() as u64, "window closed late");
                    }
                }
                store(&spool, rec.roll(SystemTime::now(), len, false)).await;
            }
            // The coordinator's window length (its Welcome) applies at once:
            // the open window closes early rather than running out the
            // agent's 10 s default.
            changed = window_len.changed(), if watching => {
                match changed {
                    Ok(()) => {
                        let len = *window_len.borrow_and_update();
                        if len != rec.len {
                            store(&spool, rec.roll(SystemTime::now(), len, true)).await;
                        }
                    }
                    Err(_) => watching = false,
                }
            }
        }
    }
}

/// A spool write slower than this is logged as a warning: until it ends, the
/// closed windows are only in memory.
const SLOW_STORE_MS: u64 = 1_000;

/// Hands closed windows to the spool, which flushes them to disk (off the
/// async threads). A window the spool cannot store is reported and lost: it
/// was never acknowledged to anyone.
async fn store(spool: &Arc<Spool>, windows: Vec<vantage_proto::v1::Window>) {
    if windows.is_empty() {
        return;
    }
    let count = windows.len();
    let first_start = windows.iter().map(|w| w.start_unix_ms).min();
    let s = Arc::clone(spool);
    let began = std::time::Instant::now();
    match tokio::task::spawn_blocking(move || s.push(windows)).await {
        Ok(Ok(seqs)) => {
            let took_ms = began.elapsed().as_millis() as u64;
            if took_ms >= SLOW_STORE_MS {
                tracing::warn!(
                    windows = count,
                    ?seqs,
                    took_ms,
                    "spool: storing windows was slow (disk busy?)"
                );
            } else {
                tracing::debug!(
                    windows = count,
                    ?seqs,
                    ?first_start,
                    took_ms,
                    "spool: windows stored"
                );
            }
        }
        Ok(Err(e)) => {
            tracing::error!(windows = count, error = %e, "spool: storing windows failed, they are lost");
        }
        Err(e) => {
            tracing::error!(windows = count, error = %e, "spool: the store task failed, windows lost");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::{Phases, ProbeError};
    use vantage_proto::v1::ErrorClass;

    fn outcome(ms: u64, err: Option<ErrorClass>) -> ProbeOutcome {
        ProbeOutcome {
            started: SystemTime::now(),
            error: err.map(|c| ProbeError::new(c, "boom")),
            phases: Phases {
                dns: Some(Duration::from_millis(1)),
                connect: None,
                tls: None,
                waiting: Some(Duration::from_millis(ms / 2)),
                total: Duration::from_millis(ms),
            },
            status: Some(200),
            tls: None,
            http_version: None,
            redirects: 0,
            final_url: None,
        }
    }

    #[test]
    fn windows_align_to_the_clock_and_carry_histograms() {
        let t0 = UNIX_EPOCH + Duration::from_millis(10_250);
        let mut rec = Recorder::new(Duration::from_secs(1), t0);
        assert_eq!(rec.open_end(), UNIX_EPOCH + Duration::from_millis(11_000));
        rec.record("web", &outcome(100, None));
        rec.record("web", &outcome(300, Some(ErrorClass::Timeout)));
        rec.record("db", &outcome(5, None));
        assert!(rec
            .roll(
                t0 + Duration::from_millis(100),
                Duration::from_secs(1),
                false
            )
            .is_empty());
        let mut out = rec.roll(
            t0 + Duration::from_millis(800),
            Duration::from_secs(1),
            false,
        );
        out.sort_by(|a, b| a.check.cmp(&b.check));
        assert_eq!(out.len(), 2);
        let web = &out[1];
        assert_eq!((web.start_unix_ms, web.duration_ms), (10_000, 1000));
        assert_eq!((web.attempts, web.successes), (2, 1));
        assert_eq!(
            web.errors,
            [v1::ErrorCount {
                class: ErrorClass::Timeout as i32,
                count: 1
            }]
        );
        assert_eq!(web.last_error, "boom");
        let phases: Vec<_> = web.phases.iter().map(|p| p.phase).collect();
        assert_eq!(
            phases,
            [
                Phase::Dns as i32,
                Phase::Waiting as i32,
                Phase::Total as i32
            ]
        );
        let total = histogram::decode(&web.phases[2].histogram).unwrap();
        assert_eq!(total.len(), 2);
        assert!(total.max() >= 299_000 && total.max() <= 301_000);
        // The next window opened at 11 s; nothing recorded, nothing sent.
        assert!(rec
            .roll(
                t0 + Duration::from_millis(1800),
                Duration::from_secs(1),
                false
            )
            .is_empty());
    }

    #[test]
    fn late_attempts_are_counted_and_late_failures_leave_the_streak_alone() {
        let t0 = UNIX_EPOCH + Duration::from_millis(50_000);
        let second = Duration::from_secs(1);
        let mut rec = Recorder::new(second, t0);
        let fail = || outcome(10, Some(ErrorClass::Status));
        let late = Lag {
            lag: Duration::from_millis(1500),
            late: true,
        };
        rec.record("web", &fail());
        rec.record_timed("web", &fail(), late);
        rec.record_timed("web", &fail(), late);
        let out = rec.roll(t0 + second, second, false);
        assert_eq!(out[0].attempts, 3);
        assert_eq!((out[0].late_attempts, out[0].max_lag_ms), (2, 1500));
        assert_eq!(
            out[0].consecutive_failures, 1,
            "only the on-time failure counts"
        );
        // A late success is still a success.
        rec.record_timed("web", &outcome(5, None), late);
        let out = rec.roll(t0 + 2 * second, second, false);
        assert_eq!(out[0].consecutive_failures, 0);
    }

    #[test]
    fn failures_in_a_row_carry_across_windows_and_reset_on_success() {
        let t0 = UNIX_EPOCH + Duration::from_millis(50_000);
        let second = Duration::from_secs(1);
        let mut rec = Recorder::new(second, t0);
        let fail = || outcome(10, Some(ErrorClass::Connect));
        rec.record("web", &fail());
        rec.record("web", &fail());
        rec.record("db", &outcome(5, None));
        let mut out = rec.roll(t0 + second, second, false);
        out.sort_by(|a, b| a.check.cmp(&b.check));
        assert_eq!(out[0].consecutive_failures, 0, "db");
        assert_eq!(out[1].consecutive_failures, 2, "web");

        rec.record("web", &fail());
        let out = rec.roll(t0 + 2 * second, second, false);
        assert_eq!(
            out[0].consecutive_failures, 3,
            "counted into the earlier window"
        );

        rec.record("web", &fail());
        rec.record("web", &outcome(10, None));
        let out = rec.roll(t0 + 3 * second, second, false);
        assert_eq!(out[0].consecutive_failures, 0, "the last attempt succeeded");
    }

    #[test]
    fn a_window_length_change_applies_at_the_next_boundary() {
        let t0 = UNIX_EPOCH + Duration::from_millis(20_500);
        let mut rec = Recorder::new(Duration::from_secs(1), t0);
        rec.roll(
            t0 + Duration::from_millis(600),
            Duration::from_secs(10),
            false,
        );
        assert_eq!(rec.open_end(), UNIX_EPOCH + Duration::from_millis(30_000));
    }
}
