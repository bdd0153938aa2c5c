//! The HTTP API's checklist (issue 6): every route but `/healthz` needs a
//! token, every mutating route needs `admin`, failed authentications are
//! limited per address without slowing a legitimate client, bodies are
//! bounded, no CORS, and errors carry a request id.

use std::time::{Duration, Instant};

use crate::support::*;

const VIEWER_TOKEN: &str = "vantage-test-viewer-token-9876543210";

fn config(dir: &std::path::Path) -> std::path::PathBuf {
    write_config(
        dir,
        &format!(
            r#"version = 1

[server]
grpc_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
data_dir = "data"

[[api.token]]
name = "ops"
role = "admin"
sha256 = "{}"

[[api.token]]
name = "grafana"
role = "viewer"
sha256 = "{}"
"#,
            sha256_hex(TEST_ADMIN_TOKEN),
            sha256_hex(VIEWER_TOKEN)
        ),
    )
}

/// The route's path with its parameters filled in.
fn concrete(path: &str) -> String {
    path.replace("{name}", "no-such-check")
        .replace("{id}", "no-such-id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_but_healthz_needs_a_token_and_every_mutation_needs_admin() {
    let dir = tempfile::tempdir().unwrap();
    let (_coordinator, _, http) = start_coordinator(&config(dir.path()));
    let routes = vantage_coordinator::api::routes();
    assert!(routes.len() >= 10, "{routes:?}");
    let mut mutating = 0;
    for (i, (method, path)) in routes.iter().enumerate() {
        // Each route's refusals from an address of its own, so the
        // failed-authentication limit (tested below) stays out of the way.
        let from = Some(std::net::Ipv4Addr::new(127, 0, 0, 10 + i as u8));
        let (m, p) = (method.as_str(), concrete(path));
        let body = (m != "GET").then_some("{}");
        if *path == "/healthz" {
            let (status, text) = http_request(http, m, &p, body, None).await;
            assert_eq!((status, text.as_str()), (200, "ok\n"));
            continue;
        }
        // No token, a wrong token, a token in the wrong scheme: 401.
        for token in [None, Some("not-a-token")] {
            let (status, head, text) = http_exchange(http, m, &p, body, token, from).await;
            assert_eq!(status, 401, "{m} {p} with {token:?}: {text}");
            assert!(
                head.to_ascii_lowercase()
                    .contains("www-authenticate: bearer"),
                "{head}"
            );
        }
        let viewer = http_request(http, m, &p, body, Some(VIEWER_TOKEN)).await;
        let admin = http_request(http, m, &p, body, Some(TEST_ADMIN_TOKEN)).await;
        if *path == "/api/v1/audit" || *path == "/api/v1/config" {
            // Who changed what, and config errors: reads for administrators only.
            assert_eq!(viewer.0, 403, "{m} {p} as viewer: {}", viewer.1);
        } else if m == "GET" {
            assert!(![401, 403].contains(&viewer.0), "{m} {p}: {viewer:?}");
        } else {
            mutating += 1;
            assert_eq!(viewer.0, 403, "{m} {p} as viewer: {}", viewer.1);
            assert!(viewer.1.contains("admin role"), "{}", viewer.1);
        }
        assert!(![401, 403].contains(&admin.0), "{m} {p}: {admin:?}");
    }
    assert!(mutating >= 3, "{routes:?}");
    // Paths that are no route, and methods a route does not have, are not
    // revealed without a token either.
    let from = Some(std::net::Ipv4Addr::new(127, 0, 0, 200));
    let (status, _, _) = http_exchange(http, "GET", "/admin", None, None, from).await;
    assert_eq!(status, 401);
    let (status, _, _) = http_exchange(http, "PUT", "/api/v1/checks", Some("{}"), None, from).await;
    assert_eq!(status, 401);
    assert_eq!(
        http_request(
            http,
            "PUT",
            "/api/v1/checks",
            Some("{}"),
            Some(VIEWER_TOKEN)
        )
        .await
        .0,
        403
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_bad_tokens_get_429_while_a_legitimate_client_stays_fast() {
    let dir = tempfile::tempdir().unwrap();
    let (_coordinator, _, http) = start_coordinator(&config(dir.path()));
    // The attacker: 1,000 guesses in 10 s from 127.0.0.1.
    let attacker = tokio::spawn(async move {
        let mut statuses = Vec::new();
        let start = tokio::time::Instant::now();
        for i in 0..1000u32 {
            tokio::time::sleep_until(start + Duration::from_millis(10) * i).await;
            let guess = format!("guess-{i:04}");
            let (status, head, _) =
                http_exchange(http, "GET", "/api/v1/agents", None, Some(&guess), None).await;
            statuses.push((status, head));
        }
        statuses
    });
    // The legitimate client, from the same address, meanwhile.
    let mut latencies = Vec::new();
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        let t = Instant::now();
        let (status, body) = http_get(http, "/api/v1/agents").await;
        latencies.push(t.elapsed());
        assert_eq!(status, 200, "{body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let statuses = attacker.await.unwrap();
    let first_429 = statuses.iter().position(|(s, _)| *s == 429);
    let limited = statuses.iter().filter(|(s, _)| *s == 429).count();
    let p99 = percentile(&latencies, 99.0);
    eprintln!(
        "attacker: first 429 at attempt {first_429:?}, {limited} of 1000 limited; legitimate client: {} requests, p99 {p99:?}",
        latencies.len()
    );
    // The burst is allowed as 401s, then 429 (with Retry-After), with only
    // the slow refill letting a guess through now and then.
    assert_eq!(first_429, Some(10));
    assert!(statuses[..10].iter().all(|(s, _)| *s == 401));
    assert!(limited >= 985, "{limited}");
    assert!(statuses
        .iter()
        .all(|(s, head)| *s != 429 || head.to_ascii_lowercase().contains("retry-after:")));
    assert!(latencies.len() >= 200, "{}", latencies.len());
    assert!(p99 < Duration::from_millis(50), "p99 {p99:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_bounded_no_cors_and_errors_carry_a_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let (_coordinator, _, http) = start_coordinator(&config(dir.path()));
    // 413 above the body limit.
    let big = format!("{{\"comment\":\"{}\"}}", "x".repeat(100 * 1024));
    let (status, _) = http_request(
        http,
        "POST",
        "/api/v1/silences",
        Some(&big),
        Some(TEST_ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, 413);
    // An error body names its request id, the same as the header.
    let (status, head, body) =
        http_exchange(http, "GET", "/api/v1/checks/nope", None, None, None).await;
    assert_eq!(status, 401);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = json["request_id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 16, "{body}");
    assert!(head.contains(&format!("x-request-id: {id}")), "{head}");
    // No CORS: a cross-origin request, even with a valid token, gets no
    // Access-Control headers, so a browser on another origin cannot read it.
    for method in ["GET", "OPTIONS"] {
        let mut s = tokio::net::TcpStream::connect(http).await.unwrap();
        let req = format!(
            "{method} /api/v1/agents HTTP/1.1\r\nHost: {http}\r\nOrigin: https://evil.example\r\nAccess-Control-Request-Method: GET\r\nAuthorization: Bearer {TEST_ADMIN_TOKEN}\r\nConnection: close\r\n\r\n"
        );
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        s.write_all(req.as_bytes()).await.unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).await.unwrap();
        let head = text.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
        assert!(!head.contains("access-control-"), "{method}: {head}");
    }
    // The token never comes back: not in the body, not in the headers.
    let (_, head, body) = http_exchange(
        http,
        "GET",
        "/api/v1/checks",
        None,
        Some(TEST_ADMIN_TOKEN),
        None,
    )
    .await;
    assert!(!head.contains(TEST_ADMIN_TOKEN) && !body.contains(TEST_ADMIN_TOKEN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_made_by_the_token_command_opens_the_api() {
    let out = std::process::Command::new(coordinator_bin())
        .args(["token", "--name", "ops", "--role", "admin"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let token = text.lines().nth(1).unwrap().trim().to_owned();
    assert_eq!(token.len(), 64, "{text}");
    let stanza = &text[text.find("[[api.token]]").unwrap()..];
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "version = 1\n\n[server]\ngrpc_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\n{stanza}"
        ),
    );
    let (_coordinator, _, http) = start_coordinator(&config);
    let (status, body) = http_request(http, "GET", "/api/v1/checks", None, Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) =
        http_request(http, "GET", "/api/v1/checks", None, Some(TEST_ADMIN_TOKEN)).await;
    assert_eq!(status, 401, "only the configured token opens it");
}

/// The value of header `name` in a response head.
fn header<'a>(head: &'a str, name: &str) -> &'a str {
    head.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then_some(v.trim())
        })
        .unwrap_or_else(|| panic!("no {name} in {head}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_are_audited_with_who_what_and_when_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let (coordinator, _, http) = start_coordinator(&config);
    let before = now_ms();
    let silence = r#"{"subject":"homepage","duration":"1h","comment":"deploy"}"#;
    let (status, head, body) = http_exchange(
        http,
        "POST",
        "/api/v1/silences",
        Some(silence),
        Some(TEST_ADMIN_TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let created_id = header(&head, "x-request-id").to_owned();
    let silence_id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"].clone();
    // A viewer's attempt is refused before the handler: not a change.
    let (status, _) = http_request(
        http,
        "POST",
        "/api/v1/silences",
        Some(silence),
        Some(VIEWER_TOKEN),
    )
    .await;
    assert_eq!(status, 403);
    // A refused load run is recorded with its reason.
    let run = serde_json::json!({
        "file": "[[scenario]]\nname = \"s\"\nexecutor = \"constant-vus\"\nvus = 1\nduration = \"1s\"\n\n[[scenario.request]]\nurl = \"http://example.com/\"\n",
        "regions": ["eu"],
    })
    .to_string();
    let (status, head, _) = http_exchange(
        http,
        "POST",
        "/api/v1/loadtests",
        Some(&run),
        Some(TEST_ADMIN_TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 400);
    let refused_id = header(&head, "x-request-id").to_owned();
    let (status, _) = http_request(
        http,
        "DELETE",
        &format!("/api/v1/silences/{silence_id}"),
        None,
        Some(TEST_ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, 204);

    let check = |log: serde_json::Value| {
        let entries = log["entries"].as_array().unwrap().clone();
        assert_eq!(entries.len(), 3, "{log:#}");
        let (deleted, refused, created) = (&entries[0], &entries[1], &entries[2]);
        for e in &entries {
            assert_eq!(e["actor"], "ops", "{e}");
            assert_eq!(e["role"], "admin", "{e}");
            assert_eq!(e["peer"], "127.0.0.1", "{e}");
            assert!(e["at_unix_ms"].as_i64().unwrap() >= before, "{e}");
            assert!(!e.to_string().contains(TEST_ADMIN_TOKEN), "no token: {e}");
        }
        assert_eq!(
            (
                &deleted["method"],
                &deleted["status"],
                &deleted["detail"]["silence"]
            ),
            (&"DELETE".into(), &204.into(), &silence_id)
        );
        assert_eq!(refused["path"], "/api/v1/loadtests");
        assert_eq!(refused["status"], 400);
        assert_eq!(refused["request_id"], refused_id.as_str());
        assert!(
            refused["detail"]["refused"]
                .as_str()
                .unwrap()
                .contains("example.com"),
            "{refused}"
        );
        assert_eq!(refused["detail"]["file_sha256"].as_str().unwrap().len(), 64);
        assert_eq!(created["request_id"], created_id.as_str());
        assert_eq!(created["detail"]["silence"], silence_id);
        assert_eq!(created["detail"]["subject"], "homepage");
    };
    check(get_json(http, "/api/v1/audit").await);
    drop(coordinator);
    let (_coordinator, _, http) = start_coordinator(&config);
    check(get_json(http, "/api/v1/audit?limit=10").await);
    let (status, _) = http_request(
        http,
        "GET",
        "/api/v1/audit?limit=0",
        None,
        Some(TEST_ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, 400);
}
