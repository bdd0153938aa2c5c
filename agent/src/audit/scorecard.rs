//! The scorecard of an audit: one verdict from the findings, rendered as a
//! text checklist, a stable JSON object or a self-contained HTML page.
//!
//! # Verdict
//!
//! The worst failed finding decides ([`Verdict::of`]):
//!
//! | failed findings | verdict |
//! |---|---|
//! | none, or only `low` | `ready` |
//! | `medium` or `high`, no `critical` | `ready after fixes` |
//! | any `critical` | `hold` |
//!
//! Passed findings and skipped checks never change the verdict.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::{Finding, Severity};
use crate::load::report::{self, escape};

/// The launch verdict of a whole audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// No failed finding above `low`.
    Ready,
    /// A `medium` or `high` finding failed, none `critical`.
    ReadyAfterFixes,
    /// A `critical` finding failed.
    Hold,
}

impl Verdict {
    /// The verdict of `findings` (see the module docs).
    pub fn of(findings: &[Finding]) -> Verdict {
        let worst = findings
            .iter()
            .filter(|f| !f.passed)
            .map(|f| f.severity)
            .max();
        match worst {
            None | Some(Severity::Low) => Verdict::Ready,
            Some(Severity::Medium | Severity::High) => Verdict::ReadyAfterFixes,
            Some(Severity::Critical) => Verdict::Hold,
        }
    }

    /// The contract name: `ready`, `ready after fixes`, `hold`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ready => "ready",
            Verdict::ReadyAfterFixes => "ready after fixes",
            Verdict::Hold => "hold",
        }
    }

    /// One sentence for people.
    pub fn explanation(self) -> &'static str {
        match self {
            Verdict::Ready => "no failure above low: fit to launch",
            Verdict::ReadyAfterFixes => {
                "fix the high and medium failures, then launch (no critical failure)"
            }
            Verdict::Hold => "a critical failure must be fixed before launch",
        }
    }
}

impl Serialize for Verdict {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A check that did not run, and why (a flag was not given, the target has
/// no domain ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// Contract name of the check kind.
    pub check: &'static str,
    /// Why it did not run, and how to make it run.
    pub reason: String,
}

/// Everything one audit found.
#[derive(Debug, Clone, PartialEq)]
pub struct Scorecard {
    /// What was audited (the URL as given, without credentials).
    pub target: String,
    /// When the audit started.
    pub started_at: SystemTime,
    /// How long it took.
    pub duration: Duration,
    /// Every finding, in the order the checks ran.
    pub findings: Vec<Finding>,
    /// Checks that did not run.
    pub skipped: Vec<Skipped>,
}

/// The JSON form (keys are a contract).
#[derive(Serialize)]
struct Json<'a> {
    target: &'a str,
    verdict: Verdict,
    started_at: String,
    duration_ms: u64,
    findings: &'a [Finding],
    skipped: &'a [Skipped],
}

/// Severities from the worst down, as reports list them.
const SEVERITIES: [Severity; 4] = [
    Severity::Critical,
    Severity::High,
    Severity::Medium,
    Severity::Low,
];

fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Low => "low",
        Severity::Medium => "medium",
        Severity::High => "high",
        Severity::Critical => "critical",
    }
}

impl Scorecard {
    /// The verdict of the findings.
    pub fn verdict(&self) -> Verdict {
        Verdict::of(&self.findings)
    }

    fn started_text(&self) -> String {
        let ms = self
            .started_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        report::timestamp(ms)
    }

    /// (passed, failed) findings of severity `s`.
    fn tally(&self, s: Severity) -> (usize, usize) {
        let of = self.findings.iter().filter(|f| f.severity == s);
        let failed = of.clone().filter(|f| !f.passed).count();
        (of.count() - failed, failed)
    }

    /// "12 findings: 10 passed, 2 failed (1 critical, 1 low)".
    fn summary(&self) -> String {
        let failed: Vec<String> = SEVERITIES
            .iter()
            .filter_map(|s| match self.tally(*s).1 {
                0 => None,
                n => Some(format!("{n} {}", severity_name(*s))),
            })
            .collect();
        let n_failed = self.findings.iter().filter(|f| !f.passed).count();
        let mut text = format!(
            "{} findings: {} passed, {n_failed} failed",
            self.findings.len(),
            self.findings.len() - n_failed
        );
        if !failed.is_empty() {
            let _ = write!(text, " ({})", failed.join(", "));
        }
        text
    }

    /// The stable JSON object: `target`, `verdict`, `started_at` (RFC 3339),
    /// `duration_ms`, `findings` (`check`, `title`, `passed`, `severity`,
    /// `evidence`, `why`, `fix`) and `skipped` (`check`, `reason`).
    pub fn to_json(&self) -> String {
        let json = Json {
            target: &self.target,
            verdict: self.verdict(),
            started_at: self.started_text(),
            duration_ms: u64::try_from(self.duration.as_millis()).unwrap_or(u64::MAX),
            findings: &self.findings,
            skipped: &self.skipped,
        };
        // Strings, numbers and booleans only: serializing cannot fail.
        serde_json::to_string_pretty(&json)
            .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string())
    }

    /// A checklist for a terminal: one row per finding (result, severity,
    /// check, title) with its evidence, and why and how to fix for
    /// failures; skipped checks; the verdict last.
    pub fn to_text(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "Launch-readiness audit of {}", self.target);
        let _ = writeln!(
            o,
            "started {}, took {}\n",
            self.started_text(),
            report::duration_text(self.duration)
        );
        let check_w = self
            .findings
            .iter()
            .map(|f| f.check.len())
            .chain(["CHECK".len()])
            .max()
            .unwrap_or(5);
        let _ = writeln!(
            o,
            "{:<6}  {:<8}  {:<check_w$}  FINDING",
            "RESULT", "SEVERITY", "CHECK"
        );
        let indent = " ".repeat(6 + 2 + 8 + 2 + check_w + 2);
        for f in &self.findings {
            let result = if f.passed { "PASS" } else { "FAIL" };
            let _ = writeln!(
                o,
                "{result:<6}  {:<8}  {:<check_w$}  {}",
                severity_name(f.severity),
                f.check,
                f.title
            );
            for e in &f.evidence {
                let _ = writeln!(o, "{indent}- {e}");
            }
            if !f.passed {
                let _ = writeln!(o, "{indent}why: {}", f.why);
                let _ = writeln!(o, "{indent}fix: {}", f.fix);
            }
        }
        if !self.skipped.is_empty() {
            let _ = writeln!(o, "\nNot run:");
            for s in &self.skipped {
                let _ = writeln!(o, "  {}: {}", s.check, s.reason);
            }
        }
        let verdict = self.verdict();
        let _ = writeln!(o, "\n{}", self.summary());
        let _ = writeln!(
            o,
            "VERDICT: {} ({})",
            verdict.as_str().to_uppercase(),
            verdict.explanation()
        );
        o
    }

    /// One self-contained HTML page (inline CSS and SVG, no script, nothing
    /// fetched): a verdict banner, passed and failed findings per severity as
    /// bars, then the checklist. Every string from the target is escaped.
    pub fn to_html(&self) -> String {
        let verdict = self.verdict();
        let mut o = String::with_capacity(32 * 1024);
        let _ = write!(
            o,
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <title>{} — Vantage launch-readiness audit</title>\n<style>{}{AUDIT_CSS}</style>\n\
             </head>\n<body>\n<main>\n",
            escape(&self.target),
            report::CSS
        );
        let _ = writeln!(
            o,
            "<h1>Launch-readiness audit</h1>\n<p class=\"meta\"><code>{}</code></p>\n\
             <p class=\"meta\">started {} · took {}</p>",
            escape(&self.target),
            escape(&self.started_text()),
            escape(&report::duration_text(self.duration))
        );
        let class = match verdict {
            Verdict::Ready => "good",
            Verdict::ReadyAfterFixes => "warn",
            Verdict::Hold => "bad",
        };
        let _ = writeln!(
            o,
            "<div class=\"verdict {class}\"><b>{}</b><span>{} · {}</span></div>",
            escape(&verdict.as_str().to_uppercase()),
            escape(verdict.explanation()),
            escape(&self.summary())
        );
        self.bars(&mut o);
        self.table(&mut o);
        if !self.skipped.is_empty() {
            let _ = writeln!(o, "<h2>Not run</h2>\n<ul>");
            for s in &self.skipped {
                let _ = writeln!(
                    o,
                    "<li><code>{}</code>: {}</li>",
                    escape(s.check),
                    escape(&s.reason)
                );
            }
            let _ = writeln!(o, "</ul>");
        }
        let _ = write!(
            o,
            "<p class=\"note\">Generated by Vantage. Verdict: <b>hold</b> on any failed critical \
             finding, <b>ready after fixes</b> on a failed high or medium one, else <b>ready</b>.</p>\n\
             </main>\n</body>\n</html>\n"
        );
        o
    }

    /// One bar per severity: passed (green) then failed (red), to scale.
    fn bars(&self, o: &mut String) {
        const ROW: f64 = 28.0;
        const LABEL: f64 = 90.0;
        const WIDTH: f64 = 900.0;
        const COUNTS: f64 = 130.0;
        let most = SEVERITIES
            .iter()
            .map(|s| {
                let (p, f) = self.tally(*s);
                p + f
            })
            .max()
            .unwrap_or(0)
            .max(1) as f64;
        let span = WIDTH - LABEL - COUNTS;
        let height = ROW * SEVERITIES.len() as f64 + 8.0;
        let _ = writeln!(
            o,
            "<h2>Findings by severity</h2>\n<svg viewBox=\"0 0 {WIDTH} {height}\" role=\"img\" \
             aria-label=\"passed and failed findings per severity\">"
        );
        for (i, s) in SEVERITIES.iter().enumerate() {
            let (passed, failed) = self.tally(*s);
            let y = 4.0 + ROW * i as f64;
            let pw = span * passed as f64 / most;
            let fw = span * failed as f64 / most;
            let _ = writeln!(
                o,
                "<text x=\"0\" y=\"{:.1}\">{}</text>\
                 <rect class=\"pass\" x=\"{LABEL}\" y=\"{y:.1}\" width=\"{pw:.1}\" height=\"20\"/>\
                 <rect class=\"fail\" x=\"{:.1}\" y=\"{y:.1}\" width=\"{fw:.1}\" height=\"20\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\">{passed} passed, {failed} failed</text>",
                y + 15.0,
                severity_name(*s),
                LABEL + pw,
                LABEL + pw + fw + 8.0,
                y + 15.0
            );
        }
        let _ = writeln!(
            o,
            "</svg>\n<ul class=\"legend\"><li><i class=\"sw pass\"></i>passed</li>\
             <li><i class=\"sw fail\"></i>failed</li></ul>"
        );
    }

    fn table(&self, o: &mut String) {
        let _ = writeln!(
            o,
            "<h2>Checklist</h2>\n<table>\n<tr><th>Result</th><th>Severity</th><th>Check</th>\
             <th>Finding and evidence</th><th>Why it matters · how to fix</th></tr>"
        );
        for f in &self.findings {
            let (class, result) = if f.passed {
                ("pass", "PASS")
            } else {
                ("fail", "FAIL")
            };
            let evidence: String = f
                .evidence
                .iter()
                .map(|e| format!("<li>{}</li>", escape(e)))
                .collect();
            let advice = if f.passed {
                String::new()
            } else {
                format!(
                    "<p>{}</p><p><b>Fix:</b> {}</p>",
                    escape(f.why),
                    escape(f.fix)
                )
            };
            let _ = writeln!(
                o,
                "<tr><td class=\"{class}\">{result}</td><td class=\"sev\">{}</td>\
                 <td><code>{}</code></td><td><b>{}</b><ul class=\"ev\">{evidence}</ul></td>\
                 <td class=\"advice\">{advice}</td></tr>",
                severity_name(f.severity),
                escape(f.check),
                escape(&f.title)
            );
        }
        let _ = writeln!(o, "</table>");
    }
}

/// What the scorecard adds to the load report's style sheet.
const AUDIT_CSS: &str = "
.verdict{border:2px solid;border-radius:8px;padding:12px 16px;margin:16px 0;display:flex;gap:16px;align-items:baseline;flex-wrap:wrap}
.verdict b{font-size:24px;letter-spacing:.04em}
.warn{background:#fff8c5;color:#7d4e00;border-color:#d4a72c}
svg rect.pass,.sw.pass{fill:#4ac26b;background:#4ac26b}svg rect.fail,.sw.fail{fill:#e5534b;background:#e5534b}
.legend i.sw{height:10px;width:18px;border:0}
td{vertical-align:top}td.advice p{margin:0 0 4px}ul.ev{margin:4px 0 0;padding-left:18px;color:#57606a;word-break:break-word}
";

#[cfg(test)]
mod tests {
    use super::*;

    fn f(passed: bool, severity: Severity) -> Finding {
        Finding {
            check: "email_dns",
            title: "SPF record published".into(),
            passed,
            severity,
            evidence: vec!["v=spf1 -all".into()],
            why: "why it matters",
            fix: "how to fix",
        }
    }

    fn card(findings: Vec<Finding>) -> Scorecard {
        Scorecard {
            target: "https://example.test/".into(),
            started_at: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            duration: Duration::from_millis(3250),
            findings,
            skipped: vec![Skipped {
                check: "rate_limit",
                reason: "no --login PATH given".into(),
            }],
        }
    }

    #[test]
    fn the_worst_failure_decides_the_verdict() {
        use Severity::*;
        let cases = [
            (vec![], Verdict::Ready),
            (vec![f(true, Critical), f(true, High)], Verdict::Ready),
            (vec![f(false, Low), f(true, Critical)], Verdict::Ready),
            (vec![f(false, Medium)], Verdict::ReadyAfterFixes),
            (
                vec![f(false, High), f(false, Low)],
                Verdict::ReadyAfterFixes,
            ),
            (vec![f(false, High), f(false, Critical)], Verdict::Hold),
            (vec![f(false, Critical)], Verdict::Hold),
        ];
        for (findings, expected) in cases {
            assert_eq!(Verdict::of(&findings), expected, "{findings:?}");
        }
    }

    #[test]
    fn json_shape_is_stable() {
        let card = card(vec![f(false, Severity::High), f(true, Severity::Low)]);
        let v: serde_json::Value = serde_json::from_str(&card.to_json()).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "duration_ms",
                "findings",
                "skipped",
                "started_at",
                "target",
                "verdict"
            ]
        );
        assert_eq!(v["verdict"], "ready after fixes");
        assert_eq!(v["target"], "https://example.test/");
        assert_eq!(v["duration_ms"], 3250);
        assert_eq!(v["started_at"], "2027-01-15T08:00:00Z");
        let finding = &v["findings"][0];
        let keys: Vec<&str> = finding
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            ["check", "evidence", "fix", "passed", "severity", "title", "why"]
        );
        assert_eq!(finding["severity"], "high");
        assert_eq!(finding["passed"], false);
        assert_eq!(finding["evidence"][0], "v=spf1 -all");
        assert_eq!(v["skipped"][0]["check"], "rate_limit");
    }

    #[test]
    fn text_is_a_checklist_with_the_verdict_last() {
        let text = card(vec![f(true, Severity::High), f(false, Severity::Critical)]).to_text();
        assert!(
            text.contains("RESULT  SEVERITY  CHECK      FINDING\n"),
            "{text}"
        );
        assert!(
            text.contains("PASS    high      email_dns  SPF record published\n"),
            "{text}"
        );
        assert!(
            text.contains("FAIL    critical  email_dns  SPF record published\n"),
            "{text}"
        );
        assert_eq!(text.matches("why: why it matters").count(), 1, "{text}");
        assert_eq!(text.matches("fix: how to fix").count(), 1, "{text}");
        assert!(text.contains("rate_limit: no --login PATH given"), "{text}");
        assert!(text.contains("2 findings: 1 passed, 1 failed (1 critical)"));
        let last = text.lines().last().unwrap();
        assert!(last.starts_with("VERDICT: HOLD ("), "{last}");
    }

    #[test]
    fn html_is_self_contained_and_escaped() {
        let mut hostile = f(false, Severity::Medium);
        hostile.title = "<script>alert(1)</script>".into();
        hostile.evidence = vec!["\"><img src=x onerror=alert(2)>".into()];
        let mut card = card(vec![hostile, f(true, Severity::High)]);
        card.target = "https://example.test/?q=<b>&x='1'".into();
        let html = card.to_html();
        assert!(!html.contains("<script"), "raw script tag");
        assert!(!html.contains("<img"), "raw img tag");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("&quot;&gt;&lt;img src=x onerror=alert(2)&gt;"));
        assert!(html.contains("https://example.test/?q=&lt;b&gt;&amp;x=&#39;1&#39;"));
        // Nothing fetched: no link, script, style import or image source.
        for external in ["<link", "<script", "@import", "url(", "src=\""] {
            assert!(!html.contains(external), "{external}");
        }
        assert!(html.contains("class=\"verdict warn\"><b>READY AFTER FIXES</b>"));
        assert!(html.contains("1 passed, 0 failed</text>"), "high bar");
        assert!(html.contains("0 passed, 1 failed</text>"), "medium bar");
        assert!(html.contains("<td class=\"fail\">FAIL</td>"));
        assert!(html.ends_with("</html>\n"));
    }
}
