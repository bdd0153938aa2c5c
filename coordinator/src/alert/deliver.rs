//! Delivery: one worker per channel takes the oldest entry of its outbox
//! queue, sends it, and records the outcome before looking at the next one.
//!
//! - The entry is marked `sending` (flushed) before the send and removed
//!   (flushed) only after the channel accepted it.
//! - Transient failures are retried with exponential backoff (1 s doubling to
//!   30 s, with jitter), never sooner than the receiver's `Retry-After`.
//! - Consecutive sends on one channel are at least `Channel::min_interval`
//!   apart (Slack: 1 s per webhook).
//! - A permanent refusal marks the entry failed (kept, visible in the API)
//!   and sends a `channel_failed` notification to every other channel.
//!
//! Entries of one channel go out in queue order: a channel that asks to wait
//! holds back its whole queue, which is what a rate limit means.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::store::{AlertStore, EntryState, OutboxEntry};
use super::{Channel, Delivery, Notification, NotificationKind, Severity};
use crate::now_ms;
use crate::store::StoreError;

/// Rule name of the meta-alert raised when a channel refuses for good
/// (contract).
pub const CHANNEL_FAILED: &str = "channel_failed";
/// First retry delay.
const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest retry delay between two attempts (without `Retry-After`).
const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// Wait after a storage error before trying again.
const STORE_RETRY: Duration = Duration::from_secs(1);
/// Extra time given to a channel beyond its own timeout before the worker
/// gives up on the attempt (and treats it as ambiguous).
const SEND_GRACE: Duration = Duration::from_secs(5);

/// Retry delay after `attempts` failed attempts: doubling from 1 s, capped at
/// 30 s, with "equal jitter" (between half and all of it).
pub fn backoff(attempts: u32) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1u32 << attempts.saturating_sub(1).min(16));
    let d = exp.min(BACKOFF_CAP);
    let half = d / 2;
    half + half.mul_f64(rand::random::<f64>())
}

/// A channel's worker.
pub struct Worker {
    /// The channel.
    pub channel: Arc<dyn Channel>,
    /// The durable outbox.
    pub store: Arc<dyn AlertStore>,
    /// Woken when entries are queued for this channel.
    pub wake: Arc<Notify>,
    /// The running channels, told of a `channel_failed` notice.
    pub wakers: Arc<super::workers::Wakers>,
    /// Longest time one send may take before the worker stops waiting.
    pub send_timeout: Duration,
    /// Where delivery outcomes are counted (`/metrics`).
    pub health: Arc<crate::metrics::Health>,
}

impl Worker {
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn AlertStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .unwrap_or_else(|e| {
                Err(StoreError::Corrupt {
                    key: "outbox".into(),
                    reason: format!("store task failed: {e}"),
                })
            })
    }

    /// Delivers until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let name = self.channel.name().to_owned();
        let mut last_send: Option<Instant> = None;
        loop {
            if stop.is_cancelled() {
                return;
            }
            let head = {
                let name = name.clone();
                self.blocking(move |s| s.outbox_head(&name)).await
            };
            let entry = match head {
                Ok(Some(e)) => e,
                Ok(None) => {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = self.wake.notified() => continue,
                    }
                }
                Err(e) => {
                    tracing::error!(channel = %name, error = %e, "outbox read failed");
                    sleep_or_stop(STORE_RETRY, &stop).await;
                    continue;
                }
            };
            // Not before the entry's retry time, nor sooner than the channel's
            // spacing after the previous send.
            let mut wait = Duration::from_millis(
                u64::try_from(entry.next_attempt_unix_ms.saturating_sub(now_ms())).unwrap_or(0),
            );
            if let Some(t) = last_send {
                wait = wait.max(self.channel.min_interval().saturating_sub(t.elapsed()));
            }
            if !wait.is_zero() {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                continue;
            }
            last_send = Some(Instant::now());
            if let Err(e) = self.attempt(entry).await {
                tracing::error!(channel = %name, error = %e, "outbox write failed");
                sleep_or_stop(STORE_RETRY, &stop).await;
            }
        }
    }

    /// One delivery attempt of `entry`, recorded durably.
    async fn attempt(&self, mut entry: OutboxEntry) -> Result<(), StoreError> {
        let name = self.channel.name().to_owned();
        entry.state = EntryState::Sending;
        entry.attempts += 1;
        let marked = entry.clone();
        self.blocking(move |s| s.outbox_update(&marked)).await?;

        let outcome = tokio::time::timeout(
            self.send_timeout + SEND_GRACE,
            self.channel.send(&entry.notification),
        )
        .await
        .unwrap_or_else(|_| Delivery::Ambiguous {
            reason: "the send did not finish in time".into(),
        });
        let id = entry.notification.id.clone();
        let kind = match &outcome {
            Delivery::Accepted => "accepted",
            Delivery::Retry { .. } => "retry",
            Delivery::Ambiguous { .. } => "ambiguous",
            Delivery::Permanent { .. } => "permanent",
        };
        self.health.delivered(&name, kind);
        match outcome {
            Delivery::Accepted => {
                tracing::info!(channel = %name, notification = %id, attempts = entry.attempts, "notification delivered");
                self.blocking(move |s| s.outbox_remove(&entry)).await
            }
            Delivery::Retry { after, reason } => {
                let delay = backoff(entry.attempts).max(after.unwrap_or_default());
                tracing::warn!(channel = %name, notification = %id, %reason, retry_in = ?delay, "delivery failed; will retry");
                entry.state = EntryState::Queued;
                entry.next_attempt_unix_ms =
                    now_ms() + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
                entry.last_error = Some(reason);
                self.blocking(move |s| s.outbox_update(&entry)).await
            }
            Delivery::Ambiguous { reason } => {
                let delay = backoff(entry.attempts);
                tracing::warn!(channel = %name, notification = %id, %reason, retry_in = ?delay, "delivery outcome unknown; will retry as a possible duplicate");
                entry.state = EntryState::Queued;
                entry.notification.possible_duplicate = true;
                entry.next_attempt_unix_ms =
                    now_ms() + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
                entry.last_error = Some(reason);
                self.blocking(move |s| s.outbox_update(&entry)).await
            }
            Delivery::Permanent { reason } => {
                tracing::error!(channel = %name, notification = %id, %reason, "channel refused the notification for good; not retrying");
                entry.state = EntryState::Failed;
                entry.last_error = Some(reason.clone());
                let meta = channel_failed(&name, self.channel.kind(), &entry, &reason);
                let others: Vec<String> = self
                    .wakers
                    .names()
                    .into_iter()
                    .filter(|n| *n != name)
                    .collect();
                let notify: Vec<(String, Notification)> =
                    others.iter().map(|n| (n.clone(), meta.clone())).collect();
                self.blocking(move |s| s.fail_entry(&entry, &notify, now_ms()).map(|_| ()))
                    .await?;
                for n in &others {
                    self.wakers.wake(n);
                }
                Ok(())
            }
        }
    }
}

async fn sleep_or_stop(d: Duration, stop: &CancellationToken) {
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}

/// The meta-notification sent to the other channels when `channel` refused
/// `entry` for good.
fn channel_failed(channel: &str, kind: &str, entry: &OutboxEntry, reason: &str) -> Notification {
    let now = now_ms();
    Notification {
        id: format!("{channel}/{CHANNEL_FAILED}/{}", entry.id),
        kind: NotificationKind::Firing,
        subject: channel.to_owned(),
        rule: CHANNEL_FAILED.to_owned(),
        severity: Severity::Critical,
        summary: format!(
            "{kind} channel {channel} refused a notification for good ({reason}); it will not be retried. Fix the channel's settings. The notification was: {}",
            entry.notification.title()
        ),
        observed: Vec::new(),
        breaching_regions: Vec::new(),
        firing_since_unix_ms: now,
        at_unix_ms: now,
        dashboard_url: None,
        possible_duplicate: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        for _ in 0..50 {
            let b1 = backoff(1);
            assert!(
                b1 >= Duration::from_millis(500) && b1 <= Duration::from_secs(1),
                "{b1:?}"
            );
            let b3 = backoff(3);
            assert!(
                b3 >= Duration::from_secs(2) && b3 <= Duration::from_secs(4),
                "{b3:?}"
            );
            let big = backoff(40);
            assert!(
                big >= Duration::from_secs(15) && big <= BACKOFF_CAP,
                "{big:?}"
            );
        }
    }
}
