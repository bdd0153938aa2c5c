//! `exposed_secrets`: the page, its same-origin scripts and their source
//! maps hold no credential-like strings, and the origin does not serve a
//! `/.env` file.
//!
//! Bounded: at most `max_files` files are fetched (the page included), each
//! read up to `max_file_bytes` (never more than [`MAX_FILE_BYTES`]); only
//! URLs on the page's origin are fetched. Matches are reported redacted:
//! the first four characters and the length, never the value.

use std::collections::{HashSet, VecDeque};
use std::sync::LazyLock;

use regex::bytes::Regex;
use url::Url;
use vantage_proto::spec::ExposedSecretsSpec;

use super::fetch::{Fetcher, Request, Response};
use super::html;
use super::{not_run, AuditContext, Finding, Item, Severity};
use crate::probe::http::redact;

const CHECK: &str = "exposed_secrets";

/// Hard cap on bytes read per file, whatever the spec says (memory bound).
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// Redirects followed to reach the page.
const MAX_REDIRECTS: u32 = 5;

/// Bytes of `/.env` read: enough to see its variable names.
const ENV_FILE_LIMIT: usize = 64 * 1024;

/// Most matches listed in the evidence.
const MAX_LISTED: usize = 20;

const NO_SECRETS: Item = Item {
    title: "No credentials in the page, its scripts and source maps",
    severity: Severity::Critical,
    why: "Everything a browser downloads is public: a key in a bundle or source map can be used by anyone who opens the developer tools.",
    fix: "Revoke and rotate the key now, then keep secrets on the server (call a backend endpoint instead), and scan bundles for secrets in CI.",
};

const NO_ENV_FILE: Item = Item {
    title: "/.env is not served",
    severity: Severity::Critical,
    why: "A served .env file hands out the application's configuration, usually database passwords and API keys, to anyone who asks for it.",
    fix: "Serve only the build output directory, deny dotfiles at the web server, and rotate every value the file held.",
};

/// One credential pattern: its name for humans, and the regex whose group 1
/// is the part to redact.
struct Pattern {
    name: &'static str,
    regex: Regex,
}

/// The patterns, compiled once. `(?-u)`: ASCII only, on raw bytes (a file
/// cut at the byte limit need not be UTF-8).
static PATTERNS: LazyLock<Vec<Pattern>> = LazyLock::new(|| {
    let p = |name, re: &str| Pattern {
        name,
        // The patterns are constants, tested below: compiling them cannot fail.
        regex: Regex::new(re).expect("a valid credential pattern"),
    };
    vec![
        p("AWS access key id", r"(?-u)\b((?:AKIA|ASIA)[A-Z0-9]{16})\b"),
        p(
            "AWS secret access key",
            r#"(?-u)(?i:secret_?access_?key)["']?\s*[:=]\s*["']?([A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+=]|$)"#,
        ),
        p(
            "Stripe secret key",
            r"(?-u)\b((?:sk|rk)_live_[0-9A-Za-z]{16,})",
        ),
        p(
            "private key (PEM)",
            r"(?-u)(-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED )?PRIVATE KEY-----)",
        ),
        p(
            "JWT signing secret",
            r#"(?-u)(?i:jwt_?secret)["']?\s*[:=]\s*["']([^"'\s]{6,})["']"#,
        ),
        p(
            ".env-style secret",
            r#"(?m-u)^[ \t]*(?:export[ \t]+)?[A-Z][A-Z0-9_]*(?:SECRET|PASSWORD|PASSWD|TOKEN|API_KEY|PRIVATE_KEY)[A-Z0-9_]*[ \t]*=[ \t]*["']?([^\s"']{6,})"#,
        ),
        p(
            "database URL with a password",
            r#"(?-u)\b((?:postgres(?:ql)?|mysql|mariadb|mongodb(?:\+srv)?|rediss?|amqps?)://[^:/\s"'@]+:[^@\s"'/]+@)"#,
        ),
        p(
            "GitHub token",
            r"(?-u)\b((?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{22,})",
        ),
        p("Slack token", r"(?-u)\b(xox[bpoas]-[0-9A-Za-z-]{10,})"),
    ]
});

/// `//# sourceMappingURL=...` (or the older `//@`) at the start of a line.
static SOURCE_MAP: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?m-u)^[ \t]*//[#@][ \t]*sourceMappingURL=([^\s'\x22]+)").expect("a valid pattern")
});

/// A `KEY=VALUE` line of an environment file.
static ENV_LINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?m-u)^[ \t]*(?:export[ \t]+)?([A-Z_][A-Z0-9_]*)=\S").expect("a valid pattern")
});

/// One match, already redacted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Match {
    pattern: &'static str,
    line: usize,
    redacted: String,
}

/// Runs the `exposed_secrets` check: one finding for the page and its
/// scripts and source maps, one for `/.env`.
pub async fn run(spec: &ExposedSecretsSpec, cx: &AuditContext) -> Vec<Finding> {
    let fetcher = match Fetcher::new(cx, spec.ca_file.as_deref()) {
        Ok(f) => f,
        Err(e) => return vec![not_run(CHECK, e.to_string())],
    };
    let deadline = cx.deadline();
    let limit = usize::try_from(spec.max_file_bytes.min(MAX_FILE_BYTES)).unwrap_or(usize::MAX);
    let max_files = spec.max_files.max(1) as usize;

    let page = match fetcher
        .follow(&spec.url, MAX_REDIRECTS, limit, &deadline)
        .await
        .end
    {
        Ok(page) => page,
        Err(e) => {
            let reason = format!("fetching {}: {e}", redact(&spec.url));
            return vec![not_run(CHECK, reason)];
        }
    };
    let origin = page.url.clone();

    let mut scanned = Vec::new();
    let mut notes = Vec::new();
    let mut found: Vec<(String, Match)> = Vec::new();
    let mut seen: HashSet<Url> = HashSet::from([page.url.clone()]);
    let mut queue = VecDeque::new();
    let mut skipped_foreign = 0;

    let mut enqueue = |url: Url, queue: &mut VecDeque<Url>| {
        if url.origin() != origin.origin() {
            skipped_foreign += 1;
        } else if seen.insert(url.clone()) {
            queue.push_back(url);
        }
    };
    for tag in html::start_tags(&page.body, &["script"]) {
        if let Some(url) = tag
            .attr("src")
            .and_then(|src| page.url.join(src.trim()).ok())
        {
            enqueue(url, &mut queue);
        }
    }
    inspect(&page, &mut scanned, &mut found, &mut notes);

    while scanned.len() < max_files {
        let Some(url) = queue.pop_front() else {
            break;
        };
        let file = match fetcher.fetch(&Request::get(&url, limit), &deadline).await {
            Ok(f) if f.status.is_success() => f,
            Ok(f) => {
                notes.push(format!(
                    "{}: {} (not scanned)",
                    redact(&url),
                    f.status.as_u16()
                ));
                continue;
            }
            Err(e) => {
                notes.push(format!("{}: {e} (not scanned)", redact(&url)));
                continue;
            }
        };
        for map in source_maps(&file) {
            enqueue(map, &mut queue);
        }
        inspect(&file, &mut scanned, &mut found, &mut notes);
    }
    if !queue.is_empty() {
        notes.push(format!(
            "{} file(s) left unscanned (max_files {max_files})",
            queue.len()
        ));
    }
    if skipped_foreign > 0 {
        notes.push(format!(
            "{skipped_foreign} script(s) or map(s) on other origins not fetched"
        ));
    }

    let mut secrets = if found.is_empty() {
        let mut evidence = vec![format!(
            "scanned {} file(s): {}",
            scanned.len(),
            scanned.join(", ")
        )];
        evidence.extend(notes);
        NO_SECRETS.judge(CHECK, true, evidence)
    } else {
        let total = found.len();
        let mut evidence: Vec<String> = found
            .into_iter()
            .take(MAX_LISTED)
            .map(|(file, m)| format!("{} in {file} (line {}): {}", m.pattern, m.line, m.redacted))
            .collect();
        if total > MAX_LISTED {
            evidence.push(format!("… and {} more", total - MAX_LISTED));
        }
        evidence.push(format!("scanned {} file(s)", scanned.len()));
        evidence.extend(notes);
        NO_SECRETS.judge(CHECK, false, evidence)
    };
    secrets.evidence.dedup();
    vec![secrets, env_file(&fetcher, &origin, &deadline).await]
}

/// Scans one fetched file, recording its URL and matches.
fn inspect(
    file: &Response,
    scanned: &mut Vec<String>,
    found: &mut Vec<(String, Match)>,
    notes: &mut Vec<String>,
) {
    let name = redact(&file.url);
    if file.truncated {
        notes.push(format!(
            "{name}: only the first {} bytes scanned",
            file.body.len()
        ));
    }
    for m in scan(&file.body) {
        found.push((name.clone(), m));
    }
    scanned.push(name);
}

/// The credential-like strings in `text`, redacted, without repeats.
fn scan(text: &[u8]) -> Vec<Match> {
    let mut out: Vec<Match> = Vec::new();
    for pattern in PATTERNS.iter() {
        for caps in pattern.regex.captures_iter(text) {
            let Some(secret) = caps.get(1) else {
                continue;
            };
            let m = Match {
                pattern: pattern.name,
                line: 1 + text[..secret.start()]
                    .iter()
                    .filter(|b| **b == b'\n')
                    .count(),
                redacted: redact_secret(secret.as_bytes()),
            };
            if !out.contains(&m) {
                out.push(m);
            }
        }
    }
    out
}

/// The first four characters, an ellipsis and the length: enough to find
/// the value in the source, useless to anyone else.
fn redact_secret(secret: &[u8]) -> String {
    let head = String::from_utf8_lossy(&secret[..secret.len().min(4)]);
    format!("{head}… ({} chars)", secret.len())
}

/// Same-document source maps a script names (comment or header), resolved
/// against its URL; inline `data:` maps are already part of the file.
fn source_maps(file: &Response) -> Vec<Url> {
    let mut refs: Vec<String> = SOURCE_MAP
        .captures_iter(&file.body)
        .filter_map(|c| c.get(1))
        .map(|m| String::from_utf8_lossy(m.as_bytes()).into_owned())
        .collect();
    for header in ["sourcemap", "x-sourcemap"] {
        if let Some(v) = file.header(header) {
            refs.push(v.trim().to_owned());
        }
    }
    refs.iter()
        .filter(|r| !r.starts_with("data:"))
        .filter_map(|r| file.url.join(r).ok())
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .collect()
}

/// Fetches `/.env` on the origin of `page`: a failure when it answers 200
/// with `KEY=VALUE` lines (only the names are shown).
async fn env_file(fetcher: &Fetcher, page: &Url, deadline: &crate::probe::Deadline) -> Finding {
    let Ok(url) = page.join("/.env") else {
        return NO_ENV_FILE.judge(CHECK, true, vec!["no origin to ask".into()]);
    };
    match fetcher
        .fetch(&Request::get(&url, ENV_FILE_LIMIT), deadline)
        .await
    {
        Ok(r) if r.status.is_success() => {
            let names: Vec<String> = ENV_LINE
                .captures_iter(&r.body)
                .filter_map(|c| c.get(1))
                .map(|m| String::from_utf8_lossy(m.as_bytes()).into_owned())
                .collect();
            if names.is_empty() {
                let seen = format!(
                    "{}: {} without KEY=VALUE lines",
                    redact(&url),
                    r.status.as_u16()
                );
                NO_ENV_FILE.judge(CHECK, true, vec![seen])
            } else {
                let seen = format!(
                    "{}: {} with {} KEY=VALUE line(s): {}",
                    redact(&url),
                    r.status.as_u16(),
                    names.len(),
                    names.join(", ")
                );
                NO_ENV_FILE.judge(CHECK, false, vec![seen])
            }
        }
        Ok(r) => NO_ENV_FILE.judge(
            CHECK,
            true,
            vec![format!("{}: {}", redact(&url), r.status.as_u16())],
        ),
        Err(e) => {
            let mut f = NO_ENV_FILE.judge(
                CHECK,
                false,
                vec![format!("{}: {e} (could not verify)", redact(&url))],
            );
            f.severity = Severity::Medium;
            f
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::audit::testsite::{Site, SiteConfig, FAKE_AWS_KEY_ID, FAKE_AWS_SECRET};

    async fn audit(config: SiteConfig, max_files: u32) -> (Site, Vec<Finding>) {
        let site = Site::start(config).await;
        let spec = ExposedSecretsSpec {
            url: site.https_url("/"),
            max_files,
            max_file_bytes: 5 * 1024 * 1024,
            ca_file: site.ca_file(),
        };
        let findings = run(&spec, &site.context(Duration::from_secs(10))).await;
        (site, findings)
    }

    /// Every rendering of the findings a user or the coordinator could see.
    fn rendered(findings: &[Finding]) -> String {
        format!("{findings:?}\n{}", serde_json::to_string(findings).unwrap())
    }

    #[tokio::test]
    async fn a_clean_site_passes_and_its_map_is_scanned() {
        let (site, findings) = audit(SiteConfig::good(), 30).await;
        assert_eq!(findings.len(), 2);
        assert!(findings.iter().all(|f| f.passed), "{findings:#?}");
        let scanned = &findings[0].evidence[0];
        assert!(scanned.starts_with("scanned 3 file(s)"), "{scanned}");
        assert!(
            scanned.contains(site.https_url("/static/app.js.map").as_str()),
            "{scanned}"
        );
    }

    #[tokio::test]
    async fn a_leaked_aws_key_pair_is_critical_and_redacted() {
        let (site, findings) = audit(
            SiteConfig {
                leaked_secret: true,
                ..SiteConfig::good()
            },
            30,
        )
        .await;
        let f = &findings[0];
        assert!(!f.passed);
        assert_eq!(f.severity, Severity::Critical);
        let bundle = site.https_url("/static/app.js");
        assert_eq!(
            f.evidence[..2],
            [
                format!("AWS access key id in {bundle} (line 2): AKIA… (20 chars)"),
                format!("AWS secret access key in {bundle} (line 2): wJal… (40 chars)"),
            ]
        );
        let all = rendered(&findings);
        for secret in [FAKE_AWS_KEY_ID, FAKE_AWS_SECRET] {
            assert!(!all.contains(secret), "the full secret leaked: {all}");
            assert!(
                !all.contains(&secret[4..]),
                "the tail of the secret leaked: {all}"
            );
        }
    }

    #[tokio::test]
    async fn max_files_bounds_the_fetches() {
        let (_site, findings) = audit(SiteConfig::good(), 1).await;
        let evidence = &findings[0].evidence;
        assert!(evidence[0].starts_with("scanned 1 file(s)"), "{evidence:?}");
        assert!(
            evidence
                .iter()
                .any(|e| e.contains("left unscanned (max_files 1)")),
            "{evidence:?}"
        );
    }

    #[tokio::test]
    async fn a_served_env_file_is_critical_and_shows_names_only() {
        let (_site, findings) = audit(
            SiteConfig {
                env_file: true,
                ..SiteConfig::good()
            },
            30,
        )
        .await;
        let f = &findings[1];
        assert!(!f.passed);
        assert_eq!(f.severity, Severity::Critical);
        assert!(
            f.evidence[0].ends_with("200 with 2 KEY=VALUE line(s): DATABASE_URL, SESSION_SECRET"),
            "{f:#?}"
        );
        assert!(!rendered(&findings).contains("hunter2"));
    }

    #[test]
    fn each_pattern_finds_its_kind_and_ignores_look_alikes() {
        let hits = |text: &str| -> Vec<&'static str> {
            scan(text.as_bytes()).iter().map(|m| m.pattern).collect()
        };
        let cases: [(&str, &str); 10] = [
            ("k='ASIAABCDEFGHIJKLMNOP'", "AWS access key id"),
            (
                "AWS_SECRET_ACCESS_KEY=abcdefghijABCDEFGHIJ0123456789/+abcdefgh\n",
                "AWS secret access key",
            ),
            (
                "stripe('sk_live_4eC39HqLyjWDarjtT1zdp7dc')",
                "Stripe secret key",
            ),
            (
                "x = `-----BEGIN RSA PRIVATE KEY-----\nMIIE`",
                "private key (PEM)",
            ),
            (
                "config.jwtSecret = \"s3cr3t-signing-key\"",
                "JWT signing secret",
            ),
            ("SESSION_SECRET=abcdef123456\n", ".env-style secret"),
            (
                "DATABASE_URL=postgres://app:pa55word@db:5432/app",
                "database URL with a password",
            ),
            (
                "t='ghp_0123456789abcdefghijABCDEFGHIJ012345'",
                "GitHub token",
            ),
            ("hook('xoxb-1234567890-abcdefghij')", "Slack token"),
            ("-----BEGIN PRIVATE KEY-----", "private key (PEM)"),
        ];
        for (text, kind) in cases {
            assert!(
                hits(text).contains(&kind),
                "{kind} not found in {text:?}: {:?}",
                hits(text)
            );
        }
        for clean in [
            "AKIA-not-a-key",
            "var AKIAS = 1;",
            "pk_live_publishableKeyIsPublic123",
            "-----BEGIN PUBLIC KEY-----",
            "https://user@example.com/",
            "postgres://db.internal/app",
            "const PASSWORD_FIELD = document.getElementById('p')",
        ] {
            assert!(
                hits(clean).is_empty(),
                "false alarm on {clean:?}: {:?}",
                hits(clean)
            );
        }
    }

    #[test]
    fn redaction_keeps_four_characters_and_the_length() {
        assert_eq!(redact_secret(b"AKIAQ7FAKE3EXAMPLE42"), "AKIA… (20 chars)");
        assert_eq!(redact_secret(b"ab"), "ab… (2 chars)");
    }
}
