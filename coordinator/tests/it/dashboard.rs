//! The dashboard in a real browser (issue 7): Debian's headless Chromium,
//! driven by Playwright (`coordinator/tests/browser/dashboard.mjs`), against
//! a coordinator with two agent processes. It signs in with an API token,
//! shows both regions with charts and data, shows a target going down
//! within one evaluation interval without a reload, and follows a load run
//! live. Screenshots go to `target/screenshots/` (CI artefacts).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_regions_a_target_going_down_and_a_live_load_run() {
    assert!(
        browser_dir().join("node_modules/playwright-core").exists(),
        "run `npm ci` in coordinator/tests/browser (.ci/run does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(40, time::Duration::hours(6));
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let site = https_target(&pki).await;
    let api = RegionTarget::start().await;
    let config = write_config(
        dir.path(),
        &format!(
            r#"{LOOPBACK_SERVER}
[alerting]
eval_interval = "15s"

[load]
max_rate = 200
max_vus = 10

[[check]]
name = "site"
kind = "http"
url = "https://localhost:{port}/health"
regions = ["eu", "us"]
interval = "1s"
timeout = "900ms"
ca_file = "{ca}"

{api}"#,
            port = site.addr.port(),
            ca = ca_file.display(),
            api = api.checks_toml(&["api".into()], &["eu", "us"], "1s", "900ms"),
        ),
    );
    agent_bin();
    let (_coordinator, grpc, http) = start_coordinator(&config);
    let _eu = start_agent(grpc, "eu", "agent-eu");
    let _us = start_agent(grpc, "us", "agent-us");

    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    let mut node = Command::new("node")
        .arg(browser_dir().join("dashboard.mjs"))
        .env("VANTAGE_URL", format!("http://{http}/"))
        .env("VANTAGE_TOKEN", TEST_ADMIN_TOKEN)
        .env("SCREENSHOTS", &shots)
        // One evaluation interval.
        .env("DOWN_WITHIN_MS", "15000")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node (the machine's Node.js)");
    let mut stdin = node.stdin.take().unwrap();
    let stdout = BufReader::new(node.stdout.take().unwrap());
    // The driver's lines, read on a thread; the test answers its WAITs.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut transcript = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = match rx.recv_timeout(left) {
            Ok(l) => l,
            Err(_) => break,
        };
        eprintln!("browser: {line}");
        transcript.push(line.clone());
        match line.as_str() {
            "WAIT down" => {
                api.fail("api", &["eu"]);
                writeln!(stdin, "go").unwrap();
            }
            "WAIT load" => {
                let file = format!(
                    "[[scenario]]\nname = \"s\"\nexecutor = \"constant-arrival-rate\"\nrate = 40\nduration = \"12s\"\npreAllocatedVUs = 4\n\n[[scenario.request]]\nurl = \"{}\"\n",
                    api.url("load")
                );
                let body = serde_json::json!({ "file": file, "regions": ["eu", "us"] }).to_string();
                let (status, text) = http_request(
                    http,
                    "POST",
                    "/api/v1/loadtests",
                    Some(&body),
                    Some(TEST_ADMIN_TOKEN),
                )
                .await;
                assert_eq!(status, 201, "{text}");
                writeln!(stdin, "go").unwrap();
            }
            "DONE" => break,
            l if l.starts_with("FAIL") => break,
            _ => {}
        }
    }
    // The driver exits by itself after DONE or FAIL (bounded); otherwise it
    // is stopped.
    let finished = transcript
        .iter()
        .any(|l| l == "DONE" || l.starts_with("FAIL"));
    let until = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = node.try_wait().unwrap() {
            break s;
        }
        if !finished || std::time::Instant::now() > until {
            let _ = node.kill();
            break node.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        transcript.iter().any(|l| l == "DONE") && status.success(),
        "the browser test failed:\n{}",
        transcript.join("\n")
    );
    for shot in [
        "dashboard-up.png",
        "dashboard-down.png",
        "dashboard-load.png",
    ] {
        assert!(shots.join(shot).exists(), "{shot}");
    }
}
