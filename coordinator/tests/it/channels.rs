//! The `slack` and `webhook` channels against real receivers on loopback
//! (see `slack_receiver.rs`): message contract, status classification,
//! timeouts, TLS with a private CA file, and secrecy of the URL.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use vantage_coordinator::alert::slack::SlackChannel;
use vantage_coordinator::alert::webhook::WebhookChannel;
use vantage_coordinator::alert::{
    Channel, Delivery, Notification, NotificationKind, RegionValue, Severity, SlackConfig,
    WebhookConfig,
};
use vantage_coordinator::secret::Secret;

use crate::slack_receiver::{self_signed_tls, Canned, Contract, SlackReceiver};

/// The secret part of every test URL: must never appear in any output.
const CANARY: &str = "CANARY-SLACK-SECRET";
const SLACK_PATH: &str = "/services/T000/B000/CANARY-SLACK-SECRET";
const TIMEOUT: Duration = Duration::from_secs(5);

fn notification() -> Notification {
    Notification {
        id: "homepage/p(95)<500/3/firing".into(),
        kind: NotificationKind::Firing,
        subject: "homepage".into(),
        rule: "p(95)<500".into(),
        severity: Severity::Critical,
        summary: "p95 812 ms > 500 ms in eu, us".into(),
        observed: vec![
            RegionValue {
                region: "eu".into(),
                value: Some(812.0),
                breaching: true,
            },
            RegionValue {
                region: "us".into(),
                value: Some(901.5),
                breaching: true,
            },
            RegionValue {
                region: "ap".into(),
                value: Some(120.0),
                breaching: false,
            },
            RegionValue {
                region: "all".into(),
                value: Some(700.0),
                breaching: true,
            },
        ],
        breaching_regions: vec!["eu".into(), "us".into()],
        firing_since_unix_ms: 1_700_000_000_000,
        at_unix_ms: 1_700_000_000_000,
        dashboard_url: Some("https://vantage.example/checks/homepage".into()),
        possible_duplicate: false,
    }
}

fn slack(url: String, timeout: Duration, ca_file: Option<PathBuf>) -> SlackChannel {
    SlackChannel::new(
        "ops".into(),
        &SlackConfig {
            webhook_url: Secret::new(url),
            timeout,
            ca_file,
        },
    )
    .expect("valid slack config")
}

fn webhook(url: String, timeout: Duration) -> WebhookChannel {
    WebhookChannel::new(
        "hook".into(),
        &WebhookConfig {
            url: Secret::new(url),
            timeout,
            ca_file: None,
        },
    )
    .expect("valid webhook config")
}

/// Asserts that nothing about `d` shows the canary.
fn assert_no_canary(d: &Delivery) {
    let text = format!("{d:?}");
    assert!(!text.contains(CANARY), "secret leaked: {text}");
    assert!(!text.contains("/services/"), "URL path leaked: {text}");
}

fn reason(d: &Delivery) -> &str {
    match d {
        Delivery::Accepted => "",
        Delivery::Retry { reason, .. }
        | Delivery::Permanent { reason }
        | Delivery::Ambiguous { reason } => reason,
    }
}

#[tokio::test]
async fn slack_success_delivers_a_valid_block_kit_message() {
    let rx = SlackReceiver::start().await;
    let ch = slack(rx.url(SLACK_PATH), TIMEOUT, None);
    assert_eq!(ch.kind(), "slack");
    assert_eq!(ch.name(), "ops");
    assert_eq!(ch.min_interval(), Duration::from_secs(1));

    let d = ch.send(&notification()).await;
    assert_eq!(d, Delivery::Accepted);
    let got = rx.wait_for(1, TIMEOUT).await;
    assert!(rx.rejections().is_empty(), "{:?}", rx.rejections());
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(m.path, SLACK_PATH);
    assert!(m.headers["user-agent"]
        .to_str()
        .unwrap()
        .starts_with("vantage-coordinator/"));

    let body = &m.body;
    assert!(body["text"].as_str().unwrap().contains("[FIRING] homepage"));
    let blocks = body["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(blocks[0]["text"]["text"], "[FIRING] homepage: p(95)<500");
    let fields: Vec<&str> = blocks[1]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["text"].as_str().unwrap())
        .collect();
    assert!(fields.contains(&"*Check*\nhomepage"), "{fields:?}");
    assert!(fields.contains(&"*Rule*\np(95)&lt;500"), "{fields:?}");
    assert!(
        fields.contains(&"*Regions breaching*\neu, us"),
        "{fields:?}"
    );
    assert!(
        fields.contains(&"*Time*\n2023-11-14T22:13:20Z"),
        "{fields:?}"
    );
    assert!(
        fields.contains(
            &"*Observed*\neu: 812 (breaching)\nus: 901.5 (breaching)\nap: 120\nall: 700 (breaching)"
        ),
        "{fields:?}"
    );
    let link = blocks
        .iter()
        .filter(|b| b["type"] == "actions")
        .flat_map(|b| b["elements"].as_array().unwrap())
        .find_map(|e| e["url"].as_str());
    assert_eq!(link, Some("https://vantage.example/checks/homepage"));
}

#[tokio::test]
async fn slack_429_retry_after_is_passed_on() {
    let rx = SlackReceiver::start().await;
    rx.script([Canned::retry_after(429, "7")]);
    let d = slack(rx.url(SLACK_PATH), TIMEOUT, None)
        .send(&notification())
        .await;
    match &d {
        Delivery::Retry { after, reason } => {
            assert_eq!(*after, Some(Duration::from_secs(7)));
            assert!(reason.contains("429"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_no_canary(&d);
    assert!(rx.messages().is_empty());
}

#[tokio::test]
async fn slack_500_is_retried() {
    let rx = SlackReceiver::start().await;
    rx.script([Canned::status(500, "rollup_error")]);
    let d = slack(rx.url(SLACK_PATH), TIMEOUT, None)
        .send(&notification())
        .await;
    assert_eq!(
        d,
        Delivery::Retry {
            after: None,
            reason: "slack webhook: HTTP 500 Internal Server Error (rollup_error)".into()
        }
    );
}

#[tokio::test]
async fn slack_client_errors_are_permanent() {
    let rx = SlackReceiver::start().await;
    let cases = [
        (400, "invalid_payload"),
        (403, "action_prohibited"),
        (404, "channel_not_found"),
        (410, "channel_is_archived"),
    ];
    rx.script(cases.iter().map(|(c, b)| Canned::status(*c, b)));
    let ch = slack(rx.url(SLACK_PATH), TIMEOUT, None);
    for (code, body) in cases {
        let d = ch.send(&notification()).await;
        match &d {
            Delivery::Permanent { reason } => {
                assert!(reason.contains(&code.to_string()), "{reason}");
                assert!(reason.contains(body), "{reason}");
            }
            other => panic!("{code}: {other:?}"),
        }
        assert_no_canary(&d);
    }
    assert_eq!(rx.requests(), 4);
}

#[tokio::test]
async fn scripted_failures_then_ok() {
    let rx = SlackReceiver::start().await;
    rx.script([Canned::retry_after(429, "2"), Canned::status(500, "")]);
    let ch = slack(rx.url(SLACK_PATH), TIMEOUT, None);
    let n = notification();
    assert!(matches!(
        ch.send(&n).await,
        Delivery::Retry { after: Some(d), .. } if d == Duration::from_secs(2)
    ));
    assert!(matches!(
        ch.send(&n).await,
        Delivery::Retry { after: None, .. }
    ));
    assert_eq!(ch.send(&n).await, Delivery::Accepted);
    assert_eq!(rx.requests(), 3);
    assert_eq!(rx.messages().len(), 1);
}

#[tokio::test]
async fn the_receiver_rejects_a_payload_outside_slacks_contract() {
    // The webhook channel posts a Notification, not a Slack message: the
    // Slack receiver must refuse it as Slack would.
    let rx = SlackReceiver::start().await;
    let d = webhook(rx.url(SLACK_PATH), TIMEOUT)
        .send(&notification())
        .await;
    assert!(
        matches!(&d, Delivery::Permanent { reason } if reason.contains("invalid_payload")),
        "{d:?}"
    );
    assert_eq!(rx.rejections().len(), 1, "{:?}", rx.rejections());
    assert!(rx.messages().is_empty());
}

#[tokio::test]
async fn connection_closed_after_the_request_is_ambiguous() {
    let rx = SlackReceiver::start().await;
    rx.script([Canned::Close]);
    let d = slack(rx.url(SLACK_PATH), TIMEOUT, None)
        .send(&notification())
        .await;
    assert!(matches!(d, Delivery::Ambiguous { .. }), "{d:?}");
    assert_eq!(rx.requests(), 1);
    assert_no_canary(&d);
}

#[tokio::test]
async fn connection_refused_is_retried() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let d = slack(format!("http://{addr}{SLACK_PATH}"), TIMEOUT, None)
        .send(&notification())
        .await;
    assert_eq!(
        d,
        Delivery::Retry {
            after: None,
            reason: "slack webhook: connection refused".into()
        }
    );
}

/// A receiver that reads the request and then stalls past the timeout gives
/// `Ambiguous`, not `Retry`: the request was fully written, so Slack may
/// well post it (and answer late). The outbox retries it marked as a
/// possible duplicate.
#[tokio::test]
async fn a_slow_receiver_after_the_request_was_sent_is_ambiguous() {
    let rx = SlackReceiver::start().await;
    rx.script([Canned::Stall(Duration::from_secs(5))]);
    let timeout = Duration::from_millis(400);
    let started = Instant::now();
    let d = slack(rx.url(SLACK_PATH), timeout, None)
        .send(&notification())
        .await;
    let took = started.elapsed();
    assert!(
        matches!(&d, Delivery::Ambiguous { reason } if reason.contains("after the request was sent")),
        "{d:?}"
    );
    assert!(took >= timeout && took < Duration::from_secs(2), "{took:?}");
    assert_no_canary(&d);
}

/// A peer that accepts TCP but never completes the TLS handshake: the
/// timeout fires before anything was sent, so `Retry`.
#[tokio::test]
async fn a_timeout_before_the_request_was_sent_is_retried() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut s, _)) = l.accept().await {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            held.push(s);
        }
    });
    let timeout = Duration::from_millis(400);
    let started = Instant::now();
    let d = slack(format!("https://{addr}{SLACK_PATH}"), timeout, None)
        .send(&notification())
        .await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        matches!(&d, Delivery::Retry { after: None, reason } if reason.contains("before the request was sent")),
        "{d:?}"
    );
    assert_no_canary(&d);
    hold.abort();
}

#[tokio::test]
async fn https_with_a_self_signed_certificate_in_ca_file() {
    let (cfg, pem) = self_signed_tls();
    let rx = SlackReceiver::start_with(Contract::Slack, Some(cfg)).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("receiver.pem");
    std::fs::write(&ca, pem).unwrap();

    let d = slack(rx.url(SLACK_PATH), TIMEOUT, Some(ca))
        .send(&notification())
        .await;
    assert_eq!(d, Delivery::Accepted);
    assert_eq!(rx.wait_for(1, TIMEOUT).await[0].path, SLACK_PATH);

    // Without the ca_file the certificate is not trusted: nothing is sent.
    let d = slack(rx.url(SLACK_PATH), TIMEOUT, None)
        .send(&notification())
        .await;
    assert!(
        matches!(&d, Delivery::Retry { reason, .. } if reason.contains("TLS handshake failed")),
        "{d:?}"
    );
    assert_no_canary(&d);
    assert_eq!(rx.requests(), 1);
}

#[tokio::test]
async fn plain_http_is_only_allowed_to_loopback() {
    for url in [
        format!("http://hooks.slack.com{SLACK_PATH}"),
        format!("http://192.0.2.10{SLACK_PATH}"),
    ] {
        let cfg = SlackConfig {
            webhook_url: Secret::new(url),
            timeout: TIMEOUT,
            ca_file: None,
        };
        let e = SlackChannel::new("ops".into(), &cfg).unwrap_err();
        assert!(e.contains("loopback"), "{e}");
        assert!(!e.contains(CANARY) && !e.contains("/services/"), "{e}");
    }
    let cfg = WebhookConfig {
        url: Secret::new(format!("http://example.com{SLACK_PATH}")),
        timeout: TIMEOUT,
        ca_file: None,
    };
    let e = WebhookChannel::new("hook".into(), &cfg).unwrap_err();
    assert!(!e.contains(CANARY), "{e}");
}

/// The URL is the secret: across every failure mode, including a receiver
/// that echoes it back in the body and in a redirect, no reason, error or
/// `Debug` output shows it.
#[tokio::test]
async fn the_url_never_appears_in_any_output() {
    let rx = SlackReceiver::start().await;
    let url = rx.url(SLACK_PATH);
    let echo = format!("no route for {url} ({SLACK_PATH})");
    rx.script([
        Canned::retry_after(429, "3").with_header("x-echo", &url),
        Canned::status(500, &echo),
        Canned::status(400, &echo),
        Canned::status(403, SLACK_PATH),
        Canned::status(404, CANARY),
        Canned::status(410, "channel_is_archived"),
        Canned::status(301, "moved").with_header("location", &url),
        Canned::status(503, &"x".repeat(1 << 20)),
        Canned::Close,
        Canned::Stall(Duration::from_secs(3)),
    ]);
    let ch = slack(url.clone(), Duration::from_millis(1500), None);
    let debug = format!("{ch:?}");
    assert!(
        !debug.contains(CANARY) && !debug.contains("127.0.0.1"),
        "{debug}"
    );
    let n = notification();
    let mut outcomes = Vec::new();
    for _ in 0..10 {
        outcomes.push(ch.send(&n).await);
    }
    // connection refused
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        slack(format!("http://{addr}{SLACK_PATH}"), TIMEOUT, None)
    };
    outcomes.push(refused.send(&n).await);
    // TLS failure (untrusted certificate)
    let (cfg, _) = self_signed_tls();
    let tls_rx = SlackReceiver::start_with(Contract::Slack, Some(cfg)).await;
    outcomes.push(slack(tls_rx.url(SLACK_PATH), TIMEOUT, None).send(&n).await);
    // webhook channel too
    let hook = webhook(url.clone(), TIMEOUT);
    assert!(!format!("{hook:?}").contains(CANARY));

    for d in &outcomes {
        assert_no_canary(d);
        assert!(!reason(d).contains("127.0.0.1"), "{d:?}");
        assert!(reason(d).chars().count() < 300, "{d:?}");
    }
    let kinds: Vec<&str> = outcomes
        .iter()
        .map(|d| match d {
            Delivery::Accepted => "accepted",
            Delivery::Retry { .. } => "retry",
            Delivery::Permanent { .. } => "permanent",
            Delivery::Ambiguous { .. } => "ambiguous",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "retry",     // 429
            "retry",     // 500
            "permanent", // 400
            "permanent", // 403
            "permanent", // 404
            "permanent", // 410
            "permanent", // 301, not followed
            "retry",     // 503 with a 1 MiB body, read capped
            "ambiguous", // closed after the request
            "ambiguous", // stalled past the timeout
            "retry",     // connection refused
            "retry",     // untrusted certificate
        ]
    );
    // Construction errors, for every kind of bad URL.
    for bad in [
        format!("ftp://127.0.0.1{SLACK_PATH}"),
        format!("http://hooks.slack.com{SLACK_PATH}"),
        format!("https://user:{CANARY}@hooks.slack.com/x"),
        format!("https://exa mple.com{SLACK_PATH}"),
        SLACK_PATH.to_string(),
    ] {
        let e = SlackChannel::new(
            "ops".into(),
            &SlackConfig {
                webhook_url: Secret::new(bad.clone()),
                timeout: TIMEOUT,
                ca_file: None,
            },
        )
        .unwrap_err();
        assert!(
            !e.contains(CANARY) && !e.contains("/services/"),
            "{bad}: {e}"
        );
    }
}

#[tokio::test]
async fn webhook_posts_the_notification_json_with_an_idempotency_key() {
    let rx = SlackReceiver::start_with(Contract::Json, None).await;
    let ch = webhook(rx.url("/hooks/vantage?token=CANARY-SLACK-SECRET"), TIMEOUT);
    assert_eq!(ch.kind(), "webhook");
    assert_eq!(ch.min_interval(), Duration::ZERO);
    let mut n = notification();
    n.possible_duplicate = true;
    assert_eq!(ch.send(&n).await, Delivery::Accepted);
    let got = rx.wait_for(1, TIMEOUT).await;
    let m = &got[0];
    assert_eq!(m.path, "/hooks/vantage?token=CANARY-SLACK-SECRET");
    assert_eq!(m.body, serde_json::to_value(&n).unwrap());
    let back: Notification = serde_json::from_value(m.body.clone()).unwrap();
    assert_eq!(back, n);
    assert_eq!(m.headers["idempotency-key"], "homepage/p(95)<500/3/firing");
    assert_eq!(m.headers["content-type"], "application/json");
    assert_eq!(
        m.headers["user-agent"],
        concat!("vantage-coordinator/", env!("CARGO_PKG_VERSION"))
    );
}

#[tokio::test]
async fn webhook_classifies_like_slack() {
    let rx = SlackReceiver::start_with(Contract::Json, None).await;
    rx.script([
        Canned::status(202, "queued"),
        Canned::retry_after(503, "Wed, 21 Oct 2015 07:28:00 GMT"),
        Canned::retry_after(429, "86400"),
        Canned::status(422, "{\"error\":\"bad\"}"),
    ]);
    let ch = webhook(rx.url("/hook"), TIMEOUT);
    let n = notification();
    assert_eq!(ch.send(&n).await, Delivery::Accepted);
    // An HTTP-date in the past: retry now.
    assert!(matches!(
        ch.send(&n).await,
        Delivery::Retry { after: Some(d), .. } if d == Duration::ZERO
    ));
    // A day: clamped to 15 minutes.
    assert!(matches!(
        ch.send(&n).await,
        Delivery::Retry { after: Some(d), .. } if d == Duration::from_secs(900)
    ));
    let d = ch.send(&n).await;
    assert!(
        matches!(&d, Delivery::Permanent { reason } if reason.contains("422") && reason.contains("{\"error\":\"bad\"}")),
        "{d:?}"
    );
    assert_eq!(rx.messages().len(), 1);
}

/// A raw TCP peer: reads one whole HTTP request, writes `answer`, then holds
/// the connection open.
async fn raw_peer(answer: &'static [u8]) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use tokio::io::AsyncWriteExt;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut s, _)) = l.accept().await {
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&req).to_ascii_lowercase();
                if let Some(head_end) = text.find("\r\n\r\n") {
                    let len = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if req.len() >= head_end + 4 + len {
                        break;
                    }
                }
            }
            let _ = s.write_all(answer).await;
            held.push(s);
        }
    });
    (addr, task)
}

/// The status decides even when the error body never finishes: a 404 whose
/// body stalls is still `Permanent`, within the timeout.
#[tokio::test]
async fn a_stalled_error_body_keeps_the_status() {
    let (addr, peer) =
        raw_peer(b"HTTP/1.1 404 Not Found\r\nContent-Length: 1000\r\n\r\nchannel_not_").await;
    let timeout = Duration::from_millis(500);
    let started = Instant::now();
    let d = slack(format!("http://{addr}{SLACK_PATH}"), timeout, None)
        .send(&notification())
        .await;
    let took = started.elapsed();
    assert!(
        matches!(&d, Delivery::Permanent { reason } if reason.contains("404")),
        "{d:?}"
    );
    assert!(took < timeout + Duration::from_secs(1), "{took:?}");
    peer.abort();
}

/// A peer that answers garbage after reading the request: the request may
/// have been acted on, so `Ambiguous`.
#[tokio::test]
async fn a_garbage_answer_after_the_request_is_ambiguous() {
    let (addr, peer) = raw_peer(b"SSH-2.0-OpenSSH_9.6\r\n\r\n").await;
    let d = slack(format!("http://{addr}{SLACK_PATH}"), TIMEOUT, None)
        .send(&notification())
        .await;
    assert!(matches!(d, Delivery::Ambiguous { .. }), "{d:?}");
    assert_no_canary(&d);
    peer.abort();
}
