//! The dashboard's history and series routes over a real coordinator and two
//! agents (regions `eu` and `us`): both routes return the contract's shape
//! with data in the current bucket, and a check failing from `us` only shows
//! availability below 100 there.

use std::time::Duration;

use serde_json::Value;

use crate::support::*;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

fn region<'a>(body: &'a Value, name: &str) -> &'a Value {
    body["regions"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["region"] == name))
        .unwrap_or_else(|| panic!("no region {name}: {body}"))
}

/// The newest bucket (or point) of `region` in `body`.
fn newest<'a>(body: &'a Value, region_name: &str, list: &str) -> &'a Value {
    region(body, region_name)[list]
        .as_array()
        .and_then(|b| b.last())
        .unwrap_or_else(|| panic!("no {list}: {body}"))
}

/// Every bucket has the contract's fields; the newest has attempts.
fn assert_buckets(body: &Value, list: &str, time: &str, n: usize, step_ms: i64) {
    for r in body["regions"].as_array().unwrap() {
        let buckets = r[list].as_array().unwrap();
        assert_eq!(buckets.len(), n, "{r}");
        for (i, b) in buckets.iter().enumerate() {
            let t = b[time].as_i64().unwrap();
            assert_eq!(t.rem_euclid(step_ms), 0, "{b}");
            if i > 0 {
                assert_eq!(t - buckets[i - 1][time].as_i64().unwrap(), step_ms);
            }
            assert!(b["attempts"].is_u64(), "{b}");
            for f in ["availability", "p50", "p95", "p99"] {
                let present = b[f].is_number();
                assert!(present || b[f].is_null(), "{f}: {b}");
                assert_eq!(present, b["attempts"].as_u64() > Some(0), "{f}: {b}");
            }
        }
    }
}

/// Sums the attempts and successes of the last `n` entries of a list.
fn recent(body: &Value, region_name: &str, list: &str, n: usize) -> (u64, f64) {
    let items = region(body, region_name)[list].as_array().unwrap();
    let tail = &items[items.len().saturating_sub(n)..];
    let attempts: u64 = tail.iter().map(|b| b["attempts"].as_u64().unwrap()).sum();
    let worst = tail
        .iter()
        .filter_map(|b| b["availability"].as_f64())
        .fold(100.0, f64::min);
    (attempts, worst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_and_series_show_each_region_and_a_failing_one() {
    let dir = tempfile::tempdir().unwrap();
    let target = RegionTarget::start().await;
    let checks = target.checks_toml(
        &["site".to_owned(), "flaky".to_owned()],
        &["eu", "us"],
        "500ms",
        "500ms",
    );
    let config = write_config(dir.path(), &format!("{LOOPBACK_SERVER}\n{checks}"));
    target.fail("flaky", &["us"]);
    agent_bin();
    let (_coordinator, grpc, http) = start_coordinator(&config);
    let _eu = start_agent(grpc, "eu", "agent-eu");
    let _us = start_agent(grpc, "us", "agent-us");

    // A few seconds of results from both regions.
    let ready = eventually(Duration::from_secs(30), || async {
        let b = get_json(http, "/api/v1/checks/flaky/series?window=15m").await;
        let ok = ["eu", "us"]
            .iter()
            .all(|r| recent(&b, r, "points", 3).0 >= 6);
        ok.then_some(())
    })
    .await;
    assert!(ready.is_some(), "no results from both regions within 30 s");

    let before = now_ms();
    let day = get_json(http, "/api/v1/checks/flaky/history?range=24h").await;
    let month = get_json(http, "/api/v1/checks/flaky/history?range=30d").await;
    let series = get_json(http, "/api/v1/checks/flaky/series?window=15m").await;
    let hour = get_json(http, "/api/v1/checks/site/series").await;
    let after = now_ms();

    assert_eq!(
        (&day["check"], &day["range"], &day["bucket_s"]),
        (&"flaky".into(), &"24h".into(), &3600.into())
    );
    assert_eq!(
        (&month["range"], &month["bucket_s"]),
        (&"30d".into(), &86_400.into())
    );
    assert_eq!(
        (&series["check"], &series["window_s"], &series["step_s"]),
        (&"flaky".into(), &900.into(), &15.into())
    );
    assert_eq!(
        (&hour["window_s"], &hour["step_s"]),
        (&3600.into(), &60.into())
    );
    assert_buckets(&day, "buckets", "start_unix_ms", 24, HOUR_MS);
    assert_buckets(&month, "buckets", "start_unix_ms", 30, DAY_MS);
    assert_buckets(&series, "points", "t_unix_ms", 60, 15_000);
    assert_buckets(&hour, "points", "t_unix_ms", 60, 60_000);
    let names: Vec<_> = day["regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["region"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["eu", "us"]);

    // The newest bucket is the current hour / day and holds the results
    // (right after an hour or day boundary the data may sit in the one
    // before, so look at the last two).
    let hour_now = |t: i64| t - t.rem_euclid(HOUR_MS);
    let last = newest(&day, "eu", "buckets")["start_unix_ms"]
        .as_i64()
        .unwrap();
    assert!(
        (hour_now(before)..=hour_now(after)).contains(&last),
        "{last}"
    );
    let day_now = |t: i64| t - t.rem_euclid(DAY_MS);
    let last = newest(&month, "eu", "buckets")["start_unix_ms"]
        .as_i64()
        .unwrap();
    assert!((day_now(before)..=day_now(after)).contains(&last), "{last}");
    for body in [&day, &month] {
        let (eu, eu_worst) = recent(body, "eu", "buckets", 2);
        let (us, us_worst) = recent(body, "us", "buckets", 2);
        assert!(eu > 0 && us > 0, "{body}");
        assert_eq!(eu_worst, 100.0, "{body}");
        assert!(us_worst < 100.0, "{body}");
        let b = newest(body, "eu", "buckets");
        if b["attempts"].as_u64() > Some(0) {
            assert!(b["p95"].as_f64().unwrap() > 0.0, "{b}");
            assert_eq!(b["successes"], b["attempts"], "{b}");
        }
    }
    let (eu, eu_worst) = recent(&series, "eu", "points", 4);
    let (us, us_worst) = recent(&series, "us", "points", 4);
    assert!(eu > 0 && us > 0, "{series}");
    assert_eq!(eu_worst, 100.0, "{series}");
    assert_eq!(us_worst, 0.0, "every attempt from us fails: {series}");
    // The healthy check is up everywhere.
    for r in ["eu", "us"] {
        let (n, worst) = recent(&hour, r, "points", 2);
        assert!(n > 0, "{hour}");
        assert_eq!(worst, 100.0, "{hour}");
    }

    // Unknown check: 404; a bad range or window: 400 with a message.
    let (status, _) = http_get(http, "/api/v1/checks/nope/history?range=24h").await;
    assert_eq!(status, 404);
    let (status, _) = http_get(http, "/api/v1/checks/nope/series").await;
    assert_eq!(status, 404);
    let (status, text) = http_get(http, "/api/v1/checks/site/history?range=7d").await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("24h or 30d"), "{text}");
    let (status, text) = http_get(http, "/api/v1/checks/site/series?window=2h").await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("15m, 1h, 6h or 24h"), "{text}");
}

/// A window of `check` from `eu` with `attempts` successful 2 ms attempts.
fn seeded_window(check: &str, start_unix_ms: i64, attempts: u64) -> vantage_proto::v1::Window {
    use vantage_proto::histogram;
    let mut h = histogram::new_latency();
    for _ in 0..attempts {
        histogram::record_micros(&mut h, 2_000);
    }
    vantage_proto::v1::Window {
        check: check.into(),
        start_unix_ms,
        duration_ms: 1_000,
        attempts,
        successes: attempts,
        phases: vec![vantage_proto::v1::PhaseHistogram {
            phase: vantage_proto::v1::Phase::Total as i32,
            histogram: histogram::encode(&h),
        }],
        ..Default::default()
    }
}

/// Waits until no process holds the sled store in `data` (sled locks its
/// `db` file with flock; its flusher thread can keep it a moment after the
/// store is dropped).
fn wait_unlocked(data: &std::path::Path) {
    let free = (0..200).any(|_| {
        let status = std::process::Command::new("flock")
            .arg("-n")
            .arg(data.join("db"))
            .arg("true")
            .status()
            .expect("running flock (util-linux)");
        status.success() || {
            std::thread::sleep(Duration::from_millis(50));
            false
        }
    });
    assert!(free, "the store in {} stayed locked", data.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_windows_past_retention_are_pruned_at_start_and_history_keeps_them() {
    use vantage_coordinator::store::{SledStore, Store};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let now = now_ms();
    // 30 h ago: past a 25 h raw retention. One minute ago: inside it.
    let old = now - 30 * HOUR_MS;
    let fresh = now - 60_000;
    {
        let store = SledStore::open(&data, 8 << 20).unwrap();
        let ws = [
            seeded_window("site", old, 5),
            seeded_window("site", fresh, 3),
        ];
        store.ingest("agent-eu", "eu", 1, &ws).unwrap();
        assert_eq!(store.windows_since("site", i64::MIN).unwrap().len(), 2);
    }
    wait_unlocked(&data);
    let config = write_config(
        dir.path(),
        &format!("{LOOPBACK_SERVER}raw_retention = \"25h\"\n\n[[check]]\nname = \"site\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\nport = 9\nregions = [\"eu\"]\n"),
    );
    let log = dir.path().join("coordinator.log");
    let (mut coordinator, _grpc, http) = start_coordinator_with(&config, &[], Some(&log));
    let pruned = eventually(Duration::from_secs(20), || async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.lines()
            .find(|l| l.contains("removed raw windows, batch markers and roll-ups past retention"))
            .map(str::to_owned)
    })
    .await
    .expect("no pruning log line within 20 s");
    assert!(pruned.contains("windows=1 "), "{pruned}");
    // The agent's one batch marker is its last: kept.
    assert!(pruned.contains("batch_markers=0"), "{pruned}");
    assert!(pruned.contains("raw_retention=25h"), "{pruned}");

    // History still counts the pruned window: 30 days holds both, the last
    // 24 hours only the fresh one.
    let month = get_json(http, "/api/v1/checks/site/history?range=30d").await;
    let day = get_json(http, "/api/v1/checks/site/history?range=24h").await;
    assert_eq!(recent(&month, "eu", "buckets", 30).0, 8, "{month}");
    assert_eq!(recent(&day, "eu", "buckets", 24).0, 3, "{day}");
    terminate("the coordinator", &mut coordinator, Duration::from_secs(20));

    let store = SledStore::open(&data, 8 << 20).unwrap();
    let left: Vec<i64> = store
        .windows_since("site", i64::MIN)
        .unwrap()
        .into_iter()
        .map(|w| w.window.unwrap().start_unix_ms)
        .collect();
    assert_eq!(left, [fresh]);
}
