//! Alerting keys: the `[alerting]` table, `[[channel]]` and `[[maintenance]]`
//! tables, and the alert keys of a `[[check]]` (`thresholds`, `quorum`,
//! `failure_threshold`, `for`, `channels`, `warn_days`, `critical_days`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vantage_proto::spec::ProbeKind;
use vantage_proto::threshold::Threshold;

use super::reader::{self, Ctx, Field, Reported, TableReader};
use crate::alert::{
    ChannelConfig, ChannelKind, EmailConfig, Severity, SlackConfig, SmtpTls, WebhookConfig,
};
use crate::secret::{Secret, SecretSource};

/// Default `alerting.eval_interval`.
pub const DEFAULT_EVAL_INTERVAL: Duration = Duration::from_secs(15);
/// Default `alerting.window`.
pub const DEFAULT_ALERT_WINDOW: Duration = Duration::from_secs(300);
/// Default `alerting.repeat_interval`.
pub const DEFAULT_REPEAT_INTERVAL: Duration = Duration::from_secs(4 * 3600);
/// Default `alerting.agent_down_after`: twice the agents' 15 s heartbeat.
pub const DEFAULT_AGENT_DOWN_AFTER: Duration = Duration::from_secs(30);
/// Default `failure_threshold` of a check.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 2;
/// Default `warn_days` of a tls check.
pub const DEFAULT_WARN_DAYS: i64 = 21;
/// Default `critical_days` of a tls check.
pub const DEFAULT_CRITICAL_DAYS: i64 = 7;
/// Default timeout of one channel delivery.
pub const DEFAULT_CHANNEL_TIMEOUT: Duration = Duration::from_secs(10);

/// The `[alerting]` table, defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertingConfig {
    /// `eval_interval`: how often every check is evaluated (1s to 5m).
    pub eval_interval: Duration,
    /// `window`: the sliding window thresholds are evaluated over (10s to 24h).
    pub window: Duration,
    /// `repeat_interval`: reminders while an alert fires; `None` when `"0s"`.
    pub repeat_interval: Option<Duration>,
    /// `send_resolved`: notify when an alert resolves (default true).
    pub send_resolved: bool,
    /// `dashboard_url`: base URL for links in notifications.
    pub dashboard_url: Option<String>,
    /// `agent_down_after`: silence after which an agent is `agent_down`.
    pub agent_down_after: Duration,
}

impl Default for AlertingConfig {
    fn default() -> Self {
        AlertingConfig {
            eval_interval: DEFAULT_EVAL_INTERVAL,
            window: DEFAULT_ALERT_WINDOW,
            repeat_interval: Some(DEFAULT_REPEAT_INTERVAL),
            send_resolved: true,
            dashboard_url: None,
            agent_down_after: DEFAULT_AGENT_DOWN_AFTER,
        }
    }
}

/// One rule of a check.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleSpec {
    /// `down`: `failure_threshold` failures in a row.
    Down {
        /// Failures in a row that make a region count as down.
        failure_threshold: u32,
    },
    /// A threshold expression that must hold (`p(95)<500`).
    Threshold {
        /// The expression as written in the config (the rule's name).
        text: String,
        /// Parsed form.
        threshold: Threshold,
        /// Warning, or critical for `critical_days`.
        severity: Severity,
    },
}

impl RuleSpec {
    /// The rule's name in alerts: `down`, or the expression.
    pub fn name(&self) -> &str {
        match self {
            RuleSpec::Down { .. } => "down",
            RuleSpec::Threshold { text, .. } => text,
        }
    }

    /// The rule's severity.
    pub fn severity(&self) -> Severity {
        match self {
            RuleSpec::Down { .. } => Severity::Critical,
            RuleSpec::Threshold { severity, .. } => *severity,
        }
    }
}

/// The alert keys of one check.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckAlerting {
    /// `down`, then `thresholds` in file order, then the TLS expiry rules.
    pub rules: Vec<RuleSpec>,
    /// `quorum`: regions that must agree (default 2, or 1 for one region).
    pub quorum: usize,
    /// `for`: how long a breach must last before it fires (default 0).
    pub pending_for: Duration,
    /// `channels`: where notifications go; `None` means every channel.
    pub channels: Option<Vec<String>>,
}

/// One `[[maintenance]]` window: no notifications for its checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Maintenance {
    /// `checks`: the checks concerned; empty means all.
    pub checks: Vec<String>,
    /// `start`, unix milliseconds.
    pub start_unix_ms: i64,
    /// `end`, unix milliseconds.
    pub end_unix_ms: i64,
    /// `comment`.
    pub comment: String,
}

impl Maintenance {
    /// Whether the window covers `check` at `now_ms`.
    pub fn covers(&self, check: &str, now_ms: i64) -> bool {
        (self.start_unix_ms..self.end_unix_ms).contains(&now_ms)
            && (self.checks.is_empty() || self.checks.iter().any(|c| c == check))
    }
}

pub(super) fn read_alerting(
    cx: &mut Ctx<'_>,
    root: &mut TableReader<'_, '_>,
    result_window: Duration,
) -> AlertingConfig {
    let mut a = AlertingConfig::default();
    let Some(field) = root.field("alerting") else {
        return a;
    };
    let Ok(mut r) = field.table(cx, "a table ([alerting])") else {
        return a;
    };
    let ranged = |min: Duration, max: Duration| {
        move |cx: &mut Ctx<'_>, f: &Field<'_, '_>| {
            let d = reader::duration(cx, f)?;
            if (min..=max).contains(&d) {
                Ok(d)
            } else {
                Err(f.error(cx, super::out_of_range(d, min, max)))
            }
        }
    };
    let secs = Duration::from_secs;
    if let Ok(Some(d)) = r.optional(cx, "eval_interval", ranged(secs(1), secs(300))) {
        a.eval_interval = d;
    }
    if let Ok(Some(d)) = r.optional(cx, "window", |cx, f| {
        let d = ranged(secs(10), secs(24 * 3600))(cx, f)?;
        if d < result_window {
            return Err(f.error(
                cx,
                format!(
                    "{} is shorter than server.window ({}): the alert window must hold at least one result window",
                    vantage_proto::spec::humantime_like(d),
                    vantage_proto::spec::humantime_like(result_window)
                ),
            ));
        }
        Ok(d)
    }) {
        a.window = d;
    }
    if let Ok(Some(d)) = r.optional(cx, "repeat_interval", |cx, f| {
        let d = reader::duration(cx, f)?;
        if d.is_zero() {
            return Ok(None);
        }
        ranged(secs(60), secs(30 * 24 * 3600))(cx, f).map(Some)
    }) {
        a.repeat_interval = d;
    }
    if let Ok(Some(b)) = r.optional(cx, "send_resolved", reader::boolean) {
        a.send_resolved = b;
    }
    if let Ok(Some(u)) = r.optional(cx, "dashboard_url", |cx, f| {
        let s = reader::string(cx, f)?;
        match url::Url::parse(&s) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Ok(s),
            _ => Err(f.error(
                cx,
                format!("{s:?} is not an http(s) URL, like \"https://vantage.example.com/\""),
            )),
        }
    }) {
        a.dashboard_url = Some(u);
    }
    if let Ok(Some(d)) = r.optional(cx, "agent_down_after", ranged(secs(10), secs(3600))) {
        a.agent_down_after = d;
    }
    r.finish(cx);
    a
}

/// Reads `[[channel]]` tables. Secrets are read here, so a missing variable
/// or file is a config error at its key (naming the source, not the value).
/// Also returns the name of every channel table, valid or not, so checks
/// that name a broken channel are not also told it does not exist.
pub(super) fn read_channels(
    cx: &mut Ctx<'_>,
    root: &mut TableReader<'_, '_>,
    base_dir: &Path,
) -> (Vec<ChannelConfig>, Vec<String>) {
    let Some(field) = root.field("channel") else {
        return (Vec::new(), Vec::new());
    };
    let Ok(elements) = field.array(cx, "an array of tables ([[channel]])") else {
        return (Vec::new(), Vec::new());
    };
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    for (i, element) in elements.iter().enumerate() {
        let Ok(mut r) = element.table(cx, "a table ([[channel]])") else {
            continue;
        };
        let name = r.required(cx, "name", |cx, f| {
            super::unique_name(cx, f, ("channel", i), &mut names)
        });
        let kind = r.required(cx, "kind", |cx, f| {
            let s = reader::string(cx, f)?;
            match s.as_str() {
                "slack" | "email" | "webhook" => Ok(s),
                _ => Err(f.error(
                    cx,
                    format!("{s:?} is not a channel kind: use one of slack, email, webhook"),
                )),
            }
        });
        let timeout = r
            .optional(cx, "timeout", |cx, f| {
                let d = reader::duration(cx, f)?;
                let (min, max) = (Duration::from_secs(1), Duration::from_secs(120));
                if (min..=max).contains(&d) {
                    Ok(d)
                } else {
                    Err(f.error(cx, super::out_of_range(d, min, max)))
                }
            })
            .ok()
            .flatten()
            .unwrap_or(DEFAULT_CHANNEL_TIMEOUT);
        let ca_file = r
            .optional(cx, "ca_file", non_empty_string)
            .ok()
            .flatten()
            .map(|p| base_dir.join(p));
        let kind = match kind.as_deref() {
            Ok("slack") => read_secret(cx, &mut r, "webhook_url", base_dir).map(|webhook_url| {
                ChannelKind::Slack(SlackConfig {
                    webhook_url,
                    timeout,
                    ca_file,
                })
            }),
            Ok("webhook") => read_secret(cx, &mut r, "url", base_dir).map(|url| {
                ChannelKind::Webhook(WebhookConfig {
                    url,
                    timeout,
                    ca_file,
                })
            }),
            Ok("email") => {
                read_email(cx, &mut r, base_dir, timeout, ca_file).map(ChannelKind::Email)
            }
            _ => {
                r.allow(CHANNEL_KEYS);
                None
            }
        };
        r.finish(cx);
        if let (Ok(name), Some(kind)) = (name, kind) {
            out.push(ChannelConfig { name, kind });
        }
    }
    let mut all: Vec<(String, usize)> = names.into_iter().collect();
    all.sort_by_key(|(_, i)| *i);
    (out, all.into_iter().map(|(n, _)| n).collect())
}

/// Kind-specific channel keys, accepted without judgement when the kind is bad.
const CHANNEL_KEYS: &[&str] = &[
    "webhook_url",
    "url",
    "host",
    "port",
    "tls",
    "username",
    "password",
    "from",
    "to",
];

fn non_empty_string(cx: &mut Ctx<'_>, f: &Field<'_, '_>) -> Result<String, Reported> {
    let s = reader::string(cx, f)?;
    if s.is_empty() {
        return Err(f.error(cx, "must not be empty; leave the key out instead"));
    }
    Ok(s)
}

/// A secret key: `{ env = "NAME" }` or `{ file = "path" }`, read now.
fn read_secret(
    cx: &mut Ctx<'_>,
    r: &mut TableReader<'_, '_>,
    key: &'static str,
    base_dir: &Path,
) -> Option<Secret> {
    r.required(cx, key, |cx, f| secret(cx, f, base_dir)).ok()
}

pub(super) fn secret(
    cx: &mut Ctx<'_>,
    f: &Field<'_, '_>,
    base_dir: &Path,
) -> Result<Secret, Reported> {
    const FORM: &str = "secrets are read from the environment or a file, never written in the config: use { env = \"NAME\" } or { file = \"path\" }";
    let toml::de::DeValue::Table(_) = f.value.get_ref() else {
        // Never echo the value: it may be the secret itself.
        return Err(f.error(cx, FORM));
    };
    let mut t = f.table(cx, "a table")?;
    let env = t.optional(cx, "env", non_empty_string);
    let file = t.optional(cx, "file", non_empty_string);
    t.finish(cx);
    let source = match (env, file) {
        (Ok(Some(name)), Ok(None)) => SecretSource::Env(name),
        (Ok(None), Ok(Some(path))) => SecretSource::File(base_dir.join(PathBuf::from(path))),
        (Ok(_), Ok(_)) => return Err(f.error(cx, FORM)),
        _ => return Err(Reported),
    };
    source.read().map_err(|e| f.error(cx, e))
}

fn read_email(
    cx: &mut Ctx<'_>,
    r: &mut TableReader<'_, '_>,
    base_dir: &Path,
    timeout: Duration,
    ca_file: Option<PathBuf>,
) -> Option<EmailConfig> {
    let host = r.required(cx, "host", non_empty_string);
    let tls = r
        .optional(cx, "tls", |cx, f| {
            let s = reader::string(cx, f)?;
            match s.as_str() {
                "starttls" => Ok(SmtpTls::StartTls),
                "implicit" => Ok(SmtpTls::Implicit),
                _ => Err(f.error(
                    cx,
                    format!(
                        "{s:?} is not a TLS mode: use \"starttls\" (port 587) or \"implicit\" (port 465); plaintext SMTP is not supported"
                    ),
                )),
            }
        })
        .map(|t| t.unwrap_or(SmtpTls::StartTls));
    let port = r.optional(cx, "port", |cx, f| {
        let n = reader::integer(cx, f, "a port number (1-65535)")?;
        match u16::try_from(n) {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(f.error(cx, format!("{n} is not a valid port: use 1-65535"))),
        }
    });
    let username = r.optional(cx, "username", non_empty_string);
    let password = r.optional(cx, "password", |cx, f| secret(cx, f, base_dir));
    let from = r.required(cx, "from", non_empty_string);
    let to = r.required(cx, "to", |cx, f| {
        let items = f.array(cx, "an array of addresses like [\"oncall@example.com\"]")?;
        if items.is_empty() {
            return Err(f.error(cx, "must list at least one recipient"));
        }
        let mut out = Vec::new();
        for item in &items {
            out.push(non_empty_string(cx, item)?);
        }
        Ok(out)
    });
    if let (Ok(Some(_)), Ok(None)) | (Ok(None), Ok(Some(_))) = (&username, &password) {
        let at = r.key_span("username").or_else(|| r.key_span("password"));
        let at = at.unwrap_or_else(|| r.header().clone());
        let key = if username.as_ref().is_ok_and(Option::is_some) {
            "username"
        } else {
            "password"
        };
        cx.error(
            &at,
            &r.key_path(key),
            "give both username and password, or neither",
        );
        return None;
    }
    let tls = tls.ok()?;
    let default_port = match tls {
        SmtpTls::StartTls => 587,
        SmtpTls::Implicit => 465,
    };
    Some(EmailConfig {
        host: host.ok()?,
        port: port.ok()?.unwrap_or(default_port),
        tls,
        username: username.ok()?,
        password: password.ok()?,
        from: from.ok()?,
        to: to.ok()?,
        ca_file,
        timeout,
    })
}

/// Alert keys of tls checks only.
pub(super) const TLS_ALERT_KEYS: &[&str] = &["warn_days", "critical_days"];

/// Reads the alert keys of one check.
pub(super) fn read_check_alerting(
    cx: &mut Ctx<'_>,
    r: &mut TableReader<'_, '_>,
    kind: Option<ProbeKind>,
    regions: usize,
    channels: &[String],
) -> CheckAlerting {
    let failure_threshold = r
        .optional(cx, "failure_threshold", |cx, f| {
            let n = reader::integer(cx, f, "an integer from 1 to 100")?;
            match u32::try_from(n) {
                Ok(n) if (1..=100).contains(&n) => Ok(n),
                _ => Err(f.error(cx, format!("{n} is out of range: use 1 to 100"))),
            }
        })
        .ok()
        .flatten()
        .unwrap_or(DEFAULT_FAILURE_THRESHOLD);
    let mut rules = vec![RuleSpec::Down { failure_threshold }];
    if let Ok(Some(list)) = r.optional(cx, "thresholds", read_thresholds) {
        rules.extend(list);
    }
    let default_quorum = regions.clamp(1, 2);
    let quorum = r
        .optional(cx, "quorum", |cx, f| {
            let n = reader::integer(cx, f, "an integer number of regions")?;
            match usize::try_from(n) {
                Ok(q) if q >= 1 && (regions == 0 || q <= regions) => Ok(q),
                _ => Err(f.error(
                    cx,
                    format!(
                        "{n} is out of range: use 1 to {} (the check's regions)",
                        regions.max(1)
                    ),
                )),
            }
        })
        .ok()
        .flatten()
        .unwrap_or(default_quorum);
    let pending_for = r
        .optional(cx, "for", |cx, f| {
            let d = reader::duration(cx, f)?;
            let max = Duration::from_secs(24 * 3600);
            if d <= max {
                Ok(d)
            } else {
                Err(f.error(cx, super::out_of_range(d, Duration::ZERO, max)))
            }
        })
        .ok()
        .flatten()
        .unwrap_or(Duration::ZERO);
    let channels = r
        .optional(cx, "channels", |cx, f| {
            let items = f.array(cx, "an array of channel names like [\"ops-slack\"]")?;
            let mut out = Vec::new();
            for item in &items {
                let name = reader::string(cx, item)?;
                if !channels.contains(&name) {
                    let known: Vec<_> = channels.iter().map(String::as_str).collect();
                    let known = if known.is_empty() {
                        "no [[channel]] is defined".to_owned()
                    } else {
                        format!("defined channels: {}", known.join(", "))
                    };
                    return Err(item.error(cx, format!("unknown channel {name:?}; {known}")));
                }
                out.push(name);
            }
            Ok(out)
        })
        .ok()
        .flatten();
    if kind == Some(ProbeKind::Tls) {
        let days = |cx: &mut Ctx<'_>, f: &Field<'_, '_>| {
            let n = reader::integer(cx, f, "a number of days (0 turns the rule off)")?;
            if (0..=3650).contains(&n) {
                Ok(n)
            } else {
                Err(f.error(cx, format!("{n} is out of range: use 0 to 3650 days")))
            }
        };
        let warn = r.optional(cx, "warn_days", days).ok().flatten();
        let critical = r.optional(cx, "critical_days", days).ok().flatten();
        for (days, severity) in [
            (warn.unwrap_or(DEFAULT_WARN_DAYS), Severity::Warning),
            (
                critical.unwrap_or(DEFAULT_CRITICAL_DAYS),
                Severity::Critical,
            ),
        ] {
            if days > 0 {
                let text = format!("days_left>={days}");
                if let Ok(threshold) = text.parse() {
                    rules.push(RuleSpec::Threshold {
                        text,
                        threshold,
                        severity,
                    });
                }
            }
        }
    } else if kind.is_some() {
        for key in TLS_ALERT_KEYS {
            r.reject(
                cx,
                key,
                &format!(
                    "`{key}` applies to tls checks only; use a threshold like \"days_left>14\""
                ),
            );
        }
    } else {
        r.allow(TLS_ALERT_KEYS);
    }
    CheckAlerting {
        rules,
        quorum,
        pending_for,
        channels,
    }
}

fn read_thresholds(cx: &mut Ctx<'_>, f: &Field<'_, '_>) -> Result<Vec<RuleSpec>, Reported> {
    let items = f.array(
        cx,
        "an array of expressions like [\"p(95)<500\", \"rate<0.01\"]",
    )?;
    let mut out: Vec<RuleSpec> = Vec::new();
    let mut failed = false;
    for item in &items {
        let Ok(text) = reader::string(cx, item) else {
            failed = true;
            continue;
        };
        match text.parse::<Threshold>() {
            Ok(threshold) => {
                let canonical = threshold.to_string();
                if out.iter().any(|r| match r {
                    RuleSpec::Threshold { threshold: t, .. } => t.to_string() == canonical,
                    RuleSpec::Down { .. } => false,
                }) {
                    item.error(cx, format!("{text:?} is listed twice"));
                    failed = true;
                    continue;
                }
                out.push(RuleSpec::Threshold {
                    text: text.trim().to_owned(),
                    threshold,
                    severity: Severity::Warning,
                });
            }
            Err(e) => {
                item.error(cx, format!("{text:?}: {e}"));
                failed = true;
            }
        }
    }
    if failed {
        Err(Reported)
    } else {
        Ok(out)
    }
}

/// Reads `[[maintenance]]` tables; `check_names` are the checks defined.
pub(super) fn read_maintenance(
    cx: &mut Ctx<'_>,
    root: &mut TableReader<'_, '_>,
    check_names: &[&str],
) -> Vec<Maintenance> {
    let Some(field) = root.field("maintenance") else {
        return Vec::new();
    };
    let Ok(elements) = field.array(cx, "an array of tables ([[maintenance]])") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for element in &elements {
        let Ok(mut r) = element.table(cx, "a table ([[maintenance]])") else {
            continue;
        };
        let checks = r.optional(cx, "checks", |cx, f| {
            let items = f.array(cx, "an array of check names")?;
            let mut out = Vec::new();
            for item in &items {
                let name = reader::string(cx, item)?;
                if !check_names.contains(&name.as_str()) {
                    return Err(item.error(cx, format!("no check is named {name:?}")));
                }
                out.push(name);
            }
            Ok(out)
        });
        let start = r.required(cx, "start", timestamp);
        let end = r.required(cx, "end", timestamp);
        let comment = r.optional(cx, "comment", reader::string);
        if let (Ok(s), Ok(e)) = (&start, &end) {
            if e <= s {
                let at = r.key_span("end").unwrap_or_else(|| r.header().clone());
                cx.error(&at, &r.key_path("end"), "must be after `start`");
            }
        }
        r.finish(cx);
        if let (Ok(checks), Ok(start), Ok(end), Ok(comment)) = (checks, start, end, comment) {
            out.push(Maintenance {
                checks: checks.unwrap_or_default(),
                start_unix_ms: start,
                end_unix_ms: end,
                comment: comment.unwrap_or_default(),
            });
        }
    }
    out
}

/// An RFC 3339 time (`"2026-12-01T22:00:00Z"` or a TOML datetime with an
/// offset) as unix milliseconds.
fn timestamp(cx: &mut Ctx<'_>, f: &Field<'_, '_>) -> Result<i64, Reported> {
    let text = match f.value.get_ref() {
        toml::de::DeValue::String(s) => s.to_string(),
        toml::de::DeValue::Datetime(d) => d.to_string(),
        _ => return Err(f.type_error(cx, "an RFC 3339 time like 2026-12-01T22:00:00Z")),
    };
    let parsed = humantime::parse_rfc3339_weak(&text)
        .ok()
        .filter(|_| text.ends_with('Z') || text.ends_with('z'))
        .or_else(|| rfc3339_with_offset(&text));
    match parsed {
        Some(t) => Ok(t
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)),
        None => Err(f.error(
            cx,
            format!("{text:?} is not an RFC 3339 time with a zone, like \"2026-12-01T22:00:00Z\" or \"2026-12-01T23:00:00+01:00\""),
        )),
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.frac]±HH:MM`.
fn rfc3339_with_offset(text: &str) -> Option<SystemTime> {
    let split = text.len().checked_sub(6)?;
    let (local, offset) = (text.get(..split)?, text.get(split..)?);
    let sign = match offset.as_bytes().first()? {
        b'+' => 1i64,
        b'-' => -1,
        _ => return None,
    };
    let hours: i64 = offset.get(1..3)?.parse().ok()?;
    let minutes: i64 = offset.get(4..6)?.parse().ok()?;
    if offset.as_bytes().get(3) != Some(&b':') || hours > 23 || minutes > 59 {
        return None;
    }
    let t = humantime::parse_rfc3339_weak(local).ok()?;
    let shift = Duration::from_secs(u64::try_from((hours * 3600 + minutes * 60).abs()).ok()?);
    if sign > 0 {
        t.checked_sub(shift)
    } else {
        t.checked_add(shift)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_applied() {
        let z = humantime::parse_rfc3339("2026-12-01T22:00:00Z").unwrap();
        assert_eq!(rfc3339_with_offset("2026-12-01T23:00:00+01:00"), Some(z));
        assert_eq!(rfc3339_with_offset("2026-12-01T20:30:00-01:30"), Some(z));
        assert_eq!(rfc3339_with_offset("2026-12-01T23:00:00+1:000"), None);
        assert_eq!(rfc3339_with_offset("é"), None);
    }

    #[test]
    fn maintenance_covers_its_checks_and_time() {
        let m = Maintenance {
            checks: vec!["web".into()],
            start_unix_ms: 1000,
            end_unix_ms: 2000,
            comment: String::new(),
        };
        assert!(m.covers("web", 1000));
        assert!(!m.covers("web", 2000));
        assert!(!m.covers("db", 1500));
        let all = Maintenance {
            checks: Vec::new(),
            ..m
        };
        assert!(all.covers("db", 1500));
    }
}
