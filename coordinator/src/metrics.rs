//! `GET /metrics`: what the fleet measured, in blackbox_exporter's names, and
//! Vantage's own health, in the Prometheus text format ([`crate::exposition`]).
//!
//! Probe metrics carry the labels `check` and `region` and describe the
//! latest stored window of that check from that region (a window holds one
//! attempt when the check's interval is at least the window length, as it
//! usually is):
//!
//! | metric | meaning |
//! |---|---|
//! | `probe_success` | 1 when every attempt of the window succeeded |
//! | `probe_duration_seconds` | mean attempt duration in the window |
//! | `probe_http_status_code` | the last HTTP status (0 without a response) |
//! | `probe_http_duration_seconds{phase}` | mean per phase: `resolve`, `connect`, `tls`, `processing` (blackbox's names) |
//! | `probe_ssl_earliest_cert_expiry` | earliest `notAfter` of the presented certificates (unix s) |
//! | `probe_ssl_last_chain_expiry_timestamp_seconds` | earliest `notAfter` of the chain (unix s) |
//! | `probe_tls_version_info{version}` | 1 for the negotiated version (`TLS 1.3`) |
//! | `vantage_probe_duration_seconds` | histogram of every attempt since the coordinator started |
//! | `vantage_probe_attempts_total`, `vantage_probe_failures_total{class}` | counters since start |
//! | `vantage_probe_late_attempts_total`, `vantage_probe_max_lag_seconds` | scheduler honesty (late starts, lag of the last window) |
//!
//! Counters and the histogram start at zero when the coordinator starts
//! (Prometheus handles the reset); the gauges appear once a window arrived.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use hdrhistogram::Histogram;
use vantage_proto::histogram;
use vantage_proto::v1::{self, ErrorClass, Phase};

use crate::exposition::{Exposition, Kind};

/// Upper bounds of the duration histogram, seconds (Prometheus' defaults
/// from 5 ms to 10 s, plus 30 s and 60 s for slow checks).
pub const DURATION_BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The latest window of a check from a region, and counters since start.
struct Series {
    attempts: u64,
    late: u64,
    failures: BTreeMap<&'static str, u64>,
    /// Every attempt's total duration, µs.
    duration: Histogram<u64>,
    /// Sum of the durations, µs (the histogram's mean loses precision).
    duration_sum_us: f64,
    last: Last,
}

#[derive(Default)]
struct Last {
    success: bool,
    mean_s: Option<f64>,
    phases_s: Vec<(&'static str, f64)>,
    status: u32,
    tls: Option<v1::TlsFacts>,
    max_lag_s: f64,
}

/// The probe metrics, updated as windows are stored.
#[derive(Default)]
pub struct ProbeMetrics {
    series: Mutex<BTreeMap<(String, String), Series>>,
}

fn blackbox_phase(p: Phase) -> Option<&'static str> {
    match p {
        Phase::Dns => Some("resolve"),
        Phase::Connect => Some("connect"),
        Phase::Tls => Some("tls"),
        Phase::Waiting => Some("processing"),
        Phase::Total | Phase::Unspecified => None,
    }
}

impl ProbeMetrics {
    /// Records a stored window of `region`. Windows whose histograms do not
    /// decode were refused before being stored, so they are skipped here.
    pub fn observe(&self, region: &str, w: &v1::Window) {
        let mut total = None;
        let mut phases = Vec::new();
        for p in &w.phases {
            let Ok(h) = histogram::decode(&p.histogram) else {
                continue;
            };
            let phase = Phase::try_from(p.phase).unwrap_or(Phase::Unspecified);
            if phase == Phase::Total {
                total = Some(h);
            } else if let Some(name) = blackbox_phase(phase) {
                if !h.is_empty() {
                    phases.push((name, h.mean() / 1e6));
                }
            }
        }
        let mut all = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let s = all
            .entry((w.check.clone(), region.to_owned()))
            .or_insert_with(|| Series {
                attempts: 0,
                late: 0,
                failures: BTreeMap::new(),
                duration: Histogram::new(3).expect("3 significant figures is valid"),
                duration_sum_us: 0.0,
                last: Last::default(),
            });
        s.attempts += w.attempts;
        s.late += w.late_attempts;
        for e in &w.errors {
            let class = ErrorClass::try_from(e.class).unwrap_or(ErrorClass::Unspecified);
            *s.failures
                .entry(crate::eval::error_class_name(class))
                .or_default() += e.count;
        }
        let mut mean_s = None;
        if let Some(h) = total {
            if !h.is_empty() {
                mean_s = Some(h.mean() / 1e6);
                s.duration_sum_us += h.mean() * h.len() as f64;
                // Both record microseconds; a histogram that cannot be added
                // (out of range) only costs the since-start figures.
                let _ = s.duration.add(&h);
            }
        }
        s.last = Last {
            success: w.attempts > 0 && w.successes == w.attempts,
            mean_s,
            phases_s: phases,
            status: w.last_status,
            tls: w.tls.clone().filter(|t| t.not_after_unix != 0),
            max_lag_s: f64::from(w.max_lag_ms) / 1000.0,
        };
    }

    /// Writes the probe families.
    pub fn write(&self, e: &mut Exposition) {
        let all = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let labels = |(check, region): &(String, String)| -> [(&'static str, String); 2] {
            [("check", check.clone()), ("region", region.clone())]
        };
        let gauge =
            |e: &mut Exposition, name: &str, help: &str, value: &dyn Fn(&Series) -> Option<f64>| {
                e.family(name, Kind::Gauge, help);
                for (key, s) in all.iter() {
                    if let Some(v) = value(s) {
                        let l = labels(key);
                        e.sample(name, &refs(&l), v);
                    }
                }
            };
        gauge(
            e,
            "probe_success",
            "1 when every attempt of the latest window succeeded.",
            &|s| Some(if s.last.success { 1.0 } else { 0.0 }),
        );
        gauge(
            e,
            "probe_duration_seconds",
            "Mean attempt duration in the latest window.",
            &|s| s.last.mean_s,
        );
        gauge(
            e,
            "probe_http_status_code",
            "HTTP status of the last response (0 without one).",
            &|s| Some(f64::from(s.last.status)),
        );
        gauge(
            e,
            "probe_ssl_earliest_cert_expiry",
            "Earliest notAfter of the presented certificates, unix seconds.",
            &|s| {
                s.last.tls.as_ref().map(|t| {
                    let earliest = match t.chain_earliest_not_after_unix {
                        0 => t.not_after_unix,
                        c => c.min(t.not_after_unix),
                    };
                    earliest as f64
                })
            },
        );
        gauge(
            e,
            "probe_ssl_last_chain_expiry_timestamp_seconds",
            "Earliest notAfter of the certificate chain, unix seconds.",
            &|s| {
                s.last
                    .tls
                    .as_ref()
                    .map(|t| match t.chain_earliest_not_after_unix {
                        0 => t.not_after_unix as f64,
                        c => c as f64,
                    })
            },
        );
        gauge(
            e,
            "vantage_probe_max_lag_seconds",
            "Largest start lag of an attempt in the latest window.",
            &|s| Some(s.last.max_lag_s),
        );

        e.family(
            "probe_tls_version_info",
            Kind::Gauge,
            "The negotiated TLS version (label version), 1.",
        );
        for (key, s) in all.iter() {
            if let Some(t) = &s.last.tls {
                let version = t.protocol_version.replace("TLSv", "TLS ");
                let l = labels(key);
                let mut r = refs(&l);
                r.push(("version", version.as_str()));
                e.sample("probe_tls_version_info", &r, 1.0);
            }
        }
        e.family(
            "probe_http_duration_seconds",
            Kind::Gauge,
            "Mean duration of each phase in the latest window.",
        );
        for (key, s) in all.iter() {
            for (phase, v) in &s.last.phases_s {
                let l = labels(key);
                let mut r = refs(&l);
                r.push(("phase", phase));
                e.sample("probe_http_duration_seconds", &r, *v);
            }
        }
        e.family(
            "vantage_probe_attempts_total",
            Kind::Counter,
            "Attempts since the coordinator started.",
        );
        for (key, s) in all.iter() {
            e.sample(
                "vantage_probe_attempts_total",
                &refs(&labels(key)),
                s.attempts as f64,
            );
        }
        e.family(
            "vantage_probe_late_attempts_total",
            Kind::Counter,
            "Attempts that started late (the agent was overloaded) since the coordinator started.",
        );
        for (key, s) in all.iter() {
            e.sample(
                "vantage_probe_late_attempts_total",
                &refs(&labels(key)),
                s.late as f64,
            );
        }
        e.family(
            "vantage_probe_failures_total",
            Kind::Counter,
            "Failed attempts by error class since the coordinator started.",
        );
        for (key, s) in all.iter() {
            for (class, n) in &s.failures {
                let l = labels(key);
                let mut r = refs(&l);
                r.push(("class", class));
                e.sample("vantage_probe_failures_total", &r, *n as f64);
            }
        }
        e.family(
            "vantage_probe_duration_seconds",
            Kind::Histogram,
            "Duration of every attempt since the coordinator started.",
        );
        for (key, s) in all.iter() {
            let h = &s.duration;
            e.histogram(
                "vantage_probe_duration_seconds",
                &refs(&labels(key)),
                &DURATION_BUCKETS,
                |le| h.count_between(0, (le * 1e6) as u64),
                s.duration_sum_us / 1e6,
                h.len(),
            );
        }
    }
}

fn refs<'a>(l: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    l.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The coordinator's own health: evaluations and alert deliveries.
#[derive(Default)]
pub struct Health {
    evaluations: AtomicU64,
    evaluation_failures: AtomicU64,
    /// Duration of the latest evaluation, µs.
    last_evaluation_us: AtomicU64,
    /// Delivery attempts by (channel, outcome).
    deliveries: Mutex<BTreeMap<(String, &'static str), u64>>,
}

impl Health {
    /// One alert evaluation that took `took` and failed or not.
    pub fn evaluated(&self, took: std::time::Duration, ok: bool) {
        self.evaluations.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.evaluation_failures.fetch_add(1, Ordering::Relaxed);
        }
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.last_evaluation_us.store(us, Ordering::Relaxed);
    }

    /// One delivery attempt on `channel`: `accepted`, `retry`, `ambiguous`
    /// or `permanent`.
    pub fn delivered(&self, channel: &str, outcome: &'static str) {
        let mut d = self.deliveries.lock().unwrap_or_else(|p| p.into_inner());
        *d.entry((channel.to_owned(), outcome)).or_default() += 1;
    }

    /// Writes the health families.
    pub fn write(&self, e: &mut Exposition) {
        e.family(
            "vantage_evaluation_duration_seconds",
            Kind::Gauge,
            "Duration of the latest alert evaluation.",
        );
        e.sample(
            "vantage_evaluation_duration_seconds",
            &[],
            self.last_evaluation_us.load(Ordering::Relaxed) as f64 / 1e6,
        );
        e.family(
            "vantage_evaluations_total",
            Kind::Counter,
            "Alert evaluations since the coordinator started.",
        );
        e.sample(
            "vantage_evaluations_total",
            &[],
            self.evaluations.load(Ordering::Relaxed) as f64,
        );
        e.family(
            "vantage_evaluation_failures_total",
            Kind::Counter,
            "Alert evaluations that failed (store errors) since the coordinator started.",
        );
        e.sample(
            "vantage_evaluation_failures_total",
            &[],
            self.evaluation_failures.load(Ordering::Relaxed) as f64,
        );
        let d = self.deliveries.lock().unwrap_or_else(|p| p.into_inner());
        e.family(
            "vantage_alert_deliveries_total",
            Kind::Counter,
            "Notification delivery attempts by channel and outcome (accepted, retry, ambiguous, permanent).",
        );
        for ((channel, outcome), n) in d.iter() {
            e.sample(
                "vantage_alert_deliveries_total",
                &[("channel", channel), ("outcome", outcome)],
                *n as f64,
            );
        }
        e.family(
            "vantage_alert_delivery_failures_total",
            Kind::Counter,
            "Notification delivery attempts that did not succeed, by channel.",
        );
        let mut failures: BTreeMap<&str, u64> = BTreeMap::new();
        for ((channel, outcome), n) in d.iter() {
            let f = failures.entry(channel).or_default();
            if *outcome != "accepted" {
                *f += n;
            }
        }
        for (channel, n) in failures {
            e.sample(
                "vantage_alert_delivery_failures_total",
                &[("channel", channel)],
                n as f64,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(check: &str, totals_ms: &[u64], failed: u64, tls: bool) -> v1::Window {
        let mut total = Histogram::<u64>::new(3).unwrap();
        let mut dns = Histogram::<u64>::new(3).unwrap();
        for ms in totals_ms {
            total.record(ms * 1000).unwrap();
            dns.record(2000).unwrap();
        }
        let attempts = totals_ms.len() as u64;
        v1::Window {
            check: check.into(),
            attempts,
            successes: attempts - failed,
            errors: if failed > 0 {
                vec![v1::ErrorCount {
                    class: ErrorClass::Timeout as i32,
                    count: failed,
                }]
            } else {
                vec![]
            },
            phases: vec![
                v1::PhaseHistogram {
                    phase: Phase::Total as i32,
                    histogram: histogram::encode(&total),
                },
                v1::PhaseHistogram {
                    phase: Phase::Dns as i32,
                    histogram: histogram::encode(&dns),
                },
            ],
            last_status: 200,
            tls: tls.then(|| v1::TlsFacts {
                not_after_unix: 2_000_000_000,
                chain_earliest_not_after_unix: 1_900_000_000,
                protocol_version: "TLSv1.3".into(),
                ..Default::default()
            }),
            late_attempts: 1,
            max_lag_ms: 1500,
            ..Default::default()
        }
    }

    #[test]
    fn windows_become_blackbox_gauges_and_since_start_histograms() {
        let m = ProbeMetrics::default();
        m.observe("eu", &window("home", &[100, 300], 0, true));
        m.observe("eu", &window("home", &[20], 1, true));
        m.observe("us", &window("home", &[40], 0, false));
        let mut e = Exposition::new();
        m.write(&mut e);
        let page = e.finish();
        for line in [
            "probe_success{check=\"home\",region=\"eu\"} 0",
            "probe_success{check=\"home\",region=\"us\"} 1",
            "probe_http_status_code{check=\"home\",region=\"eu\"} 200",
            "probe_ssl_earliest_cert_expiry{check=\"home\",region=\"eu\"} 1900000000",
            "probe_ssl_last_chain_expiry_timestamp_seconds{check=\"home\",region=\"eu\"} 1900000000",
            "probe_tls_version_info{check=\"home\",region=\"eu\",version=\"TLS 1.3\"} 1",
            "vantage_probe_attempts_total{check=\"home\",region=\"eu\"} 3",
            "vantage_probe_late_attempts_total{check=\"home\",region=\"eu\"} 2",
            "vantage_probe_failures_total{check=\"home\",region=\"eu\",class=\"timeout\"} 1",
            "vantage_probe_max_lag_seconds{check=\"home\",region=\"eu\"} 1.5",
            "vantage_probe_duration_seconds_bucket{check=\"home\",region=\"eu\",le=\"0.025\"} 1",
            "vantage_probe_duration_seconds_bucket{check=\"home\",region=\"eu\",le=\"0.1\"} 2",
            "vantage_probe_duration_seconds_bucket{check=\"home\",region=\"eu\",le=\"0.05\"} 1",
            "vantage_probe_duration_seconds_bucket{check=\"home\",region=\"eu\",le=\"0.5\"} 3",
            "vantage_probe_duration_seconds_bucket{check=\"home\",region=\"eu\",le=\"+Inf\"} 3",
            "vantage_probe_duration_seconds_count{check=\"home\",region=\"eu\"} 3",
        ] {
            assert!(page.lines().any(|l| l == line), "{line}\n{page}");
        }
        // No TLS facts from us: no TLS series for it.
        assert!(!page.contains("probe_tls_version_info{check=\"home\",region=\"us\""));
        // Durations to HDR precision (3 significant figures).
        let value = |series: &str| -> f64 {
            page.lines()
                .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
                .unwrap_or_else(|| panic!("{series}\n{page}"))
                .parse()
                .unwrap()
        };
        for (series, want) in [
            (
                "vantage_probe_duration_seconds_sum{check=\"home\",region=\"eu\"}",
                0.42,
            ),
            ("probe_duration_seconds{check=\"home\",region=\"us\"}", 0.04),
            (
                "probe_http_duration_seconds{check=\"home\",region=\"eu\",phase=\"resolve\"}",
                0.002,
            ),
        ] {
            let got = value(series);
            assert!((got - want).abs() <= want * 0.002, "{series}: {got}");
        }
    }
}
