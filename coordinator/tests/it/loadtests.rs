//! Distributed load runs end to end: a coordinator and two agent processes
//! (regions `eu` and `us`) over real gRPC, against a local HTTP target that
//! records when each request arrived.

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpListener;

use crate::support::*;

/// A target answering after `delay_ms`, recording each request's arrival
/// (unix ms).
struct Target {
    addr: SocketAddr,
    arrivals: Arc<Mutex<Vec<i64>>>,
    delay_ms: Arc<AtomicU64>,
    _task: tokio::task::JoinHandle<()>,
}

impl Drop for Target {
    fn drop(&mut self) {
        self._task.abort();
    }
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

impl Target {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let arrivals: Arc<Mutex<Vec<i64>>> = Arc::default();
        let delay_ms = Arc::new(AtomicU64::new(0));
        let (a, d) = (Arc::clone(&arrivals), Arc::clone(&delay_ms));
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (a, d) = (Arc::clone(&a), Arc::clone(&d));
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req: hyper::Request<_>| {
                        a.lock().unwrap().push(unix_ms());
                        let delay = d.load(Ordering::Relaxed);
                        async move {
                            if delay > 0 {
                                tokio::time::sleep(Duration::from_millis(delay)).await;
                            }
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                Bytes::from_static(b"ok\n"),
                            )))
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Target {
            addr,
            arrivals,
            delay_ms,
            _task: task,
        }
    }

    fn count(&self) -> usize {
        self.arrivals.lock().unwrap().len()
    }

    fn last(&self) -> Option<i64> {
        self.arrivals.lock().unwrap().iter().copied().max()
    }
}

struct Fleet {
    dir: tempfile::TempDir,
    http: SocketAddr,
    _coordinator: Proc,
    _agents: Vec<Proc>,
}

async fn fleet(extra_config: &str) -> Fleet {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            r#"{LOOPBACK_SERVER}
[load]
max_rate = 5000
max_vus = 50
{extra_config}
"#
        ),
    );
    agent_bin();
    let (coordinator, grpc, http) = start_coordinator(&config);
    let agents = vec![
        start_agent(grpc, "eu", "agent-eu"),
        start_agent(grpc, "us", "agent-us"),
    ];
    eventually(Duration::from_secs(30), || async {
        let a = get_json(http, "/api/v1/agents").await;
        (a["agents"].as_array().map_or(0, Vec::len) == 2).then_some(())
    })
    .await
    .expect("both agents connected");
    Fleet {
        dir,
        http,
        _coordinator: coordinator,
        _agents: agents,
    }
}

/// Runs `vantage-coordinator loadtest run` on `file` (blocking, bounded by
/// the run's own length).
async fn loadtest_run(f: &Fleet, file: &str) -> Output {
    let path = f.dir.path().join("run.toml");
    std::fs::write(&path, file).unwrap();
    let tls = is_tls(f.http);
    let api = format!("{}://{}", if tls { "https" } else { "http" }, f.http);
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(coordinator_bin());
        if tls {
            cmd.arg("loadtest")
                .arg("run")
                .arg("--ca-file")
                .arg(&test_ca().ca_file);
        } else {
            cmd.args(["loadtest", "run"]);
        }
        cmd.arg(&path)
            .args(["--regions", "eu,us", "--api", &api, "--quiet"])
            .env("VANTAGE_API_TOKEN", TEST_ADMIN_TOKEN)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

async fn only_run(http: SocketAddr) -> Value {
    let list = get_json(http, "/api/v1/loadtests").await;
    let id = list["loadtests"][0]["id"].as_str().unwrap().to_owned();
    get_json(http, &format!("/api/v1/loadtests/{id}")).await
}

fn histogram(b64: &Value) -> hdrhistogram::Histogram<u64> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.as_str().unwrap())
        .unwrap();
    vantage_proto::histogram::decode(&bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_share_the_rate_and_the_merge_is_the_union() {
    let target = Target::start().await;
    let f = fleet("").await;
    let file = format!(
        r#"[[scenario]]
name = "api"
executor = "constant-arrival-rate"
rate = 200
duration = "3s"
preAllocatedVUs = 40

[[scenario.request]]
url = "http://{}/"

[thresholds]
http_req_duration = ["p(95)<2000"]
"#,
        target.addr
    );
    let out = loadtest_run(&f, &file).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("distributed load run"), "{stdout}");
    assert!(stdout.contains("http_req_duration"), "{stdout}");

    let run = only_run(f.http).await;
    assert_eq!(run["state"], "passed", "{run}");
    let agents = run["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 2);
    let per_agent: Vec<u64> = agents
        .iter()
        .map(|a| a["http_reqs"].as_u64().unwrap())
        .collect();
    // 200/s for 3 s, split 100 + 100: each agent starts its 300 iterations
    // or counts those it could not start in time (k6's dropped_iterations,
    // possible on a loaded machine); the merged count is the sum of the
    // agents' counts and what the target received.
    let sent: u64 = per_agent.iter().sum();
    let dropped = run["metrics"]["dropped_iterations"].as_u64().unwrap();
    assert!(per_agent.iter().all(|&n| n <= 300), "{run}");
    assert_eq!(sent + dropped, 600, "{run}");
    assert!(dropped <= 30, "{run}");
    assert_eq!(run["metrics"]["http_reqs"], sent);
    assert_eq!(target.count() as u64, sent);

    // The merged histogram is exactly the union of the agents' histograms,
    // so its p95 is the p95 of the union.
    let h = &run["histograms"]["http_req_duration"];
    let mut union = histogram(&h["agents"]["agent-eu"]);
    union.add(histogram(&h["agents"]["agent-us"])).unwrap();
    let merged = histogram(&h["merged"]);
    assert_eq!(merged, union);
    assert_eq!(union.len(), sent);
    let p95_ms = union.value_at_quantile(0.95) as f64 / 1000.0;
    assert_eq!(
        run["metrics"]["http_req_duration"]["p95"].as_f64().unwrap(),
        (p95_ms * 1000.0).round() / 1000.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_threshold_exits_99_and_stops_both_agents_within_2_s() {
    let target = Target::start().await;
    target.delay_ms.store(30, Ordering::Relaxed);
    let f = fleet("").await;
    let file = format!(
        r#"[[scenario]]
name = "slow"
executor = "constant-vus"
vus = 4
duration = "30s"

[[scenario.request]]
url = "http://{}/"

[thresholds]
http_req_duration = [{{ threshold = "p(95)<10", abort_on_fail = true, delay_abort_eval = "1s" }}]
"#,
        target.addr
    );
    let started = std::time::Instant::now();
    let out = loadtest_run(&f, &file).await;
    assert_eq!(
        out.status.code(),
        Some(99),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the 30 s run was aborted early ({:?})",
        started.elapsed()
    );
    let run = only_run(f.http).await;
    assert_eq!(run["state"], "aborted", "{run}");
    assert_eq!(run["verdict"], "thresholds_failed");
    let abort_at = run["abort"]["at_unix_ms"].as_i64().unwrap();
    assert!(run["abort"]["by_threshold"].as_bool().unwrap());
    for a in run["agents"].as_array().unwrap() {
        assert_eq!(a["aborted"], true, "{a}");
        assert!(a["http_reqs"].as_u64().unwrap() > 0, "{a}");
    }
    // Nothing reached the target more than 2 s after the abort was sent.
    let last = target.last().unwrap();
    assert!(
        last <= abort_at + 2000,
        "last request {} ms after the abort",
        last - abort_at
    );
    let before = target.count();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(target.count(), before, "load continued after the run ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_runs_say_why_and_send_nothing() {
    let target = Target::start().await;
    let f = fleet("").await;
    let post = |body: Value| {
        let http = f.http;
        async move {
            let body = body.to_string();
            let (status, text) = http_request(
                http,
                "POST",
                "/api/v1/loadtests",
                Some(&body),
                Some(TEST_ADMIN_TOKEN),
            )
            .await;
            (status, text)
        }
    };
    let scenario = |url: &str, rate: u64| {
        format!(
            "[[scenario]]\nname = \"s\"\nexecutor = \"constant-arrival-rate\"\nrate = {rate}\nduration = \"2s\"\npreAllocatedVUs = 2\n\n[[scenario.request]]\nurl = \"{url}\"\n"
        )
    };
    let local = format!("http://{}/", target.addr);
    let cases = [
        (
            serde_json::json!({ "file": scenario("http://example.com/", 10), "regions": ["eu"] }),
            400,
            "example.com",
        ),
        (
            serde_json::json!({ "file": scenario(&local, 6000), "regions": ["eu"] }),
            400,
            "load.max_rate of 5000",
        ),
        (
            serde_json::json!({
                "file": scenario(&local, 10).replace("duration = \"2s\"", "duration = \"2h\""),
                "regions": ["eu"],
            }),
            400,
            "above the coordinator's load.max_duration of 1h",
        ),
        (
            serde_json::json!({ "file": scenario(&local, 10), "regions": ["mars"] }),
            409,
            "\\\"mars\\\" has no connected agent",
        ),
        (
            serde_json::json!({ "file": "[[scenario]\n", "regions": ["eu"] }),
            400,
            "loadtest.toml:1:",
        ),
        (
            serde_json::json!({ "file": scenario(&local, 10), "regions": ["eu"], "extra": 1 }),
            400,
            "unknown field",
        ),
    ];
    for (body, status, needle) in cases {
        let (got, text) = post(body.clone()).await;
        assert_eq!(got, status, "{body}: {text}");
        assert!(text.contains(needle), "{body}: {text}");
    }
    let list = get_json(f.http, "/api/v1/loadtests").await;
    assert_eq!(list["loadtests"].as_array().unwrap().len(), 0);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(target.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadtest_run_speaks_https_with_a_ca_file_and_refuses_plaintext_off_loopback() {
    let out = Command::new(coordinator_bin())
        .args(["loadtest", "run", "/nonexistent.toml", "--regions", "eu"])
        .args(["--api", "http://10.1.2.3:7080"])
        .env("VANTAGE_API_TOKEN", TEST_ADMIN_TOKEN)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("only allowed to a loopback address"),
        "{stderr}"
    );

    let target = Target::start().await;
    let certs = tempfile::tempdir().unwrap();
    let f = fleet(&tls_toml_abs(certs.path(), &[])).await;
    let file = format!(
        "[[scenario]]\nname = \"api\"\nexecutor = \"constant-arrival-rate\"\nrate = 20\nduration = \"2s\"\npreAllocatedVUs = 5\n\n[[scenario.request]]\nurl = \"http://{}/\"\n",
        target.addr
    );
    let out = loadtest_run(&f, &file).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("http_reqs"), "{stdout}");
}

/// `GET /api/v1/loadtests/{id}/report` with the admin token: status,
/// lower-cased head, body.
async fn report(http: SocketAddr, id: &str) -> (u16, String, String) {
    let (status, head, body) = http_exchange(
        http,
        "GET",
        &format!("/api/v1/loadtests/{id}/report"),
        None,
        Some(TEST_ADMIN_TOKEN),
        None,
    )
    .await;
    (status, head.to_ascii_lowercase(), body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_html_report_shows_both_regions_live_and_finished() {
    let target = Target::start().await;
    let f = fleet("").await;
    let file = format!(
        r#"[[scenario]]
name = "api"
executor = "constant-arrival-rate"
rate = 100
duration = "4s"
preAllocatedVUs = 10

[[scenario.request]]
url = "http://{}/"

[thresholds]
http_req_duration = ["p(95)<2000"]
http_reqs = ["count>100000"]
"#,
        target.addr
    );
    let body = serde_json::json!({ "file": file, "regions": ["eu", "us"] }).to_string();
    let (status, text) = http_request(
        f.http,
        "POST",
        "/api/v1/loadtests",
        Some(&body),
        Some(TEST_ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, 201, "{text}");
    let id = serde_json::from_str::<Value>(&text).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // While it runs: drawn from memory, with what has arrived so far.
    let live = eventually(Duration::from_secs(10), || async {
        let (status, _, html) = report(f.http, &id).await;
        assert_eq!(status, 200, "{html}");
        (html.contains("(live)") && html.contains("data-label=\"eu req/s\"")).then_some(html)
    })
    .await
    .expect("a live report with data");
    assert!(live.contains(&id));

    let done = eventually(Duration::from_secs(30), || async {
        let run = get_json(f.http, &format!("/api/v1/loadtests/{id}")).await;
        run["verdict"].is_string().then_some(run)
    })
    .await
    .expect("the run finished");
    // count>100000 cannot hold.
    assert_eq!(done["state"], "failed", "{done}");

    let (status, head, html) = report(f.http, &id).await;
    assert_eq!(status, 200, "{html}");
    assert!(
        head.contains("content-type: text/html; charset=utf-8"),
        "{head}"
    );
    assert!(
        head.contains(
            "content-security-policy: default-src 'none'; style-src 'unsafe-inline'; img-src data:"
        ),
        "{head}"
    );
    assert!(!html.contains("(live)"));
    assert_eq!(html.matches("<svg ").count(), 4, "{html}");
    assert!(!html.contains(">no data</text>"), "{html}");
    for region in ["eu", "us"] {
        for line in ["p50", "p95", "p99", "req/s", "errors/s"] {
            assert!(
                html.contains(&format!("data-label=\"{region} {line}\"")),
                "{region} {line}: {html}"
            );
        }
    }
    assert!(html.contains("regions: eu, us"), "{html}");
    let row = |needle: &str| {
        html.lines()
            .find(|l| l.starts_with("<tr>") && l.contains(needle))
            .unwrap_or_else(|| panic!("no row {needle}: {html}"))
            .to_owned()
    };
    assert!(row("count&gt;100000").contains("✗ FAILED"));
    assert!(row("p(95)&lt;2000").contains("✓ passed"));
    // The totals are the merged run's.
    let reqs = done["metrics"]["http_reqs"].as_u64().unwrap();
    assert!(
        html.contains(&format!("<b>{reqs}</b><span>requests</span>")),
        "{html}"
    );
    // Every request counted reached the target.
    assert_eq!(reqs, target.count() as u64);

    let (status, _, _) = report(f.http, "lt-000000000000").await;
    assert_eq!(status, 404);
}
