//! `vantage-coordinator demo`: a coordinator with its embedded store, one local
//! agent (region `local`) in the same process, and a small demo target, so
//! Vantage can be tried on a laptop with no network.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::Bound;

/// Where the demo target listens; `deploy/examples/demo.toml` points at it.
pub const DEMO_TARGET: &str = "127.0.0.1:7099";

/// Serves `/` (fast, 1 in 50 answers 500) and `/api` (20-200 ms) until
/// `stop` fires.
pub async fn serve_target(listener: TcpListener, stop: CancellationToken) {
    let counter = Arc::new(AtomicU64::new(0));
    loop {
        let (tcp, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "demo target accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        let counter = Arc::clone(&counter);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                async move { Ok::<_, Infallible>(respond(req.uri().path(), n).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

async fn respond(path: &str, n: u64) -> Response<Full<Bytes>> {
    let (status, delay_ms, body) = match path {
        "/" if n % 50 == 49 => (StatusCode::INTERNAL_SERVER_ERROR, 2, "demo failure\n"),
        "/" => (StatusCode::OK, 2 + n % 8, "<h1>Vantage demo</h1>\n"),
        "/api" => (
            StatusCode::OK,
            rand::random_range(20..200u64),
            "{\"ok\":true}\n",
        ),
        _ => (StatusCode::NOT_FOUND, 0, "not found\n"),
    };
    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r
}

/// Runs target, coordinator and agent until `shutdown` completes.
pub async fn run(
    mut config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    on_bound: impl FnOnce(Bound) + Send + 'static,
) -> anyhow::Result<()> {
    // The local agent's durable spool sits next to the coordinator's store.
    let spool_dir = {
        let mut name = config.server.data_dir.as_os_str().to_owned();
        name.push("-agent-spool");
        std::path::PathBuf::from(name)
    };
    // The API needs a token: without one in the config, the demo makes an
    // admin token for this run and prints it.
    let demo_token = config.api.tokens.is_empty().then(|| {
        let token = crate::api::auth::generate();
        config.api.tokens.push(crate::api::auth::ApiToken {
            name: "demo".into(),
            role: crate::api::auth::Role::Admin,
            sha256: crate::api::auth::digest(&token),
        });
        token
    });
    let target_addr: SocketAddr = DEMO_TARGET.parse()?;
    let listener = TcpListener::bind(target_addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding the demo target on {target_addr}: {e}"))?;
    let stop = CancellationToken::new();
    let target = tokio::spawn(serve_target(listener, stop.clone()));

    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let coord_stop = stop.clone();
    let coordinator = tokio::spawn(crate::run(
        config,
        async move { coord_stop.cancelled().await },
        move |b: Bound| {
            on_bound(b);
            let _ = bound_tx.send(b);
        },
    ));
    let bound = match bound_rx.await {
        Ok(b) => b,
        Err(_) => {
            // The coordinator ended before binding; report its error.
            stop.cancel();
            return coordinator.await?;
        }
    };
    let agent_stop = stop.clone();
    let mut agent_opts = vantage_agent::AgentOptions::new(vantage_agent::Identity {
        coordinator: format!("http://{}", bound.grpc),
        name: "local-1".into(),
        region: "local".into(),
        // The demo listens on loopback with open enrollment.
        token: None,
        ca_file: None,
        client_cert: None,
    });
    agent_opts.spool_dir = Some(spool_dir);
    // The demo probes its own target on loopback, which the agent's egress
    // policy refuses unless allowed (as `--egress-allow 127.0.0.0/8` would).
    agent_opts.egress = Arc::new(vantage_agent::egress::EgressPolicy::new(vec![
        "127.0.0.0/8".parse()?,
        "::1".parse()?,
    ]));
    let agent = tokio::spawn(vantage_agent::run(agent_opts, async move {
        agent_stop.cancelled().await
    }));
    println!(
        "demo running: target http://{target_addr}/, API http://{}/api/v1/checks (Ctrl-C to stop)",
        bound.http
    );
    if let Some(token) = demo_token {
        // Printed once, for the person who started the demo; it lives as
        // long as this process.
        println!("API token for this demo (admin): {token}");
        println!(
            "  dashboard: http://{}/ (any user name, the token as the password)",
            bound.http
        );
        println!(
            "  curl -s -H \"Authorization: Bearer {token}\" http://{}/api/v1/checks",
            bound.http
        );
    }
    shutdown.await;
    stop.cancel();
    agent.await??;
    coordinator.await??;
    let _ = target.await;
    Ok(())
}
