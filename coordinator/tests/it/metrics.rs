//! `GET /metrics` (issue 7): a live scrape from a coordinator with two agent
//! processes passes `promtool check metrics`, carries blackbox_exporter's
//! probe metrics per check and region, follows a target going down, and
//! needs a token like every route.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

/// The value of the sample `series` (name and labels exactly), if present.
fn value(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

async fn scrape(http: std::net::SocketAddr) -> String {
    let (status, head, body) =
        http_exchange(http, "GET", "/metrics", None, Some(TEST_ADMIN_TOKEN), None).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    body
}

/// `promtool check metrics` on `page`: its exit status and output.
fn promtool(page: &str) -> (bool, String) {
    use std::io::Write as _;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; .ci/run installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_scrape_passes_promtool_and_follows_the_probes() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(3, time::Duration::hours(6));
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let site = https_target(&pki).await;
    let api = RegionTarget::start().await;
    let config = write_config(
        dir.path(),
        &format!(
            r#"{LOOPBACK_SERVER}
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

    // Without a token: 401, like every route but /healthz.
    let (status, _, _) = http_exchange(http, "GET", "/metrics", None, None, None).await;
    assert_eq!(status, 401);

    let page = eventually(Duration::from_secs(30), || async {
        let page = scrape(http).await;
        let ready = ["site", "api"].iter().all(|c| {
            ["eu", "us"].iter().all(|r| {
                value(
                    &page,
                    &format!("probe_success{{check=\"{c}\",region=\"{r}\"}}"),
                ) == Some(1.0)
            })
        }) && value(&page, "vantage_agents_connected") == Some(2.0);
        ready.then_some(page)
    })
    .await
    .expect("both checks up from both regions within 30 s");

    let (ok, report) = promtool(&page);
    assert!(ok, "promtool check metrics:\n{report}\n--- page\n{page}");

    for r in ["eu", "us"] {
        let l = format!("{{check=\"site\",region=\"{r}\"}}");
        assert_eq!(
            value(&page, &format!("probe_http_status_code{l}")),
            Some(200.0)
        );
        let d = value(&page, &format!("probe_duration_seconds{l}")).unwrap();
        assert!(d > 0.0 && d < 0.9, "{d}");
        // The leaf expires 3 days and 6 hours from the test's start.
        let expiry = value(&page, &format!("probe_ssl_earliest_cert_expiry{l}")).unwrap();
        let in_days = (expiry - now_ms() as f64 / 1000.0) / 86_400.0;
        assert!((3.2..3.3).contains(&in_days), "{in_days}");
        let tls_info =
            format!("probe_tls_version_info{{check=\"site\",region=\"{r}\",version=\"TLS 1.3\"}}");
        assert_eq!(value(&page, &tls_info), Some(1.0), "{page}");
        for phase in ["resolve", "connect", "tls", "processing"] {
            let s = format!(
                "probe_http_duration_seconds{{check=\"site\",region=\"{r}\",phase=\"{phase}\"}}"
            );
            assert!(value(&page, &s).is_some(), "{s}\n{page}");
        }
        let count = format!("vantage_probe_duration_seconds_count{l}");
        assert!(value(&page, &count).unwrap() >= 1.0);
        let agent =
            format!("vantage_agent_spool_backlog_batches{{agent=\"agent-{r}\",region=\"{r}\"}}");
        assert!(value(&page, &agent).is_some(), "{agent}\n{page}");
    }
    assert!(value(&page, "vantage_evaluations_total").unwrap() >= 1.0);

    // The api check fails from eu only: its probe_success follows within a
    // few windows, us stays up, and the failures are counted by class.
    api.fail("api", &["eu"]);
    let page = eventually(Duration::from_secs(20), || async {
        let page = scrape(http).await;
        (value(&page, "probe_success{check=\"api\",region=\"eu\"}") == Some(0.0)).then_some(page)
    })
    .await
    .expect("probe_success of api/eu went to 0");
    assert_eq!(
        value(&page, "probe_success{check=\"api\",region=\"us\"}"),
        Some(1.0)
    );
    assert!(
        value(
            &page,
            "vantage_probe_failures_total{check=\"api\",region=\"eu\",class=\"status\"}"
        )
        .unwrap()
            >= 1.0,
        "{page}"
    );
    let (ok, report) = promtool(&page);
    assert!(ok, "promtool check metrics:\n{report}");
}

/// `vantage-coordinator status` against a live coordinator: the agents and a
/// row per check and region, with its state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_prints_the_fleet_and_each_checks_state_per_region() {
    let dir = tempfile::tempdir().unwrap();
    let api = RegionTarget::start().await;
    let config = write_config(
        dir.path(),
        &format!(
            "{LOOPBACK_SERVER}\n{}",
            api.checks_toml(&["api".into()], &["eu", "us"], "1s", "900ms"),
        ),
    );
    agent_bin();
    let (_coordinator, grpc, http) = start_coordinator(&config);
    let _eu = start_agent(grpc, "eu", "agent-eu");
    api.fail("api", &["eu"]);
    let status = |token: Option<&'static str>, extra: &'static [&'static str]| async move {
        tokio::task::spawn_blocking(move || {
            let mut cmd = Command::new(coordinator_bin());
            cmd.args(["status", "--api", &format!("http://{http}")]);
            cmd.args(extra);
            match token {
                Some(t) => cmd.env("VANTAGE_API_TOKEN", t),
                None => cmd.env_remove("VANTAGE_API_TOKEN"),
            };
            cmd.output().unwrap()
        })
        .await
        .unwrap()
    };
    let out = eventually(Duration::from_secs(30), || async {
        let out = status(Some(TEST_ADMIN_TOKEN), &[]).await;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.success() && text.contains(" down ")).then_some(text)
    })
    .await
    .expect("status shows api down from eu within 30 s");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("AGENT"), "{out}");
    assert!(lines[1].starts_with("agent-eu  eu"), "{out}");
    let eu = lines
        .iter()
        .find(|l| l.starts_with("api ") && l.contains(" eu "))
        .unwrap();
    assert!(eu.contains(" down ") && eu.contains("0.00%"), "{out}");
    // No agent in us: the configured region is listed with no data.
    let us = lines
        .iter()
        .find(|l| l.starts_with("api ") && l.contains(" us "))
        .unwrap();
    assert!(us.contains("no data"), "{out}");

    // The same for scripts: --json.
    let out = status(Some(TEST_ADMIN_TOKEN), &["--json"]).await;
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status --json");
    assert_eq!(v["agents"][0]["name"], "agent-eu", "{v:#}");
    assert_eq!(v["agents"][0]["region"], "eu", "{v:#}");
    let row = |region: &str| {
        v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["check"] == "api" && r["region"] == region)
            .cloned()
            .unwrap_or_else(|| panic!("no api/{region} row in {v:#}"))
    };
    let eu = row("eu");
    assert_eq!(eu["state"], "down", "{v:#}");
    assert_eq!(eu["availability"], 0.0, "{v:#}");
    assert!(eu["attempts"].as_u64() > Some(0), "{v:#}");
    assert_eq!(eu["successes"], 0, "{v:#}");
    assert!(eu["last_error"].is_string(), "{v:#}");
    let us = row("us");
    assert_eq!(us["state"], "no data", "{v:#}");
    assert!(us["latency_ms"]["p95"].is_null(), "{v:#}");
    assert_eq!(v["checks"].as_array().unwrap().len(), 2, "{v:#}");

    // Without a token: a clear error and exit 2.
    let out = status(None, &[]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
