//! The audit checks as continuous checks (issue 8): a coordinator assigns a
//! `cors` check to a real agent process; while the local API server reflects
//! any `Origin` with credentials, the check is `down` with the finding in its
//! last error (class `audit`); once the server is fixed at runtime it is `up`.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpListener;

use crate::support::*;

/// A plain-HTTP API route that, while `reflect` is set, answers every
/// `Origin` with `Access-Control-Allow-Origin: <it>` and credentials (the
/// classic CORS mistake); otherwise it sends no CORS headers at all.
struct CorsTarget {
    addr: std::net::SocketAddr,
    reflect: Arc<AtomicBool>,
    /// Requests that carried an `Origin` header.
    cross_origin: Arc<AtomicU64>,
    _task: tokio::task::JoinHandle<()>,
}

impl CorsTarget {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reflect = Arc::new(AtomicBool::new(true));
        let cross_origin = Arc::new(AtomicU64::new(0));
        let (r, n) = (Arc::clone(&reflect), Arc::clone(&cross_origin));
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (r, n) = (Arc::clone(&r), Arc::clone(&n));
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: hyper::Request<_>| {
                        let origin = req.headers().get(hyper::header::ORIGIN).cloned();
                        let mut resp =
                            hyper::Response::new(Full::new(Bytes::from_static(b"{\"ok\":true}")));
                        if let Some(origin) = origin {
                            n.fetch_add(1, Ordering::SeqCst);
                            if r.load(Ordering::SeqCst) {
                                let h = resp.headers_mut();
                                h.insert("access-control-allow-origin", origin);
                                h.insert(
                                    "access-control-allow-credentials",
                                    hyper::header::HeaderValue::from_static("true"),
                                );
                            }
                        }
                        async move { Ok::<_, Infallible>(resp) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        CorsTarget {
            addr,
            reflect,
            cross_origin,
            _task: task,
        }
    }
}

impl Drop for CorsTarget {
    fn drop(&mut self) {
        self._task.abort();
    }
}

fn eu(check: &Value) -> Option<&Value> {
    check["regions"]
        .as_array()?
        .iter()
        .find(|r| r["region"] == "eu")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cors_check_is_down_with_the_finding_then_up_once_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let target = CorsTarget::start().await;
    let config = write_config(
        dir.path(),
        &format!(
            r#"{LOOPBACK_SERVER}
[[check]]
name = "api-cors"
kind = "cors"
url = "http://127.0.0.1:{port}/api/me"
regions = ["eu"]
interval = "500ms"
timeout = "500ms"
"#,
            port = target.addr.port()
        ),
    );
    agent_bin(); // may build it: not part of the test's time
    let (_coord, grpc, http) = start_coordinator(&config);
    let _agent = start_agent(grpc, "eu", "agent-eu");

    // The reflected origin fails a critical finding: the check is down, every
    // failure counted as `audit`, the finding and its evidence in last_error.
    let down = eventually(Duration::from_secs(20), || async {
        let c = get_json(http, "/api/v1/checks/api-cors?window=2s").await;
        eu(&c)
            .is_some_and(|s| s["state"] == "down" && s["last_error"].is_string())
            .then_some(c)
    })
    .await
    .unwrap_or_else(|| panic!("api-cors not down within 20 s"));
    let s = eu(&down).unwrap();
    let last_error = s["last_error"].as_str().unwrap();
    assert!(
        last_error.contains("Origin https://evil.example is not allowed [critical]"),
        "{s}"
    );
    assert!(
        last_error.contains("Access-Control-Allow-Origin: https://evil.example"),
        "evidence: {s}"
    );
    assert!(s["errors"]["audit"].as_u64().unwrap_or(0) >= 1, "{s}");
    assert_eq!(
        down["target"],
        format!("http://127.0.0.1:{}/api/me", target.addr.port())
    );
    assert!(
        target.cross_origin.load(Ordering::SeqCst) >= 2,
        "GET and preflight sent"
    );

    // Fixed at runtime: no CORS headers for a foreign origin. Up over a short window.
    target.reflect.store(false, Ordering::SeqCst);
    let up = eventually(Duration::from_secs(15), || async {
        let c = get_json(http, "/api/v1/checks/api-cors?window=2s").await;
        eu(&c).is_some_and(|s| s["state"] == "up").then_some(c)
    })
    .await
    .unwrap_or_else(|| panic!("api-cors not up within 15 s of the fix"));
    let s = eu(&up).unwrap();
    assert_eq!(s["availability"], 100.0, "{s}");
}
