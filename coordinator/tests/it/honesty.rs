//! Scheduler honesty: an overloaded agent marks the attempts it starts late,
//! reports its lag, and late failures never make a target `down`; the same
//! failing target probed on time from another agent does go down.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpListener;

use crate::support::*;

/// `/slow` answers after 5 s, anything else 503 at once.
async fn target() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: hyper::Request<_>| async move {
                    let mut resp = hyper::Response::new(Full::new(Bytes::from_static(b"x\n")));
                    if req.uri().path() == "/slow" {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    } else {
                        *resp.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
                    }
                    Ok::<_, std::convert::Infallible>(resp)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

fn region<'a>(check: &'a Value, name: &str) -> &'a Value {
    check["regions"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["region"] == name))
        .unwrap_or(&Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_failures_are_marked_and_never_make_a_target_down() {
    let dir = tempfile::tempdir().unwrap();
    let addr = target().await;
    // Region eu: four checks of 1 s that always time out keep eu's single
    // probe slot busy, so "victim" always waits seconds for its turn.
    let hogs: String = (0..4)
        .map(|i| {
            format!(
                "[[check]]\nname = \"hog{i}\"\nkind = \"http\"\nurl = \"http://{addr}/slow\"\nregions = [\"eu\"]\ninterval = \"1s\"\ntimeout = \"1s\"\n\n"
            )
        })
        .collect();
    let config = write_config(
        dir.path(),
        &format!(
            r#"{LOOPBACK_SERVER}
[alerting]
eval_interval = "1s"

{hogs}
[[check]]
name = "victim"
kind = "http"
url = "http://{addr}/fail"
regions = ["eu"]
interval = "500ms"
timeout = "500ms"

[[check]]
name = "control"
kind = "http"
url = "http://{addr}/fail"
regions = ["us"]
interval = "500ms"
timeout = "500ms"
"#
        ),
    );
    agent_bin();
    let (_coordinator, grpc, http) = start_coordinator(&config);
    let spool = tempfile::tempdir().unwrap();
    let _eu = start_agent_with_args(
        grpc,
        "eu",
        "agent-eu",
        spool.path(),
        &["--max-concurrent-probes", "1"],
    );
    let _us = start_agent(grpc, "us", "agent-us");

    // The on-time control goes down, as it should.
    let control_down = eventually(Duration::from_secs(30), || async {
        let alerts = get_json(http, "/api/v1/alerts").await;
        alerts["alerts"]
            .as_array()?
            .iter()
            .any(|a| a["subject"] == "control" && a["rule"] == "down" && a["status"] == "firing")
            .then_some(())
    })
    .await;
    assert!(
        control_down.is_some(),
        "the on-time failing check went down"
    );

    // The victim fails just as much, but every attempt started late.
    let victim = eventually(Duration::from_secs(30), || async {
        let c = get_json(http, "/api/v1/checks/victim?window=1h").await;
        let eu = region(&c, "eu").clone();
        (eu["attempts"].as_u64().unwrap_or(0) >= 4).then_some(eu)
    })
    .await
    .expect("the victim was probed");
    // Give the evaluator a few more rounds on the victim's failures.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let eu = region(
        &get_json(http, "/api/v1/checks/victim?window=1h").await,
        "eu",
    )
    .clone();
    eprintln!("victim in eu: {eu}");
    let attempts = eu["attempts"].as_u64().unwrap();
    assert_eq!(eu["successes"], 0, "{eu}");
    // All late but possibly the first, which can run before the hogs fill
    // the slot; one on-time failure is below failure_threshold (2), while
    // counting the late ones would have made it down.
    assert!(
        eu["late_attempts"].as_u64().unwrap() + 1 >= attempts,
        "{eu}"
    );
    assert!(eu["max_lag_ms"].as_u64().unwrap() >= 1000, "{eu}");
    assert!(victim["late_attempts"].as_u64().unwrap() > 0, "{victim}");
    let alerts = get_json(http, "/api/v1/alerts").await;
    let victim_alerts: Vec<&Value> = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["subject"] == "victim")
        .collect();
    assert!(victim_alerts.is_empty(), "{victim_alerts:?}");
    // The control was on time.
    let control = get_json(http, "/api/v1/checks/control?window=1h").await;
    assert_eq!(region(&control, "us")["late_attempts"], 0, "{control}");
}
