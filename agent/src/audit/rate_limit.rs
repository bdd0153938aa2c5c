//! `rate_limit`: a bounded burst of requests against a login-like route
//! must meet a 429 before `max_requests` requests.
//!
//! The burst is sequential, one request per connection, and always bounded:
//! at most `max_requests` (capped at [`MAX_RATE_LIMIT_BURST`]) requests, and
//! nothing is sent once `within` (or the check's timeout, if shorter) has
//! passed. It stops at the first 429.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, StatusCode};
use tokio::time::Instant;
use vantage_proto::spec::{RateLimitSpec, MAX_RATE_LIMIT_BURST};
use vantage_proto::v1::ErrorClass;

use super::fetch::{Fetcher, Request};
use super::{not_run, AuditContext, Finding, Item, Severity};
use crate::probe::Deadline;

const CHECK: &str = "rate_limit";

/// Failed requests in a row after which the burst stops: the route is down
/// (or drops connections, which some limiters do; the evidence says so).
const MAX_FAILURES_IN_A_ROW: u32 = 3;

const LIMITED: Item = Item {
    title: "Rate limit answers 429",
    severity: Severity::High,
    why: "Without a limit, passwords (or codes, or tokens) can be guessed at full speed, and one client can take the route down for everyone.",
    fix: "Limit attempts per client and per account (for example 5 per minute), answer 429 with Retry-After beyond that, and log the refusals.",
};

const UNVERIFIED: Item = Item {
    title: "Rate limit answers 429",
    severity: Severity::Medium,
    why: "The burst got no answers, so whether the route is rate limited could not be verified.",
    fix: "Check the URL is reachable from the agent; if the limiter drops connections instead of answering, prefer a 429 so clients can back off.",
};

/// Runs the `rate_limit` check: one finding.
pub async fn run(spec: &RateLimitSpec, cx: &AuditContext) -> Vec<Finding> {
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
    let mut request = Request::get(&spec.url, 0);
    request.method = method;
    request.body = Bytes::from(spec.body.clone().unwrap_or_default());
    if let Some(ct) = &spec.content_type {
        let Ok(ct) = HeaderValue::from_str(ct) else {
            return vec![not_run(
                CHECK,
                format!("content_type {ct:?} is not a header value"),
            )];
        };
        request = request.header(CONTENT_TYPE, ct);
    }

    let max = spec.max_requests.clamp(1, MAX_RATE_LIMIT_BURST);
    let deadline = Deadline::after(cx.timeout.min(spec.within));
    let started = Instant::now();
    let mut statuses: BTreeMap<u16, u32> = BTreeMap::new();
    let mut sent = 0;
    let mut failures_in_a_row = 0;
    let mut last_error = None;
    while sent < max && !deadline.remaining().is_zero() {
        sent += 1;
        match fetcher.fetch(&request, &deadline).await {
            Ok(r) if r.status == StatusCode::TOO_MANY_REQUESTS => {
                let mut evidence = vec![format!(
                    "429 after {sent} request(s) in {} ms",
                    started.elapsed().as_millis()
                )];
                if let Some(after) = r.header("retry-after") {
                    evidence.push(format!("Retry-After: {after}"));
                }
                evidence.push(tally(&statuses));
                return vec![LIMITED.judge(CHECK, true, evidence)];
            }
            Ok(r) => {
                failures_in_a_row = 0;
                *statuses.entry(r.status.as_u16()).or_default() += 1;
            }
            Err(e) if e.class == ErrorClass::Timeout => {
                // The deadline passed mid-request: that request does not count.
                sent -= 1;
                break;
            }
            Err(e) => {
                failures_in_a_row += 1;
                last_error = Some(e);
                if failures_in_a_row >= MAX_FAILURES_IN_A_ROW {
                    break;
                }
            }
        }
    }
    let elapsed = started.elapsed();
    let mut evidence = vec![format!(
        "no 429 in {sent} request(s) over {} ms (max_requests {max}, within {})",
        elapsed.as_millis(),
        humantime::format_duration(spec.within)
    )];
    evidence.push(tally(&statuses));
    if let Some(e) = last_error {
        evidence.push(format!("last failure: {e}"));
    }
    let item = if statuses.is_empty() {
        UNVERIFIED
    } else {
        LIMITED
    };
    vec![item.judge(CHECK, false, evidence)]
}

/// `statuses: 401×5, 200×1` (or `statuses: none`).
fn tally(statuses: &BTreeMap<u16, u32>) -> String {
    if statuses.is_empty() {
        return "statuses before: none".into();
    }
    let parts: Vec<String> = statuses.iter().map(|(s, n)| format!("{s}×{n}")).collect();
    format!("statuses before: {}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::audit::testsite::{Site, SiteConfig, LOGIN_LIMIT};

    fn spec(site: &Site, max_requests: u32, within: Duration) -> RateLimitSpec {
        RateLimitSpec {
            url: site.https_url("/login"),
            method: "POST".into(),
            body: Some(r#"{"user":"audit","password":"wrong"}"#.into()),
            content_type: Some("application/json".into()),
            max_requests,
            within,
            ca_file: site.ca_file(),
        }
    }

    #[tokio::test]
    async fn a_limited_login_passes_at_the_first_429() {
        let site = Site::start(SiteConfig::good()).await;
        let findings = run(
            &spec(&site, 20, Duration::from_secs(10)),
            &site.context(Duration::from_secs(10)),
        )
        .await;
        let f = &findings[0];
        assert!(f.passed, "{f:#?}");
        let n = LOGIN_LIMIT + 1;
        assert!(
            f.evidence[0].starts_with(&format!("429 after {n} request(s)")),
            "{f:#?}"
        );
        assert_eq!(f.evidence[1], "Retry-After: 30");
        assert_eq!(f.evidence[2], format!("statuses before: 401×{LOGIN_LIMIT}"));
        assert_eq!(site.login_attempts(), n, "nothing sent after the 429");
    }

    #[tokio::test]
    async fn no_limit_fails_high_after_exactly_max_requests() {
        let site = Site::start(SiteConfig {
            login_rate_limit: false,
            ..SiteConfig::good()
        })
        .await;
        let findings = run(
            &spec(&site, 12, Duration::from_secs(10)),
            &site.context(Duration::from_secs(10)),
        )
        .await;
        let f = &findings[0];
        assert!(!f.passed);
        assert_eq!(f.severity, Severity::High);
        assert!(
            f.evidence[0].starts_with("no 429 in 12 request(s)"),
            "{f:#?}"
        );
        assert_eq!(site.login_attempts(), 12);
    }

    #[tokio::test]
    async fn the_burst_stops_when_within_elapses() {
        let site = Site::start(SiteConfig {
            login_rate_limit: false,
            ..SiteConfig::good()
        })
        .await;
        let within = Duration::from_millis(200);
        let started = std::time::Instant::now();
        let findings = run(
            &spec(&site, MAX_RATE_LIMIT_BURST, within),
            &site.context(Duration::from_secs(10)),
        )
        .await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert!(!findings[0].passed);
        assert!(
            site.login_attempts() < MAX_RATE_LIMIT_BURST,
            "{}",
            site.login_attempts()
        );
    }

    #[tokio::test]
    async fn an_unreachable_route_could_not_be_verified() {
        let site = Site::start(SiteConfig::good()).await;
        let closed = crate::probe::testkit::closed_port().await;
        let mut s = spec(&site, 20, Duration::from_secs(5));
        s.url = format!("https://site.test:{}/login", closed.port())
            .parse()
            .unwrap();
        let findings = run(&s, &site.context(Duration::from_secs(5))).await;
        let f = &findings[0];
        assert!(!f.passed);
        assert_eq!(f.severity, Severity::Medium);
        assert!(
            f.evidence[0].starts_with("no 429 in 3 request(s)"),
            "{f:#?}"
        );
    }
}
