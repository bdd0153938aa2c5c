//! Hourly and daily roll-ups of the stored windows: per check, UTC hour (or
//! day) and region, the attempts, successes, late attempts and the merged
//! whole-attempt (`Total`) latency histogram. They let the API answer "the
//! last 24 hours" from 24 and "the last 30 days" from 30 small records per
//! region instead of every raw window.
//!
//! Trees `rollup_1h` and `rollup_1d`: key `check \0 start_ms(ordered, be)
//! region` → `RollupValue`; ordered by check then time, so a check's
//! history is one range scan. The daily tree is kept because reading 720
//! hourly histograms per region for 30 days measured about 150 ms per check
//! (README, History and series), too slow for 200 checks.
//!
//! A window counts in the hour and day its start falls in (windows are
//! aligned to the wall clock and last at most 5 minutes, so none crosses an
//! hour).
//!
//! Roll-ups are updated in the same sled transaction as the windows they
//! summarize ([`super::SledStore`]'s `write_batch`), so they are exactly as
//! durable as the windows: a duplicate batch writes neither, and a window
//! rewritten under a new seq has its old copy subtracted before the new one is
//! added. They can always be rebuilt from the windows (`rebuild`).

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use prost::Message;
use vantage_proto::histogram::{self, SparseCounts};
use vantage_proto::v1::{self, Phase};

use super::{ordered_ms, unordered_ms, window_prefix, StoreError, StoredWindow};

/// One hour, in milliseconds.
pub const HOUR_MS: i64 = 3_600_000;
/// One day, in milliseconds.
pub const DAY_MS: i64 = 24 * HOUR_MS;
/// How long roll-ups are kept: 400 days (raw windows are not affected).
pub const RETENTION_MS: i64 = 400 * DAY_MS;
/// Key in `meta` written once the roll-up trees hold every stored window:
/// absent on a store from before roll-ups, or after a crash mid-rebuild.
pub(crate) const COMPLETE_KEY: &str = "rollups_complete";

/// The length of a roll-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Span {
    /// A UTC hour (tree `rollup_1h`).
    Hour,
    /// A UTC day (tree `rollup_1d`).
    Day,
}

impl Span {
    /// Both spans, each rolled up at ingest.
    pub const ALL: [Span; 2] = [Span::Hour, Span::Day];

    /// Length in milliseconds.
    pub fn ms(self) -> i64 {
        match self {
            Span::Hour => HOUR_MS,
            Span::Day => DAY_MS,
        }
    }

    /// Start of the span that `ms` falls in.
    pub fn start(self, ms: i64) -> i64 {
        ms - ms.rem_euclid(self.ms())
    }

    /// Name of its sled tree.
    pub(crate) fn tree(self) -> &'static str {
        match self {
            Span::Hour => "rollup_1h",
            Span::Day => "rollup_1d",
        }
    }
}
/// Accumulators kept in memory while rebuilding before they are written out
/// (each holds a histogram of a few tens of KiB).
const REBUILD_FLUSH_EVERY: usize = 64;

/// A roll-up as stored.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct RollupValue {
    #[prost(uint64, tag = "1")]
    attempts: u64,
    #[prost(uint64, tag = "2")]
    successes: u64,
    #[prost(uint64, tag = "3")]
    late_attempts: u64,
    /// Total-phase histogram, HdrHistogram V2 + deflate; empty without samples.
    #[prost(bytes = "vec", tag = "4")]
    histogram: Vec<u8>,
}

/// One hour or day of one check in one region.
#[derive(Debug, Clone)]
pub struct Rollup {
    /// Start of the UTC hour or day, unix ms.
    pub start_unix_ms: i64,
    /// Region of the agents.
    pub region: String,
    /// Probe attempts.
    pub attempts: u64,
    /// Successful attempts.
    pub successes: u64,
    /// Attempts that started late (overloaded agent).
    pub late_attempts: u64,
    /// Whole-attempt latency, microseconds.
    pub latency: Histogram<u64>,
}

/// Start of the UTC hour that `ms` falls in.
pub fn hour_start(ms: i64) -> i64 {
    Span::Hour.start(ms)
}

/// Start of the UTC day that `ms` falls in.
pub fn day_start(ms: i64) -> i64 {
    Span::Day.start(ms)
}

pub(crate) fn key(check: &str, start_ms: i64, region: &str) -> Vec<u8> {
    let mut k = window_prefix(check);
    k.extend_from_slice(&ordered_ms(start_ms));
    k.extend_from_slice(region.as_bytes());
    k
}

/// An empty histogram that grows to what is merged into it (a
/// [`histogram::new_latency`] preallocates the full 1 µs..1 h range, about
/// 190 KiB, which adds up over a batch of many checks).
pub(crate) fn growing() -> Histogram<u64> {
    // Invariant: 3 significant digits is a valid precision.
    Histogram::new(histogram::SIGNIFICANT_DIGITS).expect("valid precision")
}

/// Sums of some windows.
#[derive(Clone, Default)]
struct Acc {
    attempts: u64,
    successes: u64,
    late_attempts: u64,
    latency: Option<SparseCounts>,
}

impl Acc {
    fn add_window(&mut self, w: &v1::Window) {
        self.attempts += w.attempts;
        self.successes += w.successes;
        self.late_attempts += w.late_attempts;
        for p in w.phases.iter().filter(|p| p.phase == Phase::Total as i32) {
            // Validated at ingest; one that does not decode adds no samples
            // (as in eval::merge).
            if let Some(h) = sparse(&p.histogram) {
                self.latency.get_or_insert_default().add(&h);
            }
        }
    }
}

/// What a set of windows changes in each roll-up: added windows and
/// replaced (subtracted) ones, by span and roll-up key.
#[derive(Clone, Default)]
pub(crate) struct Deltas(BTreeMap<(Span, Vec<u8>), (Acc, Acc)>);

impl Deltas {
    /// Counts `w` (stored for `region`), unless it is past retention.
    pub(crate) fn add(&mut self, region: &str, w: &v1::Window, now_ms: i64) {
        for k in Self::keys_of(region, w, now_ms) {
            self.0.entry(k).or_default().0.add_window(w);
        }
    }

    /// Takes back a stored copy of a window that is being overwritten.
    pub(crate) fn subtract(&mut self, old: &StoredWindow, now_ms: i64) {
        let Some(w) = &old.window else { return };
        for k in Self::keys_of(&old.region, w, now_ms) {
            self.0.entry(k).or_default().1.add_window(w);
        }
    }

    fn keys_of<'a>(
        region: &'a str,
        w: &'a v1::Window,
        now_ms: i64,
    ) -> impl Iterator<Item = (Span, Vec<u8>)> + 'a {
        let oldest = now_ms.saturating_sub(RETENTION_MS);
        Span::ALL.into_iter().filter_map(move |span| {
            let start = span.start(w.start_unix_ms);
            (start >= oldest).then(|| (span, key(&w.check, start, region)))
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Writes each touched roll-up: `put(span, key, current + added -
    /// replaced)`, with the current value read through `get`.
    pub(crate) fn for_each_update<E>(
        &self,
        mut get: impl FnMut(Span, &[u8]) -> Result<Option<sled::IVec>, E>,
        mut put: impl FnMut(Span, &[u8], Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        for ((span, k), (add, sub)) in &self.0 {
            let cur = get(*span, k)?;
            put(*span, k, apply(k, cur.as_deref(), add, sub))?;
        }
        Ok(())
    }
}

/// `current + add - sub`, encoded. Subtraction saturates at zero: it only
/// takes back what an earlier `add` put in, so it never would unless the
/// roll-up lost data (then the roll-up stays as close as it can).
fn apply(key: &[u8], current: Option<&[u8]>, add: &Acc, sub: &Acc) -> Vec<u8> {
    let cur = match current.map(RollupValue::decode) {
        None => RollupValue::default(),
        Some(Ok(v)) => v,
        Some(Err(e)) => {
            tracing::error!(key = %String::from_utf8_lossy(key), error = %e,
                "corrupt roll-up value; starting that hour again from this batch");
            RollupValue::default()
        }
    };
    let mut latency = if cur.histogram.is_empty() {
        None
    } else {
        sparse(&cur.histogram)
    };
    if let Some(a) = &add.latency {
        latency.get_or_insert_default().add(a);
    }
    if let (Some(h), Some(s)) = (&mut latency, &sub.latency) {
        h.saturating_sub(s);
    }
    RollupValue {
        attempts: (cur.attempts + add.attempts).saturating_sub(sub.attempts),
        successes: (cur.successes + add.successes).saturating_sub(sub.successes),
        late_attempts: (cur.late_attempts + add.late_attempts).saturating_sub(sub.late_attempts),
        histogram: latency
            .filter(|h| !h.is_empty())
            .map(|h| h.encode())
            .unwrap_or_default(),
    }
    .encode_to_vec()
}

/// An encoded histogram as counts by bucket: directly for the Vantage
/// profile (every agent's), else through a full decode whose samples are
/// recorded again in the profile (clamped to its range). `None` when it
/// does not decode at all.
fn sparse(bytes: &[u8]) -> Option<SparseCounts> {
    if let Some(s) = SparseCounts::decode(bytes) {
        return Some(s);
    }
    let other = histogram::decode(bytes).ok()?;
    let mut h = histogram::new_latency();
    for v in other.iter_recorded() {
        let value = v.value_iterated_to().clamp(1, histogram::MAX_LATENCY_US);
        // Invariant: the value is within the profile's range, and counts of
        // one window cannot overflow.
        h.record_n(value, v.count_at_value()).ok()?;
    }
    SparseCounts::decode(&histogram::encode(&h))
}

/// Decodes one stored roll-up.
pub(crate) fn decode(prefix_len: usize, k: &[u8], v: &[u8]) -> Result<Rollup, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        key: String::from_utf8_lossy(k).into_owned(),
        reason,
    };
    let start = k
        .get(prefix_len..prefix_len + 8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(unordered_ms)
        .ok_or_else(|| corrupt("roll-up key without a start".into()))?;
    let region = String::from_utf8_lossy(&k[prefix_len + 8..]).into_owned();
    let value = RollupValue::decode(v).map_err(|e| corrupt(e.to_string()))?;
    let latency = if value.histogram.is_empty() {
        growing()
    } else {
        histogram::decode(&value.histogram).map_err(|e| corrupt(e.to_string()))?
    };
    Ok(Rollup {
        start_unix_ms: start,
        region,
        attempts: value.attempts,
        successes: value.successes,
        late_attempts: value.late_attempts,
        latency,
    })
}

/// Roll-ups of `check` in `tree` starting in `[from_ms, to_ms)`, by start
/// then region.
pub(crate) fn range(
    tree: &sled::Tree,
    check: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<Rollup>, StoreError> {
    let prefix = window_prefix(check);
    let mut start = prefix.clone();
    start.extend_from_slice(&ordered_ms(from_ms));
    let mut end = prefix.clone();
    end.extend_from_slice(&ordered_ms(to_ms));
    tree.range(start..end)
        .map(|entry| {
            let (k, v) = entry?;
            decode(prefix.len(), &k, &v)
        })
        .collect()
}

/// The roll-up trees, by span.
pub(crate) struct Trees {
    pub(crate) hourly: sled::Tree,
    pub(crate) daily: sled::Tree,
}

impl Trees {
    pub(crate) fn open(db: &sled::Db) -> Result<Self, sled::Error> {
        Ok(Trees {
            hourly: db.open_tree(Span::Hour.tree())?,
            daily: db.open_tree(Span::Day.tree())?,
        })
    }

    pub(crate) fn of(&self, span: Span) -> &sled::Tree {
        match span {
            Span::Hour => &self.hourly,
            Span::Day => &self.daily,
        }
    }
}

/// Rebuilds the roll-up trees from `windows` (all of them within retention):
/// clears them, then reads the windows once, in key order, keeping at most a
/// few accumulators in memory. Returns (windows read, roll-ups written).
pub(crate) fn rebuild(
    windows: &sled::Tree,
    trees: &Trees,
    now_ms: i64,
) -> Result<(u64, usize), StoreError> {
    for span in Span::ALL {
        trees.of(span).clear()?;
    }
    let mut deltas = Deltas::default();
    let mut read = 0u64;
    let write = |deltas: &mut Deltas| -> Result<(), StoreError> {
        let mut batches = [sled::Batch::default(), sled::Batch::default()];
        deltas.for_each_update(
            |span, k| trees.of(span).get(k),
            |span, k, v| {
                batches[span as usize].insert(k, v);
                Ok(())
            },
        )?;
        for (span, batch) in Span::ALL.into_iter().zip(batches) {
            trees.of(span).apply_batch(batch)?;
        }
        *deltas = Deltas::default();
        Ok(())
    };
    for entry in windows.iter() {
        let (k, v) = entry?;
        read += 1;
        match StoredWindow::decode(v.as_ref()) {
            Ok(sw) => {
                if let Some(w) = &sw.window {
                    deltas.add(&sw.region, w, now_ms);
                }
            }
            Err(e) => tracing::warn!(key = %String::from_utf8_lossy(&k), error = %e,
                "skipping a stored window that does not decode"),
        }
        if deltas.len() >= REBUILD_FLUSH_EVERY {
            write(&mut deltas)?;
        }
    }
    write(&mut deltas)?;
    Ok((read, trees.hourly.len() + trees.daily.len()))
}

/// Removes roll-ups that started more than [`RETENTION_MS`] before `now_ms`.
/// Returns how many were removed.
pub(crate) fn prune(rollup: &sled::Tree, now_ms: i64) -> Result<usize, StoreError> {
    super::prune_before(rollup, now_ms.saturating_sub(RETENTION_MS), "roll-up")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{IngestOutcome, SledStore, Store};

    /// A window of `check` starting at `start` with one sample per value (µs),
    /// `ok` of them successful.
    pub(crate) fn window(check: &str, start: i64, values_us: &[u64], ok: u64) -> v1::Window {
        let mut h = histogram::new_latency();
        for v in values_us {
            histogram::record_micros(&mut h, *v);
        }
        v1::Window {
            check: check.into(),
            start_unix_ms: start,
            duration_ms: 10_000,
            attempts: values_us.len() as u64,
            successes: ok,
            late_attempts: 1,
            phases: vec![
                v1::PhaseHistogram {
                    phase: Phase::Total as i32,
                    histogram: histogram::encode(&h),
                },
                // Not rolled up: only Total is.
                v1::PhaseHistogram {
                    phase: Phase::Dns as i32,
                    histogram: histogram::encode(&h),
                },
            ],
            ..Default::default()
        }
    }

    /// Roll-ups in a comparable form: (hour, region, attempts, successes,
    /// late, [(value, count)]).
    type Flat = (i64, String, u64, u64, u64, Vec<(u64, u64)>);

    fn flat(rs: Vec<Rollup>) -> Vec<Flat> {
        rs.into_iter()
            .map(|r| {
                let counts = r
                    .latency
                    .iter_recorded()
                    .map(|v| (v.value_iterated_to(), v.count_at_value()))
                    .collect();
                (
                    r.start_unix_ms,
                    r.region,
                    r.attempts,
                    r.successes,
                    r.late_attempts,
                    counts,
                )
            })
            .collect()
    }

    /// Hourly roll-ups, then daily ones.
    fn all(s: &SledStore, check: &str) -> (Vec<Flat>, Vec<Flat>) {
        let get = |span| flat(s.rollups(check, span, i64::MIN / 2, i64::MAX / 2).unwrap());
        (get(Span::Hour), get(Span::Day))
    }

    fn hourly(s: &SledStore, check: &str, from: i64, to: i64) -> Vec<Rollup> {
        s.rollups(check, Span::Hour, from, to).unwrap()
    }

    /// An hour start two days ago: inside retention, whatever the clock.
    fn base() -> i64 {
        hour_start(crate::now_ms()) - 48 * HOUR_MS
    }

    #[test]
    fn hour_and_day_starts_are_utc_and_floor_negative_times() {
        // 2026-12-02T00:00:00Z
        let midnight = 1_796_169_600_000;
        assert_eq!(day_start(midnight), midnight);
        assert_eq!(day_start(midnight - 1), midnight - DAY_MS);
        assert_eq!(hour_start(midnight + HOUR_MS - 1), midnight);
        assert_eq!(hour_start(midnight + HOUR_MS), midnight + HOUR_MS);
        assert_eq!(hour_start(-1), -HOUR_MS);
    }

    #[test]
    fn a_window_and_its_histogram_land_in_the_hour_of_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path(), 8 << 20).unwrap();
        let h = base();
        let fast = [5_000u64; 10]; // 5 ms
        let slow = [500_000u64; 4]; // 500 ms
        let ws = [
            window("web", h - 10_000, &[1_000], 1), // last window of the hour before
            window("web", h, &fast, 9),             // first of hour h
            window("web", h + HOUR_MS - 10_000, &fast, 10), // last of hour h
            window("web", h + HOUR_MS, &slow, 0),   // first of the next
        ];
        s.ingest("a", "eu", 1, &ws).unwrap();
        let r = hourly(&s, "web", h, h + 2 * HOUR_MS);
        let hours: Vec<_> = r.iter().map(|r| (r.start_unix_ms, r.attempts)).collect();
        assert_eq!(hours, [(h, 20), (h + HOUR_MS, 4)]);
        assert_eq!((r[0].successes, r[0].late_attempts), (19, 2));
        let p50 = |r: &Rollup| r.latency.value_at_quantile(0.5) as f64 / 1000.0;
        assert!((4.99..5.01).contains(&p50(&r[0])), "{}", p50(&r[0]));
        assert_eq!(r[0].latency.len(), 20);
        assert!((499.0..501.0).contains(&p50(&r[1])), "{}", p50(&r[1]));
        // The range is half-open and by hour start.
        assert_eq!(hourly(&s, "web", h - HOUR_MS, h)[0].attempts, 1);
        assert!(hourly(&s, "web", h + 1, h + HOUR_MS).is_empty());
        assert!(hourly(&s, "we", h - HOUR_MS, h + 2 * HOUR_MS).is_empty());
        // The same windows by UTC day: whichever days they fall in, the
        // attempts and samples add up, and each day holds its own.
        let days = s.rollups("web", Span::Day, 0, i64::MAX / 2).unwrap();
        assert_eq!(days.iter().map(|d| d.attempts).sum::<u64>(), 25);
        assert_eq!(days.iter().map(|d| d.latency.len()).sum::<u64>(), 25);
        for d in &days {
            let expect: u64 = ws
                .iter()
                .filter(|w| day_start(w.start_unix_ms) == d.start_unix_ms)
                .map(|w| w.attempts)
                .sum();
            assert_eq!(d.attempts, expect);
        }
    }

    #[test]
    fn a_duplicate_batch_counts_once_and_a_rewritten_window_replaces_its_copy() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path(), 8 << 20).unwrap();
        let h = base();
        let first = [window("web", h, &[10_000, 20_000], 2)];
        s.ingest("a", "eu", 1, &first).unwrap();
        let once = all(&s, "web");
        assert_eq!((once.0[0].2, once.1[0].2), (2, 2));
        assert_eq!(
            s.ingest("a", "eu", 1, &first).unwrap(),
            IngestOutcome::Duplicate
        );
        assert_eq!(all(&s, "web"), once, "a resent batch is not counted again");

        // The same window (agent, region, check, start) again under a new seq,
        // now with three failed 900 ms attempts: the new copy wins.
        let rewrite = [
            window("web", h, &[900_000; 3], 0),
            window("web", h + 10_000, &[10_000], 1),
        ];
        assert_eq!(
            s.ingest("a", "eu", 2, &rewrite).unwrap(),
            IngestOutcome::Stored {
                replaced_windows: 1
            }
        );
        let day = s
            .rollups("web", Span::Day, day_start(h), day_start(h) + 1)
            .unwrap();
        assert_eq!(day.len(), 1);
        let r = hourly(&s, "web", h, h + HOUR_MS);
        for r in r.iter().chain(&day) {
            assert_eq!((r.attempts, r.successes, r.late_attempts), (4, 1, 2));
            assert_eq!(r.latency.len(), 4);
            assert_eq!(r.latency.count_between(19_000, 21_000), 0);
        }
        // The same window from another agent in the region adds up.
        s.ingest("b", "eu", 1, &first).unwrap();
        assert_eq!(hourly(&s, "web", h, h + HOUR_MS)[0].attempts, 6);
    }

    #[test]
    fn a_rebuild_from_the_windows_equals_the_incremental_roll_ups() {
        let dir = tempfile::tempdir().unwrap();
        let h = base();
        let incremental;
        {
            let s = SledStore::open(dir.path(), 8 << 20).unwrap();
            let mut seq = 0;
            for step in 0..(3 * 360 / 10) {
                // 10 s windows every 100 s over 3 hours, two checks, two regions.
                let start = h + step * 100_000;
                for (agent, region) in [("a", "eu"), ("b", "us")] {
                    seq += 1;
                    let v = 1_000 + (step as u64 * 7_919) % 400_000;
                    let ws = [
                        window("web", start, &[v, v * 2, v / 2], (step % 4).min(3) as u64),
                        window("db", start, &[v + 5], 1),
                    ];
                    s.ingest(agent, region, seq, &ws).unwrap();
                }
            }
            // A rewrite and a duplicate.
            s.ingest("a", "eu", 1000, &[window("web", h, &[77_000], 0)])
                .unwrap();
            s.ingest("a", "eu", 1000, &[window("web", h, &[77_000], 0)])
                .unwrap();
            incremental = (all(&s, "web"), all(&s, "db"));
            assert_eq!(incremental.0 .0.len(), 3 * 2);
            assert!(!incremental.0 .1.is_empty());

            s.rebuild_rollups().unwrap();
            assert_eq!((all(&s, "web"), all(&s, "db")), incremental);

            // A store from before roll-ups: no tree contents, no marker.
            s.rollups.hourly.clear().unwrap();
            s.rollups.daily.clear().unwrap();
            s.db.open_tree("meta")
                .unwrap()
                .remove(COMPLETE_KEY)
                .unwrap();
            s.flush().unwrap();
        }
        let s = SledStore::reopen(dir.path(), 8 << 20);
        assert_eq!((all(&s, "web"), all(&s, "db")), incremental);
    }

    #[test]
    fn roll_ups_past_400_days_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path(), 8 << 20).unwrap();
        let h = base();
        for (i, check) in ["a", "b", "c"].iter().enumerate() {
            let ws = [
                window(check, h, &[1_000], 1),
                window(check, h + HOUR_MS, &[1_000], 1),
            ];
            s.ingest("x", "eu", i as u64 + 1, &ws).unwrap();
        }
        assert_eq!(s.prune_rollups(day_start(h) + RETENTION_MS).unwrap(), 0);
        // One hour later the first hour of every check, and the day it is
        // in, are past retention.
        assert_eq!(s.prune_rollups(h + RETENTION_MS + HOUR_MS).unwrap(), 6);
        for check in ["a", "b", "c"] {
            let (hours, days) = all(&s, check);
            let hours: Vec<_> = hours.into_iter().map(|r| r.0).collect();
            assert_eq!(hours, [h + HOUR_MS], "{check}");
            assert!(days.iter().all(|d| d.0 > h), "{check}");
        }
        // Windows older than retention are not rolled up at all.
        s.ingest(
            "x",
            "eu",
            9,
            &[window("old", h - RETENTION_MS - DAY_MS, &[1], 1)],
        )
        .unwrap();
        assert_eq!(all(&s, "old"), (vec![], vec![]));
        assert_eq!(s.windows_since("old", i64::MIN).unwrap().len(), 1);
    }

    #[test]
    fn raw_windows_past_retention_are_pruned_and_their_roll_ups_kept() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path(), 8 << 20).unwrap();
        let h = base();
        // Three checks (the prune walks them one prefix at a time), two
        // regions, windows an hour apart; "b" and "b2" share a prefix.
        for (i, check) in ["a", "b", "b2"].iter().enumerate() {
            for (j, region) in ["eu", "us"].iter().enumerate() {
                let ws: Vec<_> = (0..3)
                    .map(|k| window(check, h + k * HOUR_MS, &[1_000, 3_000], 2))
                    .collect();
                s.ingest(&format!("x-{region}"), region, (i * 2 + j) as u64 + 1, &ws)
                    .unwrap();
            }
        }
        let before: Vec<_> = ["a", "b", "b2"].iter().map(|c| all(&s, c)).collect();
        let keep = std::time::Duration::from_secs(25 * 3600);
        let keep_ms = 25 * HOUR_MS;
        // Nothing is older than `keep` an hour before the last window does.
        assert_eq!(s.prune_windows(h + keep_ms, keep).unwrap(), 0);
        // The first hour's windows (3 checks × 2 regions) are past it.
        assert_eq!(s.prune_windows(h + HOUR_MS + keep_ms, keep).unwrap(), 6);
        for (check, rollups) in ["a", "b", "b2"].iter().zip(&before) {
            let left: Vec<_> = s
                .windows_since(check, i64::MIN)
                .unwrap()
                .into_iter()
                .map(|w| w.window.unwrap().start_unix_ms)
                .collect();
            assert_eq!(
                left,
                [h + HOUR_MS, h + HOUR_MS, h + 2 * HOUR_MS, h + 2 * HOUR_MS],
                "{check}"
            );
            // History keeps counting the pruned hour.
            assert_eq!(&all(&s, check), rollups, "{check}");
            assert_eq!(rollups.0.len(), 6, "{check}: 3 hours × 2 regions");
        }
        // Pruning again removes nothing more; a later cutoff removes the rest.
        assert_eq!(s.prune_windows(h + HOUR_MS + keep_ms, keep).unwrap(), 0);
        assert_eq!(
            s.prune_windows(h + 3 * HOUR_MS + keep_ms, keep).unwrap(),
            12
        );
        assert!(s.windows_since("b", i64::MIN).unwrap().is_empty());
    }
}
