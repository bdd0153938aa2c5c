//! Durable alert state: the lifecycle records, the notification outbox,
//! silences and the agents ever seen, behind the [`AlertStore`] trait (sled
//! 0.34.7 today, like the result store).
//!
//! The outbox is a small state machine per entry (shared/RELIABILITY.md §9):
//! `queued → sending → (deleted | queued again | failed)`, each step flushed.
//! A notification is written in the same transaction as the alert state that
//! caused it, so after a crash either both exist or neither does, and the next
//! evaluation re-derives the same transition. An entry found in `sending` at
//! start-up may have been delivered: it is retried, marked as a possible
//! duplicate.
//!
//! sled trees (values are JSON):
//! - `alerts`: `subject \0 rule` → [`AlertRecord`]
//! - `outbox`: `channel \0 id(be)` → [`OutboxEntry`]; ids are sled's
//!   monotonic ids, so each channel's entries are in queue order
//! - `silences`: `id(be)` → [`Silence`]
//! - `agents`: `name` → [`KnownAgent`]
//! - `alert_history`: `at_ms(ordered) notification id` → [`HistoryEvent`]:
//!   every notification made (firing, reminder, resolved, channel_failed),
//!   whether or not a channel carried it, written in the same transaction
//!   as the state that caused it; the newest [`MAX_HISTORY`] are kept.

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use super::lifecycle::AlertRecord;
use super::Notification;
use crate::store::{SledStore, StoreError};

/// Where an outbox entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryState {
    /// Waiting for its turn (or for `next_attempt_unix_ms`).
    Queued,
    /// A send started and its outcome is not recorded yet.
    Sending,
    /// The channel refused it for good; kept for the API, never retried.
    Failed,
}

/// One notification for one channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// Queue position (unique, increasing).
    pub id: u64,
    /// Channel name.
    pub channel: String,
    /// What to send.
    pub notification: Notification,
    /// Queued, sending or failed.
    pub state: EntryState,
    /// Attempts made so far.
    pub attempts: u32,
    /// Not before this time (unix ms): backoff or the receiver's `Retry-After`.
    pub next_attempt_unix_ms: i64,
    /// The last failure, without secrets.
    pub last_error: Option<String>,
    /// When it was queued (unix ms).
    pub queued_unix_ms: i64,
}

/// A silence: no notifications for matching alerts between its times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Silence {
    /// Id (assigned on creation).
    pub id: u64,
    /// Alert subject (check, agent or channel name) to match; `None` = all.
    pub subject: Option<String>,
    /// Rule to match; `None` = all.
    pub rule: Option<String>,
    /// Start, unix ms.
    pub starts_unix_ms: i64,
    /// End, unix ms.
    pub ends_unix_ms: i64,
    /// Why.
    pub comment: String,
    /// Created, unix ms.
    pub created_unix_ms: i64,
}

impl Silence {
    /// Whether the silence covers the alert `(subject, rule)` at `now_ms`.
    pub fn covers(&self, subject: &str, rule: &str, now_ms: i64) -> bool {
        (self.starts_unix_ms..self.ends_unix_ms).contains(&now_ms)
            && self.subject.as_deref().is_none_or(|s| s == subject)
            && self.rule.as_deref().is_none_or(|r| r == rule)
    }
}

/// An agent the coordinator has seen, remembered across restarts so that one
/// which never comes back is reported as `agent_down`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownAgent {
    /// Agent name.
    pub name: String,
    /// Its region.
    pub region: String,
}

/// A change to one alert record.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordChange {
    /// Insert or replace.
    Put(AlertRecord),
    /// Remove `(subject, rule)`.
    Delete {
        /// Subject.
        subject: String,
        /// Rule.
        rule: String,
    },
}

/// Events kept in `alert_history`: the oldest go first.
pub const MAX_HISTORY: usize = 10_000;

/// One notification the evaluator made, as the history keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEvent {
    /// The notification.
    pub notification: Notification,
    /// The channels it was queued for (none: no channel routes it).
    pub channels: Vec<String>,
}

/// Durable alert state. Every mutating method returns once the change is
/// flushed.
pub trait AlertStore: Send + Sync + 'static {
    /// Every alert record.
    fn alerts(&self) -> Result<Vec<AlertRecord>, StoreError>;
    /// Applies record changes, queues notifications (channel, notification)
    /// and records every notification of `events` in the history, in one
    /// transaction, then flushes. Returns the queued entries.
    fn commit(
        &self,
        changes: &[RecordChange],
        notify: &[(String, Notification)],
        events: &[Notification],
        now_ms: i64,
    ) -> Result<Vec<OutboxEntry>, StoreError>;
    /// The newest `limit` history events, newest first; only those about
    /// `subject` when given.
    fn history(&self, subject: Option<&str>, limit: usize)
        -> Result<Vec<HistoryEvent>, StoreError>;
    /// Marks `entry` failed and queues `notify` (the `channel_failed`
    /// meta-notifications) in one transaction, then flushes.
    fn fail_entry(
        &self,
        entry: &OutboxEntry,
        notify: &[(String, Notification)],
        now_ms: i64,
    ) -> Result<Vec<OutboxEntry>, StoreError>;
    /// Every outbox entry, in queue order per channel.
    fn outbox(&self) -> Result<Vec<OutboxEntry>, StoreError>;
    /// The first entry of `channel` that is not failed.
    fn outbox_head(&self, channel: &str) -> Result<Option<OutboxEntry>, StoreError>;
    /// Replaces an entry (state, attempts, times).
    fn outbox_update(&self, entry: &OutboxEntry) -> Result<(), StoreError>;
    /// Removes a delivered entry.
    fn outbox_remove(&self, entry: &OutboxEntry) -> Result<(), StoreError>;
    /// Every silence, expired ones included.
    fn silences(&self) -> Result<Vec<Silence>, StoreError>;
    /// Adds a silence, assigning its id.
    fn add_silence(&self, silence: Silence) -> Result<Silence, StoreError>;
    /// Removes a silence; false when there was none with that id.
    fn delete_silence(&self, id: u64) -> Result<bool, StoreError>;
    /// Agents seen so far.
    fn known_agents(&self) -> Result<Vec<KnownAgent>, StoreError>;
    /// Remembers an agent (no write when already known with that region).
    fn remember_agent(&self, agent: &KnownAgent) -> Result<(), StoreError>;
}

fn alert_key(subject: &str, rule: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(subject.len() + rule.len() + 1);
    k.extend_from_slice(subject.as_bytes());
    k.push(0);
    k.extend_from_slice(rule.as_bytes());
    k
}

fn outbox_prefix(channel: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(channel.len() + 9);
    k.extend_from_slice(channel.as_bytes());
    k.push(0);
    k
}

fn outbox_key(channel: &str, id: u64) -> Vec<u8> {
    let mut k = outbox_prefix(channel);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn decode<T: for<'de> Deserialize<'de>>(key: &[u8], value: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(value).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing these plain structs cannot fail (no maps with non-string
    // keys, no custom serializers).
    serde_json::to_vec(value).unwrap_or_default()
}

fn scan<T: for<'de> Deserialize<'de>>(
    iter: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
) -> Result<Vec<T>, StoreError> {
    iter.map(|entry| {
        let (k, v) = entry?;
        decode(&k, &v)
    })
    .collect()
}

impl SledStore {
    fn tree(&self, name: &str) -> Result<sled::Tree, StoreError> {
        Ok(self.db().open_tree(name)?)
    }

    /// Marks entries left in `sending` by a previous process as possible
    /// duplicates and queues them again. Called once at start-up.
    pub fn recover_outbox(&self) -> Result<usize, StoreError> {
        let mut n = 0;
        for mut e in AlertStore::outbox(self)? {
            if e.state == EntryState::Sending {
                e.state = EntryState::Queued;
                e.notification.possible_duplicate = true;
                e.last_error = Some("the coordinator stopped during a send".into());
                AlertStore::outbox_update(self, &e)?;
                n += 1;
            }
        }
        Ok(n)
    }
}

impl SledStore {
    /// Record changes, outbox entry updates and new entries in one
    /// transaction, flushed.
    fn transact(
        &self,
        changes: &[RecordChange],
        updates: &[&OutboxEntry],
        notify: &[(String, Notification)],
        events: &[Notification],
        now_ms: i64,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let alerts = self.tree("alerts")?;
        let outbox = self.tree("outbox")?;
        let history = self.tree("alert_history")?;
        let recorded: Vec<(Vec<u8>, Vec<u8>)> = events
            .iter()
            .map(|n| {
                let event = HistoryEvent {
                    notification: n.clone(),
                    channels: notify
                        .iter()
                        .filter(|(_, q)| q.id == n.id)
                        .map(|(c, _)| c.clone())
                        .collect(),
                };
                let mut key = crate::store::ordered_ms(n.at_unix_ms).to_vec();
                key.extend_from_slice(n.id.as_bytes());
                (key, encode(&event))
            })
            .collect();
        let queued = (&alerts, &outbox, &history)
            .transaction(|(ta, to, th)| {
                for (k, v) in &recorded {
                    th.insert(k.as_slice(), v.as_slice())?;
                }
                for c in changes {
                    match c {
                        RecordChange::Put(r) => {
                            ta.insert(alert_key(&r.subject, &r.rule), encode(r))?;
                        }
                        RecordChange::Delete { subject, rule } => {
                            ta.remove(alert_key(subject, rule))?;
                        }
                    }
                }
                for e in updates {
                    to.insert(outbox_key(&e.channel, e.id), encode(e))?;
                }
                let mut queued = Vec::with_capacity(notify.len());
                for (channel, n) in notify {
                    let entry = OutboxEntry {
                        id: to.generate_id()?,
                        channel: channel.clone(),
                        notification: n.clone(),
                        state: EntryState::Queued,
                        attempts: 0,
                        next_attempt_unix_ms: 0,
                        last_error: None,
                        queued_unix_ms: now_ms,
                    };
                    to.insert(outbox_key(channel, entry.id), encode(&entry))?;
                    queued.push(entry);
                }
                Ok::<_, ConflictableTransactionError<()>>(queued)
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => StoreError::Io(e),
                TransactionError::Abort(()) => StoreError::Corrupt {
                    key: "alerts".into(),
                    reason: "transaction aborted".into(),
                },
            })?;
        if !recorded.is_empty() {
            // Bounded: the oldest events beyond MAX_HISTORY go.
            let excess = history.len().saturating_sub(MAX_HISTORY);
            for key in history.iter().keys().take(excess) {
                history.remove(key?)?;
            }
        }
        self.db().flush()?;
        Ok(queued)
    }
}

impl AlertStore for SledStore {
    fn alerts(&self) -> Result<Vec<AlertRecord>, StoreError> {
        scan(self.tree("alerts")?.iter())
    }

    fn commit(
        &self,
        changes: &[RecordChange],
        notify: &[(String, Notification)],
        events: &[Notification],
        now_ms: i64,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        self.transact(changes, &[], notify, events, now_ms)
    }

    fn history(
        &self,
        subject: Option<&str>,
        limit: usize,
    ) -> Result<Vec<HistoryEvent>, StoreError> {
        let mut out = Vec::new();
        for entry in self.tree("alert_history")?.iter().rev() {
            if out.len() >= limit {
                break;
            }
            let (k, v) = entry?;
            let event: HistoryEvent = decode(&k, &v)?;
            if subject.is_none_or(|s| event.notification.subject == s) {
                out.push(event);
            }
        }
        Ok(out)
    }

    fn fail_entry(
        &self,
        entry: &OutboxEntry,
        notify: &[(String, Notification)],
        now_ms: i64,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        // The channel_failed notice (one per other channel) is an event too.
        let mut events: Vec<Notification> = Vec::new();
        for (_, n) in notify {
            if !events.iter().any(|e| e.id == n.id) {
                events.push(n.clone());
            }
        }
        self.transact(&[], &[entry], notify, &events, now_ms)
    }

    fn outbox(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        scan(self.tree("outbox")?.iter())
    }

    fn outbox_head(&self, channel: &str) -> Result<Option<OutboxEntry>, StoreError> {
        for entry in self.tree("outbox")?.scan_prefix(outbox_prefix(channel)) {
            let (k, v) = entry?;
            let e: OutboxEntry = decode(&k, &v)?;
            if e.state != EntryState::Failed {
                return Ok(Some(e));
            }
        }
        Ok(None)
    }

    fn outbox_update(&self, entry: &OutboxEntry) -> Result<(), StoreError> {
        self.tree("outbox")?
            .insert(outbox_key(&entry.channel, entry.id), encode(entry))?;
        self.db().flush()?;
        Ok(())
    }

    fn outbox_remove(&self, entry: &OutboxEntry) -> Result<(), StoreError> {
        self.tree("outbox")?
            .remove(outbox_key(&entry.channel, entry.id))?;
        self.db().flush()?;
        Ok(())
    }

    fn silences(&self) -> Result<Vec<Silence>, StoreError> {
        scan(self.tree("silences")?.iter())
    }

    fn add_silence(&self, mut silence: Silence) -> Result<Silence, StoreError> {
        silence.id = self.db().generate_id()?;
        self.tree("silences")?
            .insert(silence.id.to_be_bytes(), encode(&silence))?;
        self.db().flush()?;
        Ok(silence)
    }

    fn delete_silence(&self, id: u64) -> Result<bool, StoreError> {
        let removed = self.tree("silences")?.remove(id.to_be_bytes())?.is_some();
        self.db().flush()?;
        Ok(removed)
    }

    fn known_agents(&self) -> Result<Vec<KnownAgent>, StoreError> {
        scan(self.tree("agents")?.iter())
    }

    fn remember_agent(&self, agent: &KnownAgent) -> Result<(), StoreError> {
        let tree = self.tree("agents")?;
        let value = encode(agent);
        if tree.get(agent.name.as_bytes())?.as_deref() != Some(value.as_slice()) {
            tree.insert(agent.name.as_bytes(), value)?;
            self.db().flush()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::lifecycle::Status;
    use crate::alert::{NotificationKind, Severity};

    fn note(id: &str) -> Notification {
        Notification {
            id: id.into(),
            kind: NotificationKind::Firing,
            subject: "web".into(),
            rule: "down".into(),
            severity: Severity::Critical,
            summary: "down in eu, us".into(),
            observed: Vec::new(),
            breaching_regions: vec!["eu".into(), "us".into()],
            firing_since_unix_ms: 1,
            at_unix_ms: 1,
            dashboard_url: None,
            possible_duplicate: false,
        }
    }

    fn record() -> AlertRecord {
        AlertRecord {
            subject: "web".into(),
            rule: "down".into(),
            severity: Severity::Critical,
            status: Status::Firing,
            since_unix_ms: 1,
            notified: true,
            last_notified_unix_ms: 1,
            summary: String::new(),
            observed: Vec::new(),
            breaching_regions: Vec::new(),
        }
    }

    #[test]
    fn state_and_outbox_commit_together_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path(), 1 << 20).unwrap();
            let q = s
                .commit(
                    &[RecordChange::Put(record())],
                    &[
                        ("slack".into(), note("a")),
                        ("mail".into(), note("a")),
                        ("slack".into(), note("b")),
                    ],
                    &[note("a"), note("b")],
                    5,
                )
                .unwrap();
            assert_eq!(q.len(), 3);
            assert!(q[0].id < q[2].id);
            // A send in progress when the process dies.
            let mut head = s.outbox_head("slack").unwrap().unwrap();
            assert_eq!(head.notification.id, "a");
            head.state = EntryState::Sending;
            s.outbox_update(&head).unwrap();
        }
        let s = SledStore::reopen(dir.path(), 1 << 20);
        assert_eq!(s.alerts().unwrap(), [record()]);
        assert_eq!(s.recover_outbox().unwrap(), 1);
        let head = s.outbox_head("slack").unwrap().unwrap();
        assert_eq!(
            (head.state, head.notification.possible_duplicate),
            (EntryState::Queued, true)
        );
        s.outbox_remove(&head).unwrap();
        assert_eq!(
            s.outbox_head("slack").unwrap().unwrap().notification.id,
            "b"
        );
        // A failed entry is skipped by the head but kept in the list.
        let mut mail = s.outbox_head("mail").unwrap().unwrap();
        mail.state = EntryState::Failed;
        s.outbox_update(&mail).unwrap();
        assert_eq!(s.outbox_head("mail").unwrap(), None);
        assert_eq!(s.outbox().unwrap().len(), 2);
        s.commit(
            &[RecordChange::Delete {
                subject: "web".into(),
                rule: "down".into(),
            }],
            &[],
            &[],
            6,
        )
        .unwrap();
        assert!(s.alerts().unwrap().is_empty());
        // The history kept both notifications, newest first, with the
        // channels each went to.
        let h = s.history(None, 10).unwrap();
        let seen: Vec<(&str, Vec<String>)> = h
            .iter()
            .map(|e| (e.notification.id.as_str(), e.channels.clone()))
            .collect();
        assert_eq!(
            seen,
            [
                ("b", vec!["slack".to_owned()]),
                ("a", vec!["slack".to_owned(), "mail".to_owned()])
            ]
        );
    }

    #[test]
    fn history_is_newest_first_filtered_by_subject_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path(), 8 << 20).unwrap();
        let event = |i: usize, subject: &str| {
            let mut n = note(&format!("{subject}-{i}"));
            n.subject = subject.into();
            n.at_unix_ms = i as i64;
            n
        };
        // An event no channel carries is still kept.
        s.commit(&[], &[], &[event(0, "db")], 1).unwrap();
        let batch: Vec<Notification> = (1..=MAX_HISTORY + 5)
            .map(|i| event(i, if i % 2 == 0 { "web" } else { "api" }))
            .collect();
        for chunk in batch.chunks(2_000) {
            s.commit(&[], &[], chunk, 2).unwrap();
        }
        let all = s.history(None, usize::MAX).unwrap();
        assert_eq!(all.len(), MAX_HISTORY);
        assert_eq!(all[0].notification.at_unix_ms, (MAX_HISTORY + 5) as i64);
        // The oldest six (db's included) went.
        assert_eq!(all.last().unwrap().notification.at_unix_ms, 6);
        let web = s.history(Some("web"), 3).unwrap();
        let ats: Vec<i64> = web.iter().map(|e| e.notification.at_unix_ms).collect();
        assert_eq!(
            ats,
            [
                MAX_HISTORY as i64 + 4,
                MAX_HISTORY as i64 + 2,
                MAX_HISTORY as i64
            ]
        );
        assert!(web.iter().all(|e| e.channels.is_empty()));
    }

    #[test]
    fn silences_match_subject_rule_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path(), 1 << 20).unwrap();
        let sil = s
            .add_silence(Silence {
                id: 0,
                subject: Some("web".into()),
                rule: None,
                starts_unix_ms: 100,
                ends_unix_ms: 200,
                comment: "deploy".into(),
                created_unix_ms: 50,
            })
            .unwrap();
        assert!(sil.covers("web", "down", 150));
        assert!(!sil.covers("db", "down", 150));
        assert!(!sil.covers("web", "down", 200));
        assert_eq!(s.silences().unwrap(), std::slice::from_ref(&sil));
        assert!(s.delete_silence(sil.id).unwrap());
        assert!(!s.delete_silence(sil.id).unwrap());
    }
}
