//! Summaries of a check over a sliding window: stored per-interval windows are
//! merged per region and across regions (histograms merge without loss of
//! percentile accuracy), giving percentiles, availability, error counts and the
//! latest TLS facts.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;
use vantage_proto::histogram;
use vantage_proto::threshold::Aggregate;
use vantage_proto::v1::{self, ChainStatus, ErrorClass, Phase};

use crate::store::StoredWindow;

/// Percentiles of one latency distribution, in milliseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Latency {
    /// Samples in the distribution.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest sample.
    pub max: f64,
    /// Arithmetic mean.
    pub avg: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Option<Self> {
        if h.is_empty() {
            return None;
        }
        let ms = |us: u64| (us as f64 / 1000.0 * 1000.0).round() / 1000.0;
        Some(Latency {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.50)),
            p95: ms(h.value_at_quantile(0.95)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
            avg: (h.mean() / 1000.0 * 1000.0).round() / 1000.0,
        })
    }
}

/// Certificate facts from the most recent window that carried them.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TlsSummary {
    /// Whole days until the leaf expires; negative once expired.
    pub days_left: i64,
    /// Leaf notAfter, unix seconds.
    pub not_after_unix: i64,
    /// Earliest notAfter in the presented chain, unix seconds.
    pub chain_earliest_not_after_unix: i64,
    /// Leaf subject.
    pub subject: String,
    /// Leaf issuer.
    pub issuer: String,
    /// Whether the certificate is valid for the probed name.
    pub san_match: bool,
    /// `valid`, `expired`, `self_signed`, `unknown_issuer`, `name_mismatch` ...
    pub chain_status: String,
    /// `TLSv1.2` / `TLSv1.3`.
    pub protocol_version: String,
}

/// One region's (or all regions') view of a check.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RegionSummary {
    /// `up`, `degraded`, `down`, `late` or `no data` (set by the API for
    /// its window and the check's interval: [`crate::status::state_of`]).
    pub state: &'static str,
    /// Whether every attempt of the newest window succeeded (`null`
    /// without attempts).
    pub last_window_ok: Option<bool>,
    /// Region name, or `all` for the merge of every region.
    pub region: String,
    /// Agents whose windows are included.
    pub agents: Vec<String>,
    /// Number of windows merged.
    pub windows: u64,
    /// Probe attempts.
    pub attempts: u64,
    /// Successful attempts.
    pub successes: u64,
    /// `successes / attempts` in percent; `null` without attempts.
    pub availability: Option<f64>,
    /// Whole-attempt latency (`http_req_duration` for http).
    pub latency_ms: Option<Latency>,
    /// Per-phase latency by k6-style phase name (`dns`, `connect`, `tls`,
    /// `waiting`).
    pub phases_ms: BTreeMap<&'static str, Latency>,
    /// Failures by class.
    pub errors: BTreeMap<&'static str, u64>,
    /// Attempts that started late because their agent was overloaded
    /// (they never count towards `down`).
    pub late_attempts: u64,
    /// Largest start lag of an attempt, ms (`null` without attempts).
    pub max_lag_ms: Option<u32>,
    /// Latest TLS facts.
    pub tls: Option<TlsSummary>,
    /// HTTP status of the latest window that had one.
    pub last_status: Option<u32>,
    /// Reason of the latest failure, if any.
    pub last_error: Option<String>,
    /// End of the newest window, unix milliseconds.
    pub last_window_end_unix_ms: Option<i64>,
}

/// Short lower-case name of a phase, as used in the API.
pub fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Dns => "dns",
        Phase::Connect => "connect",
        Phase::Tls => "tls",
        Phase::Waiting => "waiting",
        Phase::Total => "total",
        Phase::Unspecified => "unspecified",
    }
}

/// Short lower-case name of an error class, as used in the API.
pub fn error_class_name(c: ErrorClass) -> &'static str {
    match c {
        ErrorClass::Dns => "dns",
        ErrorClass::Connect => "connect",
        ErrorClass::Tls => "tls",
        ErrorClass::Timeout => "timeout",
        ErrorClass::Status => "status",
        ErrorClass::Body => "body",
        ErrorClass::Egress => "egress",
        ErrorClass::Audit => "audit",
        ErrorClass::Unspecified => "other",
    }
}

/// Short lower-case name of a chain status, as used in the API.
pub fn chain_status_name(s: ChainStatus) -> &'static str {
    match s {
        ChainStatus::Valid => "valid",
        ChainStatus::Expired => "expired",
        ChainStatus::NotYetValid => "not_yet_valid",
        ChainStatus::UnknownIssuer => "unknown_issuer",
        ChainStatus::SelfSigned => "self_signed",
        ChainStatus::NameMismatch => "name_mismatch",
        ChainStatus::Revoked => "revoked",
        ChainStatus::Invalid => "invalid",
        ChainStatus::Unspecified => "unknown",
    }
}

/// Windows of one region (or all regions) merged: histograms added, counts
/// summed, the newest facts kept. Rules are measured on this.
#[derive(Default)]
pub struct Merged {
    agents: Vec<String>,
    windows: u64,
    attempts: u64,
    successes: u64,
    late_attempts: u64,
    max_lag_ms: u32,
    phases: BTreeMap<i32, Histogram<u64>>,
    errors: BTreeMap<&'static str, u64>,
    // (window start, value) of the newest window that carried each fact.
    tls: Option<(i64, v1::TlsFacts)>,
    last_status: Option<(i64, u32)>,
    last_error: Option<(i64, String)>,
    last_end: Option<i64>,
    // (window start, failures in a row) of the newest window.
    streak: Option<(i64, u32)>,
    // (window start, every attempt succeeded) of the newest window.
    newest_ok: Option<(i64, bool)>,
}

impl Merged {
    /// The value a threshold's aggregate compares against: latency in ms,
    /// `rate` and `availability` from the attempts, `days_left` from the
    /// newest TLS facts. `None` when there is nothing to measure.
    pub fn measure(&self, aggregate: Aggregate) -> Option<f64> {
        let ms = |us: f64| us / 1000.0;
        let total = self
            .phases
            .get(&(Phase::Total as i32))
            .filter(|h| !h.is_empty());
        match aggregate {
            Aggregate::Percentile(p) => total.map(|h| ms(h.value_at_quantile(p / 100.0) as f64)),
            Aggregate::Med => total.map(|h| ms(h.value_at_quantile(0.5) as f64)),
            Aggregate::Avg => total.map(|h| ms(h.mean())),
            Aggregate::Min => total.map(|h| ms(h.min() as f64)),
            Aggregate::Max => total.map(|h| ms(h.max() as f64)),
            Aggregate::Count => (self.windows > 0).then_some(self.attempts as f64),
            Aggregate::Rate => (self.attempts > 0).then(|| {
                (self.attempts - self.successes.min(self.attempts)) as f64 / self.attempts as f64
            }),
            Aggregate::Availability => (self.attempts > 0)
                .then(|| self.successes.min(self.attempts) as f64 / self.attempts as f64 * 100.0),
            Aggregate::DaysLeft => self.tls.as_ref().map(|(_, t)| t.days_left as f64),
        }
    }

    /// Failures in a row at the end of the newest window.
    pub fn consecutive_failures(&self) -> Option<u32> {
        self.streak.map(|(_, n)| n)
    }

    /// End of the newest window, unix ms.
    pub fn last_end_unix_ms(&self) -> Option<i64> {
        self.last_end
    }

    /// The newest failure reason.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_ref().map(|(_, e)| e.as_str())
    }

    fn add(&mut self, agent: &str, w: &v1::Window) {
        if !self.agents.iter().any(|a| a == agent) {
            self.agents.push(agent.to_owned());
        }
        self.windows += 1;
        self.attempts += w.attempts;
        self.successes += w.successes;
        self.late_attempts += w.late_attempts;
        self.max_lag_ms = self.max_lag_ms.max(w.max_lag_ms);
        for p in &w.phases {
            // Histograms were validated at ingest; a stored one that does not
            // decode is skipped rather than failing the whole summary.
            if let Ok(h) = histogram::decode(&p.histogram) {
                let acc = self
                    .phases
                    .entry(p.phase)
                    .or_insert_with(histogram::new_latency);
                histogram::merge(acc, &h);
            }
        }
        for e in &w.errors {
            let class = ErrorClass::try_from(e.class).unwrap_or(ErrorClass::Unspecified);
            *self.errors.entry(error_class_name(class)).or_default() += e.count;
        }
        let start = w.start_unix_ms;
        if let Some(t) = &w.tls {
            keep_newest(&mut self.tls, start, t);
        }
        if w.last_status != 0 {
            keep_newest(&mut self.last_status, start, &w.last_status);
        }
        if !w.last_error.is_empty() {
            keep_newest(&mut self.last_error, start, &w.last_error);
        }
        if w.attempts > 0 {
            keep_newest(&mut self.streak, start, &w.consecutive_failures);
            keep_newest(&mut self.newest_ok, start, &(w.successes >= w.attempts));
        }
        let end = start + i64::from(w.duration_ms);
        self.last_end = Some(self.last_end.map_or(end, |e| e.max(end)));
    }

    fn finish(self, region: String) -> RegionSummary {
        let total = self.phases.get(&(Phase::Total as i32));
        let phases_ms = self
            .phases
            .iter()
            .filter(|(p, _)| **p != Phase::Total as i32)
            .filter_map(|(p, h)| {
                let phase = Phase::try_from(*p).ok()?;
                Some((phase_name(phase), Latency::of(h)?))
            })
            .collect();
        RegionSummary {
            state: "no data",
            last_window_ok: self.newest_ok.map(|(_, ok)| ok),
            region,
            agents: self.agents,
            windows: self.windows,
            attempts: self.attempts,
            successes: self.successes,
            availability: (self.attempts > 0).then(|| {
                (self.successes as f64 / self.attempts as f64 * 100_000.0).round() / 1000.0
            }),
            latency_ms: total.and_then(Latency::of),
            phases_ms,
            errors: self.errors,
            late_attempts: self.late_attempts,
            max_lag_ms: (self.attempts > 0).then_some(self.max_lag_ms),
            tls: self.tls.map(|(_, t)| TlsSummary {
                days_left: t.days_left,
                not_after_unix: t.not_after_unix,
                chain_earliest_not_after_unix: t.chain_earliest_not_after_unix,
                chain_status: chain_status_name(
                    ChainStatus::try_from(t.chain_status).unwrap_or(ChainStatus::Unspecified),
                )
                .to_owned(),
                subject: t.subject,
                issuer: t.issuer,
                san_match: t.san_match,
                protocol_version: t.protocol_version,
            }),
            last_status: self.last_status.map(|(_, s)| s),
            last_error: self.last_error.map(|(_, e)| e),
            last_window_end_unix_ms: self.last_end,
        }
    }
}

/// Replaces `slot` with `value` unless `slot` holds a value from a later window.
fn keep_newest<T: Clone>(slot: &mut Option<(i64, T)>, start: i64, value: &T) {
    if slot.as_ref().is_none_or(|(t, _)| *t <= start) {
        *slot = Some((start, value.clone()));
    }
}

/// Windows merged per region (sorted by name) and across all regions.
pub fn merge(windows: &[StoredWindow]) -> (BTreeMap<String, Merged>, Merged) {
    let mut per_region: BTreeMap<String, Merged> = BTreeMap::new();
    let mut all = Merged::default();
    for sw in windows {
        let Some(w) = &sw.window else { continue };
        if !per_region.contains_key(&sw.region) {
            per_region.insert(sw.region.clone(), Merged::default());
        }
        if let Some(m) = per_region.get_mut(&sw.region) {
            m.add(&sw.agent, w);
        }
        all.add(&sw.agent, w);
    }
    (per_region, all)
}

/// Summaries per region (sorted by name) and the merge of all regions.
pub fn summarize(windows: &[StoredWindow]) -> (Vec<RegionSummary>, RegionSummary) {
    let (per_region, all) = merge(windows);
    let regions = per_region
        .into_iter()
        .map(|(r, acc)| acc.finish(r))
        .collect();
    (regions, all.finish("all".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sw(region: &str, agent: &str, start: i64, values_us: &[u64], ok: u64) -> StoredWindow {
        let mut h = histogram::new_latency();
        for v in values_us {
            histogram::record_micros(&mut h, *v);
        }
        StoredWindow {
            agent: agent.into(),
            region: region.into(),
            window: Some(v1::Window {
                check: "web".into(),
                start_unix_ms: start,
                duration_ms: 1000,
                attempts: values_us.len() as u64,
                successes: ok,
                errors: vec![v1::ErrorCount {
                    class: ErrorClass::Timeout as i32,
                    count: values_us.len() as u64 - ok,
                }],
                phases: vec![v1::PhaseHistogram {
                    phase: Phase::Total as i32,
                    histogram: histogram::encode(&h),
                }],
                tls: Some(v1::TlsFacts {
                    days_left: start / 1000,
                    chain_status: ChainStatus::Valid as i32,
                    ..Default::default()
                }),
                last_status: 200,
                ..Default::default()
            }),
        }
    }

    #[test]
    fn merges_per_region_and_overall() {
        let eu: Vec<u64> = (1..=100).map(|i| i * 1000).collect(); // 1..100 ms
        let us: Vec<u64> = (1..=100).map(|i| 300_000 + i * 1000).collect(); // 301..400 ms
        let ws = vec![
            sw("eu", "a", 1000, &eu[..50], 50),
            sw("eu", "b", 2000, &eu[50..], 49),
            sw("us", "c", 1000, &us, 100),
        ];
        let (regions, all) = summarize(&ws);
        assert_eq!(regions.len(), 2);
        let e = &regions[0];
        assert_eq!(
            (e.region.as_str(), e.attempts, e.successes),
            ("eu", 100, 99)
        );
        assert_eq!(e.agents, ["a", "b"]);
        assert_eq!(e.availability, Some(99.0));
        assert_eq!(e.errors["timeout"], 1);
        let l = e.latency_ms.as_ref().unwrap();
        assert!((94.9..=95.1).contains(&l.p95), "{l:?}");
        // The newest window's facts win.
        assert_eq!(e.tls.as_ref().unwrap().days_left, 2);
        assert_eq!(e.tls.as_ref().unwrap().chain_status, "valid");
        assert_eq!(e.last_window_end_unix_ms, Some(3000));
        let u = regions[1].latency_ms.as_ref().unwrap();
        assert!((395.0..=395.5).contains(&u.p95), "{u:?}");
        // Merged: half the samples are under 100 ms, the p95 is in the us range.
        let a = all.latency_ms.unwrap();
        assert_eq!(a.count, 200);
        assert!((390.0..=391.0).contains(&a.p95), "{a:?}");
        assert_eq!(all.availability, Some(99.5));
    }

    #[test]
    fn measures_every_aggregate_per_region() {
        let eu: Vec<u64> = (1..=100).map(|i| i * 1000).collect(); // 1..100 ms
        let mut streaky = sw("eu", "a", 2000, &eu[..10], 7);
        if let Some(w) = streaky.window.as_mut() {
            w.consecutive_failures = 3;
        }
        let ws = vec![sw("eu", "a", 1000, &eu[10..], 90), streaky];
        let (regions, all) = merge(&ws);
        let m = &regions["eu"];
        let v = |a: Aggregate| m.measure(a).unwrap();
        assert!((94.9..=95.1).contains(&v(Aggregate::Percentile(95.0))));
        assert!((49.9..=50.1).contains(&v(Aggregate::Med)));
        assert!(
            (50.4..=50.6).contains(&v(Aggregate::Avg)),
            "{}",
            v(Aggregate::Avg)
        );
        assert!((0.99..=1.01).contains(&v(Aggregate::Min)));
        assert!((99.9..=100.1).contains(&v(Aggregate::Max)));
        assert_eq!(v(Aggregate::Count), 100.0);
        assert!((v(Aggregate::Rate) - 0.03).abs() < 1e-9);
        assert!((v(Aggregate::Availability) - 97.0).abs() < 1e-9);
        assert_eq!(v(Aggregate::DaysLeft), 2.0, "newest window's facts");
        assert_eq!(m.consecutive_failures(), Some(3), "newest window's streak");
        assert_eq!(all.measure(Aggregate::Count), Some(100.0));
        let (_, empty) = merge(&[]);
        assert_eq!(empty.measure(Aggregate::Percentile(95.0)), None);
        assert_eq!(empty.measure(Aggregate::Rate), None);
        assert_eq!(empty.consecutive_failures(), None);
    }

    #[test]
    fn empty_input_has_no_percentiles() {
        let (regions, all) = summarize(&[]);
        assert!(regions.is_empty());
        assert_eq!(all.latency_ms, None);
        assert_eq!(all.availability, None);
    }
}
