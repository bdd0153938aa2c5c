//! `vantage-agent probe TARGET`: one check, run now, rendered for a human
//! (like `curl -w`) or as a stable JSON object.
//!
//! The target is a URL: `http://…`, `https://…`, `tcp://host:port` or
//! `tls://host:port` (IPv6 as `[::1]:443`). It becomes a [`Check`] through the
//! spec types and runs through [`probe::build`], exactly as an assigned check
//! would.

use std::time::Duration;

use serde::Serialize;
use url::Url;
use vantage_proto::spec::{Check, HttpSpec, ProbeKind, ProbeSpec, TcpSpec, TlsSpec};
use vantage_proto::v1::{ChainStatus, ErrorClass, TlsFacts};

use crate::probe::tcp::url_host;
use crate::probe::{self, error_class_name, ProbeOutcome};

/// Interval of the one-shot check: unused (it runs once), but a check needs
/// a valid one.
const ONESHOT_INTERVAL: Duration = Duration::from_secs(60);

/// Runs one probe of `target` within `timeout`.
///
/// `insecure` accepts an untrusted or wrong-host certificate (its facts are
/// still reported): for `https://` it is the spec's `insecure_skip_verify`;
/// for `tls://`, a completed handshake then counts as success. `ca_file` adds
/// trust anchors (PEM).
///
/// `Err` only for bad input: an unsupported scheme, a missing port, an
/// out-of-range timeout, an unreadable `ca_file`. A failing target is an
/// `Ok` outcome with an error.
pub async fn probe_url(
    target: &str,
    timeout: Duration,
    insecure: bool,
    ca_file: Option<String>,
) -> Result<ProbeOutcome, String> {
    let check = check_for(target, timeout, insecure, ca_file)?;
    let problems = check.validate();
    if !problems.is_empty() {
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        return Err(text.join("; "));
    }
    // The operator's own command: no egress policy (it guards what the
    // coordinator assigns).
    let egress = std::sync::Arc::new(crate::egress::EgressPolicy::unrestricted());
    let probe = probe::build(&check, &egress).map_err(|e| e.to_string())?;
    let mut outcome = probe.run().await;
    if insecure && check.probe.kind() == ProbeKind::Tls {
        accept_untrusted(&mut outcome);
    }
    Ok(outcome)
}

/// The check for a target URL.
fn check_for(
    target: &str,
    timeout: Duration,
    insecure: bool,
    ca_file: Option<String>,
) -> Result<Check, String> {
    let url = Url::parse(target).map_err(|e| format!("{}: {e}", redact_target(target)))?;
    let probe = match url.scheme() {
        "http" | "https" => ProbeSpec::Http(HttpSpec {
            ca_file,
            insecure_skip_verify: insecure,
            ..HttpSpec::get(url)
        }),
        "tcp" => {
            let (host, port) = host_port(&url)?;
            ProbeSpec::Tcp(TcpSpec { host, port })
        }
        "tls" => {
            let (host, port) = host_port(&url)?;
            ProbeSpec::Tls(TlsSpec {
                host,
                port,
                server_name: None,
                ca_file,
            })
        }
        other => {
            return Err(format!(
                "scheme {other:?} is not supported: use http://, https://, tcp://host:port or tls://host:port"
            ))
        }
    };
    Ok(Check {
        name: "probe".into(),
        interval: ONESHOT_INTERVAL,
        timeout,
        probe,
    })
}

/// Host and port of a `tcp://host:port` or `tls://host:port` target.
fn host_port(url: &Url) -> Result<(String, u16), String> {
    let scheme = url.scheme();
    let usage = || format!("use {scheme}://host:port");
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("a {scheme} target takes no user name: {}", usage()));
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "a {scheme} target takes no path or query: {}",
            usage()
        ));
    }
    let host = url_host(url).ok_or_else(|| format!("the target has no host: {}", usage()))?;
    let port = url
        .port()
        .ok_or_else(|| format!("the target has no port: {}", usage()))?;
    Ok((host, port))
}

/// `--insecure` for a `tls://` target: a completed handshake (facts present)
/// is a success even when the certificate would not be trusted.
fn accept_untrusted(outcome: &mut ProbeOutcome) {
    let tls_failure = outcome
        .error
        .as_ref()
        .is_some_and(|e| e.class == ErrorClass::Tls);
    if tls_failure && outcome.tls.is_some() {
        outcome.error = None;
    }
}

/// The outcome as text, one `label value` per line, like `curl -w`.
pub fn render(outcome: &ProbeOutcome, target: &str) -> String {
    let mut lines: Vec<(&str, String)> = vec![("target", redact_target(target))];
    lines.push((
        "result",
        match &outcome.error {
            None => "ok".into(),
            Some(e) => format!("FAILED {e}"),
        },
    ));
    if let Some(status) = outcome.status {
        lines.push(("status", status.to_string()));
    }
    if let Some(version) = &outcome.http_version {
        lines.push(("http version", version.clone()));
    }
    if let Some(url) = &outcome.final_url {
        lines.push(("redirects", outcome.redirects.to_string()));
        lines.push(("final url", url.clone()));
    }
    let phases = &outcome.phases;
    for (name, phase) in [
        ("dns", phases.dns),
        ("connect", phases.connect),
        ("tls", phases.tls),
        ("waiting", phases.waiting),
        ("total", Some(phases.total)),
    ] {
        let value = phase.map_or_else(|| "-".to_owned(), |d| format!("{:.3} ms", millis(d)));
        lines.push((name, value));
    }
    if let Some(facts) = &outcome.tls {
        lines.extend(tls_lines(facts));
    }
    let mut text = String::new();
    for (label, value) in lines {
        text.push_str(&format!("{label:<16}{value}\n"));
    }
    text
}

fn tls_lines(facts: &TlsFacts) -> Vec<(&'static str, String)> {
    let mut lines = vec![
        ("tls subject", facts.subject.clone()),
        ("tls issuer", facts.issuer.clone()),
        ("tls sans", facts.sans.join(", ")),
        (
            "tls san match",
            if facts.san_match { "yes" } else { "no" }.into(),
        ),
        ("tls chain", chain_status_name(facts.chain_status()).into()),
        ("tls days left", facts.days_left.to_string()),
        ("tls not after", probe::tls::rfc3339(facts.not_after_unix)),
        ("tls protocol", facts.protocol_version.clone()),
    ];
    if !facts.verify_error.is_empty() {
        lines.push(("tls error", facts.verify_error.clone()));
    }
    lines
}

/// The outcome as one JSON object. Keys (stable): `target`, `success`,
/// `error` (`{class, message}` or null), `status`, `http_version`,
/// `phases_ms` (`dns`, `connect`, `tls`, `waiting` — null when the phase did
/// not happen — and `total`), `redirects`, `final_url`, `tls` (the facts, with
/// `chain_status` as a lower-case name, or null).
pub fn render_json(outcome: &ProbeOutcome, target: &str) -> String {
    let phases = &outcome.phases;
    let report = JsonReport {
        target: redact_target(target),
        success: outcome.is_success(),
        error: outcome.error.as_ref().map(|e| JsonError {
            class: error_class_name(e.class),
            message: &e.message,
        }),
        status: outcome.status,
        http_version: outcome.http_version.as_deref(),
        phases_ms: JsonPhases {
            dns: phases.dns.map(millis),
            connect: phases.connect.map(millis),
            tls: phases.tls.map(millis),
            waiting: phases.waiting.map(millis),
            total: millis(phases.total),
        },
        redirects: outcome.redirects,
        final_url: outcome.final_url.as_deref(),
        tls: outcome.tls.as_ref().map(|f| JsonTls {
            days_left: f.days_left,
            not_after_unix: f.not_after_unix,
            subject: &f.subject,
            issuer: &f.issuer,
            sans: &f.sans,
            san_match: f.san_match,
            chain_status: chain_status_name(f.chain_status()),
            chain_earliest_not_after_unix: f.chain_earliest_not_after_unix,
            protocol_version: &f.protocol_version,
            verify_error: &f.verify_error,
        }),
    };
    // Serializing plain structs of strings and numbers cannot fail; keep the
    // output JSON even if it somehow did.
    serde_json::to_string(&report)
        .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string())
}

#[derive(Serialize)]
struct JsonReport<'a> {
    target: String,
    success: bool,
    error: Option<JsonError<'a>>,
    status: Option<u16>,
    http_version: Option<&'a str>,
    phases_ms: JsonPhases,
    redirects: u32,
    final_url: Option<&'a str>,
    tls: Option<JsonTls<'a>>,
}

#[derive(Serialize)]
struct JsonError<'a> {
    class: &'static str,
    message: &'a str,
}

#[derive(Serialize)]
struct JsonPhases {
    dns: Option<f64>,
    connect: Option<f64>,
    tls: Option<f64>,
    waiting: Option<f64>,
    total: f64,
}

#[derive(Serialize)]
struct JsonTls<'a> {
    days_left: i64,
    not_after_unix: i64,
    subject: &'a str,
    issuer: &'a str,
    sans: &'a [String],
    san_match: bool,
    chain_status: &'static str,
    chain_earliest_not_after_unix: i64,
    protocol_version: &'a str,
    verify_error: &'a str,
}

/// Milliseconds, to the microsecond.
fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// Lower-case name of a chain status (also the audit's `tls` evidence).
pub(crate) fn chain_status_name(status: ChainStatus) -> &'static str {
    match status {
        ChainStatus::Unspecified => "unspecified",
        ChainStatus::Valid => "valid",
        ChainStatus::Expired => "expired",
        ChainStatus::NotYetValid => "not_yet_valid",
        ChainStatus::UnknownIssuer => "unknown_issuer",
        ChainStatus::SelfSigned => "self_signed",
        ChainStatus::NameMismatch => "name_mismatch",
        ChainStatus::Revoked => "revoked",
        ChainStatus::Invalid => "invalid",
    }
}

/// The target as given, minus credentials (`user:password@`), also when it
/// does not parse as a URL.
fn redact_target(target: &str) -> String {
    match Url::parse(target) {
        Ok(url) if !url.username().is_empty() || url.password().is_some() => {
            probe::http::redact(&url)
        }
        Ok(_) => target.to_owned(),
        Err(_) => {
            let Some(start) = target.find("://").map(|i| i + 3) else {
                return target.to_owned();
            };
            let rest = &target[start..];
            let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{}{}", &target[..start], &rest[at + 1..]),
                None => target.to_owned(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::testkit::{self, CaServer, ServerCert, Validity};

    const TIMEOUT: Duration = Duration::from_secs(5);

    fn json(outcome: &ProbeOutcome, target: &str) -> serde_json::Value {
        serde_json::from_str(&render_json(outcome, target)).expect("valid JSON")
    }

    #[tokio::test]
    async fn http_text_and_json() {
        let addr = testkit::http_server().await;
        let target = format!("http://{addr}/health");
        let out = probe_url(&target, TIMEOUT, false, None).await.unwrap();
        assert!(out.is_success());
        let text = render(&out, &target);
        assert!(text.starts_with(&format!("target          {target}\nresult          ok\n")));
        assert!(text.contains("status          200\n"), "{text}");
        assert!(text.contains("http version    HTTP/1.1\n"), "{text}");
        assert!(text.contains("dns             -\n"), "{text}");
        for phase in ["connect", "waiting", "total"] {
            assert!(
                text.lines()
                    .any(|l| l.starts_with(phase) && l.ends_with(" ms")),
                "{phase}: {text}"
            );
        }

        let v = json(&out, &target);
        assert_eq!(v["target"], target);
        assert_eq!(v["success"], true);
        assert_eq!(v["error"], serde_json::Value::Null);
        assert_eq!(v["status"], 200);
        assert_eq!(v["http_version"], "HTTP/1.1");
        assert_eq!(v["redirects"], 0);
        assert_eq!(v["final_url"], target);
        assert_eq!(v["tls"], serde_json::Value::Null);
        assert_eq!(v["phases_ms"]["dns"], serde_json::Value::Null);
        assert!(v["phases_ms"]["connect"].as_f64().unwrap() > 0.0);
        assert!(
            v["phases_ms"]["total"].as_f64().unwrap()
                >= v["phases_ms"]["waiting"].as_f64().unwrap()
        );
    }

    #[tokio::test]
    async fn a_refused_tcp_port_fails_with_class_connect() {
        let addr = testkit::closed_port().await;
        let target = format!("tcp://{addr}");
        let out = probe_url(&target, TIMEOUT, false, None).await.unwrap();
        assert!(!out.is_success());
        assert!(render(&out, &target).contains("result          FAILED connect: "));
        let v = json(&out, &target);
        assert_eq!(v["success"], false);
        assert_eq!(v["error"]["class"], "connect");
        assert_eq!(v["status"], serde_json::Value::Null);
    }

    /// The case of the CLI test: a self-signed certificate for localhost
    /// (CN expired.localhost) that expired 10 days and 1 hour ago.
    #[tokio::test]
    async fn expired_certificate_facts_are_reported() {
        let cert = ServerCert::self_signed("expired.localhost", &["localhost"], Validity::Expired);
        let addr = testkit::https_server(cert).await;
        let target = format!("tls://localhost:{}", addr.port());
        let out = probe_url(&target, TIMEOUT, false, None).await.unwrap();
        assert!(!out.is_success());
        let v = json(&out, &target);
        assert_eq!(v["error"]["class"], "tls");
        let tls = &v["tls"];
        assert_eq!(tls["days_left"], -11);
        assert_eq!(tls["chain_status"], "expired");
        assert_eq!(tls["subject"], "CN=expired.localhost");
        assert_eq!(tls["san_match"], true);
        assert_eq!(tls["sans"], serde_json::json!(["localhost"]));
        assert!(tls["verify_error"].as_str().unwrap().contains("expired on"));
        assert_eq!(tls["protocol_version"], "TLSv1.3");
        assert!(tls["not_after_unix"].as_i64().unwrap() > 0);

        let text = render(&out, &target);
        assert!(text.contains("tls days left   -11\n"), "{text}");
        assert!(text.contains("tls chain       expired\n"), "{text}");
        assert!(
            text.contains("tls subject     CN=expired.localhost\n"),
            "{text}"
        );
        let not_after = crate::probe::tls::rfc3339(tls["not_after_unix"].as_i64().unwrap());
        assert!(
            text.contains(&format!("tls not after   {not_after}\n")),
            "{text}"
        );

        // --insecure: the completed handshake is enough, facts still there.
        let out = probe_url(&target, TIMEOUT, true, None).await.unwrap();
        assert!(out.is_success());
        assert_eq!(json(&out, &target)["tls"]["days_left"], -11);
    }

    #[tokio::test]
    async fn https_with_a_ca_file() {
        let server = CaServer::start(&["localhost"], Validity::Current).await;
        let target = format!("https://localhost:{}/", server.port());
        let out = probe_url(&target, TIMEOUT, false, server.ca_file())
            .await
            .unwrap();
        assert!(out.is_success(), "{:?}", out.error);
        let v = json(&out, &target);
        assert_eq!(v["http_version"], "HTTP/2");
        assert_eq!(v["tls"]["chain_status"], "valid");
        assert!(v["phases_ms"]["tls"].as_f64().is_some());

        let out = probe_url(&target, TIMEOUT, false, None).await.unwrap();
        assert_eq!(json(&out, &target)["tls"]["chain_status"], "unknown_issuer");
    }

    #[tokio::test]
    async fn bad_input_is_an_error() {
        let cases = [
            ("ftp://example.test/", "not supported"),
            ("example.test:443", "not supported"),
            ("tcp://example.test", "no port"),
            ("tls://example.test:443/path", "no path"),
            ("tcp://user@example.test:1", "no user name"),
            ("not a url", "relative URL"),
        ];
        for (target, expected) in cases {
            let err = probe_url(target, TIMEOUT, false, None).await.unwrap_err();
            assert!(err.contains(expected), "{target}: {err}");
        }
        let err = probe_url(
            "tls://localhost:443",
            TIMEOUT,
            false,
            Some("/nonexistent.pem".into()),
        )
        .await
        .unwrap_err();
        assert!(err.contains("/nonexistent.pem"), "{err}");
        let err = probe_url("tcp://localhost:1", Duration::from_secs(3600), false, None)
            .await
            .unwrap_err();
        assert!(err.starts_with("timeout:"), "{err}");
    }

    #[test]
    fn targets_become_checks() {
        let check = check_for("tcp://[::1]:5432", TIMEOUT, false, None).unwrap();
        assert_eq!(
            check.probe,
            ProbeSpec::Tcp(TcpSpec {
                host: "::1".into(),
                port: 5432
            })
        );
        let check =
            check_for("tls://10.0.0.1:443/", TIMEOUT, false, Some("ca.pem".into())).unwrap();
        assert_eq!(
            check.probe,
            ProbeSpec::Tls(TlsSpec {
                host: "10.0.0.1".into(),
                port: 443,
                server_name: None,
                ca_file: Some("ca.pem".into()),
            })
        );
        let check = check_for("https://example.test/x", TIMEOUT, true, None).unwrap();
        let ProbeSpec::Http(http) = check.probe else {
            panic!("http")
        };
        assert!(http.insecure_skip_verify);
        assert_eq!(check.timeout, TIMEOUT);
    }

    #[test]
    fn targets_are_shown_without_credentials() {
        assert_eq!(
            redact_target("https://user:pw@example.test/a"),
            "https://example.test/a"
        );
        assert_eq!(redact_target("http://u:p@[bad/x"), "http://[bad/x");
        assert_eq!(redact_target("tcp://host:1"), "tcp://host:1");
        assert_eq!(redact_target("no scheme"), "no scheme");
        let err = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(probe_url(
                "ftp://user:secret@example.test/",
                TIMEOUT,
                false,
                None,
            ))
            .unwrap_err();
        assert!(!err.contains("secret"), "{err}");
    }
}
