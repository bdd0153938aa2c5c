//! `latency`: a short sample of sequential GETs of the page through the
//! `http` probe; the page must answer every one, with p95 under the limit.
//!
//! One finding, "Page answers quickly (p95 under 500 ms)": high when a
//! request fails (status, connect, TLS ...), medium when p95 is at or over
//! the limit or the sample did not finish within the check's timeout.

use std::time::Duration;

use tokio::time::Instant;
use url::Url;
use vantage_proto::spec::HttpSpec;

use super::{AuditContext, Finding, Severity};
use crate::probe::http::HttpProbe;
use crate::probe::Probe;

/// Contract name of the check.
pub const CHECK: &str = "latency";

/// Requests in the default sample: enough for a p95 that means something,
/// few enough to take a second or two on a healthy site.
pub const DEFAULT_REQUESTS: u32 = 20;

/// The default p95 limit: a page start slower than this is felt by users.
pub const DEFAULT_P95_LIMIT: Duration = Duration::from_millis(500);

const WHY: &str = "A page that errors or answers slowly loses visitors at launch, when first impressions and load are highest.";
const FIX: &str = "Fix the failing responses in the evidence; for slowness, profile the page's server time, add caching or a CDN, and re-run the audit.";

/// What to sample.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencySpec {
    /// The page to GET (redirects followed).
    pub url: Url,
    /// Sequential requests.
    pub requests: u32,
    /// p95 must stay under this.
    pub p95_limit: Duration,
    /// Extra trust anchors (PEM path).
    pub ca_file: Option<String>,
}

/// Runs the sample: all requests within `cx.timeout`, hosts in
/// `cx.resolve` connected to at their address.
pub async fn run(spec: &LatencySpec, cx: &AuditContext) -> Vec<Finding> {
    let limit_ms = spec.p95_limit.as_millis();
    let title = format!("Page answers quickly (p95 under {limit_ms} ms)");
    let http = HttpSpec {
        ca_file: spec.ca_file.clone(),
        ..HttpSpec::get(spec.url.clone())
    };
    let probe = match HttpProbe::new(http, cx.timeout, cx.egress.clone()) {
        Ok(p) => p.with_resolve(cx.resolve.clone()),
        Err(e) => return vec![finding(title, false, Severity::High, vec![e.to_string()])],
    };
    let deadline = Instant::now() + cx.timeout;
    let mut times = Vec::new();
    let mut errors = Vec::new();
    let mut sent = 0;
    for _ in 0..spec.requests {
        let Ok(out) = tokio::time::timeout_at(deadline, probe.run()).await else {
            break;
        };
        sent += 1;
        match out.error {
            None => times.push(out.phases.total),
            Some(e) => errors.push(e.to_string()),
        }
    }
    let mut evidence = vec![format!(
        "{} of {} requests answered",
        times.len(),
        spec.requests
    )];
    times.sort();
    if !times.is_empty() {
        evidence.push(format!(
            "p50 {} ms, p95 {} ms, max {} ms",
            quantile(&times, 0.5).as_millis(),
            quantile(&times, 0.95).as_millis(),
            times[times.len() - 1].as_millis()
        ));
    }
    if !errors.is_empty() {
        evidence.push(format!("{} failed, first: {}", errors.len(), errors[0]));
        return vec![finding(title, false, Severity::High, evidence)];
    }
    if sent < spec.requests {
        evidence.push(format!(
            "stopped after {sent} requests: the sample took longer than the timeout ({})",
            humantime::format_duration(cx.timeout)
        ));
        return vec![finding(title, false, Severity::Medium, evidence)];
    }
    let passed = !times.is_empty() && quantile(&times, 0.95) < spec.p95_limit;
    vec![finding(title, passed, Severity::Medium, evidence)]
}

/// The nearest-rank quantile `q` of sorted, non-empty `times`.
fn quantile(times: &[Duration], q: f64) -> Duration {
    let rank = (q * times.len() as f64).ceil() as usize;
    times[rank.clamp(1, times.len()) - 1]
}

fn finding(title: String, passed: bool, severity: Severity, evidence: Vec<String>) -> Finding {
    Finding {
        check: CHECK,
        title,
        passed,
        severity,
        evidence,
        why: WHY,
        fix: FIX,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::probe::testkit::{self, open};

    fn cx(timeout: Duration) -> AuditContext {
        AuditContext {
            timeout,
            egress: open(),
            resolve: HashMap::new(),
        }
    }

    fn spec(url: String, limit: Duration) -> LatencySpec {
        LatencySpec {
            url: url.parse().unwrap(),
            requests: 5,
            p95_limit: limit,
            ca_file: None,
        }
    }

    #[test]
    fn nearest_rank_quantiles() {
        let ms: Vec<Duration> = (1..=20).map(Duration::from_millis).collect();
        assert_eq!(quantile(&ms, 0.5), Duration::from_millis(10));
        assert_eq!(quantile(&ms, 0.95), Duration::from_millis(19));
        assert_eq!(quantile(&ms[..1], 0.95), Duration::from_millis(1));
    }

    #[tokio::test]
    async fn a_fast_page_passes_a_failing_one_does_not() {
        let addr = testkit::http_server().await;
        let ok = spec(format!("http://{addr}/"), DEFAULT_P95_LIMIT);
        let f = run(&ok, &cx(Duration::from_secs(5))).await;
        assert!(f[0].passed, "{f:?}");
        assert_eq!(f[0].evidence[0], "5 of 5 requests answered");
        assert!(f[0].evidence[1].starts_with("p50 "), "{f:?}");

        // Over a zero limit: slow.
        let slow = spec(format!("http://{addr}/"), Duration::ZERO);
        let f = run(&slow, &cx(Duration::from_secs(5))).await;
        assert_eq!((f[0].passed, f[0].severity), (false, Severity::Medium));

        let closed = testkit::closed_port().await;
        let down = spec(format!("http://{closed}/"), DEFAULT_P95_LIMIT);
        let f = run(&down, &cx(Duration::from_secs(5))).await;
        assert_eq!((f[0].passed, f[0].severity), (false, Severity::High));
        assert!(
            f[0].evidence[1].starts_with("5 failed, first: connect:"),
            "{f:?}"
        );

        // A server that never answers: stopped at the check's timeout.
        let silent = testkit::silent_server().await;
        let hung = spec(format!("http://{silent}/"), DEFAULT_P95_LIMIT);
        let start = std::time::Instant::now();
        let f = run(&hung, &cx(Duration::from_millis(500))).await;
        assert!(start.elapsed() < Duration::from_secs(2));
        assert!(!f[0].passed, "{f:?}");
    }
}
