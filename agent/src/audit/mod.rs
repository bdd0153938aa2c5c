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
