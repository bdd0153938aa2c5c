//! The `slack` channel: a Slack incoming webhook.
//!
//! The message is a JSON POST with a top-level `text` (the fallback shown in
//! notifications: title and summary) and Block Kit `blocks`:
//! - a `header` (plain text title),
//! - a `section` with the summary and fields: check (or agent/channel),
//!   rule, severity, regions breaching, time (and "firing since" for reminders
//!   and resolves), observed values per region and `all` (breaching ones
//!   marked),
//! - a `context` note when the notification is a possible duplicate,
//! - an `actions` block with an "Open dashboard" button when a dashboard link
//!   is set.
//!
//! Slack's limits are respected by construction ([`message`] truncates with
//! `…`): header ≤ 150 characters, section text ≤ 3000, ≤ 10 fields of ≤ 2000
//! each, ≤ 50 blocks. Characters are counted as Unicode scalar values. User
//! text in `mrkdwn` has `&`, `<` and `>` escaped, so a check name cannot
//! mention `@channel` or forge a link.
//!
//! Slack answers `200 ok`; errors are `400 invalid_payload`,
//! `403 action_prohibited`, `404 channel_not_found`, `410 channel_is_archived`
//! (all permanent), `429` with `Retry-After`, `500 rollup_error` (retry). See
//! `alert/http.rs` for the classification and the secrecy of the URL.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};

use super::http::HttpPoster;
use super::{BoxFuture, Channel, Delivery, Notification, NotificationKind, Severity, SlackConfig};

/// Slack accepts about one message per second per incoming webhook.
pub const SLACK_MIN_INTERVAL: Duration = Duration::from_secs(1);

/// Longest `header` block text (Slack's limit).
pub const MAX_HEADER_CHARS: usize = 150;
/// Longest `section` text (Slack's limit).
pub const MAX_SECTION_TEXT_CHARS: usize = 3000;
/// Most `section` fields (Slack's limit).
pub const MAX_FIELDS: usize = 10;
/// Longest `section` field text (Slack's limit).
pub const MAX_FIELD_CHARS: usize = 2000;
/// Most blocks in a message (Slack's limit).
pub const MAX_BLOCKS: usize = 50;
/// Longest button URL (Slack's limit).
pub const MAX_BUTTON_URL_CHARS: usize = 3000;
/// Longest top-level fallback `text`: Slack truncates at 40 000; a
/// notification preview needs far less.
pub const MAX_FALLBACK_CHARS: usize = 3000;

/// A Slack incoming-webhook channel.
pub struct SlackChannel {
    name: String,
    poster: HttpPoster,
}

impl fmt::Debug for SlackChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlackChannel")
            .field("name", &self.name)
            .field("poster", &self.poster)
            .finish()
    }
}

impl SlackChannel {
    /// A channel posting to `cfg.webhook_url`.
    ///
    /// Fails (without quoting the URL) when the URL is not `https://` (or
    /// `http://` to a loopback host), when the timeout is zero, or when
    /// `ca_file` cannot be read or holds no certificate.
    pub fn new(name: String, cfg: &SlackConfig) -> Result<Self, String> {
        let poster = HttpPoster::new(
            &format!("channel {name}: slack webhook_url"),
            "slack webhook",
            &cfg.webhook_url,
            cfg.timeout,
            cfg.ca_file.as_deref(),
        )?;
        Ok(SlackChannel { name, poster })
    }
}

impl Channel for SlackChannel {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "slack"
    }

    fn min_interval(&self) -> Duration {
        SLACK_MIN_INTERVAL
    }

    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Delivery> {
        Box::pin(async move {
            let body = match serde_json::to_vec(&message(n)) {
                Ok(b) => Bytes::from(b),
                Err(e) => {
                    return Delivery::Permanent {
                        reason: format!("slack webhook: cannot encode the message ({e})"),
                    }
                }
            };
            self.poster.post_json(body, &[]).await
        })
    }
}

/// The Slack message (incoming-webhook JSON) for `n`, within Slack's limits.
pub fn message(n: &Notification) -> Value {
    let title = n.title();
    let mut blocks = vec![json!({
        "type": "header",
        "text": {"type": "plain_text", "text": clip(&one_line(&title), MAX_HEADER_CHARS), "emoji": true},
    })];

    let subject_label = match n.rule.as_str() {
        "agent_down" => "Agent",
        "channel_failed" => "Channel",
        _ => "Check",
    };
    let severity = match n.severity {
        Severity::Critical => ":red_circle: critical",
        Severity::Warning => ":large_yellow_circle: warning",
    };
    let breaching = if n.breaching_regions.is_empty() {
        "none".to_owned()
    } else {
        n.breaching_regions.join(", ")
    };
    let observed = if n.observed.is_empty() {
        "no data".to_owned()
    } else {
        n.observed
            .iter()
            .map(|r| {
                let v = r.value.map_or_else(|| "no data".to_owned(), format_value);
                let mark = if r.breaching { " (breaching)" } else { "" };
                format!("{}: {v}{mark}", r.region)
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mut fields = vec![
        field(subject_label, &n.subject),
        field("Rule", &n.rule),
        // Emoji codes are ours, not user text: not escaped.
        field_raw("Severity", severity),
        field("Regions breaching", &breaching),
        field("Time", &rfc3339_ms(n.at_unix_ms)),
    ];
    if matches!(
        n.kind,
        NotificationKind::Resolved | NotificationKind::Reminder
    ) {
        fields.push(field("Firing since", &rfc3339_ms(n.firing_since_unix_ms)));
    }
    fields.push(field("Observed", &observed));
    fields.truncate(MAX_FIELDS);

    let mut section = json!({"type": "section", "fields": fields});
    if !n.summary.trim().is_empty() {
        section["text"] =
            json!({"type": "mrkdwn", "text": mrkdwn(&n.summary, MAX_SECTION_TEXT_CHARS)});
    }
    blocks.push(section);

    if n.possible_duplicate {
        blocks.push(json!({
            "type": "context",
            "elements": [{"type": "mrkdwn", "text":
                ":warning: Possible duplicate: an earlier attempt to send this notification may have been delivered."}],
        }));
    }
    if let Some(url) = &n.dashboard_url {
        blocks.push(dashboard_block(url));
    }
    blocks.truncate(MAX_BLOCKS);

    let fallback = if n.summary.trim().is_empty() {
        title
    } else {
        format!("{title}: {}", n.summary)
    };
    json!({
        "text": mrkdwn(&fallback, MAX_FALLBACK_CHARS),
        "blocks": blocks,
    })
}

/// An `actions` block with a button to the dashboard; a `context` note when
/// the link cannot be a Slack button URL.
fn dashboard_block(url: &str) -> Value {
    let usable = (url.starts_with("https://") || url.starts_with("http://"))
        && url.chars().count() <= MAX_BUTTON_URL_CHARS
        && !url.chars().any(char::is_whitespace);
    if usable {
        json!({
            "type": "actions",
            "elements": [{
                "type": "button",
                "text": {"type": "plain_text", "text": "Open dashboard"},
                "url": url,
            }],
        })
    } else {
        json!({
            "type": "context",
            "elements": [{"type": "mrkdwn", "text":
                "Dashboard link omitted: not an http(s) URL of at most 3000 characters."}],
        })
    }
}

/// A `mrkdwn` section field `*label*\nvalue`, the value escaped and clipped.
fn field(label: &str, value: &str) -> Value {
    let head = format!("*{label}*\n");
    let room = MAX_FIELD_CHARS - head.chars().count();
    json!({"type": "mrkdwn", "text": format!("{head}{}", mrkdwn(value, room))})
}

/// Like [`field`], for a value that is already `mrkdwn`.
fn field_raw(label: &str, value: &str) -> Value {
    json!({"type": "mrkdwn", "text": format!("*{label}*\n{value}")})
}

/// `s` escaped for `mrkdwn` (`&`, `<`, `>`) and clipped to `max` characters
/// (ending in `…` when clipped), never cutting an escape in half.
pub fn mrkdwn(s: &str, max: usize) -> String {
    let escape = |c: char| match c {
        '&' => "&amp;".to_owned(),
        '<' => "&lt;".to_owned(),
        '>' => "&gt;".to_owned(),
        c => c.to_string(),
    };
    let full: usize = s.chars().map(|c| escape(c).chars().count()).sum();
    if full <= max {
        return s.chars().map(escape).collect();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        let piece = escape(c);
        let len = piece.chars().count();
        if used + len > max.saturating_sub(1) {
            break;
        }
        out.push_str(&piece);
        used += len;
    }
    if max > 0 {
        out.push('…');
    }
    out
}

/// `s` clipped to `max` characters, ending in `…` when clipped.
pub fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    if max > 0 {
        out.push('…');
    }
    out
}

/// Control characters (newlines, tabs) as spaces: a header is one line.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A measured value: integers without decimals, others with up to three.
fn format_value(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".to_owned();
    }
    if v.fract() == 0.0 && v.abs() < 1e15 {
        return format!("{v:.0}");
    }
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_owned()
}

/// Unix milliseconds as UTC RFC 3339 (seconds precision).
fn rfc3339_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("unix ms {ms}"))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::RegionValue;
    use super::*;

    fn sample() -> Notification {
        Notification {
            id: "homepage/p95/3/firing".into(),
            kind: NotificationKind::Firing,
            subject: "homepage".into(),
            rule: "p(95)<500".into(),
            severity: Severity::Critical,
            summary: "p95 812 ms > 500 ms in eu, us".into(),
            observed: vec![
                RegionValue {
                    region: "eu".into(),
                    value: Some(812.0),
                    breaching: true,
                },
                RegionValue {
                    region: "ap".into(),
                    value: None,
                    breaching: false,
                },
                RegionValue {
                    region: "all".into(),
                    value: Some(640.25),
                    breaching: true,
                },
            ],
            breaching_regions: vec!["eu".into()],
            firing_since_unix_ms: 1_700_000_000_000,
            at_unix_ms: 1_700_000_060_500,
            dashboard_url: Some("https://vantage.example/checks/homepage".into()),
            possible_duplicate: false,
        }
    }

    fn field_texts(m: &Value) -> Vec<String> {
        m["blocks"][1]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["text"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn firing_message_shape() {
        let m = message(&sample());
        assert_eq!(
            m["text"],
            "[FIRING] homepage: p(95)&lt;500: p95 812 ms &gt; 500 ms in eu, us"
        );
        let blocks = m["blocks"].as_array().unwrap();
        assert_eq!(blocks.len(), 3);
        assert_eq!(blocks[0]["type"], "header");
        assert_eq!(blocks[0]["text"]["text"], "[FIRING] homepage: p(95)<500");
        assert_eq!(
            blocks[1]["text"]["text"],
            "p95 812 ms &gt; 500 ms in eu, us"
        );
        let fields = field_texts(&m);
        assert_eq!(
            fields,
            vec![
                "*Check*\nhomepage",
                "*Rule*\np(95)&lt;500",
                "*Severity*\n:red_circle: critical",
                "*Regions breaching*\neu",
                "*Time*\n2023-11-14T22:14:20Z",
                "*Observed*\neu: 812 (breaching)\nap: no data\nall: 640.25 (breaching)",
            ]
        );
        assert_eq!(blocks[2]["type"], "actions");
        assert_eq!(
            blocks[2]["elements"][0]["url"],
            "https://vantage.example/checks/homepage"
        );
    }

    #[test]
    fn resolved_has_firing_since_and_duplicate_note() {
        let mut n = sample();
        n.kind = NotificationKind::Resolved;
        n.possible_duplicate = true;
        n.dashboard_url = None;
        n.rule = "agent_down".into();
        let m = message(&n);
        let fields = field_texts(&m);
        assert!(fields.contains(&"*Firing since*\n2023-11-14T22:13:20Z".to_owned()));
        assert_eq!(fields[0], "*Agent*\nhomepage");
        let blocks = m["blocks"].as_array().unwrap();
        assert_eq!(blocks.len(), 3);
        assert_eq!(blocks[2]["type"], "context");
        assert!(blocks[2]["elements"][0]["text"]
            .as_str()
            .unwrap()
            .contains("Possible duplicate"));
    }

    #[test]
    fn mentions_and_links_are_escaped() {
        let mut n = sample();
        n.subject = "<!channel> & <https://evil.example|click>".into();
        let m = message(&n);
        assert_eq!(
            field_texts(&m)[0],
            "*Check*\n&lt;!channel&gt; &amp; &lt;https://evil.example|click&gt;"
        );
    }

    #[test]
    fn bad_dashboard_links_become_a_note() {
        for url in [
            "javascript:alert(1)",
            &format!("https://x.example/{}", "a".repeat(3000)),
        ] {
            let mut n = sample();
            n.dashboard_url = Some(url.to_owned());
            let m = message(&n);
            assert_eq!(m["blocks"][2]["type"], "context", "{url}");
        }
    }

    #[test]
    fn clipping_never_cuts_an_escape() {
        assert_eq!(mrkdwn("a<b", 10), "a&lt;b");
        assert_eq!(mrkdwn("abcdef", 4), "abc…");
        // "a&lt;" would be 5 + … = 6 > 5: the escape is dropped whole.
        assert_eq!(mrkdwn("a<bcdef", 5), "a…");
        assert_eq!(clip("héllo wörld", 5), "héll…");
        assert_eq!(clip("short", 5), "short");
        assert_eq!(format_value(812.0), "812");
        assert_eq!(format_value(0.0123), "0.012");
        assert_eq!(format_value(99.5), "99.5");
        assert_eq!(format_value(f64::NAN), "n/a");
        assert_eq!(rfc3339_ms(i64::MAX), format!("unix ms {}", i64::MAX));
    }

    /// Checks every Slack limit the receiver checks; returns what was clipped.
    fn assert_within_limits(m: &Value) {
        let text = m["text"].as_str().unwrap();
        assert!(!text.is_empty() && text.chars().count() <= MAX_FALLBACK_CHARS);
        let blocks = m["blocks"].as_array().unwrap();
        assert!(blocks.len() <= MAX_BLOCKS);
        for b in blocks {
            match b["type"].as_str().unwrap() {
                "header" => {
                    let t = b["text"]["text"].as_str().unwrap();
                    assert_eq!(b["text"]["type"], "plain_text");
                    assert!(
                        !t.is_empty() && t.chars().count() <= MAX_HEADER_CHARS,
                        "{t}"
                    );
                }
                "section" => {
                    if let Some(t) = b["text"]["text"].as_str() {
                        assert!(!t.is_empty() && t.chars().count() <= MAX_SECTION_TEXT_CHARS);
                    }
                    let fields = b["fields"].as_array().unwrap();
                    assert!(!fields.is_empty() && fields.len() <= MAX_FIELDS);
                    for f in fields {
                        let t = f["text"].as_str().unwrap();
                        assert!(
                            t.chars().count() <= MAX_FIELD_CHARS,
                            "{}",
                            t.chars().count()
                        );
                    }
                }
                "context" | "actions" => {}
                other => panic!("unexpected block {other}"),
            }
        }
    }

    fn arb_text(max: usize) -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                Just('<'),
                Just('>'),
                Just('&'),
                Just('é'),
                Just('🚨'),
                Just('\n'),
                prop::char::range('a', 'z')
            ],
            0..max,
        )
        .prop_map(|v| v.into_iter().collect())
    }

    proptest! {
        // Sizes just past every limit; 64 cases keep the debug build quick.
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn any_notification_fits_slack_limits(
            subject in arb_text(300),
            rule in arb_text(200),
            summary in arb_text(3500),
            regions in prop::collection::vec((arb_text(30), any::<Option<f64>>(), any::<bool>()), 0..120),
            resolved in any::<bool>(),
            dup in any::<bool>(),
        ) {
            let mut n = sample();
            n.subject = subject;
            n.rule = rule;
            n.summary = summary.clone();
            n.kind = if resolved { NotificationKind::Resolved } else { NotificationKind::Firing };
            n.possible_duplicate = dup;
            n.breaching_regions = regions.iter().filter(|r| r.2).map(|r| r.0.clone()).collect();
            n.observed = regions
                .into_iter()
                .map(|(region, value, breaching)| RegionValue { region, value, breaching })
                .collect();
            let m = message(&n);
            assert_within_limits(&m);
            if summary.chars().count() > MAX_SECTION_TEXT_CHARS {
                let t = m["blocks"][1]["text"]["text"].as_str().unwrap();
                prop_assert!(t.ends_with('…'));
            }
        }
    }

    #[test]
    fn many_regions_are_clipped_with_an_ellipsis() {
        let mut n = sample();
        n.summary = "x".repeat(10_000);
        n.observed = (0..500)
            .map(|i| RegionValue {
                region: format!("region-{i}"),
                value: Some(f64::from(i) + 0.5),
                breaching: i % 2 == 0,
            })
            .collect();
        n.breaching_regions = (0..500).map(|i| format!("region-{i}")).collect();
        let m = message(&n);
        assert_within_limits(&m);
        let fields = field_texts(&m);
        assert!(fields
            .iter()
            .any(|f| f.starts_with("*Observed*") && f.ends_with('…')));
        assert!(fields
            .iter()
            .any(|f| f.starts_with("*Regions breaching*") && f.ends_with('…')));
        assert!(m["blocks"][1]["text"]["text"]
            .as_str()
            .unwrap()
            .ends_with('…'));
    }
}
