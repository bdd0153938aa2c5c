//! The config loader against fixtures, the shipped examples and arbitrary input.
//!
//! `tests/config/bad/NAME.toml` must fail with exactly the lines in
//! `tests/config/bad/NAME.expected` (errors are printed with the origin
//! `NAME.toml`, so the files do not depend on where the tests run). After a
//! deliberate change of messages, regenerate the expected files with
//!
//! ```sh
//! VANTAGE_BLESS=1 cargo test -p vantage-coordinator --test it config::
//! ```
//!
//! and review the diff before committing it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use proptest::prelude::*;
use vantage_coordinator::config::{self, ConfigError, ConfigErrors, ServerConfig};
use vantage_proto::spec::{
    self, AuthRequiredSpec, CorsSpec, EmailDnsSpec, ExposedSecretsSpec, HeadersSpec, HttpSpec,
    ProbeKind, ProbeSpec, RateLimitSpec, RedirectSpec, TcpSpec, TlsSpec,
};

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture_dir(kind: &str) -> PathBuf {
    manifest_dir().join("tests/config").join(kind)
}

/// Files in `dir` ending in `.ext`, sorted.
fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    out.sort();
    out
}

fn file_name(p: &Path) -> &str {
    p.file_name().unwrap().to_str().unwrap()
}

fn parse(text: &str) -> Result<config::Config, ConfigErrors> {
    config::parse(text, Path::new("t.toml"))
}

#[test]
fn bad_fixtures_fail_with_exactly_the_expected_errors() {
    let dir = fixture_dir("bad");
    let bless = std::env::var_os("VANTAGE_BLESS").is_some_and(|v| v == "1");
    let fixtures = files(&dir, "toml");
    assert!(fixtures.len() >= 25, "only {} bad fixtures", fixtures.len());

    let mut failures = Vec::new();
    for path in &fixtures {
        let name = file_name(path);
        let text = std::fs::read_to_string(path).unwrap();
        let actual = match config::parse(&text, Path::new(name)) {
            Ok(_) => {
                failures.push(format!("{name}: parsed without errors"));
                continue;
            }
            Err(errors) => format!("{errors}\n"),
        };
        let expected_path = path.with_extension("expected");
        if bless {
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        match std::fs::read_to_string(&expected_path) {
            Ok(expected) if expected == actual => {}
            Ok(expected) => failures.push(format!(
                "{name}: errors differ\n--- expected\n{expected}+++ actual\n{actual}"
            )),
            Err(e) => failures.push(format!(
                "{name}: no {} ({e}); run with VANTAGE_BLESS=1 to create it\n{actual}",
                file_name(&expected_path)
            )),
        }
    }
    for expected in files(&dir, "expected") {
        if !expected.with_extension("toml").exists() {
            failures.push(format!("{}: no matching .toml", file_name(&expected)));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// The example other modules' tests rely on (see the config issue).
#[test]
fn unknown_check_key_points_at_the_key_and_suggests() {
    let text = "version = 1\n\n[[check]]\nname = \"web\"\nkind = \"http\"\nregions = [\"eu\"]\n\
                url = \"https://example.test/\"\nintervall = \"10s\"\n";
    let errors = config::parse(text, Path::new("bad.toml")).unwrap_err();
    let shown = errors.to_string();
    assert_eq!(errors.0.len(), 1, "{shown}");
    assert!(shown.contains("bad.toml:8:1"), "{shown}");
    assert!(shown.contains("check[0].intervall"), "{shown}");
    assert!(shown.contains("unknown"), "{shown}");
    assert!(shown.contains("did you mean `interval`?"), "{shown}");
    let e = &errors.0[0];
    assert_eq!(
        (e.line, e.column, e.path.as_str()),
        (8, 1, "check[0].intervall")
    );
}

#[test]
fn every_ok_fixture_loads() {
    let fixtures = files(&fixture_dir("ok"), "toml");
    assert!(fixtures.len() >= 4);
    for path in fixtures {
        if let Err(e) = config::load(&path) {
            panic!("{}:\n{e}", path.display());
        }
    }
}

#[test]
fn minimal_config_gets_every_default() {
    let path = fixture_dir("ok").join("minimal.toml");
    let cfg = config::load(&path).unwrap();
    assert_eq!(cfg.origin, path);
    assert!(cfg.checks.is_empty());
    let want = ServerConfig {
        grpc_listen: "127.0.0.1:7070".parse().unwrap(),
        http_listen: "127.0.0.1:7080".parse().unwrap(),
        data_dir: fixture_dir("ok").join("vantage-data"),
        window: Duration::from_secs(10),
        cache_capacity_bytes: 64 * 1024 * 1024,
        raw_retention: Duration::from_secs(48 * 3600),
        tls: None,
    };
    assert_eq!(cfg.server, want);
    assert_eq!(
        ServerConfig::default(),
        ServerConfig {
            data_dir: "vantage-data".into(),
            ..want
        }
    );
}

#[test]
fn tcp_check_with_host_port_regions_parses() {
    let cfg = config::load(&fixture_dir("ok").join("tcp.toml")).unwrap();
    assert_eq!(cfg.checks.len(), 1);
    let c = &cfg.checks[0];
    assert_eq!(c.check.name, "db");
    assert_eq!(c.regions, ["eu"]);
    assert_eq!(c.check.interval, Duration::from_secs(30));
    assert_eq!(c.check.timeout, Duration::from_secs(10));
    assert_eq!(
        c.check.probe,
        ProbeSpec::Tcp(TcpSpec {
            host: "db.example.com".into(),
            port: 5432
        })
    );
}

/// One table per audit kind; the keys left out get the one-shot audit's
/// defaults (`vantage-agent audit`).
#[test]
fn audit_kinds_parse_with_the_audit_defaults() {
    let cfg = config::load(&fixture_dir("ok").join("audit.toml")).unwrap();
    let kinds: Vec<_> = cfg.checks.iter().map(|c| c.check.probe.kind()).collect();
    let audit_kinds: Vec<_> = ProbeKind::ALL
        .into_iter()
        .filter(|k| k.is_audit())
        .collect();
    assert_eq!(kinds, audit_kinds);
    let url = |s: &str| url::Url::parse(s).unwrap();
    let probes: Vec<_> = cfg.checks.iter().map(|c| c.check.probe.clone()).collect();
    assert_eq!(
        probes,
        [
            ProbeSpec::Redirect(RedirectSpec {
                url: url("https://www.example.com/"),
                http_port: 80,
                aliases: vec!["example.com".into()],
                max_hops: 5,
                ca_file: None,
            }),
            ProbeSpec::Headers(HeadersSpec {
                url: url("https://example.com/"),
                hsts_min_max_age: 31_536_000,
                hsts_include_subdomains: true,
                ca_file: None,
            }),
            ProbeSpec::Cors(CorsSpec {
                url: url("https://api.example.com/v1/me"),
                hostile_origin: "https://evil.example".into(),
                ca_file: None,
            }),
            ProbeSpec::AuthRequired(AuthRequiredSpec {
                url: url("https://example.com/"),
                paths: vec!["/admin".into(), "/api/account".into()],
                method: "GET".into(),
                ca_file: None,
            }),
            ProbeSpec::RateLimit(RateLimitSpec {
                url: url("https://example.com/api/login"),
                method: "POST".into(),
                body: Some(spec::DEFAULT_LOGIN_BODY.into()),
                content_type: Some("application/json".into()),
                max_requests: 30,
                within: Duration::from_secs(15),
                ca_file: None,
            }),
            ProbeSpec::EmailDns(EmailDnsSpec {
                domain: "example.com".into(),
                dkim_selectors: vec!["google".into()],
                dns_server: Some("1.1.1.1".into()),
            }),
            ProbeSpec::ExposedSecrets(ExposedSecretsSpec {
                url: url("https://example.com/"),
                max_files: 50,
                max_file_bytes: 5 * 1024 * 1024,
                ca_file: None,
            }),
        ]
    );

    // A rate_limit check without interval or within gets 1m and min(10s, timeout).
    let text = "version = 1\n[[check]]\nname = \"l\"\nkind = \"rate_limit\"\n\
                url = \"https://example.com/login\"\ntimeout = \"4s\"\nregions = [\"eu\"]\n";
    let cfg = parse(text).unwrap();
    let c = &cfg.checks[0].check;
    assert_eq!(c.interval, Duration::from_secs(60));
    let ProbeSpec::RateLimit(r) = &c.probe else {
        panic!("{c:?}")
    };
    assert_eq!((r.within, r.max_requests), (Duration::from_secs(4), 20));
}

#[test]
fn full_config_keeps_every_value() {
    let cfg = config::load(&fixture_dir("ok").join("full.toml")).unwrap();
    let s = &cfg.server;
    assert_eq!(s.grpc_listen, "0.0.0.0:9000".parse().unwrap());
    assert_eq!(s.http_listen, "[::1]:9001".parse().unwrap());
    assert_eq!(s.data_dir, fixture_dir("ok").join("state/sled"));
    assert_eq!(s.window, Duration::from_secs(90));
    assert_eq!(s.cache_capacity_bytes, 128 * 1024 * 1024);
    assert_eq!(
        s.raw_retention,
        Duration::from_secs(7 * 24 * 3600 + 12 * 3600)
    );
    assert_eq!(
        s.tls,
        Some(config::TlsFiles {
            cert_file: fixture_dir("ok").join("tls/coordinator.crt"),
            key_file: fixture_dir("ok").join("tls/coordinator.key"),
            client_ca_file: Some(fixture_dir("ok").join("tls/agents-ca.pem")),
        })
    );
    let agents: Vec<_> = cfg
        .agents
        .iter()
        .map(|a| (a.name.as_str(), a.region.as_deref(), a.sha256.len()))
        .collect();
    assert_eq!(
        agents,
        [
            ("eu-1", Some("eu"), 2),
            ("us-1", None, 1),
            ("ap-1", Some("ap"), 0)
        ]
    );
    assert_eq!(
        cfg.agents[0].sha256[1],
        vantage_coordinator::api::auth::digest("next-token")
    );

    let names: Vec<_> = cfg.checks.iter().map(|c| c.check.name.as_str()).collect();
    assert_eq!(names, ["api", "fast", "db", "cert"]);

    let api = &cfg.checks[0];
    assert_eq!(api.regions, ["eu", "us"]);
    assert_eq!(api.check.interval, Duration::from_secs(60));
    assert_eq!(api.check.timeout, Duration::from_secs(2));
    assert_eq!(
        api.check.probe,
        ProbeSpec::Http(HttpSpec {
            url: "https://api.example.com/v1/health".parse().unwrap(),
            method: "POST".into(),
            headers: vec![
                ("X-Probe".into(), "vantage".into()),
                ("Accept".into(), "application/json".into())
            ],
            expect_status: vec![200, 204],
            body_contains: Some("ok".into()),
            follow_redirects: false,
            max_redirects: 20,
            ca_file: Some("/etc/vantage/ca.pem".into()),
            insecure_skip_verify: true,
        })
    );

    // Defaults of an http check; timeout = min(10s, interval).
    let fast = &cfg.checks[1];
    assert_eq!(fast.check.interval, Duration::from_millis(500));
    assert_eq!(fast.check.timeout, Duration::from_millis(500));
    assert_eq!(
        fast.check.probe,
        ProbeSpec::Http(HttpSpec::get("http://example.com/".parse().unwrap()))
    );

    let cert = &cfg.checks[3];
    assert_eq!(cert.check.timeout, Duration::from_secs(120));
    assert_eq!(
        cert.check.probe,
        ProbeSpec::Tls(TlsSpec {
            host: "203.0.113.7".into(),
            port: 8443,
            server_name: Some("example.com".into()),
            ca_file: Some("/etc/vantage/ca.pem".into()),
        })
    );
}

#[test]
fn inline_array_of_checks_is_accepted() {
    let cfg = config::load(&fixture_dir("ok").join("inline_checks.toml")).unwrap();
    assert_eq!(cfg.checks.len(), 1);
    assert_eq!(cfg.checks[0].check.name, "db");
}

#[test]
fn data_dir_is_relative_to_the_config_files_directory() {
    let with = |dir: &str, origin: &str| {
        let text = format!("version = 1\n[server]\ndata_dir = {dir:?}\n");
        config::parse(&text, Path::new(origin))
            .unwrap()
            .server
            .data_dir
    };
    assert_eq!(
        with("state", "/etc/vantage/c.toml"),
        Path::new("/etc/vantage/state")
    );
    assert_eq!(
        with("/var/lib/v", "/etc/vantage/c.toml"),
        Path::new("/var/lib/v")
    );
    assert_eq!(with("state", "c.toml"), Path::new("state"));
    assert_eq!(with("../s", "conf/c.toml"), Path::new("conf/../s"));
    let default = config::parse("version = 1", Path::new("/etc/v/c.toml")).unwrap();
    assert_eq!(default.server.data_dir, Path::new("/etc/v/vantage-data"));
}

#[test]
fn timeout_defaults_to_the_smaller_of_10s_and_the_interval() {
    let timeout = |interval: &str| {
        let text = format!(
            "version = 1\n[[check]]\nname = \"t\"\nkind = \"tcp\"\nhost = \"h\"\nport = 1\n\
             regions = [\"eu\"]\n{interval}"
        );
        parse(&text).unwrap().checks[0].check.timeout
    };
    assert_eq!(timeout(""), Duration::from_secs(10));
    assert_eq!(timeout("interval = \"1m\""), Duration::from_secs(10));
    assert_eq!(timeout("interval = \"3s\""), Duration::from_secs(3));
    assert_eq!(timeout("interval = \"200ms\""), Duration::from_millis(200));
}

/// The secrets `deploy/examples/coordinator.toml` reads from the environment.
const EXAMPLE_SECRETS: &[(&str, &str)] = &[
    ("VANTAGE_SLACK_WEBHOOK", "http://127.0.0.1:9/canary-slack"),
    ("VANTAGE_SMTP_PASSWORD", "canary-password"),
    (
        "VANTAGE_INCIDENT_HOOK_URL",
        "http://127.0.0.1:9/canary-hook",
    ),
];

/// Parses `text` with `{ env = ... }` secrets rewritten to files holding the
/// example values (the test process's own environment is shared by every
/// test thread, so it is not changed).
fn parse_with_secrets(text: &str) -> config::Config {
    let dir = tempfile::tempdir().unwrap();
    let mut text = text.to_owned();
    for (name, value) in EXAMPLE_SECRETS {
        let file = dir.path().join(name);
        std::fs::write(&file, value).unwrap();
        text = text.replace(
            &format!("{{ env = \"{name}\" }}"),
            &format!("{{ file = {:?} }}", file.display().to_string()),
        );
    }
    config::parse(&text, &dir.path().join("coordinator.toml")).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_deploy_example_parses() {
    let dir = manifest_dir().join("../deploy/examples");
    let examples = files(&dir, "toml");
    let names: Vec<_> = examples.iter().map(|p| file_name(p)).collect();
    assert!(names.contains(&"coordinator.toml"), "{names:?}");
    assert!(names.contains(&"demo.toml"), "{names:?}");
    // The common cases the README's Deploy section points to.
    for case in [
        "site-monitoring.toml",
        "api-slo.toml",
        "certificates.toml",
        "launch-audit.toml",
    ] {
        assert!(names.contains(&case), "{case} missing: {names:?}");
    }
    // The real binary, so the secrets the examples read from the environment
    // can be given to it alone.
    for path in &examples {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vantage-coordinator"))
            .arg("validate")
            .arg(path)
            .envs(EXAMPLE_SECRETS.iter().copied())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} does not validate:\n{}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Without them, the error names the variable and never a value.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vantage-coordinator"))
        .arg("validate")
        .arg(dir.join("coordinator.toml"))
        .envs(
            EXAMPLE_SECRETS
                .iter()
                .copied()
                .filter(|(k, _)| *k != "VANTAGE_SMTP_PASSWORD"),
        )
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains("channel[1].password: environment variable VANTAGE_SMTP_PASSWORD is not set"),
        "{err}"
    );
    assert!(!err.contains("canary"), "{err}");
    // The example covers every kind over two regions.
    let text = std::fs::read_to_string(dir.join("coordinator.toml")).unwrap();
    let cfg = parse_with_secrets(&text);
    let kinds: std::collections::BTreeSet<_> = cfg
        .checks
        .iter()
        .map(|c| c.check.probe.kind().as_str())
        .collect();
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["http", "tcp", "tls"]
    );
    // Its alerting keys.
    let check = |name: &str| cfg.checks.iter().find(|c| c.check.name == name).unwrap();
    let rules = |name: &str| -> Vec<String> {
        check(name)
            .alerting
            .rules
            .iter()
            .map(|r| r.name().to_owned())
            .collect()
    };
    assert_eq!(rules("homepage"), ["down", "p(95)<800", "rate<0.05"]);
    assert_eq!(check("homepage").alerting.quorum, 2);
    assert_eq!(check("homepage").alerting.channels, None);
    assert_eq!(check("api-health").alerting.quorum, 1);
    assert_eq!(
        check("api-health").alerting.channels.as_deref(),
        Some(&["oncall-mail".to_owned()][..])
    );
    assert_eq!(
        rules("origin-cert"),
        ["down", "days_left>=30", "days_left>=7"]
    );
    assert_eq!(
        rules("homepage-cert"),
        ["down", "days_left>=21", "days_left>=7"]
    );
    assert_eq!(check("postgres").alerting.quorum, 1, "one region");
    let kinds: Vec<_> = cfg.channels.iter().map(|c| c.kind.as_str()).collect();
    assert_eq!(kinds, ["slack", "email", "webhook"]);
    assert!(
        !format!("{cfg:?}").contains("canary"),
        "secrets are redacted in Debug"
    );
    assert_eq!(cfg.maintenance.len(), 1);
    assert_eq!(
        cfg.alerting.dashboard_url.as_deref(),
        Some("https://vantage.example.com/")
    );
}

#[test]
fn load_reports_unreadable_files_without_a_position() {
    let missing = Path::new("/nonexistent/vantage/coordinator.toml");
    let errors = config::load(missing).unwrap_err();
    assert_eq!(errors.0.len(), 1);
    let e = &errors.0[0];
    assert_eq!((e.line, e.column, e.path.as_str()), (0, 0, ""));
    assert!(
        e.to_string()
            .starts_with("/nonexistent/vantage/coordinator.toml: cannot open the config file: "),
        "{e}"
    );

    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("c.toml");
    std::fs::write(&binary, b"version = 1\n\xff\xfe\n").unwrap();
    let errors = config::load(&binary).unwrap_err();
    assert!(
        errors.0[0]
            .message
            .starts_with("the file is not UTF-8 text"),
        "{errors}"
    );

    // A directory is not a file either.
    assert_eq!(config::load(dir.path()).unwrap_err().0.len(), 1);
}

#[test]
fn error_lines_have_the_documented_format() {
    let e = |line, column, path: &str| ConfigError {
        origin: "conf/c.toml".into(),
        line,
        column,
        path: path.into(),
        message: "msg".into(),
    };
    let errors = ConfigErrors(vec![e(3, 7, "check[2].url"), e(1, 2, ""), e(0, 0, "")]);
    assert_eq!(
        errors.to_string(),
        "conf/c.toml:3:7: check[2].url: msg\nconf/c.toml:1:2: msg\nconf/c.toml: msg"
    );
    let _: &dyn std::error::Error = &errors;
}

#[test]
fn errors_come_in_file_order_and_all_of_them() {
    let text = "version = 3\n[server]\nwindow = 5\n[[check]]\nname = \"x\"\n";
    let errors = parse(text).unwrap_err();
    let at: Vec<_> = errors.0.iter().map(|e| (e.line, e.path.as_str())).collect();
    assert_eq!(
        at,
        [
            (1, "version"),
            (3, "server.window"),
            (4, "check[0].kind"),
            (4, "check[0].regions"),
        ]
    );
}

/// A valid file to mutate; every kind and most keys.
const VALID: &str = include_str!("../config/ok/full.toml");

/// One edit of a text: (position seed, kind, inserted text).
type Edit = (usize, u8, String);

fn mutate(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for (seed, kind, insert) in edits {
        let at = seed % (chars.len() + 1);
        match kind % 4 {
            // Insert a snippet.
            0 => {
                chars.splice(at..at, insert.chars());
            }
            // Delete a short run.
            1 => {
                let end = (at + insert.len() % 8 + 1).min(chars.len());
                chars.drain(at..end);
            }
            // Replace one character.
            2 => {
                if at < chars.len() {
                    chars[at] = insert.chars().next().unwrap_or('"');
                }
            }
            // Duplicate the line around `at` (duplicate keys, tables).
            _ => {
                let start = chars[..at]
                    .iter()
                    .rposition(|c| *c == '\n')
                    .map_or(0, |i| i + 1);
                let end = chars[at..]
                    .iter()
                    .position(|c| *c == '\n')
                    .map_or(chars.len(), |i| at + i + 1);
                let line: Vec<char> = chars[start..end].to_vec();
                chars.splice(end..end, line);
            }
        }
    }
    chars.into_iter().collect()
}

/// Checks the invariants of any outcome: no panic (by getting here), errors
/// non-empty, positions inside the text, and one line per error.
fn check_outcome(text: &str) {
    if let Err(errors) = config::parse(text, Path::new("p.toml")) {
        assert!(!errors.0.is_empty());
        let lines = text.split('\n').count();
        for e in &errors.0 {
            assert!(e.line >= 1 && e.line <= lines, "{e} in {text:?}");
            assert!(e.column >= 1, "{e}");
        }
        assert!(errors.to_string().lines().count() >= errors.0.len());
    }
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        check_outcome(&text);
    }

    #[test]
    fn toml_like_text_never_panics(text in "[a-z_\\[\\]{}=\"'.,0-9 \n#-]{0,300}") {
        check_outcome(&text);
    }

    #[test]
    fn mutated_valid_file_never_panics(
        edits in prop::collection::vec(
            (any::<usize>(), any::<u8>(), prop_oneof![
                Just(String::new()),
                Just("\"".to_string()),
                Just("[[check]]\n".to_string()),
                Just("= ".to_string()),
                Just("99999999999999999999".to_string()),
                Just("-1".to_string()),
                Just("{ a = [1, { b = 2 }] }".to_string()),
                Just("\u{1F600}é\t".to_string()),
                ".{0,12}",
            ]),
            1..6,
        )
    ) {
        check_outcome(&mutate(VALID, &edits));
    }
}

#[test]
fn api_tokens_come_as_a_digest_or_from_a_secret_file_and_are_kept_hashed() {
    use vantage_coordinator::api::auth::{digest, Role};
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ops.token"), "token-from-a-file\n").unwrap();
    let hex = vantage_coordinator::api::auth::digest_hex("token-from-the-digest");
    let text = format!(
        "version = 1\n\n[[api.token]]\nname = \"ops\"\nrole = \"admin\"\ntoken = {{ file = \"ops.token\" }}\n\n[[api.token]]\nname = \"grafana\"\nrole = \"viewer\"\nsha256 = \"{hex}\"\n"
    );
    let cfg = config::parse(&text, &dir.path().join("vantage.toml")).unwrap();
    let tokens = &cfg.api.tokens;
    assert_eq!(tokens.len(), 2);
    assert_eq!(
        (tokens[0].name.as_str(), tokens[0].role),
        ("ops", Role::Admin)
    );
    assert_eq!(tokens[0].sha256, digest("token-from-a-file"));
    assert_eq!(
        (tokens[1].name.as_str(), tokens[1].role),
        ("grafana", Role::Viewer)
    );
    assert_eq!(tokens[1].sha256, digest("token-from-the-digest"));
    // The parsed config never shows a token or its digest.
    let shown = format!("{cfg:?}");
    assert!(
        !shown.contains("token-from") && !shown.contains(&hex[..16]),
        "{shown}"
    );
}

#[test]
fn a_config_holds_at_most_ten_thousand_checks() {
    let check = |i: usize| {
        format!("[[check]]\nname = \"c{i}\"\nkind = \"tcp\"\nhost = \"db\"\nport = 5432\nregions = [\"eu\"]\n\n")
    };
    let many: String = (0..10_000).map(check).collect();
    let cfg = parse(&format!("version = 1\n{many}")).unwrap();
    assert_eq!(cfg.checks.len(), 10_000);
    let errors = parse(&format!("version = 1\n{many}{}", check(10_000)))
        .unwrap_err()
        .to_string();
    assert!(
        errors.contains("check[10000]: 10001 checks: at most 10000 per config"),
        "{errors}"
    );
    assert_eq!(errors.lines().count(), 1, "{errors}");
}
