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

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
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

/// Builds the configured channels. Fails on the first channel that cannot be
/// built (an unreadable `ca_file`, a bad address), naming it.
pub fn build_channels(configs: &[ChannelConfig]) -> anyhow::Result<Vec<Arc<dyn Channel>>> {
    configs
        .iter()
        .map(|c| {
            let name = c.name.clone();
            let built: Result<Arc<dyn Channel>, String> = match &c.kind {
                ChannelKind::Slack(s) => {
                    slack::SlackChannel::new(name, s).map(|ch| Arc::new(ch) as _)
                }
                ChannelKind::Email(e) => {
                    email::EmailChannel::new(name, e).map(|ch| Arc::new(ch) as _)
                }
                ChannelKind::Webhook(w) => {
                    webhook::WebhookChannel::new(name, w).map(|ch| Arc::new(ch) as _)
                }
            };
            built.map_err(|e| anyhow::anyhow!("channel {}: {e}", c.name))
        })
        .collect()
}

/// The timeout a channel was configured with.
fn channel_timeout(configs: &[ChannelConfig], name: &str) -> Duration {
    configs
        .iter()
        .find(|c| c.name == name)
        .map_or(crate::config::DEFAULT_CHANNEL_TIMEOUT, |c| match &c.kind {
            ChannelKind::Slack(s) => s.timeout,
            ChannelKind::Email(e) => e.timeout,
            ChannelKind::Webhook(w) => w.timeout,
        })
}

/// Starts the evaluator and one delivery worker per channel; they stop when
/// `stop` is cancelled.
pub fn start(
    config: Arc<crate::reload::LiveConfig>,
    store: Arc<dyn crate::store::Store>,
    alerts: Arc<dyn store::AlertStore>,
    fleet: Arc<crate::fleet::Fleet>,
    channels: Vec<Arc<dyn Channel>>,
    stop: CancellationToken,
) -> Vec<JoinHandle<()>> {
    let wake: HashMap<String, Arc<Notify>> = channels
        .iter()
        .map(|c| (c.name().to_owned(), Arc::new(Notify::new())))
        .collect();
    let mut tasks = Vec::new();
    for channel in channels {
        let name = channel.name().to_owned();
        let worker = deliver::Worker {
            send_timeout: channel_timeout(&config.current().channels, &name),
            store: Arc::clone(&alerts),
            wake: Arc::clone(&wake[&name]),
            others: wake
                .iter()
                .filter(|(n, _)| **n != name)
                .map(|(n, w)| (n.clone(), Arc::clone(w)))
                .collect(),
            channel,
            health: Arc::clone(fleet.health()),
        };
        tasks.push(tokio::spawn(worker.run(stop.clone())));
    }
    let engine = Arc::new(engine::Engine::new(config, store, alerts, fleet, wake));
    tasks.push(tokio::spawn(engine.run(stop)));
    tasks
}
