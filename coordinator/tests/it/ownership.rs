//! Load ownership proofs (issue 6): with `[load] ownership_token`, a run
//! starts only when every target host publishes `vantage-load=<token>`, as a
//! TXT record served by a real DNS server (dnsmasq, started here) or as the
//! file `/.well-known/vantage-load.txt` on the target, checked before every
//! run.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;

use crate::support::*;

const TOKEN: &str = "own-3f9a1c7e5b2d4f60";

/// A target that counts load requests and serves the proof file while
/// `publish` is set.
struct Target {
    addr: SocketAddr,
    publish: Arc<AtomicBool>,
    load_requests: Arc<AtomicU64>,
    _task: tokio::task::JoinHandle<()>,
}

impl Drop for Target {
    fn drop(&mut self) {
        self._task.abort();
    }
}

impl Target {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let publish = Arc::new(AtomicBool::new(false));
        let load_requests = Arc::new(AtomicU64::new(0));
        let (p, n) = (Arc::clone(&publish), Arc::clone(&load_requests));
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (p, n) = (Arc::clone(&p), Arc::clone(&n));
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: hyper::Request<_>| {
                        let response = if req.uri().path() == "/.well-known/vantage-load.txt" {
                            if p.load(Ordering::SeqCst) {
                                hyper::Response::new(Full::new(Bytes::from(format!(
                                    "# Vantage load tests are welcome here\nvantage-load={TOKEN}\n"
                                ))))
                            } else {
                                let mut r = hyper::Response::new(Full::new(Bytes::new()));
                                *r.status_mut() = hyper::StatusCode::NOT_FOUND;
                                r
                            }
                        } else {
                            n.fetch_add(1, Ordering::SeqCst);
                            hyper::Response::new(Full::new(Bytes::from_static(b"ok\n")))
                        };
                        async move { Ok::<_, std::convert::Infallible>(response) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Target {
            addr,
            publish,
            load_requests,
            _task: task,
        }
    }
}

/// dnsmasq on 127.0.0.1:`port` answering TXT `name` with `text` (and
/// nothing else: no upstream, no hosts file).
fn dnsmasq(port: u16, name: &str, text: &str, dir: &std::path::Path) -> Proc {
    let child = Command::new("dnsmasq")
        .args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--conf-file=/dev/null",
            "--user=root",
        ])
        .arg(format!("--port={port}"))
        .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()))
        .arg(format!("--txt-record={name},{text}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dnsmasq (dnsmasq-base; .ci/run installs it)");
    // Ready once it answers on its port (it binds before it forks nothing).
    std::thread::sleep(Duration::from_millis(300));
    Proc { child, spool: None }
}

/// Posts a run of 5 requests per second for 1 s at `url`; the status and,
/// for a started run, its final view (or the refusal text).
async fn run(http: SocketAddr, url: &str) -> (u16, Value) {
    let file = format!(
        "[[scenario]]\nname = \"s\"\nexecutor = \"constant-arrival-rate\"\nrate = 5\nduration = \"1s\"\npreAllocatedVUs = 1\n\n[[scenario.request]]\nurl = \"{url}\"\n"
    );
    let body = serde_json::json!({ "file": file, "regions": ["eu"] }).to_string();
    let (status, text) = http_request(
        http,
        "POST",
        "/api/v1/loadtests",
        Some(&body),
        Some(TEST_ADMIN_TOKEN),
    )
    .await;
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if status != 201 {
        return (status, value);
    }
    let id = value["id"].as_str().unwrap().to_owned();
    (status, loadtest_result(http, &id).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_start_only_on_targets_that_publish_the_proof_checked_every_time() {
    let dir = tempfile::tempdir().unwrap();
    let dns_port = free_port();
    let _dns = dnsmasq(
        dns_port,
        "_vantage-load.owned.vantage.example",
        &format!("vantage-load={TOKEN}"),
        dir.path(),
    );
    let config = write_config(
        dir.path(),
        &format!(
            r#"{LOOPBACK_SERVER}
[load]
max_rate = 100
max_vus = 5
allowed_hosts = ["owned.vantage.example", "unowned.vantage.example"]
ownership_token = "{TOKEN}"
ownership_dns_server = "127.0.0.1:{dns_port}"
"#
        ),
    );
    agent_bin();
    let (_coordinator, grpc, http) = start_coordinator(&config);
    let _agent = start_agent(grpc, "eu", "agent-eu");
    eventually(Duration::from_secs(30), || async {
        let a = get_json(http, "/api/v1/agents").await;
        (a["agents"].as_array().map_or(0, Vec::len) == 1).then_some(())
    })
    .await
    .expect("the agent connected");

    let target = Target::start().await;
    let by_ip = format!("http://{}/", target.addr);
    // No proof anywhere: refused before any load request, saying where to
    // publish what.
    let (status, refusal) = run(http, &by_ip).await;
    assert_eq!(status, 400, "{refusal}");
    let text = refusal.to_string();
    for needle in [
        "did not prove ownership",
        &format!("vantage-load={TOKEN}"),
        "/.well-known/vantage-load.txt",
        "404",
    ] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
    assert!(
        !text.contains("TXT"),
        "no TXT record for an IP literal: {text}"
    );
    assert_eq!(target.load_requests.load(Ordering::SeqCst), 0);

    // The file published: the run starts and completes.
    target.publish.store(true, Ordering::SeqCst);
    let (status, done) = run(http, &by_ip).await;
    assert_eq!(status, 201);
    assert_eq!(done["state"], "passed", "{done}");
    let sent = target.load_requests.load(Ordering::SeqCst);
    assert!(sent >= 4, "{sent} load requests");

    // Withdrawn: the very next run is refused (no cached proof).
    target.publish.store(false, Ordering::SeqCst);
    let (status, refusal) = run(http, &by_ip).await;
    assert_eq!(status, 400, "{refusal}");
    assert_eq!(target.load_requests.load(Ordering::SeqCst), sent);

    // A host name whose TXT record (from dnsmasq) carries the proof: no file
    // needed, the coordinator starts the run. (The agent then refuses the
    // name, which is not on its own allow-list and resolves nowhere here:
    // the run ends in `error` for that reason, not for ownership.)
    let port = target.addr.port();
    let (status, done) = run(http, &format!("http://owned.vantage.example:{port}/")).await;
    assert_eq!(status, 201, "{done}");
    assert_eq!(done["state"], "error", "{done}");
    assert!(!done.to_string().contains("ownership"), "{done}");
    assert_eq!(target.load_requests.load(Ordering::SeqCst), sent);

    // A name with no record and no file: refused, naming both places.
    let (status, refusal) = run(http, &format!("http://unowned.vantage.example:{port}/")).await;
    assert_eq!(status, 400, "{refusal}");
    let text = refusal.to_string();
    assert!(
        text.contains("a TXT record at _vantage-load.unowned.vantage.example"),
        "{text}"
    );
    assert!(text.contains("/.well-known/vantage-load.txt"), "{text}");
}
