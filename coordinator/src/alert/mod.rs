//! Alerts: what a notification says, and the channels that carry it.
//!
//! # Layout
//! - this file: [`Notification`] (the one message every channel renders), the
//!   [`Channel`] trait and [`Delivery`] (how a channel reports an attempt),
//!   and the channel settings read from the config.
//! - one file per channel kind (contract names): `slack`, `email`, `webhook`.
//!
//! A channel sends one notification per call and classifies the outcome; it
//! never retries, sleeps or queues. Retries, backoff, `Retry-After` and the
//! per-channel rate limit belong to the outbox worker, which owns the durable
//! queue. A channel's error text must never contain a secret (webhook URLs
//! and passwords are secrets): say what failed, not where to.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

pub mod deliver;
pub mod email;
pub mod engine;
pub(crate) mod http;
pub mod lifecycle;
pub mod slack;
pub mod store;
pub mod webhook;
pub mod workers;

/// A boxed future, so channels can be called through `dyn Channel`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a notification is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    /// The alert started firing.
    Firing,
    /// Still firing after `repeat_interval`.
    Reminder,
    /// The alert stopped firing.
    Resolved,
}

impl NotificationKind {
    /// Upper-case label for titles: `FIRING`, `REMINDER`, `RESOLVED`.
    pub fn label(self) -> &'static str {
        match self {
            NotificationKind::Firing => "FIRING",
            NotificationKind::Reminder => "STILL FIRING",
            NotificationKind::Resolved => "RESOLVED",
        }
    }
}

/// How bad it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Needs attention soon (a slow p95, a certificate expiring in 3 weeks).
    Warning,
    /// Needs attention now (down, certificate about to expire or expired).
    Critical,
}

/// The measured value of a rule in one region (or `all`, the merge of every
/// region).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionValue {
    /// Region name, or `all`.
    pub region: String,
    /// The measurement, `None` when the region had no data.
    pub value: Option<f64>,
    /// Whether the rule is breached there.
    pub breaching: bool,
}

/// One notification: everything a channel needs to render the message.
/// Stored in the outbox (JSON) and posted as-is by the `webhook` channel, so
/// its field names are a contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Stable id of this notification (alert key, transition number, kind):
    /// the same transition always has the same id, so receivers can dedupe.
    pub id: String,
    /// Firing, reminder or resolved.
    pub kind: NotificationKind,
    /// What the alert is about: a check name, or an agent or channel name for
    /// `agent_down` and `channel_failed`.
    pub subject: String,
    /// The rule: a threshold as written (`p(95)<500`), `down`, `agent_down`,
    /// `channel_failed`, `tls_days_left`.
    pub rule: String,
    /// Severity of the rule.
    pub severity: Severity,
    /// One line for humans, e.g. `p95 812 ms > 500 ms in eu, us`.
    pub summary: String,
    /// The value per region, then `all`.
    pub observed: Vec<RegionValue>,
    /// Regions where the rule is breached.
    pub breaching_regions: Vec<String>,
    /// When the alert started firing (unix ms).
    pub firing_since_unix_ms: i64,
    /// When this transition happened (unix ms).
    pub at_unix_ms: i64,
    /// Link to the check on the dashboard, when `alerting.dashboard_url` is set.
    pub dashboard_url: Option<String>,
    /// Set when an earlier attempt may have been delivered (the outcome was
    /// ambiguous, e.g. the connection dropped after the message was sent).
    #[serde(default)]
    pub possible_duplicate: bool,
}

impl Notification {
    /// A one-line title: `[FIRING] homepage: p(95)<500`.
    pub fn title(&self) -> String {
        format!("[{}] {}: {}", self.kind.label(), self.subject, self.rule)
    }
}

/// The outcome of one delivery attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// The channel accepted the message (2xx, SMTP 250 after DATA).
    Accepted,
    /// A transient failure (network error, 5xx, 429, SMTP 4xx): try again,
    /// not before `after` when the receiver said so (`Retry-After`).
    Retry {
        /// The receiver's requested wait, if it gave one.
        after: Option<Duration>,
        /// What happened, without secrets.
        reason: String,
    },
    /// The receiver refused for good (400/403/404/410, SMTP 5xx): do not
    /// retry; the channel is broken until its config changes.
    Permanent {
        /// What happened, without secrets.
        reason: String,
    },
    /// The message may or may not have arrived (connection lost after it was
    /// sent): retry, marked as a possible duplicate.
    Ambiguous {
        /// What happened, without secrets.
        reason: String,
    },
}

/// A notification channel.
pub trait Channel: Send + Sync + 'static {
    /// The channel's name from the config.
    fn name(&self) -> &str;
    /// The contract kind: `slack`, `email` or `webhook`.
    fn kind(&self) -> &'static str;
    /// Smallest gap between two sends (Slack: 1 s per webhook).
    fn min_interval(&self) -> Duration {
        Duration::ZERO
    }
    /// Sends one notification and classifies the outcome. Completes within
    /// the channel's timeout.
    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Delivery>;
}

/// Settings of one `[[channel]]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelConfig {
    /// Unique name, referenced by checks' `channels`.
    pub name: String,
    /// Kind-specific settings.
    pub kind: ChannelKind,
}

/// The kind-specific part of a channel.
#[derive(Debug, Clone, PartialEq)]
pub enum ChannelKind {
    /// Slack incoming webhook.
    Slack(SlackConfig),
    /// Email over SMTP.
    Email(EmailConfig),
    /// JSON POST of the [`Notification`].
    Webhook(WebhookConfig),
}

impl ChannelKind {
    /// The contract name of the kind.
    pub fn as_str(&self) -> &'static str {
        match self {
            ChannelKind::Slack(_) => "slack",
            ChannelKind::Email(_) => "email",
            ChannelKind::Webhook(_) => "webhook",
        }
    }
}

/// A Slack incoming webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct SlackConfig {
    /// The webhook URL (a secret: it is the credential). `https://`, or
    /// `http://` to a loopback address (for local receivers and tests).
    pub webhook_url: Secret,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Extra trust anchors for the receiver's certificate (PEM).
    pub ca_file: Option<PathBuf>,
}

/// A generic JSON webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookConfig {
    /// Where to POST (a secret: such URLs often carry a token). Same scheme
    /// rule as Slack.
    pub url: Secret,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Extra trust anchors for the receiver's certificate (PEM).
    pub ca_file: Option<PathBuf>,
}

/// How the SMTP connection is secured. There is no plaintext mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Connect in plaintext and require `STARTTLS` (port 587).
    StartTls,
    /// TLS from the first byte (port 465).
    Implicit,
}

/// Email over SMTP.
#[derive(Debug, Clone, PartialEq)]
pub struct EmailConfig {
    /// SMTP server host name (also the name its certificate must match).
    pub host: String,
    /// SMTP port (default 587 for STARTTLS, 465 for implicit TLS).
    pub port: u16,
    /// STARTTLS or implicit TLS.
    pub tls: SmtpTls,
    /// Login, if the server requires authentication.
    pub username: Option<String>,
    /// Password for `username` (a secret).
    pub password: Option<Secret>,
    /// Sender, e.g. `Vantage <vantage@example.com>`.
    pub from: String,
    /// Recipients.
    pub to: Vec<String>,
    /// Extra trust anchors for the server's certificate (PEM).
    pub ca_file: Option<PathBuf>,
    /// Timeout of one SMTP exchange.
    pub timeout: Duration,
}

impl ChannelConfig {
    /// The timeout of one send.
    pub fn timeout(&self) -> Duration {
        match &self.kind {
            ChannelKind::Slack(s) => s.timeout,
            ChannelKind::Email(e) => e.timeout,
            ChannelKind::Webhook(w) => w.timeout,
        }
    }
}

/// Builds one channel; the error names it (an unreadable `ca_file`, a bad
/// address).
pub fn build_channel(c: &ChannelConfig) -> Result<Arc<dyn Channel>, String> {
    let name = c.name.clone();
    let built: Result<Arc<dyn Channel>, String> = match &c.kind {
        ChannelKind::Slack(s) => slack::SlackChannel::new(name, s).map(|ch| Arc::new(ch) as _),
        ChannelKind::Email(e) => email::EmailChannel::new(name, e).map(|ch| Arc::new(ch) as _),
        ChannelKind::Webhook(w) => {
            webhook::WebhookChannel::new(name, w).map(|ch| Arc::new(ch) as _)
        }
    };
    built.map_err(|e| format!("channel {}: {e}", c.name))
}

/// Builds the configured channels, paired with their settings. Fails on the
/// first channel that cannot be built, naming it.
pub fn build_channels(
    configs: &[ChannelConfig],
) -> anyhow::Result<Vec<(ChannelConfig, Arc<dyn Channel>)>> {
    configs
        .iter()
        .map(|c| Ok((c.clone(), build_channel(c).map_err(anyhow::Error::msg)?)))
        .collect()
}

/// Starts the evaluator and the delivery workers of `channels` (built from
/// the running config), which follow config reloads; they stop when `stop`
/// is cancelled.
pub fn start(
    config: Arc<crate::reload::LiveConfig>,
    store: Arc<dyn crate::store::Store>,
    alerts: Arc<dyn store::AlertStore>,
    fleet: Arc<crate::fleet::Fleet>,
    channels: Vec<(ChannelConfig, Arc<dyn Channel>)>,
    stop: CancellationToken,
) -> Vec<JoinHandle<()>> {
    let wakers = Arc::new(workers::Wakers::default());
    let supervisor = workers::Supervisor::new(
        Arc::clone(&config),
        Arc::clone(&alerts),
        Arc::clone(fleet.health()),
        Arc::clone(&wakers),
    );
    let engine = Arc::new(engine::Engine::new(config, store, alerts, fleet, wakers));
    vec![
        tokio::spawn(supervisor.run(channels, stop.clone())),
        tokio::spawn(engine.run(stop)),
    ]
}
