//! The dashboard's history routes on a realistic store: 200 checks x 3
//! regions, 30 days of hourly and daily roll-ups (what 10 s windows of a
//! 10 s check leave behind) and the last hour of raw 10 s windows, plus 24
//! hours of raw windows for one check. Measures the work behind
//! `GET /api/v1/checks/{name}/history?range=30d|24h` and
//! `/series?window=1h|24h` (the handler's blocking part, without HTTP), and
//! one ingested batch of 200 windows with its roll-up updates.
//!
//! `cargo bench -p vantage-benches --bench history`; figures in the README.
use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use vantage_coordinator::api::history::{self, Range, SeriesWindow};
use vantage_coordinator::store::{SledStore, Store};
use vantage_proto::histogram;
use vantage_proto::v1;

const CHECKS: usize = 200;
const REGIONS: [&str; 3] = ["eu", "us", "ap"];
const HOUR_MS: i64 = 3_600_000;
const WINDOW_MS: i64 = 10_000;

fn check(i: usize) -> String {
    format!("check-{i:03}")
}

/// A window of `check` at `start` with `n` attempts spread like a web
/// check (5..400 ms, a long tail), one failure in fifty.
fn window(check: &str, start: i64, n: u64, seed: u64) -> v1::Window {
    let mut h = histogram::new_latency();
    let mut x = seed | 1;
    let mut failures = 0;
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let base = 5_000 + x % 60_000;
        let tail = if x % 100 < 5 { x % 340_000 } else { 0 };
        histogram::record_micros(&mut h, base + tail);
        failures += u64::from((x >> 8) % 100 < 2);
    }
    v1::Window {
        check: check.to_owned(),
        start_unix_ms: start,
        duration_ms: WINDOW_MS as u32,
        attempts: n,
        successes: n - failures,
        phases: vec![v1::PhaseHistogram {
            phase: v1::Phase::Total as i32,
            histogram: histogram::encode(&h),
        }],
        ..Default::default()
    }
}

/// Fills `store`: per region one agent; returns the next seq per agent.
fn fill(store: &SledStore, now: i64) -> u64 {
    let started = Instant::now();
    let this_hour = now - now.rem_euclid(HOUR_MS);
    let mut seq = 0;
    // 30 days of roll-ups: one window per check and past hour carrying the
    // hour's 360 attempts rolls up to what 360 10-s windows would.
    for hour in 1..=30 * 24 {
        let start = this_hour - hour * HOUR_MS;
        seq += 1;
        for (r, region) in REGIONS.iter().enumerate() {
            let ws: Vec<_> = (0..CHECKS)
                .map(|c| {
                    window(
                        &check(c),
                        start,
                        360,
                        (hour as u64) << 20 | (c as u64) << 4 | r as u64,
                    )
                })
                .collect();
            store
                .ingest(&format!("agent-{region}"), region, seq, &ws)
                .unwrap();
        }
    }
    let rollups_done = started.elapsed();
    // Raw 10 s windows, one attempt each: the last hour for every check,
    // the last 24 hours for check-000.
    let first_window = now - now.rem_euclid(WINDOW_MS);
    for step in 0..(24 * HOUR_MS / WINDOW_MS) {
        let start = first_window - step * WINDOW_MS;
        let checks = if step < HOUR_MS / WINDOW_MS {
            CHECKS
        } else {
            1
        };
        seq += 1;
        for (r, region) in REGIONS.iter().enumerate() {
            let ws: Vec<_> = (0..checks)
                .map(|c| {
                    window(
                        &check(c),
                        start,
                        1,
                        (step as u64) << 20 | (c as u64) << 4 | r as u64,
                    )
                })
                .collect();
            store
                .ingest(&format!("agent-{region}"), region, seq, &ws)
                .unwrap();
        }
    }
    eprintln!(
        "filled: 30 d of hourly windows in {rollups_done:.1?}, raw windows in {:.1?}",
        started.elapsed() - rollups_done
    );
    seq
}

fn routes(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path(), 256 << 20).unwrap();
    let now = vantage_coordinator::now_ms();
    let mut seq = fill(&store, now);
    let regions: Vec<String> = REGIONS.iter().map(|r| (*r).to_owned()).collect();
    let name = check(0);

    let body = history::history(&store, &name, &regions, Range::Month, now).unwrap();
    let json = serde_json::to_value(&body).unwrap();
    assert_eq!(json["regions"][0]["buckets"].as_array().unwrap().len(), 30);
    assert!(json["regions"][2]["buckets"][0]["attempts"].as_u64() > Some(0));
    let body = history::history(&store, &name, &regions, Range::Day, now).unwrap();
    let json = serde_json::to_value(&body).unwrap();
    assert!(json["regions"][0]["buckets"][0]["attempts"].as_u64() >= Some(360));
    let body = history::series(
        &store,
        &name,
        &regions,
        SeriesWindow::parse("1h").unwrap(),
        now,
    )
    .unwrap();
    let json = serde_json::to_value(&body).unwrap();
    assert!(json["regions"][0]["points"][0]["attempts"].as_u64() >= Some(6));

    let mut group = c.benchmark_group("history");
    group.sample_size(20);
    group.bench_function("history_30d", |b| {
        b.iter(|| history::history(&store, black_box(&name), &regions, Range::Month, now).unwrap())
    });
    group.bench_function("history_24h", |b| {
        b.iter(|| history::history(&store, black_box(&name), &regions, Range::Day, now).unwrap())
    });
    for w in ["1h", "24h"] {
        let window = SeriesWindow::parse(w).unwrap();
        group.bench_function(format!("series_{w}"), |b| {
            b.iter(|| history::series(&store, black_box(&name), &regions, window, now).unwrap())
        });
    }
    // One agent's batch of one 10 s window for every check, as it arrives
    // every 10 s (each iteration the next 10 s), with its roll-up updates
    // and the flush before the ack.
    let mut next = now - now.rem_euclid(WINDOW_MS) + WINDOW_MS;
    group.bench_function("ingest_200_windows", |b| {
        b.iter_batched(
            || {
                next += WINDOW_MS;
                seq += 1;
                let ws: Vec<_> = (0..CHECKS)
                    .map(|c| window(&check(c), next, 1, c as u64))
                    .collect();
                (seq, ws)
            },
            |(seq, ws)| store.ingest("agent-eu", "eu", seq, black_box(&ws)).unwrap(),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, routes);
criterion_main!(benches);
