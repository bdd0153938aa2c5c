//! The launch-readiness audit: checks that a site is fit to launch (HTTPS
//! redirects, security headers, CORS, protected routes, rate limits on
//! login, mail DNS, no secrets in what the browser downloads). One file per
//! check kind; each turns its spec into [`Finding`]s.
//!
//! The same checks run once (`vantage-agent audit URL`, which prints a
//! scorecard) and continuously (as check kinds the coordinator assigns,
//! where a failed finding fails the attempt).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::egress::EgressPolicy;
use crate::probe::Deadline;

pub mod auth_required;
pub mod cors;
pub mod exposed_secrets;
mod fetch;
pub mod headers;
mod html;
pub mod probe;
pub mod rate_limit;
pub mod redirect;
#[cfg(test)]
pub(crate) mod testsite;

pub mod email_dns;
pub mod latency;
pub mod plan;
pub mod scorecard;
pub mod tls;

pub use plan::{audit, run_all, AuditOptions, AuditPlan};
pub use scorecard::{Scorecard, Verdict};

/// How much a failed finding weighs in the verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth fixing; does not hold a launch.
    Low,
    /// Fix soon; a failure alone makes the verdict "ready after fixes"
    /// (see [`scorecard::Verdict`]).
    Medium,
    /// Fix before launch ("ready after fixes").
    High,
    /// Hold the launch (a leaked secret, an open protected route).
    Critical,
}

/// One verdict of one check: what was looked at, whether it passed, and the
/// facts that show it. Evidence never holds a full secret or credential.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Finding {
    /// Contract name of the check kind that produced it (`redirect` ...).
    pub check: &'static str,
    /// Short name of what is verified ("HTTP redirects to HTTPS").
    pub title: String,
    /// Whether it passed.
    pub passed: bool,
    /// Weight of a failure.
    pub severity: Severity,
    /// Facts seen (status codes, header values, redacted matches ...).
    pub evidence: Vec<String>,
    /// Why it matters, one or two sentences.
    pub why: &'static str,
    /// How to fix it, one or two sentences.
    pub fix: &'static str,
}

/// What every audit check runs with.
#[derive(Debug, Clone)]
pub struct AuditContext {
    /// Deadline of one check (all its requests).
    pub timeout: Duration,
    /// Where requests may connect.
    pub egress: Arc<EgressPolicy>,
    /// Host names answered without DNS (curl's `--resolve`): the audit of a
    /// site before its DNS points at it, and tests on loopback.
    pub resolve: HashMap<String, IpAddr>,
}

impl AuditContext {
    /// The deadline of one check run, starting now.
    pub(crate) fn deadline(&self) -> Deadline {
        Deadline::after(self.timeout)
    }
}

/// What one verified item is, before it is judged: its title, the weight of a
/// failure and the why/fix text a failure shows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Item {
    pub(crate) title: &'static str,
    pub(crate) severity: Severity,
    pub(crate) why: &'static str,
    pub(crate) fix: &'static str,
}

impl Item {
    /// The finding of `check` for this item.
    pub(crate) fn judge(
        &self,
        check: &'static str,
        passed: bool,
        evidence: Vec<String>,
    ) -> Finding {
        Finding {
            check,
            title: self.title.to_owned(),
            passed,
            severity: self.severity,
            evidence,
            why: self.why,
            fix: self.fix,
        }
    }
}

/// The failed finding of a check that could not run at all (an unreadable
/// `ca_file`, a URL it cannot request).
pub(crate) fn not_run(check: &'static str, reason: String) -> Finding {
    Item {
        title: "the check could run",
        severity: Severity::Medium,
        why: "Nothing was verified, so the site's readiness on this point is unknown.",
        fix: "Correct the check's settings (URL, ca_file) so it can run.",
    }
    .judge(check, false, vec![reason])
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use vantage_proto::spec::{
        AuthRequiredSpec, CorsSpec, ExposedSecretsSpec, HeadersSpec, RateLimitSpec, RedirectSpec,
    };

    use super::testsite::{Site, SiteConfig, WWW};
    use super::*;

    /// Every check of this module against `config`, with the defaults the
    /// specs document.
    async fn audit(config: SiteConfig) -> Vec<Finding> {
        let site = Site::start(config).await;
        let cx = site.context(Duration::from_secs(10));
        let ca_file = site.ca_file();
        let mut findings = redirect::run(
            &RedirectSpec {
                url: site.https_url("/"),
                http_port: site.http_port,
                aliases: vec![WWW.into()],
                max_hops: 3,
                ca_file: ca_file.clone(),
            },
            &cx,
        )
        .await;
        let headers = HeadersSpec {
            url: site.https_url("/"),
            hsts_min_max_age: 15_552_000,
            hsts_include_subdomains: false,
            ca_file: ca_file.clone(),
        };
        findings.extend(headers::run(&headers, &cx).await);
        let cors = CorsSpec {
            url: site.https_url("/api/data"),
            hostile_origin: "https://evil.example".into(),
            ca_file: ca_file.clone(),
        };
        findings.extend(cors::run(&cors, &cx).await);
        let auth = AuthRequiredSpec {
            url: site.https_url("/"),
            paths: vec!["/admin".into(), "/api/account".into(), "/dashboard".into()],
            method: "GET".into(),
            ca_file: ca_file.clone(),
        };
        findings.extend(auth_required::run(&auth, &cx).await);
        let rate = RateLimitSpec {
            url: site.https_url("/login"),
            method: "POST".into(),
            body: Some(r#"{"user":"audit","password":"wrong"}"#.into()),
            content_type: Some("application/json".into()),
            max_requests: 20,
            within: Duration::from_secs(10),
            ca_file: ca_file.clone(),
        };
        findings.extend(rate_limit::run(&rate, &cx).await);
        let secrets = ExposedSecretsSpec {
            url: site.https_url("/"),
            max_files: 30,
            max_file_bytes: 5 * 1024 * 1024,
            ca_file,
        };
        findings.extend(exposed_secrets::run(&secrets, &cx).await);
        findings
    }

    fn failures(findings: &[Finding]) -> Vec<(&'static str, Severity)> {
        findings
            .iter()
            .filter(|f| !f.passed)
            .map(|f| (f.check, f.severity))
            .collect()
    }

    #[tokio::test]
    async fn the_good_site_raises_no_false_alarm() {
        let findings = audit(SiteConfig::good()).await;
        assert!(findings.len() >= 15, "{findings:#?}");
        assert_eq!(failures(&findings), [], "{findings:#?}");
        for f in &findings {
            assert!(
                !f.evidence.is_empty(),
                "every finding shows its facts: {f:#?}"
            );
        }
    }

    /// Each fault is found by the right check, with the right severity, and
    /// by no other check.
    #[tokio::test]
    async fn each_fault_is_found_once_by_its_check() {
        let good = SiteConfig::good();
        let faults = [
            (
                "no redirect",
                SiteConfig {
                    http_redirect: false,
                    ..good
                },
                ("redirect", Severity::High),
            ),
            (
                "downgrade",
                SiteConfig {
                    downgrade_hop: true,
                    ..good
                },
                ("redirect", Severity::High),
            ),
            (
                "no HSTS",
                SiteConfig {
                    hsts: false,
                    ..good
                },
                ("headers", Severity::High),
            ),
            (
                "mixed content",
                SiteConfig {
                    mixed_content: true,
                    ..good
                },
                ("headers", Severity::Medium),
            ),
            (
                "server version",
                SiteConfig {
                    server_version: true,
                    ..good
                },
                ("headers", Severity::Low),
            ),
            (
                "reflected CORS",
                SiteConfig {
                    cors_strict: false,
                    ..good
                },
                ("cors", Severity::Critical),
            ),
            (
                "open route",
                SiteConfig {
                    admin_protected: false,
                    ..good
                },
                ("auth_required", Severity::Critical),
            ),
            (
                "no rate limit",
                SiteConfig {
                    login_rate_limit: false,
                    ..good
                },
                ("rate_limit", Severity::High),
            ),
            (
                "leaked key",
                SiteConfig {
                    leaked_secret: true,
                    ..good
                },
                ("exposed_secrets", Severity::Critical),
            ),
            (
                "served .env",
                SiteConfig {
                    env_file: true,
                    ..good
                },
                ("exposed_secrets", Severity::Critical),
            ),
        ];
        for (name, config, expected) in faults {
            let findings = audit(config).await;
            let failed: Vec<&Finding> = findings.iter().filter(|f| !f.passed).collect();
            assert_eq!(failures(&findings), [expected], "{name}: {failed:#?}");
            assert!(!failed[0].why.is_empty() && !failed[0].fix.is_empty());
        }
    }
}
