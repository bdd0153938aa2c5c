//! The audit checks as continuous check kinds: [`AuditProbe`] runs one audit
//! check per attempt and turns its findings into a [`ProbeOutcome`].
//!
//! An attempt fails (class `audit`) when a finding of severity
//! [`Severity::Medium`] or above failed; failed low findings are worth a look
//! in the one-shot scorecard but do not page anyone. The failure message
//! lists the failed findings' titles with their first evidence line, which
//! the checks already redact, so it never carries a secret.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use vantage_proto::spec::{ProbeKind, ProbeSpec};
use vantage_proto::v1::ErrorClass;

use super::{
    auth_required, cors, email_dns, exposed_secrets, headers, rate_limit, redirect, AuditContext,
    Finding, Severity,
};
use crate::egress::EgressPolicy;
use crate::probe::{BoxFuture, BuildError, Deadline, Probe, ProbeError, ProbeOutcome};

/// Lowest severity whose failure fails the attempt.
pub const FAILING_SEVERITY: Severity = Severity::Medium;

/// Longest failure message, in characters: the recorder keeps 512 of a
/// window's `last_error`, and a few findings are enough to act on.
const MAX_MESSAGE_CHARS: usize = 500;
/// Longest evidence line quoted per finding, in characters.
const MAX_EVIDENCE_CHARS: usize = 160;

/// Time given to a check past its own deadline before the attempt is cut
/// short: each check keeps to `timeout` itself, so this only guards against
/// a bug leaving an attempt running forever.
const GRACE: Duration = Duration::from_secs(2);

/// A runnable audit check kind.
pub struct AuditProbe {
    spec: ProbeSpec,
    cx: AuditContext,
}

impl AuditProbe {
    /// The probe for an audit `spec`, each attempt within `timeout` and
    /// connecting only where `egress` allows. Host names are resolved by DNS
    /// (no overrides). `Err` for a spec of another kind.
    pub fn new(
        spec: ProbeSpec,
        timeout: Duration,
        egress: Arc<EgressPolicy>,
    ) -> Result<Self, BuildError> {
        let cx = AuditContext {
            timeout,
            egress,
            resolve: HashMap::new(),
        };
        Self::with_context(spec, cx)
    }

    /// The probe for `spec` run with `cx` (tests pin host names with it).
    pub(crate) fn with_context(spec: ProbeSpec, cx: AuditContext) -> Result<Self, BuildError> {
        if !spec.kind().is_audit() {
            return Err(BuildError::Invalid(format!(
                "{} is not an audit check kind",
                spec.kind().as_str()
            )));
        }
        Ok(AuditProbe { spec, cx })
    }

    /// The findings of one run of the check.
    async fn findings(&self) -> Vec<Finding> {
        let cx = &self.cx;
        match &self.spec {
            ProbeSpec::Redirect(s) => redirect::run(s, cx).await,
            ProbeSpec::Headers(s) => headers::run(s, cx).await,
            ProbeSpec::Cors(s) => cors::run(s, cx).await,
            ProbeSpec::AuthRequired(s) => auth_required::run(s, cx).await,
            ProbeSpec::RateLimit(s) => rate_limit::run(s, cx).await,
            ProbeSpec::EmailDns(s) => email_dns::run(s, cx).await,
            ProbeSpec::ExposedSecrets(s) => exposed_secrets::run(s, cx).await,
            // `with_context` admits audit kinds only.
            ProbeSpec::Http(_) | ProbeSpec::Tcp(_) | ProbeSpec::Tls(_) => Vec::new(),
        }
    }
}

impl Probe for AuditProbe {
    fn kind(&self) -> ProbeKind {
        self.spec.kind()
    }

    fn run(&self) -> BoxFuture<'_, ProbeOutcome> {
        Box::pin(async move {
            let guard = Deadline::after(self.cx.timeout + GRACE);
            let out = ProbeOutcome::begin();
            let result = match guard.run("the audit check", self.findings()).await {
                Ok(findings) => judge(&findings),
                Err(timeout) => Err(timeout),
            };
            out.finish(result, &guard)
        })
    }
}

/// `Ok` when no finding of [`FAILING_SEVERITY`] or above failed; else the
/// `audit`-class error naming the failed findings, worst first.
pub fn judge(findings: &[Finding]) -> Result<(), ProbeError> {
    let mut failed: Vec<&Finding> = findings
        .iter()
        .filter(|f| !f.passed && f.severity >= FAILING_SEVERITY)
        .collect();
    if failed.is_empty() {
        return Ok(());
    }
    // Stable: findings of one severity keep the check's order.
    failed.sort_by_key(|f| std::cmp::Reverse(f.severity));
    let parts: Vec<String> = failed
        .iter()
        .map(|f| {
            let severity = serde_json::to_value(f.severity)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            match f.evidence.first() {
                Some(e) => format!(
                    "{} [{severity}] ({})",
                    f.title,
                    truncate(e, MAX_EVIDENCE_CHARS)
                ),
                None => format!("{} [{severity}]", f.title),
            }
        })
        .collect();
    let noun = if failed.len() == 1 {
        "finding"
    } else {
        "findings"
    };
    let message = format!("{} {noun} failed: {}", failed.len(), parts.join("; "));
    Err(ProbeError::new(
        ErrorClass::Audit,
        truncate(&message, MAX_MESSAGE_CHARS),
    ))
}

/// `s` cut to at most `max` characters, with "…" when cut.
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use vantage_proto::spec::{CorsSpec, HeadersSpec, TcpSpec};

    use super::*;
    use crate::audit::testsite::{Site, SiteConfig};
    use crate::audit::Item;

    const TIMEOUT: Duration = Duration::from_secs(5);

    async fn headers_outcome(config: SiteConfig) -> ProbeOutcome {
        let site = Site::start(config).await;
        let spec = ProbeSpec::Headers(HeadersSpec {
            url: site.https_url("/"),
            hsts_min_max_age: 15_552_000,
            hsts_include_subdomains: false,
            ca_file: site.ca_file(),
        });
        let probe = AuditProbe::with_context(spec, site.context(TIMEOUT)).unwrap();
        assert_eq!(probe.kind(), ProbeKind::Headers);
        probe.run().await
    }

    #[tokio::test]
    async fn a_good_site_passes_and_a_low_finding_does_not_fail() {
        let out = headers_outcome(SiteConfig::good()).await;
        assert!(out.is_success(), "{:?}", out.error);
        assert!(out.phases.total > Duration::ZERO);
        assert_eq!(out.phases.dns, None, "total only");

        // A version in `Server` fails a low finding only.
        let out = headers_outcome(SiteConfig {
            server_version: true,
            ..SiteConfig::good()
        })
        .await;
        assert!(out.is_success(), "{:?}", out.error);
    }

    #[tokio::test]
    async fn missing_hsts_fails_with_class_audit_and_the_finding() {
        let out = headers_outcome(SiteConfig {
            hsts: false,
            server_version: true,
            ..SiteConfig::good()
        })
        .await;
        let err = out.error.expect("HSTS is high");
        assert_eq!(err.class, ErrorClass::Audit);
        assert!(
            err.message
                .starts_with("1 finding failed: HSTS with max-age ≥ 15552000 [high] ("),
            "{}",
            err.message
        );
        assert!(
            err.message
                .contains("(no Strict-Transport-Security header)"),
            "first evidence line: {}",
            err.message
        );
        assert!(!err.message.contains("server version"), "{}", err.message);
    }

    #[tokio::test]
    async fn a_reflected_origin_fails_cors() {
        let site = Site::start(SiteConfig {
            cors_strict: false,
            ..SiteConfig::good()
        })
        .await;
        let spec = ProbeSpec::Cors(CorsSpec {
            url: site.https_url("/api/data"),
            hostile_origin: crate::audit::plan::HOSTILE_ORIGIN.into(),
            ca_file: site.ca_file(),
        });
        let probe = AuditProbe::with_context(spec, site.context(TIMEOUT)).unwrap();
        let err = probe.run().await.error.expect("origin reflected");
        assert_eq!(err.class, ErrorClass::Audit);
        assert!(err.message.contains("evil.example"), "{}", err.message);
    }

    #[test]
    fn other_kinds_are_not_audit_probes() {
        let spec = ProbeSpec::Tcp(TcpSpec {
            host: "x.test".into(),
            port: 1,
        });
        let cx = AuditContext {
            timeout: TIMEOUT,
            egress: Arc::new(EgressPolicy::from_flags_and_env(&[], None).unwrap()),
            resolve: HashMap::new(),
        };
        assert!(AuditProbe::with_context(spec, cx).is_err());
    }

    #[test]
    fn the_message_is_bounded_and_worst_first() {
        let item = |title, severity| Item {
            title,
            severity,
            why: "",
            fix: "",
        };
        let long = "x".repeat(1000);
        let mut findings = vec![
            item("medium one", Severity::Medium).judge("headers", false, vec![long.clone()]),
            item("low one", Severity::Low).judge("headers", false, vec!["l".into()]),
            item("passed", Severity::Critical).judge("headers", true, vec![]),
            item("critical one", Severity::Critical).judge("headers", false, vec![]),
            item("high one", Severity::High).judge("headers", false, vec![long.clone(); 3]),
        ];
        for _ in 0..5 {
            findings.push(item("more", Severity::Medium).judge(
                "headers",
                false,
                vec![long.clone()],
            ));
        }
        let err = judge(&findings).unwrap_err();
        assert!(
            err.message
                .starts_with("8 findings failed: critical one [critical]; high one [high] (xxx"),
            "{}",
            err.message
        );
        assert!(!err.message.contains("low one"));
        assert!(err.message.chars().count() <= MAX_MESSAGE_CHARS);
        assert!(err.message.ends_with('…'));
        assert!(judge(&findings[1..3]).is_ok(), "low and passed only");
    }
}
