//! The agent's durable spool, end to end: results an agent stored on disk
//! while the coordinator was down survive a `kill -9` of the agent and reach
//! the coordinator after both restart, each once.

use std::time::Duration;

use crate::support::*;

/// What a `kill -9` of the agent may lose: its open window (1 s at one probe
/// per 200 ms), the window it was flushing to disk at that moment, and one
/// probe in flight.
const LOST_AT_MOST: u64 = 11;

async fn attempts(http: std::net::SocketAddr) -> u64 {
    let c = get_json(http, "/api/v1/checks/site?window=1h").await;
    c["all"]["attempts"].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_spooled_during_an_outage_survive_kill_9_of_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let target = RegionTarget::start().await;
    let config = write_config(
        dir.path(),
        &format!(
            r#"version = 1

[server]
grpc_listen = "127.0.0.1:{grpc}"
http_listen = "127.0.0.1:{http}"
data_dir = "data"
window = "1s"

[[check]]
name = "site"
kind = "http"
url = "{url}"
regions = ["eu"]
interval = "200ms"
timeout = "200ms"
"#,
            grpc = free_port(),
            http = free_port(),
            url = target.url("site"),
        ),
    );
    agent_bin();
    let spool = dir.path().join("agent-spool");
    let (coordinator, grpc, http) = start_coordinator(&config);
    let agent = start_agent_with_spool(grpc, "eu", "agent-eu", &spool);
    eventually(Duration::from_secs(30), || async {
        (attempts(http).await >= 5).then_some(())
    })
    .await
    .expect("results reached the coordinator");

    // The coordinator dies; the agent keeps probing and spools ~5 windows on
    // disk, then dies too, without a chance to save anything.
    drop(coordinator);
    tokio::time::sleep(Duration::from_secs(5)).await;
    drop(agent);
    let during_outage = target.requests();

    let (_coordinator, grpc, http) = start_coordinator(&config);
    let mut agent = start_agent_with_spool(grpc, "eu", "agent-eu", &spool);
    // Back on the same spool: the outage's windows arrive.
    eventually(Duration::from_secs(30), || async {
        (attempts(http).await + LOST_AT_MOST >= during_outage).then_some(())
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "the spooled windows did not arrive ({during_outage} requests sent by the first agent)"
        )
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    // A graceful stop stores and delivers the last partial window.
    terminate("the agent", &mut agent, Duration::from_secs(15));

    let sent = target.requests();
    let stored = attempts(http).await;
    eprintln!("target saw {sent} requests, coordinator stored {stored} attempts");
    // Never more than once: every stored attempt is a request the target saw.
    assert!(
        stored <= sent,
        "stored {stored} attempts for {sent} requests"
    );
    // Lost at most what the first agent held in memory at the kill, not the
    // ~25 attempts of the 5 s outage.
    assert!(
        sent - stored <= LOST_AT_MOST,
        "lost {} attempts: stored {stored} of {sent}",
        sent - stored
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_drops_the_oldest_and_the_api_shows_the_gap() {
    let dir = tempfile::tempdir().unwrap();
    let target = RegionTarget::start().await;
    let config = write_config(
        dir.path(),
        &format!(
            r#"version = 1

[server]
grpc_listen = "127.0.0.1:{grpc}"
http_listen = "127.0.0.1:{http}"
data_dir = "data"
window = "1s"

[[check]]
name = "site"
kind = "http"
url = "{url}"
regions = ["eu"]
interval = "200ms"
timeout = "200ms"
"#,
            grpc = free_port(),
            http = free_port(),
            url = target.url("site"),
        ),
    );
    agent_bin();
    let spool = dir.path().join("agent-spool");
    let (coordinator, grpc, http) = start_coordinator(&config);
    // A spool of 2 KiB holds a few windows of this check.
    let mut agent = start_agent_with_args(
        grpc,
        "eu",
        "agent-eu",
        &spool,
        &["--spool-max-bytes", "2048"],
    );
    eventually(Duration::from_secs(30), || async {
        (attempts(http).await >= 5).then_some(())
    })
    .await
    .expect("results reached the coordinator");
    drop(coordinator);
    tokio::time::sleep(Duration::from_secs(12)).await;
    let (_coordinator, _, http) = start_coordinator(&config);
    // The agent reconnects and says how many windows its spool dropped.
    eventually(Duration::from_secs(30), || async {
        let agents = get_json(http, "/api/v1/agents").await;
        agents["agents"][0]["spool_dropped_windows_total"]
            .as_u64()
            .filter(|&n| n > 0)
    })
    .await
    .expect("the agent reported dropped windows");
    // The backlog drains; once connected the spool has room, so the count
    // read now is final.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let dropped = get_json(http, "/api/v1/agents").await["agents"][0]
        ["spool_dropped_windows_total"]
        .as_u64()
        .unwrap();
    terminate("the agent", &mut agent, Duration::from_secs(15));

    let stored = get_json(http, "/api/v1/checks/site?window=1h").await["all"]["windows"]
        .as_u64()
        .unwrap();
    let produced = target.active_windows(1000).len() as u64;
    eprintln!("windows: {produced} with requests, {stored} stored, {dropped} dropped");
    assert!(
        dropped >= 2,
        "a 12 s outage with a 2 KiB spool drops windows"
    );
    // Every window with requests was either stored or counted as dropped
    // (one either way for a probe that straddled a window boundary).
    assert!(
        (stored + dropped).abs_diff(produced) <= 1,
        "{produced} windows with requests, {stored} stored + {dropped} dropped"
    );
}
