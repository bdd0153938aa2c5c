//! `vantage-coordinator status`: the fleet and its checks in the terminal,
//! like `kubectl get`, from the API's JSON (`/api/v1/agents`,
//! `/api/v1/checks`).
//!
//! A check's state per region ([`state_of`], served by the API as `state`),
//! from the summary of the window asked for (default 5 minutes):
//! - `up`: every attempt succeeded;
//! - `degraded`: some attempts failed, but not the newest window's;
//! - `down`: the newest window's attempts all failed (so a target going
//!   down shows within one window, not after the whole summary window);
//! - `late`: no window arrived for three intervals (or 30 s, whichever is
//!   longer): the agent is gone or overloaded, so the figures are stale;
//! - `no data`: nothing yet.

use std::fmt::Write as _;

use serde_json::Value;

use crate::eval::RegionSummary;

/// A region's state for a summary of a check run every `interval_s`.
pub fn state_of(s: &RegionSummary, interval_s: f64, now_ms: i64) -> &'static str {
    if s.attempts == 0 {
        return "no data";
    }
    let stale_after_ms = (interval_s * 3.0).max(30.0) * 1000.0;
    if let Some(end) = s.last_window_end_unix_ms {
        if (now_ms - end) as f64 > stale_after_ms {
            return "late";
        }
    }
    match (s.last_window_ok, s.successes) {
        // The newest results failed: down now, whatever came before.
        (Some(false), _) | (_, 0) => "down",
        (_, n) if n >= s.attempts => "up",
        _ => "degraded",
    }
}

/// "3s ago", "5m ago", "2h ago".
fn ago(now_ms: i64, then_ms: i64) -> String {
    let s = ((now_ms - then_ms).max(0) / 1000) as u64;
    match s {
        0..=119 => format!("{s}s ago"),
        120..=7199 => format!("{}m ago", s / 60),
        _ => format!("{}h ago", s / 3600),
    }
}

/// Milliseconds for a table cell: "-" when absent.
fn ms(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x >= 100.0 => format!("{x:.0}ms"),
        Some(x) => format!("{x:.1}ms"),
        None => "-".into(),
    }
}

/// Columns padded to their widest cell, two spaces apart.
fn table(rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            let w = cell.chars().count();
            match widths.get_mut(i) {
                Some(max) => *max = (*max).max(w),
                None => widths.push(w),
            }
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count() + 2;
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

/// Keeps terminal control characters in names and errors out of the output.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The text of `status`: agents, then one row per check and region.
pub fn render(agents: &Value, checks: &Value, now_ms: i64) -> String {
    let mut out = String::new();
    let mut rows = vec![vec![
        "AGENT".to_owned(),
        "REGION".into(),
        "VERSION".into(),
        "LAST SEEN".into(),
        "CHECKS".into(),
        "BACKLOG".into(),
        "DROPPED".into(),
    ]];
    let agents = agents["agents"].as_array().cloned().unwrap_or_default();
    for a in &agents {
        rows.push(vec![
            clean(a["name"].as_str().unwrap_or("?")),
            clean(a["region"].as_str().unwrap_or("?")),
            {
                let v = clean(a["version"].as_str().unwrap_or("?"));
                // Older coordinators do not send the field: no mark then.
                if a["version_compatible"].as_bool() == Some(false) {
                    format!("{v} (incompatible)")
                } else {
                    v
                }
            },
            a["last_seen_unix_ms"]
                .as_i64()
                .map_or("-".into(), |t| ago(now_ms, t)),
            a["checks"].as_array().map_or(0, Vec::len).to_string(),
            a["spool_pending_batches"].as_u64().unwrap_or(0).to_string(),
            a["spool_dropped_windows_total"]
                .as_u64()
                .unwrap_or(0)
                .to_string(),
        ]);
    }
    if agents.is_empty() {
        out.push_str("No agents connected.\n");
    } else {
        out.push_str(&table(&rows));
    }
    out.push('\n');

    let mut rows = vec![vec![
        "CHECK".to_owned(),
        "KIND".into(),
        "REGION".into(),
        "STATE".into(),
        "AVAIL".into(),
        "P50".into(),
        "P95".into(),
        "P99".into(),
        "TLS DAYS".into(),
        "LAST ERROR".into(),
    ]];
    let text = |v: &Value| v.as_str().map_or("?".into(), clean);
    for r in check_rows(checks) {
        let l = &r["latency_ms"];
        rows.push(vec![
            text(&r["check"]),
            text(&r["kind"]),
            text(&r["region"]),
            text(&r["state"]),
            r["availability"]
                .as_f64()
                .map_or("-".into(), |a| format!("{a:.2}%")),
            ms(&l["p50"]),
            ms(&l["p95"]),
            ms(&l["p99"]),
            r["tls_days_left"]
                .as_i64()
                .map_or("-".into(), |d| d.to_string()),
            r["last_error"]
                .as_str()
                .map_or("-".into(), |e| clean(e).chars().take(60).collect()),
        ]);
    }
    if checks["checks"].as_array().is_none_or(Vec::is_empty) {
        out.push_str("No checks configured.\n");
    } else {
        out.push_str(&table(&rows));
    }
    out
}

/// One row per check and region, from `/api/v1/checks`: every configured
/// region, with data or not (`state` "no data"), then any other region
/// that reported. Each row has `check`, `kind`, `region`, `state`,
/// `availability` (percent), `attempts`, `successes`, `latency_ms`
/// (`p50`, `p95`, `p99`), `tls_days_left` and `last_error`; absent
/// figures are null.
pub fn check_rows(checks: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for c in checks["checks"].as_array().into_iter().flatten() {
        let regions = c["regions"].as_array().cloned().unwrap_or_default();
        let mut names: Vec<&str> = c["regions_configured"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        for r in &regions {
            if let Some(name) = r["region"].as_str() {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        for region in names {
            let s = regions
                .iter()
                .find(|r| r["region"] == region)
                .unwrap_or(&Value::Null);
            let l = &s["latency_ms"];
            out.push(serde_json::json!({
                "check": c["name"],
                "kind": c["kind"],
                "region": region,
                "state": s["state"].as_str().unwrap_or("no data"),
                "availability": s["availability"],
                "attempts": s["attempts"].as_u64().unwrap_or(0),
                "successes": s["successes"].as_u64().unwrap_or(0),
                "latency_ms": { "p50": l["p50"], "p95": l["p95"], "p99": l["p99"] },
                "tls_days_left": s["tls"]["days_left"],
                "last_error": s["last_error"],
            }));
        }
    }
    out
}

/// `status --json`: the agents as `/api/v1/agents` lists them, and
/// [`check_rows`], with the time it was taken.
pub fn json(agents: &Value, checks: &Value, now_ms: i64) -> Value {
    serde_json::json!({
        "generated_unix_ms": now_ms,
        "agents": agents["agents"].as_array().cloned().unwrap_or_default(),
        "checks": check_rows(checks),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_800_000_000_000;

    #[test]
    fn states_follow_the_attempts_and_the_age() {
        let s = |attempts: u64, successes: u64, age_s: i64| {
            // The merged summary of no windows, then filled in.
            let mut r = crate::eval::summarize(&[]).1;
            r.attempts = attempts;
            r.successes = successes;
            r.last_window_ok = Some(successes > 0);
            r.last_window_end_unix_ms = Some(NOW - age_s * 1000);
            r
        };
        assert_eq!(state_of(&s(10, 10, 1), 10.0, NOW), "up");
        assert_eq!(state_of(&s(10, 7, 1), 10.0, NOW), "degraded");
        assert_eq!(state_of(&s(10, 0, 1), 10.0, NOW), "down");
        assert_eq!(state_of(&s(10, 10, 31), 10.0, NOW), "late");
        assert_eq!(state_of(&s(10, 10, 31), 60.0, NOW), "up");
        assert_eq!(state_of(&s(0, 0, 1), 10.0, NOW), "no data");
        // Failures earlier in the window, the newest window fine: degraded;
        // the newest window failed after a good window: down.
        let mut recovered = s(10, 7, 1);
        recovered.last_window_ok = Some(true);
        assert_eq!(state_of(&recovered, 10.0, NOW), "degraded");
        let mut failing = s(10, 9, 1);
        failing.last_window_ok = Some(false);
        assert_eq!(state_of(&failing, 10.0, NOW), "down");
    }

    #[test]
    fn tables_line_up_and_every_configured_region_has_a_row() {
        let agents = json!({ "agents": [
            { "name": "agent-eu", "region": "eu", "version": "0.1.0",
              "last_seen_unix_ms": NOW - 2000, "checks": ["site"],
              "spool_pending_batches": 3, "spool_dropped_windows_total": 0 },
        ]});
        let checks = json!({ "checks": [{
            "name": "site", "kind": "http", "interval_s": 10.0,
            "regions_configured": ["eu", "us"],
            "regions": [{ "region": "eu", "state": "degraded", "attempts": 30, "successes": 29,
                "availability": 96.666, "last_window_end_unix_ms": NOW - 3000,
                "latency_ms": { "p50": 12.3, "p95": 45.0, "p99": 180.2 },
                "tls": { "days_left": 42 }, "last_error": "status: 503\u{1b}[2J" }],
        }]});
        let text = render(&agents, &checks, NOW);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "AGENT     REGION  VERSION  LAST SEEN  CHECKS  BACKLOG  DROPPED"
        );
        assert_eq!(
            lines[1],
            "agent-eu  eu      0.1.0    2s ago     1       3        0"
        );
        assert!(lines[3].starts_with("CHECK  KIND  REGION  STATE"), "{text}");
        assert!(
            lines[4]
                .starts_with("site   http  eu      degraded  96.67%  12.3ms  45.0ms  180ms  42"),
            "{text}"
        );
        assert!(
            lines[4].ends_with("status: 503 [2J"),
            "control characters removed: {text}"
        );
        assert!(
            lines[5].starts_with("site   http  us      no data   -"),
            "{text}"
        );
        assert_eq!(
            render(&json!({"agents": []}), &json!({"checks": []}), NOW),
            "No agents connected.\n\nNo checks configured.\n"
        );
    }
}
