//! Session liveness on a real network: the agent runs in its own network
//! namespace ([`Netns`]), joined to the coordinator's by a veth pair, and the
//! link is black-holed on both sides, then healed; and a name server that
//! never answers, seen from inside a namespace.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::netns::Netns;
use crate::support::*;

async fn connected(http: SocketAddr) -> bool {
    get_json(http, "/api/v1/agents").await["agents"]
        .as_array()
        .is_some_and(|a| a.iter().any(|a| a["name"] == "agent-ns"))
}

/// Waits (at most 30 s) until the agent is connected; how long it took.
async fn until_connected(http: SocketAddr, what: &str) -> Duration {
    let from = Instant::now();
    eventually(Duration::from_secs(30), || async {
        connected(http).await.then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("{what}: the agent did not connect within 30 s"));
    from.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_link_is_detected_by_both_sides_and_healed() {
    let dir = tempfile::tempdir().unwrap();
    let ns = Netns::create();
    let grpc_port = free_port();
    let config = write_config(
        dir.path(),
        &format!(
            r#"version = 1

[server]
grpc_listen = "{host}:{grpc_port}"
http_listen = "127.0.0.1:0"
data_dir = "data"
window = "1s"
{tls}{agents}"#,
            host = ns.host_ip(),
            // Off loopback: TLS and an agent token are required.
            tls = tls_toml(dir.path(), &[ns.host_ip().parse().unwrap()]),
            agents = agents_toml(&[("agent-ns", "eu")]),
        ),
    );
    agent_bin();
    let (_coordinator, grpc, http) = start_coordinator(&config);
    let log = dir.path().join("agent.log");
    let _agent = ns.start_agent(
        grpc,
        ("eu", "agent-ns"),
        &dir.path().join("spool"),
        &log,
        &[],
    );
    until_connected(http, "start in the namespace").await;
    // Let keepalive traffic settle into its idle rhythm.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let ends_before = session_ends(&log);
    ns.black_hole();
    let cut = Instant::now();
    let mut coordinator_saw = None;
    let mut agent_saw = None;
    while cut.elapsed() < Duration::from_secs(45)
        && (coordinator_saw.is_none() || agent_saw.is_none())
    {
        if coordinator_saw.is_none() && !connected(http).await {
            coordinator_saw = Some(cut.elapsed());
        }
        if agent_saw.is_none() && session_ends(&log) > ends_before {
            agent_saw = Some(cut.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "black hole: coordinator noticed after {coordinator_saw:?}, agent after {agent_saw:?}"
    );
    let limit = Duration::from_secs(30);
    assert!(
        coordinator_saw.is_some_and(|d| d <= limit),
        "coordinator: {coordinator_saw:?}"
    );
    assert!(
        agent_saw.is_some_and(|d| d <= limit),
        "agent: {agent_saw:?}"
    );

    // Heal: the agent is back without a restart.
    ns.heal();
    let back = until_connected(http, "after the heal").await;
    eprintln!("reconnected {back:?} after the heal");
    // A dial in flight (5 s connect timeout) plus the longest backoff (10 s).
    assert!(back <= Duration::from_secs(16), "back after {back:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_coordinator_restart_the_agent_is_back_within_15_s_with_few_dials() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            r#"version = 1

[server]
grpc_listen = "127.0.0.1:{}"
http_listen = "127.0.0.1:{}"
data_dir = "data"
window = "1s"
"#,
            free_port(),
            free_port()
        ),
    );
    agent_bin();
    let log = dir.path().join("agent.log");
    let (coordinator, grpc, http) = start_coordinator(&config);
    let stderr = std::fs::File::create(&log).unwrap();
    let _agent = Proc {
        child: Command::new(agent_bin())
            .args(["run", "--coordinator", &format!("http://{grpc}")])
            .args(["--region", "eu", "--name", "agent-ns"])
            .arg("--spool-dir")
            .arg(dir.path().join("spool"))
            .env("VANTAGE_LOG", "info")
            .env(EGRESS_ALLOW_ENV, "127.0.0.0/8")
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr))
            .spawn()
            .unwrap(),
        spool: None,
    };
    until_connected(http, "start").await;
    let before = session_ends(&log);
    drop(coordinator);
    tokio::time::sleep(Duration::from_secs(20)).await;
    let dials = session_ends(&log) - before;
    let (_coordinator, _, http) = start_coordinator(&config);
    let back = until_connected(http, "after the restart").await;
    eprintln!("{dials} failed sessions in 20 s down; back {back:?} after the restart");
    assert!(back <= Duration::from_secs(15), "back after {back:?}");
    // Full-jitter backoff (250 ms doubling to 10 s): a handful of dials, not
    // a tight loop.
    assert!((2..=20).contains(&dials), "{dials} dials in 20 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_server_that_never_answers_is_a_timeout_in_dns_within_the_deadline() {
    let ns = Netns::create();
    // The namespace's only name server swallows every query.
    let sink = std::net::UdpSocket::bind((ns.host_ip().as_str(), 53)).unwrap();
    ns.resolv_conf(&format!(
        "nameserver {}\noptions timeout:5 attempts:2\n",
        ns.host_ip()
    ));
    let timeout = Duration::from_millis(300);
    let mut worst = Duration::ZERO;
    for batch in 0..10 {
        let runs: Vec<_> = (0..10)
            .map(|i| {
                let started = Instant::now();
                let child = Command::new("ip")
                    .args(["netns", "exec", &ns.name])
                    .arg(agent_bin())
                    .args([
                        "probe",
                        &format!("http://run-{batch}-{i}.never-answers.test/"),
                    ])
                    .args(["--timeout", "300ms", "--json"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                (started, child)
            })
            .collect();
        for (started, child) in runs {
            let out = child.wait_with_output().unwrap();
            let took = started.elapsed();
            let json: serde_json::Value = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
            assert_eq!(out.status.code(), Some(1), "{json}");
            assert_eq!(json["error"]["class"], "timeout", "{json}");
            assert!(
                json["error"]["message"].as_str().unwrap().contains("dns"),
                "{json}"
            );
            // The attempt itself ends within the deadline plus 200 ms ...
            let total_ms = json["phases_ms"]["total"].as_f64().unwrap();
            assert!(total_ms <= 500.0, "attempt took {total_ms} ms: {json}");
            // ... and the process with it (plus its start under `ip netns exec`).
            assert!(
                took <= timeout + Duration::from_millis(400),
                "finished after {took:?}"
            );
            worst = worst.max(took);
        }
    }
    drop(sink);
    eprintln!("dns: 100 runs, slowest {worst:?} including process start (timeout {timeout:?})");
}
