//! Config hot reload: on SIGHUP, and when the config file changes, the file
//! is read and validated again. A valid config replaces the running one
//! without dropping agent sessions; an invalid one is rejected with every
//! error (file, line, column, key) and the last good config keeps running.
//!
//! # What a reload changes (contract; README "Reloading the config")
//!
//! - `[[check]]`: agents get their new assignment at once; unchanged checks
//!   keep running on their agents, added ones start, removed ones stop.
//! - `[alerting]`, `[[maintenance]]`, per-check alerting: from the next
//!   evaluation (a changed `eval_interval` from its next tick).
//! - `[[api.token]]`: requests are checked against the new tokens at once.
//! - `[[agent]]`: new agents may connect; a session whose agent entry was
//!   removed, or whose token or pinned region no longer match it, is closed.
//! - `[load]`: applies to runs started after the reload.
//! - `[[channel]]`: an added channel starts delivering, a removed one stops,
//!   a changed one is handed over once its current send is done
//!   ([`crate::alert::workers`]); notifications already queued keep their
//!   place. A channel that cannot be built (an unreadable `ca_file`) rejects
//!   the reload.
//! - `[server]` needs a restart: a reload that changes it applies
//!   everything else, keeps the running `[server]`, and says so (log,
//!   [`ReloadStatus::restart_required`], `/metrics`).
//!
//! The file is polled every [`POLL_INTERVAL`]: its size and modification
//! time, then its content's SHA-256, so an editor's save, an atomic rename
//! and a Kubernetes ConfigMap update are all seen. A content that failed is
//! not tried again until it changes or SIGHUP asks.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{self, Config, ConfigErrors};
use crate::now_ms;

/// How often the config file is looked at.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// The running config, replaced whole by a reload.
pub struct LiveConfig {
    tx: watch::Sender<Arc<Config>>,
    status: Mutex<ReloadStatus>,
}

/// What the last reloads did, for the API and `/metrics`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReloadStatus {
    /// 1 for the config the coordinator started with, one more per applied
    /// reload.
    pub generation: u64,
    /// When the running config was applied, unix ms.
    pub applied_unix_ms: i64,
    /// SHA-256 (hex) of the running config file's bytes; empty when the
    /// config did not come from a file (the demo).
    pub sha256: String,
    /// Whether the last attempt succeeded.
    pub last_ok: bool,
    /// When the last attempt was made, unix ms.
    pub last_attempt_unix_ms: i64,
    /// The last failed attempt's errors, one per line; cleared by a success.
    pub last_error: Option<String>,
    /// Tables whose changes wait for a restart: `server`.
    pub restart_required: Vec<&'static str>,
    /// Reloads applied.
    pub reloads_total: u64,
    /// Reloads rejected.
    pub failures_total: u64,
    /// SHA-256 of the content last rejected, so polling does not try it
    /// again.
    #[serde(skip)]
    last_error_sha: String,
}

/// What a reload attempt did.
#[derive(Debug)]
pub enum Outcome {
    /// The file's content is the one already running (or last rejected).
    Unchanged,
    /// Applied; these tables wait for a restart.
    Applied {
        /// `server`, or none.
        restart_required: Vec<&'static str>,
    },
    /// Rejected; the running config stays.
    Rejected(ConfigErrors),
}

impl LiveConfig {
    /// The config the coordinator starts with; `sha256` of its file's bytes
    /// (empty if none).
    pub fn new(config: Config, sha256: String) -> Arc<Self> {
        let now = now_ms();
        Arc::new(LiveConfig {
            tx: watch::Sender::new(Arc::new(config)),
            status: Mutex::new(ReloadStatus {
                generation: 1,
                applied_unix_ms: now,
                sha256,
                last_ok: true,
                last_attempt_unix_ms: now,
                last_error: None,
                restart_required: Vec::new(),
                reloads_total: 0,
                failures_total: 0,
                last_error_sha: String::new(),
            }),
        })
    }

    /// The running config. Hold the `Arc` for one unit of work (one
    /// evaluation, one request) so it sees one consistent config.
    pub fn current(&self) -> Arc<Config> {
        Arc::clone(&self.tx.borrow())
    }

    /// Told each time a reload is applied.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Config>> {
        self.tx.subscribe()
    }

    /// What the last reloads did.
    pub fn status(&self) -> ReloadStatus {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReloadStatus> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Validates `text` (the content of `path`, hashing to `sha256`) and
    /// applies it, or records why not. `force`: try even if this content
    /// was tried before (SIGHUP).
    pub fn offer(&self, text: &str, path: &Path, sha256: &str, force: bool) -> Outcome {
        {
            let s = self.lock();
            let tried = s.sha256 == sha256 || (!s.last_ok && s.last_error_sha == sha256);
            if tried && !force {
                return Outcome::Unchanged;
            }
        }
        let now = now_ms();
        let old = self.current();
        let parsed = config::parse(text, path).and_then(|new| {
            let errors = unbuildable_channels(&new, &old, path);
            if errors.is_empty() {
                Ok(new)
            } else {
                Err(ConfigErrors(errors))
            }
        });
        let mut new = match parsed {
            Ok(c) => c,
            Err(errors) => {
                let mut s = self.lock();
                s.last_ok = false;
                s.last_attempt_unix_ms = now;
                s.last_error = Some(errors.to_string());
                s.last_error_sha = sha256.to_owned();
                s.failures_total += 1;
                return Outcome::Rejected(errors);
            }
        };
        let mut restart_required = Vec::new();
        if new.server != old.server {
            new.server = old.server.clone();
            restart_required.push("server");
        }
        {
            let mut s = self.lock();
            s.generation += 1;
            s.applied_unix_ms = now;
            s.sha256 = sha256.to_owned();
            s.last_ok = true;
            s.last_attempt_unix_ms = now;
            s.last_error = None;
            s.restart_required.clone_from(&restart_required);
            s.reloads_total += 1;
        }
        self.tx.send_replace(Arc::new(new));
        Outcome::Applied { restart_required }
    }
}

/// The channels of `new` that are not in `old` and cannot be built (an
/// unreadable `ca_file`), one error each: a reload that would leave a
/// channel without a worker is rejected.
fn unbuildable_channels(new: &Config, old: &Config, path: &Path) -> Vec<config::ConfigError> {
    new.channels
        .iter()
        .enumerate()
        .filter(|(_, c)| !old.channels.contains(c))
        .filter_map(|(i, c)| {
            let message = crate::alert::build_channel(c).err()?;
            Some(config::ConfigError {
                origin: path.to_owned(),
                line: 0,
                column: 0,
                path: format!("channel[{i}]"),
                message,
            })
        })
        .collect()
}

/// Size and modification time: a cheap "may have changed" test (also of
/// the TLS files, [`crate::tls`]).
pub(crate) fn stamp(path: &Path) -> Option<(u64, SystemTime)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?))
}

/// Reads `path` (bounded like [`config::load`]) and offers it.
fn attempt(live: &LiveConfig, path: &Path, force: bool) -> Outcome {
    match crate::config::read_file(path) {
        Ok(text) => live.offer(&text, path, &crate::api::auth::digest_hex(&text), force),
        Err(errors) => {
            // An unreadable file (mid-rename, removed) is not a new config:
            // report it on SIGHUP only, and keep polling.
            if force {
                let mut s = live.lock();
                s.last_ok = false;
                s.last_attempt_unix_ms = now_ms();
                s.last_error = Some(errors.to_string());
                s.failures_total += 1;
                Outcome::Rejected(errors)
            } else {
                Outcome::Unchanged
            }
        }
    }
}

/// Watches `path` and SIGHUP until `stop`, applying valid changes to
/// `live` and calling `applied` after each.
pub async fn watch(
    live: Arc<LiveConfig>,
    path: PathBuf,
    applied: impl Fn(&Config, &Config) + Send + 'static,
    stop: CancellationToken,
) {
    #[cfg(unix)]
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; the config file is still watched");
            None
        }
    };
    let mut poll = tokio::time::interval(POLL_INTERVAL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // None: the first poll compares the content with what started, so a
    // change made while the coordinator was starting is not missed.
    let mut last_stamp = None;
    loop {
        #[cfg(unix)]
        let hup = async {
            match hangup.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hup = std::future::pending::<()>();
        let force = tokio::select! {
            _ = stop.cancelled() => return,
            _ = hup => true,
            _ = poll.tick() => false,
        };
        if !force {
            let now = stamp(&path);
            if now == last_stamp {
                continue;
            }
            last_stamp = now;
        }
        let before = live.current();
        let (l, p) = (Arc::clone(&live), path.clone());
        let outcome = match tokio::task::spawn_blocking(move || attempt(&l, &p, force)).await {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %e, "config reload task failed");
                continue;
            }
        };
        match outcome {
            Outcome::Unchanged => {
                if force {
                    tracing::info!(file = %path.display(), "SIGHUP: the config file is unchanged");
                }
            }
            Outcome::Applied { restart_required } => {
                let after = live.current();
                applied(&before, &after);
                let generation = live.status().generation;
                if restart_required.is_empty() {
                    tracing::info!(file = %path.display(), generation, checks = after.checks.len(),
                        "config reloaded");
                } else {
                    tracing::warn!(file = %path.display(), generation, checks = after.checks.len(),
                        restart_required = ?restart_required,
                        "config reloaded; changes to these tables take effect after a restart (the running values stay)");
                }
            }
            Outcome::Rejected(errors) => {
                tracing::error!(file = %path.display(),
                    "config reload rejected; the last good config keeps running:\n{errors}");
            }
        }
    }
}
