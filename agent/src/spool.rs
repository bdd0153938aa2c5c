//! Store-and-forward queue of result batches not yet acknowledged by the
//! coordinator.
//!
//! Each pushed group of windows becomes one or more numbered `ResultBatch`es
//! (split so none exceeds [`MAX_BATCH_BYTES`]). [`Spool::push`] returns only
//! once they are on disk (sled, flushed), so a window counts as stored when it
//! survives a `kill -9`. A batch stays until the coordinator acknowledges its
//! seq; after a reconnect, or a restart of the agent, the session resends from
//! the oldest. The queue is bounded in bytes: when full, the oldest batches
//! are dropped and their windows counted in [`Spool::dropped_windows`] (also
//! kept on disk, so the count survives restarts).
//!
//! Seqs never repeat for one spool: the next seq is stored with the batches.
//! A spool that has not yet heard from a coordinator (new, or just
//! quarantined) renumbers its first batches above the coordinator's
//! `last_stored_seq` instead of taking them as already stored.
//!
//! Persistence sits behind [`SpoolBackend`]: [`SledBackend`] for the agent,
//! [`MemoryBackend`] for tests and tools that need no disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
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
/// Layout version of the sled spool.
const SCHEMA_VERSION: u32 = 1;
/// sled page cache of the spool: it is written once and read once per batch.
const CACHE_BYTES: u64 = 8 * 1024 * 1024;

/// A spool that cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The database could not be opened or has another layout.
    #[error("spool {path}: {reason}")]
    Open {
        /// The spool directory.
        path: String,
        /// What failed.
        reason: String,
    },
    /// Another process holds the spool (another agent with the same
    /// directory).
    #[error(
        "spool {path} is in use by another process (two agents cannot share a spool directory)"
    )]
    InUse {
        /// The spool directory.
        path: String,
    },
    /// A read or write failed.
    #[error("spool: {0}")]
    Io(String),
}

impl From<sled::Error> for SpoolError {
    fn from(e: sled::Error) -> Self {
        SpoolError::Io(e.to_string())
    }
}

/// Counters stored with the batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// The seq the next batch gets.
    pub next_seq: u64,
    /// Windows dropped because the spool was full, over the spool's life.
    pub dropped_windows: u64,
    /// Whether a coordinator's `last_stored_seq` was applied once: before
    /// that, pending seqs may collide with what the coordinator has.
    pub based: bool,
}

impl Default for Meta {
    fn default() -> Self {
        Meta {
            next_seq: 1,
            dropped_windows: 0,
            based: false,
        }
    }
}

/// What a backend holds: its counters and its batches (seq, encoded), oldest
/// first.
pub type Stored = (Meta, Vec<(u64, Vec<u8>)>);

/// Where the batches live. Every method is durable on return unless it says
/// otherwise.
pub trait SpoolBackend: Send + Sync {
    /// Adds `add` (seq, encoded batch), removes `remove` and stores `meta`,
    /// atomically, and flushes.
    fn commit(&self, add: &[(u64, Vec<u8>)], remove: &[u64], meta: Meta) -> Result<(), SpoolError>;
    /// Removes every batch up to and including `seq`. Need not be flushed: a
    /// batch that comes back after a crash is resent and the coordinator
    /// ignores it by seq.
    fn remove_up_to(&self, seq: u64) -> Result<(), SpoolError>;
    /// The encoded batch `seq`.
    fn get(&self, seq: u64) -> Result<Option<Vec<u8>>, SpoolError>;
    /// Everything stored, oldest first.
    fn recover(&self) -> Result<Stored, SpoolError>;
}

/// Batches in memory only (lost with the process).
#[derive(Default)]
pub struct MemoryBackend(Mutex<MemoryInner>);

type MemoryInner = (Option<Meta>, BTreeMap<u64, Vec<u8>>);

impl SpoolBackend for MemoryBackend {
    fn commit(&self, add: &[(u64, Vec<u8>)], remove: &[u64], meta: Meta) -> Result<(), SpoolError> {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for seq in remove {
            g.1.remove(seq);
        }
        for (seq, bytes) in add {
            g.1.insert(*seq, bytes.clone());
        }
        g.0 = Some(meta);
        Ok(())
    }

    fn remove_up_to(&self, seq: u64) -> Result<(), SpoolError> {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let keep = g.1.split_off(&seq.saturating_add(1));
        g.1 = keep;
        Ok(())
    }

    fn get(&self, seq: u64) -> Result<Option<Vec<u8>>, SpoolError> {
        let g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        Ok(g.1.get(&seq).cloned())
    }

    fn recover(&self) -> Result<Stored, SpoolError> {
        let g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        Ok((
            g.0.unwrap_or_default(),
            g.1.iter().map(|(k, v)| (*k, v.clone())).collect(),
        ))
    }
}

/// Batches in a sled database of their own: tree `batches` (seq, big-endian
/// → encoded `ResultBatch`) and tree `meta` (schema version, counters).
pub struct SledBackend {
    db: sled::Db,
    batches: sled::Tree,
    meta: sled::Tree,
}

impl SledBackend {
    /// Opens or creates the spool in `dir`.
    pub fn open(dir: &Path) -> Result<Self, SpoolError> {
        let open_err = |reason: String| SpoolError::Open {
            path: dir.display().to_string(),
            reason,
        };
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(|e| {
                // sled reports its directory lock only in the message.
                if e.to_string().contains("could not acquire lock") {
                    SpoolError::InUse {
                        path: dir.display().to_string(),
                    }
                } else {
                    open_err(e.to_string())
                }
            })?;
        let meta = db.open_tree("meta").map_err(|e| open_err(e.to_string()))?;
        match meta.get("schema_version")? {
            None => {
                meta.insert("schema_version", &SCHEMA_VERSION.to_be_bytes())?;
                db.flush()?;
            }
            Some(v) if v.as_ref() == SCHEMA_VERSION.to_be_bytes() => {}
            Some(v) => {
                return Err(open_err(format!(
                    "layout version {:?}, this agent reads version {SCHEMA_VERSION}",
                    v.as_ref()
                )))
            }
        }
        let batches = db
            .open_tree("batches")
            .map_err(|e| open_err(e.to_string()))?;
        Ok(SledBackend { db, batches, meta })
    }
}

fn u64_at(v: Option<sled::IVec>) -> Result<Option<u64>, SpoolError> {
    v.map(|v| {
        <[u8; 8]>::try_from(v.as_ref())
            .map(u64::from_be_bytes)
            .map_err(|_| SpoolError::Io("a counter is not 8 bytes".into()))
    })
    .transpose()
}

impl SpoolBackend for SledBackend {
    fn commit(&self, add: &[(u64, Vec<u8>)], remove: &[u64], meta: Meta) -> Result<(), SpoolError> {
        use sled::Transactional as _;
        let mut batch = sled::Batch::default();
        for seq in remove {
            batch.remove(&seq.to_be_bytes());
        }
        for (seq, bytes) in add {
            batch.insert(&seq.to_be_bytes(), bytes.as_slice());
        }
        (&self.batches, &self.meta)
            .transaction(|(b, m)| {
                b.apply_batch(&batch)?;
                m.insert("next_seq", &meta.next_seq.to_be_bytes())?;
                m.insert("dropped_windows", &meta.dropped_windows.to_be_bytes())?;
                m.insert("based", &[u8::from(meta.based)])?;
                Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| SpoolError::Io(format!("{e:?}")))?;
        self.db.flush()?;
        Ok(())
    }

    fn remove_up_to(&self, seq: u64) -> Result<(), SpoolError> {
        let mut batch = sled::Batch::default();
        for key in self.batches.range(..=seq.to_be_bytes()).keys() {
            batch.remove(key?);
        }
        self.batches.apply_batch(batch)?;
        Ok(())
    }

    fn get(&self, seq: u64) -> Result<Option<Vec<u8>>, SpoolError> {
        Ok(self.batches.get(seq.to_be_bytes())?.map(|v| v.to_vec()))
    }

    fn recover(&self) -> Result<Stored, SpoolError> {
        let defaults = Meta::default();
        let meta = Meta {
            next_seq: u64_at(self.meta.get("next_seq")?)?.unwrap_or(defaults.next_seq),
            dropped_windows: u64_at(self.meta.get("dropped_windows")?)?.unwrap_or(0),
            based: self.meta.get("based")?.is_some_and(|v| v.as_ref() == [1]),
        };
        let mut out = Vec::new();
        for kv in self.batches.iter() {
            let (k, v) = kv?;
            let seq = <[u8; 8]>::try_from(k.as_ref())
                .map(u64::from_be_bytes)
                .map_err(|_| SpoolError::Io("a batch key is not 8 bytes".into()))?;
            out.push((seq, v.to_vec()));
        }
        Ok((meta, out))
    }
}

/// What the spool knows of a batch without reading it.
#[derive(Debug, Clone, Copy)]
struct Entry {
    size: usize,
    windows: u64,
}

struct Inner {
    meta: Meta,
    index: BTreeMap<u64, Entry>,
    bytes: usize,
}

/// The queue. Shared between the recorder (push) and the session (send, ack).
pub struct Spool {
    /// Held across a backend commit so that the index never names a batch
    /// the backend does not have yet; commits are one flush, a few ms.
    inner: Mutex<Inner>,
    backend: Box<dyn SpoolBackend>,
    max_bytes: usize,
    pushed: Notify,
}

/// A spool directory moved aside because it could not be opened.
#[derive(Debug)]
pub struct Quarantined {
    /// Where the old directory now is.
    pub moved_to: PathBuf,
    /// Why it could not be opened.
    pub error: SpoolError,
}

impl Spool {
    /// An empty spool in memory holding at most `max_bytes` of batches.
    pub fn new(max_bytes: usize) -> Self {
        Spool::with_backend(Box::new(MemoryBackend::default()), max_bytes)
            .unwrap_or_else(|_| unreachable!("an empty memory backend recovers"))
    }

    /// Opens the spool in `dir` (creating it) and recovers what it holds.
    pub fn open(dir: &Path, max_bytes: usize) -> Result<Self, SpoolError> {
        Spool::with_backend(Box::new(SledBackend::open(dir)?), max_bytes)
    }

    /// Opens the spool in `dir`; when it cannot be opened or read, moves the
    /// directory aside (`DIR.quarantine-UNIXSECS`, kept for inspection) and
    /// starts an empty one, saying so in the second value. Fails when
    /// another process holds the spool, or when even the empty spool cannot
    /// be created.
    pub fn open_or_quarantine(
        dir: &Path,
        max_bytes: usize,
    ) -> Result<(Self, Option<Quarantined>), SpoolError> {
        match Spool::open(dir, max_bytes) {
            Ok(s) => Ok((s, None)),
            Err(e @ SpoolError::InUse { .. }) => Err(e),
            Err(error) => {
                let secs = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let mut name = dir.as_os_str().to_owned();
                name.push(format!(".quarantine-{secs}"));
                let moved_to = PathBuf::from(name);
                std::fs::rename(dir, &moved_to).map_err(|e| SpoolError::Open {
                    path: dir.display().to_string(),
                    reason: format!(
                        "{error}; moving it aside to {} also failed: {e}",
                        moved_to.display()
                    ),
                })?;
                let spool = Spool::open(dir, max_bytes)?;
                Ok((spool, Some(Quarantined { moved_to, error })))
            }
        }
    }

    /// A spool over `backend`, with what it already holds.
    pub fn with_backend(
        backend: Box<dyn SpoolBackend>,
        max_bytes: usize,
    ) -> Result<Self, SpoolError> {
        let (mut meta, stored) = backend.recover()?;
        let mut index = BTreeMap::new();
        let mut bytes = 0;
        let mut unreadable = Vec::new();
        for (seq, encoded) in stored {
            match ResultBatch::decode(encoded.as_slice()) {
                Ok(b) if b.seq == seq => {
                    bytes += encoded.len();
                    index.insert(
                        seq,
                        Entry {
                            size: encoded.len(),
                            windows: b.windows.len() as u64,
                        },
                    );
                }
                _ => unreadable.push(seq),
            }
            meta.next_seq = meta.next_seq.max(seq.saturating_add(1));
        }
        if !unreadable.is_empty() {
            tracing::error!(
                batches = unreadable.len(),
                "spool: unreadable batches removed"
            );
            backend.commit(&[], &unreadable, meta)?;
        }
        if !index.is_empty() {
            tracing::info!(
                batches = index.len(),
                bytes,
                "spool: resending batches kept from the last run"
            );
        }
        Ok(Spool {
            inner: Mutex::new(Inner { meta, index, bytes }),
            backend,
            max_bytes,
            pushed: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The critical sections below change the index only after the backend
        // accepted the change, so a poisoned lock still guards consistent data.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores `windows` as one or more batches and returns their seqs, once
    /// they are on disk. Blocks for a flush: call it off the async threads.
    pub fn push(&self, windows: Vec<Window>) -> Result<Vec<u64>, SpoolError> {
        if windows.is_empty() {
            return Ok(Vec::new());
        }
        let mut g = self.lock();
        let mut groups = Vec::new();
        let mut current: Vec<Window> = Vec::new();
        let mut current_bytes = 0;
        for w in windows {
            let size = w.encoded_len() + 8;
            if !current.is_empty() && current_bytes + size > MAX_BATCH_BYTES {
                groups.push(std::mem::take(&mut current));
                current_bytes = 0;
            }
            current_bytes += size;
            current.push(w);
        }
        groups.push(current);
        let mut meta = g.meta;
        let mut add = Vec::new();
        let mut new_entries = Vec::new();
        for windows in groups {
            let seq = meta.next_seq;
            meta.next_seq += 1;
            let count = windows.len() as u64;
            let encoded = ResultBatch {
                seq,
                windows,
                spool_dropped_windows_total: 0,
            }
            .encode_to_vec();
            new_entries.push((
                seq,
                Entry {
                    size: encoded.len(),
                    windows: count,
                },
            ));
            add.push((seq, encoded));
        }
        // Oldest first out until the new batches fit.
        let mut bytes = g.bytes + new_entries.iter().map(|(_, e)| e.size).sum::<usize>();
        let mut remove = Vec::new();
        let mut old = g.index.iter();
        while bytes > self.max_bytes {
            let Some((&seq, e)) = old.next() else { break };
            bytes -= e.size;
            meta.dropped_windows += e.windows;
            remove.push(seq);
        }
        let mut new = new_entries.iter();
        while bytes > self.max_bytes {
            // The new batches alone exceed the bound.
            let Some(&(seq, e)) = new.next() else { break };
            bytes -= e.size;
            meta.dropped_windows += e.windows;
            remove.push(seq);
        }
        add.retain(|(seq, _)| !remove.contains(seq));
        self.backend.commit(&add, &remove, meta)?;
        if !remove.is_empty() {
            tracing::warn!(
                batches = remove.len(),
                dropped_windows_total = meta.dropped_windows,
                "spool full: dropped the oldest batches"
            );
        }
        for seq in &remove {
            g.index.remove(seq);
        }
        let seqs = new_entries.iter().map(|(s, _)| *s).collect();
        for (seq, e) in new_entries {
            if !remove.contains(&seq) {
                g.index.insert(seq, e);
            }
        }
        g.bytes = bytes;
        g.meta = meta;
        drop(g);
        self.pushed.notify_one();
        Ok(seqs)
    }

    /// The oldest pending batch with a seq above `after`.
    pub fn next_after(&self, after: u64) -> Option<ResultBatch> {
        let g = self.lock();
        let (&seq, _) = g.index.range(after.saturating_add(1)..).next()?;
        match self.backend.get(seq) {
            Ok(Some(bytes)) => ResultBatch::decode(bytes.as_slice()).ok().map(|mut b| {
                // The count as of sending, so the coordinator sees new gaps.
                b.spool_dropped_windows_total = g.meta.dropped_windows;
                b
            }),
            Ok(None) => None,
            Err(e) => {
                tracing::error!(seq, error = %e, "spool: reading a batch failed");
                None
            }
        }
    }

    /// Removes every batch up to and including `seq` (the coordinator
    /// processes a session's batches in order).
    pub fn ack(&self, seq: u64) {
        let mut g = self.lock();
        if g.index.range(..=seq).next().is_none() {
            return;
        }
        if let Err(e) = self.backend.remove_up_to(seq) {
            // They stay and are resent; the coordinator ignores them by seq.
            tracing::error!(seq, error = %e, "spool: removing acknowledged batches failed");
            return;
        }
        let keep = g.index.split_off(&seq.saturating_add(1));
        let gone = std::mem::replace(&mut g.index, keep);
        g.bytes -= gone.values().map(|e| e.size).sum::<usize>();
    }

    /// Applies the coordinator's `Welcome.last_stored_seq`. For a spool that
    /// already numbered after a coordinator, batches at or below it are
    /// stored and go. A spool that never heard from one (new or quarantined)
    /// cannot know: its pending batches are renumbered above `last_stored`,
    /// so the coordinator takes them as new. Numbering continues above it.
    pub fn rebase(&self, last_stored: u64) -> Result<(), SpoolError> {
        let based = self.lock().meta.based;
        if based {
            self.ack(last_stored);
        }
        let mut g = self.lock();
        let mut meta = g.meta;
        meta.next_seq = meta.next_seq.max(last_stored.saturating_add(1));
        meta.based = true;
        let mut add = Vec::new();
        let mut remove = Vec::new();
        let mut renumbered = BTreeMap::new();
        if !based {
            for (&seq, &e) in &g.index {
                let bytes = self.backend.get(seq)?.unwrap_or_default();
                let mut batch = ResultBatch::decode(bytes.as_slice())
                    .map_err(|e| SpoolError::Io(e.to_string()))?;
                // Nothing was sent before the first Welcome, so every
                // pending batch can take a new number, in order.
                let new_seq = meta.next_seq;
                meta.next_seq += 1;
                if new_seq != seq {
                    batch.seq = new_seq;
                    remove.push(seq);
                    add.push((new_seq, batch.encode_to_vec()));
                }
                renumbered.insert(new_seq, e);
            }
        }
        self.backend.commit(&add, &remove, meta)?;
        if !based {
            if !remove.is_empty() {
                tracing::info!(
                    batches = remove.len(),
                    from = meta.next_seq - remove.len() as u64,
                    "spool: renumbered batches above the coordinator's last stored seq"
                );
            }
            g.index = renumbered;
        }
        g.meta = meta;
        Ok(())
    }

    /// Batches waiting for an ack.
    pub fn len(&self) -> usize {
        self.lock().index.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Pending batches with a seq at or below `seq` (sent but not acked).
    pub fn pending_up_to(&self, seq: u64) -> usize {
        self.lock().index.range(..=seq).count()
    }

    /// The seq the next batch will get (every seq below it was used).
    pub fn next_seq(&self) -> u64 {
        self.lock().meta.next_seq
    }

    /// Windows dropped because the spool was full, over the spool's life.
    pub fn dropped_windows(&self) -> u64 {
        self.lock().meta.dropped_windows
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
        assert_eq!(s.push(vec![w("a", 0)]).unwrap(), [1]);
        // The first Welcome: 1 is renumbered above what the coordinator has.
        s.rebase(4).unwrap();
        assert_eq!(s.next_after(0).unwrap().seq, 5);
        assert_eq!(s.push(vec![w("b", 0)]).unwrap(), [6]);
        assert!(s.push(vec![]).unwrap().is_empty());
        assert_eq!(s.next_after(5).unwrap().seq, 6);
        assert!(s.next_after(6).is_none());
        s.ack(5);
        assert_eq!(s.len(), 1);
        assert_eq!(s.next_after(0).unwrap().seq, 6);
        // Later Welcomes: the coordinator already has up to 10, 6 goes,
        // numbering jumps.
        s.rebase(10).unwrap();
        assert!(s.is_empty());
        assert_eq!(s.push(vec![w("c", 0)]).unwrap(), [11]);
        // A lower last_stored (store wiped) never reuses numbers.
        s.rebase(0).unwrap();
        assert_eq!(s.push(vec![w("d", 0)]).unwrap(), [12]);
        assert_eq!(s.pending_up_to(11), 1);
    }

    #[test]
    fn splits_large_pushes_below_the_message_limit() {
        let s = Spool::new(DEFAULT_MAX_BYTES);
        let windows: Vec<_> = (0..40).map(|i| w(&format!("c{i}"), 50_000)).collect();
        let seqs = s.push(windows).unwrap();
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
            s.push(vec![w(&format!("c{i}"), 100_000)]).unwrap();
        }
        assert_eq!(s.len(), 2);
        assert_eq!(s.dropped_windows(), 3);
        assert_eq!(s.next_after(0).unwrap().seq, 4);
        // A push larger than the whole bound is dropped and counted too.
        s.push(vec![w("huge", 300_000)]).unwrap();
        assert_eq!(s.dropped_windows(), 6);
        assert!(s.is_empty());
    }

    /// Opens `dir`, retrying while sled's flusher of a spool dropped a moment
    /// ago still holds the lock.
    fn reopen(dir: &Path, max: usize) -> Spool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match Spool::open(dir, max) {
                Ok(s) => return s,
                Err(e) if std::time::Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("reopening {}: {e}", dir.display()),
            }
        }
    }

    #[test]
    fn a_reopened_spool_has_its_batches_counters_and_numbering() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Spool::open(dir.path(), 250_000).unwrap();
            s.rebase(0).unwrap();
            for i in 0..4 {
                s.push(vec![w(&format!("c{i}"), 100_000)]).unwrap();
            }
            s.ack(3);
            assert_eq!(s.dropped_windows(), 2);
        }
        let s = reopen(dir.path(), 250_000);
        assert_eq!(s.len(), 1);
        let b = s.next_after(0).unwrap();
        assert_eq!((b.seq, b.windows[0].check.as_str()), (4, "c3"));
        assert_eq!(s.dropped_windows(), 2, "the drop count survives");
        // Already based: last_stored 4 means 4 is stored.
        s.rebase(4).unwrap();
        assert!(s.is_empty());
        assert_eq!(s.push(vec![w("next", 0)]).unwrap(), [5]);
        drop(s);
        // Even with nothing pending, seqs are never reused after a restart.
        let s = reopen(dir.path(), 250_000);
        s.ack(5);
        drop(s);
        let s = reopen(dir.path(), 250_000);
        assert_eq!(s.push(vec![w("later", 0)]).unwrap(), [6]);
    }

    #[test]
    fn an_unreadable_spool_is_moved_aside_and_replaced() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("spool");
        {
            let s = Spool::open(&dir, DEFAULT_MAX_BYTES).unwrap();
            s.push(vec![w("a", 0)]).unwrap();
        }
        // Another layout version, as a future agent would leave it.
        {
            let db = loop {
                match sled::open(&dir) {
                    Ok(db) => break db,
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
                }
            };
            db.open_tree("meta")
                .unwrap()
                .insert("schema_version", &9u32.to_be_bytes())
                .unwrap();
            db.flush().unwrap();
        }
        let (s, q) = loop {
            match Spool::open_or_quarantine(&dir, DEFAULT_MAX_BYTES) {
                Ok(r) => break r,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        };
        let q = q.expect("quarantined");
        assert!(
            q.error.to_string().contains("layout version"),
            "{}",
            q.error
        );
        assert!(q.moved_to.exists() && q.moved_to.to_string_lossy().contains(".quarantine-"));
        assert!(s.is_empty());
        assert_eq!(s.push(vec![w("b", 0)]).unwrap(), [1]);
    }
}
