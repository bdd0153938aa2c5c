//! Config hot reload (issue 9): a running coordinator with a real agent
//! process follows edits of its config file and SIGHUP. A valid change is
//! applied without dropping the agent's session (added checks start, kept
//! ones keep running, new API tokens work); an invalid edit is rejected with
//! file:line:column and the last good config keeps running; a change to
//! `[server]` waits for a restart and says so. Also: the version and build
//! info, and the agent's health routes for orchestrators.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::slack_receiver::{Canned, Contract, SlackReceiver};
use crate::support::*;

const VIEWER_TOKEN: &str = "vantage-reload-viewer-token-5550123";

/// The whole config file: `window`, the checks, and the API tokens (the
/// viewer's only when `viewer`).
fn config_text(target: &RegionTarget, window: &str, checks: &[&str], viewer: bool) -> String {
    let names: Vec<String> = checks.iter().map(|c| (*c).to_owned()).collect();
    let mut text = format!(
        "version = 1\n\n[server]\ngrpc_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\nwindow = \"{window}\"\n\n{}",
        target.checks_toml(&names, &["eu"], "1s", "900ms")
    );
    text.push_str(&format!(
        "[[api.token]]\nname = \"test-admin\"\nrole = \"admin\"\nsha256 = \"{}\"\n",
        sha256_hex(TEST_ADMIN_TOKEN)
    ));
    if viewer {
        text.push_str(&format!(
            "\n[[api.token]]\nname = \"ops\"\nrole = \"viewer\"\nsha256 = \"{}\"\n",
            sha256_hex(VIEWER_TOKEN)
        ));
    }
    text
}

/// Replaces the file the way editors do: a new file renamed over it.
fn save(path: &Path, text: &str) {
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn reload_status(http: SocketAddr) -> serde_json::Value {
    get_json(http, "/api/v1/config").await
}

async fn check_names(http: SocketAddr) -> Vec<String> {
    let mut names: Vec<String> = get_json(http, "/api/v1/checks?window=1m").await["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

/// Windows stored for `check` in eu over the last minute (0 while the
/// check is not configured).
async fn windows(http: SocketAddr, check: &str) -> u64 {
    let path = format!("/api/v1/checks/{check}?window=1m");
    let (code, body) = http_request(http, "GET", &path, None, Some(TEST_ADMIN_TOKEN)).await;
    if code == 404 {
        return 0;
    }
    assert_eq!(code, 200, "{path}: {body}");
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["regions"]
        .as_array()
        .and_then(|r| r.first())
        .and_then(|r| r["windows"].as_u64())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_apply_without_dropping_sessions_and_bad_edits_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let target = RegionTarget::start().await;
    let path = dir.path().join("vantage.toml");
    std::fs::write(&path, config_text(&target, "1s", &["a"], false)).unwrap();
    let log = dir.path().join("coordinator.log");
    let (mut coordinator, grpc, http) = start_coordinator_with(&path, &[], Some(&log));
    let agent_log = dir.path().join("agent.log");
    let mut agent = start_agent_logged(
        grpc,
        "eu",
        "agent-eu",
        &dir.path().join("spool"),
        &agent_log,
    );

    let first = eventually(Duration::from_secs(30), || async {
        (windows(http, "a").await > 0).then_some(())
    })
    .await;
    assert!(first.is_some(), "check a never reported");
    let agents = get_json(http, "/api/v1/agents").await;
    let connected_since = agents["agents"][0]["connected_unix_ms"].clone();
    assert!(connected_since.is_i64(), "{agents}");
    let status = reload_status(http).await;
    assert_eq!(status["reload"]["generation"], 1, "{status}");
    assert_eq!(
        status["build"]["version"],
        vantage_proto::build_info::VERSION
    );
    // The viewer token is not configured yet.
    let (code, _) = http_request(http, "GET", "/api/v1/checks", None, Some(VIEWER_TOKEN)).await;
    assert_eq!(code, 401);

    // 1. A valid edit: a second check and a viewer token, saved by rename.
    save(&path, &config_text(&target, "1s", &["a", "b"], true));
    let applied = eventually(Duration::from_secs(15), || async {
        (windows(http, "b").await > 0).then_some(())
    })
    .await;
    assert!(
        applied.is_some(),
        "check b never ran: {}",
        reload_status(http).await
    );
    assert_eq!(check_names(http).await, ["a", "b"]);
    let status = reload_status(http).await;
    assert_eq!(status["reload"]["generation"], 2, "{status}");
    assert_eq!(status["reload"]["last_ok"], true, "{status}");
    let (code, body) = http_request(http, "GET", "/api/v1/checks", None, Some(VIEWER_TOKEN)).await;
    assert_eq!(code, 200, "the reloaded viewer token: {body}");

    // 2. An invalid edit: a misspelt key, and check a gone. Rejected with
    // the file, line, column and key; a and b keep running.
    let mut bad = config_text(&target, "1s", &["b"], true);
    bad = bad.replacen("interval = \"1s\"", "intervall = \"1s\"", 1);
    let bad_line = bad
        .lines()
        .position(|l| l.starts_with("intervall"))
        .unwrap()
        + 1;
    save(&path, &bad);
    let rejected = eventually(Duration::from_secs(15), || async {
        let s = reload_status(http).await;
        (s["reload"]["last_ok"] == false).then_some(s)
    })
    .await
    .expect("the bad edit was not noticed");
    let error = rejected["reload"]["last_error"]
        .as_str()
        .unwrap()
        .to_owned();
    let expected = format!(
        "{}:{bad_line}:1: check[0].intervall: unknown key `intervall`, did you mean `interval`?",
        path.display()
    );
    assert!(error.contains(&expected), "{error}\nwanted: {expected}");
    assert_eq!(rejected["reload"]["generation"], 2);
    assert_eq!(rejected["reload"]["failures_total"], 1);
    assert_eq!(check_names(http).await, ["a", "b"]);
    let before = windows(http, "a").await;
    let still_running = eventually(Duration::from_secs(15), || async {
        (windows(http, "a").await >= before + 3).then_some(())
    })
    .await;
    assert!(still_running.is_some(), "check a stopped after a bad edit");
    let (_, metrics) = http_request(http, "GET", "/metrics", None, Some(TEST_ADMIN_TOKEN)).await;
    assert!(
        metrics.contains("\nvantage_config_last_reload_successful 0\n"),
        "{metrics}"
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("config reload rejected") && logged.contains(&expected),
        "the rejection is not in the log"
    );

    // 3. SIGHUP after fixing it: a removed, b kept.
    std::fs::write(&path, config_text(&target, "1s", &["b"], true)).unwrap();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &coordinator.child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let fixed = eventually(Duration::from_secs(10), || async {
        (check_names(http).await == ["b"]).then_some(())
    })
    .await;
    assert!(fixed.is_some(), "{}", reload_status(http).await);
    let status = reload_status(http).await;
    assert_eq!(status["reload"]["generation"], 3, "{status}");
    assert_eq!(status["reload"]["last_ok"], true);
    assert!(status["reload"]["last_error"].is_null(), "{status}");

    // 4. [server] waits for a restart: the window stays 1 s.
    save(&path, &config_text(&target, "5s", &["b"], true));
    let pending = eventually(Duration::from_secs(15), || async {
        let s = reload_status(http).await;
        (s["reload"]["generation"] == 4).then_some(s)
    })
    .await
    .expect("the server edit was not seen");
    assert_eq!(
        pending["reload"]["restart_required"],
        serde_json::json!(["server"])
    );
    let (_, metrics) = http_request(http, "GET", "/metrics", None, Some(TEST_ADMIN_TOKEN)).await;
    assert!(
        metrics.contains("\nvantage_config_restart_required 1\n"),
        "{metrics}"
    );
    let b_before = windows(http, "b").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let b_after = windows(http, "b").await;
    assert!(
        b_after >= b_before + 2,
        "b stored {b_before} then {b_after} windows: the 1 s window did not stay"
    );

    // The agent's one session lasted through all of it.
    let agents = get_json(http, "/api/v1/agents").await;
    assert_eq!(
        agents["agents"][0]["connected_unix_ms"], connected_since,
        "the agent reconnected: {agents}"
    );
    assert_eq!(session_ends(&agent_log), 0);
    terminate("agent", &mut agent, Duration::from_secs(20));
    terminate("coordinator", &mut coordinator, Duration::from_secs(20));
}

/// The `[[api.token]]` table of [`TEST_ADMIN_TOKEN`].
fn admin_token_toml() -> String {
    format!(
        "[[api.token]]\nname = \"test-admin\"\nrole = \"admin\"\nsha256 = \"{}\"\n",
        sha256_hex(TEST_ADMIN_TOKEN)
    )
}

/// `[[channel]]` edits apply without a restart. A webhook whose URL changes
/// while its worker is in a send is handed over once that send is done: the
/// notification arrives once, at the old URL, and is not sent again at the
/// new one. The next notification goes to the new URL and to a Slack channel
/// added by the same edit. An edit whose channel cannot be built is rejected
/// naming it, and the running channels keep delivering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_edits_apply_live_and_a_send_in_flight_is_not_repeated() {
    let dir = tempfile::tempdir().unwrap();
    let target = RegionTarget::start().await;
    let old_hook = SlackReceiver::start_with(Contract::Json, None).await;
    let new_hook = SlackReceiver::start_with(Contract::Json, None).await;
    let slack = SlackReceiver::start().await;
    // The old receiver holds the first notification 8 s (within the
    // channel's 10 s timeout): the edit lands while it is being sent.
    old_hook.script([Canned::Stall(Duration::from_secs(8))]);
    let checks = target.checks_toml(&["web".into()], &["eu"], "1s", "900ms");
    let text = |channels: &str| {
        format!(
            "{LOOPBACK_SERVER}\n[alerting]\neval_interval = \"1s\"\n\n{channels}{checks}{}",
            admin_token_toml()
        )
    };
    // URLs are secrets, so each is given as a file.
    let secret = |url: String| {
        let file = dir.path().join(format!("{}.url", &sha256_hex(&url)[..12]));
        std::fs::write(&file, url).unwrap();
        file.display().to_string()
    };
    let hook = |url: String| {
        let file = secret(url);
        format!(
            "[[channel]]\nname = \"hook\"\nkind = \"webhook\"\nurl = {{ file = \"{file}\" }}\n\n"
        )
    };
    let chat = |url: String, extra: &str| {
        let file = secret(url);
        format!("[[channel]]\nname = \"chat\"\nkind = \"slack\"\nwebhook_url = {{ file = \"{file}\" }}\n{extra}\n")
    };
    let path = dir.path().join("vantage.toml");
    std::fs::write(&path, text(&hook(old_hook.url("/old")))).unwrap();
    let log = dir.path().join("coordinator.log");
    let (mut coordinator, grpc, http) = start_coordinator_with(&path, &[], Some(&log));
    let mut agent = start_agent(grpc, "eu", "agent-eu");
    let data = eventually(Duration::from_secs(30), || async {
        (windows(http, "web").await > 0).then_some(())
    })
    .await;
    assert!(data.is_some(), "check web never reported");

    // 1. web goes down; the old receiver gets the firing notification and
    // holds it.
    target.fail("web", &["*"]);
    let in_flight = eventually(Duration::from_secs(30), || async {
        (old_hook.requests() >= 1).then_some(())
    })
    .await;
    assert!(in_flight.is_some(), "no notification reached the old hook");

    // 2. During that send: hook moves to the new URL, chat is added.
    let slack_url = slack.url("/services/T1/B1/reload");
    save(
        &path,
        &text(&format!(
            "{}{}",
            hook(new_hook.url("/new")),
            chat(slack_url.clone(), "")
        )),
    );
    let applied = eventually(Duration::from_secs(15), || async {
        let s = reload_status(http).await;
        (s["reload"]["generation"] == 2).then_some(s)
    })
    .await
    .expect("the channel edit was not applied");
    assert_eq!(applied["reload"]["last_ok"], true, "{applied}");
    assert_eq!(
        applied["reload"]["restart_required"],
        serde_json::json!([]),
        "{applied}"
    );
    assert!(
        old_hook.messages().is_empty(),
        "the edit was applied after the held send ended: the hand-over was not tested"
    );
    let firing = old_hook.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(firing[0].body["kind"], "firing", "{:?}", firing[0].body);
    assert_eq!(firing[0].body["subject"], "web");

    // 3. web recovers: the resolved notification goes to the new URL and
    // to the added Slack channel.
    target.fail("web", &[]);
    let resolved = new_hook.wait_for(1, Duration::from_secs(60)).await;
    assert_eq!(
        resolved[0].body["kind"], "resolved",
        "{:?}",
        resolved[0].body
    );
    assert_eq!(resolved[0].path, "/new");
    let posted = slack.wait_for(1, Duration::from_secs(30)).await;
    assert!(
        posted[0].body["text"]
            .as_str()
            .unwrap_or("")
            .contains("web"),
        "{:?}",
        posted[0].body
    );
    // The firing was delivered once: not sent again by the new worker.
    assert_eq!(old_hook.requests(), 1);
    assert_eq!(new_hook.messages().len(), 1, "{:?}", new_hook.messages());
    // The receivers record a message before they answer: the outbox empties
    // a moment later.
    let emptied = eventually(Duration::from_secs(10), || async {
        let alerts = get_json(http, "/api/v1/alerts").await;
        let left = alerts["outbox"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["state"] != "failed")
            .count();
        (left == 0).then_some(())
    })
    .await;
    assert!(
        emptied.is_some(),
        "still queued: {}",
        get_json(http, "/api/v1/alerts").await["outbox"]
    );
    // The history keeps both, newest first, with the channels of the time.
    let history = get_json(http, "/api/v1/alerts/history?subject=web").await;
    let events: Vec<(String, Vec<String>)> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let mut channels: Vec<String> = e["channels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_owned())
                .collect();
            channels.sort();
            (e["kind"].as_str().unwrap().to_owned(), channels)
        })
        .collect();
    assert_eq!(
        events,
        [
            (
                "resolved".to_owned(),
                vec!["chat".to_owned(), "hook".to_owned()]
            ),
            ("firing".to_owned(), vec!["hook".to_owned()]),
        ],
        "{history}"
    );
    let (code, body) = http_get(http, "/api/v1/alerts/history?limit=0").await;
    assert_eq!(code, 400, "{body}");
    // The new worker started once the old one's send was done.
    let logged = std::fs::read_to_string(&log).unwrap();
    let line_of = |what: &str| {
        logged
            .lines()
            .position(|l| l.contains(what) && l.contains("channel=hook"))
            .unwrap_or_else(|| panic!("no {what:?} line for hook in\n{logged}"))
    };
    assert!(
        line_of("notification delivered")
            < line_of("channel (re)started with its reloaded settings"),
        "{logged}"
    );

    // 4. A channel that cannot be built (https with a ca_file holding no
    // certificate): rejected, naming it; both channels keep delivering.
    let bad_ca = dir.path().join("bad-ca.pem");
    std::fs::write(&bad_ca, "not a certificate\n").unwrap();
    save(
        &path,
        &text(&format!(
            "{}{}",
            hook(new_hook.url("/new")),
            chat(
                format!(
                    "https://localhost:{}/services/T1/B1/reload",
                    slack.addr().port()
                ),
                &format!("ca_file = \"{}\"\n", bad_ca.display())
            )
        )),
    );
    let rejected = eventually(Duration::from_secs(15), || async {
        let s = reload_status(http).await;
        (s["reload"]["last_ok"] == false).then_some(s)
    })
    .await
    .expect("the unbuildable channel was not rejected");
    let error = rejected["reload"]["last_error"].as_str().unwrap();
    assert!(
        error.contains("channel[1]: channel chat:") && error.contains("ca_file"),
        "{error}"
    );
    assert_eq!(rejected["reload"]["generation"], 2);
    target.fail("web", &["*"]);
    let again = new_hook.wait_for(2, Duration::from_secs(60)).await;
    assert_eq!(again[1].body["kind"], "firing");
    slack.wait_for(2, Duration::from_secs(30)).await;
    assert_eq!(old_hook.requests(), 1);
    terminate("agent", &mut agent, Duration::from_secs(20));
    terminate("coordinator", &mut coordinator, Duration::from_secs(20));
}

#[test]
fn version_prints_the_build_and_the_agent_series() {
    let out = std::process::Command::new(coordinator_bin())
        .arg("version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with(&format!(
            "vantage-coordinator {}\n",
            vantage_proto::build_info::VERSION
        )),
        "{text}"
    );
    assert!(text.contains(&format!("commit:   {}", vantage_proto::build_info::COMMIT)));
    assert!(text.contains("agents:   0.1.x (same series)"), "{text}");
    for bin in [coordinator_bin(), agent_bin()] {
        let out = std::process::Command::new(&bin)
            .arg("--version")
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.contains(&vantage_proto::build_info::long_version()),
            "{}: {text}",
            bin.display()
        );
    }
}

/// `vantage-agent run --health-listen`: `/healthz` answers while the agent
/// runs, `/readyz` only while it has a session with the coordinator (the
/// Kubernetes probes in deploy/k8s use both).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_health_routes_follow_the_session() {
    let dir = tempfile::tempdir().unwrap();
    // The coordinator's address is taken now and served later.
    let grpc_port = free_port();
    let grpc: SocketAddr = format!("127.0.0.1:{grpc_port}").parse().unwrap();
    let health: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut agent = start_agent_with_args(
        grpc,
        "eu",
        "agent-eu",
        &dir.path().join("spool"),
        &["--health-listen", &health.to_string()],
    );
    let code = |path: &'static str| async move {
        match tokio::net::TcpStream::connect(health).await {
            Ok(_) => Some(http_request(health, "GET", path, None, None).await),
            Err(_) => None,
        }
    };
    let live = eventually(Duration::from_secs(20), || async { code("/healthz").await })
        .await
        .expect("the health listener never came up");
    assert_eq!(live, (200, "ok\n".to_owned()));
    let (status, body) = code("/readyz").await.unwrap();
    assert_eq!(status, 503, "ready without a coordinator: {body}");
    assert_eq!(code("/metrics").await.unwrap().0, 404);

    let config = write_config(
        dir.path(),
        &format!(
            "version = 1\n[server]\ngrpc_listen = \"{grpc}\"\nhttp_listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n"
        ),
    );
    let (mut coordinator, _, _) = start_coordinator(&config);
    let ready = eventually(Duration::from_secs(30), || async {
        (code("/readyz").await?.0 == 200).then_some(())
    })
    .await;
    assert!(ready.is_some(), "not ready with the coordinator up");
    terminate("coordinator", &mut coordinator, Duration::from_secs(20));
    let unready = eventually(Duration::from_secs(30), || async {
        (code("/readyz").await?.0 == 503).then_some(())
    })
    .await;
    assert!(unready.is_some(), "still ready with the coordinator gone");
    assert_eq!(code("/healthz").await.unwrap().0, 200);
    terminate("agent", &mut agent, Duration::from_secs(20));
}
