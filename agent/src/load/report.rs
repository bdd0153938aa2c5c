//! The HTML report of a load run: one self-contained file (inline CSS and
//! SVG drawn here, no JavaScript, nothing fetched), written by
//! `vantage-agent load --out html=PATH` and served by the coordinator for a
//! distributed run.
//!
//! What goes in is [`RunData`]: the run's totals ([`Stats`]), one
//! [`Series`] of per-second figures per region and the threshold results.
//! [`render`] draws the percentile distribution (HdrHistogram style), latency
//! over time, request rate and errors over time, the thresholds table and
//! the summary figures. Every string that came from input is escaped.
//!
//! Memory: a [`Point`] is a few numbers per second and region (a 24 h run is
//! about 5 MB per region); nothing per request is kept.

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::metrics::{Metric, MetricKind, Stats};
use super::output::ThresholdResult;

/// Most points drawn per line; longer series are averaged (rates) or
/// maxed (latency percentiles) over buckets of whole seconds, which keeps a
/// 24 h report small and still shows every latency spike.
pub const MAX_POINTS: usize = 600;

/// Points per line of the percentile distribution.
const DISTRIBUTION_STEPS: usize = 240;

/// One second of one region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Point {
    /// Seconds since the start of the run at the end of this interval (1, 2, ...).
    pub t: u64,
    /// `http_reqs` in the interval.
    pub reqs: u64,
    /// Failed requests (`http_req_failed`) in the interval.
    pub failed: u64,
    /// `http_req_duration` samples in the interval (0: no latency point).
    pub samples: u64,
    /// `http_req_duration` p50, µs.
    pub p50_us: u64,
    /// p95, µs.
    pub p95_us: u64,
    /// p99, µs.
    pub p99_us: u64,
    /// Length of the interval in ms: 1000, or less for the last one.
    pub len_ms: u64,
}

impl Point {
    /// The figures of interval `t` from its stats.
    pub fn from_interval(t: u64, s: &Stats) -> Point {
        Point::from_parts(t, s.reqs, s.failed, &s.duration)
    }

    /// The figures of interval `t` from its counts and duration histogram.
    pub fn from_parts(t: u64, reqs: u64, failed: u64, duration: &Histogram<u64>) -> Point {
        let q = |p: f64| {
            if duration.is_empty() {
                0
            } else {
                duration.value_at_quantile(p)
            }
        };
        Point {
            t,
            reqs,
            failed,
            samples: duration.len(),
            p50_us: q(0.5),
            p95_us: q(0.95),
            p99_us: q(0.99),
            len_ms: 1000,
        }
    }

    /// The same point for an interval of `len` (the last one is partial).
    pub fn with_len(self, len: Duration) -> Point {
        Point {
            len_ms: u64::try_from(len.as_millis()).unwrap_or(u64::MAX),
            ..self
        }
    }

    /// Seconds since the start at the end of the interval.
    fn end(&self) -> f64 {
        self.t.saturating_sub(1) as f64 + self.len_ms as f64 / 1000.0
    }
}

/// The per-second figures of one region.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Series {
    /// The region (`local` for a local run).
    pub region: String,
    /// One point per second, in order of `t`.
    pub points: Vec<Point>,
}

/// Why stored series bytes could not be read.
#[derive(Debug, thiserror::Error)]
#[error("series: {0}")]
pub struct SeriesError(&'static str);

impl Series {
    /// An empty series for `region`.
    pub fn new(region: impl Into<String>) -> Series {
        Series {
            region: region.into(),
            points: Vec::new(),
        }
    }

    /// The points as LEB128 varints: `t` as the step from the previous
    /// point, then the seven figures. About 14 bytes per second.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.points.len() * 12);
        let mut prev = 0u64;
        for p in &self.points {
            for v in [
                p.t.wrapping_sub(prev),
                p.reqs,
                p.failed,
                p.samples,
                p.p50_us,
                p.p95_us,
                p.p99_us,
                p.len_ms,
            ] {
                put_varint(&mut out, v);
            }
            prev = p.t;
        }
        out
    }

    /// Reads what [`Series::encode`] wrote.
    pub fn decode(region: impl Into<String>, mut bytes: &[u8]) -> Result<Series, SeriesError> {
        let mut points = Vec::new();
        let mut t = 0u64;
        while !bytes.is_empty() {
            let mut v = [0u64; 8];
            for slot in &mut v {
                *slot = get_varint(&mut bytes)?;
            }
            t = t.checked_add(v[0]).ok_or(SeriesError("time overflows"))?;
            points.push(Point {
                t,
                reqs: v[1],
                failed: v[2],
                samples: v[3],
                p50_us: v[4],
                p95_us: v[5],
                p99_us: v[6],
                len_ms: v[7],
            });
        }
        Ok(Series {
            region: region.into(),
            points,
        })
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(bytes: &mut &[u8]) -> Result<u64, SeriesError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes.split_first().ok_or(SeriesError("truncated varint"))?;
        *bytes = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(SeriesError("varint longer than 64 bits"))
}

/// One threshold row of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct ThresholdRow {
    /// The metric name.
    pub metric: String,
    /// The expression as written.
    pub threshold: String,
    /// The observed value (ms for trends); `None` with no data.
    pub observed: Option<f64>,
    /// Unit of `observed` (`ms` or empty).
    pub unit: &'static str,
    /// Whether it held.
    pub ok: bool,
    /// Whether it could stop the run early.
    pub abort_on_fail: bool,
}

impl From<&ThresholdResult> for ThresholdRow {
    fn from(r: &ThresholdResult) -> Self {
        ThresholdRow {
            metric: r.def.metric.name().to_owned(),
            threshold: r.def.text.clone(),
            observed: r.observed.is_finite().then_some(r.observed),
            unit: unit_of(r.def.metric.name()),
            ok: r.ok,
            abort_on_fail: r.def.abort_on_fail,
        }
    }
}

/// The unit of a metric's threshold values: `ms` for trends.
pub fn unit_of(metric: &str) -> &'static str {
    match Metric::from_name(metric).map(Metric::kind) {
        Some(MetricKind::Trend) => "ms",
        _ => "",
    }
}

/// A scenario line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioRow {
    /// Its name.
    pub name: String,
    /// Its executor.
    pub executor: String,
}

/// Everything the report shows about one run.
#[derive(Debug, Clone, Default)]
pub struct RunData {
    /// A heading, e.g. the load file's name.
    pub title: String,
    /// The run's id (empty for a local run).
    pub id: String,
    /// The state or verdict in words (`passed`, `thresholds failed`, `running` ...).
    pub state: String,
    /// Whether the verdict is good: colours the state (the words say it too).
    pub ok: Option<bool>,
    /// Start, ms since the Unix epoch.
    pub started_unix_ms: Option<i64>,
    /// The planned length (latest start plus executor length).
    pub planned: Duration,
    /// How long it ran (so far).
    pub elapsed: Duration,
    /// The scenarios.
    pub scenarios: Vec<ScenarioRow>,
    /// The origins the run sends to.
    pub targets: Vec<String>,
    /// Per-second figures, one series per region.
    pub regions: Vec<Series>,
    /// The totals over the run (every region merged).
    pub totals: Stats,
    /// Most VUs at once, when known.
    pub vus_max: Option<u64>,
    /// An open-model run: the corrected distribution is drawn too.
    pub open_model: bool,
    /// The thresholds and their outcome.
    pub thresholds: Vec<ThresholdRow>,
    /// Remarks shown under the heading (an abort reason, an agent error).
    pub notes: Vec<String>,
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Okabe–Ito colours: distinguishable with the common colour-vision
/// deficiencies. Lines also differ by dash pattern and legend text.
const PALETTE: [&str; 7] = [
    "#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#000000",
];

fn colour(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

/// The report style sheet; the audit scorecard (`audit::scorecard`) builds
/// on it so both reports look alike.
pub(crate) const CSS: &str = "
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1b1f24;background:#fff;margin:0}
main{max-width:960px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d8dee4;padding-bottom:4px}
.meta{color:#57606a;margin:0 0 4px}
.state{display:inline-block;padding:2px 10px;border-radius:12px;font-weight:600;border:1px solid}
.good{background:#dafbe1;color:#116329;border-color:#4ac26b}.bad{background:#ffebe9;color:#a40e26;border-color:#ff8182}
.neutral{background:#eaeef2;color:#24292f;border-color:#afb8c1}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(140px,1fr));gap:8px}
.card{border:1px solid #d8dee4;border-radius:6px;padding:8px 10px}
.card b{display:block;font-size:18px}.card span{color:#57606a;font-size:12px}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eaeef2}th{background:#f6f8fa}
td.num,th.num{text-align:right}
td.pass{color:#116329;background:#dafbe1;font-weight:600}td.fail{color:#a40e26;background:#ffebe9;font-weight:600}
svg{display:block;width:100%;height:auto;background:#fff}
svg text{font:11px system-ui,sans-serif;fill:#57606a}
svg .grid{stroke:#eaeef2}svg .axis{stroke:#8c959f}svg .nodata{font-size:16px;fill:#8c959f}
.legend{list-style:none;padding:0;margin:4px 0 0;display:flex;flex-wrap:wrap;gap:4px 16px;font-size:12px}
.legend i{display:inline-block;width:26px;height:0;border-top-width:2px;vertical-align:middle;margin-right:6px}
.note{color:#57606a;font-size:12px}
code{font-size:12px}
";

/// The report of `run` as one self-contained HTML document.
pub fn render(run: &RunData) -> String {
    let mut o = String::with_capacity(64 * 1024);
    let title = if run.title.is_empty() {
        "load run".to_owned()
    } else {
        run.title.clone()
    };
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{} — Vantage load report</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n",
        escape(&title)
    );
    header(&mut o, run, &title);
    summary_cards(&mut o, run);
    thresholds(&mut o, run);
    distribution(&mut o, run);
    latency_over_time(&mut o, run);
    rate_over_time(&mut o, run);
    metrics_table(&mut o, run);
    let _ = write!(
        o,
        "<p class=\"note\">Generated by Vantage. Latency is <code>http_req_duration</code> \
         (send to last body byte). Over time, lines show one point per second; longer runs \
         are grouped into buckets (rates averaged, percentiles the highest of the bucket).</p>\n\
         </main>\n</body>\n</html>\n"
    );
    o
}

fn header(o: &mut String, run: &RunData, title: &str) {
    let _ = writeln!(o, "<h1>{}</h1>", escape(title));
    let class = match run.ok {
        Some(true) => "good",
        Some(false) => "bad",
        None => "neutral",
    };
    let state = if run.state.is_empty() {
        "unknown"
    } else {
        &run.state
    };
    let _ = write!(
        o,
        "<p class=\"meta\"><span class=\"state {class}\">{}</span>",
        escape(state)
    );
    if !run.id.is_empty() {
        let _ = write!(o, " &nbsp;run <code>{}</code>", escape(&run.id));
    }
    let _ = writeln!(o, "</p>");
    let mut meta = Vec::new();
    if let Some(ms) = run.started_unix_ms {
        meta.push(format!("started {}", escape(&timestamp(ms))));
    }
    meta.push(format!(
        "ran {} of {} planned",
        duration_text(run.elapsed),
        duration_text(run.planned)
    ));
    let regions: Vec<String> = run.regions.iter().map(|s| escape(&s.region)).collect();
    if !regions.is_empty() {
        meta.push(format!("regions: {}", regions.join(", ")));
    }
    let _ = writeln!(o, "<p class=\"meta\">{}</p>", meta.join(" · "));
    if !run.scenarios.is_empty() {
        let list: Vec<String> = run
            .scenarios
            .iter()
            .map(|s| format!("{} ({})", escape(&s.name), escape(&s.executor)))
            .collect();
        let _ = writeln!(o, "<p class=\"meta\">scenarios: {}</p>", list.join(", "));
    }
    if !run.targets.is_empty() {
        let list: Vec<String> = run
            .targets
            .iter()
            .map(|t| format!("<code>{}</code>", escape(t)))
            .collect();
        let _ = writeln!(o, "<p class=\"meta\">targets: {}</p>", list.join(" "));
    }
    for n in &run.notes {
        let _ = writeln!(o, "<p class=\"meta\">{}</p>", escape(n));
    }
}

fn summary_cards(o: &mut String, run: &RunData) {
    let t = &run.totals;
    let secs = run.elapsed.as_secs_f64();
    let d = &t.duration;
    let lat = |q: f64| {
        if d.is_empty() {
            "–".to_owned()
        } else {
            ms_text(d.value_at_quantile(q) as f64 / 1000.0)
        }
    };
    let rate = if secs > 0.0 {
        format!("{:.1}/s", t.reqs as f64 / secs)
    } else {
        "–".into()
    };
    let failed = if t.reqs == 0 {
        "–".to_owned()
    } else {
        format!("{:.2}%", 100.0 * t.failed as f64 / t.reqs as f64)
    };
    let checks_total = t.checks_pass.saturating_add(t.checks_fail);
    let checks = if checks_total == 0 {
        "–".to_owned()
    } else {
        format!("{:.2}%", 100.0 * t.checks_pass as f64 / checks_total as f64)
    };
    let mut cards = vec![
        ("requests", t.reqs.to_string()),
        ("request rate", rate),
        ("failed", format!("{failed} ({})", t.failed)),
        ("p50", lat(0.5)),
        ("p95", lat(0.95)),
        ("p99", lat(0.99)),
        (
            "max",
            if d.is_empty() {
                "–".into()
            } else {
                ms_text(d.max() as f64 / 1000.0)
            },
        ),
        ("iterations", t.iterations.to_string()),
        ("dropped iterations", t.dropped.to_string()),
        ("checks passed", checks),
        ("data received", bytes_text(t.bytes_received)),
        ("data sent", bytes_text(t.bytes_sent)),
    ];
    if let Some(v) = run.vus_max {
        cards.push(("VUs max", v.to_string()));
    }
    if run.open_model && !t.duration_corrected.is_empty() {
        cards.push((
            "p99 corrected",
            ms_text(t.duration_corrected.value_at_quantile(0.99) as f64 / 1000.0),
        ));
    }
    let _ = writeln!(o, "<h2>Summary</h2>\n<div class=\"cards\">");
    for (label, value) in cards {
        let _ = writeln!(
            o,
            "<div class=\"card\"><b>{}</b><span>{label}</span></div>",
            escape(&value)
        );
    }
    let _ = writeln!(o, "</div>");
}

fn thresholds(o: &mut String, run: &RunData) {
    let _ = writeln!(o, "<h2>Thresholds</h2>");
    if run.thresholds.is_empty() {
        let _ = writeln!(o, "<p class=\"note\">The load file sets no thresholds.</p>");
        return;
    }
    let failed = run.thresholds.iter().filter(|r| !r.ok).count();
    let _ = writeln!(
        o,
        "<p class=\"meta\">{} of {} passed</p>",
        run.thresholds.len() - failed,
        run.thresholds.len()
    );
    let _ = writeln!(
        o,
        "<table class=\"thresholds\"><thead><tr><th>metric</th><th>threshold</th>\
         <th class=\"num\">observed</th><th>result</th></tr></thead><tbody>"
    );
    for r in &run.thresholds {
        let observed = match r.observed {
            Some(v) => format!("{}{}", trim_number(v), r.unit),
            None => "no data".into(),
        };
        let (class, result) = if r.ok {
            ("pass", "✓ passed")
        } else {
            ("fail", "✗ FAILED")
        };
        let _ = writeln!(
            o,
            "<tr><td><code>{}</code></td><td><code>{}</code>{}</td><td class=\"num\">{}</td>\
             <td class=\"{class}\">{result}</td></tr>",
            escape(&r.metric),
            escape(&r.threshold),
            if r.abort_on_fail {
                " <span class=\"note\">abort_on_fail</span>"
            } else {
                ""
            },
            escape(&observed),
        );
    }
    let _ = writeln!(o, "</tbody></table>");
}

fn metrics_table(o: &mut String, run: &RunData) {
    let _ = writeln!(
        o,
        "<h2>Trend metrics</h2>\n<table><thead><tr><th>metric (ms)</th><th class=\"num\">count</th>\
         <th class=\"num\">avg</th><th class=\"num\">min</th><th class=\"num\">med</th>\
         <th class=\"num\">p90</th><th class=\"num\">p95</th><th class=\"num\">p99</th>\
         <th class=\"num\">max</th></tr></thead><tbody>"
    );
    let mut rows: Vec<(&str, &Histogram<u64>)> = Metric::ALL
        .into_iter()
        .filter_map(|m| run.totals.trend(m).map(|h| (m.name(), h)))
        .collect();
    if run.open_model {
        rows.push((
            "http_req_duration (corrected)",
            &run.totals.duration_corrected,
        ));
    }
    for (name, h) in rows {
        let _ = write!(o, "<tr><td><code>{name}</code></td>");
        if h.is_empty() {
            let _ = writeln!(
                o,
                "<td class=\"num\">0</td><td colspan=\"7\">no data</td></tr>"
            );
            continue;
        }
        let v = |us: u64| trim_number(us as f64 / 1000.0);
        let _ = writeln!(
            o,
            "<td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            h.len(),
            trim_number(h.mean() / 1000.0),
            v(h.min()),
            v(h.value_at_quantile(0.5)),
            v(h.value_at_quantile(0.9)),
            v(h.value_at_quantile(0.95)),
            v(h.value_at_quantile(0.99)),
            v(h.max()),
        );
    }
    let _ = writeln!(o, "</tbody></table>");
}

// ---------------------------------------------------------------- charts

const W: f64 = 900.0;
const H: f64 = 300.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 40.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 36.0;

/// Room above the highest value, so a flat line is not drawn on the frame.
const HEADROOM: f64 = 1.05;

/// A plot area: data ranges mapped onto the SVG box.
struct Frame {
    x_max: f64,
    y_max: f64,
}

impl Frame {
    fn px(&self, x: f64) -> f64 {
        LEFT + (W - LEFT - RIGHT) * (x / self.x_max).clamp(0.0, 1.0)
    }

    fn py(&self, y: f64) -> f64 {
        H - BOTTOM - (H - TOP - BOTTOM) * (y / self.y_max).clamp(0.0, 1.0)
    }
}

/// A line to draw: label, colour, dash pattern, points in data units.
struct Line {
    label: String,
    /// Shown after the label in the legend only (totals: lines that lie on
    /// top of each other still tell their figures).
    note: String,
    colour: &'static str,
    dash: &'static str,
    points: Vec<(f64, f64)>,
}

fn svg_open(o: &mut String, label: &str) {
    let _ = write!(
        o,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{}\">",
        escape(label)
    );
}

fn no_data(o: &mut String, label: &str) {
    svg_open(o, label);
    let _ = writeln!(
        o,
        "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{}\" height=\"{}\" fill=\"#f6f8fa\"/>\
         <text class=\"nodata\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">no data</text></svg>",
        W - LEFT - RIGHT,
        H - TOP - BOTTOM,
        (W + LEFT - RIGHT) / 2.0,
        (H + TOP - BOTTOM) / 2.0
    );
}

/// A "nice" axis top and step (1, 2 or 5 × 10^k) for values up to `max`.
fn nice_axis(max: f64) -> (f64, f64) {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let rough = max / 5.0;
    let mag = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= rough)
        .unwrap_or(10.0 * mag);
    ((max / step).ceil() * step, step)
}

/// Draws `lines` into a frame with y gridlines every `y_step`, x ticks from
/// `x_ticks` (value, label), and a y-axis title.
fn plot(
    o: &mut String,
    label: &str,
    frame: &Frame,
    y_step: f64,
    y_title: &str,
    x_ticks: &[(f64, String)],
    lines: &[Line],
) {
    svg_open(o, label);
    let steps = (frame.y_max / y_step).round() as usize;
    for i in 0..=steps.min(20) {
        let v = i as f64 * y_step;
        let y = frame.py(v);
        let _ = write!(
            o,
            "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            trim_number(v)
        );
    }
    for (v, text) in x_ticks {
        let x = frame.px(*v);
        let _ = write!(
            o,
            "<line class=\"grid\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{TOP}\" y2=\"{}\"/>\
             <text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            H - BOTTOM,
            H - BOTTOM + 16.0,
            escape(text)
        );
    }
    let _ = write!(
        o,
        "<line class=\"axis\" x1=\"{LEFT}\" x2=\"{LEFT}\" y1=\"{TOP}\" y2=\"{0}\"/>\
         <line class=\"axis\" x1=\"{LEFT}\" x2=\"{1}\" y1=\"{0}\" y2=\"{0}\"/>\
         <text x=\"14\" y=\"{2}\" transform=\"rotate(-90 14 {2})\" text-anchor=\"middle\">{3}</text>",
        H - BOTTOM,
        W - RIGHT,
        (H + TOP - BOTTOM) / 2.0,
        escape(y_title)
    );
    for line in lines {
        let dash = if line.dash.is_empty() {
            String::new()
        } else {
            format!(" stroke-dasharray=\"{}\"", line.dash)
        };
        match line.points.as_slice() {
            [] => {}
            [(x, y)] => {
                let _ = write!(
                    o,
                    "<circle class=\"line\" data-label=\"{}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{}\"/>",
                    escape(&line.label),
                    frame.px(*x),
                    frame.py(*y),
                    line.colour
                );
            }
            pts => {
                let _ = write!(
                    o,
                    "<polyline class=\"line\" data-label=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.6\" stroke-linejoin=\"round\"{dash} points=\"",
                    escape(&line.label),
                    line.colour
                );
                for (i, (x, y)) in pts.iter().enumerate() {
                    let sep = if i == 0 { "" } else { " " };
                    let _ = write!(o, "{sep}{:.1},{:.1}", frame.px(*x), frame.py(*y));
                }
                let _ = write!(o, "\"/>");
            }
        }
    }
    let _ = writeln!(o, "</svg>");
    legend(o, lines);
}

fn legend(o: &mut String, lines: &[Line]) {
    let _ = write!(o, "<ul class=\"legend\">");
    for l in lines {
        let style = if l.dash.is_empty() {
            "solid"
        } else if l.dash.starts_with('2') {
            "dotted"
        } else {
            "dashed"
        };
        let _ = write!(
            o,
            "<li><i style=\"border-top-style:{style};border-top-color:{}\"></i>{}{}</li>",
            l.colour,
            escape(&l.label),
            escape(&l.note)
        );
    }
    let _ = writeln!(o, "</ul>");
}

/// Percentiles of the distribution chart's x axis and their labels: the
/// axis is log10(1 / (1 - p)), so each tick is one more nine.
pub const PERCENTILE_TICKS: [(f64, &str); 6] = [
    (0.0, "0%"),
    (1.0, "90%"),
    (2.0, "99%"),
    (3.0, "99.9%"),
    (4.0, "99.99%"),
    (5.0, "99.999%"),
];

/// The distribution's points: (log10(1/(1-p)), ms) up to `x_max`, then the
/// maximum at the right edge.
fn distribution_points(h: &Histogram<u64>, x_max: f64) -> Vec<(f64, f64)> {
    let mut pts = Vec::with_capacity(DISTRIBUTION_STEPS + 2);
    for i in 0..=DISTRIBUTION_STEPS {
        let x = x_max * i as f64 / DISTRIBUTION_STEPS as f64;
        let p = 1.0 - 10f64.powf(-x);
        pts.push((x, h.value_at_quantile(p) as f64 / 1000.0));
    }
    pts.push((x_max, h.max() as f64 / 1000.0));
    pts
}

fn distribution(o: &mut String, run: &RunData) {
    let label = "latency by percentile";
    let _ = writeln!(
        o,
        "<h2>Latency by percentile</h2>\n<p class=\"note\">HdrHistogram style: the x axis \
         stretches the tail (each tick is one more nine), the y axis is http_req_duration \
         in ms over the whole run.</p>"
    );
    let mut series: Vec<(&str, &Histogram<u64>)> = Vec::new();
    if !run.totals.duration.is_empty() {
        series.push(("measured (from the send)", &run.totals.duration));
    }
    if run.open_model && !run.totals.duration_corrected.is_empty() {
        series.push((
            "corrected for coordinated omission (from the intended start)",
            &run.totals.duration_corrected,
        ));
    }
    if series.is_empty() {
        no_data(o, label);
        return;
    }
    // Five nines at least; more when there are enough samples to say
    // something about them (at most eight).
    let count = series
        .iter()
        .map(|(_, h)| h.len())
        .max()
        .unwrap_or(1)
        .max(1);
    let x_max = (count as f64).log10().ceil().clamp(5.0, 8.0);
    let lines: Vec<Line> = series
        .iter()
        .enumerate()
        .map(|(i, (name, h))| Line {
            label: (*name).to_owned(),
            note: format!(" (max {})", ms_text(h.max() as f64 / 1000.0)),
            // Not the region colours of the other charts.
            colour: if i == 0 { "#000000" } else { "#d55e00" },
            dash: if i == 0 { "" } else { "6 3" },
            points: distribution_points(h, x_max),
        })
        .collect();
    let y_top = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .fold(0.0, f64::max);
    let (y_max, step) = nice_axis(y_top * HEADROOM);
    let mut ticks: Vec<(f64, String)> = PERCENTILE_TICKS
        .iter()
        .map(|(x, t)| (*x, (*t).to_owned()))
        .collect();
    for extra in 6..=(x_max as u32) {
        ticks.push((
            f64::from(extra),
            format!("99.{}%", "9".repeat(extra as usize - 2)),
        ));
    }
    let frame = Frame { x_max, y_max };
    plot(o, label, &frame, step, "latency (ms)", &ticks, &lines);
}

/// A bucket of seconds of one region, for the time charts.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// End of the bucket, seconds since the start.
    t: f64,
    /// Requests and failed requests per second (means over the bucket);
    /// `None` for a bucket of only a short last interval, whose rate would
    /// be noise.
    rates: Option<(f64, f64)>,
    /// Highest p50/p95/p99 of the bucket, ms; `None` without samples.
    latency: Option<[f64; 3]>,
}

/// Intervals shorter than this (the end of a run) are left out of the
/// rates: a handful of requests over a few ms is not a rate.
const MIN_RATE_INTERVAL_MS: u64 = 500;

/// Groups `points` into at most `max` buckets of consecutive points.
fn downsample(points: &[Point], max: usize) -> Vec<Bucket> {
    let max = max.max(1);
    let per = points.len().div_ceil(max).max(1);
    points
        .chunks(per)
        .map(|c| {
            let full = c.iter().filter(|p| p.len_ms >= MIN_RATE_INTERVAL_MS);
            let (reqs, failed, ms) = full.fold((0u64, 0u64, 0u64), |(r, f, ms), p| {
                (
                    r.saturating_add(p.reqs),
                    f.saturating_add(p.failed),
                    ms.saturating_add(p.len_ms),
                )
            });
            let rates = (ms > 0).then(|| {
                let secs = ms as f64 / 1000.0;
                (reqs as f64 / secs, failed as f64 / secs)
            });
            let latency =
                c.iter()
                    .filter(|p| p.samples > 0)
                    .fold(None, |acc: Option<[f64; 3]>, p| {
                        let v = [p.p50_us, p.p95_us, p.p99_us].map(|us| us as f64 / 1000.0);
                        Some(match acc {
                            None => v,
                            Some(a) => [a[0].max(v[0]), a[1].max(v[1]), a[2].max(v[2])],
                        })
                    });
            Bucket {
                t: c[c.len() - 1].end(),
                rates,
                latency,
            }
        })
        .collect()
}

fn time_ticks(x_max: f64) -> Vec<(f64, String)> {
    let step = time_step(x_max);
    let mut out = Vec::new();
    let mut v = 0.0;
    while v <= x_max + 1e-9 {
        let d = Duration::try_from_secs_f64(v).unwrap_or(Duration::MAX);
        out.push((v, duration_text(d)));
        v += step;
    }
    out
}

/// A tick step in seconds fit for a time axis (at most 8 steps): 1 2 5 10
/// 15 30 s, 1 2 5 10 15 30 min, 1 2 6 12 24 h.
fn time_step(x_max: f64) -> f64 {
    const STEPS: [f64; 17] = [
        1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
        21600.0, 43200.0, 86400.0,
    ];
    STEPS
        .into_iter()
        .find(|s| x_max / s <= 8.0)
        // Past 8 days (not a run length, but the input is not trusted):
        // still at most 8 steps.
        .unwrap_or(x_max / 8.0)
}

fn time_x_max(run: &RunData) -> f64 {
    let last = run
        .regions
        .iter()
        .filter_map(|s| s.points.last())
        .map(Point::end)
        .fold(0.0, f64::max);
    last.max(run.elapsed.as_secs_f64()).max(1.0)
}

fn latency_over_time(o: &mut String, run: &RunData) {
    let label = "latency over time";
    let _ = writeln!(
        o,
        "<h2>Latency over time</h2>\n<p class=\"note\">http_req_duration p50 (dotted), p95 \
         (dashed) and p99 (solid) per second, one colour per region.</p>"
    );
    let mut lines = Vec::new();
    for (i, s) in run.regions.iter().enumerate() {
        let buckets = downsample(&s.points, MAX_POINTS);
        for (k, (name, dash)) in [("p50", "2 3"), ("p95", "6 3"), ("p99", "")]
            .into_iter()
            .enumerate()
        {
            let points: Vec<(f64, f64)> = buckets
                .iter()
                .filter_map(|b| b.latency.map(|l| (b.t, l[k])))
                .collect();
            if !points.is_empty() {
                lines.push(Line {
                    label: format!("{} {name}", s.region),
                    note: String::new(),
                    colour: colour(i),
                    dash,
                    points,
                });
            }
        }
    }
    if lines.is_empty() {
        no_data(o, label);
        return;
    }
    let y_top = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .fold(0.0, f64::max);
    let (y_max, step) = nice_axis(y_top * HEADROOM);
    let x_max = time_x_max(run);
    let frame = Frame { x_max, y_max };
    plot(
        o,
        label,
        &frame,
        step,
        "latency (ms)",
        &time_ticks(x_max),
        &lines,
    );
}

fn rate_over_time(o: &mut String, run: &RunData) {
    let _ = writeln!(
        o,
        "<h2>Request rate and errors over time</h2>\n<p class=\"note\">Requests per second \
         (solid) and failed requests per second (dashed, own scale below), one colour per \
         region.</p>"
    );
    let mut rates = Vec::new();
    let mut errors = Vec::new();
    for (i, s) in run.regions.iter().enumerate() {
        let buckets: Vec<(f64, (f64, f64))> = downsample(&s.points, MAX_POINTS)
            .into_iter()
            .filter_map(|b| b.rates.map(|r| (b.t, r)))
            .collect();
        if buckets.is_empty() {
            continue;
        }
        let reqs = s.points.iter().fold(0u64, |a, p| a.saturating_add(p.reqs));
        let failed = s
            .points
            .iter()
            .fold(0u64, |a, p| a.saturating_add(p.failed));
        rates.push(Line {
            label: format!("{} req/s", s.region),
            note: format!(" ({reqs} requests)"),
            colour: colour(i),
            dash: "",
            points: buckets.iter().map(|(t, r)| (*t, r.0)).collect(),
        });
        errors.push(Line {
            label: format!("{} errors/s", s.region),
            note: format!(" ({failed} failed)"),
            colour: colour(i),
            dash: "6 3",
            points: buckets.iter().map(|(t, r)| (*t, r.1)).collect(),
        });
    }
    let x_max = time_x_max(run);
    for (label, title, lines) in [
        ("request rate over time", "requests/s", rates),
        ("errors over time", "failed/s", errors),
    ] {
        let total: f64 = lines
            .iter()
            .flat_map(|l| l.points.iter().map(|p| p.1))
            .sum();
        if lines.is_empty() || (label == "request rate over time" && total == 0.0) {
            no_data(o, label);
            continue;
        }
        let y_top = lines
            .iter()
            .flat_map(|l| l.points.iter().map(|p| p.1))
            .fold(0.0, f64::max);
        let (y_max, step) = nice_axis(y_top * HEADROOM);
        let frame = Frame { x_max, y_max };
        plot(o, label, &frame, step, title, &time_ticks(x_max), &lines);
    }
}

// ---------------------------------------------------------------- text

/// A number with at most three decimals and no trailing zeros.
fn trim_number(v: f64) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    let s = if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    };
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.to_owned()
    }
}

fn ms_text(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else {
        format!("{} ms", trim_number(ms))
    }
}

fn bytes_text(b: u64) -> String {
    let b = b as f64;
    match b {
        b if b >= 1e9 => format!("{:.1} GB", b / 1e9),
        b if b >= 1e6 => format!("{:.1} MB", b / 1e6),
        b if b >= 1e3 => format!("{:.0} kB", b / 1e3),
        b => format!("{b:.0} B"),
    }
}

/// A short duration: `850ms`→`0.9s`, `75s`→`1m15s` (shared with the audit
/// scorecard).
pub(crate) fn duration_text(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 if d.subsec_millis() > 0 => format!("{:.1}s", d.as_secs_f64()),
        s if s >= 3600 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s if s >= 60 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

/// RFC 3339 text of a Unix time in ms (shared with the audit scorecard).
pub(crate) fn timestamp(unix_ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{unix_ms} ms since the epoch"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::metrics::record;

    /// A run of `seconds` seconds in each of `regions`, 100 requests a
    /// second with latencies spread from 1 to 100 ms (and 2 failures).
    fn run_of(regions: &[&str], seconds: u64) -> RunData {
        let mut totals = Stats::default();
        let mut series = Vec::new();
        for (r, region) in regions.iter().enumerate() {
            let mut s = Series::new(*region);
            for t in 1..=seconds {
                let mut interval = Stats::default();
                for i in 1..=100u64 {
                    record(&mut interval.duration, (i + r as u64 * 10) * 1000);
                    record(&mut interval.duration_corrected, (i + 20) * 1000);
                }
                interval.reqs = 100;
                interval.failed = 2;
                interval.iterations = 100;
                s.points.push(Point::from_interval(t, &interval));
                totals.merge(&interval);
            }
            series.push(s);
        }
        RunData {
            title: "example.toml".into(),
            state: "passed".into(),
            ok: Some(true),
            started_unix_ms: Some(1_800_000_000_000),
            planned: Duration::from_secs(seconds),
            elapsed: Duration::from_secs(seconds),
            scenarios: vec![ScenarioRow {
                name: "api".into(),
                executor: "constant-arrival-rate".into(),
            }],
            targets: vec!["http://127.0.0.1:8080".into()],
            regions: series,
            totals,
            open_model: true,
            ..RunData::default()
        }
    }

    fn polylines_labelled(html: &str, label: &str) -> usize {
        html.matches(&format!("class=\"line\" data-label=\"{label}\""))
            .count()
    }

    #[test]
    fn every_chart_is_an_inline_svg_and_nothing_is_fetched() {
        let html = render(&run_of(&["eu"], 30));
        // Distribution, latency over time, request rate, errors.
        assert_eq!(html.matches("<svg ").count(), 4, "{html}");
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(!html.contains("<script"));
        assert!(!html.contains("src="));
        assert!(!html.contains("href="));
        assert!(!html.contains("@import"));
        assert!(!html.contains(">no data</text>"));
    }

    #[test]
    fn the_percentile_axis_has_the_hdrhistogram_ticks() {
        let html = render(&run_of(&["eu"], 5));
        for (_, tick) in PERCENTILE_TICKS {
            assert!(html.contains(&format!(">{tick}</text>")), "tick {tick}");
        }
        // Measured and corrected, for an open-model run.
        assert_eq!(polylines_labelled(&html, "measured (from the send)"), 1);
        assert_eq!(
            polylines_labelled(
                &html,
                "corrected for coordinated omission (from the intended start)"
            ),
            1
        );
    }

    #[test]
    fn the_distribution_rises_to_the_maximum() {
        let mut h = crate::load::metrics::Stats::default().duration;
        for v in 1..=10_000u64 {
            record(&mut h, v * 10);
        }
        let pts = distribution_points(&h, 5.0);
        assert_eq!(pts[0].0, 0.0);
        assert!(pts.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        let last = pts[pts.len() - 1];
        assert_eq!(last.0, 5.0);
        assert!((last.1 - 100.0).abs() < 0.1, "{last:?}");
        // p90 sits at x = 1: 90 ms.
        let at1 = pts.iter().find(|p| (p.0 - 1.0).abs() < 1e-9).unwrap();
        assert!((at1.1 - 90.0).abs() < 0.2, "{at1:?}");
    }

    #[test]
    fn each_region_has_its_own_lines_and_colour() {
        let html = render(&run_of(&["eu", "us"], 20));
        for region in ["eu", "us"] {
            for p in ["p50", "p95", "p99"] {
                assert_eq!(polylines_labelled(&html, &format!("{region} {p}")), 1);
            }
            assert_eq!(polylines_labelled(&html, &format!("{region} req/s")), 1);
            assert_eq!(polylines_labelled(&html, &format!("{region} errors/s")), 1);
        }
        for (region, colour) in [("eu", PALETTE[0]), ("us", PALETTE[1])] {
            let prefix = format!("data-label=\"{region} p99\" fill=\"none\" stroke=\"{colour}\"");
            assert!(html.contains(&prefix), "{region}");
        }
        // Totals per region in the legend, where overlapping lines hide.
        assert!(html.contains("eu req/s (2000 requests)"));
        assert!(html.contains("us errors/s (40 failed)"));
    }

    #[test]
    fn input_strings_are_escaped() {
        let mut run = run_of(&["eu"], 3);
        run.title = "<script>alert(1)</script>".into();
        run.scenarios[0].name = "<script>alert('x')</script>".into();
        run.targets = vec!["http://h/?a=1&b=\"2\"<x>".into()];
        run.regions[0].region = "<b>eu</b>".into();
        run.notes = vec!["agent <img src=x onerror=alert(1)> failed".into()];
        run.thresholds = vec![ThresholdRow {
            metric: "http_req_duration".into(),
            threshold: "p(95)<500 <script>".into(),
            observed: Some(12.0),
            unit: "ms",
            ok: true,
            abort_on_fail: false,
        }];
        let html = render(&run);
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<img"));
        assert!(!html.contains("<b>eu"));
        assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
        assert!(html.contains("http://h/?a=1&amp;b=&quot;2&quot;&lt;x&gt;"));
        assert!(html.contains("data-label=\"&lt;b&gt;eu&lt;/b&gt; p99\""));
        assert!(html.contains("p(95)&lt;500 &lt;script&gt;"));
    }

    #[test]
    fn an_empty_run_says_no_data() {
        let run = RunData {
            title: "empty".into(),
            regions: vec![Series::new("local")],
            ..RunData::default()
        };
        let html = render(&run);
        assert_eq!(html.matches("<svg ").count(), 4);
        assert!(html.matches(">no data</text>").count() >= 3, "{html}");
        assert!(!html.contains("NaN"));
        assert!(!html.contains("inf"));
        // Nothing at all, not even a region.
        let html = render(&RunData::default());
        assert!(html.contains(">no data</text>"));
        // Seconds without a request: rates of 0, no latency line.
        let mut run = run_of(&["eu"], 0);
        run.regions[0].points = vec![Point {
            t: 1,
            len_ms: 1000,
            ..Point::default()
        }];
        let html = render(&run);
        assert!(!html.contains("NaN"));
    }

    #[test]
    fn a_one_second_run_draws_points() {
        let html = render(&run_of(&["eu"], 1));
        assert!(!html.contains("NaN"));
        // A single point per line is a dot, not an invisible polyline.
        assert!(html.contains("<circle class=\"line\" data-label=\"eu p99\""));
        assert!(html.contains("<circle class=\"line\" data-label=\"eu req/s\""));
    }

    #[test]
    fn a_failed_threshold_is_marked_failed_in_words_and_colour() {
        let mut run = run_of(&["eu"], 3);
        run.thresholds = vec![
            ThresholdRow {
                metric: "http_req_duration".into(),
                threshold: "p(95)<1".into(),
                observed: Some(95.0),
                unit: "ms",
                ok: false,
                abort_on_fail: true,
            },
            ThresholdRow {
                metric: "http_req_failed".into(),
                threshold: "rate<0.05".into(),
                observed: Some(0.02),
                unit: "",
                ok: true,
                abort_on_fail: false,
            },
        ];
        let html = render(&run);
        let row = |needle: &str| {
            html.lines()
                .find(|l| l.starts_with("<tr>") && l.contains(needle))
                .unwrap()
                .to_owned()
        };
        let failed = row("p(95)&lt;1");
        assert!(failed.contains("class=\"fail\">✗ FAILED"), "{failed}");
        assert!(failed.contains(">95ms<"), "{failed}");
        let passed = row("rate&lt;0.05");
        assert!(passed.contains("class=\"pass\">✓ passed"), "{passed}");
        assert!(html.contains("1 of 2 passed"));
    }

    #[test]
    fn long_runs_are_downsampled() {
        let mut s = Series::new("eu");
        for t in 1..=86_400u64 {
            s.points.push(Point {
                t,
                reqs: 10,
                failed: u64::from(t == 50_000) * 10,
                samples: 10,
                p50_us: 1000,
                p95_us: 2000,
                p99_us: if t == 40_000 { 900_000 } else { 3000 },
                len_ms: 1000,
            });
        }
        let b = downsample(&s.points, MAX_POINTS);
        assert!(
            b.len() <= MAX_POINTS && b.len() > MAX_POINTS / 2,
            "{}",
            b.len()
        );
        assert!(b.iter().all(|b| (b.rates.unwrap().0 - 10.0).abs() < 1e-9));
        // The spike survives the bucketing.
        assert!(b.iter().any(|b| b.latency.unwrap()[2] == 900.0));
        let run = RunData {
            regions: vec![s],
            elapsed: Duration::from_secs(86_400),
            ..RunData::default()
        };
        let html = render(&run);
        assert!(html.len() < 400_000, "{}", html.len());
    }

    #[test]
    fn a_short_last_interval_is_not_drawn_as_a_rate() {
        let mut run = run_of(&["eu"], 3);
        // The end of a run: 40 ms with 2 requests.
        let mut last = run.regions[0].points[2].with_len(Duration::from_millis(40));
        last.reqs = 2;
        run.regions[0].points[2] = last;
        let b = downsample(&run.regions[0].points, MAX_POINTS);
        assert_eq!(b.len(), 3);
        assert!(b[2].rates.is_none());
        assert!((b[2].t - 2.04).abs() < 1e-9);
        assert!(b[2].latency.is_some());
        let html = render(&run);
        let rate_line = html
            .split("data-label=\"eu req/s\"")
            .nth(1)
            .and_then(|r| r.split("points=\"").nth(1))
            .and_then(|r| r.split('"').next())
            .unwrap();
        assert_eq!(rate_line.split(' ').count(), 2, "{rate_line}");
    }

    #[test]
    fn series_round_trip_and_bad_bytes_are_errors() {
        let s = run_of(&["eu"], 50).regions.remove(0);
        let bytes = s.encode();
        assert!(bytes.len() < 50 * 16);
        assert_eq!(Series::decode("eu", &bytes).unwrap(), s);
        assert!(Series::decode("eu", &bytes[..bytes.len() - 1]).is_err());
        assert!(Series::decode("eu", &[0xff; 11]).is_err());
        assert_eq!(Series::decode("eu", &[]).unwrap().points, vec![]);
    }

    #[test]
    fn absurd_input_neither_panics_nor_hangs() {
        let mut run = run_of(&["eu"], 2);
        run.regions[0].points.push(Point {
            t: u64::MAX,
            reqs: u64::MAX,
            failed: u64::MAX,
            samples: 1,
            p50_us: u64::MAX,
            p95_us: u64::MAX,
            p99_us: u64::MAX,
            len_ms: u64::MAX,
        });
        run.elapsed = Duration::MAX;
        run.planned = Duration::MAX;
        run.started_unix_ms = Some(i64::MIN);
        let html = render(&run);
        assert!(html.matches("<svg ").count() == 4);
        assert!(html.len() < 200_000);
    }

    #[test]
    fn axes_are_nice() {
        assert_eq!(nice_axis(0.0), (1.0, 0.2));
        assert_eq!(nice_axis(93.0), (100.0, 20.0));
        assert_eq!(nice_axis(4.2), (5.0, 1.0));
        assert_eq!(time_step(30.0), 5.0);
        assert_eq!(time_step(86_400.0), 21_600.0);
        assert_eq!(trim_number(0.0), "0");
        assert_eq!(trim_number(12.3456), "12.346");
    }
}
