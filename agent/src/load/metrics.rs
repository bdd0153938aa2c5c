//! k6 metrics: names, kinds, and the per-shard recorders the VUs write into.
//!
//! Every VU records into one of a few shards (VU index modulo the shard
//! count), each a [`Stats`] behind a `std::sync::Mutex` that is held only for
//! the few additions of one request and never across an `await`. Once per
//! second the collector folds every shard into the interval totals and resets
//! it (HdrHistogram's phase-shift idea): memory is flat in run length and no
//! per-request record is kept.

use std::sync::{Mutex, MutexGuard, PoisonError};

use hdrhistogram::Histogram;
use vantage_proto::histogram;

/// What kind of values a metric holds (k6 semantics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Durations in ms: `p(N)`, `avg`, `min`, `max`, `med`.
    Trend,
    /// A share in 0..1: `rate`.
    Rate,
    /// A count: `count`, and `rate` per second.
    Counter,
}

/// The metrics a load run records (k6 names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Request time from send to the last body byte (excludes connect and TLS).
    HttpReqDuration,
    /// Time to the first response byte.
    HttpReqWaiting,
    /// TCP connect time (0 on a reused connection).
    HttpReqConnecting,
    /// TLS handshake time (0 on a reused or plain connection).
    HttpReqTlsHandshaking,
    /// Whole iteration time.
    IterationDuration,
    /// Failed requests (network error or status >= 400) / requests.
    HttpReqFailed,
    /// Passed checks / checks.
    Checks,
    /// Requests sent.
    HttpReqs,
    /// Iterations completed.
    Iterations,
    /// Iterations an open-model executor could not start (no free VU).
    DroppedIterations,
}

impl Metric {
    /// Every metric, in summary order.
    pub const ALL: [Metric; 10] = [
        Metric::Checks,
        Metric::DroppedIterations,
        Metric::HttpReqConnecting,
        Metric::HttpReqDuration,
        Metric::HttpReqFailed,
        Metric::HttpReqTlsHandshaking,
        Metric::HttpReqWaiting,
        Metric::HttpReqs,
        Metric::IterationDuration,
        Metric::Iterations,
    ];

    /// The k6 name.
    pub fn name(self) -> &'static str {
        match self {
            Metric::HttpReqDuration => "http_req_duration",
            Metric::HttpReqWaiting => "http_req_waiting",
            Metric::HttpReqConnecting => "http_req_connecting",
            Metric::HttpReqTlsHandshaking => "http_req_tls_handshaking",
            Metric::IterationDuration => "iteration_duration",
            Metric::HttpReqFailed => "http_req_failed",
            Metric::Checks => "checks",
            Metric::HttpReqs => "http_reqs",
            Metric::Iterations => "iterations",
            Metric::DroppedIterations => "dropped_iterations",
        }
    }

    /// The metric called `name`.
    pub fn from_name(name: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Its kind.
    pub fn kind(self) -> MetricKind {
        match self {
            Metric::HttpReqDuration
            | Metric::HttpReqWaiting
            | Metric::HttpReqConnecting
            | Metric::HttpReqTlsHandshaking
            | Metric::IterationDuration => MetricKind::Trend,
            Metric::HttpReqFailed | Metric::Checks => MetricKind::Rate,
            Metric::HttpReqs | Metric::Iterations | Metric::DroppedIterations => {
                MetricKind::Counter
            }
        }
    }
}

/// Histograms and counters of one shard, one interval or a whole run.
#[derive(Debug, Clone)]
pub struct Stats {
    /// `http_req_duration`, µs, from the actual send.
    pub duration: Histogram<u64>,
    /// `http_req_duration` corrected for coordinated omission, µs (open
    /// model; same as `duration` otherwise): from the intended start of the
    /// iteration, plus the samples a stuck VU could not send (see
    /// [`record_corrected`]).
    pub duration_corrected: Histogram<u64>,
    /// `http_req_waiting`, µs.
    pub waiting: Histogram<u64>,
    /// `http_req_connecting`, µs.
    pub connecting: Histogram<u64>,
    /// `http_req_tls_handshaking`, µs.
    pub tls: Histogram<u64>,
    /// `iteration_duration`, µs.
    pub iteration: Histogram<u64>,
    /// `http_reqs`.
    pub reqs: u64,
    /// Requests counted as failed by `http_req_failed`.
    pub failed: u64,
    /// Requests that failed to connect (DNS, TCP or TLS).
    pub connect_errors: u64,
    /// Checks that passed.
    pub checks_pass: u64,
    /// Checks that failed.
    pub checks_fail: u64,
    /// `iterations`.
    pub iterations: u64,
    /// `dropped_iterations`.
    pub dropped: u64,
    /// Response bytes read (body only).
    pub bytes_received: u64,
    /// Request bytes written (request line, headers and body).
    pub bytes_sent: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            duration: histogram::new_latency(),
            duration_corrected: histogram::new_latency(),
            waiting: histogram::new_latency(),
            connecting: histogram::new_latency(),
            tls: histogram::new_latency(),
            iteration: histogram::new_latency(),
            reqs: 0,
            failed: 0,
            connect_errors: 0,
            checks_pass: 0,
            checks_fail: 0,
            iterations: 0,
            dropped: 0,
            bytes_received: 0,
            bytes_sent: 0,
        }
    }
}

impl Stats {
    /// Adds `other` to `self`.
    pub fn merge(&mut self, other: &Stats) {
        histogram::merge(&mut self.duration, &other.duration);
        histogram::merge(&mut self.duration_corrected, &other.duration_corrected);
        histogram::merge(&mut self.waiting, &other.waiting);
        histogram::merge(&mut self.connecting, &other.connecting);
        histogram::merge(&mut self.tls, &other.tls);
        histogram::merge(&mut self.iteration, &other.iteration);
        self.reqs += other.reqs;
        self.failed += other.failed;
        self.connect_errors += other.connect_errors;
        self.checks_pass += other.checks_pass;
        self.checks_fail += other.checks_fail;
        self.iterations += other.iterations;
        self.dropped += other.dropped;
        self.bytes_received += other.bytes_received;
        self.bytes_sent += other.bytes_sent;
    }

    /// Empties every histogram and counter, keeping the allocations.
    pub fn reset(&mut self) {
        for h in [
            &mut self.duration,
            &mut self.duration_corrected,
            &mut self.waiting,
            &mut self.connecting,
            &mut self.tls,
            &mut self.iteration,
        ] {
            h.reset();
        }
        self.reqs = 0;
        self.failed = 0;
        self.connect_errors = 0;
        self.checks_pass = 0;
        self.checks_fail = 0;
        self.iterations = 0;
        self.dropped = 0;
        self.bytes_received = 0;
        self.bytes_sent = 0;
    }

    /// The histogram of a trend metric.
    pub fn trend(&self, metric: Metric) -> Option<&Histogram<u64>> {
        Some(match metric {
            Metric::HttpReqDuration => &self.duration,
            Metric::HttpReqWaiting => &self.waiting,
            Metric::HttpReqConnecting => &self.connecting,
            Metric::HttpReqTlsHandshaking => &self.tls,
            Metric::IterationDuration => &self.iteration,
            _ => return None,
        })
    }

    /// `(hits, total)` of a rate metric.
    pub fn rate(&self, metric: Metric) -> Option<(u64, u64)> {
        match metric {
            Metric::HttpReqFailed => Some((self.failed, self.reqs)),
            Metric::Checks => Some((self.checks_pass, self.checks_pass + self.checks_fail)),
            _ => None,
        }
    }

    /// The count of a counter metric.
    pub fn count(&self, metric: Metric) -> Option<u64> {
        match metric {
            Metric::HttpReqs => Some(self.reqs),
            Metric::Iterations => Some(self.iterations),
            Metric::DroppedIterations => Some(self.dropped),
            _ => None,
        }
    }
}

/// Records a duration in µs, clamped to the histogram's range.
pub fn record(h: &mut Histogram<u64>, micros: u64) {
    histogram::record_micros(h, micros);
}

/// Most synthetic samples one [`record_corrected`] call adds: bounds the work
/// of one very slow response at a very high rate (a 60 s stall at 100,000/s
/// per VU would be 6 million); beyond it the tail is already dominated.
pub const MAX_SYNTHETIC_SAMPLES: u64 = 100_000;

/// Records `micros` and, as wrk2 and HdrHistogram's `recordValueWithExpectedInterval`
/// do, the samples a VU missed while it waited: `micros - interval`,
/// `micros - 2 × interval` ... down to `interval`. `interval` is the time
/// between iterations one VU would start at the scheduled rate with the
/// whole pool busy (`maxVUs / rate`); 0 records `micros` only.
pub fn record_corrected(h: &mut Histogram<u64>, micros: u64, interval: u64) {
    record(h, micros);
    if interval == 0 {
        return;
    }
    let mut missing = micros.saturating_sub(interval);
    let mut n = 0;
    while missing >= interval && n < MAX_SYNTHETIC_SAMPLES {
        record(h, missing);
        missing -= interval;
        n += 1;
    }
}

/// The shards of one scenario.
#[derive(Debug)]
pub struct Shards(Vec<Mutex<Stats>>);

impl Shards {
    /// `n` empty shards (at least one).
    pub fn new(n: usize) -> Self {
        Shards(
            (0..n.max(1))
                .map(|_| Mutex::new(Stats::default()))
                .collect(),
        )
    }

    /// The shard VU `vu` records into.
    pub fn lock(&self, vu: usize) -> MutexGuard<'_, Stats> {
        // A panic while holding the lock cannot leave the counters invalid
        // (they are plain additions), so a poisoned lock is used as is.
        self.0[vu % self.0.len()]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds every shard into `into` and resets them.
    pub fn drain_into(&self, into: &mut Stats) {
        for shard in &self.0 {
            let mut s = shard.lock().unwrap_or_else(PoisonError::into_inner);
            into.merge(&s);
            s.reset();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrected_recording_adds_the_missed_samples() {
        let mut h = histogram::new_latency();
        // A 1 s response when one VU should start every 10 ms: 99 more samples
        // (990 ms, 980 ms ... 10 ms), as HdrHistogram's expected-interval recording.
        record_corrected(&mut h, 1_000_000, 10_000);
        assert_eq!(h.len(), 100);
        assert!(h.value_at_quantile(0.5) >= 490_000);
        let mut plain = histogram::new_latency();
        record_corrected(&mut plain, 5_000, 10_000);
        record_corrected(&mut plain, 1_000_000, 0);
        assert_eq!(plain.len(), 2);
        // Bounded work for absurd ratios.
        let mut huge = histogram::new_latency();
        record_corrected(&mut huge, 3_600_000_000, 1);
        assert_eq!(huge.len(), MAX_SYNTHETIC_SAMPLES + 1);
    }

    #[test]
    fn shards_drain_and_reset() {
        let shards = Shards::new(3);
        for vu in 0..6 {
            let mut s = shards.lock(vu);
            s.reqs += 1;
            record(&mut s.duration, 100);
        }
        let mut total = Stats::default();
        shards.drain_into(&mut total);
        assert_eq!((total.reqs, total.duration.len()), (6, 6));
        let mut again = Stats::default();
        shards.drain_into(&mut again);
        assert_eq!((again.reqs, again.duration.len()), (0, 0));
    }
}
