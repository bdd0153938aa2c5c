//! `auth_required`: each protected path, asked without credentials, with a
//! malformed bearer token and with an expired JWT, must refuse: 401 or 403,
//! or a redirect to a login page. Any 2xx is an open route (Critical). A 404,
//! a 5xx or another answer proves nothing either way ("could not verify",
//! Medium).
//!
//! Only paths on the origin of `url` are requested: the check never sends
//! its requests to another site.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::header::AUTHORIZATION;
use http::{HeaderValue, Method};
use url::Url;
use vantage_proto::spec::AuthRequiredSpec;

use super::fetch::{Fetcher, Request, Response};
use super::{not_run, AuditContext, Finding, Item, Severity};
use crate::probe::http::redact;

const CHECK: &str = "auth_required";

/// The malformed bearer token: not a JWT, not any real token format.
const MALFORMED: &str = "Bearer vantage-audit-malformed-token";

/// Path fragments of a login page that a refused request may be sent to.
const LOGIN_HINTS: [&str; 7] = [
    "login", "signin", "sign-in", "sign_in", "auth", "sso", "session",
];

const REQUIRED: Item = Item {
    title: "requires authentication",
    severity: Severity::Critical,
    why: "The route answered a request that carried no valid credentials, so anyone on the internet can use it.",
    fix: "Put the route behind the authentication middleware and check it refuses missing, malformed and expired tokens with 401 (or 403).",
};

const UNVERIFIED: Item = Item {
    title: "requires authentication",
    severity: Severity::Medium,
    why: "The route answered neither 401/403 nor success, so whether it is protected could not be verified.",
    fix: "Check the path is right (a 404 means it is not served there) and that unauthenticated requests get 401 or 403 rather than an error or an unrelated redirect.",
};

/// A way of asking without valid credentials.
#[derive(Debug, Clone, Copy)]
enum Variant {
    None,
    Malformed,
    ExpiredJwt,
}

impl Variant {
    const ALL: [Variant; 3] = [Variant::None, Variant::Malformed, Variant::ExpiredJwt];

    fn label(self) -> &'static str {
        match self {
            Variant::None => "no credentials",
            Variant::Malformed => "malformed bearer token",
            Variant::ExpiredJwt => "expired JWT",
        }
    }

    fn authorization(self) -> Option<HeaderValue> {
        match self {
            Variant::None => None,
            Variant::Malformed => Some(HeaderValue::from_static(MALFORMED)),
            // Base64url and dots only: always a valid header value.
            Variant::ExpiredJwt => HeaderValue::from_str(&format!("Bearer {}", expired_jwt())).ok(),
        }
    }
}

/// What one request showed.
enum Verdict {
    Refused,
    Open,
    Unverified,
}

/// Runs the `auth_required` check: one finding per path.
pub async fn run(spec: &AuthRequiredSpec, cx: &AuditContext) -> Vec<Finding> {
    let fetcher = match Fetcher::new(cx, spec.ca_file.as_deref()) {
        Ok(f) => f,
        Err(e) => return vec![not_run(CHECK, e.to_string())],
    };
    let Ok(method) = Method::from_bytes(spec.method.as_bytes()) else {
        return vec![not_run(
            CHECK,
            format!("{:?} is not an HTTP method", spec.method),
        )];
    };
    let deadline = cx.deadline();
    let mut findings = Vec::new();
    for path in &spec.paths {
        let url = match spec.url.join(path) {
            Ok(u) if u.origin() == spec.url.origin() => u,
            Ok(u) => {
                let reason = format!(
                    "{} is not on the origin of {}: not requested",
                    redact(&u),
                    redact(&spec.url)
                );
                findings.push(titled(UNVERIFIED.judge(CHECK, false, vec![reason]), path));
                continue;
            }
            Err(e) => {
                let reason = format!("{path:?} is not a path or URL: {e}");
                findings.push(titled(UNVERIFIED.judge(CHECK, false, vec![reason]), path));
                continue;
            }
        };
        let mut evidence = Vec::new();
        let (mut open, mut unverified) = (false, false);
        for variant in Variant::ALL {
            let mut req = Request::get(&url, 0);
            req.method = method.clone();
            if let Some(auth) = variant.authorization() {
                req = req.header(AUTHORIZATION, auth);
            }
            let (verdict, seen) = match fetcher.fetch(&req, &deadline).await {
                Ok(r) => judge(&r),
                Err(e) => (Verdict::Unverified, format!("no answer: {e}")),
            };
            match verdict {
                Verdict::Open => open = true,
                Verdict::Unverified => unverified = true,
                Verdict::Refused => {}
            }
            evidence.push(format!("{} {}: {seen}", method, variant.label()));
        }
        let finding = if open {
            REQUIRED.judge(CHECK, false, evidence)
        } else if unverified {
            UNVERIFIED.judge(CHECK, false, evidence)
        } else {
            REQUIRED.judge(CHECK, true, evidence)
        };
        findings.push(titled(finding, path));
    }
    findings
}

/// Names the path in the title.
fn titled(mut f: Finding, path: &str) -> Finding {
    f.title = format!("{path} {}", f.title);
    f
}

/// The verdict on one response, and what to show of it.
fn judge(r: &Response) -> (Verdict, String) {
    let status = r.status.as_u16();
    match status {
        401 | 403 => (Verdict::Refused, format!("{status} (refused)")),
        200..=299 => (
            Verdict::Open,
            format!("{status}: got through without valid credentials"),
        ),
        300..=399 => match r.location() {
            Some(to) if is_login(&to) => (
                Verdict::Refused,
                format!("{status} to {} (a login page: refused)", redact(&to)),
            ),
            Some(to) => (
                Verdict::Unverified,
                format!(
                    "{status} to {} (not a login page: could not verify)",
                    redact(&to)
                ),
            ),
            None => (
                Verdict::Unverified,
                format!("{status} without a usable Location"),
            ),
        },
        404 => (
            Verdict::Unverified,
            "404: not served here (could not verify)".into(),
        ),
        _ => (Verdict::Unverified, format!("{status} (could not verify)")),
    }
}

/// Whether `url` looks like a login page (its path names one).
fn is_login(url: &Url) -> bool {
    let path = url.path().to_ascii_lowercase();
    LOGIN_HINTS.iter().any(|hint| path.contains(hint))
}

/// A JWT that expired a day ago, with a signature no key produced: what a
/// stolen old token, or a forged one, looks like.
fn expired_jwt() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let exp = now.saturating_sub(24 * 3600);
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(format!(
        r#"{{"sub":"vantage-audit","iat":{},"exp":{exp}}}"#,
        exp.saturating_sub(3600)
    ));
    let signature = URL_SAFE_NO_PAD.encode(b"vantage-audit: not a real signature");
    format!("{header}.{payload}.{signature}")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::audit::testsite::{Site, SiteConfig};

    async fn audit(config: SiteConfig, paths: &[&str]) -> Vec<Finding> {
        let site = Site::start(config).await;
        let spec = AuthRequiredSpec {
            url: site.https_url("/"),
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
            method: "GET".into(),
            ca_file: site.ca_file(),
        };
        run(&spec, &site.context(Duration::from_secs(10))).await
    }

    #[tokio::test]
    async fn protected_routes_pass_and_a_login_redirect_counts_as_refused() {
        let findings = audit(
            SiteConfig::good(),
            &["/admin", "/api/account", "/dashboard"],
        )
        .await;
        assert_eq!(findings.len(), 3);
        assert!(findings.iter().all(|f| f.passed), "{findings:#?}");
        assert_eq!(findings[0].title, "/admin requires authentication");
        assert_eq!(findings[0].evidence.len(), 3, "three variants");
        assert!(
            findings[2].evidence[0].contains("a login page: refused"),
            "{:#?}",
            findings[2]
        );
    }

    #[tokio::test]
    async fn an_open_route_is_critical_and_names_each_variant() {
        let config = SiteConfig {
            admin_protected: false,
            ..SiteConfig::good()
        };
        let findings = audit(config, &["/admin", "/api/account"]).await;
        let f = &findings[0];
        assert!(!f.passed);
        assert_eq!(f.severity, Severity::Critical);
        assert_eq!(f.title, "/admin requires authentication");
        for variant in ["no credentials", "malformed bearer token", "expired JWT"] {
            assert!(
                f.evidence
                    .iter()
                    .any(|e| e.contains(variant) && e.contains("200: got through")),
                "{variant}: {f:#?}"
            );
        }
        assert!(findings[1].passed, "the other route is still protected");
    }

    #[tokio::test]
    async fn a_missing_route_or_another_origin_could_not_be_verified() {
        let findings = audit(
            SiteConfig::good(),
            &["/nope", "https://elsewhere.test/admin"],
        )
        .await;
        for f in &findings {
            assert!(!f.passed);
            assert_eq!(f.severity, Severity::Medium, "{f:#?}");
        }
        assert!(findings[0].evidence[0].contains("404"));
        assert!(findings[1].evidence[0].contains("not requested"));
    }

    #[test]
    fn the_expired_jwt_decodes_with_exp_in_the_past() {
        let token = expired_jwt();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let payload = URL_SAFE_NO_PAD.decode(parts[1]).unwrap();
        let payload: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        let exp = payload["exp"].as_u64().unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(exp < now - 3600, "expired: {payload}");
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], "HS256");
    }
}
