//! Evaluation: every `eval_interval` (and soon after new results arrive) each
//! check's rules are measured per region over the sliding window, combined by
//! quorum, stepped through the lifecycle, and any notifications are queued in
//! the outbox in the same transaction as the new alert state.
//!
//! Rules and what counts as a breach in one region:
//! - `down`: the newest window ends with at least `failure_threshold` failed
//!   attempts in a row;
//! - a threshold (`p(95)<500`, `rate<0.01` ...): the expression does not hold
//!   for the region's merged windows;
//! - `agent_down` (per agent, no quorum): the agent has been disconnected or
//!   silent for `agent_down_after`.
//!
//! A region whose newest window is older than the staleness limit (twice the
//! check's interval plus twice the result window, plus 10 s) has *no data*: it
//! neither breaches nor clears. An alert fires when `quorum` regions breach and
//! resolves only when it could not reach quorum even if every region without
//! data were breaching; with too little data it stays as it is. A silent agent
//! therefore raises `agent_down`, never a target alert.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::lifecycle::{self, AlertRecord, Condition, Policy, Verdict};
use super::store::{AlertStore, KnownAgent, RecordChange};
use super::workers::Wakers;
use super::{Notification, NotificationKind, RegionValue, Severity};
use crate::config::{CheckConfig, Config, RuleSpec};
use crate::eval::{self, Merged};
use crate::fleet::Fleet;
use crate::now_ms;
use crate::reload::LiveConfig;
use crate::store::{Store, StoreError};

/// Rule name of the agent liveness alert (contract).
pub const AGENT_DOWN: &str = "agent_down";
/// After new results arrive, evaluation waits this long for more, so a burst
/// of batches is evaluated once.
const INGEST_DEBOUNCE: Duration = Duration::from_millis(300);

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The evaluator.
pub struct Engine {
    live: Arc<LiveConfig>,
    store: Arc<dyn Store>,
    alerts: Arc<dyn AlertStore>,
    fleet: Arc<Fleet>,
    /// Woken when a channel has new outbox entries.
    wakers: Arc<Wakers>,
    /// When this process started evaluating: agents remembered from before a
    /// restart count as last seen then.
    started_ms: i64,
}

/// Per-region state of one rule.
#[derive(Debug, Clone, Copy, PartialEq)]
enum RegionState {
    Breach,
    Ok,
    NoData,
}

impl Engine {
    /// An engine; `wakers` wakes the running channels' workers.
    pub fn new(
        live: Arc<LiveConfig>,
        store: Arc<dyn Store>,
        alerts: Arc<dyn AlertStore>,
        fleet: Arc<Fleet>,
        wakers: Arc<Wakers>,
    ) -> Self {
        Engine {
            live,
            store,
            alerts,
            fleet,
            wakers,
            started_ms: now_ms(),
        }
    }

    /// The running config (replaced by reloads).
    fn config(&self) -> Arc<Config> {
        self.live.current()
    }

    /// Evaluates every `eval_interval` and after new results, until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut period = self.config().alerting.eval_interval;
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let now_period = self.config().alerting.eval_interval;
            if now_period != period {
                // A reload changed it: the next tick is one new period away.
                period = now_period;
                tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
                _ = self.fleet.ingested().notified() => {
                    tokio::time::sleep(INGEST_DEBOUNCE).await;
                }
            }
            let engine = Arc::clone(&self);
            let started = std::time::Instant::now();
            let evaluation = tokio::task::spawn_blocking(move || engine.evaluate(now_ms()));
            // Shutdown does not wait for an evaluation in progress (it can
            // take seconds on a large fleet); what it has not written is
            // evaluated again after the restart, as after a crash.
            let result = tokio::select! {
                r = evaluation => r,
                _ = stop.cancelled() => return,
            };
            let ok = matches!(result, Ok(Ok(_)));
            self.fleet.health().evaluated(started.elapsed(), ok);
            match result {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "alert evaluation failed; retrying next tick")
                }
                Err(e) => tracing::error!(error = %e, "alert evaluation task failed"),
            }
        }
    }

    /// One evaluation at `now_ms`: returns the notifications queued.
    pub fn evaluate(&self, now_ms: i64) -> Result<usize, StoreError> {
        let mut verdicts = Vec::new();
        for c in &self.config().checks {
            let since = now_ms - ms(self.config().alerting.window);
            let windows = self.store.windows_since(&c.check.name, since)?;
            verdicts.extend(self.check_verdicts(c, &windows, now_ms));
        }
        verdicts.extend(self.agent_verdicts(now_ms)?);

        let records: BTreeMap<(String, String), AlertRecord> = self
            .alerts
            .alerts()?
            .into_iter()
            .map(|r| ((r.subject.clone(), r.rule.clone()), r))
            .collect();
        let silences = self.alerts.silences()?;
        let mut changes = Vec::new();
        let mut notify = Vec::new();
        let mut events = Vec::new();
        let mut seen = Vec::new();
        for v in &verdicts {
            let key = (v.subject.clone(), v.rule.clone());
            let prev = records.get(&key);
            let suppressed = silences
                .iter()
                .any(|s| s.covers(&v.subject, &v.rule, now_ms))
                || self
                    .config()
                    .maintenance
                    .iter()
                    .any(|m| m.covers(&v.subject, now_ms));
            let policy = Policy {
                suppressed,
                send_resolved: self.config().alerting.send_resolved,
                repeat_interval: self.config().alerting.repeat_interval,
            };
            let step = lifecycle::step(prev, v, now_ms, policy);
            seen.push(key);
            if !step.changes(prev) {
                continue;
            }
            if let Some(kind) = step.notify {
                let firing_since = step
                    .record
                    .as_ref()
                    .or(prev)
                    .map_or(now_ms, |r| r.since_unix_ms);
                let n = self.notification(v, kind, firing_since, now_ms);
                tracing::info!(subject = %v.subject, rule = %v.rule, kind = ?kind, "alert {}", kind.label().to_lowercase());
                for channel in self.channels_for(&v.subject, &v.rule) {
                    notify.push((channel, n.clone()));
                }
                events.push(n);
            }
            changes.push(match step.record {
                Some(r) => RecordChange::Put(r),
                None => RecordChange::Delete {
                    subject: v.subject.clone(),
                    rule: v.rule.clone(),
                },
            });
        }
        // Alerts of checks or rules no longer in the config end silently.
        for (subject, rule) in records.keys() {
            if !seen.iter().any(|(s, r)| s == subject && r == rule) {
                tracing::info!(%subject, %rule, "dropping the alert of a rule no longer configured");
                changes.push(RecordChange::Delete {
                    subject: subject.clone(),
                    rule: rule.clone(),
                });
            }
        }
        if changes.is_empty() && notify.is_empty() && events.is_empty() {
            return Ok(0);
        }
        let queued = self.alerts.commit(&changes, &notify, &events, now_ms)?;
        for e in &queued {
            self.wakers.wake(&e.channel);
        }
        Ok(queued.len())
    }

    /// Channel names a notification about `(subject, rule)` goes to.
    fn channels_for(&self, subject: &str, rule: &str) -> Vec<String> {
        let all = || {
            self.config()
                .channels
                .iter()
                .map(|c| c.name.clone())
                .collect()
        };
        if rule == AGENT_DOWN {
            return all();
        }
        match self
            .config()
            .checks
            .iter()
            .find(|c| c.check.name == subject)
        {
            Some(c) => c.alerting.channels.clone().unwrap_or_else(all),
            None => all(),
        }
    }

    fn notification(
        &self,
        v: &Verdict,
        kind: NotificationKind,
        firing_since: i64,
        now_ms: i64,
    ) -> Notification {
        let suffix = match kind {
            NotificationKind::Reminder => format!("/{now_ms}"),
            _ => String::new(),
        };
        let kind_name = match kind {
            NotificationKind::Firing => "firing",
            NotificationKind::Reminder => "reminder",
            NotificationKind::Resolved => "resolved",
        };
        let is_check = self
            .config()
            .checks
            .iter()
            .any(|c| c.check.name == v.subject);
        let dashboard_url = self.config().alerting.dashboard_url.as_ref().map(|base| {
            let base = base.trim_end_matches('/');
            if is_check {
                format!("{base}/checks/{}", v.subject)
            } else {
                format!("{base}/")
            }
        });
        Notification {
            id: format!(
                "{}/{}/{firing_since}/{kind_name}{suffix}",
                v.subject, v.rule
            ),
            kind,
            subject: v.subject.clone(),
            rule: v.rule.clone(),
            severity: v.severity,
            summary: v.summary.clone(),
            observed: v.observed.clone(),
            breaching_regions: v.breaching_regions.clone(),
            firing_since_unix_ms: firing_since,
            at_unix_ms: now_ms,
            dashboard_url,
            possible_duplicate: false,
        }
    }

    /// The verdict of every rule of one check.
    fn check_verdicts(
        &self,
        c: &CheckConfig,
        windows: &[crate::store::StoredWindow],
        now_ms: i64,
    ) -> Vec<Verdict> {
        let (per_region, all) = eval::merge(windows);
        let stale_after = 2 * ms(c.check.interval) + 2 * ms(self.config().server.window) + 10_000;
        let fresh = |m: &Merged| {
            m.last_end_unix_ms()
                .is_some_and(|end| end >= now_ms - stale_after)
        };
        c.alerting
            .rules
            .iter()
            .map(|rule| {
                let mut observed = Vec::new();
                let mut states = Vec::new();
                for region in &c.regions {
                    let m = per_region.get(region).filter(|m| fresh(m));
                    let (value, state) = match m {
                        None => (None, RegionState::NoData),
                        Some(m) => judge(rule, m),
                    };
                    states.push((
                        region.clone(),
                        state,
                        m.and_then(|m| m.last_error().map(str::to_owned)),
                    ));
                    observed.push(RegionValue {
                        region: region.clone(),
                        value,
                        breaching: state == RegionState::Breach,
                    });
                }
                observed.push(RegionValue {
                    region: "all".into(),
                    value: judge(rule, &all).0,
                    breaching: false,
                });
                let breaching: Vec<String> = states
                    .iter()
                    .filter(|(_, s, _)| *s == RegionState::Breach)
                    .map(|(r, _, _)| r.clone())
                    .collect();
                let no_data = states
                    .iter()
                    .filter(|(_, s, _)| *s == RegionState::NoData)
                    .count();
                let quorum = c.alerting.quorum;
                let condition = if breaching.len() >= quorum {
                    Condition::Breach
                } else if breaching.len() + no_data < quorum {
                    Condition::Clear
                } else {
                    Condition::Unknown
                };
                let reason = states
                    .iter()
                    .find(|(_, s, _)| *s == RegionState::Breach)
                    .and_then(|(_, _, e)| e.clone());
                Verdict {
                    subject: c.check.name.clone(),
                    rule: rule.name().to_owned(),
                    severity: rule.severity(),
                    condition,
                    summary: summary(rule, &observed, &breaching, quorum, reason.as_deref()),
                    observed,
                    breaching_regions: breaching,
                    pending_for: c.alerting.pending_for,
                }
            })
            .collect()
    }

    /// `agent_down` verdicts for every agent seen, now or before a restart.
    fn agent_verdicts(&self, now_ms: i64) -> Result<Vec<Verdict>, StoreError> {
        let live = self.fleet.liveness();
        for l in live.iter().filter(|l| l.connected) {
            self.alerts.remember_agent(&KnownAgent {
                name: l.name.clone(),
                region: l.region.clone(),
            })?;
        }
        let mut agents: BTreeMap<String, (String, bool, i64)> = self
            .alerts
            .known_agents()?
            .into_iter()
            .map(|k| (k.name, (k.region, false, self.started_ms)))
            .collect();
        for l in live {
            agents.insert(l.name, (l.region, l.connected, l.last_seen_unix_ms));
        }
        let limit = ms(self.config().alerting.agent_down_after);
        Ok(agents
            .into_iter()
            .map(|(name, (region, connected, last_seen))| {
                let silent_ms = now_ms.saturating_sub(last_seen);
                let condition = if silent_ms >= limit {
                    Condition::Breach
                } else if connected {
                    Condition::Clear
                } else {
                    Condition::Unknown
                };
                let summary = match condition {
                    Condition::Breach if connected => format!(
                        "agent {name} (region {region}) is connected but silent for {} s",
                        silent_ms / 1000
                    ),
                    Condition::Breach => format!(
                        "agent {name} (region {region}) has been disconnected for {} s; its region's checks have no fresh results unless another agent there took them over",
                        silent_ms / 1000
                    ),
                    _ => format!("agent {name} (region {region}) is connected"),
                };
                let breaching = condition == Condition::Breach;
                Verdict {
                    subject: name,
                    rule: AGENT_DOWN.into(),
                    severity: Severity::Critical,
                    condition,
                    summary,
                    observed: vec![RegionValue {
                        region: region.clone(),
                        value: Some((silent_ms / 1000) as f64),
                        breaching,
                    }],
                    breaching_regions: if breaching { vec![region] } else { Vec::new() },
                    pending_for: Duration::ZERO,
                }
            })
            .collect())
    }
}

/// A rule's value and state in one region with fresh data.
fn judge(rule: &RuleSpec, m: &Merged) -> (Option<f64>, RegionState) {
    match rule {
        RuleSpec::Down { failure_threshold } => match m.consecutive_failures() {
            None => (None, RegionState::NoData),
            Some(n) if n >= *failure_threshold => (Some(f64::from(n)), RegionState::Breach),
            Some(n) => (Some(f64::from(n)), RegionState::Ok),
        },
        RuleSpec::Threshold { threshold, .. } => match m.measure(threshold.aggregate) {
            None => (None, RegionState::NoData),
            Some(v) if threshold.holds(v) => (Some(v), RegionState::Ok),
            Some(v) => (Some(v), RegionState::Breach),
        },
    }
}

fn fmt_value(v: f64) -> String {
    if (v.fract() == 0.0 && v.abs() < 1e15) || v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.4}")
    }
}

/// One line for humans: what was measured where, against what.
fn summary(
    rule: &RuleSpec,
    observed: &[RegionValue],
    breaching: &[String],
    quorum: usize,
    reason: Option<&str>,
) -> String {
    let values = observed
        .iter()
        .map(|o| {
            let v = o.value.map_or_else(|| "no data".to_owned(), fmt_value);
            format!("{} {v}", o.region)
        })
        .collect::<Vec<_>>()
        .join(", ");
    let where_ = if breaching.is_empty() {
        "no region".to_owned()
    } else {
        breaching.join(", ")
    };
    match rule {
        RuleSpec::Down { failure_threshold } => {
            let mut s = format!(
                "down in {where_} ({failure_threshold}+ failures in a row; quorum {quorum}); failures in a row: {values}"
            );
            if let Some(r) = reason {
                s.push_str(&format!("; last error: {r}"));
            }
            s
        }
        RuleSpec::Threshold {
            text, threshold, ..
        } => format!(
            "{text} breached in {where_} (quorum {quorum}); {}{}: {values}",
            threshold.aggregate,
            match threshold.aggregate.unit() {
                "" => String::new(),
                u => format!(" in {}", u.trim()),
            }
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_formatted_for_humans() {
        assert_eq!(fmt_value(812.4), "812");
        assert_eq!(fmt_value(3.0), "3");
        assert_eq!(fmt_value(12.34), "12.3");
        assert_eq!(fmt_value(0.0123), "0.0123");
        assert_eq!(fmt_value(-2.0), "-2");
    }
}
