//! The alert lifecycle, keyed by (subject, rule): inactive → pending → firing
//! → resolved (inactive again), as a pure function of the previous state and
//! this evaluation's verdict, so it can be tested exhaustively and replayed
//! after a restart.
//!
//! Notifications are decided here, once per change of state:
//! - **firing** when an alert starts firing, or later when a silence or
//!   maintenance window that hid it ends while it still fires;
//! - **reminder** every `repeat_interval` while it fires and is not silenced;
//! - **resolved** when it stops, if its firing was notified, resolved
//!   notifications are on, and it is not silenced at that moment.
//!
//! A verdict of *unknown* (no fresh data where it matters) changes nothing:
//! an alert neither fires nor resolves on missing data.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{NotificationKind, RegionValue, Severity};

/// Where an alert is in its life. Inactive alerts have no record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Breached, waiting for `for` to pass.
    Pending,
    /// Breached long enough: notifications go out.
    Firing,
}

/// The persisted state of one alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRecord {
    /// Check, agent or channel name.
    pub subject: String,
    /// Rule name (`down`, `p(95)<500`, `agent_down` ...).
    pub rule: String,
    /// Severity of the rule.
    pub severity: Severity,
    /// Pending or firing.
    pub status: Status,
    /// When it entered `status` (unix ms): pending since, or firing since.
    pub since_unix_ms: i64,
    /// Whether this firing episode has been notified.
    pub notified: bool,
    /// When a firing or reminder notification was last queued (unix ms).
    pub last_notified_unix_ms: i64,
    /// The latest human summary.
    pub summary: String,
    /// The latest values per region.
    pub observed: Vec<RegionValue>,
    /// Regions breaching at the latest evaluation.
    pub breaching_regions: Vec<String>,
}

/// The three-valued outcome of one rule at one evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// Breached in at least `quorum` regions.
    Breach,
    /// Not breached, and could not be breached even if every region without
    /// data were.
    Clear,
    /// Not enough fresh data to tell.
    Unknown,
}

/// One rule's verdict at one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Check, agent or channel name.
    pub subject: String,
    /// Rule name.
    pub rule: String,
    /// Severity of the rule.
    pub severity: Severity,
    /// Breach, clear or unknown.
    pub condition: Condition,
    /// Human summary of the values.
    pub summary: String,
    /// Values per region.
    pub observed: Vec<RegionValue>,
    /// Regions breaching now.
    pub breaching_regions: Vec<String>,
    /// `for`: how long a breach must last before firing.
    pub pending_for: Duration,
}

/// What else decides about notifications.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// A silence or maintenance window covers the alert now.
    pub suppressed: bool,
    /// `alerting.send_resolved`.
    pub send_resolved: bool,
    /// `alerting.repeat_interval`.
    pub repeat_interval: Option<Duration>,
}

/// The result of one step.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The new record; `None` means inactive (delete any record).
    pub record: Option<AlertRecord>,
    /// The notification to queue, if any.
    pub notify: Option<NotificationKind>,
}

impl Step {
    /// Whether the record or a notification changed, i.e. whether the step must
    /// be persisted.
    pub fn changes(&self, prev: Option<&AlertRecord>) -> bool {
        self.notify.is_some() || self.record.as_ref() != prev
    }
}

/// Advances one alert by one evaluation at `now_ms`.
pub fn step(prev: Option<&AlertRecord>, v: &Verdict, now_ms: i64, policy: Policy) -> Step {
    let fresh = |status: Status, since: i64| AlertRecord {
        subject: v.subject.clone(),
        rule: v.rule.clone(),
        severity: v.severity,
        status,
        since_unix_ms: since,
        notified: false,
        last_notified_unix_ms: 0,
        summary: v.summary.clone(),
        observed: v.observed.clone(),
        breaching_regions: v.breaching_regions.clone(),
    };
    let pending_ms = i64::try_from(v.pending_for.as_millis()).unwrap_or(i64::MAX);
    match (prev, v.condition) {
        (None, Condition::Breach) if pending_ms > 0 => Step {
            record: Some(fresh(Status::Pending, now_ms)),
            notify: None,
        },
        (None, Condition::Breach) => start_firing(fresh(Status::Firing, now_ms), now_ms, policy),
        (None, _) => Step {
            record: None,
            notify: None,
        },
        (Some(p), Condition::Unknown) => Step {
            record: Some(p.clone()),
            notify: None,
        },
        (Some(p), Condition::Clear) => {
            let notify = (p.status == Status::Firing
                && p.notified
                && policy.send_resolved
                && !policy.suppressed)
                .then_some(NotificationKind::Resolved);
            Step {
                record: None,
                notify,
            }
        }
        (Some(p), Condition::Breach) if p.status == Status::Pending => {
            if now_ms.saturating_sub(p.since_unix_ms) >= pending_ms {
                start_firing(fresh(Status::Firing, now_ms), now_ms, policy)
            } else {
                let mut r = p.clone();
                update_values(&mut r, v);
                Step {
                    record: Some(r),
                    notify: None,
                }
            }
        }
        (Some(p), Condition::Breach) => {
            let mut r = p.clone();
            update_values(&mut r, v);
            let mut notify = None;
            if !policy.suppressed {
                if !r.notified {
                    notify = Some(NotificationKind::Firing);
                } else if let Some(every) = policy.repeat_interval {
                    let every = i64::try_from(every.as_millis()).unwrap_or(i64::MAX);
                    if now_ms.saturating_sub(r.last_notified_unix_ms) >= every {
                        notify = Some(NotificationKind::Reminder);
                    }
                }
            }
            if notify.is_some() {
                r.notified = true;
                r.last_notified_unix_ms = now_ms;
            }
            Step {
                record: Some(r),
                notify,
            }
        }
    }
}

fn start_firing(mut r: AlertRecord, now_ms: i64, policy: Policy) -> Step {
    if policy.suppressed {
        return Step {
            record: Some(r),
            notify: None,
        };
    }
    r.notified = true;
    r.last_notified_unix_ms = now_ms;
    Step {
        record: Some(r),
        notify: Some(NotificationKind::Firing),
    }
}

fn update_values(r: &mut AlertRecord, v: &Verdict) {
    r.summary.clone_from(&v.summary);
    r.observed.clone_from(&v.observed);
    r.breaching_regions.clone_from(&v.breaching_regions);
}

#[cfg(test)]
mod tests {
    use super::*;
    use NotificationKind::*;

    fn verdict(condition: Condition, pending_for: Duration) -> Verdict {
        Verdict {
            subject: "web".into(),
            rule: "p(95)<500".into(),
            severity: Severity::Warning,
            condition,
            summary: format!("{condition:?}"),
            observed: Vec::new(),
            breaching_regions: Vec::new(),
            pending_for,
        }
    }

    const OPEN: Policy = Policy {
        suppressed: false,
        send_resolved: true,
        repeat_interval: Some(Duration::from_secs(3600)),
    };

    /// Runs a sequence of (time, condition, suppressed) and returns the
    /// notifications with their times.
    fn run(
        seq: &[(i64, Condition, bool)],
        pending_for: Duration,
        policy: Policy,
    ) -> Vec<(i64, NotificationKind)> {
        let mut rec: Option<AlertRecord> = None;
        let mut out = Vec::new();
        for &(t, c, suppressed) in seq {
            let s = step(
                rec.as_ref(),
                &verdict(c, pending_for),
                t,
                Policy {
                    suppressed,
                    ..policy
                },
            );
            if let Some(n) = s.notify {
                out.push((t, n));
            }
            rec = s.record;
        }
        out
    }

    use Condition::{Breach as B, Clear as C, Unknown as U};

    #[test]
    fn one_notification_per_change_of_state() {
        let seq: Vec<_> = [C, B, B, B, U, B, C, C, B, C]
            .iter()
            .enumerate()
            .map(|(i, c)| (i as i64 * 1000, *c, false))
            .collect();
        assert_eq!(
            run(&seq, Duration::ZERO, OPEN),
            [
                (1000, Firing),
                (6000, Resolved),
                (8000, Firing),
                (9000, Resolved)
            ]
        );
    }

    #[test]
    fn unknown_neither_fires_nor_resolves() {
        let seq = [
            (0, U, false),
            (1, B, false),
            (2, U, false),
            (3, U, false),
            (4, B, false),
        ];
        assert_eq!(run(&seq, Duration::ZERO, OPEN), [(1, Firing)]);
    }

    #[test]
    fn pending_waits_for_the_for_duration_and_a_clear_cancels_silently() {
        let for_ = Duration::from_millis(100);
        let seq = [
            (0, B, false),
            (50, B, false),
            (60, C, false),
            (70, B, false),
            (169, B, false),
            (170, B, false),
        ];
        assert_eq!(run(&seq, for_, OPEN), [(170, Firing)]);
    }

    #[test]
    fn reminders_follow_the_repeat_interval() {
        let policy = Policy {
            repeat_interval: Some(Duration::from_millis(100)),
            ..OPEN
        };
        let seq = [
            (0, B, false),
            (99, B, false),
            (100, B, false),
            (150, B, false),
            (200, B, false),
        ];
        assert_eq!(
            run(&seq, Duration::ZERO, policy),
            [(0, Firing), (100, Reminder), (200, Reminder)]
        );
        let never = Policy {
            repeat_interval: None,
            ..OPEN
        };
        assert_eq!(run(&seq, Duration::ZERO, never), [(0, Firing)]);
    }

    #[test]
    fn a_silence_hides_firing_until_it_ends_and_hides_the_resolve() {
        // Silenced from the start: nothing, then firing when the silence ends.
        let seq = [(0, B, true), (1, B, true), (2, B, false), (3, C, false)];
        assert_eq!(
            run(&seq, Duration::ZERO, OPEN),
            [(2, Firing), (3, Resolved)]
        );
        // Fired, then silenced, resolved while silenced: no resolve.
        let seq = [(0, B, false), (1, B, true), (2, C, true)];
        assert_eq!(run(&seq, Duration::ZERO, OPEN), [(0, Firing)]);
        // Never notified: never resolved.
        let seq = [(0, B, true), (1, C, false)];
        assert!(run(&seq, Duration::ZERO, OPEN).is_empty());
    }

    #[test]
    fn resolved_can_be_turned_off() {
        let policy = Policy {
            send_resolved: false,
            ..OPEN
        };
        assert_eq!(
            run(&[(0, B, false), (1, C, false)], Duration::ZERO, policy),
            [(0, Firing)]
        );
    }

    #[test]
    fn replaying_the_same_state_changes_nothing() {
        // What a restart does: evaluate again with the persisted record.
        let first = step(None, &verdict(B, Duration::ZERO), 0, OPEN);
        let again = step(first.record.as_ref(), &verdict(B, Duration::ZERO), 10, OPEN);
        assert_eq!(again.notify, None);
        assert!(!again.changes(first.record.as_ref()));
    }
}
