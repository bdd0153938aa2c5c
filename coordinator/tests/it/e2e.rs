//! The foundation's acceptance test: a coordinator and two agents (regions `eu`
//! and `us`) as separate processes, a real HTTPS target whose certificate
//! expires in 3 days. Both regions must report percentiles and 3 days left
//! within 30 s; when the target slows to 300 ms, the reported p95 follows.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

fn region<'a>(check: &'a Value, name: &str) -> Option<&'a Value> {
    check["regions"]
        .as_array()?
        .iter()
        .find(|r| r["region"] == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_regions_report_percentiles_and_tls_days_then_follow_a_slowdown() {
    let dir = tempfile::tempdir().unwrap();
    // 3 days and 6 hours: whole days left is 3 however long the test runs.
    let pki = pki(3, time::Duration::hours(6));
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let target = https_target(&pki).await;

    let config = write_config(
        dir.path(),
        &format!(
            r#"{LOOPBACK_SERVER}
[[check]]
name = "site"
kind = "http"
url = "https://localhost:{port}/health"
regions = ["eu", "us"]
interval = "500ms"
timeout = "500ms"
ca_file = "{ca}"
body_contains = "target ok"
"#,
            port = target.addr.port(),
            ca = ca_file.display()
        ),
    );
    agent_bin(); // may build it: not part of the 30 s
    let started = Instant::now();
    let (_coord, grpc, http) = start_coordinator(&config);
    let _eu = start_agent(grpc, "eu", "agent-eu");
    let _us = start_agent(grpc, "us", "agent-us");

    // Within 30 s of start: both regions have percentiles and 3 days left.
    let first = eventually(Duration::from_secs(30), || async {
        let c = get_json(http, "/api/v1/checks/site").await;
        let ready = ["eu", "us"].iter().all(|r| {
            region(&c, r).is_some_and(|s| {
                s["latency_ms"]["p95"].is_number() && s["tls"]["days_left"].is_number()
            })
        });
        ready.then_some(c)
    })
    .await
    .unwrap_or_else(|| panic!("both regions did not report within 30 s"));
    let took = started.elapsed();
    eprintln!("both regions reported after {took:?}");
    for r in ["eu", "us"] {
        let s = region(&first, r).unwrap();
        assert_eq!(s["tls"]["days_left"], 3, "{r}: {s}");
        assert_eq!(s["tls"]["chain_status"], "valid", "{r}: {s}");
        assert_eq!(s["tls"]["san_match"], true, "{r}: {s}");
        assert_eq!(s["agents"], serde_json::json!([format!("agent-{r}")]));
        assert_eq!(s["last_status"], 200);
        let lat = &s["latency_ms"];
        for p in ["p50", "p95", "p99"] {
            assert!(lat[p].as_f64().unwrap() > 0.0, "{r} {p}: {lat}");
        }
        // Fast target: well under the 300 ms we add below.
        assert!(lat["p95"].as_f64().unwrap() < 150.0, "{r}: {lat}");
        assert_eq!(s["availability"], 100.0, "{r}: {s}");
        // The detail view carries the k6 phases.
        for phase in ["dns", "connect", "tls", "waiting"] {
            assert!(s["phases_ms"][phase]["p95"].is_number(), "{r} {phase}: {s}");
        }
    }
    assert_eq!(first["all"]["agents"].as_array().unwrap().len(), 2);
    let list = get_json(http, "/api/v1/checks").await;
    assert_eq!(list["checks"][0]["name"], "site");
    assert_eq!(list["checks"][0]["regions"].as_array().unwrap().len(), 2);

    // Slow the target down; the p95 over a short window follows in both regions.
    target.delay_ms.store(300, Ordering::Relaxed);
    let slow = eventually(Duration::from_secs(30), || async {
        let c = get_json(http, "/api/v1/checks/site?window=4s").await;
        let slow = ["eu", "us"].iter().all(|r| {
            region(&c, r).is_some_and(|s| s["latency_ms"]["p95"].as_f64().unwrap_or(0.0) >= 300.0)
        });
        slow.then_some(c)
    })
    .await
    .expect("p95 did not follow the 300 ms slowdown within 30 s");
    for r in ["eu", "us"] {
        let s = region(&slow, r).unwrap();
        let p95 = s["latency_ms"]["p95"].as_f64().unwrap();
        assert!((300.0..2000.0).contains(&p95), "{r}: p95 {p95}");
        // The delay is server think time, so it lands in the waiting phase.
        assert!(
            s["phases_ms"]["waiting"]["p95"].as_f64().unwrap() >= 300.0,
            "{r}: {s}"
        );
    }
    // Both regions probed the real target, before and after the slowdown
    // (at least two probes each; results arrive within a second or two now
    // that the first window is not the agent's 10 s default).
    let probes = target.requests.load(Ordering::Relaxed);
    assert!(probes >= 4, "{probes} requests reached the target");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_reports_errors_with_position_and_exit_code_78() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "version = 1\n\n[[check]]\nname = \"web\"\nkind = \"http\"\nregions = [\"eu\"]\nurl = \"https://example.test/\"\nintervall = \"10s\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(coordinator_bin())
        .arg("validate")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:8:1"), "{err}");
    assert!(err.contains("check[0].intervall"), "{err}");
    assert!(err.contains("unknown"), "{err}");

    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "version = 1\n\n[[check]]\nname = \"web\"\nkind = \"tcp\"\nregions = [\"eu\"]\nhost = \"example.test\"\nport = 443\n",
    )
    .unwrap();
    let out = std::process::Command::new(coordinator_bin())
        .arg("validate")
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (1 checks)"));
}
