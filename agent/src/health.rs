//! `run --health-listen ADDR`: plain-HTTP liveness and readiness for
//! orchestrators (Kubernetes probes, systemd watchdogs, load balancers).
//!
//! | route | answer |
//! |---|---|
//! | `GET /healthz` | `200 ok` while the agent's runtime answers (liveness) |
//! | `GET /readyz` | `200 ready` while a session with the coordinator is open, else `503` (readiness) |
//!
//! Nothing else is served and no internals are shown, so the routes need no
//! token; bind them to an address only the orchestrator reaches.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Connections served at once; more wait in the accept queue.
const MAX_CONNECTIONS: usize = 16;
/// Longest a connection may stay open (a probe takes milliseconds).
const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);

/// The answer to one request.
fn answer(method: &Method, path: &str, connected: bool) -> (StatusCode, &'static str) {
    match (path, method) {
        ("/healthz" | "/readyz", &Method::GET | &Method::HEAD) => {}
        ("/healthz" | "/readyz", _) => return (StatusCode::METHOD_NOT_ALLOWED, "use GET\n"),
        _ => return (StatusCode::NOT_FOUND, "not found: /healthz, /readyz\n"),
    }
    if path == "/healthz" {
        (StatusCode::OK, "ok\n")
    } else if connected {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no session with the coordinator\n",
        )
    }
}

/// Binds `addr` (before anything else starts, so a taken port stops the
/// agent at once).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("--health-listen {addr}: {e}"))
}

/// Serves the routes on `listener` until `stop`; `connected` says whether a
/// coordinator session is open.
pub async fn serve(listener: TcpListener, connected: Arc<AtomicBool>, stop: CancellationToken) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = stop.cancelled() => return,
            p = Arc::clone(&permits).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "health listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let connected = Arc::clone(&connected);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (status, body) = answer(
                    req.method(),
                    req.uri().path(),
                    connected.load(Ordering::Relaxed),
                );
                let body = if req.method() == Method::HEAD {
                    ""
                } else {
                    body
                };
                let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
                *response.status_mut() = status;
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                std::future::ready(Ok::<_, Infallible>(response))
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_DEADLINE, conn).await;
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_always_readiness_only_with_a_session() {
        assert_eq!(answer(&Method::GET, "/healthz", false).0, StatusCode::OK);
        assert_eq!(answer(&Method::GET, "/readyz", true).0, StatusCode::OK);
        assert_eq!(
            answer(&Method::GET, "/readyz", false).0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            answer(&Method::GET, "/metrics", true).0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            answer(&Method::POST, "/healthz", true).0,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
