//! `cors`: a request and a preflight (`OPTIONS`) claiming a hostile
//! `Origin` must not get that origin back in `Access-Control-Allow-Origin`,
//! and `*` must not come with `Access-Control-Allow-Credentials: true`.
//!
//! A reflected origin with credentials lets any web site read the API with
//! the visitor's cookies: Critical. Reflected without credentials it still
//! shares every response with any site (Medium).

use http::header::{ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN};
use http::{HeaderValue, Method};
use vantage_proto::spec::CorsSpec;

use super::fetch::{Fetcher, Request, Response};
use super::{not_run, AuditContext, Finding, Item, Severity};
use crate::probe::http::redact;

const CHECK: &str = "cors";

/// The method a preflight asks for: one a simple request cannot use.
const PREFLIGHT_METHOD: &str = "PUT";
/// The headers a preflight asks for (a credentialed JSON API call).
const PREFLIGHT_HEADERS: &str = "authorization, content-type";

const NOT_REFLECTED: Item = Item {
    title: "A foreign origin is not allowed",
    severity: Severity::Medium,
    why: "Echoing any Origin back in Access-Control-Allow-Origin lets every web site read these responses from a visitor's browser; with credentials allowed, that includes whatever the visitor's cookies unlock.",
    fix: "Compare the Origin against an explicit list of your own origins and send Access-Control-Allow-Origin only for those (with `Vary: Origin`).",
};

const NO_WILDCARD_CREDENTIALS: Item = Item {
    title: "No wildcard origin with credentials",
    severity: Severity::Medium,
    why: "`Access-Control-Allow-Origin: *` with `Allow-Credentials: true` is rejected by browsers, so it breaks the credentialed calls it was meant for, and the usual quick fix (echoing the Origin) opens the API to every site.",
    fix: "Use `*` only for public data without credentials; for credentialed calls, allow an explicit list of origins.",
};

/// Runs the `cors` check: one finding for reflection of the hostile
/// origin (Critical with credentials), one for `*` with credentials.
pub async fn run(spec: &CorsSpec, cx: &AuditContext) -> Vec<Finding> {
    let fetcher = match Fetcher::new(cx, spec.ca_file.as_deref()) {
        Ok(f) => f,
        Err(e) => return vec![not_run(CHECK, e.to_string())],
    };
    let Ok(origin) = HeaderValue::from_str(&spec.hostile_origin) else {
        let reason = format!(
            "hostile_origin {:?} is not a header value",
            spec.hostile_origin
        );
        return vec![not_run(CHECK, reason)];
    };
    let deadline = cx.deadline();
    let simple = Request::get(&spec.url, 0).header(ORIGIN, origin.clone());
    let mut preflight = Request::get(&spec.url, 0)
        .header(ORIGIN, origin)
        .header(
            ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_static(PREFLIGHT_METHOD),
        )
        .header(
            ACCESS_CONTROL_REQUEST_HEADERS,
            HeaderValue::from_static(PREFLIGHT_HEADERS),
        );
    preflight.method = Method::OPTIONS;

    let mut answers = Vec::new();
    let mut errors = Vec::new();
    for (label, req) in [("GET", &simple), ("preflight OPTIONS", &preflight)] {
        match fetcher.fetch(req, &deadline).await {
            Ok(r) => answers.push((label, r)),
            Err(e) => errors.push(format!("{label} {}: {e}", redact(&spec.url))),
        }
    }
    if answers.is_empty() {
        return vec![not_run(CHECK, errors.join("; "))];
    }

    let mut reflected = NOT_REFLECTED.judge(CHECK, true, errors.clone());
    reflected.title = format!("Origin {} is not allowed", spec.hostile_origin);
    let mut wildcard = NO_WILDCARD_CREDENTIALS.judge(CHECK, true, errors);
    for (label, r) in &answers {
        let allow = r.header("access-control-allow-origin").map(str::trim);
        let credentials = allows_credentials(r);
        let seen = format!(
            "{label}: {} (Access-Control-Allow-Origin: {}; Allow-Credentials: {})",
            r.status.as_u16(),
            allow.unwrap_or("absent"),
            r.header("access-control-allow-credentials")
                .unwrap_or("absent"),
        );
        if allow.is_some_and(|a| a.eq_ignore_ascii_case(spec.hostile_origin.trim())) {
            reflected.passed = false;
            if credentials {
                reflected.severity = Severity::Critical;
            }
        }
        if allow == Some("*") && credentials {
            wildcard.passed = false;
        }
        reflected.evidence.push(seen.clone());
        wildcard.evidence.push(seen);
    }
    vec![reflected, wildcard]
}

fn allows_credentials(r: &Response) -> bool {
    r.header("access-control-allow-credentials")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::audit::testsite::{Site, SiteConfig};

    async fn audit(config: SiteConfig, path: &str) -> Vec<Finding> {
        let site = Site::start(config).await;
        let spec = CorsSpec {
            url: site.https_url(path),
            hostile_origin: "https://evil.example".into(),
            ca_file: site.ca_file(),
        };
        run(&spec, &site.context(Duration::from_secs(5))).await
    }

    #[tokio::test]
    async fn a_strict_api_passes() {
        let findings = audit(SiteConfig::good(), "/api/data").await;
        assert_eq!(findings.len(), 2);
        assert!(findings.iter().all(|f| f.passed), "{findings:#?}");
        assert!(findings[0].evidence[0].contains("Allow-Origin: absent"));
    }

    #[tokio::test]
    async fn a_reflected_origin_with_credentials_is_critical() {
        let config = SiteConfig {
            cors_strict: false,
            ..SiteConfig::good()
        };
        let findings = audit(config, "/api/data").await;
        let f = &findings[0];
        assert!(!f.passed, "{f:#?}");
        assert_eq!(f.severity, Severity::Critical);
        assert_eq!(f.evidence.len(), 2, "both requests: {f:#?}");
        assert!(f
            .evidence
            .iter()
            .all(|e| e.contains("https://evil.example")));
        assert!(findings[1].passed, "no wildcard");
    }

    #[tokio::test]
    async fn a_wildcard_with_credentials_fails_medium() {
        let findings = audit(SiteConfig::good(), "/api/wildcard").await;
        assert!(findings[0].passed, "`*` is not the hostile origin itself");
        let f = &findings[1];
        assert!(!f.passed, "{f:#?}");
        assert_eq!(f.severity, Severity::Medium);
        assert!(f.evidence[0].contains("Allow-Origin: *; Allow-Credentials: true"));
    }
}
