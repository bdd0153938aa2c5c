//! Alerting end to end: the coordinator and agents as separate processes,
//! real targets, a Slack-contract receiver, a JSON webhook receiver and a real
//! SMTP server. Every coordinator here logs at trace level into a file that
//! must not contain the canary secrets.
//!
//! - `onset_latency_quorum_and_exactly_once`: failure onset → Slack message,
//!   distribution printed and bounded (p95 ≤ 60 s, max ≤ 90 s, 10 s check
//!   interval); one degraded region of three → nothing; two → an alert; one
//!   firing and one resolved notification per alert and channel.
//! - `kill_9_while_firing_repeats_nothing_and_resolves_once`: ten SIGKILLs
//!   of the coordinator while alerts fire, one target recovering while it is
//!   down.
//! - `smtp_outage_and_slack_429_lose_nothing_and_duplicate_nothing`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::slack_receiver::{Canned, Contract, Received, SlackReceiver};
use crate::smtp::{Mode, Script, SmtpServer, USER};
use crate::support::*;

/// `[FIRING] web: down` → ("FIRING", "web", "down").
fn title_of(m: &Received) -> (String, String, String) {
    let text = m.body["text"].as_str().unwrap_or_default();
    let title = text.lines().next().unwrap_or_default();
    let (label, rest) = title
        .strip_prefix('[')
        .and_then(|t| t.split_once("] "))
        .unwrap_or_else(|| panic!("unexpected Slack text {text:?}"));
    // The fallback text is "TITLE: SUMMARY"; rules never contain ": ".
    let (subject, rest) = rest.split_once(": ").unwrap_or((rest, ""));
    let rule = rest.split(": ").next().unwrap_or_default();
    (label.to_owned(), subject.to_owned(), rule.to_owned())
}

/// (label, subject) → count, for exact-once assertions.
fn tally(messages: &[Received]) -> BTreeMap<(String, String), usize> {
    let mut t = BTreeMap::new();
    for m in messages {
        let (label, subject, _) = title_of(m);
        *t.entry((label, subject)).or_default() += 1;
    }
    t
}

async fn wait_until<F: Fn() -> bool>(limit: Duration, what: &str, f: F) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every check has latency data in every region.
async fn wait_for_data(http: std::net::SocketAddr, checks: &[&str], regions: &[&str]) {
    let ok = eventually(Duration::from_secs(60), || async {
        let list = get_json(http, "/api/v1/checks?window=1m").await;
        let all = checks.iter().all(|name| {
            list["checks"].as_array().unwrap().iter().any(|c| {
                c["name"] == *name
                    && regions.iter().all(|r| {
                        c["regions"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|s| s["region"] == *r && s["latency_ms"]["p95"].is_number())
                    })
            })
        });
        all.then_some(())
    })
    .await;
    assert!(
        ok.is_some(),
        "not every check reported in every region within 60 s"
    );
}

fn assert_no_canary(log: &Path, canaries: &[&str]) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    assert!(
        text.len() > 10_000,
        "the trace log is suspiciously small: {} bytes",
        text.len()
    );
    for c in canaries {
        assert!(
            !text.contains(c),
            "the coordinator log contains the secret {c:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onset_latency_quorum_and_exactly_once() {
    agent_bin();
    let dir = tempfile::tempdir().unwrap();
    let target = RegionTarget::start().await;
    let slack = SlackReceiver::start().await;
    let hook = SlackReceiver::start_with(Contract::Json, None).await;
    let slack_secret = "CANARY-SLACK-7f3a9c";
    let slack_url = slack.url(&format!("/services/T000/B000/{slack_secret}"));
    let hook_url = hook.url("/hook?token=CANARY-HOOK-51d2");

    let onset_checks = ["c0", "c1", "c2", "c3", "c4", "c5"];
    let mut checks = String::new();
    for name in onset_checks.iter().chain(&["q1", "q2"]) {
        checks.push_str(&format!(
            "[[check]]\nname = \"{name}\"\nkind = \"http\"\nurl = \"{}\"\nregions = [\"eu\", \"us\", \"ap\"]\ninterval = \"10s\"\ntimeout = \"2s\"\n\n",
            target.url(name)
        ));
    }
    let config = write_config(
        dir.path(),
        &format!(
            r#"version = 1

[server]
grpc_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
data_dir = "data"
window = "5s"

[alerting]
dashboard_url = "http://vantage.test/"

[[channel]]
name = "slack"
kind = "slack"
webhook_url = {{ env = "VANTAGE_TEST_SLACK_URL" }}

[[channel]]
name = "hook"
kind = "webhook"
url = {{ env = "VANTAGE_TEST_HOOK_URL" }}

{checks}"#
        ),
    );
    let log = dir.path().join("coordinator.log");
    let (_coord, grpc, http) = start_coordinator_with(
        &config,
        &[
            ("VANTAGE_TEST_SLACK_URL", &slack_url),
            ("VANTAGE_TEST_HOOK_URL", &hook_url),
        ],
        Some(&log),
    );
    let _agents: Vec<_> = ["eu", "us", "ap"]
        .iter()
        .map(|r| start_agent(grpc, r, &format!("agent-{r}")))
        .collect();
    wait_for_data(http, &["c0", "c5", "q1", "q2"], &["eu", "us", "ap"]).await;

    // Failure onsets, staggered over the check interval.
    let mut onsets: BTreeMap<String, Instant> = BTreeMap::new();
    target.fail("q1", &["eu"]);
    for name in onset_checks {
        target.fail(name, &["*"]);
        onsets.insert(name.to_owned(), Instant::now());
        tokio::time::sleep(Duration::from_millis(1700)).await;
    }
    target.fail("q2", &["eu", "us"]);
    onsets.insert("q2".into(), Instant::now());

    let firing = |ms: &[Received]| {
        ms.iter()
            .filter(|m| title_of(m).0 == "FIRING")
            .cloned()
            .collect::<Vec<_>>()
    };
    wait_until(Duration::from_secs(150), "7 firing notifications", || {
        firing(&slack.messages()).len() >= 7
    })
    .await;
    let mut latencies = Vec::new();
    for m in firing(&slack.messages()) {
        let (_, subject, rule) = title_of(&m);
        assert_eq!(rule, "down", "{subject}");
        let onset = onsets
            .get(&subject)
            .unwrap_or_else(|| panic!("an alert for {subject}, which only one region saw failing"));
        latencies.push(m.at.duration_since(*onset));
    }
    let secs: Vec<String> = {
        let mut l = latencies.clone();
        l.sort();
        l.iter()
            .map(|d| format!("{:.1}", d.as_secs_f64()))
            .collect()
    };
    let (p50, p95, max) = (
        percentile(&latencies, 50.0),
        percentile(&latencies, 95.0),
        percentile(&latencies, 100.0),
    );
    eprintln!(
        "failure onset -> Slack, {} alerts, seconds: [{}]; p50 {:.1} s, p95 {:.1} s, max {:.1} s",
        latencies.len(),
        secs.join(", "),
        p50.as_secs_f64(),
        p95.as_secs_f64(),
        max.as_secs_f64()
    );
    assert!(p95 <= Duration::from_secs(60), "p95 {p95:?}");
    assert!(max <= Duration::from_secs(90), "max {max:?}");

    // One region of three failing is not an outage: q1 stays quiet for a
    // further two evaluation intervals.
    tokio::time::sleep(Duration::from_secs(35)).await;
    assert!(
        !slack.messages().iter().any(|m| title_of(m).1 == "q1"),
        "q1 failed in one region only, yet alerted"
    );

    // Recovery: exactly one resolved per alert.
    for name in onset_checks.iter().chain(&["q1", "q2"]) {
        target.fail(name, &[]);
    }
    wait_until(Duration::from_secs(120), "7 resolved notifications", || {
        slack
            .messages()
            .iter()
            .filter(|m| title_of(m).0 == "RESOLVED")
            .count()
            >= 7
    })
    .await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    let t = tally(&slack.messages());
    for name in onset_checks.iter().chain(&["q2"]) {
        for label in ["FIRING", "RESOLVED"] {
            assert_eq!(
                t.get(&(label.into(), (*name).into())),
                Some(&1),
                "{label} {name}: {t:?}"
            );
        }
    }
    assert_eq!(t.values().sum::<usize>(), 14, "{t:?}");
    assert!(slack.rejections().is_empty(), "{:?}", slack.rejections());
    // The webhook channel got the same notifications, each id once.
    let hooks = hook.messages();
    let mut ids: Vec<&str> = hooks.iter().filter_map(|m| m.body["id"].as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!((hooks.len(), ids.len()), (14, 14), "{ids:?}");
    assert!(hooks.iter().all(|m| m.body["dashboard_url"]
        .as_str()
        .is_some_and(|u| u.starts_with("http://vantage.test/checks/"))));

    let (_, api) = http_get(http, "/api/v1/alerts").await;
    assert!(
        !api.contains(slack_secret) && !api.contains("CANARY-HOOK"),
        "{api}"
    );
    assert_no_canary(&log, &[slack_secret, "CANARY-HOOK-51d2"]);
}

/// The Slack config of a test coordinator whose ports survive restarts.
fn restartable_config(
    dir: &Path,
    target: &RegionTarget,
    grpc: u16,
    http: u16,
) -> std::path::PathBuf {
    let mut checks = String::new();
    for name in ["a", "b"] {
        checks.push_str(&format!(
            "[[check]]\nname = \"{name}\"\nkind = \"http\"\nurl = \"{}\"\nregions = [\"eu\", \"us\"]\ninterval = \"2s\"\ntimeout = \"1s\"\n\n",
            target.url(name)
        ));
    }
    write_config(
        dir,
        &format!(
            r#"version = 1

[server]
grpc_listen = "127.0.0.1:{grpc}"
http_listen = "127.0.0.1:{http}"
data_dir = "data"
window = "2s"

[alerting]
eval_interval = "2s"

[[channel]]
name = "slack"
kind = "slack"
webhook_url = {{ env = "VANTAGE_TEST_SLACK_URL" }}

{checks}"#
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_firing_repeats_nothing_and_resolves_once() {
    agent_bin();
    let dir = tempfile::tempdir().unwrap();
    let target = RegionTarget::start().await;
    let slack = SlackReceiver::start().await;
    let slack_url = slack.url("/services/T1/B1/CANARY-SLACK-kill9");
    let config = restartable_config(dir.path(), &target, free_port(), free_port());
    let log = dir.path().join("coordinator.log");
    let envs = [("VANTAGE_TEST_SLACK_URL", slack_url.as_str())];
    let (coord, grpc, http) = start_coordinator_with(&config, &envs, Some(&log));
    let _agents: Vec<_> = ["eu", "us"]
        .iter()
        .map(|r| start_agent(grpc, r, &format!("agent-{r}")))
        .collect();
    wait_for_data(http, &["a", "b"], &["eu", "us"]).await;
    target.fail("a", &["*"]);
    target.fail("b", &["*"]);
    wait_until(Duration::from_secs(60), "both alerts firing", || {
        slack.messages().len() >= 2
    })
    .await;

    // Ten SIGKILLs while both fire; `a` recovers while the coordinator is down.
    let mut coord = Some(coord);
    for i in 0..10 {
        drop(coord.take()); // SIGKILL
        tokio::time::sleep(Duration::from_millis(200 + rand::random_range(0..1300))).await;
        if i == 4 {
            target.fail("a", &[]);
        }
        let (c, _, _) = start_coordinator_with(&config, &envs, Some(&log));
        coord = Some(c);
        tokio::time::sleep(Duration::from_millis(1000 + rand::random_range(0..3000))).await;
    }
    wait_until(Duration::from_secs(90), "a resolved", || {
        tally(&slack.messages()).contains_key(&("RESOLVED".into(), "a".into()))
    })
    .await;
    // Several more evaluations: nothing else may arrive.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let messages = slack.messages();
    let t = tally(&messages);
    let want: BTreeMap<(String, String), usize> = [
        (("FIRING".into(), "a".into()), 1),
        (("FIRING".into(), "b".into()), 1),
        (("RESOLVED".into(), "a".into()), 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(t, want);
    for m in &messages {
        assert!(
            !m.body.to_string().contains("possible duplicate"),
            "{}",
            m.body
        );
    }
    assert_no_canary(&log, &["CANARY-SLACK-kill9"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_outage_and_slack_429_lose_nothing_and_duplicate_nothing() {
    agent_bin();
    let dir = tempfile::tempdir().unwrap();
    let target = RegionTarget::start().await;
    let password = "CANARY-SMTP-pw-93e1";
    let mut smtp = SmtpServer::start(Mode::StartTls, password, Script::default());
    let slack = SlackReceiver::start().await;
    slack.script([Canned::retry_after(429, "5")]);
    let slack_url = slack.url("/services/T2/B2/CANARY-SLACK-429");
    let config = write_config(
        dir.path(),
        &format!(
            r#"version = 1

[server]
grpc_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
data_dir = "data"
window = "2s"

[alerting]
eval_interval = "2s"

[[channel]]
name = "slack"
kind = "slack"
webhook_url = {{ env = "VANTAGE_TEST_SLACK_URL" }}

[[channel]]
name = "mail"
kind = "email"
host = "localhost"
port = {port}
tls = "starttls"
username = "{USER}"
password = {{ env = "VANTAGE_TEST_SMTP_PASSWORD" }}
from = "Vantage <vantage@localhost>"
to = ["oncall@localhost"]
ca_file = "{ca}"
timeout = "5s"

[[check]]
name = "web"
kind = "http"
url = "{url}"
regions = ["eu"]
interval = "2s"
timeout = "1s"
"#,
            port = smtp.port(),
            ca = smtp.ca_file().display(),
            url = target.url("web"),
        ),
    );
    let log = dir.path().join("coordinator.log");
    let (_coord, grpc, http) = start_coordinator_with(
        &config,
        &[
            ("VANTAGE_TEST_SLACK_URL", &slack_url),
            ("VANTAGE_TEST_SMTP_PASSWORD", password),
        ],
        Some(&log),
    );
    let _agent = start_agent(grpc, "eu", "agent-eu");
    wait_for_data(http, &["web"], &["eu"]).await;

    smtp.pause();
    let down = Instant::now();
    target.fail("web", &["*"]);

    // Slack: the 429 is honoured (no request before Retry-After), then the
    // message is delivered once.
    let first = slack.wait_for(1, Duration::from_secs(60)).await;
    assert_eq!(first.len(), 1);
    assert_eq!(slack.requests(), 2, "one 429, then the accepted retry");
    let arrivals = slack.arrivals();
    let gap = arrivals[1].duration_since(arrivals[0]);
    assert!(
        gap >= Duration::from_secs(5),
        "retried {gap:?} after a 429 with Retry-After: 5"
    );

    // Email: the SMTP server is down for two minutes; the notification waits
    // in the outbox, retried.
    let queued = eventually(Duration::from_secs(30), || async {
        let a = get_json(http, "/api/v1/alerts").await;
        let mail: Vec<Value> = a["outbox"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["channel"] == "mail" && e["attempts"].as_u64() >= Some(2))
            .cloned()
            .collect();
        (!mail.is_empty()).then_some(mail)
    })
    .await
    .expect("the email was retried while the server was down");
    assert!(queued[0]["last_error"].is_string(), "{queued:?}");
    let outage = Duration::from_secs(120);
    tokio::time::sleep(outage.saturating_sub(down.elapsed())).await;
    smtp.resume();
    let mails = smtp.wait_for(1, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(smtp.messages().len(), 1, "exactly one copy: {mails:?}");
    assert_eq!(slack.messages().len(), 1);
    assert!(smtp.messages()[0]
        .to_string()
        .contains("[FIRING] web: down"));
    assert_no_canary(&log, &[password, "CANARY-SLACK-429"]);
}

/// POSTs JSON to the API; returns status and body.
/// A request with the test admin token.
async fn admin(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    http_request(addr, method, path, Some(body), Some(TEST_ADMIN_TOKEN)).await
}

fn hook_events(hook: &SlackReceiver) -> Vec<(String, String, String)> {
    hook.messages()
        .iter()
        .map(|m| {
            let s = |k: &str| m.body[k].as_str().unwrap_or_default().to_owned();
            (s("kind"), s("subject"), s("rule"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_agent_is_agent_down_not_a_target_alert_and_a_broken_channel_is_reported() {
    agent_bin();
    let dir = tempfile::tempdir().unwrap();
    let target = RegionTarget::start().await;
    let slack = SlackReceiver::start().await;
    slack.script([Canned::status(404, "channel_not_found")]);
    let hook = SlackReceiver::start_with(Contract::Json, None).await;
    let config = write_config(
        dir.path(),
        &format!(
            r#"version = 1

[server]
grpc_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
data_dir = "data"
window = "2s"

[alerting]
eval_interval = "2s"
agent_down_after = "10s"

[[channel]]
name = "slack"
kind = "slack"
webhook_url = {{ env = "VANTAGE_TEST_SLACK_URL" }}

[[channel]]
name = "hook"
kind = "webhook"
url = {{ env = "VANTAGE_TEST_HOOK_URL" }}

[[check]]
name = "web"
kind = "http"
url = "{web}"
regions = ["eu", "us"]
interval = "2s"
timeout = "1s"

[[check]]
name = "maint"
kind = "http"
url = "{maint}"
regions = ["eu", "us"]
interval = "2s"
timeout = "1s"

[[maintenance]]
checks = ["maint"]
start = "{start}"
end = "{end}"
comment = "planned work"
"#,
            web = target.url("web"),
            maint = target.url("maint"),
            start = humantime::format_rfc3339_seconds(
                std::time::SystemTime::now() - Duration::from_secs(3600)
            ),
            end = humantime::format_rfc3339_seconds(
                std::time::SystemTime::now() + Duration::from_secs(3600)
            ),
        ),
    );
    // Down for the whole test, but inside its maintenance window.
    target.fail("maint", &["*"]);
    let slack_url = slack.url("/services/T3/B3/CANARY-SLACK-404");
    let hook_url = hook.url("/hook");
    let log = dir.path().join("coordinator.log");
    let (_coord, grpc, http) = start_coordinator_with(
        &config,
        &[
            ("VANTAGE_TEST_SLACK_URL", &slack_url),
            ("VANTAGE_TEST_HOOK_URL", &hook_url),
        ],
        Some(&log),
    );
    let _eu = start_agent(grpc, "eu", "agent-eu");
    let us = start_agent(grpc, "us", "agent-us");
    wait_for_data(http, &["web", "maint"], &["eu", "us"]).await;

    // Silences: validated, listed, removed.
    let (status, body) = admin(http, "POST", "/api/v1/silences", r#"{"comment":"x"}"#).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("exactly one of ends_at and duration"),
        "{body}"
    );
    let (status, body) = admin(
        http,
        "POST",
        "/api/v1/silences",
        r#"{"subject":"nothing-here","duration":"1h","comment":"maintenance"}"#,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = serde_json::from_str::<Value>(&body).unwrap()["id"]
        .as_u64()
        .unwrap();
    let alerts = get_json(http, "/api/v1/alerts").await;
    assert_eq!(alerts["silences"][0]["subject"], "nothing-here", "{alerts}");
    let path = format!("/api/v1/silences/{id}");
    assert_eq!(admin(http, "DELETE", &path, "").await.0, 204);
    assert_eq!(admin(http, "DELETE", &path, "").await.0, 404);

    // The us agent dies: agent_down, and no alert about the target.
    drop(us);
    wait_until(
        Duration::from_secs(60),
        "agent_down and channel_failed on the hook",
        || {
            let ev = hook_events(&hook);
            ev.contains(&("firing".into(), "agent-us".into(), "agent_down".into()))
                && ev.contains(&("firing".into(), "slack".into(), "channel_failed".into()))
        },
    )
    .await;
    let alerts = get_json(http, "/api/v1/alerts").await;
    let failed: Vec<&Value> = alerts["outbox"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["channel"] == "slack" && e["state"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{alerts}");
    assert!(
        failed[0]["last_error"].as_str().unwrap().contains("404"),
        "{alerts}"
    );
    assert_eq!(slack.requests(), 1, "a permanent refusal is not retried");

    // It comes back: agent_down resolves; the target never alerted.
    let _us = start_agent(grpc, "us", "agent-us");
    wait_until(Duration::from_secs(60), "agent_down resolved", || {
        hook_events(&hook).contains(&("resolved".into(), "agent-us".into(), "agent_down".into()))
    })
    .await;
    let ev = hook_events(&hook);
    assert!(!ev.iter().any(|(_, subject, _)| subject == "web"), "{ev:?}");
    // The check in maintenance fires but notifies no one.
    assert!(
        !ev.iter().any(|(_, subject, _)| subject == "maint"),
        "{ev:?}"
    );
    assert_eq!(ev.len(), 3, "{ev:?}");
    // After the us agent's return its quorum builds up again, so the
    // maint alert may take a few windows to be firing once more.
    let maint = eventually(Duration::from_secs(30), || async {
        let alerts = get_json(http, "/api/v1/alerts").await;
        alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["subject"] == "maint" && a["rule"] == "down" && a["status"] == "firing")
            .cloned()
    })
    .await
    .unwrap_or_else(|| panic!("maint is not firing: {}", "see /api/v1/alerts"));
    assert_eq!(
        (maint["status"].as_str(), maint["notified"].as_bool()),
        (Some("firing"), Some(false))
    );
    assert_no_canary(&log, &["CANARY-SLACK-404"]);
}
