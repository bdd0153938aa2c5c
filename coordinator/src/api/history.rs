//! History and time series of one check, for the dashboard's uptime bars and
//! latency charts.
//!
//! - `GET /api/v1/checks/{name}/history?range=24h|30d`: 24 hourly or 30 daily
//!   (UTC) buckets ending with the current one, from the hourly and daily
//!   roll-ups ([`crate::store::rollup`]): 24 or 30 records per region.
//! - `GET /api/v1/checks/{name}/series?window=15m|1h|6h|24h`: 60 points per
//!   region, `step = window / 60`, from the raw windows: the 24 h series has
//!   24-minute steps, finer than the roll-ups' hour. Only the `Total`
//!   histogram of each window is decoded. The measured cost is in the README
//!   (`benches/benches/history.rs`).
//!
//! Every bucket is present; one without attempts has `attempts` 0 and `null`
//! availability and percentiles. Latency is in milliseconds. Regions are the
//! check's configured regions in config order, then any other region that has
//! data, by name. A window (or roll-up hour) belongs to the bucket its start
//! falls in.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use vantage_proto::histogram;
use vantage_proto::v1::Phase;

use super::{ApiError, ApiState};
use crate::store::{rollup, Span, Store, StoreError};

/// `?range=` of the history route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    /// 24 hourly buckets.
    Day,
    /// 30 daily buckets (UTC days).
    Month,
}

impl Range {
    /// Parses `24h` or `30d`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "24h" => Some(Range::Day),
            "30d" => Some(Range::Month),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Range::Day => "24h",
            Range::Month => "30d",
        }
    }

    fn span(self) -> Span {
        match self {
            Range::Day => Span::Hour,
            Range::Month => Span::Day,
        }
    }

    fn buckets(self) -> i64 {
        match self {
            Range::Day => 24,
            Range::Month => 30,
        }
    }
}

/// `?window=` of the series route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesWindow {
    secs: i64,
}

/// Points per region in a series.
pub const SERIES_POINTS: i64 = 60;

impl SeriesWindow {
    /// Parses `15m`, `1h`, `6h` or `24h`.
    pub fn parse(text: &str) -> Option<Self> {
        let secs = match text {
            "15m" => 900,
            "1h" => 3600,
            "6h" => 6 * 3600,
            "24h" => 24 * 3600,
            _ => return None,
        };
        Some(SeriesWindow { secs })
    }

    fn step_ms(self) -> i64 {
        self.secs * 1000 / SERIES_POINTS
    }
}

/// Body of the history route.
#[derive(Debug, Serialize)]
pub struct HistoryBody {
    check: String,
    range: &'static str,
    bucket_s: i64,
    regions: Vec<HistoryRegion>,
}

/// One region's buckets, oldest first.
#[derive(Debug, Serialize)]
pub struct HistoryRegion {
    region: String,
    buckets: Vec<HistoryBucket>,
}

/// One hour or day.
#[derive(Debug, Serialize, PartialEq)]
pub struct HistoryBucket {
    start_unix_ms: i64,
    attempts: u64,
    successes: u64,
    availability: Option<f64>,
    p50: Option<f64>,
    p95: Option<f64>,
    p99: Option<f64>,
}

/// Body of the series route.
#[derive(Debug, Serialize)]
pub struct SeriesBody {
    check: String,
    window_s: i64,
    step_s: i64,
    regions: Vec<SeriesRegion>,
}

/// One region's points, oldest first.
#[derive(Debug, Serialize)]
pub struct SeriesRegion {
    region: String,
    points: Vec<SeriesPoint>,
}

/// One step of a series.
#[derive(Debug, Serialize, PartialEq)]
pub struct SeriesPoint {
    t_unix_ms: i64,
    attempts: u64,
    availability: Option<f64>,
    p50: Option<f64>,
    p95: Option<f64>,
    p99: Option<f64>,
}

/// Sums of one bucket.
#[derive(Default)]
struct Bucket {
    attempts: u64,
    successes: u64,
    latency: Option<Histogram<u64>>,
}

impl Bucket {
    fn add(&mut self, attempts: u64, successes: u64, latency: &Histogram<u64>) {
        self.attempts += attempts;
        self.successes += successes;
        if !latency.is_empty() {
            let acc = self.latency.get_or_insert_with(rollup::growing);
            histogram::merge(acc, latency);
        }
    }

    /// (availability %, p50, p95, p99 in ms), rounded like the summaries.
    fn figures(&self) -> (Option<f64>, [Option<f64>; 3]) {
        let availability = (self.attempts > 0).then(|| {
            let ok = self.successes.min(self.attempts);
            (ok as f64 / self.attempts as f64 * 100_000.0).round() / 1000.0
        });
        let h = self.latency.as_ref().filter(|h| !h.is_empty());
        let p = |q: f64| h.map(|h| h.value_at_quantile(q) as f64 / 1000.0);
        (availability, [p(0.50), p(0.95), p(0.99)])
    }
}

/// Regions to show: `configured` in order, then others with data, by name.
fn region_order<'a>(
    configured: &[String],
    with_data: impl Iterator<Item = &'a String>,
) -> Vec<String> {
    let mut out = configured.to_vec();
    let mut extra: Vec<String> = with_data
        .filter(|r| !configured.contains(r))
        .cloned()
        .collect();
    extra.sort();
    extra.dedup();
    out.extend(extra);
    out
}

/// `n` buckets per region, filled by slot; read back per region in
/// [`region_order`], every slot present (an empty bucket where nothing ran).
struct Buckets {
    n: i64,
    per_region: BTreeMap<String, Vec<Bucket>>,
}

impl Buckets {
    fn new(n: i64) -> Self {
        Buckets {
            n,
            per_region: BTreeMap::new(),
        }
    }

    /// The bucket of `region` at slot `i`, if `i` is in range.
    fn slot(&mut self, region: String, i: i64) -> Option<&mut Bucket> {
        let n = self.n;
        let i = usize::try_from(i).ok()?;
        self.per_region
            .entry(region)
            .or_insert_with(|| (0..n).map(|_| Bucket::default()).collect())
            .get_mut(i)
    }

    /// Per region, one `row(slot, bucket)` for every slot.
    fn rows<T>(
        mut self,
        configured: &[String],
        row: impl Fn(i64, &Bucket) -> T,
    ) -> Vec<(String, Vec<T>)> {
        let empty = Bucket::default();
        region_order(configured, self.per_region.keys())
            .into_iter()
            .map(|region| {
                let data = self.per_region.remove(&region);
                let rows = (0..self.n)
                    .map(|i| {
                        let b = data
                            .as_ref()
                            .and_then(|d| d.get(i as usize))
                            .unwrap_or(&empty);
                        row(i, b)
                    })
                    .collect();
                (region, rows)
            })
            .collect()
    }
}

/// The history of `check` at `now_ms`.
pub fn history(
    store: &dyn Store,
    check: &str,
    configured_regions: &[String],
    range: Range,
    now_ms: i64,
) -> Result<HistoryBody, StoreError> {
    let span = range.span();
    let step = span.ms();
    let n = range.buckets();
    let last = span.start(now_ms);
    let first = last - (n - 1) * step;
    let mut buckets = Buckets::new(n);
    for r in store.rollups(check, span, first, last + step)? {
        let i = (r.start_unix_ms - first).div_euclid(step);
        if let Some(b) = buckets.slot(r.region, i) {
            b.add(r.attempts, r.successes, &r.latency);
        }
    }
    let regions = buckets
        .rows(configured_regions, |i, b| {
            let (availability, [p50, p95, p99]) = b.figures();
            HistoryBucket {
                start_unix_ms: first + i * step,
                attempts: b.attempts,
                successes: b.successes,
                availability,
                p50,
                p95,
                p99,
            }
        })
        .into_iter()
        .map(|(region, buckets)| HistoryRegion { region, buckets })
        .collect();
    Ok(HistoryBody {
        check: check.to_owned(),
        range: range.name(),
        bucket_s: step / 1000,
        regions,
    })
}

/// The series of `check` at `now_ms`: 60 steps ending with the one that holds
/// `now_ms` (steps aligned to multiples of the step since the epoch).
pub fn series(
    store: &dyn Store,
    check: &str,
    configured_regions: &[String],
    window: SeriesWindow,
    now_ms: i64,
) -> Result<SeriesBody, StoreError> {
    let step = window.step_ms();
    let last = now_ms - now_ms.rem_euclid(step);
    let first = last - (SERIES_POINTS - 1) * step;
    let end = last + step;
    let mut buckets = Buckets::new(SERIES_POINTS);
    for sw in store.windows_since(check, first)? {
        let Some(w) = &sw.window else { continue };
        if w.start_unix_ms >= end {
            continue;
        }
        let i = (w.start_unix_ms - first).div_euclid(step);
        let latency = w
            .phases
            .iter()
            .find(|p| p.phase == Phase::Total as i32)
            .and_then(|p| histogram::decode(&p.histogram).ok());
        if let Some(b) = buckets.slot(sw.region, i) {
            match &latency {
                Some(h) => b.add(w.attempts, w.successes, h),
                None => {
                    b.attempts += w.attempts;
                    b.successes += w.successes;
                }
            }
        }
    }
    let regions = buckets
        .rows(configured_regions, |i, b| {
            let (availability, [p50, p95, p99]) = b.figures();
            SeriesPoint {
                t_unix_ms: first + i * step,
                attempts: b.attempts,
                availability,
                p50,
                p95,
                p99,
            }
        })
        .into_iter()
        .map(|(region, points)| SeriesRegion { region, points })
        .collect();
    Ok(SeriesBody {
        check: check.to_owned(),
        window_s: window.secs,
        step_s: step / 1000,
        regions,
    })
}

#[derive(Deserialize)]
pub(super) struct HistoryQuery {
    range: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct SeriesQuery {
    window: Option<String>,
}

/// The configured regions of `name`, or 404.
fn configured(st: &ApiState, name: &str) -> Result<Vec<String>, ApiError> {
    st.config
        .current()
        .checks
        .iter()
        .find(|c| c.check.name == name)
        .map(|c| c.regions.clone())
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no such check"))
}

/// `GET /api/v1/checks/{name}/history?range=24h|30d` (default 24h).
pub(super) async fn get_history(
    State(st): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<HistoryBody>, ApiError> {
    let regions = configured(&st, &name)?;
    let range = Range::parse(q.range.as_deref().unwrap_or("24h"))
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "range: expected 24h or 30d"))?;
    let body = tokio::task::spawn_blocking(move || {
        history(st.store.as_ref(), &name, &regions, range, crate::now_ms())
    })
    .await
    .map_err(|e| ApiError::internal("history task", e))?
    .map_err(|e| ApiError::internal("reading roll-ups", e))?;
    Ok(Json(body))
}

/// `GET /api/v1/checks/{name}/series?window=15m|1h|6h|24h` (default 1h).
pub(super) async fn get_series(
    State(st): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<SeriesQuery>,
) -> Result<Json<SeriesBody>, ApiError> {
    let regions = configured(&st, &name)?;
    let window = SeriesWindow::parse(q.window.as_deref().unwrap_or("1h")).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "window: expected 15m, 1h, 6h or 24h",
        )
    })?;
    let body = tokio::task::spawn_blocking(move || {
        series(st.store.as_ref(), &name, &regions, window, crate::now_ms())
    })
    .await
    .map_err(|e| ApiError::internal("series task", e))?
    .map_err(|e| ApiError::internal("reading windows", e))?;
    Ok(Json(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::rollup::{day_start, DAY_MS, HOUR_MS};
    use crate::store::SledStore;
    use vantage_proto::v1;

    fn window(start: i64, latency_us: u64, attempts: u64, ok: u64) -> v1::Window {
        let mut h = histogram::new_latency();
        for _ in 0..attempts {
            histogram::record_micros(&mut h, latency_us);
        }
        v1::Window {
            check: "site".into(),
            start_unix_ms: start,
            duration_ms: 10_000,
            attempts,
            successes: ok,
            phases: vec![v1::PhaseHistogram {
                phase: Phase::Total as i32,
                histogram: histogram::encode(&h),
            }],
            ..Default::default()
        }
    }

    /// Within HdrHistogram's 3-digit resolution of `ms`.
    fn near(value: Option<f64>, ms: f64) -> bool {
        value.is_some_and(|v| (v - ms).abs() <= ms / 500.0)
    }

    fn regions() -> Vec<String> {
        vec!["us".into(), "eu".into()]
    }

    #[test]
    fn history_has_every_bucket_and_puts_data_in_the_right_hour_and_day() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path(), 8 << 20).unwrap();
        // "now" is 10:30 UTC two days ago (roll-ups only keep 400 days).
        let today = day_start(crate::now_ms()) - 2 * DAY_MS;
        let now = today + 10 * HOUR_MS + 30 * 60_000;
        let ws = [
            window(today + 10 * HOUR_MS, 12_000, 10, 9), // the current hour
            window(today + 10 * HOUR_MS - 10_000, 40_000, 2, 2), // the hour before
            window(today - 10_000, 1_000, 1, 1),         // yesterday's last window
            window(today - 29 * DAY_MS, 1_000, 3, 3),    // first day of 30
            window(today - 30 * DAY_MS, 1_000, 5, 5),    // outside 30 days
        ];
        s.ingest("a", "eu", 1, &ws).unwrap();
        s.ingest("b", "ap", 1, &ws[..1]).unwrap();

        let day = history(&s, "site", &regions(), Range::Day, now).unwrap();
        assert_eq!((day.range, day.bucket_s), ("24h", 3600));
        let names: Vec<_> = day.regions.iter().map(|r| r.region.as_str()).collect();
        assert_eq!(
            names,
            ["us", "eu", "ap"],
            "configured first, then with data"
        );
        let eu = &day.regions[1].buckets;
        assert_eq!(eu.len(), 24);
        assert_eq!(eu[23].start_unix_ms, today + 10 * HOUR_MS);
        assert_eq!(eu[0].start_unix_ms, today - 13 * HOUR_MS);
        assert_eq!((eu[23].attempts, eu[23].successes), (10, 9));
        assert_eq!(eu[23].availability, Some(90.0));
        assert!(near(eu[23].p50, 12.0), "{:?}", eu[23]);
        assert_eq!(eu[22].attempts, 2);
        assert!(near(eu[22].p99, 40.0), "{:?}", eu[22]);
        assert_eq!(eu[12].start_unix_ms, today - HOUR_MS);
        assert_eq!(eu[12].attempts, 1);
        let empty = &eu[0];
        assert_eq!(
            (empty.attempts, empty.availability, empty.p50, empty.p95),
            (0, None, None, None)
        );
        assert!(day.regions[0].buckets.iter().all(|b| b.attempts == 0));

        let month = history(&s, "site", &regions(), Range::Month, now).unwrap();
        assert_eq!((month.range, month.bucket_s), ("30d", 86_400));
        let eu = &month.regions[1].buckets;
        assert_eq!(eu.len(), 30);
        assert_eq!(eu[29].start_unix_ms, today);
        assert_eq!(eu[29].attempts, 12);
        assert_eq!(eu[28].attempts, 1, "23:59:50 belongs to yesterday");
        assert_eq!(eu[0].start_unix_ms, today - 29 * DAY_MS);
        assert_eq!(
            eu[0].attempts, 3,
            "29 days back is the first bucket; 30 back is not shown"
        );
        let json = serde_json::to_value(&month).unwrap();
        assert!(json["regions"][0]["buckets"][0]["p95"].is_null());
        assert_eq!(json["regions"][1]["buckets"][29]["successes"], 11);
    }

    #[test]
    fn series_has_sixty_aligned_points_with_nulls_where_nothing_ran() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path(), 8 << 20).unwrap();
        let now: i64 = 1_796_212_845_000; // 2026-12-02T13:20:45Z
        let w = SeriesWindow::parse("1h").unwrap();
        let last = now - now.rem_euclid(60_000);
        let ws = [
            window(last, 30_000, 6, 3),              // the current step
            window(last - 10_000, 10_000, 6, 6),     // the step before
            window(last - 60 * 60_000, 5_000, 1, 1), // one step too old
        ];
        s.ingest("a", "eu", 1, &ws).unwrap();
        let body = series(&s, "site", &regions(), w, now).unwrap();
        assert_eq!((body.window_s, body.step_s), (3600, 60));
        assert_eq!(body.regions.len(), 2);
        let eu = &body.regions[1].points;
        assert_eq!(eu.len(), 60);
        assert_eq!(eu[59].t_unix_ms, last);
        assert_eq!(eu[0].t_unix_ms, last - 59 * 60_000);
        assert_eq!((eu[59].attempts, eu[59].availability), (6, Some(50.0)));
        assert!(near(eu[59].p95, 30.0), "{:?}", eu[59]);
        assert_eq!(eu[58].attempts, 6);
        assert!(near(eu[58].p50, 10.0), "{:?}", eu[58]);
        assert!(eu[..58]
            .iter()
            .all(|p| p.attempts == 0 && p.availability.is_none() && p.p99.is_none()));
        for (text, step) in [("15m", 15), ("6h", 360), ("24h", 1440)] {
            let b = series(&s, "site", &[], SeriesWindow::parse(text).unwrap(), now).unwrap();
            assert_eq!(b.step_s, step);
            assert_eq!(b.regions[0].points.len(), 60);
        }
        assert_eq!(SeriesWindow::parse("2h"), None);
        assert_eq!(Range::parse("7d"), None);
    }
}
