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
pub mod rate_limit;
pub mod redirect;
#[cfg(test)]
pub(crate) mod testsite;

/// How much a failed finding weighs in the verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth fixing; does not hold a launch.
    Low,
    /// Fix soon after launch.
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
