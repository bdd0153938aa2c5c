//! Durable storage of result windows, behind the [`Store`] trait so the backend
//! can be swapped (shared/RELIABILITY.md §2: sled 0.34.7 is pinned and kept
//! behind a small trait; redb is the fallback).
//!
//! The one sled implementation, [`SledStore`], keeps three trees:
//! - `windows`: key `check \0 start_ms(be) region \0 agent` → [`StoredWindow`];
//!   ordered by check then time, so "the last five minutes of a check" is one
//!   range scan.
//! - `batches`: key `agent \0 seq(be)` → when it was stored (unix ms in
//!   `ordered_ms` form; empty in markers from before they carried it); the
//!   idempotency set for `(agent, seq)` and the source of
//!   `Welcome.last_stored_seq`. Pruned with the raw windows, except each
//!   agent's last.
//! - `rollup_1h`, `rollup_1d`: hourly and daily roll-ups per check, hour (or
//!   day) and region ([`rollup`]), written in the same transaction as the
//!   windows.
//! - `meta`: the schema version, and whether the roll-ups are complete.
//!
//! Every method is synchronous and may block on disk; async callers go through
//! `spawn_blocking`.

use std::path::Path;

use prost::Message;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use vantage_proto::v1;

pub mod rollup;

pub use rollup::{Rollup, Span};

/// Schema version written to `meta`; bump with a migration when the key or value
/// layout changes.
const SCHEMA_VERSION: u32 = 1;

/// A window as stored: the agent's window plus who reported it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredWindow {
    /// Agent name.
    #[prost(string, tag = "1")]
    pub agent: String,
    /// Region of the agent.
    #[prost(string, tag = "2")]
    pub region: String,
    /// The window as received.
    #[prost(message, optional, tag = "3")]
    pub window: Option<v1::Window>,
}

/// What happened to an ingested batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestOutcome {
    /// Newly stored and durable. `replaced_windows` counts windows that were
    /// already stored under another seq of the same agent (the same check,
    /// start and region): an agent that reports a window twice has a bug, and
    /// the newer copy wins.
    Stored {
        /// Windows that overwrote an earlier copy.
        replaced_windows: usize,
    },
    /// `(agent, seq)` was stored before; nothing was written again.
    Duplicate,
}

/// Storage failures. All are reported to the caller; none panic.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened. It may be in use by another process or
    /// damaged; see the recovery steps printed by the coordinator.
    #[error("cannot open the store at {path}: {source}")]
    Open {
        /// The data directory.
        path: String,
        /// sled's error.
        #[source]
        source: sled::Error,
    },
    /// The store was written by a newer or unknown schema.
    #[error("the store at {path} has schema version {found}; this coordinator reads version {SCHEMA_VERSION}")]
    Schema {
        /// The data directory.
        path: String,
        /// The version found.
        found: u32,
    },
    /// A read, write or flush failed.
    #[error("store I/O: {0}")]
    Io(#[from] sled::Error),
    /// A stored value could not be decoded (corruption or a bug).
    #[error("corrupt stored value under {key}: {reason}")]
    Corrupt {
        /// Printable key.
        key: String,
        /// Decoder message.
        reason: String,
    },
}

/// Storage for ingested result windows.
pub trait Store: Send + Sync + 'static {
    /// Stores batches `(seq, windows)` of `agent`, in order, and returns
    /// once all are durable: one flush for the group, which is what makes a
    /// backlog drain fast. Idempotent: a batch already stored is not written
    /// again. One outcome per batch.
    fn ingest_batches(
        &self,
        agent: &str,
        region: &str,
        batches: &[(u64, &[v1::Window])],
    ) -> Result<Vec<IngestOutcome>, StoreError>;

    /// [`Store::ingest_batches`] for one batch.
    fn ingest(
        &self,
        agent: &str,
        region: &str,
        seq: u64,
        windows: &[v1::Window],
    ) -> Result<IngestOutcome, StoreError> {
        let outcomes = self.ingest_batches(agent, region, &[(seq, windows)])?;
        Ok(outcomes
            .first()
            .copied()
            .unwrap_or(IngestOutcome::Duplicate))
    }

    /// Highest seq stored for `agent`, 0 if none.
    fn last_seq(&self, agent: &str) -> Result<u64, StoreError>;

    /// Windows of `check` whose start is at or after `since_unix_ms`, oldest
    /// first.
    fn windows_since(
        &self,
        check: &str,
        since_unix_ms: i64,
    ) -> Result<Vec<StoredWindow>, StoreError>;

    /// Hourly or daily roll-ups of `check` starting in
    /// `[from_unix_ms, to_unix_ms)`, by start then region.
    fn rollups(
        &self,
        check: &str,
        span: Span,
        from_unix_ms: i64,
        to_unix_ms: i64,
    ) -> Result<Vec<Rollup>, StoreError>;

    /// Makes everything written so far durable.
    fn flush(&self) -> Result<(), StoreError>;

    /// Every check ever assigned to `agent` (kept across restarts), so a
    /// backlog the agent still holds for a check that has since moved to
    /// another agent is accepted.
    fn assigned_checks(&self, agent: &str)
        -> Result<std::collections::HashSet<String>, StoreError>;

    /// Records that `checks` were assigned to `agent`. Made durable by the
    /// next flush (every ingest flushes).
    fn record_assigned(&self, agent: &str, checks: &[String]) -> Result<(), StoreError>;
}

/// sled-backed [`Store`].
pub struct SledStore {
    db: sled::Db,
    windows: sled::Tree,
    batches: sled::Tree,
    /// `agent \0 check` for every check ever assigned to the agent.
    assigned: sled::Tree,
    /// Hourly and daily roll-ups ([`rollup`]).
    rollups: rollup::Trees,
}

impl SledStore {
    /// Opens (or creates) the store in `dir` with an explicit cache size (sled's
    /// 1 GiB default is far above what the coordinator needs).
    pub fn open(dir: &Path, cache_capacity_bytes: u64) -> Result<Self, StoreError> {
        let path = dir.display().to_string();
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_capacity_bytes)
            .open()
            .map_err(|source| StoreError::Open {
                path: path.clone(),
                source,
            })?;
        let meta = db.open_tree("meta")?;
        match meta.get("schema_version")? {
            None => {
                meta.insert("schema_version", &SCHEMA_VERSION.to_be_bytes())?;
                db.flush()?;
            }
            Some(v) => {
                let found = <[u8; 4]>::try_from(v.as_ref())
                    .map(u32::from_be_bytes)
                    .unwrap_or(u32::MAX);
                if found != SCHEMA_VERSION {
                    return Err(StoreError::Schema { path, found });
                }
            }
        }
        let store = SledStore {
            windows: db.open_tree("windows")?,
            batches: db.open_tree("batches")?,
            assigned: db.open_tree("assigned")?,
            rollups: rollup::Trees::open(&db)?,
            db,
        };
        if meta.get(rollup::COMPLETE_KEY)?.is_none() {
            store.rebuild_rollups()?;
            meta.insert(rollup::COMPLETE_KEY, &[1u8][..])?;
            store.db.flush()?;
        }
        Ok(store)
    }

    /// Rebuilds the roll-ups from the stored windows. Runs at open
    /// when they are not known to be complete: a store from before roll-ups
    /// existed, or one whose rebuild was interrupted (the marker is written
    /// only after it finished). Reads every stored window once.
    pub fn rebuild_rollups(&self) -> Result<(), StoreError> {
        if self.windows.is_empty() {
            for span in Span::ALL {
                self.rollups.of(span).clear()?;
            }
            return Ok(());
        }
        let started = std::time::Instant::now();
        tracing::info!("building hourly and daily roll-ups from the stored windows");
        let (windows, rollups) = rollup::rebuild(&self.windows, &self.rollups, crate::now_ms())?;
        tracing::info!(
            windows,
            rollups,
            took_ms = started.elapsed().as_millis() as u64,
            "roll-ups built"
        );
        Ok(())
    }

    /// Removes roll-ups past retention ([`rollup::RETENTION_MS`]); returns how
    /// many. The coordinator runs it at start and hourly.
    pub fn prune_rollups(&self, now_ms: i64) -> Result<usize, StoreError> {
        let mut removed = 0;
        for span in Span::ALL {
            removed += rollup::prune(self.rollups.of(span), now_ms)?;
        }
        Ok(removed)
    }

    /// Removes the raw windows that started more than `keep` before
    /// `now_ms`; returns how many. Their counts live on in the roll-ups,
    /// which were written with them. The coordinator runs it at start and
    /// hourly, with `server.raw_retention`.
    pub fn prune_windows(
        &self,
        now_ms: i64,
        keep: std::time::Duration,
    ) -> Result<usize, StoreError> {
        prune_before(&self.windows, cutoff(now_ms, keep), "window")
    }

    /// Removes the batch markers stored more than `keep` before `now_ms`,
    /// except each agent's last (its `Welcome.last_stored_seq`); returns how
    /// many. An agent drops from its spool every batch up to that seq, so a
    /// pruned marker is never asked about again. Markers from before they
    /// carried a time count as old. The coordinator runs it with the window
    /// pruning, with `server.raw_retention`.
    pub fn prune_batches(
        &self,
        now_ms: i64,
        keep: std::time::Duration,
    ) -> Result<usize, StoreError> {
        let cutoff = cutoff(now_ms, keep);
        per_name(&self.batches, "batch key without an agent name", |prefix| {
            // Seqs are stored in order, so the old ones come first; the
            // scan stops at the first recent one, or before the last.
            let mut removed = 0;
            let mut batch = sled::Batch::default();
            let mut entries = self.batches.scan_prefix(prefix).peekable();
            while let Some(entry) = entries.next() {
                let (k, stored_at) = entry?;
                if entries.peek().is_none() || stored_at_ms(&stored_at) >= cutoff {
                    break;
                }
                batch.remove(k);
                removed += 1;
            }
            self.batches.apply_batch(batch)?;
            Ok(removed)
        })
    }
}

/// `now_ms` less `keep`, saturating.
fn cutoff(now_ms: i64, keep: std::time::Duration) -> i64 {
    now_ms.saturating_sub(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX))
}

/// When a batch marker was stored; `i64::MIN` for a marker without a time.
fn stored_at_ms(value: &[u8]) -> i64 {
    <[u8; 8]>::try_from(value)
        .map(unordered_ms)
        .unwrap_or(i64::MIN)
}

impl SledStore {
    /// Opens a store that was just dropped in this process: sled's flusher
    /// thread can hold the directory lock for a moment after the drop.
    #[cfg(test)]
    pub(crate) fn reopen(dir: &Path, cache_capacity_bytes: u64) -> Self {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match SledStore::open(dir, cache_capacity_bytes) {
                Ok(s) => return s,
                Err(e) if std::time::Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("reopening {}: {e}", dir.display()),
            }
        }
    }

    /// Every seq stored for `agent`, ascending (audits and crash tests: a
    /// gap is a lost batch).
    pub fn stored_seqs(&self, agent: &str) -> Result<Vec<u64>, StoreError> {
        let prefix = window_prefix(agent);
        let mut out = Vec::new();
        for entry in self.batches.scan_prefix(&prefix).keys() {
            let k = entry?;
            let seq = <[u8; 8]>::try_from(&k[prefix.len()..])
                .map(u64::from_be_bytes)
                .map_err(|_| StoreError::Corrupt {
                    key: String::from_utf8_lossy(&k).into_owned(),
                    reason: "batch key without an 8-byte seq".into(),
                })?;
            out.push(seq);
        }
        Ok(out)
    }

    /// The database, for the other trees kept in the same directory (alert
    /// state, outbox).
    pub(crate) fn db(&self) -> &sled::Db {
        &self.db
    }
}

fn batch_key(agent: &str, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(agent.len() + 9);
    k.extend_from_slice(agent.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Maps signed milliseconds onto u64 so that byte order is time order.
pub(crate) fn ordered_ms(ms: i64) -> [u8; 8] {
    ((ms as u64) ^ (1 << 63)).to_be_bytes()
}

/// Inverse of [`ordered_ms`].
pub(crate) fn unordered_ms(b: [u8; 8]) -> i64 {
    (u64::from_be_bytes(b) ^ (1 << 63)) as i64
}

/// Key prefix of `agent`'s entries in the `assigned` tree (names never
/// contain NUL).
fn assigned_prefix(agent: &str) -> Vec<u8> {
    let mut k = agent.as_bytes().to_vec();
    k.push(0);
    k
}

/// Removes the entries of `tree` (keys `check \0 start_ms(be) ...`) that
/// started before `cutoff_ms`, one check at a time, each with one sled batch.
/// Returns how many were removed; `what` names the entries in errors.
pub(crate) fn prune_before(
    tree: &sled::Tree,
    cutoff_ms: i64,
    what: &str,
) -> Result<usize, StoreError> {
    let cutoff = ordered_ms(cutoff_ms);
    per_name(
        tree,
        &format!("{what} key without a check name"),
        |prefix| {
            let mut end = prefix.to_vec();
            end.extend_from_slice(&cutoff);
            let mut removed = 0;
            let mut batch = sled::Batch::default();
            for old in tree.range(prefix..end.as_slice()).keys() {
                batch.remove(old?);
                removed += 1;
            }
            tree.apply_batch(batch)?;
            Ok(removed)
        },
    )
}

/// Runs `each` once per name of `tree`, whose keys are `name \0 ...`, with
/// that name's prefix (`name \0`), and adds up the counts it returns. A key
/// without a NUL is corrupt; `no_name` says so.
fn per_name(
    tree: &sled::Tree,
    no_name: &str,
    mut each: impl FnMut(&[u8]) -> Result<usize, StoreError>,
) -> Result<usize, StoreError> {
    let mut total = 0;
    let mut cursor: Vec<u8> = Vec::new();
    while let Some(key) = tree.range(cursor.as_slice()..).keys().next() {
        let key = key?;
        let Some(nul) = key.iter().position(|b| *b == 0) else {
            return Err(StoreError::Corrupt {
                key: String::from_utf8_lossy(&key).into_owned(),
                reason: no_name.to_owned(),
            });
        };
        total += each(&key[..=nul])?;
        // Past every key of this name: names never contain NUL, so
        // `name \x01` sorts after all of `name \0 ...`.
        cursor = key[..nul].to_vec();
        cursor.push(1);
    }
    Ok(total)
}

fn window_prefix(check: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(check.len() + 1);
    k.extend_from_slice(check.as_bytes());
    k.push(0);
    k
}

fn window_key(check: &str, start_ms: i64, region: &str, agent: &str) -> Vec<u8> {
    let mut k = window_prefix(check);
    k.extend_from_slice(&ordered_ms(start_ms));
    k.extend_from_slice(region.as_bytes());
    k.push(0);
    k.extend_from_slice(agent.as_bytes());
    k
}

impl SledStore {
    /// Writes one batch in one transaction, without flushing.
    fn write_batch(
        &self,
        agent: &str,
        region: &str,
        seq: u64,
        windows: &[v1::Window],
    ) -> Result<IngestOutcome, StoreError> {
        let marker = batch_key(agent, seq);
        let now = crate::now_ms();
        let mut added = rollup::Deltas::default();
        for w in windows {
            added.add(region, w, now);
        }
        let encoded: Vec<(Vec<u8>, Vec<u8>)> = windows
            .iter()
            .map(|w| {
                let key = window_key(&w.check, w.start_unix_ms, region, agent);
                let value = StoredWindow {
                    agent: agent.to_owned(),
                    region: region.to_owned(),
                    window: Some(w.clone()),
                }
                .encode_to_vec();
                (key, value)
            })
            .collect();
        (
            &self.windows,
            &self.batches,
            &self.rollups.hourly,
            &self.rollups.daily,
        )
            .transaction(|(tw, tb, th, td)| {
                if tb.get(&marker)?.is_some() {
                    return Ok(IngestOutcome::Duplicate);
                }
                let mut replaced_windows = 0;
                // The closure may run again on a conflict: start from a copy.
                let mut deltas = added.clone();
                for (k, v) in &encoded {
                    if let Some(old) = tw.insert(k.as_slice(), v.as_slice())? {
                        replaced_windows += 1;
                        // The newer copy wins in the roll-up too.
                        match StoredWindow::decode(old.as_ref()) {
                            Ok(old) => deltas.subtract(&old, now),
                            Err(e) => tracing::warn!(error = %e,
                                "replaced window does not decode; its roll-up may count it twice"),
                        }
                    }
                }
                let tree = |span| match span {
                    Span::Hour => th,
                    Span::Day => td,
                };
                deltas.for_each_update(
                    |span, k| tree(span).get(k),
                    |span, k, v| tree(span).insert(k, v).map(drop),
                )?;
                tb.insert(marker.as_slice(), &ordered_ms(now)[..])?;
                Ok::<_, ConflictableTransactionError<()>>(IngestOutcome::Stored {
                    replaced_windows,
                })
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => StoreError::Io(e),
                // The closure never aborts; keep the type total anyway.
                TransactionError::Abort(()) => StoreError::Corrupt {
                    key: String::from_utf8_lossy(&marker).into_owned(),
                    reason: "transaction aborted".into(),
                },
            })
    }
}

impl Store for SledStore {
    fn ingest_batches(
        &self,
        agent: &str,
        region: &str,
        batches: &[(u64, &[v1::Window])],
    ) -> Result<Vec<IngestOutcome>, StoreError> {
        let outcomes = batches
            .iter()
            .map(|(seq, windows)| self.write_batch(agent, region, *seq, windows))
            .collect::<Result<Vec<_>, _>>()?;
        // Ack means durable (RELIABILITY.md §2): flush before the caller acks,
        // also for a duplicate, whose first write may not have been flushed when
        // the previous coordinator process died.
        self.db.flush()?;
        Ok(outcomes)
    }

    fn assigned_checks(
        &self,
        agent: &str,
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let prefix = assigned_prefix(agent);
        let mut out = std::collections::HashSet::new();
        for key in self.assigned.scan_prefix(&prefix).keys() {
            let key = key?;
            out.insert(String::from_utf8_lossy(&key[prefix.len()..]).into_owned());
        }
        Ok(out)
    }

    fn record_assigned(&self, agent: &str, checks: &[String]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for check in checks {
            let mut key = assigned_prefix(agent);
            key.extend_from_slice(check.as_bytes());
            batch.insert(key, &[][..]);
        }
        self.assigned.apply_batch(batch)?;
        Ok(())
    }

    fn last_seq(&self, agent: &str) -> Result<u64, StoreError> {
        let prefix = window_prefix(agent);
        match self.batches.scan_prefix(&prefix).next_back() {
            None => Ok(0),
            Some(entry) => {
                let (k, _) = entry?;
                let tail = &k[prefix.len()..];
                <[u8; 8]>::try_from(tail)
                    .map(u64::from_be_bytes)
                    .map_err(|_| StoreError::Corrupt {
                        key: String::from_utf8_lossy(&k).into_owned(),
                        reason: "batch key without an 8-byte seq".into(),
                    })
            }
        }
    }

    fn windows_since(
        &self,
        check: &str,
        since_unix_ms: i64,
    ) -> Result<Vec<StoredWindow>, StoreError> {
        let prefix = window_prefix(check);
        let mut start = prefix.clone();
        start.extend_from_slice(&ordered_ms(since_unix_ms));
        let mut end = prefix;
        end.extend_from_slice(&[0xff; 9]);
        let mut out = Vec::new();
        for entry in self.windows.range(start..end) {
            let (k, v) = entry?;
            let w = StoredWindow::decode(v.as_ref()).map_err(|e| StoreError::Corrupt {
                key: String::from_utf8_lossy(&k).into_owned(),
                reason: e.to_string(),
            })?;
            out.push(w);
        }
        Ok(out)
    }

    fn rollups(
        &self,
        check: &str,
        span: Span,
        from_unix_ms: i64,
        to_unix_ms: i64,
    ) -> Result<Vec<Rollup>, StoreError> {
        rollup::range(self.rollups.of(span), check, from_unix_ms, to_unix_ms)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(check: &str, start: i64) -> v1::Window {
        v1::Window {
            check: check.into(),
            start_unix_ms: start,
            duration_ms: 1000,
            attempts: 1,
            successes: 1,
            ..Default::default()
        }
    }

    #[test]
    fn ingest_is_idempotent_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path(), 8 << 20).unwrap();
            assert_eq!(s.last_seq("a1").unwrap(), 0);
            let ws = [
                window("web", 1_000),
                window("web", 2_000),
                window("db", 1_000),
            ];
            let fresh = IngestOutcome::Stored {
                replaced_windows: 0,
            };
            assert_eq!(s.ingest("a1", "eu", 1, &ws).unwrap(), fresh);
            assert_eq!(
                s.ingest("a1", "eu", 1, &ws).unwrap(),
                IngestOutcome::Duplicate
            );
            assert_eq!(
                s.ingest("a1", "eu", 2, &[window("web", 3_000)]).unwrap(),
                fresh
            );
            // A group: the same window under a new seq is stored once and
            // reported; a batch already stored is a duplicate in the group too.
            let w3 = [window("web", 3_000), window("web", 4_000)];
            let w2 = [window("web", 3_000)];
            assert_eq!(
                s.ingest_batches("a1", "eu", &[(3, &w3[..]), (2, &w2[..])])
                    .unwrap(),
                [
                    IngestOutcome::Stored {
                        replaced_windows: 1
                    },
                    IngestOutcome::Duplicate
                ]
            );
            assert_eq!(s.windows_since("web", 0).unwrap().len(), 4);
            // Another agent's seq space is separate, including one whose name
            // is a prefix of the first's.
            s.ingest("a", "us", 7, &[window("web", 1_000)]).unwrap();
        }
        let s = SledStore::reopen(dir.path(), 8 << 20);
        assert_eq!(s.last_seq("a1").unwrap(), 3);
        assert_eq!(s.last_seq("a").unwrap(), 7);
        let web = s.windows_since("web", 0).unwrap();
        let starts: Vec<_> = web
            .iter()
            .map(|w| (w.window.as_ref().unwrap().start_unix_ms, w.region.as_str()))
            .collect();
        assert_eq!(
            starts,
            [
                (1_000, "eu"),
                (1_000, "us"),
                (2_000, "eu"),
                (3_000, "eu"),
                (4_000, "eu")
            ]
        );
        assert_eq!(s.windows_since("web", 2_000).unwrap().len(), 3);
        // "we" is a prefix of "web" but a different check.
        assert!(s.windows_since("we", 0).unwrap().is_empty());
    }

    #[test]
    fn old_batch_markers_are_pruned_but_each_agents_last_is_kept() {
        const HOUR_MS: i64 = 3_600_000;
        let keep = std::time::Duration::from_secs(3600);
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path(), 8 << 20).unwrap();
        let now = crate::now_ms();
        for seq in 1..=3 {
            s.ingest("a1", "eu", seq, &[window("web", seq as i64 * 1000)])
                .unwrap();
        }
        // "a1" is a prefix of "a10": a different agent.
        s.ingest("a10", "eu", 1, &[window("web", 1000)]).unwrap();
        // Markers from before they carried a time.
        for seq in [1, 2] {
            s.batches.insert(batch_key("a2", seq), &[][..]).unwrap();
        }

        // Fresh markers stay; the untimed ones count as old.
        assert_eq!(s.prune_batches(now, keep).unwrap(), 1);
        assert_eq!(s.stored_seqs("a2").unwrap(), [2]);
        assert_eq!(s.stored_seqs("a1").unwrap(), [1, 2, 3]);

        // Two hours on: all but each agent's last go.
        assert_eq!(s.prune_batches(now + 2 * HOUR_MS, keep).unwrap(), 2);
        assert_eq!(s.stored_seqs("a1").unwrap(), [3]);
        assert_eq!(s.stored_seqs("a10").unwrap(), [1]);
        assert_eq!(s.stored_seqs("a2").unwrap(), [2]);
        assert_eq!(s.last_seq("a1").unwrap(), 3);
        assert_eq!(s.last_seq("a2").unwrap(), 2);
        // The kept marker still answers a batch sent again.
        assert_eq!(
            s.ingest("a1", "eu", 3, &[window("web", 3000)]).unwrap(),
            IngestOutcome::Duplicate
        );
        // A newer batch makes the previous last prunable.
        s.ingest("a1", "eu", 4, &[window("web", 4000)]).unwrap();
        assert_eq!(s.prune_batches(now + 2 * HOUR_MS, keep).unwrap(), 1);
        assert_eq!(s.stored_seqs("a1").unwrap(), [4]);
        assert_eq!(s.prune_batches(now + 2 * HOUR_MS, keep).unwrap(), 0);
    }

    #[test]
    fn negative_and_positive_times_sort_in_time_order() {
        assert!(ordered_ms(-5) < ordered_ms(0));
        assert!(ordered_ms(0) < ordered_ms(5));
        assert!(ordered_ms(i64::MIN) < ordered_ms(i64::MAX));
    }

    #[test]
    fn refuses_a_store_from_another_schema() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            db.open_tree("meta")
                .unwrap()
                .insert("schema_version", &9u32.to_be_bytes())
                .unwrap();
            db.flush().unwrap();
        }
        let err = SledStore::open(dir.path(), 8 << 20).err().unwrap();
        assert!(err.to_string().contains("schema version 9"), "{err}");
    }
}
