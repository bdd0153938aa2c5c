//! Store-and-forward queue of result batches not yet acknowledged by the
//! coordinator.
//!
//! Each pushed group of windows becomes one or more numbered `ResultBatch`es
//! (split so none exceeds [`MAX_BATCH_BYTES`]). A batch stays until the
//! coordinator acknowledges its seq; after a reconnect the session resends from
//! the oldest. The queue is bounded in bytes: when full, the oldest batches are
//! dropped and their windows counted in [`Spool::dropped_windows`].
//!
//! This implementation keeps the queue in memory: it survives coordinator
//! restarts and network loss, not an agent crash. A durable sled-backed spool
//! with the same interface is tracked in issue 5.

use std::collections::BTreeMap;
use std::sync::Mutex;

use prost::Message;
use tokio::sync::Notify;
use vantage_proto::v1::{ResultBatch, Window};

/// Largest encoded batch, well under the 1 MiB gRPC message limit so the
/// envelope and a few oversized windows still fit.
pub const MAX_BATCH_BYTES: usize = 512 * 1024;
/// Default bound on the queued bytes: 64 MiB holds hours of results for a
/// hundred checks.
pub const DEFAULT_MAX_BYTES: usize = 64 * 1024 * 1024;

#[derive(Default)]
struct Inner {
    next_seq: u64,
    pending: BTreeMap<u64, (ResultBatch, usize)>,
    bytes: usize,
    dropped_windows: u64,
}

/// The queue. Shared between the recorder (push) and the session (send, ack).
pub struct Spool {
    inner: Mutex<Inner>,
    max_bytes: usize,
    pushed: Notify,
}

impl Spool {
    /// An empty spool holding at most `max_bytes` of encoded batches.
    pub fn new(max_bytes: usize) -> Self {
        Spool {
            inner: Mutex::new(Inner {
                next_seq: 1,
                ..Inner::default()
            }),
            max_bytes,
            pushed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The critical sections below cannot panic halfway through an update,
        // so a poisoned lock still guards consistent data.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `windows` as one or more batches and returns their seqs.
    pub fn push(&self, windows: Vec<Window>) -> Vec<u64> {
        let mut seqs = Vec::new();
        if windows.is_empty() {
            return seqs;
        }
        let mut g = self.lock();
        let mut current: Vec<Window> = Vec::new();
        let mut current_bytes = 0;
        let mut batches = Vec::new();
        for w in windows {
            let size = w.encoded_len() + 8;
            if !current.is_empty() && current_bytes + size > MAX_BATCH_BYTES {
                batches.push(std::mem::take(&mut current));
                current_bytes = 0;
            }
            current_bytes += size;
            current.push(w);
        }
        batches.push(current);
        for windows in batches {
            let seq = g.next_seq;
            g.next_seq += 1;
            let batch = ResultBatch { seq, windows };
            let size = batch.encoded_len();
            g.bytes += size;
            g.pending.insert(seq, (batch, size));
            seqs.push(seq);
        }
        while g.bytes > self.max_bytes {
            let Some((_, (old, size))) = g.pending.pop_first() else {
                break;
            };
            g.bytes -= size;
            g.dropped_windows += old.windows.len() as u64;
            tracing::warn!(
                seq = old.seq,
                windows = old.windows.len(),
                "spool full: dropped the oldest batch"
            );
        }
        drop(g);
        self.pushed.notify_one();
        seqs
    }

    /// The oldest pending batch with a seq above `after`.
    pub fn next_after(&self, after: u64) -> Option<ResultBatch> {
        let g = self.lock();
        g.pending
            .range(after.saturating_add(1)..)
            .next()
            .map(|(_, (b, _))| b.clone())
    }

    /// Removes every batch up to and including `seq` (the coordinator
    /// processes a session's batches in order).
    pub fn ack(&self, seq: u64) {
        let mut g = self.lock();
        let keep = g.pending.split_off(&seq.saturating_add(1));
        let gone = std::mem::replace(&mut g.pending, keep);
        g.bytes -= gone.values().map(|(_, s)| s).sum::<usize>();
    }

    /// Applies the coordinator's `Welcome.last_stored_seq`: batches at or below
    /// it are already stored, and numbering continues above it.
    pub fn rebase(&self, last_stored: u64) {
        self.ack(last_stored);
        let mut g = self.lock();
        g.next_seq = g.next_seq.max(last_stored.saturating_add(1));
    }

    /// Batches waiting for an ack.
    pub fn len(&self) -> usize {
        self.lock().pending.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Pending batches with a seq at or below `seq` (sent but not acked).
    pub fn pending_up_to(&self, seq: u64) -> usize {
        self.lock().pending.range(..=seq).count()
    }

    /// Windows dropped because the spool was full.
    pub fn dropped_windows(&self) -> u64 {
        self.lock().dropped_windows
    }

    /// Completes after the next [`Spool::push`] (or at once if one happened
    /// since the last wait).
    pub async fn pushed(&self) {
        self.pushed.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(check: &str, pad: usize) -> Window {
        Window {
            check: check.into(),
            start_unix_ms: 1,
            duration_ms: 1000,
            last_error: "x".repeat(pad),
            ..Default::default()
        }
    }

    #[test]
    fn numbers_acks_and_rebases() {
        let s = Spool::new(DEFAULT_MAX_BYTES);
        assert_eq!(s.push(vec![w("a", 0)]), [1]);
        assert_eq!(s.push(vec![w("b", 0)]), [2]);
        assert!(s.push(vec![]).is_empty());
        assert_eq!(s.next_after(0).unwrap().seq, 1);
        assert_eq!(s.next_after(1).unwrap().seq, 2);
        assert!(s.next_after(2).is_none());
        s.ack(1);
        assert_eq!(s.len(), 1);
        assert_eq!(s.next_after(0).unwrap().seq, 2);
        // The coordinator already has up to 10: 2 goes, numbering jumps.
        s.rebase(10);
        assert!(s.is_empty());
        assert_eq!(s.push(vec![w("c", 0)]), [11]);
        // A lower last_stored (store wiped) never reuses numbers.
        s.rebase(0);
        assert_eq!(s.push(vec![w("d", 0)]), [12]);
        assert_eq!(s.pending_up_to(11), 1);
    }

    #[test]
    fn splits_large_pushes_below_the_message_limit() {
        let s = Spool::new(DEFAULT_MAX_BYTES);
        let windows: Vec<_> = (0..40).map(|i| w(&format!("c{i}"), 50_000)).collect();
        let seqs = s.push(windows);
        assert!(seqs.len() >= 4, "{seqs:?}");
        let mut total = 0;
        for seq in &seqs {
            let b = s.next_after(seq - 1).unwrap();
            assert!(b.encoded_len() <= MAX_BATCH_BYTES, "{}", b.encoded_len());
            total += b.windows.len();
        }
        assert_eq!(total, 40);
    }

    #[test]
    fn drops_oldest_when_full_and_counts_windows() {
        let s = Spool::new(250_000);
        for i in 0..5 {
            s.push(vec![w(&format!("c{i}"), 100_000)]);
        }
        assert_eq!(s.len(), 2);
        assert_eq!(s.dropped_windows(), 3);
        assert_eq!(s.next_after(0).unwrap().seq, 4);
    }
}
