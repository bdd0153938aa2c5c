//! The `email` channel against a real SMTP server (aiosmtpd, see `smtp.rs`):
//! what arrives, and how each failure is classified.

use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;
use vantage_coordinator::alert::email::{message_id, EmailChannel};
use vantage_coordinator::alert::{
    Channel, Delivery, EmailConfig, Notification, NotificationKind, RegionValue, Severity, SmtpTls,
};
use vantage_coordinator::secret::Secret;

use crate::smtp::{Mode, Script, SmtpServer, USER};

/// A password that must never show up in a reason or in `Debug`.
const CANARY: &str = "canary-Zx9-hunter2";
const WAIT: Duration = Duration::from_secs(10);

fn config(server_port: u16, tls: SmtpTls, ca: Option<&std::path::Path>) -> EmailConfig {
    EmailConfig {
        host: "localhost".into(),
        port: server_port,
        tls,
        username: Some(USER.into()),
        password: Some(Secret::new(CANARY)),
        from: "Vantage <vantage@example.com>".into(),
        to: vec![
            "ops@example.com".into(),
            "Oncall <oncall@example.org>".into(),
        ],
        ca_file: ca.map(|p| p.to_path_buf()),
        timeout: Duration::from_secs(10),
    }
}

fn channel_for(server: &SmtpServer, tls: SmtpTls) -> EmailChannel {
    EmailChannel::new(
        "mail".into(),
        &config(server.port(), tls, Some(server.ca_file())),
    )
    .unwrap()
}

fn notification() -> Notification {
    Notification {
        id: "homepage/p(95)<500/7/firing".into(),
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
                value: Some(640.5),
                breaching: true,
            },
            RegionValue {
                region: "ap".into(),
                value: Some(320.0),
                breaching: false,
            },
            RegionValue {
                region: "all".into(),
                value: Some(700.0),
                breaching: true,
            },
        ],
        breaching_regions: vec!["eu".into(), "us".into()],
        firing_since_unix_ms: 1_714_564_800_000,
        at_unix_ms: 1_714_565_100_000,
        dashboard_url: Some("https://vantage.example.com/checks/homepage".into()),
        possible_duplicate: false,
    }
}

fn part<'a>(msg: &'a Value, content_type: &str) -> &'a str {
    msg["parts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["content_type"] == content_type)
        .unwrap_or_else(|| panic!("no {content_type} part in {msg:#}"))["body"]
        .as_str()
        .unwrap()
}

/// Asserts the outcome's reason (if any) is free of the password.
fn assert_no_secret(d: &Delivery) {
    let b64 = base64::engine::general_purpose::STANDARD;
    let text = format!("{d:?}");
    for secret in [
        CANARY.to_owned(),
        b64.encode(CANARY),
        b64.encode(format!("\0{USER}\0{CANARY}")),
    ] {
        assert!(!text.contains(&secret), "secret leaked in {text}");
    }
}

fn reason(d: &Delivery) -> &str {
    match d {
        Delivery::Accepted => "",
        Delivery::Retry { reason, .. }
        | Delivery::Permanent { reason }
        | Delivery::Ambiguous { reason } => reason,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_delivery_is_accepted_and_well_formed() {
    let server = SmtpServer::start(Mode::StartTls, CANARY, Script::default());
    let ch = channel_for(&server, SmtpTls::StartTls);
    assert_eq!(ch.kind(), "email");
    assert_eq!(ch.name(), "mail");
    let n = notification();
    let d = ch.send(&n).await;
    assert_eq!(d, Delivery::Accepted, "stderr:\n{}", server.stderr());

    let msgs = server.wait_for(1, WAIT).await;
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert_eq!(m["tls"], true);
    assert_eq!(m["mail_from"], "vantage@example.com");
    assert_eq!(
        m["rcpt_tos"],
        serde_json::json!(["ops@example.com", "oncall@example.org"])
    );
    assert_eq!(m["content_type"], "multipart/alternative");
    assert_eq!(m["subject"], "[FIRING] homepage: p(95)<500");
    assert_eq!(m["message_id"], message_id(&n.id));
    assert_eq!(
        m["message_id"],
        "<homepage=2Fp=2895=29=3C500=2F7=2Ffiring@vantage>"
    );
    assert_eq!(m["notification_id"], n.id);
    assert!(m["from"].as_str().unwrap().contains("vantage@example.com"));
    assert!(m["to"].as_str().unwrap().contains("oncall@example.org"));

    let text = part(m, "text/plain");
    assert!(text.contains("p95 812 ms > 500 ms in eu, us"), "{text}");
    assert!(text.contains("Severity:      critical"), "{text}");
    assert!(text.contains("* eu   812"), "{text}");
    assert!(text.contains("* us   640.5"), "{text}");
    assert!(text.contains("  ap   320"), "{text}");
    assert!(text.contains("* all  700"), "{text}");
    assert!(
        text.contains("Firing since:  2024-05-01T12:00:00Z"),
        "{text}"
    );
    assert!(
        text.contains("At:            2024-05-01T12:05:00Z"),
        "{text}"
    );
    assert!(text.contains("https://vantage.example.com/checks/homepage"));

    let html = part(m, "text/html");
    assert!(html.contains("p95 812 ms &gt; 500 ms in eu, us"), "{html}");
    assert!(html.contains("<strong>eu</strong>"), "{html}");
    assert!(html.contains("<td>ap</td>"), "{html}");
    assert!(html.contains("href=\"https://vantage.example.com/checks/homepage\""));

    // AUTH happened once, after STARTTLS.
    let auths = server.auths();
    assert_eq!(auths.len(), 1, "{auths:?}");
    assert_eq!(auths[0]["ok"], true);
    assert_eq!(auths[0]["tls"], true);
    assert_eq!(auths[0]["login"], USER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_tls_delivery_is_accepted() {
    let server = SmtpServer::start(Mode::Implicit, CANARY, Script::default());
    let ch = channel_for(&server, SmtpTls::Implicit);
    let n = notification();
    assert_eq!(ch.send(&n).await, Delivery::Accepted);
    let msgs = server.wait_for(1, WAIT).await;
    assert_eq!(msgs[0]["tls"], true);
    assert_eq!(msgs[0]["message_id"], message_id(&n.id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_starttls_is_refused_before_any_credentials() {
    let server = SmtpServer::start(Mode::Plain, CANARY, Script::default());
    let ch = channel_for(&server, SmtpTls::StartTls);
    let d = ch.send(&notification()).await;
    // Permanent: a person must fix the server or the path (module docs).
    assert!(matches!(d, Delivery::Permanent { .. }), "{d:?}");
    assert!(reason(&d).contains("STARTTLS"), "{d:?}");
    assert_no_secret(&d);
    assert_eq!(server.connections(), 1);
    assert!(server.auths().is_empty(), "{:?}", server.auths());
    assert!(server.messages().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_not_accepted() {
    for (mode, tls) in [
        (Mode::StartTls, SmtpTls::StartTls),
        (Mode::Implicit, SmtpTls::Implicit),
    ] {
        let server = SmtpServer::start(mode, CANARY, Script::default());
        // No ca_file: the test CA is not among the webpki roots.
        let ch = EmailChannel::new("mail".into(), &config(server.port(), tls, None)).unwrap();
        let d = ch.send(&notification()).await;
        // Retry, like every handshake failure (module docs).
        assert!(matches!(d, Delivery::Retry { .. }), "{tls:?}: {d:?}");
        assert!(
            reason(&d).to_lowercase().contains("certificate"),
            "{tls:?}: {d:?}"
        );
        assert_no_secret(&d);
        assert!(server.auths().is_empty());
        assert!(server.messages().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_4xx_is_retry_and_5xx_is_permanent() {
    let cases = [
        (
            Script {
                fail_rcpt: Some(451),
                ..Script::default()
            },
            "451",
            false,
        ),
        (
            Script {
                fail_rcpt: Some(550),
                ..Script::default()
            },
            "550",
            true,
        ),
        (
            Script {
                fail_data: Some(451),
                ..Script::default()
            },
            "451",
            false,
        ),
        (
            Script {
                fail_data: Some(550),
                ..Script::default()
            },
            "550",
            true,
        ),
    ];
    for (script, code, permanent) in cases {
        let label = format!("{script:?}");
        let server = SmtpServer::start(Mode::StartTls, CANARY, script);
        let ch = channel_for(&server, SmtpTls::StartTls);
        let d = ch.send(&notification()).await;
        if permanent {
            assert!(matches!(d, Delivery::Permanent { .. }), "{label}: {d:?}");
        } else {
            assert!(
                matches!(d, Delivery::Retry { after: None, .. }),
                "{label}: {d:?}"
            );
        }
        assert!(reason(&d).contains(code), "{label}: {d:?}");
        assert_no_secret(&d);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_lost_after_the_data_is_ambiguous_and_not_reused() {
    let server = SmtpServer::start(
        Mode::StartTls,
        CANARY,
        Script {
            drop_after_data: true,
            fail_count: Some(1),
            ..Script::default()
        },
    );
    let ch = channel_for(&server, SmtpTls::StartTls);
    let mut n = notification();
    let d = ch.send(&n).await;
    assert!(matches!(d, Delivery::Ambiguous { .. }), "{d:?}");
    assert_no_secret(&d);
    let msgs = server.wait_for(1, WAIT).await;
    assert_eq!(msgs[0]["dropped"], true);

    // The outbox resends, marked; same Message-ID so the copy can be dropped.
    n.possible_duplicate = true;
    assert_eq!(ch.send(&n).await, Delivery::Accepted);
    let msgs = server.wait_for(2, WAIT).await;
    assert_eq!(msgs[1]["dropped"], false);
    assert_eq!(msgs[0]["message_id"], msgs[1]["message_id"]);
    assert_eq!(
        msgs[1]["subject"],
        "[FIRING] homepage: p(95)<500 (possible duplicate)"
    );
    assert!(part(&msgs[1], "text/plain").contains("possible duplicate"));
    // The broken connection was not reused.
    assert_eq!(server.connections(), 2);
    assert_ne!(msgs[0]["conn"], msgs[1]["conn"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_connections_are_reused_and_failed_ones_are_not() {
    let server = SmtpServer::start(
        Mode::StartTls,
        CANARY,
        Script {
            fail_rcpt: Some(451),
            fail_count: Some(1),
            ..Script::default()
        },
    );
    let ch = channel_for(&server, SmtpTls::StartTls);
    let n = notification();
    assert!(matches!(ch.send(&n).await, Delivery::Retry { .. }));
    assert_eq!(ch.send(&n).await, Delivery::Accepted);
    // lettre parks a connection from a spawned task; give it a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ch.send(&n).await, Delivery::Accepted);
    let msgs = server.wait_for(2, WAIT).await;
    // First connection aborted after the 451; the second carried both mails.
    assert_eq!(server.connections(), 2, "{:#?}", server.events());
    assert_eq!(msgs[0]["conn"], msgs[1]["conn"]);
    assert_eq!(server.auths().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_cut_short_by_the_timeout_is_ambiguous_and_its_pool_is_discarded() {
    let server = SmtpServer::start(
        Mode::StartTls,
        CANARY,
        Script {
            stall_after_data: Some(Duration::from_secs(4)),
            fail_count: Some(1),
            ..Script::default()
        },
    );
    let mut cfg = config(server.port(), SmtpTls::StartTls, Some(server.ca_file()));
    cfg.timeout = Duration::from_millis(1500);
    let ch = EmailChannel::new("mail".into(), &cfg).unwrap();
    let n = notification();
    let start = Instant::now();
    let d = ch.send(&n).await;
    let took = start.elapsed();
    assert!(matches!(d, Delivery::Ambiguous { .. }), "{d:?}");
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    // The next send must not reuse the connection still waiting for its reply.
    assert_eq!(ch.send(&n).await, Delivery::Accepted);
    let msgs = server.wait_for(2, WAIT).await;
    assert_ne!(msgs[0]["conn"], msgs[1]["conn"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_down_is_retry_within_the_timeout() {
    let server = SmtpServer::start(Mode::StartTls, CANARY, Script::default());
    let mut cfg = config(server.port(), SmtpTls::StartTls, Some(server.ca_file()));
    cfg.timeout = Duration::from_secs(3);
    let ch = EmailChannel::new("mail".into(), &cfg).unwrap();
    assert_eq!(ch.send(&notification()).await, Delivery::Accepted);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The pooled connection dies with the server; the port is then closed.
    server.stop();
    for _ in 0..2 {
        let start = Instant::now();
        let d = ch.send(&notification()).await;
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
        assert!(matches!(d, Delivery::Retry { .. }), "{d:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_is_cut_off_at_the_timeout() {
    // Accepts TCP and never says anything, not even the greeting.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let mut cfg = config(port, SmtpTls::Implicit, None);
    cfg.timeout = Duration::from_millis(800);
    let ch = EmailChannel::new("mail".into(), &cfg).unwrap();
    let start = Instant::now();
    let d = ch.send(&notification()).await;
    let took = start.elapsed();
    hold.abort();
    assert!(took < Duration::from_millis(1800), "took {took:?}");
    // lettre cannot say how far the exchange got: conservatively ambiguous.
    assert!(matches!(d, Delivery::Ambiguous { .. }), "{d:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_permanent_and_never_echoed() {
    let server = SmtpServer::start(
        Mode::StartTls,
        "the-right-password",
        Script {
            echo_secrets: true,
            ..Script::default()
        },
    );
    let cfg = config(server.port(), SmtpTls::StartTls, Some(server.ca_file()));
    let ch = EmailChannel::new("mail".into(), &cfg).unwrap();
    let d = ch.send(&notification()).await;
    assert!(matches!(d, Delivery::Permanent { .. }), "{d:?}");
    assert!(reason(&d).contains("535"), "{d:?}");
    // The server quoted the password; the channel redacted it.
    assert!(reason(&d).contains("[redacted]"), "{d:?}");
    assert_no_secret(&d);
    let auths = server.auths();
    assert_eq!(auths.len(), 1);
    assert_eq!(auths[0]["ok"], false);
    assert!(server.messages().is_empty());
    for text in [format!("{ch:?}"), format!("{cfg:?}")] {
        assert!(!text.contains(CANARY), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_text_is_escaped_in_the_html_part() {
    let server = SmtpServer::start(Mode::Implicit, CANARY, Script::default());
    let ch = channel_for(&server, SmtpTls::Implicit);
    let mut n = notification();
    n.subject = "<script>alert('s')</script>".into();
    n.summary = "<script>alert(\"x\")</script> & <img src=x onerror=y>".into();
    n.observed[0].region = "<b>eu</b>".into();
    assert_eq!(ch.send(&n).await, Delivery::Accepted);
    let msgs = server.wait_for(1, WAIT).await;
    let m = &msgs[0];
    // The subject header is plain text: carried as is.
    assert_eq!(
        m["subject"],
        "[FIRING] <script>alert('s')</script>: p(95)<500"
    );
    let html = part(m, "text/html");
    assert!(!html.contains("<script"), "{html}");
    assert!(!html.contains("<img"), "{html}");
    assert!(!html.contains("<b>eu"), "{html}");
    assert!(
        html.contains("&lt;script&gt;alert(&#39;s&#39;)&lt;/script&gt;"),
        "{html}"
    );
    assert!(
        html.contains(
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;img src=x onerror=y&gt;"
        ),
        "{html}"
    );
    let text = part(m, "text/plain");
    assert!(text.contains("<script>alert(\"x\")</script>"), "{text}");
}
