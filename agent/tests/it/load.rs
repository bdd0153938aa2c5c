//! `vantage-agent load FILE`: the real binary against hyper servers on
//! loopback that count what reaches them. Every run is short and bounded.

use std::net::SocketAddr;
use std::process::Output;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;

/// A loopback target: `/` answers 200 "ok", `/fail` answers 500; request
/// number `stall_at` (1-based) is held for one second.
struct Target {
    addr: SocketAddr,
    hits: Arc<AtomicU64>,
}

impl Target {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn target(stall_at: Option<u64>) -> Target {
    serve(stall_at, true).await
}

/// A target that closes every connection after one response when
/// `keep_alive` is false.
async fn serve(stall_at: Option<u64>, keep_alive: bool) -> Target {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&hits);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                        async move {
                            if Some(n) == stall_at {
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                            let status = if req.uri().path() == "/fail" {
                                500
                            } else {
                                200
                            };
                            let mut resp =
                                hyper::Response::new(Full::new(Bytes::from_static(b"ok")));
                            *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(keep_alive)
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    Target { addr, hits }
}

/// The outcome of one `load` run.
struct Run {
    out: Output,
    wall: Duration,
    /// NDJSON lines of `--out json=`.
    json: Vec<Value>,
    dir: tempfile::TempDir,
}

impl Run {
    fn code(&self) -> i32 {
        self.out.status.code().unwrap_or(-1)
    }

    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }

    fn summary(&self) -> &Value {
        let last = self.json.last().expect("a summary line");
        assert_eq!(last["type"], "summary", "{last}");
        last
    }

    fn metric(&self, name: &str) -> &Value {
        &self.summary()["metrics"][name]
    }
}

async fn load(toml: &str, args: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("load.toml");
    std::fs::write(&file, toml).unwrap();
    let json = dir.path().join("out.ndjson");
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_vantage-agent"));
    cmd.arg("load")
        .arg(&file)
        .arg("--out")
        .arg(format!("json={}", json.display()))
        .args(if args.contains(&"--threads") {
            &[][..]
        } else {
            &["--threads", "2"][..]
        })
        .args(args)
        .env_remove("VANTAGE_LOAD_ALLOWED_HOSTS")
        .kill_on_drop(true);
    let started = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("load finished within 60 s")
        .unwrap();
    let wall = started.elapsed();
    let json = std::fs::read_to_string(&json)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("NDJSON line {l:?}: {e}")))
        .collect();
    Run {
        out,
        wall,
        json,
        dir,
    }
}

fn scenario(executor_keys: &str, url: &str) -> String {
    format!(
        "[[scenario]]\nname = \"s\"\n{executor_keys}\ngracefulStop = \"2s\"\n\
         [[scenario.request]]\nurl = \"{url}\"\nchecks = {{ status = 200, body_contains = \"ok\" }}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_iterations_send_exactly_the_iterations() {
    let t = target(None).await;
    let file = scenario(
        "executor = \"shared-iterations\"\nvus = 10\niterations = 200",
        &t.url("/"),
    );
    let run = load(&file, &["--quiet"]).await;
    assert_eq!(run.code(), 0, "{}{}", run.stdout(), run.stderr());
    assert_eq!(t.hits(), 200);
    assert_eq!(run.metric("http_reqs")["count"], 200);
    assert_eq!(run.metric("iterations")["count"], 200);
    assert_eq!(run.metric("checks")["passes"], 400);
    assert_eq!(run.summary()["scenarios"][0]["vus_max"], 10);
    // Keep-alive: all but the first request of each VU reuse the connection
    // (0, recorded as 1 µs).
    assert_eq!(run.metric("http_req_connecting")["p90"], 0.001);
    let stdout = run.stdout();
    assert!(stdout.contains("http_req_duration"), "{stdout}");
    assert!(stdout.contains("100.00% ✓ 400 ✗ 0"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_vu_iterations_run_every_request_of_every_iteration() {
    let t = target(None).await;
    let file = format!(
        "{}[[scenario.request]]\nmethod = \"POST\"\nurl = \"{}\"\nbody = \"hello\"\n",
        scenario(
            "executor = \"per-vu-iterations\"\nvus = 4\niterations = 5",
            &t.url("/")
        ),
        t.url("/second")
    );
    let run = load(&file, &["--quiet"]).await;
    assert_eq!(run.code(), 0, "{}{}", run.stdout(), run.stderr());
    assert_eq!(t.hits(), 40);
    assert_eq!(run.metric("iterations")["count"], 20);
    assert_eq!(run.summary()["scenarios"][0]["vus_max"], 4);
    // data_sent counts every byte written: 20 GETs, and 20 POSTs that are 31
    // bytes longer ("POST", "/second", content-length: 5, the body).
    let authority = t
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let get = format!("GET / HTTP/1.1\r\nhost: {authority}\r\nuser-agent: vantage-load/0.1\r\n\r\n")
        .len() as u64;
    assert_eq!(run.metric("data_sent")["count"], 20 * get + 20 * (get + 31));
    assert!(run.stdout().contains("data_sent"), "{}", run.stdout());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constant_vus_stop_at_the_duration() {
    let t = target(None).await;
    let file = scenario(
        "executor = \"constant-vus\"\nvus = 3\nduration = \"1s\"",
        &t.url("/"),
    );
    let run = load(&file, &["--quiet"]).await;
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert!(run.wall < Duration::from_secs(3), "{:?}", run.wall);
    assert!(t.hits() > 50, "{}", t.hits());
    assert_eq!(run.metric("http_reqs")["count"], t.hits());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ramping_vus_follow_the_stages() {
    let t = target(None).await;
    let file = scenario(
        "executor = \"ramping-vus\"\nstartVUs = 0\nstages = [{ duration = \"1s\", target = 4 }, { duration = \"1s\", target = 4 }, { duration = \"500ms\", target = 0 }]",
        &t.url("/"),
    );
    let run = load(&file, &["--quiet"]).await;
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_eq!(run.summary()["scenarios"][0]["vus_max"], 4);
    assert!(run.wall >= Duration::from_millis(2400), "{:?}", run.wall);
    // The first second ramps up from 0: fewer VUs than the second one at 4.
    let intervals: Vec<&Value> = run
        .json
        .iter()
        .filter(|l| l["type"] == "interval")
        .collect();
    let reqs = |i: usize| intervals[i]["http_reqs"].as_u64().unwrap();
    assert!(reqs(0) < reqs(1), "{} vs {}", reqs(0), reqs(1));
    assert_eq!(intervals[1]["vus"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constant_arrival_rate_is_accurate() {
    let t = target(None).await;
    let file = scenario(
        "executor = \"constant-arrival-rate\"\nrate = 1000\ntimeUnit = \"1s\"\nduration = \"3s\"\npreAllocatedVUs = 20\nmaxVUs = 200",
        &t.url("/"),
    );
    let run = load(&file, &["--quiet"]).await;
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let hits = t.hits() as f64;
    assert!(
        (hits - 3000.0).abs() <= 30.0,
        "{hits} requests for 1000/s × 3 s"
    );
    assert_eq!(run.metric("http_reqs")["count"], t.hits());
    assert_eq!(run.metric("dropped_iterations")["count"], 0);
    let per_second: u64 = run
        .json
        .iter()
        .filter(|l| l["type"] == "interval")
        .map(|l| l["http_reqs"].as_u64().unwrap())
        .sum();
    assert_eq!(per_second, t.hits());
    assert!(run.wall < Duration::from_secs(5), "{:?}", run.wall);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_shows_in_the_corrected_latency_and_drops_iterations() {
    // Request 100 is held for 1 s while 200 iterations per second are due
    // and the pool has one VU.
    let t = target(Some(100)).await;
    let file = scenario(
        "executor = \"constant-arrival-rate\"\nrate = 200\nduration = \"3s\"\npreAllocatedVUs = 1\nmaxVUs = 1",
        &t.url("/"),
    );
    let run = load(&file, &["--quiet"]).await;
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let dropped = run.metric("dropped_iterations")["count"].as_u64().unwrap();
    // About 200 (1 s at 200/s); a slow machine drops a few more.
    assert!((150..=350).contains(&dropped), "dropped {dropped}");
    assert_eq!(dropped + t.hits(), 600);
    let p99 = run.metric("http_req_duration")["p99"].as_f64().unwrap();
    let corrected = run.metric("http_req_duration_corrected")["p99"]
        .as_f64()
        .unwrap();
    assert!(corrected >= 900.0, "corrected p99 {corrected} ms");
    assert!(p99 < 500.0, "uncorrected p99 {p99} ms");
    let stdout = run.stdout();
    assert!(
        stdout.contains("coordinated-omission corrected"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thresholds_decide_the_exit_code() {
    let t = target(None).await;
    let base = scenario(
        "executor = \"per-vu-iterations\"\nvus = 2\niterations = 10",
        &t.url("/"),
    );
    let pass = format!(
        "{base}[thresholds]\nhttp_req_duration = [\"p(95)<5000\", \"max<10000\"]\nhttp_req_failed = [\"rate<0.01\"]\nchecks = [\"rate>0.99\"]\niterations = [\"count>=20\"]\nhttp_reqs = [\"rate>1\"]\n"
    );
    let run = load(&pass, &["--quiet"]).await;
    assert_eq!(run.code(), 0, "{}{}", run.stdout(), run.stderr());
    assert!(
        run.stdout().contains("✓ http_req_failed: rate<0.01"),
        "{}",
        run.stdout()
    );

    let fail =
        format!("{base}[thresholds]\niterations = [\"count>100\"]\nchecks = [\"rate>0.99\"]\n");
    let run = load(&fail, &["--quiet"]).await;
    assert_eq!(run.code(), 99, "{}{}", run.stdout(), run.stderr());
    assert!(
        run.stdout().contains("✗ iterations: count>100"),
        "{}",
        run.stdout()
    );
    assert_eq!(run.summary()["verdict"], "thresholds_failed");
    let results = run.summary()["thresholds"].as_array().unwrap();
    assert_eq!(results[0]["ok"], false);
    assert_eq!(results[1]["ok"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_on_fail_stops_the_run_early() {
    let t = target(None).await;
    let file = format!(
        "{}[thresholds]\nhttp_req_failed = [{{ threshold = \"rate<0.01\", abort_on_fail = true, delay_abort_eval = \"1s\" }}]\n",
        scenario("executor = \"constant-vus\"\nvus = 2\nduration = \"30s\"", &t.url("/fail"))
    );
    let run = load(&file, &["--quiet"]).await;
    assert_eq!(run.code(), 99, "{}{}", run.stdout(), run.stderr());
    assert!(run.wall < Duration::from_secs(6), "{:?}", run.wall);
    assert_eq!(run.summary()["aborted"], true);
    assert!(run.stdout().contains("aborted early"), "{}", run.stdout());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disallowed_host_fails_before_any_request() {
    let t = target(None).await;
    let file = format!(
        "{}[[scenario.request]]\nurl = \"http://192.0.2.1/\"\n",
        scenario("executor = \"shared-iterations\"", &t.url("/"))
    );
    let run = load(&file, &["--quiet"]).await;
    assert_eq!(run.code(), 2, "{}", run.stderr());
    let stderr = run.stderr();
    assert!(
        stderr.contains(
            "load.toml:9:1: scenario[0].request[1].url: host \"192.0.2.1\" is not allowed for load"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("--allow-host 192.0.2.1"), "{stderr}");
    assert_eq!(t.hits(), 0);
    assert!(run.json.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_target_exits_1() {
    // A port that was just free: nothing listens.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let file = scenario(
        "executor = \"constant-vus\"\nvus = 1\nduration = \"10s\"",
        &format!("http://127.0.0.1:{port}/"),
    );
    let run = load(&file, &["--quiet"]).await;
    assert_eq!(run.code(), 1, "{}{}", run.stdout(), run.stderr());
    assert!(run.wall < Duration::from_secs(5), "{:?}", run.wall);
    assert!(
        run.stdout().contains("target unreachable"),
        "{}",
        run.stdout()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hlog_is_read_by_the_python_hdrhistogram_reader() {
    let t = target(None).await;
    let file = scenario(
        "executor = \"constant-arrival-rate\"\nrate = 300\nduration = \"2s\"\npreAllocatedVUs = 5",
        &t.url("/"),
    );
    let dir = tempfile::tempdir().unwrap();
    let hlog = dir.path().join("run.hlog");
    let run = load(&file, &["--quiet", "--hlog", hlog.to_str().unwrap()]).await;
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let text = std::fs::read_to_string(&hlog).unwrap();
    assert!(text.contains("#[StartTime: "), "{text}");
    assert!(text.contains(
        "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\""
    ));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/read_hlog.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(&hlog)
        .output()
        .expect("python3 (see .ci/run)");
    assert!(
        out.status.success(),
        "python hdrh reader failed (.ci/run installs hdrhistogram): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    let fields: Vec<u64> = printed
        .split_whitespace()
        .map(|f| f.parse().unwrap())
        .collect();
    assert_eq!(fields[0], t.hits(), "{printed}");
    // Every scheduled iteration was sent or counted as dropped (a machine
    // busy with other work may drop a few at the start).
    let dropped = run.metric("dropped_iterations")["count"].as_u64().unwrap();
    assert_eq!(t.hits() + dropped, 600);
    assert!(dropped <= 30, "dropped {dropped}");
    assert!(fields[1] >= 2, "{printed}");
    drop(run.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_load_file_exits_2_with_positions() {
    let run = load(
        "[[scenario]]\nname = \"s\"\nexecutor = \"constant-vus\"\nduraton = \"1s\"\n[[scenario.request]]\nurl = \"http://127.0.0.1/\"\n",
        &["--quiet"],
    )
    .await;
    assert_eq!(run.code(), 2);
    let stderr = run.stderr();
    assert!(
        stderr.contains(
            "load.toml:4:1: scenario[0].duraton: unknown key `duraton`, did you mean `duration`?"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("load.toml:1:1: scenario[0].duration: missing required key `duration`"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ramping_arrival_rate_follows_the_integral_of_the_stages() {
    let t = target(None).await;
    // 0 → 200/s over 1 s (100 iterations), then 200/s for 1 s (200).
    let file = scenario(
        "executor = \"ramping-arrival-rate\"\nstartRate = 0\npreAllocatedVUs = 5\nmaxVUs = 50\nstages = [{ duration = \"1s\", target = 200 }, { duration = \"1s\", target = 200 }]",
        &t.url("/"),
    );
    let run = load(&file, &["--quiet"]).await;
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_eq!(t.hits(), 300);
    assert_eq!(run.metric("dropped_iterations")["count"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caps_come_from_the_operator_and_the_file_only_lowers_them() {
    let t = target(None).await;
    let file = scenario(
        "executor = \"per-vu-iterations\"\nvus = 20\niterations = 1",
        &t.url("/"),
    );
    let run = load(&file, &["--quiet", "--max-vus", "10"]).await;
    assert_eq!(run.code(), 2, "{}", run.stderr());
    assert!(
        run.stderr().contains("above the max_vus cap of 10"),
        "{}",
        run.stderr()
    );
    assert_eq!(t.hits(), 0);
    // A higher CLI value does not raise the file's cap.
    let capped = format!("[options]\nmax_vus = 5\n{file}");
    let run = load(&capped, &["--quiet", "--max-vus", "100"]).await;
    assert_eq!(run.code(), 2, "{}", run.stderr());
    assert!(
        run.stderr().contains("above the max_vus cap of 5"),
        "{}",
        run.stderr()
    );
    // The rate cap is 100,000/s unless the operator raises it, to at most
    // 1,000,000/s; a file cannot raise it on its own.
    let fast = scenario(
        "executor = \"constant-arrival-rate\"\nrate = 150000\nduration = \"1s\"\npreAllocatedVUs = 10",
        &t.url("/"),
    );
    let run = load(
        &format!("[options]\nmax_rate = 200000\n{fast}"),
        &["--quiet"],
    )
    .await;
    assert_eq!(run.code(), 2, "{}", run.stderr());
    assert!(
        run.stderr()
            .contains("above the max_rate cap of 100000 (--max-rate)"),
        "{}",
        run.stderr()
    );
    let run = load(&fast, &["--quiet", "--max-rate", "2000000"]).await;
    assert_eq!(run.code(), 2, "{}", run.stderr());
    assert!(
        run.stderr().contains("--max-rate must be at most 1000000"),
        "{}",
        run.stderr()
    );
    assert_eq!(t.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_rate_paces_a_closed_model_run() {
    let t = target(None).await;
    // Four VUs would send thousands of requests in 1 s; the cap allows ~100.
    let file = scenario(
        "executor = \"constant-vus\"\nvus = 4\nduration = \"1s\"",
        &t.url("/"),
    );
    let run = load(&file, &["--quiet", "--max-rate", "100", "--threads", "1"]).await;
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert!(
        (90..=115).contains(&t.hits()),
        "{} requests at a 100/s cap",
        t.hits()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vus_reconnect_when_the_server_closes_the_connection() {
    let t = serve(None, false).await;
    let file = scenario(
        "executor = \"shared-iterations\"\nvus = 2\niterations = 50",
        &t.url("/"),
    );
    let run = load(&file, &["--quiet"]).await;
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_eq!(t.hits(), 50);
    assert_eq!(run.metric("http_req_failed")["passes"], 0);
    // Every request opened a connection: no 0 (reused, recorded as 1 µs).
    let min = run.metric("http_req_connecting")["min"].as_f64().unwrap();
    assert!(min > 0.001, "connecting min {min} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_html_writes_the_report_beside_the_json() {
    let t = target(None).await;
    let file = format!(
        "{}[thresholds]\nhttp_req_duration = [\"p(95)<0.001\"]\nhttp_req_failed = [\"rate<0.5\"]\n",
        scenario(
            "executor = \"constant-arrival-rate\"\nrate = 100\nduration = \"2s\"\npreAllocatedVUs = 5",
            &t.url("/")
        )
    );
    let dir = tempfile::tempdir().unwrap();
    let html_path = dir.path().join("report.html");
    let out = format!("html={}", html_path.display());
    let run = load(&file, &["--quiet", "--out", &out]).await;
    // p(95) under 1 µs cannot hold: exit 99, and the report says which.
    assert_eq!(run.code(), 99, "{}{}", run.stdout(), run.stderr());
    // The NDJSON output is still written in full.
    assert_eq!(run.metric("http_reqs")["count"], t.hits());
    let html = std::fs::read_to_string(&html_path).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    assert!(html.contains("<title>load.toml"), "{html}");
    assert_eq!(html.matches("<svg ").count(), 4, "{html}");
    assert!(!html.contains(">no data</text>"), "{html}");
    for tick in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"] {
        assert!(html.contains(&format!(">{tick}</text>")), "{tick}");
    }
    for line in [
        "local p50",
        "local p95",
        "local p99",
        "local req/s",
        "local errors/s",
    ] {
        assert!(html.contains(&format!("data-label=\"{line}\"")), "{line}");
    }
    // Open model: the corrected distribution is drawn too.
    assert!(html.contains("data-label=\"corrected for coordinated omission"));
    assert!(html.contains("thresholds failed"));
    let row = |needle: &str| {
        html.lines()
            .find(|l| l.starts_with("<tr>") && l.contains(needle))
            .unwrap_or_else(|| panic!("no row {needle}: {html}"))
            .to_owned()
    };
    assert!(row("p(95)&lt;0.001").contains("✗ FAILED"));
    assert!(row("rate&lt;0.5").contains("✓ passed"));
    assert!(html.contains(&format!("<b>{}</b><span>requests</span>", t.hits())));
    assert!(!html.contains("<script"));
    assert!(!html.contains("http://www.w3.org/1999/xlink"));
    assert!(html.len() < 200_000, "{}", html.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_takes_each_kind_once() {
    let file = scenario(
        "executor = \"shared-iterations\"\nvus = 1\niterations = 1",
        "http://127.0.0.1:9/",
    );
    for bad in ["json=/tmp/x.ndjson", "csv=/tmp/x.csv", "html="] {
        let run = load(&file, &["--quiet", "--out", bad]).await;
        assert_eq!(run.code(), 2, "{bad}: {}", run.stderr());
        assert!(run.stderr().contains("--out"), "{bad}: {}", run.stderr());
    }
}
