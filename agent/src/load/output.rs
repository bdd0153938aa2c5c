//! What a run prints and writes: the progress line (stderr), the k6-style
//! end-of-test summary (stdout), NDJSON (`--out json=PATH`), an
//! HdrHistogram interval log (`--hlog PATH`) and the HTML report file
//! (`--out html=PATH`, drawn by [`super::report`]).

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::file::Scenario;
use super::metrics::{Metric, MetricKind, Stats};
use super::threshold::ThresholdDef;
use super::{RunOptions, Verdict};

/// A plain (non-TTY) progress line is written this often.
const PLAIN_PROGRESS_EVERY: u64 = 5;

/// The outcome of one threshold at the end of the run.
#[derive(Debug, Clone)]
pub struct ThresholdResult {
    /// The threshold.
    pub def: ThresholdDef,
    /// The observed value (ms for trends); NaN with no data.
    pub observed: f64,
    /// Whether it held.
    pub ok: bool,
}

/// One scenario's counts over the run.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScenarioCounts {
    /// `http_reqs`.
    pub reqs: u64,
    /// `iterations`.
    pub iterations: u64,
    /// `dropped_iterations`.
    pub dropped: u64,
}

impl ScenarioCounts {
    /// Adds the counts of an interval.
    pub fn add(&mut self, s: &Stats) {
        self.reqs += s.reqs;
        self.iterations += s.iterations;
        self.dropped += s.dropped;
    }
}

/// One scenario's totals for the summary.
pub struct ScenarioInfo<'a> {
    /// The scenario.
    pub scenario: &'a Scenario,
    /// Its counts.
    pub stats: &'a ScenarioCounts,
    /// Most VUs it had at once.
    pub vus_max: u64,
}

/// The open output files and progress state.
pub struct Outputs {
    json: Option<BufWriter<File>>,
    hlog: Option<BufWriter<File>>,
    html: Option<BufWriter<File>>,
    progress: Option<bool>,
    seconds: u64,
}

fn create(path: &std::path::Path) -> Result<BufWriter<File>, String> {
    File::create(path)
        .map(BufWriter::new)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))
}

fn io(e: std::io::Error) -> String {
    format!("writing an output file: {e}")
}

impl Outputs {
    /// Creates the output files of `opts`.
    pub fn open(opts: &RunOptions) -> Result<Self, String> {
        Ok(Outputs {
            json: opts.json.as_deref().map(create).transpose()?,
            hlog: opts.hlog.as_deref().map(create).transpose()?,
            // Created now so a bad path fails before the run, written at the end.
            html: opts.html.as_deref().map(create).transpose()?,
            progress: opts.progress,
            seconds: 0,
        })
    }

    /// Whether an HTML report is asked for.
    pub fn wants_report(&self) -> bool {
        self.html.is_some()
    }

    /// Writes the HTML report (`--out html=PATH`).
    pub fn report(&mut self, html: &str) -> Result<(), String> {
        if let Some(w) = self.html.as_mut() {
            w.write_all(html.as_bytes()).map_err(io)?;
            w.flush().map_err(io)?;
        }
        Ok(())
    }

    /// Writes the log headers.
    pub fn start(&mut self, started: SystemTime) -> Result<(), String> {
        if let Some(h) = self.hlog.as_mut() {
            let secs = started
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64();
            let stamp = time::OffsetDateTime::from(started)
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            writeln!(h, "#[Histogram log format version 1.3]").map_err(io)?;
            writeln!(h, "#[StartTime: {secs:.3} (seconds since epoch), {stamp}]").map_err(io)?;
            writeln!(h, "#[BaseTime: {secs:.3} (seconds since epoch)]").map_err(io)?;
            writeln!(h, "#[http_req_duration in microseconds, all scenarios]").map_err(io)?;
            writeln!(
                h,
                "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\""
            )
            .map_err(io)?;
        }
        Ok(())
    }

    /// One NDJSON line for `scenario`'s interval `second`.
    pub fn interval(
        &mut self,
        second: u64,
        len: Duration,
        scenario: &str,
        s: &Stats,
        vus: u64,
    ) -> Result<(), String> {
        let Some(w) = self.json.as_mut() else {
            return Ok(());
        };
        let secs = len.as_secs_f64().max(1e-9);
        let line = json!({
            "type": "interval",
            "t": second,
            "interval_s": round3(len.as_secs_f64()),
            "scenario": scenario,
            "vus": vus,
            "http_reqs": s.reqs,
            "http_reqs_rate": round3(s.reqs as f64 / secs),
            "http_req_failed": s.failed,
            "iterations": s.iterations,
            "dropped_iterations": s.dropped,
            "checks_pass": s.checks_pass,
            "checks_fail": s.checks_fail,
            "data_received": s.bytes_received,
            "data_sent": s.bytes_sent,
            "http_req_duration": trend_json(&s.duration),
            "http_req_duration_corrected": trend_json(&s.duration_corrected),
            "http_req_waiting": trend_json(&s.waiting),
        });
        writeln!(w, "{line}").map_err(io)
    }

    /// One interval line of the HdrHistogram log.
    pub fn hlog_interval(
        &mut self,
        run_start: Instant,
        at: Instant,
        len: Duration,
        s: &Stats,
    ) -> Result<(), String> {
        let Some(w) = self.hlog.as_mut() else {
            return Ok(());
        };
        let start = at.saturating_duration_since(run_start).as_secs_f64();
        let max_ms = s.duration.max() as f64 / 1000.0;
        let blob = base64::engine::general_purpose::STANDARD
            .encode(vantage_proto::histogram::encode(&s.duration));
        writeln!(w, "{start:.3},{:.3},{max_ms:.3},{blob}", len.as_secs_f64()).map_err(io)
    }

    /// The progress line, on stderr.
    pub fn progress(
        &mut self,
        elapsed: Duration,
        planned: Duration,
        interval: &Stats,
        len: Duration,
        all: &Stats,
        vus: u64,
    ) {
        self.seconds += 1;
        let Some(tty) = self.progress else { return };
        if !tty && self.seconds % PLAIN_PROGRESS_EVERY != 0 {
            return;
        }
        let rate = interval.reqs as f64 / len.as_secs_f64().max(1e-9);
        let p95 = ms(all.duration.value_at_quantile(0.95));
        let err = if all.reqs == 0 {
            0.0
        } else {
            100.0 * all.failed as f64 / all.reqs as f64
        };
        let left = planned.saturating_sub(elapsed);
        let line = format!(
            "running [{}/{}] {rate:.0} req/s  p95={p95}  errors={err:.2}%  vus={vus}  left={}",
            dur(elapsed),
            dur(planned),
            dur(left)
        );
        let mut e = std::io::stderr().lock();
        let _ = if tty {
            write!(e, "\r\x1b[2K{line}")
        } else {
            writeln!(e, "{line}")
        };
        let _ = e.flush();
    }

    /// The summary line of the NDJSON output; flushes the files.
    pub fn finish(
        &mut self,
        scenarios: &[ScenarioInfo<'_>],
        all: &Stats,
        results: &[ThresholdResult],
        elapsed: Duration,
        verdict: Verdict,
        aborted: bool,
    ) -> Result<(), String> {
        if self.progress == Some(true) {
            eprintln!();
        }
        if let Some(w) = self.json.as_mut() {
            let secs = elapsed.as_secs_f64().max(1e-9);
            let mut metrics = serde_json::Map::new();
            for m in Metric::ALL {
                metrics.insert(m.name().to_owned(), metric_json(m, all, secs));
            }
            metrics.insert(
                "data_received".into(),
                json!({ "count": all.bytes_received, "rate": round3(all.bytes_received as f64 / secs) }),
            );
            metrics.insert(
                "data_sent".into(),
                json!({ "count": all.bytes_sent, "rate": round3(all.bytes_sent as f64 / secs) }),
            );
            metrics.insert(
                "vus_max".into(),
                json!({ "value": scenarios.iter().map(|s| s.vus_max).sum::<u64>() }),
            );
            metrics.insert(
                "http_req_duration_corrected".into(),
                trend_json(&all.duration_corrected),
            );
            let line = json!({
                "type": "summary",
                "duration_s": round3(secs),
                "verdict": verdict_name(verdict),
                "aborted": aborted,
                "scenarios": scenarios.iter().map(|s| json!({
                    "name": s.scenario.name,
                    "executor": s.scenario.executor.name(),
                    "vus_max": s.vus_max,
                    "http_reqs": s.stats.reqs,
                    "iterations": s.stats.iterations,
                    "dropped_iterations": s.stats.dropped,
                })).collect::<Vec<_>>(),
                "metrics": metrics,
                "thresholds": results.iter().map(|r| json!({
                    "metric": r.def.metric.name(),
                    "threshold": r.def.text,
                    "observed": finite(r.observed),
                    "ok": r.ok,
                })).collect::<Vec<_>>(),
            });
            writeln!(w, "{line}").map_err(io)?;
            w.flush().map_err(io)?;
        }
        if let Some(w) = self.hlog.as_mut() {
            w.flush().map_err(io)?;
        }
        Ok(())
    }
}

/// Bytes in k6's units: B, kB, MB, GB (powers of 1000).
fn human_bytes(b: f64) -> String {
    match b {
        b if b >= 1e9 => format!("{:.1} GB", b / 1e9),
        b if b >= 1e6 => format!("{:.1} MB", b / 1e6),
        b if b >= 1e3 => format!("{:.0} kB", b / 1e3),
        b => format!("{b:.0} B"),
    }
}

fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Passed => "passed",
        Verdict::ThresholdsFailed => "thresholds_failed",
        Verdict::Unreachable => "unreachable",
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn finite(x: f64) -> Value {
    if x.is_finite() {
        json!(round3(x))
    } else {
        Value::Null
    }
}

/// Trend figures in ms.
fn trend_json(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!({ "count": 0 });
    }
    let q = |p: f64| round3(h.value_at_quantile(p) as f64 / 1000.0);
    json!({
        "count": h.len(),
        "avg": round3(h.mean() / 1000.0),
        "min": round3(h.min() as f64 / 1000.0),
        "med": q(0.5),
        "max": round3(h.max() as f64 / 1000.0),
        "p90": q(0.9),
        "p95": q(0.95),
        "p99": q(0.99),
    })
}

fn metric_json(m: Metric, s: &Stats, secs: f64) -> Value {
    match m.kind() {
        MetricKind::Trend => s.trend(m).map_or(Value::Null, trend_json),
        MetricKind::Rate => {
            let (hits, total) = s.rate(m).unwrap_or_default();
            let rate = if total == 0 {
                Value::Null
            } else {
                json!(round3(hits as f64 / total as f64))
            };
            json!({ "rate": rate, "passes": hits, "fails": total - hits })
        }
        MetricKind::Counter => {
            let c = s.count(m).unwrap_or_default();
            json!({ "count": c, "rate": round3(c as f64 / secs) })
        }
    }
}

/// µs as a human duration.
fn ms(us: u64) -> String {
    let ms = us as f64 / 1000.0;
    if ms >= 1000.0 {
        format!("{:.2}s", ms / 1000.0)
    } else if ms >= 1.0 {
        format!("{ms:.2}ms")
    } else {
        format!("{us}µs")
    }
}

fn dur(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}.{}s", s, d.subsec_millis() / 100)
    }
}

fn trend_line(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "no data".into();
    }
    let q = |p: f64| ms(h.value_at_quantile(p));
    format!(
        "avg={} min={} med={} max={} p(90)={} p(95)={} p(99)={}",
        ms(h.mean().round() as u64),
        ms(h.min()),
        q(0.5),
        ms(h.max()),
        q(0.9),
        q(0.95),
        q(0.99)
    )
}

/// The k6-style end-of-test summary.
pub fn summary(
    scenarios: &[ScenarioInfo<'_>],
    all: &Stats,
    results: &[ThresholdResult],
    elapsed: Duration,
    verdict: Verdict,
    aborted: bool,
) -> String {
    let mut o = String::new();
    let secs = elapsed.as_secs_f64().max(1e-9);
    if scenarios.is_empty() {
        // A caller with no per-scenario counts (a distributed run's merge).
        let _ = writeln!(o, "\n  ran for {}", dur(elapsed));
    } else {
        let _ = writeln!(
            o,
            "\n  scenarios: {} scenario(s), ran for {}",
            scenarios.len(),
            dur(elapsed)
        );
    }
    for s in scenarios {
        let _ = writeln!(
            o,
            "    * {}: {} (max {} VUs), {} iterations",
            s.scenario.name,
            s.scenario.executor.name(),
            s.vus_max,
            s.stats.iterations
        );
    }
    let _ = writeln!(o);
    let mark = |m: Metric| -> &'static str {
        let mine: Vec<_> = results.iter().filter(|r| r.def.metric == m).collect();
        if mine.is_empty() {
            " "
        } else if mine.iter().all(|r| r.ok) {
            "✓"
        } else {
            "✗"
        }
    };
    for m in Metric::ALL {
        let value = match m.kind() {
            MetricKind::Trend => trend_line(s_trend(all, m)),
            MetricKind::Rate => {
                let (hits, total) = all.rate(m).unwrap_or_default();
                let pct = if total == 0 {
                    0.0
                } else {
                    100.0 * hits as f64 / total as f64
                };
                format!("{pct:.2}% ✓ {hits} ✗ {}", total - hits)
            }
            MetricKind::Counter => {
                let c = all.count(m).unwrap_or_default();
                format!("{c} {:.2}/s", c as f64 / secs)
            }
        };
        let _ = writeln!(o, "  {} {:.<32}: {value}", mark(m), m.name());
    }
    for (name, bytes) in [
        ("data_received", all.bytes_received),
        ("data_sent", all.bytes_sent),
    ] {
        let _ = writeln!(
            o,
            "    {name:.<32}: {} {}/s",
            human_bytes(bytes as f64),
            human_bytes(bytes as f64 / secs)
        );
    }
    let vus_max: u64 = scenarios.iter().map(|s| s.vus_max).sum();
    let _ = writeln!(o, "    {:.<32}: {vus_max}", "vus_max");
    if scenarios
        .iter()
        .any(|s| s.scenario.executor.is_open_model())
    {
        let _ = writeln!(
            o,
            "\n  open model: p(99) {} from the send, {} from the intended start (coordinated-omission corrected)",
            ms(all.duration.value_at_quantile(0.99)),
            ms(all.duration_corrected.value_at_quantile(0.99)),
        );
        let _ = writeln!(
            o,
            "  corrected http_req_duration: {}",
            trend_line(&all.duration_corrected)
        );
    }
    if !results.is_empty() {
        let _ = writeln!(o, "\n  thresholds:");
        for r in results {
            let unit = if r.def.metric.kind() == MetricKind::Trend {
                "ms"
            } else {
                ""
            };
            let observed = if r.observed.is_finite() {
                format!("{:.3}{unit}", r.observed)
            } else {
                "no data".into()
            };
            let _ = writeln!(
                o,
                "    {} {}: {} (observed {observed}){}",
                if r.ok { "✓" } else { "✗" },
                r.def.metric.name(),
                r.def.text,
                if r.def.abort_on_fail {
                    " [abort_on_fail]"
                } else {
                    ""
                }
            );
        }
    }
    let _ = writeln!(
        o,
        "\n  result: {}{}",
        match verdict {
            Verdict::Passed => "all thresholds passed",
            Verdict::ThresholdsFailed => "some thresholds failed",
            Verdict::Unreachable =>
                "target unreachable: every request of the first second failed to connect",
        },
        if aborted {
            " (aborted early by abort_on_fail)"
        } else {
            ""
        }
    );
    o
}

fn s_trend(s: &Stats, m: Metric) -> &Histogram<u64> {
    // Every trend metric has a histogram; `duration` is never reached.
    s.trend(m).unwrap_or(&s.duration)
}
